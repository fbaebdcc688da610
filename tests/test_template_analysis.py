# SPDX-License-Identifier: BSD-3-Clause
"""TemplateAnalysis: a template's own work done once and reused, without changing the answer."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import psfmatch._inputs as inputs
import psfmatch.make_kernel as make_kernel
import psfmatch.selection as selection
import psfmatch.subtract_images as subtract_images
from psfmatch.api import analyzeTemplate, subtract
from psfmatch.errors import InvalidInputError
from psfmatch.image import MaskedImage
from psfmatch.image_psf_match import ImagePsfMatchConfig, ImagePsfMatchTask, TemplateAnalysis
from psfmatch.simulate import simulatePair

SHAPE = (224, 224)


@pytest.fixture(scope="module")
def sims() -> dict[str, Any]:
    """Two science images of one template (same stars and template noise, other background
    and PSF), and an unrelated template."""
    first = simulatePair(SHAPE, nStars=80, seed=21)
    second = simulatePair(SHAPE, nStars=80, seed=21, background=(5.0, 0.0, 0.0))
    other = simulatePair(SHAPE, nStars=80, seed=22)
    assert np.array_equal(first.template.image, second.template.image)
    return {"template": first.template, "sciences": [first.science, second.science], "other": other}


def _planesEqual(a: MaskedImage, b: MaskedImage) -> bool:
    return all(
        np.array_equal(getattr(a, p), getattr(b, p), equal_nan=True)
        for p in ("image", "mask", "variance")
    )


@pytest.mark.parametrize("mode", ["auto", "convolveScience", "preconvolve"])
def test_reuseIsBitIdentical(sims: dict[str, Any], mode: str) -> None:
    """One analysis serves both science images; every output plane and the kernel are the
    same bits as without it (exact equality: the same arithmetic on the same arrays)."""
    template = sims["template"]
    before = template.image.copy(), template.variance.copy(), template.mask.copy()
    analysis = analyzeTemplate(template, mode=mode)
    # Both science images in one mode (the analysis serves several); one in the others.
    # convolveScience deconvolves this pair (the science PSF is the broader): it warns and its
    # sky is far from its noise, which allowPoorSubtraction keeps; the test is about reuse.
    config = ImagePsfMatchConfig()
    config.allowPoorSubtraction = True
    for science in sims["sciences"] if mode == "auto" else sims["sciences"][:1]:
        plain = subtract(science, template, mode=mode, config=config)
        reused = subtract(science, template, mode=mode, templateAnalysis=analysis, config=config)
        assert _planesEqual(plain.difference, reused.difference)
        assert _planesEqual(plain.matched, reused.matched)
        np.testing.assert_array_equal(plain.kernelImage(), reused.kernelImage())
        assert plain.diaSources is not None and reused.diaSources is not None
        assert len(plain.diaSources) == len(reused.diaSources)
        np.testing.assert_array_equal(
            np.asarray(plain.diaSources["refAssociated"]),
            np.asarray(reused.diaSources["refAssociated"]),
        )
    for plane, old in zip(("image", "variance", "mask"), before, strict=True):
        np.testing.assert_array_equal(getattr(template, plane), old)


def test_reuseSkipsTheTemplateWork(sims: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """With an analysis the task measures and detects on the science image only: one variance
    factor and one detection (the kernel sources') instead of two and two (the template's
    for the difference-image association)."""
    template, science = sims["template"], sims["sciences"][0]
    analysis = analyzeTemplate(template)
    calls = {"detect": 0, "scale": 0}
    detect, scale = selection.detectSources, inputs._varianceScaleFactor

    def countingDetect(*args: Any, **kwargs: Any) -> Any:
        calls["detect"] += 1
        return detect(*args, **kwargs)

    def countingScale(*args: Any, **kwargs: Any) -> Any:
        calls["scale"] += 1
        return scale(*args, **kwargs)

    # Every stage module that looks the two up.
    for module in (inputs, make_kernel):
        monkeypatch.setattr(module, "detectSources", countingDetect)
    for module in (inputs, subtract_images):
        monkeypatch.setattr(module, "_varianceScaleFactor", countingScale)
    subtract(science, template)
    assert calls == {"detect": 2, "scale": 2}
    calls.update(detect=0, scale=0)
    subtract(science, template, templateAnalysis=analysis)
    assert calls == {"detect": 1, "scale": 1}


def test_analysisContents(sims: dict[str, Any]) -> None:
    """The cached detections are read-only and are those of the scaled template."""
    template = sims["template"]
    analysis = ImagePsfMatchTask(config=ImagePsfMatchConfig()).analyzeTemplate(template)
    assert isinstance(analysis, TemplateAnalysis)
    assert analysis.shape == SHAPE
    assert analysis.diaDetections is not None and not analysis.diaDetections.flags.writeable
    # The simulation's variance plane is right, so the measured factor is close to 1; the
    # 10% bound is far outside the IQR estimator's scatter on ~40k sky pixels (~1%).
    assert analysis.varianceScaleFactor is not None
    assert abs(analysis.varianceScaleFactor - 1.0) < 0.1
    # Independent count: the simulation's stars well above the 5-sigma difference-image
    # threshold must be found, and nothing much beyond the stars (sep may split or merge a few).
    assert 0.5 * 80 <= len(analysis.diaDetections) <= 80 + 5
    assert analysis.nbytes == analysis.diaDetections.nbytes

    config = ImagePsfMatchConfig()
    config.doScaleVariance = False
    config.doDetectDiaSources = False
    bare = ImagePsfMatchTask(config=config).analyzeTemplate(template)
    assert bare.varianceScaleFactor is None and bare.diaDetections is None


def test_mismatchesAreRefused(sims: dict[str, Any]) -> None:
    template, science = sims["template"], sims["sciences"][0]
    analysis = analyzeTemplate(template)
    with pytest.raises(InvalidInputError, match="other pixels"):
        subtract(science, sims["other"].template, templateAnalysis=analysis)
    with pytest.raises(InvalidInputError, match=r"other settings: medianFilled False"):
        subtract(science, template, mode="preconvolve", templateAnalysis=analysis)
    config = ImagePsfMatchConfig()
    config.diaSourceThreshold = 7.0
    with pytest.raises(InvalidInputError, match=r"diaSourceThreshold 5\.0 \(this task: 7\.0\)"):
        subtract(science, template, config=config, templateAnalysis=analysis)
    with pytest.raises(InvalidInputError, match="expected a TemplateAnalysis, got dict"):
        subtract(science, template, templateAnalysis={"sources": []})  # type: ignore[arg-type]
    small = MaskedImage(
        template.image[:200, :200].copy(),
        template.mask[:200, :200].copy(),
        template.variance[:200, :200].copy(),
    )
    smallScience = MaskedImage(
        science.image[:200, :200].copy(),
        science.mask[:200, :200].copy(),
        science.variance[:200, :200].copy(),
    )
    with pytest.raises(InvalidInputError, match=r"shape \(224, 224\).*shape \(200, 200\)"):
        subtract(smallScience, small, templateAnalysis=analysis)
    with pytest.raises(InvalidInputError, match="expected a MaskedImage, got ndarray"):
        ImagePsfMatchTask().analyzeTemplate(template.image)  # type: ignore[arg-type]


def test_originDoesNotMatter(sims: dict[str, Any]) -> None:
    """Detections are in array coordinates: an analysis is valid for the template moved to
    another origin (``ignoreOrigins``), and gives the same answer there."""
    template, science = sims["template"], sims["sciences"][0]
    moved = MaskedImage(template.image, template.mask, template.variance, xy0=(100, 50))
    analysis = analyzeTemplate(moved)
    plain = subtract(science, moved, ignoreOrigins=True)
    reused = subtract(science, moved, ignoreOrigins=True, templateAnalysis=analysis)
    assert _planesEqual(plain.difference, reused.difference)
