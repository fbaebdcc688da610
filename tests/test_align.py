# SPDX-License-Identifier: BSD-3-Clause
"""Tests of psfmatch.align and ``subtract(..., align=...)``: images on two pixel grids.

The truths are independent of the code under test: stars rendered analytically on the
template's own grid by the simulator (their fluxes known), the exact WCS map evaluated at every
pixel with astropy in the test (for the footprints, the squared weights and the pixel-area
ratio), `reproject.reproject_interp` for the interpolated values, and the empirical scatter of
many noise realisations for the variance planes. The pairs are made to disagree as much as a
survey template and a science frame do: the template rotated by 30°, shifted by 13.4 pixels,
with pixels 1.1 times larger and a SIP distortion (~0.8 px at the corners of a 1024² frame).
"""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from astropy.io import fits
from astropy.stats import mad_std
from astropy.wcs import WCS

import psfmatch as pm
from psfmatch import io as pmio
from psfmatch.align import ALGORITHM, alignMaskedImage, readWcs
from psfmatch.errors import InvalidInputError, OriginMismatchError, TemplateCoverageError
from psfmatch.simulate import compareToTruth, simulatePair
from psfmatch.simulate.wcs import tangentWcs

RNG_SEED = 2101

NO_DATA = pm.Mask.getPlaneBitMask("NO_DATA")
SAT = pm.Mask.getPlaneBitMask("SAT")
CR = pm.Mask.getPlaneBitMask("CR")
BAD = pm.Mask.getPlaneBitMask("BAD")

#: A SIP distortion of the size a wide-field camera has across a CCD: ~0.8 px at 512 px from
#: the reference pixel, ~3 px at 1024.
SIP = {
    "A": {(2, 0): 3e-6, (0, 2): -2e-6, (1, 1): 2e-6},
    "B": {(2, 0): -1.5e-6, (0, 2): 2.5e-6, (1, 1): -1e-6},
}

needsReproject = pytest.mark.skipif(
    importlib.util.find_spec("reproject") is None,
    reason='needs reproject (pip install "psfmatch[align]"), the independent resampler',
)

# Noise-free, float64, no sky: images hold the rendered sources alone.
NOISELESS = dict(
    templateSky=0.0,
    background=0.0,
    templateSkySigma=0.0,
    scienceSkySigma=0.0,
    gain=math.inf,
    dtype=np.float64,
    nTransients=0,
)


def wcsPair(
    shape: tuple[int, int], templateShape: tuple[int, int] | None = None, **template: Any
) -> tuple[Any, Any]:
    """The science WCS and the disagreeing template's (30°, 13.4 px, 1.1×, SIP)."""
    settings: dict[str, Any] = dict(pixelScale=0.22, rotation=30.0, offset=(13.4, 0.0), sip=SIP)
    settings.update(template)
    return tangentWcs(shape), tangentWcs(templateShape or shape, **settings)


def exactMap(fromWcs: Any, toWcs: Any, x: np.ndarray, y: np.ndarray) -> tuple[Any, Any]:
    """Array coordinates in ``toWcs`` of array coordinates in ``fromWcs``, by astropy."""
    world = fromWcs.pixel_to_world_values(x, y)
    u, v = toWcs.world_to_pixel_values(*world)
    return np.asarray(u), np.asarray(v)


