"""Hostile peers against ``MessageServer`` (the async original, on asyncio, over in-memory
connections): session takeover, generation lock-out, handler crashes, unbounded memory,
slow openings, long session ids. Each is closed cleanly and hurts no other session."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import attrs
from sansquic_runtime import MessageServer, Peer
from sansquic_runtime._messaging_async import MAX_OPENING_FRAME, MAX_UNROUTED, OPEN_TIMEOUT

import sansquic
from sansquic import messaging as m


class Stream:
    """One in-memory lane stream: what the peer wrote is ``sent``; ``feed`` is its input."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.inbox: asyncio.Queue[bytes] = asyncio.Queue()
        self.sent: list[bytes] = []
        for chunk in chunks:
            self.inbox.put_nowait(chunk)

    async def send(self, data: bytes) -> None:
        self.sent.append(data)

    async def receive(self, max_bytes: int = -1, *, timeout: float | None = None) -> bytes:
        return await asyncio.wait_for(self.inbox.get(), timeout)


@attrs.frozen
class Ident:
    subject: str


class Conn:
    """An accepted connection carrying ``streams``, with an optional identity."""

    def __init__(self, streams: list[Stream], subject: str | None = None) -> None:
        self.streams = list(streams)
        self.identity = None if subject is None else Ident(subject)
        self.closed: tuple[int, str] | None = None

    async def open_stream(self, **kwargs: Any) -> Any:
        raise NotImplementedError

    async def accept_stream(self, *, timeout: float | None = None) -> Stream:
        if not self.streams:
            await asyncio.sleep(3600)
        return self.streams.pop(0)

    async def close(self, code: int = 0, reason: str = "") -> None:
        self.closed = (code, reason)


class Tasks:
    def __init__(self) -> None:
        self.tasks: set[asyncio.Task[Any]] = set()

    async def spawn(self, fn: Callable[..., Coroutine[Any, Any, Any]], *args: Any) -> None:
        self.tasks.add(asyncio.ensure_future(fn(*args)))

    def cancel(self) -> None:
        for task in self.tasks:
            task.cancel()


def opening(client: m.MessageChannel) -> tuple[Stream, Stream]:
    """The two lane streams a client's first ``data_to_send`` opens (control, bulk)."""
    out = {lane.name: data for lane, data in client.data_to_send()}
    return Stream([out["control"]]), Stream([out["bulk"]])


async def connect(
    server: MessageServer, tasks: Tasks, client: m.MessageChannel, subject: str | None = None
) -> Conn:
    """Attach ``client`` over a new in-memory connection; returns it once handled."""
    client.attach()
    conn = Conn(list(opening(client)), subject)
    await tasks.spawn(server.handle, conn)
    for _ in range(100):
        await asyncio.sleep(0)
    return conn


