# SPDX-License-Identifier: BSD-3-Clause
"""Tests of the ``psfmatch`` command line (psfmatch.cli), run in-process through `main`."""

from __future__ import annotations

import argparse
import hashlib
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from astropy.io import fits

import psfmatch
from helpers import simulatedFitsPair
from psfmatch import cli
from psfmatch import io as pmio
from psfmatch.cli import hotpants, main, parser, usage  # noqa: F401 (cli.parser, cli.usage)
from psfmatch.image import Mask

SHAPE = (320, 320)


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A small simulated pair as LSST-layout FITS files, with the digests of their bytes."""
    directory = tmp_path_factory.mktemp("pair")
    pair = simulatedFitsPair(directory, SHAPE, nStars=100, seed=7, nTransients=3, transientFlux=2e4)
    pair["digests"] = {p: _digest(p) for p in (pair["science"], pair["template"])}
    return pair


@pytest.fixture(autouse=True)
def _inputsUntouched(request: pytest.FixtureRequest) -> Any:
    """Every test that uses the pair checks that the input files' bytes did not change."""
    yield
    if "pair" in request.fixturenames:
        pair = request.getfixturevalue("pair")
        for path, digest in pair["digests"].items():
            assert _digest(path) == digest, f"{path} was modified"


def _run(capsys: pytest.CaptureFixture[str], *argv: Any) -> tuple[int, str, str]:
    status = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return status, out, err


def _inputs(pair: dict[str, Any]) -> list[Any]:
    return ["subtract", "--science", pair["science"], "--template", pair["template"]]


