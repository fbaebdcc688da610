# SPDX-License-Identifier: BSD-3-Clause
"""The list of figures (`FIGURES`), drawing one by name, and saving them all as PNG files."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import OutputExistsError, PsfMatchIOError
from ._common import _log, _matplotlib
from .difference import plotDifference
from .kernel import (
    plotCandidates,
    plotKernelBasis,
    plotKernelCoefficients,
    plotKernelMosaic,
    plotKernelSpatialModel,
)

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
