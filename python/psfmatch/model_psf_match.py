# SPDX-License-Identifier: BSD-3-Clause
"""ModelPsfMatchTask: convolve an image so that its PSF model becomes a reference PSF model.

This is docs/algorithm.md §7.2 without afw (docs/decisions.md D2): the input is a `MaskedImage`
and the PSF object that describes it, not an Exposure. The matching kernel is fitted to the PSF
*models* alone — no stars are involved. One candidate is placed at the centre of every cell of a
grid that covers the image grown by one cell on each side; its template stamp is the image's PSF
there and its science stamp the reference PSF, both noise-free (variance 1, mask 0). The usual
solve (`PsfMatchTask._solve`) gives a spatially varying kernel K(x, y) with
``K ⊗ PSF_image ≈ PSF_reference`` everywhere, and the image is convolved with it.

Kernel sum
----------
PSF models carry no photometry, so the fitted kernel sum is meaningless; the kernel is scaled
so that the constant coefficient of the first (flux-carrying) basis kernel is ``kernelSum``,
which makes the kernel sum exactly ``kernelSum`` everywhere (the reference overwrites that
coefficient alone, which also changes the kernel's shape; see
`ModelPsfMatchTask._imposeKernelSum`). The image is convolved *with normalisation*, so
``kernelSum`` does not change its pixels (§7.2).

Padding
-------
The fit only sees the central ``psfSize − kernelSize + 1`` pixels of each stamp, so the
kernel's wings are constrained only as far as the stamps reach beyond the kernel. With the
default ``autoPadPsfTo = 1.4`` (31-pixel stamps for a 21-pixel kernel) a constant PSF is
matched to 0.1 % in width, but a spatially varying one is not: the spatial fit becomes nearly
degenerate and its kernels have wild wings. Stamps of about 1.8 × the kernel (``autoPadPsfTo
= 1.8``, or PSF models that large) fix it; the task warns when the fitted kernel sum departs
from 1, the symptom.

Metadata: the ``ALBasis*`` keys of the basis, ``ALBasisDegGaussBic`` (and the vote counts)
when ``useBicForKernelBasis`` is on, ``modelPsfSize`` (the stamp size),
``sciencePsfFwhm`` and ``referencePsfFwhm`` (pixels), ``fittedKernelSum`` (α₀ before
``kernelSum`` is imposed; 1 for a well-constrained fit). `_diagnostic` is a no-op here (§6.1):
with noise-free stamps its statistics say nothing.
"""

from __future__ import annotations

__all__ = ["ModelPsfMatchConfig", "ModelPsfMatchTask"]

import math
from typing import Any

import lsst.pex.config as pexConfig
import numpy as np
from lsst.utils.timer import timeMethod

from . import _core
from .basis import FWHM_PER_SIGMA, makeKernelBasisList
from .candidate import KernelCandidate
from .config import PsfMatchConfigAL
from .convolution import convolve
from .errors import InvalidInputError, PsfComputeShapeError, PsfMatchError
from .image import MaskedImage
from .psf import _padOrClip
from .psf_match import PsfMatchTask
from .task import Struct

# Attempts, and their spread (pixels), of the science PSF's FWHM evaluation away from the
# average position when the shape cannot be computed there (§7.2).
_FWHM_RETRIES = 4
_FWHM_RETRY_OFFSET = 2.0
# |fitted kernel sum − 1| above which the fit is reported as poorly constrained.
_FITTED_SUM_TOLERANCE = 0.01


def _nextOddInteger(value: float) -> int:
    """The smallest odd integer ≥ ``value``."""
    n = int(math.ceil(value))
    return n if n % 2 == 1 else n + 1


