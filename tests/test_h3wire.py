"""Hypothesis fuzzing of the HTTP/3 / WebTransport parsers and of H3Connection's input."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sansquic import H3Connection, H3FormatError
from sansquic import _h3wire as w

varints = st.integers(min_value=0, max_value=w.MAX_VARINT)


@given(varints)
def test_varint_round_trips_and_is_shortest(value: int) -> None:
    raw = w.encode_varint(value)
    assert w.decode_varint(raw) == (value, len(raw))
    assert w.decode_varint(raw[:-1]) is None
    assert len(raw) == min(n for n in (1, 2, 4, 8) if value < 1 << (8 * n - 2))


@given(st.binary(max_size=64))
def test_parsers_return_or_raise_the_format_error(data: bytes) -> None:
    for parse in (w.parse_settings, w.parse_close_session, w.parse_datagram):
        with contextlib.suppress(H3FormatError):
            parse(data)
    got = w.decode_varint(data)
    assert got is None or got[1] <= len(data)


@given(st.lists(st.tuples(varints, st.binary(max_size=40)), max_size=8), st.data())
def test_frame_reader_splits_any_chunking(
    frames: list[tuple[int, bytes]], data: st.DataObject
) -> None:
    frames = [(k, p) for k, p in frames if k != w.WT_BIDI_SIGNAL]
    stream = b"".join(w.encode_frame(k, p) for k, p in frames)
    reader = w.FrameReader()
    out: list[tuple[int, bytes]] = []
    pos = 0
    while pos < len(stream):
        step = data.draw(st.integers(1, len(stream) - pos))
        out += reader.feed(stream[pos : pos + step])
        pos += step
    assert out == frames and reader.pending == 0


@given(st.dictionaries(varints.filter(lambda k: k not in (2, 3, 4, 5)), varints, max_size=8))
def test_settings_round_trip(settings_: dict[int, int]) -> None:
    ((kind, payload),) = w.FrameReader().feed(w.encode_settings(settings_))
    assert kind == w.SETTINGS and w.parse_settings(payload) == settings_


@given(st.integers(0, 2**32 - 1), st.text(max_size=100))
def test_close_capsule_round_trips(code: int, reason: str) -> None:
    raw = w.encode_close_session(code, reason)
    ((kind, payload),) = w.CapsuleReader().feed(raw)
    assert kind == w.CLOSE_WEBTRANSPORT_SESSION
    assert w.parse_close_session(payload) == (code, reason)


def test_oversized_frames_are_refused() -> None:
    with pytest.raises(H3FormatError):
        w.FrameReader(limit=10).feed(w.encode_frame(0, b"x" * 11))


class _Sink:
    """A transport that records what the layer sends; it never fails."""

    def __init__(self) -> None:
        self.closed: tuple[int, str] | None = None
        self.next = 3

    def open_stream(self, bidirectional: bool = True, priority: int = 0) -> int:
        self.next += 4
        return self.next

    def send(self, stream_id: int, data: bytes, end: bool = False) -> int:
        return len(data)

    def read(self, stream_id: int, max_bytes: int = -1) -> bytes:
        return b""

    def reset(self, stream_id: int, error_code: int = 0) -> None:
        pass

    def stop(self, stream_id: int, error_code: int = 0) -> None:
        pass

    def send_datagram(self, data: bytes) -> None:
        pass

    def close(self, error_code: int = 0, reason: str = "") -> None:
        self.closed = (error_code, reason)


@settings(max_examples=300)
@given(
    st.lists(
        st.tuples(st.sampled_from([0, 2, 4, 6, 10, 14]), st.binary(max_size=60), st.booleans()),
        max_size=12,
    ),
    st.lists(st.binary(max_size=20), max_size=4),
)
def test_a_server_survives_any_peer_bytes(
    chunks: list[tuple[int, bytes, bool]], datagrams: list[bytes]
) -> None:
    sink = _Sink()
    h3 = H3Connection(sink, client=False)
    h3.initiate()
    for sid, data, end in chunks:
        h3.receive_stream_data(sid, data, end, 0.0)
    for d in datagrams:
        h3.receive_datagram(d)
    events = h3.events()
    # A failure is reported once and closes the connection; nothing else escapes.
    failed = [e for e in events if type(e).__name__ == "H3ProtocolFailed"]
    assert len(failed) <= 1 and (sink.closed is not None) == bool(failed)


def _connect_request() -> tuple[int, bytes]:
    """A real CONNECT request as a client layer sends it (through a recording sink)."""
    sent: dict[int, bytearray] = {}

    class Recorder(_Sink):
        def send(self, stream_id: int, data: bytes, end: bool = False) -> int:
            sent.setdefault(stream_id, bytearray()).extend(data)
            return len(data)

        def open_stream(self, bidirectional: bool = True, priority: int = 0) -> int:
            return 0 if bidirectional else 2  # a client's first streams

    client = H3Connection(Recorder(), client=True)
    sid = client.connect("localhost", "/?token=t")
    # The request leaves once the server's SETTINGS offer WebTransport.
    server_settings = {w.SETTINGS_ENABLE_CONNECT_PROTOCOL: 1, w.SETTINGS_WT_MAX_SESSIONS: 1}
    client.receive_stream_data(3, b"\x00" + w.encode_settings(server_settings), False, 0.0)
    return sid, bytes(sent[sid])


@settings(max_examples=300)
@given(
    st.binary(max_size=80),
    st.lists(
        st.tuples(st.sampled_from([4, 8, 2, 6]), st.binary(max_size=40), st.booleans()),
        max_size=6,
    ),
    st.lists(st.binary(max_size=12), max_size=3),
)
def test_an_open_session_survives_any_bytes_after_it(
    tail: bytes, chunks: list[tuple[int, bytes, bool]], datagrams: list[bytes]
) -> None:
    sid, request = _connect_request()
    sink = _Sink()
    h3 = H3Connection(sink, client=False)
    h3.initiate()
    h3.receive_stream_data(sid, request, False, 0.0)
    assert [type(e).__name__ for e in h3.events()] == ["WebTransportSessionReady"]
    h3.receive_stream_data(sid, tail, False, 0.0)  # garbage as capsules / frames
    for stream_id, data in [(s, bytes([0x41, sid]) + d) for s, d, _ in chunks if s % 4 == 0]:
        h3.receive_stream_data(stream_id, data, False, 0.0)
    for stream_id, data, end in chunks:
        h3.receive_stream_data(stream_id, data, end, 0.0)
    for d in datagrams:
        h3.receive_datagram(bytes([sid // 4]) + d)
    events = h3.events()
    failed = [e for e in events if type(e).__name__ == "H3ProtocolFailed"]
    assert len(failed) <= 1 and (sink.closed is not None) == bool(failed)


@given(st.integers(0, 2**32 - 1))
def test_webtransport_error_codes_round_trip_through_the_h3_range(code: int) -> None:
    h3 = w.wt_error_to_h3(code)
    assert w.WT_APP_ERROR_FIRST <= h3 <= w.WT_APP_ERROR_LAST
    assert (h3 - 0x21) % 0x1F != 0  # never a GREASE codepoint
    assert w.h3_error_to_wt(h3) == code


@given(varints)
def test_any_h3_code_maps_to_a_webtransport_code_or_none(code: int) -> None:
    got = w.h3_error_to_wt(code)
    assert got is None or w.wt_error_to_h3(got) == code
