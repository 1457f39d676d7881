"""The exception tree: everything sansquic raises derives from :class:`SansQuicError`."""

from __future__ import annotations

__all__ = [
    "BusyError",
    "ConfigError",
    "ConnectionClosed",
    "IncompleteRead",
    "LocalProtocolError",
    "ReadLimitExceeded",
    "RemoteProtocolError",
    "SansQuicError",
    "SendBufferFull",
    "StreamResetError",
    "StreamStoppedError",
]


class SansQuicError(Exception):
    """Base class of every error sansquic raises on purpose."""


class LocalProtocolError(SansQuicError):
    """The caller asked for something the protocol or the current state forbids.

    Raised before any state changes: the connection is exactly as it was, so
    the caller can fix the call and carry on.
    """


class ConfigError(LocalProtocolError, ValueError):
    """A :class:`~sansquic.Config` value is invalid or a certificate cannot be loaded."""


class SendBufferFull(LocalProtocolError):
    """``send()`` would buffer more than ``Config.send_buffer_limit`` (per stream) or
    ``connection_send_buffer_limit``; nothing was queued. Wait for ``StreamWritable``."""

    def __init__(self, stream_id: int, buffered: int, limit: int) -> None:
        super().__init__(
            f"stream {stream_id}: sending now would buffer {buffered} bytes, over the "
            f"limit of {limit}; wait for StreamWritable"
        )
        self.stream_id = stream_id
        self.buffered = buffered
        self.limit = limit


class ConnectionClosed(SansQuicError):
    """The connection is closing or closed; no more commands are accepted.

    ``error_code`` and ``reason`` are those of the CONNECTION_CLOSE;
    ``by_peer`` tells which side closed; ``application`` is True for an
    application error code, False for a QUIC transport error code.
    """

    def __init__(self, error_code: int, reason: str, *, by_peer: bool, application: bool) -> None:
        side = "peer" if by_peer else "local side"
        kind = "application" if application else "transport"
        super().__init__(
            f"connection closed by the {side} ({kind} error code {error_code:#x}"
            + (f": {reason}" if reason else "")
            + ")"
        )
        self.error_code = error_code
        self.reason = reason
        self.by_peer = by_peer
        self.application = application


class RemoteProtocolError(ConnectionClosed):
    """The peer broke the QUIC protocol and this side closed the connection.

    The ``error_code`` is the transport error this side sent (RFC 9000
    section 20.1) and ``reason`` says what the peer did.
    """


class StreamResetError(SansQuicError):
    """The peer reset the stream: it will send nothing more on it (runtimes raise this
    from ``receive()``)."""

    def __init__(self, stream_id: int, error_code: int) -> None:
        super().__init__(f"stream {stream_id} was reset by the peer (error code {error_code})")
        self.stream_id = stream_id
        self.error_code = error_code


class StreamStoppedError(SansQuicError):
    """The peer asked this side to stop sending on the stream (STOP_SENDING)."""

    def __init__(self, stream_id: int, error_code: int) -> None:
        super().__init__(f"stream {stream_id} was stopped by the peer (error code {error_code})")
        self.stream_id = stream_id
        self.error_code = error_code


class BusyError(LocalProtocolError):
    """Another task is already receiving (or sending) on this stream.

    Two readers of one stream would each get arbitrary pieces of it, so the
    second one is refused at once, before anything is read (trio's
    ``BusyResourceError`` model).
    """


class IncompleteRead(SansQuicError):
    """The stream ended before the bytes asked for arrived; ``partial`` holds what did."""

    def __init__(self, expected: int, partial: bytes) -> None:
        super().__init__(f"the stream ended after {len(partial)} of the {expected} bytes asked for")
        self.expected = expected
        self.partial = partial


class ReadLimitExceeded(SansQuicError):
    """The stream sent more than the ``limit`` a whole-stream read allows."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"the stream sent more than the limit of {limit} bytes")
        self.limit = limit
