"""Rule gaps found by the second red team (benchmarks/redteam2.md): each a minimal reproduction,
xfail (strict) until a rule covers it; a fixed one must lose its mark."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

import probe


def _weight_norm_mlp(direction_std: float | None) -> nn.Sequential:
    """The red team's weight-normalized MLP (32 -> 128 -> 128 -> 128 -> 10, ReLU, every Linear
    under ``torch.nn.utils.parametrizations.weight_norm``); ``direction_std``: draw the direction
    parameters v (``original1``) from N(0, direction_std^2), the magnitudes g as they are."""
    torch.manual_seed(0)
    wn = nn.utils.parametrizations.weight_norm
    dims = [32, 128, 128, 128, 10]
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(itertools.pairwise(dims)):
        layers.append(wn(nn.Linear(a, b)))
        if i < len(dims) - 2:
            layers.append(nn.ReLU())
    net = nn.Sequential(*layers)
    if direction_std is not None:
        with torch.no_grad():
            for m in net.modules():
                if isinstance(m, nn.Linear):
                    m.parametrizations.weight.original1.normal_(0.0, direction_std)
    return net


def _inputs(batch_size: int) -> tuple[torch.Tensor]:
    return (torch.randn(batch_size, 32),)


def test_weight_norm_at_its_default_is_healthy() -> None:
    # (the control: the same network with PyTorch's init, which trains: gain 1.47 nats)
    assert probe.measure(_weight_norm_mlp(None), _inputs, batch_size=16, seed=0).healthy


@pytest.mark.xfail(
    strict=True,
    reason="weight_norm's direction v is the scale-blind tensor (weight = g v / ||v||), but probe reads "
    "the computed weight (rms 0.09, He 0.7) and the parametrization row reads g: v alone at "
    "N(0, 1) (rms 1 = 5 x lr x 200, 20x its default) turns 20x slower and the net gains 0.10 nats of its "
    "default's 1.47 (benchmarks/redteam2.md, rt2/weight_norm_mlp v_normal1), yet it reads healthy",
)
def test_weight_norm_directions_far_over_adams_steps_fail_weight_scale() -> None:
    report = probe.measure(_weight_norm_mlp(1.0), _inputs, batch_size=16, seed=0)
    assert "weight_scale" in {p.rule for p in report.problems}
