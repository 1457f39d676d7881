"""The messaging layer's drive code, written once: a client ``Messenger`` and a
``MessageServer`` over anything with the small :class:`MessageConnection` shape.

Every decision (ids, acks, dedupe, lanes, backoff, breaker, pool) is in
:mod:`sansquic.messaging`; this only moves bytes between a
:class:`~sansquic.messaging.MessageChannel` and streams. It needs from a connection
only ``open_stream`` / ``accept_stream`` / ``close`` and from a stream
``send`` / ``receive``, so a QUIC connection of any runtime, or a WebSocket
transport with that shape, carries it. This file is the async original;
``_messaging_sync.py`` is generated from it by ``scripts/unasync.py``.
"""

from __future__ import annotations

import contextlib
import logging
import random
import secrets
import time
from collections import deque
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager
from typing import Any, Protocol

import sansquic
from sansquic import messaging

__all__ = ["MessageConnection", "MessageServer", "MessageStream", "Messenger", "Peer", "Spawner"]

#: Receives every delivered message (routed by type) and the peer it came from.
Handler = Callable[["Peer", messaging.Envelope], Awaitable[object]]
#: Opens a new connection to the server.
Dial = Callable[[], Awaitable["MessageConnection"]]
#: The runtime's sleep.
Sleep = Callable[[float], Awaitable[None]]
#: How long a server waits for a new connection's lane streams and hello.
OPEN_TIMEOUT = 10.0
#: The largest opening frame (a hello or a lane name) a server reads before a session.
MAX_OPENING_FRAME = 512
#: How many unrouted messages a peer keeps (the oldest go first, counted in
#: ``Peer.unrouted_dropped``).
MAX_UNROUTED = 1024
_log = logging.getLogger("sansquic")
_STREAM_ERRORS = (sansquic.SansQuicError, TimeoutError, OSError)


class Spawner(Protocol):
    """Starts tasks: ``sansquic demo``'s task groups have this shape on every runtime."""

    async def spawn(self, fn: Callable[..., Any], *args: Any) -> None:
        """Start ``fn(*args)`` as a task, without waiting for it."""
        ...


class MessageStream(Protocol):
    """What messaging needs of a stream."""

    async def send(self, data: bytes) -> None: ...

    async def receive(self, *, timeout: float | None = ...) -> bytes: ...


class MessageConnection(Protocol):
    """What messaging needs of a connection (a runtime's QUIC one, or a WebSocket shim)."""

    async def open_stream(self, *, bidirectional: bool = ..., priority: int = ...) -> Any: ...

    async def accept_stream(self, *, timeout: float | None = ...) -> Any: ...

    async def close(self, code: int = ..., reason: str = ...) -> None: ...


def _remaining(deadline: float, now: float) -> float:
    """Seconds left before ``deadline``; raises ``TimeoutError`` once it has passed."""
    if now >= deadline:
        raise TimeoutError
    return deadline - now


def _subject(conn: MessageConnection) -> str | None:
    """The connection's authenticated subject, or None when the server runs no auth."""
    identity = getattr(conn, "identity", None)
    subject = getattr(identity, "subject", None)
    return subject if isinstance(subject, str) else None


def _guard() -> AbstractContextManager[object]:
    # One event loop: nothing runs between awaits, and the channel never awaits.
    return contextlib.nullcontext()


class _Link:
    """One connection (one generation) moving one channel's bytes."""

    def __init__(
        self,
        owner: Peer,
        conn: MessageConnection,
        generation: int,
        streams: dict[str, MessageStream],
    ) -> None:
        self.owner: Peer = owner
        self.conn: MessageConnection = conn
        self.generation: int = generation
        self.streams: dict[str, MessageStream] = streams
        self.alive: bool = True
        # A one-token pile: pop() is atomic in both twins, so one task flushes at a time.
        self._token = [None]

    async def flush(self) -> None:
        """Write whatever the channel has for this connection; one flusher at a time."""
        channel, guard = self.owner.channel, self.owner.guard
        for _ in range(1_000_000):  # bounded; each pass empties what was there
            try:
                token = self._token.pop()
            except IndexError:
                return  # the task that holds the token sends it
            try:
                while self.alive:
                    with guard:
                        if channel.generation != self.generation:
                            return
                        out = channel.data_to_send(self.owner.now())
                    if not out:
                        break
                    for lane, data in out:
                        await self.streams[lane.name].send(data)
            except _STREAM_ERRORS:
                await self.lost()
                return
            finally:
                self._token.append(token)
            with guard:
                if not (self.alive and channel.generation == self.generation):
                    return
                if not channel.wants_to_send:
                    return

    async def read(self, lane: str, stream: MessageStream, first: bytes = b"") -> None:
        """Feed ``lane``'s bytes to the channel and hand delivered messages to the router."""
        owner = self.owner
        data = first
        try:
            while self.alive:
                if data:
                    with owner.guard:
                        owner.channel.receive(self.generation, lane, data)
                    await owner.deliver(self)
                    await self.flush()  # the acks
                data = await stream.receive()
                if not data:
                    break
        except messaging.MessageFormatError as exc:
            self.alive = False
            with contextlib.suppress(*_STREAM_ERRORS):
                await self.conn.close(messaging.MESSAGING_VIOLATION, str(exc)[:100])
        except _STREAM_ERRORS:
            pass
        await self.lost()

    async def lost(self) -> None:
        """The connection broke: the channel waits for the next one."""
        self.alive = False
        with self.owner.guard:
            if self.owner.channel.generation == self.generation:
                self.owner.channel.detach()
                self.owner.idle_since = self.owner.now()


