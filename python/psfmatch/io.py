# SPDX-License-Identifier: BSD-3-Clause
"""Reading and writing images: FITS files, numpy arrays, `~astropy.nddata.NDData`.

`readImage` is the one place where user input becomes a `~psfmatch.image.MaskedImage`: a FITS
path, a `MaskedImage`, a 2-D array, a numpy masked array or an `~astropy.nddata.NDData` /
`~astropy.nddata.CCDData`, with an optional separate variance, sigma or mask. When no variance
is available it is estimated from the image (see `readImage`).

`readMaskedImage` reads a FITS file. It recognises, in this order:

1. the LSST ``MaskedImage`` layout: image, mask and variance extensions tagged by the header
   keyword ``EXTTYPE`` (``IMAGE``, ``MASK``, ``VARIANCE``) or, failing that, by ``EXTNAME``;
   the mask extension's ``MP_<PLANE>`` keywords give the bit of each mask plane;
2. the HST/JWST layout: extensions named ``SCI``, ``ERR`` (standard deviation) and ``DQ``
   (data quality; any nonzero value becomes the ``BAD`` plane);
3. astropy's `~astropy.nddata.CCDData` layout: data in the primary HDU with ``UNCERT`` and/or
   ``MASK`` extensions, read with `CCDData.read <astropy.nddata.CCDData.read>`;
4. a plain image: the primary HDU if it holds a 2-D image, else the first extension that does.

`writeMaskedImage` writes the LSST layout, atomically. `metadataToHeader` and
`headerToMetadata` turn a `~psfmatch.task.TaskMetadata` into FITS header cards and back.

The image origin ``xy0``
------------------------
The parent coordinates of pixel ``[0, 0]`` are stored as the LSST pipelines store them: an
alternate linear world coordinate system ``A`` in which pixel ``(CRPIX1A, CRPIX2A)`` (1-based;
normally 1) has coordinates ``(CRVAL1A, CRVAL2A)``, so ``x0 = CRVAL1A - (CRPIX1A - 1)``; and
the IRAF keywords ``LTV1``/``LTV2`` (``x0 = -LTV1``), which are used when the ``A`` keywords
are absent (or describe something other than a ``LINEAR`` axis). When neither is present,
``xy0 = (0, 0)``. The origin is taken from the image HDU; a mask or variance HDU whose origin
differs is logged and reported, not an error (the reference reads it the same way).

Diagnostics
-----------
The reading functions log what they decided to the logger ``"psfmatch.io"`` and, given an
``info`` dict, fill it with the same facts (layout, origin source, mask-plane remapping,
whether the variance was estimated, and any warning astropy raised while reading). They never
issue Python warnings: warnings that astropy raises while reading are captured, logged and
reported in ``info["warnings"]``, and those that mean the file is damaged (truncated,
corrupt) become an `~psfmatch.errors.InvalidInputError`. A ``CHECKSUM`` or ``DATASUM`` card
that does not match data that read cleanly is such a warning, not an error: cut-outs made by
common tools copy the original frame's cards.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import typing
import uuid
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from astropy import units as u
from astropy.io import fits
from astropy.nddata import (
    CCDData,
    InverseVariance,
    NDData,
    StdDevUncertainty,
    VarianceUncertainty,
)
from astropy.stats import sigma_clipped_stats

from .errors import (
    InputFileNotFoundError,
    InvalidInputError,
    OutputExistsError,
    PsfMatchError,
    PsfMatchIOError,
)
from .image import Mask, MaskedImage
from .task import TaskMetadata

__all__ = [
    "headerToMetadata",
    "metadataToHeader",
    "readImage",
    "readMaskedImage",
    "toCCDData",
    "writeMaskedImage",
]

_log = logging.getLogger("psfmatch.io")

_NOT_READ = object()
"""Placeholder for the result of a read that did not happen."""

_T = TypeVar("_T")

_SKY_CLIP_SIGMA = 3.0
"""Clipping threshold (in standard deviations) of the sky statistics of the variance estimate."""

_SKY_CLIP_ITERS = 10
"""Maximum clipping iterations of the sky statistics."""

_MIN_SKY_PIXELS = 25
"""Fewest unmasked finite pixels from which a sky variance is estimated."""

_NONFINITE_MARKER = "non-finite float"
"""Card comment marking a NaN or infinity that `metadataToHeader` had to store as a string."""

_LIST_KEY = re.compile(r"^(?P<name>.+)\[(?P<index>\d+)\]$")
"""Keyword of one element of a list written by `metadataToHeader`: ``name[i]``."""

_STANDARD_KEY = re.compile(r"^[A-Z0-9_-]{1,8}$")
"""A keyword that needs no ``HIERARCH`` convention."""

_STRUCTURAL_KEYS = frozenset(
    {
        "SIMPLE",
        "XTENSION",
        "BITPIX",
        "NAXIS",
        "EXTEND",
        "PCOUNT",
        "GCOUNT",
        "GROUPS",
        "BSCALE",
        "BZERO",
        "BLANK",
        "END",
        "CHECKSUM",
        "DATASUM",
    }
)
"""Keywords that describe an HDU's structure: never copied between HDUs nor into metadata."""

_COMMENTARY_KEYS = frozenset({"COMMENT", "HISTORY", ""})

_DAMAGE_PATTERN = re.compile(r"truncat|corrupt|not a multiple of 2880", re.I)
"""Warnings astropy raises for a damaged file; reading such a file is an error."""

_CHECKSUM_PATTERN = re.compile(
    r"(?P<card>Checksum|Datasum) verification failed for HDU (?P<hdu>.+?)\.?\s*$", re.I | re.S
)
"""astropy's warning that an HDU's ``CHECKSUM`` or ``DATASUM`` card does not match it.

Not an error: cut-outs made by common tools copy the original frame's cards, which then no
longer match. Data that are damaged beyond that fail to read, or raise a `_DAMAGE_PATTERN`
warning."""


# --------------------------------------------------------------------------------------------
# Small helpers


def _isPath(value: Any) -> bool:
    return isinstance(value, str | os.PathLike)


def _asPath(value: Any, name: str) -> Path:
    """Return ``value`` (a `str` or path-like) as a `Path`, or raise `InvalidInputError`."""
    if not _isPath(value):
        raise InvalidInputError(
            f"{name}: expected a file path (str or os.PathLike), got {type(value).__name__}"
        )
    return Path(os.fsdecode(os.fspath(value)))


def _note(info: dict[str, Any] | None, key: str, value: Any) -> None:
    if info is not None:
        info[key] = value


def _planeBit(name: str) -> int:
    return Mask.getPlaneBitMask(name)


def _headerTag(header: fits.Header, key: str) -> str | None:
    value = header.get(key)
    return value.strip().upper() if isinstance(value, str) else None


def _has2dData(hdu: Any) -> bool:
    return (
        isinstance(hdu, fits.PrimaryHDU | fits.ImageHDU | fits.CompImageHDU)
        and hdu.header.get("NAXIS", 0) == 2
    )


# --------------------------------------------------------------------------------------------
# Opening files


