# SPDX-License-Identifier: BSD-3-Clause
"""Subtract many science/template pairs on a Dask cluster, resumably.

`subtractBatch` runs `psfmatch.subtract` and `SubtractionResult.writeFits` once per pair of a
pair list (a CSV file or a list of dicts, see `readPairs`) on a `dask.distributed` cluster: a
`~distributed.LocalCluster` on this machine by default, or any scheduler given by its address.
``psfmatch batch pairs.csv`` is the same from the command line.

Safety and resumption
---------------------
- Each output is written atomically (`psfmatch.io.writeMaskedImage`): a pair's files are
  either complete or absent, whatever happens to the worker. Missing output directories are
  created. With a ``matched`` column the convolved image is written first and the difference
  image last.
- Without ``overwrite``, a pair whose outputs all exist and are complete psfmatch files (the
  IMAGE, MASK and VARIANCE extensions, psfmatch's header cards, and a file size that ends with
  the last HDU) is skipped, so a rerun does only the pairs that did not finish. A pair that is
  redone may replace its own complete psfmatch outputs (left by an interrupted run); any other
  existing file is an `OutputExistsError` for that pair.
- A failing pair does not stop the others. Every pair of every run appends one JSON line to the
  manifest (default ``psfmatch-batch.jsonl`` in the outputs' common directory; `readManifest`
  reads it): ``run``, ``index``, ``where`` (CSV line), ``science``, ``template``, ``output``,
  ``status`` (``ok``, ``skipped`` or ``failed``), ``errorType``, ``message``, ``traceback``,
  ``seconds``, ``time`` (UTC, ISO 8601), ``worker`` and ``templateCached``. The last line of an
  output is its state; with the outputs it tells exactly what succeeded.

Work and memory
---------------
Tasks are submitted lazily: at most ``maxInFlight`` (default two per worker thread) are on the
cluster at a time, and each returns a small record, never an image; the driver holds only the
pair list. A worker holds the pairs it is running (one per thread) and a small cache of
template analyses (kilobytes each). One pair of float32 images peaks at about 230 bytes per
pixel of one image (the inputs, their working copies, the convolved and difference images,
the detection and decorrelation FFT buffers; measured as the peak resident memory of
``subtract`` + ``writeFits``): 225 MB for 1024 × 1024, 0.9 GB for 2048 × 2048, so about
3.9 GB for a 4096 × 4096 CCD. Plan for ``threadsPerWorker`` times that per worker, plus the
worker's own ~130 MB. The default `~distributed.LocalCluster` has one thread per worker
process.

Shared templates
----------------
A template used by many science images is analysed once per worker process: the variance
rescaling factor and its sep detections for the difference-image association
(`ImagePsfMatchTask.analyzeTemplate`) are cached,
keyed by the template's path, device, inode, size and modification time and by the settings
they depend on, and passed to `subtract` as ``templateAnalysis``. The outputs are bit for bit
those of a serial ``subtract(science, template).writeFits(output)``. The kernel sources and the
template's FWHM are not cached: they are the science image's stars, measured in the template.
"""

from __future__ import annotations

__all__ = ["BatchPair", "BatchSummary", "localClient", "readManifest", "readPairs", "subtractBatch"]

import contextlib
import csv
import dataclasses
import datetime
import json
import logging
import math
import os
import re
import sys
import threading
import time
import traceback
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from .errors import (
    InvalidInputError,
    MissingDependencyError,
    OutputExistsError,
    PsfMatchError,
    PsfMatchIOError,
)

_log = logging.getLogger("psfmatch.batch")

#: The manifest's file name when none is given.
MANIFEST_NAME = "psfmatch-batch.jsonl"

_MODES = ("auto", "convolveTemplate", "convolveScience", "preconvolve")

#: Column names (lower case, without "_" and "-") and the `BatchPair` field each one fills.
_COLUMNS = {
    "science": "science",
    "inim": "science",
    "template": "template",
    "tmplim": "template",
    "output": "output",
    "outim": "output",
    "difference": "output",
    "matched": "matched",
    "oci": "matched",
    "mode": "mode",
    "spatialkernelorder": "spatialKernelOrder",
    "kernelorder": "spatialKernelOrder",
    "ko": "spatialKernelOrder",
    "spatialbgorder": "spatialBgOrder",
    "bgorder": "spatialBgOrder",
    "bgo": "spatialBgOrder",
    "sciencefwhm": "scienceFwhm",
    "templatefwhm": "templateFwhm",
    "ignoreorigins": "ignoreOrigins",
}

