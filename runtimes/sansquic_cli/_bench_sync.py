"""GENERATED from ``_bench_async.py`` by ``scripts/unasync.py``: edit that file instead.

The blocking twin of ``sansquic bench``, for the threads runtime.
"""

from __future__ import annotations

import contextlib
import time

from rich.console import Console
from rich.progress import Progress, TaskID
from sansquic_runtime._sync import Connection, Stream

import sansquic

from ._bench import Result, latency, progress, table
from ._frameworks import SyncRuntime

__all__ = ["run"]

HOST, SERVER_NAME = "127.0.0.1", "localhost"
#: Caps, so a fast machine still ends in time: handshakes, round trips, bytes.
MAX_HANDSHAKES, MAX_ROUND_TRIPS, MAX_BYTES = 500, 20_000, 1 << 30
CHUNK = 64 * 1024
#: A round trip's request and answer: a kind byte, then the rest.
REQUEST = b"E" + bytes(999)
TIMEOUT = 30.0


def run(rt: SyncRuntime, name: str, seconds: float) -> int:
    """Every measurement on ``rt`` for ``seconds`` each; the exit status."""
    console = Console()
    # An in-memory dev pair; the client, in this process too, verifies it.
    config = sansquic.Config(dev_mode=True, trust_dev_certificate=True)
    results: list[Result] = []
    with rt.serve(_Answer(rt), HOST, config, None) as server:
        bench = _Bench(rt, server.address[1], config, seconds)
        with progress(console) as bar:
            results.append(bench.handshakes(bar))
            results.append(bench.round_trips(bar))
            results.append(bench.throughput(bar))
    console.print(table(name, results))
    return 0


class _Bench:
    """The client side: each measurement, advancing the progress bar as it goes."""

    def __init__(self, rt: SyncRuntime, port: int, config: sansquic.Config, seconds: float):
        self.rt, self.port, self.config, self.seconds = rt, port, config, seconds

    def _task(self, bar: Progress, name: str) -> tuple[TaskID, float]:
        return bar.add_task(name, total=self.seconds, status=""), time.monotonic()

    def _tick(self, bar: Progress, task: TaskID, start: float, status: str) -> bool:
        """Show progress; whether the measurement has time left."""
        elapsed = time.monotonic() - start
        bar.update(task, completed=min(elapsed, self.seconds), status=status)
        return elapsed < self.seconds

    def _connect(self) -> contextlib.AbstractContextManager[Connection]:
        return self.rt.connect(HOST, self.port, config=self.config, server_name=SERVER_NAME)

    def handshakes(self, bar: Progress) -> Result:
        """Connect and close, again and again; the time to each connection being ready."""
        task, start = self._task(bar, "handshake")
        samples: list[float] = []
        while len(samples) < MAX_HANDSHAKES:
            begin = time.monotonic()
            with self._connect():
                samples.append(time.monotonic() - begin)
            if not self._tick(bar, task, start, f"{len(samples)} done"):
                break
        return latency("handshake", samples, time.monotonic() - start, rate=False)

    def round_trips(self, bar: Progress) -> Result:
        """One connection; on a new stream each time, 1 KB out and its echo back."""
        task, start = self._task(bar, "round trip")
        samples: list[float] = []
        with self._connect() as conn:
            while len(samples) < MAX_ROUND_TRIPS:
                begin = time.monotonic()
                stream = conn.open_stream()
                stream.send(REQUEST)
                stream.finish()
                if stream.read_all(timeout=TIMEOUT) != REQUEST:
                    raise RuntimeError("a round trip's echo came back altered")
                samples.append(time.monotonic() - begin)
                if len(samples) % 20 == 0 and not self._tick(
                    bar, task, start, f"{len(samples)} done"
                ):
                    break
        return latency("round trip", samples, time.monotonic() - start, rate=True)

    def throughput(self, bar: Progress) -> Result:
        """One stream to the sink, until the time is up; MB/s until its count is back."""
        task, start = self._task(bar, "throughput")
        chunk, sent = bytes(CHUNK), 1
        with self._connect() as conn:
            stream = conn.open_stream()
            stream.send(b"S")
            while sent < MAX_BYTES:
                stream.send(chunk, timeout=TIMEOUT)
                sent += len(chunk)
                if sent % (16 * CHUNK) == 1 and not self._tick(
                    bar, task, start, f"{sent / 1e6:,.0f} MB"
                ):
                    break
            stream.finish()
            counted = int(stream.read_all(timeout=TIMEOUT))
        elapsed = time.monotonic() - start
        if counted != sent:
            raise RuntimeError(f"the sink counted {counted} bytes of the {sent} sent")
        return Result(
            "throughput", f"{sent / elapsed / 1e6:,.1f} MB/s", f"{sent / 1e6:,.0f} MB sent"
        )


class _Answer:
    """The server's handler: each stream echoed (``E``) or counted (``S``)."""

    def __init__(self, rt: SyncRuntime) -> None:
        self._rt = rt

    def __call__(self, conn: Connection) -> None:
        with self._rt.task_group() as group:
            for stream in conn:  # until the connection closes
                group.spawn(_answer, stream)


def _answer(stream: Stream) -> None:
    with contextlib.suppress(sansquic.StreamResetError, sansquic.ConnectionClosed):
        kind = stream.receive_exactly(1)
        if kind == b"E":
            stream.send(kind + stream.read_all())
        else:
            count = 1
            while chunk := stream.receive(CHUNK):
                count += len(chunk)
            stream.send(b"%d" % count)
        stream.finish()
