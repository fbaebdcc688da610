# SPDX-License-Identifier: BSD-3-Clause
"""Decorrelation of a difference image's noise: the Alard–Lupton "afterburner"
(docs/algorithm.md §7.6).

Convolving one image with the matching kernel K correlates its noise, so the noise of a
difference image is not white: with per-pixel variances ``v`` (the unconvolved image) and
``t`` (the convolved one), its power spectrum is ``v + t·|K̂(f)|²``. Multiplying the difference
by the real filter

    corr(f) = sqrt( (v + t·κ²) / (v + t·|K̂(f)|²) ),     κ = ΣK = K̂(0),

whitens it (Kaiser 2004; Zackay, Ofek & Gal-Yam 2016): the result has the flat spectrum
``v + t·κ²``, i.e. uncorrelated pixels of variance ``v + t·κ²``. Since ``corr(0) = 1`` the
filter has unit DC gain: fluxes and sums over areas larger than the filter are unchanged. The
same filter is applied to the difference image's PSF (the reference leaves that undone).

Score mode (preconvolution, docs/algorithm.md §7.4): when the science image was first
convolved with a unit-sum kernel P (its own PSF, reflected: a matched filter) and the kernel K
matches the template to that, the filter is

    corr(f) = (v + t·κ²) / (v + t·|K̂(f)|² / |P̂(f)|²)

without the square root: it whitens the unconvolved difference ``S − (K/P) ⊗ T`` and applies
the matched filter of its PSF in one step, so the result is the score image, a likelihood
map whose peaks are the point sources.

Which image is which (``templateMatched``):

============  =================  ==============  =======================================
mode          unconvolved (v)    convolved (t)   difference
============  =================  ==============  =======================================
template      science            template        ``D = S − K⊗T − b``
science       template           science         ``D = (K⊗S + b − T)/κ`` (psfmatch's)
score         science (⊗P)       template        ``D = P⊗S − K⊗T − b``
============  =================  ==============  =======================================

Variance of the result (docs/decisions.md D6). The default estimate is
``Var_unconv · w₁ + Var_conv · w₂`` with ``wᵢ = Σₓ cᵢ(x)²`` (= the mean of ``|Ĉᵢ|²`` over
the frequency grid) for the component filters ``Ĉ₁ = corr`` (score: ``P̂·corr``) and
``Ĉ₂ = K̂·corr``: for white noise of variance ``v`` and ``t`` this is exactly ``v + t·κ²``.
``completeVarPlanePropagation`` instead convolves each input variance plane with ``cᵢ²``.

In science-matched mode psfmatch's difference is the *whole* numerator divided by κ,
``D = (K⊗S + b − T)/κ``, so both of its noise terms carry ``1/κ²``:
``Var(D) = (K²⊗Var_S + Var_T)/κ²``. The filter is unchanged by that common scale, and the
variance of the result is ``(w₁·Var_T + w₂·Var_S)/κ²``: ``w₂`` contains the unnormalised
``K̂``, so ``w₂/κ²`` is the science variance expressed in science units and ``w₁/κ²`` is the
template variance brought to science units. The reference divides the difference's
*convolved* term only (``D = K⊗S/κ − T``) but then divides its whole variance by κ², which
mis-scales the template term by ``1/κ²``; psfmatch scales each term by what multiplies it in D.

Conventions: as everywhere in psfmatch, convolution is true convolution, so a kernel image's
centre pixel ``(n//2)`` is placed at array index 0 (wrapping around) before its FFT, and K̂ is
then the transfer function of ``K⊗``. Non-finite pixels of the difference are replaced by the
mean of the finite ones for the FFT and restored afterwards; the mask plane passes through.

How the filter is applied. ``corr`` is computed on a small grid, `_SMALL_GRID` (8) times the
kernels' size per axis, doubled until its real-space image ``c`` (the inverse FFT, centred)
has ``Σ|c| ≤`` `_TAIL_TOLERANCE` (1e-8) outside a centred square no wider than about half
the grid (and at least the kernel's size). That square is the filter as applied, by
overlap-save FFTs of ~512² tiles, in float32 for a float32 image (float64 otherwise). As
``Σc = corr(0) = 1``, the crop moves no pixel by more than 1e-8 of the largest ``|D|`` within
the filter's reach; float32 transforms round at ~3e-7 of the largest ``|D|`` in a tile. The
variance weights are ``Σcᵢ²`` of the component filters as applied, summed in real space. A
filter that reaches farther (at t/v ≳ 10⁶ for the 4096² simulations' kernel, or in score
mode where ``K̂`` and ``P̂`` both fall to rounding level and ``corr`` is noise there) is
applied as before the crop existed: by float64 FFTs of the image's whole grid.
"""

