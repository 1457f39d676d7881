"""The engine seam for aioquic: the only module that imports or touches aioquic.

Every private attribute used here is listed in ``PRIVATE_ATTRIBUTES`` and
checked by ``tests/test_engine_seam.py``, so an aioquic upgrade that moves one
fails loudly instead of misbehaving.
"""

from __future__ import annotations

import hmac
import logging
import math
import ssl
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import attrs
from aioquic import tls
from aioquic.buffer import (  # type: ignore[attr-defined]  # re-exported from C
    Buffer,
    BufferReadError,
)
from aioquic.quic import events as qe
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import (
    CRYPTO_BUFFER_SIZE,
    END_STATES,
    PING_FRAME_CAPACITY,
    QuicConnection,
    QuicConnectionState,
)
from aioquic.quic.crypto import CryptoPair
from aioquic.quic.logger import QuicLoggerTrace
from aioquic.quic.packet import (
    QuicFrameType,
    QuicPacketType,
    QuicProtocolVersion,
    encode_quic_retry,
    encode_quic_version_negotiation,
    pull_quic_header,
    pull_quic_transport_parameters,
)
from aioquic.quic.packet_builder import QuicDeliveryState, QuicPacketBuilder
from aioquic.quic.recovery import K_MICRO_SECOND, QuicPacketPacer
from aioquic.quic.stream import QuicStream
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from cryptography.x509 import load_pem_x509_certificates

from . import _aioquic_tickets
from ._aioquic_tickets import ClientTickets, ServerTickets
from ._codes import ClosedBy
from ._config import QUIC_VERSIONS, Config
from ._engine import (
    Address,
    AioquicStyleEngine,
    BoundedTrace,
    EarlyDataAccepted,
    EngineEvent,
    KeyState,
    PathProbeAcked,
    QlogRecorder,
    RecoveryStats,
    translate,
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
    "short_header_cid",
]

#: (object, attribute) pairs of aioquic internals this module relies on.
PRIVATE_ATTRIBUTES = (
    ("QuicConnection", "_local_max_streams_bidi"),  # raise the 128-stream default
    ("QuicConnection", "_local_max_streams_uni"),
    ("QuicConnection", "_remote_max_datagram_frame_size"),  # peer's datagram limit
    ("QuicConnection", "_close_event"),  # who closed
    ("QuicConnection", "_close_at"),  # idle-timeout detection
    ("QuicConnection", "_state"),
    ("QuicConnection", "_streams"),  # engine-held stream count; a subset while sending
    ("QuicConnection", "_events"),  # skip draining when empty
    ("QuicConnection", "_peer_cid"),  # short-header size; its stateless reset token
    ("QuicConnection", "_loss"),  # RTT and congestion window
    ("QuicConnection", "_network_paths"),  # the peer's current address
    ("QuicPacketRecovery", "_rtt_smoothed"),
    ("QuicPacketRecovery", "_rtt_initialized"),
    ("QuicPacketRecovery", "_rtt_variance"),
    ("QuicConnection", "_local_max_data"),  # credit follows reads
    ("QuicConnection", "_write_stream_limits"),  # overridden: stream credit follows reads
    ("QuicConnection", "_on_max_stream_data_delivery"),  # overridden: a lost one is owed
    ("QuicConnection", "_remote_max_data"),  # send budget
    ("QuicConnection", "_remote_max_data_used"),
    ("QuicConnection", "_remote_max_streams_bidi"),  # StreamsAvailable
    ("QuicConnection", "_remote_max_streams_uni"),
    ("QuicStream", "max_stream_data_local"),
    ("QuicStream", "max_stream_data_local_sent"),
    ("QuicStream", "max_stream_data_remote"),
    ("QuicStream", "is_blocked"),
    ("QuicStreamSender", "_buffer_stop"),
    ("QuicStreamSender", "highest_offset"),
    ("QuicStreamSender", "buffer_is_empty"),
    ("QuicStreamReceiver", "_final_size"),
    ("QuicConnection", "_host_cids"),  # derived stateless reset tokens
    ("QuicConnection", "_peer_cid_available"),  # spare ids, for migrate()
    ("QuicConnection", "_replenish_connection_ids"),  # overridden to derive tokens
    ("QuicConnection", "_parse_transport_parameters"),  # overridden: the peer's ack exponent
    ("QuicConnection", "_remote_ack_delay_exponent"),
    ("QuicConnection", "_streams_queue"),  # idle streams set aside while packets are built
    ("QuicConnection", "_write_stream_frame"),  # overridden: skipped once a packet is full
    ("QuicConnection", "_write_connection_limits"),  # overridden: the queue's walk stops
    ("QuicStreamSender", "reset_pending"),
    ("QuicStreamReceiver", "stop_pending"),
    ("QuicStream", "is_finished"),
    ("QuicConnectionId", "stateless_reset_token"),
    ("QuicConnectionId", "was_sent"),
    ("QuicConnectionId", "sequence_number"),
    ("QuicConnection", "_is_client"),
    ("Limit", "value"),
    ("Limit", "sent"),
    ("Limit", "used"),
    ("Limit", "frame_type"),
    ("Limit", "name"),
    # Path MTU discovery: probes are built and registered here, sizes applied.
    ("QuicConnection", "_max_datagram_size"),
    ("QuicConnection", "_packet_number"),
    ("QuicConnection", "_peer_token"),
    ("QuicConnection", "_spin_bit"),
    ("QuicConnection", "_version"),
    ("QuicConnection", "_cryptos"),
    ("QuicConnection", "_spaces"),
    ("QuicConnection", "_handshake_complete"),
    ("QuicConnection", "_datagrams_pending"),
    ("QuicPacketRecovery", "_cc"),  # its on_packet_acked / on_packets_lost are wrapped
    ("QuicPacketRecovery", "_pacer"),  # replaced: bursts of one GSO send (_Pacer)
    ("QuicPacketPacer", "_max_datagram_size"),
    ("QuicPacketPacer", "bucket_max"),
    ("QuicPacketPacer", "bucket_time"),
    ("QuicPacketRecovery", "_pto_count"),
    ("QuicPacketRecovery", "_time_of_last_sent_ack_eliciting_packet"),
    # TLS output buffers freed once the handshake is confirmed, lent back to a CRYPTO frame.
    ("QuicConnection", "_crypto_buffers"),
    ("QuicConnection", "_handle_crypto_frame"),  # overridden
    ("QuicConnection", "_cryptos_initial"),  # spent keys replaced by one shared empty pair
    ("QuicConnection", "_QuicConnection__frame_handlers"),  # its epoch sets are shared
    ("QuicConnection", "_handshake_confirmed"),
    ("QuicPacketBuilder", "_datagram_needs_padding"),
    *_aioquic_tickets.PRIVATE_ATTRIBUTES,
    # qlog: events kept in a bounded log, stamped with the core's time.
    ("QuicLoggerTrace", "_events"),
    # Key updates: the phase packets go out under, and acknowledgement of the current keys.
    ("CryptoPair", "send"),
    ("CryptoContext", "key_phase"),
    ("QuicPacketSpace", "largest_acked_packet"),
    ("QuicPacketSpace", "ack_at"),  # owed ACKs ride with new data, not 1 ms later alone
    # Migration: which paths the peer proved it can be reached on.
    ("QuicNetworkPath", "is_validated"),
    ("QuicNetworkPath", "local_challenge_sent"),  # an unanswered challenge is sent again
    ("QuicConnection", "_on_path_challenge_delivery"),  # overridden: ... once acknowledged
)

