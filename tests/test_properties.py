# SPDX-License-Identifier: BSD-3-Clause
"""Property-based tests (hypothesis) of the core: convolution is linear and shift-equivariant
and agrees with scipy; a kernel is recovered from a science image made with it; masked pixels
have no influence on the solution.

Images are small and the example counts low so that the file runs in seconds; the examples are
derandomized so that CI sees the same ones every run.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
import scipy.signal
from hypothesis import HealthCheck, assume, event, example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import psfmatch as pm
from psfmatch.image import Mask

SETTINGS = settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
SLOW_SETTINGS = settings(SETTINGS, max_examples=6)

BAD = Mask.getPlaneBitMask("BAD")
NO_DATA = Mask.getPlaneBitMask("NO_DATA")

finite = st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False, width=64)


@st.composite
def kernels(draw: st.DrawFn, maxHalf: int = 3) -> np.ndarray:
    """An odd-sized kernel, not necessarily square, separable or positive."""
    hy = draw(st.integers(0, maxHalf))
    hx = draw(st.integers(0, maxHalf))
    elements = st.floats(-1.0, 1.0, allow_nan=False, width=64)
    return draw(hnp.arrays(np.float64, (2 * hy + 1, 2 * hx + 1), elements=elements))


@st.composite
def images(draw: st.DrawFn, minSide: int = 7, maxSide: int = 20, count: int = 1) -> list:
    ny = draw(st.integers(minSide, maxSide))
    nx = draw(st.integers(minSide, maxSide))
    return [draw(hnp.arrays(np.float64, (ny, nx), elements=finite)) for _ in range(count)]


def _conv(image: np.ndarray, kernel: np.ndarray, variance: np.ndarray | None = None, **kw):
    mi = pm.MaskedImage(image, None, np.abs(image) if variance is None else variance)
    return pm.convolve(mi, pm.FixedKernel(kernel), **kw)


def _interior(a: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    hy, hx = kernel.shape[0] // 2, kernel.shape[1] // 2
    return a[hy : a.shape[0] - hy, hx : a.shape[1] - hx]


def _scale(*terms: float) -> float:
    # Every output pixel sums at most 49 products; float64 rounding leaves ~1e-14 of the
    # sum of their magnitudes, so 1e-10 of that bound is generous and still catches any
    # misplaced or dropped term (which would be of order 1 of it).
    return 1e-10 * max(sum(terms), 1e-300)


# -- convolution -----------------------------------------------------------------------------


@SETTINGS
@given(
    data=images(count=2),
    kernel=kernels(),
    a=st.floats(-10, 10, allow_nan=False),
    b=st.floats(-10, 10, allow_nan=False),
    method=st.sampled_from(["auto", "direct"]),
)
def test_convolution_is_linear(data, kernel, a, b, method) -> None:
    x, y = data
    assume(not (min(x.shape) < max(kernel.shape)))
    mix = _conv(a * x + b * y, kernel, method=method).image
    parts = a * _conv(x, kernel, method=method).image + b * _conv(y, kernel, method=method).image
    k1 = np.abs(kernel).sum()
    atol = _scale(abs(a) * np.abs(x).max() * k1, abs(b) * np.abs(y).max() * k1)
    np.testing.assert_allclose(_interior(mix, kernel), _interior(parts, kernel), rtol=0, atol=atol)
    # Linear in the kernel too: (x ⊗ K) + (x ⊗ 2K) = x ⊗ 3K.
    three = _conv(x, 3.0 * kernel, method=method).image
    sum12 = _conv(x, kernel, method=method).image + _conv(x, 2.0 * kernel, method=method).image
    np.testing.assert_allclose(
        _interior(three, kernel),
        _interior(sum12, kernel),
        rtol=0,
        atol=_scale(3 * np.abs(x).max() * k1),
    )


@SETTINGS
@given(data=images(), kernel=kernels(), method=st.sampled_from(["auto", "direct"]))
def test_convolution_matches_scipy(data, kernel, method) -> None:
    (x,) = data
    assume(not (min(x.shape) < max(kernel.shape)))
    variance = np.abs(x) + 1.0
    out = _conv(x, kernel, variance, method=method)
    k1 = np.abs(kernel).sum()
    np.testing.assert_allclose(
        _interior(out.image, kernel),
        scipy.signal.convolve(x, kernel, mode="valid", method="direct"),
        rtol=0,
        atol=_scale(np.abs(x).max() * k1),
    )
    # variance ⊗ K², the same bound with K² in place of |K|.
    np.testing.assert_allclose(
        _interior(out.variance, kernel),
        scipy.signal.convolve(variance, kernel**2, mode="valid", method="direct"),
        rtol=0,
        atol=_scale(variance.max() * (kernel**2).sum()),
    )
    # The border the kernel cannot reach is NaN and flagged, nothing else is.
    border = np.ones(x.shape, dtype=bool)
    _interior(border, kernel)[...] = False
    assert np.array_equal((out.mask & NO_DATA) != 0, border)
    assert np.isnan(out.image[border]).all() and np.isfinite(_interior(out.image, kernel)).all()


@SETTINGS
@given(
    data=images(minSide=12, maxSide=24),
    kernel=kernels(),
    dy=st.integers(0, 5),
    dx=st.integers(0, 5),
    x0=st.integers(-1000, 1000),
    y0=st.integers(-1000, 1000),
)
def test_convolution_is_shift_equivariant(data, kernel, dy, dx, x0, y0) -> None:
    (big,) = data
    ny, nx = big.shape[0] - dy, big.shape[1] - dx
    assume(not (min(ny, nx) < max(kernel.shape)))
    first = _conv(big[:ny, :nx], kernel).image
    shifted = _conv(big[dy : dy + ny, dx : dx + nx], kernel).image
    # Convolving the shifted image = shifting the convolved one, where both are defined.
    hy, hx = kernel.shape[0] // 2, kernel.shape[1] // 2
    a = shifted[hy : ny - hy - dy, hx : nx - hx - dx]
    b = first[hy + dy : ny - hy, hx + dx : nx - hx]
    np.testing.assert_allclose(a, b, rtol=0, atol=_scale(np.abs(big).max() * np.abs(kernel).sum()))
    # Moving the image's origin changes nothing for a fixed kernel, bit for bit.
    mi = pm.MaskedImage(big[:ny, :nx], None, np.abs(big[:ny, :nx]), xy0=(x0, y0))
    moved = pm.convolve(mi, pm.FixedKernel(kernel))
    assert moved.getXY0() == (x0, y0)
    np.testing.assert_array_equal(moved.image, first)


@SETTINGS
@given(
    data=images(minSide=9, maxSide=20),
    kernel=kernels(),
    nBad=st.integers(1, 6),
    seed=st.integers(0, 2**32 - 1),
    garbage=st.sampled_from([np.nan, np.inf, -np.inf, 1e300, -7.0]),
)
def test_masked_pixels_reach_only_outputs_that_carry_their_bit(
    data, kernel, nBad, seed, garbage
) -> None:
    (x,) = data
    assume(not (min(x.shape) < max(kernel.shape)))
    rng = np.random.default_rng(seed)
    mask = np.zeros(x.shape, np.int32)
    ys = rng.integers(0, x.shape[0], nBad)
    xs = rng.integers(0, x.shape[1], nBad)
    mask[ys, xs] = BAD
    dirty = x.copy()
    dirty[ys, xs] = garbage
    kernelObj = pm.FixedKernel(kernel)
    clean = pm.convolve(pm.MaskedImage(x, mask, np.ones(x.shape)), kernelObj)
    spoiled = pm.convolve(pm.MaskedImage(dirty, mask, np.ones(x.shape)), kernelObj)
    np.testing.assert_array_equal(spoiled.mask, clean.mask)  # the mask depends on no value
    free = (clean.mask & (BAD | NO_DATA)) == 0
    np.testing.assert_array_equal(spoiled.image[free], clean.image[free])
    np.testing.assert_array_equal(spoiled.variance[free], clean.variance[free])


# -- kernel recovery -------------------------------------------------------------------------


@SETTINGS
@given(
    kernel=kernels(maxHalf=3),
    background=st.floats(-50, 50, allow_nan=False),
    seed=st.integers(0, 2**32 - 1),
)
def test_delta_function_fit_recovers_any_kernel(kernel, background, seed) -> None:
    """science = template ⊗ K + b on a white-noise stamp: the delta-function basis spans every
    K of its size, so the least-squares fit returns K and b exactly (to rounding)."""
    size = max(kernel.shape)
    padded = np.zeros((size, size))
    oy, ox = (size - kernel.shape[0]) // 2, (size - kernel.shape[1]) // 2
    padded[oy : oy + kernel.shape[0], ox : ox + kernel.shape[1]] = kernel
    if abs(padded.sum()) < 0.05:
        padded[size // 2, size // 2] += 1.0  # a kernel summing to ~0 has no scale to fit
    rng = np.random.default_rng(seed)
    n = 4 * size + 9
    template = rng.normal(100.0, 10.0, (n, n))
    science = np.zeros_like(template)
    h = size // 2
    science[h : n - h, h : n - h] = scipy.signal.convolve(template, padded, mode="valid")
    science += background
    config = pm.PsfMatchConfigDF()
    config.kernelSize = size
    config.fitForBackground = True
    config.useRegularization = False
    var = np.ones((n, n))
    cand = pm.KernelCandidate(
        n // 2,
        n // 2,
        pm.MaskedImage(template, None, var),
        pm.MaskedImage(science, None, var),
        config,
    )
    cand.build(pm.makeDeltaFunctionBasisList(size, size))
    # Noise-free and exactly representable; the DF normal matrix of a white template has
    # cond ~1e3 (the ones column of the background against a mean of 100), so ~1e-12 of
    # the kernel's scale; 1e-8 leaves margin and still catches a wrong or flipped pixel.
    scale = np.abs(padded).max()
    ORIG = pm.KernelCandidate.ORIG
    np.testing.assert_allclose(cand.getKernelImage(ORIG), padded, rtol=0, atol=1e-8 * scale)
    np.testing.assert_allclose(cand.getBackground(ORIG), background, rtol=0, atol=1e-6)


def _gaussian(half: int, sigma: float, total: float) -> np.ndarray:
    y, x = np.mgrid[-half : half + 1, -half : half + 1]
    g = np.exp(-(x * x + y * y) / (2.0 * sigma * sigma))
    return total * g / g.sum()


STAR_POSITIONS = [(x + 0.3, y - 0.2) for x in (40, 80, 120) for y in (40, 80, 120)]


def _starField(shape: tuple[int, int], sigma: float, flux: float) -> np.ndarray:
    y, x = np.mgrid[: shape[0], : shape[1]]
    image = np.full(shape, 100.0)
    for px, py in STAR_POSITIONS:
        r2 = (x - px) ** 2 + (y - py) ** 2
        image += flux * np.exp(-r2 / (2 * sigma**2)) / (2 * math.pi * sigma**2)
    return image


@pytest.mark.slow
@SLOW_SETTINGS
@given(
    sigma=st.floats(1.3, 2.2),
    kernelSum=st.floats(0.5, 2.0),
    background=st.floats(-20, 20),
)
def test_subtract_recovers_the_kernel_of_the_science_image(sigma, kernelSum, background) -> None:
    """science = template ⊗ K_true + b (by scipy) with K_true a Gaussian of the Alard-Lupton
    basis' span: psfmatch.subtract gives K_true's sum and image and b."""
    shape = (160, 160)
    template = _starField(shape, 1.5, 5e4)
    kTrue = _gaussian(12, sigma, kernelSum)
    science = scipy.signal.convolve(template, kTrue, mode="same") + background
    variance = np.ones(shape)
    logging.disable(logging.WARNING)
    try:
        result = pm.subtract(
            science,
            template,
            mode="convolveTemplate",
            scienceVariance=variance,
            templateVariance=variance,
            candidates=STAR_POSITIONS,
            scienceFwhm=2.3548 * math.hypot(1.5, sigma),
            templateFwhm=2.3548 * 1.5,
            spatialKernelOrder=0,
            spatialBgOrder=0,
        )
    finally:
        logging.disable(logging.NOTSET)
    # In-span and noise-free the fit is exact to ~1e-9 (sigma >= 1.6); near the narrow end
    # (1.3) the basis' widths, chosen from the FWHMs, represent it to ~1e-5 in the sum and
    # ~1e-3 of the peak in the pixels. The tolerances are 10x those.
    np.testing.assert_allclose(result.kernelSum, kernelSum, rtol=1e-4)
    kernel = result.kernelImage()
    h = kernel.shape[0] // 2
    np.testing.assert_allclose(kernel, _gaussian(h, sigma, kernelSum), atol=1e-2 * kTrue.max())
    np.testing.assert_allclose(
        np.asarray(result.background.getParameters())[0], background, atol=1e-2
    )


# -- masked pixels in the whole fit ----------------------------------------------------------


@pytest.mark.slow
@SLOW_SETTINGS
@given(
    y0=st.integers(0, 150),
    x0=st.integers(0, 150),
    height=st.integers(1, 10),
    width=st.integers(1, 10),
    garbage=st.sampled_from([np.nan, np.inf, 1e30, -1e6, 0.0]),
    which=st.sampled_from(["science", "template", "both"]),
    candidates=st.booleans(),
)
# A finite garbage block inside the image, under a star's stamp or not: before the
# decorrelation filter learned to leave masked pixels out, its values reached every pixel.
@example(y0=60, x0=60, height=5, width=5, garbage=1e30, which="template", candidates=False)
@example(y0=100, x0=20, height=3, width=8, garbage=-1e6, which="both", candidates=True)
def test_masked_pixels_do_not_change_the_solution(
    y0, x0, height, width, garbage, which, candidates
) -> None:
    """Masking a block of pixels and then filling it with garbage (image and variance) gives
    the same kernel, background and difference image (where it is not masked) as masking it
    with its true values: the values of masked pixels take no part."""
    shape = (160, 160)
    # 5e3 counts: S/N ~300, inside the default selection's 10..1000, so sep picks the stars.
    template = _starField(shape, 1.5, 5e3)
    rng = np.random.default_rng(1)
    science = scipy.signal.convolve(template, _gaussian(12, 1.8, 1.2), mode="same") + 3.0
    template = template + rng.normal(0.0, 1.0, shape)
    science = science + rng.normal(0.0, 1.0, shape)
    variance = np.ones(shape)
    mask = np.zeros(shape, np.int32)
    mask[y0 : y0 + height, x0 : x0 + width] = BAD
    block = mask != 0

    def run(dirty: bool) -> pm.SubtractionResult | type:
        images = {"science": science.copy(), "template": template.copy()}
        variances = {"science": variance.copy(), "template": variance.copy()}
        if dirty:
            for name in ("science", "template") if which == "both" else (which,):
                images[name][block] = garbage
                variances[name][block] = abs(garbage) if garbage == garbage else garbage
        kw = {}
        if candidates:
            kw = {"candidates": STAR_POSITIONS, "scienceFwhm": 3.5, "templateFwhm": 3.5}
        try:
            return pm.subtract(
                pm.MaskedImage(images["science"], mask, variances["science"]),
                pm.MaskedImage(images["template"], mask, variances["template"]),
                mode="convolveTemplate",
                spatialKernelOrder=0,
                spatialBgOrder=0,
                **kw,
            )
        except pm.PsfMatchError as err:
            return type(err)

    logging.disable(logging.WARNING)
    try:
        clean, spoiled = run(False), run(True)
    finally:
        logging.disable(logging.NOTSET)
    if isinstance(clean, type) or isinstance(spoiled, type):
        assert clean == spoiled  # the same named error: it depends on the mask alone
        event("both raised the same error")
        return
    event("both solved")
    np.testing.assert_array_equal(
        np.asarray(spoiled.kernel.getSpatialParameters()),
        np.asarray(clean.kernel.getSpatialParameters()),
    )
    np.testing.assert_array_equal(
        np.asarray(spoiled.background.getParameters()),
        np.asarray(clean.background.getParameters()),
    )
    free = (clean.mask & BAD) == 0
    np.testing.assert_array_equal(spoiled.mask[free], clean.mask[free])
    # NaN in, NaN out (issue 20): a non-finite garbage value makes the masked pixels it
    # reaches NO_DATA (NaN in D) as well; every other bit is the clean run's.
    noData = pm.Mask.getPlaneBitMask("NO_DATA")
    np.testing.assert_array_equal(spoiled.mask[~free] & ~noData, clean.mask[~free] & ~noData)
    np.testing.assert_array_equal(spoiled.image[free], clean.image[free])
