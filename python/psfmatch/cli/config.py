# SPDX-License-Identifier: BSD-3-Clause
"""The configuration of ``psfmatch subtract`` and ``psfmatch batch``: the defaults of
`ImagePsfMatchConfig` with ``mode = "auto"``, each ``--config-file``, each ``--set``, then the
dedicated options (``--mode``/``-c``, ``-r``, ``-ng``, ``--kernel-order``, ``--bg-order``),
which therefore win."""

from __future__ import annotations

import argparse
import ast
import difflib
import logging
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

from .signals import _Terminated
from .usage import _firstLine, _UsageError

_log = logging.getLogger("psfmatch.cli")


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
    except (KeyboardInterrupt, _Terminated):
        raise
    except SystemExit as err:
        # sys.exit() or exit() in the file: it used to end psfmatch with that status (0: no
        # output, no message). A config file only sets fields.
        raise _UsageError(
            f"config file {path!r} called sys.exit({err.code!r}); a config file may only set "
            "the fields of `config`, not end the program"
        ) from err
    except BaseException as err:  # anything else the file's own Python code raises
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
    from ..image_psf_match import ImagePsfMatchConfig

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
