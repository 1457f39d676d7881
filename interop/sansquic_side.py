"""sansquic's hq-interop client and server for the interop cases, on the threads runtime.

Features the lead and the other workers are still building (session tickets,
0-RTT, key update) are looked up by their contract names, so the cases that
need them report "not built yet" until those land and run as soon as they do.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

import attrs
import sansquic_threads

import sansquic
from sansquic_conformance import hq

from . import h3

__all__ = ["Fetched", "SansquicServer", "fetch", "missing_feature"]

_TIMEOUT = 60.0


def missing_feature(feature: str, role: str) -> str | None:
    """Why sansquic cannot take part in ``feature`` as ``role`` (client/server), or None."""
    fields = attrs.fields_dict(sansquic.Config)
    if feature == "resumption" and not {"ticket_store", "ticket_keys"} <= set(fields):
        return "session tickets (Config.ticket_store/ticket_keys) not built yet"
    if feature == "zerortt" and "early_data" not in fields:
        return "0-RTT (Config.early_data) not built yet"
    if (
        feature == "keyupdate"
        and role == "client"
        and not hasattr(sansquic_threads.Connection, "update_keys")
    ):
        return "Connection.update_keys() not built yet"
    return None


def config(
    alpn: str,
    *,
    versions: tuple[str, ...] = ("v1",),
    cipher: str | None = None,
    retry: bool = False,
    early_data: bool = False,
) -> sansquic.Config:
    """The Config for one case, speaking ``alpn`` ("hq-interop" or "h3")."""
    # Peers run in other processes with certificates of their own (aioquic's test
    # pair, ngtcp2's): interop checks the protocol, not the chain.
    changes: dict[str, Any] = {
        "alpn": (alpn,),
        "versions": versions,
        "idle_timeout": 20.0,
        "verify_peer": False,
    }
    if cipher is not None:
        changes["cipher_suites"] = (cipher,)
    if retry:
        changes["rate_limits"] = attrs.evolve(sansquic.RateLimits(), retry="always")
    if early_data:
        changes["early_data"] = True
    return hq.CONFIG.replace(**changes)


def _facts(conn: Any) -> dict[str, Any]:
    return {
        "resumed": getattr(conn, "resumed", None),
        "early_data_accepted": getattr(conn, "early_data_accepted", None),
        "alpn": conn.alpn,
    }


@dataclass
class SansquicServer:
    """An hq-interop (or h3) file server; records what each connection reported."""

    files: dict[str, bytes]
    config: sansquic.Config
    host: str = "127.0.0.1"
    connections: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        h3_alpn = self.config.alpn[0] == h3.ALPN
        serve = h3.serve_files(self.files) if h3_alpn else hq.serve_files(self.files)
        lock = threading.Lock()

        def handler(conn: Any) -> None:
            with lock:
                self.connections.append(_facts(conn))
            serve(conn)

        self._server = sansquic_threads.serve(handler, self.host, 0, config=self.config)
        self.address: tuple[str, int] = self._server.address[:2]

    def close(self) -> None:
        """Stop serving."""
        self._server.close()


def _update_keys(conn: Any, seconds: float = 5.0) -> None:
    """Update the keys, and wait until packets leave under the new ones, so the
    requests that follow carry them (aioquic holds an update until the handshake is
    confirmed, which a short transfer can outlast)."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            conn.update_keys()
            break
        except sansquic.LocalProtocolError:  # not confirmed yet
            if time.monotonic() > deadline:
                raise
            time.sleep(0.01)
    while conn.stats().key_updates < 1:
        if time.monotonic() > deadline:
            raise TimeoutError("the key update did not take effect")
        time.sleep(0.01)


@dataclass
class Fetched:
    """What one sansquic client connection fetched and reported."""

    bodies: dict[str, bytes]
    facts: dict[str, Any]


def fetch(
    address: tuple[str, int],
    paths: list[str],
    config: sansquic.Config,
    *,
    early_data: bool = False,
    key_update: bool = False,
) -> Fetched:
    """One connection: every request sent at once (multiplexed), then every answer read.

    With ``early_data`` (and ``config.early_data``), connect() returns before the
    handshake when a stored ticket allows 0-RTT, so the requests leave in 0-RTT.
    """
    if early_data and not config.early_data:
        raise ValueError("early_data needs a Config with early_data=True")
    conn = sansquic_threads.connect(address[0], address[1], config=config, server_name="localhost")
    try:
        if key_update:
            _update_keys(conn)
        if config.alpn[0] == h3.ALPN:
            return Fetched(h3.get_all(conn, paths), _facts(conn))
        streams = []
        for path in paths:
            stream = conn.open_stream()
            stream.send(f"GET {path}\r\n".encode("ascii"))
            stream.finish()
            streams.append((path, stream))
        bodies: dict[str, bytes] = {}
        for path, stream in streams:
            body = bytearray()
            while chunk := stream.receive(timeout=_TIMEOUT):
                body += chunk
            bodies[path] = bytes(body)
        return Fetched(bodies, _facts(conn))
    finally:
        conn.close()
