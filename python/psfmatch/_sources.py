# SPDX-License-Identifier: BSD-3-Clause
"""The sources of one image, found and measured with sep: detection (`detectSources`), the
half-light radius (`halfLightRadii`), measurement at given positions (`measureAt`: local sky,
windowed centroid, aperture flux, on stamps), the FWHM from the radii (`measureFwhm`) and the
pairing of two position lists (`_pairsWithin`). `psfmatch.selection` chooses the kernel
sources from these measurements; the input checks, the detection in difference images and the
association use them too.
"""

from __future__ import annotations

__all__ = ["detectSources", "halfLightRadii", "measureAt", "measureFwhm"]

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import sep

from . import _core, _sepguard
from ._psfutil import fwhmFromR50
from .convolution import _allFinite
from .image import MaskedImage, _rowBands


def _maskedBy(mask: np.ndarray, bits: int) -> np.ndarray:
    """``(mask & bits) != 0``, a band of rows at a time (no image-sized int32 temporary)."""
    out = np.empty(mask.shape, dtype=bool)
    for band in _rowBands(mask.shape[0]):
        np.not_equal(mask[band] & bits, 0, out=out[band])
    return out


def _detectionVariance(mi: MaskedImage, background: Any, masked: np.ndarray, dtype: Any) -> Any:
    """The per-pixel variance sep weighs detections by: the variance plane where it is
    positive and finite, the background's global rms² elsewhere (the plane itself, uncopied,
    when it is usable everywhere, as it is for any image a pipeline wrote)."""
    var = np.asarray(mi.variance)
    if var.dtype != dtype:
        var = var.astype(dtype)
    if var.min() > 0 and var.max() < np.inf:  # usable everywhere (NaN fails both tests)
        return var if var.flags.writeable and var.flags.c_contiguous else var.copy()
    good = var > 0
    good &= var < np.inf  # also False for NaN
    if not np.any(~masked & ~good):
        # sep takes only writable buffers (it writes nothing): a read-only plane is copied.
        return var if var.flags.writeable and var.flags.c_contiguous else var.copy()
    fill = dtype(max(float(background.globalrms), 1e-30) ** 2)
    return np.where(good & ~masked, var, fill)


