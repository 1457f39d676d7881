"""The WebSocket fallback, written once: many streams over one WebSocket over TLS over TCP.

The framing and flow control are the core's (:class:`sansquic.websocket.Mux`),
the WebSocket protocol is wsproto's (sans-IO), TLS is ``ssl``'s memory-BIO
object (``_tcp.py``): this file only moves bytes between them and the socket,
and wakes the tasks waiting on keys, as ``_async.py`` does for QUIC. A
connection has two tasks: a reader (socket -> TLS -> wsproto -> mux) and a
writer (the bytes queued by every command -> socket). This file is the async
original: ``_ws_sync.py`` is generated from it by ``scripts/unasync.py``.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable
from typing import Protocol, TypeVar

import wsproto
import wsproto.events as ws_events
import wsproto.utilities

import sansquic
from sansquic.websocket import (
    MAX_FRAME_DATA,
    SUBPROTOCOL,
    Admission,
    AdmissionStats,
    Mux,
    Race,
    Ticket,
    Transport,
    Verdict,
    authenticate_handshake,
    handshake_headers,
    rejection_from_headers,
    rejection_headers,
)

from ._async import Connection, WholeReads, open_connection
from ._backend import AsyncBackend, AsyncTaskGroup
from ._messaging_async import MessageConnection
from ._tcp import Abort, TlsPipe, client_context, server_context, shutdown, tcp_socket

__all__ = [
    "ConnectionShape",
    "StreamShape",
    "WebSocketConnection",
    "WebSocketServer",
    "WebSocketStream",
    "connect_any",
    "open_websocket",
    "open_websocket_server",
]

_T = TypeVar("_T")
#: Seconds ``close()`` waits for the peer's close frame before letting go.
CLOSE_WAIT = 2.0
#: What ``WebSocketStream.read_all()`` accepts at most unless told otherwise.
#: Ciphertext queued for the socket above which senders wait (the mux's credit bounds the rest).
_HIGH_WATER = 1024 * 1024
#: Ciphertext queued past which the peer is taken to have stopped reading.
_MAX_QUEUED = 8 * _HIGH_WATER
#: The largest WebSocket message accepted: one frame and its 5-byte head.
_MAX_MESSAGE = MAX_FRAME_DATA + 64
_NORMAL, _GOING_AWAY, _PROTOCOL_ERROR, _TOO_BIG, _UNSUPPORTED = 1000, 1001, 1002, 1009, 1003
_IDLE = "idle timeout"


def _close_reason(code: int, reason: str) -> str:
    """The close frame's reason: the application code first (WebSocket codes are 16-bit)."""
    return f"{code}:{reason}".encode()[:120].decode("utf-8", "ignore")


def _peer_error(event: ws_events.CloseConnection) -> sansquic.ConnectionClosed:
    if event.code == _GOING_AWAY and event.reason == _IDLE:
        # The silence both sides shared: the peer's timer only fired first.
        return sansquic.IdleTimeoutError(0, _IDLE, application=False)
    head, _, rest = (event.reason or "").partition(":")
    if event.code == _NORMAL and head.isdigit():
        return sansquic.PeerClosedError(int(head), rest, application=True)
    return sansquic.PeerClosedError(event.code, event.reason or "", application=False)


class StreamShape(Protocol):
    """What a message layer needs of a stream: a QUIC ``Stream`` and a
    :class:`WebSocketStream` both have it."""

    id: int

    async def send(
        self, data: bytes | bytearray | memoryview, *, timeout: float | None = None
    ) -> None: ...

    async def finish(self) -> None: ...

    async def receive(self, max_bytes: int = -1, *, timeout: float | None = None) -> bytes: ...

    async def receive_exactly(self, size: int, *, timeout: float | None = None) -> bytes: ...

    async def reset(self, code: int = 0) -> None: ...

    async def stop(self, code: int = 0) -> None: ...


class ConnectionShape(Protocol):
    """What a message layer needs of a connection: a QUIC ``Connection`` and a
    :class:`WebSocketConnection` both have it (whatever ``connect_any`` returns)."""

    @property
    def transport(self) -> Transport: ...

    @property
    def identity(self) -> sansquic.Identity | None: ...

    async def open_stream(
        self, *, bidirectional: bool = True, priority: int = sansquic.Priority.NORMAL
    ) -> StreamShape: ...

    async def accept_stream(self, *, timeout: float | None = None) -> StreamShape: ...

    async def send_datagram(self, data: bytes) -> None: ...

    async def receive_datagram(self, *, timeout: float | None = None) -> bytes: ...

    async def close(self, code: int = 0, reason: str = "") -> None: ...


def _upgrade_answered(event: ws_events.Event) -> bool:
    """Whether ``event`` ends the upgrade exchange (a request, or the whole answer)."""
    if isinstance(event, (ws_events.Request, ws_events.AcceptConnection)):
        return True
    if isinstance(event, ws_events.RejectConnection):
        return not event.has_body
    return isinstance(event, ws_events.RejectData) and event.body_finished


