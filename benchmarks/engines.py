"""aioquic against qh3, raw and behind sansquic's seam: one stream's bulk transfer on loopback.

Each stack runs a client here and a server in a child process, both a plain
loop on a non-blocking UDP socket (the minimal driver of ``runtimes.py``
without its other workloads). The client sends ``--mb`` megabytes on one
stream and finishes it; the server counts them and answers with the count and
its CPU seconds. Reported: MB/s (first byte handed over to the reply), and CPU
milliseconds per MB on each side, the median of ``--repeat`` runs.

Stacks: ``aioquic`` and ``qh3`` drive the engine's ``QuicConnection``
directly; ``sansquic-aioquic`` and ``sansquic-qh3`` drive a sansquic
``Connection`` (core plus seam, no runtime) on ``Config(engine=...)``.
Windows are sansquic's defaults (16 MiB connection, 1 MiB stream), idle
timeout 30 s, packets ``--size`` bytes (path MTU discovery off everywhere).

    python benchmarks/engines.py --repeat 3 --mb 64 --size 1200
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import select
import socket
import ssl
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import sansquic

Address = tuple[str, int]
STACKS = ("aioquic", "qh3", "sansquic-aioquic", "sansquic-qh3")
RUN_TIMEOUT = 30.0
CHUNK = 256 * 1024


def _socket(port: int = 0) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
    sock.bind(("127.0.0.1", port))
    sock.setblocking(False)
    return sock


# -- the engines' own QuicConnection ---------------------------------------------------------


def _qh3_configuration(is_client: bool) -> Any:
    from qh3.quic.configuration import QuicConfiguration
    from qh3.tls import SignatureAlgorithm, load_pem_private_key, load_pem_x509_certificates

    qc = QuicConfiguration(is_client=is_client, alpn_protocols=["bench"])
    qc.probe_datagram_size = False
    if is_client:
        qc.signature_algorithms = [SignatureAlgorithm.ED25519]  # dev certificates
    else:
        pair = sansquic.make_dev_certificate()
        qc.certificate = load_pem_x509_certificates(pair.certificate)[0]
        qc.private_key = load_pem_private_key(pair.private_key)
    return qc


def _aioquic_configuration(is_client: bool) -> Any:
    from aioquic.quic.configuration import QuicConfiguration
    from cryptography.hazmat.primitives.serialization import load_pem_private_key
    from cryptography.x509 import load_pem_x509_certificate

    qc = QuicConfiguration(is_client=is_client, alpn_protocols=["bench"])
    qc.congestion_control_algorithm = "reno"  # sansquic's default
    if not is_client:
        pair = sansquic.make_dev_certificate()
        qc.certificate = load_pem_x509_certificate(pair.certificate)
        qc.private_key = load_pem_private_key(pair.private_key, password=None)
    return qc


def _raw_configuration(engine: str, is_client: bool, size: int) -> Any:
    """sansquic's default windows and idle timeout, ``size``-byte packets."""
    qc = _qh3_configuration(is_client) if engine == "qh3" else _aioquic_configuration(is_client)
    qc.max_data = 16 * 1024 * 1024
    qc.max_stream_data = 1024 * 1024
    qc.max_datagram_size = size
    qc.idle_timeout = 30.0
    if is_client:
        qc.server_name = "localhost"
        qc.verify_mode = ssl.CERT_NONE
    return qc


