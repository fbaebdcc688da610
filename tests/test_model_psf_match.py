# SPDX-License-Identifier: BSD-3-Clause
"""ModelPsfMatchTask (docs/algorithm.md §7.2) against analytic Gaussian PSFs.

A pixel-integrated Gaussian of width σ_s convolved with a continuous Gaussian of width
sqrt(σ_r² − σ_s²) is the pixel-integrated Gaussian of width σ_r. So the kernel fitted between
two `GaussianPsf` models, applied to the science PSF, must give an image whose second moments
are σ_r² + 1/12 (the pixel's variance); that is the known answer used throughout.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import lsst.pex.config as pexConfig
import numpy as np
import pytest
from scipy.signal import convolve as scipyConvolve
from scipy.special import erf

import psfmatch as pm
from psfmatch.model_psf_match import ModelPsfMatchConfig, ModelPsfMatchTask
from psfmatch.psf import GaussianPsf, ImagePsf, VaryingPsf

PIXEL_VARIANCE = 1.0 / 12.0
SIGMA_SCIENCE = 2.0
SIGMA_REFERENCE = 3.0


def matchedSigma(kernel: Any, x: float, y: float, sigmaScience: float) -> float:
    """Width of the science PSF convolved with the kernel at (x, y), normalised, pixel removed.

    The science PSF is rendered in a 61-pixel box (15σ) so that the measured moments are
    those of the convolution, not of a truncated input.
    """
    kernelImage = kernel.computeKernel(x, y).getImage()
    matched = scipyConvolve(GaussianPsf(61, 61, sigmaScience).computeKernelImage(), kernelImage)
    matched /= matched.sum()
    ny, nx = matched.shape
    yy, xx = np.mgrid[0:ny, 0:nx].astype(float)
    xc, yc = (matched * xx).sum(), (matched * yy).sum()
    ixx = (matched * (xx - xc) ** 2).sum()
    iyy = (matched * (yy - yc) ** 2).sum()
    return math.sqrt(max(0.5 * (ixx + iyy) - PIXEL_VARIANCE, 0.0))


def blankImage(shape: tuple[int, int] = (256, 256), xy0: tuple[int, int] = (0, 0)) -> Any:
    return pm.MaskedImage(np.zeros(shape, np.float32), None, np.ones(shape, np.float32), xy0=xy0)


def makeTask(**kernelOverrides: Any) -> ModelPsfMatchTask:
    config = ModelPsfMatchConfig()
    for name, value in kernelOverrides.items():
        if name in ("doAutoPadPsf", "padPsfBy", "autoPadPsfTo"):
            setattr(config, name, value)
        else:
            setattr(config.kernel.active, name, value)
    return ModelPsfMatchTask(config=config)


def test_config_defaults() -> None:
    config = ModelPsfMatchConfig()
    config.validate()
    kernel = config.kernel.active
    assert isinstance(kernel, pm.PsfMatchConfigAL)
    assert not kernel.singleKernelClipping
    assert not kernel.kernelSumClipping
    assert not kernel.spatialKernelClipping
    assert not kernel.checkConditionNumber
    assert kernel.constantVarianceWeighting
    assert not kernel.scaleByFwhm
    assert config.doAutoPadPsf
    assert config.autoPadPsfTo == 1.4
    assert config.padPsfBy == 0
    config.autoPadPsfTo = 2.0  # the range [1, 2] includes both ends
    with pytest.raises(pexConfig.FieldValidationError, match="autoPadPsfTo"):
        config.autoPadPsfTo = 2.5
    with pytest.raises(pexConfig.FieldValidationError, match="DF"):
        config.kernel.name = "DF"


@pytest.mark.parametrize("order", [0, 1])
@pytest.mark.parametrize("kernelSum", [1.0, 0.7])
def test_kernel_sum_is_imposed_exactly(order: int, kernelSum: float) -> None:
    task = makeTask(spatialKernelOrder=order)
    result = task.run(
        blankImage(),
        GaussianPsf(31, 31, SIGMA_SCIENCE),
        GaussianPsf(41, 41, SIGMA_REFERENCE),
        kernelSum=kernelSum,
    )
    kernel = result.psfMatchingKernel
    assert kernel.getSpatialParameters()[0, 0] == kernelSum
    for x, y in ((0.0, 0.0), (127.5, 128.0), (255.0, 17.0), (-100.0, 400.0)):
        # The sum of 441 pixels of the kernel: a few float64 roundings.
        assert kernel.getSum(x, y) == pytest.approx(kernelSum, rel=1e-13)
    # The reference PSF was rendered anew at the stamp size, 31 = nextOdd(1.4 × 21).
    assert result.referencePsf.getDimensions() == (31, 31)
    assert task.metadata["modelPsfSize"] == 31
    # _diagnostic is a no-op for this task.
    assert "spatialKernelSum" not in task.metadata
    for key, value in (("ALKernelSize", 21), ("ALBasisMode", "config"), ("ALBasisNGauss", 3)):
        assert task.metadata[key] == value


def test_matched_gaussian_has_the_reference_width() -> None:
    task = makeTask(spatialKernelOrder=1)
    result = task.run(
        blankImage(xy0=(100, -50)),
        GaussianPsf(31, 31, SIGMA_SCIENCE),
        GaussianPsf(31, 31, SIGMA_REFERENCE),
        kernelSum=0.7,
    )
    for x, y in ((228.0, 78.0), (110.0, -40.0)):
        # 1 %: the 21-pixel kernel fitted on an 11-pixel good box (31 − 21 + 1) gives 2.9967
        # (0.11 % low), from the wings the AL basis cannot reach; kernelSum 0.7 must not
        # change that.
        assert matchedSigma(result.psfMatchingKernel, x, y, SIGMA_SCIENCE) == pytest.approx(
            SIGMA_REFERENCE, rel=0.01
        )


def renderStars(shape: tuple[int, int], positions: list[tuple[float, float]], sigma: float) -> Any:
    """Pixel-integrated Gaussian stars of unit flux, as erf differences."""
    image = np.zeros(shape)
    yEdges = np.arange(shape[0] + 1) - 0.5
    xEdges = np.arange(shape[1] + 1) - 0.5
    for x, y in positions:
        fx = np.diff(0.5 * erf((xEdges - x) / (math.sqrt(2.0) * sigma)))
        fy = np.diff(0.5 * erf((yEdges - y) / (math.sqrt(2.0) * sigma)))
        image += np.outer(fy, fx)
    return image


def test_output_image_stars_are_matched_and_flux_kept() -> None:
    shape = (200, 240)
    positions = [(60.3, 50.6), (180.0, 140.2), (120.7, 100.0)]
    image = renderStars(shape, positions, SIGMA_SCIENCE)
    variance = np.full(shape, 4.0)
    mi = pm.MaskedImage(image.astype(np.float32), None, variance.astype(np.float32))
    before = mi.image.copy()
    task = makeTask(spatialKernelOrder=0)
    outputs = {}
    for kernelSum in (1.0, 2.5):
        result = task.run(
            mi, GaussianPsf(31, 31, SIGMA_SCIENCE), GaussianPsf(31, 31, SIGMA_REFERENCE), kernelSum
        )
        outputs[kernelSum] = result.psfMatchedMaskedImage
    np.testing.assert_array_equal(mi.image, before)  # the input is not modified
    out = outputs[1.0]
    # Normalised convolution: kernelSum does not change the pixels (float32 rounding).
    np.testing.assert_allclose(outputs[2.5].image, out.image, rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(outputs[2.5].variance, out.variance, rtol=1e-5)
    kernelImage = result.psfMatchingKernel.computeKernel(0.0, 0.0).getImage()
    kernelImage = kernelImage / kernelImage.sum()
    # Variance = K² ⊗ 4 with the normalised K, in the interior, to the relative error that
    # `psfmatch.convolve` allows the variance plane (varianceTolerance = 1e-3; 4e-5 measured).
    np.testing.assert_allclose(
        out.variance[50:150, 50:190], 4.0 * (kernelImage**2).sum(), rtol=1e-3
    )
    for x, y in positions:
        ix, iy = int(round(x)), int(round(y))
        stamp = out.image[iy - 20 : iy + 21, ix - 20 : ix + 21].astype(np.float64)
        # Unit flux in, unit flux out: the ±20-pixel box holds all but ~1e-11 of a σ=3 star
        # (6.7σ); the 2e-6 allows for float32 pixels.
        assert stamp.sum() == pytest.approx(1.0, rel=2e-6)
        yy, xx = np.mgrid[iy - 20 : iy + 21, ix - 20 : ix + 21].astype(float)
        xc, yc = (stamp * xx).sum(), (stamp * yy).sum()
        # The centroid does not move (symmetric kernel): 1e-3 px is well below any use.
        assert (xc, yc) == pytest.approx((x, y), abs=1e-3)
        ixx = (stamp * (xx - xc) ** 2).sum()
        iyy = (stamp * (yy - yc) ** 2).sum()
        width = math.sqrt(0.5 * (ixx + iyy) - PIXEL_VARIANCE)
        # 1 %, as for the kernel itself (0.11 % measured).
        assert width == pytest.approx(SIGMA_REFERENCE, rel=0.01)
    # The border the kernel cannot reach (half-width 10): NaN, infinite variance, NO_DATA.
    noData = pm.Mask.getPlaneBitMask("NO_DATA")
    assert np.isnan(out.image[:10]).all() and np.isinf(out.variance[:, -10:]).all()
    assert ((out.mask[:, :10] & noData) != 0).all()
    assert np.isfinite(out.image[10:-10, 10:-10]).all()


def sigmaAt(x: float) -> float:
    """A science PSF width varying linearly across the 256-pixel image."""
    return 1.8 + 0.6 * x / 255.0


def test_spatially_varying_science_psf() -> None:
    sciencePsf = VaryingPsf(lambda x, y: GaussianPsf(31, 31, sigmaAt(x)), 31, 31)
    # 43-pixel stamps (2 × 21): the kernel's wings are constrained (see the next test).
    task = makeTask(spatialKernelOrder=2, autoPadPsfTo=2.0)
    result = task.run(blankImage(), sciencePsf, GaussianPsf(31, 31, SIGMA_REFERENCE))
    assert task.metadata["modelPsfSize"] == 43
    # Well constrained: the fitted sum of unit-sum stamps is 1 (2e-4 measured).
    assert task.metadata["fittedKernelSum"] == pytest.approx(1.0, abs=1e-3)
    for x in (-64.0, 20.0, 128.0, 240.0, 320.0):
        # 0.2 %: a quadratic in x through the 16 cell centres follows the kernel's variation
        # with σ_s(x) closely (2.9990-2.9996 measured, over the whole grown box).
        assert matchedSigma(result.psfMatchingKernel, x, 100.0, sigmaAt(x)) == pytest.approx(
            SIGMA_REFERENCE, rel=2e-3
        )
    # The science FWHM in the metadata is the one at the box centre (no average position).
    assert task.metadata["sciencePsfFwhm"] == pytest.approx(
        2.0 * math.sqrt(2.0 * math.log(2.0)) * sigmaAt(127.5), rel=1e-12
    )  # the same formula, to rounding


def test_poorly_constrained_fit_warns(caplog: pytest.LogCaptureFixture) -> None:
    sciencePsf = VaryingPsf(lambda x, y: GaussianPsf(31, 31, sigmaAt(x)), 31, 31)
    # The default padding, 31-pixel stamps: an 11-pixel good box for a 21-pixel kernel.
    task = makeTask(spatialKernelOrder=0)
    with caplog.at_level(logging.WARNING):
        task.run(blankImage(), sciencePsf, GaussianPsf(31, 31, SIGMA_REFERENCE))
    # The least-squares optimum moves flux into wild wings: α₀ = 0.514 measured.
    assert not 0.9 < task.metadata["fittedKernelSum"] < 1.1
    assert any("constrain the 21-pixel kernel poorly" in r.getMessage() for r in caplog.records)


def test_kernel_larger_than_psf_raises() -> None:
    task = makeTask(doAutoPadPsf=False)
    science, reference = GaussianPsf(21, 21, 2.0), GaussianPsf(21, 21, 3.0)
    with pytest.raises(pm.InvalidInputError, match=r"kernelSize \(21\) is too big.*padPsfBy >= 2"):
        task.run(blankImage(), science, reference)
    # Padding by 2 makes room for it: 23-pixel stamps allow a 21-pixel kernel.
    result = makeTask(doAutoPadPsf=False, padPsfBy=2).run(blankImage(), science, reference)
    assert result.psfMatchingKernel.getDimensions() == (21, 21)


def test_odd_padding_raises() -> None:
    task = makeTask(doAutoPadPsf=False, padPsfBy=3)
    with pytest.raises(pm.InvalidInputError, match="padPsfBy"):
        task.run(blankImage(), GaussianPsf(31, 31, 2.0), GaussianPsf(31, 31, 3.0))


def test_bad_arguments() -> None:
    task = makeTask()
    science, reference = GaussianPsf(31, 31, 2.0), GaussianPsf(31, 31, 3.0)
    with pytest.raises(pm.InvalidInputError, match="maskedImage"):
        task.run(np.zeros((64, 64)), science, reference)  # type: ignore[arg-type]
    with pytest.raises(pm.InvalidInputError, match="referencePsf"):
        task.run(blankImage(), science, 3.0)
    with pytest.raises(pm.InvalidInputError, match="kernelSum"):
        task.run(blankImage(), science, reference, kernelSum=0.0)


def test_psf_failures_raise_psf_compute_shape_error() -> None:
    task = makeTask()

    def failing(x: float, y: float) -> Any:
        if x > 200:
            raise ArithmeticError("no PSF model here")
        return GaussianPsf(31, 31, 2.0)

    with pytest.raises(pm.PsfComputeShapeError, match="no PSF model here") as info:
        task.run(blankImage(), VaryingPsf(failing, 31, 31), GaussianPsf(31, 31, 3.0))
    assert info.value.position is not None and info.value.position[0] > 200

    # A science PSF whose moments are not positive definite anywhere: the FWHM evaluation
    # retries four offsets, then gives up.
    ring = GaussianPsf(31, 31, 2.0).computeKernelImage()
    # Negative pixels 6 px either side along x: Σ I dx² = 4.08 − 2 · 0.06 · 36 < 0.
    ring[15, 9] = ring[15, 21] = -0.06
    with pytest.raises(pm.PsfComputeShapeError, match="positive definite"):
        task.run(blankImage(), ImagePsf(ring), GaussianPsf(31, 31, 3.0))


class BareGaussian:
    """A PSF with only computeKernelImage and computeShape: it cannot be resized."""

    def __init__(self, size: int, sigma: float) -> None:
        self._psf = GaussianPsf(size, size, sigma)

    def computeKernelImage(self, x: float, y: float) -> np.ndarray:
        return self._psf.computeKernelImage(x, y)

    def computeShape(self, x: float, y: float) -> Any:
        return self._psf.computeShape(x, y)


def test_reference_psf_that_cannot_be_resized_is_padded(caplog: pytest.LogCaptureFixture) -> None:
    task = makeTask(spatialKernelOrder=0)
    with caplog.at_level(logging.WARNING):
        result = task.run(blankImage(), GaussianPsf(31, 31, 2.0), BareGaussian(25, 3.0))
    assert any("Zero padding or clipping" in r.getMessage() for r in caplog.records)
    assert isinstance(result.referencePsf, BareGaussian)
    # The zero-padded 25-pixel reference (4σ half-width, 0.01 % of the flux lost and then
    # renormalised) still gives the reference width to 1 %.
    assert matchedSigma(result.psfMatchingKernel, 0.0, 0.0, 2.0) == pytest.approx(3.0, rel=0.01)


def test_bic_on_noise_free_models_picks_the_lowest_degrees() -> None:
    task = makeTask(spatialKernelOrder=0, useBicForKernelBasis=True)
    result = task.run(blankImage(), GaussianPsf(31, 31, 2.0), GaussianPsf(31, 31, 3.0))
    # Variance 1 and noise-free stamps: χ² ≈ 0, so k ln n alone decides.
    assert task.metadata["ALBasisDegGaussBic"] == [1, 1, 1]
    assert task.metadata["ALBasisDegGauss"] == [1, 1, 1]
    assert result.psfMatchingKernel.getNBasisKernels() == 9
    assert result.psfMatchingKernel.getSum(0.0, 0.0) == pytest.approx(1.0, rel=1e-13)


def test_cell_grid_covers_the_image_grown_by_one_cell() -> None:
    """docs/algorithm.md §7.2: the box grown by one cell on every side, full cells only, one
    candidate at each cell centre x = sizeCellX·col + sizeCellX//2 + x0 (likewise y)."""
    config = ModelPsfMatchConfig()
    config.kernel.active.sizeCellX = 64
    config.kernel.active.sizeCellY = 50
    config.kernel.active.spatialKernelOrder = 1
    task = ModelPsfMatchTask(config=config)
    shape, xy0 = (210, 300), (10, -20)  # ny, nx
    result = task.run(
        blankImage(shape, xy0), GaussianPsf(31, 31, SIGMA_SCIENCE), GaussianPsf(31, 31, 3.0)
    )
    # Grown box: x from 10 − 64 = −54, width 300 + 128 = 428 → 6 full cells; y from −20 − 50 =
    # −70, height 210 + 100 = 310 → 6 full cells.
    expected = {
        (64.0 * col + 32 - 54, 50.0 * row + 25 - 70) for col in range(6) for row in range(6)
    }
    found = {
        (c.getXCenter(), c.getYCenter())
        for c in result.kernelCellSet.getAllCandidates(ignoreBad=False)
    }
    assert found == expected
