# SPDX-License-Identifier: BSD-3-Clause
"""Resampling an image onto another image's pixel grid by their WCSs, with flux, variance and
mask carried (``psfmatch.subtract(..., align="wcs")``; docs/decisions.md D16).

`alignMaskedImage` resamples a `MaskedImage` described by one celestial WCS onto a box of the
pixel grid of another (SIP and TPV distortions included: the WCSs are `astropy.wcs.WCS`
objects and every coordinate goes through them exactly):

- **Geometry.** The map from output pixels to input pixels is computed exactly with
  astropy.wcs on a grid of control points and split into tiles (256 pixels, halved where
  needed) on each of which it is affine to within ``maxMappingError`` (0.002 px by default) at
  every control point; each tile is resampled with that affine map. The largest departure is
  recorded (``alignMaxMappingError``).
- **Image.** The cubic B-spline of the input pixels (`scipy.ndimage.affine_transform`,
  order 3, *without* the prefilter that would make it interpolate) times the local
  pixel-area ratio ``J = |det ∂(u, v)/∂(x, y)|`` (input pixels per output pixel): the pixels
  stay fluxes, not surface brightnesses. The B-spline is a smoothing kernel of unit sum whose
  Fourier transform, sinc⁴, nearly vanishes at the output grid's frequencies, so that the sum
  of the output pixels is the flux to ~1e-4 for any rotation and pixel scale: a star keeps
  its flux within 0.1 % (bilinear interpolation, sinc², misses it by up to 3 % on grids of
  parallel axes and pixel scales 10 % apart; docs/decisions.md D16). It widens the PSF by a
  uniform 1/3 input px² per axis, the same everywhere (bilinear interpolation widens it by 0
  to 1/4 px² depending on each star's sub-pixel phase, which no matching kernel can follow).
- **Variance.** ``variance="pixel"`` (the default): the variance of each output pixel,
  ``J² Σ w_k² V_k`` over its 16 input pixels, exact for independent input pixels.
  Resampling correlates neighbouring output pixels, so a sum of many of them (a convolution,
  a large aperture) has more variance than the sum of their per-pixel variances;
  ``variance="smoothed"`` gives instead ``J`` times a local mean of ``V`` (bilinear), the
  per-pixel variance of white noise with the resampled image's noise power at low spatial
  frequencies, which is what a smoothing of the image (the matching kernel) sees, to within
  ``1/(3 s²)`` for a Gaussian of sigma ``s`` input pixels. For a uniform input variance ``v``
  they are ``J² v Σ w_k²`` (``0.21 J² v`` to ``0.25 J² v``) and ``J v``.
- **Mask.** An output pixel gets every bit of its 16 input pixels; where they leave the
  input image it is ``NO_DATA`` with image NaN and variance +inf.

Memory is bounded by the output box: only the rows of the input that the box maps onto are
read (copied only when they must be converted), never the whole of a larger input; tiles are
processed by ``nThreads`` threads (scipy releases the GIL).

Nothing here is imported by ``import psfmatch``: astropy.wcs is loaded when alignment is
asked for.
"""

from __future__ import annotations

__all__ = ["ALGORITHM", "AlignedImage", "alignMaskedImage", "readWcs"]

import logging
import math
import os
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._wcs import _shiftedWcs, readWcs
from .errors import InvalidInputError
from .image import Mask, MaskedImage

_log = logging.getLogger("psfmatch.align")

#: What `alignMaskedImage` does, as recorded in metadata and headers (``alignAlgorithm``).
ALGORITHM = "cubic B-spline x pixel-area ratio (flux kept), affine tiles of the WCS map"

#: Side (pixels) of the largest tile: large enough that the per-call cost of the interpolation
#: (~30 µs) is small against its per-pixel cost, small enough to stay in the cache.
_TILE = 256

#: Side (pixels) of the smallest tile. A map that is not affine within the tolerance over 8
#: pixels (a distortion of more than ~1e-4 px⁻¹ curvature) is resampled at that size anyway
#: and the error recorded.
_MIN_TILE = 8

