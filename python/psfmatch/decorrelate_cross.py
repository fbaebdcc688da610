# SPDX-License-Identifier: BSD-3-Clause
"""Decorrelation of a cross-convolved difference image (docs/algorithm.md §7.11).

Cross-convolution subtracts ``D = P_T ⊗ S − K ⊗ P_S ⊗ T − b``: both images are convolved,
so both noises are correlated. With white per-pixel variances ``v`` (science) and ``t``
(template), the noise of D has the power spectrum

    |N̂_D(f)|² = v·|P̂_T(f)|² + t·|K̂(f)|²·|P̂_S(f)|²,

and multiplying D by the real filter

    φ(f) = sqrt( (1 + ε)·(v + t·κ²) / (v·|P̂_T|² + t·|K̂|²·|P̂_S|² + ε·(v + t·κ²)) ),   κ = K̂(0),

whitens it to the flat spectrum ``v + t·κ²`` wherever the denominator is well above its floor
ε·(v + t·κ²) (to within the factor (1 + ε)/(1 + ε(v + tκ²)/den)). ``φ(0) = 1`` (the PSFs
have unit sum), so fluxes are unchanged. The floor is added rather than a maximum so that φ
is smooth and its real-space images compact: they are computed on a small grid, cropped
where their tails hold less than 1e-8 and applied by float32 FFTs of tiles, as the
Alard–Lupton decorrelation does (the whole image's grid if they reach too far). Without the
floor this is the proper image difference of Zackay, Ofek & Gal-Yam (2016, their eq. 13)
scaled to unit DC gain, with their flux ratio — and whatever the PSF models miss — carried by
the fitted kernel K. The PSF of the result is ``P̂_S·P̂_T·φ``; for two equal PSFs
φ ≈ 1/|P̂| and the result is the unconvolved ``S − κT``, whose PSF is P itself.

Where both PSFs have almost no power (|P̂|² below ε, high frequencies) the data hold no
signal, and an unfloored φ would only amplify rounding and the PSF models' errors there
(ZOGY's known weakness; for a broad ground PSF |P̂|² falls to 1e-25 at the Nyquist
frequency); the floor ε (``crossConvolve.decorrelationFloor``) caps the gain at
``sqrt((1 + ε)/ε)``. Those frequencies keep less than the flat noise: the result's noise is
white where the PSF of D has its power and lower beyond, so its per-pixel variance (the variance
plane, which D/σ is right with) is below the flat level ``v + t·κ²`` (to 20–40 % of it for
the simulated pairs). A PSF fit that takes the noise to be white — detection's S/N, a
transient's flux error — must then use the variance plane times

    ρ = ⟨|N̂_D'|²⟩_{|P̂_D|²} / ⟨|N̂_D'|²⟩,

the noise's mean where the PSF has its power over its mean everywhere (``detectionVariance
Factor``; ρ = 1 for white noise). ImagePsfMatchTask detects with it and records it as
``crossDetectionVarianceFactor``. No choice of φ avoids it: the optimal S/N of a point source,
∫|P̂_D|²/|N̂_D'|², does not depend on φ at all, while whitening every frequency would need an
unbounded gain.

Variance: each input's variance plane is convolved with the square of its real-space
component filter, ``c_S = F⁻¹{P̂_T φ}`` and ``c_T = F⁻¹{K̂ P̂_S φ}``:
``Var(D') = c_S² ⊗ Var(S) + c_T² ⊗ Var(T)``, exact for independent pixels, with the Poisson
noise of bright stars where it is (the per-pixel weights of the Alard–Lupton decorrelation
would misplace it by the filter's reach).
"""

from __future__ import annotations

__all__ = ["decorrelateCrossConvolution", "rawDetectionVarianceFactor"]

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._fft import (
    _convolveTiles,
    _cropCentred,
    _evenFastLength,
    _fftShape,
    _filterImage,
    _irfft2,
    _rfft2,
    _spectrumOfSmall,
)
from .decorrelate import _TAIL_TOLERANCE, _cropByTail, _kernelImageAt
from .errors import InvalidInputError
from .image import Mask, MaskedImage
from .task import Struct


def _halfGridMean(values: np.ndarray, nx: int) -> float:
    """The mean over the full frequency grid of a real array given on the rfft2 half grid
    (columns 1 … nx/2 − 1 stand for two; nx even)."""
    total = values[:, 0].sum() + values[:, -1].sum() + 2.0 * values[:, 1:-1].sum()
    return float(total / (values.shape[0] * nx))


