# SPDX-License-Identifier: BSD-3-Clause
"""HOTPANTS' options on the ``psfmatch subtract`` command line, declared once.

`_ALIASES` maps each HOTPANTS (v5.1.11) option that ``psfmatch subtract`` takes to the
psfmatch option it is. The parser gives each psfmatch option its HOTPANTS names from it
(`_aliasesOf`), the help text and the message for an unsupported option list them from it,
and the tests hold the parser and README.md's table of aliases to it.
"""

from __future__ import annotations

import argparse
import textwrap
from collections.abc import Sequence
from typing import Any

from .usage import _UsageError

#: HOTPANTS option -> the ``psfmatch subtract`` option it is, in the order they are listed.
_ALIASES = {
    "-inim": "--science",
    "-tmplim": "--template",
    "-outim": "--output",
    "-oci": "--matched",
    "-r": "--kernel-half-width",
    "-ko": "--kernel-order",
    "-bgo": "--bg-order",
    "-ng": "--ngauss",
    "-c": "--mode",
    "-n": "--normalize",
    "-tu": "--template-upper",
    "-iu": "--science-upper",
    "-tl": "--template-lower",
    "-il": "--science-lower",
    "-tg": "--template-gain",
    "-ig": "--science-gain",
    "-tr": "--template-read-noise",
    "-ir": "--science-read-noise",
}

#: HOTPANTS options whose values are not their psfmatch option's: each is an option of its
#: own that translates its values (``-c t`` is ``--mode convolveTemplate``).
_OWN_VALUES = frozenset({"-c"})

#: HOTPANTS (v5.1.11) options that ``psfmatch subtract`` does not take. Some of them would
#: otherwise parse as a supported short option with an attached value (``-nsx`` as ``-n sx``).
_UNSUPPORTED = frozenset(
    "-tuk -tp -tni -tmi -iuk -ip -ini -imi -ki -kcs -ft -sft -nft -mins -mous "
    "-omi -gd -nrx -nry -rf -rkw -nsx -nsy -ssf -cmp -afssc -nss -rss -savexy -fom -sconv -ssig "
    "-ks -kfm -okn -fi -fin -convvar -oni -ond -nim -ndm -cim -allm -nc -hki -oki -sht -obs "
    "-obz -nsht -nbs -nbz -pca".split()
)

#: HOTPANTS ``-c`` values.
_CONVOLVE = {"t": "convolveTemplate", "i": "convolveScience"}

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


def _aliasesOf(option: str) -> list[str]:
    """The HOTPANTS names of a psfmatch option that takes the same values."""
    return [
        flag for flag, target in _ALIASES.items() if target == option and flag not in _OWN_VALUES
    ]


def _ownOptionsFor(option: str) -> list[str]:
    """The HOTPANTS options that set ``option``'s destination with values of their own."""
    return [flag for flag, target in _ALIASES.items() if target == option and flag in _OWN_VALUES]


def _aliasList() -> str:
    """The HOTPANTS options ``psfmatch subtract`` takes, space-separated."""
    return " ".join(_ALIASES)


def _helpParagraph(width: int) -> str:
    """The sentence of ``psfmatch subtract --help`` that lists the aliases."""
    return textwrap.fill(f"HOTPANTS aliases: {_aliasList()}.", width=width)


def _checkSupported(argv: Sequence[str]) -> None:
    """A usage error for the first HOTPANTS option of ``argv`` that psfmatch does not take."""
    for token in argv:
        if token in _UNSUPPORTED:
            raise _UsageError(
                f"the HOTPANTS option {token} is not supported; psfmatch subtract takes "
                f"{_aliasList()} (see 'psfmatch subtract --help')"
            )


class _ConvolveAction(argparse.Action):
    """HOTPANTS ``-c t|i`` sets ``mode``."""

    def __call__(self, parser: Any, namespace: Any, values: Any, option_string: Any = None) -> None:
        setattr(namespace, self.dest, _CONVOLVE[values])


class _NormalizeAction(argparse.Action):
    """``-n``/``--normalize`` stores the photometric system its value names."""

    def __call__(self, parser: Any, namespace: Any, values: Any, option_string: Any = None) -> None:
        setattr(namespace, self.dest, _NORMALIZE[values])
