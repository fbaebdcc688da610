# SPDX-License-Identifier: BSD-3-Clause
"""The convenience layer: `subtract` two images in one call.

`subtract` accepts numpy arrays, `~astropy.nddata.NDData`/`~astropy.nddata.CCDData`,
`MaskedImage` objects or FITS paths (`psfmatch.io.readImage` says how each is read), runs
`ImagePsfMatchTask.subtractMaskedImages`, and wraps what it returns in a
`SubtractionResult` (`psfmatch.result`) that knows how to write itself to FITS and to put its
images in another photometric system. `analyzeTemplate` does the template-only part of that
work once, for a template shared by many science images.
"""

from __future__ import annotations

__all__ = ["SubtractionResult", "analyzeTemplate", "subtract"]

import logging
import operator
import typing
from typing import Any

from . import io as pmio
from ._logcapture import collectWarnings
from ._types import ImageInput, MaskInput, PositionsInput, PsfInput, VarianceInput
from .errors import InvalidInputError
from .image import MaskedImage
from .image_psf_match import ImagePsfMatchConfig, ImagePsfMatchTask, TemplateAnalysis
from .make_kernel import givenFwhm
from .result import SubtractionResult

_log = logging.getLogger("psfmatch.subtract")


def subtractConfig(
    config: ImagePsfMatchConfig | None,
    mode: str | None,
    spatialKernelOrder: int | None,
    spatialBgOrder: int | None,
) -> ImagePsfMatchConfig:
    """A validated copy of ``config`` (or the defaults) with `subtract`'s overrides applied.

    `subtract`, `analyzeTemplate` and `psfmatch.batch` build their configuration with it, so
    that one pair's settings mean the same in each.

    Parameters
    ----------
    config : `ImagePsfMatchConfig` or None
        The base configuration (not modified), or None for the defaults.
    mode : `str` or None
        ``config.mode`` to set, if given.
    spatialKernelOrder, spatialBgOrder : `int` or None
        The active kernel config's spatial orders to set, if given.

    Returns
    -------
    config : `ImagePsfMatchConfig`
        A validated copy.

    Raises
    ------
    InvalidInputError
        A config of another type, a mode or order that is not allowed, or a config that does
        not validate.
    """
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
        if name != "mode" and isinstance(value, bool):
            # operator.index(True) is 1: a flag passed where an order belongs.
            raise InvalidInputError(f"{name}: expected an integer order, got {value!r}")
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


def _wcsSource(given: Any, source: Any, info: dict[str, Any]) -> Any:
    """Where an image's WCS comes from for ``align``: the one given, an NDData's, or the FITS
    headers `psfmatch.io.readImage` read (``info``)."""
    if given is not None:
        return given
    from astropy.nddata import NDData

    return source if isinstance(source, NDData) else info


