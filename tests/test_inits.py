"""Each init strategy's variance against its formula (from the seeds), with a statistical tolerance.

The sample variance of n i.i.d. draws has relative standard error sqrt((kurtosis - 1) / n):
sqrt(2/n) for a normal, sqrt(0.8/n) for a uniform. Assertions allow 6 standard errors.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch

from probe import spec as spec_mod
from probe.model.build import build
from probe.spec import inits

FAN_OUT, FAN_IN = 256, 512
N = FAN_OUT * FAN_IN
TANH_GAIN = 5.0 / 3.0


def _phi(x: float) -> float:
    return math.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)


def _Phi(x: float) -> float:
    return 0.5 * (1 + math.erf(x / math.sqrt(2)))


# variance of N(0, 1) truncated to [-2, 2]
TRUNC2 = 1 - 2 * 2 * _phi(2) / (2 * _Phi(2) - 1)

# (strategy as written in a spec, activation, expected variance, kurtosis of the distribution)
CASES: list[tuple[Any, str, float, float]] = [
    ("tiny", "relu", 0.01**2, 3.0),
    ("large", "relu", 1.0, 3.0),
    ({"name": "normal", "std": 0.05}, "relu", 0.05**2, 3.0),
    ({"name": "uniform", "a": 0.1}, "relu", 0.1**2 / 3, 1.8),
    ("xavier_uniform", "tanh", 2 / (FAN_IN + FAN_OUT), 1.8),
    ("xavier_normal", "tanh", 2 / (FAN_IN + FAN_OUT), 3.0),
    ({"name": "xavier_normal", "gain": "auto"}, "tanh", TANH_GAIN**2 * 2 / (FAN_IN + FAN_OUT), 3.0),
    ({"name": "xavier_uniform", "gain": 2.0}, "relu", 4 * 2 / (FAN_IN + FAN_OUT), 1.8),
    ("he_normal", "relu", 2 / FAN_IN, 3.0),
    ("he_uniform", "relu", 2 / FAN_IN, 1.8),
    ({"name": "he_normal", "mode": "fan_out"}, "relu", 2 / FAN_OUT, 3.0),
    ("he_normal", {"name": "leaky_relu", "negative_slope": 0.2}, 2 / ((1 + 0.2**2) * FAN_IN), 3.0),
    ("he_normal", "tanh", TANH_GAIN**2 / FAN_IN, 3.0),
    ({"name": "he_normal", "nonlinearity": "relu"}, "tanh", 2 / FAN_IN, 3.0),
    ("lecun_normal", "selu", 1 / FAN_IN, 3.0),
    ("lecun_uniform", "selu", 1 / FAN_IN, 1.8),
    ({"name": "trunc_normal", "std": 0.02}, "relu", 0.02**2 * TRUNC2, 3.0),
    ("orthogonal", "relu", 1 / FAN_IN, 3.0),
]


def _fill(strategy: Any, activation: Any, shape: tuple[int, ...] = (FAN_OUT, FAN_IN)) -> torch.Tensor:
    spec = spec_mod.parse({"init": {"weight": strategy}, "model": {"activation": activation}})
    weight = spec.init.weight
    act = spec.model.activation
    t = torch.zeros(shape)  # not empty(): "default" keeps what is there, and empty memory may hold nan
    torch.manual_seed(1234)
    inits.apply(t, weight.name, weight.params, inits.InitContext(act.name, act.params))
    return t


@pytest.mark.parametrize(("strategy", "activation", "variance", "kurtosis"), CASES, ids=lambda v: str(v))
def test_each_strategys_own_rule_is_the_formula(
    strategy: Any, activation: Any, variance: float, kurtosis: float
) -> None:
    """The rule the registry declares (asked by theory and inspect) is the seeds' formula; the test
    below holds the fill to the same formula, so fill, theory and inspect cannot disagree."""
    spec = spec_mod.parse({"init": {"weight": strategy}, "model": {"activation": activation}})
    act = spec.model.activation
    m = inits.moments(
        spec.init.weight.name,
        spec.init.weight.params,
        inits.InitContext(act.name, act.params),
        (FAN_OUT, FAN_IN),
        FAN_IN,
    )
    assert m is not None and m.mean == 0.0
    assert m.var == pytest.approx(variance, rel=1e-12)


def test_every_strategy_but_lsuv_and_reset_has_a_variance_rule() -> None:
    # lsuv is data-dependent; reset draws each module's own law again (PyTorch's or a library's)
    assert sorted(n for n, s in inits.STRATEGIES.items() if s.rule is None) == ["lsuv", "reset"]


def test_orthogonal_rule_on_a_conv_weight_uses_the_flattened_matrix() -> None:
    # (8, 3, 3, 3): 8 rows of 27 columns, so the rows are orthonormal: entry variance 1/27
    t = torch.zeros(8, 3, 3, 3)
    torch.manual_seed(0)
    inits.apply(t, "orthogonal", {"gain": 1.0}, inits.InitContext())
    m = inits.moments("orthogonal", {"gain": 1.0}, inits.InitContext(), (8, 3, 3, 3), 27)
    assert m is not None
    assert (t.flatten(1) ** 2).sum(1).mean().item() == pytest.approx(27 * m.var, rel=1e-5)


@pytest.mark.parametrize(("strategy", "activation", "variance", "kurtosis"), CASES, ids=lambda v: str(v))
def test_variance_matches_formula(strategy: Any, activation: Any, variance: float, kurtosis: float) -> None:
    w = _fill(strategy, activation).double()
    tolerance = 6 * math.sqrt((kurtosis - 1) / N)
    assert abs(w.mean().item()) < 6 * math.sqrt(variance / N)
    assert w.var().item() == pytest.approx(variance, rel=tolerance)


def test_uniform_stays_within_its_bound() -> None:
    w = _fill({"name": "uniform", "a": 0.1}, "relu")
    assert w.abs().max().item() <= 0.1


def test_trunc_normal_default_cut_is_two_std() -> None:
    w = _fill({"name": "trunc_normal", "std": 0.02}, "relu")
    assert w.abs().max().item() <= 0.04


def test_orthogonal_rows_are_orthonormal_times_gain() -> None:
    w = _fill({"name": "orthogonal", "gain": 1.5}, "relu").double()
    assert torch.allclose(w @ w.T, 1.5**2 * torch.eye(FAN_OUT, dtype=torch.float64), atol=1e-5)


@pytest.mark.parametrize(
    ("strategy", "value"), [("zeros", 0.0), ("ones", 1.0), ({"name": "constant", "value": 0.3}, 0.3)]
)
def test_constant_strategies(strategy: Any, value: float) -> None:
    w = _fill(strategy, "relu")
    assert torch.all(w == value)


def test_default_keeps_torchs_own_initialization() -> None:
    spec = spec_mod.parse({"model": {"depth": 1, "input_dim": 8, "width": 4}, "init": {"weight": "default"}})
    torch.manual_seed(5)
    model = build(spec).model
    torch.manual_seed(5)
    reference = torch.nn.Linear(8, 4)
    assert torch.equal(model.linear1.weight, reference.weight)


def test_bias_and_norm_initialization() -> None:
    spec = spec_mod.parse(
        {
            "model": {"depth": 2, "width": 16, "norm": "layernorm"},
            "init": {"weight": "he", "bias": {"name": "constant", "value": 0.1}},
        }
    )
    model = build(spec).model
    assert torch.all(model.linear1.bias == 0.1)
    assert torch.all(model.norm1.weight == 1) and torch.all(model.norm1.bias == 0)


def test_every_registered_strategy_runs_on_a_weight() -> None:
    for name in inits.STRATEGIES:
        t = _fill(name, "relu", shape=(8, 16))
        assert torch.isfinite(t).all(), name
