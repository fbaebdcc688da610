# SPDX-License-Identifier: BSD-3-Clause
"""Tests of psfmatch.io: FITS and NDData in, LSST MaskedImage FITS out, metadata headers."""

from __future__ import annotations

import hashlib
import logging
import math
import os
import pickle
import warnings
from pathlib import Path

import numpy as np
import pytest
from astropy import units as u
from astropy.io import fits
from astropy.nddata import (
    CCDData,
    InverseVariance,
    NDData,
    StdDevUncertainty,
    UnknownUncertainty,
    VarianceUncertainty,
)

import psfmatch
from psfmatch import io
from psfmatch.errors import (
    InputFileNotFoundError,
    InvalidInputError,
    OutputExistsError,
    PsfMatchError,
    PsfMatchIOError,
)
from psfmatch.image import Mask, MaskedImage
from psfmatch.task import TaskMetadata

# The real LSST test images (the sharedData fixture of conftest.py).
SHARED_FILES = ["scienceMI.fits", "templateMI.fits"]


RNG_SEED = 20240611


@pytest.fixture
def planes(monkeypatch):
    """Give the test its own copy of the process-wide mask plane dictionary."""
    monkeypatch.setattr(Mask, "_maskPlaneDict", dict(Mask._maskPlaneDict))


def _digest(path: Path) -> tuple[str, int]:
    return hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns


def _randomMaskedImage(rng, *, xy0=(-3, 17), shape=(23, 31), dtype=np.float32) -> MaskedImage:
    image = rng.normal(100.0, 5.0, shape).astype(dtype)
    variance = rng.uniform(20.0, 30.0, shape).astype(dtype)
    mask = np.zeros(shape, dtype=np.int32)
    mask[2, 3] = Mask.getPlaneBitMask("SAT")
    mask[5, 7] = Mask.getPlaneBitMask(["CR", "DETECTED"])
    mask[-1, :] = Mask.getPlaneBitMask("EDGE")
    mask[4, 4] = Mask.getPlaneBitMask("NO_DATA")
    return MaskedImage(image, mask, variance, xy0=xy0)


def _assertSameMaskedImage(a: MaskedImage, b: MaskedImage) -> None:
    # Exact: FITS stores float32/float64 and integers losslessly.
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.mask, b.mask)
    np.testing.assert_array_equal(a.variance, b.variance)
    assert a.image.dtype == b.image.dtype
    assert a.getXY0() == b.getXY0()


def _writeLsstLayout(path: Path, image, mask, variance, maskHeader: dict, xy0=(0, 0)) -> None:
    """A file in the reference's layout, built by hand as the reference writes it."""

    def planeHeader(kind):
        header = fits.Header()
        header["EXTTYPE"] = kind
        header["CRVAL1A"], header["CRVAL2A"] = xy0
        header["CRPIX1A"], header["CRPIX2A"] = 1, 1
        header["CTYPE1A"] = "LINEAR"
        return header

    mh = planeHeader("MASK")
    for key, value in maskHeader.items():
        mh[f"HIERARCH {key}" if len(key) > 8 else key] = value
    fits.HDUList(
        [
            fits.PrimaryHDU(),
            fits.ImageHDU(image, header=planeHeader("IMAGE")),
            fits.ImageHDU(mask, header=mh),
            fits.ImageHDU(variance, header=planeHeader("VARIANCE")),
        ]
    ).writeto(path)


# ---------------------------------------------------------------------------------------------
# The shared LSST files


@pytest.mark.parametrize("name", SHARED_FILES)
def test_read_shared_lsst_files(sharedData, name):
    path = sharedData / name
    before = _digest(path)
    info: dict = {}
    mi = io.readMaskedImage(path, info=info)
    assert _digest(path) == before  # the file is only read

    with fits.open(path) as raw:
        rawImage, rawMask, rawVariance = (raw[i].data for i in (1, 2, 3))
        maskHeader, imageHeader = raw[2].header, raw[1].header
        assert rawImage.dtype.byteorder == ">"  # FITS is big-endian ...
        assert mi.getWidth() == mi.getHeight() == 193
        for plane in (mi.image, mi.variance):  # ... psfmatch's planes are native
            assert plane.dtype == np.float32 and plane.dtype.isnative
            assert plane.flags.c_contiguous and plane.flags.writeable
        assert mi.mask.dtype == np.int32
        np.testing.assert_array_equal(mi.image, rawImage)
        np.testing.assert_array_equal(mi.variance, rawVariance)
        rawSat = (rawMask.astype(np.int64) & (1 << maskHeader["MP_SAT"])) != 0
        np.testing.assert_array_equal((mi.mask & Mask.getPlaneBitMask("SAT")) != 0, rawSat)
        for key in [k for k in maskHeader if k.startswith("MP_")]:
            rawPlane = (rawMask.astype(np.int64) & (1 << maskHeader[key])) != 0
            ours = (mi.mask & Mask.getPlaneBitMask(key[3:])) != 0
            np.testing.assert_array_equal(ours, rawPlane)
        assert mi.getXY0() == (imageHeader["CRVAL1A"], imageHeader["CRVAL2A"])
    assert info["layout"] == "lsst"
    assert info["hasVariance"] and info["hasMask"]
    assert info["maskPlanesRemapped"] == {} and info["maskBitsDropped"] == 0


def test_shared_file_origins(sharedData):
    assert io.readMaskedImage(sharedData / SHARED_FILES[0]).getXY0() == (9, 9)
    # The template's MASK HDU says (9, 9) while its IMAGE and VARIANCE say (24, 24): the
    # image's origin wins and the disagreement is reported.
    info: dict = {}
    assert io.readMaskedImage(sharedData / SHARED_FILES[1], info=info).getXY0() == (24, 24)
    assert info["xy0Mismatch"] == {"MASK": (9, 9)}


def test_readImage_shared_file_keeps_its_variance(sharedData):
    info: dict = {}
    mi = io.readImage(str(sharedData / SHARED_FILES[0]), info=info)
    assert info["varianceSource"] == "input" and not info["varianceEstimated"]
    with fits.open(sharedData / SHARED_FILES[0]) as raw:
        np.testing.assert_array_equal(mi.variance, raw[3].data)


# ---------------------------------------------------------------------------------------------
# Mask planes and origins


def test_mask_bits_remapped_and_unknown_planes_added(tmp_path, planes):
    shape = (6, 5)
    rawMask = np.zeros(shape, dtype=np.uint16)
    rawMask[0, 0] = 1 << 3  # SAT in this file
    rawMask[1, 1] = 1 << 1  # CR in this file
    rawMask[2, 2] = 1 << 15  # FOREIGN, a plane psfmatch does not know
    rawMask[3, 3] = (1 << 12) | (1 << 3)  # bit 12 is named by nothing
    path = tmp_path / "remap.fits"
    _writeLsstLayout(
        path,
        np.zeros(shape, np.float32),
        rawMask,
        np.ones(shape, np.float32),
        {"MP_SAT": 3, "MP_CR": 1, "MP_FOREIGN": 15, "MP_BAD": 0},
    )
    info: dict = {}
    mi = io.readMaskedImage(path, info=info)
    assert "FOREIGN" in Mask.getMaskPlaneDict()
    assert mi.mask[0, 0] == Mask.getPlaneBitMask("SAT")
    assert mi.mask[1, 1] == Mask.getPlaneBitMask("CR")
    assert mi.mask[2, 2] == Mask.getPlaneBitMask("FOREIGN")
    assert mi.mask[3, 3] == Mask.getPlaneBitMask("SAT")  # the unnamed bit 12 is dropped
    assert np.count_nonzero(mi.mask) == 4
    assert info["maskPlanesAdded"] == ["FOREIGN"]
    assert info["maskBitsDropped"] == 1 << 12
    assert info["maskPlanesRemapped"]["SAT"] == (3, Mask.getMaskPlane("SAT"))


