"""GENERATED from ``_swarm_async.py`` by ``scripts/unasync.py``: edit that file instead.

The blocking twin of ``sansquic swarm``, for the threads runtime.
"""

from __future__ import annotations

import contextlib
import secrets
import time
from typing import Any

from sansquic_runtime._messaging_sync import MessageServer, Messenger, Peer
from sansquic_runtime._wt_sync import WebTransportSession, webtransport_handler

import sansquic
from sansquic import messaging, tokens

from . import _browser
from ._frameworks import SyncRuntime

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

    def join(self, peer: Peer, envelope: messaging.Envelope) -> None:
        name = envelope.payload.decode(errors="replace")
        if _subject(peer) != name:
            self.refused.append(name)
            peer.send("swarm.refused", b"the name is not the token's subject")
            return
        for session_id, known in list(self.agents.items()):
            if known == name:  # the same agent again (a reloaded page): count it once
                del self.agents[session_id]
        self.agents[peer.session_id] = name
        self.transports[name] = _transport(peer.connection)
        peer.send("swarm.welcome", envelope.payload)

    def result(self, peer: Peer, envelope: messaging.Envelope) -> None:
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


def run(
    rt: SyncRuntime, agents: int, rounds: int, timeout: float = 30.0, browser: bool = False
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
    with rt.task_group() as readers:
        hub = MessageServer(readers, router=coordinator.router)
        with contextlib.ExitStack() as servers:
            server = servers.enter_context(
                rt.serve(hub.handle, HOST, server_config, authenticator)
            )
            if pinned is not None:
                _open_to_browsers(
                    rt, servers, hub, server_config, pinned, signer, authenticator
                )
            port = server.address[1]
            with rt.task_group() as group:
                for i in range(agents):
                    token = signer.sign(f"agent-{i}", scopes=("swarm",), ttl=600, now=time.time())
                    group.spawn(_agent, rt, port, config, token, f"agent-{i}", deadline)
                expected = agents + (1 if browser else 0)
                ok = _coordinate(rt, hub, coordinator, expected, rounds, deadline)
                hub.broadcast("swarm.bye")
                _drain(rt, hub)
    joined = len(coordinator.agents)
    print(f"swarm {'OK' if ok else 'FAILED'}: {joined} agents, {rounds} rounds", flush=True)
    return 0 if ok else 1


def _open_to_browsers(
    rt: SyncRuntime,
    servers: contextlib.ExitStack,
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
    wt = servers.enter_context(rt.serve(on_session, HOST, h3, None))
    websocket = rt.serve_websocket(hub.handle, HOST, config, authenticator)
    ws = servers.enter_context(websocket)
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


def _drain(rt: SyncRuntime, hub: MessageServer) -> None:
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
        rt.sleep(0.01)


def _coordinate(
    rt: SyncRuntime,
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
        rt.sleep(0.01)
    print(f"{agents} agents joined: {', '.join(sorted(coordinator.agents.values()))}")
    if BROWSER in coordinator.transports:
        print(f"{BROWSER} joined over {coordinator.transports[BROWSER]}", flush=True)
    for round_no in range(1, rounds + 1):
        task = b"%d:%d" % (round_no, 1000 * round_no)
        start = time.monotonic()
        coordinator.round = round_no
        hub.broadcast("swarm.task", task)
        while len(coordinator.results.get(round_no, {})) < agents:
            if time.monotonic() > deadline:
                print(f"round {round_no}: no reply from every agent")
                return False
            rt.sleep(0.005)
        answers = set(coordinator.results[round_no].values())
        if answers != {_answer(task)}:
            print(f"round {round_no}: wrong answers {sorted(answers)}")
            return False
        elapsed = (time.monotonic() - start) * 1000
        print(f"round {round_no}: {agents}/{agents} replies in {elapsed:.1f} ms")
    return not coordinator.refused


def _agent(
    rt: SyncRuntime, port: int, config: sansquic.Config, token: str, name: str, deadline: float
) -> None:
    """Connect with the token, join, answer every task until ``swarm.bye``."""
    done: list[bool] = []

    def on_task(peer: Peer, envelope: messaging.Envelope) -> None:
        round_no = envelope.payload.split(b":")[0]
        peer.send("swarm.result", round_no + b" " + _answer(envelope.payload))

    def on_bye(peer: Peer, envelope: messaging.Envelope) -> None:
        done.append(True)

    def ignore(peer: Peer, envelope: messaging.Envelope) -> None:
        pass

    router: messaging.Router[Any] = messaging.Router(fallback=ignore)
    router.add("swarm.task", on_task)
    router.add("swarm.bye", on_bye)
    with rt.connect(HOST, port, config=config, server_name=SERVER_NAME, token=token) as conn:

        def dial() -> Any:
            return conn

        with rt.task_group() as readers:
            messenger = Messenger(dial, readers, router=router)
            messenger.connect()
            messenger.send("swarm.join", name.encode())
            while not done and time.monotonic() < deadline:
                rt.sleep(0.01)
            messenger.disconnect(0, "swarm over")
