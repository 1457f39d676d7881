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
and the handshake is not timed. 1 MB = 10**6 bytes, 1 KB message = 1000 bytes.

Every server serves each stream in a task (thread-pool job for threads) of
its own, so streams of one connection are served concurrently, and decides
by the stream's first byte: b"B" streams are counted and answered with
``b"<bytes> <server CPU seconds>"`` and FIN (the CPU time is the server
process's, all threads, from the first chunk read to the FIN); b"H" streams
get one byte back and are then left open and idle (no task keeps them);
every other stream is echoed. The scenarios, every round:

- bulk: one stream carries up to 20 MB in 64 KiB sends, cut short after 3 s
  of sending; MB/s from the first send until the count is read. The same cell
  gives CPU per MB at both ends: the client's ``time.process_time()`` (all
  threads) over that span, the server's as reported in its reply, divided by
  the MB moved.
- 1KB msgs: one-way pipelined messages: on one stream up to 20,000
  ``send()`` calls of 1000 bytes (each starting with b"B", so the server
  counts them) as fast as they go, at most 2 s of sending, then FIN;
  messages per second until the server's count is read.
- 1KB round trips: on one stream send 1000 bytes, read the 1000-byte echo,
  repeat (up to 5000, at most 1.5 s); round trips per second.
- echo: open a stream, send 1 byte, finish, read the echo to its end, in
  sequence on one connection (10 untimed warm-up rounds, then up to 500, at
  most 3 s); p50 and p99 in microseconds.
