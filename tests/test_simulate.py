# SPDX-License-Identifier: BSD-3-Clause
"""Tests of psfmatch.simulate: the simulated pairs and their known answers."""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import scipy.signal
import scipy.special
import scipy.stats

import psfmatch as pm
from psfmatch.simulate import GaussianPsfModel, SimulationTruth, compareToTruth, simulatePair

SAT = pm.Mask.getPlaneBitMask("SAT")
EDGE = pm.Mask.getPlaneBitMask("EDGE")
NO_DATA = pm.Mask.getPlaneBitMask("NO_DATA")

# Noise-free, float64, no sky: the images hold the rendered sources alone.
NOISELESS = dict(
    templateSky=0.0,
    background=0.0,
    templateSkySigma=0.0,
    scienceSkySigma=0.0,
    gain=math.inf,
    dtype=np.float64,
)


def moments(image: np.ndarray) -> tuple[float, float, float, float, float]:
    """Centroid and second central moments ``(xc, yc, Mxx, Myy, Mxy)`` of an image."""
    ny, nx = image.shape
    y, x = np.mgrid[0:ny, 0:nx].astype(float)
    total = image.sum()
    xc, yc = (image * x).sum() / total, (image * y).sum() / total
    mxx = (image * (x - xc) ** 2).sum() / total
    myy = (image * (y - yc) ** 2).sum() / total
    mxy = (image * (x - xc) * (y - yc)).sum() / total
    return xc, yc, mxx, myy, mxy


def erfImage(x: float, y: float, sigma: float, size: int) -> np.ndarray:
    """A round pixel-integrated unit Gaussian at (x, y) on a size×size grid at the origin."""
    edges = np.arange(size + 1) - 0.5
    px = np.diff(scipy.special.erf((edges - x) / (math.sqrt(2) * sigma))) / 2
    py = np.diff(scipy.special.erf((edges - y) / (math.sqrt(2) * sigma))) / 2
    return py[:, None] * px[None, :]


def test_returns_documented_fields_shapes_and_dtypes() -> None:
    sim = simulatePair((96, 128), nStars=20, nTransients=2, seed=3, xy0=(10, -5))
    assert set(sim.getDict()) == {"template", "science", "stars", "transients", "truth"}
    for mi in (sim.template, sim.science):
        assert isinstance(mi, pm.MaskedImage)
        assert mi.image.shape == mi.mask.shape == mi.variance.shape == (96, 128)
        assert mi.image.dtype == mi.variance.dtype == np.float32
        assert mi.mask.dtype == np.int32
        assert mi.getXY0() == (10, -5)
        assert np.all(np.isfinite(mi.image)) and np.all(mi.variance > 0)
    assert sim.stars.dtype.names == ("x", "y", "flux", "scienceFlux", "variable", "nearestDistance")
    assert sim.transients.dtype.names == ("x", "y", "flux")
    assert len(sim.stars) == 20 and len(sim.transients) == 2
    # Stars lie on the image (parent coordinates, pixel centres at integers).
    assert np.all((sim.stars["x"] >= 9.5) & (sim.stars["x"] < 137.5))
    assert np.all((sim.stars["y"] >= -5.5) & (sim.stars["y"] < 90.5))
    assert np.all((sim.stars["flux"] >= 2e3) & (sim.stars["flux"] <= 2e5))
    truth = sim.truth
    assert isinstance(truth, SimulationTruth)
    assert truth.bbox == (10, -5, 128, 96)
    assert truth.templateModel.shape == truth.scienceModel.shape == (96, 128)
    assert truth.differenceModel.dtype == np.float32
    # FWHM = 2 sqrt(2 ln 2) sigma; the science sigma runs 2.2 -> 2.8 from the first column
    # (x = 10) to the last (x = 137). Only float rounding separates these.
    assert truth.templateFwhm == pytest.approx(2.3548200450309493 * 1.6, rel=1e-12)
    assert truth.scienceFwhm(10.0, 0.0) == pytest.approx(2.3548200450309493 * 2.2, rel=1e-12)
    np.testing.assert_allclose(
        truth.scienceFwhm(np.array([10.0, 73.5, 137.0]), 7.0),
        2.3548200450309493 * np.array([2.2, 2.5, 2.8]),
        rtol=1e-12,  # a linear formula: rounding only
    )
    sim64 = simulatePair((32, 48), nStars=3, nTransients=0, dtype=np.float64)
    assert sim64.science.image.dtype == sim64.truth.scienceModel.dtype == np.float64


