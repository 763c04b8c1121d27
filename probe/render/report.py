"""Stats/Verdict -> text: JSON, CSV, Markdown, JUnit (the terminal view: run_view.py). Never prints.

Rows are computed by plain functions (``probe.render.rows``: ``layer_row``, ``compare_row``) so
that tests check numbers without parsing output; the renderers only lay those rows out.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence
from typing import Any

from probe.records import AttentionStats, LayerStats, Run, Stats, Verdict
from probe.render.doc import printable
from probe.render.numbers import clean, fmt, fmt_cosine, fmt_fraction
from probe.render.rows import (
    EXTRA_FIELDS,
    LAYER_FIELDS,
    attention_row,
    compare_row,
    layer_row,
    problem_dict,
    steps_dict,
)
from probe.render.writers import md_table
from probe.spec import gate_changes, summary, to_dict

FORMAT = "probe.report/1"
FORMATS = ("table", "json", "csv", "markdown")

SUMMARY_ROWS = 40  # the table summarizes reports with more rows than this
EXTREME_ROWS = 5  # ... showing the first and last rows, every flagged row and this many extremes


def select_layers(report: Stats, pattern: str) -> Stats:
    """The report with only the rows whose name matches ``pattern`` (fnmatch; a plain word
    matches as a substring). The verdict should be evaluated before selecting."""
    import fnmatch
    from dataclasses import replace

    from probe.errors import SpecError

    glob = pattern if any(c in pattern for c in "*?[") else f"*{pattern}*"
    kept = tuple(x for x in report.layers if fnmatch.fnmatchcase(x.name, glob))
    if not kept:
        names = [x.name for x in report.layers]
        shown = ", ".join(names[:10]) + (f", ... ({len(names)} in all)" if len(names) > 10 else "")
        raise SpecError(f"--layers '{pattern}' matches no layer (layers: {shown})")
    return replace(report, layers=kept)


def summary_layers(report: Stats, verdict: Verdict, limit: int = SUMMARY_ROWS) -> list[LayerStats]:
    """The rows a summarized table shows: all of them up to ``limit``; beyond, the first and last,
    the first offender of each broken rule, the ``EXTREME_ROWS`` rows whose std is farthest (in
    log scale) from the first row's, then other flagged rows in order while fewer than ``limit``."""
    layers = list(report.layers)
    if len(layers) <= limit:
        return layers
    flags = verdict.cell_flags()
    keep = {0, len(layers) - 1}
    index = {x.name: i for i, x in enumerate(layers)}
    keep.update(index[p.layer] for p in verdict.problems if p.layer in index)
    ref = layers[0].std if layers[0].std and math.isfinite(layers[0].std) else 1.0

    def distance(i: int) -> float:
        std = layers[i].std
        if std is None or not math.isfinite(std) or std <= 0:
            return math.inf
        return abs(math.log10(std / ref))

    keep.update(sorted(range(len(layers)), key=distance, reverse=True)[:EXTREME_ROWS])
    for i, x in enumerate(layers):
        if len(keep) >= limit:
            break
        if x.name in flags:
            keep.add(i)
    return [layers[i] for i in sorted(keep)]


def report_dict(report: Stats, verdict: Verdict) -> dict[str, Any]:
    """The machine-readable report (``probe.report/1``)."""
    return {
        "format": FORMAT,
        "spec": to_dict(report.spec),
        "environment": {
            "device": report.device,
            "dtype": report.dtype,
            "torch": report.torch_version,
            "elapsed_s": round(report.elapsed_s, 4),
            "world_size": report.world_size,
        },
        "summary": {
            "first_std": clean(report.first.std),
            "last_std": clean(report.last.std),
            "std_ratio": clean(report.std_ratio()),
            "grad_ratio": clean(report.grad_ratio()),
        },
        "layers": [layer_row(layer) for layer in report.layers],
        "verdict": {
            "healthy": verdict.healthy,
            "problems": [problem_dict(p) for p in verdict.problems],
            "warnings": [problem_dict(p) for p in verdict.warnings],
            "notes": [problem_dict(p) for p in verdict.notes],
        },
        **({"notes": list(report.notes)} if report.notes else {}),
        **({"attention": [attention_row(a) for a in report.attention]} if report.attention else {}),
        **({"steps": steps_dict(report.steps)} if report.steps is not None else {}),
        **({"precision": _headroom_dict(report)} if report.headroom is not None else {}),
    }


