# SPDX-License-Identifier: BSD-3-Clause
"""Configuration of the PSF-matching kernel fit.

The three config classes carry the field names, defaults and checks of the reference
(``lsst.ip.diffim``), so that a configuration written for it reads the same here:

- `PsfMatchConfig`: everything shared by the kernel bases;
- `PsfMatchConfigAL`: the Alard-Lupton sum-of-Gaussians basis;
- `PsfMatchConfigDF`: the delta-function (one basis kernel per pixel) basis, with
  regularization.

The fields that only make sense inside the reference's image library (``warpingConfig``,
``afwBackgroundConfig``, ``useAfwBackground``) are not carried over.
``calculateKernelUncertainty``, ``useBicForKernelBasis`` and the risk-based ``lambdaType``
modes, which are inert in the reference, do what their names say in psfmatch.

`makeKernelControl` (in `psfmatch._control`, re-exported here) is the one place where a
config becomes the plain option struct that the compiled core reads.

All lengths are in pixels.
"""

from __future__ import annotations

import lsst.pex.config as pexConfig

__all__ = [
    "PsfMatchConfig",
    "PsfMatchConfigAL",
    "PsfMatchConfigDF",
    "makeKernelControl",
]

# The λ modes that scan lambdaMin .. lambdaMax in steps of lambdaStep.
_RISK_LAMBDA_TYPES = ("minimizeBiasedRisk", "minimizeUnbiasedRisk")


def _fail(config: pexConfig.Config, fieldName: str, message: str) -> None:
    """Raise the error pex_config raises for an invalid field.

    Parameters
    ----------
    config : `lsst.pex.config.Config`
        The config being validated.
    fieldName : `str`
        Name of the field the problem is reported against.
    message : `str`
        What is wrong: the value found and what is allowed.

    Raises
    ------
    lsst.pex.config.FieldValidationError
        Always; it is a subclass of `ValueError`.
    """
    raise pexConfig.FieldValidationError(config._fields[fieldName], config, message)


def _checkOddSize(config: pexConfig.Config, fieldName: str) -> None:
    """Raise unless the named field holds a positive odd kernel size."""
    value = getattr(config, fieldName)
    if value < 1 or value % 2 == 0:
        _fail(config, fieldName, f"{fieldName} must be a positive odd size in pixels; got {value}")