def _checkInputFile(path: Path) -> None:
    """Raise the psfmatch error for a path that is not an existing regular file."""
    if not path.exists():
        raise InputFileNotFoundError(f"input file {str(path)!r} does not exist", str(path))
    if path.is_dir():
        raise InvalidInputError(f"input {str(path)!r} is a directory, not a FITS file")


def _warningMessages(caught: Iterable[warnings.WarningMessage]) -> list[str]:
    return [f"{w.category.__name__}: {w.message}" for w in caught]


def _hduLabel(text: str) -> str:
    """astropy's ``('NAME', EXTVER)`` of an HDU as ``'NAME'`` (with the EXTVER if not 1)."""
    match = re.fullmatch(r"\('(?P<name>.*)', (?P<ver>\d+)\)", text)
    if match is None:
        return text
    name = repr(match["name"]) if match["name"] else "(no EXTNAME)"
    return name if match["ver"] == "1" else f"{name} (EXTVER {match['ver']})"


def _checksumWarnings(path: Path, messages: list[str]) -> tuple[list[str], list[str]]:
    """Split astropy's warnings into one message per HDU whose checksums fail, and the rest."""
    failed: dict[str, list[str]] = {}
    others = []
    for message in messages:
        match = _CHECKSUM_PATTERN.search(message)
        if match is None:
            others.append(message)
            continue
        cards = failed.setdefault(match["hdu"].strip(), [])
        card = match["card"].upper()
        if card not in cards:
            cards.append(card)
    notes = []
    for hdu, cards in failed.items():
        which = " and ".join(cards) + (" cards do" if len(cards) > 1 else " card does")
        notes.append(
            f"{str(path)!r} HDU {_hduLabel(hdu)}: the {which} not match the data, which read "
            "cleanly and are used (a cut-out often keeps the original frame's checksums)"
        )
    return notes, others


def _withFits(path: Path, work: Callable[[fits.HDUList], _T], info: dict[str, Any] | None) -> _T:
    """Open ``path`` read-only, run ``work`` on it and turn every failure into a psfmatch error.

    Warnings raised by astropy while the file is open are captured: those that say the file is
    damaged (truncated, corrupt) make the read fail with `InvalidInputError`; the others are
    logged and reported in ``info["warnings"]``, among them a ``CHECKSUM``/``DATASUM`` card that
    does not match data that read cleanly (once per HDU).
    """
    _checkInputFile(path)
    # LSST files carry non-standard keywords and third-party files anything at all: astropy
    # reports what it notices as warnings. They are diagnostics about the file, not about the
    # caller's code, so they are recorded here (and logged) rather than passed on; the ones
    # that mean the data cannot be trusted are raised as errors below. catch_warnings changes
    # process-wide state, so two threads reading at once may exchange their records.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        failure: BaseException | None = None
        result: Any = _NOT_READ
        try:
            # memmap=False: the arrays are read into memory and the file closed on return, so
            # nothing returned refers to the file. checksum=True verifies CHECKSUM/DATASUM
            # cards when the file has them (psfmatch writes them); a mismatch is reported,
            # not refused (see _CHECKSUM_PATTERN).
            with fits.open(
                path, mode="readonly", memmap=False, lazy_load_hdus=False, checksum=True
            ) as hdul:
                result = work(hdul)
        except Exception as err:  # astropy raises OSError, ValueError, TypeError, ...
            failure = err
    checksumNotes, messages = _checksumWarnings(path, _warningMessages(caught))
    damage = [m for m in messages if _DAMAGE_PATTERN.search(m)]
    if damage:
        # Reported first: it explains whatever else went wrong.
        raise InvalidInputError(
            f"{str(path)!r} is a damaged FITS file: {'; '.join(dict.fromkeys(damage))}"
        ) from failure
    if isinstance(failure, PsfMatchError):
        raise failure
    if isinstance(failure, PermissionError):
        raise PsfMatchIOError(
            f"cannot read {str(path)!r}: permission denied", str(path)
        ) from failure
    if failure is not None:
        raise InvalidInputError(
            f"cannot read {str(path)!r} as FITS: {type(failure).__name__}: {failure}"
        ) from failure
    for note in checksumNotes:
        _log.warning("%s", note)
    for message in dict.fromkeys(messages):
        _log.warning("reading %s: %s", path, message)
    if info is not None and (checksumNotes or messages):
        info.setdefault("warnings", []).extend(checksumNotes + messages)
    assert result is not _NOT_READ
    return typing.cast(_T, result)


# --------------------------------------------------------------------------------------------
# xy0


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

    See the module docstring for the convention.
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


# --------------------------------------------------------------------------------------------
# Masks


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


# --------------------------------------------------------------------------------------------
# Reading FITS


def _roles(hdul: fits.HDUList) -> tuple[str, dict[str, int]]:
    """Identify the layout of an open file: its name and the HDU index of each plane."""
    for key, layout in (("EXTTYPE", "lsst"), ("EXTNAME", "extname")):
        roles: dict[str, int] = {}
        for index, hdu in enumerate(hdul):
            role = _headerTag(hdu.header, key)
            if role in ("IMAGE", "MASK", "VARIANCE") and role not in roles:
                roles[role] = index
        if "IMAGE" in roles:
            return layout, roles
    names = {
        _headerTag(hdu.header, "EXTNAME"): index for index, hdu in reversed(list(enumerate(hdul)))
    }
    if "SCI" in names:
        return "sci", {role: names[role] for role in ("SCI", "ERR", "DQ") if role in names}
    if _has2dData(hdul[0]) and ("UNCERT" in names or "MASK" in names):
        return "ccddata", {"IMAGE": 0}
    for index, hdu in enumerate(hdul):
        if _has2dData(hdu):
            return "plain", {"IMAGE": index}
    return "none", {}


def _hduData(hdul: fits.HDUList, index: int, where: str, shape: tuple[int, ...] | None) -> Any:
    hdu = hdul[index]
    data = hdu.data
    if data is None:
        return None
    if data.ndim != 2:
        raise InvalidInputError(f"{where}: HDU {index} holds a {data.ndim}-D array, not an image")
    if shape is not None and data.shape != shape:
        raise InvalidInputError(
            f"{where}: HDU {index} has shape {data.shape}, the image has {shape}"
        )
    return data


def _native(array: Any) -> Any:
    """``array`` in native byte order, keeping its dtype (a copy only if it was swapped).

    `MaskedImage` keeps float32 only when the dtype is exactly native float32, so a
    big-endian float32 would otherwise become float64.
    """
    if isinstance(array, np.ndarray) and not array.dtype.isnative:
        return array.astype(array.dtype.newbyteorder("="))
    return array


def _nativeCopy(data: Any) -> np.ndarray:
    """A C-contiguous native-byte-order copy (FITS data arrive big-endian)."""
    a = np.asarray(data)
    return np.array(a, dtype=a.dtype.newbyteorder("="), order="C", copy=True)


def _readSingleHdu(hdul: fits.HDUList, hdu: int | str | tuple[str, int], where: str) -> Any:
    try:
        selected = hdul[hdu]
    except (KeyError, IndexError, TypeError) as err:
        raise InvalidInputError(f"{where}: no HDU {hdu!r} (the file has {len(hdul)})") from err
    if not _has2dData(selected):
        raise InvalidInputError(f"{where}: HDU {hdu!r} does not hold a 2-D image")
    return selected


