"""A real browser joins ``sansquic swarm --browser`` as an agent.

The swarm command runs as it would for a person: it prints the page's URL, and
headless chromium opens it. The page joins over WebTransport (or, forced with
``?transport=websocket``, over the WebSocket fallback, with Chromium told to
accept the coordinator's self-signed key), gets each round's broadcast task,
replies, and the coordinator gathers its reply with the Python agent's.
Skipped, saying so, when no chromium is installed (``apt-get install chromium``).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

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


def _join_with_chromium(runtime: str, query: str) -> str:
    """Run the swarm, point chromium at the URL it prints; the swarm's whole output."""
    assert CHROMIUM is not None
    lines: list[str] = []
    browser: subprocess.Popen[bytes] | None = None
    with (
        _swarm(runtime) as swarm,
        tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as profile,
    ):
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
            browser = subprocess.Popen(
                [
                    CHROMIUM,
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--no-first-run",
                    "--disable-extensions",
                    f"--user-data-dir={profile}",
                    flag,
                    url + query,
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                env={**os.environ, "HOME": profile},
                start_new_session=True,  # its own process group: the helpers end with it
            )
            # Until the swarm ends: its own deadline (BROWSER_TIMEOUT) bounds the wait.
            lines.extend(swarm.stdout)
            assert swarm.wait(timeout=30) == 0, "".join(lines)
        finally:
            if browser is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(browser.pid, signal.SIGKILL)
                browser.wait(timeout=10)
            if swarm.poll() is None:
                swarm.kill()
                swarm.wait(timeout=10)
    return "".join(lines)


def _gathered(out: str) -> None:
    assert "2 agents joined: agent-0, browser" in out, out
    for round_no in (1, 2):
        assert f"round {round_no}: 2/2 replies" in out, out
    assert re.search(r"^swarm OK: 2 agents, 2 rounds$", out, re.M), out


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
