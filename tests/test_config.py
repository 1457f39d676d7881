"""Config validates on construction and makes dev certificates only when asked."""

import importlib.metadata
from pathlib import Path

import attrs
import pytest
from cryptography import x509

import sansquic
from sansquic import Config, ConfigError


def test_defaults_are_safe() -> None:
    config = Config()
    assert config.verify_peer is True
    assert config.dev_mode is False and config.trust_dev_certificate is False
    assert config.trust_anchors() is None
    assert config.certificate is None and config.private_key is None
    assert config.max_streams_bidi > 128  # aioquic's default is not our ceiling


def test_config_is_frozen() -> None:
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        Config().idle_timeout = 3  # type: ignore[misc]


def test_dev_mode_issues_an_in_memory_pair_from_the_dev_authority() -> None:
    config = Config(dev_mode=True)
    assert config.certificate is not None and config.private_key is not None
    cert = x509.load_pem_x509_certificate(config.certificate)
    authority = x509.load_pem_x509_certificate(
        sansquic.Config(trust_dev_certificate=True).trust_anchors() or b""
    )
    assert cert.issuer == authority.subject != cert.subject
    cert.verify_directly_issued_by(authority)
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in names.get_values_for_type(x509.DNSName)


def test_dev_pairs_are_fresh_and_replace_keeps_them() -> None:
    a, b = Config(dev_mode=True), Config(dev_mode=True)
    assert a.certificate != b.certificate
    assert a.replace(idle_timeout=5).certificate == a.certificate


def test_certificate_from_path_and_text(tmp_path: Path) -> None:
    pair = sansquic.make_dev_certificate()
    (tmp_path / "cert.pem").write_bytes(pair.certificate)
    (tmp_path / "key.pem").write_bytes(pair.private_key)
    from_path = Config(certificate=tmp_path / "cert.pem", private_key=str(tmp_path / "key.pem"))
    from_text = Config(certificate=pair.certificate.decode(), private_key=pair.private_key)
    assert from_path.certificate == from_text.certificate == pair.certificate
    assert from_path.private_key == pair.private_key


def test_private_key_is_not_in_repr() -> None:
    config = Config(dev_mode=True)
    assert config.private_key is not None
    assert config.private_key.decode()[40:80] not in repr(config)


@pytest.mark.parametrize(
    "changes",
    [
        {"alpn": ()},
        {"alpn": ("x" * 300,)},
        {"alpn": 3},
        {"idle_timeout": 0},
        {"idle_timeout": -1.0},
        {"idle_timeout": True},
        {"max_data": 10},
        {"max_stream_data": 2**70},
        {"max_streams_bidi": -1},
        {"max_streams_bidi": 2_000_000},
        {"max_streams_uni": 1.5},
        {"max_datagram_size": 0},
        {"max_udp_payload_size": 1199},
        {"max_udp_payload_size": 65_000},
        {"datagrams": "yes"},
        {"verify_peer": 1},
        {"congestion_control": "bbr"},
        {"engine": "quiche"},
        {"certificate": b"pem"},  # without a key
        {"certificate": "/nonexistent/cert.pem", "private_key": "/nonexistent/key.pem"},
        {"certificate": 42, "private_key": 42},
    ],
)
def test_invalid_values_raise_config_error(changes: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        Config(**changes)  # type: ignore[arg-type]


def test_config_error_is_a_value_error_and_a_local_protocol_error() -> None:
    assert issubclass(ConfigError, ValueError)
    assert issubclass(ConfigError, sansquic.LocalProtocolError)


def test_replace_validates_and_rejects_unknown_fields() -> None:
    with pytest.raises(ConfigError):
        Config().replace(idle_timeout=-1)
    with pytest.raises(ConfigError):
        Config().replace(no_such_field=1)


def test_alpn_accepts_a_single_name() -> None:
    assert Config(alpn="h3").alpn == ("h3",)


def test_unparseable_pem_fails_at_config_time() -> None:
    pair = sansquic.make_dev_certificate()
    bad = b"-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n"
    with pytest.raises(ConfigError):
        Config(certificate=bad, private_key=pair.private_key)
    with pytest.raises(ConfigError):
        Config(certificate=pair.certificate, private_key=b"-----BEGIN PRIVATE KEY-----\nx\n")
    with pytest.raises(ConfigError):
        Config(ca_certs=b"garbage")


def test_turning_dev_mode_off_drops_the_dev_pair() -> None:
    dev = Config(dev_mode=True)
    assert dev.dev_certificate
    assert dev.replace(dev_mode=False).certificate is None
    own = sansquic.make_dev_certificate()
    kept = Config(dev_mode=True, certificate=own.certificate, private_key=own.private_key)
    assert not kept.dev_certificate
    assert kept.replace(dev_mode=False).certificate == own.certificate


def test_token_and_authenticator_helpers() -> None:
    client = Config().with_token("abc")
    assert client.auth_request is not None and client.auth_request.credentials == b"abc"
    assert Config().with_token(None) == Config()

    def decide(request: object, address: object, now: float) -> sansquic.Identity:
        return sansquic.Identity(subject="x")

    server = Config(dev_mode=True, auth=sansquic.AuthPolicy(deadline=2.0))
    policy = server.with_authenticator(decide).auth
    assert policy is not None and policy.authenticator is decide and policy.deadline == 2.0


def test_engine_qh3_without_qh3_installed_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing(name: str) -> str:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", missing)
    with pytest.raises(ConfigError, match=r"sansquic\[qh3\]"):
        Config(engine="qh3")
    assert Config().engine == "aioquic"  # the default needs nothing more