def _readLayout(
    hdul: fits.HDUList, path: Path, hdu: int | str | tuple[str, int] | None, info: dict[str, Any]
) -> MaskedImage | None:
    """Read an open file into a MaskedImage; `None` for the CCDData layout (read separately)."""
    where = str(path)
    info["primaryHeader"] = hdul[0].header.copy()
    if hdu is not None:
        selected = _readSingleHdu(hdul, hdu, where)
        layout, roles = "hdu", {"IMAGE": hdul.index_of(hdu)}
    else:
        layout, roles = _roles(hdul)
        selected = None
    info["layout"] = layout
    info["hdus"] = dict(roles)
    if layout == "none":
        raise InvalidInputError(f"{where}: the file holds no 2-D image in any HDU")
    if layout == "ccddata":
        info["imageHeader"] = hdul[0].header.copy()
        return None
    imageIndex = roles["SCI"] if layout == "sci" else roles["IMAGE"]
    imageHdu = selected if selected is not None else hdul[imageIndex]
    image = _hduData(hdul, imageIndex, where, None)
    if image is None:
        raise InvalidInputError(f"{where}: the image HDU {imageIndex} holds no data")
    info["imageHeader"] = imageHdu.header.copy()
    xy0, xy0Source = _xy0FromHeader(imageHdu.header, where)
    info["xy0Source"] = xy0Source
    mask = variance = None
    maskIndex = roles.get("MASK") if layout in ("lsst", "extname") else roles.get("DQ")
    varIndex = roles.get("VARIANCE") if layout in ("lsst", "extname") else roles.get("ERR")
    if maskIndex is not None:
        raw = _hduData(hdul, maskIndex, where, image.shape)
        if raw is not None:
            if layout == "sci":
                mask = np.where(np.asarray(raw) != 0, np.int32(_planeBit("BAD")), np.int32(0))
            else:
                mask = _mapMask(raw, hdul[maskIndex].header, where, info)
    if varIndex is not None:
        raw = _hduData(hdul, varIndex, where, image.shape)
        if raw is not None:
            variance = _nativeCopy(raw)
            if layout == "sci":
                variance = np.square(variance, dtype=np.float64)
    mismatched: dict[str, tuple[int, int]] = {}
    for role, index in roles.items():
        other, otherSource = _xy0FromHeader(hdul[index].header, where)
        if index != imageIndex and otherSource != "default" and other != xy0:
            mismatched[role] = other
    if mismatched:
        _log.warning(
            "%s: the image HDU gives xy0 = %s but %s; the image's origin is used",
            where,
            xy0,
            ", ".join(f"{role} gives {value}" for role, value in mismatched.items()),
        )
    info["xy0Mismatch"] = mismatched
    info["hasMask"] = mask is not None
    info["hasVariance"] = variance is not None
    return MaskedImage(_nativeCopy(image), mask=mask, variance=variance, xy0=xy0)


def readMaskedImage(
    path: str | os.PathLike[str],
    *,
    hdu: int | str | tuple[str, int] | None = None,
    info: dict[str, Any] | None = None,
) -> MaskedImage:
    """Read a FITS file into a `~psfmatch.image.MaskedImage`.

    Parameters
    ----------
    path : `str` or `os.PathLike`
        The FITS file (may be compressed, e.g. ``.fits.gz``).
    hdu : `int`, `str` or (`str`, `int`), optional
        Read only this HDU, as a plain image (no mask, no variance). By default the layout is
        detected as the module docstring describes.
    info : `dict`, optional
        Filled with what was found: ``"layout"`` (``"lsst"``, ``"extname"``, ``"sci"``,
        ``"ccddata"``, ``"plain"`` or ``"hdu"``), ``"hdus"`` (plane to HDU index),
        ``"primaryHeader"`` and ``"imageHeader"`` (copies), ``"xy0Source"``, ``"xy0Mismatch"``,
        ``"hasMask"``, ``"hasVariance"``, the mask-plane facts ``"maskPlanesInFile"``,
        ``"maskPlanesAdded"``, ``"maskPlanesRemapped"`` (plane to (file bit, psfmatch bit)),
        ``"maskBitsDropped"``, and ``"warnings"`` (astropy warnings seen while reading).

    Returns
    -------
    maskedImage : `~psfmatch.image.MaskedImage`
        Native-byte-order copies of the planes; the mask translated onto psfmatch's plane
        dictionary; a missing mask or variance plane is zeros (``info["hasVariance"]`` says
        which). `readImage` estimates a missing variance instead.

    Raises
    ------
    InputFileNotFoundError
        If ``path`` does not exist.
    InvalidInputError
        If the file is not FITS, is damaged (truncated, unreadable data), holds no 2-D image,
        has planes of different shapes, a mask that is not integer, or an ``MP_`` keyword or
        origin that makes no sense; or ``hdu`` names no image HDU.
    PsfMatchIOError
        If the file cannot be read (permission denied).

    Notes
    -----
    Mask planes: each ``MP_<PLANE> = bit`` keyword of the mask HDU names a plane. A plane that
    psfmatch's `~psfmatch.image.Mask` does not know is added with `Mask.addMaskPlane`; if the
    file's bit of a plane differs from psfmatch's, the pixels are re-mapped onto psfmatch's
    bit. Bits that are set but named by no keyword are dropped and logged. A mask HDU without
    ``MP_`` keywords is taken as psfmatch bits. In the ``SCI/ERR/DQ`` layout the variance is
    ``ERR**2`` and any nonzero ``DQ`` is ``BAD``; a CCDData file's boolean mask is ``BAD``.

    The file is only read; it is closed before this function returns.
    """
    filePath = _asPath(path, "path")
    details: dict[str, Any] = {} if info is None else info
    details["path"] = str(filePath)
    result = _withFits(filePath, lambda hdul: _readLayout(hdul, filePath, hdu, details), details)
    if result is None:
        result = _readCCDDataFile(filePath, details)
    _log.info(
        "read %s (%s layout, %dx%d, xy0=%s)",
        filePath,
        details.get("layout"),
        result.getWidth(),
        result.getHeight(),
        result.getXY0(),
    )
    return result


def _readCCDDataFile(path: Path, info: dict[str, Any]) -> MaskedImage:
    header = info["imageHeader"]
    # CCDData insists on a unit; psfmatch does not use it, so a file without BUNIT is read as
    # dimensionless rather than refused.
    unit = None if "BUNIT" in header else u.dimensionless_unscaled
    with warnings.catch_warnings(record=True) as caught:
        # Same reason as in _withFits: these are diagnostics about the file.
        warnings.simplefilter("always")
        try:
            ccd = CCDData.read(path, unit=unit)
        except Exception as err:
            raise InvalidInputError(
                f"cannot read {str(path)!r} as CCDData: {type(err).__name__}: {err}"
            ) from err
    for message in dict.fromkeys(_warningMessages(caught)):
        _log.warning("reading %s: %s", path, message)
        info.setdefault("warnings", []).append(message)
    maskedImage, hasVariance = _fromNDData(ccd, str(path))
    info["imageHeader"] = header
    info["hasMask"] = ccd.mask is not None
    info["hasVariance"] = hasVariance
    info["xy0Source"] = _xy0FromHeader(header, str(path))[1]
    return maskedImage


