# SPDX-License-Identifier: BSD-3-Clause
"""Kernel bases: Alard–Lupton sums of Gaussians × polynomials and delta functions.

The numerics (sampling, renormalisation, regularization matrices) run in the compiled core;
this module turns a config and the two images' FWHMs into the arguments (docs/algorithm.md §2.3)
and records the ``ALBasis*`` metadata.
"""

from __future__ import annotations

import math
import operator
from collections.abc import MutableMapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from . import _core
from ._psfutil import FWHM_PER_SIGMA
from .config import PsfMatchConfig, PsfMatchConfigAL, PsfMatchConfigDF
from .errors import InvalidInputError

if TYPE_CHECKING:
    from ._psfwings import PsfWings

__all__ = [
    "FWHM_PER_SIGMA",
    "generateAlardLuptonBasisList",
    "makeAlardLuptonBasisList",
    "makeDeltaFunctionBasisList",
    "makeKernelBasisList",
    "makeRegularizationMatrix",
    "renormalizeKernelList",
]

renormalizeKernelList = _core.renormalizeKernelList

#: The most pixels (summed over the kernels) a basis may have: 2**27 doubles are 1 GiB. A
#: delta-function basis of width w has w**4 pixels (101 x 101 is 0.8 GiB); anything larger is
#: far beyond a useful matching kernel and would otherwise fail as a bare MemoryError.
MAX_BASIS_PIXELS = 1 << 27


def _checkBasisSize(function: str, nKernels: int, width: int, height: int) -> None:
    total = nKernels * width * height
    if total > MAX_BASIS_PIXELS:
        raise InvalidInputError(
            f"{function}: {nKernels} kernels of {width} x {height} pixels would need "
            f"{8 * total / 2**30:.1f} GiB (at most {MAX_BASIS_PIXELS} pixels in all); "
            "use a smaller kernel"
        )


