"""Correlation collapse: the mean cosine between samples (and between a sequence's tokens), its
mean-field prediction (the correlation map), the ``collapse`` rule and where sweeps show it."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
import torch
from torch import nn

from probe.judge import theory
from probe.judge.rules import evaluate
from probe.measurement.collect import Collector
from probe.measurement.correlation import SAMPLES as _CORRELATION_SAMPLES
from probe.measurement.run import run_probe
from probe.model.network import Watched
from probe.spec import Choice, parse
from tests.conftest import CONFIGS


def _measure(*batches: torch.Tensor, unit_dim: int = -1) -> Any:
    module = nn.Identity()
    units = batches[0].shape[unit_dim]
    collector = Collector([Watched("x", 1, "hidden", module, None, units, unit_dim, None)], torch.device("cpu"))
    with collector.hooks():
        for b in batches:
            module(b)
    return collector.finish()[0]


def _pairwise(rows: torch.Tensor) -> tuple[float, float]:
    """Sum of cosines over ordered pairs of distinct nonzero rows, and the number of such pairs."""
    rows = rows.double()
    rows = rows[rows.norm(dim=1) > 0]
    unit = rows / rows.norm(dim=1, keepdim=True)
    cos = unit @ unit.t()
    n = rows.shape[0]
    return float(cos.sum() - cos.diagonal().sum()), n * (n - 1)


def test_sample_cosine_matches_the_pairwise_reference() -> None:
    g = torch.Generator().manual_seed(0)
    # a shared direction plus noise: every pair has cosine near 0.5; two rows all zero take no part
    shared = torch.randn(1, 3, 5, generator=g)
    a = shared + torch.randn(100, 3, 5, generator=g)
    b = shared + torch.randn(40, 3, 5, generator=g)
    b[3] = 0
    b[7] = 0
    stats = _measure(a, b, unit_dim=1)
    total, pairs = 0.0, 0
    for batch in (a, b):
        s, n = _pairwise(batch[:_CORRELATION_SAMPLES].reshape(min(len(batch), _CORRELATION_SAMPLES), -1))
        total, pairs = total + s, pairs + n
    assert stats.correlation == pytest.approx(total / pairs, rel=1e-5)
    assert 0.3 < stats.correlation < 0.7
    assert stats.token_correlation is None  # channels first: no token axis


def test_many_batches_fold_into_the_same_sums() -> None:
    """Past PENDING batches the records fold into the layer's sums on the device: the pooled mean
    over every batch's pairs is unchanged (sequences too)."""
    from probe.measurement.correlation import PENDING

    g = torch.Generator().manual_seed(5)
    batches = [torch.randn(1, 4, 8, generator=g) + torch.randn(6, 4, 8, generator=g) for _ in range(PENDING + 9)]
    stats = _measure(*batches)
    total = pairs = token_total = token_pairs = 0.0
    for b in batches:
        s, n = _pairwise(b.reshape(len(b), -1))
        total, pairs = total + s, pairs + n
        for seq in b:
            s, n = _pairwise(seq)
            token_total, token_pairs = token_total + s, token_pairs + n
    assert stats.correlation == pytest.approx(total / pairs, rel=1e-5)
    assert stats.token_correlation == pytest.approx(token_total / token_pairs, rel=1e-5)


def test_token_cosine_is_measured_within_each_sequence() -> None:
    g = torch.Generator().manual_seed(1)
    # (samples, tokens, units): each sequence has its own shared direction, so tokens agree within a
    # sequence (cosine ~ 0.8) while samples barely do
    x = 2 * torch.randn(20, 6, 32, generator=g) + torch.randn(20, 1, 32, generator=g) * 4
    stats = _measure(x)
    total, pairs = 0.0, 0
    for seq in x:
        s, n = _pairwise(seq)
        total, pairs = total + s, pairs + n
    assert stats.token_correlation == pytest.approx(total / pairs, rel=1e-5)
    assert stats.token_correlation > 0.6
    assert abs(stats.correlation) < 0.2


def test_one_sample_or_one_value_per_sample_has_no_correlation() -> None:
    assert _measure(torch.randn(1, 8)).correlation is None
    assert _measure(torch.randn(16)).correlation is None


# ---- the correlation map ----------------------------------------------------------------------


def _arccos(c: float) -> float:
    """ReLU's normalized arc-cosine kernel: the next layer's cosine from this one's (Cho & Saul)."""
    return (math.sqrt(1 - c * c) + (math.pi - math.acos(c)) * c) / math.pi


@pytest.mark.parametrize("rho", [-0.9, -0.3, 0.0, 0.5, 0.9, 0.999])
def test_relu_closed_form_matches_quadrature(rho: float) -> None:
    closed = theory.pair_moment(Choice("relu", {"inplace": False}), 0.0, 2.0, 2.0 * rho)
    # leaky_relu with slope 0 is ReLU, but takes the quadrature path
    quad = theory.pair_moment(Choice("leaky_relu", {"negative_slope": 0.0, "inplace": False}), 0.0, 2.0, 2.0 * rho)
    assert quad == pytest.approx(closed, rel=1e-8, abs=1e-12)
    assert closed == pytest.approx(2.0 / 2 * _arccos(rho), rel=1e-12)  # var/2 * k(rho) for var = 2


