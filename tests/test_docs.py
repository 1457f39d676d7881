"""The docs' examples run, and the docs' generated parts match the code.

Every ```python block under docs/ (tabbed ones included: they are indented) is
run, unless its first line is ``# fragment``: such a block is a piece of a
larger program (it uses names from around it), so it is only compiled, with
top-level ``await`` allowed. Runnable examples use loopback and short timeouts.
"""

import ast
import importlib
import importlib.util
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.rglob("*.md"))
FRAGMENT = "# fragment"

# A fence at any indentation (pymdownx.tabbed indents a tab's body by four spaces);
# the closing fence has the opening's indentation.
FENCE = re.compile(
    r"^(?P<indent>[ \t]*)```(?P<info>[^\n]*)\n(?P<body>.*?)^(?P=indent)```[ \t]*$", re.M | re.S
)


def fenced_blocks(text: str) -> list[tuple[str, str]]:
    """(info string, dedented body) of every fenced block in a page."""
    return [(m["info"].strip(), textwrap.dedent(m["body"])) for m in FENCE.finditer(text)]


def python_blocks() -> list[tuple[str, str]]:
    return [
        (f"{page.relative_to(DOCS)}#{i}", body)
        for page in PAGES
        for i, (info, body) in enumerate(
            b for b in fenced_blocks(page.read_text(encoding="utf-8")) if b[0].startswith("python")
        )
    ]


BLOCKS = python_blocks()
RUNNABLE = [(w, c) for w, c in BLOCKS if not c.startswith(FRAGMENT)]
FRAGMENTS = [(w, c) for w, c in BLOCKS if c.startswith(FRAGMENT)]


def test_the_block_finder_sees_indented_and_plain_blocks() -> None:
    page = '```python\nx = 1\n```\n\n=== "tab"\n\n    ```python\n    y = 2\n    ```\n'
    assert fenced_blocks(page) == [("python", "x = 1\n"), ("python", "y = 2\n")]


def test_there_are_examples_to_run() -> None:
    assert len(RUNNABLE) >= 40
    assert len(FRAGMENTS) >= 3


def test_every_page_is_in_the_site() -> None:
    """A page missing from mkdocs.yml's nav would be built but never reachable."""
    nav = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    missing = [str(p.relative_to(DOCS)) for p in PAGES if f" {p.relative_to(DOCS)}" not in nav]
    assert missing == []


@pytest.mark.parametrize(("where", "code"), RUNNABLE, ids=[w for w, _ in RUNNABLE])
def test_example_runs(where: str, code: str) -> None:
    if "import sansquic_curio" in code:  # curio 1.6 does not import on Python 3.12+
        pytest.importorskip(
            "sansquic_curio", reason="curio does not import here", exc_type=ImportError
        )
    exec(compile(code, where, "exec"), {"__name__": "docs_example"})


@pytest.mark.parametrize(("where", "code"), FRAGMENTS, ids=[w for w, _ in FRAGMENTS])
def test_fragment_compiles(where: str, code: str) -> None:
    compile(code, where, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)


