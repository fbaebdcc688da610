# SPDX-License-Identifier: BSD-3-Clause
"""The reference's current task names over psfmatch's stages: a port of a short
AlardLuptonSubtractTask example runs, and gives what ImagePsfMatchTask gives."""

from __future__ import annotations

import gc
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import psfmatch as pm
from psfmatch.alard_lupton import (
    AlardLuptonPreconvolveSubtractTask,
    AlardLuptonSubtractConfig,
    AlardLuptonSubtractTask,
)
from psfmatch.detect_and_measure import DetectAndMeasureTask
from psfmatch.make_kernel import MakeKernelTask
from psfmatch.simulate import simulatePair


@pytest.fixture(scope="module")
def sim() -> Any:
    return simulatePair((320, 320), nStars=120, seed=21, nTransients=3, transientFlux=3e4)


def _referenceStyleConfig() -> AlardLuptonSubtractConfig:
    # As a pipeline configures lsst.ip.diffim's task.
    config = AlardLuptonSubtractConfig()
    config.mode = "convolveTemplate"
    config.makeKernel.kernel.name = "AL"
    config.makeKernel.kernel.active.spatialKernelOrder = 1
    config.makeKernel.kernel.active.spatialBgOrder = 1
    config.doDecorrelation = True
    config.doScaleVariance = True
    return config


def test_ported_example_runs_and_matches_image_psf_match(sim: Any) -> None:
    task = AlardLuptonSubtractTask(config=_referenceStyleConfig())
    result = task.run(sim.template, sim.science)
    # The same pipeline as ImagePsfMatchTask with the equivalent config: the same numbers,
    # bit for bit (one code path), except the template mask planes not preserved.
    config = _referenceStyleConfig().imagePsfMatchConfig()
    direct = pm.ImagePsfMatchTask(config=config).subtractMaskedImages(sim.template, sim.science)
    np.testing.assert_array_equal(result.difference.image, direct.subtractedMaskedImage.image)
    np.testing.assert_array_equal(result.matchedTemplate.image, direct.matchedImage.image)
    assert result.matchedScience is sim.science
    x, y = 160.0, 160.0
    assert result.psfMatchingKernel.getSum(x, y) == direct.psfMatchingKernel.getSum(x, y)
    # And against the truth: the simulation's flux scale, to 0.5 % (a 320² field of ~50
    # usable stars with an order-1 spatial fit; tests/test_image_psf_match holds tighter
    # tolerances on larger fields).
    assert result.psfMatchingKernel.getSum(x, y) == pytest.approx(sim.truth.fluxScale, rel=5e-3)
    # The kernel fit's metadata are the imagePsfMatch subtask's, as the reference's are its
    # makeKernel subtask's.
    gc.collect()  # the subtask must outlive a collection (the hierarchy holds weak references)
    full = task.getFullMetadata()
    assert "alardLuptonSubtract:imagePsfMatch.spatialKernelSum" in full.names()


def test_convolve_science_returns_the_matched_science() -> None:
    # The science PSF narrower than the template's: convolveScience is the natural mode.
    sharp = simulatePair(
        (320, 320), nStars=120, seed=22, templateSigma=2.6, scienceSigma=(1.5, 1.9)
    )
    config = _referenceStyleConfig()
    config.mode = "convolveScience"
    result = AlardLuptonSubtractTask(config=config).run(sharp.template, sharp.science)
    assert result.matchedTemplate is sharp.template  # unconvolved
    direct = pm.ImagePsfMatchTask(config=config.imagePsfMatchConfig()).matchMaskedImages(
        sharp.template, sharp.science
    )
    np.testing.assert_array_equal(result.matchedScience.image, direct.matchedImage.image)


def test_preserve_template_mask_keeps_only_the_listed_planes(sim: Any) -> None:
    template = sim.template.clone()
    sat, cr = pm.Mask.getPlaneBitMask("SAT"), pm.Mask.getPlaneBitMask("CR")
    template.mask[100, 200] |= cr
    template.mask[200, 100] |= sat
    config = _referenceStyleConfig()
    config.doDecorrelation = False
    result = AlardLuptonSubtractTask(config=config).run(template, sim.science)
    d = result.difference.mask
    assert d[200, 100] & sat  # SAT is in preserveTemplateMask
    assert not d[100, 200] & cr  # CR is not (and the science image has none there)
    config.preserveTemplateMask = ["SAT", "CR"]
    result = AlardLuptonSubtractTask(config=config).run(template, sim.science)
    assert result.difference.mask[100, 200] & cr


