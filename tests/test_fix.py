"""LSUV: failing specs pass after the fix, degenerate layers are reported, saved weights reproduce."""

from __future__ import annotations

import json
import math
from dataclasses import fields
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from probe.cli import app
from probe.experiments import fix
from probe.judge.rules import evaluate
from probe.measurement.run import run_probe
from probe.model.build import build
from probe.records import Stats
from probe.render.output import write_bytes
from probe.spec import load, parse

SMALL = {"input_dim": 32, "width": 64, "data": 256}


def _same_numbers(a: Stats, b: Stats) -> None:
    for x, y in zip(a.layers, b.layers, strict=True):
        for f in fields(x):
            assert getattr(x, f.name) == getattr(y, f.name), (x.name, f.name)


@pytest.mark.parametrize(
    "raw",
    [
        {"model": {"activation": "relu"}, "init": {"weight": "tiny"}},
        {"model": {"activation": "tanh", "depth": 20}, "init": {"weight": "large"}},
        {"model": {"activation": "tanh", "depth": 20}, "init": {"weight": "tiny"}},
    ],
    ids=["tiny-relu", "large-tanh-deep", "tiny-tanh-deep"],
)
def test_a_failing_spec_passes_after_the_fix(raw: dict[str, dict[str, object]]) -> None:
    raw = {**raw, "model": {"input_dim": 32, "width": 64, **raw["model"]}, "data": {"batch_size": 256}}
    spec = parse(raw)
    fixed = fix.fix(spec)
    assert not fixed.before_verdict.healthy
    assert fixed.after_verdict.healthy, fixed.after_verdict.problems
    tol = fixed.lsuv.tolerance
    for layer in fixed.lsuv.layers:
        assert layer.status == "ok"
        assert abs(layer.variance_after - 1.0) <= tol
        assert math.isfinite(layer.scale) and layer.scale > 0


def test_layers_are_rescaled_in_execution_order_to_unit_variance() -> None:
    spec = parse({"model": {"depth": 4, "width": 64, "activation": "relu"}, "init": {"bias": "ones"}})
    fixed = fix.fix(spec, tolerance=1e-3, max_iter=50)
    assert [x.module for x in fixed.lsuv.layers] == ["linear1", "linear2", "linear3", "linear4"]
    # the network's own pre-activations on the probe's batch have unit variance
    model = build(spec).model
    model.load_state_dict(fixed.state_dict)
    x = torch.Generator().manual_seed(spec.run.seed * 1000 + 1)
    h = torch.randn((spec.data.batch_size, spec.model.input_dim), generator=x)
    with torch.no_grad():
        for i in range(1, 5):
            z = getattr(model, f"linear{i}")(h)
            assert z.double().var(correction=0).item() == pytest.approx(1.0, abs=1e-3)
            h = getattr(model, f"act{i}")(z)


def test_capped_iterations_are_reported() -> None:
    spec = parse({"model": {"depth": 2, "width": 32}, "init": {"bias": {"name": "normal", "std": 1.0}}})
    fixed = fix.fix(spec, tolerance=1e-12, max_iter=1)
    assert {x.status for x in fixed.lsuv.layers} == {"capped"}
    assert all(x.iterations == 1 for x in fixed.lsuv.layers)


def test_zero_layers_are_reported_never_divided() -> None:
    spec = parse({"model": {"depth": 3, "width": 32}, "init": {"bias": "zeros"}})
    fixed = fix.fix(spec, start="zeros")
    assert [x.status for x in fixed.lsuv.layers] == ["zero", "zero", "zero"]
    assert all(x.scale == 1.0 and x.iterations == 0 for x in fixed.lsuv.layers)
    assert not fixed.after_verdict.healthy


def test_nonfinite_layers_are_reported_and_left_alone() -> None:
    spec = fix.lsuv_spec(parse({"model": {"depth": 2, "width": 32}}))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        built = build(spec)
    built.model.linear1.weight.data.fill_(float("inf"))
    result = fix.lsuv_built(built, spec)
    assert result.layers[0].status == "nonfinite" and result.layers[0].scale == 1.0
    assert torch.isinf(built.model.linear1.weight).all()


