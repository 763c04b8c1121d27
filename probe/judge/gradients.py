"""The gradient rules' values: each signal row's backward signal against the outputs', and the
side rows whose small gradient is their own rather than a vanishing one (docs/verdicts.md)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from probe.records import LayerStats, Stats
from probe.spec import GateSpec

if TYPE_CHECKING:
    from probe.judge.checks import Row


def grad_ratios(report: Stats, least: bool = False, coherent: bool = False) -> list[tuple[LayerStats, float | None]]:
    """Each signal row's grad scale (per sample, the sum over positions of ||output|| *
    ||gradient||) relative to the network outputs' (all of them; ``least``: the output with the
    least, which is what a row feeding only that output receives). ``coherent``: the same with
    ``coherent_grad_scale`` (the positions' rank-one gradients summed as a position-wise map sums
    them, not their norms: what ``gradient_exploding`` reads) where the report has it. Reports
    without the outputs' scale use the last row's; without grad scales (older collectors), the
    per-value gradient std."""
    name = "grad_scale" if report.last.grad_scale is not None else "grad_std"
    ref = getattr(report.last, name)
    total, smallest = report.last.output_grad_scale, report.last.least_output_grad_scale
    if coherent and report.last.output_coherent_grad_scale is not None:
        name, ref = "coherent_grad_scale", report.last.output_coherent_grad_scale
    elif name == "grad_scale" and total is not None:
        ref = smallest if least and smallest is not None else total
    if ref is None or not math.isfinite(ref) or ref == 0:
        return []
    rows = report.signal()
    return [(x, None if getattr(x, name) is None else getattr(x, name) / ref) for x in rows]


def least_grad_ratios(report: Stats) -> list[tuple[LayerStats, float | None]]:
    return grad_ratios(report, least=True)


def side_rows(report: Stats, gate: GateSpec) -> set[str]:
    """The rows that break ``gate.min_grad_ratio`` after a signal row that ran before them does
    not: that row receives its gradient, so the gradient does not fade toward the input there; what
    is small is these rows' own effect on the loss (an additive attention's query term and scores,
    shifted out by the softmax over keys), not a gradient that starves the rows behind them. Their
    weights learn slower. A gradient that fades with depth reads smallest at the first rows (the
    input's side): the rows that break before any row that does not are never side rows."""
    out: set[str] = set()
    healthy_before = False
    for row, value in least_grad_ratios(report):
        if value is None or math.isnan(value):
            continue
        if value >= gate.min_grad_ratio:
            healthy_before = True
        elif healthy_before:
            out.add(row.name)
    return out


def detached_rows(report: Stats) -> list[tuple[Row, float | None]]:
    """Rows whose own parameters require a gradient and receive none, nor does their output
    (``detached``): the gradient is not small there, it is absent, so read as 0. Their weights never
    move; the rest of the network trains without them (a warning: a frozen backbone is often meant)."""
    return [(x, 0.0) for x in report.layers if x.detached]


@dataclass(frozen=True)
class Held:
    """A tensor the forward pass used with a gradient that ``model.parameters()`` does not hold
    (``Stats.unregistered``): a check's row without statistics of its own."""

    name: str


# Weights held outside model.parameters() never move and load_state_dict never sets them: they stay
# at their random init. Where they are most of the weights the forward uses, what trains is a
# remainder reading random features (docs/verdicts.md)
HELD_MAJORITY = 0.5


def unregistered_rows(report: Stats, majority: bool = False) -> list[tuple[Row, float | None]]:
    """0 for each tensor the forward used outside ``model.parameters()`` (layers in a plain list or
    dict, a tensor attribute with ``requires_grad``): an optimizer built from the parameters never
    applies their gradient (probe/model/registration.py). ``majority``: only where they hold at
    least ``HELD_MAJORITY`` of the elements of the weights the forward used; else only where less."""
    if (report.unregistered_share >= HELD_MAJORITY) != majority:
        return []
    return [(Held(name), 0.0) for name in report.unregistered]


def unregistered_majority(report: Stats) -> list[tuple[Row, float | None]]:
    return unregistered_rows(report, majority=True)
