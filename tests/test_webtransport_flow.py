"""WebTransport session flow control and HTTP/3 GOAWAY (draft-ietf-webtrans-http3 5,
RFC 9114 5.2) in sansquic.H3Connection, on the simulated network."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

import sansquic
from sansquic import H3Connection, SessionLimits
from sansquic import _h3wire as w
from sansquic._wtflow import FlowViolation, SessionFlow
from sansquic.testing import connected_pair

from .test_webtransport import H3, Recorder, Side, echo, run

TIGHT = SessionLimits(max_data=8192, max_streams_bidi=2, max_streams_uni=2)
OFF = SessionLimits(max_data=0, max_streams_bidi=0, max_streams_uni=0)


def make(server_limits: SessionLimits = TIGHT, client_limits: SessionLimits | None = None):  # type: ignore[no-untyped-def]
    pair = connected_pair(seed=1, client_config=H3, server_config=H3)
    client = Side(pair.client, H3Connection(pair.client, client=True, session_limits=client_limits))
    server = Side(
        pair.server, H3Connection(pair.server, client=False, session_limits=server_limits)
    )
    net = pair.network
    net.step_hooks.append(lambda: client.pump(net.now))
    net.step_hooks.append(lambda: echo(server, net.now))
    return net, client, server


def session(net, client) -> int:  # type: ignore[no-untyped-def]
    sid: int = client.h3.connect("localhost", "/")
    run(net, lambda: sid in client.ready)
    return sid


def raw_bidi(client: Side, sid: int, data: bytes = b"", end: bool = False) -> int:
    """A session stream opened on the QUIC connection itself, past the layer's checks."""
    stream = client.conn.open_stream()
    client.conn.send(stream, w.encode_varint(w.WT_BIDI_SIGNAL) + w.encode_varint(sid) + data, end)
    return stream


def capsule(client: Side, sid: int, raw: bytes) -> None:
    client.conn.send(sid, w.encode_frame(w.DATA, raw))


def violations(side: Side) -> list[sansquic.WebTransportSessionClosed]:
    return [c for c in side.closed if c.violation is not None]


# -- the wire ----------------------------------------------------------------------------

KINDS = sorted(w.FLOW_CAPSULES)


@given(st.sampled_from(KINDS), st.binary(max_size=12))
def test_the_flow_capsule_parser_returns_a_value_or_a_format_error(kind: int, data: bytes) -> None:
    try:
        value = w.parse_flow_capsule(kind, data)
    except w.H3FormatError:
        return
    assert 0 <= value <= w.MAX_VARINT
    assert w.decode_varint(data) == (value, len(data))  # exactly one varint, nothing after


@given(st.sampled_from(KINDS), st.integers(0, w.MAX_VARINT))
def test_flow_capsules_round_trip_and_stream_counts_stop_at_2_to_the_60(
    kind: int, value: int
) -> None:
    counts = kind not in (w.WT_MAX_DATA, w.WT_DATA_BLOCKED)
    if counts and value > w.MAX_STREAM_COUNT:
        with pytest.raises(w.H3FormatError):
            w.encode_flow_capsule(kind, value)
        with pytest.raises(w.H3FormatError):
            w.parse_flow_capsule(kind, w.encode_varint(value))
        return
    ((got_kind, payload),) = w.CapsuleReader().feed(w.encode_flow_capsule(kind, value))
    assert got_kind == kind and w.parse_flow_capsule(kind, payload) == value


