# SPDX-License-Identifier: BSD-3-Clause
"""Kernel-source selection: the stars a PSF-matching kernel is fitted on (sep's detection and
measurement of one image's sources are in `psfmatch._sources`).

Stars are found with `sep` in the science image (after subtracting a `sep.Background`, at a
S/N of the PSF-matched-filtered image) and measured in the template at their positions
(`measureAt`: local sky, windowed centroid, aperture flux, on stamps), as the reference
selects on the science image's sources (docs/algorithm.md §7.3 step 3, with sep in place of
the reference's measurement framework, docs/decisions.md D2). A star is kept when it is bright
but not too bright, isolated, not truncated, away from the edges, free of bad mask bits in
both stamps, seen in the template at the same place and point-like (its half-light radius on
the stellar locus in both images: no galaxies, no unresolved pairs); only as many candidates
as needed, the brightest first, are measured in the template. Each image's FWHM is measured
from the kept stars as twice their half-light radius, which for a Gaussian PSF is its FWHM.
"""

from __future__ import annotations

__all__ = [
    "KernelSourceSelectionConfig",
    "detectSources",
    "halfLightRadii",
    "measureAt",
    "measureFwhm",
    "selectKernelSources",
    "stellarLocus",
]

import logging
import math
from dataclasses import dataclass
from typing import Any

import lsst.pex.config as pexConfig
import numpy as np
import sep
from astropy.table import Table

