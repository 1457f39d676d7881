"""WebTransport on the runtime layer: asyncio and (generated) threads over loopback."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time

import pytest
import sansquic_asyncio
import sansquic_threads
from sansquic_runtime import _wt_async, _wt_sync

import sansquic
from sansquic import _h3wire as w

CONFIG = sansquic.Config(dev_mode=True, trust_dev_certificate=True, alpn=("h3",), idle_timeout=5.0)


def _auth(request: sansquic.AuthRequest, address: object, now: float) -> object:
    if request.credentials == b"secret":
        return sansquic.Identity(subject="bob")
    return sansquic.AuthRejection()


async def _echo(session: _wt_async.WebTransportSession) -> None:
    assert session.identity is not None and session.identity.subject == "bob"

    async def streams() -> None:
        while True:
            stream = await session.accept_stream()
            data = await stream.read_all(timeout=5)
            if stream.id & 2:
                stream = await session.open_stream(bidirectional=False)
            await stream.send(data)
            await stream.finish()

    async def datagrams() -> None:
        while True:
            await session.send_datagram(await session.receive_datagram())

    with contextlib.suppress(sansquic.ConnectionClosed):
        await asyncio.gather(streams(), datagrams())


def test_asyncio_session_echoes_and_refuses_bad_tokens() -> None:
    async def main() -> None:
        handler = _wt_async.webtransport_handler(_echo, authenticator=_auth)
        server = await sansquic_asyncio.serve(handler, "127.0.0.1", 0, config=CONFIG)
        async with server:
            port = server.address[1]
            async with sansquic_asyncio.connect("127.0.0.1", port, config=CONFIG) as conn:  # noqa: SIM117
                async with conn._driver.backend.task_group() as group:
                    with pytest.raises(PermissionError, match="403"):
                        await _wt_async.open_session(conn, group, "localhost", "/?token=no")
                    session = await _wt_async.open_session(
                        conn, group, "localhost", "/echo?token=secret"
                    )
                    bidi = await session.open_stream()
                    await bidi.send(b"ping" * 5000)
                    await bidi.finish()
                    assert await bidi.read_all(timeout=5) == b"ping" * 5000
                    uni = await session.open_stream(bidirectional=False)
                    await uni.send(b"uni")
                    await uni.finish()
                    back = await session.accept_stream(timeout=5)
                    assert await back.read_all(timeout=5) == b"uni"
                    await session.send_datagram(b"dg")
                    assert await session.receive_datagram(timeout=5) == b"dg"
                    await session.close(3, "done")
                    await conn.close()

    asyncio.run(asyncio.wait_for(main(), 20))


def test_threads_session_echoes() -> None:
    def echo(session: _wt_sync.WebTransportSession) -> None:
        def datagrams() -> None:
            try:
                while True:
                    session.send_datagram(session.receive_datagram())
            except sansquic.ConnectionClosed:
                pass

        threading.Thread(target=datagrams, daemon=True).start()
        try:
            while True:
                stream = session.accept_stream()
                data = stream.read_all(timeout=5)
                stream.send(data)
                stream.finish()
        except sansquic.ConnectionClosed:
            pass

    handler = _wt_sync.webtransport_handler(echo)
    with sansquic_threads.serve(handler, "127.0.0.1", 0, config=CONFIG) as server:  # noqa: SIM117
        with sansquic_threads.connect("127.0.0.1", server.address[1], config=CONFIG) as conn:
            with conn._driver.backend.task_group() as group:
                session = _wt_sync.open_session(conn, group, "localhost", "/")
                bidi = session.open_stream()
                bidi.send(b"threads")
                bidi.finish()
                assert bidi.read_all(timeout=5) == b"threads"
                session.send_datagram(b"x")
                assert session.receive_datagram(timeout=5) == b"x"
                session.close()
                conn.close()


def test_asyncio_stream_reset_carries_webtransport_codes() -> None:
    async def on_session(session: _wt_async.WebTransportSession) -> None:
        stream = await session.accept_stream()
        try:
            while await stream.receive(timeout=5):
                pass
        except sansquic.StreamResetError as exc:
            await session.send_datagram(str(exc.error_code).encode())

    async def main() -> None:
        handler = _wt_async.webtransport_handler(on_session)
        server = await sansquic_asyncio.serve(handler, "127.0.0.1", 0, config=CONFIG)
        async with server:
            port = server.address[1]
            async with sansquic_asyncio.connect("127.0.0.1", port, config=CONFIG) as conn:  # noqa: SIM117
                async with conn._driver.backend.task_group() as group:
                    session = await _wt_async.open_session(conn, group, "localhost", "/")
                    stream = await session.open_stream()
                    await stream.send(b"header first")
                    await asyncio.sleep(0.2)  # a reset discards what has not left yet
                    await stream.reset(42)
                    assert await session.receive_datagram(timeout=5) == b"42"
                    await session.close()
                    await conn.close()

    asyncio.run(asyncio.wait_for(main(), 20))


def test_asyncio_streams_the_peer_resets_leave_no_records() -> None:
    async def on_session(session: _wt_async.WebTransportSession) -> None:
        glue = session._glue
        for _ in range(5):
            stream = await session.accept_stream()
            with contextlib.suppress(sansquic.StreamResetError):
                while await stream.receive(timeout=5):
                    pass
            kept = stream.id in glue._streams or glue.h3.session_of(stream.id) is not None
            await session.send_datagram(b"kept" if kept else b"gone")

    async def main() -> None:
        handler = _wt_async.webtransport_handler(on_session)
        server = await sansquic_asyncio.serve(handler, "127.0.0.1", 0, config=CONFIG)
        async with server:
            port = server.address[1]
            async with sansquic_asyncio.connect("127.0.0.1", port, config=CONFIG) as conn:  # noqa: SIM117
                async with conn._driver.backend.task_group() as group:
                    session = await _wt_async.open_session(conn, group, "localhost", "/")
                    for _ in range(5):  # open, send, reset: a loop that must not grow
                        stream = await session.open_stream(bidirectional=False)
                        await stream.send(b"x")
                        await asyncio.sleep(0.05)  # let the bytes (and the stream) arrive
                        await stream.reset(1)
                        assert await session.receive_datagram(timeout=5) == b"gone"
                    await session.close()
                    await conn.close()

    asyncio.run(asyncio.wait_for(main(), 20))


def test_asyncio_unread_datagrams_are_bounded_oldest_dropped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_wt_async, "DATAGRAM_QUEUE", 4)

    async def on_session(session: _wt_async.WebTransportSession) -> None:
        stream = await session.accept_stream()  # the signal: all datagrams were sent
        await stream.read_all(timeout=5)
        kept = b",".join(session._datagrams)
        await stream.send(b"%d %s" % (session.datagrams_dropped, kept))
        await stream.finish()

    async def main() -> None:
        handler = _wt_async.webtransport_handler(on_session)
        server = await sansquic_asyncio.serve(handler, "127.0.0.1", 0, config=CONFIG)
        async with server:
            port = server.address[1]
            async with sansquic_asyncio.connect("127.0.0.1", port, config=CONFIG) as conn:  # noqa: SIM117
                async with conn._driver.backend.task_group() as group:
                    session = await _wt_async.open_session(conn, group, "localhost", "/")
                    for i in range(20):
                        await session.send_datagram(b"%d" % i)
                    await asyncio.sleep(0.3)
                    stream = await session.open_stream()
                    await stream.finish()
                    dropped, kept = (await stream.read_all(timeout=5)).split(b" ")
                    assert len(kept.split(b",")) == 4 and int(dropped) >= 10
                    assert kept.split(b",")[-1] == b"19"  # the newest are kept
                    await session.close()
                    await conn.close()

    asyncio.run(asyncio.wait_for(main(), 20))


def test_asyncio_a_stream_held_before_its_connect_arrives_in_order() -> None:
    got: list[bytes] = []

    async def on_session(session: _wt_async.WebTransportSession) -> None:
        stream = await session.accept_stream()
        while chunk := await stream.receive(timeout=5):
            got.append(chunk)
        await session.send_datagram(b"".join(got))

    async def main() -> None:
        handler = _wt_async.webtransport_handler(on_session)
        server = await sansquic_asyncio.serve(handler, "127.0.0.1", 0, config=CONFIG)
        async with server:
            port = server.address[1]
            async with sansquic_asyncio.connect("127.0.0.1", port, config=CONFIG) as conn:  # noqa: SIM117
                async with conn._driver.backend.task_group() as group:
                    glue = _wt_async._Glue(conn, client=True)
                    group.start_soon(glue.run, group)
                    raw = _wt_async._Transport(conn)
                    with conn._driver.backend.guard():
                        # The CONNECT waits for the server's SETTINGS; this stream does
                        # not, so the server holds it until the session opens.
                        sid = glue.h3.connect("localhost", "/")
                        early = raw.open_stream()
                        header = w.encode_varint(w.WT_BIDI_SIGNAL) + w.encode_varint(sid)
                        raw.send(early, header + b"a")
                    group.start_soon(glue._pump, _wt_async.Stream(conn, sid))
                    key = glue.key("ready", sid)
                    driver = conn._driver
                    session = await driver.until(
                        lambda: glue.sessions.get(sid), key, driver.deadline(5)
                    )
                    for chunk in (b"b", b"c", b"d", b"e"):
                        await asyncio.sleep(0.05)
                        with conn._driver.backend.guard():
                            raw.send(early, chunk, end=chunk == b"e")
                    assert await session.receive_datagram(timeout=5) == b"abcde"
                    await session.close()
                    await conn.close()

    asyncio.run(asyncio.wait_for(main(), 20))


def test_threads_a_stream_held_before_its_connect_arrives_in_order() -> None:
    got: list[bytes] = []

    def on_session(session: _wt_sync.WebTransportSession) -> None:
        stream = session.accept_stream()
        while chunk := stream.receive(timeout=5):
            got.append(chunk)
        session.send_datagram(b"".join(got))

    handler = _wt_sync.webtransport_handler(on_session)
    with sansquic_threads.serve(handler, "127.0.0.1", 0, config=CONFIG) as server:  # noqa: SIM117
        with sansquic_threads.connect("127.0.0.1", server.address[1], config=CONFIG) as conn:
            with conn._driver.backend.task_group() as group:
                glue = _wt_sync._Glue(conn, client=True)
                group.start_soon(glue.run, group)
                raw = _wt_sync._Transport(conn)
                with conn._driver.backend.guard():
                    sid = glue.h3.connect("localhost", "/")  # waits for SETTINGS
                    early = raw.open_stream()
                    header = w.encode_varint(w.WT_BIDI_SIGNAL) + w.encode_varint(sid)
                    raw.send(early, header + b"a")
                group.start_soon(glue._pump, _wt_sync.Stream(conn, sid))
                driver = conn._driver
                session = driver.until(
                    lambda: glue.sessions.get(sid), glue.key("ready", sid), driver.deadline(5)
                )
                for chunk in (b"b", b"c", b"d", b"e"):
                    time.sleep(0.05)
                    with conn._driver.backend.guard():
                        raw.send(early, chunk, end=chunk == b"e")
                assert session.receive_datagram(timeout=5) == b"abcde"
                session.close()
                conn.close()
