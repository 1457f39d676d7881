"""Run the conformance matrix: ``python -m sansquic_conformance [--fast] [--case NAME ...]``."""

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
    harnesses = list(HARNESSES.values())
    console = Console()
    passed: dict[tuple[str, str], int] = {}
    failed: list[tuple[str, str, str, str]] = []
    began = time.monotonic()
    for client, server in itertools.product(harnesses, repeat=2):
        key = (client.name, server.name)
        passed[key] = 0
        for name in names:
            try:
                CASES[name](client, server)
                passed[key] += 1
            except Exception as exc:
                failed.append((client.name, server.name, name, f"{type(exc).__name__}: {exc}"))
                if args.verbose:
                    console.print(f"{name} {client.name}->{server.name}: {traceback.format_exc()}")
    table = Table(
        title=f"sansquic conformance: cases passed of {len(names)}, client (row) x server (column)"
    )
    table.add_column("client \\ server")
    for server in harnesses:
        table.add_column(server.name, justify="center")
    for client in harnesses:
        cells = []
        for server in harnesses:
            count = passed[(client.name, server.name)]
            colour = "green" if count == len(names) else "red"
            cells.append(f"[{colour}]{count}/{len(names)}[/{colour}]")
        table.add_row(client.name, *cells)
    console.print(table)
    for client_name, server_name, name, error in failed:
        console.print(f"[red]FAIL[/red] {name}: {client_name} -> {server_name}: {error[:200]}")
    total = len(names) * len(harnesses) ** 2
    console.print(
        f"{total - len(failed)} passed, {len(failed)} failed "
        f"({len(harnesses) ** 2} pairs, {time.monotonic() - began:.0f} s)"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
