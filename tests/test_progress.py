# SPDX-License-Identifier: BSD-3-Clause
"""psfmatch.progress (tqdm or a plain fallback, silent off a terminal), the cell-by-cell visit
that feeds it, and the command line's logging levels (-v, -q, --trace)."""

from __future__ import annotations

import io
import logging
import re
import sys
from typing import Any

import numpy as np
import pytest

import psfmatch
from helpers import simulatedFitsPair
from psfmatch import ImagePsfMatchConfig, ImagePsfMatchTask, progress
from psfmatch.cli import main
from psfmatch.psf_match import _visitWithProgress
from psfmatch.simulate import simulatePair
from psfmatch.spatial import BuildSingleKernelVisitor


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def _restoreSetting() -> Any:
    saved = progress.getEnabled()
    yield
    progress.setEnabled(saved)


def test_plain_fallback_without_tqdm(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tqdm", None)
    stream = _Terminal()
    with progress.progressBar(10, desc="fitting", unit="fit", file=stream, delay=0.0) as bar:
        assert not bar.isTqdm
        for _ in range(10):
            bar.update()
        bar.total = 12
        bar.update(2)
    assert bar.n == 12 and bar.total == 12
    text = stream.getvalue()
    assert text.startswith("\rfitting: 1/10 fit ( 10%)")  # drawn at once (delay 0)
    assert text.endswith("\rfitting: 12/12 fit (100%)\n")  # the final count, then a newline


def test_plain_fallback_waits_for_the_delay(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tqdm", None)
    stream = _Terminal()
    with progress.progressBar(5, desc="x", file=stream, delay=3600.0) as bar:
        bar.update(5)
    assert stream.getvalue() == ""  # short work never shows a bar


def test_silent_when_not_a_terminal() -> None:
    stream = io.StringIO()
    with progress.progressBar(10, desc="fitting", file=stream, delay=0.0) as bar:
        bar.update(10)
    assert bar.n == 10
    assert stream.getvalue() == ""


def test_set_enabled() -> None:
    stream = _Terminal()
    progress.setEnabled(False)
    with progress.progressBar(3, desc="fitting", file=stream, delay=0.0) as bar:
        bar.update(3)
    assert stream.getvalue() == ""
    progress.setEnabled(True)
    quiet = io.StringIO()  # not a terminal, but forced on
    with progress.progressBar(3, desc="fitting", file=quiet, delay=0.0) as bar:
        bar.update(3)
    assert "fitting" in quiet.getvalue() and "/3" in quiet.getvalue()
    with pytest.raises(psfmatch.InvalidInputError, match="enabled"):
        progress.setEnabled("yes")  # type: ignore[arg-type]


def test_tqdm_bar() -> None:
    pytest.importorskip("tqdm")
    stream = io.StringIO()
    with progress.progressBar(4, desc="fitting", enabled=True, file=stream, delay=0.0) as bar:
        assert bar.isTqdm
        bar.update(4)
    # tqdm draws at once (delay 0) and clears its line when done (leave=False).
    assert stream.getvalue().startswith("\rfitting:   0%|")
    assert bar.n == 4


@pytest.fixture(scope="module")
def fit() -> Any:
    sim = simulatePair((256, 256), nStars=80, seed=2)
    config = ImagePsfMatchConfig()
    config.kernel.active.spatialKernelOrder = 1
    task = ImagePsfMatchTask(config=config)
    return task, task._fit(sim.template, sim.science, None, None, None)


def test_visit_cell_by_cell_is_the_cell_sets_visit(fit: Any) -> None:
    """The progress path visits exactly the candidates the cell set's own visit does, and
    the fits agree bit for bit."""
    task, f = fit
    kernelSize = f.basisList[0].getWidth()
    nStarPerCell = int(task.kConfig.nStarPerCell)
    reference = task._buildCellSet(f.target, f.reference, f.sources, kernelSize)
    candidate = task._buildCellSet(f.target, f.reference, f.sources, kernelSize)
    control = psfmatch.makeKernelControl(task.kConfig)
    v1 = BuildSingleKernelVisitor(f.basisList, control)
    v2 = BuildSingleKernelVisitor(f.basisList, control)
    reference.visitCandidates(v1, nStarPerCell, ignoreExceptions=True)
    with progress.progressBar(0, desc="test", enabled=False) as bar:
        _visitWithProgress(candidate, v2, nStarPerCell, bar)
    assert v2.getNProcessed() == v1.getNProcessed() > 0
    assert v2.getNRejected() == v1.getNRejected()
    assert bar.n == bar.total == v1.getNProcessed()  # every visit counted
    recent = psfmatch._core.KernelCandidate.RECENT
    pairs = list(
        zip(
            reference.getAllCandidates(ignoreBad=False),
            candidate.getAllCandidates(ignoreBad=False),
            strict=True,
        )
    )
    for a, b in pairs:
        assert (a.getXCenter(), a.getYCenter()) == (b.getXCenter(), b.getYCenter())
        assert a.getStatus() == b.getStatus()
        assert a.isInitialized() == b.isInitialized()
        if a.isInitialized():
            np.testing.assert_array_equal(
                a.getKernelSolution(recent).getSolution(), b.getKernelSolution(recent).getSolution()
            )


def test_solve_draws_a_bar_when_asked(fit: Any, capsys: pytest.CaptureFixture[str]) -> None:
    task, f = fit
    kernelSize = f.basisList[0].getWidth()
    cells = task._buildCellSet(f.target, f.reference, f.sources, kernelSize)
    progress.setEnabled(True)
    # delay: a bar appears only after a second of work; this fit is shorter on most machines,
    # so the visible output is not asserted, only that the forced bar does not disturb the fit.
    _, kernel, _ = task._solve(cells, f.basisList)
    progress.setEnabled(False)
    cells2 = task._buildCellSet(f.target, f.reference, f.sources, kernelSize)
    _, kernel2, _ = task._solve(cells2, f.basisList)
    np.testing.assert_array_equal(
        np.asarray(kernel.getSpatialParameters()), np.asarray(kernel2.getSpatialParameters())
    )


# --------------------------------------------------------------------------------------------
# the command line's logging


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    directory = tmp_path_factory.mktemp("pair")
    files = simulatedFitsPair(directory, (192, 192), names=("s", "t"), nStars=50, seed=1)
    return {"dir": directory, "science": str(files["science"]), "template": str(files["template"])}


def _subtract(files: dict[str, Any], name: str, *extra: str) -> int:
    return main(
        ["subtract", "--science", files["science"], "--template", files["template"]]
        + ["--output", str(files["dir"] / name), "-ko", "0", *extra]
    )


def test_trace_levels(files: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    levels = {i: logging.getLogger(f"TRACE{i}.psfmatch").level for i in range(6)}
    assert _subtract(files, "a.fits", "-q", "--trace", "psfmatch.imagePsfMatch=1") == 0
    err = capsys.readouterr().err
    # TRACE1 messages of _solve are shown, TRACE3 ones (the spatial parameters) are not.
    assert "Building single kernels" in err
    assert "Spatial kernel parameters" not in err
    assert _subtract(files, "b.fits", "-q", "--trace", "3") == 0
    assert "Spatial kernel parameters" in capsys.readouterr().err
    # The loggers are restored afterwards.
    assert {i: logging.getLogger(f"TRACE{i}.psfmatch").level for i in range(6)} == levels
    assert logging.getLogger("TRACE1.psfmatch.imagePsfMatch").level == logging.NOTSET


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("x", "expected \\[LOGGER=\\]N"),
        ("9", "must be 0 to 5"),
        ("lsst.afw=2", "must be psfmatch or one below it"),
    ],
)
def test_trace_usage_errors(
    files: dict[str, Any], capsys: pytest.CaptureFixture[str], value: str, message: str
) -> None:
    assert _subtract(files, "c.fits", "--trace", value) == 2
    err = capsys.readouterr().err
    assert err.startswith("psfmatch: error: --trace")
    assert re.search(message, err)


def test_verbosity_levels(files: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    assert _subtract(files, "v.fits", "-v") == 0
    out, err = capsys.readouterr()
    assert "INFO psfmatch.imagePsfMatch: Final spatial kernel sum" in err
    assert "DEBUG" not in err
    assert "kernel sum" in out  # the summary
    # A third-order kernel (10 terms) on this small field's 13 stars is poorly constrained:
    # -q shows the warning, -qq does not. (Second order, 6 terms, was until the kernel
    # sources were detected at a matched-filter S/N, which finds more of them.)
    assert _subtract(files, "q.fits", "-q", "-ko", "3") == 0
    out, err = capsys.readouterr()
    assert out == ""
    assert "psfmatch: warning: Spatial kernel model poorly constrained" in err
    assert _subtract(files, "qq.fits", "-qq", "-ko", "3") == 0
    assert capsys.readouterr() == ("", "")
    assert progress.getEnabled() is None  # -q turned the bar off for the command only
