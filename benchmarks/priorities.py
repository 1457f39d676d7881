"""Priority latency under saturation, and memory per idle open stream.

1. Latency: on the simulated network (10 Mbit/s bottleneck, 20 ms round trip,
   a 32 KiB bottleneck queue), the virtual time from opening a CRITICAL
   stream and writing 64 KiB to the server having read all of it, on an idle
   connection and while a LOW stream saturates the link.
2. Memory: tracemalloc's traced bytes for 10,000 open, idle bidirectional
   streams (each carried one byte, so both ends know it), per stream, both
   ends together and halved per end.

Virtual times are exact and repeatable; memory varies a little run to run.
Run from the repository root::

    python benchmarks/priorities.py
"""

from __future__ import annotations

import gc
import tracemalloc

import sansquic
from sansquic.testing import LinkConditions, StreamSink, connected_pair

BOTTLENECK = LinkConditions(delay=0.01, bandwidth=1_250_000, queue_bytes=32 * 1024)
MESSAGE = 64 * 1024


def critical_latency(saturated: bool) -> float:
    pair = connected_pair(BOTTLENECK)
    sink = StreamSink(pair.server)
    pair.network.step_hooks.append(sink.pump)
    client = pair.client
    if saturated:
        low = client.open_stream(priority=sansquic.Priority.LOW)

        def keep_low_busy() -> None:
            while client.writable(low):
                client.send(low, b"l" * 16_384)

        pair.network.step_hooks.append(keep_low_busy)
        pair.network.run_for(3.0)
    critical = client.open_stream(priority=sansquic.Priority.CRITICAL)
    start = pair.network.now
    client.send(critical, b"c" * MESSAGE, end=True)
    assert pair.network.run_until(lambda: critical in sink.ended, 10)
    assert len(sink.received[critical]) == MESSAGE
    return pair.network.now - start


def idle_stream_memory(count: int) -> float:
    config = sansquic.Config(dev_mode=True, trust_dev_certificate=True, max_streams_bidi=count)
    pair = connected_pair(LinkConditions(delay=0.001), server_config=config)
    sink = StreamSink(pair.server)
    pair.network.step_hooks.append(sink.pump)
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    streams = [pair.client.open_stream() for _ in range(count)]
    for stream_id in streams:
        pair.client.send(stream_id, b"x")
    assert pair.network.run_until(lambda: len(sink.opened) == count, 60)
    pair.network.run_for(1.0)
    sink.events.clear()  # the benchmark's own record of events is not the streams' cost
    gc.collect()
    used = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert pair.client.stats().streams_open == pair.server.stats().streams_open == count
    return used / count


def main() -> None:
    idle, busy = critical_latency(saturated=False), critical_latency(saturated=True)
    transmission = MESSAGE / 1_250_000
    print("CRITICAL 64 KiB message, 10 Mbit/s, 20 ms RTT (virtual time):")
    print(f"  idle link:        {idle * 1000:6.1f} ms")
    print(f"  LOW saturating:   {busy * 1000:6.1f} ms")
    print(f"  (transmission alone {transmission * 1000:.1f} ms; 3 RTT = 60 ms)")
    per_stream = idle_stream_memory(10_000)
    print("10,000 idle open bidirectional streams:")
    print(f"  {per_stream:.0f} bytes per stream, both ends; {per_stream / 2:.0f} per end")


if __name__ == "__main__":
    main()
