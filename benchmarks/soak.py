r"""Soak: many connections, each with concurrent echo streams, for minutes, over loopback UDP.

Three processes per runtime, so load and server never share an interpreter:

- the server (``sansquic_asyncio.serve`` or ``sansquic_threads.serve`` on
  127.0.0.1, port 0, ``Config(dev_mode=True, trust_dev_certificate=True)``
  with the admission limits that
  count per address or per second off, as every client comes from the one
  loopback address) echoes every stream it accepts, chunk by chunk. On
  asyncio each stream gets a task in the connection's TaskGroup; on threads
  the connection's handler thread echoes its streams one by one (each client
  stream is sent whole and finished before its reply is read, so this cannot
  deadlock; it serializes one connection's streams). It samples its own RSS
  every second;
- the load generator, always on asyncio (the cheapest way to hold 1,000
  connections), opens ``--connections`` connections, one ``connect()`` each,
  50 handshakes at a time, then runs ``--streams`` concurrent loops per
  connection for ``--seconds``: open a stream, send ``--message-size`` bytes,
  finish, read the whole reply, compare, repeat. It counts round trips,
  failures by exception type and mismatches;
- this process starts both, steps them through the phases, gives each phase
  a time limit and kills both children on any error.

At each phase -- start (bound, before load), every connection up (and its
handler running), end of load, every client closed, and ``--drain-seconds``
later -- the server reports its RSS, ``stats()``, CPU time, threads, open
files, the connections its Dispatcher still tracks, its parked waiter keys
and, after a full ``gc.collect()``, how many ``sansquic.Connection`` objects
are alive. The runtimes' insides are read with ``getattr`` (they are private
and changing) and shown as ``-`` when not found. After the drain, ``active``
and ``tracked`` must be 0; if they are not, the server is looked at again
every 3 s for up to 30 s more (closes still draining, or lost ones ending at
their idle timeout), and the run exits 1 if they never get there or if a
phase failed. One live Connection object and one waiter key are the accept
loop holding the last connection it accepted while it waits for the next.
The peak RSS comes from the 1 s samples and the kernel's VmHWM. The UDP
receive-buffer drops are machine-wide (other processes count too). Only
loopback addresses are used.

The reference run for the note (1,000 connections x 10 streams for 180 s on
each runtime; about 8 minutes in all), from the repository root::

    python benchmarks/soak.py --runtime all --connections 1000 --streams 10 --seconds 180 \
        --pause 10 --json soak.json

``--pause`` gives each loop a think time (jittered) between round trips, so
the offered load stays under what two shared cores can echo; without it,
10,000 closed loops saturate the machine and round trips time out (that
measures overload, not the runtime).

A quick look: ``python benchmarks/soak.py --runtime all --connections 20
--streams 3 --seconds 10``. The machine has 2 cores: server and load
generator share them, so a saturated run measures both.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import inspect
import json
import os
import platform
import random
import resource
import statistics
import sys
import tempfile
import threading
import time
import traceback
from collections import Counter
from collections.abc import Iterator
from typing import IO, Any

import aioquic
import sansquic_asyncio
import sansquic_threads
from aioquic.quic.connection import QuicConnection
from rich.console import Console
from rich.table import Table

import sansquic

HOST = "127.0.0.1"  # loopback only, by design: there is no option to change it
RUNTIMES = ("asyncio", "threads")
CHUNK = 65536  # the server's receive() size
CONNECT_CONCURRENCY = 50  # handshakes in flight at once
IO_TIMEOUT = 10.0  # seconds one handshake, one round trip or one server receive/send may take
SAMPLE_INTERVAL = 1.0  # seconds between RSS samples
RTT_RESERVOIR = 100_000  # round-trip times kept (uniform sample) for the percentiles
MAX_CONSECUTIVE_FAILURES = 20  # a loop that keeps failing gives up
MAX_ROUNDS = 10**9  # round trips per loop, a bound the clock always reaches first
MAX_SERVER_CHUNKS = 1 << 20  # chunks one server stream echoes at most
SETTLE_SECONDS = 30.0  # seconds to look again after the drain mark, if not at zero yet
SETTLE_INTERVAL = 3.0
ACCEPT_WAIT = 15.0  # seconds the "connected" mark waits for the server to run every handler
PHASES = ("start", "connected", "end_of_load", "closed", "drained")

JSON = dict[str, Any]


# -- shared helpers ------------------------------------------------------------------------


def _proc_status() -> dict[str, int]:
    """VmRSS, VmHWM (kB) and Threads from /proc/self/status; {} off Linux."""
    found: dict[str, int] = {}
    with contextlib.suppress(OSError, ValueError, IndexError), open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM", "Threads"):
                found[key] = int(value.split()[0])
    return found


def _rss_kb() -> int | None:
    return _proc_status().get("VmRSS")


def _hwm_kb() -> int:
    status = _proc_status()
    if "VmHWM" in status:
        return status["VmHWM"]
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)  # kB on Linux


def _udp_counters() -> dict[str, int]:
    """Linux's machine-wide UDP counters (drops for a full receive buffer among them)."""
    try:
        with open("/proc/net/snmp") as snmp:
            names, counts = (line.split() for line in snmp if line.startswith("Udp:"))
    except (OSError, ValueError):
        return {}
    return {k: int(v) for k, v in zip(names[1:], counts[1:], strict=True)}


