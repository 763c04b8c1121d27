"""``probe inspect``: rows, the view (``Doc``) and the JSON/CSV/Markdown layouts. Never prints."""

from __future__ import annotations

from typing import Any

from probe.experiments.inspect_params import Inspection
from probe.render import spark
from probe.render.doc import NAME_BREAKS, Cell, Column, Doc, Line, doc, table
from probe.render.numbers import clean, fmt
from probe.render.report import csv_text, dumps
from probe.render.writers import md_table

INSPECT_FORMAT = "probe.inspect/1"


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
            f"{bad} parameter(s) differ from their init rule (or, for the model's own init, sit far from every "
            "fan-in rule: the expected std shown is He's)"
            if bad
            else "every parameter matches its init rule",
            "bold red" if bad else "bold green",
            "verdict",
        )
    )
    return doc(parts, title="probe inspect")


def inspect_json(ins: Inspection) -> str:
    from probe.render.rows import layer_row

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
