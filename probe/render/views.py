"""Rows and renderables for ``train``, ``sweep``, ``inspect`` and ``advise``. Never prints.

As in ``report.py``: each command's rows come from a plain function (tests check numbers there),
and the table, JSON, CSV and Markdown layouts are built from those rows.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from probe.experiments.inspect_params import Inspection
from probe.experiments.sweep import SweepResult
from probe.experiments.train import TrainResult, TrainSettings
from probe.judge.advice import Advice
from probe.render import spark
from probe.render.report import clean, csv_text, dumps, fmt, md_table
from probe.spec import Spec

TRAIN_FORMAT = "probe.train/1"
SWEEP_FORMAT = "probe.sweep/1"
INSPECT_FORMAT = "probe.inspect/1"


# ---- train -----------------------------------------------------------------------------------


def train_row(r: TrainResult) -> dict[str, Any]:
    return {
        "run": r.label,
        "strategy": r.strategy,
        "activation": r.activation,
        "start_loss": clean(r.start_loss),
        "end_loss": clean(r.end_loss),
        "val_accuracy": clean(r.val_accuracy),
        "flags": list(r.flags),
    }


def _loss_scale(results: Sequence[TrainResult]) -> tuple[float | None, float | None]:
    """One log scale for every loss curve of a table, so a flat curve looks flat."""
    losses = [x for r in results for x in r.losses if math.isfinite(x) and x > 0]
    return (min(losses), max(losses)) if losses else (None, None)


def _train_cells(r: TrainResult, scale: tuple[float | None, float | None] = (None, None)) -> list[str]:
    return [
        r.label,
        f"{r.start_loss:.3f}",
        f"{r.end_loss:.3f}",
        f"{r.val_accuracy:.3f}",
        spark.sparkline(r.losses, log=True, lo=scale[0], hi=scale[1]),
        ", ".join(r.flags) or "ok",
    ]


_TRAIN_COLUMNS = ("run", "start loss", "end loss", "val acc", "loss curve", "flags")


def train_settings_line(s: TrainSettings) -> str:
    return (
        f"two moons: {s.samples} samples, noise {s.noise:g}, {1 - s.val_fraction:.0%} train / "
        f"{s.val_fraction:.0%} validation (stratified); {s.optimizer} lr {s.lr:g}, {s.steps} steps; seed {s.seed}"
    )


def train_network_line(spec: Spec) -> str:
    m = spec.model
    norm = f" +{m.norm}" if m.norm != "none" else ""
    return f"network: {m.kind} {m.input_dim} -> {m.width} x {m.depth} -> {m.output_dim} {m.activation.name}{norm}; bias init {spec.init.bias.name} (torch's own for 'default')"


def train_renderable(results: Sequence[TrainResult], settings: TrainSettings, title: str) -> Any:
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    table = Table(show_edge=False, header_style="bold", pad_edge=False)
    for col in _TRAIN_COLUMNS:
        table.add_column(col, justify="left" if col in ("run", "flags", "loss curve") else "right", no_wrap=True)
    scale = _loss_scale(results)
    for r in results:
        cells = _train_cells(r, scale)
        style = "red" if r.stuck else ("yellow" if r.warning_start else "green")
        table.add_row(Text(cells[0], style=style), *cells[1:-1], Text(cells[-1], style=style))
    return Group(Text(title, style="dim"), Text(train_settings_line(settings), style="dim"), table)


def train_json(results: Sequence[TrainResult], settings: TrainSettings) -> str:
    return dumps(
        {
            "format": TRAIN_FORMAT,
            "settings": {k: getattr(settings, k) for k in settings.__dataclass_fields__},
            "runs": [{**train_row(r), "losses": [clean(x) for x in r.losses]} for r in results],
        }
    )


def train_csv(results: Sequence[TrainResult]) -> str:
    rows = [train_row(r) for r in results]
    return csv_text(rows, list(rows[0]))


def train_markdown(results: Sequence[TrainResult]) -> str:
    scale = _loss_scale(results)
    return md_table(_TRAIN_COLUMNS, [_train_cells(r, scale) for r in results])


# ---- sweep -----------------------------------------------------------------------------------


def sweep_rows(result: SweepResult) -> list[dict[str, Any]]:
    return [
        {
            "run": c.label,
            "depth": c.depth,
            "width": c.width,
            "last_std": clean(c.last_std),
            "grad_ratio": clean(c.grad_ratio),
            "healthy": c.healthy,
            "problems": list(c.problems),
        }
        for c in result.cells
    ]


def first_failing_rows(result: SweepResult) -> list[dict[str, Any]]:
    return [
        {
            "run": label,
            "width": w,
            "first_failing_depth": result.first_failing_depth(label, w),
            "collapse_depth": result.first_depth_of("collapse", label, w),
        }
        for w in result.widths
        for label in result.entries
    ]


def slope_rows(result: SweepResult) -> list[dict[str, Any]]:
    return [
        {
            "run": s.label,
            "depth": s.depth,
            "slopes": [clean(x) for x in s.slopes],
            "worst_slope": clean(s.worst),
            "drifts": s.drifts,
        }
        for s in result.width_slopes()
    ]


_SWEEP_COLUMNS = ("run", "depth", "width", "last std", "grad first/last", "per-layer std", "verdict")


def _sweep_cells(result: SweepResult) -> list[list[str]]:
    out = []
    for c in result.cells:
        out.append(
            [
                c.label,
                str(c.depth),
                str(c.width),
                fmt(c.last_std),
                fmt(c.grad_ratio),
                spark.std_sparkline(c.layer_stds),
                "healthy" if c.healthy else ", ".join(c.problems),
            ]
        )
    return out


def first_failing_lines(result: SweepResult) -> list[str]:
    lines = []
    for row in first_failing_rows(result):
        depth = row["first_failing_depth"]
        where = f" (width {row['width']})" if len(result.widths) > 1 else ""
        swept = f"{min(result.depths)}..{max(result.depths)}"
        if depth is None:
            what = f"healthy at every depth {swept}"
        else:
            what = f"first fails at depth {depth} ({', '.join(result.rules_at(row['run'], depth, row['width']))})"
        collapse = row["collapse_depth"]
        if collapse is not None and collapse != depth:
            what += f"; collapse from depth {collapse}"
        lines.append(f"{row['run']}{where}: {what}")
    return lines


def slope_lines(result: SweepResult) -> list[str]:
    lines = []
    for s in result.width_slopes():
        slopes = " ".join(f"{x:+.2f}" if math.isfinite(x) else "nan" for x in s.slopes)
        mark = "DRIFTS with width" if s.drifts else "width-stable"
        lines.append(f"{s.label} depth {s.depth}: d log std / d log width per layer: {slopes}  -> {mark}")
    return lines


def sweep_renderable(result: SweepResult, title: str) -> Any:
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    table = Table(show_edge=False, header_style="bold", pad_edge=False)
    for col in _SWEEP_COLUMNS:
        left = col in ("run", "verdict", "per-layer std")
        table.add_column(col, justify="left" if left else "right", no_wrap=col != "verdict")
    for c, cells in zip(result.cells, _sweep_cells(result), strict=True):
        style = "green" if c.healthy else "red"
        table.add_row(Text(cells[0], style=style), *cells[1:-1], Text(cells[-1], style=style))
    parts: list[Any] = [Text(title, style="dim"), table]
    if len(result.depths) > 1:
        parts.append(Text("\n".join(first_failing_lines(result)), style="bold"))
    slopes = result.width_slopes()
    if slopes:
        text = Text()
        for s, line in zip(slopes, slope_lines(result), strict=True):
            text.append(line + "\n", style="red" if s.drifts else "green")
        parts.append(text)
    return Group(*parts)


def sweep_json(result: SweepResult) -> str:
    return dumps(
        {
            "format": SWEEP_FORMAT,
            "depths": list(result.depths),
            "widths": list(result.widths),
            "cells": sweep_rows(result),
            "first_failing_depth": first_failing_rows(result),
            "width_slopes": slope_rows(result),
        }
    )


def sweep_csv(result: SweepResult) -> str:
    rows = sweep_rows(result)
    return csv_text(rows, list(rows[0]))


def sweep_markdown(result: SweepResult) -> str:
    out = md_table(_SWEEP_COLUMNS, _sweep_cells(result))
    extra = (first_failing_lines(result) if len(result.depths) > 1 else []) + slope_lines(result)
    if extra:
        out += "\n" + "\n".join(f"- {line}" for line in extra) + "\n"
    return out


# ---- inspect ---------------------------------------------------------------------------------


def param_rows(ins: Inspection) -> list[dict[str, Any]]:
    return [
        {
            "name": p.name,
            "shape": list(p.shape),
            "fan_in": p.fan_in,
            "fan_out": p.fan_out,
            "rule": p.rule,
            "mean": clean(p.mean),
            "std": clean(p.std),
            "expected_std": clean(p.expected_std),
            "mismatch": p.mismatch,
        }
        for p in ins.params
    ]


_PARAM_COLUMNS = ("parameter", "shape", "fan_in", "fan_out", "rule", "mean", "std", "expected std", "")
_ACT_COLUMNS = ("layer", "mean", "std", "std (log scale)")


def _param_cells(ins: Inspection) -> list[list[str]]:
    return [
        [
            p.name,
            "x".join(str(d) for d in p.shape),
            str(p.fan_in) if len(p.shape) > 1 else "-",
            str(p.fan_out) if len(p.shape) > 1 else "-",
            p.rule,
            fmt(p.mean),
            fmt(p.std),
            fmt(p.expected_std),
            "MISMATCH" if p.mismatch else "",
        ]
        for p in ins.params
    ]


def _act_cells(ins: Inspection) -> list[list[str]]:
    return [[x.name, fmt(x.mean), fmt(x.std), spark.std_bar(x.std)] for x in ins.activations]


def inspect_renderable(ins: Inspection, title: str) -> Any:
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    params = Table(show_edge=False, header_style="bold", pad_edge=False, title="parameters", title_justify="left")
    for col in _PARAM_COLUMNS:
        params.add_column(col, justify="left" if col in ("parameter", "rule", "") else "right", no_wrap=True)
    for p, cells in zip(ins.params, _param_cells(ins), strict=True):
        params.add_row(*cells[:-1], Text(cells[-1], style="bold red"), style="red" if p.mismatch else None)
    parts: list[Any] = [Text(title, style="dim"), params]
    if ins.activations:
        acts = Table(
            show_edge=False,
            header_style="bold",
            pad_edge=False,
            title="activations (forward only)",
            title_justify="left",
        )
        for col in _ACT_COLUMNS:
            acts.add_column(col, justify="left" if col in ("layer", "std (log scale)") else "right", no_wrap=True)
        for cells in _act_cells(ins):
            acts.add_row(*cells)
        parts.append(acts)
    bad = len(ins.mismatches)
    parts.append(
        Text(
            f"{bad} parameter(s) differ from their init rule" if bad else "every parameter matches its init rule",
            style="bold red" if bad else "bold green",
        )
    )
    return Group(*parts)


def inspect_json(ins: Inspection) -> str:
    from probe.render.report import layer_row

    return dumps(
        {
            "format": INSPECT_FORMAT,
            "parameters": param_rows(ins),
            "activations": [
                {k: v for k, v in layer_row(x).items() if k in ("name", "index", "kind", "mean", "std", "zero_ratio")}
                for x in ins.activations
            ],
            "mismatches": len(ins.mismatches),
        }
    )


def inspect_csv(ins: Inspection) -> str:
    rows = [{**r, "shape": "x".join(str(d) for d in r["shape"])} for r in param_rows(ins)]
    return csv_text(rows, list(rows[0]))


def inspect_markdown(ins: Inspection) -> str:
    out = md_table((*_PARAM_COLUMNS[:-1], "mismatch"), _param_cells(ins))
    if ins.activations:
        out += "\n" + md_table(_ACT_COLUMNS[:-1], [c[:-1] for c in _act_cells(ins)])
    return out


# ---- advice ----------------------------------------------------------------------------------


def advice_renderable(advice: Advice) -> Any:
    from rich.text import Text

    text = Text()
    for i, line in enumerate(advice.lines()):
        style = "yellow" if line.startswith(("mismatch", "try")) else "green"
        text.append(("\n" if i else "") + line, style=style)
    return text
