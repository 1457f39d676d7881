"""The WebSocket fallback's pure parts: framing, the mux, handshake auth and the race."""

from __future__ import annotations

import inspect

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import sansquic
from sansquic.websocket import (
    INITIAL_WINDOW,
    Frame,
    FrameError,
    FrameKind,
    Mux,
    Race,
    Transport,
    authenticate_handshake,
    encode_frame,
    handshake_headers,
    parse_frame,
    rejection_from_headers,
    rejection_headers,
)

# -- frames ----------------------------------------------------------------------------------


@given(st.binary(max_size=64))
def test_parse_frame_takes_any_bytes(data: bytes) -> None:
    try:
        frame = parse_frame(data)
    except FrameError:
        return
    assert encode_frame(frame) == data  # what parses re-encodes to the same bytes


frames = st.one_of(
    st.builds(
        Frame,
        kind=st.sampled_from([FrameKind.DATA]),
        stream_id=st.integers(0, 2**32 - 1),
        data=st.binary(max_size=32),
    ),
    st.builds(Frame, kind=st.just(FrameKind.FIN), stream_id=st.integers(0, 2**32 - 1)),
    st.builds(
        Frame,
        kind=st.sampled_from([FrameKind.RESET, FrameKind.STOP, FrameKind.CREDIT]),
        stream_id=st.integers(0, 2**32 - 1),
        number=st.integers(0, 2**32 - 1),
    ),
    st.builds(Frame, kind=st.just(FrameKind.DATAGRAM), data=st.binary(max_size=32)),
)


@given(frames)
def test_frames_round_trip(frame: Frame) -> None:
    assert parse_frame(encode_frame(frame)) == frame


def test_frames_that_cannot_be_encoded_raise() -> None:
    for bad in (
        Frame(kind=FrameKind.DATA, stream_id=2**32),
        Frame(kind=FrameKind.RESET, number=-1),
        Frame(kind=FrameKind.FIN, data=b"x"),
        Frame(kind=FrameKind.DATAGRAM, stream_id=4),
    ):
        with pytest.raises(FrameError):
            encode_frame(bad)


# -- the mux ---------------------------------------------------------------------------------


def _deliver(src: Mux, dst: Mux) -> None:
    for message in src.messages_to_send():
        dst.receive_message(message)


def test_echo_between_two_muxes() -> None:
    client, server = Mux(client=True), Mux(client=False)
    sid = client.open_stream()
    assert client.send(sid, b"hello") == 5
    client.finish(sid)
    _deliver(client, server)
    assert server.next_stream() == sid
    assert server.read(sid) == b"hello"
    assert server.read(sid) == b""
    server.send(sid, b"back")
    server.finish(sid)
    _deliver(server, client)
    assert client.read(sid, 2) == b"ba" and client.read(sid) == b"ck"
    assert client.read(sid) == b""
    assert client.streams == 0 and server.streams == 0  # both sides forgot it


def test_flow_control_bounds_what_a_slow_reader_holds() -> None:
    client, server = Mux(client=True), Mux(client=False)
    sid = client.open_stream()
    sent = client.send(sid, bytes(INITIAL_WINDOW + 1000))
    assert sent == INITIAL_WINDOW and client.send_capacity(sid) == 0
    _deliver(client, server)
    server.next_stream()
    assert len(server.read(sid) or b"") == INITIAL_WINDOW  # reading returns credit
    _deliver(server, client)
    assert client.send_capacity(sid) == INITIAL_WINDOW


def test_a_peer_beyond_its_window_is_a_violation() -> None:
    server = Mux(client=False)
    chunk = encode_frame(Frame(kind=FrameKind.DATA, data=bytes(1000)))
    for _ in range(INITIAL_WINDOW // 1000):
        server.receive_message(chunk)  # within the window
    with pytest.raises(sansquic.RemoteProtocolError):
        server.receive_message(chunk)
    assert isinstance(server.closed, sansquic.RemoteProtocolError)
    with pytest.raises(sansquic.RemoteProtocolError):
        server.open_stream()


def test_reset_stop_and_misuse() -> None:
    client, server = Mux(client=True), Mux(client=False)
    sid = client.open_stream()
    client.send(sid, b"x")
    _deliver(client, server)
    server.stop(server.next_stream() or 0, 7)
    _deliver(server, client)
    with pytest.raises(sansquic.StreamStoppedError):
        client.send(sid, b"more")
    client.finish(sid)  # a stopped stream: nothing to do
    uni = client.open_stream(bidirectional=False)
    with pytest.raises(sansquic.LocalProtocolError):
        client.read(uni)
    client.reset(uni, 3)
    _deliver(client, server)
    assert server.next_stream() == uni
    with pytest.raises(sansquic.StreamResetError):
        server.read(uni)
    with pytest.raises(sansquic.LocalProtocolError):
        client.send(99, b"x")  # never opened
    with pytest.raises(sansquic.LocalProtocolError):
        client.reset(client.open_stream(), -1)  # bad code: nothing changed


def test_a_stream_this_side_stopped_reads_as_ended_even_after_the_peers_reset() -> None:
    """As on QUIC: after this side's stop() a read gives b"", also once the peer has
    answered the STOP with a RESET (a reader that came late raised StreamResetError);
    a second RESET is still a violation."""
    client, server = Mux(client=True), Mux(client=False)
    sid = client.open_stream()
    client.send(sid, b"question")
    _deliver(client, server)
    assert server.next_stream() == sid
    server.send(sid, b"part of an answer")
    _deliver(server, client)
    client.stop(sid, 4)
    _deliver(client, server)  # the STOP: the server resets its sending side
    _deliver(server, client)  # ... and the RESET arrives
    assert client.read(sid) == b""
    assert client.read(sid) == b""
    with pytest.raises(sansquic.RemoteProtocolError):
        client.receive_message(encode_frame(Frame(kind=FrameKind.RESET, stream_id=sid, number=4)))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=64), max_size=30))
