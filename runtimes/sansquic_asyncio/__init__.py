"""sansquic on asyncio: ``connect()``, ``serve()``, and Connection / Stream objects.

Only asyncio's primitives live here; the behaviour is ``sansquic_runtime``'s,
the same on every runtime.

    async with sansquic_asyncio.connect("localhost", 4433, config=cfg) as conn:
        stream = await conn.open_stream(priority=sansquic.Priority.HIGH)
        await stream.send(b"hello")
        await stream.finish()
        reply = await stream.read_all()      # every byte until the end of the stream

    server = await sansquic_asyncio.serve(handler, "127.0.0.1", 4433, config=cfg)
    await server.serve_forever()             # or: async with server: ...
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable, Coroutine, Hashable
from contextlib import AbstractContextManager
from typing import Any

from sansquic_runtime import (
    NO_LOCK,
    AnyConnector,
    Connection,
    Connector,
    Server,
    Stream,
    UdpSocket,
    WebSocketConnection,
    WebSocketConnector,
    WebSocketServer,
    asyncio_others_ready,
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


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class _Tasks:
    """A set of tasks: a task group when entered, a background set when not."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    def start_soon(self, fn: Callable[..., Coroutine[Any, Any, Any]], *args: Any) -> None:
        task: asyncio.Task[Any] = asyncio.ensure_future(fn(*args))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def cancel(self) -> None:
        for task in self._tasks:
            task.cancel()

    async def __aenter__(self) -> _Tasks:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if exc_info[0] is not None:
            self.cancel()
        try:
            # Look again after each wait: tasks may start more tasks. (Waiting on the set
            # itself could spin: a done task leaves it only in a later loop pass.)
            while pending := [task for task in self._tasks if not task.done()]:
                await asyncio.wait(pending)
        except asyncio.CancelledError:
            self.cancel()  # the block was cancelled: so are the tasks it started
            await asyncio.gather(*self._tasks, return_exceptions=True)
            raise


class _Backend:
    """asyncio's primitives for one socket."""

    logger_name = "sansquic_asyncio"

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._waiters: dict[Hashable, list[asyncio.Future[None]]] = {}
        self._readable: asyncio.Future[None] | None = None
        self._reader: int | None = None

    def now(self) -> float:
        return self._loop.time()

    def guard(self) -> AbstractContextManager[None]:
        return NO_LOCK  # one thread runs the loop: nothing to lock

    async def park(self, key: Hashable, deadline: float | None) -> None:
        waiter = self._loop.create_future()
        self._waiters.setdefault(key, []).append(waiter)
        timer = None if deadline is None else self._loop.call_at(deadline, _resolve, waiter)
        try:
            await waiter
        finally:
            if timer is not None:
                timer.cancel()
            waiters = self._waiters.get(key)
            if waiters is not None and waiter in waiters:
                waiters.remove(waiter)
                if not waiters:
                    del self._waiters[key]

    def parked(self) -> int:
        return sum(len(waiters) for waiters in self._waiters.values())

    def wake(self, key: Hashable) -> None:
        for waiter in self._waiters.pop(key, ()):
            _resolve(waiter)

    def wake_all(self) -> None:
        for key in list(self._waiters):
            self.wake(key)

    async def wait_readable(self, sock: UdpSocket, deadline: float | None) -> None:
        if self._reader != sock.fileno():
            # Registered once (again after a migration switched the socket): the I/O
            # loop drains every ready datagram each time it wakes.
            if self._reader is not None:
                self._loop.remove_reader(self._reader)
            self._reader = sock.fileno()
            self._loop.add_reader(self._reader, self.nudge)
        waiter = self._readable = self._loop.create_future()
        timer = None if deadline is None else self._loop.call_at(deadline, _resolve, waiter)
        try:
            await waiter
        finally:
            self._readable = None
            if timer is not None:
                timer.cancel()

    async def checkpoint(self) -> None:
        await asyncio.sleep(0)

    def nudge(self) -> None:
        if self._readable is not None:
            _resolve(self._readable)

    def others_ready(self) -> bool:
        return asyncio_others_ready(self._loop)

    def waiter_sends(self) -> bool:
        return False  # the loop's own send pass costs no thread switch: leave it the send

    def after_yield(self, fn: Callable[[], None]) -> None:
        self._loop.call_soon(fn)

    def release(self, sock: UdpSocket) -> None:
        if self._reader is not None:
            self._loop.remove_reader(self._reader)
            self._reader = None

    def task_group(self) -> _Tasks:
        return _Tasks()

    def background(self) -> _Tasks:
        return _Tasks()

    async def resolve(self, host: str, port: int) -> tuple[int, sansquic.Address]:
        infos = await self._loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
        return first_address(infos)

    async def wait_socket(
        self, sock: socket.socket, writable: bool, deadline: float | None
    ) -> None:
        fd = sock.fileno()
        if fd < 0:
            return  # closed: the caller's next call on it says so
        waiter = self._loop.create_future()
        if writable:
            self._loop.add_writer(fd, _resolve, waiter)
        else:
            self._loop.add_reader(fd, _resolve, waiter)
        timer = None if deadline is None else self._loop.call_at(deadline, _resolve, waiter)
        try:
            await waiter
        finally:
            if timer is not None:
                timer.cancel()
            if writable:
                self._loop.remove_writer(fd)
            else:
                self._loop.remove_reader(fd)


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
    *,
    config: sansquic.Config,
    authenticator: sansquic.Authenticator | None = None,
) -> Server:
    """Listen on ``host:port`` (port 0 picks one) and serve in the background.

    Each ready connection (authenticated, with ``authenticator``) gets
    ``handler(conn)`` as a task of its own. Next: ``await server.serve_forever()``
    to wait, or ``await server.close()`` (or ``async with server``).
    """
    server = await open_server(
        _Backend(), handler, host, port, config=config, authenticator=authenticator
    )
    server.start_serving(_Tasks())
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
    server = await open_websocket_server(
        _Backend(), handler, host, port, config=config, authenticator=authenticator
    )
    server.start_serving(_Tasks())
    return server
