# SPDX-License-Identifier: BSD-3-Clause
"""Difference-image sources end to end at a configured threshold (docs/decisions.md D4).

tests/test_decorrelate.py checks the detector on white noise and the default 5σ run (where
Gaussian noise predicts ≈ 0 false detections, so a count of 0-3 cannot tell a right noise
model from a slightly wrong one). Here the whole subtraction runs with
``diaSourceThreshold = 3``, where pure noise gives ~150 excursions: the detections away from
every simulated source must number what Gaussian noise predicts for that threshold, the
decorrelated difference's PSF and its area, which holds only if D, its variance plane and its
PSF are all right.
"""

from __future__ import annotations

import math

import numpy as np

from psfmatch.image_psf_match import ImagePsfMatchConfig, ImagePsfMatchTask
from psfmatch.simulate import simulatePair

FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))


def expectedExcursions(area: float, psfSigma: float, u: float) -> float:
    """Expected number of separate excursions above u·σ, one sign, of white noise matched-
    filtered with a Gaussian PSF of ``psfSigma`` pixels over ``area`` pixels: the expected
    Euler characteristic of the excursion set (Adler 1981), area·λ₂·u·exp(−u²/2)/(2π)^{3/2},
    with λ₂ = 1/(2σ²) the second spectral moment of the filtered field."""
    lam2 = 1.0 / (2.0 * psfSigma**2)
    return area * lam2 * u * math.exp(-0.5 * u * u) / (2.0 * math.pi) ** 1.5


def test_noise_detections_at_a_configured_threshold_match_gaussian_noise() -> None:
    sim = simulatePair((512, 512), nStars=150, seed=41, nTransients=6, nVariables=0)
    config = ImagePsfMatchConfig()
    config.diaSourceThreshold = 3.0
    task = ImagePsfMatchTask(config=config)
    result = task.subtractMaskedImages(sim.template, sim.science)
    dia = result.diaSources
    md = task.metadata
    assert dia.meta["threshold"] == 3.0
    assert (np.abs(dia["snr"]) >= 3.0).all()
    assert md["NFalsePositivesTotal"] == len(dia)

    # Every transient is found, positive and unassociated.
    for x, y in zip(sim.transients["x"], sim.transients["y"], strict=True):
        near = np.hypot(dia["x"] - x, dia["y"] - y) < 2.0
        assert near.sum() == 1
        assert not dia["isNegative"][near][0]
        assert not dia["refAssociated"][near][0] and not dia["srcAssociated"][near][0]

    # Away from every star and transient (8 px: beyond a star's residual lobes, ≈ 3σ of the
    # difference PSF, σ ≈ 2.5 px) the detections are noise.
    d = result.subtractedMaskedImage
    ny, nx = d.image.shape
    yy, xx = np.mgrid[0:ny, 0:nx]
    away = np.isfinite(d.image)
    sources = np.concatenate(
        [
            np.column_stack([sim.stars["x"], sim.stars["y"]]),
            np.column_stack([sim.transients["x"], sim.transients["y"]]),
        ]
    )
    radius = 8.0
    for sx, sy in sources:
        ya, yb = max(int(sy - radius), 0), min(int(sy + radius) + 2, ny)
        xa, xb = max(int(sx - radius), 0), min(int(sx + radius) + 2, nx)
        disc = np.hypot(xx[ya:yb, xa:xb] - sx, yy[ya:yb, xa:xb] - sy) <= radius
        away[ya:yb, xa:xb] &= ~disc
    ix = np.clip(np.round(dia["x"]).astype(int), 0, nx - 1)
    iy = np.clip(np.round(dia["y"]).astype(int), 0, ny - 1)
    noise = away[iy, ix]
    psfSigma = md["differencePsfSize"] / FWHM_PER_SIGMA
    expected = 2.0 * expectedExcursions(float(away.sum()), psfSigma, 3.0)  # both signs
    assert expected > 50
    # Pixel sampling misses a few excursions that peak between pixel centres (0.88-0.93 of
    # the continuous formula, see test_decorrelate), so 0.9 is the centre. The Poisson error
    # on ~70 is 12 %; and the matched filter turns the background fit's error (≈ 0.1 ADU on σ
    # ≈ 8.4, i.e. δ ≈ 0.015σ per pixel) into an S/N offset δ·sqrt(NEA) ≈ 0.13, which moves
    # detections from one sign to the other (a 70/30 split here, measured) and adds ≈ 10 % to
    # their total. So 0.6-1.3: ± 3 Poisson σ around 0.9, plus that 10 %. A variance plane 5 %
    # off, or detection at the default 5σ, would be far outside (× 1.5 and × 0.01).
    ratio = noise.sum() / expected
    assert 0.6 < ratio < 1.3, (noise.sum(), expected)