class ModelPsfMatchConfig(pexConfig.Config):
    """Configuration of `ModelPsfMatchTask`.

    Notes
    -----
    `setDefaults` turns off everything that only makes sense for noisy stars: single-kernel,
    kernel-sum and spatial clipping and the condition-number check; it forces constant
    variance weighting (the stamps' variance is a placeholder) and keeps the configured kernel
    size and widths (``scaleByFwhm = False``).
    """

    kernel = pexConfig.ConfigChoiceField(
        doc="The kernel basis and fit; only Alard-Lupton (AL) is available.",
        typemap={"AL": PsfMatchConfigAL},
        default="AL",
    )
    doAutoPadPsf: pexConfig.Field[bool] = pexConfig.Field(
        dtype=bool,
        default=True,
        doc="Pad the PSF stamps with zeros to at least autoPadPsfTo × kernelSize (the next odd "
        "size), so that the kernel fits inside them. If False, pad by padPsfBy.",
    )
    autoPadPsfTo: pexConfig.Field[float] = pexConfig.RangeField(
        dtype=float,
        default=1.4,
        min=1.0,
        max=2.0,
        inclusiveMax=True,
        doc="With doAutoPadPsf, the smallest PSF stamp size as a multiple of kernelSize.",
    )
    padPsfBy: pexConfig.Field[int] = pexConfig.RangeField(
        dtype=int,
        default=0,
        min=0,
        doc="Without doAutoPadPsf, pixels of zeros added to the PSF stamp size (split between "
        "both sides, so it must be even).",
    )

    def setDefaults(self) -> None:
        super().setDefaults()
        kernel = self.kernel["AL"]
        kernel.singleKernelClipping = False
        kernel.kernelSumClipping = False
        kernel.spatialKernelClipping = False
        kernel.checkConditionNumber = False
        kernel.constantVarianceWeighting = True
        kernel.scaleByFwhm = False


def _psfKernelImage(psf: Any, x: float, y: float, what: str) -> np.ndarray:
    """``psf.computeKernelImage(x, y)`` as a finite, odd-sized float64 array."""
    try:
        image = np.asarray(psf.computeKernelImage(x, y), dtype=np.float64)
    except PsfComputeShapeError:
        raise
    except Exception as err:
        raise PsfComputeShapeError(f"{what}: computeKernelImage failed: {err}", (x, y)) from err
    if image.ndim != 2 or image.shape[0] % 2 == 0 or image.shape[1] % 2 == 0:
        raise PsfComputeShapeError(
            f"{what}: expected a kernel image of odd dimensions, got shape {image.shape}", (x, y)
        )
    if not np.isfinite(image).all():
        raise PsfComputeShapeError(f"{what}: the kernel image holds NaN or infinite values", (x, y))
    return image


def _psfDimensions(psf: Any, x: float, y: float) -> tuple[int, int]:
    """``(width, height)`` of the PSF's kernel box at (x, y)."""
    try:
        if hasattr(psf, "computeBBox"):
            width, height = psf.computeBBox(x, y).getDimensions()
            return int(width), int(height)
    except Exception as err:
        raise PsfComputeShapeError(f"sciencePsf: computeBBox failed: {err}", (x, y)) from err
    ny, nx = _psfKernelImage(psf, x, y, "sciencePsf").shape
    return nx, ny


def _psfFwhm(psf: Any, x: float, y: float) -> float:
    """FWHM (pixels): 2.3548 × the determinant radius, or the model's own ``getFwhm``."""
    try:
        if hasattr(psf, "computeShape"):
            fwhm = FWHM_PER_SIGMA * float(psf.computeShape(x, y).getDeterminantRadius())
        else:
            fwhm = float(psf.getFwhm(x, y))
    except PsfComputeShapeError:
        raise
    except Exception as err:
        raise PsfComputeShapeError(f"cannot compute the PSF shape: {err}", (x, y)) from err
    if not (math.isfinite(fwhm) and fwhm > 0.0):
        raise PsfComputeShapeError(f"the PSF's FWHM is {fwhm}", (x, y))
    return fwhm


