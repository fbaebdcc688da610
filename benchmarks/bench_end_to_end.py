# SPDX-License-Identifier: BSD-3-Clause
"""End-to-end subtraction of a simulated pair, whole and stage by stage.

The pair is `psfmatch.simulate.simulatePair` at the default PSFs (template σ 1.6 px, science
σ 2.2 → 2.8 px across the image), float32, with one star per ~2100 pixels (~8000 at 4096²),
the default Alard–Lupton basis and spatial kernel order 2. Two settings are timed:

- ``core``: what HOTPANTS does — arrays in memory, candidate selection, the fits, the image and
  variance convolution, the subtraction (no variance rescaling, decorrelation or detection in
  the difference), returning the difference only (``keepMatchedImage`` off, as HOTPANTS
  writes only the difference unless asked with ``-oci``). The performance targets are about
  this one.
- ``default``: `ImagePsfMatchConfig` as shipped (variance rescaling, decorrelation and
  difference-image detection on).

Each run's stage wall times (the ``timeMethod`` entries of the task metadata) and the peak
resident memory of the process during the runs, in bytes per pixel of one image (the inputs
included), are stored in the benchmark's ``extra_info`` and printed in a table at the end of
the session; each run checks the subtraction against the simulation's truth, as the end-to-end
tests and the demo do. The peak is sampled from ``/proc/self/statm`` every 5 ms by a thread
(allocations in the C++ core are invisible to tracemalloc); spikes shorter than that can be
missed.

The plain reference beside it does the work a scientist would write with scipy given the
answer: the template convolved with the true matching kernel at the image centre (one fixed
kernel, ``scipy.signal.fftconvolve``) and subtracted, with no fit at all.
"""

from __future__ import annotations

import math
import os
import threading
import time
from datetime import datetime
from typing import Any

import numpy as np
import pytest
import scipy.signal

import psfmatch as pm
from benchutils import skipLargeInSmoke
from psfmatch.simulate import compareToTruth, simulatePair

SIZES = [1024, 2048, 4096]
#: Pixels per star: ~8000 stars at 4096², as the performance targets assume.
PIXELS_PER_STAR = 4096 * 4096 // 8000
#: Stages recorded by ``timeMethod`` in the order they run.
STAGES = [
    "prepare",
    "selectSources",
    "buildCellSet",
    "_solve",
    "fitCandidates",
    "fitSpatial",
    "convolve",
    "subtract",
    "decorrelate",
    "detectDiaSources",
]

_pairs: dict[int, Any] = {}


class PeakRss:
    """Context manager: the process's resident set size before and at its peak (bytes)."""

    def __init__(self, interval: float = 0.005) -> None:
        self.interval = interval
        self.page = os.sysconf("SC_PAGE_SIZE")
        self.before = self.peak = 0
        self._stop = threading.Event()

    def _rss(self) -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * self.page

    def _poll(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._rss())
            time.sleep(self.interval)

    def __enter__(self) -> PeakRss:
        self.before = self.peak = self._rss()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())


