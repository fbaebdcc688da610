# SPDX-License-Identifier: BSD-3-Clause
"""The one-page ``report.html`` of a run: its warnings, a summary, every figure, the candidate
table and the metadata."""

from __future__ import annotations

import html
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import PsfMatchIOError
from ._common import _log, _matplotlib
from .figures import FIGURES, _prepareDirectory, _saveAll

_TIMING_KEY = re.compile(
    r"(Start|End)(Utc|CpuTime|UserTime|SystemTime|MaxResidentSetSize|MinorPageFaults|"
    r"MajorPageFaults|BlockInputs|BlockOutputs|VoluntaryContextSwitches|"
    r"InvoluntaryContextSwitches)$"
)


def _formatValue(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, list):
        return ", ".join(_formatValue(v) for v in value)
    return str(value)


def _metadataItems(metadata: Any) -> list[tuple[str, Any]]:
    if hasattr(metadata, "names"):
        return [(key, metadata[key]) for key in metadata.names()]
    items: list[tuple[str, Any]] = []

    def walk(prefix: str, node: Mapping[str, Any]) -> None:
        for key, value in node.items():
            full = f"{prefix}{key}"
            if isinstance(value, Mapping):
                walk(full + ".", value)
            else:
                items.append((full, value))

    walk("", metadata)
    return items


