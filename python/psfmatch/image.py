# SPDX-License-Identifier: BSD-3-Clause
"""Images with mask bit planes.

A psfmatch mask is a numpy ``int32`` array in which each bit is a *mask plane*: bit ``k``
set means the pixel has the property of plane ``k`` (saturated, on the edge, ...). `Mask`
holds the process-wide dictionary from plane names to bit indices, with the reference's
default planes and names, so that ``Mask.getPlaneBitMask(["SAT", "EDGE"])`` gives the value
to test pixels against.

`MaskedImage` holds an image plane, a mask plane and a variance plane of one shape, with the
parent coordinates ``xy0 = (x0, y0)`` of pixel ``[0, 0]``. Arrays are indexed ``[y, x]``.
"""

from __future__ import annotations

import operator
import threading
from collections.abc import Iterable
from typing import Any, ClassVar, SupportsIndex

import numpy as np

from .errors import InvalidInputError

__all__ = ["Mask", "MaskedImage"]

# Mask pixels are int32, so there are 32 planes at most.
_MAX_PLANES = 32

#: Rows per band of the whole-image loops that avoid image-sized temporaries (~1 MB of
#: int32 a band at 4096 columns; a fresh 4096² float64 array is 134 MB to page-fault in).
_ROW_BAND = 64


def _rowBands(n: int) -> list[slice]:
    """Slices of `_ROW_BAND` rows covering ``range(n)``, the last one as long as is left."""
    return [slice(y, min(y + _ROW_BAND, n)) for y in range(0, n, _ROW_BAND)]


def _toInt32(bits: int) -> int:
    """Return the int32 value with the same bit pattern as a 32-bit unsigned ``bits``."""
    return bits - (1 << 32) if bits >= (1 << 31) else bits


class Mask:
    """The dictionary of mask planes of 32-bit ``int32`` mask arrays.

    Every method is a class method: the plane dictionary is shared by every image in the
    process, as in the reference. The default planes are, by bit index:

    ====  =====================  ==================================================
    Bit   Plane                  Meaning
    ====  =====================  ==================================================
    0     ``BAD``                known bad pixel (e.g. a bad column)
    1     ``SAT``                saturated
    2     ``INTRP``              value was interpolated
    3     ``CR``                 cosmic ray
    4     ``EDGE``               too close to the edge to be processed properly
    5     ``DETECTED``           part of a detected source
    6     ``DETECTED_NEGATIVE``  part of a detected negative source
    7     ``SUSPECT``            value is questionable (e.g. near saturation)
    8     ``NO_DATA``            no usable value (e.g. outside a convolution's reach)
    ====  =====================  ==================================================

    `addMaskPlane` appends further planes at the next free bit.

    Notes
    -----
    Bit values are returned as Python ints holding the ``int32`` value with that bit pattern,
    so the value of bit 31 is negative (``-2**31``); they can be combined with an ``int32``
    mask array by ``&`` and ``|`` directly.
    """

    _DEFAULT_PLANES: ClassVar[tuple[str, ...]] = (
        "BAD",
        "SAT",
        "INTRP",
        "CR",
        "EDGE",
        "DETECTED",
        "DETECTED_NEGATIVE",
        "SUSPECT",
        "NO_DATA",
    )
    _maskPlaneDict: ClassVar[dict[str, int]] = {
        name: bit for bit, name in enumerate(_DEFAULT_PLANES)
    }
    _lock: ClassVar[threading.Lock] = threading.Lock()

    @classmethod
    def getMaskPlane(cls, name: str) -> int:
        """Return the bit index of a mask plane.

        Parameters
        ----------
        name : `str`
            Name of the plane, e.g. ``"SAT"``.

        Returns
        -------
        bit : `int`
            The plane's bit index, 0 to 31.

        Raises
        ------
        KeyError
            If no plane of that name is defined.
        TypeError
            If ``name`` is not a string.
        """
        if not isinstance(name, str):
            raise TypeError(f"mask plane name must be a string; got {name!r}")
        try:
            return cls._maskPlaneDict[name]
        except KeyError:
            raise KeyError(
                f"unknown mask plane {name!r}; defined planes: {', '.join(cls._maskPlaneDict)}"
            ) from None

    @classmethod
    def getPlaneBitMask(cls, names: str | Iterable[str], *, skipUnknown: bool = False) -> int:
        """Return the bit value of one mask plane, or the OR of several.

        Parameters
        ----------
        names : `str` or iterable of `str`
            One plane name, or any number of them (an empty iterable gives 0).
        skipUnknown : `bool`, optional
            Leave out names that are not defined planes instead of raising.

        Returns
        -------
        bitMask : `int`
            ``OR`` of ``1 << bit`` over the planes, as an ``int32`` value.

        Raises
        ------
        KeyError
            If a name is not a defined plane and ``skipUnknown`` is false.
        TypeError
            If ``names`` is neither a string nor an iterable of strings.
        """
        if isinstance(names, str):
            names = (names,)
        try:
            nameList = list(names)
        except TypeError:
            raise TypeError(
                f"names must be a mask plane name or an iterable of them; got {names!r}"
            ) from None
        bits = 0
        for name in nameList:
            if not isinstance(name, str):
                raise TypeError(f"mask plane names must be strings; got {name!r}")
            if skipUnknown and name not in cls._maskPlaneDict:
                continue
            bits |= 1 << cls.getMaskPlane(name)
        return _toInt32(bits)

    @classmethod
    def addMaskPlane(cls, name: str) -> int:
        """Define a new mask plane, or look up an existing one.

        Parameters
        ----------
        name : `str`
            Name of the plane; a plane that already exists keeps its bit.

        Returns
        -------
        bit : `int`
            The plane's bit index.

        Raises
        ------
        TypeError
            If ``name`` is not a string.
        ValueError
            If ``name`` is empty, or all 32 bits are already taken.
        """
        if not isinstance(name, str):
            raise TypeError(f"mask plane name must be a string; got {name!r}")
        if not name:
            raise ValueError("mask plane name must not be empty")
        with cls._lock:
            if name in cls._maskPlaneDict:
                return cls._maskPlaneDict[name]
            if len(cls._maskPlaneDict) >= _MAX_PLANES:
                raise ValueError(
                    f"cannot add mask plane {name!r}: all {_MAX_PLANES} bits of an int32 "
                    "mask are already in use"
                )
            bit = max(cls._maskPlaneDict.values(), default=-1) + 1
            cls._maskPlaneDict[name] = bit
            return bit

    @classmethod
    def getMaskPlaneDict(cls) -> dict[str, int]:
        """Return a copy of the plane dictionary.

        Returns
        -------
        planes : `dict` [`str`, `int`]
            Plane name to bit index, in bit order.
        """
        return dict(sorted(cls._maskPlaneDict.items(), key=lambda item: item[1]))

    @classmethod
    def interpret(cls, value: SupportsIndex) -> str:
        """Name the planes set in a mask pixel value.

        Parameters
        ----------
        value : `int`
            A mask pixel (a Python or numpy integer, ``int32`` or its unsigned bit pattern).

        Returns
        -------
        names : `str`
            The names of the defined planes whose bits are set, in bit order, joined by
            commas; ``""`` if none is. Set bits that belong to no plane are not reported.

        Raises
        ------
        TypeError
            If ``value`` is not an integer.
        ValueError
            If ``value`` does not fit in 32 bits.
        """
        try:
            number = operator.index(value)
        except TypeError:
            raise TypeError(f"mask value must be an integer; got {value!r}") from None
        if not -(1 << 31) <= number < (1 << 32):
            raise ValueError(f"mask value {number} does not fit in 32 bits")
        number &= 0xFFFFFFFF
        return ",".join(name for name, bit in cls.getMaskPlaneDict().items() if number & (1 << bit))


