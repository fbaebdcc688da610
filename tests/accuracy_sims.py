# SPDX-License-Identifier: BSD-3-Clause
"""Simulated pairs for the accuracy matrix (tests/test_accuracy_matrix.py), rendered by GalSim.

The truth comes from a renderer psfmatch does not share: GalSim draws every star, transient and
PSF used for scoring as a pixel-integrated profile (Moffat, Gaussian, sheared and rotated, or a
function of the position). A pair is the same star field seen through a template PSF and a
science PSF, the science photometry scaled by a known factor (the true kernel sum), a known
constant background difference, transients (in the science image only, at pixel centres so
that a centred PSF image fits them without interpolation) and Poisson + read noise whose
exact variance is given as the variance planes.

`scoreResult` measures a `SubtractionResult` against that truth with PSF fits whose PSF is
rendered by GalSim too (the science PSF in D when the template was convolved, the template's
when the science image was), weighted by the difference's own variance plane.

Helpers only: importing this module needs ``galsim``; the tests import it after
``pytest.importorskip("galsim")``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import galsim
import numpy as np

#: Positions are quantised to 1/PHASES of a pixel so that a position-independent PSF is drawn
#: once per phase (exact: the stars *are* at those positions), which makes 10^4 stars cheap.
PHASES = 8
#: Moffat profiles are truncated here (GalSim renormalises inside), so that a stamp of
#: 2·STAMP_HALF+1 pixels holds all of a star's flux and the true flux is known exactly.
TRUNCATION = 22.0
STAMP_HALF = 24

PsfFactory = Callable[[float, float], Any]  # (x, y) -> galsim.GSObject of unit flux


def moffat(fwhm: float, beta: float, e: float = 0.0, angleDeg: float = 0.0) -> Any:
    """A unit-flux Moffat (truncated at `TRUNCATION`), optionally sheared by ``e`` at
    ``angleDeg``."""
    prof = galsim.Moffat(beta=beta, fwhm=fwhm, trunc=TRUNCATION)
    if e:
        prof = prof.shear(e=e, beta=angleDeg * galsim.degrees)
    return prof


def gaussian(fwhm: float, e: float = 0.0, angleDeg: float = 0.0) -> Any:
    prof = galsim.Gaussian(fwhm=fwhm)
    if e:
        prof = prof.shear(e=e, beta=angleDeg * galsim.degrees)
    return prof


@dataclass(frozen=True)
class Cell:
    """One cell of the matrix: the two PSFs (functions of the position, or constant), the field
    and the noise."""

    name: str
    templatePsf: PsfFactory
    sciencePsf: PsfFactory
    size: int = 768
    nStars: int = 300
    varying: bool = False  # the PSFs depend on the position (drawn per star)
    fluxScale: float = 1.1  # science flux / template flux: the true kernel sum
    background: float = 12.0  # science minus template sky
    templateSky: float = 400.0  # sky counts per pixel: Poisson noise (gain 1)
    scienceSky: float = 900.0
    readNoise: float = 3.0
    starFlux: tuple[float, float] = (2.0e3, 2.0e5)  # log-uniform
    nTransients: int = 24
    transientFlux: float = 6.0e4
    seed: int = 1


@dataclass
class Pair:
    cell: Cell
    template: np.ndarray
    science: np.ndarray
    templateVariance: np.ndarray
    scienceVariance: np.ndarray
    stars: np.ndarray  # (n, 3): x, y, template flux
    transients: np.ndarray  # (m, 3): x, y (integers), science flux
    info: dict[str, Any] = field(default_factory=dict)


def drawStamp(prof: Any, dx: float, dy: float, half: int = STAMP_HALF) -> np.ndarray:
    """``prof`` pixel-integrated on a (2·half+1)² stamp whose centre pixel is at offset
    (-dx, -dy) from the profile's centre (i.e. the profile is at (dx, dy) from the centre)."""
    n = 2 * half + 1
    img = prof.drawImage(nx=n, ny=n, scale=1.0, offset=(dx, dy), method="auto")
    return np.asarray(img.array, dtype=np.float64)


def _addStamp(image: np.ndarray, stamp: np.ndarray, ix: int, iy: int) -> None:
    half = stamp.shape[0] // 2
    ny, nx = image.shape
    y0, y1 = iy - half, iy + half + 1
    x0, x1 = ix - half, ix + half + 1
    sy0, sx0 = max(0, -y0), max(0, -x0)
    sy1 = stamp.shape[0] - max(0, y1 - ny)
    sx1 = stamp.shape[1] - max(0, x1 - nx)
    image[max(0, y0) : min(ny, y1), max(0, x0) : min(nx, x1)] += stamp[sy0:sy1, sx0:sx1]


