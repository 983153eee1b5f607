"""The ``Example:`` sections of every docstring run and print what they claim.

Every module of ``gaussplug`` and of the built-in families (``gaussplug_plugins``) is searched
with :mod:`doctest`; one test per module that has examples. A module whose examples drift from
the code fails here with doctest's own report (expected vs got, and the line).
"""

from __future__ import annotations

import doctest
import importlib
import io
import pkgutil

import gaussplug_plugins
import pytest

import gaussplug

#: ``ELLIPSIS`` lets an example elide a long repr with ``...``; nothing else is relaxed.
FLAGS = doctest.ELLIPSIS


def _module_names() -> list[str]:
    names = []
    for pkg in (gaussplug, gaussplug_plugins):
        names.append(pkg.__name__)
        names += [m.name for m in pkgutil.walk_packages(pkg.__path__, prefix=pkg.__name__ + ".")]
    return sorted(names)


def _examples(name: str) -> list[doctest.DocTest]:
    module = importlib.import_module(name)
    tests = doctest.DocTestFinder(exclude_empty=True).find(module, name)
    return [t for t in tests if t.examples]


MODULES = [name for name in _module_names() if _examples(name)]


def _run(tests: list[doctest.DocTest]) -> tuple[doctest.TestResults, str]:
    out = io.StringIO()
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    for t in tests:
        runner.run(t, out=out.write)
    return runner.summarize(verbose=False), out.getvalue()


def test_examples_are_found():
    # Guards the discovery itself: an import path change must not leave this file testing nothing.
    assert len(MODULES) >= 15, MODULES
    assert "gaussplug._mixture" in MODULES and "gaussplug_plugins.householder" in MODULES
    assert sum(len(t.examples) for name in MODULES for t in _examples(name)) >= 100


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name, fresh_registry):
    results, report = _run(_examples(name))
    assert results.attempted > 0
    assert results.failed == 0, f"{name}: {results.failed} of {results.attempted} examples failed\n{report}"


def test_a_wrong_example_fails():
    def f():
        """
        >>> 1 + 1
        3
        """

    test = doctest.DocTestFinder().find(f, "f", globs={})[0]
    results, report = _run([test])
    assert results == (1, 1)
    assert "Expected:\n    3\nGot:\n    2" in report