- 100 streams: 100 streams on one connection, opened first, then each sends
  1 MB in 64 KiB sends concurrently (asyncio/anyio/trio/curio: one task per
  stream in a task group; threads: one thread per stream; the minimal driver
  queues all of it at once), then FIN, and reads the count (a safety cut
  stops sending after 20 s; it is not meant to apply; the stacks without
  backpressure, which queue everything at once, get ``streams_drain`` more
  to deliver it: 40 s in the full run, 10 s with ``--quick``).
  Aggregate MB/s from the first send until the last count is read. The
  slowest cell of the run (7-20 s for sansquic, 12-35 s for raw aioquic here,
  depending on the machine's day).
- CRITICAL round trip: 1000-byte round trips (as above: 10 warm-up, then up
  to 200, at most 1 s) on a stream opened with ``Priority.CRITICAL``, first
  on an idle connection, then on the same connection while a
  ``Priority.LOW`` stream sends 64 KiB chunks to the server without pause
  (from 0.2 s before the first warm-up round trip until the last); p50 idle,
  p50 loaded, loaded / idle, and the loading stream's MB/s: over its whole
  life ("crit load MB/s", the 0.2 s ramp included, when nothing holds it
  back yet) and while the loaded round trips are timed ("load while timed
  MB/s", the share of the path it keeps beside the CRITICAL stream; bytes
  queued, so up to one send high watermark ahead of the wire). Raw aioquic
  has no priorities, so both raw
  stacks run the same with plain streams, labelled "(no priorities)"; their
  loading stream has no backpressure, so it is topped up to 256 KiB not yet
  sent (sansquic's default per-stream send high watermark) whenever it drops
  below that (the asyncio API polls every 1 ms, the minimal driver on each
  pass of its loop).

Once per run, before the rounds, each on a server process of its own started
for it (so freed memory of earlier cells cannot hide growth), and read from
the server's ``VmRSS`` (Linux ``/proc``; elsewhere the cells fail):

- memory per idle connection: the client opens one warm-up connection (one
  echo), then K = 100 more that only complete the handshake and stay open;
  server RSS growth / K (after 0.5 s to settle, and until two reads 0.1 s
  apart agree). The server keeps a handler per connection (sansquic: the
  application's handler, waiting for streams; threads: its thread).
- memory per idle stream: on one connection, 20 warm-up b"H" streams, then
  S = 2000 more; each carries 1 byte, the client reads the server's 1-byte
  answer on every one (so the server knows them all), then all stay open (no
  FIN); server RSS growth / S. Targets (issue 11): per idle connection at most
  1.1x raw aioquic's, per idle stream at most 2 KiB; the run prints both
  checks.

Rounds interleave: each round runs every scenario in turn, each for every
stack, with the stack order rotated by one each round, so machine noise hits
all stacks alike. A round takes about 2 minutes on 2 cores, so the default
run does up to 5 rounds but starts none that would end past 540 s from its
start (``--budget``), and ends within about 10 minutes. The tables show the
median over rounds (latency percentiles are per-round figures, then the
median of those) and each median divided by raw aioquic's asyncio API
("/api") and by the minimal driver ("/min"): for rates above 1 is faster;
for latencies, CPU and memory above 1 is more. Then the spread (min-max over
rounds).

sansquic uses ``Config(dev_mode=True, verify_peer=False,
max_streams_bidi=4096, max_udp_payload_size=1200, pmtu_discovery=False)``: 16 MiB connection and
1 MiB stream windows, 1200-byte packets, Reno, 30 s idle timeout, 4096 open
streams so that the idle-stream cell fits (the default is 1000), and the
per-address admission limits off (``max_connections_per_address`` 64 and
``new_connections_per_second`` 20 by default: the idle connections all come
from one address). ``--pmtu`` keeps sansquic's own packet sizing instead
(path MTU discovery up to its ``max_udp_payload_size``, which on loopback
makes its packets far bigger than the raw stacks' 1200 bytes, so the ratios
then include packet size). Both raw aioquic stacks get the same settings (the
stream limit through aioquic's private ``_local_max_streams_bidi``, as
sansquic's engine seam does; they have no admission limits). Differences
that remain: sansquic grows its receive windows when they limit a transfer,
asks for a 1 MiB socket receive buffer and sends runs of datagrams with UDP
GSO; the minimal driver also asks for 1 MiB but sends each datagram with
``sendto``; raw aioquic's asyncio API keeps the kernel's default buffer and
binds its client on "::". Neither raw stack has send backpressure: their
bulk, message and 100-stream sends are queued at once, so the time cuts never
apply to them (the counts still do). Each cell's line shows the UDP datagrams
the kernel dropped for a full receive buffer during it (Linux, machine-wide).
Run from the repository root::

    python benchmarks/runtimes.py                 # up to 5 rounds in a 9-minute budget
    python benchmarks/runtimes.py --quick         # a smoke run: 1 short round, small K and S
    python benchmarks/runtimes.py --json out.json --stacks asyncio,aioquic-minimal
    python benchmarks/runtimes.py --quick --scenarios bulk,critical

``--json PATH`` writes every cell, every sample and the medians with machine
facts; ``--png PATH`` (by default next to the JSON) plots them (matplotlib,
``pip install -e .[bench]``; ``benchmarks/plot.py out.json`` replots).
The machine may be small and shared: read the medians and their spread.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
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
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from contextlib import AbstractAsyncContextManager, AbstractContextManager, asynccontextmanager
from dataclasses import asdict, dataclass
from typing import IO, Any, Protocol, TypeVar

import aioquic
import attrs
import sansquic_asyncio
import sansquic_threads
from aioquic.asyncio.client import connect as raw_connect
from aioquic.asyncio.protocol import QuicConnectionProtocol, QuicStreamAdapter, QuicStreamHandler
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

T = TypeVar("T")

HOST = "127.0.0.1"
CHUNK = 64 * 1024
BULK_CHUNK = b"B" * CHUNK  # the server counts streams that start with b"B" ...
ONEWAY_MESSAGE = b"B" * 1000  # ... (so one-way messages are counted too) ...
HOLD_BYTE, HOLD_ANSWER = b"H", b"h"  # ... answers b"H" streams once and leaves them open ...
MESSAGE = b"m" * 1000  # ... and echoes every other stream
ECHO_BYTE = b"e"
MAX_STREAMS = 4096  # open streams the servers allow at once (sansquic's default: 1000)
RAW_LOAD_QUEUE = 256 * 1024  # raw stacks' loading stream is kept this far ahead of the wire
LOAD_RAMP = 0.2  # seconds the loading stream runs before the loaded round trips start
LOAD_MAX_CHUNKS = 200_000  # a count bound on the loading stream besides its time bound
STREAM_WORKERS = 128  # the threads server's pool for serving streams (>= the 100 streams)
MEMORY_WARMUP_STREAMS = 20
SETTLE = 0.5  # seconds before the memory cells read the server's RSS
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
    oneway_count: int
    oneway_seconds: float
    msg_count: int
    msg_seconds: float
    echo_rounds: int
    echo_warmup: int
    echo_seconds: float
    streams: int
    stream_bytes: int
    streams_seconds: float
    streams_drain: float  # seconds more a stack without backpressure may take to deliver
    crit_rounds: int
    crit_warmup: int
    crit_seconds: float  # per phase: idle, then loaded
    idle_connections: int
    idle_streams: int

    def seconds(self, scenario: str) -> float:
        """How long a cell may take before CELL_MARGIN (time cuts, or a generous guess)."""
        return {
            "bulk": self.bulk_seconds,
            "oneway": self.oneway_seconds,
            "msgs": self.msg_seconds,
            "echo": self.echo_seconds,
            "streams": self.streams_seconds + self.streams_drain,
            "critical": 2 * self.crit_seconds + LOAD_RAMP,
            "memconn": 0.2 * self.idle_connections + 2 * SETTLE,
            "memstream": 0.01 * self.idle_streams + 2 * SETTLE,
        }[scenario]


FULL = Params(
    bulk_bytes=20_000_000,
    bulk_seconds=3.0,
    oneway_count=20_000,
    oneway_seconds=2.0,
    msg_count=5000,
    msg_seconds=1.5,
    echo_rounds=500,
    echo_warmup=10,
    echo_seconds=3.0,
    streams=100,
    stream_bytes=1_000_000,
    streams_seconds=20.0,
    streams_drain=40.0,
    crit_rounds=200,
    crit_warmup=10,
    crit_seconds=1.0,
    idle_connections=100,
    idle_streams=2000,
)
QUICK = Params(
    bulk_bytes=4_000_000,
    bulk_seconds=1.0,
    oneway_count=4000,
    oneway_seconds=1.0,
    msg_count=1000,
    msg_seconds=1.0,
    echo_rounds=200,
    echo_warmup=5,
    echo_seconds=1.0,
    streams=100,
    stream_bytes=100_000,
    streams_seconds=2.0,
    streams_drain=IO_TIMEOUT,
    crit_rounds=100,
    crit_warmup=5,
    crit_seconds=0.5,
    idle_connections=20,
    idle_streams=200,
)
#: Measured every round, in this order.
SCENARIOS = ("bulk", "oneway", "msgs", "echo", "streams", "critical")
#: Measured once per run, before the rounds, each on a fresh server process.
MEMORY_SCENARIOS = ("memconn", "memstream")

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
RAW_STACKS = (API, MINIMAL)
#: Opt-in variants (only when named in ``--stacks``): the stack with UDP generic
#: receive offload off, to measure what GRO buys in the same interleaved run.
NO_GRO = "-nogro"
VARIANTS = {f"{base}{NO_GRO}": base for base in STACKS if base not in RAW_STACKS}


def _base(stack: str) -> str:
    """The stack a variant runs (itself for a plain stack)."""
    return VARIANTS.get(stack, stack)


@dataclass(frozen=True)
class Metric:
    """One figure of the tables and the plot: where it comes from and how to read it."""

    scenario: str
    key: str  # in the client's result
    fmt: str
    group: str
    higher_is_better: bool


#: Table column -> metric; the groups become the tables, in this order.
METRICS: dict[str, Metric] = {
    "bulk MB/s": Metric("bulk", "mb_s", "{:.1f}", "throughput", True),
    "100 streams MB/s": Metric("streams", "mb_s", "{:.1f}", "throughput", True),
    "1KB msgs/s": Metric("oneway", "per_s", "{:.0f}", "throughput", True),
    "1KB round trips/s": Metric("msgs", "per_s", "{:.0f}", "throughput", True),
    "client CPU ms/MB": Metric("bulk", "client_cpu_ms_per_mb", "{:.1f}", "CPU", False),
    "server CPU ms/MB": Metric("bulk", "server_cpu_ms_per_mb", "{:.1f}", "CPU", False),
    "echo p50 us": Metric("echo", "p50_us", "{:.0f}", "latency", False),
    "echo p99 us": Metric("echo", "p99_us", "{:.0f}", "latency", False),
    "crit idle p50 us": Metric("critical", "idle_p50_us", "{:.0f}", "priority", False),
    "crit loaded p50 us": Metric("critical", "loaded_p50_us", "{:.0f}", "priority", False),
    "loaded/idle": Metric("critical", "ratio", "{:.2f}", "priority", False),
    "crit load MB/s": Metric("critical", "load_mb_s", "{:.1f}", "priority", True),
    "load while timed MB/s": Metric("critical", "timed_load_mb_s", "{:.1f}", "priority", True),
    "per idle conn KiB": Metric("memconn", "per_conn_kib", "{:.1f}", "memory", False),
    "per idle stream B": Metric("memstream", "per_stream_bytes", "{:.0f}", "memory", False),
}
GROUP_TITLES = {
    "throughput": "throughput (bulk: one stream; 100 streams: aggregate)",
    "CPU": "CPU time per MB during the bulk cell (user+sys, all threads)",
    "latency": "open + 1-byte echo",
    "priority": "1KB round trip on a CRITICAL stream, idle and beside a saturating LOW stream",
    "memory": "server RSS growth (measured once, on a fresh server process)",
}
TARGET_CONN_RATIO = 1.1  # per idle connection, against the raw aioquic API server
TARGET_STREAM_BYTES = 2048  # per idle stream


@dataclass(frozen=True)
class Goal:
    """One of issue 11's speed goals: ``metric`` against ``reference`` ("api", "min",
    or None for the value itself), as a speed-up: at least ``at_least`` times."""

    name: str
    metric: str
    reference: str | None
    at_least: float


#: Speed-ups are rates over the reference's, or for a latency the reference's over ours.
GOALS = (
    Goal("bulk /api", "bulk MB/s", "api", 1.5),
    Goal("bulk /min", "bulk MB/s", "min", 0.9),
    Goal("1KB msgs /api", "1KB msgs/s", "api", 1.5),
    Goal("1KB msgs /min", "1KB msgs/s", "min", 0.9),
    Goal("echo /api", "echo p50 us", "api", 1.5),
    Goal("echo /min", "echo p50 us", "min", 0.9),
    Goal("100 streams /min", "100 streams MB/s", "min", 3.0),
    Goal("idle/loaded", "loaded/idle", None, 0.5),  # loaded at most 2x idle
)


#: False: sansquic sends 1200-byte packets like both raw stacks; True (``--pmtu``): its own
#: default packet sizing (path MTU discovery, where its Config has it).
SANSQUIC_PACKET_DEFAULTS = False


@functools.cache
def sansquic_config() -> sansquic.Config:
    # One client address opens the idle connections: no admission limits per address.
    limits = sansquic.RateLimits(max_connections_per_address=None, new_connections_per_second=None)
    packets: dict[str, Any] = {}
    if not SANSQUIC_PACKET_DEFAULTS:
        packets["max_udp_payload_size"] = 1200
        if "pmtu_discovery" in attrs.fields_dict(sansquic.Config):
            packets["pmtu_discovery"] = False
    # Client and server are separate processes, each with its own dev authority,
    # and the raw clients skip verification too (CERT_NONE): so does sansquic's.
    return sansquic.Config(
        dev_mode=True,
        verify_peer=False,
        max_streams_bidi=MAX_STREAMS,
        rate_limits=limits,
        **packets,
    )


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


def _raise_stream_limit(quic: QuicConnection) -> None:
    """aioquic lets the peer open 128 bidirectional streams; allow MAX_STREAMS, as sansquic's
    seam does (read when the transport parameters are written, so call it before that)."""
    limit = quic._local_max_streams_bidi
    limit.value = limit.sent = MAX_STREAMS


def _unsent(quic: QuicConnection, stream_id: int) -> int:
    """Bytes queued on a raw aioquic stream and not yet sent once (private attributes)."""
    sender = quic._streams[stream_id].sender
    return sender._buffer_stop - sender.next_offset


# -- results --------------------------------------------------------------------------------


def _count_reply(count: int, cpu_began: float) -> bytes:
    return f"{count} {time.process_time() - cpu_began:.6f}".encode()


def _parse_count(reply: bytes, expected: int) -> float:
    """Check a counting server's reply against ``expected`` bytes; its CPU seconds."""
    fields = reply.split()
    if len(fields) != 2 or int(fields[0]) != expected:
        raise RuntimeError(f"server replied {reply[:60]!r}, expected a count of {expected}")
    return float(fields[1])


def _bulk_result(reply: bytes, sent: int, elapsed: float, client_cpu: float) -> dict[str, float]:
    server_cpu = _parse_count(reply, sent)
    mb = sent / 1e6
    return {
        "mb_s": mb / elapsed,
        "client_cpu_ms_per_mb": client_cpu * 1e3 / mb,
        "server_cpu_ms_per_mb": server_cpu * 1e3 / mb,
        "client_cpu_s": client_cpu,
        "server_cpu_s": server_cpu,
        "bytes": sent,
        "seconds": elapsed,
    }


def _oneway_result(reply: bytes, count: int, elapsed: float) -> dict[str, float]:
    _parse_count(reply, count * len(ONEWAY_MESSAGE))
    return {"per_s": count / elapsed, "count": count, "seconds": elapsed}


def _messages_result(count: int, elapsed: float) -> dict[str, float]:
    return {"per_s": count / elapsed, "count": count, "seconds": elapsed}


def _percentiles(samples: list[float], what: str) -> tuple[float, float]:
    if len(samples) < 2:
        raise RuntimeError(f"only {len(samples)} {what} samples")
    return statistics.median(samples), statistics.quantiles(samples, n=100)[98]


def _echo_result(samples: list[float]) -> dict[str, float]:
    p50, p99 = _percentiles(samples, "echo")
    return {"p50_us": p50, "p99_us": p99, "count": len(samples)}


def _streams_result(sent: list[int], elapsed: float) -> dict[str, float]:
    total = sum(sent)
    return {"mb_s": total / 1e6 / elapsed, "streams": len(sent), "bytes": total, "seconds": elapsed}


class _LoadWindow:
    """The loading stream's bytes queued so far, and how many of them while the loaded
    round trips were timed (warm-up included): the load the CRITICAL stream met, apart
    from the ramp before it, when nothing held the loading stream back yet."""

    def __init__(self) -> None:
        self.sent = 0
        self._opened: tuple[float, int] | None = None
        self._closed: tuple[float, int] | None = None

    def open(self) -> None:
        self._opened = (time.perf_counter(), self.sent)

    def close(self) -> None:
        self._closed = (time.perf_counter(), self.sent)

    def mb_s(self) -> float:
        if self._opened is None or self._closed is None:
            raise RuntimeError("the loaded round trips were not timed")
        seconds = self._closed[0] - self._opened[0]
        return (self._closed[1] - self._opened[1]) / 1e6 / max(seconds, 1e-9)


def _critical_result(
    idle: list[float],
    loaded: list[float],
    window: _LoadWindow,
    load_seconds: float,
    priorities: bool,
) -> dict[str, float]:
    idle_p50, idle_p99 = _percentiles(idle, "idle round trip")
    loaded_p50, loaded_p99 = _percentiles(loaded, "loaded round trip")
    return {
        "idle_p50_us": idle_p50,
        "idle_p99_us": idle_p99,
        "loaded_p50_us": loaded_p50,
        "loaded_p99_us": loaded_p99,
        "ratio": loaded_p50 / idle_p50,
        "idle_count": len(idle),
        "loaded_count": len(loaded),
        "load_mb_s": window.sent / 1e6 / load_seconds,
        "timed_load_mb_s": window.mb_s(),
        "priorities": float(priorities),
    }


def _rss(pid: int) -> int:
    """A process's resident set size in bytes (Linux)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def _settled(reads: list[int]) -> bool:
    """Whether RSS reads may stop: the last two agree, or there are 10."""
    return len(reads) >= 10 or (len(reads) >= 2 and reads[-1] == reads[-2])


def _memory_result(before: int, after: int, count: int, what: str) -> dict[str, float]:
    per = (after - before) / count
    key = {"conn": "per_conn", "stream": "per_stream"}[what]
    return {
        f"{key}_bytes": per,
        f"{key}_kib": per / 1024,
        "rss_before": before,
        "rss_after": after,
        "count": count,
    }


# -- async stacks: one client and one server logic for sansquic and aioquic's API ----------


class AsyncStream(Protocol):
    async def send(self, data: bytes, *, timeout: float | None = None) -> None: ...
    async def finish(self) -> None: ...
    async def receive(self, max_bytes: int = -1, *, timeout: float | None = None) -> bytes: ...
    async def receive_exactly(self, size: int, *, timeout: float | None = None) -> bytes: ...
    async def read_all(self, *, timeout: float | None = None) -> bytes: ...


class AsyncConn(Protocol):
    async def open_stream(self, *, priority: int = ...) -> AsyncStream: ...
    async def close(self) -> None: ...


AsyncOpener = Callable[[], AbstractAsyncContextManager[AsyncConn]]
#: A task group's spawn: start ``fn()`` now; leaving the group waits for them all.
Spawn = Callable[[Callable[[], Coroutine[Any, Any, None]]], Awaitable[None]]
GroupFactory = Callable[[], AbstractAsyncContextManager[Spawn]]


@dataclass(frozen=True)
class AsyncKit:
    """What a framework supplies the shared async logic: task groups and sleep."""

    group: GroupFactory
    sleep: Callable[[float], Awaitable[Any]]


@dataclass(frozen=True)
class AsyncCell:
    open_conn: AsyncOpener
    kit: AsyncKit
    p: Params
    server_pid: int


AsyncScenario = Callable[[AsyncCell], Coroutine[Any, Any, dict[str, float]]]


@asynccontextmanager
async def _asyncio_group() -> AsyncIterator[Spawn]:
    async with asyncio.TaskGroup() as group:

        async def spawn(fn: Callable[[], Coroutine[Any, Any, None]]) -> None:
            group.create_task(fn())

        yield spawn


@asynccontextmanager
async def _trio_group() -> AsyncIterator[Spawn]:
    import trio

    async with trio.open_nursery() as nursery:

        async def spawn(fn: Callable[[], Coroutine[Any, Any, None]]) -> None:
            nursery.start_soon(fn)

        yield spawn


@asynccontextmanager
async def _anyio_group() -> AsyncIterator[Spawn]:
    import anyio

    async with anyio.create_task_group() as group:

        async def spawn(fn: Callable[[], Coroutine[Any, Any, None]]) -> None:
            group.start_soon(fn)

        yield spawn


@asynccontextmanager
async def _curio_group() -> AsyncIterator[Spawn]:
    curio = importlib.import_module("curio")
    async with curio.TaskGroup() as group:

        async def spawn(fn: Callable[[], Coroutine[Any, Any, None]]) -> None:
            await group.spawn(fn)

        yield spawn


async def _collect(
    fn: Callable[[], Awaitable[T]], index: int, results: dict[int, T], errors: list[Exception]
) -> None:
    try:
        results[index] = await fn()
    except Exception as exc:  # re-raised by _gather once every task is done
        errors.append(exc)


async def _gather(kit: AsyncKit, fns: Sequence[Callable[[], Awaitable[T]]]) -> list[T]:
    """Run ``fns`` concurrently in a task group; their results, or the first failure."""
    results: dict[int, T] = {}
    errors: list[Exception] = []
    async with kit.group() as spawn:
        for index, fn in enumerate(fns):
            await spawn(functools.partial(_collect, fn, index, results, errors))
    if errors:
        raise errors[0]
    return [results[i] for i in range(len(fns))]


async def _async_serve_stream(stream: AsyncStream, data: bytes) -> None:
    """Count a stream that starts with b"B" and reply with the count; echo any other."""
    if data[:1] == b"B":
        cpu_began, count = time.process_time(), 0
        while data:
            count += len(data)
            data = await stream.receive(timeout=IO_TIMEOUT)
        await stream.send(_count_reply(count, cpu_began), timeout=IO_TIMEOUT)
    else:
        while data:
            await stream.send(data, timeout=IO_TIMEOUT)
            data = await stream.receive(timeout=IO_TIMEOUT)
    await stream.finish()


async def _async_serve_logged(stream: AsyncStream, data: bytes) -> None:
    try:
        await _async_serve_stream(stream, data)
    except Exception:  # the client's check fails too; the traceback goes to stderr
        traceback.print_exc()


async def _async_serve_new(stream: AsyncStream) -> None:
    """A new stream: answer and leave a b"H" stream, serve any other."""
    data = await stream.receive(timeout=IO_TIMEOUT)
    if data[:1] == HOLD_BYTE:
        await stream.send(HOLD_ANSWER, timeout=IO_TIMEOUT)
    else:
        await _async_serve_logged(stream, data)


def _sansquic_handler_for(
    group: GroupFactory,
) -> Callable[[sansquic_asyncio.Connection], Coroutine[Any, Any, None]]:
    """The server handler of an async sansquic runtime (they share the Connection class)."""

    async def handler(conn: sansquic_asyncio.Connection) -> None:
        async with group() as spawn:
            async for stream in conn:  # ends when the client closes the connection
                data = await stream.receive(timeout=IO_TIMEOUT)
                if data[:1] == HOLD_BYTE:  # answered here: no task stays for an idle stream
                    await stream.send(HOLD_ANSWER, timeout=IO_TIMEOUT)
                else:
                    await spawn(functools.partial(_async_serve_logged, stream, data))

    return handler


async def _async_round_trips(
    stream: AsyncStream, warmup: int, rounds: int, seconds: float
) -> list[float]:
    """1000-byte round trips on ``stream``: ``warmup`` untimed, then up to ``rounds`` or
    ``seconds``; each in microseconds."""
    samples: list[float] = []
    stop = math.inf
    for i in range(warmup + rounds):
        if i == warmup:
            stop = time.perf_counter() + seconds
        elif time.perf_counter() > stop:
            break
        start = time.perf_counter()
        await stream.send(MESSAGE, timeout=IO_TIMEOUT)
        if await stream.receive_exactly(len(MESSAGE), timeout=IO_TIMEOUT) != MESSAGE:
            raise RuntimeError("message echo mismatch")
        if i >= warmup:
            samples.append((time.perf_counter() - start) * 1e6)
    return samples


async def _async_finish_echo(stream: AsyncStream) -> None:
    await stream.finish()
    if await stream.read_all(timeout=IO_TIMEOUT):
        raise RuntimeError("data after the last echo")


async def _async_send_counted(stream: AsyncStream, size: int, stop: float, drain: float) -> int:
    """Send up to ``size`` bytes of b"B" in 64 KiB sends until ``stop``, FIN, check the count;
    the bytes sent."""
    sent = 0
    while sent < size and time.perf_counter() < stop:
        piece = min(CHUNK, size - sent)
        await stream.send(BULK_CHUNK if piece == CHUNK else BULK_CHUNK[:piece], timeout=IO_TIMEOUT)
        sent += piece
    await stream.finish()
    # Streams without backpressure queue it all at once: their counts come at the very end.
    wait = max(0.0, stop - time.perf_counter()) + drain
    _parse_count(await stream.read_all(timeout=wait), sent)
    return sent


async def _async_bulk(cell: AsyncCell) -> dict[str, float]:
    p = cell.p
    async with cell.open_conn() as conn:
        stream = await conn.open_stream()
        start, cpu_began = time.perf_counter(), time.process_time()
        stop, sent = start + p.bulk_seconds, 0
        while sent < p.bulk_bytes and time.perf_counter() < stop:
            size = min(CHUNK, p.bulk_bytes - sent)
            await stream.send(
                BULK_CHUNK if size == CHUNK else BULK_CHUNK[:size], timeout=IO_TIMEOUT
            )
            sent += size
        await stream.finish()
        reply = await stream.read_all(timeout=IO_TIMEOUT)
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu_began
    return _bulk_result(reply, sent, elapsed, cpu)


async def _async_oneway(cell: AsyncCell) -> dict[str, float]:
    p = cell.p
    async with cell.open_conn() as conn:
        stream = await conn.open_stream()
        start = time.perf_counter()
        stop, count = start + p.oneway_seconds, 0
        while count < p.oneway_count and time.perf_counter() < stop:
            await stream.send(ONEWAY_MESSAGE, timeout=IO_TIMEOUT)
            count += 1
        await stream.finish()
        reply = await stream.read_all(timeout=IO_TIMEOUT)
        elapsed = time.perf_counter() - start
    return _oneway_result(reply, count, elapsed)


async def _async_messages(cell: AsyncCell) -> dict[str, float]:
    p = cell.p
    async with cell.open_conn() as conn:
        stream = await conn.open_stream()
        start = time.perf_counter()
        samples = await _async_round_trips(stream, 0, p.msg_count, p.msg_seconds)
        elapsed = time.perf_counter() - start
        await _async_finish_echo(stream)
    return _messages_result(len(samples), elapsed)


async def _async_echo(cell: AsyncCell) -> dict[str, float]:
    p = cell.p
    samples: list[float] = []
    async with cell.open_conn() as conn:
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


async def _async_streams(cell: AsyncCell) -> dict[str, float]:
    p = cell.p
    async with cell.open_conn() as conn:
        streams = [await conn.open_stream() for _ in range(p.streams)]
        # Only a stack without backpressure (raw aioquic's API) gets the long drain:
        # sansquic's stop sending at the cut, so their counts are due IO_TIMEOUT after.
        drain = p.streams_drain if isinstance(streams[0], _RawStream) else IO_TIMEOUT
        start = time.perf_counter()
        stop = start + p.streams_seconds
        sent = await _gather(
            cell.kit,
            [
                functools.partial(_async_send_counted, s, p.stream_bytes, stop, drain)
                for s in streams
            ],
        )
        elapsed = time.perf_counter() - start
    return _streams_result(sent, elapsed)


async def _async_critical(cell: AsyncCell) -> dict[str, float]:
    p = cell.p
    async with cell.open_conn() as conn:
        crit = await conn.open_stream(priority=sansquic.Priority.CRITICAL)
        idle = await _async_round_trips(crit, p.crit_warmup, p.crit_rounds, p.crit_seconds)
        load = await conn.open_stream(priority=sansquic.Priority.LOW)
        done = threading.Event()  # only a flag, never waited on: it suits every framework
        loaded: list[float] = []
        began = time.perf_counter()
        deadline = began + LOAD_RAMP + p.crit_seconds + IO_TIMEOUT

        window = _LoadWindow()

        async def keep_loading() -> int:
            for _ in range(LOAD_MAX_CHUNKS):
                if done.is_set() or time.perf_counter() >= deadline:
                    break
                if isinstance(load, _RawStream):  # no backpressure: keep it just ahead
                    await load.wait_unsent_below(RAW_LOAD_QUEUE, deadline)
                await load.send(BULK_CHUNK, timeout=IO_TIMEOUT)
                window.sent += CHUNK
            await load.finish()
            _parse_count(await load.read_all(timeout=IO_TIMEOUT), window.sent)
            return 0

        async def measure() -> int:
            try:
                await cell.kit.sleep(LOAD_RAMP)
                warmup, rounds = p.crit_warmup, p.crit_rounds
                window.open()
                loaded.extend(await _async_round_trips(crit, warmup, rounds, p.crit_seconds))
                window.close()
            finally:
                done.set()
            return 0

        await _gather(cell.kit, [keep_loading, measure])
        load_seconds = time.perf_counter() - began
        await _async_finish_echo(crit)
    raw = isinstance(load, _RawStream)
    return _critical_result(idle, loaded, window, load_seconds, priorities=not raw)


async def _async_settled_rss(kit: AsyncKit, pid: int) -> int:
    await kit.sleep(SETTLE)
    reads = [_rss(pid)]
    while not _settled(reads):
        await kit.sleep(0.1)
        reads.append(_rss(pid))
    return reads[-1]


async def _async_echo_once(conn: AsyncConn) -> None:
    stream = await conn.open_stream()
    await stream.send(ECHO_BYTE, timeout=IO_TIMEOUT)
    await stream.finish()
    if await stream.read_all(timeout=IO_TIMEOUT) != ECHO_BYTE:
        raise RuntimeError("echo mismatch")


async def _async_memconn(cell: AsyncCell) -> dict[str, float]:
    count = cell.p.idle_connections
    async with contextlib.AsyncExitStack() as held:
        conns = [await held.enter_async_context(cell.open_conn())]
        await _async_echo_once(conns[0])
        before = await _async_settled_rss(cell.kit, cell.server_pid)
        began = time.perf_counter()
        for _ in range(count):
            conns.append(await held.enter_async_context(cell.open_conn()))
        opened = time.perf_counter() - began
        after = await _async_settled_rss(cell.kit, cell.server_pid)
        closing = time.perf_counter()
        await _gather(cell.kit, [conn.close for conn in conns])  # together, not one by one
    return {
        **_memory_result(before, after, count, "conn"),
        "open_seconds": opened,
        "close_seconds": time.perf_counter() - closing,
    }


async def _async_hold(conn: AsyncConn, count: int) -> list[AsyncStream]:
    """``count`` b"H" streams, each answered by the server, all left open."""
    streams = []
    for _ in range(count):
        stream = await conn.open_stream()
        await stream.send(HOLD_BYTE, timeout=IO_TIMEOUT)
        streams.append(stream)
    for stream in streams:
        if await stream.receive_exactly(1, timeout=IO_TIMEOUT) != HOLD_ANSWER:
            raise RuntimeError("hold answer mismatch")
    return streams


async def _async_memstream(cell: AsyncCell) -> dict[str, float]:
    count = cell.p.idle_streams
    async with cell.open_conn() as conn:
        warm = await _async_hold(conn, MEMORY_WARMUP_STREAMS)
        before = await _async_settled_rss(cell.kit, cell.server_pid)
        held = await _async_hold(conn, count)
        after = await _async_settled_rss(cell.kit, cell.server_pid)
        del warm, held
    return _memory_result(before, after, count, "stream")


ASYNC_SCENARIOS: dict[str, AsyncScenario] = {
    "bulk": _async_bulk,
    "oneway": _async_oneway,
    "msgs": _async_messages,
    "echo": _async_echo,
    "streams": _async_streams,
    "critical": _async_critical,
    "memconn": _async_memconn,
    "memstream": _async_memstream,
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

    async def wait_unsent_below(self, size: int, deadline: float) -> None:
        """Poll (every 1 ms, until ``deadline``) until fewer than ``size`` bytes wait unsent."""
        adapter = self._writer.transport
        assert isinstance(adapter, QuicStreamAdapter)
        quic, stream_id = adapter.protocol._quic, adapter.stream_id
        while _unsent(quic, stream_id) >= size and time.perf_counter() < deadline:
            await asyncio.sleep(0.001)


class _RawConn:
    def __init__(self, client: QuicConnectionProtocol) -> None:
        self._client = client

    async def close(self) -> None:
        self._client.close()
        await self._client.wait_closed()

    async def open_stream(self, *, priority: int = 0) -> _RawStream:
        """A plain stream: raw aioquic has no priorities, ``priority`` is ignored."""
        reader, writer = await self._client.create_stream()
        writer.write(b"")  # aioquic takes the id only with the first send: take it now
        return _RawStream(reader, writer)


def _raw_opener(port: int) -> AsyncOpener:
    config = _raw_client_config()

    @asynccontextmanager
    async def open_conn() -> AsyncIterator[AsyncConn]:
        async with raw_connect(HOST, port, configuration=config) as client:
            yield _RawConn(client)

    return open_conn


class _RawServerProtocol(QuicConnectionProtocol):
    def __init__(
        self, quic: QuicConnection, stream_handler: QuicStreamHandler | None = None
    ) -> None:
        super().__init__(quic, stream_handler)
        _raise_stream_limit(quic)


async def _raw_serve(announce: Callable[[int], None]) -> None:
    tasks: set[asyncio.Task[None]] = set()

    def stream_handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.create_task(_async_serve_new(_RawStream(reader, writer)))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    server = await raw_serve(
        HOST,
        0,
        configuration=_raw_server_config(),
        create_protocol=_RawServerProtocol,
        stream_handler=stream_handler,
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
    def open_stream(self, *, priority: int = ...) -> SyncStream: ...


SyncOpener = Callable[[], AbstractContextManager[SyncConn]]


@dataclass(frozen=True)
class SyncCell:
    open_conn: SyncOpener
    p: Params
    server_pid: int
    #: idle(conns, seconds): let time pass with ``conns`` open (the minimal driver pumps them).
    idle: Callable[[Sequence[Any], float], None]
    #: close_all(conns): close them all at once (not one by one as the ExitStack unwinds).
    close_all: Callable[[Sequence[Any]], None]


SyncScenario = Callable[[SyncCell], dict[str, float]]


def _sync_serve_stream(stream: SyncStream, data: bytes) -> None:
    if data[:1] == b"B":
        cpu_began, count = time.process_time(), 0
        while data:
            count += len(data)
            data = stream.receive(timeout=IO_TIMEOUT)
        stream.send(_count_reply(count, cpu_began), timeout=IO_TIMEOUT)
    else:
        while data:
            stream.send(data, timeout=IO_TIMEOUT)
            data = stream.receive(timeout=IO_TIMEOUT)
    stream.finish()


def _log_failure(future: concurrent.futures.Future[None]) -> None:
    exc = future.exception()
    if exc is not None:  # the client's check fails too; the traceback goes to stderr
        traceback.print_exception(exc)


@functools.cache
def _stream_pool() -> concurrent.futures.ThreadPoolExecutor:
    return concurrent.futures.ThreadPoolExecutor(STREAM_WORKERS, thread_name_prefix="stream")


def _threads_handler(conn: sansquic_threads.Connection) -> None:
    for stream in conn:  # ends when the client closes the connection
        data = stream.receive(timeout=IO_TIMEOUT)
        if data[:1] == HOLD_BYTE:  # answered here: no thread stays for an idle stream
            stream.send(HOLD_ANSWER, timeout=IO_TIMEOUT)
        else:
            _stream_pool().submit(_sync_serve_stream, stream, data).add_done_callback(_log_failure)


def _sync_round_trips(stream: SyncStream, warmup: int, rounds: int, seconds: float) -> list[float]:
    samples: list[float] = []
    stop = math.inf
    for i in range(warmup + rounds):
        if i == warmup:
            stop = time.perf_counter() + seconds
        elif time.perf_counter() > stop:
            break
        start = time.perf_counter()
        stream.send(MESSAGE, timeout=IO_TIMEOUT)
        if stream.receive_exactly(len(MESSAGE), timeout=IO_TIMEOUT) != MESSAGE:
            raise RuntimeError("message echo mismatch")
        if i >= warmup:
            samples.append((time.perf_counter() - start) * 1e6)
    return samples


def _sync_finish_echo(stream: SyncStream) -> None:
    stream.finish()
    if stream.read_all(timeout=IO_TIMEOUT):
        raise RuntimeError("data after the last echo")


def _sync_send_counted(stream: SyncStream, size: int, stop: float) -> int:
    sent = 0
    while sent < size and time.perf_counter() < stop:
        piece = min(CHUNK, size - sent)
        stream.send(BULK_CHUNK if piece == CHUNK else BULK_CHUNK[:piece], timeout=IO_TIMEOUT)
        sent += piece
    stream.finish()
    wait = max(0.0, stop - time.perf_counter()) + IO_TIMEOUT
    _parse_count(stream.read_all(timeout=wait), sent)
    return sent


def _thread_gather(fns: Sequence[Callable[[], T]], timeout: float) -> list[T]:
    """Run ``fns`` in a thread each; their results, or the first failure."""
    results: dict[int, T] = {}
    errors: list[BaseException] = []

    def run(index: int, fn: Callable[[], T]) -> None:
        try:
            results[index] = fn()
        except BaseException as exc:  # re-raised below, in the calling thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i, fn), daemon=True) for i, fn in enumerate(fns)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + timeout
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    if errors:
        raise errors[0]
    if any(thread.is_alive() for thread in threads):
        raise TimeoutError(f"threads still running after {timeout:.0f} s")
    return [results[i] for i in range(len(fns))]


def _sync_bulk(cell: SyncCell) -> dict[str, float]:
    p = cell.p
    with cell.open_conn() as conn:
        stream = conn.open_stream()
        start, cpu_began = time.perf_counter(), time.process_time()
        stop, sent = start + p.bulk_seconds, 0
        while sent < p.bulk_bytes and time.perf_counter() < stop:
            size = min(CHUNK, p.bulk_bytes - sent)
            stream.send(BULK_CHUNK if size == CHUNK else BULK_CHUNK[:size], timeout=IO_TIMEOUT)
            sent += size
        stream.finish()
        reply = stream.read_all(timeout=IO_TIMEOUT)
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu_began
    return _bulk_result(reply, sent, elapsed, cpu)


def _sync_oneway(cell: SyncCell) -> dict[str, float]:
    p = cell.p
    with cell.open_conn() as conn:
        stream = conn.open_stream()
        start = time.perf_counter()
        stop, count = start + p.oneway_seconds, 0
        while count < p.oneway_count and time.perf_counter() < stop:
            stream.send(ONEWAY_MESSAGE, timeout=IO_TIMEOUT)
            count += 1
        stream.finish()
        reply = stream.read_all(timeout=IO_TIMEOUT)
        elapsed = time.perf_counter() - start
    return _oneway_result(reply, count, elapsed)


def _sync_messages(cell: SyncCell) -> dict[str, float]:
    p = cell.p
    with cell.open_conn() as conn:
        stream = conn.open_stream()
        start = time.perf_counter()
        samples = _sync_round_trips(stream, 0, p.msg_count, p.msg_seconds)
        elapsed = time.perf_counter() - start
        _sync_finish_echo(stream)
    return _messages_result(len(samples), elapsed)


def _sync_echo(cell: SyncCell) -> dict[str, float]:
    p = cell.p
    samples: list[float] = []
    with cell.open_conn() as conn:
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


def _threads_streams(cell: SyncCell) -> dict[str, float]:
    p = cell.p
    with cell.open_conn() as conn:
        streams = [conn.open_stream() for _ in range(p.streams)]
        start = time.perf_counter()
        stop = start + p.streams_seconds
        sent = _thread_gather(
            [functools.partial(_sync_send_counted, s, p.stream_bytes, stop) for s in streams],
            p.streams_seconds + 2 * IO_TIMEOUT,  # each thread: its last send, then the count
        )
        elapsed = time.perf_counter() - start
    return _streams_result(sent, elapsed)


def _threads_critical(cell: SyncCell) -> dict[str, float]:
    p = cell.p
    with cell.open_conn() as conn:
        crit = conn.open_stream(priority=sansquic.Priority.CRITICAL)
        idle = _sync_round_trips(crit, p.crit_warmup, p.crit_rounds, p.crit_seconds)
        load = conn.open_stream(priority=sansquic.Priority.LOW)
        done = threading.Event()
        loaded: list[float] = []
        began = time.perf_counter()
        deadline = began + LOAD_RAMP + p.crit_seconds + IO_TIMEOUT

        window = _LoadWindow()

        def keep_loading() -> int:
            for _ in range(LOAD_MAX_CHUNKS):
                if done.is_set() or time.perf_counter() >= deadline:
                    break
                load.send(BULK_CHUNK, timeout=IO_TIMEOUT)
                window.sent += CHUNK
            load.finish()
            _parse_count(load.read_all(timeout=IO_TIMEOUT), window.sent)
            return 0

        def measure() -> int:
            try:
                time.sleep(LOAD_RAMP)
                warmup, rounds = p.crit_warmup, p.crit_rounds
                window.open()
                loaded.extend(_sync_round_trips(crit, warmup, rounds, p.crit_seconds))
                window.close()
            finally:
                done.set()
            return 0

        timeout = LOAD_RAMP + p.crit_seconds + 3 * IO_TIMEOUT
        _thread_gather([keep_loading, measure], timeout)
        load_seconds = time.perf_counter() - began
        _sync_finish_echo(crit)
    return _critical_result(idle, loaded, window, load_seconds, priorities=True)


def _sync_settled_rss(cell: SyncCell, conns: Sequence[Any], pid: int) -> int:
    cell.idle(conns, SETTLE)
    reads = [_rss(pid)]
    while not _settled(reads):
        cell.idle(conns, 0.1)
        reads.append(_rss(pid))
    return reads[-1]


def _sync_echo_once(conn: SyncConn) -> None:
    stream = conn.open_stream()
    stream.send(ECHO_BYTE, timeout=IO_TIMEOUT)
    stream.finish()
    if stream.read_all(timeout=IO_TIMEOUT) != ECHO_BYTE:
        raise RuntimeError("echo mismatch")


def _sync_memconn(cell: SyncCell) -> dict[str, float]:
    count = cell.p.idle_connections
    with contextlib.ExitStack() as held:
        conns = [held.enter_context(cell.open_conn())]
        _sync_echo_once(conns[0])
        before = _sync_settled_rss(cell, conns, cell.server_pid)
        began = time.perf_counter()
        conns += [held.enter_context(cell.open_conn()) for _ in range(count)]
        opened = time.perf_counter() - began
        after = _sync_settled_rss(cell, conns, cell.server_pid)
        closing = time.perf_counter()
        cell.close_all(conns)
    return {
        **_memory_result(before, after, count, "conn"),
        "open_seconds": opened,
        "close_seconds": time.perf_counter() - closing,
    }


def _sync_hold(conn: SyncConn, count: int) -> list[SyncStream]:
    streams = []
    for _ in range(count):
        stream = conn.open_stream()
        stream.send(HOLD_BYTE, timeout=IO_TIMEOUT)
        streams.append(stream)
    for stream in streams:
        if stream.receive_exactly(1, timeout=IO_TIMEOUT) != HOLD_ANSWER:
            raise RuntimeError("hold answer mismatch")
    return streams


def _sync_memstream(cell: SyncCell) -> dict[str, float]:
    count = cell.p.idle_streams
    with cell.open_conn() as conn:
        warm = _sync_hold(conn, MEMORY_WARMUP_STREAMS)
        before = _sync_settled_rss(cell, [conn], cell.server_pid)
        held = _sync_hold(conn, count)
        after = _sync_settled_rss(cell, [conn], cell.server_pid)
        del warm, held
    return _memory_result(before, after, count, "stream")


SYNC_SCENARIOS: dict[str, SyncScenario] = {
    "bulk": _sync_bulk,
    "oneway": _sync_oneway,
    "msgs": _sync_messages,
    "echo": _sync_echo,
    "streams": _threads_streams,
    "critical": _threads_critical,
    "memconn": _sync_memconn,
    "memstream": _sync_memstream,
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
        #: Called on every pass of the loop, before the send pass (the loading stream's top-up).
        self.on_step: Callable[[], None] | None = None
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
        if self.on_step is not None:
            self.on_step()
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

    def pump(self, seconds: float) -> None:
        """Keep the connection going for ``seconds``."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not self.terminated:
            self.step(deadline)

    def open_stream(self, *, priority: int = 0) -> _MiniStream:
        """A plain stream: raw aioquic has no priorities, ``priority`` is ignored."""
        stream_id = self.quic.get_next_available_stream_id()
        self.quic.send_stream_data(stream_id, b"")  # the id is taken with the first send
        return _MiniStream(self, stream_id)

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
        self._conn, self.id = conn, stream_id
        self._buffer = conn.buffers.setdefault(stream_id, bytearray())

    def send(self, data: bytes, *, timeout: float | None = None) -> None:
        self._conn.quic.send_stream_data(self.id, data)  # no backpressure: queued at once
        self._conn.flush()

    def finish(self) -> None:
        self._conn.quic.send_stream_data(self.id, b"", end_stream=True)
        self._conn.flush()

    def _take(self, size: int) -> bytes:
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        if not self._buffer and self.id in self._conn.ended:
            self._conn.buffers.pop(self.id, None)
        return data

    def ended(self) -> bool:
        return self.id in self._conn.ended

    def receive(self, max_bytes: int = -1, *, timeout: float | None = None) -> bytes:
        self._conn.until(lambda: bool(self._buffer) or self.ended(), timeout)
        return self._take(len(self._buffer) if max_bytes < 0 else max_bytes)

    def receive_exactly(self, size: int, *, timeout: float | None = None) -> bytes:
        self._conn.until(lambda: len(self._buffer) >= size or self.ended(), timeout)
        if len(self._buffer) < size:
            raise RuntimeError(f"stream ended after {len(self._buffer)} of {size} bytes")
        return self._take(size)

    def read_all(self, *, timeout: float | None = None) -> bytes:
        self._conn.until(self.ended, timeout)
        return self._take(len(self._buffer))


def _mini_idle(conns: Sequence[Any], seconds: float) -> None:
    """Pump every connection in ``conns`` (each a _MiniConnection) for ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        socks = [conn.sock for conn in conns]
        select.select(socks, [], [], max(0.0, min(0.01, deadline - time.monotonic())))
        for conn in conns:
            conn.step(time.monotonic())  # a pass without waiting


def _mini_close_all(conns: Sequence[Any]) -> None:
    """Close every connection in ``conns`` (each a _MiniConnection) together."""
    for conn in conns:
        if not conn.terminated:
            conn.quic.close()
    deadline = time.monotonic() + CLOSE_TIMEOUT
    while time.monotonic() < deadline and not all(conn.terminated for conn in conns):
        _mini_idle(conns, 0.01)


def _mini_streams(cell: SyncCell) -> dict[str, float]:
    """All streams' bytes queued at once (there is no backpressure), then every count read."""
    p = cell.p
    with cell.open_conn() as opened:
        assert isinstance(opened, _MiniConnection)
        conn = opened
        streams = [conn.open_stream() for _ in range(p.streams)]
        start = time.perf_counter()
        stop, sent = start + p.streams_seconds, []
        for stream in streams:
            count = 0
            while count < p.stream_bytes and time.perf_counter() < stop:
                piece = min(CHUNK, p.stream_bytes - count)
                conn.quic.send_stream_data(stream.id, BULK_CHUNK[:piece])
                count += piece
            conn.quic.send_stream_data(stream.id, b"", end_stream=True)
            sent.append(count)
        conn.until(lambda: all(s.ended() for s in streams), p.streams_seconds + p.streams_drain)
        for stream, count in zip(streams, sent, strict=True):
            _parse_count(stream.read_all(timeout=IO_TIMEOUT), count)
        elapsed = time.perf_counter() - start
    return _streams_result(sent, elapsed)


def _mini_critical(cell: SyncCell) -> dict[str, float]:
    """The loading stream is topped up on every pass of the driver's loop."""
    p = cell.p
    with cell.open_conn() as opened:
        assert isinstance(opened, _MiniConnection)
        conn = opened
        crit = conn.open_stream()
        idle = _sync_round_trips(crit, p.crit_warmup, p.crit_rounds, p.crit_seconds)
        load = conn.open_stream()
        window = _LoadWindow()

        def top_up() -> None:
            for _ in range(RAW_LOAD_QUEUE // CHUNK + 1):
                if _unsent(conn.quic, load.id) >= RAW_LOAD_QUEUE:
                    break
                conn.quic.send_stream_data(load.id, BULK_CHUNK)
                window.sent += CHUNK

        began = time.perf_counter()
        conn.quic.send_stream_data(load.id, BULK_CHUNK)
        window.sent += CHUNK
        conn.on_step = top_up
        try:
            conn.pump(LOAD_RAMP)
            window.open()
            loaded = _sync_round_trips(crit, p.crit_warmup, p.crit_rounds, p.crit_seconds)
            window.close()
        finally:
            conn.on_step = None
        load.finish()
        _parse_count(load.read_all(timeout=IO_TIMEOUT), window.sent)
        load_seconds = time.perf_counter() - began
        _sync_finish_echo(crit)
    return _critical_result(idle, loaded, window, load_seconds, priorities=False)


MINI_SCENARIOS: dict[str, SyncScenario] = {
    **SYNC_SCENARIOS,
    "streams": _mini_streams,
    "critical": _mini_critical,
}


class _MiniServerConnection:
    """One server QuicConnection and the count/echo/hold logic, on events."""

    ECHO, HOLD = -1, -2  # in ``counts``, for streams that are not counted

    def __init__(self, quic: QuicConnection) -> None:
        self.quic = quic
        self.counts: dict[int, int] = {}  # stream -> bytes so far, or ECHO / HOLD
        self.cpu_began: dict[int, float] = {}
        self.terminated = False

    def process_events(self) -> None:
        quic = self.quic
        while (event := quic.next_event()) is not None:
            if isinstance(event, qe.StreamDataReceived):
                sid, data, end = event.stream_id, event.data, event.end_stream
                if sid not in self.counts:
                    if not data and not end:
                        continue
                    if data[:1] == b"B":
                        self.counts[sid], self.cpu_began[sid] = 0, time.process_time()
                    elif data[:1] == HOLD_BYTE:
                        self.counts[sid] = self.HOLD
                        quic.send_stream_data(sid, HOLD_ANSWER)
                    else:
                        self.counts[sid] = self.ECHO
                count = self.counts[sid]
                if count == self.ECHO:
                    quic.send_stream_data(sid, data, end_stream=end)
                elif count >= 0:
                    self.counts[sid] = count = count + len(data)
                    if end:
                        reply = _count_reply(count, self.cpu_began.pop(sid))
                        quic.send_stream_data(sid, reply, end_stream=True)
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
                _raise_stream_limit(quic)
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
            handler = _sansquic_handler_for(_asyncio_group)
            server = await sansquic_asyncio.serve(handler, HOST, 0, config=sansquic_config())
            _announce(server.address[1])
            await server.serve_forever()

        asyncio.run(serve_asyncio())
    elif stack == "trio":
        import sansquic_trio
        import trio

        async def serve_trio() -> None:
            async with trio.open_nursery() as nursery:
                args = (_sansquic_handler_for(_trio_group), HOST, 0, sansquic_config())
                server = await nursery.start(sansquic_trio.serve, *args)
                _announce(server.address[1])

        trio.run(serve_trio)
    elif stack.startswith("anyio-"):
        import anyio
        import sansquic_anyio

        async def serve_anyio() -> None:
            async with anyio.create_task_group() as group:
                args = (_sansquic_handler_for(_anyio_group), HOST, 0, sansquic_config())
                server = await group.start(sansquic_anyio.serve, *args)
                _announce(server.address[1])

        anyio.run(serve_anyio, backend=stack.removeprefix("anyio-"))
    elif stack == "curio":
        curio, sansquic_curio = (importlib.import_module(m) for m in STACKS["curio"])

        async def serve_curio() -> None:
            handler = _sansquic_handler_for(_curio_group)
            server = await sansquic_curio.serve(handler, HOST, 0, config=sansquic_config())
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


#: run(scenario, params, server port, server pid) -> the cell's result.
Runner = Callable[[str, Params, int, int], dict[str, float]]


def _client_runner(stack: str) -> Runner:
    """``run(...)`` for ``stack``: a fresh event loop (and connection) each."""
    if stack == "threads":

        def run_threads(scenario: str, p: Params, port: int, pid: int) -> dict[str, float]:
            def opener() -> sansquic_threads.Connection:
                return sansquic_threads.connect(
                    HOST, port, config=sansquic_config(), server_name="localhost"
                )

            def idle(conns: Sequence[Any], seconds: float) -> None:
                time.sleep(seconds)  # the I/O threads keep the connections going

            def close_all(conns: Sequence[Any]) -> None:
                _thread_gather([conn.close for conn in conns], CLOSE_TIMEOUT + IO_TIMEOUT)

            return SYNC_SCENARIOS[scenario](SyncCell(opener, p, pid, idle, close_all))

        return run_threads
    if stack == MINIMAL:
        return lambda scenario, p, port, pid: MINI_SCENARIOS[scenario](
            SyncCell(lambda: _MiniConnection(port), p, pid, _mini_idle, _mini_close_all)
        )
    if stack in ("asyncio", API):
        kit = AsyncKit(_asyncio_group, asyncio.sleep)

        def run_asyncio(scenario: str, p: Params, port: int, pid: int) -> dict[str, float]:
            opener = (
                _raw_opener(port)
                if stack == API
                else _sansquic_opener(sansquic_asyncio.connect, port)
            )
            return asyncio.run(ASYNC_SCENARIOS[scenario](AsyncCell(opener, kit, p, pid)))

        return run_asyncio
    if stack == "trio":
        import sansquic_trio
        import trio

        trio_kit = AsyncKit(_trio_group, trio.sleep)
        return lambda scenario, p, port, pid: trio.run(
            ASYNC_SCENARIOS[scenario],
            AsyncCell(_sansquic_opener(sansquic_trio.connect, port), trio_kit, p, pid),
        )
    if stack.startswith("anyio-"):
        import anyio
        import sansquic_anyio

        anyio_kit, backend = AsyncKit(_anyio_group, anyio.sleep), stack[6:]
        return lambda scenario, p, port, pid: anyio.run(
            ASYNC_SCENARIOS[scenario],
            AsyncCell(_sansquic_opener(sansquic_anyio.connect, port), anyio_kit, p, pid),
            backend=backend,
        )
    if stack == "curio":
        curio, sansquic_curio = (importlib.import_module(m) for m in STACKS["curio"])
        curio_kit = AsyncKit(_curio_group, curio.sleep)
        return lambda scenario, p, port, pid: dict(
            curio.run(
                ASYNC_SCENARIOS[scenario],
                AsyncCell(_sansquic_opener(sansquic_curio.connect, port), curio_kit, p, pid),
            )
        )
    raise SystemExit(f"unknown stack {stack!r}")


def _client_child(stack: str, port: int) -> None:
    run = _client_runner(stack)
    _emit({"ready": True})
    while line := sys.stdin.readline():  # one request a line, until the parent closes stdin
        request = json.loads(line)
        try:
            result = run(
                request["scenario"],
                Params(**request["params"]),
                request.get("port", port),
                request.get("server_pid", 0),
            )
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
    if stack in VARIANTS:
        import sansquic_runtime

        sansquic_runtime.UdpSocket.gro = False  # before any socket is opened
        stack = _base(stack)
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
        self.fresh_tail = ""  # stderr of the last memory cell's own server

    def args(self, role: str, port: int = 0) -> list[str]:
        lifetime = str(self._lifetime)
        pmtu = ["--pmtu"] if SANSQUIC_PACKET_DEFAULTS else []
        args = ["--child", role, "--stack", self.stack, "--port", str(port)]
        return [*args, "--lifetime", lifetime, *pmtu]

    def spawn_server(self) -> None:
        self.server = _Child(f"{self.stack} server", self.args("server"))

    def spawn_client(self) -> None:
        assert self.server is not None
        port = int(self.server.read(START_TIMEOUT)["port"])
        self.client = _Child(f"{self.stack} client", self.args("client", port))

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
        """One cell; the memory scenarios on a server process started for them alone."""
        assert self.client is not None
        assert self.server is not None
        if self.server.proc.poll() is not None:
            raise RuntimeError(f"{self.server.name} exited (code {self.server.proc.poll()})")
        request: dict[str, Any] = {"scenario": scenario, "params": asdict(params)}
        fresh = None
        if scenario in MEMORY_SCENARIOS:
            fresh = _Child(f"{self.stack} {scenario} server", self.args("server"))
        try:
            if fresh is not None:
                request.update(
                    port=int(fresh.read(START_TIMEOUT)["port"]), server_pid=fresh.proc.pid
                )
            self.client.send(request)
            reply = self.client.read(params.seconds(scenario) + CELL_MARGIN)
        finally:
            if fresh is not None:
                self.fresh_tail = fresh.stderr_tail()
                fresh.stop()
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
    for module in STACKS[_base(stack)]:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            return f"{module}: {exc}"
    return None


def _fmt(metric: str, value: float | None) -> str:
    return "-" if value is None else METRICS[metric].fmt.format(value)


def _median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def _ratio(value: float | None, reference: float | None) -> float | None:
    return None if value is None or not reference else value / reference


Summary = dict[str, dict[str, dict[str, Any]]]


def _summarize(stacks: list[str], values: dict[str, dict[str, list[float | None]]]) -> Summary:
    """Per stack: median, per_api, per_minimal and spread (min, max) of every metric."""
    medians = {s: {m: _median(values[s][m]) for m in METRICS} for s in stacks}
    summary: Summary = {}
    for stack in stacks:
        summary[stack] = {"median": {}, "per_api": {}, "per_minimal": {}, "spread": {}}
        for metric in METRICS:
            value = medians[stack][metric]
            present = [v for v in values[stack][metric] if v is not None]
            summary[stack]["median"][metric] = value
            for key, ref in (("per_api", API), ("per_minimal", MINIMAL)):
                reference = medians[ref][metric] if ref in medians else None
                summary[stack][key][metric] = _ratio(value, reference)
            summary[stack]["spread"][metric] = [min(present), max(present)] if present else None
    return summary


def _print_tables(
    stacks: list[str],
    values: dict[str, dict[str, list[float | None]]],
    summary: Summary,
    drops: dict[str, int],
) -> None:
    """Per group of metrics: the medians with both ratios, then the spread."""
    name_w, col_w = 17, 23
    print("\nmedians over rounds; /api = ratio to raw aioquic's asyncio API, /min = ratio to the")
    print("minimal raw aioquic driver (rates: above 1 is faster; latency, CPU, memory: above 1 is")
    print("more); then the spread: min-max over rounds (failed cells left out)")
    for group, title in GROUP_TITLES.items():
        metrics = [m for m, spec in METRICS.items() if spec.group == group]
        print(f"\n== {title}")
        print(f"{'':{name_w}}" + "".join(f"{m:>{col_w}}" for m in metrics))
        print(f"{'stack':{name_w}}" + f"{'median   /api   /min':>{col_w}}" * len(metrics))
        for stack in stacks:
            cells = []
            for metric in metrics:
                ratios = [summary[stack][key][metric] for key in ("per_api", "per_minimal")]
                text = " ".join("   -  " if r is None else f"{r:6.2f}" for r in ratios)
                cells.append(f"{_fmt(metric, summary[stack]['median'][metric]):>9} {text}")
            note = "  (no priorities)" if group == "priority" and stack in RAW_STACKS else ""
            print(f"{stack:{name_w}}" + "".join(f"{cell:>{col_w}}" for cell in cells) + note)
        print(f"{'spread':{name_w}}" + "".join(f"{m:>{col_w}}" for m in metrics))
        for stack in stacks:
            cells = []
            for metric in metrics:
                spread = summary[stack]["spread"][metric]
                missing = sum(v is None for v in values[stack][metric])
                cell = "-" if spread is None else "-".join(_fmt(metric, v) for v in spread)
                cells.append(cell + (f" ({missing} failed)" if missing else ""))
            print(f"{stack:{name_w}}" + "".join(f"{cell:>{col_w}}" for cell in cells))
    print("\nUDP datagrams dropped for a full receive buffer (all cells, machine-wide):")
    print("  " + ", ".join(f"{stack} {drops[stack]}" for stack in stacks))


def _targets(stacks: list[str], summary: Summary) -> dict[str, dict[str, Any]]:
    """Issue 11's memory targets, checked for each sansquic stack; printed and returned."""
    print(
        f"\ntargets: per idle connection <= {TARGET_CONN_RATIO}x raw aioquic's asyncio API "
        f"server, per idle stream <= {TARGET_STREAM_BYTES} B (server RSS)"
    )
    checks: dict[str, dict[str, Any]] = {}
    for stack in stacks:
        if stack in RAW_STACKS:
            continue
        conn_ratio = summary[stack]["per_api"]["per idle conn KiB"]
        per_stream = summary[stack]["median"]["per idle stream B"]
        checks[stack] = {
            "conn_ratio_to_api": conn_ratio,
            "conn_ok": None if conn_ratio is None else conn_ratio <= TARGET_CONN_RATIO,
            "stream_bytes": per_stream,
            "stream_ok": None if per_stream is None else per_stream <= TARGET_STREAM_BYTES,
            "goals": {goal.name: _speedup(goal, summary[stack]) for goal in GOALS},
        }

        def verdict(ok: bool | None) -> str:
            return "not measured" if ok is None else "ok" if ok else "MISSED"

        conn_text = "-" if conn_ratio is None else f"{conn_ratio:.2f}x"
        stream_text = "-" if per_stream is None else f"{per_stream:.0f} B"
        print(
            f"  {stack:16} per conn {conn_text:>7} ({verdict(checks[stack]['conn_ok'])}), "
            f"per stream {stream_text:>8} ({verdict(checks[stack]['stream_ok'])})"
        )
    print("speed goals (speed-up over the reference; a latency's is the reference's over ours):")
    print(f"  {'':16}" + "".join(f"{g.name + ' >=' + format(g.at_least, 'g'):>22}" for g in GOALS))
    for stack, check in checks.items():
        cells = []
        for goal in GOALS:
            value = check["goals"][goal.name]
            cells.append(
                "-" if value is None else f"{value:.2f} ({verdict(value >= goal.at_least)})"
            )
        print(f"  {stack:16}" + "".join(f"{cell:>22}" for cell in cells))
    return checks


def _speedup(goal: Goal, stack: dict[str, dict[str, float | None]]) -> float | None:
    """The stack's speed-up for ``goal`` (None when not measured)."""
    key = {"api": "per_api", "min": "per_minimal", None: "median"}[goal.reference]
    value = stack[key][goal.metric]
    if value is None or value <= 0:
        return None
    return 1 / value if not METRICS[goal.metric].higher_is_better else value


def _run_cell(
    pair: _Pair, scenario: str, params: Params, label: str, cells: list[dict[str, Any]]
) -> dict[str, float] | None:
    """Run one cell, print its line, restart the pair after a failure; its result."""
    before = _rcvbuf_errors()
    began = time.monotonic()
    cell: dict[str, Any] = {"round": label, "scenario": scenario, "stack": pair.stack}
    try:
        result: dict[str, float] | None = pair.run(scenario, params)
        cell["result"] = result
    except (RuntimeError, TimeoutError, OSError, KeyError, ValueError) as exc:
        result, cell["error"] = None, str(exc)
    after = _rcvbuf_errors()
    dropped = None if after is None or before is None else after - before
    cell.update(drops=dropped, wall=time.monotonic() - began)
    cells.append(cell)
    shown = [
        f"{metric} {_fmt(metric, None if result is None else result[spec.key])}"
        for metric, spec in METRICS.items()
        if spec.scenario == scenario
    ]
    print(
        f"  {label:>7} {scenario:9} {pair.stack:16} {', '.join(shown):58}"
        f" drops {dropped}  ({cell['wall']:.1f} s)"
    )
    if result is None:
        print(f"    FAILED: {cell['error']}\n{pair.tails()}")
        if scenario in MEMORY_SCENARIOS:
            print(f"--- {scenario} server stderr (tail) ---\n{pair.fresh_tail}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run: 1 short round")
    parser.add_argument("--rounds", type=int, help="rounds (default 5, or 1 with --quick)")
    parser.add_argument(
        "--budget",
        type=float,
        help="seconds from the start: begin no round that would end past this "
        "(default 540, 120 with --quick)",
    )
    parser.add_argument(
        "--stacks",
        help=f"comma-separated subset of: {', '.join(STACKS)}; or a sansquic stack with "
        f"{NO_GRO} (e.g. asyncio{NO_GRO}): UDP receive offload off, only when named",
    )
    all_scenarios = (*MEMORY_SCENARIOS, *SCENARIOS)
    parser.add_argument(
        "--scenarios", help=f"comma-separated subset of: {', '.join(all_scenarios)}"
    )
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON here")
    parser.add_argument(
        "--png", metavar="PATH", help="plot the results here (default: next to --json)"
    )
    parser.add_argument(
        "--pmtu",
        action="store_true",
        help="sansquic keeps its default packet sizing (path MTU discovery) instead of "
        "1200-byte packets like the raw stacks: the ratios then include packet size",
    )
    parser.add_argument("--child", choices=["server", "client"], help=argparse.SUPPRESS)
    parser.add_argument("--stack", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--lifetime", type=float, default=900.0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    global SANSQUIC_PACKET_DEFAULTS
    SANSQUIC_PACKET_DEFAULTS = args.pmtu
    if args.child:
        _child_main(args.child, args.stack, args.port, args.lifetime)
        return

    began = time.monotonic()
    params = QUICK if args.quick else FULL
    rounds = args.rounds if args.rounds is not None else (1 if args.quick else 5)
    budget = args.budget if args.budget is not None else (120.0 if args.quick else 540.0)
    wanted = list(STACKS) if args.stacks is None else args.stacks.split(",")
    unknown = [s for s in wanted if s not in STACKS and s not in VARIANTS]
    if unknown:
        parser.error(f"unknown stacks {unknown}; known: {[*STACKS, *VARIANTS]}")
    chosen = list(all_scenarios) if args.scenarios is None else args.scenarios.split(",")
    if unknown := [s for s in chosen if s not in all_scenarios]:
        parser.error(f"unknown scenarios {unknown}; known: {list(all_scenarios)}")
    png = args.png or (os.path.splitext(args.json)[0] + ".png" if args.json else None)
    skipped = {s: why for s in wanted if (why := _available(s)) is not None}
    stacks = [s for s in [*STACKS, *VARIANTS] if s in wanted and s not in skipped]
    load_before = os.getloadavg()
    print(
        f"Python {platform.python_version()}, aioquic {aioquic.__version__}, "
        f"sansquic {sansquic.__version__}, os.cpu_count() = {os.cpu_count()}, "
        f"load average {' '.join(f'{x:.2f}' for x in load_before)}"
    )
    print(f"{rounds} round(s) of {params}; budget {budget:.0f} s")
    packets = "its default sizing (--pmtu)" if args.pmtu else "1200 bytes, as the raw stacks"
    print(f"sansquic packets: {packets}")
    for stack, why in skipped.items():
        print(f"  skipped {stack}: {why}")

    pairs = {s: _Pair(s, lifetime=budget + 600.0) for s in stacks}
    values: dict[str, dict[str, list[float | None]]] = {s: {m: [] for m in METRICS} for s in stacks}
    drops = dict.fromkeys(stacks, 0)
    cells: list[dict[str, Any]] = []
    dead: set[str] = set()
    done_rounds = 0

    def measure(stack: str, scenario: str, label: str) -> None:
        pair = pairs[stack]
        result = _run_cell(pair, scenario, params, label, cells)
        drops[stack] += cells[-1]["drops"] or 0
        for metric, spec in METRICS.items():
            if spec.scenario == scenario:
                values[stack][metric].append(None if result is None else result[spec.key])
        if result is None:
            pair.failures += 1
            pair.stop()
            if pair.failures >= MAX_FAILURES:
                print(f"    {stack}: {pair.failures} failures, dropped from the run")
                dead.add(stack)
            else:
                pair.start()

    try:
        for pair in pairs.values():  # start them all at once, then wait for each
            pair.spawn_server()
        for pair in pairs.values():
            pair.spawn_client()
        for pair in pairs.values():
            pair.wait_ready()
        print(f"started {2 * len(pairs)} processes in {time.monotonic() - began:.1f} s\n")
        for scenario in (s for s in MEMORY_SCENARIOS if s in chosen):
            for stack in stacks:
                if stack not in dead:
                    measure(stack, scenario, "once")
        round_time = 0.0
        for index in range(rounds):
            round_began = time.monotonic()
            if round_began + round_time - began > budget:
                print(f"budget: stopping after {index} round(s)")
                break
            order = stacks[index % len(stacks) :] + stacks[: index % len(stacks)]
            for scenario in (s for s in SCENARIOS if s in chosen):
                for stack in order:
                    if stack not in dead:
                        measure(stack, scenario, f"round {index + 1}")
            done_rounds = index + 1
            round_time = time.monotonic() - round_began
    finally:
        for pair in pairs.values():
            pair.stop()

    load_after = os.getloadavg()
    summary = _summarize(stacks, values)
    _print_tables(stacks, values, summary, drops)
    targets = _targets(stacks, summary)
    wall = time.monotonic() - began
    print(
        f"\n{done_rounds} round(s) in {wall:.0f} s; load average before "
        f"{' '.join(f'{x:.2f}' for x in load_before)}, after "
        f"{' '.join(f'{x:.2f}' for x in load_after)}"
    )
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
            "sansquic_packets": "its defaults (--pmtu)" if args.pmtu else "1200 bytes",
            "scenarios": chosen,
            "wall_seconds": wall,
            "raw_stacks": list(RAW_STACKS),
            "target_conn_ratio": TARGET_CONN_RATIO,
            "target_stream_bytes": TARGET_STREAM_BYTES,
            "goals": [asdict(goal) for goal in GOALS],
            "cpu": "time.process_time() deltas (user+sys, all threads): the client's from the "
            "first send to the reply, the server's from the first chunk read to the FIN",
            "memory": "server VmRSS growth on a fresh server process, once per run",
            "ratios": "value / reference value, per_api: raw aioquic asyncio API, "
            "per_minimal: the minimal raw aioquic driver",
        },
        "metrics": {
            name: {**asdict(spec), "title": GROUP_TITLES[spec.group]}
            for name, spec in METRICS.items()
        },
        "skipped": skipped,
        "stacks": {
            s: {**summary[s], "rounds": values[s], "rcvbuf_drops": drops[s]} for s in stacks
        },
        "targets": targets,
        "cells": cells,
    }
    if args.json:
        with open(args.json, "w") as out:
            json.dump(report, out, indent=2)
        print(f"wrote {args.json}")
    if png:
        try:
            import plot
        except ImportError as exc:
            raise SystemExit(f"no plot ({exc}): pip install -e .[bench]") from exc
        plot.plot_report(report, png)
        print(f"wrote {png}")


if __name__ == "__main__":
    main()