def test_signed_int16_mask_without_bzero_is_a_bit_pattern(tmp_path, planes):
    # A mask written as plain int16: -32768 is bit 15 alone, not bits 15-31.
    shape = (4, 4)
    rawMask = np.zeros(shape, dtype=np.int16)
    rawMask[1, 2] = np.int16(-32768)
    path = tmp_path / "int16.fits"
    _writeLsstLayout(
        path, np.zeros(shape, np.float32), rawMask, np.ones(shape, np.float32), {"MP_HIGH": 15}
    )
    mi = io.readMaskedImage(path)
    assert mi.mask[1, 2] == Mask.getPlaneBitMask("HIGH")


def _plainFile(path: Path, header: dict, data=None) -> Path:
    hdu = fits.PrimaryHDU(np.zeros((4, 5), np.float32) if data is None else data)
    for key, value in header.items():
        hdu.header[key] = value
    hdu.writeto(path)
    return path


@pytest.mark.parametrize(
    ("header", "xy0", "source"),
    [
        ({"LTV1": -5, "LTV2": -7}, (5, 7), "LTV1/LTV2"),
        (
            {"CRVAL1A": 12, "CRVAL2A": 30, "CRPIX1A": 3, "CTYPE1A": "LINEAR"},
            (10, 30),
            "CRVAL1A/CRVAL2A",
        ),
        # An alternate WCS "A" that is not LINEAR is not an origin: fall back to LTV.
        ({"CRVAL1A": 12.5, "CRVAL2A": 3.0, "CTYPE1A": "RA---TAN", "LTV1": 2}, (-2, 0), "LTV1/LTV2"),
        ({}, (0, 0), "default"),
    ],
)
def test_xy0_from_header(tmp_path, header, xy0, source):
    info: dict = {}
    mi = io.readMaskedImage(_plainFile(tmp_path / "a.fits", header), info=info)
    assert mi.getXY0() == xy0
    assert info["xy0Source"] == source
    assert info["layout"] == "plain" and not info["hasVariance"]


def test_non_integral_origin_is_refused(tmp_path):
    path = _plainFile(tmp_path / "a.fits", {"CRVAL1A": 1.5, "CRVAL2A": 2.0})
    with pytest.raises(InvalidInputError, match=r"a\.fits.*CRVAL1A.*not an integer"):
        io.readMaskedImage(path)


# ---------------------------------------------------------------------------------------------
# Other FITS layouts


def test_extname_layout_and_hdu_selection(tmp_path, rng):
    image = rng.normal(size=(8, 9)).astype(np.float32)
    variance = np.full((8, 9), 2.0, np.float32)
    mask = np.zeros((8, 9), np.int32)
    mask[1, 1] = Mask.getPlaneBitMask("CR")
    path = tmp_path / "named.fits"
    fits.HDUList(
        [
            fits.PrimaryHDU(),
            fits.ImageHDU(variance, name="VARIANCE"),
            fits.ImageHDU(image, name="IMAGE"),
            fits.ImageHDU(mask, name="MASK"),
        ]
    ).writeto(path)
    info: dict = {}
    mi = io.readMaskedImage(path, info=info)
    assert info["layout"] == "extname"
    np.testing.assert_array_equal(mi.image, image)
    np.testing.assert_array_equal(mi.variance, variance)
    np.testing.assert_array_equal(mi.mask, mask)  # no MP_ keywords: taken as psfmatch bits

    alone = io.readMaskedImage(path, hdu="VARIANCE", info=(info := {}))
    assert info["layout"] == "hdu"
    np.testing.assert_array_equal(alone.image, variance)
    assert not alone.mask.any() and not alone.variance.any()
    with pytest.raises(InvalidInputError, match=r"no HDU 7"):
        io.readMaskedImage(path, hdu=7)


def test_sci_err_dq_layout(tmp_path, rng):
    image = rng.normal(size=(5, 6)).astype(np.float32)
    err = np.full((5, 6), 3.0, np.float32)
    dq = np.zeros((5, 6), np.int16)
    dq[2, 3] = 4096
    path = tmp_path / "hst.fits"
    sci = fits.ImageHDU(image, name="SCI")
    sci.header["LTV1"], sci.header["LTV2"] = -100.0, -200.0
    fits.HDUList(
        [fits.PrimaryHDU(), sci, fits.ImageHDU(err, name="ERR"), fits.ImageHDU(dq, name="DQ")]
    ).writeto(path)
    mi = io.readMaskedImage(path)
    np.testing.assert_array_equal(mi.image, image)
    np.testing.assert_allclose(mi.variance, 9.0)  # ERR is a standard deviation
    assert mi.mask[2, 3] == Mask.getPlaneBitMask("BAD") and np.count_nonzero(mi.mask) == 1
    assert mi.getXY0() == (100, 200)


def test_plain_image_in_first_extension(tmp_path):
    data = np.arange(12, dtype=">i2").reshape(3, 4)
    path = tmp_path / "ext.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(data)]).writeto(path)
    info: dict = {}
    mi = io.readMaskedImage(path, info=info)
    assert info["hdus"] == {"IMAGE": 1}
    np.testing.assert_array_equal(mi.image, data)
    assert mi.image.dtype.isnative


# ---------------------------------------------------------------------------------------------
# Writing


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_write_read_round_trip(tmp_path, rng, planes, dtype):
    mi = _randomMaskedImage(rng, dtype=dtype)
    md = TaskMetadata()
    md["spatialKernelSum"] = 0.987654321
    md["psfMatch.nIter"] = 3
    md["psfMatch.conditionNumber"] = float("inf")
    md["psfMatch.background"] = float("nan")
    md["psfMatch.converged"] = False
    md["psfMatch.solver"] = "ldlt"
    md.add("psfMatch.timing.nCandidates", 12)
    md.add("psfMatch.timing.nCandidates", 9)
    md["NSTARS"] = 17
    kernel = fits.ImageHDU(rng.normal(size=(5, 5)), name="KERNEL")
    table = fits.BinTableHDU.from_columns(
        [fits.Column(name="x", format="D", array=[1.0, 2.0])], name="CANDIDATES"
    )
    path = tmp_path / "out.fits"
    io.writeMaskedImage(path, mi, header=md, extraHdus=[kernel, table])

    info: dict = {}
    back = io.readMaskedImage(path, info=info)
    _assertSameMaskedImage(mi, back)
    assert info["layout"] == "lsst"

    recovered = io.headerToMetadata(info["primaryHeader"]).to_dict()
    expected = md.to_dict()
    # The one card of the primary header that is not the metadata's.
    assert recovered.pop("PSFMVER") == psfmatch.__version__
    # NaN never equals itself: compare it apart.
    assert math.isnan(recovered["psfMatch"].pop("background"))
    expected["psfMatch"].pop("background")
    assert recovered == expected

    with fits.open(path) as hdul:
        assert [h.name for h in hdul] == [
            "PRIMARY",
            "IMAGE",
            "MASK",
            "VARIANCE",
            "KERNEL",
            "CANDIDATES",
        ]
        for h in hdul[1:4]:
            assert (h.header["CRVAL1A"], h.header["CRVAL2A"]) == (-3, 17)
            assert (h.header["LTV1"], h.header["LTV2"]) == (3, -17)
            assert h.header["CTYPE1A"] == h.header["CTYPE2A"] == "LINEAR"
        assert hdul[2].header["MP_SAT"] == Mask.getMaskPlane("SAT")
        assert hdul[2].header["MP_DETECTED_NEGATIVE"] == Mask.getMaskPlane("DETECTED_NEGATIVE")
        assert hdul[2].header["BITPIX"] == 16  # every set bit fits: uint16 like the reference
        np.testing.assert_array_equal(hdul["KERNEL"].data, kernel.data)
        np.testing.assert_array_equal(hdul["CANDIDATES"].data["x"], [1.0, 2.0])


