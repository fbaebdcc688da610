# SPDX-License-Identifier: BSD-3-Clause
"""The ``psfmatch`` parser: the options every sub-command shares, each sub-command's own part
(`subtract`, `batch`, `demo` add theirs), and the parsing rules argparse does not have."""

from __future__ import annotations

import argparse
from typing import Any, NoReturn

from .. import __version__
from . import batch, demo, subtract
from .usage import _UsageError


class _Parser(argparse.ArgumentParser):
    """An `argparse.ArgumentParser` whose errors raise `_UsageError` instead of exiting, and
    whose ``allow_abbrev=False`` also holds for single-dash options."""

    def error(self, message: str) -> NoReturn:
        raise _UsageError(f"{message} (see '{self.prog} --help')")

    def _get_option_tuples(self, option_string: str) -> list[Any]:
        # The argparse of older Pythons (3.11 among them) matches a single-dash prefix
        # despite allow_abbrev=False: "-o" was "ambiguous" between -outim and -oci, and
        # "-k 1" silently meant "-ko 1". Keep only what is not an abbreviation: a one-letter
        # option with its value attached ("-r10", "-vv").
        found = super()._get_option_tuples(option_string)
        if self.allow_abbrev:
            return list(found)
        return [match for match in found if match[1] == option_string[:2]]


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
    subtract._addParser(commands, common, requireArguments)
    batch._addParser(commands, common)
    demo._addParser(commands, common)
    return parser


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
