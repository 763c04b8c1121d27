"""Each health rule fires on a report that breaks it, and stays quiet on a healthy one."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from probe import spec as spec_mod
from probe.judge import rules
from probe.records import LayerStats, Stats


def _layer(i: int, **changes: Any) -> LayerStats:
    base = LayerStats(
        name=f"layer{i}",
        index=i,
        kind="hidden",
        units=16,
        count=1600,
        mean=0.5,
        std=0.8,
        zero_ratio=0.5,
        dead_units=0.0,
        saturation_ratio=0.0,
        nonfinite=0,
        unit_spread=1.0,
        grad_std=1.0,
        weight_grad_norm=10.0,
        weight_grad_std=0.1,
        grad_scale=1.0,
    )
    return replace(base, **changes)


def _report(layers: list[LayerStats], gate: dict[str, Any] | None = None) -> Stats:
    spec = spec_mod.parse({"gate": gate or {}})
    return Stats(spec, tuple(layers), "cpu", "float32", "test", 0.0)


HEALTHY = [_layer(i) for i in range(1, 5)]


def test_a_healthy_report_breaks_no_rule() -> None:
    verdict = rules.evaluate(_report(HEALTHY))
    assert verdict.healthy and not verdict.problems and not verdict.warnings


# (rule, change to layer 3 that breaks it past its error margin)
BREAKS: list[tuple[str, dict[str, Any]]] = [
    ("vanishing", {"std": 1e-5}),
    ("exploding", {"std": 1e3}),
    ("saturation", {"saturation_ratio": 0.8}),
    ("dead_units", {"dead_units": 0.95}),  # an error from mechanisms.DEAD_CUT (0.9) on: the path is cut
    ("symmetry", {"unit_spread": 0.0}),
    ("nonfinite", {"nonfinite": 3}),
    ("gradient_vanishing", {"grad_scale": 1e-5}),
    ("gradient_exploding", {"grad_scale": 1e4}),
]
# (rule, change to layer 3 a hair past its threshold: a warning, not a failure)
HAIRS: list[tuple[str, dict[str, Any]]] = [
    ("vanishing", {"std": 0.0098}),
    ("exploding", {"std": 101.0}),
    ("saturation", {"saturation_ratio": 0.26}),
    ("dead_units", {"dead_units": 0.26}),
    ("symmetry", {"unit_spread": 0.00099}),
    ("gradient_vanishing", {"grad_scale": 0.0098}),
    ("gradient_exploding", {"grad_scale": 101.0}),
]


@pytest.mark.parametrize(("rule", "change"), BREAKS, ids=[b[0] for b in BREAKS])
def test_each_rule_fires_at_the_breaking_layer(rule: str, change: dict[str, Any]) -> None:
    layers = list(HEALTHY)
    layers[2] = _layer(3, **change)
    if rule == "gradient_vanishing":  # no row before it receives more (else it is a side row, below)
        layers[:2] = [_layer(i, grad_scale=None) for i in (1, 2)]
    verdict = rules.evaluate(_report(layers))
    assert not verdict.healthy
    hits = [p for p in verdict.problems if p.rule == rule]
    assert hits, verdict.problems
    assert hits[0].layer == "layer3"
    assert hits[0].severity == "error"
    # gradient rules divide by the output layer's grad scale, which is 1.0 here
    assert hits[0].value == pytest.approx(float(next(iter(change.values()))))


def test_a_small_gradient_after_a_row_that_receives_one_is_a_side_row_warning() -> None:
    # layers 1-2 receive the output's gradient, layer 3 1e-5 of it: not a gradient fading toward
    # the input (that reads smallest at the first rows) but layer 3's own small effect on the loss
    layers = list(HEALTHY)
    layers[2] = _layer(3, grad_scale=1e-5)
    verdict = rules.evaluate(_report(layers))
    assert verdict.healthy, verdict.problems
    (hit,) = [w for w in verdict.warnings if w.rule == "gradient_vanishing"]
    assert (hit.layer, hit.severity) == ("layer3", "warning")
    # the first row breaking is never a side row: a fade from the input stays an error
    layers[0] = _layer(1, grad_scale=1e-5)
    assert "gradient_vanishing" in {p.rule for p in rules.evaluate(_report(layers)).problems}


@pytest.mark.parametrize(("rule", "change"), HAIRS, ids=[h[0] for h in HAIRS])
def test_a_hair_past_a_threshold_is_a_warning(rule: str, change: dict[str, Any]) -> None:
    layers = list(HEALTHY)
    layers[2] = _layer(3, **change)
    verdict = rules.evaluate(_report(layers))
    assert verdict.healthy, verdict.problems
    (hit,) = [w for w in verdict.warnings if w.rule == rule and "near" not in w.message]
    assert (hit.layer, hit.severity) == ("layer3", "warning")
    # gate.fail_on: warning makes the same report fail
    strict = rules.evaluate(_report(layers, {"fail_on": "warning"}))
    assert not strict.healthy and rule in {p.rule for p in strict.problems}


@pytest.mark.parametrize(
    ("optimizer", "ratio", "severity"),
    [
        # last/first std 1.2e-3: PyTorch's default init at depth 8 (trains under Adam, slowly under SGD)
        ("any", 1.2e-3, "warning"),
        ("adam", 1.2e-3, "warning"),
        ("sgd", 1.2e-3, "error"),
        # 1e-5: more than 2 decades past 1e-2 is an error without a hint, not under Adam's 4 decades
        ("any", 1e-5, "error"),
        ("adam", 1e-5, "warning"),
        # 1e-8 (tiny + ReLU at depth 8, which never trained): an error whatever the optimizer
        ("adam", 1e-8, "error"),
    ],
)
def test_the_optimizer_hint_moves_the_vanishing_margin(optimizer: str, ratio: float, severity: str) -> None:
    layers = [_layer(1, std=1.0), _layer(2, std=0.5), _layer(3, std=ratio)]
    verdict = rules.evaluate(_report(layers, {"optimizer": optimizer, "min_std": 0.0}))
    (hit,) = [p for p in (*verdict.problems, *verdict.warnings) if p.rule == "vanishing" and "last/first" in p.message]
    assert hit.severity == severity
    assert verdict.healthy == (severity == "warning")


def test_vanishing_judges_the_signal_path_not_branches() -> None:
    layers = [_layer(1), _layer(2, std=1e-6, role="branch"), _layer(3), _layer(4, role="head")]
    verdict = rules.evaluate(_report(layers))
    assert verdict.healthy and not verdict.warnings
    # the same value on the stream is an error
    layers[1] = _layer(2, std=1e-6)
    assert "vanishing" in {p.rule for p in rules.evaluate(_report(layers)).problems}


def test_tables_are_not_layers_of_units() -> None:
    layers = [_layer(1, unit_spread=0.0, dead_units=1.0, role="embedding"), *HEALTHY[1:]]
    assert rules.evaluate(_report(layers)).healthy


def test_an_identity_block_is_a_note() -> None:
    layers = [_layer(1), _layer(2, branch_ratio=1e-6), _layer(3, branch_ratio=0.5), _layer(4, role="head")]
    verdict = rules.evaluate(_report(layers))
    assert verdict.healthy
    (note,) = verdict.notes
    assert (note.rule, note.layer, note.severity) == ("identity_block", "layer2", "note")
    assert rules.evaluate(_report(HEALTHY)).notes == ()


@pytest.mark.parametrize(("rule", "change"), BREAKS, ids=[b[0] for b in BREAKS])
def test_a_disabled_rule_does_not_fire(rule: str, change: dict[str, Any]) -> None:
    layers = list(HEALTHY)
    layers[2] = _layer(3, **change)
    verdict = rules.evaluate(_report(layers, {"disable": [rule]}))
    assert rule not in {p.rule for p in verdict.problems}


def test_thresholds_come_from_the_gate() -> None:
    layers = [_layer(1, std=1.0), _layer(2, std=0.05)]
    assert "vanishing" not in {p.rule for p in rules.evaluate(_report(layers)).problems}
    strict = rules.evaluate(_report(layers, {"min_std": 0.1, "fail_on": "warning"}))
    (problem,) = [p for p in strict.problems if p.rule == "vanishing"]
    assert (problem.layer, problem.value, problem.threshold) == ("layer2", 0.05, 0.1)


def test_last_over_first_ratio_is_a_vanishing_problem() -> None:
    layers = [_layer(1, std=5.0), _layer(2, std=0.5), _layer(3, std=0.02)]
    verdict = rules.evaluate(_report(layers, {"fail_on": "warning"}))
    problems = [p for p in verdict.problems if p.rule == "vanishing"]
    assert [p.layer for p in problems] == ["layer3"]
    assert problems[0].value == pytest.approx(0.02 / 5.0)
    assert "last/first" in problems[0].message


def test_gradient_ratio_is_relative_to_the_output_layer() -> None:
    # every gradient is tiny in absolute terms but the same as the output's: nothing vanished
    layers = [_layer(i, grad_std=1e-6, grad_scale=1e-6) for i in range(1, 4)]
    assert rules.evaluate(_report(layers)).healthy


def test_message_names_first_and_worst_layers() -> None:
    layers = [_layer(1), _layer(2, std=5e-3), _layer(3, std=1e-6), _layer(4, std=1e-3)]
    (problem,) = [
        p for p in rules.evaluate(_report(layers)).problems if p.rule == "vanishing" and "last" not in p.message
    ]
    assert problem.layer == "layer2"
    assert "3 layers" in problem.message and "worst 1e-06 at layer3" in problem.message


def test_nan_statistics_do_not_trigger_scale_rules() -> None:
    layers = [_layer(1), _layer(2, std=float("nan"), nonfinite=100)]
    found = {p.rule for p in rules.evaluate(_report(layers)).problems}
    assert found == {"nonfinite"}


def test_an_overflowing_std_is_exploding() -> None:
    # float32 values near 1e20 are finite but their squares overflow: std = inf, nonfinite = 0
    layers = [_layer(1), _layer(2, std=float("inf"))]
    found = {p.rule for p in rules.evaluate(_report(layers)).problems}
    assert found == {"exploding"}


def test_near_misses_are_warnings_not_problems() -> None:
    layers = [_layer(1), _layer(2, std=0.05)]  # within 10x of min_std = 0.01
    verdict = rules.evaluate(_report(layers))
    assert verdict.healthy
    assert "vanishing" in {w.rule for w in verdict.warnings}
    assert verdict.cell_flags() == {"layer2": {"std": "warn"}}


def test_layer_flags_mark_failing_cells() -> None:
    layers = [_layer(1), _layer(2, saturation_ratio=0.9)]
    report = _report(layers)
    flags = rules.evaluate(report).cell_flags()
    assert flags["layer2"]["saturation_ratio"] == "fail"


def test_cell_flags_follow_the_gate_the_verdict_was_evaluated_with() -> None:
    """A verdict under another gate than the spec's colors the cells by that gate: the renderer
    reads the verdict's flags and does not re-judge with the spec's gate."""
    from dataclasses import replace

    from probe.render.run_view import run_doc

    layers = [_layer(1), _layer(2, saturation_ratio=0.9)]
    report = _report(layers)
    loose = replace(report.spec.gate, max_saturation=0.95)
    verdict = rules.evaluate(report, loose)
    assert verdict.healthy and verdict.cell_flags() == {"layer2": {"saturation_ratio": "warn"}}
    styles = {cell.style for row in run_doc(report, verdict).tables[0].rows for cell in row}
    strict = {cell.style for row in run_doc(report, rules.evaluate(report)).tables[0].rows for cell in row}
    assert styles != strict and "bold red" in strict and "bold red" not in styles
    assert rules.evaluate(report).cell_flags() == {"layer2": {"saturation_ratio": "fail"}}


def _healthy_gradients_report(nan_layer: bool = False) -> Stats:
    """Healthy under the default gate, with a little of everything a rule measures."""
    layers = [
        # 64 units: collapse judges no narrower row
        _layer(i, units=64, saturation_ratio=0.01, dead_units=0.01, correlation=0.1, weight_scale=1.0, weight_size=100)
        for i in range(1, 5)
    ]
    layers[1:] = [replace(x, normalized=True) for x in layers[1:]]  # 3 of 4 weights: the median is 1
    if nan_layer:
        layers[1] = replace(layers[1], nonfinite=3)
    from probe.records import AttentionStats, HeadroomRow, HeadroomStats, Range, StepRow, StepStats

    # ten steps that closed half the distance (0.029 per step), weights turning 1e-4 per step
    steps = StepStats(10, 1e-3, 0.75, 1.0, (1.0, 0.25), tuple(StepRow(x.name, 1e-3, 0.5) for x in layers), 0.0)
    # fp16 values of amax 4 with 1 of 100 flushed to 0
    values = Range(amax=4.0, values=100, nonzero=100, flushed=1, subnormal=2)
    headroom = HeadroomStats("fp16", tuple(HeadroomRow(x.name, values, values, values, values) for x in layers))
    return replace(_report(layers), attention=(AttentionStats("attn", 1, 1.0, 0.5),), steps=steps, headroom=headroom)


@pytest.mark.parametrize("name", spec_mod.RULE_NAMES)
def test_each_rule_fires_on_its_own_threshold(name: str) -> None:
    """Every rule is reachable through the gate keys the spec documents: tightening each of its
    thresholds to the extreme makes that rule (and, for a shared key, only rules using it) fail on
    a healthy report, and disabling the rule silences it."""
    assert set(rules.RULES[name].thresholds) <= set(spec_mod.GATE_PARAMS)
    report = _healthy_gradients_report()
    assert rules.evaluate(report, report.spec.gate).healthy

    def extreme(key: str) -> float:  # the strictest value the gate key accepts
        param = spec_mod.GATE_PARAMS[key]
        if key.startswith("min"):
            return 1e300 if param.maximum is None else param.maximum
        return 0.0 if param.minimum is None else param.minimum

    overrides = {k: extreme(k) for k in rules.RULES[name].thresholds}
    if name == "nonfinite":  # max_nonfinite 0 is the default: only a nan can break it
        report = _healthy_gradients_report(nan_layer=True)
    if name == "rank_one_step":  # a 64 x 100 output layer of rms 0.05, its first update 0.3 on one direction
        last = replace(report.layers[-1], update_rank_share=0.3, weight_rms=0.05, weight_size=6400)
        report = replace(report, layers=(*report.layers[:-1], last))
    gate = spec_mod.parse({"gate": overrides}).gate
    fired = {p.rule for p in rules.evaluate(report, gate).problems}
    assert name in fired
    assert all(set(rules.RULES[r].thresholds) & set(overrides) for r in fired if r != "nonfinite")
    silenced = spec_mod.parse({"gate": {**overrides, "disable": [name]}}).gate
    assert name not in {p.rule for p in rules.evaluate(report, silenced).problems}


def test_warnings_cite_the_real_threshold() -> None:
    layers = [_layer(1), _layer(2, std=0.05)]
    warnings = rules.evaluate(_report(layers)).warnings
    (warning,) = [w for w in warnings if "min_std threshold" in w.message]
    assert warning.threshold == 0.01
    assert "min_std threshold 0.01" in warning.message


def test_a_branch_that_overwrites_its_stream_is_a_warning_not_an_error() -> None:
    """A block over a N(0, 0.02) embedding adds 30-3000 times its input and trains (GLM-4, XLNet):
    the branch ratio is said, as a warning; only what stops training is an error."""
    layers = [_layer(1), _layer(2, branch_ratio=66.6), _layer(3)]
    verdict = rules.evaluate(_report(layers))
    assert verdict.healthy
    (said,) = [w for w in verdict.warnings if w.gate_key == "max_branch_ratio"]
    assert said.rule == "exploding" and said.severity == "warning" and said.layer == "layer2"


def test_a_row_returning_another_rows_output_is_judged_at_that_row() -> None:
    # a model holding a class token is a row whose output is its head's tensor (output_of): its
    # zero std (a zero classifier, exactly 0 and moving) and its dead own parameter are the head's,
    # not judged twice; its own relative gradient (the class token's) is not the movers' reference
    from probe.judge import mechanisms

    # (behind the zero head every gradient is exactly 0: a zero weight passes none back)
    stream = [_layer(1, grad_scale=0.0, gradient_blocked=True, step_ratio=1e-5), _layer(2, step_ratio=1.4e4)]
    head = _layer(3, name="head", role="head", std=0.0, zero_moving=True, step_ratio=None)
    root = _layer(4, name="Model", role="head", std=0.0, dead_units=1.0, step_ratio=None, output_of="head")
    verdict = rules.evaluate(_report([*stream, head, root]))
    assert verdict.healthy, verdict.problems
    assert not rules.evaluate(_report([*stream, head, replace(root, output_of="")])).healthy
    # the LayerScale (1.4e4) against the head's 135: a mover; against the class token's 246 it was not
    rows = [*stream, replace(head, std=1.0, zero_moving=False, step_ratio=135.0)]
    with_root = [*rows, replace(root, std=1.0, dead_units=0.0, step_ratio=246.0)]
    assert "layer2" in {x.name for x in mechanisms.movers(_report(with_root))}
    as_own = replace(with_root[-1], output_of="")  # read as a row of its own: the class token is the reference
    assert "layer2" not in {x.name for x in mechanisms.movers(_report([*rows, as_own]))}


def test_a_row_read_only_by_a_zero_initialized_norm_is_read_at_its_own_std() -> None:
    # A branch's last convolution whose only reader is its BatchNorm with gamma 0 (zero-init of the
    # last BN; timm's BoTNet downsampling block, whose branch was not found as one, read 0 there):
    # the norm outputs 0 by design and moves on the first step, so the row is read at its own std
    def layers(moving: bool) -> list[LayerStats]:
        rows = list(HEALTHY)
        rows[1] = _layer(2, norm_reader="layer3")
        rows[2] = _layer(3, role="norm", std=0.0, mean=0.0, zero_ratio=1.0, zero_moving=moving)
        return rows

    verdict = rules.evaluate(_report(layers(moving=True)))
    assert verdict.healthy and not any(p.rule == "vanishing" for p in (*verdict.problems, *verdict.warnings))
    # a norm that outputs 0 and does not move (its scale's gradient is 0 too) hides the row for good
    stuck = rules.evaluate(_report(layers(moving=False)))
    assert any(p.rule == "vanishing" and p.layer == "layer2" for p in stuck.problems)
