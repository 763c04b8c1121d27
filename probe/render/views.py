"""Rows and views (``Doc``s) for ``train``, ``sweep``, ``inspect``, ``advise`` and ``rules``. Never prints.

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
from probe.render.doc import LIST_BREAKS, NAME_BREAKS, Cell, Column, Doc, Line, doc, table
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


def train_doc(results: Sequence[TrainResult], settings: TrainSettings, title: str) -> Doc:
    columns = [
        Column("run", align="left", wrap=NAME_BREAKS),
        Column("start loss", "start_loss"),
        Column("end loss", "end_loss"),
        Column("val acc", "val_accuracy"),
        Column("loss curve", align="left", picture=True),
        Column("flags", align="left", wrap=LIST_BREAKS),
    ]
    scale = _loss_scale(results)
    rows = []
    for r in results:
        cells = _train_cells(r, scale)
        style = "red" if r.stuck else ("yellow" if r.warning_start else "green")
        values = (clean(r.start_loss), clean(r.end_loss), clean(r.val_accuracy))
        rows.append(
            [
                Cell(cells[0], style),
                *(Cell(t, None, v) for t, v in zip(cells[1:4], values, strict=True)),
                Cell(cells[4], "cyan"),
                Cell(cells[-1], style, list(r.flags)),
            ]
        )
    return doc(
        Line(title, "dim", "network"),
        Line(train_settings_line(settings), "dim", "settings"),
        table(columns, rows, key="runs"),
        title="probe train",
    )


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


def sweep_doc(result: SweepResult, title: str) -> Doc:
    columns = [
        Column("run", align="left", wrap=NAME_BREAKS),
        Column("depth"),
        Column("width"),
        Column("last std", "last_std"),
        Column("grad first/last", "grad_ratio", short="g1/L"),
        Column("per-layer std", align="left", picture=True),
        Column("verdict", align="left", wrap=LIST_BREAKS),
    ]
    rows = []
    for c, cells in zip(result.cells, _sweep_cells(result), strict=True):
        style = "green" if c.healthy else "red"
        values = (c.depth, c.width, clean(c.last_std), clean(c.grad_ratio))
        rows.append(
            [
                Cell(cells[0], style),
                *(Cell(t, None, v) for t, v in zip(cells[1:5], values, strict=True)),
                Cell(cells[5], "cyan"),
                Cell(cells[-1], style),
            ]
        )
    parts: list[Any] = [Line(title, "dim", "spec"), table(columns, rows, key="cells")]
    if len(result.depths) > 1:
        parts += [Line(line, "bold") for line in first_failing_lines(result)]
    for s, line in zip(result.width_slopes(), slope_lines(result), strict=True):
        parts.append(Line(line, "red" if s.drifts else "green"))
    return doc(parts, title="probe sweep")


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


def inspect_doc(ins: Inspection, title: str) -> Doc:
    params = [
        Column("parameter", "name", align="left", wrap=NAME_BREAKS),
        Column("shape"),
        Column("fan_in"),
        Column("fan_out"),
        Column("rule", align="left", wrap=" "),
        Column("mean"),
        Column("std"),
        Column("expected std", "expected_std", short="exp std"),
        Column("", "mismatch", align="left"),
    ]
    rows = []
    for p, cells in zip(ins.params, _param_cells(ins), strict=True):
        style = "red" if p.mismatch else None
        values = (
            p.name,
            list(p.shape),
            p.fan_in,
            p.fan_out,
            p.rule,
            clean(p.mean),
            clean(p.std),
            clean(p.expected_std),
        )
        rows.append(
            [
                *(Cell(t, style, v) for t, v in zip(cells[:-1], values, strict=True)),
                Cell(cells[-1], "bold red", p.mismatch),
            ]
        )
    parts: list[Any] = [Line(title, "dim", "spec"), table(params, rows, "parameters", key="parameters")]
    if ins.activations:
        acts = [
            Column("layer", "name", align="left", wrap=NAME_BREAKS),
            Column("mean"),
            Column("std"),
            Column("std (log scale)", align="left", picture=True),
        ]
        act_rows = [
            [Cell(c[0]), Cell(c[1], None, clean(x.mean)), Cell(c[2], None, clean(x.std)), Cell(c[3], "cyan")]
            for x, c in zip(ins.activations, _act_cells(ins), strict=True)
        ]
        parts.append(table(acts, act_rows, "activations (forward only)", key="activations"))
    bad = len(ins.mismatches)
    parts.append(
        Line(
            f"{bad} parameter(s) differ from their init rule" if bad else "every parameter matches its init rule",
            "bold red" if bad else "bold green",
            "verdict",
        )
    )
    return doc(parts, title="probe inspect")


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


def advice_doc(advice: Advice) -> Doc:
    """The advice lines: a mismatch or a fix to try in yellow, the rest in green."""
    return doc(
        [Line(line, "yellow" if line.startswith(("mismatch", "try")) else "green") for line in advice.lines()],
        title="probe advise",
    )


ADVICE_FORMAT = "probe.advice/1"


def advise_doc(advice: Advice) -> Doc:
    """``probe advise``: one row per piece of advice (mismatch, try, ok) and its text."""
    columns = [Column("advice", "kind", align="left"), Column("", "text", align="left", wrap=" ")]
    rows = []
    for line in advice.lines():
        kind, _, text = line.partition(": ")
        style = "yellow" if kind in ("mismatch", "try") else "green"
        rows.append([Cell(kind, style), Cell(text, style)])
    return doc(table(columns, rows, key="advice"), title=f"probe advise: {advice.spec_name}")


def advise_json(advice: Advice) -> str:
    return dumps({"format": ADVICE_FORMAT, "spec": advice.spec_name, **advice.to_dict(), "lines": advice.lines()})


# ---- rules -----------------------------------------------------------------------------------


def rules_doc() -> Doc:
    """The health rules, their gate keys, defaults and meaning."""
    from probe.judge.rules import RULES
    from probe.spec import GATE_PARAMS

    columns = [
        Column("rule", align="left", wrap=" "),
        Column("gate key", "gate_key", align="left"),
        Column("default"),
        Column("meaning", align="left", wrap=" "),
    ]
    rows = []
    for rule in RULES.values():
        for key in rule.thresholds:
            p = GATE_PARAMS[key]
            rows.append(
                [Cell(rule.name), Cell(key), Cell(f"{p.default:g}", None, p.default), Cell(p.help.split(": ", 1)[-1])]
            )
    return doc(table(columns, rows, key="rules"), title="probe rules")