class RawPeer:
    """One engine ``QuicConnection``, driven directly."""

    def __init__(self, engine: str, is_client: bool, size: int) -> None:
        self.engine, self.is_client, self.size = engine, is_client, size
        self.quic: Any = None
        if is_client:
            self.quic = self._new(None)

    def _new(self, odcid: bytes | None) -> Any:
        qc = _raw_configuration(self.engine, self.is_client, self.size)
        if self.engine == "qh3":
            from qh3.quic.connection import QuicConnection as Qh3Connection

            return Qh3Connection(configuration=qc, original_destination_connection_id=odcid)
        from aioquic.quic.connection import QuicConnection

        return QuicConnection(configuration=qc, original_destination_connection_id=odcid)

    def connect(self, addr: Address, now: float) -> None:
        self.quic.connect(addr, now)

    def receive(self, data: bytes, addr: Address, now: float) -> None:
        if self.quic is None:  # a server: the client's first Initial
            from aioquic.buffer import Buffer  # type: ignore[attr-defined]  # from C
            from aioquic.quic.packet import pull_quic_header

            header = pull_quic_header(Buffer(data=data), host_cid_length=8)
            self.quic = self._new(header.destination_cid)
        self.quic.receive_datagram(data, addr, now)

    def out(self, now: float) -> list[tuple[bytes, Address]]:
        return [] if self.quic is None else list(self.quic.datagrams_to_send(now))

    def timer(self) -> float | None:
        return None if self.quic is None else self.quic.get_timer()

    def handle_timer(self, now: float) -> None:
        if self.quic is not None:
            self.quic.handle_timer(now)

    def events(self) -> list[tuple[str, int, bytes, bool]]:
        """("connected" | "data" | "closed", stream id, data, end)."""
        out: list[tuple[str, int, bytes, bool]] = []
        if self.quic is None:
            return out
        while (ev := self.quic.next_event()) is not None:
            name = type(ev).__name__
            if name == "HandshakeCompleted":
                out.append(("connected", 0, b"", False))
            elif name == "StreamDataReceived":
                out.append(("data", ev.stream_id, ev.data, ev.end_stream))
            elif name == "ConnectionTerminated":
                out.append(("closed", 0, b"", False))
        return out

    def open_stream(self) -> int:
        sid: int = self.quic.get_next_available_stream_id()
        return sid

    def room(self, stream_id: int) -> bool:
        """Whether to hand over another chunk (keep about a window's worth queued)."""
        return self._unsent(stream_id) < 1024 * 1024

    def _unsent(self, stream_id: int) -> int:
        quic = self.quic
        if self.engine == "qh3":
            return int(quic.get_send_buffer_size(stream_id))
        stream = quic._streams.get(stream_id)
        if stream is None:
            return 0
        return int(stream.sender._buffer_stop - stream.sender.next_offset)

    def send(self, stream_id: int, data: bytes, end: bool) -> None:
        self.quic.send_stream_data(stream_id, data, end_stream=end)

    def close(self) -> None:
        if self.quic is not None:
            self.quic.close(error_code=0, reason_phrase="done")


# -- a sansquic Connection (core and seam) ----------------------------------------------------


class SansquicPeer:
    """A sansquic ``Connection`` on ``Config(engine=...)``, driven directly."""

    def __init__(self, engine: str, is_client: bool, size: int) -> None:
        # The server is another process (its own dev authority); the raw peers do
        # not verify either.
        config = sansquic.Config(
            dev_mode=True,
            verify_peer=False,
            engine=engine,  # type: ignore[arg-type]
            alpn=("bench",),
            max_udp_payload_size=size,
            pmtu_discovery=False,
        )
        role = sansquic.Role.CLIENT if is_client else sansquic.Role.SERVER
        server_name = "localhost" if is_client else None
        self.conn = sansquic.Connection(config, role=role, server_name=server_name)

    def connect(self, addr: Address, now: float) -> None:
        self.conn.connect(addr, now)

    def receive(self, data: bytes, addr: Address, now: float) -> None:
        self.conn.receive_datagram(data, addr, now)

    def out(self, now: float) -> list[tuple[bytes, Address]]:
        return self.conn.datagrams_to_send(now)

    def timer(self) -> float | None:
        return self.conn.timer()

    def handle_timer(self, now: float) -> None:
        self.conn.handle_timer(now)

    def events(self) -> list[tuple[str, int, bytes, bool]]:
        out: list[tuple[str, int, bytes, bool]] = []
        while (ev := self.conn.next_event()) is not None:
            if isinstance(ev, sansquic.HandshakeCompleted):
                out.append(("connected", 0, b"", False))
            elif isinstance(ev, sansquic.StreamReadable):
                while data := self.conn.read(ev.stream_id):
                    out.append(("data", ev.stream_id, data, False))
            elif isinstance(ev, sansquic.StreamEnded):
                while data := self.conn.read(ev.stream_id):
                    out.append(("data", ev.stream_id, data, False))
                out.append(("data", ev.stream_id, b"", True))
            elif isinstance(ev, sansquic.ConnectionTerminated):
                out.append(("closed", 0, b"", False))
        return out

    def open_stream(self) -> int:
        return self.conn.open_stream()

    def room(self, stream_id: int) -> bool:
        return self.conn.writable(stream_id)

    def send(self, stream_id: int, data: bytes, end: bool) -> None:
        self.conn.send(stream_id, data, end=end)

    def close(self) -> None:
        self.conn.close(0, "done")


def _peer(stack: str, is_client: bool, size: int) -> RawPeer | SansquicPeer:
    if stack.startswith("sansquic-"):
        return SansquicPeer(stack.removeprefix("sansquic-"), is_client, size)
    return RawPeer(stack, is_client, size)


