# SPDX-License-Identifier: BSD-3-Clause
"""Pairs whose PSFs are not Gaussians: `CompositePsfModel` (a sum of elliptical Gaussians,
rotated as a whole, e.g. a core with six diffraction spikes) and `simulateCompositePair`.

Such pairs are what cross-convolution (``mode="crossConvolve"``, docs/algorithm.md §7.11) is
for: two PSFs elongated in different directions, or two spiky space-telescope PSFs at
different roll angles, where neither image's PSF is a blurred version of the other's. The
renderer is independent of psfmatch's convolution code, as `simulatePair`'s: every component of
every star is an analytic Gaussian integrated over the pixels of a stamp (``_psfmodel``), so a
PSF image from `CompositePsfModel.computeKernelImage` is exactly what a star centred on a pixel
looks like in the simulated image.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from .._checks import _finiteFloat, _nonNegativeInt, _positiveFloat
from .._psfmodel import _STAMP_NSIGMA, _renderInto
from .._psfutil import FWHM_PER_SIGMA
from ..errors import InvalidInputError
from ..image import MaskedImage
from ..task import Struct
from .sources import _nearestDistance, _placeTransients, _powerLawFluxes

__all__ = ["CompositePsfModel", "simulateCompositePair"]


class CompositePsfModel:
    """A PSF made of concentric elliptical Gaussians, rotated together.

    Parameters
    ----------
    components : sequence of (`float`, `float`, `float`, `float`)
        ``(weight, sigmaX, sigmaY, theta)`` of each Gaussian: its share of the flux (> 0; the
        weights are normalised to sum to 1), its sigmas (pixels, > 0) along its principal
        axes and the angle (radians, counter-clockwise from ``+x``) of the ``sigmaX`` axis.
    rotation : `float`, optional
        An angle (radians, counter-clockwise) added to every component's: the roll of the
        telescope.

    Raises
    ------
    InvalidInputError
        An empty list, or a component that is not four finite numbers with positive weight
        and sigmas.

    Notes
    -----
    The model is the same everywhere in the image. Its images are pixel-integrated (the
    rotated components by 3 × 3 sub-pixel sampling, exact in the second moments; see
    ``_psfmodel._rotatedStamps``).
    """

    def __init__(
        self, components: Sequence[tuple[float, float, float, float]], rotation: float = 0.0
    ) -> None:
        if isinstance(components, str | bytes) or len(components) == 0:
            raise InvalidInputError(
                f"components: expected (weight, sigmaX, sigmaY, theta) tuples, got {components!r}"
            )
        parsed = []
        for i, component in enumerate(components):
            if len(component) != 4:
                raise InvalidInputError(
                    f"components[{i}]: expected (weight, sigmaX, sigmaY, theta), got {component!r}"
                )
            weight, sx, sy, theta = component
            parsed.append(
                (
                    _positiveFloat(weight, f"components[{i}] weight"),
                    _positiveFloat(sx, f"components[{i}] sigmaX"),
                    _positiveFloat(sy, f"components[{i}] sigmaY"),
                    _finiteFloat(theta, f"components[{i}] theta"),
                )
            )
        total = sum(c[0] for c in parsed)
        self.rotation = _finiteFloat(rotation, "rotation")
        self.components = tuple((w / total, sx, sy, th) for w, sx, sy, th in parsed)

    @classmethod
    def elongated(cls, sigmaMajor: float, sigmaMinor: float, rotation: float = 0.0) -> Any:
        """One elliptical Gaussian whose major axis lies at ``rotation`` from ``+x``."""
        return cls([(1.0, sigmaMajor, sigmaMinor, 0.0)], rotation)

    @classmethod
    def spiked(
        cls,
        coreSigma: float,
        *,
        nSpikes: int = 6,
        spikeFraction: float = 0.25,
        spikeLength: float = 4.0,
        spikeWidth: float = 0.5,
        rotation: float = 0.0,
    ) -> Any:
        """A round core with ``nSpikes`` diffraction spikes (a JWST-like hexagonal pupil has 6).

        Each pair of opposite spikes is one thin Gaussian through the centre (sigma
        ``spikeLength`` along it, ``spikeWidth`` across), the pairs evenly spaced in angle, the
        first along ``rotation``; together they hold ``spikeFraction`` of the flux.
        """
        n = _nonNegativeInt(nSpikes, "nSpikes")
        if n < 2 or n % 2:
            raise InvalidInputError(f"nSpikes: expected an even number >= 2, got {nSpikes!r}")
        fraction = _positiveFloat(spikeFraction, "spikeFraction")
        if fraction >= 1.0:
            raise InvalidInputError(f"spikeFraction: expected a number in (0, 1), got {fraction}")
        core = _positiveFloat(coreSigma, "coreSigma")
        pairs = n // 2
        components = [(1.0 - fraction, core, core, 0.0)]
        components += [
            (fraction / pairs, spikeLength, spikeWidth, math.pi * k / pairs) for k in range(pairs)
        ]
        return cls(components, rotation)

    def rotated(self, angle: float) -> CompositePsfModel:
        """The same PSF rolled by a further ``angle`` (radians, counter-clockwise)."""
        return CompositePsfModel(self.components, self.rotation + _finiteFloat(angle, "angle"))

    def _covariances(self) -> list[tuple[float, float, float, float]]:
        """``(weight, Cxx, Cyy, Cxy)`` of each component (pixels², continuous profile)."""
        out = []
        for weight, sx, sy, theta in self.components:
            c, s = math.cos(theta + self.rotation), math.sin(theta + self.rotation)
            vx, vy = sx * sx, sy * sy
            out.append(
                (weight, vx * c * c + vy * s * s, vx * s * s + vy * c * c, (vx - vy) * s * c)
            )
        return out

    def getCovariance(self, x: Any = 0.0, y: Any = 0.0) -> tuple[float, float, float]:
        """The second moments ``(Cxx, Cyy, Cxy)`` of the continuous profile (pixels²)."""
        cov = self._covariances()
        return (
            sum(w * cxx for w, cxx, _, _ in cov),
            sum(w * cyy for w, _, cyy, _ in cov),
            sum(w * cxy for w, _, _, cxy in cov),
        )

    def getFwhm(self, x: Any = 0.0, y: Any = 0.0) -> float:
        """``2 sqrt(2 ln 2)`` times the determinant radius of the second moments (pixels)."""
        cxx, cyy, cxy = self.getCovariance()
        return float(FWHM_PER_SIGMA * (cxx * cyy - cxy * cxy) ** 0.25)

    def halfWidth(self) -> int:
        """Stamp half-width (pixels) reaching 6 sigma of the widest component along x or y."""
        cov = self._covariances()
        widest = max(max(cxx, cyy) for _, cxx, cyy, _ in cov)
        return max(1, math.ceil(_STAMP_NSIGMA * math.sqrt(widest)))

    def render(
        self,
        image: np.ndarray,
        x: np.ndarray,
        y: np.ndarray,
        flux: np.ndarray,
        xy0: tuple[int, int] = (0, 0),
    ) -> None:
        """Add point sources at parent ``(x, y)`` with ``flux`` into ``image`` (float64)."""
        if len(x) == 0:
            return
        xl = np.asarray(x, dtype=float) - xy0[0]
        yl = np.asarray(y, dtype=float) - xy0[1]
        half = self.halfWidth()
        ones = np.ones(len(xl))
        for weight, cxx, cyy, cxy in self._covariances():
            _renderInto(
                image,
                xl,
                yl,
                np.asarray(flux, dtype=float) * weight,
                cxx * ones,
                cyy * ones,
                cxy * ones,
                half=half,
            )

    def computeKernelImage(self, x: float = 0.0, y: float = 0.0, *, size: int | None = None) -> Any:
        """The unit-sum image of a star centred on a pixel (psfmatch's PSF protocol).

        Parameters
        ----------
        x, y : `float`, optional
            Ignored: the model is the same everywhere.
        size : `int`, optional
            Odd width of the square image; by default ``2 · halfWidth() + 1``.
        """
        half = self.halfWidth() if size is None else _nonNegativeInt(size, "size") // 2
        if size is not None and size % 2 == 0:
            raise InvalidInputError(f"size: expected an odd integer, got {size!r}")
        image = np.zeros((2 * half + 1, 2 * half + 1))
        self.render(image, np.array([float(half)]), np.array([float(half)]), np.ones(1))
        return image / image.sum()

    def __repr__(self) -> str:
        return f"CompositePsfModel({list(self.components)!r}, rotation={self.rotation!r})"


def simulateCompositePair(
    shape: tuple[int, int] = (1024, 1024),
    *,
    templatePsf: CompositePsfModel,
    sciencePsf: CompositePsfModel,
    nStars: int = 400,
    seed: int | None = 0,
    fluxScale: float = 1.25,
    background: tuple[float, float, float] = (20.0, 0.005, -0.003),
    templateSky: float = 100.0,
    templateSkySigma: float = 4.0,
    scienceSkySigma: float = 5.0,
    gain: float = 1.0,
    fluxRange: tuple[float, float] = (2e3, 3e5),
    fluxIndex: float = 0.75,
    nTransients: int = 10,
    transientFlux: float = 5e3,
    minSeparation: float = 0.0,
    dtype: Any = np.float32,
) -> Struct:
    """A template/science pair rendered through two `CompositePsfModel` PSFs.

    The science image is ``fluxScale`` × the template's stars through ``sciencePsf``, plus
    ``nTransients`` point sources of ``transientFlux`` (science units; at least a PSF
    half-width, `CompositePsfModel.halfWidth`, from every star and three from the border),
    plus the sky
    ``fluxScale · templateSky + b0 + bx·x + by·y``; the template is the stars through
    ``templatePsf`` plus ``templateSky``. Each image gets Gaussian noise of variance
    ``skySigma² + sources / gain``, which is its variance plane.

    Parameters
    ----------
    shape : (`int`, `int`), optional
        ``(ny, nx)``; the origin is (0, 0).
    templatePsf, sciencePsf : `CompositePsfModel`
        The two PSFs.
    nStars, seed, fluxScale, templateSky, templateSkySigma, scienceSkySigma, gain, fluxRange, \
fluxIndex, nTransients, transientFlux, dtype : optional
        As for `simulatePair`.
    background : (`float`, `float`, `float`), optional
        ``(b0, bx, by)`` of the science image's extra background.
    minSeparation : `float`, optional
        Stars closer than this to an earlier one are dropped (0: none is).

    Returns
    -------
    result : `psfmatch.task.Struct`
        ``template``, ``science`` (`MaskedImage`), ``stars`` (structured array: ``x``, ``y``,
        ``flux`` in template units, ``nearestDistance``), ``transients`` (``x``, ``y``,
        ``flux`` in science units) and ``truth`` (a `Struct`: ``fluxScale``, ``templatePsf``,
        ``sciencePsf``, ``background`` and the noise-free ``differenceModel``, the transients
        through the science PSF).

    Raises
    ------
    InvalidInputError
        An argument out of range, or transients that cannot be placed away from the stars.
    """
    for name, psf in (("templatePsf", templatePsf), ("sciencePsf", sciencePsf)):
        if not isinstance(psf, CompositePsfModel):
            raise InvalidInputError(
                f"{name}: expected a CompositePsfModel, got {type(psf).__name__}"
            )
    if len(shape) != 2:
        raise InvalidInputError(f"shape: expected (ny, nx), got {shape!r}")
    ny, nx = (_nonNegativeInt(n, "shape") for n in shape)
    nStars = _nonNegativeInt(nStars, "nStars")
    nTransients = _nonNegativeInt(nTransients, "nTransients")
    gain = (
        float(gain)
        if isinstance(gain, float | int) and gain == math.inf
        else _positiveFloat(gain, "gain")
    )
    low, high = (_positiveFloat(v, "fluxRange") for v in fluxRange)
    if high < low:
        raise InvalidInputError(f"fluxRange: expected low <= high, got {fluxRange!r}")
    fluxScale = _positiveFloat(fluxScale, "fluxScale")
    b0, bx, by = (_finiteFloat(v, "background") for v in background)
    streams = np.random.SeedSequence(seed).spawn(4)

    draws = np.random.default_rng(streams[0]).random((nStars, 3))
    starX = -0.5 + nx * draws[:, 0]
    starY = -0.5 + ny * draws[:, 1]
    flux = _powerLawFluxes(draws[:, 2], low, high, _positiveFloat(fluxIndex, "fluxIndex"))
    if minSeparation > 0 and nStars > 1:
        keep = np.ones(nStars, dtype=bool)
        for k in range(1, nStars):
            d2 = (starX[:k] - starX[k]) ** 2 + (starY[:k] - starY[k]) ** 2
            keep[k] = not np.any(keep[:k] & (d2 < minSeparation**2))
        starX, starY, flux = starX[keep], starY[keep], flux[keep]
    reach = float(max(templatePsf.halfWidth(), sciencePsf.halfWidth()))
    # Three PSF half-widths from the border: a cross-convolved D loses one, and its
    # decorrelation a few pixels more; a PSF fit needs the third.
    margin = 3.0 * reach
    transientX, transientY = _placeTransients(
        np.random.default_rng(streams[1]),
        nTransients,
        (margin, nx - 1 - margin),
        (margin, ny - 1 - margin),
        starX,
        starY,
        starIsolation=reach,
        mutualIsolation=2.0 * reach,
    )
    transientFluxes = np.full(nTransients, _positiveFloat(transientFlux, "transientFlux"))

    templateSources = np.zeros((ny, nx))
    templatePsf.render(templateSources, starX, starY, flux)
    scienceSources = np.zeros((ny, nx))
    sciencePsf.render(scienceSources, starX, starY, fluxScale * flux)
    difference = np.zeros((ny, nx))
    sciencePsf.render(difference, transientX, transientY, transientFluxes)
    scienceSources += difference

    yy = np.arange(ny, dtype=float)[:, None]
    xx = np.arange(nx, dtype=float)[None, :]
    scienceSky = fluxScale * templateSky + b0 + bx * xx + by * yy
    dtype = np.dtype(dtype)

    def observe(sources: np.ndarray, sky: Any, sigma: float, seq: Any) -> MaskedImage:
        variance = np.maximum(sources, 0.0) / gain + sigma * sigma
        noise = np.random.default_rng(seq).standard_normal((ny, nx))
        image = sources + sky + noise * np.sqrt(variance)
        return MaskedImage(
            image.astype(dtype),
            np.zeros((ny, nx), dtype=np.int32),
            variance.astype(dtype),
        )

    template = observe(templateSources, templateSky, float(templateSkySigma), streams[2])
    science = observe(scienceSources, scienceSky, float(scienceSkySigma), streams[3])

    stars = np.zeros(
        len(starX), dtype=[("x", "f8"), ("y", "f8"), ("flux", "f8"), ("nearestDistance", "f8")]
    )
    stars["x"], stars["y"], stars["flux"] = starX, starY, flux
    stars["nearestDistance"] = _nearestDistance(starX, starY)
    transients = np.zeros(nTransients, dtype=[("x", "f8"), ("y", "f8"), ("flux", "f8")])
    transients["x"], transients["y"], transients["flux"] = transientX, transientY, transientFluxes
    truth = Struct(
        fluxScale=fluxScale,
        templatePsf=templatePsf,
        sciencePsf=sciencePsf,
        background=(b0, bx, by),
        differenceModel=difference.astype(dtype),
    )
    return Struct(
        template=template, science=science, stars=stars, transients=transients, truth=truth
    )
