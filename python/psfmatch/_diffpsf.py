# SPDX-License-Identifier: BSD-3-Clause
"""The difference PSF measured on the image that is not convolved (docs/algorithm.md, "The
difference image's PSF").

The raw difference has the PSF of the image the kernel does not touch: the science image when
the template is convolved (and the score image's preconvolution kernel is that PSF too), the
template when the science image is. Without a PSF model from the user, that PSF used to be a
round Gaussian of the measured FWHM, which leaves out a Moffat PSF's wings: PSF-fit fluxes in
the decorrelated difference came out 3–9 % low on Moffat PSFs (β 4.5 to 2.5), against 0.2 %
with the true PSF given. Here it is stacked from that image's own preliminary kernel stars
(`psfmatch._psfstack.measurePsf`: Fourier-shifted, sky-subtracted, S/N²-weighted, clipped),
on a stamp wide enough for the wings, with the other detections' light left out of the
stamps and of their sky annuli; with too few
usable stars it stays the Gaussian, and the log says so.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from ._psfutil import FWHM_PER_SIGMA, _gaussianPsfImage
from .errors import InsufficientKernelSourcesError
from .image import MaskedImage

if TYPE_CHECKING:
    from .make_kernel import PsfSizes

#: The stamp's half-width in FWHMs: 4 FWHMs hold all but ~0.3 % of a β = 2.5 Moffat's flux
#: (a PSF fit with a PSF cut at r ≈ 3 FWHM was still 1.5 % low on the β = 2.5 pair of the
#: accuracy matrix; 4 FWHMs ~0.3 %).
HALF_WIDTH_FWHM = 4.0
#: ... and at most this many pixels: the stack's cost and the score image's preconvolution
#: (a direct convolution) grow as its square, and a PSF this wide is a very poor seeing.
MAX_HALF_WIDTH = 30
#: Fewer usable stars than this: the Gaussian of the measured FWHM instead.
MIN_STARS = 5
#: At most this many stars, highest S/N first. The other sources' light that the stacker
#: does not mask (beyond 2 FWHMs of them, and undetected ones) weighs more on a faint star's
#: stamp: on the accuracy matrix's crowded field (10⁴ stars) a PSF fit with the PSF of the 50
#: brightest was 1.6 % low, of 150 2.9 %; on 300-star fields both are within 0.1 %.
MAX_STARS = 50


def psfHalfWidth(fwhm: float, wings: bool = True) -> int:
    """The measured PSF's stamp half-width for a FWHM: the Gaussian fallback's (ceil(4σ),
    which holds all but 6e-5 of a Gaussian's flux) where the growth curves found no wings
    (``wings`` false, `PsfWings.hasWings`), else `HALF_WIDTH_FWHM` FWHMs, at most
    `MAX_HALF_WIDTH`. Without wings the PSF is then as large as the Gaussian was, and
    detection in D and the decorrelation, whose cost grows with it, as cheap: on a 2048²
    Gaussian pair 2.5 FWHMs cost 10 % more CPU time than the Gaussian, the stack itself 2 %."""
    gaussianHalf = max(2, math.ceil(4.0 * fwhm / FWHM_PER_SIGMA))
    if not wings:
        return gaussianHalf
    return max(gaussianHalf, min(MAX_HALF_WIDTH, math.ceil(HALF_WIDTH_FWHM * fwhm)))


def measuredPsfImage(
    task: Any, mi: MaskedImage, sizes: PsfSizes, fwhm: float, what: str
) -> tuple[np.ndarray, str]:
    """The unit-sum PSF image of ``mi`` (``what``: "science" or "template") stacked from the
    preliminary kernel stars, and where it came from: ``"measured"``, or ``"gaussian"`` (the
    round Gaussian of ``fwhm``) with a log line when fewer than `MIN_STARS` stars are usable.
    """
    from ._psfstack import measurePsf

    halfWidth = psfHalfWidth(fwhm, sizes.wings is None or bool(sizes.wings.hasWings))
    x = np.zeros(0) if sizes.starX is None else np.asarray(sizes.starX, dtype=float)
    y = np.zeros(0) if sizes.starY is None else np.asarray(sizes.starY, dtype=float)
    # Every preliminary kernel star (already isolated at 2 FWHMs by the selection): the other
    # detections' light within 2 FWHMs is left out pixel by pixel by the stacker, the rest
    # clipped. Stars without a brighter neighbour within the whole stamp (_cross._isolated)
    # were ~5 % of them on a 300-star field, too few for a stack without noise bias (0.7 %).
    neighbours = sizes.detectionPositions(mi.getXY0())
    try:
        with task.timer("measureDifferencePsf"):
            measured = measurePsf(
                mi,
                x,
                y,
                halfWidth,
                fwhm,
                task._badBits(),
                minStars=MIN_STARS,
                maxStars=MAX_STARS,
                neighbours=neighbours,
                skyWithoutNeighbours=True,
            )
    except InsufficientKernelSourcesError as err:
        task.log.info("The %s PSF: a round Gaussian of FWHM %.2f px (%s)", what, fwhm, err)
        return _gaussianPsfImage(fwhm), "gaussian"
    task.log.info(
        "The %s PSF: stacked from %d stars on %d x %d pixels",
        what,
        measured.nStars,
        2 * halfWidth + 1,
        2 * halfWidth + 1,
    )
    return measured.image, "measured"


def unconvolvedPsfImages(
    task: Any,
    convolvesScience: bool,
    image: MaskedImage,
    sizes: PsfSizes,
    science: tuple[Any, np.ndarray],
    template: tuple[Any, np.ndarray],
) -> tuple[np.ndarray, np.ndarray]:
    """The science and template PSF images (each given as (the user's PSF or None, its image
    so far)), the one of ``image``, the image the kernel does not convolve, measured on its
    stars when the user gave none (`measuredPsfImage`); records ``sciencePsfSource`` and
    ``templatePsfSource`` ("given", "measured" or "gaussian") in ``task.metadata``."""
    images = {"science": science[1], "template": template[1]}
    unconvolved = "template" if convolvesScience else "science"
    for what, (given, _image) in (("science", science), ("template", template)):
        source = "given" if given is not None else "gaussian"
        if given is None and what == unconvolved:
            fwhm = sizes.template if convolvesScience else sizes.science
            images[what], source = measuredPsfImage(task, image, sizes, fwhm, what)
        task.metadata[f"{what}PsfSource"] = source
    return images["science"], images["template"]
