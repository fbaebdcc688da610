# SPDX-License-Identifier: BSD-3-Clause
"""Issue 20, item 3: a subtraction does not depend on the images' units.

The same simulated pair in physical units (×1e-10, variance ×1e-20), in huge ones (×1e10) and
as float32 at ×1e18 with a variance psfmatch estimates itself must give the answer of the pair
as simulated, times the scale: the same kernel, D/scale and Var(D)/scale², the same detections.
On the code before issue 20 the first lost every star (NoKernelCandidatesError: the fit's
condition number weighed a background term that goes as 1/variance), ×1e10 dropped the
background (kernel sum 1.2455 against 1.2485) and the ×1e18 estimate overflowed float32.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import psfmatch
from psfmatch.simulate import simulatePair

SHAPE = (384, 384)


@pytest.fixture(scope="module")
def pair() -> Any:
    return simulatePair(SHAPE, nStars=60, seed=3)


def _run(pair: Any, factor: float, withVariance: bool, dtype: Any = np.float64) -> Any:
    science = (pair.science.image.astype(np.float64) * factor).astype(dtype)
    template = (pair.template.image.astype(np.float64) * factor).astype(dtype)
    kwargs: dict[str, Any] = {}
    if withVariance:
        kwargs = {
            "scienceVariance": pair.science.variance.astype(np.float64) * factor**2,
            "templateVariance": pair.template.variance.astype(np.float64) * factor**2,
        }
    return psfmatch.subtract(science, template, **kwargs)


@pytest.fixture(scope="module")
def reference(pair: Any) -> dict[bool, Any]:
    return {v: _run(pair, 1.0, v) for v in (True, False)}


def _assertSameUpToScale(result: Any, ref: Any, factor: float, dTolerance: float) -> None:
    # The kernel is dimensionless: 1e-5 of its peak allows the solver's rounding on inputs
    # that differ by the scale's rounding (measured ≤ 2e-6); a lost background term or one
    # star more or less moves it by ≥ 1e-4.
    peak = np.abs(ref.kernelImage()).max()
    np.testing.assert_allclose(result.kernelImage(), ref.kernelImage(), rtol=0, atol=1e-5 * peak)
    np.testing.assert_allclose(result.kernelSum, ref.kernelSum, rtol=1e-5)
    d0, v0 = ref.image, ref.variance
    ok = np.isfinite(d0)
    np.testing.assert_array_equal(np.isfinite(result.image), ok)
    np.testing.assert_array_equal(result.mask, ref.mask)
    # D/scale against D, in units of D's noise: dTolerance is a few times the measured rounding
    # (≤ 1e-5 σ in float64); any change of method (another kernel, a background left in,
    # another decorrelation) moves pixels by ≥ 1e-2 σ.
    sigma = np.sqrt(v0[ok])
    assert np.max(np.abs(result.image[ok] / factor - d0[ok]) / sigma) < dTolerance
    np.testing.assert_allclose(result.variance[ok] / factor**2, v0[ok], rtol=1e-4)
    # The background b scales with the images.
    x, y = 0.5 * (SHAPE[1] - 1), 0.5 * (SHAPE[0] - 1)
    np.testing.assert_allclose(result.background(x, y) / factor, ref.background(x, y), rtol=1e-4)
    a, b = result.diaSources, ref.diaSources
    assert len(a) == len(b)
    np.testing.assert_allclose(np.array([a["x"], a["y"]]), np.array([b["x"], b["y"]]), atol=1e-2)
    np.testing.assert_allclose(a["snr"], b["snr"], rtol=1e-3)
    np.testing.assert_allclose(np.asarray(a["flux"]) / factor, b["flux"], rtol=1e-3)


@pytest.mark.parametrize("withVariance", [True, False], ids=["variance", "estimated"])
@pytest.mark.parametrize("factor", [1e-10, 1e10])
def test_units_do_not_change_the_subtraction(
    pair: Any, reference: dict[bool, Any], factor: float, withVariance: bool
) -> None:
    result = _run(pair, factor, withVariance)
    _assertSameUpToScale(result, reference[withVariance], factor, 1e-4)
    # The kernel sum is the pair's flux ratio whatever the units (1.25 simulated; 1 % is
    # several times its scatter from the noise of a 384² pair).
    assert result.fluxScale == pytest.approx(pair.truth.fluxScale, rel=1e-2)


def test_float32_at_1e18_with_an_estimated_variance(pair: Any, reference: dict[bool, Any]) -> None:
    """The float32 pair ×1e18 (σ ~1e19, variance ~1e38: the edge of float32) with the variance
    estimated: the estimate used to overflow (every variance inf, an InvalidInputError)."""
    ref = _run(pair, 1.0, False, np.float32)
    result = _run(pair, 1e18, False, np.float32)
    # Float32 inputs ×1e18 round each pixel afresh (6e-8 relative): star residuals of ~1e3 σ
    # then differ by up to ~1e-4 σ; 1e-3 σ leaves room for that and nothing else.
    _assertSameUpToScale(result, ref, 1e18, 1e-3)
