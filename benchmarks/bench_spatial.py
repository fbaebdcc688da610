# SPDX-License-Identifier: BSD-3-Clause
"""The spatial model: whole-image convolution with a spatially varying kernel, and a full
spatial fit on 500 candidates.

The default 27-term AL basis at spatial order 2 (Chebyshev), image AND variance of 2048² and
4096² float32 images; target 4096² ≤ 1.0 s on a 2-core machine. Beside it a brute-force
per-pixel reference on a small crop (the kernel evaluated at every pixel) and
``scipy.ndimage.convolve`` with one fixed kernel over the whole image as a scale reference.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage
import scipy.signal

import psfmatch as pm
from benchutils import (
    FIT_REGION,
    STAMP,
    skipLargeInSmoke,
    skyImage,
    spatialKernel,
)

SIZES = [2048, 4096]
CROP = 16  # brute-force window: CROP × CROP output pixels


def cropWindows(n: int) -> list[tuple[int, int]]:
    """Lower-left corners of the brute-force windows: near the good box's corners and centre."""
    lo, hi, mid = 10, n - 11 - CROP, (n - CROP) // 2
    return [(lo, lo), (hi, lo), (mid, mid), (lo, hi), (hi, hi)]


def bruteForce(
    image: np.ndarray, lck: pm.LinearCombinationKernel, x0: int, y0: int, square: bool
) -> np.ndarray:
    """out[y, x] = Σ K_(x,y)[j, i] · in[y − j + c, x − i + c], K evaluated at every pixel
    (K² for the variance); a CROP × CROP window with lower-left output pixel (x0, y0)."""
    out = np.empty((CROP, CROP))
    for y in range(y0, y0 + CROP):
        for x in range(x0, x0 + CROP):
            k = lck.computeImage(x, y)[0]
            if square:
                k = k * k
            h = (k.shape[0] - 1) // 2
            patch = image[y - h : y + h + 1, x - h : x + h + 1].astype(np.float64)
            out[y - y0, x - x0] = np.sum(k[::-1, ::-1] * patch)
    return out


@pytest.fixture(scope="module")
def bruteForceCache(basis, spatialParameters) -> dict:
    """Brute-force windows per size, computed once (they are the slow reference)."""
    cache: dict = {}

    def get(n: int) -> list:
        if n not in cache:
            image, variance = skyImage(n)
            lck = spatialKernel(basis, spatialParameters, n)
            cache[n] = [
                (
                    x0,
                    y0,
                    bruteForce(image, lck, x0, y0, False),
                    bruteForce(variance, lck, x0, y0, True),
                )
                for x0, y0 in cropWindows(n)
            ]
        return cache[n]

    return get


@pytest.mark.parametrize("n", SIZES)
def test_spatial_convolution_psfmatch(
    benchmark, basis, spatialParameters, bruteForceCache, n: int
) -> None:
    """``pm.convolve(MaskedImage, LinearCombinationKernel)``: image, variance and mask."""
    skipLargeInSmoke(benchmark, n)
    benchmark.group = f"spatially varying convolution, image + variance, {n}² float32"
    image, variance = skyImage(n)
    lck = spatialKernel(basis, spatialParameters, n)
    mi = pm.MaskedImage(image, variance=variance)
    out = benchmark.pedantic(pm.convolve, (mi, lck), rounds=5, warmup_rounds=1)
    for x0, y0, expImage, expVariance in bruteForceCache(n):
        window = slice(y0, y0 + CROP), slice(x0, x0 + CROP)
        # Image plane exact (summation order only): 1e-5 relative is the documented budget.
        np.testing.assert_allclose(out.image[window], expImage, rtol=1e-5, atol=0)
        # Variance plane: K² held constant over tiles, ≤ 1e-3 relative by construction.
        np.testing.assert_allclose(out.variance[window], expVariance, rtol=1e-3, atol=0)
    assert np.isnan(out.image[:10]).all() and np.isposinf(out.variance[-10:]).all()
    assert np.isfinite(out.image[10:-10, 10:-10]).all()


