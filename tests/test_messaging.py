"""The messaging layer's pure pieces: framing, envelope, lanes, router, backoff, breaker,
queue, window, channel and pool."""

from __future__ import annotations

import contextlib
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

import sansquic
from sansquic import messaging as m

# -- framing ------------------------------------------------------------------------


@given(
    bodies=st.lists(st.binary(max_size=300), max_size=20),
    cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=30),
)
def test_frames_survive_any_split(bodies: list[bytes], cuts: list[int]) -> None:
    wire = b"".join(m.encode_frame(b) for b in bodies)
    points = sorted({c % (len(wire) + 1) for c in cuts})
    decoder = m.FrameDecoder(max_frame_size=300)
    got: list[bytes] = []
    for start, end in zip([0, *points], [*points, len(wire)], strict=True):
        decoder.feed(wire[start:end])
        while (frame := decoder.next_frame()) is not None:
            got.append(frame)
    assert got == bodies
    assert decoder.pending == 0


def test_an_oversized_prefix_raises_before_its_body_arrives() -> None:
    decoder = m.FrameDecoder(max_frame_size=10)
    with pytest.raises(m.FrameTooLarge) as info:
        decoder.feed((11).to_bytes(4, "big"))
    assert (info.value.size, info.value.limit) == (11, 10)
    with pytest.raises(m.FrameTooLarge):  # and it stays failed
        decoder.feed(b"")
    with pytest.raises(m.MessageTooLarge):
        m.encode_frame(b"x" * 11, max_frame_size=10)
    assert issubclass(m.MessageTooLarge, sansquic.LocalProtocolError)


@given(junk=st.binary(max_size=200))
def test_frame_decoder_on_junk_raises_only_frame_too_large(junk: bytes) -> None:
    decoder = m.FrameDecoder(max_frame_size=64)
    try:
        decoder.feed(junk)
    except m.FrameTooLarge:
        return
    while decoder.next_frame() is not None:
        pass
    assert decoder.pending < 4 + 64


# -- envelope -----------------------------------------------------------------------

types = st.text(min_size=1, max_size=40).filter(lambda t: len(t.encode()) <= 255)


@given(
    ident=st.integers(min_value=0, max_value=2**64 - 1),
    kind=types,
    ts=st.floats(allow_nan=False, allow_infinity=False),
    payload=st.binary(max_size=200),
)
def test_envelope_round_trips(ident: int, kind: str, ts: float, payload: bytes) -> None:
    env = m.Envelope(id=ident, type=kind, timestamp=ts, payload=payload)
    assert m.decode_envelope(m.encode_envelope(env)) == env


@given(junk=st.binary(max_size=100))
def test_envelope_decode_of_junk_raises_only_envelope_error(junk: bytes) -> None:
    try:
        env = m.decode_envelope(junk)
    except m.EnvelopeError:
        return
    assert m.encode_envelope(env) == junk  # whatever decodes, re-encodes to the same bytes


def test_envelope_encoding_is_versioned_and_checked() -> None:
    data = m.encode_envelope(m.Envelope(id=1, type="t", timestamp=0.0))
    assert data[0] == m.ENVELOPE_VERSION
    with pytest.raises(m.EnvelopeError, match="version"):
        m.decode_envelope(bytes([9]) + data[1:])
    with pytest.raises(sansquic.LocalProtocolError):
        m.encode_envelope(m.Envelope(id=1, type="", timestamp=0.0))
    with pytest.raises(sansquic.LocalProtocolError):
        m.encode_envelope(m.Envelope(id=-1, type="t", timestamp=0.0))
    with pytest.raises(sansquic.LocalProtocolError):
        m.encode_envelope(m.Envelope(id=1, type="t", timestamp=float("nan")))


# -- lanes and router ----------------------------------------------------------------


def test_default_lanes_put_control_on_critical_and_bulk_on_low() -> None:
    lanes = m.DEFAULT_LANES
    assert lanes.lane_for("job.start").priority == sansquic.Priority.CRITICAL
    assert lanes.lane_for("bulk.upload").priority == sansquic.Priority.LOW
    assert lanes.lane_for("sq.ack") is lanes.control


