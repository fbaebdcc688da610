# SPDX-License-Identifier: BSD-3-Clause
"""Reading and writing images: FITS files, numpy arrays, `~astropy.nddata.NDData`.

`readImage` is the one place where user input becomes a `~psfmatch.image.MaskedImage`: a FITS
path, a `MaskedImage`, a 2-D array, a numpy masked array or an `~astropy.nddata.NDData` /
`~astropy.nddata.CCDData`, with an optional separate variance, sigma or mask, and an optional
valid data range (HOTPANTS' upper and lower thresholds) that flags the pixels outside it in the
mask. When no variance is available it is estimated from the image (see `readImage`).

`readPositions` reads x, y positions (kernel sources for ``psfmatch.subtract(candidates=...)``)
from a text, CSV, ECSV or FITS table.

`readMaskedImage` reads a FITS file. It recognises, in this order:

1. the LSST ``MaskedImage`` layout: image, mask and variance extensions tagged by the header
   keyword ``EXTTYPE`` (``IMAGE``, ``MASK``, ``VARIANCE``) or, failing that, by ``EXTNAME``;
   the mask extension's ``MP_<PLANE>`` keywords give the bit of each mask plane;
2. the HST/JWST layout: extensions named ``SCI``, ``ERR`` (standard deviation) and ``DQ``
   (data quality; any nonzero value becomes the ``BAD`` plane);
3. astropy's `~astropy.nddata.CCDData` layout: data in the primary HDU with ``UNCERT`` and/or
   ``MASK`` extensions, read with `CCDData.read <astropy.nddata.CCDData.read>`;
4. a plain image: the primary HDU if it holds a 2-D image, else the first extension that does.

`writeMaskedImage` writes the LSST layout, atomically. `metadataToHeader` and
`headerToMetadata` turn a `~psfmatch.task.TaskMetadata` into FITS header cards and back.

The image origin ``xy0``
------------------------
The parent coordinates of pixel ``[0, 0]`` are stored as the LSST pipelines store them: an
alternate linear world coordinate system ``A`` in which pixel ``(CRPIX1A, CRPIX2A)`` (1-based;
normally 1) has coordinates ``(CRVAL1A, CRVAL2A)``, so ``x0 = CRVAL1A - (CRPIX1A - 1)``; and
the IRAF keywords ``LTV1``/``LTV2`` (``x0 = -LTV1``), which are used when the ``A`` keywords
are absent (or describe something other than a ``LINEAR`` axis). When neither is present,
``xy0 = (0, 0)``. The origin is taken from the image HDU; a mask or variance HDU whose origin
differs is logged and reported, not an error (the reference reads it the same way).

Diagnostics
-----------
The reading functions log what they decided to the logger ``"psfmatch.io"`` and, given an
``info`` dict, fill it with the same facts (layout, origin source, mask-plane remapping,
whether the variance was estimated, and any warning astropy raised while reading). They never
issue Python warnings: warnings that astropy raises while reading are captured, logged and
reported in ``info["warnings"]``, and those that mean the file is damaged (truncated,
corrupt) become an `~psfmatch.errors.InvalidInputError`. A ``CHECKSUM`` or ``DATASUM`` card
that does not match data that read cleanly is such a warning, not an error: cut-outs made by
common tools copy the original frame's cards.
"""

from __future__ import annotations

from .headers import headerToMetadata, metadataToHeader

# Not public: `psfmatch.subtract` and the command line catch it to name their own options.
from .inputs import _VarianceEstimateError as _VarianceEstimateError
from .inputs import readImage
from .layouts import readMaskedImage
from .nddata import toCCDData
from .positions import readPositions
from .writing import writeMaskedImage

__all__ = [
    "headerToMetadata",
    "metadataToHeader",
    "readImage",
    "readMaskedImage",
    "readPositions",
    "toCCDData",
    "writeMaskedImage",
]
