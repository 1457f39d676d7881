"""The auth handshake: its types, its policy and its wire format (docs/auth.md).

Every message is ``version (1) | kind (1) | body length (2, big-endian) | body``.

- request (kind 1): ``method (1) | credentials (2-byte length + bytes) | metadata``
- accepted (kind 2): ``identity subject (2 + UTF-8) | scopes (metadata) | session (metadata)``
- rejected (kind 3): ``code (4) | reason (2 + UTF-8)``

``metadata`` is ``count (1)`` then pairs of ``key (1 + UTF-8) | value (2 + UTF-8)``.
Parsers take any bytes and either return a message or raise ``AuthFormatError``.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

import attrs

from ._engine import Address
from ._errors import SansQuicError
from ._validators import bool_, int_in, positive

__all__ = [
    "AuthFormatError",
    "AuthMethod",
    "AuthPolicy",
    "AuthRejection",
    "AuthRequest",
    "Authenticator",
    "Identity",
    "MessageReader",
    "encode_accepted",
    "encode_rejected",
    "encode_request",
    "parse_accepted_or_rejected",
    "parse_request",
]

VERSION = 1
_REQUEST, _ACCEPTED, _REJECTED = 1, 2, 3
_HEAD = struct.Struct("!BBH")
#: The largest message body the format allows (its length field is 2 bytes).
MAX_BODY = 0xFFFF


class AuthFormatError(SansQuicError, ValueError):
    """An auth message is malformed, of an unknown version, or too large."""


class AuthMethod(enum.IntEnum):
    """How the client proves who it is."""

    #: No credentials; accepted only where the server allows anonymous peers.
    NONE = 0
    #: A bearer token in ``credentials`` (e.g. from :class:`~sansquic.tokens.TokenSigner`).
    BEARER = 1
    #: The TLS client certificate. aioquic 1.7 offers no public way to request one,
    #: so servers reject it with reason "mutual TLS is not offered by this engine".
    MUTUAL_TLS = 2


def _frozen_mapping(value: Mapping[str, str] | None) -> Mapping[str, str]:
    return MappingProxyType(dict(value or {}))


@attrs.frozen(kw_only=True)
class AuthRequest:
    """What the client presents: set it as ``Config.auth_request`` on the client."""

    method: AuthMethod = AuthMethod.BEARER
    credentials: bytes = b""
    #: Client metadata, e.g. ``{"agent_id": "a7", "capabilities": "vision", "version": "1.2"}``.
    metadata: Mapping[str, str] = attrs.field(factory=dict, converter=_frozen_mapping)


@attrs.frozen(kw_only=True)
class Identity:
    """Who the server accepted, and session information it shares with the client."""

    subject: str
    scopes: tuple[str, ...] = ()
    session: Mapping[str, str] = attrs.field(factory=dict, converter=_frozen_mapping)


@attrs.frozen(kw_only=True)
class AuthRejection:
    """A refusal: an application ``code`` for the client, and a ``reason``."""

    code: int = 1
    reason: str = "rejected"


#: Decides at once, without I/O: (request, peer address, now) -> Identity or AuthRejection.
Authenticator = Callable[[AuthRequest, Address, float], "Identity | AuthRejection"]


def _authenticator(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and not callable(value):
        from ._errors import ConfigError

        raise ConfigError(f"authenticator must be callable or None, not {value!r}")


@attrs.frozen(kw_only=True)
class AuthPolicy:
    """The server's auth rules: set it as ``Config.auth`` on the server.

    With an ``authenticator`` the connection decides as soon as the request
    arrives; without one it emits ``AuthRequested`` and waits for
    ``accept_auth()`` / ``reject_auth()``. Until then nothing the client sends
    reaches the application, and what it sends is held within the budgets
    below (beyond them the connection closes with
    ``CloseCode.AUTH_BUDGET_EXCEEDED``).
    """

    authenticator: Authenticator | None = attrs.field(default=None, validator=_authenticator)
    #: Accept ``AuthMethod.NONE`` requests (as subject "anonymous") when no authenticator decides.
    allow_anonymous: bool = attrs.field(default=False, validator=bool_)
    #: Seconds from the end of the TLS handshake to a decision; then ``AUTH_TIMEOUT``.
    deadline: float = attrs.field(default=5.0, validator=positive)
    #: Largest auth request accepted, in bytes.
    max_request_size: int = attrs.field(default=16 * 1024, validator=int_in(16, MAX_BODY + 4))
    #: What the client may send before it is accepted: streams, stream bytes, datagrams.
    held_streams: int = attrs.field(default=100, validator=int_in(0, 10**6))
    held_bytes: int = attrs.field(default=256 * 1024, validator=int_in(0, 2**40))
    held_datagrams: int = attrs.field(default=64, validator=int_in(0, 10**6))
    #: Lockout (server Endpoints): this many failures from one address key within
    #: ``failure_window`` seconds refuse its new connections for ``lockout`` seconds.
    max_failures: int = attrs.field(default=5, validator=int_in(1, 10**6))
    failure_window: float = attrs.field(default=60.0, validator=positive)
    lockout: float = attrs.field(default=300.0, validator=positive)


# -- wire format -------------------------------------------------------------------


def _message(kind: int, body: bytes) -> bytes:
    if len(body) > MAX_BODY:
        raise AuthFormatError(f"an auth message body of {len(body)} bytes is over {MAX_BODY}")
    return _HEAD.pack(VERSION, kind, len(body)) + body


def _text(value: str, width: int) -> bytes:
    raw = value.encode("utf-8")
    if len(raw) >= 1 << (8 * width):
        raise AuthFormatError(f"{value[:20]!r}... is too long for the auth format")
    return len(raw).to_bytes(width, "big") + raw


def _metadata(pairs: Mapping[str, str]) -> bytes:
    if len(pairs) > 255:
        raise AuthFormatError("at most 255 metadata entries")
    return bytes([len(pairs)]) + b"".join(_text(k, 1) + _text(v, 2) for k, v in pairs.items())


def encode_request(request: AuthRequest) -> bytes:
    """The request message for ``request``."""
    if len(request.credentials) > 0xFFFF:
        raise AuthFormatError("credentials are limited to 65,535 bytes")
    body = (
        bytes([request.method])
        + len(request.credentials).to_bytes(2, "big")
        + request.credentials
        + _metadata(request.metadata)
    )
    return _message(_REQUEST, body)


def encode_accepted(identity: Identity) -> bytes:
    scopes = {str(i): scope for i, scope in enumerate(identity.scopes)}
    return _message(
        _ACCEPTED, _text(identity.subject, 2) + _metadata(scopes) + _metadata(identity.session)
    )


def encode_rejected(rejection: AuthRejection) -> bytes:
    return _message(_REJECTED, rejection.code.to_bytes(4, "big") + _text(rejection.reason, 2))


class _Cursor:
    """Reads a body front to back; every shortfall is an AuthFormatError."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._at = 0

    def take(self, size: int) -> bytes:
        if self._at + size > len(self._data):
            raise AuthFormatError("auth message ends early")
        chunk = self._data[self._at : self._at + size]
        self._at += size
        return chunk

    def number(self, width: int) -> int:
        return int.from_bytes(self.take(width), "big")

    def text(self, width: int) -> str:
        try:
            return self.take(self.number(width)).decode("utf-8")
        except UnicodeDecodeError:
            raise AuthFormatError("auth message text is not UTF-8") from None

    def metadata(self) -> dict[str, str]:
        pairs = {}
        for _ in range(self.number(1)):
            key = self.text(1)
            pairs[key] = self.text(2)
        return pairs

    def end(self) -> None:
        if self._at != len(self._data):
            raise AuthFormatError("auth message has trailing bytes")


