"""The engine seam for aioquic: the only module that imports or touches aioquic.

Every private attribute used here is listed in ``PRIVATE_ATTRIBUTES`` and
checked by ``tests/test_engine_seam.py``, so an aioquic upgrade that moves one
fails loudly instead of misbehaving.
"""

from __future__ import annotations

import hmac
import logging
import ssl
from collections.abc import Callable, Iterator
from typing import Any

import attrs
from aioquic.buffer import (  # type: ignore[attr-defined]  # re-exported from C
    Buffer,
    BufferReadError,
)
from aioquic.quic import events as qe
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection, QuicConnectionState
from aioquic.quic.crypto import CryptoPair
from aioquic.quic.packet import (
    QuicErrorCode,
    QuicFrameType,
    QuicPacketType,
    encode_quic_retry,
    encode_quic_version_negotiation,
    pull_quic_header,
)
from aioquic.quic.packet_builder import QuicPacketBuilder
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from cryptography.x509 import load_pem_x509_certificates

from ._config import Config
from ._engine import (
    Address,
    CidIssued,
    CidRetired,
    ClosedBy,
    DatagramIn,
    EngineEvent,
    HandshakeDone,
    StopSendingByPeer,
    StreamData,
    StreamResetByPeer,
    Terminated,
)
from ._errors import ConfigError
from .ratelimit import TokenBucket

__all__ = [
    "CID_LENGTH",
    "PRIVATE_ATTRIBUTES",
    "SUPPORTED_VERSIONS",
    "AioquicEngine",
    "CreditGovernor",
    "Header",
    "encode_initial_close",
    "encode_retry",
    "encode_stateless_reset",
    "encode_version_negotiation",
    "initial_destination_cid",
    "parse_header",
]

#: (object, attribute) pairs of aioquic internals this module relies on.
PRIVATE_ATTRIBUTES = (
    ("QuicConnection", "_local_max_streams_bidi"),  # raise the 128-stream default
    ("QuicConnection", "_local_max_streams_uni"),
    ("QuicConnection", "_remote_max_datagram_frame_size"),  # peer's datagram limit
    ("QuicConnection", "_close_event"),  # who closed
    ("QuicConnection", "_close_at"),  # idle-timeout detection
    ("QuicConnection", "_state"),
    ("QuicConnection", "_streams"),  # engine-held stream count
    ("QuicConnection", "_events"),  # skip draining when empty
    ("QuicConnection", "_peer_cid"),  # short-header size for datagram capacity
    ("QuicConnection", "_loss"),  # RTT and congestion window
    ("QuicPacketRecovery", "_rtt_smoothed"),
    ("QuicPacketRecovery", "_rtt_min"),
    ("QuicPacketRecovery", "_rtt_initialized"),
    ("QuicConnection", "_local_max_data"),  # governed by peer_bytes_per_second
    ("QuicConnection", "_host_cids"),  # derived stateless reset tokens
    ("QuicConnection", "_peer_cid_available"),  # peer tokens, to spot a stateless reset
    ("QuicConnection", "_replenish_connection_ids"),  # overridden to derive tokens
    ("QuicConnectionId", "stateless_reset_token"),
    ("QuicConnectionId", "was_sent"),
    ("QuicConnectionId", "sequence_number"),
    ("QuicConnection", "_is_client"),
    ("Limit", "value"),
    ("Limit", "sent"),
    ("Limit", "used"),
    ("Limit", "frame_type"),
    ("Limit", "name"),
)

#: Connection id length this side uses; short headers are parsed with it.
CID_LENGTH = 8
#: QUIC versions this side speaks.
SUPPORTED_VERSIONS = (1,)

# aioquic logs failed handshakes at WARNING on the "quic" logger; with no handler
# configured Python's last-resort handler would print them to stderr. A
# NullHandler keeps a library quiet while records still propagate to any
# handler the application installs.
logging.getLogger("quic").addHandler(logging.NullHandler())

