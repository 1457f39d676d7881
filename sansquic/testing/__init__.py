"""Testing tools: a seeded simulated network with a virtual clock.

>>> pair = connected_pair(LinkConditions(delay=0.01, loss=0.02), seed=1)
>>> sid = pair.client.open_stream()
>>> pair.client.send(sid, b"hello", end=True)
>>> sink = StreamSink(pair.server)
>>> pair.network.run_until(lambda: (sink.pump(), sid in sink.ended)[1], timeout=5)
True
>>> bytes(sink.received[sid])
b'hello'
"""

from ._helpers import (
    CLIENT_ADDRESS,
    SERVER_ADDRESS,
    EchoServer,
    Pair,
    StreamSink,
    connected_pair,
)
from ._simnet import LinkConditions, Node, SimNetwork, TraceRecord

__all__ = [
    "CLIENT_ADDRESS",
    "SERVER_ADDRESS",
    "EchoServer",
    "LinkConditions",
    "Node",
    "Pair",
    "SimNetwork",
    "StreamSink",
    "TraceRecord",
    "connected_pair",
]
