# SPDX-License-Identifier: BSD-3-Clause
"""Images on one parent grid by their origins (xy0): a larger or offset template is placed on
the science image's box; origins that the stars contradict, and too little coverage, are
named errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import psfmatch as pm
from psfmatch._placement import placeTemplate, starOffset
from psfmatch.cli import main
from psfmatch.io import readMaskedImage
from psfmatch.simulate import simulatePair

NO_DATA = pm.Mask.getPlaneBitMask("NO_DATA")


def _quickConfig() -> pm.ImagePsfMatchConfig:
    config = pm.ImagePsfMatchConfig()
    config.doDecorrelation = config.doDetectDiaSources = False
    config.kernel.active.spatialKernelOrder = 1
    return config


def _at(mi: pm.MaskedImage, x0: int, y0: int, nx: int, ny: int) -> pm.MaskedImage:
    """A copy of ``mi``'s pixels [y0:y0+ny, x0:x0+nx] (array indices) at origin (x0, y0)."""
    box = pm.Box2I((x0 + mi.getXY0()[0], y0 + mi.getXY0()[1]), (nx, ny))
    return mi.subimage(box)


@pytest.fixture(scope="module")
def sky() -> Any:
    """A 384² pair on the parent grid's origin: cut-outs of it are windows of one grid."""
    return simulatePair((384, 384), nStars=160, seed=11, nTransients=0)


def test_larger_template_is_cut_to_the_science_box(sky: Any) -> None:
    science = _at(sky.science, 64, 48, 256, 272)
    result = pm.subtract(science, sky.template, mode="convolveTemplate", config=_quickConfig())
    assert result.difference.getBBox() == science.getBBox()
    assert result.metadata["templatePlacedByOrigin"] is True
    assert result.metadata["templateCoveragePercent"] == 100.0
    # The convolved template is the whole template convolved with the fitted kernel, cut to
    # the science box: the placement's offset and its margin are both right. Each output pixel
    # reads the same input pixels either way, so the two agree to float32 rounding of sums
    # taken in another order (a relative 1e-5 of the brightest stars' ~1e5 counts).
    whole = pm.convolve(sky.template, result.kernel)
    expected = whole.image[48 : 48 + 272, 64 : 64 + 256]
    np.testing.assert_allclose(result.matched.image, expected, rtol=1e-5, atol=1e-2)
    # The template reaches 48+ px beyond every side of the science box, more than the kernel's
    # half-width: D is real data up to the science image's own edges (the convolution of a
    # template cut exactly to the box would leave an EDGE border of NaN there).
    assert np.isfinite(result.difference.image).all()
    assert not (result.difference.mask & pm.Mask.getPlaneBitMask("EDGE")).any()
    # The kernel sum is the simulation's flux scale, as for a same-box pair: 0.5 % for a
    # 256² field of ~70 stars with an order-1 spatial fit (test_image_psf_match holds the
    # 384² same-grid fit to its own tolerance).
    assert result.kernelSum == pytest.approx(sky.truth.fluxScale, rel=5e-3)


def test_offset_template_leaves_no_data_where_it_does_not_reach(sky: Any) -> None:
    science = _at(sky.science, 0, 0, 384, 384)
    # The template's window starts 96 px right of the science image's and stops at its edge.
    template = _at(sky.template, 96, 0, 288, 384)
    result = pm.subtract(science, template, mode="convolveTemplate", config=_quickConfig())
    assert result.metadata["templateCoveragePercent"] == pytest.approx(100 * 288 / 384, rel=1e-12)
    half = int(result.kernel.getDimensions()[0]) // 2
    d = result.difference
    # Left of the template (and within the kernel's reach of it): NaN, +inf, NO_DATA.
    assert np.isnan(d.image[:, : 96 + half]).all()
    assert np.isinf(d.variance[:, : 96 + half]).all()
    assert ((d.mask[:, : 96 + half] & NO_DATA) != 0).all()
    # Past that, away from the convolution's border, D is finite and unflagged.
    inner = d.image[half:-half, 96 + half : -half]
    assert np.isfinite(inner).all()
    assert not (d.mask[half:-half, 96 + half : -half] & NO_DATA).any()


def test_too_little_template_coverage_is_a_named_error(sky: Any) -> None:
    science = _at(sky.science, 0, 0, 384, 384)
    template = _at(sky.template, 360, 0, 24, 384)  # 24 of 384 columns: 6.25 %
    with pytest.raises(pm.TemplateCoverageError, match=r"covers 6\.25% .*0\.1") as info:
        pm.subtract(science, template, config=_quickConfig())
    assert info.value.coveredFraction == pytest.approx(24 / 384, rel=1e-12)
    assert isinstance(info.value, pm.InvalidInputError)
    # The same coverage passes when the user asks for less.
    config = _quickConfig()
    config.requiredTemplateFraction = 0.05
    with pytest.raises(pm.NoKernelCandidatesError):  # 24 columns hold no usable star stamps
        pm.subtract(science, template, config=config)


