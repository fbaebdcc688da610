# SPDX-License-Identifier: BSD-3-Clause
"""Tests of psfmatch.config (the PSF-matching configs, makeKernelControl) and of Mask."""

from __future__ import annotations

import enum
import re
import sys
import types
from pathlib import Path
from typing import Any

import lsst.pex.config as pexConfig
import numpy as np
import pytest

from psfmatch.config import (
    PsfMatchConfig,
    PsfMatchConfigAL,
    PsfMatchConfigDF,
    makeKernelControl,
)
from psfmatch.image import Mask

CONTROL_HEADER = Path(__file__).resolve().parents[1] / "cpp" / "include" / "psfmatch" / "control.h"

# docs/algorithm.md §8, "PsfMatchConfig": every field psfmatch keeps, with its default, plus the
# psfmatch-only nThreads. warpingConfig, afwBackgroundConfig and useAfwBackground are dropped.
BASE_DEFAULTS: dict[str, Any] = {
    "fitForBackground": False,
    "kernelBasisSet": "alard-lupton",
    "kernelSize": 21,
    "scaleByFwhm": True,
    "kernelSizeFwhmScaling": 6.0,
    "kernelSizeMin": 21,
    "kernelSizeMax": 35,
    "spatialModelType": "chebyshev1",
    "spatialKernelOrder": 2,
    "spatialBgOrder": 1,
    "lowerSpatialOrders": True,
    "maxSpatialUnknowns": 4000,
    "sizeCellX": 128,
    "sizeCellY": 128,
    "nStarPerCell": 5,
    "maxSpatialIterations": 3,
    "usePcaForSpatialKernel": False,
    "subtractMeanForPca": True,
    "numPrincipalComponents": 5,
    "singleKernelClipping": True,
    "kernelSumClipping": True,
    "spatialKernelClipping": True,
    "checkConditionNumber": False,
    "badMaskPlanes": ["NO_DATA", "EDGE", "SAT"],
    "candidateResidualMeanMax": 0.25,
    "candidateResidualStdMax": 1.50,
    "useCoreStats": False,
    "candidateCoreRadius": 3,
    "maxKsumSigma": 3.0,
    "maxConditionNumber": 5.0e7,
    "conditionNumberType": "EIGENVALUE",
    "maxSpatialConditionNumber": 1.0e10,
    "iterateSingleKernel": False,
    "constantVarianceWeighting": True,
    "calculateKernelUncertainty": False,
    "useBicForKernelBasis": False,
    "nThreads": 0,
}

# §8 "PsfMatchConfigAL": its own fields, and the base defaults it forces.
AL_DEFAULTS: dict[str, Any] = {
    **BASE_DEFAULTS,
    "kernelBasisSet": "alard-lupton",
    "maxConditionNumber": 5.0e7,
    "alardNGauss": 3,
    "alardDegGauss": [4, 2, 2],
    "alardSigGauss": [0.7, 1.5, 3.0],
    "alardGaussBeta": 2.0,
    "alardMinSig": 0.7,
    "alardMinSigDeconv": 0.4,
    "alardDegGaussDeconv": 3,
    "alardNGaussDeconv": 3,
    "scaleByWings": True,
    "wingExcessThreshold": 0.02,
    "wingSigmaScaling": 2.0,
    "wingKernelScaling": 3.0,
    "wingDegGauss": 0,
}

# §8 "PsfMatchConfigDF": its own fields, and the base defaults it forces.
DF_DEFAULTS: dict[str, Any] = {
    **BASE_DEFAULTS,
    "kernelBasisSet": "delta-function",
    "maxConditionNumber": 5.0e6,
    "usePcaForSpatialKernel": True,
    "subtractMeanForPca": True,
    "useBicForKernelBasis": False,
    "useRegularization": True,
    "regularizationType": "centralDifference",
    "centralRegularizationStencil": 9,
    "forwardRegularizationOrders": [1, 2],
    "regularizationBorderPenalty": 3.0,
    "lambdaType": "absolute",
    "lambdaValue": 0.2,
    "lambdaScaling": 1e-4,
    "lambdaStepType": "log",
    "lambdaMin": -1.0,
    "lambdaMax": 2.0,
    "lambdaStep": 0.1,
}

EXPECTED_DEFAULTS = {
    PsfMatchConfig: BASE_DEFAULTS,
    PsfMatchConfigAL: AL_DEFAULTS,
    PsfMatchConfigDF: DF_DEFAULTS,
}

ALL_CONFIG_CLASSES = list(EXPECTED_DEFAULTS)

DEFAULT_CASES = [
    pytest.param(cls, name, value, id=f"{cls.__name__}.{name}")
    for cls, table in EXPECTED_DEFAULTS.items()
    for name, value in table.items()
]

