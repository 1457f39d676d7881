"""The runtime layer, written once: Stream, Connection, Server and the I/O loop.

Everything here is runtime-neutral; a framework only supplies the primitives
of :class:`~sansquic_runtime._backend.AsyncBackend`. This file is the async
original: ``_sync.py`` is generated from it by ``scripts/unasync.py`` for the
blocking runtime, and ``tests/test_unasync.py`` fails when the two drift.
"""

from __future__ import annotations

import contextvars
import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable
from typing import TypeVar

import sansquic
import sansquic.websocket

from ._backend import AsyncBackend, AsyncTaskGroup
from ._tcp import Abort, Aborted
from ._udp import UdpSocket, client_bind, safe_config

__all__ = ["Connection", "Server", "Stream", "open_connection", "open_server"]

_T = TypeVar("_T")
#: Seconds ``close()`` waits for the peer to confirm before letting go.
CLOSE_WAIT = 2.0
#: How many more times the I/O loop gives way while other tasks are ready, after the
#: tasks it woke had their turn: one for a task a woken one started (a handler that
#: spawns a task per stream) and one for what that task's end schedules, on asyncio;
#: curio takes three for the same, as its wake-ups pass through its kernel task.
#: Bounded, so that busy unrelated tasks delay a reply by at most this many of their
#: steps (asyncio's run queue shows unrelated tasks too).
GIVE_WAY_PASSES = 3
#: What ``Stream.read_all()`` accepts at most unless told otherwise.
READ_ALL_LIMIT = 16 * 1024 * 1024
#: The server whose handler the current task or thread runs, if any.
_IN_HANDLER: contextvars.ContextVar[Server | None] = contextvars.ContextVar(
    "sansquic_in_handler", default=None
)


def _only_closed(exc: BaseException) -> bool:
    """Whether ``exc`` means only that the connection went away (groups included)."""
    if isinstance(exc, BaseExceptionGroup):
        return all(_only_closed(inner) for inner in exc.exceptions)
    return isinstance(exc, sansquic.ConnectionClosed)


def _wake_guarded(backend: AsyncBackend, key: Hashable) -> None:
    """Wake ``key`` from outside this backend's guard (another backend's task)."""
    with backend.guard():
        backend.wake(key)


def _closed(core: sansquic.Connection) -> Callable[[], bool | None]:
    """A check for :meth:`_Driver.until`: done once ``core`` is CLOSED."""
    return lambda: True if core.state is sansquic.ConnectionState.CLOSED else None


