"""Reconnect decisions: exponential backoff with jitter, and a circuit breaker."""

from __future__ import annotations

import enum
import random

from .._errors import LocalProtocolError

__all__ = ["Backoff", "BreakerState", "CircuitBreaker"]


class Backoff:
    """Exponential backoff with "full jitter": attempt ``n`` waits a uniform draw from
    ``[0, min(cap, base * factor**n)]``. The RNG is passed in, so a seed replays exactly."""

    def __init__(
        self,
        rng: random.Random,
        *,
        base: float = 0.1,
        factor: float = 2.0,
        cap: float = 30.0,
    ) -> None:
        if not (base > 0 and factor >= 1 and cap >= base):
            raise LocalProtocolError("Backoff needs base > 0, factor >= 1 and cap >= base")
        self._rng = rng
        self.base: float = base
        self.factor: float = factor
        self.cap: float = cap
        #: Failed attempts since the last success.
        self.attempt: int = 0

    def ceiling(self, attempt: int) -> float:
        """The largest delay attempt ``attempt`` may wait (no jitter)."""
        # Capping the exponent keeps factor**attempt from overflowing a float.
        return min(self.cap, self.base * self.factor ** min(attempt, 1000))

    def next_delay(self) -> float:
        """The delay before the next attempt; counts one more failure."""
        delay = self._rng.uniform(0.0, self.ceiling(self.attempt))
        self.attempt += 1
        return delay

    def reset(self) -> None:
        """A connection succeeded: the next failure starts from ``base`` again."""
        self.attempt = 0


class BreakerState(enum.Enum):
    """A circuit breaker's state."""

    CLOSED = "closed"  # calls go through
    OPEN = "open"  # calls are refused until the cool-down ends
    HALF_OPEN = "half_open"  # one trial call is allowed


class CircuitBreaker:
    """Opens after ``threshold`` failures in a row, refuses calls for ``cooldown`` seconds,
    then lets one trial through (half-open): success closes it, failure opens it again.
    Time is passed in."""

    def __init__(self, *, threshold: int = 5, cooldown: float = 10.0) -> None:
        if threshold < 1 or cooldown < 0:
            raise LocalProtocolError("CircuitBreaker needs threshold >= 1 and cooldown >= 0")
        self.threshold: int = threshold
        self.cooldown: float = cooldown
        self._failures = 0
        self._opened_at: float | None = None
        self._trial = False

    def state(self, now: float) -> BreakerState:
        """The state at ``now``."""
        if self._opened_at is None:
            return BreakerState.CLOSED
        if now - self._opened_at >= self.cooldown:
            return BreakerState.HALF_OPEN
        return BreakerState.OPEN

    def allow(self, now: float) -> bool:
        """True when a call may go ahead now; in half-open, only the first caller gets True
        until its result is recorded."""
        state = self.state(now)
        if state is BreakerState.CLOSED:
            return True
        if state is BreakerState.HALF_OPEN and not self._trial:
            self._trial = True
            return True
        return False

    def retry_at(self, now: float) -> float | None:
        """When an open breaker lets a trial through, or ``None`` when it is not open."""
        if self.state(now) is not BreakerState.OPEN or self._opened_at is None:
            return None
        return self._opened_at + self.cooldown

    def record_success(self, now: float) -> None:
        """The call worked: close the breaker."""
        self._failures, self._opened_at, self._trial = 0, None, False

    def record_failure(self, now: float) -> None:
        """The call failed: count it, and open at the threshold (or at once when half-open)."""
        self._failures += 1
        if self._trial or self._failures >= self.threshold:
            self._opened_at, self._trial = now, False
