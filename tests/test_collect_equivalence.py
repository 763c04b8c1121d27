"""The optimized collector against a slow plain-torch reference on the same network and data.

The reference keeps every activation and gradient (float64) and computes each statistic with
the textbook formula; the collector must agree within float32 rounding.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Any

import pytest
import torch

from probe import spec as spec_mod
from probe.measurement import run as run_mod
from probe.measurement.rows import Layer
from probe.model.network import Watched
from probe.records import LayerStats
from probe.spec import activations

FIELDS = [
    "mean",
    "std",
    "zero_ratio",
    "dead_units",
    "saturation_ratio",
    "nonfinite",
    "unit_spread",
    "grad_std",
    "weight_grad_norm",
    "weight_grad_std",
    "correlation",
    "tied_spread",
]


def _dead(y: torch.Tensor, weight_grads: list[torch.Tensor], bias_grads: list[torch.Tensor]) -> float:
    """Units 0 for every sample whose weight row and bias receive no gradient in any batch."""
    dead = (y != 0).sum(0).eq(0)
    for g in weight_grads:
        dead &= g.reshape(g.shape[0], -1).abs().sum(1).eq(0)
    for g in bias_grads:
        dead &= g.eq(0)
    return dead.double().mean().item()


def _tie_spread(rows_per_batch: list[torch.Tensor]) -> float:
    """sqrt(sum of squared differences of each unit's row from the first unit's / twice the total
    sum of squares) of (units, rest) matrices: 0 when every unit's row is the same."""
    across = sum(float(((r - r[:1]) ** 2).sum()) for r in rows_per_batch)
    total = sum(float(((r - r.mean()) ** 2).sum()) for r in rows_per_batch)
    return math.sqrt(across / (2 * total)) if total > 0 else 0.0


def _mean_cosine(batches: list[torch.Tensor], bounds: list[int | None]) -> float | None:
    """The collapse statistic, the slow way: over each batch's first 32 samples (the collector's
    sample), each flattened and less their mean, the squared cosine of every pair of distinct
    nonzero rows as an excess over independent rows, b = rho^2 + (1 - rho^2)^2 / D with
    rho = 1/(n - 1) and D the values per sample or the batch's bound, the fewer (the values per
    sample of the model's input or the row's own: correlation.py), pooled over batches by pairs,
    in float64."""
    total, pairs = 0.0, 0.0
    for y, bound in zip(batches, bounds, strict=True):
        rows = y[:32].double().reshape(min(len(y), 32), -1)
        n, width = rows.shape
        width = min(width, bound) if bound is not None else width
        centered = (rows - rows.mean(dim=0))[rows.norm(dim=1) > 0]
        unit = centered / centered.norm(dim=1, keepdim=True)
        cos2 = (unit @ unit.t()) ** 2
        m = unit.shape[0]
        rho = 1 / (n - 1)
        base = rho * rho + (1 - rho * rho) ** 2 / width
        if width >= 2:  # one direction: 0 by construction
            total += (float(cos2.sum() - cos2.diagonal().sum()) - m * (m - 1) * base) / (1 - base)
        pairs += m * (m - 1)
    return total / pairs if pairs else None


