"""How much a connection keeps in flight: about twice the path's bandwidth-delay product.

The engine's congestion controller (Reno or CUBIC) grows its window until
packets are lost. On a path that loses nothing, such as loopback, that means
megabytes in flight, queued in the receiver's socket buffer ahead of anything
sent later: a CRITICAL message then waits behind milliseconds of LOW data the
scheduler already let go. Priorities only hold for data not yet sent, so the
core sends no more than the path needs to stay full.

The estimate follows BBR's (RFC 9406 draft, "cwnd gain"): the bottleneck rate
is the largest delivery rate of the last few minimum round trips, and the limit
is ``GAIN`` times that rate times the minimum round trip, never below
``FLOOR_PACKETS`` packets. Queued data then stays under about one minimum
round trip. Delivered bytes are the bytes sent less those in flight; lost
bytes count as delivered, which errs towards a larger limit, never a stall.

Pure state: fed the clock, the byte counts and the minimum RTT.
"""

from __future__ import annotations

#: In flight at most this many times the estimated bandwidth-delay product.
GAIN = 2.0
#: Never less than this many full packets in flight (the engine's initial window).
FLOOR_PACKETS = 10
#: Delivery-rate samples the bottleneck estimate takes the maximum over.
SAMPLES = 10
#: The shortest interval a rate sample spans, seconds (clock granularity).
MIN_INTERVAL = 0.0005


class InflightLimit:
    """The bytes-in-flight limit for one connection (see the module docstring)."""

    __slots__ = ("_mark", "_rates")

    def __init__(self) -> None:
        # The last SAMPLES rates; a list, not a bounded deque, which would cost
        # 760 bytes on every connection from its first moment.
        self._rates: list[float] = []
        self._mark: tuple[float, int] | None = None  # (time, delivered) of the last sample

    def update(self, now: float, delivered: int, rtt_min: float | None) -> None:
        """Take a rate sample once a minimum round trip has passed since the last."""
        mark = self._mark
        if mark is None or rtt_min is None:
            self._mark = (now, delivered)
            return
        elapsed = now - mark[0]
        if elapsed >= max(rtt_min, MIN_INTERVAL):
            rates = self._rates
            rates.append(max(0, delivered - mark[1]) / elapsed)
            if len(rates) > SAMPLES:
                del rates[0]
            self._mark = (now, delivered)

    def limit(self, rtt_min: float | None, packet_size: int) -> int | None:
        """Bytes that may be in flight now, or ``None`` before there is an estimate."""
        if rtt_min is None or not self._rates:
            return None
        return max(FLOOR_PACKETS * packet_size, int(GAIN * max(self._rates) * rtt_min))
