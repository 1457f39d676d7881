"""The in-flight limit: startup at twice the bandwidth-delay product, then a gain
cycle around one, a floor, and estimates that quiet spells do not lower."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sansquic._inflight import (
    CYCLE,
    FLOOR_BYTES,
    FLOOR_PACKETS,
    GROWTH,
    PLATEAU_SAMPLES,
    SAMPLES,
    STARTUP_GAIN,
    InflightLimit,
)

RTT = 0.001
BDP = 100e6 * RTT  # 100 MB/s over a 1 ms path: a 100 kB pipe


def _fed(
    rates: list[float], rtt: float = RTT, limit: InflightLimit | None = None, **kwargs: bool
) -> InflightLimit:
    """A limit that saw one delivery-rate sample per round trip, in bytes per second."""
    if limit is None:
        limit = InflightLimit()
        limit.update(0.0, 0, rtt)
    assert limit._mark is not None
    now, delivered = limit._mark
    for rate in rates:
        now += rtt
        delivered += int(rate * rtt)
        limit.update(now, delivered, rtt, **kwargs)
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
    assert limit.limit(RTT, 1200) == pytest.approx(STARTUP_GAIN * 10e6 * GROWTH**7 * RTT, rel=0.01)


def test_a_plateau_ends_startup_then_the_gain_cycles_around_one() -> None:
    limit = _fed([100e6] * PLATEAU_SAMPLES)
    assert limit.gain == STARTUP_GAIN  # the first sample set the peak: 2 more to go
    _fed([100e6], limit=limit)
    assert limit.gain == CYCLE[0]
    limits = []
    for _ in range(2 * len(CYCLE)):
        _fed([100e6], limit=limit)
        limits.append(limit.limit(RTT, 1200))
    expected = [int(gain * BDP) for gain in CYCLE[1:] + CYCLE * 1 + CYCLE[:1]]
    assert limits == pytest.approx(expected, rel=0.01)
    # Over a cycle it keeps one bandwidth-delay product in flight on average.
    assert sum(CYCLE) / len(CYCLE) == 1.0


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


def test_the_estimate_forgets_an_old_peak() -> None:
    limit = _fed([500e6] + [50e6] * SAMPLES)
    cap = limit.limit(RTT, 1200)
    assert cap == pytest.approx(limit.gain * 50e6 * RTT, rel=0.01)


def test_a_quiet_spell_keeps_the_estimate() -> None:
    """App-limited samples (nothing waiting to send) do not lower the estimate,
    so the next burst does not start from the floor."""
    limit = _settled(100e6)
    _fed([1e3] * (3 * SAMPLES), limit=limit, app_limited=True)
    cap = limit.limit(RTT, 1200)
    assert cap == pytest.approx(limit.gain * BDP, rel=0.01)
    # Without the flag the same quiet samples push the old estimate out.
    _fed([1e3] * SAMPLES, limit=limit)
    assert limit.limit(RTT, 1200) == FLOOR_BYTES


def test_an_app_limited_sample_may_still_raise_the_estimate() -> None:
    limit = _settled(100e6)
    _fed([300e6], limit=limit, app_limited=True)
    cap = limit.limit(RTT, 1200)
    assert cap == pytest.approx(limit.gain * 300e6 * RTT, rel=0.01)


def test_samples_wait_for_a_round_trip() -> None:
    limit = InflightLimit()
    limit.update(0.0, 0, RTT)
    limit.update(RTT / 2, 10**9, RTT)  # too soon: no sample
    assert limit.limit(RTT, 1200) is None


@given(st.lists(st.floats(0, 1e9), min_size=1, max_size=40), st.sampled_from([1200, 16_000]))
def test_limit_is_the_gain_times_the_recent_peak_or_the_floor(
    rates: list[float], packet: int
) -> None:
    """Whatever the samples, the limit is the current gain times the largest of
    the last SAMPLES rates times the RTT, never under the floor, and the gain
    is one of the startup or cycle gains."""
    limit = _fed(rates)
    cap = limit.limit(RTT, packet)
    assert cap is not None
    assert limit.gain in (STARTUP_GAIN, *CYCLE)
    floor = max(FLOOR_BYTES, FLOOR_PACKETS * packet)
    expected = max(floor, limit.gain * max(rates[-SAMPLES:]) * RTT)
    assert cap == pytest.approx(expected, rel=0.001, abs=2 * limit.gain)
