"""The runtimes over real loopback UDP: sansquic_asyncio, sansquic_threads and raw aioquic.

Each stack serves on 127.0.0.1 and a client of the same stack connects to it,
in this one process (server and client share the CPU and, for the asyncio
stacks, one event loop; the threads runtime runs the server's handler in its
own thread, as it always does). Each measurement gets a fresh connection and
the handshake is not timed:

- bulk: one stream carries 20 MB (1 MB = 10**6 bytes) in 64 KiB sends; the
  server reads and discards it, then replies with the byte count and FIN.
  MB/s from the first send until the client has read the reply.
- messages: one stream carries 1000-byte messages, sent one call each as fast
  as the stack takes them (a fixed count, cut short after a time limit); the
  server counts the bytes and replies at the end of the stream. Messages per
  second from the first send until the client has read the reply.
- echo: sequentially, open a stream, send 100 bytes, finish, read the echo to
  its end (after a few untimed warm-up rounds); p50 and p99 in ms.

sansquic uses ``Config(dev_mode=True)``; raw aioquic (``aioquic.asyncio.serve``
and ``connect`` with its stream reader/writer pairs) gets the same windows
(16 MiB connection, 1 MiB stream), 1200-byte packets, Reno and idle timeout.
Differences that remain: sansquic grows its receive windows when they limit a
transfer, and raw aioquic's writer has no backpressure (it buffers every write
at once); aioquic's client binds a dual-stack socket on "::" (it still talks to
127.0.0.1). Stacks alternate within each repeat so drift hits all alike. Each
run's line also shows the UDP datagrams the kernel dropped for a full receive
buffer during bulk/messages/echo (Linux, machine-wide), as loss explains a
slow run. Run from the repository root::

    python benchmarks/runtimes.py --repeat 3

The machine has 2 cores and other work may be running: read the medians.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import ssl
import statistics
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Protocol

import aioquic
import sansquic_asyncio
import sansquic_threads
from aioquic.asyncio.client import connect as raw_connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.asyncio.server import serve as raw_serve
from aioquic.quic.configuration import QuicConfiguration
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from cryptography.x509 import load_pem_x509_certificate

import sansquic

HOST = "127.0.0.1"
BULK_BYTES = 20_000_000
CHUNK = 64 * 1024
MESSAGE = b"m" * 1000
MESSAGE_COUNT = 20_000
MESSAGE_TIME_LIMIT = 10.0  # seconds of sending at most, whatever the count
ECHO_ROUNDS = 500
ECHO_WARMUP = 10
ECHO_PAYLOAD = b"E" * 100  # the server echoes streams that start with b"E"
IO_TIMEOUT = 30.0  # seconds any single blocking call may take
RUN_TIMEOUT = 120.0  # seconds one stack's three measurements may take together


@dataclass
class Result:
    bulk_mb_s: float
    messages_s: float
    echo_ms: list[float]
    drops: list[int | None]  # UDP receive-buffer drops during bulk, messages, echo


def _rcvbuf_errors() -> int | None:
    """Linux's machine-wide count of UDP datagrams dropped for a full receive buffer."""
    try:
        with open("/proc/net/snmp") as snmp:
            names, counts = (line.split() for line in snmp if line.startswith("Udp:"))
    except (OSError, ValueError):
        return None
    return int(dict(zip(names, counts, strict=True))["RcvbufErrors"])


class DropCounter:
    """``with counter:`` around a measurement appends the drops seen during it."""

    def __init__(self) -> None:
        self.counts: list[int | None] = []
        self._before: int | None = None

    def __enter__(self) -> None:
        self._before = _rcvbuf_errors()

    def __exit__(self, *exc: object) -> None:
        after, before = _rcvbuf_errors(), self._before
        self.counts.append(None if after is None or before is None else after - before)


def _messages_rate(reply: bytes, elapsed: float) -> float:
    return int(reply) // len(MESSAGE) / elapsed


def _bulk_rate(reply: bytes, elapsed: float) -> float:
    if int(reply) != BULK_BYTES:
        raise RuntimeError(f"server counted {int(reply)} bytes, not {BULK_BYTES}")
    return BULK_BYTES / 1e6 / elapsed