def test_garbage_closes_the_mux_cleanly(messages: list[bytes]) -> None:
    mux = Mux(client=False, max_streams=8)
    for message in messages:
        try:
            mux.receive_message(message)
        except sansquic.RemoteProtocolError:
            assert mux.closed is not None
        for sid in [mux.next_stream() for _ in range(2)] if mux.closed is None else []:
            if sid is not None:
                mux.read(sid)


ops = st.lists(
    st.tuples(
        st.sampled_from(["open", "send", "finish", "deliver_c", "deliver_s", "read", "dgram"]),
        st.integers(0, 7),
        st.integers(1, 70_000),
    ),
    max_size=60,
)


@settings(max_examples=150, deadline=None)
@given(ops)
def test_every_byte_arrives_once_in_order(steps: list[tuple[str, int, int]]) -> None:
    """Random interleavings of sends, finishes, deliveries and reads: each stream's bytes
    arrive whole and in order, and neither side sees a violation."""
    client, server = Mux(client=True), Mux(client=False)
    sent: dict[int, bytearray] = {}
    got: dict[int, bytearray] = {}
    finished: set[int] = set()
    counter = 0

    def read_all() -> None:
        while (sid := server.next_stream()) is not None:
            got.setdefault(sid, bytearray())
        for sid in list(got):
            while data := server.read(sid):
                got[sid] += data

    for op, index, size in steps:
        open_ids = [s for s in sent if s not in finished]
        if op == "open" and len(sent) < 8:
            sent[client.open_stream()] = bytearray()
        elif op in ("send", "finish") and open_ids:
            sid = open_ids[index % len(open_ids)]
            if op == "finish":
                client.finish(sid)
                finished.add(sid)
            else:
                data = bytes((counter + i) % 251 for i in range(size))
                counter += size
                taken = client.send(sid, data)
                assert taken <= size
                sent[sid] += data[:taken]
        elif op == "deliver_c":
            _deliver(client, server)
        elif op == "deliver_s":
            _deliver(server, client)
        elif op == "read":
            read_all()
        elif op == "dgram":
            client.send_datagram(b"d")
    for _ in range(100):  # drain: bounded, since each round moves a window at least
        _deliver(client, server)
        read_all()
        _deliver(server, client)
        if all(len(got.get(s, b"")) == len(v) for s, v in sent.items()):
            break
    for sid, data in sent.items():
        assert got.get(sid, bytearray()) == data or (not data and sid not in got)


# -- handshake auth --------------------------------------------------------------------------


def _authenticator(
    request: sansquic.AuthRequest, address: sansquic.Address, now: float
) -> sansquic.Identity | sansquic.AuthRejection:
    if request.credentials == b"good":
        return sansquic.Identity(subject=request.metadata.get("who", "bearer"))
    return sansquic.AuthRejection(code=sansquic.CloseCode.AUTH_REJECTED, reason="bad token")


POLICY = sansquic.AuthPolicy(authenticator=_authenticator)


def test_bearer_header_query_and_full_request_reach_the_authenticator() -> None:
    addr = ("127.0.0.1", 1)
    bearer = handshake_headers(sansquic.AuthRequest(credentials=b"good"))
    assert bearer == [(b"authorization", b"Bearer good")]
    assert isinstance(authenticate_handshake(POLICY, "/", bearer, addr, 0), sansquic.Identity)
    assert isinstance(
        authenticate_handshake(POLICY, "/?token=good", [], addr, 0), sansquic.Identity
    )
    full = handshake_headers(sansquic.AuthRequest(credentials=b"good", metadata={"who": "a7"}))
    identity = authenticate_handshake(POLICY, "/", full, addr, 0)
    assert isinstance(identity, sansquic.Identity) and identity.subject == "a7"
    rejected = authenticate_handshake(POLICY, "/", [(b"Authorization", b"Bearer bad")], addr, 0)
    assert isinstance(rejected, sansquic.AuthRejection)
    assert rejection_from_headers(403, rejection_headers(rejected)) == rejected
    assert authenticate_handshake(None, "/", [], addr, 0) is None  # no auth asked for
    silent = authenticate_handshake(sansquic.AuthPolicy(), "/", [], addr, 0)
    assert isinstance(silent, sansquic.AuthRejection)
    anonymous = sansquic.AuthPolicy(allow_anonymous=True)
    assert authenticate_handshake(anonymous, "/", [], addr, 0) == sansquic.Identity(
        subject="anonymous"
    )