_SMALLEST_INITIAL = 1200
# DATAGRAM frame overhead: type byte plus a length varint of up to 2 bytes
# (payloads stay below 16,384), plus one because aioquic rejects a frame whose
# size *equals* the advertised maximum.
_DATAGRAM_FRAME_OVERHEAD = 4
# 1-RTT packet overhead besides the destination connection id: first byte,
# packet number of up to 4 bytes, AEAD tag.
_SHORT_HEADER_OVERHEAD = 1 + 4 + 16


@attrs.frozen(slots=True)
class Header:
    """What an Endpoint needs from a packet's first header, engine-neutral."""

    long: bool
    version: int | None
    initial: bool
    negotiation: bool
    destination_cid: bytes
    source_cid: bytes
    token: bytes


def parse_header(data: bytes) -> Header | None:
    """Parse the first packet header of a datagram; ``None`` if it is not QUIC."""
    try:
        header = pull_quic_header(Buffer(data=data), host_cid_length=CID_LENGTH)
    except (ValueError, BufferReadError):
        return None
    return Header(
        long=header.version is not None,
        version=header.version,
        initial=header.packet_type == QuicPacketType.INITIAL,
        negotiation=header.packet_type == QuicPacketType.VERSION_NEGOTIATION,
        destination_cid=header.destination_cid,
        source_cid=header.source_cid,
        token=header.token,
    )


def _version(header: Header) -> int:
    return header.version if header.version is not None else SUPPORTED_VERSIONS[0]


def encode_version_negotiation(header: Header) -> bytes:
    """A Version Negotiation packet answering ``header``."""
    data: bytes = encode_quic_version_negotiation(
        source_cid=header.destination_cid,
        destination_cid=header.source_cid,
        supported_versions=list(SUPPORTED_VERSIONS),
    )
    return data


def encode_retry(header: Header, retry_source_cid: bytes, token: bytes) -> bytes:
    """A Retry packet answering the client Initial ``header``."""
    data: bytes = encode_quic_retry(
        version=_version(header),
        source_cid=retry_source_cid,
        destination_cid=header.source_cid,
        original_destination_cid=header.destination_cid,
        retry_token=token,
    )
    return data


def encode_initial_close(header: Header, error_code: int) -> bytes:
    """A server Initial carrying CONNECTION_CLOSE(``error_code``) for the client Initial ``header``.

    The Initial keys derive from the client's destination connection id, so
    this needs no connection state.
    """
    crypto = CryptoPair()
    crypto.setup_initial(cid=header.destination_cid, is_client=False, version=_version(header))
    builder = QuicPacketBuilder(
        host_cid=header.destination_cid,
        is_client=False,
        max_datagram_size=_SMALLEST_INITIAL,
        peer_cid=header.source_cid,
        version=_version(header),
    )
    builder.start_packet(QuicPacketType.INITIAL, crypto)
    buf = builder.start_frame(QuicFrameType.TRANSPORT_CLOSE, capacity=16)
    buf.push_uint_var(error_code)
    buf.push_uint_var(QuicFrameType.PADDING)
    buf.push_uint_var(0)  # no reason phrase
    datagrams, _ = builder.flush()
    data: bytes = datagrams[0]
    return data


def encode_stateless_reset(token: bytes, filler: bytes) -> bytes:
    """A stateless reset: a short-header look-alike of random ``filler`` ending in ``token``."""
    first = (filler[0] & 0x3F) | 0x40  # fixed bit set, long-header bit clear
    return bytes([first]) + filler[1:] + token


def initial_destination_cid(data: bytes, cid_length: int) -> bytes | None:
    """Return the destination connection id if ``data`` can start a server connection.

    That is a client Initial of QUIC version 1 padded to at least 1200 bytes;
    anything else gives ``None``.
    """
    if len(data) < _SMALLEST_INITIAL:
        return None
    try:
        header = pull_quic_header(Buffer(data=data), host_cid_length=cid_length)
    except (ValueError, BufferReadError):
        return None
    if header.packet_type != QuicPacketType.INITIAL or header.version != 1:
        return None
    return header.destination_cid


