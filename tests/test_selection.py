# SPDX-License-Identifier: BSD-3-Clause
"""Kernel-source selection (psfmatch.selection) on a field laid out by hand.

Every star is a pixel-integrated Gaussian rendered here (erf differences), placed so that each
cut of `selectKernelSources` has exactly the stars it must reject: stars in one image only,
a pair too far apart to cross-match, a pair too close to deblend, a crowded pair, faint and
very bright stars, stars at the edge, stars with bad mask bits in their stamps. The truth is
where each star was put and why; nothing is taken from psfmatch's own output.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from scipy.special import erf

import psfmatch as pm
from psfmatch.image_psf_match import ImagePsfMatchConfig, ImagePsfMatchTask
from psfmatch.selection import (
    KernelSourceSelectionConfig,
    detectSources,
    halfLightRadii,
    measureAt,
    selectKernelSources,
)
from psfmatch.simulate import simulatePair

SHAPE = (320, 320)
SIGMA_TEMPLATE = 1.7
SIGMA_SCIENCE = 2.2
NOISE = 5.0
KERNEL_SIZE = 21  # stamps are 2·21 + 1 = 43 pixels: a 21-pixel margin at the edges
GOOD = 2e4  # S/N ≈ 400 in the science image's aperture (sep measures 336-417)
FAINT = 2e3  # S/N ≈ 40
BRIGHT = 2e5  # S/N ≈ 3200, above the default maxSnr of 1000

# name: (x, y, flux, in template, in science). Good stars sit on a 60-pixel grid, far from
# each other and from the special cases.
GRID = {f"good{i}": (70.0 + 60 * (i % 4), 70.0 + 60 * (i // 4), GOOD, True, True) for i in range(8)}
SPECIAL = {
    "faint": (70.0, 190.0, FAINT, True, True),
    "bright": (130.0, 190.0, BRIGHT, True, True),
    "templateOnly": (190.0, 190.0, GOOD, True, False),
    "scienceOnly": (250.0, 190.0, GOOD, False, True),
    "edge": (12.0, 130.0, GOOD, True, True),  # inside the image, but its stamp is not
    # A pair 6 px apart: one detection in the PSF-smoothed image, too large for a star.
    "blendA": (67.0, 255.0, GOOD, True, True),
    "blendB": (73.0, 255.0, GOOD, True, True),
    # A star with a faint neighbour 20 px away: two separate detections (their footprints at
    # 10σ of the PSF-smoothed image, of radius ≈ 8.8 and 7.9 px, do not touch), farther apart
    # than the default isolation radius of 2 FWHM (≈ 2 × 5.2 px), closer than 4 FWHM.
    "crowdA": (125.0, 255.0, GOOD / 2, True, True),
    "crowdB": (145.0, 255.0, 2 * FAINT, True, True),
    "masked": (190.0, 255.0, GOOD, True, True),
    "maskedTemplate": (250.0, 255.0, GOOD, True, True),
    "harmlessBit": (250.0, 295.0, GOOD, True, True),
}
STARS = {**GRID, **SPECIAL}
# The science position of this star is 3 px from its template position: not the same star
# for a 2-px match radius.
SHIFTED = {"shifted": ((190.0, 295.0), (193.0, 295.0))}


def render(stars: list[tuple[float, float, float]], sigma: float) -> np.ndarray:
    image = np.zeros(SHAPE)
    yEdges = np.arange(SHAPE[0] + 1) - 0.5
    xEdges = np.arange(SHAPE[1] + 1) - 0.5
    for x, y, flux in stars:
        fx = np.diff(0.5 * erf((xEdges - x) / (math.sqrt(2.0) * sigma)))
        fy = np.diff(0.5 * erf((yEdges - y) / (math.sqrt(2.0) * sigma)))
        image += flux * np.outer(fy, fx)
    return image


@pytest.fixture(scope="module")
def field() -> tuple[pm.MaskedImage, pm.MaskedImage]:
    rng = np.random.default_rng(5)
    images = []
    for sigma, index, shifted in ((SIGMA_TEMPLATE, 3, 0), (SIGMA_SCIENCE, 4, 1)):
        stars = [(x, y, f) for x, y, f, *inImage in STARS.values() if inImage[index - 3]]
        stars += [(*positions[shifted], GOOD) for positions in SHIFTED.values()]
        image = render(stars, sigma) + rng.normal(0.0, NOISE, SHAPE)
        variance = np.full(SHAPE, NOISE**2, dtype=np.float32)
        images.append(pm.MaskedImage(image.astype(np.float32), variance=variance))
    template, science = images
    # One saturated pixel 2 px from the star's centre in the science image; one BAD pixel
    # 15 px from the other's centre in the template (inside its 21-px stamp half-width, far
    # outside its light); a DETECTED pixel, which is not a reason to reject, on a third.
    science.mask[255, 192] |= pm.Mask.getPlaneBitMask("SAT")
    template.mask[255 + 15, 250] |= pm.Mask.getPlaneBitMask("BAD")
    science.mask[295, 250] |= pm.Mask.getPlaneBitMask("DETECTED")
    return template, science


def near(table: object, name: str, radius: float = 1.0) -> bool:
    x, y = STARS[name][:2]
    return bool(np.any(np.hypot(table["x"] - x, table["y"] - y) < radius))  # type: ignore[index]


def test_each_cut_rejects_exactly_its_stars(field: tuple[pm.MaskedImage, pm.MaskedImage]) -> None:
    template, science = field
    table = selectKernelSources(template, science, KernelSourceSelectionConfig(), kernelSize=21)
    kept = {name for name in STARS if near(table, name)}
    # Everything that should survive does, and nothing else: the shifted star is never near a
    # listed position.
    assert kept == {*GRID, "faint", "crowdA", "crowdB", "harmlessBit"}
    assert len(table) == len(kept)
    meta = table.meta
    # Detections (science image only): every star of the image plus the shifted one; the
    # pair 6 px apart is one detection (the PSF-smoothed image has one peak), rejected as
    # extended: its half-light radius is ~1.4× a star's.
    nScience = sum(1 for s in STARS.values() if s[4]) + 1 - 1
    assert "nDetectedTemplate" not in meta
    assert meta["nDetectedScience"] == nScience
    # Not seen in the template (S/N ≥ 5 within 2 px), of the candidates that passed every
    # other cut: the science-only star (nothing there) and the shifted one (3 px away); the
    # template-only star was never a candidate.
    assert meta["nNotInTemplate"] == 2
    assert meta["nRejectedBlended"] == 0
    assert meta["nRejectedExtended"] == 1
    assert meta["nRejectedSnr"] == 1  # "bright"
    assert meta["nRejectedCrowded"] == 0  # see test_isolation
    assert meta["nRejectedEdge"] == 1
    assert meta["nRejectedMasked"] == 2  # "masked" (science SAT), "maskedTemplate" (BAD)
    # Sorted by S/N, highest first; the positions are the science centroids, good to
    # ~0.05 px at S/N 400 (sep's windowless barycentre): 0.1.
    assert list(table["snr"]) == sorted(table["snr"], reverse=True)
    for name in GRID:
        x, y = STARS[name][:2]
        row = table[np.argmin(np.hypot(table["x"] - x, table["y"] - y))]
        assert (row["x"], row["y"]) == pytest.approx((x, y), abs=0.1)
        # Twice the half-light radius of a Gaussian is its FWHM (2.3548σ). sep's r50 of these
        # pixel-integrated stars is ~4 % above it (pixels and 5×5 subpixel sampling; 3.9 %
        # for good0 with sep's own sky map), and the sky under each (the median of an
        # annulus of ~270 pixels of σ 5 noise, ±0.4) moves it by ~1 %: 7 %.
        assert 2.0 * row["templateR50"] == pytest.approx(2.3548 * SIGMA_TEMPLATE, rel=0.07)
        assert 2.0 * row["scienceR50"] == pytest.approx(2.3548 * SIGMA_SCIENCE, rel=0.07)


def test_snr_window(field: tuple[pm.MaskedImage, pm.MaskedImage]) -> None:
    template, science = field
    config = KernelSourceSelectionConfig()
    config.minSnr = 100.0  # between FAINT (≈ 40) and GOOD (≈ 400)
    config.maxSnr = 0.0  # no upper limit
    table = selectKernelSources(template, science, config, kernelSize=KERNEL_SIZE)
    assert not near(table, "faint") and not near(table, "crowdB")  # S/N ≈ 40 and ≈ 80
    assert near(table, "bright")
    assert table.meta["nRejectedSnr"] == 2
    # The S/N is sep's aperture flux over its error; the true flux over the noise in a circle
    # of radius 3a (a ≈ σ, the PSF's rms along the major axis) predicts it to ~20 %.
    for name in GRID:
        x, y = STARS[name][:2]
        row = table[np.argmin(np.hypot(table["x"] - x, table["y"] - y))]
        predicted = GOOD / (NOISE * math.sqrt(math.pi * (3.0 * SIGMA_SCIENCE) ** 2))
        assert row["snr"] == pytest.approx(predicted, rel=0.2)


def test_isolation(field: tuple[pm.MaskedImage, pm.MaskedImage]) -> None:
    template, science = field
    config = KernelSourceSelectionConfig()
    config.isolationFwhm = 4.0  # ≈ 20.9 px: the 20-px pair is now too close
    table = selectKernelSources(template, science, config, kernelSize=KERNEL_SIZE)
    assert not near(table, "crowdA") and not near(table, "crowdB")
    assert table.meta["nRejectedCrowded"] == 2
    # The close pair is one detection, rejected as extended after the isolation cut, and the
    # grid stars are 60 px from each other.
    assert all(near(table, name) for name in GRID)


def test_restricted_edges_reject_one_more_kernel_width(
    field: tuple[pm.MaskedImage, pm.MaskedImage],
) -> None:
    template, science = field
    config = KernelSourceSelectionConfig()
    config.restrictKernelEdgeSources = True
    table = selectKernelSources(template, science, config, kernelSize=KERNEL_SIZE)
    # A 42-px margin: the grid's first column and row (x or y = 70) stay, "edge" goes, and
    # the 290+ row goes too: "harmlessBit" and the shifted star (both at y = 295; the edge
    # cut comes before the template is looked at).
    assert not near(table, "edge") and not near(table, "harmlessBit")
    assert near(table, "good0")
    assert table.meta["nRejectedEdge"] == 3


def test_keeps_the_best_max_kernel_sources(field: tuple[pm.MaskedImage, pm.MaskedImage]) -> None:
    template, science = field
    config = KernelSourceSelectionConfig()
    full = selectKernelSources(template, science, config, kernelSize=KERNEL_SIZE)
    config.maxKernelSources = 3
    best = selectKernelSources(template, science, config, kernelSize=KERNEL_SIZE)
    assert len(best) == 3
    np.testing.assert_array_equal(best["snr"], np.sort(full["snr"])[::-1][:3])
    assert not near(best, "faint")  # the faintest kept star is never among the best


def test_without_kernel_size_only_detection_cuts_apply(
    field: tuple[pm.MaskedImage, pm.MaskedImage],
) -> None:
    template, science = field
    table = selectKernelSources(template, science, KernelSourceSelectionConfig())
    # The preliminary selection that measures the FWHMs: no edge or mask cuts.
    assert near(table, "edge") and near(table, "masked") and near(table, "maskedTemplate")
    assert "nRejectedEdge" not in table.meta


def test_too_few_says_how_many_at_each_stage(field: tuple[pm.MaskedImage, pm.MaskedImage]) -> None:
    template, science = field
    config = KernelSourceSelectionConfig()
    config.minKernelSources = 20
    with pytest.raises(pm.InsufficientKernelSourcesError) as info:
        selectKernelSources(template, science, config, kernelSize=KERNEL_SIZE)
    assert info.value.nSources == 12 and info.value.nRequired == 20
    message = str(info.value)
    assert "found 12 usable kernel sources but 20 are required" in message
    assert "nNotInTemplate=2" in message and "nRejectedMasked=2" in message


def test_grids_must_agree(field: tuple[pm.MaskedImage, pm.MaskedImage]) -> None:
    template, science = field
    moved = pm.MaskedImage(template.image, template.mask, template.variance, xy0=(1, 0))
    with pytest.raises(pm.InvalidInputError, match="share one pixel grid"):
        selectKernelSources(moved, science, KernelSourceSelectionConfig())


def test_detect_sources_ignores_bad_pixels() -> None:
    image = render([(40.0, 40.0, GOOD)], SIGMA_TEMPLATE)
    mi = pm.MaskedImage(image.astype(np.float32), variance=np.ones(SHAPE, np.float32))
    assert len(detectSources(mi, 10.0, 0)) == 1
    mi.mask[30:50, 30:50] = pm.Mask.getPlaneBitMask("BAD")
    assert len(detectSources(mi, 10.0, pm.Mask.getPlaneBitMask("BAD"))) == 0


def test_background_mesh_size_sets_the_scale_of_the_sky() -> None:
    """The sky under a star on a broad bump of sky (σ = 40 px, 30 noise σ high, on 512²):
    sep's 128-px mesh (the default) sees the bump as an object and estimates the flat sky
    around it; a 32-px mesh follows part of it."""
    rng = np.random.default_rng(5)
    y, x = np.mgrid[0:512, 0:512]
    sky = 100.0 + 30.0 * np.exp(-((x - 256.0) ** 2 + (y - 256.0) ** 2) / (2 * 40.0**2))
    star = 3000.0 * np.exp(-((x - 262.3) ** 2 + (y - 250.6) ** 2) / 8.0) / (8.0 * np.pi)
    image = (sky + star + rng.normal(0.0, 1.0, (512, 512))).astype(np.float32)
    mi = pm.MaskedImage(image, variance=np.ones((512, 512), np.float32))

    def skyAtStar(meshSize: int) -> float:
        found = detectSources(mi, 10.0, 0, measureRadii=False, meshSize=meshSize)
        nearest = np.argmin(np.hypot(found["x"] - 262.3, found["y"] - 250.6))
        return float(found["background"][nearest])

    assert KernelSourceSelectionConfig().backgroundMeshSize == 128
    # Measured: 100.04 and 112.4 (the true sky there is 129.4). The margins are several
    # counts, where the noise of a mesh's sky is ~0.01 count.
    assert skyAtStar(128) == pytest.approx(100.0, abs=1.0)
    assert skyAtStar(32) > 105.0


def test_task_honours_the_kernel_bad_mask_planes(
    field: tuple[pm.MaskedImage, pm.MaskedImage],
) -> None:
    """A plane added to ``kernel.active.badMaskPlanes`` disqualifies a stamp as the
    selection's own ``excludeMaskPlanes`` do."""
    template, science = field
    science = science.clone()
    science.mask[70 + 3, 70] |= pm.Mask.getPlaneBitMask("INTRP")  # on good0's core
    config = ImagePsfMatchConfig()
    config.mode = "convolveTemplate"
    config.kernel.active.spatialKernelOrder = 0
    config.kernel.active.spatialBgOrder = 0
    config.doDecorrelation = False
    config.doDetectDiaSources = False
    plain = ImagePsfMatchTask(config=config).matchMaskedImages(template, science)
    assert near(plain.kernelSources, "good0")  # INTRP is in neither list by default
    config.kernel.active.badMaskPlanes = [*config.kernel.active.badMaskPlanes, "INTRP"]
    task = ImagePsfMatchTask(config=config)
    strict = task.matchMaskedImages(template, science)
    assert not near(strict.kernelSources, "good0")
    assert task.metadata["selection.nRejectedMasked"] == 3


