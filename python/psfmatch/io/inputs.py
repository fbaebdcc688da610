# SPDX-License-Identifier: BSD-3-Clause
"""`readImage`: any supported input as a `~psfmatch.image.MaskedImage`, with a separate
variance, sigma or mask, a variance estimated when none is given (from the sky's scatter,
or HOTPANTS' gain and read-noise model), and HOTPANTS' valid data range applied to the mask."""

from __future__ import annotations

import logging
import math
import os
from typing import Any, cast

import numpy as np

from .._types import ImageInput, MaskInput, VarianceInput
from ..errors import InvalidInputError
from ..image import MaskedImage
from .layouts import _readPlaneFile, readMaskedImage
from .nddata import _fromNDData, _isNDData
from .paths import _asPath, _isPath
from .planes import _mapMask, _maskFromArray, _native, _planeBit

_log = logging.getLogger("psfmatch.io")

_SKY_CLIP_SIGMA = 3.0
"""Clipping threshold (in standard deviations) of the sky statistics of the variance estimate."""

_SKY_CLIP_ITERS = 10
"""Maximum clipping iterations of the sky statistics."""

_MIN_SKY_PIXELS = 25
# The sky's scatter about a smooth background of meshes this size (sep's) is the pixel noise;
# when the image-wide scatter exceeds it by more than the factor, the sky is not flat (a
# gradient) and the local one is used. A flat simulated sky gives a ratio within 0.3 % of 1;
# 1.25 is the bound the variance rescaling warns at.
_SKY_MESH = 32
_GRADIENT_INFLATION = 1.25
"""Fewest unmasked finite pixels from which a sky variance is estimated."""

_SKY_SAMPLE = 1 << 20
"""The most pixels the sky statistics of an estimated variance look at (`_skyStatistics`)."""


def _floatPlane(value: Any, name: str, shape: tuple[int, ...]) -> np.ndarray:
    """A variance or sigma argument (array, scalar or FITS path) as a float64 array."""
    if _isPath(value):
        # A file's VARIANCE plane is a variance, never a sigma.
        role = "VARIANCE" if name == "variance" else None
        value, _ = _readPlaneFile(_asPath(value, name), role, shape)
    a = np.asarray(np.ma.getdata(value))
    if a.dtype.kind not in "fiub":
        raise InvalidInputError(f"{name}: expected real numbers, got dtype {a.dtype}")
    if a.ndim == 0:
        if not math.isfinite(float(a)):
            # One value for every pixel: NaN flagged them all NO_DATA, reported as "every
            # pixel is masked"; inf gave every pixel an infinite variance.
            raise InvalidInputError(f"{name}: a constant {name} must be finite, got {float(a)}")
        return np.full(shape, float(a), dtype=np.float64)
    if a.shape != shape:
        raise InvalidInputError(f"{name}: shape {a.shape} differs from the image's {shape}")
    return a.astype(np.float64)


class _VarianceEstimateError(InvalidInputError):
    """A variance had to be estimated and could not be; ``reason`` says why, so that a caller
    can name its own options that give a variance (`psfmatch.subtract`, the command line)."""

    reason: str = ""


def _cannotEstimate(where: str, reason: str) -> _VarianceEstimateError:
    err = _VarianceEstimateError(
        f"{where}cannot estimate a variance: {reason}; pass variance= or sigma=, or gain= with "
        "readNoise="
    )
    err.reason = reason
    return err


_MODEL_SKY_MISMATCH = 2.0
"""Factor by which the gain and read-noise variance at the sky may differ from the sky's
measured scatter before a warning says the model does not describe the image."""