def test_saved_weights_reload_and_reproduce(tmp_path: Path) -> None:
    spec = load("configs/lab1_tiny_relu.yaml")
    fixed = fix.fix(spec)
    path = tmp_path / "fixed.pt"
    write_bytes(path, fix.weights_bytes(fixed.state_dict), "--save")
    model = build(spec).model
    model.load_state_dict(torch.load(path))  # the plain torch way works
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, fixed.state_dict[name])
    _same_numbers(run_probe(spec, state_dict=torch.load(path)), fixed.after)
    # the lsuv strategy rebuilds the very same network
    _same_numbers(run_probe(fixed.fixed_spec), fixed.after)


def test_lsuv_strategy_in_a_spec() -> None:
    spec = parse(
        {
            "model": {"depth": 12, "width": 64, "activation": "tanh"},
            "init": {"weight": {"name": "lsuv", "start": "large", "tolerance": 0.05}},
        }
    )
    assert evaluate(run_probe(spec)).healthy
    assert not evaluate(
        run_probe(parse({"model": {"depth": 12, "width": 64, "activation": "tanh"}, "init": {"weight": "large"}}))
    ).healthy


# ---- CLI --------------------------------------------------------------------------------------

runner = CliRunner()


def test_cli_fix_saves_and_run_reproduces(tmp_path: Path) -> None:
    path = tmp_path / "w.pt"
    result = runner.invoke(app, ["fix", "configs/lab1_tiny_relu.yaml", "--save", str(path)])
    assert result.exit_code == 0, result.output
    assert (
        "before (tiny)" in result.stdout and "after (lsuv)" in result.stdout and "LSUV from orthogonal" in result.stdout
    )
    assert path.exists()
    fixed = runner.invoke(app, ["fix", "configs/lab1_tiny_relu.yaml", "-f", "json"])
    assert fixed.exit_code == 0
    after = json.loads(fixed.stdout)["after"]
    rerun = runner.invoke(app, ["run", "configs/lab1_tiny_relu.yaml", "--weights", str(path), "-f", "json"])
    assert rerun.exit_code == 0, rerun.output
    assert json.loads(rerun.stdout)["layers"] == after["layers"]
    assert json.loads(fixed.stdout)["lsuv"]["layers"][0]["status"] == "ok"


def test_cli_fix_exit_codes(tmp_path: Path) -> None:
    assert runner.invoke(app, ["fix", "configs/zeros_relu.yaml", "--start", "zeros"]).exit_code == 1
    bad = runner.invoke(app, ["fix", "configs/lab1_tiny_relu.yaml", "--start", "orthogonl"])
    assert bad.exit_code == 2 and "did you mean 'orthogonal'" in " ".join(bad.output.split())
    missing = runner.invoke(app, ["run", "configs/lab1_tiny_relu.yaml", "--weights", str(tmp_path / "no.pt")])
    assert missing.exit_code == 2 and "weights file not found" in " ".join(missing.output.split())
    wrong = tmp_path / "wrong.pt"
    torch.save({"linear1.weight": torch.zeros(3, 3)}, wrong)
    mismatch = runner.invoke(app, ["run", "configs/lab1_tiny_relu.yaml", "--weights", str(wrong)])
    assert mismatch.exit_code == 2 and "do not fit" in " ".join(mismatch.output.split())


def test_lsuv_is_a_strategy_for_compare_and_check(tmp_path: Path) -> None:
    result = runner.invoke(app, ["compare", "tiny:tanh", "lsuv:tanh", "--depth", "10", "--width", "64", "-f", "json"])
    assert result.exit_code == 0, result.output
    runs = json.loads(result.stdout)["runs"]
    assert [r["verdict"]["healthy"] for r in runs] == [False, True]
    spec = tmp_path / "lsuv.yaml"
    spec.write_text("model: {depth: 10, width: 64, activation: tanh}\ninit: {weight: lsuv}\n")
    assert runner.invoke(app, ["check", str(spec)]).exit_code == 0


