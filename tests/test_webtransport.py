"""HTTP/3 + WebTransport (sansquic.H3Connection) on the simulated network."""

from __future__ import annotations

import pylsqpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

import sansquic
from sansquic import H3Connection, LocalProtocolError
from sansquic import _h3wire as w
from sansquic._h3state import MAX_PENDING, _DoneSet
from sansquic.testing import connected_pair

H3 = sansquic.Config(dev_mode=True, trust_dev_certificate=True, alpn=("h3",))


class Side:
    """One H3Connection over one core Connection, collecting its events."""

    def __init__(self, conn: sansquic.Connection, h3: H3Connection) -> None:
        self.conn = conn
        self.h3 = h3
        self.events: list[sansquic.Event] = []
        self.data: dict[int, bytearray] = {}
        self.ended: set[int] = set()
        self.datagrams: list[bytes] = []
        self.ready: list[int] = []
        self.closed: list[sansquic.WebTransportSessionClosed] = []

    def pump(self, now: float) -> list[sansquic.Event]:
        new: list[sansquic.Event] = []
        while (event := self.conn.next_event()) is not None:
            new += self.h3.handle_event(event, now)
        new += self.h3.events()  # what commands produced (a session this side closed)
        for ev in new:
            self.events.append(ev)
            if isinstance(ev, sansquic.WebTransportStreamData):
                self.data.setdefault(ev.stream_id, bytearray()).extend(ev.data)
                if ev.ended:
                    self.ended.add(ev.stream_id)
            elif isinstance(ev, sansquic.WebTransportDatagram):
                self.datagrams.append(ev.data)
            elif isinstance(ev, sansquic.WebTransportSessionReady):
                self.ready.append(ev.session_id)
            elif isinstance(ev, sansquic.WebTransportSessionClosed):
                self.closed.append(ev)
        return new


def echo(side: Side, now: float) -> None:
    """A WebTransport echo server: bidi back on the stream, uni on a new uni stream."""
    for ev in side.pump(now):
        if isinstance(ev, sansquic.WebTransportStreamData) and ev.ended:
            data = bytes(side.data.pop(ev.stream_id, b""))
            session = ev.session_id
            if ev.stream_id & 2 == 0:
                side.h3.send(ev.stream_id, data, end=True)
            else:
                out = side.h3.open_stream(session, bidirectional=False)
                side.h3.send(out, data, end=True)
        elif isinstance(ev, sansquic.WebTransportDatagram):
            side.h3.send_datagram(ev.session_id, ev.data)


def make(authenticator: sansquic.Authenticator | None = None, seed: int = 0):  # type: ignore[no-untyped-def]
    pair = connected_pair(seed=seed, client_config=H3, server_config=H3)
    client = Side(pair.client, H3Connection(pair.client, client=True))
    server = Side(
        pair.server,
        H3Connection(pair.server, client=False, authenticator=authenticator, address=("c", 1)),
    )
    net = pair.network
    net.step_hooks.append(lambda: client.pump(net.now))
    net.step_hooks.append(lambda: echo(server, net.now))
    return net, client, server


def run(net, predicate) -> None:  # type: ignore[no-untyped-def]
    assert net.run_until(predicate, timeout=10), "timed out"