def test_default_pair_is_mostly_isolated_stars() -> None:
    sim = simulatePair()
    assert sim.science.image.shape == (1024, 1024)
    assert len(sim.stars) == 400 and len(sim.transients) == 10
    # One star per ~2600 pixels: most have no neighbour within 3 science FWHM (~18 px)
    # (Poisson expectation exp(-pi 18^2 400/1024^2) = 68%).
    assert np.mean(sim.stars["nearestDistance"] > 18) > 0.6
    assert sim.truth.kernelSum(0.0, 0.0) == 1.25


def test_same_seed_same_pair_and_stars_independent_of_noise() -> None:
    a = simulatePair((128, 128), nStars=30, nTransients=3, nVariables=4, seed=11)
    b = simulatePair((128, 128), nStars=30, nTransients=3, nVariables=4, seed=11)
    for name in ("template", "science"):
        for plane in ("image", "mask", "variance"):
            np.testing.assert_array_equal(
                getattr(getattr(a, name), plane), getattr(getattr(b, name), plane)
            )
    np.testing.assert_array_equal(a.stars, b.stars)
    np.testing.assert_array_equal(a.transients, b.transients)

    other = simulatePair((128, 128), nStars=30, nTransients=3, nVariables=4, seed=12)
    assert not np.array_equal(other.stars["x"], a.stars["x"])

    # The star list does not depend on the noise, the PSFs, the transients or the variables.
    c = simulatePair(
        (128, 128),
        nStars=30,
        seed=11,
        templateSkySigma=5.0,
        scienceSkySigma=1.0,
        scienceSigma=3.0,
        nTransients=0,
    )
    for field in ("x", "y", "flux"):
        np.testing.assert_array_equal(c.stars[field], a.stars[field])
    # And more stars extend the list: the first 30 of 60 are the same.
    d = simulatePair((128, 128), nStars=60, seed=11, nTransients=0)
    np.testing.assert_array_equal(d.stars[["x", "y", "flux"]][:30], a.stars[["x", "y", "flux"]])
    # Changing only the noise leaves the noise-free images unchanged.
    np.testing.assert_array_equal(
        simulatePair((128, 128), nStars=30, seed=11, nTransients=0).truth.templateModel,
        simulatePair(
            (128, 128), nStars=30, seed=11, nTransients=0, templateSkySigma=9.0
        ).truth.templateModel,
    )


def test_star_flux_in_science_is_flux_scale_times_template() -> None:
    sim = simulatePair(
        (512, 512), nStars=40, nTransients=0, nVariables=6, fluxScale=1.25, seed=5, **NOISELESS
    )
    half = 15
    stars = sim.stars
    # Isolated stars whose square stamp lies inside the image: a neighbour's light reaches
    # a stamp only from within half*sqrt(2) + 6 sigma_s (< 40 px).
    ok = (
        (stars["nearestDistance"] > 40)
        & (stars["x"] >= half)
        & (stars["x"] < 511 - half)
        & (stars["y"] >= half)
        & (stars["y"] < 511 - half)
    )
    assert ok.sum() >= 10
    assert stars["variable"].sum() == 6
    for star in stars[ok]:
        ix, iy = round(star["x"]), round(star["y"])
        sl = (slice(iy - half, iy + half + 1), slice(ix - half, ix + half + 1))
        templateFlux = sim.truth.templateModel[sl].sum()
        scienceFlux = sim.truth.scienceModel[sl].sum()
        # The stamp edges are >= 15.5 px from the centre, >= 5.5 sigma of the widest science
        # PSF (2.8): the light outside the square is < 4 Phi(-5.5) ~ 8e-8 of the flux.
        np.testing.assert_allclose(templateFlux, star["flux"], rtol=2e-7)
        np.testing.assert_allclose(scienceFlux, star["scienceFlux"], rtol=2e-7)
        if not star["variable"]:
            assert star["scienceFlux"] == pytest.approx(1.25 * star["flux"], rel=1e-15)
    factor = stars["scienceFlux"] / (1.25 * stars["flux"])
    magnitude = np.exp(np.abs(np.log(factor[stars["variable"]])))
    # Variable factors come from the default range [1.5, 3] or its inverse (rounding only).
    assert np.all((magnitude >= 1.5 - 1e-12) & (magnitude <= 3.0 + 1e-12))
    # Variables are chosen among the stars at least as bright as the median.
    assert np.all(stars["flux"][stars["variable"]] >= np.median(stars["flux"]))


