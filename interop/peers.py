"""The independent peers: aioquic's example programs (from its sdist) and ngtcp2's.

Each peer runs as a subprocess of its own. A peer says which cases it cannot
take part in (``unsupported``), and why, so the matrix shows it.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
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

    def stop(self) -> PeerLog:
        """End the server and return its log."""
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

    def unavailable(self) -> str | None:
        """Why this peer cannot run at all here (not installed, ...), or None."""
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
        if role == "server" and case.cipher is not None:
            # The server offers aioquic's default suites; the client's choice decides.
            return None
        if role == "server" and case.version == "v2":
            return None  # the example server accepts v1 and v2 (aioquic's defaults)
        if role == "server" and case.key_update:
            return None  # it follows a key update (aioquic does); sansquic starts it
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
        port = _free_port(host)
        command = [sys.executable, str(self.examples / "http3_server.py")]
        command += ["-c", str(cert), "-k", str(key), "--host", host, "--port", str(port)]
        command += ["-q", str(work / "server-qlog"), "-v"]
        (work / "server-qlog").mkdir(exist_ok=True)
        if case.retry:
            command.append("--retry")
        command.append("interop_files:app")
        log = work / "aioquic-server.log"
        process = _start(command, log, self._env(www), work)
        _wait_bound(host, port, process)
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
    nghttp3); the hq-interop ones (``h09client``/``h09server``) are not
    packaged, so they cannot serve or fetch a file with sansquic's
    hq-interop side.
    """

    name = "ngtcp2"

    def __init__(self) -> None:
        self.client = shutil.which("gtlsclient")
        self.server = shutil.which("gtlsserver") or (
            "/usr/sbin/gtlsserver" if Path("/usr/sbin/gtlsserver").exists() else None
        )

    def unavailable(self) -> str | None:
        if self.client is None or self.server is None:
            return "not installed (apt-get install ngtcp2-client ngtcp2-server)"
        return None

    def unsupported(self, case: Case, role: str) -> str | None:
        return "Debian's gtlsclient/gtlsserver speak h3 only, no hq-interop"

    def serve(self, case: Case, www: Path, host: str, work: Path) -> ServerProcess:
        raise NotImplementedError("ngtcp2's packaged examples do not speak hq-interop")

    def fetch(
        self, case: Case, address: tuple[str, int], paths: list[str], out: Path, work: Path
    ) -> tuple[int, PeerLog]:
        raise NotImplementedError("ngtcp2's packaged examples do not speak hq-interop")