# (config class, field, a value its check rejects, a value at the edge of what it accepts)
CHECK_CASES = [
    (PsfMatchConfig, "kernelBasisSet", "gaussian", "delta-function"),
    (PsfMatchConfig, "kernelSizeFwhmScaling", 0.99, 1.0),
    (PsfMatchConfig, "spatialModelType", "legendre", "polynomial"),
    (PsfMatchConfig, "spatialKernelOrder", -1, 0),
    (PsfMatchConfig, "spatialBgOrder", -1, 0),
    (PsfMatchConfig, "sizeCellX", 31, 32),
    (PsfMatchConfig, "sizeCellY", 31, 32),
    (PsfMatchConfig, "nStarPerCell", 0, -1),
    (PsfMatchConfig, "nStarPerCell", -2, 1),
    (PsfMatchConfig, "maxSpatialIterations", 0, 1),
    (PsfMatchConfig, "maxSpatialIterations", 6, 5),
    (PsfMatchConfig, "numPrincipalComponents", 2, 3),
    (PsfMatchConfig, "candidateResidualMeanMax", -0.01, 0.0),
    (PsfMatchConfig, "candidateResidualStdMax", -0.01, 0.0),
    (PsfMatchConfig, "candidateCoreRadius", 0, 1),
    (PsfMatchConfig, "maxKsumSigma", -0.01, 0.0),
    (PsfMatchConfig, "maxConditionNumber", -1.0, 0.0),
    (PsfMatchConfig, "conditionNumberType", "eigenvalue", "SVD"),
    (PsfMatchConfig, "maxSpatialConditionNumber", -1.0, 0.0),
    (PsfMatchConfig, "nThreads", -1, 0),
    (PsfMatchConfig, "kernelSize", 21.5, 23),
    (PsfMatchConfigAL, "alardNGauss", 0, 1),
    (PsfMatchConfigAL, "alardDegGauss", [4, -1, 2], [4, 0, 2]),
    (PsfMatchConfigAL, "alardSigGauss", [0.7, 0.0, 3.0], [0.7, 0.01, 3.0]),
    (PsfMatchConfigAL, "alardGaussBeta", 0.0, 0.5),
    (PsfMatchConfigAL, "alardMinSig", 0.24, 0.25),
    (PsfMatchConfigAL, "alardMinSigDeconv", 0.24, 0.25),
    (PsfMatchConfigDF, "regularizationType", "laplacian", "forwardDifference"),
    (PsfMatchConfigDF, "centralRegularizationStencil", 7, 5),
    (PsfMatchConfigDF, "centralRegularizationStencil", "9", 9),
    (PsfMatchConfigDF, "forwardRegularizationOrders", [0], [1, 2, 3]),
    (PsfMatchConfigDF, "forwardRegularizationOrders", [1, 4], [3]),
    (PsfMatchConfigDF, "regularizationBorderPenalty", -0.01, 0.0),
    (PsfMatchConfigDF, "lambdaType", "minimizeRisk", "minimizeUnbiasedRisk"),
    (PsfMatchConfigDF, "lambdaStepType", "exp", "linear"),
]
CHECK_PARAMS = [
    pytest.param(cls, name, bad, good, id=f"{cls.__name__}.{name}={bad!r}")
    for cls, name, bad, good in CHECK_CASES
]


