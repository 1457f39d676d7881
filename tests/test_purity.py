"""The core stays pure, and only the engine seam touches the engine."""

import ast
import subprocess
import sys
from pathlib import Path

import sansquic

CORE = Path(sansquic.__file__).parent
BANNED = {
    "socket",
    "select",
    "selectors",
    "asyncio",
    "trio",
    "anyio",
    "curio",
    "threading",
    "time",
    "multiprocessing",
    "concurrent",
    "subprocess",
}
ENGINES = {"aioquic", "qh3"}
# The seam: one module per engine (aioquic and its fork qh3), and aioquic's tickets.
SEAMS = {"_aioquic.py", "_aioquic_qh3.py", "_aioquic_tickets.py"}


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Call) and getattr(node.func, "id", None) == "__import__":
            names.add("<dynamic __import__>")
    return names


def core_files() -> list[Path]:
    files = sorted(CORE.rglob("*.py"))
    assert len(files) >= 10, files  # the walk really sees the package
    return files


def test_core_imports_no_io_clock_thread_or_runtime_module() -> None:
    breaches = []
    for path in core_files():
        for name in imported_modules(path):
            top = name.split(".")[0]
            if top in BANNED or top.startswith("sansquic_") or name == "<dynamic __import__>":
                breaches.append(f"{path.relative_to(CORE)}: {name}")
    assert breaches == []


def test_only_the_seam_imports_an_engine() -> None:
    importers = {
        path.relative_to(CORE).as_posix()
        for path in core_files()
        if {name.split(".")[0] for name in imported_modules(path)} & ENGINES
    }
    assert importers == SEAMS


def test_purity_check_catches_a_breach(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import os\nfrom time import monotonic\nimport asyncio.events\n")
    assert {"time", "asyncio.events"} <= imported_modules(bad)


def test_importing_the_core_starts_no_event_loop_library() -> None:
    # The engine's own imports are its business; the core must not pull in
    # an event loop or runtime package on top of them.
    code = (
        "import sys, sansquic, sansquic.testing;"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in"
        " {'trio','anyio','curio'} or m.startswith('sansquic_')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