def test_user_positions_get_the_stamp_cuts(field: tuple[pm.MaskedImage, pm.MaskedImage]) -> None:
    template, science = field
    names = [*GRID, "masked", "maskedTemplate", "edge"]
    positions = [STARS[name][:2] for name in names]
    config = ImagePsfMatchConfig()
    config.mode = "convolveTemplate"
    config.kernel.active.spatialKernelOrder = 0
    config.kernel.active.spatialBgOrder = 0
    config.doDecorrelation = False
    config.doDetectDiaSources = False
    task = ImagePsfMatchTask(config=config)
    result = task.matchMaskedImages(template, science, candidateList=positions)
    used = {name for name in names if near(result.kernelSources, name)}
    assert used == set(GRID)
    md = task.metadata
    assert md["selection.nGiven"] == len(names)
    assert md["selection.nRejectedEdge"] == 1
    assert md["selection.nRejectedMasked"] == 2
    # No FWHMs given: measured at the given positions as 2·r50 (the FWHM of a Gaussian), to
    # the 5 % of sep's r50 on noisy pixel-integrated stars (see above).
    assert md["templatePsfSize"] == pytest.approx(2.3548 * SIGMA_TEMPLATE, rel=0.05)
    assert md["sciencePsfSize"] == pytest.approx(2.3548 * SIGMA_SCIENCE, rel=0.05)
    config.selection.minKernelSources = len(GRID) + 1
    with pytest.raises(pm.InsufficientKernelSourcesError, match="2 have bad mask bits"):
        ImagePsfMatchTask(config=config).matchMaskedImages(
            template, science, candidateList=positions
        )


