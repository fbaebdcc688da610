# SPDX-License-Identifier: BSD-3-Clause
"""The command line's answer to SIGINT (Ctrl-C) and SIGTERM (what batch schedulers send): the
outputs complete or none, one line, exit status 130 or 143.

While a command runs, SIGINT raises `KeyboardInterrupt` as Python's own handler does, and
SIGTERM, whose default action ends the process at once (leaving a half-written temporary),
raises `_Terminated`; either unwinds through the writers' clean-ups (`psfmatch.io.writing`
moves a command's outputs into place together, holding signals back while it does). The
handler also notes the signal: Python cannot raise an exception out of a destructor or a weak
reference's callback, and "Exception ignored in: ... KeyboardInterrupt" then let the run go on
to write its outputs and exit 0. A command therefore writes nothing once a signal was noted
(`_checkNotInterrupted`), and ends with the signal's exit status even if no exception reached
it. Kept free of heavy imports: it is installed before anything else is imported.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Iterator
from types import FrameType
from typing import Any

_STATUS: dict[int, int] = {signal.SIGINT: 130, signal.SIGTERM: 143}
"""Exit status for each signal: 128 + its number, as a shell reports a process it ended."""

_WORD: dict[int, str] = {signal.SIGINT: "interrupted", signal.SIGTERM: "terminated"}


class _Terminated(BaseException):
    """Raised by the command line's SIGTERM handler; a `BaseException`, so that no
    ``except Exception`` on the way stops it."""


class _State:
    """The signal a command received, if any."""

    def __init__(self) -> None:
        self.received: int | None = None
        self.quiet = False  # set once the command is ending: note signals, raise nothing

    def handler(self, number: int, frame: FrameType | None) -> None:
        if self.received is None:
            self.received = number
        if self.quiet:
            return
        if number == signal.SIGINT:
            raise KeyboardInterrupt
        raise _Terminated(number)


_STATE = _State()


def _checkNotInterrupted() -> None:
    """Raise now if a signal was noted but its exception went astray (see the module)."""
    number = _STATE.received
    if number is not None and not _STATE.quiet:
        if number == signal.SIGINT:
            raise KeyboardInterrupt
        raise _Terminated(number)


def _forgetUnhandledInterrupt() -> None:
    """Clear CPython's note that a `KeyboardInterrupt` went unhandled.

    A `KeyboardInterrupt` that passes through ``exec`` or ``eval`` of a string (as
    `dataclasses` and `collections.namedtuple` do while a module is imported) makes CPython
    end the process by SIGINT when the program exits, whatever status ``sys.exit`` gave: an
    exit status of -2 after "psfmatch: interrupted". Running string code that succeeds
    resets that note (CPython resets it on every such run).
    """
    exec("", {})  # noqa: S102 - an empty string, run for its side effect described above


@contextlib.contextmanager
def _handlingSignals() -> Iterator[_State]:
    """Install the handlers for one command (main thread only) and restore the old ones."""
    global _STATE
    state = _STATE = _State()
    if threading.current_thread() is not threading.main_thread():
        yield state
        return
    previous = {}
    unraisable = sys.unraisablehook

    def quietHook(info: Any) -> None:
        # "Exception ignored in ..." for the signal's own exception, raised in a destructor:
        # noted already (state.received), and reported by the one line at the end.
        ours = isinstance(info.exc_value, KeyboardInterrupt | _Terminated)
        if not (ours and state.received is not None):
            unraisable(info)

    try:
        sys.unraisablehook = quietHook
        for number in _STATUS:
            old = signal.getsignal(number)
            if old is signal.SIG_IGN:
                continue  # e.g. SIGINT of a background job, or nohup: stays ignored
            previous[number] = old  # noted first: restored even if a signal comes in between
            signal.signal(number, state.handler)
        yield state
    finally:
        for number, old in previous.items():
            signal.signal(number, old)
        sys.unraisablehook = unraisable


def _ended(state: _State, err: BaseException | None) -> int:
    """The exit status and the one line of a command ended by a signal: ``err`` is the
    exception that reached the command line (None if a signal was noted but its exception went
    astray). Removes whatever temporaries a writer had not yet removed."""
    state.quiet = True
    number: int
    if isinstance(err, _Terminated):
        number = signal.SIGTERM
    elif isinstance(err, KeyboardInterrupt):
        number = signal.SIGINT
    else:
        assert state.received is not None
        number = state.received
    writing = sys.modules.get("psfmatch.io.writing")
    if writing is not None:
        writing._removeLeftovers()
    print(f"psfmatch: {_WORD[number]}", file=sys.stderr)
    _forgetUnhandledInterrupt()
    return _STATUS[number]
