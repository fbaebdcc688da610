# SPDX-License-Identifier: BSD-3-Clause
"""The ``psfmatch`` command: ``psfmatch subtract``, ``psfmatch batch`` and ``psfmatch demo``.

``psfmatch subtract`` runs `psfmatch.api.subtract` on two FITS files and writes the difference
image (and, optionally, the convolved image) with `SubtractionResult.writeFits`. Its options
have long names and, where HOTPANTS has an equivalent, HOTPANTS's single-dash names as aliases
(``-inim -tmplim -outim -oci -r -ko -bgo -ng -c -n -tu -iu -tl -il -tg -ig``).

``psfmatch batch pairs.csv`` runs the same subtraction over a list of pairs on a Dask cluster
(`psfmatch.batch.subtractBatch`): resumable, one manifest line per pair, a progress bar and a
summary; its exit status is 1 if any pair failed.

``psfmatch demo`` simulates a template/science pair with a known answer
(`psfmatch.simulate.simulatePair`), writes it to FITS, subtracts it through the same code path
and reports how close the kernel sum, the noise of the difference image and the transient
fluxes are to the truth.

Exit status: 0 on success, 1 when the work fails (missing or unreadable input, existing
output, too few stars, ...), 2 for a usage error (unknown option, bad value, bad ``--set``);
``psfmatch demo`` exits 3 when it ran but a figure is outside its threshold. Expected errors are
reported on one line, ``psfmatch: error: ...``, never as a traceback.

Configuration is applied in this order: the defaults of `ImagePsfMatchConfig` with
``mode = "auto"`` (as `psfmatch.subtract` uses), each ``--config-file``, each ``--set``, then
the dedicated options (``--mode``/``-c``, ``-r``, ``-ng``, ``--kernel-order``, ``--bg-order``),
which therefore win.
"""

from __future__ import annotations

__all__ = ["main"]

import argparse
import ast
import contextlib
import dataclasses
import difflib
import logging
import math
import os
import shlex
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

from . import __version__
from .errors import InvalidInputError, OutputExistsError, PsfMatchError
from .simulate.compare import (
    KSUM_TOLERANCE,
    MEAN_TOLERANCE,
    SIGMA_TOLERANCE,
    TRANSIENT_TOLERANCE,
)

_log = logging.getLogger("psfmatch.cli")

#: HOTPANTS ``-c`` values.
_CONVOLVE = {"t": "convolveTemplate", "i": "convolveScience"}

#: HOTPANTS (v5.1.11) options that ``psfmatch subtract`` does not take. Some of them would
#: otherwise parse as a supported short option with an attached value (``-nsx`` as ``-n sx``).
_HOTPANTS_UNSUPPORTED = frozenset(
    "-tuk -tp -tni -tmi -iuk -ip -ini -imi -ki -kcs -ft -sft -nft -mins -mous "
    "-omi -gd -nrx -nry -rf -rkw -nsx -nsy -ssf -cmp -afssc -nss -rss -savexy -fom -sconv -ssig "
    "-ks -kfm -okn -fi -fin -convvar -oni -ond -nim -ndm -cim -allm -nc -hki -oki -sht -obs "
    "-obz -nsht -nbs -nbz -pca".split()
)

#: ``-n``/``--normalize`` values and the photometric system each one asks for.
_NORMALIZE = {
    "t": "template",
    "template": "template",
    "i": "science",
    "science": "science",
    "image": "science",
    "u": "unconvolved",
    "unconvolved": "unconvolved",
}

#: Failed pairs listed by ``psfmatch batch``'s summary (the manifest has them all).
_MAX_FAILURES_SHOWN = 10


class _UsageError(Exception):
    """A command-line usage error: exit status 2."""


class _Parser(argparse.ArgumentParser):
    """An `argparse.ArgumentParser` whose errors raise `_UsageError` instead of exiting, and
    whose ``allow_abbrev=False`` also holds for single-dash options."""

    def error(self, message: str) -> NoReturn:
        raise _UsageError(f"{message} (see '{self.prog} --help')")

    def _get_option_tuples(self, option_string: str) -> list[Any]:
        # Until python/cpython#104860 was fixed, argparse matched a single-dash prefix
        # despite allow_abbrev=False: "-o" was "ambiguous" between -outim and -oci, and
        # "-k 1" silently meant "-ko 1". Keep only what is not an abbreviation: a one-letter
        # option with its value attached ("-r10", "-vv").
        found = super()._get_option_tuples(option_string)
        if self.allow_abbrev:
            return list(found)
        return [match for match in found if match[1] == option_string[:2]]


# --------------------------------------------------------------------------------------------
# Logging


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

    from . import progress

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


# --------------------------------------------------------------------------------------------
# Configuration


