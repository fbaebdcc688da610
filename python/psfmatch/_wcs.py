# SPDX-License-Identifier: BSD-3-Clause
"""The WCSs of images to align (`psfmatch.align`): read from FITS files, headers, NDData or
astropy WCS objects (`readWcs`), and moved to a cut-out's origin (`_shiftedWcs`). astropy.wcs
is imported only when a WCS is read.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from ._logcapture import _capturedWarnings
from .errors import InvalidInputError

_log = logging.getLogger("psfmatch.align")


def readWcs(source: Any, name: str = "wcs") -> Any:
    """A two-axis celestial `astropy.wcs.WCS` from what describes one.

    Parameters
    ----------
    source : `astropy.wcs.WCS`, `astropy.io.fits.Header`, NDData, dict or path
        A WCS; a FITS header holding one (SIP ``A_p_q``/``B_p_q`` and TPV ``PVi_j`` cards
        included); an NDData with a ``wcs``; `psfmatch.io.readImage`'s ``info`` of a FITS
        file (its image HDU's header, else its primary header); or a FITS file, the first of
        whose headers that holds one (an astrometry.net ``.wcs`` file, an image).
    name : `str`, optional
        What the WCS describes, for the messages.

    Returns
    -------
    wcs : `astropy.wcs.WCS`

    Raises
    ------
    InvalidInputError
        Nothing that holds a celestial WCS of two axes.
    """
    from astropy.io import fits
    from astropy.nddata import NDData
    from astropy.wcs import WCS

    if isinstance(source, NDData):
        source = source.wcs
        if source is None:
            raise InvalidInputError(f"{name}: the NDData has no wcs")
    if isinstance(source, str | os.PathLike):
        return _wcsFromFile(source, name)
    if isinstance(source, dict):
        headers = [source.get(key) for key in ("imageHeader", "primaryHeader")]
        headers = [h for h in headers if isinstance(h, fits.Header)]
        if not headers:
            raise InvalidInputError(
                f"{name}: the image carries no WCS (it is not a FITS file or an NDData with a "
                f"wcs); pass {name}= (an astropy WCS or a FITS header)"
            )
        for header in headers:
            wcs = _wcsFromHeader(header, name)
            if wcs is not None:
                return wcs
        raise InvalidInputError(
            f"{name}: {source.get('path', 'the file')!r} has no celestial WCS (CTYPE1/2 "
            "'RA---xxx'/'DEC--xxx' with CRPIX, CRVAL and CD or CDELT) in its image or primary "
            "header"
        )
    if isinstance(source, fits.Header):
        wcs = _wcsFromHeader(source, name)
        if wcs is None:
            raise InvalidInputError(f"{name}: the header holds no celestial WCS")
        return wcs
    if isinstance(source, WCS):
        if source.naxis != 2 or not source.has_celestial:
            raise InvalidInputError(f"{name}: expected a celestial WCS of two axes, got {source!r}")
        return source
    raise InvalidInputError(
        f"{name}: expected an astropy WCS, a FITS header or an NDData with a wcs, got "
        f"{type(source).__name__}"
    )


def _wcsFromFile(path: Any, name: str) -> Any:
    """The first celestial WCS among a FITS file's headers."""
    from astropy.io import fits

    from .io.paths import _asPath, _checkInputFile

    filePath = _asPath(path, name)
    _checkInputFile(filePath)
    try:
        # The file's own oddities are dropped (its WCS is checked below); this thread's only:
        # catch_warnings is process-wide, and overlapping blocks restore filters out of order.
        with _capturedWarnings():
            with fits.open(filePath, memmap=False) as hdul:
                headers = [hdu.header.copy() for hdu in hdul]
    except OSError as err:
        raise InvalidInputError(f"{name}: cannot read {str(filePath)!r} as FITS: {err}") from err
    for header in headers:
        wcs = _wcsFromHeader(header, name)
        if wcs is not None:
            return wcs
    raise InvalidInputError(f"{name}: {str(filePath)!r} holds no celestial WCS in any header")


def _wcsFromHeader(header: Any, name: str) -> Any:
    """The celestial WCS of a header, or None; astropy's warnings about the header (fixed
    keywords, ...) are logged, not raised (they describe the file, not the caller's code)."""
    from astropy.wcs import WCS

    with _capturedWarnings() as caught:  # this thread's warnings only, as above
        try:
            wcs = WCS(header, naxis=2, relax=True)
        except KeyError:
            return None  # astropy's answer to a header with no WCS keywords at all
        except Exception as err:  # astropy raises ValueError, InvalidTransformError, ...
            raise InvalidInputError(f"{name}: the header's WCS cannot be read: {err}") from err
    for message in dict.fromkeys(str(w.message) for w in caught):
        _log.info("%s: reading the WCS: %s", name, message)
    if wcs.naxis != 2 or not wcs.has_celestial:
        return None
    return wcs


def _shiftedWcs(wcs: Any, box: tuple[int, int, int, int]) -> Any:
    """``wcs`` for the array coordinates of ``box`` (x0, y0, width, height) of its grid."""
    bx0, by0, bw, bh = box
    shifted = wcs.deepcopy()
    shifted.wcs.crpix = [shifted.wcs.crpix[0] - bx0, shifted.wcs.crpix[1] - by0]
    if shifted.sip is not None:
        from astropy.wcs import Sip

        # The SIP polynomials are in offsets from the reference pixel, which moved with it.
        sip = shifted.sip
        shifted.sip = Sip(sip.a, sip.b, sip.ap, sip.bp, shifted.wcs.crpix)
    shifted.pixel_shape = (bw, bh)
    return shifted
