# SPDX-License-Identifier: BSD-3-Clause
"""`SubtractionResult`: what `psfmatch.subtract` found, written to FITS with HOTPANTS' header
keywords, and put in another photometric system with `SubtractionResult.inUnits`."""

from __future__ import annotations

__all__ = ["HOTPANTS_KEYS", "UNITS", "SubtractionResult"]

import dataclasses
import logging
import math
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from astropy.io import fits
from astropy.table import Table

from . import io as pmio
from ._logcapture import collectWarnings
from .errors import InvalidInputError, OutputExistsError, PsfMatchError
from .image import Mask, MaskedImage
from .image_psf_match import ImagePsfMatchConfig
from .io.writing import _writingTogether
from .task import TaskMetadata

_log = logging.getLogger("psfmatch.subtract")

#: The photometric systems `SubtractionResult.inUnits` knows.
UNITS = ("science", "template", "unconvolved")

#: HOTPANTS header keywords written with every difference image, and what they hold.
HOTPANTS_KEYS = {
    "KSUM": "kernel sum at the image centre",
    "CONVOL": "TEMPLATE, IMAGE (science), PRECONV or CROSS",
    "NGAUSS": "Gaussians in the AL basis (0: delta functions)",
    "KO": "spatial order of the kernel variation",
    "BGO": "spatial order of the differential background",
    "NSTAMP": "kernel candidates used in the final fit",
    "SSSIG": "mean over stamps of rms(D/sigma), spatial model",
    "SSSCAT": "std over stamps of rms(D/sigma)",
    "X2NRM": "mean of (D/sigma)^2 over unmasked pixels",
    "DMEAN": "mean of D over unmasked pixels",
    "DSIG": "standard deviation of D over unmasked pixels",
    "DSIGE": "expected std of D: sqrt(mean variance)",
}


