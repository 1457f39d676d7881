"""The independent peers: aioquic's example programs (from its sdist) and ngtcp2's.

Each peer runs as a subprocess of its own. A peer says which cases it cannot
take part in (``unsupported``), and why, so the matrix shows it.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from .spec import Case

__all__ = [
    "AioquicExamples",
    "Ngtcp2",
    "Peer",
    "PeerLog",
    "ServerProcess",
    "fetch_aioquic_examples",
]

_REPO = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "sansquic-interop"
_START_TIMEOUT = 15.0


@dataclass
class ServerProcess:
    """A peer server running in a subprocess, and where its output goes."""

    process: subprocess.Popen[bytes]
    address: tuple[str, int]
    log: Path
    qlog: Path | None = None

    def stop(self, connections: int = 0) -> PeerLog:
        """End the server and return its log, once the qlog of each of ``connections``
        is written (the server writes it when a connection ends, after its closing
        period) or 5 s passed."""
        deadline = time.monotonic() + 5.0
        while (
            self.qlog is not None
            and _complete_qlogs(self.qlog) < connections
            and time.monotonic() < deadline
            and self.process.poll() is None
        ):
            time.sleep(0.05)
        self.process.terminate()
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)
        return PeerLog(self.log.read_text(errors="replace"), read_qlogs(self.qlog))


@dataclass
class PeerLog:
    """A peer's output and the qlog events it wrote (aioquic's examples write qlog)."""

    text: str
    events: list[dict[str, Any]]


def _complete_qlogs(folder: Path) -> int:
    """How many qlog files in ``folder`` are whole JSON documents (written to the end)."""
    count = 0
    for path in folder.glob("*.qlog"):
        try:
            json.loads(path.read_text())
            count += 1
        except ValueError:
            continue
    return count


def read_qlogs(folder: Path | None) -> list[dict[str, Any]]:
    """Every event of every qlog file in ``folder``, in file then time order."""
    events: list[dict[str, Any]] = []
    for path in sorted(folder.glob("*.qlog")) if folder is not None else []:
        try:
            for trace in json.loads(path.read_text()).get("traces", []):
                events.extend(trace.get("events", []))
        except (ValueError, AttributeError):
            continue  # a qlog cut short by the process ending
    return events


class Peer(Protocol):
    """An hq-interop implementation nobody here wrote."""

    name: str
    #: The application protocol it speaks: "hq-interop" or "h3".
    alpn: str

    def unavailable(self) -> str | None:
        """Why this peer cannot run at all here (not installed, ...), or None."""
        ...

    def key_update_seen(self, log: PeerLog) -> str | None:
        """None if ``log`` shows a 1-RTT key update that both sides went through, else why not."""
        ...

    def unsupported(self, case: Case, role: str) -> str | None:
        """Why this peer cannot play ``role`` ("client"/"server") in ``case``, or None."""
        ...

    def serve(self, case: Case, www: Path, host: str, work: Path) -> ServerProcess:
        """Start a server for ``case`` serving the files in ``www``."""
        ...

    def fetch(
        self, case: Case, address: tuple[str, int], paths: list[str], out: Path, work: Path
    ) -> tuple[int, PeerLog]:
        """Fetch ``paths`` in one connection into ``out``: (exit status, log)."""
        ...


def _free_port(host: str) -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _start_bound(
    command: Callable[[int], list[str]], host: str, log: Path, env: dict[str, str], work: Path
) -> tuple[subprocess.Popen[bytes], int]:
    """Start a server on a free port; again on another if it exits at once (another
    process can take the port between our probe and its bind on a busy machine)."""
    for attempt in range(3):
        port = _free_port(host)
        process = _start(command(port), log, env, work)
        try:
            _wait_bound(host, port, process)
            return process, port
        except RuntimeError:
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


def _wait_bound(host: str, port: int, process: subprocess.Popen[bytes]) -> None:
    """Wait until something holds ``host:port`` (the server bound it) or it exits."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    deadline = time.monotonic() + _START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"peer server exited with status {process.returncode}")
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            try:
                sock.bind((host, port))
            except OSError:
                return
        time.sleep(0.05)
    raise RuntimeError(f"peer server did not bind {host}:{port} in {_START_TIMEOUT} s")


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _start(
    command: list[str], log: Path, env: dict[str, str], cwd: Path
) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd)


def _run(command: list[str], log: Path, env: dict[str, str], cwd: Path, timeout: float) -> int:
    with log.open("wb") as out:
        try:
            return subprocess.run(
                command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd, timeout=timeout
            ).returncode
        except subprocess.TimeoutExpired:
            return -1


