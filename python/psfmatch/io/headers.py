# SPDX-License-Identifier: BSD-3-Clause
"""Task metadata as FITS header cards and back: `metadataToHeader`, `headerToMetadata`."""

from __future__ import annotations

import contextlib
import logging
import math
import re
from collections.abc import Mapping
from typing import Any

from astropy.io import fits

from .._logcapture import _capturedWarnings
from ..errors import InvalidInputError
from ..task import TaskMetadata

_log = logging.getLogger("psfmatch.io")

_NONFINITE_MARKER = "non-finite float"
"""Card comment marking a NaN or infinity that `metadataToHeader` had to store as a string."""

_LIST_KEY = re.compile(r"^(?P<name>.+)\[(?P<index>\d+)\]$")
"""Keyword of one element of a list written by `metadataToHeader`: ``name[i]``."""

_STANDARD_KEY = re.compile(r"^[A-Z0-9_-]{1,8}$")
"""A keyword that needs no ``HIERARCH`` convention."""

_STRUCTURAL_KEYS = frozenset(
    {
        "SIMPLE",
        "XTENSION",
        "BITPIX",
        "NAXIS",
        "EXTEND",
        "PCOUNT",
        "GCOUNT",
        "GROUPS",
        "BSCALE",
        "BZERO",
        "BLANK",
        "END",
        "CHECKSUM",
        "DATASUM",
    }
)
"""Keywords that describe an HDU's structure: never copied between HDUs nor into metadata."""

_COMMENTARY_KEYS = frozenset({"COMMENT", "HISTORY", ""})


def _fitsValue(key: str, value: Any) -> tuple[Any, str]:
    """The header value and comment that store one metadata scalar."""
    if isinstance(value, float) and not math.isfinite(value):
        # FITS header values cannot be NaN or infinite: store the string float() parses.
        return repr(value), _NONFINITE_MARKER
    return value, ""


def _cardKey(key: str) -> str:
    return key if _STANDARD_KEY.match(key) else f"HIERARCH {key}"


def _addCard(header: fits.Header, key: str, value: Any, comment: str = "") -> bool:
    """Append one card; log and return `False` if it cannot be a FITS card."""
    if not key.isascii() or not key.isprintable() or "=" in key or key != key.strip():
        raise InvalidInputError(
            f"metadata key {key!r} cannot be a FITS keyword (printable ASCII without '=' or "
            "surrounding spaces)"
        )
    if isinstance(value, str) and not (value.isascii() and value.isprintable()):
        raise InvalidInputError(
            f"metadata key {key!r}: a FITS string must be printable ASCII, got {value!r}"
        )
    if key in header:
        _log.warning(
            "metadata key %r collides with an earlier key (FITS keywords ignore case); skipped",
            key,
        )
        return False
    with _capturedWarnings() as caught:
        # astropy warns when a card is too long and would be cut; such a key is skipped
        # (with a logged warning) rather than written truncated. (This thread's warnings
        # only: catch_warnings is process-wide.)
        try:
            card = fits.Card(_cardKey(key), value, comment)
            card.verify("exception")
            image = card.image
        except (ValueError, fits.VerifyError) as err:
            _log.warning("metadata key %r cannot be a FITS card (%s); skipped", key, err)
            return False
    if caught or (not isinstance(value, str) and len(image) > fits.Card.length):
        _log.warning("metadata key %r with value %r does not fit a FITS card; skipped", key, value)
        return False
    header.append(card, end=True)
    return True


