# SPDX-License-Identifier: BSD-3-Clause
"""Subtraction: convolve one image with the matching kernel and subtract, in one of the modes.

`ImagePsfMatchTask` is the reference's former image-level API, psfmatch's main task
(docs/decisions.md D5): it checks and places the inputs (`psfmatch._inputs`), fits the kernel
(`MakeKernelTask`, its base), convolves, subtracts, decorrelates (`psfmatch.decorrelate`) and
detects in D (`psfmatch.detect_and_measure`). Each mode is a small class (`_ConvolveTemplate`,
`_ConvolveScience`, and the score image `_Preconvolve` as a subclass of the first) that says
which image is convolved and what the difference's PSF is; `AlardLuptonSubtractTask` and
`AlardLuptonPreconvolveSubtractTask` are the reference's current task names over the same code
(`psfmatch.alard_lupton`).

Conventions
-----------
``mode="convolveTemplate"`` (the default) fits K and b with ``S ≈ K ⊗ T + b`` and returns

    D = S − (K ⊗ T + b),   Var(D) = Var(S) + K² ⊗ Var(T),   mask(D) = mask(S) | dilated mask(T)

in the science image's units and PSF. ``mode="convolveScience"`` fits ``T ≈ K ⊗ S + b`` and
returns the difference in the science image's units as well,

    D = (K ⊗ S + b − T) / κ,   Var(D) = (K² ⊗ Var(S) + Var(T)) / κ²,

with κ the kernel sum at the image centre; D then has the template's PSF. ``mode="auto"``
convolves the image with the narrower PSF (the template when the FWHMs are equal), so the
kernel never has to deconvolve — unless the two PSFs, measured from the stars or given, are
not nested (neither is a blurred version of the other, `psfmatch._nesting`): then it
cross-convolves, and ``autoModeReason`` says why either way. With ``doSubtractBackground``
off, b is fitted but left in D.

``mode="crossConvolve"`` (docs/algorithm.md §7.11, `psfmatch._cross`) convolves the science
image with the template's PSF and the template with the science image's (given, or measured
from isolated stars), fits a small kernel with ``P_T ⊗ S ≈ K ⊗ (P_S ⊗ T) + b`` and returns

    D = P_T ⊗ S − K ⊗ P_S ⊗ T − b,   Var(D) = P_T² ⊗ Var(S) + K² ⊗ P_S² ⊗ Var(T),

in science units with the PSF ``P_S ⊗ P_T``, NaN within a PSF half-width of the border; its
decorrelation is `psfmatch.decorrelate_cross`'s.

Pixels within a kernel half-width of the edge cannot be convolved: in the matched image they
are copies of the input with the ``EDGE`` bit; in the difference they are NaN with variance
+inf and the ``EDGE`` and ``NO_DATA`` bits. Input pixels that are NaN or infinite must carry a
mask bit; they are treated as 0 in the convolution, get ``NO_DATA``, and every output pixel
they reach carries their bits: NaN in, NaN out, as every ``NO_DATA`` pixel of D is NaN with
+inf variance. Absurd finite values (`psfmatch._hostile.absurdPixels`) are treated alike,
flagged ``BAD`` and ``NO_DATA`` with a warning. Images whose sky noise is far from ~8 (in
physical units, ×1e-10, or ×1e10) are worked on divided by a power of two and the results
given back in their units (`psfmatch._hostile.unitScale`), so that no absolute constant of
the fit or of sep decides anything. A forced mode that convolves the image with the broader
PSF warns (metadata ``deconvolution``). A difference whose sky is far from its noise
(``differenceSkyChi2`` above ``maxDifferenceChi2``) raises `PoorSubtractionError` unless
``allowPoorSubtraction``.

``mode="preconvolve"`` makes the *score image* (docs/algorithm.md §7.4): the science image is
first convolved with its own PSF (reflected, unit sum: a matched filter), the kernel is fitted
with ``P ⊗ S ≈ K ⊗ T + b`` on the stars of the inner box (the science box shrunk by P's
half-width), and

    score = P ⊗ S − (K ⊗ T + b),   Var = P² ⊗ Var(S) + K² ⊗ Var(T),

is decorrelated in score mode: a map of point-source likelihood whose peak over its noise is
the PSF-fit S/N of a point source. Pixels outside the inner box are NaN with ``EDGE`` and
``NO_DATA``. The science PSF is a given image or PSF object (``sciencePsf``) or a pixel-
integrated Gaussian of the measured science FWHM.

Decorrelation (``doDecorrelation``, on by default as in the reference; `DecorrelateALKernelTask`)
whitens the noise that the convolution correlated, with a filter of unit DC gain (fluxes are
unchanged), and filters the difference image's PSF the same way (``differencePsf``). The
undecorrelated difference is kept as ``subtractedMaskedImageRaw``.

Difference-image sources (``doDetectDiaSources``): peaks of the PSF-matched-filter S/N of D
(of D/σ itself for a score image) above ``diaSourceThreshold``, positive and negative, are
returned as ``diaSources`` and associated within ``diaSourceMatchRadius`` FWHMs (of the
difference PSF) with the template's detections (``refAssociated``, standing for the
reference's catalogue of known objects) and with the science image's kernel sources
(``srcAssociated``: the stars the kernel was fitted on, as the reference's ``selectSources``).
A real transient is in neither; static stars that leave residuals are in one or both.

Metadata (besides `PsfMatchTask`'s): ``templatePsfSize``, ``sciencePsfSize`` (FWHM, pixels),
``convolvedExposure`` ("Template", "Science", "Preconvolution" or "CrossConvolution"),
``preconvolvedSciencePsfSize``, with ``mode="auto"`` ``autoMode`` and ``autoModeReason`` (and
the ``psfNesting*`` figures when the PSFs were compared), for cross-convolution the
``cross*`` keys (docs/algorithm.md §7.11),
``nPsfSources`` (kernel candidates), ``templateCoveragePercent``,
``scaleTemplateVarianceFactor``, ``scaleScienceVarianceFactor``, the ``ALBasis*`` keys of the
basis; with decorrelation ``decorrelationSvar``, ``decorrelationTvar`` (the clipped mean
variances it used), ``decorrelationKernelSum``, ``decorrelated`` (False if the variances were
unusable) and ``differencePsfSize`` (FWHM of the difference PSF from its second moments);
with detection ``NFalsePositivesTotal``,
``NFalsePositivesRefAssociated``, ``NFalsePositivesSrcAssociated`` (a source may be both) and
``NFalsePositivesUnassociated``.

Debugging switches (`psfmatch.debug`, module name ``"psfmatch.image_psf_match"``, as the
reference's ImagePsfMatchTask): ``display`` with ``displayDiffIm`` draws the difference image
with its mask planes overlaid at ``maskTransparency`` (0 opaque to 100 invisible) and the kernel
candidates marked (the rejected ones too with ``showBadCandidates``), by
`psfmatch.plot.plotDifference`; ``plotDir`` says where to save it when there is no display.
The figures of the fit itself are switched on for ``"psfmatch.psf_match"`` (`PsfMatchTask`).
"""

