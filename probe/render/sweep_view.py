"""``probe sweep``: rows, the view (``Doc``) and the JSON/CSV/Markdown layouts. Never prints."""

from __future__ import annotations

import math
from typing import Any

from probe.experiments.coord_check import MAX_CHANGE_SLOPE, CoordCheck, coord_checks
from probe.experiments.sweep import SweepResult
from probe.render import spark
from probe.render.doc import LIST_BREAKS, NAME_BREAKS, Cell, Column, Doc, Line, doc, table
from probe.render.numbers import clean, fmt
from probe.render.report import csv_text, dumps
from probe.render.writers import md_table

SWEEP_FORMAT = "probe.sweep/1"


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


def coord_rows(result: SweepResult) -> list[dict[str, Any]]:
    """The coordinate check (``--steps``): per entry and depth, each module's ``slope`` of its
    output change against width and the changes it was read from (docs/json.md)."""
    return [
        {
            "run": c.label,
            "depth": c.depth,
            "widths": list(c.widths),
            "modules": [
                {"name": m.name, "slope": clean(m.slope), "changes": [clean(x) for x in m.changes], "passes": m.passes}
                for m in c.modules
            ],
            "passes": c.passes,
        }
        for c in coord_checks(result)
    ]


def coord_lines(result: SweepResult) -> list[str]:
    return [_coord_line(c) for c in coord_checks(result)]


def _coord_line(c: CoordCheck) -> str:
    slopes = ", ".join(f"{m.name} {m.slope:+.2f}" if math.isfinite(m.slope) else f"{m.name} nan" for m in c.modules)
    if c.passes:
        mark = f"passes (every |slope| <= {MAX_CHANGE_SLOPE:g})"
    else:
        worst = c.worst
        mark = f"FAILS (|slope| > {MAX_CHANGE_SLOPE:g}: {worst.name if worst else '?'})"
    return f"coordinate check {c.label} depth {c.depth}: d log |dy| / d log width: {slopes} -> {mark}"


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
    parts += [Line(_coord_line(c), "green" if c.passes else "bold red") for c in coord_checks(result)]
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
            **({"coord_check": coord_rows(result)} if coord_checks(result) else {}),
        }
    )


def sweep_csv(result: SweepResult) -> str:
    rows = sweep_rows(result)
    return csv_text(rows, list(rows[0]))


def sweep_markdown(result: SweepResult) -> str:
    out = md_table(_SWEEP_COLUMNS, _sweep_cells(result))
    extra = (first_failing_lines(result) if len(result.depths) > 1 else []) + slope_lines(result) + coord_lines(result)
    if extra:
        out += "\n" + "\n".join(f"- {line}" for line in extra) + "\n"
    return out
