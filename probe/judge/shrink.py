"""How many Adam steps a network needs to shrink a scale that keeps it from learning: the budget
``logit_scale`` (a classifier's logits, ``probe/judge/logits.py``) and ``attention_saturation``
(an attention module's logits, here) judge against (docs/verdicts.md)."""

from __future__ import annotations

import math

from probe.records import AttentionStats, LayerStats, Stats

# steps within which the logits must be able to shrink to a constant guess's scale for a start
# far from it to count as slower rather than stuck: the measured recoveries needed under 40, the
# failures over 500 (docs/verdicts.md)
SHRINK_BUDGET = 100.0
NORM_GAIN_RMS = 1.0  # a normalization's gain at init (its own weight is not measured: not a fan-in map)


def attention_shrink_steps(report: Stats, a: AttentionStats) -> float:
    """Adam steps at ``run.lr`` to bring an attention module's logit spread (``logit_std``) down to
    1, where its softmax passes gradient again: ``ln(spread) / (lr * rate)``, the rate summed over
    the weights that scale its logits, as ``shrink_rate`` sums a head's. Those are the module's own
    weighted rows (or its parent's, where the softmax runs in a module of its own: x-transformers'
    ``Attend``) but the last, the output projection, which runs after the softmax; and what feeds
    them, down to the first normalization. Queries and keys normalized inside the module (QK-norm)
    are scaled by the norms' gains alone. ``inf`` where the weights are not found (a softmax in the
    model's own forward)."""
    lr = report.spec.run.lr
    inside = _inside(report, a.name)
    if not any(x.weight_rms for x in inside) and "." in a.name:
        inside = _inside(report, a.name.rpartition(".")[0])
    weighted = [x for x in inside if x.weight_rms]
    if lr <= 0 or not weighted:
        return math.inf
    if any(x.role == "norm" for x in inside):
        rate = 2.0 / NORM_GAIN_RMS
    else:
        factors = weighted[:-1] if len(weighted) > 1 else weighted
        rate = sum(1.0 / (x.weight_rms or math.inf) for x in factors) + rate_before(report, factors[0].name)
    return math.log(max(a.logit_std, 1.0)) / (lr * rate)


def rate_before(report: Stats, name: str) -> float:
    """``sum(1 / rms)`` over the rows with a weight that run before row ``name`` (all of them where
    it is not a row), down to the first normalization (its gain, ``NORM_GAIN_RMS``), lookup table
    (its rows) or the start: how fast Adam's steps rescale what that row reads."""
    names = [x.name for x in report.layers]
    start = names.index(name) if name in names else len(names)
    rate = 0.0
    for x in reversed(report.layers[:start]):
        if x.role == "norm":
            return rate + 1.0 / NORM_GAIN_RMS
        if x.weight_rms:
            rate += 1.0 / x.weight_rms
        if x.role == "embedding":
            break
    return rate


def _inside(report: Stats, name: str) -> list[LayerStats]:
    return [x for x in report.layers if x.name.startswith(name + ".")]
