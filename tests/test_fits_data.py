# SPDX-License-Identifier: BSD-3-Clause
"""Tests of psfmatch.io.fitsdata: FITS data units read straight into native arrays and written
from them, with the checksums of the FITS standard, against what astropy reads and writes."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from psfmatch import io
from psfmatch.image import MaskedImage
from psfmatch.io import fitsdata, layouts, writing

RNG_SEED = 20261204

# Odd shapes: a data unit whose length is not a whole number of 32-bit words (1- and 2-byte
# types) checks the checksum's zero-padded last word.
_SHAPE = (7, 5)


def _values(rng, dtype):
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        values = rng.normal(0.0, 1e3, _SHAPE).astype(dtype)
        values[1, 2], values[3, 4] = np.nan, -np.inf  # stored as they are
        return values
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max, _SHAPE, dtype=dtype, endpoint=True)


def _readHdu(path: Path, index: int) -> tuple[np.ndarray | None, dict]:
    info: dict = {}
    data = layouts._withFits(path, lambda reader: reader.data(index), info)
    return data, info


def _assertAsAstropyReadsIt(data, path: Path, index: int) -> None:
    with fits.open(path) as hdul:
        expected = hdul[index].data
        # Exact: both are the stored numbers, converted the same way.
        np.testing.assert_array_equal(data, expected)
        assert data.dtype == expected.dtype.newbyteorder("=")
    assert data.dtype.isnative
    assert data.flags.c_contiguous and data.flags.writeable


@pytest.mark.parametrize(
    "dtype", ["u1", "i2", "i4", "i8", "f4", "f8", "u2", "u4"], ids=lambda d: np.dtype(d).name
)
def test_read_equals_astropy_for_every_bitpix(tmp_path, rng, dtype):
    # u2 and u4 are astropy's unsigned integers: signed ones with BZERO = 2**(bits-1).
    path = tmp_path / "plane.fits"
    values = _values(rng, dtype)
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(values, name="PLANE")]).writeto(
        path, checksum=True
    )
    data, info = _readHdu(path, 1)
    _assertAsAstropyReadsIt(data, path, 1)
    np.testing.assert_array_equal(data, values)
    # Read into an array of its own, nothing astropy holds.
    assert data.base is None or data.base.base is None
    assert "warnings" not in info  # both checksums verified


def test_read_of_a_psfmatch_file_is_native_and_writeable(tmp_path, rng):
    path = tmp_path / "mi.fits"
    shape = (33, 17)
    mi = MaskedImage(
        rng.normal(size=shape).astype(np.float32),
        rng.integers(0, 1 << 9, shape).astype(np.int32),
        rng.uniform(1.0, 2.0, shape).astype(np.float32),
    )
    io.writeMaskedImage(path, mi)
    back = io.readMaskedImage(path)
    with fits.open(path) as hdul:
        for plane, name in ((back.image, "IMAGE"), (back.variance, "VARIANCE")):
            np.testing.assert_array_equal(plane, hdul[name].data)
        np.testing.assert_array_equal(back.mask, hdul["MASK"].data.astype(np.int32))
    for plane in (back.image, back.mask, back.variance):
        assert plane.dtype.isnative and plane.flags.c_contiguous and plane.flags.writeable
        assert not np.shares_memory(plane, mi.image) and not np.shares_memory(plane, mi.variance)
    back.image[0, 0] = 1.0  # the caller's to change


def _scaled(path: Path, rng) -> None:
    hdu = fits.ImageHDU(rng.integers(-100, 100, _SHAPE).astype(np.int16))
    hdu.header["BSCALE"], hdu.header["BZERO"] = 0.5, 10.0
    fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(path, checksum=True)


def _blank(path: Path, rng) -> None:
    values = rng.integers(-100, 100, _SHAPE).astype(np.int16)
    values[0, 0] = -32768
    hdu = fits.ImageHDU(values)
    hdu.header["BLANK"] = -32768
    hdu.header["BSCALE"] = 1.0
    hdu.header["BZERO"] = 0.0
    fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(path, checksum=True)


def _gzipped(path: Path, rng) -> None:
    values = rng.normal(size=_SHAPE).astype(np.float32)
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(values)]).writeto(path, checksum=True)


def _tileCompressed(path: Path, rng) -> None:
    values = rng.integers(0, 1000, _SHAPE).astype(np.int32)
    fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(values)]).writeto(path, checksum=True)


@pytest.mark.parametrize(
    "make, name",
    [
        (_scaled, "scaled.fits"),
        (_blank, "blank.fits"),
        (_gzipped, "gzipped.fits.gz"),
        (_tileCompressed, "tiles.fits"),
    ],
    ids=["bscale", "blank", "gzip", "tile-compressed"],
)
def test_what_astropy_reads_is_read_by_astropy(tmp_path, rng, make, name):
    # Scaled values, BLANK pixels, compressed files and HDUs take astropy's own path; the
    # answer is astropy's, as a native, writeable array.
    path = tmp_path / name
    make(path, rng)
    data, info = _readHdu(path, 1)
    with fits.open(path) as hdul:
        expected = hdul[1].data
        # Exact: the same conversion of the same numbers; NaN where astropy puts it (BLANK).
        np.testing.assert_array_equal(data, expected)
        assert data.dtype == expected.dtype.newbyteorder("=")
    assert data.dtype.isnative and data.flags.c_contiguous and data.flags.writeable
    assert "warnings" not in info


@pytest.mark.parametrize("dtype", ["u1", "i2", "u2", "f4", "f8"], ids=lambda d: np.dtype(d).name)
def test_a_changed_byte_fails_both_checksums_of_its_hdu(tmp_path, rng, dtype):
    path = tmp_path / "plane.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(_values(rng, dtype), name="PLANE")]).writeto(
        path, checksum=True
    )
    with fits.open(path) as hdul:
        offset = hdul.fileinfo(1)["datLoc"] + 2
    raw = bytearray(path.read_bytes())
    raw[offset] ^= 0x01
    path.write_bytes(bytes(raw))
    # astropy agrees that the file fails (so the test exercises a real mismatch).
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fits.open(path, checksum=True).close()
    assert {str(w.message).split()[0] for w in caught} == {"Checksum", "Datasum"}
    _, info = _readHdu(path, 1)
    (message,) = info["warnings"]
    assert "HDU 'PLANE': the CHECKSUM and DATASUM cards do not match the data" in message


def test_a_tile_compressed_hdu_is_verified_by_its_tables_checksums(tmp_path, rng):
    # A tile-compressed HDU's CHECKSUM and DATASUM are the cards of the binary table that
    # stores it, which astropy's header of the image does not show; astropy verifies them.
    # A changed byte after the table's heap (in the data unit's padding) decompresses to the
    # same image, so only the checksums can tell.
    path = tmp_path / "tiles.fits"
    _tileCompressed(path, rng)
    with fits.open(path) as hdul:
        location = hdul.fileinfo(1)
    raw = bytearray(path.read_bytes())
    raw[location["datLoc"] + location["datSpan"] - 1] ^= 0x01
    path.write_bytes(bytes(raw))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fits.open(path, checksum=True).close()
    assert {str(w.message).split()[0] for w in caught} == {"Checksum", "Datasum"}
    data, info = _readHdu(path, 1)
    (message,) = info["warnings"]
    assert "HDU 'COMPRESSED_IMAGE': the CHECKSUM and DATASUM cards do not match" in message
    with fits.open(path) as hdul:
        np.testing.assert_array_equal(data, hdul[1].data)  # exact: the same decompression


def test_hdus_that_are_not_read_are_verified_too(tmp_path, rng):
    # As when astropy verified every HDU of the file on opening it: a damaged extra HDU of a
    # psfmatch file is reported though readMaskedImage does not read it.
    path = tmp_path / "mi.fits"
    mi = MaskedImage(rng.normal(size=(12, 9)).astype(np.float32))
    kernel = fits.ImageHDU(rng.normal(size=(5, 5)), name="KERNEL")
    io.writeMaskedImage(path, mi, extraHdus=[kernel])
    with fits.open(path) as hdul:
        offset = hdul.fileinfo(hdul.index_of("KERNEL"))["datLoc"]
    raw = bytearray(path.read_bytes())
    raw[offset + 7] ^= 0x10
    path.write_bytes(bytes(raw))
    info: dict = {}
    io.readMaskedImage(path, info=info)
    (message,) = info["warnings"]
    assert "HDU 'KERNEL'" in message


def _cards(header: fits.Header) -> list[tuple[str, object, str]]:
    """The cards of a header, without what the time of writing changes: the checksum cards'
    comments (dated) and the CHECKSUM value (it encodes the dated header)."""
    cards = []
    for card in header.cards:
        if card.keyword == "CHECKSUM":
            cards.append((card.keyword, None, ""))
        elif card.keyword == "DATASUM":
            cards.append((card.keyword, card.value, ""))
        else:
            cards.append((card.keyword, card.value, card.comment))
    return cards


@pytest.mark.parametrize(
    "dtype, maskBits",
    [(np.float32, 1 << 8), (np.float64, 1 << 3), (np.float32, 1 << 20)],
    ids=["float32-uint16-mask", "float64", "int32-mask"],
)
def test_written_file_is_what_astropy_writes(tmp_path, rng, dtype, maskBits):
    shape = (13, 29)  # odd: a uint16 mask's last word is half padding
    mask = np.zeros(shape, np.int32)
    mask[rng.random(shape) < 0.2] = maskBits
    mi = MaskedImage(
        rng.normal(size=shape).astype(dtype),
        mask,
        rng.uniform(1.0, 2.0, shape).astype(dtype),
        xy0=(-4, 9),
    )
    header = {"alpha": 1.5, "LONG.KEY.NAME": "text", "n": 3}
    table = fits.BinTableHDU.from_columns(
        [fits.Column(name="x", format="D", array=rng.normal(size=4))], name="TABLE"
    )
    extras = [fits.ImageHDU(rng.normal(size=(3, 3)), name="KERNEL"), table]
    ours = tmp_path / "ours.fits"
    io.writeMaskedImage(ours, mi, header=header, extraHdus=extras)

    # astropy writing the same HDUs, as writeMaskedImage did before it wrote the planes itself.
    planes = writing._planes(mi)
    others = writing._otherHdus(header, extras)
    reference = tmp_path / "astropy.fits"
    fits.HDUList([others[0], *(hdu for hdu, _ in planes), *others[1:]]).writeto(
        reference, checksum=True
    )

    # No warning (pytest turns them into errors): astropy verifies every checksum of ours.
    with fits.open(ours, checksum=True) as mine, fits.open(reference, checksum=True) as theirs:
        assert len(mine) == len(theirs) == 6
        oursBytes, theirBytes = ours.read_bytes(), reference.read_bytes()
        for index in range(len(mine)):
            assert _cards(mine[index].header) == _cards(theirs[index].header)
            a, b = mine.fileinfo(index), theirs.fileinfo(index)
            assert a["datSpan"] == b["datSpan"]
            dataOurs = oursBytes[a["datLoc"] : a["datLoc"] + a["datSpan"]]
            dataTheirs = theirBytes[b["datLoc"] : b["datLoc"] + b["datSpan"]]
            assert dataOurs == dataTheirs, mine[index].name
    back = io.readMaskedImage(ours)
    np.testing.assert_array_equal(back.image, mi.image)
    np.testing.assert_array_equal(back.variance, mi.variance)


def test_planes_in_any_byte_order_and_layout_are_written_as_their_values(tmp_path, rng):
    # MaskedImage's planes are attributes that a caller may replace (say, with a FITS HDU's
    # big-endian data); the file holds their values, as when astropy wrote them.
    shape = (6, 9)
    mask = np.zeros(shape, np.int32)
    mask[2, 3], mask[4, 1] = 1 << 3, 1 << 8  # CR, NO_DATA
    mi = MaskedImage(np.zeros(shape, np.float32))
    image = rng.normal(size=shape).astype(np.float32)
    variance = rng.uniform(1.0, 2.0, (shape[1], shape[0])).astype(np.float32).T
    mi.image = image.astype(">f4")
    mi.variance = variance  # Fortran order
    mi.mask = mask.astype(">i4")
    path = tmp_path / "mi.fits"
    io.writeMaskedImage(path, mi)
    back = io.readMaskedImage(path)
    # Exact: the same float32 values and mask bits.
    np.testing.assert_array_equal(back.image, image)
    np.testing.assert_array_equal(back.variance, variance)
    np.testing.assert_array_equal(back.mask, mask)
    assert mi.image.dtype == np.dtype(">f4") and mi.mask.dtype == np.dtype(">i4")  # unchanged


@pytest.mark.parametrize("dataSum", [0, 1, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFE, 0x12345678])
def test_checksum_card_makes_the_hdu_sum_all_ones(dataSum):
    # The standard's definition of CHECKSUM: with it, the ones' complement sum of the header's
    # words and the data unit's sum is all ones (negative zero).
    header = fits.ImageHDU(np.zeros((2, 3), np.float32), name="X").header
    stored = fitsdata._setChecksumCards(header, dataSum, "2026-12-04T00:00:00")
    assert len(stored) % 2880 == 0
    assert fitsdata._fold(fitsdata._wordSum(stored) + dataSum) == 0xFFFFFFFF
    assert header["DATASUM"] == str(dataSum) and str(header["CHECKSUM"]).isalnum()