def _firstLine(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _fieldNames(node: Any) -> list[str]:
    if isinstance(node, Mapping) and not hasattr(node, "_fields"):
        return ["name", "active", *node.keys()]
    return list(getattr(node, "_fields", {}))


def _unknown(what: str, name: str, where: str, node: Any) -> _UsageError:
    choices = _fieldNames(node)
    hint = difflib.get_close_matches(name, choices, n=3)
    message = f"--set {what}: {where or 'the config'} has no field {name!r}"
    if hint:
        message += f"; did you mean {' or '.join(repr(h) for h in hint)}?"
    elif choices:
        message += f"; its fields are {', '.join(choices)}"
    return _UsageError(message)


def _parseValue(text: str, field: Any) -> Any:
    """A ``--set`` value: a Python literal if it is one, else the string; adapted to the
    field's type where that is unambiguous (``true``/``false`` for booleans, digits for a
    string field)."""
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        value = text
    dtype = getattr(field, "dtype", None)
    if dtype is str and not isinstance(value, str):
        value = text
    elif dtype is bool and isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in ("true", "yes", "on"):
            value = True
        elif lowered in ("false", "no", "off"):
            value = False
    return value


def _applySet(config: Any, assignment: str) -> None:
    """Apply one ``--set key=value`` (dotted key, e.g. ``kernel.active.spatialKernelOrder``)."""
    key, sep, text = assignment.partition("=")
    key = key.strip()
    if not sep or not key:
        raise _UsageError(f"--set {assignment!r}: expected key=value")
    parts = key.split(".")
    if parts[0] == "config":  # pex_config's own spelling, config.kernel...
        parts = parts[1:]
    if not parts or not all(parts):
        raise _UsageError(f"--set {assignment!r}: malformed key")
    node = config
    where = ""
    for part in parts[:-1]:
        if isinstance(node, Mapping) and not hasattr(node, "_fields"):
            # A ConfigChoiceField: kernel.active, kernel.AL, kernel.DF.
            if part == "active":
                node = node.active  # type: ignore[attr-defined]
            elif part in node:
                node = node[part]
            else:
                raise _unknown(assignment, part, where, node)
        elif part in _fieldNames(node):
            node = getattr(node, part)
        else:
            raise _unknown(assignment, part, where, node)
        where = f"{where}.{part}" if where else part
    name = parts[-1]
    if isinstance(node, Mapping) and not hasattr(node, "_fields"):
        if name != "name":
            raise _UsageError(
                f"--set {assignment}: {where} chooses a kernel basis; set {where}.name "
                f"({' or '.join(repr(k) for k in node.keys())}) or one of its fields, e.g. "
                f"{where}.active.kernelSize"
            )
        field = None
    elif name in _fieldNames(node):
        field = type(node)._fields[name]
    else:
        raise _unknown(assignment, name, where, node)
    value = _parseValue(text.strip(), field)
    try:
        setattr(node, name, value)
    except Exception as err:  # pex_config raises FieldValidationError, TypeError, ...
        raise _UsageError(f"--set {assignment}: {_firstLine(err)}") from err
    _log.info("config: %s = %r", key, value)


def _loadConfigFile(config: Any, path: str) -> None:
    if not os.path.isfile(path):
        problem = "is not a file" if os.path.exists(path) else "does not exist"
        raise FileNotFoundError(f"config file {path!r} {problem}")
    try:
        config.load(path)
    except Exception as err:  # anything the file's own Python code raises
        raise _UsageError(f"config file {path!r}: {type(err).__name__}: {_firstLine(err)}") from err
    _log.info("config: loaded %s", path)


def _parseNGauss(tokens: Sequence[str]) -> tuple[int, list[int] | None, list[float] | None]:
    """HOTPANTS ``-ng N [d1 s1 d2 s2 ...]``."""
    try:
        nGauss = int(tokens[0])
    except ValueError:
        raise _UsageError(
            f"-ng: expected the number of Gaussians first, got {tokens[0]!r}"
        ) from None
    if nGauss < 1:
        raise _UsageError(f"-ng: the number of Gaussians must be at least 1, got {nGauss}")
    rest = tokens[1:]
    if not rest:
        return nGauss, None, None
    if len(rest) != 2 * nGauss:
        raise _UsageError(
            f"-ng {' '.join(tokens)}: expected N followed by N (degree, sigma) pairs, i.e. "
            f"{2 * nGauss} more numbers, got {len(rest)}"
        )
    degrees: list[int] = []
    sigmas: list[float] = []
    for i in range(nGauss):
        d, s = rest[2 * i], rest[2 * i + 1]
        try:
            degree, sigma = int(d), float(s)
        except ValueError:
            raise _UsageError(
                f"-ng: Gaussian {i + 1}: expected an integer degree and a sigma, got {d!r} {s!r}"
            ) from None
        if degree < 0 or not (math.isfinite(sigma) and sigma > 0):
            raise _UsageError(
                f"-ng: Gaussian {i + 1}: the degree must be >= 0 and sigma > 0, got {d} {s}"
            )
        degrees.append(degree)
        sigmas.append(sigma)
    return nGauss, degrees, sigmas


def _buildConfig(args: argparse.Namespace) -> Any:
    from .image_psf_match import ImagePsfMatchConfig

    config = ImagePsfMatchConfig()
    config.mode = "auto"  # psfmatch.subtract's default
    for path in args.config_file or ():
        _loadConfigFile(config, path)
    for assignment in args.set or ():
        _applySet(config, assignment)

    kConfig = config.kernel.active
    if args.mode is not None:
        config.mode = args.mode
    if args.kernel_half_width is not None:
        if args.kernel_half_width < 1:
            raise _UsageError(
                f"-r: the kernel half-width must be >= 1, got {args.kernel_half_width}"
            )
        kConfig.kernelSize = 2 * args.kernel_half_width + 1
        kConfig.scaleByFwhm = False  # so that the size is used as given
    if args.ngauss is not None:
        if config.kernel.name != "AL":
            raise _UsageError(
                f"-ng applies to the Alard-Lupton basis, but kernel.name is {config.kernel.name!r}"
            )
        nGauss, degrees, sigmas = _parseNGauss(args.ngauss)
        kConfig.alardNGauss = nGauss
        if degrees is None or sigmas is None:
            # N alone: keep the configured degrees and widths, trimmed or extended to N (the
            # widths continue geometrically by alardGaussBeta); with scaleByFwhm (the default)
            # the widths are then derived from the FWHMs anyway.
            oldDegrees = list(kConfig.alardDegGauss) or [2]
            oldSigmas = list(kConfig.alardSigGauss) or [0.7]
            while len(oldDegrees) < nGauss:
                oldDegrees.append(oldDegrees[-1])
            while len(oldSigmas) < nGauss:
                oldSigmas.append(oldSigmas[-1] * kConfig.alardGaussBeta)
            kConfig.alardDegGauss = oldDegrees[:nGauss]
            kConfig.alardSigGauss = oldSigmas[:nGauss]
        else:
            kConfig.alardDegGauss = degrees
            kConfig.alardSigGauss = sigmas
            kConfig.scaleByFwhm = False  # so that the widths are used as given
        _log.info(
            "config: %d Gaussians, degrees %s, sigmas %s%s",
            nGauss,
            list(kConfig.alardDegGauss),
            list(kConfig.alardSigGauss),
            "" if kConfig.scaleByFwhm else " (used as given)",
        )
    if args.kernel_order is not None:
        _setChecked(kConfig, "spatialKernelOrder", args.kernel_order, "--kernel-order/-ko")
    if args.bg_order is not None:
        _setChecked(kConfig, "spatialBgOrder", args.bg_order, "--bg-order/-bgo")
    try:
        config.validate()
    except Exception as err:
        raise _UsageError(f"invalid configuration: {_firstLine(err)}") from err
    return config


def _setChecked(node: Any, name: str, value: Any, option: str) -> None:
    try:
        setattr(node, name, value)
    except Exception as err:
        raise _UsageError(f"{option} {value}: {_firstLine(err)}") from err


# --------------------------------------------------------------------------------------------
# psfmatch subtract


def _plane(value: str | None) -> Any:
    """A variance or mask option: an existing path, else a number (a constant), else the path
    (so that reading it reports the missing file)."""
    if value is None or os.path.exists(value):
        return value
    try:
        return float(value)
    except ValueError:
        return value


def _readCandidates(path: str) -> Any:
    """x, y positions from a text, CSV, ECSV (or FITS) table: columns named x and y (any
    case), or the first two columns of a file without a header."""
    from astropy.table import Table

    if not os.path.isfile(path):
        problem = "is not a file" if os.path.exists(path) else "does not exist"
        raise FileNotFoundError(f"candidates file {path!r} {problem}")
    lower = path.lower()
    if lower.endswith(".ecsv"):
        formats = ["ascii.ecsv"]
    elif lower.endswith((".fits", ".fit", ".fts")):
        formats = ["fits"]
    elif lower.endswith(".csv"):
        formats = ["ascii.csv", "ascii.no_header"]
    else:
        formats = ["ascii.basic", "ascii.commented_header", "ascii.no_header"]
    table = None
    problems = []
    for fmt in formats:
        try:
            candidate = Table.read(path, format=fmt)
        except Exception as err:  # astropy's readers raise many types for a format mismatch
            problems.append(f"{fmt}: {_firstLine(err)}")
            continue
        names = {name.lower(): name for name in candidate.colnames}
        if "x" in names and "y" in names:
            table = Table({"x": candidate[names["x"]], "y": candidate[names["y"]]})
            break
        if fmt == "ascii.no_header" and len(candidate.colnames) >= 2:
            first, second = candidate.columns[0], candidate.columns[1]
            if first.dtype.kind in "iuf" and second.dtype.kind in "iuf":
                table = Table({"x": first, "y": second})
                break
            problems.append(f"{fmt}: the first two columns are not numbers")
            continue
        problems.append(f"{fmt}: no x and y columns (columns: {', '.join(candidate.colnames)})")
    if table is None:
        raise InvalidInputError(
            f"candidates file {path!r}: cannot read x, y positions ({'; '.join(problems)})"
        )
    try:
        x = np.asarray(table["x"], dtype=float)
        y = np.asarray(table["y"], dtype=float)
    except (TypeError, ValueError) as err:
        raise InvalidInputError(
            f"candidates file {path!r}: x and y must be numbers ({_firstLine(err)})"
        ) from err
    _log.info("read %d kernel candidate positions from %s", len(x), path)
    return Table({"x": x, "y": y})


def _applyThresholds(mi: Any, lower: float | None, upper: float | None, which: str) -> Any:
    """HOTPANTS's valid data range: pixels above ``upper`` get SAT, below ``lower`` get BAD
    and NO_DATA. Returns a new `MaskedImage` (the input's arrays are not written)."""
    from .image import Mask, MaskedImage

    if lower is None and upper is None:
        return mi
    if lower is not None and upper is not None and lower >= upper:
        raise _UsageError(
            f"{which} valid data range: the lower limit {lower:g} must be below the upper {upper:g}"
        )
    mask = np.array(mi.mask, copy=True)
    with np.errstate(invalid="ignore"):
        if upper is not None:
            high = mi.image > upper
            mask[high] |= Mask.getPlaneBitMask("SAT")
            _log.info("%s: %d pixels above %g flagged SAT", which, int(high.sum()), upper)
        if lower is not None:
            low = mi.image < lower
            mask[low] |= Mask.getPlaneBitMask(["BAD", "NO_DATA"])
            _log.info("%s: %d pixels below %g flagged BAD|NO_DATA", which, int(low.sum()), lower)
    return MaskedImage(mi.image, mask, mi.variance, xy0=mi.getXY0())


def _checkNoiseModel(args: argparse.Namespace) -> None:
    """Usage errors for a gain or read noise that cannot be used, named by their options."""
    for which, short in (("science", "i"), ("template", "t")):
        gain = getattr(args, f"{which}_gain")
        readNoise = getattr(args, f"{which}_read_noise")
        if gain is not None and not (math.isfinite(gain) and gain > 0):
            raise _UsageError(
                f"--{which}-gain/-{short}g: expected a positive number of e-/ADU, got {gain:g}"
            )
        if readNoise is None:
            continue
        if not (math.isfinite(readNoise) and readNoise >= 0):
            raise _UsageError(
                f"--{which}-read-noise/-{short}r: expected a number of electrons >= 0, got "
                f"{readNoise:g}"
            )
        if gain is None:
            raise _UsageError(
                f"--{which}-read-noise/-{short}r needs the {which} gain (--{which}-gain/"
                f"-{short}g) to turn electrons into the image's units"
            )


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
        if not overwrite and os.path.lexists(path):
            raise OutputExistsError(
                f"output file {path!r} exists; pass --overwrite to replace it", path
            )
        directory = os.path.dirname(path) or "."
        if not os.path.isdir(directory):
            raise FileNotFoundError(f"output directory {directory!r} does not exist")


def _renormalize(result: Any, normalize: str | None) -> tuple[Any, str, str]:
    """Put the difference and convolved images in the photometric system ``-n`` asks for.

    `psfmatch.subtract` returns the difference in science units and the convolved image in the
    units of the image it was matched to. HOTPANTS's ``-n`` scales both by the kernel sum κ
    (at the image centre) when another system is asked for: ``t`` the template's, ``i`` the
    science image's, ``u`` the unconvolved image's.
    """
    from .image import MaskedImage

    # A score image (Preconvolution) is in science units too: its kernel maps the template
    # onto the PSF-filtered science image, so its sum is the science/template flux ratio.
    convolvedTemplate = result.convolved != "Science"
    matchedUnits = "science" if convolvedTemplate else "template"
    if normalize is None:
        return result, "science", matchedUnits
    target = normalize
    if target == "unconvolved":
        target = "science" if convolvedTemplate else "template"
    kappa = result.kernelSum
    if not (math.isfinite(kappa) and kappa > 0):
        _log.warning(
            "-n %s not honoured: the kernel sum %g cannot rescale the images; the difference "
            "is left in science units",
            normalize,
            kappa,
        )
        return result, "science", matchedUnits
    bbox = result.difference.getBBox()
    sums = [
        float(result.kernel.getSum(x, y))
        for x in (bbox.getMinX(), bbox.getMaxX())
        for y in (bbox.getMinY(), bbox.getMaxY())
    ]
    if max(abs(s / kappa - 1.0) for s in sums) > 1e-3:
        _log.warning(
            "-n %s: the kernel sum varies across the image (%.5g to %.5g at the corners); "
            "the images are rescaled by its value at the centre, %.6g",
            normalize,
            min(sums),
            max(sums),
            kappa,
        )
    # science flux / template flux
    ratio = kappa if convolvedTemplate else 1.0 / kappa
    toTemplate = 1.0 / ratio

    def scaled(mi: Any, factor: float) -> Any:
        if factor == 1.0 or mi is None:
            return mi
        dtype = mi.image.dtype.type
        return MaskedImage(
            mi.image * dtype(factor),
            mi.mask,
            mi.variance * dtype(factor * factor),
            xy0=mi.getXY0(),
        )

    dFactor = 1.0 if target == "science" else toTemplate
    if target == matchedUnits:
        mFactor = 1.0
    else:
        mFactor = toTemplate if target == "template" else ratio
    if dFactor != 1.0 or mFactor != 1.0:
        _log.info(
            "-n %s: difference scaled by %.6g, convolved image by %.6g", normalize, dFactor, mFactor
        )
    result = dataclasses.replace(
        result,
        difference=scaled(result.difference, dFactor),
        matched=scaled(result.matched, mFactor),
    )
    return result, target, target


def _checkPlots(directory: str | None, overwrite: bool) -> None:
    """Fail before any work if ``--plots`` cannot be honoured: no matplotlib, a file in the
    way, or (without ``--overwrite``) figures or a report already there."""
    if directory is None:
        return
    from . import plot

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
    if args.plots is None:
        return None
    from . import plot

    report = plot.writeReport(
        result,
        args.plots,
        overwrite=args.overwrite,
        info={
            "psfmatch": __version__,
            "command": shlex.join(["psfmatch", *getattr(args, "argv", [])]),
            **info,
        },
    )
    return report


def _readInput(args: argparse.Namespace, which: str, short: str) -> Any:
    """Read the science or template image with its options; a variance that cannot be
    estimated names the options that give one."""
    from . import io as pmio

    def option(name: str) -> Any:
        return getattr(args, f"{which}_{name}")

    try:
        image = pmio.readImage(
            getattr(args, which),
            variance=_plane(option("variance")),
            mask=_plane(option("mask")),
            gain=option("gain"),
            readNoise=option("read_noise"),
            name=which,
        )
    except pmio._VarianceEstimateError as err:
        raise InvalidInputError(
            f"{which}: cannot estimate a variance: {err.reason}; give --{which}-variance (a "
            f"FITS file or a constant), or the {which} gain and read noise (-{short}g and "
            f"-{short}r, in e-/ADU and e-)"
        ) from err
    return _applyThresholds(image, option("lower"), option("upper"), which)


def _subtract(args: argparse.Namespace) -> int:
    from ._logcapture import collectWarnings
    from .api import subtract

    _checkNoiseModel(args)
    config = _buildConfig(args)
    # The convolved image is kept only to be written: without --matched the difference takes
    # its planes (a third less memory beside the inputs).
    config.keepMatchedImage = bool(args.matched)
    outputs = [("--output", args.output)]
    if args.matched:
        outputs.append(("--matched", args.matched))
    inputs = [args.science, args.template]
    inputs += [
        p
        for p in (
            args.science_variance,
            args.template_variance,
            args.science_mask,
            args.template_mask,
            args.candidates,
        )
        if p is not None and os.path.exists(p)
    ]
    inputs += [p for p in args.config_file or () if os.path.exists(p)]
    _checkOutputs(outputs, inputs, args.overwrite)
    _checkPlots(args.plots, args.overwrite)
    candidates = _readCandidates(args.candidates) if args.candidates else None

    with collectWarnings() as warned:
        science = _readInput(args, "science", "i")
        template = _readInput(args, "template", "t")
        start = time.perf_counter()
        result = subtract(
            science,
            template,
            mode=config.mode,
            config=config,
            candidates=candidates,
            scienceFwhm=args.science_fwhm,
            templateFwhm=args.template_fwhm,
            ignoreOrigins=args.ignore_origins,
        )
        elapsed = time.perf_counter() - start
        result, differenceUnits, matchedUnits = _renormalize(result, args.normalize)
    # Reading the inputs here warns too (a stale checksum, conflicting origins), outside
    # subtract's own collection: the report shows every warning of the run.
    result.warnings = list(dict.fromkeys(warned))
    result.metadata["differenceUnits"] = differenceUnits
    result.metadata["matchedUnits"] = matchedUnits
    result.writeFits(args.output, matchedPath=args.matched, overwrite=args.overwrite)
    report = _writePlots(
        result,
        args,
        {
            "science": args.science,
            "template": args.template,
            "difference": args.output,
            "elapsed (s)": round(elapsed, 2),
        },
    )

    if not args.quiet:
        _printSummary(result, args, elapsed, differenceUnits)
        if report is not None:
            print(f"  report          : {report}")
    return 0


def _printSummary(result: Any, args: argparse.Namespace, elapsed: float, units: str) -> None:
    md = result.metadata

    def get(key: str, default: Any = math.nan) -> Any:
        return md[key] if key in md else default

    stats = result.statistics()
    convolved = {"Template": "template", "Science": "science image"}.get(
        result.convolved, "template, to the PSF-filtered science image (score image)"
    )
    lines = [
        f"psfmatch: subtracted {args.template} from {args.science} in {elapsed:.1f} s",
        f"  convolved image : {convolved} (FWHM template {get('templatePsfSize'):.2f} px, "
        f"science {get('sciencePsfSize'):.2f} px)",
        f"  kernel sum      : {result.kernelSum:.6f} (at the image centre)",
        f"  kernel sources  : {get('nCandidatesGood', 0)} used of {get('nPsfSources', 0)} "
        f"candidates; spatial orders kernel {result.config.kernel.active.spatialKernelOrder}, "
        f"background {result.config.kernel.active.spatialBgOrder}",
        f"  difference      : {units} units; mean {stats['DMEAN']:.4g}, std {stats['DSIG']:.4g} "
        f"(expected {stats['DSIGE']:.4g}), mean (D/sigma)^2 {stats['X2NRM']:.3f}",
        f"  wrote           : {args.output}" + (f", {args.matched}" if args.matched else ""),
    ]
    print("\n".join(lines))


# --------------------------------------------------------------------------------------------
# psfmatch batch


def _batch(args: argparse.Namespace) -> int:
    from .batch import subtractBatch

    config = _buildConfig(args)
    if args.workers is not None and args.workers < 1:
        raise _UsageError(f"--workers {args.workers}: expected at least 1")
    if args.threads_per_worker < 1:
        raise _UsageError(f"--threads-per-worker {args.threads_per_worker}: expected at least 1")
    if args.core_threads < 0:
        raise _UsageError(f"--core-threads {args.core_threads}: expected at least 0")
    if args.max_in_flight is not None and args.max_in_flight < 1:
        raise _UsageError(f"--max-in-flight {args.max_in_flight}: expected at least 1")
    if args.scheduler is not None and args.workers is not None:
        raise _UsageError("--workers starts a local cluster; it cannot go with --scheduler")
    summary = subtractBatch(
        args.pairs,
        scheduler=args.scheduler,
        nWorkers=args.workers,
        threadsPerWorker=args.threads_per_worker,
        config=config,
        manifest=args.manifest,
        overwrite=args.overwrite,
        maxInFlight=args.max_in_flight,
        cacheTemplates=not args.no_template_cache,
        coreThreads=args.core_threads,
        progress=not args.quiet,
    )
    failures = summary.failures
    if not args.quiet or failures:
        lines = [f"psfmatch batch: {summary}"]
        if summary.succeeded:
            lines[0] += f" ({summary.pairsPerSecond:.3g} pairs/s)"
        for record in failures[:_MAX_FAILURES_SHOWN]:
            message = (record["message"] or "").strip().splitlines()
            lines.append(
                f"  failed: {record['where']} ({record['science']}): {record['errorType']}: "
                f"{message[0] if message else ''}"
            )
        if len(failures) > _MAX_FAILURES_SHOWN:
            lines.append(f"  ... and {len(failures) - _MAX_FAILURES_SHOWN} more failures")
        lines.append(f"  manifest: {summary.manifest}")
        print("\n".join(lines), file=sys.stderr if failures else sys.stdout)
    return 0 if summary.ok else 1


# --------------------------------------------------------------------------------------------
# psfmatch demo


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "CHECK"


def _demo(args: argparse.Namespace) -> int:
    from astropy.table import Table

    from . import io as pmio
    from .api import subtract
    from .simulate import compareToTruth, simulatePair

    size = args.size
    if size < 192:
        raise _UsageError(f"--size {size}: the demo needs at least 192 pixels on a side")
    if args.seed < 0:
        raise _UsageError(f"--seed {args.seed}: expected an integer >= 0")
    outDir = Path(args.output_dir)
    paths = {
        name: outDir / f"{name}.{'ecsv' if name == 'transients' else 'fits'}"
        for name in ("template", "science", "difference", "matched", "transients")
    }
    if outDir.exists() and not outDir.is_dir():
        raise _UsageError(f"--output-dir {str(outDir)!r} exists and is not a directory")
    if not args.overwrite:
        for path in paths.values():
            if os.path.lexists(path):
                raise OutputExistsError(
                    f"output file {str(path)!r} exists; pass --overwrite to replace it", str(path)
                )
    _checkPlots(args.plots, args.overwrite)

    # The default simulation scaled to the requested size: 400 stars and 10 transients per
    # 1024 x 1024 pixels (at least 60 and 5), a science PSF whose FWHM grows from 5.2 to
    # 6.6 px across the image over a 3.8 px template PSF, photometric scale 1.25, a sloped
    # background, and transients of 1e4 to 4e4 counts (S/N ~ 50 to 200).
    area = (size / 1024.0) ** 2
    nStars = max(60, round(400 * area))
    nTransients = max(5, round(10 * area))
    transientFlux = np.geomspace(1e4, 4e4, nTransients)
    sim = simulatePair(
        (size, size),
        nStars=nStars,
        seed=args.seed,
        nTransients=nTransients,
        transientFlux=transientFlux,
    )
    outDir.mkdir(parents=True, exist_ok=True)
    pmio.writeMaskedImage(paths["template"], sim.template, overwrite=args.overwrite)
    pmio.writeMaskedImage(paths["science"], sim.science, overwrite=args.overwrite)

    start = time.perf_counter()
    result = subtract(str(paths["science"]), str(paths["template"]))
    elapsed = time.perf_counter() - start
    result.metadata["differenceUnits"] = "science"
    result.metadata["matchedUnits"] = "science" if result.convolved == "Template" else "template"
    result.writeFits(paths["difference"], matchedPath=paths["matched"], overwrite=args.overwrite)
    report = _writePlots(
        result,
        args,
        {
            "science": str(paths["science"]),
            "template": str(paths["template"]),
            "difference": str(paths["difference"]),
            "elapsed (s)": round(elapsed, 2),
        },
    )

    c = compareToTruth(sim, result)
    Table(c.transients).write(paths["transients"], format="ascii.ecsv", overwrite=args.overwrite)

    truth = sim.truth
    corners = np.array([0.0, size - 1.0])
    fwhmS = np.asarray(truth.scienceFwhm(corners, corners))
    b0, bx, by = truth.backgroundCoefficients
    checks = [
        (
            f"kernel sum      {c.kernelSum:.5f} (true {c.fluxScale:.5f}, "
            f"error {100 * c.kernelSumError:+.3f}%)",
            c.kernelSumPassed,
            f"|error| < {100 * c.kernelSumTolerance:g}%",
        ),
        (
            f"D/sigma sigma   {c.zSigma:.4f} (robust, {c.skyPixels} pixels away from sources)",
            c.sigmaPassed,
            f"within {100 * c.sigmaTolerance:g}% of 1",
        ),
        (
            f"D/sigma mean    {c.zMean:+.4f}",
            c.meanPassed,
            f"|mean| < {c.meanTolerance:g}",
        ),
        (
            f"transient flux  measured/true {c.transientRatio:.4f} "
            f"+- {c.transientRatioErr:.4f} (mean of {c.nMeasured} of {c.nTransients})",
            c.transientsPassed,
            f"within {100 * c.transientTolerance:g}% on average",
        ),
    ]
    nFail = c.nFailed
    if not args.quiet:
        lines = [
            f"psfmatch demo: simulated {size} x {size} pair (seed {args.seed}): {nStars} stars, "
            f"{nTransients} transients, template FWHM {truth.templateFwhm:.2f} px, science FWHM "
            f"{fwhmS.min():.2f} to {fwhmS.max():.2f} px, flux scale {truth.fluxScale:g}, "
            f"background {b0:g} {bx:+g} x {by:+g} y",
            f"subtracted in {elapsed:.1f} s: convolved the "
            f"{'template' if result.convolved == 'Template' else 'science image'}, "
            f"{result.metadata['nCandidatesGood']} kernel sources used",
        ]
        width = max(len(text) for text, _, _ in checks)
        for text, ok, threshold in checks:
            lines.append(f"  {text:<{width}}  {_verdict(ok)} ({threshold})")
        lines.append(
            "all figures PASS"
            if nFail == 0
            else f"{nFail} figure(s) to CHECK: outside the threshold this demo expects"
        )
        lines.append(f"wrote {', '.join(str(p) for p in paths.values())}")
        if report is not None:
            lines.append(f"report {report}")
        print("\n".join(lines))
    return 0 if nFail == 0 else 3


# --------------------------------------------------------------------------------------------
# The parser


class _ConvolveAction(argparse.Action):
    """HOTPANTS ``-c t|i`` sets ``mode``."""

    def __call__(self, parser: Any, namespace: Any, values: Any, option_string: Any = None) -> None:
        setattr(namespace, self.dest, _CONVOLVE[values])


class _NormalizeAction(argparse.Action):
    def __call__(self, parser: Any, namespace: Any, values: Any, option_string: Any = None) -> None:
        setattr(namespace, self.dest, _NORMALIZE[values])


def _commonOptions() -> _Parser:
    common = _Parser(add_help=False)
    group = common.add_mutually_exclusive_group()
    group.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="log more: -v INFO, -vv DEBUG, -vvv also the trace loggers",
    )
    group.add_argument(
        "-q",
        "--quiet",
        action="count",
        default=0,
        help="print nothing on success and draw no progress bar: -q warnings only, -qq errors only",
    )
    common.add_argument(
        "--trace",
        action="append",
        default=[],
        metavar="[LOGGER=]N",
        help="show the trace messages of psfmatch loggers up to level N (0-5), as "
        "lsst.utils.logging.trace_set_at(LOGGER, N); LOGGER is psfmatch (the default) or one "
        "below it, e.g. psfmatch.imagePsfMatch=3 (repeatable)",
    )
    return common


