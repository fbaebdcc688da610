# SPDX-License-Identifier: BSD-3-Clause
"""psfmatch.plot: each figure from a real run on a simulated pair, rendered headless (Agg);
report.html; the debugging switches; and life without matplotlib.

The figures are checked for what they draw, not only that they draw: the panels expected
from the run (basis size from the configured degrees, candidates from their statuses), the
data in the panels against independent evaluations (the kernel image at a grid position, a
coefficient's spatial model from its Chebyshev terms, the histogram counts), and the rendered
PNG for not being blank.
"""

from __future__ import annotations

import html.parser
import importlib.util
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import psfmatch
import psfmatch.debug
import psfmatch.plot as pmplot
import psfmatch.plot.figures as pmplotFigures
from psfmatch import ImagePsfMatchConfig, Mask, MissingDependencyError
from psfmatch.cli import main
from psfmatch.simulate import simulatePair

needsMatplotlib = pytest.mark.skipif(
    importlib.util.find_spec("matplotlib") is None, reason="needs matplotlib (psfmatch[plot])"
)

SHAPE = (256, 256)
DEGREES = [2, 1, 0]  # Alard-Lupton degrees: 6 + 3 + 1 = 10 basis kernels, a fast small figure
GOOD = psfmatch._core.KernelCandidate.GOOD
BAD = psfmatch._core.KernelCandidate.BAD
INSTALL_HINT = 'pip install "psfmatch[plot]"'


def _config() -> ImagePsfMatchConfig:
    config = ImagePsfMatchConfig()
    config.kernel.active.alardDegGauss = DEGREES
    config.kernel.active.spatialKernelOrder = 1
    return config


