# SPDX-License-Identifier: BSD-3-Clause
"""The documentation site's sources hold to the code (docs/, built by Sphinx in .ci/run).

- every public name (``psfmatch.__all__``) has an entry in the API reference's autosummary
  lists (docs/api/index.rst), from which Sphinx renders its page;
- the HOTPANTS guide explains exactly the options the command line refuses, names only config
  fields that exist, and the header keys it lists are in a real result's header in both forms;
- every gallery example checks its own result.

These read the sources as text and need no Sphinx; the build itself (warnings as errors) is
what checks that each entry renders.
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path
from typing import Any

import pytest

import psfmatch

DOCS = Path(__file__).resolve().parents[1] / "docs"


def _autosummaryEntries(text: str) -> list[str]:
    """The names listed under every ``.. autosummary::`` directive of a reST text."""
    entries: list[str] = []
    inside = False
    for line in text.splitlines():
        if line.startswith(".. autosummary::"):
            inside = True
            continue
        if inside:
            if not line.strip() or line.lstrip().startswith(":"):
                continue
            if line.startswith("   "):
                entries.append(line.strip())
            else:
                inside = False
    return entries


def _guide() -> Any:
    sys.path.insert(0, str(DOCS / "_ext"))
    try:
        import hotpants_guide
    finally:
        sys.path.pop(0)
    return hotpants_guide


def testEveryPublicNameIsInTheApiReference() -> None:
    entries = _autosummaryEntries((DOCS / "api" / "index.rst").read_text(encoding="utf-8"))
    missing = sorted(set(psfmatch.__all__) - set(entries))
    unknown = sorted(set(entries) - set(psfmatch.__all__))
    assert not missing, f"public names without an API entry in docs/api/index.rst: {missing}"
    assert not unknown, f"API entries that are not in psfmatch.__all__: {unknown}"
    assert len(entries) == len(set(entries)), "a name is listed twice"


def testAutosummaryParserSeesEntries() -> None:
    """The parser above finds names (so the test above cannot pass on an empty list)."""
    text = ".. autosummary::\n   :toctree: x\n\n   subtract\n   Mask\n\nText\n"
    assert _autosummaryEntries(text) == ["subtract", "Mask"]


def testRefusedHotpantsOptionsAreExplained() -> None:
    from psfmatch.cli.hotpants import _ALIASES, _UNSUPPORTED

    guide = _guide()
    assert set(guide.REFUSED) == set(_UNSUPPORTED)
    assert not set(guide.REFUSED) & set(_ALIASES)
    for flag, (what, why) in guide.REFUSED.items():
        assert what.strip() and why.strip(), flag


def testGuideNamesExistingConfigFields() -> None:
    """Every ``kernel.active.X`` or ``selection.X`` the guide names is a real config field."""
    guide = _guide()
    config = psfmatch.ImagePsfMatchConfig()
    text = " ".join(why for _, why in guide.REFUSED.values())
    names = set(re.findall(r"(?:kernel\.active|selection)\.\w+", text))
    names |= {f"kernel.active.{n}" for n in re.findall(r"`(\w+)`", text) if n[0].islower()}
    assert "kernel.active.nStarPerCell" in names
    missing = []
    for dotted in sorted(names):
        parent, _, field = dotted.rpartition(".")
        obj = config.kernel.active if parent == "kernel.active" else config.selection
        known = field in type(obj)._fields or field in type(config)._fields
        if not known and parent == "kernel.active" and not re.fullmatch(r"[a-z]+[A-Z]\w*", field):
            continue  # a plain word in backticks (`sizeCellY` is a field; `and` is not)
        if not known:
            missing.append(dotted)
    assert not missing, f"the HOTPANTS guide names config fields that do not exist: {missing}"


@pytest.fixture(scope="module")
def smallResult() -> Any:
    from psfmatch.simulate import simulatePair

    sim = simulatePair((256, 256), nStars=60, seed=0)
    return psfmatch.subtract(sim.science, sim.template)


def testHeaderKeysOfTheGuideAreWritten(smallResult: Any) -> None:
    header = smallResult.header()
    for keys, _ in _guide().HEADER_KEYS:
        for key in keys:
            assert key in header, key
            assert f"{key}00" in header, f"{key}00"
            assert header[key] == header[f"{key}00"], key


@pytest.mark.parametrize(
    "path", sorted((DOCS / "examples").glob("plot_*.py")), ids=lambda p: p.name
)
def testGalleryExampleChecksItsResult(path: Path) -> None:
    """Each gallery example asserts something about its result, so that a broken one fails
    the docs build rather than drawing a wrong figure."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    asserts = [node for node in ast.walk(tree) if isinstance(node, ast.Assert)]
    assert asserts, f"{path.name} checks nothing"


def testGalleryHasTheIssueExamples() -> None:
    names = {p.name for p in (DOCS / "examples").glob("plot_*.py")}
    assert {
        "plot_1_demo_subtraction.py",
        "plot_2_kernel_variation.py",
        "plot_3_decorrelation.py",
        "plot_4_score_image.py",
        "plot_5_batch_dask.py",
    } <= names
