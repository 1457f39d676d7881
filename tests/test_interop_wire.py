"""The interop observer and impairment proxy: they never crash, and they see what happened."""

import socket

import pytest
import sansquic_threads
from hypothesis import given
from hypothesis import strategies as st

from conformance import hq
from interop.proxy import Impairment, Proxy
from interop.wire import V1, Observer, parse_datagram

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
