# SPDX-License-Identifier: BSD-3-Clause
"""FFT filtering on grids that do not wrap around: one home for the transforms that the
decorrelation (`psfmatch.decorrelate`) and the detection in difference images
(`psfmatch.detect_and_measure`) share.

Conventions: a small kernel image's centre pixel (index n//2) sits at index 0 of the grid
(`_padCentred`), so its transform is the transfer function of true convolution; an image sits
at the grid's origin, zero-padded, and the grid (`_fftShape`) is large enough that nothing
wraps around into it. Transforms are scipy.fft's (pocketfft) with ``workers`` threads.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
from scipy import fft as scipyFft

from .image import _rowBands


def _fftWorkers(nThreads: int) -> int:
    """scipy.fft's ``workers`` for a psfmatch thread count (0: every core). The 2-D
    transforms are split into 1-D ones across threads: the numbers do not depend on it."""
    return int(nThreads) if nThreads > 0 else (os.cpu_count() or 1)


def _rfft2(a: np.ndarray, nThreads: int = 0, s: tuple[int, int] | None = None) -> np.ndarray:
    return np.asarray(scipyFft.rfft2(a, s=s, workers=_fftWorkers(nThreads)))


def _irfft2(a: np.ndarray, s: tuple[int, int], nThreads: int = 0) -> np.ndarray:
    return np.asarray(scipyFft.irfft2(a, s=s, workers=_fftWorkers(nThreads)))


def _fftShape(*shapes: tuple[int, int]) -> tuple[int, int]:
    """The FFT grid: per axis, at least the sum of the two largest sizes minus one (so that
    nothing wraps around into the image), rounded up to an even size with no prime factor
    above 5 (`scipy.fft.next_fast_len`). The bare sum can have a large prime factor, which
    pocketfft transforms several times slower than a nearby 5-smooth size (4096 + 43 − 1 =
    4138 = 2 · 2069 against 4320; figures in benchmarks/README.md)."""
    sizes = np.sort(np.array(shapes, dtype=np.int64), axis=0)[-2:]
    common = sizes.sum(axis=0) - 1
    return _evenFastLength(int(common[0])), _evenFastLength(int(common[1]))


def _evenFastLength(n: int) -> int:
    """The smallest even size ≥ ``n`` with no prime factor above 5."""
    size = scipyFft.next_fast_len(n, real=True)
    while size % 2:
        size = scipyFft.next_fast_len(size + 1, real=True)
    return int(size)


def _padCentred(array: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Zero-pad ``array`` to ``shape`` with its centre pixel (index n//2) moved to index 0:
    its four quadrants go to the four corners (what a roll of the padded array does,
    without copying the whole grid twice)."""
    out = np.zeros(shape, dtype=np.float64)
    ny, nx = array.shape
    cy, cx = ny // 2, nx // 2
    out[: ny - cy, : nx - cx] = array[cy:, cx:]
    if cx:
        out[: ny - cy, -cx:] = array[cy:, :cx]
    if cy:
        out[-cy:, : nx - cx] = array[:cy, cx:]
    if cy and cx:
        out[-cy:, -cx:] = array[:cy, :cx]
    return out