def test_round_trip_high_mask_bits(tmp_path, rng, planes):
    for name in [f"EXTRA{i}" for i in range(32 - len(Mask.getMaskPlaneDict()))]:
        Mask.addMaskPlane(name)
    mi = _randomMaskedImage(rng)
    mi.mask[0, 0] = Mask.getPlaneBitMask("EXTRA22")  # bit 31: a negative int32
    assert mi.mask[0, 0] < 0
    path = tmp_path / "high.fits"
    io.writeMaskedImage(path, mi)
    with fits.open(path) as hdul:
        assert hdul["MASK"].header["BITPIX"] == 32
    _assertSameMaskedImage(mi, io.readMaskedImage(path))


def test_round_trip_into_another_plane_dictionary(tmp_path, rng, planes, monkeypatch):
    mi = _randomMaskedImage(rng)
    path = tmp_path / "out.fits"
    io.writeMaskedImage(path, mi)
    # A later session whose dictionary has CR and SAT swapped reads the same pixels.
    swapped = Mask.getMaskPlaneDict()
    swapped["CR"], swapped["SAT"] = swapped["SAT"], swapped["CR"]
    monkeypatch.setattr(Mask, "_maskPlaneDict", swapped)
    back = io.readMaskedImage(path)
    assert back.mask[2, 3] == Mask.getPlaneBitMask("SAT")
    assert back.mask[5, 7] == Mask.getPlaneBitMask(["CR", "DETECTED"])


def test_write_never_touches_its_inputs(tmp_path, rng, monkeypatch):
    mi = _randomMaskedImage(rng)
    planesBefore = [a.copy() for a in (mi.image, mi.mask, mi.variance)]
    header = fits.Header({"OBSERVER": "me"})
    headerBefore = header.tostring()
    kernel = fits.ImageHDU(np.ones((3, 3)), name="KERNEL")
    kernelHeaderBefore = kernel.header.tostring()

    # astropy byte-swaps writeable little-endian arrays in place while writing them: check,
    # at the moment the bytes go out, that psfmatch's arrays still hold their values.
    original = fits.file._File.writearray
    seen = []

    def spy(self, array):
        seen.append(
            all(
                np.array_equal(a, b)
                for a, b in zip(planesBefore, (mi.image, mi.mask, mi.variance), strict=True)
            )
        )
        return original(self, array)

    monkeypatch.setattr(fits.file._File, "writearray", spy)
    io.writeMaskedImage(tmp_path / "out.fits", mi, header=header, extraHdus=[kernel])
    assert seen and all(seen)
    for before, after in zip(planesBefore, (mi.image, mi.mask, mi.variance), strict=True):
        np.testing.assert_array_equal(before, after)
        assert after.flags.writeable
    assert header.tostring() == headerBefore
    assert kernel.header.tostring() == kernelHeaderBefore


def test_header_structural_cards_are_left_out(tmp_path, rng):
    mi = _randomMaskedImage(rng)
    header = fits.ImageHDU(np.zeros((2, 2)), name="JUNK").header
    header["OBSERVER"] = "someone"
    path = tmp_path / "out.fits"
    io.writeMaskedImage(path, mi, header=header)
    primary = fits.getheader(path, 0)
    assert primary["OBSERVER"] == "someone"
    assert primary["NAXIS"] == 0 and "EXTNAME" not in primary
    _assertSameMaskedImage(mi, io.readMaskedImage(path))


@pytest.mark.parametrize("given", [None, "header", "metadata"])
def test_written_files_carry_the_psfmatch_version(tmp_path, rng, given):
    """PSFMVER is psfmatch.__version__ in every file written, once, whatever the header
    passed says."""
    stale = {"PSFMVER": "0.0.1", "OBSERVER": "someone"}
    header = {None: None, "header": fits.Header(stale), "metadata": TaskMetadata(stale)}[given]
    path = tmp_path / "out.fits"
    io.writeMaskedImage(path, _randomMaskedImage(rng), header=header)
    primary = fits.getheader(path, 0)
    assert primary["PSFMVER"] == psfmatch.__version__
    assert primary.comments["PSFMVER"] == "psfmatch version"
    assert list(primary.keys()).count("PSFMVER") == 1
    assert given is None or primary["OBSERVER"] == "someone"


def test_no_overwrite_unless_asked(tmp_path, rng):
    path = tmp_path / "out.fits"
    first, second = _randomMaskedImage(rng), _randomMaskedImage(rng)
    io.writeMaskedImage(path, first)
    before = _digest(path)
    with pytest.raises(OutputExistsError, match=r"out\.fits.*exists.*overwrite=True") as excinfo:
        io.writeMaskedImage(path, second)
    assert isinstance(excinfo.value, FileExistsError) and excinfo.value.filename == str(path)
    assert _digest(path) == before
    io.writeMaskedImage(path, second, overwrite=True)
    _assertSameMaskedImage(second, io.readMaskedImage(path))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.fits"]


def test_no_overwrite_even_if_the_file_appears_during_the_write(tmp_path, rng, monkeypatch):
    path = tmp_path / "out.fits"
    original = fits.HDUList.writeto

    def racingWrite(self, fileobj, **kwargs):
        path.write_bytes(b"someone else's file")
        return original(self, fileobj, **kwargs)

    monkeypatch.setattr(fits.HDUList, "writeto", racingWrite)
    with pytest.raises(OutputExistsError, match="exists"):
        io.writeMaskedImage(path, _randomMaskedImage(rng))
    assert path.read_bytes() == b"someone else's file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.fits"]


@pytest.mark.parametrize(
    ("failure", "expected"),
    [
        (OSError(28, "No space left on device"), PsfMatchIOError),
        (KeyboardInterrupt(), KeyboardInterrupt),
    ],
)
@pytest.mark.parametrize("existing", [False, True])
def test_write_is_atomic(tmp_path, rng, monkeypatch, failure, expected, existing):
    path = tmp_path / "out.fits"
    if existing:
        io.writeMaskedImage(path, _randomMaskedImage(rng))
    before = _digest(path) if existing else None
    original = fits.HDUList.writeto

    def failingWrite(self, fileobj, **kwargs):
        # Write a good part of the file, then fail.
        original(fits.HDUList(self[:2]), fileobj, **kwargs)
        raise failure

    monkeypatch.setattr(fits.HDUList, "writeto", failingWrite)
    match = "No space left on device" if expected is PsfMatchIOError else None
    with pytest.raises(expected, match=match):
        io.writeMaskedImage(path, _randomMaskedImage(rng), overwrite=True)
    if existing:
        assert _digest(path) == before  # the old file is intact
        assert sorted(p.name for p in tmp_path.iterdir()) == ["out.fits"]
    else:
        assert list(tmp_path.iterdir()) == []  # neither the file nor the temporary