def detectSources(
    mi: MaskedImage,
    threshold: float,
    badBits: int,
    *,
    measureRadii: bool = True,
    meshSize: int = 128,
    filterFwhm: float | None = None,
) -> np.ndarray:
    """Detect and measure the sources of one image with sep.

    Parameters
    ----------
    mi : `MaskedImage`
        The image; pixels with any of ``badBits`` or a non-finite value are masked.
    threshold : `float`
        Detection threshold. With ``filterFwhm``, a S/N: a source is the connected pixels
        (at least 5) of the image, after subtracting a `sep.Background` (mesh cells of
        ``meshSize`` pixels, 3×3 median-filtered) and smoothing with a Gaussian of that FWHM
        (the PSF-matched filter when it is the PSF's), that lie above ``threshold`` times the
        smoothed image's own noise, σ·sqrt(Σk²) for the normalised kernel k and the σ of
        the sky (sep's global background rms: a detection's significance is against "no source",
        whose noise is the sky's, not the Poisson noise of the source itself). Without
        it, in units of the per-pixel σ after sep's default 3×3 kernel (SExtractor's classic
        convolution filter), whose own noise is 6/16 of it.
    badBits : `int`
        Mask bits that make a pixel unusable.
    measureRadii : `bool`, optional
        Measure every source's half-light radius (``r50``). Without it ``r50`` is NaN and
        `halfLightRadii` measures the ones wanted later, from ``background``: the kernel-source
        selection needs it for a few hundred of thousands of detections.
    meshSize : `int`, optional
        The background's mesh cell size in pixels (`KernelSourceSelectionConfig`'s
        ``backgroundMeshSize``).
    filterFwhm : `float`, optional
        FWHM (pixels) of the Gaussian the image is smoothed by for detection (see
        ``threshold``). The shapes sep measures (``a``, ``b``) are then the smoothed ones with
        the Gaussian's σ² taken out again, so that ``a`` is the source's own.

    Returns
    -------
    sources : `numpy.ndarray`
        A structured array with the sep.extract fields plus ``aperFlux``, ``aperFluxErr`` (in
        a circle of radius 3·max(a, 1)), ``r50`` (half-light radius, pixels), ``snr`` and
        ``background`` (the subtracted sky at the source's pixel). Positions are array
        indices (add ``xy0`` for parent coordinates).
    """
    # sep measures in single precision whatever it is given: a float32 image stays float32
    # (half the memory traffic, the same detections).
    dtype: Any = np.float32 if mi.image.dtype == np.float32 else np.float64
    # The one image-sized copy: sep subtracts the sky from it in place. The mask is made a
    # band of rows at a time and non-finite pixels are looked for only if there are any, so
    # that no other image-sized temporary is made (fresh memory is slow to touch).
    data = np.array(mi.image, dtype=dtype, order="C")
    masked = _maskedBy(mi.mask, badBits)
    if not _allFinite(data):
        masked |= ~np.isfinite(data)
    if masked.all():
        return np.zeros(0, dtype=[("x", float), ("y", float)])
    if masked.any():
        data[masked] = 0.0
    background = sep.Background(data, mask=masked, bw=int(meshSize), bh=int(meshSize))
    # data becomes data − sky, in place (the float64 sky map is not kept).
    with np.errstate(over="ignore", invalid="ignore"):  # absurd values overflow: see below
        background.subfrom(data)
    sub = data
    var = _detectionVariance(mi, background, masked, dtype)
    # filter_type "conv": the threshold applies to the smoothed image in units of the
    # per-pixel σ, as in SExtractor. sep's default "matched" filter also smooths the
    # variance map, which costs twice the whole extraction and changes nothing for the
    # bright, isolated stars the kernel is fitted on.
    if filterFwhm:
        # The noise a detection is significant against is the sky's (the null hypothesis is
        # "no source"): sep's global rms of it, not a variance plane that carries the
        # sources' own Poisson noise and would raise the threshold on every star. (A map of
        # it would be one more image-sized array at the run's peak memory; the S/N cut on
        # the variance plane that follows still sees depth that varies over the image.)
        skyNoise = max(float(background.globalrms), 1e-30)
        objects = _extractSmoothed(sub, threshold, skyNoise, masked, float(filterFwhm))
        # The fluxes are measured on the unsmoothed image: made again from the input.
        sub[...] = mi.image
        if masked.any():
            sub[masked] = 0.0
        with np.errstate(over="ignore", invalid="ignore"):
            background.subfrom(sub)
        objects = _recentred(objects, sub, masked, float(filterFwhm) / 2.3548200450309493)
    else:
        objects = _sepguard.extract(
            sub, threshold, var=var, mask=masked, minarea=5, filter_type="conv", what="stars"
        )
    # Absurd but finite pixel values (~1e38) overflow sep's moments: such a detection has no
    # position and cannot be a kernel source.
    objects = objects[np.isfinite(objects["x"]) & np.isfinite(objects["y"])]
    if len(objects) == 0:
        return np.asarray(objects)
    radius = 3.0 * np.maximum(objects["a"], 1.0)
    flux, fluxErr, _ = sep.sum_circle(sub, objects["x"], objects["y"], radius, var=var, mask=masked)
    out = np.zeros(
        len(objects),
        dtype=objects.dtype.descr
        + [
            ("aperFlux", float),
            ("aperFluxErr", float),
            ("r50", float),
            ("snr", float),
            ("background", float),
        ],
    )
    for name in objects.dtype.names or ():
        out[name] = objects[name]
    out["aperFlux"] = flux
    out["aperFluxErr"] = fluxErr
    with np.errstate(divide="ignore", invalid="ignore"):
        out["snr"] = np.where(fluxErr > 0, flux / fluxErr, 0.0)
    ny, nx = data.shape
    ix = np.clip(np.floor(objects["x"] + 0.5).astype(np.intp), 0, nx - 1)
    iy = np.clip(np.floor(objects["y"] + 0.5).astype(np.intp), 0, ny - 1)
    # The sky at the source's pixel: what was there before the subtraction (0 if masked) − sub.
    before = np.where(masked[iy, ix], 0.0, np.asarray(mi.image[iy, ix], dtype=dtype))
    out["background"] = before - sub[iy, ix]
    if measureRadii:
        r50, _ = sep.flux_radius(
            sub, objects["x"], objects["y"], _radiusLimit(out), 0.5, mask=masked, subpix=_R50_SUBPIX
        )
        out["r50"] = r50
    else:
        out["r50"] = np.nan
    return out


