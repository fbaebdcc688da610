# SPDX-License-Identifier: BSD-3-Clause
"""SIGINT and SIGTERM sent to a real ``psfmatch subtract`` process, and full disks: the outputs
are complete or absent (never half a pair, never a temporary), the old files stay intact, and
the process ends with one line and exit status 130 (SIGINT) or 143 (SIGTERM).

Each run is the console script's own code (``from psfmatch.cli import main; sys.exit(main())``)
in a subprocess, with a hook that sends the signal to the process itself at a chosen moment: on
the first import of a module (start-up), on the n-th call of a function (the fit, the writing of
each file, the moment the files are moved into place), or from inside a destructor (where
Python cannot raise the `KeyboardInterrupt` and used to swallow it). One more test waits for a
line of the log before it sends the signal, as a user or a scheduler would.
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from astropy.io import fits

import psfmatch as pm
from helpers import simulatedFitsPair
from psfmatch import io as pmio
from psfmatch.errors import PsfMatchIOError

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

SHAPE = (320, 320)

# The console script, with a hook (HOOK) that sends the signal SIG to this very process.
_RUNNER = r"""
import importlib, importlib.abc, os, signal, sys

number = getattr(signal, os.environ["SIG"])
kind, _, where = os.environ.get("HOOK", "").partition(":")

def send():
    os.kill(os.getpid(), number)

if kind == "import":
    class Finder(importlib.abc.MetaPathFinder):
        fired = False
        def find_spec(self, name, path, target=None):
            if name == where and not Finder.fired:
                Finder.fired = True
                send()
            return None
    sys.meta_path.insert(0, Finder())
elif kind == "call":
    module, name, nth = where.split(":")
    owner = importlib.import_module(module)
    original = getattr(owner, name)
    calls = [0]
    def wrapped(*args, **kwargs):
        calls[0] += 1
        if calls[0] == int(nth):
            send()
        return original(*args, **kwargs)
    setattr(owner, name, wrapped)
elif kind == "destructor":
    # A destructor that runs while the inputs are read: Python prints "Exception ignored in"
    # for the KeyboardInterrupt raised inside it and goes on.
    import psfmatch.io.inputs as inputs
    original = inputs.readImage
    class Dropped:
        def __del__(self):
            send()
            sum(range(1000))  # some bytecode: the handler runs here, inside __del__
    def wrapped(*args, **kwargs):
        result = original(*args, **kwargs)
        Dropped()
        return result
    inputs.readImage = wrapped
    import psfmatch.io
    psfmatch.io.readImage = wrapped

