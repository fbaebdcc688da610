# SPDX-License-Identifier: BSD-3-Clause
"""PsfMatchTask._solve and _diagnostic on simulated fields with a known matching kernel.

The fields are rendered here, independently of psfmatch: every star is a pixel-integrated
Gaussian (erf differences), of width σ_t in the template and σ_s(x) = 2.0 + 0.6·x/N in the
science image, with science flux = FLUX_SCALE × template flux. The matching kernel is then
the Gaussian of width sqrt(σ_s² − σ_t²) times FLUX_SCALE, and its sum is FLUX_SCALE everywhere.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pytest
from scipy.special import erf

import psfmatch as pm
import psfmatch.debug
from helpers import configWith
from psfmatch import _core
from psfmatch.config import makeKernelControl
from psfmatch.psf_match import PsfMatchTask

N = 384
FLUX_SCALE = 1.3
SIGMA_T = 1.5
SKY_SIGMA_T = 1.0
SKY_SIGMA_S = 5.0
SHIFT = 0.3


def scienceSigma(x: float) -> float:
    return 2.0 + 0.6 * x / N


def fluxScale(x: float, slope: float) -> float:
    """The science/template flux ratio at column x: FLUX_SCALE at x = N/2, slope per image."""
    return FLUX_SCALE * (1.0 + slope * (x - N / 2) / N)


def background(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return 20.0 + 0.01 * x - 0.005 * y


def renderStar(image: np.ndarray, x: float, y: float, sigma: float, flux: float) -> None:
    """Add a pixel-integrated circular Gaussian star to ``image`` (within ±6σ)."""
    half = int(np.ceil(6 * sigma))
    ix, iy = int(round(x)), int(round(y))
    x0, x1 = max(ix - half, 0), min(ix + half + 1, image.shape[1])
    y0, y1 = max(iy - half, 0), min(iy + half + 1, image.shape[0])
    xe = np.arange(x0, x1 + 1) - 0.5
    ye = np.arange(y0, y1 + 1) - 0.5
    fx = np.diff(0.5 * erf((xe - x) / (np.sqrt(2.0) * sigma)))
    fy = np.diff(0.5 * erf((ye - y) / (np.sqrt(2.0) * sigma)))
    image[y0:y1, x0:x1] += flux * np.outer(fy, fx)


def makeField(
    rng: np.random.Generator,
    nStars: int = 60,
    *,
    variable: int | None = None,
    spike: int | None = None,
    shifted: int | None = None,
    scaleSlope: float = 0.0,
    withBackground: bool = True,
) -> dict[str, Any]:
    """A template/science pair; star ``variable`` doubles its science flux, star ``spike``
    has a cosmic-ray-like hot pixel on its core in the science image, star ``shifted`` sits
    SHIFT px further right in the science image than in the template (a kernel shape no
    smooth spatial model shares), and with ``scaleSlope`` the flux scale is
    ``fluxScale(x, scaleSlope)`` instead of FLUX_SCALE."""
    margin = 30
    # A jittered grid keeps the stars isolated (stamps of 43 px do not overlap much).
    side = int(np.ceil(np.sqrt(nStars)))
    step = (N - 2 * margin) / side
    cells = rng.permutation(side * side)[:nStars]
    xs = margin + (cells % side + 0.5) * step + rng.uniform(-0.2, 0.2, nStars) * step
    ys = margin + (cells // side + 0.5) * step + rng.uniform(-0.2, 0.2, nStars) * step
    fluxes = rng.uniform(2e4, 1e5, nStars)
    template = np.zeros((N, N))
    science = np.zeros((N, N))
    for i, (x, y, f) in enumerate(zip(xs, ys, fluxes, strict=True)):
        renderStar(template, x, y, SIGMA_T, f)
        scale = fluxScale(x, scaleSlope) * (2.0 if i == variable else 1.0)
        renderStar(science, x + (SHIFT if i == shifted else 0.0), y, scienceSigma(x), scale * f)
        if i == spike:
            science[int(round(y)) + 2, int(round(x)) + 2] += 0.5 * f
    if withBackground:
        yy, xx = np.mgrid[0:N, 0:N]
        science += background(xx, yy)
    template += rng.normal(0.0, SKY_SIGMA_T, template.shape)
    science += rng.normal(0.0, SKY_SIGMA_S, science.shape)
    return {
        "template": pm.MaskedImage(template, variance=np.full(template.shape, SKY_SIGMA_T**2)),
        "science": pm.MaskedImage(science, variance=np.full(science.shape, SKY_SIGMA_S**2)),
        "x": xs,
        "y": ys,
    }


class CellSetTask(PsfMatchTask):
    """A concrete PsfMatchTask: stamps of 2·kernelSize+1 around given positions."""

    ConfigClass = pm.PsfMatchConfigAL
    _DefaultName = "testPsfMatch"

    def _buildCellSet(self, field: dict[str, Any]) -> Any:
        cfg = self.kConfig
        cells = pm.SpatialCellSet(field["template"].getBBox(), cfg.sizeCellX, cfg.sizeCellY)
        half = cfg.kernelSize
        candidates = []
        for x, y in zip(field["x"], field["y"], strict=True):
            ix, iy = int(round(x)), int(round(y))
            if min(ix, iy) - half < 0 or max(ix, iy) + half >= N:
                continue
            box = pm.Box2I((ix - half, iy - half), (2 * half + 1, 2 * half + 1))
            cand = pm.KernelCandidate(
                x, y, field["template"].subimage(box), field["science"].subimage(box), cfg
            )
            cells.insertCandidate(cand)
            candidates.append(cand)
        return cells, candidates


def alConfig(**overrides: Any) -> pm.PsfMatchConfigAL:
    """Background fitted, 64-px cells of two stars each, with ``overrides``."""
    base = {"fitForBackground": True, "sizeCellX": 64, "sizeCellY": 64, "nStarPerCell": 2}
    return configWith(pm.PsfMatchConfigAL(), **(base | overrides))


class DFTask(CellSetTask):
    """`CellSetTask` with the delta-function basis."""

    ConfigClass = pm.PsfMatchConfigDF


def dfConfig(**overrides: Any) -> pm.PsfMatchConfigDF:
    """A 15×15 delta-function basis of spatial order 1, background fitted, 64-px cells of
    two stars each, with ``overrides``."""
    base = {"kernelSize": 15, "fitForBackground": True, "sizeCellX": 64, "sizeCellY": 64}
    base |= {"nStarPerCell": 2, "spatialKernelOrder": 1}
    return configWith(pm.PsfMatchConfigDF(), **(base | overrides))


def alBasis(config: pm.PsfMatchConfigAL) -> list[Any]:
    return pm.makeKernelBasisList(
        config, SIGMA_T * pm.basis.FWHM_PER_SIGMA, scienceSigma(N / 2) * pm.basis.FWHM_PER_SIGMA
    )


RNG_SEED = 20261125  # the rng fixture's seed (conftest.py)


def test_solve_recovers_kernel_sum_and_background(rng: np.random.Generator) -> None:
    field = makeField(rng)
    config = alConfig()
    task = CellSetTask(config=config)
    cells, _ = task._buildCellSet(field)
    solution, kernel, bg = task._solve(cells, alBasis(config))

    # The flux scale comes from ~60 stars of flux ≥ 2e4 on sky noise 5: a star's flux error is
    # ≈ 5·sqrt(4π·σ²) ≈ 50 (0.25 %), so the ensemble is good to ≈ 0.05 %; 0.3 % leaves room
    # for the PSF-shape mismatch of a finite basis.
    assert task.metadata["spatialKernelSum"] == pytest.approx(FLUX_SCALE, rel=3e-3)
    for x, y in [(60.0, 60.0), (320.0, 90.0), (192.0, 192.0), (90.0, 330.0)]:
        assert kernel.getSum(x, y) == pytest.approx(FLUX_SCALE, rel=3e-3)
        # The background is fitted over ~60 stamps of 23² good pixels with noise 5 per pixel:
        # σ(b) ≈ 5/sqrt(60·529) ≈ 0.03 at the centre, a few times that at the corners of a
        # linear model; 0.3 is ≳ 5σ there.
        assert bg(x, y) == pytest.approx(float(background(np.array(x), np.array(y))), abs=0.3)
    # The kernel shape: at x the truth is a Gaussian of σ_k = sqrt(σ_s(x)² − σ_t²), whose
    # second moment per axis is σ_k² (plus 1/12 px² of pixelisation, absent from a sampled
    # kernel). 5 % of σ_k² allows for the noise and the finite basis.
    for x in (80.0, 300.0):
        image, kSum = kernel.computeImage(x, 192.0)
        k = image / kSum
        u = np.arange(k.shape[1]) - k.shape[1] // 2
        var = float((k.sum(axis=0) * u**2).sum())
        assert var == pytest.approx(scienceSigma(x) ** 2 - SIGMA_T**2, rel=0.05)
    assert solution.getConditionNumber(pm.ConditionNumberType.EIGENVALUE) > 0


def test_metadata_keys_and_values(rng: np.random.Generator) -> None:
    field = makeField(rng)
    config = alConfig()
    task = CellSetTask(config=config)
    cells, candidates = task._buildCellSet(field)
    task._solve(cells, alBasis(config))
    md = task.metadata
    assert md["spatialConditionNum"] > 0
    assert md["nCandidatesTotal"] == len(candidates)
    statuses = [c.getStatus() for c in candidates]
    assert md["nCandidatesGood"] == statuses.count(pm.KernelCandidate.GOOD)
    assert md["nCandidatesBad"] == statuses.count(pm.KernelCandidate.BAD)
    assert md["nCandidatesGood"] >= 20
    assert md["spatialKernelConstraint"] == "well"
    assert md["spatialBackgroundConstraint"] == "well"
    for stat in ("MEAN", "MEDIAN", "STDEV"):
        for key in ("LOCAL_residualMean", "LOCAL_residualStd"):
            assert np.isfinite(md[f"metric_{stat}.{key}"])
        for key in ("SPATIAL_residualMean", "SPATIAL_residualStd"):
            assert np.isfinite(md[f"metric_{stat}.{key}"])
    # A correct model leaves D/σ ≈ unit-variance noise: the median rms over candidates is 1
    # to within the spread of a 529-pixel rms (≈ 3 %) plus weighting by the summed variance;
    # the local fit absorbs a little noise (fewer degrees of freedom), so it sits just below.
    assert md["metric_MEDIAN.SPATIAL_residualStd"] == pytest.approx(1.0, abs=0.1)
    assert md["metric_MEDIAN.LOCAL_residualStd"] == pytest.approx(1.0, abs=0.1)
    assert md["metric_MEDIAN.LOCAL_residualStd"] <= md["metric_MEDIAN.SPATIAL_residualStd"]
    # Mean residual of a good fit: a few hundredths (σ of a 529-pixel mean is 0.04).
    assert abs(md["metric_MEDIAN.SPATIAL_residualMean"]) < 0.1


def test_variable_star_rejected_by_kernel_sum_clipping(rng: np.random.Generator) -> None:
    field = makeField(rng, variable=7)

    def solveWith(**overrides: Any) -> Any:
        config = alConfig(nStarPerCell=-1, **overrides)
        task = CellSetTask(config=config)
        cells, candidates = task._buildCellSet(field)
        task._solve(cells, alBasis(config))
        (variable,) = [c for c in candidates if c.getXCenter() == field["x"][7]]
        return task, variable

    # Without any clipping after the single-kernel fit the variable star (kernel sum 2.6,
    # which its own kernel fits perfectly well) stays in; with kernel-sum clipping alone it
    # is rejected, and the kernel sum is unbiased.
    _, kept = solveWith(kernelSumClipping=False, spatialKernelClipping=False)
    assert kept.getStatus() == pm.KernelCandidate.GOOD
    assert kept.getKsum(pm.KernelCandidate.ORIG) == pytest.approx(2 * FLUX_SCALE, rel=0.01)
    task, rejected = solveWith(kernelSumClipping=True, spatialKernelClipping=False)
    assert rejected.getStatus() == pm.KernelCandidate.BAD
    assert task.metadata["spatialKernelSum"] == pytest.approx(FLUX_SCALE, rel=3e-3)


def test_wrong_shape_rejected_by_residual_clipping(rng: np.random.Generator) -> None:
    field = makeField(rng, spike=3)
    config = alConfig(nStarPerCell=-1)
    task = CellSetTask(config=config)
    cells, candidates = task._buildCellSet(field)
    (spiked,) = [c for c in candidates if c.getXCenter() == field["x"][3]]
    # The single-kernel visitor alone rejects it: a smooth kernel cannot make a hot pixel.
    visitor = pm.BuildSingleKernelVisitor(alBasis(config), config)
    visitor.processCandidate(spiked)
    assert spiked.getStatus() == pm.KernelCandidate.BAD
    assert visitor.getNRejected() == 1

    cells, candidates = task._buildCellSet(field)
    task._solve(cells, alBasis(config))
    (spiked,) = [c for c in candidates if c.getXCenter() == field["x"][3]]
    assert spiked.getStatus() == pm.KernelCandidate.BAD
    assert task.metadata["spatialKernelSum"] == pytest.approx(FLUX_SCALE, rel=3e-3)

    # With residual clipping off it survives the single-kernel stage.
    loose = alConfig(nStarPerCell=-1, singleKernelClipping=False)
    visitor = pm.BuildSingleKernelVisitor(alBasis(loose), loose)
    cells, candidates = CellSetTask(config=loose)._buildCellSet(field)
    (spiked,) = [c for c in candidates if c.getXCenter() == field["x"][3]]
    visitor.processCandidate(spiked)
    assert spiked.getStatus() == pm.KernelCandidate.GOOD


def test_empty_cell_set_raises() -> None:
    config = alConfig()
    task = CellSetTask(config=config)
    cells = pm.SpatialCellSet(pm.Box2I((0, 0), (N, N)), 64, 64)
    with pytest.raises(pm.NoKernelCandidatesError, match="All spatial cells are empty"):
        task._solve(cells, alBasis(config))


def test_all_candidates_rejected_raises(rng: np.random.Generator) -> None:
    field = makeField(rng, nStars=9)
    # Science stamps of pure noise, 100× the stated variance: every single-kernel fit fails
    # the residual clipping.
    noise = rng.normal(0.0, 10 * SKY_SIGMA_S, (N, N))
    field["science"] = pm.MaskedImage(noise, variance=np.full((N, N), SKY_SIGMA_S**2))
    config = alConfig()
    task = CellSetTask(config=config)
    cells, _ = task._buildCellSet(field)
    with pytest.raises(pm.NoKernelCandidatesError, match="cells are empty"):
        task._solve(cells, alBasis(config))


def test_underconstrained_is_logged(
    rng: np.random.Generator, caplog: pytest.LogCaptureFixture
) -> None:
    # Spatial order 2 has 6 terms per basis kernel: six stars could constrain it (kept, as
    # lowerSpatialOrders is off), but the variable star is clipped and five cannot.
    field = makeField(rng, nStars=6, variable=0)
    config = alConfig(spatialKernelOrder=2, nStarPerCell=-1, lowerSpatialOrders=False)
    task = CellSetTask(config=config)
    cells, _ = task._buildCellSet(field)
    with caplog.at_level(logging.INFO, logger="psfmatch"):
        task._solve(cells, alBasis(config))
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("Spatial kernel model underconstrained" in m for m in messages), messages
    assert any("Consider lowering the spatial order" in m for m in messages)
    assert task.metadata["spatialKernelConstraint"] == "under"


@pytest.mark.parametrize("usePca, useRegularization", [(True, True), (True, False), (False, True)])
def test_delta_function_paths_solve_the_same_field(
    rng: np.random.Generator, usePca: bool, useRegularization: bool
) -> None:
    field = makeField(rng, nStars=36)
    config = dfConfig(usePcaForSpatialKernel=usePca, useRegularization=useRegularization)
    task = DFTask(config=config)
    assert (task.hMat is not None) == useRegularization
    cells, _ = task._buildCellSet(field)
    basis = pm.makeKernelBasisList(config)
    _, kernel, bg = task._solve(cells, basis)
    # The delta-function fit has many more free parameters than the Gaussian basis and a
    # 15-px kernel truncates the widest kernels (σ_k ≈ 1.8 px at x = N, so ≈ 0.1 % of the
    # flux lies outside ±7 px): 1 % on the kernel sum.
    assert task.metadata["spatialKernelSum"] == pytest.approx(FLUX_SCALE, rel=0.01)
    assert bg(192.0, 192.0) == pytest.approx(
        float(background(np.array(192.0), np.array(192.0))), abs=1.0
    )
    if usePca:
        assert kernel.getNBasisKernels() <= config.numPrincipalComponents
    else:
        assert kernel.getNBasisKernels() == 15 * 15


def test_regularization_matrix_made_at_construction() -> None:
    config = pm.PsfMatchConfigDF()
    config.kernelSize = 7
    task = CellSetTask(config=config)
    np.testing.assert_array_equal(task.hMat, pm.makeRegularizationMatrix(config))
    assert CellSetTask(config=alConfig()).hMat is None


def test_task_without_kernel_config_is_rejected() -> None:
    import lsst.pex.config as pexConfig

    class Other(pexConfig.Config):
        pass

    with pytest.raises(pm.InvalidInputError, match="PsfMatchConfig"):
        CellSetTask(config=Other())


def test_psf_match_task_is_abstract() -> None:
    with pytest.raises(TypeError, match="abstract"):
        PsfMatchTask()  # type: ignore[abstract]


def test_debug_switches_call_the_hook(
    rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch
) -> None:
    def debugInfo(name: str) -> Any:
        info = psfmatch.debug.getInfo(name)
        if name == "psfmatch.psf_match":
            info.display = True
            info.displayCandidates = True
            info.maskTransparency = 80
        return info

    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(psfmatch.debug, "Info", debugInfo)
    monkeypatch.setattr(psfmatch.debug, "showDebug", lambda task, **kw: calls.append(kw))
    field = makeField(rng, nStars=16)
    config = alConfig(spatialKernelOrder=1)
    task = CellSetTask(config=config)
    cells, _ = task._buildCellSet(field)
    task._solve(cells, alBasis(config))
    assert len(calls) == 1
    requests = calls[0]["requests"]
    assert requests.displayCandidates is True
    assert requests.displayKernelMosaic is False
    assert requests.maskTransparency == 80
    assert calls[0]["kernelCellSet"] is cells

    # With display off the hook is not called.
    calls.clear()
    monkeypatch.setattr(psfmatch.debug, "Info", psfmatch.debug.DefaultInfo)
    cells, _ = task._buildCellSet(field)
    task._solve(cells, alBasis(config))
    assert calls == []


def test_spatial_kernel_sum_is_taken_at_the_cell_set_centre(rng: np.random.Generator) -> None:
    # docs/algorithm.md §6.1: spatialKernelSum is K's sum at the centre of the cell set's box,
    # not at (0, 0). An Alard-Lupton or PCA kernel has a spatially constant sum (§5.2), so use a
    # delta-function basis without PCA (every coefficient varies) on a field whose flux scale
    # grows by 40 % across the image; kernel-sum clipping, which assumes one flux scale, is off.
    slope = 0.4
    field = makeField(rng, nStars=36, scaleSlope=slope)
    config = dfConfig(kernelSumClipping=False, usePcaForSpatialKernel=False)
    task = DFTask(config=config)
    cells, _ = task._buildCellSet(field)
    _, kernel, _ = task._solve(cells, pm.makeKernelBasisList(config))
    centre = 0.5 * (N - 1)  # the box is [0, N-1] in pixel centres
    # Same evaluation, so only rounding separates them.
    assert task.metadata["spatialKernelSum"] == pytest.approx(
        kernel.getSum(centre, centre), rel=1e-12
    )
    # The truth at the centre; 1 % as in test_delta_function_paths_solve_the_same_field.
    assert task.metadata["spatialKernelSum"] == pytest.approx(fluxScale(centre, slope), rel=0.01)
    # The fitted sum does vary: at x = 0 it is ≈ 20 % lower (truth 1.04 against 1.30), so an
    # evaluation at (0, 0) would be far outside the 1 % above. 3 % there: a corner is an
    # extrapolation of the linear model, a few times noisier than the centre.
    assert kernel.getSum(0.0, 0.0) == pytest.approx(fluxScale(0.0, slope), rel=0.03)


def _solveTraceMessages(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == f"TRACE{level}.{_SOLVE_LOG}"]


_SOLVE_LOG = "psfmatch.testPsfMatch._solve"


@pytest.fixture
def traceLevels() -> Any:
    """Restore the TRACE loggers that lsst.utils.logging.trace_set_at changes."""
    from lsst.utils.logging import trace_set_at

    yield trace_set_at
    for i in range(6):
        logging.getLogger(f"TRACE{i}.psfmatch").setLevel(logging.NOTSET)


def test_trace_loggers_follow_the_kernel_sum_rejection(
    rng: np.random.Generator, caplog: pytest.LogCaptureFixture, traceLevels: Any
) -> None:
    # The reference's recipe for more logging, with psfmatch in place of lsst.ip.diffim: trace
    # loggers named TRACE<n>.<task log>._solve, switched on by trace_set_at.
    field = makeField(rng, variable=7)
    config = alConfig(nStarPerCell=-1, spatialKernelClipping=False)
    task = CellSetTask(config=config)
    cells, _ = task._buildCellSet(field)
    traceLevels("psfmatch", 1)
    with caplog.at_level(logging.DEBUG):
        task._solve(cells, alBasis(config))
    trace1 = _solveTraceMessages(caplog, 1)
    # §5.6 step 2d: a kernel-sum rejection goes back to the single-kernel pass *without*
    # counting an iteration, so the spatial fit that follows is still iteration 0.
    # (The variable star and a few 3σ outliers of a tight kernel-sum distribution go first.)
    ksum = [m.split()[:4] for m in trace1 if "due to kernel sum" in m]
    assert len(ksum) == 2, trace1
    assert ksum[0][:2] == ["Iteration", "0,"] and int(ksum[0][3]) >= 1, trace1
    assert ksum[1] == ["Iteration", "0,", "rejected", "0"], trace1
    assert "Iteration 0, rejected 0 candidates due to spatial kernel fit" in trace1
    assert "Final spatial fit" not in trace1
    # Level 3 (the spatial parameters) is off at trace level 1, on at 3.
    assert _solveTraceMessages(caplog, 3) == []
    caplog.clear()
    traceLevels("psfmatch", 3)
    cells, _ = task._buildCellSet(field)
    with caplog.at_level(logging.DEBUG):
        task._solve(cells, alBasis(config))
    assert any(m.startswith("Spatial kernel parameters") for m in _solveTraceMessages(caplog, 3))


def _refitOnSurvivors(task: CellSetTask, cells: Any, basis: list[Any]) -> Any:
    """The spatial fit of §5.3-5.4 over the candidates still GOOD, built here directly."""
    visitor = pm.BuildSpatialKernelVisitor(basis, cells.getBBox(), task.kConfig)
    cells.visitCandidates(visitor, -1)
    visitor.solveLinearEquation()
    return visitor.getSolutionPair()


@pytest.mark.parametrize("maxSpatialIterations", [1, 3])
def test_spatial_clipping_and_the_final_fit(
    rng: np.random.Generator,
    caplog: pytest.LogCaptureFixture,
    traceLevels: Any,
    maxSpatialIterations: int,
) -> None:
    # Star 5 is SHIFT px off in the science image: its own kernel (odd polynomial terms)
    # absorbs the shift, its kernel sum is normal, but no smooth spatial model shares it, so
    # only the spatial assessment (§5.5) can reject it.
    field = makeField(rng, shifted=5)
    basis = alBasis(alConfig())

    def solve(**overrides: Any) -> tuple[CellSetTask, Any, Any, Any]:
        config = alConfig(nStarPerCell=-1, maxSpatialIterations=maxSpatialIterations, **overrides)
        task = CellSetTask(config=config)
        cells, candidates = task._buildCellSet(field)
        (shifted,) = [c for c in candidates if c.getXCenter() == field["x"][5]]
        _, kernel, bg = task._solve(cells, basis)
        return task, cells, shifted, (kernel, bg)

    _, _, shifted, _ = solve(spatialKernelClipping=False)
    assert shifted.getStatus() == pm.KernelCandidate.GOOD

    traceLevels("psfmatch", 1)
    with caplog.at_level(logging.DEBUG):
        task, cells, shifted, (kernel, bg) = solve()
    assert shifted.getStatus() == pm.KernelCandidate.BAD
    trace1 = _solveTraceMessages(caplog, 1)
    nSpatialRejected = [
        int(m.split()[3]) for m in trace1 if m.endswith("due to spatial kernel fit")
    ]
    assert nSpatialRejected[0] > 0
    if maxSpatialIterations == 1:
        # The only assessment rejected candidates: §5.6 ends with one more, unassessed fit.
        assert "Final spatial fit" in trace1
    else:
        # Iterations continue until an assessment rejects nothing; no extra fit then.
        assert nSpatialRejected[-1] == 0
        assert "Final spatial fit" not in trace1
    # Either way the returned model is the spatial fit over exactly the surviving candidates
    # (without the final fit it would still include the ones just rejected). Same
    # arithmetic on the same candidates: rounding only, hence 1e-9.
    refitKernel, refitBg = _refitOnSurvivors(task, cells, basis)
    for x, y in [(60.0, 60.0), (192.0, 192.0), (320.0, 330.0)]:
        np.testing.assert_allclose(
            kernel.computeImage(x, y)[0], refitKernel.computeImage(x, y)[0], rtol=0, atol=1e-9
        )
        assert bg(x, y) == pytest.approx(refitBg(x, y), abs=1e-9)
    # The model is still right (as in test_solve_recovers_kernel_sum_and_background).
    assert task.metadata["spatialKernelSum"] == pytest.approx(FLUX_SCALE, rel=3e-3)


def test_no_candidate_left_for_the_final_fit_raises(rng: np.random.Generator) -> None:
    # Residual thresholds no noisy stamp meets (rms of D/σ is ≈ 1), applied only by the
    # spatial assessment: it rejects every candidate, so the final fit after the last
    # iteration has nothing left (§5.6 "No kernel candidates remain").
    field = makeField(rng, nStars=16)
    config = alConfig(
        nStarPerCell=-1,
        singleKernelClipping=False,
        candidateResidualStdMax=0.5,
        maxSpatialIterations=1,
    )
    task = CellSetTask(config=config)
    cells, _ = task._buildCellSet(field)
    with pytest.raises(pm.NoKernelCandidatesError, match="No kernel candidates remain"):
        task._solve(cells, alBasis(config))
    # With a second iteration the next kernel-sum pass finds every cell empty instead.
    config.maxSpatialIterations = 2
    task = CellSetTask(config=config)
    cells, _ = task._buildCellSet(field)
    with pytest.raises(pm.NoKernelCandidatesError, match="All spatial cells are empty"):
        task._solve(cells, alBasis(config))


def test_kernel_sum_failure_becomes_no_kernel_candidates(
    rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The core's kernel-sum statistics raise PsfMatchError only with no sums or NaN sums,
    # which the candidates of a real cell set cannot produce after the single-kernel pass;
    # a visitor that fails the same way checks the conversion of §5.6 step 2c.
    import psfmatch.psf_match as psfMatchModule

    class FailingKernelSumVisitor(psfMatchModule.KernelSumVisitor):
        def processKsumDistribution(self) -> None:
            raise pm.PsfMatchError("Unable to determine kernel sum; 0 candidates")

    monkeypatch.setattr(psfMatchModule, "KernelSumVisitor", FailingKernelSumVisitor)
    field = makeField(rng, nStars=9)
    config = alConfig()
    task = CellSetTask(config=config)
    cells, _ = task._buildCellSet(field)
    with pytest.raises(
        pm.NoKernelCandidatesError, match="Unable to calculate the kernel sum: Unable to determine"
    ) as info:
        task._solve(cells, alBasis(config))
    assert isinstance(info.value.__cause__, pm.PsfMatchError)


def test_assessment_that_sees_nothing_raises(
    rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch
) -> None:
    # §5.6 step 5: an assessment with nGood == nRejected == 0. The core's visitor always
    # counts a candidate the spatial fit used, so a visitor that counts nothing stands in.
    import psfmatch.psf_match as psfMatchModule

    class BlindAssessment:
        def __init__(self, *args: Any) -> None:
            pass

        def reset(self) -> None:
            pass

        def processCandidate(self, candidate: Any) -> None:
            pass

        def getNRejected(self) -> int:
            return 0

        def getNGood(self) -> int:
            return 0

    monkeypatch.setattr(psfMatchModule, "AssessSpatialKernelVisitor", BlindAssessment)
    field = makeField(rng, nStars=9)
    config = alConfig(spatialKernelOrder=0)
    task = CellSetTask(config=config)
    cells, _ = task._buildCellSet(field)
    with pytest.raises(pm.NoKernelCandidatesError, match="No kernel candidates for spatial fit"):
        task._solve(cells, alBasis(config))


def _expectedJudgement(nGood: int, nTerms: int) -> tuple[str, int, str]:
    """docs/algorithm.md §6.1's table: (metadata word, log level, message fragment)."""
    if nGood < nTerms:
        return "under", logging.WARNING, "underconstrained"
    if nGood <= 2 * nTerms:
        return "poorly", logging.WARNING, "poorly constrained"
    return "well", logging.INFO, "well constrained"


