# SPDX-License-Identifier: BSD-3-Clause
"""Gaussian PSF profiles integrated over pixels: the maths `psfmatch.psf` and the simulator share.

- `_erf`, the error function whose differences integrate a Gaussian over pixel edges;
- `GaussianPsfModel`, a spatially varying elliptical Gaussian PSF (public as
  `psfmatch.simulate.GaussianPsfModel`);
- `_renderSources` and `_renderInto`, which add pixel-integrated Gaussians into an image:
  ``erf`` differences per axis for round and axis-aligned PSFs, sub-pixel sampling for rotated
  ones, in stamps reaching `_STAMP_NSIGMA` sigma.

Conventions are the package's: ``x`` is the column, ``y`` the row, arrays are ``[y, x]``,
positions are in parent coordinates with pixel centres at integers.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
from scipy.special import erf

from ._checks import _finiteFloat, _nonNegativeInt, _positiveFloat
from ._psfutil import FWHM_PER_SIGMA
from .errors import InvalidInputError

# Stamps reach this many sigma from a star's centre: the flux outside a 6-sigma square is
# 2 Phi(-6) ~ 2e-9 of the total per axis, far below any noise or tolerance in use.
_STAMP_NSIGMA = 6.0
# Sub-pixel samples per axis for rotated elliptical PSFs (see `_rotatedStamps`).
_NSUB = 3
# Stars per vectorised rendering chunk (bounds temporary memory to a few tens of MB).
_CHUNK_SEPARABLE = 1024
_CHUNK_ROTATED = 128


def _erf(values: np.ndarray) -> np.ndarray:
    """The error function, elementwise, to double precision (`scipy.special.erf`)."""
    return np.asarray(erf(values), dtype=np.float64)


def _maybeScalar(array: np.ndarray) -> Any:
    """A 0-d array as a Python float; any other array unchanged."""
    return float(array) if array.ndim == 0 else array


class GaussianPsfModel:
    """A spatially varying elliptical Gaussian point-spread function.

    Parameters
    ----------
    sigma : `float` or callable
        Either the sigma (pixels) of a constant round Gaussian, or a function of parent
        coordinates ``f(x, y)`` called with numpy arrays (``x`` the column, ``y`` the row) that
        returns either one array of round sigmas or a tuple ``(sigmaX, sigmaY, theta)``:
        the sigmas along the Gaussian's principal axes and the angle (radians, counter-clockwise)
        of the ``sigmaX`` axis from the ``+x`` axis. Results broadcast against ``x``.

    Raises
    ------
    InvalidInputError
        If ``sigma`` is neither a positive finite number nor callable. A callable's results
        are checked when it is evaluated (`getParameters`).

    See Also
    --------
    GaussianPsfModel.elliptical, GaussianPsfModel.linearInX

    Notes
    -----
    The PSF at ``(x, y)`` is the unit-integral density
    ``exp(-r^T C^-1 r / 2) / (2 pi sqrt(det C))`` with ``C = R diag(sigmaX², sigmaY²) R^T``;
    rendered images integrate it over pixels (`computeImage`).
    """

    def __init__(self, sigma: float | Callable[[np.ndarray, np.ndarray], Any]) -> None:
        self._function: Callable[[np.ndarray, np.ndarray], Any] | None
        self._constant: tuple[float, float, float] | None
        if callable(sigma):
            self._function = sigma
            self._constant = None
        else:
            s = _positiveFloat(sigma, "sigma")
            self._function = None
            self._constant = (s, s, 0.0)

    @classmethod
    def elliptical(cls, sigmaX: float, sigmaY: float, theta: float = 0.0) -> GaussianPsfModel:
        """A constant elliptical Gaussian.

        Parameters
        ----------
        sigmaX, sigmaY : `float`
            Sigmas (pixels) along the principal axes, > 0.
        theta : `float`, optional
            Angle (radians, counter-clockwise) of the ``sigmaX`` axis from ``+x``.

        Returns
        -------
        psf : `GaussianPsfModel`

        Raises
        ------
        InvalidInputError
            If a sigma is not a positive finite number or ``theta`` is not finite.
        """
        sx = _positiveFloat(sigmaX, "sigmaX")
        sy = _positiveFloat(sigmaY, "sigmaY")
        th = _finiteFloat(theta, "theta")
        model = cls(1.0)
        model._constant = (sx, sy, th)
        return model

    @classmethod
    def linearInX(
        cls, sigmaStart: float, sigmaEnd: float, *, xStart: float, xEnd: float
    ) -> GaussianPsfModel:
        """A round Gaussian whose sigma varies linearly with ``x``.

        Parameters
        ----------
        sigmaStart, sigmaEnd : `float`
            Sigma (pixels, > 0) at ``x = xStart`` and at ``x = xEnd``; in between and beyond
            it is interpolated and extrapolated linearly (an extrapolated sigma <= 0 is an
            error when evaluated).
        xStart, xEnd : `float`
            The two columns (parent coordinates). If equal, the sigma is ``sigmaStart``.

        Returns
        -------
        psf : `GaussianPsfModel`

        Raises
        ------
        InvalidInputError
            If an argument is not a finite number or a sigma is not positive.
        """
        s0 = _positiveFloat(sigmaStart, "sigmaStart")
        s1 = _positiveFloat(sigmaEnd, "sigmaEnd")
        xa = _finiteFloat(xStart, "xStart")
        xb = _finiteFloat(xEnd, "xEnd")
        slope = 0.0 if xb == xa else (s1 - s0) / (xb - xa)

        def sigmaOf(x: np.ndarray, y: np.ndarray) -> np.ndarray:
            return s0 + slope * (x - xa)

        return cls(sigmaOf)

    def getParameters(self, x: Any, y: Any) -> tuple[Any, Any, Any]:
        """Return the Gaussian's ``(sigmaX, sigmaY, theta)`` at positions.

        Parameters
        ----------
        x, y : `float` or array_like
            Parent coordinates; they are broadcast together.

        Returns
        -------
        sigmaX, sigmaY, theta : `float` or `numpy.ndarray`
            Floats for scalar positions, arrays of the broadcast shape otherwise.

        Raises
        ------
        InvalidInputError
            If the model gives a sigma that is not positive and finite, or a non-finite angle.
        """
        xa, ya = np.broadcast_arrays(np.asarray(x, dtype=float), np.asarray(y, dtype=float))
        if self._constant is not None:
            sx, sy, th = (np.full(xa.shape, v) for v in self._constant)
        else:
            assert self._function is not None
            out = self._function(xa, ya)
            if isinstance(out, tuple):
                if len(out) != 3:
                    raise InvalidInputError(
                        "GaussianPsfModel: the PSF function must return sigma or "
                        f"(sigmaX, sigmaY, theta); got a tuple of {len(out)}"
                    )
                sx, sy, th = (np.broadcast_to(np.asarray(v, dtype=float), xa.shape) for v in out)
                names = ("sigmaX", "sigmaY")
            else:
                sx = np.broadcast_to(np.asarray(out, dtype=float), xa.shape)
                sy = sx
                th = np.zeros(xa.shape)
                names = ("sigma", "sigma")
            for name, values in zip(names, (sx, sy), strict=True):
                good = np.isfinite(values) & (values > 0)
                if not np.all(good):
                    raise InvalidInputError(
                        f"GaussianPsfModel: {name} must be positive and finite; the PSF "
                        f"function returned {float(values[~good].flat[0])!r}"
                    )
            if not np.all(np.isfinite(th)):
                raise InvalidInputError("GaussianPsfModel: the PSF function returned a NaN angle")
        return _maybeScalar(sx), _maybeScalar(sy), _maybeScalar(th)

    def getCovariance(self, x: Any, y: Any) -> tuple[Any, Any, Any]:
        """Return the PSF's second moments ``(Cxx, Cyy, Cxy)`` (pixels²) at positions.

        Parameters
        ----------
        x, y : `float` or array_like
            Parent coordinates; they are broadcast together.

        Returns
        -------
        cxx, cyy, cxy : `float` or `numpy.ndarray`
            The covariance matrix ``[[Cxx, Cxy], [Cxy, Cyy]]`` of the continuous Gaussian
            (pixel integration adds 1/12 to ``Cxx`` and ``Cyy`` of a rendered image).
        """
        sx, sy, th = (np.asarray(v) for v in self.getParameters(x, y))
        c, s = np.cos(th), np.sin(th)
        vx, vy = sx * sx, sy * sy
        cxx = vx * c * c + vy * s * s
        cyy = vx * s * s + vy * c * c
        cxy = (vx - vy) * s * c
        return _maybeScalar(cxx), _maybeScalar(cyy), _maybeScalar(cxy)

    def getSigma(self, x: Any, y: Any) -> Any:
        """Return the determinant radius ``sqrt(sigmaX sigmaY)`` (pixels) at positions.

        This is the sigma of a round PSF.
        """
        sx, sy, _ = self.getParameters(x, y)
        return _maybeScalar(np.sqrt(np.asarray(sx) * np.asarray(sy)))

    def getFwhm(self, x: Any, y: Any) -> Any:
        """Return the FWHM (pixels), ``2 sqrt(2 ln 2)`` times `getSigma`, at positions.

        For an elliptical PSF this is the geometric mean of the FWHMs along its axes.
        """
        return _maybeScalar(FWHM_PER_SIGMA * np.asarray(self.getSigma(x, y)))

    def computeImage(self, x: float, y: float, *, size: int | None = None) -> np.ndarray:
        """Render the unit-flux PSF at a position, integrated over pixels.

        Parameters
        ----------
        x, y : `float`
            Parent coordinates of the PSF's centre.
        size : `int`, optional
            Odd width of the square stamp; by default ``2 ceil(6 sigma_max) + 1``.

        Returns
        -------
        image : `numpy.ndarray`, shape (size, size), float64
            Centred on the pixel nearest ``(x, y)``: element ``[size // 2, size // 2]`` is the
            pixel ``(round(x), round(y))``. Sums to 1 less the flux outside the stamp.

        Raises
        ------
        InvalidInputError
            If ``size`` is not a positive odd integer, or the model is invalid at ``(x, y)``.
        """
        xf = _finiteFloat(x, "x")
        yf = _finiteFloat(y, "y")
        cxx, cyy, cxy = (np.atleast_1d(np.asarray(v)) for v in self.getCovariance(xf, yf))
        if size is None:
            half = _halfWidth(cxx, cyy)
        else:
            n = _nonNegativeInt(size, "size")
            if n % 2 == 0:
                raise InvalidInputError(f"size: expected a positive odd integer, got {size!r}")
            half = n // 2
        image = np.zeros((2 * half + 1, 2 * half + 1))
        # Local coordinates in which the centre pixel of the stamp is at (half, half).
        xl = np.array([xf - round(xf) + half])
        yl = np.array([yf - round(yf) + half])
        _renderInto(image, xl, yl, np.ones(1), cxx, cyy, cxy, half=half)
        return image

    def __repr__(self) -> str:
        if self._constant is not None:
            sx, sy, th = self._constant
            if sx == sy:
                return f"GaussianPsfModel({sx!r})"
            return f"GaussianPsfModel.elliptical({sx!r}, {sy!r}, {th!r})"
        return f"GaussianPsfModel({self._function!r})"


def _halfWidth(cxx: np.ndarray, cyy: np.ndarray) -> int:
    """Stamp half-width reaching `_STAMP_NSIGMA` projected sigmas along both axes."""
    if cxx.size == 0:
        return 1
    sigmaMax = math.sqrt(max(float(np.max(cxx)), float(np.max(cyy))))
    return max(1, math.ceil(_STAMP_NSIGMA * sigmaMax))


def _separableStamps(
    xl: np.ndarray,
    yl: np.ndarray,
    sx: np.ndarray,
    sy: np.ndarray,
    ix: np.ndarray,
    iy: np.ndarray,
    half: int,
) -> np.ndarray:
    """Unit-flux stamps of axis-aligned Gaussians, exactly integrated over each pixel.

    Stamp ``k`` covers pixels ``iy[k]-half .. iy[k]+half`` by ``ix[k]-half .. ix[k]+half``; the
    pixel-integrated Gaussian factorises into the product of per-axis ``erf`` differences.
    """
    edges = np.arange(-half - 0.5, half + 1.0)
    ex = (ix[:, None] + edges[None, :] - xl[:, None]) / (math.sqrt(2.0) * sx[:, None])
    ey = (iy[:, None] + edges[None, :] - yl[:, None]) / (math.sqrt(2.0) * sy[:, None])
    px = 0.5 * np.diff(_erf(ex), axis=1)
    py = 0.5 * np.diff(_erf(ey), axis=1)
    return py[:, :, None] * px[:, None, :]


def _rotatedStamps(
    xl: np.ndarray,
    yl: np.ndarray,
    cxx: np.ndarray,
    cyy: np.ndarray,
    cxy: np.ndarray,
    ix: np.ndarray,
    iy: np.ndarray,
    half: int,
) -> np.ndarray:
    """Unit-flux stamps of rotated Gaussians, integrated over pixels by sub-pixel sampling.

    Each pixel is the mean of ``n × n`` point samples at the centres of its sub-pixels (``n`` =
    `_NSUB`), i.e. the Gaussian convolved with a comb of ``n`` points, whose variance is
    ``1/12 - 1/(12 n²)``, instead of the unit box, whose variance is ``1/12``. Widening the
    Gaussian by ``1/(12 n²)`` on the diagonal of its covariance makes the second moments exact;
    the remaining difference (in the fourth cumulant, ``1/(120 n⁴)``) changes pixel values by
    about 2e-5 of the peak at sigma = 1 and less for wider PSFs (~3e-6 at sigma = 2).
    """
    n = _NSUB
    widen = 1.0 / (12.0 * n * n)
    axx, ayy = cxx + widen, cyy + widen
    det = axx * ayy - cxy * cxy
    # Inverse covariance, and the normalisation including the mean over n² samples.
    pxx, pyy, pxy = ayy / det, axx / det, -cxy / det
    norm = 1.0 / (2.0 * math.pi * np.sqrt(det) * n * n)
    sub = (np.arange(n) - 0.5 * (n - 1)) / n
    offsets = (np.arange(-half, half + 1)[:, None] + sub[None, :]).ravel()
    u = ix[:, None] + offsets[None, :] - xl[:, None]
    v = iy[:, None] + offsets[None, :] - yl[:, None]
    q = (
        pxx[:, None, None] * (u * u)[:, None, :]
        + 2.0 * pxy[:, None, None] * v[:, :, None] * u[:, None, :]
        + pyy[:, None, None] * (v * v)[:, :, None]
    )
    dense = np.exp(-0.5 * q) * norm[:, None, None]
    width = 2 * half + 1
    return np.asarray(dense.reshape(len(xl), width, n, width, n).sum(axis=(2, 4)))


def _addStamps(image: np.ndarray, stamps: np.ndarray, ix: np.ndarray, iy: np.ndarray) -> None:
    """Add ``stamps[k]`` centred on pixel ``(ix[k], iy[k])`` into ``image``, clipped to it."""
    ny, nx = image.shape
    half = stamps.shape[1] // 2
    xLo, yLo = ix - half, iy - half
    xa, ya = np.maximum(xLo, 0), np.maximum(yLo, 0)
    xb = np.minimum(xLo + stamps.shape[2], nx)
    yb = np.minimum(yLo + stamps.shape[1], ny)
    rows = zip(
        ya.tolist(),
        yb.tolist(),
        xa.tolist(),
        xb.tolist(),
        (ya - yLo).tolist(),
        (yb - yLo).tolist(),
        (xa - xLo).tolist(),
        (xb - xLo).tolist(),
        strict=True,
    )
    # The slices are computed vectorised above; the loop only adds, a few µs per star.
    for k, (y0, y1, x0, x1, sy0, sy1, sx0, sx1) in enumerate(rows):
        if y1 > y0 and x1 > x0:
            image[y0:y1, x0:x1] += stamps[k, sy0:sy1, sx0:sx1]


def _renderInto(
    image: np.ndarray,
    xl: np.ndarray,
    yl: np.ndarray,
    flux: np.ndarray,
    cxx: np.ndarray,
    cyy: np.ndarray,
    cxy: np.ndarray,
    *,
    half: int | None = None,
) -> None:
    """Add pixel-integrated Gaussians of the given fluxes into ``image`` (float64).

    ``xl, yl`` are array-index coordinates (parent minus ``xy0``); ``cxx, cyy, cxy`` each
    star's covariance. Stars are rendered in chunks into stamps of one common half-width.
    """
    if len(xl) == 0:
        return
    if half is None:
        half = _halfWidth(cxx, cyy)
    ix = np.rint(xl).astype(np.int64)
    iy = np.rint(yl).astype(np.int64)
    # Axis-aligned (including round) PSFs factorise exactly; the threshold only absorbs the
    # rounding of cos(pi/2) in the covariance of a PSF rotated by a right angle.
    separable = np.abs(cxy) <= 1e-12 * (cxx + cyy)
    for isSeparable, chunk in ((True, _CHUNK_SEPARABLE), (False, _CHUNK_ROTATED)):
        indices = np.flatnonzero(separable == isSeparable)
        for start in range(0, len(indices), chunk):
            k = indices[start : start + chunk]
            if isSeparable:
                stamps = _separableStamps(
                    xl[k], yl[k], np.sqrt(cxx[k]), np.sqrt(cyy[k]), ix[k], iy[k], half
                )
            else:
                stamps = _rotatedStamps(xl[k], yl[k], cxx[k], cyy[k], cxy[k], ix[k], iy[k], half)
            stamps *= flux[k][:, None, None]
            _addStamps(image, stamps, ix[k], iy[k])


def _renderSources(
    shape: tuple[int, int],
    xy0: tuple[int, int],
    x: np.ndarray,
    y: np.ndarray,
    flux: np.ndarray,
    psf: GaussianPsfModel,
) -> np.ndarray:
    """A float64 image of point sources at parent positions ``(x, y)`` seen through ``psf``."""
    image = np.zeros(shape)
    if len(x):
        cxx, cyy, cxy = (np.asarray(v) for v in psf.getCovariance(x, y))
        _renderInto(image, x - xy0[0], y - xy0[1], flux, cxx, cyy, cxy)
    return image
