# SPDX-License-Identifier: BSD-3-Clause
"""Stars, not galaxies: the FWHMs and the kernel sources come from point sources only.

A field with as many compact galaxies (exponential profiles, half-light radius 1–3 px,
rendered here in numpy and convolved with each image's PSF) as stars, of the same fluxes.
Before, the FWHM was the median half-light radius of every bright detection, galaxies
included (a JWST field gave 6.7/8.9 px for ~2.0 px stars); now it is the stellar locus's.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.signal import fftconvolve

from psfmatch.image import MaskedImage
from psfmatch.make_kernel import MakeKernelTask
from psfmatch.selection import stellarLocus

SHAPE = (600, 600)
SIGMA_TEMPLATE = 1.5
SIGMA_SCIENCE = 2.0
FLUX_SCALE = 1.2
NOISE = 3.0
#: Pixels of the stamp each source is rendered on (the exponential's light beyond 20 px of a
#: 3-px half-light radius is < 1e-4 of it).
REACH = 20
#: Sub-pixel samples per axis for the exponential's cusp.
OVERSAMPLE = 5


def _gaussian(sigma: float) -> np.ndarray:
    """A round Gaussian PSF sampled at pixel centres, normalised, on the stamp."""
    o = np.arange(-REACH, REACH + 1)
    g = np.exp(-0.5 * (o[:, None] ** 2 + o[None, :] ** 2) / sigma**2)
    return np.asarray(g / g.sum())


def _exponential(re: float, dx: float, dy: float) -> np.ndarray:
    """An exponential disc of half-light radius ``re`` (I ∝ exp(−1.678 r/re)), averaged over
    OVERSAMPLE² points per pixel, unit flux, centred (dx, dy) from the stamp's centre."""
    n = 2 * REACH + 1
    sub = (np.arange(n * OVERSAMPLE) + 0.5) / OVERSAMPLE - 0.5 - REACH
    r = np.hypot(sub[None, :] - dx, sub[:, None] - dy)
    fine = np.exp(-1.678 * r / re)
    image = fine.reshape(n, OVERSAMPLE, n, OVERSAMPLE).mean(axis=(1, 3))
    return np.asarray(image / image.sum())


def _shifted(sigma: float, dx: float, dy: float) -> np.ndarray:
    o = np.arange(-REACH, REACH + 1)
    g = np.exp(-0.5 * ((o[None, :] - dx) ** 2 + (o[:, None] - dy) ** 2) / sigma**2)
    return np.asarray(g / g.sum())


@pytest.fixture(scope="module")
def galaxyField() -> dict[str, object]:
    """64 stars and 64 galaxies on a jittered 45-px grid, alternating; fluxes 5e3–5e4 for
    both (S/N 50–500); the science image is FLUX_SCALE × brighter."""
    rng = np.random.default_rng(11)
    side = 12
    n = side * side - 16
    i = np.arange(n)
    x = 50.0 + 45.0 * (i % side) + rng.uniform(-0.5, 0.5, n)
    y = 50.0 + 45.0 * (i // side) + rng.uniform(-0.5, 0.5, n)
    flux = np.exp(rng.uniform(math.log(5e3), math.log(5e4), n))
    isGalaxy = i % 2 == 1
    re = rng.uniform(1.0, 3.0, n)
    images = []
    for sigma, scale, seed in ((SIGMA_TEMPLATE, 1.0, 1), (SIGMA_SCIENCE, FLUX_SCALE, 2)):
        model = np.zeros(SHAPE)
        psf = _gaussian(sigma)
        for k in range(n):
            cx, cy = int(round(x[k])), int(round(y[k]))
            dx, dy = x[k] - cx, y[k] - cy
            if isGalaxy[k]:
                stamp = fftconvolve(_exponential(re[k], dx, dy), psf, mode="same")
            else:
                stamp = _shifted(sigma, dx, dy)
            model[cy - REACH : cy + REACH + 1, cx - REACH : cx + REACH + 1] += (
                scale * flux[k] * stamp
            )
        noise = np.random.default_rng(seed).normal(0.0, NOISE, SHAPE)
        images.append(
            MaskedImage(
                (model + noise).astype(np.float32),
                np.zeros(SHAPE, np.int32),
                np.full(SHAPE, NOISE**2, np.float32),
            )
        )
    return {"template": images[0], "science": images[1], "x": x, "y": y, "galaxy": isGalaxy}


def test_fwhms_are_the_stars(galaxyField: dict[str, object]) -> None:
    """Each image's FWHM within 3 % of its PSF's (2.3548σ; the r50 of a sampled Gaussian
    measured by sep is within ~1 % of it, the median of ~60 stars' r50 to < 1 %)."""
    task = MakeKernelTask()
    sizes = task.measurePsfSizes(galaxyField["template"], galaxyField["science"])  # type: ignore[arg-type]
    assert sizes.template == pytest.approx(2.3548 * SIGMA_TEMPLATE, rel=0.03)
    assert sizes.science == pytest.approx(2.3548 * SIGMA_SCIENCE, rel=0.03)


def test_kernel_sources_are_stars_and_the_kernel_sum_is_right(
    galaxyField: dict[str, object],
) -> None:
    """No galaxy is a kernel source (each source is matched to the nearest true position);
    the kernel sum is the flux scale to 0.3 % (the fit of ~60 stars at S/N 50–500 is good to
    ~0.1 %)."""
    result = MakeKernelTask().run(galaxyField["template"], galaxyField["science"])  # type: ignore[arg-type]
    sources = result.kernelSources
    x, y, isGalaxy = galaxyField["x"], galaxyField["y"], galaxyField["galaxy"]
    d = np.hypot(
        np.asarray(sources["x"])[:, None] - np.asarray(x)[None, :],
        np.asarray(sources["y"])[:, None] - np.asarray(y)[None, :],
    )
    nearest = d.argmin(axis=1)
    assert (d.min(axis=1) < 1.5).all()
    assert not np.asarray(isGalaxy)[nearest].any()
    assert len(sources) >= 40  # most of the 64 stars
    kernelSum = result.psfMatchingKernel.getSum(SHAPE[1] / 2, SHAPE[0] / 2)
    assert kernelSum == pytest.approx(FLUX_SCALE, rel=0.003)


def test_stellar_locus_with_as_many_galaxies_as_stars() -> None:
    """The locus is the stars' radius when as many galaxies spread over larger radii, where
    the median of all is not (an analytic population, no image)."""
    rng = np.random.default_rng(3)
    stars = rng.normal(2.0, 0.06, 200)
    galaxies = rng.uniform(2.3, 5.0, 200)
    radii = np.concatenate([stars, galaxies])
    assert stellarLocus(radii) == pytest.approx(2.0, rel=0.02)
    assert np.median(radii) > 2.2  # what the median would have said
