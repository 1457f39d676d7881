"""The sansquic command: the demo, and the token and certificate tools."""

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sansquic_asyncio
from cryptography import x509
from sansquic_cli import main

import sansquic
from sansquic import tokens

#: Every ``sansquic demo --runtime``: one demo, written once, on each.
DEMO_RUNTIMES = ["asyncio", "trio", "anyio", "anyio-trio", "curio", "threads"]


@pytest.mark.parametrize("runtime", DEMO_RUNTIMES)
def test_demo_runs_and_reports_ok(runtime: str, capsys: pytest.CaptureFixture[str]) -> None:
    if runtime == "curio":
        pytest.importorskip(
            "sansquic_curio", reason="curio does not import here", exc_type=ImportError
        )
    assert main(["demo", "--runtime", runtime, "--seconds", "1.5", "--clients", "2"]) == 0
    out = " ".join(capsys.readouterr().out.split())  # the table wraps its caption anywhere
    assert "OK" in out and "critical" in out and "background" in out
    assert out.count("accepted as demo-agent") >= 2  # both clients' tokens
    assert "auth failures 0" in out and "FAILED" not in out


@pytest.mark.parametrize(
    ("runtime", "framework"),
    [("trio", "trio"), ("anyio", "anyio"), ("anyio-trio", "trio"), ("curio", "curio")],
)
def test_demo_without_its_framework_names_the_extra(runtime: str, framework: str) -> None:
    # A None entry in sys.modules makes "import trio" fail as if trio were not installed.
    code = (
        f"import sys; sys.modules[{framework!r}] = None; from sansquic_cli import main; "
        f"sys.exit(main(['demo', '--runtime', {runtime!r}]))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"sansquic demo: --runtime {runtime} needs {framework}: pip install 'sansquic[{framework}]'"
    ]


def test_token_command_signs_a_verifiable_token(capsys: pytest.CaptureFixture[str]) -> None:
    secret = "a cli secret of enough length"
    assert main(["token", "agent-9", "--key", secret, "--scope", "read", "--ttl", "60"]) == 0
    token = capsys.readouterr().out.strip()
    claims = tokens.TokenVerifier({"cli": secret.encode()}).verify(token, now=time.time())
    assert (claims.subject, claims.scopes) == ("agent-9", ("read",))


def test_cert_command_writes_a_usable_pair(tmp_path: Path) -> None:
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    assert (
        main(["cert", "--certificate", str(cert), "--key", str(key), "--name", "example.test"]) == 0
    )
    names = x509.load_pem_x509_certificate(cert.read_bytes()).extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    )
    assert "example.test" in names.value.get_values_for_type(x509.DNSName)
    assert key.stat().st_mode & 0o077 == 0  # the key is private to its owner
    sansquic.Config(certificate=cert, private_key=key)  # loads as a server pair


