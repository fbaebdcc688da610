# SPDX-License-Identifier: BSD-3-Clause
"""Tests of what importing psfmatch imports: ``import psfmatch`` only the compiled core, the
version and the exceptions (each public name's module on first use), and ``psfmatch
subtract`` nothing that only plots, batches or reads NDData need."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import psfmatch
from helpers import simulatedFitsPair

#: Modules a subtraction never needs: optional dependencies, and the parts of astropy that only
#: NDData inputs use (astropy.nddata brings astropy.wcs and astropy.coordinates).
_NEVER_FOR_SUBTRACT = [
    "matplotlib",
    "dask",
    "distributed",
    "tqdm",
    "astropy.nddata",
    "astropy.wcs",
    "astropy.coordinates",
]

#: What ``import psfmatch`` no longer imports: the libraries behind the lazy names (it took
#: about a second; these are most of it).
_NOT_ON_IMPORT = [
    *_NEVER_FOR_SUBTRACT,
    "astropy.io.fits",
    "astropy.table",
    "astropy.stats",
    "scipy",
    "sep",
    "lsst.pex.config",
    "psfmatch.api",
    "psfmatch.io",
]


def _modulesAfter(code: str) -> set[str]:
    """The modules a fresh interpreter has imported after running ``code``."""
    report = "import json, sys\nprint(json.dumps(sorted(sys.modules)))\n"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(Path(psfmatch.__file__).parents[1]), env.get("PYTHONPATH", "")]
    )
    done = subprocess.run(
        [sys.executable, "-c", code + "\n" + report],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return set(json.loads(done.stdout.strip().splitlines()[-1]))


def test_import_psfmatch_imports_no_heavy_library():
    loaded = _modulesAfter("import psfmatch")
    assert not [name for name in _NOT_ON_IMPORT if name in loaded]


def test_the_command_line_subtract_imports_only_what_it_needs(tmp_path):
    pair = simulatedFitsPair(tmp_path, (192, 192), nStars=60, seed=3)
    argv = [
        "subtract",
        "-q",
        "--science",
        str(pair["science"]),
        "--template",
        str(pair["template"]),
        "--output",
        str(tmp_path / "difference.fits"),
    ]
    loaded = _modulesAfter(
        f"from psfmatch.cli import main\nassert main({argv!r}) == 0, 'subtract failed'"
    )
    assert (tmp_path / "difference.fits").is_file()
    assert not [name for name in _NEVER_FOR_SUBTRACT if name in loaded]


def test_every_public_name_is_there():
    for name in psfmatch.__all__:
        assert getattr(psfmatch, name) is not None, name
    assert set(psfmatch.__all__) <= set(dir(psfmatch))
    namespace: dict = {}
    exec("from psfmatch import *", namespace)
    assert set(psfmatch.__all__) <= set(namespace)
    assert psfmatch.subtract is psfmatch.api.subtract
    assert psfmatch.io.readImage is not None


def test_unknown_names_are_attribute_errors():
    with pytest.raises(AttributeError, match="module 'psfmatch' has no attribute 'nothing'"):
        psfmatch.nothing  # noqa: B018
    assert not hasattr(psfmatch, "nothing")


def test_lazy_names_are_the_names_type_checkers_see():
    # The TYPE_CHECKING imports of __init__.py are what mypy and editors see; _LAZY and
    # _SUBPACKAGES are what __getattr__ imports: both must name the same module for each name,
    # and together with the eager imports cover __all__.
    tree = ast.parse(Path(psfmatch.__file__).read_text())
    (block,) = [
        node
        for node in tree.body
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name)
        if node.test.id == "TYPE_CHECKING"
    ]
    typed: dict[str, str] = {}
    subpackages: set[str] = set()
    for node in block.body:
        assert isinstance(node, ast.ImportFrom) and node.level == 1
        for alias in node.names:
            if node.module is None:
                subpackages.add(alias.name)
            else:
                typed[alias.name] = node.module
    assert typed == psfmatch._LAZY
    assert subpackages == psfmatch._SUBPACKAGES
    eager = {
        alias.asname or alias.name
        for node in tree.body
        if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module
        for alias in node.names
    }
    assert set(psfmatch.__all__) == (eager - {"__version__"}) | set(typed) | subpackages


def test_the_command_line_starts_without_the_pipeline():
    # Building the parser (every sub-command's help text) needs no image code: `psfmatch
    # --help` and a usage error answer at once, and `psfmatch subtract` pays only for what the
    # subtraction imports. psfmatch.simulate.pair (the renderer, with scipy.special and the
    # task) came in through the demo's help text until the simulate package became lazy.
    loaded = _modulesAfter("from psfmatch.cli import main")
    heavy = ["psfmatch.simulate.pair", "psfmatch.task", "scipy.special", "sep", "psfmatch.api"]
    assert not [name for name in heavy if name in loaded]


def test_simulate_lazy_names_are_the_names_type_checkers_see():
    import psfmatch.simulate as simulate

    tree = ast.parse(Path(simulate.__file__).read_text())
    (block,) = [
        node
        for node in tree.body
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name)
        if node.test.id == "TYPE_CHECKING"
    ]
    typed = {}
    for node in block.body:
        assert isinstance(node, ast.ImportFrom) and node.module is not None
        package = "psfmatch" if node.level == 2 else "psfmatch.simulate"
        for alias in node.names:
            typed[alias.name] = f"{package}.{node.module}"
    assert typed == simulate._LAZY
    assert set(simulate.__all__) == set(typed)
    for name in simulate.__all__:
        assert getattr(simulate, name) is not None, name
