# SPDX-License-Identifier: BSD-3-Clause
"""The sky of one image for variance rescaling: which pixels hold no source light, and the
sky level under them (`skySample`).

The variance rescaling (`psfmatch._inputs._varianceScaleFactor`) compares the sky pixels'
(image − sky)/σ with a unit spread. Every pixel with source light left in the "sky" widens
that spread, so the sources are excluded the way the reference excludes its detections: the
DETECTED, DETECTED_NEGATIVE and INTRP mask planes (besides the bad ones), and the pixels whose
PSF-scale smoothed image lies above 4σ of the *sky* noise. The threshold is in units of the
sky's σ, not of each pixel's own σ: a variance plane that carries the stars' Poisson noise
would otherwise raise the threshold on the stars and leave their wings in the sky (what the
segmentation at the per-pixel σ did before). The sky level is measured on the sky pixels alone
and the mask made again from it, twice: on a crowded field a background measured on every
pixel sits well above the true sky (by 2.6σ on 10⁴ stars in 1024²) and lets the wings through.

The mask and the sky level are made on 2×2 bins (a quarter of the work; a mask needs no finer
grid); the statistic is taken on every usable pixel of the sky bins (on a whole-row sample of
the bins for images of more than ~4·10⁶ sky pixels).
"""

from __future__ import annotations

__all__ = ["SOURCE_PLANES", "skySample"]

from typing import Any

import numpy as np

from ._sources import _rowMedians
from .image import Mask, MaskedImage, _rowBands

#: Mask planes that mark source pixels (the reference's exclusions besides the bad planes).
SOURCE_PLANES = ("DETECTED", "DETECTED_NEGATIVE", "INTRP")

#: A pixel whose smoothed value exceeds this many σ of the smoothed sky noise holds source
#: light. Measured on simulated fields with exact variance planes (sparse, star-dominated and
#: 10⁴ stars in 1024²): 4σ gave factors 0.981–1.001, 3σ 0.976–0.998, 2.5σ 0.976–0.995 (a
#: lower threshold takes more noise peaks out of the sky and narrows the spread).
_THRESHOLD = 4.0

#: Side (pixels of the image) of the cells the sky level is a median over.
_MESH = 64

#: At most about this many sky pixels make the statistic (whole rows of bins, evenly spaced):
#: the quartiles of 2·10⁶ normal values are fixed to 0.15 %.
_MAX_SAMPLE = 1 << 21

#: Rounds of (sky level → source mask): two converge on crowded fields (a third changes the
#: factor by < 0.2 %).
_ROUNDS = 2


def _smooth(values: np.ndarray) -> np.ndarray:
    """``values`` smoothed by the binomial kernel [1, 4, 6, 4, 1]/16 along each axis (zeros
    beyond the edges): a Gaussian of σ = 1 (2 image pixels on the 2×2 bins) to 2 %, by array
    additions (a quarter of the time of a general separable filter)."""
    out = values.astype(np.float32, copy=True)
    for axis in (0, 1):
        for _ in range(2):  # [1, 2, 1]/4 twice
            moved = np.moveaxis(out, axis, 0)
            new = 2.0 * moved
            new[1:] += moved[:-1]
            new[:-1] += moved[1:]
            new *= np.float32(0.25)
            out = np.moveaxis(new, 0, axis)
    return np.ascontiguousarray(out)


#: Σw² of `_smooth`'s kernel per axis: (1 + 16 + 36 + 16 + 1)/256.
_SMOOTH_SUM_SQUARES = 70.0 / 256.0


def _binned(plane: np.ndarray, ny: int, nx: int) -> np.ndarray:
    """The 2×2 sums of ``plane[: 2 ny, : 2 nx]`` (float32)."""
    p = plane[: 2 * ny, : 2 * nx]
    out = p[0::2, 0::2].astype(np.float32)
    out += p[1::2, 0::2]
    out += p[0::2, 1::2]
    out += p[1::2, 1::2]
    return out


