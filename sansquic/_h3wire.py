"""HTTP/3 and WebTransport wire pieces: varints, frames, settings, capsules, datagrams.

Every parser takes any bytes and either returns a value or raises
:class:`H3FormatError`; incremental readers hold partial input until it is whole.
References: RFC 9000 16 (varints), RFC 9114 7 (frames), RFC 9297 (HTTP
datagrams and capsules), draft-ietf-webtrans-http3 (WebTransport codepoints).
"""

from __future__ import annotations

from collections.abc import Mapping

from ._errors import SansQuicError

__all__ = [
    "H3FormatError",
    "VarintReader",
    "FrameReader",
    "CapsuleReader",
    "encode_varint",
    "h3_error_to_wt",
    "wt_error_to_h3",
    "decode_varint",
    "encode_frame",
    "encode_settings",
    "parse_settings",
    "encode_capsule",
    "encode_close_session",
    "parse_close_session",
    "encode_datagram",
    "parse_datagram",
    "encode_flow_capsule",
    "parse_flow_capsule",
    "encode_goaway",
    "parse_goaway",
]

MAX_VARINT = (1 << 62) - 1

# Frame types (RFC 9114 7.2).
DATA, HEADERS, SETTINGS, GOAWAY = 0x00, 0x01, 0x04, 0x07
# Unidirectional stream types (RFC 9114 6.2, RFC 9204 4.2, WebTransport).
CONTROL_STREAM, QPACK_ENCODER_STREAM, QPACK_DECODER_STREAM = 0x00, 0x02, 0x03
WT_UNI_STREAM = 0x54
# The signal value opening a WebTransport bidirectional stream (in place of a frame type).
WT_BIDI_SIGNAL = 0x41
# Settings.
SETTINGS_QPACK_MAX_TABLE_CAPACITY = 0x01
SETTINGS_QPACK_BLOCKED_STREAMS = 0x07
SETTINGS_ENABLE_CONNECT_PROTOCOL = 0x08
SETTINGS_H3_DATAGRAM = 0x33
SETTINGS_ENABLE_WEBTRANSPORT = 0x2B603742  # draft-02, what Chromium checked for years
SETTINGS_WEBTRANSPORT_MAX_SESSIONS_DRAFT06 = 0xC671706A
SETTINGS_WT_MAX_SESSIONS = 0x14E9CD29  # the current draft's
# The current draft's flow control settings (draft-ietf-webtrans-http3 5.5): non-zero on
# both sides turns session flow control on.
SETTINGS_WT_INITIAL_MAX_DATA = 0x2B61
SETTINGS_WT_INITIAL_MAX_STREAMS_UNI = 0x2B64
SETTINGS_WT_INITIAL_MAX_STREAMS_BIDI = 0x2B65
# Capsules (RFC 9297 3.2, WebTransport).
CLOSE_WEBTRANSPORT_SESSION = 0x2843
DRAIN_WEBTRANSPORT_SESSION = 0x78AE
# Flow control capsules (draft-ietf-webtrans-http3 5.6): one varint each.
WT_MAX_DATA = 0x190B4D3D
WT_MAX_STREAMS_BIDI = 0x190B4D3F
WT_MAX_STREAMS_UNI = 0x190B4D40
WT_DATA_BLOCKED = 0x190B4D41
WT_STREAMS_BLOCKED_BIDI = 0x190B4D43
WT_STREAMS_BLOCKED_UNI = 0x190B4D44
# HTTP/2's per-stream capsules: prohibited over HTTP/3 (a session error).
WT_MAX_STREAM_DATA = 0x190B4D3E
WT_STREAM_DATA_BLOCKED = 0x190B4D42
FLOW_CAPSULES = frozenset(
    {
        WT_MAX_DATA,
        WT_MAX_STREAMS_BIDI,
        WT_MAX_STREAMS_UNI,
        WT_DATA_BLOCKED,
        WT_STREAMS_BLOCKED_BIDI,
        WT_STREAMS_BLOCKED_UNI,
    }
)
_STREAM_COUNT_CAPSULES = frozenset(
    {WT_MAX_STREAMS_BIDI, WT_MAX_STREAMS_UNI, WT_STREAMS_BLOCKED_BIDI, WT_STREAMS_BLOCKED_UNI}
)
#: The most streams of one kind a session can ever open (stream ids end at 2**62).
MAX_STREAM_COUNT = 1 << 60
# Error codes (RFC 9114 8.1, WebTransport).
H3_NO_ERROR = 0x100
H3_GENERAL_PROTOCOL_ERROR = 0x101
H3_FRAME_UNEXPECTED = 0x105
H3_FRAME_ERROR = 0x106
H3_SETTINGS_ERROR = 0x109
H3_MISSING_SETTINGS = 0x10A
H3_REQUEST_REJECTED = 0x10B
H3_EXCESSIVE_LOAD = 0x107
H3_REQUEST_CANCELLED = 0x10C
H3_MESSAGE_ERROR = 0x10E
H3_STREAM_CREATION_ERROR = 0x103
H3_CLOSED_CRITICAL_STREAM = 0x104
H3_ID_ERROR = 0x108
H3_DATAGRAM_ERROR = 0x33
WT_FLOW_CONTROL_ERROR = 0x045D4487
WT_BUFFERED_STREAM_REJECTED = 0x3994BD84
WT_SESSION_GONE = 0x170D7B68

