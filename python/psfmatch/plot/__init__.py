# SPDX-License-Identifier: BSD-3-Clause
"""Figures of a subtraction: what the reference's debugging switches ask to see, and a report.

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

The package: `psfmatch.plot.kernel` (the candidates and kernel figures),
`psfmatch.plot.difference` (`plotDifference`), `psfmatch.plot.figures` (`FIGURES`,
`writeFigures`), `psfmatch.plot.report` (`writeReport`) and `psfmatch.plot.display`
(`showDebug`); every public name is also here, as ``psfmatch.plot.<name>``.
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

# Also re-exported: MASK_COLOURS (public, documented by plotDifference) and the lazy
# matplotlib import, which `psfmatch subtract --plots` calls to fail before any work.
from ._common import _matplotlib as _matplotlib
from .difference import MASK_COLOURS as MASK_COLOURS
from .difference import plotDifference
from .display import showDebug
from .figures import FIGURES, writeFigures
from .kernel import (
    plotCandidates,
    plotKernelBasis,
    plotKernelCoefficients,
    plotKernelMosaic,
    plotKernelSpatialModel,
)
from .report import writeReport
