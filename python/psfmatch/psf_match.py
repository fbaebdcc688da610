# SPDX-License-Identifier: BSD-3-Clause
"""PsfMatchTask: the solve loop that turns kernel candidates into a spatial kernel.

The task sequences the visitors of the compiled core (docs/algorithm.md §5.6): fit each candidate's
own kernel and clip it on its residuals, clip outliers in kernel sum (variable stars), optionally
replace the basis by its principal components (§5.7), fit one spatially varying kernel and
background to all candidates, and clip the candidates that model fits badly; repeat until the
spatial model rejects nothing. `PsfMatchTask._diagnostic` then records what it found (§6.1).

Metadata
--------
``spatialKernelSum``
    The kernel sum at the centre of the cell set's box (10^(-0.4 Δzeropoint)).
``spatialConditionNum``
    Condition number of the spatial normal matrix (``conditionNumberType``).
``nCandidatesTotal``, ``nCandidatesGood``, ``nCandidatesBad``
    The candidates of the cell set after the fit, by status.
``spatialKernelOrderUsed``, ``spatialBgOrderUsed``, ``spatialOrderReason``
    The spatial orders the fit used and why they differ from the config's ("" if they do
    not): default orders the stars cannot carry are lowered (docs/algorithm.md §5.8).
``spatialKernelConstraint``, ``spatialBackgroundConstraint``
    ``"well"``, ``"poorly"`` or ``"under"``: how many good candidates constrain the spatial
    kernel and background terms (§6.1).
``ALBasisDegGaussBic``, ``ALBasisBicVotes``, ``ALBasisBicNCandidates``
    With ``useBicForKernelBasis`` (`PsfMatchTask._selectBasisByBic`): the polynomial degrees
    the Bayesian Information Criterion chose, how many candidates voted for them, and how
    many voted at all.
``metric_MEAN``, ``metric_MEDIAN``, ``metric_STDEV``
    The mean, median and population standard deviation (ddof=0) over the GOOD candidates
    (docs/decisions.md D4) of the quality of their difference stamps, each a nested container with
    four keys: ``LOCAL_residualMean`` and
    ``LOCAL_residualStd`` (mean and rms of D/σ with the candidate's own kernel),
    ``SPATIAL_residualMean`` and ``SPATIAL_residualStd`` (the same with the spatial kernel and
    background evaluated at the candidate). For example ``metadata["metric_MEDIAN.SPATIAL_
    residualStd"]`` is the median over candidates of the rms of D/σ under the spatial model;
    a good fit has it near 1. The statistics use the core or the whole stamp as
    ``useCoreStats`` says, and skip masked pixels as ``badMaskPlanes`` says.

Debugging switches (`psfmatch.debug`, module name ``"psfmatch.psf_match"``): ``display``,
``maskTransparency``, ``displayCandidates``, ``displayKernelBasis``, ``displayKernelMosaic``,
``plotKernelSpatialModel``, ``plotKernelCoefficients``, ``showBadCandidates``, and psfmatch's
own ``plotDir`` (where figures are saved when there is no display) and ``maxCandidates`` (rows
of the candidates figure, 12 by default). With ``display`` on, each
figure switch draws the `psfmatch.plot` figure of that name once the spatial fit is done.
"""

from __future__ import annotations

__all__ = ["PsfMatchTask"]

import abc
import itertools
import math
from collections import Counter
from typing import Any, ClassVar

import numpy as np
from lsst.utils.logging import getTraceLogger
from lsst.utils.timer import timeMethod

from . import _core
from . import debug as psfmatchDebug
from ._spatial_diagnostics import SpatialDiagnostics
from ._spatial_orders import (
    SpatialOrders,
    isSingular,
    lowerOrders,
    planForCellSet,
)
from .basis import makeKernelBasisList, makeRegularizationMatrix, renormalizeKernelList
from .config import PsfMatchConfig, PsfMatchConfigAL, PsfMatchConfigDF, makeKernelControl
from .errors import (
    InvalidInputError,
    NoKernelCandidatesError,
    PsfMatchError,
    PsfMatchMemoryError,
)
from .progress import progressBar
from .spatial import (
    AssessSpatialKernelVisitor,
    BuildSingleKernelVisitor,
    BuildSpatialKernelVisitor,
    KernelPca,
    KernelPcaVisitor,
    KernelSumVisitor,
    isConstantFirstTerm,
)
from .task import Struct, Task