def metadataToHeader(
    metadata: TaskMetadata | Mapping[str, Any], *, prefix: str = ""
) -> fits.Header:
    """Flatten task metadata into FITS header cards.

    Parameters
    ----------
    metadata : `~psfmatch.task.TaskMetadata` or `~collections.abc.Mapping`
        The metadata; a mapping is first converted to a `TaskMetadata` (nested mappings become
        dotted keys). Not modified.
    prefix : `str`, optional
        Prepended to every key, e.g. ``"psfmatch."``.

    Returns
    -------
    header : `astropy.io.fits.Header`
        One card per leaf, in `TaskMetadata.names` order.

    Raises
    ------
    InvalidInputError
        If ``metadata`` is not a mapping of scalars and lists, or a key cannot be a FITS
        keyword (non-ASCII, ``=``, leading or trailing spaces) or a string value is not ASCII.

    Notes
    -----
    - The keyword is ``prefix + dotted key``. A keyword of at most 8 characters from
      ``A-Z0-9_-`` is a standard card; any other (longer, lower case, dots) uses the
      ``HIERARCH`` convention, which keeps its case.
    - Booleans, integers, floats and strings are stored as such (long strings continue on
      ``CONTINUE`` cards). NaN and ±inf, which FITS header values cannot hold, are stored as
      the strings ``'nan'``, ``'inf'``, ``'-inf'`` with the comment ``non-finite float``.
    - A list is stored element by element under ``key[0]``, ``key[1]``, ... . An empty list
      writes nothing.
    - Keys that cannot fit in one 80-character card with their value, or that differ from an
      earlier key only in case, are skipped with a logged warning.

    `headerToMetadata` reverses all of this, except for skipped keys and empty lists.
    """
    if not isinstance(prefix, str):
        raise InvalidInputError(f"prefix: expected a str, got {type(prefix).__name__}")
    if isinstance(metadata, TaskMetadata):
        md = metadata
    elif isinstance(metadata, Mapping):
        try:
            md = TaskMetadata(metadata)
        except (TypeError, KeyError) as err:
            raise InvalidInputError(f"metadata: {err}") from err
    else:
        raise InvalidInputError(
            f"metadata: expected a TaskMetadata or mapping, got {type(metadata).__name__}"
        )
    header = fits.Header()
    for name in md.names():
        value = md[name]
        key = prefix + name
        if isinstance(value, list):
            for index, element in enumerate(value):
                _addCard(header, f"{key}[{index}]", *_fitsValue(key, element))
        else:
            _addCard(header, key, *_fitsValue(key, value))
    return header


def _isStructural(key: str) -> bool:
    upper = key.upper()
    return upper in _STRUCTURAL_KEYS or re.fullmatch(r"NAXIS\d+", upper) is not None


def headerToMetadata(header: fits.Header, *, prefix: str = "") -> TaskMetadata:
    """Rebuild task metadata from header cards written by `metadataToHeader`.

    Parameters
    ----------
    header : `astropy.io.fits.Header`
        The header, e.g. the primary header of a file written by `writeMaskedImage`
        (``info["primaryHeader"]`` of `readMaskedImage`).
    prefix : `str`, optional
        Only cards whose keyword starts with it (case-sensitively) are read, without it.

    Returns
    -------
    metadata : `~psfmatch.task.TaskMetadata`
        One leaf per card; ``key[i]`` cards become a list ordered by ``i``; string values with
        the ``non-finite float`` comment become floats.

    Raises
    ------
    InvalidInputError
        If ``header`` is not an `astropy.io.fits.Header`.

    Notes
    -----
    Best effort: structural keywords (``SIMPLE``, ``BITPIX``, ``NAXISn``, ``EXTEND``,
    checksums, ...) and ``COMMENT``/``HISTORY`` cards are skipped, as are cards without a value
    and cards that conflict with an earlier one (``a`` holding a value and ``a.b`` a leaf),
    which are logged. With an empty prefix every other card is read, including the header's
    own keywords. Standard keywords come back upper case, as FITS stores them.
    """
    if not isinstance(header, fits.Header):
        raise InvalidInputError(
            f"header: expected an astropy.io.fits.Header, got {type(header).__name__}"
        )
    md = TaskMetadata()
    lists: dict[str, dict[int, Any]] = {}
    order: list[str] = []
    scalars: dict[str, Any] = {}
    for card in header.cards:
        key = card.keyword
        if key.upper() in _COMMENTARY_KEYS or _isStructural(key) or not key.startswith(prefix):
            continue
        name = key[len(prefix) :]
        value = card.value
        if not name or isinstance(value, fits.card.Undefined) or value is None:
            continue
        if isinstance(value, str) and card.comment == _NONFINITE_MARKER:
            with contextlib.suppress(ValueError):
                value = float(value)
        elif isinstance(value, complex):
            value = str(value)
        match = _LIST_KEY.match(name)
        if match:
            listName = match["name"]
            if listName not in lists:
                lists[listName] = {}
                order.append(listName)
            lists[listName][int(match["index"])] = value
        else:
            scalars[name] = value
            order.append(name)
    for name in order:
        value = [lists[name][i] for i in sorted(lists[name])] if name in lists else scalars[name]
        try:
            md[name] = value
        except (TypeError, KeyError) as err:
            _log.warning("header card %r cannot be a metadata key (%s); skipped", name, err)
    return md
