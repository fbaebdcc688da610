# SPDX-License-Identifier: BSD-3-Clause
"""What is in the sky of a simulated pair: the stars, the variable stars and the transients,
each drawn from its own random stream, and their catalogues."""

from __future__ import annotations

import math

import numpy as np

from .._psfmodel import _halfWidth
from ..errors import InvalidInputError
from .arguments import _PairParameters


def _drawStars(
    seq: np.random.SeedSequence, p: _PairParameters
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Positions (parent) and template fluxes of the stars.

    One row of three uniforms per star, so the first ``n`` stars do not depend on ``nStars``.
    """
    draws = np.random.default_rng(seq).random((p.nStars, 3))
    starX = p.x0 - 0.5 + p.nx * draws[:, 0]
    starY = p.y0 - 0.5 + p.ny * draws[:, 1]
    flux = _powerLawFluxes(draws[:, 2], p.fluxRange[0], p.fluxRange[1], p.fluxIndex)
    return starX, starY, flux


def _powerLawFluxes(u: np.ndarray, low: float, high: float, index: float) -> np.ndarray:
    """Inverse CDF of ``N(>F) ∝ F^-index`` truncated to ``[low, high]``, at uniforms ``u``."""
    if high == low:
        return np.full(u.shape, low)
    if index == 0.0:
        # N(>F) ∝ -ln F: uniform in ln F.
        return np.asarray(low * (high / low) ** u)
    a, b = low**-index, high**-index
    return np.asarray((a - u * (a - b)) ** (-1.0 / index))


def _drawVariables(
    seq: np.random.SeedSequence, flux: np.ndarray, p: _PairParameters
) -> tuple[np.ndarray, np.ndarray]:
    """Which stars vary (among those at least as bright as the median), and every star's
    science flux: ``fluxScale · flux`` times its factor (1 for a constant star)."""
    nStars, nVariables = p.nStars, p.nVariables
    factorLow, factorHigh = p.variableFactorRange
    variable = np.zeros(nStars, dtype=bool)
    factor = np.ones(nStars)
    if nVariables:
        rngVar = np.random.default_rng(seq)
        bright = np.argsort(flux, kind="stable")[nStars // 2 :]
        chosen = rngVar.choice(bright, size=nVariables, replace=False)
        magnitude = np.exp(rngVar.uniform(math.log(factorLow), math.log(factorHigh), nVariables))
        sign = np.where(rngVar.random(nVariables) < 0.5, -1.0, 1.0)
        variable[chosen] = True
        factor[chosen] = magnitude**sign
    scienceFlux = p.fluxScale * flux * factor
    return scienceFlux, variable


def _drawTransients(
    seq: np.random.SeedSequence, starX: np.ndarray, starY: np.ndarray, p: _PairParameters
) -> tuple[np.ndarray, np.ndarray]:
    """Positions of the transients, clear of the stars, of each other and of the border.

    Raises
    ------
    InvalidInputError
        If the image is too small, or the stars too many, to place them.
    """
    nx, ny, x0, y0 = p.nx, p.ny, p.x0, p.y0
    sxx, syy, _ = p.sciencePsf.getCovariance(*p.corners())
    scienceHalf = _halfWidth(np.asarray(sxx), np.asarray(syy))
    margin = p.edge + scienceHalf
    if p.nTransients and (nx - 1 < 2 * margin or ny - 1 < 2 * margin):
        raise InvalidInputError(
            f"nTransients: image of shape {p.shape} is too small to hold transients "
            f"{margin} pixels from its border"
        )
    return _placeTransients(
        np.random.default_rng(seq),
        p.nTransients,
        (x0 + margin, x0 + nx - 1 - margin),
        (y0 + margin, y0 + ny - 1 - margin),
        starX,
        starY,
        starIsolation=float(scienceHalf),
        mutualIsolation=2.0 * scienceHalf,
    )


def _placeTransients(
    rng: np.random.Generator,
    nTransients: int,
    xRange: tuple[float, float],
    yRange: tuple[float, float],
    starX: np.ndarray,
    starY: np.ndarray,
    *,
    starIsolation: float,
    mutualIsolation: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Draw positions ``starIsolation`` from every star and ``mutualIsolation`` apart."""
    xs: list[float] = []
    ys: list[float] = []
    if nTransients == 0:
        return np.zeros(0), np.zeros(0)
    batch = max(256, 16 * nTransients)
    for _ in range(64):
        cx = rng.uniform(xRange[0], xRange[1], batch)
        cy = rng.uniform(yRange[0], yRange[1], batch)
        if len(starX):
            free = np.ones(batch, dtype=bool)
            for start in range(0, len(starX), 2048):
                sx = starX[start : start + 2048]
                sy = starY[start : start + 2048]
                d2 = (cx[:, None] - sx[None, :]) ** 2 + (cy[:, None] - sy[None, :]) ** 2
                free &= np.all(d2 >= starIsolation * starIsolation, axis=1)
            cx, cy = cx[free], cy[free]
        for px, py in zip(cx.tolist(), cy.tolist(), strict=True):
            placed = zip(xs, ys, strict=True)
            if all((px - qx) ** 2 + (py - qy) ** 2 >= mutualIsolation**2 for qx, qy in placed):
                xs.append(px)
                ys.append(py)
                if len(xs) == nTransients:
                    return np.array(xs), np.array(ys)
    raise InvalidInputError(
        f"nTransients: could place only {len(xs)} of {nTransients} transients at least "
        f"{starIsolation:.3g} pixels from every star and the border and {mutualIsolation:.3g} "
        "from each other; use fewer stars or transients, or a larger image"
    )


def _nearestDistance(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Distance from each point to its nearest other point (``inf`` for a lone point).

    A sweep over the points sorted by ``x``: offset ``k`` compares each point with the one
    ``k`` places later, and stops once no pair at that offset is closer in ``x`` alone than
    the best distance either point already has (larger offsets are farther apart in ``x``).
    """
    n = len(x)
    best = np.full(n, np.inf)
    if n < 2:
        return best
    order = np.argsort(x, kind="stable")
    xs, ys = x[order], y[order]
    sortedBest = np.full(n, np.inf)
    for k in range(1, n):
        dx = xs[k:] - xs[:-k]
        if np.all(dx >= sortedBest[:-k]) and np.all(dx >= sortedBest[k:]):
            break
        d = np.hypot(dx, ys[k:] - ys[:-k])
        np.minimum(sortedBest[:-k], d, out=sortedBest[:-k])
        np.minimum(sortedBest[k:], d, out=sortedBest[k:])
    best[order] = sortedBest
    return best


def _starTable(
    starX: np.ndarray,
    starY: np.ndarray,
    flux: np.ndarray,
    scienceFlux: np.ndarray,
    variable: np.ndarray,
) -> np.ndarray:
    """The ``stars`` catalogue of `simulatePair` (a structured array)."""
    stars = np.zeros(
        len(starX),
        dtype=[
            ("x", "f8"),
            ("y", "f8"),
            ("flux", "f8"),
            ("scienceFlux", "f8"),
            ("variable", "?"),
            ("nearestDistance", "f8"),
        ],
    )
    stars["x"], stars["y"], stars["flux"] = starX, starY, flux
    stars["scienceFlux"], stars["variable"] = scienceFlux, variable
    stars["nearestDistance"] = _nearestDistance(starX, starY)
    return stars


def _transientTable(transientX: np.ndarray, transientY: np.ndarray, flux: np.ndarray) -> np.ndarray:
    """The ``transients`` catalogue of `simulatePair` (a structured array)."""
    transients = np.zeros(len(transientX), dtype=[("x", "f8"), ("y", "f8"), ("flux", "f8")])
    transients["x"], transients["y"], transients["flux"] = transientX, transientY, flux
    return transients
