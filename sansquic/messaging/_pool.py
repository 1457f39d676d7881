"""Client pool decisions keyed by ``(host, port)``: reuse, dial, or wait for the breaker."""

from __future__ import annotations

from typing import Generic, TypeVar

import attrs

from ._reconnect import CircuitBreaker

__all__ = ["Dial", "Pool", "PoolStats", "Reuse", "Wait"]

T = TypeVar("T")
Key = tuple[str, int]


@attrs.frozen(slots=True)
class Reuse(Generic[T]):
    """Use this open connection."""

    connection: T


@attrs.frozen(slots=True)
class Dial:
    """Open a new connection, then report :meth:`Pool.connected` or :meth:`Pool.failed`."""


@attrs.frozen(slots=True)
class Wait:
    """The breaker for this key is open: try again at ``until``."""

    until: float


@attrs.define(kw_only=True)
class PoolStats:
    """Counters for one key."""

    reuses: int = 0
    dials: int = 0
    failures: int = 0
    refusals: int = 0  # choices answered with Wait


class Pool(Generic[T]):
    """One live connection per ``(host, port)``, a circuit breaker each, and stats.

    It never touches a connection: the runtime dials, closes and reports back.
    """

    def __init__(self, *, threshold: int = 5, cooldown: float = 10.0) -> None:
        self._threshold, self._cooldown = threshold, cooldown
        self._live: dict[Key, T] = {}
        self._breakers: dict[Key, CircuitBreaker] = {}
        self._stats: dict[Key, PoolStats] = {}

    def choose(self, key: Key, now: float) -> Reuse[T] | Dial | Wait:
        """What to do to talk to ``key`` now."""
        stats = self.stats(key)
        if key in self._live:
            stats.reuses += 1
            return Reuse(self._live[key])
        breaker = self._breaker(key)
        if breaker.allow(now):
            stats.dials += 1
            return Dial()
        stats.refusals += 1
        return Wait(breaker.retry_at(now) or now)

    def connected(self, key: Key, connection: T, now: float) -> None:
        """A dial worked: ``connection`` is the one to reuse."""
        self._live[key] = connection
        self._breaker(key).record_success(now)

    def failed(self, key: Key, now: float) -> None:
        """A dial failed."""
        self.stats(key).failures += 1
        self._breaker(key).record_failure(now)

    def lost(self, key: Key, connection: T) -> None:
        """``connection`` closed: the next :meth:`choose` dials (unless another replaced it)."""
        if self._live.get(key) is connection:
            del self._live[key]

    def stats(self, key: Key) -> PoolStats:
        """The counters for ``key``."""
        return self._stats.setdefault(key, PoolStats())

    def _breaker(self, key: Key) -> CircuitBreaker:
        breaker = self._breakers.get(key)
        if breaker is None:
            breaker = self._breakers[key] = CircuitBreaker(
                threshold=self._threshold, cooldown=self._cooldown
            )
        return breaker

    def __len__(self) -> int:
        return len(self._live)
