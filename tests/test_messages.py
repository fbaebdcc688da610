# SPDX-License-Identifier: BSD-3-Clause
"""Messages a newcomer can act on: which image a variance problem concerns and which keyword
fixes it, and the warnings of a run kept with its result (``SubtractionResult.warnings``)."""

from __future__ import annotations

import logging
import threading
from typing import Any

import numpy as np
import pytest

import psfmatch
from psfmatch import io as pmio
from psfmatch._logcapture import collectWarnings
from psfmatch.errors import InvalidInputError
from psfmatch.simulate import simulatePair

SHAPE = (256, 256)


@pytest.fixture(scope="module")
def sim() -> Any:
    return simulatePair(SHAPE, nStars=80, seed=2)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(16)


def _noise(rng: np.random.Generator) -> np.ndarray:
    return rng.normal(100.0, 5.0, SHAPE)


# --------------------------------------------------------------------------------------------
# a variance that cannot be estimated


REASONS = {
    "constant": (lambda rng: np.ones(SHAPE), r"the robust scatter of the image's sky is 0"),
    "masked": (
        lambda rng: np.ma.masked_array(rng.normal(size=SHAPE), mask=True),
        r"only 0 unmasked finite pixels \(at least 25 needed\)",
    ),
}


@pytest.mark.parametrize("which", ["science", "template"])
@pytest.mark.parametrize("reason", sorted(REASONS))
def test_subtract_names_the_image_and_the_keyword_for_its_variance(
    rng: np.random.Generator, which: str, reason: str
) -> None:
    make, why = REASONS[reason]
    images = {"science": _noise(rng), "template": _noise(rng)}
    images[which] = make(rng)
    with pytest.raises(InvalidInputError) as excinfo:
        psfmatch.subtract(images["science"], images["template"])
    message = str(excinfo.value)
    assert message.startswith(f"{which}: cannot estimate a variance: ")
    assert excinfo.match(why)
    assert f"pass {which}Variance= (an array, a constant or a FITS path)" in message
    assert "psfmatch.io.readImage(..., gain=, readNoise=)" in message
    other = "template" if which == "science" else "science"
    assert other not in message
    # The keyword it names fixes it: with that variance the image is read (the constant one
    # then has no stars, a later and different error; the masked one is all masked).
    with pytest.raises(psfmatch.PsfMatchError) as again:
        psfmatch.subtract(images["science"], images["template"], **{f"{which}Variance": 25.0})
    assert "cannot estimate a variance" not in str(again.value)


def test_analyzeTemplate_names_the_template_keyword() -> None:
    with pytest.raises(InvalidInputError, match=r"^template: cannot estimate .* templateVariance="):
        psfmatch.analyzeTemplate(np.ones(SHAPE))


def test_readImage_names_the_image_it_is_told(rng: np.random.Generator) -> None:
    with pytest.raises(
        InvalidInputError,
        match=r"^science: cannot estimate a variance: the robust scatter .*; pass variance= or "
        r"sigma=, or gain= with readNoise=$",
    ):
        pmio.readImage(np.ones(SHAPE), name="science")
    with pytest.raises(InvalidInputError, match=r"^cannot estimate a variance: "):
        pmio.readImage(np.ones(SHAPE))
    # What readImage suggests works: a gain with a read noise needs no sky scatter.
    mi = pmio.readImage(np.ones(SHAPE), gain=2.0, readNoise=4.0, name="science")
    np.testing.assert_array_equal(mi.variance, 1.0 / 2.0 + (4.0 / 2.0) ** 2)  # exact in binary


# --------------------------------------------------------------------------------------------
# the warnings of a run


def test_result_keeps_the_warnings_of_its_run(sim: Any) -> None:
    assert psfmatch.subtract(sim.science, sim.template).warnings == []  # a clean run
    config = psfmatch.ImagePsfMatchConfig()
    config.kernel.active.maxSpatialConditionNumber = 1.0  # every solution exceeds it
    result = psfmatch.subtract(sim.science, sim.template, config=config)
    assert len(result.warnings) == 1
    assert result.warnings[0].startswith("Spatial solution exceeds max condition number")


def test_warnings_of_other_threads_are_not_collected() -> None:
    log = logging.getLogger("psfmatch.test")
    inside, logged = threading.Event(), threading.Event()
    seen: dict[str, list[str]] = {}

    def collector() -> None:
        with collectWarnings() as messages:
            log.warning("mine")
            inside.set()
            assert logged.wait(timeout=60)
        seen["collector"] = list(messages)

    def other() -> None:
        assert inside.wait(timeout=60)
        log.warning("someone else's")  # while the collector is open, from another thread
        logged.set()

    threads = [threading.Thread(target=collector), threading.Thread(target=other)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert seen["collector"] == ["mine"]
    # Closed, the collector is gone from the logger.
    assert not any(
        type(h).__name__ == "_ThreadWarnings" for h in logging.getLogger("psfmatch").handlers
    )


def test_concurrent_runs_keep_their_own_warnings(sim: Any) -> None:
    noisy = psfmatch.ImagePsfMatchConfig()
    noisy.kernel.active.maxSpatialConditionNumber = 1.0
    configs = {"noisy": noisy, "clean": None}
    start = threading.Barrier(2)
    results: dict[str, Any] = {}

    def run(name: str) -> None:
        start.wait(timeout=60)
        for _ in range(3):  # several runs each, so that the two overlap
            results[name] = psfmatch.subtract(sim.science, sim.template, config=configs[name])

    threads = [threading.Thread(target=run, args=(name,)) for name in configs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert results["clean"].warnings == []
    assert len(results["noisy"].warnings) == 1