def test_unwritable_destinations(tmp_path, rng, monkeypatch):
    mi = _randomMaskedImage(rng)
    missing = tmp_path / "nowhere" / "out.fits"
    with pytest.raises(PsfMatchIOError, match=r"nowhere.*does not exist"):
        io.writeMaskedImage(missing, mi)
    (tmp_path / "afile").write_text("x")
    with pytest.raises(PsfMatchIOError, match=r"afile.*is not a directory"):
        io.writeMaskedImage(tmp_path / "afile" / "out.fits", mi)
    with pytest.raises(PsfMatchIOError, match=r"it is a directory"):
        io.writeMaskedImage(tmp_path, mi)

    # A directory without write permission (simulated: the tests may run as root, for whom
    # permissions do not apply).
    def denied(path, flags, mode=0o777):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(os, "open", denied)
    with pytest.raises(
        PsfMatchIOError, match=r"cannot write .*out\.fits.*Permission denied"
    ) as excinfo:
        io.writeMaskedImage(tmp_path / "out.fits", mi)
    assert isinstance(excinfo.value, OSError)
    assert list(tmp_path.iterdir()) == [tmp_path / "afile"]


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="needs a non-root POSIX user")
def test_read_only_directory(tmp_path, rng):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(PsfMatchIOError, match=r"locked.*Permission denied"):
            io.writeMaskedImage(locked / "out.fits", _randomMaskedImage(rng))
    finally:
        locked.chmod(0o700)


def test_write_argument_errors(tmp_path, rng):
    mi = _randomMaskedImage(rng)
    path = tmp_path / "out.fits"
    with pytest.raises(InvalidInputError, match="maskedImage: expected a MaskedImage, got ndarray"):
        io.writeMaskedImage(path, mi.image)
    with pytest.raises(InvalidInputError, match=r"extraHdus\[0\].*PrimaryHDU"):
        io.writeMaskedImage(path, mi, extraHdus=[fits.PrimaryHDU()])
    with pytest.raises(InvalidInputError, match="header: expected"):
        io.writeMaskedImage(path, mi, header=["not", "a", "header"])
    with pytest.raises(InvalidInputError, match="path: expected a file path"):
        io.writeMaskedImage(3, mi)
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------------
# CCDData and other inputs


def test_ccddata_in_memory(rng):
    data = rng.normal(size=(6, 7)).astype(np.float32)
    sigma = np.full((6, 7), 0.5)
    bad = np.zeros((6, 7), bool)
    bad[1, 2] = True
    ccd = CCDData(
        data,
        unit="adu",
        uncertainty=StdDevUncertainty(sigma),
        mask=bad,
        meta={"LTV1": -4, "LTV2": -6},
    )
    mi = io.readImage(ccd)
    np.testing.assert_array_equal(mi.image, data)
    np.testing.assert_allclose(mi.variance, 0.25)
    np.testing.assert_array_equal(mi.mask, np.where(bad, Mask.getPlaneBitMask("BAD"), 0))
    assert mi.getXY0() == (4, 6)

    mi = io.readImage(NDData(data, uncertainty=VarianceUncertainty(sigma**2)))
    np.testing.assert_allclose(mi.variance, 0.25)

    ivar = np.full((6, 7), 4.0)
    ivar[0, 0] = 0.0
    info: dict = {}
    mi = io.readImage(NDData(data, uncertainty=InverseVariance(ivar)), info=info)
    assert mi.variance[0, 0] == np.inf
    np.testing.assert_allclose(mi.variance.ravel()[1:], 0.25)
    assert mi.mask[0, 0] == Mask.getPlaneBitMask("NO_DATA")
    assert info["nNonFinite"] == 1

    # An uncertainty in other units is converted: 500 mADU is 0.5 ADU.
    milli = StdDevUncertainty(np.full((6, 7), 500.0), unit="madu")
    np.testing.assert_allclose(
        io.readImage(CCDData(data, unit="adu", uncertainty=milli)).variance, 0.25
    )


def test_ccddata_errors():
    data = np.zeros((3, 3))
    with pytest.raises(InvalidInputError, match="UnknownUncertainty is not supported"):
        io.readImage(NDData(data, uncertainty=UnknownUncertainty(np.ones((3, 3)))))
    with pytest.raises(InvalidInputError, match=r"uncertainty shape \(2, 2\) differs"):
        io.readImage(NDData(data, uncertainty=StdDevUncertainty(np.ones((2, 2)))))
    with pytest.raises(InvalidInputError, match=r"source mask: shape \(2, 2\) differs"):
        io.readImage(NDData(data, mask=np.zeros((2, 2), bool)))


def test_ccddata_files_in_and_out(tmp_path, rng):
    mi = _randomMaskedImage(rng, xy0=(11, -2))
    ccd = io.toCCDData(mi, unit="electron")
    assert ccd.unit == u.electron
    assert not np.shares_memory(ccd.data, mi.image)
    path = tmp_path / "ccd.fits"
    ccd.write(path)
    info: dict = {}
    back = io.readMaskedImage(path, info=info)
    assert info["layout"] == "ccddata"
    np.testing.assert_array_equal(back.image, mi.image)
    np.testing.assert_array_equal(back.variance, mi.variance)
    # CCDData masks are boolean: every flagged pixel comes back as BAD.
    np.testing.assert_array_equal(back.mask, np.where(mi.mask != 0, Mask.getPlaneBitMask("BAD"), 0))
    assert back.getXY0() == (11, -2)

    # A CCDData file without a unit (BUNIT) is still read.
    ccd.write(tmp_path / "nounit.fits")
    with fits.open(tmp_path / "nounit.fits", mode="update") as hdul:
        del hdul[0].header["BUNIT"]
    np.testing.assert_array_equal(io.readImage(tmp_path / "nounit.fits").image, mi.image)


def test_arrays_and_masked_arrays_in(rng):
    data = rng.normal(size=(5, 4))
    kept = data.copy()
    info: dict = {}
    mi = io.readImage(data, sigma=2.0, info=info)
    np.testing.assert_array_equal(mi.image, data)
    np.testing.assert_allclose(mi.variance, 4.0)
    assert info["source"] == "array" and info["varianceSource"] == "sigma"

    bigEndian = data.astype(">f4")
    mi = io.readImage(bigEndian, variance=np.ones((5, 4)))
    assert mi.image.dtype == np.float32 and mi.image.dtype.isnative
    np.testing.assert_array_equal(mi.image, bigEndian)

    masked = np.ma.masked_array(data, mask=data > 1.0)
    mi = io.readImage(masked, variance=1.0)
    np.testing.assert_array_equal(mi.mask != 0, data > 1.0)
    assert set(np.unique(mi.mask)) <= {0, Mask.getPlaneBitMask("BAD")}

    integerMask = np.zeros((5, 4), np.uint8)
    integerMask[0, 0] = Mask.getPlaneBitMask("SAT")
    mi = io.readImage(data.tolist(), variance=1.0, mask=integerMask)
    assert mi.mask[0, 0] == Mask.getPlaneBitMask("SAT")
    np.testing.assert_array_equal(data, kept)  # nothing modified


def test_maskedimage_passes_through_or_is_rebuilt(rng):
    mi = _randomMaskedImage(rng)
    assert io.readImage(mi) is mi
    copies = [a.copy() for a in (mi.image, mi.mask, mi.variance)]
    bad = np.zeros(mi.image.shape, bool)
    bad[0, 0] = True
    other = io.readImage(mi, mask=bad, sigma=3.0)
    assert other is not mi
    assert other.mask[0, 0] == Mask.getPlaneBitMask("BAD") and np.count_nonzero(other.mask) == 1
    np.testing.assert_allclose(other.variance, 9.0)
    assert other.getXY0() == mi.getXY0()
    for before, after in zip(copies, (mi.image, mi.mask, mi.variance), strict=True):
        np.testing.assert_array_equal(before, after)


