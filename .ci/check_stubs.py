# SPDX-License-Identifier: BSD-3-Clause
"""Check that python/psfmatch/_core.pyi names exactly what the compiled module has.

The stubs are checked by hand (numpy array types, tuples), so they cannot be compared with a fresh
pybind11-stubgen run line by line. This compares names instead: every function and class of
psfmatch._core, and every attribute each class defines itself, must have a stub, and every stub
must name something the module has. Signatures are not compared (pybind11 functions do not
expose them to introspection); mypy checks the stub's own consistency.

Usage: python .ci/check_stubs.py [STUB]  (default python/psfmatch/_core.pyi), with the built
psfmatch importable. Exits 1 and lists the differences if there are any.
"""

from __future__ import annotations

import ast
import importlib
import sys
from pathlib import Path

# What pybind11 puts on every class or module that a stub does not declare.
_BOOKKEEPING = {
    "__doc__",
    "__module__",
    "__dict__",
    "__weakref__",
    "__entries",
    "_pybind11_conduit_v1_",
    "__file__",
    "__loader__",
    "__name__",
    "__package__",
    "__spec__",
    "__path__",
}


def _stubNames(body: list[ast.stmt], prefix: str, out: dict[str, set[str]]) -> None:
    """The names each scope of the stub defines, keyed by dotted scope ("" is the module)."""
    names = out.setdefault(prefix, set())
    for node in body:
        if isinstance(node, ast.ClassDef):
            names.add(node.name)
            _stubNames(node.body, f"{prefix}{node.name}.", out)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            names.add(node.name)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))


def _isEnum(cls: type) -> bool:
    return "__members__" in vars(cls)


def _enumDunder(name: str) -> bool:
    """A dunder of pybind11's enum machinery (they vary with the pybind11 release)."""
    return name.startswith("__") and name != "__members__"


def _runtimeNames(obj: object, prefix: str, out: dict[str, set[str]]) -> None:
    """The names the module and each of its classes define themselves (not inherited)."""
    names = out.setdefault(prefix, set())
    for name, value in vars(obj).items():
        if name in _BOOKKEEPING:
            continue
        # A class without a constructor keeps pybind11's slot __init__ (it raises "No
        # constructor defined"): nothing to declare.
        if name == "__init__" and type(value).__name__ == "wrapper_descriptor":
            continue
        # The members, name and value are what an enum's stub must get right.
        if isinstance(obj, type) and _isEnum(obj) and _enumDunder(name):
            continue
        names.add(name)
        if isinstance(value, type) and value.__module__ == "psfmatch._core":
            # described where it is defined, not where another scope refers to it
            if value.__qualname__ == f"{prefix}{name}":
                _runtimeNames(value, f"{prefix}{name}.", out)


def main(argv: list[str]) -> int:
    stubPath = Path(argv[1] if len(argv) > 1 else "python/psfmatch/_core.pyi")
    module = importlib.import_module("psfmatch._core")
    stub: dict[str, set[str]] = {}
    _stubNames(ast.parse(stubPath.read_text(encoding="utf-8")).body, "", stub)
    runtime: dict[str, set[str]] = {}
    _runtimeNames(module, "", runtime)
    for scope in stub:
        # the enum dunders are left out on both sides (see _runtimeNames)
        obj: object = module
        for part in scope.rstrip(".").split(".") if scope else []:
            obj = getattr(obj, part, None)
        if isinstance(obj, type) and _isEnum(obj):
            stub[scope] = {n for n in stub[scope] if not _enumDunder(n)}

    problems = []
    for scope in sorted(set(stub) | set(runtime)):
        where = f"psfmatch._core.{scope}" if scope else "psfmatch._core"
        for name in sorted(runtime.get(scope, set()) - stub.get(scope, set())):
            problems.append(f"  {where.rstrip('.')}: {name} is in the module but has no stub")
        for name in sorted(stub.get(scope, set()) - runtime.get(scope, set())):
            problems.append(f"  {where.rstrip('.')}: {name} has a stub but is not in the module")
    if problems:
        print(
            f"check_stubs: {stubPath} does not match the compiled module "
            f"({module.__file__}):\n" + "\n".join(problems) + "\n"
            "Regenerate with pybind11-stubgen (the command is at the top of the stub), keep the "
            "hand corrections listed there, and check the result.",
            file=sys.stderr,
        )
        return 1
    print(f"check_stubs: {stubPath} names what psfmatch._core has ({len(runtime)} scopes)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
