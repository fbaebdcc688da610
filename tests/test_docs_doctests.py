# SPDX-License-Identifier: BSD-3-Clause
"""The examples in psfmatch's docstrings run, against the installed package.

Each module of the package that ``import psfmatch`` resolves to (the installed one in CI, whose
compiled core is there; not the source tree's ``python/``) is searched with `doctest`, and its
examples are run with the module's own globals, as ``python -m doctest`` would. No example may
be skipped (``+SKIP``): an example that cannot run is not an example.
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import psfmatch

#: Modules not imported here: ``__main__`` runs the command line when imported.
_EXCLUDED = {"psfmatch.cli.__main__"}


def _moduleNames() -> list[str]:
    names = ["psfmatch"]
    for info in pkgutil.walk_packages(psfmatch.__path__, prefix="psfmatch."):
        if info.name not in _EXCLUDED:
            names.append(info.name)
    return sorted(names)


def _doctests(name: str) -> list[doctest.DocTest]:
    module = importlib.import_module(name)
    return [t for t in doctest.DocTestFinder().find(module, name) if t.examples]


_MODULES = _moduleNames()
#: The modules whose docstrings have examples (found when the tests are collected).
_WITH_EXAMPLES = [name for name in _MODULES if _doctests(name)]


def testExamplesAreFound() -> None:
    """The search finds the examples it should (the tasks' modules among them)."""
    assert {"psfmatch.make_kernel", "psfmatch.decorrelate", "psfmatch.task"} <= set(_WITH_EXAMPLES)


@pytest.mark.parametrize("name", _WITH_EXAMPLES)
def testDocstringExamplesRun(name: str) -> None:
    """Every example of the module's docstrings gives the output it shows."""
    tests = _doctests(name)
    runner = doctest.DocTestRunner(
        optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False
    )
    failures: list[str] = []
    for test in tests:
        out: list[str] = []
        result = runner.run(test, out=out.append)
        if result.failed:
            failures.append("".join(out))
    assert not failures, "\n".join(failures)


def testNoExampleIsSkipped() -> None:
    """No docstring example of the package carries ``+SKIP`` (they were all skipped once)."""
    skipped = []
    for name in _MODULES:
        for test in _doctests(name):
            for example in test.examples:
                if example.options.get(doctest.SKIP):
                    skipped.append(f"{test.name}: {example.source.strip()}")
    assert not skipped, "skipped docstring examples:\n" + "\n".join(skipped)


def testTheTasksHaveExamples() -> None:
    """The tasks' class docstrings each have an example that runs (above)."""
    tasks = [
        "AlardLuptonSubtractTask",
        "ImagePsfMatchTask",
        "MakeKernelTask",
        "ModelPsfMatchTask",
        "DecorrelateALKernelTask",
        "DetectAndMeasureTask",
        "SnapPsfMatchConfig",
    ]
    missing = []
    for name in tasks:
        obj = getattr(psfmatch, name)
        examples = doctest.DocTestParser().get_examples(obj.__doc__ or "")
        if not examples:
            missing.append(name)
    assert not missing, f"no docstring example: {missing}"
