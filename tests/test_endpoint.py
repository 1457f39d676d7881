"""Endpoint: routing, admission, Retry, stateless answers and cleanup, on the simulated network."""

import random
import tracemalloc
from functools import partial

import pytest

from sansquic import (
    ClosedBy,
    Config,
    Connection,
    ConnectionState,
    Endpoint,
    LocalProtocolError,
    RateLimits,
)
from sansquic._aioquic import parse_header
from sansquic._retry import RetryTokens
from sansquic.testing import EchoServer, LinkConditions, SimNetwork, StreamSink

SERVER = ("10.0.0.2", 4433)
CLIENT = ("10.0.0.1", 5000)
CONNECTION_REFUSED = 0x02


def limits(**changes: object) -> RateLimits:
    return RateLimits(**changes)  # type: ignore[arg-type]


class World:
    """A server endpoint with an echo app, and client endpoints added on demand."""

    def __init__(
        self,
        rate_limits: RateLimits | None = None,
        *,
        delay: float = 0.002,
        seed: int = 1,
        keep_trace: bool = True,
    ):
        self.config = Config(
            dev_mode=True, trust_dev_certificate=True, rate_limits=rate_limits or RateLimits()
        )
        self.net = SimNetwork(seed, conditions=LinkConditions(delay=delay), keep_trace=keep_trace)
        self.server = Endpoint(self.config, server=True)
        self.net.add(SERVER, self.server)
        self.echo = EchoServer(self.server)
        self.net.step_hooks.append(self.echo.pump)
        self.clients: dict[tuple[str, int], Endpoint] = {}

    def client(self, address: tuple[str, int]) -> Endpoint:
        if address not in self.clients:
            endpoint = self.clients[address] = Endpoint(self.config)
            self.net.add(address, endpoint)
        return self.clients[address]

    def connect(self, address: tuple[str, int]) -> tuple[Connection, StreamSink]:
        conn = self.client(address).connect(SERVER, self.net.now, server_name="localhost")
        sink = StreamSink(conn)
        self.net.step_hooks.append(sink.pump)
        return conn, sink


def settled(conns: list[Connection]) -> bool:
    return all(c.state in (ConnectionState.CONNECTED, ConnectionState.CLOSED) for c in conns)


def all_closed(conns: list[Connection]) -> bool:
    return all(c.state is ConnectionState.CLOSED for c in conns)


def stats_add_up(endpoint: Endpoint) -> None:
    stats = endpoint.stats()
    assert stats.datagrams_received == stats.outcomes(), stats


@pytest.mark.slow
def test_500_clients_through_one_server_endpoint() -> None:
    world = World(delay=0.005)
    clients = [world.connect((f"10.1.{i // 200}.{i % 200 + 1}", 5000)) for i in range(500)]
    conns = [conn for conn, _ in clients]
    assert world.net.run_until(lambda: settled(conns), 60)
    assert all(c.state is ConnectionState.CONNECTED for c in conns)
    for i, (conn, _) in enumerate(clients):
        conn.send(conn.open_stream(), f"client {i}".encode() * 50, end=True)
    assert world.net.run_until(lambda: all(0 in sink.ended for _, sink in clients), 60)
    for i, (_, sink) in enumerate(clients):
        assert bytes(sink.received[0]) == f"client {i}".encode() * 50
    stats = world.server.stats()
    assert stats.accepted == stats.active == 500
    assert stats.retries > 0  # 500 handshakes at once crossed the under-load threshold
    stats_add_up(world.server)


def test_the_11th_connection_from_one_address_is_refused() -> None:
    world = World(limits(max_connections_per_address=10, new_connections_per_second=None))
    clients = [world.connect(("10.0.0.1", 5000)) for _ in range(11)]
    first = [conn for conn, _ in clients]
    assert world.net.run_until(lambda: settled(first), 10)
    states = [c.state for c in first]
    assert states.count(ConnectionState.CONNECTED) == 10
    refused = [sink.terminated for conn, sink in clients if conn.state is ConnectionState.CLOSED]
    assert len(refused) == 1 and refused[0] is not None
    assert (refused[0].error_code, refused[0].by_peer) == (CONNECTION_REFUSED, True)
    other, _ = world.connect(("10.0.0.9", 5000))  # another address still gets in
    assert world.net.run_until(lambda: other.state is ConnectionState.CONNECTED, 10)
    assert world.server.stats().refused == {"connections per address": 1}
    stats_add_up(world.server)


