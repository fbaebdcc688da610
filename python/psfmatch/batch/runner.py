# SPDX-License-Identifier: BSD-3-Clause
"""The driver of a batch: `subtractBatch` submits the pairs to a Dask cluster and writes the
manifest; `localClient` starts a local cluster; `readManifest` reads the manifest back."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import sys
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from ..errors import InvalidInputError, MissingDependencyError, PsfMatchError, PsfMatchIOError
from .pairs import BatchPair, _asPairs
from .worker import _now, _runPair

_log = logging.getLogger("psfmatch.batch")

#: The manifest's file name when none is given.
MANIFEST_NAME = "psfmatch-batch.jsonl"


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
    fresh pages, several times more minor page faults and markedly more CPU time per pair
    (figures in benchmarks/README.md). A worker's memory then stays at the peak of the pairs it
    ran (see the module docstring) instead of shrinking between pairs.
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
    from ..image_psf_match import ImagePsfMatchConfig

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
    from ..io.paths import _asPath, _checkInputFile

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
