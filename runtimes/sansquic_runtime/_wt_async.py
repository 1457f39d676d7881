"""WebTransport on the runtime layer, written once: sessions, their streams, datagrams.

The protocol decisions are the core's :class:`sansquic.H3Connection`; this
module only moves bytes between it and a runtime :class:`Connection`: one
task pumps each stream the peer opens until the layer says what it is (a
WebTransport stream is then handed to the session, as a runtime stream), one
pumps datagrams. This file is the async original: ``_wt_sync.py`` is
generated from it by ``scripts/unasync.py``.
"""

from __future__ import annotations

import weakref
from collections import deque
from collections.abc import Awaitable, Callable, Sequence

import sansquic

from ._async import Connection, Stream
from ._backend import AsyncTaskGroup
from ._messaging_async import MessageConnection

__all__ = ["WebTransportSession", "WebTransportStream", "open_session", "webtransport_handler"]

#: Datagrams a session keeps unread; past it the oldest is dropped (and counted).
DATAGRAM_QUEUE = 256
#: What runs for each session a server accepts.
SessionHandler = Callable[["WebTransportSession"], Awaitable[object]]
#: A connection handler for ``open_server``.
ConnectionHandler = Callable[[Connection], Awaitable[None]]


class _Transport:
    """The core connection as the H3 layer's transport; callers hold the guard."""

    def __init__(self, conn: Connection) -> None:
        self._core = conn._core
        self._driver = conn._driver
        self.config = self._core.config

    def open_stream(self, bidirectional: bool = True, priority: int = 128) -> int:
        sid = self._core.open_stream(bidirectional, priority)
        self._driver.touch()
        return sid

    def send(self, stream_id: int, data: bytes, end: bool = False) -> int:
        sent = self._core.send(stream_id, data, end)
        self._driver.touch()
        return sent

    def read(self, stream_id: int, max_bytes: int = -1) -> bytes:
        return self._core.read(stream_id, max_bytes)

    def reset(self, stream_id: int, error_code: int = 0) -> None:
        self._core.reset(stream_id, error_code)
        self._driver.touch()

    def stop(self, stream_id: int, error_code: int = 0) -> None:
        self._core.stop(stream_id, error_code)
        self._driver.touch()

    def send_datagram(self, data: bytes) -> None:
        self._core.send_datagram(data)
        self._driver.touch()

    def close(self, error_code: int = 0, reason: str = "") -> None:
        self._core.close(error_code, reason)
        self._driver.touch()