def test_per_prefix_grouping() -> None:
    world = World(
        limits(max_connections_per_address=2, new_connections_per_second=None, ipv4_prefix=24)
    )
    conns = [world.connect((f"10.5.5.{i}", 5000))[0] for i in range(1, 4)]
    assert world.net.run_until(lambda: settled(conns), 10)
    assert [c.state for c in conns].count(ConnectionState.CONNECTED) == 2


def test_new_connection_rate_limit_holds() -> None:
    world = World(limits(new_connections_per_second=5, max_connections_per_address=None))
    burst = [world.connect(("10.0.0.1", 5000))[0] for _ in range(12)]
    assert world.net.run_until(lambda: settled(burst), 10)
    assert [c.state for c in burst].count(ConnectionState.CONNECTED) == 5  # the bucket's burst
    world.net.run_for(1.0)  # five more tokens
    later = [world.connect(("10.0.0.1", 5000))[0] for _ in range(6)]
    assert world.net.run_until(lambda: settled(later), 10)
    assert [c.state for c in later].count(ConnectionState.CONNECTED) == 5
    assert world.server.stats().refused["new connection rate"] == 8


def test_retry_round_trip() -> None:
    world = World(limits(retry="always"))
    conn, sink = world.connect(("10.0.0.1", 5000))
    assert world.net.run_until(lambda: conn.state is ConnectionState.CONNECTED, 10)
    conn.send(conn.open_stream(), b"after retry", end=True)
    assert world.net.run_until(lambda: 0 in sink.ended, 10)
    assert bytes(sink.received[0]) == b"after retry"
    stats = world.server.stats()
    assert (stats.retries, stats.accepted, stats.invalid_tokens) == (1, 1, 0)
    stats_add_up(world.server)


def _initial_with_token(server: Endpoint, now: float) -> bytes:
    """Run a client up to its second Initial, which carries the server's Retry token."""
    client = Endpoint(Config(dev_mode=True, trust_dev_certificate=True))
    client.connect(SERVER, now, server_name="localhost")
    for data, _ in client.datagrams_to_send(now):
        server.receive_datagram(data, ("10.0.0.1", 5000), now)
    ((retry, _),) = server.datagrams_to_send(now)
    client.receive_datagram(retry, SERVER, now)
    (initial, _), *_ = client.datagrams_to_send(now)
    header = parse_header(initial)
    assert header is not None and header.token
    return initial


def test_forged_expired_and_other_address_tokens_are_refused() -> None:
    config = Config(
        dev_mode=True,
        trust_dev_certificate=True,
        rate_limits=limits(retry="always", retry_token_lifetime=5.0),
    )
    server = Endpoint(config, server=True)
    initial = _initial_with_token(server, 0.0)
    server.receive_datagram(initial, ("10.0.0.66", 5000), 0.1)  # another address
    server.receive_datagram(initial, ("10.0.0.1", 5000), 6.0)  # expired
    forged = bytearray(initial)
    header = parse_header(initial)
    assert header is not None
    forged[initial.index(header.token) + 12] ^= 1  # inside the token
    server.receive_datagram(bytes(forged), ("10.0.0.1", 5000), 0.2)
    other_server = Endpoint(config, server=True)  # a different key: the token is foreign
    other_server.receive_datagram(initial, ("10.0.0.1", 5000), 0.1)
    assert server.stats().invalid_tokens == 3 and server.stats().accepted == 0
    assert other_server.stats().invalid_tokens == 1
    server.receive_datagram(initial, ("10.0.0.1", 5000), 0.3)  # the genuine one still works
    assert server.stats().accepted == 1
    stats_add_up(server)


