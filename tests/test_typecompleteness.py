"""scripts/typecompleteness.py (``nox -s typecompleteness``) fails under the bar.

pyright itself is not a test dependency: a stand-in prints the JSON shape
``pyright --verifytypes --outputjson`` prints, so the parsing and the verdict are
tested here and the real scores in the nox session.
"""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "typecompleteness.py"


def _fake_pyright(tmp_path: Path, score: float) -> str:
    """A pyright stand-in reporting ``score`` for any package (exit 1, as pyright does)."""
    report = {
        "generalDiagnostics": [],
        "typeCompleteness": {
            "packageRootDirectory": "/somewhere",
            "completenessScore": score,
            "exportedSymbolCounts": {
                "withKnownType": round(score * 100),
                "withAmbiguousType": 100 - round(score * 100),
                "withUnknownType": 0,
            },
            "symbols": [
                {
                    "name": "pkg.attribute",
                    "isExported": True,
                    "diagnostics": [{"severity": "error", "message": "Type is missing\n  x"}],
                }
            ],
        },
    }
    fake = tmp_path / "fake_pyright.py"
    fake.write_text(f"import sys\nprint({json.dumps(json.dumps(report))})\nsys.exit(1)\n")
    return f"{sys.executable} {fake}"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=60
    )


def test_a_package_at_the_bar_passes(tmp_path: Path) -> None:
    result = _run("pkg", "--pyright", _fake_pyright(tmp_path, 0.98))
    assert result.returncode == 0, result.stderr
    assert "98.0%" in result.stdout


def test_a_package_under_the_bar_fails_and_is_named(tmp_path: Path) -> None:
    result = _run("pkg", "other", "--pyright", _fake_pyright(tmp_path, 0.97), "-v")
    assert result.returncode == 1
    assert "under 98.0%: pkg, other" in result.stderr
    assert "pkg.attribute: Type is missing x" in result.stdout


def test_output_that_is_not_a_report_fails(tmp_path: Path) -> None:
    fake = tmp_path / "broken.py"
    fake.write_text("print('Error: no such package')\n")
    result = _run("pkg", "--pyright", f"{sys.executable} {fake}")
    assert result.returncode == 1
    assert "pyright gave no report for pkg" in result.stderr
