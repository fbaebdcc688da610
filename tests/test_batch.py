# SPDX-License-Identifier: BSD-3-Clause
"""psfmatch.batch and ``psfmatch batch``: many pairs on a Dask cluster, resumably.

The cluster tests use an in-process `distributed.LocalCluster` with one worker thread (no
ports, starts in milliseconds) and skip cleanly without dask; one test starts a real
one-process local cluster, as ``psfmatch batch`` does. Every output is compared with a serial
``subtract(...).writeFits(...)`` of the same pair, bit for bit.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from astropy.io import fits

import psfmatch
from psfmatch import batch as pmbatch
from psfmatch import io as pmio
from psfmatch.api import subtract
from psfmatch.batch import BatchPair, readManifest, readPairs, runner, subtractBatch
from psfmatch.batch.cache import _TEMPLATE_CACHE, _TemplateCache
from psfmatch.batch.pairs import _asPairs
from psfmatch.batch.worker import _isComplete
from psfmatch.cli import main
from psfmatch.errors import InputFileNotFoundError, InvalidInputError, MissingDependencyError
from psfmatch.image_psf_match import ImagePsfMatchConfig
from psfmatch.simulate import simulatePair

SHAPE = (224, 224)
N_STARS = 80


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Template A shared by three science images (same stars and template noise, other
    backgrounds), template B with one; as LSST-layout FITS files."""
    directory = tmp_path_factory.mktemp("inputs")
    paths: dict[str, Path] = {}
    for name, seed, background in (("a1", 31, 0.0), ("a2", 31, 6.0), ("a3", 31, -4.0)):
        sim = simulatePair(SHAPE, nStars=N_STARS, seed=seed, background=(background, 0.0, 0.0))
        if "tA" not in paths:
            paths["tA"] = directory / "templateA.fits"
            pmio.writeMaskedImage(paths["tA"], sim.template)
        else:
            assert np.array_equal(pmio.readImage(paths["tA"]).image, sim.template.image)
        paths[name] = directory / f"science_{name}.fits"
        pmio.writeMaskedImage(paths[name], sim.science)
    sim = simulatePair(SHAPE, nStars=N_STARS, seed=32)
    paths["tB"], paths["b1"] = directory / "templateB.fits", directory / "science_b1.fits"
    pmio.writeMaskedImage(paths["tB"], sim.template)
    pmio.writeMaskedImage(paths["b1"], sim.science)
    return paths


@pytest.fixture(scope="module")
def client() -> Any:
    """A one-thread in-process cluster: no network ports, no worker processes to start."""
    distributed = pytest.importorskip("distributed")
    with (
        distributed.LocalCluster(
            n_workers=1, threads_per_worker=1, processes=False, dashboard_address="127.0.0.1:0"
        ) as cluster,
        distributed.Client(cluster) as connected,
    ):
        yield connected


def _pairs(data: dict[str, Path], out: Path) -> list[dict[str, Any]]:
    return [
        {"science": data["a1"], "template": data["tA"], "output": out / "a1.fits"},
        {
            "science": data["a2"],
            "template": data["tA"],
            "output": out / "a2.fits",
            "matched": out / "a2_matched.fits",
            "mode": "convolveTemplate",
            "kernelOrder": 1,
        },
        {"science": data["a3"], "template": data["tA"], "output": out / "a3.fits"},
        {"science": data["b1"], "template": data["tB"], "output": out / "b1.fits"},
    ]