from __future__ import annotations

__all__ = ["DecorrelateALKernelConfig", "DecorrelateALKernelTask"]

import math
import sys
from dataclasses import dataclass
from typing import Any

import lsst.pex.config as pexConfig
import numpy as np
from astropy.stats import SigmaClip

from . import _core
from ._fft import (
    _convolveTiles,
    _cropCentred,
    _evenFastLength,
    _fftShape,
    _filterImage,
    _irfft2,
    _rfft2,
    _spectrumOfSmall,
    _sumOfSquares,
)
from ._masks import UNUSABLE_PLANES
from ._psfutil import _convolveSmall
from .errors import InvalidInputError
from .image import Mask, MaskedImage, _rowBands
from .task import Struct, Task

# |P̂|² is floored here in score mode so the ratio |K̂|²/|P̂|² stays finite (the reference's
# 1000·DBL_MIN).
_P_HAT_FLOOR = 1000.0 * sys.float_info.min
# Above this ratio t/v of the convolved to the unconvolved image's variance, the whitening
# filter amplifies the unconvolved image's noise by up to sqrt(t/v)·κ at high frequencies.
_RATIO_WARNING = 1.0e8


class DecorrelateALKernelConfig(pexConfig.Config):
    """Configuration of `DecorrelateALKernelTask`."""

    ignoreMaskPlanes: pexConfig.ListField[str] = pexConfig.ListField(
        dtype=str,
        default=["INTRP", "EDGE", "DETECTED", "SAT", "CR", "BAD", "NO_DATA", "DETECTED_NEGATIVE"],
        doc="Mask planes whose pixels are left out of the clipped mean variances svar and tvar. "
        "Unknown plane names are ignored.",
    )
    fillMaskPlanes: pexConfig.ListField[str] = pexConfig.ListField(
        dtype=str,
        default=list(UNUSABLE_PLANES),
        doc="Pixels of the difference image (and, with completeVarPlanePropagation, of each "
        "variance plane) with these planes are mean-filled before the filter and keep their "
        "unfiltered values: the filter reaches across the whole image, and the values of "
        "masked pixels must not reach any other pixel. Unknown plane names are ignored.",
    )
    completeVarPlanePropagation: pexConfig.Field[bool] = pexConfig.Field(
        dtype=bool,
        default=False,
        doc="Propagate each input variance plane through the square of its real-space "
        "component filter (two more FFT convolutions per plane), instead of scaling it by the "
        "filter's mean power; matters where the variance varies on the filter's scale.",
    )


#: The decorrelation filter's real-space image is cropped where the sum of its absolute
#: values outside the crop is at most this. The filter's sum (its gain at zero frequency) is
#: 1, so no pixel of the result moves by more than this times the largest |D| within the
#: filter's reach: below float32's rounding (6e-8) of that value.
_TAIL_TOLERANCE = 1.0e-8
#: The first grid the filter is computed on is this many times the kernels' size per axis,
#: so that it holds a crop of up to two kernel widths (a crop's half-width is at most a
#: quarter of its grid), which is where the filter's tail falls below `_TAIL_TOLERANCE` when
#: t/v is small (1.7 widths at the 4096² simulations' t/v = 0.06; 2.7 at t/v = 1, held by
#: the doubled grid). Each doubling costs an FFT of the doubled grid, ~1 ms at 400².
_SMALL_GRID = 8

