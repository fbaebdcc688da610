# SPDX-License-Identifier: BSD-3-Clause
"""Decorrelation (docs/algorithm.md §7.6), the score image (§7.4) and difference-image sources.

The decorrelation tests build their difference images in the test with
`scipy.signal.fftconvolve` from pure Gaussian noise and a known kernel, so the truth (the
variances, the whiteness) does not depend on psfmatch's own convolution or fit.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from scipy import ndimage
from scipy.signal import fftconvolve

import psfmatch as pm
from psfmatch._psfutil import _psfFwhm, _psfImage
from psfmatch.api import subtract
from psfmatch.decorrelate import DecorrelateALKernelConfig, DecorrelateALKernelTask
from psfmatch.detect_and_measure import detectDifferenceSources as _detectDifferenceSources
from psfmatch.image_psf_match import ImagePsfMatchConfig, ImagePsfMatchTask
from psfmatch.simulate import simulatePair

FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))


RNG_SEED = 20240611  # the rng fixture's seed (conftest.py)


def gaussian(sigma: float, half: int, scale: float = 1.0) -> np.ndarray:
    """A sampled round Gaussian of sum ``scale`` on a (2·half+1)² grid."""
    yy, xx = np.mgrid[-half : half + 1, -half : half + 1]
    g = np.exp(-(xx**2 + yy**2) / (2.0 * sigma**2))
    return scale * g / g.sum()


def masked(image: np.ndarray, variance: float | np.ndarray) -> pm.MaskedImage:
    var = np.broadcast_to(np.asarray(variance, dtype=np.float32), image.shape).copy()
    return pm.MaskedImage(image.astype(np.float32), variance=var)


def withBorder(d: np.ndarray, var: float, border: int) -> pm.MaskedImage:
    """D with psfmatch's border convention: NaN, variance +inf, EDGE|NO_DATA."""
    image = d.copy()
    edge = np.ones(d.shape, dtype=bool)
    edge[border:-border, border:-border] = False
    image[edge] = np.nan
    variance = np.where(edge, np.inf, var)
    mask = np.where(edge, pm.Mask.getPlaneBitMask(["EDGE", "NO_DATA"]), 0).astype(np.int32)
    return pm.MaskedImage(image.astype(np.float32), mask, variance.astype(np.float32))


def autocorrelation(a: np.ndarray, lag: int) -> tuple[float, float]:
    """Normalised autocorrelation at ``lag`` pixels along x and along y."""
    a = a - a.mean()
    v = a.var()
    return (
        float(np.mean(a[:, :-lag] * a[:, lag:]) / v),
        float(np.mean(a[:-lag, :] * a[lag:, :]) / v),
    )


def expectedExcursions(area: float, psfSigma: float, u: float) -> float:
    """Expected number of separate excursions above u·σ of white noise matched-filtered with a
    Gaussian PSF of ``psfSigma`` pixels, over ``area`` pixels (one sign).

    The filtered field is Gaussian with correlation exp(−r²/4σ²) (the PSF's autocorrelation),
    so its second spectral moment is λ₂ = 1/(2σ²) and the expected Euler characteristic of its
    excursion set above u (Adler 1981) is area · λ₂ · u · exp(−u²/2) / (2π)^{3/2}: at the
    thresholds used here, the number of separate excursions.
    """
    lam2 = 1.0 / (2.0 * psfSigma**2)
    return area * lam2 * u * math.exp(-0.5 * u * u) / (2.0 * math.pi) ** 1.5


# -- the decorrelation filter on pure noise ---------------------------------------------------

N = 512
# A unit-sum Gaussian kernel of σ = 2.5 px: its noise correlation, exp(−r²/4σ_K²), is still
# 0.4 of its peak at 3 px. The template is 10× noisier than the science image, so the
# convolved template noise t·ΣK² = 100/(4π·2.5²) ≈ 1.3 dominates D's pixel variance (≈ 2.3)
# and the raw lag-1…3 autocorrelations are ≈ 0.55, 0.48, 0.39: the correlation is obvious.
KERNEL_SIGMA = 2.5
KERNEL_HALF = 12
SIGMA_SCIENCE = 1.0
SIGMA_TEMPLATE = 10.0


@pytest.fixture
def templateMatchedNoise(rng: np.random.Generator) -> dict[str, Any]:
    kernel = gaussian(KERNEL_SIGMA, KERNEL_HALF)
    science = rng.normal(0.0, SIGMA_SCIENCE, (N, N))
    template = rng.normal(0.0, SIGMA_TEMPLATE, (N, N))
    d = science - fftconvolve(template, kernel, mode="same")
    varD = SIGMA_SCIENCE**2 + SIGMA_TEMPLATE**2 * float(np.sum(kernel**2))
    return {
        "science": masked(science, SIGMA_SCIENCE**2),
        "template": masked(template, SIGMA_TEMPLATE**2),
        "difference": withBorder(d, varD, KERNEL_HALF),
        "kernel": kernel,
    }


def interior(a: np.ndarray) -> np.ndarray:
    """Away from the NaN border and the decorrelation filter's reach into it."""
    m = 3 * KERNEL_HALF
    return np.asarray(a[m:-m, m:-m], dtype=np.float64)


def test_decorrelation_whitens_template_matched_noise(templateMatchedNoise: dict[str, Any]):
    inputs = templateMatchedNoise
    raw = inputs["difference"]
    res = DecorrelateALKernelTask().run(
        inputs["science"],
        inputs["template"],
        raw,
        pm.FixedKernel(inputs["kernel"]),
        psf=gaussian(2.0, 10),
    )
    corrected = res.correctedMaskedImage
    d = interior(corrected.image)
    assert res.decorrelated
    # svar and tvar are clipped means of exactly constant planes.
    assert res.svar == pytest.approx(SIGMA_SCIENCE**2, rel=1e-6)
    assert res.tvar == pytest.approx(SIGMA_TEMPLATE**2, rel=1e-6)
    expected = res.svar + res.tvar * res.kappa**2  # κ = 1: svar + tvar = 101
    # Within 5 %: ~2e5 pixels of white noise make the sample variance good to 0.3 %.
    assert d.var() == pytest.approx(expected, rel=0.05)
    # The plane is the Parseval estimate v·Σc₁² + t·Σc₂², exact for white inputs.
    assert float(np.median(interior(corrected.variance))) == pytest.approx(d.var(), rel=0.02)
    for lag in (1, 2, 3):
        # White noise: each estimate has a standard error of 1/sqrt(2e5) ≈ 0.002.
        assert max(abs(c) for c in autocorrelation(d, lag)) < 0.1, lag
        # The raw difference: 0.55, 0.48, 0.39 (see KERNEL_SIGMA).
        assert min(autocorrelation(interior(raw.image), lag)) > 0.2, lag
    # The NaN border is restored, the mask passes through, the input is untouched.
    assert np.isnan(corrected.image[0]).all() and np.isinf(corrected.variance[0]).all()
    np.testing.assert_array_equal(corrected.mask, raw.mask)
    assert np.isfinite(corrected.image[KERNEL_HALF:-KERNEL_HALF, KERNEL_HALF:-KERNEL_HALF]).all()
    assert np.isnan(raw.image[0]).all()


