# SPDX-License-Identifier: BSD-3-Clause
"""The pixels of FITS image HDUs read and written in one pass each, and their checksums.

astropy does the headers; this module moves the data units. FITS stores numbers big-endian and
numpy computes in native byte order, and astropy's own paths cost several passes over every
plane: reading verified the checksums by reading the data twice more, and the big-endian array
was then copied to native order; writing a read-only native array byte-swapped a whole copy for
the checksum and another for the file. Here a plane is read straight into the array that is
returned and swapped in place, and written from a small swapped buffer, block by block.

The checksums are those of the FITS standard (§4.4.2.7 and Appendix J, after Seaman, Pence
and Rots 2002): the 32-bit ones' complement sum of the big-endian words of the data unit
(``DATASUM``, a decimal string) and the ``CHECKSUM`` card, 16 characters that make the sum of
the whole HDU, header and data, all ones (negative zero).
"""

from __future__ import annotations

import io
import math
import typing
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits
from astropy.utils.exceptions import AstropyUserWarning

from ..errors import InvalidInputError

_BLOCK = 2880
"""The FITS block: headers and data units are padded to a multiple of it."""

_CHUNK_BYTES = 1 << 22
"""Bytes swapped and written (or summed from a file) at a time: 4 MiB stays in the CPU's
caches and makes a few hundred system calls for a 4096² plane."""

_BITPIX_DTYPES = {8: "u1", 16: "i2", 32: "i4", 64: "i8", -32: "f4", -64: "f8"}
"""Native numpy type of each FITS ``BITPIX``."""

_ALL_ONES = 0xFFFFFFFF

_FITS_MAGIC = b"SIMPLE  ="
"""How every uncompressed FITS file begins; gzip, bzip2 and zip files begin otherwise."""


def _fold(total: int) -> int:
    """A sum of 32-bit words folded into 32 bits with end-around carry (ones' complement)."""
    while total >> 32:
        total = (total & _ALL_ONES) + (total >> 32)
    return total


def _wordSum(buffer: Any) -> int:
    """The plain (unfolded) sum of the big-endian 32-bit words of ``buffer``, whose length is a
    multiple of 4 bytes."""
    words = np.frombuffer(buffer, dtype=">u4")
    # uint64 holds the sum of 2**32 words: far beyond any one buffer here.
    return int(np.add.reduce(words, dtype=np.uint64)) if words.size else 0


def _tailSum(tail: bytes) -> int:
    """The sum of the words of a byte string of any length, zero-padded to whole words."""
    return _wordSum(tail + b"\0" * (-len(tail) % 4))


