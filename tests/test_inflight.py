"""The in-flight limit: startup at twice the bandwidth-delay product, then a gain
cycle a little above one, a floor, and estimates that quiet spells and flow
control do not lower but a slower path does."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

import sansquic
from sansquic import Config, Priority
from sansquic._inflight import (
    CYCLE,
    FLOOR_BYTES,
    FLOOR_PACKETS,
    GROWTH,
    MIN_RTT,
    PLATEAU_SAMPLES,
    SAMPLES,
    STARTUP_GAIN,
    InflightLimit,
)
from sansquic.testing import LinkConditions, StreamSink, connected_pair

RTT = 0.001
BDP = 100e6 * RTT  # 100 MB/s over a 1 ms path: a 100 kB pipe


def _fed(
    rates: list[float],
    rtt: float = RTT,
    limit: InflightLimit | None = None,
    *,
    limited: bool = False,
) -> InflightLimit:
    """A limit that saw one delivery-rate sample per round trip, in bytes per second
    (each marked held back by something other than the path, with ``limited``)."""
    if limit is None:
        limit = InflightLimit()
        limit.update(0.0, 0, rtt)
    assert limit._mark is not None
    now, delivered = limit._mark
    for rate in rates:
        now += rtt
        delivered += int(rate * rtt)
        if limited:
            limit.note_limited()
        limit.update(now, delivered, rtt)
    return limit


def _settled(rate: float = 100e6) -> InflightLimit:
    """Past startup: the estimate stopped growing, the cycle is at its first step."""
    limit = _fed([rate] * (PLATEAU_SAMPLES + 1))
    assert limit.gain != STARTUP_GAIN
    while limit.gain != CYCLE[0]:
        _fed([rate], limit=limit)
    return limit


def test_no_limit_before_a_round_trip_was_measured() -> None:
    limit = InflightLimit()
    assert limit.limit(None, 1200) is None
    limit.update(0.0, 0, None)
    assert limit.limit(RTT, 1200) is None


def test_startup_allows_twice_the_bandwidth_delay_product_while_the_rate_grows() -> None:
    limit = _fed([10e6 * GROWTH**i for i in range(8)])  # each sample 25% above the last
    assert limit.gain == STARTUP_GAIN
    # The estimate is the second largest sample: one burst cannot set it alone.
    assert limit.limit(RTT, 1200) == pytest.approx(STARTUP_GAIN * 10e6 * GROWTH**6 * RTT, rel=0.01)


def test_a_plateau_ends_startup_then_the_gain_cycles() -> None:
    limit = _fed([100e6] * PLATEAU_SAMPLES)
    assert limit.gain == STARTUP_GAIN  # the first sample set the peak: 2 more to go
    _fed([100e6], limit=limit)
    assert limit.gain == CYCLE[0]
    limits = []
    for _ in range(2 * len(CYCLE)):
        _fed([100e6], limit=limit)
        limits.append(limit.limit(RTT, 1200))
    expected = [int(gain * BDP) for gain in CYCLE[1:] + CYCLE + CYCLE[:1]]
    assert limits == pytest.approx(expected, rel=0.01)
    # One step probes above the rest, the next drains below them.
    assert CYCLE[0] > max(CYCLE[2:]) and CYCLE[1] < min(CYCLE[2:])


def test_the_probe_step_finds_a_faster_path() -> None:
    """A sender that uses each step's limit and meets no bottleneck delivers
    more each cycle: the estimate grows past the old one."""
    limit = _settled(100e6)
    before = limit.limit(RTT, 1200)
    assert before is not None
    for _ in range(3 * len(CYCLE)):
        cap = limit.limit(RTT, 1200)
        assert cap is not None
        _fed([cap / RTT], limit=limit)  # a whole limit delivered per round trip
    after = limit.limit(RTT, 1200)
    assert after is not None and after > 1.5 * before


@pytest.mark.parametrize("packet", [1200, 16_000])
def test_never_below_the_floor(packet: int) -> None:
    limit = _fed([0.0] * 3)
    assert limit.limit(RTT, packet) == max(FLOOR_BYTES, FLOOR_PACKETS * packet)


def test_one_implausibly_short_round_trip_does_not_pin_the_floor() -> None:
    limit = _settled(100e6)
    assert limit.limit(0.0, 1200) == int(limit.gain * 100e6 * MIN_RTT)


def test_the_estimate_forgets_an_old_peak() -> None:
    limit = _fed([500e6, 500e6] + [50e6] * SAMPLES)
    assert limit.estimate == pytest.approx(50e6, rel=0.01)


def test_a_single_burst_does_not_set_the_estimate() -> None:
    limit = _fed([50e6] * 5 + [500e6] + [50e6] * 2)
    assert limit.estimate == pytest.approx(50e6, rel=0.01)


def test_samples_from_an_app_limited_sender_only_raise_the_estimate() -> None:
    """Quiet spells and missing flow-control credit say nothing about the path:
    such samples keep the estimate, unless they raise it."""
    limit = _settled(100e6)
    _fed([1e3] * (3 * SAMPLES), limit=limit, limited=True)
    assert limit.estimate == pytest.approx(100e6, rel=0.01)
    _fed([300e6] * 2, limit=limit, limited=True)
    assert limit.estimate == pytest.approx(300e6, rel=0.01)
    # Samples the path held back (the limit included) push the old estimate out.
    _fed([1e3] * SAMPLES, limit=limit)
    assert limit.limit(RTT, 1200) == FLOOR_BYTES


def test_a_held_back_interval_still_advances_the_cycle() -> None:
    limit = _settled(100e6)
    gains = []
    for _ in range(len(CYCLE)):
        _fed([10e6], limit=limit, limited=True)
        gains.append(limit.gain)
    assert gains == list(CYCLE[1:] + CYCLE[:1])


def test_samples_span_a_round_trip() -> None:
    limit = InflightLimit()
    limit.update(0.0, 0, RTT)
    limit.update(RTT / 2, 10**9, RTT)  # too soon for the minimum: no sample
    assert limit.limit(RTT, 1200) is None
    limit.update(1.5 * RTT, 10**9, RTT, 3 * RTT)  # too soon for the smoothed RTT
    assert limit.limit(RTT, 1200) is None
    limit.update(3 * RTT, 10**9, RTT, 3 * RTT)
    assert limit.limit(RTT, 1200) is not None


@given(st.lists(st.floats(0, 1e9), min_size=1, max_size=40), st.sampled_from([1200, 16_000]))
def test_limit_is_the_gain_times_the_estimate_or_the_floor(rates: list[float], packet: int) -> None:
    """Whatever the samples, the limit is the current gain times the second largest
    of the last SAMPLES rates times the RTT, never under the floor."""
    limit = _fed(rates)
    cap = limit.limit(RTT, packet)
    assert cap is not None
    assert limit.gain in (STARTUP_GAIN, *CYCLE)
    recent = sorted(rates[-SAMPLES:])
    estimate = recent[-2] if len(recent) >= 3 else recent[-1]
    floor = max(FLOOR_BYTES, FLOOR_PACKETS * packet)
    assert cap == pytest.approx(
        max(floor, limit.gain * estimate * RTT), rel=0.001, abs=2 * limit.gain
    )


# -- on a connection, the simulated network -------------------------------------------

LINK_RATE = 1_250_000  # 10 Mbit/s


def _link(delay: float, rate: float = LINK_RATE) -> LinkConditions:
    return LinkConditions(delay=delay, bandwidth=rate, queue_bytes=200_000)


def _competing_pair(
    server_config: Config | None = None,
) -> tuple[sansquic.testing.Pair, StreamSink, int, int]:
    pair = connected_pair(
        _link(0.01), client_config=Config(trust_dev_certificate=True), server_config=server_config
    )
    sink = StreamSink(pair.server)
    pair.network.step_hooks.append(sink.pump)
    low = pair.client.open_stream(priority=Priority.LOW)
    crit = pair.client.open_stream(priority=Priority.CRITICAL)
    return pair, sink, low, crit


def _critical_latencies(
    pair: sansquic.testing.Pair, sink: StreamSink, crit: int, count: int
) -> list[float]:
    """``count`` 1 KB CRITICAL messages, one per 100 ms: each one's time to the server."""
    net, latencies = pair.network, []
    for _ in range(count):
        base, start = len(sink.received.get(crit, b"")), net.now
        pair.client.send(crit, b"C" * 1000)
        target = base + 1000
        assert net.run_until(lambda: len(sink.received.get(crit, b"")) >= target, 5)  # noqa: B023
        latencies.append(net.now - start)
        net.run_for(max(0.0, 0.1 - (net.now - start)))
    return latencies


