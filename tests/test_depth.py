"""Depth limits against the linear closed form, and the edge of chaos by its defining property."""

from __future__ import annotations

import itertools
import json
import math

import pytest
from typer.testing import CliRunner

from probe.cli import app
from probe.judge import depth, gaussian
from probe.spec import Choice, parse


def _linear_limits(input_dim: int, width: int, std: float, max_depth: int) -> tuple[int | None, int | None]:
    """A linear network: std_l = sqrt(input_dim s^2 (width s^2)^(l-1)), grad ratio of layer 1 = chi^((D-1)/2)."""
    gain = width * std**2
    first = math.sqrt(input_dim * std**2)
    forward = next(
        (
            d
            for d in range(1, max_depth + 1)
            if (s := first * gain ** ((d - 1) / 2)) < 1e-2 or s / first < 1e-2 or s > 1e2 or s / first > 1e2
        ),
        None,
    )
    grad = next(
        (d for d in range(2, max_depth + 1) if not 1e-2 <= math.sqrt(gain) ** (d - 1) <= 1e2),
        None,
    )
    return forward, grad


@pytest.mark.parametrize("std", [0.05, 0.08, 0.1, 0.11, 0.2], ids=lambda s: f"std{s}")
def test_linear_network_limits_match_the_closed_form(std: float) -> None:
    spec = parse({"model": {"input_dim": 32, "width": 100, "activation": "identity"}})
    limit = depth.depth_limit(spec, Choice("normal", {"std": std, "mean": 0.0}), max_depth=200)
    forward, grad = _linear_limits(32, 100, std, 200)
    assert limit.forward_depth == forward
    assert limit.gradient_depth == grad
    assert limit.sigma_w2 == pytest.approx(100 * std**2)


def test_relu_with_he_never_breaks() -> None:
    spec = parse({"model": {"activation": "relu"}})
    limit = depth.depth_limit(spec, Choice("he_normal", {"mode": "fan_in", "nonlinearity": None, "a": None}), 300)
    assert limit.forward_depth is None and limit.gradient_depth is None
    assert limit.chi_deep == pytest.approx(1.0, rel=1e-12)


def test_disabled_rules_are_not_limits() -> None:
    spec = parse({"model": {"activation": "identity"}, "gate": {"disable": ["vanishing", "gradient_vanishing"]}})
    limit = depth.depth_limit(spec, Choice("tiny"), 50)
    assert limit.forward_depth is None and limit.gradient_depth is None


def test_tanh_edge_of_chaos_without_bias_is_sigma_w2_one() -> None:
    point = depth.edge_of_chaos(Choice("tanh"), 0.0)
    # above sigma_w^2 = 1, chi - 1 grows like (sigma_w^2 - 1)^2 only: quadrature noise of 1e-13 in
    # chi leaves sigma_w^2 determined to about sqrt(1e-13), so 1e-5 is the honest tolerance
    assert point.sigma_w2 == pytest.approx(1.0, abs=1e-5)
    assert depth.fixed_point(Choice("tanh"), 0.9, 0.0) == 0.0  # ordered: the signal dies


@pytest.mark.parametrize("sigma_b2", [0.05, 0.3])
@pytest.mark.parametrize("act", ["tanh", "sigmoid"])
def test_edge_point_is_a_fixed_point_with_chi_one(act: str, sigma_b2: float) -> None:
    point = depth.edge_of_chaos(Choice(act), sigma_b2)
    assert point.sigma_w2 is not None and point.q_star is not None
    g = gaussian.gaussian_moments(Choice(act), 0.0, point.q_star)
    assert point.sigma_w2 * g.second + sigma_b2 == pytest.approx(point.q_star, rel=1e-6)
    assert point.sigma_w2 * g.grad2 == pytest.approx(1.0, rel=1e-6)


def test_edge_moves_up_with_bias_variance() -> None:
    result = depth.analyze(parse({"model": {"activation": "tanh"}}), ["tiny"], max_depth=20)
    gains = [e.sigma_w2 for e in result.edge]
    assert all(a is not None and b is not None and a < b for a, b in itertools.pairwise(gains))


def test_no_prediction_rows_and_no_edge_for_relu() -> None:
    result = depth.analyze(parse({"model": {"activation": "relu"}}), ["ones", "he"], max_depth=20)
    assert [x.strategy for x in result.limits] == ["he_normal", "ones"]
    assert result.limits[1].reason is not None and "mean 1" in result.limits[1].reason
    assert result.edge == () and result.edge_reason is not None


runner = CliRunner()


def test_cli_depth() -> None:
    args = ["depth", "configs/lab1_xavier_tanh.yaml", "--strategy", "tiny", "--max-depth", "60", "-f", "json"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    by_name = {row["strategy"]: row for row in data["limits"]}
    assert by_name["xavier_normal"]["forward_depth"] is None
    assert by_name["tiny"]["forward_rule"] == "vanishing"
    assert data["edge_of_chaos"][0]["sigma_w2"] == pytest.approx(1.0, abs=1e-5)
    table = runner.invoke(app, ["depth", "configs/lab1_he_relu.yaml", "--strategy", "tiny", "--max-depth", "30"])
    assert table.exit_code == 0 and "no edge of chaos" in table.stdout
    bad = runner.invoke(app, ["depth", "configs/lab1_he_relu.yaml", "--strategy", "tinyy"])
    assert bad.exit_code == 2 and "did you mean 'tiny'" in " ".join(bad.output.split())


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (["configs/transformer_gpt.yaml"], "no prediction for model.kind 'transformer'"),
        (["configs/cnn_he.yaml"], "no prediction for model.kind 'conv'"),
        (["configs/lab1_he_relu.yaml", "--set", "model.norm=layernorm"], "no prediction with model.norm 'layernorm'"),
    ],
    ids=["transformer", "conv", "mlp-layernorm"],
)
def test_cli_depth_without_a_theory_is_one_clear_line(args: list[str], reason: str) -> None:
    result = runner.invoke(app, ["depth", *args])
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert f"probe depth: {reason}" in text
    assert "strategy" not in text and text.count("no prediction") == 1  # no table of the same reason
