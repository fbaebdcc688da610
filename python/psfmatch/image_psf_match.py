# SPDX-License-Identifier: BSD-3-Clause
"""ImagePsfMatchTask: match and subtract two masked images on one pixel grid.

The image-level entry point of psfmatch (decision 5): find kernel sources, fit the spatially
varying matching kernel with `PsfMatchTask._solve`, convolve, and subtract.

Conventions
-----------
``mode="convolveTemplate"`` (the default) fits K and b with ``S ≈ K ⊗ T + b`` and returns

    D = S − (K ⊗ T + b),   Var(D) = Var(S) + K² ⊗ Var(T),   mask(D) = mask(S) | dilated mask(T)

in the science image's units and PSF. ``mode="convolveScience"`` fits ``T ≈ K ⊗ S + b`` and
returns the difference in the science image's units as well,

    D = (K ⊗ S + b − T) / κ,   Var(D) = (K² ⊗ Var(S) + Var(T)) / κ²,

with κ the kernel sum at the image centre; D then has the template's PSF. ``mode="auto"``
convolves the image with the narrower PSF (the template when the FWHMs are equal), so the
kernel never has to deconvolve. With ``doSubtractBackground`` off, b is fitted but left in D.

Pixels within a kernel half-width of the edge cannot be convolved: in the matched image they
are copies of the input with the ``EDGE`` bit; in the difference they are NaN with variance
+inf and the ``EDGE`` and ``NO_DATA`` bits. Input pixels that are NaN or infinite must carry a
mask bit; they are treated as 0 in the convolution and every output pixel they reach carries
their bits.

``mode="preconvolve"`` makes the *score image* (ALGORITHM.md §7.4): the science image is
first convolved with its own PSF (reflected, unit sum: a matched filter), the kernel is fitted
with ``P ⊗ S ≈ K ⊗ T + b`` on the stars of the inner box (the science box shrunk by P's
half-width), and

    score = P ⊗ S − (K ⊗ T + b),   Var = P² ⊗ Var(S) + K² ⊗ Var(T),

is decorrelated in score mode: a map of point-source likelihood whose peak over its noise is
the PSF-fit S/N of a point source. Pixels outside the inner box are NaN with ``EDGE`` and
``NO_DATA``. The science PSF is a given image or PSF object (``sciencePsf``) or a pixel-
integrated Gaussian of the measured science FWHM.

Decorrelation (``doDecorrelation``, on by default as in the reference; `DecorrelateALKernelTask`)
whitens the noise that the convolution correlated, with a filter of unit DC gain (fluxes are
unchanged), and filters the difference image's PSF the same way (``differencePsf``). The
undecorrelated difference is kept as ``subtractedMaskedImageRaw``.

Difference-image sources (``doDetectDiaSources``): peaks of the PSF-matched-filter S/N of D
(of D/σ itself for a score image) above ``diaSourceThreshold``, positive and negative, are
returned as ``diaSources`` and associated within ``diaSourceMatchRadius`` FWHMs (of the
difference PSF) with the template's detections (``refAssociated``, standing for the
reference's catalogue of known objects) and with the science image's kernel sources
(``srcAssociated``: the stars the kernel was fitted on, as the reference's ``selectSources``).
A real transient is in neither; static stars that leave residuals are in one or both.

Metadata (besides `PsfMatchTask`'s): ``templatePsfSize``, ``sciencePsfSize`` (FWHM, pixels),
``convolvedExposure`` ("Template", "Science" or "Preconvolution"), ``preconvolvedSciencePsfSize``,
``nPsfSources`` (kernel candidates), ``templateCoveragePercent``,
``scaleTemplateVarianceFactor``, ``scaleScienceVarianceFactor``, the ``ALBasis*`` keys of the
basis; with decorrelation ``decorrelationSvar``, ``decorrelationTvar`` (the clipped mean
variances it used), ``decorrelationKernelSum``, ``decorrelated`` (False if the variances were
unusable) and ``differencePsfSize`` (FWHM of the difference PSF from its second moments);
with detection ``NFalsePositivesTotal``,
``NFalsePositivesRefAssociated``, ``NFalsePositivesSrcAssociated`` (a source may be both) and
``NFalsePositivesUnassociated``.

Debugging switches (`psfmatch.debug`, module name ``"psfmatch.image_psf_match"``, as the
reference's ImagePsfMatchTask): ``display`` with ``displayDiffIm`` draws the difference image
with its mask planes overlaid at ``maskTransparency`` (0 opaque to 100 invisible) and the kernel
candidates marked (the rejected ones too with ``showBadCandidates``), by
`psfmatch.plot.plotDifference`; ``plotDir`` says where to save it when there is no display.
The figures of the fit itself are switched on for ``"psfmatch.psf_match"`` (`PsfMatchTask`).
"""

from __future__ import annotations

__all__ = ["ImagePsfMatchConfig", "ImagePsfMatchTask", "TemplateAnalysis"]

import math
import zlib
from dataclasses import dataclass
from typing import Any

import lsst.pex.config as pexConfig
import numpy as np
import sep
from astropy.table import Table
from lsst.utils.timer import timeMethod

from . import _core
from . import debug as psfmatchDebug
from ._placement import Placement, cropView, placeTemplate, starOffset, votesFor
from .basis import makeKernelBasisList
from .candidate import KernelCandidate
from .config import PsfMatchConfigAL, PsfMatchConfigDF, makeKernelControl
from .convolution import _allFinite, _checkFinite, _convolveChecked, convolve
from .decorrelate import (
    DecorrelateALKernelTask,
    _fftShape,
    _filterGrid,
    _irfft2,
    _rfft2,
    _spectrumOfSmall,
)
from .errors import (
    InsufficientKernelSourcesError,
    InvalidInputError,
    OriginMismatchError,
    PsfMatchError,
    TemplateCoverageError,
)
from .image import Mask, MaskedImage, _rowBands
from .psf_match import PsfMatchTask
from .selection import (
    _R50_SUBPIX,
    KernelSourceSelectionConfig,
    _pairsWithin,
    _stampHasBits,
    detectSources,
    selectKernelSources,
)
from .task import Struct

_STATUS_NAMES = {
    _core.KernelCandidate.GOOD: "GOOD",
    _core.KernelCandidate.BAD: "BAD",
    _core.KernelCandidate.UNKNOWN: "UNKNOWN",
}


