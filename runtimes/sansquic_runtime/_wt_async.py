"""WebTransport on the runtime layer, written once: sessions, their streams, datagrams.

The protocol decisions are the core's :class:`sansquic.H3Connection`; this
module only moves bytes between it and a runtime :class:`Connection`: one
task pumps each stream the peer opens until the layer says what it is (a
WebTransport stream is then handed to the session, as a runtime stream), one
pumps datagrams. This file is the async original: ``_wt_sync.py`` is
generated from it by ``scripts/unasync.py``.
"""

from __future__ import annotations

import contextlib
import weakref
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence

import sansquic

from ._async import Connection, Stream
from ._backend import AsyncTaskGroup
from ._messaging_async import MessageConnection

__all__ = [
    "WebTransportHandler",
    "WebTransportSession",
    "WebTransportStream",
    "open_session",
    "webtransport_handler",
]

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
        self.id: int = stream.id
        session = glue.h3.session_of(stream.id)
        self._session = -1 if session is None else session

    def __repr__(self) -> str:
        return f"<sansquic WebTransportStream id={self.id}>"

    async def send(self, data: bytes, *, timeout: float | None = None) -> None:
        """Queue ``data`` (waits on flow control like :meth:`Stream.send`, and on the
        session's data limit when the peer set one); raises
        :class:`sansquic.StreamStoppedError` with the peer's WebTransport code."""
        glue = self._glue
        driver = glue.conn._driver
        deadline = driver.deadline(timeout)
        while True:
            with driver.backend.guard():
                granted = glue.h3.reserve(self.id, len(data))
            if granted:
                left = None if deadline is None else max(0.0, deadline - driver.backend.now())
                try:
                    await self._stream.send(
                        data[:granted] if granted < len(data) else data, timeout=left
                    )
                except sansquic.StreamStoppedError as exc:
                    code = sansquic.H3Connection.webtransport_code(exc.error_code)
                    raise sansquic.StreamStoppedError(self.id, code) from None
            data = data[granted:]
            if not data:
                return
            await driver.until(self._credited, glue.key("credit", self._session), deadline)

    def _credited(self) -> bool | None:
        """(Under guard) Whether the session's send credit lets a blocked send go on."""
        session = self._glue.sessions.get(self._session)
        if session is None:
            return True  # the session is over: the next send says how
        with contextlib.suppress(sansquic.SansQuicError):
            credit = self._glue.h3.send_credit(session.id)
            return True if credit is None or credit > 0 else None
        return True

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
                self._glue.read(self.id, len(data))
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
        self.id: int = ready.session_id
        self.path: str = ready.path
        self.identity: sansquic.Identity | None = ready.identity
        self.headers: Mapping[str, str] = ready.headers
        self._incoming: deque[WebTransportStream] = deque()
        # Bounded: an app that never reads must not let the peer fill memory.
        self._datagrams: deque[bytes] = deque(maxlen=DATAGRAM_QUEUE)
        #: Datagrams dropped unread because the queue was full (oldest first).
        self.datagrams_dropped = 0
        self.closed: sansquic.WebTransportSessionClosed | None = None
        #: Whether the session is winding down: the peer sent a drain capsule or
        #: GOAWAY, or this side called :meth:`drain`. It still works; finish up.
        self.draining: bool = False

    def __repr__(self) -> str:
        return f"<sansquic WebTransportSession id={self.id} path={self.path!r}>"

    def _check(self) -> None:
        closed = self.closed
        if closed is not None and closed.violation is not None:
            # This side ended it: the peer broke the session's flow control.
            raise sansquic.RemoteProtocolError(closed.violation, closed.reason, application=False)
        if closed is not None:
            raise sansquic.PeerClosedError(closed.code, closed.reason, application=True)

    async def wait_draining(self, *, timeout: float | None = None) -> None:
        """Return once the session is :attr:`draining`; raises once it closed."""
        driver = self._glue.conn._driver

        def check() -> bool | None:
            if self.draining:
                return True
            self._check()
            return None

        await driver.until(check, self._glue.key("draining", self.id), driver.deadline(timeout))

    async def drain(self) -> None:
        """Ask the peer to wind the session down (DRAIN_WEBTRANSPORT_SESSION); the
        session goes on working until either side closes it."""
        glue = self._glue
        with glue.conn._driver.backend.guard():
            self._check()
            glue.h3.drain_session(self.id)
            glue.conn._driver.backend.wake(glue.key("draining", self.id))
            self.draining = True

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
        self,
        *,
        bidirectional: bool = True,
        priority: int = sansquic.Priority.NORMAL,
        timeout: float | None = None,
    ) -> WebTransportStream:
        """Open a stream in this session, sent at ``priority``; waits while the
        peer's stream limit for the session is used up.
        Next: :meth:`WebTransportStream.send`."""
        glue = self._glue
        driver = glue.conn._driver

        def attempt() -> int | None:
            self._check()
            try:
                return glue.h3.open_stream(self.id, bidirectional, priority)
            except sansquic.SessionBlocked:
                return None  # the peer heard (WT_STREAMS_BLOCKED): wait for its credit

        sid = await driver.until(attempt, glue.key("credit", self.id), driver.deadline(timeout))
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
        session_limits: sansquic.SessionLimits | None = None,
    ) -> None:
        self.conn = conn
        with conn._driver.backend.guard():
            address = conn._core.remote_address or ("", 0)
            self.h3: sansquic.H3Connection = sansquic.H3Connection(
                _Transport(conn),
                client=client,
                authenticator=authenticator,
                address=address,
                session_limits=session_limits,
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

    def read(self, stream_id: int, size: int) -> None:
        """The application read ``size`` bytes of a handed-over stream: the layer
        counts them against the session's data limit and returns their credit."""
        with self.conn._driver.backend.guard():
            self.h3.stream_data_read(stream_id, size)
            self.dispatch()

    def goaway(self) -> None:
        """Send GOAWAY (caller holds the guard): no new sessions; the open ones drain."""
        with contextlib.suppress(sansquic.SansQuicError):  # the connection may be closing
            self.h3.goaway()
        for session in self.sessions.values():
            session.draining = True
            self.conn._driver.backend.wake(self.key("draining", session.id))

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
                for what in ("accept", "datagram", "ready", "credit", "draining"):
                    wake(self.key(what, ev.session_id))
                wake(self.key("sessions", -1))  # a graceful shutdown may be waiting
            elif isinstance(ev, sansquic.WebTransportSessionDraining):
                draining = self.sessions.get(ev.session_id)
                if draining is not None:
                    draining.draining = True
                wake(self.key("draining", ev.session_id))
            elif isinstance(ev, sansquic.WebTransportSessionCredit):
                wake(self.key("credit", ev.session_id))

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


class WebTransportHandler:
    """A connection handler for ``open_server`` (ALPN ``"h3"``, no ``Config.auth``)
    running ``on_session(session)`` for each session its authenticator accepts;
    :meth:`goaway` shuts it down gracefully."""

    def __init__(
        self,
        on_session: SessionHandler,
        authenticator: sansquic.Authenticator | None = None,
        session_limits: sansquic.SessionLimits | None = None,
    ) -> None:
        self._on_session = on_session
        self._authenticator = authenticator
        self._limits = session_limits
        self._glues: weakref.WeakSet[_Glue] = weakref.WeakSet()
        self._goaway = False

    async def __call__(self, conn: Connection) -> None:
        glue = _Glue(
            conn,
            client=False,
            authenticator=self._authenticator,
            on_session=self._on_session,
            session_limits=self._limits,
        )
        with conn._driver.backend.guard():
            self._glues.add(glue)
            if self._goaway:  # a connection that came in after the shutdown began
                glue.goaway()
        async with conn._driver.backend.task_group() as group:
            await glue.run(group)

    async def goaway(self) -> None:
        """Begin a graceful shutdown: GOAWAY on every connection served (and any that
        comes later), so clients open no new sessions here, and every open session
        turns :attr:`~WebTransportSession.draining`. Close the server once they end."""
        self._goaway = True
        for glue in list(self._glues):
            with glue.conn._driver.backend.guard():
                glue.goaway()

    async def shutdown(self, *, timeout: float | None = None) -> bool:
        """:meth:`goaway`, then wait until every session has ended (or ``timeout``);
        True when they all did. Then close the server."""
        await self.goaway()
        for glue in list(self._glues):
            driver = glue.conn._driver
            deadline = driver.deadline(timeout)
            with contextlib.suppress(sansquic.ConnectionClosed):  # that connection is over
                try:
                    await driver.until(
                        lambda g=glue: True if not g.sessions else None,  # type: ignore[misc]
                        glue.key("sessions", -1),
                        deadline,
                    )
                except TimeoutError:
                    return False
        return True


def webtransport_handler(
    on_session: SessionHandler,
    *,
    authenticator: sansquic.Authenticator | None = None,
    session_limits: sansquic.SessionLimits | None = None,
) -> WebTransportHandler:
    """A connection handler for ``open_server`` (ALPN ``"h3"``, no ``Config.auth``) that
    runs ``on_session(session)`` for each WebTransport session ``authenticator`` accepts;
    ``session_limits`` bound what each session may take (see :class:`sansquic.SessionLimits`)."""
    return WebTransportHandler(on_session, authenticator, session_limits)


async def open_session(
    conn: Connection,
    group: AsyncTaskGroup,
    authority: str,
    path: str = "/",
    *,
    headers: Sequence[tuple[str, str]] = (),
    timeout: float | None = 10.0,
    session_limits: sansquic.SessionLimits | None = None,
) -> WebTransportSession:
    """(Client) Open a WebTransport session on ``conn``, its I/O tasks in ``group``.

    Raises ``PermissionError`` with the status when the server refuses it (401/403,
    or 0 when it sent GOAWAY first). ``session_limits`` apply to the connection's
    sessions from its first one on.
    """
    driver = conn._driver
    with driver.backend.guard():
        glue = _CLIENTS.get(conn._core)
        if glue is None:  # one H3 layer per connection: its sessions share it
            glue = _CLIENTS[conn._core] = _Glue(conn, client=True, session_limits=session_limits)
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