@dataclass
class SubtractionResult:
    """What `subtract` found.

    Attributes
    ----------
    difference : `MaskedImage`
        D, its variance and its mask (see `psfmatch.image_psf_match` for the conventions).
    matched : `MaskedImage` or None
        The convolved image: the template in ``convolveTemplate`` mode, else the science image.
        None if ``config.keepMatchedImage`` was off (its planes became ``difference``'s).
    kernel : `LinearCombinationKernel`
        The spatially varying matching kernel K(x, y).
    background : `SpatialBackground`
        The differential background b(x, y).
    candidates : `astropy.table.Table`
        The kernel sources with their ``status``, ``kernelSum`` and ``chi2``; with
        ``calculateKernelUncertainty`` also the 1-σ ``kernelSumErr`` and (background fitted)
        ``backgroundErr`` of each source's own fit.
    metadata : `TaskMetadata`
        The task's metadata (``spatialKernelSum``, ``spatialConditionNum``, ...).
    convolved : `str`
        ``"Template"``, ``"Science"``, ``"Preconvolution"`` (a score image) or
        ``"CrossConvolution"`` (``mode="crossConvolve"``: the matched image is then
        ``K ⊗ (P_S ⊗ T)``, D is in science units and the kernel sum is the science/template
        flux ratio, as when the template is convolved).
    config : `ImagePsfMatchConfig`
        The configuration used.
    rawDifference : `MaskedImage` or None
        The difference before decorrelation (the same object as ``difference`` without it).
    differencePsf : `numpy.ndarray` or None
        Unit-sum image of the PSF of ``difference`` (after decorrelation, if any).
    kernelCellSet : `SpatialCellSet` or None
        The kernel candidates with their stamps and own fits (the figures of `psfmatch.plot`
        draw them).
    diaSources : `astropy.table.Table` or None
        Sources detected in the difference, positive and negative, with ``x``, ``y``,
        ``flux``, ``fluxErr``, ``snr``, ``isNegative``, ``refAssociated`` (at a template
        detection) and ``srcAssociated`` (at a kernel source); their counts are the
        ``NFalsePositives*`` metadata. None if detection was off.
    wcs : `astropy.wcs.WCS` or None
        The WCS of ``difference``'s pixels when the images were aligned by their WCSs
        (``subtract(..., align=...)``); written with the difference image. None otherwise.
    warnings : `list` [`str`]
        The warnings psfmatch logged while this result was made (reading the inputs, the fit,
        the decorrelation, ...), in order, each once: a poorly constrained kernel, a variance
        that was not rescaled, conflicting origins in a file, a stale checksum. Empty for a
        clean run. Only this thread's records count, so runs in other threads never mix in.
    """

    difference: MaskedImage
    matched: MaskedImage | None
    kernel: Any
    background: Any
    candidates: Table
    metadata: TaskMetadata
    convolved: str
    config: ImagePsfMatchConfig = field(repr=False)
    rawDifference: MaskedImage | None = field(default=None, repr=False)
    differencePsf: np.ndarray | None = field(default=None, repr=False)
    diaSources: Table | None = None
    kernelCellSet: Any = field(default=None, repr=False)
    warnings: list[str] = field(default_factory=list)
    wcs: Any = field(default=None, repr=False)

    @property
    def image(self) -> np.ndarray:
        """The difference image's pixels."""
        return self.difference.image

    @property
    def variance(self) -> np.ndarray:
        return self.difference.variance

    @property
    def mask(self) -> np.ndarray:
        return self.difference.mask

    @property
    def kernelSum(self) -> float:
        """The raw sum of the matching kernel at the image centre
        (``metadata["spatialKernelSum"]``, FITS ``KSUM``): the flux of the convolved image
        relative to the other one. It is the science/template flux ratio when the template
        was convolved, its inverse when the science image was (``convolved == "Science"``,
        which ``mode="auto"`` chooses when the science PSF is the sharper); `fluxScale` is
        that ratio in every mode."""
        return float(self.metadata["spatialKernelSum"])

    @property
    def fluxScale(self) -> float:
        """Science flux / template flux, in every mode: the kernel sum when the template (or,
        for a score image or cross-convolution, the template side) was convolved, its inverse
        when the science image was. A source of template flux F has science flux
        ``fluxScale · F``."""
        kappa = self.kernelSum
        return kappa if self.convolved != "Science" else 1.0 / kappa

    @property
    def differenceUnits(self) -> str:
        """The photometric system of ``difference``: ``"science"`` (as `subtract` returns
        it) or ``"template"`` (``metadata["differenceUnits"]``, set by `inUnits`)."""
        return (
            str(self.metadata["differenceUnits"])
            if "differenceUnits" in self.metadata
            else "science"
        )

    @property
    def matchedUnits(self) -> str:
        """The photometric system of ``matched``: as `subtract` returns it, the units of the
        image it was matched to (``"science"`` when the template was convolved, else
        ``"template"``); ``metadata["matchedUnits"]`` once `inUnits` has set it."""
        if "matchedUnits" in self.metadata:
            return str(self.metadata["matchedUnits"])
        return "template" if self.convolved == "Science" else "science"

    def inUnits(self, units: str) -> SubtractionResult:
        """This result with its images in another photometric system (HOTPANTS ``-n``).

        The kernel sum κ relates the two images' fluxes: a source of flux F in the template
        has flux κF in the science image when the template was convolved (and F/κ when the
        science image was). The images of the answer are this result's rescaled by the
        science/template flux ratio, or its inverse, taken at the image centre: pixels by the
        factor, variances by its square.

        Parameters
        ----------
        units : {"science", "template", "unconvolved"}
            The photometric system of the answer's ``difference`` and ``matched`` images: the
            science image's, the template's, or that of the image that was not convolved (the
            science image's when the template was convolved or for a score image, else the
            template's). Those are HOTPANTS' ``-n i``, ``-n t`` and ``-n u``.

        Returns
        -------
        result : `SubtractionResult`
            A new result whose ``difference``, ``rawDifference`` and ``matched`` are in
            ``units``, with ``diaSources``' ``flux`` and ``fluxErr`` to match, and
            ``metadata["differenceUnits"]`` and ``metadata["matchedUnits"]`` set to the
            system (``"science"`` or ``"template"``), so that `writeFits` records it and the
            header statistics (`statistics`) follow the rescaled pixels. Everything else is
            this result's: ``kernel``, ``kernelSum`` (``KSUM``), ``background`` and
            ``candidates`` stay as fitted, and an image that needs no rescaling is shared,
            not copied. This result is not modified.

        Raises
        ------
        InvalidInputError
            ``units`` is not one of the three.
        PsfMatchError
            The kernel sum is not a positive number, so it cannot rescale the images.

        Notes
        -----
        In template units the difference of a template-convolving fit is
        ``(S - K ⊗ T - b) / κ``, its variance divided by κ², and a source's flux in it is its
        template flux: HOTPANTS' ``-n t``. Should the kernel sum vary across the image (it
        does not with the Alard-Lupton basis), its value at the centre is used and a warning
        gives its range at the corners (also in the answer's ``warnings``). The answer knows
        its units (`differenceUnits`, `matchedUnits`), so calls compose:
        ``r.inUnits("template").inUnits("science")`` has ``r``'s images, to rounding.
        """
        if units not in UNITS:
            raise InvalidInputError(
                f"units: expected one of {', '.join(repr(u) for u in UNITS)}, got {units!r}"
            )
        # A score image (Preconvolution) is in science units too: its kernel maps the template
        # onto the PSF-filtered science image, so its sum is the science/template flux ratio.
        convolvedTemplate = self.convolved != "Science"
        target = units
        if target == "unconvolved":
            target = "science" if convolvedTemplate else "template"
        kappa = self.kernelSum
        if not (math.isfinite(kappa) and kappa > 0):
            raise PsfMatchError(f"the kernel sum {kappa:g} cannot rescale the images")
        ratio = kappa if convolvedTemplate else 1.0 / kappa  # science flux / template flux
        factors = {("science", "template"): 1.0 / ratio, ("template", "science"): ratio}
        dFactor = factors.get((self.differenceUnits, target), 1.0)
        mFactor = factors.get((self.matchedUnits, target), 1.0)
        warned: list[str] = []
        if dFactor != 1.0 or mFactor != 1.0:
            with collectWarnings() as warned:
                self._warnIfKernelSumVaries(kappa)
            _log.info(
                "%s units: difference scaled by %.6g, convolved image by %.6g",
                target,
                dFactor,
                mFactor,
            )
        difference = _scaled(self.difference, dFactor)
        raw = self.rawDifference
        if raw is not None:
            raw = difference if raw is self.difference else _scaled(raw, dFactor)
        diaSources = self.diaSources
        if diaSources is not None and dFactor != 1.0:
            diaSources = Table(diaSources, copy=True)
            for name in ("flux", "fluxErr"):
                if name in diaSources.colnames:
                    diaSources[name] *= dFactor
        metadata = self.metadata.copy()
        metadata["differenceUnits"] = target
        metadata["matchedUnits"] = target
        return dataclasses.replace(
            self,
            difference=difference,
            matched=None if self.matched is None else _scaled(self.matched, mFactor),
            rawDifference=raw,
            diaSources=diaSources,
            metadata=metadata,
            warnings=list(dict.fromkeys([*self.warnings, *warned])),
        )

    def _warnIfKernelSumVaries(self, kappa: float) -> None:
        bbox = self.difference.getBBox()
        sums = [
            float(self.kernel.getSum(x, y))
            for x in (bbox.getMinX(), bbox.getMaxX())
            for y in (bbox.getMinY(), bbox.getMaxY())
        ]
        if max(abs(s / kappa - 1.0) for s in sums) > 1e-3:
            _log.warning(
                "the kernel sum varies across the image (%.5g to %.5g at the corners); the "
                "images are rescaled by its value at the centre, %.6g",
                min(sums),
                max(sums),
                kappa,
            )

    def _centre(self) -> tuple[float, float]:
        bbox = self.difference.getBBox()
        return (
            0.5 * (bbox.getMinX() + bbox.getMaxX()),
            0.5 * (bbox.getMinY() + bbox.getMaxY()),
        )

    def kernelImage(self, x: float | None = None, y: float | None = None) -> np.ndarray:
        """The (unnormalised) kernel image at parent position (x, y), by default the centre."""
        xc, yc = self._centre()
        image, _ = self.kernel.computeImage(xc if x is None else x, yc if y is None else y)
        return np.asarray(image)

    def statistics(self) -> dict[str, float]:
        """Pixel statistics of the difference over usable pixels: finite, positive variance,
        none of the planes of ``config.diaSourceBadMaskPlanes`` (the pixels the detection in D
        uses too)."""
        d = self.difference
        badBits = Mask.getPlaneBitMask(list(self.config.diaSourceBadMaskPlanes), skipUnknown=True)
        good = _usable(d, badBits)
        nGood = int(np.count_nonzero(good))
        if not nGood:
            return {"X2NRM": math.nan, "DMEAN": math.nan, "DSIG": math.nan, "DSIGE": math.nan}
        # Each figure is the reduction numpy always made of the same float64 array of the good
        # pixels, so the header values do not change by a bit: one such array at a time, in
        # one buffer, rather than four (9 bytes a pixel beside the difference with the boolean
        # map, rather than ~33, when every pixel is good).
        values = _goodValues(d.image, good, nGood)
        mean = values.mean()
        # image.std() as numpy computes it: the mean square of the deviations from the mean.
        np.subtract(values, mean, out=values)
        np.square(values, out=values)
        sigma = np.sqrt(values.mean())
        chi2 = _goodValues(d.image, good, nGood, divideBy=d.variance, out=values)
        x2nrm = chi2.mean()
        expected = np.sqrt(_goodValues(d.variance, good, nGood, out=values).mean())
        return {
            "X2NRM": float(x2nrm),
            "DMEAN": float(mean),
            "DSIG": float(sigma),
            "DSIGE": float(expected),
        }

    def header(self) -> fits.Header:
        """FITS cards: the HOTPANTS keywords (`HOTPANTS_KEYS`, each also with HOTPANTS's
        region suffix ``00``) followed by the task metadata under ``HIERARCH PSFMATCH``."""
        md = self.metadata
        kConfig = self.config.kernel.active

        def mdValue(key: str, default: Any = math.nan) -> Any:
            return md[key] if key in md else default

        stats = self.statistics()
        values: dict[str, Any] = {
            "KSUM": self.kernelSum,
            "CONVOL": {
                "Template": "TEMPLATE",
                "Preconvolution": "PRECONV",
                "CrossConvolution": "CROSS",
            }.get(self.convolved, "IMAGE"),
            "NGAUSS": int(mdValue("ALBasisNGauss", 0)),
            # The orders the fit used (lowered from the config's when the stars could not
            # carry them, docs/algorithm.md §5.8).
            "KO": int(mdValue("spatialKernelOrderUsed", kConfig.spatialKernelOrder)),
            "BGO": int(mdValue("spatialBgOrderUsed", kConfig.spatialBgOrder))
            if kConfig.fitForBackground
            else 0,
            "NSTAMP": int(mdValue("nCandidatesGood", 0)),
            "SSSIG": mdValue("metric_MEAN.SPATIAL_residualStd"),
            "SSSCAT": mdValue("metric_STDEV.SPATIAL_residualStd"),
            **stats,
        }
        header = fits.Header()
        for key, value in values.items():
            card = "nan" if isinstance(value, float) and not math.isfinite(value) else value
            header[key] = (card, HOTPANTS_KEYS[key])
            header[f"{key}00"] = (card, "HOTPANTS region-00 form of " + key)
        header.extend(pmio.metadataToHeader(md, prefix="psfmatch."))
        return header

    def extraHdus(self) -> list[Any]:
        """The kernel at the centre, its basis and spatial coefficients, the background
        coefficients and the candidate table, as FITS extensions."""
        kernelHdu = fits.ImageHDU(self.kernelImage(), name="KERNEL")
        xc, yc = self._centre()
        kernelHdu.header["KX"] = (xc, "parent x where the kernel was evaluated")
        kernelHdu.header["KY"] = (yc, "parent y where the kernel was evaluated")
        kernelHdu.header["KSUM"] = (self.kernelSum, "kernel sum")
        basis = np.array([np.asarray(k.getImage()) for k in self.kernel.getBasisList()])
        basisHdu = fits.ImageHDU(basis, name="KERNEL_BASIS")
        function = self.kernel.getSpatialFunction()
        coeffHdu = fits.ImageHDU(
            np.asarray(self.kernel.getSpatialParameters()), name="KERNEL_COEFFS"
        )
        for hdu, fn in ((coeffHdu, function), (None, self.background.getSpatialFunction())):
            target = coeffHdu.header if hdu is not None else None
            if target is None:
                continue
            bbox = fn.getBBox()
            target["SPTYPE"] = (str(fn.getType()).split(".")[-1], "spatial function family")
            target["SPORDER"] = (fn.getOrder(), "spatial order")
            target["SPBBOX"] = (
                f"{bbox.getMinX()} {bbox.getMinY()} {bbox.getMaxX()} {bbox.getMaxY()}",
                "minX minY maxX maxY of the function's box",
            )
        bgFunction = self.background.getSpatialFunction()
        bgHdu = fits.ImageHDU(np.asarray(self.background.getParameters()), name="BACKGROUND")
        bgHdu.header["SPTYPE"] = str(bgFunction.getType()).split(".")[-1]
        bgHdu.header["SPORDER"] = bgFunction.getOrder()
        candidates = Table(self.candidates, copy=True)
        candidates.meta.clear()  # the selection counts are in the metadata already
        table = fits.table_to_hdu(candidates)
        table.name = "CANDIDATES"
        return [kernelHdu, basisHdu, coeffHdu, bgHdu, table]

    def writeFits(
        self,
        path: str | os.PathLike[str],
        *,
        matchedPath: str | os.PathLike[str] | None = None,
        overwrite: bool = False,
    ) -> None:
        """Write the difference image (LSST MaskedImage layout, `header`, `extraHdus`).

        Parameters
        ----------
        path : path
            The difference image file.
        matchedPath : path, optional
            Also write the convolved image here.
        overwrite : `bool`, optional
            Replace existing files; otherwise an existing file is an `OutputExistsError`,
            raised before either file is written.

        Raises
        ------
        InvalidInputError
            ``matchedPath`` is given but the result has no convolved image.
        OutputExistsError
            A file exists and ``overwrite`` is false.
        PsfMatchIOError
            A file cannot be written. The two files are written as one unit: to temporaries
            beside them, moved into place together only when both are complete (see
            `psfmatch.io.writeMaskedImage`); a failure or an interrupt leaves the old files as
            they were and no temporary.
        """
        matched = self.matched
        if matchedPath is not None and matched is None:
            raise InvalidInputError(
                "matchedPath: this result has no convolved image (config.keepMatchedImage "
                "was off); nothing was written"
            )
        if matchedPath is not None and not overwrite and os.path.lexists(matchedPath):
            # Refuse before writing anything, so that no half of the pair is left behind.
            raise OutputExistsError(
                f"output file {str(matchedPath)!r} exists; pass overwrite=True to replace it",
                str(matchedPath),
            )
        header = self.header()
        # One unit: both files are written to temporaries and moved into place together, so a
        # failure or an interrupt in either leaves the old files as they were.
        with _writingTogether():
            pmio.writeMaskedImage(
                path,
                self.difference,
                header=header,
                overwrite=overwrite,
                extraHdus=self.extraHdus(),
                wcs=self.wcs,
            )
            if matchedPath is not None and matched is not None:
                pmio.writeMaskedImage(
                    matchedPath, matched, header=header, overwrite=overwrite, wcs=self.wcs
                )