class ImagePsfMatchConfig(pexConfig.Config):
    """Configuration of `ImagePsfMatchTask`."""

    kernel = pexConfig.ConfigChoiceField(
        doc="The kernel basis and fit: Alard-Lupton (AL) or delta functions (DF).",
        typemap={"AL": PsfMatchConfigAL, "DF": PsfMatchConfigDF},
        default="AL",
    )
    selection: pexConfig.ConfigField[KernelSourceSelectionConfig] = pexConfig.ConfigField(
        dtype=KernelSourceSelectionConfig, doc="How kernel sources are found and filtered."
    )
    mode: pexConfig.ChoiceField[str] = pexConfig.ChoiceField(
        dtype=str,
        default="convolveTemplate",
        allowed={
            "convolveTemplate": "Convolve the template to the science image's PSF.",
            "convolveScience": "Convolve the science image to the template's PSF.",
            "auto": "Convolve whichever image has the narrower PSF.",
            "preconvolve": "Convolve the science image with its own PSF and the template to "
            "that: the score image (ALGORITHM.md §7.4).",
        },
        doc="Which image is convolved.",
    )
    requiredTemplateFraction: pexConfig.Field[float] = pexConfig.RangeField(
        dtype=float,
        default=0.1,
        min=0.0,
        max=1.0,
        doc="The least fraction of the science image's pixels that the template must cover "
        "with data (inside its box, without NO_DATA) for a subtraction to be tried; less "
        "raises TemplateCoverageError. The reference's field of the same name and meaning.",
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
    diaSourceBadMaskPlanes: pexConfig.ListField[str] = pexConfig.ListField(
        dtype=str,
        default=["NO_DATA", "EDGE", "SAT", "BAD", "CR"],
        doc="Difference-image pixels with these planes take no part in detection. Unknown "
        "plane names are ignored.",
    )

    def setDefaults(self) -> None:
        super().setDefaults()
        for name in ("AL", "DF"):
            self.kernel[name].fitForBackground = True


@dataclass(frozen=True, eq=False)
class TemplateAnalysis:
    """The work `ImagePsfMatchTask` does on a template alone, done once for many science images.

    Made by `ImagePsfMatchTask.analyzeTemplate` (or `psfmatch.api.analyzeTemplate`) and passed
    as ``templateAnalysis`` to `ImagePsfMatchTask.subtractMaskedImages`,
    `~ImagePsfMatchTask.matchMaskedImages` or `psfmatch.subtract`, it replaces the template's
    variance rescaling measurement and its sep detection for the association of
    difference-image sources. The result is bit for bit the one obtained without it. The
    kernel sources are not part of it: they are the science image's detections, measured in
    the template at their positions, so they belong to the pair (as does the template's FWHM,
    measured on them).

    Attributes
    ----------
    shape : (`int`, `int`)
        ``(ny, nx)`` of the template. (Its origin does not matter: every detection is in
        array coordinates.)
    checksum : `int`
        CRC-32 of the template's image, mask and variance planes (with their shapes and
        dtypes): an analysis is only accepted for the very pixels it was made from.
    settings : `tuple`
        The configuration values the analysis depends on, as ``(name, value)`` pairs; a task
        with other values refuses it.
    varianceScaleFactor : `float` or None
        The measured variance scale factor (NaN if it could not be measured); None when
        ``doScaleVariance`` is off.
    diaDetections : `numpy.ndarray` or None
        Its detections at ``diaSourceThreshold``, read-only; None without
        ``doDetectDiaSources``.
    """

    shape: tuple[int, int]
    checksum: int
    settings: tuple[tuple[str, Any], ...]
    varianceScaleFactor: float | None
    diaDetections: np.ndarray | None

    @property
    def nbytes(self) -> int:
        """Memory held by the detections, in bytes."""
        return 0 if self.diaDetections is None else int(self.diaDetections.nbytes)


def _pixelChecksum(mi: MaskedImage) -> int:
    """CRC-32 of a masked image's planes, shapes and dtypes (an identity check, not security)."""
    planes = (mi.image, mi.mask, mi.variance)
    layout = repr([(a.shape, a.dtype.str) for a in planes]).encode()
    crc = zlib.crc32(layout)
    for array in planes:
        crc = zlib.crc32(np.ascontiguousarray(array).reshape(-1).view(np.uint8).data, crc)
    return crc


def _contiguous(mi: MaskedImage) -> MaskedImage:
    """``mi`` with C-contiguous planes (copies of those that are not)."""
    image, mask, variance = (np.ascontiguousarray(p) for p in (mi.image, mi.mask, mi.variance))
    if image is mi.image and mask is mi.mask and variance is mi.variance:
        return mi
    return MaskedImage(image, mask, variance, xy0=mi.getXY0())


def _readOnly(array: np.ndarray) -> np.ndarray:
    array.flags.writeable = False
    return array


def _dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """Grow a boolean mask by a (2·radius+1)² box: OR over the shifts along x, then along y
    (the box is separable), on boolean arrays."""
    out = mask.copy()
    for axis in (1, 0):
        grown = out.copy()
        n = out.shape[axis]
        for shift in range(1, min(radius, n - 1) + 1):
            lo = [slice(None)] * 2
            hi = [slice(None)] * 2
            lo[axis], hi[axis] = slice(0, n - shift), slice(shift, n)
            grown[tuple(lo)] |= out[tuple(hi)]
            grown[tuple(hi)] |= out[tuple(lo)]
        out = grown
    return out


def _varianceScaleFactor(mi: MaskedImage, badBits: int) -> float:
    """(0.7413·IQR of (image − background)/sqrt(variance))² over sky pixels, or NaN.

    Sky pixels are the usable ones outside every source: sep's segmentation at 4σ of the
    smoothed image, grown by 4 pixels, so that the wings of bright stars do not widen the
    distribution.
    """
    # sep works in single precision anyway: a float32 image is given to it as it is.
    dtype: Any = np.float32 if mi.image.dtype == np.float32 else np.float64
    data = np.ascontiguousarray(mi.image, dtype=dtype)
    var = np.asarray(mi.variance, dtype=dtype)
    # Per-pixel work a band of rows at a time: each image-sized temporary costs ~0.1 s of
    # fresh memory at 4096² on the project's VM (this function made a dozen).
    bands = _rowBands(data.shape[0])
    usable = np.empty(data.shape, dtype=bool)
    for band in bands:
        u = (mi.mask[band] & badBits) == 0
        u &= np.isfinite(data[band])
        u &= np.isfinite(var[band])
        u &= var[band] > 0
        usable[band] = u
    if np.count_nonzero(usable) < 100:
        return math.nan
    unusable = ~usable
    data = np.where(usable, data, dtype(0.0))
    background = sep.Background(data, mask=unusable)
    background.subfrom(data)  # in place: data − sky, without a full-size sky map
    sub = data
    varUsable = np.where(usable, var, dtype(1.0))
    # Source pixels: sep's segmentation at 1.5σ of the per-pixel noise after its 3×3 "conv"
    # smoothing (whose own noise is 6/16 of the per-pixel σ: this is 4σ of the smoothed
    # image, as sep's slower matched filter puts it), without deblending (only the pixels
    # matter here).
    _, segmentation = sep.extract(
        sub,
        1.5,
        var=varUsable,
        mask=unusable,
        minarea=5,
        segmentation_map=True,
        filter_type="conv",
        deblend_nthresh=1,
    )
    sky = _dilate(segmentation > 0, 4)
    np.logical_not(sky, out=sky)
    sky &= usable
    count = int(np.count_nonzero(sky))
    if count < 100:
        return math.nan
    # The normalised sky residuals in raster order, as sub[sky] / sqrt(var[sky]) in float64
    # would give them, gathered band by band into one array that the percentile may reorder.
    z = np.empty(count)
    start = 0
    for band in bands:
        inBand = sky[band]
        stop = start + int(np.count_nonzero(inBand))
        z[start:stop] = sub[band][inBand].astype(np.float64)
        z[start:stop] /= np.sqrt(varUsable[band][inBand].astype(np.float64))
        start = stop
    q25, q75 = np.percentile(z, [25.0, 75.0], overwrite_input=True)
    return float((0.741301109 * (q75 - q25)) ** 2)


def _asCandidatePositions(candidateList: Any) -> tuple[np.ndarray, np.ndarray]:
    """x, y arrays from a table with ``x``/``y`` columns or a sequence of (x, y) pairs."""
    if hasattr(candidateList, "colnames") or isinstance(candidateList, dict):
        try:
            x, y = candidateList["x"], candidateList["y"]
        except KeyError as err:
            raise InvalidInputError(
                f"candidateList: a table of positions needs x and y columns; missing {err}"
            ) from None
    else:
        try:
            arr = np.asarray(candidateList, dtype=float)
        except (TypeError, ValueError) as err:
            raise InvalidInputError(
                f"candidateList: expected (x, y) pairs or a table with x and y columns: {err}"
            ) from err
        if arr.size == 0:
            arr = arr.reshape(0, 2)
        if arr.ndim != 2 or arr.shape[1] != 2:
            raise InvalidInputError(
                f"candidateList: expected (x, y) pairs or a table with x and y columns, got an "
                f"array of shape {arr.shape}"
            )
        x, y = arr[:, 0], arr[:, 1]
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise InvalidInputError("candidateList: positions must be finite")
    return x, y


_FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))

_CONVOLVED_NAMES = {
    "convolveTemplate": "Template",
    "convolveScience": "Science",
    "preconvolve": "Preconvolution",
}


def _gaussianPsfImage(fwhm: float) -> np.ndarray:
    """A unit-sum, pixel-integrated round Gaussian of FWHM ``fwhm`` pixels, of odd size
    2·ceil(4σ) + 1 (the flux beyond 4σ per axis, 6e-5, is far below the fit's precision)."""
    sigma = fwhm / _FWHM_PER_SIGMA
    half = max(2, math.ceil(4.0 * sigma))
    edges = (np.arange(-half, half + 2) - 0.5) / (math.sqrt(2.0) * sigma)
    cdf = np.array([math.erf(e) for e in edges])
    profile = np.diff(cdf)
    profile /= profile.sum()
    return np.outer(profile, profile)


def _psfImage(psf: Any, fwhm: float, x: float, y: float, name: str) -> np.ndarray:
    """A unit-sum, odd-sized PSF image: ``psf`` evaluated at (x, y) if it is a PSF object (with
    ``computeKernelImage(x, y)``), ``psf`` itself if it is an array, else a Gaussian of
    ``fwhm``."""
    if psf is None:
        return _gaussianPsfImage(fwhm)
    value = psf.computeKernelImage(x, y) if hasattr(psf, "computeKernelImage") else psf
    try:
        array = np.array(getattr(value, "array", value), dtype=np.float64)
    except (TypeError, ValueError):
        raise InvalidInputError(
            f"{name}: expected a 2-D PSF image or a PSF object, got {type(psf).__name__}"
        ) from None
    if array.ndim != 2 or array.shape[0] % 2 == 0 or array.shape[1] % 2 == 0:
        raise InvalidInputError(f"{name}: expected an odd-sized 2-D image, got shape {array.shape}")
    total = float(array.sum()) if np.isfinite(array).all() else math.nan
    if not total > 0:
        raise InvalidInputError(f"{name}: the PSF image must be finite with a positive sum")
    return array / total


def _psfFwhm(psf: np.ndarray) -> float:
    """FWHM (pixels) of a PSF image from its second moments: 2.3548·sqrt((Ixx + Iyy)/2)."""
    ny, nx = psf.shape
    yy, xx = np.mgrid[:ny, :nx]
    total = psf.sum()
    xc, yc = (psf * xx).sum() / total, (psf * yy).sum() / total
    ixx = (psf * (xx - xc) ** 2).sum() / total
    iyy = (psf * (yy - yc) ** 2).sum() / total
    second = 0.5 * (ixx + iyy)
    return float(_FWHM_PER_SIGMA * math.sqrt(second)) if second > 0 else math.nan