def _open_fds() -> int | None:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return None


def _emit(record: JSON) -> None:
    """One JSON line on stdout: how a child talks to the coordinating process."""
    sys.stdout.write(json.dumps(record) + "\n")
    sys.stdout.flush()


def _watchdog(seconds: float) -> None:
    """End this child process after ``seconds`` whatever it is doing."""

    def expire() -> None:
        sys.stderr.write(f"soak child {os.getpid()}: lifetime of {seconds:.0f} s over, exiting\n")
        sys.stderr.flush()
        os._exit(3)

    timer = threading.Timer(seconds, expire)
    timer.daemon = True
    timer.start()


def _raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _server_config() -> sansquic.Config:
    """dev_mode, with the admission limits that would refuse 1,000 clients of one address off."""
    limits = sansquic.RateLimits(
        max_connections=None,
        max_connections_per_address=None,
        new_connections_per_second=None,
        max_handshakes=None,
        prehandshake_datagrams_per_second=None,  # every Initial comes from 127.0.0.1
    )
    return sansquic.Config(dev_mode=True, trust_dev_certificate=True, rate_limits=limits)


def _error_name(exc: BaseException) -> str:
    return type(exc).__name__


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


# -- the server process ----------------------------------------------------------------------


class Sampler:
    """A thread that reads this process's RSS every second (bounded by ``max_samples``)."""

    def __init__(self, max_samples: int) -> None:
        self.started = time.monotonic()
        self.samples: list[tuple[float, int]] = []
        self._max = max_samples
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="soak-rss", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while len(self.samples) < self._max and not self._stop.is_set():
            rss = _rss_kb()
            if rss is not None:
                self.samples.append((round(time.monotonic() - self.started, 2), rss))
            self._stop.wait(SAMPLE_INTERVAL)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5.0)

    def peak_kb(self) -> int | None:
        return max((kb for _, kb in self.samples), default=None)


class ServerCounters:
    """What the echo handler did; thread-safe (the threads runtime updates it from many)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counts: Counter[str] = Counter()
        self._reported: set[str] = set()

    def add(self, key: str, n: int = 1) -> None:
        with self._lock:
            self.counts[key] += n

    def error(self, exc: BaseException) -> None:
        name = _error_name(exc)
        with self._lock:
            self.counts[f"stream error {name}"] += 1
            first = name not in self._reported
            self._reported.add(name)
        if first and not isinstance(exc, sansquic.SansQuicError | TimeoutError):
            traceback.print_exception(exc, file=sys.stderr)  # an unexpected kind: show one

    def started(self) -> int:
        with self._lock:
            return self.counts["handlers started"]

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self.counts)


def _endpoint_stats(stats: sansquic.EndpointStats) -> JSON:
    return {
        "active": stats.active,
        "handshakes": stats.handshakes,
        "accepted": stats.accepted,
        "refused": dict(stats.refused),
        "retries": stats.retries,
        "dropped": dict(stats.dropped),
        "stateless_resets": stats.stateless_resets,
        "tracked_addresses": stats.tracked_addresses,
        "internal_errors": getattr(stats, "internal_errors", None),  # newer cores only
    }


# The runtimes' insides are private and changing: everything below reads them with
# getattr, for both layouts seen so far (Server._driver / Server._loop holding the
# dispatcher, waiters on the driver or on its backend), and reports None when it cannot.


def _holder(server: object) -> Any:
    """What owns the server's Endpoint and Dispatcher (``_driver`` or ``_loop``)."""
    for name in ("_driver", "_loop"):
        holder = getattr(server, name, None)
        if holder is not None and hasattr(holder, "dispatcher"):
            return holder
    return None


def _guard(server: object) -> Any:
    """The lock that guards the threads server's tables (a null context when none)."""
    holder = _holder(server)
    lock = getattr(holder, "lock", None)
    guard = getattr(getattr(holder, "backend", None), "guard", None)
    if lock is None and callable(guard):
        lock = guard()
    return lock if lock is not None else contextlib.nullcontext()


def _tracked(server: object) -> int | None:
    """Connections the runtime's Dispatcher keeps state for (None if unreachable)."""
    dispatcher = getattr(_holder(server), "dispatcher", None)
    tracked = getattr(dispatcher, "tracked", None)
    if isinstance(tracked, int):
        return tracked
    links = getattr(dispatcher, "_links", None)
    return len(links) if links is not None else None


def _private(server: object) -> JSON:
    """What the runtime still holds: dispatcher links, ready-queue, parked waiter keys."""
    holder = _holder(server)
    dispatcher = getattr(holder, "dispatcher", None)
    waiters = None
    for owner in (holder, getattr(holder, "backend", None)):
        for name in ("_waiters", "_conds"):
            found = getattr(owner, name, None)
            if found is not None and waiters is None:
                waiters = len(found)
    lingering = getattr(server, "_lingering", None)
    return {
        "dispatcher_tracked": _tracked(server),
        "accepted_queue": len(getattr(dispatcher, "_accepted", ())),
        "waiter_keys": waiters,
        "lingering": None if lingering is None else len(lingering),
    }


