# SPDX-License-Identifier: BSD-3-Clause
"""Reading and subtracting FITS files from many threads at once gives exactly what one thread
at a time gives: the damaged file refused, the good ones read with their own warnings (and no
other file's), the same difference images.

Reading decides "this file is damaged" from the warnings astropy raises while it reads; with
`warnings.catch_warnings` (process-wide) a truncated file read in one thread failed another
thread's good file, and was itself accepted.
"""

from __future__ import annotations

import hashlib
import random
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import psfmatch as pm
from helpers import simulatedFitsPair
from psfmatch import io as pmio


def _files(directory: Path) -> list[Path]:
    """Good files of different content, a truncated one (refused by its warning) and one
    whose DATASUM no longer matches (read, with a warning)."""
    rng = np.random.default_rng(5)
    paths = []
    for i in range(4):
        image = rng.normal(100.0, 10.0, (96, 96)).astype(np.float32)
        path = directory / f"good{i}.fits"
        pmio.writeMaskedImage(path, pm.MaskedImage(image, variance=np.full_like(image, 100.0)))
        paths.append(path)
    raw = paths[0].read_bytes()
    cut = directory / "cut.fits"
    cut.write_bytes(raw[:-2880])  # the variance loses its last block: "may have been truncated"
    paths.append(cut)
    stale = directory / "stale.fits"
    data = bytearray(paths[1].read_bytes())
    data[3 * 2880 + 100] ^= 1  # one bit of the image data: the DATASUM card no longer matches
    stale.write_bytes(bytes(data))
    paths.append(stale)
    return paths


def _outcome(path: Path) -> tuple[Any, ...]:
    info: dict[str, Any] = {}
    try:
        image = pmio.readMaskedImage(path, info=info)
    except pm.PsfMatchError as err:
        return ("error", type(err).__name__, str(err))
    digest = hashlib.sha256(image.image.tobytes() + image.variance.tobytes()).hexdigest()
    return ("ok", digest, tuple(info.get("warnings", ())))


def test_threads_reading_good_and_damaged_files_give_the_serial_results(tmp_path: Path) -> None:
    paths = _files(tmp_path)
    serial = {path: _outcome(path) for path in paths}
    # What the serial run says, so that the comparison below means something.
    assert serial[tmp_path / "cut.fits"][0] == "error"
    assert "damaged FITS file" in serial[tmp_path / "cut.fits"][2]
    assert serial[tmp_path / "stale.fits"][0] == "ok" and serial[tmp_path / "stale.fits"][2]
    assert all(serial[p] == ("ok", serial[p][1], ()) for p in paths[:4])

    work = paths * 25
    random.Random(3).shuffle(work)
    with ThreadPoolExecutor(max_workers=8) as pool:
        threaded = list(pool.map(_outcome, work))
    wrong = [(p.name, got) for p, got in zip(work, threaded, strict=True) if got != serial[p]]
    assert not wrong, f"{len(wrong)} of {len(work)} reads differ, e.g. {wrong[:3]}"
    # Nothing was left installed or changed for the rest of the process.
    assert warnings.warn.__module__ in ("warnings", "_warnings")


def test_captured_warnings_are_the_threads_own() -> None:
    """Two threads warn at once inside their blocks, a third outside any: each block holds
    its own thread's warnings only, the third thread's reach the ordinary machinery."""
    from psfmatch._logcapture import _capturedWarnings

    barrier = threading.Barrier(3)
    results: dict[str, list[str]] = {}

    def capture(name: str) -> None:
        with _capturedWarnings() as caught:
            barrier.wait()
            for i in range(200):
                warnings.warn(f"{name} {i}", UserWarning, stacklevel=1)
            barrier.wait()
        results[name] = [str(w.message) for w in caught]

    def outside() -> None:
        barrier.wait()
        with warnings.catch_warnings(record=True) as caught:  # the main machinery still works
            warnings.simplefilter("always")
            barrier.wait()
        results["outside"] = [str(w.message) for w in caught]

    filters = list(warnings.filters)
    threads = [threading.Thread(target=capture, args=(n,)) for n in ("a", "b")]
    threads.append(threading.Thread(target=outside))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results["a"] == [f"a {i}" for i in range(200)]
    assert results["b"] == [f"b {i}" for i in range(200)]
    assert results["outside"] == []
    assert warnings.filters == filters
    with pytest.warns(UserWarning, match="after"):
        warnings.warn("after", UserWarning, stacklevel=1)


@pytest.fixture(scope="module")
def pairs(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    directory = tmp_path_factory.mktemp("pairs")
    return [
        simulatedFitsPair(
            directory, (256, 256), names=(f"s{seed}", f"t{seed}"), nStars=60, seed=seed
        )
        for seed in (11, 12, 13)
    ]


def _subtract(pair: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    result = pm.subtract(pair["science"], pair["template"])
    return result.image.copy(), result.variance.copy(), list(result.warnings)


def test_threads_subtracting_different_files_give_the_serial_results(
    pairs: list[dict[str, Any]],
) -> None:
    serial = [_subtract(pair) for pair in pairs]
    with ThreadPoolExecutor(max_workers=len(pairs)) as pool:
        threaded = list(pool.map(_subtract, pairs * 2))
    for index, (image, variance, warned) in enumerate(threaded):
        expected = serial[index % len(pairs)]
        # Bit-identical: the same computation on the same bytes, whatever runs beside it.
        np.testing.assert_array_equal(image, expected[0])
        np.testing.assert_array_equal(variance, expected[1])
        assert warned == expected[2]
