"""Certificate verification is on by default; dev mode or a trust anchor accepts a dev pair."""

import pytest

from sansquic import Config, ConnectionState, ConnectionTerminated, RemoteProtocolError
from sansquic.testing import StreamSink, connected_pair


def handshake_outcome(
    client_config: Config, server_config: Config
) -> tuple[StreamSink, StreamSink]:
    pair = connected_pair(client_config=client_config, server_config=server_config, handshake=False)
    client, server = StreamSink(pair.client), StreamSink(pair.server)
    pair.network.step_hooks += [client.pump, server.pump]
    pair.network.run_until(
        lambda: pair.client.state in (ConnectionState.CONNECTED, ConnectionState.CLOSED), 10
    )
    pair.network.run_for(2)
    return client, server


def test_default_client_refuses_a_self_signed_server() -> None:
    client, server = handshake_outcome(Config(), Config(dev_mode=True))
    assert client.connection.state is ConnectionState.CLOSED
    event = client.terminated
    assert isinstance(event, ConnectionTerminated)
    assert not event.by_peer and not event.application
    assert 0x100 <= event.error_code <= 0x1FF  # a TLS alert as CRYPTO_ERROR
    # Commands now raise the error that says the peer's certificate was the problem.
    with pytest.raises(RemoteProtocolError) as info:
        client.connection.open_stream()
    assert info.value.error_code == event.error_code
    assert server.terminated is not None and server.terminated.by_peer


def test_dev_mode_client_accepts_a_self_signed_server() -> None:
    client, _ = handshake_outcome(Config(dev_mode=True), Config(dev_mode=True))
    assert client.connection.state is ConnectionState.CONNECTED


def test_explicit_trust_anchor_accepts_the_dev_certificate() -> None:
    server_config = Config(dev_mode=True)
    client_config = Config(ca_certs=server_config.certificate)
    client, _ = handshake_outcome(client_config, server_config)
    assert client.connection.state is ConnectionState.CONNECTED


def test_a_different_trust_anchor_is_refused() -> None:
    other = Config(dev_mode=True)
    client, _ = handshake_outcome(Config(ca_certs=other.certificate), Config(dev_mode=True))
    assert client.connection.state is ConnectionState.CLOSED


def test_alpn_mismatch_fails_the_handshake() -> None:
    client, _ = handshake_outcome(
        Config(dev_mode=True, alpn=("a",)), Config(dev_mode=True, alpn=("b",))
    )
    assert client.connection.state is ConnectionState.CLOSED
    assert client.terminated is not None and client.terminated.by_peer


def test_negotiated_alpn_is_reported() -> None:
    pair = connected_pair(
        client_config=Config(dev_mode=True, alpn=("x", "y")),
        server_config=Config(dev_mode=True, alpn=("y",)),
    )
    assert pair.client.alpn == pair.server.alpn == "y"


def test_a_failed_handshake_prints_nothing(capfd: pytest.CaptureFixture[str]) -> None:
    handshake_outcome(Config(), Config(dev_mode=True))
    assert capfd.readouterr().err == ""