def test_session_echoes_on_bidi_uni_and_datagrams_then_closes() -> None:
    net, client, server = make()
    sid = client.h3.connect("localhost", "/echo", headers=[("origin", "https://x")])
    run(net, lambda: sid in client.ready)
    assert server.ready == [sid]
    ready = next(e for e in server.events if isinstance(e, sansquic.WebTransportSessionReady))
    assert ready.path == "/echo" and ready.headers["origin"] == "https://x"
    bidi = client.h3.open_stream(sid)
    client.h3.send(bidi, b"hello " * 1000, end=True)
    uni = client.h3.open_stream(sid, bidirectional=False)
    client.h3.send(uni, b"one-way", end=True)
    client.h3.send_datagram(sid, b"dgram")
    run(net, lambda: bidi in client.ended and len(client.ended) == 2 and client.datagrams)
    assert bytes(client.data[bidi]) == b"hello " * 1000
    (back,) = client.ended - {bidi}
    assert back & 3 == 3 and bytes(client.data[back]) == b"one-way"
    assert client.datagrams == [b"dgram"]
    # Streams done both ways leave no record behind (a long session does not grow).
    assert [s for s in server.h3._streams.values() if s.kind.value == "wt"] == []
    assert [s for s in client.h3._streams.values() if s.kind.value == "wt"] == []
    client.h3.close_session(sid, 7, "bye")
    run(net, lambda: server.closed != [])
    assert server.closed[0].code == 7 and server.closed[0].reason == "bye"
    assert client.closed[0].session_id == sid
    with pytest.raises(LocalProtocolError):
        client.h3.send_datagram(sid, b"late")


def test_auth_token_from_header_or_query_or_refusal() -> None:
    seen: list[sansquic.AuthRequest] = []

    def authenticator(request, address, now):  # type: ignore[no-untyped-def]
        seen.append(request)
        if request.credentials == b"good":
            return sansquic.Identity(subject="alice")
        return sansquic.AuthRejection(code=1, reason="no")

    net, client, server = make(authenticator)
    bad = client.h3.connect("localhost", "/x")
    wrong = client.h3.connect("localhost", "/x?token=bad")
    by_query = client.h3.connect("localhost", "/x?a=1&token=good")
    by_header = client.h3.connect("localhost", "/y", headers=[("authorization", "Bearer good")])
    run(net, lambda: len(client.ready) == 2 and len(client.events) >= 4)
    refused = {
        e.session_id: e.status
        for e in client.events
        if isinstance(e, sansquic.WebTransportSessionRefused)
    }
    assert refused == {bad: 401, wrong: 403}
    assert sorted(client.ready) == sorted([by_query, by_header])
    ready = [e for e in server.events if isinstance(e, sansquic.WebTransportSessionReady)]
    assert {e.identity.subject for e in ready if e.identity} == {"alice"}
    assert all("authorization" not in e.headers for e in ready)
    assert sorted(e.path for e in ready) == ["/x?a=1", "/y"]  # the token is a secret too
    assert [r.credentials for r in seen] == [b"", b"bad", b"good", b"good"]
    # Nothing of a refused session reaches the server application.
    with pytest.raises(LocalProtocolError):
        client.h3.open_stream(bad)
    assert not any(
        isinstance(e, sansquic.WebTransportStreamOpened | sansquic.WebTransportDatagram)
        for e in server.events
    )


def test_refused_session_streams_never_reach_the_app() -> None:
    def deny(request, address, now):  # type: ignore[no-untyped-def]
        return sansquic.AuthRejection()

    net, client, server = make(deny)
    sid = client.h3.connect("localhost", "/x")
    # A stream sent for the session before the answer: raw, as a hostile client might.
    raw = client.conn.open_stream()
    client.conn.send(raw, w.encode_varint(0x41) + w.encode_varint(sid) + b"secret", end=True)
    # And one sent, then reset, then stopped: held or refused, never reported.
    gone = client.conn.open_stream()
    client.conn.send(gone, w.encode_varint(0x41) + w.encode_varint(sid) + b"x")
    client.conn.reset(gone, 7)
    client.conn.stop(gone, 7)
    client.conn.send_datagram(w.encode_datagram(sid, b"secret"))
    run(net, lambda: any(isinstance(e, sansquic.WebTransportSessionRefused) for e in client.events))
    net.run_for(0.5)
    app = (
        sansquic.WebTransportStreamOpened
        | sansquic.WebTransportStreamData
        | sansquic.WebTransportStreamReset
        | sansquic.WebTransportStreamStopped
    )
    assert not any(isinstance(e, app) for e in server.events)


