"""The experimental engine seam for qh3 2.1: the only module that imports or touches qh3.

qh3 2.x keeps the connection in Rust (``qh3._hazmat.QuicConnectionCore``)
behind a thin Python ``QuicConnection``. Most of what ``_aioquic.py`` reaches
into does not exist there, so this adapter does less (docs/engines.md lists
what). Every private attribute used here is in ``PRIVATE_ATTRIBUTES`` and
checked by ``tests/test_qh3.py``.

Receive credit: qh3 grants flow-control credit as its core hands data to the
Python layer, whether or not anyone reads it. The adapter stops taking
events from the core while the application has more than ``max_data`` bytes
unread, which stalls the peer at the core's windows: memory stays bounded,
but per connection, not per stream as with aioquic.
"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import Callable, Iterator
from typing import Any

from qh3._hazmat import Buffer, QuicConnectionCore
from qh3.quic import events as qe
from qh3.quic.configuration import QuicConfiguration
from qh3.quic.connection import QuicConnection
from qh3.quic.logger import QuicLoggerTrace
from qh3.quic.packet import pull_quic_transport_parameters, push_quic_transport_parameters
from qh3.tls import (
    ExtensionType,
    SignatureAlgorithm,
    load_pem_private_key,
    load_pem_x509_certificates,
)

from ._codes import ClosedBy
from ._config import Config
from ._engine import (
    Address,
    AioquicStyleEngine,
    BoundedTrace,
    EngineEvent,
    KeyState,
    QlogRecorder,
    RecoveryStats,
    translate,
)
from ._errors import ConfigError, LocalProtocolError

__all__ = ["PRIVATE_ATTRIBUTES", "Qh3Engine"]

#: (object, attribute) pairs of qh3 internals this module relies on.
PRIVATE_ATTRIBUTES = (
    ("QuicConnection", "_core"),  # the Rust connection: windows, limits, paths
    ("QuicConnection", "_create_core"),  # overridden: configurable stream limits
    ("QuicConnection", "_create_tls"),  # overridden: advertise those limits
    ("QuicTlsBridge", "tls"),
    ("Context", "handshake_extensions"),
    ("QuicConnection", "_drain_core"),  # overridden: held while the application lags
    ("QuicConnection", "_events"),  # skip draining when empty
    ("QuicConnection", "_close_event"),  # who closed
    ("QuicConnection", "_state"),
    ("QuicConnection", "_handshake_complete"),
    ("QuicConnection", "_remote_max_datagram_frame_size"),  # peer's datagram limit
    ("QuicConnection", "_stream_can_send"),  # stream credit, as yes or no
    ("QuicConnection", "_configuration"),
    ("QuicConnection", "_is_client"),
    ("QuicConnection", "_version"),
    ("QuicConnection", "_original_destination_connection_id"),
    ("QuicConnection", "_retry_source_connection_id"),
    ("QuicConnection", "_remembered_transport_parameters"),
    ("QuicConnection", "_applied_transport_parameters"),
    ("QuicConnection", "_pre_handshake_state_replayed"),
    ("QuicConnectionCore", "poll_transmit"),
    ("QuicConnectionCore", "get_timer"),
    ("QuicConnectionCore", "state"),
    ("QuicConnectionCore", "local_error"),
    ("QuicConnectionCore", "stream_limits"),
    ("QuicConnectionCore", "congestion_window"),
    ("QuicConnectionCore", "bytes_in_flight"),
    ("QuicConnectionCore", "smoothed_rtt"),
    ("QuicConnectionCore", "latest_rtt"),
    ("QuicConnectionCore", "active_path"),
    ("QuicConnectionCore", "get_send_buffer_size"),
    ("QuicConnectionCore", "active_local_streams"),
    ("QuicConnectionCore", "pto_count"),
    ("QuicConnectionCore", "loss_total"),
    ("QuicConnection", "_quic_logger"),
    ("QuicConnection", "_log_datagram"),  # qlog of what the overridden send loop sends
    ("QuicConnection", "_log_packets"),
    ("QuicLoggerTrace", "_events"),
    ("QuicConnection", "_handshake_confirmed"),  # key updates wait for it
    ("QuicConnectionCore", "send_key_phase"),
    ("QuicConnectionCore", "receive_key_phase"),
)

# DATAGRAM frame overhead as in _aioquic.py; 1-RTT packet overhead besides the
# destination connection id; qh3 does not say how long the peer's id is, so
# assume the longest QUIC allows.
_DATAGRAM_FRAME_OVERHEAD = 4
_SHORT_HEADER_OVERHEAD = 1 + 4 + 16
_LONGEST_CID = 20
# qh3 2.1.0's server fails to build its second datagram for a client whose
# ClientHello fits in one Initial; the core is fine once the client's next
# packet arrives, so the adapter stops the batch there instead of failing.
_SINGLE_INITIAL_BUG = "packet builder capacity exhausted"
_NO_CREDIT_LIMIT = 2**62


def _quic_configuration(config: Config, *, is_client: bool, server_name: str | None) -> Any:
    qc = QuicConfiguration(
        is_client=is_client,
        alpn_protocols=list(config.alpn),
        idle_timeout=config.idle_timeout,
        max_data=config.max_data,
        max_stream_data=config.max_stream_data,
        # qh3 runs its own path MTU discovery (clients only), up to this size.
        max_datagram_size=config.max_udp_payload_size,
        probe_datagram_size=config.pmtu_discovery,
        max_datagram_frame_size=(
            config.max_datagram_size + _DATAGRAM_FRAME_OVERHEAD if config.datagrams else None
        ),
        server_name=server_name,
    )
    if is_client:
        # qh3 leaves EdDSA out by default; dev certificates are Ed25519.
        qc.signature_algorithms = [
            SignatureAlgorithm.ED25519,
            SignatureAlgorithm.ECDSA_SECP256R1_SHA256,
            SignatureAlgorithm.RSA_PSS_RSAE_SHA256,
            SignatureAlgorithm.RSA_PKCS1_SHA256,
            SignatureAlgorithm.ECDSA_SECP384R1_SHA384,
            SignatureAlgorithm.RSA_PSS_RSAE_SHA384,
            SignatureAlgorithm.RSA_PKCS1_SHA384,
            SignatureAlgorithm.RSA_PSS_RSAE_SHA512,
            SignatureAlgorithm.RSA_PKCS1_SHA512,
        ]
        if not config.verify_peer:
            qc.verify_mode = ssl.CERT_NONE
        elif (anchors := config.trust_anchors()) is not None:
            qc.cadata = anchors
    else:
        if config.certificate is None or config.private_key is None:
            raise ConfigError("a server needs certificate and private_key, or dev_mode=True")
        try:
            chain = load_pem_x509_certificates(config.certificate)
            qc.private_key = load_pem_private_key(config.private_key)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"cannot load the certificate or key: {exc}") from exc
        qc.certificate, qc.certificate_chain = chain[0], chain[1:]
    return qc


class _QuicConnection(QuicConnection):
    """qh3's connection with the core's stream limits set, and events held on request."""

    sq_streams: tuple[int, int] = (100, 100)
    sq_hold: Callable[[], bool] | None = None

    def _drain_core(self) -> None:
        hold = self.sq_hold
        if hold is not None and self._handshake_complete and hold():
            return
        super()._drain_core()

    def _create_tls(self, remote_source_cid: bytes | None) -> Any:
        # qh3 2.1.0 also hard-codes the limits in the transport parameters it
        # writes: rewrite them in the extension its TLS context will send.
        bridge = super()._create_tls(remote_source_cid)
        bidi, uni = self.sq_streams
        extensions = []
        for kind, data in bridge.tls.handshake_extensions:
            if kind == ExtensionType.QUIC_TRANSPORT_PARAMETERS:
                parameters = pull_quic_transport_parameters(Buffer(data=data))
                parameters.initial_max_streams_bidi = bidi
                parameters.initial_max_streams_uni = uni
                buf = Buffer(capacity=len(data) + 64)
                push_quic_transport_parameters(buf, parameters)
                data = buf.data
            extensions.append((kind, data))
        bridge.tls.handshake_extensions = extensions
        return bridge

    def _create_core(self, remote_addr: Any, initial_dcid: bytes, now: float) -> None:
        # qh3 2.1.0's own _create_core with the stream limits it hard-codes
        # (100 bidirectional, 103 unidirectional) taken from the Config.
        configuration = self._configuration
        remembered = self._remembered_transport_parameters()
        bidi, uni = self.sq_streams
        self._core = QuicConnectionCore(
            self._is_client,
            self._version or 1,  # set by connect() or the first Initial before this
            ("0.0.0.0", 0),
            remote_addr,
            self.host_cid,
            initial_dcid,
            self._is_client or self._retry_source_connection_id is not None,
            configuration.active_connection_id_limit or (2 if self._is_client else 8),
            configuration.max_datagram_size,
            configuration.probe_datagram_size,
            configuration.idle_timeout,
            3,
            (
                configuration.max_datagram_frame_size
                if configuration.max_datagram_frame_size is not None
                else (65536 if self._is_client else None)
            ),
            (remembered.max_datagram_frame_size if remembered is not None else None),
            configuration.max_data,
            (remembered.initial_max_data or 0) if remembered is not None else 0,
            configuration.max_stream_data,
            (remembered.initial_max_stream_data_bidi_local or 0) if remembered else 0,
            (remembered.initial_max_stream_data_bidi_remote or 0) if remembered else 0,
            (remembered.initial_max_stream_data_uni or 0) if remembered else 0,
            configuration.max_stream_data,
            bidi,
            uni,
            (remembered.initial_max_streams_bidi or 0) if remembered else 0,
            (remembered.initial_max_streams_uni or 0) if remembered else 0,
            configuration.initial_rtt,
            0.025,
            now,
        )
        self._applied_transport_parameters = None
        self._pre_handshake_state_replayed = False

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Any]]:
        core = self._core
        if core is None:
            return []
        out: list[tuple[bytes, Any]] = []
        while True:
            try:
                transmit = core.poll_transmit(now)
            except RuntimeError as exc:
                if str(exc) == _SINGLE_INITIAL_BUG and not self._handshake_complete:
                    break  # keep what was built; the client's next packet unblocks it
                raise
            if transmit is None:
                break
            if self._quic_logger is not None:  # what qh3's own send loop logs
                self._log_datagram("datagrams_sent", transmit[0])
                self._log_packets("packet_sent", transmit[0])
            out.append((transmit[0], transmit[1]))
        return out


class _Trace(BoundedTrace, QuicLoggerTrace):
    """qh3's qlog trace with a bounded event log and the core's clock."""


class Qh3Engine(AioquicStyleEngine):
    """One qh3 ``QuicConnection`` behind the seam contract of ``_engine.py`` (experimental)."""

    _quic: _QuicConnection

    def __init__(
        self,
        config: Config,
        *,
        is_client: bool,
        server_name: str | None = None,
        original_destination_cid: bytes | None = None,
        retry_source_cid: bytes | None = None,
        reset_token: Callable[[bytes], bytes] | None = None,  # qh3 draws its own tokens
        now: float = 0.0,
    ) -> None:
        self._now = now
        qc = _quic_configuration(config, is_client=is_client, server_name=server_name)
        if config.qlog is not None:
            max_events = config.qlog_max_events

            def new_trace(is_client: bool, odcid: bytes) -> _Trace:
                trace = _Trace(is_client=is_client, odcid=odcid)
                trace.bound(max_events, lambda: self._now)
                return trace

            qc.quic_logger = self._qlog = QlogRecorder(new_trace)
        quic = self._quic = _QuicConnection(
            configuration=qc,
            original_destination_connection_id=original_destination_cid,
            retry_source_connection_id=retry_source_cid,
        )
        quic.sq_streams = (config.max_streams_bidi, config.max_streams_uni)
        quic.sq_hold = self._lagging
        self._unread_limit = config.max_data
        self._unread = 0  # bytes handed to the core that the application has not read
        self._unread_by_stream: dict[int, int] = {}
        self._now = now
        self._closed_by: ClosedBy | None = None
        self._rtt_min: float | None = None
        # Streams opened beyond the peer's limit: qh3 refuses them, so they wait here.
        self._waiting: list[tuple[int, bytes, bool]] = []
        # Key updates: the phase last seen, updates counted, datagrams sent under the
        # current keys (qh3 does not count packets), and a request not yet made
        # (qh3 refuses one before the handshake is confirmed) or not yet seen.
        self._key_phase = self._key_updates = self._key_packets = 0
        self._key_deferred = self._key_requested = False

    # -- inputs ---------------------------------------------------------------

    def connect(self, addr: Address, now: float) -> None:
        self._now = now
        self._quic.connect(addr, now=now)

    @property
    def now(self) -> float:
        """The latest time any input carried."""
        return self._now

    def receive_datagram(self, data: bytes, addr: Address, now: float) -> None:
        self._now = now
        try:
            self._quic.receive_datagram(data, addr, now=now)
        except ValueError:
            # qh3 2.1 fails to set up a path to a new peer address ("path allocation
            # failed"): the datagram is dropped, as if lost, and the connection stays
            # on its path (so a migrated or rebound client is not followed).
            if addr == self.peer_address():
                raise
        self._note_engine_close()
        if self._key_deferred and self._quic._handshake_confirmed:
            with contextlib.suppress(ValueError):  # refused for now: try again next time
                self._quic.request_key_update()
                self._quic.send_ping(0)
                self._key_deferred = False
        self._watch_keys()

    def handle_timer(self, now: float) -> None:
        self._now = now
        core = self._quic._core
        if core is None:
            return
        deadline = core.get_timer()
        idle = deadline is not None and deadline[0] == "idle" and now >= deadline[1]
        self._quic.handle_timer(now=now)
        if idle and self._closed_by is None and self._quic._close_event is not None:
            self._closed_by = ClosedBy.IDLE
        self._note_engine_close()

    def _note_engine_close(self) -> None:
        """Record who closed when the engine closed on its own."""
        quic = self._quic
        if self._closed_by is None and quic._close_event is not None:
            violation = quic._core is not None and quic._core.local_error is not None
            self._closed_by = ClosedBy.VIOLATION if violation else ClosedBy.PEER

    def _lagging(self) -> bool:
        """Whether the application has so much unread that the core must wait."""
        core = self._quic._core
        return self._unread > self._unread_limit and core is not None and core.state == "connected"

    # -- outputs --------------------------------------------------------------

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        self._now = now
        if self._waiting:
            self._open_waiting()
        out: list[tuple[bytes, Address]] = self._quic.datagrams_to_send(now=now)
        self._note_engine_close()
        self._key_packets += len(out)
        self._watch_keys()
        return out

    def update_keys(self) -> None:
        if self._quic._handshake_confirmed:
            try:
                self._quic.request_key_update()
            except ValueError as exc:  # "invalid key phase": qh3 waits for an acknowledgement
                raise LocalProtocolError(
                    "the last key update is unconfirmed: wait until the peer acknowledged "
                    "a packet under the current keys"
                ) from exc
            self._quic.send_ping(0)  # the keys change with the next packet: send one
        else:
            self._key_deferred = True
        self._key_requested = True

    def _watch_keys(self) -> None:
        core = self._quic._core
        phase = None if core is None else core.send_key_phase
        if phase is not None and phase != self._key_phase:
            self._key_phase = phase
            self._key_updates += 1
            self._key_packets = 0
            self._key_requested = False

    def key_state(self) -> KeyState:
        """As aioquic's; ``settled`` once the peer sends under the current keys (qh3
        does not say which packets were acknowledged)."""
        core = self._quic._core
        answered = core is not None and core.receive_key_phase == core.send_key_phase
        return KeyState(
            phase=self._key_phase,
            updates=self._key_updates,
            packets=self._key_packets,
            settled=not self._key_requested and (self._key_updates == 0 or answered),
        )

    def timer(self) -> float | None:
        timer: float | None = self._quic.get_timer()
        return timer

    def send_path_probe(self, size: int, now: float) -> list[tuple[bytes, Address]]:
        """None: qh3 probes the path MTU itself (clients), so the core's search stays put."""
        return []

    def use_datagram_size(self, size: int) -> int:
        """Nothing: qh3 sizes its packets from its own probes."""
        return 0

    def probe_timeout(self) -> float:
        return 0.1  # unused: send_path_probe never sends

    def packets_acked(self) -> int:
        return 0

    def large_losses(self) -> int:
        return 0  # qh3 runs its own search

    def early_data_sendable(self) -> bool:
        return False  # session tickets are not wired to qh3 yet (docs/engines.md)

    def datagram_budget(self, inflight_limit: int | None = None) -> int:
        return self.send_budget(inflight_limit)  # qh3's budget has no flow credit in it

    def probe_timeouts(self) -> int:
        core = self._quic._core
        return 0 if core is None else int(core.pto_count)

    def has_events(self) -> bool:
        """Whether :meth:`events` would yield anything (cheap: checked on every call)."""
        return bool(self._quic._events)

    def events(self) -> Iterator[EngineEvent]:
        """Drain the engine's events, translated."""
        quic = self._quic
        while (ev := quic.next_event()) is not None:
            if isinstance(ev, qe.StreamDataReceived):
                if ev.data:
                    self._unread += len(ev.data)
                    by_stream = self._unread_by_stream
                    by_stream[ev.stream_id] = by_stream.get(ev.stream_id, 0) + len(ev.data)
            elif isinstance(ev, qe.StreamReset):
                # The core drops a reset stream's unread bytes without reading them.
                self._consume(ev.stream_id, self._unread_by_stream.get(ev.stream_id, 0))
            record = translate(ev, qe, self._terminated)
            if record is not None:
                yield record

    # -- commands -------------------------------------------------------------

    def _beyond_peer_limit(self, stream_id: int) -> bool:
        quic = self._quic
        local = (stream_id & 1) == (0 if quic._is_client else 1)
        if not local or quic._core is None or not quic._handshake_complete:
            return False
        limits = quic._core.stream_limits
        return stream_id // 4 >= limits[1 if stream_id & 2 else 0]

    def send_stream(self, stream_id: int, data: bytes, end: bool) -> None:
        if self._beyond_peer_limit(stream_id) or (self._waiting and self._is_waiting(stream_id)):
            self._waiting.append((stream_id, data, end))
            self._open_waiting()
            return
        self._quic.send_stream_data(stream_id, data, end_stream=end)

    def _open_waiting(self) -> None:
        """Hand qh3 the streams the peer's limit now allows, in the order they came."""
        waiting = self._waiting
        while waiting and not self._beyond_peer_limit(waiting[0][0]):
            stream_id, data, end = waiting.pop(0)
            self._quic.send_stream_data(stream_id, data, end_stream=end)

    def _is_waiting(self, stream_id: int) -> bool:
        return any(item[0] == stream_id for item in self._waiting)

    def reset_stream(self, stream_id: int, error_code: int) -> None:
        if self._is_waiting(stream_id):
            self._waiting = [item for item in self._waiting if item[0] != stream_id]
            return  # the peer never heard of it
        self._quic.reset_stream(stream_id, error_code)

    def stop_stream(self, stream_id: int, error_code: int) -> None:
        # The engine forgets a stream once both directions are done: nothing left to stop.
        with contextlib.suppress(ValueError, RuntimeError, AssertionError):
            self._quic.stop_stream(stream_id, error_code)
        self._consume(stream_id, self._unread_by_stream.get(stream_id, 0))

    # -- queries --------------------------------------------------------------

    def max_datagram_payload(self) -> int | None:
        """Largest datagram the peer accepts and one packet can carry; None if unsupported."""
        quic = self._quic
        remote = quic._remote_max_datagram_frame_size
        if remote is None or quic.configuration.max_datagram_frame_size is None:
            return None
        core = quic._core
        if core is None:
            return None
        packet_room = (
            int(core.active_path[5])  # the packet size qh3 uses on the path now
            - _SHORT_HEADER_OVERHEAD
            - _LONGEST_CID
            - _DATAGRAM_FRAME_OVERHEAD
        )
        return max(0, min(remote - _DATAGRAM_FRAME_OVERHEAD, packet_room))

    def _consume(self, stream_id: int, size: int) -> None:
        if size <= 0:
            return
        by_stream = self._unread_by_stream
        left = by_stream.get(stream_id, 0) - size
        if left > 0:
            by_stream[stream_id] = left
        else:
            by_stream.pop(stream_id, None)
        was_lagging = self._lagging()
        self._unread = max(0, self._unread - size)
        if was_lagging and not self._lagging():
            self._quic._drain_core()  # the core grants the credit as it hands data over

    def consumed(self, stream_id: int, size: int) -> bool:
        """The application read ``size`` bytes; qh3 already granted their credit.

        ``True``: a read may end qh3's backlog (see ``_lagging``), and this seam
        cannot tell cheaply whether qh3 then has frames to send.
        """
        self._consume(stream_id, size)
        return True

    def send_budget(self, inflight_limit: int | None = None) -> int:
        """Stream bytes the engine can put on the wire now: the congestion window
        less what is in flight and what qh3 already holds (qh3 does not expose the
        peer's connection credit)."""
        core = self._quic._core
        if core is None:
            return 0
        unsent = self._quic.get_send_buffer_size()
        window = core.congestion_window
        if inflight_limit is not None:
            window = min(window, inflight_limit)
        return max(0, window - core.bytes_in_flight - unsent)

    def stream_credit(self, stream_id: int) -> int:
        """qh3 says only whether a stream can send; the send budget bounds how much."""
        if self._beyond_peer_limit(stream_id) or self._is_waiting(stream_id):
            return 0
        return _NO_CREDIT_LIMIT if self._quic._stream_can_send(stream_id) else 0

    def peer_stream_limits(self) -> tuple[int, int]:
        """How many bidirectional and unidirectional streams the peer allows in all."""
        core = self._quic._core
        if core is None or not self._quic._handshake_complete:
            return 0, 0
        limits = core.stream_limits
        return limits[0], limits[1]

    @property
    def host_cid(self) -> bytes:
        """The connection id the peer reaches this side by at first."""
        cid: bytes = self._quic.host_cid
        return cid

    def is_stateless_reset(self, data: bytes) -> bool:
        """qh3 keeps the peer's reset tokens in its core: it handles resets itself."""
        return False

    def stream_count(self) -> int:
        """Streams the engine still holds state for: qh3 counts only this side's."""
        core = self._quic._core
        if core is None:
            return 0
        active = core.active_local_streams
        return int(active[0] + active[1])

    def peer_address(self) -> Address | None:
        """The address of the path in use."""
        core = self._quic._core
        if core is None:
            return None
        addr = core.active_path[2]
        return (str(addr[0]), int(addr[1]))

    def validated_peer_address(self) -> Address | None:
        """qh3 does not say whether its path is validated: the path in use."""
        return self.peer_address()

    def migration_refusal(self) -> str | None:
        return "qh3 2.1 cannot move a connection to a new address: migrate needs engine='aioquic'"

    def path_stats(self) -> tuple[float | None, float | None, int, int]:
        """(smoothed RTT, minimum RTT seen here, congestion window, bytes in flight)."""
        core = self._quic._core
        if core is None:
            return None, None, 0, 0
        latest = core.latest_rtt
        if latest is not None and (self._rtt_min is None or latest < self._rtt_min):
            self._rtt_min = latest
        return core.smoothed_rtt, self._rtt_min, core.congestion_window, core.bytes_in_flight

    def recovery_stats(self) -> RecoveryStats:
        """Only the lost-packet count: qh3 exposes no RTT variance, packet count or
        retransmission count."""
        core = self._quic._core
        return RecoveryStats(
            rtt_variance=None,
            packets_sent=None,
            packets_lost=None if core is None else int(core.loss_total),
            packets_retransmitted=None,
        )

    def stream_unsent(self, stream_id: int) -> int:
        """0: qh3 reports only the connection's unsent total (see docs/engines.md)."""
        return 0