@pytest.fixture(scope="module")
def finished(
    client: Any, data: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """The four pairs run once as a batch."""
    out = tmp_path_factory.mktemp("batch")
    pairs = _pairs(data, out)
    _TEMPLATE_CACHE.clear()
    summary = subtractBatch(pairs, client=client)
    return {"out": out, "pairs": pairs, "summary": summary}


def _assertSameFile(path: Path, reference: Path) -> None:
    """Every HDU of ``path`` has the data of the same HDU of ``reference``, bit for bit."""
    with fits.open(path) as got, fits.open(reference) as want:
        assert [h.name for h in got] == [h.name for h in want]
        for a, b in zip(got, want, strict=True):
            if isinstance(b, fits.BinTableHDU):
                assert a.columns.names == b.columns.names
                for name in b.columns.names:
                    np.testing.assert_array_equal(a.data[name], b.data[name])
            elif b.data is None:
                assert a.data is None
            else:
                assert a.data.dtype == b.data.dtype
                assert np.array_equal(a.data, b.data, equal_nan=True), f"{path} {b.name}"


def test_batchMatchesSerial(finished: dict[str, Any], tmp_path: Path) -> None:
    """Every output (and the matched image) equals a serial run of the same pair; the shared
    template is analysed once; the manifest says ok for each pair."""
    summary, out = finished["summary"], finished["out"]
    assert (summary.succeeded, summary.skipped, summary.failed) == (4, 0, 0)
    assert summary.ok and summary.nWorkers == 1
    for pair, record in zip(finished["pairs"], summary.records, strict=True):
        assert record["status"] == "ok", record
        serial = subtract(
            str(pair["science"]),
            str(pair["template"]),
            mode=pair.get("mode", "auto"),
            spatialKernelOrder=pair.get("kernelOrder"),
        )
        reference = tmp_path / Path(pair["output"]).name
        serial.writeFits(reference)
        _assertSameFile(Path(pair["output"]), reference)
        if "matched" in pair:
            matched = pmio.readMaskedImage(pair["matched"])
            for plane in ("image", "mask", "variance"):
                np.testing.assert_array_equal(
                    getattr(matched, plane), getattr(serial.matched, plane)
                )
    with fits.open(out / "a2.fits") as hdul:
        assert hdul[0].header["KO"] == 1  # the per-pair kernel order was used
    # One analysis of template A for its three pairs, one of B.
    assert [r["templateCached"] for r in summary.records] == [False, True, True, False]
    manifest = readManifest(summary.manifest)
    assert Path(summary.manifest) == out / pmbatch.MANIFEST_NAME
    assert [r["status"] for r in manifest] == ["ok"] * 4
    assert [r["output"] for r in manifest] == [str(p["output"]) for p in finished["pairs"]]
    expected = {"a1.fits", "a2.fits", "a2_matched.fits", "a3.fits", "b1.fits"}
    assert {p.name for p in out.iterdir()} == expected | {pmbatch.MANIFEST_NAME}


class _SpyClient:
    """A client that records how many submitted tasks were unfinished at each submission."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self._live: list[Any] = []
        self.maxLive = 0
        self.submitted = 0

    def submit(self, *args: Any, **kwargs: Any) -> Any:
        future = self._client.submit(*args, **kwargs)
        self.submitted += 1
        self._live = [f for f in self._live if not f.done()] + [future]
        self.maxLive = max(self.maxLive, len(self._live))
        return future

    def scheduler_info(self) -> Any:
        return self._client.scheduler_info()


def test_failuresRecordedAndRerunResumes(
    client: Any,
    data: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A corrupt and a missing input fail alone and are in the manifest with their error
    types; at most maxInFlight tasks are out at once; the output directory is created; a rerun
    skips the finished pairs and retries the failed ones."""
    corrupt = tmp_path / "corrupt.fits"
    whole = data["a2"].read_bytes()
    corrupt.write_bytes(whole[: len(whole) // 2])  # a truncated FITS file
    csv = tmp_path / "pairs.csv"
    csv.write_text(
        "# science, template, output (relative to this file)\n"
        "science,template,output\n"
        f"{data['a1']},{data['tA']},out/good1.fits\n"
        f"{corrupt},{data['tA']},out/corrupt.fits\n"
        f"{data['b1']},{data['tB']},out/good2.fits\n"
        f"{tmp_path / 'missing.fits'},{data['tB']},out/missing.fits\n"
    )
    monkeypatch.setitem(sys.modules, "tqdm", None)  # the plain progress lines
    spy = _SpyClient(client)
    summary = subtractBatch(csv, client=spy, maxInFlight=2, progress=True)
    assert (summary.succeeded, summary.skipped, summary.failed) == (2, 0, 2)
    assert not summary.ok
    assert spy.submitted == 4 and spy.maxLive <= 2
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("psfmatch batch:")]
    assert len(lines) == 4 and sum(" failed " in ln for ln in lines) == 2

    out = tmp_path / "out"
    byName = {Path(r["output"]).name: r for r in readManifest(out / pmbatch.MANIFEST_NAME)}
    assert byName["corrupt.fits"]["status"] == "failed"
    assert byName["corrupt.fits"]["errorType"] == "InvalidInputError"
    assert "corrupt.fits" in byName["corrupt.fits"]["message"]
    assert byName["corrupt.fits"]["where"] == "pairs.csv line 4"  # after the comment
    assert "Traceback" in byName["corrupt.fits"]["traceback"]
    assert byName["missing.fits"]["errorType"] == "InputFileNotFoundError"
    assert byName["good1.fits"]["status"] == byName["good2.fits"]["status"] == "ok"
    # Atomic writes: the failed pairs left nothing, not even a temporary file.
    assert {p.name for p in out.iterdir()} == {"good1.fits", "good2.fits", pmbatch.MANIFEST_NAME}
    stamps = {name: (out / name).stat().st_mtime_ns for name in ("good1.fits", "good2.fits")}

    shutil.copyfile(data["a2"], corrupt)  # repair one input
    again = subtractBatch(csv, client=client)
    assert (again.succeeded, again.skipped, again.failed) == (1, 2, 1)
    assert [r["status"] for r in again.records] == ["skipped", "ok", "skipped", "failed"]
    for name, stamp in stamps.items():
        assert (out / name).stat().st_mtime_ns == stamp  # finished outputs untouched
    latest = {Path(r["output"]).name: r["status"] for r in readManifest(again.manifest)}
    assert latest == {
        "good1.fits": "skipped",
        "corrupt.fits": "ok",
        "good2.fits": "skipped",
        "missing.fits": "failed",
    }
    assert len(readManifest(again.manifest, latest=False)) == 8
    assert len({r["run"] for r in readManifest(again.manifest, latest=False)}) == 2


def _lostTask() -> None:
    raise RuntimeError("worker lost")


class _LosingClient(_SpyClient):
    """A client on which every task dies outside `_runPair` (as with a killed worker)."""

    def submit(self, *args: Any, **kwargs: Any) -> Any:
        return super().submit(_lostTask, key=kwargs["key"], pure=False)


def test_lostTasksAreFailures(
    client: Any, data: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A task that dies on the cluster is a failed pair in the manifest, not a crash."""
    monkeypatch.setitem(sys.modules, "tqdm", None)
    pairs = [{"science": data["a1"], "template": data["tA"], "output": tmp_path / "d.fits"}]
    summary = subtractBatch(pairs, client=_LosingClient(client), progress=True)
    assert summary.failed == 1
    record = readManifest(summary.manifest)[0]
    assert (record["status"], record["errorType"], record["message"]) == (
        "failed",
        "RuntimeError",
        "worker lost",
    )
    assert record["seconds"] is None and not (tmp_path / "d.fits").exists()


def test_existingOutputs(
    client: Any, finished: dict[str, Any], data: dict[str, Path], tmp_path: Path
) -> None:
    """A file at an output path that is not a complete psfmatch output is never skipped nor
    silently replaced; overwrite replaces it."""
    reference = Path(finished["pairs"][3]["output"])
    foreign = tmp_path / "foreign.fits"
    pmio.writeMaskedImage(foreign, pmio.readImage(data["b1"]))  # a valid FITS, not ours
    truncated = tmp_path / "truncated.fits"
    truncated.write_bytes(reference.read_bytes()[:-2880])
    assert _isComplete(str(reference))
    assert not _isComplete(str(foreign))
    assert not _isComplete(str(truncated))
    assert not _isComplete(str(tmp_path / "absent.fits"))

    # psfmatch's outputs are told by PSFMVER, not by the lsst-utils timing-format marker
    # (psfmatch.__version__ = 1) in their metadata: without PSFMVER a file is not one.
    with fits.open(reference) as hdul:
        assert hdul[0].header["PSFMVER"] == psfmatch.__version__
        assert hdul[0].header["psfmatch.__version__"] == 1
        del hdul[0].header["PSFMVER"]
        hdul.writeto(tmp_path / "marker_only.fits")
    assert not _isComplete(str(tmp_path / "marker_only.fits"))

    before = foreign.read_bytes()
    pair = {"science": data["b1"], "template": data["tB"], "output": foreign}
    summary = subtractBatch([pair], client=client, manifest=tmp_path / "m.jsonl")
    assert summary.failed == 1
    assert summary.records[0]["errorType"] == "OutputExistsError"
    assert "not a complete psfmatch output" in summary.records[0]["message"]
    assert foreign.read_bytes() == before
    summary = subtractBatch([pair], client=client, manifest=tmp_path / "m.jsonl", overwrite=True)
    assert summary.succeeded == 1
    _assertSameFile(foreign, reference)


def test_cliBatch(
    data: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``psfmatch batch`` against a scheduler address: exit status 1 while a pair fails, 0
    once it succeeds on a rerun; the batch-wide kernel order reaches the outputs."""
    distributed = pytest.importorskip("distributed")
    late = tmp_path / "late.fits"
    csv = tmp_path / "pairs.csv"
    csv.write_text(
        "inim,tmplim,outim\n"
        f"{data['b1']},{data['tB']},{tmp_path / 'd1.fits'}\n"
        f"{late},{data['tA']},{tmp_path / 'd2.fits'}\n"
    )
    with (
        distributed.LocalCluster(
            n_workers=1,
            threads_per_worker=1,
            processes=False,
            protocol="tcp",
            host="127.0.0.1",
            dashboard_address="127.0.0.1:0",
        ) as cluster,
    ):
        address = cluster.scheduler_address
        status = main(["batch", str(csv), "--scheduler", address, "-ko", "0"])
        out, err = capsys.readouterr()
        assert status == 1
        assert "1 succeeded, 0 skipped, 1 failed" in err
        assert "failed: pairs.csv line 3" in err and "InputFileNotFoundError" in err
        shutil.copyfile(data["a3"], late)
        status = main(["batch", str(csv), "--scheduler", address, "-ko", "0"])
        out, err = capsys.readouterr()
        assert status == 0, err
        assert "1 succeeded, 1 skipped, 0 failed" in out
        assert f"manifest: {tmp_path / pmbatch.MANIFEST_NAME}" in out
    for name in ("d1.fits", "d2.fits"):
        with fits.open(tmp_path / name) as hdul:
            assert hdul[0].header["KO"] == 0


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--workers", "0"], "--workers 0: expected at least 1"),
        (["--workers", "2", "--scheduler", "tcp://127.0.0.1:1"], "cannot go with --scheduler"),
        (["--max-in-flight", "0"], "--max-in-flight 0"),
        (["--set", "selection.nosuch=1"], "has no field 'nosuch'"),
    ],
)
def test_cliBatchUsage(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    csv = tmp_path / "pairs.csv"
    csv.write_text("science,template,output\ns.fits,t.fits,d.fits\n")
    assert main(["batch", str(csv), *argv]) == 2
    assert message in capsys.readouterr().err


def test_cliBatchBadPairList(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    csv = tmp_path / "pairs.csv"
    csv.write_text("science,template\ns.fits,t.fits\n")
    assert main(["batch", str(csv)]) == 1
    assert "pairs.csv line 2: no output path" in capsys.readouterr().err


@pytest.mark.slow
def test_localProcessCluster(
    finished: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The default path: subtractBatch starts (and stops) a local cluster of worker
    processes, which import psfmatch and receive the pair and config by pickle; their
    environment lacks Dask's MALLOC_TRIM_THRESHOLD_."""
    seen: dict[str, Any] = {}
    original = pmbatch.localClient

    @contextlib.contextmanager
    def spying(*args: Any, **kwargs: Any) -> Iterator[Any]:
        with original(*args, **kwargs) as started:
            seen.update(started.run(os.environ.get, "MALLOC_TRIM_THRESHOLD_"))
            yield started

    monkeypatch.setattr(runner, "localClient", spying)
    pair = dict(finished["pairs"][3], output=tmp_path / "b1.fits")
    saved = dict(os.environ)
    try:
        summary = subtractBatch([pair], nWorkers=1)
    finally:
        # Dask's nanny copies its workers' environment (OMP_NUM_THREADS=1, ...) into this
        # process; undo that for the tests that follow.
        os.environ.clear()
        os.environ.update(saved)
    assert list(seen.values()) == [None]
    assert summary.succeeded == 1 and summary.nWorkers == 1, summary.records
    assert summary.records[0]["worker"].startswith("tcp://127.0.0.1:")
    _assertSameFile(tmp_path / "b1.fits", Path(finished["pairs"][3]["output"]))


def test_missingDask(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "distributed", None)
    pairs = [{"science": "s.fits", "template": "t.fits", "output": tmp_path / "d.fits"}]
    with pytest.raises(MissingDependencyError, match=r'pip install "psfmatch\[distributed\]"'):
        subtractBatch(pairs)
    assert not (tmp_path / pmbatch.MANIFEST_NAME).exists()
    csv = tmp_path / "pairs.csv"
    csv.write_text("science,template,output\ns.fits,t.fits,d.fits\n")
    assert main(["batch", str(csv)]) == 1
    assert 'pip install "psfmatch[distributed]"' in capsys.readouterr().err


def test_readPairs(tmp_path: Path) -> None:
    csv = tmp_path / "lists" / "pairs.csv"
    csv.parent.mkdir()
    csv.write_text(
        "# a comment\n\nINIM, tmplim, outim, Mode, ko, bgo, kernel_order_unused\n".replace(
            ", kernel_order_unused", ""
        )
        + "s1.fits, /abs/t.fits, out/d1.fits, convolveScience, 1, 0\n"
        + "s2.fits, t.fits, d2.fits, , , \n"
    )
    pairs = readPairs(csv)
    base = csv.parent
    assert pairs == [
        BatchPair(
            science=str(base / "s1.fits"),
            template="/abs/t.fits",
            output=str(base / "out/d1.fits"),
            mode="convolveScience",
            spatialKernelOrder=1,
            spatialBgOrder=0,
            where="pairs.csv line 4",
        ),
        BatchPair(
            science=str(base / "s2.fits"),
            template=str(base / "t.fits"),
            output=str(base / "d2.fits"),
            where="pairs.csv line 5",
        ),
    ]
    dicts = _asPairs(
        [{"science": "s", "template": "t", "output": "d", "ignoreOrigins": "yes", "scienceFwhm": 3}]
    )
    assert dicts[0].ignoreOrigins is True and dicts[0].scienceFwhm == 3.0
    assert dicts[0].science == "s" and dicts[0].where == "pairs[0]"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "no header row and no pairs"),
        ("science,template,output\n", "no pairs"),
        ("science,template,output,colour\ns,t,d,red\n", "line 2: unknown column 'colour'"),
        ("science,template,output\ns,t,\n", "line 2: no output path"),
        ("science,template,output,mode\ns,t,d,fast\n", "line 2, mode: expected one of auto"),
        ("science,template,output,ko\ns,t,d,x\n", "line 2, spatialKernelOrder: expected an int"),
        ("science,template,output,ko\ns,t,d,-1\n", "expected an integer >= 0, got '-1'"),
        ("science,template,output,templateFwhm\ns,t,d,0\n", "templateFwhm: expected a number"),
        ("science,template,output,ignoreOrigins\ns,t,d,maybe\n", "expected true or false"),
        ("science,template,output,ko,kernelOrder\ns,t,d,1,1\n", "repeats spatialKernelOrder"),
        ("science,template,output\ns,t,d,extra\n", "line 2: more cells than columns"),
        (
            "science,template,output\ns1,t,d\ns2,t,d\n",
            "line 3: output '.*/d' is also written by pairs.csv line 2",
        ),
        ("science,template,output\ns1,t,t\n", "line 2: output '.*/t' is also an input"),
    ],
)
def test_readPairsErrors(text: str, message: str, tmp_path: Path) -> None:
    csv = tmp_path / "pairs.csv"
    csv.write_text(text)
    with pytest.raises(InvalidInputError, match=message):
        readPairs(tmp_path / "pairs.csv")


def test_argumentErrors(tmp_path: Path) -> None:
    good = [{"science": "s", "template": "t", "output": str(tmp_path / "d.fits")}]
    with pytest.raises(InputFileNotFoundError, match="nope.csv"):
        readPairs(tmp_path / "nope.csv")
    with pytest.raises(InvalidInputError, match="pairs: expected a CSV path or a list"):
        subtractBatch({"science": "s"})  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match=r"pairs\[0\]: expected a dict, got str"):
        subtractBatch(["s,t,d"])  # type: ignore[list-item]
    with pytest.raises(InvalidInputError, match=r"pairs\[0\], science: expected a file path"):
        subtractBatch([{"science": np.zeros(3), "template": "t", "output": "d"}])
    with pytest.raises(InvalidInputError, match="give at most one of them"):
        subtractBatch(good, scheduler="tcp://127.0.0.1:1", nWorkers=2)
    with pytest.raises(InvalidInputError, match="nWorkers: expected an integer >= 1"):
        subtractBatch(good, nWorkers=0)
    with pytest.raises(InvalidInputError, match="maxInFlight: expected an integer >= 1"):
        subtractBatch(good, maxInFlight=0)
    with pytest.raises(InvalidInputError, match="config: expected an ImagePsfMatchConfig"):
        subtractBatch(good, config={"mode": "auto"})
    config = ImagePsfMatchConfig()
    config.selection.minSnr = 2000.0  # above maxSnr: invalid
    with pytest.raises(InvalidInputError, match="config: .*maxSnr"):
        subtractBatch(good, config=config)


