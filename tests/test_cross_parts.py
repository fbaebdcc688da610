# SPDX-License-Identifier: BSD-3-Clause
"""The parts cross-convolution (docs/algorithm.md §7.11) is made of, each against an
independent truth: the composite-PSF simulator (analytic moments), the PSF fields and their
convolution (scipy, brute force), PSFs read from FITS (WebbPSF's layout), PSFs stacked from
stars (the simulation's PSF), the nesting test (Gaussians whose blur is known), and the
decorrelation of a cross-convolved difference (white noise, an analytic PSF, flux)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.signal
from astropy.io import fits

import psfmatch as pm
from psfmatch import _core
from psfmatch._cross import crossKernelBasis
from psfmatch._nesting import assessNesting
from psfmatch._psffield import (
    chebyshevTerms,
    convolveWithField,
    fitPsfField,
    psfFieldFromInput,
    readPsfStamp,
)
from psfmatch._psfstack import measurePsf, measurePsfField
from psfmatch.decorrelate_cross import decorrelateCrossConvolution
from psfmatch.errors import (
    InputFileNotFoundError,
    InsufficientKernelSourcesError,
    InvalidInputError,
)
from psfmatch.simulate import CompositePsfModel, GaussianPsfModel, simulateCompositePair

RNG_SEED = 2323
EDGE = pm.Mask.getPlaneBitMask("EDGE")
NO_DATA = pm.Mask.getPlaneBitMask("NO_DATA")
SAT = pm.Mask.getPlaneBitMask("SAT")


def moments(image: np.ndarray) -> tuple[float, float, float]:
    """Second central moments (Ixx, Iyy, Ixy) of an image about its centroid."""
    ny, nx = image.shape
    y, x = np.mgrid[:ny, :nx].astype(float)
    total = image.sum()
    xc, yc = (image * x).sum() / total, (image * y).sum() / total
    return (
        float((image * (x - xc) ** 2).sum() / total),
        float((image * (y - yc) ** 2).sum() / total),
        float((image * (x - xc) * (y - yc)).sum() / total),
    )


def gaussian(sigma: float, size: int = 31) -> np.ndarray:
    """A pixel-integrated round Gaussian on a size² grid, normalised to unit sum."""
    image = np.asarray(GaussianPsfModel(sigma).computeImage(0.0, 0.0, size=size))
    return image / image.sum()


def masked(image: np.ndarray, variance: Any = 1.0) -> pm.MaskedImage:
    image = np.asarray(image, dtype=np.float64)
    return pm.MaskedImage(
        image, np.zeros(image.shape, dtype=np.int32), np.broadcast_to(variance, image.shape).copy()
    )


# -- the simulator's composite PSFs ---------------------------------------------------------


def test_composite_psf_images_have_the_analytic_moments() -> None:
    psf = CompositePsfModel(
        [(0.7, 1.4, 1.4, 0.0), (0.3, 3.0, 0.9, 0.4)], rotation=math.radians(25.0)
    )
    image = psf.computeKernelImage(size=61)
    assert image.sum() == pytest.approx(1.0, abs=1e-12)
    assert np.unravel_index(np.argmax(image), image.shape) == (30, 30)
    cxx, cyy, cxy = psf.getCovariance()
    ixx, iyy, ixy = moments(image)
    # The pixel adds 1/12 px² per axis; the rotated component's sub-pixel sampling keeps the
    # second moments exact, and 61 px hold the profile to < 1e-9 of its flux.
    np.testing.assert_allclose([ixx, iyy, ixy], [cxx + 1 / 12, cyy + 1 / 12, cxy], atol=2e-6)


def test_rotations_of_composite_psfs() -> None:
    elongated = CompositePsfModel.elongated(2.0, 1.0)
    turned = elongated.rotated(math.pi / 2)
    np.testing.assert_allclose(
        turned.computeKernelImage(size=31), elongated.computeKernelImage(size=31).T, atol=1e-12
    )
    # Six spikes are six-fold symmetric: their second moments are round, and a turn by 60°
    # gives the same image (to the sub-pixel sampling of rotated components, 1e-4 of the peak).
    spiked = CompositePsfModel.spiked(1.2, spikeWidth=1.0, rotation=0.3)
    ixx, iyy, ixy = moments(spiked.computeKernelImage())
    assert ixx == pytest.approx(iyy, rel=1e-6) and abs(ixy) < 1e-6
    sixty = spiked.rotated(math.pi / 3).computeKernelImage()
    image = spiked.computeKernelImage()
    assert np.abs(sixty - image).max() < 1e-4 * image.max()
    # The roll angles, 41° and 251°: the spikes interleave, 30° apart.
    a = CompositePsfModel.spiked(1.2, rotation=math.radians(41)).computeKernelImage()
    b = CompositePsfModel.spiked(1.2, rotation=math.radians(251)).computeKernelImage()
    # (Where one has a spike the other has none: 4 % of the peak at 4 pixels out.)
    assert np.abs(a - b).max() > 0.02 * a.max()


def test_composite_psf_errors() -> None:
    with pytest.raises(InvalidInputError, match="components"):
        CompositePsfModel([])
    with pytest.raises(InvalidInputError, match=r"components\[0\] sigmaY"):
        CompositePsfModel([(1.0, 1.0, -1.0, 0.0)])
    with pytest.raises(InvalidInputError, match="nSpikes: expected an even number"):
        CompositePsfModel.spiked(1.0, nSpikes=5)
    with pytest.raises(InvalidInputError, match="spikeFraction"):
        CompositePsfModel.spiked(1.0, spikeFraction=1.0)
    with pytest.raises(InvalidInputError, match="sciencePsf: expected a CompositePsfModel"):
        simulateCompositePair(
            (64, 64), templatePsf=CompositePsfModel.elongated(1, 1), sciencePsf=1.0
        )  # type: ignore[arg-type]


def test_composite_pair_holds_its_truth() -> None:
    psfT = CompositePsfModel.elongated(1.6, 1.1)
    psfS = psfT.rotated(1.0)
    kw: dict[str, Any] = dict(templatePsf=psfT, sciencePsf=psfS, nStars=30, seed=4, nTransients=2)
    quiet = simulateCompositePair(
        (200, 200), templateSkySigma=0, scienceSkySigma=0, gain=math.inf, dtype=np.float64, **kw
    )
    noisy = simulateCompositePair((200, 200), **kw)
    np.testing.assert_array_equal(quiet.stars, noisy.stars)
    # Noise-free: the science image minus its sky is fluxScale × the template's stars through
    # its own PSF plus the transients, to the stamps' truncation at the border (a star's
    # stamp reaches 6σ, so the totals agree to the flux of the stars leaving the image).
    yy, xx = np.mgrid[:200, :200]
    b0, bx, by = quiet.truth.background
    sky = 1.25 * 100.0 + b0 + bx * xx + by * yy
    inside = (quiet.stars["x"] > 15) & (quiet.stars["x"] < 185)
    inside &= (quiet.stars["y"] > 15) & (quiet.stars["y"] < 185)
    for star in quiet.stars[inside][:5]:
        ix, iy = round(star["x"]), round(star["y"])
        box = np.s_[iy - 10 : iy + 11, ix - 10 : ix + 11]
        others = [
            s
            for s in quiet.stars
            if s is not star and abs(s["x"] - ix) < 25 and abs(s["y"] - iy) < 25
        ]
        if others:
            continue
        assert (quiet.template.image[box] - 100.0).sum() == pytest.approx(star["flux"], rel=1e-6)
        assert (quiet.science.image[box] - sky[box]).sum() == pytest.approx(
            1.25 * star["flux"], rel=1e-6
        )
    np.testing.assert_allclose(quiet.truth.differenceModel.sum(), 2 * 5e3, rtol=1e-6)
    # The variance planes are the noise's: sky² + sources / gain.
    z = (noisy.science.image - quiet.science.image) / np.sqrt(noisy.science.variance)
    assert float(np.std(z)) == pytest.approx(1.0, abs=0.01)  # 4e4 pixels: ±0.4 %


# -- PSF fields -----------------------------------------------------------------------------


def test_chebyshev_terms_are_the_cores() -> None:
    # The fields' spatial terms, written in numpy, against the compiled SpatialFunction's.
    box = _core.Box2I((3, -2), (90, 70))
    edges = (2.5, 92.5, -2.5, 67.5)
    for order in (0, 1, 2, 3):
        function = _core.SpatialFunction(_core.SpatialModelType.CHEBYSHEV1, order, box)
        for x, y in ((3.0, -2.0), (50.2, 30.7), (92.0, 67.0)):
            ours = np.array([float(t) for t in chebyshevTerms(x, y, order, edges)])
            np.testing.assert_allclose(ours, np.ravel(function.terms(x, y)), atol=1e-13)


def test_constant_field_convolution_is_scipys(rng: np.random.Generator) -> None:
    psf = gaussian(1.7, 15) + 0.3 * np.roll(gaussian(0.8, 15), 2, axis=1)
    psf /= psf.sum()
    image = rng.normal(100.0, 5.0, (80, 90))
    variance = rng.uniform(20.0, 30.0, image.shape)
    mi = pm.MaskedImage(image, np.zeros(image.shape, dtype=np.int32), variance)
    field = psfFieldFromInput(psf, mi, "psf", 25)
    assert field.order == 0 and field.source == "given"
    out = convolveWithField(mi, field, badBits=0)
    inner = np.s_[7:-7, 7:-7]
    # True convolution, as scipy's; FFT rounding is ~1e-13 of the values.
    np.testing.assert_allclose(
        out.image[inner], scipy.signal.convolve(image, psf, mode="same")[inner], rtol=1e-11
    )
    np.testing.assert_allclose(
        out.variance[inner], scipy.signal.convolve(variance, psf**2, mode="same")[inner], rtol=1e-11
    )
    # The border the PSF cannot reach: copies with EDGE, as convolve(doCopyEdge=True).
    assert np.all(out.mask[:7] & EDGE) and not np.any(out.mask[inner] & EDGE)
    np.testing.assert_array_equal(out.image[:7], image[:7])


def test_masked_pixels_are_filled_and_their_bits_grown(rng: np.random.Generator) -> None:
    image = rng.normal(0.0, 1.0, (60, 60))
    image[30, 30] = 1e9  # a saturated pixel's value must reach nothing
    mi = masked(image)
    mi.mask[30, 30] = SAT
    psf = gaussian(1.5, 13)
    out = convolveWithField(mi, psfFieldFromInput(psf, mi, "psf", 25), badBits=SAT)
    filled = image.copy()
    filled[30, 30] = np.mean(np.delete(image.ravel(), 30 * 60 + 30))
    inner = np.s_[6:-6, 6:-6]
    np.testing.assert_allclose(
        out.image[inner],
        scipy.signal.convolve(filled, psf, mode="same")[inner],
        rtol=1e-10,
        atol=1e-12,
    )
    # SAT spreads over the PSF's footprint: where it holds ≥ 1 % of its peak.
    footprint = psf >= 0.01 * psf.max()
    grown = np.zeros(image.shape, dtype=bool)
    grown[24:37, 24:37] = footprint
    np.testing.assert_array_equal((out.mask & SAT) != 0, grown)


def test_varying_field_convolution_is_the_brute_force_sum(rng: np.random.Generator) -> None:
    # A field of order 1 (a PSF widening along x): each output pixel is Σ P_p(p − q) I(q),
    # with the PSF evaluated at the output pixel p, as the compiled spatial convolution does.
    n, half = 40, 5
    mi = masked(rng.normal(0.0, 1.0, (n, n)))
    psf = pm.VaryingPsf(lambda x, y: gaussian(1.0 + 0.02 * x, 2 * half + 1), 11, 11)
    field = psfFieldFromInput(psf, mi, "psf", 25, order=1)
    assert field.order == 1
    out = convolveWithField(mi, field, badBits=0)
    for py, px in ((half, half), (20, 7), (n - half - 1, n - half - 1), (17, 31)):
        terms = np.array(chebyshevTerms(float(px), float(py), 1, field.bbox), dtype=float)
        p = np.tensordot(terms, field.basis, axes=1)
        window = mi.image[py - half : py + half + 1, px - half : px + half + 1]
        assert out.image[py, px] == pytest.approx(float((p[::-1, ::-1] * window).sum()), abs=1e-10)


def test_fields_fitted_to_samples() -> None:
    # A quadratic variation is fitted exactly by order 2; the field's images sum to 1.
    xs, ys = np.meshgrid(np.linspace(0, 100, 4), np.linspace(0, 80, 4))
    xs, ys = xs.ravel(), ys.ravel()
    base, other = gaussian(1.5, 11), gaussian(0.7, 11)
    # Unit sums by construction (a normalisation would make the variation rational).
    images = np.array(
        [
            base + (1e-4 * (x - 50) ** 2 + 1e-5 * x * y) * (other - base)
            for x, y in zip(xs, ys, strict=True)
        ]
    )
    field = fitPsfField(images, xs, ys, 2, (-0.5, 100.5, -0.5, 80.5), "given")
    for k in (0, 5, 10, 15):
        np.testing.assert_allclose(field.imageAt(xs[k], ys[k]), images[k], atol=1e-12)


# -- PSFs from the user ---------------------------------------------------------------------


def test_psf_inputs(tmp_path: Path) -> None:
    mi = masked(np.zeros((100, 100)))
    psf = gaussian(2.0, 41)
    # An array is cut to psfMaxHalfWidth and renormalised.
    field = psfFieldFromInput(psf * 3.0, mi, "sciencePsf", 10)
    assert field.shape == (21, 21)
    np.testing.assert_allclose(field.centreImage(), psf[10:31, 10:31] / psf[10:31, 10:31].sum())
    # A FITS image: the first 2-D HDU.
    path = tmp_path / "psf.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(psf.astype(np.float32))]).writeto(path)
    np.testing.assert_allclose(readPsfStamp(path, "p"), psf, rtol=1e-6)
    # A WebbPSF file: OVERSAMP (4× oversampled) first, then DET_SAMP; the detector-sampled one
    # is the one at the image's pixel scale.
    webbpsf = tmp_path / "webbpsf.fits"
    over = fits.PrimaryHDU(np.ones((81, 81)))
    over.header["EXTNAME"] = "OVERSAMP"
    over.header["OVERSAMP"] = 4
    det = fits.ImageHDU(psf, name="DET_SAMP")
    det.header["OVERSAMP"] = 4
    det.header["DET_SAMP"] = 4
    fits.HDUList([over, det]).writeto(webbpsf)
    np.testing.assert_allclose(readPsfStamp(webbpsf, "p"), psf)
    oversampledOnly = tmp_path / "oversampled.fits"
    fits.HDUList([over]).writeto(oversampledOnly)
    with pytest.raises(InvalidInputError, match="oversampled 4 times"):
        readPsfStamp(oversampledOnly, "sciencePsf")
    with pytest.raises(InputFileNotFoundError, match="sciencePsf: no such file"):
        psfFieldFromInput(tmp_path / "nowhere.fits", mi, "sciencePsf", 25)
    with pytest.raises(InvalidInputError, match=r"templatePsf: expected an odd-sized 2-D image"):
        psfFieldFromInput(np.ones((10, 11)), mi, "templatePsf", 25)
    with pytest.raises(InvalidInputError, match="positive sum"):
        psfFieldFromInput(-psf, mi, "templatePsf", 25)
    # A PSF object the same everywhere is a constant field; one that varies, a field of order 2.
    assert psfFieldFromInput(pm.GaussianPsf(21, 21, 1.5), mi, "p", 25).order == 0
    varying = pm.VaryingPsf(lambda x, y: gaussian(1.2 + 0.005 * y, 21), 21, 21)
    field = psfFieldFromInput(varying, mi, "p", 25)
    assert field.order == 2
    for x, y in ((20.0, 10.0), (80.0, 90.0)):
        truth = gaussian(1.2 + 0.005 * y, 21)
        # Sampled on 4 × 4 positions and fitted by a quadratic, which misses the cubic part
        # of a Gaussian widening by 0.5 px over the box: ~2.5e-3 of the peak.
        assert np.abs(field.imageAt(x, y) - truth).max() < 5e-3 * truth.max()


def test_a_fits_psf_through_subtract(tmp_path: Path) -> None:
    psfT = CompositePsfModel.elongated(1.8, 1.2)
    psfS = psfT.rotated(math.pi / 2)
    sim = simulateCompositePair((384, 384), templatePsf=psfT, sciencePsf=psfS, nStars=120, seed=9)
    paths = {}
    for name, psf in (("science", psfS), ("template", psfT)):
        paths[name] = tmp_path / f"{name}_psf.fits"
        fits.PrimaryHDU(psf.computeKernelImage(size=25)).writeto(paths[name])
    result = pm.subtract(
        sim.science,
        sim.template,
        mode="crossConvolve",
        sciencePsf=paths["science"],
        templatePsf=str(paths["template"]),
    )
    assert result.metadata["crossSciencePsfSource"] == "given"
    expected = scipy.signal.convolve(
        psfS.computeKernelImage(size=25), psfT.computeKernelImage(size=25)
    )
    assert result.convolved == "CrossConvolution"
    # Without decorrelation D's PSF is P_S ⊗ P_T of the given images exactly.
    config = pm.ImagePsfMatchConfig()
    config.doDecorrelation = False
    raw = pm.subtract(
        sim.science,
        sim.template,
        mode="crossConvolve",
        config=config,
        sciencePsf=paths["science"],
        templatePsf=paths["template"],
    )
    np.testing.assert_allclose(raw.differencePsf, expected, atol=1e-12)
    assert abs(raw.kernelSum / 1.25 - 1) < 2e-3


# -- PSFs measured from the stars -----------------------------------------------------------


@pytest.fixture(scope="module")
def spikedPair() -> Any:
    psfT = CompositePsfModel.spiked(1.2, spikeWidth=1.0, rotation=math.radians(41))
    psfS = psfT.rotated(math.radians(210))
    return simulateCompositePair(
        (768, 768), templatePsf=psfT, sciencePsf=psfS, nStars=350, seed=31, minSeparation=30.0
    )


def test_stacked_psfs_are_the_simulated_ones(spikedPair: Any) -> None:
    stars = spikedPair.stars[np.argsort(-spikedPair.stars["flux"])]
    half = 14
    for mi, truth in (
        (spikedPair.template, spikedPair.truth.templatePsf),
        (spikedPair.science, spikedPair.truth.sciencePsf),
    ):
        measured = measurePsf(mi, stars["x"], stars["y"], half, 3.0, 0, maxStars=150)
        assert measured.nStars >= 100
        image = truth.computeKernelImage(size=2 * half + 1)
        image /= image.sum()
        assert measured.image.sum() == pytest.approx(1.0, abs=1e-12)
        # What the stars' pixels cannot hold (the PSF's power beyond the Nyquist frequency,
        # ~3e-4 of the flux for a core of σ 1.2 px, ~5e-3 of the peak) and the stack's noise
        # (~1e-3 of the peak) bound the difference: 1 % of the peak. The second moments
        # weigh the spikes' far ends by r², where the stars' sky errors are: 3 % (measured
        # 1-1.5 %; the cross-convolution's kernel absorbs a width difference).
        assert np.abs(measured.image - image).max() < 0.01 * image.max()
        np.testing.assert_allclose(moments(measured.image), moments(image), rtol=0.03, atol=0.02)
        # The jackknife noise of the stack, where it is not zero, explains the difference
        # within a few of its σ.
        z = (measured.image - image) / np.sqrt(measured.variance)
        assert float(np.sqrt(np.mean(z**2))) < 4


def test_psf_regions_follow_a_varying_psf() -> None:
    # A PSF widening from σ 1.4 to 2.0 across the image: a 3 × 3 grid of stacked PSFs, fitted
    # by a field of order 2, follows it where one PSF for the whole image cannot.
    n = 1024
    sim = pm.simulate.simulatePair(
        (n, n), templateSigma=1.5, scienceSigma=(1.4, 2.0), nStars=700, seed=12
    )
    stars = sim.stars[(sim.stars["nearestDistance"] > 20) & ~sim.stars["variable"]]
    stars = stars[np.argsort(-stars["flux"])]
    field, regions = measurePsfField(sim.science, stars["x"], stars["y"], 10, 4.0, 0, regions=3)
    single, _ = measurePsfField(sim.science, stars["x"], stars["y"], 10, 4.0, 0, regions=1)
    assert len(regions) == 9 and field.order == 2 and single.order == 0
    assert all(r.nStars >= 20 for r in regions)
    for x in (170.0, 512.0, 850.0):
        truth = sim.truth.sciencePsf.computeImage(x, 512.0, size=21)
        truth /= truth.sum()
        # Each region's ~30 stars leave ~3-6 % of the peak of noise in its stack (the
        # single stack, from 270 stars, ~2 %); the single PSF is 20 % off at the sides.
        assert np.abs(field.imageAt(x, 512.0) - truth).max() < 0.08 * truth.max()
        if x != 512.0:
            assert np.abs(single.imageAt(x, 512.0) - truth).max() > 0.15 * truth.max()


def test_too_few_stars_for_a_psf() -> None:
    mi = masked(np.random.default_rng(1).normal(0.0, 1.0, (100, 100)))
    with pytest.raises(
        InsufficientKernelSourcesError, match="too few isolated stars to measure a PSF"
    ):
        measurePsf(mi, np.array([50.0]), np.array([50.0]), 10, 3.0, 0)


# -- the nesting test -----------------------------------------------------------------------


def _elliptical(sx: float, sy: float, theta: float) -> np.ndarray:
    return np.asarray(GaussianPsfModel.elliptical(sx, sy, theta).computeImage(0.0, 0.0, size=41))


@pytest.mark.parametrize(
    ("science", "template", "nested"),
    [
        (gaussian(2.2, 41), gaussian(1.6, 41), True),  # ground: the science broader
        (gaussian(1.6, 41), gaussian(2.2, 41), True),  # the template broader
        (gaussian(1.6, 41), gaussian(1.6, 41), True),  # the same PSF
        (_elliptical(2.6, 2.2, 0.5), gaussian(1.6, 41), True),  # elliptical around round
        (_elliptical(2.2, 1.4, math.pi / 2), _elliptical(2.2, 1.4, 0.0), False),  # crossed
        (_elliptical(2.0, 1.6, math.pi / 4), _elliptical(2.0, 1.6, 0.0), False),
        (
            CompositePsfModel.spiked(
                1.2, spikeWidth=1.0, rotation=math.radians(251)
            ).computeKernelImage(size=41),
            CompositePsfModel.spiked(
                1.2, spikeWidth=1.0, rotation=math.radians(41)
            ).computeKernelImage(size=41),
            False,
        ),
    ],
)
def test_nesting_of_known_psfs(science: np.ndarray, template: np.ndarray, nested: bool) -> None:
    test = assessNesting(science, template)
    assert test.nested is nested
    if nested:
        # A Gaussian blur of a Gaussian is exact up to the pixel; the fit stops once it is
        # below a quarter of the 2 % threshold.
        assert min(test.misfitScienceFromTemplate, test.misfitTemplateFromScience) <= 0.005
    else:
        assert min(test.misfitScienceFromTemplate, test.misfitTemplateFromScience) > 0.04
        assert test.reason().startswith("PSFs not nested")


@pytest.mark.parametrize(
    ("source", "target", "half"),
    [
        (gaussian(1.6, 41), gaussian(2.8, 41), 7),
        (gaussian(2.2, 41), gaussian(1.6, 41), 2),
        (_elliptical(2.2, 1.4, 0.0), _elliptical(2.6, 2.2, 0.5), 6),
    ],
)
def test_the_non_negative_fit_is_scipys(source: np.ndarray, target: np.ndarray, half: int) -> None:
    from scipy.optimize import nnls

    from psfmatch._nesting import _nonNegativeFit

    kernel, residual = _nonNegativeFit(source, target, half)
    n = source.shape[0]
    padded = np.zeros((n + 2 * half, n + 2 * half))
    padded[half : half + n, half : half + n] = source
    design = np.array(
        [
            padded[half - dy : half - dy + n, half - dx : half - dx + n].ravel()
            for dy in range(-half, half + 1)
            for dx in range(-half, half + 1)
        ]
    ).T
    exact = nnls(design, target.ravel(), maxiter=50 * design.shape[1])[1]
    assert kernel.min() >= 0.0
    # The accelerated gradient approaches the minimum from above, to 1e-4 of the norm.
    assert (
        exact / np.linalg.norm(target) - 1e-12 <= residual < exact / np.linalg.norm(target) + 1e-4
    )


def test_nesting_allows_for_the_noise_of_measured_psfs(rng: np.random.Generator) -> None:
    # Two equal PSFs with noise of 1 % of the peak per pixel: the residual is the noise's,
    # the misfit beyond it ~0, and they are nested; the same noise on crossed ellipses does
    # not hide a 30 % misfit.
    noise = (0.01 * gaussian(1.6, 41).max()) ** 2 * np.ones((41, 41))
    a = gaussian(1.6, 41) + rng.normal(0.0, math.sqrt(noise[0, 0]), (41, 41))
    b = gaussian(1.6, 41) + rng.normal(0.0, math.sqrt(noise[0, 0]), (41, 41))
    test = assessNesting(a, b, noise, noise)
    assert test.residualScienceFromTemplate > 0.05  # the noise, not a misfit
    assert test.nested
    crossed = assessNesting(
        _elliptical(2.2, 1.4, math.pi / 2), _elliptical(2.2, 1.4, 0.0), noise, noise
    )
    assert not crossed.nested


def test_pixels_without_a_variance_estimate_do_not_blind_the_nesting_test() -> None:
    # A stacked PSF has +inf variance where fewer than two stars count (at its edges, among
    # masked neighbours). Such pixels are left out of the noise: with them the noise was
    # infinite, no misfit was significant, crossed ellipses were called nested (as on a
    # default 4096² run) and the metadata held an inf that no FITS card can carry.
    noise = (0.001 * gaussian(1.6, 41).max()) ** 2 * np.ones((41, 41))
    holed = noise.copy()
    holed[0, :5] = np.inf
    a, b = _elliptical(2.2, 1.4, math.pi / 2), _elliptical(2.2, 1.4, 0.0)
    crossed = assessNesting(a, b, holed, holed)
    assert math.isfinite(crossed.noiseScienceFromTemplate)
    assert math.isfinite(crossed.noiseTemplateFromScience)
    assert not crossed.nested
    # The noise is that of the finite pixels: within 1 % of the unholed noise (5 of 1681
    # pixels, each as noisy as the others, are left out).
    whole = assessNesting(a, b, noise, noise)
    assert crossed.noiseScienceFromTemplate == pytest.approx(
        whole.noiseScienceFromTemplate, rel=0.01
    )


# -- the matching kernel's basis ------------------------------------------------------------


def test_the_taylor_basis() -> None:
    for order, count in ((0, 1), (1, 3), (2, 6)):
        basis = crossKernelBasis(order)
        assert len(basis) == count
        images = [k.getImage() for k in basis]
        assert images[0].sum() == pytest.approx(1.0) and images[0][1, 1] == 1.0
        for image in images[1:]:
            assert image.sum() == pytest.approx(0.0, abs=1e-15)
            assert np.linalg.norm(image) == pytest.approx(1.0)
    # A sub-pixel shift and a small widening of a smooth image are what the terms reproduce:
    # a Gaussian of σ 2 px moved by 0.2 px is fitted by the first three to ~5e-3 of its peak
    # (its curvature, ~(0.2)²/2σ², is left) and by all six to ~3e-3 (the third order).
    image = gaussian(2.0, 31)
    moved = np.asarray(GaussianPsfModel(2.0).computeImage(0.2, 0.0, size=31))

    def residual(order: int) -> float:
        design = np.array(
            [
                scipy.signal.convolve(image, k.getImage(), mode="same").ravel()
                for k in crossKernelBasis(order)
            ]
        ).T
        coefficients = np.linalg.lstsq(design, moved.ravel(), rcond=None)[0]
        return float(np.abs(design @ coefficients - moved.ravel()).max() / image.max())

    assert residual(0) > 0.05
    assert residual(1) < 0.01
    assert residual(2) < 0.6 * residual(1)


# -- the decorrelation ----------------------------------------------------------------------


def _crossDifference(
    rng: np.random.Generator,
    pS: np.ndarray,
    pT: np.ndarray,
    kappa: float,
    v: float,
    t: float,
    n: int = 256,
) -> tuple[pm.MaskedImage, pm.MaskedImage, pm.MaskedImage]:
    """White-noise images of variances v and t and their cross-convolved difference
    P_T ⊗ S − κ P_S ⊗ T (scipy), with its border NaN as the task leaves it."""
    s = rng.normal(0.0, math.sqrt(v), (n, n))
    tt = rng.normal(0.0, math.sqrt(t), (n, n))
    d = scipy.signal.fftconvolve(s, pT, mode="same") - kappa * scipy.signal.fftconvolve(
        tt, pS, mode="same"
    )
    half = max(pS.shape[0], pT.shape[0]) // 2
    mask = np.zeros((n, n), dtype=np.int32)
    border = np.ones((n, n), dtype=bool)
    border[half:-half, half:-half] = False
    d[border] = np.nan
    mask[border] = EDGE | NO_DATA
    variance = (
        scipy.signal.fftconvolve(np.full((n, n), v), pT**2, mode="same")
        + kappa**2 * t * (pS**2).sum()
    )
    variance[border] = np.inf
    return masked(s, v), masked(tt, t), pm.MaskedImage(d, mask, variance)


def test_decorrelation_whitens_and_keeps_flux(rng: np.random.Generator) -> None:
    pS = _elliptical(2.0, 1.3, math.pi / 2)[10:31, 10:31]
    pT = _elliptical(2.0, 1.3, 0.0)[10:31, 10:31]
    pS, pT = pS / pS.sum(), pT / pT.sum()
    kappa, v, t = 1.25, 25.0, 16.0
    science, template, difference = _crossDifference(rng, pS, pT, kappa, v, t)
    kernel = np.zeros((3, 3))
    kernel[1, 1] = kappa
    fillBits = EDGE | NO_DATA
    out = decorrelateCrossConvolution(
        science, template, difference, kernel, pS, pT, svar=v, tvar=t, floor=1e-3, fillBits=fillBits
    )
    assert out.decorrelated and 0 < out.flooredFraction < 1
    d = out.correctedMaskedImage
    valid = np.isfinite(d.image)
    # The filled border's reach is blanked too: NaN, +inf, NO_DATA.
    assert valid.sum() < np.isfinite(difference.image).sum()
    assert np.all(d.mask[~valid] & NO_DATA) and np.all(np.isinf(d.variance[~valid]))
    z = d.image[valid] / np.sqrt(d.variance[valid])
    # The per-pixel variance: ~5e4 pixels, correlated over a few: the std is good to ~1 %.
    assert float(np.std(z)) == pytest.approx(1.0, abs=0.03)
    # White where D's PSF has its power: the PSF-fit flux of noise at every pixel, with the
    # variance times ρ, has unit variance (detection's S/N); with the plain variance it
    # would be sqrt(ρ) times too large.
    psf = out.correctedPsf
    inner = np.s_[60:-60, 60:-60]
    image = np.where(valid, d.image, 0.0)
    fit = scipy.signal.fftconvolve(image, psf[::-1, ::-1], mode="same")[inner] / (psf**2).sum()
    rho = out.detectionVarianceFactor
    predicted = math.sqrt(rho * float(np.median(d.variance[inner])) / float((psf**2).sum()))
    assert rho > 1.5
    # ~400 independent fits in the inner box: their std is good to ~4 %.
    assert float(np.std(fit)) / predicted == pytest.approx(1.0, abs=0.1)
    # Unit DC gain: the PSF of the result sums to 1, and φ(0) = 1.
    assert psf.sum() == pytest.approx(1.0, abs=1e-12)
    assert float(out.decorrelationFilter[0, 0]) == pytest.approx(1.0, abs=1e-12)


def test_decorrelated_psf_of_equal_gaussians_is_the_gaussian() -> None:
    # For P_S = P_T = P (a Gaussian, positive spectrum) and K = κδ the filter is 1/|P̂| where
    # it is not floored, and P_D = P̂²·φ = P: the difference of the unconvolved images.
    p = gaussian(1.5, 21)
    p /= p.sum()
    n = 128
    zero = masked(np.zeros((n, n)), 4.0)
    kernel = np.zeros((3, 3))
    kernel[1, 1] = 1.1
    out = decorrelateCrossConvolution(
        zero, zero, zero, kernel, p, p, svar=4.0, tvar=9.0, floor=1e-8, fillBits=0
    )
    psf = out.correctedPsf
    c = psf.shape[0] // 2
    # Floored beyond |P̂|² < 1e-8 only: the difference from P is ~1e-4 of its peak.
    np.testing.assert_allclose(psf[c - 10 : c + 11, c - 10 : c + 11], p, atol=2e-4 * p.max())


def test_decorrelation_errors_and_fallback() -> None:
    p = gaussian(1.5, 11)
    mi = masked(np.zeros((40, 40)))
    with pytest.raises(InvalidInputError, match="floor: expected a number in"):
        decorrelateCrossConvolution(
            mi, mi, mi, np.ones((1, 1)), p, p, svar=1.0, tvar=1.0, floor=1.5, fillBits=0
        )
    with pytest.raises(InvalidInputError, match="sciencePsf: expected an odd-sized"):
        decorrelateCrossConvolution(
            mi,
            mi,
            mi,
            np.ones((1, 1)),
            np.ones((4, 4)),
            p,
            svar=1.0,
            tvar=1.0,
            floor=1e-3,
            fillBits=0,
        )
    out = decorrelateCrossConvolution(
        mi, mi, mi, np.ones((1, 1)), p, p, svar=math.nan, tvar=1.0, floor=1e-3, fillBits=0
    )
    assert not out.decorrelated
    np.testing.assert_array_equal(out.correctedMaskedImage.image, mi.image)


def test_the_cropped_filter_is_the_whole_grids(
    rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The filter cropped where its tail is < 1e-8 and applied by float32 tiles, against the
    # same filter on the whole image's grid in float64 (a tail tolerance of 0 forces it).
    import psfmatch.decorrelate_cross as dc

    pS = _elliptical(2.0, 1.3, math.pi / 2)[10:31, 10:31]
    pT = _elliptical(2.0, 1.3, 0.0)[10:31, 10:31]
    pS, pT = pS / pS.sum(), pT / pT.sum()
    science, template, difference = _crossDifference(rng, pS, pT, 1.25, 25.0, 16.0)
    kernel = np.zeros((3, 3))
    kernel[1, 1] = 1.25
    args = (science, template, difference, kernel, pS, pT)
    options = dict(svar=25.0, tvar=16.0, floor=1e-3, fillBits=EDGE | NO_DATA)
    tiled = dc.decorrelateCrossConvolution(*args, **options)
    monkeypatch.setattr(dc, "_TAIL_TOLERANCE", 0.0)
    whole = dc.decorrelateCrossConvolution(*args, **options)
    a, b = tiled.correctedMaskedImage, whole.correctedMaskedImage
    np.testing.assert_array_equal(np.isfinite(a.image), np.isfinite(b.image))
    valid = np.isfinite(a.image)
    # float32-free here (float64 inputs): what differs is the tail left out, < 1e-8 of Σ|φ|
    # times the image's largest values (~30).
    np.testing.assert_allclose(a.image[valid], b.image[valid], rtol=0, atol=1e-6)
    np.testing.assert_allclose(a.variance[valid], b.variance[valid], rtol=1e-6)
    assert tiled.detectionVarianceFactor == pytest.approx(whole.detectionVarianceFactor, rel=1e-3)
