"""Each runtime names its pip extra when its framework is missing."""

import subprocess
import sys

import pytest


@pytest.mark.parametrize(("runtime", "framework"), [("trio", "trio"), ("anyio", "anyio")])
def test_importing_a_runtime_without_its_framework_names_the_extra(
    runtime: str, framework: str
) -> None:
    # A None entry in sys.modules makes "import trio" fail as if trio were not installed.
    code = f"import sys; sys.modules[{framework!r}] = None; import sansquic_{runtime}"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode != 0
    assert f"pip install 'sansquic[{runtime}]'" in result.stderr