def test_templateCacheComputesOnce() -> None:
    """Threads asking for one template at once share one analysis; the least recently used
    entry is dropped beyond maxEntries."""
    cache = _TemplateCache(maxEntries=2)
    calls: list[str] = []
    barrier = threading.Barrier(4)
    results: list[Any] = []

    def compute(name: str) -> Any:
        def work() -> tuple[str, str]:
            calls.append(name)
            return f"analysis of {name}", "image"

        return work

    def ask() -> None:
        barrier.wait()
        results.append(cache.get(("a",), compute("a")))

    threads = [threading.Thread(target=ask) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert calls == ["a"]
    assert sorted(r[1] is None for r in results) == [False, True, True, True]
    assert {r[0] for r in results} == {"analysis of a"}
    assert (cache.hits, cache.misses) == (3, 1)
    cache.get(("b",), compute("b"))
    cache.get(("c",), compute("c"))  # evicts "a"
    cache.get(("a",), compute("a"))
    assert calls == ["a", "b", "c", "a"]


def test_readManifestSkipsABrokenLine(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    manifest = tmp_path / "m.jsonl"
    record = {"output": "d.fits", "status": "ok"}
    manifest.write_text(json.dumps(record) + "\n" + '{"output": "d.fi')
    with caplog.at_level(logging.WARNING, logger="psfmatch.batch"):
        assert readManifest(manifest) == [record]
    assert "line 2 is not a JSON record" in caplog.text
    assert os.path.getsize(manifest) > 0