class _Driver:
    """One UDP socket: its Endpoint and Dispatcher, the I/O loop, and waiting on keys.

    Every use of the endpoint, its connections or the dispatcher happens
    under ``backend.guard()``.
    """

    def __init__(
        self, backend: AsyncBackend, endpoint: sansquic.Endpoint, sock: UdpSocket, *, client: bool
    ) -> None:
        self.backend = backend
        self.endpoint = endpoint
        self.dispatcher: sansquic.Dispatcher = sansquic.Dispatcher(endpoint)
        self.sock: UdpSocket = sock
        # Sockets a migration moved away from, closed once the I/O loop waits elsewhere.
        self._retired: list[UdpSocket] = []
        self.log: logging.Logger = logging.getLogger(backend.logger_name)
        # A client's loop ends with its last connection, so a connection never closed
        # cannot keep a process alive past its idle timeout; a server's runs until stop().
        self._client = client
        self._sleep_until = math.inf  # when the I/O loop will next look at the timer
        # Commands only mark the core as having news (touch()); one flush then sends
        # everything queued since, so send() + finish() leave as one packet and a burst
        # of commands costs one pass through the engine, not one each.
        self._dirty = False
        # A command queued something the peer may be waiting for (data, a FIN, a reset),
        # not only credit: a task parking with that unsent may send it itself (until()).
        self._queued = False
        self._stopping = False
        self._started = False
        self.stopped: bool = False
        self.socket_closed: bool = False
        self._failure: BaseException | None = None

    def deadline(self, timeout: float | None) -> float | None:
        return None if timeout is None else self.backend.now() + timeout

    async def run(self) -> None:
        """The I/O loop: wait for datagrams or the timer, feed the endpoint, flush."""
        backend, endpoint = self.backend, self.endpoint
        with backend.guard():
            self._started = True
        try:
            while True:
                with backend.guard():
                    sock = self.sock  # a migration may have switched it
                    if self._stopping or (self._client and not endpoint.connections):
                        return
                    if self._dirty:
                        # News from a command made while this loop was awake (touch() did
                        # not nudge): send it now, or a task that never parks waits forever.
                        self.flush()
                    deadline = endpoint.timer()
                    self._sleep_until = math.inf if deadline is None else deadline
                await backend.wait_readable(sock, deadline)
                if self._retired:
                    self._close_retired(sock)
                batch = sock.receive_ready()  # every ready datagram before one send pass
                with backend.guard():
                    self._sleep_until = -math.inf  # awake: flush() need not nudge
                    now = backend.now()
                    endpoint.receive_datagrams(batch, now)
                    unreachable = sock.take_unreachable()
                    for addr in unreachable:
                        # The core decides: a handshake ends, an open connection shrugs.
                        endpoint.peer_unreachable(addr, now)
                    if (
                        not endpoint.handle_timer(now)
                        and not batch
                        and not unreachable
                        and not self._dirty
                    ):
                        continue  # a nudge whose news a parking task already sent
                    if not self._wake():
                        self.flush()
                        continue
                    # Let the woken tasks answer first: their replies (and the ACK the engine
                    # owes) then leave in one send pass, made here (a task parking while
                    # this loop is awake leaves the flush to it, unless the backend would
                    # have to hand it across threads: see until() and _flushes_soon()).
                    self._dirty = True
                await backend.checkpoint()
                for _ in range(GIVE_WAY_PASSES):
                    if not backend.others_ready():
                        break
                    await backend.checkpoint()
                with backend.guard():
                    if self._dirty and not self._stopping:
                        self.flush()
        except Exception as exc:  # a bug below us: fail every waiter rather than hang it
            self.log.exception("sansquic I/O loop failed")
            self._failure = exc
        finally:
            with backend.guard():
                self.stopped = True
                backend.wake_all()
                stopping = self._stopping
            if stopping:
                # stop() may have been cut short by a cancellation: the socket closes anyway.
                self.close_socket()

    def touch(self, *, credit: bool = False) -> None:
        """A command gave the core something to send: have it sent soon, once.

        The flush happens when the calling task next parks (see :meth:`until`)
        or, if it never does, when the I/O loop runs. ``credit``: only flow-control
        credit a read returned, which no task parking needs to send itself.
        """
        if not credit:
            self._queued = True
        if not self._dirty:
            self._dirty = True
            if self._sleep_until != -math.inf:
                # Deferred where the backend can: a task that goes on to park flushes
                # itself (until()), and the I/O loop need not wake for nothing.
                self.backend.after_yield(self._nudge_if_dirty)

    def _nudge_if_dirty(self) -> None:
        """Wake the sleeping I/O loop if news is still unsent (see :meth:`touch`)."""
        if self._dirty and self._sleep_until != -math.inf:
            self.backend.nudge()

    def flush(self) -> None:
        """Send what the endpoint has, then wake the waiters the dispatcher names."""
        backend, endpoint = self.backend, self.endpoint
        self._dirty = self._queued = False
        self.sock.send(endpoint.datagrams_to_send(backend.now()))
        self._wake()
        if endpoint.last_internal_error is not None:
            error, endpoint.last_internal_error = endpoint.last_internal_error, None
            self.log.error("sansquic closed a connection on an internal error", exc_info=error)
        deadline = endpoint.timer()
        if deadline is not None and deadline < self._sleep_until:
            # A command moved the timer earlier than the I/O loop's sleep: wake it.
            self._sleep_until = deadline
            backend.nudge()

    def _wake(self) -> bool:
        """Wake the waiters the dispatcher names; whether there were any."""
        keys = self.dispatcher.process()
        for key in keys:
            self.backend.wake(key)
        return bool(keys)

    async def until(
        self,
        check: Callable[[], _T | None],
        key: Hashable,
        deadline: float | None,
        *,
        after_stop: bool = False,
    ) -> _T:
        """Call ``check`` until it returns non-None, parking on ``key`` in between.

        Raises ``TimeoutError`` past ``deadline`` and, unless ``after_stop``,
        ``ConnectionClosed`` once the I/O loop ended.
        """
        backend = self.backend
        with backend.guard():
            while True:
                result = check()
                if result is not None:
                    return result
                if self.stopped and not after_stop:
                    raise self._stopped_error()
                if deadline is not None and backend.now() >= deadline:
                    raise TimeoutError
                if self._dirty and not self.stopped and not self._flushes_soon():
                    self.flush()  # what this task queued goes out before it sleeps
                    continue  # flushing may have woken what it waits for
                await backend.park(key, deadline)

    def _flushes_soon(self) -> bool:
        """Whether the I/O loop is awake and will flush before it sleeps again (it
        gives woken tasks their turn first, so their answers share one send pass),
        and the parking task should leave the send to it: not where the loop runs on
        another thread that waits for no one else (``waiter_sends``) and the task
        queued something the peer waits for."""
        if self._sleep_until != -math.inf or self._stopping:
            return False
        return not (self._queued and self.backend.waiter_sends())

    def _stopped_error(self) -> sansquic.SansQuicError:
        if self._failure is not None:
            error = sansquic.SansQuicError("the sansquic I/O loop failed")
            error.__cause__ = self._failure
            return error
        return sansquic.ConnectionClosed(0, "the endpoint was closed", application=True)

    async def stop(self) -> None:
        """End the I/O loop, wait until it has, and close the socket (idempotent)."""
        with self.backend.guard():
            self._stopping = True
            if not self._started:
                # It never ran, and will return at once if it starts now.
                self.stopped = True
            self.backend.nudge()
        await self.until(
            lambda: True if self.stopped else None, ("stopped",), None, after_stop=True
        )
        self.close_socket()

    def close_socket(self) -> None:
        with self.backend.guard():
            if self.socket_closed:
                return
            self.socket_closed = True
        self.backend.release(self.sock)
        self.sock.close()
        self._close_retired(self.sock)

    def switch_socket(self, sock: UdpSocket) -> None:
        """Send and receive on ``sock`` from now on (a client's migration)."""
        self._retired.append(self.sock)
        self.sock = sock
        self.backend.nudge()  # the I/O loop waits on the old socket: move it

    def _close_retired(self, current: UdpSocket) -> None:
        """Close the sockets migrated away from; the backend watches ``current`` now."""
        with self.backend.guard():
            retired, self._retired = self._retired, [s for s in self._retired if s is current]
        for sock in retired:
            if sock is not current:
                sock.close()


