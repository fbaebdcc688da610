# SPDX-License-Identifier: BSD-3-Clause
"""A simulated pair on two pixel grids: `tangentWcs`, and a template rendered through its own
WCS from the science image's sky.

The sky of such a pair is the science image's pixel grid: stars, the science PSF and the
template PSF are given in science pixels, which stand for the sky through the science WCS. The
template is rendered on its own grid: each star at the template pixel its sky position falls
on (the exact WCS transforms, SIP or TPV included), through the template PSF mapped by the
local derivative of that transform (a rotation, another pixel scale and a distortion make it
an elliptical Gaussian in template pixels), with its template flux; the template's sky level
``templateSky`` is a surface brightness per science pixel, so a template pixel holds it times
its own area in science pixels. A flux-conserving resampling of the template onto the science
grid therefore gives back every star's flux and the sky ``templateSky`` per science pixel, and
the pair's true kernel sum and background are those of a pair on one grid.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .._checks import _finiteFloat, _floatSequence, _nonNegativeInt, _positiveFloat
from ..errors import InvalidInputError

__all__ = ["tangentWcs"]

#: Step (pixels) of the grid on which the template's pixel areas are computed exactly; they
#: are interpolated bilinearly in between. The area is a smooth function (a polynomial of the
#: distortion's derivatives): over 32 pixels bilinear interpolation misses it by ~1e-9 of its
#: value for the distortions of the tests.
_AREA_STEP = 32

#: Half-step (pixels) of the central differences that give the transform's derivative at each
#: star. The transform is smooth on the scale of a pixel, so the error (~step² × the third
#: derivative) is far below the rendering's own accuracy.
_DERIVATIVE_STEP = 0.5


def tangentWcs(
    shape: Sequence[int],
    *,
    pixelScale: float = 0.2,
    rotation: float = 0.0,
    offset: Sequence[float] = (0.0, 0.0),
    sip: Mapping[str, Mapping[tuple[int, int], float]] | None = None,
    crval: Sequence[float] = (150.0, 2.0),
) -> Any:
    """A gnomonic (TAN) celestial WCS for an image, optionally with a SIP distortion.

    Parameters
    ----------
    shape : (`int`, `int`)
        ``(ny, nx)`` of the image.
    pixelScale : `float`, optional
        Arcseconds per pixel (> 0).
    rotation : `float`, optional
        Angle in degrees, counter-clockwise, of the image's pixel axes from north up and east
        left.
    offset : (`float`, `float`), optional
        ``(dx, dy)``: ``crval`` lies ``dx, dy`` pixels from the image's centre (a pointing
        offset).
    sip : `dict`, optional
        SIP coefficients of the forward distortion, ``{"A": {(p, q): a_pq}, "B": {(p, q):
        b_pq}}``: pixel offsets ``u, v`` from the reference pixel become ``u + Σ a_pq u^p v^q``
        and ``v + Σ b_pq u^p v^q`` before the linear transformation (``p + q`` from 2 to 9).
    crval : (`float`, `float`), optional
        Right ascension and declination (degrees) of the reference point.

    Returns
    -------
    wcs : `astropy.wcs.WCS`
        With ``pixel_shape`` set; ``to_header(relax=True)`` gives its FITS cards.

    Raises
    ------
    InvalidInputError
        An argument out of range or a SIP term that is not ``(p, q)`` with ``2 <= p + q <= 9``.
    """
    from astropy.wcs import WCS, Sip

    if isinstance(shape, (str, bytes)) or not isinstance(shape, (Sequence, np.ndarray)):
        raise InvalidInputError(f"shape: expected (ny, nx), got {shape!r}")
    if len(shape) != 2:
        raise InvalidInputError(f"shape: expected (ny, nx), got {shape!r}")
    ny, nx = (_nonNegativeInt(n, "shape") for n in shape)
    scale = _positiveFloat(pixelScale, "pixelScale") / 3600.0
    theta = math.radians(_finiteFloat(rotation, "rotation"))
    dx, dy = _floatSequence(offset, "offset", 2)
    ra, dec = _floatSequence(crval, "crval", 2)
    wcs = WCS(naxis=2)
    wcs.wcs.crval = [ra, dec]
    # FITS pixels are 1-based: the centre of an n-pixel axis is (n + 1) / 2.
    wcs.wcs.crpix = [(nx + 1) / 2.0 + dx, (ny + 1) / 2.0 + dy]
    c, s = math.cos(theta), math.sin(theta)
    wcs.wcs.cd = scale * np.array([[-c, s], [s, c]])
    if sip:
        terms = {name: dict(sip.get(name, {})) for name in ("A", "B")}
        unknown = set(sip) - {"A", "B"}
        if unknown:
            raise InvalidInputError(f"sip: expected keys 'A' and 'B', got {sorted(unknown)}")
        order = 0
        for name, coefficients in terms.items():
            for key in coefficients:
                if (
                    not isinstance(key, tuple)
                    or len(key) != 2
                    or not all(isinstance(k, int) and k >= 0 for k in key)
                    or not 2 <= sum(key) <= 9
                ):
                    raise InvalidInputError(
                        f"sip[{name!r}]: terms are (p, q) with 2 <= p + q <= 9, got {key!r}"
                    )
                order = max(order, sum(key))
        arrays = {name: np.zeros((order + 1, order + 1)) for name in terms}
        for name, coefficients in terms.items():
            for (p, q), value in coefficients.items():
                arrays[name][p, q] = _finiteFloat(value, f"sip[{name!r}][{(p, q)}]")
        wcs.wcs.ctype = ["RA---TAN-SIP", "DEC--TAN-SIP"]
        wcs.sip = Sip(arrays["A"], arrays["B"], None, None, wcs.wcs.crpix)
    else:
        wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    with warnings.catch_warnings():
        # wcsset fills in defaults (RADESYS, MJDREF) and says so; nothing the caller did.
        warnings.simplefilter("ignore")
        wcs.wcs.set()
    wcs.pixel_shape = (nx, ny)
    return wcs


def _checkWcs(value: Any, name: str) -> Any:
    """An `astropy.wcs.WCS` with two celestial axes, or an `InvalidInputError`."""
    from astropy.wcs import WCS

    if not isinstance(value, WCS):
        raise InvalidInputError(f"{name}: expected an astropy.wcs.WCS, got {type(value).__name__}")
    if value.naxis != 2 or not value.has_celestial:
        raise InvalidInputError(f"{name}: expected a celestial WCS of two axes, got {value!r}")
    return value


def _scienceToTemplate(
    scienceWcs: Any, templateWcs: Any, x: np.ndarray, y: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Template array coordinates of science array coordinates ``x, y`` (exact transforms)."""
    world = scienceWcs.pixel_to_world_values(x, y)
    u, v = templateWcs.world_to_pixel_values(*world)
    return np.asarray(u, dtype=float), np.asarray(v, dtype=float)