from __future__ import annotations

__all__ = ["ImagePsfMatchConfig", "ImagePsfMatchTask", "TemplateAnalysis"]

import math
from typing import Any

import lsst.pex.config as pexConfig
import numpy as np
from astropy.table import Table
from lsst.utils.timer import timeMethod

from . import _core
from . import debug as psfmatchDebug
from ._cross import chooseAutoMode, crossPsfFields
from ._diffpsf import unconvolvedPsfImages
from ._hostile import blankNoData, checkDirection, checkQuality, toUnits
from ._image_config import ImagePsfMatchConfig
from ._inputs import (
    InputPreparation,
    TemplateAnalysis,
    _contiguous,
    _varianceScaleFactor,
)
from ._masks import dilate
from ._modes import _MODES, _Subtraction
from ._placement import cropView
from ._psffield import readPsfInput
from ._psfutil import _psfFwhm, _psfImage
from .convolution import _convolveChecked
from .decorrelate import DecorrelateALKernelTask
from .detect_and_measure import associate, detectDifferenceSources, recordAssociation
from .errors import InvalidInputError
from .image import Mask, MaskedImage
from .make_kernel import MakeKernelTask
from .task import Struct

# The config's public home is this module: saved configs (``config.save``) and pickles name
# psfmatch.subtract_images.ImagePsfMatchConfig, as they did before it moved to _image_config.
ImagePsfMatchConfig.__module__ = __name__

#: The module name of the ``displayDiffIm`` debugging switch: the reference's module of
#: ImagePsfMatchTask, whatever module now holds the code.
_DEBUG_NAME = "psfmatch.image_psf_match"


