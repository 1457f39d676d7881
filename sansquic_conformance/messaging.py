"""The messaging case: typed messages both ways over a runtime pair, with a forced
disconnect in the middle; nothing is lost and nothing arrives twice.

It drives the generated blocking twin (``sansquic_runtime._messaging_sync``) over
the harness's blocking objects, so the same drive code runs over every runtime on
either side; threads stand in for the task group.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from typing import Any

from sansquic_runtime._messaging_sync import MessageServer, Messenger, Peer

import sansquic
from sansquic import messaging

from .harness import Harness

__all__ = ["across_a_disconnect"]


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
    client drops the connection mid-way and reconnects: each message once, in order."""
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
    handle = server.serve(message_server.handle, config)
    conns: list[Any] = []

    def dial() -> Any:
        conn = client.connect(handle.address, config)
        conns.append(conn)
        return conn

    try:
        client_router: messaging.Router[Any] = messaging.Router(fallback=on_client)
        messenger = Messenger(dial, client_group, router=client_router, key=handle.address)
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
        assert messenger.pool.stats(handle.address).dials == 2
        messenger.disconnect(0, "done")
    finally:
        for conn in conns:
            with contextlib.suppress(sansquic.SansQuicError):
                conn.close()
        handle.close()
    assert client_group.join(10) and server_group.join(10), "a lane reader did not end"
