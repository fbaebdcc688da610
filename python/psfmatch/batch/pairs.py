# SPDX-License-Identifier: BSD-3-Clause
"""The pair list of a batch: `BatchPair`, the CSV columns and their aliases, `readPairs`."""

from __future__ import annotations

import csv
import dataclasses
import math
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ..errors import InvalidInputError

_MODES = ("auto", "convolveTemplate", "convolveScience", "preconvolve", "crossConvolve")

#: Column names (lower case, without "_" and "-") and the `BatchPair` field each one fills.
_COLUMNS = {
    "science": "science",
    "inim": "science",
    "template": "template",
    "tmplim": "template",
    "output": "output",
    "outim": "output",
    "difference": "output",
    "matched": "matched",
    "oci": "matched",
    "mode": "mode",
    "spatialkernelorder": "spatialKernelOrder",
    "kernelorder": "spatialKernelOrder",
    "ko": "spatialKernelOrder",
    "spatialbgorder": "spatialBgOrder",
    "bgorder": "spatialBgOrder",
    "bgo": "spatialBgOrder",
    "sciencefwhm": "scienceFwhm",
    "templatefwhm": "templateFwhm",
    "ignoreorigins": "ignoreOrigins",
    "align": "align",
}

_ALIGN = ("wcs", "wcs-template", "none")

_TRUE = ("true", "yes", "on", "1")
_FALSE = ("false", "no", "off", "0")


@dataclasses.dataclass(frozen=True)
class BatchPair:
    """One science/template pair of a batch and its per-pair options.

    Attributes
    ----------
    science, template, output : `str`
        The input FITS files and the difference image to write.
    matched : `str` or None
        Also write the convolved image here.
    mode : `str` or None
        ``subtract``'s ``mode``; None for the batch's configuration (``"auto"`` by default).
    spatialKernelOrder, spatialBgOrder : `int` or None
        Spatial orders overriding the batch's configuration.
    scienceFwhm, templateFwhm : `float` or None
        PSF FWHMs (pixels) instead of measuring them.
    ignoreOrigins : `bool`
        As for `psfmatch.subtract`.
    align : `str` or None
        ``subtract``'s ``align``: ``"wcs"`` or ``"wcs-template"`` for a pair on two pixel
        grids (by the files' WCSs), None (``"none"``) otherwise.
    where : `str`
        Where the pair was given (``"pairs.csv line 4"``, ``"pairs[3]"``), for messages.
    """

    science: str
    template: str
    output: str
    matched: str | None = None
    mode: str | None = None
    spatialKernelOrder: int | None = None
    spatialBgOrder: int | None = None
    scienceFwhm: float | None = None
    templateFwhm: float | None = None
    ignoreOrigins: bool = False
    align: str | None = None
    where: str = ""

    def outputs(self) -> list[str]:
        """The files the pair writes, in the order they are written (the difference last)."""
        return ([self.matched] if self.matched else []) + [self.output]


def _columnKey(name: str) -> str:
    return name.strip().lower().replace("_", "").replace("-", "")


