"""Pictures as files (png, svg or pdf, from the path's suffix) with matplotlib, an optional extra.

``runs_figure``: activation std and gradient std per layer, log scale, one line per run (for
``run`` and ``compare``), and a heat map per run of its per-layer activation histograms. ``sweep_figure``: last-layer std against depth or per-layer std against
width (log-log). ``train_figure``: loss curves. matplotlib is imported only here, only when a
picture is asked for; without it, ``PlotError`` says how to install it.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from probe.errors import SpecError
from probe.experiments.sweep import SweepResult
from probe.experiments.train import TrainResult
from probe.measurement.histograms import LayerHistograms
from probe.records import Run
from probe.render.output import check_output_path, write_bytes
from probe.render.report import verdict_text

FORMATS = ("png", "svg", "pdf")
INSTALL_HINT = "--plot needs matplotlib: pip install 'probe[plot]' (or pip install matplotlib)"


def check_path(path: Path) -> str:
    """The image format of ``path`` (its suffix); a ``SpecError`` for anything else."""
    suffix = path.suffix.lower().lstrip(".")
    if suffix not in FORMATS:
        raise SpecError(f"cannot tell the image format of '{path}': use a .png, .svg or .pdf file", "--plot")
    check_output_path(path, "--plot")
    return suffix


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise SpecError(INSTALL_HINT) from None
    matplotlib.use("Agg", force=True)  # files only: never open a window
    import matplotlib.pyplot as plt

    return plt


def _positive(values: Sequence[float | None]) -> list[float]:
    return [v if v is not None and math.isfinite(v) and v > 0 else math.nan for v in values]


def _save(fig: Any, path: Path) -> Path:
    plt = _pyplot()
    fmt = check_path(path)
    buffer = io.BytesIO()  # drawn to memory, then written by the one output writer
    try:
        fig.savefig(buffer, format=fmt, bbox_inches="tight", metadata=None if fmt != "png" else {"Software": "probe"})
    finally:
        plt.close(fig)
    return write_bytes(path, buffer.getvalue(), "--plot")


def runs_figure(runs: Sequence[Run], path: Path, hists: Sequence[LayerHistograms] = ()) -> Path:
    """Activation std and gradient std per layer (log scale), one line per run; below them, with
    ``hists``, one heat map per run of the activation magnitudes over layers."""
    check_path(path)
    plt = _pyplot()
    drawable = [h for h in hists if h.layers]
    rows = 1 + (len(drawable) + 1) // 2 if drawable else 1
    fig = plt.figure(figsize=(10, 4 * rows), layout="constrained")
    grid = fig.add_gridspec(rows, 2)
    ax_std, ax_grad = fig.add_subplot(grid[0, 0]), fig.add_subplot(grid[0, 1])
    for i, h in enumerate(drawable):
        _heat_map(fig, fig.add_subplot(grid[1 + i // 2, i % 2]), h)
    missing = [h.label for h in hists if not h.layers]
    title = "; ".join(f"{run.label}: {verdict_text(run.verdict)}" for run in runs)
    if missing:
        title += f"\nno activation histogram for {', '.join(missing)}: no watched layer gave a tensor"
    fig.suptitle(title)
    for run in runs:
        layers = run.report.layers
        xs = list(range(1, len(layers) + 1))  # report rows in order, as the heat map's columns
        ax_std.plot(xs, _positive([x.std for x in layers]), marker="o", label=run.label)
        grads = [x.grad_std for x in layers]
        if any(g is not None for g in grads):
            ax_grad.plot(xs, _positive(grads), marker="o", label=run.label)
    for ax, name in ((ax_std, "activation std"), (ax_grad, "gradient std")):
        ax.set_yscale("log")
        ax.set_xlabel("layer")
        ax.set_title(name)
        ax.grid(True, which="both", alpha=0.3)
    if runs:
        # the rule's thresholds as lines, on an axis that spans them: a healthy 10x drop stays small
        gate = runs[0].report.spec.gate
        for value, key in ((gate.min_std, "min_std"), (gate.max_std, "max_std")):
            if 0 < value < math.inf:
                ax_std.axhline(value, color="#b00020", linestyle="--", linewidth=1, label=f"{key} {value:g}")
        _span(ax_std, [x.std for r in runs for x in r.report.layers], gate.min_std / 10, gate.max_std * 10)
        _span(ax_grad, [x.grad_std for r in runs for x in r.report.layers], None, None, decades=6)
    ax_std.legend(fontsize="small")
    return _save(fig, path)


def _span(ax: Any, values: Sequence[float | None], low: float | None, high: float | None, decades: int = 0) -> None:
    """A fixed log axis: at least ``low``..``high`` (or ``decades`` around the values' geometric
    middle), widened to every finite positive value."""
    seen = [v for v in _positive(values) if not math.isnan(v)]
    if not seen:
        return
    lo, hi = min(seen), max(seen)
    if low is None or high is None or not (0 < low < high < math.inf):
        middle = math.sqrt(lo * hi)
        low, high = middle / 10 ** (decades / 2), middle * 10 ** (decades / 2)
    ax.set_ylim(min(lo, low) / 1.5, max(hi, high) * 1.5)


def _heat_map(fig: Any, ax: Any, h: LayerHistograms) -> None:
    """Layers on x, log10 |activation| on y, color = fraction of the layer's values (log color)."""
    from matplotlib.colors import LogNorm

    grid = [[h.fractions[layer][b] or math.nan for layer in range(len(h.layers))] for b in range(len(h.edges) - 1)]
    xs = [i + 0.5 for i in range(len(h.layers) + 1)]
    image = ax.pcolormesh(xs, list(h.edges), grid, norm=LogNorm(vmin=1e-4, vmax=1.0), cmap="viridis", shading="flat")
    ax.set_xticks(range(1, len(h.layers) + 1))
    ax.set_xticklabels([str(i) for i in range(1, len(h.layers) + 1)])
    ax.set_xlabel("layer")
    ax.set_ylabel("log10 |activation|")
    zeros = max(h.zero_fractions) if h.zero_fractions else 0.0
    ax.set_title(f"{h.label}: activation histogram" + (f" (up to {zeros:.0%} exact zeros)" if zeros else ""))
    fig.colorbar(image, ax=ax, label="fraction of values")


