# SPDX-License-Identifier: BSD-3-Clause
"""The instruction-set fallbacks give the answers the widest one does, bit for bit.

The convolution kernels are compiled for the portable baseline (SSE2 on x86-64), AVX2 and
AVX-512 and chosen at run time (`psfmatch._core.simdLevel`); the environment variable
``PSFMATCH_SIMD`` caps the choice, so that the fallbacks run here on a machine that has
more. Each level runs the same subtraction in a fresh process (the level is read once).
Every level does the same operations per pixel in the same order, without multiply-add
contraction (``-ffp-contract=off``): the fitted kernel and the difference image must be
bit-identical on every level (a wide vector must not change a pixel's sum).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

_CHILD = textwrap.dedent(
    """
    import sys
    import numpy as np
    import psfmatch as pm
    from psfmatch import _core
    from psfmatch.simulate import simulatePair

    sim = simulatePair((320, 352), nStars=90, seed=21, nTransients=0)
    config = pm.ImagePsfMatchConfig()
    config.doScaleVariance = config.doDecorrelation = config.doDetectDiaSources = False
    result = pm.subtract(sim.science, sim.template, config=config, mode="convolveTemplate")
    positions = ((10.0, 15.0), (170.5, 160.0), (340.0, 300.0))
    kernels = np.stack([result.kernel.computeKernel(x, y).getImage() for x, y in positions])
    np.savez(
        sys.argv[1],
        level=_core.simdLevel(),
        kernels=kernels,
        parameters=np.asarray(result.kernel.getSpatialParameters()),
        image=result.difference.image,
        variance=result.difference.variance,
        mask=result.difference.mask,
        matched=result.matched.image,
    )
    """
)

_LEVELS = ("baseline", "avx2", "avx512")


def _run(level: str | None, out: Path) -> dict[str, np.ndarray]:
    env = dict(os.environ)
    env.pop("PSFMATCH_SIMD", None)
    if level is not None:
        env["PSFMATCH_SIMD"] = level
    subprocess.run([sys.executable, "-c", _CHILD, str(out)], check=True, env=env)
    with np.load(out) as f:
        return {key: f[key] for key in f.files}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, np.ndarray]]:
    folder = tmp_path_factory.mktemp("simd")
    out = {"native": _run(None, folder / "native.npz")}
    for level in _LEVELS:
        out[level] = _run(level, folder / f"{level}.npz")
    return out


def test_the_cap_chooses_the_level(runs: dict[str, dict[str, np.ndarray]]) -> None:
    """A cap at or below the CPU's level is the level used; above it, the CPU's."""
    native = str(runs["native"]["level"])
    assert native in _LEVELS
    for level in _LEVELS:
        expected = level if _LEVELS.index(level) <= _LEVELS.index(native) else native
        assert str(runs[level]["level"]) == expected


@pytest.mark.parametrize("level", _LEVELS)
def test_results_are_bit_identical_on_every_level(
    runs: dict[str, dict[str, np.ndarray]], level: str
) -> None:
    native, run = runs["native"], runs[level]
    for key in ("parameters", "kernels", "matched", "image", "variance", "mask"):
        np.testing.assert_array_equal(run[key], native[key], err_msg=key)
