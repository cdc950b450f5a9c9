"""Developer tasks: ``nox -s tests``, ``lint``, ``typecheck``, ``docs``, ``bench``.

``tests`` runs on every supported Python (``tests-3.10`` ... ``tests-3.13``): the whole suite on
:data:`FULL_SUITE_PYTHON`, and :data:`FAST_SUBSET` on the others, to keep CI short (``.ci/run``
runs the whole suite on 3.11 itself and these sessions for the other versions). Arguments after
``--`` replace the selection: ``nox -s tests-3.13 -- -q`` runs the whole suite there too.
"""

from __future__ import annotations

import nox

nox.options.sessions = ["tests", "lint", "typecheck"]
nox.options.reuse_existing_virtualenvs = True

PYTHONS = ["3.10", "3.11", "3.12", "3.13"]
"""Every Python version trio_dxlink supports (``requires-python >= 3.10``)."""

FULL_SUITE_PYTHON = "3.11"

PARALLEL = ["-n", "auto"]
"""pytest-xdist: one worker per CPU core (the suite passes in parallel: each test starts its own
servers, Redis and subprocesses on ports the system picks)."""

FAST_SUBSET = [
    *PARALLEL,
    "-x",
    "-q",
    "-p",
    "no:cacheprovider",
    "-m",
    "not soak",
    # The slowest files (the CLI's subprocesses, every docs block, the fuzzers, the
    # JavaScript and tastytrade clients); they run on FULL_SUITE_PYTHON.
    "--ignore=tests/test_docs.py",
    "--ignore=tests/test_cli.py",
    "--ignore=tests/test_cli_book.py",
    "--ignore=tests/test_fuzz.py",
    "--ignore=tests/test_properties.py",
    "--ignore=tests/test_js_compat.py",
    "--ignore=tests/test_tastytrade_sdk.py",
]
"""What the other versions run: everything but the slowest files, stopping at the first
failure."""


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    """Run the test suite against the local DXLink server (see the module docstring)."""
    session.install("-e", ".[test]")
    if session.posargs:
        selection = session.posargs
    elif session.python == FULL_SUITE_PYTHON:
        selection = PARALLEL
    else:
        selection = FAST_SUBSET
    session.run("python", "-m", "pytest", *selection)


@nox.session(name="tests-pure")
def tests_pure(session: nox.Session) -> None:
    """Run the test suite on the pure-Python code paths (the C speedups turned off)."""
    session.install("-e", ".[test]")
    selection = session.posargs or PARALLEL
    session.run("python", "-m", "pytest", *selection, env={"TRIO_DXLINK_NO_SPEEDUPS": "1"})


@nox.session
def lint(session: nox.Session) -> None:
    """ruff: lint and formatting."""
    session.install("ruff")
    session.run("ruff", "check", "trio_dxlink", "tests", "benchmarks", "setup.py")
    session.run("ruff", "format", "--check", "trio_dxlink", "setup.py")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict over the package."""
    session.install("-e", ".[lint]")
    session.run("mypy", "--strict", "trio_dxlink")


@nox.session
def docs(session: nox.Session) -> None:
    """Build the Sphinx documentation into docs/_build/html."""
    session.install("-e", ".[docs]")
    session.run("sphinx-build", "-W", "-b", "html", "docs", "docs/_build/html")


@nox.session
def bench(session: nox.Session) -> None:
    """Run the benchmarks and print their figures."""
    session.install("-e", ".[test]")
    session.run("python", "benchmarks/bench_decode.py")
    session.run("python", "benchmarks/bench_history.py")
    session.run("python", "benchmarks/bench_throughput.py", *session.posargs)