# --------------------------------------------------------------------------------------------
# NDData


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


# --------------------------------------------------------------------------------------------
# readImage


def _maskFromArray(mask: Any, where: str, shape: tuple[int, ...]) -> np.ndarray:
    """A boolean mask becomes the BAD plane; an integer mask is taken as psfmatch bits."""
    m = np.asarray(np.ma.getdata(mask))
    if m.shape != shape:
        raise InvalidInputError(f"{where}: shape {m.shape} differs from the image's {shape}")
    if m.dtype.kind == "b":
        return np.where(m, np.int32(_planeBit("BAD")), np.int32(0))
    return _maskBitPattern(m, where).view(np.int32)


def _readPlaneFile(path: Path, role: str | None, shape: tuple[int, ...]) -> tuple[Any, fits.Header]:
    """Read the plane ``role`` of a separate file: its tagged HDU, else its first image."""

    def work(hdul: fits.HDUList) -> tuple[Any, fits.Header]:
        layout, roles = _roles(hdul)
        index = roles.get(role) if role and layout in ("lsst", "extname") else None
        if index is None:
            index = next((i for i, h in enumerate(hdul) if _has2dData(h)), None)
        if index is None:
            raise InvalidInputError(f"{str(path)!r}: the file holds no 2-D image")
        data = _hduData(hdul, index, str(path), shape)
        return _nativeCopy(data), hdul[index].header.copy()

    return _withFits(path, work, None)


def _floatPlane(value: Any, name: str, shape: tuple[int, ...]) -> np.ndarray:
    """A variance or sigma argument (array, scalar or FITS path) as a float64 array."""
    if _isPath(value):
        # A file's VARIANCE plane is a variance, never a sigma.
        role = "VARIANCE" if name == "variance" else None
        value, _ = _readPlaneFile(_asPath(value, name), role, shape)
    a = np.asarray(np.ma.getdata(value))
    if a.dtype.kind not in "fiub":
        raise InvalidInputError(f"{name}: expected real numbers, got dtype {a.dtype}")
    if a.ndim == 0:
        return np.full(shape, float(a), dtype=np.float64)
    if a.shape != shape:
        raise InvalidInputError(f"{name}: shape {a.shape} differs from the image's {shape}")
    return a.astype(np.float64)


class _VarianceEstimateError(InvalidInputError):
    """A variance had to be estimated and could not be; ``reason`` says why, so that a caller
    can name its own options that give a variance (`psfmatch.subtract`, the command line)."""

    reason: str = ""


def _cannotEstimate(where: str, reason: str) -> _VarianceEstimateError:
    err = _VarianceEstimateError(
        f"{where}cannot estimate a variance: {reason}; pass variance= or sigma=, or gain= with "
        "readNoise="
    )
    err.reason = reason
    return err


_MODEL_SKY_MISMATCH = 2.0
"""Factor by which the gain and read-noise variance at the sky may differ from the sky's
measured scatter before a warning says the model does not describe the image."""


def _skyStatistics(image: np.ndarray, good: np.ndarray) -> tuple[float, float]:
    """Clipped median and MAD-based standard deviation of the ``good`` pixels."""
    _, sky, skySigma = sigma_clipped_stats(
        image[good],
        sigma=_SKY_CLIP_SIGMA,
        maxiters=_SKY_CLIP_ITERS,
        cenfunc="median",
        stdfunc="mad_std",
    )
    return float(sky), float(skySigma)


def _noiseModelVariance(
    image: np.ndarray,
    mask: np.ndarray,
    gain: float,
    readNoise: float,
    info: dict[str, Any],
    where: str,
) -> np.ndarray:
    """HOTPANTS' variance from a gain and a read noise: ``|image| / gain + (readNoise / gain)²``."""
    finite = np.isfinite(image)
    variance = np.abs(np.where(finite, image.astype(np.float64), 0.0)) / gain
    variance += (readNoise / gain) ** 2
    info.update(varianceEstimated=True, varianceModel="gainReadNoise", gain=gain)
    info["readNoise"] = readNoise
    _log.info(
        "%sno variance given: |image|/gain + (readNoise/gain)^2 with gain %g e-/ADU and read "
        "noise %g e- (HOTPANTS' noise model)",
        where,
        gain,
        readNoise,
    )
    # A cross-check, not part of the model: the model's variance at the sky level against the
    # sky's measured scatter. A sky-subtracted image (the model needs the sky in the pixel
    # values) or a wrong gain shows up as a large factor between them.
    good = finite & (mask == 0)
    if int(good.sum()) >= _MIN_SKY_PIXELS:
        sky, skySigma = _skyStatistics(image, good)
        expected = abs(sky) / gain + (readNoise / gain) ** 2
        measured = skySigma**2
        info.update(skyLevel=sky, skySigma=skySigma, skyPixels=int(good.sum()))
        if measured > 0 and not (
            1.0 / _MODEL_SKY_MISMATCH <= expected / measured <= _MODEL_SKY_MISMATCH
        ):
            cause = (
                "is the image sky-subtracted (the model needs the sky in the pixel values), or "
                "the gain too large?"
                if measured > expected
                else "is the gain too small or the read noise too large?"
            )
            _log.warning(
                "%sthe variance from gain %g e-/ADU and read noise %g e- is %.4g at the sky "
                "level %.4g, but the sky's pixels scatter with a variance of %.4g (%.2g times "
                "that): %s Give the variance instead, or no read noise to use the sky's scatter",
                where,
                gain,
                readNoise,
                expected,
                sky,
                measured,
                measured / expected,
                cause,
            )
    return variance


def _estimateVariance(
    image: np.ndarray,
    mask: np.ndarray,
    gain: float | None,
    readNoise: float | None,
    info: dict[str, Any],
    where: str = "",
) -> np.ndarray:
    """Sky variance from the clipped MAD of unmasked pixels, plus a Poisson term with a gain;
    with a read noise too, HOTPANTS' model (`_noiseModelVariance`). ``where`` ("science: ")
    starts the messages."""
    if gain is not None and readNoise is not None:
        return _noiseModelVariance(image, mask, gain, readNoise, info, where)
    good = np.isfinite(image) & (mask == 0)
    nGood = int(good.sum())
    if nGood < _MIN_SKY_PIXELS:
        raise _cannotEstimate(
            where,
            f"only {nGood} unmasked finite pixels (at least {_MIN_SKY_PIXELS} needed)",
        )
    sky, skySigma = _skyStatistics(image, good)
    if not skySigma > 0:
        raise _cannotEstimate(
            where, "the robust scatter of the image's sky is 0 (a noiseless or constant image?)"
        )
    variance = np.full(image.shape, skySigma**2, dtype=np.float64)
    if gain is not None:
        finite = np.isfinite(image)
        signal = np.where(finite, image.astype(np.float64) - sky, 0.0)
        variance += np.maximum(signal, 0.0) / gain
    info.update(
        varianceEstimated=True,
        varianceModel="sky",
        skyLevel=sky,
        skySigma=skySigma,
        skyPixels=nGood,
        gain=gain,
    )
    _log.info(
        "%sno variance given: estimated sky %.6g, sky sigma %.6g from %d pixels%s",
        where,
        sky,
        skySigma,
        nGood,
        f", plus Poisson term with gain {gain:g}" if gain is not None else "",
    )
    return variance


