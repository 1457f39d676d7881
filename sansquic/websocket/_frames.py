"""The framing of the WebSocket fallback: many byte streams in one WebSocket.

Every binary WebSocket message is one frame:
``kind (1) | stream id (4, big-endian) | body``.

- DATA (0): body = stream bytes (the first DATA, FIN or RESET of a peer's id opens it)
- FIN (1): empty body; the sender's side of the stream ends
- RESET (2): body = code (4); the sender abandons its side of the stream
- STOP (3): body = code (4); the receiver asks the sender to stop
- CREDIT (4): body = increment (4); the receiver may take that many more bytes
- DATAGRAM (5): stream id 0, body = one message (no flow control, may be dropped)

Stream ids follow QUIC's layout: bit 0 is the opener (0 client, 1 server), bit 1
says unidirectional. ``parse_frame`` takes any bytes and returns a frame or
raises :class:`FrameError`.
"""

from __future__ import annotations

import enum
import struct

import attrs

from .._errors import SansQuicError

__all__ = ["Frame", "FrameError", "FrameKind", "encode_frame", "parse_frame"]

_HEAD = struct.Struct("!BI")
_U32 = struct.Struct("!I")
#: The largest stream id, code or credit increment (4 bytes on the wire).
MAX_U32 = 0xFFFF_FFFF


class FrameError(SansQuicError, ValueError):
    """A WebSocket message is not a well-formed frame."""


class FrameKind(enum.IntEnum):
    """What a frame says (its first byte)."""

    DATA = 0
    FIN = 1
    RESET = 2
    STOP = 3
    CREDIT = 4
    DATAGRAM = 5


_WITH_NUMBER = {FrameKind.RESET, FrameKind.STOP, FrameKind.CREDIT}


@attrs.frozen(kw_only=True)
class Frame:
    """One frame: ``data`` for DATA and DATAGRAM, ``number`` (code or increment) for
    RESET, STOP and CREDIT."""

    kind: FrameKind
    stream_id: int = 0
    data: bytes = b""
    number: int = 0


def encode_frame(frame: Frame) -> bytes:
    """The WebSocket message carrying ``frame``; raises :class:`FrameError` for a frame
    that cannot be encoded (a field out of range, a body where none belongs)."""
    if not 0 <= frame.stream_id <= MAX_U32 or not 0 <= frame.number <= MAX_U32:
        raise FrameError(f"stream id and number must fit 4 bytes: {frame!r}")
    if frame.kind is FrameKind.DATAGRAM and frame.stream_id != 0:
        raise FrameError("a datagram carries stream id 0")
    head = _HEAD.pack(frame.kind, frame.stream_id)
    if frame.kind in _WITH_NUMBER:
        return head + _U32.pack(frame.number)
    if frame.kind is FrameKind.FIN and frame.data:
        raise FrameError("FIN carries no data")
    return head + frame.data


def parse_frame(message: bytes) -> Frame:
    """The frame in one binary WebSocket message; raises :class:`FrameError`."""
    if len(message) < _HEAD.size:
        raise FrameError(f"a frame has at least {_HEAD.size} bytes, not {len(message)}")
    kind_byte, stream_id = _HEAD.unpack_from(message)
    try:
        kind = FrameKind(kind_byte)
    except ValueError:
        raise FrameError(f"unknown frame kind {kind_byte}") from None
    body = bytes(message[_HEAD.size :])
    if kind in _WITH_NUMBER:
        if len(body) != _U32.size:
            raise FrameError(f"{kind.name} carries a 4-byte number, not {len(body)} bytes")
        return Frame(kind=kind, stream_id=stream_id, number=_U32.unpack(body)[0])
    if kind is FrameKind.FIN and body:
        raise FrameError("FIN carries no data")
    if kind is FrameKind.DATAGRAM and stream_id != 0:
        raise FrameError("a datagram carries stream id 0")
    return Frame(kind=kind, stream_id=stream_id, data=body)
