# SPDX-License-Identifier: BSD-3-Clause
"""The PSF-wing measurement (psfmatch._psfwings) and the wing Gaussian it adds to the basis
(docs/algorithm.md §2.3, docs/decisions.md D18).

Truths: analytic profiles integrated over the pixels here (a Gaussian by erf differences; a
Moffat by its closed-form enclosed flux, sampled finely), and the basis rule of §2.3 written
out again."""

from __future__ import annotations

import math

import numpy as np
import pytest

import psfmatch as pm
from psfmatch._psfwings import PsfWings, measurePsfWings, wingExcess
from psfmatch.image import MaskedImage

FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))


def _field(
    profile: str, fwhm: float, n: int = 256, spacing: int = 64
) -> tuple[MaskedImage, np.ndarray]:
    """Noise-free stars of one profile at the centres of a grid (sky 100), oversampled ×8."""
    over = 8
    half = spacing // 2
    u = (np.arange(-half * over, half * over) + 0.5) / over
    r2 = u[None, :] ** 2 + u[:, None] ** 2
    if profile == "gaussian":
        sigma = fwhm / FWHM_PER_SIGMA
        fine = np.exp(-r2 / (2 * sigma**2))
    else:
        beta = float(profile.removeprefix("moffat"))
        alpha = fwhm / (2.0 * math.sqrt(2.0 ** (1.0 / beta) - 1.0))
        fine = (1.0 + r2 / alpha**2) ** (-beta)
    stamp = fine.reshape(spacing, over, spacing, over).sum(axis=(1, 3))
    stamp *= 1.0e5 / stamp.sum()
    image = np.full((n, n), 100.0)
    centres = []
    for cy in range(0, n, spacing):
        for cx in range(0, n, spacing):
            image[cy : cy + spacing, cx : cx + spacing] += stamp
            centres.append((cx + half - 0.5, cy + half - 0.5))
    # The oversampled grid is centred on a pixel corner: the stars sit at half-pixel positions.
    return MaskedImage(image.astype(np.float32)), np.array(centres)


def _analyticExcess(profile: str, fwhm: float) -> float:
    """The fraction of the flux within 2.5 FWHM lying outside one FWHM, minus a Gaussian's
    (closed forms: 1 - exp(-r²/2σ²) and 1 - (1 + r²/α²)^(1-β) enclose the flux within r)."""
    r1, r2 = fwhm, 2.5 * fwhm
    sigma = fwhm / FWHM_PER_SIGMA

    def gaussianOutside() -> float:
        e1, e2 = math.exp(-(r1**2) / (2 * sigma**2)), math.exp(-(r2**2) / (2 * sigma**2))
        return (e1 - e2) / (1 - e2)

    if profile == "gaussian":
        return 0.0
    beta = float(profile.removeprefix("moffat"))
    alpha = fwhm / (2.0 * math.sqrt(2.0 ** (1.0 / beta) - 1.0))
    m1, m2 = ((1 + r**2 / alpha**2) ** (1 - beta) for r in (r1, r2))
    return (m1 - m2) / (1 - m2) - gaussianOutside()


@pytest.mark.parametrize("profile", ["gaussian", "moffat4.5", "moffat3", "moffat2.5"])
def test_wing_excess_matches_the_profile(profile: str) -> None:
    mi, centres = _field(profile, 4.0)
    got, error = wingExcess(mi, centres[:, 0], centres[:, 1], 4.0, 0)
    assert error < 1e-6  # identical noise-free stars: no scatter
    # 0.015: the stack counts whole pixels whose centres lie inside the radii, the closed form
    # exact circles (measured 0.011 apart for β = 2.5); the excesses are 0.10-0.20 apart from
    # 0 here, at the true FWHM.
    assert got == pytest.approx(_analyticExcess(profile, 4.0), abs=0.015)


def test_wings_decision_uses_either_image() -> None:
    gauss, centres = _field("gaussian", 3.0)
    moff, _ = _field("moffat3", 3.0)
    x, y = centres[:, 0], centres[:, 1]
    assert not measurePsfWings(gauss, gauss, x, y, (3.0, 3.0), 0, 0.02).hasWings
    wings = measurePsfWings(gauss, moff, x, y, (3.0, 3.5), 0, 0.02)
    assert wings.hasWings and wings.broadFwhm == 3.5
    assert wings.scienceExcess > 0.02 > wings.templateExcess


def test_no_star_inside_gives_nan() -> None:
    mi, _ = _field("gaussian", 3.0)
    wings = measurePsfWings(mi, mi, np.array([1.0]), np.array([1.0]), (3.0, 3.0), 0, 0.02)
    assert math.isnan(wings.templateExcess) and not wings.hasWings


def test_basis_gains_the_wing_gaussian() -> None:
    config = pm.PsfMatchConfigAL()
    wings = PsfWings(0.06, 0.07, 5.0, True)
    plain: dict = {}
    withWings: dict = {}
    base = pm.generateAlardLuptonBasisList(config, 3.0, 5.0, metadata=plain)
    basis = pm.generateAlardLuptonBasisList(config, 3.0, 5.0, metadata=withWings, wings=wings)
    # §2.3: σ_w = 2 × 5 px, degree 0 (one more kernel), reach ceil(3 × 5) = 15 -> 31².
    assert withWings["ALBasisSigGauss"] == [*plain["ALBasisSigGauss"], 10.0]
    assert list(withWings["ALBasisDegGauss"]) == [4, 2, 2, 0]
    assert withWings["ALBasisNGauss"] == 4 and withWings["ALBasisWingSigma"] == 10.0
    assert withWings["ALKernelSize"] == 31 and plain["ALKernelSize"] == 21
    assert len(basis) == len(base) + 1
    # Clamped to kernelSizeMax.
    config.kernelSizeMax = 25
    pm.generateAlardLuptonBasisList(config, 3.0, 5.0, metadata=withWings, wings=wings)
    assert withWings["ALKernelSize"] == 25


@pytest.mark.parametrize("setting", ["scaleByFwhm", "scaleByWings", "noWings"])
def test_hand_set_basis_is_kept(setting: str) -> None:
    """With scaleByFwhm off, the user's kernelSize and alardSigGauss are used exactly; with
    scaleByWings off, or no wings measured, the FWHM-only basis is unchanged."""
    config = pm.PsfMatchConfigAL()
    config.kernelSize = 15
    config.alardSigGauss = [0.9, 1.8, 3.6]
    wings = PsfWings(0.06, 0.07, 5.0, setting != "noWings")
    if setting == "scaleByFwhm":
        config.scaleByFwhm = False
    elif setting == "scaleByWings":
        config.scaleByWings = False
    metadata: dict = {}
    pm.generateAlardLuptonBasisList(config, 3.0, 5.0, metadata=metadata, wings=wings)
    assert metadata["ALBasisNGauss"] == 3
    if setting == "scaleByFwhm":
        assert metadata["ALKernelSize"] == 15
        assert metadata["ALBasisSigGauss"] == [0.9, 1.8, 3.6]
    else:
        assert metadata["ALBasisWingSigma"] == 0.0
        assert metadata["ALKernelSize"] == 21