def test_background_recovered_from_star_free_pixels() -> None:
    background = (50.0, 0.01, -0.005)
    sim = simulatePair((256, 256), nStars=30, nTransients=0, seed=7, xy0=(300, 100))
    y, x = np.mgrid[100:356, 300:556].astype(float)
    near = np.zeros(x.shape, dtype=bool)
    for star in sim.stars:
        near |= (x - star["x"]) ** 2 + (y - star["y"]) ** 2 < 30.0**2
    free = ~near
    assert free.sum() > 10000
    # Noise-free: S - fluxScale T is exactly b(x, y) where star light is negligible (> 30 px
    # = 10 sigma from every star); float32 models round at ~1e-7 of the ~175 count level.
    diffModel = sim.truth.scienceModel.astype(float) - 1.25 * sim.truth.templateModel
    np.testing.assert_allclose(diffModel[free], sim.truth.background(x[free], y[free]), atol=1e-4)
    np.testing.assert_allclose(
        sim.truth.background(x, y), background[0] + background[1] * x + background[2] * y
    )
    # Noisy: a least-squares plane through S - fluxScale T agrees with the truth within the
    # statistical errors it implies (5 sigma: a chance failure is < 1e-6 per coefficient).
    d = sim.science.image.astype(float) - 1.25 * sim.template.image
    design = np.stack([np.ones(free.sum()), x[free], y[free]], axis=1)
    coeffs, *_ = np.linalg.lstsq(design, d[free], rcond=None)
    pixelSigma = math.sqrt(8.0**2 + (1.25 * 2.0) ** 2)
    errors = pixelSigma * np.sqrt(np.diag(np.linalg.inv(design.T @ design)))
    assert np.all(np.abs(coeffs - background) < 5 * errors), (coeffs, errors)


@pytest.mark.parametrize(
    ("scienceSigma", "expected"),
    [
        ((2.2, 2.8), None),  # round, sigma linear in x
        (lambda x, y: (2.4 + 0 * x, 1.7 + 0 * x, 0.6), (2.4, 1.7, 0.6)),  # rotated elliptical
        (lambda x, y: (2.4 + 0 * x, 1.7 + 0 * x, 0.0), (2.4, 1.7, 0.0)),  # axis-aligned
    ],
)
def test_science_psf_second_moments(scienceSigma: object, expected: object) -> None:
    sim = simulatePair(
        (128, 128),
        nStars=0,
        nTransients=1,
        transientFlux=1e5,
        scienceSigma=scienceSigma,
        seed=2,
        **NOISELESS,
    )
    (xt, yt, ft) = sim.transients[0]
    image = sim.truth.scienceModel
    xc, yc, mxx, myy, mxy = moments(image)
    if expected is None:
        s = 2.2 + 0.6 * xt / 127
        cxx, cyy, cxy = s * s, s * s, 0.0
    else:
        sx, sy, th = expected
        c, sn = math.cos(th), math.sin(th)
        cxx = sx**2 * c**2 + sy**2 * sn**2
        cyy = sx**2 * sn**2 + sy**2 * c**2
        cxy = (sx**2 - sy**2) * sn * c
    # Pixel integration adds the unit box's variance 1/12 to each axis; the discrete moments
    # of the pixel values are then exact up to aliasing (exp(-2 pi^2 sigma^2) < 1e-20) and
    # the 6-sigma stamp truncation (~1e-8 in M). The rotated PSF is sampled on 3x3 sub-pixels
    # with a covariance corrected to make these moments exact as well.
    assert image.sum() == pytest.approx(ft, rel=1e-7)
    np.testing.assert_allclose([xc, yc], [xt, yt], atol=1e-6)
    np.testing.assert_allclose(
        [mxx, myy, mxy], [cxx + 1 / 12, cyy + 1 / 12, cxy], rtol=1e-6, atol=1e-6
    )