def simulated(n: int) -> Any:
    """The simulated pair of size n² (cached: simulating 4096² takes seconds)."""
    if n not in _pairs:
        _pairs.clear()  # keep one pair in memory at a time
        _pairs[n] = simulatePair((n, n), nStars=n * n // PIXELS_PER_STAR, seed=7, nTransients=20)
    return _pairs[n]


def makeConfig(setting: str) -> pm.ImagePsfMatchConfig:
    config = pm.ImagePsfMatchConfig()
    config.kernel.active.spatialKernelOrder = 2
    if setting == "core":
        config.doScaleVariance = False
        config.doDecorrelation = False
        config.doDetectDiaSources = False
        config.keepMatchedImage = False
    return config


def stageTimes(metadata: Any) -> dict[str, float]:
    """Wall seconds of each timed stage, from its ``StartUtc``/``EndUtc`` metadata entries."""
    times = {}
    for stage in ["subtractMaskedImages", *STAGES]:
        key = f"{stage}StartUtc"
        if key in metadata:
            # A stage timed more than once in a run (selectSources is) has a list of entries.
            pairs = zip(metadata[key], metadata[f"{stage}EndUtc"], strict=True)
            times[stage] = sum(
                (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()
                for start, end in pairs
            )
    return times


def checkAgainstTruth(sim: Any, result: Any) -> None:
    """The known-answer figures the demo and the end-to-end tests hold the subtraction to."""
    figures = compareToTruth(sim, result)
    # 0.2 %: the demo's threshold; with thousands of stars the kernel sum is good to ~0.05 %.
    assert abs(figures.kernelSum / figures.fluxScale - 1.0) < 2e-3
    # Whitened sky of a correct subtraction: σ(D/σ) = 1 within 3 % (the demo's threshold;
    # the robust σ of 10⁶ pixels scatters by ~0.1 %, the rest is the model's honest error).
    assert abs(figures.zSigma - 1.0) < 0.03
    assert abs(figures.zMean) < 0.05
    # Transient photometry within 2 % on average (the demo's threshold).
    assert abs(figures.transientRatio - 1.0) < 0.02


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("setting", ["core", "default"])
def test_subtract_psfmatch(benchmark, n: int, setting: str) -> None:
    """``psfmatch.subtract`` on the simulated pair, arrays in memory."""
    skipLargeInSmoke(benchmark, n)
    benchmark.group = f"end to end, {n}² float32, AL basis, spatial order 2"
    sim = simulated(n)
    config = makeConfig(setting)

    def run() -> Any:
        return pm.subtract(sim.science, sim.template, config=config, mode="convolveTemplate")

    rounds = 1 if n >= 4096 else 3
    with PeakRss() as rss:
        result = benchmark.pedantic(run, rounds=rounds, warmup_rounds=0)
    checkAgainstTruth(sim, result)
    times = stageTimes(result.metadata)
    times["bytesPerPixel"] = rss.peak / (n * n)
    # What the subtraction itself adds on top of the process with its inputs loaded: its
    # working memory at the peak plus the outputs it returns.
    times["runBytesPerPixel"] = (rss.peak - rss.before) / (n * n)
    benchmark.extra_info["stages"] = times
    benchmark.extra_info["peakRssBytes"] = rss.peak
    benchmark.extra_info["rssBeforeBytes"] = rss.before
    benchmark.extra_info["setting"] = setting
    benchmark.extra_info["n"] = n
    benchmark.extra_info["nCandidatesGood"] = int(result.metadata["nCandidatesGood"])
    _TABLE.append((n, setting, times))


@pytest.mark.parametrize("n", SIZES)
def test_subtract_scipy_fixed_true_kernel(benchmark, n: int) -> None:
    """Reference: the true central kernel by FFT (no fit, no variance, no mask), subtracted."""
    skipLargeInSmoke(benchmark, n)
    benchmark.group = f"end to end, {n}² float32, AL basis, spatial order 2"
    sim = simulated(n)
    kernel = sim.truth.matchingKernelImage(n / 2, n / 2, 21)
    template, science = sim.template.image, sim.science.image

    def run() -> np.ndarray:
        matched = scipy.signal.fftconvolve(template, kernel.astype(np.float32), mode="same")
        return science - matched

    difference = benchmark.pedantic(run, rounds=1 if n >= 4096 else 3, warmup_rounds=0)
    # The reference is right at the centre, where its kernel is the truth: the difference
    # there is noise plus the background, b(centre) ± a few σ of the sky.
    c = n // 2
    centre = difference[c - 50 : c + 50, c - 50 : c + 50]
    assert math.isclose(
        float(np.median(centre)), float(sim.truth.background(c, c)), abs_tol=2.0
    )  # 2 counts: 6σ of the median of 10⁴ pixels of sky σ ≈ 8 counts (σ_med ≈ 0.1)


_TABLE: list[tuple[int, str, dict[str, float]]] = []


def pytest_terminal_summary_table() -> str:
    """The stage table of this session's end-to-end runs (printed by conftest)."""
    if not _TABLE:
        return ""
    header = f"{'size':>6} {'setting':>8} " + " ".join(f"{s.lstrip('_')[:11]:>11}" for s in STAGES)
    lines = [
        "end-to-end stage wall times (s), last round; peak RSS of the process in bytes per "
        "pixel of one image (B/px), and the part the run added to the process with its "
        "inputs loaded (run B/px)",
        header + f" {'whole':>8} {'B/px':>6} {'run B/px':>8}",
    ]
    for n, setting, times in _TABLE:
        cells = " ".join(f"{times[s]:11.3f}" if s in times else f"{'-':>11}" for s in STAGES)
        lines.append(
            f"{n:>6} {setting:>8} {cells} {times.get('subtractMaskedImages', math.nan):8.3f}"
            f" {times['bytesPerPixel']:6.0f} {times.get('runBytesPerPixel', math.nan):8.0f}"
        )
    return "\n".join(lines)
