"""``init.rules``: per-module init by type and name, LSTM parameter families, clear errors."""

from __future__ import annotations

import json

import pytest
import torch

from probe import spec as spec_mod
from probe.errors import BuildError, SpecError
from probe.judge.rules import evaluate
from probe.measurement.run import run_probe
from probe.model.build import build
from probe.render import report as rp

# Tiny networks on a shared machine: one intra-op thread avoids oversubscription (a 40x slowdown
# was measured under load) and changes no result beyond float rounding.
torch.set_num_threads(1)

CNN = {
    "model": {"kind": "conv", "depth": 2, "width": 48, "image_size": 6, "output_dim": 40},
    "init": {
        "rules": [
            {"match": {"type": "Conv2d"}, "weight": "he_normal", "bias": {"name": "constant", "value": 0.5}},
            {"match": {"type": "Linear"}, "weight": "xavier_uniform"},
        ]
    },
    "data": {"batch_size": 4},
}


def test_rules_pick_strategy_by_module_type() -> None:
    model = build(spec_mod.parse(CNN)).model
    conv2, head = model.conv2, model.head  # type: ignore[union-attr]
    # He: std sqrt(2 / (48 * 9)); Xavier uniform: bound sqrt(6 / (48 + 40))
    assert conv2.weight.std().item() == pytest.approx((2 / (48 * 9)) ** 0.5, rel=0.08)
    assert head.weight.abs().max().item() <= (6 / (48 + 40)) ** 0.5
    assert head.weight.std().item() == pytest.approx((2 / (48 + 40)) ** 0.5, rel=0.1)
    assert torch.all(conv2.bias == 0.5)


def test_report_says_which_rule_initialized_each_layer() -> None:
    report = run_probe(spec_mod.parse(CNN))
    rows = json.loads(rp.run_json(report, evaluate(report)))["layers"]
    assert [(r["name"], r["module_type"], r["init_rule"]) for r in rows] == [
        ("layer1", "Conv2d", "init.rules[0] he_normal"),
        ("layer2", "Conv2d", "init.rules[0] he_normal"),
        ("output", "Linear", "init.rules[1] xavier_uniform"),
    ]


def test_later_rules_override_earlier_ones_and_names_match_by_pattern() -> None:
    raw = {
        "model": {"kind": "conv", "depth": 3, "width": 4},
        "init": {
            "rules": [
                {"match": {"type": "Conv2d"}, "weight": "zeros"},
                {"match": {"name": "conv2"}, "weight": "ones"},
            ]
        },
    }
    model = build(spec_mod.parse(raw)).model
    assert torch.all(model.conv1.weight == 0) and torch.all(model.conv3.weight == 0)  # type: ignore[union-attr]
    assert torch.all(model.conv2.weight == 1)  # type: ignore[union-attr]


def test_lstm_families_and_forget_bias() -> None:
    raw = {
        "model": {"kind": "lstm", "depth": 1, "width": 6, "input_dim": 3, "seq_len": 2},
        "init": {
            "rules": [
                {
                    "match": {"type": "LSTM"},
                    "weight": "zeros",
                    "weight_hh": "orthogonal",
                    "bias": "zeros",
                    "forget_bias": 1.0,
                }
            ]
        },
    }
    lstm = build(spec_mod.parse(raw)).model.rnns[0]  # type: ignore[union-attr, index]
    assert torch.all(lstm.weight_ih_l0 == 0)  # the generic family
    w = lstm.weight_hh_l0  # the specific family overrides it: (4H, H) with orthonormal columns
    assert torch.allclose(w.T @ w, torch.eye(6), atol=1e-5)
    h = 6
    expected = torch.zeros(4 * h)
    expected[h : 2 * h] = 1.0  # gates i, f, g, o: only the forget quarter of bias_ih
    assert torch.equal(lstm.bias_ih_l0.detach(), expected)
    assert torch.all(lstm.bias_hh_l0 == 0)


def test_a_rule_that_matches_nothing_names_what_is_there() -> None:
    raw = {"model": {"kind": "conv", "depth": 1}, "init": {"rules": [{"match": {"type": "Conv1d"}, "weight": "ones"}]}}
    with pytest.raises(BuildError, match=r"init.rules\[0\].match: matches no module.*types: Conv2d.*names: conv1"):
        build(spec_mod.parse(raw))


def test_fan_strategy_on_a_1d_parameter_is_a_build_error() -> None:
    raw = {
        "model": {"kind": "residual", "depth": 1, "norm": "layernorm"},
        "init": {"rules": [{"match": {"type": "LayerNorm"}, "weight": "he_normal"}]},
    }
    with pytest.raises(BuildError, match=r"needs fan-in/fan-out.*1-D"):
        build(spec_mod.parse(raw))


def test_forget_bias_on_a_non_lstm_is_a_build_error() -> None:
    raw = {"model": {"kind": "gru", "depth": 1}, "init": {"rules": [{"match": {"type": "GRU"}, "forget_bias": 1}]}}
    with pytest.raises(BuildError, match="not an LSTM"):
        build(spec_mod.parse(raw))


@pytest.mark.parametrize(
    ("rules", "message"),
    [
        (
            [{"match": {"type": "Linear"}, "wieght": "he"}],
            r"init.rules\[0\].wieght: unknown key.*did you mean 'weight'",
        ),
        ([{"weight": "he"}], r"init.rules\[0\].match: needs"),
        ([{"match": {"kind": "Linear"}, "weight": "he"}], r"match.kind: unknown key"),
        ([{"match": {"type": "Linear"}}], "needs at least one of"),
        ([{"match": {"type": "Linear"}, "weight": "hee"}], r"init.rules\[0\].weight: unknown init strategy 'hee'"),
        ([{"match": {"type": "Linear"}, "bias": "he_normal"}], r"init.rules\[0\].bias: 'he_normal' needs fan-in"),
        ("not a list", "init.rules: expected a list"),
    ],
    ids=["key-typo", "no-match", "match-key", "no-target", "strategy-typo", "fan-on-bias", "not-a-list"],
)
def test_rule_spec_errors(rules: object, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        spec_mod.parse({"init": {"rules": rules}})


def test_rules_round_trip_through_to_dict() -> None:
    spec = spec_mod.parse(CNN)
    again = spec_mod.parse(spec_mod.to_dict(spec))
    assert again == spec
    mlp = spec_mod.parse({})
    assert spec_mod.parse(spec_mod.to_dict(mlp)) == mlp


def test_user_model_spec_round_trip_keeps_its_own_init() -> None:
    spec = spec_mod.parse({"model": {"import": "tests.models_for_tests:awkward", "input_shape": [3, 8, 8]}})
    data = spec_mod.to_dict(spec)
    assert data["init"] == {} and data["model"]["import"] == "tests.models_for_tests:awkward"
    assert data["model"]["input_shape"] == [3, 8, 8]
    again = spec_mod.parse(data)
    assert again == spec and not again.init.explicit
