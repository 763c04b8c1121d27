"""Gaps found by the third red team (models from other authors' libraries, docs/corpus.md): each
a minimal reproduction written by hand, fixed."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

import probe


class _L2Norm(nn.Module):
    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return F.normalize(w, dim=-1)


class _NormLinear(nn.Module):
    """nGPT's linear map: a bias-free ``nn.Linear`` whose weight rows are kept on the unit sphere by
    a ``torch.nn.utils.parametrize`` parametrization; the Linear holds no parameter of its own (the
    weight's source lives in ``parametrizations.weight.original``)."""

    def __init__(self, fan_in: int, fan_out: int) -> None:
        super().__init__()
        self.linear = nn.Linear(fan_in, fan_out, bias=False)
        parametrize.register_parametrization(self.linear, "weight", _L2Norm())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)


class _Normalized(nn.Module):
    """A normalized MLP in nGPT's manner: each hidden state projected to the sphere, scaled back."""

    def __init__(self, width: int = 64, depth: int = 3) -> None:
        super().__init__()
        self.maps = nn.ModuleList(_NormLinear(32 if i == 0 else width, width) for i in range(depth))
        self.head = _NormLinear(width, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for m in self.maps:
            x = F.normalize(F.silu(m(x)), dim=-1) * x.shape[-1] ** 0.5
        return self.head(x) * 10.0


def _measured(original_std: float | None) -> probe.Report:
    torch.manual_seed(0)
    model = _Normalized()
    if original_std is not None:
        with torch.no_grad():
            for m in model.modules():
                if parametrize.is_parametrized(m):
                    m.parametrizations.weight.original.normal_(0.0, original_std)
    return probe.measure(model, lambda b: torch.randn(b, 32), batch_size=16, seed=0)


def test_a_parametrized_weight_is_its_modules_row_and_the_parametrization_is_none() -> None:
    # before: the parametrization (its output a weight matrix) was watched as an "embedding" row
    # and the bias-free Linear, holding no parameter of its own, was not watched at all
    report = _measured(None)
    names = [x.name for x in report.stats.layers]
    assert not any("parametrizations" in n for n in names), names
    assert {"maps.0.linear", "maps.2.linear", "head.linear"} <= set(names)
    assert report.healthy, report.verdict_lines()


def test_parametrized_weights_far_over_adams_steps_fail_weight_scale() -> None:
    # the rows' source weights at N(0, 1), 8 x their default's rms (1/sqrt(3 * 64)): the normalization
    # hides their scale from the loss and Adam's steps of about lr turn them 8 x slower; lucidrains'
    # nGPT so drawn gains 0.05 nats of its default's 1.43 (called healthy before: no row read them)
    report = _measured(1.0)
    assert "weight_scale" in {p.rule for p in report.problems}, report.verdict_lines()
