"""The messaging case: typed messages both ways over a runtime pair, with a forced
disconnect in the middle; nothing is lost and nothing arrives twice.

It drives the generated blocking twin (``sansquic_runtime._messaging_sync``) over
the harness's blocking objects, so the same drive code runs over every runtime on
either side; threads stand in for the task group.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from sansquic_runtime._messaging_sync import MessageServer, Messenger, Peer

import sansquic
from sansquic import messaging
from sansquic.websocket import Transport

from .harness import Harness

__all__ = ["across_a_disconnect", "across_transports"]


class _Threads:
    """A task group of daemon threads (the blocking twin's ``spawn``)."""

    def __init__(self) -> None:
        self.threads: list[threading.Thread] = []

    def spawn(self, fn: Callable[..., Any], *args: Any) -> None:
        thread = threading.Thread(target=fn, args=args, daemon=True)
        self.threads.append(thread)
        thread.start()

    def join(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        for thread in self.threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in self.threads)


def _wait(predicate: Callable[[], bool], timeout: float, what: Callable[[], str]) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out: {what()}")
        time.sleep(0.01)


def across_a_disconnect(client: Harness, server: Harness, config: sansquic.Config) -> None:
    """30 typed messages up (control and bulk lanes) and replies plus notes down; the
    client drops the connection mid-way and reconnects: each message once, in order.
    ``client`` and ``server`` may be WebSocket views of a harness: the same guarantees."""

    def serve(handler: Callable[[Any], None]) -> tuple[tuple[str, int], list[Any]]:
        handle = server.serve(handler, config)
        return handle.address, [handle]

    def dial(address: tuple[str, int], attempt: int) -> Any:
        return client.connect(address, config)

    _exchange(serve, dial)


def across_transports(client: Harness, server: Harness, config: sansquic.Config) -> None:
    """One session over ``connect_any``: its first connection is QUIC, then UDP is
    blocked (a black-hole port) and the reconnect falls back to WebSocket, where the
    server's same :class:`MessageServer` continues the session."""
    hole = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    hole.bind(("127.0.0.1", 0))  # bound, never read: every datagram vanishes
    seen: list[Transport] = []
    servers: list[Any] = []

    def serve(handler: Callable[[Any], None]) -> tuple[tuple[str, int], list[Any]]:
        servers.append(server.serve(handler, config))
        servers.append(server.serve_websocket(handler, config))
        return servers[0].address, servers

    def dial(address: tuple[str, int], attempt: int) -> Any:
        # A generous delay while UDP works (QUIC must win on a loaded machine), a short
        # one once it is blocked (the fallback must not wait for QUIC's timeout).
        udp, delay = (address, 3.0) if attempt == 0 else (hole.getsockname(), 0.3)
        conn = client.connect_any(udp, servers[1].address[1], config, delay=delay, timeout=20)
        seen.append(conn.transport)
        return conn

    try:
        _exchange(serve, dial)
    finally:
        hole.close()
    assert seen == [Transport.QUIC, Transport.WEBSOCKET], seen


def _exchange(
    serve: Callable[[Callable[[Any], None]], tuple[tuple[str, int], list[Any]]],
    dial_at: Callable[[tuple[str, int], int], Any],
) -> None:
    """The exchange itself: ``serve(handler)`` gives the address (the pool's key) and
    what to close after; ``dial_at(address, n)`` opens the client's n-th connection."""
    lock = threading.Lock()
    at_server: list[messaging.Envelope] = []
    at_client: list[messaging.Envelope] = []

    def on_server(peer: Peer, envelope: messaging.Envelope) -> None:
        with lock:
            at_server.append(envelope)
        if envelope.type == "job":
            peer.send("reply", envelope.payload)

    def on_client(peer: Peer, envelope: messaging.Envelope) -> None:
        with lock:
            at_client.append(envelope)

    server_group, client_group = _Threads(), _Threads()
    router: messaging.Router[Any] = messaging.Router(fallback=on_server)
    message_server = MessageServer(server_group, router=router)
    address, handles = serve(message_server.handle)
    conns: list[Any] = []

    def dial() -> Any:
        conn = dial_at(address, len(conns))
        conns.append(conn)
        return conn

    try:
        client_router: messaging.Router[Any] = messaging.Router(fallback=on_client)
        messenger = Messenger(dial, client_group, router=client_router, key=address)
        messenger.connect()
        sent = [messenger.send("job", f"job-{i}".encode()) for i in range(10)]
        # The server learns the session from the hello: let something arrive first.
        _wait(lambda: bool(at_server), 20, lambda: "nothing reached the server")
        sent += [messenger.send("bulk.data", bytes(2000) + b"%d" % i) for i in range(5)]
        messenger.disconnect(0, "forced")  # whatever is unacked must come again
        assert not messenger.connected
        sent += [messenger.send("job", f"job-{i}".encode()) for i in range(10, 20)]
        (session_id,) = message_server.sessions
        notes = [message_server.send(session_id, "note", b"n%d" % i) for i in range(5)]
        messenger.connect()
        sent += [messenger.send("bulk.data", b"late-%d" % i) for i in range(5)]
        jobs = sum(1 for e in sent if e.type == "job")

        def done() -> bool:
            with lock:
                return len(at_server) >= len(sent) and len(at_client) >= jobs + len(notes)

        _wait(
            done,
            30,
            lambda: f"server got {len(at_server)}/{len(sent)}, client {len(at_client)}",
        )
        time.sleep(0.2)  # a duplicate would arrive now
        with lock:
            assert sorted(e.payload for e in at_server) == sorted(e.payload for e in sent)
            for kind in ("job", "bulk.data"):
                assert [e.id for e in at_server if e.type == kind] == [
                    e.id for e in sent if e.type == kind
                ], kind
            replies = [e.payload for e in at_client if e.type == "reply"]
            assert replies == [e.payload for e in sent if e.type == "job"]
            assert [e.payload for e in at_client if e.type == "note"] == [n.payload for n in notes]
        assert messenger.channel.generation == 2
        assert messenger.pool.stats(address).dials == 2
        messenger.disconnect(0, "done")
    finally:
        for conn in conns:
            with contextlib.suppress(sansquic.SansQuicError):
                conn.close()
        for handle in handles:
            handle.close()
    assert client_group.join(10) and server_group.join(10), "a lane reader did not end"
