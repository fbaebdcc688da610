# SPDX-License-Identifier: BSD-3-Clause
"""The subtraction modes of `ImagePsfMatchTask`, one small class each, and the hand-off from
the kernel fit to the convolution and subtraction (`_Subtraction`).

A mode says which image is convolved (the *target*) to match which (the *reference*), the
FWHMs the basis is built for, what the raw difference's PSF is and what else the result
carries. ``convolveTemplate`` (`_ConvolveTemplate`) and ``convolveScience``
(`_ConvolveScience`) are the two directions of the Alard–Lupton fit; the score image
(``preconvolve``, `_Preconvolve`) is the template direction with the science image first
convolved with its own PSF, so it is a subclass of `_ConvolveTemplate`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from . import _core
from ._inputs import _medianFilled
from ._psfutil import _convolveSmall
from .convolution import convolve
from .errors import InvalidInputError
from .image import MaskedImage
from .make_kernel import KernelFit, PsfSizes

if TYPE_CHECKING:
    from .subtract_images import ImagePsfMatchTask


@dataclass(frozen=True, eq=False)
class _Arrangement:
    """Which image a mode convolves (``target``) to match which (``reference``), the FWHMs the
    basis is built for, the images the kernel sources are cut from, and for a score image its
    preconvolution kernel and the inner box where the preconvolution is a matched filter."""

    template: MaskedImage
    target: MaskedImage
    reference: MaskedImage
    targetFwhm: float
    referenceFwhm: float
    stampImage: MaskedImage
    preConvKernel: np.ndarray | None = None
    innerBox: Any = None


class _ConvolveTemplate:
    """``S ≈ K ⊗ T + b``: D = S − (K ⊗ T + b), with the science image's PSF."""

    name: ClassVar[str] = "convolveTemplate"
    convolvedName: ClassVar[str] = "Template"  # metadata convolvedExposure
    description: ClassVar[str] = "template"
    #: The science image is the one convolved (D is divided by κ to stay in science units).
    convolvesScience: ClassVar[bool] = False
    #: The template's pixels beyond the science box feed the convolution at its edges.
    convolvesWideTemplate: ClassVar[bool] = True
    #: D is a score image (already matched-filtered).
    isScore: ClassVar[bool] = False

    def arrange(
        self,
        task: ImagePsfMatchTask,
        template: MaskedImage,
        science: MaskedImage,
        sizes: PsfSizes,
        sciencePsf: np.ndarray,
    ) -> _Arrangement:
        return _Arrangement(template, template, science, sizes.template, sizes.science, science)

    def differencePsf(self, fit: _Subtraction) -> np.ndarray:
        """The PSF of the raw difference: that of the image that was not convolved."""
        return fit.sciencePsf

    def resultExtras(self, fit: _Subtraction) -> dict[str, Any]:
        return {}


class _ConvolveScience(_ConvolveTemplate):
    """``T ≈ K ⊗ S + b``: D = (K ⊗ S + b − T)/κ, with the template's PSF."""

    name = "convolveScience"
    convolvedName = "Science"
    description = "science image"
    convolvesScience = True
    convolvesWideTemplate = False

    def arrange(
        self,
        task: ImagePsfMatchTask,
        template: MaskedImage,
        science: MaskedImage,
        sizes: PsfSizes,
        sciencePsf: np.ndarray,
    ) -> _Arrangement:
        return _Arrangement(template, science, template, sizes.science, sizes.template, science)

    def differencePsf(self, fit: _Subtraction) -> np.ndarray:
        return fit.templatePsf