class Peer:
    """One end of a message session (a client, or a server's view of one client): the
    channel, the router, and :meth:`send` for replies from a handler."""

    def __init__(
        self,
        channel: messaging.MessageChannel,
        router: messaging.Router[Handler],
        now: Callable[[], float],
    ) -> None:
        self.channel: messaging.MessageChannel = channel
        self.router: messaging.Router[Handler] = router
        self.now: Callable[[], float] = now
        self.guard: AbstractContextManager[object] = _guard()
        self.link: _Link | None = None
        #: The authenticated subject the session is bound to (server side; None: no auth).
        self.subject: str | None = None
        #: Delivered messages no handler was routed for, oldest first (at most
        #: :data:`MAX_UNROUTED`: a peer's junk types cannot grow it without bound).
        self.unrouted: deque[messaging.Envelope] = deque(maxlen=MAX_UNROUTED)
        #: Unrouted messages pushed out of the full :attr:`unrouted`.
        self.unrouted_dropped: int = 0
        #: When the session last lost its connection (server side: idle eviction).
        self.idle_since: float | None = now()

    @property
    def connection(self) -> Any:
        """The connection carrying the session now (e.g. for its ``identity``), or None."""
        link = self.link
        return link.conn if link is not None and link.alive else None

    @property
    def session_id(self) -> bytes:
        """The session's id (the client chose it)."""
        return self.channel.session_id

    async def deliver(self, link: _Link | None = None) -> None:
        """Hand every delivered message to its handler (or to :attr:`unrouted`). A handler
        that raises is logged on the ``sansquic`` logger and its connection closed with
        ``CloseCode.INTERNAL_ERROR`` (``link``: the connection the messages came on); the
        session stays for the next one. Transport errors propagate to the reader."""
        while True:
            with self.guard:
                envelope = self.channel.next_message()
            if envelope is None:
                return
            handler = self.router.handler_for(envelope.type)
            if handler is None:
                if len(self.unrouted) == self.unrouted.maxlen:
                    self.unrouted_dropped += 1
                self.unrouted.append(envelope)
                continue
            try:
                await handler(self, envelope)
            except _STREAM_ERRORS:
                raise  # the connection broke under the handler's reply: the reader's loss
            except Exception:
                # A handler's bug (often the peer's payload) ends the connection it came
                # on only, never the task group that serves every other session.
                _log.exception("messaging handler for %r failed", envelope.type)
                if link is not None and link.alive:
                    link.alive = False
                    with contextlib.suppress(*_STREAM_ERRORS):
                        await link.conn.close(sansquic.CloseCode.INTERNAL_ERROR, "handler failed")
                    await link.lost()
                return

    async def send(self, message_type: str, payload: bytes = b"") -> messaging.Envelope:
        """Queue a message to the other end (sent now when connected)."""
        with self.guard:
            envelope = self.channel.send(message_type, payload, self.now())
        link = self.link
        if link is not None and link.alive:
            await link.flush()
        return envelope


