"""``--tensorboard DIR``: results as TensorBoard event files, through ``torch.utils.tensorboard``.

One sub-folder per run (its label made safe as a folder name), so TensorBoard overlays the runs of
a ``compare`` or ``sweep``. Per-layer statistics are scalars whose step is the layer's position
(``layers/std`` plotted against depth, as the table reads); ``run``/``compare`` add each layer's
activation histogram of log10 |value| (the ``--plot`` heat map's bins), step = layer position;
``train`` writes the loss curve against the training step. Needs ``pip install 'probe[tensorboard]'``.
"""

from __future__ import annotations

import functools
import hashlib
import math
import os
import re
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from probe.errors import SpecError
from probe.experiments.sweep import SweepResult
from probe.experiments.train import TrainResult
from probe.measurement.histograms import LayerHistograms
from probe.records import Run
from probe.render.output import OutputError

INSTALL_HINT = "--tensorboard needs tensorboard: pip install 'probe[tensorboard]' (or pip install tensorboard)"

NAME_MAX = 100  # characters of a run's folder name

F = TypeVar("F", bound=Callable[..., Any])


def _output_errors(fn: F) -> F:
    """A folder that cannot be written after the run is an ``OutputError`` naming it (exit 3), not
    an unexpected error; the command's other outputs are written first."""

    @functools.wraps(fn)
    def wrapped(directory: Path, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(directory, *args, **kwargs)
        except OSError as exc:
            raise OutputError(f"--tensorboard: cannot write {directory}: {exc.strerror or exc}") from None

    return wrapped  # type: ignore[return-value]


# per-layer fields written as scalars (tag layers/<field>)
LAYER_SCALARS = (
    "mean",
    "std",
    "zero_ratio",
    "dead_units",
    "saturation_ratio",
    "nonfinite",
    "unit_spread",
    "correlation",  # the table's cos (collapse)
    "token_correlation",
    "grad_std",
    "grad_scale",
    "weight_grad_norm",
    "weight_grad_std",
    "weight_scale",
    "branch_ratio",
)


def writer_class() -> Any:
    """``SummaryWriter``; a ``SpecError`` saying how to install tensorboard when it is missing."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise SpecError(INSTALL_HINT) from None
    return SummaryWriter


def check_dir(path: Path, labels: Iterable[str] = ()) -> None:
    """Fail on an unusable DIR before any work is done (it is created when missing): a file in its
    place, a folder probe may not write (or create), or, for the runs ``labels`` will write, a file
    where a run's folder goes."""
    path = path.expanduser()
    if path.exists() and not path.is_dir():
        raise SpecError(f"{path} is a file, not a folder", "--tensorboard")
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not os.access(existing, os.W_OK | os.X_OK):
        raise SpecError(f"folder {existing} is not writable", "--tensorboard")
    for name in folder_names(labels):
        if (path / name).exists() and not (path / name).is_dir():
            raise SpecError(f"{path / name} is a file where the run's folder goes", "--tensorboard")
    writer_class()


def folder_names(labels: Iterable[str]) -> list[str]:
    """Labels as distinct folder names: characters other than letters, digits, '.', '_', '-'
    become '_' ("xavier:tanh" -> "xavier_tanh"); repeats get a suffix."""
    out: list[str] = []
    for label in labels:
        base = re.sub(r"[^A-Za-z0-9._-]", "_", label).strip(".") or "run"
        if len(base) > NAME_MAX:  # a folder name has at most 255 bytes: keep it short, and distinct
            digest = hashlib.sha1(label.encode("utf-8", "replace")).hexdigest()[:8]
            base = f"{base[: NAME_MAX - 9]}_{digest}"
        name, n = base, 2
        while name in out:
            name, n = f"{base}_{n}", n + 1
        out.append(name)
    return out


def _number(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None if value is None else float(value)
    value = float(value)
    return value if math.isfinite(value) else None


@_output_errors
def write_runs(directory: Path, runs: Sequence[Run], hists: Sequence[LayerHistograms] = ()) -> list[Path]:
    """Each run's per-layer scalars (and histograms, matched by label) in ``directory/<label>``."""
    writer_cls = writer_class()
    by_label = {h.label: h for h in hists}
    folders = []
    for run, name in zip(runs, folder_names(r.label for r in runs), strict=True):
        folder = directory.expanduser() / name
        writer = writer_cls(log_dir=str(folder))
        try:
            layers = run.report.layers
            for layer in layers:
                for field in LAYER_SCALARS:
                    value = _number(getattr(layer, field))
                    if value is not None:
                        writer.add_scalar(f"layers/{field}", value, global_step=layer.index)
            for tag, value in (
                ("summary/std_ratio", run.report.std_ratio()),
                ("summary/grad_ratio", run.report.grad_ratio()),
                ("summary/healthy", 1.0 if run.verdict.healthy else 0.0),
            ):
                number = _number(value)
                if number is not None:
                    writer.add_scalar(tag, number, global_step=0)
            rows = "\n".join(f"| {x.index} | {x.name} | {x.module_type or ''} |" for x in layers)
            writer.add_text("layers", "| step | layer | type |\n|---|---|---|\n" + rows, global_step=0)
            problems = "\n".join(f"- {p.rule} at {p.layer}: {p.message}" for p in run.verdict.problems)
            writer.add_text("verdict", "healthy" if run.verdict.healthy else problems, global_step=0)
            hist = by_label.get(run.label)
            if hist is not None:
                _histograms(writer, hist, {x.name: x for x in layers}, run.report.spec.data.batches)
        finally:
            writer.close()
        folders.append(folder)
    return folders


def _histograms(writer: Any, hist: LayerHistograms, layers: dict[str, Any], batches: int) -> None:
    """``activations/log10_abs``: one histogram per layer, step = its position; exact zeros have
    no logarithm and are left out (``layers/zero_ratio`` counts them)."""
    centers = [(a + b) / 2 for a, b in zip(hist.edges[:-1], hist.edges[1:], strict=True)]
    for name, fractions in zip(hist.layers, hist.fractions, strict=True):
        layer = layers.get(name)
        if layer is None:
            continue
        per_batch = layer.count / batches  # the histogram pass sees the first batch
        counts = [f * per_batch for f in fractions]
        num = sum(counts)
        if num <= 0:
            continue
        used = [i for i, c in enumerate(counts) if c > 0]
        writer.add_histogram_raw(
            "activations/log10_abs",
            min=hist.edges[used[0]],
            max=hist.edges[used[-1] + 1],
            num=num,
            sum=sum(c * x for c, x in zip(counts, centers, strict=True)),
            sum_squares=sum(c * x * x for c, x in zip(counts, centers, strict=True)),
            bucket_limits=list(hist.edges[1:]),
            bucket_counts=counts,
            global_step=layer.index,
        )


@_output_errors
def write_sweep(directory: Path, result: SweepResult) -> list[Path]:
    """Per entry: ``sweep/last_std`` and ``sweep/grad_ratio`` against depth (a depth sweep; one
    curve per width in a grid, ``sweep/last_std/width<W>``) or width; per cell (``<entry>/depth<D>_width<W>``): ``layers/std`` and ``layers/grad_std``."""
    writer_cls = writer_class()
    by_depth = len(result.depths) > 1 or len(result.widths) <= 1
    labels = list(dict.fromkeys(c.label for c in result.cells))
    folders = []
    for label, name in zip(labels, folder_names(labels), strict=True):
        folder = directory.expanduser() / name
        writer = writer_cls(log_dir=str(folder))
        try:
            for cell in (c for c in result.cells if c.label == label):
                step = cell.depth if by_depth else cell.width
                # a grid of depths and widths: one curve against depth per width
                suffix = f"/width{cell.width}" if by_depth and len(result.widths) > 1 else ""
                for tag, value in (("sweep/last_std", cell.last_std), ("sweep/grad_ratio", cell.grad_ratio)):
                    number = _number(value)
                    if number is not None:
                        writer.add_scalar(tag + suffix, number, global_step=step)
        finally:
            writer.close()
        folders.append(folder)
        for cell in (c for c in result.cells if c.label == label):
            cell_writer = writer_cls(log_dir=str(folder / f"depth{cell.depth}_width{cell.width}"))
            try:
                for i, (std, grad) in enumerate(zip(cell.layer_stds, cell.layer_grad_stds, strict=True), start=1):
                    for tag, value in (("layers/std", std), ("layers/grad_std", grad)):
                        number = _number(value)
                        if number is not None:
                            cell_writer.add_scalar(tag, number, global_step=i)
            finally:
                cell_writer.close()
    return folders


@_output_errors
def write_training(directory: Path, results: Sequence[TrainResult]) -> list[Path]:
    """Per strategy: ``train/loss`` against the step and ``train/val_accuracy`` at the last step."""
    writer_cls = writer_class()
    folders = []
    for result, name in zip(results, folder_names(r.label for r in results), strict=True):
        folder = directory.expanduser() / name
        writer = writer_cls(log_dir=str(folder))
        try:
            for step, loss in enumerate(result.losses):
                number = _number(loss)
                if number is not None:
                    writer.add_scalar("train/loss", number, global_step=step)
            writer.add_scalar("train/val_accuracy", result.val_accuracy, global_step=len(result.losses) - 1)
        finally:
            writer.close()
        folders.append(folder)
    return folders