class _Preconvolve(_ConvolveTemplate):
    """The score image (§7.4): ``P ⊗ S ≈ K ⊗ T + b`` with P the science PSF, reflected."""

    name = "preconvolve"
    convolvedName = "Preconvolution"
    description = "science image with its PSF and the template to that"
    convolvesWideTemplate = False
    isScore = True

    def arrange(
        self,
        task: ImagePsfMatchTask,
        template: MaskedImage,
        science: MaskedImage,
        sizes: PsfSizes,
        sciencePsf: np.ndarray,
    ) -> _Arrangement:
        # Convolving with the reflected PSF correlates with the PSF.
        preConvKernel = sciencePsf[::-1, ::-1].copy()
        badBits = task._badBits()
        template = _medianFilled(template, badBits)
        with task.timer("preconvolve"):
            reference = convolve(
                _medianFilled(science, badBits),
                _core.FixedKernel(preConvKernel),
                doCopyEdge=True,
                nThreads=task.kConfig.nThreads,
            )
        referenceFwhm = math.sqrt(2.0) * sizes.science
        task.metadata["preconvolvedSciencePsfSize"] = referenceFwhm
        bbox = science.getBBox()
        hy, hx = preConvKernel.shape[0] // 2, preConvKernel.shape[1] // 2
        if bbox.getWidth() <= 2 * hx or bbox.getHeight() <= 2 * hy:
            raise InvalidInputError(
                f"sciencePsf: the preconvolution kernel ({preConvKernel.shape[1]} x "
                f"{preConvKernel.shape[0]}) leaves no pixels of the {bbox.getWidth()} x "
                f"{bbox.getHeight()} image"
            )
        innerBox = _core.Box2I(
            (bbox.getMinX() + hx, bbox.getMinY() + hy),
            (bbox.getWidth() - 2 * hx, bbox.getHeight() - 2 * hy),
        )
        # The stamps are cut from the preconvolved science image, whose border carries EDGE.
        return _Arrangement(
            template,
            template,
            reference,
            sizes.template,
            referenceFwhm,
            reference,
            preConvKernel,
            innerBox,
        )

    def differencePsf(self, fit: _Subtraction) -> np.ndarray:
        assert fit.preConvKernel is not None
        return _convolveSmall(fit.sciencePsf, fit.preConvKernel)

    def resultExtras(self, fit: _Subtraction) -> dict[str, Any]:
        return {"matchedScience": fit.reference, "preConvKernel": fit.preConvKernel}


_MODES: dict[str, _ConvolveTemplate] = {
    mode.name: mode() for mode in (_ConvolveTemplate, _ConvolveScience, _Preconvolve)
}


@dataclass(eq=False)
class _Subtraction:
    """The hand-off from the fit to the convolution, the subtraction and what follows.

    ``template`` and ``science`` are the working images on the science box (the template
    median-filled for a score image); ``target`` is convolved to match ``reference``. With a
    template placed on the science box: ``templateFull`` (the whole template, for its
    detections), ``templateVarianceFactor`` (what its variance was scaled by),
    ``templateWide`` (the template on the science box plus the kernel's margin: what is
    convolved) and ``uncovered`` (the science pixels it does not reach).
    """

    mode: str
    template: MaskedImage
    science: MaskedImage
    target: MaskedImage
    reference: MaskedImage
    kernel: KernelFit
    templateFwhm: float
    scienceFwhm: float
    sciencePsf: np.ndarray
    templatePsf: np.ndarray
    preConvKernel: np.ndarray | None = None
    innerBox: Any = None
    templateDiaDetections: np.ndarray | None = None
    templateFull: MaskedImage | None = None
    templateVarianceFactor: float | None = None
    templateWide: MaskedImage | None = None
    uncovered: np.ndarray | None = None

    @property
    def psfMatchingKernel(self) -> Any:
        return self.kernel.psfMatchingKernel

    @property
    def backgroundModel(self) -> Any:
        return self.kernel.backgroundModel

    @property
    def kernelCellSet(self) -> Any:
        return self.kernel.kernelCellSet

    @property
    def sources(self) -> Any:
        return self.kernel.sources

    @property
    def basisList(self) -> list[Any]:
        return self.kernel.basisList
