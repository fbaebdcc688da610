# SPDX-License-Identifier: BSD-3-Clause
"""``psfmatch subtract``: `psfmatch.subtract` on two FITS files, the difference image (and the
convolved image) written with `SubtractionResult.writeFits`, a summary printed."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import os
import time
from typing import Any

from ..errors import InvalidInputError, PsfMatchError
from .config import _buildConfig
from .hotpants import (
    _CONVOLVE,
    _NORMALIZE,
    _aliasesOf,
    _ConvolveAction,
    _helpParagraph,
    _NormalizeAction,
    _ownOptionsFor,
)
from .outputs import _checkOutputs, _checkPlots, _writePlots
from .signals import _checkNotInterrupted
from .usage import _UsageError

_log = logging.getLogger("psfmatch.cli")


def _addParser(commands: Any, common: argparse.ArgumentParser, requireArguments: bool) -> None:
    """Add ``subtract`` to the sub-command parsers ``commands``."""
    sub = commands.add_parser(
        "subtract",
        parents=[common],
        allow_abbrev=False,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        help="match the PSFs of two FITS images and subtract them",
        description=(
            "Match the template's PSF to the science image's (or the reverse) and write the\n"
            "difference image D = S - (K * T + b) in science units, with its mask and variance,\n"
            "the kernel and the kernel sources (LSST MaskedImage FITS layout).\n\n"
            f"{_helpParagraph(width=84)}\n"
            "Configuration order: --config-file, then --set, then the dedicated options."
        ),
        epilog=(
            "examples:\n"
            "  psfmatch subtract --science sci.fits --template tmpl.fits --output diff.fits\n"
            "  psfmatch subtract -inim sci.fits -tmplim tmpl.fits -outim diff.fits -ko 1 -bgo 1\n"
            "  psfmatch subtract --science s.fits --template t.fits --output d.fits \\\n"
            "      --set kernel.active.spatialKernelOrder=1 selection.minSnr=20"
        ),
    )
    io = sub.add_argument_group("images")
    required = requireArguments
    io.add_argument(
        "--science",
        *_aliasesOf("--science"),
        required=required,
        metavar="FITS",
        help="science image",
    )
    io.add_argument(
        "--template",
        *_aliasesOf("--template"),
        required=required,
        metavar="FITS",
        help="template image",
    )
    io.add_argument(
        "--output",
        *_aliasesOf("--output"),
        required=required,
        metavar="FITS",
        help="difference image to write",
    )
    io.add_argument(
        "--matched",
        *_aliasesOf("--matched"),
        metavar="FITS",
        help="also write the convolved (PSF-matched) image",
    )
    io.add_argument(
        "--science-variance",
        metavar="FITS|NUMBER",
        help="science variance: a FITS file (its VARIANCE HDU, else its image) or a constant",
    )
    io.add_argument("--template-variance", metavar="FITS|NUMBER", help="template variance")
    io.add_argument(
        "--science-mask",
        metavar="FITS",
        help="science mask: psfmatch mask bits (a MASK HDU with MP_ planes, or integers)",
    )
    io.add_argument("--template-mask", metavar="FITS", help="template mask")
    io.add_argument(
        "--science-gain",
        *_aliasesOf("--science-gain"),
        type=float,
        metavar="E/ADU",
        help="science gain, used when the variance is estimated (no VARIANCE HDU and no "
        "--science-variance) to add the stars' Poisson noise; without it bright stars get "
        "too little variance (HOTPANTS -ig)",
    )
    io.add_argument(
        "--template-gain",
        *_aliasesOf("--template-gain"),
        type=float,
        metavar="E/ADU",
        help="template gain (HOTPANTS -tg)",
    )
    io.add_argument(
        "--science-read-noise",
        *_aliasesOf("--science-read-noise"),
        type=float,
        metavar="E",
        help="science read noise in electrons, with --science-gain: an estimated variance is "
        "then HOTPANTS' model |image|/gain + (readnoise/gain)^2 from the pixel values (the sky "
        "must not have been subtracted) instead of the sky's measured scatter (HOTPANTS -ir)",
    )
    io.add_argument(
        "--template-read-noise",
        *_aliasesOf("--template-read-noise"),
        type=float,
        metavar="E",
        help="template read noise in electrons, with --template-gain (HOTPANTS -tr)",
    )
    io.add_argument(
        "--science-upper",
        *_aliasesOf("--science-upper"),
        type=float,
        metavar="VALUE",
        help="science pixels above VALUE are flagged SAT (HOTPANTS -iu)",
    )
    io.add_argument(
        "--template-upper",
        *_aliasesOf("--template-upper"),
        type=float,
        metavar="VALUE",
        help="template pixels above VALUE are flagged SAT (HOTPANTS -tu)",
    )
    io.add_argument(
        "--science-lower",
        *_aliasesOf("--science-lower"),
        type=float,
        metavar="VALUE",
        help="science pixels below VALUE are flagged BAD and NO_DATA (HOTPANTS -il)",
    )
    io.add_argument(
        "--template-lower",
        *_aliasesOf("--template-lower"),
        type=float,
        metavar="VALUE",
        help="template pixels below VALUE are flagged BAD and NO_DATA (HOTPANTS -tl)",
    )
    io.add_argument(
        "--ignore-origins",
        action="store_true",
        help="give the template the science image's origin (xy0) when their headers disagree",
    )
    io.add_argument(
        "--align",
        nargs="?",
        const="wcs",
        choices=["wcs", "wcs-template", "none"],
        default=None,
        help="images on two pixel grids: resample the template onto the science image's grid "
        "by the images' WCSs (wcs, the default of --align alone), or the science image onto "
        "the template's (wcs-template); flux conserved, variance and mask carried, the WCS "
        "written with the difference",
    )
    io.add_argument(
        "--science-wcs",
        metavar="FITS",
        help="with --align: a FITS file whose header holds the science WCS (default: the "
        "science image's own header)",
    )
    io.add_argument("--template-wcs", metavar="FITS", help="with --align: the template's WCS")
    io.add_argument(
        "--plots",
        metavar="DIR",
        help="also write the diagnostic figures (PNG) and a one-page report.html with the "
        "run's metadata and the candidate table into DIR (created); needs matplotlib, "
        'pip install "psfmatch[plot]"',
    )
    io.add_argument("--overwrite", action="store_true", help="replace existing output files")

    fit = sub.add_argument_group("fit")
    fit.add_argument(
        "--allow-poor-subtraction",
        action="store_true",
        help="keep a difference image whose sky is far from its own noise (mean (D/sigma)^2 "
        "above maxDifferenceChi2, 4) with a warning, rather than failing",
    )
    fit.add_argument(
        "--mode",
        choices=["auto", "convolveTemplate", "convolveScience", "preconvolve", "crossConvolve"],
        default=None,
        help="which image to convolve (default: auto, the one with the narrower PSF, or "
        "crossConvolve when neither PSF is a blurred version of the other); preconvolve: the "
        "score image, the science image filtered by its PSF minus the template matched to "
        "that; crossConvolve: each image convolved with the other's PSF (for rotated spikes "
        "or ellipticities), then matched",
    )
    fit.add_argument(
        *_ownOptionsFor("--mode"),
        dest="mode",
        action=_ConvolveAction,
        choices=sorted(_CONVOLVE),
        help="HOTPANTS: convolve the (t)emplate or the (i)mage (science)",
    )
    fit.add_argument(
        "--normalize",
        *_aliasesOf("--normalize"),
        action=_NormalizeAction,
        choices=list(_NORMALIZE),
        default=None,
        help=(
            "photometric system of the difference and convolved images: the (t)emplate's, the "
            "(i)mage's (science) or the (u)nconvolved image's, by rescaling with the kernel sum "
            "(HOTPANTS -n); default: difference in science units, convolved image in the units "
            "of the image it was matched to"
        ),
    )
    fit.add_argument(
        "--kernel-half-width",
        *_aliasesOf("--kernel-half-width"),
        type=int,
        metavar="R",
        help="kernel half-width: kernelSize = 2R+1 (turns off scaleByFwhm)",
    )
    fit.add_argument(
        "--ngauss",
        *_aliasesOf("--ngauss"),
        nargs="+",
        metavar="N",
        help="Gaussians of the basis: N [d1 s1 ... dN sN] (degree, sigma in pixels; with the "
        "pairs the widths are used as given, scaleByFwhm off)",
    )
    fit.add_argument(
        "--kernel-order",
        *_aliasesOf("--kernel-order"),
        type=int,
        metavar="N",
        help="spatial order of the kernel",
    )
    fit.add_argument(
        "--bg-order",
        *_aliasesOf("--bg-order"),
        type=int,
        metavar="N",
        help="spatial order of the background",
    )
    fit.add_argument(
        "--science-fwhm",
        type=float,
        metavar="PIX",
        help="science PSF FWHM in pixels, > 0 (default: measured from the stars)",
    )
    fit.add_argument(
        "--template-fwhm",
        type=float,
        metavar="PIX",
        help="template PSF FWHM in pixels, > 0 (default: measured from the stars)",
    )
    fit.add_argument(
        "--science-psf",
        metavar="FILE",
        help="the science image's PSF, a FITS image (odd-sized, centred; a WebbPSF file's "
        "detector-sampled HDU): crossConvolve convolves the template with it, preconvolve the "
        "science image; D's PSF is made of it. By default measured from the stars (cross-"
        "convolution) or a Gaussian of the FWHM",
    )
    fit.add_argument(
        "--template-psf",
        metavar="FILE",
        help="the template's PSF, a FITS image, as --science-psf",
    )
    fit.add_argument(
        "--candidates",
        metavar="FILE",
        help="kernel source positions: a text/CSV/ECSV table with x and y columns (0-based "
        "parent pixel coordinates), instead of finding stars",
    )
    fit.add_argument(
        "--config-file",
        action="append",
        metavar="PY",
        help="a Python file run with `config` bound to an ImagePsfMatchConfig (repeatable)",
    )
    fit.add_argument(
        "--set",
        action="extend",
        nargs="+",
        metavar="KEY=VALUE",
        help="config overrides such as kernel.active.spatialKernelOrder=1 (values are Python "
        "literals, else strings)",
    )
    sub.set_defaults(func=_run)


def _plane(value: str | None) -> Any:
    """A variance or mask option: an existing path, else a number (a constant), else the path
    (so that reading it reports the missing file)."""
    if value is None or os.path.exists(value):
        return value
    try:
        return float(value)
    except ValueError:
        return value


def _checkNoiseModel(args: argparse.Namespace) -> None:
    """Usage errors for a gain or read noise that cannot be used, named by their options."""
    for which, short in (("science", "i"), ("template", "t")):
        gain = getattr(args, f"{which}_gain")
        readNoise = getattr(args, f"{which}_read_noise")
        if gain is not None and not (math.isfinite(gain) and gain > 0):
            raise _UsageError(
                f"--{which}-gain/-{short}g: expected a positive number of e-/ADU, got {gain:g}"
            )
        if readNoise is None:
            continue
        if not (math.isfinite(readNoise) and readNoise >= 0):
            raise _UsageError(
                f"--{which}-read-noise/-{short}r: expected a number of electrons >= 0, got "
                f"{readNoise:g}"
            )
        if gain is None:
            raise _UsageError(
                f"--{which}-read-noise/-{short}r needs the {which} gain (--{which}-gain/"
                f"-{short}g) to turn electrons into the image's units"
            )


def _checkPositive(args: argparse.Namespace) -> None:
    """Usage errors for the options that only a positive number makes sense for.

    A FWHM of 0 (or below) is not a PSF: it is a slip (an empty shell variable, a sign), not
    a request to measure it, which leaving the option out already is; a constant variance of
    0 would give its pixels infinite weight."""
    for option, value, what in (
        ("--science-fwhm", args.science_fwhm, "the science PSF's FWHM in pixels"),
        ("--template-fwhm", args.template_fwhm, "the template PSF's FWHM in pixels"),
    ):
        if value is not None and not (math.isfinite(value) and value > 0):
            raise _UsageError(
                f"{option} {value:g}: expected {what}, a number > 0 (leave the option out to "
                "have it measured from the stars)"
            )
    for which in ("science", "template"):
        value = _plane(getattr(args, f"{which}_variance"))
        if isinstance(value, float) and not (math.isfinite(value) and value > 0):
            raise _UsageError(
                f"--{which}-variance {value:g}: a constant variance must be a number > 0 (or "
                "give a FITS file)"
            )


def _checkValidRange(args: argparse.Namespace) -> None:
    """Usage errors for a valid data range that is not one, named by its options."""
    for which, short in (("science", "i"), ("template", "t")):
        lower = getattr(args, f"{which}_lower")
        upper = getattr(args, f"{which}_upper")
        for name, value in (("upper", upper), ("lower", lower)):
            if value is not None and math.isnan(value):
                raise _UsageError(f"--{which}-{name}/-{short}{name[0]}: expected a number, got nan")
        if lower is not None and upper is not None and lower >= upper:
            raise _UsageError(
                f"{which} valid data range: the lower limit {lower:g} must be below the upper "
                f"{upper:g}"
            )


def _readInput(
    args: argparse.Namespace, which: str, short: str, info: dict[str, Any] | None = None
) -> Any:
    """Read the science or template image with its options; a variance that cannot be
    estimated names the options that give one. ``info`` gets what `readImage` reports (the
    headers, for ``--align``)."""
    from .. import io as pmio

    def option(name: str) -> Any:
        return getattr(args, f"{which}_{name}")

    try:
        return pmio.readImage(
            getattr(args, which),
            variance=_plane(option("variance")),
            mask=_plane(option("mask")),
            gain=option("gain"),
            readNoise=option("read_noise"),
            upper=option("upper"),
            lower=option("lower"),
            name=which,
            info=info,
        )
    except pmio._VarianceEstimateError as err:
        raise InvalidInputError(
            f"{which}: cannot estimate a variance: {err.reason}; give --{which}-variance (a "
            f"FITS file or a constant), or the {which} gain and read noise (-{short}g and "
            f"-{short}r, in e-/ADU and e-)"
        ) from err


def _inUnits(result: Any, units: str | None) -> Any:
    """``-n``: the result in those units; if the kernel sum cannot rescale it, a warning and
    the result as it is (the difference in science units)."""
    if units is None:
        return result
    try:
        return result.inUnits(units)
    except PsfMatchError as err:
        _log.warning("-n %s not honoured: %s; the difference is left in science units", units, err)
        return result


def _run(args: argparse.Namespace) -> int:
    from .. import io as pmio
    from .._logcapture import collectWarnings
    from ..api import subtract
    from ..io.writing import _writingTogether

    _checkNoiseModel(args)
    _checkValidRange(args)
    _checkPositive(args)
    config = _buildConfig(args)
    # The convolved image is kept only to be written: without --matched the difference takes
    # its planes (a third less memory beside the inputs).
    config.keepMatchedImage = bool(args.matched)
    if args.allow_poor_subtraction:
        config.allowPoorSubtraction = True
    outputs = [("--output", args.output)]
    if args.matched:
        outputs.append(("--matched", args.matched))
    inputs = [args.science, args.template]
    inputs += [
        p
        for p in (
            args.science_variance,
            args.template_variance,
            args.science_mask,
            args.template_mask,
            args.candidates,
            args.science_psf,
            args.template_psf,
            args.science_wcs,
            args.template_wcs,
        )
        if p is not None and os.path.exists(p)
    ]
    inputs += [p for p in args.config_file or () if os.path.exists(p)]
    _checkOutputs(outputs, inputs, args.overwrite)
    _checkPlots(args.plots, args.overwrite)
    candidates = pmio.readPositions(args.candidates) if args.candidates else None

    align = None if args.align in (None, "none") else args.align
    if align is None and (args.science_wcs or args.template_wcs):
        raise _UsageError("--science-wcs and --template-wcs need --align")
    with collectWarnings() as warned:
        scienceInfo: dict[str, Any] = {}
        templateInfo: dict[str, Any] = {}
        science = _readInput(args, "science", "i", scienceInfo)
        template = _readInput(args, "template", "t", templateInfo)
        start = time.perf_counter()
        result = subtract(
            science,
            template,
            mode=config.mode,
            config=config,
            candidates=candidates,
            scienceFwhm=args.science_fwhm,
            templateFwhm=args.template_fwhm,
            ignoreOrigins=args.ignore_origins,
            sciencePsf=args.science_psf,
            templatePsf=args.template_psf,
            align=align,
            scienceWcs=(args.science_wcs or scienceInfo) if align else None,
            templateWcs=(args.template_wcs or templateInfo) if align else None,
        )
        elapsed = time.perf_counter() - start
        # Nothing below reads the inputs or the difference before decorrelation, nor, without
        # --plots, the kernel candidates (whose stamps are views that keep both inputs' image
        # and mask alive): released now, they leave writing the output with the output alone
        # (at 4096² they were 36 bytes a pixel more).
        del science, template
        result = dataclasses.replace(
            result,
            rawDifference=None,
            kernelCellSet=None if args.plots is None else result.kernelCellSet,
        )
        result = _inUnits(result, args.normalize)
    # Reading the inputs here warns too (a stale checksum, conflicting origins), outside
    # subtract's own collection: the report shows every warning of the run.
    result.warnings = list(dict.fromkeys(warned))
    result.metadata["differenceUnits"] = result.differenceUnits
    result.metadata["matchedUnits"] = result.matchedUnits
    # The outputs land together at the end of the block, or none of them does.
    with _writingTogether():
        result.writeFits(args.output, matchedPath=args.matched, overwrite=args.overwrite)
        report = _writePlots(
            result,
            args,
            {
                "science": args.science,
                "template": args.template,
                "difference": args.output,
                "elapsed (s)": round(elapsed, 2),
            },
        )
        _checkNotInterrupted()

    if not args.quiet:
        _printSummary(result, args, elapsed)
        if report is not None:
            print(f"  report          : {report}")
    return 0


def _printSummary(result: Any, args: argparse.Namespace, elapsed: float) -> None:
    md = result.metadata

    def get(key: str, default: Any = math.nan) -> Any:
        return md[key] if key in md else default

    stats = result.statistics()
    convolved = {
        "Template": "template",
        "Science": "science image",
        "CrossConvolution": "both, each with the other's PSF (cross-convolution)",
    }.get(result.convolved, "template, to the PSF-filtered science image (score image)")
    lines = [
        f"psfmatch: subtracted {args.template} from {args.science} in {elapsed:.1f} s",
        f"  convolved image : {convolved} (FWHM template {get('templatePsfSize'):.2f} px, "
        f"science {get('sciencePsfSize'):.2f} px)",
        f"  kernel sum      : {result.kernelSum:.6f} (at the image centre)",
        *([f"  mode auto       : {get('autoModeReason')}"] if "autoModeReason" in md else []),
        f"  kernel sources  : {get('nCandidatesGood', 0)} used of {get('nPsfSources', 0)} "
        f"candidates; spatial orders kernel "
        f"{get('spatialKernelOrderUsed', result.config.kernel.active.spatialKernelOrder)}, "
        f"background {get('spatialBgOrderUsed', result.config.kernel.active.spatialBgOrder)}",
        f"  difference      : {result.differenceUnits} units; mean {stats['DMEAN']:.4g}, std "
        f"{stats['DSIG']:.4g} (expected {stats['DSIGE']:.4g}), mean (D/sigma)^2 "
        f"{stats['X2NRM']:.3f}",
        f"  wrote           : {args.output}" + (f", {args.matched}" if args.matched else ""),
    ]
    if "alignGrid" in md:
        lines.insert(
            -1,
            f"  aligned         : the {md['alignResampled']} resampled onto the {md['alignGrid']} "
            f"grid by the WCSs ({100 * float(md['alignFootprintFraction']):.1f}% covered, "
            f"{float(md['alignSeconds']):.2f} s)",
        )
    print("\n".join(lines))
