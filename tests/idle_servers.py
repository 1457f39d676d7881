"""Server nodes for the idle-connection memory test (``test_memory.py``).

They live in a module of their own so that a tracemalloc filter on this file
(any frame of an allocation's traceback) counts exactly what the server side
allocated, and nothing the clients did.
"""

from __future__ import annotations

from typing import Any

from aioquic import tls
from aioquic.buffer import Buffer
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.packet import pull_quic_header

from sansquic import Config, Endpoint, HandshakeCompleted
from sansquic._engine import Address


class SansquicServer:
    """A sansquic server Endpoint whose events are drained as they come."""

    def __init__(self, config: Config) -> None:
        self.endpoint = Endpoint(config, server=True)
        self.connected = 0

    def receive_datagram(self, data: bytes, address: Address, now: float) -> None:
        self.endpoint.receive_datagram(data, address, now)

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        return self.endpoint.datagrams_to_send(now)

    def timer(self) -> float | None:
        return self.endpoint.timer()

    def handle_timer(self, now: float) -> None:
        self.endpoint.handle_timer(now)

    def pump(self) -> None:
        while (item := self.endpoint.next_event()) is not None:
            self.connected += isinstance(item[1], HandshakeCompleted)


class RawServer:
    """aioquic's own QuicConnection per client address, as a minimal driver keeps them.

    Once a connection's Initial and Handshake keys are gone, their 16 KiB output
    buffers are released as sansquic's seam releases them, so that what the
    comparison measures is what sansquic adds, not that saving.
    """

    def __init__(self, configuration: QuicConfiguration, max_streams: int) -> None:
        self.configuration = configuration
        self.max_streams = max_streams
        self.connections: dict[Address, Any] = {}
        self.connected = 0

    def receive_datagram(self, data: bytes, address: Address, now: float) -> None:
        quic = self.connections.get(address)
        if quic is None:
            header = pull_quic_header(Buffer(data=data), host_cid_length=8)
            quic = self.connections[address] = QuicConnection(
                configuration=self.configuration,
                original_destination_connection_id=header.destination_cid,
            )
            limit = quic._local_max_streams_bidi  # as the seam raises it
            limit.value = limit.sent = self.max_streams
        quic.receive_datagram(data, address, now=now)
        buffers = quic._crypto_buffers
        for epoch in (tls.Epoch.INITIAL, tls.Epoch.HANDSHAKE):
            if quic._spaces[epoch].discarded and buffers[epoch].capacity:
                buffers[epoch] = Buffer(capacity=0)

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        out: list[tuple[bytes, Address]] = []
        for quic in self.connections.values():
            out += quic.datagrams_to_send(now=now)
        return out

    def timer(self) -> float | None:
        timers = [t for q in self.connections.values() if (t := q.get_timer()) is not None]
        return min(timers, default=None)

    def handle_timer(self, now: float) -> None:
        for quic in self.connections.values():
            timer = quic.get_timer()
            if timer is not None and timer <= now:
                quic.handle_timer(now=now)

    def pump(self) -> None:
        for quic in self.connections.values():
            while (event := quic.next_event()) is not None:
                self.connected += type(event).__name__ == "HandshakeCompleted"
