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


# File I/O: _config.py reads the PEM paths a user passes; qlog.py is the public helper
# whose callable a user hands to Config.qlog. The connection itself never touches files.
FILE_IO_MODULES = {"pathlib", "shutil", "tempfile", "io"}
FILE_IO_ALLOWED = {"_config.py": {"open"}, "qlog.py": {"open", "pathlib"}}


def file_io(path: Path) -> set[str]:
    """Builtin ``open`` calls and file-system module imports in ``path``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found = {name for name in imported_modules(path) if name.split(".")[0] in FILE_IO_MODULES}
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "open":
            found.add("open")
    return found


def test_file_io_stays_in_config_and_the_qlog_helper() -> None:
    breaches = {
        path.relative_to(CORE).as_posix(): uses - FILE_IO_ALLOWED.get(path.name, set())
        for path in core_files()
        if (uses := file_io(path)) - FILE_IO_ALLOWED.get(path.name, set())
    }
    assert breaches == {}
    assert file_io(CORE / "qlog.py") == {"pathlib"}  # the walk does see the helper's I/O


def test_file_io_check_catches_a_breach(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import pathlib\nwith open('x') as f: pass\n")
    assert file_io(bad) == {"pathlib", "open"}


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


def test_the_library_needs_no_rich() -> None:
    # rich is the command's (the cli extra): the core and every runtime import and
    # run without it. A None in sys.modules makes "import rich" fail as if absent.
    code = (
        "import sys; sys.modules['rich'] = None;"
        "import sansquic, sansquic.testing, sansquic.messaging, sansquic.websocket;"
        "import sansquic_asyncio, sansquic_threads, sansquic_trio, sansquic_anyio;"
        "sansquic.Config(dev_mode=True);"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'rich' and sys.modules[m]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