def _box2i() -> Any:
    from . import _core

    return _core.Box2I


def __getattr__(name: str) -> Any:
    # Box2I lives in the compiled core; resolving it lazily keeps Mask importable without it.
    if name == "Box2I":
        return _box2i()
    raise AttributeError(name)


def _asPixelArray(array: Any, name: str) -> np.ndarray:
    """Return ``array`` as a C-contiguous, native-order float32 or float64 2-D array.

    float32 stays float32; other real dtypes become float64. Never modifies ``array``.
    """
    try:
        a = np.asanyarray(array)
    except (TypeError, ValueError) as err:  # ragged nested sequences, ...
        raise InvalidInputError(f"{name}: cannot make a 2-D array of it: {err}") from err
    if isinstance(a, np.ma.MaskedArray):
        raise InvalidInputError(f"{name}: pass a masked array's data and mask separately")
    if a.ndim != 2:
        raise InvalidInputError(f"{name}: expected a 2-D array, got {a.ndim} dimensions {a.shape}")
    if a.dtype.kind not in "fiu":
        raise InvalidInputError(f"{name}: expected a real numeric array, got dtype {a.dtype}")
    if a.size == 0:
        raise InvalidInputError(f"{name}: the array is empty (shape {a.shape})")
    dtype = np.float32 if (a.dtype.kind == "f" and a.dtype.itemsize == 4) else np.float64
    return np.ascontiguousarray(a, dtype=np.dtype(dtype).newbyteorder("="))


_INT32 = (-(2**31), 2**31 - 1)
"""The pixel coordinates the compiled core (`Box2I`) holds: 32-bit signed integers."""


def _checkedXY0(xy0: Any, shape: tuple[int, ...]) -> tuple[int, int]:
    """``xy0`` as two Python ints, checked to put every pixel of an image of ``shape`` on
    32-bit coordinates (beyond them the core's boxes were a `TypeError`, or wrapped round
    into an empty region)."""
    try:
        # Exactly two: (0, 0, 0) was taken as (0, 0), and a bool as 0 or 1.
        if len(xy0) != 2 or any(isinstance(v, bool | np.bool_) for v in xy0):
            raise TypeError
        x0, y0 = operator.index(xy0[0]), operator.index(xy0[1])
    except (TypeError, IndexError) as err:
        raise InvalidInputError(f"xy0: expected two integers, got {xy0!r}") from err
    for axis, origin, length in (("x", x0, shape[1]), ("y", y0, shape[0])):
        last = origin + max(length, 1) - 1
        if origin < _INT32[0] or last > _INT32[1]:
            raise InvalidInputError(
                f"xy0: the origin {axis}0 = {origin} puts the image's pixels at {axis} = "
                f"{origin} to {last}, beyond the 32-bit coordinates psfmatch uses "
                f"({_INT32[0]} to {_INT32[1]})"
            )
    return x0, y0


