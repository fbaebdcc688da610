# SPDX-License-Identifier: BSD-3-Clause
"""The template on the science image's pixel grid, by the images' origins.

An image's origin ``xy0`` is the position of its pixel (0, 0) on a parent pixel grid that the
two images share (LSST's convention; FITS files carry it in the ``CRVAL1A``/``LTV1`` keywords,
see `psfmatch.io`). A template with another box than the science image's is a window of the
same grid: larger (a survey template), offset by whole pixels, or covering part of the science
image. The subtraction runs over the science image's box; the template is cut to that box and,
where it reaches further, to a margin of up to a kernel half-width around it, so that the
convolved template is real data up to the science image's edges (the reference's subtraction
task likewise cuts its warped template to the science box). Where the template does not reach,
its pixels are NO_DATA and so are the difference's.

Origins can be wrong: files cut from one frame by a tool that records its own offsets, or a
pair whose origins were never meant to be compared. `starOffset` measures where the stars say
the template lies, so that a disagreement is reported instead of subtracted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .image import Mask, MaskedImage

#: Stars used to measure the offset: the brightest this many of each image.
_N_STARS = 50
#: Two stars match when their positions agree to this many pixels.
_MATCH_RADIUS = 1.5


@dataclass(frozen=True)
class Placement:
    """The template on (and around) the science box.

    Attributes
    ----------
    wide : `MaskedImage`
        The template on the science box grown by up to ``margin`` pixels on each side where
        the template reaches; pixels the template does not cover are 0 with ``NO_DATA``.
    uncovered : `numpy.ndarray` or None
        Boolean, the science box's shape: True where the template has no pixel; None when it
        covers the whole box.
    coveredFraction : `float`
        The fraction of the science box's pixels that the template covers without ``NO_DATA``.
    """

    wide: MaskedImage
    uncovered: np.ndarray | None
    coveredFraction: float


def _bounds(box: Any) -> tuple[int, int, int, int]:
    return box.getMinX(), box.getMinY(), box.getMaxX(), box.getMaxY()


def cropView(mi: MaskedImage, box: Any) -> MaskedImage:
    """A view of ``mi``'s planes inside ``box`` (parent coordinates, inside ``mi``), or ``mi``
    itself when the boxes are equal."""
    if mi.getBBox() == box:
        return mi
    x0, y0 = mi.getXY0()
    bx0, by0, bx1, by1 = _bounds(box)
    sl = (slice(by0 - y0, by1 - y0 + 1), slice(bx0 - x0, bx1 - x0 + 1))
    return MaskedImage(mi.image[sl], mi.mask[sl], mi.variance[sl], xy0=(bx0, by0))


def placeTemplate(template: MaskedImage, scienceBox: Any, margin: int) -> Placement:
    """Cut (and, where it does not reach, pad) ``template`` to ``scienceBox`` plus a margin.

    Parameters
    ----------
    template : `MaskedImage`
        The template, at its own origin; not modified (the planes of the answer are new).
    scienceBox : `Box2I`
        The science image's box, parent coordinates.
    margin : `int`
        How far beyond the science box to keep template pixels: the kernel's half-width.
    """
    sx0, sy0, sx1, sy1 = _bounds(scienceBox)
    tx0, ty0, tx1, ty1 = _bounds(template.getBBox())
    # The wide box: each side of the science box moved out by the margin, but not beyond the
    # template (padding there would only add NO_DATA that the convolution's border gives).
    gx0 = sx0 - min(margin, max(0, sx0 - tx0))
    gy0 = sy0 - min(margin, max(0, sy0 - ty0))
    gx1 = sx1 + min(margin, max(0, tx1 - sx1))
    gy1 = sy1 + min(margin, max(0, ty1 - sy1))
    shape = (gy1 - gy0 + 1, gx1 - gx0 + 1)
    noData = Mask.getPlaneBitMask("NO_DATA")
    image = np.zeros(shape, dtype=template.image.dtype)
    variance = np.zeros(shape, dtype=template.variance.dtype)
    mask = np.full(shape, noData, dtype=template.mask.dtype)
    # The overlap of the template and the wide box, in both arrays' indices.
    ox0, oy0, ox1, oy1 = max(gx0, tx0), max(gy0, ty0), min(gx1, tx1), min(gy1, ty1)
    covers = np.zeros(shape, dtype=bool)
    if ox0 <= ox1 and oy0 <= oy1:
        dst = (slice(oy0 - gy0, oy1 - gy0 + 1), slice(ox0 - gx0, ox1 - gx0 + 1))
        src = (slice(oy0 - ty0, oy1 - ty0 + 1), slice(ox0 - tx0, ox1 - tx0 + 1))
        image[dst] = template.image[src]
        variance[dst] = template.variance[src]
        mask[dst] = template.mask[src]
        covers[dst] = True
    inner = (slice(sy0 - gy0, sy1 - gy0 + 1), slice(sx0 - gx0, sx1 - gx0 + 1))
    uncovered = ~covers[inner]
    usable = np.count_nonzero((mask[inner] & noData) == 0)
    return Placement(
        wide=MaskedImage(image, mask, variance, xy0=(gx0, gy0)),
        uncovered=uncovered if uncovered.any() else None,
        coveredFraction=usable / uncovered.size,
    )


@dataclass(frozen=True)
class StarOffset:
    """Where the stars put the template: its pixel (0, 0) lies on the science image's pixel
    (``dx``, ``dy``) by ``nMatched`` pairs of stars (of ``nScience`` and ``nTemplate``)."""

    dx: float
    dy: float
    nMatched: int
    nScience: int
    nTemplate: int
    #: Pairs that agree with the ``expected`` shift given to `starOffset` (0 without one).
    nExpected: int = 0


def _brightest(positions: np.ndarray, n: int) -> np.ndarray:
    order = np.argsort(-np.asarray(positions["flux"], dtype=float), kind="stable")[:n]
    return np.stack([positions["x"][order], positions["y"][order]], axis=1).astype(float)


def starOffset(
    scienceStars: np.ndarray,
    templateStars: np.ndarray,
    expected: tuple[float, float] | None = None,
) -> StarOffset | None:
    """The shift that matches the most of the brightest stars of two images.

    Parameters
    ----------
    scienceStars, templateStars : `numpy.ndarray`
        Detections with ``x``, ``y`` (array indices of each image) and ``flux``
        (`psfmatch._sources.detectSources`).
    expected : (`float`, `float`), optional
        A shift to count the agreeing pairs of too (``nExpected``): the origins' one.

    Returns
    -------
    offset : `StarOffset` or None
        None unless at least 3 stars, and a third of the fewer image's brightest, agree on
        one shift (a field too sparse or too different to tell).

    Notes
    -----
    Every pair of the ``_N_STARS`` brightest stars of each image votes for the shift between
    them, in whole pixels; the shift with the most votes within ``_MATCH_RADIUS`` is refined
    to the median of its pairs. The true shift gets a vote from every star in both images;
    a wrong one only from chance pairs.
    """
    if any(
        len(s) < 3 or "flux" not in (s.dtype.names or ()) for s in (scienceStars, templateStars)
    ):
        return None  # too few detections (or none: a fully masked image has no fluxes)
    sci = _brightest(scienceStars, _N_STARS)
    tmp = _brightest(templateStars, _N_STARS)
    shifts = (sci[:, None, :] - tmp[None, :, :]).reshape(-1, 2)
    cells, votes = np.unique(np.rint(shifts).astype(np.int64), axis=0, return_counts=True)
    best = cells[np.argmax(votes)].astype(float)
    near = np.all(np.abs(shifts - best) <= _MATCH_RADIUS, axis=1)
    nMatched = int(near.sum())
    if nMatched < max(3, min(len(sci), len(tmp)) // 3):
        return None
    dx, dy = np.median(shifts[near], axis=0)
    nExpected = 0
    if expected is not None:
        agree = np.abs(shifts - np.asarray(expected, dtype=float)) <= _MATCH_RADIUS
        nExpected = int(np.all(agree, axis=1).sum())
    return StarOffset(float(dx), float(dy), nMatched, len(sci), len(tmp), nExpected)
