# SPDX-License-Identifier: BSD-3-Clause
"""`SubtractionResult.inUnits`: HOTPANTS' ``-n`` photometric renormalisation, against the
kernel sum and against the simulation's known flux scale."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from astropy.io import fits

import psfmatch
from psfmatch import io as pmio
from psfmatch.errors import InvalidInputError, PsfMatchError
from psfmatch.simulate import simulatePair

SHAPE = (320, 320)
TRANSIENT_FLUX = 4e4


@pytest.fixture(scope="module")
def sim() -> Any:
    return simulatePair(SHAPE, nStars=100, seed=7, nTransients=4, transientFlux=TRANSIENT_FLUX)


@pytest.fixture(scope="module")
def results(sim: Any) -> dict[str, Any]:
    """One subtraction per convolved image, each keeping its convolved image."""
    config = psfmatch.ImagePsfMatchConfig()
    config.keepMatchedImage = True
    return {
        mode: psfmatch.subtract(sim.science, sim.template, mode=mode, config=config)
        for mode in ("convolveTemplate", "convolveScience")
    }


def _apertureFlux(image: np.ndarray, x: float, y: float, radius: float) -> float:
    """The plain sum of the pixels whose centres lie within ``radius`` of (x, y); NaN if one
    of them is not finite (the border of D, where the template does not reach)."""
    yy, xx = np.mgrid[: image.shape[0], : image.shape[1]]
    return float(image[(xx - x) ** 2 + (yy - y) ** 2 <= radius**2].sum())


def _transientFluxes(sim: Any, image: np.ndarray) -> np.ndarray:
    # 2 FWHM of the widest science PSF: 4.7 sigma, 99.998 % of a Gaussian's flux.
    fwhm = sim.truth.scienceFwhm(np.array([0.0, SHAPE[1] - 1.0]), np.array([0.0, SHAPE[0] - 1.0]))
    radius = 2.0 * float(np.max(fwhm))
    return np.array([_apertureFlux(image, t["x"], t["y"], radius) for t in sim.transients])


def _copy(mi: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return mi.image.copy(), mi.mask.copy(), mi.variance.copy()


def test_template_units_divide_by_the_kernel_sum(results: dict[str, Any]) -> None:
    result = results["convolveTemplate"]
    kappa = result.kernelSum
    before = _copy(result.difference), _copy(result.matched)
    scaled = result.inUnits("template")
    d, m = result.difference, result.matched
    # HOTPANTS' -n t with the template convolved: D/κ, var(D)/κ², the mask as it was; the
    # convolved template (in science units) comes back to the template's by 1/κ too.
    # float32 pixels scaled once by a float32 factor: a few units in the last place.
    np.testing.assert_allclose(scaled.difference.image, d.image / kappa, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(scaled.difference.variance, d.variance / kappa**2, rtol=1e-6)
    np.testing.assert_array_equal(scaled.difference.mask, d.mask)
    np.testing.assert_allclose(scaled.matched.image, m.image / kappa, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(scaled.matched.variance, m.variance / kappa**2, rtol=1e-6)
    assert scaled.difference.image.dtype == d.image.dtype
    assert (scaled.differenceUnits, scaled.matchedUnits) == ("template", "template")
    assert scaled.metadata["differenceUnits"] == "template"
    assert scaled.kernelSum == kappa  # the fit is the fit: only the images change
    assert scaled.kernel is result.kernel and scaled.candidates is result.candidates
    # The original is untouched: its arrays, its units, its metadata.
    for planes, mi in zip(before, (d, m), strict=True):
        for a, b in zip(planes, (mi.image, mi.mask, mi.variance), strict=True):
            np.testing.assert_array_equal(a, b)
    assert (result.differenceUnits, result.matchedUnits) == ("science", "science")
    assert "differenceUnits" not in result.metadata


def test_science_units_multiply_by_the_kernel_sum_when_the_science_image_is_convolved(
    results: dict[str, Any],
) -> None:
    result = results["convolveScience"]
    kappa = result.kernelSum
    assert (result.differenceUnits, result.matchedUnits) == ("science", "template")
    # D is in science units already; the convolved science image, K ⊗ S, is in the
    # template's (κ = template/science) and comes back by 1/κ.
    science = result.inUnits("science")
    assert science.difference is result.difference
    np.testing.assert_allclose(
        science.matched.image, result.matched.image / kappa, rtol=1e-6, atol=1e-6
    )
    # In template units D is K ⊗ S + b - T itself: D times κ.
    template = result.inUnits("template")
    np.testing.assert_allclose(
        template.difference.image, result.difference.image * kappa, rtol=1e-6, atol=1e-6
    )
    np.testing.assert_allclose(
        template.difference.variance, result.difference.variance * kappa**2, rtol=1e-6
    )
    assert template.matched is result.matched
    # "unconvolved" is the template here, the science image when the template is convolved.
    assert result.inUnits("unconvolved").differenceUnits == "template"
    assert results["convolveTemplate"].inUnits("unconvolved").differenceUnits == "science"


@pytest.mark.parametrize("mode", ["convolveTemplate", "convolveScience"])
def test_transient_fluxes_in_template_units_are_the_template_systems(
    sim: Any, results: dict[str, Any], mode: str
) -> None:
    """Independent of κ: a transient of science flux F has F / fluxScale in template units."""
    result = results[mode]
    scale = sim.truth.fluxScale
    scienceUnits = _transientFluxes(sim, result.difference.image)
    templateUnits = _transientFluxes(sim, result.inUnits("template").difference.image)
    measured = np.isfinite(scienceUnits)
    assert measured.sum() >= 3  # one of the four may lie too near the border
    assert np.array_equal(measured, np.isfinite(templateUnits))
    # 4e4 counts in an aperture of ~550 pixels of D's variance ~100: 0.6 % noise each; the
    # kernel sum is good to ~0.5 % on 320²; 3 % on the mean of three or four is ample.
    science, template = scienceUnits[measured], templateUnits[measured]
    np.testing.assert_allclose(np.mean(science / TRANSIENT_FLUX), 1.0, rtol=0.03)
    np.testing.assert_allclose(np.mean(template * scale / TRANSIENT_FLUX), 1.0, rtol=0.03)
    # ... and the diaSources measured in D follow the pixels (the transients, S/N ~ 150,
    # are detected: the check always runs).
    assert result.diaSources is not None and len(result.diaSources) >= 3
    # rtol 1e-6: the same float32 pixels times one factor, as computed from two transients'
    # float64 sums.
    np.testing.assert_allclose(
        result.inUnits("template").diaSources["flux"],
        result.diaSources["flux"] * (template[0] / science[0]),
        rtol=1e-6,
    )


def test_units_compose(results: dict[str, Any]) -> None:
    result = results["convolveTemplate"]
    back = result.inUnits("template").inUnits("science")
    # Two float32 roundings.
    np.testing.assert_allclose(back.difference.image, result.difference.image, rtol=1e-6, atol=1e-5)
    np.testing.assert_allclose(back.matched.image, result.matched.image, rtol=1e-6, atol=1e-5)
    assert (back.differenceUnits, back.matchedUnits) == ("science", "science")
    same = result.inUnits("science")
    assert same.difference is result.difference and same.matched is result.matched


def test_written_header_records_the_units(results: dict[str, Any], tmp_path: Path) -> None:
    result = results["convolveTemplate"]
    path = tmp_path / "d.fits"
    result.inUnits("template").writeFits(path)
    header = fits.getheader(path, 0)
    assert header["psfmatch.differenceUnits"] == "template"
    assert header["KSUM"] == pytest.approx(result.kernelSum)
    # The statistics follow the rescaled pixels.
    np.testing.assert_allclose(
        header["DSIG"] * result.kernelSum, result.statistics()["DSIG"], rtol=1e-5
    )
    np.testing.assert_allclose(
        pmio.readMaskedImage(path).image * result.kernelSum,
        result.difference.image,
        rtol=1e-5,
        atol=1e-4,
    )


def test_errors(results: dict[str, Any]) -> None:
    result = results["convolveTemplate"]
    with pytest.raises(InvalidInputError, match=r"units: expected one of 'science', .* got 't'"):
        result.inUnits("t")
    metadata = result.metadata.copy()
    metadata["spatialKernelSum"] = -0.5
    broken = dataclasses.replace(result, metadata=metadata)
    with pytest.raises(PsfMatchError, match=r"the kernel sum -0.5 cannot rescale the images"):
        broken.inUnits("template")
