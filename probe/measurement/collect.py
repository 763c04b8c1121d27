"""Hooks: tensors -> on-device running statistics.

Every statistic is a reduction of a tensor the forward or backward pass already produced. The
reductions stay on the device as 0-d tensors: no hook reads a value to the host (no ``.item()``)
or copies host data to the device (no ``torch.tensor(list)``), so no hook synchronizes with the
device. Records are merged across batches in O(layers) memory, and ``finish`` reads everything
to the host in one transfer.

Why the reductions look the way they do (measured with torch.profiler, see benchmarks/README.md):
on the CPU, ``var_mean``/``var`` (Welford), ``count_nonzero``, ``isfinite`` and comparisons that
produce bool tensors are 5-30x slower per element than plain sums, BLAS dot products and
elementwise float ops. So each hook uses only the fast kind:

- moments: per-sample means across units (one reduction), the values centered on them (one
  elementwise op), and a dot product give the within-sample sum of squares; the law of total
  variance adds the between-sample part from the small vector of per-sample means. One pass pair
  yields mean, M2 and the unit spread, all computed from centered values (no cancellation).
- non-finite values: ``y - y`` is 0 exactly where ``y`` is finite and nan elsewhere, so
  ``nan_to_num(y - y, nan=1)`` marks them with 1.
- zeros and dead units: ``torch.ne(y, 0, out=<float buffer>)`` is 1 where ``y`` is nonzero (nan
  and inf included) and 0 where it is 0, in one pass (a bool result and its conversion cost
  five times as much). Its sums over samples count nonzero values per unit; a unit whose count
  stays 0 over every batch is dead, and the counts' total is the number of nonzero values.
- gradients: a sum and a dot product (two reads, nothing written), centred in float64 at the
  merge (see ``_add_raw`` for the precision this keeps).
- signal-path statistics (``signal_path.py``) add in place into a per-layer device accumulator:
  per-sample ||output|| . ||gradient|| (one dot), a block's ||output - input||^2; collapse (the
  centered squared cosine between samples, between a sequence's tokens): ``correlation.py``.

Each record is five 0-d tensors plus three host integers (slot, number of values, a
multiplier). Records pile up to a bound (a few batches' worth) and are then merged into
per-slot accumulators with a few vector ops (Chan et al.'s pairwise update, in float64); the
host integers reach the device as cached tensors built by fill kernels, never by a copy
(``merge.PendingRecords``). ``finish`` reads the accumulators and the records still pending in
one transfer and merges those on the host, which for a short run is cheaper than the dozen tiny
device ops of a merge (``collect_read``: the read's parts, named).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import TYPE_CHECKING, Any

from probe.errors import RunError
from probe.measurement import coherence, counts
from probe.measurement import signal_path as sp
from probe.measurement.attention import AttentionRecorder
from probe.measurement.collect_read import read_layers
from probe.measurement.correlation import PENDING, correlation_record, fold, input_values
from probe.measurement.counts import widened
from probe.measurement.merge import PENDING_PER_LAYER, PendingRecords, SlotMoments
from probe.measurement.rows import Layer
from probe.measurement.saturation import saturated_count
from probe.model.network import Watched, measurable, output_tensor
from probe.records import AttentionStats, LayerStats

if TYPE_CHECKING:
    import torch

# Below this many values one var_mean call is cheaper than mean + subtract + dot.
_SMALL = 4096
# Scratch buffers kept at once (one per activation shape and dtype in use).
_MAX_BUFFERS = 8


def _count_dtype(t: torch.Tensor) -> torch.dtype:
    import torch

    return torch.float64 if t.numel() >= counts.LARGE else t.dtype


def _mean_var(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and population variance of all values, from centered values (no cancellation)."""
    import torch

    flat = t.reshape(-1)
    if flat.numel() <= _SMALL:
        # one Welford op beats three fast ones on small vectors (per-op overhead dominates)
        var, mean = torch.var_mean(flat, correction=0)
        return mean, var
    mean = flat.mean()
    centered = flat - mean
    return mean, torch.dot(centered, centered) / flat.numel()


