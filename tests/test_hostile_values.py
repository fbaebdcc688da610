# SPDX-License-Identifier: BSD-3-Clause
"""Issue 20, item 1: hostile pixel values and forced modes never give a silent wrong answer.

- Absurd finite values (a −1e30 "no data" block, one 1e20 or 1e30 pixel) are flagged BAD and
  NO_DATA with one warning saying how many and where; D is NaN where they reach and, away from
  them, the subtraction of the clean pair (same detections, D/σ with unit robust spread).
- NaN in, NaN out (README): a NaN pixel of either image gives NaN with +inf variance in D
  wherever it reaches, in every mode.
- A forced deconvolution warns with both FWHMs and says so in the metadata.
- A difference far from its own noise raises `PoorSubtractionError` unless
  ``allowPoorSubtraction``.
- ``fluxScale`` is the science/template flux ratio in every mode; ``kernelSum`` the raw sum.

Each of these failed on the code before issue 20 (finite garbage, 4022 spurious detections,
a bare sep ``Exception``, no warning, no error, kernelSum 0.80 for a 1.25 flux ratio).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import psfmatch
from psfmatch import ImagePsfMatchConfig, errors
from psfmatch.image import Mask
from psfmatch.simulate import simulatePair

SHAPE = (384, 384)


@pytest.fixture(scope="module")
def pair() -> Any:
    return simulatePair(SHAPE, nStars=60, seed=5)


def _subtract(pair: Any, science: np.ndarray, template: np.ndarray, **kwargs: Any) -> Any:
    return psfmatch.subtract(
        science,
        template,
        scienceVariance=pair.science.variance,
        templateVariance=pair.template.variance,
        **kwargs,
    )


@pytest.fixture(scope="module")
def clean(pair: Any) -> Any:
    return _subtract(pair, pair.science.image, pair.template.image, mode="convolveTemplate")


def _robustSigma(result: Any, keep: np.ndarray) -> float:
    d, v = result.image, result.variance
    ok = keep & np.isfinite(d) & np.isfinite(v) & (v > 0)
    z = d[ok] / np.sqrt(v[ok])
    q25, q75 = np.percentile(z, [25, 75])
    return float(0.741301109 * (q75 - q25))


def _far(shape: tuple[int, int], boxes: list[tuple[slice, slice]], margin: int) -> np.ndarray:
    far = np.ones(shape, dtype=bool)
    for ys, xs in boxes:
        far[
            max(ys.start - margin, 0) : ys.stop + margin,
            max(xs.start - margin, 0) : xs.stop + margin,
        ] = False
    return far


CASES = {
    "block-1e30": ("science", (slice(100, 110), slice(200, 210)), -1e30),
    "pixel-1e20": ("science", (slice(300, 301), slice(150, 151)), 1e20),
    "pixel-1e30": ("science", (slice(300, 301), slice(150, 151)), 1e30),
    "template-pixel-1e30": ("template", (slice(60, 61), slice(250, 251)), 1e30),
}


@pytest.mark.parametrize("case", list(CASES))
def test_absurd_values_are_flagged_and_do_not_spread(
    pair: Any, clean: Any, case: str, caplog: Any
) -> None:
    which, box, value = CASES[case]
    science, template = pair.science.image.copy(), pair.template.image.copy()
    (science if which == "science" else template)[box] = value
    result = _subtract(pair, science, template, mode="convolveTemplate")
    n = int(np.ones(SHAPE)[box].sum())
    flagged = [w for w in result.warnings if "absurd values" in w]
    assert len(flagged) == 1, result.warnings
    assert f"{which}: {n} pixel(s)" in flagged[0]
    assert f"(x, y) = ({box[1].start}, {box[0].start})" in flagged[0]
    assert result.metadata[f"{which}AbsurdPixelsFlagged"] == n
    # At the bad pixels: NaN, +inf variance, BAD | NO_DATA.
    bits = Mask.getPlaneBitMask(["BAD", "NO_DATA"])
    assert np.all(np.isnan(result.image[box])) and np.all(np.isinf(result.variance[box]))
    assert np.all((result.mask[box] & bits) == bits)
    # Away from them (two kernel widths), D is the clean pair's: unit robust spread of D/σ
    # (3 %: the scatter of that figure over ~1e5 pixels is ~0.3 %; the absurd value spread by
    # the decorrelation filter gave 4.5 to 1e18), the same detections.
    far = _far(SHAPE, [box], 50)
    assert _robustSigma(result, far) == pytest.approx(1.0, abs=0.03)
    assert _robustSigma(result, far) == pytest.approx(_robustSigma(clean, far), abs=2e-3)

    def near(table: Any) -> np.ndarray:
        x, y = (
            np.asarray(table["x"]).round().astype(int),
            np.asarray(table["y"]).round().astype(int),
        )
        return np.array([far[yy, xx] for xx, yy in zip(x, y, strict=True)], dtype=bool)

    a, b = result.diaSources, clean.diaSources
    a, b = a[near(a)], b[near(b)]
    assert len(a) == len(b)
    # The same sources: the variance rescaling and the kernel, measured without the flagged
    # pixels, move a faint detection's barycentre by up to ~0.2 px; another source is ≥ 1 px.
    np.testing.assert_allclose(np.array([a["x"], a["y"]]), np.array([b["x"], b["y"]]), atol=0.5)


def test_masked_absurd_values_do_not_spread(pair: Any) -> None:
    """A −1e30 block the user already flagged BAD (a MaskedImage) stays within its mask bits:
    neither the convolution nor the decorrelation filter carries its value elsewhere. The
    reference is the same pair with the same block flagged but holding its real values."""
    box = (slice(100, 110), slice(200, 210))
    config = ImagePsfMatchConfig()
    config.mode = "convolveTemplate"
    flagged = pair.science.clone()
    flagged.mask[box] |= Mask.getPlaneBitMask("BAD")
    reference = psfmatch.subtract(flagged, pair.template, config=config)
    flagged.image[box] = -1e30
    result = psfmatch.subtract(flagged, pair.template, config=config)
    far = _far(SHAPE, [box], 50)
    ok = far & np.isfinite(reference.image)
    # Far from the block D is the reference's to 1e-3 σ (float32 rounding of the filter);
    # the spread value gave |D| ~ 1e18 before.
    diff = np.abs(result.image[ok] - reference.image[ok]) / np.sqrt(reference.variance[ok])
    assert diff.max() < 1e-3
    assert not any("absurd" in w for w in result.warnings)


MODES = ["convolveTemplate", "convolveScience", "auto", "preconvolve", "crossConvolve"]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("which", ["science", "template"])
def test_nan_in_gives_nan_out(pair: Any, mode: str, which: str) -> None:
    """README: D is NaN with +inf variance where it cannot be computed; a NaN input pixel
    (flagged NO_DATA on the way in) is such a pixel, in every mode. Before, D there was a
    finite −(K⊗T + b) (D/σ ≈ −450) marked only NO_DATA."""
    science, template = pair.science.image.copy(), pair.template.image.copy()
    (science if which == "science" else template)[200:203, 180:183] = np.nan
    result = _subtract(pair, science, template, mode=mode)
    assert np.all(np.isnan(result.image[200:203, 180:183]))
    assert np.all(np.isposinf(result.variance[200:203, 180:183]))
    assert np.all(
        result.rawDifference.image[200:203, 180:183] != result.rawDifference.image[200:203, 180:183]
    )
    # Every NO_DATA pixel of D is NaN, and only those (no other pixel is lost).
    noData = (result.mask & Mask.getPlaneBitMask("NO_DATA")) != 0
    np.testing.assert_array_equal(np.isnan(result.image), noData)


def test_nan_masked_in_a_maskedimage_gives_nan_out(pair: Any) -> None:
    science = pair.science.clone()
    science.image[50:52, 60:62] = np.nan
    science.mask[50:52, 60:62] |= Mask.getPlaneBitMask("SAT")
    result = psfmatch.subtract(science, pair.template)
    assert np.all(np.isnan(result.image[50:52, 60:62]))
    assert np.all(np.isposinf(result.variance[50:52, 60:62]))


def test_forced_deconvolution_warns(pair: Any) -> None:
    """The template is the sharper image here; swapping the roles and forcing
    convolveTemplate makes the kernel deconvolve."""
    result = psfmatch.subtract(
        pair.template.image,
        pair.science.image,
        scienceVariance=pair.template.variance,
        templateVariance=pair.science.variance,
        mode="convolveTemplate",
        config=_allowPoor(),
    )
    warned = [w for w in result.warnings if "deconvolves" in w]
    assert len(warned) == 1
    t, s = result.metadata["templatePsfSize"], result.metadata["sciencePsfSize"]
    assert t > s
    assert f"{t:.2f} px" in warned[0] and f"{s:.2f} px" in warned[0]
    assert result.metadata["deconvolution"] is True


@pytest.mark.parametrize("mode", ["convolveTemplate", "auto"])
def test_no_deconvolution_warning_when_the_narrower_psf_is_convolved(
    clean: Any, pair: Any, mode: str
) -> None:
    result = (
        clean
        if mode == "convolveTemplate"
        else _subtract(pair, pair.science.image, pair.template.image)
    )
    assert not any("deconvolves" in w for w in result.warnings)
    assert result.metadata["deconvolution"] is False


def _allowPoor(order: int | None = None) -> ImagePsfMatchConfig:
    config = ImagePsfMatchConfig()
    config.allowPoorSubtraction = True
    return config


def test_healthy_runs_are_near_one(clean: Any) -> None:
    # Pure noise gives 1 by construction; a good subtraction of a simulated pair 1.0-1.1.
    assert 0.9 < clean.metadata["differenceSkyChi2"] < 1.3


def test_a_subtraction_far_from_its_noise_is_an_error(pair: Any) -> None:
    """Scattered light in the science image alone (a ripple of amplitude 40, five times its
    sky σ, that no first-order background can model), variances not rescaled: the kernel and
    background fit what they can and D keeps a ripple of ~4 σ rms, mean (D/σ)² ~18 (1 + 40²/4
    over D's variance ~70, less what the fit absorbs). The issue's own cases (a spatial kernel
    order far beyond what the stars constrain: D's std 1e4 against 8.4) succeeded silently
    too; order 6 on this pair measures 5.6."""
    y, x = np.mgrid[0 : SHAPE[0], 0 : SHAPE[1]]
    ripple = 40.0 * np.sin(2 * np.pi * x / 96) * np.sin(2 * np.pi * y / 96)
    science = pair.science.image + ripple.astype(np.float32)
    config = ImagePsfMatchConfig()
    config.doScaleVariance = False
    with pytest.raises(errors.PoorSubtractionError, match="allowPoorSubtraction") as info:
        _subtract(pair, science, pair.template.image, config=config)
    # Measured 18.0 when written, 7.3 since kernel sources are found at a matched-filter S/N
    # (twice as many stars: the spatially varying kernel sum, times the template's sky,
    # takes up more of the ripple). 5..40 holds both with room, and stays above the limit 4.
    assert 5 < info.value.chi2 < 40
    assert info.value.limit == 4.0
    config.allowPoorSubtraction = True
    result = _subtract(pair, science, pair.template.image, config=config)
    assert result.metadata["differenceSkyChi2"] == pytest.approx(info.value.chi2)
    assert any("allowPoorSubtraction" in w for w in result.warnings)


def test_flux_scale_is_science_over_template_in_every_mode() -> None:
    """A pair whose science image is sharper: auto convolves the science image, whose kernel
    sum is template/science (0.8 for the simulated 1.25); fluxScale is 1.25 either way."""
    sharp = simulatePair(SHAPE, nStars=60, seed=7, templateSigma=2.6, scienceSigma=1.6)
    truth = sharp.truth.fluxScale
    kwargs = {
        "scienceVariance": sharp.science.variance,
        "templateVariance": sharp.template.variance,
    }
    auto = psfmatch.subtract(sharp.science.image, sharp.template.image, **kwargs)
    assert auto.convolved == "Science"
    # 1 %: several times the kernel sum's scatter from the noise of a 384² pair.
    assert auto.fluxScale == pytest.approx(truth, rel=1e-2)
    assert auto.kernelSum == pytest.approx(1.0 / truth, rel=1e-2)
    broad = simulatePair(SHAPE, nStars=60, seed=7)
    ct = psfmatch.subtract(
        broad.science.image,
        broad.template.image,
        scienceVariance=broad.science.variance,
        templateVariance=broad.template.variance,
    )
    assert ct.convolved == "Template"
    assert ct.fluxScale == ct.kernelSum == pytest.approx(broad.truth.fluxScale, rel=1e-2)


def test_sep_deblending_overflow_is_retried_or_named(pair: Any, monkeypatch: Any) -> None:
    """sep's bare ``Exception("object deblending overflow")`` (seen with one unmasked 1e30
    pixel) is retried without deblending; if sep still fails, a named PsfMatchError."""
    import sep

    from psfmatch import _sepguard

    real = sep.extract

    def overflowing(data: Any, thresh: float, **kwargs: Any) -> Any:
        # Only a deblending extraction can overflow the deblending buffer.
        if kwargs.get("deblend_cont") != 1.0 and kwargs.get("deblend_nthresh", 32) > 1:
            raise Exception("object deblending overflow")
        return real(data, thresh, **kwargs)

    monkeypatch.setattr(sep, "extract", overflowing)
    result = _subtract(pair, pair.science.image, pair.template.image)
    assert result.diaSources is not None and len(result.diaSources) >= 10

    def broken(data: Any, thresh: float, **kwargs: Any) -> Any:
        raise Exception("internal pixel buffer full")

    monkeypatch.setattr(sep, "extract", broken)
    data = np.ascontiguousarray(pair.science.image)
    with pytest.raises(errors.PsfMatchError, match="sep could not detect the stars"):
        _sepguard.extract(data, 5.0, what="stars")


def test_command_line_fails_on_a_poor_subtraction_unless_allowed(
    pair: Any, tmp_path: Any, capsys: Any
) -> None:
    """`psfmatch subtract`: exit 1 with one message and no output file; with
    ``--allow-poor-subtraction`` the difference is written (exit 0)."""
    from psfmatch import io as pmio
    from psfmatch.cli import main

    y, x = np.mgrid[0 : SHAPE[0], 0 : SHAPE[1]]
    science = pair.science.clone()
    science.image += (40.0 * np.sin(2 * np.pi * x / 96) * np.sin(2 * np.pi * y / 96)).astype(
        np.float32
    )
    pmio.writeMaskedImage(tmp_path / "s.fits", science)
    pmio.writeMaskedImage(tmp_path / "t.fits", pair.template)
    argv = ["subtract", "--science", tmp_path / "s.fits", "--template", tmp_path / "t.fits"]
    argv += ["--set", "doScaleVariance=False", "-q"]
    out = tmp_path / "d.fits"
    assert main([str(a) for a in [*argv, "--output", out]]) == 1
    err = capsys.readouterr().err
    assert "far from its own noise" in err and "--allow-poor-subtraction" in err
    assert "Traceback" not in err and not out.exists()
    status = main([str(a) for a in [*argv, "--output", out, "--allow-poor-subtraction"]])
    assert status == 0 and out.exists()