def test_coverage_counts_the_templates_no_data_on_one_grid(sky: Any) -> None:
    template = sky.template.clone()
    template.mask[:, 20:] |= NO_DATA  # 20 of 384 columns with data
    with pytest.raises(pm.TemplateCoverageError, match=r"covers 5\.21%"):
        pm.subtract(sky.science, template, config=_quickConfig())


def test_origins_the_stars_contradict_are_reported(sky: Any) -> None:
    # Same pixels, but the template's header claims it starts 15 px further: the stars say
    # the two arrays are aligned as they are.
    template = pm.MaskedImage(
        sky.template.image, sky.template.mask, sky.template.variance, xy0=(15, 15)
    )
    with pytest.raises(pm.OriginMismatchError, match="ignoreOrigins=True") as info:
        pm.subtract(sky.science, template, config=_quickConfig())
    message = str(info.value)
    assert "pixel (15, 15)" in message and "--ignore-origins" in message
    assert info.value.originOffset == (15, 15)
    np.testing.assert_allclose(info.value.starOffset, (0.0, 0.0), atol=0.5)  # whole pixels
    result = pm.subtract(sky.science, template, config=_quickConfig(), ignoreOrigins=True)
    assert result.kernelSum == pytest.approx(sky.truth.fluxScale, rel=5e-3)


def test_star_offset_finds_a_known_shift() -> None:
    rng = np.random.default_rng(3)
    n = 40
    x, y, flux = rng.uniform(0, 500, n), rng.uniform(0, 500, n), rng.uniform(1, 10, n)
    sci = np.zeros(n, dtype=[("x", float), ("y", float), ("flux", float)])
    sci["x"], sci["y"], sci["flux"] = x, y, flux
    tmp = sci.copy()
    tmp["x"] -= 37.25  # the template's pixel (0, 0) on science pixel (37.25, -12.5)
    tmp["y"] += 12.5
    found = starOffset(sci, tmp[5:])  # 35 of the 40 in both
    assert found is not None and found.nMatched == 35
    assert (found.dx, found.dy) == pytest.approx((37.25, -12.5), abs=1e-9)  # exact shifts
    # Unrelated star lists agree on no shift.
    other = sci.copy()
    other["x"], other["y"] = rng.uniform(0, 500, n), rng.uniform(0, 500, n)
    assert starOffset(sci, other) is None


def test_place_template_pads_and_keeps_margin() -> None:
    image = np.arange(60.0, dtype=np.float32).reshape(6, 10)
    template = pm.MaskedImage(image, None, np.ones_like(image), xy0=(3, -1))
    scienceBox = pm.Box2I((5, 2), (8, 4))  # x 5..12, y 2..5
    placed = placeTemplate(template, scienceBox, margin=1)
    # Margin on the left (template from x = 3) and below (template from y = -1); none beyond
    # the template on the right (it ends at x = 12) and above (it ends at y = 4).
    assert placed.wide.getBBox() == pm.Box2I((4, 1), (9, 5))
    np.testing.assert_array_equal(placed.wide.image[:4, :], image[2:6, 1:10])
    assert (placed.wide.mask[4, :] == NO_DATA).all()  # y = 5: beyond the template
    np.testing.assert_array_equal(placed.uncovered[3, :], True)
    assert not placed.uncovered[:3, :].any()
    assert placed.coveredFraction == pytest.approx(24 / 32, rel=1e-12)


# -- the real LSST pair ------------------------------------------------------------------------


def test_shared_pair_origins_give_the_diagnostic(sharedData: Path) -> None:
    science = readMaskedImage(sharedData / "scienceMI.fits")
    template = readMaskedImage(sharedData / "templateMI.fits")
    with pytest.raises(pm.OriginMismatchError) as info:
        pm.subtract(science, template)
    # The origins (24, 24) and (9, 9) put the template's pixel (0, 0) on science pixel
    # (15, 15); its nine stars sit at the same array positions as the science image's.
    assert info.value.originOffset == (15, 15)
    np.testing.assert_allclose(info.value.starOffset, (0.0, 0.0), atol=0.5)


