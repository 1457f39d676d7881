"""The contract between the core and a QUIC engine.

An engine module (``_aioquic.py``, and the experimental ``_aioquic_qh3.py``) turns the
engine's own events and exceptions into these plain records, so nothing
engine-specific leaves the seam. :class:`Engine` is what the core calls;
:func:`new_engine` picks the module ``Config.engine`` names.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Protocol

import attrs

from ._codes import ClosedBy

if TYPE_CHECKING:
    from ._config import Config

Address = tuple[str, int]


@attrs.frozen(slots=True)
class HandshakeDone:
    alpn: str | None
    resumed: bool = False  # a session ticket was used
    early_data_accepted: bool = False


@attrs.frozen(slots=True)
class EarlyDataAccepted:
    """(Servers) The client's 0-RTT is taken: its streams may arrive before the
    handshake completes; ``alpn`` is already chosen."""

    alpn: str | None


@attrs.frozen(slots=True)
class StreamData:
    stream_id: int
    data: bytes
    fin: bool


@attrs.frozen(slots=True)
class StreamResetByPeer:
    stream_id: int
    error_code: int


@attrs.frozen(slots=True)
class StopSendingByPeer:
    stream_id: int
    error_code: int


@attrs.frozen(slots=True)
class DatagramIn:
    data: bytes


@attrs.frozen(slots=True)
class CidIssued:
    """The engine gave the peer a new connection id to reach this side by."""

    cid: bytes


@attrs.frozen(slots=True)
class CidRetired:
    """The peer retired one of this side's connection ids."""

    cid: bytes


@attrs.frozen(slots=True)
class Terminated:
    error_code: int
    reason: str
    closed_by: ClosedBy
    application: bool


@attrs.frozen(slots=True)
class PathProbeAcked:
    """The peer acknowledged a path MTU probe: the path carries ``size``-byte payloads."""

    size: int


@attrs.frozen(slots=True)
class RecoveryStats:
    """Loss-recovery figures for ``stats()``; ``None`` where an engine cannot tell."""

    rtt_variance: float | None
    packets_sent: int | None
    packets_lost: int | None
    packets_retransmitted: int | None


@attrs.frozen(slots=True)
class KeyState:
    """Where the 1-RTT packet protection keys are (RFC 9001 section 6)."""

    phase: int  # the key phase bit packets are sent with now
    updates: int  # key updates so far, by either side
    packets: int  # packets sent under the current keys
    settled: bool  # a new update may start: none requested, the current keys acknowledged


EngineEvent = (
    HandshakeDone
    | EarlyDataAccepted
    | PathProbeAcked
    | StreamData
    | StreamResetByPeer
    | StopSendingByPeer
    | DatagramIn
    | CidIssued
    | CidRetired
    | Terminated
)


