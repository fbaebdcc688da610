# SPDX-License-Identifier: BSD-3-Clause
"""Mask-plane sets used in more than one place, written once."""

from __future__ import annotations

__all__ = ["UNUSABLE_PLANES"]

#: Pixels with any of these planes are not usable for statistics of, or detection in, an image
#: (the default of ``diaSourceBadMaskPlanes`` and of the decorrelation's ``badMaskPlanes``).
UNUSABLE_PLANES = ("NO_DATA", "EDGE", "SAT", "BAD", "CR")
