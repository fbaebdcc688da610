# SPDX-License-Identifier: BSD-3-Clause
"""The ``psfmatch`` command: ``psfmatch subtract``, ``psfmatch batch`` and ``psfmatch demo``.

``psfmatch subtract`` runs `psfmatch.api.subtract` on two FITS files and writes the difference
image (and, optionally, the convolved image) with `SubtractionResult.writeFits`. Its options
have long names and, where HOTPANTS has an equivalent, HOTPANTS's single-dash names as aliases
(the table of `psfmatch.cli.hotpants`); ``-n`` is `SubtractionResult.inUnits`, the valid data
range (``-tu -iu -tl -il``) is `psfmatch.io.readImage`'s, ``--candidates`` is read by
`psfmatch.io.readPositions`.

``psfmatch batch pairs.csv`` runs the same subtraction over a list of pairs on a Dask cluster
(`psfmatch.batch.subtractBatch`): resumable, one manifest line per pair, a progress bar and a
summary; its exit status is 1 if any pair failed.

``psfmatch demo`` simulates a template/science pair with a known answer
(`psfmatch.simulate.simulatePair`), writes it to FITS, subtracts it through the same code path
and reports how close the kernel sum, the noise of the difference image and the transient
fluxes are to the truth (`psfmatch.simulate.compareToTruth`).

Exit status: 0 on success, 1 when the work fails (missing or unreadable input, existing
output, too few stars, a full disk, ...), 2 for a usage error (unknown option, bad value, bad
``--set``); ``psfmatch demo`` exits 3 when it ran but a figure is outside its threshold; 130
after SIGINT (Ctrl-C) and 143 after SIGTERM (`signals`). Expected errors are reported on one
line, ``psfmatch: error: ...``, never as a traceback. A command's output files are written as
one unit (`psfmatch.io.writing._writingTogether`): all of them, or, after a failure or a signal,
none, the old files left as they were.

Configuration is applied in this order: the defaults of `ImagePsfMatchConfig` with
``mode = "auto"`` (as `psfmatch.subtract` uses), each ``--config-file``, each ``--set``, then
the dedicated options (``--mode``/``-c``, ``-r``, ``-ng``, ``--kernel-order``, ``--bg-order``),
which therefore win.

One module per sub-command (`subtract`, `batch`, `demo`), each adding its part of the parser;
`parser` assembles them, `hotpants` declares the HOTPANTS aliases, `config` builds the
configuration, `outputs` checks and writes what is not an image, `logs` sets up the log, and
`usage` holds the usage error and the one-line error messages, `signals` the answer to SIGINT
and SIGTERM.
"""

from __future__ import annotations

__all__ = ["main"]

import sys
from collections.abc import Sequence

# Nothing heavier at import: SIGINT and SIGTERM are handled from the first line of `main`, and
# what it imports after that (argparse, numpy, astropy, the pipeline) is interruptible cleanly.
from . import signals as _signals
from .signals import _ended, _handlingSignals


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``psfmatch`` command line.

    Parameters
    ----------
    argv : sequence of `str`, optional
        The arguments after the program name; ``sys.argv[1:]`` by default.

    Returns
    -------
    status : `int`
        0 on success, 1 if the work failed, 2 for a usage error, 3 if ``psfmatch demo`` found
        a figure outside its threshold, 130 after SIGINT (Ctrl-C) and 143 after SIGTERM (with
        the one line ``psfmatch: interrupted`` or ``psfmatch: terminated``, and the outputs
        either all written or none).
    """
    state = _signals._State()
    try:
        with _handlingSignals() as state:
            try:
                status = _main(argv)
            except (KeyboardInterrupt, _signals._Terminated) as err:
                return _ended(state, err)
            if state.received is not None:
                # The signal's exception went astray (raised in a destructor, see .signals).
                return _ended(state, None)
            return status
    except KeyboardInterrupt as err:  # Python's own handler, just before or after ours
        return _ended(state, err)


def _main(argv: Sequence[str] | None) -> int:
    from ..errors import PsfMatchError
    from .hotpants import _checkSupported
    from .logs import _logging, _parseTrace
    from .parser import _buildParser, _parseArguments
    from .usage import _errorMessage, _UsageError

    parser = _buildParser()
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        _checkSupported(argv)
        args = _parseArguments(parser, argv)
        args.argv = argv
    except _UsageError as err:
        print(f"psfmatch: error: {err}", file=sys.stderr)
        return 2
    except SystemExit as exit_:  # --help and --version
        return exit_.code if isinstance(exit_.code, int) else 0
    try:
        traces = [_parseTrace(text) for text in args.trace]
    except _UsageError as err:
        print(f"psfmatch: error: {err}", file=sys.stderr)
        return 2
    with _logging(args.verbose, args.quiet, traces):
        try:
            return int(args.func(args))
        except _UsageError as err:
            print(f"psfmatch: error: {err}", file=sys.stderr)
            return 2
        except (PsfMatchError, OSError) as err:
            # OSError covers FileNotFoundError, permissions and full disks as well as
            # psfmatch's own PsfMatchIOError family.
            print(f"psfmatch: error: {_errorMessage(err)}", file=sys.stderr)
            return 1
