"""Theory beside measurement, and LSUV results -> renderables and text. Never prints.

Kept apart from ``report.py`` (the core renderers) so that the theory and fix features stay one
import away; the rows are plain dicts so that tests check numbers without parsing output.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from probe.experiments.fix import FixResult
from probe.judge.depth import DepthReport
from probe.judge.theory import DEPARTURE_Z, Comparison, Prediction
from probe.records import Run, Stats, Verdict
from probe.render.doc import NAME_BREAKS, Cell, Column, Doc, Line, doc, table
from probe.render.numbers import clean, fmt, fmt_cosine
from probe.render.report import FORMAT, report_dict
from probe.render.run_view import compare_doc, run_doc, verdict_lines
from probe.spec import summary, to_dict

THEORY_COLUMNS = (
    "layer",
    "std",
    "expected",
    "+-se",
    "z",
    "grad std",
    "expected",
    "+-se",
    "z",
    "chi",
    "cos",
    "expected",
    "",
)


def theory_cells(c: Comparison, chi: float | None) -> list[str]:
    return [
        c.name,
        fmt(c.std),
        fmt(c.expected_std),
        fmt(c.std_error),
        _fmt_z(c.std_z),
        fmt(c.grad_std),
        fmt(c.expected_grad_std),
        fmt(c.grad_std_error),
        _fmt_z(c.grad_z),
        fmt(chi),
        fmt_cosine(c.correlation),
        fmt_cosine(c.expected_correlation),
        "departs" if c.departs else "",
    ]


def _fmt_z(z: float | None) -> str:
    return "-" if z is None else f"{z:.1f}"


def _chis(prediction: Prediction) -> dict[str, float]:
    return {t.name: t.chi for t in prediction.layers}


def theory_note(prediction: Prediction, comparisons: Sequence[Comparison]) -> str:
    if not prediction.available:
        return f"theory: {prediction.reason}"
    bad = [c.name for c in comparisons if c.departs]
    if not bad:
        return f"theory: every layer within {DEPARTURE_Z:g} standard errors of the mean-field prediction"
    return (
        f"theory: {', '.join(bad)} depart from the mean-field prediction by more than {DEPARTURE_Z:g} standard "
        "errors of the random batch (finite width: the weight draw, which the wide-network limit averages away)"
    )


def theory_doc(report: Stats, verdict: Verdict, prediction: Prediction, comparisons: Sequence[Comparison]) -> Doc:
    """Spec line, measured vs predicted per layer, the theory note and the verdict. Without a
    prediction: ``probe run``'s own table, with the reason above the verdict."""
    note_style = "yellow" if any(c.departs for c in comparisons) else "dim"
    note = Line(theory_note(prediction, comparisons), note_style, "theory")
    if not prediction.available:
        shown = run_doc(report, verdict)
        at = next(i for i, s in enumerate(shown.sections) if isinstance(s, Line) and s.key == "verdict")
        return Doc((*shown.sections[:at], note, *shown.sections[at:]), shown.title)
    columns = [
        Column("layer", "name", align="left", wrap=NAME_BREAKS),
        Column("std"),
        Column("expected std", "expected_std", short="E std"),
        Column("+-se", "std_error"),
        Column("z", "std_z"),
        Column("grad std", "grad_std"),
        Column("expected grad", "expected_grad_std", short="E grad"),
        Column("+-se", "grad_std_error"),
        Column("z", "grad_z"),
        Column("chi"),
        Column("cos", "correlation"),
        Column("expected cos", "expected_correlation", short="E cos"),
        Column("", "departs", align="left"),
    ]
    chis = _chis(prediction)
    rows = []
    for c in comparisons:
        style = "yellow" if c.departs else None
        values = (
            c.name, c.std, c.expected_std, c.std_error, c.std_z, c.grad_std,
            c.expected_grad_std, c.grad_std_error, c.grad_z, chis.get(c.name), c.correlation,
            c.expected_correlation, c.departs,
        )  # fmt: skip
        rows.append([Cell(t, style, clean(v)) for t, v in zip(theory_cells(c, chis.get(c.name)), values, strict=True)])
    return doc(
        Line(summary(report.spec), "dim", "spec"),
        table(columns, rows, key="layers"),
        note,
        verdict_lines(verdict),
        title=f"probe run --theory: {report.spec.name}",
    )


def theory_json(report: Stats, verdict: Verdict, prediction: Prediction, comparisons: Sequence[Comparison]) -> str:
    """``probe run --theory -f json``: the ``probe.report/1`` document with each row's prediction."""
    from probe.judge.theory import annotate
    from probe.render.report import dumps

    return dumps(annotate(report_dict(report, verdict), prediction, comparisons))