def makeAlardLuptonBasisList(
    halfWidth: int, nGauss: int, sigGauss: Sequence[float], degGauss: Sequence[int]
) -> list[Any]:
    """The Alard–Lupton basis: Gaussians of widths ``sigGauss`` times polynomials of degrees
    ``degGauss``, on a (2·halfWidth+1)² grid, renormalised (docs/algorithm.md §2.1).

    Parameters
    ----------
    halfWidth : `int`
        Kernel half-width (>= 1); kernels are ``2·halfWidth + 1`` pixels square.
    nGauss : `int`
        Number of Gaussians; ``sigGauss`` and ``degGauss`` have this many entries.
    sigGauss : sequence of `float`
        Gaussian widths (pixels, > 0).
    degGauss : sequence of `int`
        Polynomial degree (>= 0) for each Gaussian.

    Returns
    -------
    basisList : `list` of `FixedKernel`

    Raises
    ------
    InvalidInputError
        For arguments of the wrong type, a half-width below 1, lists whose lengths differ
        from ``nGauss``, a width that is not positive, a negative degree, or a basis too
        large to allocate (`MAX_BASIS_PIXELS`).
    """
    name = "makeAlardLuptonBasisList"
    try:
        halfWidth, nGauss = operator.index(halfWidth), operator.index(nGauss)
    except TypeError:
        raise InvalidInputError(
            f"{name}: halfWidth and nGauss must be integers, got {halfWidth!r}, {nGauss!r}"
        ) from None
    try:
        sigmas = [float(s) for s in sigGauss]
    except (TypeError, ValueError):
        raise InvalidInputError(f"{name}: sigGauss must be numbers, got {sigGauss!r}") from None
    try:
        degrees = [operator.index(d) for d in degGauss]
    except TypeError:
        raise InvalidInputError(f"{name}: degGauss must be integers, got {degGauss!r}") from None
    nKernels = sum((d + 1) * (d + 2) // 2 for d in degrees if d >= 0)
    if halfWidth >= 1 and nKernels > 0:
        _checkBasisSize(name, nKernels, 2 * halfWidth + 1, 2 * halfWidth + 1)
    return list(_core.makeAlardLuptonBasisList(halfWidth, nGauss, sigmas, degrees))


def makeDeltaFunctionBasisList(width: int, height: int) -> list[Any]:
    """The delta-function basis: one kernel per pixel of a ``width`` × ``height`` grid.

    Raises
    ------
    InvalidInputError
        For a size that is not a positive odd integer, or a basis too large to allocate
        (`MAX_BASIS_PIXELS`).
    """
    try:
        w, h = operator.index(width), operator.index(height)
    except TypeError:
        raise InvalidInputError(
            "makeDeltaFunctionBasisList: width and height must be integers, got "
            f"{width!r}, {height!r}"
        ) from None
    if w > 0 and h > 0:
        _checkBasisSize("makeDeltaFunctionBasisList", w * h, w, h)
    return list(_core.makeDeltaFunctionBasisList(w, h))


def _alardLuptonSigmas(
    sigBig: float, sigSmall: float, minSig: float, nGauss: int, beta: float
) -> list[float]:
    """The widths f(σ_big, σ_small, minSig) of docs/algorithm.md §2.3."""
    sigK = max(math.sqrt(sigBig**2 - sigSmall**2), minSig)
    first = max(minSig, sigK / beta) if nGauss > 1 else sigK
    return [first * beta**i for i in range(nGauss)]


def _record(metadata: MutableMapping[str, Any] | None, **items: Any) -> None:
    if metadata is None:
        return
    for key, value in items.items():
        metadata[key] = value


def generateAlardLuptonBasisList(
    config: PsfMatchConfigAL,
    targetFwhmPix: float | None = None,
    referenceFwhmPix: float | None = None,
    basisDegGauss: Sequence[int] | None = None,
    basisSigmaGauss: Sequence[float] | None = None,
    metadata: MutableMapping[str, Any] | None = None,
    wings: PsfWings | None = None,
) -> list[Any]:
    """The Alard–Lupton basis for matching a target image to a reference image.

    Parameters
    ----------
    config : `PsfMatchConfigAL`
        Basis settings: ``alardNGauss``, ``alardDegGauss``, ``alardSigGauss``,
        ``alardGaussBeta``, ``alardMinSig``, ``alardMinSigDeconv``, ``kernelSize``,
        ``scaleByFwhm``, ``kernelSizeFwhmScaling``, ``kernelSizeMin``, ``kernelSizeMax``.
    targetFwhmPix, referenceFwhmPix : `float`, optional
        FWHM in pixels of the image that is convolved (target) and the one it is matched to
        (reference). With both given and ``scaleByFwhm`` on, the Gaussian widths and the
        kernel size follow from them; otherwise the config's widths and size are used.
    basisDegGauss, basisSigmaGauss : sequence, optional
        Override the config's degrees / widths (same length as ``alardNGauss``).
    metadata : mapping, optional
        Receives ``ALBasisNGauss``, ``ALBasisDegGauss``, ``ALBasisSigGauss``, ``ALKernelSize``
        and ``ALBasisMode`` ("config", "convolution" or "deconvolution"), and
        ``ALBasisWingSigma`` (0 when no wing Gaussian was added).
    wings : `PsfWings`, optional
        The growth curves' verdict (`psfmatch._psfwings`). With ``scaleByWings`` on where the
        FWHMs set the basis, ``wings.hasWings`` and ``wingKernelScaling`` ×
        ``wings.broadFwhm`` reaches beyond the FWHM-sized kernel, one more Gaussian of σ =
        ``wingSigmaScaling`` × ``wings.broadFwhm`` and degree ``wingDegGauss`` is appended and
        the kernel reaches that far (within ``kernelSizeMax``) (docs/algorithm.md §2.3,
        docs/decisions.md D18).

    Returns
    -------
    basisList : `list` of `FixedKernel`
        The renormalised basis (kernel 0 has unit sum, every other kernel zero sum, unit norm).

    Raises
    ------
    PsfMatchError
        If the config is not for the Alard–Lupton basis.
    InvalidInputError
        If the degree or width lists do not have ``alardNGauss`` entries, the kernel size is
        even, or a FWHM is not positive.
    """
    from .errors import PsfMatchError

    if config.kernelBasisSet != "alard-lupton":
        raise PsfMatchError(
            f"generateAlardLuptonBasisList needs kernelBasisSet='alard-lupton', "
            f"got {config.kernelBasisSet!r}"
        )
    nGauss = int(config.alardNGauss)
    degrees = list(basisDegGauss if basisDegGauss is not None else config.alardDegGauss)
    sigmas = [
        float(s) for s in (basisSigmaGauss if basisSigmaGauss is not None else config.alardSigGauss)
    ]
    if len(degrees) != nGauss:
        raise InvalidInputError(
            f"alardDegGauss has {len(degrees)} entries, alardNGauss is {nGauss}"
        )
    if len(sigmas) != nGauss:
        raise InvalidInputError(f"alardSigGauss has {len(sigmas)} entries, alardNGauss is {nGauss}")
    if config.kernelSize % 2 == 0:
        raise InvalidInputError(f"kernelSize must be odd, got {config.kernelSize}")

    mode = "config"
    kernelSize = int(config.kernelSize)
    if targetFwhmPix is not None and referenceFwhmPix is not None and config.scaleByFwhm:
        for name, value in (
            ("targetFwhmPix", targetFwhmPix),
            ("referenceFwhmPix", referenceFwhmPix),
        ):
            if not (np.isfinite(value) and value > 0):
                raise InvalidInputError(f"{name} must be a positive number of pixels, got {value}")
        sigTarget = targetFwhmPix / FWHM_PER_SIGMA
        sigReference = referenceFwhmPix / FWHM_PER_SIGMA
        beta = float(config.alardGaussBeta)
        if sigReference > sigTarget:
            mode = "convolution"
            sigmas = _alardLuptonSigmas(sigReference, sigTarget, config.alardMinSig, nGauss, beta)
        elif sigReference < sigTarget:
            mode = "deconvolution"
            sigmas = _alardLuptonSigmas(
                sigTarget, sigReference, config.alardMinSigDeconv, nGauss, beta
            )
        kernelSize = int(config.kernelSizeFwhmScaling * sigmas[-1])
        if kernelSize % 2 == 0:
            kernelSize += 1
        kernelSize = min(max(kernelSize, config.kernelSizeMin), config.kernelSizeMax)
        wingSigma = 0.0
        reach = 2 * math.ceil(config.wingKernelScaling * wings.broadFwhm) + 1 if wings else 0
        if wings is not None and wings.hasWings and config.scaleByWings and reach > kernelSize:
            # A broad, low-degree Gaussian carries the flux the PSFs' wings move out of the
            # cores, and the kernel reaches as far; only where the wings reach beyond the
            # FWHM-sized kernel (on undersampled PSFs, whose kernel already reaches 3 FWHM,
            # the extra Gaussian measured worse: docs/decisions.md D18).
            wingSigma = max(config.wingSigmaScaling * wings.broadFwhm, sigmas[-1])
            sigmas = [*sigmas, wingSigma]
            degrees = [*degrees, int(config.wingDegGauss)]
            nGauss += 1
            kernelSize = min(reach, config.kernelSizeMax)
        _record(metadata, ALBasisWingSigma=wingSigma)

    _record(
        metadata,
        ALBasisNGauss=nGauss,
        ALBasisDegGauss=degrees,
        ALBasisSigGauss=sigmas,
        ALKernelSize=kernelSize,
        ALBasisMode=mode,
    )
    return makeAlardLuptonBasisList(kernelSize // 2, nGauss, sigmas, degrees)


def makeKernelBasisList(
    config: PsfMatchConfig,
    targetFwhmPix: float | None = None,
    referenceFwhmPix: float | None = None,
    basisDegGauss: Sequence[int] | None = None,
    basisSigmaGauss: Sequence[float] | None = None,
    metadata: MutableMapping[str, Any] | None = None,
    wings: PsfWings | None = None,
) -> list[Any]:
    """The basis a config asks for: Alard–Lupton (sized from the FWHMs) or delta functions.

    See `generateAlardLuptonBasisList` for the parameters.

    Raises
    ------
    InvalidInputError
        For an unknown ``kernelBasisSet``.
    """
    if config.kernelBasisSet == "alard-lupton":
        if not isinstance(config, PsfMatchConfigAL):
            raise InvalidInputError("an Alard-Lupton basis needs a PsfMatchConfigAL")
        return generateAlardLuptonBasisList(
            config,
            targetFwhmPix,
            referenceFwhmPix,
            basisDegGauss,
            basisSigmaGauss,
            metadata,
            wings,
        )
    if config.kernelBasisSet == "delta-function":
        return makeDeltaFunctionBasisList(config.kernelSize, config.kernelSize)
    raise InvalidInputError(f"unknown kernelBasisSet {config.kernelBasisSet!r}")


def makeRegularizationMatrix(config: PsfMatchConfigDF) -> np.ndarray:
    """H = BᵀB for the delta-function basis of ``config`` (docs/algorithm.md §2.5).

    The matrix is ``kernelSize²`` square, plus one all-zero row and column for the background
    when ``fitForBackground`` is set.

    Raises
    ------
    InvalidInputError
        For a stencil other than 5 or 9, a forward order outside 1..3, a negative border
        penalty, or an unknown regularization type.
    """
    types = {
        "centralDifference": _core.RegularizationType.CENTRAL_DIFFERENCE,
        "forwardDifference": _core.RegularizationType.FORWARD_DIFFERENCE,
    }
    if config.regularizationType not in types:
        raise InvalidInputError(f"unknown regularizationType {config.regularizationType!r}")
    return np.asarray(
        _core.makeRegularizationMatrix(
            config.kernelSize,
            config.kernelSize,
            types[config.regularizationType],
            int(config.centralRegularizationStencil),
            [int(o) for o in config.forwardRegularizationOrders],
            float(config.regularizationBorderPenalty),
            bool(config.fitForBackground),
        )
    )
