"""The interop observer and impairment proxy: they never crash, and they see what happened."""

import contextlib
import socket
from typing import Any

import pytest
import sansquic_threads
from hypothesis import given
from hypothesis import strategies as st

from interop import h3
from interop.__main__ import exit_status, print_matrix
from interop.peers import AioquicExamples, Ngtcp2, PeerLog
from interop.proxy import Impairment, Proxy
from interop.runner import DIRECTIONS, Outcome, run_cell
from interop.spec import CASES, Observation
from interop.wire import V1, Hello, Observer, parse_datagram
from sansquic_conformance import hq

BODY = bytes(range(256)) * 1200  # 300 KB


@given(st.binary(max_size=3000), st.booleans())
def test_any_bytes_are_observed_without_raising(data: bytes, to_server: bool) -> None:
    observer = Observer()
    observer.observe(data, to_server)
    assert sum(observer.counts.values()) == len(parse_datagram(data))


@given(st.binary(min_size=1, max_size=1500), st.integers(0, 0xFF))
def test_long_headers_with_any_body_parse_without_raising(body: bytes, first: int) -> None:
    # A plausible long header (v1, 8-byte ids) in front of arbitrary bytes.
    data = bytes([0xC0 | first & 0x3F]) + V1.to_bytes(4, "big") + b"\x08" * 9 + b"\x08" + body
    Observer().observe(data, True)


def fetch_through(impairment: Impairment | None, host: str = "127.0.0.1") -> Proxy:
    server = sansquic_threads.serve(
        hq.serve_files({"/blob": BODY}), host, 0, config=hq.CONFIG.replace(idle_timeout=10.0)
    )
    try:
        with Proxy(server.address[:2], impairment, host=host) as proxy:
            conn = sansquic_threads.connect(
                *proxy.address, config=hq.CONFIG, server_name="localhost", timeout=20
            )
            try:
                assert hq.get(conn, "/blob", timeout=30) == BODY
            finally:
                conn.close()
        return proxy
    finally:
        server.close()


def test_a_clean_path_forwards_everything_and_counts_one_handshake() -> None:
    proxy = fetch_through(None)
    assert set(proxy.actions) == {"forwarded"}
    assert len(proxy.observer.hellos) == 1
    assert proxy.observer.hellos[0].resumed is False
    assert proxy.families == {socket.AF_INET}


@pytest.mark.parametrize(
    ("impairment", "action"),
    [
        (Impairment(loss=0.05, seed=2), "lost"),
        (Impairment(corruption=0.05, seed=2), "corrupted"),
        (Impairment(handshake_loss=0.5, seed=2), "handshake lost"),
        (Impairment(blackhole_seconds=0.5, blackhole_after=20), "blackholed"),
        (Impairment(delay=0.05), "delayed"),
    ],
)
def test_each_impairment_acts_and_the_transfer_survives(
    impairment: Impairment, action: str
) -> None:
    proxy = fetch_through(impairment)
    assert proxy.actions[action] > 0


def test_ipv6_goes_over_ipv6() -> None:
    proxy = fetch_through(None, host="::1")
    assert proxy.families == {socket.AF_INET6}


# -- the checks themselves can fail --------------------------------------------------------


def test_ngtcp2_key_update_needs_a_received_packet_in_phase_one() -> None:
    peer = Ngtcp2()
    sent_only = "I00000046 0xab pkt tx pkn=9 dcid=0xcd type=1RTT k=1 len=0\n"
    received = "I00000047 0xab pkt rx pkn=6 dcid=0xab type=1RTT k=1\n"
    assert peer.key_update_seen(PeerLog(sent_only, [])) is not None
    assert peer.key_update_seen(PeerLog(sent_only + received, [])) is None


def test_aioquic_key_update_needs_an_update_and_a_packet_after_it() -> None:
    peer = AioquicExamples(None, "")
    update = {"name": "security:key_updated", "time": 2.0, "data": {"trigger": "local_update"}}
    tls = {"name": "security:key_updated", "time": 1.0, "data": {"trigger": "tls"}}

    def received(at: float) -> dict[str, Any]:
        header = {"packet_type": "1RTT"}
        return {"name": "transport:packet_received", "time": at, "data": {"header": header}}

    assert peer.key_update_seen(PeerLog("", [tls, received(3.0)])) is not None
    assert peer.key_update_seen(PeerLog("", [update, received(1.5)])) is not None
    assert peer.key_update_seen(PeerLog("", [tls, update, received(3.0)])) is None


def observation(
    hellos: list[Hello], facts: list[dict[str, Any]] | None = None, **counts: int
) -> Observation:
    observer = Observer()
    observer.hellos = hellos
    for key, n in counts.items():
        direction, kind = key.split("_")
        observer.counts[(direction, kind, V1)] = n
    return Observation(observer, {}, {socket.AF_INET}, facts or [])