def held_server() -> tuple[Recorder, H3Connection]:
    """A server H3Connection fed by hand, its client's control stream already in."""
    server_t = Recorder(3, 1)
    server = H3Connection(server_t, client=False)
    server.initiate()
    ctrl = w.encode_varint(0) + w.encode_settings({0x8: 1, 0x33: 1})
    server.receive_stream_data(2, ctrl, False, 0)
    return server_t, server


def early_uni(session_id: int, data: bytes) -> bytes:
    return w.encode_varint(w.WT_UNI_STREAM) + w.encode_varint(session_id) + data


def test_a_held_stream_the_peer_resets_is_dropped_silently_and_frees_its_hold() -> None:
    server_t, server = held_server()
    # Two 30 KB early streams, each reset: together they would fill the 64 KiB hold.
    for sid in (6, 10, 14):
        server.receive_stream_data(sid, early_uni(0, b"x" * 30000), False, 0)
        server.stream_reset(sid, 1)
    assert server.events() == []  # no session yet: nothing reaches the app
    server.receive_stream_data(18, early_uni(0, b"y" * 30000), False, 0)
    assert server_t.stopped == []  # the resets gave their bytes back: still held
    assert server.events() == []


def test_stream_auth_is_refused_on_an_h3_connection() -> None:
    pair = connected_pair(client_config=H3, server_config=H3)
    config = H3.with_token("t")
    conn = sansquic.Connection(config, role=sansquic.Role.CLIENT, server_name="x")
    with pytest.raises(LocalProtocolError):
        H3Connection(conn, client=True)
    del pair


def test_a_control_stream_without_settings_closes_the_connection() -> None:
    net, client, server = make()
    uni = client.conn.open_stream(bidirectional=False)
    client.conn.send(uni, w.encode_varint(0) + w.encode_frame(w.DATA, b"x"))
    run(net, lambda: any(isinstance(e, sansquic.H3ProtocolFailed) for e in server.events))
    failed = next(e for e in server.events if isinstance(e, sansquic.H3ProtocolFailed))
    assert failed.error_code in (w.H3_MISSING_SETTINGS, w.H3_STREAM_CREATION_ERROR)
    run(net, lambda: any(isinstance(e, sansquic.ConnectionTerminated) for e in client.events))


def test_server_opened_streams_drain_and_peer_fin_close_the_session() -> None:
    net, client, server = make()
    sid = client.h3.connect("localhost", "/")
    run(net, lambda: sid in client.ready)
    out = server.h3.open_stream(sid, bidirectional=True)
    server.h3.send(out, b"from-server", end=True)
    run(net, lambda: out in client.ended)
    assert bytes(client.data[out]) == b"from-server"
    opened = [e for e in client.events if isinstance(e, sansquic.WebTransportStreamOpened)]
    assert [(e.session_id, e.stream_id, e.bidirectional) for e in opened] == [(sid, out, True)]
    server.h3.drain_session(sid)
    run(
        net, lambda: any(isinstance(e, sansquic.WebTransportSessionDraining) for e in client.events)
    )
    # A FIN on the CONNECT stream, without a capsule, ends the session with code 0.
    client.conn.send(sid, b"", end=True)
    run(net, lambda: server.closed != [])
    assert (server.closed[0].code, server.closed[0].reason) == (0, "")
    run(net, lambda: client.closed != [])


class Recorder:
    """A transport that keeps what is sent on each stream, for feeding by hand."""

    def __init__(self, first_uni: int, first_bidi: int) -> None:
        self.next = {False: first_uni, True: first_bidi}
        self.sent: dict[int, bytearray] = {}
        self.stopped: list[int] = []

    def open_stream(self, bidirectional: bool = True, priority: int = 128) -> int:
        sid = self.next[bidirectional]
        self.next[bidirectional] += 4
        return sid

    def send(self, stream_id: int, data: bytes, end: bool = False) -> int:
        self.sent.setdefault(stream_id, bytearray()).extend(data)
        return len(data)

    def read(self, stream_id: int, max_bytes: int = -1) -> bytes:
        return b""

    def reset(self, stream_id: int, error_code: int = 0) -> None:
        pass

    def stop(self, stream_id: int, error_code: int = 0) -> None:
        self.stopped.append(stream_id)

    def send_datagram(self, data: bytes) -> None:
        pass

    def close(self, error_code: int = 0, reason: str = "") -> None:
        raise AssertionError(f"closed: {error_code:#x} {reason}")


