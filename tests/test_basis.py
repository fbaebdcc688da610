# SPDX-License-Identifier: BSD-3-Clause
"""Tests of the kernel bases (docs/algorithm.md §2): Alard–Lupton, delta functions, regularization.

Every expected value is recomputed here in numpy from the formulas of docs/algorithm.md, never read
back from psfmatch.
"""

from __future__ import annotations

import math
import types

import numpy as np
import pytest

import psfmatch as pm
from psfmatch import _core

# FLT_EPSILON: renormalizeKernelList's (single-precision on purpose) "sum is zero" threshold.
FLT_EPSILON = float(np.finfo(np.float32).eps)
FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))


RNG_SEED = 20260511  # the rng fixture's seed (conftest.py)


# --------------------------------------------------------------------------------------------
# numpy references
# --------------------------------------------------------------------------------------------


def unitGaussian(halfWidth: int, sigma: float) -> np.ndarray:
    """exp(-(u² + v²)/2σ²) on the (2h+1)² grid of pixel centres, normalised to unit sum."""
    u = np.arange(-halfWidth, halfWidth + 1, dtype=float)
    g = np.exp(-(u[np.newaxis, :] ** 2 + u[:, np.newaxis] ** 2) / (2.0 * sigma**2))
    return g / g.sum()


def rawAlardLupton(halfWidth: int, sigmas: list[float], degrees: list[int]) -> list[np.ndarray]:
    """§2.1 raw images: G_σ · (u/h)^p (v/h)^q, monomials in the order 1, x, y, x², xy, y², …"""
    u = np.arange(-halfWidth, halfWidth + 1, dtype=float) / halfWidth
    xs, ys = u[np.newaxis, :], u[:, np.newaxis]  # x = column, y = row
    raw = []
    for sigma, degree in zip(sigmas, degrees, strict=True):
        g = unitGaussian(halfWidth, sigma)
        for n in range(degree + 1):
            for q in range(n + 1):  # the power of y runs 0..n within total degree n
                raw.append(g * xs ** (n - q) * ys**q)
    return raw


def renormalize(raw: list[np.ndarray]) -> list[np.ndarray]:
    """§2.2: B₀ to unit sum; later kernels B/ΣB − B₀ when |ΣB| > FLT_EPSILON, then unit L2."""
    b0 = raw[0] / raw[0].sum()
    out = [b0]
    for k in raw[1:]:
        s = k.sum()
        if abs(s) > FLT_EPSILON:
            k = k / s - b0
        out.append(k / np.sqrt((k**2).sum()))
    return out


def termsImage(kernel: pm.FixedKernel) -> np.ndarray:
    """Σ_t coef_t · ky_t ⊗ kx_t, the image a kernel's separable decomposition describes."""
    return sum(t.coef * np.outer(t.ky, t.kx) for t in kernel.getTerms())