#: The most variance-plane pixels the clipped mean variance looks at (see
#: `DecorrelateALKernelTask._clippedMeanVariance`).
_CLIP_SAMPLE = 1 << 20


def _checkKernelArray(array: Any, name: str) -> np.ndarray:
    out = np.asarray(array, dtype=np.float64)
    if out.ndim != 2 or out.shape[0] % 2 == 0 or out.shape[1] % 2 == 0:
        raise InvalidInputError(f"{name}: expected an odd-sized 2-D image, got shape {out.shape}")
    if not np.isfinite(out).all():
        raise InvalidInputError(f"{name}: has non-finite values")
    return out


def _kernelImageAt(kernel: Any, x: float, y: float) -> np.ndarray:
    """The unnormalised image of a psfmatch kernel (or a 2-D array) at parent (x, y)."""
    if isinstance(kernel, _core.LinearCombinationKernel | _core.FixedKernel):
        image, _ = kernel.computeImage(x, y, doNormalize=False)
        return _checkKernelArray(image, "psfMatchingKernel")
    if isinstance(kernel, np.ndarray):
        return _checkKernelArray(kernel, "psfMatchingKernel")
    raise InvalidInputError(
        "psfMatchingKernel: expected a LinearCombinationKernel, FixedKernel or 2-D array, got "
        f"{type(kernel).__name__}"
    )


def _sameGrid(images: dict[str, MaskedImage]) -> None:
    for name, mi in images.items():
        if not isinstance(mi, MaskedImage):
            raise InvalidInputError(f"{name}: expected a MaskedImage, got {type(mi).__name__}")
    (firstName, first), *rest = images.items()
    for name, mi in rest:
        if mi.image.shape != first.image.shape or mi.getXY0() != first.getXY0():
            raise InvalidInputError(
                f"{name} (shape {mi.image.shape}, xy0 {mi.getXY0()}) and {firstName} (shape "
                f"{first.image.shape}, xy0 {first.getXY0()}) must share one pixel grid"
            )


def _combinedVariance(
    terms: list[tuple[np.ndarray, float, np.ndarray]], scale: float, previous: np.ndarray
) -> np.ndarray:
    """``Σ values·weight / scale`` over ``terms`` of ``(values, weight, plane)`` in float64,
    +inf where any input ``plane`` is not finite, ``previous`` where that is not finite; in
    ``previous``'s dtype. A band of rows at a time: no image-sized float64 temporaries."""
    out = np.empty(previous.shape, dtype=previous.dtype)
    for rows in _rowBands(out.shape[0]):
        band = np.multiply(terms[0][0][rows], terms[0][1], dtype=np.float64)
        for values, weight, _ in terms[1:]:
            band += np.multiply(values[rows], weight, dtype=np.float64)
        # Where values are the plane itself (a finite weight), the sum is not finite where
        # the plane is not: only filtered planes need their own test.
        bad = ~np.isfinite(band)
        for values, _, plane in terms:
            if values is not plane:
                bad |= ~np.isfinite(plane[rows])
        if bad.any():
            band[bad] = np.inf
        if scale != 1.0:
            band /= scale
        keep = ~np.isfinite(previous[rows])
        if keep.any():
            np.copyto(band, previous[rows], where=keep)
        out[rows] = band
    return out


@dataclass
class _Filter:
    """The decorrelation filter on one FFT grid (module docstring): ``corr`` on the rfft2
    half grid of ``grid``, with the spectra it was made of, and ``kernel``, its real-space
    image cropped where ``tail`` (the sum of its absolute values outside the crop) is below
    `_TAIL_TOLERANCE`, or None if it reaches too far to crop and is applied on the whole
    grid."""

    grid: tuple[int, int]
    corr: np.ndarray
    kHat: np.ndarray
    kPower: np.ndarray
    pHat: np.ndarray | None
    pPower: np.ndarray | None
    kernel: np.ndarray | None = None
    tail: float = 0.0


