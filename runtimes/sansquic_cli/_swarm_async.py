"""``sansquic swarm``, written once: a coordinator and N agents talking in messages.

Each agent connects with its own signed token and sends ``swarm.join`` with its
name; the coordinator accepts the join only when the name is the token's subject
(the identity handshake). Then each round the coordinator broadcasts
``swarm.task`` and gathers one ``swarm.result`` per agent; ``swarm.bye`` ends it.
This file is the async original (asyncio, trio, anyio, curio through
``_frameworks.py``); ``_swarm_sync.py`` is generated from it by ``scripts/unasync.py``.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

from sansquic_runtime import MessageServer, Messenger, Peer

import sansquic
from sansquic import messaging, tokens

from ._frameworks import AsyncRuntime

__all__ = ["run"]

HOST, SERVER_NAME = "127.0.0.1", "localhost"


def _answer(task: bytes) -> bytes:
    """The work an agent does for a task: the sum of 0..n-1 (checked by the coordinator)."""
    n = int(task.split(b":")[1])
    return b"%d" % sum(range(n))


def _subject(peer: Peer) -> str | None:
    """The subject of the token on the connection carrying ``peer`` now, or None."""
    conn = peer.connection
    identity = getattr(conn, "identity", None) if conn is not None else None
    return identity.subject if identity is not None else None


class _Coordinator:
    """Joins (checked against the connection's identity) and results, per round."""

    def __init__(self) -> None:
        self.agents: dict[bytes, str] = {}  # session id -> agent name
        self.refused: list[str] = []
        self.results: dict[int, dict[str, bytes]] = {}
        self.round = 0  # the round being gathered; results for others are dropped
        self.router: messaging.Router[Any] = messaging.Router()
        self.router.add("swarm.join", self.join)
        self.router.add("swarm.result", self.result)

    async def join(self, peer: Peer, envelope: messaging.Envelope) -> None:
        name = envelope.payload.decode(errors="replace")
        if _subject(peer) != name:
            self.refused.append(name)
            await peer.send("swarm.refused", b"the name is not the token's subject")
            return
        self.agents[peer.session_id] = name
        await peer.send("swarm.welcome", envelope.payload)

    async def result(self, peer: Peer, envelope: messaging.Envelope) -> None:
        name = self.agents.get(peer.session_id)
        if name is None or _subject(peer) != name:
            return  # not joined, or not from the identity that joined: not credited
        round_no, space, answer = envelope.payload.partition(b" ")
        # The agent's bytes: anything but "<round> <answer>" for a known round is dropped.
        if not space or not (0 < len(round_no) <= 9 and round_no.isdigit()):
            return
        if int(round_no) != self.round:
            return  # a stale or made-up round: nothing to credit, nothing to keep
        self.results.setdefault(int(round_no), {})[name] = answer


async def run(rt: AsyncRuntime, agents: int, rounds: int, timeout: float = 30.0) -> int:
    """The swarm on ``rt``; the exit status (0 when every round gathered every reply)."""
    config = sansquic.Config(dev_mode=True, trust_dev_certificate=True)
    key = {"swarm": secrets.token_bytes(32)}
    signer = tokens.TokenSigner(key, key_id="swarm")
    verifier = tokens.TokenVerifier(key)
    authenticator = tokens.token_authenticator(verifier, token_time=lambda n: time.time())
    coordinator = _Coordinator()
    deadline = time.monotonic() + timeout
    ok = False
    async with rt.task_group() as readers:
        hub = MessageServer(readers, router=coordinator.router)
        async with rt.serve(hub.handle, HOST, config, authenticator) as server:
            port = server.address[1]
            async with rt.task_group() as group:
                for i in range(agents):
                    token = signer.sign(f"agent-{i}", scopes=("swarm",), ttl=600, now=time.time())
                    await group.spawn(_agent, rt, port, config, token, f"agent-{i}", deadline)
                ok = await _coordinate(rt, hub, coordinator, agents, rounds, deadline)
                await hub.broadcast("swarm.bye")
    print(f"swarm {'OK' if ok else 'FAILED'}: {len(coordinator.agents)} agents, {rounds} rounds")
    return 0 if ok else 1


async def _coordinate(
    rt: AsyncRuntime,
    hub: MessageServer,
    coordinator: _Coordinator,
    agents: int,
    rounds: int,
    deadline: float,
) -> bool:
    while len(coordinator.agents) < agents:
        if time.monotonic() > deadline:
            print(f"only {len(coordinator.agents)} of {agents} agents joined")
            return False
        await rt.sleep(0.01)
    print(f"{agents} agents joined: {', '.join(sorted(coordinator.agents.values()))}")
    for round_no in range(1, rounds + 1):
        task = b"%d:%d" % (round_no, 1000 * round_no)
        start = time.monotonic()
        coordinator.round = round_no
        await hub.broadcast("swarm.task", task)
        while len(coordinator.results.get(round_no, {})) < agents:
            if time.monotonic() > deadline:
                print(f"round {round_no}: no reply from every agent")
                return False
            await rt.sleep(0.005)
        answers = set(coordinator.results[round_no].values())
        if answers != {_answer(task)}:
            print(f"round {round_no}: wrong answers {sorted(answers)}")
            return False
        elapsed = (time.monotonic() - start) * 1000
        print(f"round {round_no}: {agents}/{agents} replies in {elapsed:.1f} ms")
    return not coordinator.refused


async def _agent(
    rt: AsyncRuntime, port: int, config: sansquic.Config, token: str, name: str, deadline: float
) -> None:
    """Connect with the token, join, answer every task until ``swarm.bye``."""
    done: list[bool] = []

    async def on_task(peer: Peer, envelope: messaging.Envelope) -> None:
        round_no = envelope.payload.split(b":")[0]
        await peer.send("swarm.result", round_no + b" " + _answer(envelope.payload))

    async def on_bye(peer: Peer, envelope: messaging.Envelope) -> None:
        done.append(True)

    async def ignore(peer: Peer, envelope: messaging.Envelope) -> None:
        pass

    router: messaging.Router[Any] = messaging.Router(fallback=ignore)
    router.add("swarm.task", on_task)
    router.add("swarm.bye", on_bye)
    async with rt.connect(HOST, port, config=config, server_name=SERVER_NAME, token=token) as conn:

        async def dial() -> Any:
            return conn

        async with rt.task_group() as readers:
            messenger = Messenger(dial, readers, router=router)
            await messenger.connect()
            await messenger.send("swarm.join", name.encode())
            while not done and time.monotonic() < deadline:
                await rt.sleep(0.01)
            await messenger.disconnect(0, "swarm over")