#: The share of the whitening filter's energy (Σφ²) the blanked band around unusable pixels
#: holds: what is left beyond it moves a pixel next to the band by < 3 % of its noise.
_REACH_ENERGY = 0.999


def _energyReach(kernel: np.ndarray) -> int:
    """The smallest half-width of a square about index 0 (wrapped) holding `_REACH_ENERGY`
    of Σ kernel² (a real-space filter with its centre at index 0)."""
    ny, nx = kernel.shape
    dy = np.minimum(np.arange(ny), ny - np.arange(ny))[:, None]
    dx = np.minimum(np.arange(nx), nx - np.arange(nx))[None, :]
    radius = np.maximum(dy, dx).ravel()
    energy = np.bincount(radius, weights=(kernel * kernel).ravel())
    cumulative = np.cumsum(energy)
    return int(np.searchsorted(cumulative, _REACH_ENERGY * cumulative[-1]))


def _blankNearUnusable(
    corrected: MaskedImage, difference: MaskedImage, reach: int, fillBits: int
) -> None:
    """Where the filter mixed in filled pixels, say so: pixels within ``reach`` of a
    non-finite pixel of D become NaN with +inf variance and that pixel's EDGE | NO_DATA bits;
    those within ``reach`` of a pixel with ``fillBits`` get its bits. The whitening filter
    inverts the smoothing of both PSFs, so the step from D's correlated noise to a filled
    value rings over its reach (in a simulation, at 3.6 times the noise on the row next to
    D's NaN border)."""
    from ._masks import dilate
    from ._psffield import _dilateBits
    from .image import Mask

    if reach <= 0:
        return
    nonFinite = ~np.isfinite(difference.image)
    if nonFinite.any():
        grown = dilate(nonFinite, reach) & ~nonFinite
        corrected.image[grown] = np.nan
        corrected.variance[grown] = np.inf
        edgeBits = Mask.getPlaneBitMask(["EDGE", "NO_DATA"])
        bits = int(np.bitwise_or.reduce(difference.mask[nonFinite] & edgeBits, axis=None))
        corrected.mask[grown] |= bits or Mask.getPlaneBitMask("NO_DATA")
    flagged = difference.mask & fillBits
    flagged[nonFinite] = 0
    if flagged.any():
        box = np.ones((2 * reach + 1, 2 * reach + 1), dtype=bool)
        corrected.mask |= _dilateBits(flagged, box)


def _detectionVarianceFactor(noise: np.ndarray, psfPower: np.ndarray, nx: int) -> float:
    """How much a PSF fit's variance, from the per-pixel variance as if the noise were white,
    falls short of its true one, for noise of spectrum ``noise`` and a PSF of power
    ``psfPower`` (rfft2 half grids of width ``nx``): ``<N>_{|P̂|²} / <N>``, the noise's mean
    where the PSF has its power over its mean everywhere. 1 for white noise."""
    pixelVariance = _halfGridMean(noise, nx)
    power = _halfGridMean(psfPower, nx)
    if not (pixelVariance > 0 and power > 0):
        return 1.0
    return _halfGridMean(psfPower * noise, nx) / power / pixelVariance


def rawDetectionVarianceFactor(
    psfMatchingKernel: Any,
    sciencePsf: np.ndarray,
    templatePsf: np.ndarray,
    bbox: Any,
    *,
    svar: float,
    tvar: float,
) -> float:
    """`_detectionVarianceFactor` of the undecorrelated cross-convolved difference, whose
    noise has the spectrum ``v|P̂_T|² + t|K̂P̂_S|²`` and its PSF ``P_S ⊗ P_T`` (K at the
    centre of ``bbox``; the spectra sampled on a 256² grid, which a ratio of their means needs
    no more than). 1 when the variances are unusable."""
    v, t = float(svar), float(tvar)
    if not (math.isfinite(v) and math.isfinite(t) and v >= 0 and t >= 0 and v + t > 0):
        return 1.0
    kimg = _kernelImageAt(
        psfMatchingKernel,
        0.5 * (bbox.getMinX() + bbox.getMaxX() + 1),
        0.5 * (bbox.getMinY() + bbox.getMaxY() + 1),
    )
    shape = _fftShape((256, 256), sciencePsf.shape, templatePsf.shape)
    kHat = _spectrumOfSmall(kimg, shape)
    sPower = np.abs(_spectrumOfSmall(np.asarray(sciencePsf, dtype=float), shape)) ** 2
    tPower = np.abs(_spectrumOfSmall(np.asarray(templatePsf, dtype=float), shape)) ** 2
    noise = v * tPower + t * np.abs(kHat) ** 2 * sPower
    return _detectionVarianceFactor(noise, sPower * tPower, shape[1])


