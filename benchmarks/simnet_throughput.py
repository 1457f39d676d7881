"""Single-stream throughput of the sansquic core on its simulated network, next to raw aioquic.

Both ends run in this one process on a virtual clock: no sockets, no asyncio, so
the number is pure CPU cost per payload byte. A client opens one stream and
sends ``--mb`` MB (1 MB = 10**6 bytes) in 64 KiB chunks; the clock runs from
the first ``send`` until the server has read every byte, checked by length and
SHA-256. The sansquic case uses ``connected_pair`` on a clean 0.5 ms one-way
link (``SimNetwork`` overhead included); the raw case pumps two aioquic
``QuicConnection`` objects with a minimal loop and the same delay, window
sizes, ALPN, congestion control and packet size.

Packets are 1200 bytes on both sides by default (sansquic with
``pmtu_discovery=False``), so the ratio is the core's cost per packet. With
``--pmtu`` the link has no MTU, sansquic starts at 1200 bytes and discovers
its way up to its default ``max_udp_payload_size``, and raw aioquic is simply
told that size from the start. Run from the repository root::

    python benchmarks/simnet_throughput.py --mb 20 --repeat 3
    python benchmarks/simnet_throughput.py --mb 20 --repeat 3 --pmtu
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import heapq
import os
import platform
import ssl
import statistics
import time
from collections.abc import Callable

import aioquic
import attrs
from aioquic.buffer import Buffer  # type: ignore[attr-defined]  # re-exported from _buffer
from aioquic.quic import events as qe
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.packet import pull_quic_header
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from cryptography.x509 import load_pem_x509_certificate

import sansquic
from sansquic.testing import LinkConditions, StreamSink, connected_pair

DELAY = 0.0005  # one-way, seconds
CHUNK = 64 * 1024
TIMEOUT = 600.0  # virtual seconds
#: The packet size both sides use unless ``--pmtu``: QUIC's floor, raw aioquic's default.
FIXED_PACKET = 1200
CLIENT_ADDR = ("10.0.0.1", 50000)
SERVER_ADDR = ("10.0.0.2", 4433)


class Result:
    def __init__(self, seconds: float, data: bytes | bytearray, virtual: float, packets: int):
        self.seconds, self.virtual, self.packets = seconds, virtual, packets
        self.size, self.digest = len(data), hashlib.sha256(data).hexdigest()


def run_sansquic(chunks: list[bytes], pmtu: bool) -> Result:
    client = sansquic.Config(trust_dev_certificate=True)
    server = sansquic.Config(dev_mode=True, trust_dev_certificate=True)
    if not pmtu:
        client, server = (
            attrs.evolve(config, max_udp_payload_size=FIXED_PACKET, pmtu_discovery=False)
            for config in (client, server)
        )
    pair = connected_pair(
        LinkConditions(delay=DELAY, mtu=None if pmtu else FIXED_PACKET),
        seed=1,
        client_config=client,
        server_config=server,
    )
    sink = StreamSink(pair.server)
    pair.network.step_hooks.append(sink.pump)
    sent_before, v0 = len(pair.network.trace), pair.network.now
    t0 = time.perf_counter()
    sid = pair.client.open_stream()
    pending = list(reversed(chunks))

    def write() -> None:
        """Send while the stream is writable, as a well-behaved writer does."""
        while pending and pair.client.writable(sid):
            pair.client.send(sid, pending.pop(), end=not pending)

    pair.network.step_hooks.append(write)
    if not pair.network.run_until(lambda: sid in sink.ended, TIMEOUT):
        raise TimeoutError("sansquic: stream did not end")
    seconds = time.perf_counter() - t0
    packets = len(pair.network.trace) - sent_before
    return Result(seconds, sink.received.get(sid, b""), pair.network.now - v0, packets)


def _quic_config(is_client: bool, pmtu: bool) -> QuicConfiguration:
    """aioquic settings matching sansquic's ``Config`` defaults (windows, CC) and packet size."""
    defaults = sansquic.Config()
    return QuicConfiguration(
        is_client=is_client,
        alpn_protocols=["bench"],
        max_data=defaults.max_data,
        max_stream_data=defaults.max_stream_data,
        max_datagram_size=defaults.max_udp_payload_size if pmtu else FIXED_PACKET,
        congestion_control_algorithm=defaults.congestion_control,
    )


