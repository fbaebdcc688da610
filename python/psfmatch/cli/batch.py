# SPDX-License-Identifier: BSD-3-Clause
"""``psfmatch batch``: `psfmatch.batch.subtractBatch` over a CSV list of pairs on a Dask
cluster, resumably, with a one-paragraph summary; exit status 1 if any pair failed."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from .config import _buildConfig
from .hotpants import _aliasesOf
from .usage import _UsageError

#: Failed pairs listed by ``psfmatch batch``'s summary (the manifest has them all).
_MAX_FAILURES_SHOWN = 10


def _addParser(commands: Any, common: argparse.ArgumentParser) -> None:
    """Add ``batch`` to the sub-command parsers ``commands``."""
    batch = commands.add_parser(
        "batch",
        parents=[common],
        allow_abbrev=False,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        help="subtract many pairs listed in a CSV file on a Dask cluster, resumably",
        description=(
            "Run psfmatch subtract on every pair of PAIRS, a CSV file with the columns\n"
            "science, template, output (required) and matched, mode, kernelOrder, bgOrder,\n"
            "scienceFwhm, templateFwhm, ignoreOrigins, align (optional, per pair; relative paths\n"
            "are relative to the CSV file), on a Dask cluster: a local one by default, or the\n"
            'scheduler at --scheduler. Needs dask: pip install "psfmatch[distributed]".\n\n'
            "Outputs are written atomically; complete outputs are skipped on a rerun. Each\n"
            "pair's outcome is appended to a JSON-lines manifest. Exit status 1 if any pair\n"
            "failed."
        ),
        epilog=(
            "examples:\n"
            "  psfmatch batch pairs.csv --workers 4\n"
            "  psfmatch batch pairs.csv --scheduler tcp://10.0.0.5:8786 -ko 1\n\n"
            "pairs.csv:\n"
            "  science,template,output,kernelOrder\n"
            "  sci/v1.fits,tmpl/t.fits,diff/v1.fits,\n"
            "  sci/v2.fits,tmpl/t.fits,diff/v2.fits,1"
        ),
    )
    batch.add_argument("pairs", metavar="PAIRS", help="the CSV pair list")
    where = batch.add_argument_group("cluster")
    where.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="the address of a running Dask scheduler (tcp://host:8786); default: start a "
        "local cluster",
    )
    where.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="worker processes of the local cluster (default: one per CPU)",
    )
    where.add_argument(
        "--threads-per-worker",
        type=int,
        default=1,
        metavar="N",
        help="pairs each local worker runs at once (default 1; each needs ~230 bytes per pixel)",
    )
    where.add_argument(
        "--core-threads",
        type=int,
        default=1,
        metavar="N",
        help="threads of psfmatch's compiled core per pair (default 1: the workers already use "
        "the cores; 0: every hardware thread)",
    )
    where.add_argument(
        "--max-in-flight",
        type=int,
        metavar="N",
        help="most pairs submitted at once (default: twice the cluster's threads)",
    )
    runOptions = batch.add_argument_group("outputs")
    runOptions.add_argument(
        "--manifest",
        metavar="JSONL",
        help="the manifest to append to (default: psfmatch-batch.jsonl in the outputs' common "
        "directory)",
    )
    runOptions.add_argument(
        "--overwrite", action="store_true", help="redo every pair and replace its outputs"
    )
    runOptions.add_argument(
        "--no-template-cache",
        action="store_true",
        help="analyse a shared template for every pair instead of once per worker",
    )
    batchFit = batch.add_argument_group("fit (per-pair columns override these)")
    batchFit.add_argument(
        "--mode",
        choices=["auto", "convolveTemplate", "convolveScience", "preconvolve", "crossConvolve"],
        default=None,
        help="which image to convolve (default: auto)",
    )
    batchFit.add_argument(
        "--kernel-order",
        *_aliasesOf("--kernel-order"),
        type=int,
        metavar="N",
        help="spatial order of the kernel",
    )
    batchFit.add_argument(
        "--bg-order",
        *_aliasesOf("--bg-order"),
        type=int,
        metavar="N",
        help="spatial order of the background",
    )
    batchFit.add_argument(
        "--config-file",
        action="append",
        metavar="PY",
        help="a Python file run with `config` bound to an ImagePsfMatchConfig (repeatable)",
    )
    batchFit.add_argument(
        "--set", action="extend", nargs="+", metavar="KEY=VALUE", help="config overrides"
    )
    batch.set_defaults(func=_run, kernel_half_width=None, ngauss=None)


def _run(args: argparse.Namespace) -> int:
    from ..batch import subtractBatch

    config = _buildConfig(args)
    if args.workers is not None and args.workers < 1:
        raise _UsageError(f"--workers {args.workers}: expected at least 1")
    if args.threads_per_worker < 1:
        raise _UsageError(f"--threads-per-worker {args.threads_per_worker}: expected at least 1")
    if args.core_threads < 0:
        raise _UsageError(f"--core-threads {args.core_threads}: expected at least 0")
    if args.max_in_flight is not None and args.max_in_flight < 1:
        raise _UsageError(f"--max-in-flight {args.max_in_flight}: expected at least 1")
    if args.scheduler is not None and args.workers is not None:
        raise _UsageError("--workers starts a local cluster; it cannot go with --scheduler")
    summary = subtractBatch(
        args.pairs,
        scheduler=args.scheduler,
        nWorkers=args.workers,
        threadsPerWorker=args.threads_per_worker,
        config=config,
        manifest=args.manifest,
        overwrite=args.overwrite,
        maxInFlight=args.max_in_flight,
        cacheTemplates=not args.no_template_cache,
        coreThreads=args.core_threads,
        progress=not args.quiet,
    )
    failures = summary.failures
    if not args.quiet or failures:
        lines = [f"psfmatch batch: {summary}"]
        if summary.succeeded:
            lines[0] += f" ({summary.pairsPerSecond:.3g} pairs/s)"
        for record in failures[:_MAX_FAILURES_SHOWN]:
            message = (record["message"] or "").strip().splitlines()
            lines.append(
                f"  failed: {record['where']} ({record['science']}): {record['errorType']}: "
                f"{message[0] if message else ''}"
            )
        if len(failures) > _MAX_FAILURES_SHOWN:
            lines.append(f"  ... and {len(failures) - _MAX_FAILURES_SHOWN} more failures")
        lines.append(f"  manifest: {summary.manifest}")
        print("\n".join(lines), file=sys.stderr if failures else sys.stdout)
    return 0 if summary.ok else 1
