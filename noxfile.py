"""Sessions: ``nox`` (lint, types, typecompleteness, tests) day to day; ``ci`` is what CI runs.

``tests`` runs on every supported Python (``requires-python`` is true to the
code only if each passes). ``conformance`` (the whole runtime matrix),
``fuzz``, ``bench`` and ``soak`` are long and stay out of CI, and so does
``interop`` (it needs Debian's ngtcp2 packages for its ngtcp2 part; its
aioquic part also runs in the tests, tests/test_interop_examples.py).
"""

import nox

nox.options.sessions = ["lint", "types", "typecompleteness", "tests"]
nox.options.reuse_existing_virtualenvs = True

#: Every Python the package supports (pyproject: requires-python >= 3.11).
PYTHONS = ["3.11", "3.12"]


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


@nox.session(python=PYTHONS[0])
def lint(session: nox.Session) -> None:
    """ruff: lint and formatting."""
    session.install("ruff")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session(python=PYTHONS[0])
def types(session: nox.Session) -> None:
    """mypy --strict on the core, the runtimes and the conformance suite."""
    session.install("-e", ".[all,cli]", "mypy")
    session.run("mypy", "--strict")  # the files listed in pyproject.toml


@nox.session(python=PYTHONS[0])
def typecompleteness(session: nox.Session) -> None:
    """pyright --verifytypes on every published package, as installed from the wheel
    (not editable): fails when one is under 98% (scripts/typecompleteness.py)."""
    session.install(".[all]", "pyright")
    session.run("python", "scripts/typecompleteness.py", *session.posargs)


@nox.session(python=PYTHONS[0])
def conformance(session: nox.Session) -> None:
    """The whole matrix: every case, every client x server runtime pair, over loopback."""
    session.install("-e", ".[all,cli]")
    session.run("python", "-m", "sansquic_conformance", *session.posargs)


@nox.session(python=PYTHONS[0])
def fuzz(session: nox.Session) -> None:
    """The property and fuzz tests with thousands of examples each (bounded: 2,000 per test)."""
    session.install("-e", ".[test]")
    session.run(
        "pytest",
        "tests/test_properties.py",
        "tests/test_fuzz.py",
        "tests/test_hostile_peer.py",
        "tests/test_messaging.py",
        "tests/test_messaging_simnet.py",
        "-x",
        *session.posargs,
        env={"HYPOTHESIS_PROFILE": "fuzz"},
    )


@nox.session(python=PYTHONS[0])
def bench(session: nox.Session) -> None:
    """Throughput of the core on the simnet, then every runtime on loopback beside raw
    aioquic measured in the same run (throughput, CPU per MB, latency, priority under
    load, memory per idle connection and stream): a table, bench-runtimes.json and
    bench-runtimes.png, with sansquic at the raw stacks' 1200-byte packets (the layer's
    own cost); then the same with sansquic's path MTU discovery on, as users get it
    (bench-runtimes-pmtu.*). About 20 minutes on 2 cores."""
    session.install("-e", ".[bench]")
    session.run("python", "benchmarks/simnet_throughput.py", *session.posargs)
    for suffix, extra in (("", []), ("-pmtu", ["--pmtu"])):
        session.run(
            "python",
            "benchmarks/runtimes.py",
            *extra,
            *("--json", f"bench-runtimes{suffix}.json", "--png", f"bench-runtimes{suffix}.png"),
        )


@nox.session(python=PYTHONS[0])
def soak(session: nox.Session) -> None:
    """1,000 connections x 10 echo streams for 3 minutes per runtime: RSS, failures, drain."""
    session.install("-e", ".[all,cli]")
    args = session.posargs or [
        *("--connections", "1000", "--streams", "10", "--seconds", "180", "--pause", "10")
    ]
    session.run("python", "benchmarks/soak.py", "--runtime", "all", *args, "--json", "soak.json")


@nox.session(python=PYTHONS[0])
def interop(session: nox.Session) -> None:
    """The QUIC interop runner's cases against aioquic's example programs (from its
    sdist, fetched with pip) and, when installed, Debian's ngtcp2 examples
    (``apt-get install ngtcp2-client ngtcp2-server``): a case x peer x direction
    matrix, failing if a supported cell fails. ``-- --case retry --peer aioquic`` picks."""
    session.install("-e", ".", "wsproto")
    session.run("python", "-m", "interop", *session.posargs)


@nox.session(python=PYTHONS)
def webtransport(session: nox.Session) -> None:
    """Headless chromium opens WebTransport sessions to a sansquic server on loopback
    (certificate pinned by hash) and echoes on streams and datagrams, and joins
    ``sansquic swarm --browser`` as an agent (over WebTransport and over WebSocket); on
    Python 3.12+ quinn's WebTransport (pip ``web-transport-quinn``) too, both directions.
    Each part skips, saying so, when its peer is absent (``apt-get install chromium``)."""
    session.install("-e", ".[all]", "pytest")
    if session.python != "3.11":  # web-transport-quinn needs Python >= 3.12
        session.install("web-transport-quinn")
    session.run(
        "pytest",
        "-rs",
        "tests/test_chromium_webtransport.py",
        "tests/test_chromium_swarm.py",
        "tests/test_quinn_webtransport.py",
        *session.posargs,
    )


@nox.session(python=PYTHONS[0])
def docs(session: nox.Session) -> None:
    """The docs site: the generated parts must match the code and the benchmark JSON,
    then ``mkdocs build --strict`` (every warning, broken link or anchor is an error)
    into ``site/``. Its examples run in the tests (tests/test_docs.py)."""
    session.install("-e", ".[docs]")
    session.run("python", "docs/gen_state_tables.py", "--check")
    session.run("python", "docs/gen_bench.py", "--check")
    session.run("mkdocs", "build", "--strict", env={"NO_MKDOCS_2_WARNING": "1"})
