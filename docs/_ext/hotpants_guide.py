# SPDX-License-Identifier: BSD-3-Clause
"""What the HOTPANTS migration guide says about each option psfmatch refuses, and how HOTPANTS'
outputs and header keys correspond to psfmatch's.

Plain data, no Sphinx: the docs build (``psfmatch_docs.py``) renders it, and
``tests/test_docs.py`` holds it to ``psfmatch.cli.hotpants._UNSUPPORTED`` so that an option
refused by the code but not explained here (or the reverse) fails the tests and the build.
"""

from __future__ import annotations

#: HOTPANTS (v5.1.11) option -> (what it does in HOTPANTS, why psfmatch refuses it and what to
#: do instead). Grouped as HOTPANTS' usage text lists them.
REFUSED: dict[str, tuple[str, str]] = {
    # Inputs
    "-tuk": (
        "upper valid count of the template for the kernel fit only",
        "one valid range per image (`-tu`) serves the fit and the subtraction; the fit already "
        "leaves out saturated (`SAT`) pixels and their neighbours",
    ),
    "-iuk": (
        "upper valid count of the science image for the kernel fit only",
        "as `-tuk`: use `-iu`",
    ),
    "-tp": (
        "ADU pedestal of the template",
        "subtract the pedestal from the image before; the variance model (`-tg`, `-tr`) takes "
        "the pixel values as they are",
    ),
    "-ip": ("ADU pedestal of the science image", "as `-tp`"),
    "-tni": (
        "template noise image (sigma per pixel)",
        "psfmatch takes a variance (`--template-variance FITS|NUMBER`): an alias would read "
        "a sigma image as a variance; square it and pass it there",
    ),
    "-ini": ("science noise image (sigma per pixel)", "as `-tni`: `--science-variance`"),
    "-tmi": (
        "template mask image",
        "psfmatch's `--template-mask` takes an LSST mask-plane image whose bits name planes "
        "(`BAD`, `SAT`, ...), not HOTPANTS' convention; convert it, or put the bad pixels "
        "outside `-tl`/`-tu`",
    ),
    "-imi": ("science mask image", "as `-tmi`: `--science-mask`"),
    # Kernel, stamps and regions
    "-ki": (
        "use the kernel table stored in an image header",
        "psfmatch always fits its kernel; a fitted kernel is read back from the output's "
        "`KERNEL_BASIS` and `KERNEL_COEFFS` HDUs in Python",
    ),
    "-kcs": (
        "step of the piecewise-constant spatial convolution",
        "psfmatch convolves with the kernel evaluated at every pixel (algorithm §7.10), so there "
        "is no step to choose",
    ),
    "-ft": (
        "RMS threshold for a good centroid in the kernel fit",
        "kernel stars are chosen and clipped by the reference's settings "
        "(`--set selection.minSnr=...`, `kernel.active.candidateResidualStdMax`, ...; "
        "see the configuration reference)",
    ),
    "-sft": ("scale of `-ft` when too few stamps are filled", "as `-ft`"),
    "-nft": ("fraction of stamps that may stay unfilled", "as `-ft`"),
    "-mins": (
        "spread of the input masks, in kernel half-widths",
        "psfmatch grows the convolved image's mask by the kernel's own footprint (the mask of D "
        "is the science mask OR the template mask grown by the kernel)",
    ),
    "-mous": ("spread of the output mask", "as `-mins`"),
    "-omi": (
        "output bad-pixel mask image",
        "the difference file carries its mask as the `MASK` HDU, with named planes",
    ),
    "-gd": (
        "use only a subsection of the image",
        "cut the images first (or give the subsection an origin `xy0`); D covers the science "
        "image's box",
    ),
    "-nrx": (
        "number of independent regions in x",
        "psfmatch fits one spatially varying kernel over the whole image (`-ko`), with no "
        "seams between regions",
    ),
    "-nry": ("number of independent regions in y", "as `-nrx`"),
    "-rf": ("file of image regions", "as `-nrx`"),
    "-rkw": ("header keywords giving the regions", "as `-nrx`"),
    "-nsx": (
        "stamps per region in x",
        "the stamp grid is the reference's spatial cells: `--set kernel.active.sizeCellX=...` "
        "(and `sizeCellY`, `nStarPerCell`)",
    ),
    "-nsy": ("stamps per region in y", "as `-nsx`"),
    "-ssf": (
        "file of substamp centres",
        "`--candidates FILE` takes kernel-star positions as a table with `x`, `y` columns in "
        "0-based parent pixels; HOTPANTS' file follows its own conventions, so convert it",
    ),
    "-cmp": ("`.cmp` file of substamp centres", "as `-ssf`"),
    "-afssc": (
        "find stamp centres automatically with `-ssf`/`-cmp`",
        "psfmatch finds its kernel stars itself unless `--candidates` is given",
    ),
    "-nss": (
        "centroids used per stamp",
        "the reference's `nStarPerCell` plays this part (`--set kernel.active.nStarPerCell=...`)",
    ),
    "-rss": (
        "half-width of the substamp around each centroid",
        "the stamp size follows the kernel size and the FWHMs (`kernel.active.kernelSize`, "
        "`scaleByFwhm`, `kernelSizeFwhmScaling`)",
    ),
    "-savexy": (
        "save the stamp positions",
        "the kernel stars are written as the `CANDIDATES` HDU of the difference file "
        "(and `result.candidates` in Python)",
    ),
    "-fom": (
        "figure of merit for choosing the convolution direction",
        "`--mode auto` chooses by the measured PSFs (the narrower one is convolved, or both "
        "when neither is: cross-convolution); `-c t|i` forces a direction",
    ),
    "-sconv": (
        "convolve every region in the same direction",
        "there is one region, so one direction",
    ),
    "-ssig": (
        "sigma-clipping threshold of the statistics",
        "clipping follows the reference's settings (`kernel.active.maxSpatialIterations`, "
        "`candidateResidualMeanMax`, ...; see the configuration reference)",
    ),
    "-ks": ("high-sigma rejection of bad stamps in the fit", "as `-ssig`"),
    "-kfm": (
        "fraction of the kernel's |sum| for a pixel to count as good",
        "pixels reached by masked template pixels get the mask bits of those pixels (the mask "
        "is grown by the kernel), with no fraction to tune",
    ),
    "-okn": (
        "rescale the noise of 'ok' pixels",
        "the variance of D is propagated exactly (Var(S) + K² ⊗ Var(T), then decorrelated)",
    ),
    "-fi": (
        "value given to invalid pixels",
        "invalid pixels of D are NaN with variance +inf and the `NO_DATA` bit, never a "
        "sentinel value",
    ),
    "-fin": ("noise-image fill value", "as `-fi`"),
    "-convvar": (
        "convolve the variance instead of the noise",
        "psfmatch always convolves the variance (with K²), which is the correct propagation",
    ),
    # Outputs
    "-oni": (
        "output noise image",
        "the difference file's `VARIANCE` HDU holds the variance of D",
    ),
    "-ond": (
        "output noise-scaled difference image",
        "D/σ is `IMAGE / sqrt(VARIANCE)` of the difference file",
    ),
    "-nim": ("add the noise image as a layer", "the difference file has separate HDUs"),
    "-ndm": ("add the noise-scaled difference as a layer", "as `-nim`"),
    "-cim": (
        "add the convolved image as a layer",
        "`-oci FILE` (`--matched`) writes the convolved image to its own file",
    ),
    "-allm": ("output every layer", "as `-nim`"),
    "-nc": (
        "do not clobber an existing output",
        "psfmatch never replaces an output unless `--overwrite` is given",
    ),
    "-hki": (
        "print the kernel to the output header",
        "the kernel is always written, as the `KERNEL`, `KERNEL_BASIS` and `KERNEL_COEFFS` HDUs",
    ),
    "-oki": ("write the kernel information to a new file", "as `-hki`"),
    "-sht": (
        "16-bit integer output images",
        "outputs are floating point (float32 for float32 inputs), NaN where undefined",
    ),
    "-obs": ("BSCALE of 16-bit output", "as `-sht`"),
    "-obz": ("BZERO of 16-bit output", "as `-sht`"),
    "-nsht": ("16-bit integer noise image", "as `-sht`"),
    "-nbs": ("BSCALE of the 16-bit noise image", "as `-sht`"),
    "-nbz": ("BZERO of the 16-bit noise image", "as `-sht`"),
    "-pca": (
        "kernel basis read from FITS files",
        "not on the command line; in Python, a basis from `psfmatch.makeKernelBasisList` or "
        "the PCA basis of the reference (`--set kernel.active.usePcaForSpatialKernel=True`)",
    ),
}