def _gaussian1d(fwhm: float) -> np.ndarray:
    """A normalised Gaussian of ``fwhm`` pixels, sampled to ±3σ (at least ±1 pixel)."""
    sigma = fwhm / 2.3548200450309493
    reach = max(1, int(math.ceil(3.0 * sigma)))
    offsets = np.arange(-reach, reach + 1, dtype=np.float64)
    weights = np.exp(-0.5 * (offsets / sigma) ** 2)
    return np.asarray(weights / weights.sum())


#: Rows smoothed at a time by `_extractSmoothed`.
_SMOOTH_BAND = 64

#: sep's ``deblend_nthresh`` for detection in the smoothed image (see `_extractSmoothed`).
_DEBLEND_LEVELS = 16


def _extractSmoothed(
    sub: np.ndarray, threshold: float, skyNoise: float, masked: np.ndarray, fwhm: float
) -> np.ndarray:
    """sep's detections at S/N ≥ ``threshold`` in ``sub`` smoothed by a Gaussian of ``fwhm``
    (``sub`` is smoothed in place).

    The smoothing is the core's separable convolution (sep's own filter is a direct 2-D one:
    ~80 multiplications a pixel for a 4 px FWHM against ~18); the image's edge, which it does
    not reach, is left at 0 and so holds no detection (no kernel source's stamp reaches it).
    For the normalised kernel k = g ⊗ g the smoothed noise is σ·sqrt(Σk²) = σ·Σg² for the
    sky's σ (``skyNoise``), which turns the S/N into sep's threshold.
    """
    weights = _gaussian1d(fwhm)
    kernel = _core.FixedKernel([_core.SeparableTerm(1.0, weights, weights)])
    # In place, a band of rows at a time (each with its kernel's reach of rows above and
    # below, those above kept from before they were overwritten): the run's peak memory
    # holds no second plane, only band-sized temporaries.
    reach = (len(weights) - 1) // 2
    ny = sub.shape[0]
    above = sub[0:0].copy()  # the original rows [start − reach, start)
    step = max(_SMOOTH_BAND, reach)  # ≥ reach: the rows kept above are never overwritten
    for start in range(0, ny, step):
        stop = min(start + step, ny)
        hi = min(ny, stop + reach)
        band = np.concatenate([above, sub[start:hi]])
        lo = start - len(above)
        above = sub[max(lo, stop - reach) : stop].copy() if stop < ny else above
        if band.shape[0] <= 2 * reach or band.shape[1] <= 2 * reach:
            sub[start:stop] = 0.0  # narrower than the kernel: nothing it reaches
            continue
        # NaN where the kernel does not reach (the image's edges): no detection there.
        rows = _core.convolvePlane(np.ascontiguousarray(band), kernel)[start - lo : stop - lo]
        sub[start:stop] = np.nan_to_num(rows, nan=0.0)
    smoothed = sub
    noiseFactor = float(np.sum(weights**2))
    # 16 deblending levels, not sep's 32: on the 2048² benchmark field the same detections but
    # 7 of 1862, in a quarter of the time (the smoothed footprints are larger and deblending
    # costs grow with them). A pair it leaves merged is rejected as extended by the selection.
    objects = _sepguard.extract(
        smoothed,
        threshold * noiseFactor,
        what="stars",
        err=skyNoise,
        mask=masked,
        minarea=5,
        filter_kernel=None,
        deblend_nthresh=_DEBLEND_LEVELS,
    )
    # The moments are the smoothed image's: a Gaussian source's σ² plus the kernel's.
    sigma2 = (fwhm / 2.3548200450309493) ** 2
    for axis in ("a", "b"):
        objects[axis] = np.sqrt(np.maximum(objects[axis] ** 2 - sigma2, 0.0))
    return np.asarray(objects)


