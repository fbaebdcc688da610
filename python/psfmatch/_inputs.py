# SPDX-License-Identifier: BSD-3-Clause
"""The input stage of a subtraction: the two images checked, placed on one grid, their
variance planes rescaled, and the template-only part of that work done once for many science
images (`TemplateAnalysis`).

Checked: a `MaskedImage` each; every pixel finite or carrying a mask bit; no negative variance;
some pixel usable in both. Placed: a template whose box is not the science image's is cut to
the science box by the images' origins (`psfmatch._placement`) once their stars agree with the
origins, and must cover ``requiredTemplateFraction`` of it. Rescaled (``doScaleVariance``):
each variance plane is multiplied by the factor that gives the sky pixels' (image −
background)/σ a unit robust spread (`_varianceScaleFactor`), as the reference does.

`InputPreparation` holds these steps as methods of `ImagePsfMatchTask` (it is one of its
bases); the working images it returns are read-only views of the inputs or new planes, never
the caller's arrays.
"""

from __future__ import annotations

import logging
import math
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from lsst.utils.timer import timeMethod

from . import _hostile
from ._hostile import _ABSURD_SIGMAS, _unitNoise, absurdPixels, scaled
from ._placement import Placement, cropView, placeTemplate, starOffset
from ._sources import detectSources
from ._varscale import skySample
from .config import PsfMatchConfig
from .convolution import _allFinite, _checkFinite
from .errors import InvalidInputError, OriginMismatchError, TemplateCoverageError
from .image import Mask, MaskedImage, _rowBands

if TYPE_CHECKING:
    from ._modes import _Subtraction

_log = logging.getLogger("psfmatch.imagePsfMatch")


@dataclass(frozen=True, eq=False)
class TemplateAnalysis:
    """The work `ImagePsfMatchTask` does on a template alone, done once for many science images.

    Made by `ImagePsfMatchTask.analyzeTemplate` (or `psfmatch.api.analyzeTemplate`) and passed
    as ``templateAnalysis`` to `ImagePsfMatchTask.subtractMaskedImages`,
    `~ImagePsfMatchTask.matchMaskedImages` or `psfmatch.subtract`, it replaces the template's
    variance rescaling measurement and its sep detection for the association of
    difference-image sources. The result is bit for bit the one obtained without it. The
    kernel sources are not part of it: they are the science image's detections, measured in
    the template at their positions, so they belong to the pair (as does the template's FWHM,
    measured on them).

    Attributes
    ----------
    shape : (`int`, `int`)
        ``(ny, nx)`` of the template. (Its origin does not matter: every detection is in
        array coordinates.)
    checksum : `int`
        CRC-32 of the template's image, mask and variance planes (with their shapes and
        dtypes): an analysis is only accepted for the very pixels it was made from.
    settings : `tuple`
        The configuration values the analysis depends on, as ``(name, value)`` pairs; a task
        with other values refuses it.
    varianceScaleFactor : `float` or None
        The measured variance scale factor (NaN if it could not be measured); None when
        ``doScaleVariance`` is off.
    diaDetections : `numpy.ndarray` or None
        Its detections at ``diaSourceThreshold``, read-only; None without
        ``doDetectDiaSources``.
    """

    shape: tuple[int, int]
    checksum: int
    settings: tuple[tuple[str, Any], ...]
    varianceScaleFactor: float | None
    diaDetections: np.ndarray | None

    @property
    def nbytes(self) -> int:
        """Memory held by the detections, in bytes."""
        return 0 if self.diaDetections is None else int(self.diaDetections.nbytes)


def _pixelChecksum(mi: MaskedImage) -> int:
    """CRC-32 of a masked image's planes, shapes and dtypes (an identity check, not security)."""
    planes = (mi.image, mi.mask, mi.variance)
    layout = repr([(a.shape, a.dtype.str) for a in planes]).encode()
    crc = zlib.crc32(layout)
    for array in planes:
        crc = zlib.crc32(np.ascontiguousarray(array).reshape(-1).view(np.uint8).data, crc)
    return crc


