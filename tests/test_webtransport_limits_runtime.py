"""WebTransport session flow control, draining and GOAWAY on the runtime layer
(asyncio, and the generated threads twin) over loopback."""

from __future__ import annotations

import asyncio
import contextlib
import queue

import pytest
import sansquic_asyncio
import sansquic_threads
from sansquic_runtime import _wt_async, _wt_sync

import sansquic
from sansquic import _h3wire as w

CONFIG = sansquic.Config(dev_mode=True, trust_dev_certificate=True, alpn=("h3",), idle_timeout=5.0)
TIGHT = sansquic.SessionLimits(max_data=8192, max_streams_bidi=2, max_streams_uni=2)
PAYLOAD = bytes(range(256)) * 200  # 51,200 bytes: six of the server's 8 KiB windows


async def _echo(session: _wt_async.WebTransportSession) -> None:
    with contextlib.suppress(sansquic.ConnectionClosed):
        while True:
            stream = await session.accept_stream()
            await stream.send(await stream.read_all(timeout=5))
            await stream.finish()


def _serve(handler: _wt_async.WebTransportHandler):  # type: ignore[no-untyped-def]
    return sansquic_asyncio.serve(handler, "127.0.0.1", 0, config=CONFIG)


def test_asyncio_opens_and_sends_wait_for_the_peers_session_credit() -> None:
    async def main() -> None:
        handler = _wt_async.webtransport_handler(_echo, session_limits=TIGHT)
        async with await _serve(handler) as server:
            port = server.address[1]
            async with sansquic_asyncio.connect("127.0.0.1", port, config=CONFIG) as conn:  # noqa: SIM117
                async with conn._driver.backend.task_group() as group:
                    session = await _wt_async.open_session(conn, group, "localhost", "/")
                    first, second = await session.open_stream(), await session.open_stream()
                    with pytest.raises(TimeoutError):  # two are open: the limit
                        await session.open_stream(timeout=0.3)
                    for stream in (first, second):
                        await stream.send(PAYLOAD)  # past the data limit: waits for credit
                        await stream.finish()
                        assert await stream.read_all(timeout=10) == PAYLOAD
                    for _ in range(4):  # credit came back as they ended
                        stream = await session.open_stream(timeout=5)
                        await stream.send(PAYLOAD)
                        await stream.finish()
                        assert await stream.read_all(timeout=10) == PAYLOAD
                    await conn.close()

    asyncio.run(asyncio.wait_for(main(), 30))


def test_asyncio_a_peer_past_the_limits_loses_its_session_with_a_typed_error() -> None:
    seen: queue.Queue[BaseException] = queue.Queue()

    async def on_session(session: _wt_async.WebTransportSession) -> None:
        try:
            while True:
                stream = await session.accept_stream()
                await stream.read_all(timeout=5)
        except sansquic.SansQuicError as exc:
            seen.put(exc)

    async def main() -> None:
        handler = _wt_async.webtransport_handler(on_session, session_limits=TIGHT)
        async with await _serve(handler) as server:
            port = server.address[1]
            async with sansquic_asyncio.connect("127.0.0.1", port, config=CONFIG) as conn:  # noqa: SIM117
                async with conn._driver.backend.task_group() as group:
                    session = await _wt_async.open_session(conn, group, "localhost", "/")
                    header = w.encode_varint(w.WT_BIDI_SIGNAL) + w.encode_varint(session.id)
                    for _ in range(3):  # past the server's limit of two, on QUIC itself
                        raw = await conn.open_stream()
                        await raw.send(header + b"x")
                    error = await asyncio.to_thread(seen.get, timeout=10)
                    assert isinstance(error, sansquic.RemoteProtocolError)
                    assert error.error_code == w.WT_FLOW_CONTROL_ERROR
                    with pytest.raises(sansquic.ConnectionClosed):  # the client hears it too
                        await session.accept_stream(timeout=5)
                    again = await _wt_async.open_session(conn, group, "localhost", "/")
                    assert again.id != session.id  # the connection lives on
                    await conn.close()

    asyncio.run(asyncio.wait_for(main(), 30))


def test_asyncio_goaway_drains_sessions_and_stops_new_ones() -> None:
    draining: queue.Queue[bool] = queue.Queue()

    async def on_session(session: _wt_async.WebTransportSession) -> None:
        with contextlib.suppress(sansquic.ConnectionClosed):
            await session.wait_draining()
            draining.put(session.draining)
            await _echo(session)

    async def main() -> None:
        handler = _wt_async.webtransport_handler(on_session)
        async with await _serve(handler) as server:
            port = server.address[1]
            async with sansquic_asyncio.connect("127.0.0.1", port, config=CONFIG) as conn:  # noqa: SIM117
                async with conn._driver.backend.task_group() as group:
                    session = await _wt_async.open_session(conn, group, "localhost", "/")
                    await session.drain()  # the client asks: the server's session drains
                    assert await asyncio.to_thread(draining.get, timeout=5) is True
                    second = await _wt_async.open_session(conn, group, "localhost", "/b")
                    assert not second.draining
                    await handler.goaway()  # the server shuts down gracefully
                    await second.wait_draining(timeout=5)
                    assert second.draining
                    with pytest.raises(sansquic.LocalProtocolError, match="GOAWAY"):
                        await _wt_async.open_session(conn, group, "localhost", "/c")
                    stream = await second.open_stream()  # still works until closed
                    await stream.send(b"after goaway")
                    await stream.finish()
                    assert await stream.read_all(timeout=5) == b"after goaway"
                    assert await handler.shutdown(timeout=0.3) is False  # two still open
                    await session.close()
                    await second.close()
                    assert await handler.shutdown(timeout=5) is True
                    await conn.close()

    asyncio.run(asyncio.wait_for(main(), 30))


def _echo_blocking(session: _wt_sync.WebTransportSession) -> None:
    with contextlib.suppress(sansquic.ConnectionClosed):
        while True:
            stream = session.accept_stream()
            stream.send(stream.read_all(timeout=5))
            stream.finish()


def test_threads_sends_wait_for_credit_and_goaway_drains() -> None:
    handler = _wt_sync.webtransport_handler(_echo_blocking, session_limits=TIGHT)  # type: ignore[arg-type]
    with sansquic_threads.serve(handler, "127.0.0.1", 0, config=CONFIG) as server:  # type: ignore[arg-type]
        port = server.address[1]
        with sansquic_threads.connect("127.0.0.1", port, config=CONFIG) as conn:  # noqa: SIM117
            with conn._driver.backend.task_group() as group:
                session = _wt_sync.open_session(conn, group, "localhost", "/")  # type: ignore[arg-type]
                for _ in range(3):
                    stream = session.open_stream(timeout=5)
                    stream.send(PAYLOAD)
                    stream.finish()
                    assert stream.read_all(timeout=10) == PAYLOAD
                handler.goaway()
                session.wait_draining(timeout=5)
                with pytest.raises(sansquic.LocalProtocolError, match="GOAWAY"):
                    _wt_sync.open_session(conn, group, "localhost", "/again")  # type: ignore[arg-type]
                conn.close()
