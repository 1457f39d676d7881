"""``Config``: every setting of a connection, frozen and validated on construction."""

from __future__ import annotations

import importlib.metadata
import os
from collections.abc import Callable
from typing import Any, Literal

import attrs
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ._auth import Authenticator, AuthPolicy, AuthRequest
from ._certs import DEV_AUTHORITY_PEM, issue_dev_certificate
from ._errors import ConfigError
from ._tickets import MemoryTicketStore, TicketKeys, TicketStore
from ._validators import bool_, int_in, one_of, optional, positive, positive_or_none
from .ratelimit import RateLimits

__all__ = ["Config"]

_MAX_VARINT = 2**62 - 1
# Measured with aioquic 1.7.2: packets above about 16 KB fail, so larger UDP
# payloads are refused here rather than failing on the wire.
_MAX_UDP_PAYLOAD = 16_000
# A peer may skip ahead within its credit, and the core remembers skipped ids,
# so the credit bounds memory; a million is far past any measured need.
_MAX_STREAMS = 1_000_000


def _load_pem(value: Any, field_name: str) -> bytes | None:
    """Accept PEM bytes, PEM text, or a path to a PEM file."""
    if value is None or isinstance(value, bytes):
        return value
    if isinstance(value, str) and value.lstrip().startswith("-----BEGIN"):
        return value.encode("ascii")
    if isinstance(value, (str, os.PathLike)):
        try:
            with open(value, "rb") as f:
                return f.read()
        except OSError as exc:
            raise ConfigError(f"cannot read {field_name} from {value!r}: {exc}") from exc
    raise ConfigError(f"{field_name} must be PEM bytes, PEM text or a path, not {value!r}")


def _certificate(value: Any) -> bytes | None:
    return _load_pem(value, "certificate")


def _private_key(value: Any) -> bytes | None:
    return _load_pem(value, "private_key")


def _ca_certs(value: Any) -> bytes | None:
    return _load_pem(value, "ca_certs")


def _ticket_store(instance: Any, attribute: Any, value: Any) -> None:
    if not isinstance(value, TicketStore):
        raise ConfigError(f"ticket_store needs put() and take(), not {value!r}")


def _ticket_keys(value: Any) -> tuple[bytes, ...] | None:
    if value is None:
        return None
    if isinstance(value, (bytes, bytearray)):
        value = (value,)
    try:
        keys = tuple(bytes(key) for key in value)
        TicketKeys(keys)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"ticket_keys: {exc}; give 32+ random bytes per key") from None
    return keys


def _reset_key(instance: Any, attribute: Any, value: Any) -> None:
    if value is not None and (not isinstance(value, bytes) or len(value) < 16):
        raise ConfigError("reset_key must be bytes with at least 16 bytes of secret, or None")


#: QUIC versions by name: v1 (RFC 9000) and v2 (RFC 9369).
QUIC_VERSIONS = {"v1": 0x00000001, "v2": 0x6B3343CF}
#: TLS 1.3 cipher suites QUIC may use, by their IANA names.
CIPHER_SUITES = ("AES_128_GCM_SHA256", "AES_256_GCM_SHA384", "CHACHA20_POLY1305_SHA256")


def _names(value: Any, field_name: str, choices: Any) -> tuple[str, ...]:
    """A non-empty, duplicate-free sequence of names out of ``choices``, order kept."""
    if isinstance(value, str):
        value = (value,)
    try:
        names = tuple(value)
    except TypeError:
        raise ConfigError(f"{field_name} must be a sequence of names, not {value!r}") from None
    if not names or len(set(names)) != len(names) or any(n not in choices for n in names):
        raise ConfigError(
            f"{field_name} needs 1+ distinct names out of {', '.join(choices)}, not {value!r}"
        )
    return names


def _versions(value: Any) -> tuple[str, ...]:
    return _names(value, "versions", tuple(QUIC_VERSIONS))


def _cipher_suites(value: Any) -> tuple[str, ...] | None:
    return None if value is None else _names(value, "cipher_suites", CIPHER_SUITES)


