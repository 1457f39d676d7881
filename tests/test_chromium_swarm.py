"""A real browser joins ``sansquic swarm --browser`` as an agent.

The swarm command runs as it would for a person: it prints the page's URL, and
headless chromium opens it. The page joins over WebTransport (or, forced with
``?transport=websocket``, over the WebSocket fallback, with Chromium told to
accept the coordinator's self-signed key), gets each round's broadcast task,
replies, and the coordinator gathers its reply with the Python agent's. Against a
coordinator of the test's own, the page also comes back after its connection is
cut (nothing lost, nothing answered twice) and falls back to WebSocket by itself
when UDP to the WebTransport port is a black hole.
Skipped, saying so, when no chromium is installed (``apt-get install chromium``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest
import sansquic_asyncio

CHROMIUM = next(
    (p for name in ("chromium", "chromium-browser", "google-chrome") if (p := shutil.which(name))),
    None,
)
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (apt-get install -y chromium)"
)
ROOT = Path(__file__).resolve().parent.parent


def _swarm(runtime: str) -> subprocess.Popen[str]:
    path = os.pathsep.join([str(ROOT), str(ROOT / "runtimes"), os.environ.get("PYTHONPATH", "")])
    command = [sys.executable, "-m", "sansquic_cli", "swarm", "--browser", "--runtime", runtime]
    return subprocess.Popen(
        [*command, "--agents", "1", "--rounds", "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONPATH": path},
    )


@contextlib.contextmanager
def _chromium(url: str, *flags: str) -> Iterator[Path]:
    """Headless chromium on ``url`` while the block runs (then its whole process group
    ends); yields its profile directory, where its crash dumps go."""
    assert CHROMIUM is not None
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as profile:
        browser = subprocess.Popen(
            [
                CHROMIUM,
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-extensions",
                f"--user-data-dir={profile}",
                *flags,
                url,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "HOME": profile},
            start_new_session=True,  # its own process group: the helpers end with it
        )
        try:
            yield Path(profile)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(browser.pid, signal.SIGKILL)
            browser.wait(timeout=10)


def _join_with_chromium(runtime: str, query: str) -> str:
    """Run the swarm, point chromium at the URL it prints; the swarm's whole output."""
    lines: list[str] = []
    with _swarm(runtime) as swarm:
        assert swarm.stdout is not None
        try:
            url = flag = None
            for line in swarm.stdout:  # the two lines that say where to go come first
                lines.append(line)
                if m := re.match(r"browser agent: open (\S+)", line):
                    url = m[1]
                if m := re.search(r"(--ignore-certificate-errors-spki-list=\S+)\)", line):
                    flag = m[1]
                if url and flag:
                    break
            assert url and flag, "".join(lines)
            with _chromium(url + query, flag):
                # Until the swarm ends: its own deadline (BROWSER_TIMEOUT) bounds the wait.
                lines.extend(swarm.stdout)
                assert swarm.wait(timeout=30) == 0, "".join(lines)
        finally:
            if swarm.poll() is None:
                swarm.kill()
                swarm.wait(timeout=10)
    return "".join(lines)


def _gathered(out: str) -> None:
    assert "2 agents joined: agent-0, browser" in out, out
    for round_no in (1, 2):
        assert f"round {round_no}: 2/2 replies" in out, out
    assert re.search(r"^swarm OK: 2 agents, 2 rounds$", out, re.M), out
    assert "did not ack swarm.bye" not in out, out


def _runnable(runtime: str) -> None:
    if runtime == "curio":
        pytest.importorskip(
            "sansquic_curio", reason="curio does not import here", exc_type=ImportError
        )


# Each runtime once (both servers run in either test): its serve, serve_websocket and
# WebTransport drive, under the real browser.
@pytest.mark.parametrize("runtime", ["asyncio", "trio", "curio"])
def test_a_browser_joins_the_swarm_over_webtransport(runtime: str) -> None:
    _runnable(runtime)
    out = _join_with_chromium(runtime, "")
    assert "browser joined over webtransport" in out, out
    _gathered(out)


@pytest.mark.parametrize("runtime", ["threads", "anyio", "anyio-trio"])
def test_a_browser_joins_the_swarm_over_websocket_when_told_to(runtime: str) -> None:
    _runnable(runtime)
    out = _join_with_chromium(runtime, "?transport=websocket")
    assert "browser joined over websocket" in out, out
    _gathered(out)


# -- the page's own guarantees, against an in-process coordinator ---------------------------


class _Tasks:
    """``spawn`` over asyncio tasks (the MessageServer's lane readers)."""

    def __init__(self) -> None:
        self.tasks: set[asyncio.Task[Any]] = set()

    async def spawn(self, fn: Callable[..., Coroutine[Any, Any, Any]], *args: Any) -> None:
        self.tasks.add(asyncio.ensure_future(fn(*args)))