_TRUE = ("true", "yes", "on", "1")
_FALSE = ("false", "no", "off", "0")


# --------------------------------------------------------------------------------------------
# The pair list


@dataclasses.dataclass(frozen=True)
class BatchPair:
    """One science/template pair of a batch and its per-pair options.

    Attributes
    ----------
    science, template, output : `str`
        The input FITS files and the difference image to write.
    matched : `str` or None
        Also write the convolved image here.
    mode : `str` or None
        ``subtract``'s ``mode``; None for the batch's configuration (``"auto"`` by default).
    spatialKernelOrder, spatialBgOrder : `int` or None
        Spatial orders overriding the batch's configuration.
    scienceFwhm, templateFwhm : `float` or None
        PSF FWHMs (pixels) instead of measuring them.
    ignoreOrigins : `bool`
        As for `psfmatch.subtract`.
    where : `str`
        Where the pair was given (``"pairs.csv line 4"``, ``"pairs[3]"``), for messages.
    """

    science: str
    template: str
    output: str
    matched: str | None = None
    mode: str | None = None
    spatialKernelOrder: int | None = None
    spatialBgOrder: int | None = None
    scienceFwhm: float | None = None
    templateFwhm: float | None = None
    ignoreOrigins: bool = False
    where: str = ""

    def outputs(self) -> list[str]:
        """The files the pair writes, in the order they are written (the difference last)."""
        return ([self.matched] if self.matched else []) + [self.output]


def _columnKey(name: str) -> str:
    return name.strip().lower().replace("_", "").replace("-", "")