#: Largest frame payload the readers accept on control and request streams.
MAX_FRAME = 64 * 1024
#: Largest close reason (draft: at most 1024 bytes).
MAX_CLOSE_REASON = 1024


#: WebTransport application error codes live in this HTTP/3 range, skipping GREASE values.
WT_APP_ERROR_FIRST = 0x52E4A40FA8DB
WT_APP_ERROR_LAST = 0x52E5AC983162


def wt_error_to_h3(code: int) -> int:
    """The HTTP/3 error code carrying WebTransport application error ``code`` (32 bits)."""
    if not 0 <= code < 1 << 32:
        raise H3FormatError("a WebTransport error code is 32 bits")
    return WT_APP_ERROR_FIRST + code + code // 0x1E


def h3_error_to_wt(code: int) -> int | None:
    """The WebTransport application error code an HTTP/3 code carries, or None."""
    if not WT_APP_ERROR_FIRST <= code <= WT_APP_ERROR_LAST or (code - 0x21) % 0x1F == 0:
        return None
    shifted = code - WT_APP_ERROR_FIRST
    return shifted - shifted // 0x1F


class H3FormatError(SansQuicError, ValueError):
    """HTTP/3 or WebTransport bytes are malformed, truncated where they may not be, or too big."""


def encode_varint(value: int) -> bytes:
    """The shortest QUIC varint for ``value`` (0 <= value < 2**62)."""
    if not 0 <= value <= MAX_VARINT:
        raise H3FormatError(f"{value} does not fit a varint")
    for size, prefix in ((1, 0x00), (2, 0x40), (4, 0x80), (8, 0xC0)):
        if value < 1 << (8 * size - 2):
            return (value | prefix << (8 * size - 8)).to_bytes(size, "big")
    raise AssertionError("unreachable")  # pragma: no cover


def decode_varint(data: bytes | bytearray | memoryview, pos: int = 0) -> tuple[int, int] | None:
    """``(value, next_pos)``, or None when ``data`` ends inside the varint."""
    if pos >= len(data):
        return None
    size = 1 << (data[pos] >> 6)
    if pos + size > len(data):
        return None
    value = int.from_bytes(bytes(data[pos : pos + size]), "big") & ((1 << (8 * size - 2)) - 1)
    return value, pos + size


def encode_frame(kind: int, payload: bytes) -> bytes:
    """One HTTP/3 frame (or capsule: the same shape)."""
    return encode_varint(kind) + encode_varint(len(payload)) + payload


encode_capsule = encode_frame


def _pairs(payload: bytes) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    pos = 0
    while pos < len(payload):
        key = decode_varint(payload, pos)
        if key is None:
            raise H3FormatError("a setting is cut short")
        value = decode_varint(payload, key[1])
        if value is None:
            raise H3FormatError("a setting value is cut short")
        out.append((key[0], value[0]))
        pos = value[1]
    return out


def encode_settings(settings: Mapping[int, int]) -> bytes:
    """A SETTINGS frame carrying ``settings``."""
    body = b"".join(encode_varint(k) + encode_varint(v) for k, v in settings.items())
    return encode_frame(SETTINGS, body)


def parse_settings(payload: bytes) -> dict[int, int]:
    """The settings in a SETTINGS frame's payload; a repeated identifier is an error."""
    settings: dict[int, int] = {}
    for key, value in _pairs(payload):
        if key in settings:
            raise H3FormatError(f"setting {key:#x} appears twice")
        if key in (0x02, 0x03, 0x04, 0x05):  # HTTP/2 settings, forbidden (RFC 9114 7.2.4.1)
            raise H3FormatError(f"setting {key:#x} is reserved from HTTP/2")
        settings[key] = value
    return settings


def encode_close_session(code: int, reason: str) -> bytes:
    """A CLOSE_WEBTRANSPORT_SESSION capsule: a 32-bit code and a UTF-8 reason."""
    raw = reason.encode("utf-8")
    if not 0 <= code < 1 << 32:
        raise H3FormatError("a session close code is 32 bits")
    if len(raw) > MAX_CLOSE_REASON:
        raise H3FormatError(f"a close reason is at most {MAX_CLOSE_REASON} bytes")
    return encode_capsule(CLOSE_WEBTRANSPORT_SESSION, code.to_bytes(4, "big") + raw)


