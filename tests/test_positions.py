# SPDX-License-Identifier: BSD-3-Clause
"""`psfmatch.io.readPositions`: x, y positions from text, CSV, ECSV and FITS tables."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from astropy.table import Table

from psfmatch import io
from psfmatch.errors import InputFileNotFoundError, InvalidInputError

X = [10.5, 20.25, 30.0]
Y = [11.0, 21.5, 31.75]


def _check(table: Table) -> None:
    assert table.colnames == ["x", "y"]
    assert table["x"].dtype == np.float64 and table["y"].dtype == np.float64
    np.testing.assert_array_equal(table["x"], X)  # exact: short decimals read back as written
    np.testing.assert_array_equal(table["y"], Y)


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("header.txt", "x y\n10.5 11.0\n20.25 21.5\n30.0 31.75\n"),
        ("upper.txt", "X Y flux\n10.5 11.0 1\n20.25 21.5 2\n30.0 31.75 3\n"),
        ("other-columns-first.txt", "id flux y x\n1 5 11.0 10.5\n2 6 21.5 20.25\n3 7 31.75 30\n"),
        ("commented.txt", "# x y\n10.5 11.0\n20.25 21.5\n30.0 31.75\n"),
        ("bare.dat", "10.5 11.0 7\n\n20.25 21.5 8\n# a comment\n30.0 31.75 9\n"),
        ("header.csv", "x,y\n10.5,11.0\n20.25,21.5\n30.0,31.75\n"),
        ("bare.csv", "10.5,11.0\n20.25,21.5\n30.0,31.75\n"),
    ],
)
def test_text_formats(tmp_path: Path, name: str, text: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    _check(io.readPositions(path))
    _check(io.readPositions(str(path)))
    assert path.read_text() == text  # nothing written


def test_ecsv_and_fits(tmp_path: Path) -> None:
    table = Table({"ID": [1, 2, 3], "x": X, "y": Y})
    table.write(tmp_path / "p.ecsv")
    table.write(tmp_path / "p.fits")
    _check(io.readPositions(tmp_path / "p.ecsv"))
    _check(io.readPositions(tmp_path / "p.fits"))


def test_empty_table_is_no_positions(tmp_path: Path) -> None:
    path = tmp_path / "none.csv"
    path.write_text("x,y\n")
    assert len(io.readPositions(path)) == 0


def test_missing_and_unusable_paths(tmp_path: Path) -> None:
    with pytest.raises(InputFileNotFoundError, match=r"candidates file '.*absent\.csv' does not"):
        io.readPositions(tmp_path / "absent.csv")
    with pytest.raises(InvalidInputError, match=r"is not a file"):
        io.readPositions(tmp_path)
    with pytest.raises(InvalidInputError, match=r"path: expected a file path"):
        io.readPositions(3)  # type: ignore[arg-type]


def test_no_x_and_y_columns_lists_what_each_format_found(tmp_path: Path) -> None:
    path = tmp_path / "cols.csv"
    path.write_text("a,b\n1,2\n")
    with pytest.raises(
        InvalidInputError,
        match=r"cols\.csv': cannot read x, y positions \(ascii\.csv: no x and y columns "
        r"\(columns: a, b\); ascii\.no_header: the first two columns are not numbers\)",
    ):
        io.readPositions(path)


@pytest.mark.parametrize(
    ("name", "text", "match"),
    [
        # The line of the file, counting the header, blank and comment lines.
        (
            "word.csv",
            "x,y\n1,2\nfoo,3\n",
            r"word\.csv': line 3: x must be a finite number, got 'foo'",
        ),
        ("nan.txt", "x y\n\n1 2\n# skip\n4 nan\n", r"line 5: y must be a finite number, got nan"),
        ("missing.csv", "x,y\n1,2\n3,\n", r"line 3: y must be a finite number, got no value"),
        ("bare.dat", "1 2\n3 inf\n", r"line 2: y must be a finite number, got inf"),
        ("commented.txt", "# x y\n1 2\n3 4\nfive 6\n", r"line 4: x must be a finite number"),
    ],
)
def test_bad_values_name_their_line(tmp_path: Path, name: str, text: str, match: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(InvalidInputError, match=match):
        io.readPositions(path)


def test_bad_values_of_a_fits_table_name_their_row(tmp_path: Path) -> None:
    Table({"x": [1.0, np.nan], "y": [2.0, 3.0]}).write(tmp_path / "p.fits")
    with pytest.raises(InvalidInputError, match=r"row 2: x must be a finite number, got nan"):
        io.readPositions(tmp_path / "p.fits")