def test_the_limit_follows_a_path_that_got_slower() -> None:
    """The link drops from 10 to 1 Mbit/s under a saturating LOW stream: the limit
    shrinks with it, so a CRITICAL message still waits behind little. (With
    capped samples kept out of the estimate it stayed at the old 41 kB, and a
    CRITICAL message took a median 322 ms.)"""
    pair, sink, low, crit = _competing_pair()
    pair.client.send(low, b"L" * 12_000_000)
    _critical_latencies(pair, sink, crit, 20)
    pair.network.set_link(pair.client_address, pair.server_address, _link(0.01, LINK_RATE / 10))
    pair.network.run_for(1.0)
    latencies = sorted(_critical_latencies(pair, sink, crit, 60))
    assert latencies[30] < 0.1, latencies[30]
    cap = pair.client._inflight_cap
    assert cap is not None and cap <= 4 * FLOOR_BYTES


def test_after_a_route_change_the_limit_recovers_with_the_minimum_rtt() -> None:
    """After the delay triples, capped samples shrink the limit (the minimum RTT
    still says 21 ms) until the engine's windowed minimum RTT forgets the old
    route, 10-20 s later; then LOW has most of the link again. (A lifetime
    minimum would have kept it at a few percent for good.)"""
    pair, sink, low, crit = _competing_pair()
    client, net = pair.client, pair.network
    client.send(low, b"L" * 16_000_000)
    for _ in range(10):
        client.send(crit, b"C" * 1000)
        net.run_for(0.1)
    net.set_link(pair.client_address, pair.server_address, _link(0.03))
    for _ in range(220):  # 22 s
        client.send(crit, b"C" * 1000)
        net.run_for(0.1)
    stats = client.stats()
    assert stats.rtt_min is not None and stats.rtt_min > 0.05  # the new route's
    start, before = net.now, len(sink.received[low])
    for _ in range(40):
        client.send(crit, b"C" * 1000)
        net.run_for(0.1)
    share = (len(sink.received[low]) - before) / (net.now - start) / LINK_RATE
    assert share > 0.6, f"LOW had {share:.0%} of the link"