@given(st.binary(max_size=10))
def test_the_goaway_parser_takes_exactly_one_varint(data: bytes) -> None:
    whole = w.decode_varint(data)
    if whole is None or whole[1] != len(data):
        with pytest.raises(w.H3FormatError):
            w.parse_goaway(data)
        return
    ident = w.parse_goaway(data)
    assert ident == whole[0]
    ((kind, payload),) = w.FrameReader().feed(w.encode_goaway(ident))
    assert kind == w.GOAWAY and w.parse_goaway(payload) == ident


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["data", "open", "done", "max_data", "max_streams"]),
            st.integers(0, 5000),
        ),
        max_size=60,
    )
)
def test_session_flow_never_lets_the_peer_past_what_was_announced(
    ops: list[tuple[str, int]],
) -> None:
    """Whatever the peer does, it never gets more than the window ahead of what was
    consumed, the limits announced only grow, and a violation is always raised."""
    flow = SessionFlow(
        SessionLimits(max_data=1000, max_streams_bidi=3), {w.SETTINGS_WT_INITIAL_MAX_DATA: 10}
    )
    announced_data, announced_streams = flow.recv_max, flow.recv_max_streams[0]
    for op, n in ops:
        try:
            if op == "data":
                out = flow.peer_data(n)
            elif op == "open":
                out = b""
                flow.peer_stream(True)
            elif op == "done":
                if flow.peer_done[0] >= flow.peer_opened[0]:
                    continue
                out = flow.peer_stream_done(True)
            elif op == "max_data":
                flow.capsule(w.WT_MAX_DATA, n)
                continue
            else:
                flow.capsule(w.WT_MAX_STREAMS_BIDI, n)
                continue
        except FlowViolation:
            continue
        if out:
            ((kind, payload),) = w.CapsuleReader().feed(out)
            value = w.parse_flow_capsule(kind, payload)
            if kind == w.WT_MAX_DATA:
                assert value > announced_data
                announced_data = value
            else:
                assert kind == w.WT_MAX_STREAMS_BIDI and value > announced_streams
                announced_streams = value
        assert flow.received <= announced_data <= flow.received + 1000
        assert flow.peer_opened[0] <= announced_streams <= flow.peer_done[0] + 3


# -- enforcing this side's limits against the peer ---------------------------------------


def test_a_peer_over_the_stream_limit_loses_the_session_not_the_connection() -> None:
    net, client, server = make()
    sid = session(net, client)
    streams = [raw_bidi(client, sid) for _ in range(3)]  # the limit is 2
    run(net, lambda: violations(server) != [])
    (closed,) = violations(server)
    assert closed.violation == w.WT_FLOW_CONTROL_ERROR and "2 allowed" in closed.reason
    opened = [
        e.stream_id for e in server.events if isinstance(e, sansquic.WebTransportStreamOpened)
    ]
    assert opened == streams[:2]  # the one over the limit never reached the app
    assert server.h3._sessions == {}
    assert [s for s in server.h3._streams.values() if s.kind.value == "wt"] == []
    run(net, lambda: client.closed != [])  # the client hears it as a reset CONNECT stream
    again = session(net, client)  # the connection is fine
    bidi = client.h3.open_stream(again)
    client.h3.send(bidi, b"still here", end=True)
    run(net, lambda: bidi in client.ended)
    assert bytes(client.data[bidi]) == b"still here"


def recorded_pair(client_limits: SessionLimits | None = None):  # type: ignore[no-untyped-def]
    """A server H3Connection on a Recorder, and requests made by a client one, fed by hand;
    the client's SETTINGS (offering flow control) have reached the server."""
    server_t, client_t = Recorder(3, 1), Recorder(2, 0)
    server = H3Connection(server_t, client=False, session_limits=TIGHT)
    client = H3Connection(client_t, client=True, session_limits=client_limits)
    server.initiate()
    client.initiate()
    client.receive_stream_data(3, bytes(server_t.sent[3]), False, 0)  # the server's SETTINGS
    server.receive_stream_data(2, bytes(client_t.sent[2]), False, 0)  # the client's
    return server, server_t, client, client_t