def _parseValue(field: str, value: Any, where: str) -> Any:
    """A cell or dict value converted to the type of ``field``; None for an empty cell."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, float) and math.isnan(value):  # an empty cell read by pandas
        return None
    if field in ("science", "template", "output", "matched"):
        if not isinstance(value, str | os.PathLike):
            raise InvalidInputError(
                f"{where}, {field}: expected a file path, got {type(value).__name__}"
            )
        return os.fspath(value).strip()
    if field == "mode":
        text = str(value).strip()
        if text not in _MODES:
            raise InvalidInputError(
                f"{where}, mode: expected one of {', '.join(_MODES)}, got {text!r}"
            )
        return text
    if field in ("spatialKernelOrder", "spatialBgOrder"):
        try:
            number = float(value)
        except (TypeError, ValueError):
            number = math.nan
        if not (math.isfinite(number) and number == int(number) and number >= 0):
            raise InvalidInputError(f"{where}, {field}: expected an integer >= 0, got {value!r}")
        return int(number)
    if field in ("scienceFwhm", "templateFwhm"):
        try:
            number = float(value)
        except (TypeError, ValueError):
            number = math.nan
        if not (math.isfinite(number) and number > 0):
            raise InvalidInputError(f"{where}, {field}: expected a number > 0, got {value!r}")
        return number
    if field == "align":
        text = str(value).strip()
        if text not in _ALIGN:
            raise InvalidInputError(
                f"{where}, align: expected one of {', '.join(_ALIGN)}, got {text!r}"
            )
        return None if text == "none" else text
    # ignoreOrigins
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE or text in _FALSE:
        return text in _TRUE
    raise InvalidInputError(f"{where}, {field}: expected true or false, got {value!r}")


def _makePair(row: Mapping[str, Any], where: str, base: Path | None) -> BatchPair:
    values: dict[str, Any] = {}
    for name, value in row.items():
        if name is None:  # csv.DictReader's key for cells beyond the header
            raise InvalidInputError(f"{where}: more cells than columns")
        if not isinstance(name, str):
            raise InvalidInputError(f"{where}: column names must be strings, got {name!r}")
        field = _COLUMNS.get(_columnKey(name))
        if field is None:
            raise InvalidInputError(
                f"{where}: unknown column {name!r}; the columns are science, template, output "
                "(required), matched, mode, kernelOrder, bgOrder, scienceFwhm, templateFwhm, "
                "ignoreOrigins, align"
            )
        if field in values:
            raise InvalidInputError(f"{where}: column {name!r} repeats {field}")
        parsed = _parseValue(field, value, where)
        if parsed is not None:
            values[field] = parsed
    for field in ("science", "template", "output"):
        if field not in values:
            raise InvalidInputError(f"{where}: no {field} path")
    if base is not None:
        for field in ("science", "template", "output", "matched"):
            if field in values and not os.path.isabs(values[field]):
                values[field] = str(base / values[field])
    return BatchPair(where=where, **values)


def readPairs(path: str | os.PathLike[str]) -> list[BatchPair]:
    """Read a pair list from a CSV file.

    Parameters
    ----------
    path : path
        A CSV file whose first row names the columns: ``science``, ``template`` and
        ``output`` (required), and optionally ``matched``, ``mode``, ``kernelOrder``
        (``spatialKernelOrder``, ``ko``), ``bgOrder`` (``spatialBgOrder``, ``bgo``),
        ``scienceFwhm``, ``templateFwhm``, ``ignoreOrigins`` and ``align`` (``wcs``,
        ``wcs-template`` or ``none``). Names ignore case, ``_`` and
        ``-``. An empty cell takes the batch's setting. Blank lines and lines starting with
        ``#`` are ignored. Relative paths are relative to the CSV file's directory.

    Returns
    -------
    pairs : `list` of `BatchPair`

    Raises
    ------
    InputFileNotFoundError
        If the file does not exist.
    InvalidInputError
        A missing or unknown column, a bad value (the message gives the line), or no pairs.
    """
    from ..io.paths import _asPath, _checkInputFile

    source = _asPath(path, "pairs")
    _checkInputFile(source)
    try:
        with open(source, newline="", encoding="utf-8-sig") as stream:
            lines = [
                (number, line)
                for number, line in enumerate(stream, start=1)
                if line.strip() and not line.lstrip().startswith("#")
            ]
    except (OSError, UnicodeDecodeError) as err:
        raise InvalidInputError(f"pairs file {str(source)!r}: cannot read it ({err})") from err
    if not lines:
        raise InvalidInputError(f"pairs file {str(source)!r}: no header row and no pairs")
    reader = csv.DictReader([line for _, line in lines], skipinitialspace=True)
    base = source.parent
    pairs = []
    try:
        for (number, _), row in zip(lines[1:], reader, strict=True):
            pairs.append(_makePair(row, f"{source.name} line {number}", base))
    except csv.Error as err:
        raise InvalidInputError(f"pairs file {str(source)!r}: {err}") from err
    return _checkPairs(pairs, f"pairs file {str(source)!r}")


def _asPairs(pairs: Any) -> list[BatchPair]:
    if isinstance(pairs, str | os.PathLike):
        return readPairs(pairs)
    if isinstance(pairs, Mapping) or not isinstance(pairs, Iterable):
        raise InvalidInputError(
            f"pairs: expected a CSV path or a list of dicts (or BatchPair), got "
            f"{type(pairs).__name__}"
        )
    out = []
    for index, item in enumerate(pairs):
        where = f"pairs[{index}]"
        if isinstance(item, BatchPair):
            out.append(dataclasses.replace(item, where=item.where or where))
        elif isinstance(item, Mapping):
            out.append(_makePair(item, where, None))
        else:
            raise InvalidInputError(f"{where}: expected a dict, got {type(item).__name__}")
    return _checkPairs(out, "pairs")


def _checkPairs(pairs: list[BatchPair], what: str) -> list[BatchPair]:
    """No pairs, two pairs writing one file, or an output that is an input, are errors."""
    if not pairs:
        raise InvalidInputError(f"{what}: no pairs")
    inputs = {os.path.realpath(p): p for pair in pairs for p in (pair.science, pair.template)}
    written: dict[str, str] = {}
    for pair in pairs:
        for path in pair.outputs():
            real = os.path.realpath(path)
            if real in inputs:
                raise InvalidInputError(
                    f"{pair.where}: output {path!r} is also an input; inputs are never overwritten"
                )
            if real in written:
                raise InvalidInputError(
                    f"{pair.where}: output {path!r} is also written by {written[real]}"
                )
            written[real] = pair.where
    return pairs
