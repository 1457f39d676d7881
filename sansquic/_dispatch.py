"""``Dispatcher``: what every runtime needs between an Endpoint and its waiters.

A runtime adapter moves datagrams, sleeps until the timer and wakes waiters;
everything it would otherwise decide lives here, written once: which events
mean a stream has data or ended, which connections are ready for the
application, which waiters each event should wake. It is pure, like the rest
of the core.
"""

from __future__ import annotations

import weakref
from collections.abc import Hashable, KeysView

from ._connection import Connection, ConnectionState
from ._endpoint import Endpoint
from ._errors import (
    SansQuicError,
    StreamResetError,
    StreamStoppedError,
    closed_error,
)
from ._events import (
    Authenticated,
    AuthRejected,
    ConnectionTerminated,
    DatagramReceived,
    HandshakeCompleted,
    StreamEnded,
    StreamOpened,
    StreamReadable,
    StreamReset,
    StreamStopped,
    StreamWritable,
)
from ._fifo import Fifo
from ._state import RecvState

__all__ = ["Dispatcher", "Wake"]

#: A waiter's key: ``("ready", conn)``, ``("accept", conn)``, ``("datagram", conn)``,
#: ``("read", conn, stream_id)``, ``("write", conn, stream_id)``, ``("closed", conn)``
#: or ``("incoming",)``.
Wake = tuple[Hashable, ...]


class _Link:
    """Per-connection state the runtime's objects read."""

    __slots__ = (
        "claimed",
        "datagrams",
        "failed",
        "incoming",
        "ready",
        "resets",
        "stops",
        "terminated",
    )

    def __init__(self) -> None:
        # Whether the application holds the connection (watch() or next_connection()):
        # only then does the link outlive the connection, until forget().
        self.claimed = False
        self.ready = False  # handshake done (and, with auth, accepted)
        self.failed: SansQuicError | None = None  # why it can never become ready
        self.incoming: Fifo[int] = Fifo()  # streams the peer opened, not yet accepted
        self.datagrams: Fifo[bytes] = Fifo()
        # The peer's reset / STOP_SENDING codes, kept for streams the core may already
        # have closed, until the application has seen them (see Dispatcher._prune).
        self.resets: dict[int, int] = {}
        self.stops: dict[int, int] = {}
        self.terminated = False


