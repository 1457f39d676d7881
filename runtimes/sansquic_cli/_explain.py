"""Every failure the ``sansquic`` command can meet, said in one line with a hint.

:func:`explain` maps an exception to ``"what happened - what to do"``; the
command prints it after ``sansquic COMMAND:`` (the traceback only with
``--debug``). :class:`UsageError` is what the command raises itself when
arguments are fine one by one but wrong together.
"""

from __future__ import annotations

import argparse
import errno
import socket

import sansquic
from sansquic import CloseCode

from ._frameworks import MissingFramework

__all__ = ["UsageError", "explain"]

#: QUIC's CRYPTO_ERROR range: 0x100 + the TLS alert (RFC 9001 section 4.8).
_CRYPTO_ERRORS = range(0x100, 0x200)
_TRUST_HINT = "pass --insecure (development server) or --ca FILE (its certificate)"
_TOKEN_HINT = "pass --token (sansquic token SUBJECT --key SECRET, the server's --token-key)"
_DEBUG_HINT = "rerun with --debug for the traceback"


class UsageError(Exception):
    """Arguments that cannot work together; ``str()`` is the whole line, hint included."""


def _where(args: argparse.Namespace) -> str:
    """``host:port`` of the command's peer or listening address (``[::1]:443`` for IPv6)."""
    host = str(getattr(args, "host", "?"))
    return f"{f'[{host}]' if ':' in host else host}:{getattr(args, 'port', '?')}"


def _tls(exc: sansquic.ConnectionClosed, args: argparse.Namespace) -> str:
    """A handshake this side ended over the server's certificate."""
    reason = exc.reason or "no reason given"
    if "doesn't match" in reason or "hostname" in reason:
        name = getattr(args, "server_name", None) or getattr(args, "host", "?")
        return (
            f"certificate verify failed (not issued for {name!r}) - pass --server-name "
            "with a name it is for, or --insecure (development server)"
        )
    if "self-signed" in reason or "self signed" in reason:
        reason = "self-signed"
    elif "local issuer" in reason:
        # What a dev server (``serve`` without --certificate) gets: its authority
        # lives only in the server's process, so --ca cannot name it.
        return (
            "certificate verify failed (issuer unknown: a development certificate?) - "
            "pass --insecure (a server without --certificate), or --ca FILE (the issuer's "
            "certificate)"
        )
    return f"certificate verify failed ({reason}) - {_TRUST_HINT}"


def _closed(exc: sansquic.ConnectionClosed, args: argparse.Namespace) -> str:
    """A connection that ended, by its cause and code."""
    code, reason = exc.error_code, exc.reason or "no reason given"
    if isinstance(exc, sansquic.PeerUnreachableError):
        return (
            f"nothing listens on {_where(args)} (ICMP port unreachable) - "
            "check the host and port, and that the server runs"
        )
    if isinstance(exc, sansquic.IdleTimeoutError):
        return "the connection went silent (idle timeout) - check the server still runs"
    if isinstance(exc, sansquic.StatelessResetError):
        return "the server no longer knows this connection (it restarted?) - connect again"
    if exc.application and code == CloseCode.AUTH_REJECTED:
        return f"authentication rejected ({reason}) - {_TOKEN_HINT}"
    if exc.application and code in (CloseCode.AUTH_TIMEOUT, CloseCode.AUTH_BUDGET_EXCEEDED):
        return f"the server requires a token ({reason}) - {_TOKEN_HINT}"
    if exc.application and code == CloseCode.AUTH_MALFORMED:
        if getattr(args, "token", None):
            return f"the auth handshake failed ({reason}) - does the server take tokens?"
        return f"the auth handshake failed ({reason}) - {_TOKEN_HINT}"
    if not exc.application and code in _CRYPTO_ERRORS:
        if isinstance(exc, sansquic.RemoteProtocolError):
            return _tls(exc, args)
        return f"the server refused the TLS handshake ({reason}) - check the server's settings"
    if isinstance(exc, sansquic.PeerClosedError):
        return f"the server closed the connection ({reason}, code {code:#x})"
    return f"{exc} - {_DEBUG_HINT}"


def _os_error(exc: OSError, args: argparse.Namespace) -> str:
    """A socket or file error, with what usually fixes it."""
    where = _where(args)
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve {getattr(args, 'host', '?')!r} ({exc.strerror}) - check the name"
    if exc.errno == errno.EADDRINUSE:
        return (
            f"cannot listen on {where}: the port is in use - stop the other server "
            "or pass --port N (0 picks a free port)"
        )
    if exc.errno == errno.EACCES and exc.filename is None:
        return f"cannot listen on {where}: permission denied - use a port above 1023"
    if exc.errno == errno.EADDRNOTAVAIL:
        return (
            f"cannot listen on {where}: not an address of this machine - "
            "pass --host 0.0.0.0 to listen on all"
        )
    if exc.filename is not None:
        return f"{exc.filename}: {exc.strerror} - check the path"
    return f"{exc.strerror or exc} - {_DEBUG_HINT}"


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    """The exceptions inside ``group`` (and the groups inside it), in order."""
    found: list[BaseException] = []
    for inner in group.exceptions:
        found += _leaves(inner) if isinstance(inner, BaseExceptionGroup) else [inner]
    return found


def explain(exc: BaseException, args: argparse.Namespace) -> str:
    """``exc`` as one line: what went wrong, then `` - `` and what to try."""
    if isinstance(exc, BaseExceptionGroup):
        # A task group's: the first failure is the story, the count says there were more.
        first, *rest = _leaves(exc) or [RuntimeError(str(exc))]
        more = f" (and {len(rest)} more failures)" if rest else ""
        return explain(first, args) + more
    if isinstance(exc, UsageError | MissingFramework):
        return str(exc)
    if isinstance(exc, sansquic.ConnectionClosed):
        return _closed(exc, args)
    if isinstance(exc, sansquic.ConfigError):
        if args.command == "connect":
            return f"{exc} - --ca takes a PEM certificate file"
        return f"{exc} - give a PEM certificate and its key ('sansquic cert' writes a dev pair)"
    if isinstance(exc, TimeoutError):
        timeout = getattr(args, "timeout", None)
        within = f" within {timeout:g} s" if timeout else ""
        return (
            f"no answer from {_where(args)}{within} (handshake timeout) - check the server "
            "runs and its UDP port is open (firewall)"
        )
    if isinstance(exc, OSError):
        return _os_error(exc, args)
    return f"{type(exc).__name__}: {exc} - {_DEBUG_HINT}"
