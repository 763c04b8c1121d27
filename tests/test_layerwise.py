"""``--layer-by-layer`` for spec MLP and conv stacks: the same forward and backward statistics as a
normal run, one block's weights at a time (user and transformers models: tests/test_hf.py)."""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

import pytest

from probe import spec as spec_mod
from probe.errors import BuildError, RunError, SpecError
from probe.measurement import estimate, estimate_layerwise, estimate_meta, layerwise, layerwise_runner, memory
from probe.measurement.run import run_probe
from tests.conftest import CONFIGS

FORWARD = ("count", "mean", "std", "zero_ratio", "dead_units", "saturation_ratio", "nonfinite", "unit_spread")
GRADIENTS = ("grad_std", "weight_grad_norm", "weight_grad_std")

# Each case draws its weights differently: constructors' draws kept (default), flat inits of every
# kind (normal, uniform, QR-based orthogonal, truncated), norms reset, init.rules overriding by
# name and by type with depth scaling, several batches, another dtype.
CASES = {
    "relu-he-head-rescaled-rule": {
        "model": {"activation": "relu", "output_dim": 10},
        "init": {
            "weight": "he",
            "rules": [{"match": {"name": "linear2"}, "weight": {"name": "default", "depth_scale": 4}}],
        },
    },
    "tanh-orthogonal-layernorm": {
        "model": {"activation": "tanh", "norm": "layernorm"},
        "init": {"weight": {"name": "orthogonal", "gain": "auto"}, "bias": "normal"},
    },
    "relu-batchnorm-rules-3-batches": {
        "model": {"activation": "leaky_relu", "norm": "batchnorm"},
        "init": {
            "weight": "he_uniform",
            "rules": [
                {"match": {"name": "linear3"}, "weight": "tiny"},
                {"match": {"type": "Linear", "name": "linear[45]"}, "weight": "xavier_normal", "bias": "normal"},
                {"match": {"type": "Linear", "name": "linear6"}, "weight": {"name": "he_normal", "depth_scale": True}},
            ],
        },
        "data": {"batches": 3},
    },
    "sigmoid-default-float64": {
        "model": {"activation": "sigmoid"},
        "init": {
            "weight": "default",
            "bias": "default",
            "rules": [{"match": {"name": "linear[23]"}, "weight": {"name": "default", "depth_scale": True}}],
        },
        "run": {"dtype": "float64"},
    },
    "gelu-trunc-normal-uniform-data": {
        "model": {"activation": "gelu", "bias": False},
        "init": {"weight": {"name": "trunc_normal", "std": 0.1}},
        "data": {"distribution": "uniform"},
    },
}


CONV_CASES = {
    "conv-rules-maxpool-head": {},
    "conv-batchnorm-avgpool-bias": {"model.norm": "batchnorm", "model.pool": "avg", "model.bias": True},
    "conv-orthogonal-layernorm": {"init.weight": "orthogonal", "model.norm": "layernorm", "init.rules": []},
}


def _spec(raw: dict[str, Any], backward: bool = False) -> spec_mod.Spec:
    return spec_mod.parse(
        {
            "model": {"depth": 6, "width": 64, "input_dim": 32, **raw.get("model", {})},
            "init": raw.get("init", {"weight": "he"}),
            "data": {"batch_size": 256, **raw.get("data", {})},
            "run": {"device": "cpu", "seed": 3, "backward": backward, **raw.get("run", {})},
        }
    )


@pytest.mark.parametrize("raw", list(CASES.values()), ids=list(CASES))
def test_forward_statistics_equal_a_normal_forward_only_run(raw: dict[str, Any]) -> None:
    spec = _spec(raw)
    normal, layered = run_probe(spec), layerwise.run_layerwise(spec)
    assert [x.name for x in layered.layers] == [x.name for x in normal.layers]
    for a, b in zip(normal.layers, layered.layers, strict=True):
        for field in FORWARD:
            want, got = getattr(a, field), getattr(b, field)
            # same weights, same inputs, same ops: equal up to float summation order at most
            assert got == (want if want is None else pytest.approx(want, rel=1e-9, abs=1e-12)), (a.name, field)
        assert all(getattr(b, g) is None for g in GRADIENTS)


def _assert_same(normal: Any, layered: Any) -> None:
    """Every number of every row equal: the same weights, inputs, direction and ops (records merged
    in another order at most)."""
    assert [x.name for x in layered.layers] == [x.name for x in normal.layers]
    for a, b in zip(normal.layers, layered.layers, strict=True):
        for field in dataclasses.fields(a):
            want, got = getattr(a, field.name), getattr(b, field.name)
            if isinstance(want, float) and not math.isnan(want):
                assert got == pytest.approx(want, rel=1e-12, abs=1e-300), (a.name, field.name)
            elif isinstance(want, float):
                assert got is not None and math.isnan(got), (a.name, field.name)
            else:
                assert got == want, (a.name, field.name)