class _WsDriver:
    """One WebSocket's socket, TLS, wsproto and mux; its reader and writer tasks.

    Every use of the TLS object, wsproto and the mux happens under
    ``backend.guard()``; socket reads and writes happen outside it.
    """

    def __init__(
        self,
        backend: AsyncBackend,
        sock: socket.socket,
        tls: TlsPipe,
        *,
        client: bool,
        config: sansquic.Config,
    ) -> None:
        self.backend = backend
        # Config.idle_timeout and keep_alive mean here what they mean for QUIC.
        self.idle_timeout: float = config.idle_timeout
        self.keep_alive: float | None = config.keep_alive
        self.last_heard: float = backend.now()
        self._give_up_at: float | None = None  # after our idle close: when to stop waiting
        self.sock = sock
        self.tls = tls
        self.client = client
        role = wsproto.ConnectionType.CLIENT if client else wsproto.ConnectionType.SERVER
        self.ws: wsproto.WSConnection = wsproto.WSConnection(role)
        self.mux: Mux = Mux(client=client)
        self.log: logging.Logger = logging.getLogger(backend.logger_name)
        self.out: bytearray = bytearray()  # ciphertext for the socket
        self._message = bytearray()  # a binary message still arriving in pieces
        self._blocked: set[int] = set()  # senders waiting for the queue to drain
        self.reader_done: bool = False
        self.writer_done: bool = False
        self.socket_closed: bool = False
        self.dead: bool = False  # stop now: no goodbye (a timeout, an abort)

    def deadline(self, timeout: float | None) -> float | None:
        return None if timeout is None else self.backend.now() + timeout

    def key(self, raw: Hashable) -> Hashable:
        """The backend key for one of the mux's wake keys, unique to this connection."""
        assert isinstance(raw, tuple)
        return (raw[0], self, *raw[1:])

    # -- bytes between the layers (under guard) ---------------------------------------

    def pump(self) -> None:
        """Move what the mux and wsproto queued into TLS and the socket queue; wake the writer."""
        if self.ws.state is wsproto.connection.ConnectionState.OPEN:
            for message in self.mux.messages_to_send():
                self.tls.write(self.ws.send(ws_events.Message(data=message)))
        else:
            self.mux.messages_to_send()  # too late for them
        data = self.tls.outgoing()
        if data:
            self.out += data
            self.backend.wake(("ws-out", self))
            if len(self.out) > _MAX_QUEUED and self._started:
                # Senders wait at the high watermark, so only a peer that makes this side
                # answer (pings, credit) without ever reading gets here: let it go.
                self.log.warning("sansquic dropped a WebSocket peer that does not read")
                self.end(sansquic.ConnectionClosed(0, "the peer stopped reading", application=True))
                self.kill()

    def send_ws(self, event: ws_events.Event) -> None:
        self.tls.write(self.ws.send(event))
        self.pump()

    def end(self, error: sansquic.ConnectionClosed) -> None:
        """The connection is over for the application: every waiter wakes to ``error``."""
        if self.mux.closed is None:
            self.mux.close(error)
        self.backend.wake_all()

    def handle_events(self) -> None:
        """What wsproto parsed since last time: messages into the mux, pings, closes."""
        for event in self.ws.events():
            if isinstance(event, ws_events.BytesMessage):
                self._message += event.data
                if len(self._message) > _MAX_MESSAGE:
                    self.violation(_TOO_BIG, "a WebSocket message larger than one frame")
                    return
                if event.message_finished:
                    message, self._message = bytes(self._message), bytearray()
                    try:
                        keys = self.mux.receive_message(message)
                    except sansquic.RemoteProtocolError as exc:
                        self.violation(_PROTOCOL_ERROR, exc.reason)
                        return
                    for key in keys:
                        self.backend.wake(self.key(key))
            elif isinstance(event, ws_events.TextMessage):
                self.violation(_UNSUPPORTED, "text messages are not part of sansquic.mux.v1")
                return
            elif isinstance(event, ws_events.Ping):
                self.send_ws(event.response())
            elif isinstance(event, ws_events.CloseConnection):
                if self.ws.state is wsproto.connection.ConnectionState.REMOTE_CLOSING:
                    self.send_ws(event.response())
                self.end(_peer_error(event))
        self.pump()  # credit returned, pongs

    def violation(self, code: int, reason: str) -> None:
        """The peer broke the framing: say so in a close frame and end."""
        error = sansquic.RemoteProtocolError(code, reason, application=False)
        self.mux.close(error)
        if self.ws.state is wsproto.connection.ConnectionState.OPEN:
            self.send_ws(ws_events.CloseConnection(code=code, reason=reason[:120]))
        self.end(error)

    # -- socket I/O (outside guard) ---------------------------------------------------

    async def send_all(self, deadline: float | None, abort: Abort | None = None) -> None:
        """Write everything queued (during the handshakes, before the writer runs)."""
        backend = self.backend
        while True:
            with backend.guard():
                data = bytes(self.out)
            if not data:
                return
            try:
                sent = self.sock.send(data)
            except (BlockingIOError, InterruptedError):
                await self._wait(True, deadline, abort)
                continue
            with backend.guard():
                del self.out[:sent]

    async def receive_some(self, deadline: float | None, abort: Abort | None = None) -> bytes:
        """Ciphertext from the socket (during the handshakes); raises at EOF or timeout."""
        while True:
            try:
                data = self.sock.recv(65_536)
            except (BlockingIOError, InterruptedError):
                await self._wait(False, deadline, abort)
                continue
            if not data:
                raise ConnectionResetError("the peer closed the connection during the handshake")
            return data

    async def _wait(self, writable: bool, deadline: float | None, abort: Abort | None) -> None:
        if abort is not None:
            abort.check()
        if deadline is not None and self.backend.now() >= deadline:
            raise TimeoutError
        await self.backend.wait_socket(self.sock, writable, deadline)
        if abort is not None:
            abort.check()

    async def tls_handshake(self, deadline: float | None, abort: Abort | None = None) -> None:
        while True:
            with self.backend.guard():
                done = self.tls.handshake()
                self.pump()
            await self.send_all(deadline, abort)
            if done:
                return
            data = await self.receive_some(deadline, abort)
            with self.backend.guard():
                self.tls.feed(data)

    async def handshake_events(
        self, deadline: float | None, abort: Abort | None = None, ticket: Ticket | None = None
    ) -> list[ws_events.Event]:
        """Read until wsproto has events about the upgrade (before the reader runs);
        none once a server's ``ticket`` says the request head is too large."""
        events: list[ws_events.Event] = []
        while True:
            with self.backend.guard():
                # Plaintext may be waiting already: it came with the end of the TLS handshake.
                plain = self.tls.read()
                if plain and ticket is not None and not ticket.took(len(plain)):
                    return events
                if plain:  # (b"" would mean EOF to wsproto: TLS records may carry no data)
                    self.ws.receive_data(plain)
                elif self.tls.eof:
                    raise ConnectionResetError("TLS ended during the WebSocket handshake")
                for event in self.ws.events():
                    events.append(event)
                    if _upgrade_answered(event):
                        return events  # what follows is the reader's
            await self.send_all(deadline, abort)
            data = await self.receive_some(deadline, abort)
            with self.backend.guard():
                self.tls.feed(data)

    # -- the two tasks ----------------------------------------------------------------

    async def run_reader(self) -> None:
        backend = self.backend
        try:
            with backend.guard():
                self.last_heard = backend.now()  # the idle timer starts with the connection
                self.handle_events()  # what arrived with the end of the upgrade
            while not self.dead:
                try:
                    data = self.sock.recv(65_536)
                except (BlockingIOError, InterruptedError):
                    with backend.guard():
                        if self._idle_check():
                            break
                        deadline = self.last_heard + self.idle_timeout
                        if self._give_up_at is not None:
                            deadline = self._give_up_at
                    await backend.wait_socket(self.sock, False, deadline)
                    continue
                except OSError:
                    data = b""
                with backend.guard():
                    self.last_heard = backend.now()
                    if self.dead:
                        break
                    self.tls.feed(data)
                    plain = self.tls.read()
                    if plain and self.ws.state is not wsproto.connection.ConnectionState.CLOSED:
                        self.ws.receive_data(plain)
                        self.handle_events()
                    if not data or self.tls.eof:
                        break
                    if self.ws.state is wsproto.connection.ConnectionState.CLOSED:
                        break  # both close frames went by: the writer ends TCP
        except (ssl.SSLError, wsproto.utilities.RemoteProtocolError) as exc:
            with backend.guard():
                self.end(sansquic.RemoteProtocolError(_PROTOCOL_ERROR, str(exc), application=False))
        except Exception:
            self.log.exception("sansquic WebSocket reader failed")
        finally:
            with backend.guard():
                self.reader_done = True
                self.end(sansquic.PeerClosedError(0, "the connection was lost", application=True))
                backend.wake(("ws-out", self))
            await self._finish_task()

    def _idle_check(self) -> bool:
        """Close on ``idle_timeout`` of silence, as QUIC does; whether to stop reading now."""
        now = self.backend.now()
        if self._give_up_at is not None:
            if now < self._give_up_at:
                return False
            self.kill()  # the peer never answered our close: let go
            return True
        if now < self.last_heard + self.idle_timeout:
            return False
        if self.ws.state is wsproto.connection.ConnectionState.OPEN:
            # Said, so the peer reports the same cause rather than a lost connection.
            self.send_ws(ws_events.CloseConnection(code=_GOING_AWAY, reason=_IDLE))
        self.end(sansquic.IdleTimeoutError(0, _IDLE, application=False))
        self._give_up_at = now + CLOSE_WAIT
        return False

    async def run_writer(self) -> None:
        backend = self.backend
        ping_at = None if self.keep_alive is None else backend.now() + self.keep_alive
        try:
            while not self.dead:
                with backend.guard():
                    if ping_at is not None and backend.now() >= ping_at:
                        assert self.keep_alive is not None
                        ping_at = backend.now() + self.keep_alive
                        if self.ws.state is wsproto.connection.ConnectionState.OPEN:
                            self.send_ws(ws_events.Ping())  # the pong keeps both sides alive
                    if not self.out:
                        closed = self.ws.state is wsproto.connection.ConnectionState.CLOSED
                        if self.reader_done or closed:
                            break
                        await backend.park(("ws-out", self), ping_at)
                        continue
                    data = bytes(self.out[:262_144])
                try:
                    sent = self.sock.send(data)
                except (BlockingIOError, InterruptedError):
                    await backend.wait_socket(self.sock, True, None)
                    continue
                except OSError:
                    break
                with backend.guard():
                    del self.out[:sent]
                    if len(self.out) < _HIGH_WATER // 2:
                        for sid in self._blocked:
                            backend.wake(("write", self, sid))
                        self._blocked.clear()
        except Exception:
            self.log.exception("sansquic WebSocket writer failed")
        finally:
            shutdown(self.sock)  # the reader wakes to EOF; the peer sees the end
            with backend.guard():
                self.writer_done = True
            await self._finish_task()

    async def _finish_task(self) -> None:
        with self.backend.guard():
            if self.reader_done and self.writer_done and not self.socket_closed:
                self.socket_closed = True
                self.sock.close()  # neither task waits on it any more
                self.backend.wake(("ws-ended", self))

    def kill(self) -> None:
        """Stop both tasks now (under guard): no more waiting for the peer."""
        self.dead = True
        shutdown(self.sock)
        self.backend.wake(("ws-out", self))

    def close_socket(self) -> None:
        """Close the socket if no task ever ran (a handshake that failed, a cut-short block)."""
        with self.backend.guard():
            if self.socket_closed:
                return
            started = self._started
            if not started:
                self.socket_closed = True
        if not started:
            self.sock.close()
        else:
            with self.backend.guard():
                self.kill()

    _started = False

    async def until(
        self, check: Callable[[], _T | None], key: Hashable, deadline: float | None
    ) -> _T:
        """Call ``check`` until it returns non-None, parking on ``key`` in between."""
        backend = self.backend
        with backend.guard():
            while True:
                result = check()
                if result is not None:
                    return result
                if deadline is not None and backend.now() >= deadline:
                    raise TimeoutError
                await backend.park(key, deadline)


