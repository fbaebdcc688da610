# SPDX-License-Identifier: BSD-3-Clause
"""`simulatePair`: the steps of a simulated pair, in order."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .._psfmodel import GaussianPsfModel
from ..task import Struct
from .arguments import _checkArguments
from .images import _observe, _renderScenes, _scienceBackground
from .sources import _drawStars, _drawTransients, _drawVariables, _starTable, _transientTable
from .truth import SimulationTruth
from .wcs import _renderTemplate

__all__ = ["simulatePair"]


def simulatePair(
    shape: tuple[int, int] = (1024, 1024),
    *,
    nStars: int = 400,
    seed: int | None = 0,
    templateSigma: float | GaussianPsfModel | Callable[..., Any] = 1.6,
    scienceSigma: (float | tuple[float, float] | GaussianPsfModel | Callable[..., Any]) = (
        2.2,
        2.8,
    ),
    fluxScale: float = 1.25,
    background: float | tuple[float, float, float] = (50.0, 0.01, -0.005),
    templateSky: float = 100.0,
    templateSkySigma: float = 2.0,
    scienceSkySigma: float = 8.0,
    gain: float = 1.0,
    fluxRange: tuple[float, float] = (2e3, 2e5),
    fluxIndex: float = 0.75,
    nTransients: int = 10,
    transientFlux: float | Sequence[float] | np.ndarray = 5e3,
    nVariables: int = 0,
    variableFactorRange: tuple[float, float] = (1.5, 3.0),
    saturation: float | None = None,
    edge: int = 0,
    dtype: Any = np.float32,
    xy0: tuple[int, int] = (0, 0),
    templateWcs: Any = None,
    scienceWcs: Any = None,
    templateShape: tuple[int, int] | None = None,
) -> Struct:
    """Simulate a template/science image pair with a known matching kernel and background.

    Parameters
    ----------
    shape : `tuple` [`int`, `int`], optional
        ``(ny, nx)`` of both images.
    nStars : `int`, optional
        Number of stars, placed uniformly over the image (centres anywhere in it, so sub-pixel
        offsets are random) without any minimum separation: the default density (one star per
        ~2600 pixels) leaves most stars isolated; more give realistic crowding.
    seed : `int` or `None`, optional
        Seed of the independent random streams for the stars, the variables, the transients
        and each image's noise; ``None`` draws fresh entropy. The star list depends only on
        ``seed``, ``shape``, ``nStars``, ``fluxRange`` and ``fluxIndex`` (and the first ``n``
        stars are the same for any ``nStars >= n``), never on the noise or the PSFs.
    templateSigma : `float`, `GaussianPsfModel` or callable, optional
        Template PSF: a constant round sigma (pixels), a model, or a function as accepted by
        `GaussianPsfModel`.
    scienceSigma : `float`, (`float`, `float`), `GaussianPsfModel` or callable, optional
        Science PSF. A pair ``(s0, s1)`` is a round sigma varying linearly from ``s0`` at the
        first column to ``s1`` at the last. A callable ``f(x, y) -> (sigmaX, sigmaY, theta)``
        gives elliptical PSFs. It may be narrower than the template's (deconvolution).
    fluxScale : `float`, optional
        Science photometry = ``fluxScale`` × template photometry; the true kernel sum.
    background : `float` or (`float`, `float`, `float`), optional
        ``(b0, bx, by)`` of the science-minus-matched-template background
        ``b(x, y) = b0 + bx x + by y`` in parent coordinates; a number is ``b0`` alone.
    templateSky : `float`, optional
        Flat sky level of the template; the science sky is ``fluxScale · templateSky + b``.
    templateSkySigma, scienceSkySigma : `float`, optional
        Standard deviation (>= 0) of each image's sky noise.
    gain : `float`, optional
        Electrons per count (> 0, may be ``inf``): a source of ``s`` counts adds ``s / gain``
        to the variance (Gaussian noise of Poisson-like variance).
    fluxRange : (`float`, `float`), optional
        Range of star fluxes (template units), ``0 < low <= high``.
    fluxIndex : `float`, optional
        Fluxes follow ``N(>F) ∝ F^-fluxIndex`` (>= 0); 0.75 gives a useful share of bright
        stars (1.5 would be the Euclidean counts).
    nTransients : `int`, optional
        Point sources in the science image only, placed at least one science stamp half-width
        ``h = ceil(6 sigma_s,max)`` (17 pixels by default) from every star and from the border
        (plus ``edge``), and ``2 h`` from each other.
    transientFlux : `float` or sequence of `float`, optional
        Transient flux in science units, one value or one per transient.
    nVariables : `int`, optional
        Stars, chosen among those at least as bright as the median, whose science flux is
        ``fluxScale · flux`` times a factor or its inverse (at random), the factor drawn
        log-uniformly from ``variableFactorRange``.
    variableFactorRange : (`float`, `float`), optional
        ``1 <= low <= high``.
    saturation : `float`, optional
        If given, pixels at or above it (after noise) are set to it and get the ``SAT`` bit.
    edge : `int`, optional
        Width of a border whose pixels get the ``EDGE`` and ``NO_DATA`` bits and image value 0.
    dtype : numpy dtype, optional
        ``float32`` or ``float64`` for the image and variance planes and the noise-free models.
    xy0 : (`int`, `int`), optional
        Parent coordinates of pixel ``[0, 0]`` of both images.
    templateWcs : `astropy.wcs.WCS`, optional
        Render the template on its own pixel grid, described by this celestial WCS (SIP and
        TPV distortions included; `tangentWcs` makes one), from the sky that ``scienceWcs``
        gives the science image: every star at the template pixel of its sky position,
        through the template PSF as it looks in template pixels, with its template flux.
        ``templateSigma`` and ``templateSky`` are then in science pixels (the sky's units:
        ``templateSky`` per science pixel area), ``templateSkySigma`` per template pixel. See
        `psfmatch.simulate.wcs`.
    scienceWcs : `astropy.wcs.WCS`, optional
        The science image's WCS, with ``templateWcs``; by default ``tangentWcs(shape)``.
    templateShape : (`int`, `int`), optional
        ``(ny, nx)`` of a template with its own WCS; by default ``shape``.

    Returns
    -------
    result : `psfmatch.task.Struct`
        ``template``, ``science`` : `psfmatch.MaskedImage`
            The pair, with variance planes ``skySigma² + sources / gain`` (noise-free sources)
            equal to the variance of the noise that was added.
        ``stars`` : `numpy.ndarray` (structured)
            Fields ``x``, ``y`` (parent), ``flux`` (template), ``scienceFlux``,
            ``variable`` (bool) and ``nearestDistance`` (pixels to the nearest other star).
        ``transients`` : `numpy.ndarray` (structured)
            Fields ``x``, ``y``, ``flux`` (science units).
        ``truth`` : `SimulationTruth`
            The kernel sum, background, matching kernel, FWHMs and noise-free images.
        ``scienceWcs``, ``templateWcs`` : `astropy.wcs.WCS`
            With ``templateWcs`` only: the two images' WCSs.

    Raises
    ------
    InvalidInputError
        If an argument is out of range (the message names it), or the transients cannot be
        placed away from the stars.

    Notes
    -----
    Stars are pixel-integrated Gaussians rendered into stamps reaching 6 sigma, so the science
    image equals the template convolved with the continuous matching kernel up to ~1e-9 of
    each star's flux (stamp truncation) and float rounding; see
    `SimulationTruth.matchingKernelImage` for the accuracy of a sampled kernel. Noise is
    Gaussian, drawn in ``dtype`` from streams separate from the stars'.

    With ``templateWcs`` the stars are those of the pair without it (they lie in the science
    frame), and so are the science image and its noise; the template sits on its own grid.
    Resampled onto the science grid with flux conserved it holds every star at its template
    flux and the sky ``templateSky`` per pixel, so `SimulationTruth`'s kernel sum and
    background hold as they are; its PSF is then the template PSF widened by the resampling,
    which `SimulationTruth.matchingKernelImage` does not include.
    """
    p = _checkArguments(
        shape,
        nStars=nStars,
        seed=seed,
        templateSigma=templateSigma,
        scienceSigma=scienceSigma,
        fluxScale=fluxScale,
        background=background,
        templateSky=templateSky,
        templateSkySigma=templateSkySigma,
        scienceSkySigma=scienceSkySigma,
        gain=gain,
        fluxRange=fluxRange,
        fluxIndex=fluxIndex,
        nTransients=nTransients,
        transientFlux=transientFlux,
        nVariables=nVariables,
        variableFactorRange=variableFactorRange,
        saturation=saturation,
        edge=edge,
        dtype=dtype,
        xy0=xy0,
        scienceWcs=scienceWcs,
        templateWcs=templateWcs,
        templateShape=templateShape,
    )
    # Random streams: independent, so the stars never depend on the noise.
    streams = np.random.SeedSequence(p.seed).spawn(5)
    starSeq, variableSeq, transientSeq, templateNoiseSeq, scienceNoiseSeq = streams

    starX, starY, flux = _drawStars(starSeq, p)
    scienceFlux, variable = _drawVariables(variableSeq, flux, p)
    transientX, transientY = _drawTransients(transientSeq, starX, starY, p)

    templateSources, scienceSources, difference = _renderScenes(
        p,
        starX,
        starY,
        flux,
        scienceFlux,
        variable,
        transientX,
        transientY,
        renderTemplate=p.templateWcs is None,
    )
    if p.templateWcs is None:
        template, templateModel = _observe(
            templateSources, p.templateSky, p.templateSkySigma, templateNoiseSeq, p
        )
    else:
        # The template on its own grid: the same noise, masks and model, in its own shape.
        assert p.templateShape is not None
        templateSources, skyPerPixel = _renderTemplate(p, starX, starY, flux)
        onGrid = dataclasses.replace(p, ny=p.templateShape[0], nx=p.templateShape[1])
        template, templateModel = _observe(
            templateSources, skyPerPixel, p.templateSkySigma, templateNoiseSeq, onGrid
        )
    del templateSources
    science, scienceModel = _observe(
        scienceSources, _scienceBackground(p), p.scienceSkySigma, scienceNoiseSeq, p
    )
    del scienceSources

    truth = SimulationTruth(
        fluxScale=p.fluxScale,
        backgroundCoefficients=p.background,
        templateSky=p.templateSky,
        templatePsf=p.templatePsf,
        sciencePsf=p.sciencePsf,
        templateModel=templateModel,
        scienceModel=scienceModel,
        differenceModel=difference.astype(p.dtype),
        bbox=(p.x0, p.y0, p.nx, p.ny),
    )
    grids = (
        {} if p.templateWcs is None else {"scienceWcs": p.scienceWcs, "templateWcs": p.templateWcs}
    )
    return Struct(
        template=template,
        science=science,
        stars=_starTable(starX, starY, flux, scienceFlux, variable),
        transients=_transientTable(transientX, transientY, p.transientFlux),
        truth=truth,
        **grids,
    )
