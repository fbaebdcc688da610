# SPDX-License-Identifier: BSD-3-Clause
"""Spatial orders the kernel stars can carry, and the size of the spatial fit (§5.8).

A spatial function of order N has (N + 1)(N + 2)/2 terms; each term of each basis coefficient
is fixed by the stars' positions, so a kernel order needs at least as many stars in the fit as
it has terms, and, to be judged "well constrained" (§6.1), more than twice as many. Below that
the fit is still solved (its pseudo-inverse, §3.3) but the polynomial is free where no star
holds it: it is extrapolated into the corners of a cut-out, which the stars' own residuals
cannot show.

`PsfMatchTask._solve` uses these helpers: `planOrders` refuses impossible or oversized requests
before anything is allocated, and `ordersForStars`/`isSingular` choose the orders each spatial
fit uses.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import _core
from .config import PsfMatchConfig
from .errors import PsfMatchMemoryError, SpatialOrderError

__all__ = [
    "SpatialOrders",
    "isExplicit",
    "isSingular",
    "lowerOrders",
    "nSpatialTerms",
    "ordersForStars",
    "planForCellSet",
    "planOrders",
    "spatialUnknowns",
    "unknownsOf",
]

# A spatial system whose equilibrated matrix has its smallest eigenvalue below this fraction
# of its largest is singular for our purpose: double precision resolves ~1e-16, the fits
# the stars do constrain sit at 1e-10 and above (measured on the 256² and 512² simulations),
# and an undetermined direction sits at rounding level, ~1e-16 (or below zero).
_SINGULAR_EIGENVALUE_RATIO = 1e-12

# Copies of the nt x nt spatial matrix alive at once in the core's solve: the accumulated
# matrix, its equilibrated copy, the LU factorisation, and the eigen-solver of the condition
# number.
_SPATIAL_MATRIX_COPIES = 4


def nSpatialTerms(order: int) -> int:
    """The number of terms of a 2-D spatial function of total degree ``order``."""
    return (order + 1) * (order + 2) // 2


@dataclass
class SpatialOrders:
    """The spatial orders a fit uses, and which of them may be lowered.

    Attributes
    ----------
    kernel, background : `int`
        The orders in use (``background`` is 0 without a background fit).
    kernelAdaptive, backgroundAdaptive : `bool`
        Whether the order is the config's default and ``lowerSpatialOrders`` is on, so that
        psfmatch may lower it.
    configuredKernel, configuredBackground : `int`
        The orders of the config.
    reason : `str`
        Why the orders in use differ from the config's ("" when they do not).
    """

    kernel: int
    background: int
    kernelAdaptive: bool
    backgroundAdaptive: bool
    configuredKernel: int
    configuredBackground: int
    reason: str = ""

    @property
    def lowered(self) -> bool:
        return (self.kernel, self.background) != (
            self.configuredKernel,
            self.configuredBackground,
        )


# Assignments made by these functions are not the user's choice: a class's own defaults, and
# the re-assignment of every field when pex_config unpickles a config (as `psfmatch.batch`
# sends it to its workers), which would otherwise make every field look explicitly set.
_NOT_USER_ASSIGNMENTS = frozenset({"setDefaults", "unreduceConfig"})


def isExplicit(config: PsfMatchConfig, name: str) -> bool:
    """Whether the user chose the value of field ``name`` (docs/algorithm.md §5.8).

    True when the value differs from the field's default, or when pex_config's field history
    records an assignment to it (by the user's code, a config file, ``--kernel-order``,
    ``--set``, `subtract`'s ``spatialKernelOrder=``) that is not a class's ``setDefaults`` or
    the unpickling of a config. So ``spatialKernelOrder = 2`` set by hand is kept, while a
    default 2 may be lowered, in this process or in a batch worker alike.
    """
    if getattr(config, name) != config._fields[name].default:
        return True
    for entry in config.history.get(name, []):
        stack, label = entry[1], entry[2]
        if label != "assignment":
            continue
        functions = {getattr(frame, "function", "") for frame in stack}
        if not functions & _NOT_USER_ASSIGNMENTS:
            return True
    return False


def spatialUnknowns(
    nBasis: int, kernelOrder: int, bgOrder: int, constantFirstTerm: bool, fitBg: bool
) -> int:
    """nt of §5.2: the unknowns of the spatial normal equations."""
    nkt = nSpatialTerms(kernelOrder)
    nbt = nSpatialTerms(bgOrder) if fitBg else 0
    return ((nBasis - 1) * nkt + 1 if constantFirstTerm else nBasis * nkt) + nbt


def _physicalMemory() -> float:
    """Bytes of physical memory, or inf where the system does not say."""
    try:
        return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):
        return math.inf


def ordersForStars(nStars: int, orders: SpatialOrders) -> tuple[int, int]:
    """The highest orders, at most the ones in use, that ``nStars`` stars constrain well:
    more than twice as many stars as terms (order 0 always). Explicit orders are returned
    unchanged."""

    def lower(order: int, adaptive: bool) -> int:
        if not adaptive:
            return order
        while order > 0 and nStars <= 2 * nSpatialTerms(order):
            order -= 1
        return order

    return lower(orders.kernel, orders.kernelAdaptive), lower(
        orders.background, orders.backgroundAdaptive
    )


def planOrders(
    config: PsfMatchConfig,
    nStars: int,
    nBasis: int,
    constantFirstTerm: bool,
    *,
    nCandidates: int = 0,
    stampPixels: int = 0,
) -> SpatialOrders:
    """Check the configured spatial orders against the stars and the work, before the fit.

    Parameters
    ----------
    config : `PsfMatchConfig`
        The kernel configuration.
    nStars : `int`
        The most candidates the spatial fit can use (``nStarPerCell`` per cell).
    nBasis : `int`
        Basis kernels of the spatial fit.
    constantFirstTerm : `bool`
        As for the spatial fit (§5.2).
    nCandidates, stampPixels : `int`, optional
        All candidates and the pixels of one stamp, for the memory of the candidates' own fits.

    Returns
    -------
    orders : `SpatialOrders`
        The configured orders, lowered where they are defaults and ``nStars`` cannot carry them.

    Raises
    ------
    SpatialOrderError
        An order set explicitly has more terms than there are stars, or the spatial fit has
        more than ``maxSpatialUnknowns`` unknowns.
    PsfMatchMemoryError
        The fit's matrices would not fit in half the machine's physical memory.
    """
    fitBg = bool(config.fitForBackground)
    lowerOk = bool(config.lowerSpatialOrders)
    orders = SpatialOrders(
        kernel=int(config.spatialKernelOrder),
        background=int(config.spatialBgOrder) if fitBg else 0,
        kernelAdaptive=lowerOk and not isExplicit(config, "spatialKernelOrder"),
        backgroundAdaptive=lowerOk and not isExplicit(config, "spatialBgOrder"),
        configuredKernel=int(config.spatialKernelOrder),
        configuredBackground=int(config.spatialBgOrder) if fitBg else 0,
    )
    for what, order, adaptive, field in (
        ("kernel", orders.kernel, orders.kernelAdaptive, "spatialKernelOrder"),
        ("background", orders.background, orders.backgroundAdaptive, "spatialBgOrder"),
    ):
        if adaptive or (what == "background" and not fitBg):
            continue
        nTerms = nSpatialTerms(order)
        if nStars < nTerms:
            raise SpatialOrderError(
                f"{field} = {order} has {nTerms} spatial terms, but at most {nStars} kernel "
                f"star(s) can enter the spatial fit: the {what} model is not determined. "
                f"Lower {field} (order {_highestOrder(nStars)} is the highest with no more "
                f"terms than stars), or give more kernel sources"
            )
    kernelOrder, bgOrder = ordersForStars(nStars, orders)
    if (kernelOrder, bgOrder) != (orders.kernel, orders.background):
        orders.reason = (
            f"{nStars} kernel stars at most: an order of n terms needs more than 2n stars"
        )
    orders.kernel, orders.background = kernelOrder, bgOrder

    nt = spatialUnknowns(nBasis, orders.kernel, orders.background, constantFirstTerm, fitBg)
    matrixBytes = 8.0 * nt * nt
    if nt > int(config.maxSpatialUnknowns):
        raise SpatialOrderError(
            f"the spatial fit would have {nt} unknowns ({nBasis} basis kernels, kernel order "
            f"{orders.kernel} with {nSpatialTerms(orders.kernel)} terms, background order "
            f"{orders.background}): more than maxSpatialUnknowns = {config.maxSpatialUnknowns}; "
            f"its normal matrix alone takes {matrixBytes / 2**30:.3g} GiB and its solve grows "
            "as the cube. Lower the spatial orders or the basis size"
        )
    # The candidates keep their own normal systems (ORIG, PCA, RECENT slots) and the core
    # convolves each stamp with every basis kernel while fitting.
    nq = nBasis + (1 if fitBg else 0)
    candidateBytes = 8.0 * nCandidates * (3 * nq * nq) + 8.0 * nBasis * stampPixels * 2
    need = _SPATIAL_MATRIX_COPIES * matrixBytes + candidateBytes
    available = 0.5 * _physicalMemory()
    if need > available:
        raise PsfMatchMemoryError(
            f"the kernel fit would need ~{need / 2**30:.3g} GiB ({nt} spatial unknowns, "
            f"{nBasis} basis kernels, {nCandidates} candidates), more than half of the "
            f"{2 * available / 2**30:.3g} GiB of memory; lower the spatial orders or the basis"
        )
    return orders


def _highestOrder(nStars: int) -> int:
    """The highest order with at most ``nStars`` terms (0 for fewer than 3 stars)."""
    order = 0
    while nSpatialTerms(order + 1) <= nStars:
        order += 1
    return order


def isSingular(spatialSolution: Any) -> tuple[bool, float]:
    """Whether the spatial normal equations are singular, and their eigenvalue ratio.

    The ratio is λ_min / λ_max of the equilibrated matrix D M D (D = diag(M_ii^-1/2), the
    system the core solves, §5.4), so that the raw monomials of a polynomial model do not
    make a well-posed fit look singular. It is ≤ 0 (or at rounding level) when the matrix is
    not positive definite: some combination of the spatial terms is fixed by no star. (The
    eigenvalue condition number λ_max / λ_min of the raw matrix is then negative or huge.)
    """
    m = np.asarray(spatialSolution.getM(), dtype=np.float64)
    diag = np.diag(m)
    scale = np.where((diag > 0) & np.isfinite(diag), 1.0 / np.sqrt(np.abs(diag)), 1.0)
    scaled = m * scale[:, None] * scale[None, :]
    if not np.isfinite(scaled).all():
        return True, math.nan
    # The core's single-threaded eigen-solver: numpy's LAPACK took 10 times longer on a loaded
    # machine (its threads wait on each other) for the default 160 unknowns.
    condition = float(_core.conditionNumber(scaled, _core.ConditionNumberType.EIGENVALUE))
    ratio = 1.0 / condition if condition != 0.0 else -math.inf
    return not (ratio > _SINGULAR_EIGENVALUE_RATIO), ratio


def lowerOrders(orders: SpatialOrders, nStars: int, singular: float | None) -> bool:
    """Lower the adaptive orders in place for a fit of ``nStars`` stars (§5.8, step 3); with
    ``singular`` (the eigenvalue ratio of a singular spatial system) lower the kernel order,
    else the background order, by one step. Return whether anything changed."""
    if singular is None:
        kernelOrder, bgOrder = ordersForStars(nStars, orders)
        why = f"{nStars} stars in the spatial fit: an order of n terms needs more than 2n"
    else:
        kernelOrder, bgOrder = orders.kernel, orders.background
        if orders.kernelAdaptive and kernelOrder > 0:
            kernelOrder -= 1
        elif orders.backgroundAdaptive and bgOrder > 0:
            bgOrder -= 1
        why = (
            f"the spatial normal equations of {nStars} stars are singular (smallest to "
            f"largest eigenvalue {singular:.2g}): the stars cannot constrain every term"
        )
    if (kernelOrder, bgOrder) == (orders.kernel, orders.background):
        return False
    orders.kernel, orders.background = kernelOrder, bgOrder
    orders.reason = why
    return True


def unknownsOf(spatialKernel: Any, spatialBackground: Any, constantFirstTerm: bool) -> int:
    """nt of §5.2 for a fitted kernel and background."""
    nb = int(spatialKernel.getNBasisKernels())
    nkt = int(spatialKernel.getNSpatialParameters()) or 1
    bgParams = np.asarray(spatialBackground.getParameters())
    nbt = 0 if (bgParams.size == 1 and bgParams[0] == 0.0) else int(bgParams.size)
    return ((nb - 1) * nkt + 1 if constantFirstTerm else nb * nkt) + nbt


def planForCellSet(
    config: PsfMatchConfig, kernelCellSet: Any, basisList: list[Any], constantFirstTerm: bool
) -> tuple[SpatialOrders, str]:
    """`planOrders` for the candidates of a cell set (§5.8, step 2): the stars are those the
    spatial fit can use (``nStarPerCell`` per cell), the basis the PCA's when it replaces the
    given one. Return the orders and a description of the fit's size for error messages."""
    nStarPerCell = int(config.nStarPerCell)
    cells = [len(cell.getCandidates(True)) for cell in kernelCellSet.getCellList()]
    nStars = sum(min(n, nStarPerCell) if nStarPerCell > 0 else n for n in cells)
    nBasis = len(basisList)
    if config.usePcaForSpatialKernel:
        nBasis = min(nBasis, int(config.numPrincipalComponents))
    stampPixels = 0
    for cand in kernelCellSet.getAllCandidates(ignoreBad=False):
        box = cand.getStampBBox()
        stampPixels = int(box.getWidth()) * int(box.getHeight())
        break
    orders = planOrders(
        config,
        nStars,
        nBasis,
        constantFirstTerm,
        nCandidates=sum(cells),
        stampPixels=stampPixels,
    )
    nt = spatialUnknowns(
        nBasis, orders.kernel, orders.background, constantFirstTerm, bool(config.fitForBackground)
    )
    return orders, f"{len(basisList)} basis kernels, {sum(cells)} candidates, {nt} spatial unknowns"
