"""The conformance matrix under pytest.

Every case runs for each runtime against itself; for every pair of different
runtimes (25 pairs with anyio on both backends counted once each) the
quickest cases that still cross every path run here, and
`nox -s conformance` (`python -m conformance`) runs the whole matrix.
"""

import itertools

import pytest

from conformance import CASES, CROSS_CASES, HARNESSES

RUNS = [
    (client, server, case)
    for client, server in itertools.product(HARNESSES, repeat=2)
    for case in CASES
    if client == server or case in CROSS_CASES
]


def test_every_runtime_takes_part() -> None:
    # The test extra installs every framework, so none may be missing here.
    assert set(HARNESSES) == {"asyncio", "threads", "trio", "anyio-asyncio", "anyio-trio"}


@pytest.mark.parametrize(
    ("client", "server", "case"), RUNS, ids=[f"{c}->{s}-{n}" for c, s, n in RUNS]
)
def test_case(client: str, server: str, case: str) -> None:
    CASES[case](HARNESSES[client], HARNESSES[server])
