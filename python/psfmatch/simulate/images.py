# SPDX-License-Identifier: BSD-3-Clause
"""From the sky of a simulated pair to its images: the sources rendered through each PSF, the
science background, the noise and its variance, and the mask bits."""

from __future__ import annotations

from typing import Any

import numpy as np

from .._psfmodel import _renderSources
from ..image import Mask, MaskedImage
from .arguments import _PairParameters


def _renderScenes(
    p: _PairParameters,
    starX: np.ndarray,
    starY: np.ndarray,
    flux: np.ndarray,
    scienceFlux: np.ndarray,
    variable: np.ndarray,
    transientX: np.ndarray,
    transientY: np.ndarray,
    *,
    renderTemplate: bool = True,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The noise-free sources (float64, no sky) of the template and of the science image,
    and what changed: the transients plus each variable star's change of flux.

    The science image holds every star at ``fluxScale · flux`` through the science PSF, plus
    the change, so that it is exactly the template matched by the kernel plus the change.
    Without ``renderTemplate`` (a template on its own grid, `psfmatch.simulate.wcs`) the
    template's sources are an empty array.
    """
    shape, xy0 = (p.ny, p.nx), (p.x0, p.y0)
    if renderTemplate:
        templateSources = _renderSources(shape, xy0, starX, starY, flux, p.templatePsf)
    else:
        templateSources = np.zeros((0, 0))
    scienceSources = _renderSources(shape, xy0, starX, starY, p.fluxScale * flux, p.sciencePsf)
    changeX = np.concatenate([starX[variable], transientX])
    changeY = np.concatenate([starY[variable], transientY])
    changeFlux = np.concatenate(
        [scienceFlux[variable] - p.fluxScale * flux[variable], p.transientFlux]
    )
    difference = _renderSources(shape, xy0, changeX, changeY, changeFlux, p.sciencePsf)
    scienceSources += difference
    return templateSources, scienceSources, difference


def _scienceBackground(p: _PairParameters) -> np.ndarray:
    """The science image's sky: ``fluxScale · templateSky + b(x, y)`` (float64)."""
    b0, bx, by = p.background
    yy = (p.y0 + np.arange(p.ny, dtype=float))[:, None]
    xx = (p.x0 + np.arange(p.nx, dtype=float))[None, :]
    return p.fluxScale * p.templateSky + b0 + bx * xx + by * yy


def _addNoise(
    sources: np.ndarray,
    sky: Any,
    skySigma: float,
    seq: np.random.SeedSequence,
    p: _PairParameters,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The image with Gaussian noise, its variance ``skySigma² + sources / gain`` and the
    noise-free model ``sources + sky``, all three in the output dtype."""
    variance = np.maximum(sources, 0.0)
    variance /= p.gain
    variance += skySigma * skySigma
    model = sources + sky
    noise = np.random.default_rng(seq).standard_normal((p.ny, p.nx), dtype=p.dtype.type)
    image = (model + noise * np.sqrt(variance)).astype(p.dtype)
    return image, variance.astype(p.dtype), model.astype(p.dtype)


def _maskPixels(image: np.ndarray, p: _PairParameters) -> np.ndarray:
    """The mask plane of ``image``: ``SAT`` where it reaches ``saturation`` (clipped there),
    ``EDGE | NO_DATA`` on the border of width ``edge`` (set to 0). Changes ``image``."""
    ny, nx, edge = p.ny, p.nx, p.edge
    mask = np.zeros((ny, nx), dtype=np.int32)
    if p.saturation is not None:
        saturated = image >= p.saturation
        mask[saturated] |= Mask.getPlaneBitMask("SAT")
        image[saturated] = p.saturation
    if edge:
        border = np.ones((ny, nx), dtype=bool)
        border[edge : ny - edge, edge : nx - edge] = False
        mask[border] |= Mask.getPlaneBitMask(["EDGE", "NO_DATA"])
        image[border] = 0.0
    return mask


def _observe(
    sources: np.ndarray,
    sky: Any,
    skySigma: float,
    seq: np.random.SeedSequence,
    p: _PairParameters,
) -> tuple[MaskedImage, np.ndarray]:
    """One image of the pair as observed (noise, variance, mask) and its noise-free model."""
    image, variance, model = _addNoise(sources, sky, skySigma, seq, p)
    mask = _maskPixels(image, p)
    return MaskedImage(image, mask, variance, xy0=(p.x0, p.y0)), model
