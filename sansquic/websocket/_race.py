"""The "happy eyeballs" decision between QUIC and the WebSocket fallback, in pure code.

QUIC starts first. The WebSocket attempt starts ``delay`` seconds later, or at
once when QUIC fails first. The first attempt to complete wins; the other is
to be abandoned (or closed, if it completes later). Time is passed in; the
runtime starts what :meth:`Race.to_start` names, abandons what
:meth:`Race.to_abandon` names, and looks again at :meth:`Race.timer`.
"""

from __future__ import annotations

import enum

from .._errors import LocalProtocolError

__all__ = ["Race", "Transport"]


class Transport(enum.Enum):
    """A way to reach the server."""

    QUIC = "quic"
    WEBSOCKET = "websocket"


class Race:
    """One connection attempt over both transports, decided as events come in."""

    def __init__(self, now: float, *, delay: float = 0.25, timeout: float = 10.0) -> None:
        # "not >=" also refuses NaN.
        if not delay >= 0 or not timeout > 0 or timeout == float("inf"):
            raise LocalProtocolError(
                f"need delay >= 0 and a finite timeout > 0: {delay}, {timeout}"
            )
        self._began = now
        self._ws_at = now + delay
        self._deadline = now + timeout
        self._started: list[Transport] = []
        self._running: set[Transport] = set()
        self._abandon: list[Transport] = []
        #: The transport that completed first, once one has.
        self.winner: Transport | None = None
        #: Why each failed attempt failed.
        self.errors: dict[Transport, BaseException] = {}
        self._timed_out = False

    @property
    def done(self) -> bool:
        """Decided: a winner, every attempt failed, or the timeout passed."""
        if self.winner is not None or self._timed_out:
            return True
        return len(self._started) == 2 and not self._running

    @property
    def timed_out(self) -> bool:
        """Whether the race ended because no attempt completed in time."""
        return self._timed_out

    def to_start(self, now: float) -> list[Transport]:
        """The attempts to start now (each is named once). Next: :meth:`timer`."""
        self.handle_timer(now)
        if self.done:
            return []
        due: list[Transport] = []
        if Transport.QUIC not in self._started:
            due.append(Transport.QUIC)
        if Transport.WEBSOCKET not in self._started and (
            now >= self._ws_at or Transport.QUIC in self.errors
        ):
            due.append(Transport.WEBSOCKET)
        self._started.extend(due)
        self._running.update(due)
        return due

    def timer(self) -> float | None:
        """When to call :meth:`to_start` again (None once decided)."""
        if self.done:
            return None
        if Transport.WEBSOCKET not in self._started:
            return min(self._ws_at, self._deadline)
        return self._deadline

    def handle_timer(self, now: float) -> None:
        """Past the timeout with no winner: the race is lost; running attempts are abandoned."""
        if self.winner is None and not self._timed_out and now >= self._deadline:
            self._timed_out = True
            self._abandon.extend(sorted(self._running, key=lambda t: t.value))

    def succeeded(self, transport: Transport, now: float) -> bool:
        """``transport`` completed: whether it wins (if not, close what it opened)."""
        self._finish(transport)
        self.handle_timer(now)
        if self.winner is None and not self._timed_out:
            self.winner = transport
            self._abandon.extend(sorted(self._running, key=lambda t: t.value))
            return True
        return False

    def failed(self, transport: Transport, now: float, error: BaseException) -> None:
        """``transport`` failed with ``error`` (QUIC failing starts the WebSocket at once)."""
        self._finish(transport)
        self.errors[transport] = error
        self.handle_timer(now)

    def to_abandon(self) -> list[Transport]:
        """Attempts still running that can no longer win (each is named once)."""
        out, self._abandon = self._abandon, []
        return out

    def _finish(self, transport: Transport) -> None:
        if transport not in self._running:
            raise LocalProtocolError(f"{transport.value} is not a running attempt")
        self._running.discard(transport)