class PsfMatchConfig(pexConfig.Config):
    """Configuration shared by every PSF-matching kernel basis.

    Notes
    -----
    `validate` adds these rules to the per-field checks:

    - ``kernelSize``, ``kernelSizeMin`` and ``kernelSizeMax`` are positive and odd (psfmatch
      kernels have odd sizes everywhere, so that they have a central pixel);
    - ``kernelSizeMin <= kernelSizeMax``.
    """

    fitForBackground: pexConfig.Field[bool] = pexConfig.Field(
        dtype=bool,
        doc="Fit a differential background (a spatial polynomial added to the convolved image) "
        "together with the kernel.",
        default=False,
    )
    kernelBasisSet: pexConfig.ChoiceField[str] = pexConfig.ChoiceField(
        dtype=str,
        doc="Family of basis kernels the matching kernel is built from.",
        default="alard-lupton",
        allowed={
            "alard-lupton": "Gaussians of several widths times polynomials (Alard & Lupton 1998); "
            "the kernel sum is one coefficient and is conserved by the spatial model.",
            "delta-function": "One basis kernel per kernel pixel (Bramich 2008); best used with "
            "regularization and usePcaForSpatialKernel.",
        },
        optional=False,
    )
    kernelSize: pexConfig.Field[int] = pexConfig.Field(
        dtype=int,
        doc="Width and height of the matching kernel (pixels; must be odd). When scaleByFwhm is "
        "set and both FWHMs are known, the size is derived from them instead.",
        default=21,
    )
    scaleByFwhm: pexConfig.Field[bool] = pexConfig.Field(
        dtype=bool,
        doc="Derive the kernel size and the Alard-Lupton Gaussian widths from the FWHMs of the "
        "two images when both are known.",
        default=True,
    )
    kernelSizeFwhmScaling: pexConfig.Field[float] = pexConfig.RangeField(
        dtype=float,
        doc="With scaleByFwhm, the kernel size is this multiple of the widest Alard-Lupton "
        "Gaussian sigma, truncated, made odd, then clamped to kernelSizeMin..kernelSizeMax.",
        default=6.0,
        min=1.0,
    )
    kernelSizeMin: pexConfig.Field[int] = pexConfig.Field(
        dtype=int,
        doc="Smallest kernel size (pixels; odd) a FWHM-derived size is clamped to.",
        default=21,
    )
    kernelSizeMax: pexConfig.Field[int] = pexConfig.Field(
        dtype=int,
        doc="Largest kernel size (pixels; odd) a FWHM-derived size is clamped to.",
        default=35,
    )
    spatialModelType: pexConfig.ChoiceField[str] = pexConfig.ChoiceField(
        dtype=str,
        doc="Family of 2-D functions describing how the kernel and background vary over the image.",
        default="chebyshev1",
        allowed={
            "chebyshev1": "Chebyshev polynomials of the first kind over the image bounding box.",
            "polynomial": "Ordinary polynomials in x and y.",
        },
        optional=False,
    )
    spatialKernelOrder: pexConfig.Field[int] = pexConfig.RangeField(
        dtype=int,
        doc="Polynomial order of the kernel's variation across the image (0 = constant kernel).",
        default=2,
        min=0,
    )
    spatialBgOrder: pexConfig.Field[int] = pexConfig.RangeField(
        dtype=int,
        doc="Polynomial order of the differential background's variation across the image.",
        default=1,
        min=0,
    )
    lowerSpatialOrders: pexConfig.Field[bool] = pexConfig.Field(
        dtype=bool,
        doc="psfmatch only: lower spatialKernelOrder and spatialBgOrder, where they are at their "
        "defaults, to the highest orders the kernel stars constrain: more than twice as many "
        "stars as spatial terms, and spatial normal equations that are not singular "
        "(docs/algorithm.md §5.8). An order set to any other value is kept (with a warning "
        "when the stars constrain it poorly; SpatialOrderError when there are fewer stars than "
        "its terms). False keeps the configured orders as if set explicitly.",
        default=True,
    )
    maxSpatialUnknowns: pexConfig.Field[int] = pexConfig.RangeField(
        dtype=int,
        doc="psfmatch only: largest number of unknowns of the spatial fit's normal equations, "
        "(nBasis - 1) * nKernelTerms + 1 + nBgTerms; a larger fit (its matrices grow as the "
        "square and its solve as the cube of this number) is refused up front with "
        "SpatialOrderError.",
        default=4000,
        min=1,
    )
    sizeCellX: pexConfig.Field[int] = pexConfig.RangeField(
        dtype=int,
        doc="Width (pixels, along x) of the spatial cells that kernel candidates are grouped in.",
        default=128,
        min=32,
    )
    sizeCellY: pexConfig.Field[int] = pexConfig.RangeField(
        dtype=int,
        doc="Height (pixels, along y) of the spatial cells that kernel candidates are grouped in.",
        default=128,
        min=32,
    )
    nStarPerCell: pexConfig.Field[int] = pexConfig.Field(
        dtype=int,
        doc="Number of good kernel candidates per spatial cell used in the spatial fit; -1 uses "
        "them all.",
        default=5,
        check=lambda n: n == -1 or n >= 1,
    )
    maxSpatialIterations: pexConfig.Field[int] = pexConfig.RangeField(
        dtype=int,
        doc="Maximum number of rounds of spatial fitting and candidate rejection.",
        default=3,
        min=1,
        max=5,
        inclusiveMax=True,
    )
    usePcaForSpatialKernel: pexConfig.Field[bool] = pexConfig.Field(
        dtype=bool,
        doc="Replace the basis by the principal components of the per-candidate kernels before "
        "the spatial fit; recommended for the delta-function basis, whose kernel sum it then "
        "conserves.",
        default=False,
    )
    subtractMeanForPca: pexConfig.Field[bool] = pexConfig.Field(
        dtype=bool,
        doc="Subtract the mean kernel before the principal-component analysis and keep it as "
        "the first (spatially constant) component.",
        default=True,
    )
    numPrincipalComponents: pexConfig.Field[int] = pexConfig.RangeField(
        dtype=int,
        doc="Number of principal components kept, counting the mean kernel when it is subtracted.",
        default=5,
        min=3,
    )
    singleKernelClipping: pexConfig.Field[bool] = pexConfig.Field(
        dtype=bool,
        doc="Reject candidates whose own kernel leaves a poor difference image "
        "(see candidateResidualMeanMax and candidateResidualStdMax).",
        default=True,
    )
    kernelSumClipping: pexConfig.Field[bool] = pexConfig.Field(
        dtype=bool,
        doc="Reject candidates whose kernel sum is an outlier of the ensemble (see maxKsumSigma); "
        "this removes variable sources.",
        default=True,
    )
    spatialKernelClipping: pexConfig.Field[bool] = pexConfig.Field(
        dtype=bool,
        doc="Reject candidates that the spatial model leaves with a poor difference image, then "
        "refit.",
        default=True,
    )
    checkConditionNumber: pexConfig.Field[bool] = pexConfig.Field(
        dtype=bool,
        doc="Reject a candidate whose normal matrix has a condition number above "
        "maxConditionNumber instead of solving it. Leave off when deconvolving.",
        default=False,
    )
    badMaskPlanes: pexConfig.ListField[str] = pexConfig.ListField(
        dtype=str,
        doc="Mask planes whose pixels are left out of the difference-image quality statistics; "
        "names that are not defined are skipped.",
        default=("NO_DATA", "EDGE", "SAT"),
    )
    candidateResidualMeanMax: pexConfig.Field[float] = pexConfig.RangeField(
        dtype=float,
        doc="Largest acceptable absolute mean over a candidate's difference-image pixels of "
        "difference/sqrt(variance).",
        default=0.25,
        min=0.0,
    )
    candidateResidualStdMax: pexConfig.Field[float] = pexConfig.RangeField(
        dtype=float,
        doc="Largest acceptable standard deviation over a candidate's difference-image pixels of "
        "difference/sqrt(variance).",
        default=1.50,
        min=0.0,
    )
    useCoreStats: pexConfig.Field[bool] = pexConfig.Field(
        dtype=bool,
        doc="Compute the candidate quality statistics over the central core (see "
        "candidateCoreRadius) instead of the whole stamp.",
        default=False,
    )
    candidateCoreRadius: pexConfig.Field[int] = pexConfig.RangeField(
        dtype=int,
        doc="Half-width (pixels) of the square core used by useCoreStats; the core holds "
        "(2*radius + 1)**2 pixels.",
        default=3,
        min=1,
    )
    maxKsumSigma: pexConfig.Field[float] = pexConfig.RangeField(
        dtype=float,
        doc="Kernel sums further than this many standard deviations from the ensemble's "
        "are rejected by kernelSumClipping.",
        default=3.0,
        min=0.0,
    )
    maxConditionNumber: pexConfig.Field[float] = pexConfig.RangeField(
        dtype=float,
        doc="Largest acceptable condition number of a candidate's normal matrix "
        "(see checkConditionNumber); also the eigenvalue cut of the biased-risk λ scan.",
        default=5.0e7,
        min=0.0,
    )
    conditionNumberType: pexConfig.ChoiceField[str] = pexConfig.ChoiceField(
        dtype=str,
        doc="How condition numbers are measured.",
        default="EIGENVALUE",
        allowed={
            "EIGENVALUE": "Ratio of the largest to the smallest eigenvalue (faster).",
            "SVD": "Ratio of the largest to the smallest singular value.",
        },
        optional=False,
    )
    maxSpatialConditionNumber: pexConfig.Field[float] = pexConfig.RangeField(
        dtype=float,
        doc="Condition number of the spatial fit's matrix above which a warning is logged.",
        default=1.0e10,
        min=0.0,
    )
    iterateSingleKernel: pexConfig.Field[bool] = pexConfig.Field(
        dtype=bool,
        doc="Refit each candidate once more with a variance estimated from its first difference "
        "image; mainly useful when the convolved image is a single exposure.",
        default=False,
    )
    constantVarianceWeighting: pexConfig.Field[bool] = pexConfig.Field(
        dtype=bool,
        doc="Weight every pixel of a candidate equally in its fit instead of by the inverse "
        "variance; often gives better residuals on bright stars.",
        default=True,
    )
    calculateKernelUncertainty: pexConfig.Field[bool] = pexConfig.Field(
        dtype=bool,
        doc="Report each kernel source's 1-sigma kernel-sum and background uncertainties "
        "(kernelSumErr, backgroundErr in the candidates table), from the covariance of its "
        "fit's coefficients (the inverse normal matrix). Every solution's getCovariance() and "
        "getKernelUncertaintyImage() give the covariance and a per-pixel uncertainty image of "
        "its kernel either way. Regularization biases these.",
        default=False,
    )
    useBicForKernelBasis: pexConfig.Field[bool] = pexConfig.Field(
        dtype=bool,
        doc="Choose the Alard-Lupton polynomial degrees by the Bayesian Information Criterion: "
        "every degree combination up to alardDegGauss is tried, each candidate votes for its "
        "best, and the most voted combination is used.",
        default=False,
    )
    nThreads: pexConfig.Field[int] = pexConfig.RangeField(
        dtype=int,
        doc="psfmatch only: number of threads the compiled core uses for its pixel and candidate "
        "loops; 0 uses every hardware thread. Results do not depend on it.",
        default=0,
        min=0,
    )

    def validate(self) -> None:
        """Check every field, then the rules that involve several fields.

        Raises
        ------
        lsst.pex.config.FieldValidationError
            If a field fails its own check or a rule listed in the class Notes is broken.
        """
        super().validate()
        for name in ("kernelSize", "kernelSizeMin", "kernelSizeMax"):
            _checkOddSize(self, name)
        if self.kernelSizeMin > self.kernelSizeMax:
            _fail(
                self,
                "kernelSizeMin",
                f"kernelSizeMin ({self.kernelSizeMin}) must not exceed "
                f"kernelSizeMax ({self.kernelSizeMax})",
            )


