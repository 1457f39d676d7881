"""The auth handshake as it runs inside one Connection (see ``_auth.py`` for the format).

The client's first bidirectional stream (id 0) carries the request and the
answer and never surfaces to either application. On a server with an
``AuthPolicy``, every event the client causes is held back until the client
is accepted; then they are released in order.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING

from ._auth import (
    AuthFormatError,
    AuthMethod,
    AuthPolicy,
    AuthRejection,
    AuthRequest,
    Identity,
    MessageReader,
    encode_accepted,
    encode_rejected,
    encode_request,
    parse_accepted_or_rejected,
    parse_request,
)
from ._codes import CloseCode, ClosedBy
from ._engine import Address
from ._errors import LocalProtocolError, SansQuicError
from ._events import (
    Authenticated,
    AuthRejected,
    AuthRequested,
    DatagramReceived,
    Event,
    StreamOpened,
)

if TYPE_CHECKING:
    from ._connection import Connection

__all__ = ["AUTH_STREAM", "AuthFlow", "AuthState"]

#: The client's first bidirectional stream carries the auth handshake.
AUTH_STREAM = 0
#: How long a client waits for the answer after TLS, whatever the server's deadline.
_CLIENT_ANSWER_WAIT = 10.0
#: Rejection codes and reasons this side closes with, so a client that never saw
#: the answer still learns why (from the CONNECTION_CLOSE).
_CLOSE_CODES = frozenset(
    {
        CloseCode.AUTH_REJECTED,
        CloseCode.AUTH_TIMEOUT,
        CloseCode.AUTH_MALFORMED,
        CloseCode.AUTH_BUDGET_EXCEEDED,
        CloseCode.AUTH_STREAM_ABORTED,
        CloseCode.INTERNAL_ERROR,
    }
)


class AuthState(enum.Enum):
    WAITING = "waiting"  # server: for the request; client: for the answer
    REQUESTED = "requested"  # server: AuthRequested is out, the application decides
    ACCEPTED = "accepted"
    REJECTED = "rejected"


class AuthFlow:
    """One side of the auth handshake, driving its Connection."""

    def __init__(self, conn: Connection, *, server: bool, limit: int) -> None:
        self._conn = conn
        self.server = server
        self.state = AuthState.WAITING
        self.identity: Identity | None = None
        self.deadline: float | None = None
        self._reader = MessageReader(limit)
        self._held: list[Event] = []
        self._held_streams = self._held_bytes = self._held_datagrams = 0
        self._address: Address | None = None

    # -- both sides --------------------------------------------------------------

    @property
    def gating(self) -> bool:
        """Whether the application must not see the peer's doings (server side):
        until the client is accepted, and never once it was rejected."""
        return self.server and self.state is not AuthState.ACCEPTED

    def stream_data(self, data: bytes, now: float, address: Address | None) -> None:
        """Bytes arrived on the auth stream."""
        if self.state not in (AuthState.WAITING,):
            return  # an answer was given already; anything more is ignored
        if address is not None:
            self._address = address
        try:
            message = self._reader.feed(data)
            if message is None:
                return
            if self.server:
                self._decide(parse_request(message), now)
            else:
                self._answered(parse_accepted_or_rejected(message))
        except AuthFormatError as exc:
            if self.server:
                self._refuse_malformed(str(exc), now)
            else:
                self._conn._close_locally(CloseCode.AUTH_MALFORMED, f"bad auth answer: {exc}")

    def stream_finished(self, now: float) -> None:
        """The peer's FIN arrived on the auth stream: a message still incomplete never will be."""
        if self.state is not AuthState.WAITING:
            return
        if self.server:
            self._refuse_malformed("the auth request ended before it was complete", now)
        else:
            self.state = AuthState.REJECTED
            reason = "the auth answer ended before it was complete"
            self._conn._events.append(
                AuthRejected(
                    code=CloseCode.AUTH_MALFORMED, reason=reason, closed_by=ClosedBy.VIOLATION
                )
            )
            self._conn._close_locally(CloseCode.AUTH_MALFORMED, reason)

    def stream_aborted(self, what: str, now: float) -> None:
        """The peer reset or stopped the auth stream (``what`` says which).

        Before the handshake ended that is a protocol violation: the connection
        closes with ``AUTH_STREAM_ABORTED``. Afterwards both sides are done with
        the stream and it changes nothing.
        """
        if not self.pending:
            return
        reason = f"the peer {what} the auth stream before the auth handshake ended"
        self._held.clear()
        self.state = AuthState.REJECTED
        if self.server:
            self._failed(now)
        else:
            self._conn._events.append(
                AuthRejected(
                    code=CloseCode.AUTH_STREAM_ABORTED, reason=reason, closed_by=ClosedBy.VIOLATION
                )
            )
        self._conn._close_locally(CloseCode.AUTH_STREAM_ABORTED, reason)

    # -- client ------------------------------------------------------------------

    def start_client(self, request: AuthRequest) -> None:
        """Send the request on stream 0 (opened first, so it gets id 0)."""
        conn = self._conn
        stream_id = conn.open_stream(priority=255)
        assert stream_id == AUTH_STREAM
        conn.send(stream_id, encode_request(request), end=True)

    def _answered(self, answer: Identity | AuthRejection) -> None:
        if isinstance(answer, Identity):
            self.state, self.identity = AuthState.ACCEPTED, answer
            self._conn._events.append(Authenticated(identity=answer))
        else:
            self.state = AuthState.REJECTED
            self._conn._events.append(AuthRejected(code=answer.code, reason=answer.reason))

    def terminated(self, error_code: int, reason: str, by_peer: bool) -> None:
        """A client closed by the server before the answer arrived learns why from the close."""
        waiting = not self.server and self.state is AuthState.WAITING
        if waiting and by_peer and error_code in _CLOSE_CODES:
            self.state = AuthState.REJECTED
            self._conn._events.append(AuthRejected(code=error_code, reason=reason))

    # -- server ------------------------------------------------------------------

    def handshake_done(self, now: float, policy: AuthPolicy | None) -> None:
        """Start the clock: the server's policy deadline, or how long a client waits."""
        self.deadline = now + (policy.deadline if policy is not None else _CLIENT_ANSWER_WAIT)

    def hold(self, event: Event) -> None:
        """Keep an event from the application until the client is accepted."""
        if self.state is AuthState.REJECTED:
            return  # a rejected client's doings are discarded
        if isinstance(event, StreamOpened):
            self._held_streams += 1
        elif isinstance(event, DatagramReceived):
            self._held_datagrams += 1
            self._held_bytes += len(event.data)
        self._held.append(event)
        self._check_budget()

    def held_bytes(self, size: int) -> None:
        self._held_bytes += size
        self._check_budget()

    def _check_budget(self) -> None:
        if self.state is AuthState.REJECTED:
            return  # closed already: one flood counts once towards lockout
        policy = self._conn._config.auth
        assert policy is not None
        if (
            self._held_streams > policy.held_streams
            or self._held_bytes > policy.held_bytes
            or self._held_datagrams > policy.held_datagrams
        ):
            self._held.clear()
            self.state = AuthState.REJECTED
            self._failed(self._conn._now_hint())  # flooding before acceptance counts to lockout
            self._conn._close_locally(
                CloseCode.AUTH_BUDGET_EXCEEDED, "sent too much before being accepted"
            )

    @property
    def pending(self) -> bool:
        """Waiting on a decision (server) or an answer (client)."""
        return self.state in (AuthState.WAITING, AuthState.REQUESTED)

    def timer(self) -> float | None:
        return self.deadline if self.pending else None

    def handle_timer(self, now: float) -> None:
        if self.pending and self.deadline is not None and now >= self.deadline:
            self._held.clear()
            self.state = AuthState.REJECTED
            if self.server:
                self._failed(now)
                self._conn._close_locally(CloseCode.AUTH_TIMEOUT, "no auth decision in time")
            else:
                reason = "no auth answer from the server (does it have an AuthPolicy?)"
                self._conn._events.append(
                    AuthRejected(
                        code=CloseCode.AUTH_TIMEOUT, reason=reason, closed_by=ClosedBy.LOCAL
                    )
                )
                self._conn._close_locally(CloseCode.AUTH_TIMEOUT, reason)

    def _decide(self, request: AuthRequest, now: float) -> None:
        policy = self._conn._config.auth
        assert policy is not None
        address = self._address or ("", 0)
        if request.method is AuthMethod.MUTUAL_TLS:
            outcome: Identity | AuthRejection | None = AuthRejection(
                code=CloseCode.AUTH_REJECTED, reason="mutual TLS is not offered by this engine"
            )
        elif policy.authenticator is not None:
            try:
                outcome = policy.authenticator(request, address, now)
            except Exception:
                # The peer's input must not crash the caller's I/O loop; the client
                # learns only that the server failed, not how.
                outcome = AuthRejection(
                    code=CloseCode.INTERNAL_ERROR, reason="the server's authenticator failed"
                )
        elif request.method is AuthMethod.NONE and policy.allow_anonymous:
            outcome = Identity(subject="anonymous")
        else:
            outcome = None
        if isinstance(outcome, Identity):
            self._accept(outcome)
        elif isinstance(outcome, AuthRejection):
            self._reject(outcome, now)
        elif outcome is None:
            self.state = AuthState.REQUESTED
            self._conn._events.append(AuthRequested(request=request, address=address))
        else:
            reason = "the server's authenticator returned neither Identity nor AuthRejection"
            self._reject(AuthRejection(code=CloseCode.INTERNAL_ERROR, reason=reason), now)

    def accept(self, identity: Identity) -> None:
        self._require_pending("accept_auth")
        self._accept(identity)

    def reject(self, rejection: AuthRejection, now: float) -> None:
        self._require_pending("reject_auth")
        self._reject(rejection, now)

    def _require_pending(self, what: str) -> None:
        if not self.server:
            raise LocalProtocolError(f"{what}() is for servers")
        if self.state is not AuthState.REQUESTED:
            raise LocalProtocolError(
                f"{what}() answers an AuthRequested event; the auth state is {self.state.value}"
            )

    def _accept(self, identity: Identity) -> None:
        conn = self._conn
        self.state, self.identity = AuthState.ACCEPTED, identity
        if not self._answer(encode_accepted(identity)):
            return
        conn._events.append(Authenticated(identity=identity))
        conn._events.extend(self._held)  # everything the client sent, in order
        self._held.clear()

    def _reject(self, rejection: AuthRejection, now: float) -> None:
        conn = self._conn
        self.state = AuthState.REJECTED
        self._held.clear()  # discarded: the application never hears of it
        self._failed(now)
        if not self._answer(encode_rejected(rejection)):
            return
        # Close once the answer is on its way, so the client can read the code. The
        # close carries sansquic's own code (malformed, internal error) when it is one.
        code = rejection.code if rejection.code in _CLOSE_CODES else CloseCode.AUTH_REJECTED
        conn._close_after_flush(code, rejection.reason)

    def _refuse_malformed(self, problem: str, now: float) -> None:
        """Close over a request that is not one, with no answer on the stream: a
        client that does not speak the auth handshake took it for its own first
        stream, and would read an answer there as the server's data. The close's
        code and reason say it all to a client that does."""
        self.state = AuthState.REJECTED
        self._held.clear()
        self._failed(now)
        reason = f"this server requires the auth handshake: {problem}"
        self._conn._close_after_flush(CloseCode.AUTH_MALFORMED, reason)

    def _answer(self, message: bytes) -> bool:
        """Send the answer and FIN on the auth stream; False (and closed) if it cannot go."""
        try:
            self._conn.send(AUTH_STREAM, message, end=True)
        except SansQuicError:
            # The peer already stopped the stream (or closed): it gave up on the answer.
            self._held.clear()
            self.state = AuthState.REJECTED
            self._conn._close_locally(
                CloseCode.AUTH_STREAM_ABORTED, "the auth answer could not be sent"
            )
            return False
        return True

    def _failed(self, now: float) -> None:
        hooks = self._conn._hooks
        if hooks is not None:
            hooks.auth_failed(self._conn, now)


def new_flow(conn: Connection, *, server: bool) -> AuthFlow | None:
    """The flow a connection needs: servers with ``Config.auth``, clients with
    ``Config.auth_request``; ``None`` otherwise."""
    config = conn._config
    if server and config.auth is not None:
        return AuthFlow(conn, server=True, limit=config.auth.max_request_size)
    if not server and config.auth_request is not None:
        return AuthFlow(conn, server=False, limit=64 * 1024 + 4)
    return None
