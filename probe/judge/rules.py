"""Stats -> Verdict: each health rule is a name and one or two declarative threshold checks.

A rule reports the first layer that breaks it (with the measured value and the threshold) and,
in its message, the worst layer. The verdict's ``flags`` give the per-cell colors the table uses: a
value breaking a rule is ``fail``; one within a margin of its threshold is ``warn`` (a factor of
10 for scale thresholds, half the threshold for fractions).

Each check reads the rows whose role it judges (probe/model/roles.py; the values it reads:
``probe.judge.readings``): vanishing, exploding and the gradient rules the signal path (``stream``
rows and the network output); symmetry and dead_units layers of units (not lookup tables);
saturation and nonfinite every row; weight_scale one value for the network, from the weights that
feed a normalization; collapse the signal path's rows of 64 units or more; logit_scale the
network output, when a linear map made it.

Severity (docs/verdicts.md has the training evidence): a broken threshold is an ``error`` when
the worst value is past it by more than the rule's margin, else a ``warning``. Margins are a
factor of 2 for scales ("a hair" past), 1.5x the threshold for fractions, and for the rules of
what Adam absorbs and SGD suffers (vanishing, gradient_vanishing) 2 decades, tightened to a
factor of 2 by ``gate.optimizer: sgd`` and relaxed to 4 decades by ``adam``; dead_units is an
error from ``DEAD_ERROR`` times its threshold (a layer cut, not narrowed). Non-finite values are
always errors. The gate fails on errors (``gate.fail_on: warning``: on warnings too).

What a mechanism explains (``explained``) is not judged or is at most a warning: rows behind a
zero-initialized or small layer that the first steps move (``movers``: vanishing and
gradient_vanishing), weights whose gradient that layer blocks at step 0 (symmetry), dead units
inside a residual block's branch or gate (dead_units). Issue 18; docs/verdicts.md.
"""

from __future__ import annotations

import math

from probe.judge.checks import Check, Row, Rule
from probe.judge.gradients import detached_rows, unregistered_majority, unregistered_rows
from probe.judge.headroom import HEADROOM
from probe.judge.logits import probability_output, quick_loss_ratio, slow_loss_ratio
from probe.judge.mechanisms import explained, identity_blocks, nan_statistics, zero_layers
from probe.judge.mechanisms import fmt as _fmt
from probe.judge.rank_one import RANK_ONE
from probe.judge.readings import (
    TURN_STEPS,
    adam_turn,
    attention_entropy,
    field,
    grads,
    hidden,
    hidden_unit_rows,
    input_free,
    normalized_scale,
    output_dead_units,
    peaked,
    read_sample_std,
    read_std,
    signal_rows,
    std_ratio,
    tied,
    zero_products,
)
from probe.judge.severity import NO_MARGIN, loosened, severity
from probe.judge.shrink import SHRINK_BUDGET
from probe.judge.stalled import slow_start, step_progress
from probe.records import Problem, Stats, Verdict
from probe.spec import RULE_NAMES, GateSpec


def _breaking(check: Check, report: Stats, gate: GateSpec) -> list[tuple[Row, float]]:
    """The (layer, value) pairs that break ``check`` under ``gate``, in layer order."""
    threshold = float(getattr(gate, check.key))
    return [
        (layer, v)
        for layer, v in check.values(report)
        # nan says nothing (the nonfinite rule reports it); inf is a real overflow: std > max_std
        if v is not None and not math.isnan(v) and (v < threshold if check.below else v > threshold)
    ]


def _problem(rule: str, check: Check, report: Stats, gate: GateSpec) -> Problem | None:
    """One problem for the first layer that breaks ``check``; the message names the worst too.
    Rows ``explained`` sets aside (exactly 0 behind a zero-initialized layer that moves) are not
    judged; the rows it explains as slower, not stuck, are at most a warning, so the others decide
    whether the problem is an error."""
    skip, capped, why = slow_start(report, gate) if rule == "stalled" else explained(rule, report, gate)
    bad = [(layer, v) for layer, v in _breaking(check, report, gate) if layer.name not in skip]
    if not bad:
        return None
    threshold = float(getattr(gate, check.key))
    first_layer, first_value = bad[0]
    worst_layer, worst_value = (min if check.below else max)(bad, key=lambda item: item[1])
    sign = "<" if check.below else ">"
    msg = f"{check.what} {_fmt(first_value)} {sign} {_fmt(threshold)} at {first_layer.name}"
    if len(bad) > 1 and worst_layer is not first_layer:
        msg += f" ({len(bad)} layers; worst {_fmt(worst_value)} at {worst_layer.name})"
    elif len(bad) > 1:
        msg += f" ({len(bad)} layers)"
    level = severity(rule, check, gate, float(worst_value))
    if level == "error" and (rule not in NO_MARGIN or rule == "stalled") and capped:
        # the rows it explains are at most a warning: the rest decide (none left: a warning)
        rest = [v for x, v in bad if x.name not in capped]
        if not rest or severity(rule, check, gate, float((min if check.below else max)(rest))) != "error":
            level, msg = "warning", f"{msg}; {why}"
    return Problem(rule, first_layer.name, float(first_value), threshold, msg, check.key, level)


