# SPDX-License-Identifier: BSD-3-Clause
"""The kernel-source edge cut, at both sides of every boundary pixel.

A kernel source's stamp is the (2·half + 1)² box centred on the source's nearest pixel, with
``half`` the kernel size passed to the selection (one more kernel width of margin with
``restrictKernelEdgeSources``); it must lie entirely inside the image. Stars are put at
exactly margin − 1, margin, n − margin − 1 and n − margin from each edge, on both axes of a
non-square image with a non-zero origin, and which are kept is derived here from that
geometry alone (``stampInside``), not from psfmatch's own expression. A planted off-by-one in
either comparison of the cut (``<`` for ``<=``, ``>=`` for ``>``, a margin one pixel off)
changes the answer for exactly one of these stars.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.special import erf

import psfmatch as pm
from psfmatch.make_kernel import MakeKernelTask
from psfmatch.selection import KernelSourceSelectionConfig, selectKernelSources

NY, NX = 150, 190  # non-square: an x/y swap in the cut changes the answer
XY0 = (1000, 2000)  # parent coordinates = array index + XY0
HALF = 9  # the kernel size given to the selection: stamps are 19 pixels wide
NOISE = 5.0
FLUX = 2e4  # S/N ≈ 400 (well inside the default window of 10-1000): centroids good to ~0.05 px


def stampInside(index: int, n: int, reach: int) -> bool:
    """Whether the box index − reach … index + reach (inclusive) lies in 0 … n − 1."""
    return index - reach >= 0 and index + reach <= n - 1


def boundaryStars(reach: int) -> list[tuple[int, int]]:
    """(ix, iy) array positions: the four boundary pixels of each axis, margin − 1, margin,
    n − margin − 1 and n − margin, the other coordinate well inside and the stars ≥ 25 px
    apart (isolated for the default 2-FWHM isolation radius, ≈ 10 px here)."""
    stars = []
    for k, ix in enumerate((reach - 1, reach, NX - reach - 1, NX - reach)):
        stars.append((ix, 30 + 28 * k))
    for k, iy in enumerate((reach - 1, reach, NY - reach - 1, NY - reach)):
        stars.append((50 + 28 * k, iy))
    return stars


def render(
    stars: list[tuple[int, int]], sigma: float, rng: np.random.Generator, offset: float = 0.0
) -> pm.MaskedImage:
    """Pixel-integrated Gaussians at ``stars`` + ``offset`` (both axes) plus Gaussian noise."""
    image = np.zeros((NY, NX))
    xEdges = np.arange(NX + 1) - 0.5
    yEdges = np.arange(NY + 1) - 0.5
    for x, y in stars:
        fx = np.diff(0.5 * erf((xEdges - x - offset) / (math.sqrt(2.0) * sigma)))
        fy = np.diff(0.5 * erf((yEdges - y - offset) / (math.sqrt(2.0) * sigma)))
        image += FLUX * np.outer(fy, fx)
    image += rng.normal(0.0, NOISE, image.shape)
    variance = np.full(image.shape, NOISE**2, dtype=np.float32)
    return pm.MaskedImage(image.astype(np.float32), variance=variance, xy0=XY0)


@pytest.mark.parametrize("offset", [0.0, -0.35, 0.35])
@pytest.mark.parametrize("restrict", [False, True], ids=["stampInside", "restricted"])
def test_selection_edge_cut_at_both_sides_of_each_boundary_pixel(
    restrict: bool, offset: float
) -> None:
    # ``offset``: the stars sit that far off their pixel's centre (on both axes); a star's
    # pixel is the nearest one, so the answer is the same (sep's centroids of these stars
    # are good to ~0.05 px, well inside the 0.15 px left before another pixel is nearest).
    reach = 2 * HALF if restrict else HALF
    stars = boundaryStars(reach)
    rng = np.random.default_rng(17)
    template = render(stars, 1.7, rng, offset)
    science = render(stars, 2.2, rng, offset)
    config = KernelSourceSelectionConfig()
    config.restrictKernelEdgeSources = restrict
    config.minKernelSources = 1
    table = selectKernelSources(template, science, config, kernelSize=HALF)

    expected = {
        (ix, iy) for ix, iy in stars if stampInside(ix, NX, reach) and stampInside(iy, NY, reach)
    }
    # Each kept row is the star nearest to it (centroids of S/N-400 stars are good to ~0.05
    # px; 0.3 leaves no doubt which star a row is).
    kept = set()
    for x, y in zip(table["x"] - XY0[0] - offset, table["y"] - XY0[1] - offset, strict=True):
        distance = [math.hypot(x - ix, y - iy) for ix, iy in stars]
        assert min(distance) < 0.3
        kept.add(stars[int(np.argmin(distance))])
    assert kept == expected
    # Half the stars, one on each side of each of the four boundaries, are cut at the edge.
    assert len(expected) == len(stars) // 2
    assert table.meta["nDetectedScience"] == len(stars)
    assert table.meta["nRejectedEdge"] == len(stars) - len(expected)


def test_user_positions_edge_cut_at_both_sides_of_each_boundary_pixel() -> None:
    # User-given positions (parent coordinates) get the same cut, against the image's box.
    stars = boundaryStars(HALF)
    bbox = pm.MaskedImage(np.zeros((NY, NX), dtype=np.float32), xy0=XY0).getBBox()
    # A position rounds to its nearest pixel: ±0.4 px changes nothing, so each star is also
    # given a little off its pixel, on both sides.
    positions = [
        (ix + XY0[0] + dx, iy + XY0[1] + dy)
        for ix, iy in stars
        for dx, dy in ((0.0, 0.0), (0.4, -0.4), (-0.4, 0.4))
    ]
    task = MakeKernelTask()
    task.config.selection.minKernelSources = 1
    table = task._userSources(np.array(positions), bbox, HALF)
    expected = [
        (x, y)
        for x, y in positions
        if stampInside(round(x) - XY0[0], NX, HALF) and stampInside(round(y) - XY0[1], NY, HALF)
    ]
    assert sorted(zip(table["x"], table["y"], strict=True)) == sorted(expected)
    assert len(expected) == len(positions) // 2
    assert table.meta["nRejectedEdge"] == len(positions) - len(expected)


def test_no_star_left_after_the_edge_cut_is_an_error() -> None:
    # Every star's stamp crosses the edge for a kernel this wide: the selection finds none,
    # says so, and never returns a row it did not select.
    stars = boundaryStars(HALF)
    rng = np.random.default_rng(18)
    template, science = render(stars, 1.7, rng), render(stars, 2.2, rng)
    config = KernelSourceSelectionConfig()
    config.minKernelSources = 1
    with pytest.raises(pm.InsufficientKernelSourcesError, match="found 0 usable"):
        selectKernelSources(template, science, config, kernelSize=NY // 2)


@pytest.mark.parametrize("nStars", [0, 1])
def test_zero_or_one_detection(nStars: int) -> None:
    # One star in the middle: with minKernelSources = 1 it is the kernel source; with none
    # there is nothing to detect, which is an error that says so.
    stars = [(NX // 2, NY // 2)][:nStars]
    rng = np.random.default_rng(19)
    template, science = render(stars, 1.7, rng), render(stars, 2.2, rng)
    config = KernelSourceSelectionConfig()
    config.minKernelSources = 1
    if nStars == 0:
        with pytest.raises(pm.InsufficientKernelSourcesError, match="found 0 usable"):
            selectKernelSources(template, science, config, kernelSize=HALF)
        return
    table = selectKernelSources(template, science, config, kernelSize=HALF)
    assert len(table) == 1
    # The centroid of an S/N-400 star: ~0.05 px.
    assert table["x"][0] - XY0[0] == pytest.approx(NX // 2, abs=0.2)
    assert table["y"][0] - XY0[1] == pytest.approx(NY // 2, abs=0.2)
