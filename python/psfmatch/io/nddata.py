# SPDX-License-Identifier: BSD-3-Clause
"""`~astropy.nddata.NDData` and `~astropy.nddata.CCDData` to and from a
`~psfmatch.image.MaskedImage`."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import InvalidInputError
from ..image import MaskedImage
from .planes import _maskFromArray, _native, _planeBit, _xy0FromHeader

if TYPE_CHECKING:
    # Imported where used: astropy.nddata takes ~0.2 s to import (it brings astropy.wcs and
    # scipy.sparse), which a program that never sees an NDData should not pay.
    from astropy.nddata import CCDData, NDData


def _isNDData(value: Any) -> bool:
    """Whether ``value`` is an `~astropy.nddata.NDData`, without importing astropy.nddata: an
    instance of it exists only if its module has been imported."""
    module = sys.modules.get("astropy.nddata")
    return module is not None and isinstance(value, module.NDData)


def _fromNDData(data: NDData, where: str) -> tuple[MaskedImage, bool]:
    """Convert an NDData; return the MaskedImage and whether it had an uncertainty."""
    image = _native(np.ma.getdata(np.asanyarray(data.data)))
    if image.ndim != 2:
        raise InvalidInputError(f"{where}: expected 2-D data, got shape {image.shape}")
    mask = None
    if data.mask is not None:
        mask = _maskFromArray(data.mask, f"{where} mask", image.shape)
    variance = None
    uncertainty = data.uncertainty
    if uncertainty is not None and uncertainty.array is not None:
        variance, invalid = _varianceFromUncertainty(uncertainty, data.unit, where, image.shape)
        if invalid.any():
            noData = np.int32(_planeBit("NO_DATA"))
            base = mask if mask is not None else np.zeros(image.shape, dtype=np.int32)
            mask = np.where(invalid, base | noData, base)
    meta = data.meta if isinstance(data.meta, Mapping) else {}
    xy0, _ = _xy0FromHeader(meta, where)
    return MaskedImage(image, mask=mask, variance=variance, xy0=xy0), variance is not None


def _varianceFromUncertainty(
    uncertainty: Any, unit: Any, where: str, shape: tuple[int, ...]
) -> tuple[np.ndarray, np.ndarray]:
    """Variance from an NDData uncertainty, and where it is undefined (inverse variance <= 0)."""
    from astropy import units as u
    from astropy.nddata import InverseVariance, StdDevUncertainty, VarianceUncertainty

    array = np.asarray(uncertainty.array, dtype=np.float64)
    if array.shape != shape:
        raise InvalidInputError(
            f"{where}: uncertainty shape {array.shape} differs from the data's {shape}"
        )
    powers = {StdDevUncertainty: 1, VarianceUncertainty: 2, InverseVariance: -2}
    power = next((p for cls, p in powers.items() if isinstance(uncertainty, cls)), None)
    if power is None:
        raise InvalidInputError(
            f"{where}: uncertainty of type {type(uncertainty).__name__} is not supported; use "
            "StdDevUncertainty, VarianceUncertainty or InverseVariance"
        )
    factor = 1.0
    uncertaintyUnit = getattr(uncertainty, "unit", None)
    if uncertaintyUnit is not None and unit is not None:
        try:
            factor = float(u.Unit(uncertaintyUnit).to(u.Unit(unit) ** power))
        except u.UnitConversionError as err:
            raise InvalidInputError(
                f"{where}: uncertainty unit {uncertaintyUnit} does not match data unit {unit}"
            ) from err
    array = array * factor
    invalid = np.zeros(shape, dtype=bool)
    if power == 1:
        variance = np.square(array)
    elif power == 2:
        variance = array
    else:
        # An inverse variance of 0 means "no information": variance +inf, flagged NO_DATA.
        invalid = ~(array > 0)
        with np.errstate(divide="ignore", invalid="ignore"):
            variance = np.where(invalid, np.inf, 1.0 / np.where(invalid, 1.0, array))
    return variance, invalid


def toCCDData(maskedImage: MaskedImage, *, unit: Any = "adu") -> CCDData:
    """Convert a `~psfmatch.image.MaskedImage` to an `~astropy.nddata.CCDData`.

    Parameters
    ----------
    maskedImage : `~psfmatch.image.MaskedImage`
        The image to convert; not modified, and the result shares no memory with it.
    unit : `str` or `astropy.units.Unit`, optional
        The unit of the pixel values (psfmatch does not track units).

    Returns
    -------
    ccd : `~astropy.nddata.CCDData`
        ``data`` is the image, ``uncertainty`` a `~astropy.nddata.VarianceUncertainty` holding
        the variance, ``mask`` is `True` where any mask bit is set (the individual planes are
        lost: CCDData masks are boolean), and ``meta`` holds ``LTV1``/``LTV2`` = ``-xy0``, which
        `readImage` reads back.

    Raises
    ------
    InvalidInputError
        If ``maskedImage`` is not a `MaskedImage` or ``unit`` is not a unit.
    """
    from astropy import units as u
    from astropy.nddata import CCDData, VarianceUncertainty

    if not isinstance(maskedImage, MaskedImage):
        raise InvalidInputError(
            f"maskedImage: expected a MaskedImage, got {type(maskedImage).__name__}"
        )
    try:
        pixelUnit = u.Unit(unit)
    except (TypeError, ValueError) as err:
        raise InvalidInputError(f"unit: {unit!r} is not a unit: {err}") from err
    x0, y0 = maskedImage.getXY0()
    return CCDData(
        maskedImage.image.copy(),
        unit=pixelUnit,
        uncertainty=VarianceUncertainty(maskedImage.variance.copy()),
        mask=maskedImage.mask != 0,
        # Only LTV: an alternate WCS "A" without a primary WCS makes CCDData.read log an
        # astropy INFO message about a missing WCS.
        meta={"LTV1": -x0, "LTV2": -y0},
    )
