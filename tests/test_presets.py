# SPDX-License-Identifier: BSD-3-Clause
"""The snap preset (docs/algorithm.md §7.8): its values, and a clean subtraction of a snap pair.

The pair comes from `psfmatch.simulate.simulatePair` with nearly equal PSFs (σ 1.80 and 1.95
pixels), a 2 % transparency change and no differential background, as two back-to-back
exposures would have.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import psfmatch as pm
from psfmatch.image_psf_match import ImagePsfMatchTask
from psfmatch.presets import (
    SnapPsfMatchConfig,
    SnapPsfMatchConfigAL,
    SnapPsfMatchConfigDF,
    makeSnapConfig,
)
from psfmatch.simulate import simulatePair

FLUX_SCALE = 1.02


def test_snap_config_values() -> None:
    config = SnapPsfMatchConfig()
    config.validate()
    assert config.kernel.name == "AL"
    # The shared settings apply to both kernel choices, whichever is active.
    for name in ("AL", "DF"):
        kernel = config.kernel[name]
        assert kernel.spatialKernelOrder == 0
        assert kernel.fitForBackground is False
        assert kernel.kernelSize == 7
        assert kernel.spatialKernelClipping is False
    al = config.kernel["AL"]
    assert isinstance(al, SnapPsfMatchConfigAL)
    assert al.alardNGauss == 2
    assert list(al.alardSigGauss) == [1.0, 2.5]
    assert list(al.alardDegGauss) == [4, 2]
    assert al.scaleByFwhm is False  # so that the 7-pixel kernel and the widths are used
    df = config.kernel["DF"]
    assert isinstance(df, SnapPsfMatchConfigDF)
    assert df.useRegularization is False
    assert df.usePcaForSpatialKernel is True
    assert df.numPrincipalComponents == 5
    dfConfig = makeSnapConfig("DF")
    dfConfig.validate()
    assert dfConfig.kernel.name == "DF"
    assert isinstance(makeSnapConfig(), pm.ImagePsfMatchConfig)
    with pytest.raises(pm.InvalidInputError, match="kind"):
        makeSnapConfig("delta")


@pytest.fixture(scope="module")
def snapPair() -> Any:
    return simulatePair(
        (384, 384),
        nStars=120,
        seed=5,
        templateSigma=1.8,
        scienceSigma=1.95,
        fluxScale=FLUX_SCALE,
        background=0.0,
        nTransients=5,
    )


def awayFrom(sim: Any, shape: tuple[int, int], radius: int) -> np.ndarray:
    away = np.ones(shape, dtype=bool)
    for table in (sim.stars, sim.transients):
        for x, y in zip(table["x"], table["y"], strict=True):
            ix, iy = int(round(x)), int(round(y))
            away[max(iy - radius, 0) : iy + radius + 1, max(ix - radius, 0) : ix + radius + 1] = 0
    return away


@pytest.mark.parametrize("kind", ["AL", "DF"])
def test_snap_pair_subtracts_cleanly(snapPair: Any, kind: str) -> None:
    task = ImagePsfMatchTask(config=makeSnapConfig(kind))
    result = task.subtractMaskedImages(snapPair.template, snapPair.science)
    kernel = result.psfMatchingKernel
    assert kernel.getDimensions() == (7, 7)
    assert not kernel.isSpatiallyVarying()
    # AL: 15 + 6 basis kernels; DF: the mean and four eigen-kernels of the PCA.
    assert kernel.getNBasisKernels() == (21 if kind == "AL" else 5)
    # The transparency change, from ~50 stars of S/N ≥ 10: 0.5 % (0.2 % measured).
    assert task.metadata["spatialKernelSum"] == pytest.approx(FLUX_SCALE, rel=5e-3)

    difference = result.subtractedMaskedImage
    z = difference.image / np.sqrt(difference.variance)
    sky = awayFrom(snapPair, z.shape, 10) & np.isfinite(z)
    # Sky pixels are noise of the stated variance: rms 1 to within 3 % (~1e5 pixels, so the
    # statistical error is 0.2 %; the rest is the variance model after decorrelation).
    assert np.std(z[sky]) == pytest.approx(1.0, abs=0.03)
    # No background is fitted, so the sky left in D is the kernel-sum error times the
    # template sky (100): (1.02 − κ)·100, to 4 standard errors of the mean of ~1e5 pixels.
    kSum = task.metadata["spatialKernelSum"]
    skyLeft = float(np.mean(difference.image[sky], dtype=np.float64))
    standardError = float(np.std(difference.image[sky])) / np.sqrt(sky.sum())
    assert skyLeft == pytest.approx((FLUX_SCALE - kSum) * 100.0, abs=4 * standardError)
    chi2 = []
    for x, y in zip(snapPair.stars["x"], snapPair.stars["y"], strict=True):
        ix, iy = int(round(x)), int(round(y))
        stamp = z[iy - 3 : iy + 4, ix - 3 : ix + 4]
        if stamp.shape == (7, 7) and np.isfinite(stamp).all():
            chi2.append(float(np.mean(stamp**2)))
    # Stars vanish into the noise: per-pixel χ² on their cores has median ≈ 1 (0.97-0.99
    # measured) and few outliers; 1.15 would be a visible residual on the median star.
    assert len(chi2) > 80
    assert np.median(chi2) < 1.15
