# SPDX-License-Identifier: BSD-3-Clause
"""Tests of the spatial model (docs/algorithm.md §1.3, §1.4, §4, §5): the cell set and its visits,
kernel-sum clipping, the spatial fit and its assessment, the kernel PCA, and the whole-image
convolution with a spatially varying kernel.

Expected values come from independent numpy implementations written in this file (clipped
statistics, spatial functions, the assembly of the spatial normal equations, PCA, a per-pixel
brute-force convolution) or from simulated fields whose true kernel and background are known.
"""

from __future__ import annotations

import math
import os
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.polynomial.chebyshev as cheb
import pytest
import scipy.signal
from numpy.lib.stride_tricks import sliding_window_view

import psfmatch as pm
from helpers import alConfig

ORIG, PCA, RECENT = pm.KernelCandidate.ORIG, pm.KernelCandidate.PCA, pm.KernelCandidate.RECENT
BAD, GOOD, UNKNOWN = pm.KernelCandidate.BAD, pm.KernelCandidate.GOOD, pm.KernelCandidate.UNKNOWN
AGGREGATE, REJECT = pm.KernelSumVisitor.AGGREGATE, pm.KernelSumVisitor.REJECT
POLYNOMIAL, CHEBYSHEV1 = pm.SpatialModelType.POLYNOMIAL, pm.SpatialModelType.CHEBYSHEV1
NO_DATA = pm.Mask.getPlaneBitMask("NO_DATA")
EDGE = pm.Mask.getPlaneBitMask("EDGE")
DEFAULT_AL = dict(halfWidth=10, nGauss=3, sigGauss=[0.7, 1.5, 3.0], degGauss=[4, 2, 2])


RNG_SEED = 16180339  # the rng fixture's seed (conftest.py)


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def flatCandidate(x: float, y: float, rating: float) -> pm.KernelCandidate:
    """A cheap candidate whose stamps are never fitted: only position and rating matter."""
    stamp = pm.MaskedImage(np.ones((7, 7)), None, np.ones((7, 7)))
    return pm.KernelCandidate(x, y, stamp, stamp, alConfig(), rating=rating)


def gaussianImage(halfWidth: int, sigma: float, total: float = 1.0) -> np.ndarray:
    u = np.arange(-halfWidth, halfWidth + 1, dtype=float)
    g = np.exp(-(u[np.newaxis, :] ** 2 + u[:, np.newaxis] ** 2) / (2 * sigma**2))
    return total * g / g.sum()


class Recorder:
    """A duck-typed visitor (not a CandidateVisitor subclass) that records what it sees."""

    def __init__(self, reject: Any = None, fail: Any = None) -> None:
        self.seen: list[pm.KernelCandidate] = []
        self.nReset = 0
        self.reject = reject or (lambda c: False)
        self.fail = fail or (lambda c: False)

    def reset(self) -> None:
        self.nReset += 1

    def processCandidate(self, candidate: pm.KernelCandidate) -> None:
        self.seen.append(candidate)
        if self.fail(candidate):
            rating = candidate.getCandidateRating()
            raise ValueError(f"visitor failed on the candidate rated {rating}")
        if self.reject(candidate):
            candidate.setStatus(BAD)


# --------------------------------------------------------------------------------------------
# SpatialCellSet (§1.3, §1.4)
# --------------------------------------------------------------------------------------------


def test_cell_grid_geometry_with_remainder_cells() -> None:
    region = pm.Box2I((10, -5), (100, 70))
    cells = pm.SpatialCellSet(region, 32, 30)
    cellList = cells.getCellList()
    # ceil(100/32) = 4 columns, ceil(70/30) = 3 rows, row-major (y outer, x inner).
    assert len(cellList) == 12
    widths, heights = [32, 32, 32, 4], [30, 30, 10]
    expected = []
    for iy in range(3):
        for ix in range(4):
            box = (10 + 32 * ix, -5 + 30 * iy, widths[ix], heights[iy])
            expected.append((f"Cell {ix}x{iy}", box))
    got = [
        (c.getLabel(), (b.getMinX(), b.getMinY(), b.getWidth(), b.getHeight()))
        for c in cellList
        for b in [c.getBBox()]
    ]
    assert got == expected
    # The cells tile the region exactly: every pixel in exactly one cell.
    cover = np.zeros((70, 100), dtype=int)
    for c in cellList:
        b = c.getBBox()
        cover[b.getMinY() + 5 : b.getMaxY() + 6, b.getMinX() - 10 : b.getMaxX() - 9] += 1
    assert (cover == 1).all()
    assert cells.getBBox() == region

    exact = pm.SpatialCellSet(pm.Box2I((0, 0), (64, 64)), 32, 32).getCellList()
    assert [c.getBBox().getDimensions() for c in exact] == [(32, 32)] * 4  # no remainder cells
    assert [c.getLabel() for c in exact] == ["Cell 0x0", "Cell 1x0", "Cell 0x1", "Cell 1x1"]

    for sx, sy in ((0, 32), (32, -1)):
        with pytest.raises(pm.InvalidInputError, match="cell sizes must be positive"):
            pm.SpatialCellSet(region, sx, sy)


def test_insert_orders_by_decreasing_rating_new_before_equal(rng: np.random.Generator) -> None:
    cells = pm.SpatialCellSet(pm.Box2I((0, 0), (64, 64)), 64, 64)
    values = [3.0, 5.0, 1.0, 5.0, 3.0, 7.0, 3.0, 0.5, 5.0]
    inserted = []
    for r in values:
        c = flatCandidate(rng.uniform(0, 63), rng.uniform(0, 63), r)
        cells.insertCandidate(c)
        inserted.append(c)
    # Independent order: rating descending, and among equal ratings the later insertion first.
    order = sorted(range(len(values)), key=lambda i: (-values[i], -i))
    got = cells.getCellList()[0].getCandidates()
    assert len(got) == len(values)
    assert all(g is inserted[i] for g, i in zip(got, order, strict=True))


def test_insert_uses_rounded_centre_and_rejects_out_of_range() -> None:
    cells = pm.SpatialCellSet(pm.Box2I((0, 0), (64, 32)), 32, 32)
    left, right = cells.getCellList()
    # The pixel of a position is floor(pos + 0.5): 31.49 → 31 (left), 31.5 → 32 (right).
    for x, cell in ((31.49, left), (31.5, right), (-0.5, left), (63.49, right)):
        c = flatCandidate(x, 10.0, 1.0)
        cells.insertCandidate(c)
        assert any(other is c for other in cell.getCandidates())
    for x, y in ((-0.51, 10.0), (63.5, 10.0), (10.0, 31.5), (10.0, -3.0)):
        with pytest.raises(pm.InvalidInputError, match="outside the cell set's region"):
            cells.insertCandidate(flatCandidate(x, y, 1.0))
    assert len(cells.getAllCandidates()) == 4


def twoCellSet(ratingsPerCell: int = 4) -> tuple[pm.SpatialCellSet, list[list[pm.KernelCandidate]]]:
    """Two cells, candidates inserted in increasing rating, so rank order is reversed."""
    cells = pm.SpatialCellSet(pm.Box2I((0, 0), (64, 32)), 32, 32)
    byCell: list[list[pm.KernelCandidate]] = [[], []]
    for k in range(2):
        for r in range(ratingsPerCell):
            c = flatCandidate(5.0 + 32 * k + r, 5.0 + r, 10.0 * k + r)
            cells.insertCandidate(c)
            byCell[k].insert(0, c)  # highest rating first
    return cells, byCell


def test_visit_limits_per_cell_and_skips_bad() -> None:
    cells, byCell = twoCellSet()
    everyone = byCell[0] + byCell[1]
    for nMax, expected in ((2, byCell[0][:2] + byCell[1][:2]), (0, everyone), (-1, everyone)):
        v = Recorder()
        cells.visitCandidates(v, nMax)
        assert v.nReset == 1  # reset once per visit, not once per cell
        assert v.seen == expected  # candidates compare by identity

    byCell[0][0].setStatus(BAD)
    byCell[1][1].setStatus(BAD)
    v = Recorder()
    cells.visitCandidates(v, 2)
    assert v.seen == [byCell[0][1], byCell[0][2], byCell[1][0], byCell[1][2]]
    left = cells.getCellList()[0]
    assert left.getCandidates() == byCell[0][1:]  # ignoreBad by default
    assert left.getCandidates(ignoreBad=False) == byCell[0]
    assert (left.size(), left.size(ignoreBad=False)) == (3, 4)
    assert not left.empty()
    for c in byCell[0]:
        c.setStatus(BAD)
    assert left.empty() and left.size(ignoreBad=False) == 4
    v = Recorder()
    cells.visitAllCandidates(v)
    assert v.seen == [byCell[1][0], byCell[1][2], byCell[1][3]]


def test_rejection_promotes_the_next_candidate() -> None:
    """A candidate that turns BAD during its visit counts towards nMaxPerCell; the next visit
    skips it, so the next-ranked candidate moves into the window (§1.3)."""
    cells, byCell = twoCellSet()
    top = {byCell[0][0], byCell[1][0]}
    first = Recorder(reject=lambda c: c in top)
    cells.visitCandidates(first, 2)
    assert first.seen == byCell[0][:2] + byCell[1][:2]  # the rejected ones counted
    assert [c.getStatus() for c in byCell[0]] == [BAD, UNKNOWN, UNKNOWN, UNKNOWN]
    second = Recorder()
    cells.visitCandidates(second, 2)
    assert second.seen == byCell[0][1:3] + byCell[1][1:3]


def test_visitor_exceptions_ignored_or_propagated() -> None:
    cells, byCell = twoCellSet()
    failing = {byCell[0][0], byCell[1][1]}
    v = Recorder(fail=lambda c: c in failing)
    cells.visitCandidates(v, 2, ignoreExceptions=True)
    # A failed visit is not counted: the next candidate in that cell is visited instead.
    assert v.seen == byCell[0][:3] + byCell[1][:3]
    assert all(c.getStatus() == UNKNOWN for c in sum(byCell, []))

    v = Recorder(fail=lambda c: c in failing)
    with pytest.raises(ValueError, match="visitor failed on the candidate rated 3"):
        cells.visitCandidates(v, 2)
    assert v.seen == [byCell[0][0]]  # the visit stopped at the first failure

    # A compiled visitor's error: the kernel-sum visitor raises for unbuilt candidates.
    ksum = pm.KernelSumVisitor(alConfig())
    with pytest.raises(pm.PsfMatchError, match="no ORIG kernel solution"):
        cells.visitCandidates(ksum, 2)
    cells.visitCandidates(ksum, 2, ignoreExceptions=True)
    assert ksum.getKsumList() == []


def test_duck_typed_and_subclassed_visitors_see_the_inserted_objects() -> None:
    cells, byCell = twoCellSet()
    for c in sum(byCell, []):
        c.tag = f"tag{c.getCandidateRating()}"  # type: ignore[attr-defined]
    v = Recorder()
    cells.visitCandidates(v, -1)
    assert len(v.seen) == 8
    assert all(a is b for a, b in zip(v.seen, sum(byCell, []), strict=True))
    assert all(isinstance(c, pm.KernelCandidate) for c in v.seen)
    assert [c.tag for c in v.seen[:2]] == ["tag3.0", "tag2.0"]  # type: ignore[attr-defined]

    class Sub(pm.CandidateVisitor):
        def __init__(self) -> None:
            super().__init__()
            self.seen: list[pm.KernelCandidate] = []
            self.nReset = 0

        def reset(self) -> None:
            self.nReset += 1

        def processCandidate(self, candidate: pm.KernelCandidate) -> None:
            self.seen.append(candidate)

    s = Sub()
    cells.visitCandidates(s, 1)
    assert s.nReset == 1
    assert s.seen == [byCell[0][0], byCell[1][0]] and s.seen[0] is byCell[0][0]

    class NotAVisitor:
        def reset(self) -> None:
            pass

    with pytest.raises(pm.InvalidInputError, match="needs a processCandidate"):
        cells.visitCandidates(NotAVisitor(), 1)