def _parseValue(field: str, value: Any, where: str) -> Any:
    """A cell or dict value converted to the type of ``field``; None for an empty cell."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, float) and math.isnan(value):  # an empty cell read by pandas
        return None
    if field in ("science", "template", "output", "matched"):
        if not isinstance(value, str | os.PathLike):
            raise InvalidInputError(
                f"{where}, {field}: expected a file path, got {type(value).__name__}"
            )
        return os.fspath(value).strip()
    if field == "mode":
        text = str(value).strip()
        if text not in _MODES:
            raise InvalidInputError(
                f"{where}, mode: expected one of {', '.join(_MODES)}, got {text!r}"
            )
        return text
    if field in ("spatialKernelOrder", "spatialBgOrder"):
        try:
            number = float(value)
        except (TypeError, ValueError):
            number = math.nan
        if not (math.isfinite(number) and number == int(number) and number >= 0):
            raise InvalidInputError(f"{where}, {field}: expected an integer >= 0, got {value!r}")
        return int(number)
    if field in ("scienceFwhm", "templateFwhm"):
        try:
            number = float(value)
        except (TypeError, ValueError):
            number = math.nan
        if not (math.isfinite(number) and number > 0):
            raise InvalidInputError(f"{where}, {field}: expected a number > 0, got {value!r}")
        return number
    # ignoreOrigins
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE or text in _FALSE:
        return text in _TRUE
    raise InvalidInputError(f"{where}, {field}: expected true or false, got {value!r}")


def _makePair(row: Mapping[str, Any], where: str, base: Path | None) -> BatchPair:
    values: dict[str, Any] = {}
    for name, value in row.items():
        if name is None:  # csv.DictReader's key for cells beyond the header
            raise InvalidInputError(f"{where}: more cells than columns")
        if not isinstance(name, str):
            raise InvalidInputError(f"{where}: column names must be strings, got {name!r}")
        field = _COLUMNS.get(_columnKey(name))
        if field is None:
            raise InvalidInputError(
                f"{where}: unknown column {name!r}; the columns are science, template, output "
                "(required), matched, mode, kernelOrder, bgOrder, scienceFwhm, templateFwhm, "
                "ignoreOrigins"
            )
        if field in values:
            raise InvalidInputError(f"{where}: column {name!r} repeats {field}")
        parsed = _parseValue(field, value, where)
        if parsed is not None:
            values[field] = parsed
    for field in ("science", "template", "output"):
        if field not in values:
            raise InvalidInputError(f"{where}: no {field} path")
    if base is not None:
        for field in ("science", "template", "output", "matched"):
            if field in values and not os.path.isabs(values[field]):
                values[field] = str(base / values[field])
    return BatchPair(where=where, **values)


def readPairs(path: str | os.PathLike[str]) -> list[BatchPair]:
    """Read a pair list from a CSV file.

    Parameters
    ----------
    path : path
        A CSV file whose first row names the columns: ``science``, ``template`` and
        ``output`` (required), and optionally ``matched``, ``mode``, ``kernelOrder``
        (``spatialKernelOrder``, ``ko``), ``bgOrder`` (``spatialBgOrder``, ``bgo``),
        ``scienceFwhm``, ``templateFwhm`` and ``ignoreOrigins``. Names ignore case, ``_`` and
        ``-``. An empty cell takes the batch's setting. Blank lines and lines starting with
        ``#`` are ignored. Relative paths are relative to the CSV file's directory.

    Returns
    -------
    pairs : `list` of `BatchPair`

    Raises
    ------
    InputFileNotFoundError
        If the file does not exist.
    InvalidInputError
        A missing or unknown column, a bad value (the message gives the line), or no pairs.
    """
    from .io.paths import _asPath, _checkInputFile

    source = _asPath(path, "pairs")
    _checkInputFile(source)
    try:
        with open(source, newline="", encoding="utf-8-sig") as stream:
            lines = [
                (number, line)
                for number, line in enumerate(stream, start=1)
                if line.strip() and not line.lstrip().startswith("#")
            ]
    except (OSError, UnicodeDecodeError) as err:
        raise InvalidInputError(f"pairs file {str(source)!r}: cannot read it ({err})") from err
    if not lines:
        raise InvalidInputError(f"pairs file {str(source)!r}: no header row and no pairs")
    reader = csv.DictReader([line for _, line in lines], skipinitialspace=True)
    base = source.parent
    pairs = []
    try:
        for (number, _), row in zip(lines[1:], reader, strict=True):
            pairs.append(_makePair(row, f"{source.name} line {number}", base))
    except csv.Error as err:
        raise InvalidInputError(f"pairs file {str(source)!r}: {err}") from err
    return _checkPairs(pairs, f"pairs file {str(source)!r}")


def _asPairs(pairs: Any) -> list[BatchPair]:
    if isinstance(pairs, str | os.PathLike):
        return readPairs(pairs)
    if isinstance(pairs, Mapping) or not isinstance(pairs, Iterable):
        raise InvalidInputError(
            f"pairs: expected a CSV path or a list of dicts (or BatchPair), got "
            f"{type(pairs).__name__}"
        )
    out = []
    for index, item in enumerate(pairs):
        where = f"pairs[{index}]"
        if isinstance(item, BatchPair):
            out.append(dataclasses.replace(item, where=item.where or where))
        elif isinstance(item, Mapping):
            out.append(_makePair(item, where, None))
        else:
            raise InvalidInputError(f"{where}: expected a dict, got {type(item).__name__}")
    return _checkPairs(out, "pairs")


def _checkPairs(pairs: list[BatchPair], what: str) -> list[BatchPair]:
    """No pairs, two pairs writing one file, or an output that is an input, are errors."""
    if not pairs:
        raise InvalidInputError(f"{what}: no pairs")
    inputs = {os.path.realpath(p): p for pair in pairs for p in (pair.science, pair.template)}
    written: dict[str, str] = {}
    for pair in pairs:
        for path in pair.outputs():
            real = os.path.realpath(path)
            if real in inputs:
                raise InvalidInputError(
                    f"{pair.where}: output {path!r} is also an input; inputs are never overwritten"
                )
            if real in written:
                raise InvalidInputError(
                    f"{pair.where}: output {path!r} is also written by {written[real]}"
                )
            written[real] = pair.where
    return pairs


# --------------------------------------------------------------------------------------------
# Work on a worker


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


class _TemplateCache:
    """The template analyses of one worker process, least recently used dropped first.

    Threads of one worker asking for the same template at once wait for the first one's
    analysis instead of repeating it.
    """

    def __init__(self, maxEntries: int = 8) -> None:
        self.maxEntries = maxEntries
        self._entries: OrderedDict[tuple[Any, ...], Any] = OrderedDict()
        self._computing: dict[tuple[Any, ...], threading.Lock] = {}
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def _lookup(self, key: tuple[Any, ...]) -> Any:
        analysis = self._entries.get(key)
        if analysis is not None:
            self._entries.move_to_end(key)
            self.hits += 1
        return analysis

    def get(self, key: tuple[Any, ...], compute: Callable[[], tuple[Any, Any]]) -> tuple[Any, Any]:
        """``(analysis, None)`` from the cache, else ``compute()``'s ``(analysis, extra)``."""
        with self._lock:
            analysis = self._lookup(key)
            if analysis is not None:
                return analysis, None
            keyLock = self._computing.setdefault(key, threading.Lock())
        with keyLock:
            with self._lock:
                analysis = self._lookup(key)
            if analysis is not None:
                return analysis, None
            try:
                analysis, extra = compute()
                with self._lock:
                    self.misses += 1
                    self._entries[key] = analysis
                    while len(self._entries) > self.maxEntries:
                        self._entries.popitem(last=False)
            finally:
                with self._lock:
                    self._computing.pop(key, None)
        return analysis, extra

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self.hits = self.misses = 0