def _meshMedian(values: np.ndarray, good: np.ndarray, mesh: int) -> np.ndarray:
    """A smooth map of the median of ``values[good]`` in ``mesh``-sized cells (3×3
    median-filtered, bilinearly interpolated), cells without enough good pixels filled from
    the others; NaN everywhere if no cell has any.

    Each cell's median is taken over every other pixel of it in each direction (a quarter:
    the median of ≥ 50 sky values is still fixed to a few % of their σ, far below what the
    variance factor could see), all cells by one sort. The rows and columns beyond the last
    whole cell take the interpolation's edge values."""
    ny, nx = values.shape
    my, mx = max(1, ny // mesh), max(1, nx // mesh)
    cy, cx = min(mesh, ny), min(mesh, nx)
    sub = (slice(0, my * cy, 2), slice(0, mx * cx, 2))
    cells = np.where(good[sub], values[sub], np.float32(np.nan))
    side_y, side_x = cells.shape[0] // my, cells.shape[1] // mx
    cells = cells[: my * side_y, : mx * side_x].reshape(my, side_y, mx, side_x)
    flat = cells.transpose(0, 2, 1, 3).reshape(my * mx, side_y * side_x)
    count = np.count_nonzero(~np.isnan(flat), axis=1)
    grid = _rowMedians(flat).reshape(my, mx)
    # A cell needs some sky to say where its sky is: 5 % of its (sampled) pixels.
    grid[(count < max(8, flat.shape[1] // 20)).reshape(my, mx)] = np.nan
    known = np.isfinite(grid)
    if not known.any():
        return np.full(values.shape, np.nan, dtype=np.float32)
    if not known.all():
        # Empty cells take their nearest measured cell's value.
        from scipy import ndimage  # rare: importing it costs a run ~50 ms

        _, (iy, ix) = ndimage.distance_transform_edt(~known, return_indices=True)
        grid = grid[iy, ix]
    if min(my, mx) >= 3:
        grid = _median3x3(grid)
    # Bilinear between cell centres, constant beyond the outer ones.
    ys = np.clip((np.arange(ny) + 0.5) * my / ny - 0.5, 0, my - 1)
    xs = np.clip((np.arange(nx) + 0.5) * mx / nx - 0.5, 0, mx - 1)
    rows = np.stack([np.interp(xs, np.arange(mx), grid[j]) for j in range(my)]).astype(np.float32)
    j0 = np.floor(ys).astype(np.intp)
    j1 = np.minimum(j0 + 1, my - 1)
    t = (ys - j0).astype(np.float32)[:, None]
    out = rows[j1] - rows[j0]
    out *= t
    out += rows[j0]
    return np.asarray(out)


def _median3x3(grid: np.ndarray) -> np.ndarray:
    """The 3×3 median filter of a small grid, edges extended (``scipy.ndimage.median_filter(
    grid, size=3, mode="nearest")``: the same values, the middle of nine, without importing
    scipy.ndimage for it)."""
    padded = np.pad(grid, 1, mode="edge")
    windows = np.lib.stride_tricks.sliding_window_view(padded, (3, 3))
    return np.asarray(np.median(windows.reshape(*grid.shape, 9), axis=-1))


def _binSpread(residual: np.ndarray, skyVar: np.ndarray, sky: np.ndarray) -> float:
    """The robust spread of the sky bins' residual over their plane σ (σ/2 for a bin of four),
    on every 4th bin in each direction: 1 if the plane is right, whatever it holds."""
    pick = sky[::4, ::4] & (skyVar[::4, ::4] > 0)
    if np.count_nonzero(pick) < 100:
        return 1.0
    z = residual[::4, ::4][pick] / (0.5 * np.sqrt(skyVar[::4, ::4][pick]))
    # From the lower tail (the 2.3rd to 15.9th percentile, −2σ to −1σ of a normal
    # distribution): source light only adds, so it barely reaches there, where the
    # quartiles of a crowded field's bins are widened by it.
    q2, q16 = np.percentile(z, (2.275, 15.866))
    spread = float(q16 - q2)
    return spread if spread > 0 else 1.0


def skySample(mi: MaskedImage, badBits: int) -> tuple[np.ndarray, np.ndarray] | None:
    """Sky pixels of ``mi`` and the sky level under them.

    Parameters
    ----------
    mi : `MaskedImage`
        The image.
    badBits : `int`
        Mask bits of unusable pixels; those of `SOURCE_PLANES` are left out too.

    Returns
    -------
    sample : (`numpy.ndarray`, `numpy.ndarray`) or None
        ``(image − sky level)`` and the variance at the sky pixels of the sample (float64),
        or None with fewer than 100 of them.
    """
    sourceBits = Mask.getPlaneBitMask(list(SOURCE_PLANES), skipUnknown=True)
    excluded = int(badBits) | int(sourceBits)
    ny, nx = mi.image.shape
    by, bx = ny // 2, nx // 2
    if by < 2 or bx < 2:
        return None
    dtype: Any = np.float32
    # The bins (means of usable pixels) find the sources and the sky level.
    image = np.asarray(mi.image)
    variance = np.asarray(mi.variance)
    usable = np.empty((2 * by, 2 * bx), dtype=bool)
    for band in _rowBands(2 * by):
        img, var = image[band, : 2 * bx], variance[band, : 2 * bx]
        u = (np.asarray(mi.mask)[band, : 2 * bx] & excluded) == 0
        with np.errstate(invalid="ignore"):
            u &= np.isfinite(img)
            u &= np.isfinite(var)
            u &= var > 0
        usable[band] = u
    if np.count_nonzero(usable[0::2, 0::2]) < 100:
        return None
    crop = (slice(0, 2 * by), slice(0, 2 * bx))
    if usable.all():  # the usual image: no zero-filled copies, four pixels in every bin
        anyUsable = np.ones((by, bx), dtype=bool)
        mean = _binned(image[crop], by, bx)
        mean *= dtype(0.25)
        meanVar = _binned(variance[crop], by, bx)
        meanVar *= dtype(0.25)
    else:
        count = _binned(usable, by, bx)
        total = _binned(np.where(usable, image[crop], dtype(0.0)), by, bx)
        varTotal = _binned(np.where(usable, variance[crop], dtype(0.0)), by, bx)
        anyUsable = count > 0
        count = np.maximum(count, dtype(1.0))
        mean = np.where(anyUsable, total / count, dtype(0.0))
        meanVar = np.where(anyUsable, varTotal / count, dtype(0.0))
        del total, varTotal, count
    # The smoothing of the bins' means (`_smooth`: a Gaussian of 2 image pixels; the 2×2 box
    # adds its own width, which the mask need not account for). Its noise, for a flat
    # per-pixel σ and four pixels a bin: σ/2 · sqrt(Σw²) per axis (Σw = 1).
    noiseFactor = 0.5 * _SMOOTH_SUM_SQUARES
    mesh = max(4, _MESH // 2)
    sky = anyUsable.copy()
    for _ in range(_ROUNDS + 1):
        level = _meshMedian(mean, sky, mesh)
        skyVar = _meshMedian(meanVar, sky, mesh)
        if not np.all(np.isfinite(level)):
            return None
        residual = mean - level
        residual[~anyUsable] = 0.0
        smooth = _smooth(residual)
        # The threshold is in σ of the noise the pixels show, not of the plane's (which may be
        # what is wrong): the plane's sky σ times the bins' own robust spread in its units.
        spread = _binSpread(residual, skyVar, sky)
        # Above threshold·σ of the smoothed sky noise: source light. Only upward (a source),
        # as the DETECTED plane; negative sources are the DETECTED_NEGATIVE plane's.
        with np.errstate(invalid="ignore"):
            noise = np.sqrt(np.maximum(skyVar, 0.0))
            noise *= np.float32(_THRESHOLD * noiseFactor * spread)
            source = smooth > noise
        sky = anyUsable & ~source
    # Every usable pixel of the sky bins, in whole bin rows: up to _MAX_SAMPLE of them.
    step = max(1, int(np.count_nonzero(sky)) * 4 // _MAX_SAMPLE + 1)
    rows = slice(0, by, step)
    skyRows = np.repeat(np.repeat(sky[rows], 2, axis=0), 2, axis=1)
    levelRows = np.repeat(np.repeat(level[rows], 2, axis=0), 2, axis=1)
    full = np.repeat(np.arange(0, by, step) * 2, 2)
    full[1::2] += 1
    pick = skyRows & usable[full]
    if np.count_nonzero(pick) < 100:
        return None
    values = image[full, : 2 * bx][pick].astype(np.float64)
    values -= levelRows[pick]
    var64 = variance[full, : 2 * bx][pick].astype(np.float64)
    return values, var64
