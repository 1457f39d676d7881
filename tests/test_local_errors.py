"""Every misuse raises a typed error before any state changes."""

from collections.abc import Callable
from typing import Any

import pytest

from sansquic import (
    Config,
    Connection,
    ConnectionClosed,
    LocalProtocolError,
    Role,
    StreamStoppedError,
)
from sansquic.testing import StreamSink, connected_pair


def snapshot(conn: Connection) -> Any:
    """Everything a failed command could have changed."""
    records = {
        sid: (r.send, r.recv, r.buffer.size, r.readable_signalled)
        for sid, r in conn._streams.records.items()
    }
    return (conn.state, conn.stats(), records, len(conn._events))


def assert_refused(
    conn: Connection, call: Callable[[], object], error: type = LocalProtocolError
) -> None:
    before = snapshot(conn)
    with pytest.raises(error):
        call()
    assert snapshot(conn) == before


@pytest.fixture
def pair():  # type: ignore[no-untyped-def]
    return connected_pair()


def settle(pair) -> None:  # type: ignore[no-untyped-def]
    pair.network.run_for(1.0)


def test_unknown_stream_ids(pair) -> None:  # type: ignore[no-untyped-def]
    c = pair.client
    c.open_stream()
    for sid in (4, 8, 1, 5, 3):  # never opened by us (4, 8) or by the peer (1, 5, 3)
        assert_refused(c, lambda sid=sid: c.send(sid, b"x"))
        assert_refused(c, lambda sid=sid: c.read(sid))
        assert_refused(c, lambda sid=sid: c.reset(sid))
        assert_refused(c, lambda sid=sid: c.stop(sid))


@pytest.mark.parametrize("bad", [-1, "0", None, 1.0, True])
def test_ids_that_are_not_stream_ids(pair, bad) -> None:  # type: ignore[no-untyped-def]
    c = pair.client
    assert_refused(c, lambda: c.send(bad, b"x"))
    assert_refused(c, lambda: c.read(bad))


def test_send_after_finish(pair) -> None:  # type: ignore[no-untyped-def]
    c = pair.client
    sid = c.open_stream()
    c.send(sid, b"done", end=True)
    assert_refused(c, lambda: c.send(sid, b"more"))
    assert_refused(c, lambda: c.send(sid, b"", end=True))


def test_send_after_reset_and_double_reset(pair) -> None:  # type: ignore[no-untyped-def]
    c = pair.client
    sid = c.open_stream()
    c.reset(sid, 7)
    assert_refused(c, lambda: c.send(sid, b"x"))
    assert_refused(c, lambda: c.reset(sid, 7))


def test_send_reset_on_a_receive_only_stream(pair) -> None:  # type: ignore[no-untyped-def]
    sid = pair.server.open_stream(bidirectional=False)
    pair.server.send(sid, b"to client")
    sink = StreamSink(pair.client)
    pair.network.step_hooks.append(sink.pump)
    assert pair.network.run_until(lambda: sid in sink.opened, 5)
    c = pair.client
    assert_refused(c, lambda: c.send(sid, b"x"))
    assert_refused(c, lambda: c.reset(sid))


def test_read_stop_on_a_send_only_stream(pair) -> None:  # type: ignore[no-untyped-def]
    c = pair.client
    sid = c.open_stream(bidirectional=False)
    assert_refused(c, lambda: c.read(sid))
    assert_refused(c, lambda: c.stop(sid))


def test_double_stop(pair) -> None:  # type: ignore[no-untyped-def]
    c = pair.client
    sid = c.open_stream()
    c.stop(sid, 1)
    assert_refused(c, lambda: c.stop(sid, 1))


def test_commands_on_a_closed_stream(pair) -> None:  # type: ignore[no-untyped-def]
    c = pair.client
    sid = c.open_stream(bidirectional=False)
    c.send(sid, b"bye", end=True)
    pair.network.run_for(0.1)  # once its bytes left the core, both directions are done
    assert sid not in c._streams.records
    assert_refused(c, lambda: c.send(sid, b"x"))
    assert_refused(c, lambda: c.reset(sid))
    assert c.read  # reading a closed stream is not misuse: it is simply empty
    with pytest.raises(LocalProtocolError):
        c.stop(sid)


@pytest.mark.parametrize("code", [-1, 2**62, True, "1", 1.0])
def test_bad_error_codes(pair, code) -> None:  # type: ignore[no-untyped-def]
    c = pair.client
    sid = c.open_stream()
    assert_refused(c, lambda: c.reset(sid, code))
    assert_refused(c, lambda: c.stop(sid, code))
    assert_refused(c, lambda: c.close(code))


def test_wrong_data_types_raise_type_error(pair) -> None:  # type: ignore[no-untyped-def]
    c = pair.client
    sid = c.open_stream()
    assert_refused(c, lambda: c.send(sid, "text"), TypeError)  # type: ignore[arg-type]
    assert_refused(c, lambda: c.send_datagram(12), TypeError)  # type: ignore[arg-type]
    assert_refused(c, lambda: c.read(sid, "all"), TypeError)  # type: ignore[arg-type]
    assert_refused(c, lambda: c.close(0, b"r"), TypeError)  # type: ignore[arg-type]