# --------------------------------------------------------------------------------------------
# Alard–Lupton basis (§2.1, §2.2)
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("halfWidth", "sigmas", "degrees"),
    [
        (3, [1.0], [0]),
        (4, [0.7, 1.5], [2, 1]),
        (10, [0.7, 1.5, 3.0], [4, 2, 2]),
        (6, [0.8, 1.6, 3.2, 4.0], [3, 0, 5, 1]),
    ],
)
def test_alard_lupton_count(halfWidth: int, sigmas: list[float], degrees: list[int]) -> None:
    basis = pm.makeAlardLuptonBasisList(halfWidth, len(sigmas), sigmas, degrees)
    assert len(basis) == sum((d + 1) * (d + 2) // 2 for d in degrees)
    for k in basis:
        assert k.getDimensions() == (2 * halfWidth + 1, 2 * halfWidth + 1)
        assert k.getCtr() == (halfWidth, halfWidth)


def test_alard_lupton_default_count_is_27() -> None:
    assert len(pm.makeAlardLuptonBasisList(10, 3, [0.7, 1.5, 3.0], [4, 2, 2])) == 27


def test_alard_lupton_sums_and_norms() -> None:
    basis = pm.makeAlardLuptonBasisList(10, 3, [0.7, 1.5, 3.0], [4, 2, 2])
    images = [k.getImage() for k in basis]
    # A sum of 441 terms of size ≤ 1 carries rounding of order 441 · 2.2e-16 ≈ 1e-13.
    np.testing.assert_allclose(images[0].sum(), 1.0, rtol=0, atol=1e-13)
    assert abs(np.sqrt((images[0] ** 2).sum()) - 1.0) > 0.1  # B₀ is not unit-norm
    for i, im in enumerate(images[1:], start=1):
        # Same rounding argument as above: zero sum and unit norm to ~1e-13.
        np.testing.assert_allclose(im.sum(), 0.0, rtol=0, atol=1e-13, err_msg=f"kernel {i}")
        np.testing.assert_allclose((im**2).sum(), 1.0, rtol=1e-13, err_msg=f"kernel {i}")


@pytest.mark.parametrize("sigma", [0.7, 1.3, 3.0])
def test_alard_lupton_b0_is_unit_sum_gaussian(sigma: float) -> None:
    halfWidth = 7
    basis = pm.makeAlardLuptonBasisList(halfWidth, 2, [sigma, 2 * sigma], [1, 1])
    # The same exponentials summed in a different order: agreement to a few ulps of ~1.
    np.testing.assert_allclose(
        basis[0].getImage(), unitGaussian(halfWidth, sigma), rtol=1e-13, atol=1e-16
    )


@pytest.mark.parametrize(
    ("halfWidth", "sigmas", "degrees"),
    [(5, [0.9, 2.0], [3, 2]), (10, [0.7, 1.5, 3.0], [4, 2, 2])],
)
def test_alard_lupton_matches_numpy_recomputation(
    halfWidth: int, sigmas: list[float], degrees: list[int]
) -> None:
    """Every kernel, hence the monomial order (1, x, y, x², xy, y², …), recomputed from §2.1/2.2."""
    basis = pm.makeAlardLuptonBasisList(halfWidth, len(sigmas), sigmas, degrees)
    expected = renormalize(rawAlardLupton(halfWidth, sigmas, degrees))
    assert len(basis) == len(expected)
    for i, (k, e) in enumerate(zip(basis, expected, strict=True)):
        # Unit-norm kernels built by a different but exact-in-exact-arithmetic route; the
        # subtraction B/s − B₀ loses a few digits at most: 1e-12 absolute on values ≤ 1.
        np.testing.assert_allclose(k.getImage(), e, rtol=0, atol=1e-12, err_msg=f"kernel {i}")


def test_alard_lupton_monomial_order_and_orientation() -> None:
    """Kernel 1 is odd in x (the column) only; kernel 2 odd in y (the row) only; 4 is ∝ xy."""
    basis = pm.makeAlardLuptonBasisList(4, 1, [1.5], [2])
    k1, k2, k4 = (basis[i].getImage() for i in (1, 2, 4))
    # Exact symmetries of products of exact mirror-symmetric exponentials: 1e-15 slack.
    np.testing.assert_allclose(k1, -k1[:, ::-1], atol=1e-15)
    np.testing.assert_allclose(k1, k1[::-1, :], atol=1e-15)
    np.testing.assert_allclose(k2, -k2[::-1, :], atol=1e-15)
    np.testing.assert_allclose(k2, k2[:, ::-1], atol=1e-15)
    assert k1[4, 8] > 0 and k2[8, 4] > 0  # positive towards +x (column) and +y (row)
    np.testing.assert_allclose(k4, -k4[:, ::-1], atol=1e-15)
    np.testing.assert_allclose(k4, -k4[::-1, :], atol=1e-15)
    np.testing.assert_allclose(k4, k4.T, atol=1e-15)


def test_alard_lupton_separable_terms_reproduce_image() -> None:
    basis = pm.makeAlardLuptonBasisList(6, 3, [0.7, 1.5, 3.0], [4, 2, 2])
    for i, k in enumerate(basis):
        assert k.isSeparable()
        for t in k.getTerms():
            assert t.kx.shape == (13,) and t.ky.shape == (13,)
        # Sum of a handful of outer products of values ≤ ~1: a few ulps.
        np.testing.assert_allclose(
            termsImage(k), k.getImage(), rtol=0, atol=1e-14, err_msg=f"kernel {i}"
        )


@pytest.mark.parametrize(
    ("halfWidth", "nGauss", "sigmas", "degrees", "match"),
    [
        (0, 1, [1.0], [1], "halfWidth must be >= 1, got 0"),
        (-2, 1, [1.0], [1], "halfWidth must be >= 1, got -2"),
        (3, 2, [1.0], [1, 1], "nGauss = 2 but 1 sigmas and 2 degrees"),
        (3, 2, [1.0, 2.0], [1], "nGauss = 2 but 2 sigmas and 1 degrees"),
        (3, 1, [1.0, 2.0], [1, 1], "nGauss = 1 but 2 sigmas"),
        (3, 1, [0.0], [1], "sigma 0 must be > 0"),
        (3, 1, [1.0], [-1], "degree 0 must be >= 0"),
    ],
)
def test_alard_lupton_errors(
    halfWidth: int, nGauss: int, sigmas: list[float], degrees: list[int], match: str
) -> None:
    with pytest.raises(pm.InvalidInputError, match=match):
        pm.makeAlardLuptonBasisList(halfWidth, nGauss, sigmas, degrees)


# --------------------------------------------------------------------------------------------
# renormalizeKernelList (§2.2)
# --------------------------------------------------------------------------------------------


def test_renormalize_empty() -> None:
    assert pm.renormalizeKernelList([]) == []


def test_renormalize_zero_sum_first_kernel() -> None:
    first = np.zeros((3, 3))
    first[1, 0], first[1, 2] = 1.0, -1.0
    with pytest.raises(pm.InvalidInputError, match="first kernel sums to zero"):
        pm.renormalizeKernelList([pm.FixedKernel(first), pm.FixedKernel(np.ones((3, 3)))])


def test_renormalize_matches_numpy(rng: np.random.Generator) -> None:
    raw = [rng.uniform(0.5, 2.0, (5, 5))]  # positive sum for B₀
    raw.append(rng.normal(size=(5, 5)))  # generic: B/s − B₀ branch
    odd = rng.normal(size=(5, 5))
    raw.append(odd - odd[:, ::-1])  # exactly zero sum: only L2-normalised
    raw.append(rng.normal(size=(5, 5)) + 3.0)
    out = pm.renormalizeKernelList([pm.FixedKernel(r) for r in raw])
    for i, (k, e) in enumerate(zip(out, renormalize(raw), strict=True)):
        # Same arithmetic on 25 values of order 1: a few ulps, 1e-13 is ample.
        np.testing.assert_allclose(k.getImage(), e, rtol=0, atol=1e-13, err_msg=f"kernel {i}")
    # The antisymmetric kernel took the L2-only branch: it is a pure rescaling of its input.
    np.testing.assert_allclose(
        out[2].getImage(), raw[2] / np.sqrt((raw[2] ** 2).sum()), rtol=0, atol=1e-15
    )


# --------------------------------------------------------------------------------------------
# generateAlardLuptonBasisList (§2.3)
# --------------------------------------------------------------------------------------------


def expectedSigmas(sigBig: float, sigSmall: float, minSig: float, n: int, beta: float) -> list:
    """f(σ_big, σ_small, minSig) of §2.3, written out independently."""
    sigK = math.sqrt(sigBig**2 - sigSmall**2)
    if sigK < minSig:
        sigK = minSig
    first = max(minSig, sigK / beta) if n > 1 else sigK
    out = [first]
    for _ in range(n - 1):
        out.append(out[-1] * beta)
    return out


def expectedSize(scaling: float, sigLast: float, sizeMin: int, sizeMax: int) -> int:
    size = int(scaling * sigLast)
    if size % 2 == 0:
        size += 1
    return min(max(size, sizeMin), sizeMax)


@pytest.mark.parametrize(
    ("targetFwhm", "referenceFwhm", "nGauss", "mode"),
    [
        (3.0, 5.0, 3, "convolution"),  # σ_k/β above alardMinSig
        (4.0, 4.2, 3, "convolution"),  # σ_k/β below alardMinSig: first sigma = minSig
        (4.0, 4.05, 3, "convolution"),  # σ_k itself below minSig: raised to it
        (2.0, 12.0, 3, "convolution"),  # size clamped to kernelSizeMax
        (5.0, 3.0, 3, "deconvolution"),  # alardMinSigDeconv floor
        (4.0, 3.9, 3, "deconvolution"),
        (3.0, 6.0, 1, "convolution"),  # nGauss = 1: sigma is σ_k, not σ_k/β
        (6.0, 3.0, 1, "deconvolution"),
        (4.0, 4.0, 3, "config"),  # equal widths: config sigmas, size still recomputed
    ],
)
def test_generate_alard_lupton_scaled(
    targetFwhm: float, referenceFwhm: float, nGauss: int, mode: str
) -> None:
    config = pm.PsfMatchConfigAL()
    config.kernelSizeMin = 11  # low enough that the recomputed size (19 when equal) shows
    config.alardNGauss = nGauss
    if nGauss == 1:
        config.alardDegGauss = [3]
        config.alardSigGauss = [1.0]
    sigT, sigR = targetFwhm / FWHM_PER_SIGMA, referenceFwhm / FWHM_PER_SIGMA
    beta = config.alardGaussBeta
    if mode == "convolution":
        sigmas = expectedSigmas(sigR, sigT, config.alardMinSig, nGauss, beta)
    elif mode == "deconvolution":
        sigmas = expectedSigmas(sigT, sigR, config.alardMinSigDeconv, nGauss, beta)
    else:
        sigmas = list(config.alardSigGauss)
    size = expectedSize(
        config.kernelSizeFwhmScaling, sigmas[-1], config.kernelSizeMin, config.kernelSizeMax
    )

    metadata: dict = {}
    basis = pm.generateAlardLuptonBasisList(config, targetFwhm, referenceFwhm, metadata=metadata)
    assert metadata["ALBasisMode"] == mode
    assert metadata["ALBasisNGauss"] == nGauss
    assert list(metadata["ALBasisDegGauss"]) == list(config.alardDegGauss)
    # Same closed-form arithmetic in Python on both sides: agreement to rounding.
    np.testing.assert_allclose(metadata["ALBasisSigGauss"], sigmas, rtol=1e-14)
    assert metadata["ALKernelSize"] == size
    assert len(basis) == sum((d + 1) * (d + 2) // 2 for d in config.alardDegGauss)
    assert basis[0].getDimensions() == (size, size)
    # The sigmas reach the basis: B₀ is the unit-sum Gaussian of the first one (a few ulps).
    np.testing.assert_allclose(
        basis[0].getImage(), unitGaussian(size // 2, sigmas[0]), rtol=1e-12, atol=1e-16
    )


def test_generate_alard_lupton_case_values() -> None:
    """Hand-checked numbers for one convolution case, guarding the helper formulas above."""
    config = pm.PsfMatchConfigAL()
    metadata: dict = {}
    pm.generateAlardLuptonBasisList(config, 3.0, 5.0, metadata=metadata)
    sigK = math.sqrt(5.0**2 - 3.0**2) / 2.354820045  # = 4 / 2.3548 = 1.6986
    # 2.354820045 carries 10 digits: 1e-9 relative.
    np.testing.assert_allclose(metadata["ALBasisSigGauss"], [sigK / 2, sigK, 2 * sigK], rtol=1e-9)
    assert metadata["ALKernelSize"] == 21  # int(6 · 3.397) = 20 → 21, inside [21, 35]


@pytest.mark.parametrize(
    ("targetFwhm", "referenceFwhm", "scaleByFwhm"),
    [(None, 5.0, True), (3.0, None, True), (None, None, True), (3.0, 5.0, False)],
)
def test_generate_alard_lupton_fallback(
    targetFwhm: float | None, referenceFwhm: float | None, scaleByFwhm: bool
) -> None:
    config = pm.PsfMatchConfigAL()
    config.scaleByFwhm = scaleByFwhm
    config.kernelSize = 15  # below kernelSizeMin = 21: the fallback does not clamp
    metadata: dict = {}
    basis = pm.generateAlardLuptonBasisList(config, targetFwhm, referenceFwhm, metadata=metadata)
    assert metadata == {
        "ALBasisNGauss": 3,
        "ALBasisDegGauss": [4, 2, 2],
        "ALBasisSigGauss": [0.7, 1.5, 3.0],
        "ALKernelSize": 15,
        "ALBasisMode": "config",
    }
    assert len(basis) == 27
    assert basis[0].getDimensions() == (15, 15)
    # Config sigma 0.7 reaches B₀ (a few ulps).
    np.testing.assert_allclose(basis[0].getImage(), unitGaussian(7, 0.7), rtol=1e-12, atol=1e-16)


def test_generate_alard_lupton_overrides() -> None:
    config = pm.PsfMatchConfigAL()
    metadata: dict = {}
    basis = pm.generateAlardLuptonBasisList(
        config, basisDegGauss=[1, 0, 2], basisSigmaGauss=[1.0, 2.0, 4.0], metadata=metadata
    )
    assert metadata["ALBasisDegGauss"] == [1, 0, 2]
    assert metadata["ALBasisSigGauss"] == [1.0, 2.0, 4.0]
    assert len(basis) == 3 + 1 + 6


def test_generate_alard_lupton_array_and_empty_overrides() -> None:
    """numpy overrides are used as given; an empty sigma list is a length error, not "use the
    config" (both used to go through a truth test of the override)."""
    config = pm.PsfMatchConfigAL()
    metadata: dict = {}
    basis = pm.generateAlardLuptonBasisList(
        config, basisSigmaGauss=np.array([1.0, 2.0, 4.0]), metadata=metadata
    )
    assert metadata["ALBasisSigGauss"] == [1.0, 2.0, 4.0]
    assert len(basis) == 27
    # The override reaches B₀ (a few ulps).
    np.testing.assert_allclose(basis[0].getImage(), unitGaussian(10, 1.0), rtol=1e-12, atol=1e-16)
    with pytest.raises(pm.InvalidInputError, match="alardSigGauss has 0 entries, alardNGauss is 3"):
        pm.generateAlardLuptonBasisList(config, basisSigmaGauss=[])
    with pytest.raises(pm.InvalidInputError, match="alardDegGauss has 0 entries, alardNGauss is 3"):
        pm.generateAlardLuptonBasisList(config, basisDegGauss=np.array([], dtype=int))


def test_generate_alard_lupton_errors() -> None:
    with pytest.raises(pm.PsfMatchError, match="needs kernelBasisSet='alard-lupton'"):
        pm.generateAlardLuptonBasisList(pm.PsfMatchConfigDF())
    config = pm.PsfMatchConfigAL()
    with pytest.raises(pm.InvalidInputError, match="alardDegGauss has 2 entries, alardNGauss is 3"):
        pm.generateAlardLuptonBasisList(config, basisDegGauss=[1, 2])
    with pytest.raises(pm.InvalidInputError, match="alardSigGauss has 4 entries, alardNGauss is 3"):
        pm.generateAlardLuptonBasisList(config, basisSigmaGauss=[1.0, 2.0, 3.0, 4.0])
    config.kernelSize = 20
    with pytest.raises(pm.InvalidInputError, match="kernelSize must be odd, got 20"):
        pm.generateAlardLuptonBasisList(config)
    config.kernelSize = 21
    with pytest.raises(pm.InvalidInputError, match="targetFwhmPix must be a positive"):
        pm.generateAlardLuptonBasisList(config, -1.0, 3.0)
    with pytest.raises(pm.InvalidInputError, match="referenceFwhmPix must be a positive"):
        pm.generateAlardLuptonBasisList(config, 3.0, float("nan"))


def test_make_kernel_basis_list_dispatch() -> None:
    df = pm.PsfMatchConfigDF()
    df.kernelSize = 7
    basis = pm.makeKernelBasisList(df, 3.0, 5.0)
    assert len(basis) == 49
    assert all(k.getDimensions() == (7, 7) for k in basis)

    al = pm.PsfMatchConfigAL()
    metadata: dict = {}
    basis = pm.makeKernelBasisList(al, 3.0, 5.0, metadata=metadata)
    assert metadata["ALBasisMode"] == "convolution"
    assert len(basis) == 27

    notAl = pm.PsfMatchConfig()  # kernelBasisSet "alard-lupton" on a plain PsfMatchConfig
    with pytest.raises(pm.InvalidInputError, match="needs a PsfMatchConfigAL"):
        pm.makeKernelBasisList(notAl)


# --------------------------------------------------------------------------------------------
# Delta-function basis (§2.4)
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("width", "height"), [(1, 1), (3, 5), (7, 7), (9, 3)])
def test_delta_function_basis(width: int, height: int) -> None:
    basis = pm.makeDeltaFunctionBasisList(width, height)
    assert len(basis) == width * height
    for k, kernel in enumerate(basis):
        expected = np.zeros((height, width))
        expected[k // width, k % width] = 1.0  # k = row·width + col
        np.testing.assert_array_equal(kernel.getImage(), expected)
        assert kernel.isSeparable()
        np.testing.assert_array_equal(termsImage(kernel), expected)


def test_delta_function_basis_errors() -> None:
    with pytest.raises(pm.InvalidInputError, match="sizes must be positive, got 0x3"):
        pm.makeDeltaFunctionBasisList(0, 3)
    with pytest.raises(pm.InvalidInputError, match="sizes must be positive, got 3x-1"):
        pm.makeDeltaFunctionBasisList(3, -1)
    # psfmatch kernels always have a central pixel (FixedKernel refuses even sizes).
    with pytest.raises(pm.InvalidInputError, match="kernel dimensions must be odd, got 6x3"):
        pm.makeDeltaFunctionBasisList(6, 3)


# --------------------------------------------------------------------------------------------
# Regularization matrices (§2.5)
# --------------------------------------------------------------------------------------------


def centralB(width: int, height: int, stencil: int, borderPenalty: float) -> np.ndarray:
    """B of the central-difference regularization, written out pixel by pixel from §2.5."""
    if stencil == 5:
        w = np.array([[0, 1, 0], [1, -4, 1], [0, 1, 0]], dtype=float)
    else:
        w = np.array([[1, 4, 1], [4, -20, 4], [1, 4, 1]], dtype=float) / 6.0
    n = width * height
    b = np.zeros((n, n))
    for y in range(height):
        for x in range(width):
            i = y * width + x
            if x in (0, width - 1) or y in (0, height - 1):
                b[i, i] = borderPenalty
                continue
            for dy in (-1, 0, 1):
                for dx in (-1, 0, 1):
                    b[i, i + dx + dy * width] = w[dy + 1, dx + 1]
    return b


FORWARD_COEFS = {1: [-1.0, 1.0], 2: [-1.0, 2.0, -1.0], 3: [-1.0, 3.0, -3.0, 1.0]}


def forwardB(width: int, height: int, orders: list[int], borderPenalty: float) -> np.ndarray:
    """B = Σ_orders (BX + BY) of the forward-difference regularization (§2.5)."""
    coef = {0: [borderPenalty], **FORWARD_COEFS}
    n = width * height
    total = np.zeros((n, n))
    for o in orders:
        bx, by = np.zeros((n, n)), np.zeros((n, n))
        for y in range(height):
            for x in range(width):
                i = y * width + x
                ox = min(width - x - 1, o)
                for j in range(ox + 1):
                    bx[i, i + j] = coef[ox][j]
                oy = min(height - y - 1, o)
                for j in range(oy + 1):
                    by[i, i + j * width] = coef[oy][j]
        total += bx + by
    return total


def dfConfig(**fields: object) -> pm.PsfMatchConfigDF:
    config = pm.PsfMatchConfigDF()
    config.kernelSize = 5
    for name, value in fields.items():
        setattr(config, name, value)
    return config


def assertSymmetricPsd(h: np.ndarray) -> None:
    np.testing.assert_array_equal(h, h.T)  # BᵀB is formed symmetric
    e = np.linalg.eigvalsh(h)
    assert e.min() >= -1e-10 * e.max()


@pytest.mark.parametrize("stencil", [5, 9])
@pytest.mark.parametrize("borderPenalty", [3.0, 0.0, 0.5])
def test_central_difference_matrix(stencil: int, borderPenalty: float) -> None:
    config = dfConfig(
        centralRegularizationStencil=stencil, regularizationBorderPenalty=borderPenalty
    )
    h = pm.makeRegularizationMatrix(config)
    assert h.shape == (25, 25)
    assertSymmetricPsd(h)
    b = centralB(5, 5, stencil, borderPenalty)
    expected = b.T @ b
    if stencil == 5 and borderPenalty in (3.0, 0.0):
        # Small integers: every product and sum is exact in double precision.
        np.testing.assert_array_equal(h, expected)
    else:
        # Sixths and halves: the two matrix products may round differently, ~1 ulp of ~20.
        np.testing.assert_allclose(h, expected, rtol=0, atol=1e-13)


@pytest.mark.parametrize("orders", [[1], [2], [3], [1, 2], [1, 2, 3], [3, 1]])
def test_forward_difference_matrix(orders: list[int]) -> None:
    config = dfConfig(regularizationType="forwardDifference", forwardRegularizationOrders=orders)
    h = pm.makeRegularizationMatrix(config)
    assertSymmetricPsd(h)
    b = forwardB(5, 5, orders, config.regularizationBorderPenalty)
    # Integer stencils and an integer border penalty (3.0): every operation is exact.
    np.testing.assert_array_equal(h, b.T @ b)


@pytest.mark.parametrize(("width", "height"), [(5, 3), (3, 7)])
def test_regularization_non_square_core(width: int, height: int) -> None:
    """Through _core: non-square kernels exercise the width/height roles of §2.5."""
    for kind, ref in (
        (_core.RegularizationType.CENTRAL_DIFFERENCE, centralB(width, height, 5, 2.0)),
        (_core.RegularizationType.FORWARD_DIFFERENCE, forwardB(width, height, [1, 2], 2.0)),
    ):
        h = np.asarray(_core.makeRegularizationMatrix(width, height, kind, 5, [1, 2], 2.0, False))
        # Integer entries only: exact.
        np.testing.assert_array_equal(h, ref.T @ ref)


@pytest.mark.parametrize("regularizationType", ["centralDifference", "forwardDifference"])
def test_regularization_background_row_and_column(regularizationType: str) -> None:
    config = dfConfig(regularizationType=regularizationType, fitForBackground=True)
    h = pm.makeRegularizationMatrix(config)
    assert h.shape == (26, 26)
    assert not h[-1, :].any() and not h[:, -1].any()
    config.fitForBackground = False
    np.testing.assert_array_equal(h[:25, :25], pm.makeRegularizationMatrix(config))
    assertSymmetricPsd(h)


def test_regularization_default_config_is_9_point() -> None:
    config = pm.PsfMatchConfigDF()  # kernelSize 21, 9-point stencil, border penalty 3
    h = pm.makeRegularizationMatrix(config)
    assert h.shape == (441, 441)
    b = centralB(21, 21, 9, 3.0)
    # Sums of ≤ 9 products of sixths: rounding ~1 ulp of ~20.
    np.testing.assert_allclose(h, b.T @ b, rtol=0, atol=1e-13)


def test_regularization_errors() -> None:
    central, forward = (
        _core.RegularizationType.CENTRAL_DIFFERENCE,
        _core.RegularizationType.FORWARD_DIFFERENCE,
    )
    # The config's ChoiceField/ListField/RangeField refuse these values, so call the core.
    for stencil in (3, 7, 0):
        with pytest.raises(pm.InvalidInputError, match=f"stencil must be 5 or 9, got {stencil}"):
            _core.makeRegularizationMatrix(5, 5, central, stencil, [1], 3.0, False)
    for order in (0, 4, -1):
        with pytest.raises(pm.InvalidInputError, match=f"orders must be in 1..3, got {order}"):
            _core.makeRegularizationMatrix(5, 5, forward, 9, [1, order], 3.0, False)
    for kind in (central, forward):
        with pytest.raises(pm.InvalidInputError, match="borderPenalty must be >= 0, got -0.5"):
            _core.makeRegularizationMatrix(5, 5, kind, 5, [1], -0.5, False)
        with pytest.raises(pm.InvalidInputError, match="borderPenalty must be >= 0"):
            _core.makeRegularizationMatrix(5, 5, kind, 5, [1], float("nan"), False)
        with pytest.raises(pm.InvalidInputError, match="sizes must be positive"):
            _core.makeRegularizationMatrix(0, 5, kind, 5, [1], 3.0, False)
    # An unknown regularization type: the config's ChoiceField refuses it on assignment, so
    # hand makeRegularizationMatrix a stand-in config.
    fake = types.SimpleNamespace(**{name: getattr(dfConfig(), name) for name in dfConfig().keys()})
    fake.regularizationType = "laplacian"
    with pytest.raises(pm.InvalidInputError, match="unknown regularizationType 'laplacian'"):
        pm.makeRegularizationMatrix(fake)  # type: ignore[arg-type]
