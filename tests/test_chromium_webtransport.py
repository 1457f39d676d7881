"""A real browser: headless chromium opens a WebTransport session to a sansquic server.

The page (served by a local http.server, a secure context on 127.0.0.1) pins
the server's short-lived ECDSA P-256 certificate by its SHA-256 hash, echoes
on a bidirectional stream, a unidirectional stream and a datagram, closes the
session and navigates to ``/result?...``, which the HTTP server records.
Skipped, saying so, when no chromium is installed (``apt-get install chromium``).
"""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import queue
import shutil
import signal
import subprocess
import tempfile
import threading
import urllib.parse
from collections.abc import Iterator

import pytest
import sansquic_threads
from sansquic_cli import _browser
from sansquic_runtime import _wt_sync

import sansquic

CHROMIUM = next(
    (p for name in ("chromium", "chromium-browser", "google-chrome") if (p := shutil.which(name))),
    None,
)
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (apt-get install -y chromium)"
)
TIMEOUT = 60.0  # the browser's whole run, start-up included


def short_lived_certificate() -> tuple[bytes, bytes, bytes]:
    """PEM certificate, PEM key, and the DER certificate's SHA-256 (what the page pins):
    the swarm's browser certificate, made to serverCertificateHashes' rules."""
    pinned = _browser.pinned_certificate()
    return pinned.certificate, pinned.private_key, pinned.sha256


PAGE = """<!doctype html><meta charset="utf-8"><title>wt</title><script>
const enc = (s) => new TextEncoder().encode(s), dec = (b) => new TextDecoder().decode(b);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
async function readAll(readable) {
  const reader = readable.getReader(); let out = "";
  for (;;) { const {value, done} = await reader.read(); if (done) return out; out += dec(value); }
}
function report(params) { location.href = "/result?" + new URLSearchParams(params); }
(async () => {
  try {
    const wt = new WebTransport("https://127.0.0.1:%(port)d/echo?token=%(token)s",
      {serverCertificateHashes: [{algorithm: "sha-256", value: new Uint8Array(%(hash)s)}]});
    await wt.ready;
    const bidiStream = await wt.createBidirectionalStream();
    const bw = bidiStream.writable.getWriter();
    await bw.write(enc("bidi-hello")); await bw.close();
    const bidi = await readAll(bidiStream.readable);
    const uniOut = await wt.createUnidirectionalStream();
    const uw = uniOut.getWriter(); await uw.write(enc("uni-hello")); await uw.close();
    const incoming = await wt.incomingUnidirectionalStreams.getReader().read();
    const uni = await readAll(incoming.value);
    const dw = wt.datagrams.writable.getWriter();
    const pending = wt.datagrams.readable.getReader().read();
    let dgram = null;
    for (let i = 0; i < 25 && dgram === null; i++) {  // datagrams may be lost: resend
      await dw.write(enc("dgram-hello"));
      dgram = await Promise.race([pending.then((r) => dec(r.value)), sleep(200).then(() => null)]);
    }
    wt.close({closeCode: 5, reason: "done"});
    await wt.closed;
    report({bidi, uni, dgram});
  } catch (e) { report({error: String(e)}); }
})();
</script>"""


class _Site(http.server.BaseHTTPRequestHandler):
    page = b""
    results: queue.Queue[dict[str, str]] = queue.Queue()

    def do_GET(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        if url.path == "/result":
            self.results.put(dict(urllib.parse.parse_qsl(url.query)))
        body = self.page if url.path == "/" else b"ok"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def _echo(session: _wt_sync.WebTransportSession) -> None:
    """Echo each stream (bidi on itself, uni on a new uni stream) and each datagram."""

    def datagrams() -> None:
        with contextlib.suppress(sansquic.ConnectionClosed):
            while True:
                session.send_datagram(session.receive_datagram())

    threading.Thread(target=datagrams, daemon=True).start()
    with contextlib.suppress(sansquic.ConnectionClosed):
        while True:
            stream = session.accept_stream()
            data = stream.read_all(timeout=10)
            if stream.id & 2:
                stream = session.open_stream(bidirectional=False)
            stream.send(data)
            stream.finish()


@contextlib.contextmanager
def _site(page: str) -> Iterator[tuple[int, queue.Queue[dict[str, str]]]]:
    handler = type("Site", (_Site,), {"page": page.encode(), "results": queue.Queue()})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield httpd.server_address[1], handler.results
    finally:
        httpd.shutdown()
        httpd.server_close()


def _run_chromium(url: str, results: queue.Queue[dict[str, str]]) -> dict[str, str]:
    assert CHROMIUM is not None
    # Chromium's helpers may still be writing the profile as it goes: ignore that at cleanup.
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as profile:
        args = [
            CHROMIUM,
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-extensions",
            f"--user-data-dir={profile}",
            "--enable-logging=stderr",
            url,
        ]
        with tempfile.TemporaryFile() as log:
            proc = subprocess.Popen(
                args,
                stdout=log,
                stderr=log,
                env={**os.environ, "HOME": profile},
                start_new_session=True,  # its own process group: the helpers end with it
            )
            try:
                return results.get(timeout=TIMEOUT)
            except queue.Empty:
                log.seek(0)
                tail = log.read()[-3000:].decode(errors="replace")
                raise AssertionError(f"chromium reported nothing in {TIMEOUT}s:\n{tail}") from None
            finally:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)


@pytest.mark.parametrize("token", ["letmein", "wrong"])
def test_chromium_echoes_over_webtransport(token: str) -> None:
    cert, key, digest = short_lived_certificate()
    config = sansquic.Config(certificate=cert, private_key=key, alpn=("h3",), idle_timeout=30.0)
    decided: list[tuple[bytes, str]] = []
    sessions: list[str] = []

    def authenticator(request: sansquic.AuthRequest, address: object, now: float) -> object:
        decided.append((request.credentials, request.metadata["path"]))
        if request.credentials == b"letmein":
            return sansquic.Identity(subject="browser")
        return sansquic.AuthRejection()

    def on_session(session: _wt_sync.WebTransportSession) -> None:
        sessions.append(session.path)
        _echo(session)

    handler = _wt_sync.webtransport_handler(on_session, authenticator=authenticator)  # type: ignore[arg-type]
    with sansquic_threads.serve(handler, "127.0.0.1", 0, config=config) as server:
        port = server.address[1]
        page = PAGE % {"port": port, "token": token, "hash": json.dumps(list(digest))}
        with _site(page) as (http_port, results):
            result = _run_chromium(f"http://127.0.0.1:{http_port}/", results)
    path = "/echo"  # the token query parameter is a secret: stripped from the path
    assert decided == [(token.encode(), path)]
    if token == "letmein":
        assert result == {"bidi": "bidi-hello", "uni": "uni-hello", "dgram": "dgram-hello"}
        assert sessions == [path]
    else:
        # Refused with 403: the browser's handshake fails and no session reaches the app.
        assert "handshake failed" in result.get("error", ""), result
        assert sessions == []