def theory_csv(report: Stats, verdict: Verdict, prediction: Prediction, comparisons: Sequence[Comparison]) -> str:
    """``probe run --theory -f csv``: one line per row, measurement and prediction."""
    from probe.judge.theory import annotate
    from probe.render.report import csv_text

    rows = annotate(report_dict(report, verdict), prediction, comparisons)["layers"]
    columns = list(dict.fromkeys(k for row in rows for k in row))  # a row may lack init_rule (no weight)
    return csv_text(rows, columns)


def theory_markdown(report: Stats, verdict: Verdict, prediction: Prediction, comparisons: Sequence[Comparison]) -> str:
    from probe.render.report import run_markdown, verdict_text
    from probe.render.writers import md_table

    if not prediction.available:  # probe run's own table, the reason above the verdict
        text = run_markdown(report, verdict)
        verdict_line = f"**Verdict: {verdict_text(verdict)}**\n"
        return text.replace(verdict_line, theory_note(prediction, comparisons) + "\n\n" + verdict_line, 1)
    chis = _chis(prediction)
    rows = [theory_cells(c, chis.get(c.name)) for c in comparisons]
    return "\n".join(
        [
            f"### {report.spec.name}\n",
            f"`{summary(report.spec)}`\n",
            md_table([*THEORY_COLUMNS[:-1], "departs"], rows),
            theory_note(prediction, comparisons) + "\n",
            f"**Verdict: {verdict_text(verdict)}**\n",
        ]
    )


# ---- probe fix -------------------------------------------------------------------------------

SCALE_COLUMNS = ("layer", "module", "scale", "variance before", "variance after", "passes", "status")


def scale_rows(fixed: FixResult) -> list[dict[str, Any]]:
    """One row per rescaled layer (the numbers ``probe fix`` prints)."""
    return [
        {
            "layer": x.name,
            "module": x.module,
            "scale": clean(x.scale),
            "variance_before": clean(x.variance_before),
            "variance_after": clean(x.variance_after),
            "iterations": x.iterations,
            "status": x.status,
        }
        for x in fixed.lsuv.layers
    ]


def fix_runs(fixed: FixResult) -> list[Run]:
    """Before and after as two ``compare`` rows."""
    spec = fixed.before.spec
    before = "own init" if spec.model.own_model and not spec.init.explicit else spec.init.weight.name
    return [
        Run(f"before ({before})", fixed.before, fixed.before_verdict, before),
        Run("after (lsuv)", fixed.after, fixed.after_verdict, "lsuv"),
    ]


def fix_dict(fixed: FixResult, saved: str | None) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "lsuv": {
            "start": fixed.lsuv.start,
            "tolerance": fixed.lsuv.tolerance,
            "max_iter": fixed.lsuv.max_iter,
            "layers": scale_rows(fixed),
        },
        "saved": saved,
        "before": report_dict(fixed.before, fixed.before_verdict),
        "after": report_dict(fixed.after, fixed.after_verdict),
    }


def fix_doc(fixed: FixResult, saved: str | None) -> Doc:
    """The LSUV settings, one row per rescaled layer, then before and after as ``compare`` rows."""
    columns = [
        Column("layer", align="left", wrap=NAME_BREAKS),
        Column("module", align="left"),
        Column("scale"),
        Column("variance before", "variance_before", short="var0"),
        Column("variance after", "variance_after", short="var1"),
        Column("passes", "iterations"),
        Column("status", align="left"),
    ]
    rows = []
    for row in scale_rows(fixed):
        texts = [
            row["layer"],
            row["module"],
            fmt(row["scale"]),
            fmt(row["variance_before"]),
            fmt(row["variance_after"]),
        ]
        rows.append(
            [
                *(Cell(t, None, v) for t, v in zip(texts, list(row.values())[:5], strict=True)),
                Cell(str(row["iterations"]), None, row["iterations"]),
                Cell(row["status"], "green" if row["status"] == "ok" else "bold red"),
            ]
        )
    lsuv = fixed.lsuv
    ruled = any(t.target.startswith("weight") for r in fixed.fixed_spec.init.rules for t in r.targets)
    start = f"{lsuv.start} (init.rules' weights where they match)" if ruled else lsuv.start
    title = f"LSUV from {start}: unit output variance within {lsuv.tolerance:g}, at most {lsuv.max_iter} passes a layer"
    before_after = compare_doc(fix_runs(fixed), summary(fixed.before.spec))
    return doc(
        Line(title, "dim", "lsuv"),
        table(columns, rows, key="layers"),
        before_after.sections,
        Line(f"saved the fixed state dict to {saved}", "dim", "saved") if saved else None,
        title="probe fix",
    )


