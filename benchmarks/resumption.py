"""Time to the first byte: a full handshake, a resumed one, and a resumed one with 0-RTT.

    python benchmarks/resumption.py [--rounds N] [--delay SECONDS]

For each kind of connection, on the asyncio runtime over loopback (and through
a relay that delays each datagram by ``--delay`` seconds each way, a path
with a round trip of twice that), it measures from the call to ``connect()``
to: the server's handler holding the request (``request at server``, minus
the one-way delay: when the first byte was *sent*), and the client holding
the reply. Medians over ``--rounds``, in milliseconds.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import sansquic_asyncio

import sansquic
from sansquic_conformance.relay import Relay

KINDS = ("full handshake", "resumed", "resumed + 0-RTT")


async def _one(port: int, config: sansquic.Config, arrivals: list[float]) -> tuple[float, float]:
    """One connection sending a 1-byte request; (request at server, reply) seconds."""
    began = time.perf_counter()
    async with sansquic_asyncio.connect("127.0.0.1", port, config=config) as conn:
        stream = await conn.open_stream()
        await stream.send(b"?")
        await stream.finish()
        await stream.read_all(timeout=10)
        replied = time.perf_counter()
    return arrivals[-1] - began, replied - began


async def _measure(rounds: int, delay: float) -> dict[str, tuple[float, float]]:
    arrivals: list[float] = []

    async def handler(conn: sansquic_asyncio.Connection) -> None:
        async for stream in conn:
            await stream.read_all(timeout=10)
            arrivals.append(time.perf_counter())
            await stream.send(b"!")
            await stream.finish()

    server_config = sansquic.Config(
        dev_mode=True,
        trust_dev_certificate=True,
        early_data=True,
        ticket_keys=(os.urandom(32),),
    )
    server = await sansquic_asyncio.serve(handler, "127.0.0.1", 0, config=server_config)
    relay = Relay(server.address, delay=delay, lifetime=600)
    results: dict[str, list[tuple[float, float]]] = {kind: [] for kind in KINDS}
    try:
        for _ in range(rounds):
            for kind in KINDS:
                config = sansquic.Config(
                    dev_mode=True,
                    trust_dev_certificate=True,
                    session_tickets=kind != "full handshake",
                    early_data=kind == "resumed + 0-RTT",
                )
                if kind != "full handshake":  # a first connection leaves the ticket
                    await _one(relay.address[1], config, arrivals)
                    for _ in range(200):
                        if len(config.ticket_store) > 0:  # type: ignore[arg-type]
                            break
                        await asyncio.sleep(0.005)
                results[kind].append(await _one(relay.address[1], config, arrivals))
    finally:
        relay.close()
        await server.close()
    return {
        kind: (
            statistics.median(r for r, _ in samples) - delay,
            statistics.median(t for _, t in samples),
        )
        for kind, samples in results.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--delay", type=float, action="append", help="one-way delay, seconds")
    args = parser.parse_args()
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    for delay in args.delay or [0.0, 0.025]:
        print(f"\n== round trip {2 * delay * 1000:.0f} ms (relay), {args.rounds} rounds, medians")
        print(f"{'connection':<18} {'first byte sent ms':>19} {'reply at client ms':>19}")
        for kind, (sent, reply) in asyncio.run(_measure(args.rounds, delay)).items():
            print(f"{kind:<18} {sent * 1000:>19.2f} {reply * 1000:>19.2f}")
    print(f"\nload average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