#: The filter is first computed on a grid of this many times the PSF of D's size.
_SMALL_GRID = 8


@dataclass(frozen=True, eq=False)
class _CrossFilter:
    """φ and the spectra it is made of on one rfft2 half grid, and what they say about the
    noise of the result."""

    phi: np.ndarray
    kHat: np.ndarray
    sHat: np.ndarray
    tHat: np.ndarray
    flooredFraction: float
    detectionVarianceFactor: float


def _crossFilter(
    kimg: np.ndarray,
    pS: np.ndarray,
    pT: np.ndarray,
    v: float,
    t: float,
    floor: float,
    grid: tuple[int, int],
    nThreads: int,
) -> _CrossFilter:
    """φ of the module docstring on ``grid``."""
    kappa = float(kimg.sum())
    kHat = _spectrumOfSmall(kimg, grid, nThreads)
    sHat = _spectrumOfSmall(pS, grid, nThreads)
    tHat = _spectrumOfSmall(pT, grid, nThreads)
    numerator = v + t * kappa * kappa
    sPower = sHat.real**2 + sHat.imag**2
    tPower = tHat.real**2 + tHat.imag**2
    denominator = v * tPower + t * (kHat.real**2 + kHat.imag**2) * sPower
    floored = denominator < floor * numerator
    # The floor is added, not a maximum: φ stays smooth, so its real-space image is compact
    # and can be cropped (a kink where the maximum switches leaves a slow tail); (1 + ε)
    # keeps φ(0) = 1.
    phi = np.sqrt((1.0 + floor) * numerator / (denominator + floor * numerator))
    return _CrossFilter(
        phi=phi,
        kHat=kHat,
        sHat=sHat,
        tHat=tHat,
        flooredFraction=_halfGridMean(floored.astype(float), grid[1]),
        detectionVarianceFactor=_detectionVarianceFactor(
            phi * phi * denominator, sPower * tPower * phi * phi, grid[1]
        ),
    )


