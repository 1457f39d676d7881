"""Many streams at once against one, on the asyncio runtime over loopback.

A server process reads every stream to its end and answers the byte count;
this process opens ``--streams`` streams and sends ``--bytes`` on each, all at
once (one task per stream), with ``benchmarks/runtimes.py``'s sansquic
settings (1200-byte packets unless ``--pmtu``). It prints the aggregate rate,
then the same payload on a single stream, ``--repeat`` times alternating.
This is the quick check for the cost of many streams in the engine (aioquic
walks its stream queue for every packet; see ``sansquic/_aioquic.py``)::

    python benchmarks/many_streams.py                  # 100 x 200 KB vs 1 x 20 MB, x3
    python benchmarks/many_streams.py --streams 20 --bytes 1000000
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import time
from pathlib import Path

import sansquic_asyncio

sys.path.insert(0, str(Path(__file__).parent))
import runtimes  # the benchmark's own sansquic settings

CHUNK = b"B" * 65536


async def _serve(pmtu: bool) -> None:
    async def handler(conn: sansquic_asyncio.Connection) -> None:
        async with asyncio.TaskGroup() as group:
            async for stream in conn:
                group.create_task(_count(stream))

    async def _count(stream: sansquic_asyncio.Stream) -> None:
        count = 0
        while data := await stream.receive():
            count += len(data)
        await stream.send(str(count).encode())
        await stream.finish()

    runtimes.SANSQUIC_PACKET_DEFAULTS = pmtu
    server = await sansquic_asyncio.serve(
        handler, "127.0.0.1", 0, config=runtimes.sansquic_config()
    )
    print(server.address[1], flush=True)
    await server.serve_forever()


async def _send(stream: sansquic_asyncio.Stream, size: int) -> None:
    sent = 0
    while sent < size:
        piece = min(len(CHUNK), size - sent)
        await stream.send(CHUNK[:piece])
        sent += piece
    await stream.finish()
    if int(await stream.read_all()) != size:
        raise RuntimeError("the server counted another size")


async def _rate(port: int, streams: int, size: int, pmtu: bool) -> float:
    """MB/s for ``streams`` streams of ``size`` bytes each, sent at once."""
    runtimes.SANSQUIC_PACKET_DEFAULTS = pmtu
    config = runtimes.sansquic_config()
    async with sansquic_asyncio.connect(
        "127.0.0.1", port, config=config, server_name="localhost"
    ) as conn:
        opened = [await conn.open_stream() for _ in range(streams)]
        start = time.perf_counter()
        async with asyncio.TaskGroup() as group:
            for stream in opened:
                group.create_task(_send(stream, size))
        return streams * size / (time.perf_counter() - start) / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=100)
    parser.add_argument("--bytes", type=int, default=200_000, help="per stream")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--pmtu", action="store_true", help="sansquic's own packet sizing")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(_serve(args.pmtu))
        return
    command = [sys.executable, __file__, "--serve"] + (["--pmtu"] if args.pmtu else [])
    server = subprocess.Popen(command, stdout=subprocess.PIPE)
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        cases = {f"{args.streams} x {args.bytes:,} B": (args.streams, args.bytes)}
        cases[f"1 x {args.streams * args.bytes:,} B"] = (1, args.streams * args.bytes)
        rates: dict[str, list[float]] = {name: [] for name in cases}
        for _ in range(args.repeat):  # alternate, so drift on the machine hits both
            for name, (streams, size) in cases.items():
                rates[name].append(asyncio.run(_rate(port, streams, size, args.pmtu)))
                print(f"  {name:<20} {rates[name][-1]:7.1f} MB/s", flush=True)
        for name, values in rates.items():
            print(
                f"{name:<22} median {statistics.median(values):7.1f} MB/s "
                f"({min(values):.1f}-{max(values):.1f})"
            )
    finally:
        server.kill()
        server.wait(timeout=10)


if __name__ == "__main__":
    main()