class ImagePsfMatchTask(MakeKernelTask, InputPreparation):
    """Match the PSFs of two masked images on one pixel grid, and subtract them.

    See the module docstring for the conventions; `PsfMatchTask` for the fit and its metadata.

    Examples
    --------
    >>> from psfmatch.simulate import simulatePair
    >>> sim = simulatePair((256, 256), nStars=60, seed=0)  # flux scale 1.25
    >>> task = ImagePsfMatchTask()
    >>> result = task.subtractMaskedImages(sim.template, sim.science)
    >>> result.subtractedMaskedImage.image.shape
    (256, 256)
    >>> abs(result.psfMatchingKernel.getSum(128.0, 128.0) - 1.25) < 0.03
    True
    """

    ConfigClass = ImagePsfMatchConfig
    _DefaultName = "imagePsfMatch"
    config: ImagePsfMatchConfig
    decorrelate: DecorrelateALKernelTask

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        try:
            self.config.validate()
        except (pexConfig.FieldValidationError, ValueError, TypeError) as err:
            raise InvalidInputError(f"config: {err}") from err
        self.makeSubtask("decorrelate")

    def _fit(
        self,
        templateMaskedImage: Any,
        scienceMaskedImage: Any,
        candidateList: Any,
        templateFwhmPix: float | None,
        scienceFwhmPix: float | None,
        sciencePsf: Any = None,
        templatePsf: Any = None,
        templateAnalysis: Any = None,
    ) -> _Subtraction:
        """Everything up to and including the kernel fit."""
        analysis: TemplateAnalysis | None = None
        with self.timer("prepare"):
            fullTemplate, science, placement, unitScale = self._prepareInputs(
                templateMaskedImage, scienceMaskedImage
            )
            kConfig = self.kConfig
            scaled = kConfig.kernelBasisSet == "alard-lupton" and kConfig.scaleByFwhm
            self._checkStampFits(
                science,
                int(kConfig.kernelSizeMin if scaled else kConfig.kernelSize),
                "smallest kernel the config allows" if scaled else "kernel",
            )
            if templateAnalysis is not None:
                analysis = self._checkTemplateAnalysis(templateAnalysis, templateMaskedImage)
            # Placed on the science box, the template's variance factor is still measured on
            # the whole template, as analyzeTemplate does (the same answer with or without).
            scaledTemplate = fullTemplate if placement is None else placement.wide
            templateFactor: float | None = None
            if self.config.doScaleVariance:
                factor = None if analysis is None else analysis.varianceScaleFactor
                if factor is None and placement is not None:
                    factor = _varianceScaleFactor(fullTemplate, self._badBits())
                templateFactor = self._scaleVariance(scaledTemplate, "Template", factor)
                self._scaleVariance(science, "Science")
            templateWide: MaskedImage | None = None
            if placement is None:
                template = fullTemplate
            else:
                templateWide = scaledTemplate
                template = _contiguous(cropView(templateWide, science.getBBox()))

        sizes = self.measurePsfSizes(
            template, science, candidateList, templateFwhmPix, scienceFwhmPix
        )
        sciencePsf = readPsfInput(sciencePsf, "sciencePsf")
        templatePsf = readPsfInput(templatePsf, "templatePsf")
        modeName = self.config.mode
        crossPsfs = None
        if modeName == "auto":
            modeName, crossPsfs = chooseAutoMode(
                self, template, science, sizes, sciencePsf, templatePsf, candidateList
            )
        mode = _MODES[modeName]
        checkDirection(self, mode.name, sizes)
        if mode.name == "crossConvolve" and crossPsfs is None:
            crossPsfs = crossPsfFields(
                self, template, science, sizes, sciencePsf, templatePsf, candidateList
            )
        bbox = science.getBBox()
        xc = 0.5 * (bbox.getMinX() + bbox.getMaxX())
        yc = 0.5 * (bbox.getMinY() + bbox.getMaxY())
        sciencePsfImage = _psfImage(sciencePsf, sizes.science, xc, yc, "sciencePsf")
        templatePsfImage = _psfImage(templatePsf, sizes.template, xc, yc, "templatePsf")
        if mode.name != "crossConvolve":  # which measures both PSF fields itself
            sciencePsfImage, templatePsfImage = unconvolvedPsfImages(
                self,
                mode.convolvesScience,
                template if mode.convolvesScience else science,
                sizes,
                (sciencePsf, sciencePsfImage),
                (templatePsf, templatePsfImage),
            )
        arranged = mode.arrange(self, template, science, sizes, sciencePsfImage, crossPsfs)
        if mode.convolvesScience:
            self._checkPositiveVariance(template, "templateMaskedImage", templateMaskedImage)
        else:
            self._checkPositiveVariance(science, "scienceMaskedImage", scienceMaskedImage)
        self.metadata["convolvedExposure"] = mode.convolvedName
        self.log.info(
            "Template FWHM %.2f px, science FWHM %.2f px: convolving the %s",
            sizes.template,
            sizes.science,
            mode.description,
        )
        kernelFit = self.makeKernel(
            arranged.target,
            arranged.reference,
            arranged.targetFwhm,
            arranged.referenceFwhm,
            sizes,
            template=arranged.template,
            stampImage=arranged.stampImage,
            candidateList=candidateList,
            innerBox=arranged.innerBox,
            basisList=arranged.basisList,
            stampHalfWidth=arranged.stampHalfWidth,
        )
        if arranged.sciencePsf is not None:
            sciencePsfImage = arranged.sciencePsf
        if arranged.templatePsf is not None:
            templatePsfImage = arranged.templatePsf
        return _Subtraction(
            mode=mode.name,
            template=arranged.template,
            science=science,
            target=arranged.target,
            reference=arranged.reference,
            kernel=kernelFit,
            templateFwhm=sizes.template,
            scienceFwhm=sizes.science,
            sciencePsf=sciencePsfImage,
            templatePsf=templatePsfImage,
            preConvKernel=arranged.preConvKernel,
            innerBox=arranged.innerBox,
            templateDiaDetections=None if analysis is None else analysis.diaDetections,
            templateFull=None if placement is None else fullTemplate,
            templateVarianceFactor=templateFactor,
            templateWide=templateWide,
            uncovered=None if placement is None else placement.uncovered,
            unitScale=unitScale,
        )

    def _convolve(self, fit: _Subtraction) -> MaskedImage:
        # The target is a working image: every pixel finite (_prepareOne, _medianFilled).
        # The template's pixels beyond the science box feed the convolution at its edges.
        wide = fit.templateWide if _MODES[fit.mode].convolvesWideTemplate else None
        convolved = _convolveChecked(
            fit.target if wide is None else wide,
            fit.psfMatchingKernel,
            doCopyEdge=True,
            nThreads=self.kConfig.nThreads,
        )
        return (
            convolved if wide is None else _contiguous(cropView(convolved, fit.science.getBBox()))
        )

    def _blankUncovered(self, fit: _Subtraction, difference: MaskedImage) -> None:
        """NaN, +inf variance and NO_DATA in ``difference`` wherever the placed template has
        no pixel within the kernel's reach (at the pixel itself if it was not convolved)."""
        if fit.uncovered is None:
            return
        blank = fit.uncovered
        if not _MODES[fit.mode].convolvesScience:
            half = int(fit.psfMatchingKernel.getDimensions()[0]) // 2
            if fit.mode == "crossConvolve":
                # The template was convolved with the science PSF first.
                half += fit.sciencePsf.shape[0] // 2
            blank = dilate(blank, half)
        difference.image[blank] = np.nan
        difference.variance[blank] = np.inf
        difference.mask[blank] |= Mask.getPlaneBitMask("NO_DATA")

    @timeMethod
    def matchMaskedImages(
        self,
        templateMaskedImage: MaskedImage,
        scienceMaskedImage: MaskedImage,
        candidateList: Any = None,
        templateFwhmPix: float | None = None,
        scienceFwhmPix: float | None = None,
        *,
        sciencePsf: Any = None,
        templatePsf: Any = None,
        templateAnalysis: TemplateAnalysis | None = None,
    ) -> Struct:
        """Convolve one image so that its PSF matches the other's.

        Parameters
        ----------
        templateMaskedImage, scienceMaskedImage : `MaskedImage`
            The two images on one parent pixel grid, each at its ``xy0``; never modified. A
            template larger than the science image, or offset from it by whole pixels, is cut
            to the science image's box (`psfmatch._placement`); less than
            ``requiredTemplateFraction`` of coverage raises `TemplateCoverageError`, origins
            that the stars contradict `OriginMismatchError`.
        candidateList : table or sequence of (x, y), optional
            Kernel source positions in parent coordinates (a table with ``x`` and ``y``
            columns, or pairs); those whose stamps leave the image or carry a bad mask bit
            (``selection.excludeMaskPlanes``, ``kernel.active.badMaskPlanes``) in either
            image are dropped. By default stars are found with sep.
        templateFwhmPix, scienceFwhmPix : `float`, optional
            PSF FWHMs in pixels; measured from the kernel sources when not given.
        sciencePsf, templatePsf : 2-D array, FITS path or PSF object, optional
            Each image's PSF: an odd-sized image, a FITS file holding one
            (`psfmatch._psffield.readPsfStamp`), or an object with ``computeKernelImage(x, y)``
            (evaluated at the image centre; ``crossConvolve`` samples it over the image). By
            default a pixel-integrated Gaussian of the FWHM, or for ``crossConvolve`` the PSF
            measured from the stars. The science PSF is the preconvolution kernel of
            ``mode="preconvolve"``; the PSF of the unconvolved image becomes the difference
            image's PSF (``P_S ⊗ P_T`` for ``crossConvolve``).
        templateAnalysis : `TemplateAnalysis`, optional
            `analyzeTemplate`'s answer for this template and configuration: the template-only
            work is then not repeated (the answer is the same, bit for bit).

        Returns
        -------
        result : `Struct`
            ``matchedImage`` (the convolved image; border pixels copied with ``EDGE``),
            ``psfMatchingKernel`` (`LinearCombinationKernel`), ``backgroundModel``
            (`SpatialBackground`, b(x, y)), ``kernelCellSet``, ``kernelSources`` (an
            `astropy.table.Table` with each source's ``status``, ``kernelSum`` and ``chi2``;
            with ``calculateKernelUncertainty`` also ``kernelSumErr`` and, if the background
            is fitted, ``backgroundErr``),
            ``convolvedImage`` ("Template", "Science" or "Preconvolution") and, in score mode,
            ``matchedScience`` (the science image convolved with its PSF) and
            ``preConvKernel``.

        Raises
        ------
        InvalidInputError
            Mismatched or unusable inputs, an unusable PSF image, or a ``templateAnalysis``
            made from another template or with other settings.
        InsufficientKernelSourcesError
            Too few usable stars.
        NoKernelCandidatesError
            Every star was rejected during the fit.
        """
        fit = self._fit(
            templateMaskedImage,
            scienceMaskedImage,
            candidateList,
            templateFwhmPix,
            scienceFwhmPix,
            sciencePsf,
            templatePsf,
            templateAnalysis,
        )
        with self.timer("convolve"):
            matched = self._convolve(fit)
        toUnits([matched], fit.unitScale)
        return self._result(fit, matched)

    def _result(self, fit: _Subtraction, matched: MaskedImage | None, **extra: Any) -> Struct:
        for key, value in _MODES[fit.mode].resultExtras(fit).items():
            extra.setdefault(key, value)
        scale = fit.unitScale
        background = fit.backgroundModel
        sources = self.kernelSourceTable(fit.kernel)
        if scale != 1.0:
            # Back from the working units (_hostile.unitScale) to the images': b and every
            # flux scale with the images; the kernel, S/N and χ² do not.
            toUnits([extra.get("matchedScience")], scale)
            background = _core.SpatialBackground(
                background.getSpatialFunction(), np.asarray(background.getParameters()) * scale
            )
            for name in sources.colnames:
                if "Flux" in name or name == "backgroundErr":
                    sources[name] = np.asarray(sources[name]) * scale
        return Struct(
            matchedImage=matched,
            psfMatchingKernel=fit.psfMatchingKernel,
            backgroundModel=background,
            kernelCellSet=fit.kernelCellSet,
            kernelSources=sources,
            convolvedImage=_MODES[fit.mode].convolvedName,
            **extra,
        )

    @timeMethod
    def subtractMaskedImages(
        self,
        templateMaskedImage: MaskedImage,
        scienceMaskedImage: MaskedImage,
        candidateList: Any = None,
        templateFwhmPix: float | None = None,
        scienceFwhmPix: float | None = None,
        *,
        sciencePsf: Any = None,
        templatePsf: Any = None,
        templateAnalysis: TemplateAnalysis | None = None,
    ) -> Struct:
        """Match the PSFs and subtract: the difference image and everything that made it.

        Parameters are those of `matchMaskedImages`.

        Returns
        -------
        result : `Struct`
            ``subtractedMaskedImage`` (D, its variance and mask, see the module docstring;
            decorrelated with ``doDecorrelation``; the score image in ``preconvolve`` mode),
            ``subtractedMaskedImageRaw`` (D before decorrelation), ``differencePsf`` (unit-sum
            image of the PSF of ``subtractedMaskedImage``), ``decorrelationKernel`` (the
            real-space decorrelation filter, or None), ``diaSources`` (the sources detected in
            it, an `astropy.table.Table`, or None without ``doDetectDiaSources``), and
            everything `matchMaskedImages` returns.
        """
        fit = self._fit(
            templateMaskedImage,
            scienceMaskedImage,
            candidateList,
            templateFwhmPix,
            scienceFwhmPix,
            sciencePsf,
            templatePsf,
            templateAnalysis,
        )
        with self.timer("convolve"):
            convolved = self._convolve(fit)
        with self.timer("subtract"):
            raw = self._subtract(fit, convolved, inPlace=not self.config.keepMatchedImage)
            self._blankUncovered(fit, raw)
            # NaN in, NaN out: a pixel with no data in either input (NaN, inf or absurd,
            # _prepareOne), in the convolved one within the kernel's reach, is NaN in D with
            # +inf variance, not the other image's value.
            blankNoData(raw)
        # Without keepMatchedImage the convolved image's planes hold the difference now.
        matched = convolved if self.config.keepMatchedImage else None
        # The PSF of the raw difference: that of the unconvolved image (times the
        # preconvolution kernel for a score image).
        psf = _MODES[fit.mode].differencePsf(fit)
        difference, decorrelationKernel = raw, None
        detectionFactor: float | None = None
        if self.config.doDecorrelation:
            with self.timer("decorrelate"):
                if fit.mode == "crossConvolve":
                    from .decorrelate_cross import decorrelateForTask

                    dec = decorrelateForTask(self, fit, raw)
                    if dec.decorrelated:
                        detectionFactor = float(dec.detectionVarianceFactor)
                else:
                    dec = self.decorrelate.run(
                        fit.science,
                        fit.template,
                        raw,
                        fit.psfMatchingKernel,
                        templateMatched=not _MODES[fit.mode].convolvesScience,
                        preConvKernel=fit.preConvKernel,
                        psf=psf,
                        nThreads=int(self.kConfig.nThreads),
                    )
            difference = dec.correctedMaskedImage
            decorrelationKernel = dec.decorrelationKernel
            if dec.correctedPsf is not None:
                psf = dec.correctedPsf
            for key, value in (
                ("decorrelationSvar", dec.svar),
                ("decorrelationTvar", dec.tvar),
                ("decorrelationKernelSum", dec.kappa),
            ):
                self.metadata[key] = value if math.isfinite(value) else "nan"
            self.metadata["decorrelated"] = bool(dec.decorrelated)
            if difference is not raw:
                blankNoData(difference)
        self.metadata["differencePsfSize"] = _psfFwhm(psf)
        self._displayDebugDifference(fit, difference)
        diaSources = None
        if self.config.doDetectDiaSources:
            with self.timer("detectDiaSources"):
                detectIn = difference
                if fit.mode == "crossConvolve":
                    from .decorrelate_cross import detectionImageForTask

                    detectIn = detectionImageForTask(self, fit, difference, detectionFactor)
                diaSources = self._detectDiaSources(fit, detectIn, psf)
        checkQuality(self, fit, difference)
        scale = fit.unitScale
        if scale != 1.0:
            toUnits([matched, raw] + ([] if difference is raw else [difference]), scale)
            if diaSources is not None:
                for name in ("flux", "fluxErr"):
                    diaSources[name] = np.asarray(diaSources[name]) * scale
            for key in ("decorrelationSvar", "decorrelationTvar"):
                value = self.metadata.get(key) if key in self.metadata else None
                if isinstance(value, float):
                    self.metadata[key] = value * scale * scale
        return self._result(
            fit,
            matched,
            subtractedMaskedImage=difference,
            subtractedMaskedImageRaw=raw,
            differencePsf=psf,
            decorrelationKernel=decorrelationKernel,
            diaSources=diaSources,
        )

    def _displayDebugDifference(self, fit: _Subtraction, difference: MaskedImage) -> None:
        """The ``displayDiffIm`` debugging switch (see the module docstring)."""
        lsstDebug = psfmatchDebug.getInfo(_DEBUG_NAME)
        if not (lsstDebug.display and lsstDebug.displayDiffIm):
            return
        requests = Struct(
            displayDiffIm=True,
            showBadCandidates=bool(lsstDebug.showBadCandidates),
            maskTransparency=lsstDebug.maskTransparency or 0,
            plotDir=lsstDebug.plotDir or None,
        )
        psfmatchDebug._show(self, requests, difference=difference, kernelCellSet=fit.kernelCellSet)

    def _subtract(
        self, fit: _Subtraction, matched: MaskedImage, inPlace: bool = False
    ) -> MaskedImage:
        """The raw difference image (§7.3 step 5, §7.4 step 7), in one threaded C++ pass.

        convolveTemplate and preconvolve: D = R − M − b, V = V_R + V_M; convolveScience:
        D = (M + b − T)/κ, V = (V_M + V_T)/κ² with κ the kernel sum at the image centre. The
        mask is R's | M's; the convolution's own border (EDGE in M but not in the target), and
        in score mode everything outside the inner box (where P ⊗ S is a copy of S, not a
        matched filter), gets NaN, +inf and EDGE | NO_DATA. b is evaluated pixel by pixel,
        never as a full-size image. The arithmetic is that of the numpy expressions
        (tests/test_subtract.py), except that κ² is κ·κ, correctly rounded, where
        ``kappa**2`` (libm ``pow``) was one ulp off for about 0.1 % of κ values.

        With ``inPlace`` the difference is written over ``matched``'s planes (the
        convolution's own output, which nothing else holds) when their dtype is the result's;
        otherwise, as without it, into new arrays.
        """
        bbox = matched.getBBox()
        reference = fit.reference
        control = _core.SubtractionControl()
        control.edgeBit = Mask.getPlaneBitMask("EDGE")
        control.noDataBit = Mask.getPlaneBitMask("NO_DATA")
        control.innerBox = fit.innerBox
        control.nThreads = int(self.kConfig.nThreads)
        if _MODES[fit.mode].convolvesScience:
            # The reference is the template here.
            xc = 0.5 * (bbox.getMinX() + bbox.getMaxX())
            yc = 0.5 * (bbox.getMinY() + bbox.getMaxY())
            control.scienceConvolved = True
            control.kappa = float(fit.psfMatchingKernel.getSum(xc, yc))
        # Mixed float32/float64 planes are worked in float64 and rounded to the reference's
        # dtype at the end, as numpy's promotion of the same expressions does.
        dtype = reference.image.dtype
        work = np.result_type(reference.image, matched.image)
        planes = [
            plane if plane.dtype == work else plane.astype(work)
            for plane in (reference.image, reference.variance, matched.image, matched.variance)
        ]
        # In place only where the matched planes themselves go in and come out: with a dtype
        # conversion they are copies, and the result must be in the reference's dtype.
        inPlace = inPlace and planes[2] is matched.image and work == dtype
        image, mask, variance = _core.subtractMatched(
            planes[0],
            reference.mask,
            planes[1],
            planes[2],
            matched.mask,
            planes[3],
            fit.target.mask,
            matched.getXY0(),
            control,
            fit.backgroundModel if self.config.doSubtractBackground else None,
            inPlace,
        )
        return MaskedImage(
            image.astype(dtype, copy=False),
            mask,
            variance.astype(dtype, copy=False),
            xy0=matched.getXY0(),
        )

    def _detectDiaSources(
        self, fit: _Subtraction, difference: MaskedImage, psf: np.ndarray
    ) -> Table:
        """Detect positive and negative sources in D (`detectDifferenceSources`), associate
        them with the template's detections and the kernel sources (`associate`), and record
        the NFalsePositives* metadata."""
        config = self.config
        bits = Mask.getPlaneBitMask(list(config.diaSourceBadMaskPlanes), skipUnknown=True)
        table = detectDifferenceSources(
            difference,
            psf,
            config.diaSourceThreshold,
            bits,
            isScore=_MODES[fit.mode].isScore,
            nThreads=int(self.kConfig.nThreads),
        )
        templateDetections, templateXY0 = self._templateDetections(fit)
        table.meta["threshold"] = float(config.diaSourceThreshold)
        table, counts = associate(
            table, psf, config.diaSourceMatchRadius, templateDetections, templateXY0, fit.sources
        )
        recordAssociation(self, counts, config.diaSourceThreshold, table)
        return table
