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


def safe_config(config: sansquic.Config, sock: UdpSocket) -> sansquic.Config:
    """``config`` as far as ``sock`` can carry it: 1200-byte packets where DF is not set."""
    if sock.dont_fragment or config.max_udp_payload_size == 1200:
        return config
    return config.replace(max_udp_payload_size=1200)


class UdpSocket:
    """A bound, non-blocking UDP socket with batched receive and send."""

    #: Set to False before opening sockets to send every datagram on its own (for measuring).
    gso = True

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
        view = getattr(_receive_buffers, "view", None)
        if view is None:
            view = _receive_buffers.view = memoryview(bytearray(_RECV_SIZE))
        recv_into = self.sock.recvfrom_into
        while len(batch) < _MAX_BATCH:
            try:
                size, addr = recv_into(view)
                data = view[:size].tobytes()
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                if exc.errno in (errno.EBADF, errno.ENOTSOCK):
                    return batch  # closed under us: nothing more will come
                continue  # an ICMP error surfacing on UDP: the error queue has it
            batch.append((data, (addr[0], addr[1])))
        if self._errors:
            # Every wake: queued ICMP errors are charged to the receive buffer, so left
            # there while traffic flows they would crowd out datagrams, and a wake with
            # nothing to read may be the error queue alone. Empty, this is one EAGAIN.
            self._drain_errors()
        return batch

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
