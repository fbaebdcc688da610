# SPDX-License-Identifier: BSD-3-Clause
"""`ImagePsfMatchConfig`, the configuration of `psfmatch.subtract_images.ImagePsfMatchTask`
(which re-exports it): the kernel and selection of `MakeKernelConfig`, and which image is
convolved, how the inputs are checked and rescaled, and what is done with the difference
(decorrelation, detection, the quality check). The task's module holds what it does; this one
what can be set.
"""

from __future__ import annotations

__all__ = ["ImagePsfMatchConfig"]

import lsst.pex.config as pexConfig

from ._cross import CrossConvolveConfig
from ._masks import UNUSABLE_PLANES
from .decorrelate import DecorrelateALKernelTask
from .make_kernel import MakeKernelConfig


class ImagePsfMatchConfig(MakeKernelConfig):
    """Configuration of `ImagePsfMatchTask`: `MakeKernelConfig`'s ``kernel`` and ``selection``,
    and how the images are convolved, subtracted, decorrelated and searched."""

    mode: pexConfig.ChoiceField[str] = pexConfig.ChoiceField(
        dtype=str,
        default="convolveTemplate",
        allowed={
            "convolveTemplate": "Convolve the template to the science image's PSF.",
            "convolveScience": "Convolve the science image to the template's PSF.",
            "auto": "Cross-convolve when the two PSFs are not nested (neither is the other "
            "blurred, crossConvolve.nestedThreshold), else convolve whichever image has the "
            "narrower PSF.",
            "preconvolve": "Convolve the science image with its own PSF and the template to "
            "that: the score image (docs/algorithm.md §7.4).",
            "crossConvolve": "Convolve each image with the other's PSF, then match them with a "
            "small kernel: for PSFs neither of which is the sharper (docs/algorithm.md §7.11).",
        },
        doc="Which image is convolved.",
    )
    crossConvolve: pexConfig.ConfigField[CrossConvolveConfig] = pexConfig.ConfigField(
        dtype=CrossConvolveConfig,
        doc="Cross-convolution (mode crossConvolve) and how mode auto chooses it.",
    )
    requiredTemplateFraction: pexConfig.Field[float] = pexConfig.RangeField(
        dtype=float,
        default=0.1,
        min=0.0,
        max=1.0,
        doc="The least fraction of the science image's pixels where the template has data "
        "(inside its box once placed by its origin) and neither image is NO_DATA, for a "
        "subtraction to be tried; less raises TemplateCoverageError (the reference's field "
        "and meaning). The coverage is metadata templateCoveragePercent.",
    )
    doScaleVariance: pexConfig.Field[bool] = pexConfig.Field(
        dtype=bool,
        default=True,
        doc="Rescale each image's variance plane so that the sky pixels' (image - background)"
        "/sqrt(variance) has unit robust spread (0.7413·IQR), as the reference does.",
    )
    maxVarianceScaleFactor: pexConfig.Field[float] = pexConfig.RangeField(
        dtype=float,
        default=10.0,
        min=1.0,
        doc="A variance scale factor outside [1/max, max] is not applied (a warning and the "
        "metadata say so): it means the variance plane does not describe the noise at all.",
    )
    doSubtractBackground: pexConfig.Field[bool] = pexConfig.Field(
        dtype=bool,
        default=True,
        doc="Subtract the fitted differential background from the difference image.",
    )
    doDecorrelation: pexConfig.Field[bool] = pexConfig.Field(
        dtype=bool,
        default=True,
        doc="Whiten the difference image's noise, which the convolution correlated, and filter "
        "its PSF likewise (DecorrelateALKernelTask).",
    )
    keepMatchedImage: pexConfig.Field[bool] = pexConfig.Field(
        dtype=bool,
        default=True,
        doc="Return the convolved image (matchedImage) beside the difference. Off, "
        "subtractMaskedImages writes the difference over the convolved image's planes and "
        "returns matchedImage=None: the run then never holds both, which saves 12 bytes per "
        "pixel for a float32 pair (a third of its memory beside the inputs). The difference is "
        "the same, bit for bit.",
    )
    decorrelate = DecorrelateALKernelTask.makeField("Decorrelate the difference image.")
    doDetectDiaSources: pexConfig.Field[bool] = pexConfig.Field(
        dtype=bool,
        default=True,
        doc="Detect positive and negative sources in the difference image, associate them with "
        "the template's and the kernel sources, and record the NFalsePositives* metadata.",
    )
    diaSourceThreshold: pexConfig.Field[float] = pexConfig.RangeField(
        dtype=float,
        default=5.0,
        min=0.0,
        inclusiveMin=False,
        doc="Detection threshold: the PSF-matched-filter S/N of a difference-image source "
        "(of D/σ itself for a score image). Also the threshold of the template detections "
        "they are associated with.",
    )
    diaSourceMatchRadius: pexConfig.Field[float] = pexConfig.RangeField(
        dtype=float,
        default=1.0,
        min=0.0,
        doc="Association radius between a difference-image source and a template or kernel "
        "source, in units of the difference PSF's FWHM (``differencePsfSize``): the residual "
        "lobes of a badly subtracted star lie within about one FWHM of it.",
    )
    maxDifferenceChi2: pexConfig.Field[float] = pexConfig.RangeField(
        dtype=float,
        default=4.0,
        min=0.0,
        inclusiveMin=False,
        doc="The largest mean of (D/σ)² over the difference image's sky pixels (those of no "
        "source's footprint, metadata differenceSkyChi2) a subtraction may end with; above it "
        "the run raises PoorSubtractionError unless allowPoorSubtraction. Healthy runs give "
        "0.99-1.42 (docs/errors.md); 4 means D's scatter is twice its noise.",
    )
    allowPoorSubtraction: pexConfig.Field[bool] = pexConfig.Field(
        dtype=bool,
        default=False,
        doc="Keep a difference image whose sky is far from its noise (differenceSkyChi2 > "
        "maxDifferenceChi2) with a warning, rather than raising PoorSubtractionError.",
    )
    diaSourceBadMaskPlanes: pexConfig.ListField[str] = pexConfig.ListField(
        dtype=str,
        default=list(UNUSABLE_PLANES),
        doc="Difference-image pixels with these planes take no part in detection. Unknown "
        "plane names are ignored.",
    )