_TEMPLATE_CACHE = _TemplateCache()


def _template(path: str, config: Any) -> tuple[Any, Any, bool]:
    """(template for `subtract`, its analysis, whether the analysis came from the cache)."""
    from .image_psf_match import ImagePsfMatchTask
    from .io import readImage

    task = ImagePsfMatchTask(config=config)
    try:
        st = os.stat(path)
    except OSError:
        return path, None, False  # let subtract report the missing file as it always does
    key = (
        os.path.realpath(path),
        st.st_dev,
        st.st_ino,
        st.st_size,
        st.st_mtime_ns,
        task._templateSettings(),
    )

    def compute() -> tuple[Any, Any]:
        image = readImage(path)
        return task.analyzeTemplate(image), image

    analysis, image = _TEMPLATE_CACHE.get(key, compute)
    if image is None:
        return path, analysis, True
    return image, analysis, False


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
    from . import io as pmio
    from .api import _subtractConfig, subtract

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


# --------------------------------------------------------------------------------------------
# The driver


@dataclasses.dataclass
class BatchSummary:
    """What a `subtractBatch` run did.

    Attributes
    ----------
    nPairs, succeeded, skipped, failed : `int`
        Pairs in the list; subtracted and written; skipped (already done); failed.
    seconds : `float`
        Wall-clock time of the run, from the first submission to the last result.
    manifest : `str`
        The manifest file the run appended to.
    records : `list` of `dict`
        This run's manifest records, in pair order.
    nWorkers : `int`
        Workers of the cluster when the run started.
    """

    nPairs: int
    succeeded: int
    skipped: int
    failed: int
    seconds: float
    manifest: str
    records: list[dict[str, Any]]
    nWorkers: int

    @property
    def ok(self) -> bool:
        """True if no pair failed."""
        return self.failed == 0

    @property
    def pairsPerSecond(self) -> float:
        """Pairs subtracted per second of wall-clock time (skipped pairs not counted)."""
        return self.succeeded / self.seconds if self.seconds > 0 else math.nan

    @property
    def failures(self) -> list[dict[str, Any]]:
        return [r for r in self.records if r["status"] == "failed"]

    def __str__(self) -> str:
        return (
            f"{self.nPairs} pairs in {self.seconds:.1f} s on {self.nWorkers} worker(s): "
            f"{self.succeeded} succeeded, {self.skipped} skipped, {self.failed} failed"
        )


def _importDistributed() -> Any:
    try:
        import distributed
    except ImportError as err:
        raise MissingDependencyError("psfmatch.batch", "dask[distributed]", "distributed") from err
    return distributed