def _live_objects() -> dict[str, int]:
    """After a full collection: objects alive, and the connection objects among them."""
    gc.collect()
    objects = gc.get_objects()
    return {
        "gc_objects": len(objects),
        "core_connections": sum(isinstance(o, sansquic.Connection) for o in objects),
        "aioquic_connections": sum(isinstance(o, QuicConnection) for o in objects),
        "dispatcher_links": sum(type(o).__name__ == "_Link" for o in objects),
    }


def _mark(label: str, sampler: Sampler, private: JSON, stats: JSON, counters: JSON) -> JSON:
    return {
        "event": "mark",
        "label": label,
        "t": round(time.monotonic() - sampler.started, 2),
        "rss_kb": _rss_kb(),
        "hwm_kb": _hwm_kb(),
        "threads": threading.active_count(),
        "cpu_s": round(time.process_time(), 2),
        "fds": _open_fds(),
        "stats": stats,
        "private": private,
        "handler": counters,
        **_live_objects(),
    }


def _final(sampler: Sampler, counters: ServerCounters, close_error: str | None) -> JSON:
    sampler.stop()
    return {
        "event": "final",
        "samples": sampler.samples,
        "peak_kb": sampler.peak_kb(),
        "hwm_kb": _hwm_kb(),
        "handler": counters.snapshot(),
        "close_error": close_error,
    }


async def _asyncio_server(sampler: Sampler) -> None:
    counters = ServerCounters()

    async def echo(stream: sansquic_asyncio.Stream) -> None:
        try:
            for _ in range(MAX_SERVER_CHUNKS):
                data = await stream.receive(CHUNK, timeout=IO_TIMEOUT)
                if not data:
                    await stream.finish()
                    counters.add("streams echoed")
                    return
                await stream.send(data, timeout=IO_TIMEOUT)
            await stream.reset(1)
            counters.add("streams too long")
        except Exception as exc:  # per stream: StreamResetError, ConnectionClosed, ...
            counters.error(exc)

    async def handler(conn: sansquic_asyncio.Connection) -> None:
        counters.add("handlers started")
        try:
            async with asyncio.TaskGroup() as group:
                async for stream in conn:  # ends when the connection closes
                    group.create_task(echo(stream))
        finally:
            counters.add("handlers ended")

    server = await sansquic_asyncio.serve(handler, HOST, 0, config=_server_config())

    def probe(label: str) -> JSON:
        private = {**_private(server), "asyncio_tasks": len(asyncio.all_tasks())}
        stats = _endpoint_stats(server.stats())
        return _mark(label, sampler, private, stats, counters.snapshot())

    close_error: str | None = None
    try:
        _emit({"event": "ready", "port": server.address[1], "mark": probe("start")})
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        for _ in range(1000):  # a handful of commands; EOF (coordinator gone) ends it too
            line = (await reader.readline()).decode().split()
            if not line or line[0] == "stop":
                break
            if line[0] == "mark":
                began = time.monotonic()
                for _ in range(int(ACCEPT_WAIT / 0.05)):
                    if counters.started() >= (int(line[2]) if len(line) > 2 else 0):
                        break
                    await asyncio.sleep(0.05)
                waited = round(time.monotonic() - began, 2)
                _emit({**probe(line[1]), "waited_s": waited})
    finally:
        try:
            await asyncio.wait_for(server.close(), IO_TIMEOUT)
        except Exception as exc:
            close_error = repr(exc)
    _emit(_final(sampler, counters, close_error))


def _threads_server(sampler: Sampler) -> None:
    counters = ServerCounters()

    def echo(stream: sansquic_threads.Stream) -> None:
        try:
            for _ in range(MAX_SERVER_CHUNKS):
                data = stream.receive(CHUNK, timeout=IO_TIMEOUT)
                if not data:
                    stream.finish()
                    counters.add("streams echoed")
                    return
                stream.send(data, timeout=IO_TIMEOUT)
            stream.reset(1)
            counters.add("streams too long")
        except Exception as exc:
            counters.error(exc)

    def handler(conn: sansquic_threads.Connection) -> None:
        counters.add("handlers started")
        try:
            for stream in conn:  # one by one; ends when the connection closes
                echo(stream)
        finally:
            counters.add("handlers ended")

    server = sansquic_threads.serve(handler, HOST, 0, config=_server_config())

    def probe(label: str) -> JSON:
        with _guard(server):  # not around stats(): it takes the lock itself
            private = _private(server)
        stats = _endpoint_stats(server.stats())
        return _mark(label, sampler, private, stats, counters.snapshot())

    close_error: str | None = None
    try:
        _emit({"event": "ready", "port": server.address[1], "mark": probe("start")})
        for _ in range(1000):  # a handful of commands; EOF (coordinator gone) ends it too
            line = sys.stdin.readline().split()
            if not line or line[0] == "stop":
                break
            if line[0] == "mark":
                began = time.monotonic()
                for _ in range(int(ACCEPT_WAIT / 0.05)):
                    if counters.started() >= (int(line[2]) if len(line) > 2 else 0):
                        break
                    time.sleep(0.05)
                waited = round(time.monotonic() - began, 2)
                _emit({**probe(line[1]), "waited_s": waited})
    finally:
        try:
            server.close(timeout=IO_TIMEOUT)
        except Exception as exc:
            close_error = repr(exc)
    _emit(_final(sampler, counters, close_error))


