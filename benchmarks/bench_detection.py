# SPDX-License-Identifier: BSD-3-Clause
"""Detection in a difference image: `detectDifferenceSources` vs the same work in scipy.

A simulated float32 difference (white noise of σ = 8, 2000 sources of both signs per 4096²,
a variance 30× the sky's in the cores of a few hundred stars, a masked border) and a 45²
PSF (FWHM 6 px, slightly elliptical, as the decorrelated difference's at 4096²). The
reference is what psfmatch did before issue 18: the matched-filter S/N from two whole-grid
float64 correlations (``scipy.signal.fftconvolve``) and sep on it with the unusable pixels
masked. Each benchmark asserts that the two find the same sources.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import pytest
import scipy.signal
import sep

import psfmatch as pm
from benchutils import skipLargeInSmoke
from psfmatch.detect_and_measure import detectDifferenceSources

BAD = pm.Mask.getPlaneBitMask("NO_DATA")


@functools.lru_cache(maxsize=2)
def differenceImage(n: int) -> tuple[pm.MaskedImage, np.ndarray]:
    """(D, its PSF); cached, so never modify."""
    rng = np.random.default_rng(1800 + n)
    yy, xx = np.mgrid[-22:23, -22:23]
    psf = np.exp(-0.5 * ((xx / 2.6) ** 2 + (yy / 2.3) ** 2))
    psf /= psf.sum()
    variance = np.full((n, n), 64.0, dtype=np.float32)
    image = rng.normal(0.0, 8.0, (n, n)).astype(np.float32)
    nSources = n * n // 8400
    ys, xs = rng.integers(22, n - 22, nSources), rng.integers(22, n - 22, nSources)
    flux = rng.choice([-1.0, 1.0], nSources) * rng.uniform(200.0, 5000.0, nSources)
    for y, x, f in zip(ys, xs, flux, strict=True):
        image[y - 22 : y + 23, x - 22 : x + 23] += (f * psf).astype(np.float32)
    for y, x in zip(ys[: nSources // 8], xs[: nSources // 8], strict=True):
        variance[y - 22 : y + 23, x - 22 : x + 23] *= (1.0 + 29.0 * psf / psf.max()).astype(
            np.float32
        )
    mask = np.zeros((n, n), dtype=np.int32)
    border = np.ones((n, n), dtype=bool)
    border[16:-16, 16:-16] = False
    mask[border] = BAD
    image[border] = np.nan
    variance[border] = np.inf
    return pm.MaskedImage(image, mask, variance), psf


def referenceDetections(d: pm.MaskedImage, psf: np.ndarray) -> np.ndarray:
    """(x, y, S/N at the peak) of sep's regions above 5 in the float64 S/N image, both signs."""
    image = np.asarray(d.image, dtype=np.float64)
    variance = np.asarray(d.variance, dtype=np.float64)
    usable = np.isfinite(image) & np.isfinite(variance) & (variance > 0) & ((d.mask & BAD) == 0)
    weight = np.where(usable, 1.0 / np.where(usable, variance, 1.0), 0.0)
    data = np.where(usable, image, 0.0)
    flipped = psf[::-1, ::-1]  # correlation as a convolution with the flipped PSF
    numerator = scipy.signal.fftconvolve(data * weight, flipped, mode="same")
    denominator = scipy.signal.fftconvolve(weight, flipped**2, mode="same")
    with np.errstate(divide="ignore", invalid="ignore"):
        snr = np.where(usable & (denominator > 0), numerator / np.sqrt(denominator), 0.0)
    rows = []
    for sign in (1.0, -1.0):
        objects = sep.extract(sign * snr, 5.0, mask=~usable, minarea=1, filter_kernel=None)
        peaks = snr[objects["ypeak"], objects["xpeak"]]
        rows.append(np.column_stack([objects["x"], objects["y"], peaks]))
    return np.concatenate(rows)


def checkSameSources(found: np.ndarray, expected: np.ndarray) -> None:
    assert len(found) == len(expected) > 100
    order = np.lexsort((found[:, 0], found[:, 1]))
    expectedOrder = np.lexsort((expected[:, 0], expected[:, 1]))
    # Barycentres of a float32 S/N image against the float64 one (≲ 1e-4 of a region's
    # size), the peak S/N of direct sums against FFT ones (~1e-12).
    np.testing.assert_allclose(found[order, :2], expected[expectedOrder, :2], rtol=0, atol=1e-3)
    np.testing.assert_allclose(found[order, 2], expected[expectedOrder, 2], rtol=1e-8)


@pytest.mark.parametrize("n", [2048, 4096])
def test_detection_psfmatch(benchmark: Any, n: int) -> None:
    """``detectDifferenceSources``: float32 row bands, both correlations in one transform."""
    skipLargeInSmoke(benchmark, n)
    benchmark.group = f"detect sources in D, {n}² float32, 45² PSF"
    d, psf = differenceImage(n)
    table = benchmark.pedantic(
        detectDifferenceSources, args=(d, psf, 5.0, BAD), rounds=5, warmup_rounds=1
    )
    found = np.column_stack([table["x"], table["y"], table["snr"]])
    checkSameSources(found, referenceDetections(d, psf))


@pytest.mark.parametrize("n", [2048, 4096])
def test_detection_scipy(benchmark: Any, n: int) -> None:
    """Reference: two whole-grid float64 ``scipy.signal.fftconvolve`` and sep, masked."""
    skipLargeInSmoke(benchmark, n)
    benchmark.group = f"detect sources in D, {n}² float32, 45² PSF"
    d, psf = differenceImage(n)
    expected = benchmark.pedantic(referenceDetections, args=(d, psf), rounds=3)
    table = detectDifferenceSources(d, psf, 5.0, BAD)
    checkSameSources(np.column_stack([table["x"], table["y"], table["snr"]]), expected)