def readImage(
    source: Any,
    *,
    variance: Any = None,
    sigma: Any = None,
    mask: Any = None,
    gain: float | None = None,
    readNoise: float | None = None,
    hdu: int | str | tuple[str, int] | None = None,
    info: dict[str, Any] | None = None,
    name: str | None = None,
) -> MaskedImage:
    """Turn any supported image input into a `~psfmatch.image.MaskedImage`.

    Parameters
    ----------
    source : path, `~psfmatch.image.MaskedImage`, array_like, masked array or NDData
        - a `str` or `os.PathLike`: a FITS file, read with `readMaskedImage`;
        - a `MaskedImage`: returned as it is when no other argument changes it;
        - a 2-D numpy array (or anything `numpy.asarray` makes one);
        - a `numpy.ma.MaskedArray`: masked pixels get the ``BAD`` plane;
        - an `~astropy.nddata.NDData` or `~astropy.nddata.CCDData`: ``uncertainty`` of type
          `~astropy.nddata.StdDevUncertainty` (variance = σ²),
          `~astropy.nddata.VarianceUncertainty` or `~astropy.nddata.InverseVariance`
          (variance = 1/ivar; ivar ≤ 0 gives variance +inf and ``NO_DATA``), converted to the
          data's unit squared; ``mask`` as for the ``mask`` argument; ``meta`` keywords
          ``CRVAL1A``/``CRVAL2A`` or ``LTV1``/``LTV2`` give ``xy0``.
    variance, sigma : array_like, float or path, optional
        The variance, or its square root, per pixel: an array of the image's shape, a scalar
        (constant), or a FITS path (its ``VARIANCE`` HDU, else its first 2-D image). Replaces
        any variance the source carries. At most one of the two.
    mask : array_like or path, optional
        Replaces the source's mask. A boolean array marks ``BAD`` pixels; an integer array is
        taken as psfmatch mask bits (see `~psfmatch.image.Mask`); so is a FITS file's mask
        (its ``MASK`` HDU with its ``MP_`` planes, else its first 2-D image). To use another
        instrument's flags, pass a boolean such as ``dq != 0``.
    gain : `float`, optional
        Electrons per pixel-value unit (e⁻/ADU). Used only when the variance is estimated, to
        add the source Poisson term.
    readNoise : `float`, optional
        Read noise in electrons (HOTPANTS ``-ir``/``-tr``), with ``gain``. Used only when the
        variance is estimated: the two then give HOTPANTS' noise model instead of the sky
        estimate (see Notes).
    hdu : `int`, `str` or (`str`, `int`), optional
        For a FITS path: read only this HDU, as a plain image (see `readMaskedImage`).
    info : `dict`, optional
        Filled with what was decided: ``"source"`` (the kind of input), ``"varianceSource"``
        (``"input"``, ``"variance"``, ``"sigma"`` or ``"estimated"``), ``"varianceEstimated"``,
        and, when estimated, ``"varianceModel"`` (``"sky"`` or ``"gainReadNoise"``),
        ``"skyLevel"``, ``"skySigma"``, ``"skyPixels"``, ``"gain"`` (and ``"readNoise"``);
        ``"nNonFinite"``, the number of pixels flagged ``NO_DATA`` for a non-finite image or
        variance; plus what `readMaskedImage` reports for a path.
    name : `str`, optional
        What the image is, e.g. ``"science"``: the messages about its variance estimate (and
        the log) start with it, so that a user of two images knows which one they concern.

    Returns
    -------
    maskedImage : `~psfmatch.image.MaskedImage`
        Arrays already C-contiguous and native-endian are used without a copy (as
        `MaskedImage` does); psfmatch never writes into them.

    Raises
    ------
    InvalidInputError
        If ``source`` is of an unsupported type or not 2-D, an argument's shape differs from
        the image's, both ``variance`` and ``sigma`` are given, a variance or sigma is
        negative, ``gain`` is not a positive number, ``readNoise`` is negative, not finite or
        given without ``gain``, ``hdu`` is given for an input that is not
        a path, a mask is neither boolean nor integer, or the variance must be estimated and
        cannot be (fewer than 25 usable pixels, or no scatter at all); and for the FITS errors
        of `readMaskedImage`.
    InputFileNotFoundError
        If a path does not exist.
    PsfMatchIOError
        If a file cannot be read.

    Notes
    -----
    When neither the source nor an argument provides a variance it is estimated. The sky
    level and sky standard deviation σ_sky are the median and the MAD-based standard deviation
    (`astropy.stats.mad_std`) of the unmasked finite pixels, 3σ-clipped
    (`astropy.stats.sigma_clipped_stats`), which stars and cosmic rays barely move. The
    variance is σ_sky² everywhere, plus, if ``gain`` is given, the Poisson variance of the
    sources ``max(image - sky, 0) / gain``. Without a gain the variance is underestimated on
    bright stars; with one, noise above the sky adds a small bias of about
    ``0.4 σ_sky / gain`` at sky level. The estimate is logged at INFO on ``"psfmatch.io"`` and
    reported in ``info``; pass ``variance=`` or ``sigma=`` to use a known noise model.

    With ``gain`` and ``readNoise`` the variance is HOTPANTS' noise model instead, in the
    image's units squared::

        variance = |image| / gain + (readNoise / gain)²

    from each pixel's own value, with no sky estimate: adding the read noise to the measured
    sky scatter, which already holds it, would count it twice. The model assumes the sky is
    still in the pixel values; when its variance at the measured sky level differs from the
    sky's measured scatter by more than a factor of 2 (a sky-subtracted image, a wrong gain) a
    warning says so.

    Pixels whose image or variance is NaN or infinite get the ``NO_DATA`` plane (the values
    are kept), except in a `MaskedImage` returned unchanged.

    No input is modified.
    """
    details: dict[str, Any] = {} if info is None else info
    if variance is not None and sigma is not None:
        raise InvalidInputError("give variance or sigma, not both")
    if gain is not None:
        if isinstance(gain, bool) or not isinstance(gain, int | float | np.number):
            raise InvalidInputError(f"gain: expected a positive number, got {gain!r}")
        gain = float(gain)
        if not (math.isfinite(gain) and gain > 0):
            raise InvalidInputError(f"gain: expected a positive finite number, got {gain!r}")
    if readNoise is not None:
        if isinstance(readNoise, bool) or not isinstance(readNoise, int | float | np.number):
            raise InvalidInputError(
                f"readNoise: expected a number of electrons >= 0, got {readNoise!r}"
            )
        readNoise = float(readNoise)
        if not (math.isfinite(readNoise) and readNoise >= 0):
            raise InvalidInputError(
                f"readNoise: expected a finite number of electrons >= 0, got {readNoise!r}"
            )
        if gain is None:
            raise InvalidInputError(
                f"readNoise={readNoise:g} e- needs gain= (e-/ADU) to turn it into the image's units"
            )
    if hdu is not None and not _isPath(source):
        raise InvalidInputError(
            f"hdu={hdu!r} applies only to a FITS path; source is a {type(source).__name__}"
        )

    hasVariance: bool
    if isinstance(source, MaskedImage):
        details["source"] = "MaskedImage"
        if variance is None and sigma is None and mask is None:
            details["varianceSource"] = "input"
            details["varianceEstimated"] = False
            return source
        base, hasVariance = source, True
    elif _isPath(source):
        details["source"] = "path"
        base = readMaskedImage(source, hdu=hdu, info=details)
        hasVariance = bool(details.get("hasVariance"))
    elif isinstance(source, np.ma.MaskedArray):
        details["source"] = "MaskedArray"
        base = MaskedImage(
            _native(np.ma.getdata(source)),
            mask=_maskFromArray(np.ma.getmaskarray(source), "mask", source.shape),
        )
        hasVariance = False
    elif isinstance(source, NDData):
        details["source"] = type(source).__name__
        base, hasVariance = _fromNDData(source, "source")
    elif isinstance(source, np.ndarray | list | tuple) or hasattr(source, "__array__"):
        details["source"] = "array"
        try:
            array = np.asanyarray(source)
        except (TypeError, ValueError) as err:  # ragged nested lists, ...
            raise InvalidInputError(f"source: cannot make a 2-D array of it: {err}") from err
        base, hasVariance = MaskedImage(_native(array)), False
    else:
        raise InvalidInputError(
            f"source: expected a FITS path, MaskedImage, 2-D array, masked array or NDData; "
            f"got {type(source).__name__}"
        )

    shape = base.image.shape
    maskArray = base.mask
    if mask is not None:
        if _isPath(mask):
            maskPath = _asPath(mask, "mask")
            raw, header = _readPlaneFile(maskPath, "MASK", shape)
            maskArray = _mapMask(raw, header, str(maskPath), None)
        else:
            maskArray = _maskFromArray(mask, "mask", shape)

    varianceArray: np.ndarray | None
    if variance is not None:
        varianceArray, varianceSource = _floatPlane(variance, "variance", shape), "variance"
    elif sigma is not None:
        sigmaArray = _floatPlane(sigma, "sigma", shape)
        if (sigmaArray < 0).any():
            raise InvalidInputError(f"sigma: {int((sigmaArray < 0).sum())} negative values")
        varianceArray, varianceSource = np.square(sigmaArray), "sigma"
    elif hasVariance:
        varianceArray, varianceSource = base.variance, "input"
    else:
        varianceArray, varianceSource = None, "estimated"
    if varianceArray is not None:
        nNegative = int((varianceArray < 0).sum())
        if nNegative:
            raise InvalidInputError(
                f"variance: {nNegative} pixels have a negative variance "
                f"(minimum {float(np.min(varianceArray)):g})"
            )

    nonFinite = ~np.isfinite(base.image)
    if varianceArray is not None:
        nonFinite |= ~np.isfinite(varianceArray)
    nNonFinite = int(nonFinite.sum())
    if nNonFinite:
        maskArray = np.where(nonFinite, maskArray | np.int32(_planeBit("NO_DATA")), maskArray)
        _log.info(
            "%s%d pixels with a non-finite image or variance flagged NO_DATA",
            f"{name}: " if name else "",
            nNonFinite,
        )
    details["nNonFinite"] = nNonFinite

    if varianceArray is None:
        where = f"{name}: " if name else ""
        varianceArray = _estimateVariance(base.image, maskArray, gain, readNoise, details, where)
    else:
        details["varianceEstimated"] = False
    details["varianceSource"] = varianceSource
    return MaskedImage(base.image, mask=maskArray, variance=varianceArray, xy0=base.getXY0())