def run(scenario: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(asyncio.wait_for(scenario(), 10))


def test_another_identity_cannot_take_a_session_over() -> None:
    async def scenario() -> None:
        tasks = Tasks()
        server = MessageServer(tasks)
        victim = await connect(server, tasks, m.MessageChannel(b"victim"), "alice")
        for i in range(3):
            await server.send(b"victim", "secret", b"%d" % i)
        attacker_channel = m.MessageChannel(b"victim")
        attacker_channel.generation = 5
        attacker = await connect(server, tasks, attacker_channel, "mallory")
        assert attacker.closed is not None and attacker.closed[0] == m.MESSAGING_VIOLATION
        assert victim.closed is None  # not superseded
        assert server.sessions[b"victim"].connection is victim
        tasks.cancel()

    run(scenario)


def test_a_generation_jump_is_refused_and_the_real_client_continues() -> None:
    async def scenario() -> None:
        tasks = Tasks()
        server = MessageServer(tasks)
        real = m.MessageChannel(b"s")
        first = await connect(server, tasks, real)
        attacker_channel = m.MessageChannel(b"s")
        attacker_channel.generation = 0xFFFFFFFE - 1
        attacker = await connect(server, tasks, attacker_channel)
        assert attacker.closed is not None and attacker.closed[0] == m.MESSAGING_VIOLATION
        assert first.closed is None
        again = await connect(server, tasks, real)  # the real client's next generation
        assert again.closed is None
        assert server.sessions[b"s"].channel.generation == real.generation == 2
        tasks.cancel()

    run(scenario)


def test_a_failing_handler_closes_only_its_connection() -> None:
    async def scenario() -> None:
        tasks = Tasks()
        router: m.Router[Any] = m.Router()
        seen: list[bytes] = []

        async def handler(peer: Peer, envelope: m.Envelope) -> None:
            if envelope.payload == b"boom":
                raise ValueError("a handler bug the peer's payload triggers")
            seen.append(envelope.payload)

        router.add("x", handler)
        server = MessageServer(tasks, router=router)
        bad = m.MessageChannel(b"bad")
        bad.send("x", b"boom", 0.0)
        good = m.MessageChannel(b"good")
        good.send("x", b"fine", 0.0)
        bad_conn = await connect(server, tasks, bad)
        good_conn = await connect(server, tasks, good)
        assert bad_conn.closed is not None
        assert bad_conn.closed[0] == sansquic.CloseCode.INTERNAL_ERROR
        assert good_conn.closed is None and seen == [b"fine"]
        assert all(not t.done() or t.exception() is None for t in tasks.tasks)
        tasks.cancel()

    run(scenario)


def test_the_swarm_coordinator_drops_junk_results() -> None:
    from sansquic_cli._swarm_async import _Coordinator

    class FakePeer:
        session_id = b"s"
        connection = Conn([], "agent-0")

    async def scenario() -> None:
        coordinator = _Coordinator()
        coordinator.agents[b"s"] = "agent-0"
        coordinator.round = 1
        peer: Any = FakePeer()
        for junk in (b"", b"nospace", b"x 1", b"-1 2", b"99999999999 1", b"7 1"):
            await coordinator.result(
                peer, m.Envelope(id=1, type="swarm.result", timestamp=0.0, payload=junk)
            )
        assert coordinator.results == {}
        await coordinator.result(
            peer, m.Envelope(id=2, type="swarm.result", timestamp=0.0, payload=b"1 42")
        )
        assert coordinator.results == {1: {"agent-0": b"42"}}
        FakePeer.connection = Conn([], "mallory")  # the session now on another identity
        coordinator.results.clear()
        await coordinator.result(
            peer, m.Envelope(id=3, type="swarm.result", timestamp=0.0, payload=b"1 42")
        )
        assert coordinator.results == {}

    run(scenario)


def test_unrouted_messages_are_bounded_and_counted() -> None:
    async def scenario() -> None:
        tasks = Tasks()
        server = MessageServer(tasks)  # no handlers: everything is unrouted
        client = m.MessageChannel(b"junk", max_unacked=1024)
        client.attach()
        control, bulk = opening(client)
        total = MAX_UNROUTED + 50
        for i in range(total):
            client.send("anything", b"%d" % i, 0.0)
            for lane, data in client.data_to_send():
                (control if lane.name == "control" else bulk).inbox.put_nowait(data)
            client.queue.ack(i + 1)  # as if the server's acks came back
        await tasks.spawn(server.handle, Conn([control, bulk]))
        for _ in range(50):
            await asyncio.sleep(0)
        side = server.sessions[b"junk"]
        assert len(server.unrouted(b"junk")) == MAX_UNROUTED
        assert side.unrouted_dropped == 50
        assert side.unrouted[-1].payload == b"%d" % (total - 1)
        tasks.cancel()

    run(scenario)


def test_the_opening_has_one_deadline_and_a_size_cap() -> None:
    async def scenario() -> None:
        clock = [0.0]
        server = MessageServer(Tasks(), now=lambda: clock[0])
        trickle = Stream([b"\x00"])  # a length prefix's first byte, then silence
        conn = Conn([trickle])
        task = asyncio.ensure_future(server.handle(conn))
        await asyncio.sleep(0.01)
        clock[0] = OPEN_TIMEOUT  # the runtime clock passes the deadline
        trickle.inbox.put_nowait(b"\x00")  # one more byte: still no frame
        await asyncio.wait_for(task, 2)
        assert conn.closed is not None and conn.closed[0] == m.MESSAGING_VIOLATION
        big = m.encode_frame(b"\x01" + b"\x00" * (MAX_OPENING_FRAME + 100))
        conn = Conn([Stream([big[:8]])])
        await asyncio.wait_for(server.handle(conn), 2)
        assert conn.closed is not None and conn.closed[0] == m.MESSAGING_VIOLATION

    run(scenario)


def test_idle_detached_sessions_are_evicted_to_make_room() -> None:
    async def scenario() -> None:
        clock = [0.0]
        tasks = Tasks()
        server = MessageServer(
            tasks, max_sessions=2, session_idle_timeout=60.0, now=lambda: clock[0]
        )
        for sid in (b"a", b"b"):
            conn = await connect(server, tasks, m.MessageChannel(sid))
            conn.streams.clear()
        for side in server.sessions.values():
            assert side.link is not None
            await side.link.lost()  # both strangers went away
        refused = await connect(server, tasks, m.MessageChannel(b"c"))
        assert refused.closed is not None  # full, and nobody idle long enough yet
        clock[0] = 61.0
        admitted = await connect(server, tasks, m.MessageChannel(b"c"))
        assert admitted.closed is None and set(server.sessions) == {b"c"}
        tasks.cancel()

    run(scenario)


def test_broadcast_continues_past_a_full_queue() -> None:
    async def scenario() -> None:
        tasks = Tasks()
        server = MessageServer(tasks)
        for sid in (b"a", b"b", b"c"):
            await connect(server, tasks, m.MessageChannel(sid))
        server.sessions[b"a"].channel.queue.max_unacked = 0  # "a" is full
        failed = await server.broadcast("news", b"hi")
        assert list(failed) == [b"a"] and isinstance(failed[b"a"], m.QueueFull)
        for sid in (b"b", b"c"):
            assert server.sessions[sid].channel.queue._last_id == 1
        tasks.cancel()

    run(scenario)


def test_a_hello_with_a_long_session_id_closes_the_connection() -> None:
    async def scenario() -> None:
        server = MessageServer(Tasks())
        hello = m.Hello(session_id=b"x" * 100, generation=1, received=0)
        envelope = m.Envelope(id=0, type="sq.hello", timestamp=0.0, payload=hello.encode())
        conn = Conn([Stream([m.encode_frame(m.encode_envelope(envelope))])])
        await asyncio.wait_for(server.handle(conn), 2)
        assert conn.closed is not None and conn.closed[0] == m.MESSAGING_VIOLATION
        assert server.sessions == {}

    run(scenario)