@pytest.mark.parametrize(
    "spelling",
    [
        ["--science", "{s}", "--template", "{t}", "--output", "{d}"],
        ["-inim", "{s}", "-tmplim", "{t}", "-outim", "{d}"],
    ],
    ids=["long", "hotpants"],
)
def test_shared_pair_on_the_command_line(
    sharedData: Path, tmp_path: Path, capsys: Any, spelling: list[str]
) -> None:
    files = {
        "s": sharedData / "scienceMI.fits",
        "t": sharedData / "templateMI.fits",
        "d": tmp_path / "d.fits",
    }
    argv = ["subtract", *(a.format(**files) for a in spelling), "-ko", "1"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "--ignore-origins" in err and "(15, 15)" in err
    assert not files["d"].exists()
    assert main([*argv, "--ignore-origins"]) == 0
    difference = readMaskedImage(files["d"])
    usable = np.isfinite(difference.image) & np.isfinite(difference.variance)
    z = difference.image[usable] / np.sqrt(difference.variance[usable])
    # Nine stars on σ ≈ 10 sky: a clean subtraction leaves unit noise away from them; the
    # stars' residuals move the robust σ by a few per cent (test_image_psf_match's bound).
    assert 0.7413 * np.subtract(*np.percentile(z, [75, 25])) == pytest.approx(1.0, abs=0.05)


def test_convolve_science_with_a_placed_template(sky: Any) -> None:
    # A science image sharper than the template (the template is convolved otherwise): the
    # broad simulated science image plays the template, a cut-out of the sharp one the science.
    science = _at(sky.template, 64, 64, 256, 256)
    template = sky.science.clone()
    # A NaN that carries only INTRP (not a bad plane): accepted as it is on one grid.
    intrp = pm.Mask.getPlaneBitMask("INTRP")
    template.image[10, 10] = np.nan
    template.mask[10, 10] |= intrp
    config = _quickConfig()
    result = pm.subtract(science, template, mode="convolveScience", config=config)
    assert result.convolved == "Science"
    assert result.difference.getBBox() == science.getBBox()
    # K ⊗ S + b ≈ T: κ is the template/science flux ratio, here the simulation's scale (its
    # science image plays the template), to 0.5 % (as above).
    assert result.kernelSum == pytest.approx(sky.truth.fluxScale, rel=5e-3)


def test_origin_mismatch_is_found_with_a_much_larger_template(sky: Any) -> None:
    science = _at(sky.science, 128, 128, 160, 160)  # a 160² science image in a 384² template
    ok = pm.subtract(science, sky.template, config=_quickConfig())
    assert ok.kernelSum == pytest.approx(sky.truth.fluxScale, rel=1e-2)  # ~25 stars: 1 %
    wrong = pm.MaskedImage(
        sky.template.image, sky.template.mask, sky.template.variance, xy0=(20, -12)
    )
    with pytest.raises(pm.OriginMismatchError) as info:
        pm.subtract(science, wrong, config=_quickConfig())
    # The template's pixel (0, 0) is on the science image's pixel (-128, -128) (the science
    # image is the template's window from 128); the wrong origins say (20 - 128, -12 - 128).
    assert info.value.originOffset == (-108, -140)
    np.testing.assert_allclose(info.value.starOffset, (-128.0, -128.0), atol=0.5)


def test_fully_masked_template_on_another_box_is_a_clear_error(sky: Any) -> None:
    template = _at(sky.template, 0, 0, 384, 384)
    template.mask[:] = pm.Mask.getPlaneBitMask("BAD")
    science = _at(sky.science, 64, 64, 256, 256)
    with pytest.raises(pm.InvalidInputError, match="every pixel is masked"):
        pm.subtract(science, template, config=_quickConfig())


def test_placed_template_gives_the_same_answer_with_a_template_analysis(sky: Any) -> None:
    # Detection on (the template's detections come from the whole template, scaled by the
    # factor measured on it): an analysis of the whole template reproduces the run bit for bit.
    science = _at(sky.science, 64, 48, 256, 272)
    config = pm.ImagePsfMatchConfig()
    config.kernel.active.spatialKernelOrder = 1
    plain = pm.subtract(science, sky.template, config=config)
    analysis = pm.analyzeTemplate(sky.template, config=config)
    reused = pm.subtract(science, sky.template, config=config, templateAnalysis=analysis)
    np.testing.assert_array_equal(plain.difference.image, reused.difference.image)
    assert plain.diaSources is not None and reused.diaSources is not None
    assert len(plain.diaSources) == len(reused.diaSources)
    np.testing.assert_array_equal(
        plain.diaSources["refAssociated"], reused.diaSources["refAssociated"]
    )