class WholeReads:
    """``receive_exactly`` and ``read_all``, built on ``receive``: shared by every
    stream of the runtime layer (QUIC and the WebSocket fallback)."""

    async def receive(self, max_bytes: int = -1, *, timeout: float | None = None) -> bytes:
        raise NotImplementedError

    def _deadline(self, timeout: float | None) -> float | None:
        """The clock reading ``timeout`` seconds from now (``None``: no deadline)."""
        raise NotImplementedError

    def _left(self, deadline: float | None) -> float | None:
        """Seconds left until ``deadline``, for the next ``receive``."""
        raise NotImplementedError

    async def receive_exactly(self, size: int, *, timeout: float | None = None) -> bytes:
        """Exactly ``size`` bytes; raises :class:`sansquic.IncompleteRead` if the stream
        ends first."""
        if size < 0:
            raise ValueError(f"size must be >= 0, not {size}")
        deadline = self._deadline(timeout)
        data = bytearray()
        while len(data) < size:
            chunk = await self.receive(size - len(data), timeout=self._left(deadline))
            if not chunk:
                raise sansquic.IncompleteRead(size, bytes(data))
            data += chunk
        return bytes(data)

    async def read_all(self, *, limit: int = READ_ALL_LIMIT, timeout: float | None = None) -> bytes:
        """Everything until the end of the stream (at most ``limit`` bytes, else
        :class:`sansquic.ReadLimitExceeded`)."""
        deadline = self._deadline(timeout)
        data = bytearray()
        while True:
            chunk = await self.receive(timeout=self._left(deadline))
            if not chunk:
                return bytes(data)
            data += chunk
            if len(data) > limit:
                raise sansquic.ReadLimitExceeded(limit)


