"""Every sansquic runtime over real loopback UDP, next to raw aioquic, client and server apart.

Stacks (each one only if it imports): sansquic on asyncio, trio, anyio (on its
asyncio and its trio backend), threads and curio; raw aioquic's own asyncio
API (``aioquic.asyncio.serve`` / ``connect`` with stream reader/writer pairs);
and a minimal raw aioquic driver: a plain loop on a non-blocking UDP socket,
``select``, then every ready datagram into ``QuicConnection.receive_datagram``,
``handle_timer`` when due, and only then ``datagrams_to_send``.

For each stack a server process and a client process of that stack run side
by side on 127.0.0.1 for the whole run (started before any measurement). The
parent tells one client at a time what to measure, so only one pair is ever
busy; the others sleep. Every measurement ("cell") gets a fresh connection
and the handshake is not timed:

- bulk: one stream carries up to 20 MB (1 MB = 10**6 bytes) in 64 KiB sends,
  cut short after 3 s of sending; the server counts the bytes and replies with
  the count and FIN. MB/s from the first send until the reply is read.
- messages: round trips on one stream: send 1000 bytes, read the 1000-byte
  echo, repeat (up to 5000, at most 2 s). Round trips per second.
- echo: open a stream, send 1 byte, finish, read the echo to its end, in
  sequence on one connection (10 untimed warm-up rounds, then up to 500, at
  most 3 s); p50 and p99 in microseconds.

Rounds interleave: each round runs bulk for every stack, then messages for
every stack, then echo, with the stack order rotated by one each round, so
machine noise hits all stacks alike. The table shows the median over rounds
(echo p50/p99 are per-round figures, then the median of those) and each
median divided by raw aioquic's asyncio API ("/api") and by the minimal driver
("/min"): for rates above 1 is faster, for latencies above 1 is slower.

sansquic uses ``Config(dev_mode=True)`` (16 MiB connection, 1 MiB stream
windows, 1200-byte packets, Reno, 30 s idle timeout); both raw aioquic stacks
get the same settings. Differences that remain: sansquic grows its receive
windows when they limit a transfer, asks for a 1 MiB socket receive buffer
and sends runs of datagrams with UDP GSO; the minimal driver also asks for
1 MiB but sends each datagram with ``sendto``; raw aioquic's asyncio API
keeps the kernel's default buffer and binds its client on "::". Neither raw
stack has send backpressure: their bulk sends are queued at once, so the 3 s
cut never applies to them (the 20 MB count still does). Each cell's line
shows the UDP datagrams the kernel dropped for a full receive buffer during
it (Linux, machine-wide). Run from the repository root::

    python benchmarks/runtimes.py                 # 7 rounds, 4-5 minutes
    python benchmarks/runtimes.py --quick         # a smoke run: 1 short round
    python benchmarks/runtimes.py --json out.json --stacks asyncio,aioquic-minimal

The machine may be small and shared: read the medians and their spread.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import importlib
import json
import math
import os
import platform
import select
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import AbstractAsyncContextManager, AbstractContextManager, asynccontextmanager
from dataclasses import asdict, dataclass
from typing import IO, Any, Protocol

import aioquic
import sansquic_asyncio
import sansquic_threads
from aioquic.asyncio.client import connect as raw_connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.asyncio.server import serve as raw_serve
from aioquic.buffer import Buffer  # type: ignore[attr-defined]  # re-exported from _buffer
from aioquic.quic import events as qe
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.packet import QuicPacketType, pull_quic_header
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from cryptography.x509 import load_pem_x509_certificate
from sansquic_runtime import Connect

import sansquic

HOST = "127.0.0.1"
CHUNK = 64 * 1024
BULK_CHUNK = b"B" * CHUNK  # the server counts streams that start with b"B" ...
MESSAGE = b"m" * 1000  # ... and echoes every other stream
ECHO_BYTE = b"e"
IO_TIMEOUT = 10.0  # seconds any single blocking call may take
CONNECT_TIMEOUT = 10.0
CLOSE_TIMEOUT = 2.0  # the minimal driver's wait for its close to complete
START_TIMEOUT = 60.0  # seconds a child process may take to start (imports, bind)
CELL_MARGIN = 30.0  # seconds a cell may run past its time limit before it is killed
MAX_FAILURES = 3  # a stack whose cells fail this often is dropped for the rest of the run
PREFIX = b"@@ "  # children's protocol lines on stdout start with this


@dataclass(frozen=True)
class Params:
    """Counts and time limits of one cell of each scenario."""

    bulk_bytes: int
    bulk_seconds: float
    msg_count: int
    msg_seconds: float
    echo_rounds: int
    echo_warmup: int
    echo_seconds: float

    def seconds(self, scenario: str) -> float:
        return {"bulk": self.bulk_seconds, "msgs": self.msg_seconds, "echo": self.echo_seconds}[
            scenario
        ]


FULL = Params(20_000_000, 3.0, 5000, 2.0, 500, 10, 3.0)
QUICK = Params(4_000_000, 1.0, 1000, 1.0, 200, 5, 1.0)
SCENARIOS = ("bulk", "msgs", "echo")

#: Stack name -> the modules it needs; the two references come last.
STACKS: dict[str, tuple[str, ...]] = {
    "asyncio": ("sansquic_asyncio",),
    "trio": ("trio", "sansquic_trio"),
    "anyio-asyncio": ("anyio", "sansquic_anyio"),
    "anyio-trio": ("anyio", "trio", "sansquic_anyio"),
    "threads": ("sansquic_threads",),
    "curio": ("curio", "sansquic_curio"),
    "aioquic-asyncio": ("aioquic.asyncio",),
    "aioquic-minimal": ("aioquic.quic.connection",),
}
API, MINIMAL = "aioquic-asyncio", "aioquic-minimal"

#: Table column -> (scenario, key in the client's result, format).
METRICS: dict[str, tuple[str, str, str]] = {
    "bulk MB/s": ("bulk", "mb_s", "{:.1f}"),
    "1KB round trips/s": ("msgs", "per_s", "{:.0f}"),
    "echo p50 us": ("echo", "p50_us", "{:.0f}"),
    "echo p99 us": ("echo", "p99_us", "{:.0f}"),
}


@functools.cache
def sansquic_config() -> sansquic.Config:
    return sansquic.Config(dev_mode=True)


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


def _raw_client_config() -> QuicConfiguration:
    config = _raw_config(is_client=True)
    config.server_name = "localhost"
    config.verify_mode = ssl.CERT_NONE
    return config


def _raw_server_config() -> QuicConfiguration:
    pair = sansquic.make_dev_certificate()
    config = _raw_config(is_client=False)
    config.certificate = load_pem_x509_certificate(pair.certificate)
    config.private_key = load_pem_private_key(pair.private_key, password=None)
    return config


def _bulk_result(reply: bytes, sent: int, elapsed: float) -> dict[str, float]:
    if int(reply) != sent:
        raise RuntimeError(f"server counted {int(reply)} bytes, not {sent}")
    return {"mb_s": sent / 1e6 / elapsed, "bytes": sent, "seconds": elapsed}


def _messages_result(count: int, elapsed: float) -> dict[str, float]:
    return {"per_s": count / elapsed, "count": count, "seconds": elapsed}


def _echo_result(samples: list[float]) -> dict[str, float]:
    if len(samples) < 2:
        raise RuntimeError(f"only {len(samples)} echo samples")
    return {
        "p50_us": statistics.median(samples),
        "p99_us": statistics.quantiles(samples, n=100)[98],
        "count": len(samples),
    }


# -- async stacks: one client and one server logic for sansquic and aioquic's API ----------


class AsyncStream(Protocol):
    async def send(self, data: bytes, *, timeout: float | None = None) -> None: ...
    async def finish(self) -> None: ...
    async def receive(self, max_bytes: int = -1, *, timeout: float | None = None) -> bytes: ...
    async def receive_exactly(self, size: int, *, timeout: float | None = None) -> bytes: ...
    async def read_all(self, *, timeout: float | None = None) -> bytes: ...


class AsyncConn(Protocol):
    async def open_stream(self) -> AsyncStream: ...


AsyncOpener = Callable[[], AbstractAsyncContextManager[AsyncConn]]
AsyncScenario = Callable[[AsyncOpener, Params], Coroutine[Any, Any, dict[str, float]]]


async def _async_serve_stream(stream: AsyncStream) -> None:
    """Count a stream that starts with b"B" and reply with the count; echo any other."""
    data = await stream.receive(timeout=IO_TIMEOUT)
    if data[:1] == b"B":
        count = 0
        while data:
            count += len(data)
            data = await stream.receive(timeout=IO_TIMEOUT)
        await stream.send(str(count).encode(), timeout=IO_TIMEOUT)
    else:
        while data:
            await stream.send(data, timeout=IO_TIMEOUT)
            data = await stream.receive(timeout=IO_TIMEOUT)
    await stream.finish()


async def _sansquic_handler(conn: sansquic_asyncio.Connection) -> None:
    """The server handler of every async sansquic runtime (they share the Connection class)."""
    async for stream in conn:  # ends when the client closes the connection
        await _async_serve_stream(stream)


async def _async_bulk(open_conn: AsyncOpener, p: Params) -> dict[str, float]:
    async with open_conn() as conn:
        stream = await conn.open_stream()
        start = time.perf_counter()
        stop, sent = start + p.bulk_seconds, 0
        while sent < p.bulk_bytes and time.perf_counter() < stop:
            size = min(CHUNK, p.bulk_bytes - sent)
            await stream.send(
                BULK_CHUNK if size == CHUNK else BULK_CHUNK[:size], timeout=IO_TIMEOUT
            )
            sent += size
        await stream.finish()
        reply = await stream.read_all(timeout=IO_TIMEOUT)
        elapsed = time.perf_counter() - start
    return _bulk_result(reply, sent, elapsed)


async def _async_messages(open_conn: AsyncOpener, p: Params) -> dict[str, float]:
    async with open_conn() as conn:
        stream = await conn.open_stream()
        start = time.perf_counter()
        stop, count = start + p.msg_seconds, 0
        while count < p.msg_count and time.perf_counter() < stop:
            await stream.send(MESSAGE, timeout=IO_TIMEOUT)
            if await stream.receive_exactly(len(MESSAGE), timeout=IO_TIMEOUT) != MESSAGE:
                raise RuntimeError("message echo mismatch")
            count += 1
        elapsed = time.perf_counter() - start
        await stream.finish()
        if await stream.read_all(timeout=IO_TIMEOUT):
            raise RuntimeError("data after the last echo")
    return _messages_result(count, elapsed)


async def _async_echo(open_conn: AsyncOpener, p: Params) -> dict[str, float]:
    samples: list[float] = []
    async with open_conn() as conn:
        stop = math.inf
        for i in range(p.echo_warmup + p.echo_rounds):
            if i == p.echo_warmup:
                stop = time.perf_counter() + p.echo_seconds
            elif time.perf_counter() > stop:
                break
            start = time.perf_counter()
            stream = await conn.open_stream()
            await stream.send(ECHO_BYTE, timeout=IO_TIMEOUT)
            await stream.finish()
            if await stream.read_all(timeout=IO_TIMEOUT) != ECHO_BYTE:
                raise RuntimeError("echo mismatch")
            if i >= p.echo_warmup:
                samples.append((time.perf_counter() - start) * 1e6)
    return _echo_result(samples)


ASYNC_SCENARIOS: dict[str, AsyncScenario] = {
    "bulk": _async_bulk,
    "msgs": _async_messages,
    "echo": _async_echo,
}


def _sansquic_opener(connect: Callable[..., Connect], port: int) -> AsyncOpener:
    return lambda: connect(HOST, port, config=sansquic_config(), server_name="localhost")


class _RawStream:
    """An aioquic (reader, writer) pair; ``write`` queues at once, there is nothing to await."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer

    async def send(self, data: bytes, *, timeout: float | None = None) -> None:
        self._writer.write(data)

    async def finish(self) -> None:
        self._writer.write_eof()

    async def receive(self, max_bytes: int = -1, *, timeout: float | None = None) -> bytes:
        async with asyncio.timeout(timeout):
            return await self._reader.read(max_bytes if max_bytes > 0 else 1 << 16)

    async def receive_exactly(self, size: int, *, timeout: float | None = None) -> bytes:
        async with asyncio.timeout(timeout):
            return await self._reader.readexactly(size)

    async def read_all(self, *, timeout: float | None = None) -> bytes:
        async with asyncio.timeout(timeout):
            return await self._reader.read()


