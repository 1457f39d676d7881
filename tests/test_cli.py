"""The sansquic command: the demo, and the token and certificate tools."""

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
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


def test_the_browser_site_answers_only_its_own_page() -> None:
    import urllib.error
    import urllib.request

    from sansquic_cli import _browser

    reports: list[str] = []
    with _browser.site(b"<p>page</p>", reports.append) as url:
        hostile = [
            urllib.request.Request(url, headers={"Host": "evil.example"}),  # DNS rebinding
            urllib.request.Request(
                url + "report", data=b"forged", headers={"Origin": "http://evil.example"}
            ),
        ]
        for request in hostile:
            with pytest.raises(urllib.error.HTTPError) as info:
                urllib.request.urlopen(request, timeout=10)
            assert info.value.code == 404
            info.value.close()
        post = urllib.request.Request(url + "report", data=b"a\rswarm OK\x1b[2K: b")
        with urllib.request.urlopen(post, timeout=10) as answer:
            assert answer.status == 200
    assert reports == ["a swarm OK [2K: b"]  # no carriage return, no escape


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


# -- the command a person uses: one-line errors with a hint, help, version, Ctrl-C --------

#: The command, as the tests run it.
CLI = [sys.executable, "-m", "sansquic_cli"]
#: The token secret of ``auth_server``.
SECRET = "a secret of enough length"


def run_cli(
    *argv: str, stdin: bytes = b"", timeout: float = 30
) -> subprocess.CompletedProcess[bytes]:
    """The real command, in a process of its own."""
    return subprocess.run(
        [sys.executable, "-m", "sansquic_cli", *argv],
        input=stdin,
        capture_output=True,
        timeout=timeout,
    )


def run_clis(
    *argvs: list[str], stdin: bytes = b"let me in"
) -> list[subprocess.CompletedProcess[bytes]]:
    """Several runs of the command side by side, each given ``stdin``."""
    started = [
        subprocess.Popen(
            [sys.executable, "-m", "sansquic_cli", *argv],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for argv in argvs
    ]
    results = []
    for argv, process in zip(argvs, started, strict=True):
        out, err = process.communicate(stdin, timeout=30)
        results.append(subprocess.CompletedProcess(argv, process.returncode, out, err))
    return results


def one_line(result: subprocess.CompletedProcess[bytes], status: int = 1) -> str:
    """The one stderr line of a failed command, checked to be just that."""
    err = result.stderr.decode()
    assert result.returncode == status, err
    assert "Traceback" not in err
    (line,) = err.splitlines()
    assert " - " in line, f"no hint in {line!r}"
    return line


@pytest.fixture
def pem_files(tmp_path: Path) -> dict[str, str]:
    """A development pair, a file that is not PEM, and a path that does not exist."""
    cert, key, text = tmp_path / "c.pem", tmp_path / "k.pem", tmp_path / "notes.txt"
    assert main(["cert", "--certificate", str(cert), "--key", str(key)]) == 0
    text.write_text("not a certificate\n")
    return {"CERT": str(cert), "KEY": str(key), "TEXT": str(text), "NONE": str(tmp_path / "x")}


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        ([], "sansquic: the following arguments are required: COMMAND - see 'sansquic --help'"),
        (["nosuch"], "sansquic: argument COMMAND: invalid choice: 'nosuch'"),
        (["connect", "localhost", "x"], "argument port: invalid port (0-65535) value: 'x'"),
        (["connect", "localhost", "70000"], "argument port: invalid port (0-65535) value"),
        (["demo", "--seconds", "-1"], "argument --seconds: invalid positive float value: '-1'"),
        (["swarm", "--agents", "0"], "argument --agents: invalid positive int value: '0'"),
        (["connect", "h", "--ca", "f", "--insecure"], "--insecure: not allowed with argument --ca"),
        (["serve", "--log-level", "loud"], "argument --log-level: invalid choice: 'loud'"),
    ],
)
def test_a_bad_argument_is_one_line_with_a_hint(argv: list[str], expected: str) -> None:
    line = one_line(run_cli(*argv), status=2)
    assert expected in line and line.endswith("--help'")


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["serve", "--key", "KEY"], "sansquic serve: --key needs --certificate - pass both"),
        (["serve", "--certificate", "CERT"], "sansquic serve: --certificate needs --key"),
        (["serve", "--token-key", "cli"], "--token-key is 3 bytes, tokens need a secret of 16"),
        (["token", "agent", "--key", "short"], "sansquic token: --key is 5 bytes"),
        (["serve", "--certificate", "NONE", "--key", "KEY"], "No such file or directory"),
        (["serve", "--certificate", "TEXT", "--key", "KEY"], "TEXT: not a PEM file"),
        (["connect", "localhost", "--ca", "TEXT"], "--ca TEXT: not a PEM file"),
    ],
)
def test_arguments_that_cannot_work_are_one_line_with_a_hint(
    argv: list[str], expected: str, pem_files: dict[str, str]
) -> None:
    paths = {path: name for name, path in pem_files.items()}
    line = one_line(run_cli(*(pem_files.get(arg, arg) for arg in argv)), status=2)
    for path, name in paths.items():
        line = line.replace(path, name)
    assert expected in line


