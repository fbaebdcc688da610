# SPDX-License-Identifier: BSD-3-Clause
"""``psfmatch demo``: a simulated pair with a known answer (`psfmatch.simulate.simulatePair`),
written to FITS, subtracted through the same code path as ``psfmatch subtract`` and compared
with the truth (`psfmatch.simulate.compareToTruth`); exit status 3 if a figure is outside its
threshold."""

from __future__ import annotations

import argparse
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import OutputExistsError, PsfMatchIOError
from ..simulate.compare import (
    KSUM_TOLERANCE,
    MEAN_TOLERANCE,
    SIGMA_TOLERANCE,
    TRANSIENT_TOLERANCE,
)
from .outputs import _checkPlots, _writePlots
from .signals import _checkNotInterrupted
from .usage import _UsageError


def _addParser(commands: Any, common: argparse.ArgumentParser) -> None:
    """Add ``demo`` to the sub-command parsers ``commands``."""
    demo = commands.add_parser(
        "demo",
        parents=[common],
        allow_abbrev=False,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        help="simulate a pair with a known answer, subtract it and compare with the truth",
        description=(
            "Simulate a template/science pair (spatially varying PSF, flux scale, background,\n"
            "transients), write it to FITS, subtract it and compare with the truth: the kernel\n"
            f"sum (PASS within {100 * KSUM_TOLERANCE:g}%), the robust sigma of D/sigma away from "
            f"sources (within {100 * SIGMA_TOLERANCE:g}% of 1)\n"
            f"and its mean (|mean| < {MEAN_TOLERANCE:g}), and the transients' fluxes measured "
            f"in D (within {100 * TRANSIENT_TOLERANCE:g}% on average).\n"
            "Exit status 3 if any figure is outside its threshold."
        ),
    )
    demo.add_argument(
        "--output-dir",
        default="psfmatch-demo",
        metavar="DIR",
        help="where to write the files (created; default: ./psfmatch-demo)",
    )
    demo.add_argument(
        "--size",
        type=int,
        default=1024,
        metavar="N",
        help="image size N x N (default 1024; at least 192, and what the available memory "
        f"holds at about {_BYTES_PER_PIXEL} bytes a pixel)",
    )
    demo.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    demo.add_argument(
        "--plots",
        metavar="DIR",
        help="also write the diagnostic figures and report.html into DIR (needs matplotlib)",
    )
    demo.add_argument("--overwrite", action="store_true", help="replace existing files")
    demo.set_defaults(func=_run)


_BYTES_PER_PIXEL = 160
"""Peak memory of ``psfmatch demo`` per pixel of one image, rounded up: measured 264 MB at
1024², 703 MB at 2048² (140 bytes a pixel between them, beside ~120 MB of Python and
libraries): the simulated pair with its truth, the two images read back, the subtraction and
the outputs."""

_BASE_BYTES = 150 * 2**20


