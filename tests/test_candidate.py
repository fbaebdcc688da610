# SPDX-License-Identifier: BSD-3-Clause
"""Tests of KernelCandidate, the per-candidate kernel solutions and ImageStatistics
(docs/algorithm.md §1.1, §1.2, §2.6, §3).

Expected values come from known answers (science built from the template with a known kernel)
or from numpy/scipy recomputations of the normal equations written out in this file.
"""

from __future__ import annotations

import gc
import math

import numpy as np
import pytest
import scipy.signal

import psfmatch as pm
from helpers import alConfig
from psfmatch import _core

ORIG, PCA, RECENT = pm.KernelCandidate.ORIG, pm.KernelCandidate.PCA, pm.KernelCandidate.RECENT
NO_DATA = pm.Mask.getPlaneBitMask("NO_DATA")
SAT = pm.Mask.getPlaneBitMask("SAT")
EDGE = pm.Mask.getPlaneBitMask("EDGE")
CR = pm.Mask.getPlaneBitMask("CR")
DEFAULT_AL_SIGMAS = [0.7, 1.5, 3.0]
DEFAULT_AL_DEGREES = [4, 2, 2]


RNG_SEED = 271828  # the rng fixture's seed (conftest.py)


# --------------------------------------------------------------------------------------------
# helpers: synthetic stamps and numpy references
# --------------------------------------------------------------------------------------------


def gaussianKernel(
    halfWidth: int,
    sigma: float,
    *,
    sx: float | None = None,
    sy: float | None = None,
    theta: float = 0.0,
    x0: float = 0.0,
    y0: float = 0.0,
    total: float = 1.0,
) -> np.ndarray:
    """A (rotated, elliptical, offset) Gaussian on the (2h+1)² pixel grid, summing to total."""
    sx = sigma if sx is None else sx
    sy = sigma if sy is None else sy
    u = np.arange(-halfWidth, halfWidth + 1, dtype=float)
    x, y = u[np.newaxis, :] - x0, u[:, np.newaxis] - y0
    c, s = math.cos(theta), math.sin(theta)
    xr, yr = c * x + s * y, -s * x + c * y
    g = np.exp(-0.5 * ((xr / sx) ** 2 + (yr / sy) ** 2))
    return total * g / g.sum()


def starField(
    rng: np.random.Generator, shape: tuple[int, int], sigma: float, nStars: int
) -> np.ndarray:
    """Gaussian stars (σ px) at random positions, fluxes 500–3000, on a zero background."""
    ny, nx = shape
    yy, xx = np.mgrid[0:ny, 0:nx]
    image = np.zeros(shape)
    for _ in range(nStars):
        x, y = rng.uniform(4, nx - 5), rng.uniform(4, ny - 5)
        flux = rng.uniform(500.0, 3000.0)
        image += flux * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma**2))
    return image / (2 * np.pi * sigma**2)