@pytest.mark.parametrize("accept", [True, False])
def test_a_stream_that_overtakes_its_connect_is_held_until_the_session_opens(
    accept: bool,
) -> None:
    def decide(request, address, now):  # type: ignore[no-untyped-def]
        return sansquic.Identity(subject="s") if accept else sansquic.AuthRejection()

    server_t, client_t = Recorder(3, 1), Recorder(2, 0)
    server = H3Connection(server_t, client=False, authenticator=decide)
    client = H3Connection(client_t, client=True)
    sid = client.connect("localhost", "/")
    assert sid not in client_t.sent  # extended CONNECT waits for the server's SETTINGS
    server.initiate()
    client.receive_stream_data(3, bytes(server_t.sent[3]), False, 0)
    # Fed in the wrong order, as a reordering network may deliver them.
    server.receive_stream_data(4, w.encode_varint(0x41) + w.encode_varint(sid) + b"early", True, 0)
    assert server.events() == []  # nothing reaches the app before the session exists
    server.receive_stream_data(sid, bytes(client_t.sent[sid]), False, 0)
    events = server.events()
    if accept:
        kinds = [type(e).__name__ for e in events]
        assert kinds == [
            "WebTransportSessionReady",
            "WebTransportStreamOpened",
            "WebTransportStreamData",
        ]
        assert events[2] == sansquic.WebTransportStreamData(
            session_id=sid, stream_id=4, data=b"early", ended=True
        )
        server.send(4, b"reply", end=True)  # still open this way; then both ways are over
        assert server.session_of(4) is None and server_t.sent[4] == b"reply"
    else:
        assert events == [] and server_t.stopped == [4]


@pytest.mark.parametrize(
    ("stream", "data", "end", "code"),
    [
        ("bidi", w.encode_varint(w.HEADERS) + w.encode_varint(10**6), False, w.H3_FRAME_ERROR),
        ("bidi", w.encode_frame(w.DATA, b"x"), False, w.H3_FRAME_UNEXPECTED),
        ("bidi", w.encode_frame(w.HEADERS, b"\xff\xff\xff"), False, 0x200),
        ("control", b"", True, w.H3_CLOSED_CRITICAL_STREAM),
        ("control", w.encode_settings({}), False, w.H3_FRAME_UNEXPECTED),
        ("uni", w.encode_varint(0) + w.encode_settings({}), False, w.H3_STREAM_CREATION_ERROR),
    ],
)
def test_a_misbehaving_peer_gets_an_h3_error_and_a_clean_close(
    stream: str, data: bytes, end: bool, code: int
) -> None:
    net, client, server = make()
    run(net, lambda: server.h3.peer_settings is not None)
    if stream == "control":
        control = client.h3._control
        assert control is not None
        client.conn.send(control, data, end=end)
    else:
        sid = client.conn.open_stream(bidirectional=stream == "bidi")
        client.conn.send(sid, data, end=end)
    run(net, lambda: any(isinstance(e, sansquic.ConnectionTerminated) for e in client.events))
    failed = [e for e in server.events if isinstance(e, sansquic.H3ProtocolFailed)]
    assert [e.error_code for e in failed] == [code]
    closed = next(e for e in client.events if isinstance(e, sansquic.ConnectionTerminated))
    assert closed.error_code == code and closed.by_peer


def test_a_server_whose_settings_do_not_offer_webtransport_is_not_asked() -> None:
    client_t = Recorder(2, 0)
    client = H3Connection(client_t, client=True)
    sid = client.connect("localhost", "/")
    plain_h3 = w.encode_varint(w.CONTROL_STREAM) + w.encode_settings({w.SETTINGS_H3_DATAGRAM: 1})
    client.receive_stream_data(3, plain_h3, False, 0)
    assert client.events() == [sansquic.WebTransportSessionRefused(session_id=sid, status=0)]
    assert sid not in client_t.sent


