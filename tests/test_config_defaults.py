# SPDX-License-Identifier: BSD-3-Clause
"""The default of every field of every configuration, listed explicitly.

tests/test_config.py holds the kernel configs' tables (docs/algorithm.md §8); this file holds
the others: the image task's, the selection's, the decorrelation's, the detection's, the
cross-convolution's, the PSF-model matcher's and those of the reference-named tasks. Each
configuration is flattened to dotted names (sub-configs recursed into, every choice of a
choice field, a configurable's target by name) and compared with the table: a changed default
fails, and so does a field added or removed without its entry here. A default that a parent's
``setDefaults`` changes in a sub-config is listed as such.
"""

from __future__ import annotations

import functools
from typing import Any

import lsst.pex.config as pexConfig
import pytest
from lsst.pex.config.configChoiceField import ConfigChoiceField
from lsst.pex.config.configField import ConfigField
from lsst.pex.config.configurableField import ConfigurableField

from psfmatch._cross import CrossConvolveConfig
from psfmatch.alard_lupton import AlardLuptonPreconvolveSubtractConfig, AlardLuptonSubtractConfig
from psfmatch.decorrelate import DecorrelateALKernelConfig
from psfmatch.detect_and_measure import DetectAndMeasureConfig
from psfmatch.make_kernel import MakeKernelConfig
from psfmatch.model_psf_match import ModelPsfMatchConfig
from psfmatch.presets import SnapPsfMatchConfig, SnapPsfMatchConfigAL, SnapPsfMatchConfigDF
from psfmatch.selection import KernelSourceSelectionConfig
from psfmatch.subtract_images import ImagePsfMatchConfig
from test_config import AL_DEFAULTS, DF_DEFAULTS

# The planes no stage may use (psfmatch._masks.UNUSABLE_PLANES), written out.
UNUSABLE = ["NO_DATA", "EDGE", "SAT", "BAD", "CR"]

SELECTION: dict[str, Any] = {
    "detectionThreshold": 10.0,
    "detectionFilterFwhm": 4.0,
    "backgroundMeshSize": 128,
    "minSnr": 10.0,
    "maxSnr": 1000.0,
    "minTemplateSnr": 5.0,
    "matchRadius": 2.0,
    "isolationFwhm": 2.0,
    "excludeMaskPlanes": ["NO_DATA", "BAD", "SAT", "EDGE", "CR"],
    "maxKernelSources": 1000,
    "minKernelSources": 3,
    "restrictKernelEdgeSources": False,
}

DECORRELATE: dict[str, Any] = {
    "ignoreMaskPlanes": ["INTRP", "EDGE", "DETECTED", "SAT", "CR", "BAD", "NO_DATA"]
    + ["DETECTED_NEGATIVE"],
    "fillMaskPlanes": UNUSABLE,
    "completeVarPlanePropagation": False,
}

DETECT_AND_MEASURE: dict[str, Any] = {
    "detectionThreshold": 5.0,
    "matchRadius": 1.0,
    "badMaskPlanes": UNUSABLE,
    "nThreads": 0,
}

CROSS_CONVOLVE: dict[str, Any] = {
    "kernelOrder": 2,
    "stampHalfWidth": 0,
    "psfHalfWidth": 0,
    "psfMaxHalfWidth": 25,
    "psfRegions": 1,
    "psfMinStars": 5,
    "psfMaxStars": 200,
    "psfSpatialOrder": 2,
    "decorrelationFloor": 0.001,
    "nestedThreshold": 0.02,
    "nestedNSigma": 5.0,
    "autoPsfStars": 50,
    "autoMeasurePsfs": True,
}

# The image task fits a background by default (MakeKernelConfig.setDefaults); the kernel
# configs' own default is not to.
TASK_KERNEL_AL = {**AL_DEFAULTS, "fitForBackground": True}
TASK_KERNEL_DF = {**DF_DEFAULTS, "fitForBackground": True}

IMAGE_OWN: dict[str, Any] = {
    "mode": "convolveTemplate",
    "requiredTemplateFraction": 0.1,
    "doScaleVariance": True,
    "maxVarianceScaleFactor": 10.0,
    "doSubtractBackground": True,
    "doDecorrelation": True,
    "keepMatchedImage": True,
    "decorrelate.target": "DecorrelateALKernelTask",
    "doDetectDiaSources": True,
    "diaSourceThreshold": 5.0,
    "diaSourceMatchRadius": 1.0,
    "diaSourceBadMaskPlanes": UNUSABLE,
    "maxDifferenceChi2": 4.0,
    "allowPoorSubtraction": False,
}

