"""Rate limiting: the pure building blocks and the per-connection limits they enforce."""

import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sansquic import CloseCode, Config, ConfigError, RateLimits
from sansquic.ratelimit import ConcurrencyLimit, KeyedLimiter, TokenBucket, address_key
from sansquic.testing import LinkConditions, StreamSink, connected_pair


def test_token_bucket_refills_at_its_rate_up_to_its_burst() -> None:
    bucket = TokenBucket(rate=10, burst=5, now=0)
    assert [bucket.allow(0) for _ in range(6)] == [True] * 5 + [False]
    assert bucket.ready_at(0) == pytest.approx(0.1)
    assert bucket.allow(0.1) and not bucket.allow(0.1)
    assert bucket.tokens(100) == 5  # never above the burst
    assert bucket.take(100, 8) == 5 and bucket.take(100, 1) == 0


@given(
    rate=st.floats(0.5, 1000),
    burst=st.floats(1, 1000),
    times=st.lists(st.floats(0, 100), min_size=1, max_size=200),
)
def test_token_bucket_never_allows_more_than_rate_times_time_plus_burst(
    rate: float, burst: float, times: list[float]
) -> None:
    bucket = TokenBucket(rate, burst, now=0)
    allowed = sum(bucket.allow(now) for now in sorted(times))
    assert allowed <= burst + rate * max(times) + 1e-6


def test_concurrency_limit() -> None:
    limit = ConcurrencyLimit(2)
    assert limit.try_acquire() and limit.try_acquire() and not limit.try_acquire()
    limit.release()
    assert limit.try_acquire()
    limit.release()
    limit.release()
    with pytest.raises(RuntimeError):
        limit.release()


def test_keyed_limiter_memory_is_bounded_under_a_million_keys() -> None:
    limiter: KeyedLimiter[TokenBucket] = KeyedLimiter(lambda now: TokenBucket(1, 1, now), 1_000)
    keep = limiter.get("honest", 0.0)
    for i in range(1_000_000):
        limiter.get(i, 0.0)
        if i % 500 == 0:
            assert limiter.get("honest", 0.0) is keep  # recently used keys survive
    assert len(limiter) == 1_000
    assert limiter.evictions == 1_000_000 + 1 - 1_000
    assert sys.getsizeof(limiter._items) < 200_000


@pytest.mark.parametrize(
    ("address", "v4", "v6", "key"),
    [
        (("192.0.2.77", 1), 32, 128, "192.0.2.77"),
        (("192.0.2.77", 1), 24, 64, "192.0.2.0/24"),
        (("2001:db8::1234:5", 1), 24, 64, "2001:db8::/64"),
        (("localhost", 1), 24, 64, "localhost"),
    ],
)
def test_address_key(address: tuple[str, int], v4: int, v6: int, key: str) -> None:
    assert address_key(address, v4, v6) == key


@pytest.mark.parametrize(
    "bad",
    [
        {"max_connections": 0},
        {"new_connections_per_second": -1},
        {"retry": "sometimes"},
        {"ipv4_prefix": 33},
        {"max_tracked_addresses": 0},
        {"peer_datagrams_per_second": True},
    ],
)
def test_invalid_rate_limits(bad: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        RateLimits(**bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        TokenBucket(0, 1)


def test_peer_stream_rate_is_enforced_by_withholding_credit() -> None:
    limits = RateLimits(peer_streams_per_second=20)
    server_config = Config(
        dev_mode=True, trust_dev_certificate=True, max_streams_uni=10, rate_limits=limits
    )
    pair = connected_pair(LinkConditions(delay=0.005), server_config=server_config)
    sink = StreamSink(pair.server)
    pair.network.step_hooks.append(sink.pump)
    client_sink = StreamSink(pair.client)
    pair.network.step_hooks.append(client_sink.pump)
    start = pair.network.now
    for _ in range(110):  # each one finishes, handing its credit back to the governor
        pair.client.send(pair.client.open_stream(bidirectional=False), b"x", end=True)
    assert pair.network.run_until(lambda: len(sink.ended) == 110, 30)
    elapsed = pair.network.now - start
    # 10 streams of initial credit, then 100 more at 20 per second (burst 20): about 4 s.
    assert 3.5 < elapsed < 6.0, elapsed
    assert client_sink.terminated is None and sink.terminated is None  # no violation: just slower


def test_peer_byte_rate_is_enforced_by_withholding_credit() -> None:
    limits = RateLimits(peer_bytes_per_second=200_000)
    server_config = Config(
        dev_mode=True, trust_dev_certificate=True, max_data=64 * 1024, rate_limits=limits
    )
    pair = connected_pair(LinkConditions(delay=0.005), server_config=server_config)
    sink = StreamSink(pair.server)
    pair.network.step_hooks.append(sink.pump)
    sid = pair.client.open_stream()
    start = pair.network.now
    pair.client.send(sid, b"b" * 1_000_000, end=True)
    assert pair.network.run_until(lambda: sid in sink.ended, 60)
    elapsed = pair.network.now - start
    # The first 64 KiB window, then 200 kB/s (burst 200 kB): at least ~3.7 s for 1 MB.
    assert elapsed > 3.5, elapsed
    assert len(sink.received[sid]) == 1_000_000


def test_datagram_flood_is_dropped_then_closed_with_rate_limited() -> None:
    limits = RateLimits(peer_datagrams_per_second=50, violation_grace=1.0)
    pair = connected_pair(
        server_config=Config(dev_mode=True, trust_dev_certificate=True, rate_limits=limits)
    )
    server, client = StreamSink(pair.server), StreamSink(pair.client)
    pair.network.step_hooks += [server.pump, client.pump]
    for _ in range(40):  # within the allowance: all delivered
        pair.client.send_datagram(b"ok")
    pair.network.run_for(0.5)
    assert len(server.datagrams) == 40 and server.terminated is None
    for _ in range(300):  # 6 s worth of allowance at once, sustained
        for _ in range(10):
            if pair.client.state.value == "connected":
                pair.client.send_datagram(b"flood")
        pair.network.run_for(0.01)
    assert pair.network.run_until(lambda: client.terminated is not None, 5)
    assert client.terminated is not None
    assert client.terminated.error_code == CloseCode.RATE_LIMITED
    assert client.terminated.by_peer and client.terminated.application
    assert pair.server.stats().datagrams_dropped > 50