def test_retry_tokens_unit() -> None:
    tokens = RetryTokens(lifetime=10, rotate_every=30, now=0)
    token = tokens.issue(("1.2.3.4", 5), b"odcid123", b"scid5678", now=0)
    assert tokens.validate(token, ("1.2.3.4", 5), b"scid5678", now=1) == b"odcid123"
    assert tokens.validate(token, ("1.2.3.4", 6), b"scid5678", now=1) is None  # port differs
    assert tokens.validate(token, ("1.2.3.4", 5), b"otherscd", now=1) is None
    assert tokens.validate(token, ("1.2.3.4", 5), b"scid5678", now=10.5) is None  # expired
    assert tokens.validate(token[:-1], ("1.2.3.4", 5), b"scid5678", now=1) is None
    assert tokens.validate(b"", ("1.2.3.4", 5), b"scid5678", now=1) is None
    # Across one rotation the previous key still verifies; after two it is gone.
    late = tokens.issue(("1.2.3.4", 5), b"odcid123", b"scid5678", now=29.9)
    assert tokens.validate(late, ("1.2.3.4", 5), b"scid5678", now=30.1) == b"odcid123"
    tokens.validate(b"", ("1.2.3.4", 5), b"", now=60.2)  # rotates again
    assert tokens.validate(late, ("1.2.3.4", 5), b"scid5678", now=39.0) is None


@pytest.mark.slow
def test_flood_of_spoofed_initials_with_one_legitimate_client() -> None:
    rate_limits = limits(max_tracked_addresses=5_000, responses_per_second=2_000)
    world = World(rate_limits)
    rng = random.Random(7)
    server = world.server

    def flood(count: int) -> None:
        """``count`` Initial-shaped datagrams from random spoofed addresses, right now."""
        now = world.net.now
        for _ in range(count):
            data = bytes([0xC3, 0, 0, 0, 1, 8]) + rng.randbytes(8) + b"\x08" + rng.randbytes(8)
            data += b"\x00\x44\xd0" + rng.randbytes(1250)  # no token, length 1232, junk
            a, b, c = rng.randrange(16, 32), rng.randrange(256), rng.randrange(256)
            server.receive_datagram(data, (f"172.{a}.{b}.{c}", 443), now)

    flood(5_000)  # the server is already under attack when the client arrives
    legit, sink = world.connect(("10.9.9.9", 5000))
    memory_at = {}
    tracemalloc.start()
    for step in range(95):  # 1,000 spoofed Initials every 10 ms: 100,000 per second
        flood(1_000)
        world.net.run_for(0.01)
        if legit.state is ConnectionState.CONNECTED and not legit.stats().streams_opened_local:
            legit.send(legit.open_stream(), b"still served", end=True)
        if step in (45, 94):
            memory_at[step] = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    assert world.net.run_until(lambda: 0 in sink.ended, 10)
    assert bytes(sink.received[0]) == b"still served"
    stats = server.stats()
    assert stats.datagrams_received >= 100_000
    assert stats.tracked_addresses <= 5_000
    grown = memory_at[94] - memory_at[45]
    assert grown < 2 * 1024 * 1024, f"memory grew {grown} bytes over the last 49,000 Initials"
    assert stats.handshakes <= rate_limits.retry_above_handshakes + 1
    assert stats.retries > 0 and stats.dropped["flood (retry)"] > 0
    stats_add_up(server)


def test_server_sends_at_most_three_times_what_an_unvalidated_client_sent() -> None:
    server = Endpoint(
        Config(dev_mode=True, trust_dev_certificate=True, rate_limits=limits(retry="never")),
        server=True,
    )
    client = Endpoint(Config(dev_mode=True, trust_dev_certificate=True))
    client.connect(SERVER, 0.0, server_name="localhost")
    first = client.datagrams_to_send(0.0)
    received = sum(len(data) for data, _ in first)
    for data, _ in first:
        server.receive_datagram(data, ("10.0.0.1", 5000), 0.0)
    sent = 0
    now = 0.0
    while now < 30.0:  # the client has gone silent; the server retransmits what it may
        sent += sum(len(data) for data, _ in server.datagrams_to_send(now))
        timer = server.timer()
        if timer is None:
            break
        now = max(now, timer)
        server.handle_timer(now)
    assert sent > 0
    assert sent <= 3 * received, (sent, received)


