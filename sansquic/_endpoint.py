"""``Endpoint``: everything behind one UDP socket, as a pure state machine.

It routes datagrams to connections by destination connection id (so NAT
rebinding and connection-id rotation need nothing special), answers what no
connection owns (Version Negotiation, Retry, refusal, stateless reset),
applies admission limits, merges every connection's timer into one heap, and
forgets connections once they have drained.
"""

from __future__ import annotations

import hashlib
import heapq
import hmac
import secrets
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType

import attrs

from ._aioquic import (
    CID_LENGTH,
    Header,
    encode_initial_close,
    encode_retry,
    encode_stateless_reset,
    encode_version_negotiation,
    parse_header,
    short_header_cid,
)
from ._codes import CloseCode, ClosedBy
from ._config import QUIC_VERSIONS, Config
from ._connection import Connection, ConnectionState
from ._engine import Address, Terminated
from ._errors import LocalProtocolError
from ._events import Event
from ._retry import RetryTokens
from .ratelimit import KeyedLimiter, TokenBucket, address_key, refusal

__all__ = ["Endpoint", "EndpointStats"]

_SMALLEST_INITIAL = 1200
_CONNECTION_REFUSED = 0x02
# A stateless reset must be shorter than what triggered it, so two endpoints
# can never reset each other in a loop, and at least 21 bytes to look like a
# short-header packet (RFC 9000 section 10.3).
_MIN_RESET = 21
_MAX_RESET = 43


@attrs.frozen(kw_only=True)
class EndpointStats:
    """Counters of an :class:`Endpoint` at the moment ``stats()`` was called."""

    #: Connections accepted (server side) and opened with ``connect()`` (client side).
    accepted: int
    connected: int
    #: Connections alive now, and TLS handshakes among them still in progress.
    active: int
    handshakes: int
    #: Initials refused with CONNECTION_REFUSED, by reason.
    refused: Mapping[str, int]
    #: Retry packets sent, and Initials dropped because their Retry token was
    #: forged, expired or for another address.
    retries: int
    invalid_tokens: int
    version_negotiations: int
    stateless_resets: int
    #: Datagrams received, and those routed to an existing connection. Every
    #: datagram is counted once under one outcome; see :meth:`outcomes`.
    datagrams_received: int
    datagrams_routed: int
    #: Datagrams dropped, by reason.
    dropped: Mapping[str, int]
    #: Addresses the per-address limiters track now (bounded by ``max_tracked_addresses``).
    tracked_addresses: int
    #: Clients that failed the auth handshake (rejected, malformed or too slow).
    auth_failures: int
    #: Connections closed because the core itself raised while handling them (a bug
    #: in sansquic or the engine, never the peer's doing): zero, or a bug to report.
    #: The last exception is :attr:`Endpoint.last_internal_error`.
    internal_errors: int = 0

    def outcomes(self) -> int:
        """Datagrams by what became of them; equals ``datagrams_received`` (each counts once)."""
        return (
            self.datagrams_routed
            + self.accepted
            + self.retries
            + self.version_negotiations
            + self.stateless_resets
            + self.invalid_tokens
            + sum(self.refused.values())
            + sum(self.dropped.values())
        )


def _bucket_factory(rate: float) -> Callable[[float], TokenBucket]:
    """Buckets of ``rate`` per second with a one-second burst, made on first use at ``now``."""

    def make(now: float) -> TokenBucket:
        return TokenBucket(rate, max(1.0, rate), now)

    return make


class _Entry:
    """What the endpoint keeps per connection."""

    __slots__ = (
        "address_key",
        "cids",
        "conn",
        "deadline",
        "handshaking",
        "queued_for_events",
        "remote",
    )

    def __init__(self, conn: Connection, remote: Address, key: str, handshaking: bool) -> None:
        # The timer heap holds entries, not connections: a forgotten entry drops its
        # connection at once, however long its stale heap item waits to be popped.
        self.conn: Connection | None = conn
        self.remote = remote
        self.address_key = key
        self.cids: set[bytes] = set()
        self.deadline: float | None = None
        self.handshaking = handshaking
        self.queued_for_events = False


