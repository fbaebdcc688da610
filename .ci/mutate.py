# SPDX-License-Identifier: BSD-3-Clause
"""Planted-bug (mutation) trial of one module: does a focused test subset catch each of many
realistic one-line bugs? Slow (one pytest run per mutant): run by hand, never from `.ci/run`.

Each mutant is one change at one place of the module's syntax tree:

- a comparison flipped (``<`` ↔ ``<=``, ``>`` ↔ ``>=``, ``==`` ↔ ``!=``, ``is`` ↔ ``is not``,
  ``in`` ↔ ``not in``);
- an off-by-one or changed constant (an int ``n`` → ``n + 1`` and ``n - 1``, a float ``x`` →
  ``2x`` and ``x/2``, 0.0 → 1.0), which covers the ``default=`` of every config field;
- a boolean constant negated (``True`` ↔ ``False``, which covers boolean config defaults);
- an arithmetic operator swapped (``+`` ↔ ``-``, ``*`` ↔ ``/``), a unary minus dropped;
- ``and`` ↔ ``or``, ``&`` ↔ ``|`` (numpy masks).

Strings (docstrings, messages), log calls, type annotations and ``__all__`` are left alone.
The module is mutated in a private copy of ``python/`` (so neither the work tree nor an installed
psfmatch is touched) and the tests run with ``PYTHONPATH`` set to that copy, ``-x``, under
``nice``, with a timeout of several times the unmutated run. A mutant is *killed* when pytest
fails, *survived* when it passes, *timeout* when it runs too long. A mutant that changes
nothing observable (an equivalent mutant) survives too: read the survivors before writing tests.

Example::

    python .ci/mutate.py python/psfmatch/selection.py tests/test_selection.py --max 40

prints one line per mutant and a summary; ``--json`` writes the results to a file.
"""

from __future__ import annotations

import argparse
import ast
import copy
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

_COMPARE_SWAP: dict[type, type] = {
    ast.Lt: ast.LtE,
    ast.LtE: ast.Lt,
    ast.Gt: ast.GtE,
    ast.GtE: ast.Gt,
    ast.Eq: ast.NotEq,
    ast.NotEq: ast.Eq,
    ast.Is: ast.IsNot,
    ast.IsNot: ast.Is,
    ast.In: ast.NotIn,
    ast.NotIn: ast.In,
}
_BINOP_SWAP: dict[type, type] = {
    ast.Add: ast.Sub,
    ast.Sub: ast.Add,
    ast.Mult: ast.Div,
    ast.Div: ast.Mult,
    ast.BitAnd: ast.BitOr,
    ast.BitOr: ast.BitAnd,
}
_LOG_METHODS = {"debug", "info", "warning", "error", "exception", "critical", "log"}


@dataclass
class Mutant:
    index: int
    line: int
    description: str
    status: str = "pending"
    seconds: float = 0.0


def _skipped(tree: ast.Module) -> set[int]:
    """ids of nodes not to mutate: annotations, ``__all__``, log calls, f-string parts."""
    skip: set[int] = set()

    def everything(node: ast.AST | None) -> None:
        if node is not None:
            skip.update(id(n) for n in ast.walk(node))

    for node in ast.walk(tree):
        if isinstance(node, ast.AnnAssign):
            everything(node.annotation)
        elif isinstance(node, ast.arg):
            everything(node.annotation)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            everything(node.returns)
        elif isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets
        ):
            everything(node)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in _LOG_METHODS
            and isinstance(node.func.value, ast.Name | ast.Attribute)
            and "log" in ast.unparse(node.func.value).lower()
        ):
            everything(node)
        elif isinstance(node, ast.JoinedStr):
            everything(node)
    return skip


def _sites(tree: ast.Module) -> list[tuple[int, str, object]]:
    """Every (line, description, change) of the tree; ``change(node_copy)`` applies it."""
    skip = _skipped(tree)
    sites: list[tuple[int, str, object]] = []
    for path, node in _walkPaths(tree):
        if id(node) in skip:
            continue
        line = getattr(node, "lineno", 0)
        if isinstance(node, ast.Compare):
            for k, op in enumerate(node.ops):
                new = _COMPARE_SWAP.get(type(op))
                if new is not None:
                    sites.append(
                        (line, f"{type(op).__name__} -> {new.__name__}", (path, "cmp", k, new))
                    )
        elif isinstance(node, ast.BinOp):
            new = _BINOP_SWAP.get(type(node.op))
            if new is not None:
                sites.append(
                    (line, f"{type(node.op).__name__} -> {new.__name__}", (path, "binop", new))
                )
        elif isinstance(node, ast.BoolOp):
            new = ast.Or if isinstance(node.op, ast.And) else ast.And
            sites.append(
                (line, f"{type(node.op).__name__} -> {new.__name__}", (path, "boolop", new))
            )
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            sites.append((line, "drop unary minus", (path, "unary")))
        elif isinstance(node, ast.Constant):
            value = node.value
            if isinstance(value, bool):
                sites.append((line, f"{value} -> {not value}", (path, "const", not value)))
            elif isinstance(value, int):
                for new in (value + 1, value - 1):
                    sites.append((line, f"{value} -> {new}", (path, "const", new)))
            elif isinstance(value, float):
                for new in (value * 2.0, value / 2.0) if value else (1.0,):
                    sites.append((line, f"{value!r} -> {new!r}", (path, "const", new)))
    return sites


