"""A seeded, virtual-time network that drives sans-IO nodes (Connections, Endpoints)."""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable
from typing import Any, Protocol

import attrs

from .._engine import Address

__all__ = ["LinkConditions", "Node", "SimNetwork", "TraceRecord"]

# A timer can stay due after handle_timer(): aioquic computes a loss time as
# sent_time + delay but tests it as now - delay >= sent_time, and rounding can
# keep that false at exactly now. A real clock moves on; the virtual one moves
# by _TICK when a round at one instant changed nothing. Far more rounds than
# that at one instant mean a node that never settles: a bug worth raising.
_TICK = 1e-6
_MAX_ROUNDS_AT_ONE_INSTANT = 10_000


def _probability(instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{attribute.name} must be a probability in [0, 1], not {value!r}")


def _non_negative(instance: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if not value >= 0:
        raise ValueError(f"{attribute.name} must be >= 0, not {value!r}")


@attrs.frozen(kw_only=True)
class LinkConditions:
    """What a one-way link does to the datagrams that cross it."""

    #: One-way propagation delay, seconds.
    delay: float = attrs.field(default=0.005, validator=_non_negative)
    #: Extra delay drawn uniformly from [0, jitter] per datagram, seconds.
    jitter: float = attrs.field(default=0.0, validator=_non_negative)
    #: Probability that a datagram is lost.
    loss: float = attrs.field(default=0.0, validator=_probability)
    #: Probability that a datagram is delivered twice.
    duplicate: float = attrs.field(default=0.0, validator=_probability)
    #: Probability that a datagram is held back by ``reorder_delay``, letting later ones pass.
    reorder: float = attrs.field(default=0.0, validator=_probability)
    #: How long a reordered datagram is held back, seconds.
    reorder_delay: float = attrs.field(default=0.01, validator=_non_negative)
    #: Probability that one byte of a datagram is flipped.
    corrupt: float = attrs.field(default=0.0, validator=_probability)
    #: Bottleneck rate in bytes per second; ``None`` for unlimited.
    bandwidth: float | None = attrs.field(default=None)
    #: Bottleneck queue in bytes; datagrams that do not fit are dropped at the tail.
    queue_bytes: int = attrs.field(default=256 * 1024, validator=_non_negative)
    #: Largest UDP payload the link carries, bytes: 1472 is what a 1500-byte IPv4
    #: MTU leaves. Bigger datagrams are dropped (fate ``"too-big"``); ``None``: no limit.
    mtu: int | None = attrs.field(default=1472)

    def __attrs_post_init__(self) -> None:
        if self.bandwidth is not None and not self.bandwidth > 0:
            raise ValueError(f"bandwidth must be > 0 or None, not {self.bandwidth!r}")
        if self.mtu is not None and not self.mtu >= 1200:
            raise ValueError(f"mtu must be >= 1200 (QUIC's floor) or None, not {self.mtu!r}")


@attrs.frozen(slots=True)
class TraceRecord:
    """One datagram's fate: when it was sent, between whom, how big, what happened."""

    time: float
    source: Address
    destination: Address
    size: int
    #: ``"delivered"``, ``"lost"``, ``"too-big"``, ``"queue-full"``, ``"unroutable"``, or
    #: ``"delivered"`` plus ``+reordered``, ``+corrupted``, ``+duplicated``.
    fate: str


class Node(Protocol):
    """Anything the network can drive: the sans-IO datagram interface."""

    def receive_datagram(self, data: bytes, address: Address, now: float) -> None: ...

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]: ...

    def timer(self) -> float | None: ...

    def handle_timer(self, now: float) -> object: ...  # what it returns is ignored


class _Link:
    __slots__ = ("busy_until", "conditions", "random")

    def __init__(self, conditions: LinkConditions) -> None:
        self.conditions = conditions
        self.busy_until = 0.0
        c = conditions
        # A link with no random impairment draws no numbers: benchmarks on a
        # clean link then measure the nodes, not the simulator.
        self.random = any((c.jitter, c.loss, c.duplicate, c.reorder, c.corrupt))


class SimNetwork:
    """Nodes at addresses, one-way links between them, and a virtual clock.

    Every random choice comes from ``random.Random(seed)`` and is drawn in a
    fixed order per datagram, so the same seed and the same nodes give the
    same trace. Time only moves inside :meth:`run_until` / :meth:`run_for`,
    jumping straight to the next delivery or timer.
    """

    def __init__(
        self,
        seed: int = 0,
        *,
        conditions: LinkConditions | None = None,
        start: float = 0.0,
        keep_trace: bool = True,
    ) -> None:
        self._rng = random.Random(seed)
        self._default = conditions or LinkConditions()
        self._now = start
        self._nodes: dict[Address, Node] = {}  # keyed by the address a node was added at
        self._route: dict[Address, Address] = {}  # current public address -> node key
        self._public: dict[Address, Address] = {}  # node key -> current public address
        self._links: dict[tuple[Address, Address], _Link] = {}
        self._queue: list[tuple[float, int, Address, Address, bytes]] = []
        self._seq = 0
        #: Every datagram sent, in order (see :class:`TraceRecord`); stays empty
        #: with ``keep_trace=False``, for long runs.
        self.trace: list[TraceRecord] = []
        self._keep_trace = keep_trace
        #: Callables run at every step before the predicate, e.g. to drain events.
        self.step_hooks: list[Callable[[], None]] = []

    @property
    def now(self) -> float:
        """The virtual time, seconds."""
        return self._now

    def add(self, address: Address, node: Node) -> None:
        """Attach ``node`` at ``address``."""
        if address in self._route:
            raise ValueError(f"{address} is taken")
        self._nodes[address] = node
        self._route[address] = address
        self._public[address] = address

    def set_link(
        self, a: Address, b: Address, conditions: LinkConditions, *, both_ways: bool = True
    ) -> None:
        """Set the conditions from node ``a`` to node ``b`` (and back, by default)."""
        self._links[(a, b)] = _Link(conditions)
        if both_ways:
            self._links[(b, a)] = _Link(conditions)

    def rebind(self, address: Address, new_address: Address) -> None:
        """NAT rebinding: the node added at ``address`` now sends from ``new_address``.

        Datagrams to its old public address are no longer delivered.
        """
        if address not in self._nodes:
            raise ValueError(f"no node was added at {address}")
        if new_address in self._route:
            raise ValueError(f"{new_address} is taken")
        del self._route[self._public[address]]
        self._route[new_address] = address
        self._public[address] = new_address

    # -- running ------------------------------------------------------------------

    def run_until(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Advance until ``predicate()`` is true (returns True) or ``timeout`` virtual
        seconds pass (returns False)."""
        deadline = self._now + timeout
        rounds_at_instant = 0
        self._flush()
        while True:
            for hook in self.step_hooks:
                hook()
            done = predicate()
            # Hooks and predicates may give commands; send what they produced.
            self._flush()
            if done:
                return True
            next_time = self._next_time()
            if next_time is None or next_time > deadline:
                self._now = max(self._now, deadline)
                return False
            if next_time <= self._now:
                rounds_at_instant += 1
                if rounds_at_instant > _MAX_ROUNDS_AT_ONE_INSTANT:
                    raise RuntimeError(f"the simulation is stuck at t={self._now}")
                if rounds_at_instant > 1:
                    self._now += _TICK
            else:
                rounds_at_instant = 0
                self._now = next_time
            self._deliver_due()
            self._fire_timers()

    def run_for(self, duration: float) -> None:
        """Advance ``duration`` virtual seconds."""
        self.run_until(lambda: False, duration)

    # -- internals ----------------------------------------------------------------

    def _next_time(self) -> float | None:
        times = [t for node in self._nodes.values() if (t := node.timer()) is not None]
        if self._queue:
            times.append(self._queue[0][0])
        return min(times) if times else None

    def _deliver_due(self) -> None:
        queue = self._queue
        while queue and queue[0][0] <= self._now:
            _, _, key, source, data = heapq.heappop(queue)
            self._nodes[key].receive_datagram(data, source, self._now)

    def _fire_timers(self) -> None:
        for node in self._nodes.values():
            timer = node.timer()
            if timer is not None and timer <= self._now:
                node.handle_timer(self._now)

    def _flush(self) -> None:
        for key, node in self._nodes.items():
            for data, destination in node.datagrams_to_send(self._now):
                self._route_datagram(key, data, destination)

    def _route_datagram(self, key: Address, data: bytes, destination: Address) -> None:
        now = self._now
        source = self._public[key]
        target = self._route.get(destination)
        if target is None:
            self._record(TraceRecord(now, source, destination, len(data), "unroutable"))
            return
        link = self._links.get((key, target))
        if link is None:
            link = self._links[(key, target)] = _Link(self._default)
        c = link.conditions
        if link.random:
            rng = self._rng
            # Draw every number for every datagram, whatever happens to it, so
            # one datagram's fate never shifts the draws of the next.
            r_loss, r_jitter, r_reorder, r_corrupt, r_dup = (rng.random() for _ in range(5))
            corrupt_at, corrupt_xor = rng.randrange(len(data) or 1), rng.randrange(1, 256)
        else:
            r_loss = r_jitter = r_reorder = r_corrupt = r_dup = 1.0
            corrupt_at = corrupt_xor = 0

        if c.mtu is not None and len(data) > c.mtu:
            self._record(TraceRecord(now, source, destination, len(data), "too-big"))
            return
        if r_loss < c.loss:
            self._record(TraceRecord(now, source, destination, len(data), "lost"))
            return
        departure = now
        if c.bandwidth is not None:
            backlog = max(0.0, link.busy_until - now) * c.bandwidth
            if backlog + len(data) > c.queue_bytes + 1e-6:  # tolerate float rounding
                self._record(TraceRecord(now, source, destination, len(data), "queue-full"))
                return
            departure = max(now, link.busy_until) + len(data) / c.bandwidth
            link.busy_until = departure
        arrival = departure + c.delay + r_jitter * c.jitter
        fate = "delivered"
        if r_reorder < c.reorder:
            arrival += c.reorder_delay
            fate += "+reordered"
        if r_corrupt < c.corrupt and data:
            damaged = bytearray(data)
            damaged[corrupt_at] ^= corrupt_xor
            data = bytes(damaged)
            fate += "+corrupted"
        self._schedule(arrival, target, source, data)
        if r_dup < c.duplicate:
            self._schedule(arrival + c.delay / 2, target, source, data)
            fate += "+duplicated"
        self._record(TraceRecord(now, source, destination, len(data), fate))

    def _record(self, record: TraceRecord) -> None:
        if self._keep_trace:
            self.trace.append(record)

    def _schedule(self, at: float, key: Address, source: Address, data: bytes) -> None:
        self._seq += 1
        heapq.heappush(self._queue, (at, self._seq, key, source, data))
