"""The interop cases against aioquic's own example programs, both directions.

``nox -s interop`` runs the whole matrix (ngtcp2 too); this is its aioquic
part, about 30 s. The examples come from aioquic's sdist, fetched once with
pip into ~/.cache/sansquic-interop.
"""

import functools
import os
from pathlib import Path

import pytest

from interop import sansquic_side
from interop.peers import AioquicExamples, fetch_aioquic_examples
from interop.proxy import Proxy
from interop.runner import DIRECTIONS, Outcome, run_cell
from interop.spec import CASES, Observation


@functools.cache
def peer() -> AioquicExamples:
    return AioquicExamples(fetch_aioquic_examples())


@pytest.mark.slow
@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize("name", list(CASES))
def test_aioquic_examples(name: str, direction: str) -> None:
    case = CASES[name]
    if (reason := peer().unavailable()) is not None:
        pytest.skip(f"aioquic examples: {reason}")
    cell = run_cell(case, peer(), direction)
    if cell.outcome is Outcome.UNSUPPORTED_SANSQUIC:
        # Only a feature that is really absent may excuse a cell.
        role = "client" if direction == DIRECTIONS[0] else "server"
        assert sansquic_side.missing_feature(case.feature, role) == cell.reason
        pytest.skip(cell.reason)
    assert cell.outcome is Outcome.PASS, cell.reason


@pytest.mark.slow
@pytest.mark.parametrize("name", ["resumption", "zerortt"])
def test_the_checks_pass_for_aioquic_against_itself(name: str, tmp_path: Path) -> None:
    # The resumption and 0-RTT cells wait for sansquic's session tickets; this
    # shows their wire checks hold when both sides resume (aioquic's example
    # client against its example server), so they are not impossible to pass.
    if (reason := peer().unavailable()) is not None:
        pytest.skip(f"aioquic examples: {reason}")
    case = CASES[name]
    www, out = tmp_path / "www", tmp_path / "out"
    www.mkdir()
    out.mkdir()
    for i in range(2):
        (www / f"f{i}").write_bytes(os.urandom(5000))
    server = peer().serve(case, www, "127.0.0.1", tmp_path)
    try:
        with Proxy(server.address) as proxy:
            for i in range(2):
                status, _ = peer().fetch(case, proxy.address, [f"/f{i}"], out, tmp_path)
                assert status == 0
    finally:
        server.stop()
    assert sorted(p.name for p in out.iterdir()) == ["f0", "f1"]
    # What sansquic would report on its side, were it one of the two.
    said = [{"resumed": False}, {"resumed": True, "early_data_accepted": True}]
    obs = Observation(proxy.observer, dict(proxy.actions), proxy.families, said)
    assert case.check(obs) is None