@pytest.mark.slow
def test_10000_connect_close_cycles_leave_the_tables_empty() -> None:
    world = World(
        limits(new_connections_per_second=None, retry="never"), delay=0.001, keep_trace=False
    )
    client = world.client(("10.0.0.1", 5000))

    def drain() -> None:
        while client.next_event() is not None:
            pass

    world.net.step_hooks.append(drain)
    for _ in range(200):
        conns = [client.connect(SERVER, world.net.now, server_name="localhost") for _ in range(50)]
        assert world.net.run_until(partial(settled, conns), 10)
        for conn in conns:
            conn.close()
        assert world.net.run_until(partial(all_closed, conns), 10)
    assert world.net.run_until(lambda: not world.server.connections, 10)
    for endpoint in (world.server, client):
        assert endpoint.connections == []
        assert endpoint._routes == {} and endpoint._entries == {}
        assert endpoint._by_remote == {} and endpoint._per_address == {}
        assert endpoint.timer() is None and endpoint._heap == []
    assert world.server.stats().accepted == 10_000


def test_routing_survives_nat_rebinding_and_connection_id_rotation() -> None:
    world = World()
    conn, sink = world.connect(("10.0.0.1", 5000))
    assert world.net.run_until(lambda: conn.state is ConnectionState.CONNECTED, 10)
    world.net.run_for(0.2)  # let the server issue spare connection ids
    sid = conn.open_stream()
    data = random.Random(2).randbytes(100_000)
    conn.send(sid, data[:50_000])
    world.net.run_for(0.01)
    conn.change_connection_id()
    world.net.rebind(("10.0.0.1", 5000), ("10.0.7.7", 6000))
    conn.send(sid, data[50_000:], end=True)
    assert world.net.run_until(lambda: sid in sink.ended, 30)
    assert bytes(sink.received[sid]) == data
    assert world.server.stats().active == 1 and world.server.stats().accepted == 1


def test_version_negotiation_for_an_unknown_version() -> None:
    server = Endpoint(Config(dev_mode=True, trust_dev_certificate=True), server=True)
    probe = (
        bytes([0xC0]) + (0x1A2A3A4A).to_bytes(4, "big") + b"\x08" + b"d" * 8 + b"\x08" + b"s" * 8
    )
    server.receive_datagram(probe + bytes(1200), ("10.0.0.1", 5000), 0.0)
    server.receive_datagram(probe + bytes(100), ("10.0.0.1", 5000), 0.0)  # too small: no answer
    ((answer, address),) = server.datagrams_to_send(0.0)
    header = parse_header(answer)
    assert address == ("10.0.0.1", 5000) and header is not None and header.negotiation
    assert answer.endswith((1).to_bytes(4, "big"))  # offers QUIC v1
    assert server.stats().version_negotiations == 1
    stats_add_up(server)


def restart_server_under_a_client(
    old_key: bytes, new_key: bytes
) -> tuple[Endpoint, Endpoint, StreamSink]:
    """A client connected to a server that then restarts (same address, no state) with
    ``new_key``; the client sends once more. Returns (restarted server, client, its sink)."""
    config = Config(dev_mode=True, trust_dev_certificate=True, idle_timeout=3.0)
    net = SimNetwork(3, conditions=LinkConditions(delay=0.002))
    client = Endpoint(config)
    net.add(SERVER, Endpoint(config, server=True, reset_key=old_key))
    net.add(("10.0.0.1", 5000), client)
    conn = client.connect(SERVER, net.now, server_name="localhost")
    sink = StreamSink(conn)
    net.step_hooks.append(sink.pump)
    assert net.run_until(lambda: conn.state is ConnectionState.CONNECTED, 10)
    net.run_for(1.0)  # the handshake is confirmed; no Initial is in flight any more
    restarted = net._nodes[SERVER] = Endpoint(config, server=True, reset_key=new_key)
    conn.send(conn.open_stream(), b"anyone there?")
    assert net.run_until(lambda: sink.terminated is not None, 10)
    return restarted, client, sink


