# SPDX-License-Identifier: BSD-3-Clause
"""ImagePsfMatchTask: match and subtract two masked images on one pixel grid.

The image-level entry point of psfmatch (decision 5): find kernel sources, fit the spatially
varying matching kernel with `PsfMatchTask._solve`, convolve, and subtract.

Conventions
-----------
``mode="convolveTemplate"`` (the default) fits K and b with ``S ≈ K ⊗ T + b`` and returns

    D = S − (K ⊗ T + b),   Var(D) = Var(S) + K² ⊗ Var(T),   mask(D) = mask(S) | dilated mask(T)

in the science image's units and PSF. ``mode="convolveScience"`` fits ``T ≈ K ⊗ S + b`` and
returns the difference in the science image's units as well,

    D = (K ⊗ S + b − T) / κ,   Var(D) = (K² ⊗ Var(S) + Var(T)) / κ²,

with κ the kernel sum at the image centre; D then has the template's PSF. ``mode="auto"``
convolves the image with the narrower PSF (the template when the FWHMs are equal), so the
kernel never has to deconvolve. With ``doSubtractBackground`` off, b is fitted but left in D.

Pixels within a kernel half-width of the edge cannot be convolved: in the matched image they
are copies of the input with the ``EDGE`` bit; in the difference they are NaN with variance
+inf and the ``EDGE`` and ``NO_DATA`` bits. Input pixels that are NaN or infinite must carry a
mask bit; they are treated as 0 in the convolution and every output pixel they reach carries
their bits.

Metadata (besides `PsfMatchTask`'s): ``templatePsfSize``, ``sciencePsfSize`` (FWHM, pixels),
``convolvedExposure`` ("Template" or "Science"), ``nPsfSources`` (kernel candidates),
``templateCoveragePercent``, ``scaleTemplateVarianceFactor``, ``scaleScienceVarianceFactor``
and the ``ALBasis*`` keys of the basis.
"""

from __future__ import annotations

__all__ = ["ImagePsfMatchConfig", "ImagePsfMatchTask"]

import math
from typing import Any

import lsst.pex.config as pexConfig
import numpy as np
import sep
from astropy.table import Table
from lsst.utils.timer import timeMethod

from . import _core
from .basis import makeKernelBasisList
from .candidate import KernelCandidate
from .config import PsfMatchConfigAL, PsfMatchConfigDF
from .convolution import _checkFinite, convolve
from .errors import InsufficientKernelSourcesError, InvalidInputError
from .image import Mask, MaskedImage
from .psf_match import PsfMatchTask
from .selection import KernelSourceSelectionConfig, detectSources, selectKernelSources
from .task import Struct

_STATUS_NAMES = {
    _core.KernelCandidate.GOOD: "GOOD",
    _core.KernelCandidate.BAD: "BAD",
    _core.KernelCandidate.UNKNOWN: "UNKNOWN",
}


class ImagePsfMatchConfig(pexConfig.Config):
    """Configuration of `ImagePsfMatchTask`."""

    kernel = pexConfig.ConfigChoiceField(
        doc="The kernel basis and fit: Alard-Lupton (AL) or delta functions (DF).",
        typemap={"AL": PsfMatchConfigAL, "DF": PsfMatchConfigDF},
        default="AL",
    )
    selection: pexConfig.ConfigField[KernelSourceSelectionConfig] = pexConfig.ConfigField(
        dtype=KernelSourceSelectionConfig, doc="How kernel sources are found and filtered."
    )
    mode: pexConfig.ChoiceField[str] = pexConfig.ChoiceField(
        dtype=str,
        default="convolveTemplate",
        allowed={
            "convolveTemplate": "Convolve the template to the science image's PSF.",
            "convolveScience": "Convolve the science image to the template's PSF.",
            "auto": "Convolve whichever image has the narrower PSF.",
        },
        doc="Which image is convolved.",
    )
    doScaleVariance: pexConfig.Field[bool] = pexConfig.Field(
        dtype=bool,
        default=True,
        doc="Rescale each image's variance plane so that the sky pixels' (image - background)"
        "/sqrt(variance) has unit robust spread (0.7413·IQR), as the reference does.",
    )
    maxVarianceScaleFactor: pexConfig.Field[float] = pexConfig.RangeField(
        dtype=float,
        default=10.0,
        min=1.0,
        doc="A variance scale factor outside [1/max, max] is not applied (a warning and the "
        "metadata say so): it means the variance plane does not describe the noise at all.",
    )
    doSubtractBackground: pexConfig.Field[bool] = pexConfig.Field(
        dtype=bool,
        default=True,
        doc="Subtract the fitted differential background from the difference image.",
    )
    doDecorrelation: pexConfig.Field[bool] = pexConfig.Field(
        dtype=bool,
        default=False,
        doc="Whiten the difference image's noise (not implemented yet; must stay False).",
    )

    def setDefaults(self) -> None:
        super().setDefaults()
        for name in ("AL", "DF"):
            self.kernel[name].fitForBackground = True

    def validate(self) -> None:
        super().validate()
        if self.doDecorrelation:
            raise pexConfig.FieldValidationError(
                type(self).doDecorrelation, self, "decorrelation is not implemented yet"
            )