def _pump(
    sock: socket.socket,
    peer: RawPeer | SansquicPeer,
    remote: list[Address],
    deadline: float,
    step: Callable[[list[tuple[str, int, bytes, bool]]], bool],
) -> None:
    """Receive every ready datagram, run timers, send; until ``step`` says stop."""
    while time.monotonic() < deadline:
        now = time.monotonic()
        for data, addr in peer.out(now):
            remote[:] = [addr]
            with contextlib.suppress(BlockingIOError):  # a full socket buffer: a loss
                sock.sendto(data, addr)
        if step(peer.events()):
            for data, addr in peer.out(time.monotonic()):
                sock.sendto(data, addr)
            return
        timer = peer.timer()
        wait = 0.05 if timer is None else max(0.0, min(0.05, timer - time.monotonic()))
        ready, _, _ = select.select([sock], [], [], wait)
        now = time.monotonic()
        if ready:
            while True:
                try:
                    data, addr = sock.recvfrom(65536)
                except BlockingIOError:
                    break
                remote[:] = [addr]
                peer.receive(data, addr, now)
        timer = peer.timer()
        if timer is not None and timer <= now:
            peer.handle_timer(now)
    raise TimeoutError("run did not finish in time")


def serve(stack: str, size: int) -> None:
    sock = _socket()
    print(sock.getsockname()[1], flush=True)
    peer = _peer(stack, is_client=False, size=size)
    state = {"count": 0, "cpu": 0.0, "began": False}

    def step(events: list[tuple[str, int, bytes, bool]]) -> bool:
        for kind, sid, data, end in events:
            if kind == "data":
                if not state["began"]:
                    state["began"], state["cpu"] = True, time.process_time()
                state["count"] += len(data)
                if end:
                    cpu = time.process_time() - state["cpu"]
                    peer.send(sid, f"{state['count']} {cpu:.6f}".encode(), True)
            elif kind == "closed":
                return True
        return False

    _pump(sock, peer, [], time.monotonic() + RUN_TIMEOUT + 5, step)


def run(stack: str, size: int, mb: int) -> dict[str, float]:
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve", stack, "--size", str(size)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        sock = _socket()
        addr = ("127.0.0.1", port)
        peer = _peer(stack, is_client=True, size=size)
        peer.connect(addr, time.monotonic())
        total = mb * 1_000_000
        payload = os.urandom(CHUNK)
        state: dict[str, Any] = {"sid": None, "sent": 0, "reply": b"", "t0": 0.0, "cpu0": 0.0}

        def step(events: list[tuple[str, int, bytes, bool]]) -> bool:
            for kind, _sid, data, end in events:
                if kind == "connected" and state["sid"] is None:
                    state["sid"] = peer.open_stream()
                    state["t0"], state["cpu0"] = time.monotonic(), time.process_time()
                elif kind == "data":
                    state["reply"] += data
                    if end:
                        return True
            sid = state["sid"]
            while sid is not None and state["sent"] < total and peer.room(sid):
                piece = payload[: min(CHUNK, total - state["sent"])]
                state["sent"] += len(piece)
                peer.send(sid, piece, state["sent"] >= total)
            return False

        _pump(sock, peer, [addr], time.monotonic() + RUN_TIMEOUT, step)
        elapsed = time.monotonic() - state["t0"]
        client_cpu = time.process_time() - state["cpu0"]
        count, server_cpu = state["reply"].split()
        assert int(count) == total, (count, total)
        peer.close()
        for data, to in peer.out(time.monotonic()):
            sock.sendto(data, to)
        return {
            "mb_s": total / 1e6 / elapsed,
            "client_cpu_ms_per_mb": client_cpu * 1e3 / (total / 1e6),
            "server_cpu_ms_per_mb": float(server_cpu) * 1e3 / (total / 1e6),
        }
    finally:
        try:
            server.wait(5)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--stacks", default=",".join(STACKS))
    parser.add_argument("--mb", type=int, default=64)
    parser.add_argument("--size", type=int, default=1200, help="UDP payload size")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.size)
        return 0
    results: dict[str, dict[str, Any]] = {}
    print(f"one stream, {args.mb} MB, {args.size}-byte packets, median of {args.repeat}")
    print(f"{'stack':18s} {'MB/s':>8s} {'client ms/MB':>13s} {'server ms/MB':>13s}  runs (MB/s)")
    for stack in args.stacks.split(","):
        runs = []
        for _ in range(args.repeat):
            try:
                runs.append(run(stack, args.size, args.mb))
            except (TimeoutError, AssertionError, ValueError) as exc:
                print(f"{stack}: run failed: {type(exc).__name__}: {exc}")
        if not runs:
            continue
        median = {key: statistics.median(r[key] for r in runs) for key in runs[0]}
        results[stack] = {"median": median, "runs": runs}
        print(
            f"{stack:18s} {median['mb_s']:8.1f} {median['client_cpu_ms_per_mb']:13.1f} "
            f"{median['server_cpu_ms_per_mb']:13.1f}  "
            + ", ".join(f"{r['mb_s']:.1f}" for r in runs)
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "results": results}, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
