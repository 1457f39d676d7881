"""How much a connection keeps in flight: about one bandwidth-delay product.

The engine's congestion controller (Reno or CUBIC) grows its window until
packets are lost. On a path that loses nothing, such as loopback, that means
megabytes in flight, queued in the receiver's socket buffer ahead of anything
sent later: a CRITICAL message then waits behind milliseconds of LOW data the
scheduler already let go. Priorities only hold for data not yet sent, so the
core sends no more than the path needs to stay full.

The estimate follows BBR (RFC 9406 draft): the bottleneck rate is the largest
delivery rate of the last few samples, one sample per minimum round trip, and
the limit is a gain times that rate times the minimum round trip, never below
the floor. While the estimate still grows (startup) the gain is
``STARTUP_GAIN``; once ``PLATEAU_SAMPLES`` samples in a row raised it by less
than ``GROWTH``, the gain cycles through ``CYCLE``, one step per sample: one
step above 1 to find a faster path, one below to drain what that queued, and
1 otherwise. So data queued ahead of a late CRITICAL message stays under about
a minimum round trip's worth, where a gain of 2 kept a whole one queued.

Samples taken while the sender had nothing waiting (app-limited) only count
when they raise the estimate: a quiet spell says nothing about the path, and
must not make the next burst start from the floor.

Delivered bytes are the bytes sent less those in flight; lost bytes count as
delivered, which errs towards a larger limit, never a stall. Pure state: fed
the clock, the byte counts and the minimum RTT.
"""

from __future__ import annotations

#: The gain while the estimate still grows by ``GROWTH`` per sample (BBR's startup).
STARTUP_GAIN = 2.0
#: The gains after startup, one per sample in turn (BBR's ProbeBW cycle).
CYCLE = (1.25, 0.75, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0)
#: Startup ends once this many samples in a row raised the estimate by less than GROWTH.
PLATEAU_SAMPLES = 3
GROWTH = 1.25
#: Never less than this many bytes in flight (BBR's minimum window, 4 x 1200) ...
FLOOR_BYTES = 4_800
#: ... nor fewer than this many full packets, so large packets still overlap.
FLOOR_PACKETS = 2
#: Delivery-rate samples the bottleneck estimate takes the maximum over.
SAMPLES = 10
#: The shortest interval a rate sample spans, seconds (clock granularity).
MIN_INTERVAL = 0.0005


class InflightLimit:
    """The bytes-in-flight limit for one connection (see the module docstring)."""

    __slots__ = ("_cycle", "_mark", "_peak", "_plateau", "_rates")

    def __init__(self) -> None:
        # The last SAMPLES rates; a list, not a bounded deque, which would cost
        # 760 bytes on every connection from its first moment.
        self._rates: list[float] = []
        self._mark: tuple[float, int] | None = None  # (time, delivered) of the last sample
        self._peak = 0.0  # the estimate startup last saw grow by GROWTH
        self._plateau = 0  # samples since; startup while below PLATEAU_SAMPLES
        self._cycle = 0  # the CYCLE step, after startup

    def update(
        self, now: float, delivered: int, rtt_min: float | None, *, app_limited: bool = False
    ) -> None:
        """Take a rate sample once a minimum round trip has passed since the last.

        ``app_limited``: the sender had nothing waiting to send, so the sample
        is only kept if it raises the estimate.
        """
        mark = self._mark
        if mark is None or rtt_min is None:
            self._mark = (now, delivered)
            return
        elapsed = now - mark[0]
        if elapsed < max(rtt_min, MIN_INTERVAL):
            return
        self._mark = (now, delivered)
        rate = max(0, delivered - mark[1]) / elapsed
        rates = self._rates
        if app_limited and rates and rate <= max(rates):
            return
        rates.append(rate)
        if len(rates) > SAMPLES:
            del rates[0]
        if self._plateau < PLATEAU_SAMPLES:
            estimate = max(rates)
            if estimate >= self._peak * GROWTH:
                self._peak, self._plateau = estimate, 0
            else:
                self._plateau += 1
        else:
            self._cycle = (self._cycle + 1) % len(CYCLE)

    @property
    def gain(self) -> float:
        """The multiple of the bandwidth-delay product allowed now."""
        return STARTUP_GAIN if self._plateau < PLATEAU_SAMPLES else CYCLE[self._cycle]

    def limit(self, rtt_min: float | None, packet_size: int) -> int | None:
        """Bytes that may be in flight now, or ``None`` before there is an estimate."""
        if rtt_min is None or not self._rates:
            return None
        floor = max(FLOOR_BYTES, FLOOR_PACKETS * packet_size)
        return max(floor, int(self.gain * max(self._rates) * rtt_min))
