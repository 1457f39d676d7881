"""The WebTransport glue (written once) on every pair of async runtimes, each native."""

from __future__ import annotations

import contextlib
import functools
import importlib
import queue
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from sansquic_runtime import _wt_async, _wt_sync

import sansquic

CONFIG = sansquic.Config(dev_mode=True, trust_dev_certificate=True, alpn=("h3",), idle_timeout=5.0)
#: Both sides' session limits: the 20 kB echo crosses the data window both ways, so
#: session credit must flow back on every pair.
LIMITS = sansquic.SessionLimits(max_data=8192, max_streams_bidi=2, max_streams_uni=2)


async def _echo(session: _wt_async.WebTransportSession) -> None:
    """Echo streams (bidi on themselves, uni on a new uni stream) and datagrams."""

    async def datagrams() -> None:
        with contextlib.suppress(sansquic.ConnectionClosed):
            while True:
                await session.send_datagram(await session.receive_datagram())

    backend = session._glue.conn._driver.backend
    with contextlib.suppress(sansquic.ConnectionClosed):
        async with backend.task_group() as group:
            group.start_soon(datagrams)
            while True:
                stream = await session.accept_stream()
                data = await stream.read_all(timeout=5)
                if stream.id & 2:
                    stream = await session.open_stream(bidirectional=False)
                await stream.send(data)
                await stream.finish()


def _echo_blocking(session: _wt_sync.WebTransportSession) -> None:
    """The same echo on the threads runtime (the glue's generated blocking twin)."""

    def datagrams() -> None:
        with contextlib.suppress(sansquic.ConnectionClosed):
            while True:
                session.send_datagram(session.receive_datagram())

    threading.Thread(target=datagrams, daemon=True).start()
    with contextlib.suppress(sansquic.ConnectionClosed):
        while True:
            stream = session.accept_stream()
            data = stream.read_all(timeout=5)
            if stream.id & 2:
                stream = session.open_stream(bidirectional=False)
            stream.send(data)
            stream.finish()


def scenario_blocking(port: int) -> None:
    """The client side of :func:`scenario` on the threads runtime."""
    import sansquic_threads

    with sansquic_threads.connect("127.0.0.1", port, config=CONFIG) as conn:  # noqa: SIM117
        with conn._driver.backend.task_group() as group:
            with pytest.raises(PermissionError, match="401"):
                _wt_sync.open_session(conn, group, "localhost", "/", session_limits=LIMITS)
            session = _wt_sync.open_session(conn, group, "localhost", "/?token=k")
            bidi = session.open_stream()
            bidi.send(b"b" * 20000)
            bidi.finish()
            assert bidi.read_all(timeout=5) == b"b" * 20000
            uni = session.open_stream(bidirectional=False)
            uni.send(b"u")
            uni.finish()
            assert session.accept_stream(timeout=5).read_all(timeout=5) == b"u"
            for _ in range(20):
                session.send_datagram(b"d")
                with contextlib.suppress(TimeoutError):
                    assert session.receive_datagram(timeout=0.5) == b"d"
                    break
            else:
                raise AssertionError("no datagram came back")
            session.close()
            conn.close()


def _auth(request: sansquic.AuthRequest, address: object, now: float) -> object:
    ok = request.credentials == b"k"
    return sansquic.Identity(subject="u") if ok else sansquic.AuthRejection()


async def scenario(runtime: Any, port: int) -> None:
    """Written once, the client side: a refused session, then an echo on bidi, uni and
    a datagram, against the server at ``port`` (any runtime)."""
    async with runtime.connect("127.0.0.1", port, config=CONFIG) as conn:  # noqa: SIM117
        async with conn._driver.backend.task_group() as group:
            with pytest.raises(PermissionError, match="401"):
                await _wt_async.open_session(conn, group, "localhost", "/", session_limits=LIMITS)
            session = await _wt_async.open_session(conn, group, "localhost", "/?token=k")
            bidi = await session.open_stream()
            await bidi.send(b"b" * 20000)
            await bidi.finish()
            assert await bidi.read_all(timeout=5) == b"b" * 20000
            uni = await session.open_stream(bidirectional=False)
            await uni.send(b"u")
            await uni.finish()
            back = await session.accept_stream(timeout=5)
            assert await back.read_all(timeout=5) == b"u"
            for _ in range(20):  # datagrams may be lost, even on loopback
                await session.send_datagram(b"d")
                with contextlib.suppress(TimeoutError):
                    assert await session.receive_datagram(timeout=0.5) == b"d"
                    break
            else:
                raise AssertionError("no datagram came back")
            # Streams done both ways leave no record behind, in the glue or the core layer.
            glue = _wt_async._CLIENTS[conn._core]
            assert glue._streams == {}
            assert [s for s in glue.h3._streams.values() if s.kind.value == "wt"] == []
            await session.close()
            await conn.close()