class _RawConn:
    def __init__(self, client: QuicConnectionProtocol) -> None:
        self._client = client

    async def open_stream(self) -> _RawStream:
        return _RawStream(*await self._client.create_stream())


def _raw_opener(port: int) -> AsyncOpener:
    config = _raw_client_config()

    @asynccontextmanager
    async def open_conn() -> AsyncIterator[AsyncConn]:
        async with raw_connect(HOST, port, configuration=config) as client:
            yield _RawConn(client)

    return open_conn


async def _raw_serve(announce: Callable[[int], None]) -> None:
    tasks: set[asyncio.Task[None]] = set()

    def stream_handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.create_task(_async_serve_stream(_RawStream(reader, writer)))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    server = await raw_serve(
        HOST, 0, configuration=_raw_server_config(), stream_handler=stream_handler
    )
    assert server._transport is not None  # QuicServer keeps its socket private
    announce(server._transport.get_extra_info("sockname")[1])
    await asyncio.get_running_loop().create_future()  # until the process exits


# -- blocking stacks: the same logic for sansquic_threads and the minimal driver ------------


class SyncStream(Protocol):
    def send(self, data: bytes, *, timeout: float | None = None) -> None: ...
    def finish(self) -> None: ...
    def receive(self, max_bytes: int = -1, *, timeout: float | None = None) -> bytes: ...
    def receive_exactly(self, size: int, *, timeout: float | None = None) -> bytes: ...
    def read_all(self, *, timeout: float | None = None) -> bytes: ...


