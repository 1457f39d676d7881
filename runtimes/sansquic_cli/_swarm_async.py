"""``sansquic swarm``, written once: a coordinator and N agents talking in messages.

Each agent connects with its own signed token and sends ``swarm.join`` with its
name; the coordinator accepts the join only when the name is the token's subject
(the identity handshake). Then each round the coordinator broadcasts
``swarm.task`` and gathers one ``swarm.result`` per agent; ``swarm.bye`` ends it.
With ``browser=True`` (``sansquic swarm --browser``) the coordinator also takes
WebTransport sessions and WebSocket connections, with the same token check and
envelopes, and serves a page (``_browser.py``) that joins as the agent ``browser``.
This file is the async original (asyncio, trio, anyio, curio through
``_frameworks.py``); ``_swarm_sync.py`` is generated from it by ``scripts/unasync.py``.
"""

from __future__ import annotations

import contextlib
import secrets
import time
from typing import Any

from sansquic_runtime import MessageServer, Messenger, Peer
from sansquic_runtime._wt_async import WebTransportSession, webtransport_handler

import sansquic
from sansquic import messaging, tokens

from . import _browser
from ._frameworks import AsyncRuntime

__all__ = ["run"]

HOST, SERVER_NAME = "127.0.0.1", "localhost"
#: The browser agent's name (its token's subject).
BROWSER = "browser"
#: Seconds a swarm with a browser agent waits for everything (a person opens the page).
BROWSER_TIMEOUT = 120.0
#: Seconds the coordinator waits, after ``swarm.bye``, for every agent to ack it.
_DRAIN = 3.0


def _answer(task: bytes) -> bytes:
    """The work an agent does for a task: the sum of 0..n-1 (checked by the coordinator)."""
    n = int(task.split(b":")[1])
    return b"%d" % sum(range(n))


def _subject(peer: Peer) -> str | None:
    """The subject of the token on the connection carrying ``peer`` now, or None."""
    conn = peer.connection
    identity = getattr(conn, "identity", None) if conn is not None else None
    return identity.subject if identity is not None else None


def _transport(conn: object) -> str:
    """How a connection reached the coordinator: quic, websocket or webtransport."""
    if isinstance(conn, WebTransportSession):
        return "webtransport"
    transport = getattr(conn, "transport", None)
    return str(getattr(transport, "value", "quic"))


class _Coordinator:
    """Joins (checked against the connection's identity) and results, per round."""

    def __init__(self) -> None:
        self.agents: dict[bytes, str] = {}  # session id -> agent name
        self.transports: dict[str, str] = {}  # agent name -> how it joined
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
        for session_id, known in list(self.agents.items()):
            if known == name:  # the same agent again (a reloaded page): count it once
                del self.agents[session_id]
        self.agents[peer.session_id] = name
        self.transports[name] = _transport(peer.connection)
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


async def run(
    rt: AsyncRuntime, agents: int, rounds: int, timeout: float = 30.0, browser: bool = False
) -> int:
    """The swarm on ``rt``; the exit status (0 when every round gathered every reply).
    ``browser``: one more agent, the page whose URL is printed."""
    config = sansquic.Config(dev_mode=True, trust_dev_certificate=True)
    server_config, pinned = config, None
    if browser:
        # One certificate for every server, one a browser can pin.
        pinned = _browser.pinned_certificate()
        server_config = sansquic.Config(
            certificate=pinned.certificate, private_key=pinned.private_key
        )
        # The Python agents verify the very certificate the browser pins.
        config = sansquic.Config(ca_certs=pinned.certificate)
        timeout = max(timeout, BROWSER_TIMEOUT)
    key = {"swarm": secrets.token_bytes(32)}
    signer = tokens.TokenSigner(key, key_id="swarm")
    verifier = tokens.TokenVerifier(key)
    authenticator = tokens.token_authenticator(verifier, token_time=lambda n: time.time())
    coordinator = _Coordinator()
    deadline = time.monotonic() + timeout
    ok = False
    async with rt.task_group() as readers:
        hub = MessageServer(readers, router=coordinator.router)
        async with contextlib.AsyncExitStack() as servers:
            server = await servers.enter_async_context(
                rt.serve(hub.handle, HOST, server_config, authenticator)
            )
            if pinned is not None:
                await _open_to_browsers(
                    rt, servers, hub, server_config, pinned, signer, authenticator
                )
            port = server.address[1]
            async with rt.task_group() as group:
                for i in range(agents):
                    token = signer.sign(f"agent-{i}", scopes=("swarm",), ttl=600, now=time.time())
                    await group.spawn(_agent, rt, port, config, token, f"agent-{i}", deadline)
                expected = agents + (1 if browser else 0)
                ok = await _coordinate(rt, hub, coordinator, expected, rounds, deadline)
                await hub.broadcast("swarm.bye")
                await _drain(rt, hub)
    joined = len(coordinator.agents)
    print(f"swarm {'OK' if ok else 'FAILED'}: {joined} agents, {rounds} rounds", flush=True)
    return 0 if ok else 1


async def _open_to_browsers(
    rt: AsyncRuntime,
    servers: contextlib.AsyncExitStack,
    hub: MessageServer,
    config: sansquic.Config,
    pinned: _browser.Pinned,
    signer: tokens.TokenSigner,
    authenticator: sansquic.Authenticator,
) -> None:
    """Serve ``hub`` over WebTransport and WebSocket too, with the same ``authenticator``
    (the browser presents its token as the ``token`` query parameter), and the page."""
    # WebTransport authenticates in the CONNECT request, so not at the QUIC level.
    on_session = webtransport_handler(hub.handle, authenticator=authenticator)
    h3 = config.replace(alpn=("h3",))
    wt = await servers.enter_async_context(rt.serve(on_session, HOST, h3, None))
    websocket = rt.serve_websocket(hub.handle, HOST, config, authenticator)
    ws = await servers.enter_async_context(websocket)
    token = signer.sign(BROWSER, scopes=("swarm",), ttl=600, now=time.time())
    body = _browser.page(
        name=BROWSER,
        token=token,
        webtransport_port=wt.address[1],
        websocket_port=ws.address[1],
        sha256=pinned.sha256,
    )
    url = servers.enter_context(
        _browser.site(body, lambda text: print(f"browser: {text}", flush=True))
    )
    print(f"browser agent: open {url}", flush=True)
    # A self-signed certificate: WebTransport pins its hash, WebSocket needs the browser told.
    flag = f"--ignore-certificate-errors-spki-list={pinned.spki}"
    print(f"  (its WebSocket path needs Chromium's {flag})", flush=True)


async def _drain(rt: AsyncRuntime, hub: MessageServer) -> None:
    """Wait (at most ``_DRAIN`` seconds) until every connected agent acked everything;
    say so if some did not (they may not have seen ``swarm.bye``)."""
    until = time.monotonic() + _DRAIN
    while True:
        pending = [
            peer
            for peer in hub.sessions.values()
            if peer.connection is not None and peer.channel.queue.unacked
        ]
        if not pending:
            return
        if time.monotonic() > until:
            print(f"{len(pending)} connected agents did not ack swarm.bye", flush=True)
            return
        await rt.sleep(0.01)


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
    if BROWSER in coordinator.transports:
        print(f"{BROWSER} joined over {coordinator.transports[BROWSER]}", flush=True)
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
