"""Key updates (RFC 9001 section 6): on request and on a packet budget, on the simnet."""

from __future__ import annotations

import random

import pytest

from sansquic import Config, ConfigError, Connection, LocalProtocolError, Role
from sansquic.testing import LinkConditions, Pair, StreamSink, connected_pair


def _sinks(pair: Pair) -> tuple[StreamSink, StreamSink]:
    client, server = StreamSink(pair.client), StreamSink(pair.server)
    pair.network.step_hooks += [client.pump, server.pump]
    return client, server


def _settled(conn: Connection) -> bool:
    return conn._engine is not None and conn._engine.key_state().settled


def test_updates_on_request_keep_data_flowing_both_ways() -> None:
    pair = connected_pair(LinkConditions(delay=0.005))
    client_sink, server_sink = _sinks(pair)
    rng = random.Random(3)
    up, down = rng.randbytes(300_000), rng.randbytes(300_000)
    c_sid = pair.client.open_stream()
    s_sid = pair.server.open_stream()
    net = pair.network
    phases: list[tuple[int, int]] = []
    for round_ in range(4):
        part = slice(round_ * 75_000, (round_ + 1) * 75_000)
        pair.client.send(c_sid, up[part], end=round_ == 3)
        pair.server.send(s_sid, down[part], end=round_ == 3)
        net.run_for(0.02)  # mid-transfer
        updater = pair.client if round_ % 2 == 0 else pair.server  # each side starts some
        assert net.run_until(lambda u=updater: _settled(u), 5)  # type: ignore[misc]
        updater.update_keys()
        want = round_ + 1
        assert net.run_until(
            lambda n=want: pair.client.stats().key_updates == pair.server.stats().key_updates == n,  # type: ignore[misc]
            5,
        )
        phases.append((pair.client.stats().key_phase, pair.server.stats().key_phase))
    assert net.run_until(lambda: c_sid in server_sink.ended and s_sid in client_sink.ended, 30)
    assert bytes(server_sink.received[c_sid]) == up
    assert bytes(client_sink.received[s_sid]) == down
    # Both sides agree on the phase, and it flips with every update.
    assert phases == [(1, 1), (0, 0), (1, 1), (0, 0)]


def test_a_second_update_before_the_first_is_acknowledged_raises_first() -> None:
    pair = connected_pair(LinkConditions(delay=0.05))
    pair.client.update_keys()
    before = pair.client.stats()
    with pytest.raises(LocalProtocolError, match="unconfirmed"):
        pair.client.update_keys()
    assert pair.client.stats() == before  # nothing changed
    # The peer's update blocks this side too until one of its packets is acknowledged.
    assert pair.network.run_until(lambda: _settled(pair.client), 5)
    assert pair.network.run_until(lambda: _settled(pair.server), 5)
    pair.server.update_keys()
    assert pair.network.run_until(lambda: pair.client.stats().key_updates == 2, 5)
    if not _settled(pair.client):
        with pytest.raises(LocalProtocolError, match="unconfirmed"):
            pair.client.update_keys()
    assert pair.network.run_until(lambda: _settled(pair.client), 5)
    pair.client.update_keys()  # allowed again
    assert pair.network.run_until(lambda: pair.server.stats().key_updates == 3, 5)


def test_update_before_the_handshake_raises() -> None:
    pair = connected_pair(handshake=False)
    with pytest.raises(LocalProtocolError, match="handshake"):
        pair.client.update_keys()
    idle = Connection(
        Config(dev_mode=True, trust_dev_certificate=True), role=Role.CLIENT, server_name="localhost"
    )
    with pytest.raises(LocalProtocolError, match="connect"):
        idle.update_keys()
    server = Connection(Config(dev_mode=True, trust_dev_certificate=True), role=Role.SERVER)
    with pytest.raises(LocalProtocolError):
        server.update_keys()
    assert pair.network.run_until(lambda: pair.client.stats().key_updates == 0, 1)


def test_a_small_packet_budget_updates_the_keys_on_its_own() -> None:
    config = Config(dev_mode=True, trust_dev_certificate=True, key_update_packets=50)
    pair = connected_pair(LinkConditions(delay=0.002), client_config=config)
    _, server_sink = _sinks(pair)
    data = random.Random(5).randbytes(500_000)  # ~420 packets: several budgets' worth
    sid = pair.client.open_stream()
    pair.client.send(sid, data, end=True)
    assert pair.network.run_until(lambda: sid in server_sink.ended, 30)
    assert bytes(server_sink.received[sid]) == data
    updates = pair.client.stats().key_updates
    assert updates >= 3
    # The server follows each one once a packet under the new keys reaches it: the
    # last update may come after the last data packet (bursts of 64 KB end the
    # transfer sooner), and the server learns of it from the client's next packet.
    followed = pair.network.run_until(
        lambda: pair.server.stats().key_updates == pair.client.stats().key_updates, 5
    )
    assert followed, (pair.client.stats().key_updates, pair.server.stats().key_updates)
    assert pair.client.stats().key_updates == updates  # nothing more to update for


def test_no_budget_means_no_update() -> None:
    config = Config(dev_mode=True, trust_dev_certificate=True, key_update_packets=None)
    pair = connected_pair(client_config=config, server_config=config)
    _, server_sink = _sinks(pair)
    sid = pair.client.open_stream()
    pair.client.send(sid, bytes(300_000), end=True)
    assert pair.network.run_until(lambda: sid in server_sink.ended, 30)
    assert pair.client.stats().key_updates == pair.server.stats().key_updates == 0


@pytest.mark.parametrize("bad", [0, -1, 2**22 + 1, 2**23, 1.5, True])
def test_key_update_packets_is_checked(bad: object) -> None:
    with pytest.raises(ConfigError, match="key_update_packets"):
        Config(key_update_packets=bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("seed", range(3))
def test_updates_survive_loss_and_reordering(seed: int) -> None:
    # Packets of the old phase that arrive after an update are dropped (aioquic keeps
    # no old keys): loss recovery must cover them.
    conditions = LinkConditions(delay=0.01, loss=0.05, reorder=0.1, reorder_delay=0.015)
    config = Config(dev_mode=True, trust_dev_certificate=True, key_update_packets=40)
    pair = connected_pair(conditions, seed=seed, client_config=config, server_config=config)
    client_sink, server_sink = _sinks(pair)
    rng = random.Random(seed)
    up, down = rng.randbytes(200_000), rng.randbytes(200_000)
    c_sid, s_sid = pair.client.open_stream(), pair.server.open_stream()
    pair.client.send(c_sid, up, end=True)
    pair.server.send(s_sid, down, end=True)
    assert pair.network.run_until(
        lambda: c_sid in server_sink.ended and s_sid in client_sink.ended, 60
    )
    assert bytes(server_sink.received[c_sid]) == up
    assert bytes(client_sink.received[s_sid]) == down
    assert pair.client.stats().key_updates >= 3
    assert pair.client.stats().key_phase == pair.server.stats().key_phase
