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
from psfmatch.psf_match import PsfMatchTask

N = 384
FLUX_SCALE = 1.3
SIGMA_T = 1.5
SKY_SIGMA_T = 1.0
SKY_SIGMA_S = 5.0


def scienceSigma(x: float) -> float:
    return 2.0 + 0.6 * x / N


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
    withBackground: bool = True,
) -> dict[str, Any]:
    """A template/science pair; star ``variable`` doubles its science flux, star ``spike``
    has a cosmic-ray-like hot pixel on its core in the science image."""
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
        scale = FLUX_SCALE * (2.0 if i == variable else 1.0)
        renderStar(science, x, y, scienceSigma(x), scale * f)
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
    config = pm.PsfMatchConfigAL()
    config.fitForBackground = True
    config.sizeCellX = config.sizeCellY = 64
    config.nStarPerCell = 2
    for key, value in overrides.items():
        setattr(config, key, value)
    return config


def alBasis(config: pm.PsfMatchConfigAL) -> list[Any]:
    return pm.makeKernelBasisList(
        config, SIGMA_T * pm.basis.FWHM_PER_SIGMA, scienceSigma(N / 2) * pm.basis.FWHM_PER_SIGMA
    )


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20261125)


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
    assert md["nCandidatesGood"] + md["nCandidatesBad"] <= md["nCandidatesTotal"]
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
    assert "_solveStartUtc" in md.names() or any(n.startswith("_solve") for n in md.names())


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
    field = makeField(rng, nStars=4)
    # Spatial order 2 has 6 terms per basis kernel; four stars cannot constrain it.
    config = alConfig(spatialKernelOrder=2, nStarPerCell=-1)
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

    class DFTask(CellSetTask):
        ConfigClass = pm.PsfMatchConfigDF

    config = pm.PsfMatchConfigDF()
    config.kernelSize = 15
    config.fitForBackground = True
    config.sizeCellX = config.sizeCellY = 64
    config.nStarPerCell = 2
    config.spatialKernelOrder = 1
    config.usePcaForSpatialKernel = usePca
    config.useRegularization = useRegularization
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
