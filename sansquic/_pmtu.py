"""Datagram packetization-layer path MTU discovery (RFC 8899, as QUIC uses it).

Every connection starts at QUIC's 1200-byte floor, which any path must carry.
Once the handshake is done the core probes larger sizes with padded PING
packets; a probe the peer acknowledges proves the path carries that size, a
probe unacknowledged within its timeout counts as too big, but only if the
path delivered other packets meanwhile (else the timeout says nothing: an
outage must not make every size look too big). The search tries
the ceiling first (loopback and jumbo paths carry it, so they are done in one
round trip), then halves the gap between the largest size known to work and
the smallest known to fail. Lost probes say nothing about congestion, so the
engine does not count them in flight.

The search waits for :meth:`PathMtuSearch.start`: the connection starts it
once it has sent enough to gain from larger packets, so idle and chatty
connections never pay for probes (nor for the large buffers they need).

Pure state: the connection asks :meth:`PathMtuSearch.probe` what to send,
reports acknowledgements and the clock, and applies :attr:`size`.
"""

from __future__ import annotations

#: The UDP payload every QUIC path must carry (RFC 9000 section 14).
BASE = 1200
#: Attempts at one size before it counts as too big (RFC 8899's MAX_PROBES is 3;
#: two keep a 1500-byte path's search under a couple of seconds).
MAX_PROBES = 2
#: The search stops once the gap between working and failing sizes is this small.
GRANULARITY = 32
#: Seconds after a finished search before one more look for a larger size
#: (RFC 8899 section 5.1.1, PMTU_RAISE_TIMER).
RAISE_INTERVAL = 600.0
#: The least a probe waits for its acknowledgement, seconds (the peer may
#: delay its ACK by up to 25 ms, and the round trip comes on top).
MIN_PROBE_TIMEOUT = 0.1


class PathMtuSearch:
    """The search for the largest UDP payload a path carries, from ``BASE`` up to ``ceiling``."""

    def __init__(self, ceiling: int) -> None:
        if ceiling < BASE:
            raise ValueError(f"ceiling must be >= {BASE}, not {ceiling}")
        self._ceiling = ceiling
        #: The largest payload confirmed on this path: what packets may use.
        self.size = BASE
        self._too_big = ceiling + 1  # the smallest size known to fail
        self._probing: int | None = None
        self._acked_at_send = 0  # the engine's acknowledged-packet count then
        self._timeout = MIN_PROBE_TIMEOUT
        self._attempts = 0
        self._deadline: float | None = None
        self._search_at: float | None = None  # when to look for a probe to send
        self.started = False
        #: Probes sent, acknowledged and given up on (for stats and tests).
        self.probes_sent = 0
        self.probes_acked = 0
        self.probes_lost = 0

    def start(self, now: float) -> None:
        """Begin the search (idempotent)."""
        if not self.started:
            self.started = True
            self._search_at = now

    @property
    def searching(self) -> bool:
        return self._search_at is not None or self._probing is not None

    def _candidate(self) -> int | None:
        if self._too_big - self.size <= GRANULARITY:
            return None
        if self._too_big > self._ceiling:
            return self._ceiling  # nothing failed yet: the ceiling may just work
        return (self.size + self._too_big) // 2

    def probe(self, now: float, pto: float | None, acked: int = 0) -> int | None:
        """The size of a probe to send now, or ``None``.

        ``pto``: the engine's probe timeout (the probe waits twice that, at least
        ``MIN_PROBE_TIMEOUT``); ``acked``: its count of acknowledged packets so far.
        """
        if self._probing is not None or self._search_at is None or now < self._search_at:
            return None
        size = self._candidate()
        if size is None:
            self._search_at = now + RAISE_INTERVAL  # done: look again much later
            self._too_big = self._ceiling + 1
            return None
        self._probing, self._acked_at_send = size, acked
        timeout = MIN_PROBE_TIMEOUT if pto is None else max(MIN_PROBE_TIMEOUT, 2 * pto)
        self._deadline, self._timeout = now + timeout, timeout
        self.probes_sent += 1
        return size

    def defer(self, until: float) -> None:
        """Send no probe before ``until`` (the path is in doubt; the timer must not
        stay in the past meanwhile)."""
        if self._probing is None and self._search_at is not None and self._search_at < until:
            self._search_at = until

    def cancel(self, now: float) -> None:
        """The probe :meth:`probe` asked for could not be sent: it proves nothing."""
        if self._probing is not None:
            self.probes_sent -= 1
            self._probing = self._deadline = None
            self._search_at = now + MIN_PROBE_TIMEOUT

    def acked(self, size: int, now: float) -> bool:
        """A probe of ``size`` was acknowledged; whether :attr:`size` grew."""
        if size != self._probing:
            # A probe given up on, acknowledged late: it still proves the size.
            grew = self.size < size < self._too_big
            if grew:
                self.size = size
            return grew
        self.probes_acked += 1
        self._probing = self._deadline = None
        self._attempts = 0
        self._search_at = now  # go on at once
        grew = size > self.size
        self.size = max(self.size, size)
        return grew

    def timer(self) -> float | None:
        """When :meth:`on_timer` must next run (a probe's deadline or the next search)."""
        if self._deadline is not None:
            return self._deadline
        return self._search_at

    def on_timer(self, now: float, acked: int = 0) -> None:
        """Give up on a probe past its deadline. It counts against its size only if
        the path delivered since (``acked``, the engine's count, grew); after
        ``MAX_PROBES`` such losses the size is too big."""
        if self._deadline is None or now < self._deadline:
            return
        assert self._probing is not None
        self.probes_lost += 1
        if acked > self._acked_at_send:
            self._attempts += 1
            if self._attempts >= MAX_PROBES:
                self._too_big = self._probing
                self._attempts = 0
            self._search_at = now
        else:
            self._search_at = now + self._timeout  # the path is silent: wait, then retry
        self._probing = self._deadline = None

    def reset(self, now: float) -> None:
        """Back to ``BASE`` and search again: the path changed or stopped carrying
        :attr:`size` (a black hole, RFC 8899 section 4.3)."""
        self.size = BASE
        self._too_big = self._ceiling + 1
        self._probing = self._deadline = None
        self._attempts = 0
        self._search_at = now