class Engine(Protocol):
    """One QUIC connection of an engine, as the core drives it (see ``_aioquic.py``)."""

    @property
    def now(self) -> float: ...
    @property
    def host_cid(self) -> bytes: ...
    def connect(self, addr: Address, now: float) -> None: ...
    def receive_datagram(self, data: bytes, addr: Address, now: float) -> None: ...
    def handle_timer(self, now: float) -> None: ...
    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]: ...
    def timer(self) -> float | None: ...
    def has_events(self) -> bool: ...
    def events(self) -> Iterator[EngineEvent]: ...
    def pending_close(self) -> Terminated | None: ...
    def send_stream(self, stream_id: int, data: bytes, end: bool) -> None: ...
    def reset_stream(self, stream_id: int, error_code: int) -> None: ...
    def stop_stream(self, stream_id: int, error_code: int) -> None: ...
    def change_connection_id(self) -> None: ...
    def send_datagram(self, data: bytes) -> None: ...
    def close(self, error_code: int, reason: str) -> None: ...
    def send_ping(self) -> None:
        """Queue an ack-eliciting PING for the next :meth:`datagrams_to_send` (keep-alive)."""
        ...

    def max_datagram_payload(self) -> int | None: ...
    def consumed(self, stream_id: int, size: int) -> bool:
        """The application read ``size`` bytes of the stream; whether that raised the
        credit the peer is to be told of (the next send pass then carries it)."""
        ...

    def send_budget(self, inflight_limit: int | None = None) -> int:
        """Stream bytes the engine can put on the wire now, with at most
        ``inflight_limit`` bytes in flight and held unsent."""
        ...

    def stream_credit(self, stream_id: int) -> int: ...
    def peer_stream_limits(self) -> tuple[int, int]: ...
    def is_stateless_reset(self, data: bytes) -> bool: ...
    def stream_count(self) -> int: ...
    def peer_address(self) -> Address | None: ...
    def path_stats(self) -> tuple[float | None, float | None, int, int]: ...
    def recovery_stats(self) -> RecoveryStats: ...
    def take_qlog(self) -> dict[str, Any] | None:
        """The connection's qlog document (``Config.qlog``), once; ``None`` after or without."""
        ...

    def stream_unsent(self, stream_id: int) -> int:
        """Bytes of the stream handed to the engine and not yet sent once."""
        ...

    def send_path_probe(self, size: int, now: float) -> list[tuple[bytes, Address]]:
        """A PMTU probe of ``size`` bytes, answered by ``PathProbeAcked``; ``[]`` if
        the engine cannot send one now (or at all)."""
        ...

    def use_datagram_size(self, size: int) -> int:
        """Build packets of up to ``size`` bytes from now on; returns how many queued
        datagrams no longer fit and were dropped."""
        ...

    def probe_timeouts(self) -> int:
        """Consecutive loss-probe timeouts so far (nonzero: the path is in doubt)."""
        ...

    def probe_timeout(self) -> float:
        """The current probe timeout (PTO) period, seconds."""
        ...

    def packets_acked(self) -> int:
        """In-flight packets acknowledged so far (evidence that the path delivers)."""
        ...

    def large_losses(self) -> int:
        """Packets above 1200 bytes lost since one was last acknowledged."""
        ...

    def datagram_budget(self, inflight_limit: int | None = None) -> int:
        """Datagram bytes the engine can put on the wire now (no flow control)."""
        ...

    def early_data_sendable(self) -> bool:
        """(Clients) True while stream data would leave in 0-RTT packets."""
        ...

    def validated_peer_address(self) -> Address | None:
        """The peer's address on the newest validated path (``peer_address`` switches
        at once to a new address the peer sends from, before it is validated)."""
        ...

    def migration_refusal(self) -> str | None:
        """(Clients) Why the connection cannot move to a new local address now, or None."""
        ...

    def migrate(self) -> None:
        """(Clients) This side now sends from a new local address: move to a fresh
        connection id and send at once, so the peer validates the new path."""
        ...

    def update_keys(self) -> None:
        """Start a key update (deferred until the handshake is confirmed); only
        when :meth:`key_state` says ``settled``."""
        ...

    def key_state(self) -> KeyState: ...


QLOG_VERSION = "0.3"  # the qlog draft aioquic's (and qh3's) event encoders follow


