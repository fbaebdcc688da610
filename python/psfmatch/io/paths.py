# SPDX-License-Identifier: BSD-3-Clause
"""Path arguments: what counts as a file path, and the check of an input file before it is
opened."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..errors import InputFileNotFoundError, InvalidInputError


def _isPath(value: Any) -> bool:
    return isinstance(value, str | os.PathLike)


def _asPath(value: Any, name: str) -> Path:
    """Return ``value`` (a `str` or path-like) as a `Path`, or raise `InvalidInputError`."""
    if not _isPath(value):
        raise InvalidInputError(
            f"{name}: expected a file path (str or os.PathLike), got {type(value).__name__}"
        )
    return Path(os.fsdecode(os.fspath(value)))


def _checkInputFile(path: Path) -> None:
    """Raise the psfmatch error for a path that is not an existing regular file."""
    if not path.exists():
        raise InputFileNotFoundError(f"input file {str(path)!r} does not exist", str(path))
    if path.is_dir():
        raise InvalidInputError(f"input {str(path)!r} is a directory, not a FITS file")
    if not path.is_file():
        # A device or pipe: /dev/zero was read as an endless FITS header (a hang).
        raise InvalidInputError(
            f"input {str(path)!r} is not a regular file (a device or pipe); give a FITS file"
        )
