# SPDX-License-Identifier: BSD-3-Clause
"""psfmatch's own Sphinx directives: reference tables generated from the code at build time,
so that they cannot drift from it.

``.. psfmatch-config:: psfmatch.ImagePsfMatchConfig psfmatch.DetectAndMeasureConfig ...``
    One section per `lsst.pex.config` Config class reachable from the ones named (through
    ``ConfigField``, ``ConfigChoiceField`` and ``ConfigurableField``), each with a table of its
    fields read from the field objects themselves: name, type, default (the value of a freshly
    made config, so ``setDefaults`` counts), allowed values or range, and doc. A nested config
    links to its own section and lists the values its parent sets differently from that
    config's own defaults. A subclass of another documented config lists only what it adds or
    changes.

``.. psfmatch-cli:: subtract``
    The options of a ``psfmatch`` sub-command, one table per argument group, read from the
    command line's own parser (`psfmatch.cli.parser._buildParser`).

``.. psfmatch-hotpants:: mapped | refused | outputs | header``
    The HOTPANTS migration tables: the options ``psfmatch subtract`` takes (from
    `psfmatch.cli.hotpants._ALIASES` and the parser's help), those it refuses
    (`psfmatch.cli.hotpants._UNSUPPORTED`, with the reasons in ``hotpants_guide.py``; the two
    must name the same options or the build fails), the outputs and the header keys.
"""

from __future__ import annotations

import argparse
import importlib
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import hotpants_guide
import lsst.pex.config as pexConfig
from docutils import nodes
from docutils.parsers.rst import directives
from sphinx.errors import ExtensionError
from sphinx.util.docutils import SphinxDirective

# --- small docutils helpers -----------------------------------------------------------------


def _literal(text: str) -> nodes.literal:
    return nodes.literal(text, text)


def _para(*children: nodes.Node | str) -> nodes.paragraph:
    para = nodes.paragraph()
    for child in children:
        para += nodes.Text(child) if isinstance(child, str) else child
    return para


def _inlineCode(text: str) -> list[nodes.Node]:
    """``text`` with its single-backtick spans as literals (the guide's data is written so)."""
    out: list[nodes.Node] = []
    for i, part in enumerate(text.split("`")):
        if part:
            out.append(_literal(part) if i % 2 else nodes.Text(part))
    return out


def _table(
    header: Sequence[str], rows: Iterable[Sequence[Any]], widths: Sequence[int], classes: str
) -> nodes.table:
    """A docutils table; a cell is a string, a node or a list of nodes."""
    # "colwidths-given": the HTML writer then writes the widths below (else every column is
    # as wide as the others, whatever its content).
    table = nodes.table(classes=["psfmatch-table", classes, "colwidths-given"])
    group = nodes.tgroup(cols=len(header))
    table += group
    for width in widths:
        group += nodes.colspec(colwidth=width)
    head = nodes.thead()
    group += head
    row = nodes.row()
    for title in header:
        row += nodes.entry("", _para(title))
    head += row
    body = nodes.tbody()
    group += body
    for cells in rows:
        row = nodes.row()
        for cell in cells:
            entry = nodes.entry()
            if isinstance(cell, str):
                entry += _para(cell)
            elif isinstance(cell, nodes.Node):
                entry += (
                    cell
                    if isinstance(cell, nodes.Element) and not isinstance(cell, nodes.Inline)
                    else _para(cell)
                )
            else:
                entry += _para(*cell)
            row += entry
        body += row
    return table


def _importObject(path: str) -> Any:
    module, _, name = path.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as err:
        raise ExtensionError(f"psfmatch_docs: cannot import {path!r}: {err}") from err


# --- the config reference -------------------------------------------------------------------


def _configId(cls: type) -> str:
    return f"config-{cls.__name__.lower()}"


def _publicPath(cls: type) -> str:
    """``psfmatch.Name`` when the package exports the class under that name."""
    import psfmatch

    if cls.__name__ in psfmatch.__all__ and getattr(psfmatch, cls.__name__) is cls:
        return f"psfmatch.{cls.__name__}"
    return f"{cls.__module__}.{cls.__name__}"


