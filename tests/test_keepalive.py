"""Keep-alive: PINGs keep an idle connection open past the idle timeout (simnet, fake clock)."""

import pytest

from sansquic import Config, ConfigError, ConnectionState
from sansquic.testing import Pair, StreamSink, connected_pair


def _idle_pair(keep_alive: float | None) -> tuple[Pair, StreamSink, StreamSink]:
    config = Config(dev_mode=True, trust_dev_certificate=True, idle_timeout=2.0)
    pair = connected_pair(client_config=config.replace(keep_alive=keep_alive), server_config=config)
    client, server = StreamSink(pair.client), StreamSink(pair.server)
    pair.network.step_hooks += [client.pump, server.pump]
    return pair, client, server


def test_keep_alive_holds_an_idle_connection_open() -> None:
    pair, client, server = _idle_pair(keep_alive=0.5)
    received_before = pair.server.stats().udp_datagrams_received
    pair.network.run_for(60.0)
    assert pair.client.state is ConnectionState.CONNECTED
    assert pair.server.state is ConnectionState.CONNECTED
    assert client.terminated is None and server.terminated is None
    # About one PING per half second reached the server (each is acknowledged).
    pings = pair.server.stats().udp_datagrams_received - received_before
    assert 100 <= pings <= 130, pings
    # And the connection still carries data.
    sid = pair.client.open_stream()
    pair.client.send(sid, b"still here", end=True)
    assert pair.network.run_until(lambda: sid in server.ended, 5)
    assert bytes(server.received[sid]) == b"still here"


def test_without_keep_alive_an_idle_connection_times_out() -> None:
    pair, client, server = _idle_pair(keep_alive=None)
    received_before = pair.server.stats().udp_datagrams_received
    pair.network.run_for(60.0)
    assert pair.client.state is ConnectionState.CLOSED
    assert client.terminated is not None and client.terminated.reason == "idle timeout"
    assert server.terminated is not None and server.terminated.reason == "idle timeout"
    assert pair.server.stats().udp_datagrams_received - received_before < 5


@pytest.mark.parametrize(
    "changes",
    [
        {"keep_alive": 0},
        {"keep_alive": -1},
        {"keep_alive": True},
        {"keep_alive": "1"},
        {"keep_alive": 30.0},  # equal to the default idle_timeout
        {"keep_alive": 5.0, "idle_timeout": 4.0},
    ],
)
def test_invalid_keep_alive_is_a_config_error(changes: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        Config(**changes)  # type: ignore[arg-type]


def test_keep_alive_below_idle_timeout_is_accepted() -> None:
    assert Config(keep_alive=10, idle_timeout=11).keep_alive == 10
    assert Config().keep_alive is None


def test_keep_alive_works_on_qh3() -> None:
    pytest.importorskip("qh3")
    config = Config(dev_mode=True, trust_dev_certificate=True, idle_timeout=2.0, engine="qh3")
    for keep_alive, state in ((0.5, ConnectionState.CONNECTED), (None, ConnectionState.CLOSED)):
        pair = connected_pair(
            client_config=config.replace(keep_alive=keep_alive), server_config=config
        )
        pair.network.run_for(20.0)
        assert pair.client.state is state
