# SPDX-License-Identifier: BSD-3-Clause
"""What the figures of `psfmatch.plot` share: matplotlib, imported lazily (a missing one is a
`MissingDependencyError` saying what to install), the layout helpers, the image scalings and the
candidates the figures draw from."""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np

from .. import _core
from ..errors import InvalidInputError, MissingDependencyError

_log = logging.getLogger("psfmatch.plot")

_GOOD = _core.KernelCandidate.GOOD
_BAD = _core.KernelCandidate.BAD
_RECENT = _core.KernelCandidate.RECENT

_GOOD_COLOUR = "tab:green"
_BAD_COLOUR = "tab:red"


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
        "CrossConvolution": ("template ⊗ science PSF", "science ⊗ template PSF"),
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
