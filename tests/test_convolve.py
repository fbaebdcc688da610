# SPDX-License-Identifier: BSD-3-Clause
"""Tests of psfmatch.convolve (docs/algorithm.md §0, docs/decisions.md D1) against scipy and
numpy references."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.signal

import psfmatch as pm

NO_DATA = pm.Mask.getPlaneBitMask("NO_DATA")
EDGE = pm.Mask.getPlaneBitMask("EDGE")


RNG_SEED = 31415  # the rng fixture's seed (conftest.py)


def goodSlices(shape: tuple[int, int], kernel: np.ndarray) -> tuple[slice, slice]:
    """The good box of §0: [c, N − 1 − (W − 1 − c)] along each axis, as slices."""
    (ny, nx), (kh, kw) = shape, kernel.shape
    cy, cx = (kh - 1) // 2, (kw - 1) // 2
    return slice(cy, ny - (kh - 1 - cy)), slice(cx, nx - (kw - 1 - cx))


def kernels(rng: np.random.Generator) -> dict[str, pm.FixedKernel]:
    """A separable AL kernel, a non-separable random one, an off-centre delta."""
    al = pm.linearCombination(
        pm.makeAlardLuptonBasisList(4, 2, [1.0, 2.2], [2, 2]), rng.normal(size=12)
    )
    assert al.isSeparable()
    delta = np.zeros((5, 7))
    delta[1, 5] = 1.0
    return {
        "alard-lupton": al,
        "random": pm.FixedKernel(rng.normal(size=(7, 5))),
        "delta": pm.FixedKernel(delta),
    }


def maskedImage(rng: np.random.Generator, shape: tuple[int, int], dtype: type) -> pm.MaskedImage:
    image = rng.normal(10.0, 3.0, shape).astype(dtype)
    variance = rng.uniform(0.5, 2.0, shape).astype(dtype)
    mask = np.zeros(shape, dtype=np.int32)
    return pm.MaskedImage(image, mask, variance)


def float32Atol(image: np.ndarray, kernel: np.ndarray) -> float:
    """Rounding of one float32 output: a double-precision sum cast to float32 is off by
    ≤ ½ ulp of the result, bounded by ½·eps32·max|Σ K·in| ≤ eps32·Σ|K|·max|in|."""
    return float(np.finfo(np.float32).eps * np.abs(kernel).sum() * np.abs(image).max())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kernelName", ["alard-lupton", "random", "delta"])
def test_convolve_matches_scipy(rng: np.random.Generator, dtype: type, kernelName: str) -> None:
    kernel = kernels(rng)[kernelName]
    k = kernel.getImage()
    mi = maskedImage(rng, (40, 37), dtype)
    out = pm.convolve(mi, kernel)
    assert out.image.dtype == dtype and out.variance.dtype == dtype
    assert out.mask.dtype == np.int32
    assert out.getXY0() == mi.getXY0()
    good = goodSlices(mi.image.shape, k)
    expected = scipy.signal.convolve(mi.image.astype(np.float64), k, mode="valid")
    expectedVar = scipy.signal.convolve(mi.variance.astype(np.float64), k**2, mode="valid")
    assert out.image[good].shape == expected.shape
    if dtype == np.float64:
        # Both sum ≤ 35 double products of values ~10 in different orders: ~1e-13 absolute.
        atol, atolVar = 1e-12, 1e-12
    else:
        atol = float32Atol(mi.image, k)
        atolVar = float32Atol(mi.variance, k**2)
    np.testing.assert_allclose(out.image[good], expected, rtol=0, atol=atol)
    np.testing.assert_allclose(out.variance[good], expectedVar, rtol=0, atol=atolVar)


def test_convolve_is_true_convolution_not_correlation() -> None:
    """A single bright pixel is spread into the kernel itself, not its point reflection."""
    image = np.zeros((11, 11))
    image[5, 5] = 1.0
    k = np.arange(1.0, 10.0).reshape(3, 3)
    out = pm.convolve(pm.MaskedImage(image), pm.FixedKernel(k))
    np.testing.assert_array_equal(out.image[4:7, 4:7], k)


def test_methods_agree(rng: np.random.Generator) -> None:
    kernel = kernels(rng)["alard-lupton"]
    mi = maskedImage(rng, (50, 45), np.float64)
    direct = pm.convolve(mi, kernel, method="direct")
    separable = pm.convolve(mi, kernel, method="separable")
    auto = pm.convolve(mi, kernel)
    good = goodSlices(mi.image.shape, kernel.getImage())
    for other in (separable, auto):
        # Two summation orders of 81 double products of values ~10: ≤ 1e-12 absolute.
        np.testing.assert_allclose(other.image[good], direct.image[good], rtol=0, atol=1e-12)
        np.testing.assert_allclose(other.variance[good], direct.variance[good], rtol=0, atol=1e-12)
        np.testing.assert_array_equal(other.mask, direct.mask)
    with pytest.raises(pm.InvalidInputError, match="no separable decomposition"):
        pm.convolve(mi, kernels(rng)["random"], method="separable")


@pytest.mark.parametrize("method", ["direct", "separable"])
def test_threads_are_bit_identical(rng: np.random.Generator, method: str) -> None:
    kernel = kernels(rng)["alard-lupton"]
    mi = maskedImage(rng, (150, 70), np.float32)  # several 32-row blocks
    mi.mask[rng.uniform(size=mi.mask.shape) < 0.02] = 1 << 3
    one = pm.convolve(mi, kernel, method=method, nThreads=1)
    for n in (2, 3, 0):
        other = pm.convolve(mi, kernel, method=method, nThreads=n)
        np.testing.assert_array_equal(other.image, one.image)
        np.testing.assert_array_equal(other.variance, one.variance)
        np.testing.assert_array_equal(other.mask, one.mask)


def bruteForceMask(mask: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """OR over every input pixel under a non-zero kernel pixel, output on the good box."""
    (ny, nx), (kh, kw) = mask.shape, kernel.shape
    cy, cx = (kh - 1) // 2, (kw - 1) // 2
    out = np.zeros((ny - kh + 1, nx - kw + 1), dtype=np.int32)
    for oy in range(out.shape[0]):
        for ox in range(out.shape[1]):
            y, x = oy + cy, ox + cx
            acc = 0
            for j in range(kh):
                for i in range(kw):
                    if kernel[j, i] != 0.0:
                        acc |= int(mask[y - j + cy, x - i + cx])
            out[oy, ox] = acc
    return out


@pytest.mark.parametrize("kernelKind", ["full", "holes", "delta", "asymmetric"])
def test_mask_dilation(rng: np.random.Generator, kernelKind: str) -> None:
    shape = (17, 19)
    mask = np.zeros(shape, dtype=np.int32)
    for bit in (0, 1, 3, 5):
        mask[rng.uniform(size=shape) < 0.04] |= 1 << bit
    if kernelKind == "full":
        k = rng.uniform(0.1, 1.0, (5, 3))
    elif kernelKind == "holes":
        k = np.zeros((5, 5))
        k[2, :] = 1.0
        k[:, 2] = 0.5
        k[0, 4] = -0.3
    elif kernelKind == "delta":
        k = np.zeros((5, 5))
        k[4, 1] = 1.0
    else:
        k = np.zeros((3, 5))
        k[0, 0], k[2, 3] = 1.0, 2.0
    image = np.zeros(shape)
    out = pm.convolve(pm.MaskedImage(image, mask, np.ones(shape)), pm.FixedKernel(k))
    good = goodSlices(shape, k)
    np.testing.assert_array_equal(out.mask[good], bruteForceMask(mask, k))


def test_mask_dilation_separable_path(rng: np.random.Generator) -> None:
    """The two-pass path dilates the mask under the kernel's non-zero pixels only, also when its
    factors leave whole rows or columns at zero (odd AL monomials, delta functions)."""
    shape = (23, 21)
    mask = np.zeros(shape, dtype=np.int32)
    for bit in (0, 2, 6):
        mask[rng.uniform(size=shape) < 0.04] |= 1 << bit
    mi = pm.MaskedImage(rng.normal(size=shape), mask, np.ones(shape))
    al = pm.makeAlardLuptonBasisList(3, 1, [1.2], [2])  # x·G and y·G vanish on a column / row
    deltas = pm.makeDeltaFunctionBasisList(7, 5)
    kernels = [al[1], al[2], al[4], deltas[3], deltas[31]]
    assert all(k.isSeparable() and (k.getImage() == 0.0).any() for k in kernels)
    for i, kernel in enumerate(kernels):
        k = kernel.getImage()
        out = pm.convolve(mi, kernel, method="separable")
        np.testing.assert_array_equal(
            out.mask[goodSlices(shape, k)], bruteForceMask(mask, k), err_msg=f"kernel {i}"
        )


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_default_border(rng: np.random.Generator, dtype: type) -> None:
    kernel = kernels(rng)["random"]  # 5 wide, 7 high
    mi = maskedImage(rng, (20, 16), dtype)
    mi.mask[:, :] = 1 << 1
    out = pm.convolve(mi, kernel)
    border = np.ones(mi.image.shape, dtype=bool)
    border[goodSlices(mi.image.shape, kernel.getImage())] = False
    assert border.sum() == 20 * 16 - (20 - 6) * (16 - 4)
    assert np.isnan(out.image[border]).all()
    assert np.isposinf(out.variance[border]).all()
    np.testing.assert_array_equal(out.mask[border], (1 << 1) | NO_DATA)
    assert np.isfinite(out.image[~border]).all()
    assert not (out.mask[~border] & (NO_DATA | EDGE)).any()


def test_copy_edge(rng: np.random.Generator) -> None:
    kernel = kernels(rng)["random"]
    mi = maskedImage(rng, (20, 16), np.float32)
    mi.mask[::3, ::2] = 1 << 2
    out = pm.convolve(mi, kernel, doCopyEdge=True)
    border = np.ones(mi.image.shape, dtype=bool)
    border[goodSlices(mi.image.shape, kernel.getImage())] = False
    np.testing.assert_array_equal(out.image[border], mi.image[border])
    np.testing.assert_array_equal(out.variance[border], mi.variance[border])
    np.testing.assert_array_equal(out.mask[border], mi.mask[border] | EDGE)
    assert not (out.mask & NO_DATA).any()
    assert not (out.mask[~border] & EDGE).any()
    plain = pm.convolve(mi, kernel)
    np.testing.assert_array_equal(out.image[~border], plain.image[~border])


def test_normalize(rng: np.random.Generator) -> None:
    k = rng.uniform(0.0, 1.0, (5, 5))
    kernel = pm.FixedKernel(k)
    mi = maskedImage(rng, (21, 23), np.float64)
    out = pm.convolve(mi, kernel, doNormalize=True)
    good = goodSlices(mi.image.shape, k)
    s = k.sum()
    # Double sums of 25 products of values ~10 in different orders: 1e-12 absolute.
    np.testing.assert_allclose(
        out.image[good], scipy.signal.convolve(mi.image, k, mode="valid") / s, rtol=0, atol=1e-12
    )
    np.testing.assert_allclose(
        out.variance[good],
        scipy.signal.convolve(mi.variance, k**2, mode="valid") / s**2,
        rtol=0,
        atol=1e-12,
    )
    zeroSum = k - k.mean()
    with pytest.raises(pm.InvalidInputError, match="cannot normalise a kernel whose sum is 0"):
        pm.convolve(mi, pm.FixedKernel(zeroSum - zeroSum.sum() / 25), doNormalize=True)


def test_inputs_never_modified(rng: np.random.Generator) -> None:
    kernel = kernels(rng)["alard-lupton"]
    mi = maskedImage(rng, (30, 30), np.float32)
    mi.mask[3:8, 4:9] = 1 << 4
    arrays = (mi.image, mi.mask, mi.variance)
    copies = [a.copy() for a in arrays]
    flags = [(a.flags.writeable, a.flags.c_contiguous, a.flags.owndata) for a in arrays]
    for doCopyEdge in (False, True):
        for method in ("auto", "direct", "separable"):
            out = pm.convolve(mi, kernel, doCopyEdge=doCopyEdge, method=method)
            assert all(o is not a for o in (out.image, out.mask, out.variance) for a in arrays)
    assert all(x is y for x, y in zip((mi.image, mi.mask, mi.variance), arrays, strict=True))
    for a, c, f in zip(arrays, copies, flags, strict=True):
        np.testing.assert_array_equal(a, c)
        assert (a.flags.writeable, a.flags.c_contiguous, a.flags.owndata) == f


def test_big_endian_and_non_contiguous_inputs(rng: np.random.Generator) -> None:
    kernel = kernels(rng)["random"]
    base = rng.normal(size=(30, 60))
    var = rng.uniform(1.0, 2.0, (30, 60))
    mask = (rng.uniform(size=(30, 60)) < 0.05).astype(np.int32) << 3
    reference = pm.convolve(
        pm.MaskedImage(
            np.ascontiguousarray(base[:, ::2]),
            np.ascontiguousarray(mask[:, ::2]),
            np.ascontiguousarray(var[:, ::2]),
        ),
        kernel,
    )
    strided = pm.MaskedImage(base[:, ::2], mask[:, ::2], var[:, ::2])
    bigEndian = pm.MaskedImage(
        base[:, ::2].astype(">f8"), mask[:, ::2].astype(">i4"), var[:, ::2].astype(">f8")
    )
    fortran = pm.MaskedImage(
        np.asfortranarray(base[:, ::2]), np.asfortranarray(mask[:, ::2]), var[:, ::2]
    )
    for mi in (strided, bigEndian, fortran):
        out = pm.convolve(mi, kernel)
        # Same values, same arithmetic: bit-identical.
        np.testing.assert_array_equal(out.image, reference.image)
        np.testing.assert_array_equal(out.variance, reference.variance)
        np.testing.assert_array_equal(out.mask, reference.mask)


def test_errors(rng: np.random.Generator) -> None:
    mi = maskedImage(rng, (6, 9), np.float64)
    with pytest.raises(pm.InvalidInputError, match="image of 9x6 pixels is smaller than the 7x7"):
        pm.convolve(mi, pm.FixedKernel(np.ones((7, 7))))
    with pytest.raises(pm.InvalidInputError, match="kernel dimensions must be odd, got 4x3"):
        pm.FixedKernel(np.ones((3, 4)))
    with pytest.raises(pm.InvalidInputError, match="kernel dimensions must be odd, got 3x2"):
        pm.FixedKernel(np.ones((2, 3)))
    with pytest.raises(pm.InvalidInputError, match="kernel image has NaN"):
        pm.FixedKernel(np.full((3, 3), np.nan))
    with pytest.raises(pm.InvalidInputError, match=r"method: expected one of .* got 'fft'"):
        pm.convolve(mi, pm.FixedKernel(np.ones((3, 3))), method="fft")
    with pytest.raises(pm.InvalidInputError, match="expected a psfmatch.MaskedImage, got ndarray"):
        pm.convolve(mi.image, pm.FixedKernel(np.ones((3, 3))))


def test_image_exactly_kernel_sized(rng: np.random.Generator) -> None:
    """The smallest allowed image: a good box of one pixel."""
    k = rng.normal(size=(5, 5))
    mi = maskedImage(rng, (5, 5), np.float64)
    out = pm.convolve(mi, pm.FixedKernel(k))
    # One sum of 25 double products: a few ulps of ~50.
    np.testing.assert_allclose(out.image[2, 2], (k[::-1, ::-1] * mi.image).sum(), atol=1e-12)
    assert np.isnan(out.image).sum() == 24