# -- the asyncio stacks: one client and one server logic, two adapters -------------------


class AsyncStream(Protocol):
    async def send(self, data: bytes) -> None: ...
    async def finish(self) -> None: ...
    async def receive(self) -> bytes: ...  # b"" at the end of the stream


async def _serve_stream(stream: AsyncStream) -> None:
    """Echo a stream that starts with b"E"; otherwise reply with its byte count."""
    data = await stream.receive()
    if data[:1] == b"E":
        while data:
            await stream.send(data)
            data = await stream.receive()
    else:
        count = len(data)
        while data:
            data = await stream.receive()
            count += len(data)
        await stream.send(str(count).encode())
    await stream.finish()


async def _read_all(stream: AsyncStream) -> bytes:
    parts = [await stream.receive()]
    while parts[-1]:
        parts.append(await stream.receive())
    return b"".join(parts)


async def _async_bulk(open_stream: Callable[[], Awaitable[AsyncStream]]) -> float:
    data = memoryview(b"b" * BULK_BYTES)
    stream = await open_stream()
    start = time.perf_counter()
    for offset in range(0, BULK_BYTES, CHUNK):
        await stream.send(bytes(data[offset : offset + CHUNK]))
    await stream.finish()
    reply = await _read_all(stream)
    return _bulk_rate(reply, time.perf_counter() - start)


async def _async_messages(open_stream: Callable[[], Awaitable[AsyncStream]]) -> float:
    stream = await open_stream()
    start = time.perf_counter()
    stop = start + MESSAGE_TIME_LIMIT
    for i in range(MESSAGE_COUNT):
        await stream.send(MESSAGE)
        if i % 256 == 255 and time.perf_counter() > stop:
            break
    await stream.finish()
    reply = await _read_all(stream)
    return _messages_rate(reply, time.perf_counter() - start)


async def _async_echo(open_stream: Callable[[], Awaitable[AsyncStream]]) -> list[float]:
    samples: list[float] = []
    for i in range(ECHO_WARMUP + ECHO_ROUNDS):
        start = time.perf_counter()
        stream = await open_stream()
        await stream.send(ECHO_PAYLOAD)
        await stream.finish()
        if await _read_all(stream) != ECHO_PAYLOAD:
            raise RuntimeError("echo mismatch")
        if i >= ECHO_WARMUP:
            samples.append((time.perf_counter() - start) * 1e3)
    return samples


async def _async_measure(
    connection: Callable[[], AsyncIterator[Callable[[], Awaitable[AsyncStream]]]],
) -> Result:
    """The three measurements, each on a fresh connection from ``connection``."""
    fresh, drops = asynccontextmanager(connection), DropCounter()
    async with asyncio.timeout(RUN_TIMEOUT):
        async with fresh() as open_stream:
            with drops:
                bulk = await _async_bulk(open_stream)
        async with fresh() as open_stream:
            with drops:
                messages = await _async_messages(open_stream)
        async with fresh() as open_stream:
            with drops:
                echo = await _async_echo(open_stream)
    return Result(bulk, messages, echo, drops.counts)


class _SansquicStream:
    """sansquic_asyncio.Stream with the IO timeout on every wait."""

    def __init__(self, stream: sansquic_asyncio.Stream) -> None:
        self._stream = stream

    async def send(self, data: bytes) -> None:
        await self._stream.send(data, timeout=IO_TIMEOUT)

    async def finish(self) -> None:
        await self._stream.finish()

    async def receive(self) -> bytes:
        return await self._stream.receive(timeout=IO_TIMEOUT)


async def run_sansquic_asyncio() -> Result:
    config = sansquic.Config(dev_mode=True)

    async def handler(conn: sansquic_asyncio.Connection) -> None:
        async for stream in conn:
            await _serve_stream(_SansquicStream(stream))

    server = await sansquic_asyncio.serve(handler, HOST, 0, config=config)

    async def connection() -> AsyncIterator[Callable[[], Awaitable[AsyncStream]]]:
        conn = await sansquic_asyncio.connect(
            HOST, server.address[1], config=config, server_name="localhost"
        )

        async def open_stream() -> AsyncStream:
            return _SansquicStream(await conn.open_stream())

        try:
            yield open_stream
        finally:
            conn.close()
            await conn.wait_closed()

    try:
        return await _async_measure(connection)
    finally:
        await server.close()


