"""``--format html``: one self-contained report page (inline CSS and SVG, no scripts, no links).

Tables are built from the same rows as the JSON/CSV outputs; pictures are the ``plot.py``
figures inlined as SVG when matplotlib is installed (without it the page says how to add them).
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Sequence
from typing import Any

from probe.records import Run, Stats, Verdict
from probe.render import plot as plot_mod
from probe.render.numbers import fmt
from probe.render.report import verdict_text
from probe.render.rows import compare_row, layer_row
from probe.render.writers import html_page, page


def _cell(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return html.escape(fmt(value))
    if isinstance(value, (list, tuple)):
        return html.escape(", ".join(str(v) for v in value))
    if value is None:
        return "-"
    return html.escape(str(value))


def table(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> str:
    """An HTML table of ``rows`` (dicts), in ``columns`` order (default: the first row's keys)."""
    if not rows:
        return "<p class=dim>(no rows)</p>"
    cols = list(columns or rows[0])
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{_cell(r.get(c))}</td>" for c in cols) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def figure(draw: Callable[..., Any], *args: Any) -> str:
    svg = plot_mod.svg_text(draw, *args)
    if svg is None:
        return f"<p class=dim>{html.escape(plot_mod.INSTALL_HINT.replace('--plot', 'pictures'))}</p>"
    return f"<figure>{svg}</figure>"


def section(heading: str, *parts: str) -> str:
    return f"<h2>{html.escape(heading)}</h2>" + "".join(parts)


def _verdict(verdict: Verdict) -> str:
    cls = "good" if verdict.healthy else "bad"
    items = "".join(f"<li>{html.escape(p.rule)}: {html.escape(p.message)}</li>" for p in verdict.problems)
    return f"<p class={cls}>verdict: {html.escape(verdict_text(verdict))}</p>" + (f"<ul>{items}</ul>" if items else "")


def _lines(lines: Sequence[str]) -> str:
    return "".join(f"<p>{html.escape(line)}</p>" for line in lines)


def run_page(d: Any, report: Stats, verdict: Verdict) -> str:
    """``probe run -f html``: the run's document ``d`` (the table the terminal shows, every row,
    its colored cells, the verdict and the advice) and the pictures."""
    from dataclasses import replace

    pictures = section("pictures", figure(plot_mod.runs_figure, [Run(report.spec.name, report, verdict)]))
    return html_page(replace(d, title=f"probe: {report.spec.name}"), [pictures])


def runs_page(runs: Sequence[Run], title: str) -> str:
    rows = [{**compare_row(r), "verdict": verdict_text(r.verdict)} for r in runs]
    cols = [c for c in rows[0] if c not in ("healthy", "problems")] if rows else None
    parts = [section("summary", table(rows, cols))]
    parts += [section(r.label, _verdict(r.verdict), table([layer_row(x) for x in r.report.layers])) for r in runs]
    pictures = section("pictures", figure(plot_mod.runs_figure, runs))
    return page("probe: compare", f"<p class=dim>{html.escape(title)}</p>", *parts, pictures)


def train_page(results: Sequence[Any], settings_line: str, network_line: str) -> str:
    from probe.render.train_view import train_row

    rows = [{**train_row(r), "flags": ", ".join(r.flags) or "ok"} for r in results]
    return page(
        "probe: train",
        f"<p class=dim>{html.escape(network_line)}<br>{html.escape(settings_line)}</p>",
        section("results", table(rows)),
        section("loss curves", figure(plot_mod.train_figure, results)),
    )


def sweep_page(result: Any, title: str, notes: Sequence[str]) -> str:
    from probe.render.sweep_view import sweep_rows

    return page(
        "probe: sweep",
        f"<p class=dim>{html.escape(title)}</p>",
        section("cells", table(sweep_rows(result))),
        _lines(notes),
        section("pictures", figure(plot_mod.sweep_figure, result)),
    )


def inspect_page(ins: Any, title: str) -> str:
    from probe.render.inspect_view import param_rows

    rows = [{**r, "shape": "x".join(str(d) for d in r["shape"])} for r in param_rows(ins)]
    acts = [{"layer": x.name, "mean": x.mean, "std": x.std if math.isfinite(x.std) else None} for x in ins.activations]
    return page(
        "probe: inspect",
        f"<p class=dim>{html.escape(title)}</p>",
        section("parameters", table(rows)),
        section("activations (forward only)", table(acts)),
    )