def test_decorrelation_keeps_flux_and_filters_the_psf_like_the_image(rng: np.random.Generator):
    kernel = gaussian(KERNEL_SIGMA, KERNEL_HALF)
    psf = gaussian(2.2, 12)
    flux = 1.0e4
    d = np.zeros((256, 256))
    d[128 - 12 : 128 + 13, 100 - 12 : 100 + 13] = flux * psf
    noise = masked(np.zeros((256, 256)), 1.0)
    res = DecorrelateALKernelTask().run(
        noise, masked(np.zeros((256, 256)), 100.0), masked(d, 1.0), kernel, psf=psf
    )
    out = res.correctedMaskedImage.image.astype(np.float64)
    # corr(0) = 1: the filter has unit DC gain, so the total flux is kept to float32 rounding.
    assert out.sum() == pytest.approx(flux, rel=1e-5)
    # ... and a box of ± 4σ_PSF + the kernel size holds it to 0.1 %.
    box = out[128 - 30 : 128 + 31, 100 - 30 : 100 + 31]
    assert box.sum() == pytest.approx(flux, rel=1e-3)
    # The corrected PSF is the PSF through the same filter, on a grid grown by the kernel
    # (25 + 25 − 1 = 49): the filtered star divided by its flux, to float32 rounding of the
    # image (peak ≈ 0.05).
    assert res.correctedPsf.shape == (49, 49)
    assert res.correctedPsf.sum() == pytest.approx(1.0, abs=1e-12)
    star = out[128 - 24 : 128 + 25, 100 - 24 : 100 + 25] / flux
    # The filter's faint tail beyond the grown grid (4e-4 of the flux) is lost before the
    # normalisation: 1e-3 relative.
    np.testing.assert_allclose(star, res.correctedPsf, rtol=1e-3, atol=1e-7)
    # Whitening sharpens: the corrected PSF peaks higher than the PSF.
    assert res.correctedPsf.max() > psf.max()
    assert res.decorrelationKernel.shape == kernel.shape


def test_science_matched_variance_scales_every_term(rng: np.random.Generator):
    """docs/decisions.md D6. psfmatch's science-matched D = (K⊗S − T)/κ divides both terms by
    κ, so the decorrelated variance is (w₁·Var_T + w₂·Var_S)/κ²; scaling only the convolved
    term would give Var_T + Var_S·κ²/κ² instead, 20 % lower with these numbers."""
    kappa = 0.5
    sigmaS, sigmaT = 10.0, 3.0
    kernel = gaussian(KERNEL_SIGMA, KERNEL_HALF, scale=kappa)
    science = rng.normal(0.0, sigmaS, (N, N))
    template = rng.normal(0.0, sigmaT, (N, N))
    d = (fftconvolve(science, kernel, mode="same") - template) / kappa
    varD = (sigmaS**2 * float(np.sum(kernel**2)) + sigmaT**2) / kappa**2
    res = DecorrelateALKernelTask().run(
        masked(science, sigmaS**2),
        masked(template, sigmaT**2),
        withBorder(d, varD, KERNEL_HALF),
        kernel,
        templateMatched=False,
    )
    assert res.kappa == pytest.approx(kappa, rel=1e-12)
    out = interior(res.correctedMaskedImage.image)
    expected = (sigmaT**2 + sigmaS**2 * kappa**2) / kappa**2  # 136
    wrong = sigmaT**2 + sigmaS**2  # 109: the reference's "divide everything" applied to its D
    # ~2e5 white pixels: 0.3 % statistical error.
    assert out.var() == pytest.approx(expected, rel=0.02)
    plane = float(np.median(interior(res.correctedMaskedImage.variance)))
    assert plane == pytest.approx(out.var(), rel=0.02)
    assert abs(plane / wrong - 1.0) > 0.1
    for lag in (1, 2, 3):
        # As in the template-matched test: white to the statistical error.
        assert max(abs(c) for c in autocorrelation(out, lag)) < 0.1


