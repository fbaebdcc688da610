# SPDX-License-Identifier: BSD-3-Clause
"""The current reference's subtraction tasks, by name, over psfmatch's stages.

Code written against today's lsst.ip.diffim (``AlardLuptonSubtractTask``,
``AlardLuptonPreconvolveSubtractTask``) ports with few changes: the task and config names, the
``run(template, science, sources)`` call and the names in the Struct it returns are the
reference's; the images are psfmatch `MaskedImage` objects on one pixel grid (the template may
be larger: it is placed by its origin) instead of afw Exposures, and ``sources`` is a table or
sequence of (x, y) positions instead of a SourceCatalog.

Each task builds the `ImagePsfMatchConfig` its config describes and runs an
`ImagePsfMatchTask` subtask (``imagePsfMatch``) on the pair; the kernel-fit metadata
(``spatialKernelSum``, ...) are that subtask's. Detection in the difference is not part of the
reference's subtraction task either: `psfmatch.detect_and_measure.DetectAndMeasureTask` does it.

Field by field (the reference's meaning, and where it goes):

- ``mode``: ``convolveTemplate``, ``convolveScience`` or ``auto`` → ``ImagePsfMatchConfig.mode``.
- ``makeKernel``: the kernel basis and fit and the kernel-source selection
  (`MakeKernelConfig`: ``kernel``, ``selection``).
- ``doDecorrelation``, ``decorrelate``, ``doScaleVariance``, ``doSubtractBackground``,
  ``requiredTemplateFraction``: as in `ImagePsfMatchConfig`.
- ``badMaskPlanes``: mask planes that exclude a kernel source → ``selection.excludeMaskPlanes``.
- ``preserveTemplateMask``: the template's mask planes that are carried into the difference;
  others of the template's planes are dropped from it (the science image's all stay, and the
  subtraction's own ``EDGE``/``NO_DATA``).
- ``allowKernelSourceDetection``: when the kernel fit on the given ``sources`` fails (too few
  usable ones, every one rejected, a singular fit), find sources with sep instead of failing.
"""

from __future__ import annotations

__all__ = [
    "AlardLuptonPreconvolveSubtractConfig",
    "AlardLuptonPreconvolveSubtractTask",
    "AlardLuptonSubtractConfig",
    "AlardLuptonSubtractTask",
]

from typing import Any

import lsst.pex.config as pexConfig
import numpy as np

from ._placement import placeTemplate
from .decorrelate import DecorrelateALKernelTask
from .errors import InvalidInputError, NoKernelCandidatesError, SingularMatrixError
from .image import Mask, MaskedImage
from .make_kernel import MakeKernelTask
from .subtract_images import ImagePsfMatchConfig, ImagePsfMatchTask
from .task import Struct, Task


