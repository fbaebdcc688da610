# SPDX-License-Identifier: BSD-3-Clause
"""`readPositions`: x, y positions (kernel sources for ``subtract(candidates=...)``) from a
table file."""

from __future__ import annotations

import logging
import math
import os
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import InputFileNotFoundError, InvalidInputError
from .paths import _asPath

if TYPE_CHECKING:
    from astropy.table import Table

_log = logging.getLogger("psfmatch.io")

#: The astropy formats tried for a file, by its name's ending, in order.
_FORMATS = {
    ".ecsv": ["ascii.ecsv"],
    ".fits": ["fits"],
    ".fit": ["fits"],
    ".fts": ["fits"],
    ".csv": ["ascii.csv", "ascii.no_header"],
}
_TEXT_FORMATS = ["ascii.basic", "ascii.commented_header", "ascii.no_header"]

#: Formats whose first line that is neither blank nor a comment names the columns.
_HEADER_LINE = frozenset({"ascii.basic", "ascii.csv", "ascii.ecsv"})


def _firstLine(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _rowNames(path: str, fmt: str, nRows: int) -> list[str]:
    """What to call each row in a message: ``line N`` of a text file (blank and ``#`` lines
    skipped, as astropy's readers do), else ``row N``."""
    if fmt != "fits":
        try:
            with open(path, encoding="utf-8", errors="replace") as stream:
                numbers = [
                    i
                    for i, line in enumerate(stream, start=1)
                    if line.strip() and not line.lstrip().startswith("#")
                ]
        except OSError:
            numbers = []
        if fmt in _HEADER_LINE:
            numbers = numbers[1:]
        if len(numbers) == nRows:
            return [f"line {n}" for n in numbers]
    return [f"row {i}" for i in range(1, nRows + 1)]


def _coordinate(column: Any, axis: str, path: str, fmt: str) -> np.ndarray:
    """A column as finite float64 values; `InvalidInputError` naming the first bad row."""
    values = np.ma.getdata(column)
    missing = np.ma.getmaskarray(column)
    if values.dtype.kind in "iuf" and not missing.any():
        result = np.asarray(values, dtype=np.float64)
        if np.isfinite(result).all():
            return result
    result = np.full(len(values), math.nan)
    for i, (value, absent) in enumerate(zip(values, missing, strict=True)):
        try:
            result[i] = math.nan if absent else float(value)
        except (TypeError, ValueError):
            pass
        if not math.isfinite(result[i]):
            where = _rowNames(path, fmt, len(values))[i]
            if absent:
                got = "no value"
            elif isinstance(value, bytes):
                got = repr(value.decode(errors="replace"))
            elif isinstance(value, str):
                got = repr(str(value))
            else:
                got = f"{value:g}"
            raise InvalidInputError(
                f"candidates file {path!r}: {where}: {axis} must be a finite number, got {got}"
            )
    return result


def readPositions(path: str | os.PathLike[str]) -> Table:
    """Read x, y positions from a text, CSV, ECSV or FITS table file.

    The positions are 0-based parent pixel coordinates (the pixel centre at the integer), as
    `psfmatch.subtract` takes them for its kernel sources (``candidates=``) and
    ``psfmatch subtract --candidates`` reads them.

    Parameters
    ----------
    path : `str` or `os.PathLike`
        The file. Its name's ending says how it is read:

        - ``.ecsv``: an ECSV table;
        - ``.fits``, ``.fit``, ``.fts``: the first table HDU of a FITS file;
        - ``.csv``: comma-separated values with a header line, else without one;
        - anything else: whitespace-separated text with a header line (``x y``), with the
          header as a comment (``# x y``), or without one.

        The columns named ``x`` and ``y`` (in any case) are used, whatever other columns the
        table has; a file without a header uses its first two columns, which must be numbers.
        Blank lines and lines starting with ``#`` are skipped.

    Returns
    -------
    positions : `astropy.table.Table`
        The columns ``x`` and ``y``, float64, in the file's order.

    Raises
    ------
    InputFileNotFoundError
        The file does not exist.
    InvalidInputError
        The path is a directory, the file has no ``x`` and ``y`` columns in any of the formats
        tried (the message gives each format's complaint), or a value is missing, not a number
        or not finite (the message names its line of a text file, or its row).
    """
    # Imported here: `import psfmatch.io` need not import astropy.table (and its readers).
    from astropy.table import Table

    _asPath(path, "path")
    name = os.fsdecode(os.fspath(path))
    if not os.path.isfile(name):
        if not os.path.exists(name):
            raise InputFileNotFoundError(f"candidates file {name!r} does not exist", name)
        raise InvalidInputError(f"candidates file {name!r} is not a file")
    suffix = os.path.splitext(name)[1].lower()
    formats = _FORMATS.get(suffix, _TEXT_FORMATS)
    problems = []
    for fmt in formats:
        try:
            # A FITS table's NaN stays a NaN (not a missing value), to be named as such.
            options = {"mask_invalid": False} if fmt == "fits" else {}
            table = Table.read(name, format=fmt, **options)
        except Exception as err:  # astropy's readers raise many types for a format mismatch
            problems.append(f"{fmt}: {_firstLine(err)}")
            continue
        columns = {column.lower(): column for column in table.colnames}
        if "x" in columns and "y" in columns:
            x, y = table[columns["x"]], table[columns["y"]]
        elif fmt == "ascii.no_header" and len(table.colnames) >= 2:
            x, y = table.columns[0], table.columns[1]
            if x.dtype.kind not in "iuf" or y.dtype.kind not in "iuf":
                problems.append(f"{fmt}: the first two columns are not numbers")
                continue
        else:
            problems.append(f"{fmt}: no x and y columns (columns: {', '.join(table.colnames)})")
            continue
        positions = Table(
            {"x": _coordinate(x, "x", name, fmt), "y": _coordinate(y, "y", name, fmt)}
        )
        _log.info("read %d kernel candidate positions from %s", len(positions), name)
        return positions
    raise InvalidInputError(
        f"candidates file {name!r}: cannot read x, y positions ({'; '.join(problems)})"
    )
