"""Cancellation, each framework's own way, on every async runtime (anyio drives asyncio and trio).

A cancel scope around a send or a receive ends it at once and leaves the
connection usable: nothing stays parked, the stream is not left busy, and no
task outlives the connection.
"""

from __future__ import annotations

import asyncio
import importlib
import threading
import time
from collections.abc import Iterator

import anyio
import pytest
import sansquic_threads

import sansquic

CONFIG = sansquic.Config(dev_mode=True, trust_dev_certificate=True)
RUNTIMES = [
    ("asyncio", "sansquic_asyncio"),
    ("asyncio", "sansquic_anyio"),
    ("trio", "sansquic_trio"),
    ("trio", "sansquic_anyio"),
]


@pytest.fixture(scope="module")
def server() -> Iterator[sansquic_threads.Server]:
    """Echoes every stream, except one that starts with b"S": it is never read."""
    release = threading.Event()

    def serve_stream(stream: sansquic_threads.Stream) -> None:
        first = stream.receive(timeout=10)
        if first.startswith(b"S"):
            release.wait(30)
            return
        stream.send(first + stream.read_all(timeout=10))
        stream.finish()

    def handler(conn: sansquic_threads.Connection) -> None:
        for stream in conn:
            threading.Thread(target=serve_stream, args=(stream,), daemon=True).start()

    with sansquic_threads.serve(handler, "127.0.0.1", 0, config=CONFIG) as running:
        yield running
        release.set()


@pytest.mark.parametrize(("backend", "module"), RUNTIMES, ids=[f"{m}-{b}" for b, m in RUNTIMES])
def test_cancelled_send_and_receive_leave_the_connection_usable(
    server: sansquic_threads.Server, backend: str, module: str
) -> None:
    runtime = importlib.import_module(module)

    async def main() -> None:
        tasks_before = len(asyncio.all_tasks()) if backend == "asyncio" else 0
        async with runtime.connect(
            "127.0.0.1", server.address[1], config=CONFIG, server_name="localhost"
        ) as conn:
            stalled = await conn.open_stream()
            with anyio.move_on_after(0.3) as scope:
                await stalled.send(b"S" * (8 << 20))  # far beyond every window: it blocks
            assert scope.cancelled_caught, "8 MiB went out to a peer that reads nothing"

            silent = await conn.open_stream()
            await silent.send(b"echo me once I finish")
            with anyio.move_on_after(0.2) as scope:
                await silent.receive()  # nothing comes before the FIN
            assert scope.cancelled_caught
            assert conn._driver.backend.parked() == 0  # the cancelled waiters are gone

            await silent.finish()  # not left busy: the same stream works on
            assert await silent.read_all(timeout=10) == b"echo me once I finish"
            fresh = await conn.open_stream()
            await fresh.send(b"still usable")
            await fresh.finish()
            assert await fresh.read_all(timeout=10) == b"still usable"
        if backend == "asyncio":
            await asyncio.sleep(0)
            assert len(asyncio.all_tasks()) == tasks_before  # the I/O task ended with it

    anyio.run(main, backend=backend)


@pytest.mark.parametrize(("backend", "module"), RUNTIMES, ids=[f"{m}-{b}" for b, m in RUNTIMES])
def test_a_cancelled_connection_still_says_goodbye(
    server: sansquic_threads.Server, backend: str, module: str
) -> None:
    """Cancelling the scope around ``async with connect()`` cancels its I/O task too; the
    peer must still get the CONNECTION_CLOSE, not wait for its idle timeout."""
    runtime = importlib.import_module(module)
    before = server.stats().active

    async def main() -> None:
        with anyio.move_on_after(0.5):
            async with runtime.connect(
                "127.0.0.1", server.address[1], config=CONFIG, server_name="localhost"
            ) as conn:
                await conn.open_stream()
                await anyio.sleep(10)  # cancelled here

    for _ in range(3):  # the I/O task may be cancelled before or after the body
        anyio.run(main, backend=backend)
    deadline = time.monotonic() + 3
    while server.stats().active > before and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.stats().active == before


STRUCTURED = [("trio", "sansquic_trio"), ("asyncio", "sansquic_anyio"), ("trio", "sansquic_anyio")]


@pytest.mark.parametrize(("backend", "module"), STRUCTURED, ids=[f"{m}-{b}" for b, m in STRUCTURED])
def test_cancelling_a_structured_server_tells_its_clients(backend: str, module: str) -> None:
    runtime = importlib.import_module(module)
    ready: list[tuple[str, int]] = []
    told: list[sansquic.ConnectionClosed] = []

    def client() -> None:
        while not ready:
            time.sleep(0.01)
        with sansquic_threads.connect(
            *ready[0], config=CONFIG, server_name="localhost", timeout=5
        ) as conn:
            try:
                conn.accept_stream(timeout=5)  # the server never opens one: it goes away
            except sansquic.ConnectionClosed as exc:
                told.append(exc)

    async def handler(conn: object) -> None:
        await anyio.sleep(30)

    async def main() -> None:
        with anyio.move_on_after(1.0):
            async with anyio.create_task_group() as group:
                server = await group.start(runtime.serve, handler, "127.0.0.1", 0, CONFIG)
                ready.append(server.address)

    thread = threading.Thread(target=client)
    thread.start()
    anyio.run(main, backend=backend)
    thread.join(10)
    assert told and told[0].by_peer, told  # told by the server, not by a timeout
