"""The one table of what differs between runtimes, for ``sansquic demo --runtime``.

The demo is written once (``_demo_async.py``, and its generated blocking twin
``_demo_sync.py``) against :class:`AsyncRuntime` / :class:`SyncRuntime`. Each
runtime fills in the same few things and nothing else:

- ``connect``: the runtime's own ``connect()``, used as ``async with`` (``with``);
- ``serve``: a context manager around the runtime's ``serve()``, which starts a
  serving server (asyncio, curio, threads) or is started in a task group
  (``await group.start(serve, ...)``: trio, anyio), and closes it on the way out;
- ``task_group``: tasks that end together, ``await group.spawn(fn, *args)``
  (asyncio TaskGroup, trio nursery, anyio task group, curio TaskGroup; threads);
- ``serve_websocket``: the same for the runtime's ``serve_websocket()`` (the fallback);
- ``sleep``, and ``run`` for the demo's main function (a plain call for threads).

A runtime whose framework is not installed raises :class:`MissingFramework`,
which names the pip extra.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import signal
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from contextlib import AbstractAsyncContextManager, AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import sansquic

if TYPE_CHECKING:
    import asyncio

    import anyio.abc
    import trio
    from sansquic_runtime import Connection, Server, WebSocketConnection, WebSocketServer
    from sansquic_runtime._sync import Connection as SyncConnection
    from sansquic_runtime._sync import Server as SyncServer
    from sansquic_runtime._ws_sync import WebSocketConnection as SyncWebSocketConnection
    from sansquic_runtime._ws_sync import WebSocketServer as SyncWebSocketServer

__all__ = ["RUNTIMES", "AsyncRuntime", "MissingFramework", "SyncRuntime", "load"]


class AsyncGroup(Protocol):
    """Tasks that end together: leaving the ``async with`` waits for all of them."""

    async def spawn(self, fn: Callable[..., Coroutine[Any, Any, object]], *args: Any) -> None:
        """Start ``fn(*args)`` as a task of the group (without waiting for it)."""
        ...


class SyncGroup(Protocol):
    """Threads that end together: leaving the ``with`` joins them."""

    def spawn(self, fn: Callable[..., object], *args: Any) -> None: ...


class _AsyncConnect(Protocol):
    def __call__(
        self,
        host: str,
        port: int,
        *,
        config: sansquic.Config | None = ...,
        server_name: str | None = ...,
        token: str | bytes | None = ...,
        timeout: float | None = ...,
    ) -> AbstractAsyncContextManager[Connection]: ...


class _SyncConnect(Protocol):
    def __call__(
        self,
        host: str,
        port: int,
        *,
        config: sansquic.Config | None = ...,
        server_name: str | None = ...,
        token: str | bytes | None = ...,
        timeout: float | None = ...,
    ) -> AbstractContextManager[SyncConnection]: ...


#: ``serve(handler, host, config, authenticator)``: the server, serving, on a free port
#: (``authenticator`` None: no auth).
_AsyncServe = Callable[
    [
        Callable[["Connection"], Awaitable[object]],
        str,
        sansquic.Config,
        sansquic.Authenticator | None,
    ],
    AbstractAsyncContextManager["Server"],
]
_SyncServe = Callable[
    [Callable[["SyncConnection"], object], str, sansquic.Config, sansquic.Authenticator | None],
    AbstractContextManager["SyncServer"],
]
#: ``serve_websocket(handler, host, config, authenticator)``: likewise, on TCP.
_AsyncServeWebSocket = Callable[
    [
        Callable[["WebSocketConnection"], Awaitable[object]],
        str,
        sansquic.Config,
        sansquic.Authenticator | None,
    ],
    AbstractAsyncContextManager["WebSocketServer"],
]
_SyncServeWebSocket = Callable[
    [
        Callable[["SyncWebSocketConnection"], object],
        str,
        sansquic.Config,
        sansquic.Authenticator | None,
    ],
    AbstractContextManager["SyncWebSocketServer"],
]


@dataclass(frozen=True)
class AsyncRuntime:
    """An async runtime, as ``_demo_async.py`` uses it."""

    connect: _AsyncConnect
    serve: _AsyncServe
    serve_websocket: _AsyncServeWebSocket
    task_group: Callable[[], AbstractAsyncContextManager[AsyncGroup]]
    sleep: Callable[[float], Awaitable[object]]
    run: Callable[[Callable[[], Coroutine[Any, Any, int]]], int]


@dataclass(frozen=True)
class SyncRuntime:
    """The blocking runtime, as ``_demo_sync.py`` uses it (its ``run`` is a plain call)."""

    connect: _SyncConnect
    serve: _SyncServe
    serve_websocket: _SyncServeWebSocket
    task_group: Callable[[], AbstractContextManager[SyncGroup]]
    sleep: Callable[[float], object]


# -- serving -----------------------------------------------------------------------------


def _serving(
    serve: Callable[..., Awaitable[Any]],
) -> Callable[..., AbstractAsyncContextManager[Any]]:
    """For a ``serve()`` (or ``serve_websocket()``) that returns a server already serving
    (asyncio, curio)."""

    @contextlib.asynccontextmanager
    async def serving(
        handler: Callable[[Any], Awaitable[object]],
        host: str,
        config: sansquic.Config,
        authenticator: sansquic.Authenticator | None,
    ) -> AsyncIterator[Any]:
        server = await serve(handler, host, 0, config=config, authenticator=authenticator)
        async with server:  # leaving closes it
            yield server

    return serving


class _Starter(Protocol):
    """A trio nursery or an anyio task group: ``start()`` hands back what started."""

    async def start(self, fn: Callable[..., Coroutine[Any, Any, object]], *args: object) -> Any: ...


def _started_in(
    open_group: Callable[[], AbstractAsyncContextManager[_Starter]],
    serve: Callable[..., Coroutine[Any, Any, None]],
) -> Callable[..., AbstractAsyncContextManager[Any]]:
    """For a ``serve()`` (or ``serve_websocket()``) that serves until closed, started in a
    task group (trio, anyio)."""

    @contextlib.asynccontextmanager
    async def serving(
        handler: Callable[[Any], Awaitable[object]],
        host: str,
        config: sansquic.Config,
        authenticator: sansquic.Authenticator | None,
    ) -> AsyncIterator[Any]:
        async with open_group() as group:
            start = functools.partial(serve, authenticator=authenticator)
            server = await group.start(start, handler, host, 0, config)
            async with server:  # leaving closes it, and serve() returns
                yield server

    return serving


# -- task groups ---------------------------------------------------------------------------


class _CreateTask:
    """An asyncio TaskGroup."""

    def __init__(self, group: asyncio.TaskGroup) -> None:
        self._group = group

    async def spawn(self, fn: Callable[..., Coroutine[Any, Any, object]], *args: Any) -> None:
        self._group.create_task(fn(*args))


@contextlib.asynccontextmanager
async def _asyncio_group() -> AsyncIterator[AsyncGroup]:
    import asyncio

    async with asyncio.TaskGroup() as group:
        yield _CreateTask(group)


class _StartSoon:
    """A trio nursery or an anyio task group."""

    def __init__(self, group: trio.Nursery | anyio.abc.TaskGroup) -> None:
        self._group = group

    async def spawn(self, fn: Callable[..., Coroutine[Any, Any, object]], *args: Any) -> None:
        self._group.start_soon(fn, *args)

    async def start(self, fn: Callable[..., Coroutine[Any, Any, object]], *args: object) -> Any:
        return await self._group.start(fn, *args)


@contextlib.asynccontextmanager
async def _trio_group() -> AsyncIterator[_StartSoon]:
    import trio

    async with trio.open_nursery() as nursery:
        yield _StartSoon(nursery)


@contextlib.asynccontextmanager
async def _anyio_group() -> AsyncIterator[_StartSoon]:
    import anyio

    async with anyio.create_task_group() as group:
        yield _StartSoon(group)


class _Spawn:
    """A curio TaskGroup (spawning is itself a coroutine there)."""

    def __init__(self, group: Any) -> None:
        self._group = group

    async def spawn(self, fn: Callable[..., Coroutine[Any, Any, object]], *args: Any) -> None:
        await self._group.spawn(fn, *args)


@contextlib.asynccontextmanager
async def _curio_group() -> AsyncIterator[AsyncGroup]:
    curio = importlib.import_module("curio")
    async with curio.TaskGroup() as group:
        yield _Spawn(group)
    # A curio group cancels the rest when a task fails, but raises nothing: do as the others.
    errors = [error for error in group.exceptions if isinstance(error, Exception)]
    if errors:
        raise ExceptionGroup("unhandled errors in a curio TaskGroup", errors)


class _Threads:
    """Threads started together; leaving the block joins them and raises what they raised.

    Threads cannot be cancelled: the demo's end when their deadline passes or
    their connection closes.
    """

    def __init__(self) -> None:
        self._threads: list[threading.Thread] = []
        self._errors: list[BaseException] = []

    def spawn(self, fn: Callable[..., object], *args: Any) -> None:
        thread = threading.Thread(target=self._run, args=(fn, args), daemon=True)
        self._threads.append(thread)
        thread.start()

    def _run(self, fn: Callable[..., object], args: tuple[Any, ...]) -> None:
        try:
            fn(*args)
        except BaseException as exc:
            self._errors.append(exc)

    def __enter__(self) -> _Threads:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if isinstance(exc_info[1], KeyboardInterrupt):
            return  # Ctrl-C leaves at once: the threads are daemons, they end with the process
        for thread in self._threads:
            thread.join()
        if self._errors and exc_info[0] is None:
            raise BaseExceptionGroup("unhandled errors in a thread group", self._errors)


# -- the table -----------------------------------------------------------------------------


def _asyncio() -> AsyncRuntime:
    import asyncio

    import sansquic_asyncio

    return AsyncRuntime(
        connect=sansquic_asyncio.connect,
        serve=_serving(sansquic_asyncio.serve),
        serve_websocket=_serving(sansquic_asyncio.serve_websocket),
        task_group=_asyncio_group,
        sleep=asyncio.sleep,
        run=lambda main: asyncio.run(main()),
    )


def _trio() -> AsyncRuntime:
    import sansquic_trio
    import trio

    return AsyncRuntime(
        connect=sansquic_trio.connect,
        serve=_started_in(_trio_group, sansquic_trio.serve),
        serve_websocket=_started_in(_trio_group, sansquic_trio.serve_websocket),
        task_group=_trio_group,
        sleep=trio.sleep,
        run=trio.run,
    )


def _anyio(backend: str) -> Callable[[], AsyncRuntime]:
    def load() -> AsyncRuntime:
        import anyio
        import sansquic_anyio

        return AsyncRuntime(
            connect=sansquic_anyio.connect,
            serve=_started_in(_anyio_group, sansquic_anyio.serve),
            serve_websocket=_started_in(_anyio_group, sansquic_anyio.serve_websocket),
            task_group=_anyio_group,
            sleep=anyio.sleep,
            run=lambda main: anyio.run(main, backend=backend),
        )

    return load


def _curio_run(curio: Any, main: Callable[[], Coroutine[Any, Any, int]]) -> int:
    """``curio.run(main)``, with Ctrl-C as a cancellation: curio (1.6) lets Python raise
    KeyboardInterrupt wherever the main thread is, in the middle of the core's work,
    so here SIGINT only raises a flag a watcher turns into cancelling ``main``."""
    if threading.current_thread() is not threading.main_thread():
        return int(curio.run(main))
    interrupted: list[int] = []

    async def watched() -> int | None:
        task = await curio.spawn(main)
        while not task.terminated:
            if interrupted:
                await task.cancel()  # its cleanup runs (servers close); None says why
                return None
            await curio.ignore_after(0.1, task.wait)
        return int(await task.join())

    previous = signal.signal(signal.SIGINT, lambda signum, frame: interrupted.append(signum))
    try:
        status = curio.run(watched)
    finally:
        signal.signal(signal.SIGINT, previous)
    if status is None:
        raise KeyboardInterrupt  # outside curio: raised inside, its kernel fails to shut down
    return int(status)


def _curio() -> AsyncRuntime:
    # By name: the module is newer than this table, and untyped (curio is).
    curio = importlib.import_module("curio")
    sansquic_curio = importlib.import_module("sansquic_curio")
    run: Callable[[Callable[[], Coroutine[Any, Any, int]]], int] = functools.partial(
        _curio_run, curio
    )
    return AsyncRuntime(
        connect=sansquic_curio.connect,
        serve=_serving(sansquic_curio.serve),
        serve_websocket=_serving(sansquic_curio.serve_websocket),
        task_group=_curio_group,
        sleep=curio.sleep,
        run=run,
    )


def _threads() -> SyncRuntime:
    import sansquic_threads

    def serving(serve: Callable[..., Any]) -> Callable[..., AbstractContextManager[Any]]:
        @contextlib.contextmanager
        def served(
            handler: Callable[[Any], object],
            host: str,
            config: sansquic.Config,
            authenticator: sansquic.Authenticator | None,
        ) -> Iterator[Any]:
            server = serve(handler, host, 0, config=config, authenticator=authenticator)
            with server:  # leaving closes it
                yield server

        return served

    return SyncRuntime(
        connect=sansquic_threads.connect,
        serve=serving(sansquic_threads.serve),
        serve_websocket=serving(sansquic_threads.serve_websocket),
        task_group=_Threads,
        sleep=time.sleep,
    )


@dataclass(frozen=True)
class _Row:
    #: The sansquic runtime module, and the frameworks it needs (each a pip extra).
    module: str
    frameworks: tuple[str, ...]
    load: Callable[[], AsyncRuntime | SyncRuntime]


#: Every ``--runtime``: what it imports, and how to load it.
RUNTIMES: dict[str, _Row] = {
    "asyncio": _Row("sansquic_asyncio", (), _asyncio),
    "trio": _Row("sansquic_trio", ("trio",), _trio),
    "anyio": _Row("sansquic_anyio", ("anyio",), _anyio("asyncio")),
    "anyio-trio": _Row("sansquic_anyio", ("anyio", "trio"), _anyio("trio")),
    "curio": _Row("sansquic_curio", ("curio",), _curio),
    "threads": _Row("sansquic_threads", (), _threads),
}


class MissingFramework(Exception):
    """A runtime's framework (or the runtime itself) is not installed; ``str()`` says
    what to install."""


def load(name: str) -> AsyncRuntime | SyncRuntime:
    """The runtime called ``name``; raises :class:`MissingFramework` if it cannot run here."""
    row = RUNTIMES[name]
    for framework in row.frameworks:
        try:
            importlib.import_module(framework)
        except ImportError:
            raise MissingFramework(
                f"--runtime {name} needs {framework}: pip install 'sansquic[{framework}]'"
            ) from None
    try:
        importlib.import_module(row.module)
    except ModuleNotFoundError as exc:
        if exc.name != row.module:
            raise  # something the runtime imports is missing: a real error, shown as one
        raise MissingFramework(
            f"--runtime {name} needs {row.module}, which this sansquic does not have"
        ) from None
    return row.load()
