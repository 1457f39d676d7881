"""What ``sansquic demo`` shares on every runtime: setup, the tally, the summary table.

Nothing here waits or runs a task: the demo itself is ``_demo_async.py`` (and its
generated blocking twin ``_demo_sync.py``), run on a framework of
``_frameworks.py``.
"""

from __future__ import annotations

import secrets
import statistics
import threading
import time

from rich.console import Console
from rich.table import Table

import sansquic
from sansquic import tokens

__all__ = ["FLOWS", "PRIORITIES", "Tally", "finish", "setup", "summary"]

PRIORITIES = {
    "critical": sansquic.Priority.CRITICAL,
    "normal": sansquic.Priority.NORMAL,
    "background": sansquic.Priority.BACKGROUND,
}

#: The demo's streams: priority name and message size, echoed over and over.
FLOWS = (("critical", 1_000), ("normal", 20_000), ("background", 400_000))


def setup(qlog: str | None = None) -> tuple[sansquic.Config, str, sansquic.Authenticator]:
    """The in-memory dev certificate, a fresh signing key, a token and its checker;
    with ``qlog``, every connection's qlog trace goes to that directory."""
    # An in-memory dev certificate; the clients, in this process, verify it for real.
    config = sansquic.Config(dev_mode=True, trust_dev_certificate=True)
    if qlog is not None:
        config = config.replace(qlog=sansquic.QlogDirectory(qlog))
    key = {"demo": secrets.token_bytes(32)}
    token = tokens.TokenSigner(key, key_id="demo").sign(
        "demo-agent", scopes=("echo",), ttl=600, now=time.time()
    )
    verifier = tokens.TokenVerifier(key)
    return config, token, tokens.token_authenticator(verifier, token_time=lambda n: time.time())


class Tally:
    """What the demo measured, per priority (counted from tasks or threads alike)."""

    def __init__(self) -> None:
        self.bytes = dict.fromkeys(PRIORITIES, 0)
        self.latencies: dict[str, list[float]] = {name: [] for name in PRIORITIES}
        self.datagrams_sent = self.datagrams_echoed = 0
        self.auth: list[str] = []
        self._lock = threading.Lock()  # never held across a wait: harmless on one loop

    def echoed(self, priority_name: str, size: int, latency: float) -> None:
        """One round trip of ``size`` bytes each way came back intact."""
        with self._lock:
            self.bytes[priority_name] += 2 * size
            self.latencies[priority_name].append(latency)

    def datagram(self, *, echoed: bool) -> None:
        """One datagram sent, and whether its echo came back in time."""
        with self._lock:
            self.datagrams_sent += 1
            self.datagrams_echoed += echoed

    def accepted(self, name: str, identity: sansquic.Identity | None) -> None:
        """The server accepted ``name``'s token as ``identity``."""
        with self._lock:
            self.auth.append(f"{name}: accepted as {identity.subject if identity else '?'}")


def summary(tally: Tally, elapsed: float, stats: sansquic.EndpointStats) -> Table:
    """The live table: per priority throughput and latency; the server's counters."""
    table = Table(title=f"sansquic demo: {elapsed:4.1f} s on loopback UDP")
    table.add_column("priority")
    table.add_column("echo throughput", justify="right")
    table.add_column("round trips", justify="right")
    table.add_column("latency p50", justify="right")
    table.add_column("latency p99", justify="right")
    for name in PRIORITIES:
        lat = sorted(tally.latencies[name])
        p50 = f"{statistics.median(lat) * 1000:7.1f} ms" if lat else "-"
        p99 = f"{lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000:7.1f} ms" if lat else "-"
        rate = tally.bytes[name] / max(elapsed, 1e-9) / 1e6
        table.add_row(name, f"{rate:6.2f} MB/s", str(len(lat)), p50, p99)
    table.caption = (
        f"datagrams echoed {tally.datagrams_echoed}/{tally.datagrams_sent}; "
        f"server accepted {stats.accepted}, active {stats.active}, "
        f"auth failures {stats.auth_failures}; " + "; ".join(tally.auth)
    )
    return table


def finish(console: Console, tally: Tally, failed: list[BaseException]) -> int:
    """Report the failures, then OK (exit 0) only if every flow completed round trips."""
    for error in failed:
        console.print(f"[red]client failed:[/red] {error!r}")
    ok = not failed and all(tally.latencies.values())
    console.print("[green]OK[/green]" if ok else "[red]FAILED[/red]")
    return 0 if ok else 1