class Messenger:
    """A client's message session: survives reconnects without loss or duplicates.

    ``dial`` opens a connection (e.g. ``lambda: runtime.connect(...)`` entered by the
    caller); ``group.spawn`` runs the lane readers. Messages are handed to the ``router``'s
    handlers (unrouted ones collect in :attr:`unrouted`). Next: :meth:`connect`, then
    :meth:`send`; after a loss, :meth:`connect` again (backoff and breaker decide when).
    """

    def __init__(
        self,
        dial: Dial,
        group: Spawner,
        *,
        router: messaging.Router[Handler] | None = None,
        session_id: bytes | None = None,
        lanes: messaging.LaneTable = messaging.DEFAULT_LANES,
        key: tuple[str, int] = ("", 0),
        rng: random.Random | None = None,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        channel = messaging.MessageChannel(session_id or secrets.token_bytes(16), lanes=lanes)
        self._side = Peer(channel, router or messaging.Router(), now)
        self._dial, self._group, self._key = dial, group, key
        #: Reuse per host:port and the breaker; one live connection here.
        self.pool: messaging.Pool[MessageConnection] = messaging.Pool()
        self.backoff: messaging.Backoff = messaging.Backoff(rng or random.Random())

    @property
    def channel(self) -> messaging.MessageChannel:
        """The pure session (queue, window, counters)."""
        return self._side.channel

    @property
    def unrouted(self) -> deque[messaging.Envelope]:
        """Delivered messages no handler was routed for (the newest :data:`MAX_UNROUTED`)."""
        return self._side.unrouted

    @property
    def connected(self) -> bool:
        """True while a connection carries the session."""
        link = self._side.link
        return link is not None and link.alive

    async def connect(self, sleep: Sleep | None = None, attempts: int = 1) -> None:
        """Dial (up to ``attempts`` times, sleeping the backoff between failures) and resend
        everything unacked; raises the last dial error, or ``ConnectionError`` while the
        breaker is open."""
        last: BaseException | None = None
        for _ in range(attempts):
            now = self._side.now()
            choice = self.pool.choose(self._key, now)
            if isinstance(choice, messaging.Reuse):
                if self.connected:
                    return
                # A reader saw the connection die: forget it, and decide again.
                self.pool.lost(self._key, choice.connection)
                choice = self.pool.choose(self._key, now)
            if isinstance(choice, messaging.Wait):
                last = ConnectionError(f"circuit open until {choice.until:.3f}")
            else:
                try:
                    conn = await self._dial()
                except _STREAM_ERRORS as exc:
                    self.pool.failed(self._key, self._side.now())
                    last = exc
                else:
                    await self._attach(conn)
                    self.backoff.reset()
                    return
            if sleep is not None:
                await sleep(self.backoff.next_delay())
        raise last if last is not None else ConnectionError("no attempt made")

    async def _attach(self, conn: MessageConnection) -> None:
        side = self._side
        streams = {}
        for lane in side.channel.lanes.lanes:
            streams[lane.name] = await conn.open_stream(bidirectional=True, priority=lane.priority)
        with side.guard:
            generation = side.channel.attach(now=side.now())
        old, side.link = side.link, _Link(side, conn, generation, streams)
        if old is not None:
            old.alive = False
            self.pool.lost(self._key, old.conn)
        self.pool.connected(self._key, conn, side.now())
        for name, stream in streams.items():
            await self._group.spawn(side.link.read, name, stream)
        await side.link.flush()

    async def send(self, message_type: str, payload: bytes = b"") -> messaging.Envelope:
        """Queue a message (delivered exactly once, even across reconnects) and send it if
        connected; raises :class:`~sansquic.messaging.QueueFull` and friends before queueing."""
        return await self._side.send(message_type, payload)

    async def disconnect(self, code: int = 0, reason: str = "") -> None:
        """Close the connection; unacked messages wait for the next :meth:`connect`."""
        link = self._side.link
        if link is None:
            return
        self.pool.lost(self._key, link.conn)
        await link.lost()
        with contextlib.suppress(*_STREAM_ERRORS):
            await link.conn.close(code, reason)


class MessageServer:
    """Sessions by client session id; pass :meth:`handle` each accepted connection.

    ``group.spawn`` runs lane readers. A reconnecting client's session continues: what it
    missed is resent, what it resends is dropped as a duplicate. Sessions stay until
    :meth:`forget`, bound to the identity of their first connection; ``max_sessions``
    bounds them: when full, sessions detached for ``session_idle_timeout`` seconds (on
    ``now``) are evicted, and a new session is refused only if that frees nothing.
    """

    def __init__(
        self,
        group: Spawner,
        *,
        router: messaging.Router[Handler] | None = None,
        lanes: messaging.LaneTable = messaging.DEFAULT_LANES,
        max_sessions: int = 10_000,
        session_idle_timeout: float = 300.0,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        self._group, self._lanes, self._max = group, lanes, max_sessions
        self._idle_timeout = session_idle_timeout
        self.router: messaging.Router[Handler] = router or messaging.Router()
        self._now = now
        #: Session id -> its side (channel, current link).
        self.sessions: dict[bytes, Peer] = {}

    async def handle(self, conn: MessageConnection) -> None:
        """Serve one connection: read each lane's opening, find the session, run it."""
        opened: list[tuple[str, MessageStream, bytes]] = []
        hello: messaging.Hello | None = None
        # One deadline for the whole opening: a peer trickling bytes cannot hold it open.
        deadline = self._now() + OPEN_TIMEOUT
        try:
            for _ in self._lanes.lanes:
                stream = await conn.accept_stream(timeout=_remaining(deadline, self._now()))
                data = b""
                for _ in range(10_000):  # an opening frame is small: bounded reads
                    first = messaging.first_envelope(data, MAX_OPENING_FRAME)
                    if first is not None:
                        break
                    chunk = await stream.receive(timeout=_remaining(deadline, self._now()))
                    if not chunk:
                        raise messaging.EnvelopeError("a lane stream ended before its opening")
                    data += chunk
                if first is None:
                    raise messaging.EnvelopeError("no opening frame")
                if first.type == "sq.hello":
                    hello = messaging.Hello.decode(first.payload)
                    lane = self._lanes.control.name
                elif first.type == "sq.lane":
                    lane = first.payload.decode(errors="replace")
                else:
                    raise messaging.EnvelopeError(f"a lane opened with {first.type!r}")
                opened.append((lane, stream, data))
            if hello is None:
                raise messaging.EnvelopeError("no hello")
            names = sorted(lane for lane, _, _ in opened)
            if names != sorted(lane.name for lane in self._lanes.lanes):
                raise messaging.EnvelopeError(f"the client opened lanes {names}, not this table's")
            side = self._session(hello.session_id, _subject(conn))
            with side.guard:
                generation = side.channel.attach(hello.generation, self._now())
        except messaging.MessageFormatError as exc:
            with contextlib.suppress(*_STREAM_ERRORS):
                await conn.close(messaging.MESSAGING_VIOLATION, str(exc)[:100])
            return
        except TimeoutError:
            with contextlib.suppress(*_STREAM_ERRORS):
                await conn.close(messaging.MESSAGING_VIOLATION, "no opening in time")
            return
        except _STREAM_ERRORS:
            return
        side.idle_since = None
        old, side.link = side.link, _Link(side, conn, generation, {n: s for n, s, _ in opened})
        if old is not None:  # the client moved to this connection: the old one is over
            old.alive = False
            with contextlib.suppress(*_STREAM_ERRORS):
                await old.conn.close(0, "superseded")
        link = side.link
        for lane, stream, data in opened[:-1]:
            await self._group.spawn(link.read, lane, stream, data)
        lane, stream, data = opened[-1]
        await link.read(lane, stream, data)

    def _session(self, session_id: bytes, subject: str | None) -> Peer:
        side = self.sessions.get(session_id)
        if side is None:
            if len(self.sessions) >= self._max:
                self._evict_idle()
            if len(self.sessions) >= self._max:
                raise messaging.EnvelopeError("too many sessions")
            channel = messaging.MessageChannel(session_id, lanes=self._lanes)
            side = self.sessions[session_id] = Peer(channel, self.router, self._now)
            side.subject = subject
        elif side.subject != subject:
            # Knowing a session id is not owning it: only its first identity continues it.
            raise messaging.EnvelopeError("the session belongs to another identity")
        return side

    def _evict_idle(self) -> None:
        # Sessions detached for longer than the idle timeout make room: strangers cannot
        # fill max_sessions for good. Their unacked messages are dropped with them.
        now = self._now()
        for session_id, side in list(self.sessions.items()):
            idle = side.idle_since
            if side.connection is None and idle is not None and now - idle >= self._idle_timeout:
                del self.sessions[session_id]

    async def send(
        self, session_id: bytes, message_type: str, payload: bytes = b""
    ) -> messaging.Envelope:
        """Queue a message to one client session (sent now if it is connected)."""
        side = self.sessions.get(session_id)
        if side is None:
            raise sansquic.LocalProtocolError(f"no session {session_id!r}")
        return await side.send(message_type, payload)

    async def broadcast(
        self, message_type: str, payload: bytes = b""
    ) -> dict[bytes, sansquic.LocalProtocolError]:
        """Queue a message to every session; returns the sessions it could not be queued
        for (e.g. :class:`~sansquic.messaging.QueueFull`) and why. Empty: all got it."""
        failed: dict[bytes, sansquic.LocalProtocolError] = {}
        for session_id in list(self.sessions):
            try:
                await self.send(session_id, message_type, payload)
            except sansquic.LocalProtocolError as exc:
                failed[session_id] = exc  # one full queue must not starve the rest
        return failed

    def unrouted(self, session_id: bytes) -> deque[messaging.Envelope]:
        """A session's delivered messages that no handler was routed for."""
        return self.sessions[session_id].unrouted

    def forget(self, session_id: bytes) -> None:
        """Drop a finished session's state."""
        self.sessions.pop(session_id, None)
