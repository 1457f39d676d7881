"""Generate the blocking twin of the runtime layer: ``_async.py`` -> ``_sync.py``.

The async original is the one to edit. ``python scripts/unasync.py`` rewrites
``_sync.py``; ``--check`` exits 1 when it is out of date (``tests/test_unasync.py``
runs that), so the two can never drift. Lines ending in ``# unasync: remove``
exist only in the async original (e.g. trio's ``aclose()`` alias).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

LAYER = Path(__file__).resolve().parent.parent / "runtimes" / "sansquic_runtime"
SOURCE, TARGET = LAYER / "_async.py", LAYER / "_sync.py"

#: Exact lines replaced first.
_LINES = {
    "from collections.abc import AsyncIterator, Awaitable, Callable, Hashable": (
        "from collections.abc import Callable, Hashable, Iterator"
    ),
}
#: Whole-word replacements, in order.
_WORDS = {
    "AsyncIterator": "Iterator",
    "AsyncBackend": "SyncBackend",
    "AsyncTaskGroup": "SyncTaskGroup",
    "Awaitable": "Callable",  # fixed up below: Callable[[X], Callable[object]] is wrong
    "__aenter__": "__enter__",
    "__aexit__": "__exit__",
    "__aiter__": "__iter__",
    "__anext__": "__next__",
    "StopAsyncIteration": "StopIteration",
}
_REGEXES = [
    (re.compile(r"\basync def "), "def "),
    (re.compile(r"\basync with "), "with "),
    (re.compile(r"\basync for "), "for "),
    (re.compile(r"\bawait "), ""),
    (
        re.compile(r"Callable\[\[Connection\], Callable\[object\]\]"),
        "Callable[[Connection], object]",
    ),
]
_HEADER = '''"""GENERATED from ``_async.py`` by ``scripts/unasync.py``: edit that file instead.

The blocking twin of the runtime layer, for the threads runtime.
"""
'''


def unasync(text: str) -> str:
    lines = [
        _LINES.get(line, line)
        for line in text.splitlines()
        if not line.rstrip().endswith("# unasync: remove")
    ]
    out = "\n".join(lines) + "\n"
    # The module docstring is the async one's; the twin gets its own.
    out = re.sub(r'\A""".*?"""\n', _HEADER, out, count=1, flags=re.S)
    for word, replacement in _WORDS.items():
        out = re.sub(rf"\b{word}\b", replacement, out)
    for pattern, replacement in _REGEXES:
        out = pattern.sub(replacement, out)
    return out


def main(argv: list[str]) -> int:
    generated = unasync(SOURCE.read_text())
    if "--check" in argv:
        if TARGET.read_text() != generated:
            print(f"{TARGET} is out of date: run python scripts/unasync.py", file=sys.stderr)
            return 1
        return 0
    TARGET.write_text(generated)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