def _dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """Grow a boolean mask by a (2·radius+1)² box, with a summed-area table."""
    sat = np.zeros((mask.shape[0] + 1, mask.shape[1] + 1), dtype=np.int64)
    sat[1:, 1:] = mask.astype(np.int64).cumsum(axis=0).cumsum(axis=1)
    ny, nx = mask.shape
    y0 = np.clip(np.arange(ny) - radius, 0, ny)
    y1 = np.clip(np.arange(ny) + radius + 1, 0, ny)
    x0 = np.clip(np.arange(nx) - radius, 0, nx)
    x1 = np.clip(np.arange(nx) + radius + 1, 0, nx)
    total = sat[np.ix_(y1, x1)] - sat[np.ix_(y0, x1)] - sat[np.ix_(y1, x0)] + sat[np.ix_(y0, x0)]
    return total > 0


def _varianceScaleFactor(mi: MaskedImage, badBits: int) -> float:
    """(0.7413·IQR of (image − background)/sqrt(variance))² over sky pixels, or NaN.

    Sky pixels are the usable ones outside every source: sep's segmentation at 4σ, grown by
    4 pixels, so that the wings of bright stars do not widen the distribution.
    """
    data = np.ascontiguousarray(mi.image, dtype=np.float64)
    var = np.asarray(mi.variance, dtype=np.float64)
    usable = ((mi.mask & badBits) == 0) & np.isfinite(data) & np.isfinite(var) & (var > 0)
    if usable.sum() < 100:
        return math.nan
    data = np.where(usable, data, 0.0)
    background = sep.Background(data, mask=~usable)
    sub = data - background.back()
    err = np.sqrt(np.where(usable, var, 1.0))
    _, segmentation = sep.extract(sub, 4.0, err=err, mask=~usable, minarea=5, segmentation_map=True)
    sky = usable & ~_dilate(segmentation > 0, 4)
    if sky.sum() < 100:
        return math.nan
    z = sub[sky] / err[sky]
    q25, q75 = np.percentile(z, [25.0, 75.0])
    return float((0.741301109 * (q75 - q25)) ** 2)


def _asCandidatePositions(candidateList: Any) -> tuple[np.ndarray, np.ndarray]:
    """x, y arrays from a table with ``x``/``y`` columns or a sequence of (x, y) pairs."""
    if hasattr(candidateList, "colnames") or isinstance(candidateList, dict):
        x, y = candidateList["x"], candidateList["y"]
    else:
        arr = np.asarray(candidateList, dtype=float)
        if arr.ndim != 2 or arr.shape[1] != 2:
            raise InvalidInputError(
                f"candidateList: expected (x, y) pairs or a table with x and y columns, got an "
                f"array of shape {arr.shape}"
            )
        x, y = arr[:, 0], arr[:, 1]
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise InvalidInputError("candidateList: positions must be finite")
    return x, y