class WebTransportStream:
    """A stream of a session: :meth:`send`, :meth:`finish`, :meth:`receive` until ``b""``."""

    def __init__(self, glue: _Glue, stream: Stream) -> None:
        self._glue = glue
        self._stream = stream
        self._first = bytearray()  # what the pump read past the stream header
        self._ended = False
        self._told = False  # whether the core layer heard of the end
        # Set when the stream was released from a hold while its pump task was still
        # reading it: the pump then forwards every chunk (so none can overtake another)
        # and receive() takes them from ``_first``.
        self._pumped = False
        self._reset: int | None = None  # (pumped) the peer's reset code, as sent
        #: The QUIC stream id.
        self.id = stream.id

    def __repr__(self) -> str:
        return f"<sansquic WebTransportStream id={self.id}>"

    async def send(self, data: bytes, *, timeout: float | None = None) -> None:
        """Queue ``data`` (waits on flow control like :meth:`Stream.send`); raises
        :class:`sansquic.StreamStoppedError` with the peer's WebTransport code."""
        try:
            await self._stream.send(data, timeout=timeout)
        except sansquic.StreamStoppedError as exc:
            code = sansquic.H3Connection.webtransport_code(exc.error_code)
            raise sansquic.StreamStoppedError(self.id, code) from None

    async def reset(self, code: int = 0) -> None:
        """Abandon the sending side with a WebTransport error code (32 bits)."""
        glue = self._glue
        with glue.conn._driver.backend.guard():
            glue.h3.reset(self.id, code)
            glue.conn._driver.backend.wake(("write", glue.conn._core, self.id))

    async def stop(self, code: int = 0) -> None:
        """Ask the peer to stop sending, with a WebTransport error code (32 bits)."""
        glue = self._glue
        with glue.conn._driver.backend.guard():
            glue.h3.stop(self.id, code)
            glue.conn._driver.backend.wake(("read", glue.conn._core, self.id))

    async def finish(self) -> None:
        """End the sending side (FIN)."""
        glue = self._glue
        with glue.conn._driver.backend.guard():
            # Through the core layer, so it can drop the stream once both sides are over.
            glue.h3.send(self.id, b"", end=True)
            glue.conn._driver.backend.wake(("write", glue.conn._core, self.id))

    async def receive(self, *, timeout: float | None = None) -> bytes:
        """The next bytes; ``b""`` at the end of the stream."""
        if self._pumped:
            return await self._receive_pumped(timeout)
        if self._first:
            data, self._first = bytes(self._first), bytearray()
            return data
        if not self._ended:
            try:
                data = await self._stream.receive(timeout=timeout)
            except sansquic.StreamResetError as exc:
                if not self._told:  # the layer forgets the direction (no record leaks)
                    self._told = True
                    self._glue.peer_reset(self.id, exc.error_code)
                code = sansquic.H3Connection.webtransport_code(exc.error_code)
                raise sansquic.StreamResetError(self.id, code) from None
            if data:
                return data
            self._ended = True
        if not self._told:
            self._told = True
            self._glue.ended(self.id)
        return b""

    async def _receive_pumped(self, timeout: float | None) -> bytes:
        driver = self._glue.conn._driver

        def check() -> bytes | None:
            if self._first:
                data, self._first = bytes(self._first), bytearray()
                return data
            if self._reset is not None:
                code = sansquic.H3Connection.webtransport_code(self._reset)
                raise sansquic.StreamResetError(self.id, code)
            return b"" if self._ended else None

        data = await driver.until(check, self._glue.key("data", self.id), driver.deadline(timeout))
        if not data and not self._told:
            self._told = True  # the pump already fed the end to the core layer
            self._glue.ended(self.id, tell=False)
        return data

    async def read_all(
        self, *, limit: int = 16 * 1024 * 1024, timeout: float | None = None
    ) -> bytes:
        """Everything up to the end of the stream (at most ``limit`` bytes)."""
        data = bytearray()
        while chunk := await self.receive(timeout=timeout):
            data += chunk
            if len(data) > limit:
                raise sansquic.ReadLimitExceeded(limit)
        return bytes(data)


class WebTransportSession:
    """An open WebTransport session: accept and open streams, send and receive datagrams."""

    def __init__(self, glue: _Glue, ready: sansquic.WebTransportSessionReady) -> None:
        self._glue = glue
        #: The session id (its CONNECT stream's id), path, identity (servers) and headers.
        self.id = ready.session_id
        self.path = ready.path
        self.identity = ready.identity
        self.headers = ready.headers
        self._incoming: deque[WebTransportStream] = deque()
        # Bounded: an app that never reads must not let the peer fill memory.
        self._datagrams: deque[bytes] = deque(maxlen=DATAGRAM_QUEUE)
        #: Datagrams dropped unread because the queue was full (oldest first).
        self.datagrams_dropped = 0
        self.closed: sansquic.WebTransportSessionClosed | None = None

    def __repr__(self) -> str:
        return f"<sansquic WebTransportSession id={self.id} path={self.path!r}>"

    def _check(self) -> None:
        if self.closed is not None:
            raise sansquic.PeerClosedError(self.closed.code, self.closed.reason, application=True)

    async def accept_stream(self, *, timeout: float | None = None) -> WebTransportStream:
        """The next stream the peer opened in this session; raises once the session closed."""
        driver = self._glue.conn._driver

        def check() -> WebTransportStream | None:
            if self._incoming:
                return self._incoming.popleft()
            self._check()
            return None

        return await driver.until(
            check, self._glue.key("accept", self.id), driver.deadline(timeout)
        )

    async def open_stream(
        self, *, bidirectional: bool = True, priority: int = sansquic.Priority.NORMAL
    ) -> WebTransportStream:
        """Open a stream in this session, sent at ``priority``.
        Next: :meth:`WebTransportStream.send`."""
        glue = self._glue
        with glue.conn._driver.backend.guard():
            self._check()
            sid = glue.h3.open_stream(self.id, bidirectional, priority)
        return WebTransportStream(glue, Stream(glue.conn, sid))

    async def send_datagram(self, data: bytes) -> None:
        """Send an HTTP datagram in this session."""
        with self._glue.conn._driver.backend.guard():
            self._check()
            self._glue.h3.send_datagram(self.id, data)

    async def receive_datagram(self, *, timeout: float | None = None) -> bytes:
        """The next datagram of this session; raises once the session closed."""
        driver = self._glue.conn._driver

        def check() -> bytes | None:
            if self._datagrams:
                return self._datagrams.popleft()
            self._check()
            return None

        return await driver.until(
            check, self._glue.key("datagram", self.id), driver.deadline(timeout)
        )

    async def close(self, code: int = 0, reason: str = "") -> None:
        """Close the session (CLOSE_WEBTRANSPORT_SESSION); its streams are reset."""
        glue = self._glue
        with glue.conn._driver.backend.guard():
            if self.closed is None:
                glue.h3.close_session(self.id, code, reason)
                glue.dispatch()


