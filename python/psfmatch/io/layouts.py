# SPDX-License-Identifier: BSD-3-Clause
"""Reading FITS files: opening one with astropy's warnings captured, recognising its layout
(LSST MaskedImage, ``EXTNAME``, ``SCI``/``ERR``/``DQ``, CCDData, a plain image) and reading
its planes, as `psfmatch.io` describes."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import typing
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from astropy.io import fits

from .._logcapture import _capturedWarnings
from ..errors import InvalidInputError, PsfMatchError, PsfMatchIOError
from ..image import MaskedImage
from .fitsdata import _FitsReader, _openStream
from .nddata import _fromNDData
from .paths import _asPath, _checkInputFile
from .planes import _checkHeaderOrigin, _mapMask, _planeBit, _xy0FromHeader

_log = logging.getLogger("psfmatch.io")

_NOT_READ = object()
"""Placeholder for the result of a read that did not happen."""

_T = TypeVar("_T")

_DAMAGE_PATTERN = re.compile(r"truncat|corrupt|not a multiple of 2880", re.I)
"""Warnings astropy raises for a damaged file; reading such a file is an error."""

_CHECKSUM_PATTERN = re.compile(
    r"(?P<card>Checksum|Datasum) verification failed for HDU (?P<hdu>.+?)\.?\s*$", re.I | re.S
)
"""astropy's warning that an HDU's ``CHECKSUM`` or ``DATASUM`` card does not match it.

