# SPDX-License-Identifier: BSD-3-Clause
"""An image's PSF measured from its own isolated stars (docs/algorithm.md §7.11, "PSFs").

Each star's stamp is cut around its pixel, its sky (the clipped mean of a wide annulus around
it, `_annulusSky`) subtracted, its windowed centroid found, and the stamp shifted by the
Fourier shift theorem so that the centroid falls on the centre pixel; divided by its flux, it
is an estimate of the unit-sum image of a star centred on a pixel, with a per-pixel variance
from the variance plane; the light of other detected sources near it is left out. The
estimates of the stars of one region are combined pixel by pixel by their mean weighted by
each star's S/N², without the values more than `_CLIP` standard deviations from the last mean
(a cosmic ray, an undetected neighbour), and with each star's flux refitted with the PSF of
the last round (`_combine`); the result is normalised to unit sum. With several regions (an
n × n grid of the box) the region PSFs, at their stars' mean positions, are fitted by a
Chebyshev field of order ``min(n − 1, 2)`` (`psfmatch._psffield`).

Averaged over the random sub-pixel positions of many stars, the shifted stamps converge to
the band-limited part of the PSF: what the image's pixels cannot represent (power beyond the
Nyquist frequency, a fraction ~exp(−π²σ²/2) for a Gaussian of σ pixels: 3e-4 at σ = 1.2)
is left out. The matching kernel of the cross-convolution absorbs what is left of the
difference (docs/algorithm.md §7.11).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._psffield import PsfField, fitPsfField
from ._psfutil import FWHM_PER_SIGMA
from .errors import InsufficientKernelSourcesError
from .image import MaskedImage

#: Values more than this many standard deviations from the first mean leave the second.
_CLIP = 4.0
#: Centroid iterations (each moves the Gaussian window to the last centroid).
_CENTROID_ITERATIONS = 6
#: Extra pixels around a stamp so that the Fourier shift's wrap-around falls outside it.
_SHIFT_MARGIN = 3
#: Another source's light is left out of a star's stamp within this many FWHMs of it.
_NEIGHBOUR_RADIUS = 2.0
#: Rounds of (PSF-fit fluxes, clipped weighted mean).
_ITERATIONS = 3
#: A star's sky is clipped at this many standard deviations of the pixel noise.
_SKY_CLIP = 3.0


@dataclass(frozen=True, eq=False)
class MeasuredPsf:
    """One region's stacked PSF: ``image`` (unit sum), ``variance`` (per pixel), ``nStars``
    and the stars' mean position ``(x, y)``."""

    image: np.ndarray
    variance: np.ndarray
    nStars: int
    x: float
    y: float


def _windowedCentroid(stamp: np.ndarray, x: float, y: float, sigma: float) -> tuple[float, float]:
    """The centroid of ``stamp`` under a round Gaussian window of ``sigma`` moved to it,
    starting at array position (x, y): sep's ``winpos`` in numpy."""
    ny, nx = stamp.shape
    yy, xx = np.mgrid[:ny, :nx].astype(float)
    for _ in range(_CENTROID_ITERATIONS):
        w = np.exp(-0.5 * ((xx - x) ** 2 + (yy - y) ** 2) / (sigma * sigma)) * stamp
        total = w.sum()
        if not total > 0:
            break
        x, y = float((w * xx).sum() / total), float((w * yy).sum() / total)
    return x, y


def _fourierShift(stamp: np.ndarray, dx: float, dy: float) -> np.ndarray:
    """``stamp`` moved by (dx, dy) pixels (band-limited interpolation), zero-padded to twice
    its size first so that its two opposite edges do not meet."""
    ny, nx = stamp.shape
    padded = np.zeros((2 * ny, 2 * nx))
    padded[:ny, :nx] = stamp
    fy = np.fft.fftfreq(2 * ny)[:, None]
    fx = np.fft.rfftfreq(2 * nx)[None, :]
    phase = np.exp(-2j * math.pi * (fx * dx + fy * dy))
    return np.fft.irfft2(np.fft.rfft2(padded) * phase, s=padded.shape)[:ny, :nx]


