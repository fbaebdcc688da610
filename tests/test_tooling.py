# SPDX-License-Identifier: BSD-3-Clause
"""The repository's tooling agrees with itself: the pre-commit hooks run the versions .ci/run
pins, and the compiled module's stubs name what the module has (.ci/check_stubs.py). Both read
files of a source checkout and are skipped without one."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"needs a source checkout ({path} is absent)")
    return path


def test_precommit_hooks_run_the_versions_ci_pins() -> None:
    ci = _need(ROOT / ".ci" / "run").read_text(encoding="utf-8")
    hooks = _need(ROOT / ".pre-commit-config.yaml").read_text(encoding="utf-8")
    mirrors = {"ruff": "astral-sh/ruff-pre-commit", "mypy": "pre-commit/mirrors-mypy"}
    for tool, mirror in mirrors.items():
        pinned = re.search(rf"\b{tool}==([0-9][^\s]*)", ci)
        rev = re.search(rf"{re.escape(mirror)}\s*\n\s*rev:\s*v([^\s]+)", hooks)
        assert pinned and rev, f"{tool}: no pin in .ci/run or no rev in .pre-commit-config.yaml"
        assert rev.group(1) == pinned.group(1), (
            f"{tool}: pre-commit has v{rev.group(1)}, .ci/run {pinned.group(1)}"
        )


def test_core_stubs_name_what_the_module_has(capsys: pytest.CaptureFixture[str]) -> None:
    script = _need(ROOT / ".ci" / "check_stubs.py")
    stub = _need(ROOT / "python" / "psfmatch" / "_core.pyi")
    spec = importlib.util.spec_from_file_location("check_stubs", script)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    status = module.main(["check_stubs", str(stub)])
    assert status == 0, capsys.readouterr().err
