"""Hooks: tensors -> on-device running statistics.

Every statistic is a reduction of a tensor the forward or backward pass already produced. The
reductions stay on the device as 0-d tensors (no ``.item()``, so no host synchronization inside a
hook) and are merged across batches in O(layers) memory; ``finish`` reads them all to the host
in one transfer.

Why the reductions look the way they do (measured with torch.profiler, see benchmarks/README.md):
on the CPU, ``var_mean``/``var`` (Welford), ``count_nonzero`` on random data and comparisons that
produce bool tensors are 5-30x slower per element than plain sums, BLAS dot products and
elementwise float ops. So each hook uses only the fast kind:

- moments: per-sample means across units (one reduction), the values centered on them (one
  elementwise op), and a dot product give the within-sample sum of squares; the law of total
  variance adds the between-sample part from the small vector of per-sample means. One pass pair
  yields mean, M2 and the unit spread, all computed from centered values (no cancellation).
- zeros and dead units: ``y != 0`` as floats; its sums over samples count nonzero values per
  unit (a unit whose count stays 0 is dead), and their sum counts zeros.
- non-finite values: ``y - y`` is 0 exactly where ``y`` is finite and nan elsewhere; counted on
  the device at every call, so no hook ever reads a value to the host (that costs about 0.1x of a
  bare pass on the seed's small network, against a host-read shortcut we measured and dropped).

Per-batch results of all layers are stacked and merged into per-layer accumulators with a few
vector ops (Chan et al.'s pairwise update, in float64) instead of a dozen scalar ops per layer.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from probe.build import Watched
from probe.records import LayerStats

if TYPE_CHECKING:
    import torch

# Field order of a forward record (one row per layer call).
_F_MEAN, _F_M2, _F_UNIT_VAR, _F_NONZERO, _F_NONFINITE, _F_SATURATED = range(6)
# Merge pending records once this many per layer have piled up (bounds memory for forward-only runs).
_PENDING_PER_LAYER = 4
# Below this many values one var_mean call is cheaper than mean + subtract + dot.
_SMALL = 4096
# Scratch buffers kept at once (two per activation shape in use).
_MAX_BUFFERS = 8
# Float32 sums of 0/1 values are exact below 2**24 elements; above, count in float64.
_EXACT_F32_COUNT = 2**24


class _Moments:
    """Per-layer count, mean and centered second moment, merged from per-call records."""

    def __init__(self, layers: int, acc_dtype: torch.dtype, device: torch.device) -> None:
        import torch

        self.count = torch.zeros(layers, dtype=acc_dtype, device=device)
        self.mean = torch.zeros(layers, dtype=acc_dtype, device=device)
        self.m2 = torch.zeros(layers, dtype=acc_dtype, device=device)

    def merge(self, index: torch.Tensor, n: torch.Tensor, mean: torch.Tensor, m2: torch.Tensor) -> None:
        """Fold in groups ``i`` (layer ``index[i]``, ``n[i]`` values with ``mean[i]``, ``m2[i]``):
        the pooled mean is a weighted mean, and M2 adds each group's spread around it."""
        import torch

        layers = self.count.shape[0]
        own = torch.arange(layers, device=index.device)
        index = torch.cat([own, index])
        n = torch.cat([self.count, n])
        mean = torch.cat([self.mean, mean])
        m2 = torch.cat([self.m2, m2])
        count = torch.zeros_like(self.count).index_add_(0, index, n)
        total = torch.zeros_like(self.mean).index_add_(0, index, n * mean)
        pooled = total / count.clamp_min(1)
        delta = mean - pooled[index]
        self.m2 = torch.zeros_like(self.m2).index_add_(0, index, m2 + n * delta * delta)
        self.mean = pooled
        self.count = count

    def std(self) -> torch.Tensor:
        """Sample standard deviation (n - 1 in the denominator, like ``Tensor.std``)."""
        return (self.m2 / (self.count - 1).clamp_min(1)).sqrt()


