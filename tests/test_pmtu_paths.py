"""Path MTU discovery on paths that misbehave, and the budgets it shares.

Each case came from a second read of the PMTU change and failed before its
fix: fragmentation allowed (DF unset), a black hole that small packets hid, a
datagram stranded by a fall-back, an outage taken for "too big", and datagrams
held back by stream flow control. Each docstring tells what used to happen.
"""

from __future__ import annotations

import socket
import sys

import pytest

import sansquic
from sansquic.testing import CLIENT_ADDRESS, SERVER_ADDRESS, LinkConditions, connected_pair

# -- helpers -------------------------------------------------------------------


def _bulk_then(pair: sansquic.testing.Pair, first: int = 300_000) -> tuple[int, dict[str, int]]:
    """Push ``first`` bytes client->server on one stream so the client's PMTU search runs."""
    c, s, net = pair.client, pair.server, pair.network
    counts = {"stream": 0, "datagrams": 0}

    def drain() -> None:
        while (ev := s.next_event()) is not None:
            if isinstance(ev, sansquic.StreamReadable):
                counts["stream"] += len(s.read(ev.stream_id))
            elif isinstance(ev, sansquic.DatagramReceived):
                counts["datagrams"] += 1
        while c.next_event() is not None:
            pass

    sid = c.open_stream()
    c.send(sid, bytes(first))
    assert net.run_until(lambda: (drain(), counts["stream"] >= first)[1], 10)
    net.run_for(1.0)
    net.step_hooks.append(drain)
    return sid, counts


# -- 1. PMTU discovery over a socket that lets the kernel fragment ---------------


@pytest.mark.skipif(sys.platform != "linux", reason="IP_MTU_DISCOVER is Linux's")
def test_udp_socket_forbids_ip_fragmentation() -> None:
    """RFC 9000 section 14: UDP datagrams MUST NOT be fragmented; DF must be set.

    Linux defaults UDP sockets to IP_PMTUDISC_WANT: a datagram above the
    interface MTU is fragmented locally and reassembled by the peer, so a
    16000-byte probe "succeeds" on a 1500-byte Ethernet path (checked on a
    1500-MTU loopback in a network namespace: udp_payload_size 16000 after one
    probe, /proc/net/snmp FragCreates in the thousands, and UdpSocket._gso
    turned off for good by the EINVAL a >MTU GSO segment gets).
    """
    from sansquic_runtime import UdpSocket

    sock = UdpSocket(socket.AF_INET, ("127.0.0.1", 0))
    try:
        ip_mtu_discover = getattr(socket, "IP_MTU_DISCOVER", 10)
        mode = sock.sock.getsockopt(socket.IPPROTO_IP, ip_mtu_discover)
        assert mode in (2, 3), f"IP_MTU_DISCOVER is {mode} (1 = WANT: the kernel fragments)"
    finally:
        sock.close()


# -- 2. Black-hole detection defeated: the connection livelocks ------------------


def test_black_hole_is_detected_while_large_datagrams_wait() -> None:
    """After discovery raised packets to 16000, the path drops to 1472 while the
    application keeps large datagrams queued. Small fragments of stream data
    (the 2-packet minimum window leaves a 38-byte remainder) keep getting
    through and acknowledged, which resets aioquic's PTO count, so
    ``probe_timeouts() >= 3`` never holds: packets stay 16000, the stream moves
    0 bytes, and the connection stays up. Observed: no progress for > 90 s.
    """
    cfg = sansquic.Config(
        dev_mode=True,
        trust_dev_certificate=True,
        max_datagram_size=8000,
    )
    pair = connected_pair(
        LinkConditions(delay=0.005, mtu=None), client_config=cfg, server_config=cfg
    )
    c, net = pair.client, pair.network
    sid, counts = _bulk_then(pair)
    assert c.stats().udp_payload_size == 16_000
    net.set_link(CLIENT_ADDRESS, SERVER_ADDRESS, LinkConditions(delay=0.005, mtu=1472))
    c.send(sid, bytes(300_000))

    def datagrams() -> None:
        size = c.max_datagram_size
        if size is not None and size >= 5000:
            c.send_datagram(bytes(5000))

    net.step_hooks.append(datagrams)
    assert net.run_until(lambda: counts["stream"] >= 600_000, 30), (
        f"stream stalled at {counts['stream'] - 300_000} of 300000 bytes; "
        f"packet size still {c.stats().udp_payload_size}"
    )


# -- 3. A datagram queued at a larger size wedges every later datagram -----------