def test_allow_kernel_source_detection(sim: Any) -> None:
    config = _referenceStyleConfig()
    few = [(160.0, 160.0)]  # one position: fewer than minKernelSources
    with pytest.raises(pm.InsufficientKernelSourcesError):
        AlardLuptonSubtractTask(config=config).run(sim.template, sim.science, few)
    config.allowKernelSourceDetection = True
    result = AlardLuptonSubtractTask(config=config).run(sim.template, sim.science, few)
    assert len(result.kernelSources) > 10


def test_preconvolve_task_gives_the_score_image(sim: Any) -> None:
    config = _referenceStyleConfig()
    result = AlardLuptonPreconvolveSubtractTask(config=config).run(sim.template, sim.science)
    direct = _referenceStyleConfig().imagePsfMatchConfig(mode="preconvolve")
    image = pm.ImagePsfMatchTask(config=direct).subtractMaskedImages(sim.template, sim.science)
    np.testing.assert_array_equal(result.scoreExposure.image, image.subtractedMaskedImage.image)
    np.testing.assert_array_equal(result.matchedScience.image, image.matchedScience.image)


def test_make_kernel_and_detect_and_measure_tasks(sim: Any) -> None:
    config = MakeKernelTask.ConfigClass()
    config.kernel.active.spatialKernelOrder = 1
    kernel = MakeKernelTask(config=config).run(sim.template, sim.science)
    assert kernel.psfMatchingKernel.getSum(160.0, 160.0) == pytest.approx(
        sim.truth.fluxScale,
        rel=5e-3,  # as above
    )
    difference = AlardLuptonSubtractTask(config=_referenceStyleConfig()).run(
        sim.template, sim.science
    )
    found = DetectAndMeasureTask().run(
        sim.science, difference.matchedTemplate, difference.difference
    )
    # The three simulated transients (3e4 counts, S/N ~ 100) are found and are associated
    # with nothing the template shows.
    sources = found.diaSources
    transients = sim.transients
    for x, y in zip(transients["x"], transients["y"], strict=True):
        near = np.hypot(sources["x"] - x, sources["y"] - y) < 2.0
        assert near.any(), (x, y)
        assert not sources["refAssociated"][near].any()


def test_the_documented_port_runs(sim: Any) -> None:
    """The psfmatch example of docs/from-lsst.md (its second python block), as written."""
    doc = (Path(__file__).resolve().parents[1] / "docs" / "from-lsst.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", doc, flags=re.S)
    assert len(blocks) == 2 and "from psfmatch import" in blocks[1]
    names: dict[str, Any] = {"template": sim.template, "science": sim.science, "sources": None}
    exec(compile(blocks[1], "docs/from-lsst.md", "exec"), names)
    # The simulation's flux scale, to 0.5 % (as test_ported_example_runs_and_matches...).
    assert names["kernelSum"] == pytest.approx(sim.truth.fluxScale, rel=5e-3)
    assert names["difference"].image.shape == sim.science.image.shape


def test_preserve_template_mask_keeps_the_convolved_science_planes() -> None:
    # convolveScience: the science image's CR is spread by the kernel into D; those pixels
    # keep the plane (only the template's planes are dropped).
    sharp = simulatePair(
        (320, 320), nStars=120, seed=22, templateSigma=2.6, scienceSigma=(1.5, 1.9)
    )
    science = sharp.science.clone()
    cr = pm.Mask.getPlaneBitMask("CR")
    science.mask[150, 150] |= cr
    config = _referenceStyleConfig()
    config.mode = "convolveScience"
    config.doDecorrelation = False
    result = AlardLuptonSubtractTask(config=config).run(sharp.template, science)
    spread = (result.matchedScience.mask & cr) != 0
    assert spread.sum() > 1  # the convolution spread it
    assert ((result.difference.mask & cr) != 0)[spread].all()