def _templateCovariance(
    scienceWcs: Any,
    templateWcs: Any,
    x: np.ndarray,
    y: np.ndarray,
    cxx: np.ndarray,
    cyy: np.ndarray,
    cxy: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Each star's template position and its PSF covariance in template pixels.

    A Gaussian of covariance C in science pixels is, to first order in the transform, a
    Gaussian of covariance ``J C Jᵀ`` in template pixels, J the transform's derivative at the
    star (central differences of the exact transform)."""
    h = _DERIVATIVE_STEP
    xs = np.concatenate([x, x + h, x - h, x, x])
    ys = np.concatenate([y, y, y, y + h, y - h])
    u, v = _scienceToTemplate(scienceWcs, templateWcs, xs, ys)
    n = len(x)
    u0, uxp, uxm, uyp, uym = (u[k * n : (k + 1) * n] for k in range(5))
    v0, vxp, vxm, vyp, vym = (v[k * n : (k + 1) * n] for k in range(5))
    jux, juy = (uxp - uxm) / (2 * h), (uyp - uym) / (2 * h)
    jvx, jvy = (vxp - vxm) / (2 * h), (vyp - vym) / (2 * h)
    # C' = J C Jᵀ with J = [[du/dx, du/dy], [dv/dx, dv/dy]].
    txx = jux * jux * cxx + 2 * jux * juy * cxy + juy * juy * cyy
    tyy = jvx * jvx * cxx + 2 * jvx * jvy * cxy + jvy * jvy * cyy
    txy = jux * jvx * cxx + (jux * jvy + juy * jvx) * cxy + juy * jvy * cyy
    return u0, v0, txx, tyy, txy


def _templatePixelArea(scienceWcs: Any, templateWcs: Any, shape: tuple[int, int]) -> np.ndarray:
    """The area of each template pixel in science pixels (float64, the template's shape).

    Computed exactly (central differences of the transform) every `_AREA_STEP` pixels and
    bilinearly interpolated in between."""
    from scipy import ndimage

    ny, nx = shape
    gy = np.unique(np.append(np.arange(0, ny, _AREA_STEP), ny - 1)).astype(float)
    gx = np.unique(np.append(np.arange(0, nx, _AREA_STEP), nx - 1)).astype(float)
    uu, vv = np.meshgrid(gx, gy)
    u, v = uu.ravel(), vv.ravel()
    h = _DERIVATIVE_STEP
    us = np.concatenate([u + h, u - h, u, u])
    vs = np.concatenate([v, v, v + h, v - h])
    world = templateWcs.pixel_to_world_values(us, vs)
    x, y = (np.asarray(c, dtype=float) for c in scienceWcs.world_to_pixel_values(*world))
    n = len(u)
    xup, xum, xvp, xvm = (x[k * n : (k + 1) * n] for k in range(4))
    yup, yum, yvp, yvm = (y[k * n : (k + 1) * n] for k in range(4))
    det = ((xup - xum) * (yvp - yvm) - (xvp - xvm) * (yup - yum)) / (2 * h) ** 2
    coarse = np.abs(det).reshape(len(gy), len(gx))
    # Fractional coarse-grid coordinates of every template pixel.
    rows = np.interp(np.arange(ny, dtype=float), gy, np.arange(len(gy), dtype=float))
    cols = np.interp(np.arange(nx, dtype=float), gx, np.arange(len(gx), dtype=float))
    rr, cc = np.meshgrid(rows, cols, indexing="ij")
    return np.asarray(ndimage.map_coordinates(coarse, [rr, cc], order=1, mode="nearest"))


def _renderTemplate(
    p: Any, starX: np.ndarray, starY: np.ndarray, flux: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The template's noise-free sources and its sky (float64, the template's shape), rendered
    on the template's own grid from the science grid's sky (see the module docstring)."""
    from .._psfmodel import _renderInto

    assert p.templateShape is not None
    shape = p.templateShape
    sources = np.zeros(shape)
    if len(starX):
        # The WCSs work in array coordinates: parent coordinates minus the images' xy0.
        x, y = starX - p.x0, starY - p.y0
        cxx, cyy, cxy = (np.asarray(c) for c in p.templatePsf.getCovariance(starX, starY))
        u, v, txx, tyy, txy = _templateCovariance(p.scienceWcs, p.templateWcs, x, y, cxx, cyy, cxy)
        inside = np.isfinite(u) & np.isfinite(v)
        _renderInto(
            sources, u[inside], v[inside], flux[inside], txx[inside], tyy[inside], txy[inside]
        )
    sky = p.templateSky * _templatePixelArea(p.scienceWcs, p.templateWcs, shape)
    return sources, sky