def test_datagrams_still_flow_after_the_packet_size_falls_back() -> None:
    """``send_datagram`` checks the size against today's packet size; the core
    queue hands it to aioquic after a fall-back. A DATAGRAM that no longer fits
    a packet stays at the head of aioquic's ``_datagrams_pending`` for good
    (``QuicPacketBuilderStop`` every time), so no later datagram is sent, and
    since that queue is not counted in ``send_budget`` the core keeps moving
    datagrams into it: unbounded. ``use_datagram_size`` only filters once, at
    the size change. Fix: drop (and count) oversized entries in ``_schedule``.
    """
    cfg = sansquic.Config(
        dev_mode=True,
        trust_dev_certificate=True,
        max_datagram_size=8000,
    )
    pair = connected_pair(
        LinkConditions(delay=0.005, mtu=None), client_config=cfg, server_config=cfg
    )
    c, net = pair.client, pair.network
    sid, counts = _bulk_then(pair)
    net.set_link(CLIENT_ADDRESS, SERVER_ADDRESS, LinkConditions(delay=0.005, mtu=1472))
    c.send(sid, bytes(500_000))

    def datagrams() -> None:
        size = c.max_datagram_size
        if size is not None and size >= 5000:
            c.send_datagram(bytes(5000))

    net.step_hooks.append(datagrams)
    # However long the fall-back takes (see the test above), wait for it and the stream.
    net.run_until(lambda: counts["stream"] >= 800_000, 150)
    net.step_hooks.remove(datagrams)
    assert counts["stream"] >= 800_000
    net.run_for(10.0)  # the search ends: no further size change filters aioquic's queue
    search = c._pmtu
    assert search is not None and (search.timer() or 0) > net.now + 100
    assert (c.max_datagram_size or 0) < 5000
    counts["datagrams"] = 0
    for _ in range(300):
        c.send_datagram(b"small")
        net.run_for(0.01)
    net.run_for(1.0)
    pending = len(c._engine._quic._datagrams_pending)  # type: ignore[union-attr]
    assert counts["datagrams"] > 0, f"no datagram delivered; {pending} wait in the engine"
    assert pending <= cfg.datagram_queue_limit


# -- 4. A short outage pins the packet size at the floor for ten minutes ---------


def test_a_short_outage_does_not_pin_the_packet_size_at_the_floor() -> None:
    """A 3 s outage makes aioquic's PTO count reach 3, the core resets the
    search, and the search then runs *during* the outage: every probe is lost,
    every size counts as too big, and the search ends at 1200 with the next look
    600 s away, on a path that carries 16000 (10x slower on loopback). Probe loss
    should only count when packets sent after the probe were acknowledged.
    """
    pair = connected_pair(LinkConditions(delay=0.005, mtu=None))
    c, net = pair.client, pair.network
    sid, counts = _bulk_then(pair)
    assert c.stats().udp_payload_size == 16_000
    net.set_link(CLIENT_ADDRESS, SERVER_ADDRESS, LinkConditions(delay=0.005, mtu=None, loss=1.0))
    c.send(sid, bytes(1_000_000))
    net.run_for(3.0)
    net.set_link(CLIENT_ADDRESS, SERVER_ADDRESS, LinkConditions(delay=0.005, mtu=None))
    assert net.run_until(lambda: counts["stream"] >= 1_300_000, 60)
    net.run_for(10.0)
    assert c.stats().udp_payload_size > 8000, c.stats()


# -- 5. (pre-existing) Datagrams wait for stream flow-control credit -------------


def test_datagrams_are_not_held_back_by_stream_flow_control() -> None:
    """DATAGRAM frames are not flow controlled (RFC 9221 section 5), but
    ``_schedule`` hands them out of ``send_budget()``, which is
    ``min(window, connection credit)``: once a slow reader exhausted MAX_DATA,
    no datagram leaves. Present before b837817 too; the in-flight limit now
    shares the same budget. Fix: a datagram budget of window - in flight only.
    """
    server = sansquic.Config(
        dev_mode=True,
        trust_dev_certificate=True,
        max_data=200_000,
        max_connection_window=200_000,
        max_stream_data=100_000,
        max_stream_window=100_000,
    )
    pair = connected_pair(LinkConditions(delay=0.005), server_config=server)
    c, s, net = pair.client, pair.server, pair.network
    sids = [c.open_stream() for _ in range(4)]
    received: list[bytes] = []

    def drain() -> None:  # never reads the streams: their credit runs out
        while (ev := s.next_event()) is not None:
            if isinstance(ev, sansquic.DatagramReceived):
                received.append(ev.data)
        while c.next_event() is not None:
            pass

    def fill() -> None:
        for sid in sids:
            while c.writable(sid):
                c.send(sid, bytes(65_536))

    net.step_hooks.append(fill)
    net.run_until(lambda: (drain(), False)[1], 5)
    c.send_datagram(b"ping")
    assert net.run_until(lambda: (drain(), bool(received))[1], 5), "the datagram never left"