class Endpoint:
    """The pure object behind one UDP socket: many connections, one timer.

    Drive it like a :class:`Connection`: feed :meth:`receive_datagram` and
    :meth:`handle_timer`, send what :meth:`datagrams_to_send` returns, and
    take ``(connection, event)`` pairs from :meth:`next_event`. Give commands
    to the connections themselves; the endpoint notices and flushes them.

    ``server=True`` accepts client Initials, subject to
    ``config.rate_limits``. Any endpoint can open client connections with
    :meth:`connect`. ``reset_key`` (32 random bytes, kept secret) derives
    stateless reset tokens; give the same key after a restart and the new
    endpoint can reset connections the old one lost.
    """

    def __init__(
        self,
        config: Config,
        *,
        server: bool = False,
        reset_key: bytes | None = None,
        now: float = 0.0,
    ) -> None:
        if not isinstance(config, Config):
            raise TypeError(f"config must be a sansquic.Config, not {type(config).__name__}")
        if server and config.certificate is None:
            raise LocalProtocolError("a server needs certificate and private_key, or dev_mode=True")
        self._config = config
        self._server = server
        self._versions = tuple(QUIC_VERSIONS[name] for name in config.versions)
        limits = config.rate_limits
        self._limits = limits
        self._entries: dict[Connection, _Entry] = {}
        self._routes: dict[bytes, Connection] = {}
        self._by_remote: dict[Address, set[Connection]] = {}
        self._dirty: dict[Connection, None] = {}  # an ordered set
        # Sent since their timer was last worked out: timer() (or handle_timer()) does
        # it, after the runtime has put the datagrams on the wire rather than before.
        self._stale: dict[Connection, None] = {}
        self._event_queue: deque[Connection] = deque()
        self._heap: list[tuple[float, int, _Entry]] = []
        self._heap_seq = 0
        self._outbox: list[tuple[bytes, Address]] = []
        if reset_key is not None and len(reset_key) < 16:
            raise LocalProtocolError("reset_key needs at least 16 bytes of secret")
        if reset_key is None:
            reset_key = config.reset_key
        self._reset_key = reset_key if reset_key is not None else secrets.token_bytes(32)
        self._retry_tokens = RetryTokens(limits.retry_token_lifetime, now=now)
        self._responses = TokenBucket(limits.responses_per_second, limits.responses_per_second, now)
        self._per_address: Counter[str] = Counter()
        self._handshakes = 0
        self._new_connections: KeyedLimiter[TokenBucket] | None = None
        if limits.new_connections_per_second is not None:
            self._new_connections = KeyedLimiter(
                _bucket_factory(limits.new_connections_per_second), limits.max_tracked_addresses
            )
        self._prehandshake: KeyedLimiter[TokenBucket] | None = None
        if limits.prehandshake_datagrams_per_second is not None:
            self._prehandshake = KeyedLimiter(
                _bucket_factory(limits.prehandshake_datagrams_per_second),
                limits.max_tracked_addresses,
            )
        # Auth failures per address key; exhausting the bucket locks the key out.
        self._auth_failures: KeyedLimiter[TokenBucket] | None = None
        self._lockouts: KeyedLimiter[list[float]] | None = None
        if config.auth is not None:
            policy = config.auth
            failures, window = policy.max_failures, policy.failure_window
            self._auth_failures = KeyedLimiter(
                lambda t: TokenBucket(failures / window, failures, t), limits.max_tracked_addresses
            )
            self._lockouts = KeyedLimiter(lambda t: [t], limits.max_tracked_addresses)
        self._auth_failure_count = 0
        self._accepted = self._connected = 0
        self._retries = self._invalid_tokens = self._negotiations = self._resets = 0
        self._received = self._routed = 0
        self._refused: Counter[str] = Counter()
        self._dropped: Counter[str] = Counter()
        self._internal_errors = 0
        #: The exception behind the last ``stats().internal_errors``, for the runtime to log.
        self.last_internal_error: Exception | None = None

    # -- inputs -----------------------------------------------------------------

    def connect(
        self, address: Address, now: float, *, server_name: str | None = None
    ) -> Connection:
        """Open a client connection to ``address`` on this endpoint and start its handshake.

        Next: :meth:`datagrams_to_send`; then give the returned connection
        commands as its events arrive through :meth:`next_event`.
        """
        conn = Connection._for_endpoint(
            self._config, self, self._reset_token, now, server_name=server_name
        )
        conn.connect(address, now)
        self._register(conn, address, handshaking=False)
        self._connected += 1
        self._dirty[conn] = None
        self._after(conn)
        return conn

    def receive_datagram(self, data: bytes, address: Address, now: float) -> None:
        """Feed one UDP payload that arrived from ``address``.

        Next: :meth:`datagrams_to_send`, then drain :meth:`next_event`.
        """
        self._received += 1
        cid = short_header_cid(data)
        if cid is not None:
            conn = self._routes.get(cid)  # an established connection's: no header parse
            if conn is not None:
                self._routed += 1
                self._feed(conn, data, address, now)
                return
        header = parse_header(data)
        if header is None:
            self._dropped["unparseable"] += 1
            return
        conn = self._routes.get(header.destination_cid)
        if conn is not None:
            self._routed += 1
            self._feed(conn, data, address, now)
            return
        if not header.long:
            self._unknown_short_header(data, address, now)
        elif header.negotiation:
            self._dropped["version negotiation"] += 1  # a client endpoint ignores stray ones
        elif header.version not in self._versions:
            self._negotiate_version(header, len(data), address, now)
        elif self._server and header.initial:
            self._admit(header, data, address, now)
        else:
            self._dropped["unknown connection"] += 1

    def receive_datagrams(self, batch: Iterable[tuple[bytes, Address]], now: float) -> None:
        """Feed every ``(payload, address)`` of ``batch``, as :meth:`receive_datagram`
        each, in order.

        A connection's events are brought up to date once, after the last of its
        datagrams, rather than after each: a runtime that drains its socket hands
        the whole burst here. Next: :meth:`datagrams_to_send`, then
        :meth:`next_event`.
        """
        fed: dict[Connection, bool] = {}  # -> whether it took one (and must catch up)
        routes = self._routes
        for data, address in batch:
            cid = short_header_cid(data)
            conn = None if cid is None else routes.get(cid)
            if conn is None:
                self.receive_datagram(data, address, now)  # everything else, one by one
                continue
            self._received += 1
            self._routed += 1
            try:
                fed[conn] = conn._take_datagram(data, address, now) or fed.get(conn, False)
            except Exception as exc:
                self._internal_error(conn, exc)
                fed.setdefault(conn, False)
            self._dirty[conn] = None
        for conn, took in fed.items():
            if took:
                try:
                    conn._catch_up(now)
                except Exception as exc:
                    self._internal_error(conn, exc)
            # Its timer is brought up to date after the datagrams_to_send() that follows.
            self._after(conn, timer=False)

    def peer_unreachable(self, address: Address, now: float) -> None:
        """The socket reported ``address`` unreachable (ICMP): tell every connection
        to that address (see :meth:`Connection.peer_unreachable`: a handshake ends,
        an established connection only counts it).

        Next: :meth:`datagrams_to_send`, then :meth:`next_event`.
        """
        for conn in list(self._by_remote.get(address, ())):
            try:
                conn.peer_unreachable(address, now)
            except Exception as exc:
                self._internal_error(conn, exc)
            self._dirty[conn] = None
            self._after(conn)

    def handle_timer(self, now: float) -> bool:
        """Run every connection timer that is due at ``now``; whether any was.

        Calling it early is harmless, so a loop may call it on every wake rather
        than first asking :meth:`timer`. Next: :meth:`datagrams_to_send`, then
        :meth:`next_event`.
        """
        if self._stale:
            self._refresh_stale()  # a caller that sent and did not ask timer() since
        heap = self._heap
        due: list[Connection] = []
        while heap and heap[0][0] <= now:
            deadline, _, entry = heapq.heappop(heap)
            conn = entry.conn
            if conn is None or entry.deadline != deadline:
                continue  # stale: the connection's timer moved or it is gone
            entry.deadline = None
            due.append(conn)
        # Each due connection runs once per call, even if its timer stays due.
        for conn in due:
            try:
                conn.handle_timer(now)
            except Exception as exc:
                self._internal_error(conn, exc)
            self._dirty[conn] = None
            self._after(conn)
        return bool(due)

    # -- outputs ----------------------------------------------------------------

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        """The datagrams to send now, from the endpoint and every connection that has any.

        Next: sleep until :meth:`timer` or the next datagram.
        """
        out, self._outbox = self._outbox, []
        while self._dirty:
            dirty, self._dirty = self._dirty, {}
            for conn in dirty:
                try:
                    out += conn.datagrams_to_send(now)
                except Exception as exc:
                    self._internal_error(conn, exc)
                self._stale[conn] = None  # before _after(), which forgets it if it closed
                self._after(conn, timer=False)
        return out

    @property
    def wants_send(self) -> bool:
        """Whether :meth:`datagrams_to_send` has work: a connection got a datagram or a
        command that may send since the last call, or a reply to an unknown peer
        waits. While this is false, only :meth:`timer` can make datagrams due."""
        return bool(self._dirty or self._outbox)

    def timer(self) -> float | None:
        """The earliest deadline over all connections, or ``None``."""
        self._refresh_timers()
        heap = self._heap
        while heap:
            deadline, _, entry = heap[0]
            if entry.conn is not None and entry.deadline == deadline:
                return deadline
            heapq.heappop(heap)
        return None

    def next_event(self) -> tuple[Connection, Event] | None:
        """The next ``(connection, event)`` pair, or ``None`` when there is none for now."""
        queue = self._event_queue
        while queue:
            conn = queue[0]
            event = conn.next_event()
            if event is not None:
                return conn, event
            queue.popleft()
            entry = self._entries.get(conn)
            if entry is not None:
                entry.queued_for_events = False
        return None

    @property
    def connections(self) -> list[Connection]:
        """The connections alive on this endpoint."""
        return list(self._entries)

    def stats(self) -> EndpointStats:
        """A snapshot of the endpoint's counters."""
        tracked = max(
            len(self._new_connections or ()),
            len(self._prehandshake or ()),
        )
        return EndpointStats(
            accepted=self._accepted,
            connected=self._connected,
            active=len(self._entries),
            handshakes=self._handshakes,
            refused=MappingProxyType(dict(self._refused)),
            retries=self._retries,
            invalid_tokens=self._invalid_tokens,
            version_negotiations=self._negotiations,
            stateless_resets=self._resets,
            datagrams_received=self._received,
            datagrams_routed=self._routed,
            dropped=MappingProxyType(dict(self._dropped)),
            tracked_addresses=tracked,
            auth_failures=self._auth_failure_count,
            internal_errors=self._internal_errors,
        )

    # -- hooks the connections call ----------------------------------------------

    def touched(self, connection: Connection) -> None:
        """A connection got a command: flush it on the next :meth:`datagrams_to_send`."""
        if connection in self._entries:
            self._dirty[connection] = None

    def auth_failed(self, connection: Connection, now: float) -> None:
        """A client failed the auth handshake: count it against its address key."""
        self._auth_failure_count += 1
        entry = self._entries.get(connection)
        if entry is None or self._auth_failures is None or self._lockouts is None:
            return
        if not self._auth_failures.get(entry.address_key, now).allow(now):
            assert self._config.auth is not None
            self._lockouts.get(entry.address_key, now)[0] = now + self._config.auth.lockout

    def cid_changed(self, connection: Connection, cid: bytes, issued: bool) -> None:
        entry = self._entries.get(connection)
        if entry is None:
            return
        if issued:
            entry.cids.add(cid)
            self._routes[cid] = connection
        elif cid in entry.cids:
            entry.cids.discard(cid)
            self._routes.pop(cid, None)

    # -- admission --------------------------------------------------------------

    def _respond(self, data: bytes, address: Address, now: float, reason: str) -> bool:
        """Queue a stateless answer if the response budget allows; else drop silently."""
        if not self._responses.allow(now):
            self._dropped[f"flood ({reason})"] += 1
            return False
        self._outbox.append((data, address))
        return True

    def _address_allows(self, address: Address, now: float) -> str | None:
        """Apply the per-address pre-handshake limit to a datagram that would earn a
        stateless answer; return its address key, or None (counted) when over it."""
        limits = self._limits
        key = address_key(address, limits.ipv4_prefix, limits.ipv6_prefix)
        if self._prehandshake is not None and not self._prehandshake.get(key, now).allow(now):
            # Before the shared answer budget: one address cannot spend everyone's.
            self._dropped["flood (pre-handshake rate)"] += 1
            return None
        return key

    def _negotiate_version(self, header: Header, size: int, address: Address, now: float) -> None:
        # Only a datagram as large as an Initial earns an answer (no amplification).
        if size < _SMALLEST_INITIAL or not self._server:
            self._dropped["unsupported version"] += 1
        elif self._address_allows(address, now) is None:
            return
        elif self._respond(
            encode_version_negotiation(header, self._versions), address, now, "version"
        ):
            self._negotiations += 1

    def _admit(self, header: Header, data: bytes, address: Address, now: float) -> None:
        if len(data) < _SMALLEST_INITIAL:
            self._dropped["short initial"] += 1
            return
        key = self._address_allows(address, now)
        if key is None:
            return
        odcid, retry_scid = header.destination_cid, None
        if header.token:
            validated = self._retry_tokens.validate(
                header.token, address, header.destination_cid, now
            )
            if validated is None:
                self._invalid_tokens += 1
                return
            odcid, retry_scid = validated, header.destination_cid
        elif self._wants_retry():
            scid = secrets.token_bytes(CID_LENGTH)
            token = self._retry_tokens.issue(address, header.destination_cid, scid, now)
            if self._respond(encode_retry(header, scid, token), address, now, "retry"):
                self._retries += 1
            return
        reason = self._refusal(key, now)
        if reason is not None:
            if self._respond(
                encode_initial_close(header, _CONNECTION_REFUSED), address, now, reason
            ):
                self._refused[reason] += 1
            return
        conn = Connection._for_endpoint(
            self._config,
            self,
            self._reset_token,
            now,
            original_destination_cid=odcid,
            retry_source_cid=retry_scid,
        )
        self._register(conn, address, handshaking=True, key=key)
        # The client's first Initials (and 0-RTT) still carry the destination id it chose.
        self._add_route(conn, header.destination_cid)
        self._accepted += 1
        self._feed(conn, data, address, now)

    def _wants_retry(self) -> bool:
        policy = self._limits.retry
        return policy == "always" or (
            policy == "under_load" and self._handshakes >= self._limits.retry_above_handshakes
        )

    def _refusal(self, key: str, now: float) -> str | None:
        """Why a new connection from ``key`` must be refused, or ``None`` to admit it."""
        limits = self._limits
        if self._lockouts is not None:
            locked = self._lockouts.peek(key)
            if locked is not None and now < locked[0]:
                return "auth lockout"
        return refusal(
            limits,
            key,
            now,
            connections=len(self._entries),
            from_key=self._per_address[key],
            handshakes=self._handshakes,
            new_connections=self._new_connections,
        )

    def _unknown_short_header(self, data: bytes, address: Address, now: float) -> None:
        # A stateless reset from a peer arrives with a destination id we never issued.
        for conn in tuple(self._by_remote.get(address, ())):
            self._feed(conn, data, address, now)
            if conn.state is ConnectionState.CLOSED:
                return
        if len(data) <= _MIN_RESET:
            self._dropped["unknown connection"] += 1
            return
        if self._address_allows(address, now) is None:
            return
        header = parse_header(data)
        assert header is not None  # the caller parsed it already
        size = min(len(data) - 1, _MAX_RESET)
        filler = secrets.token_bytes(size - 16)
        reset = encode_stateless_reset(self._reset_token(header.destination_cid), filler)
        if self._respond(reset, address, now, "stateless reset"):
            self._resets += 1

    def _feed(self, conn: Connection, data: bytes, address: Address, now: float) -> None:
        try:
            conn.receive_datagram(data, address, now)
        except Exception as exc:
            self._internal_error(conn, exc)
        self._dirty[conn] = None
        # Its timer is brought up to date after the datagrams_to_send() that follows (by
        # timer()): computing it here too would cost an engine pass per datagram.
        self._after(conn, timer=False)

    def _refresh_timers(self) -> None:
        """Update the timers of connections with news or sends since they were last worked out."""
        self._refresh_stale()
        if self._dirty:
            for conn in list(self._dirty):
                self._after(conn)

    def _refresh_stale(self) -> None:
        """Update the timers of connections that sent since they were last worked out."""
        if self._stale:
            stale, self._stale = self._stale, {}
            for conn in stale:
                self._after(conn)

    def _internal_error(self, conn: Connection, exc: Exception) -> None:
        """The core raised handling ``conn``: close that one connection, keep serving the rest.

        A peer must never be able to stop the caller's I/O loop; the exception
        is kept for the runtime to log, and counted so tests can insist on zero.
        """
        self._internal_errors += 1
        self.last_internal_error = exc
        try:
            conn._close_locally(CloseCode.INTERNAL_ERROR, "internal error")
        except Exception:
            conn._terminate(
                Terminated(CloseCode.INTERNAL_ERROR, "internal error", ClosedBy.LOCAL, True)
            )

    def _reset_token(self, cid: bytes) -> bytes:
        return hmac.new(self._reset_key, cid, hashlib.sha256).digest()[:16]

    # -- bookkeeping ------------------------------------------------------------

    def _register(
        self, conn: Connection, remote: Address, *, handshaking: bool, key: str | None = None
    ) -> None:
        limits = self._limits
        key = key or address_key(remote, limits.ipv4_prefix, limits.ipv6_prefix)
        self._entries[conn] = _Entry(conn, remote, key, handshaking)
        self._per_address[key] += 1
        if handshaking:
            self._handshakes += 1
        self._by_remote.setdefault(remote, set()).add(conn)
        engine = conn._engine
        assert engine is not None
        self._add_route(conn, engine.host_cid)

    def _add_route(self, conn: Connection, cid: bytes) -> None:
        self._entries[conn].cids.add(cid)
        self._routes[cid] = conn

    def _after(self, conn: Connection, *, timer: bool = True) -> None:
        """Bring the tables up to date after anything happened to ``conn`` (its timer
        too, unless ``timer`` is False)."""
        entry = self._entries.get(conn)
        if entry is None:
            return
        if conn._events and not entry.queued_for_events:
            entry.queued_for_events = True
            self._event_queue.append(conn)
        if entry.handshaking and conn.state is not ConnectionState.HANDSHAKING:
            entry.handshaking = False
            self._handshakes -= 1
        if conn.state is ConnectionState.CLOSED:
            self._forget(conn, entry)
            return
        if not timer:
            return
        deadline = conn.timer()
        if deadline != entry.deadline:
            entry.deadline = deadline
            if deadline is not None:
                self._heap_seq += 1
                heapq.heappush(self._heap, (deadline, self._heap_seq, entry))
                if len(self._heap) > 2 * len(self._entries) + 64:
                    self._compact_heap()

    def _compact_heap(self) -> None:
        """Drop stale heap entries, which pile up as busy connections move their timers."""
        self._heap = [
            item for item in self._heap if item[2].conn is not None and item[2].deadline == item[0]
        ]
        heapq.heapify(self._heap)

    def _forget(self, conn: Connection, entry: _Entry) -> None:
        del self._entries[conn]
        entry.conn = entry.deadline = None
        for cid in entry.cids:
            if self._routes.get(cid) is conn:
                del self._routes[cid]
        self._per_address[entry.address_key] -= 1
        if not self._per_address[entry.address_key]:
            del self._per_address[entry.address_key]
        if entry.handshaking:
            self._handshakes -= 1
        peers = self._by_remote[entry.remote]
        peers.discard(conn)
        if not peers:
            del self._by_remote[entry.remote]
        self._dirty.pop(conn, None)
        self._stale.pop(conn, None)