from ._sources import (
    _pairsWithin,
    _unmeasured,
    detectSources,
    halfLightRadii,
    measureAt,
    measureFwhm,
)
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
        doc="Detection threshold, a S/N: pixels of the sky-subtracted science image, smoothed "
        "by a Gaussian of the science PSF's FWHM (the PSF-matched filter; detectionFilterFwhm "
        "when that is not known yet), above this many times the smoothed image's own noise. "
        "10 means 10-sigma detections, as the reference's.",
    )
    detectionFilterFwhm: pexConfig.Field[float] = pexConfig.RangeField(
        dtype=float,
        default=4.0,
        min=0.0,
        inclusiveMin=False,
        doc="FWHM (pixels) of the detection smoothing when the science FWHM is not given. A "
        "star of FWHM 2-8 px reaches >= 80 % of its matched-filter S/N through it (a "
        "Gaussian of FWHM f_psf through one of f: 2 f f_psf / (f^2 + f_psf^2)).",
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

    A science-image detection (`detectSources`) is a candidate if it is not truncated, within the
    S/N window, isolated among the science image's detections, with its stamp inside the
    image and free of excluded mask bits in both images. The candidates are then measured in
    the template at their positions (`measureAt`), highest S/N first, and kept if seen there
    (S/N ≥ ``minTemplateSnr`` within ``matchRadius`` of the science position) and point-like
    (a half-light radius within `STELLAR_BAND` of the stellar locus, `stellarLocus`, in both
    images: galaxies and blends are not kernel sources), until ``maxKernelSources`` are
    kept: the fainter ones are never measured in the template.

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
            filterFwhm=config.detectionFilterFwhm,
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

    # Only truncated objects (sep's OBJ_TRUNC) are rejected here: the smoothed image's
    # 10σ footprints join stars 3-4 FWHM apart, which sep then deblends and flags OBJ_MERGED,
    # though each is a good star (on the golden 512² field that flag took 161 of 358). Close
    # neighbours are the isolation cut's, unresolved pairs the stellar locus's.
    blended = int(sep.OBJ_TRUNC)
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
    # The stellar locus: the half-light radius most of the sample shares (stars), not their
    # median, which compact galaxies as numerous as the stars pull up.
    # A PSF that varies over the field moves the locus with position: it is fitted as a plane
    # in log r50 (x, y) to the sample's stars.
    ny, nx = science.image.shape
    sampleX, sampleY = sci["x"][sample], sci["y"][sample]
    locusS = _LocusPlane.fit(
        sampleX, sampleY, _radii(science, sci, sample, badBits, radiusCache, "science"), nx, ny
    )
    locusT = _LocusPlane.fit(
        sampleX,
        sampleY,
        _radii(
            template, _templateStore(sci, radiusCache), sample, badBits, radiusCache, "template"
        ),
        nx,
        ny,
    )
    fwhm = 2.0 * max(locusS.centre, locusT.centre)
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
    nAccepted = nUnseen = nExtended = 0

    def pointLike(rows: np.ndarray) -> np.ndarray:
        """Whether each of ``rows`` is as compact as a star in both images: a half-light
        radius within the stellar locus's band (a galaxy is larger; a cosmic ray or hot
        pixel, smaller). Without a locus (no sample) every source passes."""
        ok = np.ones(len(rows), dtype=bool)
        stores = (
            (science, sci, "science", locusS),
            (template, _templateStore(sci, radiusCache), "template", locusT),
        )
        for mi, store, which, locus in stores:
            # The template is measured only where the science image found a star: what it
            # rejected needs no second radius (the same answer, ~1/7 fewer sep calls here).
            todo = np.flatnonzero(ok)
            if math.isfinite(locus.centre) and len(todo):
                r50 = _radii(mi, store, rows[todo], badBits, radiusCache, which)
                ok[todo] = locus.contains(sci["x"][rows[todo]], sci["y"][rows[todo]], r50)
        return ok

    start = 0
    while start < len(order) and nAccepted < limit:
        # Batches a little larger than what is missing: one sep call for most fields.
        size = max(64, int(1.25 * (limit - nAccepted)))
        batch = order[start : start + size]
        start += len(batch)
        seen = seenInTemplate(batch)
        nUnseen += int((~seen).sum())
        batch = batch[seen]
        stellar = pointLike(batch)
        nExtended += int((~stellar).sum())
        batch = batch[stellar][: limit - nAccepted]
        accepted.append(batch)
        nAccepted += len(batch)
    counts["nNotInTemplate"] = nUnseen
    counts["nRejectedExtended"] = nExtended
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

#: Fewer sample radii than this leave the stellarity cut out (`_LocusPlane.fit`).
_MIN_LOCUS_SAMPLE = 15

#: A kernel source's half-light radius must lie within this band around the stellar locus
#: (`stellarLocus`), in both images. 1.15 above: a compact galaxy (half-light radius 1 px)
#: seen through a PSF of FWHM ≤ 4 px is ≥ 15 % larger than a star; a star's own r50 scatters
#: by ~5 % at S/N 20 (1 % at S/N 400). 0.8 below: cosmic rays and hot pixels are far smaller.
STELLAR_BAND = (0.8, 1.15)


@dataclass(frozen=True)
class _LocusPlane:
    """The stellar locus over the field: log r50 = c0 + c1·u + c2·v, with u, v the position
    scaled to [-1, 1] across the image (a PSF whose width varies by ±12 % over the field, as
    the benchmark's, would otherwise leave its corner stars outside a constant band)."""

    coefficients: tuple[float, float, float]
    nx: int
    ny: int
    #: Whether the sample was large enough to say which sources are stars (see `fit`).
    decisive: bool = True

    @property
    def centre(self) -> float:
        """The locus's r50 at the image's centre (NaN without one)."""
        return math.exp(self.coefficients[0])

    def logAt(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        c0, c1, c2 = self.coefficients
        u = 2.0 * np.asarray(x, dtype=float) / max(self.nx - 1, 1) - 1.0
        v = 2.0 * np.asarray(y, dtype=float) / max(self.ny - 1, 1) - 1.0
        return np.asarray(c0 + c1 * u + c2 * v)

    def contains(self, x: np.ndarray, y: np.ndarray, r50: np.ndarray) -> np.ndarray:
        """Whether each r50 lies within `STELLAR_BAND` of the locus at its position (all do
        when the locus is not `decisive`)."""
        if not self.decisive:
            return np.ones(np.shape(r50), dtype=bool)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.asarray(r50, dtype=float) / np.exp(self.logAt(x, y))
        return np.asarray((ratio >= STELLAR_BAND[0]) & (ratio <= STELLAR_BAND[1]))

    @classmethod
    def fit(cls, x: np.ndarray, y: np.ndarray, r50: np.ndarray, nx: int, ny: int) -> _LocusPlane:
        """The plane through the sample's stars: a constant locus (`stellarLocus`) first,
        then twice a least-squares plane through the radii within the band around the last
        (a plane needs ≥ 10 of them; with fewer it stays constant). With fewer than
        `_MIN_LOCUS_SAMPLE` radii the locus is not `decisive`."""
        r50 = np.asarray(r50, dtype=float)
        measured = int(np.count_nonzero(np.isfinite(r50) & (r50 > 0)))
        centre = math.log(stellarLocus(r50)) if measured else math.nan
        # Below _MIN_LOCUS_SAMPLE radii a mode says little: on a 128² cut-out's 13 stars,
        # faint and under a PSF 25 % wider on one side, the radii spread over 2.6-3.7 px and
        # the band left 2 kernel sources. The locus then sets the isolation radius only.
        plane = cls((centre, 0.0, 0.0), nx, ny, decisive=measured >= _MIN_LOCUS_SAMPLE)
        if not math.isfinite(centre) or not plane.decisive:
            return plane
        for _ in range(2):
            inBand = np.isfinite(r50) & (r50 > 0) & plane.contains(x, y, r50)
            if np.count_nonzero(inBand) < 10:
                break
            u = 2.0 * np.asarray(x, dtype=float)[inBand] / max(nx - 1, 1) - 1.0
            v = 2.0 * np.asarray(y, dtype=float)[inBand] / max(ny - 1, 1) - 1.0
            design = np.column_stack([np.ones_like(u), u, v])
            coefficients, *_ = np.linalg.lstsq(design, np.log(r50[inBand]), rcond=None)
            plane = cls(
                (float(coefficients[0]), float(coefficients[1]), float(coefficients[2])),
                nx,
                ny,
            )
        return plane


def stellarLocus(r50: np.ndarray) -> float:
    """The half-light radius (pixels) of the stars among ``r50``: the centre of the densest
    ±7 % band of radii (stars share one size; galaxies spread over larger ones), refined as
    the median within ±10 % of it. Holds while the stars outnumber the galaxies of any one
    size, e.g. with as many compact galaxies as stars. NaN without radii.
    """
    values = np.asarray(r50, dtype=float)
    values = np.sort(np.log(values[np.isfinite(values) & (values > 0)]))
    if values.size == 0:
        return math.nan
    if values.size < 5:
        return float(np.exp(np.median(values)))
    half = math.log(1.07)
    within = np.searchsorted(values, values + half, side="right") - np.searchsorted(
        values, values - half, side="left"
    )
    # The densest band; among equally dense ones, the smallest radius (stars are the most
    # compact sources with light enough for the sample).
    centre = values[int(np.argmax(within))]
    near = values[np.abs(values - centre) <= math.log(1.10)]
    return float(np.exp(np.median(near)))


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