def test_stream_error_codes_are_carried_in_the_webtransport_range() -> None:
    net, client, server = make()
    sid = client.h3.connect("localhost", "/")
    run(net, lambda: sid in client.ready)
    stream = client.h3.open_stream(sid)
    client.h3.send(stream, b"x")
    # The stream header must arrive first: a reset discards what was not yet sent.
    run(net, lambda: any(isinstance(e, sansquic.WebTransportStreamOpened) for e in server.events))
    client.h3.reset(stream, 42)
    client.h3.stop(stream, 7)
    run(
        net,
        lambda: (
            any(isinstance(e, sansquic.WebTransportStreamReset) for e in server.events)
            and any(isinstance(e, sansquic.WebTransportStreamStopped) for e in server.events)
        ),
    )
    reset = next(e for e in server.events if isinstance(e, sansquic.WebTransportStreamReset))
    stop = next(e for e in server.events if isinstance(e, sansquic.WebTransportStreamStopped))
    assert (reset.stream_id, reset.error_code) == (stream, 42)
    assert (stop.stream_id, stop.error_code) == (stream, 7)


@pytest.mark.parametrize(
    "headers", [[("x-a", "line\r\nbreak")], [("X-Upper", "v")], [("x-b", "\u20ac")], [("", "v")]]
)
def test_bad_request_headers_raise_before_anything_is_sent(headers: list[tuple[str, str]]) -> None:
    transport = Recorder(2, 0)
    client = H3Connection(transport, client=True)
    with pytest.raises(LocalProtocolError):
        client.connect("localhost", "/", headers=headers)
    assert transport.sent == {} and client.events() == []
    with pytest.raises(LocalProtocolError):
        client.reset(0, 2**32)


def get_headers(stream_id: int, fields: list[tuple[str, str]]) -> bytes:
    """A HEADERS frame as a peer's (static-table) QPACK encoder would send it."""
    encoder = pylsqpack.Encoder()
    encoder.apply_settings(max_table_capacity=0, blocked_streams=0)
    _, block = encoder.encode(stream_id, [(k.encode(), v.encode()) for k, v in fields])
    return w.encode_frame(w.HEADERS, block)


@pytest.mark.parametrize("session_id", [2, 1, 3, 6])
def test_an_early_stream_naming_a_stream_that_cannot_be_a_session_is_refused(
    session_id: int,
) -> None:
    server_t, server = held_server()
    # 2, 1, 3 and 6 are not client-initiated bidi ids, so none can ever be a session.
    server.receive_stream_data(6, early_uni(session_id, b"a"), False, 0)
    assert server_t.stopped == [6] and server.events() == []


def test_a_bidi_early_stream_naming_itself_is_refused() -> None:
    server_t, server = held_server()
    signal = w.encode_varint(w.WT_BIDI_SIGNAL) + w.encode_varint(8) + b"a"
    server.receive_stream_data(8, signal, False, 0)
    assert server_t.stopped == [8] and server.events() == []


@pytest.mark.parametrize(
    "fields",
    [
        [(":method", "GET"), (":path", "/"), (":scheme", "https"), (":authority", "x")],
        [(":method", "CONNECT"), (":path", "/"), (":authority", "x")],
    ],
)
def test_streams_held_for_a_request_answered_4xx_are_refused(
    fields: list[tuple[str, str]],
) -> None:
    server_t, server = held_server()
    for i in range(16):  # fill every hold slot for session 4
        server.receive_stream_data(6 + 4 * i, early_uni(4, b"a"), False, 0)
    server.receive_stream_data(4, get_headers(4, fields), True, 0)
    assert server_t.sent[4]  # answered (404 / 400)
    assert sorted(server_t.stopped) == [6 + 4 * i for i in range(16)]
    # The slots are free again: a stream for a later session is held, not refused.
    server.receive_stream_data(70, early_uni(8, b"b"), False, 0)
    assert 70 not in server_t.stopped and server.events() == []