class ReferenceCollector:
    """Same interface as probe.collect.Collector; keeps everything and reduces at the end."""

    def __init__(self, watched: list[Watched], device: torch.device, **options: Any) -> None:
        self.watched = watched
        self.outputs: list[list[torch.Tensor]] = [[] for _ in watched]
        self.sources: list[list[torch.Tensor]] = [[] for _ in watched]
        self.bounds: list[list[int | None]] = [[] for _ in watched]
        self.layers = [Layer(w) for w in watched]  # the runner sets each one's bound (correlation.bound_rows)
        self.grads: list[list[torch.Tensor]] = [[] for _ in watched]
        self.weight_grads: list[list[torch.Tensor]] = [[] for _ in watched]
        self.bias_grads: list[list[torch.Tensor]] = [[] for _ in watched]
        self.backward_done = False
        self.attention = None  # not compared here (options: attention_of, weight_grad_part)
        self.attention_stats = ()

    @contextmanager
    def hooks(self) -> Any:
        handles = []
        for i, w in enumerate(self.watched):

            def hook(module: Any, inputs: Any, output: torch.Tensor, i: int = i) -> None:
                self.outputs[i].append(output.detach().double().clone())
                # the directions the samples can differ in: the model's input's values, the row's input's
                own = inputs[0][0].numel() if inputs[0].is_floating_point() else None
                known = [b for b in (self.layers[i].bound, own) if b is not None]
                self.bounds[i].append(min(known) if known else None)
                src = (
                    inputs[0] if self.watched[i].saturation and self.watched[i].saturation.space == "input" else output
                )
                self.sources[i].append(src.detach().double().clone())
                if output.requires_grad:
                    output.register_hook(lambda g, i=i: self.grads[i].append(g.detach().double().clone()))

            handles.append(w.module.register_forward_hook(hook))
        try:
            yield
        finally:
            for h in handles:
                h.remove()

    def output_scale(self, outputs: list[torch.Tensor], directions: list[torch.Tensor]) -> None:
        """The gradient rules' reference; not compared here (a spec MLP's rules read grad_std)."""

    def after_backward(self) -> None:
        self.backward_done = True
        for i, w in enumerate(self.watched):
            if w.weight is not None and w.weight.grad is not None:
                self.weight_grads[i].append(w.weight.grad.detach().double().clone())
            bias = getattr(w.module, "bias", None)
            if isinstance(bias, torch.Tensor) and bias.grad is not None:
                self.bias_grads[i].append(bias.grad.detach().double().clone())

    def finish(self) -> list[LayerStats]:
        out = []
        for i, w in enumerate(self.watched):
            y = torch.cat(self.outputs[i])  # samples x units
            finite = torch.isfinite(y)
            var_total = y.var(correction=0)
            per_sample_var = y.var(dim=-1, correction=0).mean()
            sat = w.saturation
            saturation = None
            if sat is not None:
                x = torch.cat(self.sources[i])
                mask = torch.zeros_like(x, dtype=torch.bool)
                if sat.low is not None:
                    mask |= x < sat.low
                if sat.high is not None:
                    mask |= x > sat.high
                saturation = mask.double().mean().item()
            grads = torch.cat(self.grads[i]) if self.grads[i] else None
            wg = self.weight_grads[i]
            out.append(
                LayerStats(
                    name=w.name,
                    index=w.index,
                    kind=w.kind,
                    units=w.units,
                    count=y.numel(),
                    mean=y.mean().item(),
                    std=y.std().item(),
                    zero_ratio=(y == 0).double().mean().item(),
                    dead_units=_dead(y, wg, self.bias_grads[i]),
                    saturation_ratio=saturation,
                    nonfinite=int((~finite).sum()),
                    unit_spread=(per_sample_var / var_total).sqrt().item() if var_total > 0 else 0.0,
                    grad_std=grads.std().item() if grads is not None else None,
                    weight_grad_norm=math.sqrt(sum(float(g.pow(2).sum()) for g in wg) / len(wg)) if wg else None,
                    weight_grad_std=torch.cat([g.reshape(-1) for g in wg]).std().item() if wg else None,
                    correlation=_mean_cosine(self.outputs[i], self.bounds[i]),
                    # units tied when their weight rows and their (first batch's) weight-gradient rows are alike
                    tied_spread=max(_tie_spread([w.weight.detach().double()]), _tie_spread(wg[:1]))
                    if wg and w.weight is not None and w.units > 1
                    else None,
                )
            )
        return out


def _both(spec: spec_mod.Spec, monkeypatch: pytest.MonkeyPatch) -> tuple[list[LayerStats], list[LayerStats]]:
    fast = run_mod.run_probe(spec).layers
    with monkeypatch.context() as m:
        m.setattr(run_mod, "Collector", ReferenceCollector)
        slow = run_mod.run_probe(spec).layers
    return list(fast), list(slow)


