# SPDX-License-Identifier: BSD-3-Clause
"""Convolution with the default Alard–Lupton basis: separable vs direct vs scipy.

A 2048² float32 image convolved with each of the 27 default basis kernels (21×21, exact
separable decompositions); target: separable ≥ 5× faster than direct. Also the design-matrix
builder ``convolveBasisOnGoodBox`` (the whole basis sharing its 1-D passes) and a full
masked-image convolution (image, variance with K², mask).
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage
import scipy.signal

import psfmatch as pm
from benchutils import (
    assertMatchesReference,
    float32Atol,
    goodBoxCrops,
    referenceConvolution,
    skyImage,
    spatialKernel,
)
from psfmatch import _core

N = 2048
METHODS = {
    "separable": _core.ConvolutionMethod.SEPARABLE,
    "direct": _core.ConvolutionMethod.DIRECT,
    "auto": _core.ConvolutionMethod.AUTO,
}


def checkBasisResults(image: np.ndarray, basis: list, results: list[np.ndarray]) -> None:
    assert len(results) == len(basis)
    for kernel, out in zip(basis, results, strict=True):
        assert out.dtype == np.float32 and out.shape == image.shape
        assertMatchesReference(out, image, kernel.getImage())


@pytest.mark.parametrize("method", ["separable", "direct"])
def test_basis_convolution_psfmatch(benchmark, basis, method: str) -> None:
    """27 × ``_core.convolvePlane`` (good box only, both cores)."""
    benchmark.group = f"convolve 27 basis kernels, {N}² float32"
    image, _ = skyImage(N)

    def run() -> list[np.ndarray]:
        return [_core.convolvePlane(image, k, method=METHODS[method]) for k in basis]

    results = benchmark.pedantic(run, rounds=3 if method == "direct" else 5, warmup_rounds=1)
    checkBasisResults(image, basis, results)


def test_basis_convolution_scipy_ndimage(benchmark, basis) -> None:
    """Reference: 27 × ``scipy.ndimage.convolve`` (a direct 2-D stencil, one core)."""
    benchmark.group = f"convolve 27 basis kernels, {N}² float32"
    image, _ = skyImage(N)

    def run() -> list[np.ndarray]:
        return [scipy.ndimage.convolve(image, k.getImage()) for k in basis]

    results = benchmark.pedantic(run, rounds=2)
    checkBasisResults(image, basis, results)


@pytest.mark.parametrize("n", [43, 512])
def test_design_matrix_psfmatch(benchmark, basis, n: int) -> None:
    """``_core.convolveBasisOnGoodBox``: all 27 columns on the good box, shared 1-D passes."""
    benchmark.group = f"design matrix (27 basis convolutions, float64), {n}²"
    image = skyImage(N)[0][:n, :n].astype(np.float64)
    columns = benchmark(_core.convolveBasisOnGoodBox, image, basis)
    good = n - 20
    assert columns.shape == (good * good, 27)
    for k in (0, 5, 26):
        expected = scipy.signal.convolve(image, basis[k].getImage(), mode="valid").ravel()
        scale = np.abs(basis[k].getImage()).sum() * np.abs(image).max()
        np.testing.assert_allclose(columns[:, k], expected, rtol=0, atol=1e-12 * scale)


@pytest.mark.parametrize("n", [43, 512])
def test_design_matrix_scipy(benchmark, basis, n: int) -> None:
    """Reference: ``scipy.signal.convolve`` (it picks FFT or direct) per kernel, stacked."""
    benchmark.group = f"design matrix (27 basis convolutions, float64), {n}²"
    image = skyImage(N)[0][:n, :n].astype(np.float64)
    kernels = [k.getImage() for k in basis]

    def run() -> np.ndarray:
        return np.stack(
            [scipy.signal.convolve(image, k, mode="valid").ravel() for k in kernels], axis=1
        )

    columns = benchmark(run)
    ours = _core.convolveBasisOnGoodBox(image, basis)
    np.testing.assert_allclose(columns, ours, rtol=0, atol=1e-9 * np.abs(image).max())


@pytest.fixture(scope="module")
def matchingKernel(basis, spatialParameters) -> pm.FixedKernel:
    """A realistic fixed matching kernel: the spatial model of benchutils at the centre."""
    kernel = spatialKernel(basis, spatialParameters, N).computeKernel(N / 2, N / 2)
    assert kernel.isSeparable()
    return kernel


@pytest.mark.parametrize("method", ["separable", "direct", "auto"])
def test_masked_image_psfmatch(benchmark, matchingKernel, method: str) -> None:
    """``pm.convolve``: image ⊗ K, variance ⊗ K², mask dilated; NaN/inf border."""
    benchmark.group = f"convolve masked image (image + variance + mask), {N}² float32"
    image, variance = skyImage(N)
    mi = pm.MaskedImage(image, variance=variance)
    rounds = 3 if method == "direct" else 5
    out = benchmark.pedantic(pm.convolve, (mi, matchingKernel), {"method": method}, rounds=rounds)
    k = matchingKernel.getImage()
    assertMatchesReference(out.image, image, k)
    assertMatchesReference(out.variance, variance, k**2)
    assert np.isnan(out.image[:10]).all() and np.isposinf(out.variance[:, -10:]).all()


def test_masked_image_scipy_ndimage(benchmark, matchingKernel) -> None:
    """Reference: ``scipy.ndimage.convolve`` of the image with K and the variance with K²."""
    benchmark.group = f"convolve masked image (image + variance + mask), {N}² float32"
    image, variance = skyImage(N)
    k = matchingKernel.getImage()

    def run() -> tuple[np.ndarray, np.ndarray]:
        return scipy.ndimage.convolve(image, k), scipy.ndimage.convolve(variance, k**2)

    outImage, outVariance = benchmark.pedantic(run, rounds=2)
    for window in goodBoxCrops(image.shape, k.shape):
        expected = referenceConvolution(image, k, window)
        np.testing.assert_allclose(outImage[window], expected, atol=float32Atol(image, k))