def _quic_configuration(config: Config, *, is_client: bool, server_name: str | None) -> Any:
    qc = QuicConfiguration(
        is_client=is_client,
        alpn_protocols=list(config.alpn),
        idle_timeout=config.idle_timeout,
        max_data=config.max_data,
        max_stream_data=config.max_stream_data,
        max_datagram_size=config.max_udp_payload_size,
        max_datagram_frame_size=(
            config.max_datagram_size + _DATAGRAM_FRAME_OVERHEAD if config.datagrams else None
        ),
        congestion_control_algorithm=config.congestion_control,
        server_name=server_name,
    )
    if is_client:
        if config.dev_mode or not config.verify_peer:
            qc.verify_mode = ssl.CERT_NONE
        elif config.ca_certs is not None:
            qc.cadata = config.ca_certs
    else:
        if config.certificate is None or config.private_key is None:
            raise ConfigError("a server needs certificate and private_key, or dev_mode=True")
        try:
            chain = load_pem_x509_certificates(config.certificate)
            qc.private_key = load_pem_private_key(config.private_key, password=None)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"cannot load the certificate or key: {exc}") from exc
        qc.certificate, qc.certificate_chain = chain[0], chain[1:]
    return qc


class CreditGovernor:
    """Stands in for aioquic's ``Limit``: the engine asks for credit, a token bucket grants it.

    aioquic raises a limit by assigning ``value`` (MAX_STREAMS by one per
    closed stream, MAX_DATA by doubling). Here each such raise becomes credit
    owed to the peer, paid out as the bucket refills, so the peer can never
    open streams or send bytes faster than the bucket's rate.
    """

    __slots__ = ("_bucket", "_granted", "_owed", "_quantum", "frame_type", "name", "sent", "used")

    def __init__(self, limit: Any, bucket: TokenBucket, quantum: int = 1) -> None:
        self.frame_type = limit.frame_type
        self.name = limit.name
        self.sent = limit.sent
        self.used = limit.used
        self._granted: int = limit.value
        self._owed = 0
        self._bucket = bucket
        # Pay out at least this much at a time (bytes come in chunks, not one by one).
        self._quantum = quantum

    @property
    def value(self) -> int:
        return self._granted

    @value.setter
    def value(self, wanted: int) -> None:
        self._owed += max(0, wanted - self._granted)

    def grant(self, now: float) -> None:
        """Pay out what the bucket allows at ``now``, a quantum or more at a time."""
        owed = self._owed
        if owed and self._bucket.tokens(now) >= min(owed, self._quantum):
            paid = self._bucket.take(now, owed)
            self._granted += paid
            self._owed -= paid

    def wake_at(self, now: float) -> float | None:
        """When the next quantum of credit can be paid out, if any is owed."""
        if not self._owed:
            return None
        return self._bucket.ready_at(now, min(self._owed, self._quantum))


class _QuicConnection(QuicConnection):
    """aioquic's connection with stateless reset tokens derived from the connection id.

    aioquic draws tokens at random, so a server that lost a connection's state
    could never prove a reset; derived tokens let the Endpoint reset any
    connection id it issued.
    """

    _reset_token: Callable[[bytes], bytes] | None = None

    def _replenish_connection_ids(self) -> None:
        super()._replenish_connection_ids()
        self._derive_reset_tokens()

    def _derive_reset_tokens(self) -> None:
        if self._reset_token is not None:
            for connection_id in self._host_cids:
                # The first id's token travels in a server's transport parameters;
                # a client must not send one (RFC 9000 section 18.2).
                first = connection_id.sequence_number == 0
                if (first and not self._is_client) or not connection_id.was_sent:
                    connection_id.stateless_reset_token = self._reset_token(connection_id.cid)