def _contiguous(mi: MaskedImage) -> MaskedImage:
    """``mi`` with C-contiguous planes (copies of those that are not)."""
    image, mask, variance = (np.ascontiguousarray(p) for p in (mi.image, mi.mask, mi.variance))
    if image is mi.image and mask is mi.mask and variance is mi.variance:
        return mi
    return MaskedImage(image, mask, variance, xy0=mi.getXY0())


def _readOnly(array: np.ndarray) -> np.ndarray:
    array.flags.writeable = False
    return array


#: Variance factors a pipeline's variance plane plausibly needs (read noise or gain slightly
#: off, a resampled template's lost covariance); outside them the factor is applied, but said.
_PLAUSIBLE_VARIANCE_FACTORS = (0.8, 1.25)


def _varianceScaleFactor(mi: MaskedImage, badBits: int) -> float:
    """(0.7413·IQR of (image − sky)/sqrt(variance))² over sky pixels, or NaN.

    Sky pixels are the usable ones without source light (`psfmatch._varscale.skySample`:
    not in the DETECTED, DETECTED_NEGATIVE or INTRP planes, nor above 4σ of the sky noise in
    the PSF-scale smoothed image), sampled one in each 2×2 bin.
    """
    sample = skySample(mi, badBits)
    if sample is None:
        return math.nan
    values, var = sample
    values /= np.sqrt(var)
    q25, q75 = np.percentile(values, (25.0, 75.0), overwrite_input=True)
    return float((0.741301109 * (q75 - q25)) ** 2)


def _medianFilled(mi: MaskedImage, badBits: int) -> MaskedImage:
    """A copy whose pixels with any of ``badBits`` hold the median of the others (the
    reference's "interpolation" before preconvolution)."""
    out = mi.clone()
    bad = (out.mask & badBits) != 0
    if bad.any() and (~bad).any():
        out.image[bad] = np.median(out.image[~bad])
    return out


def _warnAbsurd(task: Any, mi: MaskedImage, key: str, unmasked: np.ndarray, count: int) -> None:
    """One warning: how many absurd pixels ``key``'s image has, their range and where (the
    task's log; this module's without a task)."""
    ys, xs = np.nonzero(unmasked)
    x0, y0 = mi.getXY0()
    values = mi.image[unmasked]
    log = task.log if task is not None else _log
    log.warning(
        "%s: %d pixel(s) with absurd values (%.3g to %.3g: further than %.0e robust σ from "
        "the image's median, or beyond float32's range) were flagged BAD and NO_DATA and "
        "take no part (NaN in the difference wherever they reach); the first at (x, y) = "
        "(%d, %d), all within x %d..%d, y %d..%d",
        key,
        count,
        float(values.min()),
        float(values.max()),
        _ABSURD_SIGMAS,
        int(xs[0]) + x0,
        int(ys[0]) + y0,
        int(xs.min()) + x0,
        int(xs.max()) + x0,
        int(ys.min()) + y0,
        int(ys.max()) + y0,
    )