def server_main(args: argparse.Namespace) -> None:
    _watchdog(args.lifetime)
    _raise_fd_limit()
    sampler = Sampler(max_samples=int(args.lifetime / SAMPLE_INTERVAL) + 10)
    sampler.start()
    if args.runtime == "asyncio":
        asyncio.run(_asyncio_server(sampler))
    else:
        _threads_server(sampler)


# -- the load generator process ----------------------------------------------------------------


class Reservoir:
    """A uniform sample of at most ``size`` values (Algorithm R)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.seen = 0
        self.values: list[float] = []

    def add(self, value: float) -> None:
        self.seen += 1
        if len(self.values) < self.size:
            self.values.append(value)
        else:
            slot = random.randrange(self.seen)
            if slot < self.size:
                self.values[slot] = value


class Mismatch(Exception):
    """The reply is not the message."""


def _message(size: int, conn_index: int, loop_index: int, seq: int, filler: bytes) -> bytes:
    header = b"%d:%d:%d:" % (conn_index, loop_index, seq)
    return (header + filler)[:size]


async def _read_reply(stream: sansquic_asyncio.Stream, expected: int) -> bytes:
    parts: list[bytes] = []
    total = 0
    while data := await stream.receive(CHUNK):  # each pass takes >= 1 byte: bounded below
        parts.append(data)
        total += len(data)
        if total > expected:
            raise Mismatch(f"reply longer than {expected} bytes")
    return b"".join(parts)


async def _abandon(stream: sansquic_asyncio.Stream | None) -> None:
    if stream is not None:
        with contextlib.suppress(Exception):
            await stream.reset(1)
        with contextlib.suppress(Exception):
            await stream.stop(1)


async def _read_command(reader: asyncio.StreamReader, expected: str, timeout: float) -> None:
    line = (await asyncio.wait_for(reader.readline(), timeout)).decode().strip()
    if line != expected:
        raise RuntimeError(f"expected {expected!r} from the coordinator, got {line!r}")


async def _client(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    config = sansquic.Config(verify_peer=False)  # the server is another process
    n, m, size = args.connections, args.streams, args.message_size
    failures: Counter[str] = Counter()
    connect_failures: Counter[str] = Counter()
    conns: list[sansquic_asyncio.Connection | None] = [None] * n
    handshake_ms: list[float] = []
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)

    async def open_one(index: int) -> None:
        async with gate:
            began = time.perf_counter()
            try:
                conns[index] = await sansquic_asyncio.connect(
                    HOST, args.port, config=config, server_name="localhost", timeout=IO_TIMEOUT
                )
            except Exception as exc:
                connect_failures[_error_name(exc)] += 1
                return
            handshake_ms.append((time.perf_counter() - began) * 1e3)

    began = time.perf_counter()
    openers = [asyncio.create_task(open_one(i)) for i in range(n)]
    _, late = await asyncio.wait(openers, timeout=_connect_budget(n))
    for task in late:
        task.cancel()
    await asyncio.gather(*openers, return_exceptions=True)
    if late:
        connect_failures["over the connect budget"] += len(late)
    connect_seconds = time.perf_counter() - began
    live = [c for c in conns if c is not None]
    _emit(
        {
            "event": "connected",
            "connected": len(live),
            "connect_failures": dict(connect_failures),
            "connect_seconds": round(connect_seconds, 2),
            "handshake_ms_p50": _percentile(handshake_ms, 50),
            "handshake_ms_p99": _percentile(handshake_ms, 99),
        }
    )
    await _read_command(reader, "go", 120.0)

    filler = bytes(range(256)) * (size // 256 + 1)
    rtts = Reservoir(RTT_RESERVOIR)
    per_connection = [0] * n
    totals: Counter[str] = Counter()
    lost: set[int] = set()
    load_began = loop.time()
    cpu_began = time.process_time()
    stop_at = load_began + args.seconds

    async def pause(factor: float) -> None:
        # Think time, jittered so the loops spread out instead of marching in step.
        if args.pause:
            await asyncio.sleep(min(factor * args.pause, max(0.0, stop_at - loop.time())))

    async def echo_loop(ci: int, li: int, conn: sansquic_asyncio.Connection) -> None:
        consecutive = 0
        await pause(random.random())
        for seq in range(MAX_ROUNDS):
            if loop.time() >= stop_at:
                return
            payload = _message(size, ci, li, seq, filler)
            stream: sansquic_asyncio.Stream | None = None
            start = time.perf_counter()
            try:
                async with asyncio.timeout(IO_TIMEOUT):
                    stream = await conn.open_stream()
                    await stream.send(payload)
                    await stream.finish()
                    reply = await _read_reply(stream, len(payload))
                if reply != payload:
                    raise Mismatch(f"{len(reply)} bytes back, not the {len(payload)} sent")
            except Mismatch:
                totals["mismatches"] += 1
                await _abandon(stream)
                continue
            except sansquic.ConnectionClosed as exc:
                failures[_error_name(exc)] += 1
                lost.add(ci)
                return  # the connection is over: so is this loop
            except Exception as exc:
                failures[_error_name(exc)] += 1
                await _abandon(stream)
                consecutive += 1
                if consecutive >= MAX_CONSECUTIVE_FAILURES:
                    totals["loops given up"] += 1
                    return
                await asyncio.sleep(0.05 * consecutive)
                continue
            consecutive = 0
            rtts.add((time.perf_counter() - start) * 1e3)
            per_connection[ci] += 1
            totals["round trips"] += 1
            await pause(random.uniform(0.5, 1.5))

    loops = [
        asyncio.create_task(echo_loop(ci, li, conn))
        for ci, conn in enumerate(conns)
        if conn is not None
        for li in range(m)
    ]
    _, stuck = await asyncio.wait(loops, timeout=args.seconds + IO_TIMEOUT + 5)
    for task in stuck:
        task.cancel()
    await asyncio.gather(*loops, return_exceptions=True)
    load_seconds = loop.time() - load_began
    load_cpu = time.process_time() - cpu_began
    counts = [per_connection[i] for i, c in enumerate(conns) if c is not None]
    _emit({"event": "load_done", "load_seconds": round(load_seconds, 2)})
    await _read_command(reader, "close", 120.0)

    began = time.perf_counter()
    closers = [asyncio.create_task(_close(conn)) for conn in live]
    unclosed: set[asyncio.Task[None]] = set()
    if closers:
        _, unclosed = await asyncio.wait(closers, timeout=IO_TIMEOUT + 5)
    for task in unclosed:
        task.cancel()
    await asyncio.gather(*closers, return_exceptions=True)
    round_trips = totals["round trips"]
    _emit(
        {
            "event": "closed",
            "close_seconds": round(time.perf_counter() - began, 2),
            "unclosed": len(unclosed),
            "result": {
                "connected": len(live),
                "connect_failures": dict(connect_failures),
                "connect_seconds": round(connect_seconds, 2),
                "handshake_ms_p50": _percentile(handshake_ms, 50),
                "handshake_ms_p99": _percentile(handshake_ms, 99),
                "load_seconds": round(load_seconds, 2),
                "load_cpu_s": round(load_cpu, 2),
                "round_trips": round_trips,
                "round_trips_per_s": round(round_trips / load_seconds, 1) if load_seconds else 0,
                "rtt_ms_p50": _percentile(rtts.values, 50),
                "rtt_ms_p99": _percentile(rtts.values, 99),
                "rtt_ms_max_sampled": max(rtts.values, default=None),
                "failures": dict(failures),
                "mismatches": totals["mismatches"],
                "loops_given_up": totals["loops given up"],
                "loops_cancelled_at_deadline": len(stuck),
                "connections_lost": len(lost),
                "connections_without_round_trip": sum(1 for c in counts if c == 0),
                "per_connection_min": min(counts, default=0),
                "per_connection_median": statistics.median(counts) if counts else 0,
                "per_connection_max": max(counts, default=0),
                "client_rss_kb": _rss_kb(),
                "client_hwm_kb": _hwm_kb(),
            },
        }
    )


async def _close(conn: sansquic_asyncio.Connection) -> None:
    """Close and wait for the peer's confirmation, on either runtime API: ``close()``
    then ``await wait_closed()``, or one ``await close()``."""
    close: Any = conn.close
    closing = close()
    if inspect.isawaitable(closing):
        await closing
    wait_closed: Any = getattr(conn, "wait_closed", None)
    if wait_closed is not None:
        await wait_closed()


def client_main(args: argparse.Namespace) -> None:
    _watchdog(args.lifetime)
    _raise_fd_limit()
    asyncio.run(_client(args))


# -- the coordinating process -------------------------------------------------------------------


def _connect_budget(connections: int) -> float:
    """Seconds the load generator may take to open every connection."""
    return 30.0 + 0.1 * connections


class ChildFailed(Exception):
    pass


class Child:
    """One child process of this script, speaking JSON lines on stdout."""

    def __init__(self, name: str, proc: asyncio.subprocess.Process, stderr: IO[bytes]) -> None:
        self.name = name
        self.proc = proc
        self.stderr = stderr  # a temporary file

    @classmethod
    async def start(cls, name: str, argv: list[str]) -> Child:
        stderr = tempfile.TemporaryFile()  # noqa: SIM115  # outlives this call; see close()
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                os.path.abspath(__file__),
                *argv,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=stderr,
            )
        except BaseException:
            stderr.close()
            raise
        return cls(name, proc, stderr)

    async def expect(self, event: str, timeout: float, *, watch: Child | None = None) -> JSON:
        """The next JSON line, which must be ``event``; raises ChildFailed otherwise, or
        as soon as ``watch`` (the other child) exits."""
        watcher = asyncio.create_task(watch.proc.wait()) if watch is not None else None
        try:
            return await self._expect(event, timeout, watch, watcher)
        finally:
            if watcher is not None:
                watcher.cancel()

    async def _expect(
        self, event: str, timeout: float, watch: Child | None, watcher: asyncio.Task[int] | None
    ) -> JSON:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        for _ in range(1000):  # lines that are not ours are skipped, a bounded number
            reading = asyncio.create_task(self.proc.stdout.readline())
            waiting = {reading} if watcher is None else {reading, watcher}
            remaining = max(0.01, deadline - time.monotonic())
            done, _ = await asyncio.wait(waiting, timeout=remaining, return_when="FIRST_COMPLETED")
            if reading not in done:
                reading.cancel()
                if watch is not None and watcher in done:
                    raise ChildFailed(
                        f"{watch.name} exited (code {watch.proc.returncode}) "
                        f"while waiting for {event!r} from {self.name}"
                    )
                raise ChildFailed(f"{self.name}: no {event!r} within {timeout:.0f} s")
            raw = reading.result()
            if not raw:
                code = await self._exit_code()
                raise ChildFailed(f"{self.name} exited (code {code}) before {event!r}")
            text = raw.decode(errors="replace").strip()
            if not text.startswith("{"):
                continue
            record: JSON = json.loads(text)
            if record.get("event") != event:
                raise ChildFailed(f"{self.name}: expected {event!r}, got {record.get('event')!r}")
            return record
        raise ChildFailed(f"{self.name}: too many stray lines")

    async def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line.encode() + b"\n")
        await self.proc.stdin.drain()

    async def _exit_code(self) -> int | None:
        with contextlib.suppress(TimeoutError):
            return await asyncio.wait_for(self.proc.wait(), 2.0)
        return None

    async def finish(self, timeout: float) -> int | None:
        """Wait for the child to exit; kill it past ``timeout``."""
        try:
            return await asyncio.wait_for(self.proc.wait(), timeout)
        except TimeoutError:
            self.kill()
            return await self.proc.wait()

    def kill(self) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()

    def stderr_lines(self) -> list[str]:
        self.stderr.seek(0)
        text: str = self.stderr.read().decode(errors="replace")
        return text.splitlines()

    def close(self) -> None:
        self.stderr.close()


def _say(runtime: str, text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {runtime}: {text}", file=sys.stderr, flush=True)


def _mb(kb: int | None) -> str:
    return "-" if kb is None else f"{kb / 1024:.1f}"


async def run_one(runtime: str, args: argparse.Namespace) -> JSON:
    """One runtime's soak: server and load generator in their own processes."""
    budgets = {
        "ready": 30.0,
        "connected": _connect_budget(args.connections) + 15.0,
        "load_done": args.seconds + IO_TIMEOUT + 20.0,
        "closed": IO_TIMEOUT + 20.0,
        "mark": 30.0,
        "final": IO_TIMEOUT + 30.0,
    }
    marks = 4 + SETTLE_SECONDS / SETTLE_INTERVAL
    lifetime = sum(budgets.values()) + marks * budgets["mark"] + args.drain_seconds + 30.0
    result: JSON = {"runtime": runtime, "marks": {}, "error": None}
    children: list[Child] = []
    server: Child | None = None
    try:
        server = await Child.start(
            f"{runtime} server",
            ["--role", "server", "--runtime", runtime, "--lifetime", str(lifetime)],
        )
        children.append(server)
        ready = await server.expect("ready", budgets["ready"])
        port = int(ready["port"])
        result["marks"]["start"] = {**ready["mark"], "udp": _udp_counters()}
        _say(runtime, f"server on {HOST}:{port}, rss {_mb(ready['mark']['rss_kb'])} MB")

        client = await Child.start(
            "load generator",
            [
                "--role",
                "client",
                "--port",
                str(port),
                "--connections",
                str(args.connections),
                "--streams",
                str(args.streams),
                "--seconds",
                str(args.seconds),
                "--message-size",
                str(args.message_size),
                "--pause",
                str(args.pause),
                "--lifetime",
                str(lifetime),
            ],
        )
        children.append(client)
        connected = await client.expect("connected", budgets["connected"], watch=server)
        _say(
            runtime,
            f"{connected['connected']}/{args.connections} connections up in "
            f"{connected['connect_seconds']} s, failures {connected['connect_failures']}",
        )
        if not connected["connected"]:
            raise ChildFailed("no connection could be opened")

        async def mark(label: str, handlers: int = 0, watch: Child | None = None) -> JSON:
            assert server is not None
            await server.send(f"mark {label} {handlers}")
            record = await server.expect("mark", budgets["mark"], watch=watch)
            record["udp"] = _udp_counters()
            result["marks"][label] = record
            _say(
                runtime,
                f"{label}: server rss {_mb(record['rss_kb'])} MB, "
                f"active {record['stats']['active']}, "
                f"tracked {record['private'].get('dispatcher_tracked')}",
            )
            return record

        await mark("connected", handlers=int(connected["connected"]), watch=client)
        await client.send("go")
        _say(runtime, f"load: {args.streams} streams per connection for {args.seconds:g} s")
        await client.expect("load_done", budgets["load_done"], watch=server)
        await mark("end_of_load", watch=client)
        await client.send("close")
        closed = await client.expect("closed", budgets["closed"], watch=server)
        result["client"] = closed["result"]
        result["client_close"] = {
            "seconds": closed["close_seconds"],
            "unclosed": closed["unclosed"],
        }
        result["client_exit"] = await client.finish(10.0)
        await mark("closed")
        _say(runtime, f"waiting {args.drain_seconds:g} s for the server's tables to drain")
        await asyncio.sleep(args.drain_seconds)
        record = await mark("drained")
        # Not zero yet: closes still draining (3 PTO, long when the load inflated the RTT)
        # or lost (then the idle timeout ends them). Look again, so that a slow drain is
        # told apart from a leak.
        settle_began = time.monotonic()
        while not _is_zero(record) and time.monotonic() - settle_began < SETTLE_SECONDS:
            await asyncio.sleep(SETTLE_INTERVAL)
            record = await mark("settled")
            record["after_drain_s"] = round(time.monotonic() - settle_began, 1)
        await server.send("stop")
        final = await server.expect("final", budgets["final"])
        result["server"] = final
        result["server_exit"] = await server.finish(10.0)
    except (ChildFailed, OSError, ValueError, KeyError, TypeError) as exc:
        result["error"] = f"{_error_name(exc)}: {exc}"
        _say(runtime, f"FAILED: {result['error']}")
    finally:
        for child in children:
            child.kill()
        for child in children:
            await child.proc.wait()
            lines = child.stderr_lines()
            result[f"{'server' if child is server else 'client'}_stderr"] = lines[-40:]
            result[f"{'server' if child is server else 'client'}_stderr_lines"] = len(lines)
            child.close()
    result["drain_ok"] = _drain_ok(result)
    return result