def _recentred(
    objects: np.ndarray, sub: np.ndarray, masked: np.ndarray, filterSigma: float
) -> np.ndarray:
    """``objects`` found in the smoothed image, their positions the windowed centroids of the
    unsmoothed ``sub`` (`sep.winpos`, window σ the larger of the filter's σ and max(a, 1):
    sep's ``a`` less the filter's width is noisy, often 0, for faint sources, and a 1 px
    window on them wanders by ~1 px where the filter's, about the PSF's, holds ~0.3 px at
    S/N 14).

    The smoothed image's own centroid is biased wherever the smoothing is cut short: at the
    image's edge and next to masked pixels, both left at 0 (0.4-0.5 px for a star 8 px from
    the edge with a 4 px filter, 1 px at 8.65 px), and a kernel source's stamp is cut around
    its nearest pixel. A centroid whose window is all masked or not positive, or that wanders
    more than 2 px (a blend, noise on a faint source), keeps the smoothed position.
    """
    if len(objects) == 0:
        return objects
    x, y = np.asarray(objects["x"], dtype=float), np.asarray(objects["y"], dtype=float)
    usable = np.isfinite(x) & np.isfinite(y)
    xs, ys = np.where(usable, x, 0.0), np.where(usable, y, 0.0)
    window = np.maximum(_size(objects), filterSigma)
    xw, yw, flag = sep.winpos(sub, xs, ys, window, mask=masked, subpix=_WINPOS_SUBPIX)
    moved = np.hypot(xw - xs, yw - ys)
    # A window cut by the image's edge or holding masked pixels (sep's APER_TRUNC and
    # APER_HASMASKED) still centres; an all-masked or non-positive one does not.
    benign = int(sep.APER_TRUNC | sep.APER_HASMASKED)
    good = usable & ((flag & ~benign) == 0) & np.isfinite(xw) & np.isfinite(yw) & (moved <= 2.0)
    objects = objects.copy()
    objects["x"] = np.where(good, xw, x)
    objects["y"] = np.where(good, yw, y)
    return objects


#: Subpixel sampling of `sep.flux_radius` at aperture edges (per axis). Measured on 1000
#: simulated Gaussian stars (flux 5000 on unit sky noise, σ = 1.6 and 2.5 px): 3 gives the
#: median FWHM within 0.1 % of 5 and a per-star scatter of 0.5 % (against 0.4 %) in about
#: half the time; 1 moves the median by 1.4 % at σ = 1.6 px.
_R50_SUBPIX = 3


#: Subpixel sampling of `sep.winpos` at its window's edge (sep's default is 11). On the ~830
#: brightest stars of the 2048² benchmark's template, 5 moves no centroid by more than
#: 3e-4 px (the match radius is 2 px, a centroid's own noise ~0.01 px) in 40 % of the time.
_WINPOS_SUBPIX = 5


#: The object sizes (sep's ``a``, pixels) the stamps allow for: larger (or absurd) values are
#: clipped to this, which no star a kernel is fitted on comes near.
_MAX_A = 20.0


def _size(sources: np.ndarray) -> np.ndarray:
    """max(a, 1), with a non-finite ``a`` taken as 1 and a huge one as `_MAX_A`."""
    a = np.asarray(sources["a"], dtype=float)
    return np.clip(np.where(np.isfinite(a), a, 1.0), 1.0, _MAX_A)


def _radiusLimit(sources: np.ndarray) -> np.ndarray:
    """The largest radius `sep.flux_radius` looks out to: 6·max(a, 1) pixels."""
    return 6.0 * _size(sources)