def _nestedClasses(field: pexConfig.Field) -> list[type]:
    if isinstance(field, pexConfig.ConfigField):
        return [field.dtype]
    if isinstance(field, pexConfig.ConfigChoiceField):
        return list(field.typemap.values())
    if isinstance(field, pexConfig.ConfigurableField):
        return [field.ConfigClass]
    return []


def _reachable(roots: Sequence[type]) -> list[type]:
    """Every Config class reachable from ``roots``, in the order first met (depth first)."""
    seen: list[type] = []

    def visit(cls: type) -> None:
        if cls in seen:
            return
        seen.append(cls)
        for field in cls._fields.values():
            for nested in _nestedClasses(field):
                visit(nested)

    for root in roots:
        visit(root)
    return seen


def _typeName(tp: Any) -> str:
    if tp is None:
        return "?"
    return getattr(tp, "__name__", str(tp))


def _formatValue(value: Any) -> str:
    if isinstance(value, float) and math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if isinstance(value, str):
        return repr(value)
    # pex_config's List and Dict are collections.abc types, not list and dict.
    if isinstance(value, Mapping):
        return repr(dict(value))
    if isinstance(value, Sequence):
        return repr(list(value))
    return repr(value)


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for key, value in data.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: data}


def _overrides(parentValue: Any, nestedCls: type) -> list[str]:
    """``name = value`` for each field where ``parentValue`` (a nested config as its parent
    makes it) differs from a fresh ``nestedCls()``."""
    own = _flatten(nestedCls().toDict())
    given = _flatten(parentValue.toDict())
    return [f"{key} = {_formatValue(given[key])}" for key in given if own.get(key) != given[key]]


class _ConfigTables:
    """The rows of one Config class's table."""

    def __init__(self, cls: type, documented: Sequence[type]) -> None:
        self.cls = cls
        self.documented = documented
        self.instance = cls()
        base = next((b for b in cls.__mro__[1:] if b in documented), None)
        self.base = base
        # Every field's value, nested configs as dicts (toDict), to compare with the base's.
        self.values = self.instance.toDict()
        self.baseValues = base().toDict() if base is not None else {}

    def _link(self, target: type) -> nodes.Node:
        ref = nodes.reference("", "", internal=True, refid=_configId(target))
        ref += _literal(target.__name__)
        return ref

    def _isInherited(self, name: str, field: Any) -> bool:
        if self.base is None or name not in self.base._fields:
            return False
        baseField = self.base._fields[name]
        if type(baseField) is not type(field) or baseField.doc != field.doc:
            return False
        if _nestedClasses(field) != _nestedClasses(baseField):
            return False
        return bool(self.values[name] == self.baseValues[name])

    def rows(self) -> tuple[list[list[Any]], int]:
        rows: list[list[Any]] = []
        inherited = 0
        for name, field in self.cls._fields.items():
            if self._isInherited(name, field):
                inherited += 1
                continue
            rows.append(self._row(name, field))
        return rows, inherited

    def _row(self, name: str, field: Any) -> list[Any]:
        value = getattr(self.instance, name) if not _nestedClasses(field) else None
        typeCell: list[nodes.Node] = []
        default: list[nodes.Node] = []
        allowed: list[nodes.Node] = []
        if isinstance(field, pexConfig.ConfigChoiceField):
            typeCell = [nodes.Text("choice of configs")]
            choice = getattr(self.instance, name)
            selected = choice.names if field.multi else choice.name
            default = [_literal(repr(selected))]
            for key, target in field.typemap.items():
                allowed += [_literal(repr(key)), nodes.Text(": "), self._link(target)]
                changed = _overrides(choice[key], target)
                if changed:
                    allowed.append(nodes.Text(", with "))
                    allowed += _joined([_literal(c) for c in changed])
                allowed.append(nodes.Text("; "))
            allowed = allowed[:-1]
        elif isinstance(field, (pexConfig.ConfigField, pexConfig.ConfigurableField)):
            target = _nestedClasses(field)[0]
            if isinstance(field, pexConfig.ConfigurableField):
                task = field.target
                typeCell = [nodes.Text("subtask "), _literal(_typeName(task))]
                current = getattr(self.instance, name).value
            else:
                typeCell = [nodes.Text("config")]
                current = getattr(self.instance, name)
            default = [self._link(target)]
            changed = _overrides(current, target)
            if changed:
                allowed = [nodes.Text("sets ")] + _joined([_literal(c) for c in changed])
        else:
            typeCell = [_literal(_typeName(field.dtype))]
            if isinstance(field, pexConfig.ListField):
                typeCell = [nodes.Text("list of "), _literal(_typeName(field.itemtype))]
            elif isinstance(field, pexConfig.DictField):
                typeCell = [
                    nodes.Text("dict "),
                    _literal(f"{_typeName(field.keytype)}: {_typeName(field.itemtype)}"),
                ]
            default = [_literal(_formatValue(value))]
            if isinstance(field, pexConfig.ChoiceField):
                for key, doc in field.allowed.items():
                    allowed += [_literal(repr(key))]
                    if doc:
                        allowed.append(nodes.Text(f" ({doc})"))
                    allowed.append(nodes.Text("; "))
                allowed = allowed[:-1]
            elif isinstance(field, pexConfig.RangeField):
                allowed = [_literal(field.rangeString)]
        if getattr(field, "optional", False):
            typeCell.append(nodes.Text(" (optional: may be None)"))
        nameCell = _literal(name)
        return [nameCell, typeCell, default, allowed or "", field.doc or ""]


