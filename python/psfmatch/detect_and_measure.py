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
]

import math
from dataclasses import dataclass
from typing import Any

import lsst.pex.config as pexConfig
import numpy as np
import sep
from astropy.table import Table

from ._fft import _fftShape, _filterGrid, _spectrumOfSmall
from ._masks import UNUSABLE_PLANES
from ._psfutil import _gaussianPsfImage, _psfFwhm, _psfImage
from ._sources import _pairsWithin, detectSources
from .errors import InvalidInputError
from .image import Mask, MaskedImage, _rowBands
from .task import Struct, Task


def _usableDifferencePixels(
    difference: MaskedImage, rows: slice, badBits: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For ``rows`` of D: the usable pixels (finite, positive variance, none of
    ``badBits``), the weights 1/σ² there (else 0) and D there (else 0), in float64."""
    image = np.asarray(difference.image[rows], dtype=np.float64)
    var = np.asarray(difference.variance[rows], dtype=np.float64)
    usable = np.isfinite(image) & np.isfinite(var) & (var > 0)
    usable &= (difference.mask[rows] & badBits) == 0
    weight = np.where(usable, 1.0 / np.where(usable, var, 1.0), 0.0)
    data = np.where(usable, image, 0.0)
    return usable, weight, data


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
    """
    # Band by band wherever the pixels are independent: at 4096² each image-sized float64
    # temporary is 134 MB of fresh memory, page-faulted in on first touch.
    ny, nx = difference.image.shape
    usable = np.empty((ny, nx), dtype=bool)
    snr = np.empty((ny, nx), dtype=np.float64)
    bands = _rowBands(ny)
    with np.errstate(divide="ignore", invalid="ignore"):
        if isScore:
            peak = float(psf.max())
            for band in bands:
                u, weight, data = _usableDifferencePixels(difference, band, badBits)
                usable[band] = u
                snr[band] = np.where(u, data * np.sqrt(weight), 0.0)

            def fluxAt(iy: int, ix: int) -> tuple[float, float]:
                ok = bool(usable[iy, ix])
                d = np.float64(difference.image[iy, ix]) if ok else np.float64(0.0)
                v = np.float64(difference.variance[iy, ix]) if ok else np.float64(np.inf)
                return float(d / peak), float(np.sqrt(v) / peak)

        else:
            # The PSF-fit flux's numerator Σ p·D/σ² and denominator Σ p²/σ², each a
            # correlation of a zero-padded grid written band by band.
            grid = _fftShape((ny, nx), psf.shape)
            numGrid = np.zeros(grid)
            denGrid = np.zeros(grid)
            for band in bands:
                u, weight, data = _usableDifferencePixels(difference, band, badBits)
                usable[band] = u
                numGrid[band, :nx] = data * weight
                denGrid[band, :nx] = weight
            # Correlation: the kernels' conjugate spectra (numGrid, denGrid are overwritten).
            numerator = _filterGrid(
                numGrid, np.conj(_spectrumOfSmall(psf, grid, nThreads)), (ny, nx), nThreads
            )
            del numGrid
            denominator = _filterGrid(
                denGrid, np.conj(_spectrumOfSmall(psf * psf, grid, nThreads)), (ny, nx), nThreads
            )
            del denGrid
            floor = 1e-12 * float(denominator.max(initial=0.0))
            for band in bands:
                den = denominator[band]
                good = den > floor
                usable[band] &= good
                flux = np.where(good, numerator[band] / np.where(good, den, 1.0), 0.0)
                fluxErr = np.where(good, 1.0 / np.sqrt(np.where(good, den, 1.0)), np.inf)
                snr[band] = np.where(usable[band], flux / fluxErr, 0.0)

            def fluxAt(iy: int, ix: int) -> tuple[float, float]:
                den = denominator[iy, ix]
                if not den > floor:
                    return 0.0, math.inf
                return float(numerator[iy, ix] / den), float(1.0 / np.sqrt(den))

    names = ("x", "y", "flux", "fluxErr", "snr", "isNegative", "npix", "xPeak", "yPeak")
    rows: dict[str, list[Any]] = {name: [] for name in names}
    x0, y0 = difference.getXY0()
    unusable = ~usable
    for sign in (1.0, -1.0):
        if sign < 0:
            np.negative(snr, out=snr)  # exact; the negative sources are the peaks of −S/N
        objects = sep.extract(snr, float(threshold), mask=unusable, minarea=1, filter_kernel=None)
        for obj in objects:
            ix, iy = int(obj["xpeak"]), int(obj["ypeak"])
            pointFlux, pointFluxErr = fluxAt(iy, ix)
            rows["x"].append(float(obj["x"]) + x0)
            rows["y"].append(float(obj["y"]) + y0)
            rows["flux"].append(pointFlux)
            rows["fluxErr"].append(pointFluxErr)
            rows["snr"].append(float(sign * snr[iy, ix]))
            rows["isNegative"].append(sign < 0)
            rows["npix"].append(int(obj["npix"]))
            rows["xPeak"].append(ix + x0)
            rows["yPeak"].append(iy + y0)
    return Table(
        rows, dtype=[float, float, float, float, float, bool, np.int64, np.int64, np.int64]
    )


@dataclass(frozen=True)
class Association:
    """How many difference-image sources `associate` marked, and with what radius."""

    nTotal: int
    nRefAssociated: int
    nSrcAssociated: int
    nUnassociated: int
    radius: float


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
    >>> task = DetectAndMeasureTask()                                   # doctest: +SKIP
    >>> result = task.run(science, matchedTemplate, difference)         # doctest: +SKIP
    >>> result.diaSources["snr"]                                        # doctest: +SKIP
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
