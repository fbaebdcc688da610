# SPDX-License-Identifier: BSD-3-Clause
"""Speed work must not change the answers: today's outputs, kept, against the code of now.

``tests/golden/outputs.npz`` holds what psfmatch at commit bd9af56 (2026-12-03, before the
"product as fast as its core" work of issue 18) gave for two simulated 512² pairs through the
user's path, ``psfmatch.subtract`` on FITS files with default settings:

- ``variance``: the LSST MaskedImage layout (image, mask and variance planes);
- ``plain``: the image alone, so that psfmatch estimates each variance.

Kept: the kernel image at the centre and the four corners, the kernel sum, the difference
image, its variance and mask on the central 256² pixels, and the detections in D. Regenerate
(only when an answer is meant to change, saying why in the commit) with
``python tests/test_golden_outputs.py``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from astropy.io import fits

import psfmatch
from psfmatch import io as pmio
from psfmatch.simulate import simulatePair

GOLDEN = Path(__file__).resolve().parent / "golden" / "outputs.npz"
FORMS = ("variance", "plain")
SIZE = 512
CROP = np.s_[128:384, 128:384]


def _outputs(form: str, directory: Path) -> dict[str, np.ndarray]:
    """The kept outputs of one default run on the simulated pair written as ``form``."""
    sim = simulatePair((SIZE, SIZE), nStars=500, seed=11)
    paths = {}
    for which in ("science", "template"):
        mi = getattr(sim, which)
        path = directory / f"{which}_{form}.fits"
        if form == "variance":
            pmio.writeMaskedImage(path, mi)
        else:
            fits.PrimaryHDU(np.asarray(mi.image, dtype=np.float32)).writeto(path)
        paths[which] = path
    result = psfmatch.subtract(paths["science"], paths["template"])
    corners = [(0.0, 0.0), (SIZE - 1.0, 0.0), (0.0, SIZE - 1.0), (SIZE - 1.0, SIZE - 1.0)]
    kernels = [result.kernelImage()] + [result.kernelImage(x, y) for x, y in corners]
    dia = result.diaSources
    assert dia is not None
    return {
        "kernels": np.array(kernels),
        "kernelSum": np.array(result.kernelSum),
        "image": np.array(result.image[CROP]),
        "variance": np.array(result.variance[CROP]),
        "mask": np.array(result.mask[CROP]),
        "diaXY": np.array([dia["x"], dia["y"]]).T.reshape(-1, 2),
        "diaSnr": np.array(dia["snr"]),
    }


@pytest.fixture(scope="module")
def golden() -> Any:
    return np.load(GOLDEN)


@pytest.mark.parametrize("form", FORMS)
def test_outputs_as_before(form: str, golden: Any, tmp_path: Path) -> None:
    now = _outputs(form, tmp_path)
    was = {key: golden[f"{form}/{key}"] for key in now}
    # The kernel: the same selection and the same float64 solve; 1e-9 of its peak leaves room
    # only for the summation order of another machine's SIMD width, not for any change of the
    # stars used or their weights (one star more or less moves it by ~1e-4).
    peak = float(np.abs(was["kernels"]).max())
    np.testing.assert_allclose(now["kernels"], was["kernels"], rtol=0, atol=1e-9 * peak)
    np.testing.assert_allclose(now["kernelSum"], was["kernelSum"], rtol=1e-9)
    np.testing.assert_array_equal(now["mask"], was["mask"])
    # D and its variance, per pixel, in units of the pixel's noise: 1e-3 σ. Float32 filtering
    # in place of float64 rounds at ~1e-7 of the largest values (a star's residual is at most
    # ~10³ σ); a real change of the filter (a truncated kernel, a wrong variance weight) moves
    # pixels by ≥ 1e-2 σ.
    sigma = np.sqrt(was["variance"])
    assert np.max(np.abs(now["image"] - was["image"]) / sigma) < 1e-3
    # The variance to 1e-5 relative: the same weights, summed in another order or precision.
    np.testing.assert_allclose(now["variance"], was["variance"], rtol=1e-5)
    # The detections: the same sources (within 0.01 px; sep's barycentres of the same pixels)
    # and S/N within 1e-3 relative (the filtered image's rounding, as above).
    assert now["diaXY"].shape == was["diaXY"].shape
    np.testing.assert_allclose(now["diaXY"], was["diaXY"], rtol=0, atol=1e-2)
    np.testing.assert_allclose(now["diaSnr"], was["diaSnr"], rtol=1e-3)


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        arrays = {
            f"{form}/{key}": value
            for form in FORMS
            for key, value in _outputs(form, Path(tmp)).items()
        }
    GOLDEN.parent.mkdir(exist_ok=True)
    np.savez_compressed(GOLDEN, **arrays)
    print(f"wrote {GOLDEN} ({GOLDEN.stat().st_size} bytes)", file=sys.stderr)