sys.argv[0] = "psfmatch"
from psfmatch.cli import main
sys.exit(main())
"""

_OLD = {"d.fits": b"old difference", "m.fits": b"old matched"}


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    directory = tmp_path_factory.mktemp("pair")
    return simulatedFitsPair(directory, SHAPE, nStars=100, seed=7, nTransients=3, transientFlux=2e4)


def _environment(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(Path(pm.__file__).parent.parent), env.get("PYTHONPATH", "")]
    )
    env.update(extra)
    return env


def _command(pair: dict[str, Any], out: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-c",
        _RUNNER,
        "subtract",
        "--science",
        str(pair["science"]),
        "--template",
        str(pair["template"]),
        "--output",
        str(out / "d.fits"),
        "--matched",
        str(out / "m.fits"),
        "-q",
        *extra,
    ]


def _checkOutputs(out: Path, existing: bool) -> str:
    """The directory holds the complete new pair, or the old files (none, or the old bytes)
    exactly: nothing else, no temporary. Returns which."""
    names = sorted(p.name for p in out.iterdir())
    assert names == ["d.fits", "m.fits"] or names == ([*_OLD] if existing else []), names
    if not names:
        return "none"
    contents = {name: (out / name).read_bytes() for name in names}
    if existing and all(contents[name] == old for name, old in _OLD.items()):
        return "old"
    # Both new: whole files that read back, with psfmatch's version card.
    for name in names:
        assert fits.getheader(out / name)["PSFMVER"] == pm.__version__
        assert pmio.readMaskedImage(out / name).image.shape == SHAPE
    return "new"


def _prepare(tmp_path: Path, existing: bool) -> Path:
    out = tmp_path / "out"
    out.mkdir()
    if existing:
        for name, content in _OLD.items():
            (out / name).write_bytes(content)
    return out


_MOMENTS = [
    # (hook, what the outputs must be) -- "none": the old files (or none), "new": the new pair.
    ("import:psfmatch.cli.parser", "none"),  # start-up: parsing the command line
    ("import:psfmatch.api", "none"),  # start-up: the pipeline's imports
    ("call:psfmatch.api:subtract:1", "none"),  # the fit
    ("call:psfmatch.io.writing:_writeImage:1", "none"),  # writing the difference image
    ("call:psfmatch.io.writing:_writeImage:4", "none"),  # between D and the matched image
    ("call:psfmatch.io.writing:_moveIntoPlace:1", "new"),  # moving them into place: held back
    ("destructor", "none"),  # raised inside a destructor, where Python swallows it
]


_CASES = [("SIGINT", hook, expected) for hook, expected in _MOMENTS] + [
    # SIGTERM through the same code at the moments where it differs most from a plain exit:
    # before the handler's module is used, in the fit, between the files, in a destructor.
    ("SIGTERM", hook, expected)
    for hook, expected in _MOMENTS
    if hook.endswith(("parser", "subtract:1", "_writeImage:4", "destructor"))
]


@pytest.mark.parametrize(
    ("which", "hook", "expected"), _CASES, ids=[f"{c[0]}-{c[1]}" for c in _CASES]
)
def test_signal_leaves_complete_outputs_or_none(
    pair: dict[str, Any], tmp_path: Path, hook: str, expected: str, which: str
) -> None:
    existing = hook.startswith("call:psfmatch.io.writing")  # old files to keep or replace
    out = _prepare(tmp_path, existing)
    extra = ["--overwrite"] if existing else []
    run = subprocess.run(
        _command(pair, out, *extra),
        env=_environment(SIG=which, HOOK=hook),
        capture_output=True,
        text=True,
        timeout=300,
    )
    status, word = {"SIGINT": (130, "interrupted"), "SIGTERM": (143, "terminated")}[which]
    assert run.returncode == status, run.stderr
    # One line, no traceback, no "Exception ignored" (nothing else is logged with -q).
    assert run.stderr.splitlines()[-1:] == [f"psfmatch: {word}"], run.stderr
    assert "Traceback" not in run.stderr
    outcome = _checkOutputs(out, existing)
    assert outcome == ("new" if expected == "new" else ("old" if existing else "none"))


@pytest.mark.parametrize(("which", "delay"), [("SIGINT", 0.0), ("SIGINT", 0.2), ("SIGTERM", 0.05)])
def test_signal_after_a_line_of_the_log(
    pair: dict[str, Any], tmp_path: Path, which: str, delay: float
) -> None:
    """As a user or a scheduler would: the signal once the log says the template was read,
    or a moment later; the run ends cleanly whatever it was doing."""
    status = {"SIGINT": 130, "SIGTERM": 143}[which]
    out = _prepare(tmp_path, existing=False)
    command = _command(pair, out)
    command[command.index("-q")] = "-v"
    with subprocess.Popen(
        command, env=_environment(SIG=which), stderr=subprocess.PIPE, text=True
    ) as process:
        assert process.stderr is not None
        lines = []
        for line in process.stderr:
            lines.append(line)
            if "read " in line and "template" in line:
                break
        time.sleep(delay)
        process.send_signal(getattr(signal, which))
        rest = process.stderr.read()
        process.wait(timeout=300)
    # The run may have finished in the meantime (exit 0, both files); otherwise it ends with
    # the signal's status and one line.
    if process.returncode == 0:
        assert _checkOutputs(out, False) == "new"
        return
    assert process.returncode == status, "".join(lines) + rest
    assert rest.splitlines()[-1].startswith("psfmatch: "), rest
    assert "Traceback" not in rest
    _checkOutputs(out, False)


def test_full_disk_keeps_the_old_pair(
    pair: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No space for the convolved image: PsfMatchIOError naming it, the old difference and
    convolved images intact (the difference used to be replaced), no temporary."""
    from psfmatch.io import writing

    result = pm.subtract(pair["science"], pair["template"])
    out = _prepare(tmp_path, existing=True)
    original = writing._writeImage
    calls = {"n": 0}

    def full(stream: Any, *args: Any) -> None:
        calls["n"] += 1
        if calls["n"] == 4:  # the convolved image's first plane: part of it, then no space
            stream.write(b"\0" * 2880)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        original(stream, *args)

    monkeypatch.setattr(writing, "_writeImage", full)
    with pytest.raises(PsfMatchIOError, match=r"cannot write '.*m.fits': No space left on device"):
        result.writeFits(out / "d.fits", matchedPath=out / "m.fits", overwrite=True)
    assert _checkOutputs(out, existing=True) == "old"


