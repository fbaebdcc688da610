# SPDX-License-Identifier: BSD-3-Clause
"""Every row of docs/errors.md: each kind of bad input at each public entry point gets its
named psfmatch exception with a message that says what and where, or the documented fallback
(a logged warning and a metadata entry), and no input is modified.

Each case builds its call from a small simulated pair and names the arrays and files the call
is given; the test snapshots them first and checks them afterwards. The ids are the ones
docs/errors.md quotes.
"""

# ruff: noqa: E501  (the case table reads best one case to a line)

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lsst.pex.config as pexConfig
import numpy as np
import pytest
from astropy.table import MaskedColumn, Table

import psfmatch as pm
from helpers import configWith, simulatedFitsPair
from psfmatch import io as pmio
from psfmatch.cli import main
from psfmatch.errors import (
    InputFileNotFoundError,
    InsufficientKernelSourcesError,
    InvalidInputError,
    OutputExistsError,
    PsfMatchError,
    PsfMatchIOError,
)
from psfmatch.image import Mask
from psfmatch.simulate import simulatePair

SHAPE = (128, 128)
BAD = Mask.getPlaneBitMask("BAD")


@dataclass
class Pair:
    science: pm.MaskedImage
    template: pm.MaskedImage
    dir: Path
    scienceFits: Path
    templateFits: Path
    corruptFits: Path
    truncatedFits: Path


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Pair:
    """A 128² pair with ~10 usable stars (enough for the default fit, see test_ok_baseline)
    and FITS files of it: good, garbage and truncated."""
    directory = tmp_path_factory.mktemp("errors")
    files = simulatedFitsPair(directory, SHAPE, nStars=20, seed=3, nTransients=0)
    sim, scienceFits, templateFits = files["sim"], files["science"], files["template"]
    corrupt = directory / "corrupt.fits"
    corrupt.write_bytes(b"SIMPLE  =                    T" + b"\0" * 100)
    truncated = directory / "truncated.fits"
    data = scienceFits.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    return Pair(sim.science, sim.template, directory, scienceFits, templateFits, corrupt, truncated)


def _snapshot(watched: list[Any]) -> list[Any]:
    out = []
    for item in watched:
        if isinstance(item, pm.MaskedImage):
            out.append((item.image.copy(), item.mask.copy(), item.variance.copy(), item.getXY0()))
        elif isinstance(item, Path):
            out.append(hashlib.sha256(item.read_bytes()).hexdigest() if item.exists() else None)
        else:
            out.append(np.array(item, copy=True))
    return out


def _assertUnchanged(watched: list[Any], before: list[Any]) -> None:
    after = _snapshot(watched)
    for item, old, new in zip(watched, before, after, strict=True):
        if isinstance(item, pm.MaskedImage):
            for a, b in zip(old[:3], new[:3], strict=True):
                np.testing.assert_array_equal(a, b)  # bit for bit, NaNs in place
            assert old[3] == new[3]
        elif isinstance(item, Path):
            assert old == new, f"{item} was modified"
        else:
            np.testing.assert_array_equal(old, new)


def _with(a: np.ndarray, y: int, x: int, value: float) -> np.ndarray:
    out = np.array(a, copy=True)
    out[y, x] = value
    return out


def _config(**fields: Any) -> pm.ImagePsfMatchConfig:
    return configWith(pm.ImagePsfMatchConfig(), **fields)


def _stamps(p: Pair, size: int = 21) -> tuple[pm.MaskedImage, pm.MaskedImage]:
    box = pm.Box2I((40, 40), (size, size))
    return p.template.subimage(box), p.science.subimage(box)


# Each case: (id, make(pair, tmp) -> (call, watched inputs), exception, match).
Case = tuple[str, Callable[[Pair, Path], tuple[Callable[[], Any], list[Any]]], type, str]


def _sub(
    science: Callable[[Pair], Any], template: Callable[[Pair], Any] | None = None, **kw: Any
) -> Callable[[Pair, Path], tuple[Callable[[], Any], list[Any]]]:
    """A case calling psfmatch.subtract; array and MaskedImage arguments are watched."""

    def make(p: Pair, tmp: Path) -> tuple[Callable[[], Any], list[Any]]:
        s = science(p)
        t = template(p) if template is not None else p.template.image
        args = {k: (v(p) if callable(v) else v) for k, v in kw.items()}
        watched = [
            v for v in (s, t, *args.values()) if isinstance(v, np.ndarray | pm.MaskedImage | Path)
        ]
        return (lambda: pm.subtract(s, t, **args)), watched

    return make


def _task(method: str, template: Callable[[Pair], Any], science: Callable[[Pair], Any], **kw: Any):
    def make(p: Pair, tmp: Path) -> tuple[Callable[[], Any], list[Any]]:
        t, s = template(p), science(p)
        task = pm.ImagePsfMatchTask()
        return (lambda: getattr(task, method)(t, s, **kw)), [
            v for v in (t, s) if isinstance(v, np.ndarray | pm.MaskedImage)
        ]

    return make


def _plain(call: Callable[[Pair, Path], Any], *watch: Callable[[Pair], Any]):
    def make(p: Pair, tmp: Path) -> tuple[Callable[[], Any], list[Any]]:
        return (lambda: call(p, tmp)), [w(p) for w in watch]

    return make


