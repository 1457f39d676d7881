"""Stream, datagram and close behaviour, driven on the simulated network."""

import random

import pytest

from sansquic import (
    Config,
    ConnectionState,
    RemoteProtocolError,
    StreamEnded,
    StreamOpened,
    StreamReadable,
)
from sansquic.testing import LinkConditions, Pair, StreamSink, connected_pair


def sinks(pair: Pair) -> tuple[StreamSink, StreamSink]:
    client, server = StreamSink(pair.client), StreamSink(pair.server)
    pair.network.step_hooks += [client.pump, server.pump]
    return client, server


def engine_streams(pair: Pair) -> tuple[int, int]:
    return pair.client._engine.stream_count(), pair.server._engine.stream_count()  # type: ignore[union-attr]


def test_echo_on_one_stream() -> None:
    pair = connected_pair()
    client, server = sinks(pair)
    sid = pair.client.open_stream()
    pair.client.send(sid, b"ping", end=True)
    assert pair.network.run_until(lambda: sid in server.ended, 5)
    assert server.opened == [sid] and bytes(server.received[sid]) == b"ping"
    pair.server.send(sid, bytes(server.received[sid]).upper(), end=True)
    assert pair.network.run_until(lambda: sid in client.ended, 5)
    assert bytes(client.received[sid]) == b"PING"
    assert client.opened == []  # the client opened it; no StreamOpened on its side


def test_events_come_in_order_opened_readable_ended() -> None:
    pair = connected_pair()
    sid = pair.client.open_stream()
    pair.client.send(sid, b"abc", end=True)
    pair.network.run_for(0.5)
    events = []
    while (event := pair.server.next_event()) is not None:
        events.append(event)
    assert [e for e in events if getattr(e, "stream_id", None) == sid] == [
        StreamOpened(stream_id=sid, bidirectional=True),
        StreamReadable(stream_id=sid),
        StreamEnded(stream_id=sid),
    ]
    assert pair.server.read(sid, 2) == b"ab"
    assert pair.server.read(sid, 0) == b""
    assert pair.server.read(sid) == b"c"
    assert pair.server.read(sid) == b""  # drained after the FIN: the receive side is closed


def test_readable_is_edge_triggered() -> None:
    pair = connected_pair()
    sid = pair.client.open_stream()
    for i in range(5):
        pair.client.send(sid, bytes([i]) * 3000)
        pair.network.run_for(0.05)
    readable = [e for e in iter(pair.server.next_event, None) if isinstance(e, StreamReadable)]
    assert readable == [StreamReadable(stream_id=sid)]  # unread data: no second announcement
    assert len(pair.server.read(sid)) == 15000
    pair.client.send(sid, b"more")
    pair.network.run_for(0.05)
    assert StreamReadable(stream_id=sid) in list(iter(pair.server.next_event, None))


@pytest.mark.slow
@pytest.mark.parametrize("corrupt", [0.0, 0.01])
def test_1000_streams_arrive_intact_under_loss_reordering_duplication(corrupt: float) -> None:
    conditions = LinkConditions(
        delay=0.01, jitter=0.002, loss=0.05, reorder=0.05, duplicate=0.01, corrupt=corrupt
    )
    pair = connected_pair(conditions, seed=11)
    _, server = sinks(pair)
    rng = random.Random(5)
    payloads = {}
    for _ in range(1000):
        sid = pair.client.open_stream()
        payloads[sid] = rng.randbytes(rng.randrange(1, 3000))
        pair.client.send(sid, payloads[sid], end=True)
    assert len(set(payloads.values())) == 1000  # each payload is distinct
    assert pair.network.run_until(lambda: len(server.ended) == 1000, 120)
    assert {sid: bytes(data) for sid, data in server.received.items()} == payloads
    fates = [record.fate for record in pair.network.trace]
    # The impairments really happened.
    assert sum(f == "lost" for f in fates) > 50
    assert sum("reordered" in f for f in fates) > 50
    assert sum("duplicated" in f for f in fates) > 5
    assert (sum("corrupted" in f for f in fates) > 5) == (corrupt > 0)