@contextlib.contextmanager
def _connect(
    client: Any, scheduler: str | None, nWorkers: int | None, threadsPerWorker: int
) -> Iterator[Any]:
    """The client to use: the given one, one connected to ``scheduler``, or a new
    `~distributed.LocalCluster` on the loopback interface (closed afterwards)."""
    if client is not None:
        yield client
        return
    distributed = _importDistributed()
    if scheduler is not None:
        try:
            connected = distributed.Client(scheduler)
        except (OSError, TimeoutError, ValueError) as err:
            raise PsfMatchError(
                f"cannot connect to the Dask scheduler at {scheduler!r}: {err}"
            ) from err
        with connected:
            yield connected
        return
    with localClient(nWorkers, threadsPerWorker=threadsPerWorker) as local:
        yield local


@contextlib.contextmanager
def localClient(nWorkers: int | None = None, *, threadsPerWorker: int = 1) -> Iterator[Any]:
    """A client of a new `~distributed.LocalCluster` set up for psfmatch, closed on exit.

    The cluster `subtractBatch` starts when given neither a client nor a scheduler; use this
    to run several batches on one cluster (``subtractBatch(..., client=client)``).

    Parameters
    ----------
    nWorkers : `int`, optional
        Worker processes; by default one per CPU (divided by ``threadsPerWorker``).
    threadsPerWorker : `int`, optional
        Threads (pairs at once) per worker; 1 by default.

    Yields
    ------
    client : `distributed.Client`

    Notes
    -----
    Every server listens on the loopback interface only (127.0.0.1, random ports), with no
    dashboard port of its own. The workers are started without Dask's default
    ``MALLOC_TRIM_THRESHOLD_=65536``: with it glibc serves every temporary image array from
    fresh pages: two 1024² pairs took 4 to 10 times more minor page faults and 15–30% more
    CPU time (measured on this project's shared 2-core machine). A worker's memory then stays at the
    peak of the pairs it ran (see the module docstring) instead of shrinking between pairs.
    On your own cluster, set ``distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_`` to
    ``null`` in the Dask configuration for the same effect.
    """
    distributed = _importDistributed()
    import dask

    if nWorkers is not None and (not isinstance(nWorkers, int) or nWorkers < 1):
        raise InvalidInputError(f"nWorkers: expected an integer >= 1, got {nWorkers!r}")
    if not isinstance(threadsPerWorker, int) or threadsPerWorker < 1:
        raise InvalidInputError(
            f"threadsPerWorker: expected an integer >= 1, got {threadsPerWorker!r}"
        )
    workers = (
        nWorkers if nWorkers is not None else max(1, (os.cpu_count() or 1) // threadsPerWorker)
    )
    with (
        dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}),
        distributed.LocalCluster(
            n_workers=workers,
            threads_per_worker=threadsPerWorker,
            processes=True,
            host="127.0.0.1",
            dashboard_address="127.0.0.1:0",
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        yield client


class _Progress:
    """A tqdm bar on stderr if tqdm is installed, else one line per pair on stderr."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.total = total
        self.done = 0
        self.enabled = enabled
        self.counts = {"ok": 0, "skipped": 0, "failed": 0}
        self._bar = None
        if enabled:
            try:
                from tqdm import tqdm
            except ImportError:
                pass
            else:
                self._bar = tqdm(total=total, unit="pair", file=sys.stderr, dynamic_ncols=True)

    def update(self, pair: BatchPair, record: dict[str, Any]) -> None:
        self.done += 1
        self.counts[record["status"]] += 1
        c = self.counts
        seconds = record.get("seconds")
        line = f"{self.done}/{self.total} {record['status']:<7} {pair.output}"
        if seconds is not None:
            line += f" ({seconds:.1f} s)"
        if record["status"] == "failed":
            line += f": {record['errorType']}: {_firstLine(record['message'])}"
        _log.info("%s", line)
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.set_postfix(ok=c["ok"], skipped=c["skipped"], failed=c["failed"])
            self._bar.update(1)
        else:
            print(f"psfmatch batch: {line}", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def _firstLine(text: str | None) -> str:
    lines = (text or "").strip().splitlines()
    return lines[0] if lines else ""


def _defaultManifest(pairs: list[BatchPair]) -> Path:
    directories = {os.path.dirname(os.path.abspath(pair.output)) for pair in pairs}
    return Path(os.path.commonpath(sorted(directories))) / MANIFEST_NAME


def subtractBatch(
    pairs: str | os.PathLike[str] | Iterable[Mapping[str, Any] | BatchPair],
    *,
    client: Any = None,
    scheduler: str | None = None,
    nWorkers: int | None = None,
    threadsPerWorker: int = 1,
    config: Any = None,
    manifest: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    maxInFlight: int | None = None,
    cacheTemplates: bool = True,
    coreThreads: int | None = 1,
    progress: bool = False,
) -> BatchSummary:
    """Subtract many science/template pairs on a Dask cluster.

    Parameters
    ----------
    pairs : path, or iterable of `dict` or `BatchPair`
        A CSV pair list (see `readPairs`), or dicts with the same keys (paths relative to the
        working directory).
    client : `distributed.Client`, optional
        Run on this client's cluster (left open).
    scheduler : `str`, optional
        Else connect to the scheduler at this address (``tcp://host:8786``).
    nWorkers : `int`, optional
        Else start a `~distributed.LocalCluster` of this many worker processes on the
        loopback interface (default: one per CPU), closed at the end.
    threadsPerWorker : `int`, optional
        Threads of each local worker (pairs it runs at once); 1 by default.
    config : `ImagePsfMatchConfig`, optional
        The configuration of every pair (``mode="auto"`` by default, as `subtract`); the
        per-pair columns override its mode and spatial orders.
    manifest : path, optional
        The JSON-lines manifest to append to (see the module docstring); by default
        ``psfmatch-batch.jsonl`` in the outputs' common directory.
    overwrite : `bool`, optional
        Redo every pair and replace its outputs; by default complete outputs are skipped.
    maxInFlight : `int`, optional
        Most pairs submitted and not yet finished (default: twice the cluster's threads).
    cacheTemplates : `bool`, optional
        Analyse each template once per worker process (the results do not change).
    coreThreads : `int` or None, optional
        Threads of the compiled core per pair (``kernel.active.nThreads``): 1 by default,
        since the cluster's workers already occupy the cores; 0 for every hardware thread;
        None to keep the configuration's value. The results do not depend on it.
    progress : `bool`, optional
        Show a progress bar (tqdm) or, without tqdm, a line per pair on stderr.

    Returns
    -------
    summary : `BatchSummary`

    Raises
    ------
    InvalidInputError
        A bad pair list (the message gives the line) or argument.
    MissingDependencyError
        If dask.distributed is not installed.
    PsfMatchIOError
        If the manifest cannot be written.
    PsfMatchError
        If the scheduler cannot be reached.

    Notes
    -----
    A pair's failure (a missing or corrupt input, too few stars, a dead worker, ...) is not an
    exception: it is recorded in the manifest and counted in ``summary.failed``.
    """
    from .image_psf_match import ImagePsfMatchConfig

    pairList = _asPairs(pairs)
    given = sum(x is not None for x in (client, scheduler, nWorkers))
    if given > 1:
        raise InvalidInputError("client, scheduler, nWorkers: give at most one of them")
    if nWorkers is not None and (not isinstance(nWorkers, int) or nWorkers < 1):
        raise InvalidInputError(f"nWorkers: expected an integer >= 1, got {nWorkers!r}")
    if not isinstance(threadsPerWorker, int) or threadsPerWorker < 1:
        raise InvalidInputError(
            f"threadsPerWorker: expected an integer >= 1, got {threadsPerWorker!r}"
        )
    if coreThreads is not None and (not isinstance(coreThreads, int) or coreThreads < 0):
        raise InvalidInputError(
            f"coreThreads: expected an integer >= 0 or None, got {coreThreads!r}"
        )
    if maxInFlight is not None and (not isinstance(maxInFlight, int) or maxInFlight < 1):
        raise InvalidInputError(f"maxInFlight: expected an integer >= 1, got {maxInFlight!r}")
    if config is None:
        config = ImagePsfMatchConfig()
        config.mode = "auto"
    elif not isinstance(config, ImagePsfMatchConfig):
        raise InvalidInputError(
            f"config: expected an ImagePsfMatchConfig, got {type(config).__name__}"
        )
    try:
        config.validate()
    except Exception as err:
        raise InvalidInputError(f"config: {err}") from err
    manifestPath = Path(manifest) if manifest is not None else _defaultManifest(pairList)
    distributed = _importDistributed()

    try:
        manifestPath.parent.mkdir(parents=True, exist_ok=True)
        stream = open(manifestPath, "a", encoding="utf-8")
    except OSError as err:
        raise PsfMatchIOError(
            f"cannot write the manifest {str(manifestPath)!r}: {err.strerror or err}",
            str(manifestPath),
        ) from err
    run = f"{_now()}-{uuid.uuid4().hex[:8]}"
    records: list[dict[str, Any] | None] = [None] * len(pairList)
    with stream, _connect(client, scheduler, nWorkers, threadsPerWorker) as active:
        workers = active.scheduler_info().get("workers", {})
        nThreads = sum(int(w.get("nthreads", 1)) for w in workers.values())
        limit = maxInFlight or 2 * max(1, nThreads)
        _log.info(
            "batch %s: %d pairs on %d worker(s), at most %d in flight; manifest %s",
            run,
            len(pairList),
            len(workers),
            limit,
            manifestPath,
        )
        bar = _Progress(len(pairList), progress)
        start = time.perf_counter()
        todo = iter(enumerate(pairList))
        pending: dict[Any, int] = {}
        queue = distributed.as_completed()

        def submitNext() -> None:
            for index, pair in todo:
                future = active.submit(
                    _runPair,
                    pair,
                    config,
                    overwrite,
                    cacheTemplates,
                    coreThreads,
                    key=f"psfmatch-pair-{run}-{index}",
                    pure=False,
                )
                pending[future] = index
                queue.add(future)
                return

        try:
            for _ in range(limit):
                submitNext()
            for future in queue:
                index = pending.pop(future)
                pair = pairList[index]
                try:
                    record = future.result()
                except Exception as err:  # the task itself was lost: a dead worker, ...
                    record = {
                        "status": "failed",
                        "errorType": type(err).__name__,
                        "message": str(err),
                        "traceback": None,
                        "templateCached": None,
                        "worker": None,
                        "seconds": None,
                        "time": _now(),
                    }
                future.release()
                submitNext()
                record = {
                    "run": run,
                    "index": index,
                    "where": pair.where,
                    "science": pair.science,
                    "template": pair.template,
                    "output": pair.output,
                    **record,
                }
                records[index] = record
                stream.write(json.dumps(record) + "\n")
                stream.flush()
                bar.update(pair, record)
        except BaseException:
            for future in list(pending):
                future.cancel()
            raise
        finally:
            bar.close()
        seconds = time.perf_counter() - start

    done = [r for r in records if r is not None]
    counts = {status: sum(r["status"] == status for r in done) for status in ("ok", "skipped")}
    summary = BatchSummary(
        nPairs=len(pairList),
        succeeded=counts["ok"],
        skipped=counts["skipped"],
        failed=len(done) - counts["ok"] - counts["skipped"],
        seconds=seconds,
        manifest=str(manifestPath),
        records=done,
        nWorkers=len(workers),
    )
    _log.info("batch %s: %s", run, summary)
    return summary


def readManifest(path: str | os.PathLike[str], *, latest: bool = True) -> list[dict[str, Any]]:
    """Read a batch manifest.

    Parameters
    ----------
    path : path
        The JSON-lines manifest `subtractBatch` appends to.
    latest : `bool`, optional
        Return only the last record of each output (its current state), in the order the
        outputs first appear; otherwise every record.

    Returns
    -------
    records : `list` of `dict`
        A line that is not valid JSON (the last one, if a run was killed while writing it) is
        skipped with a logged warning.

    Raises
    ------
    InputFileNotFoundError
        If the file does not exist.
    """
    from .io.paths import _asPath, _checkInputFile

    source = _asPath(path, "path")
    _checkInputFile(source)
    records = []
    with open(source, encoding="utf-8") as stream:
        for number, line in enumerate(stream, start=1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                _log.warning("%s line %d is not a JSON record; skipped", source, number)
    if not latest:
        return records
    last: dict[str, dict[str, Any]] = {}
    for record in records:
        last[record.get("output", "")] = record
    return list(last.values())