_GOOD = _core.KernelCandidate.GOOD
_BAD = _core.KernelCandidate.BAD
_UNKNOWN = _core.KernelCandidate.UNKNOWN
_RECENT = _core.KernelCandidate.RECENT

# Largest spatial system whose eigenvalues are computed to catch a singular fit (§5.8): 600
# unknowns take ~0.1 s (1 s on a loaded 2-core machine); the default 160 take milliseconds.
_MAX_SINGULAR_CHECK_UNKNOWNS = 600


def _kernelConfig(config: Any) -> PsfMatchConfig:
    """The kernel configuration of a task config: ``config.kernel.active``, or the config."""
    kernelField = getattr(config, "kernel", None)
    active = getattr(kernelField, "active", None)
    if isinstance(active, PsfMatchConfig):
        return active
    if isinstance(config, PsfMatchConfig):
        return config
    raise InvalidInputError(
        "PsfMatchTask needs a PsfMatchConfig, or a config whose `kernel` field selects one; "
        f"got {type(config).__name__}"
    )


def _candidateBic(cand: Any, nBasis: int) -> float:
    """Σχ² + k ln n of a candidate's RECENT fit, over its kernel-shrunk difference box."""
    diff = cand.getDifferenceImage(_RECENT)
    kernel = cand.getKernel(_RECENT)
    width, height = kernel.getDimensions()
    cx, cy = kernel.getCtr()
    ny, nx = diff.image.shape
    box = (slice(cy, ny - (height - 1 - cy)), slice(cx, nx - (width - 1 - cx)))
    image = np.asarray(diff.image[box], dtype=np.float64)
    variance = np.asarray(diff.variance[box], dtype=np.float64)
    good = np.isfinite(image) & np.isfinite(variance) & (variance > 0)
    n = int(good.sum())
    if n == 0:
        return math.nan
    chi2 = float(np.sum(image[good] ** 2 / variance[good]))
    return chi2 + nBasis * math.log(n)


def _visitWithProgress(kernelCellSet: Any, visitor: Any, nStarPerCell: int, bar: Any) -> None:
    """``kernelCellSet.visitCandidates(visitor, nStarPerCell, ignoreExceptions=True)``, with
    ``bar`` advanced by each cell's visits as the cell set reports them (its cells may be
    visited on several threads; the callback is never called from two at once)."""
    planned = [len(cell.getCandidates(True)) for cell in kernelCellSet.getCellList()]
    if nStarPerCell > 0:
        planned = [min(n, nStarPerCell) for n in planned]
    bar.total = bar.total + sum(planned)
    kernelCellSet.visitCandidates(visitor, nStarPerCell, ignoreExceptions=True, progress=bar.update)