class WebSocketStream(WholeReads):
    """One stream over the WebSocket: :meth:`send` then :meth:`finish`; :meth:`receive`
    until ``b""`` (the same shape as :class:`sansquic_runtime.Stream`).

    One task may receive and one may send at a time; a second raises
    :class:`sansquic.BusyError`.
    """

    def __init__(self, conn: WebSocketConnection, stream_id: int, priority: int) -> None:
        self._driver = conn._driver
        #: The stream id (QUIC's layout: bit 0 the opener, bit 1 unidirectional).
        self.id = stream_id
        #: Kept for the API's sake: one TCP connection carries every stream in order.
        self.priority = priority
        self._receiving = self._sending = False

    def __repr__(self) -> str:
        return f"<sansquic WebSocketStream id={self.id}>"

    def _deadline(self, timeout: float | None) -> float | None:
        return self._driver.deadline(timeout)

    def _left(self, deadline: float | None) -> float | None:
        return None if deadline is None else max(0.0, deadline - self._driver.backend.now())

    @property
    def queued(self) -> int:
        """Bytes queued on the connection that have not reached the socket yet."""
        with self._driver.backend.guard():
            return len(self._driver.out)

    async def send(
        self, data: bytes | bytearray | memoryview, *, timeout: float | None = None
    ) -> None:
        """Queue ``data``, waiting for the peer's credit or the socket as needed.

        Raises :class:`sansquic.StreamStoppedError` if the peer stopped the stream.
        Next: more :meth:`send` calls, then :meth:`finish`.
        """
        view = memoryview(data).cast("B")
        driver, sid = self._driver, self.id
        with driver.backend.guard():
            if self._sending:
                raise sansquic.BusyError(f"another task is sending on stream {sid}")
            driver.mux.send_capacity(sid)  # misuse raises before anything changes
            deadline = driver.deadline(timeout)
            self._sending = True
        offset = 0

        def attempt() -> int | None:
            if not driver.mux.send_capacity(sid):
                return None  # wait for the peer's credit
            room = _HIGH_WATER - len(driver.out)
            if room <= 0:
                driver._blocked.add(sid)
                return None  # wait for the socket to drain
            # At most the room left: however many tasks send, the queue stays bounded.
            taken = driver.mux.send(sid, view[offset : offset + room])
            driver.pump()
            return taken

        try:
            while offset < len(view):
                offset += await driver.until(attempt, ("write", driver, sid), deadline)
        finally:
            self._sending = False

    async def finish(self) -> None:
        """End the sending side. Next: :meth:`receive` the reply, if any."""
        with self._driver.backend.guard():
            self._driver.mux.finish(self.id)
            self._driver.pump()

    async def reset(self, code: int = 0) -> None:
        """Abandon the sending side with ``code``."""
        with self._driver.backend.guard():
            self._driver.mux.reset(self.id, code)
            self._driver.pump()
            self._driver.backend.wake(("write", self._driver, self.id))

    async def stop(self, code: int = 0) -> None:
        """Ask the peer to stop sending, with ``code``; unread data is dropped."""
        with self._driver.backend.guard():
            self._driver.mux.stop(self.id, code)
            self._driver.pump()
            self._driver.backend.wake(("read", self._driver, self.id))

    async def receive(self, max_bytes: int = -1, *, timeout: float | None = None) -> bytes:
        """The next bytes that arrived (at most ``max_bytes`` when positive); ``b""`` at
        the end. Raises :class:`sansquic.StreamResetError` if the peer reset the stream."""
        driver, sid = self._driver, self.id

        def attempt() -> bytes | None:
            data = driver.mux.read(sid, max_bytes)
            if data:
                driver.pump()  # reading may have returned credit
            return data

        with driver.backend.guard():
            if self._receiving:
                raise sansquic.BusyError(f"another task is receiving on stream {sid}")
            self._receiving = True
        try:
            return await driver.until(attempt, ("read", driver, sid), driver.deadline(timeout))
        finally:
            self._receiving = False