def test_separate_planes_from_files(tmp_path, rng):
    data = rng.normal(size=(5, 6)).astype(np.float32)
    _plainFile(tmp_path / "image.fits", {}, data)
    _plainFile(tmp_path / "sigma.fits", {}, np.full((5, 6), 3.0, np.float32))
    mask = np.zeros((5, 6), np.int16)
    mask[4, 5] = Mask.getPlaneBitMask("CR")
    _plainFile(tmp_path / "mask.fits", {}, mask)
    files = {p: _digest(p) for p in tmp_path.iterdir()}
    mi = io.readImage(
        tmp_path / "image.fits", sigma=tmp_path / "sigma.fits", mask=str(tmp_path / "mask.fits")
    )
    np.testing.assert_allclose(mi.variance, 9.0)
    np.testing.assert_array_equal(mi.mask, mask)
    assert {p: _digest(p) for p in tmp_path.iterdir()} == files
    # An LSST file as the variance source gives its VARIANCE plane.
    lsst = _lsstFile(tmp_path)
    with fits.open(lsst) as raw:
        assert raw[3].header["EXTTYPE"] == "VARIANCE"
        mi = io.readImage(raw[1].data.astype(np.float32), variance=lsst)
        np.testing.assert_array_equal(mi.variance, raw[3].data)


def test_non_finite_pixels_are_flagged_not_changed():
    data = np.ones((10, 10))
    data[3, 4] = np.nan
    variance = np.ones((10, 10))
    variance[5, 5] = np.inf
    info: dict = {}
    mi = io.readImage(data, variance=variance, info=info)
    noData = Mask.getPlaneBitMask("NO_DATA")
    assert mi.mask[3, 4] == noData and mi.mask[5, 5] == noData
    assert np.count_nonzero(mi.mask) == 2 and info["nNonFinite"] == 2
    assert np.isnan(mi.image[3, 4])


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_each_kind_of_non_finite_value_is_found(bad):
    # The check looks at the extremes first (a NaN makes them NaN, an infinity is one): each
    # kind, alone in the image or in the variance, must still be found.
    for plane in ("image", "variance"):
        arrays = {"image": np.ones((6, 7), np.float32), "variance": np.ones((6, 7), np.float32)}
        arrays[plane][2, 3] = bad
        if plane == "variance" and bad == -np.inf:
            with pytest.raises(InvalidInputError, match="1 pixels have a negative variance"):
                io.readImage(arrays["image"], variance=arrays["variance"])
            continue
        info: dict = {}
        mi = io.readImage(arrays["image"], variance=arrays["variance"], info=info)
        assert info["nNonFinite"] == 1 and mi.mask[2, 3] == Mask.getPlaneBitMask("NO_DATA")


def test_a_negative_variance_beside_a_nan_is_refused():
    variance = np.ones((5, 5))
    variance[0, 0] = np.nan  # a NaN minimum must not hide the negative value
    variance[4, 4] = -2.0
    with pytest.raises(
        InvalidInputError, match=r"1 pixels have a negative variance \(minimum -2\)"
    ):
        io.readImage(np.ones((5, 5)), variance=variance)


# ---------------------------------------------------------------------------------------------
# Valid data range (HOTPANTS -iu -il -tu -tl)


def test_valid_data_range_flags_pixels_outside_it(rng, caplog):
    image = rng.normal(100.0, 5.0, (20, 30))
    image[2, 3] = 6e4  # saturated
    image[7, 8] = -500.0  # a dead pixel
    image[9, 9] = np.nan  # neither: NaN is flagged NO_DATA on its own
    variance = np.full(image.shape, 25.0)
    before = image.copy(), variance.copy()
    with caplog.at_level(logging.INFO, logger="psfmatch.io"):
        mi = io.readImage(image, variance=variance, upper=5e4, lower=0.0, name="science")
    sat = Mask.getPlaneBitMask("SAT")
    low = Mask.getPlaneBitMask(["BAD", "NO_DATA"])
    assert mi.mask[2, 3] == sat
    assert mi.mask[7, 8] == low
    assert mi.mask[9, 9] == Mask.getPlaneBitMask("NO_DATA")
    assert np.count_nonzero(mi.mask) == 3
    # The values stay; the inputs are untouched.
    assert mi.image[2, 3] == 6e4 and mi.image[7, 8] == -500.0
    np.testing.assert_array_equal(image, before[0])
    np.testing.assert_array_equal(variance, before[1])
    messages = [r.getMessage() for r in caplog.records]
    assert "science: 1 pixels above 50000 flagged SAT" in messages
    assert "science: 1 pixels below 0 flagged BAD|NO_DATA" in messages
    # The limits are strict: a pixel at the limit is valid.
    edge = io.readImage(image, variance=variance, upper=6e4, lower=-500.0)
    assert np.count_nonzero(edge.mask) == 1  # the NaN


def test_valid_data_range_of_a_maskedimage_makes_a_new_mask(rng):
    mi = _randomMaskedImage(rng)
    copies = [a.copy() for a in (mi.image, mi.mask, mi.variance)]
    upper = float(np.quantile(mi.image, 0.95))
    out = io.readImage(mi, upper=upper)
    assert out is not mi
    high = mi.image > upper
    sat = Mask.getPlaneBitMask("SAT")
    np.testing.assert_array_equal(out.mask, np.where(high, mi.mask | sat, mi.mask))
    # Only the mask is new: the image and variance are shared, and nothing was written.
    assert np.shares_memory(out.image, mi.image)
    assert np.shares_memory(out.variance, mi.variance)
    for before, after in zip(copies, (mi.image, mi.mask, mi.variance), strict=True):
        np.testing.assert_array_equal(before, after)


def test_valid_data_range_does_not_change_the_variance_estimate(rng):
    image = rng.normal(100.0, 5.0, (64, 64))
    image[10:20, 10:20] = 1e5
    plain = io.readImage(image)
    limited = io.readImage(image, upper=1e4)
    np.testing.assert_array_equal(limited.variance, plain.variance)
    assert np.all(limited.mask[10:20, 10:20] == Mask.getPlaneBitMask("SAT"))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"upper": "high"}, r"^upper: expected a number, got 'high'"),
        ({"lower": math.nan}, r"^lower: expected a number, got nan"),
        ({"upper": True}, r"^upper: expected a number, got True"),
        ({"upper": 1.0, "lower": 1.0}, r"valid data range is empty: lower=1 must be below upper=1"),
        (
            {"upper": 1.0, "lower": 2.0, "name": "template"},
            r"^template: the valid data range is empty",
        ),
    ],
    ids=["string", "nan", "bool", "equal", "named"],
)
def test_valid_data_range_errors(rng, kwargs, match):
    with pytest.raises(InvalidInputError, match=match):
        io.readImage(rng.normal(size=(8, 8)), variance=1.0, **kwargs)


def test_subtract_takes_the_valid_data_ranges(monkeypatch):
    calls = []
    original = io.readImage

    def recording(source, **kwargs):
        calls.append((kwargs["name"], kwargs["upper"], kwargs["lower"]))
        return original(source, **kwargs)

    monkeypatch.setattr(io, "readImage", recording)
    with pytest.raises(InvalidInputError, match=r"^science: the valid data range is empty"):
        psfmatch.subtract(np.ones((8, 8)), np.ones((8, 8)), scienceUpper=1.0, scienceLower=2.0)
    with pytest.raises(InvalidInputError, match=r"^template: upper: expected a number"):
        psfmatch.subtract(np.ones((8, 8)), np.ones((8, 8)), scienceVariance=1.0, templateUpper="x")
    with pytest.raises(InvalidInputError, match=r"^template: lower: expected a number"):
        psfmatch.analyzeTemplate(np.ones((8, 8)), templateLower=math.nan)
    # The same NaN object, so the tuples compare equal.
    assert calls == [
        ("science", 1.0, 2.0),
        ("science", None, None),
        ("template", "x", None),
        ("template", None, math.nan),
    ]