def _transferFunction(
    kimg: np.ndarray,
    preConv: np.ndarray | None,
    v: float,
    t: float,
    kappa: float,
    grid: tuple[int, int],
    nThreads: int,
) -> _Filter:
    """The filter ``corr`` on the rfft2 half grid of ``grid``, computed in place (each
    half-grid temporary is 75 MB at the 4096² image's grid): the formulas of the module
    docstring, operations in that order."""
    kHat = _spectrumOfSmall(kimg, grid, nThreads)
    kPower = kHat.real**2
    kPower += kHat.imag**2
    corr = kPower * t
    pHat: np.ndarray | None = None
    pPower: np.ndarray | None = None
    if preConv is not None:
        pHat = _spectrumOfSmall(preConv, grid, nThreads)
        pPower = pHat.real**2
        pPower += pHat.imag**2
        corr /= np.maximum(pPower, _P_HAT_FLOOR)
    corr += v
    np.maximum(corr, _P_HAT_FLOOR, out=corr)
    with np.errstate(divide="ignore"):
        np.divide(v + t * kappa**2, corr, out=corr)
    if preConv is None:
        np.sqrt(corr, out=corr)
    return _Filter(grid, corr, kHat, kPower, pHat, pPower)


def _cropByTail(
    c: np.ndarray, minShape: tuple[int, int], tolerance: float
) -> tuple[np.ndarray, float] | None:
    """The centred crop of a real-space filter ``c`` (centre at index 0 of its grid, as
    irfft2 gives it) outside which the sum of ``|c|`` is at most ``tolerance``: a square of
    odd side, at least ``minShape``; and that sum. None if that square is more than about
    half the grid wide (its half-width above a quarter of the grid): the grid's filter is
    the true one wrapped around, and only a margin at least as wide as the crop's half,
    measured to hold less than ``tolerance``, shows that what wraps around into the crop is
    small too; and a wider filter is applied as cheaply on the whole image's grid."""
    ny, nx = c.shape
    iy, ix = np.arange(ny), np.arange(nx)
    radius = np.maximum(np.minimum(iy, ny - iy)[:, None], np.minimum(ix, nx - ix)[None, :])
    rings = np.bincount(radius.ravel(), weights=np.abs(c).ravel())
    # beyond[h] = Σ|c| over the rings r > h, summed from the outside in (the small first).
    beyond = np.append(np.cumsum(rings[::-1])[::-1][1:], 0.0)
    half = int(np.argmax(beyond <= tolerance))
    if not beyond[half] <= tolerance or 4 * half > min(ny, nx):
        return None
    side = 2 * half + 1
    shape = (max(side, minShape[0]), max(side, minShape[1]))
    return _cropCentred(c, shape), float(beyond[half])


def _decorrelationFilter(
    kimg: np.ndarray,
    preConv: np.ndarray | None,
    v: float,
    t: float,
    kappa: float,
    fftShape: tuple[int, int],
    nThreads: int,
) -> _Filter:
    """The filter on the smallest grid (of `_SMALL_GRID` times the kernels' size, doubled
    as needed, at most ``fftShape``) on which its real-space image can be cropped
    (`_cropByTail`), or on ``fftShape`` uncropped if it reaches too far for any."""
    sizes = [*kimg.shape] + ([] if preConv is None else [*preConv.shape])
    side = _SMALL_GRID * max(sizes)
    while True:
        grid = (min(_evenFastLength(side), fftShape[0]), min(_evenFastLength(side), fftShape[1]))
        filt = _transferFunction(kimg, preConv, v, t, kappa, grid, nThreads)
        c = _irfft2(filt.corr, grid, nThreads)
        crop = _cropByTail(c, kimg.shape, _TAIL_TOLERANCE)
        if crop is not None:
            filt.kernel, filt.tail = crop
            return filt
        if grid == fftShape:
            return filt
        side *= 2


