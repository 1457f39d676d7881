"""Whether an event loop has other tasks ready to run: a hint for the I/O loop.

The I/O loop gives way once more while the answer is yes, so that a reply a
woken task hands to a task it started still leaves in the same packet (see
``_Driver.run``). A wrong answer costs a packet or an empty pass, never data.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable


def asyncio_others_ready(loop: asyncio.AbstractEventLoop) -> bool:
    """Whether ``loop``'s run queue holds callbacks (``False`` for a loop without one
    we can see, such as uvloop's)."""
    # The run queue is private, but has been a deque named _ready since Python 3.4.
    return bool(getattr(loop, "_ready", None))


def trio_runnable() -> int:
    """How many tasks trio will run in its next batch (public run statistics)."""
    import trio  # only trio runtimes ask, and they have it

    runnable: int = trio.lowlevel.current_statistics().tasks_runnable
    return runnable


class Readiness:
    """``others_ready()`` for a scheduler whose run queue does not tell the whole story.

    trio runs each batch of ready tasks in random order, and its statistics count
    only the tasks of the next batch: a task the I/O loop woke, and a task that
    one starts, may run later in the loop's own batch, unseen (curio shows no run
    queue at all, and woken threads run beside the I/O thread). So the backend
    reports when it wakes parked tasks and when they resume, and the loop gives
    way again while a woken task has not run yet, when one ran since the loop's
    last turn (what it started may share the loop's batch), or when tasks were
    ready at that turn (they share it now). A task that answers two starts away
    from the woken one may still miss the pass: a hint.
    """

    __slots__ = ("_ready_before", "_resumed", "_runnable", "_woken")

    def __init__(self, runnable: Callable[[], int] | None = None) -> None:
        self._runnable = runnable  # tasks ready for the next batch, where the loop says
        self._woken = 0  # tasks woken that have not resumed since
        self._resumed = False  # a parked task resumed since the loop's last turn
        self._ready_before = False  # tasks were ready at that turn

    def woke(self, count: int) -> None:
        """``count`` parked tasks were just woken."""
        self._woken += count

    def resumed(self, woken: bool) -> None:
        """A parked task runs again: ``woken``, or its deadline or a cancellation."""
        if woken and self._woken:
            self._woken -= 1
        self._resumed = True

    @property
    def owed(self) -> bool:
        """Whether a woken task has not resumed yet."""
        return self._woken > 0

    def forget(self) -> None:
        """Every parked task was woken at the loop's end: nothing is owed any more."""
        self._woken = 0

    def others_ready(self) -> bool:
        """Whether the I/O loop should give way once more before it sends."""
        ready = self._runnable is not None and self._runnable() > 0
        answer = ready or self._ready_before or self._resumed or self._woken > 0
        self._ready_before, self._resumed = ready, False
        return answer