# --------------------------------------------------------------------------------------------
# Metadata and headers


def _fitsValue(key: str, value: Any) -> tuple[Any, str]:
    """The header value and comment that store one metadata scalar."""
    if isinstance(value, float) and not math.isfinite(value):
        # FITS header values cannot be NaN or infinite: store the string float() parses.
        return repr(value), _NONFINITE_MARKER
    return value, ""


def _cardKey(key: str) -> str:
    return key if _STANDARD_KEY.match(key) else f"HIERARCH {key}"


def _addCard(header: fits.Header, key: str, value: Any, comment: str = "") -> bool:
    """Append one card; log and return `False` if it cannot be a FITS card."""
    if not key.isascii() or not key.isprintable() or "=" in key or key != key.strip():
        raise InvalidInputError(
            f"metadata key {key!r} cannot be a FITS keyword (printable ASCII without '=' or "
            "surrounding spaces)"
        )
    if isinstance(value, str) and not (value.isascii() and value.isprintable()):
        raise InvalidInputError(
            f"metadata key {key!r}: a FITS string must be printable ASCII, got {value!r}"
        )
    if key in header:
        _log.warning(
            "metadata key %r collides with an earlier key (FITS keywords ignore case); skipped",
            key,
        )
        return False
    with warnings.catch_warnings(record=True) as caught:
        # astropy warns when a card is too long and would be cut; such a key is skipped
        # (with a logged warning) rather than written truncated.
        warnings.simplefilter("always")
        try:
            card = fits.Card(_cardKey(key), value, comment)
            card.verify("exception")
            image = card.image
        except (ValueError, fits.VerifyError) as err:
            _log.warning("metadata key %r cannot be a FITS card (%s); skipped", key, err)
            return False
    if caught or (not isinstance(value, str) and len(image) > fits.Card.length):
        _log.warning("metadata key %r with value %r does not fit a FITS card; skipped", key, value)
        return False
    header.append(card, end=True)
    return True


