"""A helper the simnet tests share: one stream sent to the end and checked."""

from sansquic.testing import Pair, StreamSink


def transfer(pair: Pair, size: int = 300_000, timeout: float = 60.0) -> StreamSink:
    """Send ``size`` bytes on a new client stream, with FIN, until the server holds them all."""
    sink = StreamSink(pair.server)
    pair.network.step_hooks.append(sink.pump)
    sid = pair.client.open_stream()
    pair.client.send(sid, b"x" * size, end=True)
    assert pair.network.run_until(lambda: sid in sink.ended, timeout)
    assert len(sink.received[sid]) == size
    return sink
