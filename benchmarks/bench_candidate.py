# SPDX-License-Identifier: BSD-3-Clause
"""One KernelCandidate build with the default 27-kernel AL basis on a 43×43 stamp.

Target: ≤ 1 ms on one core (the build is single-threaded). Beside it, the same least-squares
problem in numpy/scipy: the design matrix from scipy convolutions, solved by ``np.linalg.lstsq``
or by the normal equations.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.signal

import psfmatch as pm
from benchutils import STAMP, gaussianKernel

GROUP = f"KernelCandidate build, default AL basis, {STAMP}² stamp"
KSUM = 2.0


@pytest.fixture(scope="module")
def stamps() -> tuple[pm.MaskedImage, pm.MaskedImage]:
    """Template stamp and a science stamp = template ⊗ KSUM·G(σ = 1.5) on the good box.

    The kernel lies in the span of the default basis, so a noise-free fit recovers its sum.
    """
    rng = np.random.default_rng(43)
    big = rng.normal(100.0, 10.0, (STAMP + 20, STAMP + 20))
    kernel = gaussianKernel(10, 1.5, total=KSUM)
    template = big[10:-10, 10:-10].copy()
    science = scipy.signal.convolve(big, kernel, mode="valid")
    ones = np.ones((STAMP, STAMP))
    return pm.MaskedImage(template, variance=ones), pm.MaskedImage(science, variance=ones)


def test_candidate_build_psfmatch(benchmark, basis, stamps) -> None:
    """``KernelCandidate.build``: design matrix, normal equations, solve, kernel image."""
    benchmark.group = GROUP
    config = pm.PsfMatchConfigAL()
    template, science = stamps

    def setup():
        cand = pm.KernelCandidate(STAMP // 2, STAMP // 2, template, science, config)
        return (cand,), {}

    def build(cand: pm.KernelCandidate) -> pm.KernelCandidate:
        cand.build(basis)
        return cand

    cand = benchmark.pedantic(build, setup=setup, rounds=300, warmup_rounds=10)
    # The kernel is in the basis' span and the data are noise-free: the sum to rounding.
    np.testing.assert_allclose(cand.getKsum(pm.KernelCandidate.ORIG), KSUM, rtol=1e-8)


def designMatrix(template: np.ndarray, kernels: list[np.ndarray], method: str) -> np.ndarray:
    return np.stack(
        [scipy.signal.convolve(template, k, mode="valid", method=method).ravel() for k in kernels],
        axis=1,
    )


@pytest.mark.parametrize(
    "solver", ["fftconvolve+lstsq", "direct-convolve+normal-equations"], ids=lambda s: s
)
def test_candidate_build_numpy(benchmark, basis, stamps, solver: str) -> None:
    """Reference: the same fit in numpy/scipy (no kernel image or statistics)."""
    benchmark.group = GROUP
    template, science = stamps
    kernels = [k.getImage() for k in basis]
    s = science.image[10:-10, 10:-10].ravel()
    weight = 1.0 / np.median(template.variance + science.variance)  # constant weighting

    def fit() -> np.ndarray:
        if solver == "fftconvolve+lstsq":
            c = designMatrix(template.image, kernels, "fft")
            return np.linalg.lstsq(c, s, rcond=None)[0]
        c = designMatrix(template.image, kernels, "direct")
        return np.linalg.solve(weight * (c.T @ c), weight * (c.T @ s))

    rounds = 100 if solver.startswith("fft") else 20
    coefficients = benchmark.pedantic(fit, rounds=rounds, warmup_rounds=2)
    ksum = sum(a * k.sum() for a, k in zip(coefficients, kernels, strict=True))
    np.testing.assert_allclose(ksum, KSUM, rtol=1e-8)


DIFF_GROUP = f"KernelCandidate.getDifferenceImage, 21x21 kernel, {STAMP}² stamp"


def test_difference_image_psfmatch(benchmark, basis, stamps) -> None:
    """``getDifferenceImage``: K ⊗ T and K² ⊗ Var_T on the good box, mask, border (every
    single-kernel fit and spatial assessment forms one per candidate)."""
    benchmark.group = DIFF_GROUP
    template, science = stamps
    cand = pm.KernelCandidate(STAMP // 2, STAMP // 2, template, science, pm.PsfMatchConfigAL())
    cand.build(basis)
    kernel = cand.getKernel(pm.KernelCandidate.ORIG)
    diff = benchmark(cand.getDifferenceImage, kernel, 0.0)
    # Noise-free science = template ⊗ kernel in the basis' span: the residual is rounding.
    np.testing.assert_allclose(diff.image[10:-10, 10:-10], 0.0, atol=1e-8)


def test_difference_image_numpy(benchmark, basis, stamps) -> None:
    """Reference: the same two planes by scipy's direct convolution."""
    benchmark.group = DIFF_GROUP
    template, science = stamps
    cand = pm.KernelCandidate(STAMP // 2, STAMP // 2, template, science, pm.PsfMatchConfigAL())
    cand.build(basis)
    k = np.asarray(cand.getKernelImage(pm.KernelCandidate.ORIG))

    def diff() -> tuple[np.ndarray, np.ndarray]:
        image = science.image[10:-10, 10:-10] - scipy.signal.convolve(
            template.image, k, mode="valid", method="direct"
        )
        variance = science.variance[10:-10, 10:-10] + scipy.signal.convolve(
            template.variance, k * k, mode="valid", method="direct"
        )
        return image, variance

    image, _ = benchmark(diff)
    np.testing.assert_allclose(image, 0.0, atol=1e-8)
