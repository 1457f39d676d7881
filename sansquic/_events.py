"""Events a :class:`~sansquic.Connection` hands out from ``next_event()``.

Every event is a frozen, slotted, keyword-only class: compare them, hash them,
match on them; never mutate them.
"""

from __future__ import annotations

import attrs

from ._auth import AuthRequest, Identity
from ._codes import ClosedBy

__all__ = [
    "AuthRejected",
    "AuthRequested",
    "Authenticated",
    "ConnectionTerminated",
    "DatagramReceived",
    "Event",
    "HandshakeCompleted",
    "StreamEnded",
    "StreamOpened",
    "StreamReadable",
    "StreamReset",
    "StreamStopped",
    "StreamWritable",
    "StreamsAvailable",
]


@attrs.frozen(kw_only=True, slots=True)
class Event:
    """Base class of all events."""


@attrs.frozen(kw_only=True, slots=True)
class HandshakeCompleted(Event):
    """The TLS handshake finished; ``alpn`` is the negotiated protocol.

    Streams and datagrams may now flow both ways. ``resumed``: a session
    ticket was used; ``early_data_accepted``: the 0-RTT data the client sent
    was taken (when False, a client's early bytes are sent again, in 1-RTT).
    """

    alpn: str | None
    resumed: bool = False
    early_data_accepted: bool = False


@attrs.frozen(kw_only=True, slots=True)
class AuthRequested(Event):
    """(Server) A client asks to be accepted: answer with ``accept_auth(identity)``
    or ``reject_auth(code, reason)`` before ``AuthPolicy.deadline``."""

    request: AuthRequest
    address: tuple[str, int]


@attrs.frozen(kw_only=True, slots=True)
class Authenticated(Event):
    """The auth handshake accepted the client; ``identity`` is who it is.

    On a server, the client's held streams and datagrams follow this event.
    """

    identity: Identity


@attrs.frozen(kw_only=True, slots=True)
class AuthRejected(Event):
    """(Client) The auth handshake failed; the connection is closing.

    ``closed_by`` is ``PEER`` when the server rejected the credentials,
    ``VIOLATION`` when its answer was broken (cut short, or its stream reset),
    ``LOCAL`` when no answer came in time.
    """

    code: int
    reason: str
    closed_by: ClosedBy = ClosedBy.PEER


@attrs.frozen(kw_only=True, slots=True)
class StreamOpened(Event):
    """The peer opened a stream; ``read()`` it, and ``send()`` on it if bidirectional."""

    stream_id: int
    bidirectional: bool


@attrs.frozen(kw_only=True, slots=True)
class StreamReadable(Event):
    """Data waits on the stream: call ``read(stream_id)`` until it returns ``b""``.

    Edge-triggered: it fires when data arrives on a stream whose buffer was
    empty, so read the stream dry before waiting for the next one.
    """

    stream_id: int


@attrs.frozen(kw_only=True, slots=True)
class StreamWritable(Event):
    """The stream's send buffer drained below its low watermark: ``send()`` more.

    Comes once for each time ``writable()`` turned False for the stream.
    """

    stream_id: int


@attrs.frozen(kw_only=True, slots=True)
class StreamsAvailable(Event):
    """The peer raised its stream limit: ``available`` more streams of this kind can be
    opened without waiting."""

    bidirectional: bool
    available: int


@attrs.frozen(kw_only=True, slots=True)
class StreamEnded(Event):
    """The peer finished the stream (FIN).

    Data still buffered stays readable; once ``read()`` has drained it the
    stream's receive side is closed.
    """

    stream_id: int


@attrs.frozen(kw_only=True, slots=True)
class StreamReset(Event):
    """The peer abandoned its side of the stream (RESET_STREAM).

    Unread data on the stream is discarded; ``read()`` returns ``b""`` from now on.
    """

    stream_id: int
    error_code: int


@attrs.frozen(kw_only=True, slots=True)
class StreamStopped(Event):
    """The peer asked this side to stop sending (STOP_SENDING).

    The stream's send side has been reset with the peer's code; a later
    ``send()`` raises :class:`~sansquic.StreamStoppedError`.
    """

    stream_id: int
    error_code: int


@attrs.frozen(kw_only=True, slots=True)
class DatagramReceived(Event):
    """An unreliable datagram (RFC 9221) arrived."""

    data: bytes


@attrs.frozen(kw_only=True, slots=True)
class ConnectionTerminated(Event):
    """The connection is over; this is the last event it produces.

    ``closed_by`` tells who or what ended it (:class:`~sansquic.ClosedBy`: this
    side, the peer, a protocol violation by the peer, the idle timeout, or a
    stateless reset); the commands refused from now on raise the matching
    :class:`~sansquic.ConnectionClosed` subclass. ``application`` is True when
    ``error_code`` is an application code given to ``close()``, False when it
    is a QUIC transport error code (RFC 9000 section 20.1), as for an idle
    timeout (code 0, reason ``"idle timeout"``) or a protocol violation.
    """

    error_code: int
    reason: str
    closed_by: ClosedBy
    application: bool

    @property
    def by_peer(self) -> bool:
        """True when the peer ended the connection (a close or a stateless reset)."""
        return self.closed_by in (ClosedBy.PEER, ClosedBy.STATELESS_RESET)
