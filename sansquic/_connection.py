"""``Connection``: one QUIC connection as a pure state machine.

Feed it datagrams and timer expiries, take datagrams and events out, and give
it commands. It never reads a clock or touches a socket: every method whose
result depends on time takes ``now``, seconds on a monotonic clock the caller
owns.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import math
from collections.abc import Callable
from typing import Any, Protocol

from ._aioquic import initial_destination_cid
from ._auth import AuthRejection, Identity
from ._authflow import AUTH_STREAM, AuthFlow, new_flow
from ._codes import CloseCode, ClosedBy
from ._config import Config
from ._engine import (
    Address,
    CidIssued,
    CidRetired,
    DatagramIn,
    EarlyDataAccepted,
    Engine,
    HandshakeDone,
    PathProbeAcked,
    StopSendingByPeer,
    StreamData,
    StreamResetByPeer,
    Terminated,
    new_engine,
)
from ._errors import (
    ConnectionClosed,
    LocalProtocolError,
    SendBufferFull,
    StreamStoppedError,
    closed_error,
)
from ._events import (
    ConnectionTerminated,
    DatagramReceived,
    Event,
    HandshakeCompleted,
    StreamEnded,
    StreamOpened,
    StreamReadable,
    StreamReset,
    StreamsAvailable,
    StreamStopped,
    StreamWritable,
)
from ._fifo import Fifo
from ._inflight import InflightLimit
from ._pmtu import BASE as PMTU_BASE
from ._pmtu import PathMtuSearch
from ._scheduler import Priority, Scheduler
from ._state import (
    RECV_TRANSITIONS,
    SEND_TRANSITIONS,
    RecvInput,
    RecvState,
    SendInput,
    SendState,
)
from ._stats import ConnectionStats
from ._streams import NO_BYTES, StreamRecord, StreamTable, fillable, is_bidirectional
from .ratelimit import TokenBucket

__all__ = ["Connection", "ConnectionState", "Role"]


class _Hooks(Protocol):
    """What an owning Endpoint hears from its connections."""

    def touched(self, connection: Connection) -> None: ...

    def cid_changed(self, connection: Connection, cid: bytes, issued: bool) -> None: ...

    def auth_failed(self, connection: Connection, now: float) -> None: ...


_MAX_CODE = 2**62 - 1
# A datagram's cost against the send budget beyond its payload: frame and packet overhead.
_DATAGRAM_OVERHEAD = 32
# Packets above 1200 bytes lost in a row, none acknowledged, after which a raised
# packet size is taken for a black hole (RFC 8899 section 4.3).
_BLACK_HOLE_LOSSES = 3
# Bytes sent after which path MTU discovery starts: a bulk sender gets there in a
# few packets, an idle or chatty connection never pays for probes.
_PMTU_START_BYTES = 32 * 1024
# Seconds the in-flight limit stays on after streams of two priorities last competed.
_COMPETITION_MEMORY = 10.0
_logger = logging.getLogger("sansquic")


class Role(enum.Enum):
    """Which end of the connection this side is."""

    CLIENT = "client"
    SERVER = "server"


class ConnectionState(enum.Enum):
    """Where a connection is in its life."""

    #: A client before ``connect()``; a server before the client's first Initial.
    IDLE = "idle"
    #: The TLS handshake is under way.
    HANDSHAKING = "handshaking"
    #: The handshake completed.
    CONNECTED = "connected"
    #: ``close()`` was called or the peer closed; waiting out the closing period.
    CLOSING = "closing"
    #: Over: ``ConnectionTerminated`` has been queued.
    CLOSED = "closed"


def _check_code(code: Any, what: str) -> int:
    if not isinstance(code, int) or isinstance(code, bool) or not 0 <= code <= _MAX_CODE:
        raise LocalProtocolError(f"{what} must be an int in [0, 2**62 - 1], not {code!r}")
    return code


def _check_priority(priority: Any) -> None:
    if not isinstance(priority, int) or isinstance(priority, bool) or not 0 <= priority <= 255:
        raise LocalProtocolError(f"priority must be an int in [0, 255], not {priority!r}")


def _as_bytes(data: Any) -> bytes:
    if isinstance(data, bytes):
        return data
    if isinstance(data, (bytearray, memoryview)):
        return bytes(data)
    raise TypeError(f"data must be bytes-like, not {type(data).__name__}")


class _Counters:
    """Plain counters behind ``stats()``; slotted because the hot path bumps them."""

    __slots__ = (
        "datagrams_dropped",
        "datagrams_received",
        "datagrams_send_dropped",
        "datagrams_sent",
        "stream_bytes_received",
        "stream_bytes_sent",
        "streams_opened_local",
        "streams_opened_remote",
        "udp_bytes_received",
        "udp_bytes_sent",
        "udp_datagrams_dropped",
        "udp_datagrams_received",
        "udp_datagrams_sent",
        "unreachable_reports",
    )

    def __init__(self) -> None:
        self.datagrams_dropped = self.datagrams_received = self.datagrams_sent = 0
        self.datagrams_send_dropped = self.unreachable_reports = 0
        self.stream_bytes_received = self.stream_bytes_sent = 0
        self.streams_opened_local = self.streams_opened_remote = 0
        self.udp_bytes_received = self.udp_bytes_sent = 0
        self.udp_datagrams_dropped = self.udp_datagrams_received = self.udp_datagrams_sent = 0


class Connection:
    """One QUIC connection, client or server, driven by the caller.

    The loop every driver runs::

        conn.receive_datagram(data, addr, now)      # for each datagram that arrives
        conn.handle_timer(now)                      # when now >= conn.timer()
        for data, addr in conn.datagrams_to_send(now):
            sock.sendto(data, addr)                 # after every input or command
        while (event := conn.next_event()) is not None:
            ...                                     # react, maybe with commands

    A client is made with ``Connection(config, role=Role.CLIENT,
    server_name=...)`` and started with :meth:`connect`. A server connection
    is made with ``role=Role.SERVER`` and comes alive on the first client
    Initial passed to :meth:`receive_datagram`.

    Misuse raises :class:`~sansquic.LocalProtocolError` (or ``TypeError`` for
    a wrong type) before anything changes; commands on a closed connection
    raise :class:`~sansquic.ConnectionClosed`.
    """

    # Slotted: an instance dict of this many attributes is over 2 KiB, per connection.
    __slots__ = (
        "__weakref__",
        "_alpn",
        "_auth",
        "_close_pending",
        "_closed_error",
        "_competing_until",
        "_config",
        "_counters",
        "_datagram_bucket",
        "_datagram_excess",
        "_datagram_excess_since",
        "_early",
        "_early_data_accepted",
        "_engine",
        "_events",
        "_hooks",
        "_inflight",
        "_inflight_cap",
        "_key_check_in",
        "_last_address",
        "_last_sent",
        "_outgoing_datagrams",
        "_passed_over",
        "_peer_stream_limits",
        "_pmtu",
        "_pmtu_path",
        "_resumed",
        "_role",
        "_scheduler",
        "_send_buffered",
        "_state",
        "_streams",
        "_waiting_writers",
    )

    _engine: Engine | None  # None only for a server before the client's first Initial

    def __init__(
        self, config: Config, *, role: Role = Role.CLIENT, server_name: str | None = None
    ) -> None:
        self._setup(config, role, server_name)
        if role is Role.CLIENT:
            self._engine = new_engine(config, is_client=True, server_name=server_name)

    def _setup(self, config: Config, role: Role, server_name: str | None) -> None:
        """Check the arguments and set up everything but the engine."""
        if not isinstance(config, Config):
            raise TypeError(f"config must be a sansquic.Config, not {type(config).__name__}")
        if not isinstance(role, Role):
            raise TypeError(f"role must be a sansquic.Role, not {role!r}")
        if role is Role.SERVER and server_name is not None:
            raise LocalProtocolError("server_name is for clients; a server has no use for it")
        if role is Role.CLIENT:
            if config.verify_peer and not server_name:
                raise LocalProtocolError(
                    "a client that verifies the server needs server_name to check it against"
                )
        elif config.certificate is None:
            raise LocalProtocolError("a server needs certificate and private_key, or dev_mode=True")
        self._config = config
        self._role = role
        self._state = ConnectionState.IDLE
        self._engine = None
        self._pmtu: PathMtuSearch | None = None  # set once the handshake is done
        self._pmtu_path: Address | None = None  # the path the search's result is for
        self._inflight = InflightLimit()
        self._inflight_cap: int | None = None
        self._competing_until = -math.inf
        self._hooks: _Hooks | None = None
        limits = config.rate_limits
        self._datagram_bucket: TokenBucket | None = None
        if limits.peer_datagrams_per_second is not None:
            rate = limits.peer_datagrams_per_second
            self._datagram_bucket = TokenBucket(rate, max(1.0, rate))
        self._datagram_excess = 0
        self._datagram_excess_since = 0.0
        self._streams = StreamTable(is_client=role is Role.CLIENT)
        self._scheduler = Scheduler(config.scheduler_quantum)
        self._send_buffered = 0  # bytes queued in the core over all streams
        # Streams told they are not writable (a dict as an ordered set: an empty set
        # costs 216 bytes, an empty dict 64).
        self._waiting_writers: dict[int, None] = {}
        # Streams told they are writable that have queued nothing since: first in line
        # at the next wake, or the writers that refill first would win every round.
        self._passed_over: dict[int, None] = {}
        self._outgoing_datagrams: Fifo[bytes] = Fifo()
        self._peer_stream_limits: tuple[int, int] | None = None  # known once connected
        self._events: Fifo[Event] = Fifo()
        self._closed_error: ConnectionClosed | None = None
        self._alpn: str | None = None
        self._resumed = False
        self._early_data_accepted: bool | None = None
        self._early: dict[int, int] = {}  # stream id -> bytes that arrived in 0-RTT
        self._counters = _Counters()
        self._close_pending: tuple[int, str] | None = None  # closes after the next flush
        self._last_address: Address | None = None
        self._last_sent = 0.0  # when datagrams last went out (keep-alive counts from it)
        # Datagrams to send before the key budget is worth a look again. A datagram may
        # carry more than one packet (around the handshake), so the countdown runs at
        # half the distance: it reaches zero before the budget can.
        self._key_check_in = 0
        self._auth = new_flow(self, server=role is Role.SERVER)

    @classmethod
    def _for_endpoint(
        cls,
        config: Config,
        hooks: _Hooks,
        reset_token: Callable[[bytes], bytes],
        now: float,
        *,
        server_name: str | None = None,
        original_destination_cid: bytes | None = None,
        retry_source_cid: bytes | None = None,
    ) -> Connection:
        """A connection owned by an Endpoint: a client (no ``original_destination_cid``)
        or a server accepting a client Initial."""
        server = original_destination_cid is not None
        self = cls.__new__(cls)
        self._setup(config, Role.SERVER if server else Role.CLIENT, server_name)
        self._hooks = hooks
        self._engine = new_engine(
            config,
            is_client=not server,
            server_name=server_name,
            original_destination_cid=original_destination_cid,
            retry_source_cid=retry_source_cid,
            reset_token=reset_token,
            now=now,
        )
        if server:
            self._state = ConnectionState.HANDSHAKING
        return self

    # -- properties -------------------------------------------------------------

    @property
    def config(self) -> Config:
        """The configuration this connection was made with."""
        return self._config

    @property
    def role(self) -> Role:
        """Client or server."""
        return self._role

    @property
    def state(self) -> ConnectionState:
        """Where the connection is in its life."""
        return self._state

    @property
    def alpn(self) -> str | None:
        """The negotiated ALPN protocol, once the handshake completed."""
        return self._alpn

    @property
    def remote_address(self) -> Address | None:
        """The peer's address on the path in use; ``None`` before any datagram.

        When the client moves (migration, NAT rebinding) a server follows once
        it validated the new address: until then this stays the old one.
        """
        if self._engine is None:
            return None
        return self._engine.validated_peer_address()

    @property
    def identity(self) -> Identity | None:
        """Who the auth handshake accepted (both sides), or ``None`` until then."""
        return None if self._auth is None else self._auth.identity

    @property
    def max_datagram_size(self) -> int | None:
        """The largest datagram :meth:`send_datagram` accepts now.

        ``None`` until the handshake completes, or when either side has
        datagrams turned off.
        """
        if self._engine is None or self._state is not ConnectionState.CONNECTED:
            return None
        if not self._config.datagrams:
            return None
        return self._engine.max_datagram_payload()

    @property
    def resumed(self) -> bool:
        """True once a handshake that resumed a session (a ticket) completed."""
        return self._resumed

    @property
    def early_data_accepted(self) -> bool | None:
        """Whether the server took the client's 0-RTT data; ``None`` until known: the
        handshake's end (False when none was sent), or a server's taking 0-RTT."""
        return self._early_data_accepted

    @property
    def sending_early_data(self) -> bool:
        """(Clients) True while stream data leaves in 0-RTT, before the handshake
        completes: resuming with ``Config.early_data`` on a ticket that allows it."""
        engine = self._engine
        return (
            self._role is Role.CLIENT
            and self._state is ConnectionState.HANDSHAKING
            and engine is not None
            and engine.early_data_sendable()
        )

    def early_bytes(self, stream_id: int) -> int:
        """(Servers) How many of the stream's first bytes arrived before the handshake
        completed, in 0-RTT. An attacker can replay those: act on them only if doing
        it twice is harmless (docs/resumption.md)."""
        return self._early.get(stream_id, 0)

    # -- inputs -----------------------------------------------------------------

    def connect(self, address: Address, now: float) -> None:
        """Start the handshake with the server at ``address`` (clients, once).

        Next: call :meth:`datagrams_to_send` and send what it returns, then
        wait for datagrams or :meth:`timer`.
        """
        if self._role is not Role.CLIENT:
            raise LocalProtocolError("connect() is for clients; a server waits for an Initial")
        if self._closed_error is not None:
            raise self._closed()
        if self._state is not ConnectionState.IDLE:
            raise LocalProtocolError(f"connect() was already called (state {self._state.value})")
        assert self._engine is not None  # a client always has its engine
        self._engine.connect(address, now)
        self._state = ConnectionState.HANDSHAKING
        if self._auth is not None and self._config.auth_request is not None:
            self._auth.start_client(self._config.auth_request)

    def receive_datagram(self, data: bytes, address: Address, now: float) -> None:
        """Feed one UDP payload that arrived from ``address``.

        Malformed or unauthenticated datagrams are dropped, as QUIC requires;
        a peer that breaks the protocol gets the connection closed with a
        transport error, reported by ``ConnectionTerminated``. Next: call
        :meth:`datagrams_to_send`, then drain :meth:`next_event`.
        """
        if self._take_datagram(data, address, now):
            self._pump(now)

    def _take_datagram(self, data: bytes, address: Address, now: float) -> bool:
        """:meth:`receive_datagram` short of bringing the core up to date with the
        engine (:meth:`_catch_up` does that); whether the engine took the datagram.
        An endpoint feeding a burst catches up once, after its last datagram."""
        data = _as_bytes(data)
        if not data:
            return False  # an empty UDP payload carries nothing, not even a header
        engine = self._engine
        if engine is not None and self._state is ConnectionState.IDLE:
            raise LocalProtocolError("call connect() before feeding datagrams to a client")
        counters = self._counters
        counters.udp_datagrams_received += 1
        counters.udp_bytes_received += len(data)
        if self._state is ConnectionState.CLOSED:
            # Over: nothing it hears may raise an event after ConnectionTerminated
            # (a burst can still hold datagrams for a connection that just ended).
            return False
        if engine is None:
            if self._state is not ConnectionState.IDLE:
                return False  # a server closed before its first Initial
            odcid = initial_destination_cid(data)
            if odcid is None:
                counters.udp_datagrams_dropped += 1
                return False
            engine = self._engine = new_engine(
                self._config, is_client=False, original_destination_cid=odcid
            )
            self._state = ConnectionState.HANDSHAKING
        short_header = not data[0] & 0x80
        if (
            short_header
            and self._state is not ConnectionState.CLOSED
            and engine.is_stateless_reset(data)
        ):
            self._pump(now)  # what earlier datagrams of a burst brought comes first
            self._terminate(Terminated(0, "stateless reset", ClosedBy.STATELESS_RESET, False))
            return False
        self._last_address = address
        engine.receive_datagram(data, address, now)
        return True

    def _catch_up(self, now: float) -> None:
        """Bring the core up to date with the engine after :meth:`_take_datagram`."""
        if self._engine is not None:
            self._pump(now)

    def peer_unreachable(self, address: Address, now: float) -> None:
        """The runtime's socket reported ``address`` unreachable (an ICMP port or host
        unreachable, where the OS tells).

        A client whose handshake has heard nothing from the server yet ends at once
        when ``address`` is the server's (no CONNECTION_CLOSE: nothing is there to
        hear it) with :class:`~sansquic.PeerUnreachableError`, rather than
        retransmitting until a timeout. Anything else is only counted
        (``stats().unreachable_reports``): ICMP carries no proof and can be forged
        by anyone who knows an address, so it never ends a connection the peer has
        answered on, nor a server's handshake (a server's clients are known to
        whoever watches its port). Next: :meth:`next_event`.
        """
        engine = self._engine
        if engine is None or self._state is ConnectionState.CLOSED:
            return
        if (
            self._state is not ConnectionState.HANDSHAKING
            or self._role is not Role.CLIENT
            or self._last_address is not None  # the server has answered: it is there
        ):
            self._counters.unreachable_reports += 1
            return
        if engine.peer_address() == address:
            reason = f"the network reported {address[0]}:{address[1]} unreachable"
            self._terminate(Terminated(0, reason, ClosedBy.UNREACHABLE, False))

    def handle_timer(self, now: float) -> None:
        """Run whatever is due at ``now`` (retransmission, idle timeout, ...).

        Call it once ``now >= timer()``; calling early is harmless. Next:
        :meth:`datagrams_to_send`, then :meth:`next_event`.
        """
        if self._engine is None or self._state in (ConnectionState.IDLE, ConnectionState.CLOSED):
            return
        # The engine checks each of its deadlines itself, so an early call does nothing.
        self._engine.handle_timer(now)
        keep_alive = self._keep_alive_at()
        if keep_alive is not None and now >= keep_alive:
            self._engine.send_ping()
            self._last_sent = now  # one PING per quiet period, even if it cannot leave yet
        if self._pmtu is not None:
            self._pmtu.on_timer(now, self._engine.packets_acked())
        self._pump(now)
        if self._auth is not None:
            self._auth.handle_timer(now)

    # -- outputs ----------------------------------------------------------------

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        """Return the datagrams to send now, as ``(payload, address)`` pairs.

        Call after every input and command. Next: sleep until :meth:`timer`
        or the next datagram, whichever comes first.
        """
        if self._engine is None or self._state in (ConnectionState.IDLE, ConnectionState.CLOSED):
            return []
        if self._state is ConnectionState.CONNECTED:
            self._limit_inflight(self._engine, now)
        if self._scheduler or self._outgoing_datagrams:
            self._schedule()
        if not self._scheduler:
            self._inflight.note_limited()  # out of data: the path is not what holds it back
        out = self._engine.datagrams_to_send(now)
        if self._pmtu is not None and self._state is ConnectionState.CONNECTED:
            out += self._probe_path(self._engine, self._pmtu, now)
        if self._state is ConnectionState.CONNECTED and self._config.key_update_packets:
            self._key_check_in -= len(out)
            if self._key_check_in <= 0:
                self._update_keys_on_budget(self._engine)
        if self._close_pending is not None:
            # The answer went out in `out`; now the CONNECTION_CLOSE follows it.
            code, reason = self._close_pending
            self._close_pending = None
            self._close_locally(code, reason)
            out += self._engine.datagrams_to_send(now)
        counters = self._counters
        if out:
            self._last_sent = now
        counters.udp_datagrams_sent += len(out)
        counters.udp_bytes_sent += sum(len(data) for data, _ in out)
        self._pump(now)
        return out

    def _update_keys_on_budget(self, engine: Engine) -> None:
        """Update the keys once they protected ``Config.key_update_packets`` packets
        (the update waits while the last one is unconfirmed)."""
        keys = engine.key_state()
        budget = self._config.key_update_packets
        assert budget is not None
        self._key_check_in = (budget - keys.packets) // 2  # <= 0: look on the next send
        if keys.packets >= budget and keys.settled:
            with contextlib.suppress(LocalProtocolError):  # the engine wants to wait: later
                engine.update_keys()

    def _limit_inflight(self, engine: Engine, now: float) -> None:
        """Refresh the in-flight limit the scheduler hands data under (``_inflight.py``).

        It applies while priorities compete, and for ``_COMPETITION_MEMORY`` seconds
        after: it costs a CPU-bound sender throughput, which only buys something
        when a higher priority may need to overtake.
        """
        srtt, rtt_min, _, in_flight = engine.path_stats()
        limit = self._inflight
        limit.update(now, self._counters.udp_bytes_sent - in_flight, rtt_min, srtt)
        if self._scheduler.competing:
            self._competing_until = now + _COMPETITION_MEMORY
        if now < self._competing_until:
            self._inflight_cap = limit.limit(rtt_min, self._packet_size())
        else:
            self._inflight_cap = None

    def _packet_size(self) -> int:
        """The largest UDP payload packets use now."""
        if self._pmtu is not None:
            return self._pmtu.size
        config = self._config
        return PMTU_BASE if config.pmtu_discovery else config.max_udp_payload_size

    def _probe_path(
        self, engine: Engine, pmtu: PathMtuSearch, now: float
    ) -> list[tuple[bytes, Address]]:
        """The path MTU probe due now, if any (see ``_pmtu.py``)."""
        if not pmtu.started:
            if self._counters.udp_bytes_sent < _PMTU_START_BYTES:
                return []
            pmtu.start(now)
        path = engine.peer_address()
        if pmtu.size > PMTU_BASE and (
            engine.large_losses() >= _BLACK_HOLE_LOSSES or path != self._pmtu_path
        ):
            # Large packets keep getting lost with none acknowledged (a black hole), or
            # the peer moved to a path nothing is known of: back to the floor, search again.
            pmtu.reset(now)
            self._counters.datagrams_send_dropped += engine.use_datagram_size(pmtu.size)
        self._pmtu_path = path
        if engine.probe_timeouts():
            # The path is in doubt: a lost probe would prove nothing. Look again later.
            pmtu.defer(now + engine.probe_timeout())
            return []
        size = pmtu.probe(now, engine.probe_timeout(), engine.packets_acked())
        if size is None:
            return []
        out = engine.send_path_probe(size, now)
        if not out:
            pmtu.cancel(now)
        return out

    def timer(self) -> float | None:
        """When :meth:`handle_timer` must next be called, or ``None`` for never."""
        if self._engine is None or self._state in (ConnectionState.IDLE, ConnectionState.CLOSED):
            return None
        timer = self._engine.timer()
        if self._pmtu is not None and self._state is ConnectionState.CONNECTED:
            probe = self._pmtu.timer()
            if probe is not None and (timer is None or probe < timer):
                timer = probe
        keep_alive = self._keep_alive_at()
        if keep_alive is not None and (timer is None or keep_alive < timer):
            timer = keep_alive
        auth_deadline = None if self._auth is None else self._auth.timer()
        if auth_deadline is not None and (timer is None or auth_deadline < timer):
            return auth_deadline
        return timer

    def _keep_alive_at(self) -> float | None:
        """When a keep-alive PING is due: ``Config.keep_alive`` after the last send."""
        keep_alive = self._config.keep_alive
        if keep_alive is None or self._state is not ConnectionState.CONNECTED:
            return None
        return self._last_sent + keep_alive

    def next_event(self) -> Event | None:
        """Return the next event, or ``None`` when there is none for now."""
        try:
            return self._events.popleft()
        except IndexError:
            return None

    # -- commands ---------------------------------------------------------------

    def open_stream(self, bidirectional: bool = True, priority: int = Priority.NORMAL) -> int:
        """Open a stream and return its id; nothing is sent until :meth:`send`.

        ``priority`` (0-255, see :class:`~sansquic.Priority`) orders its bytes
        against other streams; change it any time with :meth:`set_priority`.
        The peer learns of the stream with its first data (or FIN). Past the
        peer's stream limit the stream is still opened, and its bytes wait
        until the peer raises the limit (``StreamsAvailable``); no id is
        wasted. Next: :meth:`send`.
        """
        _check_priority(priority)
        engine = self._require_engine()
        record = self._streams.open_local(bool(bidirectional), int(priority))
        # Register the stream with the engine now, so it queues for credit in order.
        engine.send_stream(record.stream_id, b"", False)
        self._counters.streams_opened_local += 1
        return record.stream_id

    def send(self, stream_id: int, data: bytes, end: bool = False) -> int:
        """Queue ``data`` on the stream; ``end=True`` finishes the stream after it.

        Returns how many bytes the stream now has queued in the core. The
        bytes go to the engine by priority, as fast as the network takes
        them. When :meth:`writable` turns False (a high watermark was
        reached), send more only after ``StreamWritable``; beyond
        ``Config.send_buffer_limit`` this raises :class:`~sansquic.SendBufferFull`
        and queues nothing.

        Raises :class:`~sansquic.LocalProtocolError` on a stream that is
        unknown, receive-only, finished, reset or closed, and
        :class:`~sansquic.StreamStoppedError` when the peer sent STOP_SENDING
        while the stream is still open. (Once both directions are over the
        stream is closed and forgotten, so a late send raises
        ``LocalProtocolError``; the ``StreamStopped`` event is the signal to
        act on.) Next: :meth:`datagrams_to_send`.
        """
        data = _as_bytes(data)
        self._require_engine()
        record = self._live_stream(stream_id, "send on")
        new = self._next_send_state(record, SendInput.FINISH if end else SendInput.SEND)
        outgoing = record.outgoing
        assert outgoing is not None  # a stream with a sending half has a queue
        config = self._config
        if outgoing.buffer.size + len(data) > config.send_buffer_limit:
            raise SendBufferFull(
                stream_id, outgoing.buffer.size + len(data), config.send_buffer_limit
            )
        if self._send_buffered + len(data) > config.connection_send_buffer_limit:
            raise SendBufferFull(
                stream_id, self._send_buffered + len(data), config.connection_send_buffer_limit
            )
        if data:
            fillable(outgoing).append(data)
            self._send_buffered += len(data)
        if self._passed_over:
            self._passed_over.pop(stream_id, None)  # served: back of the line next time
        outgoing.fin = end
        if data or end:
            self._scheduler.enqueue(stream_id, outgoing)
        self._counters.stream_bytes_sent += len(data)
        record.send = new
        self.writable(stream_id)  # subscribes the stream to StreamWritable if it is full
        return outgoing.buffer.size

    def writable(self, stream_id: int) -> bool:
        """Whether the stream and the connection are below their send high watermarks.

        When it is not, ``StreamWritable`` follows once both drained below the
        low watermarks (asking subscribes, whichever limit was reached).
        """
        record = self._live_stream(stream_id, "check")
        if record.outgoing is None:
            raise LocalProtocolError(f"stream {stream_id} is receive-only: the peer opened it")
        writable = (
            record.outgoing.buffer.size < self._config.send_high_watermark
            and self._send_buffered < self._config.connection_send_high_watermark
        )
        if not writable:
            self._waiting_writers[stream_id] = None
        return writable

    def buffered(self, stream_id: int) -> int:
        """Bytes the stream has queued in the core, not yet handed to the engine."""
        record = self._live_stream(stream_id, "check")
        if record.outgoing is None:
            raise LocalProtocolError(f"stream {stream_id} is receive-only: the peer opened it")
        return record.outgoing.buffer.size

    def queued(self, stream_id: int) -> int:
        """Bytes written to the stream that have not been sent yet: what the core
        still queues plus what the engine holds unsent (0 for a receive-only or
        closed stream). Retransmissions are not counted."""
        record = self._streams.lookup(stream_id)  # raises for an id never opened
        outgoing = None if record is None else record.outgoing
        core = 0 if outgoing is None else outgoing.buffer.size
        engine = self._engine
        return core + (0 if engine is None else engine.stream_unsent(stream_id))

    def priority(self, stream_id: int) -> int:
        """The stream's send priority (0-255, higher first)."""
        record = self._live_stream(stream_id, "check")
        if record.outgoing is None:
            raise LocalProtocolError(f"stream {stream_id} is receive-only: the peer opened it")
        return record.outgoing.priority

    def set_priority(self, stream_id: int, priority: int) -> None:
        """Change the stream's send priority (0-255); bytes already queued follow it.

        Next: :meth:`datagrams_to_send`.
        """
        _check_priority(priority)
        self._require_engine()
        record = self._live_stream(stream_id, "prioritise")
        outgoing = record.outgoing
        if outgoing is None:
            raise LocalProtocolError(f"stream {stream_id} is receive-only: the peer opened it")
        if outgoing.queued:
            self._scheduler.remove(stream_id, outgoing)
            outgoing.priority = int(priority)
            self._scheduler.enqueue(stream_id, outgoing)
        else:
            outgoing.priority = int(priority)

    def finish(self, stream_id: int) -> None:
        """Finish the sending side of a stream (FIN): ``send(stream_id, b"", end=True)``."""
        self.send(stream_id, b"", end=True)

    def read(self, stream_id: int, max_bytes: int = -1) -> bytes:
        """Take up to ``max_bytes`` (all when negative) of the stream's received data.

        Returns ``b""`` when nothing is buffered, including after the stream
        ended, was reset or stopped, or closed. Read after each
        ``StreamReadable`` until this returns ``b""``; ``StreamEnded`` tells
        when no more will come.
        """
        if not isinstance(max_bytes, int) or isinstance(max_bytes, bool):
            raise TypeError(f"max_bytes must be an int, not {type(max_bytes).__name__}")
        record = self._streams.lookup(stream_id)
        if record is None:
            return b""
        if record.recv is RecvState.NONE:
            raise LocalProtocolError(f"stream {stream_id} is send-only: this side opened it")
        if max_bytes == 0 or not record.buffer.size:
            return b""
        data = record.buffer.take(max_bytes)
        engine = self._engine
        if engine is not None and engine.consumed(stream_id, len(data)) and self._hooks is not None:
            self._hooks.touched(self)  # so the credit this returned goes out
        if not record.buffer.size:
            record.buffer = NO_BYTES  # an idle stream keeps no buffer of its own
            record.readable_signalled = False
            if record.recv is RecvState.FIN_RECEIVED:
                record.recv = RECV_TRANSITIONS[(record.recv, RecvInput.DRAINED)]
                self._streams.drop_if_done(record)
        return data

    def reset(self, stream_id: int, error_code: int = 0) -> None:
        """Abandon the sending side of a stream with ``error_code`` (RESET_STREAM).

        Unsent data is discarded. Resetting a stream the peer already stopped
        is allowed while the stream is open and does nothing. Next:
        :meth:`datagrams_to_send`.
        """
        _check_code(error_code, "error_code")
        engine = self._require_engine()
        record = self._live_stream(stream_id, "reset")
        new = self._next_send_state(record, SendInput.RESET)
        if new is SendState.RESET:
            engine.reset_stream(stream_id, error_code)
        record.send = new
        self._discard_outgoing(record)
        self._streams.drop_if_done(record)

    def stop(self, stream_id: int, error_code: int = 0) -> None:
        """Ask the peer to stop sending on a stream (STOP_SENDING); unread data is discarded.

        After the FIN arrived nothing is sent to the peer, but unread data is
        still discarded; after the stream was read to its end or reset by the
        peer, this does nothing. Next: :meth:`datagrams_to_send`.
        """
        _check_code(error_code, "error_code")
        engine = self._require_engine()
        record = self._live_stream(stream_id, "stop")
        if record.recv is RecvState.NONE:
            raise LocalProtocolError(f"stream {stream_id} is send-only: this side opened it")
        new = RECV_TRANSITIONS.get((record.recv, RecvInput.STOP))
        if new is None:
            raise LocalProtocolError(f"cannot stop stream {stream_id}: it is {record.recv.value}")
        if record.recv is RecvState.OPEN:
            engine.stop_stream(stream_id, error_code)
        if new is RecvState.STOPPED:
            # Discarded bytes count as read, so their flow-control credit returns.
            engine.consumed(stream_id, record.buffer.size)
            record.buffer = NO_BYTES
        record.recv = new
        self._streams.drop_if_done(record)

    def send_datagram(self, data: bytes) -> None:
        """Queue an unreliable datagram (RFC 9221); it may be lost, never retransmitted.

        Datagrams go to the engine ahead of all stream data, within what the
        network takes. At most ``Config.datagram_queue_limit`` wait; beyond
        that the oldest is dropped and counted in ``stats().datagrams_send_dropped``.

        Raises :class:`~sansquic.LocalProtocolError` when datagrams are off on
        either side, before the handshake completes, or when ``data`` is larger
        than :attr:`max_datagram_size`. Next: :meth:`datagrams_to_send`.
        """
        data = _as_bytes(data)
        engine = self._require_engine()
        if not self._config.datagrams:
            raise LocalProtocolError("datagrams are turned off in this side's Config")
        if self._state is not ConnectionState.CONNECTED:
            raise LocalProtocolError("datagrams can be sent once the handshake has completed")
        limit = engine.max_datagram_payload()
        if limit is None:
            raise LocalProtocolError("the peer does not accept datagrams")
        if len(data) > limit:
            raise LocalProtocolError(
                f"a datagram of {len(data)} bytes exceeds the limit of {limit} bytes"
            )
        queue = self._outgoing_datagrams
        if len(queue) >= self._config.datagram_queue_limit:
            queue.popleft()  # the oldest is the least useful: unreliable data ages badly
            self._counters.datagrams_send_dropped += 1
        queue.append(data)
        self._counters.datagrams_sent += 1

    def accept_auth(self, identity: Identity) -> None:
        """(Server) Accept the client that sent ``AuthRequested``.

        ``Authenticated`` follows, then everything the client sent meanwhile.
        Next: :meth:`datagrams_to_send`.
        """
        if not isinstance(identity, Identity):
            raise TypeError(f"identity must be a sansquic.Identity, not {identity!r}")
        self._require_engine()
        self._require_auth().accept(identity)

    def reject_auth(self, code: int = 1, reason: str = "rejected") -> None:
        """(Server) Reject the client that sent ``AuthRequested``; the connection then
        closes with ``CloseCode.AUTH_REJECTED``. Next: :meth:`datagrams_to_send`."""
        _check_code(code, "code")
        if not 0 <= code < 2**32:
            raise LocalProtocolError(f"an auth rejection code fits in 32 bits, not {code}")
        if not isinstance(reason, str):
            raise TypeError(f"reason must be a str, not {type(reason).__name__}")
        self._require_engine()
        self._require_auth().reject(AuthRejection(code=code, reason=reason), self._now_hint())

    def change_connection_id(self) -> None:
        """Switch to another connection id the peer issued, retiring the current one.

        Useful before a planned migration, so the new path cannot be linked
        to the old one. The peer must have issued a spare id (it does once the
        handshake completed). Next: :meth:`datagrams_to_send`.
        """
        self._require_engine().change_connection_id()

    def migrate(self) -> None:
        """(Client) This side now sends from a new local address (connection migration).

        Call it as the datagrams start leaving from the new address (a runtime
        does this in ``await conn.migrate()``, with a new socket). The
        connection moves to a fresh connection id, so the paths cannot be
        linked, and sends at once; the server validates the new path
        (PATH_CHALLENGE) and follows. Path MTU discovery starts over, at 1200
        bytes, as nothing is known of the new path. Raises
        :class:`~sansquic.LocalProtocolError` on a server, before the handshake
        is confirmed, and when the server issued no spare connection id.
        Next: :meth:`datagrams_to_send`.
        """
        engine = self._require_engine()
        if self._role is not Role.CLIENT:
            raise LocalProtocolError(
                "only a client migrates (RFC 9000 section 9); a server follows"
            )
        if self._state is not ConnectionState.CONNECTED:
            raise LocalProtocolError("a client can migrate once the handshake has completed")
        refusal = engine.migration_refusal()
        if refusal is not None:
            raise LocalProtocolError(refusal)
        engine.migrate()
        if self._pmtu is not None:
            # Nothing is known of the new path: packets drop to the floor at once, and
            # the search starts over where the clock is known (_probe_path sees a new path).
            self._pmtu_path = None
            if self._pmtu.size > PMTU_BASE:
                self._counters.datagrams_send_dropped += engine.use_datagram_size(PMTU_BASE)

    def update_keys(self) -> None:
        """Move to fresh packet protection keys (a QUIC key update, RFC 9001 section 6).

        The peer follows; ``stats().key_phase`` flips and ``key_updates``
        counts it. ``Config.key_update_packets`` does this on its own. Raises
        :class:`~sansquic.LocalProtocolError` before the handshake completed and
        while the last update (either side's) is unconfirmed: no packet under
        the current keys has been acknowledged yet. Next: :meth:`datagrams_to_send`.
        """
        engine = self._require_engine()
        if self._state is not ConnectionState.CONNECTED:
            raise LocalProtocolError("keys can be updated once the handshake has completed")
        if not engine.key_state().settled:
            raise LocalProtocolError(
                "the last key update is unconfirmed: wait until the peer acknowledged "
                "a packet under the current keys"
            )
        engine.update_keys()

    def close(self, error_code: int = 0, reason: str = "") -> None:
        """Close the connection with an application ``error_code`` and ``reason``.

        Idempotent. Next: keep calling :meth:`datagrams_to_send` and
        :meth:`handle_timer` until ``ConnectionTerminated`` arrives.
        """
        _check_code(error_code, "error_code")
        if not isinstance(reason, str):
            raise TypeError(f"reason must be a str, not {type(reason).__name__}")
        if self._state in (ConnectionState.CLOSING, ConnectionState.CLOSED):
            return
        if self._engine is None or self._state is ConnectionState.IDLE:
            # Nothing was ever sent: there is no peer to tell.
            self._terminate(Terminated(error_code, reason, ClosedBy.LOCAL, True))
            return
        self._engine.close(error_code, reason)
        self._begin_close(Terminated(error_code, reason, ClosedBy.LOCAL, True))
        if self._hooks is not None:
            self._hooks.touched(self)

    def stats(self) -> ConnectionStats:
        """Return a snapshot of the connection's counters and path estimates."""
        c = self._counters
        if self._engine is None:
            rtt_smoothed = rtt_min = None
            cwnd = in_flight = 0
        else:
            rtt_smoothed, rtt_min, cwnd, in_flight = self._engine.path_stats()
        return ConnectionStats(
            **self._recovery_stats(),
            udp_bytes_sent=c.udp_bytes_sent,
            udp_bytes_received=c.udp_bytes_received,
            udp_datagrams_sent=c.udp_datagrams_sent,
            udp_datagrams_received=c.udp_datagrams_received,
            udp_datagrams_dropped=c.udp_datagrams_dropped,
            stream_bytes_sent=c.stream_bytes_sent,
            stream_bytes_received=c.stream_bytes_received,
            streams_open=len(self._streams.records),
            streams_opened_local=c.streams_opened_local,
            streams_opened_remote=c.streams_opened_remote,
            datagrams_sent=c.datagrams_sent,
            datagrams_received=c.datagrams_received,
            datagrams_dropped=c.datagrams_dropped,
            datagrams_send_dropped=c.datagrams_send_dropped,
            send_buffered=self._send_buffered,
            rtt_smoothed=rtt_smoothed,
            rtt_min=rtt_min,
            congestion_window=cwnd,
            bytes_in_flight=in_flight,
            **self._pmtu_stats(),
            **self._key_stats(),
            unreachable_reports=c.unreachable_reports,
        )

    def _recovery_stats(self) -> dict[str, Any]:
        if self._engine is None:
            return {"packets_sent": 0, "packets_lost": 0, "packets_retransmitted": 0}
        recovery = self._engine.recovery_stats()
        return {
            "rtt_variance": recovery.rtt_variance,
            "packets_sent": recovery.packets_sent,
            "packets_lost": recovery.packets_lost,
            "packets_retransmitted": recovery.packets_retransmitted,
        }

    def _key_stats(self) -> dict[str, int]:
        if self._engine is None:
            return {}
        keys = self._engine.key_state()
        return {"key_updates": keys.updates, "key_phase": keys.phase}

    def _pmtu_stats(self) -> dict[str, int]:
        pmtu = self._pmtu
        if pmtu is None:
            return {"udp_payload_size": self._packet_size()}
        return {
            "udp_payload_size": pmtu.size,
            "pmtu_probes_sent": pmtu.probes_sent,
            "pmtu_probes_acked": pmtu.probes_acked,
            "pmtu_probes_lost": pmtu.probes_lost,
        }

    # -- internals --------------------------------------------------------------

    def _require_engine(self) -> Engine:
        if self._closed_error is not None:
            raise self._closed()
        if self._hooks is not None:
            # A command is coming: the owning Endpoint must flush this connection.
            self._hooks.touched(self)
        if self._engine is None:
            raise LocalProtocolError("a server connection exists once a client Initial arrived")
        if self._state is ConnectionState.IDLE:
            raise LocalProtocolError("call connect() first")
        return self._engine

    @staticmethod
    def _next_send_state(record: StreamRecord, command: SendInput) -> SendState:
        """The send state ``command`` leads to, or the typed error it deserves."""
        stream_id = record.stream_id
        if record.send is SendState.NONE:
            raise LocalProtocolError(f"stream {stream_id} is receive-only: the peer opened it")
        if record.send is SendState.STOPPED and command is not SendInput.RESET:
            raise StreamStoppedError(stream_id, record.stop_code)
        new = SEND_TRANSITIONS.get((record.send, command))
        if new is None:
            raise LocalProtocolError(
                f"cannot {command.value} on stream {stream_id}: it is {record.send.value}"
            )
        return new

    def _require_auth(self) -> AuthFlow:
        if self._auth is None or not self._auth.server:
            raise LocalProtocolError("auth answers are for servers whose Config has an AuthPolicy")
        return self._auth

    def _now_hint(self) -> float:
        """The latest time the engine saw, for decisions a command makes."""
        return 0.0 if self._engine is None else self._engine.now

    def _close_locally(self, code: int, reason: str) -> None:
        """Close from inside the core (auth, rate limits) with an application code."""
        if self._closed_error is None and self._engine is not None:
            self._engine.close(code, reason)
            self._begin_close(Terminated(code, reason, ClosedBy.LOCAL, True))
            if self._hooks is not None:
                self._hooks.touched(self)

    def _close_after_flush(self, code: int, reason: str) -> None:
        self._close_pending = (code, reason)
        if self._hooks is not None:
            self._hooks.touched(self)

    def _schedule(self) -> None:
        """Hand the engine what the network can take now: datagrams, then streams by priority."""
        engine = self._engine
        assert engine is not None
        datagrams = self._outgoing_datagrams
        if datagrams:
            # DATAGRAM frames use no flow-control credit (RFC 9221): their own budget.
            room = engine.max_datagram_payload() or 0
            spare = engine.datagram_budget(self._inflight_cap)
            while datagrams and spare >= len(datagrams.peek()) + _DATAGRAM_OVERHEAD:
                data = datagrams.popleft()
                if len(data) > room:
                    # Accepted when packets were larger (path MTU fell back): it can
                    # never leave now, and at the engine's head it would block the rest.
                    self._counters.datagrams_send_dropped += 1
                    continue
                engine.send_datagram(data)
                spare -= len(data) + _DATAGRAM_OVERHEAD
        cap = self._inflight_cap
        budget = engine.send_budget(cap)
        scheduler = self._scheduler
        if scheduler:
            # The cap keeps lower priorities queued here rather than in flight; the
            # highest priority waiting must not queue behind what they already have in
            # flight: it may go up to one more cap's worth (twice the path's need).
            top = engine.send_budget(2 * cap) if cap is not None and scheduler.competing else None
            left = scheduler.run(budget, engine.stream_credit, self._hand, top_budget=top)
            packet = self._packet_size()
            if scheduler and (
                left >= packet or (cap is not None and engine.datagram_budget(cap) >= packet)
            ):
                # Data waits though the window has room: it waits for flow-control
                # credit (the stream's, or the connection's: asked only while the
                # limit applies, as it walks every stream), not for the path.
                self._inflight.note_limited()
        if self._waiting_writers:
            self._wake_writers()

    def _hand(self, stream_id: int, data: bytes, fin: bool) -> None:
        """Give the engine the scheduler's next chunk of a stream."""
        assert self._engine is not None
        self._engine.send_stream(stream_id, data, fin)
        self._send_buffered -= len(data)
        if fin:
            record = self._streams.records.get(stream_id)
            if record is not None:
                self._streams.drop_if_done(record)

    def _wake_writers(self) -> None:
        """Announce ``StreamWritable`` for streams that drained below the low watermarks."""
        config = self._config
        if self._send_buffered > config.connection_send_low_watermark:
            return
        records = self._streams.records
        waiting, passed_over = self._waiting_writers, self._passed_over
        # Those passed over last time first: a writer woken with many others may find
        # the connection full again by its turn, and must not lose its place for it.
        order = [s for s in passed_over if s in waiting]
        order += [s for s in waiting if s not in passed_over]
        for stream_id in order:
            record = records.get(stream_id)
            outgoing = None if record is None else record.outgoing
            if outgoing is None or record is None or record.send is not SendState.OPEN:
                waiting.pop(stream_id, None)  # nothing more will be sent on it
                passed_over.pop(stream_id, None)
            elif outgoing.buffer.size <= config.send_low_watermark:
                waiting.pop(stream_id, None)
                passed_over[stream_id] = None  # until it queues something
                self._events.append(StreamWritable(stream_id=stream_id))
        for stream_id in [s for s in passed_over if s not in records]:
            del passed_over[stream_id]  # closed without a word since

    def _discard_outgoing(self, record: StreamRecord) -> None:
        """Drop what the core still had queued for a stream whose sending side ended."""
        outgoing = record.outgoing
        if outgoing is not None:
            self._scheduler.remove(record.stream_id, outgoing)
            self._send_buffered -= outgoing.buffer.size
            outgoing.buffer = NO_BYTES
            outgoing.fin = False
            self._waiting_writers.pop(record.stream_id, None)
            self._passed_over.pop(record.stream_id, None)

    def _live_stream(self, stream_id: int, action: str) -> StreamRecord:
        record = self._streams.lookup(stream_id)
        if record is None:
            raise LocalProtocolError(f"cannot {action} stream {stream_id}: it is closed")
        return record

    def _pump(self, now: float) -> None:
        """Bring the core up to date with the engine: events, closing, stream credit."""
        engine = self._engine
        assert engine is not None
        if engine.has_events():
            self._translate(engine, now)
        if self._state is not ConnectionState.CLOSED and self._closed_error is None:
            closing = engine.pending_close()
            if closing is not None:
                self._begin_close(closing)
        if self._state is ConnectionState.CONNECTED:
            # MAX_STREAMS raises no engine event, so look at the limits every time.
            self._announce_stream_credit(engine)

    def _translate(self, engine: Engine, now: float) -> None:
        """Turn the engine's events into stream state and public events."""
        streams = self._streams
        counters = self._counters
        auth = self._auth
        for ev in engine.events():
            # A server holds the client's doings back until the client is accepted.
            holding = auth is not None and auth.gating
            emit = auth.hold if holding and auth is not None else self._events.append
            if isinstance(ev, StreamData):
                if auth is not None and ev.stream_id == AUTH_STREAM:
                    self._auth_stream_data(auth, ev, now)
                    continue
                record = self._peer_stream(ev.stream_id, emit)
                if record is None:
                    continue
                if holding and ev.data and auth is not None:
                    auth.held_bytes(len(ev.data))
                if record.recv is RecvState.STOPPED:
                    engine.consumed(ev.stream_id, len(ev.data))  # dropped: credit returns
                    continue
                if ev.data:
                    fillable(record).append(ev.data)
                    counters.stream_bytes_received += len(ev.data)
                    if self._state is ConnectionState.HANDSHAKING:
                        # Before the handshake only 0-RTT carries stream data: replayable.
                        self._early[ev.stream_id] = self._early.get(ev.stream_id, 0) + len(ev.data)
                    if not record.readable_signalled:
                        record.readable_signalled = True
                        emit(StreamReadable(stream_id=ev.stream_id))
                if ev.fin and (recv := RECV_TRANSITIONS.get((record.recv, RecvInput.FIN))):
                    record.recv = recv
                    emit(StreamEnded(stream_id=ev.stream_id))
                    if not record.buffer.size:
                        record.recv = RECV_TRANSITIONS[(record.recv, RecvInput.DRAINED)]
                        streams.drop_if_done(record)
            elif isinstance(ev, DatagramIn):
                if self._datagram_allowed(now):
                    counters.datagrams_received += 1
                    emit(DatagramReceived(data=ev.data))
            elif isinstance(ev, CidIssued | CidRetired):
                if self._hooks is not None:
                    self._hooks.cid_changed(self, ev.cid, isinstance(ev, CidIssued))
            elif isinstance(ev, StreamResetByPeer | StopSendingByPeer) and (
                auth is not None and ev.stream_id == AUTH_STREAM
            ):
                self._auth_stream_aborted(auth, ev, now)
            elif isinstance(ev, StreamResetByPeer):
                record = self._peer_stream(ev.stream_id, emit)
                if record is None:
                    continue
                recv = RECV_TRANSITIONS.get((record.recv, RecvInput.PEER_RESET))
                if recv is RecvState.RESET:
                    record.buffer = NO_BYTES
                    emit(StreamReset(stream_id=ev.stream_id, error_code=ev.error_code))
                if recv is not None:
                    record.recv = recv
                    streams.drop_if_done(record)
            elif isinstance(ev, StopSendingByPeer):
                record = self._peer_stream(ev.stream_id, emit)
                if record is None:
                    continue
                send = SEND_TRANSITIONS.get((record.send, SendInput.PEER_STOP))
                if send is SendState.STOPPED and record.send is not SendState.STOPPED:
                    record.stop_code = ev.error_code
                    self._discard_outgoing(record)
                    emit(StreamStopped(stream_id=ev.stream_id, error_code=ev.error_code))
                if send is not None:
                    record.send = send
                    streams.drop_if_done(record)
            elif isinstance(ev, EarlyDataAccepted):
                self._alpn = ev.alpn
                self._resumed = self._early_data_accepted = True  # 0-RTT comes only on a ticket
            elif isinstance(ev, HandshakeDone):
                self._alpn = ev.alpn
                self._resumed = ev.resumed
                self._early_data_accepted = ev.early_data_accepted
                if self._state is ConnectionState.HANDSHAKING:
                    self._state = ConnectionState.CONNECTED
                    self._last_sent = now
                config = self._config
                if config.pmtu_discovery and config.max_udp_payload_size > PMTU_BASE:
                    self._pmtu = PathMtuSearch(config.max_udp_payload_size)
                if auth is not None:
                    auth.handshake_done(now, self._config.auth if auth.server else None)
                self._events.append(  # the TLS result, not the peer's
                    HandshakeCompleted(
                        alpn=ev.alpn,
                        resumed=ev.resumed,
                        early_data_accepted=ev.early_data_accepted,
                    )
                )
            elif isinstance(ev, PathProbeAcked):
                if self._pmtu is not None and self._pmtu.acked(ev.size, now):
                    self._counters.datagrams_send_dropped += engine.use_datagram_size(
                        self._pmtu.size
                    )
            elif isinstance(ev, Terminated):
                self._terminate(ev)

    def _announce_stream_credit(self, engine: Engine) -> None:
        """``StreamsAvailable`` when the peer raised either stream limit."""
        limits, known = engine.peer_stream_limits(), self._peer_stream_limits
        if limits == known:
            return
        self._peer_stream_limits = limits
        if known is None:
            return  # the handshake's initial limits are not a raise
        for bidirectional, old, new in zip((True, False), known, limits, strict=True):
            if new > old:
                opened = self._streams.opened_local(bidirectional)
                self._events.append(
                    StreamsAvailable(bidirectional=bidirectional, available=max(0, new - opened))
                )

    def _datagram_allowed(self, now: float) -> bool:
        """Apply ``peer_datagrams_per_second``; close a peer that keeps exceeding it."""
        bucket = self._datagram_bucket
        if bucket is None or bucket.allow(now):
            return True
        self._counters.datagrams_dropped += 1
        grace = self._config.rate_limits.violation_grace
        if now - self._datagram_excess_since > grace:
            self._datagram_excess, self._datagram_excess_since = 0, now
        self._datagram_excess += 1
        # Sustained: the peer sent a whole grace period's allowance on top of it.
        if self._datagram_excess > bucket.rate * grace:
            self._close_locally(CloseCode.RATE_LIMITED, "datagram rate exceeded")
        return False

    def _peer_stream(self, stream_id: int, emit: Callable[[Event], None]) -> StreamRecord | None:
        """The record for a stream the engine reported, announcing it if the peer just opened it."""
        record, opened = self._streams.peer_record(stream_id)
        if opened:
            self._counters.streams_opened_remote += 1
            emit(StreamOpened(stream_id=stream_id, bidirectional=is_bidirectional(stream_id)))
        return record

    def _auth_stream_data(self, auth: AuthFlow, ev: StreamData, now: float) -> None:
        """The auth stream never surfaces: its bytes go to the auth flow."""
        if auth.server:
            self._streams.peer_record(AUTH_STREAM)  # so the answer can be sent on it
        if ev.data:
            self._engine.consumed(AUTH_STREAM, len(ev.data))  # type: ignore[union-attr]
            # The validated address (remote_address): not the last datagram's of a burst,
            # which anyone who reads the connection id can forge, nor the path in use,
            # which follows a copied packet raced ahead from elsewhere before validation.
            auth.stream_data(ev.data, now, self.remote_address)
        if ev.fin:
            auth.stream_finished(now)
        record = self._streams.records.get(AUTH_STREAM)
        if ev.fin and record is not None and record.recv is RecvState.OPEN:
            record.recv = RecvState.FINISHED
            self._streams.drop_if_done(record)

    def _auth_stream_aborted(
        self, auth: AuthFlow, ev: StreamResetByPeer | StopSendingByPeer, now: float
    ) -> None:
        """The peer reset or stopped the auth stream: never surfaced, and before the
        answer a violation (see :meth:`AuthFlow.stream_aborted`)."""
        reset = isinstance(ev, StreamResetByPeer)
        auth.stream_aborted("reset" if reset else "stopped", now)
        record = self._streams.records.get(AUTH_STREAM)
        if record is None:
            return
        if reset:
            recv = RECV_TRANSITIONS.get((record.recv, RecvInput.PEER_RESET))
            if recv is not None:
                record.buffer = NO_BYTES
                record.recv = recv
        else:
            send = SEND_TRANSITIONS.get((record.send, SendInput.PEER_STOP))
            if send is not None:
                self._discard_outgoing(record)
                record.send = send
        self._streams.drop_if_done(record)

    def _closed(self) -> ConnectionClosed:
        """A fresh copy of the error that describes this close, to raise.

        Raising the stored instance again and again would chain every raise's
        traceback onto it (and keep their frames alive) for as long as the
        connection lives.
        """
        error = self._closed_error
        if error is None:
            return ConnectionClosed(0, "closed", application=True)
        return type(error)(
            error.error_code,
            error.reason,
            closed_by=error.closed_by,
            application=error.application,
        )

    def _begin_close(self, ev: Terminated) -> None:
        """Refuse further commands with the error that describes this close."""
        self._closed_error = closed_error(
            ev.closed_by, ev.error_code, ev.reason, application=ev.application
        )
        self._state = ConnectionState.CLOSING

    def _terminate(self, ev: Terminated) -> None:
        if self._auth is not None:
            self._auth.terminated(ev.error_code, ev.reason, ev.closed_by is ClosedBy.PEER)
        self._begin_close(ev)
        self._state = ConnectionState.CLOSED
        self._events.append(
            ConnectionTerminated(
                error_code=ev.error_code,
                reason=ev.reason,
                closed_by=ev.closed_by,
                application=ev.application,
            )
        )
        self._deliver_qlog()

    def _deliver_qlog(self) -> None:
        """Hand the finished trace to ``Config.qlog`` (last: the state is settled)."""
        sink = self._config.qlog
        trace = None if sink is None or self._engine is None else self._engine.take_qlog()
        if sink is None or trace is None:
            return
        try:
            sink(trace)
        except Exception:
            # A failing trace writer must not break this connection, or the Endpoint
            # that owns it and many others: report it and go on.
            _logger.exception("sansquic: the Config.qlog callable failed")
