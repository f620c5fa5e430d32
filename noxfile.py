"""Run the test suite on every supported interpreter this machine has.

Interpreters that are missing are skipped, not failed (``nox -s tests``). With pyenv,
set ``PYENV_VERSION=3.11.7:3.12.1:3.13.0`` so that ``python3.12`` and ``python3.13`` resolve.
"""

import nox

nox.options.error_on_missing_interpreters = False
nox.options.default_venv_backend = "venv"
nox.options.sessions = ["tests"]

PYTHONS = ["3.11", "3.12", "3.13"]


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    """The unit, property and lab tests, with the coverage gate."""
    session.install("-e", ".[test]")
    session.run("pytest", *session.posargs)


@nox.session(python="3.11")
def lint(session: nox.Session) -> None:
    """ruff and mypy --strict, as CI runs them."""
    session.install("-e", ".[test,lint]")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.run("mypy")


@nox.session(python="3.11")
def docs(session: nox.Session) -> None:
    """Build the documentation with warnings as errors, and run its examples."""
    session.install("-e", ".[docs]")
    session.run(
        "sphinx-build", "-n", "-W", "--keep-going", "-b", "html", "docs", "docs/_build/html"
    )
    session.run(
        "sphinx-build", "-n", "-W", "--keep-going", "-b", "doctest", "docs", "docs/_build/doctest"
    )


@nox.session(python="3.11")
def soak(session: nox.Session) -> None:
    """Chaos, storm and fuzz tests at ten times the CI size (HAPPYDIAL_SOAK=1)."""
    session.install("-e", ".[test]")
    session.run(
        "pytest",
        "tests/test_chaos.py",
        "tests/test_storm.py",
        "tests/test_fuzz.py",
        "--no-cov",  # a subset of the suite cannot meet the coverage gate
        *session.posargs,
        env={"HAPPYDIAL_SOAK": "1"},
    )