class ModelPsfMatchTask(PsfMatchTask):
    """Match an image's PSF model to a reference PSF model (docs/algorithm.md §7.2).

    See the module docstring for what it does and records.

    Examples
    --------
    >>> from psfmatch import GaussianPsf
    >>> from psfmatch.simulate import simulatePair
    >>> image = simulatePair((256, 256), nStars=60, seed=0).template  # PSF sigma 1.6 px
    >>> task = ModelPsfMatchTask()
    >>> result = task.run(image, GaussianPsf(31, 31, 1.6), GaussianPsf(31, 31, 2.5))
    >>> result.psfMatchedMaskedImage.image.shape
    (256, 256)
    """

    ConfigClass = ModelPsfMatchConfig
    _DefaultName = "modelPsfMatch"
    config: ModelPsfMatchConfig

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.config.validate()

    def _diagnostic(
        self, kernelCellSet: Any, spatialSolution: Any, spatialKernel: Any, spatialBg: Any
    ) -> None:
        """Nothing to diagnose: the candidates are noise-free PSF models (§6.1)."""

    @timeMethod
    def run(
        self,
        maskedImage: MaskedImage,
        sciencePsf: Any,
        referencePsf: Any,
        kernelSum: float = 1.0,
        bbox: Any = None,
    ) -> Struct:
        """Convolve ``maskedImage`` so that its PSF becomes ``referencePsf``.

        Parameters
        ----------
        maskedImage : `MaskedImage`
            The image to convolve; never modified.
        sciencePsf : `Psf`
            Its PSF model (anything with ``computeKernelImage(x, y)`` and ``computeShape(x, y)``
            or ``getFwhm(x, y)``; ``computeBBox(x, y)`` is used when present).
        referencePsf : `Psf`
            The PSF model to match to.
        kernelSum : `float`, optional
            The kernel sum to impose (non-zero). It does not change the output pixels, which
            are convolved with normalisation.
        bbox : `Box2I`, optional
            The region (parent coordinates) whose PSF is modelled: the cell grid covers it grown
            by one cell on each side. By default the image's box.

        Returns
        -------
        result : `Struct`
            ``psfMatchedMaskedImage`` (`MaskedImage`, same shape, dtype and origin; pixels the
            kernel cannot reach are NaN with variance +inf and ``NO_DATA``),
            ``psfMatchingKernel`` (`LinearCombinationKernel`, kernel sum ``kernelSum``),
            ``kernelCellSet``, ``referencePsf`` (the reference PSF at the stamp size: the PSF of
            the output) and ``metadata``.

        Raises
        ------
        InvalidInputError
            A bad argument; padding or kernel size that do not fit (odd ``padPsfBy``, a kernel
            larger than the PSF stamps allow).
        PsfComputeShapeError
            If a PSF model cannot give its size, image or shape where it is needed.
        NoKernelCandidatesError
            If the fit fails.
        """
        if not isinstance(maskedImage, MaskedImage):
            raise InvalidInputError(
                f"maskedImage: expected a psfmatch.MaskedImage, got {type(maskedImage).__name__}"
            )
        for name, psf in (("sciencePsf", sciencePsf), ("referencePsf", referencePsf)):
            if not hasattr(psf, "computeKernelImage"):
                raise InvalidInputError(
                    f"{name}: expected a PSF model with computeKernelImage(x, y), got "
                    f"{type(psf).__name__}"
                )
        kernelSumValue = float(kernelSum)
        if not (math.isfinite(kernelSumValue) and kernelSumValue != 0.0):
            raise InvalidInputError(
                f"kernelSum: expected a finite non-zero number, got {kernelSum}"
            )
        if bbox is None:
            bbox = maskedImage.getBBox()

        self.log.info("Computing the PSF-matching kernel")
        built = self._buildCellSet(bbox, sciencePsf, referencePsf)
        kernelCellSet = built.kernelCellSet
        referencePsf = built.referencePsf

        xc = 0.5 * (bbox.getMinX() + bbox.getMaxX())
        yc = 0.5 * (bbox.getMinY() + bbox.getMaxY())
        fwhmScience = self._scienceFwhm(sciencePsf, xc, yc)
        refPosition = getattr(referencePsf, "getAveragePosition", lambda: None)()
        fwhmReference = _psfFwhm(referencePsf, *(refPosition or (xc, yc)))
        self.metadata["sciencePsfFwhm"] = fwhmScience
        self.metadata["referencePsfFwhm"] = fwhmReference

        basisList = makeKernelBasisList(
            self.kConfig, fwhmScience, fwhmReference, metadata=self.metadata
        )
        if self.kConfig.useBicForKernelBasis:
            # The BIC refits every candidate several times; it gets its own cell set so that
            # the solve below starts from unfitted candidates.
            scratch = self._buildCellSet(bbox, sciencePsf, referencePsf).kernelCellSet
            basisList = self._selectBasisByBic(scratch, fwhmScience, fwhmReference)
        _, fitted, _ = self._solve(kernelCellSet, basisList)

        self._checkFittedKernelSum(fitted)
        psfMatchingKernel = self._imposeKernelSum(fitted, kernelSumValue)

        self.log.info("PSF-matching the image to the reference")
        with self.timer("convolve"):
            matched = self._convolveNormalized(maskedImage, psfMatchingKernel)
        return Struct(
            psfMatchedMaskedImage=matched,
            psfMatchingKernel=psfMatchingKernel,
            kernelCellSet=kernelCellSet,
            referencePsf=referencePsf,
            metadata=self.metadata,
        )

    def _checkFittedKernelSum(self, fitted: Any) -> None:
        """Record the fitted kernel sum α₀ and warn when it is far from 1.

        Both stamps of every candidate have unit sum, so a kernel the stamps determine has
        α₀ ≈ 1 (to ~1e-4). A PSF-matching kernel whose wings the stamps barely reach — PSF
        stamps hardly larger than the kernel, with a spatially varying PSF — is nearly
        degenerate, and the least-squares optimum trades flux for shape: α₀ drifts from 1 and
        the wings grow large. That is worth a warning (and more padding, ``autoPadPsfTo``).
        """
        alpha0 = float(np.asarray(fitted.getSpatialParameters())[0, 0])
        self.metadata["fittedKernelSum"] = alpha0
        if not abs(alpha0 - 1.0) <= _FITTED_SUM_TOLERANCE:
            self.log.warning(
                "The fitted kernel sum is %.4f where the unit-sum PSF stamps imply 1: the "
                "PSF stamps (%d pixels) constrain the %d-pixel kernel poorly; increase "
                "autoPadPsfTo or padPsfBy, or reduce kernelSize",
                alpha0,
                int(self.metadata["modelPsfSize"]),
                fitted.getDimensions()[0],
            )

    @staticmethod
    def _imposeKernelSum(fitted: Any, kernelSum: float) -> Any:
        """The fitted kernel scaled so that its sum is ``kernelSum`` everywhere.

        The first basis kernel carries all the flux (unit sum), every other AL basis kernel
        sums to zero, and the first coefficient is spatially constant (row 0 of the spatial
        parameters is [α₀, 0, …]): the kernel sum is α₀ at every position. The reference
        overwrites α₀ with ``kernelSum``; that also changes the kernel's *shape* by
        (kernelSum − α₀)·B₀, so the normalised output would depend on ``kernelSum`` (a matched
        PSF 10 % too broad for kernelSum = 0.7). psfmatch scales every coefficient by
        kernelSum / α₀ instead: the sum is ``kernelSum`` exactly, as in the reference, and the
        normalised kernel is the fitted one, so ``kernelSum`` does not change the output pixels
        (which §7.2 promises). For kernelSum = 1 the two differ by 1 − α₀ ≈ 1e-4 of B₀.
        """
        parameters = np.array(fitted.getSpatialParameters(), dtype=np.float64)
        alpha0 = float(parameters[0, 0])
        if not (math.isfinite(alpha0) and alpha0 != 0.0):
            raise PsfMatchError(
                f"the fitted kernel sum is {alpha0}; the PSF models cannot be matched"
            )
        parameters *= kernelSum / alpha0
        parameters[0, 0] = kernelSum
        return _core.LinearCombinationKernel(
            fitted.getBasisList(), fitted.getSpatialFunction(), parameters
        )

    def _convolveNormalized(self, maskedImage: MaskedImage, kernel: Any) -> MaskedImage:
        """Convolve with the kernel normalised to unit sum at every pixel (§7.2).

        Normalised convolution divides each output pixel by the kernel sum at that pixel
        (the variance by its square). The kernel sum at (x, y) is Σ_m s_m a_m(x, y), with
        s_m the sum of basis kernel m; here s_0 = 1, s_m = 0 for m ≥ 1 (an AL basis after
        renormalisation) and a_0 = kernelSum everywhere, so the sum is the constant kernelSum
        and the division is by that. The map is evaluated in general anyway — as one spatial
        function with parameters Σ_m s_m α_m — which costs one polynomial per pixel and stays
        exact if a basis ever breaks that rule; the core only normalises fixed kernels.
        """
        out = convolve(maskedImage, kernel, nThreads=self.kConfig.nThreads)
        sums = np.array([b.getSum() for b in kernel.getBasisList()])
        sumParameters = sums @ np.asarray(kernel.getSpatialParameters(), dtype=np.float64)
        sumMap = np.asarray(
            _core.SpatialBackground(kernel.getSpatialFunction(), sumParameters).evaluate(
                out.getBBox()
            )
        )
        if not (np.isfinite(sumMap).all() and np.all(sumMap != 0.0)):
            raise PsfMatchError("the PSF-matching kernel sums to zero somewhere in the image")
        dtype = out.image.dtype
        image = (out.image / sumMap).astype(dtype, copy=False)
        variance = (out.variance / sumMap**2).astype(dtype, copy=False)
        return MaskedImage(image, out.mask, variance, xy0=out.getXY0())

    def _scienceFwhm(self, sciencePsf: Any, xc: float, yc: float) -> float:
        """The science PSF's FWHM at its average position (or the box centre), retrying at up
        to four seeded random offsets of ±2 pixels if the shape cannot be computed there."""
        average = getattr(sciencePsf, "getAveragePosition", lambda: None)()
        x0, y0 = average if average is not None else (xc, yc)
        try:
            return _psfFwhm(sciencePsf, x0, y0)
        except PsfComputeShapeError as err:
            lastError = err
        rng = np.random.default_rng(12345)
        for _ in range(_FWHM_RETRIES):
            dx, dy = rng.uniform(-_FWHM_RETRY_OFFSET, _FWHM_RETRY_OFFSET, 2)
            try:
                fwhm = _psfFwhm(sciencePsf, x0 + dx, y0 + dy)
            except PsfComputeShapeError as err:
                lastError = err
                continue
            self.log.warning(
                "Science PSF shape failed at (%.1f, %.1f); used (%.1f, %.1f) instead",
                x0,
                y0,
                x0 + dx,
                y0 + dy,
            )
            return fwhm
        raise lastError

    def _buildCellSet(self, bbox: Any, sciencePsf: Any, referencePsf: Any) -> Struct:
        """One candidate per cell centre: science-PSF stamp (template) vs reference-PSF stamp.

        Returns
        -------
        result : `Struct`
            ``kernelCellSet`` and ``referencePsf`` (resized to the stamp size when possible).
        """
        kConfig = self.kConfig
        sizeCellX, sizeCellY = int(kConfig.sizeCellX), int(kConfig.sizeCellY)
        # Grow the box by a cell on each side so the spatial model reaches the image's edge.
        width = bbox.getWidth() + 2 * sizeCellX
        height = bbox.getHeight() + 2 * sizeCellY
        x0, y0 = bbox.getMinX() - sizeCellX, bbox.getMinY() - sizeCellY
        regionBBox = _core.Box2I((x0, y0), (width, height))
        nCellX, nCellY = width // sizeCellX, height // sizeCellY
        if nCellX == 0 or nCellY == 0:
            # Defensive: the growth by one cell on each side always leaves two cells.
            raise InvalidInputError(
                f"the region {width}x{height} holds no full {sizeCellX}x{sizeCellY} cell"
            )
        positions = [
            (
                float(sizeCellX * col + sizeCellX // 2 + x0),
                float(sizeCellY * row + sizeCellY // 2 + y0),
            )
            for row in range(nCellY)
            for col in range(nCellX)
        ]

        psfSize = 0
        for x, y in positions:
            psfSize = max(psfSize, *_psfDimensions(sciencePsf, x, y))

        kernelSize = int(kConfig.kernelSize)
        if self.config.doAutoPadPsf:
            padding = max(0, _nextOddInteger(kernelSize * self.config.autoPadPsfTo) - psfSize)
        else:
            padding = int(self.config.padPsfBy)
            if padding % 2 != 0:
                raise InvalidInputError(
                    f"padPsfBy ({padding} pixels) must be even: it pads both sides equally"
                )
        if padding > 0:
            self.log.debug(
                "Padding the science PSF from %d to %d pixels", psfSize, psfSize + padding
            )
            psfSize += padding
        # An even size has no centre pixel: the stamps are centred odd boxes.
        if psfSize % 2 == 0:
            psfSize += 1

        maxKernelSize = psfSize - 1
        if maxKernelSize % 2 == 0:
            maxKernelSize -= 1
        if kernelSize > maxKernelSize:
            shortfall = kernelSize - maxKernelSize
            raise InvalidInputError(
                f"kernelSize ({kernelSize}) is too big to match PSFs of size {psfSize}: set "
                f"kernelSize <= {maxKernelSize}, doAutoPadPsf=True, or padPsfBy >= "
                f"{shortfall + shortfall % 2}"
            )
        self.metadata["modelPsfSize"] = psfSize

        referenceDims = _psfDimensions(referencePsf, positions[0][0], positions[0][1])
        if referenceDims != (psfSize, psfSize):
            try:
                referencePsf = referencePsf.resized(psfSize, psfSize)
                self.log.info(
                    "Adjusted the reference PSF from %s to %s", referenceDims, (psfSize, psfSize)
                )
            except Exception as err:
                self.log.warning(
                    "Zero padding or clipping the reference PSF model of type %s from %s to %s "
                    "because it cannot be resized: %s",
                    type(referencePsf).__name__,
                    referenceDims,
                    (psfSize, psfSize),
                    err,
                )

        cellSet = _core.SpatialCellSet(regionBBox, sizeCellX, sizeCellY)
        for x, y in positions:
            template = self._psfStamp(sciencePsf, x, y, psfSize, "sciencePsf")
            science = self._psfStamp(referencePsf, x, y, psfSize, "referencePsf")
            cellSet.insertCandidate(KernelCandidate(x, y, template, science, kConfig))
        return Struct(kernelCellSet=cellSet, referencePsf=referencePsf)

    @staticmethod
    def _psfStamp(psf: Any, x: float, y: float, size: int, what: str) -> MaskedImage:
        """The PSF at (x, y) centred in a size² stamp (zero-padded or clipped, unit sum),
        mask 0, variance 1."""
        image = _psfKernelImage(psf, x, y, what)
        if image.shape != (size, size):
            image = _padOrClip(image, size, size)
        total = float(image.sum())
        if not (math.isfinite(total) and total > 0.0):
            raise PsfComputeShapeError(f"{what}: the kernel image sums to {total}", (x, y))
        # Unit sum even after clipping, so that the fitted kernel's shape does not absorb a
        # flux ratio that kernelSum then overrides.
        image /= total
        ix, iy = int(math.floor(x + 0.5)), int(math.floor(y + 0.5))
        return MaskedImage(image, None, np.ones_like(image), xy0=(ix - size // 2, iy - size // 2))