GET = [(":method", "GET"), (":path", "/"), (":scheme", "https"), (":authority", "x")]


def test_finished_streams_behind_one_open_stream_keep_the_done_set_small() -> None:
    _, server = held_server()
    server.receive_stream_data(0, b"\x01", False, 0)  # stream 0 never completes
    for i in range(1, 3001):  # each answered 404 and forgotten
        server.receive_stream_data(4 * i, get_headers(4 * i, GET), True, 0)
    assert server._done.stored() <= 1
    assert 8 in server._done and 0 not in server._done and 4 * 3001 not in server._done


class Closing(Recorder):
    def close(self, error_code: int = 0, reason: str = "") -> None:
        self.closed = error_code


def test_too_many_unfinished_streams_below_a_finished_one_close_the_connection() -> None:
    server_t = Closing(3, 1)
    server = H3Connection(server_t, client=False)
    server.initiate()
    far = 4 * (MAX_PENDING + 2)  # every stream below it left open (a gap)
    server.receive_stream_data(far, get_headers(far, GET), True, 0)
    failed = [e for e in server.events() if isinstance(e, sansquic.H3ProtocolFailed)]
    assert [e.error_code for e in failed] == [w.H3_EXCESSIVE_LOAD] == [server_t.closed]


@given(st.lists(st.integers(min_value=0, max_value=400), max_size=80))
def test_the_done_set_answers_like_a_plain_set(ids: list[int]) -> None:
    done, model = _DoneSet(), set()
    for sid in ids:
        done.add(sid)
        model.add(sid)
    assert all((sid in done) == (sid in model) for sid in range(404))


def test_a_closed_session_resets_its_streams_before_the_close_capsule_leaves() -> None:
    # Chromium 150's renderer crashed (a null dereference) when a session's
    # RESET_STREAM came after its CLOSE_WEBTRANSPORT_SESSION capsule: the page died
    # mid-reconnect (tests/test_chromium_swarm.py cuts it twice). aioquic writes each
    # stream's frames in its service order, which had the CONNECT stream's turn first
    # once the data streams had sent since it.
    traces: list[dict[str, object]] = []
    pair = connected_pair(client_config=H3, server_config=H3.replace(qlog=traces.append))
    client = Side(pair.client, H3Connection(pair.client, client=True))
    server = Side(pair.server, H3Connection(pair.server, client=False, address=("c", 1)))
    net = pair.network

    def pump() -> None:
        client.pump(net.now)
        server.pump(net.now)

    net.step_hooks.append(pump)
    sid = client.h3.connect("localhost", "/x")
    run(net, lambda: sid in client.ready)
    streams = [client.h3.open_stream(sid) for _ in range(3)]
    for stream in streams:
        client.h3.send(stream, b"up")
    run(net, lambda: all(s in server.data for s in streams))
    for stream in [*streams, streams[0]]:  # each has its turn after the CONNECT stream's
        server.h3.send(stream, b"down")
        run(net, lambda s=stream: s in client.data)
    server.h3.close_session(sid, 3, "cut")
    run(net, lambda: client.closed != [])
    pair.server.close()
    net.run_for(5.0)
    events = traces[0]["traces"][0]["events"]  # type: ignore[index]
    sent = [
        [(f["frame_type"], f.get("stream_id"), f.get("fin")) for f in e["data"]["frames"]]
        for e in events
        if e["name"] == "transport:packet_sent"
    ]
    (closing,) = [frames for frames in sent if ("stream", sid, True) in frames]
    resets = [i for i, (kind, stream, _) in enumerate(closing) if kind == "reset_stream"]
    assert sorted(closing[i][1] for i in resets) == streams  # all in the capsule's packet
    assert max(resets) < closing.index(("stream", sid, True))
