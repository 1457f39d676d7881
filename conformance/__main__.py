"""Run the conformance matrix: ``python -m conformance [--fast] [--case NAME ...]``."""

from __future__ import annotations

import argparse
import itertools
import time
import traceback

from rich.console import Console
from rich.table import Table

from . import CASES, FAST_CASES, HARNESSES


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--fast", action="store_true", help="only the quick cases")
    parser.add_argument("--case", action="append", help="run only these cases")
    parser.add_argument("--verbose", action="store_true", help="print failure tracebacks")
    args = parser.parse_args()
    names = args.case or (list(FAST_CASES) if args.fast else list(CASES))
    pairs = list(itertools.product(HARNESSES.values(), repeat=2))
    console = Console()
    table = Table(title="sansquic conformance (client x server, loopback UDP)")
    table.add_column("case")
    for client, server in pairs:
        table.add_column(f"{client.name} -> {server.name}", justify="center")
    failures = 0
    for name in names:
        cells = []
        for client, server in pairs:
            start = time.monotonic()
            try:
                CASES[name](client, server)
                cells.append(f"[green]pass[/green] {time.monotonic() - start:4.1f}s")
            except Exception as exc:
                failures += 1
                cells.append(f"[red]FAIL[/red] {type(exc).__name__}")
                if args.verbose:
                    console.print(f"{name} {client.name}->{server.name}: {traceback.format_exc()}")
        table.add_row(name, *cells)
    console.print(table)
    total = len(names) * len(pairs)
    console.print(f"{total - failures} passed, {failures} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
