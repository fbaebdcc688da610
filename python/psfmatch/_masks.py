# SPDX-License-Identifier: BSD-3-Clause
"""Mask-plane sets used in more than one place, written once."""

from __future__ import annotations

__all__ = ["UNUSABLE_PLANES", "dilate"]

import numpy as np

#: Pixels with any of these planes are not usable for statistics of, or detection in, an image
#: (the default of ``diaSourceBadMaskPlanes`` and of the decorrelation's ``badMaskPlanes``).
UNUSABLE_PLANES = ("NO_DATA", "EDGE", "SAT", "BAD", "CR")


def dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """Grow a boolean mask by a (2·radius+1)² box: OR over the shifts along x, then along y
    (the box is separable), on boolean arrays."""
    out = mask.copy()
    for axis in (1, 0):
        grown = out.copy()
        n = out.shape[axis]
        for shift in range(1, min(radius, n - 1) + 1):
            lo = [slice(None)] * 2
            hi = [slice(None)] * 2
            lo[axis], hi[axis] = slice(0, n - shift), slice(shift, n)
            grown[tuple(lo)] |= out[tuple(hi)]
            grown[tuple(hi)] |= out[tuple(lo)]
        out = grown
    return out
