# SPDX-License-Identifier: BSD-3-Clause
"""PSF wings from the kernel stars' growth curves: a broad wing Gaussian and the kernel's reach.

The Alard–Lupton widths and the kernel size follow from the two FWHMs (docs/algorithm.md
§2.3), which cannot see a Moffat-like PSF's wings: a basis of three Gaussians sized for the
cores cannot put flux where a β = 3 Moffat has ~2 % of it (beyond 2 FWHM), and the kernel sum
comes out 0.7–0.9 % low. This module measures, on the kernel stars the FWHMs came from, each
image's *growth curve* at two radii: the stars' stamps (the sky, the median of an annulus
outside `_NORM_FWHM` FWHMs, subtracted; each normalised to its flux within that radius) are
median-stacked pixel by pixel (a neighbour, a transient or a cosmic ray sits in other pixels of
each stamp and does not bend the stack), and so are pixel-integrated Gaussians of the measured
FWHM at the stars' own sub-pixel offsets; the difference of the two stacks' fractions of flux
*outside one FWHM* is the image's *wing excess* (0 for a Gaussian; ~0.04 for a β = 4.5
Moffat, ~0.07 for β = 3, more for β = 2.5).

Why not the radius enclosing 99–99.5 % of the flux, which would size the kernel directly: on
simulated fields of 300 stars over 768² pixels, that radius scattered from 5 to 19 px between
noise and star-field realisations of one Moffat pair (at that level the sky's noise and the
neighbours inside 20 px decide it), while the fraction outside one FWHM, a core-dominated
measurement, is stable to ~0.005 (docs/decisions.md D18).

`generateAlardLuptonBasisList` acts on a `PsfWings` whose ``hasWings`` is set: the basis gains
one broad Gaussian of low degree (σ = ``wingSigmaScaling`` × the broader FWHM) and the kernel
reaches at least ``wingKernelScaling`` broader FWHMs.
"""

from __future__ import annotations

__all__ = ["PsfWings", "measurePsfWings", "wingExcess"]

import math
from dataclasses import dataclass

import numpy as np

from .image import MaskedImage

#: The stamps are normalised within this many FWHMs (flux beyond is not seen; a β = 3 Moffat
#: holds ~1 % of its flux beyond 2.5 FWHM). The sky annulus lies 2 to 6 pixels outside it.
_NORM_FWHM = 2.5
#: The most stars measured (the brightest): the median is stable long before, and the cost
#: stays flat on crowded fields.
_MAX_STARS = 50


@dataclass(frozen=True)
class PsfWings:
    """What the growth curves say about the PSFs' wings.

    Attributes
    ----------
    templateExcess, scienceExcess : `float`
        Each image's wing excess: the stacked stars' fraction of flux outside one FWHM minus
        a Gaussian's of the same FWHM (NaN where no star could be stacked).
    broadFwhm : `float`
        The broader of the two FWHMs (pixels): the wing Gaussian and the kernel's reach scale
        with it.
    hasWings : `bool`
        Either excess is above the configured ``wingExcessThreshold`` by more than twice its
        standard error.
    templateError, scienceError : `float`
        The excesses' standard errors (from the stars' scatter).
    """

    templateExcess: float
    scienceExcess: float
    broadFwhm: float
    hasWings: bool
    templateError: float = math.nan
    scienceError: float = math.nan


def _gaussianStamp(half: int, fwhm: float, dx: float, dy: float) -> np.ndarray:
    """A pixel-integrated round Gaussian of FWHM ``fwhm`` centred (dx, dy) from the centre
    pixel of a (2·half+1)² stamp (erf differences per axis)."""
    sigma = fwhm / (2.0 * math.sqrt(2.0 * math.log(2.0)))
    edges = np.arange(-half, half + 2) - 0.5
    scale = math.sqrt(2.0) * sigma
    px = np.diff([math.erf((e - dx) / scale) for e in edges])
    py = np.diff([math.erf((e - dy) / scale) for e in edges])
    return np.outer(py, px)