def test_masked_stamps_are_rejected_exactly() -> None:
    sim = simulatePair((512, 512), nStars=150, seed=3, nTransients=0)
    config = KernelSourceSelectionConfig()
    kernelSize = 10
    clean = selectKernelSources(sim.template, sim.science, config, kernelSize=kernelSize)
    assert clean.meta["nRejectedMasked"] == 0
    assert len(clean) >= 6

    # Flag one pixel at the corner of the first star's stamp (inside it), one just outside the
    # second star's stamp, and one CR pixel (an excluded plane) in the template under a third.
    template, science = sim.template.clone(), sim.science.clone()
    bad = pm.Mask.getPlaneBitMask("BAD")
    cr = pm.Mask.getPlaneBitMask("CR")
    ix = np.floor(np.asarray(clean["x"]) + 0.5).astype(int)
    iy = np.floor(np.asarray(clean["y"]) + 0.5).astype(int)
    science.mask[iy[0] + kernelSize, ix[0] - kernelSize] |= bad
    science.mask[iy[1] + kernelSize + 1, ix[1]] |= bad
    template.mask[iy[2], ix[2]] |= cr

    # Brute force: a star is rejected when its (2·kernelSize+1)² stamp in either image holds
    # an excluded bit.
    excluded = pm.Mask.getPlaneBitMask(list(config.excludeMaskPlanes))
    assert excluded & bad and excluded & cr
    expected = []
    for x, y in zip(ix, iy, strict=True):
        window = np.s_[y - kernelSize : y + kernelSize + 1, x - kernelSize : x + kernelSize + 1]
        hit = (science.mask[window] & excluded).any() or (template.mask[window] & excluded).any()
        expected.append(bool(hit))
    assert expected[:3] == [True, False, True]

    masked = selectKernelSources(template, science, config, kernelSize=kernelSize)
    assert masked.meta["nRejectedMasked"] == sum(expected)
    # A masked pixel is also left out of detection, which may move a centroid by a hair: match
    # positions within 0.1 px (stars are tens of pixels apart).
    for x, y, hit in zip(clean["x"], clean["y"], expected, strict=True):
        distance = np.hypot(np.asarray(masked["x"]) - x, np.asarray(masked["y"]) - y)
        assert bool((distance < 0.1).any()) == (not hit)


