"""Generate the blocking twins of the async originals: ``_async.py`` -> ``_sync.py``.

The pairs (see ``PAIRS``): the runtime layer (``runtimes/sansquic_runtime``), its
WebSocket, WebTransport and messaging drive code, and ``sansquic demo``, ``bench`` and
``swarm`` (``runtimes/sansquic_cli``).
The async original is the one to edit. ``python scripts/unasync.py`` rewrites
every twin; ``--check`` exits 1 when any is out of date (``tests/test_unasync.py``
runs that), so no pair can drift. Lines ending in ``# unasync: remove`` exist only in the async
original (e.g. trio's ``aclose()`` alias).
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

RUNTIMES = Path(__file__).resolve().parent.parent / "runtimes"
LAYER = RUNTIMES / "sansquic_runtime"
SOURCE, TARGET = LAYER / "_async.py", LAYER / "_sync.py"

#: Exact lines replaced first (the runtime layer's).
_LINES = {
    "from collections.abc import AsyncIterator, Awaitable, Callable, Hashable": (
        "from collections.abc import Callable, Hashable, Iterator"
    ),
}
#: Whole-word replacements, in order (every pair).
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
        re.compile(r"Callable\[\[(Connection|WebSocketConnection)\], Callable\[object\]\]"),
        r"Callable[[\1], object]",
    ),
]
_HEADER = '''"""GENERATED from ``_async.py`` by ``scripts/unasync.py``: edit that file instead.

The blocking twin of the runtime layer, for the threads runtime.
"""
'''


@dataclass(frozen=True)
class Pair:
    """An async original, its generated twin, and the rules of that pair."""

    source: Path
    target: Path
    #: The twin's module docstring (the original's is replaced).
    header: str
    #: Exact lines replaced first.
    lines: dict[str, str] = field(default_factory=dict)
    #: Whole-word replacements applied before the shared ``_WORDS``.
    words: dict[str, str] = field(default_factory=dict)


CLI = RUNTIMES / "sansquic_cli"
PAIRS = [
    Pair(SOURCE, TARGET, _HEADER, _LINES),
    Pair(
        LAYER / "_ws_async.py",
        LAYER / "_ws_sync.py",
        '''"""GENERATED from ``_ws_async.py`` by ``scripts/unasync.py``: edit that file instead.

The blocking twin of the WebSocket fallback, for the threads runtime.
"""
''',
        {
            **_LINES,
            "from ._async import Connection, WholeReads, open_connection": (
                "from ._sync import Connection, WholeReads, open_connection"
            ),
            "from ._messaging_async import MessageConnection": (
                "from ._messaging_sync import MessageConnection"
            ),
        },
    ),
    Pair(
        CLI / "_demo_async.py",
        CLI / "_demo_sync.py",
        '''"""GENERATED from ``_demo_async.py`` by ``scripts/unasync.py``: edit that file instead.

The blocking twin of ``sansquic demo``, for the threads runtime.
"""
''',
        lines={
            "from sansquic_runtime import Connection, Stream": (
                "from sansquic_runtime._sync import Connection, Stream"
            ),
        },
        words={"AsyncRuntime": "SyncRuntime"},
    ),
    Pair(
        CLI / "_bench_async.py",
        CLI / "_bench_sync.py",
        '''"""GENERATED from ``_bench_async.py`` by ``scripts/unasync.py``: edit that file instead.

The blocking twin of ``sansquic bench``, for the threads runtime.
"""
''',
        lines={
            "from sansquic_runtime import Connection, Stream": (
                "from sansquic_runtime._sync import Connection, Stream"
            ),
        },
        words={
            "AsyncRuntime": "SyncRuntime",
            "AbstractAsyncContextManager": "AbstractContextManager",
        },
    ),
    Pair(
        CLI / "_swarm_async.py",
        CLI / "_swarm_sync.py",
        '''"""GENERATED from ``_swarm_async.py`` by ``scripts/unasync.py``: edit that file instead.

