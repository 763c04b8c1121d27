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
from probe.records import Report, Run, Verdict
from probe.render.report import FORMAT, clean, compare_renderable, fmt, fmt_cosine, report_dict, verdict_renderable
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


def theory_renderable(
    report: Report, verdict: Verdict, prediction: Prediction, comparisons: Sequence[Comparison]
) -> Any:
    """Spec line, measured vs predicted per layer, the theory note and the verdict. Without a
    prediction: ``probe run``'s own table, with the reason above the verdict."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    if not prediction.available:
        from probe.render.report import run_renderable

        group = run_renderable(report, verdict)
        group.renderables.insert(len(group.renderables) - 1, Text(theory_note(prediction, comparisons), style="dim"))
        return group

    table = Table(show_edge=False, header_style="bold", pad_edge=False)
    for col in THEORY_COLUMNS:
        table.add_column(col, justify="left" if col in ("layer", "") else "right", no_wrap=True)
    chis = _chis(prediction)
    for c in comparisons:
        cells = theory_cells(c, chis.get(c.name))
        style = "yellow" if c.departs else None
        table.add_row(*(Text(cell, style=style) if style else Text(cell) for cell in cells))
    note = Text(theory_note(prediction, comparisons), style="yellow" if any(c.departs for c in comparisons) else "dim")
    return Group(Text(summary(report.spec), style="dim"), table, note, verdict_renderable(verdict))


def theory_markdown(report: Report, verdict: Verdict, prediction: Prediction, comparisons: Sequence[Comparison]) -> str:
    from probe.render.report import md_table, run_markdown, verdict_text

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
    before = "own init" if spec.model.factory is not None and not spec.init.explicit else spec.init.weight.name
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


def fix_renderable(fixed: FixResult, saved: str | None) -> Any:
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    table = Table(show_edge=False, header_style="bold", pad_edge=False)
    for col in SCALE_COLUMNS:
        table.add_column(col, justify="left" if col in ("layer", "module", "status") else "right", no_wrap=True)
    for row in scale_rows(fixed):
        status = Text(row["status"], style="green" if row["status"] == "ok" else "bold red")
        table.add_row(
            row["layer"],
            row["module"],
            fmt(row["scale"]),
            fmt(row["variance_before"]),
            fmt(row["variance_after"]),
            str(row["iterations"]),
            status,
        )
    lsuv = fixed.lsuv
    ruled = any(t.target.startswith("weight") for r in fixed.fixed_spec.init.rules for t in r.targets)
    start = f"{lsuv.start} (init.rules' weights where they match)" if ruled else lsuv.start
    title = Text(
        f"LSUV from {start}: unit output variance within {lsuv.tolerance:g}, at most {lsuv.max_iter} passes a layer",
        style="dim",
    )
    parts = [title, table, compare_renderable(fix_runs(fixed), summary(fixed.before.spec))]
    if saved:
        parts.append(Text(f"saved the fixed state dict to {saved}", style="dim"))
    return Group(*parts)


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


def depth_renderable(result: DepthReport) -> Any:
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    table = Table(show_edge=False, header_style="bold", pad_edge=False)
    for col in DEPTH_COLUMNS:
        table.add_column(col, justify="left" if col == "strategy" else "right", no_wrap=True)
    for x in result.limits:
        if x.reason is not None:
            table.add_row(x.strategy, Text(x.reason, style="dim"), "", "", "", "")
            continue
        table.add_row(
            x.strategy,
            fmt(x.sigma_w2),
            fmt(x.q_deep),
            fmt(x.chi_deep),
            _breaks(x.forward_depth, x.forward_rule, result.max_depth),
            _breaks(x.gradient_depth, x.gradient_rule, result.max_depth),
        )
    parts: list[Any] = [
        Text(summary(result.spec), style="dim"),
        Text(f"mean-field depth limits (hidden layers, up to {result.max_depth}) against the spec's gate", style="dim"),
        table,
    ]
    if result.edge:
        edge = Table(show_edge=False, header_style="bold", pad_edge=False)
        for col in ("sigma_b^2", "sigma_w^2 (chi = 1)", "gain", "q*"):
            edge.add_column(col, justify="right", no_wrap=True)
        for e in result.edge:
            edge.add_row(f"{e.sigma_b2:g}", fmt(e.sigma_w2), fmt(e.gain), fmt(e.q_star))
        act = result.spec.model.activation.name
        parts += [
            Text(f"edge of chaos for {act}: chi = sigma_w^2 E[phi'(z)^2] = 1 at the fixed point q*", style="dim"),
            edge,
            Text(
                "sigma_w^2 below the edge: ordered (signal and gradient fade); above: chaotic (gradients grow). "
                "With sigma_b^2 = 0 the edge has q* = 0, so gain 1 (Xavier with fan_in = fan_out) decays "
                "slowly (q ~ 1/(2 l)) but really; a flat signal and gradient need sigma_b^2 > 0 and the gain above.",
                style="dim",
            ),
        ]
    elif result.edge_reason:
        parts.append(Text(result.edge_reason, style="dim"))
    return Group(*parts)
