# SPDX-License-Identifier: BSD-3-Clause
"""The difference-source association radius, at distances where it changes the answer.

A difference-image source is ``refAssociated`` when a template detection lies within
``matchRadius`` FWHMs of the difference image's PSF, ``srcAssociated`` when a kernel source
does. The tests put sources just inside and just outside that radius (computed here from the
analytic FWHM of the Gaussian PSF given, 2·√(2 ln 2)·σ), directly and through the task with
its default radius, so that a changed default or a flipped comparison changes the answer.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from astropy.table import Table
from scipy.special import erf

from psfmatch.detect_and_measure import DetectAndMeasureConfig, associate
from psfmatch.image_psf_match import ImagePsfMatchConfig, ImagePsfMatchTask
from psfmatch.simulate import simulatePair

FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))


def gaussianPsf(sigma: float, half: int = 12) -> np.ndarray:
    """A pixel-integrated round Gaussian of ``sigma`` on a (2·half + 1)² grid."""
    edges = np.arange(-half, half + 2) - 0.5
    profile = np.diff(0.5 * erf(edges / (math.sqrt(2.0) * sigma)))
    return np.outer(profile, profile)


@pytest.mark.parametrize("matchRadius", [0.5, 1.0, 2.5])
def test_associate_inside_and_outside_the_radius(matchRadius: float) -> None:
    sigma = 2.0
    radius = matchRadius * FWHM_PER_SIGMA * sigma
    # Sources at 0.9 and 1.1 of the radius in four directions from a template detection at
    # (500.3, 400.7) of an image whose origin is (100, -50), and the same around a kernel
    # source. The PSF's measured FWHM may differ from the analytic one by the pixel
    # integration (~1 % for σ = 2); 10 % either side is far beyond that.
    tx, ty = 500.3, 400.7
    kx, ky = 300.0, 250.0
    xs, ys, expectRef, expectSrc = [], [], [], []
    for fraction in (0.9, 1.1):
        for angle in (0.0, 0.5 * math.pi, 0.75 * math.pi, 1.6 * math.pi):
            dx, dy = fraction * radius * math.cos(angle), fraction * radius * math.sin(angle)
            xs += [tx + 100 + dx, kx + dx]
            ys += [ty - 50 + dy, ky + dy]
            expectRef += [fraction < 1.0, False]
            expectSrc += [False, fraction < 1.0]
    snr = np.arange(len(xs), 0, -1, dtype=float) + 5.0  # distinct: the output order is known
    table = Table({"x": xs, "y": ys, "snr": snr, "isNegative": np.zeros(len(xs), dtype=bool)})
    templateDetections = np.array([(tx, ty)], dtype=[("x", float), ("y", float)])
    kernelSources = Table({"x": [kx], "y": [ky]})
    out, counts = associate(
        table, gaussianPsf(sigma), matchRadius, templateDetections, (100, -50), kernelSources
    )
    # Sorted by decreasing |S/N| = the input order here.
    np.testing.assert_array_equal(out["x"], xs)
    assert list(out["refAssociated"]) == expectRef
    assert list(out["srcAssociated"]) == expectSrc
    assert out.meta["matchRadius"] == pytest.approx(radius, rel=0.02)
    assert counts.nTotal == len(xs)
    assert counts.nRefAssociated == 4 and counts.nSrcAssociated == 4
    assert counts.nUnassociated == len(xs) - 8


def test_associate_radius_is_inclusive() -> None:
    # |Δ| ≤ radius is associated: a source exactly at the radius (along x, where the distance
    # is exact in floating point) is, one a ulp-scale step beyond is not.
    psf = gaussianPsf(1.5)
    _, probe = associate(
        Table({"x": [0.0], "y": [0.0], "snr": [6.0], "isNegative": [False]}),
        psf,
        1.0,
        np.array([(0.0, 0.0)], dtype=[("x", float), ("y", float)]),
        (0, 0),
        Table({"x": [], "y": []}),
    )
    radius = probe.radius
    table = Table(
        {
            "x": [radius, radius * (1 + 1e-12)],
            "y": [0.0, 0.0],
            "snr": [7.0, 6.0],
            "isNegative": [False, False],
        }
    )
    origin = np.array([(0.0, 0.0)], dtype=[("x", float), ("y", float)])
    out, _ = associate(table, psf, 1.0, origin, (0, 0), Table({"x": [], "y": []}))
    assert list(out["refAssociated"]) == [True, False]


def planted(sigma: float, distances: dict[str, float]) -> dict[str, Any]:
    """A simulated pair with a round science PSF of ``sigma`` and one transient per entry of
    ``distances``, at that many FWHMs from an isolated, moderately bright star (and none of
    the simulator's own transients)."""
    sim = simulatePair(
        (384, 384), nStars=110, seed=23, nTransients=0, templateSigma=1.6, scienceSigma=sigma
    )
    stars = sim.stars
    x, y, flux = (np.asarray(stars[c], dtype=float) for c in ("x", "y", "flux"))
    # Isolated (nothing within 30 px), 40 px inside the image, flux 5e3-5e4: its own
    # residual in D is noise-like.
    others = np.hypot(x[:, None] - x[None, :], y[:, None] - y[None, :])
    np.fill_diagonal(others, np.inf)
    ok = (others.min(axis=1) > 30) & (x > 40) & (x < 344) & (y > 40) & (y < 344)
    ok &= (flux > 5e3) & (flux < 5e4)
    hosts = np.flatnonzero(ok)
    assert len(hosts) >= len(distances)
    fwhm = FWHM_PER_SIGMA * sigma
    xEdges = np.arange(384 + 1) - 0.5
    placed = {}
    for (name, nFwhm), host in zip(distances.items(), hosts, strict=False):
        px, py = x[host] + nFwhm * fwhm, y[host]
        fx = np.diff(0.5 * erf((xEdges - px) / (math.sqrt(2.0) * sigma)))
        fy = np.diff(0.5 * erf((xEdges - py) / (math.sqrt(2.0) * sigma)))
        # 8e3 in the science image: S/N ≈ 100 against σ = 8 sky noise.
        stamp = 8e3 * np.outer(fy, fx)
        sim.science.image[...] += stamp.astype(sim.science.image.dtype)
        sim.science.variance[...] += stamp.astype(sim.science.variance.dtype)
        placed[name] = (px, py)
    return {"sim": sim, "placed": placed, "fwhm": fwhm}


def test_task_default_radius_decides_association() -> None:
    # The default radius is 1 FWHM of D's PSF (≈ the science PSF here, 5.9 px): a transient at
    # 0.6 FWHM from a template star is associated, one at 1.6 FWHM is not. A default of 0.5
    # or of 2 would change one of the two answers.
    case = planted(2.5, {"near": 0.6, "far": 1.6})
    config = ImagePsfMatchConfig()
    config.mode = "convolveTemplate"
    assert config.diaSourceMatchRadius == DetectAndMeasureConfig().matchRadius == 1.0
    task = ImagePsfMatchTask(config=config)
    result = task.subtractMaskedImages(case["sim"].template, case["sim"].science)
    dia = result.diaSources
    # D's PSF is the science PSF (convolveTemplate); its measured FWHM within 10 % of the
    # analytic one, and the radius is that many FWHMs.
    assert dia.meta["matchRadius"] == pytest.approx(case["fwhm"], rel=0.1)
    for name, associated in (("near", True), ("far", False)):
        px, py = case["placed"][name]
        near = np.hypot(dia["x"] - px, dia["y"] - py) < 2.0
        assert near.sum() == 1, (name, dia)
        row = dia[near][0]
        assert not row["isNegative"]
        assert bool(row["refAssociated"]) is associated, name


def test_associate_radius_is_in_pixels_for_a_psf_without_width() -> None:
    # A one-pixel PSF has no second moment, so no FWHM: the radius is then matchRadius
    # pixels (1 pixel per "FWHM"), as documented.
    origin = np.array([(50.0, 60.0)], dtype=[("x", float), ("y", float)])
    table = Table(
        {
            "x": [51.4, 50.0, 48.3],
            "y": [60.0, 61.6, 60.0],
            "snr": [9.0, 8.0, 7.0],
            "isNegative": [False, False, False],
        }
    )
    out, counts = associate(table, np.ones((1, 1)), 1.5, origin, (0, 0), Table({"x": [], "y": []}))
    assert counts.radius == 1.5
    # 1.4 px and 1.7 px from the template detection; 1.6 px.
    assert list(out["refAssociated"]) == [True, False, False]


@pytest.mark.parametrize("seed", range(6))
def test_pairs_within_finds_exactly_the_brute_force_pairs(seed: int) -> None:
    # The cell hashing of _pairsWithin against all-pairs distances: points clustered and
    # spread, negative coordinates, radii from much smaller to larger than the spacing.
    from psfmatch._sources import _pairsWithin

    rng = np.random.default_rng(seed)
    n, m = int(rng.integers(1, 60)), int(rng.integers(1, 60))
    offset = rng.uniform(-500, 500, 2)
    scale = float(rng.choice([3.0, 30.0, 300.0]))
    xa, ya = (offset[k] + scale * rng.standard_normal(n) for k in (0, 1))
    xb, yb = (offset[k] + scale * rng.standard_normal(m) for k in (0, 1))
    # Some points of b exactly on points of a, some exactly one radius away along x.
    radius = float(rng.choice([0.5, 2.0, 10.0, 100.0]))
    k = min(n, m) // 3
    xb[:k], yb[:k] = xa[:k], ya[:k]
    xb[k : 2 * k], yb[k : 2 * k] = xa[:k] + radius, ya[:k]
    i, j, d = _pairsWithin(xa, ya, xb, yb, radius)
    distance = np.hypot(xa[:, None] - xb[None, :], ya[:, None] - yb[None, :])
    expected = set(zip(*np.nonzero(distance <= radius), strict=True))
    assert set(zip(i.tolist(), j.tolist(), strict=True)) == expected
    assert len(i) == len(expected)  # no pair twice
    np.testing.assert_allclose(d, distance[i, j], rtol=0, atol=0)
