"""The views of ``run``, ``compare`` and ``check`` as ``Doc``s (render/writers.py lays them out
in every format): the rows of rows.py and report.py with their styles, pictures and verdict lines. Never prints.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from probe.records import Run, Stats, Verdict
from probe.render import spark
from probe.render.doc import LIST_BREAKS, NAME_BREAKS, Cell, Column, Doc, Line, Table, doc, table
from probe.render.numbers import clean
from probe.render.report import (
    EXTREME_ROWS,
    SUMMARY_ROWS,
    _attention_cells,
    _compare_cells,
    _layer_cells,
    check_lines,
    summary_layers,
    verdict_text,
)
from probe.render.rows import compare_row
from probe.spec import gate_changes, summary

# ---- the terminal view (a Doc; render/writers.py lays it out) ---------------------------------

_STYLE = {"fail": "bold red", "warn": "yellow", "ok": "green"}

# (header, short header for narrow terminals, field the rules flag)
_RUN_VIEW = (
    ("mean", "", "mean"),
    ("std", "", "std"),
    ("zero", "", "zero_ratio"),
    ("dead", "", "dead_units"),
    ("sat", "", "saturation_ratio"),
    ("nonfinite", "nf", "nonfinite"),
    ("cos", "", "correlation"),
    ("grad std", "", "grad_std"),
    ("W grad norm", "|gW|", None),
)


# a row's role as its table cell shows it (6 characters at most: tables fit 80 columns); JSON has the word
_ROLE_CELL = {"activation": "act", "embedding": "embed"}


def run_doc(report: Stats, verdict: Verdict, max_rows: int | None = SUMMARY_ROWS) -> Doc:
    """Spec line, per-layer table (flagged cells colored, log-scale bars) and verdict. Reports
    with more than ``max_rows`` rows are summarized (``summary_layers``); ``None`` shows all."""
    flags = verdict.cell_flags()
    shown = list(report.layers) if max_rows is None else summary_layers(report, verdict, max_rows)
    typed = any(x.module_type for x in report.layers)
    columns = [Column("layer", "name", align="left", wrap=NAME_BREAKS)]
    if typed:
        # with the row's role (what the rules judge it as, docs/verdicts.md): wraps after '/' when narrow
        columns.append(Column("type/role", "module_type", align="left", wrap=NAME_BREAKS))
    columns += [Column(h, f or "weight_grad_norm", short=short) for h, short, f in _RUN_VIEW]
    # bars on spark's fixed log scale, so vanishing shows without reading numbers
    columns += [Column("std (log)", align="left", picture=True), Column("grad (log)", align="left", picture=True)]
    rows = []
    for x in shown:
        layer_flags = flags.get(x.name, {})
        row_level = "fail" if "fail" in layer_flags.values() else ("warn" if layer_flags else "ok")
        texts = _layer_cells(x)
        cells = [Cell(texts[0], _STYLE[row_level], x.name)]
        if typed:
            cells.append(Cell(f"{x.module_type or ''}/{_ROLE_CELL.get(x.role, x.role)}", "dim", x.module_type))
        for text, (_, _, f) in zip(texts[1:], _RUN_VIEW, strict=True):
            level = layer_flags.get(f) if f else None
            cells.append(Cell(text, _STYLE[level] if level else None, clean(getattr(x, f or "weight_grad_norm"))))
        for value, f in ((x.std, "std"), (x.grad_std, "grad_std")):
            level = layer_flags.get(f)
            cells.append(Cell(spark.std_bar(value, 10), _STYLE[level] if level else "cyan"))
        rows.append(cells)
    ranks = f"; {report.world_size} ranks" if report.world_size > 1 else ""
    parts: list[Any] = [Line(summary(report.spec) + ranks, "dim", "spec"), table(columns, rows, key="layers")]
    if len(shown) < len(report.layers):
        parts.append(
            Line(
                f"showing {len(shown)} of {len(report.layers)} layers: the first and last, flagged layers and "
                f"the {EXTREME_ROWS} most extreme stds (--all-layers or --format json for every row)",
                "dim",
            )
        )
    if report.attention:
        parts.append(_attention_table(report, verdict))
    if report.steps is not None:
        from probe.render.steps_view import signals_line, steps_line, steps_table

        stalled = {p.layer for p in (*verdict.problems, *verdict.warnings) if p.rule == "stalled"}
        parts += [steps_table(report.steps, shown, stalled), steps_line(report.steps), signals_line(report.steps)]
    if report.headroom is not None:
        from probe.render.headroom_view import flagged_rows, headroom_line, headroom_table

        flagged = flagged_rows(report, verdict)
        parts += [headroom_table(report.headroom, shown, flagged, report.steps), headroom_line(report.headroom)]
    parts += [Line(f"note: {note}", "yellow") for note in report.notes]
    parts += gate_line(report) + verdict_lines(verdict)
    return doc(parts, title=f"probe run: {report.spec.name}")


def _attention_table(report: Stats, verdict: Verdict) -> Table:
    """Per attention module: logit spread and normalized entropy (red where the rule breaks)."""
    saturated = {p.layer for p in verdict.problems if p.rule == "attention_saturation"}
    threshold = report.spec.gate.min_attention_entropy
    columns = [
        Column("attention", "name", align="left", wrap=NAME_BREAKS),
        Column("calls"),
        Column("logit std", "logit_std"),
        Column("entropy"),
        Column("routing"),
    ]
    rows = []
    for a in report.attention:
        style = "bold red" if a.entropy < threshold else ("yellow" if a.name in saturated else None)
        values = (a.name, a.calls, clean(a.logit_std), clean(a.entropy), clean(a.routing))
        rows.append([Cell(t, style, v) for t, v in zip(_attention_cells(a), values, strict=True)])
    return table(columns, rows, key="attention")


def gate_line(report: Stats) -> list[Line]:
    """``gate changed: ...`` (JSON key ``gate``) when the run was judged under a gate that is not the
    default one: a gate a spec loosened or switched off is never silent."""
    changes = gate_changes(report.spec.gate, backward=report.spec.run.backward)
    return [Line("gate changed: " + "; ".join(changes), "yellow", "gate")] if changes else []


def verdict_lines(verdict: Verdict) -> list[Line]:
    """The verdict line (JSON key ``verdict``) and one line per problem or near miss."""
    head = Line("verdict: " + verdict_text(verdict), "bold green" if verdict.healthy else "bold red", "verdict")
    return (
        [head]
        + [Line(f"  {p.severity} {p.rule}: {p.message}", "red") for p in verdict.problems]
        + [
            Line(f"  {'near' if 'is near the' in w.message else 'warning'} {w.rule}: {w.message}", "yellow")
            for w in verdict.warnings
        ]
        + [Line(f"  note: {n.message}", "dim") for n in verdict.notes]
    )


_COMPARE_VIEW = (  # (header, short header, compare_row key)
    ("first std", "std1", "first_std"),
    ("last std", "stdL", "last_std"),
    ("last/1st", "", "std_ratio"),
    ("last 0s", "0s", "last_zero_ratio"),
    ("dead", "", "dead_units"),
    ("sat", "", "saturation_ratio"),
    ("grad 1st/last", "g1/L", "grad_ratio"),
)


def compare_doc(runs: Sequence[Run], title: str) -> Doc:
    """One row per run: the first/last std, their ratio, zeros, dead units, saturation, the
    gradient ratio, the per-layer std as a sparkline and the verdict."""
    columns = [Column("run", align="left", wrap=NAME_BREAKS)]
    columns += [Column(h, key, short=short) for h, short, key in _COMPARE_VIEW]
    columns += [Column("std/layer", align="left", picture=True), Column("verdict", align="left", wrap=LIST_BREAKS)]
    rows = []
    for r in runs:
        texts, row = _compare_cells(r), compare_row(r)
        style = "green" if r.verdict.healthy else "red"
        line = spark.std_sparkline([x.std for x in r.report.layers])
        values = [row[key] for _, _, key in _COMPARE_VIEW]
        rows.append(
            [
                Cell(texts[0], style),
                *(Cell(t, None, v) for t, v in zip(texts[1:-1], values, strict=True)),
                Cell(line, "cyan"),
                Cell(texts[-1], style),
            ]
        )
    return doc(Line(title, "dim", "spec"), table(columns, rows, key="runs"), title="probe compare")


def check_doc(runs: Sequence[Run], failed: Sequence[tuple[str, str]] = ()) -> Doc:
    """``probe check``: one red line per problem, then the summary line (JSON key ``verdict``);
    ``failed``: (spec, why) for each spec that could not be probed (counted in the summary)."""
    lines = check_lines(runs, len(failed))
    healthy = all(r.verdict.healthy for r in runs) and not failed
    return doc(
        [Line(line, "yellow" if ": gate changed: " in line else "red") for line in lines[:-1]],
        Line(lines[-1], "bold green" if healthy else "bold red", "verdict"),
        title="probe check",
    )