# SnapPsfMatchConfig: snaps of one visit, nearly the same PSF: a small constant kernel and no
# background (set by the kernel configs and again by SnapPsfMatchConfig.setDefaults).
SNAP_KERNEL_AL = {
    **AL_DEFAULTS,
    "kernelSize": 7,
    "scaleByFwhm": False,
    "spatialKernelOrder": 0,
    "spatialKernelClipping": False,
    "alardNGauss": 2,
    "alardDegGauss": [4, 2],
    "alardSigGauss": [1.0, 2.5],
}
SNAP_KERNEL_DF = {
    **DF_DEFAULTS,
    "kernelSize": 7,
    "spatialKernelOrder": 0,
    "spatialKernelClipping": False,
    "useRegularization": False,
}

# ModelPsfMatchConfig: two noiseless PSF models, no clipping, no FWHM scaling.
MODEL_KERNEL_AL = {
    **AL_DEFAULTS,
    "scaleByFwhm": False,
    "singleKernelClipping": False,
    "kernelSumClipping": False,
    "spatialKernelClipping": False,
}

AL_SUBTRACT_OWN: dict[str, Any] = {
    "mode": "convolveTemplate",
    "makeKernel.target": "MakeKernelTask",
    "doDecorrelation": True,
    "decorrelate.target": "DecorrelateALKernelTask",
    "doScaleVariance": True,
    "doSubtractBackground": True,
    "requiredTemplateFraction": 0.1,
    "badMaskPlanes": ["NO_DATA", "BAD", "SAT", "EDGE", "CR"],
    "preserveTemplateMask": ["NO_DATA", "BAD", "SAT"],
    "allowKernelSourceDetection": False,
}


def prefixed(prefix: str, table: dict[str, Any]) -> dict[str, Any]:
    return {f"{prefix}.{name}": value for name, value in table.items()}


def kernelChoice(prefix: str, al: dict[str, Any], df: dict[str, Any] | None) -> dict[str, Any]:
    out = {f"{prefix}.name": "AL", **prefixed(f"{prefix}.AL", al)}
    if df is not None:
        out.update(prefixed(f"{prefix}.DF", df))
    return out


MAKE_KERNEL = {
    **kernelChoice("kernel", TASK_KERNEL_AL, TASK_KERNEL_DF),
    **prefixed("selection", SELECTION),
}

EXPECTED: dict[type[pexConfig.Config], dict[str, Any]] = {
    KernelSourceSelectionConfig: SELECTION,
    DecorrelateALKernelConfig: DECORRELATE,
    DetectAndMeasureConfig: DETECT_AND_MEASURE,
    CrossConvolveConfig: CROSS_CONVOLVE,
    SnapPsfMatchConfigAL: SNAP_KERNEL_AL,
    SnapPsfMatchConfigDF: SNAP_KERNEL_DF,
    MakeKernelConfig: MAKE_KERNEL,
    ImagePsfMatchConfig: {
        **MAKE_KERNEL,
        **IMAGE_OWN,
        **prefixed("decorrelate", DECORRELATE),
        **prefixed("crossConvolve", CROSS_CONVOLVE),
    },
    SnapPsfMatchConfig: {
        **kernelChoice("kernel", SNAP_KERNEL_AL, SNAP_KERNEL_DF),
        **prefixed("selection", SELECTION),
        **IMAGE_OWN,
        **prefixed("decorrelate", DECORRELATE),
        **prefixed("crossConvolve", CROSS_CONVOLVE),
    },
    ModelPsfMatchConfig: {
        **kernelChoice("kernel", MODEL_KERNEL_AL, None),
        "doAutoPadPsf": True,
        "autoPadPsfTo": 1.4,
        "padPsfBy": 0,
    },
    AlardLuptonSubtractConfig: {
        **AL_SUBTRACT_OWN,
        **prefixed("makeKernel", MAKE_KERNEL),
        **prefixed("decorrelate", DECORRELATE),
    },
    AlardLuptonPreconvolveSubtractConfig: {
        **AL_SUBTRACT_OWN,
        **prefixed("makeKernel", MAKE_KERNEL),
        **prefixed("decorrelate", DECORRELATE),
    },
}

CASES = [
    pytest.param(cls, name, value, id=f"{cls.__name__}.{name}")
    for cls, table in EXPECTED.items()
    for name, value in table.items()
]


def flatten(config: pexConfig.Config, prefix: str = "") -> dict[str, Any]:
    """Every leaf field of ``config`` by dotted name: sub-configs recursed into, a choice
    field's selected ``name`` and each of its choices, a configurable's ``target`` by name."""
    out: dict[str, Any] = {}
    for name, field in config._fields.items():
        value = getattr(config, name)
        key = prefix + name
        if isinstance(field, ConfigChoiceField):
            out[f"{key}.name"] = value.name
            for choice in field.typemap:
                out.update(flatten(value[choice], f"{key}.{choice}."))
        elif isinstance(field, ConfigurableField):
            out[f"{key}.target"] = value.target.__name__
            out.update(flatten(value.value, f"{key}."))
        elif isinstance(field, ConfigField):
            out.update(flatten(value, f"{key}."))
        else:
            out[key] = list(value) if isinstance(value, pexConfig.listField.List) else value
    return out


