# SPDX-License-Identifier: BSD-3-Clause
"""Cross-convolution (issue 23, docs/algorithm.md §7.11) against simulated pairs whose PSFs are
not nested: two elongated Gaussians crossed at right angles, and two six-spike PSFs at the
roll angles of the issue's JWST NIRCam pair (41° and 251°, the spikes 30° apart), rendered by
`psfmatch.simulate.simulateCompositePair` (analytic Gaussians integrated over the pixels,
independent of psfmatch's convolution).

Every figure is measured against the simulation's truth: the noise of D/σ (robust σ over all
pixels, over the regions around the stars and the standard deviation over the star cores), the
count of |D/σ| > 5 pixels around the stars, the kernel sum (the true flux scale 1.25) and the
transients' fluxes, fitted in D with ``result.differencePsf`` at their true positions. The
classic modes are run on the same pairs to show what cross-convolution is for; `auto` must
pick it here and must not pick it on the nested ground pairs of `simulatePair`.

The figures of this module's pairs (1024², 600 stars, seed 23; PSFs measured from the stars;
elongated / spiked):

=========================  ==================  ==================  ==================
figure                     convolveTemplate    convolveScience     crossConvolve
=========================  ==================  ==================  ==================
|D/σ| > 5 near stars       3478 / 4665         3900 / 4111         0 / 0
robust σ of D/σ, all       0.969 / 1.039       1.016 / 1.036       1.007 / 1.007
robust σ near stars        1.81 / 2.25         1.92 / 2.16         1.013 / 0.996
std of D/σ, star cores     1.42 / 1.45         1.55 / 1.34         1.014 / 1.005
kernel sum / truth − 1     +1.05 % / +0.18 %   +0.64 % / −0.61 %   −0.10 % / −0.10 %
transient flux / truth     —                   —                   0.997–1.007 /
                                                                   0.994–1.002
sources detected in D      789 / 1034          857 / 1022          12 / 12 (the
                                                                   transients)
=========================  ==================  ==================  ==================

(convolveScience's kernel sum is the template/science ratio, 0.8.) Over seeds 1–3 the
cross-convolution kernel sums were within ±0.06 %, its σ within 2 % of 1.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

import psfmatch as pm
from psfmatch.simulate import CompositePsfModel, simulateCompositePair, simulatePair

SIZE = 1024
FLUX_SCALE = 1.25
#: The issue's NIRCam roll angles: six spikes rotated by 210°, i.e. 30° (mod 60°) apart.
ROLLS = (math.radians(41.0), math.radians(251.0))

PSFS = {
    # σ 2.0 × 1.3 px (FWHM 4.7 × 3.1), the science PSF's long axis along the template's short
    # one: each image is the sharper along one axis.
    "elongated": (
        CompositePsfModel.elongated(2.0, 1.3, 0.0),
        CompositePsfModel.elongated(2.0, 1.3, math.pi / 2),
    ),
    # A core of σ 1.2 px (FWHM 2.8) with a quarter of the flux in six spikes of σ 4 px along
    # and 1 px across (a diffraction spike is about as wide as the core).
    "spiked": (
        CompositePsfModel.spiked(1.2, spikeWidth=1.0, rotation=ROLLS[0]),
        CompositePsfModel.spiked(1.2, spikeWidth=1.0, rotation=ROLLS[1]),
    ),
}
#: Bright transients and a gain of 4 e⁻/ADU: a transient's PSF-fit flux then has a 1-σ error
#: of ~0.25 % (its own Poisson noise, 1/sqrt(4 · 5e4), and the sky), so 1 % is 4σ.
SIMULATION = dict(
    nStars=600,
    seed=23,
    gain=4.0,
    nTransients=12,
    transientFlux=5e4,
    fluxScale=FLUX_SCALE,
)
MODES = ("convolveTemplate", "convolveScience", "crossConvolve")

#: Stars at least this bright (template units) leave residuals a classic mode cannot hide:
#: at the default sky noise their peak S/N is > 100.
BRIGHT = 1e4
#: "Near a star": within this many pixels (a box) of a bright star's centre, about 2 FWHM.
NEAR = 8
#: A star's "core": within this radius (pixels) of a star's centre (every star: the faintest
#: is 2e3, S/N ~ 40). ~15000 pixels: their standard deviation is good to ~0.6 %.
CORE_RADIUS = 3.0
CORE_FLUX = 2e3
#: Pixels within this radius of a transient are its own light, which D must keep (the
#: whitened PSF of a 5e4 transient still has lobes of ±5σ at 8 pixels).
TRANSIENT_RADIUS = 14


def robustSigma(values: np.ndarray) -> float:
    """1.4826 × the median absolute deviation: σ for Gaussian values, blind to a few outliers."""
    return float(1.4826 * np.median(np.abs(values - np.median(values))))


def _starRegions(sim: Any) -> tuple[np.ndarray, np.ndarray]:
    """Boolean maps of the pixels near bright stars and of the star cores, neither within
    `TRANSIENT_RADIUS` of a transient."""
    near = np.zeros((SIZE, SIZE), dtype=bool)
    core = np.zeros((SIZE, SIZE), dtype=bool)
    yy, xx = np.mgrid[-NEAR : NEAR + 1, -NEAR : NEAR + 1]
    for star in sim.stars:
        ix, iy = round(star["x"]), round(star["y"])
        if not (NEAR <= ix < SIZE - NEAR and NEAR <= iy < SIZE - NEAR):
            continue
        box = np.s_[iy - NEAR : iy + NEAR + 1, ix - NEAR : ix + NEAR + 1]
        if star["flux"] >= BRIGHT:
            near[box] = True
        if star["flux"] >= CORE_FLUX:
            r = np.hypot(xx + ix - star["x"], yy + iy - star["y"])
            core[box] |= r <= CORE_RADIUS
    for t in sim.transients:
        r = np.hypot(np.arange(SIZE)[None, :] - t["x"], np.arange(SIZE)[:, None] - t["y"])
        near &= r > TRANSIENT_RADIUS
        core &= r > TRANSIENT_RADIUS
    return near, core


def _fourierShifted(psf: np.ndarray, dx: float, dy: float) -> np.ndarray:
    """``psf`` moved by (dx, dy) pixels by the shift theorem, on a grid padded to twice its
    size (the test's own: the PSF of D is smooth enough for band-limited interpolation)."""
    ny, nx = psf.shape
    grid = np.zeros((2 * ny, 2 * nx))
    grid[ny // 2 : ny // 2 + ny, nx // 2 : nx // 2 + nx] = psf
    fy = np.fft.fftfreq(2 * ny)[:, None]
    fx = np.fft.fftfreq(2 * nx)[None, :]
    moved = np.fft.ifft2(np.fft.fft2(grid) * np.exp(-2j * np.pi * (fx * dx + fy * dy))).real
    return moved[ny // 2 : ny // 2 + ny, nx // 2 : nx // 2 + nx]


#: Half-width of the box a transient's flux is fitted over: ~4 FWHM of D's PSF, holding all
#: but ~1e-3 of its weight Σ P² (a fit over part of the PSF is still unbiased).
FIT_HALF = 12


def psfFlux(difference: pm.MaskedImage, psf: np.ndarray, x: float, y: float) -> tuple[float, float]:
    """The inverse-variance weighted PSF-fit flux (and its 1-σ error) of a point source at
    (x, y) in ``difference``, with ``psf`` (odd, unit sum) moved to its sub-pixel position,
    over the pixels within `FIT_HALF` of it."""
    ix, iy = round(x), round(y)
    model = _fourierShifted(psf, x - ix, y - iy)
    cy, cx = psf.shape[0] // 2, psf.shape[1] // 2
    h = FIT_HALF
    model = model[cy - h : cy + h + 1, cx - h : cx + h + 1]
    box = np.s_[iy - h : iy + h + 1, ix - h : ix + h + 1]
    image = np.asarray(difference.image[box], dtype=float)
    weight = 1.0 / np.asarray(difference.variance[box], dtype=float)
    assert np.isfinite(image).all(), f"the transient at ({x:.1f}, {y:.1f}) reaches D's border"
    norm = float((weight * model * model).sum())
    return float((weight * model * image).sum() / norm), 1.0 / math.sqrt(norm)


def _figures(sim: Any, result: pm.SubtractionResult) -> dict[str, Any]:
    near, core = _starRegions(sim)
    d = result.difference
    z = np.asarray(d.image, dtype=float) / np.sqrt(np.asarray(d.variance, dtype=float))
    valid = np.isfinite(z)
    fluxes = [
        psfFlux(d, result.differencePsf, t["x"], t["y"])
        if result.convolved == "CrossConvolution"
        else (math.nan, math.nan)
        for t in sim.transients
    ]
    return {
        "sigmaAll": robustSigma(z[valid]),
        "sigmaNear": robustSigma(z[valid & near]),
        "stdCores": float(np.std(z[valid & core])),
        "nCores": int((valid & core).sum()),
        "above5Near": int((np.abs(z[valid & near]) > 5).sum()),
        "kernelSum": result.kernelSum,
        "transientRatio": np.array(
            [f / t for (f, _), t in zip(fluxes, sim.transients["flux"], strict=True)]
        ),
        "transientError": np.array(
            [e / t for (_, e), t in zip(fluxes, sim.transients["flux"], strict=True)]
        ),
        "result": result,
    }


@pytest.fixture(scope="module", params=sorted(PSFS))
def outcome(request: pytest.FixtureRequest) -> dict[str, Any]:
    """One non-nested pair subtracted in each mode (cross-convolution with PSFs measured from
    the stars, the default), and its figures."""
    templatePsf, sciencePsf = PSFS[request.param]
    sim = simulateCompositePair(
        (SIZE, SIZE), templatePsf=templatePsf, sciencePsf=sciencePsf, **SIMULATION
    )
    figures = {
        mode: _figures(sim, pm.subtract(sim.science, sim.template, mode=mode)) for mode in MODES
    }
    return {"kind": request.param, "sim": sim, **figures}


def test_cross_convolution_leaves_unit_noise_everywhere(outcome: dict[str, Any]) -> None:
    cross = outcome["crossConvolve"]
    # Robust σ of D/σ within 3 % of 1 (the figure) over the whole image (~1e6 pixels:
    # its own scatter is ~0.1 %) and over the regions around the bright stars (~5e4 pixels,
    # ~0.5 %), and the plain standard deviation, which a residual would inflate, over the star
    # cores (~15000 pixels, ~0.6 %).
    assert abs(cross["sigmaAll"] - 1) < 0.03
    assert abs(cross["sigmaNear"] - 1) < 0.03
    assert cross["nCores"] > 12000
    assert abs(cross["stdCores"] - 1) < 0.03


def test_cross_convolution_beats_both_classic_directions_near_stars(
    outcome: dict[str, Any],
) -> None:
    # Neither classic direction can match these PSFs: both leave thousands of |D/σ| > 5
    # pixels around the stars. Cross-convolution leaves at most a handful (Gaussian noise
    # alone gives 0.03 in ~5e4 pixels): it must beat each classic mode by a factor of 100.
    cross = outcome["crossConvolve"]["above5Near"]
    assert cross <= 5
    for mode in ("convolveTemplate", "convolveScience"):
        classic = outcome[mode]
        assert classic["above5Near"] >= 100 * max(cross, 1), mode
        assert classic["sigmaNear"] > 1.5, mode


def test_cross_convolution_kernel_sum_is_the_flux_scale(outcome: dict[str, Any]) -> None:
    # Within 0.2 % (the figure); a classic fit is pulled off by the PSF mismatch (its
    # kernel sum is ~1 % high here in convolveTemplate).
    assert abs(outcome["crossConvolve"]["kernelSum"] / FLUX_SCALE - 1) < 0.002


def test_transient_fluxes_with_the_difference_psf(outcome: dict[str, Any]) -> None:
    cross = outcome["crossConvolve"]
    ratio = cross["transientRatio"]
    assert len(ratio) == SIMULATION["nTransients"]
    # Each fitted flux within 1 % of the truth. A transient's own photon noise alone is
    # sqrt(F/gain)/F = 0.22 % of its flux (with the sky ~0.3 %, as their scatter here): 1 % is
    # over 3σ. A PSF of D that were wrong (the undecorrelated P_S ⊗ P_T, say) biases them all
    # by several %.
    np.testing.assert_allclose(ratio, 1.0, rtol=0, atol=0.01)
    assert float(np.sqrt(np.mean((ratio - 1) ** 2))) < 0.005
    result = cross["result"]
    assert result.differencePsf.sum() == pytest.approx(1.0, abs=1e-12)


def test_detection_finds_the_transients_and_nothing_else(outcome: dict[str, Any]) -> None:
    # Detection takes D's noise to be white; with the variance times ρ
    # (crossDetectionVarianceFactor, 3-4.5 here) its 5σ is 5σ: every transient, no false
    # source (with the plain variance ~half of its 5σ peaks would be noise).
    sim, result = outcome["sim"], outcome["crossConvolve"]["result"]
    assert result.metadata["crossDetectionVarianceFactor"] > 1.5
    found = result.diaSources
    assert found is not None
    unassociated = found[~found["refAssociated"] & ~found["srcAssociated"]]
    assert len(unassociated) == SIMULATION["nTransients"]
    for t in sim.transients:
        distance = np.hypot(unassociated["x"] - t["x"], unassociated["y"] - t["y"])
        assert distance.min() < 1.0
    for mode in ("convolveTemplate", "convolveScience"):
        classic = outcome[mode]["result"].diaSources
        assert len(classic) > 3 * len(found), mode


def test_auto_cross_convolves_pairs_that_are_not_nested(outcome: dict[str, Any]) -> None:
    sim = outcome["sim"]
    result = pm.subtract(sim.science, sim.template)
    md = result.metadata
    assert result.convolved == "CrossConvolution"
    assert md["autoMode"] == "crossConvolve"
    assert md["psfNested"] is False
    assert md["autoModeReason"].startswith("PSFs not nested")
    # Both directions leave well over the 2 % threshold unexplained (5–30 % here).
    assert md["psfNestingMisfitScienceFromTemplate"] > 0.04
    assert md["psfNestingMisfitTemplateFromScience"] > 0.04
    # The PSFs auto measured are the ones the mode uses: the same answer, bit for bit.
    np.testing.assert_array_equal(
        result.difference.image, outcome["crossConvolve"]["result"].difference.image
    )


def test_cross_convolution_with_the_true_psfs_given() -> None:
    # The PSFs from the user instead of the stars (here the renderer's own images, as a
    # WebbPSF model would be given): the same figures, the kernel sum to 0.05 %.
    templatePsf, sciencePsf = PSFS["spiked"]
    sim = simulateCompositePair(
        (SIZE, SIZE), templatePsf=templatePsf, sciencePsf=sciencePsf, **SIMULATION
    )
    result = pm.subtract(
        sim.science,
        sim.template,
        mode="crossConvolve",
        sciencePsf=sciencePsf.computeKernelImage(),
        templatePsf=templatePsf,
    )
    figures = _figures(sim, result)
    assert result.metadata["crossSciencePsfSource"] == "given"
    assert result.metadata["crossTemplatePsfSource"] == "given"
    assert abs(figures["sigmaAll"] - 1) < 0.03
    assert abs(figures["sigmaNear"] - 1) < 0.03
    assert abs(figures["stdCores"] - 1) < 0.03
    assert figures["above5Near"] <= 5
    assert abs(figures["kernelSum"] / FLUX_SCALE - 1) < 5e-4
    np.testing.assert_allclose(figures["transientRatio"], 1.0, rtol=0, atol=0.01)


def test_spatially_varying_given_psfs() -> None:
    # Elongated PSFs whose science axis turns by 0.6 rad across the image, crossing the
    # template's: given as VaryingPsf objects, the PSFs are sampled over the image and fitted
    # by a field of order 2 (crossConvolve.psfSpatialOrder) that the convolution follows.
    n = 768

    def sciencePsf(x: np.ndarray, y: np.ndarray) -> tuple[Any, Any, Any]:
        theta = 0.3 + 0.6 * np.asarray(x, dtype=float) / n
        return 2.1 + 0 * theta, 1.4 + 0 * theta, theta

    def templatePsf(x: np.ndarray, y: np.ndarray) -> tuple[Any, Any, Any]:
        zero = 0 * np.asarray(x, dtype=float)
        return 2.1 + zero, 1.4 + zero, -1.2 + zero

    sim = simulatePair(
        (n, n), templateSigma=templatePsf, scienceSigma=sciencePsf, nStars=450, seed=7
    )
    models = {
        name: pm.simulate.GaussianPsfModel(function)
        for name, function in (("science", sciencePsf), ("template", templatePsf))
    }
    given = {
        f"{name}Psf": pm.VaryingPsf(lambda x, y, m=model: m.computeImage(x, y, size=31), 31, 31)
        for name, model in models.items()
    }
    result = pm.subtract(sim.science, sim.template, mode="crossConvolve", **given)
    assert result.metadata["crossSciencePsfSpatialOrder"] == 2
    assert result.metadata["crossTemplatePsfSpatialOrder"] == 0
    z = result.difference.image / np.sqrt(result.difference.variance)
    valid = np.isfinite(z)
    near = np.zeros(z.shape, dtype=bool)
    for star in sim.stars[sim.stars["flux"] >= BRIGHT]:
        ix, iy = round(star["x"]), round(star["y"])
        near[max(iy - NEAR, 0) : iy + NEAR + 1, max(ix - NEAR, 0) : ix + NEAR + 1] = True
    # The same 3 % as the constant pairs, and no |D/σ| > 5 pixel near a star (classic modes
    # leave hundreds here).
    assert abs(robustSigma(z[valid]) - 1) < 0.03
    assert abs(robustSigma(z[valid & near]) - 1) < 0.03
    assert int((np.abs(z[valid & near]) > 5).sum()) <= 5
    assert abs(result.kernelSum / 1.25 - 1) < 0.002


@pytest.mark.parametrize(
    ("name", "simulation", "expected"),
    [
        # simulatePair's default ground pair: round Gaussians, the science broader (σ 2.2 →
        # 2.8 across the image against 1.6).
        ("default", dict(seed=1), "convolveTemplate"),
        # psfmatch demo's pair (FWHM 3.8 px against 5.2 → 6.6 px).
        (
            "demo",
            dict(templateSigma=3.8 / 2.3548, scienceSigma=(2.208, 2.803), seed=0),
            "convolveTemplate",
        ),
        # The science image the sharper one.
        ("sharper science", dict(templateSigma=2.4, scienceSigma=1.7, seed=3), "convolveScience"),
        # Elliptical science PSF that still contains the round template PSF.
        (
            "elliptical, nested",
            dict(
                templateSigma=1.6,
                scienceSigma=lambda x, y: (2.6 + 0 * x, 2.1 + 0 * x, 0.5 + 0 * x),
                seed=6,
            ),
            "convolveTemplate",
        ),
    ],
)
def test_auto_keeps_the_classic_modes_for_nested_ground_pairs(
    name: str, simulation: dict[str, Any], expected: str
) -> None:
    sim = simulatePair((SIZE, SIZE), **simulation)
    task = pm.ImagePsfMatchTask(config=_autoConfig())
    auto = task.matchMaskedImages(sim.template, sim.science)
    md = task.metadata
    assert md["autoMode"] == expected, md["autoModeReason"]
    assert md["psfNested"] is True
    assert md["autoModeReason"].startswith("PSFs nested")
    # The blur direction fits to well under the 2 % threshold (measured: < 1 %).
    assert (
        min(md["psfNestingMisfitScienceFromTemplate"], md["psfNestingMisfitTemplateFromScience"])
        < 0.01
    )
    # And the answer is the classic mode's, bit for bit: comparing the PSFs changes nothing.
    config = _autoConfig()
    config.mode = expected
    classic = pm.ImagePsfMatchTask(config=config).matchMaskedImages(sim.template, sim.science)
    np.testing.assert_array_equal(
        auto.psfMatchingKernel.computeImage(500.0, 500.0)[0],
        classic.psfMatchingKernel.computeImage(500.0, 500.0)[0],
    )


def test_auto_without_enough_isolated_stars_falls_back_to_the_fwhms() -> None:
    # The golden-output pair (512², 500 stars): too crowded for a 51² PSF stamp with no
    # bright neighbour; auto then chooses by the FWHMs as before and says why.
    sim = simulatePair((512, 512), nStars=500, seed=11)
    task = pm.ImagePsfMatchTask(config=_autoConfig())
    task.matchMaskedImages(sim.template, sim.science)
    md = task.metadata
    assert md["autoMode"] == "convolveTemplate"
    assert md["autoModeReason"].startswith("PSFs not compared")
    assert "psfNested" not in md


def test_auto_can_be_told_not_to_compare_the_psfs() -> None:
    templatePsf, sciencePsf = PSFS["elongated"]
    sim = simulateCompositePair(
        (512, 512), templatePsf=templatePsf, sciencePsf=sciencePsf, nStars=150, seed=5
    )
    config = _autoConfig()
    config.crossConvolve.autoMeasurePsfs = False
    task = pm.ImagePsfMatchTask(config=config)
    task.matchMaskedImages(sim.template, sim.science)
    assert task.metadata["autoMode"] in ("convolveTemplate", "convolveScience")
    assert "autoMeasurePsfs is off" in task.metadata["autoModeReason"]


def _autoConfig() -> pm.ImagePsfMatchConfig:
    config = pm.ImagePsfMatchConfig()
    config.mode = "auto"
    return config


def test_command_line_cross_convolution_with_fits_psfs(
    tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    from astropy.io import fits

    from psfmatch import io as pmio
    from psfmatch.cli import main

    templatePsf, sciencePsf = PSFS["elongated"]
    sim = simulateCompositePair(
        (512, 512), templatePsf=templatePsf, sciencePsf=sciencePsf, nStars=200, seed=8
    )
    paths = {name: tmp_path / f"{name}.fits" for name in ("science", "template")}
    pmio.writeMaskedImage(paths["science"], sim.science)
    pmio.writeMaskedImage(paths["template"], sim.template)
    for name, psf in (("sciencePsf", sciencePsf), ("templatePsf", templatePsf)):
        paths[name] = tmp_path / f"{name}.fits"
        fits.PrimaryHDU(psf.computeKernelImage(size=25)).writeto(paths[name])
    before = {name: path.read_bytes() for name, path in paths.items()}
    output = tmp_path / "difference.fits"
    argv = [
        "subtract",
        "--science",
        str(paths["science"]),
        "--template",
        str(paths["template"]),
        "--output",
        str(output),
        "--mode",
        "crossConvolve",
        "--science-psf",
        str(paths["sciencePsf"]),
        "--template-psf",
        str(paths["templatePsf"]),
    ]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "cross-convolution" in printed
    header = fits.getheader(output, 0)
    assert header["CONVOL"] == "CROSS"
    # The plumbing, not the precision (that is the 1024² pairs' above): 200 stars on 512²
    # leave the kernel sum a scatter of ~0.2 %.
    assert abs(header["KSUM"] / FLUX_SCALE - 1) < 0.006
    assert {name: path.read_bytes() for name, path in paths.items()} == before
    # auto picks it too, and says why.
    assert main([*argv[:6], str(tmp_path / "auto.fits")]) == 0
    assert "mode auto       : PSFs not nested" in capsys.readouterr().out
    assert fits.getheader(tmp_path / "auto.fits", 0)["CONVOL"] == "CROSS"


def test_cross_convolution_errors() -> None:
    # Too crowded for a PSF stamp without a bright neighbour: a named error (auto falls back).
    sim = simulatePair((512, 512), nStars=500, seed=11)
    with pytest.raises(
        pm.InsufficientKernelSourcesError, match="too few isolated stars to measure a PSF"
    ):
        pm.subtract(sim.science, sim.template, mode="crossConvolve")
    # PSFs as large as the image leave nothing to cross-convolve.
    small = simulatePair(
        (64, 64),
        nStars=6,
        seed=3,
        nTransients=0,
        templateSigma=1.2,
        scienceSigma=1.5,
        fluxRange=(2e4, 5e4),
    )
    config = pm.ImagePsfMatchConfig()
    config.crossConvolve.psfMaxHalfWidth = 32
    psf = pm.GaussianPsf(65, 65, 1.5)
    with pytest.raises(pm.InvalidInputError, match="leave no pixels of the 64 x 64 image"):
        pm.subtract(
            small.science,
            small.template,
            mode="crossConvolve",
            config=config,
            sciencePsf=psf,
            templatePsf=psf,
            candidates=[(s["x"], s["y"]) for s in small.stars],
        )
    with pytest.raises(pm.InvalidInputError, match="sciencePsf: expected an odd-sized"):
        pm.subtract(sim.science, sim.template, mode="crossConvolve", sciencePsf=np.ones((4, 4)))
    with pytest.raises(pm.InputFileNotFoundError, match="templatePsf: no such file"):
        pm.subtract(sim.science, sim.template, mode="crossConvolve", templatePsf="nowhere.fits")


def test_cross_convolution_leaves_its_inputs_alone_and_keeps_float32() -> None:
    templatePsf, sciencePsf = PSFS["spiked"]
    sim = simulateCompositePair(
        (384, 384), templatePsf=templatePsf, sciencePsf=sciencePsf, nStars=150, seed=2
    )
    before = [
        (mi.image.copy(), mi.mask.copy(), mi.variance.copy()) for mi in (sim.science, sim.template)
    ]
    config = pm.ImagePsfMatchConfig()
    config.keepMatchedImage = False
    result = pm.subtract(sim.science, sim.template, mode="crossConvolve", config=config)
    for mi, (image, mask, variance) in zip((sim.science, sim.template), before, strict=True):
        np.testing.assert_array_equal(mi.image, image)
        np.testing.assert_array_equal(mi.mask, mask)
        np.testing.assert_array_equal(mi.variance, variance)
    assert result.difference.image.dtype == np.float32
    assert result.matched is None
    # D is in science units and κ the science/template flux ratio, as for convolveTemplate.
    inTemplate = result.inUnits("template")
    np.testing.assert_allclose(
        inTemplate.difference.image[192, 192],
        result.difference.image[192, 192] / result.kernelSum,
        rtol=1e-6,
    )
    # The border a PSF and the decorrelation cannot reach: NaN, +inf, EDGE | NO_DATA.
    blank = ~np.isfinite(result.difference.image)
    assert blank[:, 0].all() and blank[0].all() and not blank[192, 192]
    assert np.all(result.difference.mask[blank] & pm.Mask.getPlaneBitMask("NO_DATA"))
    assert np.all(np.isinf(result.difference.variance[blank]))
