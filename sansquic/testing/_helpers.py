"""Ready-made pieces for tests on the simulated network."""

from __future__ import annotations

import attrs

from .._config import Config
from .._connection import Connection, ConnectionState, Role
from .._endpoint import Endpoint
from .._engine import Address
from .._events import (
    ConnectionTerminated,
    DatagramReceived,
    Event,
    HandshakeCompleted,
    StreamEnded,
    StreamOpened,
    StreamReadable,
    StreamReset,
    StreamStopped,
)
from ._simnet import LinkConditions, SimNetwork

__all__ = [
    "CLIENT_ADDRESS",
    "SERVER_ADDRESS",
    "EchoServer",
    "Pair",
    "StreamSink",
    "connected_pair",
]

CLIENT_ADDRESS: Address = ("10.0.0.1", 50000)
SERVER_ADDRESS: Address = ("10.0.0.2", 4433)


class StreamSink:
    """Drains a connection's events, reading every stream dry, and keeps what came.

    Register ``sink.pump`` in ``SimNetwork.step_hooks`` (or call it yourself)
    and inspect the attributes afterwards.
    """

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        #: Every event, in order.
        self.events: list[Event] = []
        #: Stream id -> every byte read from it, in order.
        self.received: dict[int, bytearray] = {}
        #: Streams the peer opened, in the order announced.
        self.opened: list[int] = []
        #: Streams that delivered their FIN.
        self.ended: set[int] = set()
        #: Stream id -> error code, for streams the peer reset / stopped.
        self.resets: dict[int, int] = {}
        self.stops: dict[int, int] = {}
        self.datagrams: list[bytes] = []
        self.terminated: ConnectionTerminated | None = None

    def pump(self) -> None:
        conn = self.connection
        while (event := conn.next_event()) is not None:
            self.events.append(event)
            if isinstance(event, StreamReadable):
                buf = self.received.setdefault(event.stream_id, bytearray())
                while chunk := conn.read(event.stream_id):
                    buf += chunk
            elif isinstance(event, StreamOpened):
                self.opened.append(event.stream_id)
            elif isinstance(event, StreamEnded):
                self.ended.add(event.stream_id)
            elif isinstance(event, StreamReset):
                self.resets[event.stream_id] = event.error_code
            elif isinstance(event, StreamStopped):
                self.stops[event.stream_id] = event.error_code
            elif isinstance(event, DatagramReceived):
                self.datagrams.append(event.data)
            elif isinstance(event, ConnectionTerminated):
                self.terminated = event


class EchoServer:
    """Drains a server :class:`~sansquic.Endpoint`'s events and echoes each stream when it ends.

    Register ``echo.pump`` in ``SimNetwork.step_hooks``.
    """

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self._pending: dict[tuple[int, int], bytearray] = {}
        #: Connections that completed their handshake, and those that terminated.
        self.connected: set[Connection] = set()
        self.terminated: list[ConnectionTerminated] = []
        self.echoed: int = 0

    def pump(self) -> None:
        while (item := self.endpoint.next_event()) is not None:
            conn, event = item
            if isinstance(event, HandshakeCompleted):
                self.connected.add(conn)
            elif isinstance(event, StreamReadable):
                key = (id(conn), event.stream_id)
                buf = self._pending.setdefault(key, bytearray())
                while chunk := conn.read(event.stream_id):
                    buf += chunk
            elif isinstance(event, StreamEnded):
                data = self._pending.pop((id(conn), event.stream_id), bytearray())
                if conn.state is ConnectionState.CONNECTED and event.stream_id % 4 == 0:
                    conn.send(event.stream_id, bytes(data), end=True)
                    self.echoed += 1
            elif isinstance(event, ConnectionTerminated):
                self.connected.discard(conn)
                self.terminated.append(event)


@attrs.frozen
class Pair:
    """A client and a server connected over ``network``."""

    network: SimNetwork
    client: Connection
    server: Connection
    client_address: Address = CLIENT_ADDRESS
    server_address: Address = SERVER_ADDRESS


def connected_pair(
    conditions: LinkConditions | None = None,
    *,
    seed: int = 0,
    client_config: Config | None = None,
    server_config: Config | None = None,
    handshake: bool = True,
    timeout: float = 30.0,
) -> Pair:
    """Make a client and a server on a fresh network and, by default, complete the handshake.

    The server defaults to ``Config(dev_mode=True, trust_dev_certificate=True)`` and the client to
    ``Config(trust_dev_certificate=True)``, which verifies it. With ``handshake=False`` the
    client has only called ``connect()``. Raises ``TimeoutError`` when the
    handshake does not complete within ``timeout`` virtual seconds.
    """
    network = SimNetwork(seed, conditions=conditions)
    server = Connection(
        server_config or Config(dev_mode=True, trust_dev_certificate=True), role=Role.SERVER
    )
    client = Connection(
        client_config or Config(trust_dev_certificate=True),
        role=Role.CLIENT,
        server_name="localhost",
    )
    network.add(CLIENT_ADDRESS, client)
    network.add(SERVER_ADDRESS, server)
    client.connect(SERVER_ADDRESS, network.now)
    if handshake and not network.run_until(
        lambda: (
            client.state is ConnectionState.CONNECTED and server.state is ConnectionState.CONNECTED
        ),
        timeout,
    ):
        raise TimeoutError(
            f"no handshake within {timeout}s (client {client.state.value}, "
            f"server {server.state.value})"
        )
    return Pair(network, client, server)
