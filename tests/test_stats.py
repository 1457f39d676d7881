"""``stats()`` loss-recovery figures and per-stream queued bytes, on the simnet."""

import pytest

from sansquic import Config, Connection, LocalProtocolError, Role
from sansquic.testing import LinkConditions, StreamSink, connected_pair

from .transfers import transfer


def test_a_clean_link_loses_nothing() -> None:
    pair = connected_pair(LinkConditions(delay=0.01))
    transfer(pair)
    stats = pair.client.stats()
    assert stats.packets_lost == 0
    # A probe timeout may still resend a packet whose ACK came late (delayed ACKs).
    assert stats.packets_retransmitted is not None and stats.packets_retransmitted <= 2
    # Packets may share a datagram (coalesced in the handshake), never the other way.
    assert stats.packets_sent is not None and stats.packets_sent >= stats.udp_datagrams_sent
    assert stats.rtt_variance is not None and 0 <= stats.rtt_variance < 0.02


@pytest.mark.parametrize(("engine", "floor"), [("aioquic", None), ("qh3", 0.001)])
def test_rtt_min_is_the_path_s_not_a_one_millisecond_floor(engine: str, floor: float) -> None:
    """aioquic floors its own minimum RTT at 1 ms; a 0.2 ms path (loopback takes
    about that) must show as 0.2 ms, since the in-flight limit scales with it.
    qh3's Rust core gives only its floored samples (docs/engines.md)."""
    config = Config(trust_dev_certificate=True, engine=engine)
    pair = connected_pair(LinkConditions(delay=0.0001), client_config=config)
    transfer(pair, 100_000)
    stats = pair.client.stats()
    assert stats.rtt_min is not None and stats.rtt_smoothed is not None
    if floor is None:
        assert 0.0002 <= stats.rtt_min < 0.0005, stats.rtt_min
    else:
        assert stats.rtt_min == floor
    assert stats.rtt_min <= stats.rtt_smoothed


def test_loss_shows_in_lost_and_retransmitted_counts() -> None:
    pair = connected_pair(LinkConditions(delay=0.01, loss=0.05), seed=3)
    transfer(pair)
    stats = pair.client.stats()
    assert stats.packets_lost is not None and stats.packets_lost > 0
    # Every lost packet here carried stream data; probe timeouts may add more.
    assert stats.packets_retransmitted is not None
    assert stats.packets_retransmitted >= stats.packets_lost
    assert stats.packets_sent is not None
    assert stats.packets_sent > stats.packets_retransmitted


def test_jitter_raises_the_rtt_variance() -> None:
    variances = []
    for jitter in (0.0, 0.02):
        pair = connected_pair(LinkConditions(delay=0.01, jitter=jitter), seed=1)
        transfer(pair, 100_000)
        variance = pair.client.stats().rtt_variance
        assert variance is not None
        variances.append(variance)
    assert variances[1] > 2 * variances[0] + 0.001, variances


def test_no_rtt_variance_before_the_first_sample() -> None:
    client = Connection(Config(verify_peer=False), role=Role.CLIENT)
    stats = client.stats()
    assert stats.rtt_variance is None
    assert (stats.packets_sent, stats.packets_lost, stats.packets_retransmitted) == (0, 0, 0)


def test_queued_counts_what_flow_control_holds_back_then_drains() -> None:
    window = 16 * 1024
    server_config = Config(
        dev_mode=True, trust_dev_certificate=True, max_stream_data=window, max_stream_window=window
    )
    pair = connected_pair(server_config=server_config)
    client = pair.client
    sid = client.open_stream()
    client.send(sid, b"q" * 200_000, end=True)
    assert client.queued(sid) == 200_000  # nothing handed out before datagrams_to_send
    pair.network.run_for(1.0)  # nobody reads on the server: only one window leaves
    assert 200_000 - window <= client.queued(sid) <= 200_000 - window // 2
    sink = StreamSink(pair.server)
    pair.network.step_hooks.append(sink.pump)
    assert pair.network.run_until(lambda: sid in sink.ended, 30)
    assert client.queued(sid) == 0


def test_queued_is_zero_for_receive_only_and_raises_for_unknown_streams() -> None:
    pair = connected_pair()
    uni = pair.client.open_stream(bidirectional=False)
    pair.client.send(uni, b"to the server", end=True)
    sink = StreamSink(pair.server)
    pair.network.step_hooks.append(sink.pump)
    assert pair.network.run_until(lambda: uni in sink.received, 5)
    assert pair.server.queued(uni) == 0  # the server cannot send on it
    with pytest.raises(LocalProtocolError):
        pair.client.queued(400)


def test_qh3_fills_what_it_can() -> None:
    pytest.importorskip("qh3")
    config = Config(dev_mode=True, trust_dev_certificate=True, engine="qh3")
    pair = connected_pair(
        LinkConditions(delay=0.01, loss=0.05), client_config=config, server_config=config, seed=3
    )
    transfer(pair)
    stats = pair.client.stats()
    assert stats.packets_lost is not None and stats.packets_lost > 0
    assert (stats.rtt_variance, stats.packets_sent, stats.packets_retransmitted) == (None,) * 3