def _buildParser(*, requireArguments: bool = True) -> _Parser:
    """The ``psfmatch`` parser; without ``requireArguments`` no argument is required (to find
    the unrecognized ones of a command line that also lacks required ones)."""
    parser = _Parser(
        prog="psfmatch",
        description="Alard-Lupton PSF matching and image subtraction.",
        allow_abbrev=False,
    )
    parser.add_argument("--version", action="version", version=f"psfmatch {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=requireArguments)
    common = _commonOptions()
    fmt = argparse.RawDescriptionHelpFormatter

    sub = commands.add_parser(
        "subtract",
        parents=[common],
        allow_abbrev=False,
        formatter_class=fmt,
        help="match the PSFs of two FITS images and subtract them",
        description=(
            "Match the template's PSF to the science image's (or the reverse) and write the\n"
            "difference image D = S - (K * T + b) in science units, with its mask and variance,\n"
            "the kernel and the kernel sources (LSST MaskedImage FITS layout).\n\n"
            "HOTPANTS aliases: -inim -tmplim -outim -oci -r -ko -bgo -ng -c -n -tu -iu -tl -il\n"
            "-tg -ig -tr -ir.\n"
            "Configuration order: --config-file, then --set, then the dedicated options."
        ),
        epilog=(
            "examples:\n"
            "  psfmatch subtract --science sci.fits --template tmpl.fits --output diff.fits\n"
            "  psfmatch subtract -inim sci.fits -tmplim tmpl.fits -outim diff.fits -ko 1 -bgo 1\n"
            "  psfmatch subtract --science s.fits --template t.fits --output d.fits \\\n"
            "      --set kernel.active.spatialKernelOrder=1 selection.minSnr=20"
        ),
    )
    io = sub.add_argument_group("images")
    required = requireArguments
    io.add_argument("--science", "-inim", required=required, metavar="FITS", help="science image")
    io.add_argument(
        "--template", "-tmplim", required=required, metavar="FITS", help="template image"
    )
    io.add_argument(
        "--output", "-outim", required=required, metavar="FITS", help="difference image to write"
    )
    io.add_argument(
        "--matched", "-oci", metavar="FITS", help="also write the convolved (PSF-matched) image"
    )
    io.add_argument(
        "--science-variance",
        metavar="FITS|NUMBER",
        help="science variance: a FITS file (its VARIANCE HDU, else its image) or a constant",
    )
    io.add_argument("--template-variance", metavar="FITS|NUMBER", help="template variance")
    io.add_argument(
        "--science-mask",
        metavar="FITS",
        help="science mask: psfmatch mask bits (a MASK HDU with MP_ planes, or integers)",
    )
    io.add_argument("--template-mask", metavar="FITS", help="template mask")
    io.add_argument(
        "--science-gain",
        "-ig",
        type=float,
        metavar="E/ADU",
        help="science gain, used when the variance is estimated (no VARIANCE HDU and no "
        "--science-variance) to add the stars' Poisson noise; without it bright stars get "
        "too little variance (HOTPANTS -ig)",
    )
    io.add_argument(
        "--template-gain", "-tg", type=float, metavar="E/ADU", help="template gain (HOTPANTS -tg)"
    )
    io.add_argument(
        "--science-read-noise",
        "-ir",
        type=float,
        metavar="E",
        help="science read noise in electrons, with --science-gain: an estimated variance is "
        "then HOTPANTS' model |image|/gain + (readnoise/gain)^2 from the pixel values (the sky "
        "must not have been subtracted) instead of the sky's measured scatter (HOTPANTS -ir)",
    )
    io.add_argument(
        "--template-read-noise",
        "-tr",
        type=float,
        metavar="E",
        help="template read noise in electrons, with --template-gain (HOTPANTS -tr)",
    )
    io.add_argument(
        "--science-upper",
        "-iu",
        type=float,
        metavar="VALUE",
        help="science pixels above VALUE are flagged SAT (HOTPANTS -iu)",
    )
    io.add_argument(
        "--template-upper",
        "-tu",
        type=float,
        metavar="VALUE",
        help="template pixels above VALUE are flagged SAT (HOTPANTS -tu)",
    )
    io.add_argument(
        "--science-lower",
        "-il",
        type=float,
        metavar="VALUE",
        help="science pixels below VALUE are flagged BAD and NO_DATA (HOTPANTS -il)",
    )
    io.add_argument(
        "--template-lower",
        "-tl",
        type=float,
        metavar="VALUE",
        help="template pixels below VALUE are flagged BAD and NO_DATA (HOTPANTS -tl)",
    )
    io.add_argument(
        "--ignore-origins",
        action="store_true",
        help="give the template the science image's origin (xy0) when their headers disagree",
    )
    io.add_argument(
        "--plots",
        metavar="DIR",
        help="also write the diagnostic figures (PNG) and a one-page report.html with the "
        "run's metadata and the candidate table into DIR (created); needs matplotlib, "
        'pip install "psfmatch[plot]"',
    )
    io.add_argument("--overwrite", action="store_true", help="replace existing output files")

    fit = sub.add_argument_group("fit")
    fit.add_argument(
        "--mode",
        choices=["auto", "convolveTemplate", "convolveScience", "preconvolve"],
        default=None,
        help="which image to convolve (default: auto, the one with the narrower PSF); "
        "preconvolve: the score image, the science image filtered by its PSF minus the template "
        "matched to that",
    )
    fit.add_argument(
        "-c",
        dest="mode",
        action=_ConvolveAction,
        choices=sorted(_CONVOLVE),
        help="HOTPANTS: convolve the (t)emplate or the (i)mage (science)",
    )
    fit.add_argument(
        "--normalize",
        "-n",
        action=_NormalizeAction,
        choices=list(_NORMALIZE),
        default=None,
        help=(
            "photometric system of the difference and convolved images: the (t)emplate's, the "
            "(i)mage's (science) or the (u)nconvolved image's, by rescaling with the kernel sum "
            "(HOTPANTS -n); default: difference in science units, convolved image in the units "
            "of the image it was matched to"
        ),
    )
    fit.add_argument(
        "--kernel-half-width",
        "-r",
        type=int,
        metavar="R",
        help="kernel half-width: kernelSize = 2R+1 (turns off scaleByFwhm)",
    )
    fit.add_argument(
        "--ngauss",
        "-ng",
        nargs="+",
        metavar="N",
        help="Gaussians of the basis: N [d1 s1 ... dN sN] (degree, sigma in pixels; with the "
        "pairs the widths are used as given, scaleByFwhm off)",
    )
    fit.add_argument(
        "--kernel-order", "-ko", type=int, metavar="N", help="spatial order of the kernel"
    )
    fit.add_argument(
        "--bg-order", "-bgo", type=int, metavar="N", help="spatial order of the background"
    )
    fit.add_argument("--science-fwhm", type=float, metavar="PIX", help="science PSF FWHM (pixels)")
    fit.add_argument(
        "--template-fwhm", type=float, metavar="PIX", help="template PSF FWHM (pixels)"
    )
    fit.add_argument(
        "--candidates",
        metavar="FILE",
        help="kernel source positions: a text/CSV/ECSV table with x and y columns (0-based "
        "parent pixel coordinates), instead of finding stars",
    )
    fit.add_argument(
        "--config-file",
        action="append",
        metavar="PY",
        help="a Python file run with `config` bound to an ImagePsfMatchConfig (repeatable)",
    )
    fit.add_argument(
        "--set",
        action="extend",
        nargs="+",
        metavar="KEY=VALUE",
        help="config overrides such as kernel.active.spatialKernelOrder=1 (values are Python "
        "literals, else strings)",
    )
    sub.set_defaults(func=_subtract)

    batch = commands.add_parser(
        "batch",
        parents=[common],
        allow_abbrev=False,
        formatter_class=fmt,
        help="subtract many pairs listed in a CSV file on a Dask cluster, resumably",
        description=(
            "Run psfmatch subtract on every pair of PAIRS, a CSV file with the columns\n"
            "science, template, output (required) and matched, mode, kernelOrder, bgOrder,\n"
            "scienceFwhm, templateFwhm, ignoreOrigins (optional, per pair; relative paths are\n"
            "relative to the CSV file), on a Dask cluster: a local one by default, or the\n"
            'scheduler at --scheduler. Needs dask: pip install "psfmatch[distributed]".\n\n'
            "Outputs are written atomically; complete outputs are skipped on a rerun. Each\n"
            "pair's outcome is appended to a JSON-lines manifest. Exit status 1 if any pair\n"
            "failed."
        ),
        epilog=(
            "examples:\n"
            "  psfmatch batch pairs.csv --workers 4\n"
            "  psfmatch batch pairs.csv --scheduler tcp://10.0.0.5:8786 -ko 1\n\n"
            "pairs.csv:\n"
            "  science,template,output,kernelOrder\n"
            "  sci/v1.fits,tmpl/t.fits,diff/v1.fits,\n"
            "  sci/v2.fits,tmpl/t.fits,diff/v2.fits,1"
        ),
    )
    batch.add_argument("pairs", metavar="PAIRS", help="the CSV pair list")
    where = batch.add_argument_group("cluster")
    where.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="the address of a running Dask scheduler (tcp://host:8786); default: start a "
        "local cluster",
    )
    where.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="worker processes of the local cluster (default: one per CPU)",
    )
    where.add_argument(
        "--threads-per-worker",
        type=int,
        default=1,
        metavar="N",
        help="pairs each local worker runs at once (default 1; each needs ~230 bytes per pixel)",
    )
    where.add_argument(
        "--core-threads",
        type=int,
        default=1,
        metavar="N",
        help="threads of psfmatch's compiled core per pair (default 1: the workers already use "
        "the cores; 0: every hardware thread)",
    )
    where.add_argument(
        "--max-in-flight",
        type=int,
        metavar="N",
        help="most pairs submitted at once (default: twice the cluster's threads)",
    )
    runOptions = batch.add_argument_group("outputs")
    runOptions.add_argument(
        "--manifest",
        metavar="JSONL",
        help="the manifest to append to (default: psfmatch-batch.jsonl in the outputs' common "
        "directory)",
    )
    runOptions.add_argument(
        "--overwrite", action="store_true", help="redo every pair and replace its outputs"
    )
    runOptions.add_argument(
        "--no-template-cache",
        action="store_true",
        help="analyse a shared template for every pair instead of once per worker",
    )
    batchFit = batch.add_argument_group("fit (per-pair columns override these)")
    batchFit.add_argument(
        "--mode",
        choices=["auto", "convolveTemplate", "convolveScience", "preconvolve"],
        default=None,
        help="which image to convolve (default: auto)",
    )
    batchFit.add_argument(
        "--kernel-order", "-ko", type=int, metavar="N", help="spatial order of the kernel"
    )
    batchFit.add_argument(
        "--bg-order", "-bgo", type=int, metavar="N", help="spatial order of the background"
    )
    batchFit.add_argument(
        "--config-file",
        action="append",
        metavar="PY",
        help="a Python file run with `config` bound to an ImagePsfMatchConfig (repeatable)",
    )
    batchFit.add_argument(
        "--set", action="extend", nargs="+", metavar="KEY=VALUE", help="config overrides"
    )
    batch.set_defaults(func=_batch, kernel_half_width=None, ngauss=None)

    demo = commands.add_parser(
        "demo",
        parents=[common],
        allow_abbrev=False,
        formatter_class=fmt,
        help="simulate a pair with a known answer, subtract it and compare with the truth",
        description=(
            "Simulate a template/science pair (spatially varying PSF, flux scale, background,\n"
            "transients), write it to FITS, subtract it and compare with the truth: the kernel\n"
            f"sum (PASS within {100 * KSUM_TOLERANCE:g}%), the robust sigma of D/sigma away from "
            f"sources (within {100 * SIGMA_TOLERANCE:g}% of 1)\n"
            f"and its mean (|mean| < {MEAN_TOLERANCE:g}), and the transients' fluxes measured "
            f"in D (within {100 * TRANSIENT_TOLERANCE:g}% on average).\n"
            "Exit status 3 if any figure is outside its threshold."
        ),
    )
    demo.add_argument(
        "--output-dir",
        default="psfmatch-demo",
        metavar="DIR",
        help="where to write the files (created; default: ./psfmatch-demo)",
    )
    demo.add_argument(
        "--size", type=int, default=1024, metavar="N", help="image size N x N (default 1024)"
    )
    demo.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    demo.add_argument(
        "--plots",
        metavar="DIR",
        help="also write the diagnostic figures and report.html into DIR (needs matplotlib)",
    )
    demo.add_argument("--overwrite", action="store_true", help="replace existing files")
    demo.set_defaults(func=_demo)
    return parser


