# SPDX-License-Identifier: BSD-3-Clause
"""Kernel-source selection: the stars a PSF-matching kernel is fitted on.

Stars are found with `sep` in the science image (after subtracting a `sep.Background`) and
measured in the template at their positions (`measureAt`: local sky, windowed centroid,
aperture flux, on stamps), as the reference selects on the science image's sources
(docs/algorithm.md §7.3 step 3, with sep in place of the reference's measurement framework,
docs/decisions.md D2). A star is kept when it is bright but not too bright, isolated, unblended,
away from the edges, free of bad mask bits in both stamps and seen in the template at the same
place; only as many candidates as needed, the brightest first, are measured in the template.
Each image's FWHM is measured from the kept stars as twice their half-light radius, which for a
Gaussian PSF is its FWHM.
"""

from __future__ import annotations

__all__ = [
    "KernelSourceSelectionConfig",
    "detectSources",
    "halfLightRadii",
    "measureAt",
    "measureFwhm",
    "selectKernelSources",
]

import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import lsst.pex.config as pexConfig
import numpy as np
import sep
from astropy.table import Table

from ._psfutil import fwhmFromR50
from .convolution import _allFinite
from .errors import InsufficientKernelSourcesError, InvalidInputError
from .image import Mask, MaskedImage, _rowBands

_log = logging.getLogger("psfmatch.selection")


