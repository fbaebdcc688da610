# SPDX-License-Identifier: BSD-3-Clause
"""psfmatch: Alard–Lupton PSF matching and image subtraction.

Conventions used throughout: ``x`` is the column and ``y`` the row; arrays are indexed
``[y, x]`` and shapes are ``(ny, nx)``; positions are 0-based with the centre of a pixel at its
integer coordinates, in *parent* coordinates (array index plus the image origin ``xy0``).
Convolution is true convolution (the kernel is flipped), as in ``scipy.signal.convolve``.
"""

from __future__ import annotations

try:
    from . import _core  # noqa: F401
except ImportError as err:  # pragma: no cover - only on a broken install
    raise ImportError(
        "psfmatch's compiled core (psfmatch._core) could not be imported. Install the package "
        "with `pip install .` from a source checkout (it needs a C++17 compiler); importing "
        f"from the source tree without building does not work. Original error: {err}"
    ) from err

import importlib
from typing import TYPE_CHECKING, Any

from ._core import (
    Box2I,
    ConditionNumberType,
    FixedKernel,
    KernelSolution,
    RegularizedKernelSolution,
    SeparableTerm,
    SolvedBy,
    StaticKernelSolution,
    linearCombination,
)
from ._version import __version__ as __version__
from .errors import (
    InputFileNotFoundError,
    InsufficientKernelSourcesError,
    InvalidInputError,
    MissingDependencyError,
    NoKernelCandidatesError,
    OriginMismatchError,
    OutputExistsError,
    PoorSubtractionError,
    PsfComputeShapeError,
    PsfMatchError,
    PsfMatchIOError,
    PsfMatchMemoryError,
    SingularMatrixError,
    SpatialOrderError,
    TemplateCoverageError,
)

if TYPE_CHECKING:
    # What the names below are, for type checkers and editors; at run time `__getattr__`
    # imports each on first use.
    from . import batch, io, plot, progress, simulate
    from .alard_lupton import (
        AlardLuptonPreconvolveSubtractConfig,
        AlardLuptonPreconvolveSubtractTask,
        AlardLuptonSubtractConfig,
        AlardLuptonSubtractTask,
    )
    from .api import SubtractionResult, analyzeTemplate, subtract
    from .basis import (
        generateAlardLuptonBasisList,
        makeAlardLuptonBasisList,
        makeDeltaFunctionBasisList,
        makeKernelBasisList,
        makeRegularizationMatrix,
        renormalizeKernelList,
    )
    from .candidate import ImageStatistics, KernelCandidate
    from .config import PsfMatchConfig, PsfMatchConfigAL, PsfMatchConfigDF, makeKernelControl
    from .convolution import convolve
    from .decorrelate import DecorrelateALKernelConfig, DecorrelateALKernelTask
    from .detect_and_measure import DetectAndMeasureConfig, DetectAndMeasureTask
    from .image import Mask, MaskedImage
    from .image_psf_match import ImagePsfMatchConfig, ImagePsfMatchTask, TemplateAnalysis
    from .make_kernel import MakeKernelConfig, MakeKernelTask
    from .model_psf_match import ModelPsfMatchConfig, ModelPsfMatchTask
    from .presets import (
        SnapPsfMatchConfig,
        SnapPsfMatchConfigAL,
        SnapPsfMatchConfigDF,
        makeSnapConfig,
    )
    from .psf import DoubleGaussianPsf, GaussianPsf, ImagePsf, Psf, Quadrupole, VaryingPsf
    from .psf_match import PsfMatchTask
    from .selection import KernelSourceSelectionConfig
    from .spatial import (
        AssessSpatialKernelVisitor,
        BuildSingleKernelVisitor,
        BuildSpatialKernelVisitor,
        CandidateVisitor,
        KernelPca,
        KernelPcaVisitor,
        KernelSumVisitor,
        LinearCombinationKernel,
        SpatialBackground,
        SpatialCell,
        SpatialCellSet,
        SpatialFunction,
        SpatialKernelSolution,
        SpatialModelType,
    )
    from .task import Struct, Task, TaskMetadata

_SUBPACKAGES = frozenset({"batch", "io", "plot", "progress", "simulate"})
"""Subpackages of the public API, imported on first use like the names of `_LAZY`."""

