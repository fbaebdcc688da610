# SPDX-License-Identifier: BSD-3-Clause
"""The PSF models of psfmatch.psf against analytic moments and their own contracts.

The second moments of a pixel-integrated Gaussian image of width σ are σ² + 1/12 pixel²
(the variance of the Gaussian plus that of a uniform pixel), which is what the image moments
here are compared with.
"""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest

import psfmatch as pm
from psfmatch.psf import DoubleGaussianPsf, GaussianPsf, ImagePsf, Quadrupole, VaryingPsf

FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))
PIXEL_VARIANCE = 1.0 / 12.0


def imageMoments(image: np.ndarray) -> tuple[float, float, float, float, float]:
    """(xc, yc, Ixx, Iyy, Ixy) of an image, unweighted, about its centroid."""
    ny, nx = image.shape
    y, x = np.mgrid[0:ny, 0:nx].astype(float)
    total = image.sum()
    xc = (image * x).sum() / total
    yc = (image * y).sum() / total
    ixx = (image * (x - xc) ** 2).sum() / total
    iyy = (image * (y - yc) ** 2).sum() / total
    ixy = (image * (x - xc) * (y - yc)).sum() / total
    return xc, yc, ixx, iyy, ixy


def allModels() -> list[pm.Psf]:
    rng = np.random.default_rng(3)
    blob = GaussianPsf(15, 11, 1.7).computeKernelImage() + 1e-3 * rng.random((11, 15))
    return [
        GaussianPsf(31, 21, 2.0),
        DoubleGaussianPsf(41, 41, 1.5, 4.0, 0.1),
        ImagePsf(3.0 * blob),
        VaryingPsf(lambda x, y: GaussianPsf(21, 21, 1.5 + x / 400.0), 25, 23),
        VaryingPsf(lambda x, y: GaussianPsf(27, 27, 2.0).computeKernelImage(), 21, 21),
    ]


