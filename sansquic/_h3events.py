"""Events an :class:`~sansquic.H3Connection` hands out (frozen, slotted, keyword-only)."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

import attrs

from ._auth import Identity
from ._events import Event

__all__ = [
    "H3GoAway",
    "H3ProtocolFailed",
    "WebTransportDatagram",
    "WebTransportSessionClosed",
    "WebTransportSessionCredit",
    "WebTransportSessionDraining",
    "WebTransportSessionReady",
    "WebTransportSessionRefused",
    "WebTransportStreamData",
    "WebTransportStreamOpened",
    "WebTransportStreamReset",
    "WebTransportStreamStopped",
]


def _frozen(value: Mapping[str, str] | None) -> Mapping[str, str]:
    return MappingProxyType(dict(value or {}))


@attrs.frozen(kw_only=True, slots=True)
class WebTransportSessionReady(Event):
    """A WebTransport session is open: on a server, the CONNECT request passed auth
    and was answered 200; on a client, the server's 200 arrived.

    ``session_id`` is the CONNECT request's stream id; ``path`` its ``:path``;
    ``headers`` the request's (server) or response's (client) regular fields.
    """

    session_id: int
    path: str
    identity: Identity | None
    headers: Mapping[str, str] = attrs.field(factory=dict, converter=_frozen)


@attrs.frozen(kw_only=True, slots=True)
class WebTransportSessionRefused(Event):
    """(Client) The server answered the CONNECT request with a non-2xx ``status``."""

    session_id: int
    status: int


@attrs.frozen(kw_only=True, slots=True)
class WebTransportSessionClosed(Event):
    """The session ended: the peer sent CLOSE_WEBTRANSPORT_SESSION (``code``,
    ``reason``), finished or reset the CONNECT stream (code 0), or this side closed it.

    ``violation``: the HTTP/3 error code (``WT_FLOW_CONTROL_ERROR``) when this side
    ended the session because the peer broke its flow control; ``reason`` says how.
    """

    session_id: int
    code: int
    reason: str
    violation: int | None = None


@attrs.frozen(kw_only=True, slots=True)
class WebTransportSessionDraining(Event):
    """The peer asked to wind the session down: it sent DRAIN_WEBTRANSPORT_SESSION,
    or an HTTP/3 GOAWAY for the whole connection. The session still works: finish
    up and close it. Told once per session."""

    session_id: int


@attrs.frozen(kw_only=True, slots=True)
class WebTransportSessionCredit(Event):
    """The peer raised the session's data or stream limit (WT_MAX_DATA or
    WT_MAX_STREAMS): opens refused with :class:`~sansquic.SessionBlocked` and
    sends cut short by the data limit may go on."""

    session_id: int


@attrs.frozen(kw_only=True, slots=True)
class H3GoAway(Event):
    """The peer sent GOAWAY (RFC 9114 5.2): no new sessions on this connection.

    From a server, ``identifier`` is the first request stream id it did not
    process (sessions at or above it were refused, status 0); from a client,
    a push id. Open sessions are told to drain.
    """

    identifier: int


@attrs.frozen(kw_only=True, slots=True)
class WebTransportStreamOpened(Event):
    """The peer opened a stream in ``session_id``; its data follows as
    :class:`WebTransportStreamData`."""

    session_id: int
    stream_id: int
    bidirectional: bool


@attrs.frozen(kw_only=True, slots=True)
class WebTransportStreamData(Event):
    """Bytes on a stream of ``session_id``; ``ended``: the peer finished it (FIN)."""

    session_id: int
    stream_id: int
    data: bytes
    ended: bool = False


@attrs.frozen(kw_only=True, slots=True)
class WebTransportStreamReset(Event):
    """The peer reset a session stream with ``error_code``."""

    stream_id: int
    error_code: int


@attrs.frozen(kw_only=True, slots=True)
class WebTransportStreamStopped(Event):
    """The peer asked this side to stop sending on a session stream."""

    stream_id: int
    error_code: int


@attrs.frozen(kw_only=True, slots=True)
class WebTransportDatagram(Event):
    """An HTTP datagram for ``session_id`` arrived."""

    session_id: int
    data: bytes


@attrs.frozen(kw_only=True, slots=True)
class H3ProtocolFailed(Event):
    """The peer broke HTTP/3 or WebTransport; the connection is closing with ``error_code``."""

    error_code: int
    reason: str