def test_resumption_and_zerortt_checks_fail_without_their_evidence() -> None:
    full, resumed = Hello(V1, "AES_128_GCM_SHA256", False), Hello(V1, "AES_128_GCM_SHA256", True)
    resumption, zerortt = CASES["resumption"].check, CASES["zerortt"].check
    said = [{"resumed": False}, {"resumed": True}]
    assert resumption(observation([full, full], said)) is not None
    assert resumption(observation([resumed, resumed], said)) is not None
    assert resumption(observation([full], said[:1])) is not None
    assert resumption(observation([full, resumed], said)) is None
    # The wire and sansquic's own report must agree.
    assert resumption(observation([full, resumed], [{"resumed": False}] * 2)) is not None
    assert resumption(observation([full, resumed], [{}, {}])) is not None
    accepted = [{"resumed": False}, {"resumed": True, "early_data_accepted": True}]
    refused = [{"resumed": False}, {"resumed": True, "early_data_accepted": False}]
    assert zerortt(observation([full, resumed], accepted)) is not None  # no 0-RTT packet
    assert zerortt(observation([full, resumed], refused, c2s_0rtt=3)) is not None
    assert zerortt(observation([full, resumed], accepted, c2s_0rtt=3)) is None


def test_version_cipher_retry_and_ipv6_checks_fail_without_their_evidence() -> None:
    hello = Hello(V1, "AES_128_GCM_SHA256", False)
    assert CASES["v2"].check(observation([hello], s2c_handshake=2)) is not None
    assert CASES["chacha20"].check(observation([hello])) is not None
    assert CASES["retry"].check(observation([hello])) is not None
    assert CASES["retry"].check(observation([hello], s2c_retry=1)) is None
    assert CASES["ipv6"].check(observation([hello])) is not None
    assert CASES["handshake"].check(observation([hello, hello])) is not None


# -- the HTTP/3 side used with h3-only peers -------------------------------------------------


@given(st.binary(max_size=200))
def test_h3_frames_of_any_bytes_parse_or_raise_h3error(data: bytes) -> None:
    with contextlib.suppress(h3.H3Error):
        for kind, payload in h3.frames(data):
            assert kind >= 0 and len(payload) <= len(data)


def test_h3_client_and_server_move_files_and_refuse_unknown_paths() -> None:
    files = {"/a": b"alpha", "/blob": BODY}
    config = hq.CONFIG.replace(alpn=(h3.ALPN,))
    server = sansquic_threads.serve(h3.serve_files(files), "127.0.0.1", 0, config=config)
    try:
        for paths, expected in ((list(files), files), (["/a", "/nowhere"], None)):
            conn = sansquic_threads.connect(
                *server.address[:2], config=config, server_name="localhost"
            )
            try:
                if expected is None:
                    with pytest.raises(h3.H3Error, match="404"):
                        h3.get_all(conn, paths)
                else:
                    assert h3.get_all(conn, paths) == expected
            finally:
                conn.close()
    finally:
        server.close()


# -- the runner reports every cell, never a silent pass --------------------------------------


class BrokenPeer:
    """A peer whose server never starts and whose client fetches nothing."""

    name, alpn = "broken", "hq-interop"

    def __init__(self, missing: str | None = None) -> None:
        self.missing = missing

    def unavailable(self) -> str | None:
        return self.missing

    def unsupported(self, case: Any, role: str) -> str | None:
        return None

    def key_update_seen(self, log: PeerLog) -> str | None:
        return "no"

    def serve(self, *args: Any) -> Any:
        raise RuntimeError("peer server exited with status 1")

    def fetch(self, *args: Any) -> tuple[int, PeerLog]:
        return 3, PeerLog("", [])


def test_a_failing_or_missing_peer_shows_in_the_matrix_and_the_exit_status(
    capsys: pytest.CaptureFixture[str],
) -> None:
    case = CASES["handshake"]
    cells = [run_cell(case, BrokenPeer(), direction) for direction in DIRECTIONS]
    assert [c.outcome for c in cells] == [Outcome.FAIL, Outcome.FAIL]
    assert "status 1" in cells[0].reason and "status 3" in cells[1].reason
    missing = run_cell(case, BrokenPeer("not installed (here)"), DIRECTIONS[0])
    assert missing.outcome is Outcome.UNSUPPORTED_PEER and "not installed" in missing.reason
    print_matrix([*cells, missing])
    out = capsys.readouterr().out
    assert "FAIL" in out and "not installed (here)" in out
    assert exit_status(cells) == 1 and exit_status([missing]) == 0
