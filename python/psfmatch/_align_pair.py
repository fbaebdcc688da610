# SPDX-License-Identifier: BSD-3-Clause
"""A subtraction of two images on two pixel grids (`psfmatch.subtract`'s ``align``): which
grid the difference is on (`checkAlign`), the box of the other image that the resampling needs,
and `subtractAligned`, which resamples one image with `psfmatch.align.alignMaskedImage` (the
variance that fits its part in the subtraction) and runs the task on the pair.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import numpy as np

from .align import AlignedImage, _mapPoints, alignMaskedImage, readWcs
from .errors import InvalidInputError
from .image import Mask, MaskedImage

_log = logging.getLogger("psfmatch.align")


#: ``align`` values of `psfmatch.subtract`: the grid the difference is computed on.
ALIGN_GRIDS = {"wcs": "science", "wcs-template": "template"}

#: Points per side of the science image mapped to find its footprint on the template grid.
_EDGE_STEP = 32


def checkAlign(align: Any) -> str | None:
    """The grid (``"science"`` or ``"template"``) that an ``align`` value asks for, or None
    (no alignment: ``None``, ``"none"`` or ``False``)."""
    if align is None or align is False or align == "none":
        return None
    if isinstance(align, str) and align in ALIGN_GRIDS:
        return ALIGN_GRIDS[align]
    raise InvalidInputError(
        f"align: expected None, 'none', 'wcs' (the template resampled onto the science "
        f"image's grid) or 'wcs-template' (the science image onto the template's), got {align!r}"
    )


def _footprintBox(
    scienceWcs: Any, templateWcs: Any, shape: tuple[int, int]
) -> tuple[int, int, int, int]:
    """The box of template array coordinates that holds the science image's footprint."""
    ny, nx = shape
    xs = np.unique(np.append(np.arange(0, nx, _EDGE_STEP), nx - 1)).astype(float)
    ys = np.unique(np.append(np.arange(0, ny, _EDGE_STEP), ny - 1)).astype(float)
    # The pixels' outer edges, half a pixel beyond the centres of the border pixels.
    x = np.concatenate([xs, xs, np.full(len(ys), -0.5), np.full(len(ys), nx - 0.5)])
    y = np.concatenate([np.full(len(xs), -0.5), np.full(len(xs), ny - 0.5), ys, ys])
    x = np.concatenate([x, [-0.5, nx - 0.5, -0.5, nx - 0.5]])
    y = np.concatenate([y, [-0.5, -0.5, ny - 0.5, ny - 0.5]])
    u, v = _mapPoints(scienceWcs, templateWcs, x, y)
    good = np.isfinite(u) & np.isfinite(v)
    if not good.any():
        raise InvalidInputError(
            "align='wcs-template': the science image's corners have no place on the template's "
            "grid (its WCS does not reach the template's sky)"
        )
    x0, y0 = math.floor(u[good].min() + 0.5), math.floor(v[good].min() + 0.5)
    x1, y1 = math.ceil(u[good].max() - 0.5), math.ceil(v[good].max() - 0.5)
    return x0, y0, x1 - x0 + 1, y1 - y0 + 1


def _convolvedRoles(mode: str) -> tuple[bool, bool]:
    """Whether (template, science) are convolved in ``mode``; "auto" is taken as the template
    (the usual sharper image), and checked after the fit."""
    if mode == "convolveScience":
        return False, True
    if mode == "preconvolve":
        return True, True  # the science image is filtered by its own PSF
    return True, False


def _convolvedByResult(convolvedImage: str) -> tuple[bool, bool]:
    return {
        "Template": (True, False),
        "Science": (False, True),
        "Preconvolution": (True, True),
    }.get(convolvedImage, (True, False))


def _blankNoData(mi: MaskedImage) -> None:
    """NaN and +inf variance in every ``NO_DATA`` pixel of a difference image."""
    noData = (mi.mask & Mask.getPlaneBitMask("NO_DATA")) != 0
    if noData.any():
        mi.image[noData] = np.nan
        mi.variance[noData] = np.inf


