"""sansquic on curio: ``connect()``, ``serve()``, and Connection / Stream objects.

Only curio's primitives live here; the behaviour is ``sansquic_runtime``'s,
the same on every runtime. As on asyncio, ``await connect(...)`` runs the
connection in the background (daemon tasks) and ``serve()`` returns a server
already serving.

    async with sansquic_curio.connect("localhost", 4433, config=cfg) as conn:
        stream = await conn.open_stream()
        await stream.send(b"hello")
        await stream.finish()
        reply = await stream.read_all()

    server = await sansquic_curio.serve(handler, "127.0.0.1", 4433, config=cfg)
    await server.serve_forever()             # or: async with server: ...
"""

from __future__ import annotations

import contextlib
import errno
import selectors
import socket
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Hashable
from contextlib import AbstractContextManager
from typing import Any

try:
    import curio  # type: ignore[import-untyped]
    import curio.socket  # type: ignore[import-untyped]
    from curio.traps import (  # type: ignore[import-untyped]
        _future_wait,
        _io_release,
        _read_wait,
        _set_timeout,
        _unset_timeout,
        _write_wait,
    )
except ImportError as _missing:  # pragma: no cover - exercised only without the extra
    raise ImportError("sansquic_curio needs curio: pip install 'sansquic[curio]'") from _missing
except AttributeError as _missing:  # pragma: no cover - Python 3.12+
    # curio 1.6, its last release, reads multiprocessing.connection.CHALLENGE, private
    # since Python 3.12; the fix is only in curio's source. An ImportError skips us.
    raise ImportError(
        "curio 1.6 does not import on Python 3.12+: install it from source"
    ) from _missing

from sansquic_runtime import (
    NO_LOCK,
    AnyConnector,
    Connection,
    Connector,
    Readiness,
    Server,
    Stream,
    UdpSocket,
    WebSocketConnection,
    WebSocketConnector,
    WebSocketServer,
    first_address,
    open_server,
    open_websocket_server,
)

import sansquic

__all__ = [
    "Connection",
    "Server",
    "Stream",
    "connect",
    "connect_any",
    "connect_websocket",
    "serve",
    "serve_websocket",
]


class _Waiter:
    """The least ``_future_wait`` needs (as curio's own ``_FutureLess``): set from a task,
    it queues the parked task's wake-up in the kernel without any thread lock."""

    __slots__ = ("_callback", "done", "woken")

    def __init__(self) -> None:
        self._callback: Callable[[_Waiter], object] | None = None
        self.done = False
        self.woken = False  # set(), not a timeout or a cancellation, ended the wait

    def add_done_callback(self, callback: Callable[[_Waiter], object]) -> None:
        self._callback = callback

    def cancel(self) -> bool:  # the kernel's side: a timeout or cancellation ended the wait
        self.done = True
        return False

    def set(self) -> None:
        if not self.done:
            self.done = self.woken = True
            if self._callback is not None:
                self._callback(self)


async def _wait(trap: Coroutine[Any, Any, Any], deadline: float | None) -> None:
    """Await one blocking ``trap``, giving up quietly at ``deadline`` (curio's clock).

    ``curio.ignore_after()`` would do, but it logs a warning whenever the trap
    completes in the same kernel cycle the deadline passes: every busy I/O loop.
    """
    if deadline is None:
        await trap
        return
    prior = await _set_timeout(deadline)  # the enclosing timeout, if any
    try:
        await trap
    except curio.TaskTimeout as exc:
        expired_at = exc.args[0]
        if expired_at < deadline or (prior is not None and prior <= expired_at):
            raise  # an enclosing timeout's, not ours
    finally:
        await _unset_timeout(prior)


