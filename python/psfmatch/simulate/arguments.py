# SPDX-License-Identifier: BSD-3-Clause
"""The arguments of `simulatePair`, checked once: `_PairParameters` and `_checkArguments`."""

from __future__ import annotations

import operator
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._checks import _finiteFloat, _floatSequence, _nonNegativeInt, _positiveFloat
from .._psfmodel import GaussianPsfModel
from ..errors import InvalidInputError


@dataclass(frozen=True)
class _PairParameters:
    """The checked arguments of `simulatePair` (see there for their meaning)."""

    shape: Any  # as given, for the messages
    ny: int
    nx: int
    x0: int
    y0: int
    nStars: int
    seed: int | None
    templatePsf: GaussianPsfModel
    sciencePsf: GaussianPsfModel
    fluxScale: float
    background: tuple[float, float, float]
    templateSky: float
    templateSkySigma: float
    scienceSkySigma: float
    gain: float
    fluxRange: tuple[float, float]
    fluxIndex: float
    nTransients: int
    transientFlux: np.ndarray
    nVariables: int
    variableFactorRange: tuple[float, float]
    saturation: float | None
    edge: int
    dtype: np.dtype[Any]
    scienceWcs: Any = None
    templateWcs: Any = None
    templateShape: tuple[int, int] | None = None

    def corners(self) -> tuple[np.ndarray, np.ndarray]:
        """``x, y`` (parent) of the four corner pixels and the centre of the images."""
        return _corners(self.x0, self.y0, self.nx, self.ny)


def _corners(x0: int, y0: int, nx: int, ny: int) -> tuple[np.ndarray, np.ndarray]:
    """``x, y`` (parent) of the four corner pixels and the centre of an image."""
    cornersX = np.array([x0, x0 + nx - 1, x0, x0 + nx - 1, x0 + 0.5 * (nx - 1)], dtype=float)
    cornersY = np.array([y0, y0, y0 + ny - 1, y0 + ny - 1, y0 + 0.5 * (ny - 1)], dtype=float)
    return cornersX, cornersY


def _checkArguments(
    shape: Any,
    *,
    nStars: Any,
    seed: Any,
    templateSigma: Any,
    scienceSigma: Any,
    fluxScale: Any,
    background: Any,
    templateSky: Any,
    templateSkySigma: Any,
    scienceSkySigma: Any,
    gain: Any,
    fluxRange: Any,
    fluxIndex: Any,
    nTransients: Any,
    transientFlux: Any,
    nVariables: Any,
    variableFactorRange: Any,
    saturation: Any,
    edge: Any,
    dtype: Any,
    xy0: Any,
    scienceWcs: Any = None,
    templateWcs: Any = None,
    templateShape: Any = None,
) -> _PairParameters:
    """The arguments of `simulatePair`, checked (in the order it always has) and normalised.

    Raises
    ------
    InvalidInputError
        Naming the first argument out of range. The PSFs are evaluated at the corners and the
        centre of the images, so that a bad model fails even without stars.
    """
    if isinstance(shape, (str, bytes)) or not isinstance(shape, (Sequence, np.ndarray)):
        raise InvalidInputError(f"shape: expected (ny, nx), got {shape!r}")
    if len(shape) != 2:
        raise InvalidInputError(f"shape: expected a 2-D shape (ny, nx), got {shape!r}")
    ny, nx = (_nonNegativeInt(n, "shape") for n in shape)
    if ny == 0 or nx == 0:
        raise InvalidInputError(f"shape: both dimensions must be positive, got {shape!r}")
    nStars = _nonNegativeInt(nStars, "nStars")
    if seed is not None:
        seed = _nonNegativeInt(seed, "seed")
    if isinstance(xy0, (str, bytes)) or not isinstance(xy0, (Sequence, np.ndarray)):
        raise InvalidInputError(f"xy0: expected two integers, got {xy0!r}")
    try:
        x0, y0 = (operator.index(v) for v in xy0)
    except (TypeError, ValueError):
        raise InvalidInputError(f"xy0: expected two integers, got {xy0!r}") from None
    xRange = (float(x0), float(x0 + nx - 1))
    templatePsf = _asPsfModel(templateSigma, "templateSigma", xRange)
    sciencePsf = _asPsfModel(scienceSigma, "scienceSigma", xRange)
    # Check the PSFs over the image now, so a bad model fails even without stars.
    cornersX, cornersY = _corners(x0, y0, nx, ny)
    templatePsf.getParameters(cornersX, cornersY)
    sciencePsf.getParameters(cornersX, cornersY)
    fluxScale = _positiveFloat(fluxScale, "fluxScale")
    if isinstance(background, (str, bytes)) or np.ndim(background) == 0:
        b0, bx, by = _finiteFloat(background, "background"), 0.0, 0.0
    else:
        b0, bx, by = _floatSequence(background, "background", 3)
    templateSky = _finiteFloat(templateSky, "templateSky")
    templateSkySigma = _positiveFloat(templateSkySigma, "templateSkySigma", allowZero=True)
    scienceSkySigma = _positiveFloat(scienceSkySigma, "scienceSkySigma", allowZero=True)
    if isinstance(gain, (bool, np.bool_)):
        raise InvalidInputError(f"gain: expected a number > 0, got {gain!r}")
    try:
        gain = float(gain)
    except (TypeError, ValueError):
        raise InvalidInputError(f"gain: expected a number > 0, got {gain!r}") from None
    if not gain > 0:
        raise InvalidInputError(f"gain: expected a number > 0 (inf allowed), got {gain!r}")
    fluxLow, fluxHigh = _floatSequence(fluxRange, "fluxRange", 2)
    if not 0 < fluxLow <= fluxHigh:
        raise InvalidInputError(f"fluxRange: expected 0 < low <= high, got {fluxRange!r}")
    fluxIndex = _positiveFloat(fluxIndex, "fluxIndex", allowZero=True)
    nTransients = _nonNegativeInt(nTransients, "nTransients")
    if np.ndim(transientFlux) == 0:
        tFlux = np.full(nTransients, _positiveFloat(transientFlux, "transientFlux"))
    else:
        tFlux = np.array(
            [_positiveFloat(f, "transientFlux") for f in np.asarray(transientFlux).ravel()]
        )
        if np.ndim(transientFlux) != 1 or len(tFlux) != nTransients:
            raise InvalidInputError(
                f"transientFlux: expected one number or {nTransients} (nTransients) of them, "
                f"got shape {np.shape(transientFlux)}"
            )
    nVariables = _nonNegativeInt(nVariables, "nVariables")
    nBright = nStars - nStars // 2
    if nVariables > nBright:
        raise InvalidInputError(
            f"nVariables: {nVariables} exceeds the {nBright} stars at least as bright as the "
            f"median of nStars={nStars}"
        )
    factorLow, factorHigh = _floatSequence(variableFactorRange, "variableFactorRange", 2)
    if not 1.0 <= factorLow <= factorHigh:
        raise InvalidInputError(
            f"variableFactorRange: expected 1 <= low <= high, got {variableFactorRange!r}"
        )
    if saturation is not None:
        saturation = _positiveFloat(saturation, "saturation")
    edge = _nonNegativeInt(edge, "edge")
    if 2 * edge >= min(ny, nx):
        raise InvalidInputError(f"edge: {edge} leaves no pixels inside an image of shape {shape}")
    try:
        outType = np.dtype(dtype)
    except TypeError:
        raise InvalidInputError(f"dtype: expected float32 or float64, got {dtype!r}") from None
    if outType not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise InvalidInputError(f"dtype: expected float32 or float64, got {outType}")
    scienceWcs, templateWcs, tShape = _checkGrids((ny, nx), scienceWcs, templateWcs, templateShape)
    return _PairParameters(
        shape=shape,
        ny=ny,
        nx=nx,
        x0=x0,
        y0=y0,
        nStars=nStars,
        seed=seed,
        templatePsf=templatePsf,
        sciencePsf=sciencePsf,
        fluxScale=fluxScale,
        background=(b0, bx, by),
        templateSky=templateSky,
        templateSkySigma=templateSkySigma,
        scienceSkySigma=scienceSkySigma,
        gain=gain,
        fluxRange=(fluxLow, fluxHigh),
        fluxIndex=fluxIndex,
        nTransients=nTransients,
        transientFlux=tFlux,
        nVariables=nVariables,
        variableFactorRange=(factorLow, factorHigh),
        saturation=saturation,
        edge=edge,
        dtype=outType,
        scienceWcs=scienceWcs,
        templateWcs=templateWcs,
        templateShape=tShape,
    )


