"""Connection migration and NAT rebinding (RFC 9000 section 9), on the simnet."""

from __future__ import annotations

import random

import pytest

from sansquic import Address, Config, Connection, LocalProtocolError, Role
from sansquic.testing import LinkConditions, Pair, StreamSink, connected_pair

NEW_ADDRESS = ("10.0.0.77", 61000)
SPOOFED = ("10.6.6.6", 666)


class _Sink:
    """A host that only listens (a spoofed address's real owner)."""

    def __init__(self) -> None:
        self.received = 0

    def receive_datagram(self, data: bytes, address: Address, now: float) -> None:
        self.received += len(data)

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        return []

    def timer(self) -> float | None:
        return None

    def handle_timer(self, now: float) -> None:
        pass


def _transfer_pair() -> tuple[Pair, StreamSink, StreamSink]:
    # No link MTU: path MTU discovery reaches its ceiling in one round trip.
    pair = connected_pair(LinkConditions(delay=0.005, mtu=None))
    client, server = StreamSink(pair.client), StreamSink(pair.server)
    pair.network.step_hooks += [client.pump, server.pump]
    return pair, client, server


def _peer_cid(conn: Connection) -> bytes:
    cid: bytes = conn._engine._quic._peer_cid.cid  # type: ignore[union-attr]
    return cid


def _moved_at(pair: Pair, address: Address) -> list[float]:
    """A step hook noting when the server's remote_address first became ``address``."""
    seen: list[float] = []

    def hook() -> None:
        if not seen and pair.server.remote_address == address:
            seen.append(pair.network.now)

    pair.network.step_hooks.append(hook)
    return seen


def _send_both_ways(pair: Pair, up: bytes, down: bytes, *, end: bool) -> tuple[int, int]:
    c_sid, s_sid = pair.client.open_stream(), pair.server.open_stream()
    pair.client.send(c_sid, up, end=end)
    pair.server.send(s_sid, down, end=end)
    return c_sid, s_sid


@pytest.mark.parametrize("migrate", [True, False], ids=["migration", "nat-rebinding"])
def test_transfer_survives_a_move_and_the_server_follows(migrate: bool) -> None:
    pair, client_sink, server_sink = _transfer_pair()
    rng = random.Random(7)
    up, down = rng.randbytes(400_000), rng.randbytes(400_000)
    old_address, cid = pair.client_address, _peer_cid(pair.client)
    c_sid, s_sid = pair.client.open_stream(), pair.server.open_stream()
    pair.client.send(c_sid, up[:200_000])
    pair.server.send(s_sid, down[:200_000])
    net = pair.network
    # Mid-transfer, once path MTU discovery raised the packet size.
    assert net.run_until(lambda: pair.client.stats().udp_payload_size > 1200, 1)
    assert c_sid not in server_sink.ended
    moved = _moved_at(pair, NEW_ADDRESS)
    probes_before = pair.client.stats().pmtu_probes_sent
    net.rebind(old_address, NEW_ADDRESS)
    if migrate:
        pair.client.migrate()
        # A fresh connection id, so the two paths cannot be linked; PMTU starts over.
        assert _peer_cid(pair.client) != cid
        net.run_until(lambda: True, 1)  # sends what migrate() queued (and a new probe)
        assert pair.client.stats().udp_payload_size == 1200
        assert pair.client.stats().pmtu_probes_sent > probes_before
    pair.client.send(c_sid, up[200_000:], end=True)
    pair.server.send(s_sid, down[200_000:], end=True)
    assert net.run_until(lambda: c_sid in server_sink.ended and s_sid in client_sink.ended, 30)
    assert bytes(server_sink.received[c_sid]) == up
    assert bytes(client_sink.received[s_sid]) == down
    assert pair.server.remote_address == NEW_ADDRESS
    assert moved, "the server never reported the new address"
    if not migrate:
        assert _peer_cid(pair.client) == cid  # NAT rebinding: the same connection id
    # Once the new path was validated, nothing more went to the old address.
    server_to_old = [
        r for r in net.trace if r.source == pair.server_address and r.destination == old_address
    ]
    assert not [r for r in server_to_old if r.time > moved[0]]
    assert any(r.source == pair.server_address and r.destination == NEW_ADDRESS for r in net.trace)


def test_the_server_validates_before_it_reports_the_new_address() -> None:
    pair, _, _ = _transfer_pair()
    net = pair.network
    net.run_for(0.1)  # the server confirms the handshake
    net.rebind(pair.client_address, NEW_ADDRESS)
    pair.client.migrate()
    net.run_until(lambda: any(r.destination == NEW_ADDRESS for r in net.trace), 1)
    # The server is already answering the new address, under the anti-amplification limit,
    # with a PATH_CHALLENGE the client has not answered yet.
    assert pair.server.remote_address == pair.client_address
    assert net.run_until(lambda: pair.server.remote_address == NEW_ADDRESS, 1)