class ImagePsfMatchTask(PsfMatchTask):
    """Match the PSFs of two masked images on one pixel grid, and subtract them.

    See the module docstring for the conventions; `PsfMatchTask` for the fit and its metadata.

    Examples
    --------
    >>> task = ImagePsfMatchTask()                                      # doctest: +SKIP
    >>> result = task.subtractMaskedImages(template, science)           # doctest: +SKIP
    >>> result.subtractedMaskedImage.image                              # doctest: +SKIP
    """

    ConfigClass = ImagePsfMatchConfig
    _DefaultName = "imagePsfMatch"
    config: ImagePsfMatchConfig

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.config.validate()

    # -- inputs ---------------------------------------------------------------------------

    def _badBits(self) -> int:
        planes = set(self.kConfig.badMaskPlanes) | set(self.config.selection.excludeMaskPlanes)
        return Mask.getPlaneBitMask(sorted(planes), skipUnknown=True)

    def _prepareInputs(
        self, templateMaskedImage: Any, scienceMaskedImage: Any
    ) -> tuple[MaskedImage, MaskedImage]:
        """Check the inputs and return working copies (masked non-finite pixels zeroed)."""
        for name, mi in (
            ("templateMaskedImage", templateMaskedImage),
            ("scienceMaskedImage", scienceMaskedImage),
        ):
            if not isinstance(mi, MaskedImage):
                raise InvalidInputError(f"{name}: expected a MaskedImage, got {type(mi).__name__}")
        if templateMaskedImage.image.shape != scienceMaskedImage.image.shape:
            raise InvalidInputError(
                f"template and science differ in shape: {templateMaskedImage.image.shape} vs "
                f"{scienceMaskedImage.image.shape}; resample them onto one pixel grid first"
            )
        if templateMaskedImage.getXY0() != scienceMaskedImage.getXY0():
            raise InvalidInputError(
                f"template and science differ in origin xy0: {templateMaskedImage.getXY0()} vs "
                f"{scienceMaskedImage.getXY0()}"
            )
        anyBit = -1  # a non-finite pixel is acceptable when it carries any mask bit
        copies = []
        for name, mi in (
            ("templateMaskedImage", templateMaskedImage),
            ("scienceMaskedImage", scienceMaskedImage),
        ):
            _checkFinite(mi, name, anyBit)
            work = mi.clone()
            bad = ~np.isfinite(work.image) | ~np.isfinite(work.variance)
            work.image[bad] = 0.0
            work.variance[bad] = 0.0
            if np.any(work.variance < 0):
                y, x = np.argwhere(work.variance < 0)[0]
                raise InvalidInputError(
                    f"{name}: the variance is negative at (x, y) = ({x + mi.getXY0()[0]}, "
                    f"{y + mi.getXY0()[1]})"
                )
            copies.append(work)
        badBits = self._badBits()
        usable = ((copies[0].mask & badBits) == 0) & ((copies[1].mask & badBits) == 0)
        if not usable.any():
            raise InvalidInputError(
                "every pixel is masked in the template or the science image (mask planes "
                f"{sorted(set(self.kConfig.badMaskPlanes))}); nothing to match"
            )
        noData = Mask.getPlaneBitMask("NO_DATA")
        covered = ((copies[0].mask & noData) == 0) & ((copies[1].mask & noData) == 0)
        self.metadata["templateCoveragePercent"] = 100.0 * float(covered.mean())
        return copies[0], copies[1]

    def _scaleVariance(self, mi: MaskedImage, which: str) -> None:
        key = f"scale{which}VarianceFactor"
        factor = _varianceScaleFactor(mi, self._badBits())
        limit = self.config.maxVarianceScaleFactor
        if not (math.isfinite(factor) and 1.0 / limit <= factor <= limit):
            self.log.warning(
                "%s variance not rescaled: the measured factor %.4g is outside [%.3g, %.3g]; "
                "the variance plane does not describe the pixel noise",
                which,
                factor,
                1.0 / limit,
                limit,
            )
            self.metadata[key] = float(factor) if math.isfinite(factor) else "nan"
            self.metadata[f"scale{which}VarianceApplied"] = False
            return
        mi.variance *= mi.variance.dtype.type(factor)
        self.metadata[key] = factor
        self.metadata[f"scale{which}VarianceApplied"] = True

    # -- the fit --------------------------------------------------------------------------

    def _buildCellSet(
        self,
        targetMaskedImage: MaskedImage,
        referenceMaskedImage: MaskedImage,
        sources: Table,
        kernelSize: int,
    ) -> Any:
        """A `SpatialCellSet` with one candidate per source: stamps of 2·kernelSize+1 pixels
        of the image to convolve (target) and the one to match (reference)."""
        kConfig = self.kConfig
        bbox = targetMaskedImage.getBBox()
        cellSet = _core.SpatialCellSet(bbox, kConfig.sizeCellX, kConfig.sizeCellY)
        x0, y0 = targetMaskedImage.getXY0()
        half = int(kernelSize)
        ratings = sources["snr"] if "snr" in sources.colnames else [None] * len(sources)
        for x, y, rating in zip(sources["x"], sources["y"], ratings, strict=True):
            ix, iy = int(math.floor(x + 0.5)), int(math.floor(y + 0.5))
            box = _core.Box2I((ix - half, iy - half), (2 * half + 1, 2 * half + 1))
            cand = KernelCandidate(
                float(x),
                float(y),
                targetMaskedImage.subimage(box),
                referenceMaskedImage.subimage(box),
                kConfig,
                rating=None if rating is None else float(rating),
            )
            cellSet.insertCandidate(cand)
        return cellSet

    def _userSources(self, candidateList: Any, bbox: Any, kernelSize: int | None) -> Table:
        x, y = _asCandidatePositions(candidateList)
        outside = ~(
            (x >= bbox.getMinX() - 0.5)
            & (x < bbox.getMaxX() + 0.5)
            & (y >= bbox.getMinY() - 0.5)
            & (y < bbox.getMaxY() + 0.5)
        )
        if outside.any():
            k = int(np.argmax(outside))
            raise InvalidInputError(
                f"candidateList: {int(outside.sum())} position(s) lie outside the image "
                f"{bbox}, the first at (x, y) = ({x[k]}, {y[k]})"
            )
        table = Table({"x": x, "y": y})
        if kernelSize is not None:
            half = int(kernelSize)
            ix = np.floor(x + 0.5)
            iy = np.floor(y + 0.5)
            fits = (
                (ix - half >= bbox.getMinX())
                & (iy - half >= bbox.getMinY())
                & (ix + half <= bbox.getMaxX())
                & (iy + half <= bbox.getMaxY())
            )
            table = table[fits]
            nMin = self.config.selection.minKernelSources
            if len(table) < nMin:
                raise InsufficientKernelSourcesError(
                    len(table),
                    nMin,
                    f"{int((~fits).sum())} of the {len(fits)} given positions are closer than "
                    f"{half} pixels (the stamp half-width) to the edge",
                )
        return table

    def _measureUserFwhm(self, mi: MaskedImage, table: Table) -> float:
        """FWHM at user-given positions: twice the median half-light radius (sep)."""
        data = np.ascontiguousarray(mi.image, dtype=np.float64)
        masked = (mi.mask & self._badBits()) != 0
        background = sep.Background(data, mask=masked)
        x0, y0 = mi.getXY0()
        r50, flag = sep.flux_radius(
            data - background.back(),
            np.asarray(table["x"], dtype=float) - x0,
            np.asarray(table["y"], dtype=float) - y0,
            np.full(len(table), 15.0),
            0.5,
            subpix=5,
        )
        r50 = r50[(flag == 0) & np.isfinite(r50) & (r50 > 0)]
        return float(2.0 * np.median(r50)) if r50.size else math.nan

    def _fit(
        self,
        templateMaskedImage: Any,
        scienceMaskedImage: Any,
        candidateList: Any,
        templateFwhmPix: float | None,
        scienceFwhmPix: float | None,
    ) -> Struct:
        """Everything up to and including the kernel fit; returns the pieces as a Struct."""
        with self.timer("prepare"):
            template, science = self._prepareInputs(templateMaskedImage, scienceMaskedImage)
            if self.config.doScaleVariance:
                self._scaleVariance(template, "Template")
                self._scaleVariance(science, "Science")

        selection = self.config.selection
        tSources: np.ndarray | None
        sSources: np.ndarray | None
        with self.timer("selectSources"):
            if candidateList is None:
                badBits = self._badBits()
                tSources = detectSources(template, selection.detectionThreshold, badBits)
                sSources = detectSources(science, selection.detectionThreshold, badBits)
                preliminary = selectKernelSources(
                    template,
                    science,
                    selection,
                    templateSources=tSources,
                    scienceSources=sSources,
                )
                measuredT = 2.0 * float(np.median(preliminary["templateR50"]))
                measuredS = 2.0 * float(np.median(preliminary["scienceR50"]))
            else:
                tSources = sSources = None
                preliminary = self._userSources(candidateList, science.getBBox(), None)
                measuredT = self._measureUserFwhm(template, preliminary)
                measuredS = self._measureUserFwhm(science, preliminary)
            templateFwhm = float(templateFwhmPix) if templateFwhmPix else measuredT
            scienceFwhm = float(scienceFwhmPix) if scienceFwhmPix else measuredS
        for name, value in (("templateFwhmPix", templateFwhm), ("scienceFwhmPix", scienceFwhm)):
            if not (math.isfinite(value) and value > 0):
                raise InvalidInputError(
                    f"{name}: could not measure a positive FWHM (got {value}); pass it explicitly"
                )
        self.metadata["templatePsfSize"] = templateFwhm
        self.metadata["sciencePsfSize"] = scienceFwhm

        mode = self.config.mode
        if mode == "auto":
            mode = "convolveTemplate" if templateFwhm <= scienceFwhm else "convolveScience"
        if mode == "convolveTemplate":
            target, reference = template, science
            targetFwhm, referenceFwhm = templateFwhm, scienceFwhm
        else:
            target, reference = science, template
            targetFwhm, referenceFwhm = scienceFwhm, templateFwhm
        self.metadata["convolvedExposure"] = "Template" if mode == "convolveTemplate" else "Science"
        self.log.info(
            "Template FWHM %.2f px, science FWHM %.2f px: convolving the %s",
            templateFwhm,
            scienceFwhm,
            "template" if mode == "convolveTemplate" else "science image",
        )

        basisList = makeKernelBasisList(
            self.kConfig, targetFwhm, referenceFwhm, metadata=self.metadata
        )
        kernelSize = basisList[0].getWidth()
        with self.timer("selectSources"):
            if candidateList is None:
                sources = selectKernelSources(
                    template,
                    science,
                    selection,
                    kernelSize=kernelSize,
                    templateSources=tSources,
                    scienceSources=sSources,
                )
            else:
                sources = self._userSources(candidateList, science.getBBox(), kernelSize)
        self.metadata["nPsfSources"] = len(sources)
        for key, value in sources.meta.items():
            self.metadata[f"selection.{key}"] = value

        if self.kConfig.useBicForKernelBasis:
            # The BIC refits every candidate; a scratch cell set keeps the solve's clean.
            scratch = self._buildCellSet(target, reference, sources, kernelSize)
            basisList = self._selectBasisByBic(scratch, targetFwhm, referenceFwhm)
        with self.timer("buildCellSet"):
            cellSet = self._buildCellSet(target, reference, sources, kernelSize)
        spatialSolution, kernel, background = self._solve(cellSet, basisList)
        return Struct(
            template=template,
            science=science,
            target=target,
            reference=reference,
            mode=mode,
            kernelCellSet=cellSet,
            psfMatchingKernel=kernel,
            backgroundModel=background,
            spatialSolution=spatialSolution,
            sources=sources,
            basisList=basisList,
            templateFwhm=templateFwhm,
            scienceFwhm=scienceFwhm,
        )

    def _candidateTable(self, fit: Struct) -> Table:
        """The kernel sources with the fit's verdict on each."""
        table = fit.sources.copy()
        byPosition = {
            (c.getXCenter(), c.getYCenter()): c
            for c in fit.kernelCellSet.getAllCandidates(ignoreBad=False)
        }
        status, kSum, chi2 = [], [], []
        for x, y in zip(table["x"], table["y"], strict=True):
            cand = byPosition.get((float(x), float(y)))
            if cand is None:
                status.append("UNKNOWN")
                kSum.append(math.nan)
                chi2.append(math.nan)
                continue
            status.append(_STATUS_NAMES[cand.getStatus()])
            try:
                kSum.append(float(cand.getKsum(_core.KernelCandidate.ORIG)))
            except Exception:  # an uninitialised or failed candidate has no kernel sum
                kSum.append(math.nan)
            chi2v = cand.getChi2()
            chi2.append(chi2v if chi2v < 1e300 else math.nan)
        table["status"] = status
        table["kernelSum"] = kSum
        table["chi2"] = chi2
        return table

    def _convolve(self, fit: Struct) -> MaskedImage:
        return convolve(
            fit.target, fit.psfMatchingKernel, doCopyEdge=True, nThreads=self.kConfig.nThreads
        )

    # -- public API -----------------------------------------------------------------------

    @timeMethod
    def matchMaskedImages(
        self,
        templateMaskedImage: MaskedImage,
        scienceMaskedImage: MaskedImage,
        candidateList: Any = None,
        templateFwhmPix: float | None = None,
        scienceFwhmPix: float | None = None,
    ) -> Struct:
        """Convolve one image so that its PSF matches the other's.

        Parameters
        ----------
        templateMaskedImage, scienceMaskedImage : `MaskedImage`
            The two images on one pixel grid (same shape and ``xy0``); never modified.
        candidateList : table or sequence of (x, y), optional
            Kernel source positions in parent coordinates (a table with ``x`` and ``y``
            columns, or pairs). By default stars are found with sep.
        templateFwhmPix, scienceFwhmPix : `float`, optional
            PSF FWHMs in pixels; measured from the kernel sources when not given.

        Returns
        -------
        result : `Struct`
            ``matchedImage`` (the convolved image; border pixels copied with ``EDGE``),
            ``psfMatchingKernel`` (`LinearCombinationKernel`), ``backgroundModel``
            (`SpatialBackground`, b(x, y)), ``kernelCellSet``, ``kernelSources`` (an
            `astropy.table.Table` with each source's ``status``, ``kernelSum`` and ``chi2``),
            ``convolvedImage`` ("Template" or "Science").

        Raises
        ------
        InvalidInputError
            Mismatched or unusable inputs.
        InsufficientKernelSourcesError
            Too few usable stars.
        NoKernelCandidatesError
            Every star was rejected during the fit.
        """
        fit = self._fit(
            templateMaskedImage, scienceMaskedImage, candidateList, templateFwhmPix, scienceFwhmPix
        )
        with self.timer("convolve"):
            matched = self._convolve(fit)
        return self._result(fit, matched)

    def _result(self, fit: Struct, matched: MaskedImage, **extra: Any) -> Struct:
        return Struct(
            matchedImage=matched,
            psfMatchingKernel=fit.psfMatchingKernel,
            backgroundModel=fit.backgroundModel,
            kernelCellSet=fit.kernelCellSet,
            kernelSources=self._candidateTable(fit),
            convolvedImage="Template" if fit.mode == "convolveTemplate" else "Science",
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
    ) -> Struct:
        """Match the PSFs and subtract: the difference image and everything that made it.

        Parameters are those of `matchMaskedImages`.

        Returns
        -------
        result : `Struct`
            ``subtractedMaskedImage`` (D, its variance and mask; see the module docstring),
            and everything `matchMaskedImages` returns.
        """
        fit = self._fit(
            templateMaskedImage, scienceMaskedImage, candidateList, templateFwhmPix, scienceFwhmPix
        )
        with self.timer("convolve"):
            matched = self._convolve(fit)
        with self.timer("subtract"):
            difference = self._subtract(fit, matched)
        return self._result(fit, matched, subtractedMaskedImage=difference)

    def _subtract(self, fit: Struct, matched: MaskedImage) -> MaskedImage:
        bbox = matched.getBBox()
        if self.config.doSubtractBackground:
            background = np.asarray(fit.backgroundModel.evaluate(bbox))
        else:
            background = np.zeros(matched.image.shape)
        dtype = fit.reference.image.dtype
        if fit.mode == "convolveTemplate":
            image = fit.science.image - matched.image - background
            variance = fit.science.variance + matched.variance
        else:
            xc = 0.5 * (bbox.getMinX() + bbox.getMaxX())
            yc = 0.5 * (bbox.getMinY() + bbox.getMaxY())
            kappa = float(fit.psfMatchingKernel.getSum(xc, yc))
            image = (matched.image + background - fit.template.image) / kappa
            variance = (matched.variance + fit.template.variance) / kappa**2
        mask = fit.reference.mask | matched.mask
        edge = Mask.getPlaneBitMask("EDGE")
        border = (matched.mask & edge) != 0
        border &= ~((fit.target.mask & edge) != 0)  # only the convolution's own border
        image = np.where(border, np.nan, image)
        variance = np.where(border, np.inf, variance)
        mask = np.where(border, mask | edge | Mask.getPlaneBitMask("NO_DATA"), mask)
        return MaskedImage(
            image.astype(dtype, copy=False),
            mask,
            variance.astype(dtype, copy=False),
            xy0=matched.getXY0(),
        )