def test_half_light_radii_on_stamps_equal_the_whole_image_measurement(
    field: tuple[pm.MaskedImage, pm.MaskedImage],
) -> None:
    """`halfLightRadii` (stamps, measured late) against sep.flux_radius on the whole
    sky-subtracted image (`detectSources(measureRadii=True)`), star by star, including the
    star whose stamp leaves the image and the stars with masked pixels."""
    template, science = field
    badBits = pm.Mask.getPlaneBitMask(["SAT", "BAD"])
    for mi in (template, science):
        whole = detectSources(mi, 10.0, badBits)
        late = detectSources(mi, 10.0, badBits, measureRadii=False)
        assert np.isnan(late["r50"]).all()
        np.testing.assert_array_equal(late["x"], whole["x"])
        stamps = halfLightRadii(mi, late, badBits)
        # The background here is flat (sep's mesh of a noise-only sky), so the stamps' one
        # sky value per star differs from the whole-image map by its noise: ~1e-3 counts
        # against stars of 1e4, which moves r50 by far less than 1e-3 px.
        np.testing.assert_allclose(stamps, whole["r50"], atol=1e-3)
        # And r50 of a Gaussian is √(2 ln 2)·σ: the good stars within sep's 5 % (see above).
        sigma = SIGMA_TEMPLATE if mi is template else SIGMA_SCIENCE
        for name in GRID:
            x, y = STARS[name][:2]
            k = int(np.argmin(np.hypot(late["x"] - x, late["y"] - y)))
            assert stamps[k] == pytest.approx(math.sqrt(2 * math.log(2)) * sigma, rel=0.05)


