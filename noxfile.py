"""Developer tasks: ``nox -s tests``, ``lint``, ``typecheck``, ``docs``, ``bench``."""

from __future__ import annotations

import nox

nox.options.sessions = ["tests", "lint", "typecheck"]
nox.options.reuse_existing_virtualenvs = True


@nox.session
def tests(session: nox.Session) -> None:
    """Run the test suite against the local DXLink server."""
    session.install("-e", ".[test]")
    session.run("python", "-m", "pytest", *session.posargs)


@nox.session(name="tests-pure")
def tests_pure(session: nox.Session) -> None:
    """Run the test suite on the pure-Python code paths (the C speedups turned off)."""
    session.install("-e", ".[test]")
    session.run("python", "-m", "pytest", *session.posargs, env={"TRIO_DXLINK_NO_SPEEDUPS": "1"})


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
