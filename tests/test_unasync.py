"""The blocking twins (runtime layer, messaging, demo, swarm) are generated: they must match."""

import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "unasync.py"


def _script() -> ModuleType:
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import unasync  # type: ignore[import-not-found]
    finally:
        sys.path.remove(str(SCRIPT.parent))
    return unasync  # type: ignore[no-any-return]


def test_the_blocking_twin_is_up_to_date() -> None:
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--check"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


def test_the_check_catches_drift(tmp_path: Path) -> None:
    unasync = _script()
    source = (ROOT / "runtimes" / "sansquic_runtime" / "_async.py").read_text()
    twin = unasync.unasync(source)
    assert "async def" not in twin and "await " not in twin
    assert "def aclose" not in twin  # async-only lines are dropped
    assert unasync.unasync(source.replace("CLOSE_WAIT = 2.0", "CLOSE_WAIT = 3.0")) != twin


def test_every_pair_is_generated_and_blocking() -> None:
    unasync = _script()
    targets = {pair.target.relative_to(ROOT).as_posix() for pair in unasync.PAIRS}
    assert targets >= {
        "runtimes/sansquic_runtime/_sync.py",
        "runtimes/sansquic_runtime/_messaging_sync.py",
        "runtimes/sansquic_cli/_demo_sync.py",
        "runtimes/sansquic_cli/_swarm_sync.py",
    }
    for pair in unasync.PAIRS:
        twin = pair.target.read_text()
        assert twin.startswith('"""GENERATED from'), pair.target
        # Statements, not prose: a docstring may still say ``async with``.
        for asynchronous in ("async def ", "async with ", "async for ", "await "):
            assert asynchronous not in twin, (pair.target, asynchronous)


def test_the_check_covers_every_pair(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    unasync = _script()
    pairs = []
    for name in ("fresh", "stale"):
        source = tmp_path / f"{name}_async.py"
        source.write_text('"""Doc."""\n\nasync def f() -> None:\n    await g()\n')
        pairs.append(unasync.Pair(source, tmp_path / f"{name}_sync.py", '"""Twin."""\n'))
    monkeypatch.setattr(unasync, "PAIRS", pairs)
    assert unasync.main([]) == 0  # writes both twins
    assert pairs[1].target.read_text() == '"""Twin."""\n\ndef f() -> None:\n    g()\n'
    assert unasync.main(["--check"]) == 0
    pairs[1].source.write_text(pairs[1].source.read_text().replace("g()", "h()"))
    assert unasync.main(["--check"]) == 1  # only the second pair drifted: still caught
    pairs[1].target.unlink()
    assert unasync.main(["--check"]) == 1  # a missing twin is out of date too