def test_he_relu_prediction_is_the_iterated_arccosine_map() -> None:
    c, expected = 0.0, []
    for _ in range(50):
        c = _arccos(c)
        expected.append(c)
    p = theory.predict(parse({"model": {"depth": 50, "width": 256}, "init": {"weight": "he"}}))
    got = [t.expected_correlation for t in p.layers]
    assert got == pytest.approx(expected, rel=1e-9)
    assert (round(got[0], 3), round(got[19], 3), round(got[49], 3)) == (0.318, 0.948, 0.988)


def test_odd_activations_keep_independent_inputs_uncorrelated() -> None:
    p = theory.predict(parse({"model": {"depth": 8, "activation": "tanh"}, "init": {"weight": "xavier"}}))
    assert all(abs(t.expected_correlation or 0.0) < 1e-12 for t in p.layers)


def test_a_shared_bias_correlates_samples_as_predicted() -> None:
    # bias N(0, 0.5^2) is shared by every sample: layer 1 pre-activations correlate 0.25 / (1 + 0.25)
    spec = parse(
        {
            "model": {"depth": 4, "width": 1024, "activation": "tanh", "input_dim": 256},
            "init": {"weight": "xavier", "bias": {"name": "normal", "std": 0.5}},
            "data": {"batch_size": 512},
            "run": {"device": "cpu", "seed": 2},
        }
    )
    report, p = run_probe(spec), theory.predict(spec)
    for measured, t in zip(report.layers, p.layers, strict=True):
        assert t.expected_correlation is not None and t.expected_correlation > 0.1
        # 64 samples, 1024 units: each pair's cosine is an average over the units, so its
        # fluctuation is ~1/sqrt(units); pairs share samples, so allow 4/sqrt(units) in all
        assert measured.correlation == pytest.approx(t.expected_correlation, abs=4 / math.sqrt(1024))


def test_measured_he_relu_follows_the_map() -> None:
    spec = parse(
        {
            "model": {"depth": 8, "width": 1024},
            "init": {"weight": "he"},
            "data": {"batch_size": 256},
            "run": {"device": "cpu", "seed": 0},
        }
    )
    report, p = run_probe(spec), theory.predict(spec)
    for measured, t in zip(report.layers, p.layers, strict=True):
        assert measured.correlation == pytest.approx(t.expected_correlation, abs=4 / math.sqrt(1024))


# ---- the rule -----------------------------------------------------------------------------------


def test_fifty_layer_he_relu_collapses_and_the_seed_networks_do_not() -> None:
    deep = parse({"model": {"depth": 50, "width": 256}, "init": {"weight": "he"}, "run": {"device": "cpu", "seed": 0}})
    verdict = evaluate(run_probe(deep))
    collapse = [p for p in verdict.problems if p.rule == "collapse"]
    assert collapse and collapse[0].value > 0.98 and collapse[0].gate_key == "max_correlation"
    for name in ("lab1_he_relu", "lab1_xavier_tanh"):
        from probe.spec import load

        assert "collapse" not in {p.rule for p in evaluate(run_probe(load(CONFIGS / f"{name}.yaml"))).problems}


def test_gate_key_moves_the_threshold(cli: Any) -> None:
    config = str(CONFIGS / "lab1_he_relu.yaml")
    loose = cli("check", config)
    strict = cli("check", config, "--gate", "max_correlation=0.5")
    assert loose.exit_code == 0, loose.output
    assert strict.exit_code == 1 and "collapse" in strict.output


def test_run_shows_cos_and_json_has_correlations(cli: Any) -> None:
    config = str(CONFIGS / "lab1_he_relu.yaml")
    table = cli("run", config)
    assert table.exit_code == 0 and " cos " in table.output
    doc = json.loads(cli("run", config, "-f", "json").stdout)
    layer = doc["layers"][0]
    assert 0.2 < layer["correlation"] < 0.45 and layer["token_correlation"] is None


def test_sweep_says_where_collapse_starts(cli: Any) -> None:
    result = cli("sweep", "--depth", "10,40", "he", "--set", "model.width=256", "--set", "data.batch_size=64")
    assert result.exit_code == 0, result.output
    assert "he: first fails at depth 40" in result.stdout and "collapse" in result.stdout


def test_run_theory_puts_the_predicted_correlation_beside_the_measured(cli: Any) -> None:
    config = str(CONFIGS / "lab1_he_relu.yaml")
    doc = json.loads(cli("run", config, "--theory", "-f", "json").stdout)
    first = doc["layers"][0]
    assert first["expected_correlation"] == pytest.approx(1 / math.pi, rel=1e-9)  # ReLU of independent inputs
    table = cli("run", config, "--theory")
    assert table.exit_code == 0 and "0.318" in table.stdout