# --------------------------------------------------------------------------------------------
# BuildSingleKernelVisitor (§3.6)
# --------------------------------------------------------------------------------------------

SINGLE_SHAPE = (25, 25)
SINGLE_BASIS_HALF = 2  # 5×5 basis: good box rows/columns 2..22, core (radius 3) 9..15


def singleStamps(
    rng: np.random.Generator, spike: float = 0.0
) -> tuple[pm.MaskedImage, pm.MaskedImage]:
    """A white-noise template and science = template ⊗ 1.2·G(0.9) + N(0, 1) (variance 1), with
    an optional hot pixel at (5, 5): inside the good box, outside the core."""
    template = rng.normal(50.0, 5.0, SINGLE_SHAPE)
    science = scipy.signal.convolve(template, gaussianImage(2, 0.9, 1.2), mode="same")
    science += rng.normal(0.0, 1.0, SINGLE_SHAPE)
    science[5, 5] += spike
    ones = np.ones(SINGLE_SHAPE)
    return pm.MaskedImage(template, None, 0.0 * ones), pm.MaskedImage(science, None, ones)


def singleCandidate(
    stamps: tuple[pm.MaskedImage, pm.MaskedImage], config: pm.PsfMatchConfig, x: float = 12.0
) -> pm.KernelCandidate:
    return pm.KernelCandidate(x, 12.0, stamps[0], stamps[1], config)