class KernelSourceSelectionConfig(pexConfig.Config):
    """How kernel sources are found and filtered."""

    detectionThreshold: pexConfig.Field[float] = pexConfig.RangeField(
        dtype=float,
        default=10.0,
        min=0.0,
        inclusiveMin=False,
        doc="Detection threshold: pixels of the sky-subtracted image, smoothed by sep's 3x3 "
        "kernel, above this many times the per-pixel noise (sep.extract's thresh, "
        "filter_type='conv').",
    )
    backgroundMeshSize: pexConfig.Field[int] = pexConfig.RangeField(
        dtype=int,
        default=128,
        min=8,
        doc="Side (pixels) of the mesh cells of the sep.Background subtracted before detection: "
        "the sky is taken as smooth on this scale. 128 as the LSST pipelines' background "
        "(meas_algorithms' binSize); lower it for sky that varies faster (nebulosity, halos).",
    )
    minSnr: pexConfig.Field[float] = pexConfig.RangeField(
        dtype=float, default=10.0, min=0.0, doc="Smallest science S/N of a kernel source."
    )
    maxSnr: pexConfig.Field[float] = pexConfig.RangeField(
        dtype=float,
        default=1000.0,
        min=0.0,
        doc="Largest science S/N of a kernel source; very bright stars are the first to leave "
        "the linear regime of a detector. Set to 0 for no limit.",
    )
    minTemplateSnr: pexConfig.Field[float] = pexConfig.RangeField(
        dtype=float,
        default=5.0,
        min=0.0,
        doc="Smallest template S/N (the aperture flux at the science detection, over its "
        "error) for a star to count as seen in the template.",
    )
    matchRadius: pexConfig.Field[float] = pexConfig.RangeField(
        dtype=float,
        default=2.0,
        min=0.0,
        inclusiveMin=False,
        doc="Largest distance (pixels) between a star's template and science positions.",
    )
    isolationFwhm: pexConfig.Field[float] = pexConfig.RangeField(
        dtype=float,
        default=2.0,
        min=0.0,
        doc="Reject a star with another detection closer than this many FWHMs (the larger "
        "of the two images') in either image.",
    )
    excludeMaskPlanes: pexConfig.ListField[str] = pexConfig.ListField(
        dtype=str,
        default=["NO_DATA", "BAD", "SAT", "EDGE", "CR"],
        doc="Mask planes that disqualify a star when any pixel of its stamp, in either image, "
        "has them. Unknown plane names are ignored.",
    )
    maxKernelSources: pexConfig.Field[int] = pexConfig.Field(
        dtype=int,
        default=1000,
        doc="Keep at most this many sources, highest S/N first; -1 for no limit.",
    )
    minKernelSources: pexConfig.Field[int] = pexConfig.RangeField(
        dtype=int,
        default=3,
        min=1,
        doc="Fewer usable sources than this is an InsufficientKernelSourcesError.",
    )
    restrictKernelEdgeSources: pexConfig.Field[bool] = pexConfig.Field(
        dtype=bool,
        default=False,
        doc="Also keep stamps one kernel width away from the image edge (the reference's "
        "default is True; psfmatch's is False because a stamp inside the image is already "
        "fitted correctly, and small images would lose most of their stars).",
    )

    def validate(self) -> None:
        super().validate()
        if self.maxSnr and self.maxSnr <= self.minSnr:
            raise pexConfig.FieldValidationError(
                type(self).maxSnr,
                self,
                f"maxSnr ({self.maxSnr}) must exceed minSnr ({self.minSnr})",
            )
        if self.maxKernelSources == 0 or self.maxKernelSources < -1:
            raise pexConfig.FieldValidationError(
                type(self).maxKernelSources, self, "must be positive or -1 (no limit)"
            )


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
) -> np.ndarray:
    """Detect and measure the sources of one image with sep.

    Parameters
    ----------
    mi : `MaskedImage`
        The image; pixels with any of ``badBits`` or a non-finite value are masked.
    threshold : `float`
        Detection threshold in units of the per-pixel noise: a source is the connected
        pixels (at least 5) of the image, after subtracting a `sep.Background` (mesh cells
        of ``meshSize`` pixels, 3×3 median-filtered) and smoothing with sep's default 3×3
        kernel (SExtractor's classic convolution filter), that lie above ``threshold`` times
        the per-pixel σ (the square root of the variance plane).
    badBits : `int`
        Mask bits that make a pixel unusable.
    measureRadii : `bool`, optional
        Measure every source's half-light radius (``r50``). Without it ``r50`` is NaN and
        `halfLightRadii` measures the ones wanted later, from ``background``: the kernel-source
        selection needs it for a few hundred of thousands of detections.
    meshSize : `int`, optional
        The background's mesh cell size in pixels (`KernelSourceSelectionConfig`'s
        ``backgroundMeshSize``).

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
    objects = sep.extract(sub, threshold, var=var, mask=masked, minarea=5, filter_type="conv")
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
    similar radius (a few bright stars must not make every stamp large): 4-pixel steps."""
    if len(sources) == 0:
        return
    reach = 4 * np.ceil((np.ceil(radii) + 1) / 4).astype(np.intp)
    for size in np.unique(reach):
        group = np.flatnonzero(reach == size)
        yield group, _cutStamps(mi, sources[group], int(size), badBits)


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

    def gather(plane: np.ndarray) -> np.ndarray:
        """The (n, side, side) stamps of one plane: interior ones through a window view (one
        copy each), those reaching past the edge by clipped indices."""
        out = np.empty((n, side, side), dtype=plane.dtype)
        inner = np.flatnonzero(interior)
        if inner.size:
            windows = np.lib.stride_tricks.sliding_window_view(plane, (side, side))
            out[inner] = windows[cy[inner] - reach, cx[inner] - reach]
        if edge.size:
            out[edge] = plane[edgeRows, edgeCols]
        return out

    data = gather(np.asarray(mi.image)).astype(np.float64)
    variance = gather(np.asarray(mi.variance)).astype(np.float64)
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


def _stampHasBits(
    mask: np.ndarray, ix: np.ndarray, iy: np.ndarray, half: int, bits: int
) -> np.ndarray:
    """Whether the (2·half+1)² stamp around each (ix, iy) has any of ``bits`` set."""
    if bits == 0 or len(ix) == 0:
        return np.zeros(len(ix), dtype=bool)
    flagged = (mask & bits) != 0
    if not flagged.any():
        return np.zeros(len(ix), dtype=bool)
    # Stamps cover a small part of the image: looking at each one costs far less than a
    # summed-area table of the whole image (two int64 cumsums of every pixel).
    return np.fromiter(
        (
            flagged[y - half : y + half + 1, x - half : x + half + 1].any()
            for x, y in zip(ix.tolist(), iy.tolist(), strict=True)
        ),
        dtype=bool,
        count=len(ix),
    )