@pytest.mark.parametrize("config", ["cnn_he.yaml", "transformer_vit.yaml"])
def test_cli_lsuv_on_image_and_sequence_kinds(config: str) -> None:
    args = ["run", f"configs/{config}", "--set", "init.weight=lsuv", "--set", "model.depth=2"]
    result = CliRunner().invoke(app, [*args, "--set", "data.batch_size=4", "--format", "json"])
    assert result.exit_code == 0, result.output
    layers = json.loads(result.stdout)["layers"]
    assert layers and all(math.isfinite(x["std"]) and x["std"] > 0.0 for x in layers)


# ---- other model kinds and --model (LSUV feeds the run's own inputs) ------------------------

CONV_TINY = (
    "model: {kind: conv, in_channels: 3, image_size: 8, width: 8, depth: 6, kernel_size: 3, pool: none,\n"
    "        output_dim: 4, activation: relu}\n"
    "init: {weight: tiny, bias: zeros}\n"
    "data: {batch_size: 16}\n"
)


def test_cli_fix_a_conv_spec_passes_and_the_weights_reproduce(tmp_path: Path) -> None:
    spec = tmp_path / "conv.yaml"
    spec.write_text(CONV_TINY)
    path = tmp_path / "w.pt"
    result = runner.invoke(app, ["fix", str(spec), "--save", str(path), "-f", "json"])
    assert result.exit_code == 0, result.output
    fixed = json.loads(result.stdout)
    assert not fixed["before"]["verdict"]["healthy"] and fixed["after"]["verdict"]["healthy"]
    scaled = fixed["lsuv"]["layers"]
    assert [x["module"] for x in scaled][:6] == [f"conv{i}" for i in range(1, 7)]
    assert all(x["status"] == "ok" and abs(x["variance_after"] - 1) <= 0.1 for x in scaled)
    rerun = runner.invoke(app, ["run", str(spec), "--weights", str(path), "-f", "json"])
    assert rerun.exit_code == 0, rerun.output
    loaded = json.loads(rerun.stdout)["layers"]
    assert {x["init_rule"] for x in loaded} == {"loaded weights"}

    def numbers(layers: list[dict[str, object]]) -> list[dict[str, object]]:
        return [{k: v for k, v in x.items() if k != "init_rule"} for x in layers]

    assert numbers(loaded) == numbers(fixed["after"]["layers"])
    # the lsuv strategy builds the very same network
    strategy = runner.invoke(app, ["run", str(spec), "--set", "init.weight=lsuv", "-f", "json"])
    assert strategy.exit_code == 0, strategy.output
    by_strategy = json.loads(strategy.stdout)["layers"]
    assert numbers(by_strategy) == numbers(fixed["after"]["layers"])
    assert by_strategy[0]["init_rule"] == "init.weight lsuv, lsuv-rescaled"


@pytest.mark.parametrize(
    "args",
    [
        [
            "configs/resnet_fixup.yaml",
            "--set",
            "model.depth=2",
            "--set",
            "model.width=8",
            "--set",
            "model.image_size=8",
        ],
        [
            "configs/transformer_gpt.yaml",
            "--set",
            "model.depth=2",
            "--set",
            "model.width=32",
            "--set",
            "model.seq_len=8",
        ],
        ["configs/transformer_vit.yaml", "--set", "model.depth=2", "--set", "model.seq_len=8"],
        ["--model", "tests.models_for_tests:deep_tanh_mlp", "--model-arg", "depth=6", "--input-shape", "16"],
        ["--model", "tests.models_for_tests:two_inputs", "--inputs", "tests.models_for_tests:make_two_inputs"],
    ],
    ids=["residual-conv", "transformer-tokens", "transformer-continuous", "user-model", "user-model-kwargs"],
)
def test_cli_fix_other_kinds_rescale_to_unit_variance(args: list[str]) -> None:
    result = runner.invoke(app, ["fix", *args, "--set", "data.batch_size=8", "-f", "json"])
    data = json.loads(result.stdout)
    # the exit code is the fixed network's verdict: 0 healthy, 1 not (never an error)
    assert result.exit_code == (0 if data["after"]["verdict"]["healthy"] else 1), result.output
    scaled = data["lsuv"]["layers"]
    assert scaled and all(x["status"] == "ok" and abs(x["variance_after"] - 1) <= 0.1 for x in scaled)


