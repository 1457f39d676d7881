"""The async original of the messaging drive code, on asyncio: reconnect with backoff
through failing dials, a session moving from QUIC to the WebSocket fallback, and a
junk-sending peer closed with MESSAGING_VIOLATION (over QUIC and over WebSocket).
(Every runtime pair runs its blocking twin in the conformance case.)"""

from __future__ import annotations

import asyncio
import random
import socket
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
import sansquic_asyncio
from sansquic_runtime import MessageServer, Messenger, Peer

import sansquic
from sansquic import messaging
from sansquic.websocket import Transport

CONFIG = sansquic.Config(dev_mode=True, trust_dev_certificate=True)


class Tasks:
    """``spawn`` over asyncio tasks."""

    def __init__(self) -> None:
        self.tasks: set[asyncio.Task[Any]] = set()

    async def spawn(self, fn: Callable[..., Coroutine[Any, Any, Any]], *args: Any) -> None:
        self.tasks.add(asyncio.ensure_future(fn(*args)))

    async def wait(self, timeout: float) -> None:
        await asyncio.wait_for(asyncio.gather(*self.tasks, return_exceptions=True), timeout)


async def _until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


def test_messenger_reconnects_through_failed_dials_and_loses_nothing() -> None:
    async def scenario() -> None:
        got: list[messaging.Envelope] = []
        replies: list[messaging.Envelope] = []

        async def on_job(peer: Peer, envelope: messaging.Envelope) -> None:
            got.append(envelope)
            await peer.send("done", envelope.payload)

        async def on_done(peer: Peer, envelope: messaging.Envelope) -> None:
            replies.append(envelope)

        server_tasks, client_tasks = Tasks(), Tasks()
        router: messaging.Router[Any] = messaging.Router()
        router.add("job.", on_job)
        message_server = MessageServer(server_tasks, router=router)
        server = await sansquic_asyncio.serve(message_server.handle, "127.0.0.1", 0, config=CONFIG)
        failures = [OSError("refused"), OSError("refused")]
        conns: list[Any] = []

        async def dial() -> Any:
            if failures:
                raise failures.pop()
            conn = await sansquic_asyncio.connect(
                "127.0.0.1", server.address[1], config=CONFIG, server_name="localhost"
            )
            conns.append(conn)
            return conn

        client_router: messaging.Router[Any] = messaging.Router(fallback=on_done)
        messenger = Messenger(
            dial, client_tasks, router=client_router, key=server.address, rng=random.Random(1)
        )
        with pytest.raises(OSError):
            await messenger.connect()  # one attempt, it fails
        await messenger.connect(asyncio.sleep, attempts=3)
        assert messenger.pool.stats(server.address).failures == 2
        for i in range(5):
            await messenger.send("job.a", b"%d" % i)
        await messenger.disconnect(0, "forced")
        for i in range(5, 10):
            await messenger.send("job.a", b"%d" % i)
        await messenger.connect()
        await _until(lambda: len(replies) == 10)
        await asyncio.sleep(0.1)
        assert [e.payload for e in got] == [b"%d" % i for i in range(10)]
        assert [e.payload for e in replies] == [b"%d" % i for i in range(10)]
        await messenger.disconnect()
        for conn in conns:
            await conn.close()
        await server.close()
        await client_tasks.wait(5)
        await server_tasks.wait(5)

    asyncio.run(scenario())


def test_a_peer_that_sends_junk_is_closed_with_messaging_violation() -> None:
    async def scenario() -> None:
        server_tasks = Tasks()
        message_server = MessageServer(server_tasks)
        server = await sansquic_asyncio.serve(message_server.handle, "127.0.0.1", 0, config=CONFIG)
        async with await sansquic_asyncio.connect(
            "127.0.0.1", server.address[1], config=CONFIG, server_name="localhost"
        ) as conn:
            stream = await conn.open_stream()
            await stream.send(messaging.encode_frame(b"\x07 not an envelope at all"))

            async def drain() -> None:
                while await stream.receive():
                    pass

            with pytest.raises(sansquic.ConnectionClosed) as info:
                await asyncio.wait_for(drain(), 10)
            assert info.value.error_code == messaging.MESSAGING_VIOLATION
        assert message_server.sessions == {}
        await server.close()

    asyncio.run(scenario())


