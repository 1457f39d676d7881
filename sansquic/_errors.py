"""The exception tree: everything sansquic raises derives from :class:`SansQuicError`."""

from __future__ import annotations

from typing import ClassVar

from ._codes import ClosedBy

__all__ = [
    "BusyError",
    "ConfigError",
    "ConnectionClosed",
    "IdleTimeoutError",
    "IncompleteRead",
    "LocalProtocolError",
    "PeerClosedError",
    "PeerUnreachableError",
    "ReadLimitExceeded",
    "RemoteProtocolError",
    "SansQuicError",
    "SendBufferFull",
    "SessionBlocked",
    "StatelessResetError",
    "StreamResetError",
    "StreamStoppedError",
    "closed_error",
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


class SessionBlocked(LocalProtocolError):
    """The peer's WebTransport session limit leaves no room for another stream now;
    nothing was opened. Wait for ``WebTransportSessionCredit``."""

    def __init__(self, session_id: int, limit: int, *, bidirectional: bool) -> None:
        kind = "bidirectional" if bidirectional else "unidirectional"
        super().__init__(
            f"session {session_id}: the peer allows {limit} {kind} streams, all opened; "
            "wait for WebTransportSessionCredit"
        )
        self.session_id = session_id
        self.limit = limit
        self.bidirectional = bidirectional


class ConnectionClosed(SansQuicError):
    """The connection is closing or closed; no more commands are accepted.

    ``error_code`` and ``reason`` are those of the CONNECTION_CLOSE;
    ``closed_by`` tells who or what ended it, and each way has its own
    subclass (:class:`PeerClosedError`, :class:`RemoteProtocolError`,
    :class:`IdleTimeoutError`, :class:`StatelessResetError`); this class itself
    means this side closed. ``application`` is True for an application error
    code, False for a QUIC transport error code. :func:`closed_error` builds the
    right one.
    """

    #: How instances of this class end; every subclass fixes its own.
    CLOSED_BY: ClassVar[ClosedBy] = ClosedBy.LOCAL
    _WHAT: ClassVar[str] = "connection closed by the local side"

    def __init__(
        self,
        error_code: int,
        reason: str,
        *,
        application: bool,
        closed_by: ClosedBy | None = None,
    ) -> None:
        kind = "application" if application else "transport"
        super().__init__(
            f"{self._WHAT} ({kind} error code {error_code:#x}"
            + (f": {reason}" if reason else "")
            + ")"
        )
        self.error_code = error_code
        self.reason = reason
        self.closed_by: ClosedBy = self.CLOSED_BY if closed_by is None else closed_by
        self.application = application

    @property
    def by_peer(self) -> bool:
        """True when the peer ended the connection (a close or a stateless reset)."""
        return self.closed_by in (ClosedBy.PEER, ClosedBy.STATELESS_RESET)


class PeerClosedError(ConnectionClosed):
    """The peer closed the connection (it sent CONNECTION_CLOSE); a server
    rejecting the client's credentials closes this way too."""

    CLOSED_BY: ClassVar[ClosedBy] = ClosedBy.PEER
    _WHAT = "connection closed by the peer"


class RemoteProtocolError(ConnectionClosed):
    """The peer broke the QUIC protocol and this side closed the connection.

    The ``error_code`` is the transport error this side sent (RFC 9000
    section 20.1) and ``reason`` says what the peer did.
    """

    CLOSED_BY: ClassVar[ClosedBy] = ClosedBy.VIOLATION
    _WHAT = "connection closed: the peer broke the protocol"


class IdleTimeoutError(ConnectionClosed):
    """Nothing was heard from the peer for ``Config.idle_timeout``: the connection
    ended silently (no CONNECTION_CLOSE was sent)."""

    CLOSED_BY: ClassVar[ClosedBy] = ClosedBy.IDLE
    _WHAT = "connection timed out (idle)"


class StatelessResetError(ConnectionClosed):
    """The peer sent a stateless reset: it no longer knows the connection (for
    instance, it restarted). Reconnect to go on."""

    CLOSED_BY: ClassVar[ClosedBy] = ClosedBy.STATELESS_RESET
    _WHAT = "connection reset by the peer (stateless reset)"


class PeerUnreachableError(ConnectionClosed):
    """The handshake ended because the network said nothing listens at the peer's
    address (an ICMP port or host unreachable the runtime's socket reported, where
    the OS tells: Linux). Check the host and port, and that the server runs.

    Only a handshake ends this way: once connected, such a report is a hint the
    connection counts and otherwise ignores, since ICMP can be spoofed or transient.
    """

    CLOSED_BY: ClassVar[ClosedBy] = ClosedBy.UNREACHABLE
    _WHAT = "connection failed: the peer is unreachable"


_BY_CAUSE: dict[ClosedBy, type[ConnectionClosed]] = {
    cls.CLOSED_BY: cls
    for cls in (
        ConnectionClosed,
        PeerClosedError,
        RemoteProtocolError,
        IdleTimeoutError,
        StatelessResetError,
        PeerUnreachableError,
    )
}


def closed_error(
    closed_by: ClosedBy, error_code: int, reason: str, *, application: bool
) -> ConnectionClosed:
    """The :class:`ConnectionClosed` subclass that matches ``closed_by``."""
    return _BY_CAUSE[closed_by](error_code, reason, application=application)


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
