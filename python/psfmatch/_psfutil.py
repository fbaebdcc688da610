# SPDX-License-Identifier: BSD-3-Clause
"""PSF images and sizes, written once: the FWHM of a Gaussian per σ, the FWHM from half-light
radii and from second moments, a pixel-integrated Gaussian PSF image, a PSF given as an image
or an object, and the convolution of two small kernel images."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ._fft import _irfft2, _rfft2
from .errors import InvalidInputError

#: FWHM of a Gaussian in units of its σ: 2·sqrt(2·ln 2) = 2.3548.
FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))


def fwhmFromR50(r50: Any) -> float:
    """A PSF's FWHM from the half-light radii of its stars: twice their median (exact for a
    Gaussian, whose half-light radius is its half width at half maximum); NaN for none."""
    r50 = np.asarray(r50, dtype=float)
    return float(2.0 * np.median(r50)) if r50.size else math.nan


def _gaussianPsfImage(fwhm: float) -> np.ndarray:
    """A unit-sum, pixel-integrated round Gaussian of FWHM ``fwhm`` pixels, of odd size
    2·ceil(4σ) + 1 (the flux beyond 4σ per axis, 6e-5, is far below the fit's precision)."""
    sigma = fwhm / FWHM_PER_SIGMA
    half = max(2, math.ceil(4.0 * sigma))
    edges = (np.arange(-half, half + 2) - 0.5) / (math.sqrt(2.0) * sigma)
    cdf = np.array([math.erf(e) for e in edges])
    profile = np.diff(cdf)
    profile /= profile.sum()
    return np.outer(profile, profile)


def userPsfImage(psf: Any, x: float, y: float, name: str) -> Any:
    """``psf.computeKernelImage(x, y)`` of a user's PSF object, whose own failure becomes an
    `InvalidInputError` naming the argument and position (was: its bare exception, a
    traceback from deep inside the subtraction)."""
    try:
        return psf.computeKernelImage(x, y)
    except Exception as err:
        raise InvalidInputError(
            f"{name}: its computeKernelImage({x:.1f}, {y:.1f}) raised {type(err).__name__}: {err}"
        ) from err


def _psfImage(psf: Any, fwhm: float, x: float, y: float, name: str) -> np.ndarray:
    """A unit-sum, odd-sized PSF image: ``psf`` evaluated at (x, y) if it is a PSF object (with
    ``computeKernelImage(x, y)``), ``psf`` itself if it is an array, else a Gaussian of
    ``fwhm``."""
    if psf is None:
        return _gaussianPsfImage(fwhm)
    value = userPsfImage(psf, x, y, name) if hasattr(psf, "computeKernelImage") else psf
    try:
        array = np.array(getattr(value, "array", value), dtype=np.float64)
    except (TypeError, ValueError):
        raise InvalidInputError(
            f"{name}: expected a 2-D PSF image or a PSF object, got {type(psf).__name__}"
        ) from None
    if array.ndim != 2 or array.shape[0] % 2 == 0 or array.shape[1] % 2 == 0:
        raise InvalidInputError(f"{name}: expected an odd-sized 2-D image, got shape {array.shape}")
    total = float(array.sum()) if np.isfinite(array).all() else math.nan
    if not total > 0:
        raise InvalidInputError(f"{name}: the PSF image must be finite with a positive sum")
    return array / total


def _psfFwhm(psf: np.ndarray) -> float:
    """FWHM (pixels) of a PSF image from its second moments: 2.3548·sqrt((Ixx + Iyy)/2)."""
    ny, nx = psf.shape
    yy, xx = np.mgrid[:ny, :nx]
    total = psf.sum()
    xc, yc = (psf * xx).sum() / total, (psf * yy).sum() / total
    ixx = (psf * (xx - xc) ** 2).sum() / total
    iyy = (psf * (yy - yc) ** 2).sum() / total
    second = 0.5 * (ixx + iyy)
    return float(FWHM_PER_SIGMA * math.sqrt(second)) if second > 0 else math.nan


def _convolveSmall(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The full linear convolution of two small odd-sized images (odd size, centred)."""
    shape = (a.shape[0] + b.shape[0] - 1, a.shape[1] + b.shape[1] - 1)
    out = _irfft2(_rfft2(a, 1, shape) * _rfft2(b, 1, shape), shape, 1)
    return np.asarray(out)
