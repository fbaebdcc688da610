# SPDX-License-Identifier: BSD-3-Clause
"""The command line's log: psfmatch's loggers to stderr for one command (``-v``, ``-q``,
``--trace``), restored afterwards."""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator, Sequence

from .usage import _UsageError


class _Formatter(logging.Formatter):
    def __init__(self, verbose: bool) -> None:
        super().__init__()
        self._verbose = verbose

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.exc_info and self._verbose:
            message += "\n" + self.formatException(record.exc_info)
        if self._verbose:
            return f"{record.levelname} {record.name}: {message}"
        return f"psfmatch: {record.levelname.lower()}: {message}"


#: Trace levels of `lsst.utils.logging.trace_set_at`: loggers TRACE0.<name> to TRACE5.<name>.
_TRACE_LEVELS = range(0, 6)


def _parseTrace(text: str) -> tuple[str, int]:
    """``--trace [LOGGER=]N``: a psfmatch logger (``psfmatch`` by default) and a trace level."""
    name, sep, number = text.rpartition("=")
    name = name.strip() if sep else "psfmatch"
    try:
        level = int(number)
    except ValueError:
        raise _UsageError(
            f"--trace {text!r}: expected [LOGGER=]N with N an integer from 0 to 5"
        ) from None
    if level not in _TRACE_LEVELS:
        raise _UsageError(f"--trace {text!r}: the trace level must be 0 to 5, got {level}")
    if name != "psfmatch" and not name.startswith("psfmatch."):
        raise _UsageError(
            f"--trace {text!r}: the logger must be psfmatch or one below it (e.g. "
            f"psfmatch.imagePsfMatch), got {name!r}"
        )
    return name, level


@contextlib.contextmanager
def _logging(
    verbosity: int, quiet: int = 0, traces: Sequence[tuple[str, int]] = ()
) -> Iterator[None]:
    """Send psfmatch's log to stderr for the duration of one command, then restore it.

    ``verbosity`` 0 shows warnings, 1 INFO, 2 DEBUG, 3 or more also the trace loggers
    (``lsst.utils.logging.trace_set_at("psfmatch", 4)``); ``quiet`` 1 also turns the progress
    bar off, 2 or more shows errors only. ``traces`` are ``(logger, level)`` pairs given to
    `lsst.utils.logging.trace_set_at` after that (``--trace``): the ``TRACEn.<logger>``
    loggers with ``n <= level`` show their DEBUG messages.
    """
    from lsst.utils.logging import trace_set_at

    from .. import progress

    if quiet >= 2:
        level = logging.ERROR
    elif quiet == 1:
        level = logging.WARNING
    else:
        level = {0: logging.WARNING, 1: logging.INFO}.get(verbosity, logging.DEBUG)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter(verbose=verbosity > 0))
    root = logging.getLogger("psfmatch")
    traceRoots = [logging.getLogger(f"TRACE{i}.psfmatch") for i in _TRACE_LEVELS]
    touched = [root, *traceRoots]
    for name, _ in traces:
        touched += [logging.getLogger(f"TRACE{i}.{name}") for i in _TRACE_LEVELS]
    saved = [(lg, lg.level) for lg in touched]
    savedProgress = progress.getEnabled()
    for lg in (root, *traceRoots):
        lg.addHandler(handler)
    # Warnings are always made, for the run's report (SubtractionResult.warnings); -qq only
    # keeps them off the terminal. Trace loggers log at DEBUG under their own levels.
    root.setLevel(min(level, logging.WARNING))
    handler.addFilter(lambda record: record.levelno >= level or record.name.startswith("TRACE"))
    if verbosity >= 3:
        trace_set_at("psfmatch", 4)
    for name, number in traces:
        trace_set_at(name, number)
    if quiet:
        progress.setEnabled(False)
    try:
        yield
    finally:
        for lg in (root, *traceRoots):
            lg.removeHandler(handler)
        for lg, old in saved:
            lg.setLevel(old)
        progress.setEnabled(savedProgress)