def _is_zero(mark: JSON) -> bool:
    tracked = mark["private"].get("dispatcher_tracked")
    return bool(mark["stats"]["active"] == 0 and tracked in (0, None))


def _drain_ok(result: JSON) -> bool:
    """Zero active and tracked at the drain mark, or at the last look after it."""
    last = result["marks"].get("settled") or result["marks"].get("drained")
    return last is not None and not result["error"] and _is_zero(last)


# -- report -------------------------------------------------------------------------------------


def _load_cpu(result: JSON) -> str:
    marks, client = result["marks"], result.get("client") or {}
    if "connected" not in marks or "end_of_load" not in marks:
        return "-"
    server = marks["end_of_load"]["cpu_s"] - marks["connected"]["cpu_s"]
    return f"{server:.1f} / {client.get('load_cpu_s', '-')} (1 core = load s)"


def _udp_drops(marks: JSON) -> str:
    cells = []
    for first, last in (
        ("start", "connected"),
        ("connected", "end_of_load"),
        ("end_of_load", "drained"),
    ):
        before = (marks.get(first) or {}).get("udp") or {}
        after = (marks.get(last) or {}).get("udp") or {}
        key = "RcvbufErrors"
        cells.append(str(after[key] - before[key]) if key in before and key in after else "-")
    return " / ".join(cells)


