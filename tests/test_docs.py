"""The docs' examples run and the generated state tables match the code."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = sorted((ROOT / "docs").glob("*.md"))


def python_blocks() -> list[tuple[str, str]]:
    return [
        (f"{page.name}#{i}", block)
        for page in PAGES
        for i, block in enumerate(re.findall(r"```python\n(.*?)```", page.read_text(), re.S))
    ]


def test_there_are_examples_to_run() -> None:
    assert len(python_blocks()) >= 3


@pytest.mark.parametrize(("where", "code"), python_blocks(), ids=[w for w, _ in python_blocks()])
def test_example_runs(where: str, code: str) -> None:
    if "import sansquic_curio" in code:  # curio 1.6 does not import on Python 3.12+
        pytest.importorskip(
            "sansquic_curio", reason="curio does not import here", exc_type=ImportError
        )
    exec(compile(code, where, "exec"), {"__name__": "docs_example"})


def test_state_tables_are_current() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "docs" / "gen_state_tables.py"), "--check"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
