# SPDX-License-Identifier: BSD-3-Clause
"""Cross-convolution (``mode="crossConvolve"``, docs/algorithm.md §7.11): for pairs where
neither PSF is the sharper one — space-telescope epochs at different roll angles, whose
diffraction spikes point different ways, or ground images elongated in different directions.

No kernel turns one such PSF into the other, so each image is convolved with the *other's*
PSF: ``S' = P_T ⊗ S`` and ``T' = P_S ⊗ T`` both have the PSF ``P_S ⊗ P_T``. A small matching
kernel K — a Taylor expansion about a delta function to second order on 3 × 3 pixels
(``kernelOrder``), whose first term carries the flux scale — and a background are then fitted with
``S' ≈ K ⊗ T' + b`` by the usual Alard–Lupton machinery (`MakeKernelTask`, the kernel varying
over the image with ``spatialKernelOrder``): they absorb the flux scale, a shift between the
images and what the PSF models miss. ``D = S' − K ⊗ T' − b`` has the PSF ``P_S ⊗ P_T`` and is
whitened by `psfmatch.decorrelate_cross`.

This module holds the mode's configuration (`CrossConvolveConfig`, ``config.crossConvolve``),
its basis, where its two PSFs come from (`crossPsfFields`: the user's, or measured from the
stars, `psfmatch._psfstack`) and the choice ``mode="auto"`` makes (`chooseAutoMode`, with the
test of `psfmatch._nesting`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import lsst.pex.config as pexConfig
import numpy as np

from ._psffield import PsfField, psfFieldFromInput
from ._psfutil import _convolveSmall, _psfFwhm
from .errors import InsufficientKernelSourcesError, InvalidInputError
from .image import MaskedImage

if TYPE_CHECKING:
    from .make_kernel import PsfSizes
    from .subtract_images import ImagePsfMatchTask

__all__ = [
    "CrossConvolveConfig",
    "CrossPsfs",
    "chooseAutoMode",
    "crossKernelBasis",
    "crossPsfFields",
    "recordPsfs",
]


class CrossConvolveConfig(pexConfig.Config):
    """How ``mode="crossConvolve"`` convolves, fits and decorrelates, and how ``mode="auto"``
    decides to use it (docs/algorithm.md §7.11)."""

    kernelOrder: pexConfig.Field[int] = pexConfig.RangeField(
        dtype=int,
        default=2,
        min=0,
        max=2,
        inclusiveMax=True,
        doc="Order of the matching kernel fitted after the cross-convolution, a Taylor "
        "expansion about a delta function on 3 x 3 pixels: 0 the flux scale alone, 1 with a "
        "sub-pixel shift (the first derivatives), 2 also a change of width and shape (the "
        "second derivatives): what the PSF models typically miss.",
    )
    stampHalfWidth: pexConfig.Field[int] = pexConfig.RangeField(
        dtype=int,
        default=0,
        min=0,
        doc="Half-width of the kernel sources' stamps in the cross-convolved images; 0 chooses "
        "max(3, ceil(2 FWHM)) for the FWHM of P_S ⊗ P_T, at most psfMaxHalfWidth.",
    )
    psfHalfWidth: pexConfig.Field[int] = pexConfig.RangeField(
        dtype=int,
        default=0,
        min=0,
        doc="Half-width of the PSFs measured from the images' stars; 0 chooses ceil(3 FWHM) "
        "of the broader image, between 6 and psfMaxHalfWidth.",
    )
    psfMaxHalfWidth: pexConfig.Field[int] = pexConfig.RangeField(
        dtype=int,
        default=25,
        min=2,
        doc="Given PSF images (e.g. WebbPSF stamps) are cut to this half-width about their "
        "centre and renormalised: a PSF of half-width h costs h pixels of every border of D.",
    )
    psfRegions: pexConfig.Field[int] = pexConfig.RangeField(
        dtype=int,
        default=1,
        min=1,
        max=5,
        inclusiveMax=True,
        doc="Measured PSFs: one stacked PSF per region of an n x n grid of the image, fitted "
        "by a Chebyshev field of order min(n-1, 2); fewer regions are used when one has fewer "
        "than psfMinStars usable stars.",
    )
    psfMinStars: pexConfig.Field[int] = pexConfig.RangeField(
        dtype=int,
        default=5,
        min=1,
        doc="Fewest usable stars a measured PSF is stacked from.",
    )
    psfMaxStars: pexConfig.Field[int] = pexConfig.RangeField(
        dtype=int,
        default=200,
        min=1,
        doc="Most stars (the highest S/N first) a measured PSF is stacked from, per region.",
    )
    psfSpatialOrder: pexConfig.Field[int] = pexConfig.RangeField(
        dtype=int,
        default=2,
        min=0,
        max=2,
        inclusiveMax=True,
        doc="Chebyshev order of the field fitted to a given PSF object that varies over the "
        "image (sampled on a 4 x 4 grid of positions).",
    )
    decorrelationFloor: pexConfig.Field[float] = pexConfig.RangeField(
        dtype=float,
        default=1.0e-3,
        min=0.0,
        max=1.0,
        inclusiveMin=False,
        inclusiveMax=False,
        doc="ε of the cross-convolution decorrelation filter: at frequencies where both PSFs "
        "have less than ε of the noise power, the whitening gain is capped at 1/sqrt(ε) "
        "(docs/algorithm.md §7.11).",
    )
    nestedThreshold: pexConfig.Field[float] = pexConfig.RangeField(
        dtype=float,
        default=0.02,
        min=0.0,
        doc="mode='auto': the PSFs are not nested (and cross-convolution is chosen) when, in "
        "both directions, the best non-negative kernel leaves more than this fraction of the "
        "PSF's norm unexplained beyond the measured PSFs' noise, significantly "
        "(nestedNSigma; docs/algorithm.md §7.11).",
    )
    nestedNSigma: pexConfig.Field[float] = pexConfig.RangeField(
        dtype=float,
        default=5.0,
        min=0.0,
        doc="mode='auto': how significant (in standard deviations of the residual's χ²) the "
        "misfit of nestedThreshold must be.",
    )
    autoPsfStars: pexConfig.Field[int] = pexConfig.RangeField(
        dtype=int,
        default=50,
        min=5,
        doc="mode='auto': the PSFs compared are stacked from at most this many stars each (the "
        "brightest): enough to tell nested PSFs from crossed ones at a fraction of the cost; "
        "when auto then cross-convolves, they are measured again with psfMaxStars.",
    )
    autoMeasurePsfs: pexConfig.Field[bool] = pexConfig.Field(
        dtype=bool,
        default=True,
        doc="mode='auto': measure the PSFs (when not given) and test whether they are nested; "
        "off, auto convolves the image with the narrower FWHM as before.",
    )


#: The Taylor basis of the matching kernel on 3 x 3 pixels, by order: the delta function,
#: the central first differences along x and y, the second differences xx, xy and yy.
_TAYLOR_STENCILS: tuple[tuple[int, np.ndarray], ...] = (
    (0, np.array([[0.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0]])),
    (1, np.array([[0.0, 0.0, 0.0], [-0.5, 0.0, 0.5], [0.0, 0.0, 0.0]])),
    (1, np.array([[0.0, -0.5, 0.0], [0.0, 0.0, 0.0], [0.0, 0.5, 0.0]])),
    (2, np.array([[0.0, 0.0, 0.0], [1.0, -2.0, 1.0], [0.0, 0.0, 0.0]])),
    (2, np.array([[0.25, 0.0, -0.25], [0.0, 0.0, 0.0], [-0.25, 0.0, 0.25]])),
    (2, np.array([[0.0, 1.0, 0.0], [0.0, -2.0, 0.0], [0.0, 1.0, 0.0]])),
)


def crossKernelBasis(order: int) -> list[Any]:
    """The matching kernel's basis after cross-convolution: a Taylor expansion about the
    delta function to ``order`` (0–2) on 3 × 3 pixels, renormalised (docs/algorithm.md §2.2).

    Kernel 0, the delta, carries the flux (the kernel sum is its coefficient, constant over
    the image as with the Alard–Lupton basis); the differences sum to zero. Why not delta
    functions over a square: the cross-convolved images are smooth, and a free kernel pixel
    per offset leaves the high-frequency patterns of K unconstrained, to be fitted to noise
    (a checkerboard of ±0.3 on a 5 × 5 kernel in a simulation); the few low-order terms are
    what a model of a PSF typically misses: its centre and its width and shape.
    """
    from . import _core
    from .basis import renormalizeKernelList

    kernels = [_core.FixedKernel(stencil) for n, stencil in _TAYLOR_STENCILS if n <= int(order)]
    return list(renormalizeKernelList(kernels))


@dataclass(eq=False)
class CrossPsfs:
    """The two PSF fields of a cross-convolution and what was measured on the way."""

    science: PsfField
    template: PsfField
    measured: dict[str, Any] = field(default_factory=dict)

    def images(self) -> tuple[np.ndarray, np.ndarray]:
        """The science and template PSF images at the centre of the box."""
        return self.science.centreImage(), self.template.centreImage()

    def crossFwhm(self) -> float:
        """FWHM (pixels, second moments) of ``P_S ⊗ P_T`` at the centre."""
        s, t = self.images()
        return _psfFwhm(_convolveSmall(s, t))


def _psfHalfWidth(task: ImagePsfMatchTask, sizes: PsfSizes) -> int:
    cfg = task.config.crossConvolve
    if cfg.psfHalfWidth:
        return int(min(cfg.psfHalfWidth, cfg.psfMaxHalfWidth))
    return int(
        min(max(math.ceil(3.0 * max(sizes.template, sizes.science)), 6), cfg.psfMaxHalfWidth)
    )


def _starPositions(
    task: ImagePsfMatchTask,
    template: MaskedImage,
    science: MaskedImage,
    sizes: PsfSizes,
    candidateList: Any,
    halfWidth: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Isolated stars seen in both images whose PSF stamps (and the shift margin) fit,
    highest S/N first: the kernel-source selection's, or the user's positions."""
    from ._psfstack import _SHIFT_MARGIN
    from .selection import selectKernelSources

    if candidateList is None:
        sources = selectKernelSources(
            template,
            science,
            task.config.selection,
            kernelSize=halfWidth + _SHIFT_MARGIN,
            scienceSources=sizes.scienceSources,
            badBits=task._badBits(),
            radiusCache=sizes.radiusCache,
        )
    else:
        sources = task._userSources(candidateList, science.getBBox(), None)
    x = np.asarray(sources["x"], dtype=float)
    y = np.asarray(sources["y"], dtype=float)
    detections = sizes.scienceSources
    if detections is None or len(detections) == 0 or len(x) == 0:
        return x, y
    isolated = _isolated(x, y, detections, science.getXY0(), halfWidth)
    return x[isolated], y[isolated]