def _split(message: bytes) -> tuple[int, _Cursor]:
    if len(message) < _HEAD.size:
        raise AuthFormatError("auth message ends early")
    version, kind, length = _HEAD.unpack_from(message)
    if version != VERSION:
        raise AuthFormatError(f"auth format version {version} is not supported (only {VERSION})")
    if len(message) != _HEAD.size + length:
        raise AuthFormatError("auth message length does not match its header")
    return kind, _Cursor(message[_HEAD.size :])


def parse_request(message: bytes) -> AuthRequest:
    kind, body = _split(message)
    if kind != _REQUEST:
        raise AuthFormatError(f"expected an auth request, got message kind {kind}")
    try:
        method = AuthMethod(body.number(1))
    except ValueError:
        raise AuthFormatError("unknown auth method") from None
    credentials = body.take(body.number(2))
    metadata = body.metadata()
    body.end()
    return AuthRequest(method=method, credentials=credentials, metadata=metadata)


def parse_accepted_or_rejected(message: bytes) -> Identity | AuthRejection:
    kind, body = _split(message)
    if kind == _ACCEPTED:
        subject = body.text(2)
        scopes = tuple(body.metadata().values())
        session = body.metadata()
        body.end()
        return Identity(subject=subject, scopes=scopes, session=session)
    if kind == _REJECTED:
        code = body.number(4)
        reason = body.text(2)
        body.end()
        return AuthRejection(code=code, reason=reason)
    raise AuthFormatError(f"expected an auth answer, got message kind {kind}")


class MessageReader:
    """Collects stream bytes until one whole message (head plus body) is there."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._data = bytearray()

    def feed(self, data: bytes) -> bytes | None:
        """Add bytes; return the complete message once there is one. Raises
        AuthFormatError past ``limit`` bytes."""
        self._data += data
        if len(self._data) > self._limit:
            raise AuthFormatError(f"auth message over the limit of {self._limit} bytes")
        if len(self._data) < _HEAD.size:
            return None
        _, _, length = _HEAD.unpack_from(self._data)
        if len(self._data) < _HEAD.size + length:
            return None
        return bytes(self._data)