#: HOTPANTS output -> what psfmatch writes for it.
OUTPUTS: list[tuple[str, str]] = [
    (
        "`-outim` difference image",
        "`--output`: the `IMAGE`, `MASK`, `VARIANCE` HDUs and the kernel HDUs",
    ),
    ("`-oci` convolved image", "`--matched`: the convolved image (`IMAGE`, `MASK`, `VARIANCE`)"),
    ("`-oni` noise image (σ)", "the `VARIANCE` HDU (σ²) of the difference file"),
    ("`-omi` output mask", "the `MASK` HDU, one bit per named plane (`MP_<PLANE>` keys)"),
    (
        "`-hki`/`-oki` kernel info",
        "the `KERNEL`, `KERNEL_BASIS`, `KERNEL_COEFFS`, `BACKGROUND` HDUs",
    ),
    ("`-savexy` stamp positions", "the `CANDIDATES` HDU"),
]

#: psfmatch's primary-header keys that HOTPANTS also writes, and what they hold. Each is written
#: as it is and in HOTPANTS' form for region 00 (``KSUM`` and ``KSUM00``); the tests check that a
#: result's header has both.
HEADER_KEYS: list[tuple[tuple[str, ...], str]] = [
    (("KSUM",), "kernel sum at the image centre"),
    (("CONVOL",), "the image convolved: TEMPLATE, IMAGE, PRECONV (score image) or CROSS"),
    (("NGAUSS",), "Gaussians of the Alard–Lupton basis (0: delta functions)"),
    (("KO", "BGO"), "spatial orders of the kernel and of the background"),
    (("NSTAMP",), "kernel stars used in the final fit"),
    (("SSSIG", "SSSCAT"), "mean and scatter over the stars of rms(D/σ) under the spatial model"),
    (("X2NRM",), "mean of (D/σ)² over usable pixels"),
    (
        ("DMEAN", "DSIG", "DSIGE"),
        "mean and standard deviation of D over usable pixels; the expected σ",
    ),
]
