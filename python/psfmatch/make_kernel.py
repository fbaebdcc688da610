# SPDX-License-Identifier: BSD-3-Clause
"""Kernel making: kernel sources → basis → cell set → solve (the reference's makeKernel stage).

`MakeKernelTask` finds the kernel sources (sep's detections of the science image measured in
both images, or positions the user gives), measures each image's PSF FWHM on them (twice the
median half-light radius), builds the basis the FWHMs call for (`makeKernelBasisList`), puts
one `KernelCandidate` per source into a `SpatialCellSet` and fits the spatially varying kernel
and differential background with `PsfMatchTask._solve`. Which image is convolved (the *target*)
and which one it is matched to (the *reference*) is the caller's choice: `run` convolves the
template, as the reference's task does; `psfmatch.subtract_images` chooses by its ``mode``.

The answer is a `KernelFit`: the kernel, the background, the cell set with every candidate's
own fit, and the table of kernel sources with the fit's verdict on each (`kernelSourceTable`).
"""

from __future__ import annotations

__all__ = ["KernelFit", "MakeKernelConfig", "MakeKernelTask", "PsfSizes"]

import math
from dataclasses import dataclass, field
from typing import Any

import lsst.pex.config as pexConfig
import numpy as np
import sep
from astropy.table import Table

from . import _core
from ._psfutil import fwhmFromR50
from ._psfwings import PsfWings, measurePsfWings
from ._sources import _R50_SUBPIX, detectSources
from .basis import makeKernelBasisList
from .candidate import KernelCandidate
from .config import PsfMatchConfigAL, PsfMatchConfigDF, makeKernelControl
from .errors import InsufficientKernelSourcesError, InvalidInputError, PsfMatchError
from .image import Mask, MaskedImage
from .psf_match import PsfMatchTask
from .selection import KernelSourceSelectionConfig, _stampHasBits, selectKernelSources
from .task import Struct

_STATUS_NAMES = {
    _core.KernelCandidate.GOOD: "GOOD",
    _core.KernelCandidate.BAD: "BAD",
    _core.KernelCandidate.UNKNOWN: "UNKNOWN",
}


class MakeKernelConfig(pexConfig.Config):
    """Configuration of `MakeKernelTask`: the kernel basis and fit, and the kernel sources."""

    kernel = pexConfig.ConfigChoiceField(
        doc="The kernel basis and fit: Alard-Lupton (AL) or delta functions (DF).",
        typemap={"AL": PsfMatchConfigAL, "DF": PsfMatchConfigDF},
        default="AL",
    )
    selection: pexConfig.ConfigField[KernelSourceSelectionConfig] = pexConfig.ConfigField(
        dtype=KernelSourceSelectionConfig, doc="How kernel sources are found and filtered."
    )

    def setDefaults(self) -> None:
        super().setDefaults()
        for name in ("AL", "DF"):
            self.kernel[name].fitForBackground = True


@dataclass(frozen=True, eq=False)
class PsfSizes:
    """The two images' PSF FWHMs (pixels), given or measured on the kernel sources, and what
    the measurement found on the way (reused by the final selection of kernel sources).

    Attributes
    ----------
    template, science : `float`
        The FWHMs the basis is built for.
    scienceSources : `numpy.ndarray` or None
        sep's detections of the science image (None for user-given positions).
    radiusCache : `dict`
        Half-light radii already measured, by the selection.
    wings : `PsfWings` or None
        The growth curves' verdict on the PSFs' wings (``scaleByWings``), or None.
    starX, starY : `numpy.ndarray` or None
        The preliminary kernel stars' parent positions, highest S/N first (the measured
        difference PSF's stars, `psfmatch._diffpsf`), or None.
    """

    template: float
    science: float
    scienceSources: np.ndarray | None = None
    radiusCache: dict[str, Any] = field(default_factory=dict)
    wings: PsfWings | None = None
    starX: np.ndarray | None = None
    starY: np.ndarray | None = None

    def detectionPositions(self, xy0: tuple[int, int]) -> tuple[np.ndarray, np.ndarray] | None:
        """The science detections' parent positions (array indices + ``xy0``), the
        neighbours whose light the PSF stackers leave out; None without detections."""
        detections = self.scienceSources
        if detections is None or not len(detections):
            return None
        return (
            np.asarray(detections["x"], dtype=float) + xy0[0],
            np.asarray(detections["y"], dtype=float) + xy0[1],
        )