def _background(runtime: Any) -> Callable[[Any], Any]:
    """serve() that returns a server already serving (asyncio's, curio's idiom)."""

    @contextlib.asynccontextmanager
    async def served(handler: Any) -> AsyncIterator[Any]:
        server = await runtime.serve(handler, "127.0.0.1", 0, config=CONFIG)
        try:
            yield server
        finally:
            await server.close()

    return served


def _structured(runtime: Any, open_group: Callable[[], Any]) -> Callable[[Any], Any]:
    """serve() started in a nursery / task group (trio's, anyio's idiom)."""

    @contextlib.asynccontextmanager
    async def served(handler: Any) -> AsyncIterator[Any]:
        async with open_group() as group:
            server = await group.start(
                functools.partial(runtime.serve, handler, "127.0.0.1", 0, CONFIG)
            )
            try:
                yield server
            finally:
                await server.close()

    return served


NAMES = ["asyncio", "trio", "anyio-asyncio", "anyio-trio", "curio", "threads"]


def _runtime(name: str) -> tuple[Any, Callable[[Callable[[], Any]], None], Callable[..., Any]]:
    """The runtime module, how to run a coroutine function on it, and its sleep."""
    if name == "asyncio":
        import asyncio

        return (
            importlib.import_module("sansquic_asyncio"),
            lambda fn: asyncio.run(fn()),
            (asyncio.sleep),
        )
    if name == "curio":
        curio = pytest.importorskip("curio")
        return pytest.importorskip("sansquic_curio"), curio.run, curio.sleep
    if name == "trio":
        trio = pytest.importorskip("trio")
        return importlib.import_module("sansquic_trio"), trio.run, trio.sleep
    anyio = pytest.importorskip("anyio")
    backend = name.split("-")[1]
    runtime = importlib.import_module("sansquic_anyio")
    return runtime, lambda fn: anyio.run(fn, backend=backend), anyio.sleep


def _served(name: str, runtime: Any) -> Callable[[Any], Any]:
    if name in ("asyncio", "curio"):
        return _background(runtime)
    if name == "trio":
        import trio

        return _structured(runtime, trio.open_nursery)
    import anyio

    return _structured(runtime, anyio.create_task_group)


@contextlib.contextmanager
def _server_thread(name: str) -> Iterator[int]:
    """A WebTransport echo server on runtime ``name``, in a thread of its own; its port."""
    if name == "threads":
        import sansquic_threads

        handler = _wt_sync.webtransport_handler(
            _echo_blocking,  # type: ignore[arg-type]
            authenticator=_auth,
            session_limits=LIMITS,
        )
        with sansquic_threads.serve(handler, "127.0.0.1", 0, config=CONFIG) as server:
            yield server.address[1]
        return
    runtime, run, sleep = _runtime(name)
    ports: queue.Queue[int] = queue.Queue()
    stop = threading.Event()
    failure: list[BaseException] = []

    async def main() -> None:
        handler = _wt_async.webtransport_handler(_echo, authenticator=_auth, session_limits=LIMITS)
        async with _served(name, runtime)(handler) as server:
            ports.put(server.address[1])
            for _ in range(3000):  # at most 60 s
                if stop.is_set():
                    return
                await sleep(0.02)

    def target() -> None:
        try:
            run(main)
        except BaseException as exc:
            failure.append(exc)
            ports.put(-1)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    try:
        port = ports.get(timeout=10)
        if failure:
            raise failure[0]
        yield port
    finally:
        stop.set()
        thread.join(timeout=10)
    assert not thread.is_alive(), f"the {name} server did not stop"
    if failure:
        raise failure[0]


@pytest.mark.parametrize("server_name", NAMES)
@pytest.mark.parametrize("client_name", NAMES)
def test_webtransport_glue_on_every_runtime_pair(client_name: str, server_name: str) -> None:
    with _server_thread(server_name) as port:
        if client_name == "threads":
            scenario_blocking(port)
        else:
            client, run, _ = _runtime(client_name)
            run(lambda: scenario(client, port))