@pytest.fixture
def restore_mask_planes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Let a test add mask planes without changing the dictionary other tests see."""
    monkeypatch.setattr(Mask, "_maskPlaneDict", dict(Mask._maskPlaneDict))


# --- defaults ---------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", ALL_CONFIG_CLASSES)
def test_fields_are_exactly_those_of_the_table(cls: type[PsfMatchConfig]) -> None:
    assert set(cls().keys()) == set(EXPECTED_DEFAULTS[cls])


@pytest.mark.parametrize("name", ["warpingConfig", "afwBackgroundConfig", "useAfwBackground"])
def test_afw_only_fields_are_dropped(name: str) -> None:
    for cls in ALL_CONFIG_CLASSES:
        assert name not in cls().keys()


@pytest.mark.parametrize(("cls", "name", "expected"), DEFAULT_CASES)
def test_default(cls: type[PsfMatchConfig], name: str, expected: Any) -> None:
    value = getattr(cls(), name)
    if isinstance(expected, list):
        assert list(value) == expected
    else:
        assert value == expected
        assert type(value) is type(expected)


@pytest.mark.parametrize("cls", ALL_CONFIG_CLASSES)
def test_defaults_validate(cls: type[PsfMatchConfig]) -> None:
    cls().validate()


@pytest.mark.parametrize("cls", ALL_CONFIG_CLASSES)
def test_every_field_is_documented(cls: type[PsfMatchConfig]) -> None:
    for name, field in cls._fields.items():
        assert len(field.doc.strip()) > 20, name


@pytest.mark.parametrize("name", ["calculateKernelUncertainty", "useBicForKernelBasis"])
def test_live_fields_are_not_documented_as_inert(name: str) -> None:
    # docs/decisions.md D3: these work in psfmatch, unlike in the reference.
    doc = PsfMatchConfig._fields[name].doc.lower()
    for word in ("unused", "no effect", "ignored", "deprecated"):
        assert word not in doc


def test_nthreads_is_documented_as_psfmatch_specific() -> None:
    assert "psfmatch" in PsfMatchConfig.nThreads.doc


# --- per-field checks -------------------------------------------------------------------------


@pytest.mark.parametrize(("cls", "name", "bad", "good"), CHECK_PARAMS)
def test_check_rejects_bad_value(cls: type[PsfMatchConfig], name: str, bad: Any, good: Any) -> None:
    config = cls()
    # pex_config checks a value when it is assigned, and raises FieldValidationError, which
    # is a ValueError.
    with pytest.raises(pexConfig.FieldValidationError, match=name):
        setattr(config, name, bad)
    with pytest.raises(ValueError):
        setattr(config, name, bad)


@pytest.mark.parametrize(("cls", "name", "bad", "good"), CHECK_PARAMS)
def test_check_accepts_edge_value(
    cls: type[PsfMatchConfig], name: str, bad: Any, good: Any
) -> None:
    config = cls()
    setattr(config, name, good)
    if isinstance(good, list):
        assert list(getattr(config, name)) == good
    else:
        assert getattr(config, name) == good


@pytest.mark.parametrize("name", ["alardDegGaussDeconv", "alardNGaussDeconv"])
def test_deprecated_al_fields_warn_and_keep_their_check(name: str) -> None:
    config = PsfMatchConfigAL()
    with pytest.warns(FutureWarning, match=name):
        setattr(config, name, 2)
    with pytest.warns(FutureWarning), pytest.raises(pexConfig.FieldValidationError, match=name):
        setattr(config, name, 0)


@pytest.mark.parametrize(
    ("cls", "name"),
    [
        (PsfMatchConfig, "kernelBasisSet"),
        (PsfMatchConfig, "spatialModelType"),
        (PsfMatchConfig, "conditionNumberType"),
        (PsfMatchConfigDF, "regularizationType"),
        (PsfMatchConfigDF, "centralRegularizationStencil"),
        (PsfMatchConfigDF, "lambdaType"),
        (PsfMatchConfigDF, "lambdaStepType"),
    ],
)
def test_choice_fields_are_required(cls: type[PsfMatchConfig], name: str) -> None:
    config = cls()
    setattr(config, name, None)
    with pytest.raises(pexConfig.FieldValidationError, match=name):
        config.validate()


# --- setDefaults ------------------------------------------------------------------------------


def test_al_set_defaults() -> None:
    config = PsfMatchConfigAL()
    assert config.kernelBasisSet == "alard-lupton"
    assert config.maxConditionNumber == 5.0e7
    # What the AL config does not force stays at the base default.
    assert config.usePcaForSpatialKernel is False


def test_df_set_defaults() -> None:
    config = PsfMatchConfigDF()
    assert config.kernelBasisSet == "delta-function"
    assert config.maxConditionNumber == 5.0e6
    assert config.usePcaForSpatialKernel is True
    assert config.subtractMeanForPca is True
    assert config.useBicForKernelBasis is False
    # The base class itself is unchanged.
    base = PsfMatchConfig()
    assert base.maxConditionNumber == 5.0e7
    assert base.usePcaForSpatialKernel is False


def test_forced_defaults_are_still_overridable() -> None:
    config = PsfMatchConfigDF()
    config.maxConditionNumber = 1.0e8
    config.usePcaForSpatialKernel = False
    config.validate()
    assert config.maxConditionNumber == 1.0e8
    assert config.usePcaForSpatialKernel is False


# --- validate(): rules across fields ----------------------------------------------------------


@pytest.mark.parametrize("cls", ALL_CONFIG_CLASSES)
@pytest.mark.parametrize("name", ["kernelSize", "kernelSizeMin", "kernelSizeMax"])
@pytest.mark.parametrize("size", [20, 36, 0, -1, -21])
def test_kernel_sizes_must_be_positive_and_odd(
    cls: type[PsfMatchConfig], name: str, size: int
) -> None:
    config = cls()
    setattr(config, name, size)
    if name == "kernelSizeMin":
        config.kernelSizeMax = 99  # keep min <= max so that only oddness is tested
    with pytest.raises(pexConfig.FieldValidationError, match=f"{name} must be a positive odd"):
        config.validate()


@pytest.mark.parametrize("cls", ALL_CONFIG_CLASSES)
def test_kernel_size_one_is_valid(cls: type[PsfMatchConfig]) -> None:
    config = cls()
    config.kernelSize = 1
    config.kernelSizeMin = 1
    config.kernelSizeMax = 1
    config.validate()


@pytest.mark.parametrize("cls", ALL_CONFIG_CLASSES)
def test_kernel_size_min_must_not_exceed_max(cls: type[PsfMatchConfig]) -> None:
    config = cls()
    config.kernelSizeMin = 37
    config.kernelSizeMax = 35
    with pytest.raises(pexConfig.FieldValidationError, match=r"kernelSizeMin \(37\).*\(35\)"):
        config.validate()
    config.kernelSizeMin = 35
    config.validate()


def test_kernel_size_outside_clamp_range_is_allowed() -> None:
    # kernelSizeMin/Max only clamp FWHM-derived sizes; the configured size is used as is.
    config = PsfMatchConfigAL()
    config.kernelSize = 11
    config.validate()


def test_al_degree_list_length_must_match_ngauss() -> None:
    config = PsfMatchConfigAL()
    config.alardNGauss = 2
    with pytest.raises(pexConfig.FieldValidationError, match=r"alardDegGauss has 3 entries"):
        config.validate()


def test_al_sigma_list_length_must_match_ngauss() -> None:
    config = PsfMatchConfigAL()
    config.alardNGauss = 2
    config.alardDegGauss = [4, 2]
    with pytest.raises(pexConfig.FieldValidationError, match=r"alardSigGauss has 3 entries"):
        config.validate()


@pytest.mark.parametrize(
    ("nGauss", "degrees", "sigmas"),
    [(1, [3], [1.0]), (2, [4, 2], [0.7, 1.5]), (4, [6, 4, 2, 0], [0.5, 1.0, 2.0, 4.0])],
)
def test_al_consistent_lists_validate(nGauss: int, degrees: list[int], sigmas: list[float]) -> None:
    config = PsfMatchConfigAL()
    config.alardNGauss = nGauss
    config.alardDegGauss = degrees
    config.alardSigGauss = sigmas
    config.validate()


@pytest.mark.parametrize("lambdaType", ["minimizeBiasedRisk", "minimizeUnbiasedRisk"])
@pytest.mark.parametrize("stepType", ["log", "linear"])
def test_df_risk_scan_needs_min_below_max(lambdaType: str, stepType: str) -> None:
    config = PsfMatchConfigDF()
    config.lambdaType = lambdaType
    config.lambdaStepType = stepType
    config.lambdaMin = 2.0
    config.lambdaMax = 2.0
    with pytest.raises(pexConfig.FieldValidationError, match="lambdaMin"):
        config.validate()
    config.lambdaMin = 3.0
    with pytest.raises(pexConfig.FieldValidationError, match="lambdaMin"):
        config.validate()


@pytest.mark.parametrize("lambdaType", ["minimizeBiasedRisk", "minimizeUnbiasedRisk"])
@pytest.mark.parametrize("step", [0.0, -0.1])
def test_df_risk_scan_needs_positive_step(lambdaType: str, step: float) -> None:
    config = PsfMatchConfigDF()
    config.lambdaType = lambdaType
    config.lambdaStep = step
    with pytest.raises(pexConfig.FieldValidationError, match="lambdaStep.*positive"):
        config.validate()


@pytest.mark.parametrize("lambdaType", ["minimizeBiasedRisk", "minimizeUnbiasedRisk"])
def test_df_risk_scan_defaults_validate(lambdaType: str) -> None:
    config = PsfMatchConfigDF()
    config.lambdaType = lambdaType
    config.validate()


@pytest.mark.parametrize("lambdaType", ["absolute", "relative"])
def test_df_scan_fields_are_free_without_a_scan(lambdaType: str) -> None:
    config = PsfMatchConfigDF()
    config.lambdaType = lambdaType
    config.lambdaMin = 5.0
    config.lambdaMax = 1.0
    config.lambdaStep = 0.0
    config.validate()


def test_df_validate_also_applies_base_rules() -> None:
    config = PsfMatchConfigDF()
    config.kernelSize = 20
    with pytest.raises(pexConfig.FieldValidationError, match="kernelSize"):
        config.validate()


# --- persistence ------------------------------------------------------------------------------


def _modified(cls: type[PsfMatchConfig]) -> PsfMatchConfig:
    config = cls()
    config.fitForBackground = True
    config.kernelSize = 31
    config.spatialModelType = "polynomial"
    config.badMaskPlanes = ["BAD", "SAT", "NOT_A_PLANE"]
    config.nStarPerCell = -1
    config.nThreads = 2
    config.conditionNumberType = "SVD"
    if isinstance(config, PsfMatchConfigAL):
        config.alardNGauss = 2
        config.alardDegGauss = [3, 1]
        config.alardSigGauss = [0.9, 2.7]
    if isinstance(config, PsfMatchConfigDF):
        config.regularizationType = "forwardDifference"
        config.forwardRegularizationOrders = [1, 3]
        config.centralRegularizationStencil = 5
        config.lambdaType = "minimizeUnbiasedRisk"
        config.lambdaStepType = "linear"
        config.lambdaMin = 0.1
        config.lambdaMax = 100.0
    return config


@pytest.mark.parametrize("cls", ALL_CONFIG_CLASSES)
def test_save_and_load_round_trip(cls: type[PsfMatchConfig]) -> None:
    config = _modified(cls)
    config.validate()
    text = config.saveToString()
    loaded = cls()
    loaded.loadFromString(text)
    assert loaded.compare(config)
    assert loaded == config
    assert loaded.kernelSize == 31
    assert list(loaded.badMaskPlanes) == ["BAD", "SAT", "NOT_A_PLANE"]
    loaded.validate()


@pytest.mark.parametrize("cls", ALL_CONFIG_CLASSES)
def test_loaded_defaults_equal_defaults(cls: type[PsfMatchConfig]) -> None:
    loaded = cls()
    loaded.loadFromString(cls().saveToString())
    assert loaded == cls()


def test_saved_al_config_leaves_out_deprecated_defaults() -> None:
    # pex_config does not write deprecated fields that are at their default, so loading a
    # saved config does not warn.
    text = PsfMatchConfigAL().saveToString()
    assert "alardDegGaussDeconv" not in text
    assert "alardNGaussDeconv" not in text


def test_loading_into_the_wrong_class_fails() -> None:
    text = PsfMatchConfigDF().saveToString()
    with pytest.raises(AssertionError, match="PsfMatchConfigDF"):
        PsfMatchConfigAL().loadFromString(text)


# --- makeKernelControl, against a stand-in for the compiled module ---------------------------


class _FakeConditionNumberType(enum.Enum):
    EIGENVALUE = 0
    SVD = 1


class _FakeLambdaType(enum.Enum):
    ABSOLUTE = 0
    RELATIVE = 1
    MINIMIZE_BIASED_RISK = 2
    MINIMIZE_UNBIASED_RISK = 3


class _FakeLambdaStepType(enum.Enum):
    LINEAR = 0
    LOG = 1


class _FakeSpatialModelType(enum.Enum):
    POLYNOMIAL = 0
    CHEBYSHEV1 = 1


# The member defaults of psfmatch::KernelControl (cpp/include/psfmatch/control.h).
_CONTROL_DEFAULTS: dict[str, Any] = {
    "fitForBackground": False,
    "constantVarianceWeighting": True,
    "iterateSingleKernel": False,
    "calculateKernelUncertainty": False,
    "checkConditionNumber": False,
    "maxConditionNumber": 5.0e7,
    "conditionNumberType": _FakeConditionNumberType.EIGENVALUE,
    "useRegularization": False,
    "lambdaType": _FakeLambdaType.ABSOLUTE,
    "lambdaValue": 0.2,
    "lambdaScaling": 1.0e-4,
    "lambdaStepType": _FakeLambdaStepType.LOG,
    "lambdaMin": -1.0,
    "lambdaMax": 2.0,
    "lambdaStep": 0.1,
    "badMaskBits": 0,
    "edgeBit": 0,
    "noDataBit": 0,
    "candidateCoreRadius": 3,
    "useCoreStats": False,
    "singleKernelClipping": True,
    "candidateResidualMeanMax": 0.25,
    "candidateResidualStdMax": 1.50,
    "kernelSumClipping": True,
    "maxKsumSigma": 3.0,
    "spatialKernelClipping": True,
    "spatialKernelOrder": 2,
    "spatialBgOrder": 1,
    "spatialModelType": _FakeSpatialModelType.CHEBYSHEV1,
    "usePcaForSpatialKernel": False,
    "subtractMeanForPca": True,
    "numPrincipalComponents": 5,
    "nThreads": 0,
}

# The control fields that are not config fields of the same name.
_MASK_CONTROL_FIELDS = {"badMaskBits", "edgeBit", "noDataBit"}
_DF_ONLY_CONTROL_FIELDS = {
    "useRegularization",
    "lambdaType",
    "lambdaValue",
    "lambdaScaling",
    "lambdaStepType",
    "lambdaMin",
    "lambdaMax",
    "lambdaStep",
}


class _FakeKernelControl:
    """Stand-in for psfmatch._core.KernelControl that records which members are assigned."""

    assigned: set[str]

    def __init__(self) -> None:
        object.__setattr__(self, "assigned", set())
        for name, value in _CONTROL_DEFAULTS.items():
            object.__setattr__(self, name, value)

    def __setattr__(self, name: str, value: Any) -> None:
        if name not in _CONTROL_DEFAULTS:
            raise AttributeError(f"KernelControl has no member {name!r}")
        self.assigned.add(name)
        object.__setattr__(self, name, value)


@pytest.fixture
def fake_core(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    """Make ``from . import _core`` inside psfmatch.config find a pure-Python stand-in."""
    import psfmatch

    fake = types.ModuleType("psfmatch._core")
    fake.KernelControl = _FakeKernelControl  # type: ignore[attr-defined]
    fake.ConditionNumberType = _FakeConditionNumberType  # type: ignore[attr-defined]
    fake.LambdaType = _FakeLambdaType  # type: ignore[attr-defined]
    fake.LambdaStepType = _FakeLambdaStepType  # type: ignore[attr-defined]
    fake.SpatialModelType = _FakeSpatialModelType  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "psfmatch._core", fake)
    monkeypatch.setattr(psfmatch, "_core", fake, raising=False)
    return fake


def _headerMembers() -> dict[str, str]:
    """Member name -> default text of struct KernelControl, read from control.h."""
    text = CONTROL_HEADER.read_text()
    body = text[text.index("struct KernelControl") :]
    body = body[: body.index("};")]
    return dict(re.findall(r"^\s*[\w:]+\s+(\w+)\s*=\s*([^;]+);", body, flags=re.M))


def test_fake_control_matches_header() -> None:
    if not CONTROL_HEADER.exists():
        pytest.skip("control.h is not available")
    members = _headerMembers()
    assert set(members) == set(_CONTROL_DEFAULTS)


def test_control_fields_are_config_fields() -> None:
    names = set(_CONTROL_DEFAULTS) - _MASK_CONTROL_FIELDS
    assert names - _DF_ONLY_CONTROL_FIELDS <= set(PsfMatchConfigAL().keys())
    assert names <= set(PsfMatchConfigDF().keys())


@pytest.mark.usefixtures("fake_core")
def test_control_from_df_config_sets_every_member() -> None:
    control = makeKernelControl(PsfMatchConfigDF())
    assert control.assigned == set(_CONTROL_DEFAULTS)


@pytest.mark.usefixtures("fake_core")
@pytest.mark.parametrize("cls", [PsfMatchConfig, PsfMatchConfigAL])
def test_control_from_non_df_config_keeps_regularization_defaults(
    cls: type[PsfMatchConfig],
) -> None:
    control = makeKernelControl(cls())
    assert control.assigned == set(_CONTROL_DEFAULTS) - _DF_ONLY_CONTROL_FIELDS
    assert control.useRegularization is False
    for name in _DF_ONLY_CONTROL_FIELDS:
        assert getattr(control, name) == _CONTROL_DEFAULTS[name]


@pytest.mark.usefixtures("fake_core")
@pytest.mark.parametrize("cls", ALL_CONFIG_CLASSES)
def test_control_copies_plain_fields(cls: type[PsfMatchConfig]) -> None:
    config = _modified(cls)
    config.candidateCoreRadius = 4
    config.maxKsumSigma = 2.5
    config.numPrincipalComponents = 7
    control = makeKernelControl(config)
    for name in control.assigned - _MASK_CONTROL_FIELDS:
        value = getattr(control, name)
        if isinstance(value, enum.Enum):
            continue
        assert value == getattr(config, name), name
        assert type(value) is type(_CONTROL_DEFAULTS[name]), name


@pytest.mark.usefixtures("fake_core")
def test_control_df_values() -> None:
    config = PsfMatchConfigDF()
    config.useRegularization = False
    config.lambdaValue = 0.5
    config.lambdaScaling = 1e-5
    config.lambdaType = "minimizeBiasedRisk"
    config.lambdaMin = -2.0
    config.lambdaMax = 3.0
    config.lambdaStep = 0.25
    control = makeKernelControl(config)
    assert control.useRegularization is False
    assert control.lambdaValue == 0.5
    assert control.lambdaScaling == 1e-5
    assert (control.lambdaMin, control.lambdaMax, control.lambdaStep) == (-2.0, 3.0, 0.25)


@pytest.mark.usefixtures("fake_core")
@pytest.mark.parametrize(
    ("field", "choice", "member"),
    [
        ("conditionNumberType", "EIGENVALUE", _FakeConditionNumberType.EIGENVALUE),
        ("conditionNumberType", "SVD", _FakeConditionNumberType.SVD),
        ("spatialModelType", "polynomial", _FakeSpatialModelType.POLYNOMIAL),
        ("spatialModelType", "chebyshev1", _FakeSpatialModelType.CHEBYSHEV1),
        ("lambdaType", "absolute", _FakeLambdaType.ABSOLUTE),
        ("lambdaType", "relative", _FakeLambdaType.RELATIVE),
        ("lambdaType", "minimizeBiasedRisk", _FakeLambdaType.MINIMIZE_BIASED_RISK),
        ("lambdaType", "minimizeUnbiasedRisk", _FakeLambdaType.MINIMIZE_UNBIASED_RISK),
        ("lambdaStepType", "linear", _FakeLambdaStepType.LINEAR),
        ("lambdaStepType", "log", _FakeLambdaStepType.LOG),
    ],
)
def test_control_enum_mapping(field: str, choice: str, member: enum.Enum) -> None:
    config = PsfMatchConfigDF()
    setattr(config, field, choice)
    assert getattr(makeKernelControl(config), field) is member


@pytest.mark.parametrize(
    ("cls", "field"),
    [
        (PsfMatchConfig, "conditionNumberType"),
        (PsfMatchConfig, "spatialModelType"),
        (PsfMatchConfigDF, "lambdaType"),
        (PsfMatchConfigDF, "lambdaStepType"),
    ],
)
def test_every_choice_has_an_enum_mapping(cls: type[PsfMatchConfig], field: str) -> None:
    # A choice added to a config without a mapping would fail only at run time.
    from psfmatch import _control as configModule

    mapping = {
        "conditionNumberType": configModule._CONDITION_NUMBER_TYPES,
        "spatialModelType": configModule._SPATIAL_MODEL_TYPES,
        "lambdaType": configModule._LAMBDA_TYPES,
        "lambdaStepType": configModule._LAMBDA_STEP_TYPES,
    }[field]
    allowed = {key for key in cls._fields[field].allowed if key is not None}
    assert set(mapping) == allowed


@pytest.mark.usefixtures("fake_core")
def test_control_mask_bits() -> None:
    control = makeKernelControl(PsfMatchConfigAL())
    # Default badMaskPlanes: NO_DATA (bit 8), EDGE (bit 4), SAT (bit 1).
    assert control.badMaskBits == (1 << 8) | (1 << 4) | (1 << 1)
    assert control.edgeBit == 1 << 4
    assert control.noDataBit == 1 << 8


@pytest.mark.usefixtures("fake_core")
def test_control_skips_unknown_mask_planes() -> None:
    config = PsfMatchConfigAL()
    config.badMaskPlanes = ["BAD", "NOT_A_PLANE", "CR"]
    assert makeKernelControl(config).badMaskBits == (1 << 0) | (1 << 3)
    config.badMaskPlanes = []
    assert makeKernelControl(config).badMaskBits == 0


@pytest.mark.usefixtures("fake_core", "restore_mask_planes")
def test_control_uses_added_mask_planes() -> None:
    bit = Mask.addMaskPlane("STREAK")
    config = PsfMatchConfigAL()
    config.badMaskPlanes = ["STREAK"]
    assert makeKernelControl(config).badMaskBits == 1 << bit


@pytest.mark.usefixtures("fake_core")
def test_control_validates_config_first() -> None:
    config = PsfMatchConfigAL()
    config.kernelSize = 20
    with pytest.raises(pexConfig.FieldValidationError, match="kernelSize"):
        makeKernelControl(config)


@pytest.mark.usefixtures("fake_core")
def test_control_rejects_non_config() -> None:
    with pytest.raises(TypeError, match="PsfMatchConfig"):
        makeKernelControl({"kernelSize": 21})  # type: ignore[arg-type]


# --- makeKernelControl, against the compiled module -------------------------------------------


def test_compiled_control_from_al_config() -> None:
    core = pytest.importorskip("psfmatch._core")
    config = PsfMatchConfigAL()
    config.fitForBackground = True
    config.conditionNumberType = "SVD"
    config.spatialModelType = "polynomial"
    config.nThreads = 1
    control = makeKernelControl(config)
    assert isinstance(control, core.KernelControl)
    assert control.fitForBackground is True
    assert control.conditionNumberType == core.ConditionNumberType.SVD
    assert control.spatialModelType == core.SpatialModelType.POLYNOMIAL
    assert control.useRegularization is False
    assert control.maxConditionNumber == 5.0e7
    assert control.badMaskBits == (1 << 8) | (1 << 4) | (1 << 1)
    assert control.edgeBit == 1 << 4
    assert control.noDataBit == 1 << 8
    assert control.nThreads == 1


def test_compiled_control_from_df_config() -> None:
    core = pytest.importorskip("psfmatch._core")
    config = PsfMatchConfigDF()
    config.lambdaType = "minimizeUnbiasedRisk"
    config.lambdaStepType = "linear"
    config.lambdaMin = 0.1
    config.lambdaMax = 10.0
    config.lambdaStep = 0.5
    control = makeKernelControl(config)
    assert control.useRegularization is True
    assert control.lambdaType == core.LambdaType.MINIMIZE_UNBIASED_RISK
    assert control.lambdaStepType == core.LambdaStepType.LINEAR
    assert (control.lambdaMin, control.lambdaMax, control.lambdaStep) == (0.1, 10.0, 0.5)
    assert control.maxConditionNumber == 5.0e6
    assert control.usePcaForSpatialKernel is True


def test_compiled_control_defaults_match_config_defaults() -> None:
    core = pytest.importorskip("psfmatch._core")
    built = makeKernelControl(PsfMatchConfigDF())
    untouched = core.KernelControl()
    # The DF config differs from the struct defaults only where its setDefaults says so.
    differing = {
        name for name in _CONTROL_DEFAULTS if getattr(built, name) != getattr(untouched, name)
    }
    assert differing == {
        "maxConditionNumber",
        "usePcaForSpatialKernel",
        "useRegularization",
        "badMaskBits",
        "edgeBit",
        "noDataBit",
    }


# --- Mask -------------------------------------------------------------------------------------

DEFAULT_PLANES = [
    "BAD",
    "SAT",
    "INTRP",
    "CR",
    "EDGE",
    "DETECTED",
    "DETECTED_NEGATIVE",
    "SUSPECT",
    "NO_DATA",
]


def test_mask_default_planes() -> None:
    assert Mask.getMaskPlaneDict() == {name: bit for bit, name in enumerate(DEFAULT_PLANES)}
    assert list(Mask.getMaskPlaneDict()) == DEFAULT_PLANES


@pytest.mark.parametrize(("bit", "name"), list(enumerate(DEFAULT_PLANES)))
def test_mask_plane_and_bit(bit: int, name: str) -> None:
    assert Mask.getMaskPlane(name) == bit
    assert Mask.getPlaneBitMask(name) == 1 << bit


def test_mask_bit_mask_of_several_planes() -> None:
    expected = (1 << 8) | (1 << 4) | (1 << 1)
    assert Mask.getPlaneBitMask(["NO_DATA", "EDGE", "SAT"]) == expected
    assert Mask.getPlaneBitMask(("SAT", "EDGE", "NO_DATA")) == expected
    assert Mask.getPlaneBitMask(name for name in ["EDGE", "SAT", "NO_DATA"]) == expected
    assert Mask.getPlaneBitMask(["SAT", "SAT"]) == 1 << 1
    assert Mask.getPlaneBitMask([]) == 0


def test_mask_unknown_plane_raises() -> None:
    with pytest.raises(KeyError, match="unknown mask plane 'NOPE'"):
        Mask.getPlaneBitMask("NOPE")
    with pytest.raises(KeyError, match="unknown mask plane 'NOPE'.*NO_DATA"):
        Mask.getPlaneBitMask(["SAT", "NOPE"])
    with pytest.raises(KeyError, match="unknown mask plane 'sat'"):
        Mask.getMaskPlane("sat")


def test_mask_skip_unknown() -> None:
    assert Mask.getPlaneBitMask(["SAT", "NOPE"], skipUnknown=True) == 1 << 1
    assert Mask.getPlaneBitMask("NOPE", skipUnknown=True) == 0


@pytest.mark.parametrize("bad", [3, None, [1, 2], ["SAT", 4]])
def test_mask_bit_mask_type_errors(bad: Any) -> None:
    with pytest.raises(TypeError):
        Mask.getPlaneBitMask(bad)


def test_mask_get_plane_type_error() -> None:
    with pytest.raises(TypeError, match="string"):
        Mask.getMaskPlane(4)  # type: ignore[arg-type]


@pytest.mark.usefixtures("restore_mask_planes")
def test_mask_add_plane() -> None:
    assert Mask.addMaskPlane("STREAK") == 9
    assert Mask.addMaskPlane("STREAK") == 9
    assert Mask.addMaskPlane("SAT") == 1
    assert Mask.addMaskPlane("CROSSTALK") == 10
    assert Mask.getMaskPlane("STREAK") == 9
    assert Mask.getPlaneBitMask(["STREAK", "CROSSTALK"]) == (1 << 9) | (1 << 10)
    assert list(Mask.getMaskPlaneDict())[-2:] == ["STREAK", "CROSSTALK"]


def test_mask_added_planes_do_not_leak_between_tests() -> None:
    assert "STREAK" not in Mask.getMaskPlaneDict()


@pytest.mark.usefixtures("restore_mask_planes")
def test_mask_at_most_32_planes() -> None:
    for k in range(len(DEFAULT_PLANES), 32):
        assert Mask.addMaskPlane(f"EXTRA{k}") == k
    assert len(Mask.getMaskPlaneDict()) == 32
    with pytest.raises(ValueError, match="all 32 bits"):
        Mask.addMaskPlane("ONE_TOO_MANY")
    # An existing plane is still found when the dictionary is full.
    assert Mask.addMaskPlane("SAT") == 1


@pytest.mark.usefixtures("restore_mask_planes")
def test_mask_bit_31_is_an_int32_value() -> None:
    for k in range(len(DEFAULT_PLANES), 32):
        Mask.addMaskPlane(f"EXTRA{k}")
    top = Mask.getPlaneBitMask("EXTRA31")
    assert top == np.iinfo(np.int32).min
    assert Mask.getPlaneBitMask(list(Mask.getMaskPlaneDict())) == -1
    mask = np.array([top, 1, top | 2], dtype=np.int32)
    np.testing.assert_array_equal((mask & top) != 0, [True, False, True])
    assert Mask.interpret(top | 2) == "SAT,EXTRA31"


@pytest.mark.parametrize("bad", ["", 5, None])
def test_mask_add_plane_bad_names(bad: Any) -> None:
    with pytest.raises((TypeError, ValueError)):
        Mask.addMaskPlane(bad)


def test_mask_plane_dict_is_a_copy() -> None:
    planes = Mask.getMaskPlaneDict()
    planes["FAKE"] = 20
    del planes["SAT"]
    assert "FAKE" not in Mask.getMaskPlaneDict()
    assert Mask.getMaskPlane("SAT") == 1


def test_mask_interpret() -> None:
    assert Mask.interpret(0) == ""
    assert Mask.interpret(1 << 1) == "SAT"
    assert Mask.interpret((1 << 8) | (1 << 4) | (1 << 1)) == "SAT,EDGE,NO_DATA"
    assert Mask.interpret(np.int32(1 << 5 | 1 << 6)) == "DETECTED,DETECTED_NEGATIVE"
    assert Mask.interpret(np.uint16(1)) == "BAD"
    # Bits that belong to no plane are not named.
    assert Mask.interpret((1 << 20) | 1) == "BAD"


def test_mask_interpret_errors() -> None:
    with pytest.raises(TypeError, match="integer"):
        Mask.interpret(1.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="32 bits"):
        Mask.interpret(1 << 32)
    with pytest.raises(ValueError, match="32 bits"):
        Mask.interpret(-(1 << 31) - 1)


def test_mask_round_trip_through_interpret() -> None:
    names = ["BAD", "CR", "SUSPECT"]
    assert Mask.interpret(Mask.getPlaneBitMask(names)).split(",") == names