_LAZY = {
    "AlardLuptonPreconvolveSubtractConfig": "alard_lupton",
    "AlardLuptonPreconvolveSubtractTask": "alard_lupton",
    "AlardLuptonSubtractConfig": "alard_lupton",
    "AlardLuptonSubtractTask": "alard_lupton",
    "AssessSpatialKernelVisitor": "spatial",
    "BuildSingleKernelVisitor": "spatial",
    "BuildSpatialKernelVisitor": "spatial",
    "CandidateVisitor": "spatial",
    "DecorrelateALKernelConfig": "decorrelate",
    "DecorrelateALKernelTask": "decorrelate",
    "DetectAndMeasureConfig": "detect_and_measure",
    "DetectAndMeasureTask": "detect_and_measure",
    "DoubleGaussianPsf": "psf",
    "GaussianPsf": "psf",
    "ImagePsf": "psf",
    "ImagePsfMatchConfig": "image_psf_match",
    "ImagePsfMatchTask": "image_psf_match",
    "ImageStatistics": "candidate",
    "KernelCandidate": "candidate",
    "KernelPca": "spatial",
    "KernelPcaVisitor": "spatial",
    "KernelSourceSelectionConfig": "selection",
    "KernelSumVisitor": "spatial",
    "LinearCombinationKernel": "spatial",
    "MakeKernelConfig": "make_kernel",
    "MakeKernelTask": "make_kernel",
    "Mask": "image",
    "MaskedImage": "image",
    "ModelPsfMatchConfig": "model_psf_match",
    "ModelPsfMatchTask": "model_psf_match",
    "Psf": "psf",
    "PsfMatchConfig": "config",
    "PsfMatchConfigAL": "config",
    "PsfMatchConfigDF": "config",
    "PsfMatchTask": "psf_match",
    "Quadrupole": "psf",
    "SnapPsfMatchConfig": "presets",
    "SnapPsfMatchConfigAL": "presets",
    "SnapPsfMatchConfigDF": "presets",
    "SpatialBackground": "spatial",
    "SpatialCell": "spatial",
    "SpatialCellSet": "spatial",
    "SpatialFunction": "spatial",
    "SpatialKernelSolution": "spatial",
    "SpatialModelType": "spatial",
    "Struct": "task",
    "SubtractionResult": "api",
    "Task": "task",
    "TaskMetadata": "task",
    "TemplateAnalysis": "image_psf_match",
    "VaryingPsf": "psf",
    "analyzeTemplate": "api",
    "convolve": "convolution",
    "generateAlardLuptonBasisList": "basis",
    "makeAlardLuptonBasisList": "basis",
    "makeDeltaFunctionBasisList": "basis",
    "makeKernelBasisList": "basis",
    "makeKernelControl": "config",
    "makeRegularizationMatrix": "basis",
    "makeSnapConfig": "presets",
    "renormalizeKernelList": "basis",
    "subtract": "api",
}
"""The module (relative to the package) that defines each lazily imported public name.

Importing them all took about a second (astropy.nddata, astropy.table, scipy, lsst.pex.config,
...), most of it for names a given program never uses: ``import psfmatch`` imports only the
compiled core, the version and the exceptions, and each name's module on first use."""


def __getattr__(name: str) -> Any:
    if name in _SUBPACKAGES:
        return importlib.import_module(f".{name}", __name__)
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later look-ups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


__all__ = [
    "AlardLuptonPreconvolveSubtractConfig",
    "AlardLuptonPreconvolveSubtractTask",
    "AlardLuptonSubtractConfig",
    "AlardLuptonSubtractTask",
    "AssessSpatialKernelVisitor",
    "Box2I",
    "BuildSingleKernelVisitor",
    "BuildSpatialKernelVisitor",
    "CandidateVisitor",
    "ConditionNumberType",
    "DecorrelateALKernelConfig",
    "DecorrelateALKernelTask",
    "DetectAndMeasureConfig",
    "DetectAndMeasureTask",
    "DoubleGaussianPsf",
    "FixedKernel",
    "GaussianPsf",
    "ImagePsf",
    "ImagePsfMatchConfig",
    "ImagePsfMatchTask",
    "ImageStatistics",
    "InputFileNotFoundError",
    "InsufficientKernelSourcesError",
    "InvalidInputError",
    "KernelCandidate",
    "KernelPca",
    "KernelPcaVisitor",
    "KernelSolution",
    "KernelSourceSelectionConfig",
    "KernelSumVisitor",
    "LinearCombinationKernel",
    "MakeKernelConfig",
    "MakeKernelTask",
    "Mask",
    "MaskedImage",
    "MissingDependencyError",
    "ModelPsfMatchConfig",
    "ModelPsfMatchTask",
    "NoKernelCandidatesError",
    "OriginMismatchError",
    "PoorSubtractionError",
    "OutputExistsError",
    "Psf",
    "PsfComputeShapeError",
    "PsfMatchConfig",
    "PsfMatchConfigAL",
    "PsfMatchConfigDF",
    "PsfMatchError",
    "PsfMatchIOError",
    "PsfMatchMemoryError",
    "PsfMatchTask",
    "Quadrupole",
    "RegularizedKernelSolution",
    "SeparableTerm",
    "SingularMatrixError",
    "SnapPsfMatchConfig",
    "SnapPsfMatchConfigAL",
    "SnapPsfMatchConfigDF",
    "SolvedBy",
    "SpatialBackground",
    "SpatialCell",
    "SpatialCellSet",
    "SpatialFunction",
    "SpatialKernelSolution",
    "SpatialModelType",
    "SpatialOrderError",
    "StaticKernelSolution",
    "Struct",
    "SubtractionResult",
    "Task",
    "TaskMetadata",
    "TemplateAnalysis",
    "TemplateCoverageError",
    "VaryingPsf",
    "analyzeTemplate",
    "batch",
    "convolve",
    "generateAlardLuptonBasisList",
    "io",
    "linearCombination",
    "makeAlardLuptonBasisList",
    "makeDeltaFunctionBasisList",
    "makeKernelBasisList",
    "makeKernelControl",
    "makeRegularizationMatrix",
    "makeSnapConfig",
    "plot",
    "progress",
    "renormalizeKernelList",
    "simulate",
    "subtract",
]