@pytest.mark.parametrize("n", SIZES)
def test_spatial_convolution_brute_force_crop(benchmark, basis, spatialParameters, n: int) -> None:
    """Reference: K evaluated per pixel (numpy) on one CROP² window — see the pixel count."""
    skipLargeInSmoke(benchmark, n)
    benchmark.group = f"spatially varying convolution, image + variance, {n}² float32"
    image, variance = skyImage(n)
    lck = spatialKernel(basis, spatialParameters, n)
    x0, y0 = cropWindows(n)[2]
    benchmark.extra_info["pixels"] = CROP * CROP
    benchmark.extra_info["full image pixels"] = n * n

    def run() -> tuple[np.ndarray, np.ndarray]:
        return bruteForce(image, lck, x0, y0, False), bruteForce(variance, lck, x0, y0, True)

    outImage, _ = benchmark.pedantic(run, rounds=3)
    ours = pm.convolve(pm.MaskedImage(image, variance=variance), lck)
    np.testing.assert_allclose(
        ours.image[y0 : y0 + CROP, x0 : x0 + CROP], outImage, rtol=1e-5, atol=0
    )


@pytest.mark.parametrize("n", SIZES)
def test_spatial_convolution_scipy_fixed_kernel(
    benchmark, basis, spatialParameters, n: int
) -> None:
    """Scale reference: ``scipy.ndimage.convolve`` of image (K) and variance (K²) with the
    kernel at the image centre held fixed."""
    skipLargeInSmoke(benchmark, n)
    benchmark.group = f"spatially varying convolution, image + variance, {n}² float32"
    image, variance = skyImage(n)
    k = spatialKernel(basis, spatialParameters, n).computeImage(n / 2, n / 2)[0]

    def run() -> tuple[np.ndarray, np.ndarray]:
        return scipy.ndimage.convolve(image, k), scipy.ndimage.convolve(variance, k * k)

    outImage, outVariance = benchmark.pedantic(run, rounds=2)
    window = slice(100, 120), slice(200, 230)
    patch = image[90:130, 190:240].astype(np.float64)
    expected = scipy.signal.convolve(patch, k, mode="valid")
    np.testing.assert_allclose(outImage[window], expected, rtol=1e-5)


# --------------------------------------------------------------------------------------------
# the full spatial fit on 500 candidates
# --------------------------------------------------------------------------------------------

N_CANDIDATES = 500
TEMPLATE_SIGMA = 1.4
NOISE = 0.5  # science noise; template noise-free so the fit is unbiased


@pytest.fixture(scope="module")
def fitStamps(basis, spatialParameters) -> list[tuple[float, float, np.ndarray, np.ndarray]]:
    """500 (x, y, template, science) stamps in a 2048² field: a star of σ = 1.4 px in the
    template; science = template ⊗ K(x, y) of the spatial model + noise (K in the basis' span)."""
    rng = np.random.default_rng(500)
    lck = spatialKernel(basis, spatialParameters, FIT_REGION)
    half, h = STAMP // 2, 10
    u = np.arange(-(half + h), half + h + 1, dtype=float)
    stamps = []
    for _ in range(N_CANDIDATES):
        x, y = rng.uniform(40.0, FIT_REGION - 40.0, 2)
        dx, dy = rng.uniform(-0.5, 0.5, 2)
        flux = rng.uniform(5e3, 5e4)
        star = np.outer(
            np.exp(-0.5 * ((u - dy) / TEMPLATE_SIGMA) ** 2),
            np.exp(-0.5 * ((u - dx) / TEMPLATE_SIGMA) ** 2),
        )
        big = 100.0 + flux * star / (2.0 * np.pi * TEMPLATE_SIGMA**2)
        kernel = lck.computeImage(x, y)[0]
        science = scipy.signal.convolve(big, kernel, mode="valid")
        science += rng.normal(0.0, NOISE, science.shape)
        stamps.append((x, y, big[h:-h, h:-h].copy(), science))
    return stamps


def makeCellSet(stamps, config: pm.PsfMatchConfigAL) -> pm.SpatialCellSet:
    region = pm.Box2I((0, 0), (FIT_REGION, FIT_REGION))
    cellSet = pm.SpatialCellSet(region, config.sizeCellX, config.sizeCellY)
    varT = np.full((STAMP, STAMP), 1e-4)  # noise-free template: tiny variance
    varS = np.full((STAMP, STAMP), NOISE**2)
    for x, y, template, science in stamps:
        x0, y0 = int(round(x)) - STAMP // 2, int(round(y)) - STAMP // 2
        cand = pm.KernelCandidate(
            x,
            y,
            pm.MaskedImage(template, variance=varT, xy0=(x0, y0)),
            pm.MaskedImage(science, variance=varS, xy0=(x0, y0)),
            config,
        )
        cellSet.insertCandidate(cand)
    return cellSet