class AlardLuptonSubtractConfig(pexConfig.Config):
    """Configuration of `AlardLuptonSubtractTask` (the reference's fields; module docstring)."""

    mode: pexConfig.ChoiceField[str] = pexConfig.ChoiceField(
        dtype=str,
        default="convolveTemplate",
        allowed={
            "auto": "Convolve whichever image has the narrower PSF, or cross-convolve when "
            "neither is the sharper (ImagePsfMatchConfig.crossConvolve).",
            "convolveScience": "Convolve the science image to the template's PSF.",
            "convolveTemplate": "Convolve the template to the science image's PSF.",
        },
        doc="Which image is convolved.",
    )
    makeKernel = MakeKernelTask.makeField("The kernel sources, basis and fit.")
    doDecorrelation: pexConfig.Field[bool] = pexConfig.Field(
        dtype=bool, default=True, doc="Whiten the difference image's correlated noise."
    )
    decorrelate = DecorrelateALKernelTask.makeField("Decorrelate the difference image.")
    doScaleVariance: pexConfig.Field[bool] = pexConfig.Field(
        dtype=bool, default=True, doc="Rescale each image's variance plane to its sky noise."
    )
    doSubtractBackground: pexConfig.Field[bool] = pexConfig.Field(
        dtype=bool, default=True, doc="Subtract the fitted differential background."
    )
    requiredTemplateFraction: pexConfig.Field[float] = pexConfig.RangeField(
        dtype=float,
        default=0.1,
        min=0.0,
        max=1.0,
        doc="The least fraction of the science image the template must cover with data.",
    )
    badMaskPlanes: pexConfig.ListField[str] = pexConfig.ListField(
        dtype=str,
        default=["NO_DATA", "BAD", "SAT", "EDGE", "CR"],
        doc="Mask planes that exclude a star from the kernel sources.",
    )
    preserveTemplateMask: pexConfig.ListField[str] = pexConfig.ListField(
        dtype=str,
        default=["NO_DATA", "BAD", "SAT"],
        doc="The template's mask planes carried into the difference image.",
    )
    allowKernelSourceDetection: pexConfig.Field[bool] = pexConfig.Field(
        dtype=bool,
        default=False,
        doc="Find kernel sources with sep when the kernel fit on the given sources fails.",
    )

    def imagePsfMatchConfig(self, mode: str | None = None) -> ImagePsfMatchConfig:
        """The `ImagePsfMatchConfig` this config describes (``mode`` overrides ``self.mode``)."""
        config = ImagePsfMatchConfig()
        config.kernel = self.makeKernel.kernel
        config.selection = self.makeKernel.selection
        config.selection.excludeMaskPlanes = list(self.badMaskPlanes)
        config.mode = self.mode if mode is None else mode
        config.doDecorrelation = self.doDecorrelation
        config.decorrelate = self.decorrelate
        config.doScaleVariance = self.doScaleVariance
        config.doSubtractBackground = self.doSubtractBackground
        config.requiredTemplateFraction = self.requiredTemplateFraction
        config.doDetectDiaSources = False
        return config


class AlardLuptonSubtractTask(Task):
    """Subtract a template from a science image with the Alard–Lupton kernel (the reference's
    task of this name, over `ImagePsfMatchTask`).

    Examples
    --------
    >>> from psfmatch.simulate import simulatePair
    >>> sim = simulatePair((256, 256), nStars=60, seed=0)
    >>> config = AlardLuptonSubtractConfig()
    >>> config.makeKernel.kernel.active.spatialKernelOrder = 1
    >>> task = AlardLuptonSubtractTask(config=config)
    >>> result = task.run(sim.template, sim.science)
    >>> result.difference.image.shape, result.matchedTemplate.image.shape
    ((256, 256), (256, 256))
    """

    ConfigClass = AlardLuptonSubtractConfig
    _DefaultName = "alardLuptonSubtract"
    config: AlardLuptonSubtractConfig
    imagePsfMatch: ImagePsfMatchTask
    _mode: str | None = None  # the mode a subclass forces

    def _subtract(self, template: MaskedImage, science: MaskedImage, sources: Any) -> Any:
        for name, mi in (("template", template), ("science", science)):
            if not isinstance(mi, MaskedImage):
                raise InvalidInputError(f"{name}: expected a MaskedImage, got {type(mi).__name__}")
        config = self.config.imagePsfMatchConfig(self._mode)
        config.keepMatchedImage = True
        # Held by this task: the task hierarchy keeps only weak references to subtasks, and
        # getFullMetadata() reads the fit's metadata from this one.
        self.imagePsfMatch = ImagePsfMatchTask(config=config, name="imagePsfMatch", parentTask=self)
        try:
            result = self.imagePsfMatch.subtractMaskedImages(
                template, science, candidateList=sources
            )
        except (NoKernelCandidatesError, SingularMatrixError) as err:
            if sources is None or not self.config.allowKernelSourceDetection:
                raise
            self.log.warning(
                "The kernel fit on the given sources failed (%s): detecting sources instead", err
            )
            self.imagePsfMatch = ImagePsfMatchTask(
                config=config, name="imagePsfMatch", parentTask=self
            )
            result = self.imagePsfMatch.subtractMaskedImages(template, science)
        self._preserveTemplateMask(result, science)
        return result

    def _preserveTemplateMask(self, result: Any, science: MaskedImage) -> None:
        """Drop the template's mask planes other than ``preserveTemplateMask`` from D: keep
        those planes, the subtraction's own EDGE/NO_DATA, and whatever the science image
        brought to D (its mask, or the convolved science image's when it was convolved)."""
        difference = result.subtractedMaskedImage
        keep = Mask.getPlaneBitMask(list(self.config.preserveTemplateMask), skipUnknown=True)
        keep |= Mask.getPlaneBitMask(["EDGE", "NO_DATA"])
        if result.convolvedImage == "Science":
            scienceSide = result.matchedImage.mask
        elif result.convolvedImage in ("Preconvolution", "CrossConvolution"):
            # The science image convolved with a PSF: its mask grown by it.
            scienceSide = result.matchedScience.mask
        else:
            scienceSide = science.mask[_sameBox(science, difference)]
        difference.mask &= keep | np.asarray(scienceSide)

    def run(self, template: MaskedImage, science: MaskedImage, sources: Any = None) -> Struct:
        """Match the PSFs and subtract.

        Parameters
        ----------
        template, science : `MaskedImage`
            The two images on one parent pixel grid; never modified.
        sources : table or sequence of (x, y), optional
            Kernel source positions (parent coordinates); sep finds them if None.

        Returns
        -------
        result : `Struct`
            ``difference`` (`MaskedImage`), ``matchedTemplate`` and ``matchedScience`` (the
            template and science image as subtracted: one of them convolved),
            ``psfMatchingKernel``, ``backgroundModel`` and ``kernelSources``.
        """
        result = self._subtract(template, science, sources)
        convolvedScience = result.convolvedImage == "Science"
        unconvolvedTemplate = template
        if convolvedScience and template.getBBox() != science.getBBox():
            # The template as subtracted: placed on the science image's box.
            unconvolvedTemplate = placeTemplate(template, science.getBBox(), 0).wide
        return Struct(
            difference=result.subtractedMaskedImage,
            matchedTemplate=unconvolvedTemplate if convolvedScience else result.matchedImage,
            matchedScience=result.matchedImage if convolvedScience else science,
            psfMatchingKernel=result.psfMatchingKernel,
            backgroundModel=result.backgroundModel,
            kernelSources=result.kernelSources,
        )