def test_file_size_limit_is_a_clean_error(pair: dict[str, Any], tmp_path: Path) -> None:
    """A real write that the system refuses (RLIMIT_FSIZE: EFBIG, SIGXFSZ ignored by Python),
    through the command line with --plots: exit 1, one line naming the file, the old files
    intact, no temporary and no plots directory."""
    resource = pytest.importorskip("resource")
    out = _prepare(tmp_path, existing=True)
    limit = (SHAPE[0] * SHAPE[1] * 4) * 2  # more than the image plane, less than a whole file

    def limited() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    run = subprocess.run(
        [
            *_command(pair, out, "--overwrite", "--plots", str(out / "plots")),
        ],
        env=_environment(SIG="SIGINT"),
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=limited,
    )
    if "matplotlib" in run.stderr and run.returncode == 1 and "install" in run.stderr:
        pytest.skip("needs matplotlib for --plots")
    assert run.returncode == 1, run.stderr
    assert run.stderr.splitlines() == [
        f"psfmatch: error: cannot write {str(out / 'd.fits')!r}: File too large"
    ]
    assert _checkOutputs(out, existing=True) == "old"


def test_full_disk_in_the_demo_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    """``psfmatch demo`` on a disk that fills up at its third file: no file of the demo is
    left (it used to leave the template and science images), the directory it made neither."""
    from psfmatch.cli import main
    from psfmatch.io import writing

    original = writing._writeImage
    calls = {"n": 0}

    def full(stream: Any, *args: Any) -> None:
        calls["n"] += 1
        if calls["n"] == 7:  # the difference image's first plane
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        original(stream, *args)

    monkeypatch.setattr(writing, "_writeImage", full)
    status = main(["demo", "--output-dir", str(tmp_path / "demo"), "--size", "192", "-q"])
    err = capsys.readouterr().err
    assert status == 1, err
    assert "No space left on device" in err.splitlines()[-1]
    assert list(tmp_path.iterdir()) == []


def test_writing_together_restores_replaced_files_when_a_move_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If moving the second file into place fails, the first, already replaced, is put
    back: the old pair stays whole."""
    from psfmatch.io import writing

    image = pm.MaskedImage(np.ones((8, 8), dtype=np.float32))
    for name, content in _OLD.items():
        (tmp_path / name).write_bytes(content)
    original = writing._moveIntoPlace
    calls = {"n": 0}

    def failSecond(temporary: Path, target: Path, overwrite: bool) -> None:
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        original(temporary, target, overwrite)

    monkeypatch.setattr(writing, "_moveIntoPlace", failSecond)
    with pytest.raises(PsfMatchIOError, match="m.fits"):
        with writing._writingTogether():
            pmio.writeMaskedImage(tmp_path / "d.fits", image, overwrite=True)
            pmio.writeMaskedImage(tmp_path / "m.fits", image, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(_OLD)
    for name, content in _OLD.items():
        assert (tmp_path / name).read_bytes() == content