@pytest.mark.slow
def test_10000_streams_used_and_finished_leave_no_state_behind() -> None:
    pair = connected_pair(LinkConditions(delay=0.002, loss=0.01), seed=2)
    client, server = sinks(pair)
    total, window, opened = 10_000, 500, []
    echoed: set[int] = set()

    def echo_and_refill() -> None:
        for sid in list(server.ended - echoed):
            pair.server.send(sid, bytes(server.received.pop(sid, b"")), end=True)
            echoed.add(sid)
        while len(opened) < total and len(opened) - len(client.ended) < window:
            sid = pair.client.open_stream()
            pair.client.send(sid, sid.to_bytes(4, "big"), end=True)
            opened.append(sid)

    pair.network.step_hooks.append(echo_and_refill)
    assert pair.network.run_until(lambda: len(client.ended) == total, 600)
    assert all(bytes(client.received[sid]) == sid.to_bytes(4, "big") for sid in opened)
    pair.network.run_for(1.0)  # let the last acknowledgements land
    assert pair.client.stats().streams_open == pair.server.stats().streams_open == 0
    assert pair.client._streams.records == pair.server._streams.records == {}
    assert pair.server._streams._peer_skipped == set()
    assert engine_streams(pair) == (0, 0)
    assert pair.server.stats().streams_opened_remote == total


@pytest.mark.slow
def test_10000_concurrent_streams() -> None:
    config = Config(dev_mode=True, trust_dev_certificate=True, max_streams_bidi=10_000)
    pair = connected_pair(LinkConditions(delay=0.002), server_config=config)
    _, server = sinks(pair)
    sids = [pair.client.open_stream() for _ in range(10_000)]
    for sid in sids:
        pair.client.send(sid, b"x")  # no FIN: all 10,000 stay open at once
    assert pair.network.run_until(lambda: len(server.opened) == 10_000, 120)
    assert pair.server.stats().streams_open == 10_000
    assert all(server.received[sid] == b"x" for sid in sids)


def test_unidirectional_streams_both_ways() -> None:
    pair = connected_pair()
    client, server = sinks(pair)
    up = pair.client.open_stream(bidirectional=False)
    down = pair.server.open_stream(bidirectional=False)
    assert (up, down) == (2, 3)
    pair.client.send(up, b"up", end=True)
    pair.server.send(down, b"down", end=True)
    assert pair.network.run_until(lambda: up in server.ended and down in client.ended, 5)
    assert bytes(server.received[up]) == b"up" and bytes(client.received[down]) == b"down"
    assert pair.client.stats().streams_open == pair.server.stats().streams_open == 0


def test_peer_opening_streams_out_of_order() -> None:
    pair = connected_pair()
    _, server = sinks(pair)
    a, b, c = (pair.client.open_stream() for _ in range(3))
    pair.client.send(c, b"c", end=True)
    pair.network.run_for(0.2)
    pair.client.send(a, b"a", end=True)
    pair.client.send(b, b"b", end=True)
    assert pair.network.run_until(lambda: len(server.ended) == 3, 5)
    assert server.opened == [c, a, b]  # each announced once, when it first showed up
    assert {k: bytes(v) for k, v in server.received.items()} == {a: b"a", b: b"b", c: b"c"}


def test_reset_discards_unread_data_and_reports_the_code() -> None:
    pair = connected_pair()
    client = StreamSink(pair.client)  # the server side is left unread on purpose
    pair.network.step_hooks.append(client.pump)
    sid = pair.client.open_stream()
    pair.client.send(sid, b"x" * 5000)
    pair.network.run_for(0.5)
    pair.client.reset(sid, 99)
    pair.network.run_for(0.5)
    events = list(iter(pair.server.next_event, None))
    assert any(getattr(e, "error_code", None) == 99 for e in events)
    assert pair.server.read(sid) == b""  # unread data was discarded
    pair.server.send(sid, b"reply", end=True)  # the other direction lives on
    assert pair.network.run_until(lambda: sid in client.ended, 5)
    assert bytes(client.received[sid]) == b"reply"


def test_stop_sending_reaches_the_sender() -> None:
    pair = connected_pair()
    client, server = sinks(pair)
    sid = pair.client.open_stream(bidirectional=False)
    pair.client.send(sid, b"a" * 100)
    assert pair.network.run_until(lambda: sid in server.opened, 5)
    pair.server.stop(sid, 13)
    assert pair.network.run_until(lambda: sid in client.stops, 5)
    assert client.stops[sid] == 13
    assert pair.network.run_until(lambda: pair.server.stats().streams_open == 0, 5)
    assert pair.client.stats().streams_open == 0