@dataclass(frozen=True, eq=False)
class KernelFit:
    """What `MakeKernelTask.makeKernel` fitted.

    Attributes
    ----------
    psfMatchingKernel : `LinearCombinationKernel`
        K(x, y).
    backgroundModel : `SpatialBackground`
        b(x, y).
    kernelCellSet : `SpatialCellSet`
        The candidates with their stamps and their own fits.
    spatialSolution : `SpatialKernelSolution`
        The spatial fit.
    sources : `astropy.table.Table`
        The kernel sources (parent ``x``, ``y`` and the selection's columns).
    basisList : `list`
        The basis kernels.
    """

    psfMatchingKernel: Any
    backgroundModel: Any
    kernelCellSet: Any
    spatialSolution: Any
    sources: Table
    basisList: list[Any]


def _asCandidatePositions(candidateList: Any) -> tuple[np.ndarray, np.ndarray]:
    """x, y arrays from a table with ``x``/``y`` columns or a sequence of (x, y) pairs."""
    if hasattr(candidateList, "colnames") or isinstance(candidateList, dict):
        try:
            x, y = candidateList["x"], candidateList["y"]
        except KeyError as err:
            raise InvalidInputError(
                f"candidateList: a table of positions needs x and y columns; missing {err}"
            ) from None
    else:
        try:
            arr = np.asarray(candidateList, dtype=float)
        except (TypeError, ValueError) as err:
            raise InvalidInputError(
                f"candidateList: expected (x, y) pairs or a table with x and y columns: {err}"
            ) from err
        if arr.size == 0:
            arr = arr.reshape(0, 2)
        if arr.ndim != 2 or arr.shape[1] != 2:
            raise InvalidInputError(
                f"candidateList: expected (x, y) pairs or a table with x and y columns, got an "
                f"array of shape {arr.shape}"
            )
        x, y = arr[:, 0], arr[:, 1]
    # A masked entry (an astropy MaskedColumn, a numpy masked array) is no position: its
    # hidden value was used as one (was: a misleading "could not measure a positive FWHM").
    masked = np.ma.getmaskarray(x) | np.ma.getmaskarray(y)
    if isinstance(candidateList, np.ma.MaskedArray):
        masked = masked | np.ma.getmaskarray(candidateList).reshape(len(masked), -1).any(axis=1)
    if masked.any():
        raise InvalidInputError(
            f"candidateList: {int(masked.sum())} position(s) are masked (missing), the first "
            f"at row {int(np.flatnonzero(masked)[0])}; remove them"
        )
    try:
        x = np.asarray(np.ma.getdata(x), dtype=float)
        y = np.asarray(np.ma.getdata(y), dtype=float)
    except (TypeError, ValueError) as err:
        raise InvalidInputError(f"candidateList: x and y must be numbers: {err}") from err
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise InvalidInputError("candidateList: positions must be finite")
    return x, y


def _solvedOrig(cand: Any) -> Any:
    """A candidate's first (ORIG) kernel solution if it was solved, else None (no candidate,
    never built, or left unsolved by the condition-number check)."""
    if cand is None or not cand.isInitialized():
        return None
    solution = cand.getKernelSolution(_core.KernelCandidate.ORIG)
    try:
        solution.getKsum()
    except PsfMatchError:  # built but not solved
        return None
    return solution


