"""The typed envelope every message travels in, and its compact versioned encoding.

Layout (version 1), integers big-endian::

    version (1) | id (8) | timestamp (8, IEEE-754 double) | type length (1) | type (UTF-8)
    | payload (the rest)
"""

from __future__ import annotations

import math
import struct

import attrs

from .._errors import LocalProtocolError
from ._errors import EnvelopeError

__all__ = ["ENVELOPE_VERSION", "Envelope", "decode_envelope", "encode_envelope"]

#: The encoding version this code writes and reads.
ENVELOPE_VERSION = 1
_HEAD = struct.Struct(">BQdB")
_MAX_TYPE = 255
_MAX_ID = (1 << 64) - 1


def _check(envelope: Envelope) -> None:
    if not 0 <= envelope.id <= _MAX_ID:
        raise LocalProtocolError(f"an envelope id must fit in 64 bits, not {envelope.id}")
    if not math.isfinite(envelope.timestamp):
        raise LocalProtocolError(f"an envelope timestamp must be finite, not {envelope.timestamp}")
    if not envelope.type or len(envelope.type.encode()) > _MAX_TYPE:
        raise LocalProtocolError(f"a message type must be 1 to {_MAX_TYPE} UTF-8 bytes")


@attrs.frozen(kw_only=True, slots=True)
class Envelope:
    """One message: ``id`` (unique per sender, rising), ``type`` (routes it), ``timestamp``
    (the sender's clock, seconds, as passed in) and an opaque ``payload``.

    Types starting with ``"sq."`` are the layer's own (hello, acks); applications use others.
    """

    id: int
    type: str
    timestamp: float
    payload: bytes = b""


def encode_envelope(envelope: Envelope) -> bytes:
    """The envelope's bytes; raises :class:`~sansquic.LocalProtocolError` for an id over
    64 bits, a non-finite timestamp, or an empty or over-255-byte type."""
    _check(envelope)
    kind = envelope.type.encode()
    head = _HEAD.pack(ENVELOPE_VERSION, envelope.id, envelope.timestamp, len(kind))
    return head + kind + envelope.payload


def decode_envelope(data: bytes) -> Envelope:
    """Parse :func:`encode_envelope`'s bytes; anything else raises :class:`EnvelopeError`."""
    if len(data) < _HEAD.size:
        raise EnvelopeError(f"an envelope needs at least {_HEAD.size} bytes, got {len(data)}")
    version, ident, timestamp, kind_len = _HEAD.unpack_from(data)
    if version != ENVELOPE_VERSION:
        raise EnvelopeError(f"unknown envelope version {version}")
    if not math.isfinite(timestamp):
        raise EnvelopeError("the envelope timestamp is not finite")
    end = _HEAD.size + kind_len
    if kind_len == 0 or len(data) < end:
        raise EnvelopeError("the envelope's type is empty or truncated")
    try:
        kind = data[_HEAD.size : end].decode()
    except UnicodeDecodeError as exc:
        raise EnvelopeError("the envelope's type is not UTF-8") from exc
    return Envelope(id=ident, type=kind, timestamp=timestamp, payload=bytes(data[end:]))
