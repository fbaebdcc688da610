# SPDX-License-Identifier: BSD-3-Clause
"""Kernel-source selection: the stars a PSF-matching kernel is fitted on.

Stars are found with `sep` in both images (after subtracting a `sep.Background`), matched by
position, and kept when they are bright but not too bright, isolated, unblended, away from the
edges and free of bad mask bits in both stamps (ALGORITHM.md §7.3 step 3, with sep in place of
the reference's measurement framework, decision 2). Each image's FWHM is measured from the
kept stars as twice their half-light radius, which for a Gaussian PSF is its FWHM.
"""

from __future__ import annotations

__all__ = [
    "KernelSourceSelectionConfig",
    "detectSources",
    "measureFwhm",
    "selectKernelSources",
]

import logging
from typing import Any

import lsst.pex.config as pexConfig
import numpy as np
import sep
from astropy.table import Table

from .errors import InsufficientKernelSourcesError, InvalidInputError
from .image import Mask, MaskedImage

_log = logging.getLogger("psfmatch.selection")


class KernelSourceSelectionConfig(pexConfig.Config):
    """How kernel sources are found and filtered."""

    detectionThreshold: pexConfig.Field[float] = pexConfig.RangeField(
        dtype=float,
        default=10.0,
        min=0.0,
        inclusiveMin=False,
        doc="Detection threshold in units of the per-pixel noise (sep.extract's thresh).",
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


def _noise(
    mi: MaskedImage, background: Any, usable: np.ndarray, dtype: Any = np.float64
) -> np.ndarray:
    """Per-pixel σ: sqrt(variance) where it is positive, else the background rms."""
    var = np.asarray(mi.variance, dtype=dtype)
    good = usable & np.isfinite(var) & (var > 0)
    if not good.any():
        return np.full(var.shape, max(float(background.globalrms), 1e-30), dtype=dtype)
    return np.where(good, np.sqrt(np.where(good, var, dtype(1.0))), dtype(background.globalrms))


def detectSources(mi: MaskedImage, threshold: float, badBits: int) -> np.ndarray:
    """Detect and measure the sources of one image with sep.

    Parameters
    ----------
    mi : `MaskedImage`
        The image; pixels with any of ``badBits`` or a non-finite value are masked.
    threshold : `float`
        Detection threshold in units of the per-pixel noise.
    badBits : `int`
        Mask bits that make a pixel unusable.

    Returns
    -------
    sources : `numpy.ndarray`
        A structured array with the sep.extract fields plus ``aperFlux``, ``aperFluxErr`` (in
        a circle of radius 3·max(a, 1)), ``r50`` (half-light radius, pixels) and ``snr``.
        Positions are array indices (add ``xy0`` for parent coordinates).
    """
    # sep measures in single precision whatever it is given: a float32 image stays float32
    # (half the memory traffic, ~1/3 less time at 4096², the same detections).
    dtype: Any = np.float32 if mi.image.dtype == np.float32 else np.float64
    data = np.ascontiguousarray(mi.image, dtype=dtype)
    usable = ((mi.mask & badBits) == 0) & np.isfinite(data)
    masked = ~usable
    data = np.where(usable, data, dtype(0.0))
    if not usable.any():
        return np.zeros(0, dtype=[("x", float), ("y", float)])
    background = sep.Background(data, mask=masked)
    with np.errstate(over="ignore", invalid="ignore"):  # absurd values overflow: see below
        sub = data - background.back(dtype=dtype)
    err = _noise(mi, background, usable, dtype)
    objects = sep.extract(sub, threshold, err=err, mask=masked, minarea=5)
    # Absurd but finite pixel values (~1e38) overflow sep's moments: such a detection has no
    # position and cannot be a kernel source.
    objects = objects[np.isfinite(objects["x"]) & np.isfinite(objects["y"])]
    if len(objects) == 0:
        return objects
    radius = 3.0 * np.maximum(objects["a"], 1.0)
    flux, fluxErr, _ = sep.sum_circle(sub, objects["x"], objects["y"], radius, err=err, mask=masked)
    rmax = 6.0 * np.maximum(objects["a"], 1.0)
    r50, _ = sep.flux_radius(sub, objects["x"], objects["y"], rmax, 0.5, subpix=5)
    out = np.zeros(
        len(objects),
        dtype=objects.dtype.descr
        + [("aperFlux", float), ("aperFluxErr", float), ("r50", float), ("snr", float)],
    )
    for name in objects.dtype.names or ():
        out[name] = objects[name]
    out["aperFlux"] = flux
    out["aperFluxErr"] = fluxErr
    out["r50"] = r50
    with np.errstate(divide="ignore", invalid="ignore"):
        out["snr"] = np.where(fluxErr > 0, flux / fluxErr, 0.0)
    return out


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
    return float(2.0 * np.median(r50)) if r50.size else float("nan")


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
    templateSources: np.ndarray | None = None,
    scienceSources: np.ndarray | None = None,
    badBits: int | None = None,
) -> Table:
    """Find the stars to fit the matching kernel on.

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
    templateSources, scienceSources : `numpy.ndarray`, optional
        Detections from `detectSources`, to avoid detecting twice.
    badBits : `int`, optional
        Mask bits excluded from detection that also disqualify a stamp, on top of those of
        ``excludeMaskPlanes`` (`ImagePsfMatchTask` adds the kernel's ``badMaskPlanes``); by
        default those of ``excludeMaskPlanes`` alone.

    Returns
    -------
    sources : `astropy.table.Table`
        One row per kept star, brightest S/N first: ``x``, ``y`` (parent coordinates, the
        science position), ``templateFlux``, ``scienceFlux`` (aperture fluxes), ``snr``
        (science), ``templateR50``, ``scienceR50``. ``meta`` holds ``nDetectedTemplate``,
        ``nDetectedScience``, ``nMatched`` and the number rejected by each cut.

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
    if templateSources is None:
        templateSources = detectSources(template, config.detectionThreshold, badBits)
    if scienceSources is None:
        scienceSources = detectSources(science, config.detectionThreshold, badBits)
    counts: dict[str, int] = {
        "nDetectedTemplate": len(templateSources),
        "nDetectedScience": len(scienceSources),
    }

    def empty() -> Table:
        table = Table(
            names=["x", "y", "templateFlux", "scienceFlux", "snr", "templateR50", "scienceR50"],
            dtype=[float] * 7,
        )
        table.meta.update(counts)
        return table

    if len(templateSources) == 0 or len(scienceSources) == 0:
        counts["nMatched"] = 0
        return _finish(empty(), config, counts)

    i, j, d = _pairsWithin(
        scienceSources["x"],
        scienceSources["y"],
        templateSources["x"],
        templateSources["y"],
        config.matchRadius,
    )
    # Keep each science source's nearest template match, and each template source once.
    order = np.argsort(d, kind="stable")
    _, firstI = np.unique(i[order], return_index=True)
    pick = order[firstI]
    i, j = i[pick], j[pick]
    _, firstJ = np.unique(j, return_index=True)
    i, j = i[firstJ], j[firstJ]
    counts["nMatched"] = len(i)
    sci = scienceSources[i]
    tmp = templateSources[j]

    keep = np.ones(len(i), dtype=bool)

    def cut(name: str, good: np.ndarray) -> None:
        nonlocal keep
        counts[name] = int((keep & ~good).sum())
        keep &= good

    blended = int(sep.OBJ_MERGED | sep.OBJ_TRUNC)
    cut("nRejectedBlended", ((sci["flag"] & blended) == 0) & ((tmp["flag"] & blended) == 0))
    snr = sci["snr"]
    good = snr >= config.minSnr
    if config.maxSnr:
        good &= snr <= config.maxSnr
    cut("nRejectedSnr", good & (tmp["aperFlux"] > 0) & np.isfinite(snr))

    fwhm = 2.0 * max(float(np.nanmedian(sci["r50"])), float(np.nanmedian(tmp["r50"])))
    isolation = config.isolationFwhm * fwhm
    if isolation > 0:
        crowded = np.zeros(len(i), dtype=bool)
        for others, own in ((scienceSources, i), (templateSources, j)):
            a, b, _ = _pairsWithin(sci["x"], sci["y"], others["x"], others["y"], isolation)
            crowded[a[b != own[a]]] = True
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
        ixs, iys = np.where(inside, ix, margin), np.where(inside, iy, margin)
        stampBits = excludeBits | badBits
        hasBits = _stampHasBits(science.mask, ixs, iys, half, stampBits) | _stampHasBits(
            template.mask, ixs, iys, half, stampBits
        )
        cut("nRejectedMasked", ~hasBits)

    table = Table(
        {
            "x": sci["x"][keep] + x0,
            "y": sci["y"][keep] + y0,
            "templateFlux": tmp["aperFlux"][keep],
            "scienceFlux": sci["aperFlux"][keep],
            "snr": snr[keep],
            "templateR50": tmp["r50"][keep],
            "scienceR50": sci["r50"][keep],
        }
    )
    table.sort("snr", reverse=True)
    if config.maxKernelSources > 0 and len(table) > config.maxKernelSources:
        table = table[: config.maxKernelSources]
    table.meta.update(counts)
    return _finish(table, config, counts)


def _finish(table: Table, config: KernelSourceSelectionConfig, counts: dict[str, int]) -> Table:
    _log.debug("Kernel source selection: %s; %d kept", counts, len(table))
    if len(table) < config.minKernelSources:
        stages = ", ".join(f"{k}={v}" for k, v in counts.items())
        raise InsufficientKernelSourcesError(
            len(table),
            config.minKernelSources,
            f"{stages}. Lower selection.detectionThreshold or selection.minSnr, or pass "
            "candidate positions yourself",
        )
    return table
