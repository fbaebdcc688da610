# SPDX-License-Identifier: BSD-3-Clause
"""Simulated template/science image pairs with a known answer.

`simulatePair` renders a field of stars twice, once through a template PSF and once through a
(spatially varying) science PSF, scales the science photometry by a known factor, adds a
known differential background, transients and variable stars, and adds Gaussian noise whose
variance is stored in the variance planes. Everything a subtraction should recover is returned
beside the images in a `SimulationTruth`: the kernel sum, the background ``b(x, y)``, the
matching kernel, the FWHMs and the noise-free images.

The renderer is independent of psfmatch's convolution code: each star is an analytic Gaussian
integrated over the pixels of a small stamp around it (``erf`` differences per axis for round
and axis-aligned PSFs, sub-pixel sampling for rotated ones), and the stamps are added into the
image. Because both images hold *pixel-integrated* Gaussians of the same positions, the science
image is exactly the template convolved with the continuous Gaussian matching kernel (times
the flux scale) plus the background; see `SimulationTruth.matchingKernelImage` for how well a
sampled kernel reproduces that.

`tangentWcs` makes the WCSs of pairs on two pixel grids (``simulatePair(templateWcs=...)``,
`psfmatch.simulate.wcs`).

`compareToTruth` holds a subtraction of the pair to that answer, as ``psfmatch demo`` does:
the kernel sum, the noise of the difference image away from the sources and the transients'
fluxes measured in it, each against a threshold.

The steps of a pair, which `simulatePair` sequences, each in its module: the arguments
checked (`~psfmatch.simulate.arguments`); the stars, variables and transients drawn, each from
its own random stream (`~psfmatch.simulate.sources`); their images rendered, the background,
noise and masks (`~psfmatch.simulate.images`); the answer (`~psfmatch.simulate.truth`). The PSF
model and the pixel-integrated rendering are shared with `psfmatch.psf` (``_psfmodel``).

`simulateCompositePair` renders a pair through two `CompositePsfModel` PSFs instead: sums of
elliptical Gaussians rotated as a whole, such as a core with six diffraction spikes at two roll
angles, for which neither PSF is a blurred version of the other (cross-convolution's case).

Conventions are the package's: ``x`` is the column, ``y`` the row, arrays are ``[y, x]``,
positions are in parent coordinates with pixel centres at integers.
"""

from __future__ import annotations

__all__ = [
    "CompositePsfModel",
    "GaussianPsfModel",
    "SimulationTruth",
    "TruthComparison",
    "compareToTruth",
    "simulateCompositePair",
    "simulatePair",
    "tangentWcs",
]

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .._psfmodel import GaussianPsfModel
    from .compare import TruthComparison, compareToTruth
    from .composite import CompositePsfModel, simulateCompositePair
    from .pair import simulatePair
    from .truth import SimulationTruth
    from .wcs import tangentWcs

#: Where each public name lives, imported on first use: ``psfmatch demo``'s command line needs
#: `compare`'s tolerances for its help text, not the renderer (scipy.special, the task) that
#: `pair` imports.
_LAZY = {
    "CompositePsfModel": "psfmatch.simulate.composite",
    "GaussianPsfModel": "psfmatch._psfmodel",
    "SimulationTruth": "psfmatch.simulate.truth",
    "TruthComparison": "psfmatch.simulate.compare",
    "compareToTruth": "psfmatch.simulate.compare",
    "simulateCompositePair": "psfmatch.simulate.composite",
    "simulatePair": "psfmatch.simulate.pair",
    "tangentWcs": "psfmatch.simulate.wcs",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