async def _until(what: str, predicate: Callable[[], bool], reports: list[str]) -> None:
    for _ in range(3000):  # 30 s
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}; the page said: {reports}")


def _page_run(query: str, *, cut: bool, block_udp: bool) -> tuple[list[bytes], list[str], Any]:
    """Serve the page against a coordinator of this test's own; the replies it gathered,
    how each join and reconnect came (``_transport``), and the page's session."""
    from sansquic_cli import _browser
    from sansquic_cli._swarm_async import _transport
    from sansquic_runtime import MessageServer, Peer, webtransport_handler

    import sansquic
    from sansquic import messaging, tokens

    async def scenario() -> tuple[list[bytes], list[str], Any]:
        pinned = _browser.pinned_certificate()
        config = sansquic.Config(certificate=pinned.certificate, private_key=pinned.private_key)
        key = {"k": secrets.token_bytes(32)}
        signer = tokens.TokenSigner(key, key_id="k")
        verifier = tokens.TokenVerifier(key)
        authenticator = tokens.token_authenticator(verifier, token_time=lambda n: time.time())
        results: list[bytes] = []
        reports: list[str] = []
        router: messaging.Router[Any] = messaging.Router()

        async def on_result(peer: Peer, envelope: messaging.Envelope) -> None:
            results.append(envelope.payload)

        async def ignore(peer: Peer, envelope: messaging.Envelope) -> None:
            pass

        router.add("swarm.result", on_result)
        router.add("swarm.join", ignore)
        hub = MessageServer(_Tasks(), router=router)
        on_session = webtransport_handler(hub.handle, authenticator=authenticator)
        h3 = config.replace(alpn=("h3",))
        wt = await sansquic_asyncio.serve(on_session, "127.0.0.1", 0, config=h3)
        ws = await sansquic_asyncio.serve_websocket(
            hub.handle, "127.0.0.1", 0, config=config, authenticator=authenticator
        )
        hole = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        hole.bind(("127.0.0.1", 0))  # bound, never read: UDP to it vanishes
        body = _browser.page(
            name="browser",
            token=signer.sign("browser", ttl=600, now=time.time()),
            webtransport_port=hole.getsockname()[1] if block_udp else wt.address[1],
            websocket_port=ws.address[1],
            sha256=pinned.sha256,
        )
        seen: list[str] = []
        try:
            with (
                _browser.site(body, reports.append) as url,
                _chromium(
                    url + query, f"--ignore-certificate-errors-spki-list={pinned.spki}"
                ) as profile,
            ):
                try:
                    await _until("the join", lambda: bool(hub.sessions), reports)
                    (peer,) = hub.sessions.values()
                    for n, task in enumerate((b"1:10", b"2:20"), start=1):

                        def connected(n: int = n) -> bool:  # the n-th one, by its hello
                            generation = n if cut else 1
                            return peer.connection is not None and (
                                peer.channel.generation == generation
                            )

                        def replied(n: int = n) -> bool:
                            return len(results) >= n

                        await _until(f"connection {n}", connected, reports)
                        seen.append(_transport(peer.connection))
                        if cut:
                            await peer.connection.close(0, "cut by the test")
                        await hub.broadcast("swarm.task", task)  # queued while it is away
                        await _until(f"reply {n}", replied, reports)
                    await asyncio.sleep(0.3)  # a duplicate reply would arrive now
                    seen.append(_transport(peer.connection))
                    await hub.broadcast("swarm.bye")
                    await _until("the acks", lambda: peer.channel.queue.unacked == 0, reports)
                    return results, seen, peer.channel
                except AssertionError as e:
                    # A page that falls silent may be a renderer that died: say so.
                    dumps = sorted(profile.rglob("*.dmp"))
                    crashed = f"; chromium wrote {len(dumps)} crash dump(s)" if dumps else ""
                    raise AssertionError(f"{e}{crashed}") from None
        finally:
            hole.close()
            await ws.close()
            await wt.close()

    return asyncio.run(scenario())


@pytest.mark.parametrize("query", ["", "?transport=websocket"])
def test_the_page_reconnects_after_each_cut_and_loses_nothing(query: str) -> None:
    # Two cuts: Chromium's renderer used to crash at the second WebTransport one (our
    # RESET_STREAMs came after the CLOSE_WEBTRANSPORT_SESSION capsule; docs/webtransport.md).
    results, seen, channel = _page_run(query, cut=True, block_udp=False)
    transport = "websocket" if query else "webtransport"
    assert seen == [transport] * 3
    assert results == [b"1 45", b"2 190"]  # each task answered once, in order
    assert channel.generation == 3  # the page came back on a second and a third connection


def test_the_page_falls_back_to_websocket_when_udp_is_blocked() -> None:
    results, seen, channel = _page_run("", cut=False, block_udp=True)
    assert seen == ["websocket"] * 3
    assert results == [b"1 45", b"2 190"]
    assert channel.generation == 1
