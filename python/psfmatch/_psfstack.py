# SPDX-License-Identifier: BSD-3-Clause
"""An image's PSF measured from its own isolated stars (docs/algorithm.md §7.11, "PSFs").

Each star's stamp is cut around its pixel, its sky (the median of the stamp's outer ring)
subtracted, its windowed centroid found, and the stamp shifted by the Fourier shift theorem so
that the centroid falls on the centre pixel; divided by its flux (the stamp's sum), it is an
estimate of the unit-sum image of a star centred on a pixel, with a per-pixel variance from
the variance plane. The estimates of the stars of one region are combined pixel by pixel by
their inverse-variance weighted mean, twice, the second time without the values more than
`_CLIP` standard deviations from the first (a neighbour, a cosmic ray); the result is
normalised to unit sum. With several regions (an n × n grid of the box) the region PSFs, at
their stars' mean positions, are fitted by a Chebyshev field of order ``min(n − 1, 2)``
(`psfmatch._psffield`).

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


def _starEstimates(
    mi: MaskedImage,
    x: np.ndarray,
    y: np.ndarray,
    halfWidth: int,
    fwhm: float,
    badBits: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each usable star's centred unit-flux stamp and its variance, and which stars those are.

    A star is usable when its stamp (with the shift margin) lies inside the image, has no
    ``badBits`` and no non-finite value, and a positive flux.
    """
    image, variance, mask = mi.image, mi.variance, mi.mask
    ny, nx = image.shape
    x0, y0 = mi.getXY0()
    half = halfWidth + _SHIFT_MARGIN
    size = 2 * halfWidth + 1
    sigma = max(fwhm / FWHM_PER_SIGMA, 1.0)
    stamps, variances, used = [], [], []
    for k, (xs, ys) in enumerate(zip(x, y, strict=True)):
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
        ring = np.concatenate(
            [
                stamp[:2].ravel(),
                stamp[-2:].ravel(),
                stamp[2:-2, :2].ravel(),
                stamp[2:-2, -2:].ravel(),
            ]
        )
        stamp -= np.median(ring)
        cx, cy = _windowedCentroid(stamp, float(half), float(half), sigma)
        if abs(cx - half) > 1.5 or abs(cy - half) > 1.5:
            continue  # the window wandered off: a blend, not a star
        shifted = _fourierShift(stamp, half - cx, half - cy)
        inner = (slice(_SHIFT_MARGIN, _SHIFT_MARGIN + size),) * 2
        stamp = shifted[inner]
        flux = float(stamp.sum())
        if not flux > 0:
            continue
        stamps.append(stamp / flux)
        variances.append(var[inner] / (flux * flux))
        used.append(k)
    if not stamps:
        return np.zeros((0, size, size)), np.zeros((0, size, size)), np.zeros(0, dtype=int)
    return np.array(stamps), np.array(variances), np.array(used)


def _combine(stamps: np.ndarray, variances: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The clipped inverse-variance weighted mean of the stamps and its variance.

    Variances are floored at 1e-6 of their median (1 where none is positive): a variance
    plane of zeros (a model image, a template from a stack that lost it) would otherwise give
    infinite weights; equal weights are then what is left.
    """
    positive = variances[variances > 0]
    floor = 1e-6 * float(np.median(positive)) if positive.size else 1.0
    variances = np.maximum(variances, floor)
    weights = 1.0 / variances
    mean = (weights * stamps).sum(axis=0) / weights.sum(axis=0)
    keep = np.abs(stamps - mean) <= _CLIP * np.sqrt(variances)
    # A pixel that every star would lose keeps them all: the first mean then stands.
    keep |= ~keep.any(axis=0, keepdims=True)
    weights = np.where(keep, weights, 0.0)
    total = weights.sum(axis=0)
    mean = (weights * stamps).sum(axis=0) / total
    norm = mean.sum()
    return mean / norm, 1.0 / total / (norm * norm)


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
) -> MeasuredPsf:
    """The stacked PSF of ``mi`` from the stars at parent (x, y), in the given order (the
    first ``maxStars`` usable ones); see the module docstring.

    Raises
    ------
    InsufficientKernelSourcesError
        Fewer than ``minStars`` usable stars.
    """
    stamps, variances, used = _starEstimates(mi, x, y, halfWidth, fwhm, badBits)
    stamps, variances, used = stamps[:maxStars], variances[:maxStars], used[:maxStars]
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