def metadataToHeader(
    metadata: TaskMetadata | Mapping[str, Any], *, prefix: str = ""
) -> fits.Header:
    """Flatten task metadata into FITS header cards.

    Parameters
    ----------
    metadata : `~psfmatch.task.TaskMetadata` or `~collections.abc.Mapping`
        The metadata; a mapping is first converted to a `TaskMetadata` (nested mappings become
        dotted keys). Not modified.
    prefix : `str`, optional
        Prepended to every key, e.g. ``"psfmatch."``.

    Returns
    -------
    header : `astropy.io.fits.Header`
        One card per leaf, in `TaskMetadata.names` order.

    Raises
    ------
    InvalidInputError
        If ``metadata`` is not a mapping of scalars and lists, or a key cannot be a FITS
        keyword (non-ASCII, ``=``, leading or trailing spaces) or a string value is not ASCII.

    Notes
    -----
    - The keyword is ``prefix + dotted key``. A keyword of at most 8 characters from
      ``A-Z0-9_-`` is a standard card; any other (longer, lower case, dots) uses the
      ``HIERARCH`` convention, which keeps its case.
    - Booleans, integers, floats and strings are stored as such (long strings continue on
      ``CONTINUE`` cards). NaN and ±inf, which FITS header values cannot hold, are stored as
      the strings ``'nan'``, ``'inf'``, ``'-inf'`` with the comment ``non-finite float``.
    - A list is stored element by element under ``key[0]``, ``key[1]``, ... . An empty list
      writes nothing.
    - Keys that cannot fit in one 80-character card with their value, or that differ from an
      earlier key only in case, are skipped with a logged warning.

    `headerToMetadata` reverses all of this, except for skipped keys and empty lists.
    """
    if not isinstance(prefix, str):
        raise InvalidInputError(f"prefix: expected a str, got {type(prefix).__name__}")
    if isinstance(metadata, TaskMetadata):
        md = metadata
    elif isinstance(metadata, Mapping):
        try:
            md = TaskMetadata(metadata)
        except (TypeError, KeyError) as err:
            raise InvalidInputError(f"metadata: {err}") from err
    else:
        raise InvalidInputError(
            f"metadata: expected a TaskMetadata or mapping, got {type(metadata).__name__}"
        )
    header = fits.Header()
    for name in md.names():
        value = md[name]
        key = prefix + name
        if isinstance(value, list):
            for index, element in enumerate(value):
                _addCard(header, f"{key}[{index}]", *_fitsValue(key, element))
        else:
            _addCard(header, key, *_fitsValue(key, value))
    return header


def _isStructural(key: str) -> bool:
    upper = key.upper()
    return upper in _STRUCTURAL_KEYS or re.fullmatch(r"NAXIS\d+", upper) is not None


def headerToMetadata(header: fits.Header, *, prefix: str = "") -> TaskMetadata:
    """Rebuild task metadata from header cards written by `metadataToHeader`.

    Parameters
    ----------
    header : `astropy.io.fits.Header`
        The header, e.g. the primary header of a file written by `writeMaskedImage`
        (``info["primaryHeader"]`` of `readMaskedImage`).
    prefix : `str`, optional
        Only cards whose keyword starts with it (case-sensitively) are read, without it.

    Returns
    -------
    metadata : `~psfmatch.task.TaskMetadata`
        One leaf per card; ``key[i]`` cards become a list ordered by ``i``; string values with
        the ``non-finite float`` comment become floats.

    Raises
    ------
    InvalidInputError
        If ``header`` is not an `astropy.io.fits.Header`.

    Notes
    -----
    Best effort: structural keywords (``SIMPLE``, ``BITPIX``, ``NAXISn``, ``EXTEND``,
    checksums, ...) and ``COMMENT``/``HISTORY`` cards are skipped, as are cards without a value
    and cards that conflict with an earlier one (``a`` holding a value and ``a.b`` a leaf),
    which are logged. With an empty prefix every other card is read, including the header's
    own keywords. Standard keywords come back upper case, as FITS stores them.
    """
    if not isinstance(header, fits.Header):
        raise InvalidInputError(
            f"header: expected an astropy.io.fits.Header, got {type(header).__name__}"
        )
    md = TaskMetadata()
    lists: dict[str, dict[int, Any]] = {}
    order: list[str] = []
    scalars: dict[str, Any] = {}
    for card in header.cards:
        key = card.keyword
        if key.upper() in _COMMENTARY_KEYS or _isStructural(key) or not key.startswith(prefix):
            continue
        name = key[len(prefix) :]
        value = card.value
        if not name or isinstance(value, fits.card.Undefined) or value is None:
            continue
        if isinstance(value, str) and card.comment == _NONFINITE_MARKER:
            with contextlib.suppress(ValueError):
                value = float(value)
        elif isinstance(value, complex):
            value = str(value)
        match = _LIST_KEY.match(name)
        if match:
            listName = match["name"]
            if listName not in lists:
                lists[listName] = {}
                order.append(listName)
            lists[listName][int(match["index"])] = value
        else:
            scalars[name] = value
            order.append(name)
    for name in order:
        value = [lists[name][i] for i in sorted(lists[name])] if name in lists else scalars[name]
        try:
            md[name] = value
        except (TypeError, KeyError) as err:
            _log.warning("header card %r cannot be a metadata key (%s); skipped", name, err)
    return md


# --------------------------------------------------------------------------------------------
# Writing


def _primaryHeader(header: Any) -> fits.Header:
    if header is None:
        return fits.Header()
    if isinstance(header, fits.Header):
        source = header
    elif isinstance(header, TaskMetadata | Mapping):
        source = metadataToHeader(header)
    else:
        raise InvalidInputError(
            f"header: expected an astropy Header, a TaskMetadata or a dict, got "
            f"{type(header).__name__}"
        )
    result = fits.Header()
    for card in source.cards:
        if card.keyword.upper() in ("EXTNAME", "EXTTYPE", "EXTVER") or _isStructural(card.keyword):
            continue
        # A new card, so the caller's header never shares (or sees) one with the file's.
        result.append(fits.Card.fromstring(card.image), end=True)
    return result


def _planeHeader(role: str, xy0: tuple[int, int]) -> fits.Header:
    x0, y0 = xy0
    header = fits.Header()
    header["EXTTYPE"] = role
    header["EXTNAME"] = role
    header["INHERIT"] = (True, "inherit the primary header")
    for axis, origin in ((1, x0), (2, y0)):
        header[f"CTYPE{axis}A"] = ("LINEAR", "parent pixel coordinates (xy0)")
        header[f"CRPIX{axis}A"] = 1
        header[f"CRVAL{axis}A"] = origin
        header[f"CUNIT{axis}A"] = "PIXEL"
    header["WCSNAMEA"] = "PARENT"
    header["LTV1"] = (-x0, "-x0: IRAF physical-to-image offset")
    header["LTV2"] = (-y0, "-y0: IRAF physical-to-image offset")
    return header


def _readOnly(array: np.ndarray) -> np.ndarray:
    """A read-only view of ``array``.

    astropy byte-swaps a writeable little-endian array in place while it writes or checksums
    it (and swaps it back afterwards); given a read-only view it swaps a copy instead, so the
    caller's arrays are not changed even for a moment.
    """
    view = array.view()
    view.flags.writeable = False
    return view


def _maskHdu(maskedImage: MaskedImage) -> fits.ImageHDU:
    header = _planeHeader("MASK", maskedImage.getXY0())
    for name, bit in Mask.getMaskPlaneDict().items():
        header[_cardKey(f"MP_{name}")] = bit
    bits = maskedImage.mask.view(np.uint32)
    used = int(np.bitwise_or.reduce(bits, axis=None)) if bits.size else 0
    # uint16 (stored int16 + BZERO) as the reference writes it when every set bit fits;
    # otherwise int32, whose bit pattern is the psfmatch mask itself.
    data = bits.astype(np.uint16) if used < (1 << 16) else _readOnly(maskedImage.mask)
    return fits.ImageHDU(data, header=header, uint=True)


