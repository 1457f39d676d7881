"""The engine reads a peer's ACK delays with the peer's ``ack_delay_exponent``.

aioquic 1.7 ignores the exponent a peer announces and decodes every ACK delay
with its own (3); the seam applies the peer's. (qh3 decodes them in its own
code with the peer's exponent, and its qlog has no frames to check it by.)

The peer here is raw aioquic told to announce exponent 0 (or 8) and to hold
its ACKs for 20 ms: read with exponent 3 instead, the server would log 160 ms
(or 0.6 ms).
"""

from __future__ import annotations

from typing import Any

import pytest
from aioquic.quic.connection import QuicConnection

from sansquic import Config, Connection, Role
from sansquic.testing import LinkConditions, SimNetwork

from .rawpeer import RawClient

SERVER, CLIENT = ("10.0.0.2", 4433), ("10.0.0.1", 5000)
HELD = 0.020  # seconds the peer holds each ACK


def _announce(exponent: int) -> Any:
    def tune(quic: QuicConnection) -> None:
        quic._local_ack_delay_exponent = exponent
        quic._ack_delay = HELD

    return tune


def _ack_delays_the_server_read(exponent: int) -> list[float]:
    traces: list[dict[str, Any]] = []
    network = SimNetwork(1, conditions=LinkConditions(delay=0.002))
    config = Config(dev_mode=True, trust_dev_certificate=True, qlog=traces.append)
    server = Connection(config, role=Role.SERVER)
    network.add(SERVER, server)
    client = RawClient(SERVER, network.now, tune=_announce(exponent))
    network.add(CLIENT, client)
    assert network.run_until(lambda: client.connected, 5)
    for _ in range(5):  # data from the server, each acknowledged HELD later
        stream_id = server.open_stream()
        server.send(stream_id, b"x" * 100, end=True)
        network.run_for(0.2)
    server.close()
    network.run_for(1.0)
    (document,) = traces
    return [
        frame["ack_delay"]
        for event in document["traces"][0]["events"]
        if event["name"] == "transport:packet_received"
        for frame in event["data"].get("frames", [])
        if frame.get("frame_type") == "ack" and frame["ack_delay"] > 0
    ]


@pytest.mark.parametrize("exponent", [0, 3, 8])
def test_a_peers_ack_delays_are_read_with_its_own_exponent(exponent: int) -> None:
    delays = _ack_delays_the_server_read(exponent)
    assert delays, "the peer acknowledged nothing with a delay"
    # Every ACK waited at most HELD after the packet it reports (an earlier one of
    # its batch set the timer), and most the whole HELD. The exponent only drops
    # low bits: 2**8 us = 0.256 ms at most.
    held_ms = HELD * 1000
    assert max(delays) <= held_ms + 0.001, delays
    assert sorted(delays)[len(delays) // 2] >= held_ms - 0.3, delays
