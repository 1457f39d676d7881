"""``sansquic serve`` and ``sansquic connect``, on the asyncio runtime.

``serve`` logs through stdlib :mod:`logging` with a rich handler on stderr: a
line per connection, per auth result and per close at ``info`` (the default),
the library's own warnings always; the banner with the port goes to stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import math
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import sansquic_asyncio as runtime

import sansquic
from sansquic import tokens

from ._explain import UsageError

__all__ = ["connect", "serve"]

#: The most ``sansquic serve`` reads from a stream at once.
_SERVE_CHUNK = 64 * 1024
#: The shortest signing secret tokens accept (``sansquic.tokens``).
MIN_SECRET = 16
log = logging.getLogger("sansquic.cli")


def secret(value: str, option: str) -> bytes:
    """A token signing secret from the command line, checked before anything starts."""
    if len(value.encode()) < MIN_SECRET:
        raise UsageError(
            f"{option} is {len(value.encode())} bytes, tokens need a secret of {MIN_SECRET} "
            "or more - pass a long random one, e.g. from "
            "python -c 'import secrets; print(secrets.token_urlsafe(24))'"
        )
    return value.encode()


def pem(path: str | None, option: str) -> str | None:
    """``path`` once it is known to be a readable PEM file, so a bad one is named."""
    if path is None:
        return None
    try:
        text = Path(path).read_bytes()
    except OSError as exc:
        raise UsageError(f"{option} {path}: {exc.strerror} - check the path") from exc
    if b"-----BEGIN " not in text:
        raise UsageError(
            f"{option} {path}: not a PEM file - give a PEM file "
            "('sansquic cert' writes a development pair)"
        )
    return path


def _with_qlog(config: sansquic.Config, args: argparse.Namespace) -> sansquic.Config:
    """``--qlog DIR``: each connection's qlog trace becomes a file in DIR."""
    return config.replace(qlog=sansquic.QlogDirectory(args.qlog)) if args.qlog else config


def _server_config(args: argparse.Namespace) -> sansquic.Config:
    if bool(args.certificate) != bool(args.key):
        given, missing = ("--key", "--certificate") if args.key else ("--certificate", "--key")
        raise UsageError(
            f"{given} needs {missing} - pass both (PEM files), or neither for an "
            "in-memory development pair"
        )
    if args.certificate:
        config = sansquic.Config(
            certificate=pem(args.certificate, "--certificate"),
            private_key=pem(args.key, "--key"),
        )
    else:
        config = sansquic.Config(dev_mode=True)
    return _with_qlog(config, args)


def setup_logging(level: str) -> None:
    """Log to stderr, the library itself only from warnings up (all of it at ``debug``):
    through rich on a terminal, as plain timestamped lines into a pipe or file (rich
    would pad every line to the width it assumes)."""
    handler: logging.Handler
    if sys.stderr.isatty():
        from rich.logging import RichHandler

        handler = RichHandler(show_path=False)
        handler.setFormatter(logging.Formatter("%(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if level == "debug" else logging.WARNING)
    log.setLevel(level.upper())


class _AuthLog:
    """Logs each auth decision of the authenticator it wraps, and the failures it never
    saw (no credentials, a malformed request, a deadline missed) from the server's stats."""

    def __init__(self, authenticate: sansquic.Authenticator) -> None:
        self._authenticate = authenticate
        self._rejected = self._failures = 0

    def __call__(
        self, request: sansquic.AuthRequest, address: sansquic.Address, now: float
    ) -> sansquic.Identity | sansquic.AuthRejection:
        outcome = self._authenticate(request, address, now)
        if isinstance(outcome, sansquic.Identity):
            log.info("%s:%s auth accepted: %s", *address, outcome.subject)
        else:
            self._rejected += 1
            log.warning("%s:%s auth rejected: %s", *address, outcome.reason)
        return outcome

    def check(self, stats: sansquic.EndpointStats) -> None:
        """Log the auth failures counted since the last check that were not rejections."""
        unseen = stats.auth_failures - self._failures - self._rejected
        if unseen > 0:
            log.warning("%d connection(s) failed auth with no or malformed credentials", unseen)
        self._failures = stats.auth_failures - self._rejected


def _handler(mode: str) -> Callable[[runtime.Connection], Awaitable[None]]:
    """The handler: echo every stream back, or read it and drop it; log open and close."""

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
        peer = "%s:%s" % (conn.remote_address or ("?", "?"))
        who = f" as {conn.identity.subject}" if conn.identity else ""
        log.info("%s connected%s (%s)", peer, who, conn.alpn)
        start, streams = time.monotonic(), 0
        try:
            async with asyncio.TaskGroup() as group:
                async for stream in conn:
                    streams += 1
                    log.debug("%s stream %d", peer, stream.id)
                    group.create_task(serve_stream(stream))
        finally:
            stats = conn.stats()
            log.info(
                "%s closed after %.1f s: %d streams, %d bytes in, %d out",
                peer,
                time.monotonic() - start,
                streams,
                stats.stream_bytes_received,
                stats.stream_bytes_sent,
            )

    return handler


async def serve(args: argparse.Namespace) -> int:
    """``sansquic serve``: until ``--seconds`` or Ctrl-C, then close every connection."""
    auth = None
    if args.token_key:
        verifier = tokens.TokenVerifier({"cli": secret(args.token_key, "--token-key")})
        auth = _AuthLog(tokens.token_authenticator(verifier, token_time=lambda now: time.time()))
    config = _server_config(args)
    setup_logging(args.log_level)
    server = await runtime.serve(
        _handler(args.mode), args.host, args.port, config=config, authenticator=auth
    )
    host, port = server.address
    print(f"sansquic {args.mode} server on {host}:{port}", flush=True)
    log.info("listening on %s:%s (%s)", host, port, "tokens required" if auth else "no auth")
    until = time.monotonic() + args.seconds if args.seconds else math.inf
    try:
        while (left := until - time.monotonic()) > 0:
            await asyncio.sleep(min(left, 1.0))
            if auth is not None:
                auth.check(server.stats())
    finally:
        log.info("closing")
        await server.close()
    return 0


async def connect(args: argparse.Namespace) -> int:
    """``sansquic connect``: send stdin (or ``--file``) on one stream, print the reply."""
    data = Path(args.file).read_bytes() if args.file else sys.stdin.buffer.read()
    config = sansquic.Config(verify_peer=not args.insecure, ca_certs=pem(args.ca, "--ca"))
    config = _with_qlog(config, args)
    async with runtime.connect(
        args.host,
        args.port,
        config=config,
        token=args.token,
        server_name=args.server_name,
        timeout=args.timeout,
    ) as conn:
        stream = await conn.open_stream()
        await stream.send(data)
        await stream.finish()
        # A server that wanted a token answers nothing on the stream and closes with
        # an auth code (sansquic/_authflow.py): receive() raises that close.
        while chunk := await stream.receive():
            sys.stdout.buffer.write(chunk)
        sys.stdout.flush()
    return 0