def _masked(image: Callable[[Pair], np.ndarray], mask: Callable[[Pair], np.ndarray] | None = None):
    """A MaskedImage of the science image's variance with another image (and mask)."""
    return lambda p: pm.MaskedImage(image(p), None if mask is None else mask(p), p.science.variance)


sci = lambda p: p.science.image  # noqa: E731
nanSci = lambda p: _with(p.science.image, 50, 60, np.nan)  # noqa: E731
infSci = lambda p: _with(p.science.image, 50, 60, np.inf)  # noqa: E731
allBad = lambda p: np.full(SHAPE, BAD, np.int32)  # noqa: E731
KERNEL5 = np.full((5, 5), 1.0 / 25.0)

# fmt: off
CASES: list[Case] = [
    # -- wrong dtype ---------------------------------------------------------------------
    ("dtype-subtract-complex", _sub(lambda p: p.science.image.astype(complex)),
     InvalidInputError, r"image: expected a real numeric array, got dtype complex128"),
    ("dtype-subtract-str", _sub(lambda p: np.full(SHAPE, "a")),
     InvalidInputError, r"image: expected a real numeric array, got dtype <U1"),
    ("dtype-subtract-bool", _sub(lambda p: p.science.image > 100),
     InvalidInputError, r"image: expected a real numeric array, got dtype bool"),
    ("dtype-subtract-ragged", _sub(lambda p: [[1.0, 2.0], [3.0]]),
     InvalidInputError, r"source: cannot make a 2-D array of it"),
    ("dtype-MaskedImage-object", _plain(lambda p, t: pm.MaskedImage(p.science.image.astype(object))),
     InvalidInputError, r"image: expected a real numeric array, got dtype object"),
    ("dtype-MaskedImage-ragged", _plain(lambda p, t: pm.MaskedImage([[1.0, 2.0], [3.0]])),
     InvalidInputError, r"image: cannot make a 2-D array of it"),
    ("dtype-MaskedImage-mask-float",
     _plain(lambda p, t: pm.MaskedImage(p.science.image, mask=np.zeros(SHAPE))),
     InvalidInputError, r"mask: expected an integer array, got dtype float64"),
    ("dtype-MaskedImage-mask-wide",
     _plain(lambda p, t: pm.MaskedImage(p.science.image, mask=np.full(SHAPE, 2**40, np.int64))),
     InvalidInputError, r"mask: values must fit in 32 bits"),
    ("dtype-readImage-complex", _plain(lambda p, t: pmio.readImage(np.ones((9, 9), complex))),
     InvalidInputError, r"expected a real numeric array, got dtype complex128"),
    ("dtype-subtractMaskedImages-array", _task("subtractMaskedImages", lambda p: p.template.image, lambda p: p.science),
     InvalidInputError, r"templateMaskedImage: expected a MaskedImage, got ndarray"),
    ("dtype-matchMaskedImages-array", _task("matchMaskedImages", lambda p: p.template, lambda p: p.science.image),
     InvalidInputError, r"scienceMaskedImage: expected a MaskedImage, got ndarray"),
    ("dtype-convolve-image", _plain(lambda p, t: pm.convolve(p.science.image, pm.FixedKernel(KERNEL5))),
     InvalidInputError, r"maskedImage: expected a psfmatch.MaskedImage, got ndarray"),
    ("dtype-convolve-kernel", _plain(lambda p, t: pm.convolve(p.science, KERNEL5)),
     InvalidInputError, r"kernel: expected a FixedKernel or LinearCombinationKernel, got ndarray"),
    ("dtype-KernelCandidate-array", _plain(lambda p, t: pm.KernelCandidate(50, 50, _stamps(p)[0].image, _stamps(p)[1], pm.PsfMatchConfigAL())),
     InvalidInputError, r"templateMaskedImage: expected a MaskedImage, got ndarray"),
    ("dtype-KernelCandidate-config", _plain(lambda p, t: pm.KernelCandidate(50, 50, *_stamps(p), "AL")),
     InvalidInputError, r"config: expected a PsfMatchConfig or KernelControl, got str"),
    ("dtype-makeAlardLuptonBasisList", _plain(lambda p, t: pm.makeAlardLuptonBasisList(5, 1, ["wide"], [2])),
     InvalidInputError, r"makeAlardLuptonBasisList: sigGauss must be numbers"),
    ("dtype-makeDeltaFunctionBasisList", _plain(lambda p, t: pm.makeDeltaFunctionBasisList(5.5, 5)),
     InvalidInputError, r"makeDeltaFunctionBasisList: width and height must be integers"),
    # -- wrong number of dimensions ------------------------------------------------------------
    ("ndim-subtract-3d", _sub(lambda p: p.science.image[None]),
     InvalidInputError, r"image: expected a 2-D array, got 3 dimensions \(1, 128, 128\)"),
    ("ndim-subtract-1d", _sub(lambda p: p.science.image.ravel()),
     InvalidInputError, r"image: expected a 2-D array, got 1 dimensions \(16384,\)"),
    ("ndim-subtract-variance", _sub(sci, scienceVariance=lambda p: p.science.variance[None]),
     InvalidInputError, r"variance: .*2-D|variance: shape \(1, 128, 128\) differs"),
    ("ndim-MaskedImage-scalar", _plain(lambda p, t: pm.MaskedImage(3.0)),
     InvalidInputError, r"image: expected a 2-D array, got 0 dimensions"),
    # -- shape mismatch: boxes on one parent grid (xy0), the template placed on the science
    # box (tests/test_placement.py); too little of it, or origins the stars contradict, fail --
    ("shape-subtract", _sub(sci, lambda p: p.template.image[:, :10]),
     pm.TemplateCoverageError, r"the template covers 7\.81% of the science image .* less than requiredTemplateFraction = 0\.1"),
    ("shape-subtract-mask", _sub(sci, scienceMask=lambda p: np.zeros((3, 3), np.int32)),
     InvalidInputError, r"mask: shape \(3, 3\) differs from the image's \(128, 128\)"),
    ("shape-subtractMaskedImages", _task("subtractMaskedImages", lambda p: p.template.subimage(pm.Box2I((0, 0), (10, 128))), lambda p: p.science),
     pm.TemplateCoverageError, r"the template covers 7\.81% of the science image"),
    ("shape-matchMaskedImages-origin", _task("matchMaskedImages", lambda p: pm.MaskedImage(p.template.image, p.template.mask, p.template.variance, xy0=(5, 0)), lambda p: p.science),
     pm.OriginMismatchError, r"origins and their stars disagree: .*template's pixel \(0, 0\) lies on the science image's pixel \(5, 0\), but .* on pixel \(0\.0, 0\.0\).*ignoreOrigins=True"),
    ("shape-MaskedImage-variance", _plain(lambda p, t: pm.MaskedImage(p.science.image, variance=np.ones((3, 3)))),
     InvalidInputError, r"variance: shape \(3, 3\) differs from the image's \(128, 128\)"),
    ("shape-KernelCandidate", _plain(lambda p, t: pm.KernelCandidate(50, 50, _stamps(p)[0], _stamps(p, 19)[1], pm.PsfMatchConfigAL())),
     InvalidInputError, r"stamps differ in shape: template \(21, 21\), science \(19, 19\)"),
    # -- NaN or inf outside the mask -----------------------------------------------------------
    ("nan-subtractMaskedImages", _task("subtractMaskedImages", lambda p: p.template, _masked(nanSci)),
     InvalidInputError, r"scienceMaskedImage: 1 unmasked pixel\(s\) are NaN or infinite, the first at \(x, y\) = \(60, 50\)"),
    ("inf-matchMaskedImages", _task("matchMaskedImages", lambda p: p.template, _masked(infSci)),
     InvalidInputError, r"scienceMaskedImage: 1 unmasked pixel\(s\) are NaN or infinite, the first at \(x, y\) = \(60, 50\)"),
    ("nan-subtract-MaskedImage", _sub(_masked(nanSci)),
     InvalidInputError, r"scienceMaskedImage: 1 unmasked pixel\(s\) are NaN or infinite"),
    ("nan-variance-subtractMaskedImages", _task("subtractMaskedImages", lambda p: pm.MaskedImage(p.template.image, p.template.mask, _with(p.template.variance, 7, 9, np.nan)), lambda p: p.science),
     InvalidInputError, r"templateMaskedImage: 1 unmasked pixel\(s\) are NaN or infinite, the first at \(x, y\) = \(9, 7\)"),
    ("nan-convolve", _plain(lambda p, t: pm.convolve(_masked(nanSci)(p), pm.FixedKernel(KERNEL5))),
     InvalidInputError, r"maskedImage: 1 unmasked pixel\(s\) are NaN or infinite, the first at \(x, y\) = \(60, 50\)"),
    ("nan-KernelCandidate", _plain(lambda p, t: pm.KernelCandidate(50, 50, pm.MaskedImage(np.full((21, 21), np.nan)), _stamps(p)[1], pm.PsfMatchConfigAL())),
     InvalidInputError, r"templateMaskedImage: 441 pixel\(s\) are NaN or infinite, the first at \(x, y\) = \(0, 0\); every pixel must be finite, masked or not"),
    # -- everything masked ---------------------------------------------------------------------
    ("masked-subtract", _sub(sci, scienceMask=allBad, scienceVariance=lambda p: p.science.variance),
     InvalidInputError, r"every pixel is masked in the template or the science image"),
    ("masked-subtract-estimate", _sub(sci, scienceMask=allBad),
     InvalidInputError, r"cannot estimate a variance: only 0 unmasked finite pixels"),
    ("masked-subtractMaskedImages", _task("subtractMaskedImages", lambda p: p.template, _masked(sci, allBad)),
     InvalidInputError, r"every pixel is masked in the template or the science image"),
    # -- zero or negative variance -------------------------------------------------------------
    ("zerovar-subtract", _sub(sci, scienceVariance=lambda p: np.zeros(SHAPE, np.float32), templateVariance=lambda p: p.template.variance),
     InvalidInputError, r"scienceMaskedImage: the variance is 0 at 16384 unmasked pixel\(s\), the first at \(x, y\) = \(0, 0\)"),
    ("zerovar-subtractMaskedImages", _task("subtractMaskedImages", lambda p: p.template, lambda p: pm.MaskedImage(p.science.image, p.science.mask, _with(p.science.variance, 64, 70, 0.0))),
     InvalidInputError, r"scienceMaskedImage: the variance is 0 at 1 unmasked pixel\(s\), the first at \(x, y\) = \(70, 64\)"),
    # A constant that is not finite (was: "every pixel is masked …; nothing to match").
    ("nanvar-subtract-constant", _sub(sci, scienceVariance=float("nan")),
     InvalidInputError, r"variance: a constant variance must be finite, got nan"),
    ("infvar-subtract-constant", _sub(sci, templateVariance=np.inf),
     InvalidInputError, r"variance: a constant variance must be finite, got inf"),
    ("nansigma-readImage-constant", _plain(lambda p, t: pmio.readImage(p.science.image, sigma=float("nan"))),
     InvalidInputError, r"sigma: a constant sigma must be finite, got nan"),
    ("negvar-subtract", _sub(sci, scienceVariance=lambda p: _with(p.science.variance, 5, 6, -1.0)),
     InvalidInputError, r"variance: 1 pixels have a negative variance \(minimum -1\)"),
    ("negvar-subtractMaskedImages", _task("subtractMaskedImages", lambda p: pm.MaskedImage(p.template.image, p.template.mask, _with(p.template.variance, 5, 6, -1.0)), lambda p: p.science),
     InvalidInputError, r"templateMaskedImage: the variance is negative at \(x, y\) = \(6, 5\)"),
    ("negvar-readImage", _plain(lambda p, t: pmio.readImage(p.science.image, sigma=-np.ones(SHAPE))),
     InvalidInputError, r"sigma: 16384 negative values"),
    # -- even or oversized kernel ------------------------------------------------------------
    ("evenkernel-subtract", _sub(sci, config=_config(**{"active.kernelSize": 20, "active.scaleByFwhm": False})),
     InvalidInputError, r"config: .*kernelSize.* failed validation: kernelSize must be a positive odd size in pixels; got 20"),
    ("evenkernel-ImagePsfMatchTask", _plain(lambda p, t: pm.ImagePsfMatchTask(config=_config(**{"active.kernelSize": 20}))),
     InvalidInputError, r"config: .*kernelSize must be a positive odd size in pixels; got 20"),
    ("evenkernel-FixedKernel", _plain(lambda p, t: pm.convolve(p.science, pm.FixedKernel(np.ones((4, 4))))),
     InvalidInputError, r"kernel dimensions must be odd, got 4x4"),
    ("evenkernel-makeDeltaFunctionBasisList", _plain(lambda p, t: pm.makeDeltaFunctionBasisList(6, 5)),
     InvalidInputError, r"kernel dimensions must be odd, got 6x5"),
    ("badsize-makeAlardLuptonBasisList", _plain(lambda p, t: pm.makeAlardLuptonBasisList(0, 1, [1.0], [2])),
     InvalidInputError, r"makeAlardLuptonBasisList: halfWidth must be >= 1, got 0"),
    ("bigkernel-subtract", _sub(sci, config=_config(**{"active.kernelSize": 201, "active.scaleByFwhm": False})),
     InvalidInputError, r"the 128 x 128 image is too small for the kernel of 201 x 201 pixels: a kernel source's stamp is 403 x 403"),
    ("bigkernel-subtractMaskedImages", _task("subtractMaskedImages", lambda p: _corner(p.template, 60), lambda p: _corner(p.science, 60), candidateList=[(30, 30)] * 3, templateFwhmPix=4.0, scienceFwhmPix=12.0),
     InvalidInputError, r"the 60 x 60 image is too small for the kernel of 35 x 35 pixels: a kernel source's stamp is 71 x 71"),
    ("bigkernel-makeDeltaFunctionBasisList", _plain(lambda p, t: pm.makeDeltaFunctionBasisList(1001, 1001)),
     InvalidInputError, r"makeDeltaFunctionBasisList: 1002001 kernels of 1001 x 1001 pixels would need 7480.4 GiB"),
    ("bigkernel-makeAlardLuptonBasisList", _plain(lambda p, t: pm.makeAlardLuptonBasisList(20000, 1, [2.0], [0])),
     InvalidInputError, r"makeAlardLuptonBasisList: 1 kernels of 40001 x 40001 pixels would need 11.9 GiB"),
    # -- image smaller than the kernel -------------------------------------------------------
    ("small-subtract", _sub(lambda p: p.science.image[:30, :30], lambda p: p.template.image[:30, :30]),
     InvalidInputError, r"the 30 x 30 image is too small for the smallest kernel the config allows of 21 x 21 pixels"),
    ("small-subtract-empty", _sub(lambda p: p.science.image[:0, :0], lambda p: p.template.image[:0, :0]),
     InvalidInputError, r"image: the array is empty \(shape \(0, 0\)\)"),
    ("small-convolve", _plain(lambda p, t: pm.convolve(p.science.subimage(pm.Box2I((0, 0), (3, 4))), pm.FixedKernel(KERNEL5))),
     InvalidInputError, r"image of 3x4 pixels is smaller than the 5x5 kernel"),
    # -- stars ---------------------------------------------------------------------------------
    ("nostars-subtract", _sub(lambda p: np.random.default_rng(1).normal(100.0, 3.0, SHAPE), lambda p: np.random.default_rng(2).normal(100.0, 3.0, SHAPE)),
     InsufficientKernelSourcesError, r"found 0 usable kernel sources but 3 are required: nDetectedScience=0\. "),
    ("onestar-subtract", _sub(lambda p: _onePair().science.image, lambda p: _onePair().template.image),
     InsufficientKernelSourcesError, r"found 1 usable kernel sources but 3 are required: nDetectedScience=1, nRejectedBlended=0"),
    ("saturated-subtract", _sub(lambda p: _saturatedPair().science, lambda p: _saturatedPair().template),
     InsufficientKernelSourcesError, r"found 0 usable kernel sources but 3 are required: .*masked pixels, left out of detection: template SAT=[1-9][0-9]*, science SAT=[1-9]"),
    # -- candidate lists -----------------------------------------------------------------------
    ("candidates-outside", _sub(sci, candidates=[(500.0, 500.0), (64.0, 64.0)]),
     InvalidInputError, r"candidateList: 1 position\(s\) lie outside the image .*, the first at \(x, y\) = \(500.0, 500.0\)"),
    ("candidates-outside-negative", _task("subtractMaskedImages", lambda p: p.template, lambda p: p.science, candidateList=[(-3.0, 64.0)]),
     InvalidInputError, r"candidateList: 1 position\(s\) lie outside the image"),
    ("candidates-nan", _sub(sci, candidates=[(np.nan, 64.0)]),
     InvalidInputError, r"candidateList: positions must be finite"),
    ("candidates-shape", _sub(sci, candidates=[1.0, 2.0, 3.0]),
     InvalidInputError, r"candidateList: expected \(x, y\) pairs or a table with x and y columns, got an array of shape \(3,\)"),
    ("candidates-columns", _sub(sci, candidates={"ra": [1.0], "dec": [2.0]}),
     InvalidInputError, r"candidateList: a table of positions needs x and y columns; missing 'x'"),
    # A masked entry's hidden value was used as a position (was: "could not measure a
    # positive FWHM"); a string column escaped as numpy's ValueError.
    ("candidates-masked-table", _sub(sci, candidates=Table({"x": MaskedColumn([40.0, 60.0, 80.0], mask=[False, True, False]), "y": [40.0, 60.0, 80.0]})),
     InvalidInputError, r"candidateList: 1 position\(s\) are masked \(missing\), the first at row 1"),
    ("candidates-masked-array", _sub(sci, candidates=np.ma.masked_array([[40.0, 40.0], [60.0, 60.0]], mask=[[0, 0], [0, 1]])),
     InvalidInputError, r"candidateList: 1 position\(s\) are masked \(missing\), the first at row 1"),
    ("candidates-str-column", _sub(sci, candidates=Table({"x": ["40", "b"], "y": [40.0, 60.0]})),
     InvalidInputError, r"candidateList: x and y must be numbers: could not convert string to float"),
    ("candidates-empty", _sub(sci, candidates=[]),
     InsufficientKernelSourcesError, r"found 0 usable kernel sources but 3 are required: candidateList is empty"),
    ("candidates-edge", _sub(sci, candidates=[(3.0, 3.0)] * 3, scienceFwhm=2.0, templateFwhm=1.5),
     InsufficientKernelSourcesError, r"found 0 usable kernel sources .*of the 3 given positions 3 are closer than 21 pixels \(the stamp half-width\) to the edge and 0 have bad mask bits"),
    # -- files ---------------------------------------------------------------------------------
    ("missing-subtract", _sub(lambda p: p.dir / "nowhere.fits"),
     InputFileNotFoundError, r"input file '.*nowhere.fits' does not exist"),
    # A device as an input (was: /dev/zero read as an endless FITS header, a hang; /dev/null
    # "corrupt FITS"; as a PSF, "no such file").
    # An origin of three numbers was taken as its first two; a bool as 0 or 1.
    ("xy0-MaskedImage-three", _plain(lambda p, t: pm.MaskedImage(p.science.image, xy0=(0, 0, 0))),
     InvalidInputError, r"xy0: expected two integers, got \(0, 0, 0\)"),
    ("xy0-MaskedImage-bool", _plain(lambda p, t: pm.MaskedImage(p.science.image, xy0=(True, 0))),
     InvalidInputError, r"xy0: expected two integers, got \(True, 0\)"),
    ("special-readImage", _plain(lambda p, t: pmio.readImage("/dev/null")),
     InvalidInputError, r"input '/dev/null' is not a regular file \(a device or pipe\)"),
    ("special-subtract-variance", _sub(sci, scienceVariance="/dev/null"),
     InvalidInputError, r"input '/dev/null' is not a regular file"),
    ("special-subtract-psf", _sub(sci, sciencePsf="/dev/null"),
     InvalidInputError, r"sciencePsf: '/dev/null' is not a regular file"),
    ("missing-readImage", _plain(lambda p, t: pmio.readImage(p.dir / "nowhere.fits")),
     InputFileNotFoundError, r"input file '.*nowhere.fits' does not exist"),
    ("missing-readMaskedImage", _plain(lambda p, t: pmio.readMaskedImage(p.dir / "nowhere.fits")),
     InputFileNotFoundError, r"input file '.*nowhere.fits' does not exist"),
    ("corrupt-subtract", _sub(lambda p: p.corruptFits),
     InvalidInputError, r"'.*corrupt.fits' is a damaged FITS file"),
    ("corrupt-readMaskedImage", _plain(lambda p, t: pmio.readMaskedImage(p.truncatedFits), lambda p: p.truncatedFits),
     InvalidInputError, r"'.*truncated.fits' is a damaged FITS file"),
    ("corrupt-readImage-text", _plain(lambda p, t: pmio.readImage(_text(t)), lambda p: p.corruptFits),
     InvalidInputError, r"cannot read '.*notfits.fits' as FITS"),
    ("unwritable-writeMaskedImage", _plain(lambda p, t: pmio.writeMaskedImage(t / "nowhere" / "d.fits", p.science), lambda p: p.science),
     PsfMatchIOError, r"cannot write '.*nowhere/d.fits': '.*nowhere' does not exist"),
    ("unwritable-writeMaskedImage-dir", _plain(lambda p, t: pmio.writeMaskedImage(t, p.science)),
     PsfMatchIOError, r"cannot write '.*': it is a directory"),
    ("exists-writeMaskedImage", _plain(lambda p, t: pmio.writeMaskedImage(p.scienceFits, p.science), lambda p: p.scienceFits),
     OutputExistsError, r"output file '.*science.fits' exists; pass overwrite=True to replace it"),
    # -- configs -------------------------------------------------------------------------------
    ("config-subtract", _sub(sci, config=_config(**{"selection.maxSnr": 5.0})),
     InvalidInputError, r"config: .*maxSnr \(5.0\) must exceed minSnr \(10.0\)"),
    ("config-subtract-type", _sub(sci, config=pm.PsfMatchConfigAL()),
     InvalidInputError, r"config: expected an ImagePsfMatchConfig, got PsfMatchConfigAL"),
    ("config-subtract-mode", _sub(sci, mode="sideways"),
     InvalidInputError, r"mode: 'sideways' is not allowed"),
    ("config-subtract-order", _sub(sci, spatialKernelOrder=-1),
     InvalidInputError, r"spatialKernelOrder: -1 is not allowed: .*outside of valid range"),
    ("config-subtract-order-bool", _sub(sci, spatialKernelOrder=True),
     InvalidInputError, r"spatialKernelOrder: expected an integer order, got True"),
    # -- given PSF sizes (was: NaN a bare ValueError from the detection filter; -2 "could not
    # measure"; 0 silently "measure it"; "3" taken as truthy, a poor fit) ---------------------
    ("fwhm-subtract-nan", _sub(sci, scienceFwhm=float("nan")),
     InvalidInputError, r"scienceFwhm: expected a FWHM in pixels, a finite number > 0, got nan"),
    ("fwhm-subtract-negative", _sub(sci, templateFwhm=-2.0),
     InvalidInputError, r"templateFwhm: expected a FWHM in pixels, a finite number > 0, got -2.0"),
    ("fwhm-subtract-zero", _sub(sci, scienceFwhm=0),
     InvalidInputError, r"scienceFwhm: .* got 0.0; leave it out \(None\) to have it measured"),
    ("fwhm-subtract-str", _sub(sci, scienceFwhm="3"),
     InvalidInputError, r"scienceFwhm: expected a FWHM in pixels .* got str '3'"),
    ("fwhm-subtractMaskedImages-inf", _task("subtractMaskedImages", lambda p: p.template, lambda p: p.science, scienceFwhmPix=np.inf),
     InvalidInputError, r"scienceFwhmPix: expected a FWHM in pixels, a finite number > 0, got inf"),
    ("config-ImagePsfMatchTask", _plain(lambda p, t: pm.ImagePsfMatchTask(config=_config(**{"active.kernelSizeMin": 41}))),
     InvalidInputError, r"config: .*kernelSizeMin \(41\) must not exceed kernelSizeMax \(35\)"),
]
# fmt: on