class _Glue:
    """One connection's H3 layer and the tasks that feed it."""

    def __init__(
        self,
        conn: Connection,
        *,
        client: bool,
        authenticator: sansquic.Authenticator | None = None,
        on_session: SessionHandler | None = None,
    ) -> None:
        self.conn = conn
        with conn._driver.backend.guard():
            address = conn._core.remote_address or ("", 0)
            self.h3 = sansquic.H3Connection(
                _Transport(conn), client=client, authenticator=authenticator, address=address
            )
            self.h3.initiate()
        self.sessions: dict[int, WebTransportSession] = {}
        self._streams: dict[int, WebTransportStream] = {}  # handed over, by stream id
        self._on_session = on_session
        self._group: AsyncTaskGroup | None = None
        self.refused: dict[int, int] = {}
        self._pumping: set[int] = set()  # streams whose pump is waiting for bytes

    def ended(self, stream_id: int, *, tell: bool = True) -> None:
        """The application read a handed-over stream to its end: tell the core layer."""
        backend = self.conn._driver.backend
        with backend.guard():
            self._streams.pop(stream_id, None)
            if tell and self.h3.session_of(stream_id) is not None:
                self.h3.receive_stream_data(stream_id, b"", True, backend.now())
                self.dispatch()

    def peer_reset(self, stream_id: int, error_code: int) -> None:
        """The peer reset a handed-over stream the application reads: tell the core layer."""
        with self.conn._driver.backend.guard():
            self._streams.pop(stream_id, None)
            self.h3.stream_reset(stream_id, error_code)
            self.dispatch()

    def key(self, what: str, session_id: int) -> tuple[object, ...]:
        return ("wt-" + what, self.conn._core, session_id)

    def dispatch(self) -> None:
        """Apply the layer's events (caller holds the guard)."""
        wake = self.conn._driver.backend.wake
        for ev in self.h3.events():
            if isinstance(ev, sansquic.WebTransportSessionReady):
                session = self.sessions[ev.session_id] = WebTransportSession(self, ev)
                wake(self.key("ready", ev.session_id))
                if self._on_session is not None and self._group is not None:
                    self._group.start_soon(self._serve_session, session)
            elif isinstance(ev, sansquic.WebTransportSessionRefused):
                self.refused[ev.session_id] = ev.status
                wake(self.key("ready", ev.session_id))
            elif isinstance(ev, sansquic.WebTransportStreamOpened):
                ws = WebTransportStream(self, Stream(self.conn, ev.stream_id))
                ws._pumped = ev.stream_id in self._pumping  # released from a hold
                self._streams[ev.stream_id] = ws
                self.sessions[ev.session_id]._incoming.append(ws)
                wake(self.key("accept", ev.session_id))
            elif isinstance(ev, sansquic.WebTransportStreamData):
                held = self._streams.get(ev.stream_id)
                if held is not None:
                    held._first += ev.data
                    held._ended = held._ended or ev.ended
                    wake(self.key("data", ev.stream_id))
            elif isinstance(ev, sansquic.WebTransportDatagram):
                queue = self.sessions[ev.session_id]._datagrams
                if len(queue) == queue.maxlen:
                    self.sessions[ev.session_id].datagrams_dropped += 1
                queue.append(ev.data)
                wake(self.key("datagram", ev.session_id))
            elif isinstance(ev, sansquic.WebTransportSessionClosed):
                gone = self.sessions.pop(ev.session_id, None)
                if gone is not None:
                    gone.closed = ev
                for what in ("accept", "datagram", "ready"):
                    wake(self.key(what, ev.session_id))

    async def _serve_session(self, session: WebTransportSession) -> None:
        assert self._on_session is not None
        try:
            await self._on_session(session)
        except Exception as exc:
            if isinstance(exc, sansquic.ConnectionClosed):
                return  # the peer went away mid-session: no failure of the handler
            # Nothing serves the session any more: say so rather than leave it open.
            self.conn._driver.log.exception("sansquic WebTransport session handler failed")
            await session.close(1, "handler failed")

    async def run(self, group: AsyncTaskGroup) -> None:
        """Accept the peer's streams (each pumped by a task of ``group``) until it closes."""
        self._group = group
        group.start_soon(self._datagrams)
        while True:
            try:
                stream = await self.conn.accept_stream()
            except sansquic.ConnectionClosed:
                return
            group.start_soon(self._pump, stream)

    async def _pump(self, stream: Stream) -> None:
        backend = self.conn._driver.backend
        sid = stream.id
        while True:
            with backend.guard():
                self._pumping.add(sid)
            try:
                data = await stream.receive()
            except sansquic.StreamResetError as exc:
                with backend.guard():
                    self._pumping.discard(sid)
                    ws = self._streams.get(sid)
                    if ws is not None and ws._pumped:
                        ws._reset, ws._told = exc.error_code, True
                        self._streams.pop(sid, None)
                        backend.wake(self.key("data", sid))
                    self.h3.stream_reset(sid, exc.error_code)
                    self.dispatch()
                return
            except sansquic.ConnectionClosed:
                with backend.guard():
                    self._pumping.discard(sid)
                    backend.wake(self.key("data", sid))
                return
            with backend.guard():
                self._pumping.discard(sid)
                ws = self._streams.get(sid)
                self.h3.receive_stream_data(sid, data, not data, backend.now())
                self.dispatch()
                if not data:
                    return
                if ws is None and sid in self._streams:
                    return  # a WebTransport stream the session now reads itself

    async def _datagrams(self) -> None:
        backend = self.conn._driver.backend
        while True:
            try:
                data = await self.conn.receive_datagram()
            except sansquic.ConnectionClosed:
                return
            with backend.guard():
                self.h3.receive_datagram(data)
                self.dispatch()


