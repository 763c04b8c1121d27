"""Low-precision headroom (``Stats.headroom``, ``run.precision``) as the run view's table and line
(the JSON ``precision`` object and the CSV's columns: ``headroom_data``)."""

from __future__ import annotations

from collections.abc import Sequence

from probe.records import HeadroomRow, HeadroomStats, LayerStats, Range, Stats, StepStats, Verdict
from probe.render.doc import NAME_BREAKS, Cell, Column, Line, Table, table
from probe.render.headroom_data import KINDS as _KINDS
from probe.render.headroom_data import headroom_format as _format
from probe.render.numbers import clean, fmt, fmt_fraction


def headroom_line(headroom: HeadroomStats) -> Line:
    """What the format's bounds are and what is judged (JSON key ``precision``)."""
    f = _format(headroom)
    top = "saturates from" if f.saturates else "overflows (inf) from"
    text = (
        f"headroom in {f.name} ({f.dtype}): largest {fmt(f.max)}, {top} {fmt(f.overflow)}; flushes to 0 at or below "
        f"{fmt(f.flush)}; smallest normal {fmt(f.normal)}. amax: amax / largest; flush: share of nonzero values flushed. "
        "Those of activations and weights are judged (headroom rule); gradients are at the probe's own scale, shown only"
    )
    return Line(text, "dim", "precision")


def flagged_rows(report: Stats, verdict: Verdict) -> set[str]:
    """The rows whose amax or underflow breaks the gate the verdict was judged under (none when the
    verdict has no headroom problem: the rule was disabled)."""
    if not any(p.rule == "headroom" for p in (*verdict.problems, *verdict.warnings)):
        return set()
    from probe.judge.headroom import overflow, overflow_after_steps, underflow

    gate = report.spec.gate
    over = {
        x.name
        for x, v in [*overflow(report), *overflow_after_steps(report)]
        if v is not None and v > gate.max_amax_ratio
    }
    return over | {x.name for x, v in underflow(report) if v is not None and v > gate.max_underflow}


def headroom_table(
    headroom: HeadroomStats, shown: Sequence[LayerStats], flagged: set[str], steps: StepStats | None = None
) -> Table:
    """Per shown row: amax / max and the underflow share of its activations, gradients and weight,
    and with ``steps`` the larger amax / max of its output and weight after them (red: the rows the
    ``headroom`` rule flags)."""
    f = _format(headroom)
    by_name: dict[str, HeadroomRow] = {r.name: r for r in headroom.rows}
    after = {r.name: r for r in steps.rows} if steps is not None else {}
    # (the format and what amax and flush mean: the line under the table, headroom_line)
    columns = [Column(f"layer ({f.name})", "name", align="left", wrap=NAME_BREAKS)]
    for _, short in _KINDS:
        columns += [
            Column(f"{short} amax", f"{short.lower()}_amax_ratio"),
            Column(f"{short} flush", f"{short.lower()}_underflow"),
        ]
    if steps is not None:
        columns.append(Column(f"amax/max after {steps.steps} steps", "amax_ratio_after_steps"))
    rows = []
    for x in shown:
        h = by_name.get(x.name)
        if h is None:
            continue
        style = "bold red" if x.name in flagged else None
        cells = [Cell(x.name, style, x.name)]
        for kind, _ in _KINDS:
            r: Range | None = getattr(h, kind)
            ratio = None if r is None else r.amax / f.max
            share = None if r is None else r.underflow
            cells += [Cell(fmt(ratio), style, clean(ratio)), Cell(fmt_fraction(share), style, clean(share))]
        if steps is not None:
            s = after.get(x.name)
            known = [v for v in ((s.amax, s.weight_amax) if s is not None else ()) if v is not None]
            late = max(known) / f.max if known else None
            cells.append(Cell(fmt(late), style, clean(late)))
        rows.append(cells)
    return table(columns, rows, key="precision_layers")
