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
    grid = []
    for n in common:
        size = scipyFft.next_fast_len(int(n), real=True)
        while size % 2:
            size = scipyFft.next_fast_len(size + 1, real=True)
        grid.append(int(size))
    return grid[0], grid[1]


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