def _errorMessage(err: BaseException) -> str:
    if isinstance(err, PsfMatchError):
        return _firstLine(err)
    if isinstance(err, OSError) and err.filename is not None and err.strerror:
        return f"{err.strerror}: {err.filename!r}"
    return _firstLine(err)


def _parseArguments(parser: _Parser, argv: list[str]) -> argparse.Namespace:
    """``parser.parse_args(argv)``, except that unrecognized arguments are reported before
    missing required ones (argparse checks a subcommand's required options first, so a
    misspelt ``--sciense s.fits`` got "required: --science"), with the subcommand's help."""
    try:
        args, extras = parser.parse_known_args(argv)
    except _UsageError as err:
        if not str(err).startswith("the following arguments are required"):
            raise
        try:
            args, extras = _buildParser(requireArguments=False).parse_known_args(argv)
        except _UsageError:
            raise err from None
        if not extras:
            raise
    if extras:
        command = f"psfmatch {args.command}" if args.command else "psfmatch"
        raise _UsageError(f"unrecognized arguments: {' '.join(extras)} (see '{command} --help')")
    return args


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
        a figure outside its threshold.
    """
    parser = _buildParser()
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        for token in argv:
            if token in _HOTPANTS_UNSUPPORTED:
                raise _UsageError(
                    f"the HOTPANTS option {token} is not supported; psfmatch subtract takes "
                    "-inim -tmplim -outim -oci -r -ko -bgo -ng -c -n -tu -iu -tl -il -tg -ig "
                    "-tr -ir (see 'psfmatch subtract --help')"
                )
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
        except KeyboardInterrupt:
            print("psfmatch: interrupted", file=sys.stderr)
            return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
