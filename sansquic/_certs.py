"""Development certificates, made in memory with ``cryptography``.

``Config(dev_mode=True)`` gives a server a certificate issued by this process's
*development authority*, a key pair made when the module is imported and never
written anywhere. A client trusts that authority only when its Config says
``trust_dev_certificate=True``, so dev servers are verified for real (name and
signature) inside one process, and nothing else on the machine ever trusts them.
"""

from __future__ import annotations

import datetime
import ipaddress
import secrets

import attrs
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.x509.oid import NameOID

__all__ = ["CertificatePair", "DEV_AUTHORITY_PEM", "issue_dev_certificate", "make_dev_certificate"]

# Fixed validity bounds keep the core free of clock reads; a dev pair is never
# meant to be trusted beyond the developer's own machine.
_NOT_BEFORE = datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC)
_NOT_AFTER = datetime.datetime(2099, 12, 31, tzinfo=datetime.UTC)


@attrs.frozen(kw_only=True)
class CertificatePair:
    """A PEM certificate and its PEM private key."""

    certificate: bytes
    private_key: bytes = attrs.field(repr=False)


def _subject_alt_names(names: tuple[str, ...]) -> x509.SubjectAlternativeName:
    alt_names: list[x509.GeneralName] = []
    for name in names:
        try:
            alt_names.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            alt_names.append(x509.DNSName(name))
    return x509.SubjectAlternativeName(alt_names)


def _serial() -> int:
    return int.from_bytes(secrets.token_bytes(16), "big") >> 1


def _pem_key(key: ed25519.Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


# Made at import, not on first use: two threads racing to make it lazily could
# leave a server's certificate issued by an authority its client does not trust.
_AUTHORITY_KEY = ed25519.Ed25519PrivateKey.generate()
_AUTHORITY_NAME = x509.Name(
    [x509.NameAttribute(NameOID.COMMON_NAME, "sansquic development authority (this process)")]
)
_AUTHORITY = (
    x509.CertificateBuilder()
    .subject_name(_AUTHORITY_NAME)
    .issuer_name(_AUTHORITY_NAME)
    .public_key(_AUTHORITY_KEY.public_key())
    .serial_number(_serial())
    .not_valid_before(_NOT_BEFORE)
    .not_valid_after(_NOT_AFTER)
    .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
    .add_extension(
        x509.KeyUsage(
            digital_signature=False,
            content_commitment=False,
            key_encipherment=False,
            data_encipherment=False,
            key_agreement=False,
            key_cert_sign=True,
            crl_sign=True,
            encipher_only=False,
            decipher_only=False,
        ),
        critical=True,
    )
    .add_extension(
        x509.SubjectKeyIdentifier.from_public_key(_AUTHORITY_KEY.public_key()), critical=False
    )
    .sign(_AUTHORITY_KEY, algorithm=None)
)
#: The PEM certificate of this process's development authority: what a client
#: with ``trust_dev_certificate=True`` adds to its trust anchors.
DEV_AUTHORITY_PEM: bytes = _AUTHORITY.public_bytes(serialization.Encoding.PEM)


def issue_dev_certificate(
    names: tuple[str, ...] = ("localhost", "127.0.0.1", "::1"),
) -> CertificatePair:
    """Issue an Ed25519 certificate for ``names`` from this process's development authority.

    This is what ``Config(dev_mode=True)`` gives a server; a client verifies it
    when its Config has ``trust_dev_certificate=True``.
    """
    key = ed25519.Ed25519PrivateKey.generate()
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(_AUTHORITY_NAME)
        .public_key(key.public_key())
        .serial_number(_serial())
        .not_valid_before(_NOT_BEFORE)
        .not_valid_after(_NOT_AFTER)
        .add_extension(_subject_alt_names(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(_AUTHORITY_KEY.public_key()),
            critical=False,
        )
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .sign(_AUTHORITY_KEY, algorithm=None)
    )
    return CertificatePair(
        certificate=cert.public_bytes(serialization.Encoding.PEM), private_key=_pem_key(key)
    )


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
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(_serial())
        .not_valid_before(_NOT_BEFORE)
        .not_valid_after(_NOT_AFTER)
        .add_extension(_subject_alt_names(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, algorithm=None)
    )
    return CertificatePair(
        certificate=cert.public_bytes(serialization.Encoding.PEM), private_key=_pem_key(key)
    )