class WebSocketConnection:
    """Streams and datagrams over one WebSocket, shaped as the QUIC ``Connection``."""

    #: Which transport this is (see :func:`sansquic_runtime.connect_any`).
    transport = Transport.WEBSOCKET

    def __init__(
        self, driver: _WsDriver, identity: sansquic.Identity | None, address: sansquic.Address
    ) -> None:
        self._driver = driver
        self._closed = False
        #: Who the server's authenticator accepted, or ``None`` without auth.
        self.identity = identity
        #: The peer's TCP address.
        self.remote_address: sansquic.Address | None = address

    def __repr__(self) -> str:
        role = "client" if self._driver.client else "server"
        return f"<sansquic WebSocketConnection {role}>"

    alpn = "websocket"
    #: The largest datagram :meth:`send_datagram` takes.
    max_datagram_size: int | None = MAX_FRAME_DATA

    async def open_stream(
        self, *, bidirectional: bool = True, priority: int = sansquic.Priority.NORMAL
    ) -> WebSocketStream:
        """Open a stream. Next: :meth:`WebSocketStream.send`."""
        with self._driver.backend.guard():
            stream_id = self._driver.mux.open_stream(bidirectional)
        return WebSocketStream(self, stream_id, priority)

    async def accept_stream(self, *, timeout: float | None = None) -> WebSocketStream:
        """The next stream the peer opened; raises ``ConnectionClosed`` once closed."""
        driver = self._driver
        stream_id = await driver.until(
            driver.mux.next_stream, ("accept", driver), driver.deadline(timeout)
        )
        return WebSocketStream(self, stream_id, sansquic.Priority.NORMAL)

    def __aiter__(self) -> AsyncIterator[WebSocketStream]:
        """Accepted streams, one by one, until the connection closes."""
        return self._streams()

    async def _streams(self) -> AsyncIterator[WebSocketStream]:
        while True:
            try:
                stream = await self.accept_stream()
            except sansquic.ConnectionClosed:
                return
            yield stream

    async def send_datagram(self, data: bytes) -> None:
        """Send a message outside any stream (ordered, as TCP is; dropped if the peer is full)."""
        with self._driver.backend.guard():
            self._driver.mux.send_datagram(data)
            self._driver.pump()

    async def receive_datagram(self, *, timeout: float | None = None) -> bytes:
        """The next datagram; raises ``ConnectionClosed`` once closed."""
        driver = self._driver
        return await driver.until(
            driver.mux.next_datagram, ("datagram", driver), driver.deadline(timeout)
        )

    async def close(self, code: int = 0, reason: str = "") -> None:
        """Close with an application ``code`` and ``reason``; waits (a few seconds at most)
        for the peer's close frame, then ends TCP. Idempotent."""
        driver = self._driver
        with driver.backend.guard():
            if self._closed:
                return
            if not 0 <= code < 2**62:
                raise sansquic.LocalProtocolError(f"a close code is 0 .. 2**62-1, not {code}")
            self._closed = True
            if driver.ws.state is wsproto.connection.ConnectionState.OPEN:
                driver.send_ws(
                    ws_events.CloseConnection(code=_NORMAL, reason=_close_reason(code, reason))
                )
            driver.end(sansquic.ConnectionClosed(code, reason, application=True))
        try:
            await driver.until(
                lambda: True if driver.socket_closed else None,
                ("ws-ended", driver),
                driver.deadline(CLOSE_WAIT),
            )
        except TimeoutError:
            with driver.backend.guard():
                driver.kill()  # the peer did not answer: end TCP without it
            with contextlib.suppress(TimeoutError):
                await driver.until(
                    lambda: True if driver.socket_closed else None,
                    ("ws-ended", driver),
                    driver.deadline(CLOSE_WAIT),
                )

    async def aclose(self) -> None:  # unasync: remove
        """Close with code 0: the trio idiom for :meth:`close`."""  # unasync: remove
        await self.close()  # unasync: remove

    async def __aenter__(self) -> WebSocketConnection:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