def test_rendering_matches_analytic_pixel_integrals() -> None:
    # A round PSF (erf path) against an independent erf product.
    psf = GaussianPsfModel(1.6)
    image = psf.computeImage(40.3, 17.8, size=31)
    reference = erfImage(15 + 0.3, 15 - 0.2, 1.6, 31)
    np.testing.assert_allclose(image, reference, rtol=0, atol=1e-15)  # the same integrals
    # The sub-pixel sampled path (a tiny rotation forces it) against the exact axis-aligned
    # one: the comb-versus-box difference is ~2e-5 of the peak at sigma = 1 and smaller for
    # wider PSFs (3e-6 at sigma ~ 2).
    for sx, sy in ((1.0, 1.0), (2.0, 1.5)):
        sampled = GaussianPsfModel.elliptical(sx, sy, 1e-9).computeImage(3.4, -2.1, size=25)
        exact = GaussianPsfModel.elliptical(sx, sy, 0.0).computeImage(3.4, -2.1, size=25)
        assert np.abs(sampled - exact).max() < 3e-5 * exact.max()
        assert sampled.sum() == pytest.approx(1.0, abs=1e-9)  # 6-sigma stamp: < 1e-8 lost


def test_matching_kernel_turns_template_star_into_science_star() -> None:
    sim = simulatePair((512, 512), nStars=0, nTransients=0, fluxScale=1.25, seed=1)
    truth = sim.truth
    for x, y in ((0.0, 0.0), (255.3, 100.6), (511.0, 511.0)):
        sigmaS = 2.2 + 0.6 * x / 511
        assert truth.kernelSum(x, y) == 1.25
        np.testing.assert_allclose(
            truth.matchingKernelSigma(x, y), math.sqrt(sigmaS**2 - 1.6**2), rtol=1e-12
        )  # analytic formula, rounding only
        template = truth.templatePsf.computeImage(x, y, size=61)
        science = truth.sciencePsf.computeImage(x, y, size=61)
        kernel = truth.matchingKernelImage(x, y, 31)
        assert kernel.shape == (31, 31)
        # A 31-pixel stamp holds > 6.5 sigma of the widest kernel (2.3): the sum is exact to
        # ~1e-10.
        assert kernel.sum() == pytest.approx(1.25, rel=1e-9)
        matched = scipy.signal.convolve(template, kernel, mode="same")[15:-15, 15:-15]
        # Sampling the kernel at integer offsets is a Riemann sum of the continuous
        # convolution, with aliasing error exp(-2 pi^2 sigma_g^2) ~ 1e-9 of the peak here.
        np.testing.assert_allclose(
            matched, 1.25 * science[15:-15, 15:-15], rtol=0, atol=1e-7 * science.max()
        )
    np.testing.assert_array_equal(
        truth.kernelSum(np.zeros(4), np.ones((3, 1))), np.full((3, 4), 1.25)
    )


def test_matching_kernel_of_elliptical_and_deconvolution_cases() -> None:
    rotated = GaussianPsfModel.elliptical(2.6, 2.0, 0.5)
    sim = simulatePair((64, 64), nStars=0, nTransients=0, scienceSigma=rotated, fluxScale=0.8)
    template = sim.truth.templatePsf.computeImage(30.0, 30.0, size=61)
    science = rotated.computeImage(30.0, 30.0, size=61)
    kernel = sim.truth.matchingKernelImage(30.0, 30.0, 31)
    matched = scipy.signal.convolve(template, kernel, mode="same")[15:-15, 15:-15]
    # The rotated science PSF is rendered on 3x3 sub-pixels (~3e-6 of the peak at these
    # sigmas); the sampled kernel adds ~1e-6 (sigma_k >= 1.2).
    np.testing.assert_allclose(matched, 0.8 * science[15:-15, 15:-15], atol=2e-5 * science.max())
    # sigma = det(C_s - C_t)^(1/4) for elliptical PSFs.
    cxx, cyy, cxy = rotated.getCovariance(0.0, 0.0)
    det = (cxx - 1.6**2) * (cyy - 1.6**2) - cxy**2
    assert sim.truth.matchingKernelSigma(1.0, 2.0) == pytest.approx(det**0.25, rel=1e-12)

    # Equal PSFs: a delta function of weight fluxScale.
    same = simulatePair((64, 64), nStars=0, nTransients=0, scienceSigma=1.6, fluxScale=1.5)
    delta = np.zeros((7, 7))
    delta[3, 3] = 1.5
    np.testing.assert_allclose(same.truth.matchingKernelImage(5.0, 5.0, 7), delta, atol=1e-12)

    # A narrower science PSF is allowed (deconvolution); no Gaussian kernel matches it.
    narrow = simulatePair((64, 64), nStars=10, nTransients=1, scienceSigma=1.2)
    assert math.isnan(narrow.truth.matchingKernelSigma(3.0, 4.0))
    with pytest.raises(pm.InvalidInputError, match="narrower than the template"):
        narrow.truth.matchingKernelImage(3.0, 4.0, 21)
    with pytest.raises(pm.InvalidInputError, match="size: expected a positive odd"):
        sim.truth.matchingKernelImage(3.0, 4.0, 20)


