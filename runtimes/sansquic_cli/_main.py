"""``sansquic``'s commands, and the one place their failures are caught.

Every failure becomes one line on stderr, ``sansquic COMMAND: what - hint``
(see ``_explain.py``), exit status 1 (2 for arguments that cannot work); the
traceback too with ``--debug``.
Ctrl-C ends any command with exit status 130 and one line, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

import sansquic
from sansquic import tokens

from . import (
    _bench_async,
    _bench_sync,
    _demo_async,
    _demo_sync,
    _frameworks,
    _parser,
    _serve,
    _swarm_async,
    _swarm_sync,
)
from ._explain import UsageError, explain

__all__ = ["run"]

#: Exit statuses: the command failed; it cannot run as asked (arguments, a runtime
#: not installed: argparse's own status); Ctrl-C ended it (128 + SIGINT); its output
#: was closed (128 + SIGPIPE, as a shell reports a command killed by it).
FAILED, USAGE, INTERRUPTED, BROKEN_PIPE = 1, 2, 130, 141


def _demo(args: argparse.Namespace) -> int:
    """``sansquic demo``: the one demo (``_demo_async``) on the runtime asked for."""
    rt = _frameworks.load(args.runtime)
    if isinstance(rt, _frameworks.SyncRuntime):
        return _demo_sync.run(rt, args.seconds, args.clients, args.qlog)  # the blocking twin
    return rt.run(functools.partial(_demo_async.run, rt, args.seconds, args.clients, args.qlog))


def _bench(args: argparse.Namespace) -> int:
    """``sansquic bench``: the one bench (``_bench_async``) on the runtime asked for."""
    rt = _frameworks.load(args.runtime)
    if isinstance(rt, _frameworks.SyncRuntime):
        return _bench_sync.run(rt, args.runtime, args.seconds)
    return rt.run(functools.partial(_bench_async.run, rt, args.runtime, args.seconds))


def _swarm(args: argparse.Namespace) -> int:
    """``sansquic swarm``: the one swarm (``_swarm_async``) on the runtime asked for."""
    rt = _frameworks.load(args.runtime)
    if isinstance(rt, _frameworks.SyncRuntime):
        return _swarm_sync.run(rt, args.agents, args.rounds, browser=args.browser)
    return rt.run(
        functools.partial(_swarm_async.run, rt, args.agents, args.rounds, browser=args.browser)
    )


def _token(args: argparse.Namespace) -> int:
    signer = tokens.TokenSigner({"cli": _serve.secret(args.key, "--key")}, key_id="cli")
    print(signer.sign(args.subject, scopes=args.scope, ttl=args.ttl, now=time.time()))
    return 0


def _cert(args: argparse.Namespace) -> int:
    pair = sansquic.make_dev_certificate(tuple(args.name) or ("localhost", "127.0.0.1", "::1"))
    Path(args.certificate).write_bytes(pair.certificate)
    key_path = Path(args.key)
    key_path.write_bytes(pair.private_key)
    os.chmod(key_path, 0o600)
    print(f"wrote {args.certificate} and {args.key} (development use only)")
    return 0


_COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "demo": _demo,
    "bench": _bench,
    "swarm": _swarm,
    "serve": lambda args: asyncio.run(_serve.serve(args)),
    "connect": lambda args: asyncio.run(_serve.connect(args)),
    "token": _token,
    "cert": _cert,
}


def _interrupted(exc: BaseException) -> bool:
    """Whether ``exc`` is Ctrl-C, alone or inside a task group's exception group."""
    if isinstance(exc, BaseExceptionGroup):
        return exc.subgroup(KeyboardInterrupt) is not None
    return isinstance(exc, KeyboardInterrupt)


def run(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv``, run the command; its exit status (failures said in one line)."""
    args = _parser.parse(argv)
    debug = getattr(args, "debug", False)
    prefix = f"sansquic {args.command}"
    try:
        return _COMMANDS[args.command](args)
    except BrokenPipeError:
        # The reader went away (``sansquic connect ... | head``): nothing to say to it.
        # Later writes, and the flush at exit, must not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return BROKEN_PIPE
    except BaseException as exc:
        if not (_interrupted(exc) or isinstance(exc, Exception)):
            raise  # SystemExit and the like: not a failure to explain
        if debug:
            traceback.print_exc()
        if _interrupted(exc):
            print(f"{prefix}: interrupted", file=sys.stderr)
            return INTERRUPTED
        print(f"{prefix}: {explain(exc, args)}", file=sys.stderr)
        return USAGE if isinstance(exc, UsageError | _frameworks.MissingFramework) else FAILED