def analyzeTemplate(
    template: ImageInput,
    *,
    mode: str = "auto",
    config: ImagePsfMatchConfig | None = None,
    templateVariance: VarianceInput | None = None,
    templateMask: MaskInput | None = None,
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
    config = subtractConfig(config, mode, None, None)
    return ImagePsfMatchTask(config=config).analyzeTemplate(tmp)


def subtract(
    science: ImageInput,
    template: ImageInput,
    *,
    mode: str = "auto",
    config: ImagePsfMatchConfig | None = None,
    candidates: PositionsInput | None = None,
    scienceFwhm: float | None = None,
    templateFwhm: float | None = None,
    scienceVariance: VarianceInput | None = None,
    templateVariance: VarianceInput | None = None,
    scienceMask: MaskInput | None = None,
    templateMask: MaskInput | None = None,
    scienceUpper: float | None = None,
    scienceLower: float | None = None,
    templateUpper: float | None = None,
    templateLower: float | None = None,
    spatialKernelOrder: int | None = None,
    spatialBgOrder: int | None = None,
    ignoreOrigins: bool = False,
    sciencePsf: PsfInput | None = None,
    templatePsf: PsfInput | None = None,
    templateAnalysis: TemplateAnalysis | None = None,
    align: str | None = None,
    scienceWcs: Any = None,
    templateWcs: Any = None,
) -> SubtractionResult:
    """Subtract a template from a science image after matching their PSFs.

    Parameters
    ----------
    science, template : path, array, `~astropy.nddata.NDData`, or `MaskedImage`
        The two images, on one parent pixel grid: each at its origin ``xy0`` (from the FITS
        header; (0, 0) for arrays). The template may be larger than the science image or
        offset by whole pixels; it is cut to the science image's box. Never modified.
    mode : {"auto", "convolveTemplate", "convolveScience", "preconvolve", "crossConvolve"}, \
optional
        Which image to convolve; "auto" convolves the one with the narrower PSF, or
        cross-convolves when neither PSF is a blurred version of the other (the reason is in
        ``metadata["autoModeReason"]``); "preconvolve" returns the score image (the science
        image convolved with its PSF, minus the template matched to that); "crossConvolve"
        convolves each image with the other's PSF and matches the results with a small
        kernel (docs/algorithm.md §7.11: for space-telescope epochs at different roll angles,
        or PSFs elongated in different directions). Overrides ``config.mode``.
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
    sciencePsf, templatePsf : 2-D array, FITS path or PSF object, optional
        Each image's PSF (an odd-sized image centred on its middle pixel, a FITS file holding
        one — a WebbPSF file's detector-sampled HDU —, or an object with
        ``computeKernelImage(x, y)``, which may vary over the image), instead of a Gaussian of
        the FWHM: the preconvolution kernel of "preconvolve", what "crossConvolve" convolves
        the other image with (measured from the stars when not given) and the PSF of the
        difference image.
    templateAnalysis : `TemplateAnalysis`, optional
        `analyzeTemplate`'s answer for this template (with the same configuration): its
        variance measurement and detections are reused instead of repeated. The result is
        the same, bit for bit.
    align : {None, "none", "wcs", "wcs-template"}, optional
        For images on two pixel grids (another pointing, rotation, pixel scale or distortion):
        ``"wcs"`` resamples the template onto the science image's grid by the two images'
        WCSs (`psfmatch.align`) and subtracts there; ``"wcs-template"`` resamples the science
        image onto the template's grid instead (the difference is then on the box of the
        template's grid that holds the science image). Flux is conserved, the variance and
        mask are carried, pixels the resampled image does not reach are ``NO_DATA`` (NaN in
        the difference), and origins (``xy0``) play no part. The difference's WCS is
        ``result.wcs``; the alignment is recorded in the ``align*`` metadata.
    scienceWcs, templateWcs : `astropy.wcs.WCS`, FITS header or NDData, optional
        Each image's WCS for ``align``, when it is not read with the image (a FITS path's
        image or primary header, an NDData's ``wcs``).

    Returns
    -------
    result : `SubtractionResult`

    Raises
    ------
    TemplateCoverageError
        The template covers less than ``config.requiredTemplateFraction`` of the science image.
    OriginMismatchError
        The origins place the template where its stars do not lie (with ``align``: the WCSs
        do).
    InvalidInputError
        Unreadable or mismatched inputs, NaNs outside the mask of a `MaskedImage`, a
        variance that is negative, or zero where the unconvolved image is not masked, a valid
        data range that is not two numbers with the lower below the upper, an image
        smaller than the kernel's stamps, an invalid config, mode or spatial order, a
        ``templateAnalysis`` of another template or configuration (or with ``align``), an
        ``align`` value that is not one of the four, or an image without a usable WCS for it.
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
        scienceFwhm = givenFwhm("scienceFwhm", scienceFwhm)
        templateFwhm = givenFwhm("templateFwhm", templateFwhm)
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
        alignGrid = None
        if align is not None:
            from ._align_pair import checkAlign

            alignGrid = checkAlign(align)
        if alignGrid is None and ignoreOrigins and tmp.getXY0() != sci.getXY0():
            tmp = MaskedImage(tmp.image, tmp.mask, tmp.variance, xy0=sci.getXY0())
        if alignGrid is not None and templateAnalysis is not None:
            raise InvalidInputError(
                "templateAnalysis: an analysis of a template as given cannot serve a template "
                "that align resamples; leave one of them out"
            )
        config = subtractConfig(config, mode, spatialKernelOrder, spatialBgOrder)
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
        fitArguments: dict[str, Any] = dict(
            candidateList=candidates,
            templateFwhmPix=templateFwhm,
            scienceFwhmPix=scienceFwhm,
            sciencePsf=sciencePsf,
            templatePsf=templatePsf,
        )
        differenceWcs = None
        if alignGrid is None:
            res = task.subtractMaskedImages(
                tmp, sci, templateAnalysis=templateAnalysis, **fitArguments
            )
        else:
            from ._align_pair import subtractAligned

            res, differenceWcs = subtractAligned(
                task,
                sci,
                tmp,
                _wcsSource(scienceWcs, science, sciInfo),
                _wcsSource(templateWcs, template, tmpInfo),
                str(align),
                **fitArguments,
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
            wcs=differenceWcs,
        )
    result.warnings = list(dict.fromkeys(warned))
    return result