def test_stateless_reset_after_a_server_restart() -> None:
    key = bytes(range(32))
    restarted, client, sink = restart_server_under_a_client(key, key)
    assert sink.terminated is not None
    assert (sink.terminated.reason, sink.terminated.by_peer) == ("stateless reset", True)
    assert sink.terminated.closed_by is ClosedBy.STATELESS_RESET
    assert restarted.stats().stateless_resets >= 1
    assert client.connections == []


def test_a_reset_with_the_wrong_key_is_ignored() -> None:
    restarted, _, sink = restart_server_under_a_client(bytes(range(32)), bytes(32))
    assert restarted.stats().stateless_resets >= 1  # it answered, with tokens the client rejects
    assert sink.terminated is not None and sink.terminated.reason == "idle timeout"


def test_endpoint_misuse() -> None:
    with pytest.raises(LocalProtocolError):
        Endpoint(Config(), server=True)  # no certificate
    with pytest.raises(LocalProtocolError):
        Endpoint(Config(dev_mode=True, trust_dev_certificate=True), reset_key=b"short")
    with pytest.raises(TypeError):
        Endpoint({})  # type: ignore[arg-type]


def test_prehandshake_datagrams_from_one_address_are_rate_limited() -> None:
    config = Config(
        dev_mode=True,
        trust_dev_certificate=True,
        rate_limits=limits(prehandshake_datagrams_per_second=50),
    )
    server = Endpoint(config, server=True)

    def junk(i: int) -> bytes:  # each with its own connection id: none is routable
        return (
            bytes([0xC3, 0, 0, 0, 1, 8]) + i.to_bytes(8, "big") + b"\x00\x00\x44\xd0" + bytes(1250)
        )

    for i in range(500):  # 500 in one second from one address
        server.receive_datagram(junk(i), ("10.0.0.1", 4000), i / 500)
    server.receive_datagram(junk(999), ("10.0.0.2", 4000), 0.5)  # another address gets through
    assert server.stats().accepted >= 2
    stats = server.stats()
    assert 50 <= stats.dropped["flood (pre-handshake rate)"] <= 500 - 50
    assert stats.dropped["flood (pre-handshake rate)"] >= 500 - 50 - 50 - 1  # burst + refill
    stats_add_up(server)


def test_stateless_resets_are_rate_bounded() -> None:
    config = Config(
        dev_mode=True, trust_dev_certificate=True, rate_limits=limits(responses_per_second=100)
    )
    server = Endpoint(config, server=True)
    for i in range(2000):  # unknown short-header packets over 2 seconds
        server.receive_datagram(bytes([0x41]) + bytes(60), ("10.0.0.1", 4000), i / 1000)
    resets = [d for d, _ in server.datagrams_to_send(2.0)]
    assert len(resets) == server.stats().stateless_resets
    assert 100 <= len(resets) <= 100 + 2 * 100 + 1  # burst, plus the refill over 2 s
    assert all(len(r) < 61 for r in resets)  # always smaller than what triggered them
    stats_add_up(server)


def test_retired_connection_ids_leave_the_routing_table() -> None:
    world = World()
    conn, sink = world.connect(("10.0.0.1", 5000))
    assert world.net.run_until(lambda: conn.state is ConnectionState.CONNECTED, 10)
    world.net.run_for(0.2)
    for i in range(30):  # the client rotates through the server's ids
        conn.change_connection_id()
        conn.send(conn.open_stream(), b"%d" % i, end=True)
        world.net.run_for(0.05)
    assert world.net.run_until(lambda: len(sink.ended) == 30, 10)
    assert [bytes(sink.received[s]) for s in sorted(sink.received)] == [
        b"%d" % i for i in range(30)
    ]
    # Live ids: at most the 8 the engine keeps, plus the client's original destination id.
    assert len(world.server._routes) <= 9


