"""Application error codes sansquic itself closes connections with, and who ends a connection."""

from __future__ import annotations

import enum

__all__ = ["CloseCode", "ClosedBy"]


class CloseCode(enum.IntEnum):
    """Application close codes chosen by sansquic, in a range ("SQ") apps are unlikely to use."""

    #: The peer kept exceeding a rate limit of :class:`~sansquic.ratelimit.RateLimits`.
    RATE_LIMITED = 0x5351_0001
    #: The server rejected the client's credentials (the reason says why).
    AUTH_REJECTED = 0x5351_0002
    #: No auth decision within ``AuthPolicy.deadline``.
    AUTH_TIMEOUT = 0x5351_0003
    #: The auth request or answer was malformed or too large.
    AUTH_MALFORMED = 0x5351_0004
    #: The client sent more streams, bytes or datagrams than allowed before acceptance.
    AUTH_BUDGET_EXCEEDED = 0x5351_0005
    #: The peer reset or stopped the auth stream before the auth handshake ended.
    AUTH_STREAM_ABORTED = 0x5351_0006
    #: This side failed: a handler raised (or let a peer's reset escape), or an
    #: authenticator raised. The runtime logs the exception.
    INTERNAL_ERROR = 0x5351_0007


class ClosedBy(enum.Enum):
    """Who or what ended a connection: ``ConnectionTerminated.closed_by`` and
    ``ConnectionClosed.closed_by``; each has its own :class:`~sansquic.ConnectionClosed`
    subclass, so ``except`` can tell them apart."""

    #: This side closed it: the application called ``close()``, or sansquic closed with
    #: one of its :class:`CloseCode` values (a rate limit, a failed handler).
    LOCAL = "local"
    #: The peer sent CONNECTION_CLOSE (:class:`~sansquic.PeerClosedError`).
    PEER = "peer"
    #: This side closed because the peer broke the protocol
    #: (:class:`~sansquic.RemoteProtocolError`).
    VIOLATION = "violation"
    #: Nothing was heard for ``Config.idle_timeout`` (:class:`~sansquic.IdleTimeoutError`).
    IDLE = "idle"
    #: The peer sent a stateless reset: it lost the connection's state, for instance
    #: on a restart (:class:`~sansquic.StatelessResetError`).
    STATELESS_RESET = "stateless_reset"
    #: During the handshake, the runtime's socket reported the peer's address
    #: unreachable (an ICMP port or host unreachable): nothing listens there
    #: (:class:`~sansquic.PeerUnreachableError`).
    UNREACHABLE = "unreachable"