def test_spatial_fit_psfmatch(benchmark, basis, spatialParameters, fitStamps) -> None:
    """BuildSingleKernelVisitor (500 fits + clipping) then BuildSpatialKernelVisitor + solve."""
    benchmark.group = f"spatial fit, {N_CANDIDATES} candidates, {STAMP}² stamps, order 2"
    config = pm.PsfMatchConfigAL()
    region = pm.Box2I((0, 0), (FIT_REGION, FIT_REGION))

    def fit(cellSet: pm.SpatialCellSet):
        single = pm.BuildSingleKernelVisitor(basis, config)
        cellSet.visitCandidates(single, -1)
        spatial = pm.BuildSpatialKernelVisitor(basis, region, config)
        cellSet.visitCandidates(spatial, -1)
        spatial.solveLinearEquation()
        return single, spatial

    single, spatial = benchmark.pedantic(
        fit, setup=lambda: ((makeCellSet(fitStamps, config),), {}), rounds=5
    )
    assert single.getNRejected() == 0 and spatial.getNCandidates() == N_CANDIDATES
    kernel, _ = spatial.getSolutionPair()
    truth = spatialKernel(basis, spatialParameters, FIT_REGION)
    for x, y in [(1024.0, 1024.0), (1500.0, 600.0)]:
        (got, gotSum), (want, wantSum) = kernel.computeImage(x, y), truth.computeImage(x, y)
        # Noise 0.5 on stars of 5e3–5e4 flux: within the sampled field the kernel comes back
        # to ~3e-3 of its L1 norm and its sum to ~1e-5.
        assert np.abs(got - want).sum() < 1e-2 * np.abs(want).sum()
        np.testing.assert_allclose(gotSum, wantSum, rtol=1e-4)
    # The same normal equations in numpy: agreement to rounding (measured 2e-9).
    reference = numpySpatialFit(basis, fitStamps)
    np.testing.assert_allclose(
        kernel.getSpatialParameters(), reference, rtol=0, atol=1e-6 * np.abs(reference).max()
    )


def numpySpatialFit(basis, stamps) -> np.ndarray:
    """The same spatial fit in numpy/scipy: per-candidate normal equations from an FFT design
    matrix (constant variance weighting), then docs/algorithm.md §5.3 assembly with a constant first
    term, solved by ``np.linalg.solve``. No clipping. Returns the (27, 6) parameters."""
    kernels = [k.getImage() for k in basis]
    nb = len(kernels)
    function = pm.SpatialFunction(
        pm.SpatialModelType.CHEBYSHEV1, 2, pm.Box2I((0, 0), (FIT_REGION, FIT_REGION))
    )
    nkt = function.getNParameters()
    nt = (nb - 1) * nkt + 1
    mSp, bSp = np.zeros((nt, nt)), np.zeros(nt)
    weight = 1.0 / (NOISE**2 + 1e-4)
    for x, y, template, science in stamps:
        c = np.stack(
            [scipy.signal.fftconvolve(template, k, mode="valid").ravel() for k in kernels], axis=1
        )
        s = science[10:-10, 10:-10].ravel()
        q, w = weight * (c.T @ c), weight * (c.T @ s)
        p = np.zeros((nt, nb))
        p[0, 0] = 1.0
        terms = np.asarray(function.terms(x, y))
        for m in range(1, nb):
            p[1 + (m - 1) * nkt : 1 + m * nkt, m] = terms
        mSp += p @ q @ p.T
        bSp += p @ w
    theta = np.linalg.solve(mSp, bSp)
    params = np.zeros((nb, nkt))
    params[0, 0] = theta[0]
    params[1:] = theta[1:].reshape(nb - 1, nkt)
    return params


def test_spatial_fit_numpy(benchmark, basis, fitStamps) -> None:
    """Reference: `numpySpatialFit` (FFT design matrices, numpy assembly and solve)."""
    benchmark.group = f"spatial fit, {N_CANDIDATES} candidates, {STAMP}² stamps, order 2"
    params = benchmark.pedantic(numpySpatialFit, (basis, fitStamps), rounds=2)
    assert params.shape == (27, 6)
    np.testing.assert_allclose(params[0, 0], 1.0, rtol=1e-2)  # kernel sum of the truth ≈ 1