class MakeKernelTask(PsfMatchTask):
    """Find kernel sources, build the basis and fit the spatially varying matching kernel.

    Examples
    --------
    >>> from psfmatch.simulate import simulatePair
    >>> sim = simulatePair((256, 256), nStars=60, seed=0)  # a known pair: flux scale 1.25
    >>> result = MakeKernelTask().run(sim.template, sim.science)
    >>> kernelSum = result.psfMatchingKernel.getSum(128.0, 128.0)
    >>> abs(kernelSum - 1.25) < 0.03  # the flux scale, within the fit's noise for ~60 stars
    True
    """

    ConfigClass = MakeKernelConfig
    _DefaultName = "makeKernel"
    config: MakeKernelConfig

    def _badBits(self) -> int:
        planes = set(self.kConfig.badMaskPlanes) | set(self.config.selection.excludeMaskPlanes)
        return Mask.getPlaneBitMask(sorted(planes), skipUnknown=True)

    def _checkStampFits(self, mi: MaskedImage, kernelSize: int, what: str) -> None:
        """Raise `InvalidInputError` unless a candidate stamp (2·kernelSize+1 pixels wide, so
        that the kernel's reach lies inside it) fits in the image."""
        stamp = 2 * int(kernelSize) + 1
        width, height = mi.getDimensions()
        if width < stamp or height < stamp:
            raise InvalidInputError(
                f"the {width} x {height} image is too small for the {what} of "
                f"{kernelSize} x {kernelSize} pixels: a kernel source's stamp is "
                f"{stamp} x {stamp}; lower kernelSize (kernelSizeMin, kernelSizeMax) or use a "
                "larger image"
            )

    def _checkBasisFits(self, basisList: list[Any]) -> None:
        """Raise `InvalidInputError` when the basis has more kernels than the kernel has
        pixels: they are then linearly dependent, every candidate's normal equations are
        singular, and the fit is whatever the pseudo-inverse makes of it (a 3 x 3 kernel with
        the default 27 Alard-Lupton kernels gave D a standard deviation 6 times its noise on a
        simulated 512² pair)."""
        width, height = basisList[0].getWidth(), basisList[0].getHeight()
        if len(basisList) > width * height:
            raise InvalidInputError(
                f"the kernel basis has {len(basisList)} kernels but a {width} x {height} kernel "
                f"has only {width * height} pixels, so they cannot be independent; raise "
                "kernelSize (-r) or lower alardNGauss/alardDegGauss (-ng)"
            )

    def _buildCellSet(
        self,
        targetMaskedImage: MaskedImage,
        referenceMaskedImage: MaskedImage,
        sources: Table,
        kernelSize: int,
    ) -> Any:
        """A `SpatialCellSet` with one candidate per source: stamps of 2·kernelSize+1 pixels
        of the image to convolve (target) and the one to match (reference)."""
        kConfig = self.kConfig
        bbox = targetMaskedImage.getBBox()
        cellSet = _core.SpatialCellSet(bbox, kConfig.sizeCellX, kConfig.sizeCellY)
        half = int(kernelSize)
        ratings = sources["snr"] if "snr" in sources.colnames else [None] * len(sources)
        control = makeKernelControl(kConfig)  # one for all candidates (each keeps a copy)
        # The working images are checked (one grid, every pixel finite) and every source's
        # stamp lies inside them (the selection's edge cut, or _userSources'): the candidates
        # read their stamps from the planes (views, as LSST's), none keeps a copy.
        planes = KernelCandidate._stampPlanes(targetMaskedImage, referenceMaskedImage)
        for x, y, rating in zip(sources["x"], sources["y"], ratings, strict=True):
            ix, iy = int(math.floor(x + 0.5)), int(math.floor(y + 0.5))
            box = _core.Box2I((ix - half, iy - half), (2 * half + 1, 2 * half + 1))
            cand = KernelCandidate._fromPlanes(
                float(x),
                float(y),
                planes,
                box,
                control,
                math.nan if rating is None else float(rating),
            )
            cellSet.insertCandidate(cand)
        return cellSet

    def _userSources(
        self,
        candidateList: Any,
        bbox: Any,
        kernelSize: int | None,
        *,
        images: tuple[MaskedImage, MaskedImage] | None = None,
    ) -> Table:
        """The user's positions as a table; with ``kernelSize``, only those whose stamps lie
        inside the image and, given the two ``images``, carry no bad mask bit in either (the
        cuts sep's detections get), or an `InsufficientKernelSourcesError`."""
        x, y = _asCandidatePositions(candidateList)
        if len(x) == 0:
            raise InsufficientKernelSourcesError(
                0, self.config.selection.minKernelSources, "candidateList is empty"
            )
        outside = ~(
            (x >= bbox.getMinX() - 0.5)
            & (x < bbox.getMaxX() + 0.5)
            & (y >= bbox.getMinY() - 0.5)
            & (y < bbox.getMaxY() + 0.5)
        )
        if outside.any():
            k = int(np.argmax(outside))
            raise InvalidInputError(
                f"candidateList: {int(outside.sum())} position(s) lie outside the image "
                f"{bbox}, the first at (x, y) = ({x[k]}, {y[k]})"
            )
        table = Table({"x": x, "y": y})
        if kernelSize is not None:
            half = int(kernelSize)
            ix = np.floor(x + 0.5)
            iy = np.floor(y + 0.5)
            fits = (
                (ix - half >= bbox.getMinX())
                & (iy - half >= bbox.getMinY())
                & (ix + half <= bbox.getMaxX())
                & (iy + half <= bbox.getMaxY())
            )
            masked = np.zeros(len(fits), dtype=bool)
            if images is not None:
                bits = self._badBits()
                x0, y0 = bbox.getMinX(), bbox.getMinY()
                ixs = np.where(fits, ix - x0, half).astype(np.int64)
                iys = np.where(fits, iy - y0, half).astype(np.int64)
                for mi in images:
                    masked |= _stampHasBits(mi.mask, ixs, iys, half, bits)
                masked &= fits
            table = table[fits & ~masked]
            table.meta.update(
                {
                    "nGiven": len(fits),
                    "nRejectedEdge": int((~fits).sum()),
                    "nRejectedMasked": int(masked.sum()),
                }
            )
            if masked.any():
                self.log.info(
                    "%d of the %d given kernel-source positions have bad mask bits in their "
                    "stamps and are not used",
                    int(masked.sum()),
                    len(fits),
                )
            nMin = self.config.selection.minKernelSources
            if len(table) < nMin:
                raise InsufficientKernelSourcesError(
                    len(table),
                    nMin,
                    f"of the {len(fits)} given positions {int((~fits).sum())} are closer than "
                    f"{half} pixels (the stamp half-width) to the edge and "
                    f"{int(masked.sum())} have bad mask bits in their stamps",
                )
        return table

    def _measureUserFwhm(self, mi: MaskedImage, table: Table) -> float:
        """FWHM at user-given positions: twice the median half-light radius (sep)."""
        data = np.array(mi.image, dtype=np.float64)  # sep takes writable buffers only
        masked = (mi.mask & self._badBits()) != 0
        background = sep.Background(data, mask=masked)
        x0, y0 = mi.getXY0()
        r50, flag = sep.flux_radius(
            data - background.back(),
            np.asarray(table["x"], dtype=float) - x0,
            np.asarray(table["y"], dtype=float) - y0,
            np.full(len(table), 15.0),
            0.5,
            subpix=_R50_SUBPIX,
        )
        r50 = r50[(flag == 0) & np.isfinite(r50) & (r50 > 0)]
        return fwhmFromR50(r50)

    def _sourcesInside(self, sources: Table, box: Any, kernelSize: int) -> Table:
        """The sources whose (2·kernelSize+1)² stamps lie inside ``box`` (the inner box of the
        preconvolved science image), or an `InsufficientKernelSourcesError`."""
        half = int(kernelSize)
        ix = np.floor(np.asarray(sources["x"], dtype=float) + 0.5)
        iy = np.floor(np.asarray(sources["y"], dtype=float) + 0.5)
        inside = (
            (ix - half >= box.getMinX())
            & (iy - half >= box.getMinY())
            & (ix + half <= box.getMaxX())
            & (iy + half <= box.getMaxY())
        )
        kept = sources[inside]
        kept.meta.update(sources.meta)
        kept.meta["nRejectedPreconvolutionEdge"] = int((~inside).sum())
        nMin = self.config.selection.minKernelSources
        if len(kept) < nMin:
            raise InsufficientKernelSourcesError(
                len(kept),
                nMin,
                f"{int((~inside).sum())} of the {len(sources)} sources have stamps reaching "
                f"the border of the preconvolved science image (box {box})",
            )
        return kept

    def kernelSourceTable(self, fit: KernelFit) -> Table:
        """The kernel sources with the fit's verdict on each: status, the kernel sum of its
        own (ORIG) fit and χ²; with ``calculateKernelUncertainty`` the 1-σ uncertainties of
        that kernel sum and background from the covariance of the fit's coefficients (the
        inverse normal matrix; with basis sums s, Var(ΣK) = sᵀ Cov s, the background the last
        coefficient). Exact for inverse-variance weights (the covariance's own caveat:
        constantVarianceWeighting assumes a uniform noise field). NaN where there is no fit."""
        table = fit.sources.copy()
        byPosition = {
            (c.getXCenter(), c.getYCenter()): c
            for c in fit.kernelCellSet.getAllCandidates(ignoreBad=False)
        }
        withErrors = self.kConfig.calculateKernelUncertainty
        columns: dict[str, list[Any]] = {
            name: [] for name in ("status", "kernelSum", "chi2", "kernelSumErr", "backgroundErr")
        }
        sums: np.ndarray | None = None  # one basis for every candidate of a cell set
        for x, y in zip(table["x"], table["y"], strict=True):
            cand = byPosition.get((float(x), float(y)))
            solution = _solvedOrig(cand)
            columns["status"].append("UNKNOWN" if cand is None else _STATUS_NAMES[cand.getStatus()])
            columns["kernelSum"].append(math.nan if solution is None else solution.getKsum())
            columns["chi2"].append(math.nan if cand is None else cand.getChi2())
            if not withErrors:
                continue
            kSumErr = backgroundErr = math.nan
            if solution is not None:
                cov = np.asarray(solution.getCovariance())
                if sums is None:
                    sums = np.array([k.getImage().sum() for k in solution.getBasisList()])
                nb = len(sums)
                kSumErr = float(np.sqrt(max(sums @ cov[:nb, :nb] @ sums, 0.0)))
                if cov.shape[0] > nb:
                    backgroundErr = float(np.sqrt(cov[nb, nb]))
            columns["kernelSumErr"].append(kSumErr)
            columns["backgroundErr"].append(backgroundErr)
        for name in ("status", "kernelSum", "chi2"):
            table[name] = columns[name]
        if withErrors:
            table["kernelSumErr"] = columns["kernelSumErr"]
            if self.kConfig.fitForBackground:
                table["backgroundErr"] = columns["backgroundErr"]
        return table

    def measurePsfSizes(
        self,
        template: MaskedImage,
        science: MaskedImage,
        candidateList: Any = None,
        templateFwhmPix: float | None = None,
        scienceFwhmPix: float | None = None,
    ) -> PsfSizes:
        """The FWHMs to build the basis for: the given ones, or twice the median half-light
        radius of each image's kernel sources (a preliminary selection without the kernel
        size, or the user's positions). Records ``templatePsfSize`` and ``sciencePsfSize``.

        Raises
        ------
        InvalidInputError
            A FWHM that is not a positive number.
        """
        templateFwhmPix = givenFwhm("templateFwhmPix", templateFwhmPix)
        scienceFwhmPix = givenFwhm("scienceFwhmPix", scienceFwhmPix)
        selection = self.config.selection
        sSources: np.ndarray | None
        radiusCache: dict[str, Any] = {}
        with self.timer("selectSources"):
            if candidateList is None:
                badBits = self._badBits()
                # Detection through the PSF-matched filter: the given FWHM's, else the
                # config's stand-in (the FWHM is what this measures).
                sSources = detectSources(
                    science,
                    selection.detectionThreshold,
                    badBits,
                    measureRadii=False,
                    meshSize=selection.backgroundMeshSize,
                    filterFwhm=float(scienceFwhmPix or selection.detectionFilterFwhm),
                )
                preliminary = selectKernelSources(
                    template,
                    science,
                    selection,
                    scienceSources=sSources,
                    badBits=badBits,
                    radiusCache=radiusCache,
                )
                measuredT = fwhmFromR50(preliminary["templateR50"])
                measuredS = fwhmFromR50(preliminary["scienceR50"])
            else:
                sSources = None
                preliminary = self._userSources(candidateList, science.getBBox(), None)
                measuredT = self._measureUserFwhm(template, preliminary)
                measuredS = self._measureUserFwhm(science, preliminary)
            templateFwhm = float(templateFwhmPix) if templateFwhmPix else measuredT
            scienceFwhm = float(scienceFwhmPix) if scienceFwhmPix else measuredS
        for name, value in (("templateFwhmPix", templateFwhm), ("scienceFwhmPix", scienceFwhm)):
            if not (math.isfinite(value) and value > 0):
                raise InvalidInputError(
                    f"{name}: could not measure a positive FWHM (got {value}); pass it explicitly"
                )
        self.metadata["templatePsfSize"] = templateFwhm
        self.metadata["sciencePsfSize"] = scienceFwhm
        wings = self._measureWings(template, science, preliminary, (templateFwhm, scienceFwhm))
        starX = np.asarray(preliminary["x"], dtype=float)
        starY = np.asarray(preliminary["y"], dtype=float)
        if "snr" in preliminary.colnames and len(starX):
            order = np.argsort(-np.asarray(preliminary["snr"], dtype=float), kind="stable")
            starX, starY = starX[order], starY[order]
        return PsfSizes(templateFwhm, scienceFwhm, sSources, radiusCache, wings, starX, starY)

    def _measureWings(
        self,
        template: MaskedImage,
        science: MaskedImage,
        stars: Table,
        fwhms: tuple[float, float],
    ) -> PsfWings | None:
        """The growth curves' `PsfWings` on the preliminary kernel stars, where the basis is
        scaled by them (``scaleByFwhm`` and ``scaleByWings``, Alard–Lupton); records
        ``templateWingExcess``, ``scienceWingExcess`` and ``psfHasWings``."""
        kConfig = self.kConfig
        if not (
            isinstance(kConfig, PsfMatchConfigAL) and kConfig.scaleByFwhm and kConfig.scaleByWings
        ):
            return None
        with self.timer("measureWings"):
            wings = measurePsfWings(
                template,
                science,
                np.asarray(stars["x"]),
                np.asarray(stars["y"]),
                fwhms,
                self._badBits(),
                float(kConfig.wingExcessThreshold),
                snr=np.asarray(stars["snr"]) if "snr" in stars.colnames else None,
            )
        for key, value in (
            ("templateWingExcess", wings.templateExcess),
            ("scienceWingExcess", wings.scienceExcess),
        ):
            self.metadata[key] = value if math.isfinite(value) else "nan"
        self.metadata["psfHasWings"] = wings.hasWings
        return wings

    def makeKernel(
        self,
        target: MaskedImage,
        reference: MaskedImage,
        targetFwhm: float,
        referenceFwhm: float,
        sizes: PsfSizes,
        *,
        template: MaskedImage,
        stampImage: MaskedImage,
        candidateList: Any = None,
        innerBox: Any = None,
        basisList: list[Any] | None = None,
        stampHalfWidth: int | None = None,
    ) -> KernelFit:
        """Fit K and b with ``reference ≈ K ⊗ target + b``.

        Parameters
        ----------
        target, reference : `MaskedImage`
            The image to convolve and the one to match, on one grid.
        targetFwhm, referenceFwhm : `float`
            Their PSF FWHMs (pixels): the basis is built for them.
        sizes : `PsfSizes`
            `measurePsfSizes`'s answer (its detections are reused).
        template, stampImage : `MaskedImage`
            The images the kernel sources are selected on: the template, and the science
            image or, for a score image, the preconvolved science image (whose border carries
            EDGE; the detections are still the science image's).
        candidateList : optional
            User positions instead of sep's detections.
        innerBox : `Box2I`, optional
            Keep only the sources whose stamps lie inside it (score image, cross-convolution).
        basisList : `list` of `FixedKernel`, optional
            A basis of the caller's (cross-convolution's small one) instead of the config's;
            it is fitted unregularized and not chosen by the BIC.
        stampHalfWidth : `int`, optional
            Stamps of at least 2·stampHalfWidth + 1 pixels (by default they are twice the
            kernel's width plus one).

        Returns
        -------
        fit : `KernelFit`
        """
        ownBasis = basisList is not None
        if basisList is None:
            basisList = makeKernelBasisList(
                self.kConfig, targetFwhm, referenceFwhm, metadata=self.metadata, wings=sizes.wings
            )
        self._checkBasisFits(basisList)
        # The stamp half-width: the kernel's whole width, so that its reach lies inside.
        kernelSize = max(basisList[0].getWidth(), int(stampHalfWidth or 0))
        self._checkStampFits(stampImage, kernelSize, "kernel")
        with self.timer("selectSources"):
            if candidateList is None:
                sources = selectKernelSources(
                    template,
                    stampImage,
                    self.config.selection,
                    kernelSize=kernelSize,
                    scienceSources=sizes.scienceSources,
                    badBits=self._badBits(),
                    radiusCache=sizes.radiusCache,
                )
            else:
                sources = self._userSources(
                    candidateList,
                    stampImage.getBBox(),
                    kernelSize,
                    images=(template, stampImage),
                )
            if innerBox is not None:
                sources = self._sourcesInside(sources, innerBox, kernelSize)
        self.metadata["nPsfSources"] = len(sources)
        for key, value in sources.meta.items():
            self.metadata[f"selection.{key}"] = value

        if self.kConfig.useBicForKernelBasis and not ownBasis:
            # The BIC refits every candidate; a scratch cell set keeps the solve's clean.
            scratch = self._buildCellSet(target, reference, sources, kernelSize)
            basisList = self._selectBasisByBic(scratch, targetFwhm, referenceFwhm, sizes.wings)
        with self.timer("buildCellSet"):
            cellSet = self._buildCellSet(target, reference, sources, kernelSize)
        spatialSolution, kernel, background = self._solve(
            cellSet, basisList, useRegularization=not ownBasis
        )
        return KernelFit(kernel, background, cellSet, spatialSolution, sources, basisList)

    def run(
        self,
        template: MaskedImage,
        science: MaskedImage,
        candidateList: Any = None,
        templateFwhmPix: float | None = None,
        scienceFwhmPix: float | None = None,
    ) -> Struct:
        """Fit the kernel that matches the template to the science image (``science ≈ K ⊗
        template + b``), as the reference's ``MakeKernelTask.run`` does.

        Parameters
        ----------
        template, science : `MaskedImage`
            Two checked images on one grid (same box), every pixel finite or masked.
        candidateList : optional
            Kernel source positions (parent coordinates) instead of sep's detections.
        templateFwhmPix, scienceFwhmPix : `float`, optional
            PSF FWHMs in pixels, instead of measuring them.

        Returns
        -------
        result : `Struct`
            ``psfMatchingKernel``, ``backgroundModel``, ``kernelCellSet`` and
            ``kernelSources`` (`kernelSourceTable`).
        """
        for name, mi in (("template", template), ("science", science)):
            if not isinstance(mi, MaskedImage):
                raise InvalidInputError(f"{name}: expected a MaskedImage, got {type(mi).__name__}")
        if template.getBBox() != science.getBBox():
            raise InvalidInputError(
                f"template and science must share one box: {template.getBBox()} vs "
                f"{science.getBBox()} (ImagePsfMatchTask places a template by its origin)"
            )
        sizes = self.measurePsfSizes(
            template, science, candidateList, templateFwhmPix, scienceFwhmPix
        )
        fit = self.makeKernel(
            template,
            science,
            sizes.template,
            sizes.science,
            sizes,
            template=template,
            stampImage=science,
            candidateList=candidateList,
        )
        return Struct(
            psfMatchingKernel=fit.psfMatchingKernel,
            backgroundModel=fit.backgroundModel,
            kernelCellSet=fit.kernelCellSet,
            kernelSources=self.kernelSourceTable(fit),
        )


def givenFwhm(name: str, value: Any) -> float | None:
    """A FWHM the caller gave, checked: `None` (measure it) or a finite number > 0.

    Checked before any use, because a NaN reached the detection filter's size (a bare
    `ValueError`), a string was taken as truthy and a bool as 1 pixel, a negative value was
    reported as a failed measurement, and 0 silently meant "measure it".
    """
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.number)):
        raise InvalidInputError(
            f"{name}: expected a FWHM in pixels (a number > 0) or None to measure it, "
            f"got {type(value).__name__} {value!r}"
        )
    fwhm = float(value)
    if not (math.isfinite(fwhm) and fwhm > 0):
        raise InvalidInputError(
            f"{name}: expected a FWHM in pixels, a finite number > 0, got {fwhm}; "
            "leave it out (None) to have it measured from the stars"
        )
    return fwhm
