# SPDX-License-Identifier: BSD-3-Clause
"""Figures of a subtraction: what the seed's debugging switches ask to see, and a report.

Needs matplotlib, the ``plot`` extra (``pip install "psfmatch[plot]"``). It is imported only
when a figure is drawn: without it ``import psfmatch`` and every computation work, and asking
for a figure raises `MissingDependencyError` saying what to install.

Every function takes a `SubtractionResult` (or any object with the same attributes:
``kernelCellSet``, ``kernel``, ``background``, ``difference``, ``convolved``) and returns a
`matplotlib.figure.Figure`. The figures are made without `matplotlib.pyplot` (no window, no
global state, rendered by Agg when saved), unless a ``fig`` to draw into is given.

========================== =========================== =====================================
function                   debugging switch            shows
========================== =========================== =====================================
`plotCandidates`           ``displayCandidates``       per candidate: the stamp convolved,
                                                       the stamp matched, the difference with
                                                       its own kernel and with the spatial
                                                       model; frames green (used) or red
                                                       (rejected, ``showBadCandidates``)
`plotKernelBasis`          ``displayKernelBasis``      the basis kernels of the spatial model
`plotKernelMosaic`         ``displayKernelMosaic``     K(x, y) on a grid across the image
`plotKernelSpatialModel`   ``plotKernelSpatialModel``  each coefficient's spatial model over
                                                       the image (and the background's), with
                                                       the candidates' own fits as dots on the
                                                       same colour scale
`plotKernelCoefficients`   ``plotKernelCoefficients``  histograms of the candidates' own
                                                       coefficients and of the spatial model
                                                       at their positions
`plotDifference`           ``displayDiffIm``           the difference image with its mask
                                                       planes overlaid at ``maskTransparency``
                                                       and the candidates marked, and the
                                                       histogram of D/σ against N(0, 1)
========================== =========================== =====================================

Images are scaled as astronomers expect (`astropy.visualization`): zscale limits, an asinh
stretch for star stamps, a linear zscale for difference images, and symmetric limits around
zero on a diverging colour map for kernels.

`writeFigures` saves them all as PNG files and `writeReport` adds a one-page ``report.html``
with the figures, the run's metadata and the candidate table (``psfmatch subtract --plots``).
`showDebug` is what the debugging switches call (`psfmatch.debug`).
"""

from __future__ import annotations

__all__ = [
    "FIGURES",
    "plotCandidates",
    "plotDifference",
    "plotKernelBasis",
    "plotKernelCoefficients",
    "plotKernelMosaic",
    "plotKernelSpatialModel",
    "showDebug",
    "writeFigures",
    "writeReport",
]

import html
import logging
import math
import os
import re
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from . import _core
from .errors import InvalidInputError, MissingDependencyError, OutputExistsError, PsfMatchIOError

_log = logging.getLogger("psfmatch.plot")

_GOOD = _core.KernelCandidate.GOOD
_BAD = _core.KernelCandidate.BAD
_RECENT = _core.KernelCandidate.RECENT

_GOOD_COLOUR = "tab:green"
_BAD_COLOUR = "tab:red"

#: Mask planes drawn by `plotDifference`, in drawing order (later ones on top), and colours.
MASK_COLOURS = {
    "DETECTED": "tab:blue",
    "DETECTED_NEGATIVE": "tab:cyan",
    "INTRP": "tab:olive",
    "SUSPECT": "gold",
    "CR": "magenta",
    "SAT": "lime",
    "BAD": "red",
    "EDGE": "yellow",
    "NO_DATA": "orange",
}

#: Pixels left out of the D/σ histogram of `plotDifference`.
_UNUSABLE_PLANES = ["NO_DATA", "EDGE", "SAT", "BAD", "CR"]


# --------------------------------------------------------------------------------------------
# matplotlib, imported lazily


def _matplotlib() -> Any:
    """The `matplotlib.figure` module, or `MissingDependencyError`."""
    try:
        import matplotlib  # noqa: F401
        import matplotlib.figure
    except ImportError:
        raise MissingDependencyError("psfmatch.plot", "matplotlib", "plot") from None
    return matplotlib.figure


def _newFigure(fig: Any, figsize: tuple[float, float]) -> Any:
    """``fig`` cleared, or a new pyplot-free figure with an Agg canvas."""
    figure = _matplotlib()
    if fig is not None:
        fig.clear()
        return fig
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    new = figure.Figure(figsize=figsize)
    FigureCanvasAgg(new)
    return new


def _grid(n: int) -> tuple[int, int]:
    """(rows, columns) of a near-square grid of ``n`` panels."""
    ncols = max(1, math.ceil(math.sqrt(n)))
    nrows = max(1, math.ceil(n / ncols))
    return nrows, ncols


def _panels(fig: Any, n: int, panelSize: float = 1.6) -> list[Any]:
    """``n`` axes on a near-square grid; the unused cells of the grid are removed."""
    nrows, ncols = _grid(n)
    fig.set_size_inches(max(4.0, ncols * panelSize), max(3.0, nrows * panelSize + 0.6))
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in axes[n:]:
        ax.remove()
    return list(axes[:n])


def _margins(fig: Any, *, top: float = 0.7, bottom: float = 0.3, hspace: float = 0.35) -> None:
    """Fixed margins in inches (a layout engine is too slow for figures of many panels)."""
    width, height = fig.get_size_inches()
    if fig.get_layout_engine() is not None:
        return
    fig.subplots_adjust(
        left=min(0.45, 0.6 / width),
        right=1.0 - min(0.45, 0.3 / width),
        bottom=min(0.45, bottom / height),
        top=1.0 - min(0.45, top / height),
        hspace=hspace,
    )


def _grey(bad: str = "#243447") -> Any:
    """The grey colour map, with undefined (NaN) pixels in a dark slate."""
    import matplotlib

    return matplotlib.colormaps["gray"].with_extremes(bad=bad)


def _maxTicks(n: int, integer: bool = False) -> Any:
    from matplotlib.ticker import MaxNLocator

    return MaxNLocator(n, integer=integer)


def _noTicks(ax: Any) -> None:
    ax.set_xticks([])
    ax.set_yticks([])


# --------------------------------------------------------------------------------------------
# scaling


def _finite(image: np.ndarray) -> np.ndarray:
    values = np.asarray(image, dtype=np.float64)
    return values[np.isfinite(values)]


def _zscaleLimits(image: np.ndarray) -> tuple[float, float]:
    from astropy.visualization import ZScaleInterval

    values = _finite(image)
    if values.size == 0:
        return 0.0, 1.0
    low, high = ZScaleInterval().get_limits(values)
    if not high > low:
        low, high = float(values.min()), float(values.max())
        if not high > low:
            high = low + 1.0
    return float(low), float(high)


