"""GENERATED from ``_demo_async.py`` by ``scripts/unasync.py``: edit that file instead.

The blocking twin of ``sansquic demo``, for the threads runtime.
"""

from __future__ import annotations

import contextlib
import secrets
import time
from dataclasses import dataclass, field

from rich.console import Console
from rich.live import Live
from sansquic_runtime._sync import Connection, Stream

import sansquic

from ._demo import FLOWS, PRIORITIES, Tally, finish, setup, summary
from ._frameworks import SyncRuntime

__all__ = ["run"]

#: Where the server listens, and the name its dev certificate is for.
HOST, SERVER_NAME = "127.0.0.1", "localhost"
#: The most one round trip may take before the demo calls it a failure.
ROUND_TRIP_TIMEOUT = 30.0


def run(rt: SyncRuntime, seconds: float, clients: int, qlog: str | None = None) -> int:
    """The demo on ``rt``: ``clients`` clients for ``seconds``; the exit status.
    With ``qlog``, each connection's qlog trace is written to that directory."""
    console = Console()
    config, token, authenticator = setup(qlog)
    with rt.serve(_Echo(rt), HOST, config, authenticator) as server:
        demo = _Demo(rt, server.address[1], config, token, time.monotonic() + seconds)
        start = time.monotonic()
        with Live(console=console, refresh_per_second=4) as live:
            with rt.task_group() as group:
                for i in range(clients):
                    demo.running.add(f"client {i}")
                    group.spawn(demo.client, f"client {i}")
                while demo.running:
                    live.update(summary(demo.tally, time.monotonic() - start, server.stats()))
                    rt.sleep(0.25)
            live.update(summary(demo.tally, time.monotonic() - start, server.stats()))
    return finish(console, demo.tally, demo.failed)


@dataclass
class _Demo:
    """One run: what every client needs, and what they report."""

    rt: SyncRuntime
    port: int
    config: sansquic.Config
    token: str
    until: float
    tally: Tally = field(default_factory=Tally)
    running: set[str] = field(default_factory=set)
    failed: list[BaseException] = field(default_factory=list)

    def client(self, name: str) -> None:
        """Connect with the token, run every flow and the datagrams, then close."""
        try:
            with self.rt.connect(
                HOST, self.port, config=self.config, server_name=SERVER_NAME, token=self.token
            ) as conn:
                self.tally.accepted(name, conn.identity)
                with self.rt.task_group() as group:
                    for priority_name, size in FLOWS:
                        group.spawn(self.flow, conn, name, priority_name, size)
                    group.spawn(self.datagrams, conn)
                conn.close(0, "demo over")
        except Exception as exc:  # shown in the summary; the other clients go on
            self.failed.append(exc)
        finally:
            self.running.discard(name)

    def flow(self, conn: Connection, name: str, priority_name: str, size: int) -> None:
        """Echo ``size`` random bytes on a new stream, again and again, at one priority."""
        payload = secrets.token_bytes(size)
        while time.monotonic() < self.until:
            begin = time.monotonic()
            stream = conn.open_stream(priority=PRIORITIES[priority_name])
            stream.send(payload, timeout=ROUND_TRIP_TIMEOUT)
            stream.finish()
            if stream.read_all(timeout=ROUND_TRIP_TIMEOUT) != payload:
                raise RuntimeError(f"{name}: a {priority_name} echo came back altered")
            self.tally.echoed(priority_name, size, time.monotonic() - begin)

    def datagrams(self, conn: Connection) -> None:
        """Ping by datagram; an echo that misses its 0.2 s is lost, by design."""
        while time.monotonic() < self.until:
            conn.send_datagram(b"ping")
            try:
                conn.receive_datagram(timeout=0.2)
            except TimeoutError:
                self.tally.datagram(echoed=False)
            else:
                self.tally.datagram(echoed=True)


class _Echo:
    """The server's handler: every stream echoed back, and every datagram."""

    def __init__(self, rt: SyncRuntime) -> None:
        self._rt = rt

    def __call__(self, conn: Connection) -> None:
        with self._rt.task_group() as group:
            group.spawn(_echo_datagrams, conn)
            for stream in conn:  # until the connection closes
                group.spawn(_echo_stream, stream)


def _echo_stream(stream: Stream) -> None:
    with contextlib.suppress(sansquic.StreamResetError, sansquic.ConnectionClosed):
        data = stream.read_all()
        stream.send(data)
        stream.finish()


def _echo_datagrams(conn: Connection) -> None:
    with contextlib.suppress(sansquic.ConnectionClosed):
        while True:
            conn.send_datagram(conn.receive_datagram())
