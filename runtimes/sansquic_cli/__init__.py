"""The ``sansquic`` command: demo, swarm, serve, connect, token, cert.

``sansquic demo`` runs a server and several clients on loopback with an
in-memory development certificate and a generated token, and shows a live
summary, on any runtime (``--runtime asyncio|trio|anyio|anyio-trio|curio|threads``);
``sansquic swarm`` runs a coordinator and agents over the messaging layer, likewise.
The other commands run on the asyncio runtime.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import os
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import sansquic_asyncio as runtime

import sansquic
from sansquic import tokens

from . import _demo_async, _demo_sync, _frameworks, _swarm_async, _swarm_sync

__all__ = ["main"]

# -- demo ------------------------------------------------------------------------------


def _run_demo(runtime_name: str, seconds: float, clients: int, qlog: str | None = None) -> int:
    """``sansquic demo``: the one demo (``_demo_async``) on the runtime asked for."""
    try:
        rt = _frameworks.load(runtime_name)
    except _frameworks.MissingFramework as exc:
        print(f"sansquic demo: {exc}", file=sys.stderr)
        return 2
    if isinstance(rt, _frameworks.SyncRuntime):
        return _demo_sync.run(rt, seconds, clients, qlog)  # the generated blocking twin
    return rt.run(functools.partial(_demo_async.run, rt, seconds, clients, qlog))


def _run_swarm(runtime_name: str, agents: int, rounds: int, browser: bool = False) -> int:
    """``sansquic swarm``: the one swarm (``_swarm_async``) on the runtime asked for."""
    try:
        rt = _frameworks.load(runtime_name)
    except _frameworks.MissingFramework as exc:
        print(f"sansquic swarm: {exc}", file=sys.stderr)
        return 2
    if isinstance(rt, _frameworks.SyncRuntime):
        return _swarm_sync.run(rt, agents, rounds, browser=browser)  # the generated twin
    return rt.run(functools.partial(_swarm_async.run, rt, agents, rounds, browser=browser))


# -- serve / connect / token / cert ------------------------------------------------------


def _with_qlog(config: sansquic.Config, args: argparse.Namespace) -> sansquic.Config:
    """``--qlog DIR``: each connection's qlog trace becomes a file in DIR."""
    return config.replace(qlog=sansquic.QlogDirectory(args.qlog)) if args.qlog else config


def _server_config(args: argparse.Namespace) -> sansquic.Config:
    if args.certificate:
        config = sansquic.Config(certificate=args.certificate, private_key=args.key)
    else:
        config = sansquic.Config(dev_mode=True, trust_dev_certificate=True)
    return _with_qlog(config, args)


#: The most ``sansquic serve`` reads from a stream at once.
_SERVE_CHUNK = 64 * 1024


def _serve_handler(mode: str) -> Callable[[runtime.Connection], Awaitable[None]]:
    """The ``sansquic serve`` handler: echo every stream back, or read it and drop it."""

    async def serve_stream(stream: runtime.Stream) -> None:
        # Chunk by chunk: what the server holds per stream is bounded by the read size
        # and the send buffer, however much the peer sends.
        with contextlib.suppress(
            sansquic.StreamResetError, sansquic.StreamStoppedError, sansquic.ConnectionClosed
        ):
            while chunk := await stream.receive(_SERVE_CHUNK):
                if mode == "echo":
                    await stream.send(chunk)
            await stream.finish()

    async def handler(conn: runtime.Connection) -> None:
        async with asyncio.TaskGroup() as group:
            async for stream in conn:
                group.create_task(serve_stream(stream))

    return handler


