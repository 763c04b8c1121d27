"""``rank_one_step`` on a small hand-written model (tests/mechanism_models.EulerMLP): weights x 1e-3
under PyTorch's default biases make the output layer's input a constant plus a trace of the
sample, so its first Adam update, ``-lr * sign(G)``, is rank one and replaces the weight
(docs/verdicts.md). Trained (``benchmarks/rank_one_step.py``, 200 AdamW steps on the zoo's vector
task): default 1.60 nats, x 0.1 1.00 (healthy), x 1e-2 0.64 and x 1e-3 0.55 (rank_one_step errors)."""

from __future__ import annotations

import math

import pytest
import torch

import probe
from probe.judge.rank_one import after_first_step, excess_share, random_share, rank_one_rows
from probe.measurement.first_update import rank_one_share
from tests import mechanism_models as mm

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _measure(**kw: float) -> probe.Report:
    torch.manual_seed(0)
    return probe.measure(mm.EulerMLP(**kw), torch.randn(64, 32), seed=0)  # type: ignore[arg-type]


def _errors(report: probe.Report) -> set[str]:
    return {p.rule for p in report.verdict.problems}


def test_tiny_weights_over_default_biases_make_the_output_layer_rank_one_after_one_step() -> None:
    report = _measure(scale=1e-3)
    head = report.layer("head")
    assert head.update_rank_share is not None and head.update_rank_share > 0.9  # sign(G) ~ one outer product
    assert head.weight_rms is not None and head.weight_rms < report.stats.spec.run.lr / 10
    assert _errors(report) == {"rank_one_step"}, report.verdict.problems  # the other rules warn at most
    (problem,) = report.verdict.problems
    assert problem.layer == "head" and problem.value > 0.9 and problem.severity == "error"


def test_under_sgd_the_first_step_is_as_small_as_the_gradient_and_the_rule_is_silent() -> None:
    torch.manual_seed(0)
    report = probe.measure(mm.EulerMLP(scale=1e-3), torch.randn(64, 32), seed=0, gate={"optimizer": "sgd"})  # type: ignore[arg-type]
    assert "rank_one_step" not in {p.rule for p in (*report.verdict.problems, *report.verdict.warnings)}


def test_weights_at_their_scale_keep_their_directions() -> None:
    # the same network at PyTorch's default: the update is lr per element against a weight of rms
    # ~0.07, so after one step at most (lr / rms)^2 ~ 2e-4 of it can lie on any one direction
    report = _measure()
    rms = report.layer("head").weight_rms
    assert rms is not None
    (_row, value) = rank_one_rows(report.stats)[0]
    assert value is not None and value <= (report.stats.spec.run.lr / rms) ** 2
    assert "rank_one_step" not in _errors(report) and report.healthy


def test_an_input_that_varies_gives_no_rank_one_update() -> None:
    # x 1e-3 weights with zero biases: every hidden value is proportional to the sample, so the
    # gradient's sign is not one outer product (the network is judged by vanishing instead)
    report = _measure(scale=1e-3, bias_scale=0.0)
    head = report.layer("head")
    assert head.update_rank_share is not None and head.update_rank_share < 0.5
    assert "rank_one_step" not in _errors(report)


def test_two_classes_need_one_direction_and_are_not_judged() -> None:
    report = _measure(scale=1e-3, classes=2)
    assert rank_one_rows(report.stats) == []
    assert "rank_one_step" not in _errors(report)


def test_the_share_reads_one_for_an_outer_product_and_the_random_edge_for_independent_signs() -> None:
    gen = torch.Generator().manual_seed(0)
    u, c = torch.randn(10, 1, generator=gen), torch.randn(1, 64, generator=gen)
    assert float(rank_one_share(u @ c, torch.float64)) == pytest.approx(1.0, abs=1e-5)
    shares = [float(rank_one_share(torch.randn(10, 64, generator=gen), torch.float64)) for _ in range(20)]
    mean = sum(shares) / len(shares)
    # Marchenko-Pastur's edge (sqrt(m) + sqrt(n))^2 / (m n) is an upper estimate at these sizes
    assert 0.5 * random_share(10, 64) < mean <= random_share(10, 64)
    assert excess_share(mean, 10, 64) == 0.0 and excess_share(1.0, 10, 64) == 1.0
    assert float(rank_one_share(torch.zeros(10, 64), torch.float64)) == 0.0


def test_after_first_step_is_the_update_share_of_the_weight_energy() -> None:
    lr = 1e-3
    assert after_first_step(1.0, 0.0, lr) == 1.0  # a zero weight is its update
    assert after_first_step(1.0, lr, lr) == pytest.approx(0.5)  # a weight as large as the update: half
    assert after_first_step(1.0, 0.07, lr) == pytest.approx(lr**2 / (0.07**2 + lr**2))
    assert math.isclose(after_first_step(0.6, 1e-5, lr), 0.6 * lr**2 / (1e-10 + lr**2))


def _far_below_lr(std: float) -> torch.nn.Module:
    # a LayerNorm MLP drawn at N(0, std^2), biases 0: at 1e-10 each LayerNorm's input variance
    # (~1e-19) is far under its eps (1e-5), so nothing renormalizes and the signal stays ~1e-7
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(32, 64),
        torch.nn.LayerNorm(64),
        torch.nn.ReLU(),
        torch.nn.Linear(64, 64),
        torch.nn.LayerNorm(64),
        torch.nn.ReLU(),
        torch.nn.Linear(64, 10),
    )
    for m in model:
        if isinstance(m, torch.nn.Linear):
            torch.nn.init.normal_(m.weight, std=std)
            torch.nn.init.zeros_(m.bias)
    return model


def test_weights_far_below_lr_are_redrawn_by_adams_first_step() -> None:
    from probe.judge.mechanisms import REDRAW

    x = torch.randn(64, 32, generator=torch.Generator().manual_seed(1))
    # 1e-10 is 7 decades under lr 1e-3: Adam's first step (about lr per element) replaces every
    # weight by lr * sign(gradient), whose signs vary with the samples: the step-0 signal says
    # nothing about training (SAM's initializer_range 1e-10 trains, AdamW gain 0.91)
    report = probe.measure(_far_below_lr(1e-10), x, seed=0)
    assert all((r.weight_rms or 0) < report.stats.spec.run.lr / REDRAW for r in report.layers if r.weight_size)
    assert report.verdict.healthy, report.verdict.problems
    vanishing = [p for p in report.verdict.warnings if p.rule == "vanishing"]
    assert vanishing and all("redraws" in p.message for p in vanishing)
    # SGD's steps are as small as the vanishing gradient: an error there
    sgd = probe.measure(_far_below_lr(1e-10), x, seed=0, gate={"optimizer": "sgd"})
    assert "vanishing" in {p.rule for p in sgd.verdict.problems}
    # exactly 0 is not redrawn into anything new (tied rows stay tied)
    assert not probe.measure(_far_below_lr(0.0), x, seed=0).verdict.healthy
    # x 1e-3 of a default keeps its step-0 verdict: 1e-5 is over lr / REDRAW
    assert "vanishing" in {p.rule for p in probe.measure(_far_below_lr(1e-5), x, seed=0).verdict.problems}
