# SPDX-License-Identifier: BSD-3-Clause
"""Argument checks that name the argument in their `InvalidInputError`: a finite number, a
positive one, a count, a sequence of numbers (the simulator's and its PSF model's)."""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence
from typing import Any

import numpy as np

from .errors import InvalidInputError


def _finiteFloat(value: Any, name: str) -> float:
    """``value`` as a finite float, or an `InvalidInputError` naming ``name``."""
    if isinstance(value, (bool, np.bool_)):
        raise InvalidInputError(f"{name}: expected a number, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InvalidInputError(f"{name}: expected a number, got {value!r}") from None
    if not math.isfinite(number):
        raise InvalidInputError(f"{name}: expected a finite number, got {value!r}")
    return number


def _positiveFloat(value: Any, name: str, *, allowZero: bool = False) -> float:
    """``value`` as a finite float > 0 (or >= 0), or an `InvalidInputError`."""
    number = _finiteFloat(value, name)
    if number < 0.0 or (number == 0.0 and not allowZero):
        allowed = ">= 0" if allowZero else "> 0"
        raise InvalidInputError(f"{name}: expected a number {allowed}, got {value!r}")
    return number


def _nonNegativeInt(value: Any, name: str) -> int:
    """``value`` as an int >= 0, or an `InvalidInputError`."""
    if isinstance(value, (bool, np.bool_)):
        raise InvalidInputError(f"{name}: expected an integer >= 0, got {value!r}")
    try:
        number = operator.index(value)
    except TypeError:
        raise InvalidInputError(f"{name}: expected an integer >= 0, got {value!r}") from None
    if number < 0:
        raise InvalidInputError(f"{name}: expected an integer >= 0, got {number}")
    return number


def _floatSequence(value: Any, name: str, length: int) -> tuple[float, ...]:
    """``value`` as a tuple of ``length`` finite floats, or an `InvalidInputError`."""
    if isinstance(value, (str, bytes)) or not isinstance(value, (Sequence, np.ndarray)):
        raise InvalidInputError(f"{name}: expected a sequence of {length} numbers, got {value!r}")
    if len(value) != length:
        raise InvalidInputError(
            f"{name}: expected a sequence of {length} numbers, got {len(value)}: {value!r}"
        )
    return tuple(_finiteFloat(v, f"{name}[{i}]") for i, v in enumerate(value))