class _RawStream:
    """An aioquic (reader, writer) pair; ``write`` queues at once, there is nothing to await."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer

    async def send(self, data: bytes) -> None:
        self._writer.write(data)

    async def finish(self) -> None:
        self._writer.write_eof()

    async def receive(self) -> bytes:
        async with asyncio.timeout(IO_TIMEOUT):
            return await self._reader.read(1 << 20)


def _raw_config(is_client: bool) -> QuicConfiguration:
    """sansquic's windows, packet size, congestion control and idle timeout."""
    return QuicConfiguration(
        is_client=is_client,
        alpn_protocols=["bench"],
        max_data=16 * 1024 * 1024,
        max_stream_data=1024 * 1024,
        max_datagram_size=1200,
        congestion_control_algorithm="reno",
        idle_timeout=30.0,
    )


async def run_raw_aioquic() -> Result:
    pair = sansquic.make_dev_certificate()
    server_config = _raw_config(is_client=False)
    server_config.certificate = load_pem_x509_certificate(pair.certificate)
    server_config.private_key = load_pem_private_key(pair.private_key, password=None)
    client_config = _raw_config(is_client=True)
    client_config.server_name = "localhost"
    client_config.verify_mode = ssl.CERT_NONE
    tasks: set[asyncio.Task[None]] = set()

    def stream_handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.create_task(_serve_stream(_RawStream(reader, writer)))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    server = await raw_serve(HOST, 0, configuration=server_config, stream_handler=stream_handler)
    assert server._transport is not None  # QuicServer keeps its socket private
    port = server._transport.get_extra_info("sockname")[1]

    async def connection() -> AsyncIterator[Callable[[], Awaitable[AsyncStream]]]:
        async with raw_connect(HOST, port, configuration=client_config) as client:
            assert isinstance(client, QuicConnectionProtocol)

            async def open_stream() -> AsyncStream:
                return _RawStream(*await client.create_stream())

            yield open_stream

    try:
        return await _async_measure(connection)
    finally:
        server.close()
        for task in list(tasks):
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


# -- the threads runtime: the same logic, blocking -----------------------------------------


def _threads_serve_stream(stream: sansquic_threads.Stream) -> None:
    data = stream.receive(timeout=IO_TIMEOUT)
    if data[:1] == b"E":
        while data:
            stream.send(data, timeout=IO_TIMEOUT)
            data = stream.receive(timeout=IO_TIMEOUT)
    else:
        count = len(data)
        while data:
            data = stream.receive(timeout=IO_TIMEOUT)
            count += len(data)
        stream.send(str(count).encode(), timeout=IO_TIMEOUT)
    stream.finish()


def _threads_read_all(stream: sansquic_threads.Stream) -> bytes:
    parts = [stream.receive(timeout=IO_TIMEOUT)]
    while parts[-1]:
        parts.append(stream.receive(timeout=IO_TIMEOUT))
    return b"".join(parts)


def _threads_bulk(conn: sansquic_threads.Connection) -> float:
    data = memoryview(b"b" * BULK_BYTES)
    stream = conn.open_stream()
    start = time.perf_counter()
    for offset in range(0, BULK_BYTES, CHUNK):
        stream.send(bytes(data[offset : offset + CHUNK]), timeout=IO_TIMEOUT)
    stream.finish()
    reply = _threads_read_all(stream)
    return _bulk_rate(reply, time.perf_counter() - start)


def _threads_messages(conn: sansquic_threads.Connection) -> float:
    stream = conn.open_stream()
    start = time.perf_counter()
    stop = start + MESSAGE_TIME_LIMIT
    for i in range(MESSAGE_COUNT):
        stream.send(MESSAGE, timeout=IO_TIMEOUT)
        if i % 256 == 255 and time.perf_counter() > stop:
            break
    stream.finish()
    reply = _threads_read_all(stream)
    return _messages_rate(reply, time.perf_counter() - start)


