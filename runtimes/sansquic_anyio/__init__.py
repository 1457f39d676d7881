"""sansquic on anyio: runs on anyio's asyncio and trio backends alike.

Only anyio's primitives live here; the behaviour is ``sansquic_runtime``'s,
the same on every runtime. A connection's I/O task runs in a task group that
``async with connect(...)`` opens and closes; ``serve()`` runs until
cancelled (start it with ``task_group.start``, which hands back the
:class:`Server`).

    async with sansquic_anyio.connect("localhost", 4433, config=cfg) as conn:
        stream = await conn.open_stream()
        await stream.send(b"hello")
        await stream.finish()
        reply = await stream.read_all()

    async with anyio.create_task_group() as group:
        server = await group.start(sansquic_anyio.serve, handler, "127.0.0.1", 4433, config)
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Hashable
from contextlib import AbstractContextManager
from typing import Any

try:
    import anyio
    import anyio.abc
    import anyio.lowlevel
except ImportError as _missing:  # pragma: no cover - exercised only without the extra
    raise ImportError("sansquic_anyio needs anyio: pip install 'sansquic[anyio]'") from _missing

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
    asyncio_others_ready,
    first_address,
    serve_until_closed,
    serve_websocket_until_closed,
    trio_runnable,
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


class _Group:
    """An anyio task group seen as the layer's task group."""

    def __init__(self, group: anyio.abc.TaskGroup) -> None:
        self._group = group

    def start_soon(self, fn: Callable[..., Coroutine[Any, Any, Any]], *args: Any) -> None:
        self._group.start_soon(fn, *args)

    def cancel(self) -> None:
        self._group.cancel_scope.cancel()


@contextlib.asynccontextmanager
async def _open_group() -> AsyncIterator[_Group]:
    async with anyio.create_task_group() as group:
        yield _Group(group)


def _call(fn: Callable[[], None]) -> None:
    fn()


def _running_asyncio_loop() -> asyncio.AbstractEventLoop | None:
    """The asyncio loop anyio runs on, or ``None`` on its trio backend."""
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _call_soon(loop: asyncio.AbstractEventLoop, fn: Callable[[], None]) -> None:
    loop.call_soon(fn)