_GRAD = "gradient / output gradient"  # grad_scale ratio (a spec MLP: grad std ratio)
_SAMPLE = "std of what varies between samples"  # vanishing's second reading (readings.read_sample_std)
_DEAD_OUT = "dead output units (outputs that never change)"
_SECOND = {"vanishing": _SAMPLE}
_HELD = (
    "gradient the optimizer applies to weights held outside model.parameters() (a plain list, dict or tensor attribute)"
)

RULES: dict[str, Rule] = {
    r.name: r
    for r in [
        Rule(
            "vanishing",
            "the forward signal fades with depth",
            (
                Check("min_std", "activation std", read_std, below=True, cell="std"),
                # the part that carries the input: biases the same for every sample hide its fading
                Check("min_std", _SAMPLE, read_sample_std, below=True, near=False),
                Check("min_std_ratio", "last/first activation std", std_ratio, below=True),
            ),
        ),
        Rule(
            "exploding",
            "the forward signal grows with depth",
            (
                Check("max_std", "activation std", field("std", signal_rows), below=False, cell="std"),
                Check("max_std_ratio", "last/first activation std", std_ratio, below=False),
                # a branch that overwrites its stream at init is unusual, not a failure by itself: a
                # pre- or post-norm block over a N(0, 0.02) embedding adds 30-3000 times its input
                # and trains (GLM-4, XLNet, RWKV, OpenAI GPT); what makes N(0, 1) blocks fail is
                # judged where it happens (the stream's std, saturated attention, the logits' scale)
                Check(
                    "max_branch_ratio", "branch / block input", field("branch_ratio"), below=False, warning_only=True
                ),
            ),
        ),
        Rule(
            "saturation",
            "activations sit on a flat tail",
            (
                Check(
                    "max_saturation", "saturated fraction", field("saturation_ratio"), False, "saturation_ratio", True
                ),
            ),
        ),
        Rule(
            "dead_units",
            "units output 0 and receive no gradient for every sample",
            (
                Check(
                    "max_dead_units",
                    "dead unit fraction",
                    field("dead_units", hidden_unit_rows),
                    False,
                    "dead_units",
                    True,
                ),
                Check(
                    "max_dead_units",
                    _DEAD_OUT,
                    output_dead_units,
                    False,
                    "dead_units",
                    True,
                ),
                # the units inside a row's own factors (LoRA's A and B, both 0): no gradient reaches them
                Check(
                    "max_dead_units",
                    "parameters all exactly 0 with gradients exactly 0 (each a product with another)",
                    zero_products,
                    False,
                    "dead_units",
                    True,
                ),
            ),
        ),
        Rule(
            "symmetry",
            "units with the same weights and gradients (no step can tell them apart)",
            (Check("min_unit_spread", "spread across units", tied, True, "unit_spread"),),
        ),
        Rule(
            "nonfinite",
            "nan or inf values (forward or backward)",
            (
                Check("max_nonfinite", "non-finite values", field("nonfinite"), False, "nonfinite"),
                Check("max_nonfinite", "non-finite gradient values", field("grad_nonfinite"), False, "grad_std"),
            ),
        ),
        Rule(
            "gradient_vanishing",
            "gradients fade toward the input",
            (
                Check("min_grad_ratio", _GRAD, grads(least=True), below=True, cell="grad_std"),
                # parameters that want a gradient and get none (torch.no_grad, .detach(), a reentrant
                # checkpoint on inputs without one): they never move, the rest trains without them
                Check(
                    "min_grad_ratio",
                    "gradient reaching parameters that require one (none: detached from the loss)",
                    detached_rows,
                    below=True,
                    warning_only=True,
                ),
                # weights held outside model.parameters() (a plain list of layers): no optimizer over
                # it moves them; an error where they are most of the weights (the rest reads random features)
                Check("min_grad_ratio", _HELD + ", most of the weights", unregistered_majority, below=True),
                Check("min_grad_ratio", _HELD, unregistered_rows, below=True, warning_only=True),
            ),
        ),
        Rule(
            "gradient_exploding",
            "gradients grow toward the input",
            (Check("max_grad_ratio", _GRAD, grads(least=False, coherent=True), below=False, cell="grad_std"),),
        ),
        Rule(
            "collapse",
            "what varies between inputs lies along one direction",
            (
                Check(
                    "max_correlation",
                    "centered squared cosine between samples",
                    hidden("correlation"),
                    False,
                    "correlation",
                ),
                Check(
                    "max_token_correlation",
                    "centered squared cosine between a sequence's tokens",
                    hidden("token_correlation"),
                    False,
                    "token_correlation",
                ),
                Check("max_correlation", "every row the same for every sample (input reaches none)", input_free, False),
            ),
        ),
        Rule(
            "attention_saturation",
            "attention is near one-hot at init",
            (
                Check(
                    "min_attention_entropy", "attention entropy / log(keys) of the least peaked module", peaked, True
                ),
                # one saturated module among others that learn: its routing stays near init, slower
                Check(
                    "min_attention_entropy", "attention entropy / log(keys)", attention_entropy, True, "", False, True
                ),
            ),
        ),
        Rule(
            "weight_scale",
            "weights too large for the optimizer's steps to move",
            (
                Check(
                    "max_weight_scale",
                    "normalized weight scale / He's (median over the weights)",
                    normalized_scale,
                    below=False,
                ),
                Check(
                    "max_weight_turn",
                    f"weight rms / (lr x {TURN_STEPS} steps) (median over the weights)",
                    adam_turn,
                    below=False,
                ),
            ),
        ),
        Rule(
            "logit_scale",
            "the output's logits start far from a constant guess",
            (
                Check("max_loss_ratio", "starting cross-entropy / log(classes)", slow_loss_ratio, below=False),
                # logits the layers below can shrink within SHRINK_BUDGET steps: a slower start, not stuck
                Check(
                    "max_loss_ratio",
                    f"starting cross-entropy / log(classes) (shrinking, or a shared offset removed, within {SHRINK_BUDGET:g} steps)",
                    quick_loss_ratio,
                    below=False,
                    warning_only=True,
                ),
            ),
        ),
        Rule(
            "stalled",
            "the first optimizer steps barely move the output",
            (Check("min_step_progress", "share of the target distance closed per step", step_progress, below=True),),
        ),
        HEADROOM,
        RANK_ONE,
    ]
}
assert tuple(RULES) == RULE_NAMES, "spec.RULE_NAMES and rules.RULES must agree"


