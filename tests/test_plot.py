"""--plot: pictures written as real image files (read back, not sized), and the missing-extra hint."""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path

import pytest
from typer.testing import CliRunner

from probe import spec as spec_mod
from probe.cli import app
from probe.errors import SpecError
from probe.experiments import sweep as sw
from probe.experiments import train as tr
from probe.experiments.batch import compare, parse_entry
from probe.measurement import histograms
from probe.render import plot, spark

pytest.importorskip("matplotlib")

SMALL = spec_mod.parse({"model": {"width": 16, "depth": 3}, "data": {"batch_size": 32}})


def _check_png(path: Path) -> None:
    import matplotlib.image

    pixels = matplotlib.image.imread(path)
    assert pixels.ndim == 3 and pixels.shape[0] > 100 and pixels.shape[1] > 100
    assert pixels.min() < pixels.max()  # something is drawn


def _check_svg(path: Path) -> None:
    root = ET.parse(path).getroot()
    assert root.tag.endswith("svg")
    assert any(el.tag.endswith("path") for el in root.iter())


def _check_pdf(path: Path) -> None:
    data = path.read_bytes()
    assert data.startswith(b"%PDF-")
    assert data.rstrip().endswith(b"%%EOF")
    assert b"trailer" in data or b"/Root" in data


CHECKS = {"png": _check_png, "svg": _check_svg, "pdf": _check_pdf}


@pytest.mark.parametrize("fmt", ["png", "svg", "pdf"])
def test_runs_figure_is_a_valid_image(tmp_path: Path, fmt: str) -> None:
    runs = compare(SMALL, [parse_entry("tiny"), parse_entry("he")])
    out = plot.runs_figure(runs, tmp_path / f"runs.{fmt}")
    CHECKS[fmt](out)


def test_sweep_and_train_figures(tmp_path: Path) -> None:
    depth = sw.sweep(SMALL, ["tiny", "he"], depths=[2, 4])
    _check_svg(plot.sweep_figure(depth, tmp_path / "depth.svg"))
    width = sw.sweep(SMALL, ["he"], depths=[2], widths=[8, 16])
    _check_png(plot.sweep_figure(width, tmp_path / "width.png"))
    results = tr.train_many(tr.lab2_spec(), ["zeros", "he"], tr.TrainSettings(steps=5))
    _check_pdf(plot.train_figure(results, tmp_path / "loss.pdf"))


def test_unknown_suffix_is_a_spec_error(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r"\.png, \.svg or \.pdf"):
        plot.check_path(tmp_path / "x.jpg")


@pytest.mark.parametrize(
    "args",
    [
        ["compare", "tiny", "he", "--depth", "3", "--width", "16", "--batch-size", "32"],
        ["sweep", "--depth", "2,3", "he", "--set", "model.width=16", "--set", "data.batch_size=32"],
        ["train", "zeros", "he", "--steps", "3"],
    ],
    ids=lambda a: a[0],
)
def test_cli_plot(tmp_path: Path, args: list[str]) -> None:
    out = tmp_path / "pic.png"
    result = CliRunner().invoke(app, [*args, "--plot", str(out)])
    assert result.exit_code == 0, result.output
    _check_png(out)


def test_cli_run_plot_svg(tmp_path: Path) -> None:
    spec = tmp_path / "s.yaml"
    spec.write_text("model: {depth: 3, width: 16}\ndata: {batch_size: 32}\n")
    out = tmp_path / "run.svg"
    result = CliRunner().invoke(app, ["run", str(spec), "--plot", str(out)])
    assert result.exit_code == 0, result.output
    _check_svg(out)


def test_cli_plot_without_matplotlib_says_how_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    out = tmp_path / "pic.png"
    result = CliRunner().invoke(app, ["train", "he", "--steps", "2", "--plot", str(out)])
    assert result.exit_code == 2
    assert "pip install 'probe[plot]'" in result.output
    assert not out.exists()


def test_sparkline_on_a_log_scale() -> None:
    # one decade per step on a 3-decade scale: floor, a third, two thirds, top
    assert spark.sparkline([1e-3, 1e-2, 1e-1, 1.0]) == "▁▃▆█"
    assert spark.std_sparkline([1.0, 1.0]) == spark.std_sparkline([0.9, 1.1])  # same block near 1
    assert spark.std_sparkline([0.0])[0] == "▁" and spark.sparkline([float("nan")]) == " "
    assert len(spark.sparkline(list(range(1, 200)))) == spark.MAX_POINTS


def test_std_bar_grows_with_log_std() -> None:
    lengths = [len(spark.std_bar(v)) for v in (1e-6, 1e-3, 1.0, 1e3)]
    assert lengths == sorted(lengths) and lengths[0] == 1 and lengths[-1] == spark.BAR_WIDTH
    assert spark.std_bar(None) == ""


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.external: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        for key, value in attrs:
            if key in ("src", "href") and value and not value.startswith("#"):
                self.external.append(value)


@pytest.mark.parametrize(
    "args",
    [
        ["compare", "tiny", "he", "--depth", "3", "--width", "16", "--batch-size", "32"],
        ["train", "zeros", "he", "--steps", "3"],
        ["sweep", "--depth", "2,3", "tiny", "--set", "model.width=16", "--set", "data.batch_size=32"],
    ],
    ids=lambda a: a[0],
)
def test_cli_html_is_one_self_contained_page(tmp_path: Path, args: list[str]) -> None:
    out = tmp_path / "report.html"
    result = CliRunner().invoke(app, [*args, "--format", "html", "--output", str(out)])
    assert result.exit_code == 0, result.output
    text = out.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>")
    page = _Page()
    page.feed(text)
    assert {"table", "svg", "style"} <= set(page.tags)
    assert "script" not in page.tags and page.external == []
    svg = text[text.index("<svg") : text.index("</svg>") + len("</svg>")]
    assert ET.fromstring(svg).tag.endswith("svg")  # the inlined picture is well-formed SVG


