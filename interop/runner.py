"""Run one case between sansquic and a peer, in one direction, through the proxy."""

from __future__ import annotations

import enum
import os
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

from . import sansquic_side
from .peers import Peer, PeerLog
from .proxy import Proxy
from .spec import Case, Observation

__all__ = ["DIRECTIONS", "Cell", "Outcome", "run_cell"]

#: sansquic-client -> peer-server, and peer-client -> sansquic-server.
DIRECTIONS = ("sansquic->peer", "peer->sansquic")


class Outcome(enum.Enum):
    """How one cell of the matrix came out."""

    PASS = "pass"
    FAIL = "FAIL"
    UNSUPPORTED_PEER = "unsupported-by-peer"
    UNSUPPORTED_SANSQUIC = "unsupported-by-sansquic"


@dataclass(frozen=True)
class Cell:
    """One case x peer x direction result."""

    case: str
    peer: str
    direction: str
    outcome: Outcome
    reason: str = ""
    seconds: float = 0.0


def _files(case: Case, www: Path) -> dict[str, bytes]:
    files = {f"/{i}-{size}.bin": os.urandom(size) for i, size in enumerate(case.files)}
    for path, body in files.items():
        (www / path[1:]).write_bytes(body)
    return files


def _compare(expected: dict[str, bytes], got: dict[str, bytes]) -> str | None:
    for path, body in expected.items():
        if path not in got:
            return f"{path} not fetched"
        if got[path] != body:
            return f"{path}: {len(got[path])} bytes differ from the {len(body)} served"
    return None


def _client_side(case: Case, peer: Peer, work: Path, www: Path) -> tuple[Observation, str | None]:
    """sansquic fetches from the peer's server through the proxy."""
    host = "::1" if case.ipv6 else "127.0.0.1"
    files = _files(case, www)
    server = peer.serve(case, www, host, work)
    config = sansquic_side.config(
        peer.alpn,
        versions=("v2", "v1") if case.version == "v2" else ("v1",),
        cipher=case.cipher,
        early_data=case.zero_rtt,
    )
    got: dict[str, bytes] = {}
    facts = []
    try:
        with Proxy(server.address, case.impairment, host=host) as proxy:
            paths = list(files)
            for i in range(case.connections):
                fetched = sansquic_side.fetch(
                    proxy.address,
                    paths[i :: case.connections],
                    config,  # one Config for every connection: its ticket store resumes
                    early_data=case.zero_rtt and i > 0,
                    key_update=case.key_update,
                )
                got.update(fetched.bodies)
                facts.append(fetched.facts)
    finally:
        log = server.stop(case.connections)
    obs = Observation(
        proxy.observer,
        dict(proxy.actions),
        proxy.families,
        facts,
        log.text,
        peer.key_update_seen(log) if case.key_update else None,
    )
    return obs, _compare(files, got)


def _server_side(case: Case, peer: Peer, work: Path, www: Path) -> tuple[Observation, str | None]:
    """The peer's client fetches from sansquic's server through the proxy."""
    host = "::1" if case.ipv6 else "127.0.0.1"
    files = _files(case, www)
    config = sansquic_side.config(
        peer.alpn,
        versions=("v1", "v2") if case.version == "v2" else ("v1",),
        retry=case.retry,
        early_data=case.zero_rtt,
    )
    server = sansquic_side.SansquicServer(files, config, host)
    out = work / "out"
    out.mkdir()
    logs: list[PeerLog] = []
    failure: str | None = None
    try:
        with Proxy(server.address, case.impairment, host=host) as proxy:
            paths = list(files)
            for i in range(case.connections):
                status, log = peer.fetch(
                    case, proxy.address, paths[i :: case.connections], out, work
                )
                logs.append(log)
                if status != 0 and failure is None:
                    failure = f"{peer.name} client exited with status {status} (run {i + 1})"
    finally:
        server.close()
    got = {f"/{p.name}": p.read_bytes() for p in out.iterdir()}
    joined = PeerLog("\n".join(log.text for log in logs), [e for log in logs for e in log.events])
    obs = Observation(
        proxy.observer,
        dict(proxy.actions),
        proxy.families,
        server.connections,
        joined.text,
        peer.key_update_seen(joined) if case.key_update else None,
    )
    return obs, failure or _compare(files, got)


def run_cell(case: Case, peer: Peer, direction: str, keep: Path | None = None) -> Cell:
    """Run ``case`` with sansquic and ``peer`` in ``direction``; never raises."""
    sansquic_role, peer_role = (
        ("client", "server") if direction == DIRECTIONS[0] else ("server", "client")
    )
    start = time.monotonic()

    def cell(outcome: Outcome, reason: str = "") -> Cell:
        return Cell(case.name, peer.name, direction, outcome, reason, time.monotonic() - start)

    if (reason := peer.unavailable()) is not None:
        return cell(Outcome.UNSUPPORTED_PEER, reason)
    if (reason := peer.unsupported(case, peer_role)) is not None:
        return cell(Outcome.UNSUPPORTED_PEER, reason)
    if (
        case.feature
        and (reason := sansquic_side.missing_feature(case.feature, sansquic_role)) is not None
    ):
        return cell(Outcome.UNSUPPORTED_SANSQUIC, reason)
    with tempfile.TemporaryDirectory(prefix=f"interop-{case.name}-") as tmp:
        work = Path(tmp)
        www = work / "www"
        www.mkdir()
        try:
            side = _client_side if sansquic_role == "client" else _server_side
            obs, failure = side(case, peer, work, www)
            failure = failure or case.check(obs)
        except Exception as exc:
            failure = f"{type(exc).__name__}: {exc}"
            if os.environ.get("INTEROP_DEBUG"):
                traceback.print_exc()
        if failure is not None and keep is not None:
            _keep(work, keep / f"{case.name}-{peer.name}-{sansquic_role}")
    return cell(Outcome.FAIL, failure) if failure else cell(Outcome.PASS)


def _keep(work: Path, target: Path) -> None:
    """Copy a failed cell's logs (not its files) for a look afterwards."""
    import shutil

    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(work, target, ignore=shutil.ignore_patterns("www", "out", "*.pem"))
