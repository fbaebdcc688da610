# SPDX-License-Identifier: BSD-3-Clause
"""Simulated template/science image pairs with a known answer.

`simulatePair` renders a field of stars twice, once through a template PSF and once through a
(spatially varying) science PSF, scales the science photometry by a known factor, adds a
known differential background, transients and variable stars, and adds Gaussian noise whose
variance is stored in the variance planes. Everything a subtraction should recover is returned
beside the images in a `SimulationTruth`: the kernel sum, the background ``b(x, y)``, the
matching kernel, the FWHMs and the noise-free images.

The renderer is independent of psfmatch's convolution code: each star is an analytic Gaussian
integrated over the pixels of a small stamp around it (``erf`` differences per axis for round
and axis-aligned PSFs, sub-pixel sampling for rotated ones), and the stamps are added into the
image. Because both images hold *pixel-integrated* Gaussians of the same positions, the science
image is exactly the template convolved with the continuous Gaussian matching kernel (times
the flux scale) plus the background; see `SimulationTruth.matchingKernelImage` for how well a
sampled kernel reproduces that.

Conventions are the package's: ``x`` is the column, ``y`` the row, arrays are ``[y, x]``,
positions are in parent coordinates with pixel centres at integers.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ._checks import _finiteFloat, _floatSequence, _nonNegativeInt, _positiveFloat
from ._psfutil import GaussianPsfModel, _halfWidth, _maybeScalar, _renderSources
from .errors import InvalidInputError
from .image import Mask, MaskedImage
from .task import Struct

__all__ = ["GaussianPsfModel", "SimulationTruth", "simulatePair"]


def _nearestDistance(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Distance from each point to its nearest other point (``inf`` for a lone point).

    A sweep over the points sorted by ``x``: offset ``k`` compares each point with the one
    ``k`` places later, and stops once no pair at that offset is closer in ``x`` alone than
    the best distance either point already has (larger offsets are farther apart in ``x``).
    """
    n = len(x)
    best = np.full(n, np.inf)
    if n < 2:
        return best
    order = np.argsort(x, kind="stable")
    xs, ys = x[order], y[order]
    sortedBest = np.full(n, np.inf)
    for k in range(1, n):
        dx = xs[k:] - xs[:-k]
        if np.all(dx >= sortedBest[:-k]) and np.all(dx >= sortedBest[k:]):
            break
        d = np.hypot(dx, ys[k:] - ys[:-k])
        np.minimum(sortedBest[:-k], d, out=sortedBest[:-k])
        np.minimum(sortedBest[k:], d, out=sortedBest[k:])
    best[order] = sortedBest
    return best


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


def _asPsfModel(value: Any, name: str, xRange: tuple[float, float]) -> GaussianPsfModel:
    """Turn a simulatePair PSF argument into a `GaussianPsfModel`."""
    if isinstance(value, GaussianPsfModel):
        return value
    if callable(value):
        return GaussianPsfModel(value)
    if isinstance(value, (Sequence, np.ndarray)) and not isinstance(value, (str, bytes)):
        s0, s1 = _floatSequence(value, name, 2)
        for i, s in enumerate((s0, s1)):
            if s <= 0:
                raise InvalidInputError(f"{name}[{i}]: expected a sigma > 0, got {s!r}")
        return GaussianPsfModel.linearInX(s0, s1, xStart=xRange[0], xEnd=xRange[1])
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.number)):
        raise InvalidInputError(
            f"{name}: expected a sigma, a (start, end) pair, a callable or a GaussianPsfModel; "
            f"got {value!r}"
        )
    return GaussianPsfModel(_positiveFloat(value, name))


def _powerLawFluxes(u: np.ndarray, low: float, high: float, index: float) -> np.ndarray:
    """Inverse CDF of ``N(>F) ∝ F^-index`` truncated to ``[low, high]``, at uniforms ``u``."""
    if high == low:
        return np.full(u.shape, low)
    if index == 0.0:
        # N(>F) ∝ -ln F: uniform in ln F.
        return low * (high / low) ** u
    a, b = low**-index, high**-index
    return (a - u * (a - b)) ** (-1.0 / index)