def test_an_open_breaker_refuses_to_dial_until_its_cooldown() -> None:
    async def scenario() -> None:
        dials: list[int] = []

        async def dial() -> Any:
            dials.append(1)
            raise OSError("refused")

        messenger = Messenger(dial, Tasks(), key=("127.0.0.1", 9))
        messenger.pool = messaging.Pool(threshold=1, cooldown=60.0)
        with pytest.raises(OSError):
            await messenger.connect()
        with pytest.raises(ConnectionError, match="circuit open"):
            await messenger.connect()
        assert len(dials) == 1  # the second attempt never dialled
        assert messenger.pool.stats(("127.0.0.1", 9)).refusals == 1

    asyncio.run(scenario())


def test_a_client_with_other_lanes_is_closed_with_messaging_violation() -> None:
    async def scenario() -> None:
        message_server = MessageServer(Tasks())
        server = await sansquic_asyncio.serve(message_server.handle, "127.0.0.1", 0, config=CONFIG)
        lanes = messaging.LaneTable(
            lanes=(
                messaging.Lane(name="control", priority=255),
                messaging.Lane(name="video", priority=64),
            )
        )
        async with await sansquic_asyncio.connect(
            "127.0.0.1", server.address[1], config=CONFIG, server_name="localhost"
        ) as conn:

            async def dial() -> Any:
                return conn

            messenger = Messenger(dial, Tasks(), lanes=lanes)
            await messenger.connect()
            await _until(lambda: not messenger.connected)  # the server closed it
        assert message_server.sessions == {}
        await server.close()

    asyncio.run(scenario())


def test_a_session_moves_from_quic_to_websocket_when_udp_is_blocked() -> None:
    """``connect_any`` as the dial: QUIC first; with UDP black-holed the reconnect falls
    back to WebSocket, and the one ``MessageServer`` behind both continues the session."""

    async def scenario() -> None:
        got: list[bytes] = []

        async def on_job(peer: Peer, envelope: messaging.Envelope) -> None:
            got.append(envelope.payload)

        server_tasks, client_tasks = Tasks(), Tasks()
        message_server = MessageServer(server_tasks, router=messaging.Router(fallback=on_job))
        quic = await sansquic_asyncio.serve(message_server.handle, "127.0.0.1", 0, config=CONFIG)
        ws = await sansquic_asyncio.serve_websocket(
            message_server.handle, "127.0.0.1", 0, config=CONFIG
        )
        hole = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        hole.bind(("127.0.0.1", 0))  # bound, never read: every datagram vanishes
        udp = [quic.address, hole.getsockname()]
        conns: list[Any] = []

        async def dial() -> Any:
            host, port = udp[min(len(conns), 1)]
            conn = await sansquic_asyncio.connect_any(
                host,
                port,
                websocket_port=ws.address[1],
                config=CONFIG,
                server_name="localhost",
                delay=3.0 if not conns else 0.3,  # QUIC must win while UDP works
                timeout=20,
            )
            conns.append(conn)
            return conn

        messenger = Messenger(dial, client_tasks, key=quic.address)
        await messenger.connect()
        for i in range(5):
            await messenger.send("job", b"%d" % i)
        await _until(lambda: len(got) == 5)
        await messenger.disconnect(0, "forced")
        for i in range(5, 10):
            await messenger.send("job", b"%d" % i)
        await messenger.connect()
        await _until(lambda: len(got) == 10)
        await asyncio.sleep(0.1)  # a duplicate would arrive now
        assert got == [b"%d" % i for i in range(10)]
        assert [conn.transport for conn in conns] == [Transport.QUIC, Transport.WEBSOCKET]
        (session,) = message_server.sessions.values()
        assert session.connection.transport is Transport.WEBSOCKET
        assert session.channel.generation == 2
        await messenger.disconnect()
        for conn in conns:
            await conn.close()
        hole.close()
        await ws.close()
        await quic.close()
        await client_tasks.wait(5)
        await server_tasks.wait(5)

    asyncio.run(scenario())


