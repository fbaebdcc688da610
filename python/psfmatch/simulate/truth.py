# SPDX-License-Identifier: BSD-3-Clause
"""The known answer of a simulated pair: `SimulationTruth`."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .._checks import _finiteFloat, _nonNegativeInt
from .._psfmodel import GaussianPsfModel, _maybeScalar
from ..errors import InvalidInputError

__all__ = ["SimulationTruth"]


class SimulationTruth:
    """What a subtraction of a `simulatePair` pair should recover.

    The science image was made as ``S = fluxScale · (P_s ⋆ stars) + transients + variables'
    change + fluxScale · templateSky + b(x, y) + noise`` and the template as
    ``T = P_t ⋆ stars + templateSky + noise``, where ``P ⋆`` means rendering through a
    pixel-integrated Gaussian PSF. Hence ``S = K ⊗ T + b`` away from transients and variables,
    with ``K = fluxScale · G(C_s − C_t)`` the continuous Gaussian matching kernel.

    Attributes
    ----------
    fluxScale : `float`
        Science photometry over template photometry.
    backgroundCoefficients : `tuple` [`float`, `float`, `float`]
        ``(b0, bx, by)`` of ``b(x, y) = b0 + bx x + by y`` (parent coordinates).
    templateSky : `float`
        The template's flat sky level.
    templatePsf, sciencePsf : `GaussianPsfModel`
        The PSFs the images were rendered with.
    templateModel, scienceModel : `numpy.ndarray`
        The noise-free images (sky and background included), in the output dtype.
    differenceModel : `numpy.ndarray`
        The noise-free ideal difference ``S − (K ⊗ T + b)``: the transients plus each variable
        star's change of flux, through the science PSF.
    bbox : `tuple` [`int`, `int`, `int`, `int`]
        ``(x0, y0, width, height)`` of the images in parent coordinates.
    """

    def __init__(
        self,
        *,
        fluxScale: float,
        backgroundCoefficients: tuple[float, float, float],
        templateSky: float,
        templatePsf: GaussianPsfModel,
        sciencePsf: GaussianPsfModel,
        templateModel: np.ndarray,
        scienceModel: np.ndarray,
        differenceModel: np.ndarray,
        bbox: tuple[int, int, int, int],
    ) -> None:
        self.fluxScale = fluxScale
        self.backgroundCoefficients = backgroundCoefficients
        self.templateSky = templateSky
        self.templatePsf = templatePsf
        self.sciencePsf = sciencePsf
        self.templateModel = templateModel
        self.scienceModel = scienceModel
        self.differenceModel = differenceModel
        self.bbox = bbox

    @property
    def templateFwhm(self) -> float:
        """The template FWHM (pixels) at the centre of the image.

        Use ``templatePsf.getFwhm(x, y)`` where a template PSF varies.
        """
        x0, y0, width, height = self.bbox
        return float(self.templatePsf.getFwhm(x0 + 0.5 * (width - 1), y0 + 0.5 * (height - 1)))

    def scienceFwhm(self, x: Any, y: Any) -> Any:
        """The science FWHM (pixels) at parent positions (vectorised)."""
        return self.sciencePsf.getFwhm(x, y)

    def kernelSum(self, x: Any, y: Any) -> Any:
        """The true kernel sum at parent positions: `fluxScale` everywhere (vectorised)."""
        xa, _ = np.broadcast_arrays(np.asarray(x, dtype=float), np.asarray(y, dtype=float))
        return _maybeScalar(np.full(xa.shape, self.fluxScale))

    def background(self, x: Any, y: Any) -> Any:
        """The true differential background ``b0 + bx x + by y`` at parent positions."""
        b0, bx, by = self.backgroundCoefficients
        return _maybeScalar(b0 + bx * np.asarray(x, dtype=float) + by * np.asarray(y, dtype=float))

    def matchingKernelCovariance(self, x: Any, y: Any) -> tuple[Any, Any, Any]:
        """Second moments ``(Cxx, Cyy, Cxy)`` of the matching kernel, ``C_s − C_t``.

        Not positive semi-definite where the science PSF is narrower than the template's in
        some direction (the deconvolution case, which no Gaussian kernel matches).
        """
        sxx, syy, sxy = (np.asarray(v) for v in self.sciencePsf.getCovariance(x, y))
        txx, tyy, txy = (np.asarray(v) for v in self.templatePsf.getCovariance(x, y))
        return _maybeScalar(sxx - txx), _maybeScalar(syy - tyy), _maybeScalar(sxy - txy)

    def matchingKernelSigma(self, x: Any, y: Any) -> Any:
        """The matching kernel's sigma (pixels) at parent positions (vectorised).

        ``sqrt(sigma_s² − sigma_t²)`` for round PSFs; in general the determinant radius
        ``det(C_s − C_t)^(1/4)``. NaN where ``C_s − C_t`` is not positive semi-definite (the
        science PSF is narrower somewhere: deconvolution).
        """
        cxx, cyy, cxy = (np.asarray(v) for v in self.matchingKernelCovariance(x, y))
        det = cxx * cyy - cxy * cxy
        ok = (cxx >= 0) & (cyy >= 0) & (det >= -1e-12 * (cxx * cxx + cyy * cyy))
        with np.errstate(invalid="ignore"):
            sigma = np.where(ok, np.sqrt(np.sqrt(np.maximum(det, 0.0))), np.nan)
        return _maybeScalar(sigma)

    def matchingKernelImage(self, x: float, y: float, size: int) -> np.ndarray:
        """The true matching kernel at a parent position, sampled on a ``size × size`` grid.

        Parameters
        ----------
        x, y : `float`
            Parent coordinates.
        size : `int`
            Odd width of the kernel image; element ``[size // 2, size // 2]`` is offset 0.

        Returns
        -------
        kernel : `numpy.ndarray`, shape (size, size), float64
            ``fluxScale`` times the Gaussian ``G(C_s − C_t)`` sampled at integer offsets and
            normalised so that its *untruncated* samples sum to 1; a stamp too small to hold
            the Gaussian sums to less than `fluxScale` by the part cut off.

        Raises
        ------
        InvalidInputError
            If ``size`` is not a positive odd integer, or the science PSF is narrower than the
            template's at ``(x, y)`` (no Gaussian matching kernel exists).

        Notes
        -----
        This is an approximation of the exact discrete kernel. Convolving the template with
        point samples of the continuous kernel is a Riemann sum of the continuous convolution;
        for Gaussians its aliasing error is about ``exp(−2 π² σ_g²)`` with
        ``σ_g² = σ_k² (σ_t² + 1/12) / (σ_k² + σ_t² + 1/12)`` (round PSFs; ``σ_k`` the kernel's
        sigma): ~1e-9 of the peak for the defaults of `simulatePair` (``σ_k`` 1.5 to 2.3),
        ~1e-5 for ``σ_t = 1.2, σ_k = 1.06``, ~1e-4 for ``σ_t = 1.6, σ_k = 0.8``.
        For narrower kernels (science PSF barely wider than the template's) no sampled kernel
        is exact, and this one is a rough approximation; an equal PSF gives a delta function.
        """
        xf = _finiteFloat(x, "x")
        yf = _finiteFloat(y, "y")
        n = _nonNegativeInt(size, "size")
        if n % 2 == 0:
            raise InvalidInputError(f"size: expected a positive odd integer, got {size!r}")
        cxx, cyy, cxy = (float(v) for v in self.matchingKernelCovariance(xf, yf))
        scale = max(abs(cxx), abs(cyy), 1e-300)
        eigenMin = 0.5 * (cxx + cyy) - math.hypot(0.5 * (cxx - cyy), cxy)
        if eigenMin < -1e-12 * scale:
            raise InvalidInputError(
                f"matchingKernelImage: the science PSF is narrower than the template PSF at "
                f"({xf}, {yf}) (C_s - C_t has eigenvalue {eigenMin:.4g} < 0): no Gaussian "
                "matching kernel exists (deconvolution)"
            )
        half = n // 2
        # Normalise over a grid that holds the whole Gaussian, then cut out the stamp.
        big = max(half, math.ceil(8.0 * math.sqrt(max(cxx, cyy, 0.0))) + 1)
        # A tiny floor keeps a degenerate (delta-like) axis finite: it leaves only offset 0.
        floor = 1e-8
        axx, ayy = max(cxx, 0.0) + floor, max(cyy, 0.0) + floor
        det = axx * ayy - cxy * cxy
        offsets = np.arange(-big, big + 1, dtype=float)
        u, v = offsets[None, :], offsets[:, None]
        q = (ayy * u * u - 2.0 * cxy * u * v + axx * v * v) / det
        kernel = np.exp(-0.5 * q)
        kernel *= self.fluxScale / kernel.sum()
        cut = slice(big - half, big + half + 1)
        return np.ascontiguousarray(kernel[cut, cut])
