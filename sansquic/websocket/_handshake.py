"""Auth in the WebSocket opening handshake, decided by the server's usual ``Authenticator``.

The client presents ``Config.auth_request`` in the HTTP upgrade request: whole
(method, credentials, metadata) as ``sansquic-auth: <base64url of the auth
request message>`` (docs/auth.md's wire format), a bearer token alone as
``Authorization: Bearer <token>``, or (for browsers, which cannot set headers
on a WebSocket) as the ``token`` query parameter. The server decides with its
``AuthPolicy`` before the upgrade is answered: nothing reaches the application
first, and a refusal is an HTTP 403 carrying the code and reason.
"""

from __future__ import annotations

import base64
import binascii
import urllib.parse
from collections.abc import Iterable

from .._auth import (
    AuthFormatError,
    AuthMethod,
    AuthPolicy,
    AuthRejection,
    AuthRequest,
    Identity,
    encode_request,
    parse_request,
)
from .._codes import CloseCode
from .._engine import Address

__all__ = [
    "SUBPROTOCOL",
    "authenticate_handshake",
    "handshake_headers",
    "rejection_headers",
    "rejection_from_headers",
]

#: The WebSocket subprotocol both sides name: this framing, version 1.
SUBPROTOCOL = "sansquic.mux.v1"
_AUTH_HEADER = b"sansquic-auth"
_CODE_HEADER = b"sansquic-error-code"
_REASON_HEADER = b"sansquic-error-reason"
Headers = Iterable[tuple[bytes, bytes]]


def handshake_headers(request: AuthRequest | None) -> list[tuple[bytes, bytes]]:
    """The upgrade request's headers that carry ``request`` (none without one)."""
    if request is None:
        return []
    headers = [(_AUTH_HEADER, base64.urlsafe_b64encode(encode_request(request)))]
    if request.method is AuthMethod.BEARER and not request.metadata:
        headers = [(b"authorization", b"Bearer " + request.credentials)]
    return headers


def _request_from(target: str, headers: Headers) -> AuthRequest | None:
    """The auth request in an upgrade request; raises AuthFormatError if malformed."""
    for name, value in headers:
        name = name.lower()
        if name == _AUTH_HEADER:
            try:
                return parse_request(base64.urlsafe_b64decode(value))
            except (binascii.Error, ValueError) as exc:
                raise AuthFormatError(f"a malformed {_AUTH_HEADER.decode()} header") from exc
        if name == b"authorization":
            scheme, _, token = value.partition(b" ")
            if scheme.lower() != b"bearer" or not token.strip():
                raise AuthFormatError("only 'Authorization: Bearer <token>' is understood")
            return AuthRequest(credentials=token.strip())
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(target).query)
    if "token" in query:
        return AuthRequest(credentials=query["token"][0].encode())
    return None


def authenticate_handshake(
    policy: AuthPolicy | None, target: str, headers: Headers, address: Address, now: float
) -> Identity | AuthRejection | None:
    """The server's decision on an upgrade request: an ``Identity``, an
    ``AuthRejection``, or None when the server asks for no auth.

    It follows the QUIC auth handshake's rules: the policy's ``authenticator``
    decides (its failure is the server's, reported as INTERNAL_ERROR), or
    ``allow_anonymous`` admits a request without credentials. Without an
    authenticator there is no one to ask later (no ``AuthRequested`` here), so
    anything else is rejected.
    """
    if policy is None:
        return None
    try:
        request = _request_from(target, headers)
    except AuthFormatError as exc:
        return AuthRejection(code=CloseCode.AUTH_MALFORMED, reason=str(exc))
    if request is None:
        request = AuthRequest(method=AuthMethod.NONE)
    if request.method is AuthMethod.MUTUAL_TLS:
        reason = "mutual TLS is not offered over WebSocket"
        return AuthRejection(code=CloseCode.AUTH_REJECTED, reason=reason)
    if policy.authenticator is not None:
        try:
            outcome = policy.authenticator(request, address, now)
        except Exception:
            reason = "the server's authenticator failed"
            return AuthRejection(code=CloseCode.INTERNAL_ERROR, reason=reason)
        if isinstance(outcome, (Identity, AuthRejection)):
            return outcome
        reason = "the server's authenticator returned neither Identity nor AuthRejection"
        return AuthRejection(code=CloseCode.INTERNAL_ERROR, reason=reason)
    if request.method is AuthMethod.NONE and policy.allow_anonymous:
        return Identity(subject="anonymous")
    return AuthRejection(code=CloseCode.AUTH_REJECTED, reason="no authenticator admits this client")


def rejection_headers(rejection: AuthRejection) -> list[tuple[bytes, bytes]]:
    """The 403 answer's headers that carry ``rejection`` to the client."""
    reason = urllib.parse.quote(rejection.reason[:200]).encode()
    return [(_CODE_HEADER, str(rejection.code).encode()), (_REASON_HEADER, reason)]


def rejection_from_headers(status: int, headers: Headers) -> AuthRejection:
    """The rejection a refused upgrade carried (any status and headers, never raising)."""
    code, reason = int(CloseCode.AUTH_REJECTED), f"the server refused the upgrade (HTTP {status})"
    for name, value in headers:
        name = name.lower()
        if name == _CODE_HEADER and value.isdigit() and len(value) <= 10:
            code = int(value)
        elif name == _REASON_HEADER:
            reason = urllib.parse.unquote(value.decode("latin-1"))
    return AuthRejection(code=code, reason=reason)