def test_a_spoofed_address_gets_no_more_than_the_amplification_limit() -> None:
    pair, _, server_sink = _transfer_pair()
    net = pair.network
    sink = _Sink()
    net.add(SPOOFED, sink)
    sid = pair.client.open_stream()
    data = random.Random(9).randbytes(300_000)
    pair.client.send(sid, data[:100_000])
    net.run_for(0.2)
    # An on-path attacker rewrites the source of real datagrams of the client's.
    pair.client.send(sid, data[100_000:110_000])
    stolen = pair.client.datagrams_to_send(net.now)
    assert stolen
    for payload, _ in stolen:
        pair.server.receive_datagram(payload, SPOOFED, net.now)
    spoofed_in = sum(len(payload) for payload, _ in stolen)
    addresses: set[Address | None] = set()
    net.step_hooks.append(lambda: addresses.add(pair.server.remote_address))
    pair.client.send(sid, data[110_000:], end=True)
    assert net.run_until(lambda: sid in server_sink.ended, 30)
    assert bytes(server_sink.received[sid]) == data
    assert 0 < sink.received <= 3 * spoofed_in  # RFC 9000 section 8: at most three times
    assert SPOOFED not in addresses  # never validated, so never reported
    assert pair.server.remote_address == pair.client_address


def test_misuse_raises_before_anything_changes() -> None:
    pair = connected_pair()
    with pytest.raises(LocalProtocolError, match="client"):
        pair.server.migrate()
    early = connected_pair(handshake=False)
    cid = _peer_cid(early.client)
    with pytest.raises(LocalProtocolError, match="handshake"):
        early.client.migrate()
    assert _peer_cid(early.client) == cid
    idle = Connection(
        Config(dev_mode=True, trust_dev_certificate=True), role=Role.CLIENT, server_name="localhost"
    )
    with pytest.raises(LocalProtocolError, match="connect"):
        idle.migrate()


@pytest.mark.parametrize("seed", range(3))
def test_migration_survives_loss(seed: int) -> None:
    pair = connected_pair(LinkConditions(delay=0.01, loss=0.05), seed=seed)
    server_sink = StreamSink(pair.server)
    pair.network.step_hooks.append(server_sink.pump)
    data = random.Random(seed).randbytes(300_000)
    sid = pair.client.open_stream()
    pair.client.send(sid, data[:150_000])
    net = pair.network
    net.run_for(0.3)
    net.rebind(pair.client_address, NEW_ADDRESS)
    pair.client.migrate()
    pair.client.send(sid, data[150_000:], end=True)
    assert net.run_until(lambda: sid in server_sink.ended, 60)
    assert bytes(server_sink.received[sid]) == data
    assert net.run_until(lambda: pair.server.remote_address == NEW_ADDRESS, 10)


@pytest.mark.parametrize("lose_response", [False, True])
def test_the_server_follows_though_the_path_response_is_lost(lose_response: bool) -> None:
    """aioquic sends a PATH_CHALLENGE again only when its packet is lost. With the
    packet acknowledged and the client's PATH_RESPONSE lost (never sent again), the
    server kept reporting the old address until its validation deadline (the
    conformance case ``migration`` failed so, now and then). The seam challenges
    again once the acknowledgement shows no answer; an answered challenge is sent once."""
    pair, _, server_sink = _transfer_pair()
    net = pair.network
    c_sid = pair.client.open_stream()
    pair.client.send(c_sid, random.Random(1).randbytes(200_000))
    assert net.run_until(lambda: pair.client.stats().udp_payload_size > 1200, 1)
    client_quic = pair.client._engine._quic  # type: ignore[union-attr]
    server_quic = pair.server._engine._quic  # type: ignore[union-attr]
    respond = client_quic._write_path_response_frame
    write_challenge = server_quic._write_path_challenge_frame
    lost: list[bytes] = []
    challenges: list[object] = []

    def maybe_respond(builder: object, challenge: bytes) -> None:
        if lose_response and not lost:
            lost.append(challenge)  # taken from the queue, never written: as if lost
            return
        respond(builder=builder, challenge=challenge)

    def counted(builder: object, network_path: object) -> None:
        challenges.append(network_path)
        write_challenge(builder=builder, network_path=network_path)

    client_quic._write_path_response_frame = maybe_respond
    server_quic._write_path_challenge_frame = counted
    moved = _moved_at(pair, NEW_ADDRESS)
    start = net.now
    net.rebind(pair.client_address, NEW_ADDRESS)
    pair.client.migrate()
    pair.client.send(c_sid, random.Random(2).randbytes(800_000), end=True)
    assert net.run_until(lambda: c_sid in server_sink.ended, 30)
    assert moved, "the server never reported the new address"
    # Measured: 15.5 ms, or 26.5 ms with the response lost; the transfer takes 49 ms.
    assert moved[0] - start < 0.035
    assert len(challenges) == (2 if lose_response else 1)
    assert pair.server.remote_address == NEW_ADDRESS