def halfLightRadii(mi: MaskedImage, sources: np.ndarray, badBits: int) -> np.ndarray:
    """The half-light radius (pixels) of each of ``sources`` (from `detectSources` or
    `measureAt`).

    Each is measured by `sep.flux_radius` on a stamp around the source minus its
    ``background``: the same numbers ``detectSources`` gives where the sky is flat across the
    stamp (a few pixels; 3e-3 px at the 99th percentile on the benchmark's field), at a cost
    that does not grow with the image. Pixels with any of ``badBits`` or a non-finite value
    are masked, as in `detectSources`.
    """
    out = np.zeros(len(sources))
    rmax = _radiusLimit(sources)
    for group, stamps in _stampGroups(mi, sources, rmax, badBits):
        data = stamps.data - np.asarray(sources["background"][group], dtype=float)[:, None, None]
        data[stamps.outside] = 0.0
        r50, _ = sep.flux_radius(
            stamps.column(data),
            stamps.x,
            stamps.y,
            rmax[group],
            0.5,
            mask=stamps.column(stamps.bad),
            subpix=_R50_SUBPIX,
        )
        out[group] = r50
    return out


#: The fields of a `measureAt` measurement.
_MEASURED = np.dtype(
    [
        ("x", float),
        ("y", float),
        ("a", float),
        ("flag", np.int16),
        ("aperFlux", float),
        ("aperFluxErr", float),
        ("snr", float),
        ("background", float),
        ("r50", float),
    ]
)


def _unmeasured(n: int) -> np.ndarray:
    out = np.zeros(n, dtype=_MEASURED)
    out["r50"] = np.nan
    return out


def measureAt(mi: MaskedImage, sources: np.ndarray, badBits: int) -> np.ndarray:
    """Measure the objects another image detected (``sources`` from `detectSources`) in
    this one, on stamps around their positions.

    For each: the sky, the median of an annulus from 3·max(a, 1) + 2 to 3·max(a, 1) + 6
    pixels; the windowed centroid (`sep.winpos`, window σ = max(a, 1)); and the aperture flux
    in the circle `detectSources` uses (`sep.sum_circle`, radius 3·max(a, 1)) around it.

    Returns
    -------
    measured : `numpy.ndarray`
        A structured array, one row per source, with ``x``, ``y`` (the centroid, array
        indices), ``a`` (the other image's), ``flag`` (sep's aperture flags), ``aperFlux``,
        ``aperFluxErr``, ``snr``, ``background`` and ``r50`` (NaN: see `halfLightRadii`).
    """
    n = len(sources)
    out = _unmeasured(n)
    if n == 0:
        return out
    a = _size(sources)
    out["a"] = sources["a"]
    radius = 3.0 * a
    inner, outer = radius + 2.0, radius + 6.0
    for group, stamps in _stampGroups(mi, sources, outer, badBits):
        # The sky: the median of the annulus around the stamp's centre pixel (NaN without a
        # usable pixel there); the robust scatter of the same pixels.
        offsets = np.arange(-stamps.reach, stamps.reach + 1, dtype=float)
        distance = np.hypot(offsets[None, :], offsets[:, None])[None]
        ring = (distance >= inner[group, None, None]) & (distance <= outer[group, None, None])
        ring &= ~stamps.bad & ~stamps.outside
        annulus = np.where(ring, stamps.data, np.nan).reshape(len(group), -1)
        sky = _rowMedians(annulus)
        data = stamps.data - np.nan_to_num(sky, nan=0.0)[:, None, None]
        data[stamps.outside] = 0.0
        # Where the variance plane is not positive (a template made without one), the
        # annulus's own scatter stands for it, as the sky rms does in `detectSources`.
        scatter = 1.4826 * _rowMedians(np.abs(annulus - sky[:, None]))
        fill = np.nan_to_num(scatter**2, nan=0.0)[:, None, None]
        variance = np.where(stamps.variance > 0, stamps.variance, fill)
        variance[stamps.outside] = 0.0
        column, mask = stamps.column(data), stamps.column(stamps.bad)
        variance = stamps.column(variance)
        xw, yw, _ = sep.winpos(
            column, stamps.x, stamps.y, a[group], mask=mask, subpix=_WINPOS_SUBPIX
        )
        flux, fluxErr, flag = sep.sum_circle(column, xw, yw, radius[group], var=variance, mask=mask)
        out["x"][group] = stamps.x0 + xw
        out["y"][group] = stamps.y0 + yw - stamps.side * np.arange(len(group))
        out["flag"][group] = flag
        out["aperFlux"][group] = flux
        out["aperFluxErr"][group] = fluxErr
        out["background"][group] = sky
    with np.errstate(divide="ignore", invalid="ignore"):
        # No noise at all (a noiseless template): any light is infinitely significant.
        noiseless = np.where(out["aperFlux"] > 0, np.inf, 0.0)
        err = out["aperFluxErr"]
        out["snr"] = np.where(err > 0, out["aperFlux"] / np.where(err > 0, err, 1.0), noiseless)
    return out


