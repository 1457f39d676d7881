"""Arbitrary bytes fed to receive_datagram: no undocumented exception, bounded memory."""

import random
import tracemalloc

import pytest
from hypothesis import given, target
from hypothesis import strategies as st

from sansquic import Config, Connection, ConnectionState, Endpoint, RateLimits, Role, StreamReadable
from sansquic.testing import LinkConditions, Pair, connected_pair

PEER = ("10.0.0.66", 666)
SERVER_CONFIG = Config(dev_mode=True, trust_dev_certificate=True)

# Long-header Initial of version 1 with a plausible layout, so fuzzing reaches
# past header parsing into the engine.
initial_like = st.builds(
    lambda dcid, scid, rest: (
        bytes([0xC0, 0, 0, 0, 1, len(dcid)]) + dcid + bytes([len(scid)]) + scid + rest
    ),
    st.binary(min_size=8, max_size=20),
    st.binary(min_size=0, max_size=20),
    st.binary(min_size=1150, max_size=1300),
)
junk = st.one_of(st.binary(max_size=1500), initial_like)


@given(datagrams=st.lists(junk, min_size=1, max_size=20))
def test_junk_to_a_fresh_server_never_raises(datagrams: list[bytes]) -> None:
    server = Connection(SERVER_CONFIG, role=Role.SERVER)
    now = 0.0
    for data in datagrams:
        server.receive_datagram(data, PEER, now)
        server.datagrams_to_send(now)
        server.handle_timer(now)
        now += 0.01
    while server.next_event() is not None:
        pass
    assert server.state in (
        ConnectionState.IDLE,
        ConnectionState.HANDSHAKING,
        ConnectionState.CLOSED,
        ConnectionState.CLOSING,
    )


def _captured_pair() -> tuple[Pair, list[bytes]]:
    """A connected pair plus real datagrams from a transfer, to mutate."""
    pair = connected_pair(LinkConditions(delay=0.001))
    sid = pair.client.open_stream()
    pair.client.send(sid, bytes(range(256)) * 40, end=True)
    pair.client.send_datagram(b"d" * 100)
    pair.network.run_for(0.5)
    captured = [d for d, _ in pair.client.datagrams_to_send(pair.network.now)]
    sid2 = pair.client.open_stream()
    pair.client.send(sid2, b"more" * 500)
    captured += [d for d, _ in pair.client.datagrams_to_send(pair.network.now)]
    assert captured
    return pair, captured


@given(
    mutations=st.lists(
        st.tuples(st.integers(0, 10_000), st.integers(0, 10_000), st.integers(1, 255)), max_size=8
    ),
    extra=st.lists(junk, max_size=5),
    truncate=st.integers(0, 1500),
)
def test_mutated_and_junk_datagrams_to_connected_peers(
    mutations: list[tuple[int, int, int]], extra: list[bytes], truncate: int
) -> None:
    pair, captured = _captured_pair()
    now = pair.network.now
    fed = []
    for which, position, xor in mutations:
        data = bytearray(captured[which % len(captured)])
        data[position % len(data)] ^= xor
        fed.append(bytes(data))
    fed += extra
    fed.append(captured[0][:truncate])
    for data in fed:
        pair.server.receive_datagram(data, pair.client_address, now)
        pair.client.receive_datagram(data, pair.server_address, now)  # from the "server"
        for conn in (pair.client, pair.server):
            conn.datagrams_to_send(now)
            while conn.next_event() is not None:
                pass
    pair.network.run_for(1.0)  # whatever happened, the pair keeps running without error


@pytest.mark.parametrize("role", ["server", "client"])
def test_junk_flood_memory_is_bounded(role: str) -> None:
    """5,000 junk datagrams grow memory by a fixed bound, on a fresh server or a live client."""
    rng = random.Random(0)
    if role == "server":
        target, source = Connection(SERVER_CONFIG, role=Role.SERVER), PEER
    else:
        pair = connected_pair()
        target, source = pair.client, pair.server_address  # junk "from the server"

    def flood(count: int, start: float) -> None:
        for i in range(count):
            now = start + i * 0.001
            dcid = rng.randbytes(8)
            data = bytes([0xC0, 0, 0, 0, 1, 8]) + dcid + b"\x00" + rng.randbytes(1200)
            short = bytes([0x40]) + rng.randbytes(rng.randrange(20, 1400))
            target.receive_datagram(rng.choice([data, short, rng.randbytes(1500)]), source, now)
            target.datagrams_to_send(now)
            target.handle_timer(now)
            while target.next_event() is not None:
                pass

    flood(500, 100.0)  # warm up caches and the engine
    received = target.stats().udp_datagrams_received
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    flood(5000, 101.0)
    grown = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert grown < 256 * 1024, f"memory grew by {grown} bytes over 5,000 junk datagrams"
    assert target.stats().udp_datagrams_received == received + 5000


ENDPOINT_LIMITS = RateLimits(
    max_connections=6,
    max_connections_per_address=2,
    max_handshakes=4,
    new_connections_per_second=3,
    retry="never",
    responses_per_second=50,
    max_tracked_addresses=8,
)


def _initial(dcid: bytes, scid: bytes, token: bytes, payload: bytes) -> bytes:
    """A client Initial that parses: version 1, varint token and length, junk payload."""
    length = len(payload)
    return (
        bytes([0xC3, 0, 0, 0, 1, len(dcid)])
        + dcid
        + bytes([len(scid)])
        + scid
        + bytes([len(token)])
        + token
        + bytes([0x40 | length >> 8, length & 0xFF])
        + payload
    )