class SyncConn(Protocol):
    def open_stream(self) -> SyncStream: ...


SyncOpener = Callable[[], AbstractContextManager[SyncConn]]
SyncScenario = Callable[[SyncOpener, Params], dict[str, float]]


def _sync_serve_stream(stream: sansquic_threads.Stream) -> None:
    data = stream.receive(timeout=IO_TIMEOUT)
    if data[:1] == b"B":
        count = 0
        while data:
            count += len(data)
            data = stream.receive(timeout=IO_TIMEOUT)
        stream.send(str(count).encode(), timeout=IO_TIMEOUT)
    else:
        while data:
            stream.send(data, timeout=IO_TIMEOUT)
            data = stream.receive(timeout=IO_TIMEOUT)
    stream.finish()


def _threads_handler(conn: sansquic_threads.Connection) -> None:
    for stream in conn:  # ends when the client closes the connection
        _sync_serve_stream(stream)


def _sync_bulk(open_conn: SyncOpener, p: Params) -> dict[str, float]:
    with open_conn() as conn:
        stream = conn.open_stream()
        start = time.perf_counter()
        stop, sent = start + p.bulk_seconds, 0
        while sent < p.bulk_bytes and time.perf_counter() < stop:
            size = min(CHUNK, p.bulk_bytes - sent)
            stream.send(BULK_CHUNK if size == CHUNK else BULK_CHUNK[:size], timeout=IO_TIMEOUT)
            sent += size
        stream.finish()
        reply = stream.read_all(timeout=IO_TIMEOUT)
        elapsed = time.perf_counter() - start
    return _bulk_result(reply, sent, elapsed)