#: Control points per tile side: 4 × 4 points at which the exact map is computed; an affine
#: fit through them and its largest residual decide whether the tile is split.
_SAMPLES = 4

#: Default largest distance (pixels) between the exact WCS map and the affine map of a tile.
#: Tiles meet with a step of up to twice this; 0.002 px moves a star of peak P by at most
#: ~0.002 P / sigma, below the noise of any star but the very brightest.
MAX_MAPPING_ERROR = 0.002

_VARIANCE_KINDS = ("pixel", "smoothed")


def _defaultThreads() -> int:
    return max(1, min(4, os.cpu_count() or 1))


# --------------------------------------------------------------------------------------------
# WCS


def _mapPoints(fromWcs: Any, toWcs: Any, x: np.ndarray, y: np.ndarray) -> tuple[Any, Any]:
    """Array coordinates in ``toWcs`` of array coordinates ``x, y`` in ``fromWcs`` (exact;
    NaN where a transform fails, e.g. a distortion's inverse that does not converge)."""
    from astropy.wcs import NoConvergence

    with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
        warnings.simplefilter("ignore")
        world = fromWcs.pixel_to_world_values(x, y)
        try:
            u, v = toWcs.world_to_pixel_values(*world)
        except NoConvergence as err:
            solution = np.asarray(err.best_solution, dtype=float)
            bad = np.zeros(len(solution), dtype=bool)
            for indices in (err.divergent, err.slow_conv):
                if indices is not None:
                    bad[np.asarray(indices, dtype=int)] = True
            solution[bad] = np.nan
            u, v = solution[:, 0], solution[:, 1]
    return np.asarray(u, dtype=float), np.asarray(v, dtype=float)


# --------------------------------------------------------------------------------------------
# Tiles


@dataclass
class _Tile:
    """A tile of the output box (array coordinates of the output grid) and its affine map.

    ``u = a[0] + a[1] j + a[2] i`` and ``v = b[0] + b[1] j + b[2] i`` are the input array
    coordinates of the tile's pixel ``[i, j]``; ``J = d[0] + d[1] j + d[2] i`` the pixel-area
    ratio there; ``error`` the largest distance (px) of the affine map from the exact one at
    the control points; ``outside``: the tile maps entirely off the input.
    """

    x0: int
    y0: int
    width: int
    height: int
    a: tuple[float, float, float] = (0.0, 0.0, 0.0)
    b: tuple[float, float, float] = (0.0, 0.0, 0.0)
    d: tuple[float, float, float] = (0.0, 0.0, 0.0)
    error: float = 0.0
    outside: bool = False


def _samplePoints(tiles: list[_Tile]) -> tuple[np.ndarray, np.ndarray]:
    """The output array coordinates (x, y) of each tile's control points, shape
    (n_tiles, _SAMPLES²): a square grid from corner to corner, row by row."""
    t = np.linspace(0.0, 1.0, _SAMPLES)
    ti, tj = (c.ravel()[None, :] for c in np.meshgrid(t, t, indexing="ij"))
    w = np.array([max(tile.width - 1, 1) for tile in tiles], dtype=float)[:, None]
    h = np.array([max(tile.height - 1, 1) for tile in tiles], dtype=float)[:, None]
    x = tj * w + np.array([tile.x0 for tile in tiles], dtype=float)[:, None]
    y = ti * h + np.array([tile.y0 for tile in tiles], dtype=float)[:, None]
    return x, y