class PsfMatchConfigAL(PsfMatchConfig):
    """Configuration of the Alard-Lupton (sum-of-Gaussians) kernel basis.

    Notes
    -----
    `setDefaults` sets ``kernelBasisSet = "alard-lupton"`` and ``maxConditionNumber = 5e7``.
    `validate` also requires ``len(alardDegGauss) == alardNGauss == len(alardSigGauss)``.
    """

    alardNGauss: pexConfig.Field[int] = pexConfig.RangeField(
        dtype=int,
        doc="Number of Gaussians in the basis; alardDegGauss and alardSigGauss have one entry "
        "per Gaussian.",
        default=3,
        min=1,
    )
    alardDegGauss: pexConfig.ListField[int] = pexConfig.ListField(
        dtype=int,
        doc="For each Gaussian, the highest total degree of the polynomials it is multiplied by.",
        default=(4, 2, 2),
        itemCheck=lambda degree: degree >= 0,
    )
    alardSigGauss: pexConfig.ListField[float] = pexConfig.ListField(
        dtype=float,
        doc="Sigma (pixels) of each Gaussian, used as given when the widths are not derived from "
        "the FWHMs (FWHM = 2.355 sigma).",
        default=(0.7, 1.5, 3.0),
        itemCheck=lambda sigma: sigma > 0.0,
    )
    alardGaussBeta: pexConfig.Field[float] = pexConfig.RangeField(
        dtype=float,
        doc="Ratio between the sigmas of successive Gaussians when they are derived from the "
        "FWHMs.",
        default=2.0,
        min=0.0,
        inclusiveMin=False,
    )
    alardMinSig: pexConfig.Field[float] = pexConfig.RangeField(
        dtype=float,
        doc="Smallest sigma (pixels) of a FWHM-derived Gaussian when the template is convolved "
        "to a broader PSF.",
        default=0.7,
        min=0.25,
    )
    alardMinSigDeconv: pexConfig.Field[float] = pexConfig.RangeField(
        dtype=float,
        doc="Smallest sigma (pixels) of a FWHM-derived Gaussian when the convolved image has the "
        "broader PSF (deconvolution).",
        default=0.4,
        min=0.25,
    )
    # The PSFs' wings (docs/algorithm.md §2.3, docs/decisions.md D18): these act only where
    # scaleByFwhm does, so a user who sets kernelSize / alardSigGauss with scaleByFwhm off gets
    # exactly those.
    scaleByWings: pexConfig.Field[bool] = pexConfig.Field(
        dtype=bool,
        doc="With scaleByFwhm, also measure each image's growth curve on the kernel stars; when "
        "either PSF holds more flux outside one FWHM than a Gaussian of its FWHM does (by "
        "wingExcessThreshold), add a broad Gaussian (sigma wingSigmaScaling x the broader "
        "FWHM, degree wingDegGauss) to the basis and make the kernel reach at least "
        "wingKernelScaling broader FWHMs (within kernelSizeMax).",
        default=True,
    )
    wingExcessThreshold: pexConfig.Field[float] = pexConfig.RangeField(
        dtype=float,
        doc="With scaleByWings, the excess flux fraction outside one FWHM (over a Gaussian's) "
        "above which a PSF has wings (0 for a Gaussian, ~0.04 for a beta=4.5 Moffat, ~0.07 "
        "for beta=3).",
        default=0.02,
        min=0.0,
    )
    wingSigmaScaling: pexConfig.Field[float] = pexConfig.RangeField(
        dtype=float,
        doc="With wings, the wing Gaussian's sigma in units of the broader FWHM.",
        default=2.0,
        min=0.0,
        inclusiveMin=False,
    )
    wingKernelScaling: pexConfig.Field[float] = pexConfig.RangeField(
        dtype=float,
        doc="With wings, the kernel's half-width is at least this many broader FWHMs "
        "(then clamped to kernelSizeMin..kernelSizeMax).",
        default=3.0,
        min=0.0,
    )
    wingDegGauss: pexConfig.Field[int] = pexConfig.RangeField(
        dtype=int,
        doc="Polynomial degree of the wing Gaussian.",
        default=0,
        min=0,
    )

    alardDegGaussDeconv: pexConfig.Field[int] = pexConfig.RangeField(
        dtype=int,
        doc="Polynomial degree of every Gaussian when deconvolving.",
        default=3,
        min=1,
        deprecated="ignored; the degrees always come from alardDegGauss.",
    )
    alardNGaussDeconv: pexConfig.Field[int] = pexConfig.RangeField(
        dtype=int,
        doc="Number of Gaussians when deconvolving.",
        default=3,
        min=1,
        deprecated="ignored; the number always comes from alardNGauss.",
    )

    def setDefaults(self) -> None:
        """Select the Alard-Lupton basis and its condition-number limit."""
        super().setDefaults()
        self.kernelBasisSet = "alard-lupton"
        self.maxConditionNumber = 5.0e7

    def validate(self) -> None:
        """Check every field, then the rules that involve several fields.

        Raises
        ------
        lsst.pex.config.FieldValidationError
            If a field fails its own check, a rule of `PsfMatchConfig` is broken, or the
            degree and sigma lists do not have ``alardNGauss`` entries each.
        """
        super().validate()
        for name in ("alardDegGauss", "alardSigGauss"):
            values = getattr(self, name)
            if len(values) != self.alardNGauss:
                _fail(
                    self,
                    name,
                    f"{name} has {len(values)} entries {list(values)}; alardNGauss = "
                    f"{self.alardNGauss} requires one per Gaussian",
                )