def test_variance_plane_is_the_variance_of_the_noise() -> None:
    sim = simulatePair((256, 256), nStars=60, nTransients=4, gain=0.5, seed=9, templateSkySigma=3.0)
    for image, model in (
        (sim.template, sim.truth.templateModel),
        (sim.science, sim.truth.scienceModel),
    ):
        z = (image.image.astype(float) - model) / np.sqrt(image.variance)
        n = z.size
        # Unit normal deviates: the mean has error 1/sqrt(N), the variance sqrt(2/N); allow
        # 5 of these (a chance failure < 1e-6).
        assert abs(z.mean()) < 5 / math.sqrt(n)
        assert abs(z.var() - 1) < 5 * math.sqrt(2 / n)
        # The source term: where it dominates the sky variance, the noise still matches.
        bright = image.variance > 4 * image.variance.min()
        nb = int(bright.sum())
        assert nb > 500
        assert abs(z[bright].var() - 1) < 5 * math.sqrt(2 / nb)
    # Variance = sky sigma^2 + sources / gain, from the noise-free sources.
    sky = sim.science.variance.min()
    assert sky == pytest.approx(64.0, rel=1e-6)  # float32 of 8^2 exactly
    np.testing.assert_allclose(
        sim.template.variance,
        9.0 + (sim.truth.templateModel - 100.0) / 0.5,
        rtol=1e-5,  # float32 rounding of the model (~1e-7) amplified by 1/gain in the sum
        atol=1e-3,
    )


def test_transients_only_in_science_and_clear_of_stars() -> None:
    fluxes = [1e3, 2e3, 3e3, 4e3, 5e3]
    sim = simulatePair((256, 256), nStars=40, nTransients=5, transientFlux=fluxes, seed=4, edge=8)
    truth = sim.truth
    half = math.ceil(6 * 2.8)  # the science stamp half-width
    expected = np.zeros((256 + 2 * half, 256 + 2 * half))
    for xt, yt, ft in sim.transients:
        assert half + 8 <= xt <= 255 - half - 8 and half + 8 <= yt <= 255 - half - 8
        assert np.hypot(sim.stars["x"] - xt, sim.stars["y"] - yt).min() >= half
        ix, iy = round(xt), round(yt)
        expected[iy : iy + 2 * half + 1, ix : ix + 2 * half + 1] += ft * (
            truth.sciencePsf.computeImage(xt, yt, size=2 * half + 1)
        )
        # The template shows only its sky at the transient: the nearest star is >= 17 px =
        # 10 template sigma away (light < exp(-50) of its peak).
        np.testing.assert_allclose(truth.templateModel[iy - 1 : iy + 2, ix - 1 : ix + 2], 100.0)
    # Without variables the ideal difference holds the transients and nothing else, rendered
    # exactly as the PSF model renders them (float32 rounding: ~1e-7 of the ~500 count peak).
    np.testing.assert_allclose(
        truth.differenceModel, expected[half:-half, half:-half], rtol=0, atol=1e-4
    )
    # Whole stamps lie inside the image, so all the flux is there (6-sigma stamps: 1e-9 lost).
    assert truth.differenceModel.sum(dtype=float) == pytest.approx(sum(fluxes), rel=1e-6)
    np.testing.assert_array_equal(sim.transients["flux"], fluxes)
    dx = sim.transients["x"][:, None] - sim.transients["x"][None, :]
    dy = sim.transients["y"][:, None] - sim.transients["y"][None, :]
    assert np.all(np.hypot(dx, dy)[~np.eye(5, dtype=bool)] >= 2 * half)


