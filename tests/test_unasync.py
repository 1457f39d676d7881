"""The blocking twin of the runtime layer is generated, never edited: it must match."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "unasync.py"


def test_the_blocking_twin_is_up_to_date() -> None:
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--check"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


def test_the_check_catches_drift(tmp_path: Path) -> None:
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import unasync  # type: ignore[import-not-found]
    finally:
        sys.path.remove(str(SCRIPT.parent))
    source = (ROOT / "runtimes" / "sansquic_runtime" / "_async.py").read_text()
    twin = unasync.unasync(source)
    assert "async def" not in twin and "await " not in twin
    assert "def aclose" not in twin  # async-only lines are dropped
    assert unasync.unasync(source.replace("CLOSE_WAIT = 2.0", "CLOSE_WAIT = 3.0")) != twin