def _starNorm(image: np.ndarray) -> Any:
    """zscale's lower limit (the sky) to the peak, asinh stretched: a star and its wings."""
    from astropy.visualization import AsinhStretch, ImageNormalize

    values = _finite(image)
    low, _ = _zscaleLimits(image)
    high = float(values.max()) if values.size else low + 1.0
    if not high > low:
        high = low + 1.0
    return ImageNormalize(vmin=low, vmax=high, stretch=AsinhStretch(a=0.05), clip=True)


def _differenceNorm(image: np.ndarray) -> Any:
    """Linear zscale limits, as a difference image is looked at.

    A plain `matplotlib.colors.Normalize`, not astropy's ``ImageNormalize``: a colour bar
    gives any other norm a "function" scale whose clipping draws the ticks beyond the limits
    (the next round numbers) on top of the end ticks, where their labels overlap.
    """
    from matplotlib.colors import Normalize

    low, high = _zscaleLimits(image)
    return Normalize(vmin=low, vmax=high, clip=True)


def _symmetric(values: list[np.ndarray] | np.ndarray) -> float:
    arrays = values if isinstance(values, list) else [values]
    vmax = max((float(np.nanmax(np.abs(a))) for a in arrays if np.size(a)), default=1.0)
    return vmax if vmax > 0 and math.isfinite(vmax) else 1.0


# --------------------------------------------------------------------------------------------
# what the figures draw from


def _require(source: Any, *names: str) -> list[Any]:
    values = []
    for name in names:
        value = getattr(source, name, None)
        if value is None:
            raise InvalidInputError(
                f"result: the figure needs `{name}`, which {type(source).__name__} does not "
                "have (pass the SubtractionResult of psfmatch.subtract)"
            )
        values.append(value)
    return values


def _stampLabels(source: Any) -> tuple[str, str]:
    """What the candidates' two stamps are: the image convolved and the one matched."""
    return {
        "Template": ("template", "science"),
        "Science": ("science", "template"),
        "Preconvolution": ("template", "science ⊗ PSF"),
    }.get(getattr(source, "convolved", None) or "", ("convolved", "matched"))


def _candidateList(kernelCellSet: Any, showBadCandidates: bool) -> list[Any]:
    """Fitted candidates: the used ones, then (with ``showBadCandidates``) the rejected ones,
    each group by decreasing rating."""
    candidates = [c for c in kernelCellSet.getAllCandidates(ignoreBad=False) if c.isInitialized()]

    def rating(c: Any) -> float:
        value = c.getCandidateRating()
        return -value if math.isfinite(value) else math.inf

    good = sorted((c for c in candidates if c.getStatus() == _GOOD), key=rating)
    bad = sorted((c for c in candidates if c.getStatus() == _BAD), key=rating)
    return good + (bad if showBadCandidates else [])


def _candidateFits(source: Any, showBadCandidates: bool) -> dict[str, np.ndarray]:
    """Positions, statuses and own fits of the candidates, and the spatial model there.

    ``coeffs[j, i]`` is candidate j's own coefficient of basis kernel i (its most recent fit,
    made with the spatial model's basis) and ``model[j, i]`` the spatial model's at its
    position; ``bg`` and ``modelBg`` the same for the background.
    """
    kernelCellSet, kernel, background = _require(source, "kernelCellSet", "kernel", "background")
    nBasis = int(kernel.getNBasisKernels())
    rows: list[tuple[float, float, bool, np.ndarray, float]] = []
    for cand in _candidateList(kernelCellSet, showBadCandidates):
        try:
            solution = cand.getKernelSolution(_RECENT)
            params = np.asarray(solution.getSolution(), dtype=np.float64)
            nFitted = len(solution.getBasisList())
            bg = float(cand.getBackground(_RECENT))
        except Exception:  # a candidate whose fit failed has no solution to show
            continue
        if nFitted != nBasis:
            continue
        rows.append(
            (cand.getXCenter(), cand.getYCenter(), cand.getStatus() == _GOOD, params[:nBasis], bg)
        )
    x = np.array([r[0] for r in rows], dtype=np.float64)
    y = np.array([r[1] for r in rows], dtype=np.float64)
    good = np.array([r[2] for r in rows], dtype=bool)
    coeffs = np.array([r[3] for r in rows], dtype=np.float64).reshape(len(rows), nBasis)
    backgrounds = np.array([r[4] for r in rows], dtype=np.float64)
    model = np.array(
        [
            np.asarray(kernel.getKernelParameters(float(a), float(b)))
            for a, b in zip(x, y, strict=True)
        ],
        dtype=np.float64,
    ).reshape(len(rows), nBasis)
    modelBg = np.array([float(background(float(a), float(b))) for a, b in zip(x, y, strict=True)])
    return {
        "x": x,
        "y": y,
        "good": good,
        "coeffs": coeffs,
        "bg": backgrounds,
        "model": model,
        "modelBg": modelBg,
    }


def _fitsBackground(background: Any) -> bool:
    params = np.asarray(background.getParameters())
    return not (params.size == 1 and params[0] == 0.0)


def _bboxOf(kernel: Any) -> tuple[int, int, int, int]:
    bbox = kernel.getSpatialFunction().getBBox()
    return bbox.getMinX(), bbox.getMinY(), bbox.getMaxX(), bbox.getMaxY()


def _innerRms(diff: Any, half: int) -> float:
    """rms of D/σ over the stamp shrunk by the kernel half-width (where D is defined)."""
    image = np.asarray(diff.image, dtype=np.float64)
    variance = np.asarray(diff.variance, dtype=np.float64)
    if half > 0 and min(image.shape) > 2 * half:
        image = image[half:-half, half:-half]
        variance = variance[half:-half, half:-half]
    ok = np.isfinite(image) & np.isfinite(variance) & (variance > 0)
    return float(np.sqrt(np.mean(image[ok] ** 2 / variance[ok]))) if ok.any() else math.nan


# --------------------------------------------------------------------------------------------
# the figures