def decorrelateCrossConvolution(
    science: MaskedImage,
    template: MaskedImage,
    difference: MaskedImage,
    psfMatchingKernel: Any,
    sciencePsf: np.ndarray,
    templatePsf: np.ndarray,
    *,
    svar: float,
    tvar: float,
    floor: float,
    fillBits: int,
    nThreads: int = 0,
) -> Struct:
    """Whiten a cross-convolved difference image (see the module docstring).

    Parameters
    ----------
    science, template : `MaskedImage`
        The unconvolved inputs (their variance planes are propagated). Never modified.
    difference : `MaskedImage`
        ``P_T ⊗ S − K ⊗ P_S ⊗ T − b`` on the same grid. Never modified.
    psfMatchingKernel : `LinearCombinationKernel`, `FixedKernel` or 2-D array
        K, evaluated (unnormalised) at the centre of the difference image's box.
    sciencePsf, templatePsf : `numpy.ndarray`
        Odd-sized unit-sum images of ``P_S`` and ``P_T`` at the centre.
    svar, tvar : `float`
        The images' typical per-pixel variances (clipped means of their variance planes).
    floor : `float`
        ε of the module docstring, in (0, 1).
    fillBits : `int`
        Pixels of D (and of each variance plane) with these mask bits are mean-filled for
        the FFT and keep their unfiltered values.
    nThreads : `int`, optional
        FFT threads (0: every core); the result does not depend on it.

    Returns
    -------
    result : `Struct`
        ``correctedMaskedImage``, ``correctedPsf`` (unit sum; ``P_S ⊗ P_T`` filtered by φ),
        ``decorrelationKernel`` (φ in real space, centred), ``decorrelationFilter`` (φ on the
        rfft2 half grid), ``svar``, ``tvar``, ``kappa``, ``flooredFraction`` (the share of
        the frequency grid where the floor holds), ``detectionVarianceFactor`` (what the
        variance plane must be multiplied by for a PSF fit that takes the noise to be white,
        as detection does: see the module docstring), ``reach`` (the half-width of the
        band blanked around unusable pixels) and ``decorrelated`` (False when ``svar`` or
        ``tvar`` is unusable: D is then returned unchanged with ``P_S ⊗ P_T``).

    Raises
    ------
    InvalidInputError
        Images on different grids, a floor outside (0, 1), a PSF that is not an odd-sized
        finite image with a positive sum.
    """
    from ._psfutil import _convolveSmall
    from .decorrelate import _sameGrid

    _sameGrid({"science": science, "template": template, "difference": difference})
    if not (0.0 < floor < 1.0):
        raise InvalidInputError(f"floor: expected a number in (0, 1), got {floor!r}")
    psfs = []
    for name, psf in (("sciencePsf", sciencePsf), ("templatePsf", templatePsf)):
        array = np.asarray(psf, dtype=np.float64)
        if array.ndim != 2 or array.shape[0] % 2 == 0 or array.shape[1] % 2 == 0:
            raise InvalidInputError(f"{name}: expected an odd-sized 2-D image, got {array.shape}")
        total = float(array.sum()) if np.isfinite(array).all() else math.nan
        if not total > 0:
            raise InvalidInputError(f"{name}: the PSF image must be finite with a positive sum")
        psfs.append(array / total)
    pS, pT = psfs
    raw = _convolveSmall(pS, pT)
    bbox = difference.getBBox()
    kimg = _kernelImageAt(
        psfMatchingKernel,
        0.5 * (bbox.getMinX() + bbox.getMaxX() + 1),
        0.5 * (bbox.getMinY() + bbox.getMaxY() + 1),
    )
    kappa = float(kimg.sum())
    v, t = float(svar), float(tvar)
    if not (math.isfinite(v) and math.isfinite(t) and v >= 0 and t >= 0 and v + t > 0):
        return Struct(
            correctedMaskedImage=difference.clone(),
            correctedPsf=raw / raw.sum(),
            decorrelationKernel=None,
            decorrelationFilter=None,
            svar=v,
            tvar=t,
            kappa=kappa,
            flooredFraction=math.nan,
            decorrelated=False,
        )

    d = difference
    psfShape = (
        raw.shape[0] + kimg.shape[0] - 1,
        raw.shape[1] + kimg.shape[1] - 1,
    )
    fullGrid = _fftShape(d.image.shape, psfShape, kimg.shape)
    # The filter on the smallest grid on which its real-space images can be cropped where
    # their tails hold < 1e-8 (as the Alard–Lupton decorrelation does), applied by float32
    # tiles; else on the whole image's grid.
    side = _SMALL_GRID * max(psfShape)
    while True:
        grid = (
            min(_evenFastLength(side), fullGrid[0]),
            min(_evenFastLength(side), fullGrid[1]),
        )
        f = _crossFilter(kimg, pS, pT, v, t, floor, grid, nThreads)
        phiKernel = _irfft2(f.phi, grid, nThreads)
        crops = [
            _cropByTail(_irfft2(spectrum, grid, nThreads), kimg.shape, _TAIL_TOLERANCE)
            for spectrum in (f.phi, f.tHat * f.phi, f.kHat * f.sHat * f.phi)
        ]
        if all(c is not None for c in crops) or grid == fullGrid:
            break
        side *= 2

    fillFlags = (d.mask & fillBits) != 0
    unusable = fillFlags | ~np.isfinite(d.image)
    if all(c is not None for c in crops):
        phiCrop, sCrop, tCrop = (c[0] for c in crops if c is not None)
        image = _convolveTiles(
            d.image, phiCrop, mask=d.mask, maskBits=fillBits, keepUnusable=True, nThreads=nThreads
        ).astype(d.image.dtype, copy=False)
        variance = np.zeros(image.shape)
        for mi, c in ((science, sCrop), (template, tCrop)):
            plane = np.asarray(mi.variance)
            filteredPlane = _convolveTiles(
                plane, c * c, mask=mi.mask, maskBits=fillBits, nThreads=nThreads
            )
            variance += np.where(np.isfinite(plane), filteredPlane, np.inf)
        decorrelationKernel = phiCrop
    else:
        filtered, _ = _filterImage(d.image, f.phi, grid, fillFlags, nThreads)
        image = filtered.astype(d.image.dtype)
        del filtered
        image[unusable] = d.image[unusable]
        variance = np.zeros(image.shape)
        for mi, spectrum in ((science, f.tHat * f.phi), (template, f.kHat * f.sHat * f.phi)):
            c = _irfft2(spectrum, grid, nThreads)
            plane = np.asarray(mi.variance)
            filteredPlane, _ = _filterImage(
                plane, _rfft2(c * c, nThreads), grid, (mi.mask & fillBits) != 0, nThreads
            )
            variance += np.where(np.isfinite(plane), filteredPlane, np.inf)
        decorrelationKernel = _cropCentred(phiKernel, psfShape)
    keep = unusable | ~np.isfinite(d.variance)
    variance[keep] = d.variance[keep]
    corrected = MaskedImage(image, d.mask.copy(), variance.astype(d.variance.dtype), xy0=d.getXY0())

    reach = _energyReach(phiKernel)
    _blankNearUnusable(corrected, d, reach, fillBits)

    correctedPsf = _cropCentred(_irfft2(f.sHat * f.tHat * f.phi, grid, nThreads), psfShape)
    correctedPsf = correctedPsf / correctedPsf.sum()
    flooredFraction, detectionVarianceFactor = f.flooredFraction, f.detectionVarianceFactor
    phi = f.phi
    return Struct(
        correctedMaskedImage=corrected,
        correctedPsf=correctedPsf,
        decorrelationKernel=decorrelationKernel,
        decorrelationFilter=phi,
        svar=v,
        tvar=t,
        kappa=kappa,
        flooredFraction=flooredFraction,
        detectionVarianceFactor=detectionVarianceFactor,
        reach=reach,
        decorrelated=True,
    )


