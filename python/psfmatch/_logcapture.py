# SPDX-License-Identifier: BSD-3-Clause
"""Collect the warnings psfmatch logs while one piece of work runs (``SubtractionResult.warnings``).

psfmatch reports a degraded but usable run (a poorly constrained kernel, a variance not
rescaled, conflicting origins in a file) as a logged warning, on the ``"psfmatch"`` logger or
one below it (every task's ``self.log`` is, unless the task was given a logger of its own).
`collectWarnings` keeps the messages of those records so that a result, and the report drawn
from it, can show them.

The handler is attached to the shared ``"psfmatch"`` logger, so it also sees what other
threads log at the same time; it keeps only the records emitted by the thread that opened it.
"""

from __future__ import annotations

__all__ = ["collectWarnings"]

import contextlib
import logging
import threading
from collections.abc import Iterator

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