def test_a_key_that_is_not_the_certificates_pair_is_one_line(pem_files: dict[str, str]) -> None:
    cert = pem_files["CERT"]  # a certificate where the key should be
    line = one_line(run_cli("serve", "--certificate", cert, "--key", cert))
    assert "cannot load a certificate or key" in line and "'sansquic cert'" in line


def test_connect_input_errors_are_one_line(pem_files: dict[str, str]) -> None:
    line = one_line(run_cli("connect", "127.0.0.1", "--file", pem_files["NONE"]))
    assert line.endswith("No such file or directory - check the path")
    line = one_line(run_cli("connect", "no-such-host.invalid", "--insecure"))
    assert "cannot resolve 'no-such-host.invalid'" in line and "check the name" in line


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.skipif(sys.platform != "linux", reason="only Linux reports ICMP on a UDP socket")
def test_connect_to_a_closed_port_fails_on_the_icmp_not_the_timeout() -> None:
    port = _free_udp_port()
    line = one_line(run_cli("connect", "127.0.0.1", str(port), "--timeout", "60"), status=1)
    assert line == (
        f"sansquic connect: nothing listens on 127.0.0.1:{port} (ICMP port unreachable) - "
        "check the host and port, and that the server runs"
    )


@contextlib.contextmanager
def silent_peer() -> Iterator[socket.socket]:
    """A bound UDP socket that never answers: no ICMP either, so only a timeout helps."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock


def test_a_handshake_timeout_is_one_line() -> None:
    with silent_peer() as peer:
        port = peer.getsockname()[1]
        line = one_line(run_cli("connect", "127.0.0.1", str(port), "--timeout", "0.5"))
    assert line.startswith(f"sansquic connect: no answer from 127.0.0.1:{port} within 0.5 s")
    assert "(handshake timeout) - check the server runs" in line


def test_serve_on_a_port_in_use_is_one_line() -> None:
    with silent_peer() as taken:
        port = taken.getsockname()[1]
        line = one_line(run_cli("serve", "--port", str(port), "--seconds", "5"))
    assert line == (
        f"sansquic serve: cannot listen on 127.0.0.1:{port}: the port is in use - "
        "stop the other server or pass --port N (0 picks a free port)"
    )


def test_debug_adds_the_traceback() -> None:
    with silent_peer() as peer:
        port = str(peer.getsockname()[1])
        result = run_cli("--debug", "connect", "127.0.0.1", port, "--timeout", "0.3")
        after = run_cli("connect", "127.0.0.1", port, "--timeout", "0.3", "--debug")
    for run in (result, after):  # before or after the command, alike
        err = run.stderr.decode()
        assert run.returncode == 1 and err.startswith("Traceback (most recent call last):")
        assert "TimeoutError" in err
        assert err.splitlines()[-1].startswith("sansquic connect: no answer from 127.0.0.1")


@pytest.fixture(scope="module")
def auth_server() -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """``sansquic serve --token-key SECRET`` (dev certificate), its port; stopped by Ctrl-C
    by the test that reads its log, else terminated."""
    cli = [sys.executable, "-m", "sansquic_cli"]
    server = subprocess.Popen(
        [*cli, "serve", "--port", "0", "--token-key", SECRET, "--seconds", "120"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert server.stdout is not None
        yield server, int(server.stdout.readline().rsplit(b":", 1)[1])
    finally:
        if server.poll() is None:
            server.terminate()
        server.communicate(timeout=10)


def test_a_self_signed_server_without_trust_is_one_line(
    auth_server: tuple[subprocess.Popen[bytes], int],
) -> None:
    line = one_line(run_cli("connect", "127.0.0.1", str(auth_server[1])))
    assert line == (
        "sansquic connect: certificate verify failed (issuer unknown: a development "
        "certificate?) - pass --insecure (a server without --certificate), or --ca FILE "
        "(the issuer's certificate)"
    )


def test_trusting_another_certificate_is_one_line(
    auth_server: tuple[subprocess.Popen[bytes], int], tmp_path: Path
) -> None:
    cert = tmp_path / "other.pem"
    assert main(["cert", "--certificate", str(cert), "--key", str(tmp_path / "k")]) == 0
    line = one_line(run_cli("connect", "127.0.0.1", str(auth_server[1]), "--ca", str(cert)))
    assert line.startswith("sansquic connect: certificate verify failed (")
    assert "--insecure" in line and "--ca FILE" in line
    port = str(auth_server[1])
    line = one_line(run_cli("connect", "127.0.0.1", port, "--server-name", "other.test"))
    assert line == (
        "sansquic connect: certificate verify failed (not issued for 'other.test') - "
        "pass --server-name with a name it is for, or --insecure (development server)"
    )


def test_auth_rejected_and_missing_are_one_line_and_logged(
    auth_server: tuple[subprocess.Popen[bytes], int],
) -> None:
    server, port = auth_server
    insecure = ("connect", "127.0.0.1", str(port), "--insecure")
    token = tokens.TokenSigner({"cli": SECRET.encode()}, key_id="cli").sign(
        "agent-7", ttl=60, now=time.time()
    )
    forged, missing, accepted = run_clis(  # at once: each starts in a process of its own
        [*insecure, "--token", "forged"], [*insecure], [*insecure, "--token", token]
    )
    assert one_line(forged) == (
        "sansquic connect: authentication rejected (not a sansquic token) - pass --token "
        "(sansquic token SUBJECT --key SECRET, the server's --token-key)"
    )
    line = one_line(missing)  # no token at all
    assert line.startswith("sansquic connect: the auth handshake failed (") and "--token" in line
    assert missing.stdout == b""  # not the server's auth answer, as if it were the reply
    assert (accepted.returncode, accepted.stdout, accepted.stderr) == (0, b"let me in", b"")

    time.sleep(1.5)  # the server notices failures its authenticator never saw once a second
    server.send_signal(signal.SIGINT)  # Ctrl-C: the server closes and says so, no traceback
    _, err = server.communicate(timeout=20)
    log = err.decode()
    assert server.returncode == 130 and "Traceback" not in log, log
    assert log.splitlines()[-1] == "sansquic serve: interrupted"
    assert "auth rejected: not a sansquic token" in log
    assert "1 connection(s) failed auth with no or malformed credentials" in log
    assert "auth accepted: agent-7" in log and "connected as agent-7" in log
    assert "closed after" in log and "9 bytes in" in log


def test_ctrl_c_during_a_connect_exits_130_without_a_traceback() -> None:
    with silent_peer() as peer:
        port = str(peer.getsockname()[1])
        client = subprocess.Popen(
            [sys.executable, "-m", "sansquic_cli", "connect", "127.0.0.1", port, "--insecure"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        peer.settimeout(20)
        peer.recvfrom(2048)  # its Initial: the client is in the handshake now
        client.send_signal(signal.SIGINT)
        _, err = client.communicate(timeout=20)
    assert (client.returncode, err) == (130, b"sansquic connect: interrupted\n")


@pytest.mark.parametrize("runtime", ["trio", "curio", "threads"])
def test_ctrl_c_ends_the_demo_on_any_runtime(runtime: str) -> None:
    # trio raises it inside a task group, curio anywhere, threads leave joinless.
    if runtime == "curio":
        pytest.importorskip(
            "sansquic_curio", reason="curio does not import here", exc_type=ImportError
        )
    argv = ["demo", "--runtime", runtime, "--seconds", "30", "--clients", "1"]
    demo = subprocess.Popen(
        [sys.executable, "-m", "sansquic_cli", *argv],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    time.sleep(2)  # about when it runs; earlier or later, Ctrl-C must end it alike
    demo.send_signal(signal.SIGINT)
    _, err = demo.communicate(timeout=20)
    assert demo.returncode == 130 and err.decode().endswith(": interrupted\n"), err.decode()
    assert len(err.splitlines()) == 1


def test_without_rich_the_command_says_what_to_install() -> None:
    code = "import sys; sys.modules['rich'] = None; from sansquic_cli import main; sys.exit(main())"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert (result.returncode, result.stderr) == (
        1,
        "sansquic: the command needs rich, which is not installed - pip install 'sansquic[cli]'\n",
    )


def test_version() -> None:
    result = run_cli("--version")
    assert result.returncode == 0
    assert result.stdout.decode().startswith(f"sansquic {sansquic.__version__} (aioquic ")


def test_help_shows_every_default() -> None:
    from sansquic_cli import _parser

    top = _parser.parser()
    (commands,) = [a for a in top._actions if isinstance(a, argparse._SubParsersAction)]
    assert set(commands.choices) == {"demo", "bench", "swarm", "serve", "connect", "token", "cert"}
    for name, sub in commands.choices.items():
        formatter = sub._get_formatter()
        for action in sub._actions:
            if action.help in (None, argparse.SUPPRESS) or action.required:
                continue
            if action.nargs == 0:  # a flag (--help, --insecure, --debug): nothing to show
                continue
            shown = formatter._expand_help(action)
            assert "default" in shown, f"sansquic {name} {action.dest}: {shown!r}"
        if name == "serve":
            text = " ".join(sub.format_help().split())
            assert "(default: 4433)" in text and "(default: info)" in text


def test_bench_shows_a_summary_table() -> None:
    result = run_cli("bench", "--seconds", "0.3", timeout=60)
    out = result.stdout.decode()
    assert result.returncode == 0, result.stderr.decode()
    assert "sansquic bench: asyncio" in out
    for row in ("handshake", "round trip", "throughput"):
        assert row in out
    assert "MB/s" in out and " ms " in out and "none completed" not in out


def test_serve_on_an_address_not_of_this_machine_is_one_line() -> None:
    line = one_line(run_cli("serve", "--host", "192.0.2.1", "--port", "0"))  # TEST-NET-1
    assert line == (
        "sansquic serve: cannot listen on 192.0.2.1:0: not an address of this machine - "
        "pass --host 0.0.0.0 to listen on all"
    )


def test_a_reader_that_goes_away_ends_connect_quietly() -> None:
    with cli_server("echo") as (_, port):
        client = subprocess.Popen(
            [*CLI, "connect", "127.0.0.1", str(port), "--insecure"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert client.stdout is not None and client.stdin is not None
        client.stdout.close()  # `sansquic connect ... | head -c0`: nobody reads the reply
        _, err = client.communicate(b"x" * 100_000, timeout=30)
    assert (client.returncode, err) == (141, b"")


def _args(**values: object) -> argparse.Namespace:
    return argparse.Namespace(**{"command": "connect", "host": "h", "port": 1, **values})


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (
            sansquic.IdleTimeoutError(0, "idle timeout", application=False),
            "the connection went silent (idle timeout) - check the server still runs",
        ),
        (
            sansquic.StatelessResetError(0, "stateless reset", application=False),
            "the server no longer knows this connection (it restarted?) - connect again",
        ),
        (
            sansquic.PeerClosedError(0x5351_0003, "no auth in time", application=True),
            "the server requires a token (no auth in time) - pass --token",
        ),
        (
            sansquic.PeerClosedError(7, "going away", application=True),
            "the server closed the connection (going away, code 0x7)",
        ),
        (
            sansquic.PeerClosedError(0x128, "handshake failure", application=False),
            "the server refused the TLS handshake (handshake failure) - check",
        ),
        (
            ExceptionGroup("tasks", [TimeoutError(), ValueError("x")]),
            "no answer from h:1 (handshake timeout) - check the server runs and its UDP port "
            "is open (firewall) (and 1 more failures)",
        ),
        (RuntimeError("boom"), "RuntimeError: boom - rerun with --debug for the traceback"),
    ],
)
def test_every_close_cause_reads_as_one_line(error: BaseException, expected: str) -> None:
    from sansquic_cli._explain import explain

    line = explain(error, _args())
    assert expected in line and "\n" not in line