def _walkPaths(node: ast.AST, path: tuple = ()) -> list[tuple[tuple, ast.AST]]:
    """(path, node) for every node: a path is the (field, index) steps from the root."""
    out = [(path, node)]
    for field, value in ast.iter_fields(node):
        if isinstance(value, list):
            for i, item in enumerate(value):
                if isinstance(item, ast.AST):
                    out.extend(_walkPaths(item, (*path, (field, i))))
        elif isinstance(value, ast.AST):
            out.extend(_walkPaths(value, (*path, (field, None))))
    return out


def _apply(tree: ast.Module, change: tuple) -> str:
    """The source of ``tree`` with ``change`` made (on a copy)."""
    tree = copy.deepcopy(tree)
    path, kind, *args = change
    parent: ast.AST | None = None
    step = None
    node: ast.AST = tree
    for field, index in path:
        parent, step = node, (field, index)
        node = getattr(node, field) if index is None else getattr(node, field)[index]
    if kind == "cmp":
        node.ops[args[0]] = args[1]()  # type: ignore[attr-defined]
    elif kind in ("binop", "boolop"):
        node.op = args[0]()  # type: ignore[attr-defined]
    elif kind == "const":
        node.value = args[0]  # type: ignore[attr-defined]
    elif kind == "unary":
        assert parent is not None and step is not None
        field, index = step
        operand = node.operand  # type: ignore[attr-defined]
        if index is None:
            setattr(parent, field, operand)
        else:
            getattr(parent, field)[index] = operand
    return ast.unparse(ast.fix_missing_locations(tree))


def _runTests(pythonpath: Path, tests: list[str], timeout: float) -> tuple[str, float]:
    env = dict(os.environ, PYTHONPATH=str(pythonpath), PYTHONDONTWRITEBYTECODE="1")
    command = ["nice", "-n", "10", sys.executable, "-m", "pytest", "-x", "-q"]
    command += ["-p", "no:cacheprovider", "-p", "no:randomly", *tests]
    start = time.monotonic()
    try:
        done = subprocess.run(
            command, cwd=ROOT, env=env, capture_output=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        return "timeout", time.monotonic() - start
    elapsed = time.monotonic() - start
    return ("survived" if done.returncode == 0 else "killed"), elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("module", help="the module to mutate, e.g. python/psfmatch/selection.py")
    parser.add_argument("tests", nargs="+", help="test files or node ids to run per mutant")
    parser.add_argument("--max", type=int, default=50, help="at most this many mutants")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sample of mutants")
    parser.add_argument("--lines", default="", help="only lines in this range, e.g. 120-300")
    parser.add_argument("--only", default="", help="comma-separated mutant indices to run")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--list", action="store_true", help="list the mutants and stop")
    parser.add_argument(
        "--timeout-factor",
        type=float,
        default=6.0,
        help="a mutant's run times out after this many unmutated runs plus 60 s",
    )
    options = parser.parse_args()

    module = Path(options.module).resolve()
    relative = module.relative_to(ROOT / "python")
    source = module.read_text()
    tree = ast.parse(source)
    sites = _sites(tree)
    if options.lines:
        lo, hi = (int(v) for v in options.lines.split("-"))
        sites = [s for s in sites if lo <= s[0] <= hi]
    indices = list(range(len(sites)))
    if options.only:
        indices = [int(v) for v in options.only.split(",")]
    elif len(indices) > options.max:
        indices = sorted(random.Random(options.seed).sample(indices, options.max))
    mutants = [Mutant(i, sites[i][0], sites[i][1]) for i in indices]
    print(f"{relative}: {len(sites)} mutation sites, running {len(mutants)}", flush=True)
    if options.list:
        for m in mutants:
            print(f"  #{m.index} line {m.line}: {m.description}")
        return 0

    with tempfile.TemporaryDirectory(prefix="psfmatch-mutate-") as tmp:
        copyRoot = Path(tmp) / "python"
        shutil.copytree(
            ROOT / "python", copyRoot, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
        )
        target = copyRoot / relative
        status, baseline = _runTests(copyRoot, options.tests, timeout=3600)
        if status != "survived":
            print(f"the unmutated module fails these tests ({status}): nothing to measure")
            return 1
        # Generous: the machine may be shared, and a loaded run is not a hung one.
        timeout = options.timeout_factor * baseline + 60.0
        print(f"unmutated run {baseline:.1f} s; timeout per mutant {timeout:.0f} s", flush=True)
        for m in mutants:
            target.write_text(_apply(tree, sites[m.index][2]))  # type: ignore[arg-type]
            m.status, m.seconds = _runTests(copyRoot, options.tests, timeout)
            print(f"  #{m.index} line {m.line}: {m.description}: {m.status}", flush=True)
        target.write_text(source)

    counts = {s: sum(m.status == s for m in mutants) for s in ("killed", "survived", "timeout")}
    print(f"{relative}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    for m in mutants:
        if m.status == "survived":
            print(f"  survived #{m.index} line {m.line}: {m.description}")
    if options.json:
        options.json.write_text(
            json.dumps(
                {
                    "module": str(relative),
                    "tests": options.tests,
                    "counts": counts,
                    "mutants": [asdict(m) for m in mutants],
                },
                indent=1,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
