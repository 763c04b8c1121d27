"""probe inspect: per-parameter fans and std against the std the init rule gives (seed 002)."""

from __future__ import annotations

import json
import math

import pytest
import torch
from typer.testing import CliRunner

from probe import spec as spec_mod
from probe.cli import app
from probe.experiments import inspect_params as ip
from probe.model.build import build


def _spec(weight: str | dict, activation: str = "relu", **model: object) -> spec_mod.Spec:
    raw = {"model": {"activation": activation, "width": 64, "depth": 3, "output_dim": 10, **model}}
    return spec_mod.parse({**raw, "init": {"weight": weight}, "data": {"batch_size": 64}})


@pytest.mark.parametrize(
    ("weight", "activation", "std_of"),
    [
        ("he", "relu", lambda fi, fo: math.sqrt(2.0 / fi)),
        ("he", "tanh", lambda fi, fo: (5 / 3) / math.sqrt(fi)),  # He's gain follows the activation
        ("xavier", "relu", lambda fi, fo: math.sqrt(2.0 / (fi + fo))),
        ("xavier_uniform", "tanh", lambda fi, fo: math.sqrt(2.0 / (fi + fo))),
        ("lecun_normal", "selu", lambda fi, fo: 1 / math.sqrt(fi)),
        ("tiny", "relu", lambda fi, fo: 0.01),
        ("default", "relu", lambda fi, fo: 1 / math.sqrt(3 * fi)),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_expected_std_follows_the_rule_and_matches(weight: str, activation: str, std_of) -> None:  # type: ignore[no-untyped-def]
    ins = ip.inspect(_spec(weight, activation), activations_pass=False)
    weights = [p for p in ins.params if p.name.endswith("weight")]
    assert len(weights) == 4  # 3 hidden layers and the head
    for p in weights:
        assert p.expected_std == pytest.approx(std_of(p.fan_in, p.fan_out))
        assert not p.mismatch, p
    assert ins.mismatches == ()


def test_fans_of_a_linear_layer_and_a_conv_shape() -> None:
    assert ip.fans((64, 32)) == (32, 64)
    assert ip.fans((64, 3, 3, 3)) == (27, 576)  # seed 002's conv example


def test_rows_name_shape_and_bias() -> None:
    ins = ip.inspect(_spec("he"), activations_pass=False)
    first = ins.params[0]
    assert first.name == "linear1.weight" and first.shape == (64, 32)
    assert (first.fan_in, first.fan_out) == (32, 64)
    bias = next(p for p in ins.params if p.name == "linear1.bias")
    assert bias.rule == "zeros" and bias.std == 0.0 and bias.expected_std == 0.0 and not bias.mismatch


def test_a_tampered_weight_is_flagged() -> None:
    spec = _spec("he")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = build(spec).model
    with torch.no_grad():
        model.linear2.weight.mul_(2.0)  # twice the He std: far outside sampling noise
    rows = {p.name: p for p in ip.inspect_module(model, spec)}
    assert rows["linear2.weight"].mismatch
    assert not rows["linear1.weight"].mismatch and not rows["linear3.weight"].mismatch


def test_norm_parameters_are_ones_and_zeros() -> None:
    ins = ip.inspect(_spec("he", norm="layernorm"), activations_pass=False)
    norm = [p for p in ins.params if p.name.startswith("norm")]
    assert norm and all(p.rule in ("ones", "zeros") and not p.mismatch for p in norm)


def test_activation_pass_is_forward_only() -> None:
    ins = ip.inspect(_spec("tiny"))
    assert len(ins.activations) == 4
    assert all(x.grad_std is None for x in ins.activations)
    # tiny: every layer shrinks the signal
    assert ins.activations[2].std < ins.activations[0].std


def test_cli_inspect_table_and_json(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "net.yaml"
    path.write_text("model: {depth: 2, width: 16}\ninit: {weight: xavier}\ndata: {batch_size: 32}\n")
    runner = CliRunner()
    table = runner.invoke(app, ["inspect", str(path)])
    assert table.exit_code == 0, table.output
    assert "linear1.weight" in table.stdout and "every parameter matches its init rule" in table.stdout
    doc = json.loads(runner.invoke(app, ["inspect", str(path), "-f", "json"]).stdout)
    assert doc["format"] == "probe.inspect/1" and doc["mismatches"] == 0
    assert doc["parameters"][0]["expected_std"] == pytest.approx(math.sqrt(2 / (32 + 16)))


def test_cli_inspect_lstm_judges_each_gate_block(cli) -> None:  # type: ignore[no-untyped-def]
    result = cli("inspect", "configs/lstm_forget_bias.yaml", "--set", "data.batch_size=4", "--format", "json")
    assert result.exit_code == 0, result.output
    rows = {p["name"]: p for p in json.loads(result.stdout)["parameters"]}
    ih, hh = rows["rnns.0.weight_ih_l0"], rows["rnns.0.weight_hh_l0"]
    assert (ih["fan_in"], ih["fan_out"]) == (16, 256)  # torch: fan_in = input size, fan_out = 4 gates x hidden
    assert ih["expected_std"] == pytest.approx(math.sqrt(2.0 / (16 + 256)))  # xavier_uniform, gain 1
    assert hh["expected_std"] == pytest.approx(1.0 / math.sqrt(256))  # orthogonal (256, 64): unit columns
    assert rows["rnns.0.bias_ih_l0"]["expected_std"] is None  # the forget-gate quarter is set apart
    assert rows["rnns.0.bias_hh_l0"]["expected_std"] == 0.0
    assert not any(p["mismatch"] for p in rows.values())


def test_a_tampered_recurrent_weight_is_flagged() -> None:
    spec = spec_mod.load("configs/gru.yaml", {"data.batch_size": 4})
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        built = build(spec)
    with torch.no_grad():
        built.model.rnns[1].weight_hh_l0.mul_(2.0)
    rows = {p.name: p for p in ip.inspect_module(built.model, spec, built.init_log)}
    assert rows["rnns.1.weight_hh_l0"].mismatch
    assert not rows["rnns.0.weight_hh_l0"].mismatch and not rows["rnns.1.weight_ih_l0"].mismatch


@pytest.mark.parametrize(
    "config", ["cnn_he.yaml", "resnet_fixup.yaml", "residual_depth_scaled.yaml", "transformer_gpt.yaml"]
)
def test_cli_inspect_every_kind_holds_its_rules(cli, config: str) -> None:  # type: ignore[no-untyped-def]
    args = ["inspect", f"configs/{config}", "--set", "data.batch_size=4", "--set", "model.depth=2"]
    result = cli(*args, "--format", "json")
    assert result.exit_code == 0, result.output
    params = json.loads(result.stdout)["parameters"]
    assert params and not any(p["mismatch"] for p in params)
    weights = [p for p in params if len(p["shape"]) > 1]
    assert all(p["expected_std"] is not None for p in weights)  # every weight matrix has a rule to hold


def test_cli_inspect_user_model_has_no_expectation(cli) -> None:  # type: ignore[no-untyped-def]
    args = ["inspect", "--model", "tests.models_for_tests:awkward", "--input-shape", "3,8,8", "--format", "json"]
    result = cli(*args, "--set", "data.batch_size=2")
    assert result.exit_code == 0, result.output
    params = json.loads(result.stdout)["parameters"]
    assert {p["name"] for p in params} >= {"stem.weight", "head.weight"}
    # the model's own init: biases and norms have no rule to hold them to; weight matrices are held to
    # the band of the fan-in rules, He's std shown as the reference, and PyTorch's default is within it
    assert all(p["rule"] == "own" and not p["mismatch"] for p in params)
    assert all((p["expected_std"] is None) == (len(p["shape"]) < 2) for p in params)
    bad = cli("inspect")
    assert bad.exit_code == 2 and "give a SPEC.yaml, --model MODULE:FACTORY or --hf" in " ".join(bad.output.split())


def test_a_user_models_own_weights_are_held_to_the_fan_in_rules(cli) -> None:  # type: ignore[no-untyped-def]
    # N(0, 1) drawn in the model's own code: the conv weights (fan_in 144, 288), the 4096-wide Linear and
    # the head sit 8-45 times He's sqrt(2 / fan_in), flagged; the first conv (fan_in 27: 3.7 times) is within
    args = ("inspect", "--model", "tests.models_for_tests:stock_cnn", "--input-shape", "3,32,32", "-f", "json")
    broken = json.loads(cli(*args, "--model-arg", "init=normal1").stdout)
    flagged = {p["name"] for p in broken["parameters"] if p["mismatch"]}
    assert flagged == {"3.weight", "6.weight", "9.weight", "11.weight"}
    head = next(p for p in broken["parameters"] if p["name"] == "11.weight")
    assert head["expected_std"] == pytest.approx(math.sqrt(2 / 128)) and head["rule"] == "own: off-rule"
    default = json.loads(cli(*args).stdout)
    assert not any(p["mismatch"] for p in default["parameters"])  # PyTorch's default init is 0.41 x He: within