def parse_close_session(payload: bytes) -> tuple[int, str]:
    """``(code, reason)`` from a CLOSE_WEBTRANSPORT_SESSION capsule's payload."""
    if len(payload) < 4 or len(payload) > 4 + MAX_CLOSE_REASON:
        raise H3FormatError("a close capsule holds a 4-byte code and <= 1024 bytes of reason")
    try:
        reason = payload[4:].decode("utf-8")
    except UnicodeDecodeError:
        raise H3FormatError("a close reason is not UTF-8") from None
    return int.from_bytes(payload[:4], "big"), reason


def _one_varint(payload: bytes, what: str) -> int:
    got = decode_varint(payload)
    if got is None or got[1] != len(payload):
        raise H3FormatError(f"{what} holds exactly one varint")
    return got[0]


def encode_flow_capsule(kind: int, value: int) -> bytes:
    """A flow control capsule (one of :data:`FLOW_CAPSULES`) carrying ``value``."""
    if kind not in FLOW_CAPSULES:
        raise H3FormatError(f"{kind:#x} is not a WebTransport flow control capsule")
    if kind in _STREAM_COUNT_CAPSULES and value > MAX_STREAM_COUNT:
        raise H3FormatError(f"a stream count is at most 2**60, not {value}")
    return encode_capsule(kind, encode_varint(value))


def parse_flow_capsule(kind: int, payload: bytes) -> int:
    """The value of a flow control capsule of type ``kind``; a stream count over
    2**60 is an error (the draft's WT_FLOW_CONTROL_ERROR)."""
    value = _one_varint(payload, "a flow control capsule")
    if kind in _STREAM_COUNT_CAPSULES and value > MAX_STREAM_COUNT:
        raise H3FormatError(f"a stream count of {value} is over 2**60")
    return value


def encode_goaway(identifier: int) -> bytes:
    """A GOAWAY frame (RFC 9114 5.2): a server's names a request stream id, a client's a push id."""
    return encode_frame(GOAWAY, encode_varint(identifier))


def parse_goaway(payload: bytes) -> int:
    """The stream or push id of a GOAWAY frame's payload."""
    return _one_varint(payload, "a GOAWAY frame")


def encode_datagram(session_id: int, payload: bytes) -> bytes:
    """An HTTP datagram for the request stream ``session_id`` (quarter stream id first)."""
    if session_id % 4:
        raise H3FormatError("a session id is a client bidirectional stream id")
    return encode_varint(session_id // 4) + payload


def parse_datagram(data: bytes) -> tuple[int, bytes]:
    """``(session_id, payload)`` from an HTTP datagram."""
    head = decode_varint(data)
    if head is None:
        raise H3FormatError("an HTTP datagram without a quarter stream id")
    if head[0] * 4 > MAX_VARINT:
        raise H3FormatError("a quarter stream id past the largest stream id")
    return head[0] * 4, bytes(data[head[1] :])


class VarintReader:
    """Collects bytes until one varint is whole (a stream type, a session id)."""

    def __init__(self) -> None:
        self._data = bytearray()

    def feed(self, data: bytes) -> tuple[int, bytes] | None:
        """Add bytes; ``(value, the bytes after it)`` once the varint is whole."""
        self._data += data
        got = decode_varint(self._data)
        if got is None:
            return None
        value, pos = got
        rest = bytes(self._data[pos:])
        self._data.clear()
        return value, rest


class FrameReader:
    """Splits a stream into ``(type, payload)`` frames; a payload over ``limit`` is an error.

    ``signal``: a frame type that, as the first thing on the stream, is not a
    frame but a varint header followed by raw bytes (WebTransport's 0x41);
    reading it yields ``(signal, b"")`` and :attr:`rest` holds what follows.
    """

    def __init__(self, limit: int = MAX_FRAME, *, signal: int | None = None) -> None:
        self._data = bytearray()
        self._limit = limit
        self._signal = signal
        self._first = True
        #: After the signal: the bytes that followed it (the reader stops there).
        self.rest: bytes | None = None

    @property
    def pending(self) -> int:
        """Bytes held that do not yet form a frame."""
        return len(self._data)

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        """Add bytes; return every frame now whole, in order."""
        if self.rest is not None:
            raise H3FormatError("this stream left HTTP/3 framing")
        self._data += data
        out: list[tuple[int, bytes]] = []
        pos = 0
        buf = self._data
        while True:
            kind = decode_varint(buf, pos)
            if kind is None:
                break
            if self._first and self._signal is not None and kind[0] == self._signal:
                out.append((kind[0], b""))
                self.rest = bytes(buf[kind[1] :])
                buf.clear()
                return out
            length = decode_varint(buf, kind[1])
            if length is None:
                break
            if length[0] > self._limit:
                raise H3FormatError(f"a frame of {length[0]} bytes is over {self._limit}")
            end = length[1] + length[0]
            if end > len(buf):
                break
            self._first = False
            out.append((kind[0], bytes(buf[length[1] : end])))
            pos = end
        del buf[:pos]
        if len(buf) > self._limit + 16:
            raise H3FormatError("a frame header is over the limit")  # pragma: no cover
        return out


#: Capsules share the frame layout (type, length, value).
CapsuleReader = FrameReader
