# SPDX-License-Identifier: BSD-3-Clause
"""The convenience layer: `subtract` two images in one call, and the result it returns.

`subtract` accepts numpy arrays, `~astropy.nddata.NDData`/`~astropy.nddata.CCDData`,
`MaskedImage` objects or FITS paths (`psfmatch.io.readImage` says how each is read), runs
`ImagePsfMatchTask.subtractMaskedImages`, and wraps what it returns in a
`SubtractionResult` that knows how to write itself to FITS. `analyzeTemplate` does the
template-only part of that work once, for a template shared by many science images.
"""

from __future__ import annotations

__all__ = ["SubtractionResult", "analyzeTemplate", "subtract"]

import contextlib
import logging
import math
import operator
import os
import typing
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from astropy.io import fits
from astropy.table import Table

from . import io as pmio
from ._logcapture import collectWarnings
from .errors import InvalidInputError, OutputExistsError
from .image import Mask, MaskedImage
from .image_psf_match import ImagePsfMatchConfig, ImagePsfMatchTask, TemplateAnalysis
from .task import TaskMetadata

_log = logging.getLogger("psfmatch.subtract")

#: HOTPANTS header keywords written with every difference image, and what they hold.
HOTPANTS_KEYS = {
    "KSUM": "kernel sum at the image centre",
    "CONVOL": "convolved: TEMPLATE, IMAGE (science) or PRECONV",
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
        ``"Template"``, ``"Science"`` or ``"Preconvolution"`` (a score image).
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
        """The kernel sum at the image centre (``metadata["spatialKernelSum"]``)."""
        return float(self.metadata["spatialKernelSum"])

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
        good = np.isfinite(d.image) & np.isfinite(d.variance) & (d.variance > 0)
        good &= (d.mask & badBits) == 0
        if not good.any():
            return {"X2NRM": math.nan, "DMEAN": math.nan, "DSIG": math.nan, "DSIGE": math.nan}
        image = d.image[good].astype(np.float64)
        variance = d.variance[good].astype(np.float64)
        return {
            "X2NRM": float(np.mean(image**2 / variance)),
            "DMEAN": float(image.mean()),
            "DSIG": float(image.std()),
            "DSIGE": float(np.sqrt(variance.mean())),
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
            "CONVOL": {"Template": "TEMPLATE", "Preconvolution": "PRECONV"}.get(
                self.convolved, "IMAGE"
            ),
            "NGAUSS": int(mdValue("ALBasisNGauss", 0)),
            "KO": int(kConfig.spatialKernelOrder),
            "BGO": int(kConfig.spatialBgOrder) if kConfig.fitForBackground else 0,
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
            A file cannot be written. Each file is written atomically (see
            `psfmatch.io.writeMaskedImage`), so none is left half-written; if the convolved
            image fails, a difference image this call created is removed again.
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
        existed = os.path.lexists(path)
        pmio.writeMaskedImage(
            path, self.difference, header=header, overwrite=overwrite, extraHdus=self.extraHdus()
        )
        if matchedPath is not None and matched is not None:
            try:
                pmio.writeMaskedImage(matchedPath, matched, header=header, overwrite=overwrite)
            except BaseException:
                # Leave no half of a pair this call created; a replaced file stays replaced.
                if not existed:
                    with contextlib.suppress(OSError):
                        os.unlink(path)
                raise


def _subtractConfig(
    config: ImagePsfMatchConfig | None,
    mode: str | None,
    spatialKernelOrder: int | None,
    spatialBgOrder: int | None,
) -> ImagePsfMatchConfig:
    """A validated copy of ``config`` (or the defaults) with `subtract`'s overrides applied;
    `InvalidInputError` for a config, mode or order that is not allowed."""
    if config is None:
        config = ImagePsfMatchConfig()
    else:
        if not isinstance(config, ImagePsfMatchConfig):
            raise InvalidInputError(
                f"config: expected an ImagePsfMatchConfig, got {type(config).__name__}"
            )
        config = typing.cast(ImagePsfMatchConfig, config.copy())
    settings: tuple[tuple[str, Any, Any], ...] = (
        ("mode", config, mode),
        ("spatialKernelOrder", config.kernel.active, spatialKernelOrder),
        ("spatialBgOrder", config.kernel.active, spatialBgOrder),
    )
    for name, target, value in settings:
        if value is None:
            continue
        try:
            setattr(target, name, value if name == "mode" else operator.index(value))
        except Exception as err:  # pex_config raises FieldValidationError, TypeError, ...
            raise InvalidInputError(f"{name}: {value!r} is not allowed: {err}") from err
    try:
        config.validate()
    except Exception as err:
        raise InvalidInputError(f"config: {err}") from err
    return config


def _readInput(
    which: str,
    source: Any,
    variance: Any,
    mask: Any,
    info: dict[str, Any] | None,
    upper: float | None = None,
    lower: float | None = None,
) -> MaskedImage:
    """`psfmatch.io.readImage` of the ``which`` ("science" or "template") input; a variance
    that cannot be estimated names the keywords of `subtract` that give one."""
    try:
        return pmio.readImage(
            source, variance=variance, mask=mask, upper=upper, lower=lower, info=info, name=which
        )
    except pmio._VarianceEstimateError as err:
        raise InvalidInputError(
            f"{which}: cannot estimate a variance: {err.reason}; pass {which}Variance= (an "
            "array, a constant or a FITS path), or a MaskedImage from "
            "psfmatch.io.readImage(..., gain=, readNoise=)"
        ) from err


def analyzeTemplate(
    template: Any,
    *,
    mode: str = "auto",
    config: ImagePsfMatchConfig | None = None,
    templateVariance: Any = None,
    templateMask: Any = None,
    templateUpper: float | None = None,
    templateLower: float | None = None,
) -> TemplateAnalysis:
    """Do once the work `subtract` does on a template alone (for many science images).

    Parameters
    ----------
    template : path, array, `~astropy.nddata.NDData`, or `MaskedImage`
        The template. Never modified.
    mode, config : optional
        As for `subtract`; the analysis is only accepted by a `subtract` call whose
        configuration agrees on the settings it depends on (``TemplateAnalysis.settings``).
    templateVariance, templateMask, templateUpper, templateLower : optional
        As for `subtract`.

    Returns
    -------
    analysis : `TemplateAnalysis`
        Pass it as ``subtract(..., templateAnalysis=analysis)`` with the same template: the
        result is bit for bit the one without it, minus the template's variance measurement
        and its two source detections.

    Raises
    ------
    InvalidInputError
        An unreadable template or an invalid config.
    """
    tmp = _readInput(
        "template", template, templateVariance, templateMask, None, templateUpper, templateLower
    )
    config = _subtractConfig(config, mode, None, None)
    return ImagePsfMatchTask(config=config).analyzeTemplate(tmp)


def subtract(
    science: Any,
    template: Any,
    *,
    mode: str = "auto",
    config: ImagePsfMatchConfig | None = None,
    candidates: Any = None,
    scienceFwhm: float | None = None,
    templateFwhm: float | None = None,
    scienceVariance: Any = None,
    templateVariance: Any = None,
    scienceMask: Any = None,
    templateMask: Any = None,
    scienceUpper: float | None = None,
    scienceLower: float | None = None,
    templateUpper: float | None = None,
    templateLower: float | None = None,
    spatialKernelOrder: int | None = None,
    spatialBgOrder: int | None = None,
    ignoreOrigins: bool = False,
    sciencePsf: Any = None,
    templatePsf: Any = None,
    templateAnalysis: TemplateAnalysis | None = None,
) -> SubtractionResult:
    """Subtract a template from a science image after matching their PSFs.

    Parameters
    ----------
    science, template : path, array, `~astropy.nddata.NDData`, or `MaskedImage`
        The two images, on one parent pixel grid: each at its origin ``xy0`` (from the FITS
        header; (0, 0) for arrays). The template may be larger than the science image or
        offset by whole pixels; it is cut to the science image's box. Never modified.
    mode : {"auto", "convolveTemplate", "convolveScience", "preconvolve"}, optional
        Which image to convolve; "auto" convolves the one with the narrower PSF;
        "preconvolve" returns the score image (the science image convolved with its PSF,
        minus the template matched to that). Overrides ``config.mode``.
    config : `ImagePsfMatchConfig`, optional
        Every setting; the defaults otherwise. Not modified (a copy is used).
    candidates : table or sequence of (x, y), optional
        Kernel source positions (parent coordinates) instead of sep's detections.
    scienceFwhm, templateFwhm : `float`, optional
        PSF FWHMs in pixels, instead of measuring them.
    scienceVariance, templateVariance, scienceMask, templateMask : optional
        Planes for inputs that lack them (arrays or FITS paths; see `psfmatch.io.readImage`).
    scienceUpper, scienceLower, templateUpper, templateLower : `float`, optional
        Each image's valid data range (HOTPANTS ``-iu -il -tu -tl``): pixels above the upper
        limit get the ``SAT`` mask plane, pixels below the lower one ``BAD`` and ``NO_DATA``,
        so that the fit leaves them out (`psfmatch.io.readImage`'s ``upper`` and ``lower``).
    spatialKernelOrder, spatialBgOrder : `int`, optional
        Override the spatial orders of the kernel and the background.
    ignoreOrigins : `bool`, optional
        Give the template the science image's origin (``xy0``) when they differ: for images
        already on one grid whose headers disagree (`OriginMismatchError` says when the stars
        show this).
    sciencePsf, templatePsf : 2-D array or PSF object, optional
        Each image's PSF (an odd-sized image, or an object with ``computeKernelImage(x, y)``),
        instead of a Gaussian of the FWHM: the preconvolution kernel of "preconvolve" and the
        PSF of the difference image.
    templateAnalysis : `TemplateAnalysis`, optional
        `analyzeTemplate`'s answer for this template (with the same configuration): its
        variance measurement and detections are reused instead of repeated. The result is
        the same, bit for bit.

    Returns
    -------
    result : `SubtractionResult`

    Raises
    ------
    TemplateCoverageError
        The template covers less than ``config.requiredTemplateFraction`` of the science image.
    OriginMismatchError
        The origins place the template where its stars do not lie.
    InvalidInputError
        Unreadable or mismatched inputs, NaNs outside the mask of a `MaskedImage`, a
        variance that is negative, or zero where the unconvolved image is not masked, a valid
        data range that is not two numbers with the lower below the upper, an image
        smaller than the kernel's stamps, an invalid config, mode or spatial order, a
        ``templateAnalysis`` of another template or configuration.
    InputFileNotFoundError
        A path that does not exist.
    InsufficientKernelSourcesError
        Too few stars to fit a kernel.
    NoKernelCandidatesError
        Every star was rejected by the fit.

    Notes
    -----
    Every answer to bad input is listed in ``docs/errors.md``. Pixels of an array, NDData or
    FITS input whose image or variance is NaN or infinite are flagged ``NO_DATA`` by
    `psfmatch.io.readImage` (their values are kept) and take no part in the fit; this is
    logged as a warning and counted in ``metadata["scienceNonFinitePixelsFlagged"]`` and
    ``metadata["templateNonFinitePixelsFlagged"]``. ``metadata["scienceVarianceEstimated"]``
    and ``metadata["templateVarianceEstimated"]`` say whether a variance was estimated.

    Every warning logged during the call (on the ``"psfmatch"`` loggers, in this thread) is
    also kept in ``result.warnings``; `psfmatch.plot.writeReport` shows them at the top of
    the report.
    """
    with collectWarnings() as warned:
        sciInfo: dict[str, Any] = {}
        tmpInfo: dict[str, Any] = {}
        sci = _readInput(
            "science", science, scienceVariance, scienceMask, sciInfo, scienceUpper, scienceLower
        )
        tmp = _readInput(
            "template",
            template,
            templateVariance,
            templateMask,
            tmpInfo,
            templateUpper,
            templateLower,
        )
        if ignoreOrigins and tmp.getXY0() != sci.getXY0():
            tmp = MaskedImage(tmp.image, tmp.mask, tmp.variance, xy0=sci.getXY0())
        config = _subtractConfig(config, mode, spatialKernelOrder, spatialBgOrder)
        task = ImagePsfMatchTask(config=config)
        for which, info in (("science", sciInfo), ("template", tmpInfo)):
            # The documented fallback for NaN/inf pixels outside the mask: readImage flagged
            # them NO_DATA; say so loudly and keep the count with the results.
            nNonFinite = int(info.get("nNonFinite", 0))
            task.metadata[f"{which}NonFinitePixelsFlagged"] = nNonFinite
            if nNonFinite:
                _log.warning(
                    "%s: %d pixel(s) with a NaN or infinite image or variance and no mask bit "
                    "were flagged NO_DATA and take no part in the fit",
                    which,
                    nNonFinite,
                )
            estimated = bool(info.get("varianceEstimated", False))
            task.metadata[f"{which}VarianceEstimated"] = estimated
        res = task.subtractMaskedImages(
            tmp,
            sci,
            candidateList=candidates,
            templateFwhmPix=templateFwhm,
            scienceFwhmPix=scienceFwhm,
            sciencePsf=sciencePsf,
            templatePsf=templatePsf,
            templateAnalysis=templateAnalysis,
        )
        result = SubtractionResult(
            difference=res.subtractedMaskedImage,
            matched=res.matchedImage,
            kernel=res.psfMatchingKernel,
            background=res.backgroundModel,
            candidates=res.kernelSources,
            metadata=task.metadata,
            convolved=res.convolvedImage,
            config=config,
            rawDifference=res.subtractedMaskedImageRaw,
            differencePsf=res.differencePsf,
            diaSources=res.diaSources,
            kernelCellSet=res.kernelCellSet,
        )
    result.warnings = list(dict.fromkeys(warned))
    return result
