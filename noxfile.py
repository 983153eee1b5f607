"""Test matrices for gaussplug.

    nox -l                      # list sessions
    nox -s tests                # float32 and float64 passes on every Python found
    nox -s "tests-3.11(float64)"  # one cell of the matrix (names: nox -l)
    nox -s conformance plugins lint
    nox -s conformance -- householder  # the conformance kit on the families named
    nox -s slow                 # heavier, marked checks (not run by default CI)
    nox -s minimums             # lowest allowed versions (uv --resolution=lowest-direct)

Python versions come from pyproject's classifiers. Under CI=true nox treats a
missing interpreter as an error, so CI runs pytest directly (see README) and
these sessions are for developers and the fuller matrix.
"""

from __future__ import annotations

import nox

nox.options.default_venv_backend = "uv|virtualenv"
nox.options.sessions = ["tests", "conformance", "plugins", "lint"]

PYPROJECT = nox.project.load_toml("pyproject.toml")
PYTHONS = nox.project.python_versions(PYPROJECT)
EXAMPLE_PLUGIN = "plugins/examples/gaussplug-rqs"


@nox.session(python=PYTHONS)
@nox.parametrize("x64", [False, True], ids=["float32", "float64"])
def tests(session: nox.Session, x64: bool) -> None:
    """Unit tests in one cell of the matrix: float32 defaults, or float64 (JAX_ENABLE_X64=1)."""
    session.install("-e", ".[test]")
    env = {"JAX_ENABLE_X64": "1" if x64 else "0"}
    session.run("pytest", "-q", "-n", "auto", "--dist", "worksteal", *session.posargs, env=env)


@nox.session(python=PYTHONS[:1])
def conformance(session: nox.Session) -> None:
    """check_family over every installed family (built-ins and the example plugin), or those named after --."""
    session.install("-e", ".[test]")
    session.install("--no-deps", EXAMPLE_PLUGIN)
    session.run(
        "python",
        "-c",
        "import sys, gaussplug, gaussplug.testing as t\n"
        "for name in sys.argv[1:] or sorted(gaussplug.families()):\n"
        "    print(t.check_family(name))",
        *session.posargs,
        env={"GAUSSPLUG_LOAD_PLUGINS": "rqs_spline"},
    )


@nox.session(python=PYTHONS[:1])
def plugins(session: nox.Session) -> None:
    """Install the example third-party plugin and run its own test suite."""
    session.install("-e", ".[test]")
    session.install(EXAMPLE_PLUGIN)
    session.run(
        "pytest", "-q", f"{EXAMPLE_PLUGIN}/tests", *session.posargs, env={"GAUSSPLUG_LOAD_PLUGINS": "rqs_spline"}
    )
    session.run("gaussplug", "plugins", env={"GAUSSPLUG_LOAD_PLUGINS": "rqs_spline"})


@nox.session(python=PYTHONS[:1])
def slow(session: nox.Session) -> None:
    """Heavier checks marked `slow` (bigger data, more steps)."""
    session.install("-e", ".[test]")
    session.run("pytest", "-q", "-n", "auto", "--dist", "worksteal", "-m", "slow", *session.posargs)


@nox.session(python=PYTHONS[:1])
def lint(session: nox.Session) -> None:
    """ruff (pyflakes, pycodestyle, isort, pyupgrade, bugbear, Google docstrings)."""
    session.install("ruff")
    session.run("ruff", "check", "gaussplug", "plugins", "tests", "benchmarks", "noxfile.py", *session.posargs)


@nox.session(python=PYTHONS[:1], venv_backend="uv")
def minimums(session: nox.Session) -> None:
    """Tests against the lowest versions pyproject allows."""
    session.install("--resolution=lowest-direct", "-e", ".[test]")
    session.run("pytest", "-q", "-n", "auto", "--dist", "worksteal", *session.posargs)


@nox.session(python=PYTHONS[:1], default=False)
def bench(session: nox.Session) -> None:
    """Benchmark suite (peers included); writes docs/benchmarks.md."""
    session.install("-e", ".[test,bench]")
    session.run("python", "benchmarks/run.py", *session.posargs)
