"""The primitives a runtime supplies: all the layer above needs from a framework.

One backend object serves one UDP socket (one Endpoint). ``AsyncBackend`` is
for event-loop frameworks, ``SyncBackend`` for blocking threads; they differ
only in ``async``. Keys name what a task waits for, exactly as
:meth:`sansquic.Dispatcher.process` names what to wake.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Callable, Coroutine, Hashable
from contextlib import AbstractAsyncContextManager, AbstractContextManager
from typing import Any, Protocol

import sansquic

from ._udp import UdpSocket

__all__ = ["NO_LOCK", "AsyncBackend", "AsyncTaskGroup", "SyncBackend", "SyncTaskGroup"]

#: The guard of a backend whose loop runs on one thread: nothing to lock (one shared
#: object, as ``guard()`` is entered several times per datagram).
NO_LOCK: AbstractContextManager[None] = contextlib.nullcontext()


class AsyncTaskGroup(Protocol):
    """Tasks that end together (a trio nursery, an asyncio task set)."""

    def start_soon(self, fn: Callable[..., Coroutine[Any, Any, Any]], *args: Any) -> None: ...

    def cancel(self) -> None:
        """Cancel every task still running in the group."""
        ...


class AsyncBackend(Protocol):
    """An event-loop framework's primitives."""

    #: The logger the layer reports handler and core failures to.
    logger_name: str

    def now(self) -> float:
        """The framework's monotonic clock, in seconds: the core's ``now``."""
        ...

    def guard(self) -> AbstractContextManager[Any]:
        """Held around every use of the core (one loop thread: a no-op)."""
        ...

    async def park(self, key: Hashable, deadline: float | None) -> None:
        """Sleep until :meth:`wake` names ``key`` or ``deadline`` passes (then return).

        Called under :meth:`guard`. Cancellation is the framework's own.
        """
        ...

    def wake(self, key: Hashable) -> None:
        """Wake every task parked on ``key``."""
        ...

    def parked(self) -> int:
        """How many tasks are parked now (tests check that cancellation leaves none)."""
        ...

    def wake_all(self) -> None:
        """Wake every parked task (the I/O loop ended)."""
        ...

    async def wait_readable(self, sock: UdpSocket, deadline: float | None) -> None:
        """Return once ``sock`` is readable, ``deadline`` passed, or :meth:`nudge` was called."""
        ...

    async def checkpoint(self) -> None:
        """Let the tasks just woken run before the caller goes on."""
        ...

    def nudge(self) -> None:
        """Make a pending :meth:`wait_readable` return now (the timer moved earlier)."""
        ...

    def others_ready(self) -> bool:
        """Whether other tasks may still answer (a hint): the I/O loop then gives way
        again before it sends, so that a task a woken one started can add its
        answer to the same packet."""
        ...

    def waiter_sends(self) -> bool:
        """Whether a task that queued data and parks while the I/O loop is awake sends
        it itself rather than leave it to the loop's send pass: where the loop runs on
        another thread (handing it the send costs a thread switch) and waits for no
        other woken task. Called under :meth:`guard`."""
        ...

    def after_yield(self, fn: Callable[[], None]) -> None:
        """Call ``fn`` once the running task has given way (asyncio's ``call_soon``),
        or now where the framework has no such hook. Only a backend whose loop runs
        on one thread may defer: ``fn`` then runs on it, outside any :meth:`guard`."""
        ...

    def release(self, sock: UdpSocket) -> None:
        """Forget ``sock`` before it is closed."""
        ...

    def task_group(self) -> AbstractAsyncContextManager[AsyncTaskGroup]:
        """A structured task group; leaving it waits for its tasks."""
        ...

    def background(self) -> AsyncTaskGroup | None:
        """A group that outlives the caller (asyncio tasks, threads), or None where
        the framework has no such thing (trio: use ``async with`` forms instead)."""
        ...

    async def resolve(self, host: str, port: int) -> tuple[int, sansquic.Address]:
        """``(address family, (ip, port))`` for a UDP peer or bind address."""
        ...

    async def wait_socket(
        self, sock: socket.socket, writable: bool, deadline: float | None
    ) -> None:
        """Return once the TCP socket ``sock`` is readable (or writable), or ``deadline``
        passed (the WebSocket fallback's one primitive). At most one task waits per
        socket and direction; shutting the socket down wakes it."""
        ...


class SyncTaskGroup(Protocol):
    """Threads that end together."""

    def start_soon(self, fn: Callable[..., Any], *args: Any) -> None: ...

    def cancel(self) -> None: ...


class SyncBackend(Protocol):
    """The blocking twin of :class:`AsyncBackend` (threads)."""

    logger_name: str

    def now(self) -> float: ...

    def guard(self) -> AbstractContextManager[Any]: ...

    def park(self, key: Hashable, deadline: float | None) -> None: ...

    def wake(self, key: Hashable) -> None: ...

    def parked(self) -> int: ...

    def wake_all(self) -> None: ...

    def wait_readable(self, sock: UdpSocket, deadline: float | None) -> None: ...

    def checkpoint(self) -> None:
        """Wait a little for the threads just woken to run, or let go of the GIL for a
        moment, so that a thread they started takes it now."""
        ...

    def nudge(self) -> None: ...

    def others_ready(self) -> bool:
        """Whether a woken thread has not resumed yet, or one just did (the threads
        backend tracks them with a :class:`~sansquic_runtime.Readiness`)."""
        ...

    def waiter_sends(self) -> bool:
        """Whether the I/O thread, awake, waits for no other woken thread: a thread
        that queued data and parks then sends it itself, rather than hand the I/O
        thread the send (a thread switch on the exchange's path)."""
        ...

    def after_yield(self, fn: Callable[[], None]) -> None:
        """Call ``fn`` now: a thread has no loop to defer it to."""
        ...

    def release(self, sock: UdpSocket) -> None: ...

    def task_group(self) -> AbstractContextManager[SyncTaskGroup]: ...

    def background(self) -> SyncTaskGroup | None: ...

    def resolve(self, host: str, port: int) -> tuple[int, sansquic.Address]: ...

    def wait_socket(self, sock: socket.socket, writable: bool, deadline: float | None) -> None: ...