def _skyStatistics(image: np.ndarray, good: np.ndarray) -> tuple[float, float]:
    """Clipped median and MAD-based standard deviation of the ``good`` pixels, from every
    k-th pixel of the image (raster order) when it has more than ``_SKY_SAMPLE`` of them.

    A sample of 2**20 pixels measures σ to ~0.1 % (the MAD's relative error is about
    1.17/sqrt(N)), far below what the variance rescaling of a subtraction corrects anyway; the
    clipped statistics of all of a 4096² image's pixels took seconds (a sort per iteration).
    k has no common factor with the row length, so the sample visits every column alike (a
    k dividing it would take the same columns of every row: a column pattern would alias)."""
    # Imported here: only an estimated variance needs astropy.stats.
    from astropy.stats import sigma_clipped_stats

    step = max(1, -(-image.size // _SKY_SAMPLE))  # ceil: at most ~_SKY_SAMPLE pixels
    while step > 1 and math.gcd(step, image.shape[-1]) != 1:
        step += 1
    values = image.reshape(-1)[::step][good.reshape(-1)[::step]] if step > 1 else image[good]
    nGood = int(np.count_nonzero(good))
    if step > 1 and values.size < max(_MIN_SKY_PIXELS, nGood // (2 * step)):
        values = image[good]  # good pixels the sample happens to miss: take all of them
    _, sky, skySigma = sigma_clipped_stats(
        # In float64: the clipping's variance squares the values, which overflows float32 for
        # an image in units of ~1e19 and more (every pixel's variance was then inf).
        values.astype(np.float64),
        sigma=_SKY_CLIP_SIGMA,
        maxiters=_SKY_CLIP_ITERS,
        cenfunc="median",
        stdfunc="mad_std",
    )
    return float(sky), float(skySigma)


def _noiseModelVariance(
    image: np.ndarray,
    mask: np.ndarray,
    gain: float,
    readNoise: float,
    info: dict[str, Any],
    where: str,
) -> np.ndarray:
    """HOTPANTS' variance from a gain and a read noise: ``|image| / gain + (readNoise / gain)²``."""
    finite = np.isfinite(image)
    variance = np.abs(np.where(finite, image.astype(np.float64), 0.0)) / gain
    variance += (readNoise / gain) ** 2
    info.update(varianceEstimated=True, varianceModel="gainReadNoise", gain=gain)
    info["readNoise"] = readNoise
    _log.info(
        "%sno variance given: |image|/gain + (readNoise/gain)^2 with gain %g e-/ADU and read "
        "noise %g e- (HOTPANTS' noise model)",
        where,
        gain,
        readNoise,
    )
    # A cross-check, not part of the model: the model's variance at the sky level against the
    # sky's measured scatter. A sky-subtracted image (the model needs the sky in the pixel
    # values) or a wrong gain shows up as a large factor between them.
    good = finite & (mask == 0)
    if int(good.sum()) >= _MIN_SKY_PIXELS:
        sky, skySigma = _skyStatistics(image, good)
        expected = abs(sky) / gain + (readNoise / gain) ** 2
        measured = skySigma**2
        info.update(skyLevel=sky, skySigma=skySigma, skyPixels=int(good.sum()))
        ratio = expected / measured if measured > 0 else math.inf
        if measured > 0 and not (
            expected > 0 and 1.0 / _MODEL_SKY_MISMATCH <= ratio <= _MODEL_SKY_MISMATCH
        ):
            cause = (
                "is the image sky-subtracted (the model needs the sky in the pixel values), or "
                "the gain too large?"
                if measured > expected
                else "is the gain too small or the read noise too large?"
            )
            _log.warning(
                "%sthe variance from gain %g e-/ADU and read noise %g e- is %.4g at the sky "
                "level %.4g, but the sky's pixels scatter with a variance of %.4g (%.2g times "
                "that): %s Give the variance instead, or no read noise to use the sky's scatter",
                where,
                gain,
                readNoise,
                expected,
                sky,
                measured,
                measured / expected if expected > 0 else math.inf,
                cause,
            )
    return variance


def _localSkySigma(image: np.ndarray, good: np.ndarray, sky: float, skySigma: float) -> float:
    """The clipped MAD scatter of the ``good`` pixels about sep's smooth mesh background,
    NaN when it cannot be measured. Worked on in units of ``skySigma`` about ``sky``, so that
    sep's float32 arithmetic neither overflows nor underflows whatever the image's units."""
    import sep

    scaled = np.where(good, (image.astype(np.float64) - sky) / skySigma, 0.0).astype(np.float32)
    try:
        background = sep.Background(
            scaled, mask=~good, bw=_SKY_MESH, bh=_SKY_MESH, fw=3, fh=3
        ).back()
    except Exception:  # sep raises bare Exceptions (an image smaller than a mesh, ...)
        return math.nan
    residual = scaled - background
    _, sigma = _skyStatistics(residual, good & np.isfinite(residual))
    return sigma * skySigma


def _estimateVariance(
    image: np.ndarray,
    mask: np.ndarray,
    gain: float | None,
    readNoise: float | None,
    info: dict[str, Any],
    where: str = "",
) -> np.ndarray:
    """Sky variance from the clipped MAD of unmasked pixels, plus a Poisson term with a gain;
    with a read noise too, HOTPANTS' model (`_noiseModelVariance`). ``where`` ("science: ")
    starts the messages."""
    if gain is not None and readNoise is not None:
        return _noiseModelVariance(image, mask, gain, readNoise, info, where)
    good = np.isfinite(image) & (mask == 0)
    nGood = int(good.sum())
    if nGood < _MIN_SKY_PIXELS:
        raise _cannotEstimate(
            where,
            f"only {nGood} unmasked finite pixels (at least {_MIN_SKY_PIXELS} needed)",
        )
    sky, skySigma = _skyStatistics(image, good)
    if not skySigma > 0:
        raise _cannotEstimate(
            where, "the robust scatter of the image's sky is 0 (a noiseless or constant image?)"
        )
    localSigma = _localSkySigma(image, good, sky, skySigma)
    if localSigma * _GRADIENT_INFLATION < skySigma:
        # The image-wide scatter includes a smooth sky structure (a gradient, scattered
        # light): it is not the pixel noise. Taken as the noise it inflated the variance
        # 7-30 times, so every later check passed while the fit failed (kernel sum 0.91 for
        # 1.25, no error).
        _log.warning(
            "%sthe sky is not flat: its pixels scatter by %.4g about the image's median but "
            "by %.4g about a smooth background (%d-pixel meshes); the estimated variance uses "
            "the latter. Give the variance (or subtract the background) if this is wrong",
            where,
            skySigma,
            localSigma,
            _SKY_MESH,
        )
        info.update(skySigmaImageWide=skySigma)
        skySigma = localSigma
    variance = np.full(image.shape, skySigma**2, dtype=np.float64)
    if gain is not None:
        finite = np.isfinite(image)
        signal = np.where(finite, image.astype(np.float64) - sky, 0.0)
        variance += np.maximum(signal, 0.0) / gain
    info.update(
        varianceEstimated=True,
        varianceModel="sky",
        skyLevel=sky,
        skySigma=skySigma,
        skyPixels=nGood,
        gain=gain,
    )
    _log.info(
        "%sno variance given: estimated sky %.6g, sky sigma %.6g from %d pixels%s",
        where,
        sky,
        skySigma,
        nGood,
        f", plus Poisson term with gain {gain:g}" if gain is not None else "",
    )
    return variance


def _smallest(array: np.ndarray) -> float:
    """The smallest value that is not NaN (NaN if there is none)."""
    return float(np.fmin.reduce(array, axis=None))


def _allFinite(array: np.ndarray) -> bool:
    """Whether every value is finite: the extremes are, as a NaN makes both NaN. Two
    reductions, without the boolean maps of ``np.isfinite(array).all()``."""
    return array.dtype.kind in "iub" or bool(
        np.isfinite(np.min(array)) and np.isfinite(np.max(array))
    )


def _checkLimit(value: Any, name: str, where: str) -> float | None:
    """A valid-data limit: None, or a number that is not NaN (an infinite one flags nothing)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | np.number):
        raise InvalidInputError(f"{where}{name}: expected a number, got {value!r}")
    limit = float(value)
    if math.isnan(limit):
        raise InvalidInputError(f"{where}{name}: expected a number, got nan")
    return limit


def _applyLimits(
    mi: MaskedImage, lower: float | None, upper: float | None, where: str
) -> MaskedImage:
    """HOTPANTS' valid data range: pixels above ``upper`` get ``SAT``, pixels below ``lower``
    get ``BAD`` and ``NO_DATA``, in a new mask; the image and variance arrays are shared."""
    if lower is None and upper is None:
        return mi
    mask = np.array(mi.mask, copy=True)
    with np.errstate(invalid="ignore"):
        if upper is not None:
            high = mi.image > upper
            mask[high] |= _planeBit("SAT")
            _log.info("%s%d pixels above %g flagged SAT", where, int(high.sum()), upper)
        if lower is not None:
            low = mi.image < lower
            mask[low] |= _planeBit("BAD") | _planeBit("NO_DATA")
            _log.info("%s%d pixels below %g flagged BAD|NO_DATA", where, int(low.sum()), lower)
    return MaskedImage(mi.image, mask, mi.variance, xy0=mi.getXY0())


def readImage(
    source: ImageInput,
    *,
    variance: VarianceInput | None = None,
    sigma: VarianceInput | None = None,
    mask: MaskInput | None = None,
    gain: float | None = None,
    readNoise: float | None = None,
    upper: float | None = None,
    lower: float | None = None,
    hdu: int | str | tuple[str, int] | None = None,
    info: dict[str, Any] | None = None,
    name: str | None = None,
) -> MaskedImage:
    """Turn any supported image input into a `~psfmatch.image.MaskedImage`.

    Parameters
    ----------
    source : path, `~psfmatch.image.MaskedImage`, array_like, masked array or NDData
        - a `str` or `os.PathLike`: a FITS file, read with `readMaskedImage`;
        - a `MaskedImage`: returned as it is when no other argument changes it;
        - a 2-D numpy array (or anything `numpy.asarray` makes one);
        - a `numpy.ma.MaskedArray`: masked pixels get the ``BAD`` plane;
        - an `~astropy.nddata.NDData` or `~astropy.nddata.CCDData`: ``uncertainty`` of type
          `~astropy.nddata.StdDevUncertainty` (variance = σ²),
          `~astropy.nddata.VarianceUncertainty` or `~astropy.nddata.InverseVariance`
          (variance = 1/ivar; ivar ≤ 0 gives variance +inf and ``NO_DATA``), converted to the
          data's unit squared; ``mask`` as for the ``mask`` argument; ``meta`` keywords
          ``CRVAL1A``/``CRVAL2A`` or ``LTV1``/``LTV2`` give ``xy0``.
    variance, sigma : array_like, float or path, optional
        The variance, or its square root, per pixel: an array of the image's shape, a scalar
        (constant), or a FITS path (its ``VARIANCE`` HDU, else its first 2-D image). Replaces
        any variance the source carries. At most one of the two.
    mask : array_like or path, optional
        Replaces the source's mask. A boolean array marks ``BAD`` pixels; an integer array is
        taken as psfmatch mask bits (see `~psfmatch.image.Mask`); so is a FITS file's mask
        (its ``MASK`` HDU with its ``MP_`` planes, else its first 2-D image). To use another
        instrument's flags, pass a boolean such as ``dq != 0``.
    gain : `float`, optional
        Electrons per pixel-value unit (e⁻/ADU). Used only when the variance is estimated, to
        add the source Poisson term.
    readNoise : `float`, optional
        Read noise in electrons (HOTPANTS ``-ir``/``-tr``), with ``gain``. Used only when the
        variance is estimated: the two then give HOTPANTS' noise model instead of the sky
        estimate (see Notes).
    upper : `float`, optional
        The upper end of the valid data range (HOTPANTS ``-iu``/``-tu``): pixels whose value is
        above it get the ``SAT`` mask plane, e.g. the detector's saturation level.
    lower : `float`, optional
        The lower end of the valid data range (HOTPANTS ``-il``/``-tl``): pixels whose value is
        below it get the ``BAD`` and ``NO_DATA`` planes, e.g. for the zeros of a chip gap.
    hdu : `int`, `str` or (`str`, `int`), optional
        For a FITS path: read only this HDU, as a plain image (see `readMaskedImage`).
    info : `dict`, optional
        Filled with what was decided: ``"source"`` (the kind of input), ``"varianceSource"``
        (``"input"``, ``"variance"``, ``"sigma"`` or ``"estimated"``), ``"varianceEstimated"``,
        and, when estimated, ``"varianceModel"`` (``"sky"`` or ``"gainReadNoise"``),
        ``"skyLevel"``, ``"skySigma"``, ``"skyPixels"``, ``"gain"`` (and ``"readNoise"``);
        ``"nNonFinite"``, the number of pixels flagged ``NO_DATA`` for a non-finite image or
        variance; plus what `readMaskedImage` reports for a path.
    name : `str`, optional
        What the image is, e.g. ``"science"``: the messages about its variance estimate (and
        the log) start with it, so that a user of two images knows which one they concern.

    Returns
    -------
    maskedImage : `~psfmatch.image.MaskedImage`
        Arrays already C-contiguous and native-endian are used without a copy (as
        `MaskedImage` does); psfmatch never writes into them.

    Raises
    ------
    InvalidInputError
        If ``source`` is of an unsupported type or not 2-D, an argument's shape differs from
        the image's, both ``variance`` and ``sigma`` are given, a variance or sigma is
        negative, ``gain`` is not a positive number, ``readNoise`` is negative, not finite or
        given without ``gain``, ``upper`` or ``lower`` is not a number (or NaN), ``lower`` is
        not below ``upper``, ``hdu`` is given for an input that is not
        a path, a mask is neither boolean nor integer, or the variance must be estimated and
        cannot be (fewer than 25 usable pixels, or no scatter at all); and for the FITS errors
        of `readMaskedImage`.
    InputFileNotFoundError
        If a path does not exist.
    PsfMatchIOError
        If a file cannot be read.

    Notes
    -----
    When neither the source nor an argument provides a variance it is estimated. The sky
    level and sky standard deviation σ_sky are the median and the MAD-based standard deviation
    (`astropy.stats.mad_std`) of the unmasked finite pixels, 3σ-clipped
    (`astropy.stats.sigma_clipped_stats`), which stars and cosmic rays barely move. The
    variance is σ_sky² everywhere, plus, if ``gain`` is given, the Poisson variance of the
    sources ``max(image - sky, 0) / gain``. Without a gain the variance is underestimated on
    bright stars; with one, noise above the sky adds a small bias of about
    ``0.4 σ_sky / gain`` at sky level. The estimate is logged at INFO on ``"psfmatch.io"`` and
    reported in ``info``; pass ``variance=`` or ``sigma=`` to use a known noise model.

    With ``gain`` and ``readNoise`` the variance is HOTPANTS' noise model instead, in the
    image's units squared::

        variance = |image| / gain + (readNoise / gain)²

    from each pixel's own value, with no sky estimate: adding the read noise to the measured
    sky scatter, which already holds it, would count it twice. The model assumes the sky is
    still in the pixel values; when its variance at the measured sky level differs from the
    sky's measured scatter by more than a factor of 2 (a sky-subtracted image, a wrong gain) a
    warning says so.

    Pixels whose image or variance is NaN or infinite get the ``NO_DATA`` plane (the values
    are kept), except in a `MaskedImage` returned unchanged.

    The valid data range (``upper``, ``lower``) is applied last, to the mask alone: the pixels
    it flags keep their values, the variance estimate sees them as they were, and a
    `MaskedImage` source with no other argument keeps its image and variance arrays (its mask
    is a new array). A NaN pixel is outside neither limit (NaNs are flagged ``NO_DATA`` anyway).

    No input is modified.
    """
    details: dict[str, Any] = {} if info is None else info
    if variance is not None and sigma is not None:
        raise InvalidInputError("give variance or sigma, not both")
    if gain is not None:
        if isinstance(gain, bool) or not isinstance(gain, int | float | np.number):
            raise InvalidInputError(f"gain: expected a positive number, got {gain!r}")
        gain = float(gain)
        if not (math.isfinite(gain) and gain > 0):
            raise InvalidInputError(f"gain: expected a positive finite number, got {gain!r}")
    if readNoise is not None:
        if isinstance(readNoise, bool) or not isinstance(readNoise, int | float | np.number):
            raise InvalidInputError(
                f"readNoise: expected a number of electrons >= 0, got {readNoise!r}"
            )
        readNoise = float(readNoise)
        if not (math.isfinite(readNoise) and readNoise >= 0):
            raise InvalidInputError(
                f"readNoise: expected a finite number of electrons >= 0, got {readNoise!r}"
            )
        if gain is None:
            raise InvalidInputError(
                f"readNoise={readNoise:g} e- needs gain= (e-/ADU) to turn it into the image's units"
            )
    where = f"{name}: " if name else ""
    upper = _checkLimit(upper, "upper", where)
    lower = _checkLimit(lower, "lower", where)
    if lower is not None and upper is not None and not lower < upper:
        raise InvalidInputError(
            f"{where}the valid data range is empty: lower={lower:g} must be below upper={upper:g}"
        )
    if hdu is not None and not _isPath(source):
        raise InvalidInputError(
            f"hdu={hdu!r} applies only to a FITS path; source is a {type(source).__name__}"
        )

    hasVariance: bool
    if isinstance(source, MaskedImage):
        details["source"] = "MaskedImage"
        if variance is None and sigma is None and mask is None:
            details["varianceSource"] = "input"
            details["varianceEstimated"] = False
            return _applyLimits(source, lower, upper, where)
        base, hasVariance = source, True
    elif _isPath(source):
        details["source"] = "path"
        base = readMaskedImage(cast("str | os.PathLike[str]", source), hdu=hdu, info=details)
        hasVariance = bool(details.get("hasVariance"))
    elif isinstance(source, np.ma.MaskedArray):
        details["source"] = "MaskedArray"
        base = MaskedImage(
            _native(np.ma.getdata(source)),
            mask=_maskFromArray(np.ma.getmaskarray(source), "mask", source.shape),
        )
        hasVariance = False
    elif _isNDData(source):
        details["source"] = type(source).__name__
        base, hasVariance = _fromNDData(source, "source")
    elif isinstance(source, np.ndarray | list | tuple) or hasattr(source, "__array__"):
        details["source"] = "array"
        try:
            array = np.asanyarray(source)
        except (TypeError, ValueError) as err:  # ragged nested lists, ...
            raise InvalidInputError(f"source: cannot make a 2-D array of it: {err}") from err
        base, hasVariance = MaskedImage(_native(array)), False
    else:
        raise InvalidInputError(
            f"source: expected a FITS path, MaskedImage, 2-D array, masked array or NDData; "
            f"got {type(source).__name__}"
        )

    shape = base.image.shape
    maskArray = base.mask
    if mask is not None:
        if _isPath(mask):
            maskPath = _asPath(mask, "mask")
            raw, header = _readPlaneFile(maskPath, "MASK", shape)
            maskArray = _mapMask(raw, header, str(maskPath), None)
        else:
            maskArray = _maskFromArray(mask, "mask", shape)

    varianceArray: np.ndarray | None
    if variance is not None:
        varianceArray, varianceSource = _floatPlane(variance, "variance", shape), "variance"
    elif sigma is not None:
        sigmaArray = _floatPlane(sigma, "sigma", shape)
        if (sigmaArray < 0).any():
            raise InvalidInputError(f"sigma: {int((sigmaArray < 0).sum())} negative values")
        varianceArray, varianceSource = np.square(sigmaArray), "sigma"
    elif hasVariance:
        varianceArray, varianceSource = base.variance, "input"
    else:
        varianceArray, varianceSource = None, "estimated"
    if varianceArray is not None and _smallest(varianceArray) < 0:
        nNegative = int((varianceArray < 0).sum())
        raise InvalidInputError(
            f"variance: {nNegative} pixels have a negative variance "
            f"(minimum {_smallest(varianceArray):g})"
        )

    nNonFinite = 0
    if not (_allFinite(base.image) and (varianceArray is None or _allFinite(varianceArray))):
        nonFinite = ~np.isfinite(base.image)
        if varianceArray is not None:
            nonFinite |= ~np.isfinite(varianceArray)
        nNonFinite = int(nonFinite.sum())
    if nNonFinite:
        maskArray = np.where(nonFinite, maskArray | np.int32(_planeBit("NO_DATA")), maskArray)
        _log.info(
            "%s%d pixels with a non-finite image or variance flagged NO_DATA", where, nNonFinite
        )
    details["nNonFinite"] = nNonFinite

    if varianceArray is None:
        varianceArray = _estimateVariance(base.image, maskArray, gain, readNoise, details, where)
    else:
        details["varianceEstimated"] = False
    details["varianceSource"] = varianceSource
    image = MaskedImage(base.image, mask=maskArray, variance=varianceArray, xy0=base.getXY0())
    return _applyLimits(image, lower, upper, where)