# ---------------------------------------------------------------------------------------------
# Variance estimate


def test_estimated_sky_variance_matches_the_simulated_noise(rng):
    sigmaTrue, shape = 7.3, (256, 256)
    image = 100.0 + rng.normal(0.0, sigmaTrue, shape)
    # A few bright compact stars: the clipped MAD must not notice them.
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    for x, y in rng.uniform(20, 236, size=(15, 2)):
        image += (
            5e4 / (2 * np.pi * 1.5**2) * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * 1.5**2))
        )
    before = image.copy()
    info: dict = {}
    mi = io.readImage(image, info=info)
    np.testing.assert_array_equal(image, before)
    assert info["varianceEstimated"] and info["varianceSource"] == "estimated"
    # The MAD-based standard deviation of N Gaussian deviates has a relative standard error
    # of about 1.17/sqrt(N) (its efficiency is 37 % of the sample standard deviation's); allow
    # four of those (about 1.8 % here) on sigma, twice that on the variance.
    tolerance = 4 * 1.17 / math.sqrt(image.size)
    np.testing.assert_allclose(info["skySigma"], sigmaTrue, rtol=tolerance)
    np.testing.assert_allclose(mi.variance, sigmaTrue**2, rtol=2 * tolerance)
    np.testing.assert_allclose(
        info["skyLevel"], 100.0, atol=4 * sigmaTrue * 1.25 / math.sqrt(image.size)
    )


def test_estimated_variance_with_gain_adds_the_poisson_term(rng):
    gain, sky, level, shape = 2.0, 400.0, 1000.0, (256, 256)
    expected = np.full(shape, sky)
    expected[:40, :80] += level  # a bright patch covering 5 % of the image
    image = rng.poisson(expected * gain) / gain  # in ADU: Poisson electrons over gain
    info: dict = {}
    mi = io.readImage(image, gain=gain, info=info)
    # The truth is the Poisson variance expected/gain. Inside the patch the estimate is
    # sigma_sky**2 + mean(image - sky)/gain: its error is the ~1 % uncertainty of the MAD
    # sigma on the sky part (a sixth of the total) and a shift of the median sky by the patch
    # of ~0.07 sigma_sky; 2 % is several times both.
    np.testing.assert_allclose(mi.variance[:40, :80].mean(), (sky + level) / gain, rtol=0.02)
    # On the sky, max(noise, 0)/gain adds about 0.4 sigma_sky/gain (1.4 % here) on top of the
    # ~2 % (two standard errors) of the MAD: allow 5 %.
    np.testing.assert_allclose(mi.variance[100:, 100:].mean(), sky / gain, rtol=0.05)
    assert info["gain"] == gain


def test_read_noise_gives_the_hotpants_noise_model(rng, caplog):
    # A raw frame in ADU: sky and a bright patch, Poisson electrons plus Gaussian read noise.
    gain, readNoise, sky, patch, shape = 4.0, 10.0, 200.0, 5000.0, (256, 256)
    level = np.full(shape, sky)
    level[:64, :128] = patch
    electrons = rng.poisson(level * gain) + rng.normal(0.0, readNoise, shape)
    image = electrons / gain
    info: dict = {}
    with caplog.at_level(logging.WARNING, logger="psfmatch.io"):
        mi = io.readImage(image, gain=gain, readNoise=readNoise, info=info)
    assert info["varianceModel"] == "gainReadNoise" and info["readNoise"] == readNoise
    assert caplog.records == []  # the model describes this image: no mismatch warning
    # HOTPANTS (makeNoiseImage4): noise² = |data| / gain + (readnoise / gain)², per pixel.
    # Exact up to float64 rounding.
    np.testing.assert_allclose(
        mi.variance, np.abs(image) / gain + (readNoise / gain) ** 2, rtol=1e-12
    )
    # Against the truth, level / gain + (readNoise / gain)²: in each region the mean estimate
    # differs from it only by the mean of the noise over gain, whose standard error is
    # 0.008 ADU² on the sky's 57344 pixels and 0.14 ADU² on the patch's 8192 (1.4e-4 of
    # either); 1e-3 is seven of them. Leaving out the read noise would be 11 % off on the sky.
    for region, value in ((level == sky, sky), (level == patch, patch)):
        truth = value / gain + (readNoise / gain) ** 2
        np.testing.assert_allclose(mi.variance[region].mean(), truth, rtol=1e-3)
        # ... and that truth is the pixels' own scatter: the sample variance of N pixels has a
        # relative standard error sqrt(2/N), 1.6 % on the patch; 8 % is five of them.
        np.testing.assert_allclose(image[region].var(), truth, rtol=0.08)


@pytest.mark.parametrize(
    ("skySubtracted", "gainGiven", "cause"),
    [
        (True, 4.0, "is the image sky-subtracted"),
        (False, 0.4, "is the gain too small or the read noise too large?"),
    ],
    ids=["sky-subtracted", "gain-too-small"],
)
def test_read_noise_model_that_misses_the_sky_scatter_warns(
    rng, caplog, skySubtracted, gainGiven, cause
):
    # HOTPANTS' model needs the sky in the pixel values and the right gain; otherwise its
    # variance at the sky differs from the sky's scatter by a large factor (about 9 without
    # the sky, 20 with a tenth of the gain; the warning needs 2), and the estimate says so.
    gain, readNoise = 4.0, 10.0
    image = (rng.poisson(800.0, (128, 128)) + rng.normal(0.0, readNoise, (128, 128))) / gain
    if skySubtracted:
        image -= np.median(image)
    with caplog.at_level(logging.WARNING, logger="psfmatch.io"):
        io.readImage(image, gain=gainGiven, readNoise=readNoise)
    (record,) = caplog.records
    assert cause in record.getMessage()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"gain": 2.0, "readNoise": -1.0}, r"readNoise: expected a finite number of electrons"),
        ({"gain": 2.0, "readNoise": math.nan}, r"readNoise: expected a finite number"),
        ({"gain": 2.0, "readNoise": True}, r"readNoise: expected a number of electrons"),
        ({"gain": 2.0, "readNoise": "5"}, r"readNoise: expected a number of electrons"),
        ({"readNoise": 5.0}, r"readNoise=5 e- needs gain= \(e-/ADU\)"),
    ],
    ids=["negative", "nan", "bool", "string", "no-gain"],
)
def test_read_noise_errors(rng, kwargs, match):
    with pytest.raises(InvalidInputError, match=match):
        io.readImage(rng.normal(size=(32, 32)), **kwargs)


def test_variance_estimate_failures():
    with pytest.raises(InvalidInputError, match="robust scatter of the image's sky is 0"):
        io.readImage(np.ones((20, 20)))
    masked = np.ma.masked_array(np.random.default_rng(1).normal(size=(20, 20)), mask=True)
    with pytest.raises(InvalidInputError, match=r"only 0 unmasked finite pixels"):
        io.readImage(masked)


# ---------------------------------------------------------------------------------------------
# Errors on reading


def test_missing_file(tmp_path):
    path = tmp_path / "absent.fits"
    with pytest.raises(InputFileNotFoundError, match=r"absent\.fits.*does not exist") as excinfo:
        io.readMaskedImage(path)
    assert isinstance(excinfo.value, FileNotFoundError)
    assert isinstance(excinfo.value, PsfMatchError)
    assert excinfo.value.filename == str(path)
    again = pickle.loads(pickle.dumps(excinfo.value))
    assert str(again) == str(excinfo.value) and again.filename == str(path)
    with pytest.raises(InputFileNotFoundError, match="absent"):
        io.readImage(str(path))
    with pytest.raises(InputFileNotFoundError, match="absent"):
        io.readImage(np.zeros((3, 3)), variance=path)