class _Pending:
    """Gradient records not yet merged: layer index, number of values, (mean, M2) as 0-d tensors."""

    def __init__(self) -> None:
        self.index: list[int] = []
        self.n: list[int] = []
        self.stats: list[torch.Tensor] = []

    def add(self, i: int, n: int, mean_m2: tuple[torch.Tensor, torch.Tensor]) -> None:
        self.index.append(i)
        self.n.append(n)
        self.stats += mean_m2


class _Layer:
    """What the collector knows about one watched layer between merges."""

    def __init__(self, w: Watched) -> None:
        self.watched = w
        self.saturation_known = w.saturation is not None
        self.values = 0  # values measured
        self.grads = 0  # gradient values measured
        self.weight_grad_batches = 0
        self.unit_var_count = 0  # samples whose variance across units was measured
        self.alive: torch.Tensor | None = None  # per unit: nonzero values seen (0 = dead so far)


def _float(t: torch.Tensor) -> torch.Tensor:
    import torch

    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


def _count_dtype(t: torch.Tensor) -> torch.dtype:
    import torch

    return torch.float64 if t.numel() >= _EXACT_F32_COUNT else t.dtype


def _mean_m2(t: torch.Tensor, scratch: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and sum of squared deviations of all values (two-pass: centered, then a dot product).
    ``scratch`` (same number of values) receives the centered values instead of a new tensor."""
    import torch

    flat = t.reshape(-1)
    if flat.numel() <= _SMALL:
        # one Welford op beats three fast ones on small vectors (per-op overhead dominates)
        var, mean = torch.var_mean(flat, correction=0)
        return mean, var * flat.numel()
    mean = flat.mean()
    centered = flat - mean if scratch is None else torch.sub(flat, mean, out=scratch.view(-1))
    return mean, torch.dot(centered, centered)


class Collector:
    """Attach with ``hooks()``, call ``after_backward()`` after each backward, then ``finish()``."""

    def __init__(self, watched: list[Watched], device: torch.device) -> None:
        import torch

        # float64 keeps many-batch sums exact enough; MPS has no float64.
        self.acc_dtype = torch.float32 if device.type == "mps" else torch.float64
        self.device = device
        self.layers = [_Layer(w) for w in watched]
        n = len(self.layers)
        self.values = _Moments(n, self.acc_dtype, device)
        self.grads = _Moments(n, self.acc_dtype, device)
        self.weight_grads = _Moments(n, self.acc_dtype, device)
        # per layer: [unit variance sum, nonzero count, nonfinite count, saturated count, weight grad sum of squares]
        self.sums = torch.zeros(n, 5, dtype=self.acc_dtype, device=device)
        self._zero = torch.zeros((), device=device)
        self._buffers: dict[tuple[Any, ...], torch.Tensor] = {}
        # records not yet merged, one per layer call: its layer, its number of values, its 0-d stats
        self._fwd_index: list[int] = []
        self._fwd_n: list[int] = []
        self._fwd_stats: list[torch.Tensor] = []
        self._grad = _Pending()
        self._wgrad = _Pending()
        self.backward_done = False

    def _scratch(self, like: torch.Tensor, slot: int) -> torch.Tensor:
        """A reused buffer shaped like ``like``: temporaries of every layer share the same memory
        instead of each allocating (and fragmenting the heap with) activation-sized tensors."""
        import torch

        key = (slot, tuple(like.shape), like.dtype, like.device)
        buf = self._buffers.get(key)
        if buf is None:
            if len(self._buffers) >= _MAX_BUFFERS:  # many distinct shapes: keep memory bounded
                self._buffers.clear()
            buf = self._buffers[key] = torch.empty_like(like, memory_format=torch.contiguous_format)
        return buf

    @contextmanager
    def hooks(self) -> Iterator[None]:
        handles = []
        try:
            for i, layer in enumerate(self.layers):
                handles.append(layer.watched.module.register_forward_hook(self._forward_hook(i)))
            yield
        finally:
            for h in handles:
                h.remove()

    def _forward_hook(self, i: int) -> Any:
        def hook(module: Any, inputs: tuple[Any, ...], output: Any) -> None:
            self._forward(i, inputs, output)

        return hook

    def _forward(self, i: int, inputs: tuple[Any, ...], output: Any) -> None:
        import torch

        if isinstance(output, (tuple, list)):  # LSTM, MultiheadAttention: measure the first tensor
            output = next((t for t in output if isinstance(t, torch.Tensor) and t.is_floating_point()), None)
        if not isinstance(output, torch.Tensor) or not output.is_floating_point() or output.numel() == 0:
            return
        layer = self.layers[i]
        w = layer.watched
        y = _float(output.detach())
        count_dtype = _count_dtype(y)
        unit_dim = w.unit_dim % y.dim()
        units = y.shape[unit_dim]
        # mean and M2 via the law of total variance over samples (rows across units)
        row_mean = y.mean(dim=unit_dim, keepdim=True)
        within = torch.sub(y, row_mean, out=self._scratch(y, 0))
        within_m2 = torch.dot(within.reshape(-1), within.reshape(-1))
        mean, between_m2 = _mean_m2(row_mean)
        m2 = within_m2 + between_m2 * units
        # Counted on the device at every call: no hook reads a value to the host (one read per run,
        # in finish). A nan is nonzero (torch.sign(nan) is 0 on the CPU, so compare instead).
        nonzero = (y != 0).to(y.dtype)
        # y - y is 0 where y is finite and nan where it is not
        nonfinite = torch.nan_to_num_(torch.sub(y, y, out=self._scratch(y, 1)), nan=1.0).sum(dtype=count_dtype)
        # nonzero values per unit: a unit is dead if its total stays 0 over every batch
        other_dims = [d for d in range(y.dim()) if d != unit_dim]
        per_unit = nonzero.sum(dim=other_dims, dtype=count_dtype) if other_dims else nonzero.to(count_dtype)
        layer.alive = per_unit if layer.alive is None else layer.alive + per_unit
        saturated = self._saturated(layer, inputs, output, y, count_dtype)
        self._fwd_stats += (mean, m2, within_m2 / units, per_unit.sum(), nonfinite, saturated)
        self._fwd_index.append(i)
        self._fwd_n.append(y.numel())
        layer.values += y.numel()
        if units > 1:
            layer.unit_var_count += y.numel() // units
        if output.requires_grad:
            output.register_hook(self._backward_hook(i))
        if len(self._fwd_index) > _PENDING_PER_LAYER * len(self.layers):
            self._merge()

    def _saturated(
        self, layer: _Layer, inputs: tuple[Any, ...], output: Any, y: torch.Tensor, count_dtype: torch.dtype
    ) -> torch.Tensor:
        import torch

        zero = self._zero
        sat = layer.watched.saturation
        if sat is None:
            return zero
        source = y
        if sat.space == "input":
            x = inputs[0] if inputs else None
            if not isinstance(x, torch.Tensor) or x is output:
                # in-place module: its input is gone; the ratio cannot be measured
                layer.saturation_known = False
                return zero
            source = _float(x.detach())
        total = zero
        if sat.low is not None:
            total = total + (source < sat.low).sum(dtype=count_dtype)
        if sat.high is not None:
            total = total + (source > sat.high).sum(dtype=count_dtype)
        return total

    def _backward_hook(self, i: int) -> Any:
        def hook(grad: torch.Tensor) -> None:

            g = _float(grad.detach())
            if g.numel() == 0:
                return
            self._grad.add(i, g.numel(), _mean_m2(g, self._scratch(g, 0)))
            self.layers[i].grads += g.numel()

        return hook

    def after_backward(self) -> None:
        """Fold in the gradient of each watched weight after one backward pass."""

        self.backward_done = True
        for i, layer in enumerate(self.layers):
            p = layer.watched.weight
            if p is None or p.grad is None or p.grad.numel() == 0:
                continue
            g = _float(p.grad.detach())
            self._wgrad.add(i, g.numel(), _mean_m2(g, self._scratch(g, 0)))
            layer.weight_grad_batches += 1
        self._merge()

    def _merge(self) -> None:
        """Fold every pending record into the per-layer accumulators (a few vector ops in all)."""
        if self._fwd_index:
            index, n = self._vectors(self._fwd_index, self._fwd_n)
            rows = self._rows(self._fwd_stats, 6)
            self.values.merge(index, n, rows[:, _F_MEAN], rows[:, _F_M2])
            self.sums[:, :4].index_add_(0, index, rows[:, _F_UNIT_VAR:])
            self._fwd_index, self._fwd_n, self._fwd_stats = [], [], []
        if self._grad.index:
            index, n = self._vectors(self._grad.index, self._grad.n)
            rows = self._rows(self._grad.stats, 2)
            self.grads.merge(index, n, rows[:, 0], rows[:, 1])
            self._grad = _Pending()
        if self._wgrad.index:
            index, n = self._vectors(self._wgrad.index, self._wgrad.n)
            rows = self._rows(self._wgrad.stats, 2)
            self.weight_grads.merge(index, n, rows[:, 0], rows[:, 1])
            # sum of squares = M2 + n * mean^2 (both terms >= 0: no cancellation)
            self.sums[:, 4].index_add_(0, index, rows[:, 1] + n * rows[:, 0] * rows[:, 0])
            self._wgrad = _Pending()

    def _vectors(self, index: list[int], n: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        import torch

        return (
            torch.tensor(index, device=self.device),
            torch.tensor(n, dtype=self.acc_dtype, device=self.device),
        )

    def _rows(self, stats: list[torch.Tensor], width: int) -> torch.Tensor:
        import torch

        # stack promotes mixed float32/float64 records to the wider type
        return torch.stack(stats).to(self.acc_dtype).view(-1, width)

    def finish(self) -> list[LayerStats]:
        """Read every statistic to the host at once and return one record per layer."""
        import torch

        if not self.layers:
            return []
        self._merge()
        v = self.values
        count = v.count.clamp_min(1)
        unit_var_sum, nonzero, nonfinite, saturated, weight_grad_sq = self.sums.unbind(1)
        dead = torch.stack(
            [
                torch.zeros((), dtype=self.acc_dtype, device=self.device)
                if layer.alive is None
                else (layer.alive == 0).sum().to(self.acc_dtype) / max(layer.alive.numel(), 1)
                for layer in self.layers
            ]
        )
        var_total = v.m2 / count
        unit_var_count = torch.tensor(
            [max(layer.unit_var_count, 1) for layer in self.layers], dtype=self.acc_dtype, device=self.device
        )
        mean_unit_var = unit_var_sum / unit_var_count
        spread = torch.where(
            var_total > 0, (mean_unit_var / var_total.clamp_min(1e-300)).sqrt(), torch.zeros_like(var_total)
        )
        batches = torch.tensor(
            [max(layer.weight_grad_batches, 1) for layer in self.layers], dtype=self.acc_dtype, device=self.device
        )
        columns = [
            v.mean,
            v.std(),
            (v.count - nonzero) / count,
            dead,
            saturated / count,
            nonfinite,
            spread,
            self.grads.std(),
            (weight_grad_sq / batches).sqrt(),
            self.weight_grads.std(),
        ]
        table = torch.stack(columns, dim=1).cpu().tolist()
        return [_to_stats(layer, row, self.backward_done) for layer, row in zip(self.layers, table, strict=True)]


def _to_stats(layer: _Layer, row: list[float], backward: bool) -> LayerStats:
    w = layer.watched
    mean, std, zero_ratio, dead, saturation, nonfinite, spread, grad_std, wg_norm, wg_std = row
    has_grads = backward and layer.grads > 0
    has_wgrad = backward and layer.weight_grad_batches > 0
    return LayerStats(
        name=w.name,
        index=w.index,
        kind=w.kind,
        units=w.units,
        count=layer.values,
        mean=mean,
        std=std,
        zero_ratio=zero_ratio,
        dead_units=dead,
        saturation_ratio=saturation if layer.saturation_known else None,
        nonfinite=int(nonfinite),
        unit_spread=spread if w.units > 1 else None,
        grad_std=grad_std if has_grads else None,
        weight_grad_norm=wg_norm if has_wgrad else None,
        weight_grad_std=wg_std if has_wgrad else None,
    )