def _cropCentred(array: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """The inverse of `_padCentred`: the ``shape`` array whose centre pixel was at index 0,
    gathered from the four corners of ``array``."""
    ny, nx = shape
    cy, cx = ny // 2, nx // 2
    out = np.empty(shape, dtype=array.dtype)
    out[cy:, cx:] = array[: ny - cy, : nx - cx]
    if cx:
        out[cy:, :cx] = array[: ny - cy, -cx:]
    if cy:
        out[:cy, cx:] = array[-cy:, : nx - cx]
    if cy and cx:
        out[:cy, :cx] = array[-cy:, -cx:]
    return out


def _spectrumOfSmall(array: np.ndarray, fftShape: tuple[int, int], nThreads: int = 0) -> np.ndarray:
    """``rfft2(_padCentred(array, fftShape))`` without the zero rows' share of the work: the
    rows of a small centred array transformed alone, placed at their wrapped-around rows of
    the half grid, then the transform along the columns (the same two passes rfft2 makes)."""
    ny, nx = array.shape
    cy = ny // 2
    rows = _padCentred(array, (ny, fftShape[1]))  # also rolls the rows; undone below
    rowSpectra = scipyFft.rfft(rows, axis=1, workers=_fftWorkers(nThreads))
    out = np.zeros((fftShape[0], rowSpectra.shape[1]), dtype=np.complex128)
    out[: ny - cy] = rowSpectra[: ny - cy]
    if cy:
        out[-cy:] = rowSpectra[ny - cy :]
    return np.asarray(scipyFft.fft(out, axis=0, workers=_fftWorkers(nThreads), overwrite_x=True))


def _filterImage(
    array: np.ndarray,
    transfer: np.ndarray,
    fftShape: tuple[int, int],
    flagged: np.ndarray | None = None,
    nThreads: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Multiply the FFT of ``array`` (non-finite and ``flagged`` pixels mean-filled, so that
    their values reach no other pixel) by ``transfer`` (an rfft2 half grid of ``fftShape``)
    and transform back: the filtered array (a view of the output grid), and the map of the
    filled pixels."""
    # The image at the grid's origin, zero-padded, written into the grid directly (no other
    # image-sized float64 copy); with the filter centred at index 0 the output's first
    # ny × nx pixels are the filtered image (the grid is large enough that nothing wraps
    # around into them).
    ny, nx = array.shape
    grid = np.zeros(fftShape, dtype=np.float64)
    data = grid[:ny, :nx]
    data[...] = array
    bad = ~np.isfinite(data)
    if flagged is not None:
        bad |= flagged
    if bad.any():
        data[bad] = float(data[~bad].mean()) if (~bad).any() else 0.0
    del data
    return _filterGrid(grid, transfer, (ny, nx), nThreads), bad


def _filterGrid(
    grid: np.ndarray, transfer: np.ndarray, shape: tuple[int, int], nThreads: int = 0
) -> np.ndarray:
    """The first ``shape`` pixels of irfft2(rfft2(grid) · transfer): ``grid`` holds an image
    zero-padded at its origin (it is overwritten), ``transfer`` a filter centred at index 0
    on the rfft2 half grid; the result is a view of the inverse transform's grid."""
    spectrum = scipyFft.rfft2(grid, workers=_fftWorkers(nThreads), overwrite_x=True)
    spectrum *= transfer
    return _irfft2(spectrum, grid.shape, nThreads)[: shape[0], : shape[1]]


def _sumOfSquares(fftShape: tuple[int, int], *factors: np.ndarray) -> float:
    """Σ c(x)² of the real array c = irfft2(C, s=fftShape) whose power |C|² on the rfft2 half
    grid is the product of ``factors`` (real half-grid arrays), by Parseval: the full
    spectrum's Σ|C|² / N, where the half grid holds columns 1 … nx/2 − 1 twice over (nx even,
    as `_fftShape` makes it) and columns 0 and nx/2 once. Summed a band of rows at a time:
    no half-grid temporaries."""
    ny, nx = fftShape
    total = 0.0
    for band in _rowBands(factors[0].shape[0]):
        power = np.array(factors[0][band], dtype=np.float64)
        for f in factors[1:]:
            power *= f[band]
        if nx % 2:
            total += power[:, 0].sum() + 2.0 * power[:, 1:].sum()
        else:
            total += power[:, 0].sum() + power[:, -1].sum() + 2.0 * power[:, 1:-1].sum()
    return float(total / (ny * nx))


#: The FFT length per axis that `_tiling` aims the tiles of `_convolveTiles` at: a row of
#: tiles needs no image-sized buffer, and the overlap of a small kernel's reach costs little.
#: At 4096² with a 39² filter, tiles of 256 to 1024 points (and one float32 transform pair
#: of the whole grid) all took ~0.2 s on the project's 2-core VM.
_TILE_FFT = 512


def _tiling(n: int, k: int) -> tuple[int, int]:
    """Per axis of `_convolveTiles`: the output size ``t`` of a tile and its FFT length
    ``f = t + k − 1`` (5-smooth), for an image of ``n`` pixels and a kernel of ``k``: tiles
    of about `_TILE_FFT` points, or 8k for a large kernel (whose overlap, k − 1 of every f
    points, is then an eighth), as many as needed, each as long as its transform allows."""
    target = max(_TILE_FFT, 8 * k)
    tiles = -(-n // max(target - k + 1, 1))
    size = -(-n // tiles)
    fftLength = int(scipyFft.next_fast_len(size + k - 1, real=True))
    return fftLength - k + 1, fftLength


def _unusableMap(
    array: np.ndarray, mask: np.ndarray | None, maskBits: int
) -> tuple[np.ndarray, float, int]:
    """Where ``array`` is not finite or ``mask`` has a ``maskBits`` bit; the mean of the
    other pixels in float64 (0 if there are none); and how many pixels are unusable. A band
    of rows at a time: the map (1 byte a pixel) is the only image-sized array."""
    unusable = np.empty(array.shape, dtype=bool)
    total, good = 0.0, 0
    for rows in _rowBands(array.shape[0]):
        usable = np.isfinite(array[rows])
        if mask is not None and maskBits:
            usable &= (mask[rows] & maskBits) == 0
        total += float(np.sum(array[rows], where=usable, dtype=np.float64))
        good += int(np.count_nonzero(usable))
        np.logical_not(usable, out=unusable[rows])
    return unusable, (total / good if good else 0.0), array.size - good


def _convolveTiles(
    array: np.ndarray,
    kernel: np.ndarray,
    *,
    mask: np.ndarray | None = None,
    maskBits: int = 0,
    keepUnusable: bool = False,
    nThreads: int = 0,
) -> np.ndarray:
    """True convolution of an image with a small kernel (odd sizes, centre pixel n//2), the
    image's size, zero outside the image: what a zero-padded whole-grid FFT gives, by
    overlap-save on tiles of about `_TILE_FFT`² points, a row of tiles per batched FFT.

    Non-finite pixels and those with a ``maskBits`` bit in ``mask`` are replaced by the mean
    of the others first, so that their values reach no other pixel; with ``keepUnusable``
    they keep their input values in the output. In float32 for a float32 (or narrower)
    ``array``, else float64; no image-sized temporaries besides the output and the map of
    unusable pixels (a byte each).
    """
    ny, nx = array.shape
    ky, kx = kernel.shape
    hy, hx = ky // 2, kx // 2
    dtype = np.result_type(array.dtype, np.float32)
    ty, fy = _tiling(ny, ky)
    tx, fx = _tiling(nx, kx)
    nTilesX = -(-nx // tx)
    workers = _fftWorkers(nThreads)
    kernelSpectrum = scipyFft.rfft2(_padCentred(kernel, (fy, fx)).astype(dtype), workers=workers)
    unusable, fill, nUnusable = _unusableMap(array, mask, maskBits)
    out = np.empty((ny, nx), dtype=dtype)
    # Tile (row y0, column x0) holds the input pixels y0 − hy … y0 − hy + fy − 1 and
    # x0 − hx … x0 − hx + fx − 1, zero outside the image; its circular convolution's pixel
    # (hy + i, hx + j) is the output pixel (y0 + i, x0 + j): the first hy rows and hx
    # columns are the ones that wrap around. A row of tiles is one batched FFT.
    tiles = np.empty((nTilesX, fy, fx), dtype=dtype)
    for y0 in range(0, ny, ty):
        top, bottom = max(y0 - hy, 0), min(y0 - hy + fy, ny)
        rows = min(ty, ny - y0)
        for j, x0 in enumerate(range(0, nx, tx)):
            left, right = max(x0 - hx, 0), min(x0 - hx + fx, nx)
            tile = tiles[j]
            if bottom - top < fy or right - left < fx:
                tile[...] = 0.0
            inside = tile[
                top - (y0 - hy) : bottom - (y0 - hy), left - (x0 - hx) : right - (x0 - hx)
            ]
            inside[...] = array[top:bottom, left:right]
            if nUnusable:
                np.copyto(inside, fill, where=unusable[top:bottom, left:right])
        spectra = scipyFft.rfft2(tiles, workers=workers, overwrite_x=True)
        spectra *= kernelSpectrum
        filtered = scipyFft.irfft2(spectra, s=(fy, fx), workers=workers, overwrite_x=True)
        for j, x0 in enumerate(range(0, nx, tx)):
            cols = min(tx, nx - x0)
            out[y0 : y0 + rows, x0 : x0 + cols] = filtered[j, hy : hy + rows, hx : hx + cols]
        if keepUnusable and nUnusable:
            np.copyto(out[y0 : y0 + rows], array[y0 : y0 + rows], where=unusable[y0 : y0 + rows])
    return out


def _correlateRowBands(
    shape: tuple[int, int],
    kernels: list[np.ndarray],
    fill: Callable[[slice, np.ndarray], None],
    dtype: Any = np.float32,
    nThreads: int = 0,
) -> Iterator[tuple[slice, np.ndarray, np.ndarray]]:
    """Correlate each of several image planes with its own small kernel, a band of rows at a
    time, in ``dtype`` (float32 or float64):

        out_c[y, x] = Σ_{j,i} kernels[c][j, i] · in_c[y + j − ky//2, x + i − kx//2],

    zero outside the image (the kernels are odd-sized, all of one shape). ``fill(rows, dest)``
    writes the input planes' image rows ``rows`` into ``dest`` (``dtype``, shape
    ``(len(kernels), rows, nx)``). Each band (`_tiling` sets its height) is transformed with
    its planes stacked, by overlap-save: the band and ``k − 1`` rows of its neighbours, the
    rows zero-padded so that nothing wraps around; no image-sized array is made. Yields, band
    by band, the output rows (a slice), the filtered planes there and the input planes there,
    ``(len(kernels), rows, nx)`` views of buffers that the next band overwrites. Full-width
    bands rather than `_convolveTiles`' tiles: one transform along each row, no copy of
    overlapping tiles.

    Rounding: an FFT's error is spread over the whole band, so each output is exact to about
    ``10·eps`` of the band's typical |values| of its plane (measured in float32: 1e-6), not of
    its own value.
    """
    ny, nx = shape
    ky, kx = kernels[0].shape
    hy = ky // 2
    rows, fy = _tiling(ny, ky)
    fx = _evenFastLength(nx + kx - 1)
    workers = _fftWorkers(nThreads)
    real = np.dtype(dtype)
    # Correlation: the conjugate transfer functions, computed in float64 and rounded once.
    transfer = np.empty((len(kernels), fy, fx // 2 + 1), dtype=np.result_type(real, np.complex64))
    for c, kernel in enumerate(kernels):
        transfer[c] = np.conj(_spectrumOfSmall(kernel, (fy, fx), nThreads))
    # Band row r holds image row y0 − hy + r; columns nx … fx − 1 stay zero.
    band = np.zeros((len(kernels), fy, fx), dtype=real)
    for y0 in range(0, ny, rows):
        y1 = min(y0 + rows, ny)
        top, bottom = max(y0 - hy, 0), min(y0 - hy + fy, ny)
        first = top - (y0 - hy)
        last = first + bottom - top
        band[:, :first] = 0.0
        band[:, last:] = 0.0
        fill(slice(top, bottom), band[:, first:last, :nx])
        spectrum = scipyFft.rfft2(band, workers=workers)
        spectrum *= transfer
        # The inverse as its two passes, the second over the output rows only: irfft2 in one
        # call was 1.5-2× slower (pocketfft's multi-axis c2r works through a copy).
        spectrum = scipyFft.ifft(spectrum, axis=-2, workers=workers, overwrite_x=True)
        out = slice(hy, hy + y1 - y0)
        filtered = scipyFft.irfft(spectrum[:, out], n=fx, axis=-1, workers=workers)
        del spectrum
        yield slice(y0, y1), filtered[:, :, :nx], band[:, out, :nx]