def test_streams_that_overtake_their_connect_count_when_released() -> None:
    server, server_t, client, client_t = recorded_pair()
    sid = client.connect("localhost", "/")
    for stream in (4, 8, 12):  # three early streams; the limit is two
        header = w.encode_varint(w.WT_BIDI_SIGNAL) + w.encode_varint(sid)
        server.receive_stream_data(stream, header + b"early", False, 0)
    assert server.events() == [] and server._held_bytes == 15
    server.receive_stream_data(sid, bytes(client_t.sent[sid]), False, 0)
    events = server.events()
    opened = [e.stream_id for e in events if isinstance(e, sansquic.WebTransportStreamOpened)]
    assert opened == [4, 8]
    closed = events[-1]
    assert isinstance(closed, sansquic.WebTransportSessionClosed)
    assert closed.violation == w.WT_FLOW_CONTROL_ERROR
    assert server._held_bytes == 0 and list(server._streams) == [2] and 12 in server_t.stopped


def test_a_peer_over_the_data_limit_loses_the_session_and_credit_follows_consumption() -> None:
    server, server_t, client, client_t = recorded_pair()
    sid = client.connect("localhost", "/")
    server.receive_stream_data(sid, bytes(client_t.sent[sid]), False, 0)
    header = w.encode_varint(w.WT_BIDI_SIGNAL) + w.encode_varint(sid)

    def capsules() -> list[tuple[int, int]]:
        frames = w.FrameReader().feed(bytes(server_t.sent[sid]))
        reader = w.CapsuleReader()
        found = [c for kind, data in frames if kind == w.DATA for c in reader.feed(data)]
        return [(kind, w.parse_flow_capsule(kind, value)) for kind, value in found]

    server.receive_stream_data(4, header + b"a" * 4000, False, 0)
    assert capsules() == []  # under half the 8 KiB window
    server.receive_stream_data(4, b"b" * 200, False, 0)
    assert capsules() == [(w.WT_MAX_DATA, 4200 + 8192)]
    server.events()
    server.receive_stream_data(8, header + b"c" * 9000, False, 0)  # 13,200: over 12,392
    events = server.events()
    assert [type(e).__name__ for e in events] == [
        "WebTransportStreamOpened",
        "WebTransportSessionClosed",
    ]
    assert "over the 12392 allowed" in events[-1].reason  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("raw", "text"),
    [
        (w.encode_flow_capsule(w.WT_MAX_DATA, 10), "lowers"),
        (w.encode_capsule(w.WT_MAX_STREAM_DATA, w.encode_varint(99)), "HTTP/2"),
        (w.encode_capsule(w.WT_STREAM_DATA_BLOCKED, w.encode_varint(1)), "HTTP/2"),
        (w.encode_capsule(w.WT_MAX_STREAMS_UNI, w.encode_varint(1 << 61)), "2**60"),
        (w.encode_capsule(w.WT_MAX_DATA, b"\x01\x02"), "exactly one varint"),
    ],
)
def test_a_broken_flow_capsule_ends_the_session(raw: bytes, text: str) -> None:
    net, client, server = make()
    sid = session(net, client)
    capsule(client, sid, raw)
    run(net, lambda: violations(server) != [])
    assert text in violations(server)[0].reason


def test_a_flow_capsule_repeating_the_limit_is_ignored() -> None:
    net, client, server = make()
    sid = session(net, client)
    flow = server.h3._sessions[sid].flow
    assert flow is not None
    limits = (flow.send_max, *flow.send_max_streams)
    capsule(client, sid, w.encode_flow_capsule(w.WT_MAX_DATA, limits[0]))
    capsule(client, sid, w.encode_flow_capsule(w.WT_MAX_STREAMS_BIDI, limits[1]))
    capsule(client, sid, w.encode_flow_capsule(w.WT_MAX_DATA, limits[0] + 1))
    net.run_for(0.5)
    assert violations(server) == []
    assert (flow.send_max, *flow.send_max_streams) == (limits[0] + 1, *limits[1:])