def test_nearest_distance_matches_brute_force() -> None:
    sim = simulatePair((300, 200), nStars=150, nTransients=0, seed=8)
    x, y = sim.stars["x"], sim.stars["y"]
    d = np.hypot(x[:, None] - x[None, :], y[:, None] - y[None, :])
    np.fill_diagonal(d, np.inf)
    np.testing.assert_allclose(sim.stars["nearestDistance"], d.min(axis=1), rtol=1e-15)
    one = simulatePair((32, 32), nStars=1, nTransients=0)
    assert one.stars["nearestDistance"][0] == np.inf


def test_saturation_and_edge_masks() -> None:
    # Stars of >= 1e5 peak above 2000 counts in both images (science sigma <= 2.8).
    sim = simulatePair(
        (128, 128),
        nStars=30,
        nTransients=2,
        fluxRange=(1e5, 2e5),
        saturation=3000.0,
        edge=5,
        seed=6,
    )
    for mi in (sim.template, sim.science):
        sat = (mi.mask & SAT) != 0
        assert sat.any()
        interior = np.zeros(mi.image.shape, dtype=bool)
        interior[5:-5, 5:-5] = True
        assert np.all(mi.image[sat & interior] == 3000.0)
        assert np.all(mi.image[interior] <= 3000.0)
        assert np.all((mi.mask[~interior] & EDGE) != 0)
        assert np.all((mi.mask[~interior] & NO_DATA) != 0)
        assert not np.any(mi.mask[interior] & (EDGE | NO_DATA))
        assert np.all(mi.image[~interior] == 0.0)
    plain = simulatePair((128, 128), nStars=30, nTransients=2, seed=6)
    assert not plain.template.mask.any() and not plain.science.mask.any()


def test_psf_model_inputs() -> None:
    psf = GaussianPsfModel.linearInX(2.0, 3.0, xStart=0.0, xEnd=100.0)
    assert psf.getSigma(50.0, 7.0) == pytest.approx(2.5, rel=1e-15)
    sx, sy, th = psf.getParameters(np.array([0.0, 100.0]), 0.0)
    np.testing.assert_array_equal(sx, [2.0, 3.0])
    np.testing.assert_array_equal(th, [0.0, 0.0])
    with pytest.raises(pm.InvalidInputError, match="sigma must be positive"):
        psf.getParameters(-300.0, 0.0)  # extrapolated to a negative sigma
    with pytest.raises(pm.InvalidInputError, match="sigma: expected a number > 0"):
        GaussianPsfModel(-1.0)
    with pytest.raises(pm.InvalidInputError, match="tuple of 2"):
        GaussianPsfModel(lambda x, y: (x, y)).getParameters(1.0, 1.0)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"shape": (10, 10, 3)}, "shape: expected a 2-D shape"),
        ({"shape": 100}, "shape: expected"),
        ({"shape": (0, 10)}, "shape: both dimensions"),
        ({"nStars": -1}, "nStars: expected an integer >= 0"),
        ({"nStars": 2.5}, "nStars: expected an integer"),
        ({"templateSigma": -1.0}, "templateSigma: expected a number > 0"),
        ({"scienceSigma": (2.0, -1.0)}, r"scienceSigma\[1\]: expected a sigma > 0"),
        ({"scienceSigma": (2.0, 2.1, 2.2)}, "scienceSigma: expected a sequence of 2"),
        ({"scienceSigma": "wide"}, "scienceSigma: expected a sigma"),
        ({"scienceSigma": lambda x, y: 0 * x}, "sigma must be positive"),
        ({"fluxScale": 0.0}, "fluxScale: expected a number > 0"),
        ({"fluxScale": math.nan}, "fluxScale: expected a finite number"),
        ({"background": (1.0, 2.0)}, "background: expected a sequence of 3"),
        ({"scienceSkySigma": -1.0}, "scienceSkySigma: expected a number >= 0"),
        ({"gain": 0.0}, "gain: expected a number > 0"),
        ({"fluxRange": (5.0, 1.0)}, "fluxRange: expected 0 < low <= high"),
        ({"nTransients": -2}, "nTransients: expected an integer >= 0"),
        ({"transientFlux": -5.0}, "transientFlux: expected a number > 0"),
        ({"nTransients": 2, "transientFlux": [1.0, 2.0, 3.0]}, "transientFlux: expected one"),
        ({"nVariables": 60}, "nVariables: 60 exceeds the 50"),
        ({"variableFactorRange": (0.5, 2.0)}, "variableFactorRange: expected 1 <= low"),
        ({"saturation": -3.0}, "saturation: expected a number > 0"),
        ({"edge": 64}, "edge: 64 leaves no pixels"),
        ({"dtype": np.int32}, "dtype: expected float32 or float64"),
        ({"xy0": (1.5, 2)}, "xy0: expected two integers"),
        ({"seed": -1}, "seed: expected an integer >= 0"),
        ({"nStars": 2000, "nTransients": 50}, "nTransients: could place only"),
    ],
)
def test_bad_arguments_raise(kwargs: dict[str, object], match: str) -> None:
    args = {"shape": (128, 128), "nStars": 100, "nTransients": 0} | kwargs
    shape = args.pop("shape")
    with pytest.raises(pm.InvalidInputError, match=match):
        simulatePair(shape, **args)  # type: ignore[arg-type]