_ROWS = 256
"""Rows of an image handled at a time by `_usable` and `_goodValues`: their temporaries stay a
few megabytes."""


def _usable(d: MaskedImage, badBits: int) -> np.ndarray:
    """Where the image and variance are finite, the variance positive and no bit of
    ``badBits`` set: built a block of rows at a time, without image-sized temporaries."""
    good = np.empty(d.image.shape, dtype=bool)
    for start in range(0, d.image.shape[0], _ROWS):
        rows = slice(start, start + _ROWS)
        image, variance = d.image[rows], d.variance[rows]
        block = np.isfinite(image) & np.isfinite(variance) & (variance > 0)
        block &= (d.mask[rows] & badBits) == 0
        good[rows] = block
    return good


def _goodValues(
    plane: np.ndarray,
    good: np.ndarray,
    nGood: int,
    *,
    divideBy: np.ndarray | None = None,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """``plane[good].astype(np.float64)`` (the same values in the same order), or with
    ``divideBy`` ``plane[good].astype(np.float64) ** 2 / divideBy[good].astype(np.float64)``,
    filled into ``out`` a block of rows at a time, without whole compressed copies."""
    result = np.empty(nGood, dtype=np.float64) if out is None else out
    filled = 0
    for start in range(0, plane.shape[0], _ROWS):
        rows = slice(start, start + _ROWS)
        where = good[rows]
        target = result[filled : filled + int(np.count_nonzero(where))]
        target[...] = plane[rows][where]
        if divideBy is not None:
            np.square(target, out=target)
            target /= divideBy[rows][where]
        filled += target.size
    return result


def _scaled(mi: MaskedImage, factor: float) -> MaskedImage:
    """``mi`` with its image times ``factor`` and its variance times ``factor²`` (in the
    image's precision, as the command line has always written them), all three planes new;
    or ``mi`` itself, shared as a whole, for a factor of 1."""
    if factor == 1.0:
        return mi
    dtype = mi.image.dtype.type
    return MaskedImage(
        mi.image * dtype(factor),
        mi.mask.copy(),
        mi.variance * dtype(factor * factor),
        xy0=mi.getXY0(),
    )