def _mean_log(h: histograms.LayerHistograms, layer: int) -> float:
    centers = [(a + b) / 2 for a, b in zip(h.edges, h.edges[1:], strict=False)]
    mass = sum(h.fractions[layer])
    return sum(c * f for c, f in zip(centers, h.fractions[layer], strict=True)) / mass


def test_histograms_account_for_every_value_and_show_vanishing() -> None:
    he = histograms.histograms(SMALL)
    for layer in range(len(he.layers)):
        # every value is either an exact zero or in a bin (an O(1) signal stays inside 1e-12..1e4)
        assert sum(he.fractions[layer]) + he.zero_fractions[layer] == pytest.approx(1.0, abs=1e-6)
    # ReLU zeroes about half of its inputs
    assert 0.35 < he.zero_fractions[0] < 0.65
    tiny = histograms.histograms(spec_mod.parse({"model": {"width": 16, "depth": 3}, "init": {"weight": "tiny"}}))
    # N(0, 0.01^2) on 16 ReLU units: each layer shrinks magnitudes by ~0.01 * sqrt(8), 1.5 decades
    drop = _mean_log(tiny, 0) - _mean_log(tiny, 2)
    assert 2.0 < drop < 4.0


def test_runs_figure_with_heat_maps(tmp_path: Path) -> None:
    runs = compare(SMALL, [parse_entry("tiny"), parse_entry("he")])
    hists = [histograms.histograms(r.report.spec, r.label) for r in runs]
    _check_png(plot.runs_figure(runs, tmp_path / "heat.png", hists))


def test_cli_compare_and_run_tables_draw_log_scale_pictures(tmp_path: Path) -> None:
    runner = CliRunner(env={"COLUMNS": "160"})  # wide enough for every column, the pictures included
    result = runner.invoke(app, ["compare", "tiny", "he", "--depth", "4", "--width", "32", "--batch-size", "64"])
    assert result.exit_code == 0, result.output
    lines = {line.split()[0]: line for line in result.stdout.splitlines() if line.startswith(("tiny", "he "))}
    # he keeps an O(1) std: a flat line high on the scale; tiny falls toward the floor
    assert spark.std_sparkline([1.0] * 4)[0] in lines["he"]
    assert "▁" in lines["tiny"] and "▁" not in lines["he"]
    spec = tmp_path / "s.yaml"
    spec.write_text("model: {depth: 3, width: 16}\ninit: {weight: tiny}\ndata: {batch_size: 32}\n")
    run = runner.invoke(app, ["run", str(spec)])
    assert run.exit_code == 0 and "std (log)" in run.stdout and "grad (log)" in run.stdout


@pytest.mark.parametrize(
    "config", ["cnn_he.yaml", "resnet_fixup.yaml", "transformer_gpt.yaml", "lstm_forget_bias.yaml", "gru.yaml"]
)
def test_cli_run_plot_every_kind(tmp_path: Path, config: str) -> None:
    import matplotlib.image as mpimg

    out = tmp_path / "kind.png"
    args = ["run", f"configs/{config}", "--set", "data.batch_size=4", "--set", "model.depth=2", "--plot", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "unexpected error" not in result.output
    image = mpimg.imread(out)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
    assert float(image[..., :3].std()) > 0.0  # something was drawn


@pytest.mark.parametrize("config", ["cnn_he.yaml", "transformer_vit.yaml", "lstm_forget_bias.yaml"])
def test_histograms_cover_the_report_rows(config: str) -> None:
    from probe.measurement.run import run_probe

    spec = spec_mod.load(Path("configs") / config, {"data.batch_size": 4, "model.depth": 2})
    report = run_probe(spec)
    h = histograms.histograms(spec)
    assert h.layers == tuple(x.name for x in report.layers)
    for fractions, zeros in zip(h.fractions, h.zero_fractions, strict=True):
        assert sum(fractions) + zeros == pytest.approx(1.0, abs=1e-4)  # every value binned once


def test_the_figure_shows_the_verdict_and_the_thresholds_on_a_fixed_axis(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The activation panel spans the rule's scale (min_std / 10 .. max_std x 10) with both thresholds
    drawn, so a healthy network's small drift reads small; the title carries each run's verdict."""
    drawn: list = []
    monkeypatch.setattr(plot, "_save", lambda fig, path: drawn.append(fig) or path)
    runs = compare(SMALL, [parse_entry("tiny"), parse_entry("he")])
    plot.runs_figure(runs, tmp_path / "runs.png")
    (fig,) = drawn
    title = fig._suptitle.get_text()
    assert "tiny: UNHEALTHY: vanishing" in title and "he: healthy" in title
    ax_std = fig.axes[0]
    gate = runs[0].report.spec.gate
    low, high = ax_std.get_ylim()
    assert low <= gate.min_std / 10 and high >= gate.max_std * 10
    lines = {line.get_label() for line in ax_std.get_lines()}
    assert {f"min_std {gate.min_std:g}", f"max_std {gate.max_std:g}"} <= lines
    import matplotlib.pyplot as plt

    plt.close(fig)
