# SPDX-License-Identifier: BSD-3-Clause
"""Hostile values and units (issue 20): what keeps a subtraction from a silent wrong answer.

On the way in (`psfmatch._inputs`): absurd finite pixel values (`absurdPixels`) are flagged and
zeroed like non-finite ones, and the pair is worked on in units where the science sky noise is
near `_UNIT_NOISE` when it is far from it (`unitScale`). On the way out
(`psfmatch.subtract_images`): every ``NO_DATA`` pixel of D is NaN with +inf variance
(`blankNoData`), the results go back to the images' units (`toUnits`), a forced deconvolution
warns (`checkDirection`), and a difference far from its own noise raises
`PoorSubtractionError` (`checkQuality`).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from .detect_and_measure import differenceChi2
from .errors import PoorSubtractionError
from .image import Mask, MaskedImage

if TYPE_CHECKING:
    from ._modes import _Subtraction


#: A finite pixel further than this many robust σ (1.4826·MAD of the image) from the image's
#: median is no measurement (`absurdPixels`). Real dynamic ranges stay well below it: a
#: saturated star is ~1e4 σ of sky, a deep space-telescope image's brightest unsaturated
#: peaks ~1e6 σ. Above it a pixel is a sentinel (−1e30), an overflow or a corrupted value, and
#: the decorrelation filter's tails (≤ 1e-8 of the largest |D|, decorrelate.py) would carry
#: ≥ 0.1 σ of it to every pixel of the image.
_ABSURD_SIGMAS = 1e7

#: The largest finite float32: a pixel beyond it cannot be held by a float32 plane (D, sep).
_FLOAT32_MAX = float(np.finfo(np.float32).max)

#: About this many pixels are sampled for the median and MAD of `absurdPixels`.
_ABSURD_SAMPLE = 1 << 16


def _robustLocation(image: np.ndarray, mask: np.ndarray) -> tuple[float, float]:
    """Median and 1.4826·MAD of a sample of the unmasked finite pixels of ``image`` (every
    pixel for small images); (NaN, NaN) if there is none. Scale-free: the same answer, times
    the scale, for the image in any units."""
    ny, nx = image.shape
    step = max(1, int(math.sqrt(ny * nx / _ABSURD_SAMPLE)))
    sample = image[::step, ::step]
    good = np.isfinite(sample) & (mask[::step, ::step] == 0)
    values = sample[good].astype(np.float64)
    if values.size == 0:
        return math.nan, math.nan
    median = float(np.median(values))
    deviation = np.abs(values - median)
    mad = float(np.median(deviation))
    # A noise-free image (a model, a simulation) has a MAD of rounding errors: its spread is
    # then at least 1 % of its stars' (the 99th percentile of the deviations), so that its
    # own stars are never taken for absurd values.
    spread = 0.01 * float(np.percentile(deviation, 99.0))
    return median, max(1.482602218505602 * mad, spread)


def absurdPixels(mi: MaskedImage, nonFinite: np.ndarray | None) -> np.ndarray | None:
    """The finite pixels of ``mi`` whose values no measurement has: further than
    `_ABSURD_SIGMAS` robust σ from the median (judged on the image itself, so in any units;
    skipped for an image without scatter, such as a noiseless template), or beyond float32's
    range. None when there is none (decided from the image's min and max, without
    temporaries, for the usual clean image)."""
    image = mi.image
    finite = image if nonFinite is None else np.where(nonFinite, 0.0, image)
    lo, hi = float(finite.min()), float(finite.max())
    median, sigma = _robustLocation(image, mi.mask)
    # Nor below the noise the variance plane gives, where it gives one.
    sigma = max(sigma, _planeNoise(mi)) if math.isfinite(sigma) else sigma
    limit = _ABSURD_SIGMAS * sigma if math.isfinite(sigma) and sigma > 0 else math.inf
    low = max(median - limit, -_FLOAT32_MAX) if math.isfinite(median) else -_FLOAT32_MAX
    high = min(median + limit, _FLOAT32_MAX) if math.isfinite(median) else _FLOAT32_MAX
    if lo >= low and hi <= high:
        return None
    with np.errstate(invalid="ignore"):
        absurd = (finite < low) | (finite > high)
    if nonFinite is not None:
        absurd &= ~nonFinite
    return absurd if absurd.any() else None


#: The working units: the science sky noise is brought near this σ when it is far from it
#: (`unitScale`). Typical images in ADU or electrons (σ of ~1 to ~1000) are worked on as given.
_UNIT_NOISE = 8.0

#: Images whose sky noise is within 2**±_UNIT_OCTAVES of `_UNIT_NOISE` are not rescaled.
_UNIT_OCTAVES = 10


def _planeNoise(mi: MaskedImage) -> float:
    """The square root of the median of the positive finite variances of ``mi`` over unmasked
    pixels (a sample); 0 when there is none."""
    ny, nx = mi.image.shape
    step = max(1, int(math.sqrt(ny * nx / _ABSURD_SAMPLE)))
    var = mi.variance[::step, ::step]
    with np.errstate(invalid="ignore"):
        good = (mi.mask[::step, ::step] == 0) & np.isfinite(var) & (var > 0)
    if not np.any(good):
        return 0.0
    return math.sqrt(float(np.median(var[good].astype(np.float64))))


def _unitNoise(mi: MaskedImage) -> float:
    """The science image's typical per-pixel noise: `_planeNoise`, else its robust σ; NaN if
    neither is known."""
    noise = _planeNoise(mi)
    if noise > 0:
        return noise
    _, sigma = _robustLocation(mi.image, mi.mask)
    return sigma if sigma > 0 else math.nan


def unitScale(science: MaskedImage) -> float:
    """A power of two ``s`` such that the science image's sky noise over ``s`` is within a
    factor √2 of `_UNIT_NOISE`, or 1 when it already is within 2**±`_UNIT_OCTAVES` of it.

    Several steps have absolute scales (the kernel fit's condition number and rank
    tolerance weigh the background term, whose normal-matrix entries go as 1/variance,
    against the kernel terms, which do not scale; sep's single precision): images in
    physical units (×1e-10) lost every star and ×1e10 dropped the background. Working on the
    images divided by ``s`` makes the answer the same, up to the scale, in any units; a power
    of two keeps the division exact."""
    noise = _unitNoise(science)
    if not (math.isfinite(noise) and noise > 0):
        return 1.0
    octaves = round(math.log2(noise / _UNIT_NOISE))
    if abs(octaves) <= _UNIT_OCTAVES:
        return 1.0
    return math.ldexp(1.0, octaves)


def scaled(mi: MaskedImage, factor: float) -> MaskedImage:
    """``mi`` times ``factor`` (variance times its square), in new planes of the same
    dtype; the mask is shared."""
    f = mi.image.dtype.type(factor)
    f2 = mi.variance.dtype.type(factor * factor)
    return MaskedImage(mi.image * f, mi.mask, mi.variance * f2, xy0=mi.getXY0())


def blankNoData(mi: MaskedImage) -> None:
    """NaN and +inf variance in every ``NO_DATA`` pixel of a difference image (as
    `psfmatch._align_pair` does for aligned pairs)."""
    bit = Mask.getPlaneBitMask("NO_DATA")
    ny = mi.image.shape[0]
    for band in (slice(y, min(y + 16, ny)) for y in range(0, ny, 16)):  # small temporaries
        noData = (mi.mask[band] & bit) != 0
        if noData.any():
            mi.image[band][noData] = np.nan
            mi.variance[band][noData] = np.inf


def toUnits(images: list[MaskedImage | None], scale: float) -> None:
    """Multiply each image (in place: the task's own planes) by ``scale``, its variance by
    ``scale²``: from the working units back to the inputs' (`psfmatch._inputs.unitScale`)."""
    if scale == 1.0:
        return
    seen: set[int] = set()
    for mi in images:
        if mi is None or id(mi) in seen:
            continue
        seen.add(id(mi))
        mi.image *= mi.image.dtype.type(scale)
        mi.variance *= mi.variance.dtype.type(scale * scale)


#: A forced mode whose convolved image's FWHM exceeds the other's by more than this factor
#: deconvolves (`ImagePsfMatchTask._checkDirection`). The FWHMs measured from the same stars
#: scatter by ~1 % between two images of one PSF; 5 % is beyond that, and a kernel that must
#: narrow a PSF by 5 % already amplifies the noise at high frequencies.
_DECONVOLUTION_TOLERANCE = 1.05


def checkDirection(task: Any, modeName: str, sizes: Any) -> None:
    """Warn once, and say so in the metadata (``deconvolution``), when a mode the user
    forced convolves the image with the broader PSF: the kernel must then sharpen it, which
    it can only do by amplifying noise (a kernel sum off by several per cent and spurious
    detections around every star). ``mode="auto"`` never chooses that."""
    convolved = {"convolveTemplate": "template", "convolveScience": "science"}.get(modeName)
    deconvolves = False
    if convolved is not None:
        target, other = (
            (sizes.template, sizes.science)
            if convolved == "template"
            else (sizes.science, sizes.template)
        )
        deconvolves = bool(target > _DECONVOLUTION_TOLERANCE * other)
        if deconvolves:
            task.log.warning(
                "mode=%s deconvolves: the %s image's PSF (FWHM %.2f px) is broader than "
                "the %s image's (FWHM %.2f px), so the matching kernel must sharpen it; "
                "expect a biased kernel sum and spurious detections. Use mode='auto' (or "
                "'%s'), which convolves the image with the narrower PSF",
                modeName,
                convolved,
                target,
                "science" if convolved == "template" else "template",
                other,
                "convolveScience" if convolved == "template" else "convolveTemplate",
            )
    task.metadata["deconvolution"] = deconvolves


def checkQuality(task: Any, fit: _Subtraction, difference: MaskedImage) -> None:
    """Raise `PoorSubtractionError` when D is far from its own noise: the mean of (D/σ)²
    over its sky pixels (`differenceChi2`, metadata ``differenceSkyChi2``) above
    ``maxDifferenceChi2``, unless ``allowPoorSubtraction``. Without ``doSubtractBackground``
    D holds the differential background by design: the figure is recorded, not judged."""
    badBits = Mask.getPlaneBitMask(list(task.config.diaSourceBadMaskPlanes), skipUnknown=True)
    # A score image's sources are wider than the inputs' by its filter's half-width.
    grow = 2 + (0 if fit.preConvKernel is None else fit.preConvKernel.shape[0] // 2)
    chi2, nSky = differenceChi2(difference, badBits, (fit.science, fit.template), grow)
    task.metadata["differenceSkyChi2"] = chi2 if math.isfinite(chi2) else "nan"
    limit = float(task.config.maxDifferenceChi2)
    if not (math.isfinite(chi2) and chi2 > limit) or not task.config.doSubtractBackground:
        return
    message = (
        f"the difference image is far from its own noise: the mean of (D/σ)² over its "
        f"{nSky} sky pixels is {chi2:.4g}, more than maxDifferenceChi2 = {limit:g} (a "
        "good subtraction gives about 1): the kernel does not match the images (too "
        "high a spatial order for the stars, a deconvolution, a wrong variance plane)"
    )
    if task.config.allowPoorSubtraction:
        task.log.warning("%s; kept, as allowPoorSubtraction asks", message)
        return
    raise PoorSubtractionError(
        message + "; set allowPoorSubtraction (command line --allow-poor-subtraction) to "
        "keep such a result",
        chi2,
        limit,
    )