@pytest.fixture(scope="module")
def longRun(pair: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One subtraction with long options, shared by the tests that compare against it."""
    directory = tmp_path_factory.mktemp("long")
    out, matched = directory / "d.fits", directory / "m.fits"
    status = main(
        [str(a) for a in _inputs(pair)]
        + ["--output", str(out), "--matched", str(matched)]
        + ["--mode", "convolveTemplate", "--kernel-half-width", "8"]
        + ["--kernel-order", "1", "--bg-order", "1", "-q"]
    )
    assert status == 0
    return {"difference": out, "matched": matched}


def _primary(path: Path) -> fits.Header:
    return fits.getheader(path, 0)


def test_long_options_and_hotpants_aliases_agree(
    pair: dict[str, Any], longRun: dict[str, Path], tmp_path: Path, capsys: Any
) -> None:
    out, matched = tmp_path / "d.fits", tmp_path / "m.fits"
    status, stdout, stderr = _run(
        capsys,
        "subtract",
        "-inim",
        pair["science"],
        "-tmplim",
        pair["template"],
        "-outim",
        out,
        "-oci",
        matched,
        "-c",
        "t",
        "-r",
        "8",
        "-ko",
        "1",
        "-bgo",
        "1",
    )
    assert status == 0, stderr
    assert "kernel sum" in stdout and str(out) in stdout
    # The same configuration, so the same pixels: the fit and convolution are deterministic.
    a = pmio.readMaskedImage(longRun["difference"])
    b = pmio.readMaskedImage(out)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.mask, b.mask)
    np.testing.assert_array_equal(a.variance, b.variance)
    np.testing.assert_array_equal(
        pmio.readMaskedImage(longRun["matched"]).image, pmio.readMaskedImage(matched).image
    )
    header = _primary(out)
    assert header["KO"] == 1
    assert header["BGO"] == 1
    assert header["CONVOL"] == "TEMPLATE"
    assert header["psfmatch.ALKernelSize"] == 17  # -r 8 honoured: scaleByFwhm turned off
    # The truth is 1.25; a 320 x 320 image pins the kernel sum to ~0.5 %, so 2 % is generous.
    np.testing.assert_allclose(header["KSUM"], pair["sim"].truth.fluxScale, rtol=0.02)
    with fits.open(out) as hdul:
        names = [hdu.name for hdu in hdul]
    assert names[1:] == [
        "IMAGE",
        "MASK",
        "VARIANCE",
        "KERNEL",
        "KERNEL_BASIS",
        "KERNEL_COEFFS",
        "BACKGROUND",
        "CANDIDATES",
    ]


def test_ngauss_hotpants_syntax(pair: dict[str, Any], tmp_path: Path, capsys: Any) -> None:
    out = tmp_path / "d.fits"
    status, _, stderr = _run(
        capsys,
        *_inputs(pair),
        "--output",
        out,
        "-ng",
        "2",
        "4",
        "1.0",
        "2",
        "2.5",
        "-ko",
        "0",
        "-q",
    )
    assert status == 0, stderr
    header = _primary(out)
    assert header["NGAUSS"] == 2
    # The widths were used as given (scaleByFwhm off), not derived from the FWHMs.
    assert header["psfmatch.ALBasisSigGauss[0]"] == 1.0
    assert header["psfmatch.ALBasisSigGauss[1]"] == 2.5
    assert header["psfmatch.ALBasisDegGauss[0]"] == 4

    status, _, stderr = _run(
        capsys, *_inputs(pair), "--output", tmp_path / "x.fits", "-ng", "2", "4", "1.0"
    )
    assert status == 2
    assert "expected N followed by N (degree, sigma) pairs" in stderr


def test_set_and_config_file_take_effect(pair: dict[str, Any], tmp_path: Path, capsys: Any) -> None:
    configFile = tmp_path / "overrides.py"
    configFile.write_text(
        "config.kernel.active.spatialKernelOrder = 0\n"
        "config.kernel.active.spatialBgOrder = 2\n"
        "config.selection.minSnr = 15.0\n"
    )
    out = tmp_path / "d.fits"
    status, _, stderr = _run(
        capsys,
        *_inputs(pair),
        "--output",
        out,
        "--config-file",
        configFile,
        # --set comes after the config file, so it wins for the background order.
        "--set",
        "kernel.active.spatialBgOrder=0",
        "config.doScaleVariance=false",
        "-q",
    )
    assert status == 0, stderr
    header = _primary(out)
    assert header["KO"] == 0  # from the config file
    assert header["BGO"] == 0  # --set over the config file
    assert "psfmatch.scaleScienceVarianceFactor" not in header  # doScaleVariance=false
    assert header["psfmatch.differenceUnits"] == "science"

    # A dedicated option wins over --set.
    out2 = tmp_path / "d2.fits"
    status, _, stderr = _run(
        capsys,
        *_inputs(pair),
        "--output",
        out2,
        "--set",
        "kernel.active.spatialKernelOrder=2",
        "--kernel-order",
        "1",
        "-q",
    )
    assert status == 0, stderr
    assert _primary(out2)["KO"] == 1


@pytest.mark.parametrize(
    ("assignment", "message"),
    [
        ("kernel.active.spatialKernelOrdr=1", "did you mean 'spatialKernelOrder'"),
        ("kernel.active.spatialKernelOrder=-1", "outside of valid range"),
        ("kernel.active.spatialKernelOrder=abc", "incorrect type"),
        ("nosuchgroup.x=1", "has no field 'nosuchgroup'"),
        ("kernel.name=XX", "Unknown key 'XX'"),
        ("kernel.active", "expected key=value"),
    ],
)
def test_bad_set_is_a_usage_error(
    pair: dict[str, Any], tmp_path: Path, capsys: Any, assignment: str, message: str
) -> None:
    out = tmp_path / "d.fits"
    status, stdout, stderr = _run(capsys, *_inputs(pair), "--output", out, "--set", assignment)
    assert status == 2
    assert stderr.startswith("psfmatch: error: ")
    assert message in stderr
    assert len(stderr.strip().splitlines()) == 1
    assert not out.exists()


def test_config_file_errors(pair: dict[str, Any], tmp_path: Path, capsys: Any) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("config.kernel.active.noSuchField = 3\n")
    status, _, stderr = _run(
        capsys, *_inputs(pair), "--output", tmp_path / "d.fits", "--config-file", bad
    )
    assert status == 2
    assert "bad.py" in stderr and "noSuchField" in stderr
    status, _, stderr = _run(
        capsys,
        *_inputs(pair),
        "--output",
        tmp_path / "d.fits",
        "--config-file",
        tmp_path / "missing.py",
    )
    assert status == 1
    assert "missing.py" in stderr and "does not exist" in stderr


def test_convolve_image(pair: dict[str, Any], tmp_path: Path, capsys: Any) -> None:
    out = tmp_path / "d.fits"
    status, stdout, stderr = _run(
        capsys, *_inputs(pair), "--output", out, "-c", "i", "-ko", "1", "-bgo", "1"
    )
    assert status == 0, stderr
    assert "convolved image : science image" in stdout
    header = _primary(out)
    assert header["CONVOL"] == "IMAGE"
    assert header["psfmatch.convolvedExposure"] == "Science"
    # Convolving the science image to the template's PSF needs a kernel of sum ~ 1/1.25: the
    # template's flux over the science image's (1.25 if the template had been convolved).
    # The science image is the broader one here, so this kernel deconvolves: on 320² with ~20
    # stars its sum scatters by 4 % rms from seed to seed (measured on 12 seeds), hence 10 %.
    np.testing.assert_allclose(header["KSUM"], 1.0 / pair["sim"].truth.fluxScale, rtol=0.1)


def test_normalize(
    pair: dict[str, Any], longRun: dict[str, Path], tmp_path: Path, capsys: Any
) -> None:
    native = pmio.readMaskedImage(longRun["difference"])
    nativeMatched = pmio.readMaskedImage(longRun["matched"])
    common = [*_inputs(pair), "--mode", "convolveTemplate", "-r", "8", "-ko", "1", "-bgo", "1"]
    out, matched = tmp_path / "t.fits", tmp_path / "tm.fits"
    status, stdout, stderr = _run(capsys, *common, "--output", out, "--matched", matched, "-n", "t")
    assert status == 0, stderr
    assert "template units" in stdout
    header = _primary(out)
    ksum = header["KSUM"]
    assert header["psfmatch.differenceUnits"] == "template"
    d = pmio.readMaskedImage(out)
    # float32 pixels rescaled once: a few units in the last place.
    np.testing.assert_allclose(d.image * ksum, native.image, rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(d.variance * ksum**2, native.variance, rtol=1e-5)
    np.testing.assert_array_equal(d.mask, native.mask)
    np.testing.assert_allclose(
        pmio.readMaskedImage(matched).image * ksum, nativeMatched.image, rtol=1e-5, atol=1e-3
    )
    # The statistics in the header follow the rescaled pixels.
    np.testing.assert_allclose(
        header["DSIG"] * ksum, _primary(longRun["difference"])["DSIG"], rtol=1e-4
    )

    # Convolving the template, the unconvolved image is the science image: nothing changes.
    out = tmp_path / "u.fits"
    status, stdout, stderr = _run(capsys, *common, "--output", out, "-n", "u", "-q")
    assert status == 0, stderr
    np.testing.assert_array_equal(pmio.readMaskedImage(out).image, native.image)
    assert _primary(out)["psfmatch.differenceUnits"] == "science"


def test_valid_data_thresholds_mask_pixels(
    pair: dict[str, Any], tmp_path: Path, capsys: Any
) -> None:
    sim = pair["sim"]
    science, template = sim.science.image, sim.template.image
    # Thresholds that catch the cores of the brightest stars and the deepest sky dips.
    iu = float(np.quantile(science, 0.9995))
    tu = float(np.quantile(template, 0.9995))
    il = float(np.quantile(science, 0.0002))
    out = tmp_path / "d.fits"
    status, _, stderr = _run(
        capsys,
        *_inputs(pair),
        "--output",
        out,
        "-iu",
        iu,
        "-tu",
        tu,
        "-il",
        il,
        "-ko",
        "1",
        "-q",
    )
    assert status == 0, stderr
    d = pmio.readMaskedImage(out)
    sat = Mask.getPlaneBitMask("SAT")
    noData = Mask.getPlaneBitMask(["BAD", "NO_DATA"])
    high = (science > iu) | (template > tu)
    low = science < il
    assert high.sum() > 10 and low.sum() > 5
    # The difference's mask is the science mask OR the (dilated) template mask.
    assert np.all(d.mask[high] & sat)
    assert np.all((d.mask[low] & noData) == noData)
    # Only those pixels (and the template's, grown by the kernel) carry SAT.
    assert not np.any(d.mask[(science <= iu) & ~_grow(template > tu, 12)] & sat)


def _grow(mask: np.ndarray, r: int) -> np.ndarray:
    grown = mask.copy()
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            grown |= np.roll(np.roll(mask, dy, axis=0), dx, axis=1)
    return grown


def test_gain_for_images_without_variance(
    pair: dict[str, Any], tmp_path: Path, capsys: Any
) -> None:
    sim = pair["sim"]
    science, template = tmp_path / "s.fits", tmp_path / "t.fits"
    fits.writeto(science, sim.science.image)  # plain images: the variance is estimated
    fits.writeto(template, sim.template.image)
    common = ["subtract", "--science", science, "--template", template, "-ko", "1", "-q"]
    status, _, stderr = _run(capsys, *common, "--output", tmp_path / "flat.fits")
    assert status == 0, stderr
    status, _, stderr = _run(
        capsys, *common, "--output", tmp_path / "gain.fits", "-ig", "1", "-tg", "1"
    )
    assert status == 0, stderr
    flat = pmio.readMaskedImage(tmp_path / "flat.fits")
    gain = pmio.readMaskedImage(tmp_path / "gain.fits")
    peak = np.unravel_index(np.argmax(sim.science.image), sim.science.image.shape)
    # Without a gain the estimated variance is the sky's everywhere; with the simulation's
    # gain the brightest star's core carries its Poisson variance, many times the sky's.
    assert gain.variance[peak] > 5 * flat.variance[peak]
    # ... and about the variance the simulation gave it (the estimate uses the noisy pixel
    # value and the variance rescaling; the template adds a little).
    np.testing.assert_allclose(gain.variance[peak], sim.science.variance[peak], rtol=0.2)


def test_hotpants_gain_and_read_noise_line_runs(
    pair: dict[str, Any], tmp_path: Path, capsys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The most common HOTPANTS invocation gives both gain and read noise for both images.
    sim = pair["sim"]
    science, template = tmp_path / "s.fits", tmp_path / "t.fits"
    fits.writeto(science, sim.science.image)  # plain images: the variance is estimated
    fits.writeto(template, sim.template.image)
    calls: list[dict[str, Any]] = []
    original = pmio.readImage

    def recording(source: Any, **kwargs: Any) -> Any:
        calls.append({"source": str(source), **kwargs})
        return original(source, **kwargs)

    monkeypatch.setattr(pmio, "readImage", recording)
    out = tmp_path / "d.fits"
    status, _, stderr = _run(
        capsys,
        *["subtract", "-inim", science, "-tmplim", template, "-outim", out, "-ko", "1"],
        *["-tg", "4", "-tr", "10", "-ig", "1", "-ir", "5", "-q"],
    )
    assert status == 0, stderr
    assert out.is_file()
    # (subtract reads the MaskedImages the command line made once more, without a gain.)
    noise = {c["source"]: (c["gain"], c["readNoise"]) for c in calls if "gain" in c}
    assert noise == {str(science): (1.0, 5.0), str(template): (4.0, 10.0)}


def test_candidates_file(pair: dict[str, Any], tmp_path: Path, capsys: Any) -> None:
    stars = pair["sim"].stars
    bright = stars[(stars["flux"] > 5e3) & (stars["nearestDistance"] > 20)]
    margin = 20
    inside = (
        (bright["x"] > margin)
        & (bright["x"] < SHAPE[1] - margin)
        & (bright["y"] > margin)
        & (bright["y"] < SHAPE[0] - margin)
    )
    bright = bright[inside]
    assert len(bright) >= 8
    # A plain text file with a header line; and one without, whose first two columns are read.
    text = tmp_path / "stars.txt"
    text.write_text("x y\n" + "".join(f"{x:.3f} {y:.3f}\n" for x, y in bright[["x", "y"]]))
    bare = tmp_path / "stars.dat"
    bare.write_text("".join(f"{x:.3f} {y:.3f} 1\n" for x, y in bright[["x", "y"]]))
    out = tmp_path / "d.fits"
    status, _, stderr = _run(
        capsys, *_inputs(pair), "--output", out, "--candidates", text, "-ko", "0", "-q"
    )
    assert status == 0, stderr
    header = _primary(out)
    assert header["psfmatch.nPsfSources"] <= len(bright)
    assert 0 < header["NSTAMP"] <= len(bright)
    out2 = tmp_path / "d2.fits"
    status, _, stderr = _run(
        capsys, *_inputs(pair), "--output", out2, "--candidates", bare, "-ko", "0", "-q"
    )
    assert status == 0, stderr
    assert _primary(out2)["KSUM"] == header["KSUM"]

    unusable = tmp_path / "cols.csv"
    unusable.write_text("a,b\n1,2\n")
    status, _, stderr = _run(
        capsys, *_inputs(pair), "--output", tmp_path / "e.fits", "--candidates", unusable
    )
    assert status == 1
    assert "cols.csv" in stderr and "x, y" in stderr


def test_missing_input_names_the_file(pair: dict[str, Any], tmp_path: Path, capsys: Any) -> None:
    missing = tmp_path / "nowhere.fits"
    out = tmp_path / "d.fits"
    status, stdout, stderr = _run(
        capsys, "subtract", "--science", missing, "--template", pair["template"], "--output", out
    )
    assert status == 1
    assert stderr.startswith("psfmatch: error: ")
    assert str(missing) in stderr
    assert "Traceback" not in stderr
    assert not out.exists()
    assert stdout == ""


def test_existing_output_is_not_modified(pair: dict[str, Any], tmp_path: Path, capsys: Any) -> None:
    out, matched = tmp_path / "d.fits", tmp_path / "m.fits"
    out.write_bytes(b"precious")
    status, _, stderr = _run(capsys, *_inputs(pair), "--output", out)
    assert status == 1
    assert "exists" in stderr and "--overwrite" in stderr and str(out) in stderr
    assert out.read_bytes() == b"precious"

    # An existing convolved-image path stops the run before the difference is written.
    out.unlink()
    matched.write_bytes(b"precious")
    status, _, stderr = _run(capsys, *_inputs(pair), "--output", out, "--matched", matched)
    assert status == 1
    assert not out.exists()
    assert matched.read_bytes() == b"precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.fits"]  # no temporary left


def test_output_may_not_be_an_input(pair: dict[str, Any], capsys: Any) -> None:
    status, _, stderr = _run(capsys, *_inputs(pair), "--output", pair["science"], "--overwrite")
    assert status == 2
    assert "is also an input" in stderr


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["subtract", "--science", "s.fits"], "the following arguments are required"),
        (
            ["subtract", "-inim", "s", "-tmplim", "t", "-outim", "d", "-nsx", "4"],
            "HOTPANTS option -nsx",
        ),
        (["subtract", "-inim", "s", "-tmplim", "t", "-outim", "d", "-c", "x"], "invalid choice"),
        (
            ["subtract", "-inim", "s", "-tmplim", "t", "-outim", "d", "-ir", "5"],
            "--science-read-noise/-ir needs the science gain (--science-gain/-ig)",
        ),
        (
            ["subtract", "-inim", "s", "-tmplim", "t", "-outim", "d", "-tg", "4", "-tr", "-1"],
            "--template-read-noise/-tr: expected a number of electrons >= 0, got -1",
        ),
        (
            ["subtract", "-inim", "s", "-tmplim", "t", "-outim", "d", "-tg", "4", "-tr", "nan"],
            "--template-read-noise/-tr: expected a number of electrons >= 0, got nan",
        ),
        (
            ["subtract", "-inim", "s", "-tmplim", "t", "-outim", "d", "-ig", "0"],
            "--science-gain/-ig: expected a positive number of e-/ADU, got 0",
        ),
        (["subtract", "-inim", "s", "-tmplim", "t", "-outim", "d", "-ko", "one"], "invalid int"),
        (["frobnicate"], "invalid choice"),
        # A misspelt required option is named as such, not as the option it fails to give.
        (
            ["subtract", "--sciense", "a.fits", "--template", "b.fits", "-o", "d.fits"],
            "unrecognized arguments: --sciense a.fits -o d.fits (see 'psfmatch subtract --help')",
        ),
        (
            [
                "subtract",
                "--science",
                "a",
                "--template",
                "b",
                "--output",
                "d",
                "--kernel-ordr",
                "3",
            ],
            "unrecognized arguments: --kernel-ordr 3 (see 'psfmatch subtract --help')",
        ),
        # No abbreviations of single-dash options either: -k is not -ko, -outi not -outim.
        (
            ["subtract", "-inim", "s", "-tmplim", "t", "-outim", "d", "-k", "1"],
            "unrecognized arguments: -k 1",
        ),
        (
            ["subtract", "-inim", "s", "-tmplim", "t", "-outi", "d"],
            "unrecognized arguments: -outi d",
        ),
        (["--sciense"], "unrecognized arguments: --sciense (see 'psfmatch --help')"),
        ([], "the following arguments are required"),
        (
            ["subtract", "-inim", "s", "-tmplim", "t", "-outim", "d", "-tl", "5", "-tu", "3"],
            "template valid data range: the lower limit 5 must be below the upper 3",
        ),
        (
            ["subtract", "-inim", "s", "-tmplim", "t", "-outim", "d", "-iu", "nan"],
            "--science-upper/-iu: expected a number, got nan",
        ),
    ],
)
def test_usage_errors(capsys: Any, argv: list[str], message: str) -> None:
    status, stdout, stderr = _run(capsys, *argv)
    assert status == 2
    assert stderr.startswith("psfmatch: error: ")
    assert message in stderr
    assert len(stderr.strip().splitlines()) == 1
    assert stdout == ""


def test_one_letter_options_take_attached_values() -> None:
    # What the exact-match rule for single-dash options keeps: "-r8" is -r 8, "-vv" is -v -v.
    argv = ["subtract", "-inim", "s", "-tmplim", "t", "-outim", "d", "-r8", "-vv", "-nt"]
    args = cli.parser._buildParser().parse_args(argv)
    assert (args.kernel_half_width, args.verbose, args.normalize) == (8, 2, "template")


def test_variance_message_names_the_image_and_its_options(tmp_path: Path, capsys: Any) -> None:
    science, template = tmp_path / "s.fits", tmp_path / "t.fits"
    fits.writeto(science, np.ones((64, 64), np.float32))  # constant: no sky scatter to measure
    fits.writeto(template, np.random.default_rng(3).normal(100.0, 5.0, (64, 64)))
    argv = ["subtract", "--science", science, "--template", template, "--output", tmp_path / "d"]
    status, _, stderr = _run(capsys, *argv)
    assert status == 1
    assert stderr.startswith("psfmatch: error: science: cannot estimate a variance: ")
    assert "give --science-variance (a FITS file or a constant)" in stderr
    assert "the science gain and read noise (-ig and -ir, in e-/ADU and e-)" in stderr
    assert "template" not in stderr.replace(str(template), "")


def test_version_and_help(capsys: Any) -> None:
    status, stdout, _ = _run(capsys, "--version")
    assert status == 0
    assert stdout.strip() == f"psfmatch {psfmatch.__version__}"
    status, stdout, _ = _run(capsys, "subtract", "--help")
    assert status == 0
    for alias in ("-inim", "-tmplim", "-outim", "-oci", "-ko", "-bgo", "-ng", "-tu", "-il"):
        assert alias in stdout


def _subtractParser() -> Any:
    commands = next(
        a for a in cli.parser._buildParser()._actions if isinstance(a, argparse._SubParsersAction)
    )
    return commands.choices["subtract"]


def test_hotpants_aliases_are_the_parsers() -> None:
    """The one table of HOTPANTS aliases is what the parser, the help and the refusal of an
    unsupported option say."""
    options = {o: a for a in _subtractParser()._actions for o in a.option_strings}
    for flag, option in hotpants._ALIASES.items():
        assert flag in options, flag
        assert options[flag].dest == options[option].dest, (flag, option)
        if flag not in hotpants._OWN_VALUES:
            assert options[flag] is options[option], (flag, option)  # one option, two names
    # Every HOTPANTS-style option of the parser is in the table, and none is refused.
    hotpantsLike = {o for o in options if not o.startswith("--") and o not in ("-h", "-v", "-q")}
    assert hotpantsLike == set(hotpants._ALIASES)
    assert not hotpantsLike & hotpants._UNSUPPORTED
    listed = " ".join(hotpants._ALIASES)
    with pytest.raises(cli.usage._UsageError, match=re.escape(f"takes {listed} (see")):
        hotpants._checkSupported(["-inim", "s", "-nsx", "4"])
    helpText = " ".join(_subtractParser().format_help().split())
    assert f"HOTPANTS aliases: {listed}." in helpText


def test_readme_table_of_hotpants_aliases_is_the_parsers() -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    table = readme.split("| HOTPANTS | psfmatch | meaning |", 1)[1].split("\n\n", 1)[0]
    documented = {}
    for row in table.strip().splitlines()[1:]:
        hotpantsCell, psfmatchCell = row.split(" | ")[:2]
        flags = re.findall(r"`(-[a-z]+)\b", hotpantsCell)
        names = re.findall(r"`(--[a-z-]+)\b", psfmatchCell)
        assert len(flags) == len(names), row
        documented.update(zip(flags, names, strict=True))
    assert documented == hotpants._ALIASES


def test_demo(tmp_path: Path, capsys: Any) -> None:
    outDir = tmp_path / "demo"
    status, stdout, stderr = _run(
        capsys, "demo", "--size", "256", "--seed", "1", "--output-dir", outDir
    )
    assert status in (0, 3), stderr
    names = ["template", "science", "difference", "matched"]
    for name in names:
        assert (outDir / f"{name}.fits").is_file()
    assert (outDir / "transients.ecsv").is_file()
    verdicts = re.findall(
        r"^  (kernel sum|D/sigma sigma|D/sigma mean|transient flux) .* "
        r"(PASS|CHECK) \((.+)\)$",
        stdout,
        flags=re.M,
    )
    assert [v[0] for v in verdicts] == [
        "kernel sum",
        "D/sigma sigma",
        "D/sigma mean",
        "transient flux",
    ]
    assert [v[2] for v in verdicts] == [
        "|error| < 0.2%",
        "within 3% of 1",
        "|mean| < 0.05",
        "within 2% on average",
    ]
    # The status says whether every figure passed.
    assert (status == 0) == all(v[1] == "PASS" for v in verdicts)
    # The noise and transient figures hold even on a small image; the kernel sum of a
    # 256 x 256 pair (~12 stars) scatters by ~0.5 % and may legitimately read CHECK.
    assert [v[1] for v in verdicts[1:]] == ["PASS", "PASS", "PASS"]
    ksum = float(re.search(r"kernel sum\s+([0-9.]+)", stdout).group(1))  # type: ignore[union-attr]
    np.testing.assert_allclose(ksum, 1.25, rtol=0.02)  # the truth; 2 % is 4x the scatter
    d = pmio.readMaskedImage(outDir / "difference.fits")
    assert d.image.shape == (256, 256)

    # A second run does not overwrite the first one's files.
    digests = {p: _digest(p) for p in outDir.iterdir()}
    status, _, stderr = _run(capsys, "demo", "--size", "256", "--output-dir", outDir)
    assert status == 1
    assert "exists" in stderr and "--overwrite" in stderr
    assert {p: _digest(p) for p in outDir.iterdir()} == digests


def test_demo_default_output_is_ignored_by_git() -> None:
    # `psfmatch demo` run from the checkout writes ~40 MB into ./psfmatch-demo by default;
    # none of it may show up as untracked files.
    root = Path(__file__).resolve().parents[1]
    git = shutil.which("git")
    if git is None or not (root / ".git").exists():
        pytest.skip("needs git and a git checkout")
    default = cli.parser._buildParser().parse_args(["demo"]).output_dir
    for name in ("difference.fits", "transients.ecsv", "plots/report.html"):
        done = subprocess.run(
            [git, "-C", str(root), "check-ignore", "-q", f"{default}/{name}"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, f"{default}/{name} is not ignored: {done.stderr}"


def test_entry_point_on_path() -> None:
    executable = shutil.which("psfmatch")
    assert executable is not None, "the psfmatch entry point is not installed on PATH"
    done = subprocess.run([executable, "--version"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"psfmatch {psfmatch.__version__}"
