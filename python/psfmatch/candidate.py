# SPDX-License-Identifier: BSD-3-Clause
"""KernelCandidate: one star's stamp pair and the kernel that matches them."""

from __future__ import annotations

import math
from typing import Any

from . import _core
from .config import PsfMatchConfig, makeKernelControl
from .convolution import _checkFinite
from .errors import InvalidInputError
from .image import MaskedImage

__all__ = ["ImageStatistics", "KernelCandidate", "toControl"]


def toControl(config: Any) -> Any:
    """A ``KernelControl`` from a `PsfMatchConfig` (or the control itself, unchanged)."""
    if isinstance(config, _core.KernelControl):
        return config
    if isinstance(config, PsfMatchConfig):
        return makeKernelControl(config)
    raise InvalidInputError(
        f"config: expected a PsfMatchConfig or KernelControl, got {type(config).__name__}"
    )


class KernelCandidate(_core.KernelCandidate):
    """A template stamp and a science stamp around one star (docs/algorithm.md §1.1).

    Parameters
    ----------
    x, y : `float`
        The star's position in parent coordinates; the spatial model is evaluated here.
    templateMaskedImage, scienceMaskedImage : `MaskedImage`
        The stamps: the template is convolved to match the science stamp. Same shape and
        origin; every pixel finite (the per-candidate fit does not look at mask bits, so a
        stamp with unusable pixels should not become a candidate).
    config : `PsfMatchConfig` or ``KernelControl``
        The fit settings; a copy is kept.
    rating : `float`, optional
        Orders candidates within a cell (larger first). By default, the mean of
        image·sqrt(1/variance) over the science stamp's core of radius ``candidateCoreRadius``;
        if that is not finite the candidate starts BAD.

    Raises
    ------
    InvalidInputError
        If the stamps are not MaskedImages, differ in shape or origin, or hold NaN/inf.

    Notes
    -----
    Solution selectors are ``KernelCandidate.ORIG``, ``PCA`` and ``RECENT``; status values are
    ``KernelCandidate.BAD``, ``GOOD`` and ``UNKNOWN``.

    This constructor keeps a copy of the stamps (in double precision). The candidates of
    `ImagePsfMatchTask`'s cell set keep none: they read their stamps from the task's working
    images when a fit or a residual needs them, as LSST's stamps are views of their parent
    images; those working images are the inputs' own planes (read-only views) unless the task
    had to copy them (masked non-finite pixels, rescaled variance). Either way
    ``getTemplateMaskedImage`` and ``getScienceMaskedImage`` return a new copy on each call.
    """

    def __init__(
        self,
        x: float,
        y: float,
        templateMaskedImage: MaskedImage,
        scienceMaskedImage: MaskedImage,
        config: Any,
        *,
        rating: float | None = None,
    ) -> None:
        for name, mi in (
            ("templateMaskedImage", templateMaskedImage),
            ("scienceMaskedImage", scienceMaskedImage),
        ):
            if not isinstance(mi, MaskedImage):
                raise InvalidInputError(f"{name}: expected a MaskedImage, got {type(mi).__name__}")
            _checkFinite(mi, name, 0)
        if templateMaskedImage.image.shape != scienceMaskedImage.image.shape:
            raise InvalidInputError(
                f"stamps differ in shape: template {templateMaskedImage.image.shape}, "
                f"science {scienceMaskedImage.image.shape}"
            )
        if templateMaskedImage.getXY0() != scienceMaskedImage.getXY0():
            raise InvalidInputError(
                f"stamps differ in origin: template {templateMaskedImage.getXY0()}, "
                f"science {scienceMaskedImage.getXY0()}"
            )
        if not (math.isfinite(x) and math.isfinite(y)):
            raise InvalidInputError(f"candidate position must be finite, got ({x}, {y})")
        super().__init__(
            float(x),
            float(y),
            templateMaskedImage,
            scienceMaskedImage,
            toControl(config),
            math.nan if rating is None else float(rating),
        )

    @staticmethod
    def _stampPlanes(template: MaskedImage, science: MaskedImage) -> Any:
        """The planes of two checked images (one grid, every pixel finite), for `_fromPlanes`.

        Candidates made from them read their stamps from these arrays when a fit or a
        residual needs them, as LSST's stamps are views of their parent images: nothing is
        copied, and the arrays are held until the last such candidate is gone. Changing the
        arrays' pixels afterwards changes what those candidates see.
        """
        if template.getXY0() != science.getXY0():
            raise InvalidInputError(
                f"images differ in origin: template {template.getXY0()}, science {science.getXY0()}"
            )
        return _core.StampPlanes(
            template.image,
            template.mask,
            template.variance,
            science.image,
            science.mask,
            science.variance,
            template.getXY0(),
        )

    @classmethod
    def _fromPlanes(
        cls,
        x: float,
        y: float,
        planes: Any,
        box: Any,
        control: Any,
        rating: float,
    ) -> KernelCandidate:
        """The candidate whose stamps are ``box`` (parent coordinates) of ``planes``
        (`_stampPlanes`).

        For `ImagePsfMatchTask`, whose working images are already checked: no per-stamp
        Python objects, copies or checks as in the constructor, and no stamp kept in the
        candidate (a thousand candidates' double stamps of 43² would be 73 MB, 4.4 bytes per
        pixel of a 4096² image). InvalidInputError for a box outside the planes.
        """
        self = cls.__new__(cls)
        _core.KernelCandidate.__init__(self, x, y, planes, box, control, rating)
        return self


class ImageStatistics(_core.ImageStatistics):
    """Statistics of x·sqrt(1/var) over unmasked pixels (docs/algorithm.md §3.6).

    Parameters
    ----------
    config : `PsfMatchConfig` or ``KernelControl``
        Gives ``badMaskPlanes`` and the residual thresholds of ``evaluateQuality``.
    """

    def __init__(self, config: Any) -> None:
        self._control = toControl(config)
        super().__init__(self._control)

    def evaluateQuality(self, config: Any = None) -> bool:
        """Whether the residuals pass the mean and rms thresholds of ``config``."""
        return bool(super().evaluateQuality(self._control if config is None else toControl(config)))
