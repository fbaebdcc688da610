# SPDX-License-Identifier: BSD-3-Clause
"""The figure of the difference image: D with its mask planes and the kernel candidates, and
the distribution of D/σ."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .._masks import UNUSABLE_PLANES
from ..errors import InvalidInputError
from ._common import (
    _BAD_COLOUR,
    _GOOD,
    _GOOD_COLOUR,
    _candidateList,
    _differenceNorm,
    _margins,
    _matplotlib,
    _newFigure,
    _require,
)

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
    return np.asarray(np.bitwise_or.reduce(np.bitwise_or.reduce(blocks, axis=3), axis=1))


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
        0 (opaque) to 100 (invisible), as the reference's switch.
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

    from ..image import Mask

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

    unusable = Mask.getPlaneBitMask(list(UNUSABLE_PLANES), skipUnknown=True)
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