def test_without_flow_control_on_both_sides_nothing_is_counted_and_capsules_are_ignored() -> None:
    net, client, server = make(server_limits=TIGHT, client_limits=OFF)
    sid = session(net, client)
    assert server.h3._sessions[sid].flow is None and client.h3._sessions[sid].flow is None
    capsule(client, sid, w.encode_flow_capsule(w.WT_MAX_DATA, 1))  # would be a violation
    streams = [raw_bidi(client, sid, b"y" * 10_000, end=True) for _ in range(4)]

    def ended() -> set[int]:
        data = [e for e in server.events if isinstance(e, sansquic.WebTransportStreamData)]
        return {e.stream_id for e in data if e.ended}

    run(net, lambda: ended() == set(streams))
    assert violations(server) == [] and sid in server.h3._sessions


# -- this side waiting for the peer's credit ----------------------------------------------


def test_credit_returns_as_streams_end_and_data_is_consumed() -> None:
    net, client, server = make()
    sid = session(net, client)

    def credits() -> int:
        return sum(isinstance(e, sansquic.WebTransportSessionCredit) for e in client.events)

    payload = bytes(range(256)) * 200  # 51,200 bytes: six windows of 8 KiB
    waits = 0
    for _ in range(6):  # three times the stream limit, one after another
        stream = client.h3.open_stream(sid)
        queued = 0
        while queued < len(payload):
            before = credits()
            queued += client.h3.send(stream, payload[queued:], end=True)
            if queued < len(payload):  # blocked: the server's WT_MAX_DATA lets it go on
                waits += 1
                run(net, lambda n=before: credits() > n)  # type: ignore[misc]
        run(net, lambda s=stream: s in client.ended)  # type: ignore[misc]
        assert bytes(client.data.pop(stream)) == payload
        run(net, lambda: client.h3.can_open_stream(sid))
    assert waits >= 6  # the data limit really held the sender back
    assert violations(server) == [] and violations(client) == []


def test_an_open_past_the_peers_stream_limit_raises_before_opening() -> None:
    net, client, _ = make()
    sid = session(net, client)
    held = [client.h3.open_stream(sid) for _ in range(2)]
    assert not client.h3.can_open_stream(sid)
    streams = dict(client.h3._streams)
    with pytest.raises(sansquic.SessionBlocked) as info:
        client.h3.open_stream(sid)
    assert info.value.limit == 2 and info.value.bidirectional
    assert client.h3._streams == streams  # nothing was opened
    assert client.h3.can_open_stream(sid, bidirectional=False)  # uni has its own count
    for stream in held:
        client.h3.send(stream, b"done", end=True)
    run(net, lambda: any(isinstance(e, sansquic.WebTransportSessionCredit) for e in client.events))
    run(net, lambda: client.h3.can_open_stream(sid))
    client.h3.open_stream(sid)


def test_send_credit_reports_the_peers_data_limit() -> None:
    net, client, _ = make()
    sid = session(net, client)
    assert client.h3.send_credit(sid) == 8192
    stream = client.h3.open_stream(sid)
    assert client.h3.reserve(stream, 5000) == 5000
    assert client.h3.reserve(stream, 5000) == 3192  # and a WT_DATA_BLOCKED goes out
    assert client.h3.send_credit(sid) == 0
    with pytest.raises(sansquic.LocalProtocolError):
        client.h3.reserve(stream, -1)


# -- GOAWAY ---------------------------------------------------------------------------


def test_server_goaway_drains_open_sessions_and_refuses_new_ones() -> None:
    net, client, server = make(server_limits=SessionLimits())
    sid = session(net, client)
    ident = server.h3.goaway()
    assert ident == sid + 4
    run(net, lambda: any(isinstance(e, sansquic.H3GoAway) for e in client.events))
    goaway = next(e for e in client.events if isinstance(e, sansquic.H3GoAway))
    assert goaway.identifier == ident
    drains = [e for e in client.events if isinstance(e, sansquic.WebTransportSessionDraining)]
    assert [e.session_id for e in drains] == [sid]
    with pytest.raises(sansquic.LocalProtocolError, match="GOAWAY"):
        client.h3.connect("localhost", "/")
    bidi = client.h3.open_stream(sid)  # the open session still works
    client.h3.send(bidi, b"after goaway", end=True)
    run(net, lambda: bidi in client.ended)
    assert bytes(client.data[bidi]) == b"after goaway"


