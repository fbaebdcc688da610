# SPDX-License-Identifier: BSD-3-Clause
"""The fused subtraction pass (``_core.subtractMatched`` behind `ImagePsfMatchTask._subtract`)
against the plain numpy expressions of the difference image, written out here.

The planes are random with odd sizes, a parent origin away from (0, 0), EDGE bits in the
matched image's border and scattered in both masks (so "the convolution's own border" is
exercised), exact zeros and signed zeros. Every comparison is bit for bit: the C++ pass
promises the arithmetic of the numpy expressions (float32 differences in float32, the
background and κ scaling in float64 rounded once).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import psfmatch as pm
from psfmatch import _core
from psfmatch.image_psf_match import ImagePsfMatchConfig, ImagePsfMatchTask
from psfmatch.task import Struct

SHAPE = (193, 257)  # (ny, nx), odd on purpose
XY0 = (-13, 7)
EDGE = pm.Mask.getPlaneBitMask("EDGE")
NO_DATA = pm.Mask.getPlaneBitMask("NO_DATA")
BBOX = pm.Box2I(XY0, (SHAPE[1], SHAPE[0]))
INNER = pm.Box2I((XY0[0] + 5, XY0[1] + 4), (SHAPE[1] - 10, SHAPE[0] - 8))
CHEBYSHEV1 = pm.SpatialModelType.CHEBYSHEV1


RNG_SEED = 20261126  # the rng fixture's seed (conftest.py)


def randomMaskedImage(rng: np.random.Generator, dtype: Any, border: int = 0) -> pm.MaskedImage:
    """Random image, positive variance and mask bits; EDGE on a frame ``border`` wide."""
    image = rng.normal(0.0, 30.0, SHAPE).astype(dtype)
    # Exact zeros of both signs, and equal pixels (see pairUp), for the signed-zero rules.
    image[rng.random(SHAPE) < 0.01] = 0.0
    image[rng.random(SHAPE) < 0.01] = -0.0
    variance = rng.uniform(1.0, 100.0, SHAPE).astype(dtype)
    # A few low planes at random, EDGE on ~3 % of the pixels.
    mask = (rng.random(SHAPE) < 0.05).astype(np.int32) * pm.Mask.getPlaneBitMask("BAD")
    mask |= (rng.random(SHAPE) < 0.03).astype(np.int32) * EDGE
    if border:
        frame = np.ones(SHAPE, dtype=bool)
        frame[border:-border, border:-border] = False
        mask[frame] |= EDGE
    return pm.MaskedImage(image, mask, variance, xy0=XY0)


def pairUp(rng: np.random.Generator, dtype: Any) -> tuple[pm.MaskedImage, ...]:
    """(reference, matched, target): the matched image carries EDGE on a 6-px frame."""
    reference = randomMaskedImage(rng, dtype)
    matched = randomMaskedImage(rng, dtype, border=6)
    target = randomMaskedImage(rng, dtype)
    same = rng.random(SHAPE) < 0.01
    matched.image[same] = reference.image[same]
    return reference, matched, target


def makeBackground(rng: np.random.Generator) -> pm.SpatialBackground:
    function = pm.SpatialFunction(CHEBYSHEV1, 2, BBOX)
    return pm.SpatialBackground(function, rng.normal(0.0, 5.0, function.getNParameters()))


def numpyDifference(
    reference: pm.MaskedImage,
    matched: pm.MaskedImage,
    targetMask: np.ndarray,
    *,
    background: pm.SpatialBackground | None,
    kappa: float | None,
    innerBox: Any,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The difference image as plain numpy expressions (numpy's own dtype promotion).

    ``kappa`` None: D = R − M − b, V = V_R + V_M. Otherwise the science image was convolved and
    R is the template: D = (M + b − R)/κ, V = (V_M + V_R)/κ² (κ² as κ·κ). The border is EDGE
    in M but not in the target, or outside ``innerBox``: NaN, +inf, EDGE | NO_DATA.
    """
    # SpatialBackground.evaluate is checked against Σ β_k f_k(x, y) in test_spatial.py.
    b = 0.0 if background is None else np.asarray(background.evaluate(matched.getBBox()))
    if kappa is None:
        image = reference.image - matched.image
        if background is not None:
            image -= b
        variance = reference.variance + matched.variance
    else:
        image = matched.image.astype(np.float64)
        image += b
        image -= reference.image
        image /= kappa
        variance = (matched.variance + reference.variance) / (kappa * kappa)
    mask = reference.mask | matched.mask
    border = ((matched.mask & EDGE) != 0) & ((targetMask & EDGE) == 0)
    if innerBox is not None:
        x0, y0 = matched.getXY0()
        inner = np.zeros(border.shape, dtype=bool)
        inner[
            innerBox.getMinY() - y0 : innerBox.getMaxY() - y0 + 1,
            innerBox.getMinX() - x0 : innerBox.getMaxX() - x0 + 1,
        ] = True
        border |= ~inner
    image[border] = np.nan
    variance[border] = np.inf
    mask[border] |= EDGE | NO_DATA
    dtype = reference.image.dtype
    return image.astype(dtype), mask, variance.astype(dtype)