def _joined(items: Sequence[nodes.Node]) -> list[nodes.Node]:
    out: list[nodes.Node] = []
    for i, item in enumerate(items):
        if i:
            out.append(nodes.Text(", "))
        out.append(item)
    return out


class ConfigDirective(SphinxDirective):
    """``.. psfmatch-config:: dotted.Class ...``: the reference of these configs and every
    config they contain."""

    required_arguments = 1
    optional_arguments = 100
    has_content = False

    def run(self) -> list[nodes.Node]:
        roots = [_importObject(path) for path in self.arguments]
        for root in roots:
            if not (isinstance(root, type) and issubclass(root, pexConfig.Config)):
                raise ExtensionError(f"psfmatch-config: {root!r} is not an lsst.pex.config Config")
        classes = _reachable(roots)
        out: list[nodes.Node] = []
        for cls in classes:
            section = nodes.section(ids=[_configId(cls)])
            section += nodes.title(text=cls.__name__)
            summary = (cls.__doc__ or "").strip().split("\n\n")[0].replace("\n", " ")
            section += _para(_literal(_publicPath(cls)), " — ", *_inlineCode(summary))
            tables = _ConfigTables(cls, classes)
            rows, inherited = tables.rows()
            if tables.base is not None:
                ref = nodes.reference("", "", internal=True, refid=_configId(tables.base))
                ref += _literal(tables.base.__name__)
                section += _para(
                    "A subclass of ",
                    ref,
                    f": its {inherited} other fields are the same, with the same defaults; "
                    f"the {len(rows)} below are new or set differently here.",
                )
            if rows:
                section += _table(
                    ["field", "type", "default", "allowed values, nested settings", "doc"],
                    rows,
                    [20, 9, 11, 22, 38],
                    "psfmatch-config-table",
                )
            out.append(section)
        return out


# --- the command line -----------------------------------------------------------------------


def _subParser(command: str) -> argparse.ArgumentParser:
    from psfmatch.cli.parser import _buildParser

    parser = _buildParser()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            if command in action.choices:
                return action.choices[command]
    raise ExtensionError(f"psfmatch-cli: no sub-command {command!r}")