def _placeTransients(
    rng: np.random.Generator,
    nTransients: int,
    xRange: tuple[float, float],
    yRange: tuple[float, float],
    starX: np.ndarray,
    starY: np.ndarray,
    *,
    starIsolation: float,
    mutualIsolation: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Draw positions ``starIsolation`` from every star and ``mutualIsolation`` apart."""
    xs: list[float] = []
    ys: list[float] = []
    if nTransients == 0:
        return np.zeros(0), np.zeros(0)
    batch = max(256, 16 * nTransients)
    for _ in range(64):
        cx = rng.uniform(xRange[0], xRange[1], batch)
        cy = rng.uniform(yRange[0], yRange[1], batch)
        if len(starX):
            free = np.ones(batch, dtype=bool)
            for start in range(0, len(starX), 2048):
                sx = starX[start : start + 2048]
                sy = starY[start : start + 2048]
                d2 = (cx[:, None] - sx[None, :]) ** 2 + (cy[:, None] - sy[None, :]) ** 2
                free &= np.all(d2 >= starIsolation * starIsolation, axis=1)
            cx, cy = cx[free], cy[free]
        for px, py in zip(cx.tolist(), cy.tolist(), strict=True):
            placed = zip(xs, ys, strict=True)
            if all((px - qx) ** 2 + (py - qy) ** 2 >= mutualIsolation**2 for qx, qy in placed):
                xs.append(px)
                ys.append(py)
                if len(xs) == nTransients:
                    return np.array(xs), np.array(ys)
    raise InvalidInputError(
        f"nTransients: could place only {len(xs)} of {nTransients} transients at least "
        f"{starIsolation:.3g} pixels from every star and the border and {mutualIsolation:.3g} "
        "from each other; use fewer stars or transients, or a larger image"
    )


def simulatePair(
    shape: tuple[int, int] = (1024, 1024),
    *,
    nStars: int = 400,
    seed: int | None = 0,
    templateSigma: float | GaussianPsfModel | Callable[..., Any] = 1.6,
    scienceSigma: (float | tuple[float, float] | GaussianPsfModel | Callable[..., Any]) = (
        2.2,
        2.8,
    ),
    fluxScale: float = 1.25,
    background: float | tuple[float, float, float] = (50.0, 0.01, -0.005),
    templateSky: float = 100.0,
    templateSkySigma: float = 2.0,
    scienceSkySigma: float = 8.0,
    gain: float = 1.0,
    fluxRange: tuple[float, float] = (2e3, 2e5),
    fluxIndex: float = 0.75,
    nTransients: int = 10,
    transientFlux: float | Sequence[float] | np.ndarray = 5e3,
    nVariables: int = 0,
    variableFactorRange: tuple[float, float] = (1.5, 3.0),
    saturation: float | None = None,
    edge: int = 0,
    dtype: Any = np.float32,
    xy0: tuple[int, int] = (0, 0),
) -> Struct:
    """Simulate a template/science image pair with a known matching kernel and background.

    Parameters
    ----------
    shape : `tuple` [`int`, `int`], optional
        ``(ny, nx)`` of both images.
    nStars : `int`, optional
        Number of stars, placed uniformly over the image (centres anywhere in it, so sub-pixel
        offsets are random) without any minimum separation: the default density (one star per
        ~2600 pixels) leaves most stars isolated; more give realistic crowding.
    seed : `int` or `None`, optional
        Seed of the independent random streams for the stars, the variables, the transients
        and each image's noise; ``None`` draws fresh entropy. The star list depends only on
        ``seed``, ``shape``, ``nStars``, ``fluxRange`` and ``fluxIndex`` (and the first ``n``
        stars are the same for any ``nStars >= n``), never on the noise or the PSFs.
    templateSigma : `float`, `GaussianPsfModel` or callable, optional
        Template PSF: a constant round sigma (pixels), a model, or a function as accepted by
        `GaussianPsfModel`.
    scienceSigma : `float`, (`float`, `float`), `GaussianPsfModel` or callable, optional
        Science PSF. A pair ``(s0, s1)`` is a round sigma varying linearly from ``s0`` at the
        first column to ``s1`` at the last. A callable ``f(x, y) -> (sigmaX, sigmaY, theta)``
        gives elliptical PSFs. It may be narrower than the template's (deconvolution).
    fluxScale : `float`, optional
        Science photometry = ``fluxScale`` × template photometry; the true kernel sum.
    background : `float` or (`float`, `float`, `float`), optional
        ``(b0, bx, by)`` of the science-minus-matched-template background
        ``b(x, y) = b0 + bx x + by y`` in parent coordinates; a number is ``b0`` alone.
    templateSky : `float`, optional
        Flat sky level of the template; the science sky is ``fluxScale · templateSky + b``.
    templateSkySigma, scienceSkySigma : `float`, optional
        Standard deviation (>= 0) of each image's sky noise.
    gain : `float`, optional
        Electrons per count (> 0, may be ``inf``): a source of ``s`` counts adds ``s / gain``
        to the variance (Gaussian noise of Poisson-like variance).
    fluxRange : (`float`, `float`), optional
        Range of star fluxes (template units), ``0 < low <= high``.
    fluxIndex : `float`, optional
        Fluxes follow ``N(>F) ∝ F^-fluxIndex`` (>= 0); 0.75 gives a useful share of bright
        stars (1.5 would be the Euclidean counts).
    nTransients : `int`, optional
        Point sources in the science image only, placed at least one science stamp half-width
        ``h = ceil(6 sigma_s,max)`` (17 pixels by default) from every star and from the border
        (plus ``edge``), and ``2 h`` from each other.
    transientFlux : `float` or sequence of `float`, optional
        Transient flux in science units, one value or one per transient.
    nVariables : `int`, optional
        Stars, chosen among those at least as bright as the median, whose science flux is
        ``fluxScale · flux`` times a factor or its inverse (at random), the factor drawn
        log-uniformly from ``variableFactorRange``.
    variableFactorRange : (`float`, `float`), optional
        ``1 <= low <= high``.
    saturation : `float`, optional
        If given, pixels at or above it (after noise) are set to it and get the ``SAT`` bit.
    edge : `int`, optional
        Width of a border whose pixels get the ``EDGE`` and ``NO_DATA`` bits and image value 0.
    dtype : numpy dtype, optional
        ``float32`` or ``float64`` for the image and variance planes and the noise-free models.
    xy0 : (`int`, `int`), optional
        Parent coordinates of pixel ``[0, 0]`` of both images.

    Returns
    -------
    result : `psfmatch.task.Struct`
        ``template``, ``science`` : `psfmatch.MaskedImage`
            The pair, with variance planes ``skySigma² + sources / gain`` (noise-free sources)
            equal to the variance of the noise that was added.
        ``stars`` : `numpy.ndarray` (structured)
            Fields ``x``, ``y`` (parent), ``flux`` (template), ``scienceFlux``,
            ``variable`` (bool) and ``nearestDistance`` (pixels to the nearest other star).
        ``transients`` : `numpy.ndarray` (structured)
            Fields ``x``, ``y``, ``flux`` (science units).
        ``truth`` : `SimulationTruth`
            The kernel sum, background, matching kernel, FWHMs and noise-free images.

    Raises
    ------
    InvalidInputError
        If an argument is out of range (the message names it), or the transients cannot be
        placed away from the stars.

    Notes
    -----
    Stars are pixel-integrated Gaussians rendered into stamps reaching 6 sigma, so the science
    image equals the template convolved with the continuous matching kernel up to ~1e-9 of
    each star's flux (stamp truncation) and float rounding; see
    `SimulationTruth.matchingKernelImage` for the accuracy of a sampled kernel. Noise is
    Gaussian, drawn in ``dtype`` from streams separate from the stars'.
    """
    if isinstance(shape, (str, bytes)) or not isinstance(shape, (Sequence, np.ndarray)):
        raise InvalidInputError(f"shape: expected (ny, nx), got {shape!r}")
    if len(shape) != 2:
        raise InvalidInputError(f"shape: expected a 2-D shape (ny, nx), got {shape!r}")
    ny, nx = (_nonNegativeInt(n, "shape") for n in shape)
    if ny == 0 or nx == 0:
        raise InvalidInputError(f"shape: both dimensions must be positive, got {shape!r}")
    nStars = _nonNegativeInt(nStars, "nStars")
    if seed is not None:
        seed = _nonNegativeInt(seed, "seed")
    if isinstance(xy0, (str, bytes)) or not isinstance(xy0, (Sequence, np.ndarray)):
        raise InvalidInputError(f"xy0: expected two integers, got {xy0!r}")
    try:
        x0, y0 = (operator.index(v) for v in xy0)
    except (TypeError, ValueError):
        raise InvalidInputError(f"xy0: expected two integers, got {xy0!r}") from None
    xRange = (float(x0), float(x0 + nx - 1))
    templatePsf = _asPsfModel(templateSigma, "templateSigma", xRange)
    sciencePsf = _asPsfModel(scienceSigma, "scienceSigma", xRange)
    # Check the PSFs over the image now, so a bad model fails even without stars.
    cornersX = np.array([x0, x0 + nx - 1, x0, x0 + nx - 1, x0 + 0.5 * (nx - 1)], dtype=float)
    cornersY = np.array([y0, y0, y0 + ny - 1, y0 + ny - 1, y0 + 0.5 * (ny - 1)], dtype=float)
    templatePsf.getParameters(cornersX, cornersY)
    sciencePsf.getParameters(cornersX, cornersY)
    fluxScale = _positiveFloat(fluxScale, "fluxScale")
    if isinstance(background, (str, bytes)) or np.ndim(background) == 0:
        b0, bx, by = _finiteFloat(background, "background"), 0.0, 0.0
    else:
        b0, bx, by = _floatSequence(background, "background", 3)
    templateSky = _finiteFloat(templateSky, "templateSky")
    templateSkySigma = _positiveFloat(templateSkySigma, "templateSkySigma", allowZero=True)
    scienceSkySigma = _positiveFloat(scienceSkySigma, "scienceSkySigma", allowZero=True)
    if isinstance(gain, (bool, np.bool_)):
        raise InvalidInputError(f"gain: expected a number > 0, got {gain!r}")
    try:
        gain = float(gain)
    except (TypeError, ValueError):
        raise InvalidInputError(f"gain: expected a number > 0, got {gain!r}") from None
    if not gain > 0:
        raise InvalidInputError(f"gain: expected a number > 0 (inf allowed), got {gain!r}")
    fluxLow, fluxHigh = _floatSequence(fluxRange, "fluxRange", 2)
    if not 0 < fluxLow <= fluxHigh:
        raise InvalidInputError(f"fluxRange: expected 0 < low <= high, got {fluxRange!r}")
    fluxIndex = _positiveFloat(fluxIndex, "fluxIndex", allowZero=True)
    nTransients = _nonNegativeInt(nTransients, "nTransients")
    if np.ndim(transientFlux) == 0:
        tFlux = np.full(nTransients, _positiveFloat(transientFlux, "transientFlux"))
    else:
        tFlux = np.array(
            [_positiveFloat(f, "transientFlux") for f in np.asarray(transientFlux).ravel()]
        )
        if np.ndim(transientFlux) != 1 or len(tFlux) != nTransients:
            raise InvalidInputError(
                f"transientFlux: expected one number or {nTransients} (nTransients) of them, "
                f"got shape {np.shape(transientFlux)}"
            )
    nVariables = _nonNegativeInt(nVariables, "nVariables")
    nBright = nStars - nStars // 2
    if nVariables > nBright:
        raise InvalidInputError(
            f"nVariables: {nVariables} exceeds the {nBright} stars at least as bright as the "
            f"median of nStars={nStars}"
        )
    factorLow, factorHigh = _floatSequence(variableFactorRange, "variableFactorRange", 2)
    if not 1.0 <= factorLow <= factorHigh:
        raise InvalidInputError(
            f"variableFactorRange: expected 1 <= low <= high, got {variableFactorRange!r}"
        )
    if saturation is not None:
        saturation = _positiveFloat(saturation, "saturation")
    edge = _nonNegativeInt(edge, "edge")
    if 2 * edge >= min(ny, nx):
        raise InvalidInputError(f"edge: {edge} leaves no pixels inside an image of shape {shape}")
    try:
        outType = np.dtype(dtype)
    except TypeError:
        raise InvalidInputError(f"dtype: expected float32 or float64, got {dtype!r}") from None
    if outType not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise InvalidInputError(f"dtype: expected float32 or float64, got {outType}")

    # Random streams: independent, so the stars never depend on the noise.
    streams = np.random.SeedSequence(seed).spawn(5)
    starSeq, variableSeq, transientSeq, templateNoiseSeq, scienceNoiseSeq = streams

    # One row of three uniforms per star, so the first n stars do not depend on nStars.
    draws = np.random.default_rng(starSeq).random((nStars, 3))
    starX = x0 - 0.5 + nx * draws[:, 0]
    starY = y0 - 0.5 + ny * draws[:, 1]
    flux = _powerLawFluxes(draws[:, 2], fluxLow, fluxHigh, fluxIndex)

    variable = np.zeros(nStars, dtype=bool)
    factor = np.ones(nStars)
    if nVariables:
        rngVar = np.random.default_rng(variableSeq)
        bright = np.argsort(flux, kind="stable")[nStars // 2 :]
        chosen = rngVar.choice(bright, size=nVariables, replace=False)
        magnitude = np.exp(rngVar.uniform(math.log(factorLow), math.log(factorHigh), nVariables))
        sign = np.where(rngVar.random(nVariables) < 0.5, -1.0, 1.0)
        variable[chosen] = True
        factor[chosen] = magnitude**sign
    scienceFlux = fluxScale * flux * factor

    # Transients, clear of stars, of each other and of the border.
    sxx, syy, _ = sciencePsf.getCovariance(cornersX, cornersY)
    scienceHalf = _halfWidth(np.asarray(sxx), np.asarray(syy))
    margin = edge + scienceHalf
    if nTransients and (nx - 1 < 2 * margin or ny - 1 < 2 * margin):
        raise InvalidInputError(
            f"nTransients: image of shape {shape} is too small to hold transients "
            f"{margin} pixels from its border"
        )
    transientX, transientY = _placeTransients(
        np.random.default_rng(transientSeq),
        nTransients,
        (x0 + margin, x0 + nx - 1 - margin),
        (y0 + margin, y0 + ny - 1 - margin),
        starX,
        starY,
        starIsolation=float(scienceHalf),
        mutualIsolation=2.0 * scienceHalf,
    )

    templateSources = _renderSources((ny, nx), (x0, y0), starX, starY, flux, templatePsf)
    scienceSources = _renderSources((ny, nx), (x0, y0), starX, starY, fluxScale * flux, sciencePsf)
    changeX = np.concatenate([starX[variable], transientX])
    changeY = np.concatenate([starY[variable], transientY])
    changeFlux = np.concatenate([scienceFlux[variable] - fluxScale * flux[variable], tFlux])
    difference = _renderSources((ny, nx), (x0, y0), changeX, changeY, changeFlux, sciencePsf)
    scienceSources += difference

    yy = (y0 + np.arange(ny, dtype=float))[:, None]
    xx = (x0 + np.arange(nx, dtype=float))[None, :]
    scienceBackground = fluxScale * templateSky + b0 + bx * xx + by * yy

    def noisy(
        sources: np.ndarray, sky: Any, skySigma: float, seq: np.random.SeedSequence
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        variance = np.maximum(sources, 0.0)
        variance /= gain
        variance += skySigma * skySigma
        model = sources + sky
        noise = np.random.default_rng(seq).standard_normal((ny, nx), dtype=outType.type)
        image = (model + noise * np.sqrt(variance)).astype(outType)
        return image, variance.astype(outType), model.astype(outType)

    templateImage, templateVariance, templateModel = noisy(
        templateSources, templateSky, templateSkySigma, templateNoiseSeq
    )
    del templateSources
    scienceImage, scienceVariance, scienceModel = noisy(
        scienceSources, scienceBackground, scienceSkySigma, scienceNoiseSeq
    )
    del scienceSources, scienceBackground

    masks = []
    for image in (templateImage, scienceImage):
        mask = np.zeros((ny, nx), dtype=np.int32)
        if saturation is not None:
            saturated = image >= saturation
            mask[saturated] |= Mask.getPlaneBitMask("SAT")
            image[saturated] = saturation
        if edge:
            border = np.ones((ny, nx), dtype=bool)
            border[edge : ny - edge, edge : nx - edge] = False
            mask[border] |= Mask.getPlaneBitMask(["EDGE", "NO_DATA"])
            image[border] = 0.0
        masks.append(mask)

    stars = np.zeros(
        nStars,
        dtype=[
            ("x", "f8"),
            ("y", "f8"),
            ("flux", "f8"),
            ("scienceFlux", "f8"),
            ("variable", "?"),
            ("nearestDistance", "f8"),
        ],
    )
    stars["x"], stars["y"], stars["flux"] = starX, starY, flux
    stars["scienceFlux"], stars["variable"] = scienceFlux, variable
    stars["nearestDistance"] = _nearestDistance(starX, starY)
    transients = np.zeros(nTransients, dtype=[("x", "f8"), ("y", "f8"), ("flux", "f8")])
    transients["x"], transients["y"], transients["flux"] = transientX, transientY, tFlux

    truth = SimulationTruth(
        fluxScale=fluxScale,
        backgroundCoefficients=(b0, bx, by),
        templateSky=templateSky,
        templatePsf=templatePsf,
        sciencePsf=sciencePsf,
        templateModel=templateModel,
        scienceModel=scienceModel,
        differenceModel=difference.astype(outType),
        bbox=(x0, y0, nx, ny),
    )
    return Struct(
        template=MaskedImage(templateImage, masks[0], templateVariance, xy0=(x0, y0)),
        science=MaskedImage(scienceImage, masks[1], scienceVariance, xy0=(x0, y0)),
        stars=stars,
        transients=transients,
        truth=truth,
    )