#: A PSF star's stamp may hold no other detection brighter than this fraction of the star
#: (the kernel-source selection's isolation, two FWHMs, lets a bright neighbour's wings and
#: spikes into a PSF stamp, and normalised by a faint star's flux they dominate its estimate).
_NEIGHBOUR_FRACTION = 0.01


def _isolated(
    x: np.ndarray, y: np.ndarray, detections: np.ndarray, xy0: tuple[int, int], halfWidth: int
) -> np.ndarray:
    """Which stars at parent (x, y) have no detection brighter than `_NEIGHBOUR_FRACTION` of
    their own flux within twice the stamp half-width (where its light reaches the stamp)."""
    from ._sources import _pairsWithin

    dx = np.asarray(detections["x"], dtype=float) + xy0[0]
    dy = np.asarray(detections["y"], dtype=float) + xy0[1]
    flux = np.asarray(detections["flux"], dtype=float)
    # Each star's own detection: the nearest one, within a pixel and a half.
    star, own, distance = _pairsWithin(x, y, dx, dy, 1.5)
    ownFlux = np.full(len(x), np.inf)  # a star without its detection is judged by nothing
    order = np.argsort(distance)[::-1]  # the nearest written last
    ownFlux[star[order]] = flux[own[order]]
    a, b, d = _pairsWithin(x, y, dx, dy, 2.0 * halfWidth)
    bright = (d > 1.5) & (flux[b] > _NEIGHBOUR_FRACTION * ownFlux[a])
    isolated = np.ones(len(x), dtype=bool)
    isolated[a[bright]] = False
    return isolated