class Dispatcher:
    """Turns an :class:`Endpoint`'s events into state a runtime can wait on.

    After feeding the endpoint (datagrams, timers, commands), call
    :meth:`process` and wake every waiter whose key it returns. Waiters then
    call the query methods below, which say whether to wait again.

    What it keeps for a connection the application never took (one that
    failed TLS or auth, or closed before it was ready) is dropped when the
    connection ends; for one the application holds, at :meth:`forget`.
    """

    def __init__(self, endpoint: Endpoint, *, datagram_queue: int = 1024) -> None:
        self.endpoint = endpoint
        self._links: dict[Connection, _Link] = {}
        # Server connections ready for the app, oldest first (a dict: an ordered set).
        self._accepted: dict[Connection, None] = {}
        self._datagram_queue = datagram_queue
        self._authenticates = endpoint._config.auth is not None
        self._forgotten: weakref.WeakSet[Connection] = weakref.WeakSet()

    def watch(self, conn: Connection) -> None:
        """Track a connection this side opened (server connections are tracked on their own)."""
        self._links.setdefault(conn, _Link()).claimed = True

    @property
    def tracked(self) -> int:
        """How many connections the dispatcher keeps state for (zero once all are over)."""
        return len(self._links)

    def process(self) -> KeysView[Wake]:
        """Apply every pending event; return the keys of the waiters to wake, in the
        order of the events that named them (a set would wake the writers of a full
        connection in hash order, the same streams first every time: they starved
        the rest)."""
        wake: dict[Wake, None] = {}
        endpoint = self.endpoint
        while (item := endpoint.next_event()) is not None:
            conn, event = item
            link = self._links.get(conn)
            if link is None:
                if conn in self._forgotten:
                    continue  # the application is done with it
                link = self._links[conn] = _Link()
            self._apply(conn, link, event, wake)
        return wake.keys()

    def _apply(self, conn: Connection, link: _Link, event: object, wake: dict[Wake, None]) -> None:
        if isinstance(event, StreamReadable | StreamEnded):
            wake[("read", conn, event.stream_id)] = None
        elif isinstance(event, StreamWritable):
            wake[("write", conn, event.stream_id)] = None
        elif isinstance(event, StreamOpened):
            link.incoming.append(event.stream_id)
            wake[("accept", conn)] = None
            self._prune(conn, link)
            if (
                not link.ready
                and conn.role.value == "server"
                and not self._authenticates
                and conn.early_data_accepted
            ):
                # 0-RTT: the handler may answer before the handshake ends (0.5-RTT).
                self._make_ready(conn, link, wake)
        elif isinstance(event, DatagramReceived):
            if len(link.datagrams) >= self._datagram_queue:
                link.datagrams.popleft()  # unreliable by nature: the oldest goes
            link.datagrams.append(event.data)
            wake[("datagram", conn)] = None
        elif isinstance(event, StreamReset):
            link.resets[event.stream_id] = event.error_code
            wake[("read", conn, event.stream_id)] = None
            self._prune(conn, link)
        elif isinstance(event, StreamStopped):
            link.stops[event.stream_id] = event.error_code
            wake[("write", conn, event.stream_id)] = None
            self._prune(conn, link)
        elif isinstance(event, HandshakeCompleted | Authenticated):
            # Without auth the handshake makes a connection ready; with it, acceptance does.
            needs_auth = (
                conn.role.value == "server" and self._authenticates
            ) or conn.config.auth_request is not None
            if (isinstance(event, Authenticated) or not needs_auth) and not link.ready:
                self._make_ready(conn, link, wake)
        elif isinstance(event, AuthRejected):
            link.failed = closed_error(event.closed_by, event.code, event.reason, application=True)
            wake[("ready", conn)] = None
        elif isinstance(event, ConnectionTerminated):
            # Every waiter on this connection must look again: it will find it closed.
            link.terminated = True
            wake.update(dict.fromkeys(self._connection_keys(conn)))
            if not link.claimed:
                # Nobody will ever ask about it: it ends here, whoever ended it.
                self._accepted.pop(conn, None)
                self.forget(conn)

    def _make_ready(self, conn: Connection, link: _Link, wake: dict[Wake, None]) -> None:
        link.ready = True
        wake[("ready", conn)] = None
        if conn.role.value == "server":
            self._accepted[conn] = None
            wake[("incoming",)] = None

    # -- queries ---------------------------------------------------------------------

    def ready(self, conn: Connection) -> bool:
        """True once the connection may be used; raises if it never will be."""
        link = self._links.get(conn)
        if link is not None and link.failed is not None:
            raise link.failed
        if link is not None and link.ready:
            return True
        self._raise_if_closed(conn)
        return False

    def next_connection(self) -> Connection | None:
        """A server connection ready for the application (handshake done, auth passed)."""
        while self._accepted:
            conn = next(iter(self._accepted))
            del self._accepted[conn]
            link = self._links.get(conn)
            if link is not None and conn.state is not ConnectionState.CLOSED:
                link.claimed = True
                return conn
        return None

    def next_stream(self, conn: Connection) -> int | None:
        """A stream the peer opened, or None to wait ("accept"); raises once closed."""
        link = self._links.get(conn)
        if link is not None and link.incoming:
            return link.incoming.popleft()
        self._raise_if_closed(conn)
        return None

    def next_datagram(self, conn: Connection) -> bytes | None:
        """A received datagram, or None to wait ("datagram"); raises once closed."""
        link = self._links.get(conn)
        if link is not None and link.datagrams:
            return link.datagrams.popleft()
        self._raise_if_closed(conn)
        return None

    def receive(self, conn: Connection, stream_id: int, max_bytes: int = -1) -> bytes | None:
        """Stream data; ``b""`` at the end of the stream; None to wait ("read").

        ``max_bytes`` is positive, or negative for everything buffered; zero
        raises ``ValueError``, since ``b""`` can only mean the end of the stream.
        Raises :class:`StreamResetError` when the peer reset the stream, and
        the connection's error once it closed with nothing left to read.
        """
        if max_bytes == 0:
            raise ValueError("max_bytes must be positive, or negative for all that arrived")
        data = conn.read(stream_id, max_bytes)
        if data:
            return data
        link = self._links.get(conn)
        record = conn._streams.records.get(stream_id)
        if link is not None and stream_id in link.resets:
            # Sticky while the stream lives; once the core closed it, said once is enough.
            code = link.resets[stream_id] if record is not None else link.resets.pop(stream_id)
            raise StreamResetError(stream_id, code)
        if record is None or record.recv in (RecvState.FINISHED, RecvState.STOPPED):
            return b""  # read to its end (or closed, or stopped by this side)
        self._raise_if_closed(conn)
        return None

    def can_send(self, conn: Connection, stream_id: int) -> bool:
        """Whether to send now rather than wait ("write"); raises if the peer stopped
        the stream or the connection closed."""
        link = self._links.get(conn)
        if link is not None and stream_id in link.stops:
            live = stream_id in conn._streams.records
            code = link.stops[stream_id] if live else link.stops.pop(stream_id)
            raise StreamStoppedError(stream_id, code)
        self._raise_if_closed(conn)
        return conn.writable(stream_id)

    def send_piece(self, conn: Connection, stream_id: int, data: memoryview) -> int | None:
        """Queue as much of ``data`` as the stream takes now; None to wait ("write").

        The piece never passes the high watermark's worth nor either hard buffer
        limit, so a large send is split, and waits, instead of raising
        :class:`~sansquic.SendBufferFull`. ``b""`` queues nothing and returns 0.
        Raises like :meth:`can_send`.
        """
        if not self.can_send(conn, stream_id):
            return None  # asking subscribed the stream to StreamWritable
        config = conn.config
        piece = min(
            len(data),
            config.send_high_watermark,
            config.send_buffer_limit - conn.buffered(stream_id),
            config.connection_send_buffer_limit - conn._send_buffered,
        )
        if piece <= 0 and data:
            conn.writable(stream_id)  # full to the hard limit: wait for StreamWritable
            return None
        conn.send(stream_id, bytes(data[:piece]))
        return piece

    def release(self, conn: Connection) -> None:
        """The application is done with a connection that may still be open (a
        handler returned): keep its state until it ends, then drop it."""
        link = self._links.get(conn)
        if link is None:
            return
        if link.terminated:
            self.forget(conn)
        else:
            link.claimed = False

    @staticmethod
    def _prune(conn: Connection, link: _Link) -> None:
        """Bound what is kept per stream by the streams the core still has.

        A peer that opens and resets streams the application never looks at
        would otherwise grow these without end. Once they outnumber the live
        streams, entries for streams the core has closed go: a stream reset
        before it was accepted is never offered, and an unseen reset of a
        closed stream reads as its end.
        """
        records = conn._streams.records
        if len(link.incoming) + len(link.resets) + len(link.stops) <= 2 * len(records) + 64:
            return
        link.incoming = Fifo(s for s in link.incoming if s in records)
        link.resets = {s: c for s, c in link.resets.items() if s in records}
        link.stops = {s: c for s, c in link.stops.items() if s in records}

    def forget(self, conn: Connection) -> set[Wake]:
        """The application is done with a connection: drop what was kept for it.

        Returns the keys of every waiter on it: wake them, since a forgotten
        connection hears no more events (they will find it closed).
        """
        self._links.pop(conn, None)
        self._forgotten.add(conn)
        return self._connection_keys(conn)

    def forget_all(self) -> set[Wake]:
        """The endpoint stopped: drop what was kept for every connection, including
        those still closing (they hear no more events), and return their waiters' keys."""
        keys: set[Wake] = set()
        for conn in list(self._links):
            keys |= self.forget(conn)
        self._accepted.clear()
        return keys

    @staticmethod
    def _connection_keys(conn: Connection) -> set[Wake]:
        keys: set[Wake] = {("ready", conn), ("accept", conn), ("datagram", conn), ("closed", conn)}
        for stream_id in conn._streams.records:
            keys.update([("read", conn, stream_id), ("write", conn, stream_id)])
        return keys

    @staticmethod
    def _raise_if_closed(conn: Connection) -> None:
        if conn.state in (ConnectionState.CLOSING, ConnectionState.CLOSED):
            raise conn._closed()
