"""The engine seam for aioquic: the only module that imports or touches aioquic.

Every private attribute used here is listed in ``PRIVATE_ATTRIBUTES`` and
checked by ``tests/test_engine_seam.py``, so an aioquic upgrade that moves one
fails loudly instead of misbehaving.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Iterator
from typing import Any

from aioquic.buffer import (  # type: ignore[attr-defined]  # re-exported from C
    Buffer,
    BufferReadError,
)
from aioquic.quic import events as qe
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection, QuicConnectionState
from aioquic.quic.packet import QuicErrorCode, QuicPacketType, pull_quic_header
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from cryptography.x509 import load_pem_x509_certificates

from ._config import Config
from ._engine import (
    Address,
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

__all__ = ["PRIVATE_ATTRIBUTES", "AioquicEngine", "initial_destination_cid"]

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
    ("Limit", "value"),
    ("Limit", "sent"),
)

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


class AioquicEngine:
    """One aioquic ``QuicConnection`` behind the seam contract of ``_engine.py``."""

    def __init__(
        self,
        config: Config,
        *,
        is_client: bool,
        server_name: str | None = None,
        original_destination_cid: bytes | None = None,
    ) -> None:
        qc = _quic_configuration(config, is_client=is_client, server_name=server_name)
        self._quic = QuicConnection(
            configuration=qc, original_destination_connection_id=original_destination_cid
        )
        # aioquic lets the peer open only 128 streams of each kind; the limits
        # are read when the transport parameters are written, so set them now.
        for limit, value in (
            (self._quic._local_max_streams_bidi, config.max_streams_bidi),
            (self._quic._local_max_streams_uni, config.max_streams_uni),
        ):
            limit.value = limit.sent = value
        self._closed_by: ClosedBy | None = None

    # -- inputs ---------------------------------------------------------------

    def connect(self, addr: Address, now: float) -> None:
        self._quic.connect(addr, now=now)

    def receive_datagram(self, data: bytes, addr: Address, now: float) -> None:
        self._quic.receive_datagram(data, addr, now=now)
        self._note_engine_close()

    def handle_timer(self, now: float) -> None:
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
        out: list[tuple[bytes, Address]] = self._quic.datagrams_to_send(now=now)
        self._note_engine_close()
        return out

    def timer(self) -> float | None:
        timer: float | None = self._quic.get_timer()
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

    def stream_count(self) -> int:
        """Streams the engine still holds state for (acks may still be due)."""
        return len(self._quic._streams)

    def path_stats(self) -> tuple[float | None, float | None, int, int]:
        """(smoothed RTT, minimum RTT, congestion window, bytes in flight)."""
        loss = self._quic._loss
        if not loss._rtt_initialized:
            return None, None, loss.congestion_window, loss.bytes_in_flight
        return loss._rtt_smoothed, loss._rtt_min, loss.congestion_window, loss.bytes_in_flight
