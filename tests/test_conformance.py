"""The conformance matrix under pytest.

Every case runs for each runtime against itself; across runtimes (asyncio
client with threads server and the reverse) the quick cases run here, and
`nox -s conformance` (`python -m conformance`) runs the whole matrix.
"""

import itertools

import pytest

from conformance import CASES, FAST_CASES, HARNESSES

RUNS = [
    (client, server, case)
    for client, server in itertools.product(HARNESSES, repeat=2)
    for case in CASES
    if client == server or case in FAST_CASES or case == "streams_1000"
]


def test_both_first_runtimes_take_part() -> None:
    assert {"asyncio", "threads"} <= set(HARNESSES)


@pytest.mark.parametrize(
    ("client", "server", "case"), RUNS, ids=[f"{c}->{s}-{n}" for c, s, n in RUNS]
)
def test_case(client: str, server: str, case: str) -> None:
    CASES[case](HARNESSES[client], HARNESSES[server])
