"""An hq-interop peer built on aioquic's own asyncio API, not on sansquic.

It stands in for "a peer nobody here wrote": the QUIC stack on this side is
aioquic's (its QuicConnectionProtocol, its server and client), and only the
few lines of hq-interop glue below are ours.
"""

from __future__ import annotations

import asyncio
import ssl
import threading
from typing import Any, ClassVar

from aioquic.asyncio import QuicConnectionProtocol, connect, serve
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import QuicEvent, StreamDataReceived, StreamReset
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from cryptography.x509 import load_pem_x509_certificate

import sansquic
from sansquic_conformance import hq


class _Server(QuicConnectionProtocol):
    files: ClassVar[dict[str, bytes]] = {}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._requests: dict[int, bytearray] = {}

    def quic_event_received(self, event: QuicEvent) -> None:
        if isinstance(event, StreamDataReceived):
            request = self._requests.setdefault(event.stream_id, bytearray())
            request += event.data
            if event.end_stream:
                body = self.files.get(hq.parse_request(bytes(request)) or "")
                if body is None:
                    self._quic.reset_stream(event.stream_id, hq.NOT_FOUND)
                else:
                    self._quic.send_stream_data(event.stream_id, body, end_stream=True)
                self.transmit()


class _Client(QuicConnectionProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._responses: dict[int, tuple[bytearray, asyncio.Future[bytes]]] = {}

    async def get(self, path: str) -> bytes:
        stream_id = self._quic.get_next_available_stream_id()
        waiter: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._responses[stream_id] = (bytearray(), waiter)
        self._quic.send_stream_data(stream_id, f"GET {path}\r\n".encode(), end_stream=True)
        self.transmit()
        return await asyncio.wait_for(waiter, 30)

    def quic_event_received(self, event: QuicEvent) -> None:
        if isinstance(event, StreamDataReceived) and event.stream_id in self._responses:
            body, waiter = self._responses[event.stream_id]
            body += event.data
            if event.end_stream and not waiter.done():
                waiter.set_result(bytes(body))
        elif isinstance(event, StreamReset) and event.stream_id in self._responses:
            _, waiter = self._responses[event.stream_id]
            if not waiter.done():
                waiter.set_exception(sansquic.StreamResetError(event.stream_id, event.error_code))


class AioquicPeer:
    """Runs aioquic's asyncio server or client in a thread of its own."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever)
        self.thread.start()
        self._server: Any = None

    def run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(60)

    def serve(self, files: dict[str, bytes]) -> tuple[str, int]:
        pair = sansquic.issue_dev_certificate()  # hq.CONFIG trusts it: verified for real
        config = QuicConfiguration(is_client=False, alpn_protocols=[hq.ALPN])
        config.certificate = load_pem_x509_certificate(pair.certificate)
        config.private_key = load_pem_private_key(pair.private_key, password=None)
        _Server.files = files

        async def start() -> tuple[str, int]:
            self._server = await serve(
                "127.0.0.1", 0, configuration=config, create_protocol=_Server
            )
            address = self._server._transport.get_extra_info("sockname")
            return address[0], address[1]

        address: tuple[str, int] = self.run(start())
        return address

    def fetch(self, address: tuple[str, int], paths: list[str]) -> list[bytes | Exception]:
        config = QuicConfiguration(is_client=True, alpn_protocols=[hq.ALPN])
        config.verify_mode = ssl.CERT_NONE

        async def fetch_all() -> list[bytes | Exception]:
            async with connect(
                address[0], address[1], configuration=config, create_protocol=_Client
            ) as client:
                results: list[bytes | Exception] = []
                for path in paths:
                    try:
                        results.append(await client.get(path))
                    except sansquic.StreamResetError as exc:
                        results.append(exc)
                return results

        results: list[bytes | Exception] = self.run(fetch_all())
        return results

    def close(self) -> None:
        async def close_server() -> None:
            if self._server is not None:
                self._server.close()
            await asyncio.sleep(0.05)  # let the transport finish closing on its loop

        self.run(close_server())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()