Not an error: cut-outs made by common tools copy the original frame's cards, which then no
longer match. Data that are damaged beyond that fail to read, or raise a `_DAMAGE_PATTERN`
warning."""


def _headerTag(header: fits.Header, key: str) -> str | None:
    value = header.get(key)
    return value.strip().upper() if isinstance(value, str) else None


def _has2dData(hdu: Any) -> bool:
    return (
        isinstance(hdu, fits.PrimaryHDU | fits.ImageHDU | fits.CompImageHDU)
        and hdu.header.get("NAXIS", 0) == 2
    )


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


def _withFits(path: Path, work: Callable[[_FitsReader], _T], info: dict[str, Any] | None) -> _T:
    """Open ``path`` read-only, run ``work`` on it and turn every failure into a psfmatch error.

    ``work`` gets a `_FitsReader`: astropy's HDUList for the headers, and the data of each HDU
    read once, into native-byte-order arrays (`_FitsReader.data`).

    Warnings raised by astropy while the file is open are captured: those that say the file is
    damaged (truncated, corrupt) make the read fail with `InvalidInputError`; the others are
    logged and reported in ``info["warnings"]``, among them a ``CHECKSUM``/``DATASUM`` card that
    does not match data that read cleanly (once per HDU).
    """
    _checkInputFile(path)
    # LSST files carry non-standard keywords and third-party files anything at all: astropy
    # reports what it notices as warnings. They are diagnostics about the file, not about the
    # caller's code, so they are recorded here (and logged) rather than passed on; the ones
    # that mean the data cannot be trusted are raised as errors below. The record is this
    # thread's own (_capturedWarnings): with catch_warnings, which is process-wide, a damaged
    # file read in one thread failed another thread's read of a good one, and was accepted.
    with _capturedWarnings() as caught:
        failure: BaseException | None = None
        result: Any = _NOT_READ
        try:
            # memmap=False: the arrays are read into memory and the file closed on return, so
            # nothing returned refers to the file. The CHECKSUM/DATASUM cards are verified
            # when the file has them (psfmatch writes them); a mismatch is reported, not
            # refused (see _CHECKSUM_PATTERN). In an uncompressed file _FitsReader reads the
            # data and verifies them from the same bytes; astropy, asked to verify, would read
            # every data unit three times.
            stream = _openStream(path)
            with contextlib.ExitStack() as closing:
                if stream is not None:
                    closing.enter_context(stream)
                hdul = closing.enter_context(
                    fits.open(
                        path,
                        mode="readonly",
                        memmap=False,
                        lazy_load_hdus=False,
                        checksum=stream is None,
                    )
                )
                reader = _FitsReader(path, hdul, stream)
                result = work(reader)
                reader.verifyRest()
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


def _hduData(
    reader: _FitsReader, index: int, where: str, shape: tuple[int, ...] | None
) -> np.ndarray | None:
    """The data of HDU ``index``, checked to be an image (of ``shape``): a native-byte-order
    array that nothing else refers to (`_FitsReader.data`)."""
    data = reader.data(index)
    if data is None:
        return None
    if data.ndim != 2:
        raise InvalidInputError(f"{where}: HDU {index} holds a {data.ndim}-D array, not an image")
    if shape is not None and data.shape != shape:
        raise InvalidInputError(
            f"{where}: HDU {index} has shape {data.shape}, the image has {shape}"
        )
    return data


def _readSingleHdu(hdul: fits.HDUList, hdu: int | str | tuple[str, int], where: str) -> Any:
    try:
        selected = hdul[hdu]
    except (KeyError, IndexError, TypeError) as err:
        raise InvalidInputError(f"{where}: no HDU {hdu!r} (the file has {len(hdul)})") from err
    if not _has2dData(selected):
        raise InvalidInputError(f"{where}: HDU {hdu!r} does not hold a 2-D image")
    return selected


def _readLayout(
    reader: _FitsReader, path: Path, hdu: int | str | tuple[str, int] | None, info: dict[str, Any]
) -> MaskedImage | None:
    """Read an open file into a MaskedImage; `None` for the CCDData layout (read separately)."""
    where = str(path)
    hdul = reader.hdul
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
    image = _hduData(reader, imageIndex, where, None)
    if image is None:
        raise InvalidInputError(f"{where}: the image HDU {imageIndex} holds no data")
    info["imageHeader"] = imageHdu.header.copy()
    xy0, xy0Source = _xy0FromHeader(imageHdu.header, where)
    _checkHeaderOrigin(imageHdu.header, xy0, xy0Source, image.shape, where)
    info["xy0Source"] = xy0Source
    mask = variance = None
    maskIndex = roles.get("MASK") if layout in ("lsst", "extname") else roles.get("DQ")
    varIndex = roles.get("VARIANCE") if layout in ("lsst", "extname") else roles.get("ERR")
    if maskIndex is not None:
        raw = _hduData(reader, maskIndex, where, image.shape)
        if raw is not None:
            if layout == "sci":
                mask = np.where(np.asarray(raw) != 0, np.int32(_planeBit("BAD")), np.int32(0))
            else:
                mask = _mapMask(raw, hdul[maskIndex].header, where, info)
    if varIndex is not None:
        raw = _hduData(reader, varIndex, where, image.shape)
        if raw is not None:
            variance = np.square(raw, dtype=np.float64) if layout == "sci" else raw
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
    return MaskedImage(image, mask=mask, variance=variance, xy0=xy0)


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
        detected as the `psfmatch.io` docstring describes.
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
        The planes as native-byte-order, C-contiguous, writeable arrays that nothing else
        refers to (read from the file into them, not views of astropy's data); the mask
        translated onto psfmatch's plane dictionary; a missing mask or variance plane is zeros
        (``info["hasVariance"]`` says which). `readImage` estimates a missing variance instead.

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
    result = _withFits(
        filePath, lambda reader: _readLayout(reader, filePath, hdu, details), details
    )
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
    from astropy import units as u
    from astropy.nddata import CCDData

    header = info["imageHeader"]
    # CCDData insists on a unit; psfmatch does not use it, so a file without BUNIT is read as
    # dimensionless rather than refused.
    unit = None if "BUNIT" in header else u.dimensionless_unscaled
    with _capturedWarnings() as caught:
        # Same reason as in _withFits: these are diagnostics about the file.
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


def _readPlaneFile(path: Path, role: str | None, shape: tuple[int, ...]) -> tuple[Any, fits.Header]:
    """Read the plane ``role`` of a separate file: its tagged HDU, else its first image."""

    def work(reader: _FitsReader) -> tuple[Any, fits.Header]:
        hdul = reader.hdul
        layout, roles = _roles(hdul)
        index = roles.get(role) if role and layout in ("lsst", "extname") else None
        if index is None:
            index = next((i for i, h in enumerate(hdul) if _has2dData(h)), None)
        if index is None:
            raise InvalidInputError(f"{str(path)!r}: the file holds no 2-D image")
        return _hduData(reader, index, str(path), shape), hdul[index].header.copy()

    return _withFits(path, work, None)