def _rowMedians(values: np.ndarray) -> np.ndarray:
    """The median of each row of a 2-D array, NaNs left out (NaN for a row of NaNs): what
    ``np.nanmedian(values, axis=1)`` gives, by one sort instead of a call per row."""
    n = values.shape[0]
    if values.shape[1] == 0:
        return np.full(n, np.nan)
    ordered = np.sort(values, axis=1)  # NaNs sort last
    count = np.count_nonzero(~np.isnan(values), axis=1)
    rows = np.arange(n)
    lo = np.maximum((count - 1) // 2, 0)
    hi = np.minimum(count // 2, values.shape[1] - 1)
    median = 0.5 * (ordered[rows, lo] + ordered[rows, hi])
    median[count == 0] = np.nan
    return np.asarray(median)


@dataclass
class _Stamps:
    """Square stamps around sources, stacked in one column so that one sep call measures
    them all (an aperture of radius ≤ reach − 1 around a centre within half a pixel of its
    stamp's stays inside that stamp)."""

    reach: int
    data: np.ndarray  # (n, side, side) float64; 0 outside the image and at bad pixels
    variance: np.ndarray  # same; 0 outside the image and at bad pixels
    bad: np.ndarray  # bad pixels inside the image
    outside: np.ndarray  # pixels beyond the image's edge
    x: np.ndarray  # source positions in the column's coordinates
    y: np.ndarray
    x0: np.ndarray  # the column's (x, y) = image (x0 + x, y0 + y − side·k) for stamp k
    y0: np.ndarray

    @property
    def side(self) -> int:
        return 2 * self.reach + 1

    def column(self, planes: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(planes.reshape(-1, self.side))


def _stampGroups(
    mi: MaskedImage, sources: np.ndarray, radii: np.ndarray, badBits: int
) -> Iterator[tuple[np.ndarray, _Stamps]]:
    """Stamps that hold a circle of ``radii`` around each source, one size per group of
    similar radius (a few bright stars must not make every stamp large): 4-pixel steps, at
    most `_STAMP_CHUNK` stamps at a time (their float64 planes stay small beside an image)."""
    if len(sources) == 0:
        return
    reach = 4 * np.ceil((np.ceil(radii) + 1) / 4).astype(np.intp)
    for size in np.unique(reach):
        members = np.flatnonzero(reach == size)
        for first in range(0, len(members), _STAMP_CHUNK):
            group = members[first : first + _STAMP_CHUNK]
            yield group, _cutStamps(mi, sources[group], int(size), badBits)


#: Stamps cut at a time by `_stampGroups` (one sep call each).
_STAMP_CHUNK = 16


def _cutStamps(mi: MaskedImage, sources: np.ndarray, reach: int, badBits: int) -> _Stamps:
    n = len(sources)
    ny, nx = mi.image.shape
    side = 2 * reach + 1
    xs = np.asarray(sources["x"], dtype=float)
    ys = np.asarray(sources["y"], dtype=float)
    cx = np.floor(xs + 0.5).astype(np.intp)
    cy = np.floor(ys + 0.5).astype(np.intp)
    interior = (cx >= reach) & (cy >= reach) & (cx < nx - reach) & (cy < ny - reach)
    # Outside the image a stamp holds zeros: no light, as sep sees beyond an array's edge.
    outside = np.zeros((n, side, side), dtype=bool)
    edge = np.flatnonzero(~interior)
    if edge.size:
        offsets = np.arange(-reach, reach + 1)
        rows = cy[edge, None, None] + offsets[None, :, None]
        cols = cx[edge, None, None] + offsets[None, None, :]
        outside[edge] = (rows < 0) | (rows >= ny) | (cols < 0) | (cols >= nx)
        edgeRows, edgeCols = np.clip(rows, 0, ny - 1), np.clip(cols, 0, nx - 1)

    def gather(plane: np.ndarray, dtype: Any = None) -> np.ndarray:
        """The (n, side, side) stamps of one plane, as ``dtype`` (the plane's by default):
        interior ones through a window view (one copy each, converted as it is made), those
        reaching past the edge by clipped indices."""
        out = np.empty((n, side, side), dtype=plane.dtype if dtype is None else dtype)
        inner = np.flatnonzero(interior)
        if inner.size:
            windows = np.lib.stride_tricks.sliding_window_view(plane, (side, side))
            out[inner] = windows[cy[inner] - reach, cx[inner] - reach]
        if edge.size:
            out[edge] = plane[edgeRows, edgeCols]
        return out

    data = gather(np.asarray(mi.image), np.float64)
    variance = gather(np.asarray(mi.variance), np.float64)
    bad = (gather(np.asarray(mi.mask)) & badBits) != 0
    bad |= ~np.isfinite(data)
    bad |= ~np.isfinite(variance)
    bad &= ~outside
    empty = bad | outside
    data[empty] = 0.0
    variance[empty] = 0.0
    return _Stamps(
        reach=reach,
        data=data,
        variance=variance,
        bad=bad,
        outside=outside,
        x=xs - cx + reach,
        y=ys - cy + reach + side * np.arange(n),
        x0=(cx - reach).astype(float),
        y0=(cy - reach).astype(float),
    )


def _pairsWithin(
    xa: np.ndarray, ya: np.ndarray, xb: np.ndarray, yb: np.ndarray, radius: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All pairs (i, j) with |a_i − b_j| ≤ radius, by hashing positions into radius-sized cells.

    Returns the index arrays and the distances; O((Na + Nb) log Nb) for sparse fields.
    """
    if len(xa) == 0 or len(xb) == 0:
        empty = np.zeros(0, dtype=np.intp)
        return empty, empty, np.zeros(0)
    cell = max(radius, 1e-9)
    bx = np.floor(xb / cell).astype(np.int64)
    by = np.floor(yb / cell).astype(np.int64)
    span = int(by.max() - by.min() + 3)
    keyB = bx * span + (by - by.min() + 1)
    order = np.argsort(keyB, kind="stable")
    sortedKeys = keyB[order]
    ax = np.floor(xa / cell).astype(np.int64)
    ay = np.floor(ya / cell).astype(np.int64)
    ii: list[np.ndarray] = []
    jj: list[np.ndarray] = []
    for dx in (-1, 0, 1):
        for dy in (-1, 0, 1):
            key = (ax + dx) * span + (ay + dy - by.min() + 1)
            lo = np.searchsorted(sortedKeys, key, side="left")
            hi = np.searchsorted(sortedKeys, key, side="right")
            counts = hi - lo
            if counts.sum() == 0:
                continue
            i = np.repeat(np.arange(len(xa)), counts)
            starts = np.repeat(lo - np.cumsum(counts) + counts, counts)
            j = order[np.arange(counts.sum()) + starts]
            ii.append(i)
            jj.append(j)
    if not ii:
        empty = np.zeros(0, dtype=np.intp)
        return empty, empty, np.zeros(0)
    i = np.concatenate(ii)
    j = np.concatenate(jj)
    d = np.hypot(xa[i] - xb[j], ya[i] - yb[j])
    keep = d <= radius
    return i[keep], j[keep], d[keep]


def measureFwhm(sources: np.ndarray) -> float:
    """The FWHM (pixels) of an image from its stars: the median of 2·r50 (exact for a
    Gaussian PSF); NaN without stars."""
    r50 = np.asarray(sources["r50"], dtype=float) if len(sources) else np.zeros(0)
    r50 = r50[np.isfinite(r50) & (r50 > 0)]
    return fwhmFromR50(r50)