class AlardLuptonPreconvolveSubtractConfig(AlardLuptonSubtractConfig):
    """Configuration of `AlardLuptonPreconvolveSubtractTask` (``mode`` is not used)."""


class AlardLuptonPreconvolveSubtractTask(AlardLuptonSubtractTask):
    """The score image: the science image convolved with its own PSF, minus the template
    matched to that (the reference's task of this name). Its peaks over σ are point-source
    S/N."""

    ConfigClass = AlardLuptonPreconvolveSubtractConfig
    _DefaultName = "alardLuptonPreconvolveSubtract"
    _mode = "preconvolve"

    def run(self, template: MaskedImage, science: MaskedImage, sources: Any = None) -> Struct:
        """Make the score image.

        Returns
        -------
        result : `Struct`
            ``scoreExposure`` (the score image, a `MaskedImage`), ``matchedTemplate`` (the
            template matched to the preconvolved science image), ``matchedScience`` (the
            science image convolved with its PSF), ``psfMatchingKernel``,
            ``backgroundModel`` and ``kernelSources``.
        """
        result = self._subtract(template, science, sources)
        return Struct(
            scoreExposure=result.subtractedMaskedImage,
            matchedTemplate=result.matchedImage,
            matchedScience=result.matchedScience,
            psfMatchingKernel=result.psfMatchingKernel,
            backgroundModel=result.backgroundModel,
            kernelSources=result.kernelSources,
        )


def _sameBox(science: MaskedImage, difference: MaskedImage) -> tuple[slice, slice]:
    """The slice of ``science``'s arrays that ``difference`` covers (the same box)."""
    (sx, sy), (dx, dy) = science.getXY0(), difference.getXY0()
    ny, nx = difference.image.shape
    return slice(dy - sy, dy - sy + ny), slice(dx - sx, dx - sx + nx)