def _threads_echo(conn: sansquic_threads.Connection) -> list[float]:
    samples: list[float] = []
    for i in range(ECHO_WARMUP + ECHO_ROUNDS):
        start = time.perf_counter()
        stream = conn.open_stream()
        stream.send(ECHO_PAYLOAD, timeout=IO_TIMEOUT)
        stream.finish()
        if _threads_read_all(stream) != ECHO_PAYLOAD:
            raise RuntimeError("echo mismatch")
        if i >= ECHO_WARMUP:
            samples.append((time.perf_counter() - start) * 1e3)
    return samples


def run_sansquic_threads() -> Result:
    config = sansquic.Config(dev_mode=True)

    def handler(conn: sansquic_threads.Connection) -> None:
        for stream in conn:  # ends when the client closes the connection
            _threads_serve_stream(stream)

    server = sansquic_threads.serve(handler, HOST, 0, config=config)
    try:

        def fresh() -> sansquic_threads.Connection:
            return sansquic_threads.connect(
                HOST, server.address[1], config=config, server_name="localhost"
            )

        drops = DropCounter()
        with fresh() as conn, drops:
            bulk = _threads_bulk(conn)
        with fresh() as conn, drops:
            messages = _threads_messages(conn)
        with fresh() as conn, drops:
            echo = _threads_echo(conn)
        return Result(bulk, messages, echo, drops.counts)
    finally:
        server.close(timeout=IO_TIMEOUT)  # joins the handler threads


# -- report ---------------------------------------------------------------------------------

STACKS: dict[str, Callable[[], Result]] = {
    "sansquic_asyncio": lambda: asyncio.run(run_sansquic_asyncio()),
    "sansquic_threads": run_sansquic_threads,
    "raw aioquic": lambda: asyncio.run(run_raw_aioquic()),
}
METRICS: dict[str, Callable[[Result], float]] = {
    "bulk MB/s": lambda r: r.bulk_mb_s,
    "1 KB msgs/s": lambda r: r.messages_s,
    "echo p50 ms": lambda r: statistics.median(r.echo_ms),
    "echo p99 ms": lambda r: statistics.quantiles(r.echo_ms, n=100)[98],
}


def _fmt(value: float) -> str:
    return f"{value:.0f}" if value >= 100 else f"{value:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print(
        f"Python {platform.python_version()}, aioquic {aioquic.__version__}, "
        f"sansquic {sansquic.__version__}, os.cpu_count() = {os.cpu_count()} "
        "(a 2-core machine shared with other work is noisy: read the medians)"
    )
    values: dict[str, dict[str, list[float]]] = {
        stack: {metric: [] for metric in METRICS} for stack in STACKS
    }
    for repeat in range(args.repeat):
        for stack, run in STACKS.items():
            began = time.perf_counter()
            result = run()
            line = []
            for metric, get in METRICS.items():
                values[stack][metric].append(get(result))
                line.append(f"{metric} {_fmt(get(result))}")
            took = time.perf_counter() - began
            line.append("rcvbuf drops " + "/".join(str(n) for n in result.drops))
            print(f"  run {repeat + 1} {stack:16} " + ", ".join(line) + f" ({took:.1f} s)")

    print(f"\nmedian [min-max] of {args.repeat} runs")
    print(f"{'metric':12}" + "".join(f"{stack:>24}" for stack in STACKS))
    for metric in METRICS:
        cells = []
        for stack in STACKS:
            runs = values[stack][metric]
            low, mid, high = min(runs), statistics.median(runs), max(runs)
            cells.append(f"{_fmt(mid)} [{_fmt(low)}-{_fmt(high)}]")
        print(f"{metric:12}" + "".join(f"{cell:>24}" for cell in cells))

    print("\nratio sansquic/raw aioquic of the medians (rates: higher is better; ms: lower is)")
    print(f"{'metric':12}" + "".join(f"{stack:>24}" for stack in list(STACKS)[:2]))
    for metric in METRICS:
        raw = statistics.median(values["raw aioquic"][metric])
        cells = [f"{statistics.median(values[stack][metric]) / raw:.2f}" for stack in STACKS]
        print(f"{metric:12}" + "".join(f"{cell:>24}" for cell in cells[:2]))


if __name__ == "__main__":
    main()