class _Group:
    """Tasks started from sync code. Curio spawns and cancels only from async code
    (traps), so start_soon() and cancel() queue the work and :meth:`flush` does it."""

    def __init__(self, group: Any = None) -> None:
        self._group = group  # a curio.TaskGroup, or None: daemon tasks (background)
        self._pending: deque[tuple[Callable[..., Any], tuple[Any, ...]]] = deque()
        self._daemons: set[Any] = set()
        self._cancelled = False
        self._kick: _Waiter | None = None

    def start_soon(self, fn: Callable[..., Coroutine[Any, Any, Any]], *args: Any) -> None:
        self._pending.append((fn, args))
        self._poke()

    def cancel(self) -> None:
        self._cancelled = True  # sticky, as a trio cancel scope: later tasks end at once
        self._poke()

    def _poke(self) -> None:
        if self._kick is not None:
            self._kick.set()

    async def flush(self) -> None:
        while self._pending:
            fn, args = self._pending.popleft()
            if self._group is not None:
                await self._group.spawn(fn, *args)
            else:
                self._daemons = {task for task in self._daemons if not task.terminated}
                self._daemons.add(await curio.spawn(fn, *args, daemon=True))
        if self._cancelled:
            if self._group is not None:
                await self._group.cancel_remaining()
            for task in self._daemons:
                await task.cancel(blocking=False)

    async def run(self) -> None:
        """A task group's helper task: flushes whenever poked."""
        while True:
            await self.flush()
            if not self._pending:  # nothing awaits between this check and the wait
                self._kick = _Waiter()
                await _future_wait(self._kick)


@contextlib.asynccontextmanager
async def _open_group() -> AsyncIterator[_Group]:
    async with curio.TaskGroup() as tasks:
        group = _Group(tasks)
        await tasks.spawn(group.run, daemon=True)  # join() cancels it once the rest are done
        yield group
        await group.flush()


class _Backend:
    """curio's primitives for one socket."""

    logger_name = "sansquic_curio"

    def __init__(self) -> None:
        self._waiters: dict[Hashable, list[_Waiter]] = {}
        self._parked = 0
        self._background: _Group | None = None
        # The socket and a wake-up pair, watched by a selector of ours whose own fd
        # curio watches: one curio task then waits for "readable or nudged".
        self._poll: tuple[selectors.BaseSelector, socket.socket, socket.socket] | None = None
        self._watched: socket.socket | None = None  # the UDP socket the poller watches
        self._waiting = self._nudged = self._released = False
        self._readiness = Readiness()

    def now(self) -> float:
        return time.monotonic()  # what curio's kernel clock and timeouts read

    def guard(self) -> AbstractContextManager[None]:
        return NO_LOCK  # one thread runs the kernel: nothing to lock

    async def park(self, key: Hashable, deadline: float | None) -> None:
        if self._background is not None:
            # The layer always parks right after a background start_soon (the I/O task
            # is what it waits for), so background tasks are spawned here.
            await self._background.flush()
        waiter = _Waiter()
        self._waiters.setdefault(key, []).append(waiter)
        self._parked += 1
        try:
            await _wait(_future_wait(waiter), deadline)
        finally:
            self._readiness.resumed(waiter.woken)
            self._parked -= 1
            waiters = self._waiters.get(key)
            if waiters is not None and waiter in waiters:
                waiters.remove(waiter)
                if not waiters:
                    del self._waiters[key]

    def wake(self, key: Hashable) -> None:
        for waiter in self._waiters.pop(key, ()):
            if not waiter.done:
                waiter.set()
                self._readiness.woke(1)

    def parked(self) -> int:
        return self._parked

    def wake_all(self) -> None:
        for key in list(self._waiters):
            self.wake(key)
        self._readiness.forget()

    async def wait_readable(self, sock: UdpSocket, deadline: float | None) -> None:
        if self._poll is None:
            poller: selectors.BaseSelector = selectors.DefaultSelector()  # epoll/kqueue: a fileno
            wake_r, wake_w = socket.socketpair()
            for end in (wake_r, wake_w):
                end.setblocking(False)
            poller.register(sock.sock, selectors.EVENT_READ)
            poller.register(wake_r, selectors.EVENT_READ)
            self._poll = (poller, wake_r, wake_w)
            self._watched = sock.sock
        poller, wake_r, _ = self._poll
        if self._watched is not sock.sock:  # a migration switched the socket
            if self._watched is not None:
                poller.unregister(self._watched)
            poller.register(sock.sock, selectors.EVENT_READ)
            self._watched = sock.sock
        self._waiting = True
        try:
            await _wait(_read_wait(poller), deadline)
        except curio.CancelledError:
            self._released = True  # the I/O loop is over: let go of the poller now
            raise
        finally:
            self._waiting = False
            if self._nudged:
                self._nudged = False
                with contextlib.suppress(OSError):
                    wake_r.recv(64)
            if self._released:
                await _io_release(poller)  # curio forgets it before it is closed
                self._close()
        if self._released:  # release() came while we waited: the socket is gone
            raise OSError(errno.EBADF, "the socket was released while the I/O task waited")

    async def checkpoint(self) -> None:
        await curio.sleep(0)

    def nudge(self) -> None:
        if self._waiting and not self._nudged and self._poll is not None:
            self._nudged = True
            with contextlib.suppress(OSError):
                self._poll[2].send(b"\0")

    def others_ready(self) -> bool:
        # curio's kernel keeps its ready queue to itself: only woken tasks are seen.
        return self._readiness.others_ready()

    def waiter_sends(self) -> bool:
        return False  # the loop's own send pass costs no thread switch: leave it the send

    def after_yield(self, fn: Callable[[], None]) -> None:
        fn()

    def release(self, sock: UdpSocket) -> None:
        # A file closed while curio still watches it would leave a stale key in curio's
        # selector: a waiting I/O task closes the poller itself, after _io_release().
        self._released = True
        if self._waiting:
            self.nudge()
        else:
            self._close()

    def _close(self) -> None:
        if self._poll is not None:
            for closable in self._poll:
                closable.close()
            self._poll = None

    def task_group(self) -> contextlib.AbstractAsyncContextManager[_Group]:
        return _open_group()

    def background(self) -> _Group:
        self._background = _Group()
        return self._background

    async def resolve(self, host: str, port: int) -> tuple[int, sansquic.Address]:
        infos = await curio.socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
        return first_address(infos)

    async def wait_socket(
        self, sock: socket.socket, writable: bool, deadline: float | None
    ) -> None:
        if sock.fileno() < 0:
            return  # closed: the caller's next call on it says so
        try:
            await _wait(_write_wait(sock) if writable else _read_wait(sock), deadline)
        finally:
            # Forgotten at once: the socket may be closed before this task waits again.
            await _io_release(sock)