def test_oversized_datagram(pair) -> None:  # type: ignore[no-untyped-def]
    c = pair.client
    limit = c.max_datagram_size
    assert limit is not None and limit > 1000
    assert_refused(c, lambda: c.send_datagram(b"x" * (limit + 1)))
    c.send_datagram(b"x" * limit)  # the limit itself is fine ...
    sink = StreamSink(pair.server)
    pair.network.step_hooks.append(sink.pump)
    assert pair.network.run_until(lambda: sink.datagrams, 5)  # ... and arrives
    assert sink.datagrams == [b"x" * limit]


def test_datagram_limit_follows_the_peers_setting() -> None:
    pair = connected_pair(
        server_config=Config(dev_mode=True, trust_dev_certificate=True, max_datagram_size=100)
    )
    assert pair.client.max_datagram_size == 100
    assert_refused(pair.client, lambda: pair.client.send_datagram(b"x" * 101))


def test_datagrams_disabled_locally() -> None:
    pair = connected_pair(
        client_config=Config(dev_mode=True, trust_dev_certificate=True, datagrams=False)
    )
    assert pair.client.max_datagram_size is None
    assert_refused(pair.client, lambda: pair.client.send_datagram(b"x"))


def test_datagrams_disabled_by_the_peer() -> None:
    pair = connected_pair(
        server_config=Config(dev_mode=True, trust_dev_certificate=True, datagrams=False)
    )
    assert pair.client.max_datagram_size is None
    assert_refused(pair.client, lambda: pair.client.send_datagram(b"x"))


def test_datagram_before_the_handshake() -> None:
    pair = connected_pair(handshake=False)
    assert_refused(pair.client, lambda: pair.client.send_datagram(b"x"))


def test_connect_misuse() -> None:
    pair = connected_pair(handshake=False)
    assert_refused(pair.client, lambda: pair.client.connect(("127.0.0.1", 1), 0.0))
    server = Connection(Config(dev_mode=True, trust_dev_certificate=True), role=Role.SERVER)
    assert_refused(server, lambda: server.connect(("127.0.0.1", 1), 0.0))


def test_client_fed_before_connect() -> None:
    client = Connection(Config(dev_mode=True, trust_dev_certificate=True), server_name="localhost")
    assert_refused(client, lambda: client.receive_datagram(b"\x00" * 1200, ("1.2.3.4", 5), 0.0))
    assert_refused(client, lambda: client.open_stream())


def test_server_commands_before_a_client_arrived() -> None:
    server = Connection(Config(dev_mode=True, trust_dev_certificate=True), role=Role.SERVER)
    assert_refused(server, lambda: server.open_stream())
    assert_refused(server, lambda: server.send_datagram(b"x"))


def test_construction_misuse() -> None:
    with pytest.raises(LocalProtocolError):
        Connection(
            Config(dev_mode=True, trust_dev_certificate=True), role=Role.SERVER, server_name="x"
        )
    with pytest.raises(LocalProtocolError):
        Connection(Config(), role=Role.SERVER)  # no certificate
    with pytest.raises(TypeError):
        Connection({"dev_mode": True})  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        Connection(Config(), role="client")  # type: ignore[arg-type]


def test_send_after_the_peer_stopped_the_stream(pair) -> None:  # type: ignore[no-untyped-def]
    c, s = pair.client, pair.server
    sid = c.open_stream()
    c.send(sid, b"hello")
    sink = StreamSink(s)
    pair.network.step_hooks.append(sink.pump)
    assert pair.network.run_until(lambda: sid in sink.opened, 5)
    s.stop(sid, 42)
    client_sink = StreamSink(c)
    pair.network.step_hooks.append(client_sink.pump)
    assert pair.network.run_until(lambda: sid in client_sink.stops, 5)
    assert client_sink.stops[sid] == 42
    before = snapshot(c)
    with pytest.raises(StreamStoppedError) as info:
        c.send(sid, b"more")
    assert (info.value.stream_id, info.value.error_code) == (sid, 42)
    assert snapshot(c) == before
    c.reset(sid, 1)  # racing the peer's stop is allowed and changes nothing


def test_commands_after_close(pair) -> None:  # type: ignore[no-untyped-def]
    c = pair.client
    sid = c.open_stream()
    c.close(5, "bye")
    c.close(6, "again")  # idempotent
    for call in (
        c.open_stream,
        lambda: c.send(sid, b"x"),
        lambda: c.reset(sid),
        lambda: c.stop(sid),
        lambda: c.send_datagram(b"x"),
    ):
        with pytest.raises(ConnectionClosed) as info:
            call()
        assert (info.value.error_code, info.value.reason, info.value.by_peer) == (5, "bye", False)


def test_a_verifying_client_needs_a_server_name() -> None:
    with pytest.raises(LocalProtocolError):
        Connection(Config(), role=Role.CLIENT)
    with pytest.raises(LocalProtocolError):  # verifying against the dev authority still is
        Connection(Config(trust_dev_certificate=True), role=Role.CLIENT)
    Connection(Config(verify_peer=False), role=Role.CLIENT)  # no verification: nothing to check


def test_close_before_connect_terminates_quietly() -> None:
    client = Connection(Config(dev_mode=True, trust_dev_certificate=True), server_name="localhost")
    client.close(3, "never mind")
    assert client.state.value == "closed"
    assert client.timer() is None
    assert client.datagrams_to_send(0.0) == []
    client.handle_timer(1.0)
    event = client.next_event()
    assert event is not None and (event.error_code, event.by_peer) == (3, False)  # type: ignore[attr-defined]
    with pytest.raises(ConnectionClosed):
        client.connect(("127.0.0.1", 1), 0.0)