def _buildHduList(maskedImage: MaskedImage, header: Any, extraHdus: Iterable[Any]) -> fits.HDUList:
    xy0 = maskedImage.getXY0()
    hdus: list[Any] = [
        fits.PrimaryHDU(header=_primaryHeader(header)),
        fits.ImageHDU(_readOnly(maskedImage.image), header=_planeHeader("IMAGE", xy0)),
        _maskHdu(maskedImage),
        fits.ImageHDU(_readOnly(maskedImage.variance), header=_planeHeader("VARIANCE", xy0)),
    ]
    if isinstance(extraHdus, fits.hdu.base.ExtensionHDU | fits.PrimaryHDU):
        extraHdus = [extraHdus]
    for index, extra in enumerate(extraHdus):
        if isinstance(extra, fits.PrimaryHDU) or not isinstance(extra, fits.hdu.base.ExtensionHDU):
            raise InvalidInputError(
                f"extraHdus[{index}]: expected an extension HDU (ImageHDU, BinTableHDU, ...), got "
                f"{type(extra).__name__}"
            )
        # A copy, so that assembling the file never touches the caller's HDU.
        hdus.append(extra.copy())
    return fits.HDUList(hdus)


def _removeQuietly(path: Path) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


@contextlib.contextmanager
def _ioErrors(target: Path, action: str) -> Iterator[None]:
    try:
        yield
    except PsfMatchError:
        raise
    except OSError as err:
        reason = err.strerror or str(err)
        raise PsfMatchIOError(f"cannot {action} {str(target)!r}: {reason}", str(target)) from err


def writeMaskedImage(
    path: str | os.PathLike[str],
    maskedImage: MaskedImage,
    *,
    header: fits.Header | TaskMetadata | Mapping[str, Any] | None = None,
    overwrite: bool = False,
    extraHdus: Iterable[Any] = (),
) -> None:
    """Write a `~psfmatch.image.MaskedImage` as an LSST MaskedImage FITS file.

    Parameters
    ----------
    path : `str` or `os.PathLike`
        The output file.
    maskedImage : `~psfmatch.image.MaskedImage`
        The image to write; not modified.
    header : `astropy.io.fits.Header`, `~psfmatch.task.TaskMetadata` or `dict`, optional
        Cards for the primary HDU. Metadata and dicts go through `metadataToHeader`.
        Structural keywords (``SIMPLE``, ``BITPIX``, ``NAXISn``, ``EXTEND``, ``EXTNAME``, ...)
        are left out.
    overwrite : `bool`, optional
        Replace an existing file.
    extraHdus : iterable of extension HDUs, optional
        Appended after the variance HDU, e.g. an `~astropy.io.fits.ImageHDU` of a kernel or a
        `~astropy.io.fits.BinTableHDU` of candidates. They are copied, not modified.

    Raises
    ------
    InvalidInputError
        If ``maskedImage`` is not a `MaskedImage`, ``header`` or ``extraHdus`` has the wrong
        type, or metadata cannot become header cards.
    OutputExistsError
        If ``path`` exists and ``overwrite`` is false.
    PsfMatchIOError
        If the file cannot be written (missing or unwritable directory, ``path`` is a
        directory, disk full, ...).

    Notes
    -----
    Layout: an empty primary HDU with ``header``; then ``IMAGE``, ``MASK`` and ``VARIANCE``
    image extensions, each with ``EXTTYPE`` and ``EXTNAME`` naming it and ``xy0`` both as the
    alternate linear WCS ``A`` (``CRVAL1A``/``CRVAL2A`` at ``CRPIX1A``/``CRPIX2A`` = 1,
    ``CTYPEnA = 'LINEAR'``) and as ``LTV1``/``LTV2`` = ``-xy0``. The mask HDU has a
    ``MP_<PLANE>`` keyword for every plane of psfmatch's dictionary and is stored as 16-bit
    unsigned integers when every set bit fits, else 32-bit. Every HDU has ``CHECKSUM`` and
    ``DATASUM`` cards, which `readMaskedImage` verifies.

    The write is atomic: the file is written to a temporary file in the same directory and
    moved into place with `os.replace` (without ``overwrite``, hard-linked, which fails if the
    target appeared meanwhile). A failure leaves neither a partial file nor the temporary one.
    """
    target = _asPath(path, "path")
    if not isinstance(maskedImage, MaskedImage):
        raise InvalidInputError(
            f"maskedImage: expected a MaskedImage, got {type(maskedImage).__name__}"
        )
    if not isinstance(overwrite, bool):
        raise InvalidInputError(f"overwrite: expected a bool, got {overwrite!r}")
    hdul = _buildHduList(maskedImage, header, extraHdus)
    if target.is_dir():
        raise PsfMatchIOError(f"cannot write {str(target)!r}: it is a directory", str(target))
    if not overwrite and os.path.lexists(target):
        raise OutputExistsError(
            f"output file {str(target)!r} exists; pass overwrite=True to replace it", str(target)
        )
    directory = target.parent
    if not directory.is_dir():
        problem = "is not a directory" if directory.exists() else "does not exist"
        raise PsfMatchIOError(
            f"cannot write {str(target)!r}: {str(directory)!r} {problem}", str(target)
        )
    temporary = directory / f".{target.name}.{uuid.uuid4().hex}.tmp"
    with _ioErrors(target, "write"):
        # O_EXCL: never reuse a file someone else made; mode 0o666 lets the umask decide the
        # final permissions, as for any newly created file.
        descriptor = os.open(
            temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666
        )
    try:
        with _ioErrors(target, "write"):
            with os.fdopen(descriptor, "wb") as stream:
                with warnings.catch_warnings(record=True) as caught:
                    # Not expected (every card is built verified), but a warning from astropy
                    # while writing is a diagnostic for the log, not for the caller.
                    warnings.simplefilter("always")
                    try:
                        hdul.writeto(stream, checksum=True, output_verify="exception")
                    except (ValueError, TypeError, fits.VerifyError) as err:
                        raise PsfMatchIOError(
                            f"cannot write {str(target)!r}: {type(err).__name__}: {err}",
                            str(target),
                        ) from err
                stream.flush()
                os.fsync(stream.fileno())
            for message in dict.fromkeys(_warningMessages(caught)):
                _log.warning("writing %s: %s", target, message)
            _moveIntoPlace(temporary, target, overwrite)
    except BaseException:
        _removeQuietly(temporary)
        raise
    _log.info("wrote %s (%dx%d)", target, maskedImage.getWidth(), maskedImage.getHeight())


def _moveIntoPlace(temporary: Path, target: Path, overwrite: bool) -> None:
    if overwrite:
        os.replace(temporary, target)
        return
    try:
        # A hard link fails if the target exists, so a file created since the check above is
        # not clobbered.
        os.link(temporary, target)
    except FileExistsError as err:
        raise OutputExistsError(
            f"output file {str(target)!r} exists; pass overwrite=True to replace it", str(target)
        ) from err
    except OSError:
        # Hard links are not supported everywhere (some network and FUSE file systems).
        if os.path.lexists(target):
            raise OutputExistsError(
                f"output file {str(target)!r} exists; pass overwrite=True to replace it",
                str(target),
            ) from None
        os.replace(temporary, target)
        return
    _removeQuietly(temporary)