def wingExcess(
    mi: MaskedImage, x: np.ndarray, y: np.ndarray, fwhm: float, badBits: int
) -> tuple[float, float]:
    """One image's wing excess at the stars (x, y) (parent coordinates) and its standard
    error (see the module docstring). NaNs if no star's stamp lies inside the image with a
    positive flux.

    The stars' stamps, each sky-subtracted and normalised within the normalisation radius, are
    median-stacked pixel by pixel (a neighbour sits in other pixels of each stamp, so it does
    not bend the stack); so are pixel-integrated Gaussians of the measured FWHM at the same
    sub-pixel offsets, so that where the stars fall on the pixel grid cancels. The excess is
    the difference of the two stacks' flux fractions outside one FWHM. Its error: 1.2533 × the
    robust scatter of the per-star differences / √n."""
    normRadius = max(_NORM_FWHM * fwhm, 4.0)
    half = int(math.ceil(normRadius + 7.0))
    image = np.asarray(mi.image)
    mask = np.asarray(mi.mask)
    height, width = image.shape
    x0, y0 = mi.getXY0()
    offsets = np.arange(-half, half + 1, dtype=float)
    distance = np.hypot(offsets[None, :], offsets[:, None])
    annulus = (distance >= normRadius + 2.0) & (distance <= normRadius + 6.0)
    inside = distance <= normRadius
    core = distance <= fwhm
    # The stacks are filled in place (n, side, side) and median-stacked in place: lists of
    # stamps, their stacked copies and np.median's own copy were ~5 stacks at once, which on
    # a small image (4 MB for 50 stars of a 6 px FWHM) outweighed the image's own planes.
    side = 2 * half + 1
    starArray = np.empty((len(x), side, side))
    modelArray = np.empty((len(x), side, side))
    n = 0
    for xs, ys in zip(x, y, strict=True):
        ix = int(math.floor(xs + 0.5)) - x0
        iy = int(math.floor(ys + 0.5)) - y0
        if ix - half < 0 or iy - half < 0 or ix + half >= width or iy + half >= height:
            continue
        sl = (slice(iy - half, iy + half + 1), slice(ix - half, ix + half + 1))
        # The mask bits are looked at per stamp: an image-sized ``mask & badBits`` (an int32
        # and a bool plane) was the no-matched-image run's peak memory.
        if ((mask[sl] & badBits) != 0)[distance <= normRadius + 1.0].any():
            continue
        # The sky: the annulus's median, which a neighbour there hardly moves.
        stamp = np.asarray(image[sl], dtype=np.float64)
        stamp = stamp - float(np.median(stamp[annulus]))
        flux = float(stamp[inside].sum())
        if not (flux > 0 and math.isfinite(flux)):
            continue
        model = _gaussianStamp(half, fwhm, xs - x0 - ix, ys - y0 - iy)
        np.divide(stamp, flux, out=starArray[n])
        np.divide(model, model[inside].sum(), out=modelArray[n])
        n += 1
    if n == 0:
        return math.nan, math.nan
    starArray, modelArray = starArray[:n], modelArray[:n]

    def outside(stamps: np.ndarray) -> np.ndarray:
        return np.asarray(1.0 - stamps[..., core].sum(axis=-1) / stamps[..., inside].sum(axis=-1))

    perStar = outside(starArray) - outside(modelArray)
    # overwrite_input: the stacks are not needed after their medians (the same values).
    excess = float(
        outside(np.median(starArray, axis=0, overwrite_input=True))
        - outside(np.median(modelArray, axis=0, overwrite_input=True))
    )
    scatter = 1.4826 * float(np.median(np.abs(perStar - np.median(perStar))))
    # One star: no scatter to measure; its own value is not trusted (an infinite error).
    error = 1.2533 * scatter / math.sqrt(len(perStar)) if len(perStar) > 1 else math.inf
    return excess, error


def measurePsfWings(
    template: MaskedImage,
    science: MaskedImage,
    x: np.ndarray,
    y: np.ndarray,
    fwhms: tuple[float, float],
    badBits: int,
    threshold: float,
    snr: np.ndarray | None = None,
) -> PsfWings:
    """Both images' wing excesses at the kernel stars.

    Parameters
    ----------
    template, science : `MaskedImage`
        The two images, on one grid.
    x, y : `numpy.ndarray`
        The kernel stars (parent coordinates).
    fwhms : `tuple` [`float`, `float`]
        The template's and the science image's FWHMs (pixels).
    badBits : `int`
        A star whose stamp has one of these mask bits within the normalisation radius is
        left out.
    threshold : `float`
        ``hasWings`` when either excess is above it (``wingExcessThreshold``) by more than
        twice its standard error (a few noisy stars, or neighbours in their apertures, must
        not read as wings: 8 stars of a Gaussian 256² field measured 0.032 ± 0.028).
    snr : `numpy.ndarray`, optional
        The stars' S/N; the brightest `_MAX_STARS` are stacked.

    Returns
    -------
    wings : `PsfWings`
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if snr is not None and len(x) > _MAX_STARS:
        keep = np.argsort(-np.asarray(snr, dtype=np.float64), kind="stable")[:_MAX_STARS]
        x, y = x[keep], y[keep]
    elif len(x) > _MAX_STARS:
        x, y = x[:_MAX_STARS], y[:_MAX_STARS]
    measured = [
        wingExcess(mi, x, y, float(fwhm), badBits)
        for mi, fwhm in zip((template, science), fwhms, strict=True)
    ]
    hasWings = any(math.isfinite(e) and e - 2.0 * err > threshold for e, err in measured)
    (tExcess, tError), (sExcess, sError) = measured
    return PsfWings(tExcess, sExcess, float(max(fwhms)), hasWings, tError, sError)
