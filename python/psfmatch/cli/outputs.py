# SPDX-License-Identifier: BSD-3-Clause
"""Outputs of the command line: checked before any work (never an input, never an existing
file without ``--overwrite``), and the figures and report of ``--plots``."""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .. import __version__
from ..errors import OutputExistsError
from .usage import _UsageError


def _samePath(a: str, b: str) -> bool:
    if os.path.exists(a) and os.path.exists(b):
        return os.path.samefile(a, b)
    return os.path.realpath(a) == os.path.realpath(b)


def _checkOutputs(
    outputs: Sequence[tuple[str, str]], inputs: Sequence[str], overwrite: bool
) -> None:
    """Fail before any work if an output would clobber an input, another output, or (without
    ``overwrite``) an existing file."""
    seen: list[str] = []
    for option, path in outputs:
        for other in inputs:
            if _samePath(path, other):
                raise _UsageError(
                    f"{option} {path!r} is also an input; inputs are never overwritten"
                )
        for other in seen:
            if _samePath(path, other):
                raise _UsageError(f"{option} {path!r} is given for two outputs")
        seen.append(path)
        if os.path.isdir(path):
            raise _UsageError(f"{option} {path!r} is a directory")
        if os.path.exists(path) and not os.path.isfile(path):
            # /dev/null, /dev/stdout, a named pipe: refused before the work, not after it
            # (the atomic write would replace it with a regular file).
            raise _UsageError(
                f"{option} {path!r} is not a regular file; psfmatch writes a new file and "
                "moves it into place, which would replace it"
            )
        if not overwrite and os.path.lexists(path):
            raise OutputExistsError(
                f"output file {path!r} exists; pass --overwrite to replace it", path
            )
        directory = os.path.dirname(path) or "."
        if not os.path.isdir(directory):
            raise FileNotFoundError(f"output directory {directory!r} does not exist")


def _checkPlots(directory: str | None, overwrite: bool) -> None:
    """Fail before any work if ``--plots`` cannot be honoured: no matplotlib, a file in the
    way, or (without ``--overwrite``) figures or a report already there."""
    if directory is None:
        return
    from .. import plot

    plot._matplotlib()  # MissingDependencyError with the install hint
    path = Path(directory)
    if path.exists() and not path.is_dir():
        raise _UsageError(f"--plots {directory!r} exists and is not a directory")
    if not overwrite:
        for name in [*(f"{n}.png" for n in plot.FIGURES), "report.html"]:
            if os.path.lexists(path / name):
                raise OutputExistsError(
                    f"output file {str(path / name)!r} exists; pass --overwrite to replace it",
                    str(path / name),
                )


def _writePlots(result: Any, args: argparse.Namespace, info: Mapping[str, Any]) -> Path | None:
    """``--plots``: the figures and report drawn into a temporary directory beside the plots
    directory and added to the current `_writingTogether` group, so that they land with the
    images or not at all (a full disk, an interrupt: no half of them). Returns where the report
    will be."""
    if args.plots is None:
        return None
    from .. import plot
    from ..errors import PsfMatchError, PsfMatchIOError
    from ..io.writing import _GROUP, _Staged

    group = _GROUP.get()
    assert group is not None, "_writePlots runs inside a _writingTogether block"
    target = Path(args.plots)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(
            tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        )
    except OSError as err:
        raise PsfMatchIOError(
            f"cannot write the plots into {args.plots!r}: {err.strerror or err}", args.plots
        ) from err
    group.cleanups.append(lambda: shutil.rmtree(staging, ignore_errors=True))
    try:
        report = plot.writeReport(
            result,
            staging,
            overwrite=True,
            info={
                "psfmatch": __version__,
                "command": shlex.join(["psfmatch", *getattr(args, "argv", [])]),
                **info,
            },
        )
    except PsfMatchError:
        raise
    except OSError as err:  # matplotlib's own write: a full disk, a quota
        raise PsfMatchIOError(
            f"cannot write the plots into {args.plots!r}: {err.strerror or err}", args.plots
        ) from err
    for file in sorted(staging.iterdir()):
        group.add(_Staged(file, target / file.name, args.overwrite))
    return target / report.name