admissible_initial = st.builds(
    _initial,
    st.binary(min_size=8, max_size=20),
    st.binary(min_size=0, max_size=20),
    st.one_of(st.just(b""), st.just(b""), st.binary(min_size=1, max_size=60)),
    # The payload never decrypts whatever it holds, so only its size matters.
    st.builds(
        lambda size, fill: bytes([fill]) * size, st.integers(1180, 1300), st.integers(0, 255)
    ),
)
short_header = st.builds(
    lambda dcid, rest: bytes([0x40]) + dcid + rest,
    st.binary(min_size=8, max_size=8),
    st.binary(min_size=0, max_size=60),
)


@given(
    datagrams=st.lists(
        st.tuples(
            st.integers(0, 3),
            st.one_of(
                admissible_initial, admissible_initial, admissible_initial, junk, short_header
            ),
            st.floats(0, 0.5),
        ),
        min_size=8,
        max_size=60,
    )
)
def test_random_datagrams_to_an_endpoint_never_crash_or_overadmit(
    datagrams: list[tuple[int, bytes, float]],
) -> None:
    endpoint = Endpoint(
        Config(dev_mode=True, trust_dev_certificate=True, rate_limits=ENDPOINT_LIMITS), server=True
    )
    now = 0.0
    for source, data, gap in datagrams:
        now += gap
        endpoint.receive_datagram(data, (f"10.0.0.{source}", 4000), now)
        endpoint.datagrams_to_send(now)
        endpoint.handle_timer(now)
        while endpoint.next_event() is not None:
            pass
        stats = endpoint.stats()
        assert stats.active <= 6 and stats.handshakes <= 4
        assert all(n <= 2 for n in endpoint._per_address.values())
        assert stats.tracked_addresses <= 8
    stats = endpoint.stats()
    target(float(stats.accepted + sum(stats.refused.values())), label="admission decisions")
    assert stats.outcomes() == stats.datagrams_received == len(datagrams)


STREAM_BODIES = (bytes(range(256)) * 60, b"x" * 5000, b"")


@given(
    sizes=st.lists(st.integers(1, 16), min_size=1, max_size=12),
    junk_in=st.lists(st.tuples(st.integers(0, 200), junk), max_size=4),
    seed=st.integers(0, 2**16),
)
def test_bursts_through_receive_datagrams_deliver_every_byte_in_order(
    sizes: list[int], junk_in: list[tuple[int, bytes]], seed: int
) -> None:
    """A server endpoint fed in bursts (``receive_datagrams``: each connection catches
    up once per burst), shuffled within each burst and with junk mixed in, still
    delivers every stream byte once, in order, each stream's events in order."""
    rng = random.Random(seed)
    client_address, server_address = ("10.0.0.1", 5000), ("10.0.0.2", 4433)
    client = Endpoint(Config(trust_dev_certificate=True))
    server = Endpoint(SERVER_CONFIG, server=True)
    now = 0.0
    conn = client.connect(server_address, now, server_name="localhost")
    junk_at = dict(junk_in)
    to_server: list[bytes] = []
    received: dict[int, bytearray] = {}
    events: dict[int, list[str]] = {}
    streams: list[int] = []
    fed = bursts = 0
    for _ in range(3000):  # virtual milliseconds: the transfer ends long before
        if conn.state is ConnectionState.CONNECTED and not streams:
            for body in STREAM_BODIES:
                stream_id = conn.open_stream()
                conn.send(stream_id, body, end=True)
                streams.append(stream_id)
        to_server += [data for data, _ in client.datagrams_to_send(now)]
        size = sizes[bursts % len(sizes)]
        burst, to_server = to_server[:size], to_server[size:]
        if burst:
            bursts += 1
            rng.shuffle(burst)  # reordering within one burst (loss recovery copes)
            if bursts in junk_at:
                burst.insert(rng.randrange(len(burst) + 1), junk_at[bursts])
            fed += len(burst)
            server.receive_datagrams([(data, client_address) for data in burst], now)
            # Caught up at once: a runtime wakes its tasks before it sends.
            assert not any(c._engine.has_events() for c in server.connections)  # type: ignore[union-attr]
        for data, _ in server.datagrams_to_send(now):
            client.receive_datagram(data, server_address, now)
        while (item := server.next_event()) is not None:
            peer, event = item
            stream_id = getattr(event, "stream_id", None)
            if stream_id is None:
                continue
            events.setdefault(stream_id, []).append(type(event).__name__)
            if isinstance(event, StreamReadable):
                while chunk := peer.read(stream_id):
                    received.setdefault(stream_id, bytearray()).extend(chunk)
        while client.next_event() is not None:
            pass
        if streams and all("StreamEnded" in events.get(s, ()) for s in streams):
            break
        now += 0.001
        client.handle_timer(now)
        server.handle_timer(now)
    else:
        raise AssertionError(f"the transfer did not end: {events}")
    for stream_id, body in zip(streams, STREAM_BODIES, strict=True):
        assert bytes(received.get(stream_id, b"")) == body
        seen = events[stream_id]
        assert seen[0] == "StreamOpened" and seen[-1] == "StreamEnded", seen
        assert seen.count("StreamOpened") == seen.count("StreamEnded") == 1, seen
    assert server.stats().datagrams_received == fed