def selectKernelSources(
    template: MaskedImage,
    science: MaskedImage,
    config: KernelSourceSelectionConfig,
    *,
    kernelSize: int | None = None,
    scienceSources: np.ndarray | None = None,
    badBits: int | None = None,
    radiusCache: dict[str, Any] | None = None,
) -> Table:
    """Find the stars to fit the matching kernel on.

    A science-image detection (`detectSources`) is a candidate if it is unblended, within the
    S/N window, isolated among the science image's detections, with its stamp inside the
    image and free of excluded mask bits in both images. The candidates are then measured in
    the template at their positions (`measureAt`), highest S/N first, and kept if seen there
    (S/N ≥ ``minTemplateSnr`` within ``matchRadius`` of the science position), until
    ``maxKernelSources`` are kept: the fainter ones are never measured in the template.

    Parameters
    ----------
    template, science : `MaskedImage`
        The two images, on one pixel grid (same shape and origin).
    config : `KernelSourceSelectionConfig`
        Thresholds.
    kernelSize : `int`, optional
        Width of the matching kernel. Stamps are ``2·kernelSize + 1`` wide and must lie inside
        the image (one more kernel width inside with ``restrictKernelEdgeSources``). Without
        it only the detection, matching, S/N and isolation cuts are applied (for measuring
        the FWHMs that decide the kernel size).
    scienceSources : `numpy.ndarray`, optional
        The science image's detections from `detectSources`, to avoid detecting twice.
    badBits : `int`, optional
        Mask bits excluded from detection that also disqualify a stamp, on top of those of
        ``excludeMaskPlanes`` (`ImagePsfMatchTask` adds the kernel's ``badMaskPlanes``); by
        default those of ``excludeMaskPlanes`` alone.
    radiusCache : `dict`, optional
        Measurements made by an earlier call with these same images, detections and
        ``badBits``, filled by this one: a caller that selects twice, as `ImagePsfMatchTask`
        does, measures each star once.

    Returns
    -------
    sources : `astropy.table.Table`
        One row per kept star, brightest S/N first: ``x``, ``y`` (parent coordinates, the
        science position), ``templateFlux``, ``scienceFlux`` (aperture fluxes), ``snr``
        (science), ``templateSnr``, ``templateR50``, ``scienceR50``. ``meta`` holds
        ``nDetectedScience``, the number rejected by each cut (``nRejectedBlended``,
        ``nRejectedSnr``, ``nRejectedCrowded``, ``nRejectedEdge``, ``nRejectedMasked``) and
        ``nNotInTemplate``, the candidates measured in the template and not seen there.

    Raises
    ------
    InsufficientKernelSourcesError
        If fewer than ``minKernelSources`` stars survive; the message gives the count at
        each stage.
    """
    config.validate()
    if template.image.shape != science.image.shape or template.getXY0() != science.getXY0():
        raise InvalidInputError(
            f"template ({template.image.shape}, xy0 {template.getXY0()}) and science "
            f"({science.image.shape}, xy0 {science.getXY0()}) must share one pixel grid"
        )
    excludeBits = Mask.getPlaneBitMask(list(config.excludeMaskPlanes), skipUnknown=True)
    if badBits is None:
        badBits = excludeBits
    if radiusCache is None:
        radiusCache = {}
    if scienceSources is None:
        scienceSources = detectSources(
            science,
            config.detectionThreshold,
            badBits,
            measureRadii=False,
            meshSize=config.backgroundMeshSize,
        )
    sci = scienceSources
    counts: dict[str, int] = {"nDetectedScience": len(sci)}
    if len(sci) == 0:
        table = Table(
            names=[
                "x",
                "y",
                "templateFlux",
                "scienceFlux",
                "snr",
                "templateSnr",
                "templateR50",
                "scienceR50",
            ],
            dtype=[float] * 8,
        )
        table.meta.update(counts)
        return _finish(table, config, counts, (template, science), badBits)

    keep = np.ones(len(sci), dtype=bool)

    def cut(name: str, good: np.ndarray) -> None:
        nonlocal keep
        counts[name] = int((keep & ~good).sum())
        keep &= good

    blended = int(sep.OBJ_MERGED | sep.OBJ_TRUNC)
    cut("nRejectedBlended", (sci["flag"] & blended) == 0)
    snr = sci["snr"]
    good = snr >= config.minSnr
    if config.maxSnr:
        good &= snr <= config.maxSnr
    cut("nRejectedSnr", good & np.isfinite(snr))

    def seenInTemplate(rows: np.ndarray) -> np.ndarray:
        """Whether each of ``rows`` is seen in the template, at S/N ≥ minTemplateSnr within
        matchRadius of its science position (measured once, then cached)."""
        tmp = _templateAt(template, sci, rows, badBits, radiusCache)
        tsnr = tmp["snr"]
        ok = np.isfinite(tsnr) & (tsnr >= config.minTemplateSnr) & (tmp["aperFlux"] > 0)
        ok &= np.hypot(tmp["x"] - sci["x"][rows], tmp["y"] - sci["y"][rows]) <= config.matchRadius
        return np.asarray(ok)

    # The FWHM sets the isolation radius; a sample of the stars that passed so far, seen in
    # the template, measures it to ~2 % (the median of up to 256 r50s per image), without
    # measuring thousands of faint neighbours.
    sample = np.flatnonzero(keep)
    sample = sample[np.linspace(0, len(sample) - 1, min(len(sample), _FWHM_SAMPLE)).astype(int)]
    sample = sample[seenInTemplate(sample)]
    fwhm = 2.0 * max(
        _nanmedian(_radii(science, sci, sample, badBits, radiusCache, "science")),
        _nanmedian(
            _radii(
                template, _templateStore(sci, radiusCache), sample, badBits, radiusCache, "template"
            )
        ),
    )
    isolation = config.isolationFwhm * fwhm
    if isolation > 0:
        crowded = np.zeros(len(sci), dtype=bool)
        a, b, _ = _pairsWithin(sci["x"], sci["y"], sci["x"], sci["y"], isolation)
        crowded[a[b != a]] = True
        cut("nRejectedCrowded", ~crowded)

    x0, y0 = science.getXY0()
    ix = np.floor(sci["x"] + 0.5).astype(np.int64)
    iy = np.floor(sci["y"] + 0.5).astype(np.int64)
    if kernelSize is not None:
        half = int(kernelSize)
        margin = half + (half if config.restrictKernelEdgeSources else 0)
        ny, nx = science.image.shape
        inside = (ix >= margin) & (iy >= margin) & (ix < nx - margin) & (iy < ny - margin)
        cut("nRejectedEdge", inside)
        rows = np.flatnonzero(keep)
        stampBits = excludeBits | badBits
        hasBits = np.zeros(len(sci), dtype=bool)
        hasBits[rows] = _stampHasBits(
            science.mask, ix[rows], iy[rows], half, stampBits
        ) | _stampHasBits(template.mask, ix[rows], iy[rows], half, stampBits)
        cut("nRejectedMasked", ~hasBits)

    # Last, the template: the stars left are looked at in order of S/N, highest first, until
    # maxKernelSources of them are seen in the template (the others are not measured there).
    order = np.flatnonzero(keep)
    order = order[np.argsort(snr[order], kind="stable")[::-1]]
    limit = config.maxKernelSources if config.maxKernelSources > 0 else len(order)
    accepted: list[np.ndarray] = []
    nAccepted = nUnseen = 0
    start = 0
    while start < len(order) and nAccepted < limit:
        # Batches a little larger than what is missing: one sep call for most fields.
        size = max(64, int(1.25 * (limit - nAccepted)))
        batch = order[start : start + size]
        start += len(batch)
        seen = seenInTemplate(batch)
        nUnseen += int((~seen).sum())
        batch = batch[seen][: limit - nAccepted]
        accepted.append(batch)
        nAccepted += len(batch)
    counts["nNotInTemplate"] = nUnseen
    rows = np.concatenate(accepted) if accepted else np.zeros(0, dtype=np.intp)
    tmp = _templateStore(sci, radiusCache)
    table = Table(
        {
            "x": sci["x"][rows] + x0,
            "y": sci["y"][rows] + y0,
            "templateFlux": tmp["aperFlux"][rows],
            "scienceFlux": sci["aperFlux"][rows],
            "snr": snr[rows],
            "templateSnr": tmp["snr"][rows],
            "templateR50": _radii(template, tmp, rows, badBits, radiusCache, "template"),
            "scienceR50": _radii(science, sci, rows, badBits, radiusCache, "science"),
        }
    )
    table.meta.update(counts)
    return _finish(table, config, counts, (template, science), badBits)


