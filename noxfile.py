"""Sessions: ``nox -s tests lint types`` for everyday work, ``ci`` is what CI runs.

``fuzz`` and ``bench`` are long and stay out of CI.
"""

import nox

nox.options.sessions = ["lint", "types", "tests"]
nox.options.reuse_existing_virtualenvs = True

PYTHONS = ["3.11"]


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    """The test suite, as the README runs it."""
    session.install("-e", ".[test]")
    session.run("pytest", *session.posargs)


@nox.session(python=PYTHONS)
def ci(session: nox.Session) -> None:
    """What `.ci/run` runs: the suite with the short hypothesis profile."""
    session.install("-e", ".[test]")
    session.run("pytest", env={"CI": "true"})


@nox.session(python=PYTHONS)
def lint(session: nox.Session) -> None:
    """ruff: lint and formatting."""
    session.install("ruff")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session(python=PYTHONS)
def types(session: nox.Session) -> None:
    """mypy --strict on the core, the runtimes and the conformance suite."""
    session.install("-e", ".", "mypy")
    session.run("mypy", "--strict")  # the files listed in pyproject.toml


@nox.session(python=PYTHONS)
def conformance(session: nox.Session) -> None:
    """The whole matrix: every case, every client x server runtime pair, over loopback."""
    session.install("-e", ".")
    session.run("python", "-m", "conformance", *session.posargs)


@nox.session(python=PYTHONS)
def fuzz(session: nox.Session) -> None:
    """The property and fuzz tests with thousands of examples each (bounded: 2,000 per test)."""
    session.install("-e", ".[test]")
    session.run(
        "pytest",
        "tests/test_properties.py",
        "tests/test_fuzz.py",
        "-x",
        *session.posargs,
        env={"HYPOTHESIS_PROFILE": "fuzz"},
    )


@nox.session(python=PYTHONS)
def bench(session: nox.Session) -> None:
    """Throughput of the core on the simnet against raw aioquic, same run."""
    session.install("-e", ".")
    session.run("python", "benchmarks/simnet_throughput.py", *session.posargs)


@nox.session(python=PYTHONS)
def docs(session: nox.Session) -> None:
    """Check that generated parts of the docs match the code."""
    session.install("-e", ".")
    session.run("python", "docs/gen_state_tables.py", "--check")
