"""``sansquic swarm --browser``: the page a browser joins the swarm from, and its pieces.

The page (``swarm_agent.html``, plain JS) is served by a small ``http.server`` on
loopback (``http://127.0.0.1`` is a secure context, so WebTransport is allowed).
The coordinator's certificate is a short-lived ECDSA P-256 one, which the page pins
by its SHA-256 for WebTransport (``serverCertificateHashes`` takes at most 14
days); the WebSocket path needs the browser to accept it (a real certificate, or
Chromium's ``--ignore-certificate-errors-spki-list`` with :attr:`Pinned.spki`).
The server runs in a daemon thread whatever the runtime: it only hands out a file.
The page carries the browser agent's token (its subject ``browser``, ten minutes):
anyone who can read the loopback page can join as that agent, as on any dev server.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import http.server
import importlib.resources
import ipaddress
import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

__all__ = ["Pinned", "page", "pinned_certificate", "site"]

HOST = "127.0.0.1"
#: The longest validity ``serverCertificateHashes`` accepts is 14 days.
_VALIDITY = datetime.timedelta(days=10)
#: The most a page's report may be, bytes (anything longer is cut).
_MAX_REPORT = 2000


@dataclass(frozen=True)
class Pinned:
    """A certificate pair and the hashes a browser pins it by."""

    certificate: bytes
    private_key: bytes
    #: SHA-256 of the DER certificate (WebTransport's ``serverCertificateHashes``).
    sha256: bytes
    #: Base64 SHA-256 of the public key (Chromium's ``--ignore-certificate-errors-spki-list``).
    spki: str


def pinned_certificate(now: datetime.datetime | None = None) -> Pinned:
    """A fresh ECDSA P-256 certificate for 127.0.0.1 and localhost, valid 10 days."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, HOST)])
    start = (now or datetime.datetime.now(datetime.UTC)) - datetime.timedelta(hours=1)
    names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address(HOST))]
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + _VALIDITY)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .sign(key, hashes.SHA256())
    )
    spki = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return Pinned(
        certificate=cert.public_bytes(serialization.Encoding.PEM),
        private_key=key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        sha256=hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).digest(),
        spki=base64.b64encode(hashlib.sha256(spki).digest()).decode(),
    )


def page(
    *, name: str, token: str, webtransport_port: int, websocket_port: int, sha256: bytes
) -> bytes:
    """The agent page, with what it needs to join (its name, its token, where to go)."""
    config = {
        "name": name,
        "token": token,
        "webtransport": f"https://{HOST}:{webtransport_port}/swarm",
        "websocket": f"wss://{HOST}:{websocket_port}/swarm",
        "hash": list(sha256),
    }
    # "</" cannot end the script element early once escaped: the JSON stays inert.
    text = json.dumps(config).replace("</", "<\\/")
    template = importlib.resources.files(__package__).joinpath("swarm_agent.html").read_text()
    return template.replace("__CONFIG__", text).encode()


@contextmanager
def site(body: bytes, report: Callable[[str], object]) -> Iterator[str]:
    """Serve ``body`` at ``/`` on loopback (``report(text)`` for what the page POSTs to
    ``/report``) while the block runs; yields the page's URL."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def _ours(self) -> bool:
            # Only the page itself: a Host other than this server's is DNS rebinding
            # (another site reading the page's token), an Origin other than its own
            # another site posting reports.
            here = f"{HOST}:{self.server.server_port}"  # type: ignore[attr-defined]
            origin = self.headers.get("Origin")
            return self.headers.get("Host") == here and origin in (None, f"http://{here}")

        def do_GET(self) -> None:
            ours = self._ours() and self.path.split("?")[0] == "/"
            self._answer(body if ours else b"not found")

        def do_POST(self) -> None:
            if self.path != "/report" or not self._ours():
                self._answer(b"not found")
                return
            try:
                size = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                size = 0
            # Bounded both ways: a negative length would read until the client stops.
            size = max(0, min(size, _MAX_REPORT))
            # One line per report: the page cannot forge the swarm's own output lines.
            # Control characters (\r, terminal escapes) would let it overwrite them.
            text = self.rfile.read(size).decode(errors="replace")
            report("".join(c if c.isprintable() else " " for c in text))
            self._answer(b"ok")

        def _answer(self, data: bytes) -> None:
            self.send_response(404 if data == b"not found" else 200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:
            pass  # the swarm prints what matters

    httpd = http.server.ThreadingHTTPServer((HOST, 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{HOST}:{httpd.server_address[1]}/"
    finally:
        httpd.shutdown()
        httpd.server_close()