def _fitTiles(
    tiles: list[_Tile],
    u: np.ndarray,
    v: np.ndarray,
    inShape: tuple[int, int],
) -> None:
    """Fit each tile's affine map and area-ratio plane to its control points, in place.

    Every tile has its control points at the same fractions of its sides, so one
    pseudo-inverse fits them all. The area ratio comes from the derivative of a quadratic fit
    (the affine map's own determinant is the tile's mean, off by up to half its variation
    across the tile, ~1e-4 for the distortions that still allow large tiles)."""
    ny, nx = inShape
    t = np.linspace(0.0, 1.0, _SAMPLES)
    q, p = (c.ravel() for c in np.meshgrid(t, t, indexing="ij"))
    linear = np.column_stack([np.ones_like(p), p, q])
    quadratic = np.column_stack([linear, p * p, p * q, q * q])
    fitLinear, fitQuadratic = np.linalg.pinv(linear), np.linalg.pinv(quadratic)
    finite = np.all(np.isfinite(u) & np.isfinite(v), axis=1)
    u = np.where(finite[:, None], u, 0.0)
    v = np.where(finite[:, None], v, 0.0)
    ca, cb = u @ fitLinear.T, v @ fitLinear.T  # (n_tiles, 3) in fractions of the sides
    residual = np.hypot(u - ca @ linear.T, v - cb @ linear.T).max(axis=1)
    qa, qb = u @ fitQuadratic.T, v @ fitQuadratic.T
    pp, qq = p[None, :], q[None, :]

    def derivatives(c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        dp = c[:, 1:2] + 2 * c[:, 3:4] * pp + c[:, 4:5] * qq
        dq = c[:, 2:3] + c[:, 4:5] * pp + 2 * c[:, 5:6] * qq
        return dp, dq

    up, uq = derivatives(qa)
    vp, vq = derivatives(qb)
    sides = np.array([[max(t.width - 1, 1), max(t.height - 1, 1)] for t in tiles], dtype=float)
    sj, si = sides[:, 0:1], sides[:, 1:2]
    # The area ratio in pixels: derivatives with respect to the fractions divided by the sides.
    area = np.abs(up * vq - uq * vp) / (sj * si)
    cd = area @ fitLinear.T
    outside = (u.max(axis=1) < -1.0) | (u.min(axis=1) > nx) | (v.max(axis=1) < -1.0)
    outside |= v.min(axis=1) > ny
    for k, tile in enumerate(tiles):
        if not finite[k]:
            tile.error = math.inf
            continue
        w, h = float(sj[k, 0]), float(si[k, 0])
        tile.error = float(residual[k])
        tile.a = (float(ca[k, 0]), float(ca[k, 1]) / w, float(ca[k, 2]) / h)
        tile.b = (float(cb[k, 0]), float(cb[k, 1]) / w, float(cb[k, 2]) / h)
        tile.d = (float(cd[k, 0]), float(cd[k, 1]) / w, float(cd[k, 2]) / h)
        tile.outside = bool(outside[k])


def _split(tile: _Tile) -> list[_Tile]:
    w1, h1 = tile.width // 2, tile.height // 2
    parts = []
    for y0, h in ((tile.y0, h1), (tile.y0 + h1, tile.height - h1)):
        for x0, w in ((tile.x0, w1), (tile.x0 + w1, tile.width - w1)):
            if w > 0 and h > 0:
                parts.append(_Tile(x0, y0, w, h))
    return parts


def _planTiles(
    fromWcs: Any,
    toWcs: Any,
    box: tuple[int, int, int, int],
    inShape: tuple[int, int],
    tolerance: float,
) -> list[_Tile]:
    """Tiles covering ``box`` (x0, y0, width, height of output array coordinates) on each of
    which the map to the input is affine within ``tolerance`` (or that are `_MIN_TILE` wide),
    with their maps fitted."""
    bx0, by0, bw, bh = box
    pending = [
        _Tile(x0, y0, min(_TILE, bx0 + bw - x0), min(_TILE, by0 + bh - y0))
        for y0 in range(by0, by0 + bh, _TILE)
        for x0 in range(bx0, bx0 + bw, _TILE)
    ]
    done: list[_Tile] = []
    while pending:
        x, y = _samplePoints(pending)
        u, v = _mapPoints(fromWcs, toWcs, x.ravel(), y.ravel())
        _fitTiles(pending, u.reshape(x.shape), v.reshape(x.shape), inShape)
        following = []
        for tile in pending:
            small = max(tile.width, tile.height) <= _MIN_TILE
            if tile.error <= tolerance or tile.outside or small:
                done.append(tile)
            else:
                following.extend(_split(tile))
        pending = following
    return done


# --------------------------------------------------------------------------------------------
# Resampling


@dataclass(frozen=True)
class AlignedImage:
    """An image resampled onto another grid by `alignMaskedImage`.

    Attributes
    ----------
    maskedImage : `MaskedImage`
        The resampled image, variance and mask on the output box; its ``xy0`` is the output
        grid's origin plus the box's corner.
    wcs : `astropy.wcs.WCS`
        The WCS of ``maskedImage``'s pixels: the output grid's, shifted to the box.
    footprintFraction : `float`
        The fraction of the output box's pixels (``core`` box, if given) whose whole
        footprint lies in the input image; the others are ``NO_DATA``.
    noPixel : `numpy.ndarray` or None
        Boolean, the output box's shape: True where the footprint leaves the input (image
        NaN, variance +inf, ``NO_DATA``); None when there is no such pixel.
    variance : `str`
        What the variance plane holds: ``"pixel"`` or ``"smoothed"`` (see the module
        docstring).
    maxMappingError : `float`
        The largest distance (pixels) between the exact WCS map and the affine one used, at
        the control points.
    nTiles : `int`
        Tiles the output was resampled in.
    """

    maskedImage: MaskedImage
    wcs: Any
    footprintFraction: float
    noPixel: np.ndarray | None
    variance: str
    maxMappingError: float
    nTiles: int

    def metadata(self, prefix: str = "align") -> dict[str, Any]:
        """The alignment as metadata entries (``alignAlgorithm``, ``alignFootprintFraction``,
        ``alignVariance``, ``alignMaxMappingError``, ``alignTiles``)."""
        return {
            f"{prefix}Algorithm": ALGORITHM,
            f"{prefix}FootprintFraction": float(self.footprintFraction),
            f"{prefix}Variance": self.variance,
            f"{prefix}MaxMappingError": float(self.maxMappingError),
            f"{prefix}Tiles": int(self.nTiles),
        }


@dataclass
class _Input:
    """The part of the input image that the output box maps onto, ready for resampling.

    ``image`` and ``variance`` are the input's own arrays (views of whole rows, contiguous)
    unless they must be copied (another dtype, or masked non-finite values, zeroed in the
    copy so that a NaN does not spread to its neighbours, whose footprints carry its mask bits
    anyway). ``y0``: the first row's index in the input. ``blocks``: whether each
    `_CELL_BLOCK`-square block of ``mask`` has a bit set, so that tiles over a clean part skip
    the mask gather. ``cellType`` and ``outside``: the float type the footprints' bits are
    gathered in, and the value that marks a footprint leaving the input (`_footprints`).
    """

    y0: int
    image: np.ndarray
    variance: np.ndarray
    mask: np.ndarray
    blocks: np.ndarray
    cellType: Any
    outside: float


_CELL_BLOCK = 32
"""Side of the blocks of mask pixels whose 'any bit set' summary lets a tile skip its mask
gather."""

#: Input pixels on each side of a footprint: the cubic B-spline reads pixels ``floor(u) - 1``
#: to ``floor(u) + 2``.
_TAPS = 4


def _blockAny(mask: np.ndarray) -> np.ndarray:
    """Whether any pixel of each `_CELL_BLOCK`-square block of ``mask`` is nonzero."""
    ny, nx = mask.shape
    by, bx = -(-ny // _CELL_BLOCK), -(-nx // _CELL_BLOCK)
    out = np.zeros((by, bx), dtype=bool)
    for row in range(by):
        band = mask[row * _CELL_BLOCK : (row + 1) * _CELL_BLOCK]
        if not band.any():
            continue
        cols = np.flatnonzero(band.any(axis=0))
        out[row, np.unique(cols // _CELL_BLOCK)] = True
    return out


def _floatCopy(array: np.ndarray, region: tuple[slice, slice]) -> np.ndarray:
    dtype = np.float32 if array.dtype == np.float32 else np.float64
    view = array[region]
    if view.dtype == dtype and view.flags.c_contiguous:
        return view
    return np.ascontiguousarray(view, dtype=dtype)


def _allFinite(array: np.ndarray) -> bool:
    return bool(array.size == 0 or (np.isfinite(array.min()) and np.isfinite(array.max())))


def _inputRows(tiles: list[_Tile], ny: int) -> tuple[int, int] | None:
    """The input rows every tile reads (its footprints' rows, grown by a pixel), or None
    when no tile reaches the input."""
    lo, hi = math.inf, -math.inf
    for tile in tiles:
        if not tile.outside and math.isfinite(tile.error):
            v0, v1 = _span(tile.b, tile)
            lo, hi = min(lo, v0), max(hi, v1)
    if not math.isfinite(lo):
        return None
    y0, y1 = max(0, int(lo) - 2), min(ny, int(hi) + 4)
    return (y0, y1) if y1 - y0 >= _TAPS else None


def _prepareInput(mi: MaskedImage, rows: tuple[int, int] | None, name: str) -> _Input | None:
    """Rows ``y0 <= y < y1`` of the input, ready for resampling (None for no rows, or an
    input too small for a footprint)."""
    ny, nx = mi.image.shape
    if rows is None or nx < _TAPS:
        return None
    y0, y1 = rows
    # Whole rows: a view of a C-contiguous array is then contiguous, so nothing is copied for
    # a clean float input (the interpolation would copy a strided one on every call).
    region = (slice(y0, y1), slice(0, nx))
    image = _floatCopy(mi.image, region)
    variance = _floatCopy(mi.variance, region)
    mask = np.ascontiguousarray(mi.mask[region])
    if not (_allFinite(image) and _allFinite(variance)):
        bad = ~np.isfinite(image) | ~np.isfinite(variance)
        unmasked = bad & (mask == 0)
        if unmasked.any():
            yy, xx = np.argwhere(unmasked)[0]
            mx0, my0 = mi.getXY0()
            raise InvalidInputError(
                f"{name}: {int(unmasked.sum())} unmasked pixel(s) are NaN or infinite, the "
                f"first at (x, y) = ({xx + mx0}, {yy + y0 + my0}); mask them or fix them"
            )
        image = np.where(bad, image.dtype.type(0), image)
        variance = np.where(bad, variance.dtype.type(0), variance)
    bits = mask.view(np.uint32)
    used = int(np.bitwise_or.reduce(bits, axis=None)) if bits.size else 0
    # Floats, because the interpolation gathers floats: float32 holds the bits exactly while
    # they stay below 2**23, float64 (up to 2**52) when a mask uses higher planes.
    if used < (1 << 23):
        cellType: Any = np.float32
        outside = float(1 << 23)
    else:
        cellType, outside = np.float64, float(1 << 40)
    return _Input(y0, image, variance, mask, _blockAny(mask), cellType, outside)


def _footprints(source: _Input, ys: slice, xs: slice) -> np.ndarray:
    """The bits of every 4 × 4 block of input pixels in a region, as floats: element
    ``[i, j]`` holds those of pixels ``i..i+3, j..j+3`` (of the region)."""
    m = source.mask[ys, xs].view(np.uint32)
    rows = m[:-3] | m[1:-2] | m[2:-1] | m[3:]
    cells = rows[:, :-3] | rows[:, 1:-2] | rows[:, 2:-1] | rows[:, 3:]
    return np.asarray(cells, dtype=source.cellType)


def _resampleTile(
    tile: _Tile,
    source: _Input,
    image: np.ndarray,
    variance: np.ndarray,
    mask: np.ndarray,
    noPixel: np.ndarray,
    box: tuple[int, int, int, int],
    varianceKind: str,
) -> None:
    """Resample one tile into the output planes (views of the tile are written)."""
    from scipy import ndimage

    bx0, by0, _, _ = box
    rows = slice(tile.y0 - by0, tile.y0 - by0 + tile.height)
    cols = slice(tile.x0 - bx0, tile.x0 - bx0 + tile.width)
    outImage, outVar, outMask = image[rows, cols], variance[rows, cols], mask[rows, cols]
    if tile.outside or not math.isfinite(tile.error):
        noPixel[rows, cols] = True
        return
    # Input array coordinates within the prepared rows: (row, col) = M (i, j) + offset.
    a = tile.a
    b = (tile.b[0] - source.y0, tile.b[1], tile.b[2])
    matrix = np.array([[b[2], b[1]], [a[2], a[1]]])
    offset = np.array([b[0], a[0]])
    shape = (tile.height, tile.width)
    # The cubic B-spline without its interpolating prefilter: a smoothing of the input by a
    # kernel of unit sum, which keeps fluxes (docs/decisions.md D16).
    ndimage.affine_transform(
        source.image, matrix, offset, shape, output=outImage, order=3, mode="constant",
        prefilter=False,
    )  # fmt: skip
    ii = np.arange(tile.height, dtype=outImage.dtype)
    jj = np.arange(tile.width, dtype=outImage.dtype)
    area = np.add.outer(tile.d[0] + tile.d[2] * ii, tile.d[1] * jj)  # the pixel-area ratio J
    outImage *= area
    if varianceKind == "smoothed":
        # A local mean of the variance density: bilinear weights are as good as the spline's
        # for a plane that varies on the scale of the PSF, and take half the time.
        ndimage.affine_transform(
            source.variance, matrix, offset, shape, output=outVar, order=1, mode="constant"
        )
        outVar *= area
    else:
        _pixelVariance(outVar, source.variance, a, b, tile)
    # The footprint of a pixel: the 4 x 4 input pixels from [floor(v) - 1, floor(u) - 1],
    # which order 0 gathers when pointed 1.5 pixels back (it rounds half up); where they
    # leave the input, a marker. A tile whose footprints lie inside the input and hold no bit
    # (most of a clean image) skips the gather.
    (xmin, xmax), (ymin, ymax) = _span(a, tile), _span(b, tile)
    ny, nx = source.mask.shape
    inside = xmin >= 1 and ymin >= 1 and xmax <= nx - 3 and ymax <= ny - 3
    if (
        inside
        and not source.blocks[
            (ymin - 1) // _CELL_BLOCK : (ymax + 2) // _CELL_BLOCK + 1,
            (xmin - 1) // _CELL_BLOCK : (xmax + 2) // _CELL_BLOCK + 1,
        ].any()
    ):
        outMask[...] = 0
        return
    # The footprints of the region the tile reads, clipped to the input (whose true edges
    # are then the region's).
    ys = slice(max(0, ymin - 2), min(ny, ymax + 4))
    xs = slice(max(0, xmin - 2), min(nx, xmax + 4))
    if ys.stop - ys.start < _TAPS or xs.stop - xs.start < _TAPS:
        noPixel[rows, cols] = True
        return
    gathered = ndimage.affine_transform(
        _footprints(source, ys, xs),
        matrix,
        offset - np.array([ys.start + 1.5, xs.start + 1.5]),
        shape,
        order=0,
        mode="grid-constant",
        cval=source.outside,
    )
    outsideCell = gathered == source.outside
    if outsideCell.any():
        noPixel[rows, cols] |= outsideCell
        gathered[outsideCell] = 0.0
    outMask[...] = gathered.astype(np.int64).astype(np.uint32).view(np.int32)


def _span(c: tuple[float, float, float], tile: _Tile) -> tuple[int, int]:
    """The range of ``floor`` of an affine coordinate ``c[0] + c[1] j + c[2] i`` over a tile
    (its extremes are at the corners: it is linear)."""
    values = [
        c[0] + c[1] * jj + c[2] * ii for jj in (0, tile.width - 1) for ii in (0, tile.height - 1)
    ]
    return math.floor(min(values)), math.floor(max(values))


def _splineWeights(t: np.ndarray) -> list[np.ndarray]:
    """The cubic B-spline's weights of the pixels ``floor(u) - 1 .. floor(u) + 2`` for
    ``t = u - floor(u)``; they sum to 1."""
    s = 1.0 - t
    t2 = t * t
    t3 = t2 * t
    return [s * s * s / 6, (3 * t3 - 6 * t2 + 4) / 6, (-3 * t3 + 3 * t2 + 3 * t + 1) / 6, t3 / 6]


def _pixelVariance(
    outVar: np.ndarray,
    variance: np.ndarray,
    a: tuple[float, float, float],
    b: tuple[float, float, float],
    tile: _Tile,
) -> None:
    """``J² Σ w_k² V_k`` over a tile, from the 16 input pixels of each output pixel."""
    ii = np.arange(tile.height, dtype=np.float64)[:, None]
    jj = np.arange(tile.width, dtype=np.float64)[None, :]
    ny, nx = variance.shape
    taps = []
    for c, n in ((a, nx), (b, ny)):
        x = c[0] + c[1] * jj + c[2] * ii
        first = np.floor(x)
        weights = [w * w for w in _splineWeights((x - first).astype(np.float32))]
        first = first.astype(np.intp) - 1
        # A pixel whose taps leave the input is NO_DATA (its variance becomes +inf): any
        # index inside keeps the gather in bounds.
        np.clip(first, 0, n - _TAPS, out=first)
        taps.append((first, weights))
    (iu, wu), (iv, wv) = taps
    flat = variance.ravel()
    index = iv * nx + iu
    total = np.zeros(outVar.shape, dtype=np.float32)
    for dy in range(_TAPS):
        line = np.zeros(outVar.shape, dtype=np.float32)
        for dx in range(_TAPS):
            line += wu[dx] * flat.take(index + dx)
        line *= wv[dy]
        total += line
        index += nx
    area = (tile.d[0] + tile.d[1] * jj + tile.d[2] * ii).astype(np.float32)
    area *= area
    total *= area
    outVar[...] = total


def alignMaskedImage(
    maskedImage: MaskedImage,
    wcs: Any,
    targetWcs: Any,
    box: tuple[int, int, int, int],
    *,
    targetXy0: tuple[int, int] = (0, 0),
    core: tuple[int, int, int, int] | None = None,
    variance: str = "pixel",
    maxMappingError: float = MAX_MAPPING_ERROR,
    nThreads: int | None = None,
    name: str = "image",
) -> AlignedImage:
    """Resample an image onto a box of another pixel grid, flux, variance and mask carried.

    Parameters
    ----------
    maskedImage : `MaskedImage`
        The image to resample; not modified.
    wcs : WCS, FITS header, NDData or path
        Its WCS (anything `readWcs` takes), for its array coordinates.
    targetWcs : WCS, FITS header, NDData or path
        The WCS of the grid to resample onto, for that grid's array coordinates.
    box : (`int`, `int`, `int`, `int`)
        ``(x0, y0, width, height)`` of the output in the target grid's array coordinates
        (``x0``, ``y0`` may be negative or beyond the grid: the grid continues there).
    targetXy0 : (`int`, `int`), optional
        The target grid's origin: the output's ``xy0`` is ``targetXy0 + (x0, y0)``.
    core : (`int`, `int`, `int`, `int`), optional
        The part of ``box`` (same coordinates) over which ``footprintFraction`` is counted;
        all of it by default.
    variance : {"pixel", "smoothed"}, optional
        What the variance plane holds (see the module docstring).
    maxMappingError : `float`, optional
        Largest distance (pixels) allowed between the exact WCS map and the affine map of a
        tile (> 0); tiles are split until they meet it, down to 8 pixels.
    nThreads : `int`, optional
        Threads resampling tiles (by default the CPUs, at most 4).
    name : `str`, optional
        What the image is, for the messages.

    Returns
    -------
    aligned : `AlignedImage`

    Raises
    ------
    InvalidInputError
        Not a `MaskedImage`, no celestial WCS, an empty box, a bad ``variance`` or
        ``maxMappingError``, or unmasked NaN or infinite pixels in the part of the image the
        box maps onto.
    """
    start = time.perf_counter()
    if not isinstance(maskedImage, MaskedImage):
        raise InvalidInputError(f"{name}: expected a MaskedImage, got {type(maskedImage).__name__}")
    if variance not in _VARIANCE_KINDS:
        raise InvalidInputError(
            f"variance: expected one of {', '.join(map(repr, _VARIANCE_KINDS))}, got {variance!r}"
        )
    if not (isinstance(maxMappingError, int | float) and 0 < maxMappingError < math.inf):
        raise InvalidInputError(
            f"maxMappingError: expected a number of pixels > 0, got {maxMappingError!r}"
        )
    fromWcs = readWcs(wcs, f"{name} WCS")
    toWcs = readWcs(targetWcs, "target WCS")
    bx0, by0, bw, bh = (int(v) for v in box)
    if bw <= 0 or bh <= 0:
        raise InvalidInputError(f"box: expected a positive width and height, got {box!r}")
    threads = _defaultThreads() if nThreads is None else max(1, int(nThreads))
    image = np.empty((bh, bw), dtype=maskedImage.image.dtype)
    var = np.empty((bh, bw), dtype=maskedImage.variance.dtype)
    mask = np.zeros((bh, bw), dtype=np.int32)
    noPixel = np.zeros((bh, bw), dtype=bool)
    tiles = _planTiles(toWcs, fromWcs, (bx0, by0, bw, bh), maskedImage.image.shape, maxMappingError)
    source = _prepareInput(maskedImage, _inputRows(tiles, maskedImage.image.shape[0]), name)
    if source is None:
        noPixel[...] = True
    else:
        prepared = source

        def work(tile: _Tile) -> None:
            _resampleTile(tile, prepared, image, var, mask, noPixel, (bx0, by0, bw, bh), variance)

        if threads == 1:
            for tile in tiles:
                work(tile)
        else:
            with ThreadPoolExecutor(threads) as pool:
                list(pool.map(work, tiles))
    blank = bool(noPixel.any())
    if blank:
        image[noPixel] = np.nan
        var[noPixel] = np.inf
        mask[noPixel] |= Mask.getPlaneBitMask("NO_DATA")
    cx0, cy0, cw, ch = (bx0, by0, bw, bh) if core is None else (int(v) for v in core)
    coreView = noPixel[cy0 - by0 : cy0 - by0 + ch, cx0 - bx0 : cx0 - bx0 + cw]
    fraction = 1.0 - float(np.count_nonzero(coreView)) / max(1, coreView.size)
    finite = [t.error for t in tiles if math.isfinite(t.error) and not t.outside]
    worst = max(finite) if finite else 0.0
    tx0, ty0 = targetXy0
    out = MaskedImage(image, mask, var, xy0=(tx0 + bx0, ty0 + by0))
    _log.info(
        "%s resampled onto a %dx%d box in %.2f s: %d tiles, footprint %.1f%%, largest map "
        "error %.2g px",
        name,
        bw,
        bh,
        time.perf_counter() - start,
        len(tiles),
        100.0 * fraction,
        worst,
    )
    return AlignedImage(
        maskedImage=out,
        wcs=_shiftedWcs(toWcs, (bx0, by0, bw, bh)),
        footprintFraction=fraction,
        noPixel=noPixel if blank else None,
        variance=variance,
        maxMappingError=worst,
        nTiles=len(tiles),
    )