def _connected_world() -> tuple[World, Endpoint, Connection]:
    """A World with one connected client; the network left quiet."""
    world = World()
    conn, _sink = world.connect(CLIENT)
    assert world.net.run_until(lambda: conn.state is ConnectionState.CONNECTED, 5.0)
    world.net.run_for(0.1)  # the last handshake acknowledgements
    return world, world.clients[CLIENT], conn


def test_1rtt_datagrams_are_routed_and_timers_stay_exact() -> None:
    world, client, conn = _connected_world()
    server, now = world.server, world.net.now
    sid = conn.open_stream()
    conn.send(sid, b"ping")
    (data, _addr), *_ = client.datagrams_to_send(now)
    assert not data[0] & 0x80  # a short header: the routing fast path
    routed = server.stats().datagrams_routed
    server.receive_datagram(data, CLIENT, now)
    assert server.stats().datagrams_routed == routed + 1
    (peer,) = server.connections
    # Asked before datagrams_to_send(), timer() is still the connection's own.
    assert server.timer() == peer.timer()
    assert peer.read(sid) == b"ping"
    # The same packet without the fixed bit is not QUIC: dropped before any connection.
    dropped = server.stats().dropped.get("unparseable", 0)
    server.receive_datagram(bytes([data[0] & ~0x40]) + data[1:], CLIENT, now)
    assert server.stats().dropped.get("unparseable", 0) == dropped + 1
    assert server.stats().datagrams_routed == routed + 1


def test_handle_timer_says_whether_anything_was_due() -> None:
    world, _client, _conn = _connected_world()
    server, now = world.server, world.net.now
    server.datagrams_to_send(now)
    deadline = server.timer()
    assert deadline is not None and deadline > now
    assert server.handle_timer(now) is False
    assert server.handle_timer(deadline) is True


def _connected_pair() -> tuple[Endpoint, Endpoint, Connection, float]:
    """A client and server connected by hand on a lossless path: (client, server, the
    client's connection, the time)."""
    client = Endpoint(Config(trust_dev_certificate=True))
    server = Endpoint(Config(dev_mode=True, trust_dev_certificate=True), server=True)
    now = 0.0
    conn = client.connect(SERVER, now, server_name="localhost")
    for _ in range(50):
        for data, _ in client.datagrams_to_send(now):
            server.receive_datagram(data, CLIENT, now)
        for data, _ in server.datagrams_to_send(now):
            client.receive_datagram(data, SERVER, now)
        now += 0.01
    assert conn.state is ConnectionState.CONNECTED
    return client, server, conn, now


def _late_burst(
    client: Endpoint, server: Endpoint, conn: Connection, token: bytes, now: float
) -> list[str]:
    """The server sends data on a new stream; the client gets a datagram ending in
    ``token`` ahead of it in one burst. The names of the client's events."""
    while client.next_event() is not None:
        pass
    [peer] = server.connections
    peer.send(peer.open_stream(), b"too late", end=True)
    late = [(data, SERVER) for data, _ in server.datagrams_to_send(now)]
    reset = bytes([0x40]) + conn._engine.host_cid + bytes(30) + token  # type: ignore[union-attr]
    client.receive_datagrams([(reset, SERVER), *late], now)
    seen = []
    while (item := client.next_event()) is not None:
        seen.append(type(item[1]).__name__)
    return seen


def test_nothing_follows_a_stateless_reset_in_the_same_burst() -> None:
    """A burst holding a stateless reset and then data of the same connection: the
    reset ends it, and no event comes after its ConnectionTerminated."""
    client, server, conn, now = _connected_pair()
    # The token the server gave for the connection id the client uses.
    token = conn._engine._quic._peer_cid.stateless_reset_token  # type: ignore[union-attr]
    assert _late_burst(client, server, conn, token, now) == ["ConnectionTerminated"]
    assert conn.state is ConnectionState.CLOSED