async def _tcp_connect(
    backend: AsyncBackend, host: str, port: int, deadline: float | None, abort: Abort | None
) -> tuple[socket.socket, sansquic.Address]:
    family, remote = await backend.resolve(host, port)
    sock = tcp_socket(family)
    try:
        if abort is not None:
            abort.on_request(lambda: shutdown(sock))
        try:
            sock.connect(remote)
        except (BlockingIOError, InterruptedError):
            while True:
                if abort is not None:
                    abort.check()
                if deadline is not None and backend.now() >= deadline:
                    raise TimeoutError from None
                await backend.wait_socket(sock, True, deadline)
                error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if error:
                    raise ConnectionRefusedError(error, f"cannot reach {host}:{port}") from None
                try:
                    sock.getpeername()
                    break
                except OSError:
                    continue  # woken early (a deadline slice): not connected yet
    except BaseException:
        sock.close()
        raise
    return sock, remote


async def open_websocket(
    backend: AsyncBackend,
    group: AsyncTaskGroup,
    host: str,
    port: int,
    *,
    path: str = "/",
    config: sansquic.Config | None = None,
    server_name: str | None = None,
    token: str | bytes | None = None,
    timeout: float | None = 10.0,
    abort: Abort | None = None,
) -> WebSocketConnection:
    """Connect to a sansquic WebSocket server at ``host:port`` (``wss://``, TLS as
    ``config`` says), present the token, and run the connection's tasks in ``group``.

    A refusal raises :class:`sansquic.PeerClosedError` with the server's code.
    """
    config = (config if config is not None else sansquic.Config()).with_token(token)
    deadline = None if timeout is None else backend.now() + timeout
    sock, remote = await _tcp_connect(backend, host, port, deadline, abort)
    name = server_name or host
    driver = _WsDriver(
        backend,
        sock,
        TlsPipe(client_context(config), server_side=False, server_hostname=name),
        client=True,
        config=config,
    )
    try:
        await driver.tls_handshake(deadline, abort)
        request = ws_events.Request(
            host=f"{name}:{port}",
            target=path,
            subprotocols=[SUBPROTOCOL],
            extra_headers=handshake_headers(config.auth_request),
        )
        with backend.guard():
            driver.send_ws(request)
        events = await driver.handshake_events(deadline, abort)
        answer = events[0]
        if isinstance(answer, ws_events.RejectConnection):
            rejection = rejection_from_headers(answer.status_code, answer.headers)
            raise sansquic.PeerClosedError(rejection.code, rejection.reason, application=True)
        if not isinstance(answer, ws_events.AcceptConnection):
            raise sansquic.RemoteProtocolError(
                _PROTOCOL_ERROR, f"unexpected {type(answer).__name__}", application=False
            )
        identity = None
        if config.auth_request is not None:
            identity = _identity_from(answer.extra_headers)
    except BaseException:
        sock.close()
        raise
    conn = WebSocketConnection(driver, identity, remote)
    driver._started = True
    group.start_soon(driver.run_reader)
    group.start_soon(driver.run_writer)
    with backend.guard():
        # A wait that ends at once: where tasks start only when the caller parks
        # (curio's background tasks), they start now.
        await backend.park(("ws-started", driver), backend.now())
    return conn


