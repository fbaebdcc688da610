# SPDX-License-Identifier: BSD-3-Clause
"""The suite stands without the real LSST test pair: the tests that read it are skipped with a
reason that names the folder (conftest.py's sharedData fixture), and the rest runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def test_shared_data_tests_skip_naming_the_folder(tmp_path: Path) -> None:
    env = {**os.environ, "PSFMATCH_SHARED_DATA": str(tmp_path)}  # an empty folder
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-rs",
            "-p",
            "no:cacheprovider",
            str(TESTS / "test_io.py"),
            "-k",
            "shared",
        ],
        env=env,
        cwd=TESTS.parent,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"the real LSST test pair is not in {tmp_path}" in done.stdout
    # Every test that reads the pair was skipped; none failed or errored.
    assert " skipped" in done.stdout and "failed" not in done.stdout
