"""Interop with quinn's WebTransport (pip ``web-transport-quinn``, Python >= 3.12).

Both directions, in one asyncio loop: quinn's client against a sansquic
server, and sansquic's client against quinn's server; each echoes on a
bidirectional stream, a unidirectional stream and a datagram. Skipped, saying
so, where the package is not installed (``nox -s webtransport`` installs it on
Python 3.12).
"""

from __future__ import annotations

import asyncio
import contextlib

import pytest
import sansquic_asyncio
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from sansquic_runtime import _wt_async

import sansquic

wt = pytest.importorskip(
    "web_transport", reason="web-transport-quinn is not installed (pip, Python >= 3.12)"
)


async def _sansquic_echo(session: _wt_async.WebTransportSession) -> None:
    async def datagrams() -> None:
        with contextlib.suppress(sansquic.ConnectionClosed):
            while True:
                await session.send_datagram(await session.receive_datagram())

    task = asyncio.ensure_future(datagrams())
    try:
        with contextlib.suppress(sansquic.ConnectionClosed):
            while True:
                stream = await session.accept_stream()
                data = await stream.read_all(timeout=5)
                if stream.id & 2:
                    stream = await session.open_stream(bidirectional=False)
                await stream.send(data)
                await stream.finish()
    finally:
        task.cancel()


def _cert() -> tuple[bytes, bytes, bytes]:
    cert_der, key_der = wt.generate_self_signed(["localhost", "127.0.0.1"])
    cert = x509.load_der_x509_certificate(cert_der)
    key = serialization.load_der_private_key(key_der, None)
    pem_key = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert.public_bytes(serialization.Encoding.PEM), pem_key, cert_der


def test_quinn_client_against_a_sansquic_server() -> None:
    async def main() -> None:
        cert, key, der = _cert()
        config = sansquic.Config(certificate=cert, private_key=key, alpn=("h3",))
        handler = _wt_async.webtransport_handler(_sansquic_echo)
        server = await sansquic_asyncio.serve(handler, "127.0.0.1", 0, config=config)
        async with server:
            url = f"https://127.0.0.1:{server.address[1]}/echo"
            async with wt.Client(server_certificate_hashes=[wt.certificate_hash(der)]) as client:
                session = await client.connect(url)
                send, recv = await session.open_bi()
                await send.write(b"bidi")
                await send.finish()
                assert await recv.read() == b"bidi"
                uni = await session.open_uni()
                await uni.write(b"uni")
                await uni.finish()
                back = await session.accept_uni()
                assert await back.read() == b"uni"
                for _ in range(20):
                    session.send_datagram(b"dg")
                    with contextlib.suppress(TimeoutError):
                        assert await asyncio.wait_for(session.receive_datagram(), 0.5) == b"dg"
                        break
                else:
                    raise AssertionError("no datagram came back")
                session.close(0, "done")

    asyncio.run(asyncio.wait_for(main(), 30))


def test_sansquic_client_against_a_quinn_server() -> None:
    async def quinn_echo(session: object) -> None:
        s: wt.Session = session  # type: ignore[assignment]
        send, recv = await s.accept_bi()
        await send.write(await recv.read())
        await send.finish()
        data = await (await s.accept_uni()).read()
        out = await s.open_uni()
        await out.write(data)
        await out.finish()
        while True:
            s.send_datagram(await s.receive_datagram())

    async def main() -> None:
        cert_der, key_der = wt.generate_self_signed(["localhost", "127.0.0.1"])
        async with wt.Server(
            certificate_chain=[cert_der], private_key=key_der, bind="127.0.0.1:0"
        ) as server:
            port = server.local_addr[1]

            async def serve() -> None:
                request = await server.accept()
                assert request is not None
                session = await request.accept()
                with contextlib.suppress(wt.WebTransportError):
                    await quinn_echo(session)

            serving = asyncio.ensure_future(serve())
            # Verified for real: quinn's self-signed certificate is the one anchor.
            pem = x509.load_der_x509_certificate(cert_der).public_bytes(serialization.Encoding.PEM)
            config = sansquic.Config(ca_certs=pem, alpn=("h3",))
            async with sansquic_asyncio.connect("127.0.0.1", port, config=config) as conn:  # noqa: SIM117
                async with conn._driver.backend.task_group() as group:
                    session = await _wt_async.open_session(conn, group, "localhost", "/")
                    bidi = await session.open_stream()
                    await bidi.send(b"bidi")
                    await bidi.finish()
                    assert await bidi.read_all(timeout=5) == b"bidi"
                    uni = await session.open_stream(bidirectional=False)
                    await uni.send(b"uni")
                    await uni.finish()
                    back = await session.accept_stream(timeout=5)
                    assert await back.read_all(timeout=5) == b"uni"
                    for _ in range(20):
                        await session.send_datagram(b"dg")
                        with contextlib.suppress(TimeoutError):
                            assert await session.receive_datagram(timeout=0.5) == b"dg"
                            break
                    else:
                        raise AssertionError("no datagram came back")
                    await session.close()
                    await conn.close()
            serving.cancel()

    asyncio.run(asyncio.wait_for(main(), 30))