_SUBJECT_HEADER = b"sansquic-subject"


def _identity_from(headers: list[tuple[bytes, bytes]]) -> sansquic.Identity | None:
    for name, value in headers:
        if name.lower() == _SUBJECT_HEADER:
            return sansquic.Identity(subject=value.decode("utf-8", "replace"))
    return None


class WebSocketServer:
    """A listening TCP socket running ``handler(conn)`` for each accepted WebSocket.

    The same shape as :class:`sansquic_runtime.Server`: :meth:`serve_forever`,
    :meth:`close`, :attr:`address`.
    """

    def __init__(
        self,
        backend: AsyncBackend,
        listener: socket.socket,
        handler: Callable[[WebSocketConnection], Awaitable[object]],
        config: sansquic.Config,
    ) -> None:
        self._backend = backend
        self._listener = listener
        self._handler = handler
        self._config = config
        self._context = server_context(config)
        self._admission = Admission.for_config(config, backend.now())
        self._live: set[WebSocketConnection] = set()
        self._closing = self._served = self._serving = False
        self._group: AsyncTaskGroup | None = None
        self.log: logging.Logger = logging.getLogger(backend.logger_name)
        host, port = listener.getsockname()[:2]
        #: The bound ``(host, port)``; the real port when 0 was asked for.
        self.address: tuple[str, int] = (str(host), int(port))

    @property
    def tracked(self) -> int:
        """Connections the server keeps state for (zero once all are over)."""
        with self._backend.guard():
            return len(self._live)

    def stats(self) -> AdmissionStats:
        """Admission counters: connections accepted, alive, refused and dropped by reason."""
        with self._backend.guard():
            return self._admission.stats()

    def start_serving(self, group: AsyncTaskGroup) -> None:
        """Run :meth:`serve_forever` as a task of ``group``."""
        group.start_soon(self.serve_forever)

    async def serve_forever(self) -> None:
        """Accept connections and run the handler for each, until :meth:`close`."""
        backend = self._backend
        with backend.guard():
            serving, self._serving = self._serving, True
        if serving:
            await self._until_served(None)
            return
        try:
            async with backend.task_group() as group:
                self._group = group
                try:
                    while True:
                        with backend.guard():
                            if self._closing:
                                break
                        try:
                            sock, address = self._listener.accept()
                        except (BlockingIOError, InterruptedError):
                            await backend.wait_socket(self._listener, False, None)
                            continue
                        except OSError:
                            break  # the listener was shut down
                        peer = (address[0], address[1])
                        with backend.guard():
                            ticket = self._admission.admit(peer, backend.now())
                        if ticket.verdict is Verdict.DROP:
                            sock.close()  # not even a refusal is affordable now
                            continue
                        sock.setblocking(False)
                        with contextlib.suppress(OSError):
                            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                        group.start_soon(self._serve_one, sock, peer, ticket)
                finally:
                    group.cancel()  # handlers still running are cut off
        finally:
            self._listener.close()
            with backend.guard():
                self._served = True
                backend.wake(("ws-served", self))

    async def _serve_one(
        self, sock: socket.socket, address: sansquic.Address, ticket: Ticket
    ) -> None:
        backend, config = self._backend, self._config
        driver = _WsDriver(
            backend, sock, TlsPipe(self._context, server_side=True), client=False, config=config
        )
        policy = config.auth
        deadline = ticket.deadline
        try:
            await driver.tls_handshake(deadline)
            events = await driver.handshake_events(deadline, ticket=ticket)
            if ticket.verdict is Verdict.REFUSE:  # over a limit: say so before any upgrade
                with backend.guard():
                    driver.tls.write(ticket.refusal())
                    driver.pump()
                await driver.send_all(deadline)
                raise ConnectionError("refused")
            request = events[0]
            if not isinstance(request, ws_events.Request):
                raise ConnectionError("not a WebSocket upgrade")
            outcome = authenticate_handshake(
                policy, request.target, request.extra_headers, address, backend.now()
            )
            with backend.guard():
                if isinstance(outcome, sansquic.AuthRejection):
                    driver.send_ws(
                        ws_events.RejectConnection(
                            status_code=403, headers=rejection_headers(outcome)
                        )
                    )
                else:
                    headers = []
                    if outcome is not None:
                        headers = [(_SUBJECT_HEADER, outcome.subject.encode())]
                    chosen = SUBPROTOCOL if SUBPROTOCOL in request.subprotocols else None
                    driver.send_ws(
                        ws_events.AcceptConnection(subprotocol=chosen, extra_headers=headers)
                    )
            await driver.send_all(deadline)
            if isinstance(outcome, sansquic.AuthRejection):
                raise ConnectionError("rejected")
        except Exception:
            # Nothing reached the application: a failed handshake only closes the socket.
            self._forget(sock, ticket)
            return
        except BaseException:
            self._forget(sock, ticket)  # cancelled (the server closes): no task waits on it
            raise
        conn = WebSocketConnection(driver, outcome, address)
        with backend.guard():
            if self._closing:
                driver.kill()
            self._live.add(conn)
            self._admission.upgraded(ticket)
        driver._started = True
        assert self._group is not None
        self._group.start_soon(driver.run_reader)
        self._group.start_soon(self._write_then_forget, driver, conn, ticket)
        try:
            await self._handler(conn)
        except Exception as exc:
            if not isinstance(exc, sansquic.ConnectionClosed):
                self.log.exception("sansquic handler failed")
                await conn.close(sansquic.CloseCode.INTERNAL_ERROR, "handler failed")

    def _forget(self, sock: socket.socket, ticket: Ticket) -> None:
        sock.close()
        with self._backend.guard():
            self._admission.release(ticket)

    async def _write_then_forget(
        self, driver: _WsDriver, conn: WebSocketConnection, ticket: Ticket
    ) -> None:
        try:
            await driver.run_writer()
            await driver.until(
                lambda: True if driver.socket_closed else None, ("ws-ended", driver), None
            )
        finally:
            with self._backend.guard():
                self._live.discard(conn)
                self._admission.release(ticket)

    async def _until_served(self, deadline: float | None) -> None:
        backend = self._backend
        with backend.guard():
            while not self._served:
                if deadline is not None and backend.now() >= deadline:
                    raise TimeoutError
                await backend.park(("ws-served", self), deadline)

    async def close(self, *, timeout: float | None = None) -> None:
        """Close every connection, stop accepting, and wait for the handlers."""
        backend = self._backend
        with backend.guard():
            first = not self._closing
            self._closing = True
            live = list(self._live)
        if first:
            shutdown(self._listener)  # the accept loop wakes and ends
        for conn in live:
            with contextlib.suppress(sansquic.SansQuicError):
                await conn.close()
        if self._serving:
            await self._until_served(None if timeout is None else backend.now() + timeout)
        else:
            self._listener.close()

    async def __aenter__(self) -> WebSocketServer:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