async def _serve(args: argparse.Namespace) -> int:
    authenticator = None
    if args.token_key:
        verifier = tokens.TokenVerifier({"cli": args.token_key.encode()})
        authenticator = tokens.token_authenticator(verifier, token_time=lambda now: time.time())
    handler = _serve_handler(args.mode)

    server = await runtime.serve(
        handler, args.host, args.port, config=_server_config(args), authenticator=authenticator
    )
    print(f"sansquic {args.mode} server on {server.address[0]}:{server.address[1]}", flush=True)
    try:
        await asyncio.sleep(args.seconds if args.seconds else 10**9)
    finally:
        await server.close()
    return 0


async def _connect(args: argparse.Namespace) -> int:
    data = Path(args.file).read_bytes() if args.file else sys.stdin.buffer.read()
    config = _with_qlog(sansquic.Config(verify_peer=not args.insecure, ca_certs=args.ca), args)
    async with runtime.connect(
        args.host, args.port, config=config, token=args.token, server_name=args.server_name
    ) as conn:
        stream = await conn.open_stream()
        await stream.send(data)
        await stream.finish()
        while chunk := await stream.receive():
            sys.stdout.buffer.write(chunk)
        sys.stdout.flush()
    return 0


def _token(args: argparse.Namespace) -> int:
    signer = tokens.TokenSigner({"cli": args.key.encode()}, key_id="cli")
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


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sansquic", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="server and clients on loopback, live summary")
    demo.add_argument("--seconds", type=float, default=5.0)
    demo.add_argument("--clients", type=int, default=3)
    demo.add_argument("--runtime", choices=list(_frameworks.RUNTIMES), default="asyncio")
    swarm = commands.add_parser("swarm", help="a coordinator and agents exchanging messages")
    swarm.add_argument("--agents", type=int, default=3)
    swarm.add_argument("--rounds", type=int, default=3)
    swarm.add_argument("--runtime", choices=list(_frameworks.RUNTIMES), default="asyncio")
    swarm.add_argument(
        "--browser", action="store_true", help="also serve a page that joins as an agent"
    )
    serve = commands.add_parser("serve", help="an echo or sink server")
    serve.add_argument("mode", choices=["echo", "sink"], nargs="?", default="echo")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=4433)
    serve.add_argument("--certificate", help="PEM certificate (default: in-memory dev pair)")
    serve.add_argument("--key", help="PEM private key")
    serve.add_argument("--token-key", help="require tokens signed with this secret")
    serve.add_argument("--seconds", type=float, help="stop after this long")
    connect = commands.add_parser("connect", help="send stdin or a file, print the reply")
    connect.add_argument("host")
    connect.add_argument("port", type=int)
    connect.add_argument("--file")
    connect.add_argument("--token")
    connect.add_argument("--server-name")
    connect.add_argument("--ca", help="trust this PEM certificate")
    connect.add_argument("--insecure", action="store_true", help="skip verification (dev)")
    for command in (demo, serve, connect):
        command.add_argument(
            "--qlog", metavar="DIR", help="write each connection's qlog trace (qvis) into DIR"
        )
    token = commands.add_parser("token", help="issue a signed token")
    token.add_argument("subject")
    token.add_argument("--key", required=True, help="the signing secret (16+ characters)")
    token.add_argument("--scope", action="append", default=[])
    token.add_argument("--ttl", type=float, default=3600.0)
    cert = commands.add_parser("cert", help="write a development certificate pair")
    cert.add_argument("--certificate", default="sansquic-dev.pem")
    cert.add_argument("--key", default="sansquic-dev.key")
    cert.add_argument("--name", action="append", default=[])
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``sansquic`` command; returns the exit status."""
    args = _parser().parse_args(argv)
    if args.command == "demo":
        return _run_demo(args.runtime, args.seconds, args.clients, args.qlog)
    if args.command == "swarm":
        return _run_swarm(args.runtime, args.agents, args.rounds, args.browser)
    if args.command == "serve":
        return asyncio.run(_serve(args))
    if args.command == "connect":
        return asyncio.run(_connect(args))
    if args.command == "token":
        return _token(args)
    return _cert(args)


if __name__ == "__main__":
    raise SystemExit(main())
