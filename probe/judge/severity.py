"""How far past its threshold a broken check is an error rather than a warning, and how far
before it a value is a near miss (the rules themselves: ``rules.py``; docs/verdicts.md, "Severity").
"""

from __future__ import annotations

from dataclasses import replace

from probe.judge.checks import Check
from probe.judge.mechanisms import DEAD_CUT
from probe.judge.rank_one import RANK_ONE
from probe.spec import GateSpec

SCALE_MARGIN = 10.0
FRACTION_MARGIN = 0.5
# error margins: how far past its threshold a value must be to be an error, not a warning
HAIR = 2.0  # scale thresholds: a factor of 2
FRACTION_ERROR = 1.5  # fraction thresholds: 1.5 x the threshold
SLOW_MARGIN = {"sgd": 2.0, "any": 1e2, "adam": 1e4}  # vanishing-type rules, by gate.optimizer
SLOW_RULES = ("vanishing", "gradient_vanishing")
# errors whenever broken: their thresholds already sit where training fails (the collapse rule's
# one direction, one-hot attention, nan, a start 3 times a constant guess's loss)
NO_MARGIN = (
    *("nonfinite", "collapse", "attention_saturation", "weight_scale", "logit_scale", "stalled", "headroom"),
    RANK_ONE.name,  # its line: half the output weight on one direction after Adam's first step (rank_one.py)
)
DEAD_ERROR = DEAD_CUT / 0.25


def error_threshold(rule: str, check: Check, gate: GateSpec) -> float:
    """The value past which a broken ``check`` is an error rather than a warning."""
    threshold = float(getattr(gate, check.key))
    if rule in NO_MARGIN:
        return threshold
    if rule == "dead_units":
        return min(1.0, threshold * DEAD_ERROR)
    if check.fraction:
        return min(1.0, threshold * FRACTION_ERROR)
    margin = SLOW_MARGIN.get(gate.optimizer, SLOW_MARGIN["any"]) if rule in SLOW_RULES else HAIR
    return threshold / margin if check.below else threshold * margin


def severity(rule: str, check: Check, gate: GateSpec, worst: float) -> str:
    limit = error_threshold(rule, check, gate)
    past = worst < limit if check.below else worst > limit
    if check.warning_only:
        return "warning"
    return "error" if past or rule in NO_MARGIN else "warning"


def loosened(gate: GateSpec) -> GateSpec:
    """The gate moved toward the healthy side by the warning margins."""
    return replace(
        gate,
        min_std=gate.min_std * SCALE_MARGIN,
        min_std_ratio=gate.min_std_ratio * SCALE_MARGIN,
        max_std=gate.max_std / SCALE_MARGIN,
        max_std_ratio=gate.max_std_ratio / SCALE_MARGIN,
        max_saturation=gate.max_saturation * FRACTION_MARGIN,
        max_dead_units=gate.max_dead_units * FRACTION_MARGIN,
        min_unit_spread=gate.min_unit_spread * SCALE_MARGIN,
        min_grad_ratio=gate.min_grad_ratio * SCALE_MARGIN,
        max_grad_ratio=gate.max_grad_ratio / SCALE_MARGIN,
        # a near miss: half the threshold (0.125 for 0.25: a third of what varies on one direction)
        max_correlation=gate.max_correlation / 2,
        # tokens: twice as far from 1 (0.96 for 0.98)
        max_token_correlation=1.0 - (1.0 - gate.max_token_correlation) * 2.0,
        min_attention_entropy=gate.min_attention_entropy / FRACTION_MARGIN,
        max_branch_ratio=gate.max_branch_ratio / 3,  # near: above 3.3 (a plain block adds ~1.4x its input)
        max_weight_scale=gate.max_weight_scale / 2,
        max_weight_turn=gate.max_weight_turn / 2,
        # a near miss: half as far above a constant guess (2 for 3)
        max_loss_ratio=1.0 + (gate.max_loss_ratio - 1.0) / 2,
        min_step_progress=gate.min_step_progress * 2,  # a near miss: under twice the pace
    )