def sweep_figure(result: SweepResult, path: Path) -> Path:
    """Depth sweep: last std and grad ratio against depth; width sweep: per-layer std against width."""
    check_path(path)
    plt = _pyplot()
    if len(result.widths) > 1:
        depth = result.depths[0]
        fig, ax = plt.subplots(figsize=(6, 4))
        for label in result.entries:
            cells = result.across_widths(label, depth)
            ax.plot([c.width for c in cells], _positive([c.last_std for c in cells]), marker="o", label=label)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("width")
        ax.set_ylabel(f"last-layer std (depth {depth})")
        ax.set_title("width sweep (coordinate check)")
    else:
        fig, (ax, ax_grad) = plt.subplots(1, 2, figsize=(10, 4))
        width = result.widths[0]
        for label in result.entries:
            cells = sorted((c for c in result.cells if c.label == label and c.width == width), key=lambda c: c.depth)
            depths = [c.depth for c in cells]
            ax.plot(depths, _positive([c.last_std for c in cells]), marker="o", label=label)
            ax_grad.plot(depths, _positive([c.grad_ratio for c in cells]), marker="o", label=label)
        ax.set_ylabel("last-layer std")
        ax_grad.set_ylabel("grad std first / last")
        for a in (ax, ax_grad):
            a.set_xlabel("depth")
            a.set_yscale("log")
            a.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize="small")
    return _save(fig, path)


def train_figure(results: Sequence[TrainResult], path: Path) -> Path:
    """Training loss per step, one line per strategy (log scale)."""
    check_path(path)
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for r in results:
        ax.plot(range(len(r.losses)), _positive(r.losses), label=r.label)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.set_title("loss curves")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize="small")
    return _save(fig, path)


def svg_text(draw: Any, *args: Any) -> str | None:
    """The figure ``draw(*args, path)`` would write, as inline SVG text; ``None`` without matplotlib."""
    import tempfile

    try:
        _pyplot()
    except SpecError:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "figure.svg"
        draw(*args, out)
        text = out.read_text(encoding="utf-8")
    start = text.find("<svg")
    return text[start:] if start >= 0 else text
