"""The runtimes' UDP socket reports ICMP port unreachable, and drains it (Linux)."""

import select
import socket
import sys

import pytest
from sansquic_runtime import UdpSocket

pytestmark = pytest.mark.skipif(
    sys.platform != "linux", reason="only Linux reports ICMP errors on an unconnected socket"
)


def _closed_port() -> tuple[str, int]:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        host, port = probe.getsockname()[:2]
        return (host, port)


def test_a_refused_datagram_is_reported_once_and_leaves_nothing_readable() -> None:
    sock = UdpSocket(socket.AF_INET, ("127.0.0.1", 0))
    try:
        closed = _closed_port()
        sock.send([(b"x" * 100, closed), (b"y" * 100, closed)])
        assert select.select([sock], [], [], 5)[0]  # the error wakes a reader
        assert sock.receive_ready() == []  # no datagram: the error queue only
        assert sock.take_unreachable() == [closed]  # once, however many were refused
        assert sock.take_unreachable() == []
        # Drained: a loop waiting for readability would not wake again and again.
        assert select.select([sock], [], [], 0.2)[0] == []
    finally:
        sock.close()


def test_datagrams_still_arrive_beside_an_error() -> None:
    sock = UdpSocket(socket.AF_INET, ("127.0.0.1", 0))
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        peer.bind(("127.0.0.1", 0))
        closed = _closed_port()
        sock.send([(b"to nobody", closed)])
        assert select.select([sock], [], [], 5)[0]
        peer.sendto(b"hello", sock.address)
        seen: list[bytes] = []
        for _ in range(10):  # the error and the datagram may take two passes
            seen += [data for data, _ in sock.receive_ready()]
            if seen and select.select([sock], [], [], 0.1)[0] == []:
                break
        assert seen == [b"hello"]
        assert sock.take_unreachable() == [closed]
    finally:
        peer.close()
        sock.close()


def test_an_error_a_send_took_first_is_still_drained() -> None:
    sock = UdpSocket(socket.AF_INET, ("127.0.0.1", 0))
    try:
        closed = _closed_port()
        sock.send([(b"x", closed)])
        assert select.select([sock], [], [], 5)[0]
        # The next send takes the pending error (and sansquic drops it, as loss); the
        # queued report stays, and the socket stays readable until it is read.
        with pytest.raises(ConnectionRefusedError):
            sock.sock.sendto(b"y", closed)
        assert sock.receive_ready() == []
        assert closed in sock.take_unreachable()
        assert select.select([sock], [], [], 0.2)[0] == []
    finally:
        sock.close()


def test_an_error_about_one_peer_does_not_cost_another_peer_its_datagrams() -> None:
    sock = UdpSocket(socket.AF_INET, ("127.0.0.1", 0))
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        peer.bind(("127.0.0.1", 0))
        peer.settimeout(5)
        healthy = peer.getsockname()[:2]
        closed = _closed_port()
        for round_ in range(5):
            sock.send([(b"to nobody", closed)])
            assert select.select([sock], [], [], 5)[0]  # the error is pending now
            # One datagram, then a run the kernel may send as one GSO burst.
            sock.send([(b"single %d" % round_, healthy)])
            sock.send([(b"run %d" % round_, healthy)] * 4)
            got = [peer.recv(100) for _ in range(5)]
            assert got == [b"single %d" % round_] + [b"run %d" % round_] * 4
    finally:
        peer.close()
        sock.close()


def test_queued_errors_are_drained_while_datagrams_keep_arriving() -> None:
    sock = UdpSocket(socket.AF_INET, ("127.0.0.1", 0))
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        peer.bind(("127.0.0.1", 0))
        closed = _closed_port()
        for i in range(200):
            sock.send([(b"to nobody", closed)])
            peer.sendto(b"%d" % i, sock.address)
            select.select([sock], [], [], 1)
            sock.receive_ready()  # never empty for long: traffic flows
        assert sock.take_unreachable() == [closed]
        # Nothing left on the error queue to crowd out the receive buffer.
        with pytest.raises(BlockingIOError):
            sock.sock.recvmsg(0, 512, 0x2000)  # MSG_ERRQUEUE
    finally:
        peer.close()
        sock.close()