def _headroom_dict(report: Stats) -> dict[str, Any]:
    from probe.render.headroom_data import headroom_dict

    return headroom_dict(report.headroom, report.steps) if report.headroom is not None else {}


_ATTENTION_COLUMNS = ("attention", "calls", "logit std", "entropy", "routing")


def _attention_cells(a: AttentionStats) -> list[str]:
    return [
        a.name,
        str(a.calls),
        fmt(a.logit_std),
        fmt_fraction(a.entropy),
        fmt_fraction(a.routing),
    ]


def verdict_text(verdict: Verdict) -> str:
    if verdict.healthy:
        return "healthy"
    return "UNHEALTHY: " + ", ".join(dict.fromkeys(p.rule for p in verdict.problems))


# ---- JSON / CSV / Markdown -------------------------------------------------------------------


def dumps(obj: Any) -> str:
    """JSON text; a non-finite number (nan, inf: e.g. ``max_std: inf``) is written as ``null``."""
    return json.dumps(_finite(obj), indent=2, allow_nan=False) + "\n"


def _finite(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def run_json(report: Stats, verdict: Verdict) -> str:
    return dumps(report_dict(report, verdict))


def runs_json(runs: Sequence[Run]) -> str:
    return dumps(
        {
            "format": FORMAT,
            "healthy": all(r.verdict.healthy for r in runs),
            "runs": [
                {
                    "label": r.label,
                    "strategy": r.strategy,
                    "activation": r.activation,
                    **report_dict(r.report, r.verdict),
                }
                for r in runs
            ],
        }
    )


def csv_text(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """Rows as CSV with a header; lists are joined with ';', None is empty, and control characters
    in text are escaped (a CSV is read on terminals too)."""

    def value(v: Any) -> Any:
        if isinstance(v, list):
            v = ";".join(str(x) for x in v)
        if isinstance(v, str):
            return printable(v)
        return "" if v is None else v

    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: value(v) for k, v in row.items()})
    return out.getvalue()


def layers_csv(runs: Sequence[Run]) -> str:
    """One row per layer per run; the first column names the run."""
    from probe.render.headroom_data import headroom_fields

    rows = [
        {"run": r.label, **layer_row(x), **headroom_fields(r.report.headroom, x.name)}
        for r in runs
        for x in r.report.layers
    ]
    extra = [c for c in EXTRA_FIELDS if any(c in row for row in rows)]
    precision = list(dict.fromkeys(k for row in rows for k in row if k.endswith(("_amax_ratio", "_underflow"))))
    columns = ("run", *LAYER_FIELDS, *extra, *precision)
    return csv_text([{**dict.fromkeys(extra + precision), **row} for row in rows], columns)


def compare_csv(runs: Sequence[Run]) -> str:
    rows = [compare_row(r) for r in runs]
    return csv_text(rows, list(rows[0]))


_RUN_COLUMNS = ("layer", "mean", "std", "zero", "dead", "sat", "nonfinite", "cos", "grad std", "W grad norm")


def _layer_cells(x: LayerStats) -> list[str]:
    return [
        x.name,
        fmt(x.mean),
        fmt(x.std),
        fmt_fraction(x.zero_ratio),
        fmt_fraction(x.dead_units),
        fmt_fraction(x.saturation_ratio),
        str(x.nonfinite),
        fmt_cosine(x.correlation),
        fmt(x.grad_std),
        fmt(x.weight_grad_norm),
    ]


def _problem_lines(verdict: Verdict) -> list[str]:
    return [f"- `{p.rule}` at {p.layer}: {p.message}" for p in verdict.problems]


def run_markdown(report: Stats, verdict: Verdict) -> str:
    parts = [
        f"### {printable(report.spec.name)}\n",
        f"`{printable(summary(report.spec))}`\n",
        md_table(_RUN_COLUMNS, [_layer_cells(x) for x in report.layers]),
    ]
    if report.attention:
        parts.append(md_table(_ATTENTION_COLUMNS, [_attention_cells(a) for a in report.attention]))
    parts += [
        f"**Verdict: {verdict_text(verdict)}**\n",
    ]
    lines = _problem_lines(verdict)
    if lines:
        parts.append("\n".join(lines) + "\n")
    return "\n".join(parts)


