# SPDX-License-Identifier: BSD-3-Clause
"""Resampling a 4096² template onto a 4096² science frame by their WCSs (`psfmatch.align`).

The pair disagrees as in tests/test_align.py: the template rotated by 30°, shifted by 13.4 px,
with pixels 1.1 times larger and a SIP distortion (0.8 px at 2048 px from the reference
pixel), ~8000 stars, saturated cores flagged SAT. Cases, in one group:

- ``psfmatch smoothed``: `alignMaskedImage` onto the science box grown by the kernel margin,
  with the variance a convolved template gets: what ``subtract(align="wcs")`` does;
- ``psfmatch pixel``: the same with the per-pixel variance (the resampled image of the inverse
  direction, or of a template that is not convolved);
- ``unit``: the reference unit of bench_cli.py, one float32 4096² ``fftconvolve`` with 21×21,
  timed in the same session;
- ``reproject bilinear``: `reproject.reproject_interp` of the image alone (no variance, mask or
  flux factor), the WCSs evaluated at every pixel; one round (tens of seconds); skipped without
  reproject.

Each checks its answer: the psfmatch cases the fluxes of isolated unsaturated stars (the
simulation's truth) within 0.1 % and the sky within 1e-4; reproject's the sky (it keeps surface
brightness). The time of each case in units is printed at the end of the session
(``pytest benchmarks/bench_align.py --benchmark-only -s``).
"""

from __future__ import annotations

import importlib.util
import math
import time
from typing import Any

import numpy as np
import pytest

import psfmatch as pm
from bench_cli import referenceUnit
from benchutils import skipLargeInSmoke
from psfmatch.align import alignMaskedImage
from psfmatch.simulate import simulatePair
from psfmatch.simulate.wcs import tangentWcs

N = 4096
GROUP = f"align, {N}² template onto {N}² science frame (30°, 13.4 px, 1.1x pixels, SIP)"
#: The margin subtract adds around the science box: the largest kernel's half-width.
MARGIN = 17
SKY = 100.0
SATURATION = 1.0e4

_pair: dict[str, Any] = {}
_rows: list[tuple[str, float, float]] = []


def _simulated() -> dict[str, Any]:
    if not _pair:
        shape = (N, N)
        sip = {
            "A": {(2, 0): 2e-7, (0, 2): -1e-7, (1, 1): 1e-7},
            "B": {(2, 0): -1e-7, (0, 2): 1.5e-7, (1, 1): -1e-7},
        }
        scienceWcs = tangentWcs(shape)
        templateWcs = tangentWcs(shape, pixelScale=0.22, rotation=30.0, offset=(13.4, 0.0), sip=sip)
        # Noise-free pixels (so that a star's flux is checked to 1e-4, not to its noise), with
        # the variance plane of real ones: sky and Poisson terms, as timing depends on it.
        sim = simulatePair(
            shape,
            nStars=8000,
            seed=31,
            nTransients=0,
            templateSky=SKY,
            templateSkySigma=0.0,
            saturation=SATURATION,
            templateWcs=templateWcs,
            scienceWcs=scienceWcs,
        )
        template = sim.template
        model = sim.truth.templateModel
        saturated = (template.mask & pm.Mask.getPlaneBitMask("SAT")) != 0
        image = np.where(saturated, np.float32(SATURATION), model).astype(np.float32)
        variance = np.maximum(template.variance, np.float32(4.0))
        _pair.update(
            sim=sim,
            template=pm.MaskedImage(image, template.mask, variance),
            scienceWcs=scienceWcs,
            templateWcs=templateWcs,
        )
    return _pair