class _Backend:
    """anyio's primitives for one socket."""

    logger_name = "sansquic_anyio"

    def __init__(self) -> None:
        self._events: dict[Hashable, anyio.Event] = {}
        self._parked: dict[Hashable, int] = {}
        self._waiting: dict[anyio.Event, int] = {}  # tasks parked on each event
        self._scope: anyio.CancelScope | None = None
        # On trio, woken tasks are tracked: its run statistics miss half (see Readiness).
        self._readiness: Readiness | None = Readiness(trio_runnable)
        self._others_ready: Callable[[], bool] = self._readiness.others_ready
        self._after_yield: Callable[[Callable[[], None]], None] = _call
        loop = _running_asyncio_loop()
        if loop is not None:
            self._readiness = None  # asyncio's run queue tells it all
            self._others_ready = functools.partial(asyncio_others_ready, loop)
            self._after_yield = functools.partial(_call_soon, loop)
        # On trio, anyio's other backend, there is no cheap hook to defer with.

    def now(self) -> float:
        return anyio.current_time()

    def guard(self) -> AbstractContextManager[None]:
        return NO_LOCK  # one thread runs the loop: nothing to lock

    async def park(self, key: Hashable, deadline: float | None) -> None:
        event = self._events.get(key)
        if event is None:
            event = self._events[key] = anyio.Event()
        self._parked[key] = self._parked.get(key, 0) + 1
        self._waiting[event] = self._waiting.get(event, 0) + 1
        try:
            if deadline is None:
                # No cancel scope for a wait without deadline: each costs a scope for
                # as long as the task waits (most idle connections do).
                await event.wait()
            else:
                with anyio.CancelScope(deadline=deadline):
                    await event.wait()
        finally:
            left = self._waiting.pop(event) - 1
            if left:
                self._waiting[event] = left
            if self._readiness is not None:
                # Counted by the wake that set it, whatever ended the wait.
                self._readiness.resumed(event.is_set())
            # The last one out forgets the key: keys hold connections.
            self._parked[key] -= 1
            if not self._parked[key]:
                del self._parked[key]
                if self._events.get(key) is event:
                    del self._events[key]

    def parked(self) -> int:
        return sum(self._parked.values())

    def wake(self, key: Hashable) -> None:
        event = self._events.pop(key, None)
        if event is not None:
            event.set()
            if self._readiness is not None:
                self._readiness.woke(self._waiting.get(event, 0))

    def wake_all(self) -> None:
        for key in list(self._events):
            self.wake(key)
        if self._readiness is not None:
            self._readiness.forget()

    async def wait_readable(self, sock: UdpSocket, deadline: float | None) -> None:
        with anyio.CancelScope(deadline=math.inf if deadline is None else deadline) as scope:
            self._scope = scope
            try:
                await anyio.wait_readable(sock.sock)
            finally:
                self._scope = None

    async def checkpoint(self) -> None:
        await anyio.lowlevel.checkpoint()

    def nudge(self) -> None:
        if self._scope is not None:
            self._scope.cancel()

    def others_ready(self) -> bool:
        return self._others_ready()

    def waiter_sends(self) -> bool:
        return False  # the loop's own send pass costs no thread switch: leave it the send

    def after_yield(self, fn: Callable[[], None]) -> None:
        self._after_yield(fn)

    def release(self, sock: UdpSocket) -> None:
        anyio.notify_closing(sock.sock)

    def task_group(self) -> contextlib.AbstractAsyncContextManager[_Group]:
        return _open_group()

    def background(self) -> None:
        return None  # structured only: connect() is used with async with

    async def resolve(self, host: str, port: int) -> tuple[int, sansquic.Address]:
        infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
        return first_address(infos)

    async def wait_socket(
        self, sock: socket.socket, writable: bool, deadline: float | None
    ) -> None:
        wait = anyio.wait_writable if writable else anyio.wait_readable
        with anyio.CancelScope(deadline=math.inf if deadline is None else deadline):
            # Closed meanwhile: the caller's next call on it says so.
            with contextlib.suppress(anyio.ClosedResourceError, OSError, ValueError):
                await wait(sock)


#: ``async with connect(host, port, config=..., token=...) as conn`` (see :class:`Connector`).
connect: Connector = Connector(_Backend)
#: ``async with connect_websocket(host, port, config=..., token=...) as conn`` (the fallback).
connect_websocket: WebSocketConnector = WebSocketConnector(_Backend)
#: ``async with connect_any(host, port, websocket_port=...) as conn``: QUIC, else WebSocket.
connect_any: AnyConnector = AnyConnector(_Backend)


async def serve(
    handler: Callable[[Connection], Awaitable[object]],
    host: str,
    port: int,
    config: sansquic.Config,
    *,
    authenticator: sansquic.Authenticator | None = None,
    task_status: anyio.abc.TaskStatus[Server] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Listen on ``host:port`` (port 0 picks one) and serve until cancelled or closed.

    Each ready connection (authenticated, with ``authenticator``) runs
    ``handler(conn)`` in the server's task group. ``await group.start(serve, ...)``
    returns the :class:`Server` once it listens.
    """
    await serve_until_closed(
        _Backend(), handler, host, port, config, authenticator, task_status.started
    )


async def serve_websocket(
    handler: Callable[[WebSocketConnection], Awaitable[object]],
    host: str,
    port: int,
    config: sansquic.Config,
    *,
    authenticator: sansquic.Authenticator | None = None,
    task_status: anyio.abc.TaskStatus[WebSocketServer] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Listen for WebSocket clients on TCP ``host:port`` and serve until cancelled or
    closed, as :func:`serve` does for QUIC (same certificate, same auth)."""
    await serve_websocket_until_closed(
        _Backend(), handler, host, port, config, authenticator, task_status.started
    )