def _sync_messages(open_conn: SyncOpener, p: Params) -> dict[str, float]:
    with open_conn() as conn:
        stream = conn.open_stream()
        start = time.perf_counter()
        stop, count = start + p.msg_seconds, 0
        while count < p.msg_count and time.perf_counter() < stop:
            stream.send(MESSAGE, timeout=IO_TIMEOUT)
            if stream.receive_exactly(len(MESSAGE), timeout=IO_TIMEOUT) != MESSAGE:
                raise RuntimeError("message echo mismatch")
            count += 1
        elapsed = time.perf_counter() - start
        stream.finish()
        if stream.read_all(timeout=IO_TIMEOUT):
            raise RuntimeError("data after the last echo")
    return _messages_result(count, elapsed)


def _sync_echo(open_conn: SyncOpener, p: Params) -> dict[str, float]:
    samples: list[float] = []
    with open_conn() as conn:
        stop = math.inf
        for i in range(p.echo_warmup + p.echo_rounds):
            if i == p.echo_warmup:
                stop = time.perf_counter() + p.echo_seconds
            elif time.perf_counter() > stop:
                break
            start = time.perf_counter()
            stream = conn.open_stream()
            stream.send(ECHO_BYTE, timeout=IO_TIMEOUT)
            stream.finish()
            if stream.read_all(timeout=IO_TIMEOUT) != ECHO_BYTE:
                raise RuntimeError("echo mismatch")
            if i >= p.echo_warmup:
                samples.append((time.perf_counter() - start) * 1e6)
    return _echo_result(samples)


SYNC_SCENARIOS: dict[str, SyncScenario] = {
    "bulk": _sync_bulk,
    "msgs": _sync_messages,
    "echo": _sync_echo,
}


# -- the minimal raw aioquic driver ---------------------------------------------------------


def _mini_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with contextlib.suppress(OSError):  # as sansquic's UdpSocket asks
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    sock.bind((HOST, 0))
    sock.setblocking(False)
    return sock


def _drain(sock: socket.socket) -> list[tuple[bytes, tuple[str, int]]]:
    """Every datagram ready now (up to 1024), without blocking."""
    batch: list[tuple[bytes, tuple[str, int]]] = []
    for _ in range(1024):
        try:
            data, addr = sock.recvfrom(65535)
        except (BlockingIOError, InterruptedError):
            break
        except OSError:
            continue  # an ICMP error surfacing on UDP
        batch.append((data, (addr[0], addr[1])))
    return batch


def _send_all(sock: socket.socket, quic: QuicConnection) -> None:
    for data, addr in quic.datagrams_to_send(now=time.monotonic()):
        with contextlib.suppress(OSError):  # a full socket buffer is loss, which QUIC recovers
            sock.sendto(data, addr)


class _MiniConnection:
    """A client QuicConnection on its own socket, pumped only while a call waits."""

    def __init__(self, port: int) -> None:
        self.sock = _mini_socket()
        self.quic = QuicConnection(configuration=_raw_client_config())
        self.buffers: dict[int, bytearray] = {}
        self.ended: set[int] = set()
        self.ready = self.terminated = False
        try:
            self.quic.connect((HOST, port), now=time.monotonic())
            self.until(lambda: self.ready, CONNECT_TIMEOUT)
        except BaseException:
            self.sock.close()
            raise

    def flush(self) -> None:
        _send_all(self.sock, self.quic)

    def step(self, deadline: float) -> None:
        """Wait for datagrams or the timer (at most until ``deadline``), feed, send."""
        timer = self.quic.get_timer()
        wake = deadline if timer is None else min(deadline, timer)
        select.select([self.sock], [], [], max(0.0, wake - time.monotonic()))
        now = time.monotonic()
        for data, addr in _drain(self.sock):  # every ready datagram before one send pass
            self.quic.receive_datagram(data, addr, now=now)
        timer = self.quic.get_timer()
        if timer is not None and timer <= now:
            self.quic.handle_timer(now=now)
        while (event := self.quic.next_event()) is not None:
            if isinstance(event, qe.StreamDataReceived):
                self.buffers.setdefault(event.stream_id, bytearray()).extend(event.data)
                if event.end_stream:
                    self.ended.add(event.stream_id)
            elif isinstance(event, qe.HandshakeCompleted):
                self.ready = True
            elif isinstance(event, qe.ConnectionTerminated):
                self.terminated = True
            elif isinstance(event, qe.StreamReset):
                raise RuntimeError(f"stream {event.stream_id} reset by the peer")
        self.flush()

    def until(self, check: Callable[[], bool], timeout: float | None) -> None:
        deadline = time.monotonic() + (IO_TIMEOUT if timeout is None else timeout)
        self.flush()
        while not check():
            if self.terminated:
                raise ConnectionError("the connection closed")
            if time.monotonic() >= deadline:
                raise TimeoutError
            self.step(deadline)

    def open_stream(self) -> _MiniStream:
        return _MiniStream(self, self.quic.get_next_available_stream_id())

    def close(self) -> None:
        if not self.terminated:
            self.quic.close()
            with contextlib.suppress(TimeoutError, ConnectionError):
                self.until(lambda: self.terminated, CLOSE_TIMEOUT)
        self.sock.close()

    def __enter__(self) -> _MiniConnection:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class _MiniStream:
    def __init__(self, conn: _MiniConnection, stream_id: int) -> None:
        self._conn, self._id = conn, stream_id
        self._buffer = conn.buffers.setdefault(stream_id, bytearray())

    def send(self, data: bytes, *, timeout: float | None = None) -> None:
        self._conn.quic.send_stream_data(self._id, data)  # no backpressure: queued at once
        self._conn.flush()

    def finish(self) -> None:
        self._conn.quic.send_stream_data(self._id, b"", end_stream=True)
        self._conn.flush()

    def _take(self, size: int) -> bytes:
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        if not self._buffer and self._id in self._conn.ended:
            self._conn.buffers.pop(self._id, None)
        return data

    def _ended(self) -> bool:
        return self._id in self._conn.ended

    def receive(self, max_bytes: int = -1, *, timeout: float | None = None) -> bytes:
        self._conn.until(lambda: bool(self._buffer) or self._ended(), timeout)
        return self._take(len(self._buffer) if max_bytes < 0 else max_bytes)

    def receive_exactly(self, size: int, *, timeout: float | None = None) -> bytes:
        self._conn.until(lambda: len(self._buffer) >= size or self._ended(), timeout)
        if len(self._buffer) < size:
            raise RuntimeError(f"stream ended after {len(self._buffer)} of {size} bytes")
        return self._take(size)

    def read_all(self, *, timeout: float | None = None) -> bytes:
        self._conn.until(self._ended, timeout)
        return self._take(len(self._buffer))