def _annulusSky(
    mi: MaskedImage,
    ix: int,
    iy: int,
    inner: float,
    outer: float,
    badBits: int,
    others: tuple[np.ndarray, np.ndarray, float] | None = None,
) -> float:
    """The sky around array pixel (ix, iy): the mean of the annulus ``inner < r ≤ outer`` of
    the image (the part of it inside the image, without ``badBits``), clipped twice at
    `_SKY_CLIP` of its typical noise about its median (neighbours, a spike).

    A wide annulus because the error of a star's sky, times its stamp's area, is an error of
    its flux spread over the stamp, which the PSF's unit sum takes out of its core: with a
    2-pixel ring it was ~1e-3 of the stacked PSF in a simulation, enough to move the kernel
    sum by 0.2 %. The mean rather than the median, because the faint sources below the
    detection limit are part of the sky under the star too (their skewed light puts the
    median low); clipped, because a neighbour or a spike is not.

    ``others`` (array x, array y, radius): the other detected sources, relative to (ix, iy),
    whose pixels within ``radius`` are left out of the annulus as they are left out of the
    stamps. Unclipped, their wings put the sky high and the PSF's wings low: a β = 2.5 Moffat
    PSF stacked on a 300-star field was 3 % too concentrated (a PSF fit 2.5 % low), within
    0.1 % with them left out (measured on the accuracy matrix's moffat2.5 pair, true star
    positions; tests/test_diffpsf.py checks the pipeline's PSF against the truth)."""
    ny, nx = mi.image.shape
    r = int(math.ceil(outer))
    ys, ye = max(iy - r, 0), min(iy + r + 1, ny)
    xs, xe = max(ix - r, 0), min(ix + r + 1, nx)
    dy = np.arange(ys, ye)[:, None] - iy
    dx = np.arange(xs, xe)[None, :] - ix
    distance = np.hypot(dx, dy)
    data = np.asarray(mi.image[ys:ye, xs:xe], dtype=np.float64)
    variance = np.asarray(mi.variance[ys:ye, xs:xe], dtype=np.float64)
    usable = (distance > inner) & (distance <= outer) & np.isfinite(data)
    usable &= (mi.mask[ys:ye, xs:xe] & badBits) == 0
    if others is not None:
        ox, oy, radius = others
        close = (np.abs(ox) < r + radius) & (np.abs(oy) < r + radius) & (np.hypot(ox, oy) > 1.5)
        for nxOff, nyOff in zip(ox[close], oy[close], strict=True):
            usable &= np.hypot(dx - nxOff, dy - nyOff) > radius
    values = data[usable]
    if values.size == 0:
        return 0.0
    positive = variance[usable]
    positive = positive[np.isfinite(positive) & (positive > 0)]
    sigma = math.sqrt(float(np.median(positive))) if positive.size else float(np.std(values))
    centre = float(np.median(values))
    for _ in range(2):
        kept = values[np.abs(values - centre) <= _SKY_CLIP * sigma]
        if kept.size == 0:
            break
        centre = float(kept.mean())
    return centre


