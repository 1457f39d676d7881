"""Certificate verification is on by default; a client trusts a dev server only when told."""

import pytest

import sansquic
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
    client, server = handshake_outcome(Config(), Config(dev_mode=True, trust_dev_certificate=True))
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


DEV_SERVER = Config(dev_mode=True)


def test_dev_mode_on_a_client_does_not_turn_verification_off() -> None:
    client, _ = handshake_outcome(Config(dev_mode=True), DEV_SERVER)
    assert client.connection.state is ConnectionState.CLOSED
    assert client.terminated is not None and 0x100 <= client.terminated.error_code <= 0x1FF


def test_trust_dev_certificate_verifies_a_dev_server_of_this_process() -> None:
    client, _ = handshake_outcome(Config(trust_dev_certificate=True), DEV_SERVER)
    assert client.connection.state is ConnectionState.CONNECTED


def test_trust_dev_certificate_still_checks_the_name() -> None:
    # connected_pair connects with server_name="localhost"; this dev server is someone else.
    server = Config(**_pair_fields(sansquic.issue_dev_certificate(("elsewhere.example",))))
    client, _ = handshake_outcome(Config(trust_dev_certificate=True), server)
    assert client.connection.state is ConnectionState.CLOSED


def test_trust_dev_certificate_does_not_trust_other_self_signed_servers() -> None:
    server = Config(**_pair_fields(sansquic.make_dev_certificate()))
    client, _ = handshake_outcome(Config(trust_dev_certificate=True), server)
    assert client.connection.state is ConnectionState.CLOSED


def test_trust_dev_certificate_adds_to_ca_certs() -> None:
    own = sansquic.make_dev_certificate()
    client_config = Config(ca_certs=own.certificate, trust_dev_certificate=True)
    for server in (DEV_SERVER, Config(**_pair_fields(own))):
        client, _ = handshake_outcome(client_config, server)
        assert client.connection.state is ConnectionState.CONNECTED


def test_explicit_trust_anchor_accepts_a_self_signed_certificate() -> None:
    own = sansquic.make_dev_certificate()
    client, _ = handshake_outcome(Config(ca_certs=own.certificate), Config(**_pair_fields(own)))
    assert client.connection.state is ConnectionState.CONNECTED


def test_a_different_trust_anchor_is_refused() -> None:
    other = sansquic.make_dev_certificate()
    client, _ = handshake_outcome(Config(ca_certs=other.certificate), DEV_SERVER)
    assert client.connection.state is ConnectionState.CLOSED


def test_verify_peer_false_accepts_any_server() -> None:
    server = Config(**_pair_fields(sansquic.make_dev_certificate(("elsewhere.example",))))
    client, _ = handshake_outcome(Config(verify_peer=False), server)
    assert client.connection.state is ConnectionState.CONNECTED


def _pair_fields(pair: sansquic.CertificatePair) -> dict[str, bytes]:
    return {"certificate": pair.certificate, "private_key": pair.private_key}


def test_alpn_mismatch_fails_the_handshake() -> None:
    client, _ = handshake_outcome(
        Config(dev_mode=True, trust_dev_certificate=True, alpn=("a",)),
        Config(dev_mode=True, trust_dev_certificate=True, alpn=("b",)),
    )
    assert client.connection.state is ConnectionState.CLOSED
    assert client.terminated is not None and client.terminated.by_peer


def test_negotiated_alpn_is_reported() -> None:
    pair = connected_pair(
        client_config=Config(dev_mode=True, trust_dev_certificate=True, alpn=("x", "y")),
        server_config=Config(dev_mode=True, trust_dev_certificate=True, alpn=("y",)),
    )
    assert pair.client.alpn == pair.server.alpn == "y"


def test_a_failed_handshake_prints_nothing(capfd: pytest.CaptureFixture[str]) -> None:
    handshake_outcome(Config(), Config(dev_mode=True, trust_dev_certificate=True))
    assert capfd.readouterr().err == ""


def test_the_websocket_fallback_trusts_exactly_what_quic_trusts() -> None:
    # connect_any may take this path when UDP is dropped: it must not trust more.
    from sansquic_runtime._tcp import client_context

    own = sansquic.make_dev_certificate()
    for config in (Config(ca_certs=own.certificate), Config(trust_dev_certificate=True)):
        anchors = client_context(config).get_ca_certs()
        assert len(anchors) == 1
    both = client_context(Config(ca_certs=own.certificate, trust_dev_certificate=True))
    assert len(both.get_ca_certs()) == 2
    assert len(client_context(Config()).get_ca_certs()) > 10  # certifi's bundle
