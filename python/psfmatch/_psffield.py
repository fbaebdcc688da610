# SPDX-License-Identifier: BSD-3-Clause
"""A PSF over a whole image (`PsfField`), where it comes from, and the convolution of an image
with it: what cross-convolution (docs/algorithm.md §7.11) convolves each image with.

A field is ``P(x, y) = Σ_k f_k(x, y) B_k``: basis images ``B_k`` and Chebyshev terms
``f_k`` of the parent position over the image's box (one constant term for a PSF that is the
same everywhere). It is fitted, pixel by pixel and by least squares, to PSF images sampled at
a few positions: those of a PSF object the user gave (`psfFieldFromInput`), or the stacked
PSFs of the regions of an image (`psfmatch._psfstack`). The square of the PSF, which
propagates the variance, is a field of its own fitted the same way, so that the variance of
``P ⊗ I`` costs as many convolutions as its image.

The convolution is done by FFTs of tiles (`psfmatch._fft._convolveTiles`), one pass per
term: PSF stamps are often larger than matching kernels (a JWST PSF reaches tens of pixels)
and the compiled direct convolution would spend ``O(size²)`` per pixel on them.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._psfutil import userPsfImage
from .errors import InvalidInputError
from .image import Mask, MaskedImage

#: PSF pixels at or above this fraction of the peak form the footprint the mask bits of a
#: convolved image are grown by: what a bad pixel reaches at more than 1 % of its weight.
_FOOTPRINT_FRACTION = 0.01
#: Positions per axis at which a PSF object is sampled to fit its spatial model.
_SAMPLES_PER_AXIS = 4
#: Largest relative difference between the sampled images of a PSF object below which it is
#: taken to be the same everywhere (float64 rendering of one model gives ~1e-16).
_CONSTANT_TOLERANCE = 1e-9


def chebyshevTerms(x: Any, y: Any, order: int, bbox: tuple[float, float, float, float]) -> Any:
    """The terms ``T_p(x') T_q(y')``, ``p + q ≤ order``, in the order of §5.1 (total degree
    ``n`` ascending, within it the power of ``y`` from 0 to ``n``), with ``x'`` and ``y'``
    mapping the pixel-edge extent ``bbox = (xMin − 0.5, xMax + 0.5, yMin − 0.5, yMax + 0.5)``
    onto [−1, 1]. Shape ``(nTerms,) + broadcast shape of x and y``."""
    x0, x1, y0, y1 = bbox
    xs = (2.0 * np.asarray(x, dtype=float) - (x0 + x1)) / (x1 - x0)
    ys = (2.0 * np.asarray(y, dtype=float) - (y0 + y1)) / (y1 - y0)

    def powers(t: np.ndarray) -> list[np.ndarray]:
        out = [np.ones_like(t), t]
        for _ in range(2, order + 1):
            out.append(2.0 * t * out[-1] - out[-2])
        return out[: order + 1]

    tx, ty = powers(xs), powers(ys)
    terms = [tx[n - q] * ty[q] for n in range(order + 1) for q in range(n + 1)]
    return np.broadcast_arrays(*terms) if terms else []


def nChebyshevTerms(order: int) -> int:
    return (order + 1) * (order + 2) // 2


@dataclass(frozen=True, eq=False)
class PsfField:
    """A PSF over an image's box.

    Attributes
    ----------
    basis, squaredBasis : `numpy.ndarray`
        ``(nTerms, height, width)``: the field of the PSF and that of its square.
    order : `int`
        Chebyshev order of the spatial terms (0: the same PSF everywhere).
    bbox : (`float`, `float`, `float`, `float`)
        Pixel-edge extent ``(xMin − 0.5, xMax + 0.5, yMin − 0.5, yMax + 0.5)`` of the box the
        terms are defined on.
    source : `str`
        Where it came from, for the metadata: ``"given"`` or ``"measured"``.
    """

    basis: np.ndarray
    squaredBasis: np.ndarray
    order: int
    bbox: tuple[float, float, float, float]
    source: str

    @property
    def halfWidth(self) -> int:
        return int(self.basis.shape[1] // 2)

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.basis.shape[1]), int(self.basis.shape[2])

    def imageAt(self, x: float, y: float) -> np.ndarray:
        """The unit-sum PSF image at parent (x, y)."""
        terms = np.array(chebyshevTerms(x, y, self.order, self.bbox), dtype=float)
        image = np.tensordot(terms, self.basis, axes=1)
        return np.asarray(image / image.sum())

    def centre(self) -> tuple[float, float]:
        x0, x1, y0, y1 = self.bbox
        return 0.5 * (x0 + x1), 0.5 * (y0 + y1)

    def centreImage(self) -> np.ndarray:
        return self.imageAt(*self.centre())

    def footprint(self) -> np.ndarray:
        """Where the PSF at the centre reaches `_FOOTPRINT_FRACTION` of its peak (boolean)."""
        image = np.abs(self.centreImage())
        return np.asarray(image >= _FOOTPRINT_FRACTION * image.max())


def fitPsfField(
    images: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    order: int,
    bbox: tuple[float, float, float, float],
    source: str,
) -> PsfField:
    """The field of ``order`` that fits unit-sum PSF ``images`` (n, h, w) sampled at parent
    ``(x, y)`` best, pixel by pixel (least squares); order 0 is their mean."""
    images = np.asarray(images, dtype=float)
    n = images.shape[0]
    flat = images.reshape(n, -1)
    squares = (images * images).reshape(n, -1)
    if order == 0:
        basis = flat.mean(axis=0, keepdims=True)
        squared = squares.mean(axis=0, keepdims=True)
    else:
        design = np.array(chebyshevTerms(x, y, order, bbox), dtype=float).T  # (n, nTerms)
        basis = np.linalg.lstsq(design, flat, rcond=None)[0]
        squared = np.linalg.lstsq(design, squares, rcond=None)[0]
    shape = (-1,) + images.shape[1:]
    return PsfField(basis.reshape(shape), squared.reshape(shape), int(order), bbox, source)


def _edgeBBox(mi: MaskedImage) -> tuple[float, float, float, float]:
    bbox = mi.getBBox()
    return (
        bbox.getMinX() - 0.5,
        bbox.getMaxX() + 0.5,
        bbox.getMinY() - 0.5,
        bbox.getMaxY() + 0.5,
    )


def _cropped(image: np.ndarray, maxHalfWidth: int) -> np.ndarray:
    """``image`` cut to at most (2·maxHalfWidth + 1)² about its centre pixel."""
    ny, nx = image.shape
    hy, hx = min(ny // 2, maxHalfWidth), min(nx // 2, maxHalfWidth)
    cy, cx = ny // 2, nx // 2
    return image[cy - hy : cy + hy + 1, cx - hx : cx + hx + 1]


def _squareOdd(image: np.ndarray) -> np.ndarray:
    """``image`` zero-padded about its centre pixel to a square."""
    ny, nx = image.shape
    n = max(ny, nx)
    out = np.zeros((n, n))
    out[(n - ny) // 2 : (n - ny) // 2 + ny, (n - nx) // 2 : (n - nx) // 2 + nx] = image
    return out


def readPsfStamp(path: str | os.PathLike[str], name: str) -> np.ndarray:
    """The PSF image of a FITS file: the ``DET_DIST`` or ``DET_SAMP`` HDU of a WebbPSF file
    (the PSF at the detector's pixel scale; its first HDU is oversampled), else the first HDU
    holding a 2-D image.

    Raises
    ------
    InputFileNotFoundError
        No such file.
    InvalidInputError
        No 2-D image in it, or one that says it is oversampled (``OVERSAMP`` or ``DET_SAMP``
        keyword above 1 in an HDU that is not a detector-sampled one).
    """
    from astropy.io import fits

    from .errors import InputFileNotFoundError

    if not os.path.isfile(path):
        if os.path.exists(path):  # was: "no such file" for /dev/null, a directory
            raise InvalidInputError(f"{name}: {os.fspath(path)!r} is not a regular file")
        raise InputFileNotFoundError(f"{name}: no such file: {os.fspath(path)!r}")
    try:
        with fits.open(path, memmap=False) as hdus:
            names = [str(h.name).upper() for h in hdus]
            chosen = None
            for wanted in ("DET_DIST", "DET_SAMP"):
                if wanted in names:
                    chosen = hdus[names.index(wanted)]
                    break
            if chosen is None:
                for hdu in hdus:
                    if hdu.data is not None and np.ndim(hdu.data) == 2:
                        chosen = hdu
                        break
                if chosen is not None:
                    oversampled = max(
                        int(chosen.header.get(key, 1) or 1) for key in ("OVERSAMP", "DET_SAMP")
                    )
                    if oversampled > 1 and str(chosen.name).upper() == "OVERSAMP":
                        raise InvalidInputError(
                            f"{name}: {os.fspath(path)!r} holds a PSF oversampled {oversampled}"
                            " times (HDU OVERSAMP) and no detector-sampled HDU (DET_SAMP or "
                            "DET_DIST); give the PSF at the image's pixel scale"
                        )
            if chosen is None or chosen.data is None or np.ndim(chosen.data) != 2:
                raise InvalidInputError(f"{name}: {os.fspath(path)!r} holds no 2-D PSF image")
            return np.array(chosen.data, dtype=np.float64)
    except OSError as err:
        raise InvalidInputError(f"{name}: cannot read {os.fspath(path)!r}: {err}") from err


def readPsfInput(value: Any, name: str) -> Any:
    """A PSF input with a FITS path read into its image (`readPsfStamp`); anything else as is."""
    if isinstance(value, str | os.PathLike):
        return readPsfStamp(value, name)
    return value


def _checkedPsfImage(value: Any, name: str) -> np.ndarray:
    try:
        array = np.array(getattr(value, "array", value), dtype=np.float64)
    except (TypeError, ValueError):
        raise InvalidInputError(
            f"{name}: expected a 2-D PSF image, a FITS path or a PSF object, got "
            f"{type(value).__name__}"
        ) from None
    if array.ndim != 2 or array.shape[0] % 2 == 0 or array.shape[1] % 2 == 0:
        raise InvalidInputError(
            f"{name}: expected an odd-sized 2-D image (its centre pixel is the PSF's centre), "
            f"got shape {array.shape}"
        )
    total = float(array.sum()) if np.isfinite(array).all() else math.nan
    if not total > 0:
        raise InvalidInputError(f"{name}: the PSF image must be finite with a positive sum")
    return array / total


def psfFieldFromInput(
    value: Any, mi: MaskedImage, name: str, maxHalfWidth: int, order: int = 2
) -> PsfField:
    """The field of a user's PSF over the box of ``mi``.

    An array (or FITS path, `readPsfInput`) is the same everywhere. A PSF object (with
    ``computeKernelImage(x, y)``) is sampled on a 4 × 4 grid of positions over the box: the
    same image everywhere gives a constant field, otherwise a Chebyshev field of ``order``
    fitted to the samples. Images are cut to ``maxHalfWidth`` about their centre, squared up
    with zeros and normalised to unit sum.

    Raises
    ------
    InvalidInputError
        Not an odd-sized finite image with a positive sum, at some sampled position.
    """
    value = readPsfInput(value, name)
    bbox = _edgeBBox(mi)
    if not hasattr(value, "computeKernelImage"):
        image = _squareOdd(_cropped(_checkedPsfImage(value, name), maxHalfWidth))
        image = image / image.sum()
        return fitPsfField(image[None], np.zeros(1), np.zeros(1), 0, bbox, "given")
    x0, x1, y0, y1 = bbox
    # Sample positions at the centres of a 4 × 4 grid of equal cells of the box.
    fractions = (np.arange(_SAMPLES_PER_AXIS) + 0.5) / _SAMPLES_PER_AXIS
    gridX, gridY = np.meshgrid(x0 + fractions * (x1 - x0), y0 + fractions * (y1 - y0))
    xs, ys = gridX.ravel(), gridY.ravel()
    samples = [
        _squareOdd(
            _cropped(
                _checkedPsfImage(userPsfImage(value, float(x), float(y), name), name),
                maxHalfWidth,
            )
        )
        for x, y in zip(xs, ys, strict=True)
    ]
    size = max(s.shape[0] for s in samples)
    stack = np.zeros((len(samples), size, size))
    for k, s in enumerate(samples):
        o = (size - s.shape[0]) // 2
        stack[k, o : o + s.shape[0], o : o + s.shape[0]] = s / s.sum()
    spread = np.abs(stack - stack[0]).max() / np.abs(stack[0]).max()
    if spread <= _CONSTANT_TOLERANCE:
        return fitPsfField(stack[:1], xs[:1], ys[:1], 0, bbox, "given")
    return fitPsfField(stack, xs, ys, order, bbox, "given")


def _dilateBits(mask: np.ndarray, footprint: np.ndarray) -> np.ndarray:
    """Every bit plane of ``mask`` grown by the boolean ``footprint`` (centred)."""
    from scipy import ndimage

    out = mask.copy()
    present = int(np.bitwise_or.reduce(mask, axis=None)) if mask.size else 0
    bit = 1
    while present >= bit:
        if present & bit:
            grown = ndimage.binary_dilation((mask & bit) != 0, structure=footprint)
            out[grown] |= bit
        bit <<= 1
    return out


def convolveWithField(
    mi: MaskedImage, field: PsfField, badBits: int, nThreads: int = 0
) -> MaskedImage:
    """``P ⊗ image`` and ``P² ⊗ variance`` for the field ``P``, term by term:
    ``Σ_k f_k(x, y) (B_k ⊗ I)``, exact for the field (the terms are evaluated at each output
    pixel, as the compiled spatially varying convolution does); each term by overlap-save FFTs
    of tiles (`psfmatch._fft._convolveTiles`), in float32 for a float32 image.

    Pixels with ``badBits`` (and non-finite ones) are replaced by the mean of the others
    before the image and the variance are convolved, so that their values reach no other
    pixel; every mask bit is grown by the PSF's footprint (`PsfField.footprint`). Pixels
    within the PSF's half-width of the border, which the convolution cannot reach, are copies
    of the input with the ``EDGE`` bit, as `psfmatch.convolve` with ``doCopyEdge``. The result
    has the input's dtype and origin.
    """
    from ._fft import _convolveTiles

    image = np.asarray(mi.image)
    variance = np.asarray(mi.variance)
    mask = np.asarray(mi.mask)
    # A variance that is not finite makes its pixel unusable for the image too.
    badMask = mask
    nonFiniteVariance = ~np.isfinite(variance)
    if nonFiniteVariance.any():
        badMask = mask.copy()
        badMask[nonFiniteVariance] |= Mask.getPlaneBitMask("NO_DATA")
        badBits |= Mask.getPlaneBitMask("NO_DATA")
    ny, nx = image.shape
    x0, y0 = mi.getXY0()
    terms: list[Any] = [None]
    if field.order:
        xs = x0 + np.arange(nx, dtype=float)
        ys = y0 + np.arange(ny, dtype=float)
        terms = chebyshevTerms(xs[None, :], ys[:, None], field.order, field.bbox)

    outputs = []
    for plane, basis in ((image, field.basis), (variance, field.squaredBasis)):
        total: np.ndarray | None = None
        for k in range(basis.shape[0]):
            result = _convolveTiles(
                plane, basis[k], mask=badMask, maskBits=badBits, nThreads=nThreads
            )
            if terms[0] is not None:
                result = result * terms[k]
            total = result if total is None else total + result
        assert total is not None
        outputs.append(total)
    newImage, newVariance = outputs
    np.maximum(newVariance, 0.0, out=newVariance)
    newMask = _dilateBits(mask, field.footprint())
    half = field.halfWidth
    border = np.ones((ny, nx), dtype=bool)
    border[half : ny - half, half : nx - half] = False
    newImage[border] = image[border]
    newVariance[border] = variance[border]
    newMask[border] |= Mask.getPlaneBitMask("EDGE")
    return MaskedImage(
        newImage.astype(image.dtype, copy=False),
        newMask.astype(mi.mask.dtype, copy=False),
        newVariance.astype(variance.dtype, copy=False),
        xy0=mi.getXY0(),
    )
