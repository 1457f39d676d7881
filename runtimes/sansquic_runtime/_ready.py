"""Whether an event loop has other tasks ready to run: a hint for the I/O loop.

The I/O loop gives way once more while the answer is yes, so that a reply a
woken task hands to a task it started still leaves in the same packet (see
``_Driver.run``). A wrong answer costs a packet or an empty pass, never data.
"""

from __future__ import annotations

import asyncio


def asyncio_others_ready(loop: asyncio.AbstractEventLoop) -> bool:
    """Whether ``loop``'s run queue holds callbacks (``False`` for a loop without one
    we can see, such as uvloop's)."""
    # The run queue is private, but has been a deque named _ready since Python 3.4.
    return bool(getattr(loop, "_ready", None))


def trio_others_ready() -> bool:
    """Whether trio has other tasks ready to run (public run statistics)."""
    import trio  # only trio runtimes ask, and they have it

    return trio.lowlevel.current_statistics().tasks_runnable > 0