def _assert_close(fast: list[LayerStats], slow: list[LayerStats], rel: float = 2e-5) -> None:
    assert len(fast) == len(slow)
    for f, s in zip(fast, slow, strict=True):
        assert f.count == s.count
        for name in FIELDS:
            a, b = getattr(f, name), getattr(s, name)
            where = f"{f.name}.{name}: fast {a} vs reference {b}"
            if b is None or a is None:
                assert a is None and b is None, where
            elif isinstance(b, float) and math.isnan(b):
                assert math.isnan(a), where
            else:
                # float32 reductions: relative error ~1e-6; absolute floor for values near zero
                assert a == pytest.approx(b, rel=rel, abs=1e-6 * max(1.0, abs(s.std or 0.0))), where


def _spec(**sections: Any) -> spec_mod.Spec:
    raw: dict[str, Any] = {
        "model": {"depth": 3, "width": 24, "input_dim": 10, "output_dim": 4},
        "data": {"batch_size": 48, "batches": 3},
        "run": {"device": "cpu"},
    }
    for key, value in sections.items():
        raw[key] = {**raw.get(key, {}), **value}
    return spec_mod.parse(raw)


@pytest.mark.parametrize("activation", list(activations.ACTIVATIONS))
def test_every_statistic_matches_the_reference(activation: str, monkeypatch: pytest.MonkeyPatch) -> None:
    fast, slow = _both(_spec(model={"activation": activation}, init={"weight": "xavier_normal"}), monkeypatch)
    _assert_close(fast, slow)


@pytest.mark.parametrize(
    ("label", "sections"),
    [
        ("zeros-init-dead-and-symmetric", {"init": {"weight": "zeros"}}),
        (
            "constant-init-symmetric",
            {"init": {"weight": {"name": "constant", "value": 0.1}}, "model": {"activation": "tanh"}},
        ),
        ("large-tanh-saturated", {"init": {"weight": "large"}, "model": {"activation": "tanh"}}),
        ("tiny-relu-vanishing", {"init": {"weight": "tiny"}, "model": {"depth": 6}}),
        ("float64", {"run": {"dtype": "float64"}}),
        ("batchnorm", {"model": {"norm": "batchnorm"}}),
        ("forward-only", {"run": {"backward": False}}),
        ("many-batches", {"data": {"batches": 40, "batch_size": 8}}),
    ],
)
def test_edge_cases_match_the_reference(label: str, sections: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    fast, slow = _both(_spec(**sections), monkeypatch)
    _assert_close(fast, slow)


def test_nonfinite_values_are_counted_exactly(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = _spec(init={"weight": {"name": "normal", "std": 1e30}}, model={"activation": "identity", "depth": 4})
    fast, slow = _both(spec, monkeypatch)
    assert any(layer.nonfinite > 0 for layer in slow)
    assert [f.nonfinite for f in fast] == [s.nonfinite for s in slow]
    assert [f.zero_ratio for f in fast] == pytest.approx([s.zero_ratio for s in slow])
    assert [f.dead_units for f in fast] == pytest.approx([s.dead_units for s in slow])


def test_memory_stays_bounded_over_many_batches() -> None:
    """Pending per-call records are merged at least every few batches: O(layers), not O(batches)."""
    from probe.measurement.collect import Collector
    from probe.measurement.merge import PENDING_PER_LAYER
    from probe.model.build import build

    spec = _spec(run={"backward": False})
    built = build(spec)
    bound = PENDING_PER_LAYER * len(built.watched)
    collector = Collector(built.watched, torch.device("cpu"))
    with collector.hooks(), torch.no_grad():
        for _ in range(200):
            built.model(torch.randn(8, 10))
            assert len(collector.pending.keys) < bound
            assert len(collector.pending.stats) < bound * 5
    assert collector.finish()[0].count == 200 * 8 * 24
    # with backward: three records per layer and batch (values, their gradient, the weight's)
    collector = Collector(built.watched, torch.device("cpu"))
    with collector.hooks():
        for _ in range(200):
            (built.model(torch.randn(8, 10)) ** 2).sum().backward()
            collector.after_backward()
            assert len(collector.pending.keys) < bound
    stats = collector.finish()
    assert stats[0].count == 200 * 8 * 24
    assert stats[0].grad_std is not None and stats[0].weight_grad_norm is not None
