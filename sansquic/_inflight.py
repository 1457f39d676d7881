"""How much a connection keeps in flight while priorities compete: a little over
one bandwidth-delay product.

The engine's congestion controller (Reno or CUBIC) grows its window until
packets are lost. On a path that loses nothing, such as loopback, that means
megabytes in flight, queued in the receiver's socket buffer ahead of anything
sent later: a CRITICAL message then waits behind milliseconds of LOW data the
scheduler already let go. Priorities only hold for data not yet sent, so the
core sends no more than the path needs to stay full.

The estimate follows BBR (RFC 9406 draft): the bottleneck rate is the
second largest delivery rate of the last ``SAMPLES`` samples (one sample per
round trip; the largest alone is often a burst of acknowledgements), and the
limit is a gain times that rate times the minimum round trip, never below
the floor. While the estimate still grows (startup) the gain is
``STARTUP_GAIN``; once ``PLATEAU_SAMPLES`` samples in a row raised it by less
than ``GROWTH``, the gain cycles through ``CYCLE``, one step per sample: one
step higher to find a faster path, one lower to drain what that queued.
What waits ahead of a late CRITICAL message is then about a quarter of a
minimum round trip's worth of data, where a fixed gain of 2 kept a whole one.

A sample taken while the sender ran out of data or of flow-control credit
(app-limited) says nothing about the path, so it only counts if it raises
the estimate: a quiet spell must not make the next burst start from the
floor. Samples the limit itself held back do count, as in BBR: that is how
the estimate follows a path that got slower. A round trip that stays above
the minimum (a new route) shrinks the limit until the engine's minimum RTT,
taken over the last 10-20 s, catches up.

Delivered bytes are the bytes sent less those in flight; lost bytes count as
delivered, which errs towards a larger limit, never a stall. Pure state: fed
the clock, the byte counts and the minimum RTT.
"""

from __future__ import annotations

#: The gain while the estimate still grows by ``GROWTH`` per sample (BBR's startup).
STARTUP_GAIN = 2.0
#: The gains after startup, one per sample in turn (BBR's ProbeBW cycle, with a
#: quarter of headroom on top: without pacing the limit itself is what holds).
CYCLE = (1.5, 1.0, 1.25, 1.25, 1.25, 1.25, 1.25, 1.25)
#: Startup ends once this many samples in a row raised the estimate by less than GROWTH.
PLATEAU_SAMPLES = 3
GROWTH = 1.25
#: Never less than this many bytes in flight (BBR's minimum window, 4 x 1200) ...
FLOOR_BYTES = 4_800
#: ... nor fewer than this many full packets, so large packets still overlap.
FLOOR_PACKETS = 2
#: Delivery-rate samples the bottleneck estimate is taken from.
SAMPLES = 10
#: The shortest interval a rate sample spans, seconds (clock granularity).
MIN_INTERVAL = 0.0005
#: The minimum RTT is taken as at least this (seconds): one implausibly short
#: sample must not pin the limit to its floor.
MIN_RTT = 0.0001


class InflightLimit:
    """The bytes-in-flight limit for one connection (see the module docstring)."""

    __slots__ = ("_cycle", "_limited", "_mark", "_peak", "_plateau", "_rates")

    def __init__(self) -> None:
        # The last SAMPLES rates; a list, not a bounded deque, which would cost
        # 760 bytes on every connection from its first moment.
        self._rates: list[float] = []
        self._mark: tuple[float, int] | None = None  # (time, delivered) of the last sample
        self._limited = False  # app-limited since the last sample
        self._peak = 0.0  # the estimate startup last saw grow by GROWTH
        self._plateau = 0  # samples since; startup while below PLATEAU_SAMPLES
        self._cycle = 0  # the CYCLE step, after startup

    def note_limited(self) -> None:
        """The sender is held back by something other than the path (no data left
        to send, or no flow-control credit): the sample now being taken may raise
        the estimate, never lower it."""
        self._limited = True

    def update(
        self, now: float, delivered: int, rtt_min: float | None, rtt: float | None = None
    ) -> None:
        """Take a rate sample once a round trip (``rtt``, else the minimum) has passed
        since the last: over a shorter span, acknowledgements that come in bursts
        would make every other sample zero and the rest double."""
        mark = self._mark
        if mark is None or rtt_min is None:
            self._mark = (now, delivered)
            return
        elapsed = now - mark[0]
        if elapsed < max(rtt_min, rtt or 0.0, MIN_INTERVAL):
            return
        self._mark = (now, delivered)
        limited, self._limited = self._limited, False
        rate = max(0, delivered - mark[1]) / elapsed
        rates = self._rates
        if not (limited and rates and rate <= self.estimate):
            rates.append(rate)
            if len(rates) > SAMPLES:
                del rates[0]
        if self._plateau < PLATEAU_SAMPLES:
            estimate = self.estimate
            if estimate >= self._peak * GROWTH:
                self._peak, self._plateau = estimate, 0
            else:
                self._plateau += 1
        else:
            self._cycle = (self._cycle + 1) % len(CYCLE)

    @property
    def estimate(self) -> float:
        """The bottleneck rate, bytes per second: the second largest recent sample,
        so one burst of acknowledgements cannot set it alone."""
        rates = self._rates
        if len(rates) < 3:
            return max(rates, default=0.0)
        return sorted(rates)[-2]

    @property
    def gain(self) -> float:
        """The multiple of the bandwidth-delay product allowed now."""
        return STARTUP_GAIN if self._plateau < PLATEAU_SAMPLES else CYCLE[self._cycle]

    def limit(self, rtt_min: float | None, packet_size: int) -> int | None:
        """Bytes that may be in flight now, or ``None`` before there is an estimate."""
        if rtt_min is None or not self._rates:
            return None
        floor = max(FLOOR_BYTES, FLOOR_PACKETS * packet_size)
        return max(floor, int(self.gain * self.estimate * max(rtt_min, MIN_RTT)))
