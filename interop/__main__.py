"""``python -m interop``: the interop case x peer x direction matrix."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .peers import AioquicExamples, Ngtcp2, Peer, fetch_aioquic_examples
from .runner import DIRECTIONS, Cell, Outcome, run_cell
from .spec import CASES

_MARK = {
    Outcome.PASS: "pass",
    Outcome.FAIL: "FAIL",
    Outcome.UNSUPPORTED_PEER: "unsup-peer",
    Outcome.UNSUPPORTED_SANSQUIC: "unsup-sansquic",
}


def _peers(names: list[str], examples: Path | None, extra_path: str | None) -> list[Peer]:
    peers: list[Peer] = []
    for name in names:
        if name == "aioquic":
            peers.append(AioquicExamples(examples or fetch_aioquic_examples(), extra_path))
        else:
            peers.append(Ngtcp2())
    return peers


def print_matrix(cells: list[Cell]) -> None:
    """A case x (peer, direction) table, then every cell that did not pass, with why."""
    columns = list(dict.fromkeys((c.peer, c.direction) for c in cells))
    by_key = {(c.case, c.peer, c.direction): c for c in cells}
    heads = [f"{peer}:{d.replace('peer', peer)}" for peer, d in columns]
    width = max(len(h) for h in [*heads, "unsup-sansquic"]) + 2
    print("case".ljust(14) + "".join(h.ljust(width) for h in heads))
    for case in dict.fromkeys(c.case for c in cells):
        row = case.ljust(14)
        for peer, direction in columns:
            cell = by_key.get((case, peer, direction))
            row += (_MARK[cell.outcome] if cell else "-").ljust(width)
        print(row)
    print()
    for c in cells:
        if c.outcome is not Outcome.PASS:
            print(f"{c.case} {c.peer} {c.direction}: {c.outcome.value}: {c.reason}")


def main(argv: list[str] | None = None) -> int:
    """Run the chosen cases and print the matrix; exit 1 if a supported cell failed."""
    parser = argparse.ArgumentParser(prog="python -m interop", description=__doc__)
    parser.add_argument("--peer", action="append", choices=["aioquic", "ngtcp2"])
    parser.add_argument("--case", action="append", choices=list(CASES))
    parser.add_argument("--direction", action="append", choices=list(DIRECTIONS))
    parser.add_argument("--examples", type=Path, help="aioquic's sdist examples folder")
    parser.add_argument(
        "--extra-path", help="added to the example programs' PYTHONPATH ($INTEROP_EXTRA_PATH)"
    )
    parser.add_argument("--keep", type=Path, help="copy failed cells' logs here")
    args = parser.parse_args(argv)
    cells: list[Cell] = []
    for peer in _peers(args.peer or ["aioquic", "ngtcp2"], args.examples, args.extra_path):
        for name in args.case or list(CASES):
            for direction in args.direction or DIRECTIONS:
                cell = run_cell(CASES[name], peer, direction, args.keep)
                print(
                    f"  {cell.case} {cell.peer} {cell.direction}: {cell.outcome.value}"
                    f" ({cell.seconds:.1f} s) {cell.reason}",
                    flush=True,
                )
                cells.append(cell)
    print()
    print_matrix(cells)
    return exit_status(cells)


def exit_status(cells: list[Cell]) -> int:
    """1 if any cell both sides support failed, else 0."""
    return 1 if any(c.outcome is Outcome.FAIL for c in cells) else 0


if __name__ == "__main__":
    sys.exit(main())