def detectionImageForTask(
    task: Any, fit: Any, difference: MaskedImage, factor: float | None
) -> MaskedImage:
    """`ImagePsfMatchTask`'s detection image of a cross-convolved difference: D with its
    variance times ρ (``factor``, the decorrelation's; else computed for the
    undecorrelated D), the factor that makes detection's white-noise PSF fit right for a
    cross-convolved difference, whose noise is not white (§7.11); recorded as
    ``crossDetectionVarianceFactor``."""
    if factor is None:
        # Not decorrelated: the noise of P_T ⊗ S − K ⊗ P_S ⊗ T itself.
        factor = rawDetectionVarianceFactor(
            fit.psfMatchingKernel,
            fit.sciencePsf,
            fit.templatePsf,
            difference.getBBox(),
            svar=task.decorrelate._clippedMeanVariance(fit.science),
            tvar=task.decorrelate._clippedMeanVariance(fit.template),
        )
    task.metadata["crossDetectionVarianceFactor"] = factor
    variance = difference.variance * difference.variance.dtype.type(factor)
    return MaskedImage(difference.image, difference.mask, variance, xy0=difference.getXY0())


def decorrelateForTask(task: Any, fit: Any, raw: MaskedImage) -> Struct:
    """`ImagePsfMatchTask`'s decorrelation of a cross-convolved difference (the fit's
    `_Subtraction` ``fit``): `decorrelateCrossConvolution` with the variances and mask planes of
    the task's ``decorrelate`` subtask, its floor recorded in the task's metadata."""
    dec = decorrelateCrossConvolution(
        fit.science,
        fit.template,
        raw,
        fit.psfMatchingKernel,
        fit.sciencePsf,
        fit.templatePsf,
        svar=task.decorrelate._clippedMeanVariance(fit.science),
        tvar=task.decorrelate._clippedMeanVariance(fit.template),
        floor=float(task.config.crossConvolve.decorrelationFloor),
        fillBits=Mask.getPlaneBitMask(
            list(task.decorrelate.config.fillMaskPlanes), skipUnknown=True
        ),
        nThreads=int(task.kConfig.nThreads),
    )
    if not dec.decorrelated:
        task.log.warning(
            "Not decorrelating: the clipped mean variances are unusable (science %s, "
            "template %s); the difference is returned unchanged",
            dec.svar,
            dec.tvar,
        )
    else:
        task.metadata["decorrelationFlooredFraction"] = dec.flooredFraction
    return dec