def _alpn(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = (value,)
    try:
        protocols = tuple(value)
    except TypeError:
        raise ConfigError(f"alpn must be a sequence of strings, not {value!r}") from None
    if not protocols or not all(
        isinstance(p, str) and 0 < len(p.encode()) < 256 for p in protocols
    ):
        raise ConfigError(f"alpn needs 1+ protocol names of 1-255 bytes, not {value!r}")
    return protocols


def _qlog(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and not callable(value):
        raise ConfigError(f"qlog must be a callable taking a trace dict, or None, not {value!r}")


@attrs.frozen(kw_only=True)
class Config:
    """Settings shared by client and server connections.

    A server needs ``certificate`` and ``private_key``, or ``dev_mode=True``,
    which issues an in-memory certificate from this process's development
    authority. A client verifies the server's certificate against the
    ``certifi`` bundle the engine loads, or against ``ca_certs`` when given, and
    checks it against the ``server_name`` it connects with. ``dev_mode`` never
    changes what a client trusts: ``trust_dev_certificate=True`` makes it trust
    dev servers of the same process (verified for real), and
    ``verify_peer=False`` turns verification off, for local development only.

    Change a setting with :meth:`replace`; invalid values raise
    :class:`~sansquic.ConfigError` at construction.
    """

    #: ALPN protocol names offered (client) or accepted (server), in preference order.
    alpn: tuple[str, ...] = attrs.field(default=("sansquic",), converter=_alpn)
    #: QUIC versions, in preference order: ``"v1"``, ``"v2"``. A client starts with
    #: the first; a server accepts any listed and answers others with Version Negotiation.
    versions: tuple[str, ...] = attrs.field(default=("v1",), converter=_versions)
    #: TLS 1.3 cipher suites offered (client) or accepted (server), by IANA name
    #: (``"CHACHA20_POLY1305_SHA256"``, ...); ``None`` leaves the engine's default set.
    cipher_suites: tuple[str, ...] | None = attrs.field(default=None, converter=_cipher_suites)
    #: The server's certificate chain: PEM bytes, PEM text, or a path.
    certificate: bytes | None = attrs.field(default=None, converter=_certificate)
    #: The server's private key: PEM bytes, PEM text, or a path.
    private_key: bytes | None = attrs.field(default=None, converter=_private_key, repr=False)
    #: Trust anchors for verifying the peer (PEM); ``None`` uses the system's.
    ca_certs: bytes | None = attrs.field(default=None, converter=_ca_certs)
    #: Verify the server's certificate (clients). ``False`` accepts any server:
    #: for local development only.
    verify_peer: bool = attrs.field(default=True, validator=bool_)
    #: (Clients) Trust certificates that ``dev_mode`` servers of this same process
    #: were issued, checking signature and name as for any other: the trust anchors
    #: become ``ca_certs`` (if any) plus this process's development authority, and
    #: the system's bundle is not used. A dev server in another process has its own
    #: authority: use ``verify_peer=False`` for it.
    trust_dev_certificate: bool = attrs.field(default=False, validator=bool_)
    #: (Servers) Development mode: without ``certificate``, issue one in memory
    #: from this process's development authority. Clients are unaffected.
    dev_mode: bool = attrs.field(default=False, validator=bool_)
    #: Seconds without traffic after which the connection closes.
    idle_timeout: float = attrs.field(default=30.0, validator=positive)
    #: Seconds without sending after which a PING goes out, so an idle connection
    #: stays open; must be below ``idle_timeout`` (and below the peer's: the
    #: smaller of the two applies). ``None``: no keep-alive.
    keep_alive: float | None = attrs.field(default=None, validator=positive_or_none)
    #: Connection-level receive window in bytes (MAX_DATA); it starts here and grows
    #: (see ``max_connection_window``) only while it is what limits a transfer.
    max_data: int = attrs.field(default=16 * 1024 * 1024, validator=int_in(1024, _MAX_VARINT))
    #: Per-stream receive window in bytes (MAX_STREAM_DATA); grows up to ``max_stream_window``.
    max_stream_data: int = attrs.field(default=1024 * 1024, validator=int_in(1024, _MAX_VARINT))
    #: Ceilings for receive-window auto-tuning: a window that limits a transfer
    #: doubles up to these; the peer can never make this side buffer more.
    max_stream_window: int = attrs.field(
        default=16 * 1024 * 1024, validator=int_in(1024, 2**62 - 1)
    )
    max_connection_window: int = attrs.field(
        default=64 * 1024 * 1024, validator=int_in(1024, 2**62 - 1)
    )
    #: Bidirectional streams the peer may have open at once.
    max_streams_bidi: int = attrs.field(default=1000, validator=int_in(0, _MAX_STREAMS))
    #: Unidirectional streams the peer may have open at once.
    max_streams_uni: int = attrs.field(default=1000, validator=int_in(0, _MAX_STREAMS))
    #: Accept and send unreliable datagrams (RFC 9221).
    datagrams: bool = attrs.field(default=True, validator=bool_)
    #: Largest datagram payload this side accepts, in bytes.
    max_datagram_size: int = attrs.field(default=1200, validator=int_in(1, 16_000))
    #: Largest UDP payload (QUIC packet) this side sends, in bytes. With
    #: ``pmtu_discovery`` every connection starts at 1200 and probes its way up to
    #: this; without, every packet may be this big from the start.
    max_udp_payload_size: int = attrs.field(
        default=_MAX_UDP_PAYLOAD, validator=int_in(1200, _MAX_UDP_PAYLOAD)
    )
    #: Find the largest packet the path carries (RFC 8899 probes, see
    #: docs/config.md). Turn off only where ``max_udp_payload_size`` is known to fit.
    pmtu_discovery: bool = attrs.field(default=True, validator=bool_)
    #: Congestion controller.
    congestion_control: Literal["reno", "cubic"] = attrs.field(
        default="reno", validator=one_of("reno", "cubic")
    )
    #: Per stream: ``send()`` reports the stream unwritable at this many buffered bytes,
    #: ``StreamWritable`` comes once it drains below the low watermark, and more
    #: than the limit raises ``SendBufferFull``.
    send_high_watermark: int = attrs.field(default=256 * 1024, validator=int_in(1, 2**40))
    send_low_watermark: int = attrs.field(default=64 * 1024, validator=int_in(0, 2**40))
    send_buffer_limit: int = attrs.field(default=16 * 1024 * 1024, validator=int_in(1, 2**40))
    #: The same over all streams of the connection.
    connection_send_high_watermark: int = attrs.field(
        default=4 * 1024 * 1024, validator=int_in(1, 2**40)
    )
    connection_send_low_watermark: int = attrs.field(
        default=1024 * 1024, validator=int_in(0, 2**40)
    )
    connection_send_buffer_limit: int = attrs.field(
        default=64 * 1024 * 1024, validator=int_in(1, 2**40)
    )
    #: Bytes a stream sends before the next stream of its priority gets a turn.
    scheduler_quantum: int = attrs.field(default=16 * 1024, validator=int_in(1, 2**30))
    #: Datagrams waiting to be sent; when full the oldest is dropped (and counted).
    datagram_queue_limit: int = attrs.field(default=256, validator=int_in(1, 2**20))
    #: (Servers) The auth handshake clients must pass; ``None`` for no auth.
    auth: AuthPolicy | None = attrs.field(default=None)
    #: (Clients) What to present in the auth handshake; ``None`` to send nothing.
    auth_request: AuthRequest | None = attrs.field(default=None)
    #: Admission limits (for Endpoints) and limits on what the peer may send.
    rate_limits: RateLimits = attrs.field(factory=RateLimits)
    #: The QUIC engine underneath: ``"aioquic"``, or the experimental ``"qh3"``
    #: (``pip install 'sansquic[qh3]'``; see docs/engines.md for what it lacks).
    engine: Literal["aioquic", "qh3"] = attrs.field(
        default="aioquic", validator=one_of("aioquic", "qh3")
    )
    #: Packets sent under one set of keys before this side updates them; ``None``
    #: leaves updates to ``Connection.update_keys()`` and the peer. At most 2**22:
    #: AES-GCM keys may protect 2**23 packets (RFC 9001 section 6.6), and packets
    #: keep leaving under the old keys while the previous update awaits the peer's
    #: confirmation, so half the limit is left for that wait.
    key_update_packets: int | None = attrs.field(
        default=2**20, validator=optional(int_in(1, 2**22))
    )

    #: Session resumption (see docs/resumption.md): servers issue tickets, clients
    #: keep them in ``ticket_store`` and resume with them; False does neither.
    session_tickets: bool = attrs.field(default=True, validator=bool_)
    #: (Clients) Where tickets wait for the next connection; the default lives as
    #: long as this Config (and its ``replace()`` copies, which share it).
    ticket_store: TicketStore = attrs.field(
        factory=MemoryTicketStore, validator=_ticket_store, eq=False, repr=False
    )
    #: (Servers) Secrets (32+ bytes each) that seal tickets: the first seals, all
    #: open. Share them to resume across processes; ``None``: a random key made
    #: with this Config (each ``replace()`` copy makes its own).
    ticket_keys: tuple[bytes, ...] | None = attrs.field(
        default=None, converter=_ticket_keys, repr=False
    )
    #: 0-RTT. Clients: send the first bytes before the handshake completes when
    #: resuming (``connect()`` returns at once); servers: accept such bytes. Early
    #: bytes can be replayed by an attacker: see docs/resumption.md. Off whenever
    #: ``auth`` or ``auth_request`` is set (credentials never travel in 0-RTT).
    early_data: bool = attrs.field(default=False, validator=bool_)
    #: (Servers) The secret (16+ bytes) stateless reset tokens derive from; give
    #: a restarted server the same one so it can reset what its predecessor lost.
    #: ``None``: a random one per endpoint.
    reset_key: bytes | None = attrs.field(default=None, validator=_reset_key, repr=False)
    #: Called with each connection's qlog trace (a JSON-ready dict in qlog 0.3,
    #: viewable in qvis) when the connection ends; ``None``: no tracing.
    #: :class:`sansquic.qlog.QlogDirectory` writes them to files. Exceptions it
    #: raises are logged on the ``sansquic`` logger, not propagated.
    qlog: Callable[[dict[str, Any]], object] | None = attrs.field(default=None, validator=_qlog)
    #: Events one trace keeps at most: the first and the latest half; what falls
    #: in between is dropped and counted (``summary.events_dropped``), so a long
    #: connection's trace stays bounded (an event is roughly 0.5-1 KB).
    qlog_max_events: int = attrs.field(default=20_000, validator=int_in(1, 2**31))

    #: True when ``dev_mode`` made the certificate pair (not settable).
    dev_certificate: bool = attrs.field(default=False, init=False, repr=False, eq=False)
    #: (Servers) What seals and opens tickets: ``ticket_keys``, or a random key made
    #: with this Config (not settable).
    ticket_sealer: TicketKeys = attrs.field(init=False, repr=False, eq=False)

    def __attrs_post_init__(self) -> None:
        if (self.certificate is None) != (self.private_key is None):
            raise ConfigError("certificate and private_key go together: give both or neither")
        if self.dev_mode and self.certificate is None:
            pair = issue_dev_certificate()
            object.__setattr__(self, "certificate", pair.certificate)
            object.__setattr__(self, "private_key", pair.private_key)
            object.__setattr__(self, "dev_certificate", True)
        _check_pem(self.certificate, self.private_key, self.ca_certs)
        sealer = TicketKeys(self.ticket_keys) if self.ticket_keys else TicketKeys.random()
        object.__setattr__(self, "ticket_sealer", sealer)
        if self.engine == "qh3":
            _check_qh3(self)
        if self.keep_alive is not None and not self.keep_alive < self.idle_timeout:
            raise ConfigError(
                f"keep_alive ({self.keep_alive}) must be below idle_timeout ({self.idle_timeout})"
            )
        if self.max_stream_window < self.max_stream_data:
            raise ConfigError("max_stream_window must be at least max_stream_data")
        if self.max_connection_window < self.max_data:
            raise ConfigError("max_connection_window must be at least max_data")
        for low, high, limit, what in (
            (self.send_low_watermark, self.send_high_watermark, self.send_buffer_limit, "send"),
            (
                self.connection_send_low_watermark,
                self.connection_send_high_watermark,
                self.connection_send_buffer_limit,
                "connection_send",
            ),
        ):
            if not low < high <= limit:
                raise ConfigError(
                    f"{what}_low_watermark < {what}_high_watermark <= {what}_buffer_limit "
                    f"must hold, not {low}, {high}, {limit}"
                )

    def with_token(self, token: str | bytes | None) -> Config:
        """(Clients) A copy that presents ``token`` as a bearer token; None changes nothing."""
        if token is None:
            return self
        credentials = token.encode("utf-8") if isinstance(token, str) else bytes(token)
        return self.replace(auth_request=AuthRequest(credentials=credentials))

    def with_authenticator(self, authenticator: Authenticator | None) -> Config:
        """(Servers) A copy whose auth policy decides with ``authenticator``, keeping the
        policy's other settings; None changes nothing."""
        if authenticator is None:
            return self
        policy = attrs.evolve(self.auth or AuthPolicy(), authenticator=authenticator)
        return self.replace(auth=policy)

    def trust_anchors(self) -> bytes | None:
        """(Clients) The PEM trust anchors to verify a server with; ``None``: the system's.

        ``ca_certs``, plus this process's development authority when
        ``trust_dev_certificate`` is set. Engines and the WebSocket fallback all
        take their trust from here.
        """
        if not self.trust_dev_certificate:
            return self.ca_certs
        return (self.ca_certs or b"") + DEV_AUTHORITY_PEM

    def replace(self, **changes: Any) -> Config:
        """Return a copy with ``changes`` applied and validated.

        Turning ``dev_mode`` off also drops a certificate pair that dev mode made.
        """
        if self.dev_certificate and changes.get("dev_mode") is False:
            changes.setdefault("certificate", None)
            changes.setdefault("private_key", None)
        try:
            new = attrs.evolve(self, **changes)
        except TypeError as exc:
            raise ConfigError(str(exc)) from None
        if self.dev_certificate and new.certificate == self.certificate:
            object.__setattr__(new, "dev_certificate", True)
        return new


# The qh3 releases the seam is tested with (tests/test_qh3.py); pyproject's extra pins them.
_QH3_TESTED = (2, 1)


def _check_qh3(config: Config) -> None:
    """qh3 must be installed in the tested range, and asked only for what it can do."""
    try:
        found = importlib.metadata.version("qh3")
    except importlib.metadata.PackageNotFoundError:
        raise ConfigError(
            "engine='qh3' needs the qh3 package: pip install 'sansquic[qh3]'"
        ) from None
    if tuple(int(part) for part in found.split(".")[:2]) != _QH3_TESTED:
        raise ConfigError(
            f"engine='qh3' is tested with qh3 {'.'.join(map(str, _QH3_TESTED))}.x, not {found}"
        )
    # Version and cipher choice are wired to aioquic only; refuse rather than ignore.
    if config.versions != ("v1",) or config.cipher_suites is not None:
        raise ConfigError("engine='qh3' speaks QUIC v1 with its default cipher suites only")
    if config.early_data or config.ticket_keys is not None:
        raise ConfigError(
            "engine='qh3' has no session tickets in sansquic yet: early_data and "
            "ticket_keys need engine='aioquic'"
        )
    limits = config.rate_limits
    for name in ("peer_streams_per_second", "peer_bytes_per_second"):
        if getattr(limits, name) is not None:
            raise ConfigError(
                f"engine='qh3' cannot apply rate_limits.{name}: qh3 grants credit itself"
            )


def _check_pem(certificate: bytes | None, key: bytes | None, ca_certs: bytes | None) -> None:
    """Parse certificates and key now, so a bad file fails here, not at the first packet."""
    try:
        if certificate is not None:
            x509.load_pem_x509_certificates(certificate)
        if key is not None:
            serialization.load_pem_private_key(key, password=None)
        if ca_certs is not None:
            x509.load_pem_x509_certificates(ca_certs)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"cannot load a certificate or key: {exc}") from None