def _dev_pair(work: Path) -> tuple[Path, Path]:
    import sansquic

    pair = sansquic.make_dev_certificate()
    cert, key = work / "cert.pem", work / "key.pem"
    cert.write_bytes(pair.certificate)
    key.write_bytes(pair.private_key)
    return cert, key


def fetch_aioquic_examples(cache: Path = CACHE) -> Path | None:
    """The examples folder of the installed aioquic's sdist, downloaded once with pip."""
    version = importlib.metadata.version("aioquic")
    target = cache / f"aioquic-{version}" / "examples"
    if (target / "http3_server.py").exists():
        return target
    with tempfile.TemporaryDirectory() as tmp:
        done = subprocess.run(
            [
                *(sys.executable, "-m", "pip", "download", f"aioquic=={version}"),
                *("--no-binary", ":all:", "--no-deps", "-d", tmp, "-q"),
            ],
            capture_output=True,
            timeout=300,
        )
        sdists = list(Path(tmp).glob("aioquic-*.tar.gz"))
        if done.returncode != 0 or not sdists:
            return None
        with tarfile.open(sdists[0]) as tar:
            members = [m for m in tar.getmembers() if "/examples/" in m.name]
            tar.extractall(cache, members=members, filter="data")
    return target if (target / "http3_server.py").exists() else None


class AioquicExamples:
    """aioquic's ``examples/http3_server.py`` and ``http3_client.py``, in hq-interop mode."""

    name = "aioquic"
    alpn = "hq-interop"

    def __init__(self, examples: Path | None, extra_path: str | None = None) -> None:
        self.examples = examples
        # Where the examples' own imports (wsproto) live when not in this environment.
        if extra_path is None:
            extra_path = os.environ.get("INTEROP_EXTRA_PATH", "")
        self.extra_path = extra_path

    def unavailable(self) -> str | None:
        if self.examples is None:
            return "not installed (aioquic's sdist examples could not be fetched)"
        if importlib.util.find_spec("wsproto") is None and not self.extra_path:
            return "not installed (the examples import wsproto: pip install wsproto)"
        return None

    def unsupported(self, case: Case, role: str) -> str | None:
        # The example server takes no cipher or version options, but the client's
        # choice decides both and aioquic's defaults accept v1, v2 and all suites;
        # the client has options for the rest, and the server follows a key update.
        return None

    def key_update_seen(self, log: PeerLog) -> str | None:
        # aioquic's qlog logs every key update with its trigger: this side
        # started one (local_update) or followed sansquic's (remote_update).
        # Once a side updated, packets under the old keys no longer open, so
        # 1-RTT packets still received afterwards show sansquic moved too.
        updates = [
            e["time"]
            for e in log.events
            if e.get("name") == "security:key_updated"
            and e.get("data", {}).get("trigger") in ("local_update", "remote_update")
        ]
        if not updates:
            return "the peer's qlog shows no 1-RTT key update"
        if not any(
            e.get("name") == "transport:packet_received"
            and e.get("data", {}).get("header", {}).get("packet_type") == "1RTT"
            and e["time"] > min(updates)
            for e in log.events
        ):
            return "the peer received no 1-RTT packet after the key update"
        return None

    def _env(self, www: Path | None = None) -> dict[str, str]:
        assert self.examples is not None
        # The examples folder has an interop.py of its own, so the app comes from
        # interop/asgi, not from this package.
        paths = [
            str(self.examples),
            str(_REPO / "interop" / "asgi"),
            self.extra_path,
            os.environ.get("PYTHONPATH", ""),
        ]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in paths if p))
        if www is not None:
            env["INTEROP_WWW"] = str(www)
        return env

    def serve(self, case: Case, www: Path, host: str, work: Path) -> ServerProcess:
        assert self.examples is not None
        cert, key = _dev_pair(work)
        (work / "server-qlog").mkdir(exist_ok=True)

        def command(port: int) -> list[str]:
            line = [sys.executable, str(self.examples / "http3_server.py")]  # type: ignore[operator]
            line += ["-c", str(cert), "-k", str(key), "--host", host, "--port", str(port)]
            line += ["-q", str(work / "server-qlog"), "-v"]
            if case.retry:
                line.append("--retry")
            return [*line, "interop_files:app"]

        log = work / "aioquic-server.log"
        process, port = _start_bound(command, host, log, self._env(www), work)
        return ServerProcess(process, (host, port), log, work / "server-qlog")

    def fetch(
        self, case: Case, address: tuple[str, int], paths: list[str], out: Path, work: Path
    ) -> tuple[int, PeerLog]:
        assert self.examples is not None
        qlog = work / f"client-qlog-{time.monotonic_ns()}"
        qlog.mkdir()
        command = [sys.executable, str(self.examples / "http3_client.py")]
        command += ["--legacy-http", "--insecure", "--output-dir", str(out)]
        command += ["-q", str(qlog), "-v"]
        if case.resume or case.zero_rtt:
            command += ["--session-ticket", str(work / "ticket.pickle")]
        if case.zero_rtt:
            command.append("--zero-rtt")
        if case.key_update:
            command.append("--key-update")
        if case.version == "v2":
            command.append("--negotiate-v2")
        if case.cipher is not None:
            command += ["--cipher-suites", case.cipher]
        base = f"https://{_url_host(address[0])}:{address[1]}"
        command += [base + path for path in paths]
        log = work / f"aioquic-client-{time.monotonic_ns()}.log"
        status = _run(command, log, self._env(), work, case.timeout)
        return status, PeerLog(log.read_text(errors="replace"), read_qlogs(qlog))


