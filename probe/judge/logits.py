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

The part of the logits every sample shares (a per-class offset: a deep residual stream's growing
mean read by a random head) needs no shrinking: its gradient has the same sign on every sample and
step, so Adam moves each of the head's weights by ``lr`` in concert against it, and the offset falls
by ``lr * ||mean input||_1`` per step, at least ``lr * fan_in * |mean of the input|`` (and ``lr``
through the bias). Only the part that varies between samples has to shrink through the scales.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from probe.judge.gaussian import start_loss_ratio
from probe.judge.mechanisms import output_layer
from probe.judge.readings import output_row
from probe.judge.shrink import SHRINK_BUDGET, rate_before
from probe.records import LayerStats, Problem, Stats

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


def offset_steps(report: Stats, head: LayerStats, shared: float, varying: float) -> float:
    """Adam steps to bring logits whose spread across the classes is ``shared`` (the same for every
    sample) plus ``varying`` (what differs between samples) to a constant guess's: the shared part
    removed by the head's weights moving in concert, ``shared / (lr * (fan_in * |mean input| + 1))``
    (``input_mean``, measured on the network's output row; elsewhere only the bias counts, ``lr``
    per step), while the varying part shrinks through the scales (``shrink_steps``)."""
    lr = report.spec.run.lr
    if lr <= 0 or not head.weight_size or not head.units:
        return math.inf
    fan_in = head.weight_size // head.units
    mean = abs(head.input_mean) if head.input_mean is not None and math.isfinite(head.input_mean) else 0.0
    return max(shared / (lr * (fan_in * mean + 1.0)), shrink_steps(report, head, varying))


def start_steps(report: Stats, head: LayerStats, out: LayerStats, spread: float) -> float:
    """Adam steps to bring logits of ``spread`` to a constant guess's: the faster of shrinking all of
    it through the scales and removing the part every sample shares (``offset_steps``; ``out``'s
    ``sample_std`` is the part that varies, each logit's spread across the batch)."""
    steps = shrink_steps(report, head, spread)
    if out.sample_std is None or not math.isfinite(out.sample_std):
        return steps
    varying = min(out.sample_std, spread)
    shared = math.sqrt(max(spread**2 - varying**2, 0.0))
    return min(steps, offset_steps(report, head, shared, varying))


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
    out = output_row(report)
    spread = (out.unit_spread if out.unit_spread is not None else x.unit_spread) * out.std
    if not math.isfinite(spread) or (start_steps(report, x, out, spread) > SHRINK_BUDGET) != slow:
        return []
    return [(x, start_loss_ratio(spread, x.units))]


def slow_loss_ratio(report: Stats) -> list[tuple[Row, float | None]]:
    return loss_ratios(report, slow=True)


def quick_loss_ratio(report: Stats) -> list[tuple[Row, float | None]]:
    return loss_ratios(report, slow=False)


def probability_output(report: Stats) -> tuple[Problem, ...]:
    """A note where the model's output is probabilities (``probability_classes``: its values along
    one dimension sum to 1 for every sample, none negative; a softmax's, as a module or called in
    the model's forward). Right for a loss on probabilities (NLLLoss on their log, a KL
    divergence); a cross-entropy (``nn.CrossEntropyLoss``) takes logits and applies its own softmax,
    and on values confined to [0, 1] it can fall from ``log C`` to ``log(1 + (C - 1) / e)`` at best
    (docs/verdicts.md). probe does not know the loss, so it says so and judges nothing. Said at the
    row that made the output."""
    c = report.probability_classes
    if c < 2:
        return ()
    out = output_row(report)
    floor = math.log(1.0 + (c - 1) / math.e)
    msg = (
        f"the model's output is probabilities: each sample's {c} values sum to 1. A cross-entropy "
        f"(nn.CrossEntropyLoss, F.cross_entropy) takes logits and applies its own softmax: on these it can "
        f"fall from {math.log(c):.2f} to {floor:.2f} nats at best, and its gradient is squeezed twice; "
        "give the loss the logits before the softmax (or use NLLLoss on their log)"
    )
    return (Problem("probability_output", out.name, float(c), 2.0, msg, "", "note"),)