def test_a_reset_token_of_an_unused_connection_id_is_ignored() -> None:
    """RFC 9000 section 10.3.1: only the token of the connection id in use ends the
    connection, not one the peer issued for later."""
    client, server, conn, now = _connected_pair()
    quic = conn._engine._quic  # type: ignore[union-attr]
    token = next(c.stateless_reset_token for c in quic._peer_cid_available)
    seen = _late_burst(client, server, conn, token, now)
    assert "ConnectionTerminated" not in seen and "StreamEnded" in seen, seen
    assert conn.state is ConnectionState.CONNECTED


def test_the_token_of_a_retired_connection_id_no_longer_resets() -> None:
    """RFC 9000 section 10.3.1: once a migration moved the client to a fresh connection
    id, the old id is retired and its token ends nothing; the new id's token does."""
    client, server, conn, now = _connected_pair()
    quic = conn._engine._quic  # type: ignore[union-attr]
    old = quic._peer_cid.stateless_reset_token
    conn.migrate()
    for _ in range(5):  # the move reaches the server, which follows
        now += 0.01
        for data, _ in client.datagrams_to_send(now):
            server.receive_datagram(data, CLIENT, now)
        for data, _ in server.datagrams_to_send(now):
            client.receive_datagram(data, SERVER, now)
    new = quic._peer_cid.stateless_reset_token
    assert new != old
    seen = _late_burst(client, server, conn, old, now)
    assert "ConnectionTerminated" not in seen and "StreamEnded" in seen, seen
    assert conn.state is ConnectionState.CONNECTED
    assert _late_burst(client, server, conn, new, now) == ["ConnectionTerminated"]
    assert conn.state is ConnectionState.CLOSED


def test_a_read_asks_for_a_send_pass_only_when_it_raised_credit() -> None:
    """``wants_send`` turns on with a datagram or a command, off with the send pass; a
    read turns it on only once a quarter of the stream window was read, the point
    where the credit update is due. Before, every read cost a pass through the engine."""
    config = Config(dev_mode=True, trust_dev_certificate=True)
    net = SimNetwork(1, conditions=LinkConditions(delay=0.002))
    server, client = Endpoint(config, server=True), Endpoint(config)
    net.add(SERVER, server)
    net.add(CLIENT, client)
    conn = client.connect(SERVER, net.now, server_name="localhost")
    assert net.run_until(lambda: conn.state is ConnectionState.CONNECTED, 5.0)
    window = config.max_stream_data
    sid = conn.open_stream()
    conn.send(sid, b"x" * (window // 2))
    assert client.wants_send
    assert net.run_until(lambda: conn.queued(sid) == 0, 10.0)
    net.run_for(0.1)  # the last acknowledgements
    assert not client.wants_send and not server.wants_send
    [peer] = server.connections
    while peer.next_event() is not None:
        pass
    assert peer.read(sid, 1000) == b"x" * 1000
    assert not server.wants_send  # 1000 bytes move no credit
    assert len(peer.read(sid, window // 4)) == window // 4
    assert server.wants_send  # past a quarter window: MAX_STREAM_DATA is due
    assert server.datagrams_to_send(net.now)
    assert not server.wants_send


def test_a_send_pass_leaves_its_timer_to_timer_and_handle_timer_still_sees_it() -> None:
    """``datagrams_to_send`` no longer works out the connections' timers (a runtime puts
    the datagrams on the wire first, then asks ``timer()``); a caller that goes
    straight to ``handle_timer`` still has the deadline the send armed honoured."""
    client, server, conn, now = _connected_pair()
    for endpoint in (client, server):
        endpoint.datagrams_to_send(now)
        endpoint.timer()
    sid = conn.open_stream()
    conn.send(sid, b"lost", end=True)
    assert client.datagrams_to_send(now)  # dropped: the server never hears it
    # Without timer(), the endpoint's table still holds the deadline from before the send.
    deadline = conn.timer()
    assert deadline is not None and deadline < 1.0 + now  # the retransmission's
    assert client.handle_timer(deadline) is True
    retransmitted = client.datagrams_to_send(deadline)
    assert retransmitted
    for data, _ in retransmitted:
        server.receive_datagram(data, CLIENT, deadline)
    [peer] = server.connections
    assert peer.read(sid) == b"lost"
