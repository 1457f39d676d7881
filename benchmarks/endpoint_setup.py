"""Connection setup rate and memory per idle connection, sansquic Endpoints vs raw aioquic.

Both ends run in this one process on a virtual clock (the simulated network,
0.5 ms one-way delay), so the numbers are CPU and memory cost only:

- setup: N clients (in batches of 100) complete the QUIC + TLS handshake with
  one server; reported as handshakes per second of wall time, both ends'
  work included.
- memory: tracemalloc's traced bytes after the N connections are up and idle,
  minus before, divided by N, for both ends together and halved per end.

The raw case pumps pairs of aioquic QuicConnection objects with the same
certificate type (Ed25519), ALPN and delay. Run from the repository root::

    python benchmarks/endpoint_setup.py --connections 1000 --repeat 3

The machine has 2 cores and other work may be running: read the medians.
"""

from __future__ import annotations

import argparse
import gc
import os
import ssl
import statistics
import time
import tracemalloc
from typing import Any

import aioquic
from aioquic.buffer import Buffer  # type: ignore[attr-defined]  # re-exported from C
from aioquic.quic import events as qe
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.packet import pull_quic_header
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from cryptography.x509 import load_pem_x509_certificate

import sansquic
from sansquic.testing import LinkConditions, SimNetwork

SERVER = ("10.0.0.2", 4433)
DELAY = 0.0005
BATCH = 100


class Meter:
    """Times a run, or traces its memory: never both, as tracing slows everything."""

    def __init__(self, trace_memory: bool) -> None:
        self.trace_memory = trace_memory

    def start(self) -> None:
        gc.collect()
        if self.trace_memory:
            tracemalloc.start()
            self._before = tracemalloc.get_traced_memory()[0]
        self._start = time.perf_counter()

    def stop(self, count: int) -> float:
        """Handshakes per second, or traced bytes per connection pair."""
        if not self.trace_memory:
            return count / (time.perf_counter() - self._start)
        gc.collect()
        memory = tracemalloc.get_traced_memory()[0] - self._before
        tracemalloc.stop()
        return memory / count


def sansquic_run(count: int, meter: Meter) -> float:
    """Handshakes per second, or bytes per idle connection pair."""
    limits = sansquic.RateLimits(
        new_connections_per_second=None, max_connections_per_address=None, retry="never"
    )
    config = sansquic.Config(dev_mode=True, trust_dev_certificate=True, rate_limits=limits)
    net = SimNetwork(1, conditions=LinkConditions(delay=DELAY), keep_trace=False)
    server = sansquic.Endpoint(config, server=True)
    client = sansquic.Endpoint(config)
    net.add(SERVER, server)
    net.add(("10.0.0.1", 5000), client)

    def drain() -> None:
        for endpoint in (server, client):
            while endpoint.next_event() is not None:
                pass

    net.step_hooks.append(drain)
    conns: list[sansquic.Connection] = []
    batch: list[sansquic.Connection] = []

    def batch_connected() -> bool:
        return all(c.state is sansquic.ConnectionState.CONNECTED for c in batch)

    meter.start()
    for _ in range(0, count, BATCH):
        batch = [client.connect(SERVER, net.now, server_name="localhost") for _ in range(BATCH)]
        assert net.run_until(batch_connected, 30)
        conns += batch
    if meter.trace_memory:
        net.run_for(1.0)  # acknowledgements settle; the connections are idle
    result = meter.stop(len(conns))
    assert server.stats().active == client.stats().active == len(conns)
    return result


def _raw_configs() -> tuple[Any, Any]:
    pair = sansquic.make_dev_certificate()
    server = QuicConfiguration(is_client=False, alpn_protocols=["bench"])
    server.certificate = load_pem_x509_certificate(pair.certificate)
    server.private_key = load_pem_private_key(pair.private_key, password=None)
    client = QuicConfiguration(is_client=True, alpn_protocols=["bench"])
    client.verify_mode = ssl.CERT_NONE
    return client, server


def raw_run(count: int, meter: Meter) -> float:
    """The same with bare aioquic connections pumped against each other."""
    client_config, server_config = _raw_configs()
    pairs: list[tuple[Any, Any]] = []
    meter.start()
    now = 0.0
    for _ in range(count):
        client = QuicConnection(configuration=client_config)
        client.connect(SERVER, now=now)
        first = client.datagrams_to_send(now=now)
        header = pull_quic_header(Buffer(data=first[0][0]), host_cid_length=8)
        server = QuicConnection(
            configuration=server_config,
            original_destination_connection_id=header.destination_cid,
        )
        inflight = [(now + DELAY, server, data) for data, _ in first]
        done = False
        while not done:
            inflight.sort(key=lambda item: item[0])
            if not inflight:
                break
            now, target, data = inflight.pop(0)
            source = ("10.0.0.1", 5000) if target is server else SERVER
            target.receive_datagram(data, source, now=now)
            for sender, receiver in ((client, server), (server, client)):
                for out, _ in sender.datagrams_to_send(now=now):
                    inflight.append((now + DELAY, receiver, out))
            while (event := client.next_event()) is not None:
                done = done or isinstance(event, qe.HandshakeCompleted)
            while server.next_event() is not None:
                pass
        pairs.append((client, server))
    return meter.stop(len(pairs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print(f"aioquic {aioquic.__version__}, sansquic {sansquic.__version__}, {os.cpu_count()} CPUs")
    cases = {"sansquic": sansquic_run, "raw aioquic": raw_run}
    rates: dict[str, list[float]] = {name: [] for name in cases}
    memory: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(args.repeat):
        for name, run in cases.items():  # alternate, so drift hits both alike
            rates[name].append(run(args.connections, Meter(trace_memory=False)))
            memory[name].append(run(args.connections, Meter(trace_memory=True)))
            rate, kib = rates[name][-1], memory[name][-1] / 1024
            print(f"  {name:12} {rate:6.0f} handshakes/s {kib:7.1f} KiB per pair")
    print(f"\n{'case':12} {'handshakes/s':>13} {'KiB/pair':>9} {'KiB/end':>8}")
    median = {
        name: (statistics.median(rates[name]), statistics.median(memory[name]) / 1024)
        for name in cases
    }
    for name, (rate, kib) in median.items():
        print(f"{name:12} {rate:13.0f} {kib:9.1f} {kib / 2:8.1f}")
    (s_rate, s_kib), (r_rate, r_kib) = median["sansquic"], median["raw aioquic"]
    print(f"medians of {args.repeat} runs; ratio sansquic/raw:", end=" ")
    print(f"setup {s_rate / r_rate:.2f}, memory {s_kib / r_kib:.2f}")


if __name__ == "__main__":
    main()
