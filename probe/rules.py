"""Report -> Verdict: each health rule is a small pure function with its thresholds.

A rule reports the first layer that breaks it (with the measured value and the threshold) and,
in its message, the worst layer. ``layer_flags`` gives the per-cell colors the table uses: a
value breaking a rule is ``fail``; one within a margin of its threshold is ``warn`` (a factor of
10 for scale thresholds, half the threshold for fractions).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from probe.records import LayerStats, Problem, Report, Verdict
from probe.spec import RULE_NAMES, GateSpec

SCALE_MARGIN = 10.0
FRACTION_MARGIN = 0.5


@dataclass(frozen=True)
class Rule:
    name: str
    thresholds: tuple[str, ...]  # GateSpec fields it reads
    summary: str
    check: Callable[[Report, GateSpec], list[Problem]]


def _finite(x: float | None) -> bool:
    return x is not None and math.isfinite(x)


def _fmt(x: float) -> str:
    return f"{x:.3g}"


def _first_and_worst(
    rule: str,
    what: str,
    values: Iterable[tuple[LayerStats, float | None]],
    threshold: float,
    below: bool,
) -> list[Problem]:
    """One problem for the first layer whose value is below (or above) ``threshold``."""
    bad: list[tuple[LayerStats, float]] = [
        (layer, v) for layer, v in values if v is not None and math.isfinite(v) and _breaks(v, threshold, below)
    ]
    if not bad:
        return []
    first_layer, first_value = bad[0]
    worst_layer, worst_value = (min if below else max)(bad, key=lambda item: item[1])
    sign = "<" if below else ">"
    msg = f"{what} {_fmt(first_value)} {sign} {_fmt(threshold)} at {first_layer.name}"
    if len(bad) > 1 and worst_layer is not first_layer:
        msg += f" ({len(bad)} layers; worst {_fmt(worst_value)} at {worst_layer.name})"
    elif len(bad) > 1:
        msg += f" ({len(bad)} layers)"
    return [Problem(rule, first_layer.name, float(first_value), threshold, msg)]


def _breaks(value: float, threshold: float, below: bool) -> bool:
    return value < threshold if below else value > threshold


def _ratio_problem(
    rule: str, what: str, value: float | None, threshold: float, below: bool, layer: str
) -> list[Problem]:
    if not _finite(value):
        return []
    assert value is not None
    if (value < threshold) if below else (value > threshold):
        sign = "<" if below else ">"
        return [Problem(rule, layer, value, threshold, f"{what} {_fmt(value)} {sign} {_fmt(threshold)}")]
    return []


def _grad_ratios(report: Report) -> list[tuple[LayerStats, float | None]]:
    ref = report.last.grad_std
    if not _finite(ref) or not ref:
        return []
    assert ref is not None
    return [(layer, None if layer.grad_std is None else layer.grad_std / ref) for layer in report.layers]


def vanishing(report: Report, gate: GateSpec) -> list[Problem]:
    return _first_and_worst(
        "vanishing", "activation std", [(x, x.std) for x in report.layers], gate.min_std, below=True
    ) + _ratio_problem(
        "vanishing", "last/first activation std", report.std_ratio(), gate.min_std_ratio, True, report.last.name
    )


def exploding(report: Report, gate: GateSpec) -> list[Problem]:
    return _first_and_worst(
        "exploding", "activation std", [(x, x.std) for x in report.layers], gate.max_std, below=False
    ) + _ratio_problem(
        "exploding", "last/first activation std", report.std_ratio(), gate.max_std_ratio, False, report.last.name
    )


def saturation(report: Report, gate: GateSpec) -> list[Problem]:
    return _first_and_worst(
        "saturation",
        "saturated fraction",
        [(x, x.saturation_ratio) for x in report.layers],
        gate.max_saturation,
        below=False,
    )


def dead_units(report: Report, gate: GateSpec) -> list[Problem]:
    return _first_and_worst(
        "dead_units",
        "dead unit fraction",
        [(x, x.dead_units) for x in report.layers],
        gate.max_dead_units,
        below=False,
    )


def symmetry(report: Report, gate: GateSpec) -> list[Problem]:
    return _first_and_worst(
        "symmetry",
        "spread across units",
        [(x, x.unit_spread) for x in report.layers],
        gate.min_unit_spread,
        below=True,
    )


def nonfinite(report: Report, gate: GateSpec) -> list[Problem]:
    return _first_and_worst(
        "nonfinite",
        "non-finite values",
        [(x, float(x.nonfinite)) for x in report.layers],
        float(gate.max_nonfinite),
        below=False,
    )


def gradient_vanishing(report: Report, gate: GateSpec) -> list[Problem]:
    return _first_and_worst(
        "gradient_vanishing", "grad std / output grad std", _grad_ratios(report), gate.min_grad_ratio, below=True
    )


def gradient_exploding(report: Report, gate: GateSpec) -> list[Problem]:
    return _first_and_worst(
        "gradient_exploding", "grad std / output grad std", _grad_ratios(report), gate.max_grad_ratio, below=False
    )


RULES: dict[str, Rule] = {
    r.name: r
    for r in [
        Rule("vanishing", ("min_std", "min_std_ratio"), "the forward signal fades with depth", vanishing),
        Rule("exploding", ("max_std", "max_std_ratio"), "the forward signal grows with depth", exploding),
        Rule("saturation", ("max_saturation",), "activations sit on a flat tail", saturation),
        Rule("dead_units", ("max_dead_units",), "units output 0 for every sample", dead_units),
        Rule("symmetry", ("min_unit_spread",), "all units compute the same value", symmetry),
        Rule("nonfinite", ("max_nonfinite",), "nan or inf values", nonfinite),
        Rule("gradient_vanishing", ("min_grad_ratio",), "gradients fade toward the input", gradient_vanishing),
        Rule("gradient_exploding", ("max_grad_ratio",), "gradients grow toward the input", gradient_exploding),
    ]
}
assert tuple(RULES) == RULE_NAMES, "spec.RULE_NAMES and rules.RULES must agree"


def evaluate(report: Report, gate: GateSpec | None = None) -> Verdict:
    """Apply every enabled rule; healthy when none breaks. Warnings are near misses."""
    gate = gate or report.spec.gate
    problems: list[Problem] = []
    for rule in RULES.values():
        if rule.name not in gate.disable:
            problems.extend(rule.check(report, gate))
    warned = _near_misses(report, gate, {p.rule for p in problems})
    return Verdict(healthy=not problems, problems=tuple(problems), warnings=tuple(warned))


def _near_misses(report: Report, gate: GateSpec, failed: set[str]) -> list[Problem]:
    loose = _loosened(gate)
    out: list[Problem] = []
    for rule in RULES.values():
        if rule.name in gate.disable or rule.name in failed or rule.name == "nonfinite":
            continue
        for p in rule.check(report, loose):
            key = next(k for k in rule.thresholds if getattr(loose, k) == p.threshold)
            real = float(getattr(gate, key))
            message = f"{_fmt(p.value)} at {p.layer} is near the {key} threshold {_fmt(real)}"
            out.append(Problem(p.rule, p.layer, p.value, real, message))
    return out


def _loosened(gate: GateSpec) -> GateSpec:
    from dataclasses import replace

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
    )


# Which LayerStats field each rule judges, for coloring table cells.
_CELL_RULES: dict[str, tuple[str, ...]] = {
    "std": ("vanishing", "exploding"),
    "saturation_ratio": ("saturation",),
    "dead_units": ("dead_units",),
    "unit_spread": ("symmetry",),
    "nonfinite": ("nonfinite",),
    "grad_std": ("gradient_vanishing", "gradient_exploding"),
}


def layer_flags(report: Report, verdict: Verdict) -> dict[str, dict[str, str]]:
    """``{layer name: {field: "fail" | "warn"}}`` for every cell a rule (nearly) breaks."""
    flags: dict[str, dict[str, str]] = {}
    gate = report.spec.gate
    levels = [("warn", _loosened(gate)), ("fail", gate)]
    for level, g in levels:
        for field_name, rule_names in _CELL_RULES.items():
            for rule_name in rule_names:
                if rule_name in gate.disable:
                    continue
                for layer in _offending_layers(report, g, rule_name):
                    flags.setdefault(layer, {})[field_name] = level
    return flags


def _offending_layers(report: Report, gate: GateSpec, rule: str) -> list[str]:
    """Every layer whose own value breaks ``rule`` (not only the first one reported)."""
    checks: dict[str, Callable[[LayerStats], bool]] = {
        "vanishing": lambda x: _finite(x.std) and x.std < gate.min_std,
        "exploding": lambda x: _finite(x.std) and x.std > gate.max_std,
        "saturation": lambda x: _finite(x.saturation_ratio) and x.saturation_ratio > gate.max_saturation,  # type: ignore[operator]
        "dead_units": lambda x: x.dead_units > gate.max_dead_units,
        "symmetry": lambda x: _finite(x.unit_spread) and x.unit_spread < gate.min_unit_spread,  # type: ignore[operator]
        "nonfinite": lambda x: x.nonfinite > gate.max_nonfinite,
    }
    if rule in checks:
        return [x.name for x in report.layers if checks[rule](x)]
    below = rule == "gradient_vanishing"
    threshold = gate.min_grad_ratio if below else gate.max_grad_ratio
    return [
        x.name
        for x, v in _grad_ratios(report)
        if _finite(v) and ((v < threshold) if below else (v > threshold))  # type: ignore[operator]
    ]