_CACHE: dict[str, Any] = {}


def _onePair() -> Any:
    if "one" not in _CACHE:
        _CACHE["one"] = simulatePair(SHAPE, nStars=1, seed=3, nTransients=0)
    return _CACHE["one"]


def _saturatedPair() -> Any:
    # Saturating at 300 counts flags the core of every star bright enough to be a kernel
    # source (template sky 100, science sky ~175) and no sky pixel.
    if "sat" not in _CACHE:
        _CACHE["sat"] = simulatePair(SHAPE, nStars=20, seed=3, nTransients=0, saturation=300.0)
    return _CACHE["sat"]


def _corner(mi: pm.MaskedImage, size: int) -> pm.MaskedImage:
    return mi.subimage(pm.Box2I((0, 0), (size, size)))


def _text(tmp: Path) -> Path:
    path = tmp / "notfits.fits"
    path.write_text("not a FITS file")
    return path


@pytest.mark.parametrize(
    ("make", "error", "match"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_bad_input_gets_a_named_error(
    pair: Pair, tmp_path: Path, make: Any, error: type, match: str
) -> None:
    call, watched = make(pair, tmp_path)
    watched = [*watched, pair.science, pair.template, pair.scienceFits, pair.templateFits]
    before = _snapshot(watched)
    with pytest.raises(error, match=match) as info:
        call()
    assert isinstance(info.value, PsfMatchError)
    _assertUnchanged(watched, before)


def test_ok_baseline(pair: Pair) -> None:
    """The unmodified pair subtracts: the failures above are the bad input's doing."""
    result = pm.subtract(pair.science, pair.template)
    assert result.metadata["nCandidatesGood"] >= 3
    sat = _saturatedPair()
    # The saturated pair has sky pixels enough; only its stars are gone.
    assert np.mean((sat.science.mask & Mask.getPlaneBitMask("SAT")) != 0) < 0.05


# -- accepted layouts: non-contiguous, read-only, big-endian ---------------------------------


def _layouts(a: np.ndarray) -> dict[str, np.ndarray]:
    readOnly = a.copy()
    readOnly.flags.writeable = False
    return {
        "fortran": np.asfortranarray(a),
        "strided": np.repeat(a, 2, axis=1)[:, ::2],
        "readonly": readOnly,
        "bigendian": a.astype(a.dtype.newbyteorder(">")),
    }


@pytest.mark.parametrize("layout", ["fortran", "strided", "readonly", "bigendian"])
def test_layouts_are_accepted_by_subtract(pair: Pair, layout: str) -> None:
    reference = pm.subtract(
        pair.science.image,
        pair.template.image,
        scienceVariance=pair.science.variance,
        templateVariance=pair.template.variance,
    )
    inputs = [
        _layouts(a)[layout]
        for a in (pair.science.image, pair.template.image, pair.science.variance)
    ]
    before = _snapshot(inputs)
    result = pm.subtract(
        inputs[0], inputs[1], scienceVariance=inputs[2], templateVariance=pair.template.variance
    )
    _assertUnchanged(inputs, before)
    # The same numbers in another layout are the same input: the answer is bit-identical.
    np.testing.assert_array_equal(result.image, reference.image)
    np.testing.assert_array_equal(result.variance, reference.variance)
    np.testing.assert_array_equal(result.mask, reference.mask)


@pytest.mark.parametrize("layout", ["fortran", "strided", "readonly", "bigendian"])
def test_layouts_are_accepted_by_MaskedImage_and_convolve(pair: Pair, layout: str) -> None:
    image = _layouts(pair.science.image)[layout]
    variance = _layouts(pair.science.variance)[layout]
    mask = _layouts(pair.science.mask)[layout]
    before = _snapshot([image, variance, mask])
    mi = pm.MaskedImage(image, mask, variance)
    assert mi.image.flags.c_contiguous and mi.image.dtype.isnative
    kernel = pm.FixedKernel(KERNEL5)
    out = pm.convolve(mi, kernel)
    ref = pm.convolve(pair.science, kernel)
    np.testing.assert_array_equal(out.image, ref.image)
    np.testing.assert_array_equal(out.variance, ref.variance)
    np.testing.assert_array_equal(out.mask, ref.mask)
    readBack = pmio.readImage(image, variance=variance, mask=mask)
    np.testing.assert_array_equal(readBack.image, pair.science.image)
    _assertUnchanged([image, variance, mask], before)


# -- documented fallbacks: a warning and a metadata entry ------------------------------------


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_nonfinite_array_pixels_are_flagged_with_a_warning(
    pair: Pair, caplog: pytest.LogCaptureFixture, value: float
) -> None:
    science = _with(pair.science.image, 50, 60, value)
    before = _snapshot([science])
    with caplog.at_level(logging.WARNING, logger="psfmatch"):
        result = pm.subtract(
            science,
            pair.template.image,
            scienceVariance=pair.science.variance,
            templateVariance=pair.template.variance,
        )
    _assertUnchanged([science], before)
    assert result.metadata["scienceNonFinitePixelsFlagged"] == 1
    assert result.metadata["templateNonFinitePixelsFlagged"] == 0
    assert any(
        "science: 1 pixel(s) with a NaN or infinite" in r.getMessage() for r in caplog.records
    )
    assert result.mask[50, 60] & Mask.getPlaneBitMask("NO_DATA")
    # Nothing unflagged is NaN: every non-finite output pixel carries a bit.
    assert np.all(np.isfinite(result.image) | (result.mask != 0))


def test_few_stars_for_the_spatial_order(pair: Pair, caplog: pytest.LogCaptureFixture) -> None:
    # The 128² pair leaves ~5 kernel sources whose stamps fit; spatial order 2 has 6 terms.
    with caplog.at_level(logging.INFO, logger="psfmatch"):
        result = pm.subtract(pair.science, pair.template)
    md = result.metadata
    assert 0 < md["nCandidatesGood"] < 6
    # The default orders are lowered to what these stars carry (§5.8: more than twice as many
    # stars as terms; order 1 has 3), recorded and said once.
    assert (md["spatialKernelOrderUsed"], md["spatialBgOrderUsed"]) == (0, 0)
    assert (
        "kernel stars" in md["spatialOrderReason"]
        or "stars in the spatial fit" in (md["spatialOrderReason"])
    )
    lowered = [r for r in caplog.records if "Spatial orders lowered" in r.getMessage()]
    assert len(lowered) == 1 and lowered[0].levelno == logging.INFO
    assert md["spatialKernelConstraint"] in ("well", "poorly")
    usable = (result.mask & Mask.getPlaneBitMask(["EDGE", "NO_DATA"])) == 0
    assert usable.any() and np.isfinite(result.image[usable]).all()
    assert (result.variance[usable] > 0).all()
    # Set explicitly, the order is kept; with fewer stars than its terms it cannot be
    # determined, and that is a named error with the numbers.
    with pytest.raises(
        pm.SpatialOrderError, match=r"spatialKernelOrder = 2 has 6 spatial terms, but at most"
    ):
        pm.subtract(pair.science, pair.template, spatialKernelOrder=2)


def test_zero_template_variance_is_accepted(pair: Pair, caplog: pytest.LogCaptureFixture) -> None:
    """A noiseless template (the shared LSST template has zero variance on most pixels) is
    fine when it is the convolved image; the variance rescaling says it was not applied."""
    template = pm.MaskedImage(pair.template.image, pair.template.mask, np.zeros(SHAPE, np.float32))
    with caplog.at_level(logging.WARNING, logger="psfmatch"):
        result = pm.subtract(pair.science, template, mode="convolveTemplate")
    assert result.metadata["scaleTemplateVarianceApplied"] is False
    assert any("Template variance not rescaled" in r.getMessage() for r in caplog.records)
    usable = (result.mask & Mask.getPlaneBitMask(["EDGE", "NO_DATA"])) == 0
    assert np.isfinite(result.image[usable]).all() and (result.variance[usable] > 0).all()


def test_writeFits_refuses_before_writing_either_file(pair: Pair, tmp_path: Path) -> None:
    result = pm.subtract(pair.science, pair.template)
    difference, matched = tmp_path / "d.fits", tmp_path / "m.fits"
    matched.write_bytes(b"precious")
    with pytest.raises(OutputExistsError, match=r"m.fits' exists; pass overwrite=True"):
        result.writeFits(difference, matchedPath=matched)
    assert not difference.exists()
    assert matched.read_bytes() == b"precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.fits"]


# -- the command line ------------------------------------------------------------------------

# fmt: off
CLI_CASES = [
    ("missing", {"--science": "{dir}/nowhere.fits"}, [], 1, r"input file '.*nowhere.fits' does not exist"),
    ("corrupt", {"--science": "{corrupt}"}, [], 1, r"corrupt.fits' is a damaged FITS file"),
    ("unwritable", {"--output": "{tmp}/no/d.fits"}, [], 1, r"output directory '.*/no' does not exist"),
    ("exists", {"--output": "{existing}"}, [], 1, r"exists.*--overwrite"),
    ("input-as-output", {"--output": "{science}"}, ["--overwrite"], 2, r"is also an input"),
    ("config", {}, ["--set", "selection.maxSnr=1"], 2, r"invalid configuration: .*maxSnr \(1.0\)"),
    ("order", {}, ["-ko", "-1"], 2, r"-ko -1: .*outside of valid range"),
]
# fmt: on


@pytest.mark.parametrize(
    ("options", "extra", "status", "message"),
    [c[1:] for c in CLI_CASES],
    ids=[c[0] for c in CLI_CASES],
)
def test_command_line_answers(
    pair: Pair,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    options: dict[str, str],
    extra: list[str],
    status: int,
    message: str,
) -> None:
    existing = tmp_path / "existing.fits"
    existing.write_bytes(b"precious")
    names = {
        "dir": pair.dir,
        "corrupt": pair.corruptFits,
        "tmp": tmp_path,
        "existing": existing,
        "science": pair.scienceFits,
    }
    args = {
        "--science": str(pair.scienceFits),
        "--template": str(pair.templateFits),
        "--output": str(tmp_path / "d.fits"),
    }
    args.update({k: v.format(**names) for k, v in options.items()})
    watched = [pair.scienceFits, pair.templateFits, existing]
    before = _snapshot(watched)
    code = main(["subtract", *[x for kv in args.items() for x in kv], *extra, "-q"])
    _, err = capsys.readouterr()
    assert code == status
    assert err.startswith("psfmatch: error: ") and "Traceback" not in err
    assert re.search(message, err), err
    _assertUnchanged(watched, before)
    assert not (tmp_path / "d.fits").exists()


def test_config_validate_itself_raises_pex_config_errors() -> None:
    """A config's own validate() is pex_config's: FieldValidationError, a ValueError. Every
    psfmatch entry point that takes a config turns it into an InvalidInputError (above)."""
    config = _config(**{"active.kernelSize": 20})
    with pytest.raises(pexConfig.FieldValidationError, match="kernelSize must be a positive odd"):
        config.validate()


@pytest.mark.parametrize("existing", [False, True])
def test_writeFits_failure_leaves_no_half_pair(
    pair: Pair, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, existing: bool
) -> None:
    """A failure while writing the convolved image leaves no partial file, no temporary, and
    the difference image as it was (none, or the old one)."""
    from astropy.io import fits

    result = pm.subtract(pair.science, pair.template)
    difference, matched = tmp_path / "d.fits", tmp_path / "m.fits"
    if existing:
        difference.write_bytes(b"old")
    original = fits.HDUList.writeto
    calls = {"n": 0}

    def failSecond(self: Any, fileobj: Any, **kwargs: Any) -> None:
        calls["n"] += 1
        if calls["n"] == 2:  # the convolved image: write part of it, then fail
            original(fits.HDUList(self[:2]), fileobj, **kwargs)
            raise OSError(28, "No space left on device")
        original(self, fileobj, **kwargs)

    monkeypatch.setattr(fits.HDUList, "writeto", failSecond)
    with pytest.raises(PsfMatchIOError, match=r"cannot write '.*m.fits': No space left"):
        result.writeFits(difference, matchedPath=matched, overwrite=existing)
    monkeypatch.undo()
    names = sorted(p.name for p in tmp_path.iterdir())
    if existing:
        # The pair is one unit: the old difference image stays as it was (it used to be
        # replaced, leaving a new difference beside an old or missing convolved image).
        assert names == ["d.fits"]
        assert difference.read_bytes() == b"old"
    else:
        assert names == []