@pytest.mark.parametrize("raw", list(CASES.values()), ids=list(CASES))
def test_forward_and_backward_statistics_equal_a_normal_run(raw: dict[str, Any]) -> None:
    spec = _spec(raw, backward=True)
    normal, layered = run_probe(spec), layerwise.run_layerwise(spec)
    _assert_same(normal, layered)
    for row in layered.layers:  # not vacuous: every row has its gradient columns
        assert row.grad_std is not None and row.weight_grad_norm is not None and row.weight_grad_std is not None
        assert row.weight_grad_ratio is not None, row.name  # the weight's norm, read in the backward pass
    assert any("forward and backward" in note for note in layered.notes)


@pytest.mark.parametrize("overrides", list(CONV_CASES.values()), ids=list(CONV_CASES))
def test_a_conv_stack_forward_and_backward_equal_a_normal_run(overrides: dict[str, Any]) -> None:
    base = {"run.backward": True, "run.device": "cpu", "model.depth": 5, "data.batch_size": 16}
    spec = spec_mod.load(CONFIGS / "cnn_he.yaml", overrides={**base, **overrides})
    normal, layered = run_probe(spec), layerwise.run_layerwise(spec)
    _assert_same(normal, layered)
    assert all(row.grad_std is not None and row.weight_grad_norm is not None for row in layered.layers)
    assert [x.module_type for x in layered.layers] == ["Conv2d"] * 5 + ["Linear"]


@pytest.mark.parametrize("overrides", list(CONV_CASES.values()), ids=list(CONV_CASES))
def test_a_conv_stack_gives_the_same_rows_as_a_normal_run(overrides: dict[str, Any]) -> None:
    base = {"run.backward": False, "run.device": "cpu", "model.depth": 5, "data.batch_size": 16}
    spec = spec_mod.load(CONFIGS / "cnn_he.yaml", overrides={**base, **overrides})
    normal, layered = run_probe(spec), layerwise.run_layerwise(spec)
    for a, b in zip(normal.layers, layered.layers, strict=True):
        for field in (*FORWARD, "module_type", "init_rule"):
            want = getattr(a, field)
            expected = want if want is None or isinstance(want, str) else pytest.approx(want, rel=1e-9, abs=1e-12)
            assert getattr(b, field) == expected, (a.name, field)
    assert [x.module_type for x in layered.layers] == ["Conv2d"] * 5 + ["Linear"]


def test_init_rules_reach_exactly_the_blocks_they_match() -> None:
    # guards the test above against a vacuous pass: without its rules the same spec draws the same
    # first two blocks and different later ones
    raw = CASES["relu-batchnorm-rules-3-batches"]
    with_rules = layerwise.run_layerwise(_spec(raw))
    without = layerwise.run_layerwise(_spec({**raw, "init": {"weight": "he_uniform"}}))
    assert [x.std for x in with_rules.layers[:2]] == [x.std for x in without.layers[:2]]
    assert all(a.std != b.std for a, b in zip(with_rules.layers[2:], without.layers[2:], strict=True))


def test_only_one_block_ever_holds_storage(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}
    meta_stack, materialize = layerwise.stack_blocks.meta_stack, layerwise_runner.Runner.materialize

    def capture(spec: spec_mod.Spec) -> Any:
        seen["meta"] = meta = meta_stack(spec)
        return meta

    live: list[int] = []

    def counting(runner: Any, block: Any) -> None:
        materialize(runner, block)
        live.append(sum(p.numel() for p in seen["meta"].model.parameters() if not p.is_meta))

    monkeypatch.setattr(layerwise.stack_blocks, "meta_stack", capture)
    monkeypatch.setattr(layerwise_runner.Runner, "materialize", counting)
    spec = _spec({"model": {"norm": "layernorm", "output_dim": 10}}, backward=True)
    layerwise.run_layerwise(spec)
    model = seen["meta"].model
    total = sum(p.numel() for p in model.parameters())
    block = 64 * 64 + 64 + 2 * 64  # linear_i (weight, bias) and its LayerNorm
    assert max(live) == block and total > 6 * block - 32 * 64  # the whole network: about 6 blocks
    forward = [32 * 64 + 64 + 128] + [block] * 5 + [64 * 10 + 10]
    assert live == forward + forward[::-1]  # the backward pass: each block again, in reverse
    assert all(p.is_meta for p in model.parameters()) and all(b.is_meta for b in model.buffers())