@pytest.mark.parametrize("psf", allModels(), ids=repr)
def test_kernel_image_contract(psf: pm.Psf) -> None:
    for x, y in ((0.0, 0.0), (120.3, 40.7)):
        image = psf.computeKernelImage(x, y)
        width, height = psf.getDimensions()
        assert image.shape == (height, width)
        assert width % 2 == 1 and height % 2 == 1
        assert image.dtype == np.float64
        # Unit sum to float64 rounding over at most ~2000 pixels.
        np.testing.assert_allclose(image.sum(), 1.0, rtol=1e-13)
        bbox = psf.computeBBox(x, y)
        assert bbox.getDimensions() == (width, height)
        assert (bbox.getMinX(), bbox.getMinY()) == (-(width // 2), -(height // 2))
        # A new array each time: changing it does not change the model.
        image[:] = 0.0
        assert psf.computeKernelImage(x, y).sum() > 0.5


@pytest.mark.parametrize("shape", [(31, 31), (21, 35)])
def test_gaussian_is_centred_with_pixel_integrated_moments(shape: tuple[int, int]) -> None:
    height, width = shape
    sigma = 2.0
    psf = GaussianPsf(width, height, sigma)
    xc, yc, ixx, iyy, ixy = imageMoments(psf.computeKernelImage(10.0, 20.0))
    # A symmetric image: the centroid is the middle pixel to rounding.
    np.testing.assert_allclose([xc, yc], [width // 2, height // 2], rtol=0, atol=1e-12)
    # σ² + 1/12 of the pixel. The 21-pixel side reaches only 5σ: the truncated tail lowers
    # that moment by 4.4e-6 relative (measured), hence 1e-5; the 31-pixel side is good to 1e-12.
    np.testing.assert_allclose([ixx, iyy], sigma**2 + PIXEL_VARIANCE, rtol=1e-5)
    np.testing.assert_allclose(ixy, 0.0, atol=1e-12)  # round: only rounding


def test_gaussian_fwhm_and_shape() -> None:
    psf = GaussianPsf(31, 31, 1.7)
    shape = psf.computeShape()
    # computeShape is the continuous profile's: exactly σ² (no pixel term).
    assert shape.getIxx() == pytest.approx(1.7**2, rel=1e-15)
    assert shape.getIyy() == pytest.approx(1.7**2, rel=1e-15)
    assert shape.getIxy() == 0.0
    # FWHM = 2 sqrt(2 ln 2) σ = 2.3548 σ, to rounding.
    assert psf.getFwhm() == pytest.approx(2.354820045 * 1.7, rel=1e-9)
    assert psf.getSigma(5.0, 5.0) == pytest.approx(1.7, rel=1e-15)
    # The image's own FWHM from its moments includes the pixel: sqrt(σ² + 1/12) per axis.
    _, _, ixx, _, _ = imageMoments(psf.computeKernelImage())
    assert FWHM_PER_SIGMA * math.sqrt(ixx) == pytest.approx(
        FWHM_PER_SIGMA * math.sqrt(1.7**2 + PIXEL_VARIANCE), rel=1e-10
    )  # the wings beyond the 15-pixel half-width (8.8σ) are ~1e-17; the rest is rounding


def test_double_gaussian_moments() -> None:
    sigma1, sigma2, b = 1.5, 4.0, 0.1
    psf = DoubleGaussianPsf(61, 61, sigma1, sigma2, b)
    # Peak ratio b: flux weights σ₁² : b σ₂², and moments (σ₁⁴ + b σ₂⁴) / (σ₁² + b σ₂²).
    expected = (sigma1**4 + b * sigma2**4) / (sigma1**2 + b * sigma2**2)
    assert psf.computeShape().getIxx() == pytest.approx(expected, rel=1e-14)
    xc, yc, ixx, iyy, _ = imageMoments(psf.computeKernelImage())
    assert (xc, yc) == pytest.approx((30.0, 30.0), abs=1e-12)  # symmetric
    # The 30-pixel half-width is 7.5 σ₂: the truncated wings change the moment by ~1e-12.
    np.testing.assert_allclose([ixx, iyy], expected + PIXEL_VARIANCE, rtol=1e-10)
    # The central peak ratio of the two components, from the images themselves.
    core = GaussianPsf(61, 61, sigma1).computeKernelImage()
    wing = GaussianPsf(61, 61, sigma2).computeKernelImage()
    w1 = sigma1**2 / (sigma1**2 + b * sigma2**2)
    np.testing.assert_allclose(
        psf.computeKernelImage(), w1 * core + (1 - w1) * wing, rtol=0, atol=1e-15
    )  # the same sum of the same images, up to rounding
    # b = 0 is the single Gaussian, exactly.
    np.testing.assert_array_equal(
        DoubleGaussianPsf(21, 21, 2.0, 5.0, 0.0).computeKernelImage(),
        GaussianPsf(21, 21, 2.0).computeKernelImage(),
    )


def test_image_psf_normalises_and_measures() -> None:
    rng = np.random.default_rng(7)
    raw = GaussianPsf(25, 19, 2.2).computeKernelImage() * 40.0 + 0.01 * rng.random((19, 25))
    before = raw.copy()
    psf = ImagePsf(raw)
    np.testing.assert_array_equal(raw, before)  # the input is not modified
    np.testing.assert_allclose(psf.computeKernelImage(), raw / raw.sum(), rtol=1e-15)
    assert psf.getDimensions() == (25, 19)
    # computeShape measures the image's unweighted moments (same function as here).
    _, _, ixx, iyy, ixy = imageMoments(raw)
    shape = psf.computeShape()
    np.testing.assert_allclose([shape.ixx, shape.iyy, shape.ixy], [ixx, iyy, ixy], rtol=1e-12)

    padded = psf.resized(41, 41).computeKernelImage()
    np.testing.assert_allclose(padded.sum(), 1.0, rtol=1e-14)  # renormalised
    np.testing.assert_allclose(padded[11:30, 8:33], raw / raw.sum(), rtol=1e-14)  # centred
    clipped = psf.resized(9, 9).computeKernelImage()
    inner = raw[5:14, 8:17]
    np.testing.assert_allclose(clipped, inner / inner.sum(), rtol=1e-14)


def test_image_psf_errors() -> None:
    with pytest.raises(pm.InvalidInputError, match="odd dimensions"):
        ImagePsf(np.ones((10, 11)))
    with pytest.raises(pm.InvalidInputError, match="NaN"):
        ImagePsf(np.full((3, 3), np.nan))
    with pytest.raises(pm.InvalidInputError, match="positive sum"):
        ImagePsf(-np.ones((3, 3)))
    with pytest.raises(pm.InvalidInputError, match="2-D"):
        ImagePsf(np.ones(5))
    # Positive sum but negative wings along x: Ixx < 0, no shape.
    ring = np.zeros((5, 5))
    ring[2, 2] = 2.0
    ring[2, 1] = ring[2, 3] = -0.4
    psf = ImagePsf(ring)
    with pytest.raises(pm.PsfComputeShapeError, match="positive definite") as info:
        psf.computeShape(3.0, 4.0)
    assert info.value.position == (3.0, 4.0)
    assert isinstance(info.value, RuntimeError)
    with pytest.raises(pm.PsfComputeShapeError):
        psf.getFwhm()


def test_varying_psf_varies() -> None:
    psf = VaryingPsf(lambda x, y: GaussianPsf(21, 21, 1.5 + x / 400.0), 25, 25)
    # A Psf-valued function: its analytic shape, at each position.
    assert psf.getSigma(0.0, 0.0) == pytest.approx(1.5, rel=1e-15)
    assert psf.getSigma(200.0, 0.0) == pytest.approx(2.0, rel=1e-15)
    assert psf.getFwhm(200.0, 0.0) == pytest.approx(FWHM_PER_SIGMA * 2.0, rel=1e-15)
    left, right = psf.computeKernelImage(0.0, 0.0), psf.computeKernelImage(200.0, 0.0)
    assert left.shape == right.shape == (25, 25)  # padded from 21 to 25
    assert left.max() > right.max()  # narrower PSF, higher peak
    np.testing.assert_allclose(
        left[2:23, 2:23], GaussianPsf(21, 21, 1.5).computeKernelImage(), rtol=1e-14
    )  # the inner 21x21 is the function's image, renormalised after padding with zeros

    # An image-valued function: shapes are measured from the image.
    imagePsf = VaryingPsf(
        lambda x, y: GaussianPsf(41, 41, 1.0 + y / 100.0).computeKernelImage(),
        31,
        31,
        averagePosition=(0.0, 100.0),
    )
    assert imagePsf.getAveragePosition() == (0.0, 100.0)
    # At the average position σ = 2: the measured moments are σ² + 1/12; the wings beyond the
    # 41-pixel box (10σ) are negligible, so only rounding remains.
    assert imagePsf.computeShape().getIxx() == pytest.approx(4.0 + PIXEL_VARIANCE, rel=1e-10)
    assert imagePsf.resized(21, 21).computeKernelImage(0.0, 0.0).shape == (21, 21)


def test_varying_psf_errors() -> None:
    with pytest.raises(pm.InvalidInputError, match="callable"):
        VaryingPsf(3.0, 21, 21)  # type: ignore[arg-type]
    with pytest.raises(pm.InvalidInputError, match="odd"):
        VaryingPsf(lambda x, y: np.ones((3, 3)), 20, 21)
    bad = VaryingPsf(lambda x, y: np.ones((4, 3)), 21, 21)
    with pytest.raises(pm.InvalidInputError, match="odd dimensions"):
        bad.computeKernelImage(1.0, 2.0)
    with pytest.raises(pm.InvalidInputError, match="both x and y"):
        bad.computeKernelImage(1.0)


def test_constructor_errors() -> None:
    with pytest.raises(pm.InvalidInputError, match="width"):
        GaussianPsf(20, 21, 2.0)
    with pytest.raises(pm.InvalidInputError, match="height"):
        GaussianPsf(21, 0, 2.0)
    with pytest.raises(pm.InvalidInputError, match="sigma"):
        GaussianPsf(21, 21, -1.0)
    with pytest.raises(pm.InvalidInputError, match="sigma2"):
        DoubleGaussianPsf(21, 21, 1.0, math.nan, 0.1)
    with pytest.raises(pm.InvalidInputError, match="b:"):
        DoubleGaussianPsf(21, 21, 1.0, 3.0, -0.1)
    with pytest.raises(pm.InvalidInputError, match="finite"):
        GaussianPsf(21, 21, 2.0).computeKernelImage(math.inf, 0.0)


def test_quadrupole_radii_and_error_pickling() -> None:
    q = Quadrupole(4.0, 9.0, 1.0)
    assert q.getDeterminantRadius() == pytest.approx((36.0 - 1.0) ** 0.25, rel=1e-15)
    assert q.getTraceRadius() == pytest.approx(math.sqrt(6.5), rel=1e-15)
    err = pm.PsfComputeShapeError("no shape", position=(1.5, 2.5))
    copy = pickle.loads(pickle.dumps(err))
    assert str(copy) == str(err)
    assert copy.position == (1.5, 2.5)
    assert isinstance(copy, pm.PsfMatchError)