def _convolveSmall(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The full linear convolution of two small odd-sized images (odd size, centred)."""
    shape = (a.shape[0] + b.shape[0] - 1, a.shape[1] + b.shape[1] - 1)
    out = _irfft2(_rfft2(a, 1, shape) * _rfft2(b, 1, shape), shape, 1)
    return np.asarray(out)


def _solvedOrig(cand: Any) -> Any:
    """A candidate's first (ORIG) kernel solution if it was solved, else None (no candidate,
    never built, or left unsolved by the condition-number check)."""
    if cand is None or not cand.isInitialized():
        return None
    solution = cand.getKernelSolution(_core.KernelCandidate.ORIG)
    try:
        solution.getKsum()
    except PsfMatchError:  # built but not solved
        return None
    return solution


def _usableDifferencePixels(
    difference: MaskedImage, rows: slice, badBits: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For ``rows`` of D: the usable pixels (finite, positive variance, none of
    ``badBits``), the weights 1/σ² there (else 0) and D there (else 0), in float64."""
    image = np.asarray(difference.image[rows], dtype=np.float64)
    var = np.asarray(difference.variance[rows], dtype=np.float64)
    usable = np.isfinite(image) & np.isfinite(var) & (var > 0)
    usable &= (difference.mask[rows] & badBits) == 0
    weight = np.where(usable, 1.0 / np.where(usable, var, 1.0), 0.0)
    data = np.where(usable, image, 0.0)
    return usable, weight, data


def _medianFilled(mi: MaskedImage, badBits: int) -> MaskedImage:
    """A copy whose pixels with any of ``badBits`` hold the median of the others (the
    reference's "interpolation" before preconvolution)."""
    out = mi.clone()
    bad = (out.mask & badBits) != 0
    if bad.any() and (~bad).any():
        out.image[bad] = np.median(out.image[~bad])
    return out


def _detectDifferenceSources(
    difference: MaskedImage,
    psf: np.ndarray,
    threshold: float,
    badBits: int,
    *,
    isScore: bool = False,
    nThreads: int = 0,
) -> Table:
    """Positive and negative point sources of a difference image above a S/N threshold.

    Detection is on the S/N of the PSF-fit flux at each pixel (the matched filter with the
    unit-sum difference PSF p and per-pixel weights 1/σ²):

        flux = Σ p·D/σ² / Σ p²/σ²,   σ_flux = (Σ p²/σ²)^(-1/2),   S/N = flux / σ_flux,

    the optimal point-source statistic for white noise (so for a decorrelated difference). A
    score image already is that filter: its S/N is D/σ and its flux D / max(p). Each connected
    region of pixels above ``threshold`` (sep, ``minarea`` 1, no further filtering) is one
    source, measured at its peak; pixels with ``badBits``, a non-finite value or a variance
    that is not positive take no part.

    Returns
    -------
    sources : `astropy.table.Table`
        ``x``, ``y`` (parent, sep's barycentre of the region), ``flux``, ``fluxErr``, ``snr``
        (signed, at the peak), ``isNegative``, ``npix``, ``xPeak``, ``yPeak``.
    """
    # Band by band wherever the pixels are independent: at 4096² each image-sized float64
    # temporary is 134 MB, and fresh memory costs ~2 ms/MB to touch on the project's VM.
    ny, nx = difference.image.shape
    usable = np.empty((ny, nx), dtype=bool)
    snr = np.empty((ny, nx), dtype=np.float64)
    bands = _rowBands(ny)
    with np.errstate(divide="ignore", invalid="ignore"):
        if isScore:
            peak = float(psf.max())
            for band in bands:
                u, weight, data = _usableDifferencePixels(difference, band, badBits)
                usable[band] = u
                snr[band] = np.where(u, data * np.sqrt(weight), 0.0)

            def fluxAt(iy: int, ix: int) -> tuple[float, float]:
                ok = bool(usable[iy, ix])
                d = np.float64(difference.image[iy, ix]) if ok else np.float64(0.0)
                v = np.float64(difference.variance[iy, ix]) if ok else np.float64(np.inf)
                return float(d / peak), float(np.sqrt(v) / peak)

        else:
            # The PSF-fit flux's numerator Σ p·D/σ² and denominator Σ p²/σ², each a
            # correlation of a zero-padded grid written band by band.
            grid = _fftShape((ny, nx), psf.shape)
            numGrid = np.zeros(grid)
            denGrid = np.zeros(grid)
            for band in bands:
                u, weight, data = _usableDifferencePixels(difference, band, badBits)
                usable[band] = u
                numGrid[band, :nx] = data * weight
                denGrid[band, :nx] = weight
            # Correlation: the kernels' conjugate spectra (numGrid, denGrid are overwritten).
            numerator = _filterGrid(
                numGrid, np.conj(_spectrumOfSmall(psf, grid, nThreads)), (ny, nx), nThreads
            )
            del numGrid
            denominator = _filterGrid(
                denGrid, np.conj(_spectrumOfSmall(psf * psf, grid, nThreads)), (ny, nx), nThreads
            )
            del denGrid
            floor = 1e-12 * float(denominator.max(initial=0.0))
            for band in bands:
                den = denominator[band]
                good = den > floor
                usable[band] &= good
                flux = np.where(good, numerator[band] / np.where(good, den, 1.0), 0.0)
                fluxErr = np.where(good, 1.0 / np.sqrt(np.where(good, den, 1.0)), np.inf)
                snr[band] = np.where(usable[band], flux / fluxErr, 0.0)

            def fluxAt(iy: int, ix: int) -> tuple[float, float]:
                den = denominator[iy, ix]
                if not den > floor:
                    return 0.0, math.inf
                return float(numerator[iy, ix] / den), float(1.0 / np.sqrt(den))

    names = ("x", "y", "flux", "fluxErr", "snr", "isNegative", "npix", "xPeak", "yPeak")
    rows: dict[str, list[Any]] = {name: [] for name in names}
    x0, y0 = difference.getXY0()
    unusable = ~usable
    for sign in (1.0, -1.0):
        if sign < 0:
            np.negative(snr, out=snr)  # exact; the negative sources are the peaks of −S/N
        objects = sep.extract(snr, float(threshold), mask=unusable, minarea=1, filter_kernel=None)
        for obj in objects:
            ix, iy = int(obj["xpeak"]), int(obj["ypeak"])
            pointFlux, pointFluxErr = fluxAt(iy, ix)
            rows["x"].append(float(obj["x"]) + x0)
            rows["y"].append(float(obj["y"]) + y0)
            rows["flux"].append(pointFlux)
            rows["fluxErr"].append(pointFluxErr)
            rows["snr"].append(float(sign * snr[iy, ix]))
            rows["isNegative"].append(sign < 0)
            rows["npix"].append(int(obj["npix"]))
            rows["xPeak"].append(ix + x0)
            rows["yPeak"].append(iy + y0)
    return Table(
        rows, dtype=[float, float, float, float, float, bool, np.int64, np.int64, np.int64]
    )