class EventLog:
    """One connection's qlog events, at most ``max_events`` of them.

    The first half is kept (the handshake, the start of a transfer) and the
    latest half (how it ended); what fell in between is counted in ``dropped``
    and marked by one ``sansquic:events_dropped`` event.
    """

    __slots__ = ("_head", "_head_size", "_tail", "dropped", "max_events")

    def __init__(self, max_events: int) -> None:
        self.max_events = max_events
        self._head_size = max_events - max_events // 2
        self._head: list[dict[str, Any]] = []
        self._tail: deque[dict[str, Any]] = deque(maxlen=max_events // 2)
        self.dropped = 0

    def append(self, event: dict[str, Any]) -> None:
        if len(self._head) < self._head_size:
            self._head.append(event)
            return
        if len(self._tail) == self._tail.maxlen:
            self.dropped += 1  # the deque pushes out its oldest
        self._tail.append(event)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        yield from self._head
        if self.dropped:
            time = self._tail[0]["time"] if self._tail else self._head[-1]["time"]
            yield {"name": "sansquic:events_dropped", "time": time, "data": {"count": self.dropped}}
        yield from self._tail


class BoundedTrace:
    """Mixed into an engine's ``QuicLoggerTrace``: events go to an :class:`EventLog`,
    stamped with the time the core passed in (``clock``), not the wall clock."""

    _events: Any
    _clock: Callable[[], float]

    def bound(self, max_events: int, clock: Callable[[], float]) -> None:
        self._events = EventLog(max_events)
        self._clock = clock

    def log_event(self, *, category: str, event: str, data: dict[str, Any]) -> None:
        self._events.append(
            {"data": data, "name": category + ":" + event, "time": self._clock() * 1000.0}
        )


class QlogRecorder:
    """Stands in for an engine's ``QuicLogger``: holds the one trace of one connection."""

    def __init__(self, make_trace: Callable[[bool, bytes], Any]) -> None:
        self._make_trace = make_trace
        self._trace: Any = None

    def start_trace(self, is_client: bool, odcid: bytes) -> Any:
        self._trace = self._make_trace(is_client, odcid)
        return self._trace

    def end_trace(self, trace: Any) -> None:
        """Kept until :meth:`take` (the engine ends the trace before the core reports)."""

    def take(self) -> dict[str, Any] | None:
        """The trace as a qlog document, once."""
        trace, self._trace = self._trace, None
        if trace is None:
            return None
        events: EventLog = trace._events
        return {
            "qlog_format": "JSON",
            "qlog_version": QLOG_VERSION,
            "title": "sansquic connection trace",
            "summary": {"events_dropped": events.dropped, "max_events": events.max_events},
            "traces": [trace.to_dict()],
        }


class AioquicStyleEngine:
    """What the aioquic and qh3 adapters share: qh3 kept aioquic's calls for these."""

    __slots__ = ("_closed_by",)  # so an adapter that lists its slots has no instance dict

    _quic: Any
    _closed_by: ClosedBy | None
    _qlog: QlogRecorder | None = None

    def take_qlog(self) -> dict[str, Any] | None:
        return None if self._qlog is None else self._qlog.take()

    def change_connection_id(self) -> None:
        self._quic.change_connection_id()

    def migrate(self) -> None:
        self._quic.change_connection_id()
        # A PING is a non-probing frame: the server moves to the new path on it and
        # validates the path with PATH_CHALLENGE (RFC 9000 section 9.2).
        self._quic.send_ping(0)

    def send_datagram(self, data: bytes) -> None:
        self._quic.send_datagram_frame(data)

    def send_ping(self) -> None:
        self._quic.send_ping(0)  # the uid only names the PingAcknowledged event, unused

    def close(self, error_code: int, reason: str) -> None:
        if self._closed_by is None:
            self._closed_by = ClosedBy.LOCAL
        self._quic.close(error_code=error_code, reason_phrase=reason)

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
            return Terminated(0, "idle timeout", closed_by, False)  # 0: NO_ERROR
        # close() is always an application close; otherwise the frame type tells.
        application = closed_by is ClosedBy.LOCAL or ev.frame_type is None
        return Terminated(int(ev.error_code), str(ev.reason_phrase), closed_by, application)


def translate(ev: Any, qe: Any, terminated: Callable[[Any], Terminated]) -> EngineEvent | None:
    """One event of an aioquic-style engine as the seam's record; ``None`` for the
    events the core has no use for. ``qe``: the engine's ``quic.events`` module (qh3
    keeps aioquic's names); ``terminated`` turns its ConnectionTerminated into ours."""
    if isinstance(ev, qe.StreamDataReceived):
        return StreamData(ev.stream_id, ev.data, ev.end_stream)
    if isinstance(ev, qe.DatagramFrameReceived):
        return DatagramIn(ev.data)
    if isinstance(ev, qe.StreamReset):
        return StreamResetByPeer(ev.stream_id, int(ev.error_code))
    if isinstance(ev, qe.StopSendingReceived):
        return StopSendingByPeer(ev.stream_id, int(ev.error_code))
    if isinstance(ev, qe.HandshakeCompleted):
        return HandshakeDone(
            ev.alpn_protocol, bool(ev.session_resumed), bool(ev.early_data_accepted)
        )
    if isinstance(ev, qe.ConnectionIdIssued):
        return CidIssued(ev.connection_id)
    if isinstance(ev, qe.ConnectionIdRetired):
        return CidRetired(ev.connection_id)
    if isinstance(ev, qe.ConnectionTerminated):
        return terminated(ev)
    return None


def new_engine(
    config: Config,
    *,
    is_client: bool,
    server_name: str | None = None,
    original_destination_cid: bytes | None = None,
    retry_source_cid: bytes | None = None,
    reset_token: Callable[[bytes], bytes] | None = None,
    now: float = 0.0,
) -> Engine:
    """The engine ``config.engine`` names, for one connection (arguments as ``AioquicEngine``)."""
    engine: Callable[..., Engine]
    if config.engine == "qh3":
        from ._aioquic_qh3 import Qh3Engine  # optional: Config checked that qh3 is installed

        engine = Qh3Engine
    else:
        from ._aioquic import AioquicEngine

        engine = AioquicEngine
    return engine(
        config,
        is_client=is_client,
        server_name=server_name,
        original_destination_cid=original_destination_cid,
        retry_source_cid=retry_source_cid,
        reset_token=reset_token,
        now=now,
    )