def test_lane_table_takes_the_longest_prefix_and_refuses_bad_tables() -> None:
    table = m.LaneTable(
        lanes=(m.Lane(name="c", priority=255), m.Lane(name="b", priority=64)),
        routes={"x.": "b", "x.urgent.": "c"},
    )
    assert table.lane_for("x.file").name == "b"
    assert table.lane_for("x.urgent.stop").name == "c"
    assert table.lane_for("other").name == "c"
    with pytest.raises(sansquic.LocalProtocolError):
        m.LaneTable(lanes=(m.Lane(name="c", priority=1),), routes={"x": "nope"})
    with pytest.raises(sansquic.LocalProtocolError):
        m.LaneTable(lanes=(m.Lane(name="c", priority=1), m.Lane(name="c", priority=2)))
    with pytest.raises(sansquic.LocalProtocolError):
        m.LaneTable(lanes=(m.Lane(name="c", priority=256),))


def test_router_prefers_exact_then_longest_prefix_then_fallback() -> None:
    router: m.Router[str] = m.Router(fallback="fallback")
    router.add("job.start", "exact")
    router.add("job.", "job")
    router.add("job.admin.*", "admin")
    assert router.handler_for("job.start") == "exact"
    assert router.handler_for("job.stop") == "job"
    assert router.handler_for("job.admin.kill") == "admin"
    assert router.handler_for("ping") == "fallback"
    with pytest.raises(sansquic.LocalProtocolError):
        router.add("job.start", "again")
    assert m.Router[str]().handler_for("x") is None


# -- backoff and breaker -------------------------------------------------------------


@given(seed=st.integers(), failures=st.integers(min_value=1, max_value=60))
def test_backoff_stays_under_its_exponential_ceiling_and_replays(seed: int, failures: int) -> None:
    a = m.Backoff(random.Random(seed), base=0.1, cap=5.0)
    b = m.Backoff(random.Random(seed), base=0.1, cap=5.0)
    delays = [a.next_delay() for _ in range(failures)]
    assert delays == [b.next_delay() for _ in range(failures)]
    for n, delay in enumerate(delays):
        assert 0.0 <= delay <= min(5.0, 0.1 * 2**n)
    a.reset()
    assert a.next_delay() <= 0.1


def test_backoff_jitter_spreads_and_rejects_bad_settings() -> None:
    backoff = m.Backoff(random.Random(1), base=1.0, cap=1.0)
    assert len({round(backoff.next_delay(), 6) for _ in range(20)}) > 10
    with pytest.raises(sansquic.LocalProtocolError):
        m.Backoff(random.Random(1), base=0)


def test_circuit_breaker_opens_cools_down_and_tries_once() -> None:
    breaker = m.CircuitBreaker(threshold=2, cooldown=10.0)
    assert breaker.allow(0.0)
    breaker.record_failure(0.0)
    assert breaker.state(0.0) is m.BreakerState.CLOSED
    breaker.record_failure(1.0)
    assert breaker.state(1.0) is m.BreakerState.OPEN
    assert not breaker.allow(5.0)
    assert breaker.retry_at(5.0) == 11.0
    assert breaker.state(11.0) is m.BreakerState.HALF_OPEN
    assert breaker.allow(11.0)
    assert not breaker.allow(11.0)  # one trial at a time
    breaker.record_failure(12.0)  # the trial failed: open again at once
    assert breaker.state(12.0) is m.BreakerState.OPEN
    assert breaker.allow(22.0)
    breaker.record_success(22.0)
    assert breaker.state(22.0) is m.BreakerState.CLOSED
    assert breaker.allow(22.0)


# -- queue and window -----------------------------------------------------------------


