# SPDX-License-Identifier: BSD-3-Clause
"""The planes as files and arrays hold them: the origin ``xy0`` a header records, mask bit
patterns and their mapping onto psfmatch's mask planes, native byte order.

The conventions are those `psfmatch.io` describes.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from astropy.io import fits

from ..errors import InvalidInputError
from ..image import Mask

_log = logging.getLogger("psfmatch.io")


def _note(info: dict[str, Any] | None, key: str, value: Any) -> None:
    if info is not None:
        info[key] = value


def _planeBit(name: str) -> int:
    return Mask.getPlaneBitMask(name)


def _headerNumber(header: Mapping[str, Any], key: str, where: str) -> float | None:
    if key not in header:
        return None
    value = header[key]
    if isinstance(value, bool) or not isinstance(value, int | float | np.number):
        raise InvalidInputError(f"{where}: header keyword {key} = {value!r} is not a number")
    return float(value)


def _integral(value: float, what: str, where: str) -> int:
    if not math.isfinite(value) or abs(value - round(value)) > 1e-6:
        raise InvalidInputError(f"{where}: {what} = {value!r} is not an integer pixel origin")
    return int(round(value))


def _xy0FromHeader(header: Mapping[str, Any], where: str) -> tuple[tuple[int, int], str]:
    """Return the image origin a header records, and which keywords gave it.

    See the `psfmatch.io` docstring for the convention.
    """
    fromWcs: tuple[int, int] | None = None
    crval1 = _headerNumber(header, "CRVAL1A", where)
    crval2 = _headerNumber(header, "CRVAL2A", where)
    ctypes = [str(header.get(f"CTYPE{i}A", "LINEAR")).strip().upper() for i in (1, 2)]
    if crval1 is not None and crval2 is not None and all(c == "LINEAR" for c in ctypes):
        origin = []
        for i, value in ((1, crval1), (2, crval2)):
            crpix = _headerNumber(header, f"CRPIX{i}A", where)
            offset = value - ((crpix if crpix is not None else 1.0) - 1.0)
            origin.append(_integral(offset, f"CRVAL{i}A - (CRPIX{i}A - 1)", where))
        fromWcs = (origin[0], origin[1])
    ltv = [_headerNumber(header, f"LTV{i}", where) for i in (1, 2)]
    fromLtv: tuple[int, int] | None = None
    if ltv[0] is not None or ltv[1] is not None:
        fromLtv = (
            _integral(-(ltv[0] or 0.0), "-LTV1", where),
            _integral(-(ltv[1] or 0.0), "-LTV2", where),
        )
    if fromWcs is not None:
        if fromLtv is not None and fromLtv != fromWcs:
            _log.warning(
                "%s: CRVAL1A/CRVAL2A give xy0 = %s but LTV1/LTV2 give %s; using the former",
                where,
                fromWcs,
                fromLtv,
            )
        return fromWcs, "CRVAL1A/CRVAL2A"
    if fromLtv is not None:
        return fromLtv, "LTV1/LTV2"
    return (0, 0), "default"


def _checkHeaderOrigin(
    header: Mapping[str, Any],
    xy0: tuple[int, int],
    source: str,
    shape: tuple[int, ...],
    where: str,
) -> None:
    """An `InvalidInputError` naming the header card when the origin it gives puts the image
    beyond the 32-bit pixel coordinates of the compiled core (a `TypeError` from `Box2I`, or
    "SpatialCellSet: empty region" once the box wrapped round)."""
    from ..image import _INT32

    for index, (axis, length) in enumerate((("x", shape[-1]), ("y", shape[-2]))):
        origin = xy0[index]
        last = origin + max(length, 1) - 1
        if origin >= _INT32[0] and last <= _INT32[1]:
            continue
        if source == "LTV1/LTV2":
            card = f"LTV{index + 1} = {header.get(f'LTV{index + 1}')!r}"
        else:
            card = f"CRVAL{index + 1}A = {header.get(f'CRVAL{index + 1}A')!r}"
        raise InvalidInputError(
            f"{where}: the header's {card} puts the image's pixels at {axis} = {origin} to "
            f"{last} (xy0 = {xy0}), beyond the 32-bit pixel coordinates psfmatch uses "
            f"({_INT32[0]} to {_INT32[1]}); fix the header's origin ({source})"
        )


def _maskBitPattern(array: Any, where: str) -> np.ndarray:
    """Return an integer mask as ``uint32`` bit patterns, checking it fits in 32 bits."""
    a = np.asarray(array)
    if a.dtype.kind == "b":
        return a.astype(np.uint32)
    if a.dtype.kind == "f":
        finite = np.isfinite(a)
        if not finite.all() or not np.array_equal(a, np.round(a)):
            raise InvalidInputError(
                f"{where}: a mask must hold integers (bit planes) or booleans; got "
                f"non-integral {a.dtype} values"
            )
        a = a.astype(np.int64)
    if a.dtype.kind not in "iu":
        raise InvalidInputError(
            f"{where}: a mask must be an integer or boolean array, got dtype {a.dtype}"
        )
    if a.dtype.itemsize <= 4:
        # Reinterpret signed values as their unsigned bit pattern of the same width: an int16
        # -32768 is bit 15, not bits 15-31.
        return a.view(np.dtype(a.dtype.str.replace("i", "u"))).astype(np.uint32)
    wide = a.astype(np.int64) if a.dtype.kind == "i" else a
    if a.size and (wide.min() < -(1 << 31) or wide.max() >= (1 << 32)):
        raise InvalidInputError(f"{where}: mask values do not fit in 32 bits")
    return (wide & 0xFFFFFFFF).astype(np.uint32)


def _filePlanes(header: fits.Header, where: str) -> dict[str, int]:
    """The ``MP_<PLANE>`` keywords of a mask header as ``{plane: bit}``."""
    planes: dict[str, int] = {}
    for card in header.cards:
        key = card.keyword
        if not key.upper().startswith("MP_") or len(key) <= 3:
            continue
        value = card.value
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 32:
            raise InvalidInputError(
                f"{where}: mask plane keyword {key} = {value!r} is not a bit index 0-31"
            )
        planes[key[3:]] = value
    return planes


def _mapMask(raw: Any, header: fits.Header, where: str, info: dict[str, Any] | None) -> np.ndarray:
    """Translate a file's mask bits onto psfmatch's plane dictionary.

    Planes the dictionary lacks are added with `Mask.addMaskPlane`. Bits the file sets but no
    ``MP_`` keyword names are dropped (and logged). A mask without ``MP_`` keywords is taken to
    use psfmatch's own bits.
    """
    pattern = _maskBitPattern(raw, where)
    planes = _filePlanes(header, where)
    _note(info, "maskPlanesInFile", dict(planes))
    if not planes:
        return pattern.view(np.int32)
    added: list[str] = []
    mapping: dict[str, tuple[int, int]] = {}
    for name, fileBit in planes.items():
        known = name in Mask.getMaskPlaneDict()
        try:
            ourBit = Mask.addMaskPlane(name)
        except ValueError as err:
            raise InvalidInputError(f"{where}: cannot add mask plane {name!r}: {err}") from err
        if not known:
            added.append(name)
        mapping[name] = (fileBit, ourBit)
    if added:
        _log.info("%s: added mask planes %s", where, ", ".join(added))
    named = 0
    for fileBit, _ in mapping.values():
        named |= 1 << fileBit
    present = int(np.bitwise_or.reduce(pattern, axis=None)) if pattern.size else 0
    unnamed = present & ~named
    if unnamed:
        _log.warning(
            "%s: mask bits 0x%x are set but named by no MP_ keyword; they are dropped",
            where,
            unnamed,
        )
    _note(info, "maskPlanesAdded", added)
    _note(info, "maskBitsDropped", unnamed)
    remapped = {name: bits for name, bits in mapping.items() if bits[0] != bits[1]}
    _note(info, "maskPlanesRemapped", remapped)
    if not remapped and not unnamed:
        return pattern.view(np.int32)
    if remapped:
        _log.info("%s: mask plane bits remapped (file bit, psfmatch bit): %s", where, remapped)
    out = np.zeros(pattern.shape, dtype=np.uint32)
    for fileBit, ourBit in mapping.values():
        out |= ((pattern >> np.uint32(fileBit)) & np.uint32(1)) << np.uint32(ourBit)
    return out.view(np.int32)


def _maskFromArray(mask: Any, where: str, shape: tuple[int, ...]) -> np.ndarray:
    """A boolean mask becomes the BAD plane; an integer mask is taken as psfmatch bits."""
    m = np.asarray(np.ma.getdata(mask))
    if m.shape != shape:
        raise InvalidInputError(f"{where}: shape {m.shape} differs from the image's {shape}")
    if m.dtype.kind == "b":
        return np.where(m, np.int32(_planeBit("BAD")), np.int32(0))
    return _maskBitPattern(m, where).view(np.int32)


def _native(array: Any) -> Any:
    """``array`` in native byte order, keeping its dtype (a copy only if it was swapped).

    `MaskedImage` keeps float32 only when the dtype is exactly native float32, so a
    big-endian float32 would otherwise become float64.
    """
    if isinstance(array, np.ndarray) and not array.dtype.isnative:
        return array.astype(array.dtype.newbyteorder("="))
    return array
