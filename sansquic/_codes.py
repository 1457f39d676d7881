"""Application error codes sansquic itself closes connections with."""

from __future__ import annotations

import enum

__all__ = ["CloseCode"]


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
