# SPDX-License-Identifier: BSD-3-Clause
"""Messages a newcomer can act on: which image a variance problem concerns and which keyword
fixes it."""

from __future__ import annotations

import numpy as np
import pytest

import psfmatch
from psfmatch import io as pmio
from psfmatch.errors import InvalidInputError

SHAPE = (256, 256)


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
