# SPDX-License-Identifier: BSD-3-Clause
"""The subtraction modes of `ImagePsfMatchTask`, one small class each, and the hand-off from
the kernel fit to the convolution and subtraction (`_Subtraction`).

A mode says which image is convolved (the *target*) to match which (the *reference*), the
FWHMs the basis is built for, what the raw difference's PSF is and what else the result
carries. ``convolveTemplate`` (`_ConvolveTemplate`) and ``convolveScience``
(`_ConvolveScience`) are the two directions of the Alard–Lupton fit; the score image
(``preconvolve``, `_Preconvolve`) is the template direction with the science image first
convolved with its own PSF, so it is a subclass of `_ConvolveTemplate`; so is
cross-convolution (``crossConvolve``, `_CrossConvolve`, `psfmatch._cross`), where each image is
first convolved with the other's PSF and a small kernel matches what is left.
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
    #: Cross-convolution: its own small basis, the kernel sources' stamp half-width, the two
    #: PSF images at the centre (the difference image's PSF is made of them) and the fields.
    basisList: list[Any] | None = None
    stampHalfWidth: int | None = None
    sciencePsf: np.ndarray | None = None
    templatePsf: np.ndarray | None = None
    crossPsfs: Any = None


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
        psfs: Any = None,
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
        psfs: Any = None,
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
        psfs: Any = None,
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


class _CrossConvolve(_ConvolveTemplate):
    """Cross-convolution (§7.11): ``P_T ⊗ S ≈ K ⊗ (P_S ⊗ T) + b`` with a small K; D has the
    PSF ``P_S ⊗ P_T``. ``psfs`` is the pair of PSF fields (`psfmatch._cross.CrossPsfs`)."""

    name = "crossConvolve"
    convolvedName = "CrossConvolution"
    description = "science image with the template's PSF and the template with the science image's"
    convolvesWideTemplate = False

    def arrange(
        self,
        task: ImagePsfMatchTask,
        template: MaskedImage,
        science: MaskedImage,
        sizes: PsfSizes,
        sciencePsf: np.ndarray,
        psfs: Any = None,
    ) -> _Arrangement:
        from ._cross import crossKernelBasis, recordPsfs
        from ._psffield import convolveWithField

        assert psfs is not None
        recordPsfs(task, psfs)
        badBits = task._badBits()
        nThreads = int(task.kConfig.nThreads)
        with task.timer("crossConvolve"):
            reference = convolveWithField(science, psfs.template, badBits, nThreads)
            target = convolveWithField(template, psfs.science, badBits, nThreads)
        half = max(psfs.science.halfWidth, psfs.template.halfWidth)
        bbox = science.getBBox()
        if bbox.getWidth() <= 2 * half or bbox.getHeight() <= 2 * half:
            raise InvalidInputError(
                f"the PSFs ({2 * half + 1} x {2 * half + 1} pixels) leave no pixels of the "
                f"{bbox.getWidth()} x {bbox.getHeight()} image to cross-convolve; lower "
                "crossConvolve.psfMaxHalfWidth or use a larger image"
            )
        # Within a PSF half-width of the border the cross-convolved images are copies.
        innerBox = _core.Box2I(
            (bbox.getMinX() + half, bbox.getMinY() + half),
            (bbox.getWidth() - 2 * half, bbox.getHeight() - 2 * half),
        )
        cfg = task.config.crossConvolve
        crossFwhm = psfs.crossFwhm()
        stampHalf = int(cfg.stampHalfWidth) or min(
            max(3, math.ceil(2.0 * crossFwhm)), int(cfg.psfMaxHalfWidth)
        )
        task.metadata["crossKernelOrder"] = int(cfg.kernelOrder)
        task.metadata["crossStampHalfWidth"] = stampHalf
        task.metadata["crossPsfSize"] = crossFwhm
        sImage, tImage = psfs.images()
        # The stars are selected on the unconvolved images (as measurePsfSizes saw them);
        # innerBox keeps their stamps off the copied border.
        return _Arrangement(
            template,
            target,
            reference,
            crossFwhm,
            crossFwhm,
            science,
            innerBox=innerBox,
            basisList=crossKernelBasis(int(cfg.kernelOrder)),
            stampHalfWidth=stampHalf,
            sciencePsf=sImage,
            templatePsf=tImage,
            crossPsfs=psfs,
        )

    def differencePsf(self, fit: _Subtraction) -> np.ndarray:
        """``P_S ⊗ P_T``: a source of the science image is in ``P_T ⊗ S`` through both."""
        return _convolveSmall(fit.sciencePsf, fit.templatePsf)

    def resultExtras(self, fit: _Subtraction) -> dict[str, Any]:
        return {"matchedScience": fit.reference}


_MODES: dict[str, _ConvolveTemplate] = {
    mode.name: mode()
    for mode in (_ConvolveTemplate, _ConvolveScience, _Preconvolve, _CrossConvolve)
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
    #: A working pixel times this is the input's (`psfmatch._inputs._unitScale`).
    unitScale: float = 1.0

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