def _starStamps(
    mi: MaskedImage,
    x: np.ndarray,
    y: np.ndarray,
    halfWidth: int,
    fwhm: float,
    badBits: int,
    neighbours: tuple[np.ndarray, np.ndarray] | None,
    maxStars: int | None = None,
    skyWithoutNeighbours: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each usable star's centred, sky-subtracted stamp and its variance (+inf within
    `_NEIGHBOUR_RADIUS` FWHMs of another source of ``neighbours``), and which stars those are;
    the first ``maxStars`` usable ones (all by default).

    A star is usable when its stamp (with the shift margin) lies inside the image, has no
    ``badBits`` and no non-finite value, its windowed centroid stays within 1.5 pixels of
    its position, and its stamp has a positive sum.
    """
    image, variance, mask = mi.image, mi.variance, mi.mask
    ny, nx = image.shape
    x0, y0 = mi.getXY0()
    half = halfWidth + _SHIFT_MARGIN
    size = 2 * halfWidth + 1
    sigma = max(fwhm / FWHM_PER_SIGMA, 1.0)
    inner = (slice(_SHIFT_MARGIN, _SHIFT_MARGIN + size),) * 2
    offsets = np.arange(size, dtype=float) - halfWidth
    radius = max(_NEIGHBOUR_RADIUS * fwhm, 3.0)
    stamps: list[np.ndarray] = []
    variances: list[np.ndarray] = []
    used: list[int] = []
    for k, (xs, ys) in enumerate(zip(x, y, strict=True)):
        if maxStars is not None and len(used) >= maxStars:
            break
        ix, iy = int(math.floor(xs - x0 + 0.5)), int(math.floor(ys - y0 + 0.5))
        if ix - half < 0 or iy - half < 0 or ix + half >= nx or iy + half >= ny:
            continue
        box = (slice(iy - half, iy + half + 1), slice(ix - half, ix + half + 1))
        if (mask[box] & badBits).any():
            continue
        stamp = np.array(image[box], dtype=np.float64)
        var = np.array(variance[box], dtype=np.float64)
        if not (np.isfinite(stamp).all() and np.isfinite(var).all()):
            continue
        others = None
        if skyWithoutNeighbours and neighbours is not None:
            others = (neighbours[0] - (ix + x0), neighbours[1] - (iy + y0), radius)
        stamp -= _annulusSky(mi, ix, iy, halfWidth + 1.0, 2.0 * halfWidth + 2.0, badBits, others)
        cx, cy = _windowedCentroid(stamp, float(half), float(half), sigma)
        if abs(cx - half) > 1.5 or abs(cy - half) > 1.5:
            continue  # the window wandered off: a blend, not a star
        stamp = _fourierShift(stamp, half - cx, half - cy)[inner]
        if not float(stamp.sum()) > 0:
            continue
        var = var[inner].copy()
        if neighbours is not None:
            # The other sources' positions in the shifted stamp's frame (centre = centroid).
            ox = neighbours[0] - (cx - half + ix + x0)
            oy = neighbours[1] - (cy - half + iy + y0)
            close = (np.abs(ox) < halfWidth + radius) & (np.abs(oy) < halfWidth + radius)
            close &= np.hypot(ox, oy) > 1.5  # not the star itself
            for nxOff, nyOff in zip(ox[close], oy[close], strict=True):
                near = np.hypot(offsets[None, :] - nxOff, offsets[:, None] - nyOff) <= radius
                var[near] = np.inf
        stamps.append(stamp)
        variances.append(var)
        used.append(k)
    if not stamps:
        empty = np.zeros((0, size, size))
        return empty, empty, np.zeros(0, dtype=int)
    return np.array(stamps), np.array(variances), np.array(used)


def _combine(stamps: np.ndarray, variances: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The unit-sum PSF from sky-subtracted star stamps and their per-pixel variances (+inf
    where a pixel must not count), and its per-pixel variance.

    Each star's flux is first its stamp's sum, then, `_ITERATIONS` times, its PSF-fit flux
    with the last PSF (a neighbour's masked light then no longer counts towards it). The PSF
    is the weighted mean of the stamps over their fluxes, each star weighted by its S/N², flux²
    over its stamp's median variance, the same at every pixel: per-pixel inverse variances
    would let the faint stars decide the core (where a bright star's own photon noise is) and
    the bright ones the wings, so that any error of the faint stars' fluxes would change the
    PSF's shape (a 3 % narrower PSF in a simulation). Values more than `_CLIP` of their own
    standard deviations from the last mean (a cosmic ray, an undetected neighbour) are left
    out. Variances are floored at 1e-6 of their median (1 where none is positive): a variance
    plane of zeros (a model image, a template from a stack that lost it) would otherwise give
    infinite weights.
    """
    finite = variances[np.isfinite(variances)]
    positive = finite[finite > 0]
    floor = 1e-6 * float(np.median(positive)) if positive.size else 1.0
    variances = np.maximum(variances, floor)
    usable = np.isfinite(variances)
    inverse = np.where(usable, 1.0 / variances, 0.0)
    typical = np.array(
        [np.median(v[u]) if u.any() else np.inf for v, u in zip(variances, usable, strict=True)]
    )
    fluxes = stamps.sum(axis=(1, 2))
    mean: np.ndarray | None = None
    for _ in range(_ITERATIONS):
        scaled = stamps / fluxes[:, None, None]
        weights = np.where(usable, ((fluxes * fluxes) / typical)[:, None, None], 0.0)
        if mean is not None:
            sigma = np.sqrt(variances) / fluxes[:, None, None]
            weights = np.where(np.abs(scaled - mean) <= _CLIP * sigma, weights, 0.0)
        total = weights.sum(axis=0)
        # A pixel no star is left at keeps its last value (or 0 on the first pass).
        covered = total > 0
        new = np.zeros(stamps.shape[1:]) if mean is None else mean.copy()
        new[covered] = (weights * scaled).sum(axis=0)[covered] / total[covered]
        mean = new / new.sum()
        # The PSF-fit flux of each star with this PSF, over its usable pixels.
        norm = (inverse * mean * mean).sum(axis=(1, 2))
        fitted = (inverse * mean * stamps).sum(axis=(1, 2)) / np.where(norm > 0, norm, 1.0)
        fluxes = np.where((norm > 0) & (fitted > 0), fitted, fluxes)
    assert mean is not None
    return mean, _jackknifeVariance(weights, scaled)


