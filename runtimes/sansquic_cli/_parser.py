"""The ``sansquic`` command line: every command, every option with its default shown.

A bad argument is one line on stderr with a hint (``sansquic connect: argument
port: invalid int value: 'x' - see 'sansquic connect --help'``), exit status 2,
instead of argparse's usage block.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import platform
from collections.abc import Sequence
from typing import NoReturn

from . import _frameworks

__all__ = ["DEFAULT_PORT", "parse", "parser", "version"]

#: Where ``sansquic serve`` listens and ``sansquic connect`` goes by default.
DEFAULT_PORT = 4433


def version() -> str:
    """``sansquic X (aioquic Y, Python Z)``: what ``--version`` prints."""

    def installed(name: str) -> str:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return "not installed"

    import sansquic

    return (
        f"sansquic {sansquic.__version__} "
        f"(aioquic {installed('aioquic')}, Python {platform.python_version()})"
    )


class _Formatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows ``(default: X)`` after every option that has one; options whose absence
    means something say so in their own help instead of ``(default: None)``."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default in (None, False) or isinstance(action.default, list):
            return action.help
        return super()._get_help_string(action)


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line with a hint."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} - see '{self.prog} --help'\n")


def _positive(kind: type[int] | type[float]) -> type:
    """An argparse ``type`` for numbers above zero, named for the error message."""

    def parse(text: str) -> int | float:
        value = kind(text)
        if not value > 0:
            raise ValueError(text)
        return value

    parse.__name__ = f"positive {kind.__name__}"
    return parse  # type: ignore[return-value]  # argparse takes any callable


_POSITIVE_INT, _POSITIVE_FLOAT = _positive(int), _positive(float)


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise ValueError(text)
    return value


_port.__name__ = "port (0-65535)"


def _common(parser: argparse.ArgumentParser) -> None:
    # SUPPRESS: a subcommand's default must not hide a --debug given before it.
    parser.add_argument(
        "--debug",
        action="store_true",
        default=argparse.SUPPRESS,
        help="on an error, print the traceback too",
    )


def _runtime(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--runtime", choices=list(_frameworks.RUNTIMES), default="asyncio", help="the runtime"
    )


def _qlog(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--qlog",
        metavar="DIR",
        help="write each connection's qlog trace (qvis) into DIR (default: no traces)",
    )


def parser() -> argparse.ArgumentParser:
    """The ``sansquic`` argument parser."""
    top = _Parser(
        prog="sansquic",
        description="sansquic from the command line: try QUIC on loopback (demo, bench, swarm), "
        "serve and connect, make tokens and development certificates.",
        formatter_class=_Formatter,
    )
    top.add_argument("--version", action="version", version=version())
    top.add_argument("--debug", action="store_true", help="on an error, print the traceback too")
    commands = top.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, summary: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(
            name, help=summary, description=summary, formatter_class=_Formatter
        )
        _common(sub)
        return sub

    demo = command("demo", "a server and clients on loopback, with a live summary")
    demo.add_argument("--seconds", type=_POSITIVE_FLOAT, default=5.0, help="how long to run")
    demo.add_argument("--clients", type=_POSITIVE_INT, default=3, help="clients to run")
    _runtime(demo)
    _qlog(demo)

    bench = command("bench", "measure handshakes, round trips and throughput on loopback")
    bench.add_argument(
        "--seconds", type=_POSITIVE_FLOAT, default=1.0, help="how long each measurement runs"
    )
    _runtime(bench)

    swarm = command("swarm", "a coordinator and agents exchanging messages")
    swarm.add_argument("--agents", type=_POSITIVE_INT, default=3, help="agents to run")
    swarm.add_argument("--rounds", type=_POSITIVE_INT, default=3, help="task rounds")
    swarm.add_argument(
        "--browser", action="store_true", help="also serve a page that joins as an agent"
    )
    _runtime(swarm)

    serve = command("serve", "an echo or sink server (asyncio), logging its connections")
    serve.add_argument(
        "mode",
        choices=["echo", "sink"],
        nargs="?",
        default="echo",
        help="echo every stream back, or read and drop it",
    )
    serve.add_argument("--host", default="127.0.0.1", help="the address to listen on")
    serve.add_argument(
        "--port", type=_port, default=DEFAULT_PORT, help="the UDP port (0 picks a free one)"
    )
    serve.add_argument(
        "--certificate",
        metavar="FILE",
        help="PEM certificate, with --key (default: an in-memory development pair)",
    )
    serve.add_argument(
        "--key", metavar="FILE", help="PEM private key of --certificate (default: none)"
    )
    serve.add_argument(
        "--token-key",
        metavar="SECRET",
        help="require tokens signed with this secret, 16+ characters (default: no auth)",
    )
    serve.add_argument(
        "--seconds", type=_POSITIVE_FLOAT, help="stop after this long (default: until Ctrl-C)"
    )
    serve.add_argument(
        "--log-level",
        choices=["debug", "info", "warning", "error"],
        default="info",
        help="what to log: info is a line per connection, auth result and close",
    )
    _qlog(serve)

    connect = command("connect", "send stdin or a file on one stream, print the reply")
    connect.add_argument("host", help="the server's name or address")
    connect.add_argument(
        "port", type=_port, nargs="?", default=DEFAULT_PORT, help="the server's UDP port"
    )
    connect.add_argument("--file", help="send this file (default: stdin)")
    connect.add_argument(
        "--token", help="present this token, from 'sansquic token' (default: none)"
    )
    connect.add_argument(
        "--server-name", help="the name to verify the certificate for (default: HOST)"
    )
    trust = connect.add_mutually_exclusive_group()
    trust.add_argument(
        "--ca", metavar="FILE", help="trust this PEM certificate (default: the system's)"
    )
    trust.add_argument(
        "--insecure",
        action="store_true",
        help="skip certificate verification (development servers only)",
    )
    connect.add_argument(
        "--timeout", type=_POSITIVE_FLOAT, default=10.0, help="seconds to wait for the handshake"
    )
    _qlog(connect)

    token = command("token", "issue a signed token")
    token.add_argument("subject", help="who the token is for")
    token.add_argument(
        "--key", metavar="SECRET", required=True, help="the signing secret (16+ characters)"
    )
    token.add_argument(
        "--scope", action="append", default=[], help="a scope to grant (repeatable; default: none)"
    )
    token.add_argument(
        "--ttl", type=_POSITIVE_FLOAT, default=3600.0, help="seconds the token is valid"
    )

    cert = command("cert", "write a development certificate pair")
    cert.add_argument(
        "--certificate", metavar="FILE", default="sansquic-dev.pem", help="where the cert goes"
    )
    cert.add_argument(
        "--key", metavar="FILE", default="sansquic-dev.key", help="where the private key goes"
    )
    cert.add_argument(
        "--name",
        action="append",
        default=[],
        help="a name the certificate is for (repeatable; default: localhost, 127.0.0.1, ::1)",
    )
    return top


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse ``argv`` (``sys.argv[1:]`` when None); exits 2 with one line on an error."""
    return parser().parse_args(argv)
