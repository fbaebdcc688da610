# SPDX-License-Identifier: BSD-3-Clause
"""useBicForKernelBasis (docs/algorithm.md §3.8, docs/decisions.md D3) on simulated pairs with
known kernels.

`psfmatch.simulate.simulatePair` renders both images analytically, so the matching kernel is
known: a round Gaussian needs no polynomial terms at all on the Gaussian of its own width
(the AL widths derived from the FWHMs include exactly that width), while an elliptical kernel
needs the second-degree terms x², xy, y². The Bayesian Information Criterion should see both.
"""

from __future__ import annotations

from typing import Any

import pytest

import psfmatch as pm
from psfmatch.image_psf_match import ImagePsfMatchConfig, ImagePsfMatchTask
from psfmatch.simulate import GaussianPsfModel, simulatePair

DEFAULT_DEGREES = [4, 2, 2]


def runWithBic(scienceSigma: Any, seed: int, useBic: bool = True) -> tuple[ImagePsfMatchTask, Any]:
    sim = simulatePair(
        (256, 256),
        nStars=40,
        seed=seed,
        templateSigma=1.6,
        scienceSigma=scienceSigma,
        nTransients=0,
        background=(10.0, 0.0, 0.0),
    )
    config = ImagePsfMatchConfig()
    kernel = config.kernel.active
    kernel.useBicForKernelBasis = useBic
    kernel.spatialKernelOrder = 0
    kernel.spatialBgOrder = 0
    task = ImagePsfMatchTask(config=config)
    result = task.matchMaskedImages(sim.template, sim.science)
    return task, result


@pytest.mark.parametrize("seed", [3, 4])
def test_round_gaussian_kernel_gets_low_degrees(seed: int) -> None:
    task, result = runWithBic(2.4, seed)
    chosen = task.metadata["ALBasisDegGaussBic"]
    assert all(d <= dMax for d, dMax in zip(chosen, DEFAULT_DEGREES, strict=True))
    assert sum(chosen) < sum(DEFAULT_DEGREES)
    assert chosen == [1, 1, 1]  # unanimous in both seeds (7 of 7 and 14 of 15 votes)
    nVoters = task.metadata["ALBasisBicNCandidates"]
    # A clear majority: the noise is the same for every candidate, the kernel too.
    assert task.metadata["ALBasisBicVotes"] > nVoters / 2
    # The fit uses the chosen basis: 3 + 3 + 3 kernels, recorded as ALBasisDegGauss.
    assert task.metadata["ALBasisDegGauss"] == chosen
    assert result.psfMatchingKernel.getNBasisKernels() == 9
    # And it is still right: the kernel sum is the simulated flux scale 1.25 (to the 1 % that
    # ~10 noisy stars allow; 0.2-0.4 % measured).
    assert task.metadata["spatialKernelSum"] == pytest.approx(1.25, rel=0.01)


def test_elliptical_kernel_needs_second_degree() -> None:
    task, _ = runWithBic(GaussianPsfModel.elliptical(3.0, 2.0, 0.3), 3)
    chosen = task.metadata["ALBasisDegGaussBic"]
    # The BIC is not blind: an elliptical kernel needs x², xy, y² on some Gaussian.
    assert max(chosen) >= 2
    assert all(d <= dMax for d, dMax in zip(chosen, DEFAULT_DEGREES, strict=True))


def test_bic_needs_the_alard_lupton_basis() -> None:
    config = ImagePsfMatchConfig()
    config.kernel.name = "DF"
    config.kernel.active.useBicForKernelBasis = True
    config.kernel.active.kernelSize = 9
    sim = simulatePair((128, 128), nStars=10, seed=1, nTransients=0)
    with pytest.raises(pm.InvalidInputError, match="useBicForKernelBasis"):
        ImagePsfMatchTask(config=config).matchMaskedImages(sim.template, sim.science)


def test_bic_off_leaves_no_trace() -> None:
    task, result = runWithBic(2.4, 3, useBic=False)
    assert "ALBasisDegGaussBic" not in task.metadata
    assert task.metadata["ALBasisDegGauss"] == DEFAULT_DEGREES
    assert result.psfMatchingKernel.getNBasisKernels() == 27
