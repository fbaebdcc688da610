# SPDX-License-Identifier: BSD-3-Clause
"""The spatial model: cells of candidates, the visitors, and spatially varying kernels.

The numerics live in the compiled core (docs/algorithm.md §1.3, §1.4, §4, §5); this module gives
them the reference's constructor signatures, taking a `PsfMatchConfig` wherever the core takes
its option struct, and adds the whole-image convolution with a spatially varying kernel.

Visitors
--------
A visitor is anything with ``processCandidate(candidate)`` (and optionally ``reset()``):
the classes here, a subclass of `CandidateVisitor`, or any Python object with that method.
`SpatialCellSet.visitCandidates` calls ``reset()`` once, then visits the non-BAD candidates of
each cell in rating order, at most ``nMaxPerCell`` per cell.
"""

from __future__ import annotations

from typing import Any

from . import _core
from .candidate import toControl
from .config import PsfMatchConfig
from .errors import InvalidInputError

__all__ = [
    "AssessSpatialKernelVisitor",
    "BuildSingleKernelVisitor",
    "BuildSpatialKernelVisitor",
    "CandidateVisitor",
    "KernelPca",
    "KernelPcaVisitor",
    "KernelSumVisitor",
    "LinearCombinationKernel",
    "SpatialBackground",
    "SpatialCell",
    "SpatialCellSet",
    "SpatialFunction",
    "SpatialKernelSolution",
    "SpatialModelType",
    "isConstantFirstTerm",
]

CandidateVisitor = _core.CandidateVisitor
SpatialCell = _core.SpatialCell
SpatialCellSet = _core.SpatialCellSet
SpatialFunction = _core.SpatialFunction
SpatialModelType = _core.SpatialModelType
LinearCombinationKernel = _core.LinearCombinationKernel
SpatialBackground = _core.SpatialBackground
SpatialKernelSolution = _core.SpatialKernelSolution
KernelPca = _core.KernelPca
KernelPcaVisitor = _core.KernelPcaVisitor


def isConstantFirstTerm(config: PsfMatchConfig) -> bool:
    """Whether the first basis coefficient is spatially constant (docs/algorithm.md §5.2).

    True for an Alard–Lupton basis and for the PCA path: both have a first kernel that carries
    all the flux, so a constant first coefficient means a spatially constant photometric scale.
    """
    return config.kernelBasisSet == "alard-lupton" or bool(config.usePcaForSpatialKernel)


class BuildSingleKernelVisitor(_core.BuildSingleKernelVisitor):
    """Fit each visited candidate's own kernel and clip it on its residuals (§3.6).

    Parameters
    ----------
    basisList : `list` of `FixedKernel`
        The kernel basis.
    config : `PsfMatchConfig` or ``KernelControl``
        Clipping thresholds and fit settings.
    hMat : `numpy.ndarray`, optional
        Regularization matrix (delta-function bases).

    Notes
    -----
    ``setSkipBuilt(True)`` (the default) leaves candidates that already have a solution alone;
    ``getNRejected`` and ``getNProcessed`` count the last visit.
    """

    def __init__(self, basisList: Any, config: Any, hMat: Any = None) -> None:
        super().__init__(list(basisList), toControl(config), hMat)


class KernelSumVisitor(_core.KernelSumVisitor):
    """Clipped statistics of the candidates' kernel sums and rejection of outliers (§4).

    Parameters
    ----------
    config : `PsfMatchConfig` or ``KernelControl``
        Gives ``kernelSumClipping`` and ``maxKsumSigma``.

    Notes
    -----
    Its accumulators survive the ``reset()`` at the start of a visit: clear them with
    ``resetKernelSum()``. ``setMode(KernelSumVisitor.AGGREGATE)`` collects the ORIG kernel
    sums; ``processKsumDistribution()`` computes their clipped mean and standard deviation;
    ``setMode(KernelSumVisitor.REJECT)`` then marks BAD every candidate whose sum lies more
    than ``maxKsumSigma`` standard deviations from the mean.
    """

    def __init__(self, config: Any) -> None:
        super().__init__(toControl(config))


class BuildSpatialKernelVisitor(_core.BuildSpatialKernelVisitor):
    """Accumulate every visited candidate into one spatial fit (§5.3), then solve it (§5.4).

    Parameters
    ----------
    basisList : `list` of `FixedKernel`
        The basis the candidates were fitted with (their RECENT solution).
    regionBBox : `Box2I`
        The region of the spatial model (the cell set's box); Chebyshev functions are scaled
        to it.
    config : `PsfMatchConfig`
        Spatial orders, model type, background fitting.
    constantFirstTerm : `bool`, optional
        Hold the first coefficient constant over the image. By default from the config (see
        `isConstantFirstTerm`).

    Notes
    -----
    After the visit, ``solveLinearEquation()``, then ``getSolutionPair()`` gives
    ``(spatialKernel, spatialBackground)`` and ``getKernelSolution()`` the solution with its
    condition number.
    """

    def __init__(
        self,
        basisList: Any,
        regionBBox: Any,
        config: Any,
        constantFirstTerm: bool | None = None,
    ) -> None:
        if constantFirstTerm is None:
            if not isinstance(config, PsfMatchConfig):
                raise InvalidInputError(
                    "constantFirstTerm must be given when config is a KernelControl"
                )
            constantFirstTerm = isConstantFirstTerm(config)
        super().__init__(list(basisList), regionBBox, toControl(config), bool(constantFirstTerm))


class AssessSpatialKernelVisitor(_core.AssessSpatialKernelVisitor):
    """Clip the candidates the spatial model fits badly (§5.5).

    Parameters
    ----------
    spatialKernel : `LinearCombinationKernel`
    spatialBackground : `SpatialBackground`
    config : `PsfMatchConfig` or ``KernelControl``
        Gives ``spatialKernelClipping`` and the residual thresholds.
    """

    def __init__(self, spatialKernel: Any, spatialBackground: Any, config: Any) -> None:
        super().__init__(spatialKernel, spatialBackground, toControl(config))