def test_radius_cache_gives_the_same_table(
    field: tuple[pm.MaskedImage, pm.MaskedImage],
) -> None:
    template, science = field
    config = KernelSourceSelectionConfig()
    plain = selectKernelSources(template, science, config, kernelSize=KERNEL_SIZE)
    cache: dict[str, np.ndarray] = {}
    first = selectKernelSources(template, science, config, radiusCache=cache)
    measured = {which: int(np.isfinite(cache[which]).sum()) for which in ("template", "science")}
    assert measured["template"] >= len(first) and measured["science"] >= len(first)
    cached = selectKernelSources(
        template, science, config, kernelSize=KERNEL_SIZE, radiusCache=cache
    )
    for column in plain.colnames:
        np.testing.assert_array_equal(cached[column], plain[column])


def test_measure_at_finds_the_template_stars_at_the_science_positions(
    field: tuple[pm.MaskedImage, pm.MaskedImage],
) -> None:
    """The template measured at the science detections, against where the stars were put
    and with what flux."""
    template, science = field
    detections = detectSources(science, 10.0, 0)
    measured = measureAt(template, detections, 0)
    assert len(measured) == len(detections)
    for name in GRID:
        x, y = STARS[name][:2]
        k = int(np.argmin(np.hypot(detections["x"] - x, detections["y"] - y)))
        # Windowed centroid of a star at S/N ~360: ~0.01 px of noise; 0.05 allowed.
        assert (measured["x"][k], measured["y"][k]) == pytest.approx((x, y), abs=0.05)
        # The circle of radius 3a (a ≈ 2.1, the science star's) holds 1 − exp(−r²/2σ²) =
        # 99.9 % of the template star's light; the noise in it is 5·√(π r²) ≈ 55 counts
        # (0.3 %), the annulus sky's error times the area ~0.4·120 ≈ 50 more: 1.5 %.
        radius = 3.0 * max(float(detections["a"][k]), 1.0)
        inside = 1.0 - math.exp(-(radius**2) / (2 * SIGMA_TEMPLATE**2))
        assert measured["aperFlux"][k] == pytest.approx(GOOD * inside, rel=0.015)
        assert measured["snr"][k] == pytest.approx(
            measured["aperFlux"][k] / (NOISE * math.sqrt(math.pi) * radius), rel=0.05
        )  # sep's error is the noise in the circle (its area to 1 % by subpixels), 5 %
    # The science-only star: nothing in the template (noise, S/N ~0 ± a few); the shifted
    # star: the centroid walks from the science position to the template's, 3 px away.
    k = int(np.argmin(np.hypot(detections["x"] - 250.0, detections["y"] - 190.0)))
    assert abs(measured["snr"][k]) < 5.0
    (templateX, templateY), (scienceX, scienceY) = SHIFTED["shifted"]
    k = int(np.argmin(np.hypot(detections["x"] - scienceX, detections["y"] - scienceY)))
    assert (measured["x"][k], measured["y"][k]) == pytest.approx((templateX, templateY), abs=0.1)


