"""TCP and TLS for the WebSocket fallback, written once: non-blocking sockets, and TLS as
a sans-IO ``ssl.SSLObject`` over memory buffers.

Each runtime only waits for a socket to be readable or writable its own way
(``backend.wait_socket``); connecting, accepting, and every TLS record are here.
The certificate and trust anchors are those of :class:`sansquic.Config`.
"""

from __future__ import annotations

import contextlib
import os
import socket
import ssl
import tempfile
from collections.abc import Callable

import certifi

import sansquic

__all__ = [
    "Abort",
    "Aborted",
    "TlsPipe",
    "client_context",
    "server_context",
    "shutdown",
    "tcp_socket",
]

_READ = 65_536


class Aborted(Exception):
    """An attempt the race no longer needs was abandoned."""


class Abort:
    """A request to abandon a connection attempt: callbacks wake whatever it waits on."""

    def __init__(self) -> None:
        self.requested: bool = False
        self._callbacks: list[Callable[[], object]] = []

    def on_request(self, callback: Callable[[], object]) -> None:
        """Call ``callback()`` when (or, if already, now that) the abort is requested."""
        if self.requested:
            callback()
        else:
            self._callbacks.append(callback)

    def request(self) -> None:
        """Abandon the attempt (idempotent)."""
        if not self.requested:
            self.requested = True
            for callback in self._callbacks:
                callback()
            self._callbacks.clear()

    def check(self) -> None:
        """Raise :class:`Aborted` once requested."""
        if self.requested:
            raise Aborted


def tcp_socket(family: int) -> socket.socket:
    """A non-blocking TCP socket with Nagle off (each frame is sent as it comes)."""
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setblocking(False)
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def shutdown(sock: socket.socket) -> None:
    """Shut ``sock`` both ways: any task waiting on it wakes (to find it over)."""
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


def client_context(config: sansquic.Config) -> ssl.SSLContext:
    """TLS for a WebSocket client, verifying as the QUIC client does."""
    # Not create_default_context(): it loads the system store, and anchors given
    # would only add to it. Like the engines, trust exactly the anchors given, or
    # else certifi's bundle, so connect_any's fallback trusts no more than QUIC.
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # hostname check, CERT_REQUIRED
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if not config.verify_peer:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    elif (anchors := config.trust_anchors()) is not None:
        context.load_verify_locations(cadata=anchors.decode())
    else:
        context.load_verify_locations(cafile=certifi.where())
    context.set_alpn_protocols(["http/1.1"])
    return context


def server_context(config: sansquic.Config) -> ssl.SSLContext:
    """TLS for a WebSocket server, with ``config``'s certificate (or dev-mode pair)."""
    if config.certificate is None or config.private_key is None:
        raise sansquic.ConfigError("a WebSocket server needs a certificate (or dev_mode=True)")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.set_alpn_protocols(["http/1.1"])
    # ssl loads a chain only from files: written to a private temporary file, then removed.
    fd, path = tempfile.mkstemp(suffix=".pem")
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(config.certificate + b"\n" + config.private_key)
        context.load_cert_chain(path)
    finally:
        os.unlink(path)
    return context


class TlsPipe:
    """One TLS session over memory buffers: ciphertext in and out, plaintext in and out."""

    def __init__(
        self, context: ssl.SSLContext, *, server_side: bool, server_hostname: str | None = None
    ) -> None:
        self._incoming, self._outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self._tls = context.wrap_bio(
            self._incoming,
            self._outgoing,
            server_side=server_side,
            server_hostname=None if server_side else server_hostname,
        )
        self.eof: bool = False

    def handshake(self) -> bool:
        """Advance the handshake; whether it is complete (raises ``ssl.SSLError``)."""
        try:
            self._tls.do_handshake()
        except ssl.SSLWantReadError:
            return False
        return True

    def feed(self, data: bytes) -> None:
        """Ciphertext from the socket (``b""``: the peer closed TCP)."""
        if data:
            self._incoming.write(data)
        else:
            self._incoming.write_eof()

    def read(self) -> bytes:
        """All plaintext available now (sets :attr:`eof` at the end of the session)."""
        chunks = []
        while True:
            try:
                chunk = self._tls.read(_READ)
            except ssl.SSLWantReadError:
                break
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                self.eof = True
                break
            if not chunk:
                self.eof = True
                break
            chunks.append(chunk)
        return b"".join(chunks)

    def write(self, data: bytes) -> None:
        """Plaintext to send."""
        if data:
            self._tls.write(data)

    def outgoing(self) -> bytes:
        """Ciphertext to write to the socket."""
        return self._outgoing.read()