def _helpText(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    formatter = parser._get_formatter()
    return formatter._expand_help(action) if action.help else ""


def _optionCell(action: argparse.Action) -> list[nodes.Node]:
    if not action.option_strings:
        return [_literal(action.metavar or action.dest)]
    value = ""
    if action.nargs != 0:
        if action.choices is not None and action.metavar is None:
            value = "{" + ",".join(str(c) for c in action.choices) + "}"
        else:
            value = str(action.metavar or action.dest.upper())
        if action.nargs in ("*", "+"):
            value += " ..."
        elif action.nargs == "?":
            value = f"[{value}]"
    cells = [_literal(f"{flag} {value}".rstrip()) for flag in action.option_strings]
    return _joined(cells)


class CliDirective(SphinxDirective):
    """``.. psfmatch-cli:: subtract``: the options of a sub-command, by argument group."""

    required_arguments = 1
    has_content = False

    def run(self) -> list[nodes.Node]:
        parser = _subParser(self.arguments[0])
        out: list[nodes.Node] = []
        for group in parser._action_groups:
            actions = [a for a in group._group_actions if a.help != argparse.SUPPRESS]
            actions = [a for a in actions if "-h" not in a.option_strings]
            if not actions:
                continue
            rows = [[_optionCell(a), _helpText(parser, a)] for a in actions]
            out.append(nodes.rubric(text=f"{group.title}"))
            out.append(_table(["option", "what it does"], rows, [30, 70], "psfmatch-cli-table"))
        return out


class HotpantsDirective(SphinxDirective):
    """``.. psfmatch-hotpants:: mapped|refused|outputs|header``."""

    required_arguments = 1
    has_content = False
    option_spec = {"class": directives.class_option}

    def run(self) -> list[nodes.Node]:
        from psfmatch.cli import hotpants

        which = self.arguments[0]
        if which == "mapped":
            parser = _subParser("subtract")
            byFlag = {flag: a for a in parser._actions for flag in a.option_strings}
            rows = []
            for flag, target in hotpants._ALIASES.items():
                action = byFlag.get(flag)
                if action is None:
                    raise ExtensionError(f"psfmatch-hotpants: the parser has no {flag}")
                psfmatchCell: list[nodes.Node] = [_literal(target)]
                if flag in hotpants._OWN_VALUES:
                    psfmatchCell = [_literal(target)]
                rows.append([_literal(flag), psfmatchCell, _helpText(parser, action)])
            return [
                _table(
                    ["HOTPANTS", "psfmatch", "what it does (the parser's help)"],
                    rows,
                    [12, 28, 60],
                    "psfmatch-hotpants-table",
                )
            ]
        if which == "refused":
            code = set(hotpants._UNSUPPORTED)
            guide = set(hotpants_guide.REFUSED)
            if code != guide:
                raise ExtensionError(
                    "psfmatch-hotpants: the guide's refused options differ from "
                    "psfmatch.cli.hotpants._UNSUPPORTED: only in the code "
                    f"{sorted(code - guide)}, only in the guide {sorted(guide - code)}"
                )
            rows = [
                [_literal(flag), _inlineCode(what), _inlineCode(why)]
                for flag, (what, why) in hotpants_guide.REFUSED.items()
            ]
            return [
                _table(
                    ["HOTPANTS", "what it does there", "why psfmatch refuses it; what to do"],
                    rows,
                    [10, 35, 55],
                    "psfmatch-hotpants-table",
                )
            ]
        if which == "outputs":
            rows = [[_inlineCode(h), _inlineCode(p)] for h, p in hotpants_guide.OUTPUTS]
            return [_table(["HOTPANTS", "psfmatch"], rows, [35, 65], "psfmatch-hotpants-table")]
        if which == "header":
            rows = []
            for keys, meaning in hotpants_guide.HEADER_KEYS:
                rows.append(
                    [
                        _joined([_literal(k) for k in keys]),
                        _joined([_literal(f"{k}00") for k in keys]),
                        meaning,
                    ]
                )
            return [
                _table(
                    ["psfmatch key", "HOTPANTS' form (region 00)", "value"],
                    rows,
                    [22, 28, 50],
                    "psfmatch-hotpants-table",
                )
            ]
        raise ExtensionError(f"psfmatch-hotpants: unknown table {which!r}")


def setup(app: Any) -> dict[str, Any]:
    app.add_directive("psfmatch-config", ConfigDirective)
    app.add_directive("psfmatch-cli", CliDirective)
    app.add_directive("psfmatch-hotpants", HotpantsDirective)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