def test_datagrams_both_ways() -> None:
    pair = connected_pair()
    client, server = sinks(pair)
    pair.client.send_datagram(b"hello")
    pair.server.send_datagram(bytearray(b"world"))
    assert pair.network.run_until(lambda: client.datagrams and server.datagrams, 5)
    assert (client.datagrams, server.datagrams) == ([b"world"], [b"hello"])
    assert pair.client.stats().datagrams_sent == pair.server.stats().datagrams_received == 1


def test_graceful_close_with_code_and_reason() -> None:
    pair = connected_pair()
    client, server = sinks(pair)
    pair.client.close(7, "finished here")
    assert pair.client.state is ConnectionState.CLOSING
    assert pair.network.run_until(lambda: client.terminated and server.terminated, 10)
    assert (server.terminated.error_code, server.terminated.reason) == (7, "finished here")  # type: ignore[union-attr]
    assert server.terminated.by_peer and server.terminated.application  # type: ignore[union-attr]
    assert client.terminated.error_code == 7 and not client.terminated.by_peer  # type: ignore[union-attr]
    assert pair.client.state is pair.server.state is ConnectionState.CLOSED
    assert pair.client.timer() is None and pair.server.timer() is None
    assert isinstance(client.events[-1], type(client.terminated))  # the last event


def test_idle_timeout_closes_both_sides() -> None:
    config = Config(dev_mode=True, trust_dev_certificate=True, idle_timeout=2.0)
    pair = connected_pair(client_config=config, server_config=config)
    client, server = sinks(pair)
    start = pair.network.now
    assert pair.network.run_until(lambda: client.terminated and server.terminated, 30)
    assert 2.0 <= pair.network.now - start < 5.0
    for sink in (client, server):
        assert sink.terminated is not None
        assert (sink.terminated.reason, sink.terminated.by_peer) == ("idle timeout", False)


def test_peer_protocol_violation_closes_with_a_transport_error() -> None:
    config = Config(dev_mode=True, trust_dev_certificate=True, max_streams_bidi=4)
    pair = connected_pair(server_config=config)
    client, server = sinks(pair)
    # Make the client engine believe it has more credit than granted, as a buggy peer would.
    pair.client._engine._quic._remote_max_streams_bidi = 100  # type: ignore[union-attr]
    for _ in range(10):
        pair.client.send(pair.client.open_stream(), b"x", end=True)
    assert pair.network.run_until(lambda: server.terminated is not None, 10)
    event = server.terminated
    assert event is not None and not event.by_peer and not event.application
    assert event.error_code == 0x04  # STREAM_LIMIT_ERROR
    with pytest.raises(RemoteProtocolError) as info:
        pair.server.open_stream()
    assert info.value.error_code == 0x04 and info.value.reason
    assert pair.network.run_until(lambda: client.terminated is not None, 10)
    assert client.terminated is not None and client.terminated.by_peer


def test_transfer_survives_nat_rebinding() -> None:
    pair = connected_pair(LinkConditions(delay=0.005))
    _, server = sinks(pair)
    sid = pair.client.open_stream()
    data = random.Random(1).randbytes(200_000)
    pair.client.send(sid, data[:100_000])
    pair.network.run_for(0.05)
    pair.network.rebind(pair.client_address, ("10.0.0.9", 40000))
    pair.client.send(sid, data[100_000:], end=True)
    assert pair.network.run_until(lambda: sid in server.ended, 30)
    assert bytes(server.received[sid]) == data
    assert any(r.source == ("10.0.0.9", 40000) for r in pair.network.trace)


def test_finish_is_send_with_end() -> None:
    pair = connected_pair()
    _, server = sinks(pair)
    sid = pair.client.open_stream()
    pair.client.send(sid, b"body")
    pair.client.finish(sid)
    assert pair.network.run_until(lambda: sid in server.ended, 5)
    assert bytes(server.received[sid]) == b"body"


def test_error_codes_are_plain_ints() -> None:
    config = Config(dev_mode=True, trust_dev_certificate=True, idle_timeout=1.0)
    pair = connected_pair(client_config=config, server_config=config)
    client, _ = sinks(pair)
    assert pair.network.run_until(lambda: client.terminated is not None, 10)
    assert type(client.terminated.error_code) is int  # type: ignore[union-attr]
