"""The UDP socket every runtime drives: open, drain every ready datagram, send a batch.

Plain non-blocking stdlib sockets: each runtime only waits for readability
its own way, so batching and segmentation offload are written once here.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import socket
import struct
import sys
import threading
from collections.abc import Sequence
from typing import Any

import sansquic

__all__ = ["UdpSocket", "client_bind", "first_address", "safe_config"]

_RECV_SIZE = 65_535  # the largest UDP payload, so no datagram is ever truncated
_RCVBUF = 1 << 20  # room for a congestion window's burst; the kernel may cap it lower
#: At most this many datagrams are read before the endpoint gets to answer them.
_MAX_BATCH = 256
# UDP generic segmentation offload (Linux 4.18+): one sendmsg carries many datagrams.
_SOL_UDP = getattr(socket, "SOL_UDP", 17)
_UDP_SEGMENT = getattr(socket, "UDP_SEGMENT", 103)
_GSO_MAX_SEGMENTS = 64
# UDP generic receive offload (Linux 5.0+): the kernel hands over a run of
# equal-sized datagrams from one sender in one read, their size in a control
# message; a GSO send over loopback then arrives whole, one read for up to 64.
_UDP_GRO = getattr(socket, "UDP_GRO", 104)
_GRO_SIZE = struct.Struct("=i")  # the kernel's control message carries an int
_GRO_CMSG_SPACE = socket.CMSG_SPACE(_GRO_SIZE.size)
# A read with its control message costs about twice a plain one (4 vs 2 us here),
# so GRO is on only while bursts arrive, when one read replaces dozens (0.9 vs
# 1.8 us per datagram): it turns on after a batch with this many datagrams in
# runs the kernel could have coalesced (same size, same sender)...
_GRO_BURST = 16
# ...and off after this many batches in a row in which no read was coalesced.
_GRO_QUIET_BATCHES = 2
_GSO_MAX_BYTES = 65_000  # under the 65,507-byte IPv4 UDP payload limit of one send
# Don't fragment (RFC 9000 section 14): Linux's default lets the kernel fragment a
# datagram above the interface MTU, so a path MTU probe would "succeed" on any path.
# PROBE sets DF without the kernel's own path MTU cache (the core probes itself).
# Python 3.11 lacks the names, so Linux's values stand in.
_IP_MTU_DISCOVER = getattr(socket, "IP_MTU_DISCOVER", 10)
_IPV6_MTU_DISCOVER = getattr(socket, "IPV6_MTU_DISCOVER", 23)
_PMTUDISC_PROBE = 3
# ICMP errors on an unconnected socket (Linux): with IP_RECVERR the kernel queues each
# one with the address the failed datagram went to, read with MSG_ERRQUEUE. Only
# "port unreachable" (ECONNREFUSED) is passed on: host and net unreachable may be
# transient, and frag-needed is path MTU discovery's business (it probes on its own).
_IP_RECVERR = getattr(socket, "IP_RECVERR", 11)
_IPV6_RECVERR = getattr(socket, "IPV6_RECVERR", 25)
_MSG_ERRQUEUE = getattr(socket, "MSG_ERRQUEUE", 0x2000)
_EXTENDED_ERR = struct.Struct("=IBBBBII")  # struct sock_extended_err, then the offender
_SO_EE_ORIGIN_ICMP, _SO_EE_ORIGIN_ICMP6 = 2, 3
_RECVERR_KINDS = {(socket.IPPROTO_IP, _IP_RECVERR), (socket.IPPROTO_IPV6, _IPV6_RECVERR)}
_receive_buffers = threading.local()  # one 64 KiB buffer per I/O thread, not per socket


def first_address(infos: Sequence[tuple[Any, ...]]) -> tuple[int, sansquic.Address]:
    """``(family, (ip, port))`` from the first ``getaddrinfo`` result, whichever
    framework resolved it (every backend's ``resolve()`` ends here)."""
    family, _, _, _, sockaddr = infos[0]
    return int(family), (str(sockaddr[0]), int(sockaddr[1]))


def client_bind(remote: sansquic.Address) -> tuple[str, int]:
    """Where a client binds to reach ``remote``: loopback for a loopback peer, else any."""
    ip = ipaddress.ip_address(remote[0])
    if ip.is_loopback:
        return (str(ip), 0)
    return ("::" if ip.version == 6 else "0.0.0.0", 0)


#: What a socket with IP_RECVERR reports on its next call after an ICMP error about
#: any peer (the pending socket error), not about the datagram being sent.
_REPORTED_ERRORS = frozenset(
    {errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EHOSTDOWN}
)


def _forbid_fragmentation(sock: socket.socket, family: int) -> bool:
    """Set DF on ``sock``; whether that is known to have worked."""
    if sys.platform != "linux":
        return False  # the options differ elsewhere: stay at 1200 bytes
    level, option = (
        (socket.IPPROTO_IPV6, _IPV6_MTU_DISCOVER)
        if family == socket.AF_INET6
        else (socket.IPPROTO_IP, _IP_MTU_DISCOVER)
    )
    try:
        sock.setsockopt(level, option, _PMTUDISC_PROBE)
    except OSError:
        return False
    return True


def _receive_errors(sock: socket.socket, family: int) -> bool:
    """Ask for ICMP errors on ``sock``'s error queue; whether that is known to work."""
    if sys.platform != "linux":
        return False  # elsewhere an unconnected UDP socket hears no ICMP errors
    options = [(socket.IPPROTO_IP, _IP_RECVERR)]
    if family == socket.AF_INET6:
        options.insert(0, (socket.IPPROTO_IPV6, _IPV6_RECVERR))
    try:
        sock.setsockopt(*options[0], 1)
    except OSError:
        return False
    with contextlib.suppress(OSError):
        sock.setsockopt(*options[-1], 1)  # a dual-stack socket's IPv4 peers too
    return True


def _refused_address(
    ancillary: list[tuple[int, int, bytes]], address: Any
) -> sansquic.Address | None:
    """The peer an error-queue message says refused a datagram (port unreachable)."""
    for level, kind, data in ancillary:
        if (level, kind) not in _RECVERR_KINDS or len(data) < _EXTENDED_ERR.size:
            continue
        code, origin = _EXTENDED_ERR.unpack_from(data)[:2]
        if (
            code == errno.ECONNREFUSED
            and origin in (_SO_EE_ORIGIN_ICMP, _SO_EE_ORIGIN_ICMP6)
            and address
        ):
            return (str(address[0]), int(address[1]))
    return None


def _set_gro(sock: socket.socket, on: bool) -> bool:
    """Turn UDP generic receive offload on or off; whether the kernel took it."""
    if sys.platform != "linux" or not hasattr(sock, "recvmsg_into"):
        return False
    try:
        sock.setsockopt(_SOL_UDP, _UDP_GRO, int(on))
    except OSError:
        return False  # before Linux 5.0, or not UDP: one datagram per read, as before
    return True


def _coalescible(batch: list[tuple[bytes, sansquic.Address]]) -> int:
    """How many datagrams of ``batch`` follow one of the same size from the same sender."""
    count = 0
    previous: tuple[int, sansquic.Address | None] = (-1, None)
    for data, addr in batch:
        key = (len(data), addr)
        count += key == previous
        previous = key
    return count


def safe_config(config: sansquic.Config, sock: UdpSocket) -> sansquic.Config:
    """``config`` as far as ``sock`` can carry it: 1200-byte packets where DF is not set."""
    if sock.dont_fragment or config.max_udp_payload_size == 1200:
        return config
    return config.replace(max_udp_payload_size=1200)


class UdpSocket:
    """A bound, non-blocking UDP socket with batched receive and send."""

    #: Set to False before opening sockets to send every datagram on its own (for measuring).
    gso = True
    #: Set to False before opening sockets to read every datagram on its own (for measuring).
    gro: bool = True

    def __init__(self, family: int, bind: tuple[str, int]) -> None:
        self.sock: socket.socket = socket.socket(family, socket.SOCK_DGRAM)
        self.family = family
        try:
            with contextlib.suppress(OSError):
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _RCVBUF)
            #: Whether the kernel sends every datagram whole (DF set): without it, only
            #: 1200-byte packets are safe and path MTU discovery must stay off.
            self.dont_fragment: bool = _forbid_fragmentation(self.sock, family)
            self._errors = _receive_errors(self.sock, family)
            self.sock.bind(bind)
            self.sock.setblocking(False)
        except BaseException:
            self.sock.close()
            raise
        host, port = self.sock.getsockname()[:2]
        #: The bound ``(host, port)``; the real port when 0 was asked for.
        self.address: tuple[str, int] = (str(host), int(port))
        self._gso = UdpSocket.gso and sys.platform == "linux"  # UDP_SEGMENT is Linux-only
        #: Peers the kernel reported unreachable since :meth:`take_unreachable` last ran.
        self._unreachable: list[sansquic.Address] = []
        #: Whether GRO may be used on this socket (asked for, and Linux's kind of socket).
        self.gro: bool = (
            UdpSocket.gro and sys.platform == "linux" and hasattr(self.sock, "recvmsg_into")
        )
        #: Whether reads go through recvmsg for the segment size: while the socket option
        #: is on, and after it went off until the queue was drained once (datagrams the
        #: kernel coalesced before that stay coalesced).
        self.gro_reads: bool = False
        self._gro_on = False  # the socket option's state
        self._quiet_batches = 0  # batches in a row with no coalesced read

    def take_unreachable(self) -> list[sansquic.Address]:
        """The peers ICMP said refused a datagram (port unreachable) since the last
        call, for ``Endpoint.peer_unreachable``; always empty where the OS does not
        tell (it does on Linux)."""
        taken, self._unreachable = self._unreachable, []
        return taken

    def fileno(self) -> int:
        return self.sock.fileno()

    def receive_ready(self) -> list[tuple[bytes, sansquic.Address]]:
        """Every datagram ready now (up to a batch), without blocking."""
        batch: list[tuple[bytes, sansquic.Address]] = []
        # Into one reused buffer, then copied at its real size: recvfrom(65535) would
        # allocate 64 KiB per datagram and shrink it, which fragments the heap (RSS
        # per idle connection grew by about 30 KiB once probes made datagrams large).
        # 64 KiB also holds the largest coalesced GRO read.
        view = getattr(_receive_buffers, "view", None)
        if view is None:
            view = _receive_buffers.view = memoryview(bytearray(_RECV_SIZE))
        if self.gro_reads:
            self._receive_coalesced(view, batch)
        else:
            self._receive_plain(view, batch)
        if self._errors:
            # Every wake: queued ICMP errors are charged to the receive buffer, so left
            # there while traffic flows they would crowd out datagrams, and a wake with
            # nothing to read may be the error queue alone. Empty, this is one EAGAIN.
            self._drain_errors()
        return batch

    def _receive_plain(self, view: memoryview, batch: list[tuple[bytes, sansquic.Address]]) -> None:
        """``receive_ready`` with GRO off: one datagram per read; turns GRO on at a burst."""
        recv_into = self.sock.recvfrom_into
        while len(batch) < _MAX_BATCH:
            try:
                size, addr = recv_into(view)
                data = view[:size].tobytes()
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                if exc.errno in (errno.EBADF, errno.ENOTSOCK):
                    return  # closed under us: nothing more will come
                continue  # an ICMP error surfacing on UDP: the error queue has it
            batch.append((data, (addr[0], addr[1])))
        if self.gro and len(batch) >= _GRO_BURST and _coalescible(batch) >= _GRO_BURST:
            # A burst: the next ones can come coalesced. From the next read on, every
            # read tells its segment size (one taken before the switch has none).
            if _set_gro(self.sock, True):
                self._gro_on = self.gro_reads = True
                self._quiet_batches = 0
            else:
                self.gro = False  # refused: never ask again

    def _drain_errors(self) -> None:
        """Read the error queue empty, keeping the peers that refused a datagram."""
        for _ in range(_MAX_BATCH):
            try:
                _, ancillary, _, address = self.sock.recvmsg(0, 512, _MSG_ERRQUEUE)
            except OSError:
                return  # empty (EAGAIN), or closed under us
            refused = _refused_address(ancillary, address)
            if refused is not None and refused not in self._unreachable:
                self._unreachable.append(refused)

    def _receive_coalesced(
        self, view: memoryview, batch: list[tuple[bytes, sansquic.Address]]
    ) -> None:
        """``receive_ready`` with GRO on: each read may hold several datagrams."""
        recvmsg_into = self.sock.recvmsg_into
        coalesced = drained = False
        while len(batch) < _MAX_BATCH:
            try:
                size, ancillary, _, addr = recvmsg_into([view], _GRO_CMSG_SPACE)
            except (BlockingIOError, InterruptedError):
                drained = True
                break
            except OSError as exc:
                if exc.errno in (errno.EBADF, errno.ENOTSOCK):
                    break  # closed under us: nothing more will come
                continue  # an ICMP error surfacing on UDP: loss recovery covers it
            address = (addr[0], addr[1])
            segment = size  # no control message: one datagram
            for level, kind, data in ancillary:
                if level == _SOL_UDP and kind == _UDP_GRO and len(data) >= _GRO_SIZE.size:
                    segment = _GRO_SIZE.unpack_from(data)[0] or size
            segment = max(segment, 1)  # an empty datagram carries nothing: none comes out
            coalesced = coalesced or size > segment
            batch.extend(
                (view[start : min(start + segment, size)].tobytes(), address)
                for start in range(0, size, segment)  # only the last one may be shorter
            )
        if not self._gro_on:
            # Switched off: plain reads once everything queued before the switch is read.
            self.gro_reads = not drained
        elif coalesced:
            self._quiet_batches = 0
        else:
            self._quiet_batches += 1
            if self._quiet_batches >= _GRO_QUIET_BATCHES:
                self._gro_on = False  # reads stay recvmsg until the queue drains once
                _set_gro(self.sock, False)

    def send(self, datagrams: list[tuple[bytes, sansquic.Address]]) -> None:
        """Send a batch: runs of equal-sized datagrams to one address go out as one
        sendmsg with UDP generic segmentation offload where the kernel has it."""
        sock, index = self.sock, 0
        while index < len(datagrams):
            data, addr = datagrams[index]
            run = 1
            if self._gso:
                size = len(data)
                while (
                    index + run < len(datagrams)
                    and run < _GSO_MAX_SEGMENTS
                    and (run + 1) * size <= _GSO_MAX_BYTES  # one UDP send's payload at most
                    and datagrams[index + run][1] == addr
                    and len(datagrams[index + run][0]) <= size
                ):
                    run += 1
                    if len(datagrams[index + run - 1][0]) < size:
                        break  # only the last segment may be shorter
            try:
                try:
                    self._send_run(datagrams, index, run)
                except OSError as exc:
                    if exc.errno not in _REPORTED_ERRORS:
                        raise
                    # An ICMP error earlier on this socket, about any peer, reported on
                    # this send: it says nothing about these datagrams, and reporting
                    # cleared it, so send them again.
                    self._send_run(datagrams, index, run)
            except OSError as exc:
                if run > 1 and exc.errno == errno.EMSGSIZE:
                    # Segments above the interface MTU (DF is set): each goes alone, and
                    # fails alone, which is how a too-big packet gets lost.
                    for segment, segment_addr in datagrams[index : index + run]:
                        with contextlib.suppress(OSError):
                            sock.sendto(segment, segment_addr)
                elif run > 1 and exc.errno in (errno.EINVAL, errno.ENOPROTOOPT, errno.EIO):
                    self._gso = False  # no offload here: send them one by one from now on
                    continue
                # Otherwise a full socket buffer or a datagram above the MTU: loss,
                # which QUIC recovers from (and path MTU discovery learns from).
            index += run

    def _send_run(
        self, datagrams: list[tuple[bytes, sansquic.Address]], index: int, run: int
    ) -> None:
        """One sendto, or one GSO sendmsg of ``run`` segments from ``index``."""
        data, addr = datagrams[index]
        if run == 1:
            self.sock.sendto(data, addr)
        else:
            segments = b"".join(d for d, _ in datagrams[index : index + run])
            option = [(_SOL_UDP, _UDP_SEGMENT, struct.pack("=H", len(data)))]
            self.sock.sendmsg([segments], option, 0, addr)

    def close(self) -> None:
        self.sock.close()
