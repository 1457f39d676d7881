"""The time an open+echo costs in the core alone, and how much of it is the engine's.

A client and a server ``sansquic.Endpoint`` in this one process, fed each
other's datagrams by hand (no sockets, no event loop, a virtual clock): the
client opens a stream and sends 1 byte with FIN, the server reads it and
answers it with FIN, the client reads the answer. That is the open+echo of
``benchmarks/runtimes.py`` without the network and the runtime: one datagram
each way. Reported: microseconds per echo (both ends' work, in one thread that
does nothing else, so CPU time), and the part spent inside aioquic's
``QuicConnection`` (timed around its entry points, so the timing itself adds a
little to both figures).

    python benchmarks/core_echo.py                 # 3000 echoes, 3 runs
    python benchmarks/core_echo.py --echoes 10000 --runs 5
"""

from __future__ import annotations

import argparse
import collections
import functools
import statistics
import time
from collections.abc import Callable
from typing import Any

from aioquic.quic.connection import QuicConnection

from sansquic import Config, Connection, ConnectionState, Endpoint, StreamReadable

CLIENT, SERVER = ("10.0.0.1", 5000), ("10.0.0.2", 4433)
#: aioquic's entry points the core calls on every echo.
ENGINE_CALLS = (
    "receive_datagram",
    "datagrams_to_send",
    "send_stream_data",
    "next_event",
    "get_timer",
    "handle_timer",
)
engine_seconds: collections.defaultdict[str, float] = collections.defaultdict(float)


def _timed(name: str, call: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(call)
    def timed(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return call(*args, **kwargs)
        finally:
            engine_seconds[name] += time.perf_counter() - start

    return timed


class Pair:
    """A connected client and server, and the virtual time."""

    def __init__(self) -> None:
        self.client = Endpoint(Config(trust_dev_certificate=True))
        self.server = Endpoint(Config(dev_mode=True, trust_dev_certificate=True), server=True)
        self.now = 0.0
        self.conn: Connection = self.client.connect(SERVER, self.now, server_name="localhost")
        for _ in range(50):
            self.to_server()
            self.to_client()
            self.now += 0.01
        if self.conn.state is not ConnectionState.CONNECTED:
            raise RuntimeError("the handshake did not complete")

    def to_server(self) -> None:
        out = self.client.datagrams_to_send(self.now)
        self.server.receive_datagrams([(data, CLIENT) for data, _ in out], self.now)

    def to_client(self) -> None:
        out = self.server.datagrams_to_send(self.now)
        self.client.receive_datagrams([(data, SERVER) for data, _ in out], self.now)

    def echo(self) -> None:
        conn = self.conn
        stream_id = conn.open_stream()
        conn.send(stream_id, b"e", end=True)
        self.to_server()
        while (item := self.server.next_event()) is not None:
            peer, event = item
            if isinstance(event, StreamReadable):
                peer.send(event.stream_id, peer.read(event.stream_id), end=True)
        self.to_client()
        answer = b""
        while (item := self.client.next_event()) is not None:
            if isinstance(item[1], StreamReadable):
                answer += item[0].read(item[1].stream_id)
        if answer != b"e":
            raise RuntimeError(f"echo mismatch: {answer!r}")
        for endpoint in (self.client, self.server):  # as a runtime does on every wake
            endpoint.handle_timer(self.now)
            endpoint.timer()
        self.now += 0.0005


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--echoes", type=int, default=3000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    for name in ENGINE_CALLS:
        setattr(QuicConnection, name, _timed(name, getattr(QuicConnection, name)))
    totals, engines = [], []
    for run in range(args.runs):
        pair = Pair()
        for _ in range(200):  # warm-up: caches, the congestion window
            pair.echo()
        engine_seconds.clear()
        start = time.perf_counter()
        for _ in range(args.echoes):
            pair.echo()
        total = (time.perf_counter() - start) / args.echoes * 1e6
        engine = sum(engine_seconds.values()) / args.echoes * 1e6
        totals.append(total)
        engines.append(engine)
        print(f"run {run + 1}: {total:6.1f} us per echo, {engine:6.1f} us of it in aioquic")
    total, engine = statistics.median(totals), statistics.median(engines)
    core = total - engine
    print(f"median: {total:.1f} us per echo; aioquic {engine:.1f} us; the core {core:.1f} us")


if __name__ == "__main__":
    main()
