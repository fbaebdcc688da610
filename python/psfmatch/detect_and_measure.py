# SPDX-License-Identifier: BSD-3-Clause
"""Detection and measurement in a difference image, and association with known sources.

`detectDifferenceSources` finds positive and negative point sources in D: peaks of the
PSF-matched-filter S/N (of D/σ itself for a score image, which is matched-filtered already)
above a threshold, with the point-source flux and its error at each peak. `associate` marks
each one that lies within a radius of a template detection (``refAssociated``: the known sky)
or of a kernel source (``srcAssociated``: the stars the kernel was fitted on, the reference's
``selectSources``); a real transient is in neither, a badly subtracted star in one or both.

`DetectAndMeasureTask` runs both on a difference image, as the reference's task of that name
does; `ImagePsfMatchTask` calls the same functions with its own configuration
(``diaSourceThreshold``, ``diaSourceMatchRadius``, ``diaSourceBadMaskPlanes``) and records
the ``NFalsePositives*`` metadata.
"""

from __future__ import annotations

__all__ = [
    "DetectAndMeasureConfig",
    "DetectAndMeasureTask",
    "associate",
    "detectDifferenceSources",
    "differenceChi2",
]

import math
from dataclasses import dataclass
from typing import Any

import lsst.pex.config as pexConfig
import numpy as np
from astropy.table import Table
from numpy.lib.stride_tricks import sliding_window_view

from . import _sepguard
from ._fft import _correlateRowBands
from ._masks import UNUSABLE_PLANES, dilate
from ._psfutil import _gaussianPsfImage, _psfFwhm, _psfImage
from ._sources import _pairsWithin, detectSources
from .errors import InvalidInputError
from .image import Mask, MaskedImage, _rowBands
from .task import Struct, Task


def _usablePixels(difference: MaskedImage, rows: slice, badBits: int) -> np.ndarray:
    """For ``rows`` of D: the pixels that take part in detection (finite, a finite and
    positive variance, none of ``badBits``)."""
    image = difference.image[rows]
    variance = difference.variance[rows]
    usable: np.ndarray = np.isfinite(image)
    usable &= np.isfinite(variance)
    usable &= variance > 0
    if badBits:
        usable &= (difference.mask[rows] & badBits) == 0
    return usable