The blocking twin of ``sansquic swarm``, for the threads runtime.
"""
''',
        lines={
            "from sansquic_runtime import MessageServer, Messenger, Peer": (
                "from sansquic_runtime._messaging_sync import MessageServer, Messenger, Peer"
            ),
            "from sansquic_runtime._wt_async import WebTransportSession, webtransport_handler": (
                "from sansquic_runtime._wt_sync import WebTransportSession, webtransport_handler"
            ),
        },
        words={
            "AsyncRuntime": "SyncRuntime",
            "AsyncExitStack": "ExitStack",
            "enter_async_context": "enter_context",
        },
    ),
    Pair(
        LAYER / "_messaging_async.py",
        LAYER / "_messaging_sync.py",
        '''"""GENERATED from ``_messaging_async.py`` by ``scripts/unasync.py``: edit that file
instead.

The blocking twin of the messaging drive code, for threads (and blocking harnesses).
"""
''',
        lines={
            "import contextlib": "import contextlib\nimport threading",
            'Handler = Callable[["Peer", messaging.Envelope], Awaitable[object]]': (
                'Handler = Callable[["Peer", messaging.Envelope], object]'
            ),
            'Dial = Callable[[], Awaitable["MessageConnection"]]': (
                'Dial = Callable[[], "MessageConnection"]'
            ),
            "Sleep = Callable[[float], Awaitable[None]]": "Sleep = Callable[[float], None]",
            "from collections.abc import Awaitable, Callable": (
                "from collections.abc import Callable"
            ),
            "    # One event loop: nothing runs between awaits, and the channel never awaits.": (
                "    # Threads: readers and senders touch the channel from many threads."
            ),
            "    return contextlib.nullcontext()": "    return threading.Lock()",
        },
    ),
    Pair(
        LAYER / "_wt_async.py",
        LAYER / "_wt_sync.py",
        '''"""GENERATED from ``_wt_async.py`` by ``scripts/unasync.py``: edit that file instead.

WebTransport on the blocking runtime layer, for the threads runtime.
"""
''',
        lines={
            "from collections.abc import Awaitable, Callable, Mapping, Sequence": (
                "from collections.abc import Callable, Mapping, Sequence"
            ),
            "from ._async import Connection, Stream": "from ._sync import Connection, Stream",
            "from ._messaging_async import MessageConnection": (
                "from ._messaging_sync import MessageConnection"
            ),
            'SessionHandler = Callable[["WebTransportSession"], Awaitable[object]]': (
                'SessionHandler = Callable[["WebTransportSession"], object]'
            ),
            "ConnectionHandler = Callable[[Connection], Awaitable[None]]": (
                "ConnectionHandler = Callable[[Connection], None]"
            ),
        },
    ),
]


def unasync(text: str, pair: Pair = PAIRS[0]) -> str:
    """The blocking twin of ``text`` under ``pair``'s rules (the runtime layer's by default)."""
    lines = [
        pair.lines.get(line, line)
        for line in text.splitlines()
        if not line.rstrip().endswith("# unasync: remove")
    ]
    out = "\n".join(lines) + "\n"
    # The module docstring is the async one's; the twin gets its own.
    out = re.sub(r'\A""".*?"""\n', lambda _: pair.header, out, count=1, flags=re.S)
    for word, replacement in {**pair.words, **_WORDS}.items():
        out = re.sub(rf"\b{word}\b", replacement, out)
    for pattern, replacement in _REGEXES:
        out = pattern.sub(replacement, out)
    return out


def main(argv: list[str]) -> int:
    stale = []
    for pair in PAIRS:
        generated = unasync(pair.source.read_text(), pair)
        if "--check" in argv:
            if not pair.target.exists() or pair.target.read_text() != generated:
                stale.append(pair.target)
        else:
            pair.target.write_text(generated)
    for target in stale:
        print(f"{target} is out of date: run python scripts/unasync.py", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
