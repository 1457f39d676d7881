"""A look at the core at work: 1,000 streams over an impaired simulated link.

Run ``python -m sansquic.testing.demo [--streams N] [--seed S]``. Everything
happens in this process on a virtual clock; nothing touches the network.
"""

from __future__ import annotations

import argparse
import hashlib
import random
from collections import Counter

from . import LinkConditions, StreamSink, connected_pair


def main(argv: list[str] | None = None) -> int:
    """Run the demo with command-line ``argv``; return the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)

    conditions = LinkConditions(delay=0.01, jitter=0.002, loss=0.05, reorder=0.05, duplicate=0.01)
    print(f"link: {conditions}")
    pair = connected_pair(conditions, seed=args.seed)
    print(
        f"handshake: done at t={pair.network.now * 1000:.1f} ms (virtual), alpn={pair.client.alpn}"
    )

    rng = random.Random(args.seed)
    sent: dict[int, bytes] = {}
    for _ in range(args.streams):
        stream_id = pair.client.open_stream()
        sent[stream_id] = rng.randbytes(rng.randrange(1, 4000))
        pair.client.send(stream_id, sent[stream_id], end=True)
    pair.client.send_datagram(b"a datagram rides along")

    sink = StreamSink(pair.server)
    pair.network.step_hooks.append(sink.pump)
    start = pair.network.now
    finished = pair.network.run_until(lambda: len(sink.ended) == len(sent), timeout=300)

    intact = sum(bytes(sink.received.get(sid, b"")) == data for sid, data in sent.items())
    total = sum(map(len, sent.values()))
    digest = hashlib.sha256(b"".join(sent[s] for s in sorted(sent))).hexdigest()[:16]
    fates = Counter(record.fate for record in pair.network.trace)
    print(f"streams: {intact}/{len(sent)} arrived intact and in order")
    print(f"payload: {total:,} bytes, sha256 {digest}...")
    print(f"datagrams received by the server: {len(sink.datagrams)} (unreliable: may be 0)")
    print(f"virtual time to deliver everything: {pair.network.now - start:.3f} s")
    print("datagram fates on the wire: " + ", ".join(f"{k} {v}" for k, v in sorted(fates.items())))
    stats = pair.client.stats()
    rtt_ms = (stats.rtt_smoothed or 0.0) * 1000
    print(f"client: {stats.udp_datagrams_sent} UDP datagrams sent, rtt {rtt_ms:.1f} ms,")
    print(f"        congestion window {stats.congestion_window} bytes")
    ok = finished and intact == len(sent)
    print("OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
