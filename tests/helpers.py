# SPDX-License-Identifier: BSD-3-Clause
"""Plain helpers shared by the test modules (fixtures are in ``conftest.py``).

pytest puts this folder on ``sys.path`` (its default "prepend" import mode for a test folder
without ``__init__.py``), so a test module says ``from helpers import alConfig``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import psfmatch as pm
from psfmatch import io as pmio
from psfmatch.simulate import simulatePair

C = TypeVar("C")


def configWith(config: C, **fields: Any) -> C:
    """``config`` with ``fields`` set. A dotted name sets a field of a sub-config
    (``"selection.detectionThreshold"``); ``active`` stands for ``kernel.active``."""
    for key, value in fields.items():
        target: Any = config
        *path, last = key.split(".")
        for part in path:
            target = target.kernel.active if part == "active" else getattr(target, part)
        setattr(target, last, value)
    return config


def alConfig(**fields: Any) -> pm.PsfMatchConfigAL:
    """The default Alard–Lupton kernel config with ``fields`` set."""
    return configWith(pm.PsfMatchConfigAL(), **fields)


def simulatedFitsPair(
    directory: Path,
    shape: tuple[int, int],
    *,
    names: tuple[str, str] = ("science", "template"),
    **simulation: Any,
) -> dict[str, Any]:
    """`simulatePair` ``(shape, **simulation)`` written as two LSST-layout FITS files in
    ``directory``: ``{"dir", "sim", "science", "template"}`` (the last two `Path` objects, named
    ``names[0].fits`` and ``names[1].fits``)."""
    sim = simulatePair(shape, **simulation)
    science, template = (directory / f"{name}.fits" for name in names)
    pmio.writeMaskedImage(science, sim.science)
    pmio.writeMaskedImage(template, sim.template)
    return {"dir": directory, "sim": sim, "science": science, "template": template}
