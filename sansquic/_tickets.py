"""TLS session tickets: where clients keep them, and how servers seal them.

A client keeps the tickets servers send in a :class:`TicketStore` (the
default :class:`MemoryTicketStore` lives as long as its ``Config``); the next
connection to the same server takes one and resumes, skipping the
certificate exchange and, with ``Config.early_data``, sending its first
bytes in 0-RTT.

A server keeps nothing: each ticket it issues is its own resumption state,
sealed (AES-256-GCM) under the first of its :class:`TicketKeys`. Any process
holding the same keys can resume it, and rotating is prepending a new key
and later dropping the old one.
"""

from __future__ import annotations

import hashlib
import os
from collections import OrderedDict, deque
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = ["MemoryTicketStore", "TicketKeys", "TicketStore"]

_KEY_ID_SIZE = 4
_NONCE_SIZE = 12
_MIN_SECRET = 32


@runtime_checkable
class TicketStore(Protocol):
    """Where a client keeps session tickets between connections (``Config.ticket_store``).

    Tickets are opaque bytes, safe to persist (a file, a shared cache); ``key``
    names the server (``"host:port"``). Each ticket is used once: :meth:`take`
    removes what it returns. Methods may be called from several threads at once
    (the threads runtime's connections share their Config's store). An exception
    from either costs only the ticket: the connection goes on without it.
    """

    def put(self, key: str, ticket: bytes) -> None:
        """Keep ``ticket`` for later connections to ``key``."""
        ...

    def take(self, key: str) -> bytes | None:
        """Remove and return the newest ticket for ``key``, or ``None``."""
        ...


class MemoryTicketStore:
    """A :class:`TicketStore` in memory: the newest ``per_server`` tickets of each of
    up to ``max_servers`` servers (the least recently stored server goes first)."""

    def __init__(self, *, per_server: int = 4, max_servers: int = 1024) -> None:
        if per_server < 1 or max_servers < 1:
            raise ValueError("per_server and max_servers must be at least 1")
        self._per_server = per_server
        self._max_servers = max_servers
        # Each step below is one C-level call, atomic under the GIL: threads runtimes
        # share a Config's store between driver threads, and the core takes no locks.
        self._tickets: OrderedDict[str, deque[bytes]] = OrderedDict()

    def __repr__(self) -> str:
        return f"MemoryTicketStore({len(self)} tickets for {len(self._tickets)} servers)"

    def __len__(self) -> int:
        return sum(len(tickets) for tickets in list(self._tickets.values()))

    def put(self, key: str, ticket: bytes) -> None:
        tickets = self._tickets.setdefault(key, deque(maxlen=self._per_server))
        tickets.append(bytes(ticket))
        try:
            self._tickets.move_to_end(key)  # the newest server goes last
            while len(self._tickets) > self._max_servers:
                self._tickets.popitem(last=False)
        except KeyError:  # another thread moved or dropped it meanwhile
            pass

    def take(self, key: str) -> bytes | None:
        tickets = self._tickets.get(key)
        try:
            return tickets.pop() if tickets else None
        except IndexError:  # another thread took the last one meanwhile
            return None


class TicketKeys:
    """The secrets a server seals its session tickets with (``Config.ticket_keys``).

    The first key seals new tickets; every key opens them. Each secret is at
    least 32 random bytes; keep them as secret as the certificate's key.
    """

    def __init__(self, secrets: Sequence[bytes]) -> None:
        if not secrets:
            raise ValueError("at least one ticket key is needed")
        self._keys: dict[bytes, AESGCM] = {}
        for secret in secrets:
            if len(secret) < _MIN_SECRET:
                raise ValueError(f"a ticket key needs at least {_MIN_SECRET} bytes of secret")
            key_id = hashlib.sha256(b"sansquic ticket key id" + secret).digest()[:_KEY_ID_SIZE]
            key = hashlib.sha256(b"sansquic ticket key" + secret).digest()
            self._keys.setdefault(key_id, AESGCM(key))
        self._sealing = next(iter(self._keys))

    @classmethod
    def random(cls) -> TicketKeys:
        """Keys known only to this process: its tickets resume nowhere else."""
        return cls([os.urandom(_MIN_SECRET)])

    def seal(self, state: bytes) -> bytes:
        """``state`` encrypted and authenticated under the first key."""
        nonce = os.urandom(_NONCE_SIZE)
        sealed = self._keys[self._sealing].encrypt(nonce, state, self._sealing)
        return self._sealing + nonce + sealed

    def open(self, ticket: bytes) -> bytes | None:
        """The state sealed in ``ticket``, or ``None`` if no key here sealed it (or it
        was altered)."""
        head = _KEY_ID_SIZE + _NONCE_SIZE
        key = self._keys.get(ticket[:_KEY_ID_SIZE])
        if key is None or len(ticket) < head + 16:
            return None
        try:
            return key.decrypt(ticket[_KEY_ID_SIZE:head], ticket[head:], ticket[:_KEY_ID_SIZE])
        except InvalidTag:
            return None
