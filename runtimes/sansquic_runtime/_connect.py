"""``connect()`` for the async runtimes: ``async with connect(...)``, or ``await`` it.

``async with`` runs the connection's I/O loop in a task group that ends with
the block (structured, every framework). ``await connect(...)`` runs it in the
background, where the framework has one (asyncio, curio); trio and anyio ask
for ``async with`` instead.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Generator
from contextlib import AbstractAsyncContextManager
from typing import Any

import sansquic

from ._async import Connection, Server, open_connection, open_server
from ._backend import AsyncBackend, AsyncTaskGroup
from ._ws_async import (
    WebSocketConnection,
    WebSocketServer,
    connect_any,
    open_websocket,
    open_websocket_server,
)

__all__ = [
    "AnyConnector",
    "Connect",
    "Connector",
    "WebSocketConnector",
    "serve_until_closed",
    "serve_websocket_until_closed",
]


class Connect:
    """What ``connect()`` returns: an awaitable and an async context manager."""

    def __init__(
        self,
        make_backend: Callable[[], AsyncBackend],
        host: str,
        port: int,
        /,
        *,
        opener: Callable[..., Awaitable[Any]] = open_connection,
        **options: Any,
    ) -> None:
        self._make_backend = make_backend
        self._opener = opener  # open_connection, open_websocket or connect_any
        self._host, self._port, self._options = host, port, options
        self._group_cm: AbstractAsyncContextManager[AsyncTaskGroup] | None = None
        self._conn: Any = None

    def __await__(self) -> Generator[Any, None, Any]:
        return self._background().__await__()

    async def _background(self) -> Any:
        backend = self._make_backend()
        group = backend.background()
        if group is None:
            raise TypeError(
                "this runtime runs a connection inside a task group: "
                "use 'async with connect(...) as conn:'"
            )
        return await self._opener(backend, group, self._host, self._port, **self._options)

    async def __aenter__(self) -> Any:
        if self._group_cm is not None:
            raise sansquic.LocalProtocolError("this connect() was entered already")
        backend = self._make_backend()
        self._group_cm = backend.task_group()
        group = await self._group_cm.__aenter__()
        try:
            self._conn = await self._opener(backend, group, self._host, self._port, **self._options)
        except BaseException:
            # open_connection() ended the I/O task: leave the group cleanly, so the
            # caller sees the error itself rather than a group wrapping it (trio).
            await self._group_cm.__aexit__(None, None, None)
            raise
        return self._conn

    async def __aexit__(self, *exc_info: Any) -> None:
        assert self._group_cm is not None
        assert self._conn is not None
        try:
            await self._conn.close()  # ends the I/O task
        finally:
            try:
                # The body's own exception propagates as it is, never inside a group.
                await self._group_cm.__aexit__(None, None, None)
            finally:
                self._conn._driver.close_socket()  # in case a cancellation cut close() short


class Connector:
    """A runtime's ``connect`` function, bound to its backend (written once for all)."""

    def __init__(self, make_backend: Callable[[], AsyncBackend]) -> None:
        self._make_backend = make_backend

    def __call__(
        self,
        host: str,
        port: int,
        *,
        config: sansquic.Config | None = None,
        server_name: str | None = None,
        token: str | bytes | None = None,
        timeout: float | None = 10.0,
    ) -> Connect:
        """Connect to ``host:port``: ``async with connect(...) as conn``.

        Waits (up to ``timeout``) until the connection is ready and, with
        ``token`` (a bearer token) or ``config.auth_request``, authenticated;
        a rejection raises :class:`sansquic.ConnectionClosed` with the
        server's code. Leaving the block closes the connection. Where the
        framework has background tasks (asyncio, curio), ``conn = await
        connect(...)`` works too; then ``await conn.close()`` when done.
        Next: ``await conn.open_stream()``.
        """
        options: dict[str, Any] = {"config": config, "server_name": server_name, "token": token}
        return Connect(self._make_backend, host, port, timeout=timeout, **options)


async def serve_until_closed(
    backend: AsyncBackend,
    handler: Callable[[Connection], Awaitable[object]],
    host: str,
    port: int,
    config: sansquic.Config,
    authenticator: sansquic.Authenticator | None,
    started: Callable[[Server], object],
) -> None:
    """Structured serving (trio's idiom): bind, hand the :class:`Server` to ``started``
    (a ``task_status.started``), then serve until cancelled or closed."""
    server = await open_server(
        backend, handler, host, port, config=config, authenticator=authenticator
    )
    started(server)
    await server.serve_forever()


class WebSocketConnector:
    """A runtime's ``connect_websocket`` function, bound to its backend."""

    def __init__(self, make_backend: Callable[[], AsyncBackend]) -> None:
        self._make_backend = make_backend

    def __call__(
        self,
        host: str,
        port: int,
        *,
        path: str = "/",
        config: sansquic.Config | None = None,
        server_name: str | None = None,
        token: str | bytes | None = None,
        timeout: float | None = 10.0,
    ) -> Connect:
        """Connect over WebSocket (TLS, ``wss://host:port/path``): ``async with
        connect_websocket(...) as conn``; the connection has ``Connection``'s shape
        (``open_stream``, ``accept_stream``, datagrams, ``close``)."""
        options: dict[str, Any] = {"config": config, "server_name": server_name, "token": token}
        return Connect(
            self._make_backend,
            host,
            port,
            opener=open_websocket,
            path=path,
            timeout=timeout,
            **options,
        )


class AnyConnector:
    """A runtime's ``connect_any`` function: QUIC first, WebSocket as the fallback."""

    def __init__(self, make_backend: Callable[[], AsyncBackend]) -> None:
        self._make_backend = make_backend

    def __call__(
        self,
        host: str,
        port: int,
        *,
        websocket_port: int,
        websocket_path: str = "/",
        config: sansquic.Config | None = None,
        server_name: str | None = None,
        token: str | bytes | None = None,
        delay: float = 0.25,
        timeout: float = 10.0,
    ) -> Connect:
        """``async with connect_any(host, port, websocket_port=...) as conn``: QUIC to UDP
        ``port``, and WebSocket to TCP ``websocket_port`` after ``delay`` seconds or as
        soon as QUIC fails; ``conn.transport`` says which won (docs/websocket.md)."""
        return Connect(
            self._make_backend,
            host,
            port,
            opener=connect_any,
            make_backend=self._make_backend,
            websocket_port=websocket_port,
            websocket_path=websocket_path,
            config=config,
            server_name=server_name,
            token=token,
            delay=delay,
            timeout=timeout,
        )


async def serve_websocket_until_closed(
    backend: AsyncBackend,
    handler: Callable[[WebSocketConnection], Awaitable[object]],
    host: str,
    port: int,
    config: sansquic.Config,
    authenticator: sansquic.Authenticator | None,
    started: Callable[[WebSocketServer], object],
) -> None:
    """Structured WebSocket serving (trio's idiom), as :func:`serve_until_closed`."""
    server = await open_websocket_server(
        backend, handler, host, port, config=config, authenticator=authenticator
    )
    started(server)
    await server.serve_forever()
