# SPDX-License-Identifier: BSD-3-Clause
"""`makeKernelControl`: the one place where a kernel config (`psfmatch.config`) becomes the
plain option struct the compiled core reads (``psfmatch._core.KernelControl``), enums and
mask bits resolved. `psfmatch.config` re-exports it.
"""

from __future__ import annotations

__all__ = ["makeKernelControl"]

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from . import _core
    from .config import PsfMatchConfig

# Config choice -> name of the matching member of the compiled core's enums.
_CONDITION_NUMBER_TYPES = {"EIGENVALUE": "EIGENVALUE", "SVD": "SVD"}
_SPATIAL_MODEL_TYPES = {"polynomial": "POLYNOMIAL", "chebyshev1": "CHEBYSHEV1"}
_LAMBDA_TYPES = {
    "absolute": "ABSOLUTE",
    "relative": "RELATIVE",
    "minimizeBiasedRisk": "MINIMIZE_BIASED_RISK",
    "minimizeUnbiasedRisk": "MINIMIZE_UNBIASED_RISK",
}
_LAMBDA_STEP_TYPES = {"linear": "LINEAR", "log": "LOG"}


def makeKernelControl(config: PsfMatchConfig) -> _core.KernelControl:
    """Turn a config into the option struct of the compiled core.

    This is the only place where config fields are copied into a ``KernelControl``.

    Parameters
    ----------
    config : `PsfMatchConfig`
        The configuration; it is validated first. Fields that only a `PsfMatchConfigDF` has
        (``useRegularization`` and the ``lambda*`` fields) keep the struct's defaults for
        other configs, so regularization is off for them.

    Returns
    -------
    control : ``psfmatch._core.KernelControl``
        The struct, with the mask planes resolved to bit values: ``badMaskBits`` is the OR of
        the bits of ``config.badMaskPlanes`` (names that are not defined are skipped), and
        ``edgeBit`` and ``noDataBit`` are the bits of the ``EDGE`` and ``NO_DATA`` planes.

    Raises
    ------
    lsst.pex.config.FieldValidationError
        If the config does not validate.
    TypeError
        If ``config`` is not a `PsfMatchConfig`.
    """
    from . import _core
    from .config import PsfMatchConfig, PsfMatchConfigDF
    from .image import Mask

    if not isinstance(config, PsfMatchConfig):
        raise TypeError(f"config must be a PsfMatchConfig; got {type(config).__name__}")
    config.validate()

    control = _core.KernelControl()
    control.fitForBackground = bool(config.fitForBackground)
    control.constantVarianceWeighting = bool(config.constantVarianceWeighting)
    control.iterateSingleKernel = bool(config.iterateSingleKernel)
    control.calculateKernelUncertainty = bool(config.calculateKernelUncertainty)

    control.checkConditionNumber = bool(config.checkConditionNumber)
    control.maxConditionNumber = float(config.maxConditionNumber)
    control.conditionNumberType = _enumValue(
        _core.ConditionNumberType, _CONDITION_NUMBER_TYPES, config.conditionNumberType
    )

    if isinstance(config, PsfMatchConfigDF):
        control.useRegularization = bool(config.useRegularization)
        control.lambdaType = _enumValue(_core.LambdaType, _LAMBDA_TYPES, config.lambdaType)
        control.lambdaValue = float(config.lambdaValue)
        control.lambdaScaling = float(config.lambdaScaling)
        control.lambdaStepType = _enumValue(
            _core.LambdaStepType, _LAMBDA_STEP_TYPES, config.lambdaStepType
        )
        control.lambdaMin = float(config.lambdaMin)
        control.lambdaMax = float(config.lambdaMax)
        control.lambdaStep = float(config.lambdaStep)

    control.badMaskBits = Mask.getPlaneBitMask(config.badMaskPlanes, skipUnknown=True)
    control.edgeBit = Mask.getPlaneBitMask("EDGE")
    control.noDataBit = Mask.getPlaneBitMask("NO_DATA")
    control.candidateCoreRadius = int(config.candidateCoreRadius)
    control.useCoreStats = bool(config.useCoreStats)
    control.singleKernelClipping = bool(config.singleKernelClipping)
    control.candidateResidualMeanMax = float(config.candidateResidualMeanMax)
    control.candidateResidualStdMax = float(config.candidateResidualStdMax)

    control.kernelSumClipping = bool(config.kernelSumClipping)
    control.maxKsumSigma = float(config.maxKsumSigma)

    control.spatialKernelClipping = bool(config.spatialKernelClipping)
    control.spatialKernelOrder = int(config.spatialKernelOrder)
    control.spatialBgOrder = int(config.spatialBgOrder)
    control.spatialModelType = _enumValue(
        _core.SpatialModelType, _SPATIAL_MODEL_TYPES, config.spatialModelType
    )
    control.usePcaForSpatialKernel = bool(config.usePcaForSpatialKernel)
    control.subtractMeanForPca = bool(config.subtractMeanForPca)
    control.numPrincipalComponents = int(config.numPrincipalComponents)

    control.nThreads = int(config.nThreads)
    return control


def _enumValue(enumType: Any, names: dict[str, str], choice: str) -> Any:
    """Return the member of a core enum that a config choice stands for."""
    return getattr(enumType, names[choice])