def test_junk_over_websocket_is_closed_with_messaging_violation() -> None:
    async def scenario() -> None:
        message_server = MessageServer(Tasks())
        server = await sansquic_asyncio.serve_websocket(
            message_server.handle, "127.0.0.1", 0, config=CONFIG
        )
        conn = await sansquic_asyncio.connect_websocket(
            "127.0.0.1", server.address[1], config=CONFIG, server_name="localhost"
        )
        stream = await conn.open_stream()
        await stream.send(messaging.encode_frame(b"\x07 not an envelope at all"))

        async def drain() -> None:
            while await stream.receive():
                pass

        with pytest.raises(sansquic.ConnectionClosed) as info:
            await asyncio.wait_for(drain(), 10)
        assert info.value.error_code == messaging.MESSAGING_VIOLATION
        assert message_server.sessions == {}
        await conn.close()
        await server.close()

    asyncio.run(scenario())


def test_a_messenger_over_webtransport_sessions_loses_nothing() -> None:
    """The messaging layer over WebTransport (what a browser agent speaks), from Python:
    each dial opens a session, and the session's identity binds the server's session."""
    from sansquic_runtime import open_session, webtransport_handler

    h3 = CONFIG.replace(alpn=("h3",))

    def auth(request: sansquic.AuthRequest, address: object, now: float) -> object:
        if request.credentials == b"secret":
            return sansquic.Identity(subject="agent")
        return sansquic.AuthRejection()

    async def scenario() -> None:
        got: list[bytes] = []

        async def on_job(peer: Peer, envelope: messaging.Envelope) -> None:
            got.append(envelope.payload)
            await peer.send("done", envelope.payload)

        replies: list[bytes] = []

        async def on_done(peer: Peer, envelope: messaging.Envelope) -> None:
            replies.append(envelope.payload)

        server_tasks, client_tasks = Tasks(), Tasks()
        message_server = MessageServer(server_tasks, router=messaging.Router(fallback=on_job))
        handler = webtransport_handler(message_server.handle, authenticator=auth)
        server = await sansquic_asyncio.serve(handler, "127.0.0.1", 0, config=h3)
        async with (
            sansquic_asyncio.connect("127.0.0.1", server.address[1], config=h3) as conn,
            conn._driver.backend.task_group() as group,
        ):
            sessions: list[Any] = []

            async def dial() -> Any:
                session = await open_session(conn, group, "localhost", "/m?token=secret")
                sessions.append(session)
                return session

            router = messaging.Router(fallback=on_done)
            messenger = Messenger(dial, client_tasks, router=router)
            await messenger.connect()
            for i in range(5):
                await messenger.send("job", b"%d" % i)
            await _until(lambda: len(replies) == 5)
            await messenger.disconnect(0, "forced")  # the session closes, not QUIC
            for i in range(5, 10):
                await messenger.send("job", b"%d" % i)
            await messenger.connect()
            await _until(lambda: len(replies) == 10)
            await asyncio.sleep(0.1)  # a duplicate would arrive now
            assert got == replies == [b"%d" % i for i in range(10)]
            (side,) = message_server.sessions.values()
            assert side.subject == "agent" and side.channel.generation == 2
            assert len(sessions) == 2
            await messenger.disconnect()
            await conn.close()
        await server.close()

    asyncio.run(scenario())


def test_junk_over_a_webtransport_session_closes_it_with_messaging_violation() -> None:
    from sansquic_runtime import open_session, webtransport_handler

    h3 = CONFIG.replace(alpn=("h3",))

    async def scenario() -> None:
        message_server = MessageServer(Tasks())
        handler = webtransport_handler(message_server.handle)
        server = await sansquic_asyncio.serve(handler, "127.0.0.1", 0, config=h3)
        async with (
            sansquic_asyncio.connect("127.0.0.1", server.address[1], config=h3) as conn,
            conn._driver.backend.task_group() as group,
        ):
            session = await open_session(conn, group, "localhost", "/m")
            stream = await session.open_stream()
            await stream.send(messaging.encode_frame(b"\x07 not an envelope at all"))
            with pytest.raises(sansquic.ConnectionClosed) as info:
                await session.accept_stream(timeout=10)  # raises once it is closed
            assert info.value.error_code == messaging.MESSAGING_VIOLATION
            assert message_server.sessions == {}
            await conn.close()
        await server.close()

    asyncio.run(scenario())