#: Connection id length this side uses; short headers are parsed with it.
CID_LENGTH = 8
#: QUIC versions the engine speaks (v1, v2); ``Config.versions`` picks among them.
SUPPORTED_VERSIONS = (QuicProtocolVersion.VERSION_1, QuicProtocolVersion.VERSION_2)

# aioquic logs failed handshakes at WARNING on the "quic" logger; with no handler
# configured Python's last-resort handler would print them to stderr. A
# NullHandler keeps a library quiet while records still propagate to any
# handler the application installs.
logging.getLogger("quic").addHandler(logging.NullHandler())

_SMALLEST_INITIAL = 1200
_MAX_STREAM_DATA_FRAME_CAPACITY = 1 + 8 + 8  # type, stream id and limit as varints
# DATAGRAM frame overhead: type byte plus a length varint of up to 2 bytes
# (payloads stay below 16,384), plus one because aioquic rejects a frame whose
# size *equals* the advertised maximum.
_DATAGRAM_FRAME_OVERHEAD = 4
# 1-RTT packet overhead besides the destination connection id: first byte,
# packet number of up to 4 bytes, AEAD tag.
_SHORT_HEADER_OVERHEAD = 1 + 4 + 16
#: The smallest STREAM frame header (type, a 1-byte stream id, a 2-byte length):
#: with less room left in a packet, no stream can put anything in it.
_STREAM_FRAME_MIN_HEADER = 1 + 1 + 2
#: Above this many streams in aioquic's send queue, those with nothing to send are
#: set aside while it builds packets (see _QuicConnection.datagrams_to_send).
_STREAM_QUEUE_SHORT = 8
#: No stream was reset or stopped since the last send (shared, never appended to).
_NONE_ENDED: list[int] = []


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


def short_header_cid(data: bytes) -> bytes | None:
    """The destination CID of a 1-RTT packet (short header, fixed bit set), read
    without a full parse (the per-datagram routing path); ``None`` for any other."""
    if type(data) is bytes and len(data) > CID_LENGTH and data[0] & 0xC0 == 0x40:
        return data[1 : 1 + CID_LENGTH]
    return None


def _version(header: Header) -> int:
    return header.version if header.version is not None else SUPPORTED_VERSIONS[0]