class DecorrelateALKernelTask(Task):
    """Whiten the noise of an Alard–Lupton difference image (docs/algorithm.md §7.6).

    See the module docstring for the filter, the roles of the two images and the variance.

    Examples
    --------
    >>> from psfmatch import ImagePsfMatchTask
    >>> from psfmatch.simulate import simulatePair
    >>> sim = simulatePair((256, 256), nStars=60, seed=0)
    >>> raw = ImagePsfMatchTask().subtractMaskedImages(sim.template, sim.science)
    >>> task = DecorrelateALKernelTask()
    >>> res = task.run(sim.science, sim.template, raw.subtractedMaskedImage,
    ...                raw.psfMatchingKernel)
    >>> res.decorrelated, res.correctedMaskedImage.image.shape
    (True, (256, 256))
    """

    ConfigClass = DecorrelateALKernelConfig
    _DefaultName = "decorrelate"
    config: DecorrelateALKernelConfig

    def _clippedMeanVariance(self, mi: MaskedImage) -> float:
        """The 3σ, 3-iteration clipped mean of the usable pixels of a variance plane, or NaN.

        Beyond `_CLIP_SAMPLE` pixels, of every k-th pixel in raster order (k the smallest
        stride that gives at most that many and shares no factor with the row length, so
        that the sample is not a set of whole columns): the mean of a million variances is
        good to far better than the 1e-3 at which it matters, at a fraction of the cost of
        clipping every pixel of a large image.
        """
        bits = Mask.getPlaneBitMask(list(self.config.ignoreMaskPlanes), skipUnknown=True)
        var = np.asarray(mi.variance).reshape(-1)
        mask = np.asarray(mi.mask).reshape(-1)
        stride = max(1, -(-var.size // _CLIP_SAMPLE))
        while stride > 1 and math.gcd(stride, mi.getWidth()) != 1:
            stride += 1
        var = var[::stride].astype(np.float64)
        usable = ((mask[::stride] & bits) == 0) & np.isfinite(var)
        if not usable.any():
            return math.nan
        # sigma_clipped_stats's mean (its clipping, then nanmean), without the median and
        # standard deviation of the clipped sample that it computes as well.
        clipped = SigmaClip(sigma=3.0, maxiters=3)(var[usable], masked=False, copy=False)
        return float(np.nanmean(clipped))

    def _applyCropped(
        self,
        filt: _Filter,
        kimg: np.ndarray,
        preConv: np.ndarray | None,
        psfArray: np.ndarray | None,
        d: MaskedImage,
        varUnconv: np.ndarray,
        varConv: np.ndarray,
        scale: float,
        fillBits: int,
        nThreads: int,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray]:
        """The filter's cropped real-space image ``c`` applied by tiles (`_convolveTiles`):
        the image, its variance, the corrected PSF and ``c``."""
        c = filt.kernel
        assert c is not None
        image = _convolveTiles(
            d.image, c, mask=d.mask, maskBits=fillBits, keepUnusable=True, nThreads=nThreads
        ).astype(d.image.dtype, copy=False)
        # The component filters c₁ = c (score: P ⊗ c) and c₂ = K ⊗ c as applied, in real
        # space (module docstring).
        cUnconv = c if preConv is None else _convolveSmall(preConv, c)
        cConv = _convolveSmall(kimg, c)
        if self.config.completeVarPlanePropagation:
            filtered = [
                _convolveTiles(plane, ci * ci, mask=d.mask, maskBits=fillBits, nThreads=nThreads)
                for plane, ci in ((varUnconv, cUnconv), (varConv, cConv))
            ]
            terms = [(filtered[0], 1.0, varUnconv), (filtered[1], 1.0, varConv)]
        else:
            wUnconv = float(np.sum(cUnconv * cUnconv))
            wConv = float(np.sum(cConv * cConv))
            terms = [(varUnconv, wUnconv, varUnconv), (varConv, wConv, varConv)]
            self.metadata["varianceWeightUnconvolved"] = wUnconv
            self.metadata["varianceWeightConvolved"] = wConv
        variance = _combinedVariance(terms, scale, d.variance)
        correctedPsf = None
        if psfArray is not None:
            # On a grid grown by the matching kernel's size (a crop of psf ⊗ c, which is
            # at least that large), as `_applyWholeGrid` gives it.
            filteredPsf = _convolveSmall(psfArray, c)
            y0 = (filteredPsf.shape[0] - psfArray.shape[0] - kimg.shape[0] + 1) // 2
            x0 = (filteredPsf.shape[1] - psfArray.shape[1] - kimg.shape[1] + 1) // 2
            filteredPsf = filteredPsf[
                y0 : filteredPsf.shape[0] - y0, x0 : filteredPsf.shape[1] - x0
            ]
            correctedPsf = filteredPsf / filteredPsf.sum()
        return image, variance, correctedPsf, c

    def _applyWholeGrid(
        self,
        filt: _Filter,
        kimg: np.ndarray,
        preConv: np.ndarray | None,
        psfArray: np.ndarray | None,
        d: MaskedImage,
        varUnconv: np.ndarray,
        varConv: np.ndarray,
        scale: float,
        fillBits: int,
        nThreads: int,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray]:
        """The filter applied by float64 FFTs of the whole image's grid, for a filter that
        reaches too far to crop: the image, its variance, the corrected PSF and the
        kernel-sized centre of the filter's real-space image."""
        fftShape, corr = filt.grid, filt.corr
        flagged = (d.mask & fillBits) != 0
        filtered, badImage = _filterImage(d.image, corr, fftShape, flagged, nThreads)
        image = filtered.astype(d.image.dtype)
        del filtered
        image[badImage] = d.image[badImage]
        if self.config.completeVarPlanePropagation:
            filterUnconv = corr if filt.pHat is None else filt.pHat * corr
            terms = []
            for plane, spectrum in ((varUnconv, filterUnconv), (varConv, filt.kHat * corr)):
                c = _irfft2(spectrum, fftShape, nThreads)
                filteredPlane, _ = _filterImage(
                    plane, _rfft2(c * c, nThreads), fftShape, flagged, nThreads
                )
                terms.append((filteredPlane, 1.0, plane))
        else:
            # Σ c² of each real-space filter, by Parseval on its half spectrum (no inverse
            # FFT): |Ĉ_unconv|² = corr² (score: |P̂|²·corr²), |Ĉ_conv|² = |K̂|²·corr².
            unconv = (corr, corr) if filt.pPower is None else (filt.pPower, corr, corr)
            wUnconv = _sumOfSquares(fftShape, *unconv)
            wConv = _sumOfSquares(fftShape, filt.kPower, corr, corr)
            terms = [(varUnconv, wUnconv, varUnconv), (varConv, wConv, varConv)]
            self.metadata["varianceWeightUnconvolved"] = wUnconv
            self.metadata["varianceWeightConvolved"] = wConv
        variance = _combinedVariance(terms, scale, d.variance)
        correctedPsf = None
        if psfArray is not None:
            # The filter reaches about a kernel width: the filtered PSF is returned on a grid
            # grown by the kernel, so that its wings are not cut off before normalising.
            psfShape = (
                psfArray.shape[0] + kimg.shape[0] - 1,
                psfArray.shape[1] + kimg.shape[1] - 1,
            )
            spectrum = _spectrumOfSmall(psfArray, fftShape, nThreads)
            spectrum *= corr
            filteredPsf = _cropCentred(_irfft2(spectrum, fftShape, nThreads), psfShape)
            correctedPsf = filteredPsf / filteredPsf.sum()
        decorrelationKernel = _cropCentred(_irfft2(corr, fftShape, nThreads), kimg.shape)
        return image, variance, correctedPsf, decorrelationKernel

    def run(
        self,
        scienceMaskedImage: MaskedImage,
        templateMaskedImage: MaskedImage,
        subtractedMaskedImage: MaskedImage,
        psfMatchingKernel: Any,
        *,
        templateMatched: bool = True,
        preConvKernel: Any = None,
        psf: Any = None,
        xcen: float | None = None,
        ycen: float | None = None,
        nThreads: int = 0,
    ) -> Struct:
        """Decorrelate a difference image.

        Parameters
        ----------
        scienceMaskedImage, templateMaskedImage : `MaskedImage`
            The two *unconvolved* inputs of the subtraction (after any variance rescaling):
            their variance planes are the noise that went into the difference. Never modified.
        subtractedMaskedImage : `MaskedImage`
            The difference (or score) image, on the same pixel grid. Never modified.
        psfMatchingKernel : `LinearCombinationKernel`, `FixedKernel` or 2-D array
            The matching kernel. It is evaluated, unnormalised, at the centre of the
            difference image's box, ``((begin + end)/2)`` per axis, unless ``xcen``/``ycen``
            say otherwise.
        templateMatched : `bool`, optional
            True if the template was convolved (``D = S − K⊗T − b``); False if the science
            image was (psfmatch's ``D = (K⊗S + b − T)/κ``).
        preConvKernel : 2-D array, optional
            Score mode: the odd-sized kernel the science image was convolved with before the
            subtraction (psfmatch convolves, so for a matched filter this is the science PSF
            reflected about its centre). Normalised to unit sum here. Template-matched only.
        psf : 2-D array, optional
            The PSF of ``subtractedMaskedImage`` as an odd-sized image (for a score image, the
            science PSF convolved with ``preConvKernel``). Filtered like the image, it gives
            ``correctedPsf``.
        xcen, ycen : `float`, optional
            Parent position at which to evaluate the kernel.
        nThreads : `int`, optional
            Threads of the FFTs (scipy.fft ``workers``); 0, the default, uses every core. The
            result does not depend on it.

        Returns
        -------
        result : `Struct`
            ``correctedMaskedImage`` (`MaskedImage`: the filtered image, its variance, the
            unchanged mask; non-finite input pixels stay as they were),
            ``correctedPsf`` (unit-sum 2-D array, or None; the filtered ``psf`` on a grid
            grown by the kernel's size, which the filter's reach needs),
            ``decorrelationKernel`` (the real-space image filter as applied, centred, odd
            square and at least the kernel's size: cropped where the sum of its absolute
            values outside is below 1e-8, see the module docstring; for a filter applied on
            the whole grid, its centre of the kernel's size), ``decorrelationFilter`` (its
            transfer function, float64, on the rfft2 half grid of the even-sized grid it was
            computed on: a few kernel widths, or the image's whole FFT grid for a filter
            applied on it), ``svar``, ``tvar`` (clipped mean variances), ``kappa``
            (the kernel sum) and ``decorrelated`` (False if svar or tvar was unusable and the
            difference was returned unchanged).

        Raises
        ------
        InvalidInputError
            Images on different grids, an even-sized or non-finite kernel, PSF or
            preconvolution kernel, a preconvolution kernel with a non-positive sum, or
            ``preConvKernel`` with ``templateMatched=False``.
        """
        _sameGrid(
            {
                "scienceMaskedImage": scienceMaskedImage,
                "templateMaskedImage": templateMaskedImage,
                "subtractedMaskedImage": subtractedMaskedImage,
            }
        )
        bbox = subtractedMaskedImage.getBBox()
        if xcen is None:
            xcen = 0.5 * (bbox.getMinX() + bbox.getMaxX() + 1)
        if ycen is None:
            ycen = 0.5 * (bbox.getMinY() + bbox.getMaxY() + 1)
        kimg = _kernelImageAt(psfMatchingKernel, float(xcen), float(ycen))
        kappa = float(kimg.sum())
        preConv: np.ndarray | None = None
        if preConvKernel is not None:
            if not templateMatched:
                raise InvalidInputError(
                    "preConvKernel: score mode (preconvolution) needs templateMatched=True"
                )
            preConv = _checkKernelArray(preConvKernel, "preConvKernel")
            pSum = float(preConv.sum())
            if not pSum > 0:
                raise InvalidInputError(f"preConvKernel: the sum must be positive, got {pSum}")
            preConv = preConv / pSum
        psfArray = None if psf is None else _checkKernelArray(psf, "psf")

        svar = self._clippedMeanVariance(scienceMaskedImage)
        tvar = self._clippedMeanVariance(templateMaskedImage)
        self.metadata["svar"] = svar if math.isfinite(svar) else "nan"
        self.metadata["tvar"] = tvar if math.isfinite(tvar) else "nan"
        self.metadata["kappa"] = kappa
        if templateMatched:
            v, t = svar, tvar
            varUnconv, varConv = scienceMaskedImage.variance, templateMaskedImage.variance
        else:
            v, t = tvar, svar
            varUnconv, varConv = templateMaskedImage.variance, scienceMaskedImage.variance

        if not (math.isfinite(v) and math.isfinite(t) and v >= 0 and t >= 0 and v + t > 0):
            self.log.warning(
                "Not decorrelating: the clipped mean variances are unusable (science %s, "
                "template %s); the difference is returned unchanged",
                svar,
                tvar,
            )
            self.metadata["decorrelated"] = False
            corrected = subtractedMaskedImage.clone()
            return Struct(
                correctedMaskedImage=corrected,
                correctedPsf=None if psfArray is None else psfArray / psfArray.sum(),
                decorrelationKernel=None,
                decorrelationFilter=None,
                svar=svar,
                tvar=tvar,
                kappa=kappa,
                decorrelated=False,
            )
        if v == 0 or t / v > _RATIO_WARNING:
            self.log.warning(
                "Decorrelation: the convolved image's variance %.4g is %s the unconvolved "
                "image's %.4g; the filter amplifies the latter's high-frequency noise strongly",
                t,
                "infinitely" if v == 0 else f"{t / v:.3g} times",
                v,
            )

        shapes = [kimg.shape, subtractedMaskedImage.image.shape]
        if psfArray is not None:
            shapes.append(psfArray.shape)
        if preConv is not None:
            shapes.append(preConv.shape)
        fftShape = _fftShape(*shapes)
        filt = _decorrelationFilter(kimg, preConv, v, t, kappa, fftShape, nThreads)
        fillBits = Mask.getPlaneBitMask(list(self.config.fillMaskPlanes), skipUnknown=True)
        d = subtractedMaskedImage
        # Science-matched: both terms of D are divided by κ (module docstring).
        scale = 1.0 if templateMatched else kappa**2
        apply = self._applyCropped if filt.kernel is not None else self._applyWholeGrid
        image, variance, correctedPsf, decorrelationKernel = apply(
            filt, kimg, preConv, psfArray, d, varUnconv, varConv, scale, fillBits, nThreads
        )
        corrected = MaskedImage(image, d.mask.copy(), variance, xy0=d.getXY0())
        self.metadata["filterSize"] = 0 if filt.kernel is None else max(filt.kernel.shape)
        self.metadata["filterTail"] = filt.tail
        self.metadata["decorrelated"] = True
        self.log.info(
            "Decorrelated the difference image: svar %.4g, tvar %.4g, kernel sum %.4f%s",
            svar,
            tvar,
            kappa,
            " (score mode)" if preConv is not None else "",
        )
        return Struct(
            correctedMaskedImage=corrected,
            correctedPsf=correctedPsf,
            decorrelationKernel=decorrelationKernel,
            decorrelationFilter=np.asarray(filt.corr, dtype=np.float64),
            svar=svar,
            tvar=tvar,
            kappa=kappa,
            decorrelated=True,
        )