def test_a_connect_at_or_above_the_goaway_id_is_rejected_unprocessed() -> None:
    server, server_t, client, client_t = recorded_pair()
    first, second = client.connect("localhost", "/"), client.connect("localhost", "/b")
    server.receive_stream_data(first, bytes(client_t.sent[first]), False, 0)
    assert server.goaway() == first + 4 == second
    server.receive_stream_data(second, bytes(client_t.sent[second]), False, 0)
    ready = [e for e in server.events() if isinstance(e, sansquic.WebTransportSessionReady)]
    assert [e.session_id for e in ready] == [first]
    assert second in server_t.stopped and second not in server_t.sent  # no answer: unprocessed
    assert second not in server._streams


def test_a_request_the_goaway_did_not_let_through_is_refused_with_status_0() -> None:
    net, client, server = make()
    run(net, lambda: server.h3.peer_settings is not None)
    server.h3.goaway()  # before any request: nothing is processed
    sid = client.h3.connect("localhost", "/")
    run(net, lambda: any(isinstance(e, sansquic.WebTransportSessionRefused) for e in client.events))
    refused = next(e for e in client.events if isinstance(e, sansquic.WebTransportSessionRefused))
    assert (refused.session_id, refused.status) == (sid, 0)
    run(net, lambda: sid not in client.h3._streams)
    assert server.ready == [] and client.ready == []


@pytest.mark.parametrize(("first", "second"), [(8, 12), (3, None)])
def test_a_goaway_that_goes_up_or_names_no_request_closes_the_connection(
    first: int, second: int | None
) -> None:
    net, client, server = make()
    run(net, lambda: client.h3.peer_settings is not None)
    control = server.h3._control
    assert control is not None
    server.conn.send(control, w.encode_goaway(first))
    if second is not None:
        server.conn.send(control, w.encode_goaway(second))
    run(net, lambda: any(isinstance(e, sansquic.H3ProtocolFailed) for e in client.events))
    failed = next(e for e in client.events if isinstance(e, sansquic.H3ProtocolFailed))
    assert failed.error_code == w.H3_ID_ERROR


def test_goaway_ids_only_go_down_and_the_client_sends_a_push_id() -> None:
    net, client, server = make()
    first = session(net, client)
    second = session(net, client)
    assert server.h3.goaway() == second + 4
    assert server.h3.goaway() == second + 4
    assert client.h3.goaway() == 0
    run(net, lambda: any(isinstance(e, sansquic.H3GoAway) for e in server.events))
    drains = {
        e.session_id for e in server.events if isinstance(e, sansquic.WebTransportSessionDraining)
    }
    assert drains == {first, second}


def test_a_connect_the_server_resets_unanswered_is_refused_not_closed() -> None:
    _, _, client, _ = recorded_pair()
    sid = client.connect("localhost", "/")
    client.stream_reset(sid, w.H3_REQUEST_REJECTED)  # as a server past its GOAWAY does
    assert client.events() == [sansquic.WebTransportSessionRefused(session_id=sid, status=0)]
    assert sid not in client._sessions and sid not in client._streams


def test_repeated_and_lowered_goaways_are_told_once_each() -> None:
    _, _, client, _ = recorded_pair()
    for ident in (8, 8, 8, 4, 4):
        client._control_frame(w.GOAWAY, w.encode_varint(ident))
    goaways = [e for e in client.events() if isinstance(e, sansquic.H3GoAway)]
    assert [e.identifier for e in goaways] == [8, 4]