class _MiniServerConnection:
    """One server QuicConnection and the count/echo logic, on events."""

    def __init__(self, quic: QuicConnection) -> None:
        self.quic = quic
        self.counts: dict[int, int | None] = {}  # stream -> bytes so far, None: an echo stream
        self.terminated = False

    def process_events(self) -> None:
        quic = self.quic
        while (event := quic.next_event()) is not None:
            if isinstance(event, qe.StreamDataReceived):
                sid, data, end = event.stream_id, event.data, event.end_stream
                if sid not in self.counts:
                    if not data and not end:
                        continue
                    self.counts[sid] = 0 if data[:1] == b"B" else None
                count = self.counts[sid]
                if count is None:
                    quic.send_stream_data(sid, data, end_stream=end)
                else:
                    self.counts[sid] = count = count + len(data)
                    if end:
                        quic.send_stream_data(sid, str(count).encode(), end_stream=True)
                if end:
                    del self.counts[sid]
            elif isinstance(event, qe.ConnectionTerminated):
                self.terminated = True


def _mini_serve(announce: Callable[[int], None]) -> None:
    """The plain loop: select, every ready datagram in, timers, events, then send."""
    config = _raw_server_config()
    sock = _mini_socket()
    announce(sock.getsockname()[1])
    conns: dict[tuple[str, int], _MiniServerConnection] = {}  # by client address: loopback
    while True:  # until the process exits
        timers = [t for c in conns.values() if (t := c.quic.get_timer()) is not None]
        timeout = max(0.0, min(timers) - time.monotonic()) if timers else None
        select.select([sock], [], [], timeout)
        now = time.monotonic()
        for data, addr in _drain(sock):
            conn = conns.get(addr)
            if conn is None:
                try:
                    header = pull_quic_header(
                        Buffer(data=data), host_cid_length=config.connection_id_length
                    )
                except ValueError:
                    continue
                if header.packet_type is not QuicPacketType.INITIAL:
                    continue
                quic = QuicConnection(
                    configuration=config, original_destination_connection_id=header.destination_cid
                )
                conn = conns[addr] = _MiniServerConnection(quic)
            conn.quic.receive_datagram(data, addr, now=now)
        for addr, conn in list(conns.items()):
            timer = conn.quic.get_timer()
            if timer is not None and timer <= now:
                conn.quic.handle_timer(now=now)
            conn.process_events()
            _send_all(sock, conn.quic)
            if conn.terminated:
                del conns[addr]


# -- child processes: one server and one client per stack -----------------------------------


def _emit(message: dict[str, Any]) -> None:
    sys.stdout.buffer.write(PREFIX + json.dumps(message).encode() + b"\n")
    sys.stdout.buffer.flush()


def _announce(port: int) -> None:
    _emit({"port": port})


