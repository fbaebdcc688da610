# SPDX-License-Identifier: BSD-3-Clause
"""Helpers shared by the benchmark modules: simulated data and scipy references.

Imported by the ``bench_*.py`` modules (pytest puts this directory on ``sys.path``); fixtures
live in ``conftest.py``.
"""

from __future__ import annotations

import functools
import math
import os
from typing import Any

import numpy as np
import pytest
import scipy.signal

import psfmatch as pm

#: Parent box of the simulated field of the spatial fit (2048², like one amplifier pair).
FIT_REGION = 2048
#: Stamp of a candidate: 43² gives a 23² good box with the default 21² kernel
#: (docs/algorithm.md §10.1).
STAMP = 43


def skipLargeInSmoke(benchmark: Any, n: int) -> None:
    """Skip sizes above 2048² in smoke mode when PSFMATCH_BENCH_SMOKE_SMALL is set."""
    if n > 2048 and benchmark.disabled and os.environ.get("PSFMATCH_BENCH_SMOKE_SMALL"):
        pytest.skip("large size skipped in smoke mode (PSFMATCH_BENCH_SMOKE_SMALL)")


def gaussianKernel(
    halfWidth: int, sigma: float, *, x0: float = 0.0, y0: float = 0.0, total: float = 1.0
) -> np.ndarray:
    """A round Gaussian centred at (x0, y0) on the (2h+1)² grid, summing to ``total``."""
    u = np.arange(-halfWidth, halfWidth + 1, dtype=float)
    gx = np.exp(-0.5 * ((u - x0) / sigma) ** 2)
    gy = np.exp(-0.5 * ((u - y0) / sigma) ** 2)
    g = np.outer(gy, gx)
    return total * g / g.sum()


def matchingKernelAt(xn: float, yn: float, halfWidth: int) -> np.ndarray:
    """The kernel that matches a σ = 1.4 px template to a science PSF that widens from 1.9 to
    2.5 px and whose centroid shifts by ~0.1 px across the field; (xn, yn) in [-1, 1]."""
    sigmaScience = 2.2 + 0.15 * xn - 0.10 * yn + 0.05 * xn * yn
    sigmaKernel = math.sqrt(sigmaScience**2 - 1.4**2)
    return gaussianKernel(halfWidth, sigmaKernel, x0=0.1 * xn, y0=-0.05 * yn)


def fitSpatialParameters(basis: list[pm.FixedKernel]) -> np.ndarray:
    """Order-2 Chebyshev parameters (27 × 6) of a realistic spatially varying matching kernel.

    The basis coefficients of `matchingKernelAt` are projected at a 9×9 grid of positions and
    each is fitted with the six Chebyshev terms; row 0 is held constant (a constant photometric
    scale, as the spatial fit does for an AL basis). Chebyshev functions live on [-1, 1], so the
    same parameters describe the kernel on a box of any size.
    """
    n = FIT_REGION
    function = pm.SpatialFunction(pm.SpatialModelType.CHEBYSHEV1, 2, pm.Box2I((0, 0), (n, n)))
    design = np.stack([b.getImage().ravel() for b in basis], axis=1)
    halfWidth = (basis[0].getImage().shape[0] - 1) // 2
    positions = np.linspace(0.0, n - 1.0, 9)
    terms, coefficients = [], []
    for y in positions:
        for x in positions:
            xn, yn = 2.0 * (x + 0.5) / n - 1.0, 2.0 * (y + 0.5) / n - 1.0
            target = matchingKernelAt(xn, yn, halfWidth)
            coefficients.append(np.linalg.lstsq(design, target.ravel(), rcond=None)[0])
            terms.append(function.terms(x, y))
    f, a = np.array(terms), np.array(coefficients)
    params = np.linalg.lstsq(f, a, rcond=None)[0].T  # (27, 6)
    params[0] = [a[:, 0].mean(), 0.0, 0.0, 0.0, 0.0, 0.0]
    return params


def spatialKernel(
    basis: list[pm.FixedKernel], params: np.ndarray, n: int
) -> pm.LinearCombinationKernel:
    """The spatially varying kernel of `fitSpatialParameters` on an n × n image at origin 0."""
    function = pm.SpatialFunction(pm.SpatialModelType.CHEBYSHEV1, 2, pm.Box2I((0, 0), (n, n)))
    return pm.LinearCombinationKernel(basis, function, params)


@functools.lru_cache(maxsize=4)
def skyImage(n: int) -> tuple[np.ndarray, np.ndarray]:
    """(image, variance), float32 n × n: sky noise plus stars; cached, so never modify."""
    rng = np.random.default_rng(20260 + n)
    image = rng.normal(1000.0, 30.0, (n, n)).astype(np.float32)
    # Bright point sources so the image has structure, not only white noise.
    nStars = n * n // 20000
    ys, xs = rng.integers(0, n, nStars), rng.integers(0, n, nStars)
    image[ys, xs] += rng.uniform(1e3, 5e4, nStars).astype(np.float32)
    variance = (image - 100.0).clip(100.0, None).astype(np.float32)
    image.flags.writeable = False
    variance.flags.writeable = False
    return image, variance


def goodBoxCrops(
    shape: tuple[int, ...], kernelShape: tuple[int, ...], size: int = 24
) -> list[tuple[slice, slice]]:
    """Output windows (y slice, x slice) at the good box's corners, edges and centre."""
    (ny, nx), (kh, kw) = shape, kernelShape
    cy, cx = (kh - 1) // 2, (kw - 1) // 2
    y0s = (cy, (ny - size) // 2, ny - (kh - 1 - cy) - size)
    x0s = (cx, (nx - size) // 2, nx - (kw - 1 - cx) - size)
    return [(slice(y, y + size), slice(x, x + size)) for y in y0s for x in x0s]


def referenceConvolution(
    image: np.ndarray, kernel: np.ndarray, window: tuple[slice, slice]
) -> np.ndarray:
    """True convolution (docs/decisions.md D1) in float64 on an output window, by scipy."""
    (kh, kw) = kernel.shape
    cy, cx = (kh - 1) // 2, (kw - 1) // 2
    ys, xs = window
    patch = image[
        ys.start - (kh - 1 - cy) : ys.stop + cy, xs.start - (kw - 1 - cx) : xs.stop + cx
    ].astype(np.float64)
    return scipy.signal.convolve(patch, kernel, mode="valid")


def float32Atol(image: np.ndarray, kernel: np.ndarray) -> float:
    """A float32 result of a double sum is off by ≤ ½ ulp: ≤ eps32 · Σ|K| · max|in|."""
    return float(np.finfo(np.float32).eps * np.abs(kernel).sum() * np.abs(image).max())


def assertMatchesReference(out: np.ndarray, image: np.ndarray, kernel: np.ndarray) -> None:
    """``out`` (full image, good box valid) equals scipy's convolution on nine windows."""
    atol = float32Atol(image, kernel)
    for window in goodBoxCrops(image.shape, kernel.shape):
        expected = referenceConvolution(image, kernel, window)
        np.testing.assert_allclose(out[window], expected, rtol=0, atol=atol)