class Stream(WholeReads):
    """One QUIC stream: :meth:`send` then :meth:`finish`; :meth:`receive` until ``b""``.

    One task may receive and one may send at a time; a second raises
    :class:`sansquic.BusyError`.
    """

    def __init__(self, conn: Connection, stream_id: int) -> None:
        self._driver = conn._driver
        self._core = conn._core
        #: The QUIC stream id.
        self.id = stream_id
        self._receiving = self._sending = False

    def __repr__(self) -> str:
        return f"<sansquic Stream id={self.id}>"

    def _deadline(self, timeout: float | None) -> float | None:
        return self._driver.deadline(timeout)

    def _left(self, deadline: float | None) -> float | None:
        return None if deadline is None else max(0.0, deadline - self._driver.backend.now())

    @property
    def early_bytes(self) -> int:
        """(Servers) How many of the stream's first bytes came in 0-RTT, before the
        handshake completed; an attacker can replay those (docs/resumption.md)."""
        with self._driver.backend.guard():
            return self._core.early_bytes(self.id)

    @property
    def priority(self) -> int:
        """Send priority, 0-255, higher first (see :class:`sansquic.Priority`); settable."""
        with self._driver.backend.guard():
            return self._core.priority(self.id)

    @priority.setter
    def priority(self, value: int) -> None:
        with self._driver.backend.guard():
            self._core.set_priority(self.id, value)
            self._driver.touch()

    @property
    def queued(self) -> int:
        """Bytes sent on this stream that have not left yet (in the core or the engine);
        0 for a receive-only stream or once everything went out."""
        with self._driver.backend.guard():
            return self._core.queued(self.id)

    async def send(
        self, data: bytes | bytearray | memoryview, *, timeout: float | None = None
    ) -> None:
        """Queue ``data``, waiting whenever the stream is above its send high watermark.

        Data of any size is split to fit the send buffer. Raises
        :class:`sansquic.StreamStoppedError` if the peer stopped the stream;
        after a timeout or cancellation a first part of ``data`` may be queued.
        Next: more :meth:`send` calls, then :meth:`finish`.
        """
        view = memoryview(data).cast("B")
        driver, core, sid = self._driver, self._core, self.id
        with driver.backend.guard():
            if self._sending:
                raise sansquic.BusyError(f"another task is sending on stream {sid}")
            if not view:
                core.send(sid, b"")  # nothing to queue, but misuse still raises
                return
            deadline = driver.deadline(timeout)  # a bad timeout raises before the flag is set
            self._sending = True
        try:
            offset = 0
            while offset < len(view):
                offset += await driver.until(
                    _SendAttempt(driver, core, sid, view[offset:]), ("write", core, sid), deadline
                )
        finally:
            self._sending = False

    async def finish(self) -> None:
        """End the sending side (FIN). Next: :meth:`receive` the reply, if any."""
        with self._driver.backend.guard():
            self._core.finish(self.id)
            self._driver.touch()
            self._driver.backend.wake(("write", self._core, self.id))  # a sender must look again

    async def receive(self, max_bytes: int = -1, *, timeout: float | None = None) -> bytes:
        """The next bytes that arrived (at most ``max_bytes`` when positive); ``b""`` at the end.

        One chunk, not the whole reply: use :meth:`read_all` or
        :meth:`receive_exactly` for that. Raises :class:`sansquic.StreamResetError`
        if the peer reset the stream, ``ConnectionClosed`` once the connection
        closed, and ``ValueError`` for ``max_bytes=0``.
        """
        driver, core, sid = self._driver, self._core, self.id
        dispatcher, endpoint = driver.dispatcher, driver.endpoint

        def attempt() -> bytes | None:
            data = dispatcher.receive(core, sid, max_bytes)
            if data and endpoint.wants_send:
                driver.touch(credit=True)  # the read raised credit the peer may want
            return data

        with driver.backend.guard():
            if self._receiving:
                raise sansquic.BusyError(f"another task is receiving on stream {sid}")
            self._receiving = True
        try:
            return await driver.until(attempt, ("read", core, sid), driver.deadline(timeout))
        finally:
            self._receiving = False

    async def reset(self, code: int = 0) -> None:
        """Abandon the sending side with ``code``; unsent data is dropped."""
        with self._driver.backend.guard():
            self._core.reset(self.id, code)
            self._driver.touch()
            # The core emits nothing for its own reset: a task blocked sending must look again.
            self._driver.backend.wake(("write", self._core, self.id))

    async def stop(self, code: int = 0) -> None:
        """Ask the peer to stop sending, with ``code``; unread data is dropped."""
        with self._driver.backend.guard():
            self._core.stop(self.id, code)
            self._driver.touch()
            self._driver.backend.wake(("read", self._core, self.id))  # a reader gets b"" now