def test_the_global_random_state_is_left_alone() -> None:
    import torch

    torch.manual_seed(123)
    before = torch.get_rng_state()
    layerwise.run_layerwise(_spec({}))
    assert torch.equal(before, torch.get_rng_state())


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"model": {"kind": "residual", "depth": 2}}, "model.kind: residual"),
        ({"model": {"kind": "transformer", "depth": 1, "width": 16}}, "model.kind: transformer"),
        ({"model": {"kind": "lstm", "depth": 1, "width": 8}}, "model.kind: lstm"),
        ({"init": {"weight": "lsuv"}}, "except lsuv"),
    ],
    ids=["residual", "transformer", "lstm", "lsuv"],
)
def test_where_it_does_not_apply_is_a_spec_error(raw: dict[str, Any], message: str) -> None:
    spec = spec_mod.parse({"run": {"device": "cpu"}, **raw})
    with pytest.raises(SpecError, match=rf"--layer-by-layer applies to model.kind: mlp or conv.*{message}"):
        layerwise.run_layerwise(spec)


def test_a_rule_error_is_the_build_error_of_a_normal_run() -> None:
    spec = _spec({"init": {"rules": [{"match": {"type": "Conv2d"}, "weight": "ones"}]}})
    with pytest.raises(BuildError, match=r"init.rules\[0\].match: matches no module"):
        layerwise.run_layerwise(spec)


# ---- the command line ---------------------------------------------------------------------------


def test_cli_json_forward_and_backward_equal_a_normal_run(cli: Any) -> None:
    # as a user runs it: the config asks for the backward pass (run.backward's default)
    spec = str(CONFIGS / "lab1_he_relu.yaml")
    layered = cli("run", spec, "--layer-by-layer", "-f", "json", "--set", "run.device=cpu")
    normal = cli("run", spec, "-f", "json", "--set", "run.device=cpu")
    assert layered.exit_code == 0 and normal.exit_code == 0, layered.output
    a, b = json.loads(normal.stdout), json.loads(layered.stdout)
    assert len(b["layers"]) == len(a["layers"]) == 8
    for x, y in zip(a["layers"], b["layers"], strict=True):
        for key in ("std", "zero_ratio", *GRADIENTS, "weight_grad_ratio"):
            assert x[key] is not None and y[key] == pytest.approx(x[key], rel=1e-12), (x["name"], key)
        for key, want in x.items():  # every other column too
            same = pytest.approx(want, rel=1e-12) if isinstance(want, float) else want
            assert y[key] == same, (x["name"], key)
    assert b["verdict"] == a["verdict"]
    assert b["spec"]["run"]["backward"] is True
    assert any("forward and backward" in note for note in b["notes"])


def test_cli_table_says_it_ran_layer_by_layer(cli: Any) -> None:
    # depth 4: tiny + ReLU loses more than 2 decades, an error (3 layers lose 1.7: a warning)
    result = cli("run", str(CONFIGS / "lab1_tiny_relu.yaml"), "--layer-by-layer", "--set", "model.depth=4")
    assert result.exit_code == 0, result.output
    assert "4 blocks built, probed and freed one at a time" in result.stdout
    assert "UNHEALTHY: vanishing" in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([str(CONFIGS / "resnet_fixup.yaml")], "model.kind: residual"),
        ([str(CONFIGS / "lab1_he_relu.yaml"), "--set", "init.weight=lsuv"], "except lsuv"),
        (
            ["--model", "tests.models_for_tests:awkward", "--input-shape", "3,8,8", "--weights", "w.pt"],
            "--weights loads",
        ),
        ([str(CONFIGS / "lab1_he_relu.yaml"), "--weights", "w.pt"], "--weights loads a whole state dict"),
        ([str(CONFIGS / "lab1_he_relu.yaml"), "--plot", "p.png"], "--plot needs the whole network"),
    ],
    ids=["residual", "lsuv", "model-weights", "weights", "plot"],
)
def test_cli_refusals_exit_2_and_say_where_it_applies(cli: Any, args: list[str], message: str) -> None:
    result = cli("run", *args, "--layer-by-layer")
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split())


def test_help_explains_the_option(cli: Any) -> None:
    out = " ".join(cli("run", "--help").output.split())
    assert "--layer-by-layer" in out and "one block at a time" in out


# ---- --max-memory: one block's estimate ---------------------------------------------------------

DEEP_WIDE = {"model": {"depth": 64, "width": 8192}, "data": {"batch_size": 256}}