class RawPair:
    """Two aioquic connections on a virtual clock with a fixed one-way delay."""

    def __init__(self, pmtu: bool) -> None:
        pem = sansquic.make_dev_certificate()
        cc = _quic_config(is_client=True, pmtu=pmtu)
        cc.server_name, cc.verify_mode = "localhost", ssl.CERT_NONE
        self.server_config = _quic_config(is_client=False, pmtu=pmtu)
        self.server_config.certificate = load_pem_x509_certificate(pem.certificate)
        self.server_config.private_key = load_pem_private_key(pem.private_key, password=None)
        self.client = QuicConnection(configuration=cc)
        self.server: QuicConnection | None = None
        self.now, self.seq, self.packets = 0.0, 0, 0
        self.queue: list[tuple[float, int, bool, bytes]] = []  # (arrival, seq, to_server, data)
        self.handshakes = 0
        self.received: dict[int, bytearray] = {}
        self.ended: set[int] = set()
        self.client.connect(SERVER_ADDR, now=self.now)

    def conns(self) -> list[QuicConnection]:
        return [self.client] if self.server is None else [self.client, self.server]

    def pump_events(self) -> None:
        for conn in self.conns():
            while (ev := conn.next_event()) is not None:
                if isinstance(ev, qe.HandshakeCompleted):
                    self.handshakes += 1
                elif isinstance(ev, qe.StreamDataReceived) and conn is self.server:
                    self.received.setdefault(ev.stream_id, bytearray()).extend(ev.data)
                    if ev.end_stream:
                        self.ended.add(ev.stream_id)

    def flush(self) -> None:
        for conn in self.conns():
            to_server = conn is self.client
            for data, _ in conn.datagrams_to_send(now=self.now):
                self.seq += 1
                self.packets += 1
                heapq.heappush(self.queue, (self.now + DELAY, self.seq, to_server, data))

    def deliver(self, to_server: bool, data: bytes) -> None:
        if not to_server:
            self.client.receive_datagram(data, SERVER_ADDR, now=self.now)
            return
        if self.server is None:
            header = pull_quic_header(Buffer(data=data), host_cid_length=8)
            self.server = QuicConnection(
                configuration=self.server_config,
                original_destination_connection_id=header.destination_cid,
            )
        self.server.receive_datagram(data, CLIENT_ADDR, now=self.now)

    def run_until(self, done: Callable[[], bool], timeout: float) -> None:
        deadline = self.now + timeout
        while True:
            self.flush()
            self.pump_events()
            if done():
                return
            times = [t for c in self.conns() if (t := c.get_timer()) is not None]
            if self.queue:
                times.append(self.queue[0][0])
            if not times or min(times) > deadline:
                raise TimeoutError("raw aioquic: condition not reached")
            self.now = max(self.now, min(times))
            while self.queue and self.queue[0][0] <= self.now:
                _, _, to_server, data = heapq.heappop(self.queue)
                self.deliver(to_server, data)
            for conn in self.conns():
                if (t := conn.get_timer()) is not None and t <= self.now:
                    conn.handle_timer(now=self.now)


def run_raw(chunks: list[bytes], pmtu: bool) -> Result:
    pair = RawPair(pmtu)
    pair.run_until(lambda: pair.handshakes >= 2, 30.0)
    packets_before, v0 = pair.packets, pair.now
    t0 = time.perf_counter()
    sid = pair.client.get_next_available_stream_id()
    for i, chunk in enumerate(chunks):
        pair.client.send_stream_data(sid, chunk, end_stream=i == len(chunks) - 1)
    pair.run_until(lambda: sid in pair.ended, TIMEOUT)
    seconds = time.perf_counter() - t0
    packets = pair.packets - packets_before
    return Result(seconds, pair.received.get(sid, b""), pair.now - v0, packets)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=20.0, help="payload in MB (10**6 bytes)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per case, alternating")
    parser.add_argument(
        "--pmtu",
        action="store_true",
        help="no link MTU: sansquic discovers its packet size, raw aioquic is told it",
    )
    args = parser.parse_args()
    started = time.perf_counter()
    payload = os.urandom(int(args.mb * 1_000_000))
    digest = hashlib.sha256(payload).hexdigest()
    chunks = [payload[i : i + CHUNK] for i in range(0, len(payload), CHUNK)]
    print(f"Python {platform.python_version()} ({platform.python_implementation()})")
    print(f"aioquic {aioquic.__version__}, sansquic {sansquic.__version__}")
    print(f"os.cpu_count() = {os.cpu_count()}")
    print(f"payload {len(payload):,} bytes in {len(chunks)} chunks of {CHUNK} B, x{args.repeat}")
    sizing = "discovered by sansquic, told to raw aioquic" if args.pmtu else f"{FIXED_PACKET} B"
    print(f"packets: {sizing}")

    cases: dict[str, Callable[[list[bytes]], Result]] = {
        "sansquic": functools.partial(run_sansquic, pmtu=args.pmtu),
        "raw aioquic": functools.partial(run_raw, pmtu=args.pmtu),
    }
    results: dict[str, list[Result]] = {name: [] for name in cases}
    for _ in range(args.repeat):  # alternate, so drift on the machine hits both cases
        for name, case in cases.items():
            result = case(chunks)
            if result.size != len(payload) or result.digest != digest:
                raise SystemExit(f"{name}: got {result.size:,} bytes, sha256 {result.digest}")
            results[name].append(result)
            print(f"  {name:<12} {len(payload) / result.seconds / 1e6:8.2f} MB/s")

    # This machine has 2 cores and other work on it, so single runs are noisy:
    # compare medians, and read min/max as the spread.
    rates = {n: [len(payload) / r.seconds / 1e6 for r in rs] for n, rs in results.items()}
    print()
    print(f"{'case':<12} {'median MB/s':>11} {'min':>8} {'max':>8} {'packets':>8} {'virt ms':>8}")
    for name, values in rates.items():
        last = results[name][-1]
        print(
            f"{name:<12} {statistics.median(values):11.2f} {min(values):8.2f} "
            f"{max(values):8.2f} {last.packets:8d} {last.virtual * 1e3:8.1f}"
        )
    ratio = statistics.median(rates["sansquic"]) / statistics.median(rates["raw aioquic"])
    print(f"ratio sansquic/raw (medians): {ratio:.2f}")
    print(f"total wall time {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