class _SendAttempt:
    """One try at queueing the rest of a send (a class: a closure in a loop would
    capture the loop variable)."""

    __slots__ = ("core", "data", "driver", "sid")

    def __init__(
        self, driver: _Driver, core: sansquic.Connection, sid: int, data: memoryview
    ) -> None:
        self.driver, self.core, self.sid, self.data = driver, core, sid, data

    def __call__(self) -> int | None:
        queued = self.driver.dispatcher.send_piece(self.core, self.sid, self.data)
        if queued:
            self.driver.touch()
        return queued


class Connection:
    """A QUIC connection: :meth:`open_stream`, or iterate it to accept the peer's streams.

    Use it as a context manager (or call :meth:`close`) when done.
    """

    #: Which transport this is (``connect_any`` may return a WebSocket connection instead).
    transport = sansquic.websocket.Transport.QUIC

    def __init__(self, driver: _Driver, core: sansquic.Connection, *, owns_driver: bool) -> None:
        self._driver = driver
        self._core = core
        self._owns_driver = owns_driver
        self._closed = False

    def __repr__(self) -> str:
        return f"<sansquic Connection {self._core.role.value} {self._core.state.value}>"

    @property
    def identity(self) -> sansquic.Identity | None:
        """Who the auth handshake accepted (both sides), or ``None`` without auth."""
        with self._driver.backend.guard():
            return self._core.identity

    @property
    def alpn(self) -> str | None:
        """The negotiated ALPN protocol (one port can serve several)."""
        with self._driver.backend.guard():
            return self._core.alpn

    @property
    def remote_address(self) -> sansquic.Address | None:
        """The peer's address on the path in use."""
        with self._driver.backend.guard():
            return self._core.remote_address

    @property
    def resumed(self) -> bool:
        """True once the handshake completed by resuming a session (a ticket)."""
        with self._driver.backend.guard():
            return self._core.resumed

    @property
    def early_data_accepted(self) -> bool | None:
        """Whether the server took the 0-RTT data; ``None`` until known (the handshake's
        end; on a server, as soon as it takes 0-RTT)."""
        with self._driver.backend.guard():
            return self._core.early_data_accepted

    @property
    def max_datagram_size(self) -> int | None:
        """The largest datagram :meth:`send_datagram` takes now (``None``: datagrams off)."""
        with self._driver.backend.guard():
            return self._core.max_datagram_size

    def stats(self) -> sansquic.ConnectionStats:
        """A snapshot of the connection's counters and path estimates."""
        with self._driver.backend.guard():
            return self._core.stats()

    async def open_stream(
        self, *, bidirectional: bool = True, priority: int = sansquic.Priority.NORMAL
    ) -> Stream:
        """Open a stream. Next: :meth:`Stream.send` (the peer learns of it with the first data)."""
        with self._driver.backend.guard():
            stream_id = self._core.open_stream(bidirectional, priority)
            self._driver.touch()
        return Stream(self, stream_id)

    async def accept_stream(self, *, timeout: float | None = None) -> Stream:
        """The next stream the peer opened; raises ``ConnectionClosed`` once closed.

        Next: :meth:`Stream.receive`.
        """
        driver, core = self._driver, self._core
        dispatcher = driver.dispatcher
        stream_id = await driver.until(
            lambda: dispatcher.next_stream(core), ("accept", core), driver.deadline(timeout)
        )
        return Stream(self, stream_id)

    def __aiter__(self) -> AsyncIterator[Stream]:
        """Accepted streams, one by one, until the connection closes."""
        return self._streams()

    async def _streams(self) -> AsyncIterator[Stream]:
        while True:
            try:
                stream = await self.accept_stream()
            except sansquic.ConnectionClosed:
                return
            yield stream

    async def send_datagram(self, data: bytes) -> None:
        """Send an unreliable datagram (at most :attr:`max_datagram_size` bytes)."""
        with self._driver.backend.guard():
            self._core.send_datagram(data)
            self._driver.touch()

    async def receive_datagram(self, *, timeout: float | None = None) -> bytes:
        """The next datagram that arrived; raises ``ConnectionClosed`` once closed."""
        driver, core = self._driver, self._core
        dispatcher = driver.dispatcher
        return await driver.until(
            lambda: dispatcher.next_datagram(core), ("datagram", core), driver.deadline(timeout)
        )

    async def migrate(self) -> None:
        """(Client) Move the connection to a new local UDP port (connection migration).

        A new socket is bound (same address family and host), the connection
        moves to a fresh connection id and sends from the new socket at once;
        the server validates the new path and follows. Raises
        :class:`sansquic.LocalProtocolError` on a server, on a connection that
        shares its socket, and before the handshake is confirmed (see
        :meth:`sansquic.Connection.migrate`).
        """
        driver, core = self._driver, self._core
        with driver.backend.guard():
            if core.role is not sansquic.Role.CLIENT:
                raise sansquic.LocalProtocolError(
                    "only a client migrates (RFC 9000 section 9); a server follows"
                )
            if not self._owns_driver:
                raise sansquic.LocalProtocolError(
                    "this connection shares its socket with others: it cannot move alone"
                )
            old = driver.sock
        sock = UdpSocket(old.family, (old.address[0], 0))
        moved = False
        try:
            with driver.backend.guard():
                if driver.socket_closed:
                    raise sansquic.ConnectionClosed(
                        0, "the connection was closed", application=True
                    )
                core.migrate()  # misuse raises here, before anything changed
                driver.switch_socket(sock)
                moved = True
                driver.flush()  # the server learns of the new path now
        finally:
            if not moved:
                sock.close()

    async def update_keys(self) -> None:
        """Move to fresh packet protection keys now (see :meth:`sansquic.Connection.update_keys`:
        ``LocalProtocolError`` while the last update is unconfirmed)."""
        with self._driver.backend.guard():
            self._core.update_keys()
            self._driver.touch()

    async def close(self, code: int = 0, reason: str = "") -> None:
        """Close with an application ``code`` and ``reason``, then release what it holds.

        Waits (up to a few seconds) for the peer to confirm; a client
        connection then ends its I/O loop and closes its socket. Idempotent.
        """
        driver, core = self._driver, self._core
        with driver.backend.guard():
            if self._closed:
                return
            if not driver.socket_closed:
                # Even when a cancellation ended the I/O loop first, the goodbye goes out.
                core.close(code, reason)  # a bad code raises here, before anything changed
                driver.flush()
            self._closed = True
        try:
            await driver.until(_closed(core), ("closed", core), driver.deadline(CLOSE_WAIT))
        except (TimeoutError, sansquic.SansQuicError):
            pass  # the peer did not confirm in time, or the endpoint is gone: let go anyway
        finally:
            with driver.backend.guard():
                # Forgotten, it hears no ConnectionTerminated: wake its waiters now,
                # they will find it closed.
                for key in driver.dispatcher.forget(core):
                    driver.backend.wake(key)
            if self._owns_driver:
                await driver.stop()

    async def aclose(self) -> None:  # unasync: remove
        """Close with code 0: the trio idiom for :meth:`close`."""  # unasync: remove
        await self.close()  # unasync: remove

    async def __aenter__(self) -> Connection:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


