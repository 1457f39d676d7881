"""Pure rate limiting: token buckets, concurrency counters, keyed limiters with bounded memory.

Nothing here reads a clock: every method that depends on time takes ``now``.
:class:`RateLimits` is the admission and per-connection policy a
:class:`~sansquic.Config` carries; the other classes are the building blocks,
usable on their own.
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Generic, Literal, TypeVar

import attrs

from ._errors import ConfigError
from ._validators import int_in, one_of, positive, positive_or_none

__all__ = [
    "ConcurrencyLimit",
    "KeyedLimiter",
    "RateLimits",
    "TokenBucket",
    "address_key",
    "refusal",
]

T = TypeVar("T")


class TokenBucket:
    """``rate`` tokens per second, holding at most ``burst``; starts full.

    ``allow(now)`` takes one token if there is one. ``take(now, n)`` takes up
    to ``n`` and says how many it got. ``ready_at(n)`` tells when ``n`` tokens
    will be there, for a caller that must wake up to use them.
    """

    __slots__ = ("_stamp", "_tokens", "burst", "rate")

    def __init__(self, rate: float, burst: float, now: float = 0.0) -> None:
        if not rate > 0 or not burst >= 1:
            raise ConfigError(f"a token bucket needs rate > 0 and burst >= 1, not {rate}, {burst}")
        self.rate: float = float(rate)
        self.burst: float = float(burst)
        self._tokens = float(burst)
        self._stamp = now

    def _refill(self, now: float) -> None:
        if now > self._stamp:
            self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
            self._stamp = now

    def tokens(self, now: float) -> float:
        """Tokens available at ``now``."""
        self._refill(now)
        return self._tokens

    def allow(self, now: float, cost: float = 1.0) -> bool:
        """Take ``cost`` tokens if available; True when taken."""
        self._refill(now)
        if self._tokens >= cost:
            self._tokens -= cost
            return True
        return False

    def take(self, now: float, wanted: int) -> int:
        """Take up to ``wanted`` whole tokens; return how many were taken."""
        self._refill(now)
        got = min(wanted, int(self._tokens))
        self._tokens -= got
        return max(got, 0)

    def ready_at(self, now: float, wanted: float = 1.0) -> float:
        """When ``wanted`` tokens will be available (``now`` if they already are)."""
        self._refill(now)
        missing = min(wanted, self.burst) - self._tokens
        return now if missing <= 0 else now + missing / self.rate

    def full_at(self, now: float) -> float:
        """When the bucket will be full again: until then it carries state worth keeping."""
        return self.ready_at(now, self.burst)


class ConcurrencyLimit:
    """Counts things in progress against a maximum."""

    __slots__ = ("current", "maximum")

    def __init__(self, maximum: int) -> None:
        self.maximum: int = maximum
        self.current: int = 0

    def try_acquire(self) -> bool:
        """Count one more if under the maximum; True when counted."""
        if self.current >= self.maximum:
            return False
        self.current += 1
        return True

    def release(self) -> None:
        """Count one fewer."""
        if self.current <= 0:
            raise RuntimeError("released more than was acquired")
        self.current -= 1


class KeyedLimiter(Generic[T]):
    """One limiter per key, holding at most ``max_keys`` of them.

    When full, the least recently used key is evicted to make room, so a
    flood from a million source addresses costs ``max_keys`` entries, not a
    million. Eviction forgets that key's history: with ``max_keys`` well
    above the number of honest clients, only flooders lose state.
    """

    def __init__(self, factory: Callable[[float], T], max_keys: int) -> None:
        if max_keys < 1:
            raise ConfigError("a keyed limiter needs max_keys >= 1")
        self._factory = factory
        self._max_keys = max_keys
        self._items: OrderedDict[Any, T] = OrderedDict()
        #: How many keys were evicted to make room.
        self.evictions: int = 0

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: Any, now: float) -> T:
        """The limiter for ``key``, created on first use."""
        items = self._items
        item = items.get(key)
        if item is None:
            if len(items) >= self._max_keys:
                items.popitem(last=False)
                self.evictions += 1
            item = items[key] = self._factory(now)
        else:
            items.move_to_end(key)
        return item

    def peek(self, key: Any) -> T | None:
        """The limiter for ``key`` if there is one; creates nothing, reorders nothing."""
        return self._items.get(key)

    def discard(self, key: Any) -> None:
        """Forget ``key``."""
        self._items.pop(key, None)


def address_key(address: tuple[str, int], ipv4_prefix: int = 32, ipv6_prefix: int = 128) -> str:
    """The limiter key for an address: its network at the given prefix length.

    With the defaults every address is its own key; ``ipv4_prefix=24`` and
    ``ipv6_prefix=64`` group a /24 or a /64 together. Names that are not IP
    addresses (as on a simulated network) are their own key.
    """
    host = address[0]
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host
    prefix = ipv4_prefix if ip.version == 4 else ipv6_prefix
    if prefix >= ip.max_prefixlen:
        return str(ip)
    return str(ipaddress.ip_network((ip, prefix), strict=False))


def refusal(
    limits: RateLimits,
    key: str,
    now: float,
    *,
    connections: int,
    from_key: int,
    handshakes: int,
    new_connections: KeyedLimiter[TokenBucket] | None,
) -> str | None:
    """Why a new connection from address ``key`` must be refused under ``limits``, or
    None to admit it: the decision the QUIC Endpoint and the WebSocket server share.

    ``connections``, ``from_key`` and ``handshakes`` are what is open now; a new
    connection takes a token of ``new_connections`` only once the rest allow it.
    """
    if limits.max_connections is not None and connections >= limits.max_connections:
        return "connections"
    per_address = limits.max_connections_per_address
    if per_address is not None and from_key >= per_address:
        return "connections per address"
    if limits.max_handshakes is not None and handshakes >= limits.max_handshakes:
        return "handshakes"
    if new_connections is not None and not new_connections.get(key, now).allow(now):
        return "new connection rate"
    return None


@attrs.frozen(kw_only=True)
class RateLimits:
    """Admission and per-connection limits; ``None`` turns a limit off.

    Admission (applied by a server :class:`~sansquic.Endpoint`), in order of
    defence: an Initial from an address that has not proved it owns it gets a
    Retry (``retry="always"``, or ``"under_load"`` once
    ``retry_above_handshakes`` handshakes are in progress); an Initial beyond a
    limit is refused with CONNECTION_REFUSED; and when even those answers
    exceed ``responses_per_second``, datagrams are dropped silently. Every
    decision is counted in ``Endpoint.stats()``.

    Per connection (applied to the peer by every :class:`~sansquic.Connection`):
    stream credit is granted at ``peer_streams_per_second`` and connection
    flow-control credit at ``peer_bytes_per_second``, so the peer simply cannot
    go faster; datagrams beyond ``peer_datagrams_per_second`` are dropped, and
    a peer that keeps that up for ``violation_grace`` seconds is closed with
    :attr:`~sansquic.CloseCode.RATE_LIMITED`.

    The WebSocket server (:class:`sansquic.websocket.Admission`) applies the same
    connection, handshake and new-connection limits, answering a refusal with
    HTTP 503 or 429 before the upgrade, plus the two ``websocket_*`` limits.
    """

    #: Connections at once, over all addresses.
    max_connections: int | None = attrs.field(default=10_000, validator=positive_or_none)
    #: Connections at once from one address key (see the prefixes below).
    max_connections_per_address: int | None = attrs.field(default=64, validator=positive_or_none)
    #: New connections per second from one address key (burst: the same number).
    new_connections_per_second: float | None = attrs.field(default=20.0, validator=positive_or_none)
    #: TLS handshakes in progress at once.
    max_handshakes: int | None = attrs.field(default=1_000, validator=positive_or_none)
    #: Datagrams per second from one address key that match no connection.
    prehandshake_datagrams_per_second: float | None = attrs.field(
        default=100.0, validator=positive_or_none
    )
    #: Retry, Version Negotiation, refusal and stateless reset packets per second, in all.
    responses_per_second: float = attrs.field(default=1_000.0, validator=positive_or_none)
    #: When to answer an unvalidated Initial with Retry.
    retry: Literal["never", "always", "under_load"] = attrs.field(
        default="under_load", validator=one_of("never", "always", "under_load")
    )
    #: Handshakes in progress above which ``retry="under_load"`` sends Retry.
    retry_above_handshakes: int = attrs.field(default=100, validator=int_in(0, 10**9))
    #: Seconds a Retry token stays valid.
    retry_token_lifetime: float = attrs.field(default=10.0, validator=positive_or_none)
    #: Prefix lengths that group addresses into one key.
    ipv4_prefix: int = attrs.field(default=32, validator=int_in(0, 32))
    ipv6_prefix: int = attrs.field(default=64, validator=int_in(0, 128))
    #: Keys each per-address limiter keeps at most (bounded memory under floods).
    max_tracked_addresses: int = attrs.field(default=65_536, validator=int_in(1, 10**8))
    #: New streams the peer may open per second (beyond the initial credit).
    peer_streams_per_second: float | None = attrs.field(default=None, validator=positive_or_none)
    #: Stream bytes the peer may send per second (beyond the initial window).
    peer_bytes_per_second: float | None = attrs.field(default=None, validator=positive_or_none)
    #: Datagrams (RFC 9221) the peer may send per second.
    peer_datagrams_per_second: float | None = attrs.field(default=None, validator=positive_or_none)
    #: Seconds of sustained datagram excess before the connection is closed.
    violation_grace: float = attrs.field(default=2.0, validator=positive_or_none)
    #: (WebSocket) Seconds for the TLS handshake, the upgrade request and auth together.
    websocket_handshake_timeout: float = attrs.field(default=10.0, validator=positive)
    #: (WebSocket) Bytes of upgrade request head (request line and headers) accepted; more
    #: is answered with HTTP 431. wsproto itself refuses heads over 16 KiB.
    websocket_max_header_bytes: int = attrs.field(default=8 * 1024, validator=int_in(256, 16_384))