def _table(
    headers: list[str] | None,
    rows: list[list[str]],
    cls: str,
    rowClasses: list[str] | None = None,
) -> str:
    out = [f'<table class="{cls}">']
    if headers:
        out.append("<thead><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in headers))
        out.append("</tr></thead>")
    out.append("<tbody>")
    for i, row in enumerate(rows):
        rc = f' class="{rowClasses[i]}"' if rowClasses else ""
        out.append(f"<tr{rc}>" + "".join(row) + "</tr>")
    out.append("</tbody></table>")
    return "\n".join(out)


_STYLE = """
body { font-family: sans-serif; margin: 1.5em; max-width: 1400px; }
figure { margin: 1em 0; } figure img { max-width: 100%; border: 1px solid #ccc; }
figcaption { font-size: 0.9em; color: #333; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0; }
td, th { border: 1px solid #ccc; padding: 2px 6px; text-align: left; }
tr.GOOD td.status { color: #1a7f1a; } tr.BAD td.status { color: #c0201e; }
td.num { text-align: right; font-family: monospace; }
.warnings { border: 2px solid #c98a00; background: #fff4d6; padding: 0.3em 1em; margin: 1em 0; }
.warnings h2 { margin: 0.3em 0; font-size: 1.1em; color: #7a4f00; }
.warnings li { margin: 0.2em 0; }
p.no-warnings { color: #1a7f1a; }
"""


def writeReport(
    result: Any,
    directory: str | os.PathLike[str],
    *,
    showBadCandidates: bool = True,
    maskTransparency: float = 80,
    maxCandidates: int = 12,
    dpi: int = 100,
    overwrite: bool = False,
    title: str = "psfmatch subtraction report",
    info: Mapping[str, Any] | None = None,
) -> Path:
    """Write every figure and a one-page ``report.html`` that shows them with the run's
    metadata and the candidate table (``psfmatch subtract --plots DIR``).

    Parameters
    ----------
    result : `SubtractionResult`
        The run.
    directory : path
        Created if missing; gets ``report.html`` and the ``<name>.png`` of each figure.
    showBadCandidates, maskTransparency, maxCandidates, dpi, overwrite : optional
        As for `writeFigures`; ``overwrite`` covers ``report.html`` too.
    title : `str`, optional
        The page's title.
    info : mapping, optional
        Extra lines for the top of the page (e.g. the input files and the command line).

    Returns
    -------
    path : `pathlib.Path`
        The ``report.html`` written.

    Notes
    -----
    The page holds: the warnings logged during the run (``result.warnings``, see
    `psfmatch.subtract`) in a box at the top; ``info``; a summary (kernel sum, convolved
    image, candidates, difference statistics); each figure linked to its PNG with a caption;
    the candidate table (every column of ``result.candidates``); and every metadata key of the
    run with its value (the timing keys of `lsst.utils.timer.timeMethod` in a collapsed
    section).
    """
    _matplotlib()
    names = [f"{n}.png" for n in FIGURES] + ["report.html"]
    path = _prepareDirectory(directory, names, overwrite)
    figures = _saveAll(result, path, showBadCandidates, maskTransparency, dpi, maxCandidates)
    esc = html.escape
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{esc(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{esc(title)}</h1>",
    ]
    # The run's warnings come first: a degraded fit must not hide among the metadata rows.
    warned = list(getattr(result, "warnings", None) or [])
    if warned:
        parts.append(f'<div class="warnings" role="alert"><h2>Warnings ({len(warned)})</h2><ul>')
        parts.extend(f"<li>{esc(str(message))}</li>" for message in warned)
        parts.append("</ul></div>")
    elif hasattr(result, "warnings"):
        parts.append('<p class="no-warnings">No warnings were logged during the run.</p>')
    if info:
        rows = [
            [f"<th>{esc(str(k))}</th>", f"<td>{esc(_formatValue(v))}</td>"] for k, v in info.items()
        ]
        parts.append(_table(None, rows, "info"))

    summary: list[tuple[str, Any]] = []
    metadata = getattr(result, "metadata", None) or {}
    for label, key in (
        ("kernel sum (image centre)", "spatialKernelSum"),
        ("convolved", "convolvedExposure"),
        ("template FWHM (px)", "templatePsfSize"),
        ("science FWHM (px)", "sciencePsfSize"),
        ("candidates used", "nCandidatesGood"),
        ("candidates rejected", "nCandidatesBad"),
        ("condition number", "spatialConditionNum"),
    ):
        if key in metadata:
            summary.append((label, metadata[key]))
    statistics = getattr(result, "statistics", None)
    if callable(statistics):
        for key, value in statistics().items():
            summary.append((key, value))
    if summary:
        parts.append("<h2>Summary</h2>")
        rows = [
            [f"<th>{esc(k)}</th>", f'<td class="num">{esc(_formatValue(v))}</td>']
            for k, v in summary
        ]
        parts.append(_table(["quantity", "value"], rows, "summary"))

    parts.append("<h2>Figures</h2>")
    for name, target in figures.items():
        caption = FIGURES[name][2]
        switch = FIGURES[name][1]
        parts.append(
            f'<figure id="{esc(name)}"><a href="{esc(target.name)}">'
            f'<img src="{esc(target.name)}" alt="{esc(name)}"></a>'
            f"<figcaption><b>{esc(name)}</b> (debug switch <code>{esc(switch)}</code>): "
            f"{esc(caption)}</figcaption></figure>"
        )

    candidates = getattr(result, "candidates", None)
    if candidates is not None:
        parts.append(f"<h2>Kernel candidates ({len(candidates)})</h2>")
        columns = list(candidates.colnames)
        rows = []
        rowClasses = []
        for record in candidates:
            cells = []
            for column in columns:
                value = record[column]
                if isinstance(value, bytes):
                    value = value.decode()
                if isinstance(value, np.generic):
                    value = value.item()
                cls = (
                    "status"
                    if column == "status"
                    else ("num" if isinstance(value, int | float) else "")
                )
                cells.append(f'<td class="{cls}">{esc(_formatValue(value))}</td>')
            rows.append(cells)
            rowClasses.append(str(record["status"]) if "status" in columns else "")
        parts.append(_table(columns, rows, "candidates", rowClasses))

    items = _metadataItems(metadata)
    main = [(k, v) for k, v in items if not _TIMING_KEY.search(k)]
    timing = [(k, v) for k, v in items if _TIMING_KEY.search(k)]

    def metadataRows(pairs: list[tuple[str, Any]]) -> list[list[str]]:
        return [
            [f'<td class="key">{esc(k)}</td>', f"<td>{esc(_formatValue(v))}</td>"] for k, v in pairs
        ]

    parts.append(f"<h2>Metadata ({len(items)} keys)</h2>")
    parts.append(_table(["key", "value"], metadataRows(main), "metadata"))
    if timing:
        parts.append(f"<details><summary>Timing ({len(timing)} keys)</summary>")
        parts.append(_table(["key", "value"], metadataRows(timing), "metadata timing"))
        parts.append("</details>")
    parts.append("</body></html>")
    report = path / "report.html"
    try:
        report.write_text("\n".join(parts) + "\n", encoding="utf-8")
    except OSError as err:
        raise PsfMatchIOError(f"cannot write {str(report)!r}: {err}", str(report)) from err
    _log.info("wrote %s", report)
    return report