def trueConvolve(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """scipy's convolution (docs/decisions.md D1), same shape; only the good box is used by the
    fit."""
    return scipy.signal.convolve(image, kernel, mode="same")


def candidate(
    template: np.ndarray,
    science: np.ndarray,
    config: object,
    *,
    varT: np.ndarray | float = 1.0,
    varS: np.ndarray | float = 1.0,
    maskT: np.ndarray | None = None,
    maskS: np.ndarray | None = None,
    **kwargs: object,
) -> pm.KernelCandidate:
    shape = template.shape
    t = pm.MaskedImage(template, maskT, np.broadcast_to(varT, shape))
    s = pm.MaskedImage(science, maskS, np.broadcast_to(varS, shape))
    ny, nx = shape
    return pm.KernelCandidate(nx // 2, ny // 2, t, s, config, **kwargs)


def designMatrix(
    template: np.ndarray, basis: list[pm.FixedKernel], fitForBackground: bool
) -> np.ndarray:
    """C of §3.2 by scipy: column k = (B_k ⊗ T) on the good box, plus ones for a background."""
    cols = [scipy.signal.convolve(template, b.getImage(), mode="valid").ravel() for b in basis]
    if fitForBackground:
        cols.append(np.ones_like(cols[0]))
    return np.stack(cols, axis=1)


def goodBoxValues(image: np.ndarray, kernelShape: tuple[int, int]) -> np.ndarray:
    kh, kw = kernelShape
    cy, cx = (kh - 1) // 2, (kw - 1) // 2
    ny, nx = image.shape
    return image[cy : ny - (kh - 1 - cy), cx : nx - (kw - 1 - cx)]


def dfConfig(kernelSize: int = 5, **fields: object) -> pm.PsfMatchConfigDF:
    config = pm.PsfMatchConfigDF()
    config.kernelSize = kernelSize
    for name, value in fields.items():
        setattr(config, name, value)
    return config


def smallAlBasis() -> list[pm.FixedKernel]:
    return pm.makeAlardLuptonBasisList(3, 2, [0.8, 1.6], [2, 1])


# --------------------------------------------------------------------------------------------
# known answers
# --------------------------------------------------------------------------------------------


def test_scaled_template_delta_function_basis(rng: np.random.Generator) -> None:
    template = rng.normal(100.0, 10.0, (21, 21))
    cand = candidate(template, 2.7 * template, dfConfig(7))
    cand.build(pm.makeDeltaFunctionBasisList(7, 7))
    expected = np.zeros((7, 7))
    expected[3, 3] = 2.7
    # Noise-free, exactly representable: least squares reproduces it to the rounding of a
    # 49×49 solve with cond(M) ~ 1e3, i.e. ~1e-12.
    np.testing.assert_allclose(cand.getKernelImage(ORIG), expected, rtol=0, atol=1e-10)
    np.testing.assert_allclose(cand.getKsum(ORIG), 2.7, rtol=1e-12)  # same argument
    assert cand.getBackground(ORIG) == 0.0  # no background fitted


def test_scaled_template_default_alard_lupton_basis(rng: np.random.Generator) -> None:
    """science = 2.7 × template, kernel 21, stamp 43² (good box 23²), smooth stars."""
    template = starField(rng, (43, 43), 3.0, 6)
    basis = pm.makeAlardLuptonBasisList(10, 3, DEFAULT_AL_SIGMAS, DEFAULT_AL_DEGREES)
    cand = candidate(template, 2.7 * template, alConfig())
    cand.build(basis)
    # The AL basis cannot represent the δ kernel exactly, but on stars (σ = 3 px) much smoother
    # than its narrowest Gaussian it matches the δ's low-order moments, and the kernel sum comes
    # out within ~1e-6 relative; 1e-4 keeps margin yet catches any mis-scaled B₀ or sum (≥1e-2).
    np.testing.assert_allclose(cand.getKsum(ORIG), 2.7, rtol=1e-4)
    # For the AL basis the kernel sum is the coefficient of B₀ (ΣB₀ = 1, ΣB_i = 0): 1e-12.
    np.testing.assert_allclose(
        cand.getKernelSolution(ORIG).getSolution()[0], cand.getKsum(ORIG), rtol=1e-12
    )


def test_alard_lupton_exact_in_span_kernel(rng: np.random.Generator) -> None:
    """science = template ⊗ 2.7·G(σ=1.5): the kernel lies in the default basis' span."""
    template = rng.normal(50.0, 10.0, (43, 43))
    kTrue = gaussianKernel(10, 1.5, total=2.7)
    cand = candidate(template, trueConvolve(template, kTrue), alConfig())
    cand.build(pm.makeAlardLuptonBasisList(10, 3, DEFAULT_AL_SIGMAS, DEFAULT_AL_DEGREES))
    # Noise-free and exactly representable; cond(M) ~ 1e8 on a white template costs ~8 of the
    # 16 digits: 1e-7 absolute on kernel pixels ≤ 0.2 and 1e-7 relative on the sum.
    np.testing.assert_allclose(cand.getKernelImage(ORIG), kTrue, rtol=0, atol=1e-7)
    np.testing.assert_allclose(cand.getKsum(ORIG), 2.7, rtol=1e-7)


def test_background_fit(rng: np.random.Generator) -> None:
    template = rng.normal(100.0, 10.0, (21, 21))
    config = dfConfig(5, fitForBackground=True)
    cand = candidate(template, template + 11.3, config)
    cand.build(pm.makeDeltaFunctionBasisList(5, 5))
    # Exact model, cond(M) ~ 1e5 with the ones column against templates ~100: ~1e-10.
    np.testing.assert_allclose(cand.getBackground(ORIG), 11.3, rtol=1e-9)
    np.testing.assert_allclose(cand.getKsum(ORIG), 1.0, rtol=1e-10)
    expected = np.zeros((5, 5))
    expected[2, 2] = 1.0
    np.testing.assert_allclose(cand.getKernelImage(ORIG), expected, rtol=0, atol=1e-10)


@pytest.mark.parametrize("background", [0.0, 4.2])
def test_hot_pixel_recovers_anisotropic_kernel(background: float) -> None:
    """docs/algorithm.md §3.2 worked example, with an off-centre rotated elliptical Gaussian so that
    the convolution direction (docs/decisions.md D1) matters."""
    kTrue = gaussianKernel(5, 0.0, sx=2.2, sy=1.0, theta=0.6, x0=1.2, y0=-0.7, total=1.7)
    assert np.abs(kTrue - kTrue[::-1, ::-1]).max() > 0.05  # not point-symmetric
    template = np.zeros((31, 31))
    template[15, 15] = 1000.0
    science = trueConvolve(template, kTrue) + background
    config = dfConfig(11, fitForBackground=True)
    cand = candidate(template, science, config)
    cand.build(pm.makeDeltaFunctionBasisList(11, 11))
    # Each DF column is one shifted hot pixel, so M is (nearly) diagonal and the kernel comes
    # out pixel by pixel to rounding: 1e-12 absolute on pixels ≤ 0.2.
    np.testing.assert_allclose(cand.getKernelImage(ORIG), kTrue, rtol=0, atol=1e-12)
    # The science stamp away from the kernel footprint fixes the background exactly (rounding).
    np.testing.assert_allclose(cand.getBackground(ORIG), background, rtol=0, atol=1e-10)
    np.testing.assert_allclose(cand.getKsum(ORIG), 1.7, rtol=1e-12)  # same rounding argument


def test_gaussian_stars_with_noise_kernel_sum(rng: np.random.Generator) -> None:
    """Template stars σ_T = 1.8; science = template ⊗ f·G(1.5) + white noise σ_n."""
    f, sigmaN, halfWidth = 1.35, 2.0, 7
    shape = (41, 41)
    template = starField(rng, shape, 1.8, 8)
    kTrue = gaussianKernel(halfWidth, 1.5, total=f)
    science = trueConvolve(template, kTrue) + rng.normal(0.0, sigmaN, shape)
    basis = pm.makeAlardLuptonBasisList(halfWidth, 3, DEFAULT_AL_SIGMAS, DEFAULT_AL_DEGREES)
    cand = candidate(template, science, alConfig(), varT=0.0, varS=sigmaN**2)
    cand.build(basis)

    # The noise-limited error: kSum = sᵀa with s_k = ΣB_k, Cov(a) = σ_n²(CᵀC)⁻¹ for a
    # noise-free template and white science noise (the model is exact: f·G(1.5) lies in the
    # basis' span, so there is no bias).
    c = designMatrix(template, basis, False)
    sums = np.array([b.getImage().sum() for b in basis])
    sigmaKsum = sigmaN * math.sqrt(sums @ np.linalg.solve(c.T @ c, sums))
    assert sigmaKsum < 0.01 * f  # the test has power: the noise is small against f
    # 4 σ: a seeded draw, two-sided p = 6e-5 for a correct fit.
    assert abs(cand.getKsum(ORIG) - f) < 4.0 * sigmaKsum
    # The variance-weighted and the constant-weighted fits coincide for uniform variance.
    assert np.all(cand.getVarianceEstimate() == sigmaN**2)


# --------------------------------------------------------------------------------------------
# normal equations, solution objects, covariance
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fitForBackground", [False, True])
def test_normal_equations_brute_force(rng: np.random.Generator, fitForBackground: bool) -> None:
    shape = (19, 17)
    template = starField(rng, shape, 1.5, 4) + rng.normal(0.0, 1.0, shape)
    science = trueConvolve(template, gaussianKernel(3, 1.1)) + rng.normal(3.0, 1.0, shape)
    varT, varS = rng.uniform(0.5, 1.5, shape), rng.uniform(1.0, 3.0, shape)
    basis = smallAlBasis()
    config = alConfig(fitForBackground=fitForBackground, constantVarianceWeighting=False)
    cand = candidate(template, science, config, varT=varT, varS=varS)
    cand.build(basis)
    sol = cand.getKernelSolution(ORIG)

    c = designMatrix(template, basis, fitForBackground)
    w = 1.0 / goodBoxValues(varT + varS, (7, 7)).ravel()
    s = goodBoxValues(science, (7, 7)).ravel()
    m, b = c.T @ (w[:, None] * c), c.T @ (w * s)
    # Same sums in a different order (Eigen rank update vs numpy matmul, separable vs 2-D
    # convolution): ~1e-13 relative on entries up to ~1e5.
    np.testing.assert_allclose(sol.getM(), m, rtol=1e-11, atol=1e-10 * np.abs(m).max())
    np.testing.assert_allclose(sol.getB(), b, rtol=1e-11, atol=1e-10 * np.abs(b).max())
    a = np.linalg.solve(m, b)
    # The solution of a 10×10 system with cond ~1e6: ~1e-10 relative.
    np.testing.assert_allclose(sol.getSolution(), a, rtol=1e-8, atol=1e-8 * np.abs(a).max())
    assert sol.getSolvedBy() == pm.SolvedBy.LU
    nb = len(basis)
    expectedKernel = sum(ai * bk.getImage() for ai, bk in zip(a[:nb], basis, strict=True))
    np.testing.assert_allclose(  # same ~1e-10 relative as the coefficients
        cand.getKernelImage(ORIG), expectedKernel, rtol=0, atol=1e-8 * np.abs(expectedKernel).max()
    )
    expectedBg = a[nb] if fitForBackground else 0.0
    np.testing.assert_allclose(cand.getBackground(ORIG), expectedBg, rtol=1e-8, atol=1e-12)


def test_condition_numbers(rng: np.random.Generator) -> None:
    template = rng.normal(0.0, 1.0, (19, 19)) + starField(rng, (19, 19), 1.5, 3)
    cand = candidate(template, trueConvolve(template, gaussianKernel(3, 1.0)), alConfig())
    cand.build(smallAlBasis())
    sol = cand.getKernelSolution(ORIG)
    m = sol.getM()
    e = np.linalg.eigvalsh(m)
    sv = np.linalg.svd(m, compute_uv=False)
    # LAPACK and Eigen eigen/singular solvers: the smallest value carries ~eps·max error, so
    # the ratio agrees to ~cond·eps ≈ 1e-9 relative here; 1e-6 is safe.
    np.testing.assert_allclose(
        sol.getConditionNumber(pm.ConditionNumberType.EIGENVALUE), e[-1] / e[0], rtol=1e-6
    )
    np.testing.assert_allclose(
        sol.getConditionNumber(pm.ConditionNumberType.SVD), sv[0] / sv[-1], rtol=1e-6
    )
    # EIGENVALUE may be negative for an indefinite matrix (exact small integers here).
    indefinite = np.array([[2.0, 0.0], [0.0, -0.5]])
    assert _core.conditionNumber(indefinite, pm.ConditionNumberType.EIGENVALUE) == -4.0
    assert _core.conditionNumber(indefinite, pm.ConditionNumberType.SVD) == 4.0


def test_covariance_and_kernel_uncertainty(rng: np.random.Generator) -> None:
    shape = (21, 21)
    template = starField(rng, shape, 1.5, 4) + rng.normal(0.0, 2.0, shape)
    science = trueConvolve(template, gaussianKernel(3, 1.2)) + rng.normal(0.0, 1.0, shape)
    basis = smallAlBasis()
    config = alConfig(fitForBackground=True, constantVarianceWeighting=False)
    cand = candidate(template, science, config, varT=rng.uniform(0.5, 1.0, shape), varS=1.0)
    cand.build(basis)
    sol = cand.getKernelSolution(ORIG)
    m = sol.getM()
    cov = np.linalg.inv(m)
    cond = np.linalg.cond(m)
    # An inverse is accurate to ~cond(M)·eps relative to its largest entries.
    np.testing.assert_allclose(
        sol.getCovariance(), cov, rtol=0, atol=10 * cond * 2.2e-16 * np.abs(cov).max()
    )
    nb = len(basis)
    bmat = np.stack([k.getImage().ravel() for k in basis], axis=1)  # npix × nb
    expected = np.sqrt(np.diag(bmat @ cov[:nb, :nb] @ bmat.T)).reshape(7, 7)
    # The same ~cond·eps relative error, passed through a square root (halves it).
    np.testing.assert_allclose(
        sol.getKernelUncertaintyImage(),
        expected,
        rtol=0,
        atol=10 * cond * 2.2e-16 * expected.max(),
    )
    assert np.all(expected > 0)


def test_covariance_is_the_scatter_of_repeated_fits(rng: np.random.Generator) -> None:
    """An independent truth for calculateKernelUncertainty: refit one noise-free template
    against many noise realisations of the science stamp (white noise σ = 1, variance plane
    1, so the weights are exact inverse variances) and compare the empirical scatter of the
    coefficients and of the kernel pixels with getCovariance and getKernelUncertaintyImage."""
    shape = (21, 21)
    template = starField(rng, shape, 1.5, 4) + rng.normal(20.0, 3.0, shape)
    model = trueConvolve(template, gaussianKernel(3, 1.1, total=1.4)) + 2.0
    basis = smallAlBasis()
    config = alConfig(fitForBackground=True)
    n = 400
    coefficients, kernels = [], []
    for _ in range(n):
        cand = candidate(template, model + rng.normal(0.0, 1.0, shape), config, varT=0.0)
        cand.build(basis)
        coefficients.append(cand.getKernelSolution(ORIG).getSolution())
        kernels.append(cand.getKernelImage(ORIG))
    sol = cand.getKernelSolution(ORIG)  # M does not depend on the science noise
    predicted = np.sqrt(np.diag(sol.getCovariance()))
    empirical = np.std(coefficients, axis=0, ddof=1)
    # The sample standard deviation of 400 Gaussian draws scatters by 1/sqrt(2·399) = 3.5 %;
    # 15 % is > 4σ for each of the 10 entries, while a covariance off by a factor
    # (e.g. 2σ² or M⁻² instead of M⁻¹) misses by far more.
    np.testing.assert_allclose(empirical, predicted, rtol=0.15)
    pixelSigma = sol.getKernelUncertaintyImage()
    # The same argument per kernel pixel (49 of them).
    np.testing.assert_allclose(np.std(kernels, axis=0, ddof=1), pixelSigma, rtol=0.15)


def test_regularized_covariance(rng: np.random.Generator) -> None:
    template = rng.normal(10.0, 3.0, (17, 17))
    config = dfConfig(3)
    h = pm.makeRegularizationMatrix(config)
    science = trueConvolve(template, gaussianKernel(1, 0.8)) + rng.normal(0.0, 0.5, (17, 17))
    cand = candidate(template, science, config)
    cand.build(pm.makeDeltaFunctionBasisList(3, 3), h)
    sol = cand.getKernelSolution(ORIG)
    assert isinstance(sol, pm.RegularizedKernelSolution)
    m = sol.getM()
    inv = np.linalg.inv(m + 0.2 * h)
    expected = inv @ m @ inv
    # A well-conditioned 9×9 system (cond < 1e3): 1e-12 relative to the largest entry.
    np.testing.assert_allclose(
        sol.getCovariance(), expected, rtol=0, atol=1e-12 * np.abs(expected).max()
    )


# --------------------------------------------------------------------------------------------
# regularization and λ (§2.6)
# --------------------------------------------------------------------------------------------


def regularizedCase(
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, list[pm.FixedKernel]]:
    shape = (21, 21)
    template = starField(rng, shape, 1.5, 5) + rng.normal(0.0, 3.0, shape)
    science = trueConvolve(template, gaussianKernel(2, 1.0, total=1.3)) + rng.normal(
        0.0, 2.0, shape
    )
    return template, science, pm.makeDeltaFunctionBasisList(5, 5)


def numpyRisk(
    lam: float, m: np.ndarray, h: np.ndarray, b: np.ndarray, vvt: np.ndarray, mPinv: np.ndarray
) -> float:
    """risk(λ) = aᵀVVᵀa + 2[tr(VVᵀ(M+λH)⁻¹) − aᵀM⁺b] with a = (M+λH)⁻¹b (§2.6)."""
    inv = np.linalg.inv(m + lam * h)
    a = inv @ b
    return float(a @ vvt @ a + 2.0 * (np.trace(vvt @ inv) - a @ mPinv @ b))


def pseudoInverse(m: np.ndarray, maxCondition: float | None) -> np.ndarray:
    """Eigen pseudo-inverse; eigenvalues zero to rounding (|e| ≤ n·ε·max|e|) are dropped, and
    with a cut, eigenvalues with e_max/e > maxCondition too."""
    e, v = np.linalg.eigh(m)
    inv = np.zeros_like(e)
    rankTolerance = len(e) * np.finfo(float).eps * np.abs(e).max()
    for i, ei in enumerate(e):
        if abs(ei) <= rankTolerance or (
            maxCondition is not None and np.abs(e).max() / ei > maxCondition
        ):
            continue
        inv[i] = 1.0 / ei
    return v @ np.diag(inv) @ v.T


def test_lambda_absolute(rng: np.random.Generator) -> None:
    template, science, basis = regularizedCase(rng)
    config = dfConfig(5, lambdaType="absolute", lambdaValue=3.5)
    h = pm.makeRegularizationMatrix(config)
    cand = candidate(template, science, config)
    cand.build(basis, h)
    sol = cand.getKernelSolution(ORIG)
    assert cand.getUsedRegularization()
    assert sol.getLambda() == 3.5
    np.testing.assert_array_equal(sol.getH(), h)
    a = np.linalg.solve(sol.getM() + 3.5 * h, sol.getB())
    # A 25×25 solve with cond ~1e4, two LU implementations: 1e-10 relative.
    np.testing.assert_allclose(
        cand.getKernelImage(ORIG).ravel(), a, rtol=0, atol=1e-10 * np.abs(a).max()
    )
    # Regularization pulls the solution away from the unregularized one.
    free = np.linalg.solve(sol.getM(), sol.getB())
    assert np.abs(free - a).max() > 1e-3 * np.abs(a).max()


@pytest.mark.parametrize("regularizationType", ["centralDifference", "forwardDifference"])
def test_lambda_relative(rng: np.random.Generator, regularizationType: str) -> None:
    template, science, basis = regularizedCase(rng)
    config = dfConfig(
        5, lambdaType="relative", lambdaScaling=1e-3, regularizationType=regularizationType
    )
    h = pm.makeRegularizationMatrix(config)
    cand = candidate(template, science, config)
    cand.build(basis, h)
    sol = cand.getKernelSolution(ORIG)
    expected = 1e-3 * np.trace(sol.getM()) / np.trace(h)
    # Two traces of 25 terms: rounding ~1e-15 relative.
    np.testing.assert_allclose(sol.getLambda(), expected, rtol=1e-13)
    a = np.linalg.solve(sol.getM() + expected * h, sol.getB())
    # A 25×25 solve with cond ~1e4: 1e-10 relative.
    np.testing.assert_allclose(sol.getSolution(), a, rtol=0, atol=1e-10 * np.abs(a).max())


def test_lambda_relative_through_kernel_control(rng: np.random.Generator) -> None:
    """The same via a hand-made _core.KernelControl, with the background term of H."""
    template, science, basis = regularizedCase(rng)
    control = _core.KernelControl()
    control.lambdaType = _core.LambdaType.RELATIVE
    control.lambdaScaling = 2e-4
    control.fitForBackground = True
    h = np.asarray(
        _core.makeRegularizationMatrix(
            5, 5, _core.RegularizationType.CENTRAL_DIFFERENCE, 5, [], 1.0, True
        )
    )
    cand = candidate(template, science + 7.0, control)
    cand.build(basis, h)
    sol = cand.getKernelSolution(ORIG)
    assert sol.getM().shape == (26, 26)
    # Traces of 26 terms: rounding ~1e-15 relative.
    np.testing.assert_allclose(
        sol.getLambda(), 2e-4 * np.trace(sol.getM()) / np.trace(h), rtol=1e-13
    )
    assert np.isfinite(cand.getBackground(ORIG))


@pytest.mark.parametrize(
    ("lambdaType", "stepType", "lmin", "lmax", "step", "maxCondition"),
    [
        ("minimizeUnbiasedRisk", "log", -1.0, 2.0, 0.1, 5e6),
        ("minimizeBiasedRisk", "log", -1.0, 2.0, 0.1, 5e6),
        ("minimizeBiasedRisk", "log", -2.0, 3.0, 0.25, 20.0),  # the cut truncates M⁺
        ("minimizeUnbiasedRisk", "linear", 0.1, 20.0, 0.5, 5e6),
    ],
)
def test_lambda_risk_scan(
    rng: np.random.Generator,
    lambdaType: str,
    stepType: str,
    lmin: float,
    lmax: float,
    step: float,
    maxCondition: float,
) -> None:
    template, science, basis = regularizedCase(rng)
    config = dfConfig(
        5,
        lambdaType=lambdaType,
        lambdaStepType=stepType,
        lambdaMin=lmin,
        lambdaMax=lmax,
        lambdaStep=step,
        maxConditionNumber=maxCondition,
    )
    h = pm.makeRegularizationMatrix(config)
    cand = candidate(template, science, config)
    cand.build(basis, h)
    sol = cand.getKernelSolution(ORIG)
    assert cand.getStatus() != pm.KernelCandidate.BAD
    assert np.isfinite(cand.getKernelImage(ORIG)).all()

    # The scan visits lmin + k·step up to lmax inclusive and never steps past it.
    nSteps = int(math.floor((lmax - lmin) / step + 1e-9)) + 1
    exponents = lmin + step * np.arange(nSteps)
    grid = 10.0**exponents if stepType == "log" else exponents
    # Accumulated vs multiplied steps differ by a few ulps of the exponent.
    np.testing.assert_allclose(sol.lambdaGrid(), grid, rtol=1e-12)
    lam = sol.getLambda()
    assert np.min(np.abs(grid - lam) / grid) < 1e-12  # λ is one of the grid values

    # Recompute the risk on the grid: VVᵀ from the thin SVD of the weighted design matrix,
    # M⁺ truncated for the biased variant only.
    m, b = sol.getM(), sol.getB()
    w = 1.0 / cand.getVarianceEstimate()[0, 0]  # constant weighting
    _, _, vt = np.linalg.svd(np.sqrt(w) * designMatrix(template, basis, False), full_matrices=False)
    vvt = vt.T @ vt
    cut = maxCondition if lambdaType == "minimizeBiasedRisk" else None
    mPinv = pseudoInverse(m, cut)
    risks = np.array([numpyRisk(x, m, h, b, vvt, mPinv) for x in grid])
    chosen = numpyRisk(lam, m, h, b, vvt, mPinv)
    # The library's λ minimises the risk up to the rounding of the risk itself (~1e-9 of its
    # spread across the scan).
    assert chosen <= risks.min() + 1e-9 * (risks.max() - risks.min())
    a = np.linalg.solve(m + lam * h, b)
    # A 25×25 solve with cond ≤ 1e5: 1e-9 relative.
    np.testing.assert_allclose(sol.getSolution(), a, rtol=0, atol=1e-9 * np.abs(a).max())


def test_lambda_risk_truncation_matters(rng: np.random.Generator) -> None:
    """With a tight cut the biased risk differs from the unbiased one (the cut is applied)."""
    template, science, basis = regularizedCase(rng)
    lambdas = {}
    for lambdaType in ("minimizeBiasedRisk", "minimizeUnbiasedRisk"):
        config = dfConfig(
            5,
            lambdaType=lambdaType,
            lambdaMin=-3.0,
            lambdaMax=3.0,
            lambdaStep=0.05,
            maxConditionNumber=3.0,
        )
        cand = candidate(template, science, config)
        cand.build(basis, pm.makeRegularizationMatrix(config))
        lambdas[lambdaType] = cand.getKernelSolution(ORIG).getLambda()
    assert lambdas["minimizeBiasedRisk"] != lambdas["minimizeUnbiasedRisk"]


def test_regularization_matrix_shape_mismatch(rng: np.random.Generator) -> None:
    template, science, basis = regularizedCase(rng)
    config = dfConfig(5)
    cand = candidate(template, science, config)
    with pytest.raises(pm.InvalidInputError, match="H is 9x9 but the solution has 25 parameters"):
        cand.build(basis, np.eye(9))


# --------------------------------------------------------------------------------------------
# variance estimate and weights (§3.1)
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("where", [(0, 0), (10, 10)])  # the border counts too
def test_zero_variance_raises_without_constant_weighting(
    rng: np.random.Generator, where: tuple[int, int]
) -> None:
    template = rng.normal(10.0, 1.0, (21, 21))
    varS = np.ones((21, 21))
    varT = np.ones((21, 21))
    varS[where] = 0.0
    varT[where] = 0.0
    config = dfConfig(5, constantVarianceWeighting=False)
    cand = candidate(template, template, config, varT=varT, varS=varS)
    with pytest.raises(pm.InvalidInputError, match="variance of 0 in the stamp"):
        cand.build(pm.makeDeltaFunctionBasisList(5, 5))
    assert not cand.isInitialized()
    # With constant weighting the median (1) replaces every pixel: no error.
    ok = candidate(template, template, dfConfig(5), varT=varT, varS=varS)
    ok.build(pm.makeDeltaFunctionBasisList(5, 5))
    assert np.all(ok.getVarianceEstimate() == 2.0)  # median of Var_S + Var_T


def test_negative_variance_raises(rng: np.random.Generator) -> None:
    template = rng.normal(10.0, 1.0, (21, 21))
    varS = np.ones((21, 21))
    varS[3, 17] = -2.5
    config = dfConfig(5, constantVarianceWeighting=False)
    cand = candidate(template, template, config, varS=varS, varT=1.0)
    with pytest.raises(pm.InvalidInputError, match="variance less than 0"):
        cand.build(pm.makeDeltaFunctionBasisList(5, 5))


def test_constant_weighting_uses_median_or_one(rng: np.random.Generator) -> None:
    template = rng.normal(10.0, 1.0, (15, 15))
    varS = rng.uniform(1.0, 5.0, (15, 15))
    cand = candidate(template, template, dfConfig(3), varS=varS, varT=0.5)
    assert cand.getVarianceEstimate().size == 0  # nothing before a build
    cand.build(pm.makeDeltaFunctionBasisList(3, 3))
    # Kept as a constant (not a stamp-sized image), returned as the stamp's image of it.
    assert cand.getVarianceEstimate().shape == (15, 15)
    assert np.all(cand.getVarianceEstimate() == np.median(varS + 0.5))
    zero = candidate(template, template, dfConfig(3), varS=0.0, varT=0.0)
    zero.build(pm.makeDeltaFunctionBasisList(3, 3))
    assert zero.getVarianceEstimate().shape == (15, 15)
    assert np.all(zero.getVarianceEstimate() == 1.0)  # median ≤ 0 → 1


def test_iterate_single_kernel(rng: np.random.Generator) -> None:
    shape = (23, 23)
    template = starField(rng, shape, 1.5, 5) + rng.normal(0.0, 1.0, shape)
    science = trueConvolve(template, gaussianKernel(3, 1.3, total=2.0)) + rng.normal(
        0.0, 1.0, shape
    )
    varT, varS = rng.uniform(0.5, 4.0, shape), rng.uniform(0.5, 1.5, shape)
    basis = smallAlBasis()
    once = candidate(
        template, science, alConfig(constantVarianceWeighting=False), varT=varT, varS=varS
    )
    once.build(basis)
    np.testing.assert_array_equal(once.getVarianceEstimate(), varS + varT)

    config = alConfig(constantVarianceWeighting=False, iterateSingleKernel=True)
    twice = candidate(template, science, config, varT=varT, varS=varS)
    twice.build(basis)
    k1 = once.getKernelImage(ORIG)  # the first pass of the iterated fit is this same fit
    expected = scipy.signal.convolve(varT, k1**2, mode="valid") + goodBoxValues(varS, (7, 7))
    estimate = twice.getVarianceEstimate()
    # K² ⊗ Var_T by separable passes vs scipy: ~1e-15 relative on values ~1.
    np.testing.assert_allclose(goodBoxValues(estimate, (7, 7)), expected, rtol=1e-12)
    assert np.abs(goodBoxValues(estimate - (varS + varT), (7, 7))).max() > 0.1  # it changed

    # The refit is the weighted least squares with that variance.
    c = designMatrix(template, basis, False)
    w = 1.0 / expected.ravel()
    s = goodBoxValues(science, (7, 7)).ravel()
    a = np.linalg.solve(c.T @ (w[:, None] * c), c.T @ (w * s))
    # 9×9 system, cond ~1e6: 1e-8 relative.
    np.testing.assert_allclose(
        twice.getKernelSolution(ORIG).getSolution(), a, rtol=0, atol=1e-8 * np.abs(a).max()
    )

    # With constant weighting the iteration is off: same answer as a single pass.
    constant = candidate(
        template, science, alConfig(iterateSingleKernel=True), varT=varT, varS=varS
    )
    constant.build(basis)
    single = candidate(template, science, alConfig(), varT=varT, varS=varS)
    single.build(basis)
    np.testing.assert_array_equal(constant.getKernelImage(ORIG), single.getKernelImage(ORIG))


# --------------------------------------------------------------------------------------------
# slots, status and accessors (§1.1, §3.3)
# --------------------------------------------------------------------------------------------


def test_accessors_before_build(rng: np.random.Generator) -> None:
    template = rng.normal(10.0, 1.0, (15, 15))
    cand = candidate(template, template, dfConfig(3))
    assert not cand.isInitialized()
    assert cand.getStatus() == pm.KernelCandidate.UNKNOWN
    assert math.isnan(cand.getChi2())  # no χ² until a visitor measures one
    for call in (
        lambda: cand.getKsum(ORIG),
        lambda: cand.getKernel(ORIG),
        lambda: cand.getBackground(ORIG),
        lambda: cand.getKernelImage(ORIG),
        lambda: cand.getImage(),
        lambda: cand.getDifferenceImage(ORIG),
        lambda: cand.getKernelSolution(ORIG),
    ):
        with pytest.raises(pm.PsfMatchError, match="no ORIG kernel solution"):
            call()
    with pytest.raises(pm.PsfMatchError, match="no PCA kernel solution"):
        cand.getKsum(PCA)
    with pytest.raises(pm.PsfMatchError, match=r"no kernel solution \(not built\)"):
        cand.getKsum(RECENT)


def test_second_build_fills_pca(rng: np.random.Generator) -> None:
    template = rng.normal(10.0, 2.0, (19, 19))
    science = trueConvolve(template, gaussianKernel(2, 0.9, total=1.4))
    cand = candidate(template, science, dfConfig(5))
    cand.build(pm.makeDeltaFunctionBasisList(5, 5))
    assert cand.isInitialized()
    assert cand.getStatus() == pm.KernelCandidate.UNKNOWN  # build never sets GOOD
    origId = cand.getKernelSolution(ORIG).getId()
    origImage = cand.getKernelImage(ORIG).copy()
    assert cand.getKernelSolution(RECENT).getId() == origId
    with pytest.raises(pm.PsfMatchError, match="no PCA kernel solution"):
        cand.getKernelSolution(PCA)

    alBasis = pm.makeAlardLuptonBasisList(2, 1, [1.0], [2])
    cand.build(alBasis)
    pcaId = cand.getKernelSolution(PCA).getId()
    assert pcaId > origId
    assert cand.getKernelSolution(ORIG).getId() == origId
    assert cand.getKernelSolution(RECENT).getId() == pcaId
    np.testing.assert_array_equal(cand.getKernelImage(ORIG), origImage)
    np.testing.assert_array_equal(cand.getImage(), origImage)  # getImage() is ORIG
    assert len(cand.getKernelSolution(PCA).getSolution()) == len(alBasis)
    assert cand.getKsum(PCA) != cand.getKsum(ORIG)
    assert cand.getKsum(RECENT) == cand.getKsum(PCA)

    cand.build(pm.makeDeltaFunctionBasisList(5, 5))  # a third build replaces PCA only
    assert cand.getKernelSolution(ORIG).getId() == origId
    assert cand.getKernelSolution(PCA).getId() > pcaId


def test_condition_number_check(rng: np.random.Generator) -> None:
    template = rng.normal(10.0, 2.0, (19, 19))
    science = trueConvolve(template, gaussianKernel(2, 0.9))
    basis = pm.makeDeltaFunctionBasisList(5, 5)
    config = dfConfig(5, checkConditionNumber=True, maxConditionNumber=1.0)
    cand = candidate(template, science, config)
    cand.build(basis)
    assert cand.getStatus() == pm.KernelCandidate.BAD
    assert cand.isInitialized()
    sol = cand.getKernelSolution(ORIG)
    assert sol.getSolvedBy() == pm.SolvedBy.NONE
    assert sol.getConditionNumber() > 1.0
    for call in (
        lambda: cand.getKsum(ORIG),
        lambda: cand.getKernel(ORIG),
        lambda: cand.getBackground(RECENT),
        lambda: cand.getDifferenceImage(ORIG),
        sol.getSolution,
    ):
        with pytest.raises(pm.PsfMatchError, match="has not been solved"):
            call()

    for kind in ("EIGENVALUE", "SVD"):
        loose = candidate(
            template,
            science,
            dfConfig(
                5, checkConditionNumber=True, maxConditionNumber=1e12, conditionNumberType=kind
            ),
        )
        loose.build(basis)
        assert loose.getStatus() == pm.KernelCandidate.UNKNOWN
        assert np.isfinite(loose.getKsum(ORIG))


def test_rating_is_core_mean_of_snr(rng: np.random.Generator) -> None:
    shape = (21, 24)
    science = rng.normal(50.0, 10.0, shape)
    varS = rng.uniform(1.0, 9.0, shape)
    maskS = np.zeros(shape, dtype=np.int32)
    maskS[9, 11] = SAT  # a bad pixel in the core is skipped
    maskS[10, 12] = CR  # not a bad plane: kept
    template = rng.normal(50.0, 10.0, shape)
    r = 2
    config = dfConfig(3, candidateCoreRadius=r)
    cand = candidate(template, science, config, varS=varS, maskS=maskS)
    yc, xc = shape[0] // 2, shape[1] // 2
    core = (slice(yc - r, yc + r + 1), slice(xc - r, xc + r + 1))
    snr = science[core] / np.sqrt(varS[core])
    keep = (maskS[core] & SAT) == 0
    assert keep.size == (2 * r + 1) ** 2 and keep.sum() == keep.size - 1
    # A mean of 24 terms in another order: 1e-14 relative.
    np.testing.assert_allclose(cand.getCandidateRating(), snr[keep].mean(), rtol=1e-13)
    assert cand.getStatus() == pm.KernelCandidate.UNKNOWN

    given = candidate(template, science, config, varS=varS, rating=123.5)
    assert given.getCandidateRating() == 123.5

    bad = candidate(template, science, config, varS=0.0)  # ivar infinite everywhere
    assert math.isnan(bad.getCandidateRating())
    assert bad.getStatus() == pm.KernelCandidate.BAD


def test_difference_image(rng: np.random.Generator) -> None:
    shape = (25, 23)
    template = starField(rng, shape, 1.5, 4) + rng.normal(0.0, 1.0, shape)
    science = trueConvolve(template, gaussianKernel(3, 1.0)) + 2.0 + rng.normal(0.0, 1.0, shape)
    varT, varS = rng.uniform(0.5, 1.5, shape), rng.uniform(1.0, 2.0, shape)
    maskT = np.zeros(shape, dtype=np.int32)
    maskS = np.zeros(shape, dtype=np.int32)
    maskT[12, 11] = CR
    maskT[3, 4] = SAT
    maskS[5, 15] = 1 << 2
    config = alConfig(fitForBackground=True)
    cand = candidate(template, science, config, varT=varT, varS=varS, maskT=maskT, maskS=maskS)
    basis = smallAlBasis()
    cand.build(basis)
    k = cand.getKernelImage(ORIG)
    bg = cand.getBackground(ORIG)
    diff = cand.getDifferenceImage(ORIG)
    assert diff.getXY0() == (0, 0)

    good = (slice(3, 25 - 3), slice(3, 23 - 3))
    expected = science[good] - scipy.signal.convolve(template, k, mode="valid") - bg
    # Sums of 49 products of values ≤ ~300 in another order: 1e-11 absolute.
    np.testing.assert_allclose(diff.image[good], expected, rtol=0, atol=1e-11)
    expectedVar = scipy.signal.convolve(varT, k**2, mode="valid") + varS[good]
    np.testing.assert_allclose(diff.variance[good], expectedVar, rtol=1e-12)  # same argument
    dilated = np.zeros_like(maskT[good])
    for j in range(7):
        for i in range(7):
            if k[j, i] != 0.0:
                dilated |= maskT[6 - j : 6 - j + 19, 6 - i : 6 - i + 17]
    np.testing.assert_array_equal(diff.mask[good], dilated | maskS[good])
    assert (diff.mask[good] & CR).sum() // CR == 49  # the CR pixel dilated by the 7×7 kernel

    border = np.ones(shape, dtype=bool)
    border[good] = False
    assert np.isnan(diff.image[border]).all()
    assert np.isposinf(diff.variance[border]).all()
    np.testing.assert_array_equal(diff.mask[border], maskT[border] | maskS[border] | NO_DATA)

    # The same through the (kernel, background) overload, and with any other kernel.
    again = cand.getDifferenceImage(cand.getKernel(ORIG), bg)
    np.testing.assert_array_equal(again.image, diff.image)
    other = pm.FixedKernel(gaussianKernel(2, 0.7))
    arbitrary = cand.getDifferenceImage(other, -1.5)
    g5 = (slice(2, 23), slice(2, 21))
    expected = science[g5] - scipy.signal.convolve(template, other.getImage(), mode="valid") + 1.5
    # As above: 25 products of values ≤ ~300.
    np.testing.assert_allclose(arbitrary.image[g5], expected, rtol=0, atol=1e-11)


@pytest.mark.parametrize("goodWidth", [1, 3, 4, 5, 12, 16, 17, 23, 24, 25, 29, 50])
@pytest.mark.parametrize("masked", [False, True])
def test_difference_image_bit_exact_against_ordered_sums(
    rng: np.random.Generator, goodWidth: int, masked: bool
) -> None:
    """getDifferenceImage sums each pixel's products over the kernel's non-zero pixels in
    row-major order, each product rounded then added: numpy doing the same in the same order
    gives the same bits, whatever the good box's width (groups of up to 24 columns, an
    overlapping last block of 4, or single columns) and whatever SIMD the CPU has. Zero kernel
    pixels are skipped, also in the variance where a tiny pixel's square underflows to 0."""
    kh, kw = 7, 5
    shape = (kh - 1 + 9, kw - 1 + goodWidth)
    template = rng.normal(100.0, 30.0, shape)
    science = rng.normal(100.0, 30.0, shape)
    varT = rng.uniform(1.0, 50.0, shape)
    varS = rng.uniform(1.0, 50.0, shape)
    kimg = rng.normal(0.0, 1.0, (kh, kw))
    kimg[1, 2] = kimg[4, 0] = 0.0  # skipped in both planes
    kimg[2, 3] = 1e-170  # skipped in the variance only: its square is 0
    maskT = maskS = None
    if masked:
        maskT = np.zeros(shape, dtype=np.int32)
        maskS = np.zeros(shape, dtype=np.int32)
        maskT[rng.integers(0, shape[0]), rng.integers(0, shape[1])] = CR
        maskS[rng.integers(0, shape[0]), rng.integers(0, shape[1])] = SAT
    cand = candidate(template, science, alConfig(), varT=varT, varS=varS, maskT=maskT, maskS=maskS)
    bg = 3.25
    diff = cand.getDifferenceImage(pm.FixedKernel(kimg), bg)

    cy, cx = kh // 2, kw // 2
    gny, gnx = shape[0] - kh + 1, shape[1] - kw + 1
    conv = np.zeros((gny, gnx))
    convVar = np.zeros((gny, gnx))
    dilated = np.zeros((gny, gnx), dtype=np.int32)
    mT = np.zeros(shape, dtype=np.int32) if maskT is None else maskT
    for j in range(kh):
        for i in range(kw):
            window = (slice(2 * cy - j, 2 * cy - j + gny), slice(2 * cx - i, 2 * cx - i + gnx))
            w = kimg[j, i]
            if w != 0.0:
                conv = conv + w * template[window]
                dilated |= mT[window]
            if w * w != 0.0:
                convVar = convVar + (w * w) * varT[window]
    good = (slice(cy, cy + gny), slice(cx, cx + gnx))
    np.testing.assert_array_equal(diff.image[good], (science[good] - conv) - bg)
    np.testing.assert_array_equal(diff.variance[good], convVar + varS[good])
    mS = np.zeros(shape, dtype=np.int32) if maskS is None else maskS
    np.testing.assert_array_equal(diff.mask[good], dilated | mS[good])
    border = np.ones(shape, dtype=bool)
    border[good] = False
    assert np.isnan(diff.image[border]).all()
    assert np.isposinf(diff.variance[border]).all()
    np.testing.assert_array_equal(diff.mask[border], mT[border] | mS[border] | NO_DATA)


def test_difference_image_kernel_larger_than_stamp_raises() -> None:
    template = np.ones((9, 9))
    cand = candidate(template, template, alConfig())
    with pytest.raises(pm.InvalidInputError, match="stamp of 9x9 pixels is smaller than the 11x11"):
        cand.getDifferenceImage(pm.FixedKernel(np.ones((11, 11))), 0.0)


def _orderedPass(
    image: np.ndarray, factor: np.ndarray, axis: int, start: int, n: int
) -> np.ndarray:
    """A 1-D true convolution along `axis` for outputs start … start+n−1, summed over the
    factor's non-zero entries in index order, each product rounded then added (from +0)."""
    c = (factor.size - 1) // 2
    out = np.zeros(image.shape[:axis] + (n,) + image.shape[axis + 1 :])
    for i, w in enumerate(factor):
        if w != 0.0:
            lo = start + c - i
            window = [slice(None)] * image.ndim
            window[axis] = slice(lo, lo + n)
            out = out + w * image[tuple(window)]
    return out


@pytest.mark.parametrize(
    ("basisName", "shape"),
    [("al", (43, 43)), ("al", (30, 24)), ("small", (9, 8)), ("df", (12, 14)), ("pca", (23, 27))],
)
def test_convolve_basis_on_stamp_bit_exact(
    rng: np.random.Generator, basisName: str, shape: tuple[int, int]
) -> None:
    """The design matrix of the per-candidate fit: bit for bit the sums of its contract (a
    separable kernel's terms each an ordered x pass then an ordered y pass, added coef-weighted
    in term order; any other kernel by ordered direct sums), computed here in numpy; equal to
    convolveBasisOnGoodBox; and equal to scipy's convolution to rounding."""
    if basisName == "al":
        basis = pm.makeAlardLuptonBasisList(10, 3, [0.7, 1.5, 3.0], [4, 2, 2])
    elif basisName == "small":
        basis = smallAlBasis()
    elif basisName == "df":
        basis = pm.makeDeltaFunctionBasisList(5, 3)
    else:  # kernels without a decomposition, with zero pixels
        images = [rng.normal(0.0, 1.0, (9, 7)) for _ in range(4)]
        images[1][2, 3] = 0.0
        basis = [pm.FixedKernel(im) for im in images]
    image = rng.normal(100.0, 30.0, shape)
    got = np.asarray(_core.convolveBasisOnStamp(image, basis))
    kh, kw = basis[0].getHeight(), basis[0].getWidth()
    cy, cx = kh // 2, kw // 2
    gny, gnx = shape[0] - kh + 1, shape[1] - kw + 1
    assert got.shape == (gny * gnx, len(basis))
    for k, kernel in enumerate(basis):
        column = np.zeros((gny, gnx))
        if kernel.isSeparable():
            for term in kernel.getTerms():
                xPassed = _orderedPass(image, np.asarray(term.kx), 1, cx, gnx)
                pair = _orderedPass(xPassed, np.asarray(term.ky), 0, cy, gny)
                column = column + term.coef * pair
        else:
            kimg = np.asarray(kernel.getImage())
            for j in range(kh):
                for i in range(kw):
                    if kimg[j, i] != 0.0:
                        column = (
                            column
                            + kimg[j, i]
                            * image[2 * cy - j : 2 * cy - j + gny, 2 * cx - i : 2 * cx - i + gnx]
                        )
        np.testing.assert_array_equal(got[:, k], column.ravel())
        expected = scipy.signal.convolve(image, np.asarray(kernel.getImage()), mode="valid")
        # Sums of ≤ 441 products of values ~100 (≤ 1e4 in all) in other orders: 1e-9 absolute.
        np.testing.assert_allclose(got[:, k], expected.ravel(), rtol=0, atol=1e-9)
    np.testing.assert_array_equal(got, np.asarray(_core.convolveBasisOnGoodBox(image, basis)))


def test_convolve_stamp_plane_and_errors(rng: np.random.Generator) -> None:
    """convolveStampPlane: the good box of the true convolution (NaN outside, from the binding),
    to rounding of scipy's; bad shapes are named errors."""
    image = rng.normal(100.0, 30.0, (20, 17))
    kimg = rng.normal(0.0, 1.0, (5, 7))
    got = np.asarray(_core.convolveStampPlane(image, kimg))
    good = (slice(2, 18), slice(3, 14))
    # 35 products of values ~100 in another order: 1e-10 absolute.
    np.testing.assert_allclose(
        got[good], scipy.signal.convolve(image, kimg, mode="valid"), rtol=0, atol=1e-10
    )
    border = np.ones(image.shape, dtype=bool)
    border[good] = False
    assert np.isnan(got[border]).all()
    with pytest.raises(pm.InvalidInputError, match="kernel dimensions must be odd"):
        _core.convolveStampPlane(image, np.ones((4, 5)))
    with pytest.raises(
        pm.InvalidInputError, match="stamp of 17x20 pixels is smaller than the 19x3"
    ):
        _core.convolveStampPlane(image, np.ones((3, 19)))
    with pytest.raises(pm.InvalidInputError, match="stamp of 8x9 pixels is smaller than the 11x11"):
        _core.convolveBasisOnStamp(np.ones((9, 8)), pm.makeDeltaFunctionBasisList(11, 11))
    with pytest.raises(pm.InvalidInputError, match="the kernel basis list is empty"):
        _core.convolveBasisOnStamp(image, [])


def test_inputs_never_modified(rng: np.random.Generator) -> None:
    shape = (19, 19)
    arrays = {
        "template": rng.normal(10.0, 2.0, shape),
        "science": rng.normal(10.0, 2.0, shape),
        "varT": rng.uniform(1.0, 2.0, shape),
        "varS": rng.uniform(1.0, 2.0, shape),
        "maskT": (rng.uniform(size=shape) < 0.1).astype(np.int32) * CR,
        "maskS": (rng.uniform(size=shape) < 0.1).astype(np.int32) * SAT,
    }
    copies = {k: v.copy() for k, v in arrays.items()}
    config = alConfig(
        fitForBackground=True, constantVarianceWeighting=False, iterateSingleKernel=True
    )
    t = pm.MaskedImage(arrays["template"], arrays["maskT"], arrays["varT"])
    s = pm.MaskedImage(arrays["science"], arrays["maskS"], arrays["varS"])
    cand = pm.KernelCandidate(9.0, 9.0, t, s, config)
    cand.build(smallAlBasis())
    cand.build(pm.makeDeltaFunctionBasisList(7, 7))
    cand.getDifferenceImage(RECENT)
    for name, value in arrays.items():
        np.testing.assert_array_equal(value, copies[name], err_msg=name)
        assert value.flags.writeable
    for mi, names in ((t, ("template", "maskT", "varT")), (s, ("science", "maskS", "varS"))):
        for plane, name in zip((mi.image, mi.mask, mi.variance), names, strict=True):
            np.testing.assert_array_equal(plane, copies[name], err_msg=name)
    # The candidate's stamps are copies of the inputs, equal in value.
    np.testing.assert_array_equal(cand.getTemplateMaskedImage().image, copies["template"])
    np.testing.assert_array_equal(cand.getScienceMaskedImage().mask, copies["maskS"])


def test_constructor_errors(rng: np.random.Generator) -> None:
    good = rng.normal(10.0, 1.0, (15, 15))
    config = dfConfig(3)
    withNan = good.copy()
    withNan[4, 6] = np.nan
    with pytest.raises(
        pm.InvalidInputError,
        match=r"templateMaskedImage: 1 pixel\(s\) are NaN or infinite, the first at "
        r"\(x, y\) = \(6, 4\)",
    ):
        candidate(withNan, good, config)
    withInf = good.copy()
    withInf[0, 0] = np.inf
    with pytest.raises(pm.InvalidInputError, match=r"scienceMaskedImage: 1 pixel\(s\)"):
        candidate(good, withInf, config)
    # The per-candidate fit uses every pixel (§3.2), so masking a NaN does not make it usable,
    # and the message must not suggest that it would.
    masked = np.zeros((15, 15), dtype=np.int32)
    masked[4, 6] = SAT | NO_DATA
    with pytest.raises(pm.InvalidInputError, match="must be finite, masked or not") as info:
        candidate(withNan, good, config, maskT=masked)
    assert "unmasked" not in str(info.value) and "mask them" not in str(info.value)
    varNan = np.ones((15, 15))
    varNan[2, 2] = np.nan
    with pytest.raises(pm.InvalidInputError, match="NaN or infinite"):
        candidate(good, good, config, varS=varNan)
    t = pm.MaskedImage(good, variance=np.ones((15, 15)))
    narrow = pm.MaskedImage(good[:, :13], variance=np.ones((15, 13)))
    with pytest.raises(pm.InvalidInputError, match=r"stamps differ in shape: template \(15, 15\)"):
        pm.KernelCandidate(7.0, 7.0, t, narrow, config)
    s = pm.MaskedImage(good, variance=np.ones((15, 15)), xy0=(3, 0))
    with pytest.raises(pm.InvalidInputError, match="stamps differ in origin"):
        pm.KernelCandidate(7.0, 7.0, t, s, config)
    with pytest.raises(pm.InvalidInputError, match="candidate position must be finite"):
        pm.KernelCandidate(np.nan, 7.0, t, t, config)
    with pytest.raises(pm.InvalidInputError, match="expected a MaskedImage, got ndarray"):
        pm.KernelCandidate(7.0, 7.0, good, t, config)
    with pytest.raises(pm.InvalidInputError, match="expected a PsfMatchConfig or KernelControl"):
        pm.KernelCandidate(7.0, 7.0, t, t, {"kernelSize": 3})


def test_build_errors(rng: np.random.Generator) -> None:
    template = rng.normal(10.0, 1.0, (9, 9))
    cand = candidate(template, template, dfConfig(3))
    with pytest.raises(pm.InvalidInputError, match="smaller than the 11x11 kernel"):
        cand.build(pm.makeDeltaFunctionBasisList(11, 11))
    with pytest.raises(pm.InvalidInputError, match="the kernel basis list is empty"):
        cand.build([])
    mixed = [pm.FixedKernel(np.ones((3, 3))), pm.FixedKernel(np.ones((5, 5)))]
    with pytest.raises(pm.InvalidInputError, match="basis kernels differ in size"):
        cand.build(mixed)
    assert not cand.isInitialized()


# --------------------------------------------------------------------------------------------
# ImageStatistics (§3.6)
# --------------------------------------------------------------------------------------------


def numpyStats(mi: pm.MaskedImage, badBits: int, core: int = 0) -> tuple[float, float, int]:
    image, mask, var = mi.image, mi.mask, mi.variance
    if core > 0:
        h, w = image.shape
        rows = slice(max(0, h // 2 - core), min(h, h // 2 + core + 1))
        cols = slice(max(0, w // 2 - core), min(w, w // 2 + core + 1))
        image, mask, var = image[rows, cols], mask[rows, cols], var[rows, cols]
    with np.errstate(divide="ignore"):
        ivar = 1.0 / var
    use = ((mask & badBits) == 0) & np.isfinite(ivar)
    z = image[use] * np.sqrt(ivar[use])
    n = int(use.sum())
    return float(z.mean()), float(z.var(ddof=1)), n


@pytest.mark.parametrize(("shape", "core"), [((20, 17), 0), ((20, 17), 3), ((9, 8), 6)])
def test_image_statistics(rng: np.random.Generator, shape: tuple[int, int], core: int) -> None:
    image = rng.normal(0.3, 2.0, shape)
    var = rng.uniform(1.0, 4.0, shape)
    mask = np.zeros(shape, dtype=np.int32)
    h, w = shape
    mask[h // 2, w // 2] = SAT  # a bad plane in the core
    mask[h // 2 + 1, w // 2] = CR  # not a bad plane
    mask[h // 2, w // 2 - 1] = NO_DATA
    image[h // 2, w // 2 - 1] = np.nan  # masked NaN never reaches the sums
    var[h // 2 - 1, w // 2 - 1] = 0.0  # infinite ivar: skipped
    var[h // 2 - 1, w // 2] = np.inf  # ivar 0 is finite: counted, contributes 0
    mi = pm.MaskedImage(image, mask, var)
    config = alConfig()  # badMaskPlanes = NO_DATA, EDGE, SAT
    stats = pm.ImageStatistics(config)
    stats.apply(mi, core)
    mean, variance, n = numpyStats(mi, NO_DATA | EDGE | SAT, core)
    assert stats.getNpix() == n
    if core == 3:
        assert n == 7 * 7 - 3
    # Sums of ≤ 340 terms of order 1 in another order: 1e-13 relative.
    np.testing.assert_allclose(stats.getMean(), mean, rtol=1e-12)
    # The one-pass formula (Σx²/n − mean²)·n/(n−1) cancels ~1 digit here: 1e-11 relative.
    np.testing.assert_allclose(stats.getVariance(), variance, rtol=1e-11)
    np.testing.assert_allclose(stats.getRms(), math.sqrt(variance), rtol=1e-11)


def test_image_statistics_edge_cases(rng: np.random.Generator) -> None:
    shape = (6, 6)
    config = alConfig()
    stats = pm.ImageStatistics(config)
    allBad = pm.MaskedImage(np.ones(shape), np.full(shape, SAT, dtype=np.int32), np.ones(shape))
    stats.apply(allBad)
    assert stats.getNpix() == 0
    assert math.isnan(stats.getMean()) and math.isnan(stats.getVariance())
    assert not stats.evaluateQuality()

    one = np.full(shape, SAT, dtype=np.int32)
    one[2, 3] = 0
    stats.apply(pm.MaskedImage(np.full(shape, 2.0), one, np.full(shape, 4.0)))
    assert stats.getNpix() == 1
    assert stats.getMean() == 1.0  # 2/sqrt(4)
    assert math.isnan(stats.getVariance())

    withNan = np.ones(shape)
    withNan[1, 1] = np.nan
    with pytest.raises(pm.PsfMatchError, match="NaN or infinite value in the residual sums"):
        stats.apply(pm.MaskedImage(withNan, None, np.ones(shape)))

    # evaluateQuality: |mean| ≤ 0.25 and rms ≤ 1.5 by default.
    z = rng.normal(0.0, 1.0, (30, 30))
    z = (z - z.mean()) / z.std(ddof=1)  # mean 0, rms 1 exactly enough
    stats.apply(pm.MaskedImage(z, None, np.ones((30, 30))))
    assert stats.evaluateQuality()
    stats.apply(pm.MaskedImage(z + 0.3, None, np.ones((30, 30))))
    assert not stats.evaluateQuality()
    stats.apply(pm.MaskedImage(2.0 * z, None, np.ones((30, 30))))
    assert not stats.evaluateQuality()
    strict = alConfig(candidateResidualStdMax=0.5)
    stats.apply(pm.MaskedImage(z, None, np.ones((30, 30))))
    assert not stats.evaluateQuality(strict)


def test_rank_deficient_system_gets_minimum_norm_solution(rng: np.random.Generator) -> None:
    # M = AᵀA of rank 3 in 6 unknowns: LU reports it singular; the eigen fallback must drop the
    # eigenvalues that are zero only to rounding and return numpy's minimum-norm lstsq answer.
    a = rng.normal(size=(3, 6))
    m = a.T @ a
    b = a.T @ rng.normal(size=3)
    solution, how = pm._core.solveNormalEquations(m, b)
    expected = np.linalg.pinv(m, rcond=1e-12) @ b
    # cond of the non-zero part is ~10: the two answers agree to rounding of M's entries.
    np.testing.assert_allclose(solution, expected, rtol=1e-9, atol=1e-12)
    assert how == pm.SolvedBy.EIGENVECTOR


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_candidate_cut_from_planes_is_the_checked_candidate(
    rng: np.random.Generator, dtype: type
) -> None:
    """`KernelCandidate._fromPlanes` (what ImagePsfMatchTask builds its cell set with) holds
    the very stamps, origin and rating of the checked constructor given ``subimage`` copies,
    and so fits the same kernel, bit for bit."""
    shape, xy0 = (60, 70), (-7, 12)
    template = pm.MaskedImage(
        rng.normal(100.0, 10.0, shape).astype(dtype),
        rng.integers(0, 4, shape, dtype=np.int32),
        rng.uniform(1.0, 2.0, shape).astype(dtype),
        xy0=xy0,
    )
    science = pm.MaskedImage(
        rng.normal(100.0, 10.0, shape).astype(dtype),
        rng.integers(0, 4, shape, dtype=np.int32),
        rng.uniform(1.0, 2.0, shape).astype(dtype),
        xy0=xy0,
    )
    box = pm.Box2I((xy0[0] + 30, xy0[1] + 9), (15, 15))  # touches no edge, not centred
    control = pm.makeKernelControl(dfConfig(3))
    planes = pm.KernelCandidate._stampPlanes(template, science)
    fast = pm.KernelCandidate._fromPlanes(30.2, 22.9, planes, box, control, 7.5)
    checked = pm.KernelCandidate(
        30.2, 22.9, template.subimage(box), science.subimage(box), control, rating=7.5
    )
    assert isinstance(fast, pm.KernelCandidate)
    assert fast.getStampBBox() == checked.getStampBBox() == box
    for get in ("getTemplateMaskedImage", "getScienceMaskedImage"):
        a, b = getattr(fast, get)(), getattr(checked, get)()
        assert a.getXY0() == b.getXY0() == (box.getMinX(), box.getMinY())
        for plane in ("image", "mask", "variance"):
            np.testing.assert_array_equal(getattr(a, plane), getattr(b, plane))
    assert fast.getCandidateRating() == checked.getCandidateRating() == 7.5
    basis = pm.makeDeltaFunctionBasisList(3, 3)
    fast.build(basis)
    checked.build(basis)
    np.testing.assert_array_equal(fast.getKernelImage(ORIG), checked.getKernelImage(ORIG))

    # A box reaching outside the image, or planes of another dtype, are errors, not garbage.
    outside = pm.Box2I((xy0[0] + 60, xy0[1]), (15, 15))
    with pytest.raises(pm.InvalidInputError, match="stamp box is not inside the image"):
        pm.KernelCandidate._fromPlanes(0.0, 0.0, planes, outside, control, 1.0)
    ints = pm.MaskedImage(template.image, template.mask, template.variance, xy0=xy0)
    ints.image = template.image.astype(np.int16)
    with pytest.raises(pm.InvalidInputError, match="must be float32 or float64"):
        pm.KernelCandidate._stampPlanes(ints, science)
    smaller = science.subimage(pm.Box2I(xy0, (50, 60)))
    with pytest.raises(pm.InvalidInputError, match="differ in shape"):
        pm.KernelCandidate._stampPlanes(template, smaller)


def test_candidate_from_planes_reads_them_in_place(rng: np.random.Generator) -> None:
    """A candidate made from planes keeps no copy of its stamps: it reads the arrays (also
    strided ones) when asked, keeps them alive after the caller lets go, and so shows a
    change of their pixels, as a view of its parent would (LSST's stamps are such views)."""
    shape, xy0 = (40, 50), (3, -4)
    # Every-other-row and Fortran-ordered planes: the stamps must follow numpy's strides.
    big = rng.normal(100.0, 10.0, (2 * shape[0], shape[1])).astype(np.float32)
    template = pm.MaskedImage(np.zeros(shape, np.float32), xy0=xy0)
    # Set as attributes: MaskedImage's constructor would make them C-contiguous.
    template.image = big[::2]
    template.mask = np.asfortranarray(rng.integers(0, 4, shape, dtype=np.int32))
    template.variance = np.asfortranarray(rng.uniform(1.0, 2.0, shape))
    science = pm.MaskedImage(
        rng.normal(100.0, 10.0, shape).astype(np.float32),
        rng.integers(0, 4, shape, dtype=np.int32),
        rng.uniform(1.0, 2.0, shape).astype(np.float32),
        xy0=xy0,
    )
    assert not template.image.flags.c_contiguous  # else the test would not test strides
    assert not template.mask.flags.c_contiguous
    box = pm.Box2I((xy0[0] + 20, xy0[1] + 5), (11, 13))
    rows, cols = slice(5, 18), slice(20, 31)
    expected = {
        name: [p[rows, cols].copy() for p in (mi.image, mi.mask, mi.variance)]
        for name, mi in (("template", template), ("science", science))
    }
    control = pm.makeKernelControl(dfConfig(3))
    cand = pm.KernelCandidate._fromPlanes(
        26.0, 7.0, pm.KernelCandidate._stampPlanes(template, science), box, control, 1.0
    )
    scienceImage = science.image
    del template, science, big
    gc.collect()  # the candidate holds the arrays itself
    for name, get in (("template", "getTemplateMaskedImage"), ("science", "getScienceMaskedImage")):
        stamp = getattr(cand, get)()
        for plane, want in zip(("image", "mask", "variance"), expected[name], strict=True):
            np.testing.assert_array_equal(getattr(stamp, plane), want)
    scienceImage[5 + 6, 20 + 5] += 1000.0
    assert cand.getScienceMaskedImage().image[6, 5] == expected["science"][0][6, 5] + 1000.0
