"""Fail when a published package's pyright type completeness is below the bar.

``python scripts/typecompleteness.py`` runs ``pyright --verifytypes PKG
--ignoreexternal --outputjson`` for every package in ``PACKAGES`` (against the
packages importable by this interpreter, so install the project first), prints
each score and exits 1 if any is under ``--minimum`` (98% by default; ``nox -s
typecompleteness`` runs it). ``-v`` also lists the symbols pyright flags.
``sansquic_conformance`` (a program, ``python -m sansquic_conformance``, with
no ``py.typed``) and ``sansquic_cli`` (the ``sansquic`` command) are not
libraries to type against, so they are left out.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
from typing import Any

#: Every package a user imports: the core, the runtimes and the layer they share.
PACKAGES = (
    "sansquic",
    "sansquic_runtime",
    "sansquic_asyncio",
    "sansquic_threads",
    "sansquic_trio",
    "sansquic_anyio",
    "sansquic_curio",
)


def verify(pyright: list[str], package: str) -> dict[str, Any]:
    """pyright's ``typeCompleteness`` report for ``package``."""
    command = [*pyright, "--outputjson", "--verifytypes", package, "--ignoreexternal"]
    # --verifytypes finds packages through the first ``python`` on PATH (it ignores
    # --pythonpath): put this interpreter's first, or another install gets checked.
    env = {
        **os.environ,
        "PATH": os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")]),
    }
    # pyright exits 1 whenever the score is under 100%: the JSON says how far under.
    done = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
    try:
        output = json.loads(done.stdout)
        report: dict[str, Any] = output["typeCompleteness"]
    except (ValueError, KeyError):
        sys.exit(f"pyright gave no report for {package}: {done.stderr or done.stdout}")
    # Such as "No py.typed file found" or a package not installed: the score is then 0.
    for diagnostic in output.get("generalDiagnostics", []):
        print(f"{package}: {diagnostic['message']}", file=sys.stderr)
    return report


def flagged(report: dict[str, Any]) -> list[str]:
    """One line per symbol pyright could not type completely: a private one too, since a
    public class is only as complete as the private types its signatures use."""
    return [
        f"  {symbol['name']}: {' '.join(diagnostic['message'].split())}"
        for symbol in report["symbols"]
        for diagnostic in symbol["diagnostics"]
        if diagnostic["severity"] == "error"
    ]


def main(argv: list[str] | None = None) -> int:
    """Check every package in ``PACKAGES`` (or those named); return the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("packages", nargs="*", default=list(PACKAGES))
    parser.add_argument("--minimum", type=float, default=98.0, help="percent (default: 98)")
    parser.add_argument("--pyright", default="pyright", help="command (default: pyright)")
    parser.add_argument("-v", "--verbose", action="store_true", help="list flagged symbols")
    args = parser.parse_args(argv)
    failed = []
    for package in args.packages:
        report = verify(shlex.split(args.pyright), package)
        score = 100 * float(report["completenessScore"])
        counts = report["exportedSymbolCounts"]
        known, total = counts["withKnownType"], sum(counts.values())
        print(f"{package:22} {score:6.1f}%  ({known} of {total} exported symbols known)")
        if args.verbose:
            print(f"  (checked {report['packageRootDirectory']})", *flagged(report), sep="\n")
        if score < args.minimum:
            failed.append(package)
    if failed:
        print(f"under {args.minimum}%: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
