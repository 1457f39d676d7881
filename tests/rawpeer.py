"""A raw aioquic client for attack tests: it does what a hostile peer can, unguarded.

sansquic's own Connection refuses misuse; an attacker's stack does not. This
node drives aioquic's QuicConnection directly (tests may reach the engine;
the core may not) and plugs into ``sansquic.testing.SimNetwork``.
"""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Callable

from aioquic.quic import events
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection

from sansquic import AuthMethod, AuthRequest
from sansquic._auth import encode_request

Address = tuple[str, int]

__all__ = ["RawClient", "auth_request", "run_over_udp"]


def auth_request(credentials: bytes = b"good") -> bytes:
    """The bytes of a well-formed bearer auth request."""
    return encode_request(AuthRequest(method=AuthMethod.BEARER, credentials=credentials))


class RawClient:
    """An aioquic client connection as a SimNetwork node, with its events kept."""

    def __init__(
        self,
        server: Address,
        now: float,
        *,
        alpn: str = "sansquic",
        tune: Callable[[QuicConnection], None] | None = None,
    ) -> None:
        """``tune`` may change the raw connection before it sends its first packet."""
        config = QuicConfiguration(
            is_client=True,
            alpn_protocols=[alpn],
            verify_mode=ssl.CERT_NONE,
            server_name="localhost",
            max_datagram_frame_size=65536,
        )
        self.quic = QuicConnection(configuration=config)
        if tune is not None:
            tune(self.quic)
        self.quic.connect(server, now)
        self.events: list[events.QuicEvent] = []
        self._now = now

    # -- the Node interface ------------------------------------------------------------

    def receive_datagram(self, data: bytes, address: Address, now: float) -> None:
        self._now = now
        self.quic.receive_datagram(data, address, now)
        self._drain()

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        self._now = now
        return self.quic.datagrams_to_send(now)

    def timer(self) -> float | None:
        return self.quic.get_timer()

    def handle_timer(self, now: float) -> None:
        self._now = now
        self.quic.handle_timer(now)
        self._drain()

    def _drain(self) -> None:
        while (event := self.quic.next_event()) is not None:
            self.events.append(event)

    # -- what the tests look at ----------------------------------------------------------

    @property
    def connected(self) -> bool:
        return any(isinstance(e, events.HandshakeCompleted) for e in self.events)

    @property
    def close_code(self) -> int | None:
        """The error code the connection ended with, once it ended."""
        for event in self.events:
            if isinstance(event, events.ConnectionTerminated):
                return event.error_code
        return None

    def received(self, stream_id: int) -> bytes:
        return b"".join(
            e.data
            for e in self.events
            if isinstance(e, events.StreamDataReceived) and e.stream_id == stream_id
        )


def run_over_udp(
    client: RawClient, server: Address, done: Callable[[], bool], timeout: float
) -> bool:
    """Drive ``client`` over a real loopback UDP socket until ``done()`` or ``timeout``."""
    deadline = time.monotonic() + timeout
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        while True:
            now = time.monotonic()
            for data, _ in client.datagrams_to_send(now):
                sock.sendto(data, server)
            if done():
                return True
            if now >= deadline:
                return False
            timer = client.timer()
            wait = deadline - now if timer is None else min(deadline, timer) - now
            sock.settimeout(max(0.001, min(wait, 0.05)))
            try:
                data, addr = sock.recvfrom(65535)
            except TimeoutError:
                if timer is not None and time.monotonic() >= timer:
                    client.handle_timer(time.monotonic())
                continue
            client.receive_datagram(data, (addr[0], addr[1]), time.monotonic())
