# SPDX-License-Identifier: BSD-3-Clause
"""Point-spread-function models: what `ModelPsfMatchTask` matches (docs/decisions.md D2).

psfmatch has no image library of its own PSFs, so the few it needs live here, with the method
names of the reference's PSF classes:

- `GaussianPsf` — a round Gaussian;
- `DoubleGaussianPsf` — the sum of two concentric round Gaussians (core and wings);
- `ImagePsf` — a fixed image, given as an array;
- `VaryingPsf` — a spatially varying PSF from a function of position.

Every model renders a *kernel image*: a float64 array of odd width and height that sums to 1,
with the PSF centred on its middle pixel ``[height // 2, width // 2]`` (no sub-pixel shift).
The Gaussian models integrate the profile over each pixel (``erf`` differences), so their
images are what a detector would record of a star centred on a pixel; the pixel integration
adds 1/12 pixel² to each image second moment.

Shapes (`Psf.computeShape`) are second moments in pixels², as a `Quadrupole`. The Gaussian
models give those of the continuous profile (σ² for `GaussianPsf`); `ImagePsf` and image-valued
`VaryingPsf` measure the unweighted moments of the image as sampled, so they include the pixel.
The FWHM is ``2 sqrt(2 ln 2)`` times the determinant radius ``(Ixx Iyy − Ixy²)^(1/4)``, the
reference's convention; it is the true FWHM for a Gaussian.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import _core
from ._psfmodel import _erf
from .basis import FWHM_PER_SIGMA
from .errors import InvalidInputError, PsfComputeShapeError

__all__ = [
    "DoubleGaussianPsf",
    "GaussianPsf",
    "ImagePsf",
    "Psf",
    "Quadrupole",
    "VaryingPsf",
]


@dataclass(frozen=True)
class Quadrupole:
    """Second moments of a PSF, in pixels².

    Parameters
    ----------
    ixx, iyy, ixy : `float`
        ⟨(x − x̄)²⟩, ⟨(y − ȳ)²⟩ and ⟨(x − x̄)(y − ȳ)⟩ of the profile.
    """

    ixx: float
    iyy: float
    ixy: float = 0.0

    def getIxx(self) -> float:
        """⟨(x − x̄)²⟩ (pixels²)."""
        return self.ixx

    def getIyy(self) -> float:
        """⟨(y − ȳ)²⟩ (pixels²)."""
        return self.iyy

    def getIxy(self) -> float:
        """⟨(x − x̄)(y − ȳ)⟩ (pixels²)."""
        return self.ixy

    def getDeterminantRadius(self) -> float:
        """``(Ixx Iyy − Ixy²)^(1/4)`` (pixels): σ for a round Gaussian."""
        return float((self.ixx * self.iyy - self.ixy**2) ** 0.25)

    def getTraceRadius(self) -> float:
        """``sqrt((Ixx + Iyy) / 2)`` (pixels): σ for a round Gaussian."""
        return float(math.sqrt(0.5 * (self.ixx + self.iyy)))


def _checkOddDimension(value: Any, name: str) -> int:
    """``value`` as a positive odd int, or an `InvalidInputError` naming ``name``."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise InvalidInputError(f"{name}: expected a positive odd integer, got {value!r}")
    if value < 1 or value % 2 == 0:
        raise InvalidInputError(f"{name}: expected a positive odd integer, got {value}")
    return int(value)


def _checkSigma(value: Any, name: str) -> float:
    try:
        sigma = float(value)
    except (TypeError, ValueError):
        raise InvalidInputError(f"{name}: expected a positive number, got {value!r}") from None
    if not (math.isfinite(sigma) and sigma > 0.0):
        raise InvalidInputError(f"{name}: expected a positive finite number, got {value!r}")
    return sigma


def _integratedGaussian(width: int, height: int, sigma: float) -> np.ndarray:
    """A unit-integral round Gaussian integrated over the pixels of a centred (h, w) box.

    The result sums to 1 less the flux outside the box.
    """
    scale = 1.0 / (math.sqrt(2.0) * sigma)

    def axis(n: int) -> np.ndarray:
        edges = np.arange(n + 1, dtype=np.float64) - 0.5 - n // 2
        return np.asarray(np.diff(0.5 * _erf(edges * scale)))

    return np.outer(axis(height), axis(width))


