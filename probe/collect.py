"""Hooks: tensors -> on-device running statistics.

Every statistic is a reduction of a tensor the forward or backward pass already produced. The
reductions stay on the device as 0-d tensors (no ``.item()``, so no host synchronization inside a
hook) and are merged across batches in O(layers) memory; ``finish`` reads them all to the host
in one transfer.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from probe.build import Watched
from probe.records import LayerStats

if TYPE_CHECKING:
    import torch


class _Moments:
    """Count, mean and centered second moment, merged batch by batch (Chan et al.) so that the
    variance stays accurate over many batches."""

    def __init__(self, acc_dtype: torch.dtype, device: torch.device) -> None:
        import torch

        self.count = 0
        self.mean = torch.zeros((), dtype=acc_dtype, device=device)
        self.m2 = torch.zeros((), dtype=acc_dtype, device=device)

    def add(self, t: torch.Tensor) -> None:
        import torch

        n = t.numel()
        if n == 0:
            return
        var, mean = torch.var_mean(t, correction=0)
        mean = mean.to(self.mean.dtype)
        m2 = var.to(self.m2.dtype) * n
        total = self.count + n
        delta = mean - self.mean
        self.mean = self.mean + delta * (n / total)
        self.m2 = self.m2 + m2 + delta * delta * (self.count * n / total)
        self.count = total

    def std(self) -> torch.Tensor:
        """Sample standard deviation (n - 1 in the denominator, like ``Tensor.std``)."""
        return (self.m2 / max(self.count - 1, 1)).sqrt()


class _LayerAccumulator:
    def __init__(self, w: Watched, acc_dtype: torch.dtype, device: torch.device) -> None:
        import torch

        self.watched = w
        self.acc_dtype = acc_dtype
        zero = torch.zeros((), dtype=acc_dtype, device=device)
        self.values = _Moments(acc_dtype, device)
        self.grads = _Moments(acc_dtype, device)
        self.weight_grads = _Moments(acc_dtype, device)
        self.zeros = zero.clone()
        self.nonfinite = zero.clone()
        self.saturated = zero.clone()
        self.saturation_known = w.saturation is not None
        self.unit_var_sum = zero.clone()  # sum over samples of the variance across units
        self.unit_var_count = 0
        self.weight_grad_sq = zero.clone()
        self.weight_grad_batches = 0
        self.alive: torch.Tensor | None = None  # per unit: nonzero on some sample

    def forward(self, inputs: tuple[Any, ...], output: Any) -> None:
        import torch

        if isinstance(output, (tuple, list)):  # LSTM, MultiheadAttention: measure the first tensor
            output = next((t for t in output if isinstance(t, torch.Tensor) and t.is_floating_point()), None)
        if not isinstance(output, torch.Tensor) or not output.is_floating_point():
            return
        y = output.detach()
        if y.dtype in (torch.float16, torch.bfloat16):
            y = y.float()
        w = self.watched
        self.values.add(y)
        self.zeros += (y == 0).sum()
        self.nonfinite += y.numel() - torch.isfinite(y).sum()
        unit_dim = w.unit_dim % y.dim()
        other_dims = [d for d in range(y.dim()) if d != unit_dim]
        nonzero = (y != 0).amax(dim=other_dims) if other_dims else (y != 0)
        self.alive = nonzero if self.alive is None else (self.alive | nonzero)
        if w.units > 1:
            per_sample = torch.var(y, dim=unit_dim, correction=0)
            self.unit_var_sum += per_sample.sum()
            self.unit_var_count += per_sample.numel()
        if w.saturation is not None:
            source: torch.Tensor | None = y
            if w.saturation.space == "input":
                x = inputs[0] if inputs else None
                if not isinstance(x, torch.Tensor) or x is output:
                    # in-place module: its input is gone; the ratio cannot be measured
                    self.saturation_known = False
                    source = None
                else:
                    source = x.detach()
            if source is not None:
                low, high = w.saturation.low, w.saturation.high
                mask = None
                if low is not None:
                    mask = source < low
                if high is not None:
                    mask = (source > high) if mask is None else (mask | (source > high))
                if mask is not None:
                    self.saturated += mask.sum()
        if output.requires_grad:
            output.register_hook(self._backward)

    def _backward(self, grad: torch.Tensor) -> None:
        import torch

        g = grad.detach()
        if g.dtype in (torch.float16, torch.bfloat16):
            g = g.float()
        self.grads.add(g)

    def weight_grad(self) -> None:
        """Fold in the gradient of the watched weight after one backward pass."""
        import torch

        p = self.watched.weight
        if p is None or p.grad is None:
            return
        g = p.grad.detach()
        if g.dtype in (torch.float16, torch.bfloat16):
            g = g.float()
        self.weight_grads.add(g)
        self.weight_grad_sq += g.to(self.acc_dtype).pow(2).sum()
        self.weight_grad_batches += 1

    def scalars(self) -> list[torch.Tensor]:
        """Every statistic as a 0-d tensor, in the order ``_to_stats`` reads them."""
        import torch

        v = self.values
        zero = torch.zeros((), dtype=self.acc_dtype, device=v.mean.device)
        std = v.std()
        count = max(v.count, 1)
        if self.alive is None:
            dead = zero
        else:
            dead = (self.alive.numel() - self.alive.sum()).to(self.acc_dtype) / max(self.alive.numel(), 1)
        var_total = v.m2 / count
        mean_unit_var = self.unit_var_sum / max(self.unit_var_count, 1)
        spread = torch.where(var_total > 0, (mean_unit_var / var_total.clamp_min(1e-300)).sqrt(), zero)
        wg_norm = (self.weight_grad_sq / max(self.weight_grad_batches, 1)).sqrt()
        return [
            v.mean,
            std,
            self.zeros / count,
            dead,
            self.saturated / count,
            self.nonfinite,
            spread,
            self.grads.std(),
            wg_norm,
            self.weight_grads.std(),
        ]


class Collector:
    """Attach with ``hooks()``, call ``after_backward()`` after each backward, then ``finish()``."""

    def __init__(self, watched: list[Watched], device: torch.device) -> None:
        import torch

        # float64 keeps many-batch sums exact enough; MPS has no float64.
        acc_dtype = torch.float32 if device.type == "mps" else torch.float64
        self.layers = [_LayerAccumulator(w, acc_dtype, device) for w in watched]
        self.backward_done = False

    @contextmanager
    def hooks(self) -> Iterator[None]:
        handles = []
        try:
            for acc in self.layers:
                handles.append(acc.watched.module.register_forward_hook(_forward_hook(acc)))
            yield
        finally:
            for h in handles:
                h.remove()

    def after_backward(self) -> None:
        self.backward_done = True
        for acc in self.layers:
            acc.weight_grad()

    def finish(self) -> list[LayerStats]:
        """Read every statistic to the host at once and return one record per layer."""
        import torch

        if not self.layers:
            return []
        table = torch.stack([torch.stack(acc.scalars()) for acc in self.layers]).cpu().tolist()
        return [_to_stats(acc, row, self.backward_done) for acc, row in zip(self.layers, table, strict=False)]


def _forward_hook(acc: _LayerAccumulator) -> Any:
    def hook(module: Any, inputs: tuple[Any, ...], output: Any) -> None:
        acc.forward(inputs, output)

    return hook


def _to_stats(acc: _LayerAccumulator, row: list[float], backward: bool) -> LayerStats:
    w = acc.watched
    mean, std, zero_ratio, dead, saturation, nonfinite, spread, grad_std, wg_norm, wg_std = row
    has_grads = backward and acc.grads.count > 0
    has_wgrad = backward and acc.weight_grad_batches > 0
    return LayerStats(
        name=w.name,
        index=w.index,
        kind=w.kind,
        units=w.units,
        count=acc.values.count,
        mean=mean,
        std=std,
        zero_ratio=zero_ratio,
        dead_units=dead,
        saturation_ratio=saturation if acc.saturation_known else None,
        nonfinite=int(nonfinite),
        unit_spread=spread if w.units > 1 else None,
        grad_std=grad_std if has_grads else None,
        weight_grad_norm=wg_norm if has_wgrad else None,
        weight_grad_std=wg_std if has_wgrad else None,
    )