def test_row_medians_equal_numpy_nanmedian() -> None:
    from psfmatch._sources import _rowMedians

    rng = np.random.default_rng(3)
    values = rng.normal(size=(200, 37))
    values[rng.random(values.shape) < 0.4] = np.nan  # odd and even counts per row
    values[5] = np.nan  # a row with nothing
    values[6, 1:] = np.nan  # a row with one value
    with np.errstate(all="ignore"), pytest.warns(RuntimeWarning, match="All-NaN"):
        expected = np.nanmedian(values, axis=1)
    np.testing.assert_array_equal(_rowMedians(values), expected)


def test_template_is_measured_only_as_far_as_needed() -> None:
    """With maxKernelSources the candidates are measured in the template brightest first
    until enough are seen: the table is the first rows of the unlimited one, and no more
    stars were measured in the template than the FWHM sample and one batch."""
    sim = simulatePair((1024, 1024), nStars=1000, seed=3, nTransients=0)
    config = KernelSourceSelectionConfig()
    config.maxKernelSources = -1
    everything = selectKernelSources(sim.template, sim.science, config, kernelSize=10)
    assert len(everything) > 256 + 64
    config.maxKernelSources = 10
    cache: dict[str, Any] = {}
    limited = selectKernelSources(
        sim.template, sim.science, config, kernelSize=10, radiusCache=cache
    )
    assert len(limited) == 10
    for column in everything.colnames:
        np.testing.assert_array_equal(limited[column], everything[column][:10])
    # 256 for the FWHM sample, at most one batch of 64 for the table (some may be both).
    assert int(cache["templateMeasured"].sum()) <= 256 + 64


def test_unknown_exclude_planes_are_ignored(field: tuple[pm.MaskedImage, pm.MaskedImage]) -> None:
    # As documented: a plane name the mask does not define excludes nothing and is no error.
    template, science = field
    plain = selectKernelSources(template, science, KernelSourceSelectionConfig(), kernelSize=21)
    config = KernelSourceSelectionConfig()
    config.excludeMaskPlanes = [*config.excludeMaskPlanes, "NOT_A_PLANE"]
    table = selectKernelSources(template, science, config, kernelSize=21)
    np.testing.assert_array_equal(table["x"], plain["x"])
    assert table.meta["nRejectedMasked"] == plain.meta["nRejectedMasked"] == 2
