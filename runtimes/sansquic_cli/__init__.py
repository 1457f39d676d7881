"""The ``sansquic`` command: demo, serve, connect, token, cert.

``sansquic demo`` runs a server and several clients on loopback with an
in-memory development certificate and a generated token, and shows a live
summary. Everything runs on the asyncio runtime.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import statistics
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import sansquic_asyncio as runtime
from rich.console import Console
from rich.live import Live
from rich.table import Table

import sansquic
from sansquic import tokens

__all__ = ["main"]

PRIORITIES = {
    "critical": sansquic.Priority.CRITICAL,
    "normal": sansquic.Priority.NORMAL,
    "background": sansquic.Priority.BACKGROUND,
}


# -- demo ------------------------------------------------------------------------------

#: The demo's streams: priority name and message size, echoed over and over.
FLOWS = (("critical", 1_000), ("normal", 20_000), ("background", 400_000))


def _demo_setup() -> tuple[sansquic.Config, str, sansquic.Authenticator]:
    """The in-memory dev certificate, a fresh signing key, a token and its checker."""
    config = sansquic.Config(dev_mode=True)  # in-memory self-signed pair; clients skip checks
    key = {"demo": secrets.token_bytes(32)}
    token = tokens.TokenSigner(key, key_id="demo").sign(
        "demo-agent", scopes=("echo",), ttl=600, now=time.time()
    )
    verifier = tokens.TokenVerifier(key)
    return config, token, tokens.token_authenticator(verifier, token_time=lambda n: time.time())


def _finish_demo(console: Console, tally: _Tally, failed: list[BaseException]) -> int:
    for error in failed:
        console.print(f"[red]client failed:[/red] {error!r}")
    ok = not failed and all(tally.latencies.values())
    console.print("[green]OK[/green]" if ok else "[red]FAILED[/red]")
    return 0 if ok else 1


class _Tally:
    """What the demo measured, per priority."""

    def __init__(self) -> None:
        self.bytes = dict.fromkeys(PRIORITIES, 0)
        self.latencies: dict[str, list[float]] = {name: [] for name in PRIORITIES}
        self.datagrams_sent = self.datagrams_echoed = 0
        self.auth: list[str] = []


async def _echo_handler(conn: runtime.Connection) -> None:
    """Echo every stream back, and every datagram."""

    async def echo_datagrams() -> None:
        while True:
            await conn.send_datagram(await conn.receive_datagram())

    async def echo(stream: runtime.Stream) -> None:
        with_data = bytearray()
        while chunk := await stream.receive():
            with_data += chunk
        await stream.send(bytes(with_data))
        await stream.finish()

    datagrams = asyncio.create_task(echo_datagrams())
    try:
        async with asyncio.TaskGroup() as group:
            async for stream in conn:
                group.create_task(echo(stream))
    finally:
        datagrams.cancel()


async def _demo_client(
    name: str, port: int, token: str, config: sansquic.Config, tally: _Tally, until: float
) -> None:
    conn = await runtime.connect(
        "127.0.0.1", port, config=config, server_name="localhost", token=token
    )
    identity = conn.identity
    tally.auth.append(f"{name}: accepted as {identity.subject if identity else '?'}")

    async def flow(priority_name: str, size: int) -> None:
        priority = PRIORITIES[priority_name]
        payload = secrets.token_bytes(size)
        while time.monotonic() < until:
            start = time.monotonic()
            stream = await conn.open_stream(priority=priority)
            await stream.send(payload)
            await stream.finish()
            received = bytearray()
            while chunk := await stream.receive():
                received += chunk
            if bytes(received) != payload:
                raise RuntimeError(f"{name}: a {priority_name} echo came back altered")
            tally.bytes[priority_name] += 2 * size
            tally.latencies[priority_name].append(time.monotonic() - start)

    async def datagrams() -> None:
        while time.monotonic() < until:
            await conn.send_datagram(b"ping")
            tally.datagrams_sent += 1
            with_reply = conn.receive_datagram(timeout=0.2)
            try:
                await with_reply
                tally.datagrams_echoed += 1
            except TimeoutError:
                pass  # datagrams are unreliable by design

    async with asyncio.TaskGroup() as group:
        for name, size in FLOWS:
            group.create_task(flow(name, size))
        group.create_task(datagrams())
    await conn.close(0, "demo over")


def _summary(tally: _Tally, elapsed: float, server: Any) -> Table:
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
    stats = server.stats()
    table.caption = (
        f"datagrams echoed {tally.datagrams_echoed}/{tally.datagrams_sent}; "
        f"server accepted {stats.accepted}, active {stats.active}, "
        f"auth failures {stats.auth_failures}; " + "; ".join(tally.auth)
    )
    return table


async def _demo(seconds: float, clients: int) -> int:
    console = Console()
    config, token, authenticator = _demo_setup()
    server = await runtime.serve(
        _echo_handler, "127.0.0.1", 0, config=config, authenticator=authenticator
    )
    tally = _Tally()
    start = time.monotonic()
    until = start + seconds
    with Live(console=console, refresh_per_second=4) as live:
        tasks = [
            asyncio.create_task(
                _demo_client(f"client {i}", server.address[1], token, config, tally, until)
            )
            for i in range(clients)
        ]
        while not all(task.done() for task in tasks):
            live.update(_summary(tally, time.monotonic() - start, server))
            await asyncio.sleep(0.25)
        live.update(_summary(tally, time.monotonic() - start, server))
    await server.close()
    failed = [error for task in tasks if (error := task.exception()) is not None]
    return _finish_demo(console, tally, failed)


def _demo_threads(seconds: float, clients: int) -> int:
    """The same demo on the blocking threads runtime: a thread per flow instead of a task."""
    import sansquic_threads as blocking

    console = Console()
    config, token, authenticator = _demo_setup()

    def echo(stream: blocking.Stream) -> None:
        data = bytearray()
        while chunk := stream.receive(timeout=30):
            data += chunk
        stream.send(bytes(data))
        stream.finish()

    def handler(conn: blocking.Connection) -> None:
        def datagrams() -> None:
            with contextlib.suppress(sansquic.SansQuicError, TimeoutError):
                while True:
                    conn.send_datagram(conn.receive_datagram(timeout=seconds + 5))

        threading.Thread(target=datagrams, daemon=True).start()
        for stream in conn:
            threading.Thread(target=echo, args=(stream,), daemon=True).start()

    server = blocking.serve(handler, "127.0.0.1", 0, config=config, authenticator=authenticator)
    tally = _Tally()
    start = time.monotonic()
    until = start + seconds
    failed: list[BaseException] = []

    def client(name: str) -> None:
        try:
            conn = blocking.connect(
                "127.0.0.1", server.address[1], config=config, server_name="localhost", token=token
            )
            tally.auth.append(
                f"{name}: accepted as {conn.identity.subject if conn.identity else '?'}"
            )

            def flow(priority_name: str, size: int) -> None:
                payload = secrets.token_bytes(size)
                while time.monotonic() < until:
                    begin = time.monotonic()
                    stream = conn.open_stream(priority=PRIORITIES[priority_name])
                    stream.send(payload)
                    stream.finish()
                    received = bytearray()
                    while chunk := stream.receive(timeout=30):
                        received += chunk
                    if bytes(received) != payload:
                        raise RuntimeError(f"{name}: a {priority_name} echo came back altered")
                    tally.bytes[priority_name] += 2 * size
                    tally.latencies[priority_name].append(time.monotonic() - begin)

            def datagrams() -> None:
                while time.monotonic() < until:
                    conn.send_datagram(b"ping")
                    tally.datagrams_sent += 1
                    with contextlib.suppress(TimeoutError):
                        conn.receive_datagram(timeout=0.2)
                        tally.datagrams_echoed += 1

            workers = [threading.Thread(target=flow, args=f) for f in FLOWS]
            workers.append(threading.Thread(target=datagrams))
            for worker in workers:
                worker.start()
            for worker in workers:
                worker.join()
            conn.close(0, "demo over")
        except BaseException as exc:  # reported in the summary, as the asyncio demo does
            failed.append(exc)

    threads = [threading.Thread(target=client, args=(f"client {i}",)) for i in range(clients)]
    with Live(console=console, refresh_per_second=4) as live:
        for thread in threads:
            thread.start()
        while any(thread.is_alive() for thread in threads):
            live.update(_summary(tally, time.monotonic() - start, server))
            time.sleep(0.25)
        live.update(_summary(tally, time.monotonic() - start, server))
    server.close()
    return _finish_demo(console, tally, failed)


# -- serve / connect / token / cert ------------------------------------------------------


def _server_config(args: argparse.Namespace) -> sansquic.Config:
    if args.certificate:
        return sansquic.Config(certificate=args.certificate, private_key=args.key)
    return sansquic.Config(dev_mode=True)


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
    config = sansquic.Config(dev_mode=args.insecure, ca_certs=args.ca)
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
    demo.add_argument("--runtime", choices=["asyncio", "threads"], default="asyncio")
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
        if args.runtime == "threads":
            return _demo_threads(args.seconds, args.clients)
        return asyncio.run(_demo(args.seconds, args.clients))
    if args.command == "serve":
        return asyncio.run(_serve(args))
    if args.command == "connect":
        return asyncio.run(_connect(args))
    if args.command == "token":
        return _token(args)
    return _cert(args)


if __name__ == "__main__":
    raise SystemExit(main())
