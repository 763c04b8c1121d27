"""``init.weight`` reaches every weight matrix a user model holds, whatever holds it, and names what
it leaves (issue 22): each container's weight is drawn from the strategy's law, checked against the
variance rule with its own fan-in and fan-out; ``match.param`` reaches a parameter by its own name."""

from __future__ import annotations

import math
from typing import Any

import pytest

from probe import spec as spec_mod
from probe.errors import BuildError
from probe.model.build import build

MODEL = {"import": "tests.models_for_tests:every_container", "vocab_size": 11, "seq_len": 8}


def _built(init: dict[str, Any]) -> Any:
    import torch

    torch.manual_seed(0)
    return build(spec_mod.parse({"model": MODEL, "init": init, "run": {"device": "cpu"}}))


def _xavier(fan_in: int, fan_out: int) -> float:
    return math.sqrt(2.0 / (fan_in + fan_out))


# name -> (fan_in, fan_out) of the map the weight is: packed q/k/v (3 x 64 outputs), four LSTM gates,
# a Conv1D stored (in, out), a depthwise convolution (one input channel, kernel 3), a custom layer
CONTAINERS = {
    "attn.in_proj_weight": (64, 192),
    "attn.out_proj.weight": (64, 64),
    "rnn.weight_ih_l0": (64, 256),
    "rnn.weight_hh_l0": (64, 256),
    "conv1d.weight": (64, 128),
    "depthwise.weight": (3, 384),
    "custom.weight": (128, 64),
}


@pytest.mark.parametrize("name", sorted(CONTAINERS))
def test_init_weight_reaches_every_container(name: str) -> None:
    built = _built({"weight": "xavier_normal"})
    p = dict(built.model.named_parameters())[name]
    n = p.numel()
    # the sample std of n draws from N(0, s^2) has relative standard error 1/sqrt(2 n): 5 of them
    assert p.std().item() == pytest.approx(_xavier(*CONTAINERS[name]), rel=5 / math.sqrt(2 * n))
    assert p.mean().item() == pytest.approx(0.0, abs=5 * _xavier(*CONTAINERS[name]) / math.sqrt(n))
    assert built.init_log.by_param[name] == "init.weight xavier_normal"


def test_the_biases_beside_those_weights_are_filled_too() -> None:
    built = _built({"weight": "xavier_normal", "bias": {"name": "constant", "value": 0.5}})
    params = dict(built.model.named_parameters())
    for name in ("attn.in_proj_bias", "rnn.bias_ih_l0", "rnn.bias_hh_l0", "conv1d.bias", "depthwise.bias"):
        assert bool((params[name] == 0.5).all()), name


def test_what_init_weight_cannot_reach_is_named_once() -> None:
    built = _built({"weight": "xavier_normal"})
    [note] = [n for n in built.notes if n.startswith("init left")]
    assert "3 parameter(s)" in note
    for name in ("cls (1, 1, 64)", "w (64, 64)", "embed.weight (11, 64)"):
        assert name in note
    assert "match: {param: ...}" in note


def test_match_param_reaches_a_parameter_by_its_own_name() -> None:
    built = _built(
        {
            "weight": "xavier_normal",
            "rules": [
                {"match": {"param": "w"}, "weight": "xavier_normal"},
                {"match": {"type": "Embedding"}, "weight": {"name": "normal", "std": 0.02}},
            ],
        }
    )
    params = dict(built.model.named_parameters())
    assert params["w"].std().item() == pytest.approx(_xavier(64, 64), rel=5 / math.sqrt(2 * 64 * 64))
    assert params["embed.weight"].std().item() == pytest.approx(0.02, rel=5 / math.sqrt(2 * 11 * 64))
    [note] = [n for n in built.notes if n.startswith("init left")]
    assert "1 parameter(s)" in note and "cls (1, 1, 64)" in note


def test_a_rule_whose_param_pattern_matches_nothing_is_an_error() -> None:
    with pytest.raises(BuildError, match=r"init.rules\[0\]\.match: matches no module"):
        _built({"rules": [{"match": {"param": "nothing_*"}, "weight": "xavier_normal"}]})


def test_the_cli_prints_what_init_left(cli: Any) -> None:
    result = cli(
        "run",
        "--model",
        "tests.models_for_tests:every_container",
        "--set",
        "model.vocab_size=11",
        "--set",
        "init.weight=he_normal",
        "--set",
        "run.device=cpu",
    )
    assert "init left 3 parameter(s)" in " ".join(result.output.split()), result.output
