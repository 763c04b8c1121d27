"""The ``stalled`` rule: the first optimizer steps (``run.steps``) barely moved the output.

Mechanism (docs/verdicts.md, "stalled"): Adam moves each weight element about ``lr`` per step
whatever its gradient's size, so a weight of rms ``r`` turns about ``lr / r`` of its norm per
step. Under a normalization the forward pass divides a weight's scale out, so weights k times
their fan-in scale give well-scaled activations and a network that moves k times slower: no
step-0 statistic sees it, the steps do.

The steps fit a fixed random target ``t`` as large as the output (``probe/measurement/steps.py``).
Output and target are independent, so the distance between them starts at sqrt(2) times the
output's size; an output moving toward ``t`` by its own size closes 1 / sqrt(2) of it. The
value judged is the share of the distance closed per step, ``(1 - sqrt(L_K / L_0)) / K``.
Training must move the output by about its own size within the run's first few hundred steps
(the zoo's ground truth trains 150-200): the default threshold is ``(1 / sqrt 2) / 200`` per
step. Below it the optimizer's steps are too small for the network as initialized. An objective
that rose (steps too large for the weights, e.g. weights 1e-3 times their scale) is not stalled
and not judged here.

Stalled needs both halves of the mechanism: the output closes less than that share per step,
and the weights turn less than ``1 / 200`` of their norm per step (the size-weighted median of
``||W_K - W_0|| / ||W_0|| / K``; the same horizon, sqrt(2) times the threshold). An output slow
while its weights turn fast is behind something the steps do not move (sinusoidal positions
that dominate N(0, 0.02) embeddings, a zero-initialized branch): those weights grow, not stall.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from probe.judge.mechanisms import IDENTITY_FRACTION
from probe.judge.readings import weighted_median
from probe.records import Stats, StepStats
from probe.spec import GateSpec

if TYPE_CHECKING:
    from probe.judge.checks import Row

HORIZON = 200  # steps in which training must move the output by its own size (the zoo's runs: 150-200)
MIN_STEP_PROGRESS = (1 / math.sqrt(2)) / HORIZON  # 0.0035355: gate.min_step_progress's default, rounded


def step_progress(report: Stats) -> list[tuple[Row, float | None]]:
    """The share of the distance to the steps' target closed per step, at the network's last
    row; nothing without steps, where the objective rose or was not finite, or where the weights
    themselves move fast (``weights_turn``): then the output is slow behind something the steps do
    not change (a fixed position signal, a zero-initialized branch) and the weights are growing."""
    steps = report.steps
    if steps is None or steps.steps == 0 or not report.layers:
        return []
    if not math.isfinite(steps.progress) or steps.progress < 0:
        return []
    per_step = closed_per_step(steps)
    turn = weights_turn(report)
    if turn is not None and turn >= math.sqrt(2) * report.spec.gate.min_step_progress:
        return []
    return [(report.last, per_step)]


def closed_per_step(steps: StepStats) -> float:
    """The share of the distance to the target closed per step, ``(1 - sqrt(L_K / L_0)) / K``
    (the distance is sqrt(L)); negative where the objective rose."""
    ratio = 1.0 - steps.progress
    return (1.0 - math.sqrt(ratio)) / steps.steps if ratio >= 0 else -math.inf


def weights_turn(report: Stats) -> float | None:
    """The weighted median over the network's weight elements of each weight's relative update per
    step (``||W_K - W_0|| / ||W_0|| / K``); None without steps or weights."""
    steps = report.steps
    if steps is None or steps.steps == 0:
        return None
    sizes = {x.name: x.weight_size for x in report.layers if x.weight_size}
    found = weighted_median(
        (r.update_ratio, sizes[r.name], r) for r in steps.rows if r.name in sizes and r.update_ratio is not None
    )
    return None if found is None else found[0] / steps.steps


def slow_start(report: Stats, gate: GateSpec | None = None) -> tuple[set[str], set[str], str]:
    """``explained`` for ``stalled``: a network holding a zero-initialized layer that the first
    steps move (a parameter exactly 0 whose gradient is not, zeroing the row's output: a zero
    projection or head) or a residual branch that adds almost nothing (ReZero's 0, a zero or tiny
    LayerScale) starts slow, not stuck: Adam grows that parameter by ``lr`` per step from 0 and
    the output's pace grows with it (ReZero at its default trains). At most a warning then. (Layers
    merely small by a relative gradient are not counted: N(0, 1) weights can read so.)"""
    # a zero layer's output is 0 (a zero projection or head); a block whose branch adds almost
    # nothing is an identity by design (ReZero's 0, a zero LayerScale): both grow from 0. A zero
    # parameter that zeroes nothing (a norm's gain written as 1 + w, w = 0) does not count
    zero = [
        x
        for x in report.layers
        if (x.zero_moving and x.zero_ratio == 1.0)
        or (x.branch_ratio is not None and x.branch_ratio < IDENTITY_FRACTION)
    ]
    if not zero:
        return set(), set(), ""
    names = ", ".join(x.name for x in zero[:3]) + (f" and {len(zero) - 3} more" if len(zero) > 3 else "")
    return set(), {x.name for x in report.layers}, f"a slow start: zero-initialized layers the steps grow ({names})"