@pytest.fixture
def solvedSmallField(rng: np.random.Generator) -> tuple[CellSetTask, Any, list[Any], Any]:
    """16 stars solved with spatial kernel and background orders 1 (3 terms each)."""
    field = makeField(rng, nStars=16)
    config = alConfig(nStarPerCell=-1, spatialKernelOrder=1, spatialBgOrder=1)
    task = CellSetTask(config=config)
    cells, candidates = task._buildCellSet(field)
    solution, kernel, bg = task._solve(cells, alBasis(config))
    assert kernel.getNSpatialParameters() == 3
    assert len(np.asarray(bg.getParameters())) == 3
    return task, cells, candidates, (solution, kernel, bg)


# nTerms = 3 for both models: the judgement boundaries are at 3 and 6 good candidates, the
# count warning at nBad = 2·nGood; the rest of the candidates are left UNKNOWN.
@pytest.mark.parametrize("nGood, nBad", [(2, 10), (3, 6), (3, 7), (6, 4), (7, 5)])
def test_diagnostic_constraint_judgements_and_counts(
    solvedSmallField: Any, caplog: pytest.LogCaptureFixture, nGood: int, nBad: int
) -> None:
    task, cells, candidates, (solution, kernel, bg) = solvedSmallField
    initialised = [c for c in candidates if c.isInitialized()]
    assert len(initialised) >= 12
    for i, cand in enumerate(initialised):
        if i < nGood:
            cand.setStatus(pm.KernelCandidate.GOOD)
        elif i < nGood + nBad:
            cand.setStatus(pm.KernelCandidate.BAD)
        else:
            cand.setStatus(pm.KernelCandidate.UNKNOWN)
    task.emptyMetadata()
    with caplog.at_level(logging.INFO, logger="psfmatch"):
        task._diagnostic(cells, solution, kernel, bg)
    md = task.metadata
    assert md["nCandidatesTotal"] == len(candidates)
    assert md["nCandidatesGood"] == nGood
    assert md["nCandidatesBad"] == nBad
    records = [(r.levelno, r.getMessage()) for r in caplog.records]
    word, level, fragment = _expectedJudgement(nGood, 3)
    for key, model in (
        ("spatialKernelConstraint", "Spatial kernel model"),
        ("spatialBackgroundConstraint", "Spatial background model"),
    ):
        assert md[key] == word
        (record,) = [r for r in records if r[1].startswith(model)]
        assert record[0] == level and fragment in record[1], record
        assert ("Consider lowering the spatial order" in record[1]) == (word != "well")
    # §6.1 counts: a warning when more than twice as many were rejected as used.
    if nBad > 2 * nGood:
        assert (
            logging.WARNING,
            f"Many more candidates rejected than accepted; {len(candidates)} total, "
            f"{nBad} rejected, {nGood} used",
        ) in records
    else:
        assert (
            logging.INFO,
            f"{len(candidates)} candidates total, {nBad} rejected, {nGood} used",
        ) in records