def _referenceVariance(variance: np.ndarray) -> float:
    """The median of the finite, positive variances of a sparse grid of pixels (1 without
    any): the float32 filters work with σ²_ref/σ² and D/σ_ref, of order 1 and of the S/N,
    whatever the image's units (sums of 1/σ² over a band overflow float32 for σ² below
    ~1e-32, as in images calibrated in erg/s/cm²/Å)."""
    step = max(1, max(variance.shape) // 256)
    sample = np.asarray(variance[::step, ::step], dtype=np.float64)
    sample = sample[np.isfinite(sample) & (sample > 0)]
    return float(np.median(sample)) if sample.size else 1.0


#: Where the float32 S/N image is within this fraction of the threshold, times σ²/σ²_sky
#: over the PSF's core, or of the band's largest |Σ p·D/σ²| (the error model of
#: `detectDifferenceSources`' Notes, 20× its largest measured coefficient),
#: `_matchedFilterSnr` sums it again in float64.
_THRESHOLD_MARGIN = 1e-5

#: A band with more pixels than this fraction near the threshold (a band whose brightest
#: pixels make its float32 rounding ~1 in S/N) is filtered again in float64: cheaper than
#: direct sums at all of them.
_MOST_NEAR = 1.0 / 64


def _matchedFilterSnr(
    difference: MaskedImage, psf: np.ndarray, badBits: int, threshold: float, nThreads: int
) -> np.ndarray:
    """The S/N image Σ p·D/σ² / (Σ p²/σ²)^½ of `detectDifferenceSources`, 0 at unusable
    pixels, as float32 (sep detects in float32 whatever it is given). Filtered in float32
    for float32 planes, in float64 for float64 ones, where float32 overflowed (|D|/σ near
    1e38) or where a band's brightest pixels make its rounding reach many pixels' S/N near
    the threshold (`_MOST_NEAR`). Float32 values that may lie on the wrong side of
    ±``threshold`` are replaced by direct float64 sums, so that the regions above it are
    those of an exact filter."""
    ny, nx = difference.image.shape
    snr = np.empty((ny, nx), dtype=np.float32)
    dtype = np.result_type(difference.image.dtype, difference.variance.dtype, np.float32)
    near = _filterSnr(difference, psf, badBits, threshold, nThreads, dtype, snr)
    if near is None:
        near = _filterSnr(difference, psf, badBits, threshold, nThreads, np.float64, snr)
    if near is not None and len(near[0]):
        flux, fluxErr = _pointFluxes(difference, psf, badBits, near[0], near[1], False)
        snr[near] = flux / fluxErr
    return snr


def _filterSnr(
    difference: MaskedImage,
    psf: np.ndarray,
    badBits: int,
    threshold: float,
    nThreads: int,
    dtype: Any,
    snr: np.ndarray,
) -> tuple[np.ndarray, np.ndarray] | None:
    """Write `_matchedFilterSnr` into ``snr``, filtering in ``dtype``: both correlations in
    one pass of stacked transforms, a band of rows at a time (`_correlateRowBands`), so that
    the only image-sized array is ``snr``. Returns the pixels (iy, ix) of a float32 filter
    whose |S/N| is within its rounding of ``threshold`` (none for float64), or None if a
    float32 band overflowed or had too many such pixels (``snr`` is then incomplete)."""
    ny, nx = difference.image.shape
    reference = _referenceVariance(difference.variance)
    sigmaRef = math.sqrt(reference)
    # Σ p²/σ² includes the pixel's own p_c²/σ²: a lower bound of the exact sum that also
    # holds the float32 one's rounding (relative to the band's typical values) away from 0
    # where every other pixel of the footprint is masked or has a much larger variance.
    centre = np.asarray(float(psf[psf.shape[0] // 2, psf.shape[1] // 2]) ** 2, dtype=dtype)
    isFloat32 = dtype == np.float32

    def fill(rows: slice, dest: np.ndarray) -> None:
        # In place in the band's planes (a third of the time of np.where copies).
        numerator, weight = dest
        unusable = ~_usablePixels(difference, rows, badBits)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            # In the band's dtype (float32 planes filtered in float64 are summed in float64).
            np.divide(reference, difference.variance[rows], out=weight, dtype=weight.dtype)
            np.multiply(difference.image[rows], 1.0 / sigmaRef, out=numerator, dtype=weight.dtype)
            numerator *= weight
        np.copyto(weight, 0.0, where=unusable)
        np.copyto(numerator, 0.0, where=unusable)
        if isFloat32:
            # The band's largest inputs, overlap rows included: its rounding (below).
            largest[0] = max(float(numerator.max()), -float(numerator.min()))
            largest[1] = float(weight.max())

    psf64 = np.asarray(psf, dtype=np.float64)
    psfL1, psfSquares = float(np.abs(psf64).sum()), float(np.square(psf64).sum())
    largest = [0.0, 0.0]
    kernels = [np.asarray(psf, dtype=np.float64), np.asarray(psf, dtype=np.float64) ** 2]
    nearY: list[np.ndarray] = []
    nearX: list[np.ndarray] = []
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        for rows, (numerator, denominator), (_, weight) in _correlateRowBands(
            (ny, nx), kernels, fill, dtype, nThreads
        ):
            np.maximum(denominator, weight * centre, out=denominator)
            good = weight > 0
            good &= denominator > 0
            if isFloat32:
                # The rounding of a band's FFTs reaches every pixel of it in proportion to its
                # largest inputs (an FFT spreads each value's rounding over the band), not to
                # the pixel's own sums. Of Σ p²/σ², relative: the margin times the band's
                # largest Σ p²/σ² (at most max(σ²_ref/σ²)·Σp²) over the pixel's, at least
                # the margin (σ²/σ²_sky where the weights are smooth).
                tolerance = np.divide(
                    _THRESHOLD_MARGIN * threshold * largest[1] * psfSquares, denominator
                )
                np.maximum(tolerance, _THRESHOLD_MARGIN * threshold, out=tolerance)
            np.sqrt(denominator, out=denominator)
            if isFloat32:
                # Of Σ p·D/σ²: the margin times the band's largest |Σ p·D/σ²| (at most
                # max|D·σ_ref/σ²|·Σ|p|), over the pixel's (Σ p²/σ²)^½. A bright residual or
                # cosmic ray with a sky-only variance makes it the larger term.
                tolerance += np.divide(_THRESHOLD_MARGIN * largest[0] * psfL1, denominator)
            out = snr[rows]
            np.divide(numerator, denominator, out=out)
            np.copyto(out, 0.0, where=~good)
            if not isFloat32:
                continue
            if not np.isfinite(out).all():
                return None
            distance = np.abs(out)
            distance -= threshold
            np.abs(distance, out=distance)
            near = distance <= tolerance
            near &= good
            if near.any():  # rarely: np.nonzero alone takes 5-10 ms a band
                if np.count_nonzero(near) > _MOST_NEAR * near.size:
                    return None
                iy, ix = np.nonzero(near)
                nearY.append(iy + rows.start)
                nearX.append(ix)
    if not nearY:
        return np.zeros(0, dtype=np.intp), np.zeros(0, dtype=np.intp)
    return np.concatenate(nearY), np.concatenate(nearX)


def _scoreSnr(difference: MaskedImage, badBits: int) -> np.ndarray:
    """D/σ of a score image, 0 at unusable pixels, in float32."""
    ny, nx = difference.image.shape
    snr = np.empty((ny, nx), dtype=np.float32)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        for rows in _rowBands(ny):
            usable = _usablePixels(difference, rows, badBits)
            snr[rows] = np.where(
                usable, difference.image[rows] / np.sqrt(difference.variance[rows]), 0.0
            )
    return snr


#: Pixels measured together by `_pointFluxes`: (n, ky, kx) float64 footprints, ~4 MB each
#: for a 45² PSF.
_PEAK_CHUNK = 256


def _footprints(
    difference: MaskedImage, iy: np.ndarray, ix: np.ndarray, shape: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The image, variance and mask of D on the ``shape`` footprints centred at (iy, ix),
    ``(n, ky, kx)``, and which of their pixels lie inside the image. Away from the border
    they are windows of the planes (a copy of whole rows, 5× faster than gathering pixel by
    pixel); near it, clipped indices."""
    ny, nx = difference.image.shape
    ky, kx = shape
    hy, hx = ky // 2, kx // 2
    planes = (difference.image, difference.variance, difference.mask)
    blocks = [np.empty((len(iy), ky, kx), dtype=plane.dtype) for plane in planes]
    inside = np.ones((len(iy), ky, kx), dtype=bool)
    interior = (iy >= hy) & (iy < ny - hy) & (ix >= hx) & (ix < nx - hx)
    if interior.any():
        y, x = iy[interior] - hy, ix[interior] - hx
        for plane, block in zip(planes, blocks, strict=True):
            block[interior] = sliding_window_view(plane, (ky, kx))[y, x]
    if not interior.all():
        rows = iy[~interior, None] + (np.arange(ky) - hy)
        cols = ix[~interior, None] + (np.arange(kx) - hx)
        at = (np.clip(rows, 0, ny - 1)[:, :, None], np.clip(cols, 0, nx - 1)[:, None, :])
        for plane, block in zip(planes, blocks, strict=True):
            block[~interior] = plane[at]
        inside[~interior] = ((rows >= 0) & (rows < ny))[:, :, None] & ((cols >= 0) & (cols < nx))[
            :, None, :
        ]
    return blocks[0], blocks[1], blocks[2], inside


def _pointFluxes(
    difference: MaskedImage,
    psf: np.ndarray,
    badBits: int,
    iy: np.ndarray,
    ix: np.ndarray,
    isScore: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """The PSF-fit flux and its error at pixels (iy, ix) of D, summed directly in float64
    over each PSF footprint (the S/N image's float32 rounding does not reach them): for a
    score image D/max(p) and σ/max(p). Unusable pixels take no part; where nothing is left
    the flux is 0 and its error infinite."""
    if isScore:
        peak = float(psf.max())
        d = np.asarray(difference.image[iy, ix], dtype=np.float64)
        v = np.asarray(difference.variance[iy, ix], dtype=np.float64)
        ok = np.isfinite(d) & np.isfinite(v) & (v > 0)
        if badBits:
            ok &= (difference.mask[iy, ix] & badBits) == 0
        fluxErr = np.sqrt(np.where(ok, v, np.inf)) / peak
        return np.where(ok, d, 0.0) / peak, fluxErr
    p = np.asarray(psf, dtype=np.float64).ravel()
    p2 = p * p
    flux = np.zeros(len(iy))
    fluxErr = np.full(len(iy), np.inf)
    for start in range(0, len(iy), _PEAK_CHUNK):
        part = slice(start, start + _PEAK_CHUNK)
        d, v, m, usable = _footprints(difference, iy[part], ix[part], psf.shape)
        usable &= np.isfinite(d)
        usable &= np.isfinite(v)
        usable &= v > 0
        if badBits:
            usable &= (m & badBits) == 0
        weight = np.zeros(d.shape)
        np.divide(1.0, v, out=weight, where=usable, dtype=np.float64)
        data = np.zeros(d.shape)
        np.multiply(d, weight, out=data, where=usable, dtype=np.float64)
        numerator = data.reshape(len(d), -1) @ p
        denominator = weight.reshape(len(d), -1) @ p2
        good = denominator > 0
        safe = np.where(good, denominator, 1.0)
        flux[part] = np.where(good, numerator / safe, 0.0)
        fluxErr[part] = np.where(good, 1.0 / np.sqrt(safe), np.inf)
    return flux, fluxErr


def detectDifferenceSources(
    difference: MaskedImage,
    psf: np.ndarray,
    threshold: float,
    badBits: int,
    *,
    isScore: bool = False,
    nThreads: int = 0,
) -> Table:
    """Positive and negative point sources of a difference image above a S/N threshold.

    Detection is on the S/N of the PSF-fit flux at each pixel (the matched filter with the
    unit-sum difference PSF p and per-pixel weights 1/σ²):

        flux = Σ p·D/σ² / Σ p²/σ²,   σ_flux = (Σ p²/σ²)^(-1/2),   S/N = flux / σ_flux,

    the optimal point-source statistic for white noise (so for a decorrelated difference). A
    score image already is that filter: its S/N is D/σ and its flux D / max(p). Each connected
    region of pixels above ``threshold`` (sep, ``minarea`` 1, no further filtering) is one
    source, measured at its peak; pixels with ``badBits``, a non-finite value or a variance
    that is not positive take no part.

    Returns
    -------
    sources : `astropy.table.Table`
        ``x``, ``y`` (parent, sep's barycentre of the region), ``flux``, ``fluxErr``, ``snr``
        (signed, at the peak), ``isNegative``, ``npix``, ``xPeak``, ``yPeak``.

    Notes
    -----
    The S/N image that sep thresholds is filtered in float32 for a float32 D
    (`_matchedFilterSnr`): an FFT spreads its rounding over a band of rows, so the error is
    ~3e-7 relative times σ²/σ²_sky, the variance over the PSF's core in units of the sky's
    (measured: 2e-6 on the sky, 4e-4 in the core of a star with 10⁴ times the sky's
    variance), and in absolute terms ~1e-7 of the band's largest |Σ p·D/σ²| over the
    pixel's (Σ p²/σ²)^½: where the variance does not grow with the signal (a sky-only
    variance), a cosmic ray of 1.7e4 σ moves the S/N of the sky in its band by ~5e-4. Pixels
    whose S/N lies within that of the threshold are summed again in float64, so a region's
    edge is that of an exact filter, and its barycentre moves by that fraction of its size.
    The flux, its error and the S/N reported at each peak are summed directly in float64.
    """
    snr = (
        _scoreSnr(difference, badBits)
        if isScore
        else _matchedFilterSnr(difference, psf, badBits, float(threshold), nThreads)
    )
    x0, y0 = difference.getXY0()
    parts = []
    for sign in (1.0, -1.0):
        if sign < 0:
            np.negative(snr, out=snr)  # exact; the negative sources are the peaks of −S/N
        # Unusable pixels are 0 in snr, below any threshold > 0: what sep's mask would make
        # of them (sep zeroes masked pixels), without its pass over a mask.
        objects = _sepguard.extract(
            snr, float(threshold), minarea=1, filter_kernel=None, what="difference's sources"
        )
        ix = np.asarray(objects["xpeak"], dtype=np.int64)
        iy = np.asarray(objects["ypeak"], dtype=np.int64)
        flux, fluxErr = _pointFluxes(difference, psf, badBits, iy, ix, isScore)
        parts.append(
            [
                np.asarray(objects["x"], dtype=np.float64) + x0,
                np.asarray(objects["y"], dtype=np.float64) + y0,
                flux,
                fluxErr,
                flux / fluxErr,  # 0 where nothing was usable (flux 0, error ∞)
                np.full(len(objects), sign < 0),
                np.asarray(objects["npix"], dtype=np.int64),
                ix + x0,
                iy + y0,
            ]
        )
    names = ("x", "y", "flux", "fluxErr", "snr", "isNegative", "npix", "xPeak", "yPeak")
    return Table(
        [np.concatenate(columns) for columns in zip(*parts, strict=True)],
        names=names,
        dtype=[float, float, float, float, float, bool, np.int64, np.int64, np.int64],
    )


@dataclass(frozen=True)
class Association:
    """How many difference-image sources `associate` marked, and with what radius."""

    nTotal: int
    nRefAssociated: int
    nSrcAssociated: int
    nUnassociated: int
    radius: float


#: About this many pixels are sampled by `differenceChi2` (its figure is then known to ~1 %,
#: with a few hundred kB of temporaries for any image size).
_CHI2_SAMPLE = 1 << 16

#: A pixel of an input further than this many robust σ from its median is a source's.
_SOURCE_SIGMAS = 3.0


def _level(mi: MaskedImage, step: int) -> tuple[float, float]:
    """Median and 1.4826·MAD of a sparse sample (every ``8·step``-th row and column) of the
    unmasked finite pixels of ``mi``; (NaN, 0) if fewer than 100."""
    sample = np.asarray(mi.image[:: 8 * step, :: 8 * step], dtype=np.float64)
    values = sample[np.isfinite(sample) & (mi.mask[:: 8 * step, :: 8 * step] == 0)]
    if values.size < 100:
        return math.nan, 0.0
    median = float(np.median(values))
    return median, 1.482602218505602 * float(np.median(np.abs(values - median)))


#: Sampled rows of `differenceChi2` worked on at once (its temporaries stay ~50 kB).
_CHI2_ROWS = 8


def differenceChi2(
    difference: MaskedImage, badBits: int, inputs: tuple[MaskedImage, ...] = (), grow: int = 2
) -> tuple[float, int]:
    """The mean of (D/σ)² over the sky of a difference image, and how many pixels it is over.

    Sky pixels are the usable ones of D (finite, finite positive variance, none of
    ``badBits``) on a regular sample of about `_CHI2_SAMPLE`, off every source of the
    ``inputs`` (the images that were subtracted, on D's box: their pixels more than 3 robust σ
    from their median, grown by ``grow`` pixels, at least 2 samples): there D is noise alone
    in a good subtraction, so the figure is ~1, and k² when D scatters k times its noise.
    Stars' and transients' residuals, which are not noise, do not count (in a crowded field
    they cover several per cent of the image). NaN when fewer than 100 sky pixels are
    usable. Worked a few sampled rows at a time: it runs while the run holds its largest
    images."""
    ny, nx = difference.image.shape
    step = max(1, int(math.sqrt(ny * nx / _CHI2_SAMPLE)))
    levels = [(mi, *_level(mi, step)) for mi in inputs if mi.image.shape == difference.image.shape]
    rows = range(0, ny, step)
    total, count = 0.0, 0
    grow = max(2, -(-grow // step))  # in samples
    for start in range(0, len(rows), _CHI2_ROWS):
        lo = max(start - grow, 0)
        hi = min(start + _CHI2_ROWS + grow, len(rows))
        sl = slice(rows[lo], rows[hi - 1] + 1, step)
        inner = slice(start - lo, start - lo + min(_CHI2_ROWS, len(rows) - start))
        with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
            image = np.asarray(difference.image[sl, ::step], dtype=np.float64)
            variance = np.asarray(difference.variance[sl, ::step], dtype=np.float64)
            good = np.isfinite(image) & np.isfinite(variance) & (variance > 0)
            good &= (difference.mask[sl, ::step] & badBits) == 0
            for mi, median, sigma in levels:
                if not sigma > 0:
                    continue
                source = np.abs(np.asarray(mi.image[sl, ::step], dtype=np.float64) - median)
                good &= ~dilate(source > _SOURCE_SIGMAS * sigma, grow)
            good = good[inner]
            z2 = np.square(image[inner][good]) / variance[inner][good]
        z2 = z2[np.isfinite(z2)]
        total += float(z2.sum())
        count += int(z2.size)
    if count < 100:
        return math.nan, count
    return total / count, count * step * step


def associate(
    table: Table,
    psf: np.ndarray,
    matchRadius: float,
    templateDetections: Any,
    templateXY0: tuple[int, int],
    kernelSources: Any,
) -> tuple[Table, Association]:
    """Mark the sources of ``table`` (`detectDifferenceSources`) that lie near known ones.

    Parameters
    ----------
    table : `astropy.table.Table`
        The difference-image sources, parent coordinates.
    psf : `numpy.ndarray`
        The difference image's PSF: the radius is ``matchRadius`` times its FWHM (1 pixel
        when that cannot be measured).
    matchRadius : `float`
        The association radius in FWHMs.
    templateDetections : structured array or table
        Detections in the template (``x``, ``y`` array indices of the image they were made on,
        whose origin is ``templateXY0``).
    templateXY0 : (`int`, `int`)
        That image's origin.
    kernelSources : table
        The kernel sources (``x``, ``y``, parent coordinates).

    Returns
    -------
    table : `astropy.table.Table`
        ``table`` with ``refAssociated`` and ``srcAssociated`` columns, sorted by decreasing
        |S/N|, with the radius in pixels as ``meta["matchRadius"]``.
    counts : `Association`
    """
    tx0, ty0 = templateXY0
    fwhm = _psfFwhm(psf)
    radius = matchRadius * (fwhm if math.isfinite(fwhm) else 1.0)
    refAssociated = np.zeros(len(table), dtype=bool)
    srcAssociated = np.zeros(len(table), dtype=bool)
    if len(table) and len(templateDetections):
        i, _, _ = _pairsWithin(
            np.asarray(table["x"]),
            np.asarray(table["y"]),
            np.asarray(templateDetections["x"], dtype=float) + tx0,
            np.asarray(templateDetections["y"], dtype=float) + ty0,
            radius,
        )
        refAssociated[i] = True
    if len(table) and len(kernelSources):
        i, _, _ = _pairsWithin(
            np.asarray(table["x"]),
            np.asarray(table["y"]),
            np.asarray(kernelSources["x"], dtype=float),
            np.asarray(kernelSources["y"], dtype=float),
            radius,
        )
        srcAssociated[i] = True
    table["refAssociated"] = refAssociated
    table["srcAssociated"] = srcAssociated
    order = np.argsort(-np.abs(np.asarray(table["snr"])), kind="stable")
    table = table[order]
    table.meta["matchRadius"] = float(radius)
    counts = Association(
        nTotal=len(table),
        nRefAssociated=int(refAssociated.sum()),
        nSrcAssociated=int(srcAssociated.sum()),
        nUnassociated=int((~refAssociated & ~srcAssociated).sum()),
        radius=float(radius),
    )
    return table, counts


class DetectAndMeasureConfig(pexConfig.Config):
    """Configuration of `DetectAndMeasureTask` (the reference's task name)."""

    detectionThreshold: pexConfig.Field[float] = pexConfig.RangeField(
        dtype=float,
        default=5.0,
        min=0.0,
        inclusiveMin=False,
        doc="Detection threshold: the PSF-matched-filter S/N of a difference-image source "
        "(of D/σ itself for a score image); also that of the template detections.",
    )
    matchRadius: pexConfig.Field[float] = pexConfig.RangeField(
        dtype=float,
        default=1.0,
        min=0.0,
        doc="Association radius in FWHMs of the difference image's PSF.",
    )
    badMaskPlanes: pexConfig.ListField[str] = pexConfig.ListField(
        dtype=str,
        default=list(UNUSABLE_PLANES),
        doc="Difference-image pixels with these planes take no part in detection.",
    )
    nThreads: pexConfig.Field[int] = pexConfig.Field(
        dtype=int, default=0, doc="Threads of the FFTs (0: every core)."
    )


class DetectAndMeasureTask(Task):
    """Detect, measure and associate the sources of a difference image.

    Examples
    --------
    >>> from psfmatch import ImagePsfMatchTask
    >>> from psfmatch.simulate import simulatePair
    >>> sim = simulatePair((256, 256), nStars=60, seed=0)  # with 10 transients
    >>> sub = ImagePsfMatchTask().subtractMaskedImages(sim.template, sim.science)
    >>> task = DetectAndMeasureTask()
    >>> result = task.run(sim.science, sub.matchedImage, sub.subtractedMaskedImage)
    >>> len(result.diaSources) >= 10
    True
    """

    ConfigClass = DetectAndMeasureConfig
    _DefaultName = "detectAndMeasure"
    config: DetectAndMeasureConfig

    def run(
        self,
        science: MaskedImage,
        matchedTemplate: MaskedImage,
        difference: MaskedImage,
        *,
        differencePsf: Any = None,
        kernelSources: Any = None,
        isScore: bool = False,
    ) -> Struct:
        """Detect sources in ``difference`` and associate them.

        Parameters
        ----------
        science, matchedTemplate : `MaskedImage`
            The science image and the template matched to it (its detections stand for the
            known sky). ``science`` is taken for the reference's signature and not read.
        difference : `MaskedImage`
            The difference image.
        differencePsf : 2-D array, optional
            Its PSF (odd-sized, any sum); by default a Gaussian of 3 pixels FWHM.
        kernelSources : table, optional
            The kernel sources (``x``, ``y``), for ``srcAssociated``.
        isScore : `bool`, optional
            ``difference`` is a score image (already matched-filtered).

        Returns
        -------
        result : `Struct`
            ``diaSources`` (`astropy.table.Table`) and the counts of ``NFalsePositives*``
            also recorded in the metadata.
        """
        for name, mi in (("matchedTemplate", matchedTemplate), ("difference", difference)):
            if not isinstance(mi, MaskedImage):
                raise InvalidInputError(f"{name}: expected a MaskedImage, got {type(mi).__name__}")
        xc, yc = difference.getBBox().getCenter()
        psf = (
            _gaussianPsfImage(3.0)
            if differencePsf is None
            else _psfImage(differencePsf, 3.0, xc, yc, "differencePsf")
        )
        config = self.config
        bits = Mask.getPlaneBitMask(list(config.badMaskPlanes), skipUnknown=True)
        table = detectDifferenceSources(
            difference,
            psf,
            config.detectionThreshold,
            bits,
            isScore=isScore,
            nThreads=int(config.nThreads),
        )
        templateDetections = detectSources(
            matchedTemplate, config.detectionThreshold, bits, measureRadii=False
        )
        sources = kernelSources if kernelSources is not None else Table({"x": [], "y": []})
        table.meta["threshold"] = float(config.detectionThreshold)
        table, counts = associate(
            table, psf, config.matchRadius, templateDetections, matchedTemplate.getXY0(), sources
        )
        recordAssociation(self, counts, config.detectionThreshold, table)
        return Struct(diaSources=table, association=counts)


def recordAssociation(task: Task, counts: Association, threshold: float, table: Table) -> None:
    """The ``NFalsePositives*`` metadata of ``task`` and its log line."""
    task.metadata["NFalsePositivesTotal"] = counts.nTotal
    task.metadata["NFalsePositivesRefAssociated"] = counts.nRefAssociated
    task.metadata["NFalsePositivesSrcAssociated"] = counts.nSrcAssociated
    task.metadata["NFalsePositivesUnassociated"] = counts.nUnassociated
    task.log.info(
        "Difference image: %d sources at S/N >= %.3g (%d negative); %d at template "
        "sources, %d at kernel sources, %d unassociated",
        counts.nTotal,
        threshold,
        int(np.sum(table["isNegative"])) if len(table) else 0,
        counts.nRefAssociated,
        counts.nSrcAssociated,
        counts.nUnassociated,
    )