def _graver(broken: list[Problem]) -> list[Problem]:
    """A rule's second reading of one mechanism (``_SECOND``: what varies between samples under the
    std) only where graver than its first's."""
    rank = {"warning": 1, "error": 2}
    second = [p for p in broken if p.rule in _SECOND and _SECOND[p.rule] in p.message]
    first = {r: max((rank[p.severity] for p in broken if p.rule == r and p not in second), default=0) for r in _SECOND}
    return [p for p in broken if p not in second or rank[p.severity] > first[p.rule]]


def _enabled(gate: GateSpec) -> list[Rule]:
    return [r for r in RULES.values() if r.name not in gate.disable]


def evaluate(report: Stats, gate: GateSpec | None = None) -> Verdict:
    """Apply every enabled rule. ``problems``: what fails the gate (errors, and warnings under
    ``gate.fail_on: warning``); ``warnings``: the other broken thresholds and the near misses;
    ``notes``: identity blocks, zero layers that move, an output of probabilities. Healthy when
    nothing fails."""
    gate = gate or report.spec.gate
    broken = [p for r in _enabled(gate) for c in r.checks if (p := _problem(r.name, c, report, gate))]
    if all(p.rule != "nonfinite" for p in broken) and (floor := nan_statistics(report, gate)) is not None:
        broken.append(floor)  # nan statistics fail whatever max_nonfinite says
    broken = _graver(broken)
    fails = ("error", "warning") if gate.fail_on == "warning" else ("error",)
    problems = [p for p in broken if p.severity in fails]
    warnings = [p for p in broken if p.severity not in fails]
    failed = {p.rule for p in broken}
    loose = loosened(gate)
    for rule in _enabled(gate):
        if rule.name in failed or rule.name == "nonfinite":
            continue
        for check in rule.checks:
            if not check.near:
                continue
            near = _problem(rule.name, check, report, loose)
            if near is not None:
                real = float(getattr(gate, check.key))
                message = f"{_fmt(near.value)} at {near.layer} is near the {check.key} threshold {_fmt(real)}"
                warnings.append(Problem(rule.name, near.layer, near.value, real, message, check.key, "warning"))
    return Verdict(
        healthy=not problems,
        problems=tuple(problems),
        warnings=tuple(warnings),
        notes=identity_blocks(report) + zero_layers(report) + probability_output(report),
        flags=_cell_flags(report, gate),
    )


def _cell_flags(report: Stats, gate: GateSpec) -> tuple[tuple[str, str, str], ...]:
    """(layer, field, "fail" | "warn") for every table cell a rule (nearly) breaks under ``gate``
    (a cell failing and near-missing is "fail")."""
    flags: dict[tuple[str, str], str] = {}
    for level, g in (("warn", loosened(gate)), ("fail", gate)):
        for rule in _enabled(gate):
            for check in rule.checks:
                if check.cell:
                    for layer, _ in _breaking(check, report, g):
                        flags[(layer.name, check.cell)] = level
    return tuple((name, cell, level) for (name, cell), level in flags.items())