def _exit_on_eof() -> None:
    """A server child ends when the parent closes its stdin (or dies)."""
    with contextlib.suppress(OSError):
        while sys.stdin.buffer.read(4096):
            pass
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _server_child(stack: str) -> None:
    threading.Thread(target=_exit_on_eof, daemon=True).start()
    if stack == "asyncio":

        async def serve_asyncio() -> None:
            server = await sansquic_asyncio.serve(
                _sansquic_handler, HOST, 0, config=sansquic_config()
            )
            _announce(server.address[1])
            await server.serve_forever()

        asyncio.run(serve_asyncio())
    elif stack == "trio":
        import sansquic_trio
        import trio

        async def serve_trio() -> None:
            async with trio.open_nursery() as nursery:
                args = (_sansquic_handler, HOST, 0, sansquic_config())
                server = await nursery.start(sansquic_trio.serve, *args)
                _announce(server.address[1])

        trio.run(serve_trio)
    elif stack.startswith("anyio-"):
        import anyio
        import sansquic_anyio

        async def serve_anyio() -> None:
            async with anyio.create_task_group() as group:
                args = (_sansquic_handler, HOST, 0, sansquic_config())
                server = await group.start(sansquic_anyio.serve, *args)
                _announce(server.address[1])

        anyio.run(serve_anyio, backend=stack.removeprefix("anyio-"))
    elif stack == "curio":
        curio, sansquic_curio = (importlib.import_module(m) for m in STACKS["curio"])

        async def serve_curio() -> None:
            server = await sansquic_curio.serve(
                _sansquic_handler, HOST, 0, config=sansquic_config()
            )
            _announce(server.address[1])
            await server.serve_forever()

        curio.run(serve_curio)
    elif stack == "threads":
        with sansquic_threads.serve(
            _threads_handler, HOST, 0, config=sansquic_config()
        ) as threads_server:
            _announce(threads_server.address[1])
            threads_server.serve_forever()
    elif stack == API:
        asyncio.run(_raw_serve(_announce))
    elif stack == MINIMAL:
        _mini_serve(_announce)
    else:
        raise SystemExit(f"unknown stack {stack!r}")


def _client_runner(stack: str, port: int) -> Callable[[str, Params], dict[str, float]]:
    """``run(scenario, params)`` for ``stack``: a fresh event loop (and connection) each."""
    if stack == "threads":
        sync_opener: SyncOpener = lambda: sansquic_threads.connect(  # noqa: E731
            HOST, port, config=sansquic_config(), server_name="localhost"
        )
        return lambda scenario, p: SYNC_SCENARIOS[scenario](sync_opener, p)
    if stack == MINIMAL:
        return lambda scenario, p: SYNC_SCENARIOS[scenario](lambda: _MiniConnection(port), p)
    if stack in ("asyncio", API):
        opener = (
            _raw_opener(port) if stack == API else _sansquic_opener(sansquic_asyncio.connect, port)
        )
        return lambda scenario, p: asyncio.run(ASYNC_SCENARIOS[scenario](opener, p))
    if stack == "trio":
        import sansquic_trio
        import trio

        opener = _sansquic_opener(sansquic_trio.connect, port)
        return lambda scenario, p: trio.run(ASYNC_SCENARIOS[scenario], opener, p)
    if stack.startswith("anyio-"):
        import anyio
        import sansquic_anyio

        opener, backend = _sansquic_opener(sansquic_anyio.connect, port), stack[6:]
        return lambda scenario, p: anyio.run(ASYNC_SCENARIOS[scenario], opener, p, backend=backend)
    if stack == "curio":
        curio, sansquic_curio = (importlib.import_module(m) for m in STACKS["curio"])
        opener = _sansquic_opener(sansquic_curio.connect, port)
        return lambda scenario, p: dict(curio.run(ASYNC_SCENARIOS[scenario], opener, p))
    raise SystemExit(f"unknown stack {stack!r}")


def _client_child(stack: str, port: int) -> None:
    run = _client_runner(stack, port)
    _emit({"ready": True})
    while line := sys.stdin.readline():  # one request a line, until the parent closes stdin
        request = json.loads(line)
        try:
            result = run(request["scenario"], Params(**request["params"]))
        except Exception as exc:
            traceback.print_exc()
            _emit({"ok": False, "error": f"{type(exc).__name__}: {exc}"})
        else:
            _emit({"ok": True, "result": result})


def _child_main(role: str, stack: str, port: int, lifetime: float) -> None:
    # A backstop: whatever happens, a child does not outlive the run by much.
    backstop = threading.Timer(lifetime, os._exit, args=(3,))
    backstop.daemon = True
    backstop.start()
    if role == "server":
        _server_child(stack)
    else:
        _client_child(stack, port)


# -- the parent: start the pairs, run the interleaved rounds, report ------------------------


def _rcvbuf_errors() -> int | None:
    """Linux's machine-wide count of UDP datagrams dropped for a full receive buffer."""
    try:
        with open("/proc/net/snmp") as snmp:
            names, counts = (line.split() for line in snmp if line.startswith("Udp:"))
    except (OSError, ValueError):
        return None
    return int(dict(zip(names, counts, strict=True))["RcvbufErrors"])


class _Child:
    """A child process speaking the ``@@ {json}`` line protocol on its stdout."""

    def __init__(self, name: str, args: list[str]) -> None:
        self.name = name
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115  # closed by stop()
        self.proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            bufsize=0,
        )
        self._buffer = b""

    def _pipe(self, which: str) -> IO[bytes]:
        pipe: IO[bytes] | None = getattr(self.proc, which)
        assert pipe is not None
        return pipe

    def send(self, message: dict[str, Any]) -> None:
        self._pipe("stdin").write(json.dumps(message).encode() + b"\n")

    def read(self, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        fd = self._pipe("stdout").fileno()
        while True:
            while b"\n" in self._buffer:
                line, _, self._buffer = self._buffer.partition(b"\n")
                if line.startswith(PREFIX):
                    message: dict[str, Any] = json.loads(line[len(PREFIX) :])
                    return message
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"{self.name}: no answer within {timeout:.0f} s")
            if select.select([fd], [], [], remaining)[0]:
                chunk = os.read(fd, 65536)
                if not chunk:
                    raise RuntimeError(f"{self.name} exited (code {self.proc.wait()})")
                self._buffer += chunk

    def stderr_tail(self, size: int = 1500) -> str:
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace")[-size:]

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self._pipe("stdin").close()
        try:
            self.proc.wait(timeout=5.0)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._stderr.close()