@functools.cache
def defaults(cls: type[pexConfig.Config]) -> dict[str, Any]:
    """`flatten` of a fresh ``cls()``, once per class (tests only read it)."""
    return flatten(cls())


def _configClasses() -> set[type[pexConfig.Config]]:
    """Every `pexConfig.Config` subclass psfmatch defines at module level."""
    import importlib
    import pkgutil

    import psfmatch

    found: set[type[pexConfig.Config]] = set()
    for info in pkgutil.walk_packages(psfmatch.__path__, "psfmatch."):
        if ".plot" in info.name or info.name.endswith("__main__"):
            continue
        module = importlib.import_module(info.name)
        for value in vars(module).values():
            if (
                isinstance(value, type)
                and issubclass(value, pexConfig.Config)
                and value.__module__.startswith("psfmatch")
            ):
                found.add(value)
    return found


@pytest.mark.parametrize("cls", list(EXPECTED), ids=lambda c: c.__name__)
def test_fields_are_exactly_those_of_the_table(cls: type[pexConfig.Config]) -> None:
    # A field added (or dropped) without its row here fails, by name.
    actual = set(defaults(cls))
    expected = set(EXPECTED[cls])
    assert actual - expected == set(), "fields without a default in this table"
    assert expected - actual == set(), "rows of this table that are not fields"


@pytest.mark.parametrize(("cls", "name", "expected"), CASES)
def test_default(cls: type[pexConfig.Config], name: str, expected: Any) -> None:
    value = defaults(cls)[name]
    assert value == expected
    # 1 and 1.0 compare equal; the field's type is part of the default.
    assert type(value) is type(expected)


def test_every_config_class_has_a_table() -> None:
    from test_config import EXPECTED_DEFAULTS

    covered = set(EXPECTED) | set(EXPECTED_DEFAULTS)
    missing = {cls.__qualname__ for cls in _configClasses() - covered}
    assert missing == set(), "configs without a defaults table"


# (config class, field, a value its check rejects, a value at the edge of what it accepts):
# the bounds of the selection's, the detection's and the image task's own fields.
CHECK_CASES: list[tuple[type[pexConfig.Config], str, Any, Any]] = [
    (KernelSourceSelectionConfig, "detectionThreshold", 0.0, 1e-3),
    (KernelSourceSelectionConfig, "backgroundMeshSize", 7, 8),
    (KernelSourceSelectionConfig, "minSnr", -0.01, 0.0),
    (KernelSourceSelectionConfig, "maxSnr", -0.01, 0.0),  # 0: no upper limit
    (KernelSourceSelectionConfig, "maxSnr", 10.0, 10.01),  # must exceed minSnr (10)
    (KernelSourceSelectionConfig, "minTemplateSnr", -0.01, 0.0),
    (KernelSourceSelectionConfig, "matchRadius", 0.0, 1e-3),
    (KernelSourceSelectionConfig, "isolationFwhm", -0.01, 0.0),
    (KernelSourceSelectionConfig, "maxKernelSources", 0, 1),
    (KernelSourceSelectionConfig, "maxKernelSources", -2, -1),  # -1: no limit
    (KernelSourceSelectionConfig, "minKernelSources", 0, 1),
    (DetectAndMeasureConfig, "detectionThreshold", 0.0, 1e-3),
    (DetectAndMeasureConfig, "matchRadius", -0.01, 0.0),
    (ImagePsfMatchConfig, "requiredTemplateFraction", -0.01, 0.0),
    # pex_config's default range excludes its max, as the reference's field does: 1 itself
    # (require every pixel) is refused.
    (ImagePsfMatchConfig, "requiredTemplateFraction", 1.0, 0.999),
    (ImagePsfMatchConfig, "maxVarianceScaleFactor", 0.99, 1.0),
    (ImagePsfMatchConfig, "diaSourceThreshold", 0.0, 1e-3),
    (ImagePsfMatchConfig, "diaSourceMatchRadius", -0.01, 0.0),
]


@pytest.mark.parametrize(
    ("cls", "name", "bad", "good"),
    [
        pytest.param(cls, name, bad, good, id=f"{cls.__name__}.{name}={bad!r}")
        for cls, name, bad, good in CHECK_CASES
    ],
)
def test_field_bounds(cls: type[pexConfig.Config], name: str, bad: Any, good: Any) -> None:
    config = cls()
    config.validate()
    config.__setattr__(name, good)
    config.validate()
    # pex_config checks a range when the value is set, a cross-field rule in validate().
    with pytest.raises(pexConfig.FieldValidationError):
        config.__setattr__(name, bad)
        config.validate()
