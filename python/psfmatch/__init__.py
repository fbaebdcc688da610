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

from . import batch, io, plot, progress, simulate
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
from .errors import (
    InputFileNotFoundError,
    InsufficientKernelSourcesError,
    InvalidInputError,
    MissingDependencyError,
    NoKernelCandidatesError,
    OriginMismatchError,
    OutputExistsError,
    PsfComputeShapeError,
    PsfMatchError,
    PsfMatchIOError,
    SingularMatrixError,
    TemplateCoverageError,
)
from .image import Mask, MaskedImage
from .image_psf_match import ImagePsfMatchConfig, ImagePsfMatchTask, TemplateAnalysis
from .make_kernel import MakeKernelConfig, MakeKernelTask
from .model_psf_match import ModelPsfMatchConfig, ModelPsfMatchTask
from .presets import SnapPsfMatchConfig, SnapPsfMatchConfigAL, SnapPsfMatchConfigDF, makeSnapConfig
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
    "OutputExistsError",
    "Psf",
    "PsfComputeShapeError",
    "PsfMatchConfig",
    "PsfMatchConfigAL",
    "PsfMatchConfigDF",
    "PsfMatchError",
    "PsfMatchIOError",
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