def _momentsOfImage(image: np.ndarray) -> Quadrupole:
    """Unweighted second moments about the centroid of a kernel image.

    Raises
    ------
    PsfComputeShapeError
        If the image sums to ≤ 0 or the moments are not positive definite.
    """
    total = float(image.sum())
    if not (math.isfinite(total) and total > 0.0):
        raise PsfComputeShapeError(f"the PSF image sums to {total}; cannot compute its moments")
    ny, nx = image.shape
    y, x = np.mgrid[0:ny, 0:nx].astype(np.float64)
    xc = float((image * x).sum()) / total
    yc = float((image * y).sum()) / total
    dx, dy = x - xc, y - yc
    ixx = float((image * dx * dx).sum()) / total
    iyy = float((image * dy * dy).sum()) / total
    ixy = float((image * dx * dy).sum()) / total
    if not (ixx > 0.0 and iyy > 0.0 and ixx * iyy - ixy * ixy > 0.0):
        raise PsfComputeShapeError(
            f"the PSF image's second moments (Ixx={ixx:.4g}, Iyy={iyy:.4g}, Ixy={ixy:.4g}) "
            "are not positive definite"
        )
    return Quadrupole(ixx, iyy, ixy)


def _padOrClip(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """Centre ``image`` (odd dimensions) in a zero (height, width) array, clipping if smaller."""
    out = np.zeros((height, width), dtype=np.float64)
    ny, nx = image.shape
    # Offsets of the input's corner in the output; negative means the input is clipped.
    oy, ox = height // 2 - ny // 2, width // 2 - nx // 2
    ys, xs = max(oy, 0), max(ox, 0)
    ye, xe = min(oy + ny, height), min(ox + nx, width)
    out[ys:ye, xs:xe] = image[ys - oy : ye - oy, xs - ox : xe - ox]
    return out


def _normalised(image: np.ndarray, what: str) -> np.ndarray:
    total = float(image.sum())
    if not (math.isfinite(total) and total > 0.0):
        raise InvalidInputError(f"{what}: the PSF image must have a positive sum, got {total}")
    return image / total


def _checkImage(image: Any, what: str) -> np.ndarray:
    """A finite, 2-D, odd-sized float64 copy of ``image``."""
    array = np.array(image, dtype=np.float64)
    if array.ndim != 2:
        raise InvalidInputError(f"{what}: expected a 2-D array, got {array.ndim} dimensions")
    if array.shape[0] % 2 == 0 or array.shape[1] % 2 == 0:
        raise InvalidInputError(
            f"{what}: a PSF image needs odd dimensions so that it has a centre pixel; got shape "
            f"{array.shape}"
        )
    if not np.isfinite(array).all():
        raise InvalidInputError(f"{what}: the PSF image holds NaN or infinite values")
    return array


class Psf(abc.ABC):
    """Base class of the PSF models: a kernel image and a shape at any position.

    Subclasses implement `_kernelImage` and `_shape`; positions are parent pixel coordinates
    (``x`` the column, ``y`` the row). When ``x`` and ``y`` are omitted the model is evaluated at
    its average position (`getAveragePosition`), or at (0, 0) if it has none.

    Parameters
    ----------
    width, height : `int`
        Odd dimensions of the kernel image.
    averagePosition : (`float`, `float`), optional
        A representative position for a spatially varying model.
    """

    def __init__(
        self, width: int, height: int, averagePosition: tuple[float, float] | None = None
    ) -> None:
        self._width = _checkOddDimension(width, "width")
        self._height = _checkOddDimension(height, "height")
        if averagePosition is not None:
            ax, ay = (float(v) for v in averagePosition)
            if not (math.isfinite(ax) and math.isfinite(ay)):
                raise InvalidInputError(
                    f"averagePosition: expected two finite numbers, got {averagePosition!r}"
                )
            averagePosition = (ax, ay)
        self._averagePosition = averagePosition

    # -- what subclasses provide -------------------------------------------------------------

    @abc.abstractmethod
    def _kernelImage(self, x: float, y: float) -> np.ndarray:
        """The unit-sum (height, width) float64 kernel image at (x, y)."""

    @abc.abstractmethod
    def _shape(self, x: float, y: float) -> Quadrupole:
        """The second moments at (x, y); raise `PsfComputeShapeError` if they do not exist."""

    @abc.abstractmethod
    def resized(self, width: int, height: int) -> Psf:
        """The same model with kernel images of another (odd) size."""

    # -- the public interface ----------------------------------------------------------------

    def _position(self, x: float | None, y: float | None) -> tuple[float, float]:
        if x is None or y is None:
            if x is not None or y is not None:
                raise InvalidInputError("give both x and y, or neither")
            return self._averagePosition if self._averagePosition is not None else (0.0, 0.0)
        xf, yf = float(x), float(y)
        if not (math.isfinite(xf) and math.isfinite(yf)):
            raise InvalidInputError(f"position must be finite, got ({x}, {y})")
        return xf, yf

    def getAveragePosition(self) -> tuple[float, float] | None:
        """The model's representative position, or `None` if it was not given one."""
        return self._averagePosition

    def getDimensions(self) -> tuple[int, int]:
        """``(width, height)`` of the kernel images."""
        return self._width, self._height

    def computeBBox(self, x: float | None = None, y: float | None = None) -> Any:
        """The kernel image's box, `Box2I` from ``(-(width // 2), -(height // 2))``."""
        self._position(x, y)
        return _core.Box2I((-(self._width // 2), -(self._height // 2)), (self._width, self._height))

    def computeKernelImage(self, x: float | None = None, y: float | None = None) -> np.ndarray:
        """The PSF at (x, y) as a kernel image.

        Parameters
        ----------
        x, y : `float`, optional
            Parent position; by default the average position.

        Returns
        -------
        image : `numpy.ndarray`, shape (height, width), float64
            Sums to 1; the PSF is centred on element ``[height // 2, width // 2]``. A new array.
        """
        xf, yf = self._position(x, y)
        return self._kernelImage(xf, yf)

    def computeShape(self, x: float | None = None, y: float | None = None) -> Quadrupole:
        """The PSF's second moments at (x, y) (pixels²).

        Raises
        ------
        PsfComputeShapeError
            If the model has no positive-definite second moments there.
        """
        xf, yf = self._position(x, y)
        try:
            return self._shape(xf, yf)
        except PsfComputeShapeError as err:
            if err.position is not None:
                raise
            raise PsfComputeShapeError(str(err), position=(xf, yf)) from err

    def getSigma(self, x: float | None = None, y: float | None = None) -> float:
        """The determinant radius (pixels) at (x, y): σ for a round Gaussian."""
        return self.computeShape(x, y).getDeterminantRadius()

    def getFwhm(self, x: float | None = None, y: float | None = None) -> float:
        """``2 sqrt(2 ln 2)`` × the determinant radius (pixels) at (x, y)."""
        return FWHM_PER_SIGMA * self.getSigma(x, y)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._width}x{self._height})"


class GaussianPsf(Psf):
    """A round Gaussian PSF, integrated over pixels.

    Parameters
    ----------
    width, height : `int`
        Odd dimensions of the kernel image.
    sigma : `float`
        Standard deviation (pixels) of the continuous Gaussian; the FWHM is 2.3548 σ.

    Raises
    ------
    InvalidInputError
        For an even or non-positive dimension, or a sigma that is not positive and finite.

    Notes
    -----
    `computeShape` gives the continuous profile's moments, σ² on both axes; the kernel image's
    own moments are larger by the pixel's 1/12 pixel² (and smaller by the truncated wings).
    """

    def __init__(self, width: int, height: int, sigma: float) -> None:
        super().__init__(width, height)
        self._sigma = _checkSigma(sigma, "sigma")
        self._image = _normalised(_integratedGaussian(self._width, self._height, self._sigma), "")

    def _kernelImage(self, x: float, y: float) -> np.ndarray:
        return self._image.copy()

    def _shape(self, x: float, y: float) -> Quadrupole:
        return Quadrupole(self._sigma**2, self._sigma**2, 0.0)

    def resized(self, width: int, height: int) -> GaussianPsf:
        return GaussianPsf(width, height, self._sigma)

    def __repr__(self) -> str:
        return f"GaussianPsf({self._width}, {self._height}, sigma={self._sigma!r})"


class DoubleGaussianPsf(Psf):
    """Two concentric round Gaussians: a core of width σ₁ and wings of width σ₂.

    The profile is ``exp(−r²/2σ₁²) + b exp(−r²/2σ₂²)``, normalised to unit integral, so ``b``
    is the ratio of the second Gaussian's *peak* to the first's (the reference's convention);
    the second holds a fraction ``b σ₂² / (σ₁² + b σ₂²)`` of the flux.

    Parameters
    ----------
    width, height : `int`
        Odd dimensions of the kernel image.
    sigma1, sigma2 : `float`
        Widths (pixels) of the two Gaussians.
    b : `float`, optional
        Peak ratio, ≥ 0; 0 gives a single Gaussian.

    Raises
    ------
    InvalidInputError
        For a bad dimension or width, or a negative or non-finite ``b``.

    Notes
    -----
    `computeShape` gives the continuous profile's moments,
    ``Ixx = Iyy = (σ₁⁴ + b σ₂⁴) / (σ₁² + b σ₂²)``.
    """

    def __init__(self, width: int, height: int, sigma1: float, sigma2: float, b: float = 0.0):
        super().__init__(width, height)
        self._sigma1 = _checkSigma(sigma1, "sigma1")
        self._sigma2 = _checkSigma(sigma2, "sigma2")
        bf = float(b)
        if not (math.isfinite(bf) and bf >= 0.0):
            raise InvalidInputError(f"b: expected a finite number >= 0, got {b!r}")
        self._b = bf
        w1 = self._sigma1**2
        w2 = self._b * self._sigma2**2
        image = w1 * _integratedGaussian(self._width, self._height, self._sigma1)
        image += w2 * _integratedGaussian(self._width, self._height, self._sigma2)
        self._image = _normalised(image, "")

    def _kernelImage(self, x: float, y: float) -> np.ndarray:
        return self._image.copy()

    def _shape(self, x: float, y: float) -> Quadrupole:
        s1, s2, b = self._sigma1**2, self._sigma2**2, self._b
        moment = (s1 * s1 + b * s2 * s2) / (s1 + b * s2)
        return Quadrupole(moment, moment, 0.0)

    def resized(self, width: int, height: int) -> DoubleGaussianPsf:
        return DoubleGaussianPsf(width, height, self._sigma1, self._sigma2, self._b)

    def __repr__(self) -> str:
        return (
            f"DoubleGaussianPsf({self._width}, {self._height}, sigma1={self._sigma1!r}, "
            f"sigma2={self._sigma2!r}, b={self._b!r})"
        )


class ImagePsf(Psf):
    """A PSF given as an image, the same everywhere.

    Parameters
    ----------
    image : array_like
        2-D, odd dimensions, finite, with a positive sum; it is copied and normalised to unit
        sum. The PSF is taken to be centred on the middle pixel.

    Raises
    ------
    InvalidInputError
        If the image is not 2-D, has an even dimension, holds NaN/inf or does not sum to > 0.

    Notes
    -----
    `computeShape` measures the image's unweighted second moments about its centroid (which
    include the pixel's 1/12 pixel²); it raises `PsfComputeShapeError` when they are not
    positive definite (e.g. an image with strong negative wings). `resized` pads with zeros
    or clips, centred, and normalises again.
    """

    def __init__(self, image: Any) -> None:
        array = _normalised(_checkImage(image, "image"), "image")
        super().__init__(array.shape[1], array.shape[0])
        self._image = array

    def _kernelImage(self, x: float, y: float) -> np.ndarray:
        return self._image.copy()

    def _shape(self, x: float, y: float) -> Quadrupole:
        return _momentsOfImage(self._image)

    def resized(self, width: int, height: int) -> ImagePsf:
        width = _checkOddDimension(width, "width")
        height = _checkOddDimension(height, "height")
        return ImagePsf(_padOrClip(self._image, width, height))


class VaryingPsf(Psf):
    """A spatially varying PSF defined by a function of position.

    Parameters
    ----------
    function : callable
        ``function(x, y)`` of a parent position returns either a PSF image (2-D array, odd
        dimensions, positive sum) or a `Psf`. An image is centred in the kernel box, padded with
        zeros or clipped to (height, width), and normalised; a `Psf`'s kernel image is treated
        the same way and its `computeShape` is used.
    width, height : `int`
        Odd dimensions of the kernel images.
    averagePosition : (`float`, `float`), optional
        Where the PSF is evaluated when no position is given (`getAveragePosition`).

    Raises
    ------
    InvalidInputError
        For a bad dimension or position, or (when evaluated) a function result that is neither
        a `Psf` nor a usable image.
    """

    def __init__(
        self,
        function: Callable[[float, float], Any],
        width: int,
        height: int,
        averagePosition: tuple[float, float] | None = None,
    ) -> None:
        if not callable(function):
            raise InvalidInputError(f"function: expected a callable, got {type(function).__name__}")
        super().__init__(width, height, averagePosition)
        self._function = function

    def _evaluate(self, x: float, y: float) -> Psf | np.ndarray:
        value = self._function(x, y)
        if isinstance(value, Psf):
            return value
        return _checkImage(value, f"VaryingPsf function at ({x}, {y})")

    def _kernelImage(self, x: float, y: float) -> np.ndarray:
        value = self._evaluate(x, y)
        image = value.computeKernelImage(x, y) if isinstance(value, Psf) else value
        return _normalised(
            _padOrClip(image, self._width, self._height), f"VaryingPsf at ({x}, {y})"
        )

    def _shape(self, x: float, y: float) -> Quadrupole:
        value = self._evaluate(x, y)
        if isinstance(value, Psf):
            return value.computeShape(x, y)
        return _momentsOfImage(value)

    def resized(self, width: int, height: int) -> VaryingPsf:
        return VaryingPsf(self._function, width, height, self._averagePosition)