async def open_connection(
    backend: AsyncBackend,
    group: AsyncTaskGroup,
    host: str,
    port: int,
    *,
    config: sansquic.Config | None = None,
    server_name: str | None = None,
    token: str | bytes | None = None,
    timeout: float | None = 10.0,
    abort: Abort | None = None,
) -> Connection:
    """Connect to ``host:port``, running the I/O loop in ``group``, and wait until
    the connection is ready (and authenticated, with ``token`` or ``config.auth_request``).

    With ``config.early_data`` and a stored ticket that allows 0-RTT (never with a
    token or ``auth_request``: credentials do not travel in replayable 0-RTT), it
    returns at once, before the handshake: what is sent until it completes leaves in
    0-RTT. A rejection raises ``PeerClosedError`` with the server's code.
    ``abort`` (``connect_any``'s) abandons the attempt while it waits.
    """
    config = (config if config is not None else sansquic.Config()).with_token(token)
    family, remote = await backend.resolve(host, port)
    sock = UdpSocket(family, client_bind(remote))
    try:
        endpoint = sansquic.Endpoint(safe_config(config, sock), now=backend.now())
        driver = _Driver(backend, endpoint, sock, client=True)
        with backend.guard():
            core = endpoint.connect(remote, backend.now(), server_name=server_name or host)
            driver.dispatcher.watch(core)
            driver.flush()
    except BaseException:
        sock.close()
        raise
    group.start_soon(driver.run)
    dispatcher = driver.dispatcher
    try:
        if abort is not None:
            abort.on_request(lambda: _wake_guarded(backend, ("ready", core)))
        with backend.guard():  # the I/O loop runs from here on
            early = core.sending_early_data
        if not early:
            await driver.until(
                lambda: True if dispatcher.ready(core) or (abort and abort.requested) else None,
                ("ready", core),
                driver.deadline(timeout),
            )
            if abort is not None and abort.requested and not dispatcher.ready(core):
                raise Aborted
    except BaseException:
        with backend.guard():
            if not driver.stopped and core.state is not sansquic.ConnectionState.CLOSED:
                core.close()  # tell the server now rather than leave it to its idle timeout
                driver.flush()
        await driver.stop()
        raise
    return Connection(driver, core, owns_driver=True)