def plotCandidates(
    result: Any,
    *,
    showBadCandidates: bool = True,
    maxCandidates: int = 12,
    fig: Any = None,
) -> Any:
    """The kernel candidates' stamps and residuals (the ``displayCandidates`` switch).

    One row per candidate: the stamp that was convolved, the stamp it was matched to, the
    difference with the candidate's own kernel, and the difference with the spatial model
    (kernel and background) evaluated at the candidate. Each difference panel gives the rms of
    D/σ inside the kernel-shrunk stamp. Frames are green for candidates used in the spatial
    fit, red for rejected ones.

    Parameters
    ----------
    result : `SubtractionResult`
        The run (``kernelCellSet``, ``kernel``, ``background``, ``convolved``).
    showBadCandidates : `bool`, optional
        Also show rejected candidates (after the used ones).
    maxCandidates : `int`, optional
        At most this many rows; with ``showBadCandidates`` up to a third of them are kept for
        rejected candidates.
    fig : `matplotlib.figure.Figure`, optional
        Draw into this figure (cleared) instead of a new one.

    Returns
    -------
    fig : `matplotlib.figure.Figure`
        ``4 × nRows`` image axes.

    Raises
    ------
    MissingDependencyError
        Without matplotlib.
    InvalidInputError
        If ``result`` lacks the attributes above, ``maxCandidates < 1``, or no candidate was
        fitted.
    """
    _matplotlib()
    if int(maxCandidates) < 1:
        raise InvalidInputError(f"maxCandidates: expected at least 1, got {maxCandidates}")
    kernelCellSet, kernel, background = _require(result, "kernelCellSet", "kernel", "background")
    candidates = _candidateList(kernelCellSet, showBadCandidates)
    good = [c for c in candidates if c.getStatus() == _GOOD]
    bad = [c for c in candidates if c.getStatus() == _BAD]
    maxN = int(maxCandidates)
    nBad = min(len(bad), max(1, maxN // 3))
    nGoodShown = min(len(good), maxN - nBad)
    nBad = min(len(bad), maxN - nGoodShown)  # rows the used candidates leave free
    chosen = good[:nGoodShown] + bad[:nBad]
    if not chosen:
        raise InvalidInputError("result: no fitted kernel candidate to show")
    convolvedLabel, matchedLabel = _stampLabels(result)
    half = kernel.getDimensions()[0] // 2
    fig = _newFigure(fig, (8.0, 2.0 * len(chosen) + 0.6))
    fig.set_size_inches(8.0, 2.0 * len(chosen) + 0.6)
    axes = fig.subplots(len(chosen), 4, squeeze=False)
    titles = [
        convolvedLabel,
        matchedLabel,
        "difference, own kernel",
        "difference, spatial model",
    ]
    for row, cand in enumerate(chosen):
        x, y = cand.getXCenter(), cand.getYCenter()
        used = cand.getStatus() == _GOOD
        colour = _GOOD_COLOUR if used else _BAD_COLOUR
        convolvedStamp = cand.getTemplateMaskedImage()
        matchedStamp = cand.getScienceMaskedImage()
        local = cand.getDifferenceImage(_RECENT)
        spatial = cand.getDifferenceImage(kernel.computeKernel(x, y), background(x, y))
        # One grey scale for both differences: ±5σ of the matched stamp's median noise.
        sigma = float(np.sqrt(np.nanmedian(np.asarray(matchedStamp.variance, dtype=np.float64))))
        limit = 5.0 * sigma if math.isfinite(sigma) and sigma > 0 else _symmetric(local.image)
        panels = [
            (convolvedStamp.image, _starNorm(convolvedStamp.image), None),
            (matchedStamp.image, _starNorm(matchedStamp.image), None),
            (local.image, None, _innerRms(local, half)),
            (spatial.image, None, _innerRms(spatial, half)),
        ]
        for col, (image, norm, rms) in enumerate(panels):
            ax = axes[row, col]
            if norm is not None:
                ax.imshow(image, origin="lower", cmap="gray", norm=norm, interpolation="nearest")
            else:
                ax.imshow(
                    image,
                    origin="lower",
                    cmap=_grey(),
                    vmin=-limit,
                    vmax=limit,
                    interpolation="nearest",
                )
                ax.text(
                    0.03,
                    0.04,
                    f"rms D/σ {rms:.2f}",
                    transform=ax.transAxes,
                    fontsize=7,
                    color="yellow",
                )
            _noTicks(ax)
            for spine in ax.spines.values():
                spine.set_edgecolor(colour)
                spine.set_linewidth(2.5)
            if row == 0:
                ax.set_title(titles[col], fontsize=9)
        axes[row, 0].set_ylabel(
            f"({x:.0f}, {y:.0f})\n{'used' if used else 'rejected'}", fontsize=8, color=colour
        )
    _margins(fig, top=0.8, bottom=0.15, hspace=0.08)
    nGood = sum(1 for c in candidates if c.getStatus() == _GOOD)
    fig.suptitle(
        f"Kernel candidates: {nGood} used"
        + (f", {len(bad)} rejected" if showBadCandidates else "")
        + f" (showing {len(chosen)})",
        fontsize=10,
    )
    return fig


def plotKernelBasis(result: Any, *, fig: Any = None) -> Any:
    """The basis kernels of the spatial model (the ``displayKernelBasis`` switch).

    Each panel is one basis kernel on a diverging colour map symmetric about zero; the title
    gives its index and sum.

    Parameters
    ----------
    result : `SubtractionResult`, or a kernel or list of `FixedKernel`
        The run (its ``kernel``), a `LinearCombinationKernel`, or the basis itself.
    fig : `matplotlib.figure.Figure`, optional
        Draw into this figure (cleared).

    Returns
    -------
    fig : `matplotlib.figure.Figure`
        One image axes per basis kernel.
    """
    _matplotlib()
    if isinstance(result, list | tuple):
        basis = list(result)
    elif hasattr(result, "getBasisList"):
        basis = list(result.getBasisList())
    else:
        (kernel,) = _require(result, "kernel")
        basis = list(kernel.getBasisList())
    if not basis:
        raise InvalidInputError("result: the kernel basis is empty")
    fig = _newFigure(fig, (6.0, 6.0))
    axes = _panels(fig, len(basis))
    for i, (ax, k) in enumerate(zip(axes, basis, strict=True)):
        image = np.asarray(k.getImage(), dtype=np.float64)
        vmax = _symmetric(image)
        ax.imshow(
            image, origin="lower", cmap="RdBu_r", vmin=-vmax, vmax=vmax, interpolation="nearest"
        )
        ax.set_title(f"{i}: Σ={float(image.sum()):.3g}", fontsize=7)
        _noTicks(ax)
    width, height = basis[0].getWidth(), basis[0].getHeight()
    _margins(fig, hspace=0.3)
    fig.suptitle(f"Kernel basis: {len(basis)} kernels of {width} × {height} pixels", fontsize=10)
    return fig


def plotKernelMosaic(result: Any, *, nx: int = 5, ny: int = 5, fig: Any = None) -> Any:
    """The spatially varying kernel realised on an ``nx × ny`` grid across the image (the
    ``displayKernelMosaic`` switch).

    Panels are laid out as the image is (x to the right, y up), all on one symmetric colour
    scale; each title gives the position and the kernel sum there.

    Parameters
    ----------
    result : `SubtractionResult`
        The run (its ``kernel``).
    nx, ny : `int`, optional
        Grid size, at least 1 each; positions run from edge to edge of the fitted region.
    fig : `matplotlib.figure.Figure`, optional
        Draw into this figure (cleared).

    Returns
    -------
    fig : `matplotlib.figure.Figure`
        ``nx × ny`` image axes and a colour bar.
    """
    _matplotlib()
    for name, value in (("nx", nx), ("ny", ny)):
        if int(value) < 1:
            raise InvalidInputError(f"{name}: expected at least 1, got {value}")
    (kernel,) = _require(result, "kernel")
    minX, minY, maxX, maxY = _bboxOf(kernel)
    xs = np.linspace(minX, maxX, int(nx)) if nx > 1 else np.array([0.5 * (minX + maxX)])
    ys = np.linspace(minY, maxY, int(ny)) if ny > 1 else np.array([0.5 * (minY + maxY)])
    images = [[np.asarray(kernel.computeImage(float(x), float(y))[0]) for x in xs] for y in ys]
    vmax = _symmetric([im for row in images for im in row])
    fig = _newFigure(fig, (1.7 * nx + 1.0, 1.7 * ny + 0.6))
    fig.set_size_inches(1.7 * nx + 1.0, 1.7 * ny + 0.6)
    axes = fig.subplots(int(ny), int(nx), squeeze=False)
    image = None
    sums = []
    for j, y in enumerate(ys):
        for i, x in enumerate(xs):
            ax = axes[int(ny) - 1 - j, i]  # the top row is the highest y
            k = images[j][i]
            sums.append(float(k.sum()))
            image = ax.imshow(
                k, origin="lower", cmap="RdBu_r", vmin=-vmax, vmax=vmax, interpolation="nearest"
            )
            ax.set_title(f"({x:.0f}, {y:.0f}) Σ={sums[-1]:.4f}", fontsize=7)
            _noTicks(ax)
    _margins(fig, hspace=0.3)
    fig.colorbar(image, ax=axes, shrink=0.6, label="kernel value")
    fig.suptitle(f"Kernel across the image: sum {min(sums):.4f} to {max(sums):.4f}", fontsize=10)
    return fig


def _spatialPanel(
    fig: Any,
    ax: Any,
    values: np.ndarray,
    extent: list[float],
    fits: dict[str, np.ndarray],
    own: np.ndarray,
    title: str,
) -> None:
    good = fits["good"]
    data = [values.ravel(), own[good]] if good.any() else [values.ravel()]
    low = min(float(np.nanmin(d)) for d in data if d.size)
    high = max(float(np.nanmax(d)) for d in data if d.size)
    if not high > low:
        low, high = low - 0.5 * abs(low or 1.0), high + 0.5 * abs(high or 1.0)
    image = ax.imshow(
        values, origin="lower", extent=extent, cmap="viridis", vmin=low, vmax=high, aspect="auto"
    )
    if good.any():
        ax.scatter(
            fits["x"][good],
            fits["y"][good],
            c=own[good],
            cmap="viridis",
            vmin=low,
            vmax=high,
            s=22,
            edgecolors=_GOOD_COLOUR,
            linewidths=1.0,
        )
    if (~good).any():
        ax.scatter(
            fits["x"][~good],
            fits["y"][~good],
            c=own[~good],
            cmap="viridis",
            vmin=low,
            vmax=high,
            s=28,
            marker="X",
            edgecolors=_BAD_COLOUR,
            linewidths=1.0,
        )
    ax.set_title(title, fontsize=7)
    _noTicks(ax)  # the panels share the image's axes, labelled once in the title
    colorbar = fig.colorbar(image, ax=ax, shrink=0.8)
    colorbar.locator = _maxTicks(3)
    colorbar.update_ticks()
    colorbar.ax.tick_params(labelsize=6)


def plotKernelSpatialModel(
    result: Any, *, showBadCandidates: bool = True, nGrid: int = 48, fig: Any = None
) -> Any:
    """Each coefficient's spatial model over the image, with the candidates' own fits (the
    ``plotKernelSpatialModel`` switch).

    One panel per basis kernel (and one for the differential background, when it is fitted):
    the image is the spatial model of that coefficient over the fitted region; the dots are
    the candidates' own single-kernel coefficients at their positions, on the same colour
    scale (green edge: used; red cross: rejected, with ``showBadCandidates``). A dot that
    stands out from the image around it is a candidate the spatial model does not follow; the
    title gives the rms of (own fit − model) over the used candidates.

    Parameters
    ----------
    result : `SubtractionResult`
        The run (``kernelCellSet``, ``kernel``, ``background``).
    showBadCandidates : `bool`, optional
        Also mark rejected candidates.
    nGrid : `int`, optional
        The model is evaluated on ``nGrid × nGrid`` points (at least 2).
    fig : `matplotlib.figure.Figure`, optional
        Draw into this figure (cleared).

    Returns
    -------
    fig : `matplotlib.figure.Figure`
        One image axes per coefficient (plus the background), each with a colour bar.
    """
    _matplotlib()
    if int(nGrid) < 2:
        raise InvalidInputError(f"nGrid: expected at least 2, got {nGrid}")
    (kernel, background) = _require(result, "kernel", "background")
    fits = _candidateFits(result, showBadCandidates)
    nBasis = int(kernel.getNBasisKernels())
    minX, minY, maxX, maxY = _bboxOf(kernel)
    xs = np.linspace(minX, maxX, int(nGrid))
    ys = np.linspace(minY, maxY, int(nGrid))
    grid = np.array(
        [[np.asarray(kernel.getKernelParameters(float(x), float(y))) for x in xs] for y in ys]
    )  # (ny, nx, nBasis)
    withBg = _fitsBackground(background)
    extent = [minX - 0.5, maxX + 0.5, minY - 0.5, maxY + 0.5]
    fig = _newFigure(fig, (8.0, 8.0))
    axes = _panels(fig, nBasis + int(withBg), panelSize=2.2)
    _margins(fig, hspace=0.45)
    good = fits["good"]
    for i in range(nBasis):
        resid = fits["coeffs"][good, i] - fits["model"][good, i]
        rms = float(np.sqrt(np.mean(resid**2))) if resid.size else math.nan
        _spatialPanel(
            fig,
            axes[i],
            grid[:, :, i],
            extent,
            fits,
            fits["coeffs"][:, i],
            f"coefficient {i}\nrms(fit − model) {rms:.2g}",
        )
    if withBg:
        bgGrid = np.array([[float(background(float(x), float(y))) for x in xs] for y in ys])
        resid = fits["bg"][good] - fits["modelBg"][good]
        rms = float(np.sqrt(np.mean(resid**2))) if resid.size else math.nan
        _spatialPanel(
            fig,
            axes[nBasis],
            bgGrid,
            extent,
            fits,
            fits["bg"],
            f"background\nrms(fit − model) {rms:.2g}",
        )
    fig.suptitle(
        f"Spatial model of the kernel coefficients (order "
        f"{kernel.getSpatialFunction().getOrder()}) and the candidates' own fits "
        f"({int(good.sum())} used); x, y over [{minX}, {maxX}] × [{minY}, {maxY}]",
        fontsize=10,
    )
    return fig


def plotKernelCoefficients(
    result: Any, *, showBadCandidates: bool = True, bins: int = 15, fig: Any = None
) -> Any:
    """Histograms of the kernel coefficients (the ``plotKernelCoefficients`` switch).

    One panel per basis kernel: the used candidates' own coefficients (filled), the spatial
    model's coefficients at the same positions (black outline) and, with
    ``showBadCandidates``, the rejected candidates' own coefficients (red outline).

    Parameters
    ----------
    result : `SubtractionResult`
        The run (``kernelCellSet``, ``kernel``, ``background``).
    showBadCandidates : `bool`, optional
        Also histogram the rejected candidates.
    bins : `int`, optional
        Bins per histogram (at least 1).
    fig : `matplotlib.figure.Figure`, optional
        Draw into this figure (cleared).

    Returns
    -------
    fig : `matplotlib.figure.Figure`
        One axes per basis kernel.
    """
    _matplotlib()
    if int(bins) < 1:
        raise InvalidInputError(f"bins: expected at least 1, got {bins}")
    (kernel,) = _require(result, "kernel")
    fits = _candidateFits(result, showBadCandidates)
    good = fits["good"]
    if not good.any():
        raise InvalidInputError("result: no used kernel candidate to histogram")
    nBasis = int(kernel.getNBasisKernels())
    fig = _newFigure(fig, (8.0, 8.0))
    axes = _panels(fig, nBasis, panelSize=2.0)
    _margins(fig, hspace=0.45)
    for i, ax in enumerate(axes):
        own = fits["coeffs"][:, i]
        model = fits["model"][good, i]
        values = np.concatenate([own, model])
        low, high = float(values.min()), float(values.max())
        if not high > low:
            low, high = low - 0.5, high + 0.5
        edges = np.linspace(low, high, int(bins) + 1)
        ax.hist(own[good], bins=edges, color=_GOOD_COLOUR, alpha=0.6, label="own fit, used")
        ax.hist(model, bins=edges, histtype="step", color="black", label="spatial model")
        if (~good).any():
            ax.hist(
                own[~good],
                bins=edges,
                histtype="step",
                color=_BAD_COLOUR,
                label="own fit, rejected",
            )
        ax.set_title(f"coefficient {i}", fontsize=7)
        ax.xaxis.set_major_locator(_maxTicks(3))
        ax.yaxis.set_major_locator(_maxTicks(3, integer=True))
        ax.tick_params(labelsize=6)
    axes[0].legend(fontsize=6)
    fig.suptitle(
        f"Kernel coefficients of {int(good.sum())} used"
        + (f" and {int((~good).sum())} rejected" if showBadCandidates else "")
        + " candidates",
        fontsize=10,
    )
    return fig


def _blockReduce(array: np.ndarray, step: int, how: str) -> np.ndarray:
    """Shrink by ``step`` in each direction: NaN-mean (``how="mean"``) or bitwise OR."""
    if step <= 1:
        return array
    ny, nx = array.shape
    ny2, nx2 = -(-ny // step) * step, -(-nx // step) * step
    if how == "mean":
        padded = np.full((ny2, nx2), np.nan)
        padded[:ny, :nx] = array
        blocks = padded.reshape(ny2 // step, step, nx2 // step, step)
        with np.errstate(invalid="ignore"):
            count = np.isfinite(blocks).sum(axis=(1, 3))
            total = np.nansum(blocks, axis=(1, 3))
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)
    padded = np.zeros((ny2, nx2), dtype=array.dtype)
    padded[:ny, :nx] = array
    blocks = padded.reshape(ny2 // step, step, nx2 // step, step)
    return np.bitwise_or.reduce(np.bitwise_or.reduce(blocks, axis=3), axis=1)


def plotDifference(
    result: Any,
    *,
    maskTransparency: float = 80,
    showBadCandidates: bool = True,
    maxPixels: int = 2048,
    fig: Any = None,
) -> Any:
    """The difference image with its mask, and the distribution of D/σ (the ``displayDiffIm``
    switch, with ``maskTransparency``).

    Left: D on a linear zscale, each mask plane that is set anywhere overlaid in its colour
    (`MASK_COLOURS`) at ``maskTransparency``, and the kernel candidates circled (green: used;
    red: rejected, with ``showBadCandidates``). Right: the histogram of D/σ over usable pixels
    (no NO_DATA, EDGE, SAT, BAD or CR bit) against a unit normal, with its mean and robust
    standard deviation: a good subtraction is N(0, 1) away from real variables.

    Parameters
    ----------
    result : `SubtractionResult`
        The run (``difference``; ``kernelCellSet`` to mark the candidates, if present).
    maskTransparency : `float`, optional
        0 (opaque) to 100 (invisible), as the seed's switch.
    showBadCandidates : `bool`, optional
        Also circle rejected candidates.
    maxPixels : `int`, optional
        Images larger than this on a side are shown block-averaged (the mask OR-ed) to fit.
    fig : `matplotlib.figure.Figure`, optional
        Draw into this figure (cleared).

    Returns
    -------
    fig : `matplotlib.figure.Figure`
        Two axes (image, histogram) and a colour bar.
    """
    _matplotlib()
    from astropy.stats import mad_std
    from matplotlib.patches import Patch

    from .image import Mask

    transparency = float(maskTransparency)
    if not (0.0 <= transparency <= 100.0):
        raise InvalidInputError(
            f"maskTransparency: expected 0 (opaque) to 100 (invisible), got {maskTransparency}"
        )
    if int(maxPixels) < 16:
        raise InvalidInputError(f"maxPixels: expected at least 16, got {maxPixels}")
    (difference,) = _require(result, "difference")
    image = np.asarray(difference.image, dtype=np.float64)
    variance = np.asarray(difference.variance, dtype=np.float64)
    mask = np.asarray(difference.mask)
    x0, y0 = difference.getXY0()
    ny, nx = image.shape
    step = max(1, math.ceil(max(ny, nx) / int(maxPixels)))
    shown = _blockReduce(image, step, "mean")
    shownMask = _blockReduce(mask, step, "or")
    extent = [
        x0 - 0.5,
        x0 + step * shown.shape[1] - 0.5,
        y0 - 0.5,
        y0 + step * shown.shape[0] - 0.5,
    ]

    fig = _newFigure(fig, (13.0, 6.0))
    fig.set_size_inches(13.0, 6.0)
    axImage, axHist = fig.subplots(1, 2, width_ratios=[1.6, 1.0])
    _margins(fig, top=0.45, bottom=1.0)
    fig.subplots_adjust(left=0.06, wspace=0.15)
    im = axImage.imshow(
        shown,
        origin="lower",
        cmap="gray",
        norm=_differenceNorm(shown),
        extent=extent,
        interpolation="nearest",
    )
    fig.colorbar(im, ax=axImage, shrink=0.8, label="D")

    from matplotlib.colors import to_rgba

    alpha = 1.0 - transparency / 100.0
    planes = Mask.getMaskPlaneDict()
    overlay = np.zeros(shown.shape + (4,), dtype=np.float32)
    handles = []
    for name, colour in MASK_COLOURS.items():
        if name not in planes:
            continue
        hit = (shownMask & (1 << planes[name])) != 0
        if not hit.any():
            continue
        rgba = to_rgba(colour, alpha)
        overlay[hit] = rgba
        handles.append(Patch(facecolor=rgba, edgecolor="none", label=name))
    if alpha > 0 and handles:
        axImage.imshow(overlay, origin="lower", extent=extent, interpolation="nearest")
    kernelCellSet = getattr(result, "kernelCellSet", None)
    if kernelCellSet is not None:
        for cand in _candidateList(kernelCellSet, showBadCandidates):
            used = cand.getStatus() == _GOOD
            axImage.plot(
                cand.getXCenter(),
                cand.getYCenter(),
                marker="o",
                markersize=9,
                markerfacecolor="none",
                markeredgecolor=_GOOD_COLOUR if used else _BAD_COLOUR,
                linestyle="none",
            )
        handles.append(
            Patch(facecolor="none", edgecolor=_GOOD_COLOUR, label="kernel candidate, used")
        )
        if showBadCandidates:
            handles.append(
                Patch(facecolor="none", edgecolor=_BAD_COLOUR, label="kernel candidate, rejected")
            )
    if handles:
        # Below the axes, under the x label: inside, it hid a corner of the image.
        axImage.legend(
            handles=handles,
            fontsize=7,
            loc="upper center",
            bbox_to_anchor=(0.5, -0.1),
            ncol=min(len(handles), 4),
            frameon=False,
        )
    axImage.set_xlabel("x (pixels)")
    axImage.set_ylabel("y (pixels)")
    axImage.set_title(
        "Difference image"
        + (f" ({step}×{step} binned)" if step > 1 else "")
        + f", mask at transparency {transparency:g}",
        fontsize=10,
    )

    unusable = Mask.getPlaneBitMask(_UNUSABLE_PLANES, skipUnknown=True)
    ok = np.isfinite(image) & np.isfinite(variance) & (variance > 0) & ((mask & unusable) == 0)
    z = image[ok] / np.sqrt(variance[ok])
    edges = np.linspace(-6.0, 6.0, 97)
    if z.size:
        axHist.hist(np.clip(z, -6.0, 6.0), bins=edges, density=True, color="0.4", label="D/σ")
    grid = np.linspace(-6.0, 6.0, 400)
    axHist.plot(
        grid, np.exp(-0.5 * grid**2) / math.sqrt(2 * math.pi), color="tab:red", label="N(0, 1)"
    )
    axHist.set_yscale("log")
    axHist.set_ylim(1e-6, 1.0)
    axHist.set_xlabel("D/σ (usable pixels, clipped at ±6)")
    axHist.set_ylabel("density")
    if z.size:
        axHist.set_title(
            f"mean {float(np.mean(z)):+.3f}, robust σ {float(mad_std(z)):.3f}, {z.size} pixels",
            fontsize=9,
        )
    axHist.legend(fontsize=8)
    return fig


#: The figures: file stem, function, the debugging switch that asks for it, and a caption.
FIGURES: dict[str, tuple[Callable[..., Any], str, str]] = {
    "candidates": (
        plotCandidates,
        "displayCandidates",
        "Kernel candidates: convolved and matched stamps, and the differences with the "
        "candidate's own kernel and with the spatial model (green used, red rejected).",
    ),
    "kernel_basis": (plotKernelBasis, "displayKernelBasis", "The basis of the spatial model."),
    "kernel_mosaic": (
        plotKernelMosaic,
        "displayKernelMosaic",
        "The matching kernel realised across the image, with its sum at each position.",
    ),
    "kernel_spatial_model": (
        plotKernelSpatialModel,
        "plotKernelSpatialModel",
        "Spatial model of each kernel coefficient (and of the background) over the image; "
        "dots are the candidates' own fits on the same colour scale.",
    ),
    "kernel_coefficients": (
        plotKernelCoefficients,
        "plotKernelCoefficients",
        "Histograms of the candidates' own coefficients and of the spatial model at their "
        "positions.",
    ),
    "difference": (
        plotDifference,
        "displayDiffIm",
        "The difference image with its mask planes and the kernel candidates; the histogram "
        "of D/σ against a unit normal.",
    ),
}

_TAKES_SHOW_BAD = {"candidates", "kernel_spatial_model", "kernel_coefficients", "difference"}


def _draw(
    name: str,
    result: Any,
    showBadCandidates: bool,
    maskTransparency: float,
    fig: Any = None,
    maxCandidates: int = 12,
) -> Any:
    function = FIGURES[name][0]
    kwargs: dict[str, Any] = {"fig": fig}
    if name == "candidates":
        kwargs["maxCandidates"] = maxCandidates
    if name in _TAKES_SHOW_BAD:
        kwargs["showBadCandidates"] = showBadCandidates
    if name == "difference":
        kwargs["maskTransparency"] = maskTransparency
    return function(result, **kwargs)


# --------------------------------------------------------------------------------------------
# files and the report


def _prepareDirectory(directory: str | os.PathLike[str], names: list[str], overwrite: bool) -> Path:
    path = Path(directory)
    if path.exists() and not path.is_dir():
        raise PsfMatchIOError(
            f"plots directory {str(path)!r} exists and is not a directory", str(path)
        )
    if not overwrite:
        for name in names:
            target = path / name
            if os.path.lexists(target):
                raise OutputExistsError(
                    f"output file {str(target)!r} exists; pass overwrite=True (--overwrite) to "
                    "replace it",
                    str(target),
                )
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise PsfMatchIOError(
            f"cannot create the plots directory {str(path)!r}: {err}", str(path)
        ) from err
    return path


def writeFigures(
    result: Any,
    directory: str | os.PathLike[str],
    *,
    showBadCandidates: bool = True,
    maskTransparency: float = 80,
    maxCandidates: int = 12,
    dpi: int = 100,
    overwrite: bool = False,
) -> dict[str, Path]:
    """Save every figure of `FIGURES` as ``<directory>/<name>.png``.

    Parameters
    ----------
    result : `SubtractionResult`
        The run.
    directory : path
        Created if missing.
    showBadCandidates, maskTransparency, maxCandidates : optional
        As for the figures.
    dpi : `int`, optional
        Resolution of the PNG files.
    overwrite : `bool`, optional
        Replace existing files; otherwise an existing one is an `OutputExistsError` (raised
        before anything is written).

    Returns
    -------
    paths : `dict` [`str`, `pathlib.Path`]
        The file of each figure, by name.
    """
    _matplotlib()
    path = _prepareDirectory(directory, [f"{n}.png" for n in FIGURES], overwrite)
    return _saveAll(result, path, showBadCandidates, maskTransparency, dpi, maxCandidates)


def _saveAll(
    result: Any,
    path: Path,
    showBadCandidates: bool,
    maskTransparency: float,
    dpi: int,
    maxCandidates: int,
) -> dict[str, Path]:
    paths: dict[str, Path] = {}
    for name in FIGURES:
        fig = _draw(name, result, showBadCandidates, maskTransparency, maxCandidates=maxCandidates)
        target = path / f"{name}.png"
        fig.savefig(target, dpi=dpi)
        paths[name] = target
        _log.info("wrote %s", target)
    return paths


_TIMING_KEY = re.compile(
    r"(Start|End)(Utc|CpuTime|UserTime|SystemTime|MaxResidentSetSize|MinorPageFaults|"
    r"MajorPageFaults|BlockInputs|BlockOutputs|VoluntaryContextSwitches|"
    r"InvoluntaryContextSwitches)$"
)


def _formatValue(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, list):
        return ", ".join(_formatValue(v) for v in value)
    return str(value)


def _metadataItems(metadata: Any) -> list[tuple[str, Any]]:
    if hasattr(metadata, "names"):
        return [(key, metadata[key]) for key in metadata.names()]
    items: list[tuple[str, Any]] = []

    def walk(prefix: str, node: Mapping[str, Any]) -> None:
        for key, value in node.items():
            full = f"{prefix}{key}"
            if isinstance(value, Mapping):
                walk(full + ".", value)
            else:
                items.append((full, value))

    walk("", metadata)
    return items


def _table(
    headers: list[str] | None,
    rows: list[list[str]],
    cls: str,
    rowClasses: list[str] | None = None,
) -> str:
    out = [f'<table class="{cls}">']
    if headers:
        out.append("<thead><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in headers))
        out.append("</tr></thead>")
    out.append("<tbody>")
    for i, row in enumerate(rows):
        rc = f' class="{rowClasses[i]}"' if rowClasses else ""
        out.append(f"<tr{rc}>" + "".join(row) + "</tr>")
    out.append("</tbody></table>")
    return "\n".join(out)


_STYLE = """
body { font-family: sans-serif; margin: 1.5em; max-width: 1400px; }
figure { margin: 1em 0; } figure img { max-width: 100%; border: 1px solid #ccc; }
figcaption { font-size: 0.9em; color: #333; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0; }
td, th { border: 1px solid #ccc; padding: 2px 6px; text-align: left; }
tr.GOOD td.status { color: #1a7f1a; } tr.BAD td.status { color: #c0201e; }
td.num { text-align: right; font-family: monospace; }
.warnings { border: 2px solid #c98a00; background: #fff4d6; padding: 0.3em 1em; margin: 1em 0; }
.warnings h2 { margin: 0.3em 0; font-size: 1.1em; color: #7a4f00; }
.warnings li { margin: 0.2em 0; }
p.no-warnings { color: #1a7f1a; }
"""


def writeReport(
    result: Any,
    directory: str | os.PathLike[str],
    *,
    showBadCandidates: bool = True,
    maskTransparency: float = 80,
    maxCandidates: int = 12,
    dpi: int = 100,
    overwrite: bool = False,
    title: str = "psfmatch subtraction report",
    info: Mapping[str, Any] | None = None,
) -> Path:
    """Write every figure and a one-page ``report.html`` that shows them with the run's
    metadata and the candidate table (``psfmatch subtract --plots DIR``).

    Parameters
    ----------
    result : `SubtractionResult`
        The run.
    directory : path
        Created if missing; gets ``report.html`` and the ``<name>.png`` of each figure.
    showBadCandidates, maskTransparency, maxCandidates, dpi, overwrite : optional
        As for `writeFigures`; ``overwrite`` covers ``report.html`` too.
    title : `str`, optional
        The page's title.
    info : mapping, optional
        Extra lines for the top of the page (e.g. the input files and the command line).

    Returns
    -------
    path : `pathlib.Path`
        The ``report.html`` written.

    Notes
    -----
    The page holds: the warnings logged during the run (``result.warnings``, see
    `psfmatch.subtract`) in a box at the top; ``info``; a summary (kernel sum, convolved
    image, candidates, difference statistics); each figure linked to its PNG with a caption;
    the candidate table (every column of ``result.candidates``); and every metadata key of the
    run with its value (the timing keys of `lsst.utils.timer.timeMethod` in a collapsed
    section).
    """
    _matplotlib()
    names = [f"{n}.png" for n in FIGURES] + ["report.html"]
    path = _prepareDirectory(directory, names, overwrite)
    figures = _saveAll(result, path, showBadCandidates, maskTransparency, dpi, maxCandidates)
    esc = html.escape
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{esc(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{esc(title)}</h1>",
    ]
    # The run's warnings come first: a degraded fit must not hide among the metadata rows.
    warned = list(getattr(result, "warnings", None) or [])
    if warned:
        parts.append(f'<div class="warnings" role="alert"><h2>Warnings ({len(warned)})</h2><ul>')
        parts.extend(f"<li>{esc(str(message))}</li>" for message in warned)
        parts.append("</ul></div>")
    elif hasattr(result, "warnings"):
        parts.append('<p class="no-warnings">No warnings were logged during the run.</p>')
    if info:
        rows = [
            [f"<th>{esc(str(k))}</th>", f"<td>{esc(_formatValue(v))}</td>"] for k, v in info.items()
        ]
        parts.append(_table(None, rows, "info"))

    summary: list[tuple[str, Any]] = []
    metadata = getattr(result, "metadata", None) or {}
    for label, key in (
        ("kernel sum (image centre)", "spatialKernelSum"),
        ("convolved", "convolvedExposure"),
        ("template FWHM (px)", "templatePsfSize"),
        ("science FWHM (px)", "sciencePsfSize"),
        ("candidates used", "nCandidatesGood"),
        ("candidates rejected", "nCandidatesBad"),
        ("condition number", "spatialConditionNum"),
    ):
        if key in metadata:
            summary.append((label, metadata[key]))
    statistics = getattr(result, "statistics", None)
    if callable(statistics):
        for key, value in statistics().items():
            summary.append((key, value))
    if summary:
        parts.append("<h2>Summary</h2>")
        rows = [
            [f"<th>{esc(k)}</th>", f'<td class="num">{esc(_formatValue(v))}</td>']
            for k, v in summary
        ]
        parts.append(_table(["quantity", "value"], rows, "summary"))

    parts.append("<h2>Figures</h2>")
    for name, target in figures.items():
        caption = FIGURES[name][2]
        switch = FIGURES[name][1]
        parts.append(
            f'<figure id="{esc(name)}"><a href="{esc(target.name)}">'
            f'<img src="{esc(target.name)}" alt="{esc(name)}"></a>'
            f"<figcaption><b>{esc(name)}</b> (debug switch <code>{esc(switch)}</code>): "
            f"{esc(caption)}</figcaption></figure>"
        )

    candidates = getattr(result, "candidates", None)
    if candidates is not None:
        parts.append(f"<h2>Kernel candidates ({len(candidates)})</h2>")
        columns = list(candidates.colnames)
        rows = []
        rowClasses = []
        for record in candidates:
            cells = []
            for column in columns:
                value = record[column]
                if isinstance(value, bytes):
                    value = value.decode()
                if isinstance(value, np.generic):
                    value = value.item()
                cls = (
                    "status"
                    if column == "status"
                    else ("num" if isinstance(value, int | float) else "")
                )
                cells.append(f'<td class="{cls}">{esc(_formatValue(value))}</td>')
            rows.append(cells)
            rowClasses.append(str(record["status"]) if "status" in columns else "")
        parts.append(_table(columns, rows, "candidates", rowClasses))

    items = _metadataItems(metadata)
    main = [(k, v) for k, v in items if not _TIMING_KEY.search(k)]
    timing = [(k, v) for k, v in items if _TIMING_KEY.search(k)]

    def metadataRows(pairs: list[tuple[str, Any]]) -> list[list[str]]:
        return [
            [f'<td class="key">{esc(k)}</td>', f"<td>{esc(_formatValue(v))}</td>"] for k, v in pairs
        ]

    parts.append(f"<h2>Metadata ({len(items)} keys)</h2>")
    parts.append(_table(["key", "value"], metadataRows(main), "metadata"))
    if timing:
        parts.append(f"<details><summary>Timing ({len(timing)} keys)</summary>")
        parts.append(_table(["key", "value"], metadataRows(timing), "metadata timing"))
        parts.append("</details>")
    parts.append("</body></html>")
    report = path / "report.html"
    try:
        report.write_text("\n".join(parts) + "\n", encoding="utf-8")
    except OSError as err:
        raise PsfMatchIOError(f"cannot write {str(report)!r}: {err}", str(report)) from err
    _log.info("wrote %s", report)
    return report


# --------------------------------------------------------------------------------------------
# the debugging switches


def _haveDisplay() -> bool:
    """Whether figures can be shown on screen: an interactive matplotlib backend, and on
    Linux a display to show them on."""
    if sys.platform.startswith("linux") and not (
        os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
    ):
        return False
    import matplotlib

    backend = str(matplotlib.get_backend()).lower()
    return backend not in {"agg", "cairo", "pdf", "pgf", "ps", "svg", "template"}


def showDebug(task: Any, *, requests: Any, **data: Any) -> list[Path]:
    """Draw the figures the debugging switches ask for (the default `psfmatch.debug.showDebug`).

    Parameters
    ----------
    task : `Task`
        The task asking; its name prefixes the files.
    requests : `Struct`
        The switches: any of ``displayCandidates``, ``displayKernelBasis``,
        ``displayKernelMosaic``, ``plotKernelSpatialModel``, ``plotKernelCoefficients``,
        ``displayDiffIm`` (true to draw), ``showBadCandidates``, ``maskTransparency``,
        ``plotDir`` and ``maxCandidates``.
    **data
        ``kernelCellSet``, ``spatialKernel``, ``spatialBackground``, ``basisList``,
        ``difference``: what the task has at hand.

    Returns
    -------
    paths : `list` of `pathlib.Path`
        The files written (empty when the figures were shown on a display).

    Notes
    -----
    On a display (an interactive matplotlib backend) the figures open in windows without
    blocking; call ``matplotlib.pyplot.show()`` at the end of your script to keep them.
    Otherwise each is rendered by Agg into ``plotDir`` (default ``./psfmatch-debug``) as
    ``<task name>-<figure>-<n>.png``, with ``n`` the first number not already used.
    """
    _matplotlib()
    source = _DebugSource(data, task)
    wanted = [name for name, (_, switch, _) in FIGURES.items() if getattr(requests, switch, False)]
    if not wanted:
        return []
    showBad = bool(getattr(requests, "showBadCandidates", False))
    maxCandidates = int(getattr(requests, "maxCandidates", 12) or 12)
    transparency = float(getattr(requests, "maskTransparency", 0) or 0)
    display = _haveDisplay()
    directory = Path(getattr(requests, "plotDir", None) or "psfmatch-debug")
    taskName = task.getName() if hasattr(task, "getName") else type(task).__name__
    log = getattr(task, "log", _log)
    paths: list[Path] = []
    for name in wanted:
        if display:
            import matplotlib.pyplot as plt

            fig = _draw(
                name, source, showBad, transparency, fig=plt.figure(), maxCandidates=maxCandidates
            )
            fig.canvas.manager.set_window_title(f"psfmatch {taskName}: {name}")
            plt.show(block=False)
            plt.pause(0.001)
            continue
        fig = _draw(name, source, showBad, transparency, maxCandidates=maxCandidates)
        directory.mkdir(parents=True, exist_ok=True)
        n = 0
        while (target := directory / f"{taskName}-{name}-{n}.png").exists():
            n += 1
        fig.savefig(target, dpi=100)
        log.info("Debug figure %s written to %s", name, target)
        paths.append(target)
    return paths


class _DebugSource:
    """What a task hands `showDebug`, under the attribute names the figures read."""

    def __init__(self, data: Mapping[str, Any], task: Any) -> None:
        self.kernelCellSet = data.get("kernelCellSet")
        self.kernel = data.get("spatialKernel")
        self.background = data.get("spatialBackground")
        self.difference = data.get("difference")
        metadata = getattr(task, "metadata", None)
        self.convolved = (
            metadata["convolvedExposure"]
            if metadata is not None and "convolvedExposure" in metadata
            else None
        )
