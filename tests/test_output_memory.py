# SPDX-License-Identifier: BSD-3-Clause
"""Tests of what writing the output keeps in memory: the header statistics from one float64
buffer (their values exactly numpy's whole-array reductions), and ``psfmatch subtract``
writing with its inputs released."""

from __future__ import annotations

import gc
import weakref
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from helpers import simulatedFitsPair
from psfmatch import cli
from psfmatch.cli import subtract as cliSubtract
from psfmatch.image import Mask, MaskedImage
from psfmatch.result import SubtractionResult

RNG_SEED = 20261205


def _wholeArrayStatistics(d: MaskedImage, badBits: int) -> dict[str, float]:
    """The statistics as `SubtractionResult.statistics` computed them before it saved memory."""
    good = np.isfinite(d.image) & np.isfinite(d.variance) & (d.variance > 0)
    good &= (d.mask & badBits) == 0
    image = d.image[good].astype(np.float64)
    variance = d.variance[good].astype(np.float64)
    return {
        "X2NRM": float(np.mean(image**2 / variance)),
        "DMEAN": float(image.mean()),
        "DSIG": float(image.std()),
        "DSIGE": float(np.sqrt(variance.mean())),
    }


@pytest.mark.parametrize("shape", [(1, 1), (7, 3), (700, 301)])  # 700 rows: several blocks
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_statistics_are_numpys_whole_array_figures(rng, shape, dtype):
    image = rng.normal(3.0, 10.0, shape).astype(dtype)
    variance = rng.uniform(0.5, 2.0, shape).astype(dtype)
    image[rng.random(shape) < 0.01] = np.nan
    variance[rng.random(shape) < 0.01] = 0.0
    variance[rng.random(shape) < 0.01] = np.inf
    cr = Mask.getPlaneBitMask("CR")
    mask = np.where(rng.random(shape) < 0.05, cr, 0).astype(np.int32)
    d = MaskedImage(image, mask, variance)
    result = SimpleNamespace(difference=d, config=SimpleNamespace(diaSourceBadMaskPlanes=["CR"]))
    figures = SubtractionResult.statistics(result)
    if not np.any(np.isfinite(image) & (variance > 0) & np.isfinite(variance) & (mask == 0)):
        assert all(np.isnan(v) for v in figures.values())
        return
    # Exact: the header values may not change by a bit.
    assert figures == _wholeArrayStatistics(d, cr)


def test_subtract_writes_with_its_inputs_released(tmp_path, monkeypatch):
    pair = simulatedFitsPair(tmp_path, (192, 192), nStars=60, seed=4)
    inputs: list[Any] = []
    readInput = cliSubtract._readInput

    def recordingRead(*args: Any) -> Any:
        image = readInput(*args)
        inputs.append(weakref.ref(image))
        return image

    seen: dict[str, Any] = {}
    writeFits = SubtractionResult.writeFits

    def checkingWrite(self: SubtractionResult, *args: Any, **kwargs: Any) -> None:
        gc.collect()
        seen["inputsAlive"] = [ref() is not None for ref in inputs]
        seen["raw"] = self.rawDifference
        seen["cells"] = self.kernelCellSet
        writeFits(self, *args, **kwargs)

    monkeypatch.setattr(cliSubtract, "_readInput", recordingRead)
    monkeypatch.setattr(SubtractionResult, "writeFits", checkingWrite)
    argv = ["subtract", "-q", "--science", str(pair["science"])]
    argv += ["--template", str(pair["template"]), "--output", str(tmp_path / "d.fits")]
    assert cli.main(argv) == 0
    # Nothing holds the inputs, the difference before decorrelation or the candidates' stamps
    # (views of the inputs) while the output is built and written.
    assert seen == {"inputsAlive": [False, False], "raw": None, "cells": None}
