"""Admission for the WebSocket server: the QUIC Endpoint's limits, decided in pure code.

The server's runtime asks :meth:`Admission.admit` at each TCP accept and follows
the :class:`Ticket` it gets: drop the socket at once, answer the upgrade request
with a refusal (HTTP 503 or 429, before anything is upgraded), or go on with
TLS, the upgrade and auth before the ticket's deadline, feeding
:meth:`Ticket.took` the request bytes so an oversized request head is refused
with 431. It reports the upgrade (:meth:`Admission.upgraded`) and the socket's
end (:meth:`Admission.release`). The limits are ``Config.rate_limits``, the
same :class:`~sansquic.RateLimits` the QUIC server applies, so both transports
of one server admit alike; memory stays bounded whatever the clients do.
"""

from __future__ import annotations

import enum
from collections import Counter
from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING

import attrs

from .._auth import AuthRejection
from .._engine import Address
from .._errors import LocalProtocolError
from ..ratelimit import KeyedLimiter, RateLimits, TokenBucket, address_key, refusal
from ._handshake import rejection_headers

if TYPE_CHECKING:
    from .._config import Config

__all__ = ["REFUSED_CODE", "Admission", "AdmissionStats", "Ticket", "Verdict"]

#: The error code a refused client sees (QUIC's CONNECTION_REFUSED: the same as over QUIC).
REFUSED_CODE = 0x02
#: Refusals one address key may have in progress; more are dropped, so one address
#: cannot hold the handshake slots with connections that are refused anyway.
REFUSALS_PER_ADDRESS = 4
#: Seconds a refused connection gets for TLS and its request head (it needs no auth).
REFUSAL_TIMEOUT = 2.0
#: Refusals answered with an HTTP status, by reason (the QUIC Endpoint's reasons).
_PHRASES = {
    429: "Too Many Requests",
    431: "Request Header Fields Too Large",
    503: "Service Unavailable",
}
#: Reasons decided at admit (a head found too large later is not one of them).
_REFUSED_AT_ADMIT = frozenset(
    {"connections", "handshakes", "connections per address", "new connection rate"}
)
_STATUS = {
    "connections": 503,
    "handshakes": 503,
    "connections per address": 429,
    "new connection rate": 429,
    "request head too large": 431,
}


class Verdict(enum.Enum):
    """What the runtime does with an accepted TCP connection."""

    #: Go on: TLS, the upgrade request, auth (within the ticket's deadline).
    ADMIT = "admit"
    #: Read the upgrade request, answer it with :attr:`Ticket.status`, close.
    REFUSE = "refuse"
    #: Close the socket at once: even a refusal would cost more than allowed.
    DROP = "drop"


class Ticket:
    """One accepted TCP connection's admission: its verdict and what it may still use.

    ``verdict``, ``reason`` (why refused or dropped) and ``status`` (the HTTP
    status of a refusal) are set at :meth:`Admission.admit`; ``deadline`` is when
    the TLS handshake, the upgrade and auth must be over.
    """

    __slots__ = ("_head", "_max_head", "_refused", "_state", "deadline", "key", "reason", "verdict")

    #: The address key the per-address limits count this connection under.
    key: str
    #: Whether it is admitted, refused (answered) or dropped.
    verdict: Verdict
    #: Why it was refused or dropped ("" when admitted).
    reason: str
    #: When the TLS handshake, the upgrade and auth must be over.
    deadline: float

    def __init__(
        self,
        key: str,
        verdict: Verdict,
        reason: str,
        deadline: float,
        max_head: int,
        refused: Counter[str],
    ) -> None:
        self.key = key
        self._refused = refused
        self.verdict = verdict
        self.reason = reason
        self.deadline = deadline
        self._max_head = max_head
        self._head = 0
        # "handshake" (counted as in progress), "open" (upgraded), "done" (released).
        self._state = "handshake" if verdict is not Verdict.DROP else "done"

    @property
    def status(self) -> int:
        """The HTTP status answering a refused upgrade (0 when admitted)."""
        return _STATUS.get(self.reason, 0) if self.verdict is not Verdict.ADMIT else 0

    def refusal(self) -> bytes:
        """The whole HTTP/1.1 answer refusing this ticket's upgrade (status, the
        reason and :data:`REFUSED_CODE` in sansquic's headers, ``retry-after``), for
        the runtime to send through TLS before it closes the connection."""
        status = self.status
        if not status:
            raise LocalProtocolError("an admitted ticket has no refusal to send")
        rejection = AuthRejection(code=REFUSED_CODE, reason=f"refused: {self.reason}")
        headers = [(b"content-length", b"0"), (b"connection", b"close")]
        if status != 431:  # too big stays too big; the others pass with time
            headers.append((b"retry-after", b"1"))
        headers += rejection_headers(rejection)
        head = f"HTTP/1.1 {status} {_PHRASES[status]}\r\n".encode()
        return head + b"".join(k + b": " + v + b"\r\n" for k, v in headers) + b"\r\n"

    def took(self, size: int) -> bool:
        """``size`` more bytes of the upgrade request's head arrived; False once the
        head is over ``RateLimits.websocket_max_header_bytes`` (then refuse with 431)."""
        if size < 0:
            raise LocalProtocolError("a byte count is not negative")
        self._head += size
        if self._head <= self._max_head:
            return True
        if self.verdict is Verdict.ADMIT:
            self.verdict, self.reason = Verdict.REFUSE, "request head too large"
            self._refused[self.reason] += 1
        return False


