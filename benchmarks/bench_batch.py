# SPDX-License-Identifier: BSD-3-Clause
"""Batch subtraction: pairs per second on a local Dask cluster of 1 and 2 worker processes.

Four 1024² float32 pairs (one template shared by four science images, as for revisits of one
field), each subtracted with the defaults and written to FITS. Beside the batch runs, the same
four pairs in a plain serial loop (``subtract(...).writeFits(...)``) in the same group (its
compiled core uses every hardware thread, as a user's serial run does; the batch gives each pair
one core thread, as the workers already occupy the cores): the ratio is the cluster's speed-up,
overhead included. The local cluster is started, and its workers import psfmatch, before the
timing; ``extra_info`` gives ``pairsPerSecond`` and, for the batch, ``meanPairSeconds`` (the
mean time of one pair on its worker: it grows when the workers compete for the cores). In smoke
mode (``--benchmark-disable``) two pairs are run instead of four, one per worker of the
2-worker cluster, to stay well inside CI's budget.

Every run checks its outputs: all four complete, each kernel sum within 0.5% of the
simulation's flux scale (a different one per pair, so a mixed-up pair or output is caught),
and the first pair's difference image equal, bit for bit, to a serial run's.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from astropy.io import fits

from psfmatch import io as pmio
from psfmatch.api import subtract
from psfmatch.batch import localClient, readManifest, subtractBatch
from psfmatch.simulate import simulatePair

SIZE = 1024
FLUX_SCALES = [1.1, 1.2, 1.3, 1.4]
#: The kernel sum of a 1024² pair with 400 stars comes out within ~0.1% of the truth
#: (tests/test_image_psf_match.py, psfmatch demo); 0.5% leaves room for each realisation's
#: noise, while the closest wrong pair is 8% away.
KSUM_TOLERANCE = 0.005


@pytest.fixture(scope="module")
def field(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The four pairs as FITS files, and a serial reference of the first pair."""
    directory = tmp_path_factory.mktemp("batchbench")
    template = directory / "template.fits"
    sciences = []
    for i, scale in enumerate(FLUX_SCALES):
        sim = simulatePair((SIZE, SIZE), nStars=400, seed=41, fluxScale=scale)
        if i == 0:
            pmio.writeMaskedImage(template, sim.template)
        sciences.append(directory / f"science{i}.fits")
        pmio.writeMaskedImage(sciences[-1], sim.science)
    reference = subtract(str(sciences[0]), str(template)).difference
    return {"dir": directory, "template": template, "sciences": sciences, "reference": reference}


def _pairs(field: dict[str, Any], out: Path, benchmark: Any) -> list[dict[str, Any]]:
    pairs = [
        {"science": science, "template": field["template"], "output": out / f"diff{i}.fits"}
        for i, science in enumerate(field["sciences"])
    ]
    return pairs[:2] if benchmark.disabled else pairs


def _check(field: dict[str, Any], pairs: list[dict[str, Any]]) -> None:
    for pair, scale in zip(pairs, FLUX_SCALES[: len(pairs)], strict=True):
        with fits.open(pair["output"]) as hdul:
            kernelSum = float(hdul[0].header["KSUM"])
        assert abs(kernelSum / scale - 1.0) < KSUM_TOLERANCE, (pair["output"], kernelSum, scale)
    first = pmio.readMaskedImage(pairs[0]["output"])
    for plane in ("image", "mask", "variance"):
        assert np.array_equal(
            getattr(first, plane), getattr(field["reference"], plane), equal_nan=True
        )


def test_batch_serial_loop(benchmark: Any, field: dict[str, Any], tmp_path: Path) -> None:
    """The baseline: the four pairs one after the other in this process."""
    pairs = _pairs(field, tmp_path, benchmark)

    def run() -> None:
        for pair in pairs:
            subtract(str(pair["science"]), str(pair["template"])).writeFits(
                pair["output"], overwrite=True
            )

    benchmark.group = "batch 4 pairs 1024²"
    benchmark.pedantic(run, rounds=1, iterations=1)
    _check(field, pairs)
    if not benchmark.disabled:
        benchmark.extra_info["pairsPerSecond"] = len(pairs) / benchmark.stats.stats.mean


@pytest.mark.parametrize("nWorkers", [1, 2])
def test_batch_dask(benchmark: Any, field: dict[str, Any], tmp_path: Path, nWorkers: int) -> None:
    """`subtractBatch` on a local cluster of ``nWorkers`` single-threaded processes (as
    ``psfmatch batch --workers N`` starts it: `localClient`)."""
    pytest.importorskip("distributed")
    pairs = _pairs(field, tmp_path, benchmark)
    with localClient(nWorkers) as client:
        client.run(importlib.import_module, "psfmatch.batch")  # the workers' imports
        summaries = []

        def run() -> None:
            summaries.append(subtractBatch(pairs, client=client, overwrite=True))

        benchmark.group = "batch 4 pairs 1024²"
        benchmark.pedantic(run, rounds=1, iterations=1)
    assert all(s.succeeded == len(pairs) and s.ok for s in summaries)
    assert [r["status"] for r in readManifest(summaries[-1].manifest)] == ["ok"] * len(pairs)
    _check(field, pairs)
    if not benchmark.disabled:
        benchmark.extra_info["pairsPerSecond"] = len(pairs) / benchmark.stats.stats.mean
        benchmark.extra_info["meanPairSeconds"] = float(
            np.mean([r["seconds"] for r in summaries[-1].records])
        )