def subtractAligned(
    task: Any,
    science: MaskedImage,
    template: MaskedImage,
    scienceWcs: Any,
    templateWcs: Any,
    align: str,
    **subtractKwargs: Any,
) -> tuple[Any, Any]:
    """`ImagePsfMatchTask.subtractMaskedImages` of a pair on two pixel grids.

    The template is resampled onto the science image's grid (``align="wcs"``; the box grown
    by the kernel's half-width, as a placed template is), or the science image onto the box
    of the template's grid that holds its footprint (``"wcs-template"``). The image that is
    resampled gets the variance that fits its part in the subtraction: ``"smoothed"`` when it
    will be convolved (the kernel sums many of its correlated pixels), ``"pixel"`` when it
    will not. With ``mode="auto"`` the template is assumed convolved; if the fit convolves the
    other image, the pair is resampled again with the other variance and subtracted again.
    Variance planes are rescaled (``doScaleVariance``) before resampling, where the pixels'
    scatter measures the noise their plane describes, and not again after. Every ``NO_DATA``
    pixel of the difference is NaN with variance +inf.

    Returns
    -------
    result : `Struct`
        What ``subtractMaskedImages`` returned.
    wcs : `astropy.wcs.WCS`
        The WCS of the difference image's pixels.

    Raises
    ------
    InvalidInputError
        A missing or unusable WCS.
    TemplateCoverageError
        The template's footprint covers less than ``requiredTemplateFraction`` of the science
        image.
    OriginMismatchError
        After resampling, the two images' stars still disagree on where the template lies:
        the WCSs do not describe the same sky.
    """
    from .errors import OriginMismatchError, TemplateCoverageError

    grid = checkAlign(align)
    assert grid is not None
    sciWcs = readWcs(scienceWcs, "scienceWcs")
    tmpWcs = readWcs(templateWcs, "templateWcs")
    config = task.config
    kConfig = task.kConfig
    # New MaskedImages: _scaleVariance replaces their variance arrays, never the caller's.
    science = MaskedImage(science.image, science.mask, science.variance, xy0=science.getXY0())
    template = MaskedImage(template.image, template.mask, template.variance, xy0=template.getXY0())
    rescale = bool(config.doScaleVariance)
    if rescale:
        task._scaleVariance(template, "Template")
        task._scaleVariance(science, "Science")
    threads = int(kConfig.nThreads) if int(getattr(kConfig, "nThreads", 0) or 0) > 0 else None
    margin = max(int(kConfig.kernelSize), int(getattr(kConfig, "kernelSizeMax", 0))) // 2

    def resample(convolved: bool) -> tuple[MaskedImage, MaskedImage, AlignedImage]:
        begin = time.perf_counter()
        try:
            return _resample(convolved)
        finally:
            task.metadata["alignSeconds"] = time.perf_counter() - begin

    def _resample(convolved: bool) -> tuple[MaskedImage, MaskedImage, AlignedImage]:
        kind = "smoothed" if convolved else "pixel"
        if grid == "science":
            ny, nx = science.image.shape
            aligned = alignMaskedImage(
                template,
                tmpWcs,
                sciWcs,
                (-margin, -margin, nx + 2 * margin, ny + 2 * margin),
                targetXy0=science.getXY0(),
                core=(0, 0, nx, ny),
                variance=kind,
                nThreads=threads,
                name="template",
            )
            return aligned.maskedImage, science, aligned
        box = _footprintBox(sciWcs, tmpWcs, science.image.shape)
        aligned = alignMaskedImage(
            science,
            sciWcs,
            tmpWcs,
            box,
            targetXy0=template.getXY0(),
            variance=kind,
            nThreads=threads,
            name="science",
        )
        return template, aligned.maskedImage, aligned

    templateConvolved, scienceConvolved = _convolvedRoles(str(config.mode))
    resampledConvolved = templateConvolved if grid == "science" else scienceConvolved
    tmpA, sciA, aligned = resample(resampledConvolved)
    required = float(config.requiredTemplateFraction)
    if grid == "science" and aligned.footprintFraction < required:
        raise TemplateCoverageError(
            f"by the WCSs, the template covers {100 * aligned.footprintFraction:.3g}% of the "
            f"science image, less than requiredTemplateFraction = {required:g} "
            f"({100 * required:g}%)",
            aligned.footprintFraction,
        )
    for key, value in aligned.metadata().items():
        task.metadata[key] = value
    task.metadata["alignGrid"] = grid
    task.metadata["alignResampled"] = "template" if grid == "science" else "science"
    task.metadata["alignVarianceRescaledFirst"] = rescale

    def run(tmp: MaskedImage, sci: MaskedImage) -> Any:
        config.doScaleVariance = False
        try:
            return task.subtractMaskedImages(tmp, sci, **subtractKwargs)
        except OriginMismatchError as err:
            dx, dy = err.starOffset or (math.nan, math.nan)
            ox, oy = err.originOffset or (0, 0)
            raise OriginMismatchError(
                f"after resampling the {task.metadata['alignResampled']} by the WCSs, the "
                f"brightest stars of the two images still disagree by ({dx - ox:.1f}, "
                f"{dy - oy:.1f}) pixels: the two WCSs do not place the images on the same sky "
                "(check both headers' astrometry)",
                err.originOffset,
                err.starOffset,
            ) from err
        finally:
            config.doScaleVariance = rescale

    res = run(tmpA, sciA)
    byResult = _convolvedByResult(str(res.convolvedImage))
    actual = byResult[0] if grid == "science" else byResult[1]
    if actual != resampledConvolved:
        _log.info(
            "the %s was %s; resampling it again with the variance for that and subtracting again",
            task.metadata["alignResampled"],
            "convolved" if actual else "not convolved",
        )
        asked = config.mode
        # The fit's choice, so that the second fit does not choose again.
        config.mode = {"Template": "convolveTemplate", "Science": "convolveScience"}.get(
            str(res.convolvedImage), str(asked)
        )
        try:
            tmpA, sciA, aligned = resample(actual)
            task.metadata["alignVariance"] = aligned.variance
            res = run(tmpA, sciA)
        finally:
            config.mode = asked
    raw = res.subtractedMaskedImageRaw
    _blankNoData(res.subtractedMaskedImage)
    if raw is not None and raw is not res.subtractedMaskedImage:
        _blankNoData(raw)
    wcs = sciWcs if grid == "science" else aligned.wcs
    return res, wcs