@pytest.mark.parametrize("config", ["configs/lstm_forget_bias.yaml", "configs/gru.yaml"])
def test_lsuv_on_recurrent_kinds_is_a_clear_error(config: str) -> None:
    kind = load(config).model.kind
    for args in (["fix", config], ["run", config, "--set", "init.weight=lsuv"]):
        result = runner.invoke(app, [*args, "--set", "data.batch_size=4"])
        assert result.exit_code == 2, result.output
        assert f"lsuv does not support model.kind '{kind}'" in " ".join(result.output.split())


def test_init_rules_set_the_start_of_the_modules_they_match(tmp_path: Path) -> None:
    spec = tmp_path / "rules.yaml"
    spec.write_text(
        CONV_TINY.replace("init: {weight: tiny, bias: zeros}", "init: {rules: [{match: {type: Conv2d}, weight: tiny}]}")
    )
    result = runner.invoke(app, ["fix", str(spec)])
    assert result.exit_code == 0, result.output
    assert "LSUV from orthogonal (init.rules' weights where they match)" in " ".join(result.stdout.split())
    # the rule's tiny start is rescaled like any other: every conv needed a large factor
    fixed = fix.fix(load(spec))
    assert all(x.scale > 10 for x in fixed.lsuv.layers if x.module.startswith("conv"))
    assert fixed.after_verdict.healthy


def test_lsuv_is_no_advice_mismatch() -> None:
    result = runner.invoke(app, ["run", "configs/lab1_tiny_relu.yaml", "--set", "init.weight=lsuv", "-f", "json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["advice"]["mismatch"] is None


def test_lsuv_strategy_on_a_user_model_with_an_inputs_function_matches_the_fix() -> None:
    # the --inputs function draws from torch's global generator: LSUV must leave it as it found it
    overrides = {
        "model.import": "tests.models_for_tests:two_inputs",
        "model.inputs": "tests.models_for_tests:make_two_inputs",
    }
    spec = parse({"data": {"batch_size": 8, "batches": 2}}, overrides)
    fixed = fix.fix(spec)
    assert all(abs(x.variance_after - 1) <= fixed.lsuv.tolerance for x in fixed.lsuv.layers)
    again = run_probe(fixed.fixed_spec)
    for x, y in zip(again.layers, fixed.after.layers, strict=True):
        assert (x.std, x.mean, x.grad_std) == (y.std, y.mean, y.grad_std), x.name


def test_inspect_lsuv_shows_the_rescaled_weights() -> None:
    def weight_std(strategy: str) -> float:
        args = ["inspect", "configs/lab1_tiny_relu.yaml", "--set", f"init.weight={strategy}", "-f", "json"]
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
        return float(json.loads(result.stdout)["parameters"][0]["std"])

    scale = fix.fix(load("configs/lab1_tiny_relu.yaml")).lsuv.layers[0].scale
    assert weight_std("lsuv") / weight_std("orthogonal") == pytest.approx(scale, rel=1e-4)


@pytest.mark.parametrize("config", ["configs/cnn_he.yaml", "configs/gru.yaml", "configs/transformer_gpt.yaml"])
def test_run_plot_on_other_kinds_feeds_their_own_inputs(config: str, tmp_path: Path) -> None:
    out = tmp_path / "p.png"
    args = ["run", config, "--set", "model.depth=2", "--set", "data.batch_size=4", "--plot", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert out.stat().st_size > 0