class MaskedImage:
    """An image with a mask of bit planes and a variance, at an origin in parent coordinates.

    Parameters
    ----------
    image : array_like, shape (ny, nx)
        Pixel values. float32 is kept; any other real dtype becomes float64.
    mask : array_like of int, optional
        Mask bit planes (see `Mask`); zeros if omitted. Stored as int32.
    variance : array_like, optional
        Per-pixel variance, same shape; zeros if omitted (the reference's default). Stored in
        the image's dtype.
    xy0 : tuple of int, optional
        Parent coordinates ``(x0, y0)`` of pixel ``[0, 0]``.

    Notes
    -----
    The arrays are stored C-contiguous and in native byte order; an input that already is
    is stored without a copy, and psfmatch never writes into it.
    """

    def __init__(
        self,
        image: Any,
        mask: Any = None,
        variance: Any = None,
        xy0: tuple[int, int] = (0, 0),
    ) -> None:
        self.image = _asPixelArray(image, "image")
        shape = self.image.shape
        if mask is None:
            self.mask = np.zeros(shape, dtype=np.int32)
        else:
            m = np.asarray(mask)
            if m.shape != shape:
                raise InvalidInputError(f"mask: shape {m.shape} differs from the image's {shape}")
            if m.dtype.kind not in "iub":
                raise InvalidInputError(f"mask: expected an integer array, got dtype {m.dtype}")
            if m.dtype.kind != "b" and m.dtype.itemsize > 4:
                # int32 bit patterns and their uint32 form fit; anything wider would be
                # truncated silently by the cast.
                low, high = int(m.min()), int(m.max())
                if low < -(1 << 31) or high >= (1 << 32):
                    raise InvalidInputError(
                        f"mask: values must fit in 32 bits, got the range [{low}, {high}]"
                    )
                if high >= (1 << 31):
                    m = (m.astype(np.int64) & 0xFFFFFFFF).astype(np.uint32).view(np.int32)
            self.mask = np.ascontiguousarray(m, dtype=np.int32)
        if variance is None:
            self.variance = np.zeros(shape, dtype=self.image.dtype)
        else:
            v = _asPixelArray(variance, "variance")
            if v.shape != shape:
                raise InvalidInputError(
                    f"variance: shape {v.shape} differs from the image's {shape}"
                )
            self.variance = np.ascontiguousarray(v, dtype=self.image.dtype)
        self._xy0 = _checkedXY0(xy0, shape)

    @property
    def dtype(self) -> np.dtype:
        """The pixel dtype of the image and variance planes."""
        return self.image.dtype

    def getXY0(self) -> tuple[int, int]:
        """Parent coordinates ``(x0, y0)`` of pixel ``[0, 0]``."""
        return self._xy0

    def setXY0(self, xy0: tuple[int, int]) -> None:
        """Set the parent coordinates of pixel ``[0, 0]``."""
        self._xy0 = _checkedXY0(xy0, self.image.shape)

    def getWidth(self) -> int:
        return int(self.image.shape[1])

    def getHeight(self) -> int:
        return int(self.image.shape[0])

    def getDimensions(self) -> tuple[int, int]:
        """``(width, height)``."""
        return self.getWidth(), self.getHeight()

    def getBBox(self) -> Any:
        """The parent-coordinate `Box2I` covered by this image."""
        return _box2i()(self._xy0, self.getDimensions())

    def clone(self) -> MaskedImage:
        """A deep copy."""
        return MaskedImage(self.image.copy(), self.mask.copy(), self.variance.copy(), xy0=self._xy0)

    def subimage(self, bbox: Any) -> MaskedImage:
        """A copy of the part inside ``bbox`` (parent coordinates), keeping its origin.

        Raises
        ------
        InvalidInputError
            If ``bbox`` is not entirely inside this image.
        """
        x0, y0 = self._xy0
        bx0, by0 = bbox.getMinX() - x0, bbox.getMinY() - y0
        bx1, by1 = bbox.getMaxX() - x0 + 1, bbox.getMaxY() - y0 + 1
        if bx0 < 0 or by0 < 0 or bx1 > self.getWidth() or by1 > self.getHeight() or bbox.isEmpty():
            raise InvalidInputError(f"subimage: {bbox} is not inside the image's {self.getBBox()}")
        sl = (slice(by0, by1), slice(bx0, bx1))
        return MaskedImage(
            self.image[sl].copy(),
            self.mask[sl].copy(),
            self.variance[sl].copy(),
            xy0=(bbox.getMinX(), bbox.getMinY()),
        )

    def __repr__(self) -> str:
        return (
            f"MaskedImage({self.getWidth()}x{self.getHeight()}, dtype={self.dtype}, "
            f"xy0={self._xy0})"
        )