class Server:
    """A listening endpoint running ``handler(conn)`` for each ready connection.

    :meth:`serve_forever` runs it; :meth:`close` (or leaving its context manager)
    closes every connection and stops it.
    """

    def __init__(self, driver: _Driver, handler: Callable[[Connection], Awaitable[object]]) -> None:
        self._driver = driver
        self._handler = handler
        self._closing = False
        self._serving = False
        self._served = False
        self._group: AsyncTaskGroup | None = None
        self._background: AsyncTaskGroup | None = None
        #: The bound ``(host, port)``; the real port when 0 was asked for.
        self.address: tuple[str, int] = driver.sock.address

    def stats(self) -> sansquic.EndpointStats:
        """A snapshot of the endpoint's counters."""
        with self._driver.backend.guard():
            return self._driver.endpoint.stats()

    @property
    def tracked(self) -> int:
        """Connections the runtime keeps state for (zero once all are over)."""
        with self._driver.backend.guard():
            return self._driver.dispatcher.tracked

    def start_serving(self, group: AsyncTaskGroup) -> None:
        """Run :meth:`serve_forever` as a task of ``group`` (kept alive with the server)."""
        self._background = group
        group.start_soon(self.serve_forever)

    async def serve_forever(self) -> None:
        """Accept connections and run the handler for each, until :meth:`close`.

        When the server is already serving (``serve()`` started it in the
        background), this waits until it stops.
        """
        driver = self._driver
        with driver.backend.guard():
            serving, self._serving = self._serving, True
        if serving:
            await driver.until(
                lambda: True if self._served else None, ("served",), None, after_stop=True
            )
            return
        try:
            async with driver.backend.task_group() as group:
                self._group = group
                group.start_soon(driver.run)
                try:
                    while True:
                        core = await driver.until(
                            driver.dispatcher.next_connection, ("incoming",), None
                        )
                        if self._closing:
                            with driver.backend.guard():
                                core.close()
                                driver.flush()
                                driver.dispatcher.release(core)
                        else:
                            group.start_soon(self._serve_one, core)
                        del core  # held here, it would outlive its connection
                except sansquic.SansQuicError:
                    if driver._failure is not None:
                        raise  # the I/O loop crashed: say so rather than return quietly
                    # Otherwise the I/O loop ended because close() was called.
                finally:
                    self._abandon()
                    group.cancel()  # handlers still running are cut off
        finally:
            driver.close_socket()
            with driver.backend.guard():
                # What the loop left closing (a far, silent peer outlasts the close's
                # bounded wait) hears nothing more: nothing may be kept for it. Its
                # waiters need no wake: the loop's end woke them all.
                driver.dispatcher.forget_all()
                self._served = True
                driver.backend.wake(("served",))

    def _abandon(self) -> None:
        """Leaving without close(): say goodbye to every peer and stop the loop, at once."""
        driver = self._driver
        with driver.backend.guard():
            if not driver.socket_closed:
                for core in driver.endpoint.connections:
                    core.close()
                driver.flush()
            driver._stopping = True
            driver.backend.nudge()

    async def _serve_one(self, core: sansquic.Connection) -> None:
        driver = self._driver
        _IN_HANDLER.set(self)  # each handler runs in a context (task, thread) of its own
        try:
            await self._handler(Connection(driver, core, owns_driver=False))
        except Exception as exc:
            if not _only_closed(exc):  # a peer that went away mid-handler is no failure
                # Nothing serves the connection any more: say so rather than leave it open.
                driver.log.exception("sansquic handler failed")
                with driver.backend.guard():
                    if not driver.stopped and core.state is sansquic.ConnectionState.CONNECTED:
                        core.close(sansquic.CloseCode.INTERNAL_ERROR, "handler failed")
                        driver.flush()
        finally:
            with driver.backend.guard():
                # The connection outlives a handler that returned (closing it could cut
                # short a reply still in flight); it is forgotten once it ends.
                driver.dispatcher.release(core)

    async def close(self, *, timeout: float | None = None) -> None:
        """Close every connection (code 0), stop the I/O loop, close the socket, and
        wait for the handlers (``TimeoutError`` if they outlast ``timeout``).

        Safe to call again, and from inside a handler (which is then not waited for).
        """
        driver = self._driver
        cores: list[sansquic.Connection] = []
        with driver.backend.guard():
            if not self._closing:
                self._closing = True
                cores = [] if driver.socket_closed else driver.endpoint.connections
                for core in cores:
                    core.close()
                driver.flush()
        try:
            wait_end = driver.deadline(CLOSE_WAIT)
            for core in cores:
                try:
                    await driver.until(_closed(core), ("closed", core), wait_end)
                except (TimeoutError, sansquic.SansQuicError):
                    break  # the rest had the same time: go on closing
        finally:
            # Cut short (cancelled, timed out) or not, the loop is told to stop.
            with driver.backend.guard():
                driver._stopping = True
                driver.backend.nudge()
        await driver.stop()  # every handler still waiting wakes to a closed connection
        if self._serving and _IN_HANDLER.get() is not self:
            with driver.backend.guard():
                if self._group is not None:
                    self._group.cancel()
            await driver.until(
                lambda: True if self._served else None,
                ("served",),
                driver.deadline(timeout),
                after_stop=True,
            )

    async def __aenter__(self) -> Server:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


async def open_server(
    backend: AsyncBackend,
    handler: Callable[[Connection], Awaitable[object]],
    host: str,
    port: int,
    *,
    config: sansquic.Config,
    authenticator: sansquic.Authenticator | None = None,
) -> Server:
    """Bind ``host:port`` (port 0 picks one) and return the :class:`Server`, not yet serving.

    With ``authenticator`` (or ``config.auth``) only accepted clients reach
    the handler. Next: :meth:`Server.serve_forever`.
    """
    config = config.with_authenticator(authenticator)
    family, bind = await backend.resolve(host, port)
    sock = UdpSocket(family, bind)
    try:
        endpoint = sansquic.Endpoint(safe_config(config, sock), server=True, now=backend.now())
    except BaseException:
        sock.close()
        raise
    return Server(_Driver(backend, endpoint, sock, client=False), handler)
