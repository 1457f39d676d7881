"""The interop cases against aioquic's own example programs, both directions.

``nox -s interop`` runs the whole matrix (ngtcp2 too); this is its aioquic
part, about 30 s. The examples come from aioquic's sdist, fetched once with
pip into ~/.cache/sansquic-interop.
"""

import functools

import pytest

from interop import sansquic_side
from interop.peers import AioquicExamples, fetch_aioquic_examples
from interop.runner import DIRECTIONS, Outcome, run_cell
from interop.spec import CASES


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