def _templateStore(sci: np.ndarray, cache: dict[str, Any]) -> np.ndarray:
    """The template measurements at the science detections made so far (a row per
    detection; see `_templateAt`)."""
    store = cache.get("templateMeasurement")
    if store is None or len(store) != len(sci):
        store = cache["templateMeasurement"] = _unmeasured(len(sci))
        cache["templateMeasured"] = np.zeros(len(sci), dtype=bool)
    return np.asarray(store)


def _templateAt(
    template: MaskedImage, sci: np.ndarray, rows: np.ndarray, badBits: int, cache: dict[str, Any]
) -> np.ndarray:
    """`measureAt` of the template at the science detections ``rows``, each measured once
    per selection (a source's measurement depends on its own stamp only, so which batch it
    came in changes nothing)."""
    store = _templateStore(sci, cache)
    measured = cache["templateMeasured"]
    missing = rows[~measured[rows]]
    if missing.size:
        store[missing] = measureAt(template, sci[missing], badBits)
        measured[missing] = True
    return np.asarray(store[rows])


#: Stars whose half-light radii measure the FWHM that sets the isolation radius.
_FWHM_SAMPLE = 256


def _nanmedian(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(np.median(finite)) if finite.size else math.nan


def _radii(
    mi: MaskedImage,
    sources: np.ndarray,
    rows: np.ndarray,
    badBits: int,
    cache: dict[str, Any] | None,
    which: str,
) -> np.ndarray:
    """The half-light radii of ``sources[rows]``: those `detectSources` measured, those in
    ``cache[which]``, the others (``measureRadii=False``) measured now by `halfLightRadii`."""
    if cache is None:
        cache = {}
    known = cache.get(which)
    if known is None or len(known) != len(sources):
        known = cache[which] = np.array(sources["r50"], dtype=float)
    r50 = known[rows]
    missing = np.flatnonzero(np.isnan(r50))
    if missing.size:
        r50[missing] = halfLightRadii(mi, sources[rows[missing]], badBits)
        known[rows[missing]] = r50[missing]
    return np.asarray(r50)


def _maskedPixels(images: tuple[MaskedImage, MaskedImage], badBits: int) -> str:
    """Which excluded mask planes cover how many pixels of each image, e.g.
    ``"science SAT=503, template SAT=120"`` (empty if none): why stars may be missing."""
    parts = []
    for name, mi in zip(("template", "science"), images, strict=True):
        for plane, bit in sorted(Mask.getMaskPlaneDict().items(), key=lambda item: item[1]):
            value = 1 << bit
            if badBits & value:
                n = int(np.count_nonzero(mi.mask & value))
                if n:
                    parts.append(f"{name} {plane}={n}")
    return ", ".join(parts)


def _finish(
    table: Table,
    config: KernelSourceSelectionConfig,
    counts: dict[str, int],
    images: tuple[MaskedImage, MaskedImage],
    badBits: int,
) -> Table:
    _log.debug("Kernel source selection: %s; %d kept", counts, len(table))
    if len(table) < config.minKernelSources:
        stages = ", ".join(f"{k}={v}" for k, v in counts.items())
        masked = _maskedPixels(images, badBits)
        if masked:
            stages += f"; masked pixels, left out of detection: {masked}"
        raise InsufficientKernelSourcesError(
            len(table),
            config.minKernelSources,
            f"{stages}. Lower selection.detectionThreshold or selection.minSnr, or pass "
            "candidate positions yourself",
        )
    return table
