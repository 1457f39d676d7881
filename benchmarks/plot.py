"""Plot a ``benchmarks/runtimes.py --json`` report: one subplot per figure, a bar per stack.

Bars are the medians over rounds, the whiskers the spread (min-max over
rounds); sansquic stacks are blue, the two raw aioquic stacks grey and
hatched. Each subplot says whether higher or lower is better; the memory
subplots draw issue 11's targets. ``runtimes.py --png`` calls
:func:`plot_report`; to replot a saved report::

    python benchmarks/plot.py bench-runtimes.json [bench-runtimes.png]
"""

from __future__ import annotations

import json
import math
import sys
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display

import matplotlib.pyplot as plt  # after the backend is chosen
from matplotlib.axes import Axes

SANSQUIC_COLOR, RAW_COLOR = "#3b75af", "#9a9a9a"
COLUMNS = 4


def _stack_label(stack: str, raw: bool, group: str) -> str:
    return f"{stack}\n(no priorities)" if raw and group == "priority" else stack


def _short(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"


def _subplot(ax: Axes, metric: str, spec: dict[str, Any], report: dict[str, Any]) -> None:
    stacks = list(report["stacks"])
    raw_stacks = set(report["meta"]["raw_stacks"])
    medians, lows, highs = [], [], []
    for stack in stacks:
        median = report["stacks"][stack]["median"][metric]
        spread = report["stacks"][stack]["spread"][metric]
        value = math.nan if median is None else median
        medians.append(value)
        lows.append(0.0 if spread is None or median is None else median - spread[0])
        highs.append(0.0 if spread is None or median is None else spread[1] - median)
    positions = range(len(stacks))
    bars = ax.bar(
        positions,
        medians,
        yerr=[lows, highs],
        capsize=3,
        color=[RAW_COLOR if s in raw_stacks else SANSQUIC_COLOR for s in stacks],
        edgecolor="black",
        linewidth=0.5,
    )
    for bar, stack in zip(bars, stacks, strict=True):
        if stack in raw_stacks:
            bar.set_hatch("//")
    for position, value in zip(positions, medians, strict=True):
        text = "n/a" if math.isnan(value) else _short(value)
        ax.annotate(
            text,
            (position, 0 if math.isnan(value) else value),
            ha="center",
            va="bottom",
            fontsize=7,
            xytext=(0, 2),
            textcoords="offset points",
        )
    group = spec["group"]
    ax.set_xticks(
        list(positions),
        [_stack_label(s, s in raw_stacks, group) for s in stacks],
        rotation=45,
        ha="right",
        fontsize=7,
    )
    better = "higher is better" if spec["higher_is_better"] else "lower is better"
    ax.set_title(f"{metric}\n({better})", fontsize=9)
    ax.tick_params(axis="y", labelsize=7)
    ax.grid(axis="y", alpha=0.3)
    api = report["stacks"].get("aioquic-asyncio", {}).get("median", {}).get(metric)
    meta = report["meta"]
    if metric == "per idle conn KiB" and api is not None:
        ratio = meta["target_conn_ratio"]
        _target(ax, ratio * api, f"red: target, {ratio}x aioquic-asyncio")
    if metric == "per idle stream B":
        _target(ax, meta["target_stream_bytes"], f"red: target, {meta['target_stream_bytes']} B")


def _target(ax: Axes, value: float, text: str) -> None:
    """A dashed line at issue 11's target, named in the title (a label would hide bars)."""
    ax.axhline(value, color="red", linestyle="--", linewidth=0.8)
    ax.set_title(f"{ax.get_title()}; {text}", fontsize=9)


def _notes(report: dict[str, Any]) -> str:
    meta = report["meta"]
    params = meta["params"]
    lines = [
        "blue: sansquic runtimes; grey, hatched: raw aioquic",
        "bars: median over rounds; whiskers: min-max",
        f"sansquic packets: {meta.get('sansquic_packets', '?')}",
        f"bulk: {params['bulk_bytes'] / 1e6:g} MB, one stream",
        f"100 streams: {params['streams']} x {params['stream_bytes'] / 1e6:g} MB",
        "1KB msgs: one-way, pipelined; round trips: echoed",
        "crit: 1KB round trip, CRITICAL stream; raw stacks",
        "  have no priorities (plain streams)",
        f"memory: server RSS, once; K = {params['idle_connections']} idle conns,",
        f"  S = {params['idle_streams']} idle streams; red: issue 11's targets",
        f"load average after: {' '.join(f'{x:.2f}' for x in meta['load_after'])}",
    ]
    return "\n".join(lines)


def plot_report(report: dict[str, Any], path: str) -> None:
    """Write the figure for ``report`` (as runtimes.py builds it) to ``path`` (PNG)."""
    metrics: dict[str, dict[str, Any]] = report["metrics"]
    rows = -(-len(metrics) // COLUMNS)
    fig, axes = plt.subplots(rows, COLUMNS, figsize=(4.2 * COLUMNS, 3.6 * rows), squeeze=False)
    flat = [ax for row in axes for ax in row]
    for ax, (metric, spec) in zip(flat, metrics.items(), strict=False):
        _subplot(ax, metric, spec, report)
    for ax in flat[len(metrics) :]:
        ax.axis("off")
    meta = report["meta"]
    if len(flat) > len(metrics):
        flat[len(metrics)].text(
            0.0,
            1.0,
            _notes(report),
            va="top",
            ha="left",
            fontsize=8,
            family="monospace",
            transform=flat[len(metrics)].transAxes,
        )
    load = " ".join(f"{x:.2f}" for x in meta["load_before"])
    fig.suptitle(
        f"sansquic runtimes vs raw aioquic (grey, hatched) on loopback: medians of "
        f"{meta['rounds']} round(s){' (quick)' if meta['quick'] else ''}, whiskers min-max\n"
        f"Python {meta['python']}, aioquic {meta['aioquic']}, sansquic {meta['sansquic']}, "
        f"{meta['cpu_count']} CPUs, load average before {load}",
        fontsize=11,
    )
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    if not 2 <= len(sys.argv) <= 3:
        raise SystemExit("usage: python benchmarks/plot.py REPORT.json [OUT.png]")
    source = sys.argv[1]
    out = sys.argv[2] if len(sys.argv) == 3 else source.removesuffix(".json") + ".png"
    with open(source) as report:
        plot_report(json.load(report), out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
