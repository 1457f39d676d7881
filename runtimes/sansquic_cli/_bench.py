"""What ``sansquic bench`` shares on every runtime: the measurements' results and the table.

The measuring itself is ``_bench_async.py`` (and its generated blocking twin
``_bench_sync.py``); each measurement runs for ``--seconds`` or until its cap,
whichever comes first, and reports one :class:`Result`. For the full comparison
with raw aioquic, see ``benchmarks/runtimes.py``.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

__all__ = ["MEASUREMENTS", "Result", "latency", "percentile", "progress", "table"]

#: Each measurement's name, and what it does (the table's caption).
MEASUREMENTS = {
    "handshake": "a new connection each time, closed once ready",
    "round trip": "1 KB out and its 1 KB echo back, on a new stream each time",
    "throughput": "64 KiB sends on one stream to a sink",
}


@dataclass(frozen=True)
class Result:
    """One measurement: its headline figure, and a detail column."""

    name: str
    figure: str
    detail: str


def percentile(samples: list[float], fraction: float) -> float:
    """The ``fraction`` percentile of ``samples`` (nearest rank), in milliseconds."""
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))] * 1000


def latency(name: str, samples: list[float], elapsed: float, *, rate: bool) -> Result:
    """Per-operation times (seconds) as the median (or the rate, with ``rate``) and
    the percentiles."""
    if not samples:
        return Result(name, "-", "none completed")
    p50 = statistics.median(samples) * 1000
    figure = f"{len(samples) / elapsed:,.0f} /s" if rate else f"{p50:.1f} ms"
    return Result(
        name, figure, f"p50 {p50:.2f} ms, p99 {percentile(samples, 0.99):.2f} ms, n={len(samples)}"
    )


def progress(console: Console) -> Progress:
    """The progress bar: one line per measurement, filling as its time runs."""
    return Progress(
        TextColumn("{task.description:<12}"),
        BarColumn(),
        TextColumn("{task.fields[status]}"),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )


def table(runtime: str, results: list[Result]) -> Table:
    """The summary: one row per measurement, and what each does as the caption."""
    summary = Table(title=f"sansquic bench: {runtime}, client and server on loopback")
    summary.add_column("measurement")
    summary.add_column("result", justify="right")
    summary.add_column("detail")
    for result in results:
        summary.add_row(result.name, result.figure, result.detail)
    summary.caption = "; ".join(f"{name}: {what}" for name, what in MEASUREMENTS.items())
    return summary
