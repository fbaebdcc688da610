# SPDX-License-Identifier: BSD-3-Clause
"""Ready-made configurations for particular kinds of image pairs.

Snaps
-----
Two exposures taken back to back ("snaps") share the sky, the pointing and nearly the PSF:
the matching kernel is close to a delta function, constant over the image, and there is no
differential background. The reference's former SnapPsfMatchTask (docs/algorithm.md §7.8) matched
them with a small, spatially constant kernel; `SnapPsfMatchConfig` is its configuration for
`ImagePsfMatchTask`:

- both bases: spatial kernel order 0, no background fit, kernel size 7, no spatial clipping;
- Alard–Lupton (`SnapPsfMatchConfigAL`): 2 Gaussians of σ = 1.0 and 2.5 pixels with
  polynomial degrees 4 and 2;
- delta functions (`SnapPsfMatchConfigDF`): no regularization, a PCA basis of 5 components
  (the mean kernel and four eigen-kernels).

psfmatch also turns ``scaleByFwhm`` off for the Alard–Lupton snap basis. With it on (the
default) the widths and the kernel size would be derived from the two FWHMs and the size
clamped to ``kernelSizeMin`` = 21, so the 7-pixel kernel and the widths above would never be
used — which is what happened in the reference. The overrides apply to both kernel choices,
not only to the one active when the config is made.
"""

from __future__ import annotations

__all__ = [
    "SnapPsfMatchConfig",
    "SnapPsfMatchConfigAL",
    "SnapPsfMatchConfigDF",
    "makeSnapConfig",
]

import lsst.pex.config as pexConfig

from .config import PsfMatchConfig, PsfMatchConfigAL, PsfMatchConfigDF
from .errors import InvalidInputError
from .image_psf_match import ImagePsfMatchConfig


def _setSnapDefaults(config: PsfMatchConfig) -> None:
    """The settings shared by both snap bases (§7.8)."""
    # The PSFs of two snaps differ by little and not across the image.
    config.spatialKernelOrder = 0
    # Same sky in both: no differential background.
    config.fitForBackground = False
    config.kernelSize = 7
    # With a constant kernel there is nothing for spatial clipping to find.
    config.spatialKernelClipping = False


class SnapPsfMatchConfigAL(PsfMatchConfigAL):
    """Alard–Lupton kernel configuration for matching snaps (see the module docstring)."""

    def setDefaults(self) -> None:
        super().setDefaults()
        _setSnapDefaults(self)
        self.alardNGauss = 2
        self.alardDegGauss = (4, 2)
        self.alardSigGauss = (1.0, 2.5)
        self.scaleByFwhm = False


class SnapPsfMatchConfigDF(PsfMatchConfigDF):
    """Delta-function kernel configuration for matching snaps (see the module docstring)."""

    def setDefaults(self) -> None:
        super().setDefaults()
        _setSnapDefaults(self)
        self.useRegularization = False
        self.usePcaForSpatialKernel = True
        self.subtractMeanForPca = True
        self.numPrincipalComponents = 5


class SnapPsfMatchConfig(ImagePsfMatchConfig):
    """`ImagePsfMatchTask` configuration for subtracting two snaps.

    Examples
    --------
    Two snaps: the same PSF and photometry, no background change.

    >>> from psfmatch import ImagePsfMatchTask
    >>> from psfmatch.simulate import simulatePair
    >>> snaps = simulatePair((256, 256), nStars=60, seed=1, scienceSigma=1.6, fluxScale=1.0,
    ...                      background=0.0, nTransients=0)
    >>> config = SnapPsfMatchConfig()
    >>> config.kernel.name = "DF"
    >>> task = ImagePsfMatchTask(config=config)
    >>> result = task.subtractMaskedImages(snaps.template, snaps.science)
    >>> abs(result.psfMatchingKernel.getSum(128.0, 128.0) - 1.0) < 0.03
    True
    """

    kernel = pexConfig.ConfigChoiceField(
        doc="The kernel basis and fit: Alard-Lupton (AL) or delta functions (DF), snap settings.",
        typemap={"AL": SnapPsfMatchConfigAL, "DF": SnapPsfMatchConfigDF},
        default="AL",
    )

    def setDefaults(self) -> None:
        super().setDefaults()
        # ImagePsfMatchConfig turns the background fit on for both bases; snaps need none.
        for name in ("AL", "DF"):
            self.kernel[name].fitForBackground = False


def makeSnapConfig(kind: str = "AL") -> SnapPsfMatchConfig:
    """A `SnapPsfMatchConfig` with the ``kind`` kernel basis selected.

    Parameters
    ----------
    kind : {"AL", "DF"}, optional
        Alard–Lupton or delta-function basis.

    Returns
    -------
    config : `SnapPsfMatchConfig`
        For `ImagePsfMatchTask`.

    Raises
    ------
    InvalidInputError
        For any other ``kind``.
    """
    if kind not in ("AL", "DF"):
        raise InvalidInputError(f"kind: expected 'AL' or 'DF', got {kind!r}")
    config = SnapPsfMatchConfig()
    config.kernel.name = kind
    return config