def _bigEndianBytes(array: np.ndarray) -> Iterator[memoryview]:
    """The bytes a FITS file stores for a native C-contiguous ``array``, a block of elements at
    a time, from one reused buffer (so never a copy of the whole array).

    Unsigned integers of 16 bits and more are stored as astropy stores them: as signed integers
    with ``BZERO = 2**(bits-1)``, i.e. with the sign bit flipped.
    """
    flat = array.reshape(-1)
    step = max(1, _CHUNK_BYTES // flat.dtype.itemsize)
    buffer = np.empty(min(step, flat.size), dtype=flat.dtype)
    signBit = (
        flat.dtype.type(1 << (8 * flat.dtype.itemsize - 1))
        if flat.dtype.kind == "u" and flat.dtype.itemsize > 1
        else None
    )
    for start in range(0, flat.size, step):
        part = flat[start : start + step]
        out = buffer[: part.size]
        np.copyto(out, part)
        if signBit is not None:
            out ^= signBit
        out.byteswap(inplace=True)
        yield out.view(np.uint8).data


def _dataSum(array: np.ndarray) -> int:
    """The ``DATASUM`` of the data unit that stores ``array`` (native byte order)."""
    flat = array.reshape(-1)
    if flat.dtype.itemsize == 4 and flat.dtype.kind != "u":
        # A 4-byte element in native order is the value of its big-endian word already.
        return _fold(int(np.add.reduce(flat.view(np.uint32), dtype=np.uint64)))
    total = 0
    for chunk in _bigEndianBytes(array):
        whole = len(chunk) - len(chunk) % 4
        total += _wordSum(chunk[:whole])
        if whole != len(chunk):  # only in the last chunk: _CHUNK_BYTES is a multiple of 4
            total += _tailSum(bytes(chunk[whole:]))
    return _fold(total)


def _encodeChecksum(value: int) -> str:
    """The 16 ``CHECKSUM`` characters that encode the 32-bit ``value`` (the complement of the
    HDU's sum with the card set to zeros), by the standard's algorithm: each byte spread over
    four printable characters, avoiding punctuation, rotated right by one character."""
    excluded = frozenset(b":;<=>?@[\\]^_`")
    out = [0] * 16
    for byteIndex in range(4):
        byte = (value >> (24 - 8 * byteIndex)) & 0xFF
        quotient, remainder = divmod(byte, 4)
        chars = [quotient + remainder + 0x30, quotient + 0x30, quotient + 0x30, quotient + 0x30]
        changed = True
        while changed:
            changed = False
            for j in (0, 2):
                if chars[j] in excluded or chars[j + 1] in excluded:
                    chars[j] += 1
                    chars[j + 1] -= 1
                    changed = True
        for j in range(4):
            out[4 * j + byteIndex] = chars[j]
    return bytes(out[-1:] + out[:-1]).decode("ascii")


def _headerBytes(header: fits.Header) -> bytes:
    return str(header.tostring()).encode("ascii")


def _setChecksumCards(header: fits.Header, dataSum: int, when: str) -> bytes:
    """Add ``DATASUM`` and ``CHECKSUM`` (last, as astropy places them) for a data unit whose
    sum is ``dataSum``; return the header's bytes."""
    header["CHECKSUM"] = ("0" * 16, f"HDU checksum updated {when}")
    header["DATASUM"] = (str(dataSum), f"data unit checksum updated {when}")
    total = _fold(_wordSum(_headerBytes(header)) + dataSum)
    header["CHECKSUM"] = _encodeChecksum(~total & _ALL_ONES)
    return _headerBytes(header)


def _writeImage(stream: typing.BinaryIO, header: fits.Header, array: np.ndarray, when: str) -> None:
    """Write one image HDU: ``header`` (its structural cards already those of ``array``, which
    is C-contiguous and native) with checksums, then the data, big-endian, then the padding."""
    stream.write(_setChecksumCards(header, _dataSum(array), when))
    for chunk in _bigEndianBytes(array):
        stream.write(chunk)
    stream.write(b"\0" * (-array.nbytes % _BLOCK))


def _checksumWarning(kind: str, hdu: Any) -> None:
    # astropy's words, so that one parser (layouts._CHECKSUM_PATTERN) reports both.
    warnings.warn(
        f"{kind} verification failed for HDU {hdu.name, hdu.ver}.\n",
        AstropyUserWarning,
        stacklevel=3,
    )


class _FitsReader:
    """An open FITS file: astropy's `~astropy.io.fits.HDUList` for the headers, and `data`
    for the pixels of an HDU.

    For an uncompressed file (``stream`` given; astropy opened it without reading data or
    checksums) the data of an unscaled image HDU are read straight into the array `data`
    returns and byte-swapped in place, and each HDU's checksums are verified from the same
    bytes. Other HDUs (tile-compressed, scaled, with ``BLANK``) are read by astropy. A
    compressed file (no ``stream``) is read by astropy throughout, which verified its checksums
    when it opened it.
    """

    def __init__(self, path: Path, hdul: fits.HDUList, stream: io.FileIO | None) -> None:
        self.path = path
        self.hdul = hdul
        self._stream = stream
        self._verified: set[int] = set()

    def data(self, index: int) -> np.ndarray | None:
        """The data of HDU ``index`` as astropy gives them (unsigned integers for the
        ``BZERO`` convention, scaled values as floats), in native byte order, C-contiguous,
        writeable, in memory that nothing else refers to; `None` if it has none."""
        hdu = self.hdul[index]
        dtype = self._directType(hdu)
        if dtype is None:
            if self._stream is not None and index not in self._verified:
                # Before astropy loads the data: it would sum scaled values, not stored ones.
                self._verifyRaw(index)
            data = hdu.data
            if data is None:
                return None
            return np.array(data, dtype=data.dtype.newbyteorder("="), order="C", copy=True)
        shape = tuple(hdu.shape)
        if not shape or math.prod(shape) == 0:
            self._verifyRaw(index)
            return None
        array = np.empty(shape, dtype=dtype)
        assert self._stream is not None
        location = self.hdul.fileinfo(index)
        self._stream.seek(location["datLoc"])
        self._readInto(array.reshape(-1).view(np.uint8).data, index)
        padding = self._stream.read(location["datSpan"] - array.nbytes)
        self._verify(index, self._sum(array, padding))
        array.byteswap(inplace=True)
        bzero = hdu.header.get("BZERO", 0)
        if bzero:
            # astropy's unsigned integers (BZERO = 2**(bits-1)): the sign bit flipped.
            unsigned = array.view(array.dtype.str.replace("i", "u"))
            unsigned ^= unsigned.dtype.type(bzero)
            return typing.cast(np.ndarray, unsigned)
        return array

    def verifyRest(self) -> None:
        """Verify the checksums of the HDUs whose data were not read."""
        for index in range(len(self.hdul)):
            if index not in self._verified:
                if self._stream is None:
                    self._verified.add(index)  # astropy verified them when it opened the file
                else:
                    self._verifyRaw(index)

    def _directType(self, hdu: Any) -> np.dtype | None:
        """The numpy type to read ``hdu``'s data as (native, not yet swapped), or `None` if
        astropy must read them: a compressed file or HDU, scaled values, ``BLANK``."""
        if self._stream is None or type(hdu) not in (fits.PrimaryHDU, fits.ImageHDU):
            return None
        header = hdu.header
        code = _BITPIX_DTYPES.get(header.get("BITPIX"))
        if code is None or "BLANK" in header:
            return None
        bscale = header.get("BSCALE", 1)
        bzero = header.get("BZERO", 0)
        if isinstance(bscale, bool) or isinstance(bzero, bool) or bscale != 1:
            return None
        dtype = np.dtype(code)
        if bzero != 0 and not (dtype.kind == "i" and bzero == 1 << (8 * dtype.itemsize - 1)):
            return None
        return dtype

    def _readInto(self, target: memoryview, index: int) -> None:
        assert self._stream is not None
        done = 0
        while done < len(target):
            count = self._stream.readinto(target[done:])
            if not count:
                raise InvalidInputError(
                    f"{str(self.path)!r} is a damaged FITS file: truncated in the data of HDU "
                    f"{index} ({done} of {len(target)} bytes present)"
                )
            done += count

    @staticmethod
    def _sum(array: np.ndarray, padding: bytes) -> int:
        """The data unit's word sum, from its bytes as read (big-endian, not yet swapped)."""
        raw = array.reshape(-1).view(np.uint8).data
        whole = len(raw) - len(raw) % 4
        return _wordSum(raw[:whole]) + _tailSum(bytes(raw[whole:]) + padding)

    def _verifyRaw(self, index: int) -> None:
        """Verify HDU ``index`` from its bytes in the file, read a chunk at a time."""
        assert self._stream is not None
        location = self.hdul.fileinfo(index)
        self._stream.seek(location["datLoc"])
        remaining = location["datSpan"]
        total = 0
        while remaining > 0:
            chunk = self._stream.read(min(remaining, _CHUNK_BYTES))
            if not chunk:
                break  # a truncated file: astropy warned when it opened it
            total += _tailSum(chunk)
            remaining -= len(chunk)
        self._verify(index, total)

    def _verify(self, index: int, dataWords: int) -> None:
        """Warn, in astropy's words, of a ``CHECKSUM`` or ``DATASUM`` card that does not match
        HDU ``index``, whose data unit's words sum to ``dataWords``."""
        self._verified.add(index)
        hdu = self.hdul[index]
        assert self._stream is not None
        location = self.hdul.fileinfo(index)
        self._stream.seek(location["hdrLoc"])
        stored = self._stream.read(location["datLoc"] - location["hdrLoc"])
        # The cards as stored, not astropy's header: a tile-compressed HDU's header is that of
        # the image, without the checksums of the binary table that the file holds.
        cards = _storedCards(stored, ("CHECKSUM", "DATASUM"))
        if "CHECKSUM" in cards:
            if _fold(_tailSum(stored) + dataWords) != _ALL_ONES:
                _checksumWarning("Checksum", hdu)
        if "DATASUM" in cards:
            try:
                expected = int(str(fits.Card.fromstring(cards["DATASUM"]).value).strip())
            except (ValueError, fits.VerifyError):
                expected = -1
            if expected != _fold(dataWords):
                _checksumWarning("Datasum", hdu)


def _storedCards(header: bytes, keywords: tuple[str, ...]) -> dict[str, str]:
    """The first card of each of ``keywords`` in a header's bytes as stored, up to ``END``."""
    cards: dict[str, str] = {}
    for offset in range(0, len(header) - 79, 80):
        card = header[offset : offset + 80].decode("ascii", errors="replace")
        keyword = card[:8].rstrip()
        if keyword == "END":
            break
        if keyword in keywords and keyword not in cards:
            cards[keyword] = card
    return cards


def _openStream(path: Path) -> io.FileIO | None:
    """An unbuffered binary stream on ``path`` if it is an uncompressed FITS file (whose data
    units can be read in place), else `None`."""
    try:
        stream = open(path, "rb", buffering=0)
    except OSError:
        return None  # astropy's open of the same path reports it
    if stream.read(len(_FITS_MAGIC)) != _FITS_MAGIC:
        stream.close()
        return None
    return stream