class InputPreparation:
    """The input stage of `ImagePsfMatchTask` (a base class of it; see the module docstring).

    It uses the task's ``config`` (an `ImagePsfMatchConfig`), ``kConfig``, ``metadata``, ``log``
    and ``_badBits``.
    """

    config: Any
    kConfig: PsfMatchConfig
    metadata: Any
    log: Any
    _badBits: Callable[[], int]  # MakeKernelTask's

    def _prepareInputs(
        self, templateMaskedImage: Any, scienceMaskedImage: Any
    ) -> tuple[MaskedImage, MaskedImage, Placement | None, float]:
        """Check the inputs and return working copies (masked non-finite pixels zeroed): the
        whole template, the science image and, when the template's box is not the science
        image's, the template placed on the science box (`_placeTemplate`), all in internal
        units, and the unit scale (`psfmatch._hostile.unitScale`): a working pixel times it
        is the input's."""
        for name, mi in (
            ("templateMaskedImage", templateMaskedImage),
            ("scienceMaskedImage", scienceMaskedImage),
        ):
            if not isinstance(mi, MaskedImage):
                raise InvalidInputError(f"{name}: expected a MaskedImage, got {type(mi).__name__}")
        template = self._prepareOne(templateMaskedImage, "templateMaskedImage", self)
        science = self._prepareOne(scienceMaskedImage, "scienceMaskedImage", self)
        unitScale = _hostile.unitScale(science)
        self.metadata["internalUnitScale"] = unitScale
        if unitScale != 1.0:
            self.log.info(
                "Images in units where the science sky noise is %.3g: worked on divided by "
                "%.6g (2^%d), results given back in the images' units",
                _unitNoise(science),
                unitScale,
                int(math.log2(unitScale)),
            )
            template = scaled(template, 1.0 / unitScale)
            science = scaled(science, 1.0 / unitScale)
        placement = None
        onScience = template
        self.metadata["templatePlacedByOrigin"] = False
        if template.getBBox() != science.getBBox():
            placement = self._placeTemplate(template, science)
            onScience = cropView(placement.wide, science.getBBox())
        # The bits of a pixel in either image, a band of rows at a time: no image-sized
        # temporaries, each of which would be fresh memory page-faulted in on every call.
        badBits, noData = self._badBits(), Mask.getPlaneBitMask("NO_DATA")
        anyUsable, uncovered = False, 0
        ny = int(science.getDimensions()[1])
        for band in _rowBands(ny):
            either = onScience.mask[band] | science.mask[band]
            uncovered += int(np.count_nonzero(either & noData))
            anyUsable = anyUsable or bool(np.any((either & badBits) == 0))
        if not anyUsable:
            raise InvalidInputError(
                "every pixel is masked in the template or the science image (mask planes "
                f"{sorted(set(self.kConfig.badMaskPlanes))}); nothing to match"
            )
        # The reference's coverage: the science image's pixels where neither image is NO_DATA
        # (a template pixel outside the template's box is NO_DATA once placed).
        coverage = 1.0 - uncovered / science.mask.size
        self.metadata["templateCoveragePercent"] = 100.0 * coverage
        required = float(self.config.requiredTemplateFraction)
        if coverage < required:
            raise TemplateCoverageError(
                f"the template covers {100 * coverage:.3g}% of the science image (box "
                f"{science.getBBox()}) with data (pixels that neither image flags NO_DATA), "
                f"less than requiredTemplateFraction = {required:g} ({100 * required:g}%); "
                f"the template's box is {templateMaskedImage.getBBox()}",
                coverage,
            )
        return template, science, placement, unitScale

    def _placeTemplate(self, template: MaskedImage, science: MaskedImage) -> Placement:
        """The template on the science box by their origins, after checking that the stars
        agree with the origins (`OriginMismatchError` if they clearly do not)."""
        kConfig = self.kConfig
        margin = max(int(kConfig.kernelSize), int(getattr(kConfig, "kernelSizeMax", 0))) // 2
        (tx, ty), (sx, sy) = template.getXY0(), science.getXY0()
        originOffset = (tx - sx, ty - sy)
        self._checkOriginsAgainstStars(template, science, originOffset)
        placement = placeTemplate(template, science.getBBox(), margin)
        self.log.info(
            "Template box %s placed on the science box %s by their origins: its pixel (0, 0) "
            "on science pixel %s; %.1f%% of the science image covered",
            template.getBBox(),
            science.getBBox(),
            originOffset,
            100.0 * placement.coveredFraction,
        )
        self.metadata["templatePlacedByOrigin"] = True
        return placement

    def _checkOriginsAgainstStars(
        self, template: MaskedImage, science: MaskedImage, originOffset: tuple[int, int]
    ) -> None:
        """Raise `OriginMismatchError` when the brightest stars of the two images match at a
        shift other than the one their origins give (``originOffset``: the science pixel of
        the template's pixel (0, 0)). Silent when the stars cannot tell (too few, or no
        shift that a third of them agree on)."""
        badBits = self._badBits()
        threshold = max(10.0, float(self.config.selection.detectionThreshold))
        sStars = detectSources(science, threshold, badBits, measureRadii=False)
        tStars = detectSources(template, threshold, badBits, measureRadii=False)
        # Only the template's stars near the science image by the origins take part: a survey
        # template many times larger would otherwise fill the brightest few with stars the
        # science image does not have. The margin (half the science image, at least 64 px)
        # lets origins that are off by that much still be caught.
        if len(tStars):
            (tx, ty), (sx, sy) = template.getXY0(), science.getXY0()
            ny, nx = science.image.shape
            margin = max(64, max(nx, ny) // 2)
            x = np.asarray(tStars["x"]) + (tx - sx)  # science array coordinates, by origins
            y = np.asarray(tStars["y"]) + (ty - sy)
            near = (x > -margin) & (x < nx + margin) & (y > -margin) & (y < ny + margin)
            tStars = tStars[near]
        found = starOffset(sStars, tStars, expected=originOffset)
        if found is None:
            self.log.debug("Origins not checked against the stars: too few stars match")
            return
        dx, dy = originOffset
        agree = abs(found.dx - dx) <= 1.0 and abs(found.dy - dy) <= 1.0
        if agree or found.nExpected >= found.nMatched // 2:
            return
        (tx, ty), (sx, sy) = template.getXY0(), science.getXY0()
        raise OriginMismatchError(
            f"the images' origins and their stars disagree: by the origins (template xy0 "
            f"({tx}, {ty}), science xy0 ({sx}, {sy})) the template's pixel (0, 0) lies on "
            f"the science image's pixel ({dx}, {dy}), but {found.nMatched} of their brightest "
            f"stars match with it on pixel ({found.dx:.1f}, {found.dy:.1f}). If the two "
            "images are already on one pixel grid, ignore the origins (subtract(..., "
            "ignoreOrigins=True); command line --ignore-origins); otherwise correct the "
            "origins in the headers (CRVAL1A/CRVAL2A or LTV1/LTV2)",
            (int(dx), int(dy)),
            (found.dx, found.dy),
        )

    def _checkPositiveVariance(self, mi: MaskedImage, name: str, original: MaskedImage) -> None:
        """Raise `InvalidInputError` if the variance of ``mi`` (a working copy of ``original``)
        is 0 at a usable pixel: the image that is not convolved weights the fit and the
        difference; a zero there makes every candidate's χ² infinite."""
        if mi.variance.min() > 0:  # the usual case, in one pass (NaN fails the test)
            return
        if original.getBBox() != mi.getBBox():  # a template placed on the science box
            original = placeTemplate(original, mi.getBBox(), 0).wide
        badBits = self._badBits()
        finite = np.isfinite(original.image) & np.isfinite(original.variance)
        zero = (mi.variance <= 0) & ((mi.mask & badBits) == 0) & finite
        if zero.any():
            y, x = np.argwhere(zero)[0]
            x0, y0 = mi.getXY0()
            raise InvalidInputError(
                f"{name}: the variance is 0 at {int(zero.sum())} unmasked pixel(s), the first "
                f"at (x, y) = ({x + x0}, {y + y0}); the image that is not convolved needs a "
                "positive variance wherever it is not masked (give its variance, or mask "
                "those pixels)"
            )

    @staticmethod
    def _prepareOne(mi: MaskedImage, name: str, task: Any = None) -> MaskedImage:
        """The working version of one input, checked: read-only views of its own planes, or,
        when it has (masked) non-finite or absurd pixels, a copy with those zeroed and flagged
        ``NO_DATA`` (so that D is NaN with +inf variance wherever they reach). A view costs no
        memory (a 4096² pair's copies were 400 MB) and cannot be written by mistake.

        Absurd pixels (`psfmatch._hostile.absurdPixels`: finite values no measurement can
        have, such as a −1e30 "no data" sentinel) are treated as non-finite ones: unmasked,
        they are flagged ``BAD`` and ``NO_DATA`` with one warning giving how many and where
        (metadata ``<image>AbsurdPixelsFlagged``); masked, their value is zeroed all the same,
        so that no convolution or filter can carry it beyond its own mask bits."""
        # The usual, clean input is accepted from each plane's min and max (no temporaries);
        # a variance whose minimum is ≥ 0 has no negative pixel.
        anyNonFinite = False
        clean = _allFinite(mi.image) and _allFinite(mi.variance) and mi.variance.min() >= 0
        nonFinite: np.ndarray | None = None
        if not clean:
            nonFinite = ~np.isfinite(mi.image)
            nonFinite |= ~np.isfinite(mi.variance)
            anyNonFinite = bool(nonFinite.any())
            if anyNonFinite:
                anyBit = -1  # a non-finite pixel is acceptable when it carries any mask bit
                _checkFinite(mi, name, anyBit)
            negative = mi.variance < 0
            if negative.any():
                y, x = np.argwhere(negative)[0]
                raise InvalidInputError(
                    f"{name}: the variance is negative at (x, y) = ({x + mi.getXY0()[0]}, "
                    f"{y + mi.getXY0()[1]})"
                )
        absurd = absurdPixels(mi, nonFinite if anyNonFinite else None)
        key = name.replace("MaskedImage", "")
        if task is not None:
            task.metadata[f"{key}AbsurdPixelsFlagged"] = 0
        if not anyNonFinite and absurd is None:
            return MaskedImage(
                _readOnly(mi.image.view()),
                _readOnly(mi.mask.view()),
                _readOnly(mi.variance.view()),
                xy0=mi.getXY0(),
            )
        work = mi.clone()
        noData = Mask.getPlaneBitMask("NO_DATA")
        if anyNonFinite:
            assert nonFinite is not None
            work.image[nonFinite] = 0.0
            work.variance[nonFinite] = 0.0
            work.mask[nonFinite] |= noData
        if absurd is not None:
            unmasked = absurd & (mi.mask == 0)
            nUnmasked = int(np.count_nonzero(unmasked))
            if nUnmasked:
                _warnAbsurd(task, mi, key, unmasked, nUnmasked)
                work.mask[unmasked] |= Mask.getPlaneBitMask("BAD") | noData
            if task is not None:
                task.metadata[f"{key}AbsurdPixelsFlagged"] = nUnmasked
            work.image[absurd] = 0.0
        return work

    def _scaleVariance(
        self, mi: MaskedImage, which: str, factor: float | None = None
    ) -> float | None:
        """Rescale ``mi``'s variance in place by the measured (or given) factor, if usable;
        return the factor applied (None if it was not)."""
        key = f"scale{which}VarianceFactor"
        if factor is None:
            factor = _varianceScaleFactor(mi, self._badBits())
        limit = self.config.maxVarianceScaleFactor
        if not self._varianceScaleUsable(factor):
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
            return None
        if not _PLAUSIBLE_VARIANCE_FACTORS[0] <= factor <= _PLAUSIBLE_VARIANCE_FACTORS[1]:
            self.log.warning(
                "%s variance plane multiplied by %.4g, outside [%.3g, %.3g]: the plane given "
                "does not describe the pixel noise (sky σ off by a factor %.3g); check how it "
                "was made",
                which,
                factor,
                *_PLAUSIBLE_VARIANCE_FACTORS,
                math.sqrt(factor),
            )
        # A new plane: the working version may be a view of the caller's.
        mi.variance = mi.variance * mi.variance.dtype.type(factor)
        self.metadata[key] = factor
        self.metadata[f"scale{which}VarianceApplied"] = True
        return factor

    def _varianceScaleUsable(self, factor: float) -> bool:
        limit = self.config.maxVarianceScaleFactor
        return math.isfinite(factor) and 1.0 / limit <= factor <= limit

    def templateSettings(self) -> tuple[tuple[str, Any], ...]:
        """The configuration values `analyzeTemplate`'s answer depends on, as ``(name, value)``
        pairs: a `TemplateAnalysis` is only accepted by a task whose values are the same
        (`psfmatch.batch` keys its template cache on them)."""
        config = self.config
        return (
            ("badBits", int(self._badBits())),
            ("doScaleVariance", bool(config.doScaleVariance)),
            ("maxVarianceScaleFactor", float(config.maxVarianceScaleFactor)),
            ("doDetectDiaSources", bool(config.doDetectDiaSources)),
            ("diaSourceThreshold", float(config.diaSourceThreshold)),
            ("medianFilled", config.mode == "preconvolve"),
        )

    def _templateDetections(self, fit: _Subtraction) -> tuple[np.ndarray, tuple[int, int]]:
        """The template's detections (`analyzeTemplate`'s, or made now) and the origin of the
        image they were made on: the whole template when it was placed on the science box."""
        template = fit.template if fit.templateFull is None else fit.templateFull
        if fit.templateDiaDetections is not None:
            return fit.templateDiaDetections, template.getXY0()
        if fit.templateFull is not None and fit.templateVarianceFactor is not None:
            factor = fit.templateVarianceFactor
            template = MaskedImage(
                template.image,
                template.mask,
                template.variance * template.variance.dtype.type(factor),
                xy0=template.getXY0(),
            )
        detections = detectSources(
            template, self.config.diaSourceThreshold, self._badBits(), measureRadii=False
        )
        return detections, template.getXY0()

    @timeMethod
    def analyzeTemplate(self, templateMaskedImage: MaskedImage) -> TemplateAnalysis:
        """Do the work that depends on the template alone, once for many science images.

        Parameters
        ----------
        templateMaskedImage : `MaskedImage`
            The template; never modified.

        Returns
        -------
        analysis : `TemplateAnalysis`
            To pass as ``templateAnalysis`` to `subtractMaskedImages` or `matchMaskedImages`
            of a task with the same configuration (the values in ``analysis.settings``), with
            this same template: the answer is then bit for bit the one without it.

        Raises
        ------
        InvalidInputError
            Not a `MaskedImage`, NaNs outside the mask, a negative variance.
        """
        if not isinstance(templateMaskedImage, MaskedImage):
            raise InvalidInputError(
                f"templateMaskedImage: expected a MaskedImage, got "
                f"{type(templateMaskedImage).__name__}"
            )
        # The same steps, on the same working copy, as _fit.
        work = self._prepareOne(templateMaskedImage, "templateMaskedImage", self)
        badBits = self._badBits()
        factor: float | None = None
        if self.config.doScaleVariance:
            factor = _varianceScaleFactor(work, badBits)
            if self._varianceScaleUsable(factor):
                work.variance = work.variance * work.variance.dtype.type(factor)
        diaDetections = None
        if self.config.doDetectDiaSources:
            filled = _medianFilled(work, badBits) if self.config.mode == "preconvolve" else work
            diaDetections = _readOnly(
                detectSources(filled, self.config.diaSourceThreshold, badBits, measureRadii=False)
            )
        ny, nx = templateMaskedImage.image.shape
        return TemplateAnalysis(
            shape=(int(ny), int(nx)),
            checksum=_pixelChecksum(templateMaskedImage),
            settings=self.templateSettings(),
            varianceScaleFactor=factor,
            diaDetections=diaDetections,
        )

    def _checkTemplateAnalysis(self, analysis: Any, template: MaskedImage) -> TemplateAnalysis:
        """``analysis`` if it was made from ``template`` with this task's settings."""
        if not isinstance(analysis, TemplateAnalysis):
            raise InvalidInputError(
                f"templateAnalysis: expected a TemplateAnalysis, got {type(analysis).__name__}"
            )
        settings = self.templateSettings()
        if analysis.settings != settings:
            differ = [
                f"{name} {theirs!r} (this task: {ours!r})"
                for (name, theirs), (_, ours) in zip(analysis.settings, settings, strict=True)
                if theirs != ours
            ]
            raise InvalidInputError(
                "templateAnalysis: made with other settings: "
                + ", ".join(differ)
                + "; make it with a task of this configuration"
            )
        shape = tuple(template.image.shape)
        if analysis.shape != shape:
            raise InvalidInputError(
                f"templateAnalysis: made from a template of shape {analysis.shape}, but the "
                f"template has shape {shape}"
            )
        if analysis.checksum != _pixelChecksum(template):
            raise InvalidInputError(
                "templateAnalysis: made from a template with other pixels (its image, mask or "
                "variance checksum differs)"
            )
        return analysis