async def open_websocket_server(
    backend: AsyncBackend,
    handler: Callable[[WebSocketConnection], Awaitable[object]],
    host: str,
    port: int,
    *,
    config: sansquic.Config,
    authenticator: sansquic.Authenticator | None = None,
) -> WebSocketServer:
    """Listen on TCP ``host:port`` (port 0 picks one); not serving yet.

    With ``authenticator`` (or ``config.auth``) each upgrade is authenticated
    before the handler sees it. Next: :meth:`WebSocketServer.serve_forever`.
    """
    config = config.with_authenticator(authenticator)
    family, bind = await backend.resolve(host, port)
    listener = tcp_socket(family)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(bind)
        listener.listen(128)
        return WebSocketServer(backend, listener, handler, config)
    except BaseException:
        listener.close()
        raise


async def connect_any(
    backend: AsyncBackend,
    group: AsyncTaskGroup,
    host: str,
    port: int,
    *,
    make_backend: Callable[[], AsyncBackend],
    websocket_port: int,
    websocket_path: str = "/",
    config: sansquic.Config | None = None,
    server_name: str | None = None,
    token: str | bytes | None = None,
    delay: float = 0.25,
    timeout: float = 10.0,
) -> Connection | WebSocketConnection:
    """QUIC to UDP ``host:port`` first; WebSocket to TCP ``host:websocket_port`` after
    ``delay`` seconds or as soon as QUIC fails; the first to be ready is returned
    (its ``transport`` says which) and the other is abandoned.

    The decision is :class:`sansquic.websocket.Race`'s; this only drives it, on
    ``backend`` (whose task group ``group`` is). Each attempt has a backend of its
    own from ``make_backend`` (one backend serves one socket); where the framework
    has background tasks its tasks run there, else in ``group``. Raises
    ``TimeoutError`` when neither is ready within ``timeout``, else the WebSocket
    attempt's error (a rejection: ``PeerClosedError`` with the server's code).
    """
    race = Race(backend.now(), delay=delay, timeout=timeout)
    aborts = {transport: Abort() for transport in Transport}
    won: list[Connection | WebSocketConnection] = []
    key = ("race", race)

    async def attempt(transport: Transport) -> None:
        own = make_backend()
        tasks = own.background() or group
        conn: Connection | WebSocketConnection
        try:
            if transport is Transport.QUIC:
                conn = await open_connection(
                    own,
                    tasks,
                    host,
                    port,
                    config=config,
                    server_name=server_name,
                    token=token,
                    timeout=timeout,
                    abort=aborts[transport],
                )
            else:
                conn = await open_websocket(
                    own,
                    tasks,
                    host,
                    websocket_port,
                    path=websocket_path,
                    config=config,
                    server_name=server_name,
                    token=token,
                    timeout=timeout,
                    abort=aborts[transport],
                )
        except Exception as exc:
            with backend.guard():
                race.failed(transport, backend.now(), exc)
                backend.wake(key)
            return
        with backend.guard():
            first = race.succeeded(transport, backend.now())
            if first:
                won.append(conn)
            backend.wake(key)
        if not first:
            await conn.close()  # it completed after the other: not needed

    with backend.guard():
        while True:
            for transport in race.to_start(backend.now()):
                group.start_soon(attempt, transport)
            for transport in race.to_abandon():
                aborts[transport].request()
            if race.done:
                break
            await backend.park(key, race.timer())
    if won:
        return won[0]
    if race.timed_out:
        raise TimeoutError(f"neither QUIC nor WebSocket reached {host} in {timeout} s")
    raise race.errors[Transport.WEBSOCKET]


def _both_have_the_shape(
    quic: Connection, websocket: WebSocketConnection
) -> tuple[ConnectionShape, ConnectionShape, MessageConnection, MessageConnection]:
    """Never called: mypy checks here that both transports fit :class:`ConnectionShape`,
    and so carry the messaging layer (``Messenger`` / ``MessageServer``) alike."""
    return quic, websocket, quic, websocket