def _nBasis(degrees: list[int]) -> int:
    """Basis size of an Alard-Lupton basis: (d+1)(d+2)/2 polynomials per Gaussian."""
    return sum((d + 1) * (d + 2) // 2 for d in degrees)


@pytest.fixture(scope="module")
def sim() -> Any:
    return simulatePair(SHAPE, nStars=80, seed=2, nTransients=2, transientFlux=2e4)


@pytest.fixture(scope="module")
def run(sim: Any) -> Any:
    """A subtraction with used and rejected candidates (if the fit rejected none, one used
    candidate is marked rejected so that the red frames have something to show)."""
    result = psfmatch.subtract(sim.science, sim.template, config=_config())
    fitted = [
        c for c in result.kernelCellSet.getAllCandidates(ignoreBad=False) if c.isInitialized()
    ]
    if not any(c.getStatus() == BAD for c in fitted):
        fitted[-1].setStatus(BAD)
    return result


def _statuses(result: Any) -> tuple[int, int]:
    fitted = [
        c for c in result.kernelCellSet.getAllCandidates(ignoreBad=False) if c.isInitialized()
    ]
    return (
        sum(c.getStatus() == GOOD for c in fitted),
        sum(c.getStatus() == BAD for c in fitted),
    )


def _imageAxes(fig: Any) -> list[Any]:
    return [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]


def _assertNotBlank(path: Path) -> None:
    """The PNG exists and is a picture: more than one colour, and many of them."""
    from matplotlib.image import imread

    assert path.is_file() and path.stat().st_size > 0
    pixels = imread(path)
    assert pixels.ndim == 3 and pixels.shape[0] > 100 and pixels.shape[1] > 100
    flat = pixels[..., :3].reshape(-1, 3)
    assert float(flat.std()) > 0.0
    # A figure of images and text has hundreds of colours; a blank or failed one has a few.
    assert len(np.unique(np.round(flat * 255).astype(np.uint8), axis=0)) > 50


def _panelData(ax: Any) -> np.ndarray:
    return np.asarray(ax.get_images()[0].get_array(), dtype=np.float64)


# --------------------------------------------------------------------------------------------
# the figures


@needsMatplotlib
def test_candidates_figure(run: Any, tmp_path: Path) -> None:
    from matplotlib.colors import to_rgba

    nGood, nBad = _statuses(run)
    assert nGood > 0 and nBad > 0
    fig = pmplot.plotCandidates(run, maxCandidates=12)
    nRows = min(12, nGood + nBad)
    axes = _imageAxes(fig)
    assert len(axes) == 4 * nRows
    red = [ax for ax in axes if ax.spines["left"].get_edgecolor() == to_rgba("tab:red")]
    green = [ax for ax in axes if ax.spines["left"].get_edgecolor() == to_rgba("tab:green")]
    # The rule: up to a third of the rows (at least one) for rejected candidates, the rows
    # the used candidates leave free too.
    nBadRows = min(nBad, max(1, 12 // 3))
    nGoodShown = min(nGood, 12 - nBadRows)
    nBadShown = min(nBad, 12 - nGoodShown)
    assert len(red) == 4 * nBadShown
    assert len(green) == 4 * (nRows - nBadShown)
    for ax in axes:
        assert float(np.nanstd(_panelData(ax))) > 0.0
    path = tmp_path / "candidates.png"
    fig.savefig(path)
    _assertNotBlank(path)

    # The first row is the best-rated used candidate: its stamps are the candidate's own.
    best = max(
        (
            c
            for c in run.kernelCellSet.getAllCandidates(ignoreBad=False)
            if c.getStatus() == GOOD and c.isInitialized()
        ),
        key=lambda c: c.getCandidateRating(),
    )
    np.testing.assert_array_equal(_panelData(axes[0]), best.getTemplateMaskedImage().image)
    np.testing.assert_array_equal(_panelData(axes[1]), best.getScienceMaskedImage().image)

    # Without showBadCandidates: only green frames.
    fig = pmplot.plotCandidates(run, showBadCandidates=False, maxCandidates=3)
    axes = _imageAxes(fig)
    assert len(axes) == 4 * min(3, nGood)
    assert "rejected" not in fig._suptitle.get_text()


@needsMatplotlib
def test_kernel_basis_figure(run: Any, tmp_path: Path) -> None:
    fig = pmplot.plotKernelBasis(run)
    axes = _imageAxes(fig)
    assert len(axes) == _nBasis(DEGREES) == run.kernel.getNBasisKernels()
    for ax, kernel in zip(axes, run.kernel.getBasisList(), strict=True):
        np.testing.assert_array_equal(_panelData(ax), kernel.getImage())
        low, high = ax.get_images()[0].get_clim()
        assert low == -high  # kernels on a colour scale symmetric about zero
    path = tmp_path / "basis.png"
    fig.savefig(path)
    _assertNotBlank(path)
    # A basis list works as well as a result.
    assert len(_imageAxes(pmplot.plotKernelBasis(run.kernel.getBasisList()))) == len(axes)


@needsMatplotlib
def test_kernel_mosaic_figure(run: Any, tmp_path: Path) -> None:
    fig = pmplot.plotKernelMosaic(run, nx=3, ny=3)
    axes = _imageAxes(fig)
    assert len(axes) == 9
    assert len(fig.axes) == 10  # and one colour bar
    # The middle panel is the kernel at the centre of the fitted region (0..255).
    centre = axes[4]
    assert "(128, 128)" in centre.get_title() or "(127, 127)" in centre.get_title()
    np.testing.assert_array_equal(_panelData(centre), run.kernelImage(127.5, 127.5))
    # The top-left panel is (minX, maxY): panels are laid out as the image is.
    np.testing.assert_array_equal(_panelData(axes[0]), run.kernelImage(0.0, 255.0))
    path = tmp_path / "mosaic.png"
    fig.savefig(path)
    _assertNotBlank(path)


@needsMatplotlib
def test_kernel_spatial_model_figure(run: Any, tmp_path: Path) -> None:
    nBasis = _nBasis(DEGREES)
    fig = pmplot.plotKernelSpatialModel(run, nGrid=16)
    axes = _imageAxes(fig)
    assert len(axes) == nBasis + 1  # and the background, which is fitted by default
    assert len(fig.axes) == 2 * (nBasis + 1)  # each with its colour bar
    # Coefficient i's image is Σ_k p[i, k] T_k(x, y) of the spatial function's own terms.
    function = run.kernel.getSpatialFunction()
    params = np.asarray(run.kernel.getSpatialParameters())
    for i in (0, 1, nBasis - 1):
        data = _panelData(axes[i])
        for (row, col), (x, y) in (((0, 0), (0.0, 0.0)), ((15, 15), (255.0, 255.0))):
            expected = float(params[i] @ np.asarray(function.terms(x, y)))
            assert data[row, col] == pytest.approx(expected, rel=1e-9, abs=1e-12)  # rounding
    # The dots are the candidates' own coefficients at their positions.
    nGood, nBad = _statuses(run)
    dots = axes[1].collections
    assert sum(len(c.get_offsets()) for c in dots) == nGood + nBad
    byPosition = {
        (c.getXCenter(), c.getYCenter()): c
        for c in run.kernelCellSet.getAllCandidates(ignoreBad=False)
        if c.isInitialized()
    }
    for collection in dots:
        for (x, y), value in zip(collection.get_offsets(), collection.get_array(), strict=True):
            cand = byPosition[(x, y)]
            own = cand.getKernelSolution(psfmatch._core.KernelCandidate.RECENT).getSolution()[1]
            assert value == pytest.approx(own, rel=1e-12)
    path = tmp_path / "spatial.png"
    fig.savefig(path)
    _assertNotBlank(path)


@needsMatplotlib
def test_kernel_coefficients_figure(run: Any, tmp_path: Path) -> None:
    nBasis = _nBasis(DEGREES)
    nGood, nBad = _statuses(run)
    fig = pmplot.plotKernelCoefficients(run)
    axes = _imageAxes(fig)
    assert len(axes) == nBasis
    from matplotlib.patches import Polygon

    for ax in axes:
        # Filled bars: one count per used candidate; two outlines: the spatial model at the
        # used candidates and the rejected candidates.
        (bars,) = ax.containers
        assert sum(bar.get_height() for bar in bars) == nGood
        outlines = [p for p in ax.patches if isinstance(p, Polygon)]
        assert len(outlines) == (2 if nBad else 1)
    fig = pmplot.plotKernelCoefficients(run, showBadCandidates=False)
    assert "rejected" not in fig._suptitle.get_text()
    path = tmp_path / "coefficients.png"
    fig.savefig(path)
    _assertNotBlank(path)


@needsMatplotlib
def test_difference_figure(run: Any, tmp_path: Path) -> None:
    from matplotlib.colors import to_rgba

    fig = pmplot.plotDifference(run, maskTransparency=30)
    axImage, axHist = _imageAxes(fig)
    images = axImage.get_images()
    assert len(images) == 2  # the difference, then the mask overlay
    np.testing.assert_array_equal(images[0].get_array(), run.difference.image)
    overlay = np.asarray(images[1].get_array())
    # The border of the difference is EDGE | NO_DATA; NO_DATA is drawn last, at 70% opacity.
    assert run.difference.mask[0, 0] & Mask.getPlaneBitMask("NO_DATA")
    np.testing.assert_allclose(overlay[0, 0], to_rgba("orange", 0.7), rtol=1e-6)  # float32
    # An unmasked pixel has no overlay.
    y, x = np.argwhere(run.difference.mask == 0)[0]
    assert overlay[y, x, 3] == 0.0
    # The histogram is the density of D/σ over the usable pixels, counted here independently.
    d = run.difference
    bad = Mask.getPlaneBitMask(["NO_DATA", "EDGE", "SAT", "BAD", "CR"])
    ok = np.isfinite(d.image) & np.isfinite(d.variance) & (d.variance > 0) & ((d.mask & bad) == 0)
    assert f"{int(ok.sum())} pixels" in axHist.get_title()
    heights = np.array([bar.get_height() for bar in axHist.containers[0]])
    assert float(np.sum(heights) * 12.0 / 96) == pytest.approx(1.0, rel=1e-9)  # a density
    path = tmp_path / "difference.png"
    fig.savefig(path)
    _assertNotBlank(path)

    # At transparency 100 the mask is not drawn.
    fig = pmplot.plotDifference(run, maskTransparency=100)
    assert len(_imageAxes(fig)[0].get_images()) == 1


def _overlaps(a: Any, b: Any) -> bool:
    """Whether two display-space bounding boxes share any area."""
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


@needsMatplotlib
@pytest.mark.parametrize("scale", [1.0, 1e3], ids=["adu", "thousandfold"])
def test_difference_figure_labels_do_not_overlap(run: Any, scale: float) -> None:
    # Scaled by 1000 (as a frame in electrons with a large sky might be), the tick labels
    # become five digits wide; the figure must stay legible at both scales.
    result = run
    if scale != 1.0:
        d = run.difference
        result = psfmatch.api.SubtractionResult(
            difference=psfmatch.MaskedImage(d.image * scale, d.mask, d.variance * scale**2),
            matched=None,
            kernel=run.kernel,
            background=run.background,
            candidates=run.candidates,
            metadata=run.metadata,
            convolved=run.convolved,
            config=run.config,
            kernelCellSet=run.kernelCellSet,
        )
    fig = pmplot.plotDifference(result)
    fig.canvas.draw()
    axImage = _imageAxes(fig)[0]
    (colorbar,) = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
    low, high = axImage.get_images()[0].norm.vmin, axImage.get_images()[0].norm.vmax
    # Every tick the colour bar draws is a value it shows: astropy's ImageNormalize made
    # matplotlib draw the ticks beyond the limits clipped onto the ends, over the end ticks.
    bar = colorbar.get_window_extent()
    locations = colorbar.yaxis.get_majorticklocs()
    drawn = []
    for tick in colorbar.yaxis.get_major_ticks(len(locations)):
        y = colorbar.transData.transform((0.5, tick.get_loc()))[1]
        # Half a pixel: a tick exactly at a limit is drawn on the bar's edge.
        if bar.y0 - 0.5 <= y <= bar.y1 + 0.5:
            drawn.append(tick)
    assert len(drawn) >= 3
    assert all(low <= tick.get_loc() <= high for tick in drawn), [t.get_loc() for t in drawn]
    labels = [label for t in drawn for label in (t.label1, t.label2) if label.get_visible()]
    assert len(labels) == len(drawn)
    boxes = [label.get_window_extent() for label in labels]
    assert all(box.width > 0 and box.height > 0 for box in boxes)
    for i, a in enumerate(boxes):
        for b in boxes[i + 1 :]:
            assert not _overlaps(a, b), [label.get_text() for label in labels]
    # The legend (mask planes, candidates) lies outside the image it explains.
    legend = axImage.get_legend()
    assert legend is not None
    assert not _overlaps(legend.get_window_extent(), axImage.get_window_extent())
    # ... and inside the figure, not cut off by its edge.
    figureBox = fig.bbox
    box = legend.get_window_extent()
    assert box.x0 >= figureBox.x0 and box.y0 >= figureBox.y0


@needsMatplotlib
def test_large_difference_is_binned(run: Any) -> None:
    fig = pmplot.plotDifference(run, maxPixels=100)
    shown = _imageAxes(fig)[0].get_images()[0].get_array()
    assert shown.shape == (86, 86)  # ceil(256 / 3)
    # A 3 x 3 block is the mean of its finite pixels.
    block = np.asarray(run.difference.image[30:33, 60:63], dtype=np.float64)
    assert shown[10, 20] == pytest.approx(float(np.mean(block)), rel=1e-12)


@pytest.mark.parametrize(
    ("function", "kwargs", "message"),
    [
        (pmplot.plotCandidates, {"maxCandidates": 0}, "maxCandidates"),
        (pmplot.plotKernelMosaic, {"nx": 0}, "nx"),
        (pmplot.plotKernelSpatialModel, {"nGrid": 1}, "nGrid"),
        (pmplot.plotKernelCoefficients, {"bins": 0}, "bins"),
        (pmplot.plotDifference, {"maskTransparency": 101}, "maskTransparency"),
    ],
)
@needsMatplotlib
def test_bad_arguments(run: Any, function: Any, kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(psfmatch.InvalidInputError, match=message):
        function(run, **kwargs)


@needsMatplotlib
def test_result_without_candidates_is_named() -> None:
    class Partial:
        kernel = None

    with pytest.raises(psfmatch.InvalidInputError, match="needs `kernelCellSet`"):
        pmplot.plotCandidates(Partial())


# --------------------------------------------------------------------------------------------
# the report


class _ReportParser(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.images: list[str] = []
        self.links: list[str] = []
        self.keys: list[str] = []
        self.candidateRows = 0
        self._table: str | None = None
        self._inKey = False
        self._text: list[str] = []
        self._inBody = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "img":
            self.images.append(str(attributes["src"]))
        elif tag == "a":
            self.links.append(str(attributes["href"]))
        elif tag == "table":
            self._table = attributes.get("class")
        elif tag == "tbody":
            self._inBody = True
        elif tag == "tr" and self._inBody and self._table == "candidates":
            self.candidateRows += 1
        elif tag == "td" and attributes.get("class") == "key":
            self._inKey = True
            self._text = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "td" and self._inKey:
            self.keys.append("".join(self._text))
            self._inKey = False
        elif tag == "tbody":
            self._inBody = False

    def handle_data(self, data: str) -> None:
        if self._inKey:
            self._text.append(data)


@needsMatplotlib
def test_report(run: Any, tmp_path: Path) -> None:
    directory = tmp_path / "plots"
    report = pmplot.writeReport(
        run, directory, info={"science": "s.fits <a>"}, maxCandidates=4, dpi=60
    )
    assert report == directory / "report.html"
    parser = _ReportParser()
    parser.feed(report.read_text(encoding="utf-8"))
    expected = [f"{name}.png" for name in pmplot.FIGURES]
    assert parser.images == expected
    assert set(expected) <= set(parser.links)
    for name in expected:
        _assertNotBlank(directory / name)
    assert sorted(parser.keys) == sorted(run.metadata.names())
    assert len(parser.keys) == len(set(parser.keys))
    assert parser.candidateRows == len(run.candidates)
    assert "s.fits &lt;a&gt;" in report.read_text(encoding="utf-8")  # escaped

    with pytest.raises(psfmatch.OutputExistsError, match="report.html|png"):
        pmplot.writeReport(run, directory)
    # With overwrite the existing files are no obstacle (the check runs before any drawing).
    names = [f"{name}.png" for name in pmplot.FIGURES] + ["report.html"]
    assert pmplotFigures._prepareDirectory(directory, names, overwrite=True) == directory
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(psfmatch.PsfMatchIOError, match="not a directory"):
        pmplot.writeFigures(run, blocker)


def _warningsBox(text: str) -> str:
    start = text.index('<div class="warnings"')
    return text[start : text.index("</div>", start)]


@needsMatplotlib
def test_report_shows_the_runs_warnings_at_the_top(sim: Any, run: Any, tmp_path: Path) -> None:
    config = _config()
    config.kernel.active.maxSpatialConditionNumber = 1.0  # every solution exceeds it
    result = psfmatch.subtract(sim.science, sim.template, config=config)
    assert any("exceeds max condition number" in m for m in result.warnings)
    result.warnings.append("a <b> & c")  # escaped like everything else
    report = pmplot.writeReport(result, tmp_path / "warned", info={"science": "s.fits"}, dpi=60)
    text = report.read_text(encoding="utf-8")
    box = _warningsBox(text)
    # At the top: after the title, before the info table, the summary and the figures.
    assert text.index(box) < min(text.index("<table"), text.index("<h2>Summary"))
    assert f"Warnings ({len(result.warnings)})" in box
    for message in result.warnings[:-1]:
        assert html.escape(message) in box
    assert "<li>a &lt;b&gt; &amp; c</li>" in box
    # A clean run says so instead.
    assert run.warnings == []
    text = pmplot.writeReport(run, tmp_path / "clean", dpi=60).read_text(encoding="utf-8")
    assert 'class="warnings"' not in text
    assert "No warnings were logged during the run." in text


# --------------------------------------------------------------------------------------------
# the debugging switches


@needsMatplotlib
def test_debug_switches_write_figures(
    sim: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def debugInfo(name: str) -> Any:
        info = psfmatch.debug.getInfo(name)
        if name in ("psfmatch.psf_match", "psfmatch.image_psf_match"):
            info.display = True
            info.maskTransparency = 80
            info.displayCandidates = True
            info.displayKernelBasis = True
            info.displayKernelMosaic = True
            info.plotKernelSpatialModel = True
            info.plotKernelCoefficients = True
            info.showBadCandidates = True
            info.displayDiffIm = True
            info.plotDir = str(tmp_path)
            info.maxCandidates = 3  # a small candidates figure: this test is about the files
        return info

    monkeypatch.setattr(psfmatch.debug, "Info", debugInfo)
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    psfmatch.subtract(sim.science, sim.template, config=_config())
    written = sorted(p.name for p in tmp_path.iterdir())
    assert written == sorted([f"imagePsfMatch-{name}-0.png" for name in pmplot.FIGURES])
    for name in written:
        _assertNotBlank(tmp_path / name)
    from matplotlib.image import imread

    # maxCandidates = 3: three rows of 2 inches and the title's 0.6 inch, at 100 dpi.
    assert imread(tmp_path / "imagePsfMatch-candidates-0.png").shape[0] == 660

    # A second run numbers its files on; only the switches that are on draw.
    def basisOnly(name: str) -> Any:
        info = psfmatch.debug.getInfo(name)
        info.display = True
        info.displayKernelBasis = True
        info.plotDir = str(tmp_path)
        return info

    monkeypatch.setattr(psfmatch.debug, "Info", basisOnly)
    psfmatch.subtract(sim.science, sim.template, config=_config())
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [*written, "imagePsfMatch-kernel_basis-1.png"]
    )


# --------------------------------------------------------------------------------------------
# without matplotlib


def test_without_matplotlib_the_figures_say_what_to_install(
    run: Any, sim: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: Any
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    for name, (function, _, _) in pmplot.FIGURES.items():
        with pytest.raises(MissingDependencyError, match=INSTALL_HINT.replace("[", r"\[")) as info:
            function(run)
        assert isinstance(info.value, ImportError), name
        assert info.value.name == "matplotlib"
    with pytest.raises(MissingDependencyError, match="matplotlib"):
        pmplot.writeReport(run, tmp_path / "r")
    assert not (tmp_path / "r").exists()

    # A debugging switch does not stop the run: it logs what to install.
    def debugInfo(name: str) -> Any:
        info = psfmatch.debug.getInfo(name)
        info.display = True
        info.displayKernelBasis = True
        return info

    monkeypatch.setattr(psfmatch.debug, "Info", debugInfo)
    with caplog.at_level("WARNING", logger="psfmatch"):
        result = psfmatch.subtract(sim.science, sim.template, config=_config())
    assert math.isfinite(result.kernelSum)
    assert INSTALL_HINT in caplog.text

    # The command line fails before any work, with the hint, and writes nothing.
    out = tmp_path / "d.fits"
    science, template = tmp_path / "s.fits", tmp_path / "t.fits"
    psfmatch.io.writeMaskedImage(science, sim.science)
    psfmatch.io.writeMaskedImage(template, sim.template)
    status = main(
        ["subtract", "--science", str(science), "--template", str(template), "--output", str(out)]
        + ["--plots", str(tmp_path / "plots"), "-q"]
    )
    assert status == 1
    assert not out.exists() and not (tmp_path / "plots").exists()


def test_core_imports_and_runs_without_matplotlib(tmp_path: Path) -> None:
    script = (
        "import sys\n"
        "sys.modules['matplotlib'] = None\n"
        "import psfmatch\n"
        "from psfmatch.simulate import simulatePair\n"
        "sim = simulatePair((192, 192), nStars=50, seed=1)\n"
        "result = psfmatch.subtract(sim.science, sim.template, spatialKernelOrder=0)\n"
        "assert abs(result.kernelSum / sim.truth.fluxScale - 1) < 0.02, result.kernelSum\n"
        "loaded = [m for m in sys.modules if m.startswith('matplotlib') and sys.modules[m]]\n"
        "assert not loaded, loaded\n"
        "try:\n"
        "    psfmatch.plot.plotDifference(result)\n"
        "except psfmatch.MissingDependencyError as err:\n"
        "    print(err)\n"
    )
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(Path(psfmatch.__file__).parents[1])] + [env.get("PYTHONPATH", "")]
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert INSTALL_HINT in done.stdout


# --------------------------------------------------------------------------------------------
# the command line


@needsMatplotlib
def test_cli_plots_writes_the_report(sim: Any, tmp_path: Path, capsys: Any) -> None:
    science, template = tmp_path / "s.fits", tmp_path / "t.fits"
    psfmatch.io.writeMaskedImage(science, sim.science)
    psfmatch.io.writeMaskedImage(template, sim.template)
    plots = tmp_path / "plots"
    argv = ["subtract", "--science", str(science), "--template", str(template)]
    argv += ["--output", str(tmp_path / "d.fits"), "-ko", "1", "--plots", str(plots)]
    argv += ["--set", f"kernel.active.alardDegGauss={DEGREES}"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert f"report          : {plots / 'report.html'}" in out
    parser = _ReportParser()
    parser.feed((plots / "report.html").read_text(encoding="utf-8"))
    assert parser.images == [f"{name}.png" for name in pmplot.FIGURES]
    # The keys the command line adds are listed too.
    assert {"differenceUnits", "matchedUnits", "spatialKernelSum"} <= set(parser.keys)

    # A clean run: the report says there was nothing to warn about.
    assert "No warnings were logged during the run." in (plots / "report.html").read_text()

    # Existing figures are not replaced without --overwrite (checked before any work).
    (tmp_path / "d.fits").unlink()
    assert main(argv + ["-q"]) == 1
    assert "exists; pass --overwrite" in capsys.readouterr().err
    assert not (tmp_path / "d.fits").exists()


@needsMatplotlib
def test_cli_report_lists_every_warning_even_when_quiet(
    sim: Any, tmp_path: Path, capsys: Any
) -> None:
    from astropy.io import fits

    science, template = tmp_path / "s.fits", tmp_path / "t.fits"
    psfmatch.io.writeMaskedImage(science, sim.science)
    psfmatch.io.writeMaskedImage(template, sim.template)
    # A warning while the command line reads its inputs: the science IMAGE HDU's checksums
    # fail (a byte of the padding after its data changed; the pixels are the same).
    with fits.open(science) as hdul:
        info = hdul.fileinfo(hdul.index_of("IMAGE"))
        end = info["datLoc"] + info["datSpan"]
    raw = bytearray(science.read_bytes())
    raw[end - 1] ^= 0xFF
    science.write_bytes(bytes(raw))
    # ... and one in the fit.
    plots = tmp_path / "plots"
    argv = ["subtract", "--science", str(science), "--template", str(template)]
    argv += ["--output", str(tmp_path / "d.fits"), "-ko", "1", "--plots", str(plots), "-qq"]
    argv += ["--set", f"kernel.active.alardDegGauss={DEGREES}"]
    argv += ["kernel.active.maxSpatialConditionNumber=1.0"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert captured.out == captured.err == ""  # -qq: errors only
    box = _warningsBox((plots / "report.html").read_text(encoding="utf-8"))
    assert "Warnings (2)" in box
    assert "HDU &#x27;IMAGE&#x27;: the CHECKSUM and DATASUM cards do not match" in box
    assert "Spatial solution exceeds max condition number" in box
