# SPDX-License-Identifier: BSD-3-Clause
"""The work of one pair on a worker: `_runPair` subtracts it and writes its outputs, or skips
it when they are complete psfmatch outputs already (`_isComplete`)."""

from __future__ import annotations

import datetime
import os
import time
import traceback
from typing import Any

from astropy.io import fits

from ..errors import OutputExistsError
from ..io.writing import _VERSION_KEY
from .cache import _template
from .pairs import BatchPair

_FITS_BLOCK = 2880
"""Bytes in a FITS block: every header and every data part fills a whole number of them."""


def _isComplete(path: str) -> bool:
    """Whether ``path`` is a whole psfmatch output: the IMAGE, MASK and VARIANCE extensions
    after a primary HDU with psfmatch's version (``PSFMVER``) and ``KSUM``, and a file size
    that ends exactly with the last HDU. (Writes are atomic, so this tells our files from
    anything else at that path; only the headers are read, not the data nor their
    checksums.)"""
    if not os.path.isfile(path):
        return False
    try:
        size = os.path.getsize(path)
        # lazy_load_hdus: each header is read when it is asked for, so a file that is not ours
        # is given up on after its primary header; the data are never read.
        with fits.open(path, mode="readonly", memmap=False, lazy_load_hdus=True) as hdul:
            primary = hdul[0].header
            if "KSUM" not in primary or _VERSION_KEY not in primary:
                return False
            if [hdu.name for hdu in hdul[1:4]] != ["IMAGE", "MASK", "VARIANCE"]:
                return False
            index = 0
            while True:
                info = hdul[index].fileinfo()
                end = info["datLoc"] + info["datSpan"]
                if end == size:
                    return True
                if end > size or size - end < _FITS_BLOCK:
                    # Truncated, or bytes after the last HDU that cannot be another one.
                    return False
                index += 1
    except Exception:
        # astropy raises OSError, ValueError, IndexError, ... for what is not a whole FITS
        # file, and its warnings about one where the caller's filters make them errors.
        return False


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
    from ..api import subtract, subtractConfig

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
            pairConfig = subtractConfig(
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
            # A template that is resampled for each science image has no analysis to share.
            if cacheTemplates and pair.align is None:
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
                align=pair.align,
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
                    wcs=result.wcs,
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