_COMPARE_COLUMNS = (
    "run",
    "first std",
    "last std",
    "last/1st",
    "last 0s",
    "dead",
    "sat",
    "grad 1st/last",
    "verdict",
)


def _compare_cells(run: Run) -> list[str]:
    row = compare_row(run)
    return [
        run.label,
        fmt(row["first_std"]),
        fmt(row["last_std"]),
        fmt(row["std_ratio"]),
        fmt_fraction(row["last_zero_ratio"]),
        fmt_fraction(row["dead_units"]),
        fmt_fraction(row["saturation_ratio"]),
        fmt(row["grad_ratio"]),
        "healthy" if run.verdict.healthy else ", ".join(dict.fromkeys(p.rule for p in run.verdict.problems)),
    ]


def compare_markdown(runs: Sequence[Run]) -> str:
    return md_table(_COMPARE_COLUMNS, [_compare_cells(r) for r in runs])


def check_lines(runs: Sequence[Run], failed: int = 0) -> list[str]:
    """A line per spec judged under a changed gate, one per problem (``SPEC: rule at layer:
    message``), then one summary line."""
    lines = [
        f"{r.label}: gate changed: {'; '.join(c)}"
        for r in runs
        if (c := gate_changes(r.report.spec.gate, backward=r.report.spec.run.backward))
    ]
    lines += [f"{r.label}: {p.rule}: {p.message}" for r in runs for p in r.verdict.problems]
    bad = sum(not r.verdict.healthy for r in runs)
    lines.append(f"{len(runs) - bad} healthy, {bad} unhealthy" + (f", {failed} failed to run" if failed else ""))
    return lines


def junit_xml(runs: Sequence[Run], failed: Sequence[tuple[str, str]] = ()) -> str:
    """A JUnit XML document: one test case per spec, failed when the spec breaks a rule.

    Built with ``xml.etree.ElementTree``, which escapes markup; characters XML 1.0 cannot hold at
    all (control characters from a label or a layer name) are written as visible ``\\xNN`` text."""
    import xml.etree.ElementTree as ET

    failures = sum(not r.verdict.healthy for r in runs)
    total_time = sum(r.report.elapsed_s for r in runs)
    counts = {"tests": str(len(runs) + len(failed)), "failures": str(failures), "time": f"{total_time:.3f}"}
    root = ET.Element("testsuites", {"name": "probe", **counts, "errors": str(len(failed))})
    suite = ET.SubElement(root, "testsuite", {"name": "probe.check", **counts, "errors": str(len(failed))})
    for label, why in failed:  # a spec that could not be probed: a JUnit error, not a failure
        case = ET.SubElement(suite, "testcase", {"classname": "probe.check", "name": _xml_safe(label), "time": "0"})
        error = ET.SubElement(
            case, "error", {"message": _xml_safe(why.splitlines()[0] if why else ""), "type": "probe.error"}
        )
        error.text = _xml_safe(why)
    for r in runs:
        attrs = {"classname": "probe.check", "name": _xml_safe(r.label), "time": f"{r.report.elapsed_s:.3f}"}
        case = ET.SubElement(suite, "testcase", attrs)
        changes = gate_changes(r.report.spec.gate, backward=r.report.spec.run.backward)
        if changes:  # the gate this case was judged under, when it is not the default one
            properties = ET.SubElement(case, "properties")
            ET.SubElement(properties, "property", {"name": "gate_changed", "value": _xml_safe("; ".join(changes))})
        if r.verdict.healthy:
            continue
        rules_broken = ", ".join(dict.fromkeys(p.rule for p in r.verdict.problems))
        failure = ET.SubElement(
            case, "failure", {"message": _xml_safe("broken rules: " + rules_broken), "type": "probe.unhealthy"}
        )
        failure.text = _xml_safe("\n".join(f"{p.rule} at {p.layer}: {p.message}" for p in r.verdict.problems))
    ET.indent(root, space="  ")
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def _xml_safe(text: str) -> str:
    """``text`` without the characters XML 1.0 forbids (C0 controls but tab, newline and return;
    lone surrogates; U+FFFE, U+FFFF), each written as ``\\xNN`` / ``\\uNNNN`` instead."""
    import re

    def visible(m: re.Match[str]) -> str:
        code = ord(m.group())
        return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"

    return re.sub("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]", visible, text)
