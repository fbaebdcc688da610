# SPDX-License-Identifier: BSD-3-Clause
"""The work of one pair on a worker: `_runPair` subtracts it and writes its outputs, or skips
it when they are complete psfmatch outputs already (`_isComplete`)."""

from __future__ import annotations

import datetime
import math
import os
import re
import time
import traceback
from typing import Any

from ..errors import OutputExistsError
from .cache import _template
from .pairs import BatchPair

_FITS_BLOCK = 2880
_PSFMATCH_CARD = re.compile(r"^HIERARCH\s+psfmatch\.__version__\s*=", re.IGNORECASE)


def _cardValue(card: str) -> str:
    """The value of a ``KEY     = value / comment`` card, unquoted if a string."""
    text = card[10:].strip()
    if text.startswith("'"):
        return text[1:].split("'", 1)[0].strip()
    return text.split("/", 1)[0].strip()


def _fitsLayout(path: str) -> list[tuple[str, dict[str, str], list[str]]] | None:
    """Each HDU's (EXTNAME, cards, HIERARCH cards), walking the headers and skipping the data
    by their declared sizes; None unless the last HDU ends exactly at the end of the file.

    Plain reads, no astropy: fast, and no warnings machinery (not thread-safe) on a worker.
    """
    size = os.path.getsize(path)
    hdus: list[tuple[str, dict[str, str], list[str]]] = []
    offset = 0
    with open(path, "rb") as stream:
        while offset < size:
            cards: dict[str, str] = {}
            hierarch: list[str] = []
            ended = False
            while not ended:
                block = stream.read(_FITS_BLOCK)
                if len(block) < _FITS_BLOCK:
                    return None
                offset += _FITS_BLOCK
                for start in range(0, _FITS_BLOCK, 80):
                    card = block[start : start + 80].decode("ascii", errors="replace")
                    key = card[:8].strip().upper()
                    if key == "END":
                        ended = True
                        break
                    if key == "HIERARCH":
                        hierarch.append(card)
                    elif card[8:10] == "= " and key not in cards:
                        cards[key] = _cardValue(card)
            if ("SIMPLE" if not hdus else "XTENSION") not in cards:
                return None
            naxis = int(cards["NAXIS"])
            count = math.prod(int(cards[f"NAXIS{i}"]) for i in range(1, naxis + 1))
            nbytes = 0
            if naxis:
                nbytes = abs(int(cards["BITPIX"])) // 8 * int(cards.get("GCOUNT", "1"))
                nbytes *= int(cards.get("PCOUNT", "0")) + count
            offset += -(-nbytes // _FITS_BLOCK) * _FITS_BLOCK
            stream.seek(offset)
            hdus.append((cards.get("EXTNAME", "PRIMARY" if not hdus else ""), cards, hierarch))
    return hdus if offset == size else None


def _isComplete(path: str) -> bool:
    """Whether ``path`` is a whole psfmatch output: the IMAGE, MASK and VARIANCE extensions
    after a primary HDU with ``KSUM`` and psfmatch's metadata cards, and a file size that ends
    exactly with the last HDU. (Writes are atomic, so this tells our files from anything else
    at that path; the data checksums are not read.)"""
    if not os.path.isfile(path):
        return False
    try:
        hdus = _fitsLayout(path)
    except (OSError, ValueError, KeyError):
        return False
    if hdus is None or len(hdus) < 4:
        return False
    if [name for name, _, _ in hdus[1:4]] != ["IMAGE", "MASK", "VARIANCE"]:
        return False
    _, primary, hierarch = hdus[0]
    return "KSUM" in primary and any(_PSFMATCH_CARD.match(card) for card in hierarch)


def _workerName() -> str:
    try:
        from distributed import get_worker

        return str(get_worker().address)
    except Exception:  # not on a Dask worker
        return "local"


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds")


def _runPair(
    pair: BatchPair, config: Any, overwrite: bool, cacheTemplates: bool, coreThreads: int | None
) -> dict[str, Any]:
    """Subtract one pair and write its outputs; return its manifest record. Never raises an
    `Exception`: a failure is a record with ``status`` ``"failed"``."""
    from .. import io as pmio
    from ..api import _subtractConfig, subtract

    start = time.perf_counter()
    record: dict[str, Any] = {
        "status": "ok",
        "errorType": None,
        "message": None,
        "traceback": None,
        "templateCached": None,
        "worker": _workerName(),
    }
    try:
        outputs = pair.outputs()
        if not overwrite and all(_isComplete(path) for path in outputs):
            record["status"] = "skipped"
            record["message"] = "outputs exist and are complete"
        else:
            replace = {}
            for path in outputs:
                exists = os.path.lexists(path)
                if exists and not overwrite and not _isComplete(path):
                    raise OutputExistsError(
                        f"output file {path!r} exists and is not a complete psfmatch output; "
                        "remove it or pass overwrite",
                        path,
                    )
                replace[path] = exists
            pairConfig = _subtractConfig(
                config,
                pair.mode or config.mode,
                pair.spatialKernelOrder,
                pair.spatialBgOrder,
            )
            if coreThreads is not None:
                pairConfig.kernel.active.nThreads = coreThreads
            # Only files leave a batch: the convolved image is kept when it is written.
            pairConfig.keepMatchedImage = bool(pair.matched)
            template, analysis = pair.template, None
            if cacheTemplates:
                template, analysis, record["templateCached"] = _template(pair.template, pairConfig)
            result = subtract(
                pair.science,
                template,
                mode=pairConfig.mode,
                config=pairConfig,
                scienceFwhm=pair.scienceFwhm,
                templateFwhm=pair.templateFwhm,
                ignoreOrigins=pair.ignoreOrigins,
                templateAnalysis=analysis,
            )
            for path in outputs:
                os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            if pair.matched:
                assert result.matched is not None  # keepMatchedImage is set from pair.matched
                pmio.writeMaskedImage(
                    pair.matched,
                    result.matched,
                    header=result.header(),
                    overwrite=replace[pair.matched],
                )
            result.writeFits(pair.output, overwrite=replace[pair.output])
    except Exception as err:
        record.update(
            status="failed",
            errorType=type(err).__name__,
            message=str(err),
            traceback=traceback.format_exc(),
        )
    record["seconds"] = round(time.perf_counter() - start, 4)
    record["time"] = _now()
    return record