class PsfMatchTask(SpatialDiagnostics, Task, abc.ABC):
    """Base class for PSF matching: fits a spatially varying matching kernel.

    Derived tasks build a `SpatialCellSet` of `KernelCandidate` objects (`_buildCellSet`) and a
    kernel basis, and call `_solve`. See the module docstring for the metadata it records.

    Parameters
    ----------
    *args, **kwargs
        As for `Task`. The config is a `PsfMatchConfig` (AL or DF), or a config with a field
        ``kernel`` that selects one (``config.kernel.active``).

    Attributes
    ----------
    kConfig : `PsfMatchConfig`
        The kernel configuration in use.
    useRegularization : `bool`
        Whether delta-function kernels are regularized.
    hMat : `numpy.ndarray` or `None`
        The regularization matrix, made at construction when ``useRegularization``.
    """

    ConfigClass: ClassVar[Any] = PsfMatchConfig
    _DefaultName = "psfMatch"
    kConfig: PsfMatchConfig

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.kConfig = _kernelConfig(self.config)
        self.useRegularization = False
        self.hMat: np.ndarray | None = None
        if isinstance(self.kConfig, PsfMatchConfigDF) and self.kConfig.useRegularization:
            self.useRegularization = True
            self.hMat = makeRegularizationMatrix(self.kConfig)

    @abc.abstractmethod
    def _buildCellSet(self, *args: Any, **kwargs: Any) -> Any:
        """Fill a `SpatialCellSet` with kernel candidates; derived tasks implement it."""

    @timeMethod
    def _solve(
        self, kernelCellSet: Any, basisList: list[Any], *, useRegularization: bool = True
    ) -> tuple[Any, Any, Any]:
        """Fit the spatially varying kernel and background (docs/algorithm.md §5.6).

        Parameters
        ----------
        kernelCellSet : `SpatialCellSet`
            The candidates; their statuses are updated (rejected ones become BAD).
        basisList : `list` of `FixedKernel`
            The kernel basis.
        useRegularization : `bool`, optional
            Regularize with ``hMat`` (when the config asks for it); off for a basis that is
            not the config's (its size is not ``hMat``'s).

        Returns
        -------
        spatialSolution : `SpatialKernelSolution`
            The spatial normal system and its solution (``getConditionNumber``).
        spatialKernel : `LinearCombinationKernel`
            K(x, y).
        spatialBackground : `SpatialBackground`
            The differential background b(x, y).

        Raises
        ------
        NoKernelCandidatesError
            If every cell is empty, no kernel sum can be computed, or no candidate is left
            for the spatial fit.
        """
        kConfig = self.kConfig
        constantFirstTerm = isConstantFirstTerm(kConfig)
        # Up front (§5.8): orders the stars cannot carry, and fits too large to solve, are
        # refused (or, for default orders, lowered) before anything is allocated.
        orders, work = planForCellSet(kConfig, kernelCellSet, basisList, constantFirstTerm)
        self._spatialOrders = orders
        try:
            return self._solveLoop(kernelCellSet, basisList, orders, useRegularization)
        except PsfMatchMemoryError:
            raise
        except MemoryError as err:
            raise PsfMatchMemoryError(
                f"out of memory while fitting the kernel ({work}): {err or type(err).__name__}"
            ) from err

    def _orderedControl(self, orders: SpatialOrders) -> Any:
        """The core's option struct with the spatial orders in use."""
        control = makeKernelControl(self.kConfig)
        control.spatialKernelOrder = int(orders.kernel)
        control.spatialBgOrder = int(orders.background)
        return control

    def _solveLoop(
        self,
        kernelCellSet: Any,
        basisList: list[Any],
        orders: SpatialOrders,
        useRegularization: bool,
    ) -> tuple[Any, Any, Any]:
        """The loop of §5.6 with the spatial orders of ``orders`` (lowered as it goes)."""
        kConfig = self.kConfig
        control = makeKernelControl(kConfig)
        nStarPerCell = int(kConfig.nStarPerCell)
        maxSpatialIterations = int(kConfig.maxSpatialIterations)
        usePca = bool(kConfig.usePcaForSpatialKernel)
        constantFirstTerm = isConstantFirstTerm(kConfig)
        regionBBox = kernelCellSet.getBBox()
        traceLog = getTraceLogger(self.log.getChild("_solve"), 1)
        traceLog3 = getTraceLogger(self.log.getChild("_solve"), 3)
        canLower = orders.kernelAdaptive or orders.backgroundAdaptive

        singlekv = BuildSingleKernelVisitor(
            basisList, control, self.hMat if useRegularization else None
        )
        ksv = KernelSumVisitor(control)

        def fitSpatial(spatialBasisList: list[Any]) -> tuple[Any, Any, Any]:
            with self.timer("fitSpatial"):
                while True:
                    spatialkv = BuildSpatialKernelVisitor(
                        spatialBasisList,
                        regionBBox,
                        self._orderedControl(orders),
                        constantFirstTerm,
                    )
                    kernelCellSet.visitCandidates(spatialkv, nStarPerCell)
                    nUsed = spatialkv.getNCandidates()
                    if nUsed < 1:
                        raise NoKernelCandidatesError(
                            "No kernel candidates remain for the spatial fit; lower the spatial "
                            "orders or loosen the candidate clipping"
                        )
                    self._nSpatialStars = nUsed
                    if canLower and lowerOrders(orders, nUsed, None):
                        continue
                    spatialkv.solveLinearEquation()
                    # The eigenvalues cost nt³: checked where that is small next to the fit
                    # (the default basis has nt = 160); a delta-function basis without PCA
                    # (nt in the thousands) relies on the count alone.
                    solution = spatialkv.getKernelSolution()
                    if (
                        canLower
                        and (orders.kernel > 0 or orders.background > 0)
                        and solution.getNt() <= _MAX_SINGULAR_CHECK_UNKNOWNS
                    ):
                        singular, ratio = isSingular(solution)
                        if singular and lowerOrders(orders, nUsed, ratio):
                            continue
                    break
                spatialKernel, spatialBackground = spatialkv.getSolutionPair()
            return spatialkv, spatialKernel, spatialBackground

        nIter = 0
        nRejectedSpatial = 0
        spatialBasisList = basisList
        spatialkv: Any = None
        # The bar counts candidate visits of the single-kernel passes (the costly part);
        # it appears only on a terminal and after a second of work (psfmatch.progress).
        with progressBar(0, desc="psfmatch: fitting kernel candidates", unit="fit") as bar:
            while nIter < maxSpatialIterations:
                # Single-kernel fits until a pass rejects nothing: each pass fits the candidates
                # promoted into the top nStarPerCell of their cell by the previous rejections.
                nRejectedSkf = -1
                while nRejectedSkf != 0:
                    traceLog.debug("Building single kernels...")
                    with self.timer("fitCandidates"):
                        _visitWithProgress(kernelCellSet, singlekv, nStarPerCell, bar)
                    nRejectedSkf = singlekv.getNRejected()
                    traceLog.debug(
                        "Iteration %d, rejected %d candidates due to initial kernel fit",
                        nIter,
                        nRejectedSkf,
                    )

                # Reject variable objects by their kernel sums.
                ksv.resetKernelSum()
                ksv.setMode(KernelSumVisitor.AGGREGATE)
                kernelCellSet.visitCandidates(ksv, nStarPerCell, ignoreExceptions=True)
                if all(cell.empty() for cell in kernelCellSet.getCellList()):
                    raise NoKernelCandidatesError(
                        "All spatial cells are empty of good kernel candidates: every star was "
                        "rejected by the single-kernel fit"
                    )
                try:
                    ksv.processKsumDistribution()
                except PsfMatchError as err:
                    raise NoKernelCandidatesError(
                        f"Unable to calculate the kernel sum: {err}"
                    ) from err
                ksv.setMode(KernelSumVisitor.REJECT)
                kernelCellSet.visitCandidates(ksv, nStarPerCell, ignoreExceptions=True)
                nRejectedKsum = ksv.getNRejected()
                traceLog.debug(
                    "Iteration %d, rejected %d candidates due to kernel sum (mean %.4f, std %.4f)",
                    nIter,
                    nRejectedKsum,
                    ksv.getkSumMean(),
                    ksv.getkSumStd(),
                )
                if nRejectedKsum > 0:
                    continue

                if usePca:
                    nRejectedPca, spatialBasisList = self._createPcaBasis(
                        kernelCellSet, nStarPerCell, control
                    )
                    if nRejectedPca > 0:
                        continue
                else:
                    spatialBasisList = basisList

                spatialkv, spatialKernel, spatialBackground = fitSpatial(spatialBasisList)

                assesskv = AssessSpatialKernelVisitor(spatialKernel, spatialBackground, control)
                unclipped = kernelCellSet.getAllCandidates(ignoreBad=True)
                kernelCellSet.visitCandidates(assesskv, nStarPerCell)
                nRejectedSpatial = assesskv.getNRejected()
                nGoodSpatial = assesskv.getNGood()
                if nGoodSpatial == 0 and nRejectedSpatial > 0 and orders.lowered:
                    # The orders the stars can carry fit none of them within the residual
                    # thresholds (the PSF varies more than so few stars can follow): clipping
                    # would empty the fit, so this fit is kept, unclipped, and said so.
                    for cand in unclipped:
                        if cand.getStatus() == _BAD:
                            cand.setStatus(_GOOD)
                    self.log.warning(
                        "The spatial model of kernel order %d, background order %d (lowered "
                        "from %d, %d for %d stars) leaves every star's residuals above the "
                        "clipping thresholds; it is kept unclipped. The PSF varies more than "
                        "these stars can constrain: give more kernel stars",
                        orders.kernel,
                        orders.background,
                        orders.configuredKernel,
                        orders.configuredBackground,
                        spatialkv.getNCandidates(),
                    )
                    nRejectedSpatial = 0
                    break
                traceLog.debug(
                    "Iteration %d, rejected %d candidates due to spatial kernel fit",
                    nIter,
                    nRejectedSpatial,
                )
                traceLog.debug(
                    "Spatial kernel built with %d candidates", spatialkv.getNCandidates()
                )
                if nGoodSpatial == 0 and nRejectedSpatial == 0:
                    raise NoKernelCandidatesError("No kernel candidates for spatial fit")
                if nRejectedSpatial == 0:
                    break
                nIter += 1

            if nRejectedSpatial > 0 and nIter == maxSpatialIterations:
                # The last assessment rejected candidates: one more fit without them, unassessed.
                traceLog.debug("Final spatial fit")
                if usePca:
                    _, spatialBasisList = self._createPcaBasis(kernelCellSet, nStarPerCell, control)
                spatialkv, spatialKernel, spatialBackground = fitSpatial(spatialBasisList)

        spatialSolution = spatialkv.getKernelSolution()
        traceLog3.debug("Spatial kernel parameters: %s", spatialKernel.getSpatialParameters())
        self._diagnostic(kernelCellSet, spatialSolution, spatialKernel, spatialBackground)
        self._displayDebug(kernelCellSet, spatialBasisList, spatialKernel, spatialBackground)
        return spatialSolution, spatialKernel, spatialBackground

    def _selectBasisByBic(
        self,
        kernelCellSet: Any,
        targetFwhmPix: float | None,
        referenceFwhmPix: float | None,
        wings: Any = None,
    ) -> list[Any]:
        """Choose the Alard–Lupton polynomial degrees by the Bayesian Information Criterion.

        docs/algorithm.md §3.8 (docs/decisions.md D3): every degree combination
        ``(d₁, …, d_nGauss)`` with ``1 ≤ dᵢ ≤ alardDegGauss[i]`` is fitted to each candidate; a
        candidate's BIC for it is ``Σχ² + k ln n`` over the kernel-shrunk box of its difference
        stamp (χ² = D²/Var(D), k basis kernels, n pixels); each candidate votes for its lowest
        BIC and the most voted combination wins. Derived tasks call this before `_solve` when
        ``useBicForKernelBasis`` is set.

        Parameters
        ----------
        kernelCellSet : `SpatialCellSet`
            A *scratch* cell set of the candidates, used up by this method: each candidate is
            refitted once per combination and its status rewritten, so its solution slots
            (ORIG: the first combination, PCA: the last) and status are meaningless
            afterwards. Build a fresh cell set for `_solve`, whose spatial fit reads the
            RECENT slot and must see fits made with the chosen basis.
        targetFwhmPix, referenceFwhmPix : `float` or `None`
            As for `makeKernelBasisList`: they set the Gaussians' widths and the kernel size,
            which the degrees do not change.
        wings : `PsfWings`, optional
            As for `makeKernelBasisList` (the wing Gaussian keeps its degree).

        Returns
        -------
        basisList : `list` of `FixedKernel`
            The basis with the chosen degrees (with the configured ones if no candidate
            could vote, which is logged as a warning). The ``ALBasis*`` metadata describe it.

        Raises
        ------
        InvalidInputError
            If the kernel basis is not Alard–Lupton.

        Notes
        -----
        A candidate rejected by the single-kernel clipping for one combination is still
        fitted with the others (its status is reset before each), and votes among the
        combinations it passed; the reference dropped it for good at its first rejection.
        Ties in the vote go to the combination with fewer basis kernels. With noise-free
        stamps (`ModelPsfMatchTask`) χ² is negligible against k ln n and the lowest degrees
        always win.
        """
        kConfig = self.kConfig
        if kConfig.kernelBasisSet != "alard-lupton" or not isinstance(kConfig, PsfMatchConfigAL):
            raise InvalidInputError(
                "useBicForKernelBasis chooses Alard-Lupton polynomial degrees, but "
                f"kernelBasisSet is {kConfig.kernelBasisSet!r}; turn it off"
            )
        control = makeKernelControl(kConfig)
        nStarPerCell = int(kConfig.nStarPerCell)
        maxDegrees = [int(d) for d in kConfig.alardDegGauss]
        ranges = [range(1, d + 1) if d >= 1 else range(0, 1) for d in maxDegrees]
        candidates = [
            c for c in kernelCellSet.getAllCandidates(ignoreBad=False) if c.getStatus() != _BAD
        ]
        bicByCandidate: dict[int, dict[tuple[int, ...], float]] = {}
        nBasisOf: dict[tuple[int, ...], int] = {}
        for degrees in itertools.product(*ranges):
            basisList = makeKernelBasisList(
                kConfig, targetFwhmPix, referenceFwhmPix, basisDegGauss=degrees, wings=wings
            )
            nBasisOf[degrees] = len(basisList)
            for cand in candidates:
                cand.setStatus(_UNKNOWN)
            visitor = BuildSingleKernelVisitor(basisList, control)
            visitor.setSkipBuilt(False)
            kernelCellSet.visitCandidates(visitor, nStarPerCell, ignoreExceptions=True)
            for cand in candidates:
                if cand.getStatus() != _GOOD:
                    continue
                bic = _candidateBic(cand, len(basisList))
                if math.isfinite(bic):
                    bicByCandidate.setdefault(cand.getId(), {})[degrees] = bic

        if not bicByCandidate:
            self.log.warning(
                "BIC basis selection: no candidate could be fitted; keeping the configured "
                "degrees %s",
                maxDegrees,
            )
            self.metadata["ALBasisBicNCandidates"] = 0
            return makeKernelBasisList(
                kConfig, targetFwhmPix, referenceFwhmPix, metadata=self.metadata, wings=wings
            )

        votes = Counter(
            min(values, key=lambda d: (values[d], nBasisOf[d]))
            for values in bicByCandidate.values()
        )
        ranking = sorted(votes.items(), key=lambda item: (-item[1], nBasisOf[item[0]], item[0]))
        best, nVotes = ranking[0]
        self.log.info(
            "BIC prefers polynomial degrees %s",
            "; ".join(f"{list(d)} {n} times" for d, n in ranking[:3]),
        )
        self.metadata["ALBasisDegGaussBic"] = list(best)
        self.metadata["ALBasisBicVotes"] = nVotes
        self.metadata["ALBasisBicNCandidates"] = len(bicByCandidate)
        return makeKernelBasisList(
            kConfig,
            targetFwhmPix,
            referenceFwhmPix,
            basisDegGauss=best,
            metadata=self.metadata,
            wings=wings,
        )

    def _createPcaBasis(
        self, kernelCellSet: Any, nStarPerCell: int, control: Any
    ) -> tuple[int, list[Any]]:
        """Replace the basis by the principal components of the candidates' kernels (§5.7).

        Parameters
        ----------
        kernelCellSet : `SpatialCellSet`
            The candidates; their ORIG kernels (normalised to unit sum) are analysed, and each
            visited candidate is refitted with the new basis (into its PCA slot).
        nStarPerCell : `int`
            Candidates per cell to use.
        control : ``KernelControl``
            The fit settings.

        Returns
        -------
        nRejected : `int`
            How many candidates the refit rejected.
        spatialBasisList : `list` of `FixedKernel`
            The renormalised basis: the mean kernel (if ``subtractMeanForPca``) and the leading
            eigen-kernels, ``numPrincipalComponents`` in all.

        Raises
        ------
        PsfMatchError
            If the eigenvalues sum to zero or no candidate has a usable kernel.
        """
        kConfig = self.kConfig
        imagePca = KernelPca()
        kernelCellSet.visitCandidates(
            KernelPcaVisitor(imagePca), nStarPerCell, ignoreExceptions=True
        )
        if imagePca.getNImages() == 0:
            raise NoKernelCandidatesError("No candidate kernels for the PCA basis")
        if kConfig.subtractMeanForPca:
            imagePca.subtractMean()
        imagePca.analyze()
        eigenValues = np.asarray(imagePca.getEigenValues())
        eigenKernels = [_core.FixedKernel(image) for image in imagePca.getEigenImages()]
        if eigenValues.sum() == 0.0:
            raise PsfMatchError("Eigenvalues sum to zero")
        traceLog = getTraceLogger(self.log.getChild("_solve"), 3)
        for j, value in enumerate(eigenValues):
            traceLog.debug("Eigenvalue %d : %f (%f)", j, value, value / eigenValues.sum())

        kernelList = [_core.FixedKernel(imagePca.getMean())] if kConfig.subtractMeanForPca else []
        kernelList += eigenKernels
        nComponents = min(int(kConfig.numPrincipalComponents), len(eigenValues))
        kernelList = kernelList[:nComponents]
        # A NaN eigen-kernel cannot be used; an all-zero one (a zero eigenvalue) cannot be
        # normalised and adds nothing, so it is dropped too (the reference would keep it and
        # produce NaN kernels).
        kernelList = [
            k
            for i, k in enumerate(kernelList)
            if np.isfinite(k.getImage()).all() and (i == 0 or np.any(k.getImage() != 0.0))
        ]
        spatialBasisList = renormalizeKernelList(kernelList)

        singlekvPca = BuildSingleKernelVisitor(spatialBasisList, control)
        singlekvPca.setSkipBuilt(False)
        kernelCellSet.visitCandidates(singlekvPca, nStarPerCell, ignoreExceptions=True)
        singlekvPca.setSkipBuilt(True)
        return singlekvPca.getNRejected(), spatialBasisList

    def _displayDebug(
        self, kernelCellSet: Any, basisList: list[Any], spatialKernel: Any, spatialBg: Any
    ) -> None:
        """Honour the debugging switches of `psfmatch.debug` for this module.

        Each switch that is on draws the matching ``psfmatch.plot`` figure (matplotlib, the
        ``plot`` extra), or calls the hook installed as ``psfmatch.debug.showDebug``. Without
        matplotlib the switches log a warning that says what to install.
        """
        lsstDebug = psfmatchDebug.getInfo(__name__)
        if not lsstDebug.display:
            return
        requests = Struct(
            displayCandidates=bool(lsstDebug.displayCandidates),
            displayKernelBasis=bool(lsstDebug.displayKernelBasis),
            displayKernelMosaic=bool(lsstDebug.displayKernelMosaic),
            plotKernelSpatialModel=bool(lsstDebug.plotKernelSpatialModel),
            plotKernelCoefficients=bool(lsstDebug.plotKernelCoefficients),
            showBadCandidates=bool(lsstDebug.showBadCandidates),
            maskTransparency=lsstDebug.maskTransparency or 0,
            plotDir=lsstDebug.plotDir or None,
            maxCandidates=int(lsstDebug.maxCandidates or 12),
        )
        psfmatchDebug._show(
            self,
            requests,
            kernelCellSet=kernelCellSet,
            basisList=basisList,
            spatialKernel=spatialKernel,
            spatialBackground=spatialBg,
        )