def test_science_narrower_than_template_is_allowed() -> None:
    sim = simulatePair((64, 64), nStars=5, nTransients=0, templateSigma=2.5, scienceSigma=1.5)
    assert sim.truth.scienceFwhm(0.0, 0.0) < sim.truth.templateFwhm


# --------------------------------------------------------------------------------------------
# compareToTruth


@pytest.fixture(scope="module")
def subtracted() -> tuple[Any, Any]:
    """A small demo-like pair (spatially varying science PSF, 5 transients) and its run."""
    sim = simulatePair(
        (256, 256), nStars=60, seed=1, nTransients=5, transientFlux=np.geomspace(1e4, 4e4, 5)
    )
    return sim, pm.subtract(sim.science, sim.template)


def _apertureSum(image: np.ndarray, x: float, y: float, radius: float, nSub: int = 25) -> float:
    """Sum of ``image`` (origin 0) inside a circle, each pixel weighted by the share of its
    ``nSub × nSub`` sub-pixel centres inside: a brute-force aperture, independent of sep."""
    offsets = (np.arange(nSub) + 0.5) / nSub - 0.5
    total = 0.0
    for iy in range(math.floor(y - radius - 1), math.ceil(y + radius + 1) + 1):
        for ix in range(math.floor(x - radius - 1), math.ceil(x + radius + 1) + 1):
            u = ix + offsets[None, :] - x
            v = iy + offsets[:, None] - y
            share = np.mean(u * u + v * v < radius * radius)
            if share > 0:
                total += share * float(image[iy, ix])
    return total


def test_compare_to_truth_matches_brute_force_measurements(subtracted: tuple[Any, Any]) -> None:
    sim, result = subtracted
    truth = sim.truth
    c = compareToTruth(sim, result)

    # The kernel sum against the true one, the flux scale at every position.
    assert c.kernelSum == result.kernelSum and c.fluxScale == truth.fluxScale == 1.25
    np.testing.assert_allclose(
        c.kernelSumError, result.kernelSum / truth.kernelSum(128.0, 128.0) - 1.0, rtol=1e-12
    )  # the same division: rounding only

    # Sky pixels: usable and farther than 6 sigma of the widest science PSF from the pixel of
    # every source, by brute-force distances from every pixel to every source.
    d = result.difference
    image, variance = d.image.astype(np.float64), d.variance.astype(np.float64)
    bad = pm.Mask.getPlaneBitMask(["NO_DATA", "EDGE", "SAT", "BAD", "CR"])
    usable = np.isfinite(image) & (variance > 0) & ((d.mask & bad) == 0)
    sx = np.concatenate([sim.stars["x"], sim.transients["x"]])
    sy = np.concatenate([sim.stars["y"], sim.transients["y"]])
    radius = 6.0 * float(np.max(truth.sciencePsf.getSigma(sx, sy)))
    yy, xx = np.mgrid[0:256, 0:256]
    dist2 = (xx[:, :, None] - np.rint(sx)) ** 2 + (yy[:, :, None] - np.rint(sy)) ** 2
    sky = usable & np.all(dist2 > radius * radius, axis=2)
    assert c.skyPixels == int(sky.sum())
    z = image[sky] / np.sqrt(variance[sky])
    mad = np.median(np.abs(z - np.median(z))) / scipy.stats.norm.ppf(0.75)
    np.testing.assert_allclose(c.zSigma, mad, rtol=1e-12)  # the same MAD: rounding only
    kept = z
    for _ in range(5):  # 5-sigma clipping about the median, as astropy's sigma_clipped_stats
        keep = np.abs(kept - np.median(kept)) <= 5.0 * np.std(kept)
        if keep.all():
            break
        kept = kept[keep]
    np.testing.assert_allclose(c.zMean, np.mean(kept), atol=1e-12)  # summation order only

    # Transient fluxes: a brute-force aperture of 4 sigma of the local science PSF in D.
    assert c.nTransients == 5 and c.nMeasured == 5
    for k in range(5):
        x, y = sim.transients["x"][k], sim.transients["y"][k]
        r = 4.0 * float(truth.sciencePsf.getSigma(x, y))
        expected = _apertureSum(image, x, y, r)
        # sep samples boundary pixels on 5 x 5 sub-pixels, this sum on 25 x 25: they differ
        # by the noise in a few boundary pixels times a few % of their area, up to 3 counts
        # here (the flux errors are ~200 counts).
        np.testing.assert_allclose(c.transients["measuredFlux"][k], expected, atol=10.0)
        assert c.transients["flux"][k] == sim.transients["flux"][k]
    np.testing.assert_allclose(
        c.transientRatio,
        np.mean(c.transients["measuredFlux"] / c.transients["flux"]),
        rtol=1e-12,
    )  # the mean it reports is of the fluxes it reports


