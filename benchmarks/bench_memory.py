# SPDX-License-Identifier: BSD-3-Clause
"""Peak memory of the end-to-end subtraction, measured in a fresh process.

psfmatch's budget is 40 bytes per pixel for the 4096² ``core`` run, its inputs included. A
pytest process also holds pytest, the benchmark plugin, the simulation's truth and whatever
earlier benchmarks left, so the figure is taken in a child process that imports psfmatch,
notes its resident set size (the interpreter with numpy, scipy, astropy and sep), loads the
pair from ``.npy`` files (image, int32 mask and variance of each: 24 B/px of float32 inputs)
and runs the ``core`` subtraction of `bench_end_to_end` (its config, saved by the parent and
loaded) while a thread samples
``/proc/self/statm`` every 2 ms. Reported, in bytes per pixel of one image:

- ``inputs + run``: the peak less the interpreter, i.e. the inputs and everything the run
  holds at its peak (the figure the budget is about);
- ``process``: the whole peak, the interpreter's ~6 B/px at 4096² included.

Both settings of ``keepMatchedImage`` are measured: kept (the Python API's default), the run
ends holding the convolved image and the difference; not kept (what the command line does
without ``--matched``, and HOTPANTS's default output), only the difference. The child writes
its difference back, and the parent checks it against the simulation's truth as
`bench_end_to_end` does.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import psfmatch as pm
from bench_end_to_end import checkAgainstTruth, makeConfig, simulated
from benchutils import skipLargeInSmoke

SIZES = [1024, 2048, 4096]

_CHILD = textwrap.dedent(
    """
    import json, os, sys, threading, time
    import numpy as np
    import psfmatch as pm

    page = os.sysconf("SC_PAGE_SIZE")

    def rss():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * page

    folder = sys.argv[1]
    interpreter = rss()
    planes = {}
    for name in ("science", "template"):
        parts = [np.load(os.path.join(folder, f"{name}_{p}.npy")) for p in ("i", "m", "v")]
        planes[name] = pm.MaskedImage(*parts)
    inputBytes = sum(
        a.nbytes for mi in planes.values() for a in (mi.image, mi.mask, mi.variance)
    )
    config = pm.ImagePsfMatchConfig()
    config.load(os.path.join(folder, "config.py"))  # bench_end_to_end's core setting
    peak = [rss()]
    done = threading.Event()

    def poll():
        while not done.is_set():
            peak[0] = max(peak[0], rss())
            time.sleep(0.002)

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    result = pm.subtract(
        planes["science"], planes["template"], config=config, mode="convolveTemplate"
    )
    done.set()
    thread.join()
    peak[0] = max(peak[0], rss())
    d = result.difference
    for p, a in (("i", d.image), ("m", d.mask), ("v", d.variance)):
        np.save(os.path.join(folder, f"difference_{p}.npy"), a)
    print(json.dumps({
        "interpreter": interpreter, "peak": peak[0], "inputBytes": inputBytes,
        "kernelSum": result.kernelSum, "xy0": list(d.getXY0()),
        "matchedKept": result.matched is not None,
    }))
    """
)

_TABLE: list[tuple[int, bool, dict[str, float]]] = []


def _savePair(sim: Any, folder: Path) -> None:
    for name, mi in (("science", sim.science), ("template", sim.template)):
        for p, a in (("i", mi.image), ("m", mi.mask), ("v", mi.variance)):
            np.save(folder / f"{name}_{p}.npy", a)


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("keep", [False, True], ids=["differenceOnly", "keepMatched"])
def test_peak_memory_core(benchmark: Any, tmp_path: Path, n: int, keep: bool) -> None:
    """The ``core`` subtraction's peak resident memory, in a process of its own."""
    skipLargeInSmoke(benchmark, n)
    benchmark.group = f"peak memory of the core run, {n}², fresh process (time: the process)"
    sim = simulated(n)
    _savePair(sim, tmp_path)
    config = makeConfig("core")
    config.keepMatchedImage = keep
    config.save(str(tmp_path / "config.py"))

    def run() -> dict[str, Any]:
        out = subprocess.run(
            [sys.executable, "-c", _CHILD, str(tmp_path)],
            check=True,
            capture_output=True,
            text=True,
        )
        return dict(json.loads(out.stdout.strip().splitlines()[-1]))

    figures = benchmark.pedantic(run, rounds=1, warmup_rounds=0)
    assert figures["matchedKept"] == keep
    assert figures["inputBytes"] == 24 * n * n  # float32 image and variance, int32 mask, ×2
    difference = pm.MaskedImage(
        *(np.load(tmp_path / f"difference_{p}.npy") for p in ("i", "m", "v")),
        xy0=tuple(figures["xy0"]),
    )
    checkAgainstTruth(
        sim, types.SimpleNamespace(difference=difference, kernelSum=figures["kernelSum"])
    )
    pixels = n * n
    stats = {
        "interpreter": figures["interpreter"] / pixels,
        "inputsAndRun": (figures["peak"] - figures["interpreter"]) / pixels,
        "process": figures["peak"] / pixels,
    }
    benchmark.extra_info.update(stats)
    _TABLE.append((n, keep, stats))


def pytest_terminal_summary_table() -> str:
    """The memory table of this session's runs (printed by conftest)."""
    if not _TABLE:
        return ""
    lines = [
        "peak resident memory of the core run in a fresh process, bytes per pixel of one image "
        "(inputs: 24 B/px)",
        f"{'size':>6} {'matched image':>14} {'inputs + run':>13} {'process':>8}"
        f" {'interpreter':>12}",
    ]
    for n, keep, stats in _TABLE:
        lines.append(
            f"{n:>6} {'kept' if keep else 'not kept':>14} {stats['inputsAndRun']:13.1f}"
            f" {stats['process']:8.1f} {stats['interpreter']:12.1f}"
        )
    return "\n".join(lines)