class Collector:
    """Attach with ``hooks()``, call ``after_backward()`` after each backward, then ``finish()``.

    Statistics live in three slots per layer: its output values (slot ``i``), their gradient
    (``L + i``) and its weight's gradient (``2L + i``). ``attention_of``: the model whose attention
    is recorded (``attention.AttentionRecorder``; None: not recorded); ``weight_grad_part``
    (distributed runs): the part of a whole-batch weight gradient this rank measures."""

    def __init__(
        self,
        watched: list[Watched],
        device: torch.device,
        *,
        attention_of: torch.nn.Module | None = None,
        weight_grad_part: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        import torch

        # float64 keeps many-batch sums exact enough; MPS has no float64.
        self.acc_dtype = torch.float32 if device.type == "mps" else torch.float64
        self.device = device
        self.layers = [Layer(w) for w in watched]
        n = len(self.layers)
        self.moments = SlotMoments(3 * n, self.acc_dtype, device)
        # per slot: sums of [M2 part a, non-finite count, saturated count]
        self.sums = torch.zeros(3 * n, 3, dtype=self.acc_dtype, device=device)
        self.extra = torch.zeros(n, sp.EXTRA, dtype=self.acc_dtype, device=device)
        # per network output, the sum of ||y_bp|| ||r_bp|| (``output_scale``); the samples covered
        self.output_sums = torch.zeros(0, dtype=self.acc_dtype, device=device)
        self.output_samples = 0
        if self.layers:
            last = self.layers[-1].watched  # the reference row
            self.layers[-1].scaled = not last.broadcast and bool(last.module_type)
        self._zero = torch.zeros((), device=device)
        self._buffers: dict[tuple[Any, ...], torch.Tensor] = {}
        self._projections: dict[tuple[Any, ...], torch.Tensor] = {}  # coherence.kept_for_coherence's sketches
        self.pending = PendingRecords(self.acc_dtype, device)
        self.attention = AttentionRecorder(attention_of, self.acc_dtype) if attention_of is not None else None
        self.attention_stats: tuple[AttentionStats, ...] = ()  # filled by finish
        self.backward_done = False
        self.recomputing = False  # layer by layer: a block's forward again, in the backward pass
        self.weight_grad_part = weight_grad_part
        # called per row pass (forward, backward): progress; the runner sets it for each batch
        self.tick: Callable[[], None] | None = None

    def _scratch(self, like: torch.Tensor) -> torch.Tensor:
        """A reused buffer shaped like ``like``: temporaries of every layer share the same memory
        instead of each allocating (and fragmenting the heap with) activation-sized tensors."""
        import torch

        key = (like.shape, like.dtype, like.device)
        buf = self._buffers.get(key)
        if buf is None:
            if len(self._buffers) >= _MAX_BUFFERS:  # many distinct shapes: keep memory bounded
                self._buffers.clear()
            buf = self._buffers[key] = torch.empty_like(like, memory_format=torch.contiguous_format)
        return buf

    def _add(self, key: tuple[int, int, int], *stats: torch.Tensor) -> None:
        if self.pending.add(key, *stats) >= PENDING_PER_LAYER * len(self.layers):
            self._merge()

    def _add_raw(self, slot: int, g: torch.Tensor) -> None:
        """A gradient's record from its sum and sum of squares (two reads, nothing written); the
        merge centres them in float64. Gradients of a random-direction loss have mean ~0, so
        M2 = sum of squares - sum^2 / n loses nothing to cancellation here; a gradient whose
        mean is k standard deviations from 0 loses about log10(1 + k^2) digits of its M2."""
        import torch

        flat = g.reshape(-1)
        n = flat.numel()
        zero = self._zero
        # 1 where the gradient is nan or inf (as the forward counts: a float16 overflow is reported as
        # such, not as a nan std); a huge gradient (1.05 billion values) in chunks, no scratch copy
        total = flat.sum()
        if counts.finite_on_cpu(total):
            nonfinite = zero
        elif n >= counts.LARGE:
            nonfinite = counts.nonfinite_in_chunks(flat, self.acc_dtype)
        else:
            nonfinite = counts.nonfinite(flat, self._scratch(flat))
        self._add((slot, n, -1), total, zero, torch.dot(flat, flat), nonfinite, zero)

    @contextmanager
    def hooks(self) -> Iterator[None]:
        handles = []
        try:
            for i, layer in enumerate(self.layers):
                handles.append(layer.watched.module.register_forward_hook(self._forward_hook(i)))
            if self.attention is not None:
                with self.attention.watching():
                    yield
            else:
                yield
        finally:
            for h in handles:
                h.remove()

    def aside(self) -> AbstractContextManager[None]:
        """Outside the attention recorder's function mode: the statistics' own ops (a few dozen per
        row) are no attention, and each would pass through the mode."""
        return self.attention.aside() if self.attention is not None else nullcontext()

    def _forward_hook(self, i: int) -> Any:
        def hook(module: Any, inputs: tuple[Any, ...], output: Any) -> None:
            with self.aside():
                self._forward(i, inputs, output)
            if self.tick is not None:
                self.tick()

        return hook

    def _forward(self, i: int, inputs: tuple[Any, ...], output: Any) -> None:
        import torch

        if not isinstance(output, torch.Tensor):  # LSTM, MultiheadAttention, a dict: the row's tensor
            output = output_tensor(output, self.layers[i].watched.output_index)
        if not isinstance(output, torch.Tensor) or not measurable(output):  # (a call under torch.vmap)
            return
        if self.recomputing:  # the values were measured in the forward pass: the gradient's hook only
            if output.requires_grad:
                y, scaled = widened(output.detach()), self.layers[i].scaled
                unit = self.layers[i].unit_dims(y.dim())[0] if y.dim() else 0
                norms = sp.position_norms(y, unit) if scaled and y.dim() else None
                kept = coherence.kept_for_coherence(y, unit, self._projections) if norms is not None else None
                output.register_hook(self._backward_hook(i, norms, unit, kept))
            return
        layer = self.layers[i]
        y = widened(output.detach())
        numel = y.numel()
        count_dtype = _count_dtype(y)
        unit_dim, other_dims = layer.unit_dims(y.dim())
        units = y.shape[unit_dim]
        # mean and M2 via the law of total variance over samples (rows across units)
        row_mean = y.mean(dim=unit_dim, keepdim=True)
        within = torch.sub(y, row_mean, out=self._scratch(y))
        within_m2 = torch.dot(within.view(-1), within.view(-1))
        mean, between_var = _mean_var(row_mean)
        key = (i, numel, numel)  # between-sample M2 = variance of the row means * rows * units
        # One scratch buffer serves every temporary (with a second, the seed network's activation and
        # two temporaries, 256 KiB each, overflow a 512 KiB L2 cache); a nan or inf makes within_m2 nan
        nonfinite = self._zero if counts.finite_on_cpu(within_m2) else counts.nonfinite(y, within)
        # 1 where y is nonzero (nan and inf included), 0 where it is 0
        nonzero = torch.ne(y, 0, out=within)  # a float output: one pass, where a bool one is slow
        # a 1-D output has no dims to sum over: copy, for .to() of the same dtype (float64 output, or
        # float32 on MPS) would return the shared scratch buffer itself, which the next layer overwrites
        per_unit = nonzero.sum(dim=other_dims, dtype=count_dtype) if other_dims else nonzero.to(count_dtype, copy=True)
        if layer.alive is None:
            layer.alive = per_unit.to(self.acc_dtype)
        else:
            layer.alive.add_(per_unit)
        saturated = saturated_count(layer, inputs, output, y, count_dtype, self._zero)
        if layer.watched.samples_first:  # (rows of batch x patches are not samples: no collapse between them)
            self._correlation(layer, y, inputs, unit_dim, torch.finfo(output.dtype).eps)
        layer.values += numel
        if units > 1:
            layer.spread_values += numel
        position_norms, kept = None, None
        if output.requires_grad and layer.scaled and y.dim() >= 1:
            position_norms = sp.position_norms(y, unit_dim)
            kept = coherence.kept_for_coherence(y, unit_dim, self._projections)
        sp.add_input_mean(self.extra[i], inputs, output, layer.watched, last=i == len(self.layers) - 1)
        if layer.watched.residual:  # the input its output continues (a class-attention block's second)
            k = 0 if layer.watched.stream_input is None else layer.watched.stream_input  # spec blocks: 0
            x = inputs[k] if isinstance(k, int) and k < len(inputs) else None
            layer.residual_values += sp.add_branch(self.extra[i], x, output, y, self._scratch(y))
        if output.requires_grad:
            output.register_hook(self._backward_hook(i, position_norms, unit_dim, kept))
            if not self.backward_done:  # the first batch tells (signal_path.add_unit_gradients)
                self._watch_input(layer, inputs, output, unit_dim, other_dims)
        self._add(key, mean, between_var, within_m2, nonfinite, saturated)

    def _correlation(self, layer: Layer, y: torch.Tensor, inputs: tuple[Any, ...], unit_dim: int, eps: float) -> None:
        bounds = [b for b in (layer.bound, input_values(inputs, y.shape[0])) if b is not None]
        record = correlation_record(y, unit_dim, eps, min(bounds) if bounds else None)
        if record is not None:
            layer.correlation_records.append(record)
            if len(layer.correlation_records) >= PENDING:
                self._fold_correlation(layer)

    def _fold_correlation(self, layer: Layer) -> None:
        if not layer.correlation_records:
            return
        folded = fold(layer.correlation_records, self.acc_dtype)
        layer.correlation = folded if layer.correlation is None else layer.correlation.add_(folded)
        layer.correlation_records = []

    def _backward_hook(
        self, i: int, position_norms: torch.Tensor | None, unit_dim: int, kept: coherence.Kept | None = None
    ) -> Any:
        def hook(grad: torch.Tensor) -> None:
            g = widened(grad.detach())
            if g.numel() == 0:
                return
            layer = self.layers[i]
            layer.grads += g.numel()
            with self.aside():
                if position_norms is not None:
                    layer.scale_samples += sp.add_grad_scale(self.extra[i], position_norms, g, unit_dim, kept)
                self._add_raw(len(self.layers) + i, g)
            if self.tick is not None:
                self.tick()

        return hook

    def _watch_input(
        self, layer: Layer, inputs: tuple[Any, ...], output: Any, unit_dim: int, other_dims: list[int]
    ) -> None:
        """A row without a weight (an activation): count, per unit, the values of its input's
        gradient that are not 0. A unit whose output is 0 for every sample and that passes no
        gradient back (a ReLU negative on every sample) is dead; one whose output is 0 because its
        input is (behind a zero-initialized layer) but passes the gradient on is not
        (``signal_path.dead_fraction``)."""
        import torch

        x = inputs[0] if inputs else None
        if (
            layer.has_own
            or not isinstance(x, torch.Tensor)
            or x is output  # in place: its input is gone (the output's zeros decide alone)
            or not x.requires_grad
            or x.shape != output.shape
        ):
            return

        def hook(grad: torch.Tensor) -> None:
            with self.aside():
                _count_passed(grad.detach())

        def _count_passed(g: torch.Tensor) -> None:
            passed = torch.ne(g, 0).sum(dim=other_dims, dtype=self.acc_dtype) if other_dims else torch.ne(g, 0)
            passed = passed.to(self.acc_dtype)
            layer.input_grad = passed if layer.input_grad is None else layer.input_grad.add_(passed)

        x.register_hook(hook)

    def output_scale(self, outputs: list[torch.Tensor], directions: list[torch.Tensor]) -> None:
        """Add the network outputs' sum over samples and positions of ||y_bp|| * ||r_bp|| (``r``:
        the loss's direction, d loss / d output): the reference the gradient rules divide by. The
        units of an output are its last dimension (channels for a 4-D image-shaped output)."""
        if not self.layers or not self.layers[-1].scaled:
            return  # the gradient rules read the per-value gradient std (a spec MLP): no reference needed
        with self.aside():
            self._output_scale(outputs, directions)

    def _output_scale(self, outputs: list[torch.Tensor], directions: list[torch.Tensor]) -> None:
        import torch

        n = len(outputs)
        if self.output_sums.numel() != 2 * n:  # first batch: per output, the two sums (grad_scale's, coherent)
            self.output_sums = torch.zeros(2 * n, dtype=self.acc_dtype, device=self.device)
        for k, (y, r) in enumerate(zip(outputs, directions, strict=True)):
            if y.dim() < 1 or y.shape != r.shape or not y.is_floating_point():
                continue
            unit = 1 if y.dim() == 4 else -1
            y, r, unit = widened(y.detach()), widened(r.detach()), unit % y.dim()
            per_position = (sp.position_norms(y, unit) * sp.position_norms(r, unit)).sum()
            kept = coherence.kept_for_coherence(y, unit, self._projections)
            self.output_sums[k].add_(per_position)
            self.output_sums[n + k].add_(per_position if kept is None else coherence.coherent_sum(kept, r, unit))
        if outputs and outputs[0].dim():
            self.output_samples += int(outputs[0].shape[0])

    def after_backward(self) -> None:
        """Fold in the gradient of each watched weight after one backward pass."""
        with self.aside():
            self._weight_grads()

    def _weight_grads(self) -> None:
        self.backward_done = True
        base = 2 * len(self.layers)
        for i, layer in enumerate(self.layers):
            if layer.has_own and not layer.units_done and self.weight_grad_part is None:  # (sharded: not measured)
                sp.add_unit_gradients(layer, self.acc_dtype)
            p = layer.watched.weight
            if p is None or p.grad is None:
                continue
            g = p.grad.detach() if self.weight_grad_part is None else self.weight_grad_part(p.grad.detach())
            if g.numel() == 0:
                continue
            layer.weight_grad_batches += 1
            self._add_raw(base + i, widened(g))
            if layer.scale_cos is None and self.weight_grad_part is None and layer.watched.role != "embedding":
                # once, on the first backward (a shard's part has no whole-weight cosine; a table's
                # scale is no fan-in's, weight_scale does not read it): about 6% of a bare forward and
                # backward of GPT-2 small, so not every batch
                layer.scale_cos = sp.scale_cosine(g, p.detach(), self.acc_dtype)

    def _merge(self) -> None:
        """Fold every pending record into the per-slot accumulators on the device (runs every few
        batches to keep memory O(layers))."""
        self.pending.merge(self.moments, self.sums)

    def finish(self, merge_ranks: Callable[[Collector], None] | None = None) -> list[LayerStats]:
        """Read every statistic to the host at once and return one record per layer
        (``collect_read``). ``merge_ranks`` (distributed runs) folds the other ranks' statistics in
        first."""
        if not self.layers:
            return []
        if all(layer.values == 0 for layer in self.layers):
            raise RunError(
                f"none of probe's hooks on the {len(self.layers)} watched rows fired during the measured pass: "
                "the model removed or bypassed its modules' hooks after discovery (clearing _forward_hooks, "
                "say), so nothing was measured"
            )
        if merge_ranks is not None:
            for layer in self.layers:  # what crosses ranks is the folded sums
                self._fold_correlation(layer)
            self._merge()  # pending records into the accumulators: what crosses ranks is O(layers)
            merge_ranks(self)
        layers, self.attention_stats = read_layers(self)
        return layers