def residualStats(diff: pm.MaskedImage, core: int = 0) -> tuple[float, float, float]:
    """(mean, rms, variance) of D/σ over pixels with no NO_DATA/EDGE/SAT bit and finite 1/var,
    on the whole stamp or on rows/columns [H/2 − r, H/2 + r] (§3.6), in numpy."""
    image, mask, var = diff.image, diff.mask, diff.variance
    if core:
        h, w = image.shape
        sl = (slice(h // 2 - core, h // 2 + core + 1), slice(w // 2 - core, w // 2 + core + 1))
        image, mask, var = image[sl], mask[sl], var[sl]
    bad = pm.Mask.getPlaneBitMask(["NO_DATA", "EDGE", "SAT"])
    with np.errstate(divide="ignore"):
        ivar = 1.0 / var
    use = ((mask & bad) == 0) & np.isfinite(ivar)
    z = image[use] * np.sqrt(ivar[use])
    variance = float(z.var(ddof=1))
    return float(z.mean()), math.sqrt(variance), variance


def singleBasis() -> list[pm.FixedKernel]:
    return pm.makeAlardLuptonBasisList(SINGLE_BASIS_HALF, 1, [1.0], [2])


def test_single_kernel_visitor_clips_on_the_residual_mean_and_rms(rng: np.random.Generator) -> None:
    stamps = singleStamps(rng)
    probe = singleCandidate(stamps, alConfig())
    probe.build(singleBasis())
    mean, rms, variance = residualStats(probe.getDifferenceImage(RECENT))
    assert 0.5 < rms < 1.5 and abs(mean) < 0.25  # a good fit passes the default thresholds

    # Thresholds placed 2 % either side of the numpy statistics: only the side decides.
    cases = [
        (dict(candidateResidualMeanMax=0.98 * abs(mean)), BAD),
        (dict(candidateResidualMeanMax=1.02 * abs(mean), candidateResidualStdMax=0.98 * rms), BAD),
        (dict(candidateResidualMeanMax=1.02 * abs(mean), candidateResidualStdMax=1.02 * rms), GOOD),
        (
            dict(singleKernelClipping=False, candidateResidualMeanMax=0, candidateResidualStdMax=0),
            GOOD,
        ),
    ]
    for fields, status in cases:
        config = alConfig(**fields)
        cand = singleCandidate(stamps, config)
        visitor = pm.BuildSingleKernelVisitor(singleBasis(), config)
        visitor.processCandidate(cand)
        assert cand.getStatus() == status, fields
        assert visitor.getNProcessed() == 1
        assert visitor.getNRejected() == (1 if status == BAD else 0)
        # chi2 is the residual variance: the same n−1 estimator, one-pass vs two-pass over
        # 441 values of order 1 (1e-12 relative).
        np.testing.assert_allclose(cand.getChi2(), variance, rtol=1e-12)


def test_single_kernel_visitor_core_statistics(rng: np.random.Generator) -> None:
    """A hot pixel outside the core ruins the whole-stamp rms but not the core's: useCoreStats
    decides which one the clipping sees."""
    stamps = singleStamps(rng, spike=40.0)
    probe = singleCandidate(stamps, alConfig())
    probe.build(singleBasis())
    diff = probe.getDifferenceImage(RECENT)
    _, fullRms, _ = residualStats(diff)
    _, coreRms, coreVariance = residualStats(diff, core=3)
    assert fullRms > 1.8 and coreRms < 1.4  # either side of the default 1.5: the test has power

    whole = singleCandidate(stamps, alConfig())
    pm.BuildSingleKernelVisitor(singleBasis(), alConfig()).processCandidate(whole)
    assert whole.getStatus() == BAD
    config = alConfig(useCoreStats=True, candidateCoreRadius=3)
    core = singleCandidate(stamps, config)
    pm.BuildSingleKernelVisitor(singleBasis(), config).processCandidate(core)
    assert core.getStatus() == GOOD
    np.testing.assert_allclose(core.getChi2(), coreVariance, rtol=1e-12)  # 49 values, as above


def test_single_kernel_visitor_counters_failures_and_skip_built(rng: np.random.Generator) -> None:
    stamps = singleStamps(rng)
    cells = pm.SpatialCellSet(pm.Box2I((0, 0), (64, 32)), 32, 32)
    good = singleCandidate(stamps, alConfig(), x=10.0)
    # build raises: a zero-variance pixel without constant weighting (§3.1).
    zeroVar = stamps[1].clone()
    zeroVar.variance[0, 0] = 0.0
    raises = pm.KernelCandidate(
        20.0, 12.0, stamps[0], zeroVar, alConfig(constantVarianceWeighting=False)
    )
    # build sets BAD: the condition-number check fails (§3.3).
    illConditioned = singleCandidate(
        stamps, alConfig(checkConditionNumber=True, maxConditionNumber=1.0), x=40.0
    )
    for c in (good, raises, illConditioned):
        cells.insertCandidate(c)
    visitor = pm.BuildSingleKernelVisitor(singleBasis(), alConfig())
    assert visitor.getSkipBuilt()
    cells.visitCandidates(visitor, -1)
    assert [c.getStatus() for c in (good, raises, illConditioned)] == [GOOD, BAD, BAD]
    assert (visitor.getNProcessed(), visitor.getNRejected()) == (1, 2)
    assert not raises.isInitialized() and illConditioned.isInitialized()

    # Again: reset() clears the counters, BAD candidates are skipped, and the built one is
    # left alone (skipBuilt).
    origId = good.getKernelSolution(ORIG).getId()
    cells.visitCandidates(visitor, -1)
    assert (visitor.getNProcessed(), visitor.getNRejected()) == (0, 0)
    with pytest.raises(pm.PsfMatchError, match="no PCA kernel solution"):
        good.getKernelSolution(PCA)
    # Without skipBuilt it is refitted, into the PCA slot.
    visitor.setSkipBuilt(False)
    cells.visitCandidates(visitor, -1)
    assert (visitor.getNProcessed(), visitor.getNRejected()) == (1, 0)
    assert good.getKernelSolution(ORIG).getId() == origId
    assert good.getKernelSolution(PCA).getId() > origId

    # docs/decisions.md D6: a statistics failure (here NaN border pixels let in by a bad-plane list
    # without NO_DATA) is a counted rejection, not a processed candidate.
    fresh = singleCandidate(stamps, alConfig())
    leaky = pm.BuildSingleKernelVisitor(singleBasis(), alConfig(badMaskPlanes=["SAT"]))
    leaky.processCandidate(fresh)
    assert fresh.getStatus() == BAD
    assert (leaky.getNProcessed(), leaky.getNRejected()) == (0, 1)


def test_single_kernel_visitor_with_regularization(rng: np.random.Generator) -> None:
    """The hMat argument reaches the fit: the solution is (M + λH)⁻¹b with λ = lambdaValue."""
    stamps = singleStamps(rng)
    config = pm.PsfMatchConfigDF()
    config.kernelSize = 5
    h = pm.makeRegularizationMatrix(config)
    cand = singleCandidate(stamps, config)
    pm.BuildSingleKernelVisitor(pm.makeDeltaFunctionBasisList(5, 5), config, h).processCandidate(
        cand
    )
    assert cand.getStatus() == GOOD and cand.getUsedRegularization()
    sol = cand.getKernelSolution(ORIG)
    a = np.linalg.solve(sol.getM() + config.lambdaValue * h, sol.getB())
    # A 25×25 solve with cond ≲ 1e4, two LU implementations: 1e-10 relative.
    np.testing.assert_allclose(sol.getSolution(), a, rtol=0, atol=1e-10 * np.abs(a).max())


# --------------------------------------------------------------------------------------------
# Kernel-sum clipping (§4)
# --------------------------------------------------------------------------------------------


def clippedMeanStd(values: list[float]) -> tuple[float, float, int]:
    """§4 in numpy: start at the median ± 3·0.741301109·IQR, 3 iterations, then mean ± 3σ."""
    v = np.asarray(values, dtype=float)
    q25, median, q75 = np.quantile(v, [0.25, 0.5, 0.75])  # linear interpolation at q·(n−1)
    centre, halfWidth = median, 3.0 * 0.741301109 * (q75 - q25)
    for _ in range(3):
        kept = v[np.abs(v - centre) <= halfWidth]
        mean, std = float(kept.mean()), float(kept.std(ddof=1))
        centre, halfWidth = mean, 3.0 * std
    return mean, std, int(kept.size)


def ksumCells(
    rng: np.random.Generator, sums: list[float], config: pm.PsfMatchConfig
) -> tuple[pm.SpatialCellSet, list[pm.KernelCandidate]]:
    """Candidates whose science stamp is s × template: a 3×3 delta-function fit then has an
    ORIG kernel sum of exactly s (to rounding)."""
    basis = pm.makeDeltaFunctionBasisList(3, 3)
    cells = pm.SpatialCellSet(pm.Box2I((0, 0), (100, 100)), 50, 50)
    cands = []
    for i, s in enumerate(sums):
        template = rng.normal(100.0, 10.0, (11, 11))
        t = pm.MaskedImage(template, None, np.ones((11, 11)))
        sci = pm.MaskedImage(s * template, None, np.ones((11, 11)))
        c = pm.KernelCandidate(10.0 + 11 * i, 20.0 + 7 * i, t, sci, config, rating=100.0 - i)
        c.build(basis)
        cells.insertCandidate(c)
        cands.append(c)
    return cells, cands


def aggregate(cells: pm.SpatialCellSet, visitor: pm.KernelSumVisitor) -> None:
    visitor.resetKernelSum()
    visitor.setMode(AGGREGATE)
    cells.visitCandidates(visitor, -1)
    visitor.processKsumDistribution()


@pytest.mark.parametrize(
    ("sums", "rejected"),
    [([1, 1, 1, 1, 2, 3, 4], []), ([1, 1, 1, 1, 2, 3, 4, 50], [7]), ([50, 1, 2, 1, 3], [0])],
)
def test_kernel_sum_clipping(
    rng: np.random.Generator, sums: list[float], rejected: list[int]
) -> None:
    config = alConfig()
    cells, cands = ksumCells(rng, [float(s) for s in sums], config)
    got = [c.getKsum(ORIG) for c in cands]
    # A noise-free, exactly representable scale: the 9-parameter solve returns s to ~1e-13.
    np.testing.assert_allclose(got, sums, rtol=1e-11)
    visitor = pm.KernelSumVisitor(config)
    aggregate(cells, visitor)
    assert sorted(visitor.getKsumList()) == sorted(got)
    mean, std, npts = clippedMeanStd(got)
    assert npts == len(sums) - len(rejected)
    # The same sums in a different order: a few ulps of values ≤ 50.
    np.testing.assert_allclose(visitor.getkSumMean(), mean, rtol=1e-13)
    np.testing.assert_allclose(visitor.getkSumStd(), std, rtol=1e-12)  # same, through a sqrt
    assert visitor.getkSumNpts() == npts
    np.testing.assert_allclose(visitor.getdkSumMax(), 3.0 * std, rtol=1e-12)  # maxKsumSigma·σ
    # Without the outlier, the clipped statistics are the plain ones of the inliers.
    inliers = [g for i, g in enumerate(got) if i not in rejected]
    np.testing.assert_allclose(mean, np.mean(inliers), rtol=1e-14)  # one mean, two orders
    np.testing.assert_allclose(std, np.std(inliers, ddof=1), rtol=1e-13)

    visitor.setMode(REJECT)
    cells.visitCandidates(visitor, -1)
    assert visitor.getNRejected() == len(rejected)
    assert [i for i, c in enumerate(cands) if c.getStatus() == BAD] == rejected

    for c in cands:
        c.setStatus(UNKNOWN)
    off = pm.KernelSumVisitor(alConfig(kernelSumClipping=False))
    aggregate(cells, off)
    off.setMode(REJECT)
    cells.visitCandidates(off, -1)
    assert off.getNRejected() == 0
    assert all(c.getStatus() == UNKNOWN for c in cands)


def test_kernel_sum_one_identical_and_no_candidates(rng: np.random.Generator) -> None:
    config = alConfig()
    cells, (cand,) = ksumCells(rng, [1.7], config)
    visitor = pm.KernelSumVisitor(config)
    aggregate(cells, visitor)
    assert visitor.getkSumMean() == cand.getKsum(ORIG)
    assert (visitor.getkSumStd(), visitor.getdkSumMax(), visitor.getkSumNpts()) == (0.0, 0.0, 1)
    visitor.setMode(REJECT)
    cells.visitCandidates(visitor, -1)
    assert visitor.getNRejected() == 0 and cand.getStatus() != BAD

    # Identical candidates give bit-identical sums, whose mean must be exact (§10.3): with
    # std = 0, a mean off by one ulp would reject every one of them.
    template = rng.normal(100.0, 10.0, (11, 11))
    same = pm.SpatialCellSet(pm.Box2I((0, 0), (100, 100)), 50, 50)
    cands = []
    for i in range(5):
        c = pm.KernelCandidate(
            10.0 + 3 * i,
            10.0,
            pm.MaskedImage(template, None, np.ones((11, 11))),
            pm.MaskedImage(1.1 * template + 0.1, None, np.ones((11, 11))),
            config,
        )
        c.build(pm.makeDeltaFunctionBasisList(3, 3))
        same.insertCandidate(c)
        cands.append(c)
    assert len({c.getKsum(ORIG) for c in cands}) == 1
    aggregate(same, visitor)
    assert visitor.getkSumMean() == cands[0].getKsum(ORIG)
    assert visitor.getkSumStd() == 0.0
    visitor.setMode(REJECT)
    same.visitCandidates(visitor, -1)
    assert visitor.getNRejected() == 0

    visitor.resetKernelSum()
    with pytest.raises(RuntimeError, match="Unable to determine kernel sum; 0 candidates"):
        visitor.processKsumDistribution()


def test_kernel_sum_accumulates_across_visits_and_uses_orig(rng: np.random.Generator) -> None:
    config = alConfig()
    cells, cands = ksumCells(rng, [1.0, 1.2, 1.4], config)
    visitor = pm.KernelSumVisitor(config)
    visitor.setMode(AGGREGATE)
    cells.visitCandidates(visitor, -1)
    cells.visitCandidates(visitor, -1)  # reset() does not clear the sums (§1.4)
    assert len(visitor.getKsumList()) == 6
    visitor.resetKernelSum()
    assert visitor.getKsumList() == []

    # A refit into the PCA slot with a poorer basis (one shifted delta) changes the RECENT sum
    # but not the ORIG one, which is what the visitor collects.
    shifted = np.zeros((3, 3))
    shifted[0, 1] = 1.0
    for c in cands:
        c.build([pm.FixedKernel(shifted)])
        assert abs(c.getKsum(PCA) - c.getKsum(ORIG)) > 1e-3
    cells.visitCandidates(visitor, -1)
    assert visitor.getKsumList() == [c.getKsum(ORIG) for c in cands]


# --------------------------------------------------------------------------------------------
# Spatial functions and the assembly of the spatial normal equations (§5.1–§5.4)
# --------------------------------------------------------------------------------------------


def referenceTerms(modelType: Any, order: int, box: pm.Box2I, x: float, y: float) -> np.ndarray:
    """§5.1 in numpy: terms in the order 1, x, y, x², xy, y², …"""
    if modelType == CHEBYSHEV1:
        x0, x1 = box.getMinX() - 0.5, box.getMaxX() + 0.5
        y0, y1 = box.getMinY() - 0.5, box.getMaxY() + 0.5
        u, v = (2 * x - (x0 + x1)) / (x1 - x0), (2 * y - (y0 + y1)) / (y1 - y0)
        fx = [cheb.chebval(u, np.eye(order + 1)[p]) for p in range(order + 1)]
        fy = [cheb.chebval(v, np.eye(order + 1)[q]) for q in range(order + 1)]
    else:
        fx = [x**p for p in range(order + 1)]
        fy = [y**q for q in range(order + 1)]
    return np.array([fx[n - q] * fy[q] for n in range(order + 1) for q in range(n + 1)])


@pytest.mark.parametrize("modelType", [POLYNOMIAL, CHEBYSHEV1])
@pytest.mark.parametrize("order", [0, 1, 3])
def test_background_evaluate_over_a_box(
    rng: np.random.Generator, modelType: Any, order: int
) -> None:
    """SpatialBackground.evaluate(box) is b(x, y) = Σ β_k f_k(x, y) at every parent pixel of
    the box (which need not be the function's own box), against the numpy terms of §5.1."""
    functionBox = pm.Box2I((10, -5), (300, 200))
    function = pm.SpatialFunction(modelType, order, functionBox)
    nTerms = (order + 1) * (order + 2) // 2
    # Raw monomials of coordinates ~300 reach 300³: scale each term to contribute O(1).
    params = rng.normal(size=nTerms) / np.maximum(
        1.0, np.abs(referenceTerms(modelType, order, functionBox, 310.0, 195.0))
    )
    background = pm.SpatialBackground(function, params)
    box = pm.Box2I((30, 7), (41, 23))
    values = np.asarray(background.evaluate(box))
    assert values.shape == (23, 41)
    expected = np.array(
        [
            [referenceTerms(modelType, order, functionBox, x, y) @ params for x in range(30, 71)]
            for y in range(7, 30)
        ]
    )
    # Sums of ≤ 10 terms of size O(1): a few ulps, whatever the order of the additions.
    np.testing.assert_allclose(values, expected, rtol=0, atol=1e-13)
    assert values[5, 9] == pytest.approx(background(39.0, 12.0), abs=1e-13)


@pytest.mark.parametrize("modelType", [POLYNOMIAL, CHEBYSHEV1])
def test_spatial_function_terms(rng: np.random.Generator, modelType: Any) -> None:
    box = pm.Box2I((-20, 100), (300, 150))
    for order in (0, 1, 3):
        f = pm.SpatialFunction(modelType, order, box)
        assert f.getNParameters() == (order + 1) * (order + 2) // 2
        for x, y in [(-20.5, 99.5), (279.5, 249.5), *rng.uniform(0, 200, (3, 2))]:
            expected = referenceTerms(modelType, order, box, x, y)
            # Products of ≤ 3 factors evaluated by two recurrences: a few ulps of values up to
            # 300³ (polynomial) or 1 (Chebyshev).
            np.testing.assert_allclose(f.terms(x, y), expected, rtol=1e-13, atol=1e-13)
            params = rng.normal(size=f.getNParameters())
            np.testing.assert_allclose(f(x, y, params), expected @ params, rtol=1e-12, atol=1e-9)
    edges = pm.SpatialFunction(CHEBYSHEV1, 1, box)
    # The pixel-edge extent maps onto [−1, 1] exactly (dyadic arithmetic).
    assert list(edges.terms(-20.5, 99.5)) == [1.0, -1.0, -1.0]
    assert list(edges.terms(279.5, 249.5)) == [1.0, 1.0, 1.0]
    with pytest.raises(pm.InvalidInputError, match="order must be >= 0"):
        pm.SpatialFunction(CHEBYSHEV1, -1, box)


def test_linear_combination_kernel_against_numpy(rng: np.random.Generator) -> None:
    """a_m(x, y) = Σ_k α_mk f_k(x, y) and K(x, y) = Σ_m a_m B_m, recomputed in numpy."""
    box = pm.Box2I((-7, 30), (90, 60))
    basis = list(pm.makeAlardLuptonBasisList(3, 2, [0.8, 1.7], [2, 1]))
    basis.append(pm.FixedKernel(rng.normal(size=(7, 7))))  # a non-separable member
    params = rng.normal(size=(len(basis), 6))
    kernel = pm.LinearCombinationKernel(basis, pm.SpatialFunction(CHEBYSHEV1, 2, box), params)
    assert kernel.getDimensions() == (7, 7) and kernel.getCtr() == (3, 3)
    assert (kernel.getNBasisKernels(), kernel.getNSpatialParameters()) == (len(basis), 6)
    np.testing.assert_array_equal(kernel.getSpatialParameters(), params)
    images = np.stack([b.getImage() for b in basis])
    for x, y in [(-7.5, 29.5), (82.5, 89.5), *rng.uniform(0, 80, (3, 2))]:
        a = params @ referenceTerms(CHEBYSHEV1, 2, box, x, y)
        # Sums of 6 products of O(1) values: a few ulps.
        np.testing.assert_allclose(kernel.getKernelParameters(x, y), a, rtol=1e-13, atol=1e-13)
        expected = np.tensordot(a, images, axes=1)
        image, kSum = kernel.computeImage(x, y)
        # Sums of 10 products of O(1) values, separable terms formed as outer products: 1e-13.
        np.testing.assert_allclose(image, expected, rtol=0, atol=1e-13)
        np.testing.assert_allclose(kernel.computeKernel(x, y).getImage(), expected, atol=1e-13)
        np.testing.assert_allclose(kSum, expected.sum(), rtol=1e-12, atol=1e-12)  # same
        np.testing.assert_allclose(kernel.getSum(x, y), expected.sum(), rtol=1e-12, atol=1e-12)
        normalised, nSum = kernel.computeImage(x, y, doNormalize=True)
        assert nSum == kSum
        np.testing.assert_allclose(normalised, expected / expected.sum(), rtol=1e-11)  # same
    with pytest.raises(pm.InvalidInputError, match="parameters are 10x3, expected 10x6"):
        pm.LinearCombinationKernel(basis, pm.SpatialFunction(CHEBYSHEV1, 2, box), params[:, :3])
    with pytest.raises(pm.InvalidInputError, match="parameters are 9x6, expected 10x6"):
        pm.LinearCombinationKernel(basis, pm.SpatialFunction(CHEBYSHEV1, 2, box), params[:9])
    dipole = np.zeros((7, 7))
    dipole[3, 0], dipole[3, 6] = 1.0, -1.0  # sums to exactly zero
    zero = pm.LinearCombinationKernel(
        [pm.FixedKernel(dipole)], pm.SpatialFunction(POLYNOMIAL, 0, box), np.ones((1, 1))
    )
    with pytest.raises(pm.InvalidInputError, match="cannot normalise a zero-sum kernel"):
        zero.computeImage(0.0, 40.0, doNormalize=True)


@pytest.mark.parametrize("modelType", [POLYNOMIAL, CHEBYSHEV1])
def test_spatial_background_at_a_point_and_over_a_box(
    rng: np.random.Generator, modelType: Any
) -> None:
    box = pm.Box2I((-12, 40), (120, 80))
    params = rng.normal(size=6) * np.array([1.0, 1e-2, 1e-2, 1e-4, 1e-4, 1e-4])
    background = pm.SpatialBackground(pm.SpatialFunction(modelType, 2, box), params)
    np.testing.assert_array_equal(background.getParameters(), params)
    # A sub-box with its own origin: image[row, col] = b(x0 + col, y0 + row).
    sub = pm.Box2I((5, 61), (9, 4))
    got = np.asarray(background.evaluate(sub))
    assert got.shape == (4, 9)
    expected = np.array(
        [
            [referenceTerms(modelType, 2, box, x, y) @ params for x in range(5, 14)]
            for y in range(61, 65)
        ]
    )
    # Terms agree to a few ulps (test_spatial_function_terms); 6-term sums of values ≲ 1.
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(background(8.0, 62.0), expected[1, 3], rtol=1e-12, atol=1e-12)
    # One parameter per term, or a named error (no reading past the end of the vector).
    for wrong in (params[:1], params[:5], np.append(params, 1.0)):
        with pytest.raises(pm.InvalidInputError, match=f"{wrong.size} parameters given"):
            pm.SpatialBackground(pm.SpatialFunction(modelType, 2, box), wrong)
        with pytest.raises(pm.InvalidInputError, match=f"{wrong.size} parameters given"):
            background.getSpatialFunction()(1.0, 50.0, wrong)


def test_spatial_solution_condition_number(rng: np.random.Generator) -> None:
    config = alConfig(fitForBackground=True, spatialKernelOrder=1, spatialBgOrder=1)
    box = pm.Box2I((0, 0), (128, 128))
    basis, cells, _ = smallSpatialCandidates(rng, config, box, n=8)
    visitor = pm.BuildSpatialKernelVisitor(basis, box, config)
    cells.visitCandidates(visitor, -1)
    visitor.solveLinearEquation()
    sol = visitor.getKernelSolution()
    m = sol.getM()
    e = np.linalg.eigvalsh(m)
    sv = np.linalg.svd(m, compute_uv=False)
    # The smallest eigen/singular value carries ~eps·max error, so the ratio agrees to
    # ~cond·eps relative; cond ≲ 1e9 here, so 1e-5 is safe.
    assert np.linalg.cond(m) < 1e9
    np.testing.assert_allclose(sol.getConditionNumber(), e[-1] / e[0], rtol=1e-5)
    np.testing.assert_allclose(
        sol.getConditionNumber(pm.ConditionNumberType.SVD), sv[0] / sv[-1], rtol=1e-5
    )


def smallSpatialCandidates(
    rng: np.random.Generator, config: pm.PsfMatchConfig, box: pm.Box2I, n: int = 12
) -> tuple[list[pm.FixedKernel], pm.SpatialCellSet, list[pm.KernelCandidate]]:
    """Cheap candidates (15×15 stamps, 6-kernel 5×5 AL basis) at random positions."""
    basis = pm.makeAlardLuptonBasisList(2, 1, [1.0], [2])
    cells = pm.SpatialCellSet(box, 64, 64)
    cands = []
    for _ in range(n):
        x = rng.uniform(box.getMinX(), box.getMaxX())
        y = rng.uniform(box.getMinY(), box.getMaxY())
        template = rng.normal(50.0, 5.0, (15, 15))
        science = scipy.signal.convolve(template, gaussianImage(2, 0.9, 1.2), mode="same")
        science += rng.normal(2.0, 0.5, (15, 15))
        c = pm.KernelCandidate(
            x,
            y,
            pm.MaskedImage(template, None, np.ones((15, 15))),
            pm.MaskedImage(science, None, np.ones((15, 15))),
            config,
        )
        c.build(basis)
        cells.insertCandidate(c)
        cands.append(c)
    return basis, cells, cands


@pytest.mark.parametrize(
    ("constantFirstTerm", "fitForBackground", "nt"),
    # nb = 6, nkt = 6 (order 2), nbt = 3 (order 1): (nb−1)·nkt + 1 + nbt, or nb·nkt + nbt.
    [(True, True, 34), (True, False, 31), (False, True, 39), (False, False, 36)],
)
@pytest.mark.parametrize("modelType", ["chebyshev1", "polynomial"])
def test_spatial_normal_equations_match_numpy_assembly(
    rng: np.random.Generator,
    constantFirstTerm: bool,
    fitForBackground: bool,
    nt: int,
    modelType: str,
) -> None:
    config = alConfig(
        fitForBackground=fitForBackground,
        spatialKernelOrder=2,
        spatialBgOrder=1,
        spatialModelType=modelType,
    )
    box = pm.Box2I((30, 10), (200, 150))
    basis, cells, cands = smallSpatialCandidates(rng, config, box)
    visitor = pm.BuildSpatialKernelVisitor(basis, box, config, constantFirstTerm)
    cells.visitCandidates(visitor, -1)
    assert visitor.getNCandidates() == len(cands)
    sol = visitor.getKernelSolution()
    assert (sol.getNt(), sol.getNkt(), sol.getNbt()) == (nt, 6, 3 if fitForBackground else 0)
    assert sol.getConstantFirstTerm() == constantFirstTerm

    # §5.3 in numpy: P maps basis (and background) coefficients to their θ blocks.
    mType = CHEBYSHEV1 if modelType == "chebyshev1" else POLYNOMIAL
    nb, nkt, nbt = 6, 6, 3 if fitForBackground else 0
    m, b = np.zeros((nt, nt)), np.zeros(nt)
    for c in cands:
        x, y = c.getXCenter(), c.getYCenter()
        pk, pb = referenceTerms(mType, 2, box, x, y), referenceTerms(mType, 1, box, x, y)
        p = np.zeros((nt, nb + (1 if fitForBackground else 0)))
        row = 0
        for k in range(nb):
            if constantFirstTerm and k == 0:
                p[0, 0] = 1.0
                row = 1
            else:
                p[row : row + nkt, k] = pk
                row += nkt
        if fitForBackground:
            p[row : row + nbt, nb] = pb
        q = c.getKernelSolution(RECENT)
        m += p @ q.getM() @ p.T
        b += p @ q.getB()
    scaleM, scaleB = np.abs(m).max(), np.abs(b).max()
    # Same products summed in another order: ~1e-15 relative to the largest entry (entries
    # span many decades for the polynomial model, so the bound is on the largest).
    np.testing.assert_allclose(sol.getM(), m, rtol=0, atol=1e-12 * scaleM)
    np.testing.assert_allclose(sol.getB(), b, rtol=0, atol=1e-12 * scaleB)

    visitor.solveLinearEquation()
    kernel, background = visitor.getSolutionPair()
    theta = sol.getSolution()
    d = 1.0 / np.sqrt(np.diag(m))  # numpy's own equilibrated solve as the reference
    expected = d * np.linalg.solve(m * d[:, None] * d[None, :], d * b)
    # Both solve the equilibrated system, whose condition number is ≲ 1e6 here (the raw one
    # reaches 1e17 for the polynomial model): ≲ 1e6·1e-16 = 1e-10 relative to the largest
    # coefficient, with a factor 100 of margin.
    np.testing.assert_allclose(theta, expected, rtol=0, atol=1e-8 * np.abs(expected).max())
    params = kernel.getSpatialParameters()
    assert params.shape == (nb, nkt) and kernel.getNSpatialParameters() == nkt
    assert kernel.getNBasisKernels() == nb and kernel.isSpatiallyVarying()
    if constantFirstTerm:
        assert params[0, 0] == theta[0] and (params[0, 1:] == 0.0).all()
        assert (params[1:].ravel() == theta[1 : 1 + (nb - 1) * nkt]).all()
    else:
        assert (params.ravel() == theta[: nb * nkt]).all()
    if fitForBackground:
        assert (background.getParameters() == theta[-nbt:]).all()
    else:
        assert list(background.getParameters()) == [0.0]
        assert background(17.0, 93.0) == 0.0


def test_spatially_constant_model_order_zero(rng: np.random.Generator) -> None:
    """nkt = 1: a spatially constant kernel, the joint fit of every candidate's system."""
    config = alConfig(fitForBackground=True, spatialKernelOrder=0, spatialBgOrder=0)
    box = pm.Box2I((0, 0), (128, 128))
    basis, cells, cands = smallSpatialCandidates(rng, config, box, n=5)
    visitor = pm.BuildSpatialKernelVisitor(basis, box, config)
    cells.visitCandidates(visitor, -1)
    visitor.solveLinearEquation()
    kernel, background = visitor.getSolutionPair()
    assert visitor.getKernelSolution().getNt() == 7  # (6 − 1)·1 + 1 + 1
    assert not kernel.isSpatiallyVarying() and kernel.getNSpatialParameters() == 1
    m = sum(c.getKernelSolution(ORIG).getM() for c in cands)
    b = sum(c.getKernelSolution(ORIG).getB() for c in cands)
    a = np.linalg.solve(m, b)
    # A 7×7 system with cond ≈ 5e6 solved two ways: ≲ 5e6·1e-16 = 5e-10 relative to the
    # largest coefficient; 1e-7 leaves margin.
    atol = 1e-7 * np.abs(a).max()
    np.testing.assert_allclose(kernel.getSpatialParameters()[:, 0], a[:6], rtol=0, atol=atol)
    np.testing.assert_allclose(background(5.0, 99.0), a[6], rtol=0, atol=atol)  # the same
    np.testing.assert_array_equal(kernel.computeImage(3, 4)[0], kernel.computeImage(120, 90)[0])


def test_spatial_visitor_errors(rng: np.random.Generator) -> None:
    box = pm.Box2I((0, 0), (128, 128))
    noBg = alConfig(fitForBackground=False)
    basis, cells, cands = smallSpatialCandidates(rng, noBg, box, n=3)
    withBg = pm.BuildSpatialKernelVisitor(basis, box, alConfig(fitForBackground=True))
    with pytest.raises(pm.InvalidInputError, match="normal system is 6x6, expected 7"):
        cells.visitCandidates(withBg, -1)

    unbuilt = flatCandidate(50.0, 50.0, 1e9)  # the best-rated: visited first
    cells.insertCandidate(unbuilt)
    visitor = pm.BuildSpatialKernelVisitor(basis, box, noBg)
    cells.visitCandidates(visitor, -1)
    assert unbuilt.getStatus() == BAD  # an uninitialised candidate is set BAD and skipped
    assert visitor.getNCandidates() == 3
    with pytest.raises(pm.InvalidInputError, match="constantFirstTerm must be given"):
        pm.BuildSpatialKernelVisitor(basis, box, pm.makeKernelControl(noBg))
    with pytest.raises(pm.PsfMatchError, match="getSolutionPair"):
        pm.BuildSpatialKernelVisitor(basis, box, noBg).getSolutionPair()
    # A NaN reaching the spatial normal equations is a named error, never NaN coefficients.
    solution = pm.SpatialKernelSolution(basis, box, pm.makeKernelControl(noBg), True)
    q = np.eye(len(basis))
    q[1, 1] = np.nan
    solution.addConstraint(10.0, 10.0, q, np.ones(len(basis)))
    with pytest.raises(pm.PsfMatchError, match="NaN"):
        solution.solve()


# --------------------------------------------------------------------------------------------
# A simulated field with a spatially varying PSF (§5)
# --------------------------------------------------------------------------------------------

FIELD_XY0, FIELD_W, FIELD_H = (24, 12), 320, 256
SIGMA_T, SCALE, NOISE = 1.4, 1.3, 1.0


def scienceSigma(x: float, y: float) -> float:
    """The science PSF's σ, linear in the parent position."""
    return 2.0 + 0.5 * (x - FIELD_XY0[0]) / FIELD_W + 0.2 * (y - FIELD_XY0[1]) / FIELD_H


def trueBackground(x: Any, y: Any) -> Any:
    return 3.0 + 0.004 * (x - FIELD_XY0[0]) - 0.002 * (y - FIELD_XY0[1])


def addStar(
    image: np.ndarray, xy0: tuple[int, int], x: float, y: float, sigma: float, flux: float
) -> None:
    """A Gaussian star sampled at pixel centres (parent position x, y), out to 7σ."""
    r = math.ceil(7 * sigma)
    ix, iy = int(x) - xy0[0], int(y) - xy0[1]
    xa, xb = max(0, ix - r), min(image.shape[1], ix + r + 2)
    ya, yb = max(0, iy - r), min(image.shape[0], iy + r + 2)
    dx = np.arange(xa, xb)[np.newaxis, :] + xy0[0] - x
    dy = np.arange(ya, yb)[:, np.newaxis] + xy0[1] - y
    g = np.exp(-(dx**2 + dy**2) / (2 * sigma**2)) / (2 * np.pi * sigma**2)
    image[ya:yb, xa:xb] += flux * g


@dataclass
class Field:
    basis: list[pm.FixedKernel]
    config: pm.PsfMatchConfigAL
    cells: pm.SpatialCellSet
    candidates: list[pm.KernelCandidate]


def fieldCandidates(
    rng: np.random.Generator,
    sciencePsf: Any,
    config: pm.PsfMatchConfigAL,
    cellSize: tuple[int, int] = (80, 64),
) -> tuple[pm.SpatialCellSet, list[pm.KernelCandidate]]:
    """42 isolated stars on a jittered 40-px grid (good boxes never overlap, so the candidates'
    noise is independent); fluxes 2e3–1e4; a noise-free template of σ_T = 1.4 (so the weights
    1/σ_n² are exact inverse variances and M_sp⁻¹ is the covariance of the spatial fit); the
    science image SCALE × stars with `sciencePsf(x, y, flux)`, a background gradient and white
    noise σ_n = 1. Candidates get 43×43 stamps, in cells of ``cellSize``."""
    x0, y0 = FIELD_XY0
    template = np.zeros((FIELD_H, FIELD_W))
    science = np.zeros((FIELD_H, FIELD_W))
    positions = []
    for j in range(6):
        for i in range(7):
            x, y = x0 + 30 + 40 * i + rng.uniform(-5, 5), y0 + 28 + 40 * j + rng.uniform(-5, 5)
            flux = rng.uniform(2e3, 1e4)
            addStar(template, FIELD_XY0, x, y, SIGMA_T, flux)
            sciencePsf(science, x, y, SCALE * flux)
            positions.append((x, y))
    yy, xx = np.mgrid[y0 : y0 + FIELD_H, x0 : x0 + FIELD_W]
    science += trueBackground(xx, yy) + rng.normal(0.0, NOISE, science.shape)
    tmi = pm.MaskedImage(template, None, np.zeros_like(template), xy0=FIELD_XY0)
    smi = pm.MaskedImage(science, None, np.full_like(science, NOISE**2), xy0=FIELD_XY0)
    cells = pm.SpatialCellSet(tmi.getBBox(), *cellSize)
    cands = []
    for x, y in positions:
        stamp = pm.Box2I((round(x) - 21, round(y) - 21), (43, 43))
        c = pm.KernelCandidate(x, y, tmi.subimage(stamp), smi.subimage(stamp), config)
        cells.insertCandidate(c)
        cands.append(c)
    return cells, cands


def makeField(rng: np.random.Generator, sciencePsf: Any, config: pm.PsfMatchConfigAL) -> Field:
    """`fieldCandidates` with every candidate's single-kernel fit done."""
    cells, cands = fieldCandidates(rng, sciencePsf, config)
    basis = pm.makeAlardLuptonBasisList(**DEFAULT_AL)
    single = pm.BuildSingleKernelVisitor(basis, config)
    cells.visitCandidates(single, config.nStarPerCell)
    assert single.getNRejected() == 0 and single.getNProcessed() == len(cands)
    return Field(basis, config, cells, cands)


def fieldConfig(**fields: object) -> pm.PsfMatchConfigAL:
    return alConfig(fitForBackground=True, spatialKernelOrder=2, spatialBgOrder=1, **fields)


@pytest.fixture(scope="module")
def gaussianField() -> Field:
    """Science PSF a Gaussian of σ_S(x, y) linear in position: the matching kernel is a
    Gaussian of σ_K = sqrt(σ_S² − σ_T²), from 1.43 to 2.31 px across the field."""

    def psf(image: np.ndarray, x: float, y: float, flux: float) -> None:
        addStar(image, FIELD_XY0, x, y, scienceSigma(x, y), flux)

    return makeField(np.random.default_rng(314159), psf, fieldConfig())


def solveSpatial(field: Field, config: pm.PsfMatchConfigAL) -> Any:
    visitor = pm.BuildSpatialKernelVisitor(field.basis, field.cells.getBBox(), config)
    field.cells.visitCandidates(visitor, config.nStarPerCell)
    assert visitor.getNCandidates() == len(field.candidates)
    visitor.solveLinearEquation()
    return visitor


FIELD_POINTS = [(40.0, 30.0), (330.0, 30.0), (180.0, 140.0), (40.0, 260.0), (330.0, 260.0)]


def kernelWidth2(kernel: Any, theta: np.ndarray, x: float, y: float) -> tuple[float, np.ndarray]:
    """σ² = Σr²K / (2ΣK) of the spatial kernel at (x, y), and its gradient with respect to θ
    (constant first term: a₀ = θ₀, a_m = f(x, y)·θ_block(m))."""
    images = np.stack([b.getImage() for b in kernel.getBasisList()])
    nb, kh, kw = images.shape
    f = kernel.getSpatialFunction().terms(x, y)
    nkt = f.size
    amap = np.zeros((nb, theta.size))  # a(x, y) = amap @ θ
    amap[0, 0] = 1.0
    for m in range(1, nb):
        amap[m, 1 + (m - 1) * nkt : 1 + m * nkt] = f
    v, u = np.mgrid[-(kh // 2) : kh // 2 + 1, -(kw // 2) : kw // 2 + 1]
    s0, s2 = images.sum(axis=(1, 2)), (images * (u**2 + v**2)).sum(axis=(1, 2))
    a = amap @ theta
    k0, k2 = a @ s0, a @ s2
    gradA = (s2 * k0 - k2 * s0) / (2 * k0**2)
    return k2 / (2 * k0), amap.T @ gradA


def test_spatial_fit_recovers_kernel_and_background(gaussianField: Field) -> None:
    visitor = solveSpatial(gaussianField, gaussianField.config)
    kernel, background = visitor.getSolutionPair()
    sol = visitor.getKernelSolution()
    theta = sol.getSolution()
    cov = np.linalg.inv(sol.getM())  # exact covariance: inverse-variance weights, linear model
    sigmaSum = math.sqrt(cov[0, 0])
    assert sigmaSum < 2e-3  # the test has power: 1σ is < 0.15 % of the scale
    fb = background.getSpatialFunction()
    for x, y in FIELD_POINTS:
        # The kernel sum is the constant first coefficient: SCALE within 4σ. A seeded draw; the
        # model's own error (AL basis, quadratic spatial model, a background gradient the
        # per-stamp constant cannot follow), measured noise-free, is ≤ 0.5σ for the sum, the
        # background and the width alike, so a correct fit passes with p ≳ 1 − 5e-4 per check.
        assert abs(kernel.getSum(x, y) - SCALE) < 4 * sigmaSum
        image, kSum = kernel.computeImage(x, y)
        # Σ pixels against the returned sum: one sum of 441 doubles.
        np.testing.assert_allclose(image.sum(), kSum, rtol=1e-13)
        t = fb.terms(x, y)
        sigmaBg = math.sqrt(t @ cov[-3:, -3:] @ t)
        assert sigmaBg < 0.05  # power: the gradient changes b by 1.3 across the field
        assert abs(background(x, y) - trueBackground(x, y)) < 4 * sigmaBg  # as above
        # The kernel's width: σ² from its second moment, with the error propagated from M⁻¹.
        w2, grad = kernelWidth2(kernel, theta, x, y)
        sigmaW2 = math.sqrt(grad @ cov @ grad)
        truth = gaussianImage(10, math.sqrt(scienceSigma(x, y) ** 2 - SIGMA_T**2))
        trueW2 = (truth * (np.add.outer(np.arange(-10, 11) ** 2, np.arange(-10, 11) ** 2))).sum()
        trueW2 /= 2
        assert sigmaW2 < 0.03 * trueW2  # power: σ_K² changes by a factor 2.6 across the field
        assert abs(w2 - trueW2) < 4 * sigmaW2  # as above


def test_spatial_fit_with_a_varying_first_term(gaussianField: Field) -> None:
    """Without a constant first term the kernel sum a₀(x, y) = f(x, y)·θ₀ is fitted as well
    (nb·nkt + nbt = 27·6 + 3 unknowns) and must come out SCALE everywhere within its noise."""
    config = gaussianField.config
    visitor = pm.BuildSpatialKernelVisitor(
        gaussianField.basis, gaussianField.cells.getBBox(), config, constantFirstTerm=False
    )
    gaussianField.cells.visitCandidates(visitor, config.nStarPerCell)
    visitor.solveLinearEquation()
    kernel, _ = visitor.getSolutionPair()
    sol = visitor.getKernelSolution()
    assert sol.getNt() == 165 and not sol.getConstantFirstTerm()
    cov = np.linalg.inv(sol.getM())
    f = kernel.getSpatialFunction()
    sums = []
    for x, y in FIELD_POINTS:
        t = f.terms(x, y)
        sigma = math.sqrt(t @ cov[:6, :6] @ t)
        assert sigma < 5e-3  # power: under 0.4 % of the scale
        assert abs(kernel.getSum(x, y) - SCALE) < 4 * sigma  # 4σ, as in the test above
        sums.append(kernel.getSum(x, y))
    assert np.ptp(sums) > 0.0  # the sum really is spatially variable now


def test_polynomial_and_chebyshev_models_agree(gaussianField: Field) -> None:
    """Both families span the polynomials of total degree ≤ N, so they fit the same model."""
    chebyshev = solveSpatial(gaussianField, fieldConfig(spatialModelType="chebyshev1"))
    polynomial = solveSpatial(gaussianField, fieldConfig(spatialModelType="polynomial"))
    kc, bc = chebyshev.getSolutionPair()
    kp, bp = polynomial.getSolutionPair()
    assert kc.getSpatialFunction().getType() == CHEBYSHEV1
    assert kp.getSpatialFunction().getType() == POLYNOMIAL
    for x, y in FIELD_POINTS:
        ic, ip = kc.computeImage(x, y)[0], kp.computeImage(x, y)[0]
        # The same least-squares problem solved in two bases; they differ by rounding amplified
        # by the condition numbers of the equilibrated systems (≲ 1e9 Chebyshev, ≲ 1e11
        # polynomial in raw coordinates ~300): ≲ 1e11·1e-16 = 1e-5 relative at worst, on a
        # kernel peaking at ~0.2 and a background ~3–5. (A solve without equilibration was
        # off by ~2 in kernel pixels.)
        np.testing.assert_allclose(ip, ic, rtol=0, atol=1e-6)
        np.testing.assert_allclose(bp(x, y), bc(x, y), rtol=1e-5)


# --------------------------------------------------------------------------------------------
# Assessment (§5.5)
# --------------------------------------------------------------------------------------------

SIGMA_A, SIGMA_B = 1.0, 2.0


def mixtureWeight(x: float) -> float:
    return (x - FIELD_XY0[0]) / FIELD_W


def mixtureKernel(box: pm.Box2I, scale: float = SCALE) -> pm.LinearCombinationKernel:
    """K(x, y) = scale·[(1 − u)·G(σ_A) + u·G(σ_B)], u = (x − x0)/W, as a polynomial model."""
    basis = [pm.FixedKernel(gaussianImage(10, s)) for s in (SIGMA_A, SIGMA_B)]
    x0, w = FIELD_XY0[0], FIELD_W
    params = scale * np.array([[1 + x0 / w, -1 / w, 0.0], [-x0 / w, 1 / w, 0.0]])
    return pm.LinearCombinationKernel(basis, pm.SpatialFunction(POLYNOMIAL, 1, box), params)


def polyBackground(box: pm.Box2I, offset: float = 0.0) -> pm.SpatialBackground:
    x0, y0 = FIELD_XY0
    params = np.array([3.0 - 0.004 * x0 + 0.002 * y0 + offset, 0.004, -0.002])
    return pm.SpatialBackground(pm.SpatialFunction(POLYNOMIAL, 1, box), params)


@pytest.fixture(scope="module")
def mixtureField() -> Field:
    """Science PSF G(σ_T) ⊗ K(x, y) with the mixture kernel: G_T ⊗ G_A is a Gaussian of
    σ² = σ_T² + σ_A², so the science stars are rendered analytically and the true kernel is an
    exact LinearCombinationKernel."""

    def psf(image: np.ndarray, x: float, y: float, flux: float) -> None:
        u = mixtureWeight(x)
        addStar(image, FIELD_XY0, x, y, math.hypot(SIGMA_T, SIGMA_A), (1 - u) * flux)
        addStar(image, FIELD_XY0, x, y, math.hypot(SIGMA_T, SIGMA_B), u * flux)

    return makeField(np.random.default_rng(271828), psf, fieldConfig())


def test_assessment_passes_the_true_kernel_and_rejects_a_wrong_one(mixtureField: Field) -> None:
    box = mixtureField.cells.getBBox()
    cands = mixtureField.candidates
    trueKernel = mixtureKernel(box)
    truth = gaussianImage(10, SIGMA_A) * (1 - mixtureWeight(100.0))
    truth += gaussianImage(10, SIGMA_B) * mixtureWeight(100.0)
    # The polynomial parameters reproduce the mixture (a few ulps of weights ~1).
    np.testing.assert_allclose(trueKernel.computeImage(100.0, 7.0)[0], SCALE * truth, atol=1e-14)

    assess = pm.AssessSpatialKernelVisitor(trueKernel, polyBackground(box), mixtureField.config)
    mixtureField.cells.visitCandidates(assess, -1)
    # Residuals of the true model are pure noise: |mean| ~ 1/23 ≪ 0.25 and rms ~ 1 < 1.5.
    assert (assess.getNGood(), assess.getNRejected()) == (len(cands), 0)
    assert assess.getNProcessed() == len(cands)
    assert all(c.getStatus() == GOOD for c in cands)

    # A wrong scale and a background off by 10σ_n: every candidate's residual mean is ≫ 0.25.
    wrong = pm.AssessSpatialKernelVisitor(
        mixtureKernel(box, scale=1.0), polyBackground(box, offset=10.0), mixtureField.config
    )
    noClip = pm.AssessSpatialKernelVisitor(
        mixtureKernel(box, scale=1.0),
        polyBackground(box, offset=10.0),
        alConfig(spatialKernelClipping=False),
    )
    mixtureField.cells.visitCandidates(noClip, -1)
    assert (noClip.getNGood(), noClip.getNRejected()) == (len(cands), 0)  # clipping is gated
    mixtureField.cells.visitCandidates(wrong, -1)
    assert (wrong.getNGood(), wrong.getNRejected()) == (0, len(cands))
    assert all(c.getStatus() == BAD for c in cands)
    for c in cands:
        c.setStatus(GOOD)

    # The fitted spatial model passes as well, and recovers the true kernel.
    visitor = solveSpatial(mixtureField, mixtureField.config)
    kernel, background = visitor.getSolutionPair()
    refit = pm.AssessSpatialKernelVisitor(kernel, background, mixtureField.config)
    mixtureField.cells.visitCandidates(refit, -1)
    assert (refit.getNGood(), refit.getNRejected()) == (len(cands), 0)


def test_assessment_of_uninitialised_candidate() -> None:
    box = pm.Box2I((0, 0), (64, 64))
    cells = pm.SpatialCellSet(box, 64, 64)
    c = flatCandidate(10.0, 10.0, 1.0)
    cells.insertCandidate(c)
    assess = pm.AssessSpatialKernelVisitor(mixtureKernel(box), polyBackground(box), alConfig())
    cells.visitCandidates(assess, -1)
    assert c.getStatus() == BAD
    assert (assess.getNGood(), assess.getNRejected(), assess.getNProcessed()) == (0, 0, 0)


# --------------------------------------------------------------------------------------------
# PCA (§5.7)
# --------------------------------------------------------------------------------------------


def test_pca_of_identical_deltas() -> None:
    delta = np.zeros((5, 5))
    delta[2, 2] = 1.0
    pca = pm.KernelPca()
    for _ in range(3):
        pca.addImage(delta, 1.0)
    pca.analyze()
    # R = 1/3 everywhere: eigenvalues 1, 0, 0, from a 3×3 eigensolver (a few ulps).
    np.testing.assert_allclose(pca.getEigenValues(), [1.0, 0.0, 0.0], rtol=0, atol=1e-15)
    np.testing.assert_allclose(pca.getEigenImages()[0], delta, rtol=0, atol=1e-15)  # same

    centred = pm.KernelPca()
    for _ in range(3):
        centred.addImage(delta, 1.0)
    centred.subtractMean()
    np.testing.assert_array_equal(centred.getMean(), delta)  # (1 + 1 + 1)/3 is exact
    centred.analyze()
    assert list(centred.getEigenValues()) == [0.0, 0.0, 0.0]  # the images are exactly zero
    assert all((im == 0.0).all() for im in centred.getEigenImages())


def test_pca_matches_numpy(rng: np.random.Generator) -> None:
    images = [rng.normal(size=(7, 7)) for _ in range(6)]
    fluxes = rng.uniform(0.5, 2.0, 6)
    pca = pm.KernelPca()
    for im, f in zip(images, fluxes, strict=True):
        pca.addImage(im, f)
    pca.analyze()
    n = len(images)
    stack = np.stack(images).reshape(n, -1) / fluxes[:, np.newaxis]
    r = stack @ stack.T / n  # R_ij = ⟨I_i, I_j⟩/(f_i f_j)/N
    evals, evecs = np.linalg.eigh(r)
    evals, evecs = evals[::-1], evecs[:, ::-1]
    # Two symmetric eigensolvers on a 6×6 spectrum: a few ulps of λ_max.
    np.testing.assert_allclose(pca.getEigenValues(), evals, rtol=0, atol=1e-13 * evals[0])
    for k in range(n):
        e = sum(evecs[j, k] * (fluxes.mean() / fluxes[j]) * images[j] for j in range(n))
        e = e / (e.min() if abs(e.min()) > e.max() else e.max())
        got = pca.getEigenImages()[k]
        assert got.flat[np.abs(got).argmax()] == 1.0  # largest-magnitude pixel is exactly +1
        # Eigenvectors to ~eps·λ_max/gap ≈ 1e-14 (gaps ≥ 1 against λ_max ≈ 35), then sums of
        # six images of O(3) rescaled by O(1): 1e-12 absolute.
        np.testing.assert_allclose(got, e, rtol=0, atol=1e-12)


def test_pca_of_noisy_gaussians_and_the_pca_visitor(rng: np.random.Generator) -> None:
    truth = gaussianImage(5, 1.5)
    noise, n = 1e-3, 40
    pca = pm.KernelPca()
    for _ in range(n):
        pca.addImage(truth + rng.normal(0.0, noise, truth.shape), 1.0)
    pca.subtractMean()
    # The mean of n noisy copies: per-pixel σ = 1e-3/√40 ≈ 1.6e-4; 5σ bounds 121 pixels.
    np.testing.assert_allclose(pca.getMean(), truth, rtol=0, atol=5 * noise / math.sqrt(n))

    # The visitor adds each candidate's ORIG kernel at unit sum: science = template ⊗ K_i with
    # a delta-function basis recovers K_i exactly, so the images are K_i / ΣK_i.
    config = alConfig()
    basis = pm.makeDeltaFunctionBasisList(5, 5)
    cells = pm.SpatialCellSet(pm.Box2I((0, 0), (128, 128)), 64, 64)
    kernels = []
    for i in range(4):
        k = gaussianImage(2, 0.7 + 0.2 * i, total=0.8 + 0.3 * i)
        template = rng.normal(100.0, 10.0, (21, 21))
        science = scipy.signal.convolve(template, k, mode="same")
        c = pm.KernelCandidate(
            20.0 + 25 * i,
            30.0 + 20 * i,
            pm.MaskedImage(template, None, np.ones((21, 21))),
            pm.MaskedImage(science, None, np.ones((21, 21))),
            config,
        )
        c.build(basis)
        cells.insertCandidate(c)
        kernels.append(k / k.sum())
    cells.insertCandidate(flatCandidate(100.0, 100.0, 1e9))  # unbuilt: skipped silently
    visitorPca = pm.KernelPca()
    cells.visitCandidates(pm.KernelPcaVisitor(visitorPca), -1)
    assert visitorPca.getNImages() == 4
    visitorPca.subtractMean()
    # Noise-free delta-function fits: the kernels to ~1e-12 (cond ~1e2 on 25 parameters).
    np.testing.assert_allclose(visitorPca.getMean(), np.mean(kernels, axis=0), atol=1e-10)


# --------------------------------------------------------------------------------------------
# Whole-image convolution with a spatially varying kernel
# --------------------------------------------------------------------------------------------


def variableKernel(
    rng: np.random.Generator, box: pm.Box2I, variation: float = 0.1
) -> pm.LinearCombinationKernel:
    """9 separable AL kernels and one non-separable random kernel (both convolution paths),
    coefficients quadratic (Chebyshev) in position with spatial terms ~ `variation`. At 0.1,
    Σ K² changes by a factor 5 across the box (every pixel sees a different kernel)."""
    basis = list(pm.makeAlardLuptonBasisList(4, 2, [1.0, 2.0], [2, 1]))
    basis.append(pm.FixedKernel(rng.normal(0.0, 0.05, (9, 9))))
    params = rng.normal(0.0, 0.1, (len(basis), 6))
    params[:, 1:] *= variation / 0.1
    params[0, 0] = 1.0
    return pm.LinearCombinationKernel(basis, pm.SpatialFunction(CHEBYSHEV1, 2, box), params)


def bruteForce(mi: pm.MaskedImage, kernel: Any) -> tuple[np.ndarray, np.ndarray]:
    """Image ⊗ K(x, y) and variance ⊗ K(x, y)² on the good box, evaluating the kernel at every
    output pixel's parent position and dotting it with the flipped input patch."""
    (kw, kh), (cx, cy) = kernel.getDimensions(), kernel.getCtr()
    x0, y0 = mi.getXY0()
    img = sliding_window_view(mi.image.astype(np.float64), (kh, kw))
    var = sliding_window_view(mi.variance.astype(np.float64), (kh, kw))
    ny, nx = img.shape[:2]
    out, outVar = np.empty((ny, nx)), np.empty((ny, nx))
    for oy in range(ny):
        ks = np.stack(
            [kernel.computeImage(x0 + ox + cx, y0 + oy + cy)[0][::-1, ::-1] for ox in range(nx)]
        )
        out[oy] = np.einsum("xji,xji->x", ks, img[oy])
        outVar[oy] = np.einsum("xji,xji->x", ks**2, var[oy])
    return out, outVar


def spatialImage(
    rng: np.random.Generator, shape: tuple[int, int], dtype: type, xy0: tuple[int, int]
) -> pm.MaskedImage:
    image = rng.normal(100.0, 10.0, shape).astype(dtype)
    variance = rng.uniform(1.0, 1.2, shape).astype(dtype)
    mask = np.zeros(shape, dtype=np.int32)
    mask[rng.uniform(size=shape) < 0.001] = 1 << 3
    return pm.MaskedImage(image, mask, variance, xy0=xy0)


def interior(shape: tuple[int, int], margin: int = 4) -> tuple[slice, slice]:
    return slice(margin, shape[0] - margin), slice(margin, shape[1] - margin)


# The variance plane holds K² fixed on tiles over which it changes by ≤ varianceTolerance (L1)
# and truncates its SVD at a tenth of that: for a variance within a factor 1.2 of uniform the
# relative error is ≤ 1.1·tolerance·1.2 ≈ 1.32·tolerance (plus float32 output rounding).
VARIANCE_RTOL = 1.4


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_spatial_convolution_matches_brute_force(rng: np.random.Generator, dtype: type) -> None:
    mi = spatialImage(rng, (256, 256), dtype, (37, 21))
    kernel = variableKernel(rng, mi.getBBox())
    arrays = (mi.image, mi.mask, mi.variance)
    copies = [a.copy() for a in arrays]
    out = pm.convolve(mi, kernel)
    assert out.image.dtype == dtype and out.variance.dtype == dtype
    assert out.getXY0() == mi.getXY0()
    for a, c in zip(arrays, copies, strict=True):  # the input is never modified
        np.testing.assert_array_equal(a, c)

    expected, expectedVar = bruteForce(mi, kernel)
    good = interior(mi.image.shape)
    # The image plane regroups the same sums exactly (~1e-14 in float64; float32 output
    # rounding is 6e-8 relative); 1e-5 relative is the accuracy the reference accepts for its
    # interpolated kernels (§10.1), and a wrong coefficient, position or flip is ≥ 1e-3 here.
    np.testing.assert_allclose(out.image[good], expected, rtol=1e-5)
    # Exactness, not merely the reference's 1e-5: in float64 the same 81-term sums, regrouped
    # (~1e-15 relative on outputs ~100 that never cancel to near zero). This kernel's pieces
    # cancel by ~11, so a float32 image is summed in float32 (convolve_spatial.cc,
    # kFloatCancellation = 16): its rounding is bounded by 4·eps32·16 ≈ 7.6e-6 relative
    # (measured 1.6e-6); test_spatial_convolution_float32_sums_in_double_when_pieces_cancel
    # covers the other path.
    exact = 1e-12 if dtype == np.float64 else 4 * 16 * float(np.finfo(np.float32).eps)
    np.testing.assert_allclose(out.image[good], expected, rtol=exact)
    np.testing.assert_allclose(out.variance[good], expectedVar, rtol=VARIANCE_RTOL * 1e-3)


def test_spatial_convolution_float32_sums_in_double_when_pieces_cancel(
    rng: np.random.Generator,
) -> None:
    """A float32 image under a kernel whose pieces cancel strongly (its sum a few per cent of
    their magnitudes: cancellation far above 16) is summed in float64 and rounded once, so
    it is exact to half an ulp."""
    mi = spatialImage(rng, (96, 96), np.float32, (3, -8))
    kernel = variableKernel(rng, mi.getBBox())
    params = np.array(kernel.getSpatialParameters())
    params[0, 0] = 0.02  # the term that carries the kernel sum, 50 times smaller
    kernel = pm.LinearCombinationKernel(
        list(kernel.getBasisList()), kernel.getSpatialFunction(), params
    )
    expected, _ = bruteForce(mi, kernel)
    good = interior(mi.image.shape)
    # The float64 sum rounded once to float32: ≤ ½ ulp = eps32/2 relative to each output,
    # however small (they range from ~0.002 to ~40 here); summed in float32 the worst is
    # ~8e-4 relative (measured by forcing that path).
    out = pm.convolve(mi, kernel)
    np.testing.assert_allclose(out.image[good], expected, rtol=float(np.finfo(np.float32).eps))


def test_spatial_convolution_variance_tolerance(rng: np.random.Generator) -> None:
    """A slowly varying kernel (Σ K² within ±2 % over 256 px), where the tiles are large and
    the variance error approaches the tolerance, and a tighter tolerance on a cut-out."""
    mi = spatialImage(rng, (256, 256), np.float64, (-30, 5))
    kernel = variableKernel(rng, mi.getBBox(), variation=3e-4)
    _, expectedVar = bruteForce(mi, kernel)
    out = pm.convolve(mi, kernel)
    np.testing.assert_allclose(  # tolerance 1e-3: see VARIANCE_RTOL
        out.variance[interior((256, 256))], expectedVar, rtol=VARIANCE_RTOL * 1e-3
    )
    cut = mi.subimage(pm.Box2I((0, 60), (72, 64)))
    _, cutVar = bruteForce(cut, kernel)
    for tol in (1e-4, 1e-5):
        fine = pm.convolve(cut, kernel, varianceTolerance=tol)
        # The same bound at the tighter tolerance, plus ~1e-13 of rounding.
        np.testing.assert_allclose(fine.variance[interior((64, 72))], cutVar, rtol=1.4 * tol)
    with pytest.raises(pm.InvalidInputError, match="varianceTolerance must be > 0"):
        pm.convolve(cut, kernel, varianceTolerance=0.0)


def test_spatial_convolution_uses_parent_coordinates(rng: np.random.Generator) -> None:
    """The kernel is evaluated at array index + xy0: the same pixels at two origins see
    different kernels, each the brute force of its own origin."""
    image = rng.normal(100.0, 10.0, (40, 52))
    box = pm.Box2I((0, 0), (120, 90))
    kernel = variableKernel(rng, box)
    results = []
    for xy0 in ((0, 0), (61, 37)):
        mi = pm.MaskedImage(image, None, np.ones_like(image), xy0=xy0)
        out = pm.convolve(mi, kernel)
        expected, expectedVar = bruteForce(mi, kernel)
        np.testing.assert_allclose(out.image[interior((40, 52))], expected, rtol=1e-5)  # as above
        np.testing.assert_allclose(  # see VARIANCE_RTOL
            out.variance[interior((40, 52))], expectedVar, rtol=VARIANCE_RTOL * 1e-3
        )
        results.append(out.image[interior((40, 52))])
    assert np.abs(results[0] - results[1]).min() > 1e-3  # far above any rounding


def test_spatial_convolution_border_threads_and_copy_edge(rng: np.random.Generator) -> None:
    mi = spatialImage(rng, (150, 110), np.float32, (-5, 40))
    kernel = variableKernel(rng, mi.getBBox())
    one = pm.convolve(mi, kernel, nThreads=1)
    two = pm.convolve(mi, kernel, nThreads=2)
    for a, b in ((one.image, two.image), (one.variance, two.variance), (one.mask, two.mask)):
        np.testing.assert_array_equal(a, b)  # bit for bit

    border = np.ones(mi.image.shape, dtype=bool)
    border[4:-4, 4:-4] = False
    assert np.isnan(one.image[border]).all() and np.isposinf(one.variance[border]).all()
    np.testing.assert_array_equal(one.mask[border], mi.mask[border] | NO_DATA)
    assert np.isfinite(one.image[~border]).all() and np.isfinite(one.variance[~border]).all()
    assert not (one.mask[~border] & (NO_DATA | EDGE)).any()

    copied = pm.convolve(mi, kernel, doCopyEdge=True)
    np.testing.assert_array_equal(copied.image[border], mi.image[border])
    np.testing.assert_array_equal(copied.variance[border], mi.variance[border])
    np.testing.assert_array_equal(copied.mask[border], mi.mask[border] | EDGE)
    np.testing.assert_array_equal(copied.image[~border], one.image[~border])
    assert not (copied.mask & NO_DATA).any()

    with pytest.raises(pm.InvalidInputError, match="spatially varying kernel is not supported"):
        pm.convolve(mi, kernel, doNormalize=True)
    small = pm.MaskedImage(np.zeros((8, 20)), xy0=(0, 0))
    with pytest.raises(pm.InvalidInputError, match="smaller than the 9x9 kernel"):
        pm.convolve(small, kernel)


def observeCall(call: Any) -> tuple[bool, int]:
    """Run ``call`` in a worker thread with the interpreter's switch interval at 1000 s, so a
    thread holding the GIL keeps it until it releases it explicitly. Returns whether this
    (main) thread got the GIL while the worker was inside ``call``, and the largest number of
    the process's threads seen meanwhile (sampled from /proc while the call ran)."""
    state = {"inside": False, "done": False}
    started = threading.Event()

    def worker() -> None:
        started.set()
        state["inside"] = True
        call()
        state["done"] = True

    baseline = len(os.listdir("/proc/self/task"))
    old = sys.getswitchinterval()
    sys.setswitchinterval(1000.0)
    try:
        thread = threading.Thread(target=worker)
        thread.start()
        # Waiting releases the GIL; to go on we need it back, and with the long switch
        # interval we only get it when the worker releases it: inside the call (if the core
        # drops the GIL) or at its end.
        started.wait()
        gotInside = state["inside"] and not state["done"]
        nThreads = baseline
        while gotInside and not state["done"]:
            nThreads = max(nThreads, len(os.listdir("/proc/self/task")))
            time.sleep(2e-4)  # releases the GIL: the worker can finish
        thread.join()
    finally:
        sys.setswitchinterval(old)
    return gotInside, nThreads - baseline


def test_spatial_convolution_releases_the_gil_and_uses_its_threads(
    rng: np.random.Generator,
) -> None:
    """The compiled convolutions run without the GIL, on nThreads threads of their own."""
    if not os.path.isdir("/proc/self/task"):
        pytest.skip("needs /proc to count threads")
    mi = spatialImage(rng, (384, 384), np.float32, (0, 0))
    kernel = variableKernel(rng, mi.getBBox())
    control = pm._core.ConvolutionControl()
    control.nThreads = 2
    calls = {
        "spatial": lambda: pm._core.convolveSpatialArrays(
            mi.image, mi.mask, mi.variance, (0, 0), kernel, control, 1e-3
        ),
        "fixed": lambda: pm._core.convolveMaskedImageArrays(
            mi.image, mi.mask, mi.variance, kernel.computeKernel(100.0, 100.0), control
        ),
    }
    for name, call in calls.items():
        # The main thread needs to wake up while the call (tens of ms) runs; on a loaded
        # machine it may miss it, so a few tries. A call that kept the GIL can never pass.
        for _ in range(5):
            gotInside, extraThreads = observeCall(call)
            if gotInside and extraThreads >= 3:
                break
        assert gotInside, f"{name}: the GIL was held for the whole call"
        # The worker thread itself plus the 2 threads of nThreads = 2.
        assert extraThreads >= 3, f"{name}: saw only {extraThreads} extra threads"


def test_spatial_convolution_mask_dilation(rng: np.random.Generator) -> None:
    """Basis kernels with small disjoint footprints and coefficients ≥ 0.5 everywhere: the
    footprint of K(x, y) is the union of theirs at every pixel."""
    shape = (40, 36)
    box = pm.Box2I((3, 9), (shape[1], shape[0]))
    footprints = [[(3, 3)], [(0, 6), (3, 1)], [(5, 5), (6, 0)]]
    basis = []
    for pixels in footprints:
        k = np.zeros((7, 7))
        for j, i in pixels:
            k[j, i] = rng.uniform(0.5, 1.0)
        basis.append(pm.FixedKernel(k))
    params = np.array([[1.0, 0.3, 0.2]] * 3)  # a ≥ 0.5 on [−1, 1]²
    kernel = pm.LinearCombinationKernel(basis, pm.SpatialFunction(CHEBYSHEV1, 1, box), params)
    mask = np.zeros(shape, dtype=np.int32)
    for bit in (0, 2, 5):
        mask[rng.uniform(size=shape) < 0.03] |= 1 << bit
    mi = pm.MaskedImage(rng.normal(size=shape), mask, np.ones(shape), xy0=(3, 9))
    out = pm.convolve(mi, kernel)
    windows = sliding_window_view(mask, (7, 7))
    expected = np.zeros(windows.shape[:2], dtype=np.int32)
    for oy in range(expected.shape[0]):
        for ox in range(expected.shape[1]):
            k = kernel.computeImage(3 + ox + 3, 9 + oy + 3)[0][::-1, ::-1]
            expected[oy, ox] = np.bitwise_or.reduce(windows[oy, ox][k != 0.0])
    np.testing.assert_array_equal(out.mask[3:-3, 3:-3], expected)


def threadedField(nThreads: int) -> tuple[list[pm.KernelCandidate], Any, Any]:
    """`fieldCandidates` in 20 cells, every third star drawn 4 px off in the science image (a
    shift the AL basis cannot follow, which the residual clipping rejects); the single-kernel
    visitor and the assessment on ``nThreads``."""
    drawn = []

    def psf(image: np.ndarray, x: float, y: float, flux: float) -> None:
        shift = 4.0 if len(drawn) % 3 == 0 else 0.0
        addStar(image, FIELD_XY0, x + shift, y, scienceSigma(x, y), flux)
        drawn.append((x, y))

    config = fieldConfig(nThreads=nThreads)
    cells, cands = fieldCandidates(np.random.default_rng(57721), psf, config, (64, 64))
    basis = pm.makeAlardLuptonBasisList(**DEFAULT_AL)
    single = pm.BuildSingleKernelVisitor(basis, config)
    counts = []
    for _ in range(3):  # rejections promote the next candidates of their cells
        cells.visitCandidates(single, 2)
        counts.append((single.getNProcessed(), single.getNRejected()))
    spatial = pm.BuildSpatialKernelVisitor(basis, cells.getBBox(), config)
    cells.visitCandidates(spatial, 2)
    spatial.solveLinearEquation()
    assess = pm.AssessSpatialKernelVisitor(*spatial.getSolutionPair(), config)
    cells.visitCandidates(assess, 2)
    return cands, counts, assess


def test_threaded_visits_equal_the_serial_ones() -> None:
    """Visitors that only touch their candidate visit cells on several threads; every status,
    counter and solution equals the serial visit's, bit for bit, rejections included."""
    serial = threadedField(1)
    assert serial[1][0][1] > 0  # the shifted stamps were rejected ...
    assert sum(c.getStatus() == GOOD for c in serial[0]) > 10  # ... and good ones promoted
    for nThreads in (2, 4):
        cands, counts, assess = threadedField(nThreads)
        assert [c.getStatus() for c in cands] == [c.getStatus() for c in serial[0]]
        for ours, theirs in zip(cands, serial[0], strict=True):
            assert ours.isInitialized() == theirs.isInitialized()
            if ours.isInitialized():
                assert ours.getKsum(pm.KernelCandidate.ORIG) == theirs.getKsum(
                    pm.KernelCandidate.ORIG
                )
        assert counts == serial[1]
        assert (assess.getNGood(), assess.getNRejected(), assess.getNProcessed()) == (
            serial[2].getNGood(),
            serial[2].getNRejected(),
            serial[2].getNProcessed(),
        )


def matchingKernelField(box: pm.Box2I) -> pm.LinearCombinationKernel:
    """A realistic matching kernel: the default 21×21 AL basis fitted, at 5×5 points, to the
    Gaussians that match a σ 1.6 template to a science PSF widening from σ 2.2 to 2.8 across the
    box (with a 0.1-px centroid drift), each coefficient then fitted with the six order-2
    Chebyshev terms — what the spatial fit produces on a real pair."""
    basis = list(pm.makeAlardLuptonBasisList(10, 3, [0.7, 1.5, 3.0], [4, 2, 2]))
    function = pm.SpatialFunction(CHEBYSHEV1, 2, box)
    design = np.stack([b.getImage().ravel() for b in basis], axis=1)
    u = np.arange(-10, 11, dtype=float)
    terms, coefficients = [], []
    for fy in np.linspace(0.0, 1.0, 5):
        for fx in np.linspace(0.0, 1.0, 5):
            x = box.getMinX() + fx * (box.getWidth() - 1)
            y = box.getMinY() + fy * (box.getHeight() - 1)
            sigma = math.sqrt((2.2 + 0.6 * fx) ** 2 - 1.6**2)
            g = np.outer(
                np.exp(-0.5 * ((u + 0.05 * fy) / sigma) ** 2),
                np.exp(-0.5 * ((u - 0.1 * fx) / sigma) ** 2),
            )
            coefficients.append(np.linalg.lstsq(design, 1.25 * g.ravel() / g.sum(), rcond=None)[0])
            terms.append(function.terms(x, y))
    params = np.linalg.lstsq(np.array(terms), np.array(coefficients), rcond=None)[0].T
    return pm.LinearCombinationKernel(basis, function, params)


def test_variance_plane_within_1e3_under_bright_stars(rng: np.random.Generator) -> None:
    """The variance plane's K² model at the default tolerance stays within 1e-3 relative of the
    exact K(x, y)² ⊗ V even where V has star peaks 300× the sky (Poisson variance of bright
    stars), for a realistic matching kernel. (The model bounds the L1 error of K², so a peaked
    V weights the kernel's wings more; for a smooth V the error is below the tolerance.)"""
    shape = (96, 120)
    box = pm.Box2I((0, 0), (512, 512))  # the kernel's field: the cut-out sits inside it
    kernel = matchingKernelField(box)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    variance = np.full(shape, 100.0)
    for cx, cy in rng.uniform(12, [shape[1] - 12, shape[0] - 12], (12, 2)):
        variance += 3e4 * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * 1.5**2))
    image = rng.normal(100.0, 10.0, shape)
    mi = pm.MaskedImage(image, None, variance, xy0=(300, 150))
    out = pm.convolve(mi, kernel)
    _, expectedVar = bruteForce(mi, kernel)
    good = interior(shape, 10)
    relative = np.abs(out.variance[good] / expectedVar - 1.0)
    assert relative.max() < 1e-3


@pytest.mark.parametrize("constantFirstTerm", [True, False])
def test_spatial_normal_equations_bit_exact_assembly(
    rng: np.random.Generator, constantFirstTerm: bool
) -> None:
    """addConstraint adds, block by block, (q[m, n]·p_m) ⊗ p_n to M and w[m]·p_m to b, each
    product rounded then added, candidate after candidate: numpy doing the same in the same
    order gives the same bits (on symmetric and on non-symmetric q)."""
    config = alConfig(fitForBackground=True, spatialKernelOrder=2, spatialBgOrder=1)
    box = pm.Box2I((30, 10), (200, 150))
    basis = pm.makeAlardLuptonBasisList(3, 2, [0.8, 1.6], [2, 1])
    nb = len(basis)
    sol = pm.SpatialKernelSolution(basis, box, pm.makeKernelControl(config), constantFirstTerm)
    kFunc = pm.SpatialFunction(CHEBYSHEV1, 2, box)
    bFunc = pm.SpatialFunction(CHEBYSHEV1, 1, box)
    nt = sol.getNt()
    m, b = np.zeros((nt, nt)), np.zeros(nt)
    for _ in range(7):
        x, y = rng.uniform(30, 230), rng.uniform(10, 160)
        q = rng.normal(0.0, 1e3, (nb + 1, nb + 1))
        w = rng.normal(0.0, 1e3, nb + 1)
        sol.addConstraint(x, y, q, w)
        pk, pb = np.asarray(kFunc.terms(x, y)), np.asarray(bFunc.terms(x, y))
        blocks = []
        row = 0
        for k in range(nb):
            p = np.ones(1) if (constantFirstTerm and k == 0) else pk
            blocks.append((row, p))
            row += p.size
        blocks.append((nt - pb.size, pb))
        for k, (start, p) in enumerate(blocks):
            b[start : start + p.size] = b[start : start + p.size] + w[k] * p
        for n, (sn, pn) in enumerate(blocks):
            for k, (sm, pm_) in enumerate(blocks):
                m[sm : sm + pm_.size, sn : sn + pn.size] += np.multiply.outer(q[k, n] * pm_, pn)
    np.testing.assert_array_equal(np.asarray(sol.getM()), m)
    np.testing.assert_array_equal(np.asarray(sol.getB()), b)