def test_serve_and_connect_echo_over_loopback() -> None:
    server = subprocess.Popen(
        [sys.executable, "-m", "sansquic_cli", "serve", "echo", "--port", "0", "--seconds", "20"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        banner = server.stdout.readline()  # "sansquic echo server on 127.0.0.1:PORT"
        port = banner.rsplit(":", 1)[1].strip()
        reply = subprocess.run(
            [
                sys.executable,
                "-m",
                "sansquic_cli",
                "connect",
                "127.0.0.1",
                port,
                "--insecure",
                "--server-name",
                "localhost",
            ],
            input=b"hello from stdin\n" * 1000,
            capture_output=True,
            timeout=20,
            check=True,
        )
        assert reply.stdout == b"hello from stdin\n" * 1000
    finally:
        server.terminate()
        server.wait(10)
        if server.stdout is not None:
            server.stdout.close()


@contextlib.contextmanager
def cli_server(mode: str) -> Iterator[tuple[subprocess.Popen[str], int]]:
    """``sansquic serve MODE`` in a process of its own, and its port."""
    server = subprocess.Popen(
        [sys.executable, "-m", "sansquic_cli", "serve", mode, "--port", "0", "--seconds", "60"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        yield server, int(server.stdout.readline().rsplit(":", 1)[1])
    finally:
        server.terminate()
        server.wait(10)
        if server.stdout is not None:
            server.stdout.close()


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS line")


CLIENT = sansquic.Config(verify_peer=False)  # the server is another process: its own dev authority


def test_serve_echo_streams_the_reply_before_the_request_ends() -> None:
    async def scenario(port: int) -> bytes:
        async with await sansquic_asyncio.connect(
            "127.0.0.1", port, config=CLIENT, server_name="localhost"
        ) as conn:
            stream = await conn.open_stream()
            await stream.send(b"e" * 200_000)  # no FIN: a buffering server answers nothing
            return await stream.receive(timeout=10)

    with cli_server("echo") as (_, port):
        first = asyncio.run(scenario(port))
    assert first and set(first) == {ord("e")}


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads RSS from /proc")
def test_serve_sink_holds_bounded_memory_whatever_the_peer_sends() -> None:
    chunk = os.urandom(1 << 20)

    async def scenario(port: int, pid: int) -> tuple[int, int]:
        async with await sansquic_asyncio.connect(
            "127.0.0.1", port, config=CLIENT, server_name="localhost"
        ) as conn:
            stream = await conn.open_stream()
            await stream.send(chunk * 4)
            before = _rss(pid)  # the server is warm: buffers and code paths in use
            for _ in range(64):  # 64 MiB more, never finished
                await stream.send(chunk)
            # One round trip on another stream: the sink has read everything before it.
            probe = await conn.open_stream()
            await probe.finish()
            assert await probe.receive(timeout=30) == b""
            return before, _rss(pid)

    with cli_server("sink") as (server, port):
        before, after = asyncio.run(scenario(port, server.pid))
    # The promise is the receive window: auto-tuning may grow this stream's window
    # to max_stream_window (16 MiB) and the sink may lag that far behind, plus
    # allocator slack. A sink that kept what it read would grow by all 64 MiB.
    bound = sansquic.Config().max_stream_window + (8 << 20)
    assert after - before < bound, f"the sink grew by {(after - before) >> 20} MiB"


def _qlog_files(directory: Path) -> dict[str, dict[str, object]]:
    return {path.name: json.loads(path.read_text()) for path in sorted(directory.glob("*.qlog"))}


@pytest.mark.parametrize("runtime", ["asyncio", "threads"])
def test_demo_qlog_writes_a_trace_per_connection_side(
    runtime: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["demo", "--runtime", runtime, "--seconds", "1", "--clients", "2"]
    assert main([*argv, "--qlog", str(tmp_path)]) == 0
    files = _qlog_files(tmp_path)
    assert sum(name.endswith("-client.qlog") for name in files) == 2
    assert sum(name.endswith("-server.qlog") for name in files) == 2
    assert all(document["qlog_version"] == "0.3" for document in files.values())


def test_serve_and_connect_write_qlog_traces(tmp_path: Path) -> None:
    server_dir, client_dir = tmp_path / "server", tmp_path / "client"
    cli = [sys.executable, "-m", "sansquic_cli"]
    server = subprocess.Popen(
        [*cli, "serve", "--port", "0", "--seconds", "20", "--qlog", str(server_dir)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        port = server.stdout.readline().rsplit(":", 1)[1].strip()
        subprocess.run(
            [*cli, "connect", "127.0.0.1", port, "--insecure", "--qlog", str(client_dir)],
            input=b"traced",
            capture_output=True,
            timeout=20,
            check=True,
        )
        assert [name.rsplit("-", 1)[1] for name in _qlog_files(client_dir)] == ["client.qlog"]
        deadline = time.monotonic() + 10  # the server's side ends once its close drained
        while not _qlog_files(server_dir) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert [name.rsplit("-", 1)[1] for name in _qlog_files(server_dir)] == ["server.qlog"]
    finally:
        server.terminate()
        server.wait(10)
        if server.stdout is not None:
            server.stdout.close()


@pytest.mark.parametrize("runtime", DEMO_RUNTIMES)
def test_swarm_gathers_every_reply_on_every_runtime(
    runtime: str, capsys: pytest.CaptureFixture[str]
) -> None:
    if runtime == "curio":
        pytest.importorskip(
            "sansquic_curio", reason="curio does not import here", exc_type=ImportError
        )
    assert main(["swarm", "--runtime", runtime, "--agents", "3", "--rounds", "2"]) == 0
    out = capsys.readouterr().out
    assert "3 agents joined: agent-0, agent-1, agent-2" in out
    assert "round 2: 3/3 replies" in out and "swarm OK: 3 agents, 2 rounds" in out


def test_swarm_refuses_a_join_that_is_not_the_token_subject() -> None:
    from types import SimpleNamespace

    from sansquic_cli import _swarm_async

    from sansquic import messaging

    sent: list[str] = []

    async def send(message_type: str, payload: bytes = b"") -> None:
        sent.append(message_type)

    identity = sansquic.Identity(subject="agent-1")
    peer = SimpleNamespace(
        session_id=b"s", connection=SimpleNamespace(identity=identity), send=send
    )
    coordinator = _swarm_async._Coordinator()
    for name in (b"agent-2", b"agent-1"):
        join = messaging.Envelope(id=1, type="swarm.join", timestamp=0.0, payload=name)
        asyncio.run(coordinator.join(peer, join))  # type: ignore[arg-type]
    assert coordinator.refused == ["agent-2"]
    assert coordinator.agents == {b"s": "agent-1"}
    assert sent == ["swarm.refused", "swarm.welcome"]
    # The same identity joining from a new session (a reloaded page) is one agent still.
    again = SimpleNamespace(session_id=b"t", connection=peer.connection, send=send)
    join = messaging.Envelope(id=1, type="swarm.join", timestamp=0.0, payload=b"agent-1")
    asyncio.run(coordinator.join(again, join))  # type: ignore[arg-type]
    assert coordinator.agents == {b"t": "agent-1"}


def test_the_browser_page_carries_its_config_inertly() -> None:
    import re

    from sansquic_cli import _browser

    token = "tok</script><script>alert(1)</script>"
    body = _browser.page(
        name="browser", token=token, webtransport_port=1, websocket_port=2, sha256=b"\x01\xff"
    ).decode()
    # The config is the one JSON script element, and the token cannot close it early.
    (config,) = re.findall(r'<script id="config" type="application/json">(.*?)</script>', body)
    assert json.loads(config) == {
        "name": "browser",
        "token": token,
        "webtransport": "https://127.0.0.1:1/swarm",
        "websocket": "wss://127.0.0.1:2/swarm",
        "hash": [1, 255],
    }
    assert "__CONFIG__" not in body


def test_the_browser_site_serves_the_page_and_one_line_per_report() -> None:
    import urllib.error
    import urllib.request

    from sansquic_cli import _browser

    reports: list[str] = []
    with _browser.site(b"<p>page</p>", reports.append) as url:
        with urllib.request.urlopen(url, timeout=10) as answer:
            assert answer.read() == b"<p>page</p>"
        post = urllib.request.Request(url + "report", data=b"line one\nswarm OK: forged")
        with urllib.request.urlopen(post, timeout=10) as answer:
            assert answer.status == 200
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(url + "elsewhere", timeout=10)
        assert info.value.code == 404
        info.value.close()
    assert reports == ["line one swarm OK: forged"]  # never a line of its own


def test_the_browser_certificate_is_pinnable() -> None:
    import datetime
    import hashlib

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from sansquic_cli import _browser

    pinned = _browser.pinned_certificate()
    cert = x509.load_pem_x509_certificate(pinned.certificate)
    # What serverCertificateHashes demands: ECDSA, at most 14 days, the DER's SHA-256.
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
    assert cert.not_valid_after_utc - cert.not_valid_before_utc <= datetime.timedelta(days=14)
    der = cert.public_bytes(serialization.Encoding.DER)
    assert pinned.sha256 == hashlib.sha256(der).digest()
