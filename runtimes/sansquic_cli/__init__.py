"""The ``sansquic`` command: demo, bench, swarm, serve, connect, token, cert.

``sansquic demo`` runs a server and several clients on loopback with an
in-memory development certificate and a generated token, and shows a live
summary, on any runtime (``--runtime asyncio|trio|anyio|anyio-trio|curio|threads``);
``sansquic bench`` measures that runtime on loopback; ``sansquic swarm`` runs a
coordinator and agents over the messaging layer. ``serve`` and ``connect`` run
on asyncio. The command needs ``rich`` (``pip install 'sansquic[cli]'``); the
library itself does not.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``sansquic`` command; returns the exit status."""
    try:
        import rich  # noqa: F401  # only the command needs it: say so rather than fail
    except ImportError:
        print(
            "sansquic: the command needs rich, which is not installed - "
            "pip install 'sansquic[cli]'",
            file=sys.stderr,
        )
        return 1
    try:
        from ._main import run  # the imports take a while: Ctrl-C may come during them
    except KeyboardInterrupt:
        print("sansquic: interrupted", file=sys.stderr)
        return 130
    return run(argv)


if __name__ == "__main__":
    raise SystemExit(main())
