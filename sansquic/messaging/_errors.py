"""The messaging layer's errors: the peer's bad bytes, and this side's misuse."""

from __future__ import annotations

from .._errors import LocalProtocolError, SansQuicError

__all__ = [
    "MESSAGING_VIOLATION",
    "EnvelopeError",
    "FrameTooLarge",
    "MessageFormatError",
    "MessageTooLarge",
    "QueueFull",
    "WindowExceeded",
]

#: Application close code a messaging peer is closed with after a :class:`MessageFormatError`
#: (in sansquic's "SQ" range, next to :class:`~sansquic.CloseCode`).
MESSAGING_VIOLATION = 0x5351_0101


class MessageFormatError(SansQuicError):
    """The peer sent bytes that are not valid messaging; close it with
    :data:`MESSAGING_VIOLATION`. Nothing after the bad bytes was consumed."""


class FrameTooLarge(MessageFormatError):
    """A frame's length prefix announces more than the decoder's ``max_frame_size``."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"the peer announced a {size}-byte frame, over the limit of {limit}")
        self.size = size
        self.limit = limit


class EnvelopeError(MessageFormatError):
    """A frame does not decode as an envelope (unknown version, truncated, bad text)."""


class WindowExceeded(MessageFormatError):
    """The peer sent a message id beyond the receive window: it ignored its acks."""


class MessageTooLarge(LocalProtocolError):
    """The message would not fit in one frame of ``max_frame_size``; nothing was queued."""


class QueueFull(LocalProtocolError):
    """The send queue already holds ``max_unacked`` messages the peer has not acked;
    nothing was queued. Wait for acks (a connection) and retry."""
