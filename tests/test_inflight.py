"""The in-flight limit: about twice the bandwidth-delay product, a floor, and growth."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sansquic._inflight import FLOOR_PACKETS, GAIN, SAMPLES, InflightLimit

RTT = 0.001


def _fed(rates: list[float], rtt: float = RTT) -> InflightLimit:
    """A limit that saw one delivery-rate sample per round trip, in bytes per second."""
    limit, now, delivered = InflightLimit(), 0.0, 0
    limit.update(now, delivered, rtt)
    for rate in rates:
        now += rtt
        delivered += int(rate * rtt)
        limit.update(now, delivered, rtt)
    return limit


def test_no_limit_before_a_round_trip_was_measured() -> None:
    limit = InflightLimit()
    assert limit.limit(None, 1200) is None
    limit.update(0.0, 0, None)
    assert limit.limit(RTT, 1200) is None


def test_twice_the_bandwidth_delay_product() -> None:
    limit = _fed([100e6] * 5)  # 100 MB/s over a 1 ms path: a 100 kB pipe
    assert limit.limit(RTT, 1200) == pytest.approx(GAIN * 100e6 * RTT, rel=0.01)


def test_never_below_the_floor() -> None:
    limit = _fed([0.0] * 3)
    assert limit.limit(RTT, 16_000) == FLOOR_PACKETS * 16_000


def test_the_estimate_forgets_an_old_peak() -> None:
    limit = _fed([500e6] + [50e6] * SAMPLES)
    assert limit.limit(RTT, 1200) == pytest.approx(GAIN * 50e6 * RTT, rel=0.01)


def test_samples_wait_for_a_round_trip() -> None:
    limit = InflightLimit()
    limit.update(0.0, 0, RTT)
    limit.update(RTT / 2, 10**9, RTT)  # too soon: no sample
    assert limit.limit(RTT, 1200) is None


@given(st.lists(st.floats(0, 1e9), min_size=1, max_size=30), st.sampled_from([1200, 16_000]))
def test_limit_lets_a_sender_at_the_limit_at_least_double_its_rate(
    rates: list[float], packet: int
) -> None:
    """Sending a whole limit per round trip delivers at >= GAIN x the estimate: the
    limit never pins a connection below the rate it could reach (it grows like slow start)."""
    limit = _fed(rates)
    cap = limit.limit(RTT, packet)
    assert cap is not None
    assert cap >= FLOOR_PACKETS * packet
    assert cap >= GAIN * max(rates[-SAMPLES:]) * RTT * 0.999 - GAIN
