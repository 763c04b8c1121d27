"""The seed recipes as specs, and the effects the seeds describe, as tests that can fail.

Expected values come from the variance algebra in the comments, not from a previous run.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from probe import spec as spec_mod
from probe.judge.rules import evaluate
from probe.measurement.run import run_probe
from probe.model.build import build

# Tiny networks on a shared machine: one intra-op thread avoids oversubscription (a 40x slowdown
# was measured under load) and changes no result beyond float rounding.
torch.set_num_threads(1)

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def probe_std_ratio(raw: dict) -> float:
    report = run_probe(spec_mod.parse(raw))
    return report.last.std / report.first.std


# ---- residual: depth scaling and zero-initialized branches -------------------------------------

DEPTH = 100


def residual(dtype: str = "float64", **model: object) -> dict:
    base = {"kind": "residual", "depth": DEPTH, "width": 32, "input_dim": 32}
    return {
        "model": {**base, **model},
        "data": {"batch_size": 64},
        "run": {"device": "cpu", "dtype": dtype, "seed": 3},
    }


def test_unscaled_residual_stack_explodes() -> None:
    # branch = Linear(He) -> ReLU -> Linear(He): E[branch^2] = 2 E[x^2], so each block multiplies
    # E[x^2] by 3 and L blocks give a std ratio of 3^(L/2) (3^20 ~ 3.5e9 for L = 40; the 100-block
    # stack of the other tests reaches 3^50 ~ 7e23). Allow a factor 100 for finite width.
    depth = 40
    assert probe_std_ratio(residual(depth=depth)) > 3 ** (depth / 2) / 100


def test_depth_scaled_residual_stack_stays_bounded() -> None:
    # scale 1/sqrt(2L): each block multiplies E[x^2] by 1 + 2/(2L), so L blocks give (1 + 1/L)^L ~ e
    # and a std ratio of sqrt(e) ~ 1.65; a factor 1.5 covers the finite-width fluctuations.
    expected = math.sqrt((1 + 1 / DEPTH) ** DEPTH)
    ratio = probe_std_ratio(residual(branch_scale="depth"))
    assert expected / 1.5 < ratio < expected * 1.5


@pytest.mark.parametrize(
    "model",
    [{"zero_init": "rezero"}, {"zero_init": "last_norm", "norm": "layernorm"}],
    ids=["rezero", "fixup_last_norm"],
)
def test_zero_initialized_branches_make_the_stack_an_identity(model: dict) -> None:
    # alpha = 0 or a last-norm gamma = 0: every block returns its input unchanged
    assert probe_std_ratio(residual("float32", **model)) == 1.0  # exactly: x + 0 is x


def test_branch_scale_number_multiplies_the_branch() -> None:
    spec = spec_mod.parse({"model": {"kind": "residual", "depth": 4, "branch_scale": 0.25}})
    blocks = build(spec).model.blocks  # type: ignore[union-attr]
    assert all(block.scale == 0.25 for block in blocks)
    deep = spec_mod.parse({"model": {"kind": "residual", "depth": 50, "branch_scale": "depth"}})
    assert deep.model.branch_multiplier() == pytest.approx(1 / math.sqrt(100))


# ---- conv: fan-in includes the kernel; He beats Xavier on a deep ReLU stack ----------------------


def test_conv_fan_in_includes_the_kernel() -> None:
    # 3 input channels x 3x3 kernel -> fan_in 27, He std sqrt(2/27)
    spec = spec_mod.parse({"model": {"kind": "conv", "depth": 1, "width": 64}, "init": {"weight": "he_normal"}})
    weight = build(spec).model.conv1.weight  # type: ignore[union-attr]
    assert weight.shape == (64, 3, 3, 3)
    assert weight.std().item() == pytest.approx(math.sqrt(2 / 27), rel=0.08)


def test_he_beats_xavier_on_a_deep_relu_conv_stack() -> None:
    # Past the first layer fan_in = fan_out = 9 C: Xavier's variance 2/(fan_in + fan_out) is half
    # of He's 2/fan_in, and ReLU halves the second moment; so Xavier loses a factor sqrt(2) in std
    # per layer relative to He: 2^((L-1)/2) over L layers (zero padding affects both alike).
    depth = 16

    def conv(weight: str) -> dict:
        return {
            "model": {"kind": "conv", "depth": depth, "width": 16, "image_size": 8},
            "init": {"weight": weight},
            "data": {"batch_size": 16},
            "run": {"device": "cpu", "seed": 1},
        }

    he, xavier = run_probe(spec_mod.parse(conv("he_normal"))), run_probe(spec_mod.parse(conv("xavier_normal")))
    gap = (he.last.std / he.first.std) / (xavier.last.std / xavier.first.std)
    expected = 2 ** ((depth - 1) / 2)
    assert expected / 2 < gap < expected * 2
    # a 2^7.5 loss in std is moderate vanishing (issue 14: Xavier + ReLU at depth 20 trained under
    # Adam): a warning, an error under the SGD hint
    verdict = evaluate(xavier)
    assert verdict.healthy and ("vanishing", "warning") in {(w.rule, w.severity) for w in verdict.warnings}
    sgd = replace(xavier.spec.gate, optimizer="sgd")
    assert "vanishing" in {p.rule for p in evaluate(xavier, sgd).problems}
    assert "vanishing" not in {p.rule for p in (*evaluate(he).problems, *evaluate(he, sgd).problems)}


# ---- LSTM: forget-gate bias 1 keeps the gradient alive through time -------------------------------


def lstm_time_ratio(forget_bias: float, seq_len: int) -> float:
    raw = {
        "model": {"kind": "lstm", "depth": 1, "width": 32, "input_dim": 8, "seq_len": seq_len},
        "init": {
            "rules": [
                {
                    "match": {"type": "LSTM"},
                    "weight_ih": "xavier_uniform",
                    "weight_hh": "orthogonal",
                    "bias": "zeros",
                    "forget_bias": forget_bias,
                }
            ]
        },
        "data": {"batch_size": 32},
        "run": {"device": "cpu", "seed": 0},
    }
    rows = {x.name: x for x in run_probe(spec_mod.parse(raw)).layers}
    first, last = rows["t0"].grad_std, rows[f"t{seq_len - 1}"].grad_std
    assert first is not None and last is not None
    return first / last


def test_forget_bias_one_keeps_lstm_gradients_through_time() -> None:
    # Through the cell state the gradient is multiplied by the forget gate at every step: about
    # sigmoid(1) = 0.73 with bias 1, sigmoid(0) = 0.5 with bias 0, i.e. a factor (0.73/0.5)^(T-1)
    # after T steps (~1e5 for T = 32). Require at least its square root, to leave room for the
    # input-dependent spread of the gate.
    seq_len = 32
    with_bias, without = lstm_time_ratio(1.0, seq_len), lstm_time_ratio(0.0, seq_len)
    factor = (torch.sigmoid(torch.tensor(1.0)) / 0.5).item() ** (seq_len - 1)
    assert with_bias / without > math.sqrt(factor)


def test_gru_runs_over_time() -> None:
    report = run_probe(spec_mod.parse({"model": {"kind": "gru", "depth": 2, "width": 8, "seq_len": 5}}))
    names = [x.name for x in report.layers]
    assert names == ["t0", "t1", "t2", "t3", "t4", "h0", "h1", "h2", "h3", "h4", "layer1", "layer2"]
    for x in report.layers:
        # hidden-state rows observe the forward signal only; every other row has a gradient
        assert (x.grad_std is None) if x.name.startswith("h") else (x.grad_std is not None and x.grad_std > 0)


def test_long_sequences_show_evenly_spaced_steps() -> None:
    from probe.model.arch import MAX_TIME_ROWS, time_steps

    steps = time_steps(50)
    assert len(steps) == MAX_TIME_ROWS and steps[0] == 0 and steps[-1] == 49
    assert time_steps(3) == [0, 1, 2]


# ---- transformer ---------------------------------------------------------------------------------


def test_gpt_recipe_scales_out_proj_by_depth() -> None:
    spec = spec_mod.load(CONFIGS / "transformer_gpt.yaml", {"model.width": 64, "model.depth": 8})
    model = build(spec).model
    out_proj = model.layers[0].self_attn.out_proj.weight  # type: ignore[union-attr, index]
    embed = model.embed.weight  # type: ignore[union-attr]
    # N(0, 0.02) scaled by 1/sqrt(2 L) with L = 8
    assert out_proj.std().item() == pytest.approx(0.02 / 4, rel=0.1)
    assert embed.std().item() == pytest.approx(0.02, rel=0.1)


def test_transformer_continuous_inputs_and_rows() -> None:
    raw = {"model": {"kind": "transformer", "depth": 3, "width": 16, "heads": 2, "seq_len": 4, "output_dim": 3}}
    report = run_probe(spec_mod.parse(raw))
    assert [x.name for x in report.layers] == ["block1", "block2", "block3", "output"]
    assert all(math.isfinite(x.std) and x.grad_std for x in report.layers)


# ---- every shipped recipe parses and runs ----------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "cnn_he",
        "cnn_xavier",
        "resnet_fixup",
        "resnet_rezero",
        "residual_depth_scaled",
        "transformer_gpt",
        "transformer_vit",
        "lstm_forget_bias",
        "gru",
    ],
)
def test_recipe_configs_run(name: str) -> None:
    spec = spec_mod.load(CONFIGS / f"{name}.yaml", {"data.batch_size": 4, "model.depth": 3, "run.device": "cpu"})
    report = run_probe(spec)
    assert report.layers and all(x.nonfinite == 0 for x in report.layers)
