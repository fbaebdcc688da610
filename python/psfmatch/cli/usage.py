# SPDX-License-Identifier: BSD-3-Clause
"""Usage errors and the one-line form of every error the command line reports."""

from __future__ import annotations

from ..errors import PsfMatchError


class _UsageError(Exception):
    """A command-line usage error: exit status 2."""


def _firstLine(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _errorMessage(err: BaseException) -> str:
    """What follows ``psfmatch: error:`` for an error that stops the work (exit status 1)."""
    if isinstance(err, PsfMatchError):
        return _firstLine(err)
    if isinstance(err, OSError) and err.filename is not None and err.strerror:
        return f"{err.strerror}: {err.filename!r}"
    return _firstLine(err)
