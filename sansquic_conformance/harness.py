"""The harness every runtime plugs into: blocking objects with the threads runtime's shape.

Cases are written once against blocking objects (``open_stream``,
``accept_stream``, ``send``, ``receive(timeout=)``, ...). The threads runtime
is already that. Every async runtime runs its own event loop in a thread of
its own (anyio's blocking portal, which drives asyncio and trio alike), and
the harness forwards each call to it, so the same case code drives every
runtime, on either side of the connection, against any other.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import sansquic

__all__ = ["HARNESSES", "Harness", "ServerHandle"]

Handler = Callable[[Any], None]  # receives a blocking connection


class ServerHandle(Protocol):
    address: tuple[str, int]

    def stats(self) -> sansquic.EndpointStats: ...

    def tracked(self) -> int:
        """Connections the runtime keeps state for (a leak check); after :meth:`close`,
        what closing left behind."""
        ...

    def close(self) -> None: ...


class Harness(Protocol):
    """What a runtime provides to the conformance cases."""

    name: str

    def serve(
        self, handler: Handler, config: sansquic.Config, authenticator: Any = None
    ) -> ServerHandle: ...

    def connect(
        self, address: tuple[str, int], config: sansquic.Config, token: str | None = None
    ) -> Any: ...

    # The WebSocket fallback (docs/websocket.md): the same shapes over TCP.
    def serve_websocket(
        self, handler: Handler, config: sansquic.Config, authenticator: Any = None
    ) -> ServerHandle: ...

    def connect_websocket(
        self, address: tuple[str, int], config: sansquic.Config, token: str | None = None
    ) -> Any: ...

    def connect_any(
        self,
        quic_address: tuple[str, int],
        websocket_port: int,
        config: sansquic.Config,
        delay: float,
        timeout: float,
    ) -> Any:
        """QUIC first, WebSocket as the fallback: a connection with ``transport``."""
        ...


# -- async runtimes, through a blocking portal ---------------------------------------------


class _Portal:
    """An event loop (asyncio or trio) in its own thread, and calls into it from others."""

    def __init__(self, backend: str) -> None:
        from anyio.from_thread import start_blocking_portal

        self._cm = start_blocking_portal(backend)
        self.portal = self._cm.__enter__()
        self._stopped = False

    def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if self._stopped:
            raise sansquic.ConnectionClosed(0, "harness stopped", application=True)
        return self.portal.call(functools.partial(fn, *args, **kwargs))

    def stop(self) -> None:
        """Cancel what is still running in the loop, then end its thread."""
        if self._stopped:
            return
        self._stopped = True
        with contextlib.suppress(Exception):
            self.portal.call(self.portal.stop, True)
        with contextlib.suppress(Exception):
            self._cm.__exit__(None, None, None)


async def _plain(fn: Callable[[], Any]) -> Any:
    """Run a plain call on the loop thread (the runtime objects are not thread-safe)."""
    return fn()


class _Stream:
    def __init__(self, portal: _Portal, stream: Any) -> None:
        self._portal, self._stream, self.id = portal, stream, stream.id

    def send(self, data: bytes, timeout: float | None = None) -> None:
        self._portal.call(self._stream.send, data, timeout=timeout)

    def receive(self, max_bytes: int = -1, timeout: float | None = None) -> bytes:
        data: bytes = self._portal.call(self._stream.receive, max_bytes, timeout=timeout)
        return data

    def receive_exactly(self, size: int, timeout: float | None = None) -> bytes:
        data: bytes = self._portal.call(self._stream.receive_exactly, size, timeout=timeout)
        return data

    def read_all(self, timeout: float | None = None) -> bytes:
        data: bytes = self._portal.call(self._stream.read_all, timeout=timeout)
        return data

    def finish(self) -> None:
        self._portal.call(self._stream.finish)

    def reset(self, code: int = 0) -> None:
        self._portal.call(self._stream.reset, code)

    def stop(self, code: int = 0) -> None:
        self._portal.call(self._stream.stop, code)

    @property
    def early_bytes(self) -> int:
        return int(self._portal.call(_plain, lambda: self._stream.early_bytes))

    @property
    def queued(self) -> int:
        return int(self._portal.call(_plain, lambda: self._stream.queued))

    @property
    def priority(self) -> int:
        return int(self._portal.call(_plain, lambda: self._stream.priority))

    @priority.setter
    def priority(self, value: int) -> None:
        self._portal.call(_plain, lambda: setattr(self._stream, "priority", value))


class _Connection:
    def __init__(self, portal: _Portal, conn: Any, exit_cm: Callable[[], Any] | None) -> None:
        self._portal, self._conn, self._exit_cm = portal, conn, exit_cm
        self._closed = False

    def _get(self, name: str) -> Any:
        return self._portal.call(_plain, lambda: getattr(self._conn, name))

    @property
    def identity(self) -> sansquic.Identity | None:
        identity: sansquic.Identity | None = self._get("identity")
        return identity

    @property
    def alpn(self) -> str | None:
        alpn: str | None = self._get("alpn")
        return alpn

    @property
    def remote_address(self) -> sansquic.Address | None:
        address: sansquic.Address | None = self._get("remote_address")
        return address

    @property
    def max_datagram_size(self) -> int | None:
        size: int | None = self._get("max_datagram_size")
        return size

    @property
    def transport(self) -> Any:
        return self._get("transport")

    @property
    def resumed(self) -> bool:
        return bool(self._get("resumed"))

    @property
    def early_data_accepted(self) -> bool | None:
        accepted: bool | None = self._get("early_data_accepted")
        return accepted

    def stats(self) -> sansquic.ConnectionStats:
        stats: sansquic.ConnectionStats = self._portal.call(_plain, self._conn.stats)
        return stats

    def open_stream(
        self, bidirectional: bool = True, priority: int = sansquic.Priority.NORMAL
    ) -> _Stream:
        stream = self._portal.call(
            self._conn.open_stream, bidirectional=bidirectional, priority=priority
        )
        return _Stream(self._portal, stream)

    def accept_stream(self, timeout: float | None = None) -> _Stream:
        return _Stream(self._portal, self._portal.call(self._conn.accept_stream, timeout=timeout))

    def __iter__(self) -> Iterator[_Stream]:
        while True:
            try:
                yield self.accept_stream()
            except sansquic.ConnectionClosed:
                return

    def send_datagram(self, data: bytes) -> None:
        self._portal.call(self._conn.send_datagram, data)

    def receive_datagram(self, timeout: float | None = None) -> bytes:
        data: bytes = self._portal.call(self._conn.receive_datagram, timeout=timeout)
        return data

    def update_keys(self) -> None:
        self._portal.call(self._conn.update_keys)

    def migrate(self) -> None:
        self._portal.call(self._conn.migrate)

    def close(self, code: int = 0, reason: str = "") -> None:
        if self._closed:
            return  # closing is idempotent, as in the runtimes
        self._portal.call(self._conn.close, code, reason)  # a bad code raises: nothing changed
        self._closed = True
        try:
            if self._exit_cm is not None:
                self._exit_cm()  # leaves connect()'s task group
        finally:
            if self._exit_cm is not None:
                self._portal.stop()


class _Server:
    def __init__(self, portal: _Portal, server: Any) -> None:
        self._portal, self._server = portal, server
        self.address: tuple[str, int] = server.address
        self._tracked_at_close: int | None = None
        self._portal_stopped = False

    def stats(self) -> sansquic.EndpointStats:
        stats: sansquic.EndpointStats = self._portal.call(_plain, self._server.stats)
        return stats

    def tracked(self) -> int:
        if self._tracked_at_close is not None:
            return self._tracked_at_close  # the portal is gone: what close() left behind
        return int(self._portal.call(_plain, lambda: self._server.tracked))

    def close(self) -> None:
        if self._portal_stopped:
            return  # closing is idempotent, as in the runtimes
        try:
            self._portal.call(self._server.close)
            self._tracked_at_close = self.tracked()
        finally:
            self._portal_stopped = True
            self._portal.stop()


class _ByName:
    """The harness entry points, written once: each calls the runtime's function of
    that name through ``_serve`` or ``_connect``, which is all a harness defines."""

    def _serve(
        self, name: str, handler: Handler, config: sansquic.Config, authenticator: Any
    ) -> Any:
        raise NotImplementedError

    def _connect(self, name: str, *args: Any, **options: Any) -> Any:
        raise NotImplementedError

    def serve(self, handler: Handler, config: sansquic.Config, authenticator: Any = None) -> Any:
        return self._serve("serve", handler, config, authenticator)

    def serve_websocket(
        self, handler: Handler, config: sansquic.Config, authenticator: Any = None
    ) -> Any:
        return self._serve("serve_websocket", handler, config, authenticator)

    def connect(
        self, address: tuple[str, int], config: sansquic.Config, token: str | None = None
    ) -> Any:
        return self._connect("connect", address[0], address[1], config=config, token=token)

    def connect_websocket(
        self, address: tuple[str, int], config: sansquic.Config, token: str | None = None
    ) -> Any:
        return self._connect(
            "connect_websocket", address[0], address[1], config=config, token=token
        )

    def connect_any(
        self,
        quic_address: tuple[str, int],
        websocket_port: int,
        config: sansquic.Config,
        delay: float,
        timeout: float,
    ) -> Any:
        return self._connect(
            "connect_any",
            *quic_address,
            websocket_port=websocket_port,
            config=config,
            delay=delay,
            timeout=timeout,
        )


class AsyncHarness(_ByName):
    """An async runtime (``module``) on an anyio portal ``backend`` ("asyncio" or "trio").

    ``structured`` runtimes serve with ``task_status`` (trio's idiom);
    the others return a server already serving in the background (asyncio's).
    """

    def __init__(self, name: str, module: str, backend: str, *, structured: bool) -> None:
        self.name, self._module, self._backend, self._structured = name, module, backend, structured

    def _runtime(self) -> Any:
        return importlib.import_module(self._module)

    def _serve(
        self, name: str, handler: Handler, config: sansquic.Config, authenticator: Any
    ) -> _Server:
        import anyio
        import anyio.to_thread

        runtime, portal = self._runtime(), _Portal(self._backend)
        serve = getattr(runtime, name)
        limiter: list[anyio.CapacityLimiter] = []

        async def run_handler(conn: Any) -> None:
            if not limiter:  # made in the loop: handlers are threads, many may be alive at once
                limiter.append(anyio.CapacityLimiter(1000))
            blocking = _Connection(portal, conn, exit_cm=None)
            await anyio.to_thread.run_sync(handler, blocking, limiter=limiter[0])

        try:
            if self._structured:
                start = functools.partial(
                    serve, run_handler, "127.0.0.1", 0, config, authenticator=authenticator
                )
                _, server = portal.portal.start_task(start)
            else:
                server = portal.call(
                    serve,
                    run_handler,
                    "127.0.0.1",
                    0,
                    config=config,
                    authenticator=authenticator,
                )
        except BaseException:
            portal.stop()
            raise
        return _Server(portal, server)

    def _connect(self, name: str, *args: Any, **options: Any) -> _Connection:
        runtime, portal = self._runtime(), _Portal(self._backend)
        try:
            cm = portal.portal.wrap_async_context_manager(
                getattr(runtime, name)(*args, server_name="localhost", **options)
            )
            conn = cm.__enter__()
        except BaseException:
            portal.stop()
            raise
        return _Connection(portal, conn, exit_cm=lambda: cm.__exit__(None, None, None))


# -- threads ------------------------------------------------------------------------------


class _ThreadsServer:
    def __init__(self, server: Any) -> None:
        self._server = server
        self.address: tuple[str, int] = server.address

    def stats(self) -> sansquic.EndpointStats:
        stats: sansquic.EndpointStats = self._server.stats()  # QUIC servers only
        return stats

    def tracked(self) -> int:
        return int(self._server.tracked)

    def close(self) -> None:
        self._server.close()


class ThreadsHarness(_ByName):
    """sansquic_threads is already blocking: the harness only fixes the arguments."""

    name = "threads"

    def _serve(
        self, name: str, handler: Handler, config: sansquic.Config, authenticator: Any
    ) -> Any:
        import sansquic_threads

        serve = getattr(sansquic_threads, name)
        return _ThreadsServer(
            serve(handler, "127.0.0.1", 0, config=config, authenticator=authenticator)
        )

    def _connect(self, name: str, *args: Any, **options: Any) -> Any:
        import sansquic_threads

        return getattr(sansquic_threads, name)(*args, server_name="localhost", **options)


def _curio() -> Harness:
    from .curio_harness import CurioHarness  # curio itself is imported only when used

    return CurioHarness()


def _available() -> dict[str, Harness]:
    """Every runtime whose framework is installed (the test extra installs them all;
    curio 1.6 does not import on Python 3.12+, so there it is left out)."""
    portal = ("anyio",)  # async runtimes are driven through anyio's blocking portal
    candidates: list[tuple[str, tuple[str, ...], Callable[[], Harness]]] = [
        (
            "asyncio",
            ("sansquic_asyncio", *portal),
            lambda: AsyncHarness("asyncio", "sansquic_asyncio", "asyncio", structured=False),
        ),
        ("threads", ("sansquic_threads",), ThreadsHarness),
        (
            "trio",
            ("sansquic_trio", "trio", *portal),
            lambda: AsyncHarness("trio", "sansquic_trio", "trio", structured=True),
        ),
        (
            "anyio-asyncio",
            ("sansquic_anyio", *portal),
            lambda: AsyncHarness("anyio-asyncio", "sansquic_anyio", "asyncio", structured=True),
        ),
        (
            "anyio-trio",
            ("sansquic_anyio", "trio", *portal),
            lambda: AsyncHarness("anyio-trio", "sansquic_anyio", "trio", structured=True),
        ),
        ("curio", ("sansquic_curio",), _curio),
    ]
    harnesses: dict[str, Harness] = {}
    for name, modules, make in candidates:
        try:
            for module in modules:
                importlib.import_module(module)
        except ImportError:
            continue
        harnesses[name] = make()
    return harnesses


HARNESSES = _available()