class Ngtcp2:
    """Debian's ngtcp2 examples (``gtlsclient`` / ``gtlsserver``), when installed.

    Debian builds them from ngtcp2's HTTP/3 examples (ALPN ``h3`` over
    nghttp3); the hq-interop ones are not packaged, so sansquic's side speaks
    HTTP/3 with them (:mod:`interop.h3`).
    """

    name = "ngtcp2"
    alpn = "h3"
    _CHACHA = "NORMAL:-VERS-ALL:+VERS-TLS1.3:-CIPHER-ALL:+CHACHA20-POLY1305"

    def __init__(self) -> None:
        self.client = shutil.which("gtlsclient")
        sbin = Path("/usr/sbin/gtlsserver")
        self.server = shutil.which("gtlsserver") or (str(sbin) if sbin.exists() else None)

    def unavailable(self) -> str | None:
        if self.client is None or self.server is None:
            return "not installed (apt-get install ngtcp2-client ngtcp2-server)"
        return None

    def unsupported(self, case: Case, role: str) -> str | None:
        if case.version == "v2":
            return "ngtcp2 0.12 speaks only the v2 draft (0x709a50c4), not RFC 9369 v2"
        if role == "server" and case.cipher is not None:
            return None  # gtlsserver's default suites include it; the client picks
        return None

    def key_update_seen(self, log: PeerLog) -> str | None:
        # ngtcp2's debug log prints each packet's key phase (k=0/1), sent
        # ("pkt tx") and received ("pkt rx"): 1-RTT packets received in phase 1
        # mean sansquic moved to the next keys too.
        if not re.search(r"pkt rx [^\n]*type=1RTT k=1", log.text):
            return "ngtcp2's log shows no 1-RTT packet received under updated keys"
        return None

    def serve(self, case: Case, www: Path, host: str, work: Path) -> ServerProcess:
        assert self.server is not None
        cert, key = _dev_pair(work)
        server = self.server

        def command(port: int) -> list[str]:
            line = [server, host, str(port), str(key), str(cert), "-d", str(www)]
            line += ["--no-quic-dump", "--no-http-dump"]
            return [*line, "--validate-addr"] if case.retry else line

        log = work / "ngtcp2-server.log"
        process, port = _start_bound(command, host, log, dict(os.environ), work)
        return ServerProcess(process, (host, port), log)

    def fetch(
        self, case: Case, address: tuple[str, int], paths: list[str], out: Path, work: Path
    ) -> tuple[int, PeerLog]:
        assert self.client is not None
        command = [self.client, "--no-quic-dump", "--no-http-dump", "--exit-on-all-streams-close"]
        command += ["--download", str(out), "--timeout", "20s"]
        if case.resume or case.zero_rtt:
            command += ["--session-file", str(work / "session.pem")]
            command += ["--tp-file", str(work / "tp.txt")]
        if case.resume and not case.zero_rtt:
            command.append("--disable-early-data")
        if case.key_update:
            command.append("--key-update=20ms")
        if case.cipher == "CHACHA20_POLY1305_SHA256":
            command.append(f"--ciphers={self._CHACHA}")
        base = f"https://{_url_host(address[0])}:{address[1]}"
        command += [address[0], str(address[1]), *(base + path for path in paths)]
        log = work / f"ngtcp2-client-{time.monotonic_ns()}.log"
        status = _run(command, log, dict(os.environ), work, case.timeout)
        return status, PeerLog(log.read_text(errors="replace"), [])
