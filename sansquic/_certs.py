"""Development certificates, made in memory with ``cryptography`` and only on request."""

from __future__ import annotations

import datetime
import ipaddress
import secrets

import attrs
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.x509.oid import NameOID

__all__ = ["CertificatePair", "make_dev_certificate"]

# Fixed validity bounds keep the core free of clock reads; a dev pair is never
# meant to be trusted beyond the developer's own machine.
_NOT_BEFORE = datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC)
_NOT_AFTER = datetime.datetime(2099, 12, 31, tzinfo=datetime.UTC)


@attrs.frozen(kw_only=True)
class CertificatePair:
    """A PEM certificate and its PEM private key."""

    certificate: bytes
    private_key: bytes = attrs.field(repr=False)


def make_dev_certificate(
    names: tuple[str, ...] = ("localhost", "127.0.0.1", "::1"),
) -> CertificatePair:
    """Make a self-signed Ed25519 certificate for ``names`` (DNS names or IP addresses).

    Ed25519 keeps signatures a fixed size, so handshakes on the simulated
    network are byte-for-byte repeatable. Pass the result's ``certificate`` as
    ``Config(ca_certs=...)`` on a client that should trust it.
    """
    key = ed25519.Ed25519PrivateKey.generate()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    alt_names: list[x509.GeneralName] = []
    for name in names:
        try:
            alt_names.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            alt_names.append(x509.DNSName(name))
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(int.from_bytes(secrets.token_bytes(16), "big") >> 1)
        .not_valid_before(_NOT_BEFORE)
        .not_valid_after(_NOT_AFTER)
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, algorithm=None)
    )
    return CertificatePair(
        certificate=cert.public_bytes(serialization.Encoding.PEM),
        private_key=key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
