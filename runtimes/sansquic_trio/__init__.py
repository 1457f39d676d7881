"""sansquic on trio: ``connect()``, ``serve()``, nurseries and cancel scopes.

Only trio's primitives live here; the behaviour is ``sansquic_runtime``'s,
the same on every runtime. A connection's I/O task runs in a nursery that
``async with connect(...)`` opens and closes; ``serve()`` runs until cancelled
(start it with ``nursery.start``, which hands back the :class:`Server`).

    async with sansquic_trio.connect("localhost", 4433, config=cfg) as conn:
        stream = await conn.open_stream()
        await stream.send(b"hello")
        await stream.finish()
        reply = await stream.read_all()

    async with trio.open_nursery() as nursery:
        server = await nursery.start(sansquic_trio.serve, handler, "127.0.0.1", 4433, config)
"""

from __future__ import annotations

import contextlib
import math
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Hashable
from contextlib import AbstractContextManager
from typing import Any

try:
    import trio
except ImportError as _missing:  # pragma: no cover - exercised only without the extra
    raise ImportError("sansquic_trio needs trio: pip install 'sansquic[trio]'") from _missing

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


class _Nursery:
    """A nursery seen as the layer's task group."""

    def __init__(self, nursery: trio.Nursery) -> None:
        self._nursery = nursery

    def start_soon(self, fn: Callable[..., Coroutine[Any, Any, Any]], *args: Any) -> None:
        self._nursery.start_soon(fn, *args)

    def cancel(self) -> None:
        self._nursery.cancel_scope.cancel()


@contextlib.asynccontextmanager
async def _open_nursery() -> AsyncIterator[_Nursery]:
    async with trio.open_nursery() as nursery:
        yield _Nursery(nursery)


class _Backend:
    """trio's primitives for one socket."""

    logger_name = "sansquic_trio"

    def __init__(self) -> None:
        self._lots: dict[Hashable, trio.lowlevel.ParkingLot] = {}
        self._scope: trio.CancelScope | None = None
        self._readiness = Readiness(trio_runnable)

    def now(self) -> float:
        return trio.current_time()

    def guard(self) -> AbstractContextManager[None]:
        return NO_LOCK  # one thread runs trio: nothing to lock

    async def park(self, key: Hashable, deadline: float | None) -> None:
        lot = self._lots.get(key)
        if lot is None:
            lot = self._lots[key] = trio.lowlevel.ParkingLot()
        woken = False
        try:
            if deadline is None:
                # No cancel scope for a wait without deadline: each costs a scope and
                # its status for as long as the task waits (most idle connections do).
                await lot.park()
                woken = True
            else:
                with trio.move_on_at(deadline):
                    await lot.park()
                    woken = True
        finally:
            self._readiness.resumed(woken)
            if not lot and self._lots.get(key) is lot:
                del self._lots[key]

    def parked(self) -> int:
        return sum(len(lot) for lot in self._lots.values())

    def wake(self, key: Hashable) -> None:
        lot = self._lots.pop(key, None)
        if lot is not None:
            self._readiness.woke(len(lot.unpark_all()))

    def wake_all(self) -> None:
        for key in list(self._lots):
            self.wake(key)
        self._readiness.forget()

    async def wait_readable(self, sock: UdpSocket, deadline: float | None) -> None:
        with trio.move_on_at(math.inf if deadline is None else deadline) as scope:
            self._scope = scope
            try:
                await trio.lowlevel.wait_readable(sock.sock)
            finally:
                self._scope = None

    async def checkpoint(self) -> None:
        await trio.lowlevel.checkpoint()

    def nudge(self) -> None:
        if self._scope is not None:
            self._scope.cancel()

    def others_ready(self) -> bool:
        return self._readiness.others_ready()

    def waiter_sends(self) -> bool:
        return False  # the loop's own send pass costs no thread switch: leave it the send

    def after_yield(self, fn: Callable[[], None]) -> None:
        fn()  # trio's only hook, run_sync_soon, costs a wake-up of its own

    def release(self, sock: UdpSocket) -> None:
        trio.lowlevel.notify_closing(sock.sock)

    def task_group(self) -> contextlib.AbstractAsyncContextManager[_Nursery]:
        return _open_nursery()

    def background(self) -> None:
        return None  # trio has no background tasks: connect() is used with async with

    async def resolve(self, host: str, port: int) -> tuple[int, sansquic.Address]:
        infos = await trio.socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
        return first_address(infos)

    async def wait_socket(
        self, sock: socket.socket, writable: bool, deadline: float | None
    ) -> None:
        wait = trio.lowlevel.wait_writable if writable else trio.lowlevel.wait_readable
        with trio.move_on_at(math.inf if deadline is None else deadline):
            # Closed meanwhile: the caller's next call on it says so.
            with contextlib.suppress(trio.ClosedResourceError, OSError, ValueError):
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
    task_status: trio.TaskStatus[Server] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Listen on ``host:port`` (port 0 picks one) and serve until cancelled or closed.

    Each ready connection (authenticated, with ``authenticator``) runs
    ``handler(conn)`` in the server's nursery. ``await nursery.start(serve, ...)``
    returns the :class:`Server` once it listens (its ``address``, ``stats()``,
    ``close()``).
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
    task_status: trio.TaskStatus[WebSocketServer] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Listen for WebSocket clients on TCP ``host:port`` and serve until cancelled or
    closed, as :func:`serve` does for QUIC (same certificate, same auth)."""
    await serve_websocket_until_closed(
        _Backend(), handler, host, port, config, authenticator, task_status.started
    )