def assertBitIdentical(got: np.ndarray, expected: np.ndarray) -> None:
    assert got.dtype == expected.dtype and got.shape == expected.shape
    # Byte views: NaNs, signed zeros and infinities must match too.
    assert np.array_equal(got.view(np.uint8), expected.view(np.uint8))


def control(kappa: float | None, innerBox: Any, nThreads: int = 0) -> Any:
    c = _core.SubtractionControl()
    c.edgeBit = EDGE
    c.noDataBit = NO_DATA
    c.innerBox = innerBox
    c.nThreads = nThreads
    if kappa is not None:
        c.scienceConvolved = True
        c.kappa = kappa
    return c


def callCore(
    reference: pm.MaskedImage,
    matched: pm.MaskedImage,
    targetMask: np.ndarray,
    ctrl: Any,
    background: Any = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return _core.subtractMatched(
        reference.image,
        reference.mask,
        reference.variance,
        matched.image,
        matched.mask,
        matched.variance,
        targetMask,
        matched.getXY0(),
        ctrl,
        background,
    )


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kappa", [None, 0.8374619])
@pytest.mark.parametrize("withBackground", [False, True])
@pytest.mark.parametrize("innerBox", [None, INNER])
def test_core_matches_numpy(
    rng: np.random.Generator, dtype: Any, kappa: float | None, withBackground: bool, innerBox: Any
) -> None:
    reference, matched, target = pairUp(rng, dtype)
    background = makeBackground(rng) if withBackground else None
    image, mask, variance = callCore(
        reference, matched, target.mask, control(kappa, innerBox), background
    )
    expected = numpyDifference(
        reference, matched, target.mask, background=background, kappa=kappa, innerBox=innerBox
    )
    assertBitIdentical(image, expected[0])
    np.testing.assert_array_equal(mask, expected[1])
    assertBitIdentical(variance, expected[2])
    # The test exercises what it claims: borders of both kinds and finite pixels elsewhere.
    border = (mask & NO_DATA) != 0
    assert 0 < border.sum() < border.size // 2
    assert np.isnan(image[border]).all() and np.isfinite(image[~border]).all()
    # EDGE pixels the target already had are the input's own: they stay unflagged.
    kept = ((matched.mask & EDGE) != 0) & ((target.mask & EDGE) != 0)
    assert (kept & ~border).any()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kappa", [None, 0.8374619])
def test_core_in_place_writes_the_same_difference_over_the_matched_planes(
    rng: np.random.Generator, dtype: Any, kappa: float | None
) -> None:
    reference, matched, target = pairUp(rng, dtype)
    background = makeBackground(rng)
    ctrl = control(kappa, INNER)
    expected = callCore(reference, matched, target.mask, ctrl, background)
    others = [p.copy() for p in (reference.image, reference.mask, reference.variance, target.mask)]
    work = pm.MaskedImage(
        matched.image.copy(), matched.mask.copy(), matched.variance.copy(), xy0=XY0
    )
    got = _core.subtractMatched(
        reference.image,
        reference.mask,
        reference.variance,
        work.image,
        work.mask,
        work.variance,
        target.mask,
        XY0,
        ctrl,
        background,
        inPlace=True,
    )
    for out, plane, want in zip(got, (work.image, work.mask, work.variance), expected, strict=True):
        assert out is plane  # the matched planes themselves, now holding the difference
        assertBitIdentical(out, want)
    for plane, copy in zip(
        (reference.image, reference.mask, reference.variance, target.mask), others, strict=True
    ):
        assertBitIdentical(plane, copy)
    readOnly = matched.variance.copy()
    readOnly.flags.writeable = False
    with pytest.raises(pm.InvalidInputError, match="matchedVariance must be writable"):
        _core.subtractMatched(
            reference.image,
            reference.mask,
            reference.variance,
            matched.image.copy(),
            matched.mask.copy(),
            readOnly,
            target.mask,
            XY0,
            ctrl,
            inPlace=True,
        )


def test_thread_count_does_not_change_the_result(rng: np.random.Generator) -> None:
    reference, matched, target = pairUp(rng, np.float32)
    background = makeBackground(rng)
    results = [
        callCore(reference, matched, target.mask, control(kappa, INNER, n), background)
        for kappa in (None, 1.37)
        for n in (1, 2, 3)
    ]
    for group in (results[:3], results[3:]):
        for other in group[1:]:
            for got, first in zip(other, group[0], strict=True):
                assertBitIdentical(got, first)


def test_inputs_are_not_modified(rng: np.random.Generator) -> None:
    reference, matched, target = pairUp(rng, np.float32)
    planes = [
        mi.__getattribute__(p)
        for mi in (reference, matched, target)
        for p in ("image", "mask", "variance")
    ]
    copies = [p.copy() for p in planes]
    callCore(reference, matched, target.mask, control(1.2, INNER), makeBackground(rng))
    for plane, copy in zip(planes, copies, strict=True):
        assertBitIdentical(plane, copy)


def test_errors(rng: np.random.Generator) -> None:
    reference, matched, target = pairUp(rng, np.float32)
    args = [
        reference.image,
        reference.mask,
        reference.variance,
        matched.image,
        matched.mask,
        matched.variance,
        target.mask,
    ]

    def call(index: int, value: Any, ctrl: Any = None) -> Any:
        planes = list(args)
        planes[index] = value
        return _core.subtractMatched(*planes, XY0, ctrl or control(None, None))

    with pytest.raises(pm.InvalidInputError, match=r"the matched image is 192 x 257"):
        call(3, matched.image[:-1])
    with pytest.raises(pm.InvalidInputError, match=r"the target mask is 193 x 256"):
        call(6, np.ascontiguousarray(target.mask[:, 1:]))
    with pytest.raises(pm.InvalidInputError, match=r"matchedVariance has dtype float64"):
        call(5, matched.variance.astype(np.float64))
    with pytest.raises(pm.InvalidInputError, match=r"referenceMask has dtype int64"):
        call(1, reference.mask.astype(np.int64))
    with pytest.raises(pm.InvalidInputError, match=r"referenceImage has dtype int32.*float32 or"):
        call(0, reference.mask)
    with pytest.raises(pm.InvalidInputError, match=r"matchedImage has dtype >f4"):
        call(3, matched.image.astype(">f4"))
    with pytest.raises(pm.InvalidInputError, match=r"matchedImage must be C-contiguous"):
        call(3, np.asfortranarray(matched.image))
    with pytest.raises(pm.InvalidInputError, match=r"referenceVariance must be 2-D, got 1"):
        call(2, reference.variance.ravel())
    for kappa in (0.0, np.nan, np.inf):
        with pytest.raises(pm.InvalidInputError, match=r"kappa must be finite and non-zero"):
            call(0, reference.image, control(kappa, None))
    # A ValueError too, as every InvalidInputError is.
    with pytest.raises(ValueError, match="subtractMatched"):
        call(4, matched.mask[::2])


# -- ImagePsfMatchTask._subtract: the modes, κ and mixed dtypes -------------------------------


def makeKernel(rng: np.random.Generator) -> pm.LinearCombinationKernel:
    """A spatially varying 7 × 7 kernel whose sum changes across BBOX."""
    basis = [pm.FixedKernel(rng.uniform(0.0, 1.0, (7, 7))) for _ in range(3)]
    params = rng.normal(0.3, 0.1, (3, 3))
    return pm.LinearCombinationKernel(basis, pm.SpatialFunction(CHEBYSHEV1, 1, BBOX), params)


@pytest.mark.parametrize("mode", ["convolveTemplate", "convolveScience", "preconvolve"])
@pytest.mark.parametrize("doSubtractBackground", [False, True])
@pytest.mark.parametrize(
    "dtypes", [(np.float32, np.float32), (np.float64, np.float64), (np.float32, np.float64)]
)
def test_task_subtract_matches_numpy(
    rng: np.random.Generator, mode: str, doSubtractBackground: bool, dtypes: tuple[Any, Any]
) -> None:
    """Each mode's expression, κ at the box centre for convolveScience, the inner box in
    score mode, and numpy's promotion when the matched image's dtype differs."""
    referenceDtype, matchedDtype = dtypes
    reference, _, target = pairUp(rng, referenceDtype)
    matched = randomMaskedImage(rng, matchedDtype, border=6)
    kernel = makeKernel(rng)
    background = makeBackground(rng)
    innerBox = INNER if mode == "preconvolve" else None
    fit = Struct(
        mode=mode,
        reference=reference,
        target=target,
        template=reference if mode == "convolveScience" else target,
        psfMatchingKernel=kernel,
        backgroundModel=background,
        innerBox=innerBox,
    )
    config = ImagePsfMatchConfig()
    config.doSubtractBackground = doSubtractBackground
    config.kernel.active.nThreads = 2
    task = ImagePsfMatchTask(config=config)
    got = task._subtract(fit, matched)
    # In place: over the matched planes when they are of the result's dtype, else (mixed
    # dtypes, where they are promoted first) into new arrays as above; the same numbers.
    work = pm.MaskedImage(
        matched.image.copy(), matched.mask.copy(), matched.variance.copy(), xy0=XY0
    )
    inPlace = task._subtract(fit, work, inPlace=True)
    sameDtype = referenceDtype == matchedDtype
    assert np.shares_memory(inPlace.image, work.image) == sameDtype
    assert np.shares_memory(inPlace.variance, work.variance) == sameDtype
    if not sameDtype:
        assertBitIdentical(work.image, matched.image)
    for plane in ("image", "mask", "variance"):
        assertBitIdentical(getattr(inPlace, plane), getattr(got, plane))

    kappa = None
    if mode == "convolveScience":
        # κ: the kernel's sum at the centre of the box, (x, y) = (115, 103).
        kappa = kernel.getSum(0.5 * (BBOX.getMinX() + BBOX.getMaxX()), 103.0)
        assert kappa != pytest.approx(kernel.getSum(0.0, 0.0), rel=1e-6)
    expected = numpyDifference(
        reference,
        matched,
        target.mask,
        background=background if doSubtractBackground else None,
        kappa=kappa,
        innerBox=innerBox,
    )
    assert got.getXY0() == XY0
    assertBitIdentical(got.image, expected[0])
    np.testing.assert_array_equal(got.mask, expected[1])
    assertBitIdentical(got.variance, expected[2])
