"""The conformance matrix under pytest.

Every case runs for each runtime against itself; for every pair of different
runtimes (six harnesses: asyncio, threads, trio, anyio on asyncio and on trio,
curio; 30 pairs) the
quickest cases that still cross every path run here, and
`nox -s conformance` (`python -m sansquic_conformance`) runs the whole matrix.
"""

import itertools
import sys

import pytest

from sansquic_conformance import CASES, CROSS_CASES, HARNESSES

RUNS = [
    (client, server, case)
    for client, server in itertools.product(HARNESSES, repeat=2)
    for case in CASES
    if client == server or case in CROSS_CASES
]


def test_every_runtime_takes_part() -> None:
    # The test extra installs every framework, so none may be missing here, except
    # curio on Python 3.12+, where its last release (1.6) does not import.
    expected = {"asyncio", "threads", "trio", "anyio-asyncio", "anyio-trio"}
    if sys.version_info < (3, 12):
        expected.add("curio")
    assert set(HARNESSES) == expected


@pytest.mark.parametrize(
    ("client", "server", "case"), RUNS, ids=[f"{c}->{s}-{n}" for c, s, n in RUNS]
)
def test_case(client: str, server: str, case: str) -> None:
    CASES[case](HARNESSES[client], HARNESSES[server])
