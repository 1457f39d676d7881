"""Each way a connection ends has its ClosedBy and its own ConnectionClosed subclass."""

from __future__ import annotations

import pytest

import sansquic
from sansquic import ClosedBy, Config, Connection
from sansquic.testing import connected_pair


def _terminated(conn: Connection) -> sansquic.ConnectionTerminated:
    (event,) = [
        e for e in iter(conn.next_event, None) if isinstance(e, sansquic.ConnectionTerminated)
    ]
    return event


def _refused(conn: Connection) -> sansquic.ConnectionClosed:
    with pytest.raises(sansquic.ConnectionClosed) as info:
        conn.open_stream()
    return info.value


def test_a_local_close_and_the_peer_seeing_it() -> None:
    pair = connected_pair()
    pair.client.close(7, "done")
    pair.network.run_for(1.0)
    local, remote = _terminated(pair.client), _terminated(pair.server)
    assert (local.closed_by, local.by_peer, local.error_code) == (ClosedBy.LOCAL, False, 7)
    assert (remote.closed_by, remote.by_peer, remote.reason) == (ClosedBy.PEER, True, "done")
    error = _refused(pair.client)
    assert type(error) is sansquic.ConnectionClosed and error.closed_by is ClosedBy.LOCAL
    error = _refused(pair.server)
    assert isinstance(error, sansquic.PeerClosedError) and error.error_code == 7


def test_an_idle_timeout() -> None:
    config = Config(dev_mode=True, trust_dev_certificate=True, idle_timeout=1.0)
    pair = connected_pair(client_config=config, server_config=config)
    pair.network.run_for(5.0)
    event = _terminated(pair.client)
    assert (event.closed_by, event.error_code, event.reason) == (ClosedBy.IDLE, 0, "idle timeout")
    error = _refused(pair.client)
    assert isinstance(error, sansquic.IdleTimeoutError) and "timed out" in str(error)


def test_a_violation_is_reported_as_one() -> None:
    verifying = Config()  # trusts only the system's anchors: the dev certificate fails
    pair = connected_pair(client_config=verifying, handshake=False)
    pair.network.run_for(5.0)
    event = _terminated(pair.client)
    assert event.closed_by is ClosedBy.VIOLATION and not event.application
    error = _refused(pair.client)
    assert isinstance(error, sansquic.RemoteProtocolError)
    assert error.closed_by is ClosedBy.VIOLATION and not error.by_peer


@pytest.mark.parametrize(
    ("cls", "closed_by"),
    [
        (sansquic.ConnectionClosed, ClosedBy.LOCAL),
        (sansquic.PeerClosedError, ClosedBy.PEER),
        (sansquic.RemoteProtocolError, ClosedBy.VIOLATION),
        (sansquic.IdleTimeoutError, ClosedBy.IDLE),
        (sansquic.StatelessResetError, ClosedBy.STATELESS_RESET),
        (sansquic.PeerUnreachableError, ClosedBy.UNREACHABLE),
    ],
)
def test_each_error_class_names_its_cause(
    cls: type[sansquic.ConnectionClosed], closed_by: ClosedBy
) -> None:
    error = cls(5, "why", application=False)
    assert error.closed_by is closed_by and isinstance(error, sansquic.ConnectionClosed)
    assert error.by_peer is (closed_by in (ClosedBy.PEER, ClosedBy.STATELESS_RESET))
    assert "why" in str(error) and "0x5" in str(error)


def test_an_unreachable_peer_ends_the_handshake_at_once() -> None:
    endpoint = sansquic.Endpoint(Config(dev_mode=True), now=0.0)
    server = ("127.0.0.1", 4433)
    conn = endpoint.connect(server, 0.0, server_name="localhost")
    assert endpoint.datagrams_to_send(0.0)  # the Initial went out
    endpoint.peer_unreachable(("127.0.0.1", 4434), 0.01)  # another peer: not this one's
    assert conn.state is sansquic.ConnectionState.HANDSHAKING
    endpoint.peer_unreachable(server, 0.02)
    assert conn.state is sansquic.ConnectionState.CLOSED and not endpoint.connections
    assert endpoint.datagrams_to_send(0.03) == []  # no CONNECTION_CLOSE: nobody is there
    event = _terminated(conn)
    assert (event.closed_by, event.by_peer) == (ClosedBy.UNREACHABLE, False)
    error = _refused(conn)
    assert isinstance(error, sansquic.PeerUnreachableError) and "127.0.0.1:4433" in str(error)


def test_an_unreachable_report_never_ends_a_server_handshake() -> None:
    # Anyone who knows a client's address can forge the ICMP about it.
    pair = connected_pair(handshake=False)
    pair.network.run_until(lambda: pair.server.state is sansquic.ConnectionState.HANDSHAKING, 5)
    pair.server.peer_unreachable(sansquic.testing.CLIENT_ADDRESS, pair.network.now)
    assert pair.server.stats().unreachable_reports == 1
    connected = sansquic.ConnectionState.CONNECTED
    assert pair.network.run_until(
        lambda: pair.client.state is connected and pair.server.state is connected, 5
    )


def test_an_unreachable_report_after_the_server_answered_is_only_counted() -> None:
    server = ("127.0.0.1", 4433)
    conn = sansquic.Connection(Config(verify_peer=False), role=sansquic.Role.CLIENT)
    conn.connect(server, 0.0)
    conn.receive_datagram(b"\x40" + bytes(40), server, 0.01)  # something came from there
    conn.peer_unreachable(server, 0.02)
    assert conn.state is sansquic.ConnectionState.HANDSHAKING
    assert conn.stats().unreachable_reports == 1


def test_an_unreachable_report_after_the_handshake_is_only_counted() -> None:
    pair = connected_pair()
    address = pair.client.remote_address
    assert address is not None
    for _ in range(3):  # spoofed or transient: ICMP cannot end an established connection
        pair.client.peer_unreachable(address, pair.network.now)
    pair.network.run_for(0.5)
    assert pair.client.state is sansquic.ConnectionState.CONNECTED
    assert pair.client.stats().unreachable_reports == 3
    stream = pair.client.open_stream()
    pair.client.send(stream, b"still here", end=True)
    pair.network.run_for(0.5)
    assert pair.client.stats().stream_bytes_sent == len(b"still here")