def exactGrid(
    fromWcs: Any, toWcs: Any, box: tuple[int, int, int, int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The exact map at every pixel of ``box`` and the pixel-area ratio there (central
    differences over ±0.5 px, exact for the quadratic maps of the tests to ~1e-9)."""
    x0, y0, w, h = box
    yy, xx = np.mgrid[y0 : y0 + h, x0 : x0 + w].astype(float)
    u, v = exactMap(fromWcs, toWcs, xx.ravel(), yy.ravel())
    d = 0.5
    ux = exactMap(fromWcs, toWcs, xx.ravel() + d, yy.ravel())
    uxm = exactMap(fromWcs, toWcs, xx.ravel() - d, yy.ravel())
    uy = exactMap(fromWcs, toWcs, xx.ravel(), yy.ravel() + d)
    uym = exactMap(fromWcs, toWcs, xx.ravel(), yy.ravel() - d)
    dudx, dvdx = (ux[0] - uxm[0]) / (2 * d), (ux[1] - uxm[1]) / (2 * d)
    dudy, dvdy = (uy[0] - uym[0]) / (2 * d), (uy[1] - uym[1]) / (2 * d)
    area = np.abs(dudx * dvdy - dudy * dvdx)
    return u.reshape(h, w), v.reshape(h, w), area.reshape(h, w)


def smoothTemplate(sim: Any) -> pm.MaskedImage:
    """A simulated template without its noise: the noise-free model, whose gradients are
    those of the stars and the sky, and the variance plane (which is noise-free too)."""
    t = sim.template
    return pm.MaskedImage(sim.truth.templateModel, t.mask, t.variance, xy0=t.getXY0())


def steepest(image: np.ndarray) -> np.ndarray:
    """The largest difference between each pixel and its 8 neighbours, times 1.5: a bound on
    the slope (per pixel) of a bilinear interpolant of an image whose pixels are 1.1 times
    larger, on the output grid (NaN counts as 0)."""
    a = np.pad(np.nan_to_num(image, nan=0.0), 1, mode="edge")
    centre = a[1:-1, 1:-1]
    worst = np.zeros_like(centre)
    for dy in (0, 1, 2):
        for dx in (0, 1, 2):
            np.maximum(
                worst,
                np.abs(a[dy : dy + centre.shape[0], dx : dx + centre.shape[1]] - centre),
                out=worst,
            )
    return 1.5 * worst


def bspline(t: float) -> np.ndarray:
    """The cubic B-spline's weights of the pixels floor(u) - 1 .. floor(u) + 2, t = u -
    floor(u): the uniform cubic B-spline B(x) = (2 - |x|)³/6 for 1 <= |x| < 2, 2/3 - x² +
    |x|³/2 for |x| < 1, at x = t + 1, t, t - 1, t - 2."""
    x = np.abs(np.array([t + 1, t, t - 1, t - 2]))
    return np.where(x < 1, 2 / 3 - x * x + x**3 / 2, np.where(x < 2, (2 - x) ** 3 / 6, 0.0))


def apertureSum(image: np.ndarray, x: float, y: float, radius: float) -> float:
    yy, xx = np.mgrid[0 : image.shape[0], 0 : image.shape[1]]
    return float(image[(xx - x) ** 2 + (yy - y) ** 2 <= radius * radius].sum())


# --------------------------------------------------------------------------------------------
# The resampled image: flux, sky, values


@pytest.mark.parametrize("templateSigma", [1.2, 1.6])
def test_a_star_keeps_its_flux(templateSigma: float) -> None:
    shape = (400, 400)
    scienceWcs, templateWcs = wcsPair(shape)
    sim = simulatePair(
        shape,
        nStars=120,
        seed=3,
        fluxRange=(1e4, 1e4),
        templateSigma=templateSigma,
        templateWcs=templateWcs,
        scienceWcs=scienceWcs,
        **NOISELESS,
    )
    aligned = alignMaskedImage(sim.template, templateWcs, scienceWcs, (0, 0, 400, 400))
    image = aligned.maskedImage.image
    radius = 8.0 * templateSigma  # holds all but ~1e-14 of a Gaussian's flux
    measured = []
    for star in sim.stars:
        x, y = star["x"], star["y"]
        inside = radius + 2 < x < 400 - radius - 2 and radius + 2 < y < 400 - radius - 2
        if not inside or star["nearestDistance"] < 2 * radius + 2:
            continue
        rows = slice(int(y - radius - 1), int(y + radius + 2))
        if not np.all(np.isfinite(image[rows, int(x - radius - 1) : int(x + radius + 2)])):
            continue  # beyond the rotated template's corner
        measured.append(apertureSum(image, x, y, radius) / star["flux"])
    assert len(measured) >= 8
    # The requirement: within 0.1 % (measured: within 1e-4 for sigma 1.2 px, 1e-5 for
    # 1.6, the Riemann sum of the bilinear interpolant on the rotated grid).
    np.testing.assert_allclose(measured, 1.0, atol=1e-3)
    assert abs(np.mean(measured) - 1.0) < 2e-4  # the errors have no sign: they average out


def test_sky_surface_brightness_is_kept() -> None:
    # The simulator's template holds templateSky per science-pixel area in every template
    # pixel (times its area); resampled with the pixel-area ratio it is templateSky again.
    shape = (256, 256)
    scienceWcs, templateWcs = wcsPair(shape)
    sky = dict(NOISELESS, templateSky=100.0)
    sim = simulatePair(
        shape, nStars=0, seed=1, templateWcs=templateWcs, scienceWcs=scienceWcs, **sky
    )
    aligned = alignMaskedImage(sim.template, templateWcs, scienceWcs, (0, 0, 256, 256))
    image = aligned.maskedImage.image
    inside = np.isfinite(image)
    assert inside.mean() > 0.6
    # 1e-5: the area ratio of a tile is a plane fitted to the exact one (~1e-6 off for this
    # distortion) and the simulator's template areas are interpolated (~1e-9).
    np.testing.assert_allclose(image[inside], 100.0, rtol=1e-5)


def test_values_are_the_cubic_b_spline_at_the_exact_map() -> None:
    # The definition, evaluated independently: scipy's cubic B-spline (no prefilter) at the
    # exact map of every pixel (astropy), times the exact pixel-area ratio.
    from scipy import ndimage

    shape = (300, 300)
    scienceWcs, templateWcs = wcsPair(shape, (280, 320))
    sim = simulatePair(
        shape,
        nStars=60,
        seed=7,
        templateWcs=templateWcs,
        scienceWcs=scienceWcs,
        templateShape=(280, 320),
        nTransients=0,
    )
    # Noise-free, so that the neighbours' differences bound what a small shift changes.
    template = smoothTemplate(sim)
    box = (-5, -5, 310, 310)
    aligned = alignMaskedImage(template, templateWcs, scienceWcs, box, variance="smoothed")
    u, v, area = exactGrid(scienceWcs, templateWcs, box)
    coords = [v.ravel(), u.ravel()]
    expected = ndimage.map_coordinates(
        template.image.astype(float), coords, order=3, prefilter=False, mode="constant", cval=np.nan
    ).reshape(u.shape)
    expected *= area
    ours = aligned.maskedImage.image.astype(float)
    # NO_DATA exactly where a pixel's 16 input pixels leave the template.
    iu, iv = np.floor(u), np.floor(v)
    inside = (iu >= 1) & (iv >= 1) & (iu <= 320 - 3) & (iv <= 280 - 3)
    nearEdge = (np.abs(u - np.rint(u)) < 0.003) | (np.abs(v - np.rint(v)) < 0.003)
    assert np.all((np.isfinite(ours) == inside) | nearEdge)
    both = np.isfinite(ours) & inside
    assert both.mean() > 0.6
    # Differences come from the tiles' affine maps (within 0.002 px of the exact one at the
    # control points, 0.003 between them) times the spline's slope, plus float32 rounding
    # (~1e-7 of the value).
    bound = 0.003 * steepest(expected) + 1e-6 * np.abs(expected) + 1e-4
    assert np.all(np.abs(ours - expected)[both] <= bound[both])
    # The smoothed variance is the area ratio times the bilinear mean of the variance plane.
    expectedVar = area * ndimage.map_coordinates(
        template.variance.astype(float), coords, order=1, mode="constant"
    ).reshape(u.shape)
    varBound = 0.003 * steepest(expectedVar) + 1e-6 * expectedVar + 1e-6
    assert np.all(np.abs(aligned.maskedImage.variance - expectedVar)[both] <= varBound[both])


@needsReproject
def test_stars_land_where_reproject_puts_them() -> None:
    # An independent implementation of the WCS transforms (reproject's pixel-to-pixel with its
    # round-trip check): the centroids of isolated stars in its bilinear resampling and in
    # psfmatch's agree, and with the truth.
    from reproject import reproject_interp

    shape = (300, 300)
    scienceWcs, templateWcs = wcsPair(shape)
    sim = simulatePair(
        shape,
        nStars=40,
        seed=8,
        fluxRange=(1e4, 1e4),
        templateWcs=templateWcs,
        scienceWcs=scienceWcs,
        **NOISELESS,
    )
    ours = alignMaskedImage(sim.template, templateWcs, scienceWcs, (0, 0, 300, 300)).maskedImage
    theirs, _ = reproject_interp(
        (sim.template.image, templateWcs), scienceWcs, shape_out=shape, order="bilinear"
    )
    checked = 0
    for star in sim.stars:
        x, y = star["x"], star["y"]
        if not (15 < x < 285 and 15 < y < 285) or star["nearestDistance"] < 25:
            continue
        rows, cols = slice(int(y) - 9, int(y) + 10), slice(int(x) - 9, int(x) + 10)
        a, b = ours.image[rows, cols], theirs[rows, cols]
        if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
            continue
        yy, xx = np.mgrid[rows, cols]
        for cut in (a, b):
            # Symmetric interpolation kernels keep a star's centroid to ~1e-3 px; the map is
            # within 0.002 px of the exact one.
            assert abs((cut * xx).sum() / cut.sum() - x) < 0.005
            assert abs((cut * yy).sum() / cut.sum() - y) < 0.005
        checked += 1
    assert checked >= 5


# --------------------------------------------------------------------------------------------
# Variance


def _variancePair(shape: tuple[int, int]) -> tuple[pm.MaskedImage, Any, Any]:
    """A template whose variance is a sky plus stars' Poisson term, far from uniform, and
    larger than the science frame, which it covers."""
    tShape = (shape[0] + 40, shape[1] + 60)
    scienceWcs, templateWcs = wcsPair(shape, tShape)
    sim = simulatePair(
        shape,
        templateShape=tShape,
        nStars=12,
        seed=11,
        fluxRange=(3e4, 3e4),
        templateSkySigma=3.0,
        nTransients=0,
        templateWcs=templateWcs,
        scienceWcs=scienceWcs,
    )
    return sim.template, scienceWcs, templateWcs


def test_pixel_variance_is_the_sum_of_squared_weights_times_the_variances() -> None:
    template, scienceWcs, templateWcs = _variancePair((96, 96))
    rng = np.random.default_rng(5)
    variance = (1.0 + rng.random(template.variance.shape)).astype(np.float32)  # no two alike
    mi = pm.MaskedImage(template.image, template.mask, variance)
    box = (0, 0, 96, 96)
    # A tolerance of 1e-5 px keeps the tiles' weights within 2e-5 of the exact ones.
    aligned = alignMaskedImage(mi, templateWcs, scienceWcs, box, maxMappingError=1e-5)
    u, v, area = exactGrid(scienceWcs, templateWcs, box)
    ny, nx = variance.shape
    iu, iv = np.floor(u).astype(int), np.floor(v).astype(int)
    inside = (iu >= 1) & (iv >= 1) & (iu <= nx - 3) & (iv <= ny - 3)
    V = variance.astype(float)
    expected = np.zeros(u.shape)
    for i, j in np.argwhere(inside):
        wx = bspline(u[i, j] - iu[i, j])
        wy = bspline(v[i, j] - iv[i, j])
        block = V[iv[i, j] - 1 : iv[i, j] + 3, iu[i, j] - 1 : iu[i, j] + 3]
        expected[i, j] = area[i, j] ** 2 * np.sum(np.outer(wy**2, wx**2) * block)
    got = aligned.maskedImage.variance
    assert np.array_equal(np.isfinite(got), inside)
    # The tiles' map (8-pixel tiles reach ~4e-5 px for this distortion) moves the squared
    # weights' sum by less than 4 times that (the weights' derivatives are below 1); float32
    # arithmetic and the area ratio's plane add ~1e-5.
    rtol = 4 * aligned.maxMappingError + 2e-5
    assert aligned.maxMappingError < 1e-4
    np.testing.assert_allclose(got[inside], expected[inside], rtol=rtol)


def _realisations(
    template: pm.MaskedImage, n: int, rng: np.random.Generator
) -> list[pm.MaskedImage]:
    """``n`` noise realisations of a template: its noise-free part plus Gaussian noise of its
    variance plane (the simulator's variance is that of the noise it added)."""
    sigma = np.sqrt(template.variance.astype(float))
    base = np.zeros_like(sigma)
    return [
        pm.MaskedImage(
            (base + sigma * rng.standard_normal(sigma.shape)).astype(np.float32),
            template.mask,
            template.variance,
        )
        for _ in range(n)
    ]


def test_pixel_variance_matches_the_scatter_of_noise_realisations(
    rng: np.random.Generator,
) -> None:
    template, scienceWcs, templateWcs = _variancePair((80, 80))
    box = (8, 8, 64, 64)
    planes = alignMaskedImage(template, templateWcs, scienceWcs, box).maskedImage.variance
    n = 400
    samples = np.array(
        [
            alignMaskedImage(mi, templateWcs, scienceWcs, box).maskedImage.image
            for mi in _realisations(template, n, rng)
        ]
    )
    inside = np.all(np.isfinite(samples), axis=0)
    assert inside.mean() > 0.9
    ratio = samples.var(axis=0, ddof=1)[inside] / planes[inside]
    # Each pixel's sample variance scatters by sqrt(2 / 399) = 7 % about its true value; the
    # mean of ~3700 of them by 0.12 %: 1 % is eight of those.
    assert abs(ratio.mean() - 1.0) < 0.01
    # The ratio's spread is the sampling noise alone: the plane follows the stars' Poisson
    # variance and the resampling's modulation of it (the squared weights' sum, 0.21 to 0.25).
    assert abs(ratio.std() - math.sqrt(2 / (n - 1))) < 0.01
    modulation = planes[inside] / np.median(planes[inside])
    assert modulation.max() / modulation.min() > 3


def test_smoothed_variance_is_what_a_smoothing_sees(rng: np.random.Generator) -> None:
    # Resampling correlates neighbouring pixels: a Gaussian-weighted sum of them (what the
    # matching kernel forms) has the variance of white noise with the "smoothed" plane, not
    # with the per-pixel one.
    from scipy import ndimage

    template, scienceWcs, templateWcs = _variancePair((80, 80))
    template = pm.MaskedImage(
        template.image, template.mask, np.full(template.image.shape, 9.0, dtype=np.float32)
    )
    box = (8, 8, 64, 64)
    smoothed = alignMaskedImage(template, templateWcs, scienceWcs, box, variance="smoothed")
    pixel = alignMaskedImage(template, templateWcs, scienceWcs, box, variance="pixel")
    sigma = 2.0  # a matching kernel's width
    n = 400
    sums = np.array(
        [
            ndimage.gaussian_filter(
                alignMaskedImage(mi, templateWcs, scienceWcs, box).maskedImage.image.astype(float),
                sigma,
                mode="constant",
                truncate=3.0,
            )
            for mi in _realisations(template, n, rng)
        ]
    )
    inner = (slice(12, 52), slice(12, 52))  # clear of the box's edge
    empirical = sums.var(axis=0, ddof=1)[inner].mean()
    k2 = np.zeros((13, 13))
    k2[6, 6] = 1.0
    k2 = ndimage.gaussian_filter(k2, sigma, mode="constant", truncate=3.0) ** 2
    predicted = {
        kind: ndimage.convolve(a.maskedImage.variance.astype(float), k2, mode="constant")[
            inner
        ].mean()
        for kind, a in (("smoothed", smoothed), ("pixel", pixel))
    }
    # The smoothed plane is the noise power at zero frequency; the B-spline (variance 1/3
    # input px² per axis) takes away a share of about 1/(3 s²) of what a Gaussian of sigma s
    # input pixels passes, 10 % for s = 2/1.1: the plane is that much high. The mean of 1600
    # correlated pixels' sample variances is good to ~1 %; the first-order share to ~2 %.
    s = sigma / 1.1
    assert predicted["smoothed"] / empirical == pytest.approx(1 + 1 / (3 * s * s), abs=0.03)
    # The per-pixel plane misses most of it: it ignores the correlations.
    assert predicted["pixel"] / empirical < 0.5


# --------------------------------------------------------------------------------------------
# Mask and footprint


def test_mask_bits_of_every_pixel_in_the_footprint_are_set() -> None:
    shape = (120, 120)
    scienceWcs, templateWcs = wcsPair(shape, (100, 110))
    rng = np.random.default_rng(4)
    image = rng.normal(size=(100, 110)).astype(np.float32)
    mask = np.zeros((100, 110), dtype=np.int32)
    for bit in (SAT, CR, BAD, 1 << 25):  # a high bit: the mask is gathered as float64 then
        for _ in range(6):
            mask[rng.integers(0, 100), rng.integers(0, 110)] |= bit
    mi = pm.MaskedImage(image, mask, np.ones_like(image))
    box = (-4, -4, 128, 128)
    aligned = alignMaskedImage(mi, templateWcs, scienceWcs, box)
    u, v, _ = exactGrid(scienceWcs, templateWcs, box)
    iu, iv = np.floor(u).astype(int), np.floor(v).astype(int)
    inside = (iu >= 1) & (iv >= 1) & (iu <= 110 - 3) & (iv <= 100 - 3)
    expected = np.full(u.shape, NO_DATA, dtype=np.int64)
    for i, j in np.argwhere(inside):
        block = mask[iv[i, j] - 1 : iv[i, j] + 3, iu[i, j] - 1 : iu[i, j] + 3]
        expected[i, j] = np.bitwise_or.reduce(block.view(np.uint32), axis=None)
    expected = expected.astype(np.uint32).view(np.int32)
    got = aligned.maskedImage.mask
    # A coordinate within the map's tolerance (0.002 px) of an integer may have the next
    # footprint: those pixels alone may differ.
    nearEdge = (np.abs(u - np.rint(u)) < 0.003) | (np.abs(v - np.rint(v)) < 0.003)
    assert np.all((got == expected) | nearEdge)
    assert np.count_nonzero(got == expected) > 0.99 * got.size
    # NO_DATA pixels hold NaN with infinite variance; the others are finite.
    noData = (got & NO_DATA) != 0
    assert np.all(np.isnan(aligned.maskedImage.image[noData]))
    assert np.all(np.isposinf(aligned.maskedImage.variance[noData]))
    assert np.all(np.isfinite(aligned.maskedImage.image[~noData]))
    assert aligned.footprintFraction == pytest.approx(1.0 - noData.mean(), abs=1e-12)
    np.testing.assert_array_equal(aligned.noPixel, noData)


def test_masked_nan_pixels_do_not_spread_and_unmasked_ones_are_refused() -> None:
    shape = (64, 64)
    scienceWcs, templateWcs = wcsPair(shape)
    image = np.full(shape, 10.0, dtype=np.float32)
    mask = np.zeros(shape, dtype=np.int32)
    image[30, 30] = np.nan
    mask[30, 30] = NO_DATA
    aligned = alignMaskedImage(
        pm.MaskedImage(image, mask, np.ones(shape, dtype=np.float32)),
        templateWcs,
        scienceWcs,
        (0, 0, 64, 64),
    ).maskedImage
    # The NaN pixel reaches the output only as the NO_DATA bit of the pixels whose footprints
    # hold it; their values are finite (the NaN was not interpolated), and NaN is
    # only where the template does not reach.
    noData = (aligned.mask & NO_DATA) != 0
    outside = np.isnan(aligned.image)
    # 16 footprints of ~1.2 output pixels each hold it.
    assert 12 <= np.count_nonzero(noData & ~outside) <= 30
    assert np.all(np.isfinite(aligned.image[noData & ~outside]))
    mask[30, 30] = 0
    with pytest.raises(InvalidInputError, match=r"template: 1 unmasked pixel\(s\) are NaN"):
        alignMaskedImage(
            pm.MaskedImage(image, mask, np.ones(shape, dtype=np.float32)),
            templateWcs,
            scienceWcs,
            (0, 0, 64, 64),
            name="template",
        )


def test_the_box_and_origins() -> None:
    shape = (64, 64)
    scienceWcs, templateWcs = wcsPair(shape)
    mi = pm.MaskedImage(np.ones(shape), xy0=(100, 200), variance=np.ones(shape))
    aligned = alignMaskedImage(
        mi, templateWcs, scienceWcs, (-3, 5, 40, 30), targetXy0=(7, 8), variance="smoothed"
    )
    out = aligned.maskedImage
    assert out.getXY0() == (4, 13) and out.image.shape == (30, 40)
    assert out.image.dtype == np.float64 and out.variance.dtype == np.float64
    # The box's WCS puts its pixel (0, 0) where the target grid has (-3, 5).
    np.testing.assert_allclose(
        aligned.wcs.pixel_to_world_values(0.0, 0.0),
        scienceWcs.pixel_to_world_values(-3.0, 5.0),
        rtol=1e-12,
    )
    assert aligned.wcs.pixel_shape == (40, 30)


def test_tiles_stay_within_the_mapping_tolerance() -> None:
    from psfmatch.align import _planTiles

    shape = (512, 512)
    scienceWcs, templateWcs = wcsPair(shape)
    tiles = _planTiles(scienceWcs, templateWcs, (0, 0, 512, 512), shape, 0.002)
    assert sum(t.width * t.height for t in tiles) == 512 * 512  # a partition of the box
    worst = 0.0
    for tile in tiles[:: max(1, len(tiles) // 60)]:
        jj, ii = np.meshgrid(np.arange(tile.width), np.arange(tile.height))
        u, v = exactMap(
            scienceWcs,
            templateWcs,
            (tile.x0 + jj).ravel().astype(float),
            (tile.y0 + ii).ravel().astype(float),
        )
        au = tile.a[0] + tile.a[1] * jj.ravel() + tile.a[2] * ii.ravel()
        av = tile.b[0] + tile.b[1] * jj.ravel() + tile.b[2] * ii.ravel()
        worst = max(worst, float(np.hypot(u - au, v - av).max()))
    # The fit is checked at 4 x 4 control points; between them a quadratic map departs from
    # its plane by at most a few tens of % more.
    assert worst < 0.003


# --------------------------------------------------------------------------------------------
# WCS input


def test_readWcs_sources(tmp_path: Path) -> None:
    scienceWcs, templateWcs = wcsPair((64, 64))
    header = templateWcs.to_header(relax=True)
    fromHeader = readWcs(header)
    assert fromHeader.sip is not None
    np.testing.assert_allclose(
        fromHeader.pixel_to_world_values(60.0, 3.0), templateWcs.pixel_to_world_values(60.0, 3.0)
    )
    assert readWcs(templateWcs) is templateWcs
    from astropy.nddata import NDData

    assert readWcs(NDData(np.zeros((4, 4)), wcs=scienceWcs)) is scienceWcs
    # A file whose only WCS is in an extension (an astrometry.net .wcs file is a header).
    path = tmp_path / "solution.wcs"
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(np.zeros((2, 2)), header=header)]).writeto(path)
    np.testing.assert_allclose(
        readWcs(path).pixel_to_world_values(5.0, 5.0), templateWcs.pixel_to_world_values(5.0, 5.0)
    )
    # readImage's info of a FITS file: the image HDU's header.
    image = tmp_path / "image.fits"
    pmio.writeMaskedImage(image, pm.MaskedImage(np.zeros((64, 64))), wcs=scienceWcs)
    info: dict[str, Any] = {}
    pmio.readImage(image, variance=1.0, info=info)
    np.testing.assert_allclose(
        readWcs(info).pixel_to_world_values(1.0, 2.0), scienceWcs.pixel_to_world_values(1.0, 2.0)
    )


def test_readWcs_errors(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="scienceWcs: the header holds no celestial WCS"):
        readWcs(fits.Header({"NAXIS": 2}), "scienceWcs")
    with pytest.raises(InvalidInputError, match=r"templateWcs: the image carries no WCS .*pass"):
        readWcs({"source": "array"}, "templateWcs")
    with pytest.raises(InvalidInputError, match="expected an astropy WCS"):
        readWcs(3.0)
    linear = WCS(naxis=2)
    with pytest.raises(InvalidInputError, match="celestial WCS of two axes"):
        readWcs(linear)
    with pytest.raises(pm.InputFileNotFoundError):
        readWcs(tmp_path / "nowhere.wcs")
    info: dict[str, Any] = {}
    plain = tmp_path / "plain.fits"
    pmio.writeMaskedImage(plain, pm.MaskedImage(np.zeros((8, 8))))
    pmio.readImage(plain, variance=1.0, info=info)
    with pytest.raises(InvalidInputError, match="plain.fits' has no celestial WCS"):
        readWcs(info, "scienceWcs")


def test_tpv_distortion_is_followed() -> None:
    # A TPV template (the DECam/SCAMP convention): its quadratic PV terms move the stars by
    # ~1 px at the corners; the aligned template puts each star back on its science position.
    shape = (256, 256)
    scale = 0.22 / 3600
    header = fits.Header()
    header.update(
        CTYPE1="RA---TPV", CTYPE2="DEC--TPV", CRVAL1=150.0, CRVAL2=2.0, CRPIX1=130.0,
        CRPIX2=120.0, CD1_1=-scale, CD1_2=0.0, CD2_1=0.0, CD2_2=scale,
        PV1_0=0.0, PV1_1=1.0, PV1_2=0.0, PV1_4=1.0, PV1_5=-0.8,
        PV2_0=0.0, PV2_1=1.0, PV2_2=0.0, PV2_4=0.6, PV2_6=0.9,
    )  # fmt: skip
    templateWcs = readWcs(header)
    scienceWcs = tangentWcs(shape)
    # The distortion is there: without the PV terms the corner lands elsewhere.
    plain = fits.Header(header)
    for key in [k for k in plain if k.startswith("PV")]:
        del plain[key]
    plain["CTYPE1"], plain["CTYPE2"] = "RA---TAN", "DEC--TAN"
    corner = (np.array([5.0]), np.array([5.0]))
    moved = np.hypot(
        *(
            np.subtract(a, b)
            for a, b in zip(
                exactMap(scienceWcs, templateWcs, *corner),
                exactMap(scienceWcs, readWcs(plain), *corner),
                strict=True,
            )
        )
    )
    assert moved[0] > 0.5
    sim = simulatePair(
        shape,
        nStars=25,
        seed=2,
        fluxRange=(1e4, 1e4),
        templateWcs=templateWcs,
        scienceWcs=scienceWcs,
        **NOISELESS,
    )
    image = alignMaskedImage(
        sim.template, templateWcs, scienceWcs, (0, 0, 256, 256)
    ).maskedImage.image
    found = 0
    for star in sim.stars:
        x, y = star["x"], star["y"]
        if not (15 < x < 240 and 15 < y < 240) or star["nearestDistance"] < 30:
            continue
        cut = image[int(y) - 10 : int(y) + 11, int(x) - 10 : int(x) + 11]
        if not np.all(np.isfinite(cut)):
            continue
        yy, xx = np.mgrid[int(y) - 10 : int(y) + 11, int(x) - 10 : int(x) + 11]
        total = cut.sum()
        # Centroid within 0.01 px (bilinear interpolation keeps a symmetric star's centroid
        # to ~1e-3 px), flux within 0.1 %.
        assert abs((cut * xx).sum() / total - x) < 0.01
        assert abs((cut * yy).sum() / total - y) < 0.01
        assert abs(total / star["flux"] - 1.0) < 1e-3
        found += 1
    assert found >= 5


def test_argument_errors() -> None:
    scienceWcs, templateWcs = wcsPair((32, 32))
    mi = pm.MaskedImage(np.ones((32, 32)), variance=np.ones((32, 32)))
    box = (0, 0, 32, 32)
    with pytest.raises(InvalidInputError, match="variance: expected one of 'pixel', 'smoothed'"):
        alignMaskedImage(mi, templateWcs, scienceWcs, box, variance="both")
    with pytest.raises(InvalidInputError, match="maxMappingError: expected a number of pixels"):
        alignMaskedImage(mi, templateWcs, scienceWcs, box, maxMappingError=0.0)
    with pytest.raises(InvalidInputError, match="box: expected a positive width"):
        alignMaskedImage(mi, templateWcs, scienceWcs, (0, 0, 0, 5))
    with pytest.raises(InvalidInputError, match="image: expected a MaskedImage"):
        alignMaskedImage(np.ones((4, 4)), templateWcs, scienceWcs, box)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# The simulator's pairs on two grids


def test_simulated_template_sits_on_its_own_grid() -> None:
    shape = (200, 200)
    scienceWcs, templateWcs = wcsPair(shape, (180, 210))
    sim = simulatePair(
        shape,
        nStars=60,
        seed=4,
        fluxRange=(1e4, 1e4),
        templateWcs=templateWcs,
        scienceWcs=scienceWcs,
        templateShape=(180, 210),
        **dict(NOISELESS, templateSky=100.0),
    )
    assert sim.template.image.shape == (180, 210) and sim.science.image.shape == shape
    assert sim.templateWcs is templateWcs and sim.scienceWcs is scienceWcs
    sky = sim.template.image.min()
    # A template pixel holds the sky per science pixel times its area: ~1.21 science pixels.
    assert sky == pytest.approx(100.0 * 1.21, rel=0.01)
    checked = 0
    for star in sim.stars:
        (u,), (v,) = exactMap(scienceWcs, templateWcs, np.array([star["x"]]), np.array([star["y"]]))
        if not (12 < u < 198 and 12 < v < 168) or star["nearestDistance"] < 22:
            continue
        rows, cols = slice(int(v) - 10, int(v) + 11), slice(int(u) - 10, int(u) + 11)
        cut = sim.template.image[rows, cols] - sim.template.image[rows, cols].min()
        yy, xx = np.mgrid[rows, cols]
        # The sky's area varies by ~1e-3 across the cut: centroids to 0.01 px, flux to 0.2 %.
        assert abs((cut * xx).sum() / cut.sum() - u) < 0.01
        assert abs((cut * yy).sum() / cut.sum() - v) < 0.01
        assert cut.sum() == pytest.approx(1e4, rel=2e-3)
        checked += 1
    assert checked >= 5


def test_simulator_wcs_arguments_are_checked() -> None:
    scienceWcs, templateWcs = wcsPair((64, 64))
    with pytest.raises(InvalidInputError, match="scienceWcs: given without templateWcs"):
        simulatePair((64, 64), nStars=0, nTransients=0, scienceWcs=scienceWcs)
    with pytest.raises(InvalidInputError, match="templateWcs: expected an astropy.wcs.WCS"):
        simulatePair((64, 64), nStars=0, nTransients=0, templateWcs="tan")
    with pytest.raises(InvalidInputError, match="templateShape: both dimensions"):
        simulatePair(
            (64, 64), nStars=0, nTransients=0, templateWcs=templateWcs, templateShape=(0, 5)
        )
    with pytest.raises(InvalidInputError, match=r"sip\['A'\]: terms are \(p, q\)"):
        tangentWcs((64, 64), sip={"A": {(1, 0): 1e-3}})


# --------------------------------------------------------------------------------------------
# Subtraction of pairs on two grids


@pytest.fixture(scope="module")
def disagreeingPair() -> Any:
    """A 1024² pair whose template is rotated by 30°, shifted by 13.4 px, has pixels 1.1
    times larger and a SIP distortion, with template noise that matters (sigma 6 against the
    science image's 8), and 20 bright transients (5e4: 0.2 % photometry each)."""
    shape = (1024, 1024)
    scienceWcs, templateWcs = wcsPair(shape)
    return simulatePair(
        shape,
        seed=21,
        templateSkySigma=6.0,
        nTransients=20,
        transientFlux=5e4,
        templateWcs=templateWcs,
        scienceWcs=scienceWcs,
    )


@pytest.fixture(scope="module")
def alignedResult(disagreeingPair: Any) -> Any:
    sim = disagreeingPair
    return pm.subtract(
        sim.science,
        sim.template,
        align="wcs",
        scienceWcs=sim.scienceWcs,
        templateWcs=sim.templateWcs,
    )


def test_disagreeing_pair_subtracts_to_the_truth(disagreeingPair: Any, alignedResult: Any) -> None:
    sim, result = disagreeingPair, alignedResult
    c = compareToTruth(sim, result, transientTolerance=0.01)
    # The figures: the kernel sum within 0.2 % (the one-grid pair's own error is
    # ~0.1 %), the transients within 1 % (their photometric error is ~0.05 % on average), D/σ
    # robust sigma within 3 % of 1 away from the sources.
    assert c.kernelSumPassed, c.kernelSumError
    assert c.nMeasured >= 15 and c.transientsPassed, c.transientRatio
    assert c.sigmaPassed and c.meanPassed, (c.zSigma, c.zMean)
    md = result.metadata
    assert md["alignGrid"] == "science" and md["alignResampled"] == "template"
    assert md["alignVariance"] == "smoothed"  # the template is convolved
    assert md["convolvedExposure"] == "Template"
    assert 0.85 < md["alignFootprintFraction"] < 0.95  # the rotated template misses corners
    assert md["alignMaxMappingError"] <= 0.002
    assert md["alignAlgorithm"] == ALGORITHM
    assert result.difference.getBBox() == sim.science.getBBox()
    assert result.wcs is sim.scienceWcs  # D is on the science image's pixels


def test_no_data_where_the_template_does_not_reach(
    disagreeingPair: Any, alignedResult: Any
) -> None:
    sim, result = disagreeingPair, alignedResult
    d = result.difference
    noData = (d.mask & NO_DATA) != 0
    # Never garbage: NO_DATA pixels are NaN with infinite variance, the others finite.
    assert np.all(np.isnan(d.image[noData])) and np.all(np.isposinf(d.variance[noData]))
    assert np.all(np.isfinite(d.image[~noData]))
    # Where the 4 x 4 input pixels of a science pixel (by the exact WCS map) leave the
    # template, D is NO_DATA; and where they are deep inside it, D holds data.
    u, v, _ = exactGrid(sim.scienceWcs, sim.templateWcs, (0, 0, 1024, 1024))
    ny, nx = sim.template.image.shape
    covered = (u >= 1) & (v >= 1) & (u < nx - 2) & (v < ny - 2)
    assert np.all(noData[~covered])
    # The convolution grows NO_DATA by up to the largest kernel's half-width (kernelSizeMax
    # 35: 17 science px, 16 template px) beyond the footprint's 2 pixels.
    reach = 20
    deep = (u >= reach) & (v >= reach) & (u < nx - reach) & (v < ny - reach)
    edge = 20  # the convolution's own border at the science image's edge
    deep[:edge], deep[-edge:], deep[:, :edge], deep[:, -edge:] = False, False, False, False
    assert deep.mean() > 0.6
    assert not np.any(noData[deep])


def test_template_smaller_than_the_science_frame() -> None:
    shape = (512, 512)
    scienceWcs, templateWcs = wcsPair(shape, (300, 340))
    sim = simulatePair(
        shape,
        nStars=150,
        seed=5,
        nTransients=0,
        templateWcs=templateWcs,
        scienceWcs=scienceWcs,
        templateShape=(300, 340),
    )
    result = pm.subtract(
        sim.science, sim.template, align="wcs", scienceWcs=scienceWcs, templateWcs=templateWcs
    )
    d = result.difference
    u, v, _ = exactGrid(scienceWcs, templateWcs, (0, 0, 512, 512))
    reached = (u >= 1) & (v >= 1) & (u < 340 - 2) & (v < 300 - 2)
    assert 0.3 < reached.mean() < 0.6
    noData = (d.mask & NO_DATA) != 0
    assert np.all(noData[~reached]) and np.all(np.isnan(d.image[~reached]))
    assert result.metadata["alignFootprintFraction"] == pytest.approx(reached.mean(), abs=0.002)
    # What is left is a difference image: unit noise away from the stars.
    usable = np.isfinite(d.image) & ~noData
    z = d.image[usable] / np.sqrt(d.variance[usable])
    assert abs(mad_std(z) - 1.0) < 0.05  # stars included: a little above the sky's 1


def test_too_small_a_footprint_is_a_coverage_error() -> None:
    shape = (256, 256)
    scienceWcs, templateWcs = wcsPair(shape, (40, 40))
    sim = simulatePair(
        shape, nStars=60, seed=6, nTransients=0, templateWcs=templateWcs, scienceWcs=scienceWcs,
        templateShape=(40, 40),
    )  # fmt: skip
    with pytest.raises(TemplateCoverageError, match="by the WCSs, the template covers") as info:
        pm.subtract(
            sim.science, sim.template, align="wcs", scienceWcs=scienceWcs, templateWcs=templateWcs
        )
    assert 0 < info.value.coveredFraction < 0.1


def test_science_resampled_onto_the_template_grid(disagreeingPair: Any) -> None:
    sim = disagreeingPair
    result = pm.subtract(
        sim.science,
        sim.template,
        align="wcs-template",
        scienceWcs=sim.scienceWcs,
        templateWcs=sim.templateWcs,
    )
    md = result.metadata
    assert md["alignGrid"] == "template" and md["alignResampled"] == "science"
    assert md["alignVariance"] == "pixel"  # the science image is not convolved
    # The kernel sum is the same flux ratio: the science image kept its fluxes.
    assert result.kernelSum == pytest.approx(sim.truth.fluxScale, rel=0.002)
    d = result.difference
    # D's WCS is the template's, for D's box of the template's grid.
    x0, y0 = d.getXY0()
    np.testing.assert_allclose(
        result.wcs.pixel_to_world_values(10.0, 20.0),
        sim.templateWcs.pixel_to_world_values(10.0 + x0, 20.0 + y0),
        rtol=1e-12,
    )
    # The transients, at their template-grid positions, keep their science fluxes.
    tu, tv = exactMap(sim.scienceWcs, sim.templateWcs, sim.transients["x"], sim.transients["y"])
    ratios = []
    for u, v, flux in zip(tu - x0, tv - y0, sim.transients["flux"], strict=True):
        radius = 4.0 * 2.8 / 1.1  # 4 sigma of the widest science PSF, in template pixels
        rows = slice(int(v - radius) - 1, int(v + radius) + 2)
        cols = slice(int(u - radius) - 1, int(u + radius) + 2)
        if not np.all(np.isfinite(d.image[rows, cols])):
            continue
        ratios.append(apertureSum(np.nan_to_num(d.image), u, v, radius) / flux)
    assert len(ratios) >= 12
    assert abs(np.mean(ratios) - 1.0) < 0.01  # the aperture holds 99.9 %; noise 0.1 %
    # Unit noise away from the sources. The raw difference's per-pixel variance is exact;
    # the decorrelation assumes a science image of white noise, which the resampling has
    # correlated: its variance is a few % high there (measured 7 %).
    su, sv = exactMap(sim.scienceWcs, sim.templateWcs, sim.stars["x"], sim.stars["y"])
    for image, tolerance in ((result.rawDifference, 0.03), (d, 0.05)):
        usable = np.isfinite(image.image) & ((image.mask & NO_DATA) == 0)
        for u, v in zip(np.concatenate([su, tu]) - x0, np.concatenate([sv, tv]) - y0, strict=True):
            r0, c0 = int(v), int(u)
            usable[max(r0 - 16, 0) : r0 + 17, max(c0 - 16, 0) : c0 + 17] = False
        z = image.image[usable] / np.sqrt(image.variance[usable])
        assert z.size > 200_000
        assert abs(mad_std(z) - 1.0) < tolerance


def test_auto_mode_that_convolves_the_science_image_resamples_again() -> None:
    # A template broader than the science image: "auto" convolves the science image, so the
    # resampled template is not convolved and must carry the per-pixel variance.
    shape = (512, 512)
    scienceWcs, templateWcs = wcsPair(shape)
    sim = simulatePair(
        shape,
        nStars=200,
        seed=12,
        templateSigma=2.6,
        scienceSigma=1.5,
        nTransients=0,
        templateWcs=templateWcs,
        scienceWcs=scienceWcs,
    )
    result = pm.subtract(
        sim.science, sim.template, align="wcs", scienceWcs=scienceWcs, templateWcs=templateWcs
    )
    assert result.convolved == "Science"
    assert result.metadata["alignVariance"] == "pixel"
    assert result.config.mode == "auto"  # the configuration asked for is the one kept
    assert result.kernelSum == pytest.approx(1.0 / sim.truth.fluxScale, rel=0.003)


def test_wrong_wcs_is_an_origin_mismatch(disagreeingPair: Any) -> None:
    sim = disagreeingPair
    wrong = tangentWcs(
        sim.template.image.shape, pixelScale=0.22, rotation=30.0, offset=(13.4 + 20, 0.0), sip=SIP
    )
    with pytest.raises(OriginMismatchError, match="the two WCSs do not place the images"):
        pm.subtract(
            sim.science, sim.template, align="wcs", scienceWcs=sim.scienceWcs, templateWcs=wrong
        )


def test_subtract_align_errors_and_inputs_untouched(disagreeingPair: Any) -> None:
    sim = disagreeingPair
    science = sim.science.image.copy()
    with pytest.raises(InvalidInputError, match="align: expected None, 'none', 'wcs'"):
        pm.subtract(sim.science, sim.template, align="yes")
    with pytest.raises(InvalidInputError, match="scienceWcs: the image carries no WCS"):
        pm.subtract(sim.science.image, sim.template.image, align="wcs", scienceVariance=64.0,
                    templateVariance=36.0, templateWcs=sim.templateWcs)  # fmt: skip
    analysis = pm.analyzeTemplate(sim.template)
    with pytest.raises(InvalidInputError, match="templateAnalysis: .* align resamples"):
        pm.subtract(sim.science, sim.template, align="wcs", templateAnalysis=analysis,
                    scienceWcs=sim.scienceWcs, templateWcs=sim.templateWcs)  # fmt: skip
    assert np.array_equal(sim.science.image, science)


def test_inputs_are_not_modified() -> None:
    shape = (256, 256)
    scienceWcs, templateWcs = wcsPair(shape)
    sim = simulatePair(
        shape, nStars=80, seed=13, nTransients=0, templateWcs=templateWcs, scienceWcs=scienceWcs
    )
    before = [
        p.copy() for mi in (sim.science, sim.template) for p in (mi.image, mi.mask, mi.variance)
    ]
    pm.subtract(
        sim.science, sim.template, align="wcs", scienceWcs=scienceWcs, templateWcs=templateWcs
    )
    after = [p for mi in (sim.science, sim.template) for p in (mi.image, mi.mask, mi.variance)]
    assert all(np.array_equal(a, b) for a, b in zip(before, after, strict=True))


def test_nddata_inputs_bring_their_wcs() -> None:
    from astropy.nddata import CCDData, StdDevUncertainty

    shape = (256, 256)
    scienceWcs, templateWcs = wcsPair(shape)
    sim = simulatePair(
        shape, nStars=80, seed=14, nTransients=0, templateWcs=templateWcs, scienceWcs=scienceWcs
    )
    science, template = (
        CCDData(mi.image, unit="adu", uncertainty=StdDevUncertainty(np.sqrt(mi.variance)), wcs=w)
        for mi, w in ((sim.science, scienceWcs), (sim.template, templateWcs))
    )
    result = pm.subtract(science, template, align="wcs")
    assert result.kernelSum == pytest.approx(sim.truth.fluxScale, rel=0.01)


# --------------------------------------------------------------------------------------------
# Files, the command line and batches


def _writePair(sim: Any, directory: Path) -> tuple[Path, Path]:
    science, template = directory / "science.fits", directory / "template.fits"
    pmio.writeMaskedImage(science, sim.science, wcs=sim.scienceWcs)
    pmio.writeMaskedImage(template, sim.template, wcs=sim.templateWcs)
    return science, template


@pytest.fixture(scope="module")
def filePair(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    shape = (384, 384)
    scienceWcs, templateWcs = wcsPair(shape)
    sim = simulatePair(
        shape, nStars=150, seed=15, nTransients=3, templateWcs=templateWcs, scienceWcs=scienceWcs
    )
    directory = tmp_path_factory.mktemp("align-files")
    science, template = _writePair(sim, directory)
    return {"sim": sim, "dir": directory, "science": science, "template": template}


def _difference(path: Path) -> tuple[Any, fits.Header]:
    """The metadata written with a difference image, and its image HDU's header."""
    with fits.open(path) as hdul:
        return pmio.headerToMetadata(hdul[0].header, prefix="psfmatch."), hdul[
            "IMAGE"
        ].header.copy()


def test_fits_paths_carry_their_wcs_to_the_difference(filePair: dict[str, Any]) -> None:
    sim = filePair["sim"]
    result = pm.subtract(str(filePair["science"]), str(filePair["template"]), align="wcs")
    out = filePair["dir"] / "difference.fits"
    result.writeFits(out, overwrite=True)
    primary, image = _difference(out)
    written = WCS(image)
    assert written.sip is not None or "SIP" not in str(sim.scienceWcs.wcs.ctype[0])
    np.testing.assert_allclose(
        written.pixel_to_world_values(100.0, 50.0),
        sim.scienceWcs.pixel_to_world_values(100.0, 50.0),
        rtol=1e-12,
    )
    assert primary["alignGrid"] == "science"
    assert primary["alignAlgorithm"].startswith("cubic B-spline")
    assert 0.8 < primary["alignFootprintFraction"] <= 1.0
    # The difference reads back with its origin and its planes.
    d = pmio.readMaskedImage(out)
    assert d.getXY0() == sim.science.getXY0()


def test_command_line_align(filePair: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    from psfmatch.cli import main

    directory = filePair["dir"]
    out = directory / "cli-difference.fits"
    argv = ["subtract", "--science", str(filePair["science"]), "--template",
            str(filePair["template"]), "--output", str(out), "--overwrite"]  # fmt: skip
    assert main([*argv, "--align"]) == 0
    printed = capsys.readouterr().out
    assert "aligned         : the template resampled onto the science grid" in printed
    primary, image = _difference(out)
    assert primary["alignResampled"] == "template"
    np.testing.assert_allclose(
        WCS(image).pixel_to_world_values(3.0, 4.0),
        filePair["sim"].scienceWcs.pixel_to_world_values(3.0, 4.0),
        rtol=1e-12,
    )
    # The template's grid, with the WCS taken from another file.
    wcsFile = directory / "template.wcs"
    fits.PrimaryHDU(header=filePair["sim"].templateWcs.to_header(relax=True)).writeto(
        wcsFile, overwrite=True
    )
    assert main([*argv, "--align", "wcs-template", "--template-wcs", str(wcsFile)]) == 0
    primary, _ = _difference(out)
    assert primary["alignGrid"] == "template"
    # Usage errors.
    assert main([*argv, "--template-wcs", str(wcsFile)]) == 2
    assert "--science-wcs and --template-wcs need --align" in capsys.readouterr().err
    assert main([*argv, "--align", "sideways"]) == 2


def test_batch_pairs_take_an_align_column(filePair: dict[str, Any], tmp_path: Path) -> None:
    from psfmatch.batch.pairs import readPairs
    from psfmatch.batch.worker import _runPair

    csv = tmp_path / "pairs.csv"
    csv.write_text(
        "science,template,output,align\n"
        f"{filePair['science']},{filePair['template']},{tmp_path / 'd1.fits'},wcs\n"
        f"{filePair['science']},{filePair['template']},{tmp_path / 'd2.fits'},none\n"
    )
    pairs = readPairs(csv)
    assert [p.align for p in pairs] == ["wcs", None]
    record = _runPair(pairs[0], pm.ImagePsfMatchConfig(), False, True, None)
    assert record["status"] == "ok" and record["templateCached"] is None, record
    primary, image = _difference(tmp_path / "d1.fits")
    assert primary["alignGrid"] == "science" and "CTYPE1" in image
    bad = tmp_path / "bad.csv"
    bad.write_text(f"science,template,output,align\ns.fits,t.fits,{tmp_path / 'd.fits'},yes\n")
    with pytest.raises(InvalidInputError, match="align: expected one of wcs, wcs-template, none"):
        readPairs(bad)


def test_alignment_needs_no_reproject(monkeypatch: pytest.MonkeyPatch) -> None:
    # reproject is a test dependency only (docs/decisions.md D16): without it, align works.
    monkeypatch.setitem(sys.modules, "reproject", None)
    shape = (256, 256)
    scienceWcs, templateWcs = wcsPair(shape)
    sim = simulatePair(
        shape, nStars=80, seed=16, nTransients=0, templateWcs=templateWcs, scienceWcs=scienceWcs
    )
    result = pm.subtract(
        sim.science, sim.template, align="wcs", scienceWcs=scienceWcs, templateWcs=templateWcs
    )
    assert result.kernelSum == pytest.approx(sim.truth.fluxScale, rel=0.01)