def _jackknifeVariance(weights: np.ndarray, scaled: np.ndarray) -> np.ndarray:
    """The per-pixel variance of the unit-sum weighted mean of ``scaled`` by the jackknife:
    the spread of the means without one star each. Unlike the variance planes it holds every
    error a star brings to the stack as a whole (its sky, its flux, its centroid), which are
    shared by all the pixels of its stamp; +inf where fewer than two stars count."""
    n = scaled.shape[0]
    total = weights.sum(axis=0)
    weighted = (weights * scaled).sum(axis=0)
    rest = total[None] - weights
    counts = (weights > 0).sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        without = np.where(rest > 0, (weighted[None] - weights * scaled) / rest, 0.0)
    sums = without.sum(axis=(1, 2))
    without /= np.where(sums != 0, sums, 1.0)[:, None, None]
    variance = (n - 1) / n * ((without - without.mean(axis=0)) ** 2).sum(axis=0)
    return np.where(counts >= 2, variance, np.inf)


def measurePsf(
    mi: MaskedImage,
    x: np.ndarray,
    y: np.ndarray,
    halfWidth: int,
    fwhm: float,
    badBits: int,
    *,
    minStars: int = 5,
    maxStars: int = 200,
    neighbours: tuple[np.ndarray, np.ndarray] | None = None,
    skyWithoutNeighbours: bool = False,
) -> MeasuredPsf:
    """The stacked PSF of ``mi`` from the stars at parent (x, y), in the given order (the
    first ``maxStars`` usable ones); see the module docstring. ``neighbours`` are the parent
    positions of every detected source: their light is left out of the stamps (and, with
    ``skyWithoutNeighbours``, out of the sky annuli too, `_annulusSky`).

    Raises
    ------
    InsufficientKernelSourcesError
        Fewer than ``minStars`` usable stars.
    """
    stamps, variances, used = _starStamps(
        mi, x, y, halfWidth, fwhm, badBits, neighbours, maxStars, skyWithoutNeighbours
    )
    if len(used) < minStars:
        raise InsufficientKernelSourcesError(
            len(used),
            minStars,
            f"too few isolated stars to measure a PSF of {2 * halfWidth + 1} x "
            f"{2 * halfWidth + 1} pixels ({len(x)} candidates)",
        )
    image, variance = _combine(stamps, variances)
    return MeasuredPsf(image, variance, len(used), float(np.mean(x[used])), float(np.mean(y[used])))


def measurePsfField(
    mi: MaskedImage,
    x: np.ndarray,
    y: np.ndarray,
    halfWidth: int,
    fwhm: float,
    badBits: int,
    *,
    regions: int = 1,
    minStars: int = 5,
    maxStars: int = 200,
    neighbours: tuple[np.ndarray, np.ndarray] | None = None,
    log: Any = None,
) -> tuple[PsfField, list[MeasuredPsf]]:
    """The PSF field of ``mi`` from the stars at (x, y), brightest first: one stacked PSF per
    region of an ``regions`` × ``regions`` grid of the box (each from at most ``maxStars``
    stars), fitted by a Chebyshev field of order ``min(regions − 1, 2)``. When a region has
    fewer than ``minStars`` usable stars the grid is coarsened until every region has enough.

    Returns
    -------
    field : `PsfField`
    measured : `list` of `MeasuredPsf`
        The region PSFs.

    Raises
    ------
    InsufficientKernelSourcesError
        Fewer than ``minStars`` usable stars in the whole image.
    """
    from ._psffield import _edgeBBox

    bbox = _edgeBBox(mi)
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    for n in range(max(1, int(regions)), 0, -1):
        col = np.clip(((x - bbox[0]) / (bbox[1] - bbox[0]) * n).astype(int), 0, n - 1)
        row = np.clip(((y - bbox[2]) / (bbox[3] - bbox[2]) * n).astype(int), 0, n - 1)
        measured: list[MeasuredPsf] = []
        try:
            for r in range(n):
                for c in range(n):
                    inside = (row == r) & (col == c)
                    measured.append(
                        measurePsf(
                            mi,
                            x[inside],
                            y[inside],
                            halfWidth,
                            fwhm,
                            badBits,
                            minStars=minStars,
                            maxStars=maxStars,
                            neighbours=neighbours,
                        )
                    )
        except InsufficientKernelSourcesError:
            if n == 1:
                raise
            if log is not None:
                log.info(
                    "Too few isolated stars for a PSF in each of %d x %d regions; trying %d x %d",
                    n,
                    n,
                    n - 1,
                    n - 1,
                )
            continue
        order = min(n - 1, 2)
        field = fitPsfField(
            np.array([m.image for m in measured]),
            np.array([m.x for m in measured]),
            np.array([m.y for m in measured]),
            order,
            bbox,
            "measured",
        )
        return field, measured
    raise AssertionError("unreachable: the 1 x 1 grid either returns or raises")
