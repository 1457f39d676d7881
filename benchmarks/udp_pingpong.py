"""The floor under every loopback latency here: a bare UDP ping-pong between two processes.

A child process echoes each datagram back (blocked in ``recvfrom`` between
them); the parent sends 60 bytes, waits in ``select`` for the echo, and times
the round trip. Nothing else runs: no QUIC,
no event loop. Run twice, once with both processes on different CPUs and once
on the same CPU (``os.sched_setaffinity``, Linux), it shows what the kernel
and the machine charge to wake a process that sleeps in a socket call when a
datagram comes: the part of an open+echo latency
(``benchmarks/runtimes.py``) that no QUIC stack can remove. On a virtual
machine a sleeping vCPU can take a hundred microseconds or more to wake.

    python benchmarks/udp_pingpong.py              # 5000 round trips each way
    python benchmarks/udp_pingpong.py --count 20000

Needs two CPUs for the cross-CPU case (it is skipped with one).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import select
import socket
import statistics
import time
from multiprocessing.connection import Connection

HOST = "127.0.0.1"
PAYLOAD = b"p" * 60
WARMUP = 500


def _echo(port: Connection, cpu: int, count: int) -> None:
    os.sched_setaffinity(0, {cpu})
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(10.0)  # the parent gave up: end rather than wait forever
    sock.bind((HOST, 0))
    port.send(sock.getsockname()[1])
    for _ in range(count):
        data, addr = sock.recvfrom(2048)
        sock.sendto(data, addr)
    sock.close()


def round_trips(client_cpu: int, server_cpu: int, count: int) -> list[float]:
    """``count`` timed round trips (after ``WARMUP`` untimed), in microseconds."""
    ours, theirs = multiprocessing.Pipe(duplex=False)
    child = multiprocessing.Process(target=_echo, args=(theirs, server_cpu, WARMUP + count))
    child.start()
    try:
        os.sched_setaffinity(0, {client_cpu})
        if not ours.poll(10.0):
            raise TimeoutError("the echo process did not start")
        server = (HOST, ours.recv())
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setblocking(False)
        samples: list[float] = []
        for i in range(WARMUP + count):
            start = time.perf_counter()
            sock.sendto(PAYLOAD, server)
            if not select.select([sock], [], [], 5.0)[0]:
                raise TimeoutError("the echo process did not answer")
            sock.recv(2048)
            if i >= WARMUP:
                samples.append((time.perf_counter() - start) * 1e6)
        sock.close()
        return samples
    finally:
        child.join(10)
        if child.is_alive():
            child.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=5000, help="timed round trips per case")
    args = parser.parse_args()
    cpus = sorted(os.sched_getaffinity(0))
    cases = [("same CPU", cpus[0], cpus[0])]
    if len(cpus) > 1:
        cases.insert(0, ("different CPUs", cpus[0], cpus[1]))
    print(f"UDP round trips over loopback, {args.count} per case; load {os.getloadavg()}")
    for name, client_cpu, server_cpu in cases:
        samples = sorted(round_trips(client_cpu, server_cpu, args.count))
        p99 = samples[int(len(samples) * 0.99)]
        print(f"  {name:15s} p50 {statistics.median(samples):7.1f} us   p99 {p99:7.1f} us")


if __name__ == "__main__":
    main()
