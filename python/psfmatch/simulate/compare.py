# SPDX-License-Identifier: BSD-3-Clause
"""How close a subtraction of a simulated pair came to the truth: `compareToTruth`."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .._checks import _positiveFloat
from .._masks import UNUSABLE_PLANES
from ..image import Mask

__all__ = ["TruthComparison", "compareToTruth"]

#: Default thresholds of `compareToTruth`, those of ``psfmatch demo`` (quoted in the README and
#: ``psfmatch demo --help``): the relative error of the kernel sum, the distance of the robust
#: sigma of D/σ from 1, the clipped mean of D/σ, and the distance of the transients' mean
#: measured/true flux from 1.
KSUM_TOLERANCE = 0.002
SIGMA_TOLERANCE = 0.03
MEAN_TOLERANCE = 0.05
TRANSIENT_TOLERANCE = 0.02

#: Mask planes whose pixels are left out of every measurement.


@dataclass(frozen=True)
class TruthComparison:
    """The figures of `compareToTruth`, and whether each is within its threshold.

    Attributes
    ----------
    kernelSum : `float`
        The subtraction's kernel sum (``result.kernelSum``).
    fluxScale : `float`
        The true kernel sum (``sim.truth.fluxScale``).
    kernelSumError : `float`
        ``kernelSum / fluxScale - 1``.
    skyPixels : `int`
        Usable pixels of D far from every source, over which ``zMean`` and ``zSigma`` are
        measured.
    zMean : `float`
        The 5-sigma-clipped mean of D/σ over those pixels (0 for a correct subtraction).
    zSigma : `float`
        The robust (MAD) standard deviation of D/σ over those pixels (1 for a correct one).
    nTransients, nMeasured : `int`
        Transients simulated, and those measured (an aperture reaching an unusable pixel is
        skipped).
    transientRatio, transientRatioErr : `float`
        Mean of measured/true flux over the measured transients and its standard error (NaN
        when none was measured).
    transients : `dict` [`str`, `numpy.ndarray`]
        Per transient: ``x``, ``y`` (parent), ``flux`` (true, science units),
        ``measuredFlux`` and ``measuredFluxErr`` (NaN where not measured).
    kernelSumTolerance, sigmaTolerance, meanTolerance, transientTolerance : `float`
        The thresholds the figures were held to.
    kernelSumPassed, sigmaPassed, meanPassed, transientsPassed : `bool`
        ``|kernelSumError| < kernelSumTolerance``, ``|zSigma - 1| < sigmaTolerance``,
        ``|zMean| < meanTolerance``, and ``nMeasured > 0`` with
        ``|transientRatio - 1| < transientTolerance``.
    """

    kernelSum: float
    fluxScale: float
    kernelSumError: float
    skyPixels: int
    zMean: float
    zSigma: float
    nTransients: int
    nMeasured: int
    transientRatio: float
    transientRatioErr: float
    transients: dict[str, np.ndarray] = field(repr=False)
    kernelSumTolerance: float
    sigmaTolerance: float
    meanTolerance: float
    transientTolerance: float
    kernelSumPassed: bool
    sigmaPassed: bool
    meanPassed: bool
    transientsPassed: bool

    @property
    def nFailed(self) -> int:
        """How many of the four figures are outside their thresholds."""
        return sum(
            not ok
            for ok in (
                self.kernelSumPassed,
                self.sigmaPassed,
                self.meanPassed,
                self.transientsPassed,
            )
        )

    @property
    def passed(self) -> bool:
        """Whether every figure is within its threshold."""
        return self.nFailed == 0


def compareToTruth(
    sim: Any,
    result: Any,
    *,
    kernelSumTolerance: float = KSUM_TOLERANCE,
    sigmaTolerance: float = SIGMA_TOLERANCE,
    meanTolerance: float = MEAN_TOLERANCE,
    transientTolerance: float = TRANSIENT_TOLERANCE,
) -> TruthComparison:
    """Compare the subtraction of a simulated pair with the simulation's truth.

    Parameters
    ----------
    sim : `psfmatch.task.Struct`
        What `simulatePair` returned (``stars``, ``transients``, ``truth``).
    result : `SubtractionResult`
        The subtraction of ``sim.science`` and ``sim.template`` (``kernelSum``, and
        ``difference`` in science units on the simulation's pixel grid).
    kernelSumTolerance, sigmaTolerance, meanTolerance, transientTolerance : `float`, optional
        The thresholds (> 0) of the four figures; the defaults are ``psfmatch demo``'s.

    Returns
    -------
    comparison : `TruthComparison`
        The kernel sum against the true flux scale, the clipped mean and robust sigma of D/σ
        away from the sources, the transients' fluxes measured in D against the true ones,
        and which of them pass.

    Raises
    ------
    InvalidInputError
        If a tolerance is not a positive finite number.

    Notes
    -----
    D/σ is measured over usable pixels (finite, positive variance, no NO_DATA, EDGE, SAT, BAD
    or CR bit) farther than 6 sigma of the widest science PSF (where a star's stamp ends in
    the simulation) from the pixel of every star and transient. The transients are measured
    with `sep.sum_circle` (5 × 5 sub-pixels) in apertures of 4 sigma of the local science PSF,
    which hold 99.97 % of a Gaussian's flux; an aperture reaching an unusable pixel is skipped.
    """
    tolerances = {
        "kernelSumTolerance": kernelSumTolerance,
        "sigmaTolerance": sigmaTolerance,
        "meanTolerance": meanTolerance,
        "transientTolerance": transientTolerance,
    }
    checked = {name: _positiveFloat(value, name) for name, value in tolerances.items()}
    truth = sim.truth
    d = result.difference
    image = np.asarray(d.image, dtype=np.float64)
    variance = np.asarray(d.variance, dtype=np.float64)
    usable = np.isfinite(image) & np.isfinite(variance) & (variance > 0)
    usable &= (d.mask & Mask.getPlaneBitMask(list(UNUSABLE_PLANES))) == 0

    kernelSum = result.kernelSum
    kernelSumError = kernelSum / truth.fluxScale - 1.0
    skyPixels, zMean, zSigma = _skyStatistics(sim, d.getXY0(), image, variance, usable)
    transients, measured = _transientFluxes(sim, d.getXY0(), image, variance, usable)
    ratio = transients["measuredFlux"][measured] / transients["flux"][measured]
    ratioErr = transients["measuredFluxErr"][measured] / transients["flux"][measured]
    nMeasured = int(measured.sum())
    transientRatio = float(np.mean(ratio)) if ratio.size else math.nan
    transientRatioErr = float(np.sqrt(np.sum(ratioErr**2)) / ratio.size) if ratio.size else math.nan
    return TruthComparison(
        kernelSum=kernelSum,
        fluxScale=truth.fluxScale,
        kernelSumError=kernelSumError,
        skyPixels=skyPixels,
        zMean=zMean,
        zSigma=zSigma,
        nTransients=len(transients["x"]),
        nMeasured=nMeasured,
        transientRatio=transientRatio,
        transientRatioErr=transientRatioErr,
        transients=transients,
        **checked,
        kernelSumPassed=abs(kernelSumError) < checked["kernelSumTolerance"],
        sigmaPassed=abs(zSigma - 1.0) < checked["sigmaTolerance"],
        meanPassed=abs(zMean) < checked["meanTolerance"],
        transientsPassed=nMeasured > 0
        and abs(transientRatio - 1.0) < checked["transientTolerance"],
    )


def _skyStatistics(
    sim: Any,
    xy0: tuple[int, int],
    image: np.ndarray,
    variance: np.ndarray,
    usable: np.ndarray,
) -> tuple[int, float, float]:
    """The number of usable pixels far from every source, and the clipped mean and robust
    sigma of D/σ over them."""
    from astropy.stats import mad_std, sigma_clipped_stats

    x0, y0 = xy0
    ny, nx = image.shape
    sources = np.concatenate(
        [
            np.column_stack([sim.stars["x"], sim.stars["y"]]),
            np.column_stack([sim.transients["x"], sim.transients["y"]]),
        ]
    )
    radius = 6.0 * float(np.max(sim.truth.sciencePsf.getSigma(sources[:, 0], sources[:, 1])))
    near = np.zeros((ny, nx), dtype=bool)
    r = int(math.ceil(radius))
    dy, dx = np.mgrid[-r : r + 1, -r : r + 1]
    disc = dx * dx + dy * dy <= radius * radius
    for sx, sy in sources:
        ix, iy = int(round(sx)) - x0, int(round(sy)) - y0
        ya, yb = max(iy - r, 0), min(iy + r + 1, ny)
        xa, xb = max(ix - r, 0), min(ix + r + 1, nx)
        if ya < yb and xa < xb:
            near[ya:yb, xa:xb] |= disc[ya - iy + r : yb - iy + r, xa - ix + r : xb - ix + r]
    sky = usable & ~near
    z = image[sky] / np.sqrt(variance[sky])
    mean, _, _ = sigma_clipped_stats(z, sigma=5.0, maxiters=5)
    return int(sky.sum()), float(mean), float(mad_std(z))


def _transientFluxes(
    sim: Any,
    xy0: tuple[int, int],
    image: np.ndarray,
    variance: np.ndarray,
    usable: np.ndarray,
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Each transient's true flux and its flux measured in D (NaN where the aperture reaches
    an unusable pixel), and which were measured."""
    import sep

    x0, y0 = xy0
    tx = np.asarray(sim.transients["x"], dtype=np.float64)
    ty = np.asarray(sim.transients["y"], dtype=np.float64)
    rAperture = 4.0 * np.asarray(sim.truth.sciencePsf.getSigma(tx, ty), dtype=np.float64)
    data = np.ascontiguousarray(np.where(usable, image, 0.0))
    err = np.ascontiguousarray(np.sqrt(np.where(usable, variance, 0.0)))
    flux, fluxErr, flags = sep.sum_circle(
        data, tx - x0, ty - y0, rAperture, err=err, mask=~usable, subpix=5
    )
    good = (flags & sep.APER_HASMASKED) == 0
    fluxes = {
        "x": tx,
        "y": ty,
        "flux": np.asarray(sim.transients["flux"], dtype=np.float64),
        "measuredFlux": np.where(good, flux, np.nan),
        "measuredFluxErr": np.where(good, fluxErr, np.nan),
    }
    return fluxes, good
