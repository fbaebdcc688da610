# SPDX-License-Identifier: BSD-3-Clause
"""Kernel-source detection thresholds a S/N in the PSF-matched-filtered image.

``detectionThreshold = 10`` means 10σ detections, as in the reference: a star's S/N through
the filter matched to a Gaussian PSF of σ_p on flat noise σ is F / (sqrt(4π) σ_p σ) (its
optimal S/N), computed here from the simulation's fluxes, not from psfmatch. Before, the
threshold applied to each pixel's σ after sep's 3×3 filter: the 20-star field of issue 19
(S/N 60–120) lost every star when the variance plane carried the stars' own Poisson noise,
and stars of S/N 25 were not detected at all.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.special import erf

from psfmatch.image import Mask, MaskedImage
from psfmatch.make_kernel import MakeKernelTask
from psfmatch.selection import KernelSourceSelectionConfig, detectSources, selectKernelSources

SHAPE = (320, 320)
SIGMA_SCIENCE = 2.4
SIGMA_TEMPLATE = 1.8
BAD = Mask.getPlaneBitMask(["NO_DATA", "BAD", "SAT", "EDGE", "CR"], skipUnknown=True)


def _render(x: np.ndarray, y: np.ndarray, flux: np.ndarray, sigma: float) -> np.ndarray:
    """Pixel-integrated round Gaussians (erf differences), written here."""
    ny, nx = SHAPE
    out = np.zeros(SHAPE)
    edges = np.arange(max(ny, nx) + 1) - 0.5
    for xc, yc, f in zip(x, y, flux, strict=True):
        gx = 0.5 * np.diff(erf((edges[: nx + 1] - xc) / (math.sqrt(2) * sigma)))
        gy = 0.5 * np.diff(erf((edges[: ny + 1] - yc) / (math.sqrt(2) * sigma)))
        out += f * np.outer(gy, gx)
    return out


def _grid(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` positions on a jittered grid 60 px apart, ≥ 40 px from the edges: isolated
    stars whose stamps lie inside the image (the selection's other cuts do not apply)."""
    rng = np.random.default_rng(seed)
    side = int(math.ceil(math.sqrt(n)))
    i = np.arange(n)
    x = 45.0 + 55.0 * (i % side) + rng.uniform(-3, 3, n)
    y = 45.0 + 55.0 * (i // side) + rng.uniform(-3, 3, n)
    return x, y


def _image(
    x: np.ndarray, y: np.ndarray, flux: np.ndarray, sigma: float, seed: int, poisson: bool
) -> MaskedImage:
    """Stars on a flat sky of unit noise; the variance plane is 1, or 1 + the stars (gain 1,
    the noise drawn with it): exactly right either way."""
    model = _render(x, y, flux, sigma)
    variance = 1.0 + (model if poisson else 0.0)
    rng = np.random.default_rng(seed)
    image = model + rng.standard_normal(SHAPE) * np.sqrt(variance)
    return MaskedImage(
        image.astype(np.float32),
        np.zeros(SHAPE, np.int32),
        np.broadcast_to(variance, SHAPE).astype(np.float32),
    )


def _matchedSnr(flux: np.ndarray, sigma: float) -> np.ndarray:
    """A Gaussian star's S/N through its matched filter on unit flat noise."""
    return np.asarray(flux / (math.sqrt(4 * math.pi) * sigma))


def _found(sources: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Which of the true positions has a detection within 1.5 px."""
    if len(sources) == 0:
        return np.zeros(len(x), dtype=bool)
    d = np.hypot(sources["x"][:, None] - x[None, :], sources["y"][:, None] - y[None, :])
    return np.asarray(d.min(axis=0) <= 1.5)


@pytest.mark.parametrize("poisson", [False, True], ids=["flat-variance", "poisson-variance"])
def test_the_twenty_star_field_yields_its_twenty(poisson: bool) -> None:
    """Issue 19's field: 20 stars of flux 500–1000, σ = 2.4 px, unit noise (S/N 59–118 through
    the matched filter): all 20 are kernel sources, with the FWHMs measured and given."""
    x, y = _grid(20, seed=1)
    flux = np.random.default_rng(2).uniform(500, 1000, 20)
    assert _matchedSnr(flux, SIGMA_SCIENCE).min() > 55
    science = _image(x, y, flux, SIGMA_SCIENCE, seed=3, poisson=poisson)
    template = _image(x, y, flux, SIGMA_TEMPLATE, seed=4, poisson=poisson)
    sources = selectKernelSources(template, science, KernelSourceSelectionConfig())
    assert len(sources) == 20
    assert _found(
        np.asarray(
            list(zip(sources["x"], sources["y"], strict=True)),
            dtype=[("x", float), ("y", float)],
        ),
        x,
        y,
    ).all()
    # The whole kernel stage, measuring the FWHMs on them.
    result = MakeKernelTask().run(template, science)
    assert len(result.kernelSources) == 20


@pytest.mark.parametrize("poisson", [False, True], ids=["flat-variance", "poisson-variance"])
def test_threshold_is_a_matched_filter_snr(poisson: bool) -> None:
    """With the filter matched to the PSF (its FWHM given), threshold 10 finds every star of
    S/N 14 and none of S/N 6: a 10σ detection means 10σ. (The noise moves each star's filtered
    peak by ±1σ; 4σ either side of the threshold leaves a miss or a false detection at
    < 1e-4 per star.)"""
    x, y = _grid(25, seed=5)
    snr = np.where(np.arange(25) % 2 == 0, 14.0, 6.0)
    flux = snr * math.sqrt(4 * math.pi) * SIGMA_SCIENCE
    science = _image(x, y, flux, SIGMA_SCIENCE, seed=6, poisson=poisson)
    fwhm = 2.3548200450309493 * SIGMA_SCIENCE
    sources = detectSources(science, 10.0, BAD, measureRadii=False, filterFwhm=fwhm)
    found = _found(sources, x, y)
    assert found[snr == 14.0].all()
    assert not found[snr == 6.0].any()
    # Through the default stand-in filter (FWHM 4 px, 98 % of the matched S/N for this PSF)
    # the same split holds.
    config = KernelSourceSelectionConfig()
    default = detectSources(
        science, 10.0, BAD, measureRadii=False, filterFwhm=config.detectionFilterFwhm
    )
    found = _found(default, x, y)
    assert found[snr == 14.0].all()
    assert not found[snr == 6.0].any()


def test_shapes_are_the_sources_own() -> None:
    """The moments measured on the smoothed image have the filter's σ² taken out: ``a`` of a
    round Gaussian star is its σ (to 5 %: sep's isophotal moments of a bright star)."""
    x, y = _grid(9, seed=7)
    flux = np.full(9, 3e4)
    science = _image(x, y, flux, SIGMA_SCIENCE, seed=8, poisson=False)
    sources = detectSources(science, 10.0, BAD, measureRadii=False, filterFwhm=4.0)
    assert len(sources) == 9
    np.testing.assert_allclose(sources["a"], SIGMA_SCIENCE, rtol=0.05)