class _Pair:
    """One stack's server and client processes."""

    def __init__(self, stack: str, lifetime: float) -> None:
        self.stack = stack
        self._lifetime = lifetime
        self.server: _Child | None = None
        self.client: _Child | None = None
        self.failures = 0

    def _args(self, role: str, port: int = 0) -> list[str]:
        lifetime = str(self._lifetime)
        return ["--child", role, "--stack", self.stack, "--port", str(port), "--lifetime", lifetime]

    def spawn_server(self) -> None:
        self.server = _Child(f"{self.stack} server", self._args("server"))

    def spawn_client(self) -> None:
        assert self.server is not None
        port = int(self.server.read(START_TIMEOUT)["port"])
        self.client = _Child(f"{self.stack} client", self._args("client", port))

    def wait_ready(self) -> None:
        assert self.client is not None
        self.client.read(START_TIMEOUT)

    def start(self) -> None:
        self.spawn_server()
        self.spawn_client()
        self.wait_ready()

    def stop(self) -> None:
        for child in (self.client, self.server):
            if child is not None:
                child.stop()
        self.server = self.client = None

    def run(self, scenario: str, params: Params) -> dict[str, float]:
        assert self.client is not None
        assert self.server is not None
        if self.server.proc.poll() is not None:
            raise RuntimeError(f"{self.server.name} exited (code {self.server.proc.poll()})")
        self.client.send({"scenario": scenario, "params": asdict(params)})
        reply = self.client.read(params.seconds(scenario) + CELL_MARGIN)
        if not reply.get("ok"):
            raise RuntimeError(f"{self.client.name}: {reply.get('error')}")
        result: dict[str, float] = reply["result"]
        return result

    def tails(self) -> str:
        return "\n".join(
            f"--- {child.name} stderr (tail) ---\n{child.stderr_tail()}"
            for child in (self.server, self.client)
            if child is not None
        )


def _available(stack: str) -> str | None:
    """None if ``stack`` can run here, else why not."""
    for module in STACKS[stack]:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            return f"{module}: {exc}"
    return None


def _fmt(metric: str, value: float | None) -> str:
    return "-" if value is None else METRICS[metric][2].format(value)


def _median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def _ratio(value: float | None, reference: float | None) -> float | None:
    return None if value is None or not reference else value / reference


