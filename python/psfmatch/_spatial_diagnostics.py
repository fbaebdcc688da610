# SPDX-License-Identifier: BSD-3-Clause
"""What a solved spatial model says about itself (docs/algorithm.md §6.1): the kernel sum at
the centre, the condition number and what a non-positive one means (§5.8), the candidates
used and rejected, whether the stars constrain the spatial terms, the orders used, and the
residual metrics (docs/decisions.md D4), recorded in the task's metadata and log.

`SpatialDiagnostics` is a base class of `psfmatch.psf_match.PsfMatchTask`, which calls
``_diagnostic`` after each spatial fit; it uses the task's ``kConfig``, ``metadata`` and
``log`` and the orders the fit planned (``_spatialOrders``, ``_nSpatialStars``).
"""

from __future__ import annotations

__all__ = ["SpatialDiagnostics"]

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from . import _core
from ._spatial_orders import SpatialOrders, unknownsOf
from .config import PsfMatchConfig, makeKernelControl
from .spatial import isConstantFirstTerm

_GOOD = _core.KernelCandidate.GOOD
_BAD = _core.KernelCandidate.BAD

_METRIC_STATISTICS: dict[str, Callable[[list[float]], Any]] = {
    "MEAN": np.mean,
    "MEDIAN": np.median,
    "STDEV": np.std,
}