def _checkFluxes(image: np.ndarray, pair: dict[str, Any], skyPerPixel: float) -> None:
    """Isolated, unsaturated stars keep their flux within 0.1 % (the issue's figure; the
    resampling keeps it to ~1e-4), and the sky is kept per pixel within 1e-4."""
    sim = pair["sim"]
    stars = sim.stars
    peak = stars["flux"] / (2 * np.pi * (1.6 / 1.1) ** 2)  # template px: sigma 1.6 / 1.1
    chosen = stars[
        (stars["nearestDistance"] > 30)
        & (peak + SKY * 1.21 < 0.5 * SATURATION)
        & (stars["x"] > 200) & (stars["x"] < N - 200) & (stars["y"] > 200) & (stars["y"] < N - 200)
    ][:40]  # fmt: skip
    assert len(chosen) >= 20
    offset = MARGIN if image.shape[0] > N else 0
    r = 12
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    disc = xx * xx + yy * yy <= r * r
    ratios = []
    for star in chosen:
        ix, iy = int(round(star["x"])) + offset, int(round(star["y"])) + offset
        cut = image[iy - r : iy + r + 1, ix - r : ix + r + 1].astype(np.float64)
        if not np.all(np.isfinite(cut)):
            continue  # beyond the rotated template's corner
        total = (cut - skyPerPixel)[disc].sum()  # 12 px: 8 sigma of the star
        ratios.append(total / star["flux"])
    assert len(ratios) >= 15
    np.testing.assert_allclose(ratios, 1.0, atol=1e-3)
    core = image[N // 2 - 40 + offset : N // 2 + 40 + offset, N // 2 - 40 + offset : N // 2 + 40]
    assert abs(np.median(core) / skyPerPixel - 1.0) < 0.05  # stars lie on it; median is sky


@pytest.mark.parametrize("variance", ["smoothed", "pixel"])
def test_align_psfmatch(benchmark: Any, variance: str) -> None:
    skipLargeInSmoke(benchmark, N)
    benchmark.group = GROUP
    pair = _simulated()
    box = (-MARGIN, -MARGIN, N + 2 * MARGIN, N + 2 * MARGIN)

    def run() -> Any:
        return alignMaskedImage(
            pair["template"],
            pair["templateWcs"],
            pair["scienceWcs"],
            box,
            core=(0, 0, N, N),
            variance=variance,
            name="template",
        )

    aligned = benchmark.pedantic(run, rounds=3, warmup_rounds=0)
    _checkFluxes(aligned.maskedImage.image, pair, SKY)
    assert 0.8 < aligned.footprintFraction < 0.95  # the rotated template misses the corners
    assert aligned.maxMappingError <= 0.002
    assert np.count_nonzero(aligned.maskedImage.mask & pm.Mask.getPlaneBitMask("SAT")) > 0
    _record(benchmark, f"psfmatch {variance}", run)


def test_align_unit(benchmark: Any) -> None:
    """The reference unit itself, in the same group so the ratio reads off one table."""
    import scipy.signal

    skipLargeInSmoke(benchmark, N)
    benchmark.group = GROUP
    rng = np.random.default_rng(1)
    image = rng.normal(size=(N, N)).astype(np.float32)
    kernel = np.outer(np.hanning(21), np.hanning(21)).astype(np.float32)
    out = benchmark.pedantic(
        lambda: scipy.signal.fftconvolve(image, kernel, mode="same"), rounds=3, warmup_rounds=0
    )
    # The kernel's sum times the image's mean, away from the edges (the convolution's answer
    # for white noise to ~3 σ of its mean over 10⁶ pixels).
    inner = out[100:-100, 100:-100]
    assert out.dtype == np.float32 and out.shape == image.shape
    assert abs(inner.mean() - kernel.sum() * image[100:-100, 100:-100].mean()) < 0.05
    _record(benchmark, "unit (fftconvolve)")


@pytest.mark.skipif(
    importlib.util.find_spec("reproject") is None, reason="needs reproject (a test dependency)"
)
def test_align_reproject_bilinear(benchmark: Any) -> None:
    from reproject import reproject_interp

    skipLargeInSmoke(benchmark, N)
    benchmark.group = GROUP
    pair = _simulated()
    template = pair["template"]

    def run() -> Any:
        return reproject_interp(
            (template.image, pair["templateWcs"]),
            pair["scienceWcs"],
            shape_out=(N, N),
            order="bilinear",
            return_footprint=False,
        )

    out = benchmark.pedantic(run, rounds=1, warmup_rounds=0)
    # reproject keeps surface brightness: the sky per science pixel is SKY x 1.21 there.
    core = out[N // 2 - 40 : N // 2 + 40, N // 2 - 40 : N // 2 + 40]
    assert abs(np.median(core) / (SKY * 1.21) - 1.0) < 0.05
    _record(benchmark, "reproject_interp bilinear (image only)")


def _unitOnce() -> float:
    """One timing of the reference unit (bench_cli.referenceUnit's work)."""
    import scipy.signal

    rng = np.random.default_rng(1)
    image = rng.normal(size=(N, N)).astype(np.float32)
    kernel = np.outer(np.hanning(21), np.hanning(21)).astype(np.float32)
    start = time.perf_counter()
    scipy.signal.fftconvolve(image, kernel, mode="same")
    return time.perf_counter() - start


def _record(benchmark: Any, name: str, work: Any = None) -> None:
    """The case's median time in units: against bench_cli's session unit, and, for psfmatch's
    cases, the median of three ratios to a unit timed just before each run (on a shared VM the
    unit itself drifts by tens of % within a minute; interleaving cancels most of it)."""
    stats = getattr(benchmark, "stats", None)
    if stats is None or benchmark.disabled:
        return
    seconds = float(stats.stats.median)
    unit = referenceUnit()
    ratios = []
    if work is not None:
        for _ in range(3):
            unitSeconds = _unitOnce()
            start = time.perf_counter()
            work()
            ratios.append((time.perf_counter() - start) / unitSeconds)
    interleaved = float(np.median(ratios)) if ratios else math.nan
    benchmark.extra_info.update(
        seconds=seconds, unit_s=unit, units=seconds / unit, interleavedUnits=interleaved
    )
    _rows.append((name, seconds, interleaved))


def pytest_terminal_summary_table() -> str:
    """This session's alignment figures, in units of the reference convolution."""
    if not _rows:
        return ""
    unit = referenceUnit()
    lines = [
        GROUP,
        f"  unit: one float32 4096² fftconvolve with 21×21 = {unit:.3f} s this session; "
        "interleaved: the median ratio to a unit timed just before each of 3 runs",
    ]
    for name, seconds, interleaved in _rows:
        extra = "" if math.isnan(interleaved) else f"  interleaved {interleaved:5.2f} units"
        lines.append(f"  {name:40s} {seconds:8.3f} s  {seconds / unit:6.2f} units{extra}")
    return "\n".join(lines)
