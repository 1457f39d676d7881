"""Length-prefixed frames on a byte stream: a 4-byte big-endian length, then the frame."""

from __future__ import annotations

from collections import deque

from ._errors import FrameTooLarge, MessageTooLarge

__all__ = ["DEFAULT_MAX_FRAME_SIZE", "FrameDecoder", "encode_frame"]

#: The default largest frame body, bytes (1 MiB).
DEFAULT_MAX_FRAME_SIZE = 1 << 20
_PREFIX = 4


def encode_frame(body: bytes, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE) -> bytes:
    """``body`` with its length prefix; raises :class:`MessageTooLarge` over the limit."""
    if len(body) > max_frame_size:
        raise MessageTooLarge(f"a {len(body)}-byte frame is over the limit of {max_frame_size}")
    return len(body).to_bytes(_PREFIX, "big") + body


class FrameDecoder:
    """Sans-IO decoder: feed bytes as they come, take whole frames out.

    Memory stays bounded by ``max_frame_size`` plus one ``feed()``'s bytes: a
    prefix over the limit raises :class:`FrameTooLarge` as soon as it is read,
    before its body is buffered.
    """

    def __init__(self, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE) -> None:
        self.max_frame_size = max_frame_size
        self._buffer = bytearray()
        self._frames: deque[bytes] = deque()
        self._failed: FrameTooLarge | None = None

    def feed(self, data: bytes) -> None:
        """Add received bytes; raises :class:`FrameTooLarge` (now and on every later call)
        on an oversized frame. Next: :meth:`next_frame` until it returns ``None``."""
        if self._failed is not None:
            raise self._failed
        buf = self._buffer
        buf += data
        while len(buf) >= _PREFIX:
            size = int.from_bytes(buf[:_PREFIX], "big")
            if size > self.max_frame_size:
                self._failed = FrameTooLarge(size, self.max_frame_size)
                raise self._failed
            if len(buf) < _PREFIX + size:
                break
            self._frames.append(bytes(buf[_PREFIX : _PREFIX + size]))
            del buf[: _PREFIX + size]

    def next_frame(self) -> bytes | None:
        """The next whole frame body, or ``None`` when none is complete yet."""
        return self._frames.popleft() if self._frames else None

    @property
    def pending(self) -> int:
        """Bytes of an incomplete frame held back; nonzero at end of stream means truncation."""
        return len(self._buffer)