class SpatialDiagnostics:
    """The spatial fit's diagnostics, for `PsfMatchTask` (see the module docstring)."""

    kConfig: PsfMatchConfig
    metadata: Any
    log: Any

    def _diagnostic(
        self, kernelCellSet: Any, spatialSolution: Any, spatialKernel: Any, spatialBg: Any
    ) -> None:
        """Record the quality of the spatial fit in the metadata and the log (§6.1)."""
        kConfig = self.kConfig
        bbox = kernelCellSet.getBBox()
        xCen = 0.5 * (bbox.getMinX() + bbox.getMaxX())
        yCen = 0.5 * (bbox.getMinY() + bbox.getMaxY())
        kSum = float(spatialKernel.getSum(xCen, yCen))
        self.metadata["spatialKernelSum"] = kSum
        self.log.info("Final spatial kernel sum %.3f", kSum)

        conditionType = getattr(_core.ConditionNumberType, kConfig.conditionNumberType)
        conditionNum = float(spatialSolution.getConditionNumber(conditionType))
        self.metadata["spatialConditionNum"] = conditionNum
        self.log.info("Spatial model condition number %.3e", conditionNum)
        orders: SpatialOrders | None = getattr(self, "_spatialOrders", None)
        nStars = int(getattr(self, "_nSpatialStars", 0))
        self._recordOrders(orders)
        if conditionNum < 0.0 or not math.isfinite(conditionNum):
            # A normal matrix is positive semi-definite: a negative eigenvalue ratio means its
            # smallest eigenvalue is zero up to rounding, i.e. some spatial term is fixed by no
            # star (docs/algorithm.md §5.8).
            self.log.warning(
                "The spatial normal equations are singular or indefinite (eigenvalue condition "
                "number %.3e: the smallest eigenvalue is not positive): %d stars cannot "
                "constrain its %d unknowns (kernel order %d with %d terms, background order "
                "%d); the minimum-norm solution is used. Lower the spatial orders or give "
                "more kernel stars",
                conditionNum,
                nStars,
                unknownsOf(spatialKernel, spatialBg, isConstantFirstTerm(kConfig)),
                orders.kernel if orders else int(kConfig.spatialKernelOrder),
                int(spatialKernel.getNSpatialParameters()),
                orders.background if orders else int(kConfig.spatialBgOrder),
            )
        if conditionNum > kConfig.maxSpatialConditionNumber:
            self.log.warning(
                "Spatial solution exceeds max condition number (%.3e > %.3e)",
                conditionNum,
                kConfig.maxSpatialConditionNumber,
            )

        candidates = kernelCellSet.getAllCandidates(ignoreBad=False)
        nGood = sum(1 for c in candidates if c.getStatus() == _GOOD)
        nBad = sum(1 for c in candidates if c.getStatus() == _BAD)
        nTot = len(candidates)
        self.metadata["nCandidatesTotal"] = nTot
        self.metadata["nCandidatesGood"] = nGood
        self.metadata["nCandidatesBad"] = nBad
        if nBad > 2 * nGood:
            self.log.warning(
                "Many more candidates rejected than accepted; %d total, %d rejected, %d used",
                nTot,
                nBad,
                nGood,
            )
        else:
            self.log.info("%d candidates total, %d rejected, %d used", nTot, nBad, nGood)

        nKernelTerms = spatialKernel.getNSpatialParameters() or 1
        bgParams = np.asarray(spatialBg.getParameters())
        nBgTerms = 0 if (bgParams.size == 1 and bgParams[0] == 0.0) else int(bgParams.size)
        explicitNote = ""
        if orders is not None and not (orders.kernelAdaptive and orders.backgroundAdaptive):
            explicitNote = (
                f" (set explicitly, so kept; spatial condition number {conditionNum:.3e})"
            )
        self.metadata["spatialKernelConstraint"] = self._judgeConstraint(
            "Spatial kernel model",
            nGood,
            nKernelTerms,
            "spatialKernelOrder",
            explicitNote if orders is not None and not orders.kernelAdaptive else "",
        )
        if nBgTerms > 0:
            self.metadata["spatialBackgroundConstraint"] = self._judgeConstraint(
                "Spatial background model",
                nGood,
                nBgTerms,
                "spatialBgOrder",
                explicitNote if orders is not None and not orders.backgroundAdaptive else "",
            )
        self._recordMetrics(kernelCellSet, spatialKernel, spatialBg)

    def _recordOrders(self, orders: SpatialOrders | None) -> None:
        """Record the spatial orders used (§5.8) and say once why they were lowered."""
        if orders is None:
            return
        self.metadata["spatialKernelOrderUsed"] = int(orders.kernel)
        self.metadata["spatialBgOrderUsed"] = int(orders.background)
        self.metadata["spatialOrderReason"] = orders.reason if orders.lowered else ""
        if orders.lowered:
            self.log.info(
                "Spatial orders lowered from kernel %d, background %d to kernel %d, "
                "background %d: %s (docs/algorithm.md §5.8; set them to other values, or "
                "lowerSpatialOrders=False, to keep them)",
                orders.configuredKernel,
                orders.configuredBackground,
                orders.kernel,
                orders.background,
                orders.reason,
            )

    def _judgeConstraint(
        self, what: str, nGood: int, nTerms: int, orderField: str, note: str = ""
    ) -> str:
        """Log whether ``nGood`` candidates constrain ``nTerms`` spatial terms; return the word."""
        if nGood < nTerms:
            self.log.warning(
                "%s underconstrained; %d candidates, %d terms%s. Consider lowering the "
                "spatial order (%s).",
                what,
                nGood,
                nTerms,
                note,
                orderField,
            )
            return "under"
        if nGood <= 2 * nTerms:
            self.log.warning(
                "%s poorly constrained; %d candidates, %d terms%s. Consider lowering the "
                "spatial order (%s).",
                what,
                nGood,
                nTerms,
                note,
                orderField,
            )
            return "poorly"
        self.log.info("%s appears well constrained; %d candidates, %d terms", what, nGood, nTerms)
        return "well"

    def _recordMetrics(self, kernelCellSet: Any, spatialKernel: Any, spatialBg: Any) -> None:
        """Set ``metric_MEAN``, ``metric_MEDIAN``, ``metric_STDEV`` (docs/decisions.md D4)."""
        good = [
            cand
            for cand in kernelCellSet.getAllCandidates(ignoreBad=True)
            if cand.getStatus() == _GOOD and cand.isInitialized()
        ]
        # One C++ call: each candidate's LOCAL (its own kernel) and SPATIAL (the spatial model at
        # its centre) residual (mean, rms), on kConfig.nThreads threads with the GIL released;
        # NaN where the statistics could not be formed, and the non-finite are left out below.
        # Pairs the fit already computed from the same kernel and background (the last
        # single-kernel fit; the last assessment, if the fit ended on one) are taken from the
        # candidates, bit for bit what a recomputation gives; only the others are computed.
        residuals = np.asarray(
            _core.candidateResiduals(
                good, spatialKernel, spatialBg, makeKernelControl(self.kConfig)
            )
        ).reshape(len(good), 4)
        values = {
            key: residuals[:, column].tolist()
            for column, key in enumerate(
                (
                    "LOCAL_residualMean",
                    "LOCAL_residualStd",
                    "SPATIAL_residualMean",
                    "SPATIAL_residualStd",
                )
            )
        }
        for statName, func in _METRIC_STATISTICS.items():
            for key, vals in values.items():
                finite = [v for v in vals if math.isfinite(v)]
                self.metadata[f"metric_{statName}.{key}"] = (
                    float(func(finite)) if finite else math.nan
                )