#: The H3 layer of each client connection that opened a session.
_CLIENTS: weakref.WeakKeyDictionary[sansquic.Connection, _Glue] = weakref.WeakKeyDictionary()


def webtransport_handler(
    on_session: SessionHandler,
    *,
    authenticator: sansquic.Authenticator | None = None,
) -> ConnectionHandler:
    """A connection handler for ``open_server`` (ALPN ``"h3"``, no ``Config.auth``) that
    runs ``on_session(session)`` for each WebTransport session ``authenticator`` accepts."""

    async def handle(conn: Connection) -> None:
        glue = _Glue(conn, client=False, authenticator=authenticator, on_session=on_session)
        async with conn._driver.backend.task_group() as group:
            await glue.run(group)

    return handle


async def open_session(
    conn: Connection,
    group: AsyncTaskGroup,
    authority: str,
    path: str = "/",
    *,
    headers: Sequence[tuple[str, str]] = (),
    timeout: float | None = 10.0,
) -> WebTransportSession:
    """(Client) Open a WebTransport session on ``conn``, its I/O tasks in ``group``.

    Raises ``PermissionError`` with the status when the server refuses it (401/403).
    """
    driver = conn._driver
    with driver.backend.guard():
        glue = _CLIENTS.get(conn._core)
        if glue is None:  # one H3 layer per connection: its sessions share it
            glue = _CLIENTS[conn._core] = _Glue(conn, client=True)
            group.start_soon(glue.run, group)
    with driver.backend.guard():
        sid = glue.h3.connect(authority, path, headers=headers)
    group.start_soon(glue._pump, Stream(conn, sid))  # the response, then capsules

    def check() -> WebTransportSession | None:
        if sid in glue.refused:
            raise PermissionError(f"the server refused the session: status {glue.refused[sid]}")
        return glue.sessions.get(sid)

    return await driver.until(check, glue.key("ready", sid), driver.deadline(timeout))


def _a_session_has_the_shape(session: WebTransportSession) -> MessageConnection:
    """Never called: mypy checks here that a session carries the messaging layer (a
    browser agent's ``MessageServer.handle(session)``)."""
    return session