def _render(
    shape: tuple[int, int], sources: np.ndarray, psf: PsfFactory, varying: bool
) -> np.ndarray:
    image = np.zeros(shape)
    cache: dict[tuple[int, int], np.ndarray] = {}
    for x, y, flux in sources:
        ix, iy = int(math.floor(x + 0.5)), int(math.floor(y + 0.5))
        dx, dy = x - ix, y - iy
        if varying:
            stamp = drawStamp(psf(x, y), dx, dy)
        else:
            key = (round(dx * PHASES), round(dy * PHASES))
            if key not in cache:
                cache[key] = drawStamp(psf(x, y), dx, dy)
            stamp = cache[key]
        _addStamp(image, flux * stamp, ix, iy)
    return image


def makePair(cell: Cell) -> Pair:
    """Render ``cell``'s template and science images with their exact variance planes."""
    rng = np.random.default_rng(cell.seed)
    n = cell.size
    lo, hi = cell.starFlux
    xy = rng.uniform(-10, n + 10, size=(cell.nStars, 2))
    xy = np.round(xy * PHASES) / PHASES
    flux = np.exp(rng.uniform(math.log(lo), math.log(hi), size=cell.nStars))
    stars = np.column_stack([xy, flux])
    # Transients at pixel centres, away from the edges (the kernel's border is not scored).
    margin = 48
    txy = rng.integers(margin, n - margin, size=(cell.nTransients, 2)).astype(float)
    transients = np.column_stack([txy, np.full(cell.nTransients, cell.transientFlux)])

    shape = (n, n)
    tModel = _render(shape, stars, cell.templatePsf, cell.varying) + cell.templateSky
    sStars = stars.copy()
    sStars[:, 2] *= cell.fluxScale
    sModel = (
        _render(shape, np.vstack([sStars, transients]), cell.sciencePsf, cell.varying)
        + cell.scienceSky
        + cell.background
    )
    tVar = tModel + cell.readNoise**2
    sVar = sModel + cell.readNoise**2
    template = tModel + rng.normal(size=shape) * np.sqrt(tVar)
    science = sModel + rng.normal(size=shape) * np.sqrt(sVar)
    return Pair(
        cell,
        template.astype(np.float32),
        science.astype(np.float32),
        tVar.astype(np.float32),
        sVar.astype(np.float32),
        stars,
        transients,
    )


def psfFit(
    image: np.ndarray,
    variance: np.ndarray,
    psfStamp: np.ndarray,
    ix: int,
    iy: int,
    radius: float,
    usable: np.ndarray | None = None,
) -> tuple[float, float, float]:
    """Variance-weighted least-squares flux of ``psfStamp`` (centred on pixel (ix, iy)) within
    ``radius`` pixels; returns (flux, its 1-σ error, χ² per pixel of the fit's residual).

    The weights come from the variance plane, not the data, so the estimate is unbiased
    whenever the PSF is the true one."""
    half = psfStamp.shape[0] // 2
    sl = (slice(iy - half, iy + half + 1), slice(ix - half, ix + half + 1))
    d = np.asarray(image[sl], dtype=np.float64)
    v = np.asarray(variance[sl], dtype=np.float64)
    yy, xx = np.mgrid[-half : half + 1, -half : half + 1]
    inside = (xx**2 + yy**2 <= radius**2) & np.isfinite(d) & (v > 0)
    if usable is not None:
        inside &= usable[sl]
    p = psfStamp[inside]
    w = 1.0 / v[inside]
    norm = float(np.sum(p * p * w))
    flux = float(np.sum(p * d[inside] * w) / norm)
    chi2 = float(np.mean((d[inside] - flux * p) ** 2 * w))
    return flux, 1.0 / math.sqrt(norm), chi2


