"""Application error codes sansquic itself closes connections with."""

from __future__ import annotations

import enum

__all__ = ["CloseCode"]


class CloseCode(enum.IntEnum):
    """Application close codes chosen by sansquic, in a range ("SQ") apps are unlikely to use."""

    #: The peer kept exceeding a rate limit of :class:`~sansquic.ratelimit.RateLimits`.
    RATE_LIMITED = 0x5351_0001