def _rows(result: JSON, args: argparse.Namespace) -> Iterator[tuple[str, str]]:
    client: JSON = result.get("client") or {}
    marks: JSON = result["marks"]
    final: JSON = result.get("server") or {}

    def fmt(value: Any, spec: str = "") -> str:
        if value is None:
            return "-"
        return format(value, spec) if spec else str(value)

    yield "connections up", f"{fmt(client.get('connected'))} / {args.connections}"
    yield "connect failures", fmt(client.get("connect_failures") or {})
    yield "connect time s", fmt(client.get("connect_seconds"))
    yield (
        "handshake ms p50 / p99",
        f"{fmt(client.get('handshake_ms_p50'), '.1f')} / "
        f"{fmt(client.get('handshake_ms_p99'), '.1f')}",
    )
    yield "load s", fmt(client.get("load_seconds"))
    yield "CPU during load s: server / load generator", _load_cpu(result)
    yield "UDP rcvbuf drops (machine): connect / load / close+drain", _udp_drops(marks)
    yield "round trips", fmt(client.get("round_trips"))
    yield "round trips / s", fmt(client.get("round_trips_per_s"))
    yield (
        "round trip ms p50 / p99 / max",
        f"{fmt(client.get('rtt_ms_p50'), '.1f')} / {fmt(client.get('rtt_ms_p99'), '.1f')} / "
        f"{fmt(client.get('rtt_ms_max_sampled'), '.1f')}",
    )
    yield (
        "per connection min / median / max",
        f"{fmt(client.get('per_connection_min'))} / {fmt(client.get('per_connection_median'))}"
        f" / {fmt(client.get('per_connection_max'))}",
    )
    yield "failures (client)", fmt(client.get("failures") or {})
    yield "mismatches", fmt(client.get("mismatches"))
    yield (
        "connections lost / idle / loops given up",
        f"{fmt(client.get('connections_lost'))} / "
        f"{fmt(client.get('connections_without_round_trip'))} / "
        f"{fmt(client.get('loops_given_up'))}",
    )
    close = result.get("client_close") or {}
    yield "client close s / unclosed", f"{fmt(close.get('seconds'))} / {fmt(close.get('unclosed'))}"
    for label in (*PHASES, "settled"):
        mark: JSON | None = marks.get(label)
        if mark is None:
            if label != "settled":
                yield f"server @ {label}", "-"
            continue
        private = mark["private"]
        extra = ", ".join(
            f"{k} {v}"
            for k, v in private.items()
            if k not in ("dispatcher_tracked",) and v is not None
        )
        yield (
            f"server @ {label}",
            f"rss {_mb(mark['rss_kb'])} MB, active {mark['stats']['active']}, "
            f"tracked {private.get('dispatcher_tracked')}, core conns "
            f"{mark['core_connections']}, threads {mark['threads']}, fds {mark['fds']}, "
            f"{extra}"
            + (f", waited {mark['waited_s']} s for handlers" if mark.get("waited_s") else ""),
        )
    yield (
        "server rss peak MB (1 s / VmHWM)",
        f"{_mb(final.get('peak_kb'))} / {_mb(final.get('hwm_kb'))}",
    )
    handled = final.get("handler") or (marks.get("drained") or {}).get("handler") or {}
    yield "server handler", fmt(handled)
    drained = marks.get("drained") or {}
    yield (
        "server refused / dropped",
        (
            f"{fmt((drained.get('stats') or {}).get('refused'))} / "
            f"{fmt((drained.get('stats') or {}).get('dropped'))}"
        ),
    )
    yield "server close error", fmt(final.get("close_error"))
    yield (
        "stderr lines server / client",
        f"{result.get('server_stderr_lines', '-')} / {result.get('client_stderr_lines', '-')}",
    )
    yield "error", fmt(result["error"])
    yield "drained to zero", _drain_verdict(result, args)