#: ``async with connect(host, port, config=..., token=...) as conn``, or ``await`` it
#: (see :class:`sansquic_runtime.Connector`).
connect: Connector = Connector(_Backend)
#: ``async with connect_websocket(host, port, config=..., token=...) as conn`` (the fallback).
connect_websocket: WebSocketConnector = WebSocketConnector(_Backend)
#: ``async with connect_any(host, port, websocket_port=...) as conn``: QUIC, else WebSocket.
connect_any: AnyConnector = AnyConnector(_Backend)


async def serve(
    handler: Callable[[Connection], Awaitable[object]],
    host: str,
    port: int,
    *,
    config: sansquic.Config,
    authenticator: sansquic.Authenticator | None = None,
) -> Server:
    """Listen on ``host:port`` (port 0 picks one) and serve in the background.

    Each ready connection (authenticated, with ``authenticator``) gets
    ``handler(conn)`` as a task of its own. Next: ``await server.serve_forever()``
    to wait, or ``await server.close()`` (or ``async with server``).
    """
    backend = _Backend()
    server = await open_server(
        backend, handler, host, port, config=config, authenticator=authenticator
    )
    group = backend.background()
    server.start_serving(group)
    await group.flush()  # spawned now: curio spawns only from async code
    return server


async def serve_websocket(
    handler: Callable[[WebSocketConnection], Awaitable[object]],
    host: str,
    port: int,
    *,
    config: sansquic.Config,
    authenticator: sansquic.Authenticator | None = None,
) -> WebSocketServer:
    """Listen for WebSocket clients on TCP ``host:port`` and serve in the background,
    as :func:`serve` does for QUIC (same certificate, same auth)."""
    backend = _Backend()
    server = await open_websocket_server(
        backend, handler, host, port, config=config, authenticator=authenticator
    )
    group = backend.background()
    server.start_serving(group)
    await group.flush()
    return server
