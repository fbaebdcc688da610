# SPDX-License-Identifier: BSD-3-Clause
"""The figures of the kernel fit: the candidates' stamps and residuals, the basis, the kernel
across the image, and the coefficients' spatial model and histograms."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..errors import InvalidInputError
from ._common import (
    _BAD,
    _BAD_COLOUR,
    _GOOD,
    _GOOD_COLOUR,
    _RECENT,
    _candidateList,
    _grey,
    _margins,
    _matplotlib,
    _maxTicks,
    _newFigure,
    _noTicks,
    _panels,
    _require,
    _stampLabels,
    _starNorm,
    _symmetric,
)


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