def _print_tables(
    stacks: list[str], values: dict[str, dict[str, list[float | None]]], drops: dict[str, int]
) -> dict[str, dict[str, dict[str, float | None]]]:
    """Print the medians with both ratios, then the spread; return the summary for JSON."""
    medians = {s: {m: _median(values[s][m]) for m in METRICS} for s in stacks}
    summary: dict[str, dict[str, dict[str, float | None]]] = {}
    name_w, col_w = 17, 23
    print("\nmedians over rounds; /api = ratio to raw aioquic's asyncio API, /min = ratio to")
    print("the minimal raw aioquic driver (rates: above 1 is faster; latencies: above 1 is slower)")
    print(f"{'':{name_w}}" + "".join(f"{m:>{col_w}}" for m in METRICS))
    print(f"{'stack':{name_w}}" + f"{'median   /api   /min':>{col_w}}" * len(METRICS))
    for stack in stacks:
        cells, summary[stack] = [], {"median": {}, "per_api": {}, "per_minimal": {}}
        for metric in METRICS:
            value = medians[stack][metric]
            ratios = [
                _ratio(value, medians.get(ref, {}).get(metric)) if ref in medians else None
                for ref in (API, MINIMAL)
            ]
            summary[stack]["median"][metric] = value
            summary[stack]["per_api"][metric] = ratios[0]
            summary[stack]["per_minimal"][metric] = ratios[1]
            text = " ".join("   -  " if r is None else f"{r:6.2f}" for r in ratios)
            cells.append(f"{_fmt(metric, value):>9} {text}")
        print(f"{stack:{name_w}}" + "".join(f"{cell:>{col_w}}" for cell in cells))

    print("\nspread: min-max over rounds (cells that failed are left out); UDP rcvbuf drops")
    print(f"{'stack':{name_w}}" + "".join(f"{m:>{col_w}}" for m in METRICS) + f"{'drops':>8}")
    for stack in stacks:
        cells = []
        for metric in METRICS:
            present = [v for v in values[stack][metric] if v is not None]
            missing = len(values[stack][metric]) - len(present)
            cell = f"{_fmt(metric, min(present))}-{_fmt(metric, max(present))}" if present else "-"
            cells.append(cell + (f" ({missing} failed)" if missing else ""))
        print(
            f"{stack:{name_w}}"
            + "".join(f"{cell:>{col_w}}" for cell in cells)
            + f"{drops[stack]:>8}"
        )
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run: 1 short round")
    parser.add_argument("--rounds", type=int, help="rounds (default 7, or 1 with --quick)")
    parser.add_argument(
        "--budget",
        type=float,
        help="seconds: start no round that would end past this (default 330, 90 --quick)",
    )
    parser.add_argument("--stacks", help=f"comma-separated subset of: {', '.join(STACKS)}")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON here")
    parser.add_argument("--child", choices=["server", "client"], help=argparse.SUPPRESS)
    parser.add_argument("--stack", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--lifetime", type=float, default=900.0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child_main(args.child, args.stack, args.port, args.lifetime)
        return

    began = time.monotonic()
    params = QUICK if args.quick else FULL
    rounds = args.rounds if args.rounds is not None else (1 if args.quick else 7)
    budget = args.budget if args.budget is not None else (90.0 if args.quick else 330.0)
    wanted = list(STACKS) if args.stacks is None else args.stacks.split(",")
    unknown = [s for s in wanted if s not in STACKS]
    if unknown:
        parser.error(f"unknown stacks {unknown}; known: {list(STACKS)}")
    skipped = {s: why for s in wanted if (why := _available(s)) is not None}
    stacks = [s for s in STACKS if s in wanted and s not in skipped]
    load_before = os.getloadavg()
    print(
        f"Python {platform.python_version()}, aioquic {aioquic.__version__}, "
        f"sansquic {sansquic.__version__}, os.cpu_count() = {os.cpu_count()}, "
        f"load average {' '.join(f'{x:.2f}' for x in load_before)}"
    )
    print(f"{rounds} round(s) of {params}; budget {budget:.0f} s")
    for stack, why in skipped.items():
        print(f"  skipped {stack}: {why}")

    pairs = {s: _Pair(s, lifetime=budget + 600.0) for s in stacks}
    values: dict[str, dict[str, list[float | None]]] = {s: {m: [] for m in METRICS} for s in stacks}
    drops = dict.fromkeys(stacks, 0)
    cells: list[dict[str, Any]] = []
    dead: set[str] = set()
    done_rounds = 0
    try:
        for pair in pairs.values():  # start them all at once, then wait for each
            pair.spawn_server()
        for pair in pairs.values():
            pair.spawn_client()
        for pair in pairs.values():
            pair.wait_ready()
        print(f"started {2 * len(pairs)} processes in {time.monotonic() - began:.1f} s\n")
        round_time = 0.0
        for index in range(rounds):
            round_began = time.monotonic()
            if round_began + round_time - began > budget:
                print(f"budget: stopping after {index} round(s)")
                break
            order = stacks[index % len(stacks) :] + stacks[: index % len(stacks)]
            for scenario in SCENARIOS:
                for stack in order:
                    if stack in dead:
                        continue
                    pair, before = pairs[stack], _rcvbuf_errors()
                    cell_began = time.monotonic()
                    cell: dict[str, Any] = {"round": index + 1, "scenario": scenario}
                    try:
                        result: dict[str, float] | None = pair.run(scenario, params)
                        cell["result"] = result
                    except (RuntimeError, TimeoutError, OSError) as exc:
                        result, cell["error"] = None, str(exc)
                    after = _rcvbuf_errors()
                    dropped = None if after is None or before is None else after - before
                    cell.update(stack=stack, drops=dropped, wall=time.monotonic() - cell_began)
                    cells.append(cell)
                    drops[stack] += dropped or 0
                    shown = []
                    for metric, (wanted_scenario, key, _) in METRICS.items():
                        if wanted_scenario == scenario:
                            value = None if result is None else result[key]
                            values[stack][metric].append(value)
                            shown.append(f"{metric} {_fmt(metric, value)}")
                    print(
                        f"  round {index + 1} {scenario:4} {stack:16} {', '.join(shown):40}"
                        f" drops {dropped}  ({cell['wall']:.1f} s)"
                    )
                    if result is None:
                        print(f"    FAILED: {cell['error']}\n{pair.tails()}")
                        pair.failures += 1
                        pair.stop()
                        if pair.failures >= MAX_FAILURES:
                            print(f"    {stack}: {pair.failures} failures, dropped from the run")
                            dead.add(stack)
                        else:
                            pair.start()
            done_rounds = index + 1
            round_time = time.monotonic() - round_began
    finally:
        for pair in pairs.values():
            pair.stop()

    load_after = os.getloadavg()
    summary = _print_tables(stacks, values, drops)
    wall = time.monotonic() - began
    print(
        f"\n{done_rounds} round(s) in {wall:.0f} s; load average before "
        f"{' '.join(f'{x:.2f}' for x in load_before)}, after "
        f"{' '.join(f'{x:.2f}' for x in load_after)}"
    )
    if args.json:
        report = {
            "meta": {
                "python": platform.python_version(),
                "aioquic": aioquic.__version__,
                "sansquic": sansquic.__version__,
                "cpu_count": os.cpu_count(),
                "platform": platform.platform(),
                "load_before": load_before,
                "load_after": load_after,
                "rounds": done_rounds,
                "params": asdict(params),
                "quick": args.quick,
                "wall_seconds": wall,
                "messages": "round trips of 1000 bytes on one stream",
                "ratios": "value / reference value, per_api: raw aioquic asyncio API, "
                "per_minimal: the minimal raw aioquic driver",
            },
            "skipped": skipped,
            "stacks": {
                s: {**summary[s], "rounds": values[s], "rcvbuf_drops": drops[s]} for s in stacks
            },
            "cells": cells,
        }
        with open(args.json, "w") as out:
            json.dump(report, out, indent=2)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