class PsfMatchConfigDF(PsfMatchConfig):
    """Configuration of the delta-function kernel basis and its regularization.

    Notes
    -----
    `setDefaults` sets ``kernelBasisSet = "delta-function"``, ``maxConditionNumber = 5e6``,
    ``usePcaForSpatialKernel = True``, ``subtractMeanForPca = True`` and
    ``useBicForKernelBasis = False``.

    With ``useRegularization`` the per-candidate system ``M a = b`` becomes
    ``(M + λH) a = b``, where ``H`` penalises rough kernels and ``lambdaType`` chooses λ.
    For the risk-minimising modes, `validate` also requires ``lambdaMin < lambdaMax`` and
    ``lambdaStep > 0``.
    """

    useRegularization: pexConfig.Field[bool] = pexConfig.Field(
        dtype=bool,
        doc="Add a smoothness penalty (λ times regularizationType's matrix) to each candidate's "
        "normal equations.",
        default=True,
    )
    regularizationType: pexConfig.ChoiceField[str] = pexConfig.ChoiceField(
        dtype=str,
        doc="Which finite differences of the kernel image the regularization penalises.",
        default="centralDifference",
        allowed={
            "centralDifference": "The 2-D Laplacian, by the stencil of "
            "centralRegularizationStencil.",
            "forwardDifference": "Forward differences of the orders in "
            "forwardRegularizationOrders, along x and y.",
        },
        optional=False,
    )
    centralRegularizationStencil: pexConfig.ChoiceField[int] = pexConfig.ChoiceField(
        dtype=int,
        doc="Stencil of the Laplacian used by centralDifference regularization.",
        default=9,
        allowed={
            5: "The pixel and its four edge neighbours.",
            9: "The pixel and all eight neighbours, diagonals included.",
        },
        optional=False,
    )
    forwardRegularizationOrders: pexConfig.ListField[int] = pexConfig.ListField(
        dtype=int,
        doc="Orders (1 to 3) of the forward differences penalised by forwardDifference "
        "regularization.",
        default=(1, 2),
        itemCheck=lambda order: 1 <= order <= 3,
    )
    regularizationBorderPenalty: pexConfig.Field[float] = pexConfig.RangeField(
        dtype=float,
        doc="Penalty on the kernel's border pixels, which the difference stencils do not reach.",
        default=3.0,
        min=0.0,
    )
    lambdaType: pexConfig.ChoiceField[str] = pexConfig.ChoiceField(
        dtype=str,
        doc="How the regularization strength λ is chosen.",
        default="absolute",
        allowed={
            "absolute": "λ = lambdaValue.",
            "relative": "λ = lambdaScaling * trace(M) / trace(H) (Numerical Recipes 18.5.8).",
            "minimizeBiasedRisk": "Scan lambdaMin..lambdaMax and take the λ of least risk, "
            "with the pseudo-inverse truncated at maxConditionNumber.",
            "minimizeUnbiasedRisk": "Scan lambdaMin..lambdaMax and take the λ of least risk, "
            "with the untruncated pseudo-inverse.",
        },
        optional=False,
    )
    lambdaValue: pexConfig.Field[float] = pexConfig.Field(
        dtype=float,
        doc="λ itself when lambdaType is absolute.",
        default=0.2,
    )
    lambdaScaling: pexConfig.Field[float] = pexConfig.Field(
        dtype=float,
        doc="Fraction of trace(M)/trace(H) used as λ when lambdaType is relative "
        "(typically 1e-4 or 1e-5).",
        default=1e-4,
    )
    lambdaStepType: pexConfig.ChoiceField[str] = pexConfig.ChoiceField(
        dtype=str,
        doc="Spacing of the λ scan of the risk-minimising modes.",
        default="log",
        allowed={
            "log": "lambdaMin, lambdaMax and lambdaStep are base-10 exponents "
            "(e.g. -1, 2, 0.1 scans 0.1 to 100).",
            "linear": "lambdaMin, lambdaMax and lambdaStep are λ values (e.g. 0.1, 100, 0.1).",
        },
        optional=False,
    )
    lambdaMin: pexConfig.Field[float] = pexConfig.Field(
        dtype=float,
        doc="Start of the λ scan (an exponent when lambdaStepType is log).",
        default=-1.0,
    )
    lambdaMax: pexConfig.Field[float] = pexConfig.Field(
        dtype=float,
        doc="End of the λ scan, included (an exponent when lambdaStepType is log).",
        default=2.0,
    )
    lambdaStep: pexConfig.Field[float] = pexConfig.Field(
        dtype=float,
        doc="Increment of the λ scan (of the exponent when lambdaStepType is log).",
        default=0.1,
    )

    def setDefaults(self) -> None:
        """Select the delta-function basis with a principal-component spatial model."""
        super().setDefaults()
        self.kernelBasisSet = "delta-function"
        self.maxConditionNumber = 5.0e6
        self.usePcaForSpatialKernel = True
        self.subtractMeanForPca = True
        self.useBicForKernelBasis = False

    def validate(self) -> None:
        """Check every field, then the rules that involve several fields.

        Raises
        ------
        lsst.pex.config.FieldValidationError
            If a field fails its own check, a rule of `PsfMatchConfig` is broken, or a
            risk-minimising ``lambdaType`` is given an empty or backward λ scan.
        """
        super().validate()
        if self.lambdaType in _RISK_LAMBDA_TYPES:
            if not self.lambdaMin < self.lambdaMax:
                _fail(
                    self,
                    "lambdaMin",
                    f"lambdaType={self.lambdaType!r} scans λ from lambdaMin to lambdaMax, so "
                    f"lambdaMin ({self.lambdaMin}) must be less than lambdaMax ({self.lambdaMax})",
                )
            if not self.lambdaStep > 0.0:
                _fail(
                    self,
                    "lambdaStep",
                    f"lambdaType={self.lambdaType!r} scans λ in steps of lambdaStep, which must "
                    f"be positive; got {self.lambdaStep}",
                )


# The config -> compiled-core translation lives beside the configs' declarations, in
# psfmatch._control; imported last, when the config classes it checks against exist.
from ._control import makeKernelControl  # noqa: E402