def _measuredField(
    task: ImagePsfMatchTask,
    mi: MaskedImage,
    x: np.ndarray,
    y: np.ndarray,
    halfWidth: int,
    fwhm: float,
    sizes: PsfSizes,
    maxStars: int | None = None,
) -> tuple[PsfField, Any]:
    from ._psfstack import measurePsfField

    cfg = task.config.crossConvolve
    neighbours = sizes.detectionPositions(mi.getXY0())
    return measurePsfField(
        mi,
        x,
        y,
        halfWidth,
        fwhm,
        task._badBits(),
        regions=int(cfg.psfRegions),
        minStars=int(cfg.psfMinStars),
        maxStars=int(cfg.psfMaxStars if maxStars is None else maxStars),
        neighbours=neighbours,
        log=task.log,
    )


def crossPsfFields(
    task: ImagePsfMatchTask,
    template: MaskedImage,
    science: MaskedImage,
    sizes: PsfSizes,
    sciencePsf: Any,
    templatePsf: Any,
    candidateList: Any,
    maxStars: int | None = None,
) -> CrossPsfs:
    """Each image's PSF field: the user's (`psfFieldFromInput`) or measured from the stars
    (`psfmatch._psfstack`, at most ``maxStars`` of them, by default ``psfMaxStars``).

    Raises
    ------
    InsufficientKernelSourcesError
        A PSF to measure and too few isolated stars to measure it from.
    InvalidInputError
        An unusable PSF input.
    """
    cfg = task.config.crossConvolve
    fields: dict[str, PsfField] = {}
    measured: dict[str, Any] = {}
    # The given ones first: a PSF the user got wrong is the error to report, not the stars.
    for name, given in (("science", sciencePsf), ("template", templatePsf)):
        if given is not None:
            fields[name] = psfFieldFromInput(
                given,
                science,
                f"{name}Psf",
                int(cfg.psfMaxHalfWidth),
                int(cfg.psfSpatialOrder),
            )
    needed = [
        (name, mi, fwhm)
        for name, mi, fwhm in (
            ("science", science, sizes.science),
            ("template", template, sizes.template),
        )
        if name not in fields
    ]
    if needed:
        half = _psfHalfWidth(task, sizes)
        x, y = _starPositions(task, template, science, sizes, candidateList, half)
        for name, mi, fwhm in needed:
            fields[name], measured[name] = _measuredField(
                task, mi, x, y, half, fwhm, sizes, maxStars
            )
    return CrossPsfs(fields["science"], fields["template"], measured)