@attrs.frozen(kw_only=True, slots=True)
class AdmissionStats:
    """Counters of a WebSocket server's admission at the moment they were asked for."""

    #: TCP connections accepted, upgraded connections alive, handshakes in progress.
    accepted: int
    active: int
    handshakes: int
    #: Upgrades refused with an HTTP status, and sockets closed unanswered, by reason.
    refused: Mapping[str, int]
    dropped: Mapping[str, int]
    #: Addresses the per-address limiters track now (bounded by ``max_tracked_addresses``).
    tracked_addresses: int


class Admission:
    """The WebSocket server's admission decisions under ``limits``.

    Counted like the QUIC Endpoint: connections at once (upgraded or in their
    handshake) overall and per address key, handshakes at once, and new
    connections per second per address key. A refusal costs a TLS handshake, so
    refusals are answered only within ``responses_per_second``, while handshakes
    are under ``max_handshakes`` and while the address key has fewer than
    :data:`REFUSALS_PER_ADDRESS` in progress, each within :data:`REFUSAL_TIMEOUT`;
    beyond that the socket is dropped.
    """

    def __init__(
        self, limits: RateLimits, *, auth_deadline: float | None = None, now: float = 0.0
    ) -> None:
        self._limits = limits
        timeout = limits.websocket_handshake_timeout
        self._timeout = timeout if auth_deadline is None else min(timeout, auth_deadline)
        self._active = 0
        self._handshakes = 0
        self._accepted = 0
        self._per_address: Counter[str] = Counter()
        self._refusing: Counter[str] = Counter()  # refusals in progress, by address key
        self._refused: Counter[str] = Counter()
        self._dropped: Counter[str] = Counter()
        self._responses = TokenBucket(limits.responses_per_second, limits.responses_per_second, now)
        self._new: KeyedLimiter[TokenBucket] | None = None
        rate = limits.new_connections_per_second
        if rate is not None:
            self._new = KeyedLimiter(
                lambda t: TokenBucket(rate, max(1.0, rate), t), limits.max_tracked_addresses
            )

    @classmethod
    def for_config(cls, config: Config, now: float = 0.0) -> Admission:
        """The admission a server with ``config`` applies (its auth deadline bounds the
        handshake too: over WebSocket, auth is part of the upgrade)."""
        auth = config.auth
        return cls(config.rate_limits, auth_deadline=auth.deadline if auth else None, now=now)

    def admit(self, address: Address, now: float) -> Ticket:
        """The verdict on a TCP connection just accepted from ``address``.

        Every ticket not dropped must be given back with :meth:`release`.
        """
        limits = self._limits
        key = address_key(address, limits.ipv4_prefix, limits.ipv6_prefix)
        self._accepted += 1
        reason = self._refusal(key, now)
        verdict, timeout = Verdict.ADMIT, self._timeout
        if reason is not None:
            verdict, timeout = Verdict.REFUSE, min(timeout, REFUSAL_TIMEOUT)
            busy = limits.max_handshakes is not None and self._handshakes >= limits.max_handshakes
            crowded = self._refusing[key] >= REFUSALS_PER_ADDRESS
            if busy or crowded or not self._responses.allow(now):
                verdict = Verdict.DROP
        max_head = limits.websocket_max_header_bytes
        ticket = Ticket(key, verdict, reason or "", now + timeout, max_head, self._refused)
        if verdict is Verdict.DROP:
            self._dropped[ticket.reason] += 1
            return ticket
        if verdict is Verdict.REFUSE:
            self._refused[ticket.reason] += 1
            self._refusing[key] += 1
        self._handshakes += 1
        self._per_address[key] += 1
        return ticket

    def _refusal(self, key: str, now: float) -> str | None:
        return refusal(
            self._limits,
            key,
            now,
            connections=self._active + self._handshakes,
            from_key=self._per_address[key],
            handshakes=self._handshakes,
            new_connections=self._new,
        )

    def upgraded(self, ticket: Ticket) -> None:
        """The server answered ``ticket``'s upgrade with 101: the connection is live."""
        if ticket._state != "handshake" or ticket.verdict is not Verdict.ADMIT:
            raise LocalProtocolError("only an admitted ticket in its handshake is upgraded")
        ticket._state = "open"
        self._handshakes -= 1
        self._active += 1

    def release(self, ticket: Ticket) -> None:
        """``ticket``'s socket is closed (refused, failed, or ended): its counts go.
        Releasing twice, or a dropped ticket, does nothing."""
        if ticket._state == "done":
            return
        if ticket._state == "open":
            self._active -= 1
        else:
            self._handshakes -= 1
            if ticket.verdict is Verdict.REFUSE and ticket.reason in _REFUSED_AT_ADMIT:
                self._refusing[ticket.key] -= 1
                if self._refusing[ticket.key] <= 0:
                    del self._refusing[ticket.key]
        ticket._state = "done"
        self._per_address[ticket.key] -= 1
        if self._per_address[ticket.key] <= 0:
            del self._per_address[ticket.key]  # memory follows the live connections

    def stats(self) -> AdmissionStats:
        """The counters now."""
        return AdmissionStats(
            accepted=self._accepted,
            active=self._active,
            handshakes=self._handshakes,
            refused=MappingProxyType(dict(self._refused)),
            dropped=MappingProxyType(dict(self._dropped)),
            tracked_addresses=len(self._per_address) + (len(self._new) if self._new else 0),
        )
