# SPDX-License-Identifier: BSD-3-Clause
"""Progress bars for long work: tqdm when it is installed (the ``progress`` extra), a plain
one-line counter otherwise.

A bar is drawn only on a terminal and only once the work has lasted ``delay`` seconds, so
short runs, pipes, log files and CI stay silent. `setEnabled` turns bars on or off for the
whole process (the command line's ``-q`` turns them off)::

    import psfmatch.progress

    psfmatch.progress.setEnabled(False)     # never draw a bar
    psfmatch.progress.setEnabled(True)      # always, even when not on a terminal
    psfmatch.progress.setEnabled(None)      # the default: only on a terminal

Used by `PsfMatchTask` over the single-kernel fits of the candidates.
"""

from __future__ import annotations

__all__ = ["getEnabled", "progressBar", "setEnabled"]

import math
import sys
import time
from types import TracebackType
from typing import IO, Any

_enabled: bool | None = None


def setEnabled(enabled: bool | None) -> None:
    """Turn progress bars on (`True`), off (`False`) or back to "on a terminal" (`None`)."""
    global _enabled
    if enabled is not None and not isinstance(enabled, bool):
        from .errors import InvalidInputError

        raise InvalidInputError(
            f"enabled: expected True, False or None, got {type(enabled).__name__}"
        )
    _enabled = enabled


def getEnabled() -> bool | None:
    """The setting of `setEnabled`: `True`, `False` or `None` (only on a terminal)."""
    return _enabled


def _isTerminal(stream: Any) -> bool:
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty()) if isatty is not None else False
    except (ValueError, OSError):  # a closed stream
        return False


class _PlainBar:
    """The fallback without tqdm: ``desc: n/total (p%)`` rewritten in place on one line."""

    def __init__(self, total: int, desc: str, unit: str, file: IO[str], delay: float) -> None:
        self.total = int(total)
        self.n = 0
        self._desc = desc
        self._unit = unit
        self._file = file
        self._start = time.monotonic()
        self._delay = float(delay)
        self._last = -math.inf
        self._drawn = False

    def _draw(self) -> None:
        total = max(self.total, self.n)
        percent = 100.0 * self.n / total if total else 100.0
        self._file.write(f"\r{self._desc}: {self.n}/{total} {self._unit} ({percent:3.0f}%)")
        self._file.flush()
        self._drawn = True

    def update(self, n: int = 1) -> None:
        self.n += int(n)
        now = time.monotonic()
        # Redraw at most 4 times a second, once the delay has passed.
        if now - self._start >= self._delay and now - self._last >= 0.25:
            self._last = now
            self._draw()

    def refresh(self) -> None:
        if self._drawn:
            self._draw()

    def close(self) -> None:
        if self._drawn:
            self._draw()
            self._file.write("\n")
            self._file.flush()


class _NullBar:
    """A bar that draws nothing but still counts."""

    def __init__(self, total: int) -> None:
        self.total = int(total)
        self.n = 0

    def update(self, n: int = 1) -> None:
        self.n += int(n)

    def refresh(self) -> None:
        pass

    def close(self) -> None:
        pass


class progressBar:  # lower case: used like a function, as tqdm is
    """A progress bar over ``total`` steps; use it as a context manager.

    Parameters
    ----------
    total : `int`
        The number of steps expected; ``bar.total`` may be raised while it runs.
    desc : `str`
        What is being done, shown before the counter.
    unit : `str`, optional
        What a step is.
    enabled : `bool`, optional
        Draw the bar (`True`), never (`False`), or by the `setEnabled` setting and, if that is
        `None`, only when ``file`` is a terminal.
    file : file-like, optional
        Where to draw; `sys.stderr` by default.
    delay : `float`, optional
        Seconds of work before the bar first appears.

    Notes
    -----
    With tqdm installed (``pip install "psfmatch[progress]"``) the bar is a `tqdm.tqdm`;
    without it, a plain ``desc: n/total unit (p%)`` line. ``update(n)`` advances it; the
    attributes ``n`` and ``total`` hold the count and the total.

    Examples
    --------
    >>> with progressBar(3, desc="fitting", enabled=False) as bar:
    ...     for _ in range(3):
    ...         bar.update()
    >>> bar.n
    3
    """

    def __init__(
        self,
        total: int,
        *,
        desc: str,
        unit: str = "it",
        enabled: bool | None = None,
        file: IO[str] | None = None,
        delay: float = 1.0,
    ) -> None:
        stream = sys.stderr if file is None else file
        if enabled is None:
            enabled = _enabled
        if enabled is None:
            enabled = _isTerminal(stream)
        self._bar: Any
        if not enabled:
            self._bar = _NullBar(total)
            return
        try:
            from tqdm import tqdm
        except ImportError:
            self._bar = _PlainBar(total, desc, unit, stream, delay)
        else:
            self._bar = tqdm(
                total=total, desc=desc, unit=unit, file=stream, delay=delay, leave=False
            )

    @property
    def n(self) -> int:
        return int(self._bar.n)

    @property
    def total(self) -> int:
        return int(self._bar.total)

    @total.setter
    def total(self, value: int) -> None:
        self._bar.total = int(value)
        self._bar.refresh()

    @property
    def isTqdm(self) -> bool:
        """Whether the bar is drawn by tqdm."""
        return not isinstance(self._bar, _PlainBar | _NullBar)

    def update(self, n: int = 1) -> None:
        """Advance by ``n`` steps."""
        self._bar.update(n)

    def close(self) -> None:
        """Finish the bar (a plain bar ends its line)."""
        self._bar.close()

    def __enter__(self) -> progressBar:
        return self

    def __exit__(
        self,
        excType: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