def recordPsfs(task: ImagePsfMatchTask, psfs: CrossPsfs) -> None:
    """The ``cross*Psf*`` metadata of the PSFs a cross-convolution used: where each came from
    (``"given"`` or ``"measured"``), its spatial order, its FWHM at the centre (second
    moments) and, when measured, the stars and regions it was stacked from."""
    for name, psfField in (("Science", psfs.science), ("Template", psfs.template)):
        task.metadata[f"cross{name}PsfSource"] = psfField.source
        task.metadata[f"cross{name}PsfSpatialOrder"] = psfField.order
        task.metadata[f"cross{name}PsfSize"] = _psfFwhm(psfField.centreImage())
        regions = psfs.measured.get(name.lower())
        if regions is not None:
            task.metadata[f"cross{name}PsfStars"] = int(sum(r.nStars for r in regions))
            task.metadata[f"cross{name}PsfRegions"] = len(regions)


def chooseAutoMode(
    task: ImagePsfMatchTask,
    template: MaskedImage,
    science: MaskedImage,
    sizes: PsfSizes,
    sciencePsf: Any,
    templatePsf: Any,
    candidateList: Any,
) -> tuple[str, CrossPsfs | None]:
    """The mode ``"auto"`` means for this pair, and, if it chose cross-convolution, the PSFs
    to cross-convolve with (measured with ``psfMaxStars``; the comparison's use
    ``autoPsfStars``).

    The PSFs (given, or measured as `crossPsfFields` does) are tested with
    `psfmatch._nesting.assessNesting`; PSFs that are not nested choose ``"crossConvolve"``,
    nested ones the image with the narrower FWHM as before. PSFs that cannot be measured
    (too few isolated stars) fall back to the FWHM rule with a logged note. Records
    ``autoMode`` and ``autoModeReason``, and the test's figures (``psfNesting*``).
    """
    from ._nesting import assessNesting

    def byFwhm(why: str) -> tuple[str, None]:
        name = "convolveTemplate" if sizes.template <= sizes.science else "convolveScience"
        narrower = "template" if name == "convolveTemplate" else "science image"
        reason = (
            f"{why}; the {narrower} has the narrower PSF (FWHM {sizes.template:.2f} px "
            f"template, {sizes.science:.2f} px science)"
        )
        task.metadata["autoMode"] = name
        task.metadata["autoModeReason"] = reason
        return name, None

    cfg = task.config.crossConvolve
    if not cfg.autoMeasurePsfs:
        return byFwhm("PSFs not compared (crossConvolve.autoMeasurePsfs is off)")
    try:
        psfs = crossPsfFields(
            task,
            template,
            science,
            sizes,
            sciencePsf,
            templatePsf,
            candidateList,
            maxStars=min(int(cfg.autoPsfStars), int(cfg.psfMaxStars)),
        )
    except (InsufficientKernelSourcesError, InvalidInputError) as err:
        task.log.info("mode auto: the PSFs could not be compared (%s)", err)
        return byFwhm(f"PSFs not compared ({err})")
    variances: list[np.ndarray | None] = []
    for name in ("science", "template"):
        regions = psfs.measured.get(name)
        if regions is None:
            variances.append(None)
        else:
            # The field at the centre is (nearly) the mean of the region PSFs; its noise the
            # mean of theirs over their number.
            variances.append(sum(r.variance for r in regions) / len(regions) ** 2)
    sImage, tImage = psfs.images()
    test = assessNesting(
        sImage,
        tImage,
        variances[0],
        variances[1],
        threshold=float(cfg.nestedThreshold),
        nSigma=float(cfg.nestedNSigma),
    )
    for key, attribute in (
        ("psfNestingResidualScienceFromTemplate", "residualScienceFromTemplate"),
        ("psfNestingResidualTemplateFromScience", "residualTemplateFromScience"),
        ("psfNestingNoiseScienceFromTemplate", "noiseScienceFromTemplate"),
        ("psfNestingNoiseTemplateFromScience", "noiseTemplateFromScience"),
        ("psfNestingMisfitScienceFromTemplate", "misfitScienceFromTemplate"),
        ("psfNestingMisfitTemplateFromScience", "misfitTemplateFromScience"),
    ):
        task.metadata[key] = _cardValue(getattr(test, attribute))
    task.metadata["psfNestingMomentEigenvalues"] = list(test.momentEigenvalues)
    task.metadata["psfNested"] = bool(test.nested)
    if test.nested:
        return byFwhm(test.reason())
    task.metadata["autoMode"] = "crossConvolve"
    task.metadata["autoModeReason"] = test.reason()
    task.log.info("mode auto: %s; cross-convolving", test.reason())
    if psfs.measured and cfg.psfMaxStars > cfg.autoPsfStars:
        # The PSFs to cross-convolve with, from every star the config allows.
        psfs = crossPsfFields(
            task, template, science, sizes, sciencePsf, templatePsf, candidateList
        )
    return "crossConvolve", psfs


def _cardValue(value: float) -> float | str:
    """``value``, or its name ("inf", "nan") if it is not finite: the metadata goes into FITS
    headers, whose cards hold finite numbers only."""
    return float(value) if math.isfinite(value) else str(float(value))