class AioquicEngine:
    """One aioquic ``QuicConnection`` behind the seam contract of ``_engine.py``."""

    def __init__(
        self,
        config: Config,
        *,
        is_client: bool,
        server_name: str | None = None,
        original_destination_cid: bytes | None = None,
        retry_source_cid: bytes | None = None,
        reset_token: Callable[[bytes], bytes] | None = None,
        now: float = 0.0,
    ) -> None:
        qc = _quic_configuration(config, is_client=is_client, server_name=server_name)
        quic = self._quic = _QuicConnection(
            configuration=qc,
            original_destination_connection_id=original_destination_cid,
            retry_source_connection_id=retry_source_cid,
        )
        quic._reset_token = reset_token
        quic._derive_reset_tokens()
        # aioquic lets the peer open only 128 streams of each kind; the limits
        # are read when the transport parameters are written, so set them now.
        for limit, value in (
            (quic._local_max_streams_bidi, config.max_streams_bidi),
            (quic._local_max_streams_uni, config.max_streams_uni),
        ):
            limit.value = limit.sent = value
        self._governors: list[CreditGovernor] = []
        limits = config.rate_limits
        if limits.peer_streams_per_second is not None:
            rate = limits.peer_streams_per_second
            for name in ("_local_max_streams_bidi", "_local_max_streams_uni"):
                governor = CreditGovernor(getattr(quic, name), TokenBucket(rate, max(1, rate), now))
                setattr(quic, name, governor)
                self._governors.append(governor)
        if limits.peer_bytes_per_second is not None:
            rate = limits.peer_bytes_per_second
            governor = CreditGovernor(
                quic._local_max_data,
                TokenBucket(rate, max(1, rate), now),
                quantum=max(1, int(rate / 20)),  # about 20 credit updates a second
            )
            setattr(quic, "_local_max_data", governor)  # noqa: B010  # duck-typed Limit
            self._governors.append(governor)
        self._now = now
        self._closed_by: ClosedBy | None = None

    # -- inputs ---------------------------------------------------------------

    def connect(self, addr: Address, now: float) -> None:
        self._quic.connect(addr, now=now)

    def _grant(self, now: float) -> None:
        self._now = now
        for governor in self._governors:
            governor.grant(now)

    def receive_datagram(self, data: bytes, addr: Address, now: float) -> None:
        self._grant(now)
        self._quic.receive_datagram(data, addr, now=now)
        self._note_engine_close()

    def handle_timer(self, now: float) -> None:
        self._grant(now)
        quic = self._quic
        if quic._close_at is None:
            return  # nothing decrypted yet (a server fed junk): no deadline is armed
        idle = quic._close_event is None and quic._close_at is not None and now >= quic._close_at
        quic.handle_timer(now=now)
        if idle and self._closed_by is None:
            self._closed_by = ClosedBy.IDLE
        self._note_engine_close()

    def _note_engine_close(self) -> None:
        """Record who closed when the engine closed on its own."""
        if self._closed_by is None and self._quic._close_event is not None:
            peer = self._quic._state == QuicConnectionState.DRAINING
            self._closed_by = ClosedBy.PEER if peer else ClosedBy.VIOLATION

    # -- outputs --------------------------------------------------------------

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        self._grant(now)
        out: list[tuple[bytes, Address]] = self._quic.datagrams_to_send(now=now)
        self._note_engine_close()
        return out

    def timer(self) -> float | None:
        timer: float | None = self._quic.get_timer()
        for governor in self._governors:
            wake = governor.wake_at(self._now)
            if wake is not None and (timer is None or wake < timer):
                timer = wake
        return timer

    def has_events(self) -> bool:
        """Whether :meth:`events` would yield anything (cheap: checked on every call)."""
        return bool(self._quic._events)

    def events(self) -> Iterator[EngineEvent]:
        """Drain the engine's events, translated."""
        quic = self._quic
        while (ev := quic.next_event()) is not None:
            if isinstance(ev, qe.StreamDataReceived):
                yield StreamData(ev.stream_id, ev.data, ev.end_stream)
            elif isinstance(ev, qe.DatagramFrameReceived):
                yield DatagramIn(ev.data)
            elif isinstance(ev, qe.StreamReset):
                yield StreamResetByPeer(ev.stream_id, int(ev.error_code))
            elif isinstance(ev, qe.StopSendingReceived):
                yield StopSendingByPeer(ev.stream_id, int(ev.error_code))
            elif isinstance(ev, qe.HandshakeCompleted):
                yield HandshakeDone(ev.alpn_protocol)
            elif isinstance(ev, qe.ConnectionIdIssued):
                yield CidIssued(ev.connection_id)
            elif isinstance(ev, qe.ConnectionIdRetired):
                yield CidRetired(ev.connection_id)
            elif isinstance(ev, qe.ConnectionTerminated):
                yield self._terminated(ev)

    def pending_close(self) -> Terminated | None:
        """How the connection is closing, once it is, before it has terminated."""
        if self._closed_by is None:
            return None
        close_event = self._quic._close_event
        if close_event is None:
            return None
        return self._terminated(close_event)

    def _terminated(self, ev: Any) -> Terminated:
        closed_by = self._closed_by or ClosedBy.VIOLATION
        if closed_by is ClosedBy.IDLE:
            return Terminated(int(QuicErrorCode.NO_ERROR), "idle timeout", closed_by, False)
        # close() is always an application close; otherwise the frame type tells.
        application = closed_by is ClosedBy.LOCAL or ev.frame_type is None
        return Terminated(int(ev.error_code), str(ev.reason_phrase), closed_by, application)

    # -- commands -------------------------------------------------------------

    def send_stream(self, stream_id: int, data: bytes, end: bool) -> None:
        self._quic.send_stream_data(stream_id, data, end_stream=end)

    def reset_stream(self, stream_id: int, error_code: int) -> None:
        self._quic.reset_stream(stream_id, error_code)

    def stop_stream(self, stream_id: int, error_code: int) -> None:
        # The engine forgets a stream once both directions are done; a stream it
        # no longer holds has nothing left to stop.
        if stream_id in self._quic._streams:
            self._quic.stop_stream(stream_id, error_code)

    def change_connection_id(self) -> None:
        self._quic.change_connection_id()

    def send_datagram(self, data: bytes) -> None:
        self._quic.send_datagram_frame(data)

    def close(self, error_code: int, reason: str) -> None:
        if self._closed_by is None:
            self._closed_by = ClosedBy.LOCAL
        self._quic.close(error_code=error_code, reason_phrase=reason)

    # -- queries --------------------------------------------------------------

    def max_datagram_payload(self) -> int | None:
        """Largest datagram the peer accepts and one packet can carry; None if unsupported."""
        quic = self._quic
        remote = quic._remote_max_datagram_frame_size
        if remote is None or quic.configuration.max_datagram_frame_size is None:
            return None
        packet_room = (
            quic.configuration.max_datagram_size
            - _SHORT_HEADER_OVERHEAD
            - len(quic._peer_cid.cid)
            - _DATAGRAM_FRAME_OVERHEAD
        )
        return max(0, min(remote - _DATAGRAM_FRAME_OVERHEAD, packet_room))

    @property
    def host_cid(self) -> bytes:
        """The connection id the peer reaches this side by at first."""
        cid: bytes = self._quic.host_cid
        return cid

    def is_stateless_reset(self, data: bytes) -> bool:
        """Whether ``data`` is a stateless reset from the peer (RFC 9000 section 10.3)."""
        if len(data) < 21 or data[0] & 0x80:
            return False
        tail = data[-16:]
        quic = self._quic
        tokens = [quic._peer_cid.stateless_reset_token]
        tokens += [cid.stateless_reset_token for cid in quic._peer_cid_available]
        return any(token and hmac.compare_digest(token, tail) for token in tokens)

    def stream_count(self) -> int:
        """Streams the engine still holds state for (acks may still be due)."""
        return len(self._quic._streams)

    def path_stats(self) -> tuple[float | None, float | None, int, int]:
        """(smoothed RTT, minimum RTT, congestion window, bytes in flight)."""
        loss = self._quic._loss
        if not loss._rtt_initialized:
            return None, None, loss.congestion_window, loss.bytes_in_flight
        return loss._rtt_smoothed, loss._rtt_min, loss.congestion_window, loss.bytes_in_flight