def _checkGrids(
    shape: tuple[int, int], scienceWcs: Any, templateWcs: Any, templateShape: Any
) -> tuple[Any, Any, tuple[int, int] | None]:
    """The pair's WCSs and the template's shape: all None for a pair on one grid; with a
    template WCS, the science WCS (a TAN WCS of 0.2"/px by default) and the template's shape
    (the science image's by default)."""
    if templateWcs is None:
        for name, value in (("scienceWcs", scienceWcs), ("templateShape", templateShape)):
            if value is not None:
                raise InvalidInputError(f"{name}: given without templateWcs")
        return None, None, None
    from .wcs import _checkWcs, tangentWcs

    templateWcs = _checkWcs(templateWcs, "templateWcs")
    scienceWcs = tangentWcs(shape) if scienceWcs is None else _checkWcs(scienceWcs, "scienceWcs")
    if templateShape is None:
        return scienceWcs, templateWcs, (int(shape[0]), int(shape[1]))
    if isinstance(templateShape, (str, bytes)) or not isinstance(
        templateShape, (Sequence, np.ndarray)
    ):
        raise InvalidInputError(f"templateShape: expected (ny, nx), got {templateShape!r}")
    if len(templateShape) != 2:
        raise InvalidInputError(f"templateShape: expected (ny, nx), got {templateShape!r}")
    ty, tx = (_nonNegativeInt(n, "templateShape") for n in templateShape)
    if ty == 0 or tx == 0:
        raise InvalidInputError(f"templateShape: both dimensions must be positive, got {ty, tx}")
    return scienceWcs, templateWcs, (ty, tx)


def _asPsfModel(value: Any, name: str, xRange: tuple[float, float]) -> GaussianPsfModel:
    """Turn a simulatePair PSF argument into a `GaussianPsfModel`."""
    if isinstance(value, GaussianPsfModel):
        return value
    if callable(value):
        return GaussianPsfModel(value)
    if isinstance(value, (Sequence, np.ndarray)) and not isinstance(value, (str, bytes)):
        s0, s1 = _floatSequence(value, name, 2)
        for i, s in enumerate((s0, s1)):
            if s <= 0:
                raise InvalidInputError(f"{name}[{i}]: expected a sigma > 0, got {s!r}")
        return GaussianPsfModel.linearInX(s0, s1, xStart=xRange[0], xEnd=xRange[1])
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.number)):
        raise InvalidInputError(
            f"{name}: expected a sigma, a (start, end) pair, a callable or a GaussianPsfModel; "
            f"got {value!r}"
        )
    return GaussianPsfModel(_positiveFloat(value, name))
