"""What ``logit_scale`` reads: the starting loss of the network's logits against a constant guess,
and how many optimizer steps the network needs to shrink them (docs/verdicts.md).

Logits far from a constant guess must shrink before the network learns anything. Under Adam each
weight moves by about the learning rate per step whatever its gradient, so a weight matrix of rms
``r`` changes its scale by about ``lr / r`` per step, and the logits' scale (a product of the
scales along the path to them) by the sum of those rates over the layers that set it: the head,
and the layers below it down to the first normalization (whose gain, 1 at init, moves at ``lr``),
lookup table or the raw input. Shrinking a spread ``s`` to a constant guess's (1) takes about
``ln(s) / (lr * sum(1 / r))`` steps: thousands for an N(0, 1) classifier on normalized features
(only its own weights and the norm's gain can shrink it), tens for an oversized classifier over
PyTorch-default layers (each of rms about 1/sqrt(3 fan_in) turns 5-10% per step).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from probe.judge.gaussian import start_loss_ratio
from probe.judge.mechanisms import output_layer
from probe.judge.readings import made_by
from probe.judge.shrink import SHRINK_BUDGET, rate_before
from probe.records import LayerStats, Stats

if TYPE_CHECKING:
    from probe.judge.checks import Row


def shrink_rate(report: Stats, head: LayerStats) -> float | None:
    """``sum(1 / rms)`` over ``head`` and the rows with a weight that run before it, down to the
    first normalization (its gain), lookup table (its rows) or the start; ``None`` where the head's
    weight is not measured. Rows without a weight (activations, pools, blocks whose internals are
    rows) are passed over; every weighted row before the head counts, so a row off the head's path
    only makes the estimate faster (never a false error)."""
    if not head.weight_rms:
        return None
    return 1.0 / head.weight_rms + rate_before(report, head.name)


def shrink_steps(report: Stats, head: LayerStats, spread: float) -> float:
    """Adam steps at ``run.lr`` to shrink the logits' ``spread`` to 1 (``inf`` where unknown)."""
    rate = shrink_rate(report, head)
    lr = report.spec.run.lr
    if rate is None or lr <= 0:
        return math.inf
    return math.log(max(spread, 1.0)) / (lr * rate)


def loss_ratios(report: Stats, slow: bool) -> list[tuple[Row, float | None]]:
    """The network output's ``start_loss_ratio`` where the output can be logits (two or more
    units, made by a module with a weight: a head, not a normalization, an activation or a lookup
    table, whose outputs are features a head will rescale) and shrinking them takes more
    (``slow``) or fewer than ``SHRINK_BUDGET`` steps. The spread across a sample's units is
    ``unit_spread * std``."""
    x = output_layer(report)
    if x.units < 2 or x.unit_spread is None or not x.weight_size or x.role in ("norm", "activation", "embedding"):
        return []
    # the logits as the network outputs them (a model's own temperature may scale its head's)
    out = made_by(report, report.last)
    spread = (out.unit_spread if out.unit_spread is not None else x.unit_spread) * out.std
    if not math.isfinite(spread) or (shrink_steps(report, x, spread) > SHRINK_BUDGET) != slow:
        return []
    return [(x, start_loss_ratio(spread, x.units))]


def slow_loss_ratio(report: Stats) -> list[tuple[Row, float | None]]:
    return loss_ratios(report, slow=True)


def quick_loss_ratio(report: Stats) -> list[tuple[Row, float | None]]:
    return loss_ratios(report, slow=False)
