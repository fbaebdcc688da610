# SPDX-License-Identifier: BSD-3-Clause
"""The exception hierarchy of psfmatch.errors, its top-level export, and the core raising it."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

import psfmatch as pm
import psfmatch.errors
from psfmatch import _core

# psfmatch.errors' docstring (and docs/errors.md's table): each class, its psfmatch base and
# the built-in it must also be, so that ``except ValueError`` etc. keep working.
HIERARCHY = [
    ("PsfMatchError", RuntimeError, RuntimeError),
    ("InvalidInputError", "PsfMatchError", ValueError),
    ("SingularMatrixError", "PsfMatchError", ArithmeticError),
    ("NoKernelCandidatesError", "PsfMatchError", RuntimeError),
    ("InsufficientKernelSourcesError", "NoKernelCandidatesError", RuntimeError),
    ("PsfMatchIOError", "PsfMatchError", OSError),
    ("InputFileNotFoundError", "PsfMatchIOError", FileNotFoundError),
    ("OutputExistsError", "PsfMatchIOError", FileExistsError),
    ("PsfComputeShapeError", "PsfMatchError", RuntimeError),
    ("MissingDependencyError", "PsfMatchError", ImportError),
    ("TemplateCoverageError", "InvalidInputError", ValueError),
    ("OriginMismatchError", "InvalidInputError", ValueError),
    ("PoorSubtractionError", "PsfMatchError", RuntimeError),
    ("SpatialOrderError", "InvalidInputError", ValueError),
    ("PsfMatchMemoryError", "PsfMatchError", MemoryError),
]


@pytest.mark.parametrize("name, base, builtin", HIERARCHY)
def test_hierarchy_and_top_level_export(name: str, base: object, builtin: type) -> None:
    cls = getattr(psfmatch.errors, name)
    # The top-level name is the same class, not a copy, and is public.
    assert getattr(pm, name) is cls
    assert name in pm.__all__
    assert name in psfmatch.errors.__all__
    baseClass = getattr(psfmatch.errors, base) if isinstance(base, str) else base
    assert issubclass(cls, baseClass)
    assert issubclass(cls, builtin)
    assert issubclass(cls, pm.PsfMatchError)


def test_every_error_class_is_listed() -> None:
    # A new exception class must be added to HIERARCHY (and so to this check) too.
    classes = {
        name
        for name, obj in vars(psfmatch.errors).items()
        if isinstance(obj, type) and issubclass(obj, Exception)
    }
    assert classes == {name for name, _, _ in HIERARCHY}


def test_errors_with_extra_data_keep_it() -> None:
    err = pm.InsufficientKernelSourcesError(3, 10, "too few stars")
    assert (err.nSources, err.nRequired) == (3, 10)
    assert str(err) == "found 3 usable kernel sources but 10 are required: too few stars"
    with pytest.raises(pm.NoKernelCandidatesError, match="3 usable kernel sources"):
        raise err
    shapeErr = pickle.loads(pickle.dumps(pm.PsfComputeShapeError("no PSF", (1.0, 2.5))))
    assert shapeErr.position == (1.0, 2.5)
    assert "at x, y = 1.00, 2.50" in str(shapeErr)
    coverage = pickle.loads(pickle.dumps(pm.TemplateCoverageError("covers 5%", 0.05)))
    assert coverage.coveredFraction == 0.05 and str(coverage) == "covers 5%"
    origins = pickle.loads(pickle.dumps(pm.OriginMismatchError("disagree", (15, 15), (0.0, 0.5))))
    assert (origins.originOffset, origins.starOffset) == ((15, 15), (0.0, 0.5))


def test_core_raises_the_python_classes() -> None:
    # The compiled core's exceptions arrive as psfmatch.errors classes (bind_errors.cc).
    nanMatrix = np.array([[1.0, np.nan], [np.nan, 1.0]])
    with pytest.raises(pm.SingularMatrixError, match="NaN or inf") as info:
        _core.solveNormalEquations(nanMatrix, np.ones(2))
    assert isinstance(info.value, ArithmeticError)
    with pytest.raises(pm.InvalidInputError, match="sizes do not match") as info2:
        _core.solveNormalEquations(np.eye(2), np.ones(3))
    assert isinstance(info2.value, ValueError)
    # A singular but finite system is not an error: the pseudo-inverse solves it
    # (docs/algorithm.md §3.3).
    # Exact arithmetic on a diagonal matrix: x = (2/1, 0).
    solution, solvedBy = _core.solveNormalEquations(np.diag([1.0, 0.0]), np.array([2.0, 0.0]))
    np.testing.assert_array_equal(solution, [2.0, 0.0])
    assert solvedBy == _core.SolvedBy.EIGENVECTOR
