"""Path MTU discovery: the search on its own, then whole connections on links with an MTU."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

import sansquic
from sansquic._pmtu import BASE, GRANULARITY, MAX_PROBES, MIN_PROBE_TIMEOUT, PathMtuSearch
from sansquic.testing import CLIENT_ADDRESS, SERVER_ADDRESS, LinkConditions, connected_pair

CEILING = 16_000


def _search(
    path_mtu: int, ceiling: int = CEILING, lost: frozenset[int] = frozenset()
) -> tuple[PathMtuSearch, list[int], float]:
    """Drive a search against a path carrying ``path_mtu``; ``lost``: probe numbers lost anyway."""
    search, now, sizes = PathMtuSearch(ceiling), 0.0, []
    search.start(now)
    for _ in range(200):
        size = search.probe(now, pto=0.01, acked=len(sizes))
        if size is None:
            deadline = search.timer()
            assert deadline is not None
            if deadline - now > 100:  # the next look is the raise timer: the search is over
                return search, sizes, now
            now = deadline
            search.on_timer(now, acked=len(sizes))
            continue
        sizes.append(size)
        now += 0.01
        if size <= path_mtu and len(sizes) - 1 not in lost:
            search.acked(size, now)
        else:
            now = search.timer() or now
            search.on_timer(now, acked=len(sizes))  # other packets got through meanwhile
    raise AssertionError("the search did not end within 200 steps")


@given(st.integers(BASE, CEILING + 5000))
def test_search_ends_within_granularity_and_never_above_the_path(path_mtu: int) -> None:
    search, sizes, _ = _search(path_mtu)
    assert search.size <= path_mtu
    assert search.size >= min(path_mtu, CEILING) - GRANULARITY
    assert not search.searching or search.timer() is not None
    # Bisection: about log2(ceiling / granularity) sizes, each tried at most MAX_PROBES times.
    assert len(sizes) <= MAX_PROBES * 12


def test_a_path_that_carries_the_ceiling_takes_one_probe() -> None:
    search, sizes, elapsed = _search(65_535)
    assert (search.size, sizes) == (CEILING, [CEILING])
    assert elapsed < 0.05


def test_one_lost_probe_is_not_taken_for_too_big() -> None:
    search, sizes, _ = _search(65_535, lost=frozenset({0}))
    assert sizes == [CEILING, CEILING]
    assert search.size == CEILING


@given(st.integers(BASE, CEILING), st.frozensets(st.integers(0, 30), max_size=6))
def test_random_probe_loss_never_raises_the_size_past_the_path(
    path_mtu: int, lost: frozenset[int]
) -> None:
    search, _, _ = _search(path_mtu, lost=lost)
    assert BASE <= search.size <= path_mtu


def test_probe_timeout_follows_the_rtt_with_a_floor() -> None:
    search = PathMtuSearch(CEILING)
    assert search.probe(0.0, pto=0.2) is None  # not started: no probe
    search.start(0.0)
    assert search.probe(0.0, pto=0.2) == CEILING
    assert search.timer() == pytest.approx(0.4)
    fast = PathMtuSearch(CEILING)
    fast.start(0.0)
    fast.probe(0.0, pto=0.0001)
    assert fast.timer() == pytest.approx(MIN_PROBE_TIMEOUT)


def test_reset_goes_back_to_the_floor_and_searches_again() -> None:
    search, _, now = _search(65_535)
    assert search.size == CEILING
    search.reset(now)
    assert search.size == BASE
    assert search.probe(now, pto=None) == CEILING


def test_a_probe_lost_while_nothing_else_got_through_proves_nothing() -> None:
    """An outage: probes time out but no other packet is acknowledged either, so no
    size counts as too big; once the path delivers again the search goes on."""
    search = PathMtuSearch(CEILING)
    search.start(0.0)
    now = 0.0
    for _ in range(10):
        assert search.probe(now, pto=0.01, acked=5) == CEILING
        now = search.timer() or now
        search.on_timer(now, acked=5)  # nothing acknowledged since the probe went out
        now = search.timer() or now  # it waits a timeout before trying again
    assert search.probe(now, pto=0.01, acked=5) == CEILING  # still the ceiling: not too big
    search.acked(CEILING, now + 0.01)
    assert search.size == CEILING


def test_a_probe_that_could_not_be_sent_is_not_counted() -> None:
    search = PathMtuSearch(CEILING)
    search.start(0.0)
    assert search.probe(0.0, pto=0.01) == CEILING
    search.cancel(0.0)
    assert search.probes_sent == 0
    assert search.probe(0.0, pto=0.01) is None  # backs off before trying again
    assert search.probe(search.timer() or 0.0, pto=0.01) == CEILING


def test_ceiling_below_the_floor_is_refused() -> None:
    with pytest.raises(ValueError, match="ceiling"):
        PathMtuSearch(1000)


# -- whole connections on the simulated network ------------------------------------


def _transfer(pair: sansquic.testing.Pair, payload: bytes, timeout: float = 60.0) -> bytes:
    """Send ``payload`` client to server on one stream; what the server read."""
    sid = pair.client.open_stream()
    pair.client.send(sid, payload, end=True)
    received = bytearray()
    ended = False

    def pump() -> bool:
        nonlocal ended
        while (event := pair.server.next_event()) is not None:
            if isinstance(event, sansquic.StreamReadable):
                received.extend(pair.server.read(event.stream_id))
            elif isinstance(event, sansquic.StreamEnded):
                ended = True
        return ended

    assert pair.network.run_until(pump, timeout)
    return bytes(received)


@pytest.mark.parametrize(
    ("mtu", "expected"),
    [
        (1472, (1472 - GRANULARITY, 1472)),
        (8972, (8972 - GRANULARITY, 8972)),
        (None, (CEILING, CEILING)),
    ],
)
def test_a_sender_finds_the_link_mtu_and_never_sends_above_it(
    mtu: int | None, expected: tuple[int, int]
) -> None:
    pair = connected_pair(LinkConditions(delay=0.005, mtu=mtu))
    network = pair.network
    payload = bytes(range(256)) * 8000  # ~2 MB
    assert _transfer(pair, payload) == payload  # starts the search
    search = pair.client._pmtu
    assert search is not None and search.started
    network.run_for(5.0)  # a 1500-byte path's search takes about 2 s
    assert (search.timer() or 0) > network.now + 100  # done: the next look is minutes away
    assert _transfer(pair, payload) == payload  # at the size found
    stats = pair.client.stats()
    assert expected[0] <= stats.udp_payload_size <= expected[1], stats
    assert stats.pmtu_probes_acked >= 1
    delivered = [r.size for r in network.trace if r.fate.startswith("delivered")]
    assert max(delivered) <= (mtu or CEILING)
    # Data went in packets near the path's size, not at the 1200 floor.
    assert max(delivered) >= expected[0]
    if mtu is not None:
        assert sum(r.fate == "too-big" for r in network.trace) <= MAX_PROBES * 12
    # The receiver only acknowledged: it never needed, nor probed for, larger packets.
    assert pair.server.stats().pmtu_probes_sent == 0


def test_idle_and_chatty_connections_send_no_probe() -> None:
    pair = connected_pair(LinkConditions(delay=0.005, mtu=None))
    for _ in range(20):
        assert _transfer(pair, b"hello") == b"hello"
    pair.network.run_until(lambda: False, 5.0)
    for side in (pair.client, pair.server):
        assert side.stats().pmtu_probes_sent == 0
        assert side.stats().udp_payload_size == BASE
    assert max(r.size for r in pair.network.trace) <= BASE


def test_a_black_hole_after_discovery_falls_back_and_the_transfer_completes() -> None:
    pair = connected_pair(LinkConditions(delay=0.005, mtu=None))
    network = pair.network
    assert len(_transfer(pair, bytes(200_000))) == 200_000
    assert pair.client.stats().udp_payload_size == CEILING
    # The path changes under the connection: from now on only 1472 bytes get through.
    network.set_link(CLIENT_ADDRESS, SERVER_ADDRESS, LinkConditions(delay=0.005, mtu=1472))
    assert len(_transfer(pair, bytes(200_000))) == 200_000
    assert pair.client.stats().udp_payload_size <= 1472
    assert pair.client.state is sansquic.ConnectionState.CONNECTED


def test_without_discovery_packets_are_the_configured_size_and_no_probe_goes_out() -> None:
    config = sansquic.Config(
        dev_mode=True, trust_dev_certificate=True, pmtu_discovery=False, max_udp_payload_size=1400
    )
    pair = connected_pair(LinkConditions(delay=0.005), client_config=config, server_config=config)
    pair.network.run_until(lambda: False, 2.0)
    stats = pair.client.stats()
    assert (stats.udp_payload_size, stats.pmtu_probes_sent) == (1400, 0)
    assert max(r.size for r in pair.network.trace) <= 1400


def test_discovery_is_off_when_the_ceiling_is_the_floor() -> None:
    config = sansquic.Config(dev_mode=True, trust_dev_certificate=True, max_udp_payload_size=1200)
    pair = connected_pair(client_config=config, server_config=config)
    pair.network.run_until(lambda: False, 2.0)
    assert pair.client.stats().pmtu_probes_sent == 0
    assert max(r.size for r in pair.network.trace) <= 1200


def test_a_deferred_search_keeps_its_timer_in_the_future() -> None:
    search = PathMtuSearch(CEILING)
    search.start(0.0)
    search.defer(0.5)
    assert search.timer() == 0.5
    assert search.probe(0.2, pto=0.01) is None
    assert search.probe(0.5, pto=0.01) == CEILING
    search.defer(5.0)  # a probe in flight keeps its own deadline
    assert search.timer() == pytest.approx(0.5 + MIN_PROBE_TIMEOUT)
