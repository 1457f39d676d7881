"""UDP generic receive offload in the runtime socket layer: coalesced reads are split
back into the datagrams that were sent, the short last one included."""

from __future__ import annotations

import errno
import select
import socket
import struct
import sys
from typing import Any

import pytest
from sansquic_runtime import UdpSocket, _udp

PAYLOADS = [bytes([n]) * 1000 for n in range(1, 6)] + [b"\x07" * 300]  # short last segment


def _receive_all(sock: UdpSocket, count: int) -> list[bytes]:
    got: list[bytes] = []
    for _ in range(100):  # bounded: loopback delivers at once, this is slack
        if len(got) >= count:
            break
        select.select([sock.sock], [], [], 1.0)
        got += [data for data, _ in sock.receive_ready()]
    return got


def _send_segmented(sender: socket.socket, payloads: list[bytes], address: Any) -> None:
    option = [(_udp._SOL_UDP, _udp._UDP_SEGMENT, struct.pack("=H", len(payloads[0])))]
    try:
        sender.sendmsg([b"".join(payloads)], option, 0, address)
    except OSError as exc:
        if exc.errno in (errno.EINVAL, errno.ENOPROTOOPT, errno.EIO):
            pytest.skip(f"this kernel has no UDP segmentation offload ({exc})")
        raise


def _burst(sock: UdpSocket, sender: socket.socket) -> None:
    """Enough datagrams in one batch to switch GRO on (where it may be used)."""
    burst = [b"burst %03d" % n for n in range(_udp._GRO_BURST + 1)]  # one size, one sender
    for data in burst:
        sender.sendto(data, sock.address)
    assert _receive_all(sock, len(burst)) == burst


@pytest.mark.skipif(sys.platform != "linux", reason="UDP_SEGMENT and UDP_GRO are Linux's")
@pytest.mark.parametrize("gro", [True, False])
def test_a_segmented_send_arrives_as_the_datagrams_sent(
    gro: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(UdpSocket, "gro", gro)
    receiver = UdpSocket(socket.AF_INET, ("127.0.0.1", 0))
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        assert not receiver.gro_reads  # off until a burst comes
        _burst(receiver, sender)
        assert receiver.gro_reads is (gro and receiver.gro)  # on: unless the kernel refused
        _send_segmented(sender, PAYLOADS, receiver.address)
        sender.sendto(b"single", receiver.address)  # no control message: one datagram
        assert _receive_all(receiver, len(PAYLOADS) + 1) == [*PAYLOADS, b"single"]
    finally:
        sender.close()
        receiver.close()


def _gro_option(sock: UdpSocket) -> int:
    return sock.sock.getsockopt(_udp._SOL_UDP, _udp._UDP_GRO)


@pytest.mark.skipif(sys.platform != "linux", reason="UDP_GRO is Linux's")
def test_gro_goes_on_for_bursts_and_off_when_they_stop() -> None:
    """On loopback a GSO send reaches a GRO socket whole (the split is ours to do);
    once reads stop coalescing, the option goes off and plain reads come back."""
    receiver = UdpSocket(socket.AF_INET, ("127.0.0.1", 0))
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        _burst(receiver, sender)
        if not receiver.gro:
            pytest.skip("this kernel refused UDP_GRO (before Linux 5.0)")
        assert receiver.gro_reads and _gro_option(receiver) == 1
        _send_segmented(sender, PAYLOADS, receiver.address)
        select.select([receiver.sock], [], [], 1.0)
        size, ancillary, _, _ = receiver.sock.recvmsg_into(
            [bytearray(65_535)], _udp._GRO_CMSG_SPACE
        )
        assert size == sum(map(len, PAYLOADS))  # one read for all six
        assert [(level, kind) for level, kind, _ in ancillary] == [(_udp._SOL_UDP, _udp._UDP_GRO)]
        assert _udp._GRO_SIZE.unpack_from(ancillary[0][2])[0] == 1000
        for n in range(_udp._GRO_QUIET_BATCHES):
            sender.sendto(b"quiet %d" % n, receiver.address)
            assert _receive_all(receiver, 1) == [b"quiet %d" % n]
        assert _gro_option(receiver) == 0
        assert receiver.gro_reads  # until a read finds the queue dry after the switch
        assert receiver.receive_ready() == [] and not receiver.gro_reads
        _send_segmented(sender, PAYLOADS, receiver.address)  # the kernel splits it now
        assert _receive_all(receiver, len(PAYLOADS)) == PAYLOADS
    finally:
        sender.close()
        receiver.close()


class _CoalescingSocket:
    """Stands in for a GRO socket: each read is one of ``reads``, then EAGAIN."""

    def __init__(self, reads: list[tuple[bytes, int | None]]) -> None:
        self.reads = reads

    def close(self) -> None:
        pass

    def recvmsg(self, *args: object) -> tuple[Any, ...]:
        raise BlockingIOError  # the error queue: empty

    def recvmsg_into(self, buffers: list[memoryview], ancbufsize: int) -> tuple[Any, ...]:
        if not self.reads:
            raise BlockingIOError
        payload, segment = self.reads.pop(0)
        buffers[0][: len(payload)] = payload
        ancillary = (
            [] if segment is None else [(_udp._SOL_UDP, _udp._UDP_GRO, struct.pack("=i", segment))]
        )
        return len(payload), ancillary, 0, ("10.0.0.1", 4433)


def test_coalesced_reads_are_split_at_the_segment_size() -> None:
    sock = UdpSocket(socket.AF_INET, ("127.0.0.1", 0))
    try:
        sock.sock.close()
        fake: Any = _CoalescingSocket(
            [
                (b"".join(PAYLOADS), 1000),
                (b"x" * 1200, None),  # not coalesced
                (b"y" * 2400, 1200),  # exactly two, no short tail
                (b"", None),  # an empty datagram carries nothing
            ]
        )
        sock.sock = fake
        sock.gro = sock.gro_reads = sock._gro_on = True
        batch = sock.receive_ready()
    finally:
        sock.close()
    assert [data for data, _ in batch] == [*PAYLOADS, b"x" * 1200, b"y" * 1200, b"y" * 1200]
    assert {addr for _, addr in batch} == {("10.0.0.1", 4433)}
