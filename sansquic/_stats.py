"""``ConnectionStats``: a snapshot of one connection's counters."""

from __future__ import annotations

import attrs

__all__ = ["ConnectionStats"]


@attrs.frozen(kw_only=True, slots=True)
class ConnectionStats:
    """Counters and path estimates at the moment ``stats()`` was called."""

    #: UDP payload bytes and datagrams handed out by / fed into the connection.
    udp_bytes_sent: int
    udp_bytes_received: int
    udp_datagrams_sent: int
    udp_datagrams_received: int
    #: Datagrams a server dropped before any connection existed (not a client Initial).
    udp_datagrams_dropped: int
    #: Application bytes accepted by ``send()`` and delivered to the receive buffers.
    stream_bytes_sent: int
    stream_bytes_received: int
    #: Streams the core holds state for, and how many each side opened in total.
    streams_open: int
    streams_opened_local: int
    streams_opened_remote: int
    #: Unreliable datagrams (RFC 9221) sent and received, and received ones dropped
    #: for exceeding ``RateLimits.peer_datagrams_per_second``.
    datagrams_sent: int
    datagrams_received: int
    datagrams_dropped: int
    #: Outgoing datagrams dropped because the send queue was full.
    datagrams_send_dropped: int
    #: Stream bytes queued in the core, not yet handed to the engine.
    send_buffered: int
    #: Smoothed and minimum round-trip time in seconds, ``None`` before the first sample.
    #: The minimum is that of the last 10-20 s (aioquic engine; qh3: of the connection).
    rtt_smoothed: float | None
    rtt_min: float | None
    #: Congestion window and bytes in flight, in bytes.
    congestion_window: int
    bytes_in_flight: int
    #: Largest UDP payload packets use now: the path MTU as far as it is known
    #: (path MTU discovery raises it from 1200), and the probes sent, acknowledged
    #: and given up on.
    udp_payload_size: int = 1200
    pmtu_probes_sent: int = 0
    pmtu_probes_acked: int = 0
    pmtu_probes_lost: int = 0
    #: RTT variance in seconds (RFC 9002 ``rttvar``), ``None`` before the first sample.
    rtt_variance: float | None = None
    #: QUIC packets sent (all packet number spaces, probes included), in-flight
    #: packets declared lost, and packets whose frames were queued to be sent
    #: again (lost ones, and ones a probe timeout stopped waiting for).
    #: ``None`` where the engine cannot tell (qh3 reports only losses).
    packets_sent: int | None = None
    packets_lost: int | None = None
    packets_retransmitted: int | None = None
    #: Key updates so far (started by either side) and the key phase bit in use now.
    key_updates: int = 0
    key_phase: int = 0
    #: Times the runtime reported the peer's address unreachable (ICMP) once the
    #: handshake was over: only a hint, since such reports can be spoofed or
    #: transient (during the handshake the first one ends it, see
    #: :class:`~sansquic.PeerUnreachableError`).
    unreachable_reports: int = 0