def test_send_queue_retransmits_unacked_after_rewind_and_refuses_when_full() -> None:
    queue = m.SendQueue(max_unacked=3)
    ids = [queue.push("t", bytes([i]), now=float(i)).id for i in range(3)]
    assert ids == [1, 2, 3]
    with pytest.raises(m.QueueFull):
        queue.push("t", b"", now=0.0)
    assert [e.id for e in queue.take()] == [1, 2, 3]
    assert queue.take() == []
    assert queue.ack(2) == 2
    queue.rewind()
    assert [e.id for e in queue.take()] == [3]
    with pytest.raises(m.WindowExceeded):
        queue.ack(9)
    assert queue.unacked == 1


@given(
    ids=st.lists(st.integers(min_value=1, max_value=40), max_size=200),
    size=st.integers(min_value=1, max_value=50),
)
def test_receive_window_delivers_each_id_once_with_bounded_memory(
    ids: list[int], size: int
) -> None:
    window = m.ReceiveWindow(size)
    delivered: list[int] = []
    for ident in ids:
        try:
            if window.accept(ident):
                delivered.append(ident)
        except m.WindowExceeded:
            assert ident > window.floor + size
        assert window.remembered <= size
    assert len(delivered) == len(set(delivered))
    assert set(range(1, window.floor + 1)) <= set(delivered)


# -- channel ------------------------------------------------------------------------


def _pump(src: m.MessageChannel, dst: m.MessageChannel, generation: int) -> None:
    for lane, data in src.data_to_send():
        dst.receive(generation, lane.name, data)


def test_channel_resends_after_reconnect_and_the_peer_drops_duplicates() -> None:
    client, server = m.MessageChannel(b"abc"), m.MessageChannel(b"abc")
    g1 = client.attach()
    server.attach(g1)
    for i in range(5):
        client.send("bulk.data" if i % 2 else "job", bytes([i]), now=0.0)
    _pump(client, server, g1)  # arrives, but the ack back is lost with the connection
    client.detach()
    server.detach()
    g2 = client.attach()
    server.attach(g2)
    _pump(client, server, g2)
    _pump(server, client, g2)
    got = []
    while (env := server.next_message()) is not None:
        got.append((env.type, env.payload))
    # In order per lane (control: 0, 2, 4; bulk: 1, 3), each exactly once.
    assert [p for t, p in got if t == "job"] == [b"\x00", b"\x02", b"\x04"]
    assert [p for t, p in got if t == "bulk.data"] == [b"\x01", b"\x03"]
    assert server.duplicates == 5
    assert client.queue.unacked == 0  # the server's hello carried its floor


def test_channel_ignores_a_stale_generation_and_refuses_junk() -> None:
    client, server = m.MessageChannel(b"abc"), m.MessageChannel(b"abc")
    g1 = client.attach()
    server.attach(g1)
    client.send("job", b"old", now=0.0)
    stale = client.data_to_send()
    g2 = client.attach()
    server.attach(g2)
    for lane, data in stale:
        server.receive(g1, lane.name, data)  # a late stream of the dead connection
    assert server.next_message() is None
    with pytest.raises(m.MessageFormatError):
        server.attach(g1)
    with pytest.raises(m.MessageFormatError):
        server.receive(g2, "control", m.encode_frame(b"\x01junk"))
    fresh = m.MessageChannel(b"abc")
    fresh.attach(1)
    ack = m.Envelope(id=0, type="sq.ack", timestamp=0.0, payload=bytes(8))
    with pytest.raises(m.EnvelopeError, match="hello"):
        fresh.receive(1, "control", m.encode_frame(m.encode_envelope(ack)))


def test_channel_refuses_misuse_before_queueing() -> None:
    channel = m.MessageChannel(b"x", max_frame_size=64, max_unacked=1, window=1)
    with pytest.raises(sansquic.LocalProtocolError):
        channel.send("sq.ack", b"", now=0.0)
    with pytest.raises(m.MessageTooLarge):
        channel.send("t", b"x" * 64, now=0.0)
    channel.send("t", b"", now=0.0)
    with pytest.raises(m.QueueFull):
        channel.send("t", b"", now=0.0)
    assert channel.queue.unacked == 1
    with pytest.raises(sansquic.LocalProtocolError):
        m.MessageChannel(b"")
    with pytest.raises(sansquic.LocalProtocolError):
        m.MessageChannel(b"x", max_unacked=10, window=5)


