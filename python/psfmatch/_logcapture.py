# SPDX-License-Identifier: BSD-3-Clause
"""Collect the warnings psfmatch logs while one piece of work runs (``SubtractionResult.warnings``),
and the Python warnings (`warnings.warn`) one thread raises while it reads or writes a file.

psfmatch reports a degraded but usable run (a poorly constrained kernel, a variance not
rescaled, conflicting origins in a file) as a logged warning, on the ``"psfmatch"`` logger or
one below it (every task's ``self.log`` is, unless the task was given a logger of its own).
`collectWarnings` keeps the messages of those records so that a result, and the report drawn
from it, can show them.

The handler is attached to the shared ``"psfmatch"`` logger, so it also sees what other
threads log at the same time; it keeps only the records emitted by the thread that opened it.

`_capturedWarnings` does for Python warnings what `warnings.catch_warnings` cannot do safely
in threads (before Python 3.14 its filters and its record list are process-wide: a damaged
file's warning, raised in one thread, landed in another thread's list, and the filters of two
overlapping blocks were restored out of order).
"""

from __future__ import annotations

__all__ = ["collectWarnings"]

import contextlib
import logging
import sys
import threading
import warnings
from collections.abc import Iterator
from typing import Any

_ROOT = "psfmatch"


class _ThreadWarnings(logging.Handler):
    """Keeps the message of every WARNING-or-worse record emitted by one thread."""

    def __init__(self, thread: int) -> None:
        super().__init__(level=logging.WARNING)
        self._thread = thread
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread != self._thread:
            return
        try:
            self.messages.append(record.getMessage())
        except Exception:  # a bad format string: logging's own policy for handlers
            self.handleError(record)


@contextlib.contextmanager
def collectWarnings() -> Iterator[list[str]]:
    """Collect the messages psfmatch logs at WARNING or above in this thread, in order.

    Yields
    ------
    messages : `list` [`str`]
        Filled while the block runs; the same message logged twice appears twice.

    Notes
    -----
    Only records that the loggers let through are seen: a ``"psfmatch"`` logger set to ERROR
    by the application hides its warnings here too.
    """
    handler = _ThreadWarnings(threading.get_ident())
    logger = logging.getLogger(_ROOT)
    logger.addHandler(handler)
    try:
        yield handler.messages
    finally:
        logger.removeHandler(handler)


_capture = threading.local()
"""``_capture.sink``: the list of the innermost `_capturedWarnings` block of this thread."""

_captureLock = threading.Lock()
_captureUsers = 0
_originals: dict[str, Any] = {}


def _routedWarn(
    message: Any, category: Any = None, stacklevel: int = 1, source: Any = None, **more: Any
) -> None:
    """`warnings.warn` while some thread captures: recorded for a capturing thread (every
    warning, as under ``simplefilter("always")``), passed on unchanged for the others."""
    sink = getattr(_capture, "sink", None)
    if sink is None:
        # ``more``: what later Pythons add (skip_file_prefixes), passed on as given.
        _originals["warn"](message, category, stacklevel + 1, source, **more)
        return
    if isinstance(message, Warning):
        category = type(message)
    elif category is None:
        category = UserWarning
    try:
        frame = sys._getframe(stacklevel)
        filename, lineno = frame.f_code.co_filename, frame.f_lineno
    except ValueError:  # a stacklevel beyond the stack, as warnings.warn allows
        filename, lineno = "sys", 1
    sink.append(warnings.WarningMessage(message, category, filename, lineno, source=source))


def _routedShow(message: warnings.WarningMessage) -> None:
    """`warnings._showwarnmsg` (what warnings raised from C code reach once the filters let
    them through) while some thread captures: recorded for a capturing thread, shown as
    before for the others."""
    sink = getattr(_capture, "sink", None)
    if sink is None:
        _originals["show"](message)
    else:
        sink.append(message)


@contextlib.contextmanager
def _capturedWarnings() -> Iterator[list[warnings.WarningMessage]]:
    """Record the Python warnings this thread raises in the block, and only those.

    Yields
    ------
    caught : `list` [`warnings.WarningMessage`]
        Filled while the block runs. Warnings raised with `warnings.warn` are all recorded (no
        filter applies, as ``catch_warnings(record=True)`` with ``simplefilter("always")``);
        warnings raised from compiled code are recorded if the filters let them through.

    Notes
    -----
    While at least one thread captures, `warnings.warn` and ``warnings._showwarnmsg`` are
    replaced by functions that send each warning to the raising thread's innermost block, or,
    for a thread that does not capture, on to the functions they replaced; the last block to
    end puts those back (unless something replaced them since). The warning filters are never
    changed, so nothing can be restored out of order.
    """
    global _captureUsers
    with _captureLock:
        if _captureUsers == 0:
            _originals["warn"] = warnings.warn
            _originals["show"] = warnings._showwarnmsg  # type: ignore[attr-defined]
            warnings.warn = _routedWarn
            warnings._showwarnmsg = _routedShow  # type: ignore[attr-defined]
        _captureUsers += 1
    outer = getattr(_capture, "sink", None)
    caught: list[warnings.WarningMessage] = []
    _capture.sink = caught
    try:
        yield caught
    finally:
        _capture.sink = outer
        with _captureLock:
            _captureUsers -= 1
            if _captureUsers == 0:
                if warnings.warn is _routedWarn:
                    warnings.warn = _originals["warn"]
                if warnings._showwarnmsg is _routedShow:  # type: ignore[attr-defined]
                    warnings._showwarnmsg = _originals["show"]  # type: ignore[attr-defined]