def test_compare_to_truth_of_the_ideal_difference_is_the_aperture_share() -> None:
    # D = the noise-free ideal difference: each transient's flux in a 4-sigma aperture is the
    # share of a pixel-integrated Gaussian inside it, 1 - exp(-8 s²/(s² + 1/12)) for a round
    # one of sigma s (the pixel adds 1/12 px² of variance).
    sim = simulatePair((256, 256), nStars=40, seed=4, nTransients=4, transientFlux=2e4)
    truth = sim.truth
    ideal = pm.MaskedImage(
        truth.differenceModel.astype(np.float64),
        np.zeros((256, 256), dtype=np.int32),
        np.ones((256, 256)),
    )
    c = compareToTruth(sim, SimpleNamespace(kernelSum=1.25, difference=ideal))
    s2 = np.asarray(truth.sciencePsf.getSigma(sim.transients["x"], sim.transients["y"])) ** 2
    share = 1.0 - np.exp(-8.0 * s2 / (s2 + 1.0 / 12.0))
    # The tail of a Gaussian integrated over pixels is not exactly that of a Gaussian of
    # variance s² + 1/12: the share inside differs by 3e-5 to 4e-5 here (a 25 x 25 sub-pixel
    # sum agrees with sep's to 3e-6), of a complement ~4e-4.
    np.testing.assert_allclose(c.transients["measuredFlux"] / 2e4, share, atol=1e-4)
    assert c.kernelSumError == 0.0 and c.kernelSumPassed
    # No noise at all: D/σ is 0 away from the sources (up to the ~1e-12 of a stamp's corners
    # beyond the 6-sigma disc), which the sigma check flags.
    assert abs(c.zMean) < 1e-9 and c.zSigma < 1e-9
    assert c.meanPassed and not c.sigmaPassed and c.transientsPassed
    assert c.nFailed == 1 and not c.passed


def test_compare_to_truth_thresholds(subtracted: tuple[Any, Any]) -> None:
    sim, result = subtracted
    c = compareToTruth(sim, result)
    assert (c.kernelSumTolerance, c.sigmaTolerance, c.meanTolerance, c.transientTolerance) == (
        0.002,
        0.03,
        0.05,
        0.02,
    )  # the demo's, quoted in the README
    loose = compareToTruth(
        sim,
        result,
        kernelSumTolerance=1.0,
        sigmaTolerance=1.0,
        meanTolerance=1.0,
        transientTolerance=1.0,
    )
    assert loose.passed and loose.nFailed == 0
    tight = compareToTruth(
        sim,
        result,
        kernelSumTolerance=0.5 * abs(c.kernelSumError),
        sigmaTolerance=0.5 * abs(c.zSigma - 1.0),
        meanTolerance=0.5 * abs(c.zMean),
        transientTolerance=0.5 * abs(c.transientRatio - 1.0),
    )
    assert not tight.passed and tight.nFailed == 4
    assert tight.zSigma == c.zSigma and tight.transientRatio == c.transientRatio
    with pytest.raises(pm.InvalidInputError, match=r"sigmaTolerance: expected a number > 0"):
        compareToTruth(sim, result, sigmaTolerance=0.0)