class ImagePsfMatchTask(PsfMatchTask):
    """Match the PSFs of two masked images on one pixel grid, and subtract them.

    See the module docstring for the conventions; `PsfMatchTask` for the fit and its metadata.

    Examples
    --------
    >>> task = ImagePsfMatchTask()                                      # doctest: +SKIP
    >>> result = task.subtractMaskedImages(template, science)           # doctest: +SKIP
    >>> result.subtractedMaskedImage.image                              # doctest: +SKIP
    """

    ConfigClass = ImagePsfMatchConfig
    _DefaultName = "imagePsfMatch"
    config: ImagePsfMatchConfig
    decorrelate: DecorrelateALKernelTask

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        try:
            self.config.validate()
        except (pexConfig.FieldValidationError, ValueError, TypeError) as err:
            raise InvalidInputError(f"config: {err}") from err
        self.makeSubtask("decorrelate")

    # -- inputs ---------------------------------------------------------------------------

    def _badBits(self) -> int:
        planes = set(self.kConfig.badMaskPlanes) | set(self.config.selection.excludeMaskPlanes)
        return Mask.getPlaneBitMask(sorted(planes), skipUnknown=True)

    def _prepareInputs(
        self, templateMaskedImage: Any, scienceMaskedImage: Any
    ) -> tuple[MaskedImage, MaskedImage, Placement | None]:
        """Check the inputs and return working copies (masked non-finite pixels zeroed): the
        whole template, the science image and, when the template's box is not the science
        image's, the template placed on the science box (`_placeTemplate`)."""
        for name, mi in (
            ("templateMaskedImage", templateMaskedImage),
            ("scienceMaskedImage", scienceMaskedImage),
        ):
            if not isinstance(mi, MaskedImage):
                raise InvalidInputError(f"{name}: expected a MaskedImage, got {type(mi).__name__}")
        template = self._prepareOne(templateMaskedImage, "templateMaskedImage")
        science = self._prepareOne(scienceMaskedImage, "scienceMaskedImage")
        placement = None
        onScience = template
        if template.getBBox() != science.getBBox():
            placement = self._placeTemplate(template, science)
            onScience = cropView(placement.wide, science.getBBox())
        # The bits of a pixel in either image, a band of rows at a time: no image-sized
        # temporaries (three of them took 0.15 s of fresh memory at 4096² on a VM).
        badBits, noData = self._badBits(), Mask.getPlaneBitMask("NO_DATA")
        anyUsable, uncovered, templateNoData = False, 0, 0
        ny = int(science.getDimensions()[1])
        for band in _rowBands(ny):
            either = onScience.mask[band] | science.mask[band]
            uncovered += int(np.count_nonzero(either & noData))
            templateNoData += int(np.count_nonzero(onScience.mask[band] & noData))
            anyUsable = anyUsable or bool(np.any((either & badBits) == 0))
        if not anyUsable:
            raise InvalidInputError(
                "every pixel is masked in the template or the science image (mask planes "
                f"{sorted(set(self.kConfig.badMaskPlanes))}); nothing to match"
            )
        nPixels = science.mask.size
        coverage = 1.0 - templateNoData / nPixels
        self.metadata["templateCoveragePercent"] = 100.0 * (1.0 - uncovered / nPixels)
        self.metadata["templateCoveredFraction"] = coverage
        required = float(self.config.requiredTemplateFraction)
        if coverage < required:
            raise TemplateCoverageError(
                f"the template covers {100 * coverage:.3g}% of the science image (box "
                f"{science.getBBox()}) with data, less than requiredTemplateFraction = "
                f"{required:g} ({100 * required:g}%); the template's box is "
                f"{templateMaskedImage.getBBox()}",
                coverage,
            )
        return template, science, placement

    def _placeTemplate(self, template: MaskedImage, science: MaskedImage) -> Placement:
        """The template on the science box by their origins, after checking that the stars
        agree with the origins (`OriginMismatchError` if they clearly do not)."""
        kConfig = self.kConfig
        margin = max(int(kConfig.kernelSize), int(getattr(kConfig, "kernelSizeMax", 0))) // 2
        (tx, ty), (sx, sy) = template.getXY0(), science.getXY0()
        originOffset = (tx - sx, ty - sy)
        self._checkOriginsAgainstStars(template, science, originOffset)
        placement = placeTemplate(template, science.getBBox(), margin)
        self.log.info(
            "Template box %s placed on the science box %s by their origins: its pixel (0, 0) "
            "on science pixel %s; %.1f%% of the science image covered",
            template.getBBox(),
            science.getBBox(),
            originOffset,
            100.0 * placement.coveredFraction,
        )
        self.metadata["templatePlacedByOrigin"] = True
        return placement

    def _checkOriginsAgainstStars(
        self, template: MaskedImage, science: MaskedImage, originOffset: tuple[int, int]
    ) -> None:
        """Raise `OriginMismatchError` when the brightest stars of the two images match at a
        shift other than the one their origins give (``originOffset``: the science pixel of
        the template's pixel (0, 0)). Silent when the stars cannot tell (too few, or no
        shift that a third of them agree on)."""
        badBits = self._badBits()
        threshold = max(10.0, float(self.config.selection.detectionThreshold))
        sStars = detectSources(science, threshold, badBits, measureRadii=False)
        tStars = detectSources(template, threshold, badBits, measureRadii=False)
        found = starOffset(sStars, tStars)
        if found is None:
            self.log.debug("Origins not checked against the stars: too few stars match")
            return
        dx, dy = originOffset
        agree = abs(found.dx - dx) <= 1.0 and abs(found.dy - dy) <= 1.0
        if agree or votesFor(sStars, tStars, dx, dy) >= found.nMatched // 2:
            return
        (tx, ty), (sx, sy) = template.getXY0(), science.getXY0()
        raise OriginMismatchError(
            f"the images' origins and their stars disagree: by the origins (template xy0 "
            f"({tx}, {ty}), science xy0 ({sx}, {sy})) the template's pixel (0, 0) lies on "
            f"the science image's pixel ({dx}, {dy}), but {found.nMatched} of their brightest "
            f"stars match with it on pixel ({found.dx:.1f}, {found.dy:.1f}). If the two "
            "images are already on one pixel grid, ignore the origins (subtract(..., "
            "ignoreOrigins=True); command line --ignore-origins); otherwise correct the "
            "origins in the headers (CRVAL1A/CRVAL2A or LTV1/LTV2)",
            (int(dx), int(dy)),
            (found.dx, found.dy),
        )

    def _checkStampFits(self, mi: MaskedImage, kernelSize: int, what: str) -> None:
        """Raise `InvalidInputError` unless a candidate stamp (2·kernelSize+1 pixels wide, so
        that the kernel's reach lies inside it) fits in the image."""
        stamp = 2 * int(kernelSize) + 1
        width, height = mi.getDimensions()
        if width < stamp or height < stamp:
            raise InvalidInputError(
                f"the {width} x {height} image is too small for the {what} of "
                f"{kernelSize} x {kernelSize} pixels: a kernel source's stamp is "
                f"{stamp} x {stamp}; lower kernelSize (kernelSizeMin, kernelSizeMax) or use a "
                "larger image"
            )

    def _checkPositiveVariance(self, mi: MaskedImage, name: str, original: MaskedImage) -> None:
        """Raise `InvalidInputError` if the variance of ``mi`` (a working copy of ``original``)
        is 0 at a usable pixel: the image that is not convolved weights the fit and the
        difference; a zero there makes every candidate's χ² infinite."""
        if mi.variance.min() > 0:  # the usual case, in one pass (NaN fails the test)
            return
        badBits = self._badBits()
        finite = np.isfinite(original.image) & np.isfinite(original.variance)
        zero = (mi.variance <= 0) & ((mi.mask & badBits) == 0) & finite
        if zero.any():
            y, x = np.argwhere(zero)[0]
            x0, y0 = mi.getXY0()
            raise InvalidInputError(
                f"{name}: the variance is 0 at {int(zero.sum())} unmasked pixel(s), the first "
                f"at (x, y) = ({x + x0}, {y + y0}); the image that is not convolved needs a "
                "positive variance wherever it is not masked (give its variance, or mask "
                "those pixels)"
            )

    @staticmethod
    def _prepareOne(mi: MaskedImage, name: str) -> MaskedImage:
        """The working version of one input, checked: read-only views of its own planes, or,
        when it has (masked) non-finite pixels, a copy with those zeroed. A view costs no
        memory (a 4096² pair's copies were 400 MB) and cannot be written by mistake."""
        # The usual, clean input is accepted from each plane's min and max (no temporaries);
        # a variance whose minimum is ≥ 0 has no negative pixel.
        anyNonFinite = False
        clean = _allFinite(mi.image) and _allFinite(mi.variance) and mi.variance.min() >= 0
        if not clean:
            nonFinite = ~np.isfinite(mi.image)
            nonFinite |= ~np.isfinite(mi.variance)
            anyNonFinite = bool(nonFinite.any())
            if anyNonFinite:
                anyBit = -1  # a non-finite pixel is acceptable when it carries any mask bit
                _checkFinite(mi, name, anyBit)
            negative = mi.variance < 0
            if negative.any():
                y, x = np.argwhere(negative)[0]
                raise InvalidInputError(
                    f"{name}: the variance is negative at (x, y) = ({x + mi.getXY0()[0]}, "
                    f"{y + mi.getXY0()[1]})"
                )
        if not anyNonFinite:
            return MaskedImage(
                _readOnly(mi.image.view()),
                _readOnly(mi.mask.view()),
                _readOnly(mi.variance.view()),
                xy0=mi.getXY0(),
            )
        work = mi.clone()
        work.image[nonFinite] = 0.0
        work.variance[nonFinite] = 0.0
        return work

    def _scaleVariance(self, mi: MaskedImage, which: str, factor: float | None = None) -> None:
        """Rescale ``mi``'s variance in place by the measured (or given) factor, if usable."""
        key = f"scale{which}VarianceFactor"
        if factor is None:
            factor = _varianceScaleFactor(mi, self._badBits())
        limit = self.config.maxVarianceScaleFactor
        if not self._varianceScaleUsable(factor):
            self.log.warning(
                "%s variance not rescaled: the measured factor %.4g is outside [%.3g, %.3g]; "
                "the variance plane does not describe the pixel noise",
                which,
                factor,
                1.0 / limit,
                limit,
            )
            self.metadata[key] = float(factor) if math.isfinite(factor) else "nan"
            self.metadata[f"scale{which}VarianceApplied"] = False
            return
        # A new plane: the working version may be a view of the caller's.
        mi.variance = mi.variance * mi.variance.dtype.type(factor)
        self.metadata[key] = factor
        self.metadata[f"scale{which}VarianceApplied"] = True

    def _varianceScaleUsable(self, factor: float) -> bool:
        limit = self.config.maxVarianceScaleFactor
        return math.isfinite(factor) and 1.0 / limit <= factor <= limit

    # -- the template alone ---------------------------------------------------------------

    def _templateSettings(self) -> tuple[tuple[str, Any], ...]:
        """The configuration values `analyzeTemplate`'s answer depends on."""
        config = self.config
        return (
            ("badBits", int(self._badBits())),
            ("doScaleVariance", bool(config.doScaleVariance)),
            ("maxVarianceScaleFactor", float(config.maxVarianceScaleFactor)),
            ("doDetectDiaSources", bool(config.doDetectDiaSources)),
            ("diaSourceThreshold", float(config.diaSourceThreshold)),
            ("medianFilled", config.mode == "preconvolve"),
        )

    @timeMethod
    def analyzeTemplate(self, templateMaskedImage: MaskedImage) -> TemplateAnalysis:
        """Do the work that depends on the template alone, once for many science images.

        Parameters
        ----------
        templateMaskedImage : `MaskedImage`
            The template; never modified.

        Returns
        -------
        analysis : `TemplateAnalysis`
            To pass as ``templateAnalysis`` to `subtractMaskedImages` or `matchMaskedImages`
            of a task with the same configuration (the values in ``analysis.settings``), with
            this same template: the answer is then bit for bit the one without it.

        Raises
        ------
        InvalidInputError
            Not a `MaskedImage`, NaNs outside the mask, a negative variance.
        """
        if not isinstance(templateMaskedImage, MaskedImage):
            raise InvalidInputError(
                f"templateMaskedImage: expected a MaskedImage, got "
                f"{type(templateMaskedImage).__name__}"
            )
        # The same steps, on the same working copy, as _fit.
        work = self._prepareOne(templateMaskedImage, "templateMaskedImage")
        badBits = self._badBits()
        factor: float | None = None
        if self.config.doScaleVariance:
            factor = _varianceScaleFactor(work, badBits)
            if self._varianceScaleUsable(factor):
                work.variance = work.variance * work.variance.dtype.type(factor)
        diaDetections = None
        if self.config.doDetectDiaSources:
            filled = _medianFilled(work, badBits) if self.config.mode == "preconvolve" else work
            diaDetections = _readOnly(
                detectSources(filled, self.config.diaSourceThreshold, badBits, measureRadii=False)
            )
        ny, nx = templateMaskedImage.image.shape
        return TemplateAnalysis(
            shape=(int(ny), int(nx)),
            checksum=_pixelChecksum(templateMaskedImage),
            settings=self._templateSettings(),
            varianceScaleFactor=factor,
            diaDetections=diaDetections,
        )

    def _checkTemplateAnalysis(self, analysis: Any, template: MaskedImage) -> TemplateAnalysis:
        """``analysis`` if it was made from ``template`` with this task's settings."""
        if not isinstance(analysis, TemplateAnalysis):
            raise InvalidInputError(
                f"templateAnalysis: expected a TemplateAnalysis, got {type(analysis).__name__}"
            )
        settings = self._templateSettings()
        if analysis.settings != settings:
            differ = [
                f"{name} {theirs!r} (this task: {ours!r})"
                for (name, theirs), (_, ours) in zip(analysis.settings, settings, strict=True)
                if theirs != ours
            ]
            raise InvalidInputError(
                "templateAnalysis: made with other settings: "
                + ", ".join(differ)
                + "; make it with a task of this configuration"
            )
        shape = tuple(template.image.shape)
        if analysis.shape != shape:
            raise InvalidInputError(
                f"templateAnalysis: made from a template of shape {analysis.shape}, but the "
                f"template has shape {shape}"
            )
        if analysis.checksum != _pixelChecksum(template):
            raise InvalidInputError(
                "templateAnalysis: made from a template with other pixels (its image, mask or "
                "variance checksum differs)"
            )
        return analysis

    # -- the fit --------------------------------------------------------------------------

    def _buildCellSet(
        self,
        targetMaskedImage: MaskedImage,
        referenceMaskedImage: MaskedImage,
        sources: Table,
        kernelSize: int,
    ) -> Any:
        """A `SpatialCellSet` with one candidate per source: stamps of 2·kernelSize+1 pixels
        of the image to convolve (target) and the one to match (reference)."""
        kConfig = self.kConfig
        bbox = targetMaskedImage.getBBox()
        cellSet = _core.SpatialCellSet(bbox, kConfig.sizeCellX, kConfig.sizeCellY)
        half = int(kernelSize)
        ratings = sources["snr"] if "snr" in sources.colnames else [None] * len(sources)
        control = makeKernelControl(kConfig)  # one for all candidates (each keeps a copy)
        # The working images are checked (one grid, every pixel finite) and every source's
        # stamp lies inside them (the selection's edge cut, or _userSources'): the candidates
        # read their stamps from the planes (views, as LSST's), none keeps a copy.
        planes = KernelCandidate._stampPlanes(targetMaskedImage, referenceMaskedImage)
        for x, y, rating in zip(sources["x"], sources["y"], ratings, strict=True):
            ix, iy = int(math.floor(x + 0.5)), int(math.floor(y + 0.5))
            box = _core.Box2I((ix - half, iy - half), (2 * half + 1, 2 * half + 1))
            cand = KernelCandidate._fromPlanes(
                float(x),
                float(y),
                planes,
                box,
                control,
                math.nan if rating is None else float(rating),
            )
            cellSet.insertCandidate(cand)
        return cellSet

    def _userSources(
        self,
        candidateList: Any,
        bbox: Any,
        kernelSize: int | None,
        *,
        images: tuple[MaskedImage, MaskedImage] | None = None,
    ) -> Table:
        """The user's positions as a table; with ``kernelSize``, only those whose stamps lie
        inside the image and, given the two ``images``, carry no bad mask bit in either (the
        cuts sep's detections get), or an `InsufficientKernelSourcesError`."""
        x, y = _asCandidatePositions(candidateList)
        if len(x) == 0:
            raise InsufficientKernelSourcesError(
                0, self.config.selection.minKernelSources, "candidateList is empty"
            )
        outside = ~(
            (x >= bbox.getMinX() - 0.5)
            & (x < bbox.getMaxX() + 0.5)
            & (y >= bbox.getMinY() - 0.5)
            & (y < bbox.getMaxY() + 0.5)
        )
        if outside.any():
            k = int(np.argmax(outside))
            raise InvalidInputError(
                f"candidateList: {int(outside.sum())} position(s) lie outside the image "
                f"{bbox}, the first at (x, y) = ({x[k]}, {y[k]})"
            )
        table = Table({"x": x, "y": y})
        if kernelSize is not None:
            half = int(kernelSize)
            ix = np.floor(x + 0.5)
            iy = np.floor(y + 0.5)
            fits = (
                (ix - half >= bbox.getMinX())
                & (iy - half >= bbox.getMinY())
                & (ix + half <= bbox.getMaxX())
                & (iy + half <= bbox.getMaxY())
            )
            masked = np.zeros(len(fits), dtype=bool)
            if images is not None:
                bits = self._badBits()
                x0, y0 = bbox.getMinX(), bbox.getMinY()
                ixs = np.where(fits, ix - x0, half).astype(np.int64)
                iys = np.where(fits, iy - y0, half).astype(np.int64)
                for mi in images:
                    masked |= _stampHasBits(mi.mask, ixs, iys, half, bits)
                masked &= fits
            table = table[fits & ~masked]
            table.meta.update(
                {
                    "nGiven": len(fits),
                    "nRejectedEdge": int((~fits).sum()),
                    "nRejectedMasked": int(masked.sum()),
                }
            )
            if masked.any():
                self.log.info(
                    "%d of the %d given kernel-source positions have bad mask bits in their "
                    "stamps and are not used",
                    int(masked.sum()),
                    len(fits),
                )
            nMin = self.config.selection.minKernelSources
            if len(table) < nMin:
                raise InsufficientKernelSourcesError(
                    len(table),
                    nMin,
                    f"of the {len(fits)} given positions {int((~fits).sum())} are closer than "
                    f"{half} pixels (the stamp half-width) to the edge and "
                    f"{int(masked.sum())} have bad mask bits in their stamps",
                )
        return table

    def _measureUserFwhm(self, mi: MaskedImage, table: Table) -> float:
        """FWHM at user-given positions: twice the median half-light radius (sep)."""
        data = np.array(mi.image, dtype=np.float64)  # sep takes writable buffers only
        masked = (mi.mask & self._badBits()) != 0
        background = sep.Background(data, mask=masked)
        x0, y0 = mi.getXY0()
        r50, flag = sep.flux_radius(
            data - background.back(),
            np.asarray(table["x"], dtype=float) - x0,
            np.asarray(table["y"], dtype=float) - y0,
            np.full(len(table), 15.0),
            0.5,
            subpix=_R50_SUBPIX,
        )
        r50 = r50[(flag == 0) & np.isfinite(r50) & (r50 > 0)]
        return float(2.0 * np.median(r50)) if r50.size else math.nan

    def _fit(
        self,
        templateMaskedImage: Any,
        scienceMaskedImage: Any,
        candidateList: Any,
        templateFwhmPix: float | None,
        scienceFwhmPix: float | None,
        sciencePsf: Any = None,
        templatePsf: Any = None,
        templateAnalysis: Any = None,
    ) -> Struct:
        """Everything up to and including the kernel fit; returns the pieces as a Struct."""
        analysis: TemplateAnalysis | None = None
        with self.timer("prepare"):
            fullTemplate, science, placement = self._prepareInputs(
                templateMaskedImage, scienceMaskedImage
            )
            kConfig = self.kConfig
            scaled = kConfig.kernelBasisSet == "alard-lupton" and kConfig.scaleByFwhm
            self._checkStampFits(
                science,
                int(kConfig.kernelSizeMin if scaled else kConfig.kernelSize),
                "smallest kernel the config allows" if scaled else "kernel",
            )
            if templateAnalysis is not None:
                analysis = self._checkTemplateAnalysis(templateAnalysis, templateMaskedImage)
            # Placed on the science box, the template's variance factor is still measured on
            # the whole template, as analyzeTemplate does (the same answer with or without).
            scaledTemplate = fullTemplate if placement is None else placement.wide
            if self.config.doScaleVariance:
                factor = None if analysis is None else analysis.varianceScaleFactor
                if factor is None and placement is not None:
                    factor = _varianceScaleFactor(fullTemplate, self._badBits())
                self._scaleVariance(scaledTemplate, "Template", factor)
                self._scaleVariance(science, "Science")
            templateWide: MaskedImage | None = None
            if placement is None:
                template = fullTemplate
            else:
                templateWide = scaledTemplate
                template = _contiguous(cropView(templateWide, science.getBBox()))

        selection = self.config.selection
        sSources: np.ndarray | None
        radiusCache: dict[str, Any] = {}
        with self.timer("selectSources"):
            if candidateList is None:
                badBits = self._badBits()
                sSources = detectSources(
                    science,
                    selection.detectionThreshold,
                    badBits,
                    measureRadii=False,
                    meshSize=selection.backgroundMeshSize,
                )
                preliminary = selectKernelSources(
                    template,
                    science,
                    selection,
                    scienceSources=sSources,
                    badBits=badBits,
                    radiusCache=radiusCache,
                )
                measuredT = 2.0 * float(np.median(preliminary["templateR50"]))
                measuredS = 2.0 * float(np.median(preliminary["scienceR50"]))
            else:
                sSources = None
                preliminary = self._userSources(candidateList, science.getBBox(), None)
                measuredT = self._measureUserFwhm(template, preliminary)
                measuredS = self._measureUserFwhm(science, preliminary)
            templateFwhm = float(templateFwhmPix) if templateFwhmPix else measuredT
            scienceFwhm = float(scienceFwhmPix) if scienceFwhmPix else measuredS
        for name, value in (("templateFwhmPix", templateFwhm), ("scienceFwhmPix", scienceFwhm)):
            if not (math.isfinite(value) and value > 0):
                raise InvalidInputError(
                    f"{name}: could not measure a positive FWHM (got {value}); pass it explicitly"
                )
        self.metadata["templatePsfSize"] = templateFwhm
        self.metadata["sciencePsfSize"] = scienceFwhm

        mode = self.config.mode
        if mode == "auto":
            mode = "convolveTemplate" if templateFwhm <= scienceFwhm else "convolveScience"
        bbox = science.getBBox()
        xc = 0.5 * (bbox.getMinX() + bbox.getMaxX())
        yc = 0.5 * (bbox.getMinY() + bbox.getMaxY())
        preConvKernel: np.ndarray | None = None
        innerBox = None
        sciencePsfImage = _psfImage(sciencePsf, scienceFwhm, xc, yc, "sciencePsf")
        templatePsfImage = _psfImage(templatePsf, templateFwhm, xc, yc, "templatePsf")
        if mode == "convolveTemplate":
            target, reference = template, science
            targetFwhm, referenceFwhm = templateFwhm, scienceFwhm
        elif mode == "convolveScience":
            target, reference = science, template
            targetFwhm, referenceFwhm = scienceFwhm, templateFwhm
        else:
            # Score image (§7.4): convolving with the reflected PSF correlates with the PSF.
            preConvKernel = sciencePsfImage[::-1, ::-1].copy()
            badBits = self._badBits()
            template = _medianFilled(template, badBits)
            with self.timer("preconvolve"):
                reference = convolve(
                    _medianFilled(science, badBits),
                    _core.FixedKernel(preConvKernel),
                    doCopyEdge=True,
                    nThreads=self.kConfig.nThreads,
                )
            target = template
            targetFwhm, referenceFwhm = templateFwhm, math.sqrt(2.0) * scienceFwhm
            self.metadata["preconvolvedSciencePsfSize"] = referenceFwhm
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
        if mode == "convolveScience":
            # A placed template is new planes on the science box: it is its own original.
            original = templateMaskedImage if placement is None else template
            self._checkPositiveVariance(template, "templateMaskedImage", original)
        else:
            self._checkPositiveVariance(science, "scienceMaskedImage", scienceMaskedImage)
        self.metadata["convolvedExposure"] = _CONVOLVED_NAMES[mode]
        self.log.info(
            "Template FWHM %.2f px, science FWHM %.2f px: convolving the %s",
            templateFwhm,
            scienceFwhm,
            {
                "convolveTemplate": "template",
                "convolveScience": "science image",
                "preconvolve": "science image with its PSF and the template to that",
            }[mode],
        )

        basisList = makeKernelBasisList(
            self.kConfig, targetFwhm, referenceFwhm, metadata=self.metadata
        )
        kernelSize = basisList[0].getWidth()
        self._checkStampFits(science, kernelSize, "kernel")
        with self.timer("selectSources"):
            if candidateList is None:
                # In score mode the stamps are cut from the preconvolved science image, whose
                # border carries EDGE; the detections are the science image's.
                sources = selectKernelSources(
                    template,
                    science if innerBox is None else reference,
                    selection,
                    kernelSize=kernelSize,
                    scienceSources=sSources,
                    badBits=self._badBits(),
                    radiusCache=radiusCache,
                )
            else:
                sources = self._userSources(
                    candidateList,
                    science.getBBox(),
                    kernelSize,
                    images=(template, science if innerBox is None else reference),
                )
            if innerBox is not None:
                sources = self._sourcesInside(sources, innerBox, kernelSize)
        self.metadata["nPsfSources"] = len(sources)
        for key, value in sources.meta.items():
            self.metadata[f"selection.{key}"] = value

        if self.kConfig.useBicForKernelBasis:
            # The BIC refits every candidate; a scratch cell set keeps the solve's clean.
            scratch = self._buildCellSet(target, reference, sources, kernelSize)
            basisList = self._selectBasisByBic(scratch, targetFwhm, referenceFwhm)
        with self.timer("buildCellSet"):
            cellSet = self._buildCellSet(target, reference, sources, kernelSize)
        spatialSolution, kernel, background = self._solve(cellSet, basisList)
        return Struct(
            template=template,
            science=science,
            target=target,
            reference=reference,
            mode=mode,
            kernelCellSet=cellSet,
            psfMatchingKernel=kernel,
            backgroundModel=background,
            spatialSolution=spatialSolution,
            sources=sources,
            basisList=basisList,
            templateFwhm=templateFwhm,
            scienceFwhm=scienceFwhm,
            sciencePsf=sciencePsfImage,
            templatePsf=templatePsfImage,
            preConvKernel=preConvKernel,
            innerBox=innerBox,
            templateDiaDetections=None if analysis is None else analysis.diaDetections,
            # With a placed template: the whole template (for its detections) and the factor
            # its variance was scaled by, the template on the wide box (what is convolved) and
            # the science pixels it does not reach.
            templateFull=None if placement is None else fullTemplate,
            templateVarianceFactor=self.metadata.get("scaleTemplateVarianceFactor")
            if self.metadata.get("scaleTemplateVarianceApplied")
            else None,
            templateWide=templateWide,
            uncovered=None if placement is None else placement.uncovered,
        )

    def _sourcesInside(self, sources: Table, box: Any, kernelSize: int) -> Table:
        """The sources whose (2·kernelSize+1)² stamps lie inside ``box`` (the inner box of the
        preconvolved science image), or an `InsufficientKernelSourcesError`."""
        half = int(kernelSize)
        ix = np.floor(np.asarray(sources["x"], dtype=float) + 0.5)
        iy = np.floor(np.asarray(sources["y"], dtype=float) + 0.5)
        inside = (
            (ix - half >= box.getMinX())
            & (iy - half >= box.getMinY())
            & (ix + half <= box.getMaxX())
            & (iy + half <= box.getMaxY())
        )
        kept = sources[inside]
        kept.meta.update(sources.meta)
        kept.meta["nRejectedPreconvolutionEdge"] = int((~inside).sum())
        nMin = self.config.selection.minKernelSources
        if len(kept) < nMin:
            raise InsufficientKernelSourcesError(
                len(kept),
                nMin,
                f"{int((~inside).sum())} of the {len(sources)} sources have stamps reaching "
                f"the border of the preconvolved science image (box {box})",
            )
        return kept

    def _candidateTable(self, fit: Struct) -> Table:
        """The kernel sources with the fit's verdict on each: status, the kernel sum of its
        own (ORIG) fit and χ²; with ``calculateKernelUncertainty`` the 1-σ uncertainties of
        that kernel sum and background from the covariance of the fit's coefficients (the
        inverse normal matrix; with basis sums s, Var(ΣK) = sᵀ Cov s, the background the last
        coefficient). Exact for inverse-variance weights (the covariance's own caveat:
        constantVarianceWeighting assumes a uniform noise field). NaN where there is no fit."""
        table = fit.sources.copy()
        byPosition = {
            (c.getXCenter(), c.getYCenter()): c
            for c in fit.kernelCellSet.getAllCandidates(ignoreBad=False)
        }
        withErrors = self.kConfig.calculateKernelUncertainty
        columns: dict[str, list[Any]] = {
            name: [] for name in ("status", "kernelSum", "chi2", "kernelSumErr", "backgroundErr")
        }
        sums: np.ndarray | None = None  # one basis for every candidate of a cell set
        for x, y in zip(table["x"], table["y"], strict=True):
            cand = byPosition.get((float(x), float(y)))
            solution = _solvedOrig(cand)
            columns["status"].append("UNKNOWN" if cand is None else _STATUS_NAMES[cand.getStatus()])
            columns["kernelSum"].append(math.nan if solution is None else solution.getKsum())
            columns["chi2"].append(math.nan if cand is None else cand.getChi2())
            if not withErrors:
                continue
            kSumErr = backgroundErr = math.nan
            if solution is not None:
                cov = np.asarray(solution.getCovariance())
                if sums is None:
                    sums = np.array([k.getImage().sum() for k in solution.getBasisList()])
                nb = len(sums)
                kSumErr = float(np.sqrt(max(sums @ cov[:nb, :nb] @ sums, 0.0)))
                if cov.shape[0] > nb:
                    backgroundErr = float(np.sqrt(cov[nb, nb]))
            columns["kernelSumErr"].append(kSumErr)
            columns["backgroundErr"].append(backgroundErr)
        for name in ("status", "kernelSum", "chi2"):
            table[name] = columns[name]
        if withErrors:
            table["kernelSumErr"] = columns["kernelSumErr"]
            if self.kConfig.fitForBackground:
                table["backgroundErr"] = columns["backgroundErr"]
        return table

    def _convolve(self, fit: Struct) -> MaskedImage:
        # The target is a working image: every pixel finite (_prepareOne, _medianFilled).
        target = fit.target
        wide = fit.mode == "convolveTemplate" and fit.templateWide is not None
        if wide:
            # The template's pixels beyond the science box feed the convolution at its edges.
            target = fit.templateWide
        convolved = _convolveChecked(
            target, fit.psfMatchingKernel, doCopyEdge=True, nThreads=self.kConfig.nThreads
        )
        return _contiguous(cropView(convolved, fit.science.getBBox())) if wide else convolved

    def _blankUncovered(self, fit: Struct, difference: MaskedImage) -> None:
        """NaN, +inf variance and NO_DATA in ``difference`` wherever the placed template has
        no pixel within the kernel's reach (at the pixel itself if it was not convolved)."""
        if fit.uncovered is None:
            return
        blank = fit.uncovered
        if fit.mode != "convolveScience":
            half = int(fit.psfMatchingKernel.getDimensions()[0]) // 2
            blank = _dilate(blank, half)
        difference.image[blank] = np.nan
        difference.variance[blank] = np.inf
        difference.mask[blank] |= Mask.getPlaneBitMask("NO_DATA")

    # -- public API -----------------------------------------------------------------------

    @timeMethod
    def matchMaskedImages(
        self,
        templateMaskedImage: MaskedImage,
        scienceMaskedImage: MaskedImage,
        candidateList: Any = None,
        templateFwhmPix: float | None = None,
        scienceFwhmPix: float | None = None,
        *,
        sciencePsf: Any = None,
        templatePsf: Any = None,
        templateAnalysis: TemplateAnalysis | None = None,
    ) -> Struct:
        """Convolve one image so that its PSF matches the other's.

        Parameters
        ----------
        templateMaskedImage, scienceMaskedImage : `MaskedImage`
            The two images on one parent pixel grid, each at its ``xy0``; never modified. A
            template larger than the science image, or offset from it by whole pixels, is cut
            to the science image's box (`psfmatch._placement`); less than
            ``requiredTemplateFraction`` of coverage raises `TemplateCoverageError`, origins
            that the stars contradict `OriginMismatchError`.
        candidateList : table or sequence of (x, y), optional
            Kernel source positions in parent coordinates (a table with ``x`` and ``y``
            columns, or pairs); those whose stamps leave the image or carry a bad mask bit
            (``selection.excludeMaskPlanes``, ``kernel.active.badMaskPlanes``) in either
            image are dropped. By default stars are found with sep.
        templateFwhmPix, scienceFwhmPix : `float`, optional
            PSF FWHMs in pixels; measured from the kernel sources when not given.
        sciencePsf, templatePsf : 2-D array or PSF object, optional
            Each image's PSF: an odd-sized image, or an object with
            ``computeKernelImage(x, y)`` (evaluated at the image centre). By default a
            pixel-integrated Gaussian of the FWHM. The science PSF is the preconvolution
            kernel of ``mode="preconvolve"``; the PSF of the unconvolved image becomes the
            difference image's PSF.
        templateAnalysis : `TemplateAnalysis`, optional
            `analyzeTemplate`'s answer for this template and configuration: the template-only
            work is then not repeated (the answer is the same, bit for bit).

        Returns
        -------
        result : `Struct`
            ``matchedImage`` (the convolved image; border pixels copied with ``EDGE``),
            ``psfMatchingKernel`` (`LinearCombinationKernel`), ``backgroundModel``
            (`SpatialBackground`, b(x, y)), ``kernelCellSet``, ``kernelSources`` (an
            `astropy.table.Table` with each source's ``status``, ``kernelSum`` and ``chi2``;
            with ``calculateKernelUncertainty`` also ``kernelSumErr`` and, if the background
            is fitted, ``backgroundErr``),
            ``convolvedImage`` ("Template", "Science" or "Preconvolution") and, in score mode,
            ``matchedScience`` (the science image convolved with its PSF) and
            ``preConvKernel``.

        Raises
        ------
        InvalidInputError
            Mismatched or unusable inputs, an unusable PSF image, or a ``templateAnalysis``
            made from another template or with other settings.
        InsufficientKernelSourcesError
            Too few usable stars.
        NoKernelCandidatesError
            Every star was rejected during the fit.
        """
        fit = self._fit(
            templateMaskedImage,
            scienceMaskedImage,
            candidateList,
            templateFwhmPix,
            scienceFwhmPix,
            sciencePsf,
            templatePsf,
            templateAnalysis,
        )
        with self.timer("convolve"):
            matched = self._convolve(fit)
        return self._result(fit, matched)

    def _result(self, fit: Struct, matched: MaskedImage | None, **extra: Any) -> Struct:
        if fit.mode == "preconvolve":
            extra.setdefault("matchedScience", fit.reference)
            extra.setdefault("preConvKernel", fit.preConvKernel)
        return Struct(
            matchedImage=matched,
            psfMatchingKernel=fit.psfMatchingKernel,
            backgroundModel=fit.backgroundModel,
            kernelCellSet=fit.kernelCellSet,
            kernelSources=self._candidateTable(fit),
            convolvedImage=_CONVOLVED_NAMES[fit.mode],
            **extra,
        )

    @timeMethod
    def subtractMaskedImages(
        self,
        templateMaskedImage: MaskedImage,
        scienceMaskedImage: MaskedImage,
        candidateList: Any = None,
        templateFwhmPix: float | None = None,
        scienceFwhmPix: float | None = None,
        *,
        sciencePsf: Any = None,
        templatePsf: Any = None,
        templateAnalysis: TemplateAnalysis | None = None,
    ) -> Struct:
        """Match the PSFs and subtract: the difference image and everything that made it.

        Parameters are those of `matchMaskedImages`.

        Returns
        -------
        result : `Struct`
            ``subtractedMaskedImage`` (D, its variance and mask, see the module docstring;
            decorrelated with ``doDecorrelation``; the score image in ``preconvolve`` mode),
            ``subtractedMaskedImageRaw`` (D before decorrelation), ``differencePsf`` (unit-sum
            image of the PSF of ``subtractedMaskedImage``), ``decorrelationKernel`` (the
            real-space decorrelation filter, or None), ``diaSources`` (the sources detected in
            it, an `astropy.table.Table`, or None without ``doDetectDiaSources``), and
            everything `matchMaskedImages` returns.
        """
        fit = self._fit(
            templateMaskedImage,
            scienceMaskedImage,
            candidateList,
            templateFwhmPix,
            scienceFwhmPix,
            sciencePsf,
            templatePsf,
            templateAnalysis,
        )
        with self.timer("convolve"):
            convolved = self._convolve(fit)
        with self.timer("subtract"):
            raw = self._subtract(fit, convolved, inPlace=not self.config.keepMatchedImage)
            self._blankUncovered(fit, raw)
        # Without keepMatchedImage the convolved image's planes hold the difference now.
        matched = convolved if self.config.keepMatchedImage else None
        # The PSF of the raw difference: that of the unconvolved image (times the
        # preconvolution kernel for a score image).
        if fit.mode == "convolveTemplate":
            psf = fit.sciencePsf
        elif fit.mode == "convolveScience":
            psf = fit.templatePsf
        else:
            psf = _convolveSmall(fit.sciencePsf, fit.preConvKernel)
        difference, decorrelationKernel = raw, None
        if self.config.doDecorrelation:
            with self.timer("decorrelate"):
                dec = self.decorrelate.run(
                    fit.science,
                    fit.template,
                    raw,
                    fit.psfMatchingKernel,
                    templateMatched=fit.mode != "convolveScience",
                    preConvKernel=fit.preConvKernel,
                    psf=psf,
                    nThreads=int(self.kConfig.nThreads),
                )
            difference = dec.correctedMaskedImage
            decorrelationKernel = dec.decorrelationKernel
            if dec.correctedPsf is not None:
                psf = dec.correctedPsf
            for key, value in (
                ("decorrelationSvar", dec.svar),
                ("decorrelationTvar", dec.tvar),
                ("decorrelationKernelSum", dec.kappa),
            ):
                self.metadata[key] = value if math.isfinite(value) else "nan"
            self.metadata["decorrelated"] = bool(dec.decorrelated)
        self.metadata["differencePsfSize"] = _psfFwhm(psf)
        self._displayDebugDifference(fit, difference)
        diaSources = None
        if self.config.doDetectDiaSources:
            with self.timer("detectDiaSources"):
                diaSources = self._detectDiaSources(fit, difference, psf)
        return self._result(
            fit,
            matched,
            subtractedMaskedImage=difference,
            subtractedMaskedImageRaw=raw,
            differencePsf=psf,
            decorrelationKernel=decorrelationKernel,
            diaSources=diaSources,
        )

    def _displayDebugDifference(self, fit: Struct, difference: MaskedImage) -> None:
        """The ``displayDiffIm`` debugging switch (see the module docstring)."""
        lsstDebug = psfmatchDebug.getInfo(__name__)
        if not (lsstDebug.display and lsstDebug.displayDiffIm):
            return
        requests = Struct(
            displayDiffIm=True,
            showBadCandidates=bool(lsstDebug.showBadCandidates),
            maskTransparency=lsstDebug.maskTransparency or 0,
            plotDir=lsstDebug.plotDir or None,
        )
        psfmatchDebug._show(self, requests, difference=difference, kernelCellSet=fit.kernelCellSet)

    def _subtract(self, fit: Struct, matched: MaskedImage, inPlace: bool = False) -> MaskedImage:
        """The raw difference image (§7.3 step 5, §7.4 step 7), in one threaded C++ pass.

        convolveTemplate and preconvolve: D = R − M − b, V = V_R + V_M; convolveScience:
        D = (M + b − T)/κ, V = (V_M + V_T)/κ² with κ the kernel sum at the image centre. The
        mask is R's | M's; the convolution's own border (EDGE in M but not in the target), and
        in score mode everything outside the inner box (where P ⊗ S is a copy of S, not a
        matched filter), gets NaN, +inf and EDGE | NO_DATA. b is evaluated pixel by pixel,
        never as a full-size image. The arithmetic is that of the numpy expressions
        (tests/test_subtract.py), except that κ² is κ·κ, correctly rounded, where
        ``kappa**2`` (libm ``pow``) was one ulp off for about 0.1 % of κ values.

        With ``inPlace`` the difference is written over ``matched``'s planes (the
        convolution's own output, which nothing else holds) when their dtype is the result's;
        otherwise, as without it, into new arrays.
        """
        bbox = matched.getBBox()
        reference = fit.reference
        control = _core.SubtractionControl()
        control.edgeBit = Mask.getPlaneBitMask("EDGE")
        control.noDataBit = Mask.getPlaneBitMask("NO_DATA")
        control.innerBox = fit.innerBox
        control.nThreads = int(self.kConfig.nThreads)
        if fit.mode == "convolveScience":
            # The reference is the template here.
            xc = 0.5 * (bbox.getMinX() + bbox.getMaxX())
            yc = 0.5 * (bbox.getMinY() + bbox.getMaxY())
            control.scienceConvolved = True
            control.kappa = float(fit.psfMatchingKernel.getSum(xc, yc))
        # Mixed float32/float64 planes are worked in float64 and rounded to the reference's
        # dtype at the end, as numpy's promotion of the same expressions does.
        dtype = reference.image.dtype
        work = np.result_type(reference.image, matched.image)
        planes = [
            plane if plane.dtype == work else plane.astype(work)
            for plane in (reference.image, reference.variance, matched.image, matched.variance)
        ]
        # In place only where the matched planes themselves go in and come out: with a dtype
        # conversion they are copies, and the result must be in the reference's dtype.
        inPlace = inPlace and planes[2] is matched.image and work == dtype
        image, mask, variance = _core.subtractMatched(
            planes[0],
            reference.mask,
            planes[1],
            planes[2],
            matched.mask,
            planes[3],
            fit.target.mask,
            matched.getXY0(),
            control,
            fit.backgroundModel if self.config.doSubtractBackground else None,
            inPlace,
        )
        return MaskedImage(
            image.astype(dtype, copy=False),
            mask,
            variance.astype(dtype, copy=False),
            xy0=matched.getXY0(),
        )

    # -- difference-image sources -----------------------------------------------------------

    def _templateDetections(self, fit: Struct) -> tuple[np.ndarray, tuple[int, int]]:
        """The template's detections (`analyzeTemplate`'s, or made now) and the origin of the
        image they were made on: the whole template when it was placed on the science box."""
        template = fit.template if fit.templateFull is None else fit.templateFull
        if fit.templateDiaDetections is not None:
            return fit.templateDiaDetections, template.getXY0()
        if fit.templateFull is not None and fit.templateVarianceFactor is not None:
            factor = fit.templateVarianceFactor
            template = MaskedImage(
                template.image,
                template.mask,
                template.variance * template.variance.dtype.type(factor),
                xy0=template.getXY0(),
            )
        detections = detectSources(
            template, self.config.diaSourceThreshold, self._badBits(), measureRadii=False
        )
        return detections, template.getXY0()

    def _detectDiaSources(self, fit: Struct, difference: MaskedImage, psf: np.ndarray) -> Table:
        """Detect positive and negative sources in D (`_detectDifferenceSources`), associate
        them with the template's detections and the kernel sources, and record the
        NFalsePositives* metadata."""
        config = self.config
        bits = Mask.getPlaneBitMask(list(config.diaSourceBadMaskPlanes), skipUnknown=True)
        table = _detectDifferenceSources(
            difference,
            psf,
            config.diaSourceThreshold,
            bits,
            isScore=fit.mode == "preconvolve",
            nThreads=int(self.kConfig.nThreads),
        )

        # Association: the template's detections stand for the known sky; the kernel sources
        # are the science image's sources used for PSF matching (the reference's
        # selectSources).
        templateDetections, (tx0, ty0) = self._templateDetections(fit)
        fwhm = _psfFwhm(psf)
        radius = config.diaSourceMatchRadius * (fwhm if math.isfinite(fwhm) else 1.0)
        refAssociated = np.zeros(len(table), dtype=bool)
        srcAssociated = np.zeros(len(table), dtype=bool)
        if len(table) and len(templateDetections):
            i, _, _ = _pairsWithin(
                np.asarray(table["x"]),
                np.asarray(table["y"]),
                np.asarray(templateDetections["x"], dtype=float) + tx0,
                np.asarray(templateDetections["y"], dtype=float) + ty0,
                radius,
            )
            refAssociated[i] = True
        if len(table) and len(fit.sources):
            i, _, _ = _pairsWithin(
                np.asarray(table["x"]),
                np.asarray(table["y"]),
                np.asarray(fit.sources["x"], dtype=float),
                np.asarray(fit.sources["y"], dtype=float),
                radius,
            )
            srcAssociated[i] = True
        table["refAssociated"] = refAssociated
        table["srcAssociated"] = srcAssociated
        order = np.argsort(-np.abs(np.asarray(table["snr"])), kind="stable")
        table = table[order]
        table.meta["threshold"] = float(config.diaSourceThreshold)
        table.meta["matchRadius"] = float(radius)

        nTotal = len(table)
        nRef = int(refAssociated.sum())
        nSrc = int(srcAssociated.sum())
        nNone = int((~refAssociated & ~srcAssociated).sum())
        self.metadata["NFalsePositivesTotal"] = nTotal
        self.metadata["NFalsePositivesRefAssociated"] = nRef
        self.metadata["NFalsePositivesSrcAssociated"] = nSrc
        self.metadata["NFalsePositivesUnassociated"] = nNone
        self.log.info(
            "Difference image: %d sources at S/N >= %.3g (%d negative); %d at template "
            "sources, %d at kernel sources, %d unassociated",
            nTotal,
            config.diaSourceThreshold,
            int(np.sum(table["isNegative"])),
            nRef,
            nSrc,
            nNone,
        )
        return table