def encode_version_negotiation(header: Header, versions: tuple[int, ...]) -> bytes:
    """A Version Negotiation packet answering ``header``, offering ``versions``."""
    data: bytes = encode_quic_version_negotiation(
        source_cid=header.destination_cid,
        destination_cid=header.source_cid,
        supported_versions=list(versions),
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


def initial_destination_cid(data: bytes) -> bytes | None:
    """Return the destination connection id if ``data`` can start a server connection.

    That is a client Initial of a supported version padded to at least 1200
    bytes; anything else gives ``None``.
    """
    header = parse_header(data) if len(data) >= _SMALLEST_INITIAL else None
    if header is None or not header.initial or header.version not in SUPPORTED_VERSIONS:
        return None
    return header.destination_cid


def _quic_configuration(config: Config, *, is_client: bool, server_name: str | None) -> Any:
    qc = QuicConfiguration(
        is_client=is_client,
        alpn_protocols=list(config.alpn),
        idle_timeout=config.idle_timeout,
        max_data=config.max_data,
        max_stream_data=config.max_stream_data,
        # Discovery starts at the floor every path carries and raises it (_pmtu.py).
        max_datagram_size=_SMALLEST_INITIAL
        if config.pmtu_discovery
        else config.max_udp_payload_size,
        max_datagram_frame_size=(
            config.max_datagram_size + _DATAGRAM_FRAME_OVERHEAD if config.datagrams else None
        ),
        congestion_control_algorithm=config.congestion_control,
        server_name=server_name,
        supported_versions=[QUIC_VERSIONS[name] for name in config.versions],
    )
    if config.cipher_suites is not None:
        qc.cipher_suites = [tls.CipherSuite[name] for name in config.cipher_suites]
    if is_client:
        if not config.verify_peer:
            qc.verify_mode = ssl.CERT_NONE
        elif (anchors := config.trust_anchors()) is not None:
            qc.cadata = anchors
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


# One QuicConfiguration per server Config, by the Config's identity (see _server_configuration).
_SERVER_CONFIGURATIONS: dict[int, tuple[weakref.ref[Config], Any]] = {}


def _server_configuration(config: Config) -> Any:
    """The QuicConfiguration every server connection of ``config`` shares.

    aioquic only reads its configuration, and building one per connection
    parsed the certificate and key again each time: native memory that stays
    with the connection, and CPU on every handshake. With a qlog sink each
    connection needs its own (the logger lives in it): ``None`` then.
    """
    if config.qlog is not None:
        return None
    key = id(config)
    entry = _SERVER_CONFIGURATIONS.get(key)
    if entry is not None and entry[0]() is config:
        return entry[1]
    qc = _quic_configuration(config, is_client=False, server_name=None)

    def forget(ref: weakref.ref[Config]) -> None:
        # Only this Config's entry: a later one may have its id by now.
        if _SERVER_CONFIGURATIONS.get(key, (None,))[0] is ref:
            del _SERVER_CONFIGURATIONS[key]

    _SERVER_CONFIGURATIONS[key] = (weakref.ref(config, forget), qc)
    return qc


class CreditGovernor:
    """Stands in for aioquic's ``Limit`` so the core, not the engine, decides credit.

    With ``follow_engine`` (stream counts), aioquic's own raises of ``value``
    (one per closed stream) become credit owed to the peer. Otherwise (data)
    the engine's raises are ignored and credit is owed as the application
    reads: :meth:`raise_to` ``consumed + window``. Owed credit is paid out a
    ``quantum`` or more at a time, at the ``bucket``'s rate when there is one.
    """

    __slots__ = (
        "_bucket",
        "_follow_engine",
        "_granted",
        "_owed",
        "_quantum",
        "frame_type",
        "name",
        "sent",
        "used",
    )

    def __init__(
        self, limit: Any, *, bucket: TokenBucket | None, quantum: int, follow_engine: bool
    ) -> None:
        self.frame_type = limit.frame_type
        self.name = limit.name
        self.sent = limit.sent
        self.used = limit.used
        self._granted: int = limit.value
        self._owed = 0
        self._bucket = bucket
        self._quantum = max(1, quantum)
        self._follow_engine = follow_engine

    @property
    def value(self) -> int:
        return self._granted

    @value.setter
    def value(self, wanted: int) -> None:
        if self._follow_engine:
            self._owed += max(0, wanted - self._granted)

    @property
    def promised(self) -> int:
        """Credit granted plus credit owed."""
        return self._granted + self._owed

    def raise_to(self, target: int) -> None:
        """Owe the peer credit up to ``target`` in all."""
        self._owed = max(self._owed, target - self._granted)

    def grant(self, now: float) -> None:
        """Pay out what is owed, a quantum or more at a time, as the bucket allows."""
        owed = self._owed
        if owed < self._quantum and (owed == 0 or self._bucket is None):
            return
        bucket = self._bucket
        if bucket is None:
            paid = owed
        elif bucket.tokens(now) >= min(owed, self._quantum):
            paid = bucket.take(now, owed)
        else:
            return
        self._granted += paid
        self._owed -= paid

    def wake_at(self, now: float) -> float | None:
        """When the bucket allows the next payment, if one is owed."""
        if not self._owed or self._bucket is None:
            return None
        return self._bucket.ready_at(now, min(self._owed, self._quantum))


class _Window:
    """A receive window that doubles, up to ``limit``, while it limits the transfer."""

    __slots__ = ("last_update", "limit", "size")

    def __init__(self, size: int, limit: int) -> None:
        self.size = size
        self.limit = limit
        self.last_update: float | None = None

    def updated(self, now: float, rtt: float) -> None:
        """A credit update goes out now; updates under four round trips apart mean
        the window, not the application, sets the pace."""
        last, self.last_update = self.last_update, now
        if last is not None and now - last < 4 * rtt and self.size < self.limit:
            self.size = min(2 * self.size, self.limit)


class _Pacer(QuicPacketPacer):
    """aioquic's pacer, with bursts of up to 64 KB rather than 16 packets.

    Each burst the pacer allows is one wake-up of the sender. At 1200-byte packets
    16 of them are 19 KB, and a bulk sender woke every 2-3 packets for the pacing
    timer: 341 send passes per MB, 25.5 MB/s at 38.6 ms of CPU per MB on asyncio.
    With 64 KB (one GSO send's worth) it was 15 passes per MB, 58.9 MB/s at
    16.6 ms/MB, and no more datagrams sent (measured; pacing off lost 4%).
    Packets larger than 8 KB go 8 at a time (aioquic: 16). Path MTU discovery's
    16 KB packets in bursts of 256 KB queued at a receiver that handles each in
    tens of microseconds, ahead of a CRITICAL message sent just after: with 128 KB
    fewer of its round trips beside a saturating LOW stream took over twice the
    idle one, for about a fifth less bulk throughput (still 5x the 1200-byte one).
    Every burst stays within a quarter of the congestion window, as aioquic's does.
    """

    def update_rate(self, congestion_window: int, smoothed_rtt: float) -> None:
        super().update_rate(congestion_window, smoothed_rtt)
        size = self._max_datagram_size
        packets = _PACING_BURST_PACKETS * size
        burst = max(2 * size, min(congestion_window // 4, max(packets, _PACING_BURST)))
        self.bucket_max = burst / (congestion_window / max(smoothed_rtt, K_MICRO_SECOND))
        if self.bucket_time > self.bucket_max:  # below aioquic's own for large packets
            self.bucket_time = self.bucket_max


#: The largest burst _Pacer lets out at once, in bytes: what one GSO send carries.
_PACING_BURST = 64 * 1024
#: ... or this many packets, where that is more (packets over 8 KB).
_PACING_BURST_PACKETS = 8
#: Seconds each of the two windows the minimum RTT is taken over spans (BBR's 10 s).
_RTT_MIN_WINDOW = 10.0
#: Streams handed data past which a send pass prunes the ids that sent everything.
_HANDED_PRUNE = 256
#: What a connection keeps of the handshake once it is confirmed: no TLS output
#: buffer, no keys (see AioquicEngine._free_handshake_leftovers).
_NO_BUFFER = Buffer(capacity=0)
_NO_KEYS = CryptoPair()
#: One instance of each set of epochs aioquic allows a frame type in.
_EPOCH_SETS: dict[frozenset[tls.Epoch], frozenset[tls.Epoch]] = {}


class _PacketWalk(list):  # type: ignore[type-arg]  # of QuicStream
    """aioquic's stream queue for one packet: its walk stops once the packet is full.

    aioquic offers each packet to every stream of its queue with something to send,
    though the first one with more than a packet's worth fills it: with 100 busy
    streams, 11 offers a packet (the core hands the engine 16 KiB turns of many
    streams), each doing nothing. The walk is aioquic's first iteration of the
    queue after _write_connection_limits; it then rebuilds the queue from a second
    one (the streams that sent go last), which sees every stream. The streams not
    reached keep their places, so the queue comes out as aioquic's own walk leaves it.
    What the walk does for a stream without room in the packet (drop it once finished,
    resend a lost reset or stop) needs it reached: a send pass over more than a few
    streams puts those ahead of the streams with data; in a short queue the streams
    that sent move behind them, so the walk comes to them within a few packets.
    """

    __slots__ = ("_builder",)

    def __init__(self, queue: list[Any], builder: Any) -> None:
        super().__init__(queue)
        self._builder = builder

    def __iter__(self) -> Iterator[Any]:
        builder, self._builder = self._builder, None
        if builder is None:
            return super().__iter__()
        return self._walk(builder)

    def _walk(self, builder: Any) -> Iterator[Any]:
        for stream in super().__iter__():
            if builder.remaining_flight_space < _STREAM_FRAME_MIN_HEADER:
                return
            yield stream

    @staticmethod
    def end(quic: QuicConnection) -> None:
        """After a send pass: a walk that never began (the packet ended before it)
        must not cut short the next iteration of the queue."""
        queue = quic._streams_queue
        if type(queue) is _PacketWalk:
            queue._builder = None


class _QuicConnection(QuicConnection):
    """aioquic's connection with stateless reset tokens derived from the connection id.

    aioquic draws tokens at random, so a server that lost a connection's state
    could never prove a reset; derived tokens let the Endpoint reset any
    connection id it issued.
    """

    # Slots, not instance attributes: aioquic's instance dict is full once its
    # __init__ ends, and one more key would make it grow by 3 KiB per connection.
    __slots__ = (
        "_ended_order",
        "_handed_order",
        "_limits_owed",
        "_reset_token",
        "_senders",
        "_server_tickets",
    )

    def __init__(
        self,
        *,
        reset_token: Callable[[bytes], bytes] | None,
        server_tickets: ServerTickets | None,
        **kwargs: Any,
    ) -> None:
        self._reset_token = reset_token
        self._server_tickets = server_tickets
        # Streams the core handed data since the last send, highest priority first.
        self._handed_order: list[int] = []
        # Streams reset or stopped since the last send (see ended()).
        self._ended_order = _NONE_ENDED
        # Streams whose MAX_STREAM_DATA is owed: raised, or its last one lost.
        self._limits_owed: dict[Any, QuicStream] = {}
        # Streams that put new data in the packet being built, in the order they did.
        self._senders: list[QuicStream] = []
        super().__init__(**kwargs)
        # aioquic builds a frozenset of epochs for each of its 33 frame types on every
        # connection, 7 KiB of an idle one: equal sets are shared instead.
        handlers = getattr(self, "_QuicConnection__frame_handlers")  # noqa: B009  # mangled
        for frame_type, (handler, epochs) in handlers.items():
            handlers[frame_type] = (handler, _EPOCH_SETS.setdefault(epochs, epochs))

    def _initialize(self, peer_cid: bytes) -> None:
        super()._initialize(peer_cid)
        if self._server_tickets is not None:
            self._server_tickets.install(self.tls)

    def _handle_crypto_frame(self, context: Any, frame_type: int, buf: Any) -> None:
        # The 1-RTT output buffer is freed once the handshake is confirmed (see
        # AioquicEngine._free_handshake_leftovers); TLS gets it back for the rare CRYPTO
        # frame after that (a NewSessionTicket), and loses it again once emptied.
        buffers = self._crypto_buffers
        trimmed = bool(buffers) and buffers[tls.Epoch.ONE_RTT] is _NO_BUFFER
        if not trimmed:
            super()._handle_crypto_frame(context, frame_type, buf)
            return
        buffers[tls.Epoch.ONE_RTT] = Buffer(capacity=CRYPTO_BUFFER_SIZE)
        try:
            super()._handle_crypto_frame(context, frame_type, buf)
        finally:
            if not buffers[tls.Epoch.ONE_RTT].tell():
                buffers[tls.Epoch.ONE_RTT] = _NO_BUFFER

    def _parse_transport_parameters(self, data: bytes, from_session_ticket: bool = False) -> None:
        super()._parse_transport_parameters(data, from_session_ticket)
        # aioquic 1.7 assigns its own ack_delay_exponent back to itself instead of the
        # peer's, so a peer with any exponent but the default 3 has every ACK delay
        # misread (exponent 0: eight times too long, up to max_ack_delay) and its RTT
        # samples corrected by the wrong amount. Validated above (<= 20) by aioquic.
        if not from_session_ticket:
            exponent = pull_quic_transport_parameters(Buffer(data=data)).ack_delay_exponent
            if exponent is not None:
                self._remote_ack_delay_exponent = exponent

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Any]]:
        # aioquic fills each packet from the first streams of its queue that have data,
        # whatever their priority, and walks the whole queue for every packet, though
        # most streams of a busy connection have nothing to send (with 100 streams the
        # walk cost more than the packet). So for this call the streams the core just
        # handed data lead, in its order (highest priority first), then the others
        # with something to send; the idle ones wait aside (the walk does nothing for
        # them) and rejoin the queue's end after it. Streams just reset or stopped
        # lead even those: see ended().
        #
        # aioquic also offers every stream of the connection a MAX_STREAM_DATA frame
        # in every packet (2000 idle streams: 2000 calls a packet). For this call its
        # stream table holds only the streams it may touch: the queue's busy ones
        # (the walk drops the finished ones from it) and those owed a frame.
        queue, handed, ended = self._streams_queue, self._handed_order, self._ended_order
        streams = self._streams
        if len(streams) <= _STREAM_QUEUE_SHORT and len(handed) <= 1 and not ended:
            handed.clear()
            try:
                return super().datagrams_to_send(now)
            finally:
                self._end_pass()
        self._handed_order = []
        self._ended_order = _NONE_ENDED
        order = dict.fromkeys(ended + handed)
        lead = [stream for sid in order if (stream := streams.get(sid)) is not None]
        leading = set(lead)
        ending: list[QuicStream] = []
        sending: list[QuicStream] = []
        idle = []
        for stream in queue:
            if stream in leading:
                continue
            sender = stream.sender
            if stream.is_finished or sender.reset_pending or stream.receiver.stop_pending:
                # Ahead of the streams with data: the walk stops at a full packet
                # (_PacketWalk), and it must reach these to drop a finished stream (a
                # peer's returns its stream credit) or to send a resent reset or stop.
                ending.append(stream)
            elif sender.buffer_is_empty:
                idle.append(stream)
            else:
                sending.append(stream)
        busy = lead + ending + sending
        self._streams_queue = busy
        table: dict[Any, QuicStream] = {stream.stream_id: stream for stream in busy}
        table.update(self._limits_owed)
        size = len(table)
        self._streams = table
        try:
            return super().datagrams_to_send(now)
        finally:
            self._end_pass()
            self._streams = streams
            if len(table) != size:  # finished streams the walk dropped
                for sid in [stream.stream_id for stream in busy]:
                    if sid not in table and sid is not None:
                        streams.pop(sid, None)
                        self._limits_owed.pop(sid, None)
            self._streams_queue += idle  # aioquic rebinds the queue per packet: its latest

    def ended(self, stream_id: int) -> None:
        """``stream_id`` was just reset or stopped: in the next send pass its frames
        go ahead of every STREAM frame, whatever aioquic's service order.

        A WebTransport session's close resets its streams and sends its
        CLOSE_WEBTRANSPORT_SESSION capsule in one pass. Chromium 150's renderer
        crashed when a RESET_STREAM came after the capsule (docs/webtransport.md);
        aioquic, serving streams round robin, often put the CONNECT stream first.
        A reset that is lost and sent again takes aioquic's order.
        """
        if self._ended_order:
            self._ended_order.append(stream_id)
        else:
            self._ended_order = [stream_id]

    def _on_path_challenge_delivery(self, delivery: Any, network_path: Any) -> None:
        super()._on_path_challenge_delivery(delivery, network_path)
        # aioquic sends a challenge again only when its packet is lost. When that packet
        # is acknowledged but the PATH_RESPONSE is lost (it is never sent again, RFC
        # 9000 section 19.18), the path stayed unvalidated until the validation deadline
        # abandoned it, and remote_address kept the client's old port meanwhile. The ACK
        # comes in the response's packet, before it, so an answered challenge is not
        # sent twice.
        if (
            delivery == QuicDeliveryState.ACKED
            and network_path is self._network_paths[0]
            and not network_path.is_validated
        ):
            network_path.local_challenge_sent = False

    def _end_pass(self) -> None:
        """What every send pass leaves behind it, on either path: no walk half begun,
        and the last packet's senders in their order."""
        _PacketWalk.end(self)
        self._order_senders()

    def _order_senders(self) -> None:
        """Put the streams that sent in the last packet at the queue's end in the
        order they sent, not aioquic's.

        aioquic moves them there from a set, in an order that follows their
        addresses in memory: the same seeded simnet run then sent different
        packets from one process to the next.
        """
        senders = self._senders
        if len(senders) > 1:
            queue, count = self._streams_queue, len(senders)
            if count == len(set(senders)) and set(queue[-count:]) == set(senders):
                queue[-count:] = senders
        senders.clear()

    def _write_connection_limits(self, builder: Any, space: Any) -> None:
        self._order_senders()  # the last packet's: aioquic has just rebuilt the queue
        super()._write_connection_limits(builder, space)
        # The last call aioquic makes before it walks the stream queue for this packet.
        queue = self._streams_queue
        if type(queue) is _PacketWalk:  # a walk that never began (see _PacketWalk.end)
            queue._builder = builder
        elif len(queue) > 1:
            self._streams_queue = _PacketWalk(queue, builder)

    def _write_stream_frame(self, builder: Any, space: Any, stream: Any, max_offset: int) -> int:
        # Once a packet is full aioquic still offers it to every stream with data, at
        # a few microseconds each; with no room for any STREAM frame header the answer
        # is known (aioquic's own: nothing, and no state changes).
        if builder.remaining_flight_space < _STREAM_FRAME_MIN_HEADER:
            return 0
        result: int = super()._write_stream_frame(builder, space, stream, max_offset)
        if result > 0:  # as aioquic's walk counts a stream as having sent
            self._senders.append(stream)
        return result

    def _write_stream_limits(self, builder: Any, space: Any, stream: Any) -> None:
        # aioquic doubles a stream's window as data *arrives*; the core raises it
        # as data is *read* (AioquicEngine.consumed), so only the frame is left.
        if stream.max_stream_data_local_sent != stream.max_stream_data_local:
            buf = builder.start_frame(
                QuicFrameType.MAX_STREAM_DATA,
                capacity=_MAX_STREAM_DATA_FRAME_CAPACITY,
                handler=self._on_max_stream_data_delivery,
                handler_args=(stream,),
            )
            buf.push_uint_var(stream.stream_id)
            buf.push_uint_var(stream.max_stream_data_local)
            stream.max_stream_data_local_sent = stream.max_stream_data_local
        self._limits_owed.pop(stream.stream_id, None)

    def _on_max_stream_data_delivery(self, delivery: QuicDeliveryState, stream: QuicStream) -> None:
        super()._on_max_stream_data_delivery(delivery, stream)
        if stream.max_stream_data_local_sent != stream.max_stream_data_local:
            self.owe_limits(stream)  # lost: aioquic sends it again

    def owe_limits(self, stream: Any) -> None:
        """``stream``'s window moved: its MAX_STREAM_DATA goes in the next packet."""
        sid = stream.stream_id
        known = self._streams.get(sid)
        if known is not None and known is stream:  # not one the walk has dropped
            self._limits_owed[sid] = known

    def _replenish_connection_ids(self) -> None:
        super()._replenish_connection_ids()
        self._derive_reset_tokens()

    def send_path_probe(
        self, size: int, now: float, on_delivery: Callable[[Any, int], None]
    ) -> list[tuple[bytes, Any]]:
        """One padded PING packet of exactly ``size`` bytes, to learn if the path carries it.

        Sent whatever the congestion window, and not counted in flight: a lost
        probe means "too big", not congestion (RFC 8899 section 3).
        """
        crypto = self._cryptos[tls.Epoch.ONE_RTT]
        path = self._network_paths[0]
        if (
            self._state in END_STATES
            or not self._handshake_complete
            or not crypto.send.is_valid()
            or not path.is_validated  # the anti-amplification limit leaves no room
        ):
            return []
        assert self._version is not None  # negotiated: the handshake is complete
        builder = QuicPacketBuilder(
            host_cid=self.host_cid,
            is_client=self._is_client,
            max_datagram_size=size,
            packet_number=self._packet_number,
            peer_cid=self._peer_cid.cid,
            peer_token=self._peer_token,
            spin_bit=self._spin_bit,
            version=self._version,
        )
        builder.start_packet(QuicPacketType.ONE_RTT, crypto)
        builder.start_frame(
            QuicFrameType.PING,
            capacity=PING_FRAME_CAPACITY,
            handler=on_delivery,
            handler_args=(size,),
        )
        builder._datagram_needs_padding = True  # PADDING fills the packet to `size`
        datagrams, packets = builder.flush()
        self._packet_number = builder.packet_number
        space, loss = self._spaces[tls.Epoch.ONE_RTT], self._loss
        for packet in packets:
            packet.sent_time = now
            packet.in_flight = False
            loss.on_packet_sent(packet=packet, space=space)
        # An ack-eliciting packet re-arms the probe timeout, in flight or not;
        # otherwise the stale timer fires at once and declares the probe lost.
        loss._time_of_last_sent_ack_eliciting_packet = now
        path.bytes_sent += sum(len(data) for data in datagrams)
        return [(data, path.addr) for data in datagrams]

    def use_datagram_size(self, size: int) -> int:
        """Build packets of up to ``size`` bytes from now on; how many queued
        datagrams no longer fit and were dropped."""
        self._max_datagram_size = size
        loss = self._loss
        for part in (loss._cc, loss._pacer):
            if hasattr(part, "_max_datagram_size"):  # congestion controllers that scale by it
                part._max_datagram_size = size
        # An unreliable datagram queued for the larger size could never leave now.
        room, pending = self._datagram_room(), self._datagrams_pending
        self._datagrams_pending = type(pending)(data for data in pending if len(data) <= room)
        return len(pending) - len(self._datagrams_pending)

    def _datagram_room(self) -> int:
        """Largest DATAGRAM payload one packet of the current size carries."""
        return (
            self._max_datagram_size
            - _SHORT_HEADER_OVERHEAD
            - len(self._peer_cid.cid)
            - _DATAGRAM_FRAME_OVERHEAD
        )

    def _derive_reset_tokens(self) -> None:
        if self._reset_token is not None:
            for connection_id in self._host_cids:
                # The first id's token travels in a server's transport parameters;
                # a client must not send one (RFC 9000 section 18.2).
                first = connection_id.sequence_number == 0
                if (first and not self._is_client) or not connection_id.was_sent:
                    connection_id.stateless_reset_token = self._reset_token(connection_id.cid)


class _Trace(BoundedTrace, QuicLoggerTrace):
    """aioquic's qlog trace with a bounded event log and the core's clock."""


class AioquicEngine(AioquicStyleEngine):
    """One aioquic ``QuicConnection`` behind the seam contract of ``_engine.py``."""

    # Slotted: one per connection, and its instance dict would be 1.6 KiB.
    __slots__ = (
        "_acked_packets",
        "_client_tickets",
        "_consumed",
        "_crypto_trimmed",
        "_data_credit",
        "_data_window",
        "_early_accepted",
        "_early_pending",
        "_fresh",
        "_governors",
        "_handed",
        "_key_phase",
        "_key_requested",
        "_key_start",
        "_key_updates",
        "_large_losses",
        "_now",
        "_one_rtt_keys",
        "_packets_lost",
        "_packets_retransmitted",
        "_probes_acked",
        "_qc",
        "_qlog",
        "_quic",
        "_rtt_min",
        "_rtt_min_older",
        "_rtt_min_recent",
        "_rtt_window_start",
        "_server_tickets",
        "_stream_window",
        "_stream_window_limit",
    )

    _quic: _QuicConnection

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
        self._now = now
        self._qlog = None
        shared = None if is_client else _server_configuration(config)
        qc = self._qc = shared or _quic_configuration(
            config, is_client=is_client, server_name=server_name
        )
        if config.qlog is not None:
            qc.quic_logger = self._qlog = QlogRecorder(self._new_trace(config.qlog_max_events))
        self._client_tickets: ClientTickets | None = None
        self._server_tickets: ServerTickets | None = None
        ticket_calls: dict[str, Any] = {}
        if config.session_tickets and is_client:
            # No 0-RTT with auth: the auth request would travel in replayable 0-RTT.
            early = config.early_data and config.auth_request is None
            self._client_tickets = ClientTickets(config.ticket_store, early_data=early)
            ticket_calls["session_ticket_handler"] = self._client_tickets.received
        elif config.session_tickets:
            # No 0-RTT with auth: a replayed first flight would pass the auth handshake.
            early = config.early_data and config.auth is None
            self._server_tickets = ServerTickets(config.ticket_sealer, early_data=early)
            ticket_calls["session_ticket_handler"] = self._server_tickets.issued
            ticket_calls["session_ticket_fetcher"] = self._server_tickets.fetch
        quic = self._quic = _QuicConnection(
            reset_token=reset_token,
            server_tickets=self._server_tickets,
            configuration=qc,
            original_destination_connection_id=original_destination_cid,
            retry_source_connection_id=retry_source_cid,
            **ticket_calls,
        )
        quic._loss._pacer = _Pacer(max_datagram_size=quic._max_datagram_size)
        # 0-RTT is taken or not with the ClientHello: checked until that is handled.
        self._early_pending = self._server_tickets is not None
        self._early_accepted: list[EarlyDataAccepted] = []
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
                governor = CreditGovernor(
                    getattr(quic, name),
                    bucket=TokenBucket(rate, max(1, rate), now),
                    quantum=1,
                    follow_engine=True,
                )
                setattr(quic, name, governor)
                self._governors.append(governor)
        # Connection credit follows reads (see consumed), paid at once, or at
        # peer_bytes_per_second in about 20 payments a second.
        byte_rate = limits.peer_bytes_per_second
        self._data_credit = CreditGovernor(
            quic._local_max_data,
            bucket=None if byte_rate is None else TokenBucket(byte_rate, max(1, byte_rate), now),
            quantum=1 if byte_rate is None else int(byte_rate / 20),
            follow_engine=False,
        )
        setattr(quic, "_local_max_data", self._data_credit)  # noqa: B010  # duck-typed Limit
        self._governors.append(self._data_credit)
        self._data_window = _Window(config.max_data, config.max_connection_window)
        self._stream_window = config.max_stream_data
        self._stream_window_limit = config.max_stream_window
        self._consumed = 0
        # Streams given data the engine may not have sent yet (for the send budget).
        self._handed: set[int] = set()
        self._fresh = False  # stream data handed since the last datagrams_to_send
        self._now = now
        self._closed_by: ClosedBy | None = None
        self._probes_acked: list[int] = []
        self._crypto_trimmed = False
        self._acked_packets = self._large_losses = 0
        self._packets_lost = self._packets_retransmitted = 0  # for stats()
        # The smallest RTT sample of the last 10-20 s (not aioquic's floored one): this
        # window's, the one before, and the smaller of the two.
        self._rtt_min = self._rtt_min_recent = self._rtt_min_older = math.inf
        self._rtt_window_start = -math.inf
        self._count_deliveries()
        # Key updates (see key_state): the phase last seen, updates counted, the number
        # of the first packet under the current keys (None: a requested update waits
        # for the handshake to be confirmed), and whether ours is still to happen.
        self._key_phase = self._key_updates = 0
        # aioquic's 1-RTT key pair, once the handshake is confirmed (it stays the same
        # object from then on); looked up by its enum key on every datagram otherwise.
        self._one_rtt_keys: CryptoPair | None = None
        self._key_start: int | None = 0
        self._key_requested = False

    # -- inputs ---------------------------------------------------------------

    def _new_trace(self, max_events: int) -> Callable[[bool, bytes], _Trace]:
        def new_trace(is_client: bool, odcid: bytes) -> _Trace:
            trace = _Trace(is_client=is_client, odcid=odcid)
            trace.bound(max_events, lambda: self._now)
            return trace

        return new_trace

    def connect(self, addr: Address, now: float) -> None:
        self._now = now
        if self._client_tickets is not None and self._qc.server_name:
            key = f"{self._qc.server_name}:{addr[1]}"
            self._qc.session_ticket = self._client_tickets.take(key)
        self._quic.connect(addr, now=now)

    def early_data_sendable(self) -> bool:
        quic = self._quic
        return not quic._handshake_complete and quic._cryptos[tls.Epoch.ZERO_RTT].send.is_valid()

    @property
    def now(self) -> float:
        """The latest time any input carried."""
        return self._now

    def _grant(self, now: float) -> None:
        self._now = now
        for governor in self._governors:
            governor.grant(now)

    def receive_datagram(self, data: bytes, addr: Address, now: float) -> None:
        self._grant(now)
        quic = self._quic
        quic.receive_datagram(data, addr, now=now)
        if self._early_pending:
            self._check_early_data()
        self._note_engine_close()
        self._watch_keys()
        if not self._crypto_trimmed and quic._handshake_confirmed:
            self._free_handshake_leftovers()

    def _check_early_data(self) -> None:
        """Once the ClientHello is handled, report 0-RTT if it was taken (only on a
        ticket that allows it: see ``ServerTickets.fetch``); then never look again."""
        context = getattr(self._quic, "tls", None)  # made by the first Initial aioquic takes
        if context is None or context.state is tls.State.SERVER_EXPECT_CLIENT_HELLO:
            return
        self._early_pending = False
        if context.early_data_accepted:
            self._early_accepted.append(EarlyDataAccepted(context.alpn_negotiated))

    def _free_handshake_leftovers(self) -> None:
        """Free what aioquic keeps of the handshake once it is confirmed.

        - The 16 KiB TLS output buffers, one per epoch. Nothing is written to
          the Initial and Handshake ones once their keys are gone; the 1-RTT
          one only carries the server's NewSessionTicket, written as the
          handshake completes, and is lent again for any later CRYPTO frame
          (``_QuicConnection._handle_crypto_frame``).
        - The torn-down key pairs of discarded epochs (and of both Initial
          versions), each with its key-log callbacks: one shared empty pair
          takes their place, so their packets still find no keys.

        Together they were over a third of an idle connection.
        """
        quic = self._quic
        buffers, spaces, cryptos = quic._crypto_buffers, quic._spaces, quic._cryptos
        for epoch in (tls.Epoch.INITIAL, tls.Epoch.HANDSHAKE):
            if spaces[epoch].discarded:
                buffers[epoch] = _NO_BUFFER
                cryptos[epoch] = _NO_KEYS
        if spaces[tls.Epoch.INITIAL].discarded:
            quic._cryptos_initial = dict.fromkeys(quic._cryptos_initial, _NO_KEYS)
        early = cryptos[tls.Epoch.ZERO_RTT]
        if not early.recv.is_valid() and not early.send.is_valid():  # never set, or torn down
            cryptos[tls.Epoch.ZERO_RTT] = _NO_KEYS
        one_rtt = buffers[tls.Epoch.ONE_RTT]
        if one_rtt.capacity and not one_rtt.tell():  # empty: its data went to the stream
            buffers[tls.Epoch.ONE_RTT] = _NO_BUFFER
        self._crypto_trimmed = all(buffer is _NO_BUFFER for buffer in buffers.values()) and all(
            cryptos[epoch] is _NO_KEYS
            for epoch in (tls.Epoch.INITIAL, tls.Epoch.HANDSHAKE, tls.Epoch.ZERO_RTT)
        )

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
        quic = self._quic
        if self._fresh or quic._datagrams_pending:
            # aioquic writes an ACK only once its 1 ms ACK delay is up, even into a
            # packet leaving anyway, and then sends it on its own: a reply within the
            # millisecond cost the peer a second datagram. Owed ACKs ride along with
            # new data instead (RFC 9000 section 13.2.1).
            self._fresh = False
            space = quic._spaces[tls.Epoch.ONE_RTT]
            if space.ack_at is not None and space.ack_at > now:
                space.ack_at = now
        out: list[tuple[bytes, Address]] = quic.datagrams_to_send(now=now)
        if len(self._handed) > _HANDED_PRUNE:
            # Only the send budget prunes it, and nothing asks for one once nothing
            # waits: 2000 streams that each sent once would keep their ids for good.
            self._unsent()
        self._note_engine_close()
        self._watch_keys()
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
        return bool(self._quic._events or self._probes_acked or self._early_accepted)

    def send_path_probe(self, size: int, now: float) -> list[tuple[bytes, Address]]:
        self._grant(now)
        out: list[tuple[bytes, Address]] = self._quic.send_path_probe(
            size, now, self._probe_delivered
        )
        self._watch_keys()
        return out

    def _probe_delivered(self, delivery: Any, size: int) -> None:
        if delivery == QuicDeliveryState.ACKED:
            self._probes_acked.append(size)  # a lost probe is the core's timeout to judge

    def use_datagram_size(self, size: int) -> int:
        self._large_losses = 0  # losses at the old size say nothing about the new one
        return self._quic.use_datagram_size(size)

    def probe_timeouts(self) -> int:
        count: int = self._quic._loss._pto_count
        return count

    def probe_timeout(self) -> float:
        pto: float = self._quic._loss.get_probe_timeout()
        return pto

    def packets_acked(self) -> int:
        return self._acked_packets

    def large_losses(self) -> int:
        return self._large_losses

    def _count_deliveries(self) -> None:
        """Count acknowledged packets, and lost packets above the 1200-byte floor since
        one was last acknowledged: path MTU discovery's evidence (wrapping the
        congestion controller, which sees every in-flight packet's fate). Also
        count, for stats(), the packets declared lost, and those whose frames are
        queued again: lost ones, and ones a probe timeout gives up waiting for."""
        quic = self._quic
        cc = quic._loss._cc
        spaces = quic._spaces.values()
        acked, lost, expired = cc.on_packet_acked, cc.on_packets_lost, cc.on_packets_expired

        def on_packet_acked(*, now: float, packet: Any) -> None:
            self._acked_packets += 1
            if packet.sent_bytes > _SMALLEST_INITIAL:
                self._large_losses = 0
            acked(now=now, packet=packet)

        def on_packets_lost(*, now: float, packets: Any) -> None:
            packets = list(packets)
            self._large_losses += sum(p.sent_bytes > _SMALLEST_INITIAL for p in packets)
            self._packets_lost += len(packets)
            self._packets_retransmitted += sum(p.is_ack_eliciting for p in packets)
            lost(now=now, packets=packets)

        def on_packets_expired(*, packets: Any) -> None:
            packets = list(packets)
            self._large_losses += sum(p.sent_bytes > _SMALLEST_INITIAL for p in packets)
            # A probe timeout removed them from their space to send their frames
            # again; a discarded space (keys dropped, or the close) still holds them.
            # Packet numbers are unique across spaces here (one counter).
            self._packets_retransmitted += sum(
                not any(p.packet_number in space.sent_packets for space in spaces) for p in packets
            )
            expired(packets=packets)

        def on_rtt_measurement(*, now: float, rtt: float) -> None:
            # aioquic floors its own minimum at 1 ms, and keeps it for the connection's
            # life; loopback round trips take a fifth of that, and the in-flight limit
            # (``_inflight.py``) scales with it, so it must also follow a new route.
            # The minimum here is over the last 10-20 s: two windows, as BBR's filter.
            if now - self._rtt_window_start >= _RTT_MIN_WINDOW:
                self._rtt_window_start = now
                self._rtt_min_older, self._rtt_min_recent = self._rtt_min_recent, rtt
            elif rtt < self._rtt_min_recent:
                self._rtt_min_recent = rtt
            self._rtt_min = min(self._rtt_min_older, self._rtt_min_recent)
            measured(now=now, rtt=rtt)

        measured = cc.on_rtt_measurement
        setattr(cc, "on_packet_acked", on_packet_acked)  # noqa: B010  # instance override
        setattr(cc, "on_packets_lost", on_packets_lost)  # noqa: B010
        setattr(cc, "on_packets_expired", on_packets_expired)  # noqa: B010
        setattr(cc, "on_rtt_measurement", on_rtt_measurement)  # noqa: B010

    def events(self) -> Iterator[EngineEvent]:
        """Drain the engine's events, translated."""
        quic = self._quic
        if self._early_accepted:  # before the 0-RTT stream data it lets through
            yield self._early_accepted.pop()
        while self._probes_acked:
            yield PathProbeAcked(self._probes_acked.pop(0))
        while (ev := quic.next_event()) is not None:
            if isinstance(ev, qe.StreamReset):
                self._release_reset_stream(ev.stream_id)
            record = translate(ev, qe, self._terminated)
            if record is not None:
                yield record

    # -- commands -------------------------------------------------------------

    def send_stream(self, stream_id: int, data: bytes, end: bool) -> None:
        quic = self._quic
        quic.send_stream_data(stream_id, data, end_stream=end)
        if data or end:  # not the empty send that only opens a stream
            quic._handed_order.append(stream_id)
        self._fresh = True
        if data:
            self._handed.add(stream_id)

    def reset_stream(self, stream_id: int, error_code: int) -> None:
        self._quic.reset_stream(stream_id, error_code)
        self._quic.ended(stream_id)

    def stop_stream(self, stream_id: int, error_code: int) -> None:
        # The engine forgets a stream once both directions are done; a stream it
        # no longer holds has nothing left to stop.
        if stream_id in self._quic._streams:
            self._quic.stop_stream(stream_id, error_code)
            self._quic.ended(stream_id)

    def update_keys(self) -> None:
        quic = self._quic
        self._key_requested = True
        # aioquic defers an update asked for before the handshake is confirmed; the
        # first packet under the new keys is then only known once it is.
        self._key_start = quic._packet_number if quic._handshake_confirmed else None
        quic.request_key_update()
        # The keys change with the next packet: an idle connection needs one sent (and
        # acknowledged, or no further update could ever start).
        quic.send_ping(0)

    def _watch_keys(self) -> None:
        """Count key phase flips: packets are only protected in receive and send."""
        quic = self._quic
        crypto = self._one_rtt_keys
        if crypto is None:
            crypto = quic._cryptos.get(tls.Epoch.ONE_RTT)
            if crypto is None:
                return
            if quic._handshake_confirmed:  # no re-initialization (Retry, versions) after
                self._one_rtt_keys = crypto
        phase = crypto.send.key_phase
        if phase != self._key_phase:
            self._key_phase = phase
            self._key_updates += 1
            if not self._key_requested or self._key_start is None:
                # The peer's update (aioquic follows it at once): ours go from here, and a
                # PING gets one acknowledged, so this side may update later even when idle.
                self._key_start = quic._packet_number
                quic.send_ping(0)
            self._key_requested = False
        elif self._key_requested and self._key_start is None and quic._handshake_confirmed:
            self._key_start = quic._packet_number  # the deferred update goes out next
            quic.send_ping(0)

    def key_state(self) -> KeyState:
        """Key phase and updates; ``settled`` once a packet under the current keys
        was acknowledged (RFC 9001 section 6.5: only then may another update start)."""
        quic = self._quic
        start = self._key_start
        space = quic._spaces.get(tls.Epoch.ONE_RTT)
        acked = start is not None and space is not None and space.largest_acked_packet >= start
        return KeyState(
            phase=self._key_phase,
            updates=self._key_updates,
            packets=quic._packet_number - (start or 0),
            settled=not self._key_requested and (self._key_updates == 0 or acked),
        )

    # -- queries --------------------------------------------------------------

    def max_datagram_payload(self) -> int | None:
        """Largest datagram the peer accepts and one packet can carry; None if unsupported."""
        quic = self._quic
        remote = quic._remote_max_datagram_frame_size
        if remote is None or quic.configuration.max_datagram_frame_size is None:
            return None
        return max(0, min(remote - _DATAGRAM_FRAME_OVERHEAD, quic._datagram_room()))

    def consumed(self, stream_id: int, size: int) -> bool:
        """The application read ``size`` bytes: let the peer send that much more.

        Credit goes out a quarter window at a time, not a frame per read. A
        window whose updates come less than four round trips apart is what
        limits the transfer, so it doubles, up to its configured ceiling.
        Returns whether either window moved.
        """
        self._consumed += size
        raised = self._raise_data_credit()
        stream = self._quic._streams.get(stream_id)
        if stream is None:
            return raised
        # Kept on the engine's stream, so it goes when the engine drops the stream.
        consumed = getattr(stream, "sq_consumed", 0) + size
        setattr(stream, "sq_consumed", consumed)  # noqa: B010
        window: _Window | None = getattr(stream, "sq_window", None)
        size = self._stream_window if window is None else window.size
        if consumed + size - stream.max_stream_data_local < size // 4:
            return raised
        if window is None:
            # Made on the first credit update: most streams never get one.
            window = _Window(self._stream_window, self._stream_window_limit)
            setattr(stream, "sq_window", window)  # noqa: B010
        window.updated(self._now, self._rtt())
        stream.max_stream_data_local = consumed + window.size
        self._quic.owe_limits(stream)
        return True

    def _raise_data_credit(self) -> bool:
        """Owe the peer more connection credit once a quarter window was read; whether
        it did."""
        window = self._data_window
        if self._consumed + window.size - self._data_credit.promised < window.size // 4:
            return False
        window.updated(self._now, self._rtt())
        self._data_credit.raise_to(self._consumed + window.size)
        return True

    def _rtt(self) -> float:
        loss = self._quic._loss
        return float(loss._rtt_smoothed) if loss._rtt_initialized else 0.1

    def _release_reset_stream(self, stream_id: int) -> None:
        """A reset stream's bytes up to its final size will never be read: return
        their connection credit (what was read is already counted)."""
        stream = self._quic._streams.get(stream_id)
        if stream is not None:
            final = stream.receiver._final_size or 0
            released = final - getattr(stream, "sq_consumed", 0)
            if released > 0:
                self._consumed += released
                self._raise_data_credit()

    def _unsent(self) -> int:
        """Bytes handed to the engine that it has not sent yet (datagrams included)."""
        streams = self._quic._streams
        total = sum(len(data) for data in self._quic._datagrams_pending)
        handed = self._handed
        sending: list[int] = []
        for stream_id in handed:
            stream = streams.get(stream_id)
            # A reset sender (ours, or in answer to STOP_SENDING) marks its buffer
            # empty: what it still held will never be sent, so it takes no budget.
            if stream is None or stream.sender.buffer_is_empty:
                unsent = 0
            else:
                unsent = stream.sender._buffer_stop - stream.sender.highest_offset
            if unsent > 0:
                total += unsent
                sending.append(stream_id)
        if len(sending) < len(handed):
            # A fresh set: one never shrinks its table, so a burst would keep it large.
            self._handed = set(sending)
        return total

    def send_budget(self, inflight_limit: int | None = None) -> int:
        """Stream bytes the engine can put on the wire now: congestion window (and
        ``inflight_limit``) and connection credit, less what it already holds."""
        quic = self._quic
        loss = quic._loss
        unsent = self._unsent()
        window = loss.congestion_window
        if inflight_limit is not None and inflight_limit < window:
            window = inflight_limit
        window -= loss.bytes_in_flight
        credit = quic._remote_max_data - quic._remote_max_data_used
        return max(0, min(window, credit) - unsent)

    def datagram_budget(self, inflight_limit: int | None = None) -> int:
        """Datagram bytes the engine can put on the wire now: like :meth:`send_budget`
        but without flow-control credit, which DATAGRAM frames do not use (RFC 9221)."""
        loss = self._quic._loss
        window = loss.congestion_window
        if inflight_limit is not None and inflight_limit < window:
            window = inflight_limit
        return max(0, window - loss.bytes_in_flight - self._unsent())

    def stream_credit(self, stream_id: int) -> int:
        """Bytes the peer lets this stream send beyond what the engine already has."""
        stream = self._quic._streams.get(stream_id)
        if stream is None or stream.is_blocked:
            return 0
        return max(0, stream.max_stream_data_remote - stream.sender._buffer_stop)

    def peer_stream_limits(self) -> tuple[int, int]:
        """How many bidirectional and unidirectional streams the peer allows in all."""
        return self._quic._remote_max_streams_bidi, self._quic._remote_max_streams_uni

    @property
    def host_cid(self) -> bytes:
        """The connection id the peer reaches this side by at first."""
        cid: bytes = self._quic.host_cid
        return cid

    def is_stateless_reset(self, data: bytes) -> bool:
        """Whether ``data`` is a stateless reset from the peer (RFC 9000 section 10.3)."""
        if len(data) < 21 or data[0] & 0x80:
            return False
        # Only the token of the connection id in use: RFC 9000 section 10.3.1 forbids
        # checking those of ids not yet used or already retired.
        token = self._quic._peer_cid.stateless_reset_token
        return bool(token) and hmac.compare_digest(token, data[-16:])  # constant time

    def stream_count(self) -> int:
        """Streams the engine still holds state for (acks may still be due)."""
        return len(self._quic._streams)

    def peer_address(self) -> Address | None:
        """The address of the path in use (the engine moves it on validated migration)."""
        paths = self._quic._network_paths
        if not paths:
            return None
        addr = paths[0].addr
        return (str(addr[0]), int(addr[1]))

    def recovery_stats(self) -> RecoveryStats:
        """RTT variance, packets sent (the packet number counts every one), lost and
        retransmitted (counted in ``_count_deliveries``)."""
        quic = self._quic
        loss = quic._loss
        return RecoveryStats(
            rtt_variance=float(loss._rtt_variance) if loss._rtt_initialized else None,
            packets_sent=int(quic._packet_number),
            packets_lost=self._packets_lost,
            packets_retransmitted=self._packets_retransmitted,
        )

    def stream_unsent(self, stream_id: int) -> int:
        stream = self._quic._streams.get(stream_id)
        if stream is None or stream.sender.buffer_is_empty:
            return 0  # gone, or reset: nothing more of it will be sent
        return max(0, stream.sender._buffer_stop - stream.sender.highest_offset)

    def validated_peer_address(self) -> Address | None:
        """The address of the first validated path: the path in use once validated,
        else the one the engine falls back to if validation fails."""
        paths = self._quic._network_paths
        path = next((p for p in paths if p.is_validated), paths[0] if paths else None)
        if path is None:
            return None
        return (str(path.addr[0]), int(path.addr[1]))

    def migration_refusal(self) -> str | None:
        quic = self._quic
        if not quic._handshake_confirmed:
            return "a client can migrate once the handshake is confirmed (RFC 9000 section 9)"
        if not quic._peer_cid_available:
            return "the server has issued no spare connection id to move to"
        return None

    def path_stats(self) -> tuple[float | None, float | None, int, int]:
        """(smoothed RTT, minimum RTT, congestion window, bytes in flight)."""
        loss = self._quic._loss
        if not loss._rtt_initialized:
            return None, None, loss.congestion_window, loss.bytes_in_flight
        return loss._rtt_smoothed, self._rtt_min, loss.congestion_window, loss.bytes_in_flight
