"""Signed, expiring bearer tokens: HMAC-SHA256, key ids for rotation, constant-time checks.

The compact text form is ``sq1.<key id>.<claims>.<signature>`` with the
claims as base64url JSON (``sub``, ``scp``, ``iat``, ``exp``) and the
signature as base64url HMAC-SHA256 of everything before it. Times are
whatever clock the caller passes as ``now`` (UNIX seconds, usually): the
module reads none.

>>> signer = TokenSigner({"k1": b"a secret of at least 16 bytes"}, key_id="k1")
>>> token = signer.sign("agent-7", scopes=("read",), ttl=60, now=1000.0)
>>> TokenVerifier({"k1": b"a secret of at least 16 bytes"}).verify(token, now=1030.0).subject
'agent-7'
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Callable, Iterable, Mapping

import attrs

from ._auth import AuthMethod, AuthRejection, AuthRequest, Identity
from ._codes import CloseCode
from ._engine import Address
from ._errors import ConfigError, SansQuicError

__all__ = ["InvalidToken", "TokenClaims", "TokenSigner", "TokenVerifier", "token_authenticator"]

_PREFIX = "sq1"
_MIN_KEY = 16
#: Tokens longer than this are refused before any parsing.
MAX_TOKEN_LENGTH = 4096


class InvalidToken(SansQuicError):
    """A token is malformed, forged, signed with an unknown key, or expired."""


@attrs.frozen(kw_only=True)
class TokenClaims:
    """What a valid token says."""

    subject: str
    scopes: tuple[str, ...]
    issued_at: float
    expires_at: float
    key_id: str


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _check_keys(keys: Mapping[str, bytes]) -> dict[str, bytes]:
    keys = dict(keys)
    if not keys:
        raise ConfigError("at least one key is needed")
    for key_id, key in keys.items():
        if not key_id or "." in key_id or not key_id.isascii():
            raise ConfigError(f"key id {key_id!r} must be non-empty ASCII without '.'")
        if not isinstance(key, bytes) or len(key) < _MIN_KEY:
            raise ConfigError(f"key {key_id!r} must be bytes, at least {_MIN_KEY} long")
    return keys


def _signature(key: bytes, signed: str) -> bytes:
    return hmac.new(key, signed.encode("ascii"), hashlib.sha256).digest()


class TokenSigner:
    """Signs tokens with the key ``key_id`` of ``keys``."""

    def __init__(self, keys: Mapping[str, bytes], key_id: str) -> None:
        self._keys = _check_keys(keys)
        if key_id not in self._keys:
            raise ConfigError(f"no key {key_id!r} to sign with")
        self._key_id = key_id

    def sign(self, subject: str, *, scopes: Iterable[str] = (), ttl: float, now: float) -> str:
        """A token for ``subject`` valid from ``now`` for ``ttl`` seconds."""
        if not subject or ttl <= 0:
            raise ConfigError("a token needs a subject and a positive ttl")
        claims = {"sub": subject, "scp": list(scopes), "iat": now, "exp": now + ttl}
        body = _b64(json.dumps(claims, separators=(",", ":"), sort_keys=True).encode())
        signed = f"{_PREFIX}.{self._key_id}.{body}"
        return f"{signed}.{_b64(_signature(self._keys[self._key_id], signed))}"


class TokenVerifier:
    """Verifies tokens signed with any of ``keys`` (several at once, for rotation).

    ``clock_skew`` seconds are allowed either side of the token's validity.
    """

    def __init__(self, keys: Mapping[str, bytes], *, clock_skew: float = 30.0) -> None:
        self._keys = _check_keys(keys)
        self._skew = clock_skew

    def verify(self, token: str | bytes, now: float) -> TokenClaims:
        """The claims of a genuine, current token; otherwise raises :class:`InvalidToken`."""
        if isinstance(token, bytes):
            try:
                token = token.decode("ascii")
            except UnicodeDecodeError:
                raise InvalidToken("a token is ASCII text") from None
        if len(token) > MAX_TOKEN_LENGTH:
            raise InvalidToken("token too long")
        parts = token.split(".")
        if len(parts) != 4 or parts[0] != _PREFIX:
            raise InvalidToken("not a sansquic token")
        _, key_id, body, signature = parts
        key = self._keys.get(key_id)
        if key is None:
            raise InvalidToken(f"unknown key id {key_id!r}")
        try:
            given = _unb64(signature)
        except (binascii.Error, ValueError):
            raise InvalidToken("bad signature encoding") from None
        expected = _signature(key, f"{_PREFIX}.{key_id}.{body}")
        if not hmac.compare_digest(given, expected):
            raise InvalidToken("bad signature")
        try:
            claims = json.loads(_unb64(body))
            subject, scopes = claims["sub"], tuple(claims["scp"])
            issued, expires = float(claims["iat"]), float(claims["exp"])
        except (binascii.Error, ValueError, KeyError, TypeError):
            raise InvalidToken("bad claims") from None
        if not isinstance(subject, str) or not all(isinstance(s, str) for s in scopes):
            raise InvalidToken("bad claims")
        if now > expires + self._skew:
            raise InvalidToken("token expired")
        if now < issued - self._skew:
            raise InvalidToken("token not valid yet")
        return TokenClaims(
            subject=subject, scopes=scopes, issued_at=issued, expires_at=expires, key_id=key_id
        )


def token_authenticator(
    verifier: TokenVerifier,
    *,
    required_scopes: Iterable[str] = (),
    token_time: Callable[[float], float] = lambda now: now,
) -> Callable[[AuthRequest, Address, float], Identity | AuthRejection]:
    """An ``AuthPolicy.authenticator`` that accepts bearer tokens from ``verifier``.

    ``token_time`` maps the connection's clock to the tokens' clock (by
    default they are the same, as on the simulated network; give an offset
    when the runtime's clock is monotonic and tokens carry UNIX time).
    """
    required = frozenset(required_scopes)

    def authenticate(
        request: AuthRequest, address: Address, now: float
    ) -> Identity | AuthRejection:
        if request.method is not AuthMethod.BEARER:
            return AuthRejection(code=CloseCode.AUTH_REJECTED, reason="a bearer token is required")
        try:
            claims = verifier.verify(request.credentials, token_time(now))
        except InvalidToken as exc:
            return AuthRejection(code=CloseCode.AUTH_REJECTED, reason=str(exc))
        if not required <= set(claims.scopes):
            return AuthRejection(code=CloseCode.AUTH_REJECTED, reason="missing scopes")
        return Identity(
            subject=claims.subject,
            scopes=claims.scopes,
            session={"expires_at": repr(claims.expires_at)},
        )

    return authenticate