@given(junk=st.binary(max_size=300), lane=st.sampled_from(["control", "bulk"]))
def test_channel_on_junk_raises_only_message_format_errors(junk: bytes, lane: str) -> None:
    channel = m.MessageChannel(b"abc")
    g = channel.attach()
    hello = m.Hello(session_id=b"abc", generation=g, received=0)
    opening = m.Envelope(id=0, type="sq.hello", timestamp=0.0, payload=hello.encode())
    channel.receive(g, "control", m.encode_frame(m.encode_envelope(opening)))
    with contextlib.suppress(m.MessageFormatError):
        channel.receive(g, lane, junk)


def test_first_envelope_reads_the_hello_once_it_is_whole() -> None:
    channel = m.MessageChannel(b"sess")
    g = channel.attach()
    (control, data), *_ = channel.data_to_send()
    assert control.name == "control"
    assert m.first_envelope(data[:5]) is None
    env = m.first_envelope(data)
    assert env is not None and env.type == "sq.hello"
    assert m.Hello.decode(env.payload) == m.Hello(session_id=b"sess", generation=g, received=0)


# -- pool ---------------------------------------------------------------------------


def test_pool_reuses_dials_and_waits_for_the_breaker() -> None:
    pool: m.Pool[str] = m.Pool(threshold=1, cooldown=5.0)
    key = ("127.0.0.1", 4433)
    assert pool.choose(key, 0.0) == m.Dial()
    pool.failed(key, 0.0)
    assert pool.choose(key, 1.0) == m.Wait(5.0)
    assert pool.choose(key, 5.0) == m.Dial()  # half-open trial
    pool.connected(key, "conn-1", 5.0)
    assert pool.choose(key, 6.0) == m.Reuse("conn-1")
    assert pool.choose(("127.0.0.1", 4434), 6.0) == m.Dial()  # keyed by host:port
    pool.lost(key, "conn-0")  # an older connection: no effect
    assert len(pool) == 1
    pool.lost(key, "conn-1")
    assert pool.choose(key, 7.0) == m.Dial()
    stats = pool.stats(key)
    assert (stats.reuses, stats.dials, stats.failures, stats.refusals) == (1, 3, 1, 1)


@given(st.binary(min_size=65, max_size=255), st.integers(0, 2**32 - 1))
def test_a_hello_with_a_session_id_over_64_bytes_is_the_peers_error(
    session_id: bytes, generation: int
) -> None:
    payload = m.Hello(session_id=session_id, generation=generation, received=0).encode()
    with pytest.raises(m.EnvelopeError, match="over 64"):
        m.Hello.decode(payload)


def test_attach_refuses_a_generation_jump_that_would_lock_the_client_out() -> None:
    channel = m.MessageChannel(b"victim")
    assert channel.attach(1) == 1
    with pytest.raises(m.MessageFormatError, match="too far"):
        channel.attach(0xFFFFFFFE)
    assert channel.generation == 1  # nothing changed: the real client's next one fits
    assert channel.attach(2) == 2
    assert channel.attach(2 + 65536) == 65538  # lost connections in between are fine


def test_first_envelope_limits_only_the_first_frame() -> None:
    hello = m.Envelope(id=0, type="sq.hello", timestamp=0.0, payload=b"h")
    big = m.Envelope(id=1, type="bulk.data", timestamp=0.0, payload=bytes(2000))
    data = m.encode_frame(m.encode_envelope(hello)) + m.encode_frame(m.encode_envelope(big))
    assert m.first_envelope(data, 512) == hello  # a big message after it is fine
    assert m.first_envelope(data[:3], 512) is None
    with pytest.raises(m.FrameTooLarge):
        m.first_envelope(m.encode_frame(m.encode_envelope(big)), 512)
