"""Stateless address-validation tokens for Retry (RFC 9000 section 8.1.2).

A token binds the client's address, the original destination connection id,
the Retry's source connection id and an expiry under an HMAC-SHA256 key. Keys
rotate; the previous key stays valid so tokens issued just before a rotation
still work. Nothing is stored per client.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import struct

from ._engine import Address

__all__ = ["RetryTokens"]

_FORMAT = 1
_MAC_SIZE = 16
_HEAD = struct.Struct("!BBd")  # format, key id, expiry


class RetryTokens:
    """Issues and checks Retry tokens; ``now`` is the caller's monotonic clock."""

    def __init__(self, lifetime: float, rotate_every: float = 60.0, now: float = 0.0) -> None:
        self._lifetime = lifetime
        self._rotate_every = max(rotate_every, lifetime)
        self._key_id = 0
        self._keys: dict[int, bytes] = {0: secrets.token_bytes(32)}
        self._rotate_at = now + self._rotate_every

    def _rotate(self, now: float) -> None:
        if now >= self._rotate_at:
            self._key_id = (self._key_id + 1) % 256
            # Keep the current and the previous key only.
            self._keys = {
                self._key_id: secrets.token_bytes(32),
                (self._key_id - 1) % 256: self._keys[(self._key_id - 1) % 256],
            }
            self._rotate_at = now + self._rotate_every

    @staticmethod
    def _mac(key: bytes, head: bytes, address: Address, odcid: bytes, retry_scid: bytes) -> bytes:
        message = b"".join(
            (
                head,
                len(odcid).to_bytes(1, "big"),
                odcid,
                len(retry_scid).to_bytes(1, "big"),
                retry_scid,
                repr((address[0], address[1])).encode(),
            )
        )
        return hmac.new(key, message, hashlib.sha256).digest()[:_MAC_SIZE]

    def issue(self, address: Address, odcid: bytes, retry_scid: bytes, now: float) -> bytes:
        """A token for a client at ``address`` whose first Initial went to ``odcid``."""
        self._rotate(now)
        head = _HEAD.pack(_FORMAT, self._key_id, now + self._lifetime)
        mac = self._mac(self._keys[self._key_id], head, address, odcid, retry_scid)
        return head + len(odcid).to_bytes(1, "big") + odcid + mac

    def validate(
        self, token: bytes, address: Address, retry_scid: bytes, now: float
    ) -> bytes | None:
        """The original destination connection id if ``token`` is genuine, fresh and
        for ``address``; otherwise ``None``."""
        self._rotate(now)
        if len(token) < _HEAD.size + 1 + _MAC_SIZE:
            return None
        version, key_id, expiry = _HEAD.unpack_from(token)
        odcid_length = token[_HEAD.size]
        odcid = token[_HEAD.size + 1 : _HEAD.size + 1 + odcid_length]
        mac = token[_HEAD.size + 1 + odcid_length :]
        key = self._keys.get(key_id)
        if version != _FORMAT or key is None or len(odcid) != odcid_length:
            return None
        expected = self._mac(key, token[: _HEAD.size], address, odcid, retry_scid)
        if not hmac.compare_digest(mac, expected) or now > expiry:
            return None
        return odcid