def _lsstFile(tmp_path: Path) -> Path:
    """A 193² float32 MaskedImage in the LSST layout (the size of the real LSST test files)."""
    path = tmp_path / "lsst.fits"
    noise = np.random.default_rng(5).normal(100.0, 10.0, size=(193, 193)).astype(np.float32)
    io.writeMaskedImage(path, MaskedImage(noise, None, np.full_like(noise, 100.0)))
    return path


def _truncated(tmp_path: Path) -> Path:
    raw = _lsstFile(tmp_path).read_bytes()
    path = tmp_path / "truncated.fits"
    path.write_bytes(raw[: len(raw) // 2])
    return path


def _shortHeader(tmp_path: Path) -> Path:
    path = tmp_path / "shortheader.fits"
    path.write_bytes(_lsstFile(tmp_path).read_bytes()[:4000])
    return path


def _staleCutout(path: Path, data: np.ndarray, original: Path) -> Path:
    """A cut-out as common tools make it: ``data`` under a copy of ``original``'s primary
    header, its CHECKSUM and DATASUM cards included (they describe the original's data)."""
    header = fits.getheader(original, 0)
    assert "CHECKSUM" in header and "DATASUM" in header
    fits.PrimaryHDU(data, header=header).writeto(path)  # no checksum=True: the cards are kept
    return path


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda d: d / "empty.fits", r"cannot read .*empty\.fits.* as FITS"),
        (lambda d: d / "text.fits", r"cannot read .*text\.fits.* as FITS"),
        # astropy's words for a cut file depend on where the cut falls ("File may have been
        # truncated", "cannot reshape array"): the verdict is what is tested.
        (_truncated, r"truncated\.fits.* is a damaged FITS file"),
        (_shortHeader, r"shortheader\.fits.* is a damaged FITS file"),
        (lambda d: _plainFile(d / "nodata.fits", {}, np.zeros(0)), r"nodata\.fits.*no 2-D image"),
        (lambda d: d, r"is a directory"),
    ],
    ids=["empty", "text", "truncated", "short-header", "no-image", "directory"],
)
def test_unreadable_files(tmp_path, make, match):
    (tmp_path / "empty.fits").write_bytes(b"")
    (tmp_path / "text.fits").write_text("SIMPLE? no, just text\n" * 200)
    path = make(tmp_path)
    with pytest.raises(InvalidInputError, match=match):
        io.readMaskedImage(path)


def test_stale_checksums_warn_once_per_hdu(tmp_path, rng, caplog):
    original = tmp_path / "original.fits"
    fits.PrimaryHDU(rng.normal(size=(40, 40)).astype(np.float32)).writeto(original, checksum=True)
    data = rng.normal(100.0, 5.0, (30, 30)).astype(np.float32)
    cutout = _staleCutout(tmp_path / "cutout.fits", data, original)
    # astropy itself says the cards do not match (so the test exercises the mismatch).
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with fits.open(cutout, checksum=True) as hdul:
            hdul[0].data  # noqa: B018
    assert {str(w.message).split()[0] for w in caught} == {"Checksum", "Datasum"}

    info: dict = {}
    with caplog.at_level(logging.WARNING, logger="psfmatch.io"):
        mi = io.readImage(cutout, info=info)
    np.testing.assert_array_equal(mi.image, data)  # the data are used as they are
    records = [r for r in caplog.records if r.levelno == logging.WARNING]
    # One warning for the HDU, though both of its cards fail; it names the file and the HDU.
    assert len(records) == 1, [r.getMessage() for r in records]
    message = records[0].getMessage()
    assert str(cutout) in message and "HDU 'PRIMARY'" in message
    assert "CHECKSUM and DATASUM cards do not match the data" in message
    assert info["warnings"] == [message]


def test_checksum_mismatch_of_an_extension_names_it(tmp_path, caplog):
    # A psfmatch file whose IMAGE data changed by one byte after it was written: the data
    # read (with the change), the failed checksum is reported for that HDU alone.
    path = tmp_path / "changed.fits"
    image = np.ones((20, 20), np.float32)
    io.writeMaskedImage(path, MaskedImage(image))
    with fits.open(path) as hdul:
        offset = hdul.fileinfo(hdul.index_of("IMAGE"))["datLoc"]
    raw = bytearray(path.read_bytes())
    raw[offset] ^= 0x80  # the sign bit of pixel [0, 0] (big-endian float32)
    path.write_bytes(bytes(raw))
    info: dict = {}
    with caplog.at_level(logging.WARNING, logger="psfmatch.io"):
        mi = io.readMaskedImage(path, info=info)
    assert mi.image[0, 0] == -1.0 and (mi.image.ravel()[1:] == 1.0).all()
    (message,) = info["warnings"]
    assert "HDU 'IMAGE'" in message and "HDU 'MASK'" not in message
    assert caplog.text.count("do not match the data") == 1


def test_cutouts_with_stale_checksums_are_subtracted_by_path(tmp_path, caplog):
    import psfmatch
    from psfmatch.simulate import simulatePair

    sim = simulatePair((256, 256), nStars=80, seed=2)
    original = tmp_path / "frame.fits"
    fits.PrimaryHDU(np.zeros((300, 300), np.float32)).writeto(original, checksum=True)
    science = _staleCutout(tmp_path / "science.fits", sim.science.image, original)
    template = _staleCutout(tmp_path / "template.fits", sim.template.image, original)
    with caplog.at_level(logging.WARNING, logger="psfmatch"):
        result = psfmatch.subtract(science, template)
    assert np.isfinite(result.kernelSum)
    warned = [r.getMessage() for r in caplog.records if "do not match the data" in r.getMessage()]
    assert len(warned) == 2
    assert str(science) in warned[0] and str(template) in warned[1]
    assert result.warnings == warned  # kept with the result, for its report


def test_a_truncated_file_with_checksums_is_still_refused(tmp_path):
    path = tmp_path / "whole.fits"
    io.writeMaskedImage(path, MaskedImage(np.ones((64, 64), np.float32)))
    raw = path.read_bytes()
    truncated = tmp_path / "cut.fits"
    truncated.write_bytes(raw[: len(raw) - 2880])  # the VARIANCE data lose their last block
    with pytest.raises(InvalidInputError, match=r"cut\.fits.* is a damaged FITS file"):
        io.readMaskedImage(truncated)


def test_readImage_argument_errors(rng):
    data = rng.normal(size=(4, 4))
    with pytest.raises(InvalidInputError, match="give variance or sigma, not both"):
        io.readImage(data, variance=1.0, sigma=1.0)
    with pytest.raises(InvalidInputError, match="variance: 1 pixels have a negative variance"):
        io.readImage(
            data, variance=np.where(np.eye(4, dtype=bool) & (np.arange(4) == 0), -1.0, 1.0)
        )
    with pytest.raises(InvalidInputError, match="sigma: 16 negative values"):
        io.readImage(data, sigma=-1.0)
    with pytest.raises(InvalidInputError, match="gain: expected a positive finite number"):
        io.readImage(data, gain=0.0)
    with pytest.raises(InvalidInputError, match="gain: expected a positive number"):
        io.readImage(data, gain="2")
    with pytest.raises(InvalidInputError, match=r"hdu=1 applies only to a FITS path"):
        io.readImage(data, hdu=1)
    with pytest.raises(InvalidInputError, match=r"mask: shape \(3, 3\) differs"):
        io.readImage(data, mask=np.zeros((3, 3), bool))
    with pytest.raises(InvalidInputError, match=r"variance: shape \(2,\) differs"):
        io.readImage(data, variance=[1.0, 2.0])
    with pytest.raises(InvalidInputError, match="mask: a mask must hold integers"):
        io.readImage(data, variance=1.0, mask=np.full((4, 4), 0.5))
    with pytest.raises(InvalidInputError, match="source: expected a FITS path.*got dict"):
        io.readImage({"image": data})
    with pytest.raises(InvalidInputError, match="expected a 2-D array"):
        io.readImage(np.zeros(5))
    with pytest.raises(InvalidInputError, match="source: cannot make a 2-D array"):
        io.readImage([[1.0, 2.0], [3.0]])
    with pytest.raises(InvalidInputError, match="expected a real numeric array"):
        io.readImage([["a", "b"], ["c", "d"]])