@pytest.mark.parametrize("backward", [False, True], ids=["forward-only", "forward+backward"])
def test_the_estimate_is_one_block_whatever_the_depth(backward: bool) -> None:
    deep, deeper = (
        spec_mod.parse({**DEEP_WIDE, "model": {"depth": d, "width": 8192}, "run": {"backward": backward}})
        for d in (64, 128)
    )
    normal = estimate.estimate_memory(deep)
    one, two = estimate_layerwise.estimate_layerwise_memory(deep), estimate_layerwise.estimate_layerwise_memory(deeper)
    block = (8192 * 8192 + 8192) * 4
    assert one.weights == two.weights == (2 if backward else 1) * block  # with backward, the block's gradients
    assert normal.weights == pytest.approx((2 if backward else 1) * 64 * block, rel=0.02)  # 63 square layers
    # with backward, each block's input is kept for the backward pass: one batch x width per block
    assert two.activations - one.activations == (64 * 256 * 8192 * 4 if backward else 0)
    assert one.total < 0.06 * normal.total


def test_max_memory_refuses_normal_mode_and_accepts_layer_by_layer() -> None:
    spec = spec_mod.parse(DEEP_WIDE)  # forward and backward
    with pytest.raises(
        RunError, match=r"exceeds --max-memory 4 GiB.*or probe one block at a time with --layer-by-layer"
    ):
        memory.check_memory(spec, 4, offer_layerwise=True)
    assert memory.check_memory(spec, 4, layerwise=True).total < 2 * 2**30
    with pytest.raises(RunError, match=r"0.4 GiB; lower data.batch_size or model.width, set run.backward: false, or"):
        memory.check_memory(spec, 0.4, layerwise=True)
    # a batch whose boundaries do not fit: the forward signal alone (no boundaries kept) is offered
    spec = spec_mod.parse({**DEEP_WIDE, "model": {"depth": 64, "width": 4096}, "data": {"batch_size": 65536}})
    forward = estimate_layerwise.estimate_layerwise_memory(
        spec_mod.parse({**spec_mod.to_dict(spec), "run": {"backward": False}})
    )
    assert estimate_layerwise.estimate_layerwise_memory(spec).total > 8 * 2**30 > forward.total
    with pytest.raises(RunError) as refused:
        memory.check_memory(spec, 8, offer_layerwise=True)
    assert str(refused.value).endswith(
        f"; or probe the forward signal one block at a time with --layer-by-layer --set run.backward=false "
        f"(estimated {forward.total / 2**30:.2f} GiB)"
    )
    with pytest.raises(RunError, match=r"8 GiB; lower data.batch_size or model.width, set run.backward: false, or"):
        memory.check_memory(spec, 8, layerwise=True)


def test_a_conv_stack_estimate_is_one_block_and_a_normal_runs_activations() -> None:
    # the activations of a conv stack dominate: the boundaries alone are a batch x channels x image
    # per block, which a normal run's meta-device measure bounds (not the MLP arithmetic of width x batch)
    overrides = {"model.image_size": 64, "model.width": 128, "model.pool": "none", "data.batch_size": 32}
    spec = spec_mod.load(CONFIGS / "cnn_he.yaml", overrides=overrides)
    one, whole = estimate_layerwise.estimate_layerwise_memory(spec), estimate_meta.estimate_shapes_memory(spec)
    block = 128 * 128 * 9 + 128  # a 3x3 Conv2d, 128 channels in and out, with bias
    assert one.weights == 2 * block * 4  # float32, and its gradients
    assert one.activations == whole.activations > 12 * 32 * 128 * 64 * 64 * 4  # the 12 boundaries at least
    assert whole.weights > 10 * one.weights


def test_cli_max_memory_per_mode(cli: Any) -> None:
    # small enough to run here; over the limit in normal mode only (the process alone is 0.39 GiB)
    args = ["run", str(CONFIGS / "lab1_he_relu.yaml"), "--set", "model.depth=60", "--set", "model.width=512"]
    args += ["--set", "data.batch_size=64"]
    refused = cli(*args, "--max-memory", "0.5")
    assert refused.exit_code == 3
    # the figures printed are the estimator's for this very spec: the whole run over the limit,
    # one block under it
    spec = spec_mod.load(CONFIGS / "lab1_he_relu.yaml", {"model.depth": 60, "model.width": 512, "data.batch_size": 64})
    whole, one_block = estimate.estimate_memory(spec).total, estimate_layerwise.estimate_layerwise_memory(spec).total
    assert one_block <= 0.5 * 2**30 < whole
    text = " ".join(refused.output.split())
    assert f"estimated peak memory {whole / 2**30:.2f} GiB" in text
    assert f"--layer-by-layer (estimated {one_block / 2**30:.2f} GiB)" in text
    accepted = cli(*args, "--max-memory", "0.5", "--layer-by-layer", "--format", "csv")
    assert accepted.exit_code == 0, accepted.output
    assert accepted.stdout.count(",hidden,") == 60