@pytest.mark.parametrize("window", ["connection", "stream"])
def test_flow_control_blocking_does_not_lower_the_estimate(window: str) -> None:
    """The receiver stops reading for 2 s, so flow-control credit (the
    connection's or the stream's) holds the sender: that says nothing about the
    path, and the estimate must survive it."""
    small, large = 1_000_000, 4_000_000
    conn_window, stream_window = (small, large) if window == "connection" else (large, small)
    server_config = Config(
        dev_mode=True,
        max_data=conn_window,
        max_connection_window=conn_window,
        max_stream_data=stream_window,
        max_stream_window=stream_window,
    )
    pair, sink, low, crit = _competing_pair(server_config)
    client, net = pair.client, pair.network
    client.send(low, b"L" * 12_000_000)
    for _ in range(20):
        client.send(crit, b"C" * 100)
        net.run_for(0.1)
    before = client._inflight.estimate
    net.step_hooks.remove(sink.pump)  # the server's application stops reading
    for _ in range(20):
        client.send(crit, b"C" * 100)
        net.run_for(0.1)
    assert client._inflight.estimate > 0.5 * before, (client._inflight.estimate, before)


def test_a_quiet_spell_does_not_slow_the_next_burst() -> None:
    """Small writes every 150 ms after a bulk transfer are app-limited: they must
    not make the next 1 MB burst start from the floor (it took 2.16 s instead of
    about 0.8 s when the flag was read after the new data was queued)."""
    pair, sink, low, crit = _competing_pair()
    client, net = pair.client, pair.network
    client.send(low, b"L" * 3_000_000)
    client.send(crit, b"C")
    assert net.run_until(lambda: len(sink.received.get(low, b"")) >= 3_000_000, 10)
    for _ in range(40):
        client.send(low, b"l" * 2000)
        net.run_for(0.15)
    start, base = net.now, len(sink.received[low])
    client.send(low, b"B" * 1_000_000)
    client.send(crit, b"C")
    assert net.run_until(lambda: len(sink.received[low]) >= base + 1_000_000, 30)
    link_time = 1_000_000 / LINK_RATE
    assert net.now - start < 1.2 * link_time, net.now - start
