"""Report -> Verdict: each health rule is a name and one or two declarative threshold checks.

A rule reports the first layer that breaks it (with the measured value and the threshold) and,
in its message, the worst layer. ``layer_flags`` gives the per-cell colors the table uses: a
value breaking a rule is ``fail``; one within a margin of its threshold is ``warn`` (a factor of
10 for scale thresholds, half the threshold for fractions).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Protocol

from probe.records import Problem, Report, Verdict
from probe.spec import RULE_NAMES, GateSpec

SCALE_MARGIN = 10.0
FRACTION_MARGIN = 0.5


class Row(Protocol):
    """What a check judges: a layer's statistics, or a module's attention (``AttentionStats``)."""

    @property
    def name(self) -> str: ...


Values = Callable[[Report], "list[tuple[Row, float | None]]"]


@dataclass(frozen=True)
class Check:
    """One threshold of a rule: the per-layer values it reads, the gate key, and the direction.

    A check without ``cell`` judges one value for the whole network (the last/first std ratio,
    reported at the last layer) and colors no table cell.
    """

    key: str  # GateSpec field holding the threshold
    what: str  # how the value reads in a message
    values: Values
    below: bool  # the rule breaks when a value is below the threshold (else above)
    cell: str = ""  # the LayerStats field a broken value colors in the table


@dataclass(frozen=True)
class Rule:
    name: str
    summary: str
    checks: tuple[Check, ...]

    @property
    def thresholds(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(c.key for c in self.checks))  # collapse checks two values against one key


def _fmt(x: float) -> str:
    return f"{x:.3g}"


def _breaking(check: Check, report: Report, gate: GateSpec) -> list[tuple[Row, float]]:
    """The (layer, value) pairs that break ``check`` under ``gate``, in layer order."""
    threshold = float(getattr(gate, check.key))
    return [
        (layer, v)
        for layer, v in check.values(report)
        # nan says nothing (the nonfinite rule reports it); inf is a real overflow: std > max_std
        if v is not None and not math.isnan(v) and (v < threshold if check.below else v > threshold)
    ]


def _problem(rule: str, check: Check, report: Report, gate: GateSpec) -> Problem | None:
    """One problem for the first layer that breaks ``check``; the message names the worst too."""
    bad = _breaking(check, report, gate)
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
    return Problem(rule, first_layer.name, float(first_value), threshold, msg, check.key)


# ---- the values each check reads ---------------------------------------------------------------


def _field(name: str) -> Values:
    def values(report: Report) -> list[tuple[Row, float | None]]:
        return [(x, None if getattr(x, name) is None else float(getattr(x, name))) for x in report.layers]

    return values


def _attention_entropy(report: Report) -> list[tuple[Row, float | None]]:
    return [(a, a.entropy) for a in report.attention]


def _hidden(name: str) -> Values:
    """A field of the hidden rows that carry the signal. Not judged, only shown: a linear head's
    output, which inherits the mean of its input features (positive ReLU features, pooled maps) as
    a shared offset per unit that its bias absorbs on the first steps (the seed's CNN head reads
    0.993 at init and trains); and embedding tables, whose rows depend on the ids alone (BERT's
    token-type embedding is the same vector for every token of one segment)."""

    def values(report: Report) -> list[tuple[Row, float | None]]:
        return [(x, getattr(x, name)) for x in report.layers if x.kind != "output" and x.module_type != "Embedding"]

    return values


def _std_ratio(report: Report) -> list[tuple[Row, float | None]]:
    return [(report.last, report.std_ratio())]


def _grad_ratios(report: Report) -> list[tuple[Row, float | None]]:
    """Each layer's gradient std relative to the output layer's (which has unit scale)."""
    ref = report.last.grad_std
    if ref is None or not math.isfinite(ref) or ref == 0:
        return []
    return [(layer, None if layer.grad_std is None else layer.grad_std / ref) for layer in report.layers]


_GRAD = "grad std / output grad std"

RULES: dict[str, Rule] = {
    r.name: r
    for r in [
        Rule(
            "vanishing",
            "the forward signal fades with depth",
            (
                Check("min_std", "activation std", _field("std"), below=True, cell="std"),
                Check("min_std_ratio", "last/first activation std", _std_ratio, below=True),
            ),
        ),
        Rule(
            "exploding",
            "the forward signal grows with depth",
            (
                Check("max_std", "activation std", _field("std"), below=False, cell="std"),
                Check("max_std_ratio", "last/first activation std", _std_ratio, below=False),
            ),
        ),
        Rule(
            "saturation",
            "activations sit on a flat tail",
            (Check("max_saturation", "saturated fraction", _field("saturation_ratio"), False, "saturation_ratio"),),
        ),
        Rule(
            "dead_units",
            "units output 0 for every sample",
            (Check("max_dead_units", "dead unit fraction", _field("dead_units"), False, "dead_units"),),
        ),
        Rule(
            "symmetry",
            "all units compute the same value",
            (Check("min_unit_spread", "spread across units", _field("unit_spread"), True, "unit_spread"),),
        ),
        Rule(
            "nonfinite",
            "nan or inf values (forward or backward)",
            (
                Check("max_nonfinite", "non-finite values", _field("nonfinite"), False, "nonfinite"),
                Check("max_nonfinite", "non-finite gradient values", _field("grad_nonfinite"), False, "grad_std"),
            ),
        ),
        Rule(
            "gradient_vanishing",
            "gradients fade toward the input",
            (Check("min_grad_ratio", _GRAD, _grad_ratios, below=True, cell="grad_std"),),
        ),
        Rule(
            "gradient_exploding",
            "gradients grow toward the input",
            (Check("max_grad_ratio", _GRAD, _grad_ratios, below=False, cell="grad_std"),),
        ),
        Rule(
            "collapse",
            "every input maps to the same direction",
            (
                Check("max_correlation", "cosine between samples", _hidden("correlation"), False, "correlation"),
                Check(
                    "max_correlation",
                    "cosine between a sequence's tokens",
                    _hidden("token_correlation"),
                    False,
                    "token_correlation",
                ),
            ),
        ),
        Rule(
            "attention_saturation",
            "attention is near one-hot at init",
            (Check("min_attention_entropy", "attention entropy / log(keys)", _attention_entropy, below=True),),
        ),
    ]
}
assert tuple(RULES) == RULE_NAMES, "spec.RULE_NAMES and rules.RULES must agree"


def _enabled(gate: GateSpec) -> list[Rule]:
    return [r for r in RULES.values() if r.name not in gate.disable]


def evaluate(report: Report, gate: GateSpec | None = None) -> Verdict:
    """Apply every enabled rule; healthy when none breaks. Warnings are near misses."""
    gate = gate or report.spec.gate
    problems = [p for r in _enabled(gate) for c in r.checks if (p := _problem(r.name, c, report, gate))]
    failed = {p.rule for p in problems}
    loose = _loosened(gate)
    warnings = []
    for rule in _enabled(gate):
        if rule.name in failed or rule.name == "nonfinite":
            continue
        for check in rule.checks:
            near = _problem(rule.name, check, report, loose)
            if near is not None:
                real = float(getattr(gate, check.key))
                message = f"{_fmt(near.value)} at {near.layer} is near the {check.key} threshold {_fmt(real)}"
                warnings.append(Problem(rule.name, near.layer, near.value, real, message, check.key))
    return Verdict(healthy=not problems, problems=tuple(problems), warnings=tuple(warnings))


def _loosened(gate: GateSpec) -> GateSpec:
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
        # a near miss: twice as far from 1 as the threshold (0.96 for 0.98)
        max_correlation=1.0 - (1.0 - gate.max_correlation) * 2.0,
        min_attention_entropy=gate.min_attention_entropy / FRACTION_MARGIN,
    )


def layer_flags(report: Report, verdict: Verdict | None = None) -> dict[str, dict[str, str]]:
    """``{layer name: {field: "fail" | "warn"}}`` for every table cell a rule (nearly) breaks."""
    gate = report.spec.gate
    flags: dict[str, dict[str, str]] = {}
    for level, g in (("warn", _loosened(gate)), ("fail", gate)):
        for rule in _enabled(gate):
            for check in rule.checks:
                if check.cell:
                    for layer, _ in _breaking(check, report, g):
                        flags.setdefault(layer.name, {})[check.cell] = level
    return flags