def test_complete_variance_propagation(rng: np.random.Generator):
    kernel = gaussian(KERNEL_SIGMA, KERNEL_HALF)
    n = 256
    science = rng.normal(0.0, 1.0, (n, n))
    # The science variance steps from 1 (left half) to 4 (right half).
    scienceVar = np.where(np.arange(n)[None, :] < n // 2, 1.0, 4.0) * np.ones((n, n))
    science *= np.sqrt(scienceVar)
    template = rng.normal(0.0, 3.0, (n, n))
    d = science - fftconvolve(template, kernel, mode="same")
    config = DecorrelateALKernelConfig()
    config.completeVarPlanePropagation = True
    full = DecorrelateALKernelTask(config=config).run(
        masked(science, scienceVar), masked(template, 9.0), masked(d, 1.0), kernel
    )
    estimate = DecorrelateALKernelTask().run(
        masked(science, scienceVar), masked(template, 9.0), masked(d, 1.0), kernel
    )
    # Same filter; only the variance differs.
    np.testing.assert_array_equal(
        full.correctedMaskedImage.image, estimate.correctedMaskedImage.image
    )
    varFull = full.correctedMaskedImage.variance.astype(np.float64)
    varEst = estimate.correctedMaskedImage.variance.astype(np.float64)
    image = full.correctedMaskedImage.image.astype(np.float64)
    rows = slice(40, n - 40)
    for cols in (slice(30, n // 2 - 30), slice(n // 2 + 30, n - 30)):
        # Far from the step each side is white noise of its own level: the propagated plane
        # follows it (~1.3e4 pixels each: 1.2 % statistical error) ...
        local = image[rows, cols].var()
        assert float(np.median(varFull[rows, cols])) == pytest.approx(local, rel=0.05)
        # ... and equals the mean-power estimate there, which scales each input plane
        # pointwise (the filter's power sums to the same weights).
        np.testing.assert_allclose(varFull[rows, cols], varEst[rows, cols], rtol=1e-3)


def test_unusable_variances_return_the_difference_unchanged(caplog: pytest.LogCaptureFixture):
    d = masked(np.arange(64.0 * 64.0).reshape(64, 64), 1.0)
    allBad = masked(np.zeros((64, 64)), 1.0)
    allBad.mask[:] = pm.Mask.getPlaneBitMask("NO_DATA")
    with caplog.at_level("WARNING", logger="psfmatch"):
        res = DecorrelateALKernelTask().run(
            allBad, masked(np.zeros((64, 64)), 1.0), d, np.ones((3, 3))
        )
    assert not res.decorrelated
    np.testing.assert_array_equal(res.correctedMaskedImage.image, d.image)
    assert any("Not decorrelating" in r.getMessage() for r in caplog.records)


def test_decorrelation_input_errors():
    a = masked(np.zeros((32, 32)), 1.0)
    task = DecorrelateALKernelTask()
    with pytest.raises(pm.InvalidInputError, match="odd-sized"):
        task.run(a, a, a, np.ones((4, 3)))
    with pytest.raises(pm.InvalidInputError, match="one pixel grid"):
        task.run(a, a, masked(np.zeros((32, 30)), 1.0), np.ones((3, 3)))
    with pytest.raises(pm.InvalidInputError, match="templateMatched=True"):
        task.run(a, a, a, np.ones((3, 3)), templateMatched=False, preConvKernel=np.ones((3, 3)))
    with pytest.raises(pm.InvalidInputError, match="psf: expected an odd-sized"):
        task.run(a, a, a, np.ones((3, 3)), psf=np.ones((2, 2)))


# -- the score image -------------------------------------------------------------------------


def test_score_image_noise(rng: np.random.Generator):
    """Score mode on pure noise, σ = 1 in both images.

    The science image is convolved with its own unit-sum PSF P (σ_P = 2 px, the matched
    filter): its noise becomes σ·sqrt(Σp²) = σ/sqrt(NEA) with the noise-equivalent area
    NEA = 1/Σp² = 4πσ_P² ≈ 50 px. K matches a template PSF of σ_T = 1.8 px to the preconvolved
    science PSF (σ_K² = 2σ_P² − σ_T²). The score filter whitens the underlying difference
    S − (K/P)⊗T, whose noise is σ²(1 + |K̂/P̂|²) ≈ 2σ² at the frequencies P passes because
    K/P is a Gaussian of only 0.87 px, and then matched-filters it with P: so
    std(score) ≈ sqrt(2)·σ/sqrt(NEA). Exactly, by Parseval, Var(score) = (v + t·κ²)·max(ψ)
    where ψ is the unit-sum PSF of the score (corr²·|P̂|² in Fourier space), i.e. the
    corrected PSF's peak; sharpening by K/P makes it 4 % above the approximation here.
    """
    sigma = 1.0
    sigmaP, sigmaT = 2.0, 1.8
    p = gaussian(sigmaP, 10)
    kernel = gaussian(math.sqrt(2 * sigmaP**2 - sigmaT**2), 15)
    science = rng.normal(0.0, sigma, (N, N))
    template = rng.normal(0.0, sigma, (N, N))
    preConv = p[::-1, ::-1]
    d = fftconvolve(science, preConv, mode="same") - fftconvolve(template, kernel, mode="same")
    varD = sigma**2 * float(np.sum(p**2) + np.sum(kernel**2))
    res = DecorrelateALKernelTask().run(
        masked(science, sigma**2),
        masked(template, sigma**2),
        withBorder(d, varD, 15),
        kernel,
        preConvKernel=preConv,
        psf=fftconvolve(p, preConv),
    )
    score = res.correctedMaskedImage.image
    assert np.isfinite(score[15:-15, 15:-15]).all()
    s = np.asarray(score[45:-45, 45:-45], dtype=np.float64)
    nea = 1.0 / float(np.sum(p**2))
    approx = math.sqrt(2.0) * sigma / math.sqrt(nea)
    # Mean: the score's noise power at zero frequency is 2σ² (corr(0) = 1, P̂(0) = 1), so the
    # mean of ~1.8e5 pixels has a standard error sqrt(2σ²/n) ≈ 0.0033; allow 5 of them.
    assert abs(s.mean()) < 5.0 * math.sqrt(2.0 * sigma**2 / s.size)
    # The acceptance figure: within 10 % of sqrt(2)·σ/sqrt(NEA) (4 % expected, see above; the
    # sample std of correlated noise over 1.8e5 pixels is good to ~1 %).
    assert s.std() == pytest.approx(approx, rel=0.10)
    # The exact relation, which ties the image filter to the PSF filter: 3 % (statistics).
    exact = math.sqrt((res.svar + res.tvar * res.kappa**2) * res.correctedPsf.max())
    assert s.std() == pytest.approx(exact, rel=0.03)
    # The variance plane says the same: 2 %.
    plane = float(np.median(res.correctedMaskedImage.variance[45:-45, 45:-45]))
    assert math.sqrt(plane) == pytest.approx(s.std(), rel=0.02)


@pytest.fixture(scope="module")
def scorePair() -> dict[str, Any]:
    sim = simulatePair((512, 512), nStars=150, seed=21, nTransients=4)
    # A user PSF image (the simulation's σ at the centre) reaching farther than the matching
    # kernel's half-width (17), so that the preconvolution sets the border: 25 px.
    psf = gaussian(float(sim.truth.sciencePsf.getSigma(256.0, 256.0)), 25)
    result = subtract(sim.science, sim.template, mode="preconvolve", sciencePsf=psf)
    return {"sim": sim, "result": result}


def test_score_image_end_to_end(scorePair: dict[str, Any]):
    sim, result = scorePair["sim"], scorePair["result"]
    md = result.metadata
    assert md["convolvedExposure"] == "Preconvolution" and result.convolved == "Preconvolution"
    assert md["preconvolvedSciencePsfSize"] == pytest.approx(
        math.sqrt(2.0) * md["sciencePsfSize"], rel=1e-12
    )
    # The kernel sum is the flux ratio whatever the kernel matches to. 150 stars, of which
    # ~20 survive the fit, give ≈ 0.5 % (convolveTemplate on this pair: 1.2431 for 1.25), not
    # the 0.2 % of the 400-star acceptance run: 1 %.
    assert result.kernelSum == pytest.approx(sim.truth.kernelSum(256.0, 256.0), rel=1e-2)
    # Outside the inner box (the science box shrunk by the 51² preconvolution kernel) the
    # score is NaN with EDGE; inside it is finite.
    assert md["ALKernelSize"] // 2 < 25
    edge = pm.Mask.getPlaneBitMask("EDGE")
    for border in (result.mask[:25], result.mask[-25:], result.mask[:, :25], result.mask[:, -25:]):
        assert ((border & edge) != 0).all()
    assert np.isnan(result.image[:25]).all() and np.isnan(result.image[:, -25:]).all()
    assert np.isfinite(result.image[25:-25, 25:-25]).all()
    inner = slice(50, -50)
    # The score over its own σ is unit-variance noise away from the sources: the decorrelated
    # score's variance plane is right to the 3 % of the other subtraction tests.
    z = (result.image / np.sqrt(result.variance))[inner, inner].astype(np.float64)
    away = np.ones(result.image.shape, dtype=bool)
    for x, y in zip(
        np.concatenate([sim.stars["x"], sim.transients["x"]]),
        np.concatenate([sim.stars["y"], sim.transients["y"]]),
        strict=True,
    ):
        away[max(int(y) - 20, 0) : int(y) + 21, max(int(x) - 20, 0) : int(x) + 21] = False
    zs = z[away[inner, inner]]
    assert 0.7413 * np.subtract(*np.percentile(zs, [75, 25])) == pytest.approx(1.0, abs=0.03)
    # The transients are the score's strongest peaks: each is a positive diaSource.
    dia = result.diaSources
    for x, y in zip(sim.transients["x"], sim.transients["y"], strict=True):
        near = np.hypot(dia["x"] - x, dia["y"] - y) < 2.0
        assert near.any() and not dia["isNegative"][near].any()


def test_psf_inputs():
    # A PSF object is evaluated at the given position and normalised.
    psf = pm.GaussianPsf(25, 25, 2.0)
    image = _psfImage(psf, 99.0, 100.0, 120.0, "sciencePsf")
    expected = psf.computeKernelImage(100.0, 120.0)
    np.testing.assert_allclose(image, expected / expected.sum(), rtol=1e-12)
    # Without one: a pixel-integrated Gaussian of the FWHM, whose second moments add the
    # pixel's 1/12 px² to σ² (FWHM 5: +0.9 %): 2 %.
    assert _psfFwhm(_psfImage(None, 5.0, 0.0, 0.0, "sciencePsf")) == pytest.approx(5.0, rel=0.02)
    with pytest.raises(pm.InvalidInputError, match="templatePsf: the PSF image must be finite"):
        _psfImage(np.zeros((5, 5)), 5.0, 0.0, 0.0, "templatePsf")


def test_preconvolution_psf_must_be_odd(scorePair: dict[str, Any]):
    sim = scorePair["sim"]
    with pytest.raises(pm.InvalidInputError, match="sciencePsf: expected an odd-sized"):
        subtract(sim.science, sim.template, mode="preconvolve", sciencePsf=np.ones((8, 8)))


# -- difference-image sources and the NFalsePositives* metadata ------------------------------


def test_detection_counts_noise_excursions_as_gaussian_noise_predicts(rng: np.random.Generator):
    """The detector thresholds the matched-filter S/N: on white noise its count of separate
    excursions follows the Euler-characteristic expectation (`expectedExcursions`)."""
    n = 768
    psfSigma = 2.5
    noise = masked(rng.normal(0.0, 1.0, (n, n)), 1.0)
    u = 3.0
    table = _detectDifferenceSources(noise, gaussian(psfSigma, 10), u, 0)
    expected = 2.0 * expectedExcursions(n * n, psfSigma, u)  # both signs: ≈ 200
    # The formula is for the continuous field; sampled at pixel centres a few excursions that
    # peak between pixels are missed (0.88-0.91 of it at u = 3-3.5 in 2·1024² trials; 0.93
    # here). Poisson error sqrt(200) = 7 %; the window is ± 3 of those around 0.9.
    assert 0.7 < len(table) / expected < 1.1
    assert (table["isNegative"].sum() > 0.3 * len(table)) and (~table["isNegative"]).sum() > 0
    assert (np.abs(table["snr"]) >= u).all()


@pytest.mark.parametrize("isScore", [False, True])
def test_detection_measures_psf_fit_flux_as_written_out(
    rng: np.random.Generator, isScore: bool
) -> None:
    """At every detected peak the table holds the PSF-fit flux, its error and the S/N of the
    docstring's formulas, recomputed here by direct sums (scipy.signal.correlate) over the
    usable pixels: finite, positive variance, no bad bit. The image is 203 × 331, not a
    multiple of the detector's row bands, with a masked block, a NaN pixel and a zero
    variance, and sources of both signs."""
    from scipy.signal import correlate

    ny, nx = 203, 331
    psf = gaussian(1.8, 7)
    image = rng.normal(0.0, 3.0, (ny, nx))
    for _ in range(25):
        y, x = int(rng.integers(10, ny - 10)), int(rng.integers(10, nx - 10))
        image[y - 7 : y + 8, x - 7 : x + 8] += rng.choice([-1.0, 1.0]) * rng.uniform(50, 400) * psf
    variance = 9.0 * rng.uniform(0.8, 1.2, (ny, nx))
    mask = np.zeros((ny, nx), dtype=np.int32)
    mask[100:110, 200:260] = 4
    variance[150, 30] = 0.0
    image[60, 250] = np.nan
    d = pm.MaskedImage(image.astype(np.float32), mask, variance.astype(np.float32), xy0=(5, -3))
    table = _detectDifferenceSources(d, psf, 5.0, 4, isScore=isScore)
    assert table["isNegative"].any() and (~table["isNegative"]).any()

    img, var = d.image.astype(np.float64), d.variance.astype(np.float64)
    usable = np.isfinite(img) & (var > 0) & ((mask & 4) == 0)
    weight = np.where(usable, 1.0 / np.where(usable, var, 1.0), 0.0)
    data = np.where(usable, img, 0.0)
    iy = np.asarray(table["yPeak"]) + 3
    ix = np.asarray(table["xPeak"]) - 5
    assert usable[iy, ix].all()
    if isScore:
        flux = data / psf.max()
        fluxErr = np.sqrt(var) / psf.max()
    else:
        numerator = correlate(data * weight, psf, mode="same", method="direct")
        denominator = correlate(weight, psf * psf, mode="same", method="direct")
        flux = numerator / denominator
        fluxErr = 1.0 / np.sqrt(denominator)
    # The detector's direct float64 sums at each peak against scipy's over the same ~225
    # terms in another order: rounding ~1e-15 of the largest term; 1e-9 relative leaves room
    # and would still catch a pixel or a weight misplaced.
    np.testing.assert_allclose(table["flux"], flux[iy, ix], rtol=1e-9)
    np.testing.assert_allclose(table["fluxErr"], fluxErr[iy, ix], rtol=1e-9)
    np.testing.assert_allclose(table["snr"], flux[iy, ix] / fluxErr[iy, ix], rtol=1e-9)
    assert (np.abs(table["snr"]) >= 5.0).all()
    assert (table["isNegative"] == (table["snr"] < 0)).all()


@pytest.fixture(scope="module")
def transientPair() -> dict[str, Any]:
    sim = simulatePair((1024, 1024), nStars=400, seed=31, nTransients=12, nVariables=0)
    task = ImagePsfMatchTask()
    result = task.subtractMaskedImages(sim.template, sim.science)
    return {"sim": sim, "result": result, "metadata": task.metadata}


def test_transients_are_found_and_unassociated(transientPair: dict[str, Any]):
    sim, result, md = transientPair["sim"], transientPair["result"], transientPair["metadata"]
    dia = result.diaSources
    isTransient = np.zeros(len(dia), dtype=bool)
    for x, y, flux in zip(
        sim.transients["x"], sim.transients["y"], sim.transients["flux"], strict=True
    ):
        near = np.hypot(dia["x"] - x, dia["y"] - y) < 2.0
        assert near.sum() == 1, (x, y)
        row = dia[near][0]
        assert not row["isNegative"] and not row["refAssociated"] and not row["srcAssociated"]
        # PSF-fit flux with one PSF (a Gaussian of the median FWHM, decorrelated) on a 5e3
        # transient (S/N ≈ 70: 1.4 % noise). The true science σ runs from 2.2 to 2.8 px across
        # the image, and a Gaussian fit of width σ_m to one of width σ biases the flux by
        # 2σ_m²/(σ_m² + σ²): up to −11 % / +5 % at the edges. So 15 %.
        assert row["flux"] == pytest.approx(flux, rel=0.15)
        isTransient |= near
    # Everything else is noise or a subtraction residual. The expected number of 5σ noise
    # excursions of the ~1e6 usable pixels, both signs, is ≈ 0.2; a badly subtracted bright
    # star would add more. Allow 3 (Poisson P(N ≥ 4 | 0.2) ≈ 6e-5).
    psfSigma = md["differencePsfSize"] / FWHM_PER_SIGMA
    usable = np.isfinite(result.subtractedMaskedImage.image).sum()
    expected = 2.0 * expectedExcursions(usable, psfSigma, 5.0)
    assert expected < 0.5
    nOther = int((~isTransient).sum())
    assert nOther <= expected + 3, dia[~isTransient]
    assert md["NFalsePositivesTotal"] == len(dia)
    assert md["NFalsePositivesUnassociated"] >= len(sim.transients)
    assert md["NFalsePositivesRefAssociated"] == int(dia["refAssociated"].sum())
    assert md["NFalsePositivesSrcAssociated"] == int(dia["srcAssociated"].sum())


def awayFromSources(sim: Any, shape: tuple[int, int], radius: int) -> np.ndarray:
    away = np.ones(shape, dtype=bool)
    for x, y in zip(
        np.concatenate([sim.stars["x"], sim.transients["x"]]),
        np.concatenate([sim.stars["y"], sim.transients["y"]]),
        strict=True,
    ):
        ix, iy = int(round(x)), int(round(y))
        away[max(iy - radius, 0) : iy + radius + 1, max(ix - radius, 0) : ix + radius + 1] = False
    return away


def test_task_decorrelates_by_default():
    # A shallow template (sky σ 8) and a deep science image (σ 3): K⊗T's noise, with
    # σ_K ≈ 1.9 px and κ = 1.25, is t·κ²·ΣK² ≈ 64·1.56/(4π·1.9²) ≈ 2.2 against v = 9, so the
    # raw difference's lag-1 autocorrelation is ≈ 0.19·exp(−1/4σ_K²) ≈ 0.18.
    sim = simulatePair(
        (512, 512),
        nStars=150,
        seed=37,
        nTransients=3,
        transientFlux=5e4,
        templateSkySigma=8.0,
        scienceSkySigma=3.0,
        scienceSigma=2.5,
    )
    assert ImagePsfMatchConfig().doDecorrelation
    task = ImagePsfMatchTask()
    result = task.subtractMaskedImages(sim.template, sim.science)
    md = task.metadata
    # The sky variances 3² and 8². The variance planes add the source counts (gain 1), and
    # the 3σ-clipped mean keeps the faint stellar wings: +5.6 % over the science image's low
    # sky (measured), +0.5 % over the template's; 10 % and 2 %.
    assert md["decorrelationSvar"] == pytest.approx(9.0, rel=0.10)
    assert md["decorrelationTvar"] == pytest.approx(64.0, rel=0.02)
    assert md["decorrelated"] is True
    raw, dec = result.subtractedMaskedImageRaw, result.subtractedMaskedImage
    away = awayFromSources(sim, raw.image.shape, 15)[60:-60, 60:-60]
    rawSky = np.where(away, raw.image[60:-60, 60:-60], 0.0).astype(np.float64)
    decSky = np.where(away, dec.image[60:-60, 60:-60], 0.0).astype(np.float64)
    # ~1e5 sky pixels (zeros elsewhere dilute both alike): statistical error ≈ 0.003.
    assert min(autocorrelation(rawSky, 1)) > 0.1
    for lag in (1, 2, 3):
        assert max(abs(c) for c in autocorrelation(decSky, lag)) < 0.03, lag
    # The decorrelated variance plane describes the decorrelated pixels: robust σ of D/σ
    # within the 3 % of the known-answer tests.
    z = (dec.image / np.sqrt(dec.variance))[60:-60, 60:-60][away].astype(np.float64)
    assert 0.7413 * np.subtract(*np.percentile(z, [75, 25])) == pytest.approx(1.0, abs=0.03)
    # The difference PSF is the science PSF filtered like the image: whitening this much
    # template noise sharpens it (FWHM from second moments 5.9 → 4.1 px) and it is the
    # point-source model of the decorrelated D. The PSF-fit fluxes of the 5e4 transients
    # (S/N ≈ 70, set by their own photon noise at gain 1: 1.4 % each) are fitted at the peak
    # pixel, not the sub-pixel position: each is divided by what that costs a noise-free star
    # of the returned PSF (its Fourier-shifted copy, scipy: 0.980, 0.989, 0.989 here), and
    # the mean is then within 3 % of the truth: 0.8 % of noise on the mean. Measured 0.975
    # with the measured difference PSF and 0.978 with the true science PSF given (0.994 with
    # the Gaussian of the measured FWHM, 1.5 % too wide, which hid part of the -2.2 %; not
    # explained yet).
    assert result.differencePsf.sum() == pytest.approx(1.0, abs=1e-9)
    assert md["differencePsfSize"] < 0.8 * md["sciencePsfSize"]
    dia = result.diaSources
    psf = np.asarray(result.differencePsf, dtype=np.float64)
    ratios = []
    for x, y, flux in zip(
        sim.transients["x"], sim.transients["y"], sim.transients["flux"], strict=True
    ):
        near = np.hypot(dia["x"] - x, dia["y"] - y) < 2.0
        assert near.sum() == 1
        dx, dy = x - np.floor(x + 0.5), y - np.floor(y + 0.5)
        shifted = np.fft.ifft2(ndimage.fourier_shift(np.fft.fft2(psf), (dy, dx))).real
        peakPixelLoss = float((psf * shifted).sum() / (psf * psf).sum())
        ratios.append(dia["flux"][near][0] / flux / peakPixelLoss)
    assert np.mean(ratios) == pytest.approx(1.0, abs=0.03)
    # The decorrelation subtask is part of the hierarchy.
    assert "imagePsfMatch.decorrelate" in task.getTaskDict()


def test_decorrelation_off_returns_the_raw_difference():
    sim = simulatePair((384, 384), nStars=100, seed=33, nTransients=0)
    config = ImagePsfMatchConfig()
    config.doDecorrelation = False
    config.doDetectDiaSources = False
    task = ImagePsfMatchTask(config=config)
    result = task.subtractMaskedImages(sim.template, sim.science)
    assert result.subtractedMaskedImage is result.subtractedMaskedImageRaw
    assert result.diaSources is None and result.decorrelationKernel is None
    assert "decorrelationSvar" not in task.metadata
    assert "NFalsePositivesTotal" not in task.metadata


def test_variable_stars_are_associated_with_the_template():
    sim = simulatePair((512, 512), nStars=150, seed=35, nTransients=0, nVariables=4)
    result = subtract(sim.science, sim.template, mode="convolveTemplate")
    dia = result.diaSources
    variables = sim.stars[sim.stars["variable"]]
    for x, y in zip(variables["x"], variables["y"], strict=True):
        near = np.hypot(dia["x"] - x, dia["y"] - y) < 2.0
        # A variable at least 1.5× brighter or fainter than a median-or-brighter star is
        # detected, and the template holds the star.
        assert near.any() and dia["refAssociated"][near].all()
    header = result.header()
    assert header["psfmatch.NFalsePositivesTotal"] == len(dia)
    assert header["psfmatch.NFalsePositivesRefAssociated"] >= len(variables)


@pytest.mark.parametrize("shape", [(12, 16), (9, 10), (8, 7), (530, 12)])
def test_sum_of_squares_by_parseval(shape: tuple[int, int]) -> None:
    """The variance weights Σ c² come from the filters' half spectra by Parseval: equal to
    the sum over the real-space array an inverse FFT would give (to rounding)."""
    from psfmatch._fft import _sumOfSquares

    c = np.random.default_rng(9).normal(size=shape)
    spectrum = np.fft.rfft2(c)
    # Both sides sum ~100 squares of O(1) values; rounding of the FFTs is ~1e-15 relative.
    power = spectrum.real**2 + spectrum.imag**2
    assert _sumOfSquares(shape, power) == pytest.approx(float(np.sum(c * c)), rel=1e-12)
    # The power given as factors (|K̂|²·corr² in the task) is their product.
    half = np.sqrt(power)
    assert _sumOfSquares(shape, half, half) == pytest.approx(float(np.sum(c * c)), rel=1e-12)


@pytest.mark.parametrize("small", [(5, 5), (4, 6), (1, 3), (7, 2)])
def test_centred_padding_is_a_roll(small: tuple[int, int]) -> None:
    """`_padCentred`/`_cropCentred` place the quadrants by slices: exactly what zero-padding
    then rolling the centre pixel (index n//2) to the origin does, and its inverse."""
    from psfmatch._fft import _cropCentred, _padCentred

    array = np.arange(1.0, 1.0 + small[0] * small[1]).reshape(small)
    grid = (11, 12)
    padded = np.zeros(grid)
    padded[: small[0], : small[1]] = array
    rolled = np.roll(padded, (-(small[0] // 2), -(small[1] // 2)), axis=(0, 1))
    np.testing.assert_array_equal(_padCentred(array, grid), rolled)
    np.testing.assert_array_equal(_cropCentred(rolled, small), array)


def test_clipped_mean_variance_of_a_large_plane_from_a_sample() -> None:
    """Above a million pixels the clipped mean variance is taken from a strided sample: it
    equals the clipped mean of every pixel (astropy, independently) to well within the 1e-3
    at which the decorrelation would notice."""
    from astropy.stats import sigma_clipped_stats

    rng = np.random.default_rng(11)
    ny, nx = 1000, 1100  # 1.1e6 pixels: stride 2 shares a factor with 1100, so 3
    yy, xx = np.mgrid[0:ny, 0:nx]
    variance = 60.0 + 0.02 * xx - 0.01 * yy + rng.normal(0.0, 3.0, (ny, nx))
    variance[rng.random((ny, nx)) < 1e-3] = 1e5  # cosmic-ray-like outliers, clipped away
    mask = np.zeros((ny, nx), dtype=np.int32)
    mask[:, 500] = pm.Mask.getPlaneBitMask("BAD")  # a bad column with absurd values
    variance[:, 500] = -1e6
    mi = pm.MaskedImage(np.zeros((ny, nx), np.float32), mask, variance.astype(np.float32))
    task = DecorrelateALKernelTask()
    usable = (mask & pm.Mask.getPlaneBitMask(list(task.config.ignoreMaskPlanes))) == 0
    full, _, _ = sigma_clipped_stats(
        variance.astype(np.float32).astype(np.float64)[usable], sigma=3.0, maxiters=3
    )
    # A third of 1.1e6 values of σ 3 (plus the gradient's spread, ~7): the sample's mean
    # differs from the whole's by ~7/√3.7e5 ≈ 0.01, 2e-4 of 60; 1e-3 allowed.
    assert task._clippedMeanVariance(mi) == pytest.approx(full, rel=1e-3)


def test_clipped_mean_variance_is_astropys_sigma_clipped_mean() -> None:
    """Below `_CLIP_SAMPLE` pixels the clipped mean variance is astropy's
    `sigma_clipped_stats` mean (3σ, 3 iterations) of the usable pixels, which psfmatch takes
    from its clipping alone (without the median and standard deviation it also computes)."""
    from astropy.stats import sigma_clipped_stats

    gen = np.random.default_rng(12)
    variance = gen.normal(50.0, 4.0, (300, 310))
    variance[gen.random(variance.shape) < 0.01] = 1e4  # outliers that the clipping removes
    variance[5, :] = np.nan
    mask = np.zeros(variance.shape, dtype=np.int32)
    mask[:, 7] = pm.Mask.getPlaneBitMask("SAT")
    mi = pm.MaskedImage(np.zeros(variance.shape), mask, variance)
    usable = np.isfinite(variance) & (mask == 0)
    expected, _, _ = sigma_clipped_stats(variance[usable], sigma=3.0, maxiters=3)
    # The same clipping and the same mean of the same float64 values: equal to rounding.
    assert DecorrelateALKernelTask()._clippedMeanVariance(mi) == pytest.approx(
        float(expected), rel=1e-14
    )


@pytest.mark.parametrize("image", [(1, 1), (20, 31), (1024, 1024), (2048, 2000), (4096, 4096)])
def test_fft_grid_is_the_smallest_even_5_smooth_size_without_wraparound(
    image: tuple[int, int],
) -> None:
    """The decorrelation's FFT grid holds the image and a kernel's reach without wrapping
    around (≥ the sum of the two largest sizes − 1), is even (`_sumOfSquares` counts the
    Nyquist column once) and has no prime factor above 5 (pocketfft is several times slower
    on 4138 = 2 · 2069, the bare sum at 4096²); and it is the smallest such size, found here
    by brute force."""
    from psfmatch._fft import _fftShape

    def smooth(n: int) -> bool:
        for p in (2, 3, 5):
            while n % p == 0:
                n //= p
        return n == 1

    kernel, psf = (43, 43), (21, 25)
    grid = _fftShape(kernel, image, psf)
    for axis in (0, 1):
        sizes = sorted((kernel[axis], image[axis], psf[axis]))
        need = sizes[-1] + sizes[-2] - 1
        expected = next(n for n in range(need, 4 * need + 8) if n % 2 == 0 and smooth(n))
        assert grid[axis] == expected


@pytest.mark.parametrize("grid", [(64, 48), (45, 30), (30, 45)])
@pytest.mark.parametrize("small", [(7, 5), (1, 3), (21, 21)])
def test_spectrum_of_a_small_array_is_its_padded_rfft2(
    grid: tuple[int, int], small: tuple[int, int]
) -> None:
    """`_spectrumOfSmall` (the kernel's and PSF's spectra, transformed row by row) is the
    rfft2 of the array zero-padded to the grid with its centre at index 0, written out here
    with numpy: np.roll of the padded array, np.fft.rfft2."""
    from psfmatch._fft import _spectrumOfSmall

    a = np.random.default_rng(4).normal(size=small)
    padded = np.zeros(grid)
    padded[: small[0], : small[1]] = a
    expected = np.fft.rfft2(np.roll(padded, (-(small[0] // 2), -(small[1] // 2)), axis=(0, 1)))
    # Two FFTs of ≤ 64 points on O(1) values: rounding ~1e-15 of the spectrum's scale.
    np.testing.assert_allclose(_spectrumOfSmall(a, grid), expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("tileFft", [16, 512])
@pytest.mark.parametrize(
    ("image", "kernel"), [((1, 1), (1, 1)), ((5, 300), (3, 7)), ((203, 170), (17, 15))]
)
def test_tile_convolution_is_zero_padded_true_convolution(
    monkeypatch: pytest.MonkeyPatch,
    tileFft: int,
    image: tuple[int, int],
    kernel: tuple[int, int],
) -> None:
    """`_convolveTiles` (overlap-save on tiles) is scipy's direct 'same' convolution of the
    image with its unusable pixels (non-finite, or with a given mask bit) set to the mean of
    the others; with ``keepUnusable`` those keep their input values. Tiles of 16 points make
    many tiles, most of them cut by the image's edge; 512, one tile."""
    from scipy.signal import convolve

    from psfmatch import _fft

    monkeypatch.setattr(_fft, "_TILE_FFT", tileFft)
    gen = np.random.default_rng(8)
    a = gen.normal(10.0, 3.0, image)
    k = gen.normal(size=kernel)
    mask = np.zeros(image, dtype=np.int32)
    if a.size > 1:
        a.flat[gen.choice(a.size, 3, replace=False)] = [np.nan, np.inf, -np.inf]
        mask.flat[gen.choice(a.size, 4, replace=False)] = 4
        mask.flat[gen.choice(a.size, 4, replace=False)] |= 2  # a bit that is not asked for
    unusable = ~np.isfinite(a) | ((mask & 4) != 0)
    filled = np.where(unusable, a[~unusable].mean() if (~unusable).any() else 0.0, a)
    expected = convolve(filled, k, mode="same", method="direct")
    for keep in (False, True):
        out = _fft._convolveTiles(a, k, mask=mask, maskBits=4, keepUnusable=keep)
        want = np.where(unusable, a, expected) if keep else expected
        # Float64 FFTs of ≤ 600 points against direct sums of ≤ 255 terms of O(10) values:
        # rounding ~1e-13 of the largest output; 1e-10 of it would still catch a tile's
        # pixel misplaced by one (the image changes by ~1 between neighbours).
        scale = float(np.abs(expected).max())
        np.testing.assert_allclose(out, want, rtol=0, atol=1e-10 * scale)
        assert out.dtype == np.float64
    out32 = _fft._convolveTiles(a.astype(np.float32), k, mask=mask, maskBits=4)
    assert out32.dtype == np.float32
    # Float32 data and transforms: rounding ~1e-7 of the tile's largest values, times the
    # transform's log₂ length and the kernel's ≤ 255 terms: 1e-5 of the largest output.
    np.testing.assert_allclose(out32, expected, rtol=0, atol=1e-5 * scale)


def test_crop_by_tail_is_the_smallest_square_holding_all_but_the_tolerance() -> None:
    """`_cropByTail` on a filter whose |c| falls off as 10^(−r/2) away from its centre (r the
    larger of the two offsets): the square it returns leaves at most the tolerance outside
    (summed here directly), the next smaller square would not, and a filter that has not
    fallen off within a quarter of the grid is not cropped."""
    from psfmatch._fft import _cropCentred
    from psfmatch.decorrelate import _cropByTail

    grid = (96, 90)
    iy, ix = np.arange(grid[0]), np.arange(grid[1])
    r = np.maximum(np.minimum(iy, grid[0] - iy)[:, None], np.minimum(ix, grid[1] - ix)[None, :])
    c = np.where((iy[:, None] + ix[None, :]) % 2, -1.0, 1.0) * 10.0 ** (-r / 2.0)
    tolerance = 1e-6
    crop = _cropByTail(c, (3, 5), tolerance)
    assert crop is not None
    kernel, tail = crop
    side = kernel.shape[0]
    assert kernel.shape == (side, side) and side % 2 == 1
    outside = np.abs(c).sum() - np.abs(_cropCentred(c, (side, side))).sum()
    smaller = np.abs(c).sum() - np.abs(_cropCentred(c, (side - 2, side - 2))).sum()
    # Sums of ~9000 terms ≤ 1: the reported tail equals the direct sum to rounding.
    assert tail == pytest.approx(outside, rel=1e-9, abs=1e-15)
    assert outside <= tolerance < smaller
    np.testing.assert_array_equal(kernel, _cropCentred(c, (side, side)))
    # At least the minimum shape, per axis.
    assert _cropByTail(c, (side + 4, 1), tolerance)[0].shape == (side + 4, side)  # type: ignore[index]
    # Falling off 10× more slowly, the crop would pass a quarter of the grid.
    assert _cropByTail(np.abs(c) ** 0.1, (3, 5), tolerance) is None


# -- the cropped, tiled filter against the whole-grid float64 formulas ------------------------


def centredOnGrid(a: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """``a`` zero-padded to ``grid`` with its centre pixel (n//2) rolled to index 0."""
    out = np.zeros(grid)
    out[: a.shape[0], : a.shape[1]] = a
    return np.roll(out, (-(a.shape[0] // 2), -(a.shape[1] // 2)), axis=(0, 1))


def centreOf(a: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """The ``shape`` (odd) pixels of a grid array around its index 0, centred."""
    rolled = np.roll(a, (shape[0] // 2, shape[1] // 2), axis=(0, 1))
    return rolled[: shape[0], : shape[1]]


def transferFunction(
    kernel: np.ndarray, v: float, t: float, preConv: np.ndarray | None, grid: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The module docstring's filter corr on a whole (complex) FFT grid, and the component
    filters Ĉ₁ = corr (score: P̂·corr) and Ĉ₂ = K̂·corr."""
    kappa = kernel.sum()
    kHat = np.fft.fft2(centredOnGrid(kernel, grid))
    if preConv is None:
        corr = np.sqrt((v + t * kappa**2) / (v + t * np.abs(kHat) ** 2))
        return corr, corr, kHat * corr
    pHat = np.fft.fft2(centredOnGrid(preConv / preConv.sum(), grid))
    corr = (v + t * kappa**2) / (v + t * np.abs(kHat) ** 2 / np.abs(pHat) ** 2)
    return corr, pHat * corr, kHat * corr


def wholeGridDecorrelation(
    d: np.ndarray,
    mask: np.ndarray,
    fillBits: int,
    varUnconv: np.ndarray,
    varConv: np.ndarray,
    kernel: np.ndarray,
    v: float,
    t: float,
    *,
    scale: float = 1.0,
    preConv: np.ndarray | None = None,
    psf: np.ndarray | None = None,
    complete: bool = False,
    grid: tuple[int, int] | None = None,
) -> dict[str, Any]:
    """The decorrelation by the module docstring's formulas, in float64 with numpy's complex
    FFTs of one grid (by default twice the image, so that even a far-reaching filter's tail
    does not wrap around): the filtered mean-filled image with its unusable pixels restored,
    the variance, the weights Σ|Ĉᵢ|²/N (Parseval), the real-space filter c and the filtered
    PSF on the grid grown by the kernel."""
    ny, nx = d.shape
    grid = grid or (2 * ny + kernel.shape[0], 2 * nx + kernel.shape[1])
    corr, cUnconv, cConv = transferFunction(kernel, v, t, preConv, grid)

    def apply(a: np.ndarray, transfer: np.ndarray, unusable: np.ndarray) -> np.ndarray:
        padded = np.zeros(grid)
        padded[:ny, :nx] = np.where(unusable, a[~unusable].mean(), a)
        return np.fft.ifft2(np.fft.fft2(padded) * transfer).real[:ny, :nx]

    flagged = (mask & fillBits) != 0
    unusable = ~np.isfinite(d) | flagged
    image = np.where(unusable, d, apply(d, corr, unusable))
    n = grid[0] * grid[1]
    w1 = float(np.sum(np.abs(cUnconv) ** 2) / n)
    w2 = float(np.sum(np.abs(cConv) ** 2) / n)
    if complete:
        variance = np.zeros(d.shape)
        for plane, spectrum in ((varUnconv, cUnconv), (varConv, cConv)):
            c = np.fft.ifft2(spectrum).real
            planeUnusable = ~np.isfinite(plane) | flagged
            variance += apply(plane, np.fft.fft2(c * c), planeUnusable)
    else:
        variance = w1 * varUnconv + w2 * varConv
    variance[~(np.isfinite(varUnconv) & np.isfinite(varConv))] = np.inf
    out = {
        "image": image,
        "variance": variance / scale,
        "w1": w1,
        "w2": w2,
        "c": np.fft.ifft2(corr).real,
    }
    if psf is not None:
        shape = (psf.shape[0] + kernel.shape[0] - 1, psf.shape[1] + kernel.shape[1] - 1)
        spectrum = np.fft.fft2(centredOnGrid(psf, grid)) * corr
        filtered = centreOf(np.fft.ifft2(spectrum).real, shape)
        out["psf"] = filtered / filtered.sum()
    return out


def decorrelationCase(
    mode: str, dtype: type, ratio: float, shape: tuple[int, int]
) -> dict[str, Any]:
    """A pair of noise images, the difference of the given mode with a NaN border (EDGE |
    NO_DATA), a saturated block (SAT, value 1e6), a bright unmasked residual of ~2e3 σ, a
    template variance with a step, and an off-centre elliptical kernel of sum 1.3 (17 × 15);
    ``ratio`` is t/v. Score mode preconvolves with a Gaussian of σ 1.2 px (15 × 15)."""
    gen = np.random.default_rng(27)
    ny, nx = shape
    yy, xx = np.mgrid[-8:9, -7:8]
    k = np.exp(-((xx - 0.7) ** 2 / (2 * 2.2**2) + (yy + 0.4) ** 2 / (2 * 1.6**2)))
    k *= 1.3 / k.sum()
    sigmaConv = 3.0
    sigmaUnconv = sigmaConv / math.sqrt(ratio)
    unconv = gen.normal(0.0, sigmaUnconv, (ny, nx))
    conv = gen.normal(0.0, sigmaConv, (ny, nx))
    preConv = None
    if mode == "score":
        preConv = gaussian(1.2, 7)
        d = fftconvolve(unconv, preConv, mode="same") - fftconvolve(conv, k, mode="same")
    else:
        d = unconv - fftconvolve(conv, k, mode="same")
        if mode == "science":
            d = -d / 1.3  # (K⊗S − T)/κ with S the convolved image
    d[100:103, 50:53] += 1e4 * np.array([[0.5, 1.0, 0.5], [1.0, 2.0, 1.0], [0.5, 1.0, 0.5]])
    edge = pm.Mask.getPlaneBitMask(["EDGE", "NO_DATA"])
    mask = np.zeros((ny, nx), dtype=np.int32)
    mask[:8] = edge
    mask[:, -8:] = edge
    d[mask != 0] = np.nan
    mask[140:150, 20:40] = pm.Mask.getPlaneBitMask("SAT")
    d[140:150, 20:40] = 1e6
    varUnconv = np.full((ny, nx), sigmaUnconv**2)
    varConv = np.full((ny, nx), sigmaConv**2)
    varConv[60:70, 90:110] *= 2.0
    images = {"unconv": (unconv, varUnconv), "conv": (conv, varConv)}
    science, template = (
        (images["conv"], images["unconv"])
        if mode == "science"
        else (images["unconv"], images["conv"])
    )

    def mi(image: np.ndarray, variance: np.ndarray) -> pm.MaskedImage:
        return pm.MaskedImage(image.astype(dtype), mask.copy(), variance.astype(dtype))

    return {
        "science": mi(*science),
        "template": mi(*template),
        "difference": mi(d, np.ones((ny, nx))),
        "d": d.astype(dtype).astype(np.float64),
        "mask": mask,
        "varUnconv": varUnconv.astype(dtype).astype(np.float64),
        "varConv": varConv.astype(dtype).astype(np.float64),
        "kernel": k,
        "preConv": preConv,
        "psf": gaussian(2.0, 7),
    }


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize(
    ("mode", "ratio", "shape", "side"),
    [
        ("template", 0.05, (203, 170), 41),
        ("template", 2.25, (203, 170), 79),
        ("science", 2.25, (203, 170), 79),
        ("score", 2.25, (420, 390), 197),
    ],
)
def test_cropped_filter_matches_the_whole_grid_formulas(
    monkeypatch: pytest.MonkeyPatch,
    mode: str,
    ratio: float,
    shape: tuple[int, int],
    side: int,
    dtype: type,
) -> None:
    """The decorrelation as run (the filter's real-space image cropped where its tail is
    below `_TAIL_TOLERANCE`, applied by overlap-save tiles: 64-point tiles here, so that the
    image spans several, cut by its edges) against `wholeGridDecorrelation`, float64 on a
    grid twice the image's, in each mode. At t/v = 0.05 the filter is cropped on the first
    grid (8 kernel widths); at 2.25 it reaches farther, and the grid is doubled until it
    holds it within a quarter of its size (here up to the image's whole FFT grid; score
    mode's filter reaches farther still, so its image is larger)."""
    from psfmatch import _fft
    from psfmatch.decorrelate import _TAIL_TOLERANCE

    monkeypatch.setattr(_fft, "_TILE_FFT", 64)
    case = decorrelationCase(mode, dtype, ratio, shape)
    task = DecorrelateALKernelTask()
    res = task.run(
        case["science"],
        case["template"],
        case["difference"],
        case["kernel"],
        templateMatched=mode != "science",
        preConvKernel=case["preConv"],
        psf=case["psf"],
    )
    v, t = (res.tvar, res.svar) if mode == "science" else (res.svar, res.tvar)
    fillBits = pm.Mask.getPlaneBitMask(list(task.config.fillMaskPlanes), skipUnknown=True)
    ref = wholeGridDecorrelation(
        case["d"],
        case["mask"],
        fillBits,
        case["varUnconv"],
        case["varConv"],
        case["kernel"],
        v,
        t,
        scale=1.3**2 if mode == "science" else 1.0,
        preConv=case["preConv"],
        psf=case["psf"],
    )
    md = task.metadata
    assert md["filterSize"] == side and res.decorrelationKernel.shape == (side, side)
    tail = md["filterTail"]
    assert 0.0 <= tail <= _TAIL_TOLERANCE
    # The applied filter is the centre of the whole-grid one (float64 FFTs of ≤ 1e5 points:
    # rounding ~1e-15 of its peak), and the whole-grid filter's |c| outside that centre is
    # within the bound too (measured on the larger grid: the same to rounding).
    np.testing.assert_allclose(
        res.decorrelationKernel, centreOf(ref["c"], (side, side)), rtol=0, atol=1e-12
    )
    outside = np.abs(ref["c"]).sum() - np.abs(res.decorrelationKernel).sum()
    assert outside <= _TAIL_TOLERANCE * (1.0 + 1e-6)

    out = res.correctedMaskedImage
    unusable = ~np.isfinite(case["d"]) | ((case["mask"] & fillBits) != 0)
    largest = float(np.abs(np.where(unusable, 0.0, case["d"])).max())  # 2e4, the residual
    if dtype is np.float64:
        # Each pixel differs by the crop's tail times at most the largest |D| (the bound of
        # `_TAIL_TOLERANCE`), plus float64 rounding (~1e-15 of it).
        atol = (tail + 1e-13) * largest
    else:
        # Float32 tiles round at ~1e-7 of their largest value (the residual), times the
        # transform's log₂ length: 1e-6 of it (0.02, or 5e-3 σ beside a 2e3 σ residual).
        atol = 1e-6 * largest
    np.testing.assert_allclose(out.image.astype(np.float64), ref["image"], rtol=0, atol=atol)
    np.testing.assert_array_equal(out.image[unusable], case["difference"].image[unusable])
    np.testing.assert_array_equal(out.mask, case["mask"])
    # The weights Σcᵢ² of the applied (cropped) filters against Parseval on the whole grid:
    # they differ by the tail's share of Σc² (≤ 1e-16) and rounding.
    assert md["varianceWeightUnconvolved"] == pytest.approx(ref["w1"], rel=1e-10)
    assert md["varianceWeightConvolved"] == pytest.approx(ref["w2"], rel=1e-10)
    finite = np.isfinite(out.image) & np.isfinite(ref["variance"])
    # Float64: rounding; float32: the plane's own rounding (6e-8) of two terms.
    rtol = 1e-12 if dtype is np.float64 else 2e-7
    np.testing.assert_allclose(out.variance[finite], ref["variance"][finite], rtol=rtol)
    assert np.isinf(out.variance[~np.isfinite(ref["variance"])]).all()
    # The PSF through the cropped filter: off by at most the tail times its peak.
    np.testing.assert_allclose(
        res.correctedPsf, ref["psf"], rtol=0, atol=2.0 * _TAIL_TOLERANCE * ref["psf"].max()
    )
    # The transfer function on its own (small, even-sized) grid: the formula there.
    grid = (res.decorrelationFilter.shape[0], 2 * (res.decorrelationFilter.shape[1] - 1))
    corr, _, _ = transferFunction(case["kernel"], v, t, case["preConv"], grid)
    # Float64 FFTs of ≤ 1e5 points: rounding ~1e-15 relative.
    np.testing.assert_allclose(res.decorrelationFilter, corr[:, : grid[1] // 2 + 1], rtol=1e-12)


@pytest.mark.parametrize("mode", ["template", "score"])
def test_complete_variance_propagation_matches_the_whole_grid_formulas(mode: str) -> None:
    """completeVarPlanePropagation on the cropped filter: each variance plane convolved with
    its component filter squared (c₁ = c, score P ⊗ c; c₂ = K ⊗ c) by tiles, against the
    whole-grid float64 formulas (`wholeGridDecorrelation`)."""
    shape = (203, 170) if mode == "template" else (420, 390)
    case = decorrelationCase(mode, np.float64, 2.25, shape)
    config = DecorrelateALKernelConfig()
    config.completeVarPlanePropagation = True
    task = DecorrelateALKernelTask(config=config)
    res = task.run(
        case["science"],
        case["template"],
        case["difference"],
        case["kernel"],
        preConvKernel=case["preConv"],
    )
    assert task.metadata["filterSize"] > 0
    fillBits = pm.Mask.getPlaneBitMask(list(task.config.fillMaskPlanes), skipUnknown=True)
    ref = wholeGridDecorrelation(
        case["d"],
        case["mask"],
        fillBits,
        case["varUnconv"],
        case["varConv"],
        case["kernel"],
        res.svar,
        res.tvar,
        preConv=case["preConv"],
        complete=True,
    )
    variance = res.correctedMaskedImage.variance
    finite = np.isfinite(ref["variance"])
    # The squared filters differ from the whole grid's by twice the crop's tail (≤ 2e-8) of
    # their sum, and the planes are O(10): 1e-7 relative.
    np.testing.assert_allclose(variance[finite], ref["variance"][finite], rtol=1e-7)
    assert np.isinf(variance[~finite]).all()


def test_far_reaching_filter_is_applied_on_the_whole_grid(caplog: pytest.LogCaptureFixture) -> None:
    """A filter whose tail does not fall below `_TAIL_TOLERANCE` within a quarter of the
    image's FFT grid (t/v = 10⁹: it whitens by amplifying the science noise 3·10⁴-fold at high
    frequencies) is applied by float64 FFTs of that whole grid, as before the crop: the
    formulas on the same grid (the filter wraps around it), its kernel-sized centre, and
    the weights by Parseval."""
    from psfmatch._fft import _fftShape

    case = decorrelationCase("template", np.float64, 1e9, (203, 170))
    task = DecorrelateALKernelTask()
    with caplog.at_level("WARNING", logger="psfmatch"):
        res = task.run(
            case["science"], case["template"], case["difference"], case["kernel"], psf=case["psf"]
        )
    assert any("amplifies" in r.getMessage() for r in caplog.records)
    assert task.metadata["filterSize"] == 0 and task.metadata["filterTail"] == 0.0
    grid = _fftShape(case["kernel"].shape, case["d"].shape, case["psf"].shape)
    fillBits = pm.Mask.getPlaneBitMask(list(task.config.fillMaskPlanes), skipUnknown=True)
    ref = wholeGridDecorrelation(
        case["d"],
        case["mask"],
        fillBits,
        case["varUnconv"],
        case["varConv"],
        case["kernel"],
        res.svar,
        res.tvar,
        psf=case["psf"],
        grid=grid,
    )
    assert res.decorrelationFilter.shape == (grid[0], grid[1] // 2 + 1)
    out = res.correctedMaskedImage
    # The same float64 arithmetic in another order (real against complex FFTs): rounding,
    # ~1e-15 of the largest |D'| times the filter's gain (3·10⁴).
    scale = float(np.nanmax(np.abs(ref["image"])))
    np.testing.assert_allclose(out.image, ref["image"], rtol=0, atol=1e-10 * scale)
    np.testing.assert_allclose(
        res.decorrelationKernel, centreOf(ref["c"], case["kernel"].shape), rtol=0, atol=1e-9
    )
    assert task.metadata["varianceWeightUnconvolved"] == pytest.approx(ref["w1"], rel=1e-10)
    assert task.metadata["varianceWeightConvolved"] == pytest.approx(ref["w2"], rel=1e-10)
    np.testing.assert_allclose(res.correctedPsf, ref["psf"], rtol=0, atol=1e-12)