def _availableMemory() -> int | None:
    """Bytes of memory available to a new allocation (Linux ``MemAvailable``, else the free
    physical pages), or None where neither can be read."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, ValueError, OSError):
        return None


def _checkMemory(size: int) -> None:
    """A usage error, with the numbers, for a demo that would not fit in memory (``--size
    100000`` asked for 23 GiB for the simulation alone and was never checked)."""
    needed = _BASE_BYTES + _BYTES_PER_PIXEL * size * size
    available = _availableMemory()
    if available is None or needed <= available:
        return
    largest = int(math.isqrt(max(0, available - _BASE_BYTES) // _BYTES_PER_PIXEL))
    raise _UsageError(
        f"--size {size}: the demo would need about {_gib(needed)} of memory (about "
        f"{_BYTES_PER_PIXEL} bytes a pixel for {size} x {size} pixels), but {_gib(available)} "
        f"are available; use --size {largest} or less"
    )


def _gib(n: int) -> str:
    return f"{n / 2**30:.1f} GiB"


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "CHECK"


def _run(args: argparse.Namespace) -> int:
    from astropy.table import Table

    from .. import io as pmio
    from ..api import subtract
    from ..io.writing import _ioErrors, _rmdirIfEmpty, _stageFile, _writingTogether
    from ..simulate import compareToTruth, simulatePair

    size = args.size
    if size < 192:
        raise _UsageError(f"--size {size}: the demo needs at least 192 pixels on a side")
    if args.seed < 0:
        raise _UsageError(f"--seed {args.seed}: expected an integer >= 0")
    _checkMemory(size)
    outDir = Path(args.output_dir)
    paths = {
        name: outDir / f"{name}.{'ecsv' if name == 'transients' else 'fits'}"
        for name in ("template", "science", "difference", "matched", "transients")
    }
    if outDir.exists() and not outDir.is_dir():
        raise _UsageError(f"--output-dir {str(outDir)!r} exists and is not a directory")
    if not args.overwrite:
        for path in paths.values():
            if os.path.lexists(path):
                raise OutputExistsError(
                    f"output file {str(path)!r} exists; pass --overwrite to replace it", str(path)
                )
    _checkPlots(args.plots, args.overwrite)

    # The default simulation scaled to the requested size: 400 stars and 10 transients per
    # 1024 x 1024 pixels (at least 60 and 5), a science PSF whose FWHM grows from 5.2 to
    # 6.6 px across the image over a 3.8 px template PSF, photometric scale 1.25, a sloped
    # background, and transients of 1e4 to 4e4 counts (S/N ~ 50 to 200).
    area = (size / 1024.0) ** 2
    nStars = max(60, round(400 * area))
    nTransients = max(5, round(10 * area))
    transientFlux = np.geomspace(1e4, 4e4, nTransients)
    sim = simulatePair(
        (size, size),
        nStars=nStars,
        seed=args.seed,
        nTransients=nTransients,
        transientFlux=transientFlux,
    )
    created = not outDir.exists()
    try:
        outDir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise PsfMatchIOError(
            f"cannot create --output-dir {str(outDir)!r}: {err.strerror or err}", str(outDir)
        ) from err
    # Every file lands at the end of the block, or (a full disk, an interrupt) none does. The
    # pair is subtracted from its temporaries, through the same FITS path as the command line.
    with _writingTogether() as group:
        if created:
            group.cleanups.append(_rmdirIfEmpty(outDir))  # nothing left of a failed run
        pmio.writeMaskedImage(paths["template"], sim.template, overwrite=args.overwrite)
        templateFile = group.staged[-1].temporary
        pmio.writeMaskedImage(paths["science"], sim.science, overwrite=args.overwrite)
        scienceFile = group.staged[-1].temporary

        start = time.perf_counter()
        result = subtract(str(scienceFile), str(templateFile))
        elapsed = time.perf_counter() - start
        result.metadata["differenceUnits"] = result.differenceUnits
        result.metadata["matchedUnits"] = result.matchedUnits
        result.writeFits(
            paths["difference"], matchedPath=paths["matched"], overwrite=args.overwrite
        )
        report = _writePlots(
            result,
            args,
            {
                "science": str(paths["science"]),
                "template": str(paths["template"]),
                "difference": str(paths["difference"]),
                "elapsed (s)": round(elapsed, 2),
            },
        )

        c = compareToTruth(sim, result)
        table = Table(c.transients)

        def writeTable(temporary: Path) -> None:
            with _ioErrors(paths["transients"], "write"):
                table.write(temporary, format="ascii.ecsv")

        _stageFile(paths["transients"], writeTable, args.overwrite)
        _checkNotInterrupted()

    truth = sim.truth
    corners = np.array([0.0, size - 1.0])
    fwhmS = np.asarray(truth.scienceFwhm(corners, corners))
    b0, bx, by = truth.backgroundCoefficients
    checks = [
        (
            f"kernel sum      {c.kernelSum:.5f} (true {c.fluxScale:.5f}, "
            f"error {100 * c.kernelSumError:+.3f}%)",
            c.kernelSumPassed,
            f"|error| < {100 * c.kernelSumTolerance:g}%",
        ),
        (
            f"D/sigma sigma   {c.zSigma:.4f} (robust, {c.skyPixels} pixels away from sources)",
            c.sigmaPassed,
            f"within {100 * c.sigmaTolerance:g}% of 1",
        ),
        (
            f"D/sigma mean    {c.zMean:+.4f}",
            c.meanPassed,
            f"|mean| < {c.meanTolerance:g}",
        ),
        (
            f"transient flux  measured/true {c.transientRatio:.4f} "
            f"+- {c.transientRatioErr:.4f} (mean of {c.nMeasured} of {c.nTransients})",
            c.transientsPassed,
            f"within {100 * c.transientTolerance:g}% on average",
        ),
    ]
    nFail = c.nFailed
    if not args.quiet:
        lines = [
            f"psfmatch demo: simulated {size} x {size} pair (seed {args.seed}): {nStars} stars, "
            f"{nTransients} transients, template FWHM {truth.templateFwhm:.2f} px, science FWHM "
            f"{fwhmS.min():.2f} to {fwhmS.max():.2f} px, flux scale {truth.fluxScale:g}, "
            f"background {b0:g} {bx:+g} x {by:+g} y",
            f"subtracted in {elapsed:.1f} s: convolved the "
            f"{'template' if result.convolved == 'Template' else 'science image'}, "
            f"{result.metadata['nCandidatesGood']} kernel sources used",
        ]
        width = max(len(text) for text, _, _ in checks)
        for text, ok, threshold in checks:
            lines.append(f"  {text:<{width}}  {_verdict(ok)} ({threshold})")
        lines.append(
            "all figures PASS"
            if nFail == 0
            else f"{nFail} figure(s) to CHECK: outside the threshold this demo expects"
        )
        lines.append(f"wrote {', '.join(str(p) for p in paths.values())}")
        if report is not None:
            lines.append(f"report {report}")
        print("\n".join(lines))
    return 0 if nFail == 0 else 3