@given(
    st.text(max_size=40),
    st.lists(st.tuples(st.binary(max_size=20), st.binary(max_size=40)), max_size=4),
)
def test_any_upgrade_request_gets_a_decision(
    target: str, headers: list[tuple[bytes, bytes]]
) -> None:
    for name in (b"sansquic-auth", b"authorization"):
        for value in (b"", b"!!", b"Bearer", b"QUJD"):
            outcome = authenticate_handshake(POLICY, target, [*headers, (name, value)], ("", 0), 0)
            assert isinstance(outcome, (sansquic.Identity, sansquic.AuthRejection))
    rejection_from_headers(400, headers)  # never raises


def test_a_failing_authenticator_is_the_servers_fault() -> None:
    def broken(*_: object) -> sansquic.Identity:
        raise RuntimeError("bug")

    outcome = authenticate_handshake(
        sansquic.AuthPolicy(authenticator=broken), "/?token=x", [], ("", 0), 0
    )
    assert isinstance(outcome, sansquic.AuthRejection)
    assert outcome.code == sansquic.CloseCode.INTERNAL_ERROR


# -- the race --------------------------------------------------------------------------------


def test_quic_first_then_websocket_after_the_delay() -> None:
    race = Race(0.0, delay=0.25, timeout=5)
    assert race.to_start(0.0) == [Transport.QUIC]
    assert race.timer() == 0.25 and race.to_start(0.1) == []
    assert race.to_start(0.25) == [Transport.WEBSOCKET]
    assert race.succeeded(Transport.WEBSOCKET, 0.3)
    assert race.winner is Transport.WEBSOCKET and race.to_abandon() == [Transport.QUIC]
    assert not race.succeeded(Transport.QUIC, 0.4)  # late: the caller closes it


def test_quic_failing_starts_websocket_at_once() -> None:
    race = Race(0.0, delay=10, timeout=20)
    race.to_start(0.0)
    race.failed(Transport.QUIC, 0.01, OSError("unreachable"))
    assert race.to_start(0.01) == [Transport.WEBSOCKET]
    race.failed(Transport.WEBSOCKET, 0.02, OSError("refused"))
    assert race.done and race.winner is None and set(race.errors) == set(Transport)


def test_misuse_raises() -> None:
    with pytest.raises(sansquic.LocalProtocolError):
        Race(0.0, delay=-1)
    with pytest.raises(sansquic.LocalProtocolError):
        Race(0.0, timeout=float("nan"))
    race = Race(0.0)
    with pytest.raises(sansquic.LocalProtocolError):
        race.succeeded(Transport.QUIC, 0.0)  # never started


events = st.lists(
    st.tuples(
        st.floats(0, 3, allow_nan=False),
        st.sampled_from(["tick", "ok", "fail"]),
        st.sampled_from(list(Transport)),
    ),
    max_size=12,
)


@settings(max_examples=300)
@given(st.floats(0, 2, allow_nan=False), st.floats(0.1, 5, allow_nan=False), events)
def test_race_properties(
    delay: float, timeout: float, steps: list[tuple[float, str, Transport]]
) -> None:
    """QUIC always starts first; WebSocket never before the delay unless QUIC failed;
    at most one winner, the first to succeed within the timeout; nothing starts after."""
    race = Race(0.0, delay=delay, timeout=timeout)
    started: list[tuple[Transport, float]] = []
    running: set[Transport] = set()
    first_ok: Transport | None = None
    now = 0.0
    quic_failed_at: float | None = None
    for step, what, transport in steps:
        now += step
        was_done = race.done
        for t in race.to_start(now):
            assert not was_done
            started.append((t, now))
            running.add(t)
        if what == "ok" and transport in running:
            running.discard(transport)
            won = race.succeeded(transport, now)
            if won:
                assert first_ok is None and now < timeout
                first_ok = transport
            else:
                assert first_ok is not None or now >= timeout
        elif what == "fail" and transport in running:
            running.discard(transport)
            race.failed(transport, now, OSError())
            if transport is Transport.QUIC:
                quic_failed_at = now
        deadline = race.timer()
        assert race.done == (deadline is None)
    if started:
        assert started[0][0] is Transport.QUIC
    for t, at in started:
        if t is Transport.WEBSOCKET:
            assert at >= delay or (quic_failed_at is not None and at >= quic_failed_at)
    assert race.winner is first_ok
    assert [t for t, _ in started].count(Transport.WEBSOCKET) <= 1


def test_the_public_names_are_documented_and_report_the_public_module() -> None:
    import sansquic.websocket as ws

    for name in ws.__all__:
        obj = getattr(ws, name)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            assert inspect.getdoc(obj), name
        if inspect.isclass(obj):
            assert obj.__module__ == "sansquic.websocket", obj