def _drain_verdict(result: JSON, args: argparse.Namespace) -> str:
    drained, settled = result["marks"].get("drained"), result["marks"].get("settled")
    if drained is not None and _is_zero(drained) and not result["error"]:
        return f"yes, by {args.drain_seconds:g} s"
    if settled is not None and result["drain_ok"]:
        return f"yes, {settled['after_drain_s']} s after the {args.drain_seconds:g} s mark (late)"
    return "NO"


def report(result: JSON, args: argparse.Namespace) -> None:
    title = (
        f"soak: sansquic_{result['runtime']} server, {args.connections} connections x "
        f"{args.streams} streams x {args.seconds:g} s, {args.message_size}-byte messages"
    )
    table = Table(title=title, show_header=True, header_style="bold")
    table.add_column("measure", no_wrap=True)
    table.add_column("value", overflow="fold")
    for name, value in _rows(result, args):
        table.add_row(name, value)
    console = Console(width=max(100, min(160, Console().width)))
    console.print(table)
    for side in ("server", "client"):
        lines = result.get(f"{side}_stderr") or []
        if lines:
            console.print(f"[bold]{side} stderr (last {len(lines)} lines):[/bold]")
            for line in lines:
                console.print(line, markup=False, highlight=False)


async def coordinate(args: argparse.Namespace) -> int:
    runtimes = RUNTIMES if args.runtime == "all" else (args.runtime,)
    meta = {
        "python": platform.python_version(),
        "aioquic": aioquic.__version__,
        "sansquic": sansquic.__version__,
        "cpu_count": os.cpu_count(),
        "connections": args.connections,
        "streams": args.streams,
        "seconds": args.seconds,
        "pause": args.pause,
        "message_size": args.message_size,
        "drain_seconds": args.drain_seconds,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    print(
        f"Python {meta['python']}, aioquic {meta['aioquic']}, sansquic {meta['sansquic']}, "
        f"os.cpu_count() = {meta['cpu_count']}",
        flush=True,
    )
    results: dict[str, JSON] = {}
    for runtime in runtimes:
        began = time.monotonic()
        results[runtime] = await run_one(runtime, args)
        results[runtime]["wall_seconds"] = round(time.monotonic() - began, 1)
        report(results[runtime], args)
    if args.json:
        with open(args.json, "w") as out:
            json.dump({"meta": meta, "runs": results}, out, indent=1)
    return 0 if all(r["drain_ok"] for r in results.values()) else 1


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runtime", choices=(*RUNTIMES, "all"), default="all")
    parser.add_argument("--connections", type=int, default=100)
    parser.add_argument("--streams", type=int, default=10, help="concurrent loops per connection")
    parser.add_argument("--seconds", type=float, default=30.0, help="load duration")
    parser.add_argument("--message-size", type=int, default=1000)
    parser.add_argument("--drain-seconds", type=float, default=10.0)
    parser.add_argument(
        "--pause",
        type=float,
        default=0.0,
        help="think time per loop between round trips, seconds (0: as fast as it goes)",
    )
    parser.add_argument("--json", metavar="PATH", help="write every result here")
    # The children: this same script with a hidden role.
    parser.add_argument(
        "--role", choices=("coordinator", "server", "client"), help=argparse.SUPPRESS
    )
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--lifetime", type=float, default=600.0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.connections < 1 or args.streams < 1 or args.message_size < 1 or args.seconds <= 0:
        parser.error("--connections, --streams, --message-size and --seconds must be positive")
    if args.role == "server":
        server_main(args)
    elif args.role == "client":
        client_main(args)
    else:
        sys.exit(asyncio.run(coordinate(args)))


if __name__ == "__main__":
    main()