# ---------------------------------------------------------------------------------------------
# Metadata and headers


def test_metadataToHeader_cards():
    md = TaskMetadata()
    md["NSTARS"] = 9
    md["spatialKernelSum"] = 1.5
    md["psfMatch.flag"] = True
    md["psfMatch.bad"] = float("-inf")
    md.add("psfMatch.iters", [1, 2, 3])
    md["psfMatch.empty"] = []
    header = io.metadataToHeader(md, prefix="pm.")
    cards = {card.keyword: card for card in header.cards}
    assert list(cards) == [
        "pm.NSTARS",
        "pm.spatialKernelSum",
        "pm.psfMatch.flag",
        "pm.psfMatch.bad",
        "pm.psfMatch.iters[0]",
        "pm.psfMatch.iters[1]",
        "pm.psfMatch.iters[2]",
    ]
    assert cards["pm.psfMatch.flag"].value is True
    assert cards["pm.psfMatch.bad"].value == "-inf"
    assert cards["pm.psfMatch.bad"].comment == "non-finite float"
    assert io.metadataToHeader({"NSTARS": 9}).cards[0].image.startswith("NSTARS  =")
    for card in header.cards:
        card.verify("exception")

    header["OTHER"] = 1  # not ours: outside the prefix
    back = io.headerToMetadata(header, prefix="pm.")
    assert back["psfMatch.iters"] == [1, 2, 3] and back["psfMatch.bad"] == -math.inf
    assert "OTHER" not in back and "psfMatch.empty" not in back


def test_metadataToHeader_skips_what_cannot_be_a_card(caplog):
    md = TaskMetadata()
    md["k" * 75] = 1.25  # no room for the value in 80 characters
    md["value"] = 1
    md["VALUE"] = 2  # same FITS keyword as "value"
    with caplog.at_level(logging.WARNING, logger="psfmatch.io"):
        header = io.metadataToHeader(md)
    assert [card.keyword for card in header.cards] == ["value"]
    assert f"metadata key {'k' * 75!r}" in caplog.text and "skipped" in caplog.text
    assert "collides" in caplog.text


def test_metadata_errors():
    with pytest.raises(InvalidInputError, match="cannot be a FITS keyword"):
        io.metadataToHeader({"température": 1})
    with pytest.raises(InvalidInputError, match="must be printable ASCII"):
        io.metadataToHeader({"filter": "Hα"})
    with pytest.raises(InvalidInputError, match="metadata: expected a TaskMetadata or mapping"):
        io.metadataToHeader([1, 2])
    with pytest.raises(InvalidInputError, match="header: expected an astropy.io.fits.Header"):
        io.headerToMetadata({"a": 1})


def test_headerToMetadata_skips_structural_and_conflicting_cards(caplog):
    header = fits.PrimaryHDU(np.zeros((2, 2))).header
    header["HISTORY"] = "made by hand"
    header["HIERARCH a"] = 1
    header["HIERARCH a.b"] = 2  # "a" already holds a value
    with caplog.at_level(logging.WARNING, logger="psfmatch.io"):
        md = io.headerToMetadata(header)
    assert md.to_dict() == {"a": 1}
    assert "cannot be a metadata key" in caplog.text


def test_estimated_sky_sigma_from_a_sample_matches_all_pixels_and_the_truth():
    # 2048 x 1024 pixels (2**21, twice the sample) of sky 100 with sigma 7 and bright sources
    # on 1 % of the pixels: the clipped statistics of every other pixel agree with those of
    # all pixels and with the truth.
    rng = np.random.default_rng(11)
    image = rng.normal(100.0, 7.0, size=(1024, 2048)).astype(np.float32)
    hot = rng.random(image.shape) < 0.01
    image[hot] += rng.uniform(100.0, 5000.0, size=int(hot.sum())).astype(np.float32)
    good = np.ones(image.shape, dtype=bool)
    sampled = io.inputs._skyStatistics(image, good)
    from astropy.stats import sigma_clipped_stats

    _, skyAll, sigmaAll = sigma_clipped_stats(
        image, sigma=3.0, maxiters=10, cenfunc="median", stdfunc="mad_std"
    )
    # The MAD's relative error on 2**20 pixels is ~1.2e-3; 5e-3 is four of those. The
    # median's error is ~1.25 sigma/sqrt(N) ~ 0.01.
    assert sampled[1] == pytest.approx(sigmaAll, rel=5e-3)
    # Against the truth: iterated 3-sigma clipping with a MAD-based sigma trims the Gaussian's
    # own tails a little each round and ends ~1.2 % low on pure noise (the estimator's, not the
    # sample's bias: the full-pixel value above has it too); 2 % bounds it.
    assert sampled[1] == pytest.approx(7.0, rel=2e-2)
    assert sampled[0] == pytest.approx(skyAll, abs=0.05)
    # A column pattern: even columns 3 above, odd 3 below. The sample step (2 for 2**21 pixels)
    # shares a factor with the width, so it is moved to 3: every column is sampled alike and
    # the pattern's scatter is in the answer as in all the pixels' (a step of 2 would see one
    # column parity only and miss it: sigma 7 instead of sqrt(7² + 3²) = 7.6).
    striped = image.copy()
    striped[:, 0::2] += 3.0
    striped[:, 1::2] -= 3.0
    _, _, sigmaStriped = sigma_clipped_stats(
        striped, sigma=3.0, maxiters=10, cenfunc="median", stdfunc="mad_std"
    )
    assert io.inputs._skyStatistics(striped, good)[1] == pytest.approx(sigmaStriped, rel=5e-3)
    # Good pixels the sample never reaches (raster indices 1 mod 3): all of them are used.
    hidden = np.zeros(image.size, dtype=bool)
    hidden[1::3] = True
    hidden = hidden.reshape(image.shape)
    sky, sigma = io.inputs._skyStatistics(image, hidden)
    _, skyHidden, sigmaHidden = sigma_clipped_stats(
        image[hidden], sigma=3.0, maxiters=10, cenfunc="median", stdfunc="mad_std"
    )
    assert (sky, sigma) == (
        pytest.approx(skyHidden, rel=1e-12),
        pytest.approx(sigmaHidden, rel=1e-12),
    )


def test_read_noise_cross_check_on_a_zero_sky_does_not_divide_by_zero():
    # Sky-subtracted integer pixels with no read noise: the model's sky variance is 0; the
    # cross-check says the model misses the scatter instead of failing.
    rng = np.random.default_rng(4)
    image = np.rint(rng.normal(0.0, 5.0, size=(64, 64)))
    info: dict = {}
    mi = io.readImage(image, gain=1.0, readNoise=0.0, info=info)
    assert info["varianceModel"] == "gainReadNoise"
    np.testing.assert_array_equal(mi.variance, np.abs(image))  # |image|/gain + 0
