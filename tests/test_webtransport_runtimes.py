"""The WebTransport glue (written once) on every async runtime, natively on both ends."""

from __future__ import annotations

import contextlib
import functools
import importlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from sansquic_runtime import _wt_async

import sansquic

CONFIG = sansquic.Config(dev_mode=True, alpn=("h3",), idle_timeout=5.0)


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


def _auth(request: sansquic.AuthRequest, address: object, now: float) -> object:
    ok = request.credentials == b"k"
    return sansquic.Identity(subject="u") if ok else sansquic.AuthRejection()


async def scenario(runtime: Any, served: Callable[[Any], Any]) -> None:
    """Written once: a refused session, then an echo on bidi, uni and a datagram."""
    handler = _wt_async.webtransport_handler(_echo, authenticator=_auth)
    async with served(handler) as server:
        port = server.address[1]
        async with runtime.connect("127.0.0.1", port, config=CONFIG) as conn:  # noqa: SIM117
            async with conn._driver.backend.task_group() as group:
                with pytest.raises(PermissionError, match="401"):
                    await _wt_async.open_session(conn, group, "localhost", "/")
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


def _run(name: str) -> None:
    if name == "asyncio":
        import asyncio

        runtime = importlib.import_module("sansquic_asyncio")
        asyncio.run(asyncio.wait_for(scenario(runtime, _background(runtime)), 30))
    elif name == "curio":
        curio = pytest.importorskip("curio")
        runtime = pytest.importorskip("sansquic_curio")
        curio.run(curio.timeout_after, 30, scenario, runtime, _background(runtime))
    elif name == "trio":
        trio = pytest.importorskip("trio")
        runtime = importlib.import_module("sansquic_trio")

        async def main() -> None:
            with trio.fail_after(30):
                await scenario(runtime, _structured(runtime, trio.open_nursery))

        trio.run(main)
    else:
        anyio = pytest.importorskip("anyio")
        runtime = importlib.import_module("sansquic_anyio")
        backend = name.split("-")[1]

        async def main_anyio() -> None:
            with anyio.fail_after(30):
                await scenario(runtime, _structured(runtime, anyio.create_task_group))

        anyio.run(main_anyio, backend=backend)


@pytest.mark.parametrize("name", ["asyncio", "trio", "anyio-asyncio", "anyio-trio", "curio"])
def test_webtransport_glue_on_every_async_runtime(name: str) -> None:
    _run(name)