def scoreResult(pair: Pair, result: Any, fitRadiusFwhm: float = 3.0) -> dict[str, float]:
    """The matrix's figures for one subtraction of ``pair``.

    - ``kernelSumError``: kernel sum at the centre over the true flux ratio, minus 1 (the
      ratio is the science/template flux scale, or its inverse when the science image was
      convolved).
    - ``transientRaw`` / ``transientDecorrelated``: Σ fitted / Σ true transient flux in the raw
      D (fitting the PSF D has there: the science PSF, or the template's when the science image
      was convolved, drawn by GalSim at the transient) and in the returned D (fitting
      ``result.differencePsf``), with their 1-σ statistical errors (``...Err``).
    - ``starResidual``: Σ fitted D flux / Σ true science flux over the stars brighter than
      the median, away from the edges (0 for a perfect subtraction), and its error.
    - ``chi2Stars``: mean (D/σ)² of the raw D within 1.5 FWHM of those stars.
    """
    cell = pair.cell
    raw = result.rawDifference if result.rawDifference is not None else result.difference
    rawImage = np.asarray(raw.image, dtype=np.float64)
    rawVar = np.asarray(raw.variance, dtype=np.float64)
    usable = (np.asarray(raw.mask) == 0) & np.isfinite(rawImage)
    scienceConvolved = result.convolved == "Science"
    truthSum = 1.0 / cell.fluxScale if scienceConvolved else cell.fluxScale
    dPsf: PsfFactory = cell.templatePsf if scienceConvolved else cell.sciencePsf
    n = cell.size
    out: dict[str, float] = {"kernelSumError": result.kernelSum / truthSum - 1.0}

    cache: dict[tuple[int, int], np.ndarray] = {}

    def stampAt(x: float, y: float, dx: float, dy: float) -> np.ndarray:
        if cell.varying:
            return drawStamp(dPsf(x, y), dx, dy)
        key = (round(dx * PHASES), round(dy * PHASES))
        if key not in cache:
            cache[key] = drawStamp(dPsf(x, y), dx, dy)
        return cache[key]

    fwhmCache: dict[tuple[float, float], float] = {}

    def fwhmAt(x: float, y: float) -> float:
        key = (x, y) if cell.varying else (0.0, 0.0)
        if key not in fwhmCache:
            fwhmCache[key] = float(dPsf(x, y).calculateFWHM())
        return fwhmCache[key]

    # Transients: integer positions.
    fits = []
    for x, y, f in pair.transients:
        stamp = stampAt(x, y, 0.0, 0.0)
        got, err, _ = psfFit(
            rawImage, rawVar, stamp, int(x), int(y), fitRadiusFwhm * fwhmAt(x, y), usable
        )
        fits.append((got, err, f))
    arr = np.array(fits)
    out["transientRaw"] = float(arr[:, 0].sum() / arr[:, 2].sum())
    out["transientRawErr"] = float(math.sqrt((arr[:, 1] ** 2).sum()) / arr[:, 2].sum())

    if result.differencePsf is not None and result.rawDifference is not None:
        dec = result.difference
        decImage = np.asarray(dec.image, dtype=np.float64)
        decVar = np.asarray(dec.variance, dtype=np.float64)
        decUsable = (np.asarray(dec.mask) == 0) & np.isfinite(decImage)
        psf = np.asarray(result.differencePsf, dtype=np.float64)
        half = psf.shape[0] // 2
        if half > STAMP_HALF:
            psf = psf[
                half - STAMP_HALF : half + STAMP_HALF + 1, half - STAMP_HALF : half + STAMP_HALF + 1
            ]
        fits = []
        for x, y, f in pair.transients:
            got, err, _ = psfFit(
                decImage, decVar, psf, int(x), int(y), fitRadiusFwhm * fwhmAt(x, y), decUsable
            )
            fits.append((got, err, f))
        arr = np.array(fits)
        out["transientDecorrelated"] = float(arr[:, 0].sum() / arr[:, 2].sum())
        out["transientDecorrelatedErr"] = float(math.sqrt((arr[:, 1] ** 2).sum()) / arr[:, 2].sum())

    # Stars: the brighter half, inside the scored area and away from the transients (which
    # are in D by design).
    margin = STAMP_HALF + 24
    s = pair.stars
    inside = (
        (s[:, 0] > margin) & (s[:, 0] < n - margin) & (s[:, 1] > margin) & (s[:, 1] < n - margin)
    )
    t = pair.transients
    nearest = np.hypot(s[:, None, 0] - t[None, :, 0], s[:, None, 1] - t[None, :, 1]).min(axis=1)
    inside &= nearest > 2 * STAMP_HALF
    bright = inside & (s[:, 2] >= np.median(s[inside, 2]))
    sel = s[bright]
    if len(sel) > 400:  # enough for 0.05 % statistics; keeps the crowded cell quick
        sel = sel[np.argsort(sel[:, 2])[-400:]]
    resid, errs, trueFlux, chi2s = [], [], [], []
    for x, y, f in sel:
        ix, iy = int(math.floor(x + 0.5)), int(math.floor(y + 0.5))
        stamp = stampAt(x, y, x - ix, y - iy)
        fw = fwhmAt(x, y)
        got, err, _ = psfFit(rawImage, rawVar, stamp, ix, iy, fitRadiusFwhm * fw, usable)
        # χ² of D itself (not of the fit's residual) within 1.5 FWHM.
        r = max(1.5 * fw, 2.0)
        h = int(math.ceil(r))
        yy, xx = np.mgrid[-h : h + 1, -h : h + 1]
        disk = xx**2 + yy**2 <= r * r
        sl = (slice(iy - h, iy + h + 1), slice(ix - h, ix + h + 1))
        ok = disk & usable[sl]
        chi2s.append((rawImage[sl][ok] ** 2 / rawVar[sl][ok]).tolist())
        sciFlux = f * cell.fluxScale
        resid.append(got)
        errs.append(err)
        trueFlux.append(sciFlux)
    total = float(np.sum(trueFlux))
    out["starResidual"] = float(np.sum(resid)) / total
    out["starResidualErr"] = float(math.sqrt(np.sum(np.square(errs)))) / total
    out["chi2Stars"] = float(np.mean(np.concatenate([np.asarray(c) for c in chi2s])))
    out["nStarsScored"] = float(len(sel))
    return out
