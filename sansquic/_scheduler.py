"""The send scheduler: per-stream queues in the core, handed to the engine by priority.

The engine gets only what it can put on the wire now (the caller works out
that budget from the congestion window and flow-control credit), so bytes of
a low-priority stream never sit in the engine ahead of a high-priority one
for longer than about one round trip.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Callable

from ._streams import NO_BYTES, SendQueue

__all__ = ["Priority", "Scheduler"]


class Priority(enum.IntEnum):
    """Named stream priorities; any int from 0 to 255 works, higher goes first."""

    CRITICAL = 255
    HIGH = 192
    NORMAL = 128
    LOW = 64
    BACKGROUND = 0


#: hand(stream_id, data, fin) passes bytes to the engine.
Hand = Callable[[int, bytes, bool], None]
#: credit(stream_id) tells how many bytes the engine may take for a stream now.
Credit = Callable[[int], int]


class Scheduler:
    """Strict priority between levels, round-robin with a quantum within a level."""

    __slots__ = ("_levels", "quantum")  # one per connection

    def __init__(self, quantum: int) -> None:
        self.quantum = quantum
        # priority -> (stream id, queue) of streams with pending bytes, in turn order
        self._levels: dict[int, deque[tuple[int, SendQueue]]] = {}

    def enqueue(self, stream_id: int, queue: SendQueue) -> None:
        """Put a stream with pending bytes (or a pending FIN) into its level's rotation."""
        if queue.queued:
            return
        queue.queued = True
        self._levels.setdefault(queue.priority, deque()).append((stream_id, queue))

    def remove(self, stream_id: int, queue: SendQueue) -> None:
        """Take a stream out of the rotation (reset, priority change)."""
        if queue.queued:
            queue.queued = False
            level = self._levels[queue.priority]
            level.remove((stream_id, queue))
            if not level:
                del self._levels[queue.priority]

    def __bool__(self) -> bool:
        """Whether any stream has bytes (or a FIN) waiting."""
        return bool(self._levels)

    @property
    def competing(self) -> bool:
        """Whether streams of more than one priority have bytes waiting."""
        return len(self._levels) > 1

    def run(self, budget: int, credit: Credit, hand: Hand, *, top_budget: int | None = None) -> int:
        """Hand the engine up to ``budget`` bytes, highest priority first; return what is left.

        A level is left for a lower one only when each of its streams is empty
        or out of flow-control credit. With ``top_budget`` (larger than
        ``budget``), the highest level may use that much instead: what it takes
        counts against ``budget`` for the levels below.
        """
        levels = self._levels
        top = True
        for priority in sorted(levels, reverse=True):  # at most 256 levels, usually a few
            if top and top_budget is not None and top_budget > budget:
                budget -= top_budget - self._run_level(priority, top_budget, credit, hand)
            else:
                budget = self._run_level(priority, budget, credit, hand)
            top = False
            if budget <= 0:
                break
        return budget

    def _run_level(self, priority: int, budget: int, credit: Credit, hand: Hand) -> int:
        """Round-robin one level within ``budget``; what is left of it."""
        level = self._levels[priority]
        blocked = 0  # consecutive streams in this level that could take nothing
        while level and blocked < len(level):
            stream_id, queue = level[0]
            size = queue.buffer.size
            allowed = min(self.quantum, size, credit(stream_id), budget)
            if size and allowed <= 0:
                if budget <= 0:
                    return budget
                level.rotate(-1)
                blocked += 1
                continue
            blocked = 0
            data = queue.buffer.take(allowed) if allowed else b""
            budget -= len(data)
            if queue.buffer.size:
                level.rotate(-1)
                hand(stream_id, data, False)
            else:  # out of the rotation before hand() sees it, so it can drop the stream
                level.popleft()
                queue.buffer = NO_BYTES  # drained: an idle stream keeps no buffer of its own
                queue.queued = False
                fin, queue.fin = queue.fin, False
                hand(stream_id, data, fin)
        if not level:
            del self._levels[priority]
        return budget
