# SPDX-License-Identifier: BSD-3-Clause
"""Collection and shared fixtures of the psfmatch benchmarks.

The benchmark modules are named ``bench_*.py``; the hook below makes pytest collect them from
this directory while the root configuration (``filterwarnings = error``, ``--strict-markers``)
stays in force. Each benchmark asserts that its answer is right, and a numpy or scipy
reference of the same work sits in the same ``group``, so one run gives the ratio.

Smoke mode (``--benchmark-disable``, how CI runs them) executes every benchmark once. The
4096² cases run there too unless ``PSFMATCH_BENCH_SMOKE_SMALL=1`` skips them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import psfmatch as pm
from benchutils import fitSpatialParameters


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Module | None:
    """Collect ``bench_*.py`` here (pytest's default pattern is ``test_*.py``)."""
    if file_path.suffix != ".py" or not file_path.name.startswith("bench_"):
        return None
    if parent.session.isinitpath(file_path):
        return None  # named on the command line: pytest's own collector takes it
    return pytest.Module.from_parent(parent, path=file_path)


@pytest.fixture(scope="session")
def basis() -> list[pm.FixedKernel]:
    """The default Alard–Lupton basis: 27 separable 21×21 kernels."""
    kernels = list(pm.makeKernelBasisList(pm.PsfMatchConfigAL()))
    assert len(kernels) == 27 and all(k.isSeparable() for k in kernels)
    assert kernels[0].getImage().shape == (21, 21)
    return kernels


@pytest.fixture(scope="session")
def spatialParameters(basis: list[pm.FixedKernel]) -> np.ndarray:
    """(27, 6) order-2 Chebyshev parameters of a realistic matching kernel (see benchutils)."""
    return fitSpatialParameters(basis)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Print the CLI, end-to-end stage, memory and alignment tables after pytest-benchmark's
    own."""
    import bench_align
    import bench_cli
    import bench_end_to_end
    import bench_memory

    for module in (bench_cli, bench_end_to_end, bench_memory, bench_align):
        table = module.pytest_terminal_summary_table()
        if table:
            terminalreporter.write_line("")
            for line in table.splitlines():
                terminalreporter.write_line(line)
