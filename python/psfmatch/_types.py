# SPDX-License-Identifier: BSD-3-Clause
"""The types of the inputs psfmatch's public functions accept, named once for their signatures.

Each alias says what a caller may pass; `psfmatch.io.readImage` says how each is read.
"""

from __future__ import annotations

__all__ = ["ImageInput", "MaskInput", "PositionsInput", "PsfInput", "PsfModel", "VarianceInput"]

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias

import numpy as np

if TYPE_CHECKING:
    from astropy.nddata import NDData
    from astropy.table import Table

    from .image import MaskedImage


class PsfModel(Protocol):
    """A PSF object: anything with ``computeKernelImage(x, y)`` returning an odd-sized image
    (an array, or an object with an ``array`` attribute), as psfmatch's and LSST's PSFs."""

    def computeKernelImage(self, x: float, y: float) -> Any: ...


#: An image: a FITS path, a 2-D array (numpy masked arrays carry their mask), an
#: `~astropy.nddata.NDData`/`~astropy.nddata.CCDData`, or a `MaskedImage`.
ImageInput: TypeAlias = "str | os.PathLike[str] | np.ndarray | NDData | MaskedImage"
#: A variance plane: a number (the same everywhere), a 2-D array or a FITS path.
VarianceInput: TypeAlias = "float | np.ndarray | str | os.PathLike[str]"
#: A mask: a 2-D integer (bit planes) or boolean (True = bad) array, or a FITS path.
MaskInput: TypeAlias = "np.ndarray | str | os.PathLike[str]"
#: Kernel-source positions (parent coordinates): a table with ``x`` and ``y`` columns, or
#: (x, y) pairs.
PositionsInput: TypeAlias = "Table | np.ndarray | Sequence[tuple[float, float]]"
#: A PSF: an odd-sized 2-D image, a FITS path holding one, or a PSF object.
PsfInput: TypeAlias = "np.ndarray | str | os.PathLike[str] | PsfModel"
