# SPDX-License-Identifier: BSD-3-Clause
"""Fixtures shared by the test modules.

- ``rng``: a seeded generator. A module that wants its own stream sets ``RNG_SEED``; the values
  of its tests then do not depend on which other modules exist.
- ``sharedData``: the folder of the real LSST test pair (``scienceMI.fits``, ``templateMI.fits``,
  Rubin's ip_diffim test data). It is not in the repository: the project's own CI keeps it in
  a folder ``shared/data`` next to the checkout (`sharedDataDir`), and tests that read it are
  skipped, with the folder named, where it is absent. ``PSFMATCH_SHARED_DATA`` points
  elsewhere.

Plain helper functions (configs, simulated FITS pairs) are in ``helpers.py`` beside this file.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

DEFAULT_RNG_SEED = 20261203


def sharedDataDir() -> Path:
    """Where the real LSST test pair is looked for."""
    override = os.environ.get("PSFMATCH_SHARED_DATA")
    if override:
        return Path(override)
    return Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture
def rng(request: pytest.FixtureRequest) -> np.random.Generator:
    return np.random.default_rng(getattr(request.module, "RNG_SEED", DEFAULT_RNG_SEED))


@pytest.fixture(scope="session")
def sharedData() -> Path:
    """The folder holding ``scienceMI.fits`` and ``templateMI.fits``; skips the test without it."""
    folder = sharedDataDir()
    missing = [n for n in ("scienceMI.fits", "templateMI.fits") if not (folder / n).is_file()]
    if missing:
        pytest.skip(
            f"the real LSST test pair is not in {folder} (missing {', '.join(missing)}): it "
            "ships beside this repository, not in it; set PSFMATCH_SHARED_DATA to its folder"
        )
    return folder