# ---- probe depth -----------------------------------------------------------------------------

DEPTH_COLUMNS = ("strategy", "sigma_w^2", "q deep", "chi deep", "forward breaks at", "gradient breaks at")


def depth_rows(result: DepthReport) -> list[dict[str, Any]]:
    """One row per strategy: the first depth at which each gate rule breaks (``None``: not up to max_depth)."""
    return [
        {
            "strategy": x.strategy,
            "sigma_w2": clean(x.sigma_w2),
            "q_deep": clean(x.q_deep),
            "chi_deep": clean(x.chi_deep),
            "forward_depth": x.forward_depth,
            "forward_rule": x.forward_rule,
            "gradient_depth": x.gradient_depth,
            "gradient_rule": x.gradient_rule,
            "reason": x.reason,
        }
        for x in result.limits
    ]


def edge_rows(result: DepthReport) -> list[dict[str, Any]]:
    return [
        {"sigma_b2": e.sigma_b2, "sigma_w2": clean(e.sigma_w2), "gain": clean(e.gain), "q_star": clean(e.q_star)}
        for e in result.edge
    ]


def depth_dict(result: DepthReport) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "spec": to_dict(result.spec),
        "max_depth": result.max_depth,
        "limits": depth_rows(result),
        "edge_of_chaos": edge_rows(result) if result.edge else None,
        "edge_reason": result.edge_reason,
    }


def _breaks(depth: int | None, rule: str | None, max_depth: int) -> str:
    return f"> {max_depth}" if depth is None else f"{depth} ({rule})"


def depth_doc(result: DepthReport) -> Doc:
    columns = [
        Column("strategy", align="left"),
        Column("sigma_w^2", "sigma_w2"),
        Column("q deep", "q_deep"),
        Column("chi deep", "chi_deep"),
        Column("forward breaks at", "forward", short="fwd breaks", wrap=" "),
        Column("gradient breaks at", "gradient", short="grad breaks", wrap=" "),
    ]
    rows = []
    for x in result.limits:
        if x.reason is not None:
            rows.append([Cell(x.strategy), Cell(x.reason, "dim"), Cell(""), Cell(""), Cell(""), Cell("")])
            continue
        rows.append(
            [
                Cell(x.strategy),
                Cell(fmt(x.sigma_w2), None, clean(x.sigma_w2)),
                Cell(fmt(x.q_deep), None, clean(x.q_deep)),
                Cell(fmt(x.chi_deep), None, clean(x.chi_deep)),
                Cell(_breaks(x.forward_depth, x.forward_rule, result.max_depth)),
                Cell(_breaks(x.gradient_depth, x.gradient_rule, result.max_depth)),
            ]
        )
    parts: list[Any] = [
        Line(summary(result.spec), "dim", "spec"),
        Line(f"mean-field depth limits (hidden layers, up to {result.max_depth}) against the spec's gate", "dim"),
        table(columns, rows, key="limits"),
    ]
    if result.edge:
        edge_columns = [
            Column("sigma_b^2", "sigma_b2"),
            Column("sigma_w^2 (chi = 1)", "sigma_w2", short="sigma_w^2"),
            Column("gain"),
            Column("q*", "q_star"),
        ]
        edge_rows = [
            [
                Cell(f"{e.sigma_b2:g}", None, e.sigma_b2),
                Cell(fmt(e.sigma_w2), None, clean(e.sigma_w2)),
                Cell(fmt(e.gain), None, clean(e.gain)),
                Cell(fmt(e.q_star), None, clean(e.q_star)),
            ]
            for e in result.edge
        ]
        act = result.spec.model.activation.name
        parts += [
            Line(f"edge of chaos for {act}: chi = sigma_w^2 E[phi'(z)^2] = 1 at the fixed point q*", "dim"),
            table(edge_columns, edge_rows, key="edge_of_chaos"),
            Line(
                "sigma_w^2 below the edge: ordered (signal and gradient fade); above: chaotic (gradients grow). "
                "With sigma_b^2 = 0 the edge has q* = 0, so gain 1 (Xavier with fan_in = fan_out) decays "
                "slowly (q ~ 1/(2 l)) but really; a flat signal and gradient need sigma_b^2 > 0 and the gain above.",
                "dim",
            ),
        ]
    elif result.edge_reason:
        parts.append(Line(result.edge_reason, "dim"))
    return doc(parts, title="probe depth")
