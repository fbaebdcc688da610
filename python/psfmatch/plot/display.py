# SPDX-License-Identifier: BSD-3-Clause
"""What the debugging switches draw (`psfmatch.debug`): the figures in windows on a display,
otherwise PNG files."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ._common import _log, _matplotlib
from .figures import FIGURES, _draw


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