def test_diagnostic_without_background_fit_judges_only_the_kernel(
    rng: np.random.Generator, caplog: pytest.LogCaptureFixture
) -> None:
    field = makeField(rng, nStars=16, withBackground=False)
    config = alConfig(nStarPerCell=-1, spatialKernelOrder=1, fitForBackground=False)
    task = CellSetTask(config=config)
    cells, _ = task._buildCellSet(field)
    with caplog.at_level(logging.INFO, logger="psfmatch"):
        task._solve(cells, alBasis(config))
    assert task.metadata["spatialKernelConstraint"] == "well"
    assert "spatialBackgroundConstraint" not in task.metadata
    assert not any("background model" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("conditionNumberType", ["EIGENVALUE", "SVD"])
def test_diagnostic_condition_number(
    solvedSmallField: Any, caplog: pytest.LogCaptureFixture, conditionNumberType: str
) -> None:
    task, cells, _, (solution, kernel, bg) = solvedSmallField
    # The truth from numpy on the spatial normal matrix M (§3.3): λmax/λmin or σmax/σmin.
    m = np.asarray(solution.getM())
    if conditionNumberType == "EIGENVALUE":
        eig = np.linalg.eigvalsh(m)
        expected = eig[-1] / eig[0]
    else:
        sv = np.linalg.svd(m, compute_uv=False)
        expected = sv[0] / sv[-1]
    task.kConfig.conditionNumberType = conditionNumberType
    task.kConfig.maxSpatialConditionNumber = 2.0 * expected
    task.emptyMetadata()
    with caplog.at_level(logging.INFO, logger="psfmatch"):
        task._diagnostic(cells, solution, kernel, bg)
    # Two decompositions of a matrix of condition number ~1e8 agree to ~1e-8 relative
    # (rounding × condition); 1e-6 leaves room.
    assert task.metadata["spatialConditionNum"] == pytest.approx(expected, rel=1e-6)
    messages = [r.getMessage() for r in caplog.records]
    assert f"Spatial model condition number {expected:.3e}" in messages
    assert not any("exceeds max condition number" in m for m in messages)

    caplog.clear()
    task.kConfig.maxSpatialConditionNumber = 0.5 * expected
    with caplog.at_level(logging.INFO, logger="psfmatch"):
        task._diagnostic(cells, solution, kernel, bg)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("Spatial solution exceeds max condition number" in m for m in warnings), warnings


def test_diagnostic_warns_on_negative_condition_number(
    solvedSmallField: Any, caplog: pytest.LogCaptureFixture
) -> None:
    # λmax/λmin of an indefinite M (rounding on a singular system) is negative; a real
    # spatial solution of this field is positive definite, so a stand-in reports one.
    task, cells, _, (_, kernel, bg) = solvedSmallField

    class IndefiniteSolution:
        def getConditionNumber(self, conditionType: Any) -> float:
            return -42.0

    with caplog.at_level(logging.INFO, logger="psfmatch"):
        task._diagnostic(cells, IndefiniteSolution(), kernel, bg)
    assert task.metadata["spatialConditionNum"] == -42.0
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    # The diagnosis, not the bare number: singular, with the stars and unknowns it involves.
    singular = [m for m in warnings if "singular or indefinite" in m]
    assert singular, warnings
    assert "-4.200e+01" in singular[0]
    # nt of §5.2 for this AL fit: a constant first coefficient, the others with the kernel's
    # spatial terms, and the background's.
    nb, nkt = kernel.getNBasisKernels(), kernel.getNSpatialParameters()
    nt = (nb - 1) * nkt + 1 + np.asarray(bg.getParameters()).size
    assert f"cannot constrain its {nt} unknowns" in singular[0]


def _residualStats(cand: Any, kernelImage: np.ndarray, bg: float, core: int) -> tuple[float, float]:
    """Mean and rms (n − 1) of D/σ over a candidate's stamp, brute force (§3.6).

    D = S − K⊗T − b and σ² = Var_S + K²⊗Var_T on the pixels where K⊗T is defined (the
    stamp shrunk by the kernel half-widths), or on the (2·core+1)² centre of the stamp.
    """
    from scipy.signal import convolve2d

    t, s = cand.getTemplateMaskedImage(), cand.getScienceMaskedImage()
    ky, kx = (n // 2 for n in kernelImage.shape)
    crop = (slice(ky, s.image.shape[0] - ky), slice(kx, s.image.shape[1] - kx))
    d = s.image[crop] - convolve2d(t.image, kernelImage, mode="valid") - bg
    var = s.variance[crop] + convolve2d(t.variance, kernelImage**2, mode="valid")
    z = d / np.sqrt(var)
    if core:
        cy, cx = s.image.shape[0] // 2 - ky, s.image.shape[1] // 2 - kx
        z = z[cy - core : cy + core + 1, cx - core : cx + core + 1]
        assert z.size == (2 * core + 1) ** 2
    return float(z.mean()), float(z.std(ddof=1))


@pytest.mark.parametrize("useCoreStats", [False, True])
def test_metric_metadata_against_brute_force(rng: np.random.Generator, useCoreStats: bool) -> None:
    # docs/decisions.md D4: metric_<STAT>.<LOCAL|SPATIAL>_residual<Mean|Std> are the mean,
    # median and population standard deviation over the GOOD candidates of each candidate's
    # mean and rms of D/σ, with its own kernel (LOCAL) or the spatial model at its centre (SPATIAL).
    # A spatially constant kernel on this varying PSF makes the two clearly different.
    task, cells, config, _, kernel, bg, _ = _fittedField(rng, useCoreStats)
    candidates = cells.getAllCandidates(ignoreBad=False)
    core = config.candidateCoreRadius if useCoreStats else 0
    values: dict[str, list[float]] = {}
    good = [c for c in candidates if c.getStatus() == pm.KernelCandidate.GOOD]
    assert len(good) >= 20
    for cand in good:
        x, y = cand.getXCenter(), cand.getYCenter()
        local = cand.getKernel(pm.KernelCandidate.RECENT)
        for kind, image, b in (
            ("LOCAL", local.computeImage()[0], cand.getBackground(pm.KernelCandidate.RECENT)),
            ("SPATIAL", kernel.computeImage(x, y)[0], bg(x, y)),
        ):
            mean, rms = _residualStats(cand, np.asarray(image), b, core)
            values.setdefault(f"{kind}_residualMean", []).append(mean)
            values.setdefault(f"{kind}_residualStd", []).append(rms)
    md = task.metadata
    for stat, func in (("MEAN", np.mean), ("MEDIAN", np.median), ("STDEV", np.std)):
        for key, vals in values.items():
            # Same pixels and formulas; the core's convolution sums in another order than
            # scipy's, so the statistics agree to rounding of ~1e-12 relative; 1e-9 absolute
            # (the values are O(0.01 - 10)) leaves room.
            assert md[f"metric_{stat}.{key}"] == pytest.approx(float(func(vals)), abs=1e-9), (
                stat,
                key,
            )
    # The constant kernel misfits the stars whose PSF differs from the mean: the spatial
    # residuals are visibly worse than the local ones (by tens of percent on this field).
    assert md["metric_MEDIAN.SPATIAL_residualStd"] > 1.2 * md["metric_MEDIAN.LOCAL_residualStd"]
    if not useCoreStats:
        # Over the whole stamp the local fit leaves noise-like residuals (median rms ≈ 1, as
        # in test_metadata_keys_and_values); over the 7×7 core, where the kernel's freedom
        # is concentrated, it absorbs part of the noise and the rms is lower.
        assert md["metric_MEDIAN.LOCAL_residualStd"] == pytest.approx(1.0, abs=0.1)


def _numpyStats(diff: pm.MaskedImage, badBits: int, core: int) -> tuple[float, float]:
    """Mean and rms (n − 1) of x·sqrt(1/var) over unmasked pixels of finite 1/var, in numpy."""
    ny, nx = diff.image.shape
    window = (slice(None), slice(None))
    if core:
        cy, cx = ny // 2, nx // 2
        window = (slice(cy - core, cy + core + 1), slice(cx - core, cx + core + 1))
    with np.errstate(divide="ignore"):
        ivar = 1.0 / diff.variance[window]
    good = ((diff.mask[window] & badBits) == 0) & np.isfinite(ivar)
    z = diff.image[window][good] * np.sqrt(ivar[good])
    return float(z.mean()), float(z.std(ddof=1))


def _fittedField(
    rng: np.random.Generator, useCoreStats: bool
) -> tuple[Any, Any, Any, list[Any], Any, Any, Any]:
    """A 25-star field fitted at spatial order 0 without clipping: the task, its cell set,
    the config, the GOOD candidates (at least 20), the spatial kernel and background, and
    the control."""
    field = makeField(rng, nStars=25)
    config = alConfig(
        nStarPerCell=-1,
        spatialKernelOrder=0,
        spatialKernelClipping=False,
        useCoreStats=useCoreStats,
    )
    task = CellSetTask(config=config)
    cells, candidates = task._buildCellSet(field)
    _, kernel, bg = task._solve(cells, alBasis(config))
    good = [c for c in candidates if c.getStatus() == pm.KernelCandidate.GOOD]
    assert len(good) >= 20
    return task, cells, config, good, kernel, bg, makeKernelControl(config)


@pytest.mark.parametrize("useCoreStats", [False, True])
def test_candidate_residuals_per_candidate(rng: np.random.Generator, useCoreStats: bool) -> None:
    """_core.candidateResiduals, the per-candidate (mean, rms) behind the metric_* keys: in
    candidate order, equal to numpy statistics of each candidate's getDifferenceImage (LOCAL:
    its own kernel; SPATIAL: the spatial model at its centre), bit for bit equal to
    ImageStatistics applied one candidate at a time, independent of the thread count, and NaN
    where the statistics cannot be formed."""
    task, cells, config, good, kernel, bg, control = _fittedField(rng, useCoreStats)
    core = config.candidateCoreRadius if useCoreStats else 0
    badBits = pm.Mask.getPlaneBitMask(list(config.badMaskPlanes))
    # Reversed, so that "candidate order" is not the cell set's own order.
    good = good[::-1]
    got = np.asarray(_core.candidateResiduals(good, kernel, bg, control))
    assert got.shape == (len(good), 4)
    for row, cand in zip(got, good, strict=True):
        x, y = cand.getXCenter(), cand.getYCenter()
        diffs = (
            cand.getDifferenceImage(pm.KernelCandidate.RECENT),
            cand.getDifferenceImage(kernel.computeKernel(x, y), bg(x, y)),
        )
        for column, diff in zip((0, 2), diffs, strict=True):
            # numpy sums pairwise and forms the rms in two passes, ImageStatistics in one
            # sequential pass: rounding of ~1e-14 on values O(0.01 - 10); 1e-11 leaves room.
            np.testing.assert_allclose(
                row[column : column + 2], _numpyStats(diff, badBits, core), rtol=0, atol=1e-11
            )
            stats = pm.ImageStatistics(config)
            stats.apply(diff, core)
            assert (row[column], row[column + 1]) == (stats.getMean(), stats.getRms())
    for nThreads in (1, 3):
        control.nThreads = nThreads
        again = np.asarray(_core.candidateResiduals(good, kernel, bg, control))
        np.testing.assert_array_equal(again, got)
    # A background of 1e200 overflows the SPATIAL sums of squares: those pairs are NaN, the
    # LOCAL ones are untouched.
    huge = pm.SpatialBackground(
        pm.SpatialFunction(pm.SpatialModelType.CHEBYSHEV1, 0, bg.getSpatialFunction().getBBox()),
        [1e200],
    )
    overflow = np.asarray(_core.candidateResiduals(good, kernel, huge, control))
    assert np.isnan(overflow[:, 2:]).all()
    np.testing.assert_array_equal(overflow[:, :2], got[:, :2])
    first = good[0]
    unbuilt = pm.KernelCandidate(
        first.getXCenter(),
        first.getYCenter(),
        first.getTemplateMaskedImage(),
        first.getScienceMaskedImage(),
        config,
    )
    with pytest.raises(
        pm.InvalidInputError, match=r"candidate 1 \(id \d+\) has no kernel solution"
    ):
        _core.candidateResiduals([first, unbuilt], kernel, bg, control)


def _goodInCellOrder(cells: Any) -> list[Any]:
    """The GOOD candidates in the order `PsfMatchTask._recordMetrics` takes them (the sums
    behind metric_MEAN depend on the order in the last bit)."""
    return [
        c
        for c in cells.getAllCandidates(ignoreBad=True)
        if c.getStatus() == pm.KernelCandidate.GOOD
    ]


def _metricValues(residuals: np.ndarray) -> dict[str, float]:
    """The metric_* metadata `PsfMatchTask._recordMetrics` derives from (n, 4) residuals of
    the candidates of `_goodInCellOrder`."""
    keys = (
        "LOCAL_residualMean",
        "LOCAL_residualStd",
        "SPATIAL_residualMean",
        "SPATIAL_residualStd",
    )
    out = {}
    for stat, func in (("MEAN", np.mean), ("MEDIAN", np.median), ("STDEV", np.std)):
        for column, key in enumerate(keys):
            finite = [v for v in residuals[:, column].tolist() if np.isfinite(v)]
            out[f"metric_{stat}.{key}"] = float(func(finite)) if finite else float("nan")
    return out


def _assertSameBits(a: np.ndarray, b: np.ndarray) -> None:
    """Bit-for-bit equality (so −0.0 ≠ +0.0, and NaN equals NaN of the same payload)."""
    a, b = np.ascontiguousarray(a, dtype=np.float64), np.ascontiguousarray(b, dtype=np.float64)
    assert a.shape == b.shape
    np.testing.assert_array_equal(a.view(np.int64), b.view(np.int64))


@pytest.mark.parametrize("useCoreStats", [False, True])
def test_candidate_residuals_reuse_is_bit_identical(
    rng: np.random.Generator, useCoreStats: bool
) -> None:
    """When the fit ends on an assessment that rejects nothing, every GOOD candidate's LOCAL
    and SPATIAL residual pairs were computed by the visitors from the final kernels:
    candidateResiduals takes them instead of recomputing, and they equal a fresh computation
    bit for bit (and numpy brute force to rounding)."""
    task, cells, config, good, kernel, bg, control = _fittedField(rng, useCoreStats)
    reused = np.asarray(_core.candidateResidualsReused(good, kernel, bg, control))
    # Not a vacuous comparison: every pair below comes from the visitors' memory.
    assert reused.shape == (len(good), 2) and reused.all()
    cached = np.asarray(_core.candidateResiduals(good, kernel, bg, control))
    fresh = np.asarray(_core.candidateResiduals(good, kernel, bg, control, reuse=False))
    _assertSameBits(cached, fresh)
    assert np.isfinite(cached).all()
    # The metadata are those of the fresh computation, exactly.
    ordered = _goodInCellOrder(cells)
    assert sorted(c.getId() for c in ordered) == sorted(c.getId() for c in good)
    freshOrdered = np.asarray(_core.candidateResiduals(ordered, kernel, bg, control, reuse=False))
    for key, value in _metricValues(freshOrdered).items():
        assert task.metadata[key] == value, key
    # And both are the statistics of the difference stamps, by numpy brute force.
    core = config.candidateCoreRadius if useCoreStats else 0
    for row, cand in zip(cached, good, strict=True):
        x, y = cand.getXCenter(), cand.getYCenter()
        local = cand.getKernel(pm.KernelCandidate.RECENT).computeImage()[0]
        expected = (
            *_residualStats(
                cand, np.asarray(local), cand.getBackground(pm.KernelCandidate.RECENT), core
            ),
            *_residualStats(cand, np.asarray(kernel.computeImage(x, y)[0]), bg(x, y), core),
        )
        # scipy's convolution sums in another order than the core's: ~1e-12 relative rounding
        # on values O(0.01 - 10); 1e-9 absolute leaves room.
        np.testing.assert_allclose(row, expected, rtol=0, atol=1e-9)
    # Statistics under other settings were never computed: nothing is reused, and the
    # recomputation is what a fresh call gives.
    control.useCoreStats = not useCoreStats
    assert not np.asarray(_core.candidateResidualsReused(good, kernel, bg, control)).any()
    _assertSameBits(
        np.asarray(_core.candidateResiduals(good, kernel, bg, control)),
        np.asarray(_core.candidateResiduals(good, kernel, bg, control, reuse=False)),
    )


def test_candidate_residuals_stale_pairs_are_recomputed(rng: np.random.Generator) -> None:
    """A remembered pair is not reused once its kernel changed: another spatial model (even
    one differing in a single background parameter), or a candidate refitted outside the
    visitor. The results then equal a fresh computation and differ from the stale values."""
    field = makeField(rng, nStars=25)
    config = alConfig(nStarPerCell=-1, spatialKernelOrder=0, spatialKernelClipping=False)
    task = CellSetTask(config=config)
    cells, candidates = task._buildCellSet(field)
    _, kernel, bg = task._solve(cells, alBasis(config))
    good = [c for c in candidates if c.getStatus() == pm.KernelCandidate.GOOD]
    control = makeKernelControl(config)
    before = np.asarray(_core.candidateResiduals(good, kernel, bg, control))

    params = np.asarray(bg.getParameters(), dtype=float).copy()
    params[0] = np.nextafter(params[0], np.inf)  # one ulp: a different model all the same
    shifted = pm.SpatialBackground(bg.getSpatialFunction(), params)
    reused = np.asarray(_core.candidateResidualsReused(good, kernel, shifted, control))
    assert reused[:, 0].all() and not reused[:, 1].any()
    got = np.asarray(_core.candidateResiduals(good, kernel, shifted, control))
    _assertSameBits(
        got, np.asarray(_core.candidateResiduals(good, kernel, shifted, control, reuse=False))
    )
    _assertSameBits(got[:, :2], before[:, :2])

    # A visibly different model: the stale SPATIAL values would be wrong, not just old.
    params[0] += 50.0
    offset = pm.SpatialBackground(bg.getSpatialFunction(), params)
    got = np.asarray(_core.candidateResiduals(good, kernel, offset, control))
    assert (np.abs(got[:, 2] - before[:, 2]) > 0.1).all()

    # A candidate refitted directly (not by the visitor) with another basis: its LOCAL pair
    # is recomputed from the new RECENT kernel; the others keep theirs.
    cand = good[0]
    oldSerial = cand.getKernelSolution(pm.KernelCandidate.RECENT).getKernelSerial()
    smaller = alBasis(alConfig(alardDegGauss=[2, 1, 1]))
    cand.build(smaller)
    assert cand.getKernelSolution(pm.KernelCandidate.RECENT).getKernelSerial() != oldSerial
    reused = np.asarray(_core.candidateResidualsReused(good, kernel, bg, control))
    assert not reused[0, 0] and reused[1:, 0].all() and reused[:, 1].all()
    got = np.asarray(_core.candidateResiduals(good, kernel, bg, control))
    _assertSameBits(
        got, np.asarray(_core.candidateResiduals(good, kernel, bg, control, reuse=False))
    )
    assert got[0, 1] != before[0, 1]
    _assertSameBits(got[1:], before[1:])


def test_metrics_recomputed_after_an_unassessed_final_fit(rng: np.random.Generator) -> None:
    """With maxSpatialIterations reached on an assessment that rejected candidates, the last
    spatial fit is not assessed: the remembered SPATIAL pairs belong to the previous model and
    the metadata come from a recomputation under the final one."""
    field = makeField(rng, nStars=25)
    base = dict(nStarPerCell=-1, spatialKernelOrder=0, singleKernelClipping=False)
    probe = CellSetTask(config=alConfig(spatialKernelClipping=False, **base))
    cells, candidates = probe._buildCellSet(field)
    _, kernel, bg = probe._solve(cells, alBasis(probe.kConfig))
    good = [c for c in candidates if c.getStatus() == pm.KernelCandidate.GOOD]
    spatialRms = np.asarray(
        _core.candidateResiduals(good, kernel, bg, makeKernelControl(probe.kConfig))
    )[:, 3]
    # A threshold that the worst fifth of the candidates fail under the spatial model.
    config = alConfig(
        spatialKernelClipping=True,
        maxSpatialIterations=1,
        candidateResidualStdMax=float(np.quantile(spatialRms, 0.8)),
        **base,
    )
    task = CellSetTask(config=config)
    cells, candidates = task._buildCellSet(field)
    _, kernel, bg = task._solve(cells, alBasis(config))
    nBad = sum(1 for c in candidates if c.getStatus() == pm.KernelCandidate.BAD)
    assert nBad >= 3  # the assessment did reject, so the final fit went unassessed
    good = _goodInCellOrder(cells)
    control = makeKernelControl(config)
    reused = np.asarray(_core.candidateResidualsReused(good, kernel, bg, control))
    assert reused[:, 0].all() and not reused[:, 1].any()
    fresh = np.asarray(_core.candidateResiduals(good, kernel, bg, control, reuse=False))
    for key, value in _metricValues(fresh).items():
        assert task.metadata[key] == value, key


def test_pca_refit_replaces_the_remembered_local_pair(rng: np.random.Generator) -> None:
    """The PCA path refits every candidate with the eigen-basis (its RECENT solution becomes
    the PCA one): the LOCAL pairs remembered are those of that refit, never of the first
    (ORIG) fit, and equal a fresh computation bit for bit."""
    field = makeField(rng, nStars=25)
    config = alConfig(
        nStarPerCell=-1,
        spatialKernelOrder=0,
        spatialKernelClipping=False,
        usePcaForSpatialKernel=True,
        numPrincipalComponents=3,
    )
    task = CellSetTask(config=config)
    cells, candidates = task._buildCellSet(field)
    _, kernel, bg = task._solve(cells, alBasis(config))
    good = [c for c in candidates if c.getStatus() == pm.KernelCandidate.GOOD]
    assert len(good) >= 20
    for cand in good:
        orig = cand.getKernelSolution(pm.KernelCandidate.ORIG)
        recent = cand.getKernelSolution(pm.KernelCandidate.RECENT)
        assert recent.getKernelSerial() != orig.getKernelSerial()
    control = makeKernelControl(config)
    assert np.asarray(_core.candidateResidualsReused(good, kernel, bg, control)).all()
    got = np.asarray(_core.candidateResiduals(good, kernel, bg, control))
    _assertSameBits(
        got, np.asarray(_core.candidateResiduals(good, kernel, bg, control, reuse=False))
    )
    # The 3-component PCA kernel fits worse than the 27-kernel ORIG one: had the ORIG pair
    # been taken, the LOCAL rms would be the smaller one.
    origRms = []
    for cand in good:
        diff = cand.getDifferenceImage(pm.KernelCandidate.ORIG)
        stats = pm.ImageStatistics(config)
        stats.apply(diff, 0)
        origRms.append(stats.getRms())
    assert np.median(got[:, 1]) > np.median(origRms)


@pytest.mark.parametrize("subtractMeanForPca", [True, False])
def test_create_pca_basis_against_numpy_svd(
    rng: np.random.Generator, subtractMeanForPca: bool
) -> None:
    # §5.7: the PCA basis is [mean kernel] + the leading principal components of the
    # candidates' unit-sum ORIG kernels, numPrincipalComponents in all, renormalised (§2.2).
    # The truth is numpy's SVD of the same kernel images; the candidates are then refitted
    # into their PCA slot with ORIG untouched.
    field = makeField(rng, nStars=25)
    config = pm.PsfMatchConfigDF()
    config.kernelSize = 11
    config.fitForBackground = True
    config.subtractMeanForPca = subtractMeanForPca
    config.numPrincipalComponents = 4
    task = DFTask(config=config)
    cells, candidates = task._buildCellSet(field)
    cells.visitCandidates(
        pm.BuildSingleKernelVisitor(pm.makeKernelBasisList(config), config, task.hMat), -1
    )
    used = [c for c in candidates if c.getStatus() != pm.KernelCandidate.BAD]
    assert len(used) >= 20
    origSums = [c.getKsum(pm.KernelCandidate.ORIG) for c in used]
    stack = np.array(
        [
            c.getKernelImage(pm.KernelCandidate.ORIG).ravel() / s
            for c, s in zip(used, origSums, strict=True)
        ]
    )

    nRejected, basis = task._createPcaBasis(cells, -1, pm.makeKernelControl(config))
    assert len(basis) == 4
    images = [np.asarray(k.getImage()).ravel() for k in basis]

    def orient(v: np.ndarray) -> np.ndarray:
        """The sign psfmatch gives an eigen-image: its largest-magnitude pixel positive."""
        return v if v[np.argmax(np.abs(v))] > 0 else -v

    # Eigenvectors of a 20-odd-image Gram matrix whose leading eigenvalues are well
    # separated: agreement to ~1e-10; 1e-7 leaves room for the smaller gaps.
    if subtractMeanForPca:
        mean = stack.mean(axis=0)
        np.testing.assert_allclose(images[0], mean, rtol=0, atol=1e-12)  # sums to 1 already
        _, _, vt = np.linalg.svd(stack - mean, full_matrices=False)
        for i in range(1, 4):
            # Mean-subtracted components sum to 0: §2.2 only scales them to unit norm.
            np.testing.assert_allclose(images[i], orient(vt[i - 1]), rtol=0, atol=1e-7)
    else:
        _, _, vt = np.linalg.svd(stack, full_matrices=False)
        np.testing.assert_allclose(images[0], vt[0] / vt[0].sum(), rtol=0, atol=1e-7)
        for i in range(1, 4):
            raw = orient(vt[i])
            if abs(raw.sum()) > np.finfo(np.float32).eps:
                raw = raw / raw.sum() - images[0]
            np.testing.assert_allclose(images[i], raw / np.linalg.norm(raw), rtol=0, atol=1e-7)
    for image in images[1:]:
        assert image.sum() == pytest.approx(0.0, abs=1e-12)  # §2.2 properties
        assert np.linalg.norm(image) == pytest.approx(1.0, rel=1e-12)

    # The refit: each surviving candidate has a PCA solution that is a combination of the
    # new basis (its kernel lies in their span, to rounding), and its ORIG solution is
    # unchanged.
    after = [c for c in used if c.getStatus() != pm.KernelCandidate.BAD]
    assert nRejected == len(used) - len(after)
    span = np.array(images).T
    pcaSums = []
    for cand, origSum in zip(used, origSums, strict=True):
        assert cand.getKsum(pm.KernelCandidate.ORIG) == origSum
        if cand in after:
            k = cand.getKernelImage(pm.KernelCandidate.PCA).ravel()
            coeffs = np.linalg.lstsq(span, k, rcond=None)[0]
            np.testing.assert_allclose(span @ coeffs, k, rtol=0, atol=1e-10 * np.abs(k).max())
            pcaSums.append(cand.getKsum(pm.KernelCandidate.PCA))
    # The per-candidate sums scatter by ≈ 5 % (DF fits of 121 pixels on noisy stamps); their
    # median over 20+ candidates sits within ≈ 2 % of the truth, 5 % leaves room.
    assert float(np.median(pcaSums)) == pytest.approx(FLUX_SCALE, rel=0.05)


class MinimalTask(PsfMatchTask):
    """A PsfMatchTask that sets nothing but the abstract method."""

    def _buildCellSet(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError


def test_psf_match_task_defaults() -> None:
    task = MinimalTask()
    assert task.getName() == "psfMatch"
    assert task.getFullName() == "psfMatch"
    assert task.log.name == "psfmatch.psfMatch"
    assert type(task.config) is pm.PsfMatchConfig
    assert task.kConfig is task.config
    assert task.hMat is None and task.useRegularization is False


@pytest.mark.parametrize(
    "kernelName, useRegularization", [("AL", False), ("DF", True), ("DF", False)]
)
def test_kernel_config_comes_from_the_active_choice(
    kernelName: str, useRegularization: bool
) -> None:
    # A task config with a `kernel` choice field (as ImagePsfMatchConfig): the task uses the
    # active choice and makes H at construction only when that choice asks for it.
    config = pm.ImagePsfMatchConfig()
    config.kernel.name = kernelName
    config.kernel["DF"].kernelSize = 7
    config.kernel["DF"].useRegularization = useRegularization
    task = MinimalTask(config=config)
    assert task.kConfig is config.kernel.active
    assert task.useRegularization is (kernelName == "DF" and useRegularization)
    if task.useRegularization:
        # H covers the 7² kernel pixels plus the background term (§2.5); that it is the
        # right matrix is test_basis's job.
        nParams = 49 + int(config.kernel.active.fitForBackground)
        assert task.hMat is not None and task.hMat.shape == (nParams, nParams)
        np.testing.assert_array_equal(task.hMat, pm.makeRegularizationMatrix(config.kernel.active))
    else:
        assert task.hMat is None


@pytest.mark.skipif(
    "LSST_UTILS_DISABLE_TIMER" in __import__("os").environ,
    reason="timeMethod is a no-op when LSST_UTILS_DISABLE_TIMER is set at import",
)
def test_solve_is_timed(rng: np.random.Generator) -> None:
    field = makeField(rng, nStars=9)
    config = alConfig(spatialKernelOrder=0)
    task = CellSetTask(config=config)
    for _ in range(2):
        cells, _ = task._buildCellSet(field)
        task._solve(cells, alBasis(config))
    # @timeMethod records one start and one end entry per call.
    for item in ("_solveStartUtc", "_solveEndUtc", "_solveStartCpuTime", "_solveEndCpuTime"):
        assert len(task.metadata.getArray(item)) == 2, item
    assert task.metadata.getScalar("_solveEndCpuTime") >= task.metadata.getScalar(
        "_solveStartCpuTime"
    )
    assert "testPsfMatch._solveEndCpuTime" in task.getFullMetadata().names()
    # Inside each solve: the single-kernel passes and the spatial fits, timed on their own,
    # at least once per solve and within the solve's own span.
    from datetime import datetime

    def spans(name: str) -> list[tuple[datetime, datetime]]:
        starts = task.metadata.getArray(f"{name}StartUtc")
        ends = task.metadata.getArray(f"{name}EndUtc")
        return [
            (datetime.fromisoformat(a), datetime.fromisoformat(b))
            for a, b in zip(starts, ends, strict=True)
        ]

    solves = spans("_solve")
    for stage in ("fitCandidates", "fitSpatial"):
        inner = spans(stage)
        assert len(inner) >= 2, stage
        for start, end in inner:
            assert start <= end
            assert any(s0 <= start and end <= s1 for s0, s1 in solves), stage
