# SPDX-License-Identifier: BSD-3-Clause
"""Difference-image sources: the detector's S/N image against a brute-force float64 reference,
and end to end at a configured threshold (docs/decisions.md D4).

`detectDifferenceSources` filters the S/N image band by band in float32 for a float32 D
(`_matchedFilterSnr`); the first tests hold it, and the detections made on it, to direct sums
in float64 (scipy.signal.correlate) and to sep on that reference image, as the detector did
before it filtered in float32.

tests/test_decorrelate.py checks the detector on white noise and the default 5σ run (where
Gaussian noise predicts ≈ 0 false detections, so a count of 0-3 cannot tell a right noise
model from a slightly wrong one). Here the whole subtraction runs with
``diaSourceThreshold = 3``, where pure noise gives ~150 excursions: the detections away from
every simulated source must number what Gaussian noise predicts for that threshold, the
decorrelated difference's PSF and its area, which holds only if D, its variance plane and its
PSF are all right.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import sep
from scipy.signal import correlate

import psfmatch as pm
from psfmatch.detect_and_measure import _matchedFilterSnr, detectDifferenceSources
from psfmatch.image_psf_match import ImagePsfMatchConfig, ImagePsfMatchTask
from psfmatch.simulate import simulatePair

FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))
BAD = 4
DIFFERENCE_SEED = 18


def skewedPsf() -> np.ndarray:
    """A 15² unit-sum PSF that is neither symmetric nor separable (an elliptical, tilted
    Gaussian with an off-centre wing), so that a flipped or transposed kernel, or a separable
    shortcut, shows."""
    yy, xx = np.mgrid[-7:8, -7:8].astype(float)
    u, v = 0.8 * xx + 0.6 * yy, -0.6 * xx + 0.8 * yy
    psf = np.exp(-0.5 * ((u / 2.2) ** 2 + (v / 1.5) ** 2))
    psf += 0.15 * np.exp(-0.5 * (((xx - 2.0) / 1.2) ** 2 + ((yy + 1.0) / 1.0) ** 2))
    return psf / psf.sum()


def differenceImage(rng: np.random.Generator) -> pm.MaskedImage:
    """A 1100 × 300 difference (three of the detector's row bands for a 15² PSF) with sources
    of both signs, a variance that varies by 2× and rises 100× in the cores of bright stars
    (as Poisson noise makes it), a masked block larger than the PSF, a masked column, a NaN
    pixel, zero and infinite variances, and garbage (1e30) under the masked pixels."""
    ny, nx = 1100, 300
    psf = skewedPsf()
    yy, xx = np.mgrid[0:ny, 0:nx]
    variance = 9.0 * (1.0 + 0.5 * np.sin(yy / 150.0) * np.cos(xx / 70.0))
    image = rng.normal(0.0, 1.0, (ny, nx)) * np.sqrt(variance)
    for _ in range(80):
        y, x = int(rng.integers(8, ny - 8)), int(rng.integers(8, nx - 8))
        amplitude = rng.uniform(20.0, 600.0)
        image[y - 7 : y + 8, x - 7 : x + 8] += rng.choice([-1.0, 1.0]) * amplitude * psf
    for _ in range(10):
        y, x = int(rng.integers(8, ny - 8)), int(rng.integers(8, nx - 8))
        core = np.exp(
            -(
                (yy[y - 7 : y + 8, x - 7 : x + 8] - y) ** 2
                + (xx[y - 7 : y + 8, x - 7 : x + 8] - x) ** 2
            )
            / 8.0
        )
        variance[y - 7 : y + 8, x - 7 : x + 8] *= 1.0 + 99.0 * core
        image[y - 7 : y + 8, x - 7 : x + 8] += rng.uniform(-0.05, 0.05) * 3e4 * psf
    mask = np.zeros((ny, nx), dtype=np.int32)
    mask[500:560, 100:170] = BAD
    mask[:, 250] = BAD
    image[mask != 0] = 1e30
    image[300, 40] = np.nan
    variance[700, 200] = 0.0
    variance[900, 60] = np.inf
    return pm.MaskedImage(image.astype(np.float32), mask, variance.astype(np.float32), xy0=(7, -2))


def referenceSnr(d: pm.MaskedImage, psf: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The S/N image Σ p·D/σ² / (Σ p²/σ²)^½ by direct float64 sums over the usable pixels
    (finite, finite positive variance, no BAD bit), 0 elsewhere; and the usable map."""
    image = np.asarray(d.image, dtype=np.float64)
    variance = np.asarray(d.variance, dtype=np.float64)
    usable = np.isfinite(image) & np.isfinite(variance) & (variance > 0) & ((d.mask & BAD) == 0)
    weight = np.where(usable, 1.0 / np.where(usable, variance, 1.0), 0.0)
    data = np.where(usable, image, 0.0)
    numerator = correlate(data * weight, psf, mode="same", method="direct")
    denominator = correlate(weight, psf * psf, mode="same", method="direct")
    with np.errstate(divide="ignore", invalid="ignore"):
        snr = np.where(usable, numerator / np.sqrt(denominator), 0.0)
    return snr, usable


@pytest.fixture(scope="module")
def difference() -> dict[str, Any]:
    """`differenceImage` (float32), its PSF and `referenceSnr`, made once for the module."""
    d = differenceImage(np.random.default_rng(DIFFERENCE_SEED))
    psf = skewedPsf()
    expected, usable = referenceSnr(d, psf)
    return {"d": d, "psf": psf, "expected": expected, "usable": usable}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_snr_image_matches_direct_float64_sums(difference: dict[str, Any], dtype: type) -> None:
    """The float32 planes, or the same values as float64 planes (filtered in float64)."""
    d, psf = difference["d"], difference["psf"]
    expected, usable = difference["expected"], difference["usable"]
    d = pm.MaskedImage(d.image.astype(dtype), d.mask, d.variance.astype(dtype), xy0=d.getXY0())
    snr = _matchedFilterSnr(d, psf, BAD, 5.0, 0)
    assert snr.dtype == np.float32 and np.isfinite(snr).all()
    assert (snr[~usable] == 0).all()
    if dtype == np.float32:
        # Float32 FFTs spread their rounding over a band: ~3e-7 × σ²/σ²_sky relative (the
        # detector's docstring; the cores here reach 100 σ²_sky), ~1e-6 absolute on the sky.
        # 1e-4 relative plus 2e-5 absolute is 8× the largest error seen. A flipped,
        # transposed or one-pixel-shifted kernel moves the S/N by 2.6-8 here, a weight 1/σ
        # instead of 1/σ² or a band seam off by a row by far more than the tolerance.
        np.testing.assert_allclose(snr, expected, rtol=1e-4, atol=2e-5)
    else:
        # Float64 FFTs: rounding ~1e-15 of the band's values, then the float32 result.
        np.testing.assert_allclose(snr, expected, rtol=2e-7, atol=1e-9)


def test_detections_are_seps_on_the_reference_snr(difference: dict[str, Any]) -> None:
    """The table is what sep finds in the float64 reference S/N image (with the unusable
    pixels masked, as the detector did before it filtered in float32): the same regions, the
    same peaks, barycentres within 1e-4 px (sep's of a float32 image whose values differ by
    ≲ 1e-4 relative, as above, moves them by ≲ 1e-4 of a region's size), and at each peak the
    flux, its error and the S/N of direct float64 sums."""
    d, psf = difference["d"], difference["psf"]
    expected, usable = difference["expected"], difference["usable"]
    table = detectDifferenceSources(d, psf, 5.0, BAD)
    x0, y0 = d.getXY0()
    rows = []
    for sign in (1.0, -1.0):
        objects = sep.extract(sign * expected, 5.0, mask=~usable, minarea=1, filter_kernel=None)
        rows.append(objects[np.lexsort((objects["x"], objects["y"]))])
    assert len(table) == sum(len(r) for r in rows) > 50
    for sign, objects in zip((False, True), rows, strict=True):
        mine = table[table["isNegative"] == sign]
        mine = mine[np.lexsort((np.asarray(mine["x"]), np.asarray(mine["y"])))]
        np.testing.assert_array_equal(mine["npix"], objects["npix"])
        np.testing.assert_array_equal(mine["xPeak"], objects["xpeak"] + x0)
        np.testing.assert_array_equal(mine["yPeak"], objects["ypeak"] + y0)
        np.testing.assert_allclose(mine["x"], objects["x"] + x0, rtol=0, atol=1e-4)
        np.testing.assert_allclose(mine["y"], objects["y"] + y0, rtol=0, atol=1e-4)
        # Direct sums in float64 both sides, in another order: ~1e-15.
        iy, ix = objects["ypeak"], objects["xpeak"]
        np.testing.assert_allclose(mine["snr"], expected[iy, ix], rtol=1e-10)
        assert ((mine["snr"] < 0) == sign).all()


@pytest.mark.parametrize(
    ("dataScale", "varianceScale"),
    [
        (1e-18, 1e-36),  # cgs units (erg/s/cm²/Å): 1/σ² overflows float32
        (1e33, 1.0),  # S/N ~1e33: float32 sums overflow, the float64 path takes over
    ],
)
def test_snr_does_not_depend_on_units(
    difference: dict[str, Any], dataScale: float, varianceScale: float
) -> None:
    """D → a·D, σ² → b·σ² scales the S/N by a/√b, for scales at either end of float32's
    range; where the S/N keeps its size, sep finds the same sources at the same places."""
    d, psf = difference["d"], difference["psf"]
    image = np.asarray(d.image, dtype=np.float64)
    usable = d.mask == 0  # the garbage under the mask stays as it is (1e30 · 1e33 overflows)
    scaled = pm.MaskedImage(
        np.where(usable, image * dataScale, image).astype(np.float32),
        d.mask,
        (np.asarray(d.variance, dtype=np.float64) * varianceScale).astype(np.float32),
        xy0=d.getXY0(),
    )
    factor = dataScale / math.sqrt(varianceScale)
    snr = _matchedFilterSnr(scaled, psf, BAD, 5.0 * factor, 0) / factor
    expected = difference["expected"]
    # The float32 filter's rounding as in test_snr_image_matches_direct_float64_sums, plus the
    # scaled planes' own rounding to float32 (6e-8 relative).
    np.testing.assert_allclose(snr, expected, rtol=1e-4, atol=2e-5)
    if factor != 1.0:
        return
    table = detectDifferenceSources(d, psf, 5.0, BAD)
    other = detectDifferenceSources(scaled, psf, 5.0, BAD)
    assert len(other) == len(table) > 50
    for name in ("npix", "xPeak", "yPeak", "isNegative"):
        np.testing.assert_array_equal(other[name], table[name])
    # Barycentres of S/N images that agree to 1e-4 relative (above): 1e-4 px. The peak S/N
    # is a float64 direct sum of planes rounded to float32 at other magnitudes (~1e-7).
    np.testing.assert_allclose(other["x"], table["x"], rtol=0, atol=1e-4)
    np.testing.assert_allclose(other["y"], table["y"], rtol=0, atol=1e-4)
    np.testing.assert_allclose(other["snr"], table["snr"], rtol=1e-6)


def test_point_fluxes_at_the_border_and_inside(difference: dict[str, Any]) -> None:
    """The direct sums at given pixels (the table's peaks, and the S/N near the threshold)
    agree with scipy's at every pixel of the border rows and columns, where the footprint is
    cut, beside masked and NaN pixels, and inside."""
    from psfmatch.detect_and_measure import _pointFluxes

    d, psf = difference["d"], difference["psf"]
    expected, usable = difference["expected"], difference["usable"]
    ny, nx = expected.shape
    border = np.zeros((ny, nx), dtype=bool)
    border[:9], border[-9:], border[:, :9], border[:, -9:] = True, True, True, True
    near = np.zeros((ny, nx), dtype=bool)
    near[492:570:3, 92:180:3] = True  # around the masked block
    near[::37, ::11] = True
    iy, ix = np.nonzero((border | near) & usable)
    flux, fluxErr = _pointFluxes(d, psf, BAD, iy, ix, False)
    variance = np.asarray(d.variance, dtype=np.float64)
    weight = np.where(usable, 1.0 / np.where(usable, variance, 1.0), 0.0)
    denominator = correlate(weight, psf * psf, mode="same", method="direct")
    # Direct float64 sums of the same ≤ 225 terms in another order: ~1e-15.
    np.testing.assert_allclose(fluxErr, 1.0 / np.sqrt(denominator[iy, ix]), rtol=1e-12)
    np.testing.assert_allclose(flux / fluxErr, expected[iy, ix], rtol=1e-10, atol=1e-12)


def test_snr_near_the_threshold_is_exact(
    difference: dict[str, Any], rng: np.random.Generator
) -> None:
    """Where the float32 S/N may lie on the wrong side of the threshold (within its rounding
    of it) the detector sums it again in float64: with the threshold at a pixel's exact S/N,
    that pixel and every other within 1e-5 of it get the reference value rounded to float32
    (to 2 ulp: the two float64 sums differ by ~1e-15 in another order), so sep draws the
    regions of an exact filter."""
    d, psf = difference["d"], difference["psf"]
    expected, usable = difference["expected"], difference["usable"]
    candidates = np.flatnonzero(usable.ravel() & (np.abs(expected.ravel()) > 4.0))
    pick = np.unravel_index(rng.choice(candidates, 5, replace=False), expected.shape)
    for iy, ix in zip(*pick, strict=True):
        threshold = float(abs(expected[iy, ix]))
        snr = _matchedFilterSnr(d, psf, BAD, threshold, 0)
        near = usable & (np.abs(np.abs(expected) - threshold) <= 1e-5 * threshold)
        assert near[iy, ix]
        np.testing.assert_allclose(snr[near], expected[near].astype(np.float32), rtol=2.4e-7)


def test_snr_near_the_threshold_is_exact_beside_a_bright_pixel() -> None:
    """The float32 rounding of a band scales with its largest inputs, not only with σ²/σ²_sky:
    with a sky-only variance (what readImage estimates without a gain) a cosmic ray of 5e4
    (1.7e4 σ) moves the S/N of sky pixels 60 px away in its band by ~5e-4, 20× the rounding
    that σ²/σ²_sky alone allows for. With the threshold at such a pixel's exact S/N, that
    pixel is still summed again in float64, so sep draws the regions of an exact filter."""
    from psfmatch.detect_and_measure import _filterSnr

    gen = np.random.default_rng(DIFFERENCE_SEED)
    ny, nx = 400, 300
    psf = skewedPsf()
    image = gen.normal(0.0, 3.0, (ny, nx))
    for _ in range(20):
        y, x = int(gen.integers(8, ny - 8)), int(gen.integers(8, nx - 8))
        image[y - 7 : y + 8, x - 7 : x + 8] += gen.uniform(20.0, 200.0) * psf
    image[200, 150] += 5e4
    d = pm.MaskedImage(
        image.astype(np.float32),
        np.zeros((ny, nx), dtype=np.int32),
        np.full((ny, nx), 9.0, dtype=np.float32),
    )
    expected, usable = referenceSnr(d, psf)
    raw = np.empty((ny, nx), dtype=np.float32)
    _filterSnr(d, psf, BAD, 5.0, 0, np.float32, raw)  # the float32 filter, nothing summed again
    yy, xx = np.mgrid[0:ny, 0:nx]
    sky = usable & (np.abs(expected) > 2.0) & ((yy - 200) ** 2 + (xx - 150) ** 2 > 15**2)
    error = np.where(sky, np.abs(raw - expected), 0.0)
    iy, ix = np.unravel_index(int(np.argmax(error)), error.shape)
    # The case this test is about: the pixel's float32 S/N is off by far more than 1e-5 of
    # the threshold (~3 here), the rounding σ²/σ²_sky = 1 allows.
    assert error[iy, ix] > 1e-4
    threshold = float(abs(expected[iy, ix]))
    snr = _matchedFilterSnr(d, psf, BAD, threshold, 0)
    # Summed again in float64 and rounded to float32 (2 ulp, as in the test above).
    np.testing.assert_allclose(snr[iy, ix], np.float32(expected[iy, ix]), rtol=2.4e-7)


def test_snr_beside_a_very_bright_pixel_is_filtered_in_float64(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A cosmic ray of 1.7e7 σ (sky-only variance) makes the float32 rounding ~0.2 in S/N
    over its band, so that more than `_MOST_NEAR` of the band's pixels would need summing
    again: the S/N image is filtered again in float64, with the direct sums' result."""
    import psfmatch.detect_and_measure as detect

    gen = np.random.default_rng(DIFFERENCE_SEED)
    ny, nx = 400, 300
    psf = skewedPsf()
    image = gen.normal(0.0, 3.0, (ny, nx))
    image[200, 150] += 5e7
    d = pm.MaskedImage(
        image.astype(np.float32),
        np.zeros((ny, nx), dtype=np.int32),
        np.full((ny, nx), 9.0, dtype=np.float32),
    )
    dtypes = []
    filterSnr = detect._filterSnr

    def spy(*args: Any) -> Any:
        dtypes.append(np.dtype(args[5]))
        return filterSnr(*args)

    monkeypatch.setattr(detect, "_filterSnr", spy)
    snr = _matchedFilterSnr(d, psf, BAD, 1.0, 0)
    assert dtypes == [np.float32, np.float64]
    expected, _ = referenceSnr(d, psf)
    # Float64 filtering: ~1e-15 of the band's largest S/N (3e6 at the cosmic ray), then the
    # float32 result.
    np.testing.assert_allclose(snr, expected, rtol=2e-7, atol=1e-9 * np.abs(expected).max())


def test_snr_where_float32_sums_overflow(
    difference: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A float32 D whose S/N fits in float32 but whose transforms do not (S/N ~1e34 over the
    whole image: the transforms' zero frequency sums 3e5 of them) is filtered again in
    float64, with the same result as the direct sums."""
    import psfmatch.detect_and_measure as detect

    d, psf = difference["d"], difference["psf"]
    image = np.asarray(d.image, dtype=np.float64)
    usable = d.mask == 0
    sigma = np.sqrt(np.asarray(d.variance, dtype=np.float64))
    scaled = pm.MaskedImage(
        np.where(usable, (image + 3.0 * sigma) * 1e33, image).astype(np.float32),
        d.mask,
        d.variance,
    )
    dtypes = []
    filterSnr = detect._filterSnr

    def spy(*args: Any) -> Any:
        dtypes.append(np.dtype(args[5]))
        return filterSnr(*args)

    monkeypatch.setattr(detect, "_filterSnr", spy)
    snr = _matchedFilterSnr(scaled, psf, BAD, 5e33, 0)
    assert dtypes == [np.float32, np.float64]
    expected, _ = referenceSnr(scaled, psf)
    # Float64 filtering (~1e-15 of the band's values: the offset makes them ~1e34 throughout)
    # rounded to float32.
    np.testing.assert_allclose(snr, expected, rtol=2e-7, atol=1e-9 * np.abs(expected).max())


def expectedExcursions(area: float, psfSigma: float, u: float) -> float:
    """Expected number of separate excursions above u·σ, one sign, of white noise matched-
    filtered with a Gaussian PSF of ``psfSigma`` pixels over ``area`` pixels: the expected
    Euler characteristic of the excursion set (Adler 1981), area·λ₂·u·exp(−u²/2)/(2π)^{3/2},
    with λ₂ = 1/(2σ²) the second spectral moment of the filtered field."""
    lam2 = 1.0 / (2.0 * psfSigma**2)
    return area * lam2 * u * math.exp(-0.5 * u * u) / (2.0 * math.pi) ** 1.5


def test_noise_detections_at_a_configured_threshold_match_gaussian_noise() -> None:
    sim = simulatePair((512, 512), nStars=150, seed=41, nTransients=6, nVariables=0)
    config = ImagePsfMatchConfig()
    config.diaSourceThreshold = 3.0
    task = ImagePsfMatchTask(config=config)
    result = task.subtractMaskedImages(sim.template, sim.science)
    dia = result.diaSources
    md = task.metadata
    assert dia.meta["threshold"] == 3.0
    assert (np.abs(dia["snr"]) >= 3.0).all()
    assert md["NFalsePositivesTotal"] == len(dia)

    # Every transient is found, positive and unassociated.
    for x, y in zip(sim.transients["x"], sim.transients["y"], strict=True):
        near = np.hypot(dia["x"] - x, dia["y"] - y) < 2.0
        assert near.sum() == 1
        assert not dia["isNegative"][near][0]
        assert not dia["refAssociated"][near][0] and not dia["srcAssociated"][near][0]

    # Away from every star and transient (8 px: beyond a star's residual lobes, ≈ 3σ of the
    # difference PSF, σ ≈ 2.5 px) the detections are noise.
    d = result.subtractedMaskedImage
    ny, nx = d.image.shape
    yy, xx = np.mgrid[0:ny, 0:nx]
    away = np.isfinite(d.image)
    sources = np.concatenate(
        [
            np.column_stack([sim.stars["x"], sim.stars["y"]]),
            np.column_stack([sim.transients["x"], sim.transients["y"]]),
        ]
    )
    radius = 8.0
    for sx, sy in sources:
        ya, yb = max(int(sy - radius), 0), min(int(sy + radius) + 2, ny)
        xa, xb = max(int(sx - radius), 0), min(int(sx + radius) + 2, nx)
        disc = np.hypot(xx[ya:yb, xa:xb] - sx, yy[ya:yb, xa:xb] - sy) <= radius
        away[ya:yb, xa:xb] &= ~disc
    ix = np.clip(np.round(dia["x"]).astype(int), 0, nx - 1)
    iy = np.clip(np.round(dia["y"]).astype(int), 0, ny - 1)
    noise = away[iy, ix]
    psfSigma = md["differencePsfSize"] / FWHM_PER_SIGMA
    expected = 2.0 * expectedExcursions(float(away.sum()), psfSigma, 3.0)  # both signs
    assert expected > 50
    # Pixel sampling misses a few excursions that peak between pixel centres (0.88-0.93 of
    # the continuous formula, see test_decorrelate), so 0.9 is the centre. The Poisson error
    # on ~70 is 12 %; and the matched filter turns the background fit's error (≈ 0.1 ADU on σ
    # ≈ 8.4, i.e. δ ≈ 0.015σ per pixel) into an S/N offset δ·sqrt(NEA) ≈ 0.13, which moves
    # detections from one sign to the other (a 70/30 split here, measured) and adds ≈ 10 % to
    # their total. So 0.6-1.3: ± 3 Poisson σ around 0.9, plus that 10 %. A variance plane 5 %
    # off, or detection at the default 5σ, would be far outside (× 1.5 and × 0.01).
    ratio = noise.sum() / expected
    assert 0.6 < ratio < 1.3, (noise.sum(), expected)
