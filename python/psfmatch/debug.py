# SPDX-License-Identifier: BSD-3-Clause
"""Debugging switches for psfmatch tasks, in the manner of ``lsstDebug``.

A task asks for its switches with ``getInfo(name)``, where ``name`` is the name of its
module, and reads them as attributes; a switch nobody set is `False`::

    import psfmatch.debug

    debug = psfmatch.debug.getInfo(__name__)
    if debug.display:
        ...

To turn switches on, replace `Info` by a function (or class) of your own that takes the
module name and returns an object with the switches set. Inside it, `getInfo` returns a
default `Info` object, so it can start from that. For example, with the switches of
``PsfMatchTask``::

    import psfmatch.debug

    def DebugInfo(name):
        di = psfmatch.debug.getInfo(name)
        if name == "psfmatch.psf_match":
            di.display = True                 # enable debug output
            di.maskTransparency = 80          # display mask transparency
            di.displayCandidates = True       # show all the candidates and residuals
            di.displayKernelBasis = False     # show kernel basis functions
            di.displayKernelMosaic = True     # show kernel realized across the image
            di.plotKernelSpatialModel = False # show coefficients of spatial model
            di.plotKernelCoefficients = True  # show fixed and spatial coefficients
            di.showBadCandidates = True       # show the bad candidates (red) and good (green)
            di.plotDir = "debug-figures"      # psfmatch: where figures go without a display
        if name == "psfmatch.image_psf_match":
            di.display = True
            di.displayDiffIm = True           # the difference image with its mask
            di.maskTransparency = 80
        return di

    psfmatch.debug.Info = DebugInfo

Put this in a file imported before the tasks run (e.g. a ``debug.py`` imported by your
script). Restore the defaults with ``psfmatch.debug.Info = psfmatch.debug.DefaultInfo``.

Each figure switch draws the `psfmatch.plot` figure of that name (matplotlib, the ``plot``
extra): in a window when there is a display, else saved as ``<plotDir>/<task>-<figure>-<n>.png``
(``plotDir`` defaults to ``./psfmatch-debug``). Without matplotlib a switch logs a warning
saying what to install and the run goes on.
"""

from __future__ import annotations

__all__ = ["DefaultInfo", "Info", "getInfo", "showDebug"]

import logging
import threading
from collections.abc import Callable
from typing import Any


class Info:
    """Debugging switches for one module; a switch that was not set is `False`.

    Parameters
    ----------
    name : `str`
        Name of the module the switches are for.

    Notes
    -----
    Set switches as ordinary attributes (``info.display = True``). Reading an attribute that
    was not set returns `False`, except for names starting with an underscore, which raise
    `AttributeError` as usual (so that `copy`, `pickle` and similar protocols behave).

    Examples
    --------
    >>> info = Info("psfmatch.psf_match")
    >>> info.display
    False
    >>> info.display = True
    >>> info.display
    True
    """

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, what: str) -> Any:
        """Return `False` for a switch that was not set."""
        if what.startswith("_"):
            raise AttributeError(what)
        return False

    def __repr__(self) -> str:
        switches = {k: v for k, v in vars(self).items() if not k.startswith("_")}
        return f"{type(self).__name__}({self._name!r}, {switches!r})"


DefaultInfo = Info
"""The original `Info` class, kept here when `Info` has been replaced by the user."""

_state = threading.local()

showDebug: Callable[..., None] | None = None
"""What a task calls when its ``display`` switch is on, or `None` for `psfmatch.plot.showDebug`.

``showDebug(task, requests=Struct(...), **data)`` receives the task, a `psfmatch.task.Struct`
of the switches asked for (``displayCandidates``, ``displayKernelBasis``, ...,
``maskTransparency``, ``plotDir``) and the data to show (for `PsfMatchTask`:
``kernelCellSet``, ``basisList``, ``spatialKernel``, ``spatialBackground``; for
`ImagePsfMatchTask`'s ``displayDiffIm``: ``difference`` and ``kernelCellSet``). Install a
function here to draw them your way; while it is `None`, `psfmatch.plot.showDebug` draws the
matplotlib figures (shown on a display, else saved as PNG files in ``plotDir``), or, without
matplotlib, the task logs a warning saying what to install.
"""


def getInfo(name: str) -> Any:
    """Return the debugging switches for module ``name``.

    Parameters
    ----------
    name : `str`
        Name of the module asking, normally ``__name__``.

    Returns
    -------
    info : `object`
        The result of calling the current ``psfmatch.debug.Info`` (looked up at each call, so
        a user replacement is honoured). When called from inside that replacement, a default
        `DefaultInfo` object instead, so a replacement can start from ``getInfo(name)``
        without recursing.
    """
    if getattr(_state, "inside", False):
        return DefaultInfo(name)
    _state.inside = True
    try:
        return Info(name)
    finally:
        _state.inside = False


def _show(task: Any, requests: Any, **data: Any) -> None:
    """Call `showDebug` (or `psfmatch.plot.showDebug`) for ``task``; a missing matplotlib is
    a logged warning, not an error, so that a debugging switch never stops a run."""
    from .errors import MissingDependencyError

    hook: Callable[..., Any]
    if showDebug is not None:
        hook = showDebug
    else:
        from . import plot

        hook = plot.showDebug
    log = getattr(task, "log", logging.getLogger("psfmatch.debug"))
    try:
        hook(task, requests=requests, **data)
    except MissingDependencyError as err:
        log.warning("Debug display requested (%s) but not drawn: %s", requests, err)
