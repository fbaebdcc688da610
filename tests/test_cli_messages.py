# SPDX-License-Identifier: BSD-3-Clause
"""Messages of issue 20: options that only a positive number makes sense for are usage errors,
a config file cannot end the program, ``psfmatch demo --size`` is checked against the memory,
and header origins beyond 32-bit coordinates are named errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from astropy.io import fits

import psfmatch as pm
from helpers import simulatedFitsPair
from psfmatch import io as pmio
from psfmatch.cli import main
from psfmatch.errors import InvalidInputError

SHAPE = (320, 320)


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    directory = tmp_path_factory.mktemp("pair")
    return simulatedFitsPair(directory, SHAPE, nStars=100, seed=7, nTransients=3, transientFlux=2e4)


def _run(capsys: Any, *argv: Any) -> tuple[int, str]:
    status = main([str(a) for a in argv])
    return status, capsys.readouterr().err


def _subtract(capsys: Any, pair: dict[str, Any], out: Path, *extra: Any) -> tuple[int, str]:
    """`psfmatch subtract` of ``pair`` into ``out`` with ``extra`` options."""
    return _run(
        capsys,
        "subtract",
        "--science",
        pair["science"],
        "--template",
        pair["template"],
        "--output",
        out,
        *extra,
    )


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--science-fwhm", "-2", "--science-fwhm -2: expected the science PSF's FWHM in pixels"),
        ("--science-fwhm", "0", "--science-fwhm 0: expected the science PSF's FWHM in pixels, a"),
        ("--template-fwhm", "0", "--template-fwhm 0: expected the template PSF's FWHM"),
        ("--template-fwhm", "-1.5", "--template-fwhm -1.5: expected the template PSF's FWHM"),
        ("--science-fwhm", "inf", "--science-fwhm inf: expected"),
        ("--science-variance", "-4", "--science-variance -4: a constant variance must be a"),
        ("--template-variance", "0", "--template-variance 0: a constant variance must be a"),
    ],
)
def test_positive_only_options_are_usage_errors(
    pair: dict[str, Any], tmp_path: Path, capsys: Any, option: str, value: str, message: str
) -> None:
    """Exit 2 before any work (-2 was a failed measurement, exit 1; 0 silently meant
    "measure it", which leaving the option out already says)."""
    out = tmp_path / "d.fits"
    status, err = _subtract(capsys, pair, out, option, value)
    assert status == 2, err
    assert err.startswith(f"psfmatch: error: {message}"), err
    assert "leave the option out" in err or "FITS file" in err
    assert not out.exists()


@pytest.mark.parametrize(
    ("code", "shown"),
    [
        ("import sys\nsys.exit(0)\n", "sys.exit(0)"),
        ("raise SystemExit(3)\n", "sys.exit(3)"),
        ("exit()\n", "sys.exit(None)"),
    ],
    ids=["sys.exit(0)", "SystemExit(3)", "exit()"],
)
def test_config_file_that_ends_the_program_is_an_error(
    pair: dict[str, Any], tmp_path: Path, capsys: Any, code: str, shown: str
) -> None:
    """It used to end psfmatch with its status: exit 0, no output, no message."""
    config = tmp_path / "config.py"
    config.write_text(code)
    out = tmp_path / "d.fits"
    status, err = _subtract(capsys, pair, out, "--config-file", config)
    assert status == 2, err
    assert err == (
        f"psfmatch: error: config file {str(config)!r} called {shown}; a config file may only "
        "set the fields of `config`, not end the program\n"
    )
    assert not out.exists()


@pytest.mark.parametrize("size", [8192, 100000])
def test_demo_size_is_checked_against_the_memory(
    tmp_path: Path, capsys: Any, monkeypatch: pytest.MonkeyPatch, size: int
) -> None:
    """A clear usage error with the numbers, before any simulation (``--size 100000`` asked
    for 23 GiB with no check)."""
    from psfmatch import simulate
    from psfmatch.cli import demo

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("simulatePair must not run")

    monkeypatch.setattr(simulate, "simulatePair", refuse)
    # 4 GiB available: 8192² needs ~10 GiB at the demo's ~160 bytes a pixel, 100000² ~1.5 TiB.
    monkeypatch.setattr(demo, "_availableMemory", lambda: 4 * 2**30, raising=False)
    status, err = _run(capsys, "demo", "--output-dir", tmp_path / "demo", "--size", size)
    assert status == 2, err
    needed = (150 * 2**20 + 160 * size * size) / 2**30
    assert f"--size {size}: the demo would need about {needed:.1f} GiB of memory" in err
    # The largest that fits: sqrt((4 GiB - 150 MiB) / 160 bytes) = 5085.3 pixels a side.
    assert "but 4.0 GiB are available; use --size 5085 or less" in err
    assert not (tmp_path / "demo").exists()


def _fitsWithOrigin(path: Path, cards: dict[str, Any], shape: tuple[int, int]) -> Path:
    header = fits.Header()
    for key, value in cards.items():
        header[key] = value
    fits.writeto(path, np.zeros(shape, dtype=np.float32), header)
    return path


_LINEAR = {"CTYPE1A": "LINEAR", "CTYPE2A": "LINEAR", "CRPIX1A": 1, "CRPIX2A": 1}


@pytest.mark.parametrize(
    ("cards", "named"),
    [
        ({"LTV1": -(2**31 - 10), "LTV2": 0}, "LTV1 = -2147483638"),  # the last column wraps
        ({"LTV1": 0, "LTV2": -(2**31 + 5)}, "LTV2 = -2147483653"),  # the origin itself
        ({"LTV1": 2**31 + 5, "LTV2": 0}, "LTV1 = 2147483653"),  # below -2**31
        ({**_LINEAR, "CRVAL1A": 2**31 - 10, "CRVAL2A": 0}, "CRVAL1A = 2147483638"),
        ({**_LINEAR, "CRVAL1A": 0, "CRVAL2A": 2**40}, "CRVAL2A = 1099511627776"),
    ],
    ids=["ltv-end", "ltv-y0", "ltv-negative", "crval-end", "crval-huge"],
)
def test_header_origins_beyond_32_bits_name_the_card(
    tmp_path: Path, capsys: Any, cards: dict[str, Any], named: str
) -> None:
    """Not a TypeError from the compiled Box2I, nor "SpatialCellSet: empty region"."""
    path = _fitsWithOrigin(tmp_path / "far.fits", cards, (64, 64))
    message = rf"far\.fits: the header's {named} puts the image's pixels at"
    with pytest.raises(InvalidInputError, match=message):
        pmio.readMaskedImage(path)
    with pytest.raises(InvalidInputError, match=message):
        pm.subtract(path, path)
    status, err = _run(
        capsys, "subtract", "--science", path, "--template", path, "--output", tmp_path / "d"
    )
    assert status == 1 and "beyond the 32-bit pixel coordinates psfmatch uses" in err, err


def test_origins_at_the_32_bit_edge_are_accepted_and_beyond_refused() -> None:
    """The last pixel exactly at 2**31 - 1, and the first at -2**31, are fine."""
    image = np.zeros((4, 6), dtype=np.float32)
    assert pm.MaskedImage(image, xy0=(2**31 - 6, 2**31 - 4)).getBBox().getMaxX() == 2**31 - 1
    assert pm.MaskedImage(image, xy0=(-(2**31), -(2**31))).getXY0() == (-(2**31), -(2**31))
    with pytest.raises(InvalidInputError, match=r"x0 = 2147483643 puts the image's pixels at x"):
        pm.MaskedImage(image, xy0=(2**31 - 5, 0))
    with pytest.raises(InvalidInputError, match=r"y0 = -2147483649"):
        pm.MaskedImage(image, xy0=(0, -(2**31) - 1))
    masked = pm.MaskedImage(image)
    with pytest.raises(InvalidInputError, match="beyond the 32-bit"):
        masked.setXY0((2**31, 0))
    assert masked.getXY0() == (0, 0)