@pytest.mark.parametrize("script", ["gen_state_tables.py", "gen_bench.py"])
def test_generated_parts_are_current(script: str) -> None:
    result = subprocess.run(
        [sys.executable, str(DOCS / script), "--check"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


REFERENCED_MODULES = [
    "sansquic",
    "sansquic.testing",
    "sansquic.tokens",
    "sansquic.ratelimit",
    "sansquic.qlog",
    "sansquic.messaging",
    "sansquic_runtime",
    "sansquic_asyncio",
    "sansquic_trio",
    "sansquic_anyio",
    "sansquic_threads",
    "sansquic_curio",
]


@pytest.mark.parametrize("module", REFERENCED_MODULES)
def test_the_reference_covers_every_public_name(module: str) -> None:
    """Each public name is rendered by a ``::: module.name`` directive, by a
    directive for its whole module, or is named in that directive's members list."""
    text = "\n".join(p.read_text(encoding="utf-8") for p in (DOCS / "reference").glob("*.md"))
    directives = re.findall(r"^::: (\S+)((?:\n    .*)*)", text, re.M)
    whole = {name for name, options in directives if "members:" not in options}
    listed = {
        f"{name}.{member}"
        for name, options in directives
        for member in re.findall(r"^ +- (\w+)$", options, re.M)
    }
    if module == "sansquic_curio" and importlib.util.find_spec("curio") is None:
        pytest.skip("curio is not installed")
    try:
        names = importlib.import_module(module).__all__
    except ImportError:  # curio 1.6 does not import on Python 3.12+
        pytest.skip(f"{module} does not import here")
    if module in whole:
        return
    runtime_reexports = {"Connection", "Server", "Stream"}  # documented on reference/runtime.md
    missing = [
        n
        for n in names
        if n != "__version__"
        and f"{module}.{n}" not in whole | listed
        and not (module.startswith("sansquic_") and n in runtime_reexports)
    ]
    assert missing == [], f"add these to docs/reference/: {missing}"


def test_the_exception_tree_matches_the_code() -> None:
    """errors.md draws the hierarchy; each class must derive from the one it hangs
    under, and every public exception of the core must be drawn."""
    import sansquic
    from sansquic import tokens

    text = (DOCS / "errors.md").read_text(encoding="utf-8")
    tree = text[text.index("SansQuicError(Exception)") :].split("```", 1)[0].splitlines()
    parents: list[type] = [sansquic.SansQuicError]
    drawn = {sansquic.SansQuicError}
    for line in tree[1:]:
        match = re.match(r"^((?:│   |    )*)[├└]── (\w+)", line)
        assert match, line
        depth = len(match[1]) // 4 + 1
        cls = getattr(sansquic, match[2], None) or getattr(tokens, match[2])
        del parents[depth:]
        assert cls.__bases__[0] is parents[-1], f"{cls.__name__} is drawn under {parents[-1]}"
        parents.append(cls)
        drawn.add(cls)
    public = {
        obj
        for module in (sansquic, tokens)
        for obj in (getattr(module, n) for n in module.__all__)
        if isinstance(obj, type) and issubclass(obj, sansquic.SansQuicError)
    }
    assert public - drawn == set()


def test_the_reference_shows_rest_roles_as_code() -> None:
    sys.path.insert(0, str(DOCS))
    try:
        from griffe_roles import markdown
    finally:
        sys.path.remove(str(DOCS))
    text = "See :class:`~sansquic.Config`, :meth:`send` and ``x + 1``; example::\n"
    assert markdown(text) == "See `Config`, `send` and `x + 1`; example:\n"


def _resolves(dotted: str) -> bool | None:
    """Whether ``a.b.c`` names something; None when its package does not import here."""
    parts = dotted.split(".")
    for split in range(len(parts), 0, -1):
        try:
            obj: object = importlib.import_module(".".join(parts[:split]))
        except ModuleNotFoundError:
            continue
        except ImportError:  # e.g. curio on Python 3.12+
            return None
        for attr in parts[split:]:
            if not hasattr(obj, attr):
                return False
            obj = getattr(obj, attr)
        return True
    return False


def test_every_dotted_name_in_the_docs_exists() -> None:
    """A renamed or removed public name must not live on in the prose."""
    named = {
        (str(page.relative_to(DOCS)), name)
        for page in PAGES
        for name in re.findall(r"`((?:sansquic|sansquic_\w+)(?:\.\w+)+)", page.read_text("utf-8"))
    }
    assert len(named) > 50
    assert sorted((p, n) for p, n in named if _resolves(n) is False) == []


RUNTIMES = {"asyncio", "trio", "anyio", "curio", "threads"}


def test_every_runtime_tab_set_covers_every_runtime() -> None:
    """A set of runtime tabs (consecutive ``=== "..."`` lines) names all five runtimes,
    alone or grouped ("asyncio, trio, anyio, curio"), so no reader is left out."""
    sets = 0
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        for group in re.findall(r'(?:^=== "[^"]+"\n(?:\n|    .*\n)*)+', text, re.M):
            labels = re.findall(r'^=== "([^"]+)"', group, re.M)
            covered = {name.strip() for label in labels for name in label.split(",")}
            if covered & RUNTIMES:
                sets += 1
                assert covered == RUNTIMES, f"{page.name}: tabs {labels}"
    assert sets >= 8
