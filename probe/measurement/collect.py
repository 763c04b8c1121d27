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
- signal-path statistics (probe/measurement/signal_path.py) add in place into a per-layer device
  accumulator: per-sample ||output|| . ||gradient|| (one dot), a block's ||output - input||^2.
- collapse (the centered squared cosine between samples, and between a sequence's tokens):
  ``correlation.py``.

Each record is five 0-d tensors plus three host integers (slot, number of values, a
multiplier). Records pile up to a bound (a few batches' worth) and are then merged into
per-slot accumulators with a few vector ops (Chan et al.'s pairwise update, in float64); the
host integers reach the device as cached tensors built by fill kernels, never by a copy.
``finish`` reads the accumulators and the records still pending in one transfer and merges
those on the host, which for a short run is cheaper than the dozen tiny device ops of a merge.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from probe.errors import RunError
from probe.measurement import counts
from probe.measurement import signal_path as sp
from probe.measurement.attention import AttentionRecorder
from probe.measurement.correlation import PENDING, correlation_record, fold, host_fold
from probe.measurement.counts import widened
from probe.measurement.merge import SlotMoments, host_numbers, merge_host
from probe.measurement.rows import Layer, to_stats
from probe.measurement.saturation import saturated_count
from probe.model.network import Watched, output_tensor
from probe.records import AttentionStats, LayerStats

if TYPE_CHECKING:
    import torch

# A record's device values: c0, b, a (a mean and an M2, see merge.host_numbers), non-finite count,
# saturated count. a of a forward record is the within-sample M2 (for the spread); the last three
# are summed per slot.
_WIDTH = 5
# Merge once this many records per layer have piled up (bounds memory whatever the batch count).
_PENDING_PER_LAYER = 12
# Below this many values one var_mean call is cheaper than mean + subtract + dot.
_SMALL = 4096
# Scratch buffers kept at once (one per activation shape and dtype in use).
_MAX_BUFFERS = 8
# Cached host-integer vectors (one per distinct sequence of records between merges).
_MAX_KEYS = 16


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
    (``L + i``) and its weight's gradient (``2L + i``)."""

    def __init__(self, watched: list[Watched], device: torch.device) -> None:
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
        self._consts: dict[float, torch.Tensor] = {}
        self._keyed: dict[tuple[tuple[int, int, int], ...], torch.Tensor] = {}
        self.attention: AttentionRecorder | None = None  # set by the runner for models that may attend
        self.attention_stats: tuple[AttentionStats, ...] = ()  # filled by finish
        self._stats: list[torch.Tensor] = []  # _WIDTH 0-d tensors per pending record
        self._keys: list[tuple[int, int, int]] = []  # per pending record: slot, values, multiplier
        self.backward_done = False
        self.recomputing = False  # layer by layer: a block's forward again, in the backward pass
        # distributed runs: the part of a whole-batch weight gradient this rank measures
        self.weight_grad_part: Callable[[torch.Tensor], torch.Tensor] | None = None
        self.tick: Callable[[], None] | None = None  # called per row pass (forward, backward): progress

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
        self._keys.append(key)
        self._stats += stats
        if len(self._keys) >= _PENDING_PER_LAYER * len(self.layers):
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
        # 1 where the gradient is nan or inf (as the forward counts): a gradient overflowing in
        # float16 must be reported as such, not as a nan std
        # (a huge gradient, an embedding's 1.05 billion values, in chunks: no scratch copy of it)
        big = n >= counts.LARGE
        nonfinite = (
            counts.nonfinite_in_chunks(flat, self.acc_dtype) if big else counts.nonfinite(flat, self._scratch(flat))
        )
        self._add((slot, n, -1), flat.sum(), zero, torch.dot(flat, flat), nonfinite, zero)

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

    def _forward_hook(self, i: int) -> Any:
        def hook(module: Any, inputs: tuple[Any, ...], output: Any) -> None:
            self._forward(i, inputs, output)
            if self.tick is not None:
                self.tick()

        return hook

    def _forward(self, i: int, inputs: tuple[Any, ...], output: Any) -> None:
        import torch

        if not isinstance(output, torch.Tensor):  # LSTM, MultiheadAttention, a dict: the row's tensor
            output = output_tensor(output, self.layers[i].watched.output_index)
        if not isinstance(output, torch.Tensor) or not output.is_floating_point() or output.numel() == 0:
            return
        if self.recomputing:  # the values were measured in the forward pass: the gradient's hook only
            if output.requires_grad:
                y, scaled = widened(output.detach()), self.layers[i].scaled
                unit = self.layers[i].unit_dims(y.dim())[0] if y.dim() else 0
                norms = sp.position_norms(y, unit) if scaled and y.dim() else None
                output.register_hook(self._backward_hook(i, norms, unit))
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
        # One scratch buffer serves every temporary in turn: with a second, the activation and two
        # temporaries of the seed's small network (256 KiB each) overflow a 512 KiB L2 cache.
        nonfinite = counts.nonfinite(y, within)
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
            self._correlation(layer, y, unit_dim, torch.finfo(output.dtype).eps)
        layer.values += numel
        if units > 1:
            layer.spread_values += numel
        position_norms = None
        if output.requires_grad and layer.scaled and y.dim() >= 1:
            position_norms = sp.position_norms(y, unit_dim)
        if layer.watched.residual:  # the input its output continues (a class-attention block's second)
            k = 0 if layer.watched.stream_input is None else layer.watched.stream_input  # spec blocks: 0
            x = inputs[k] if isinstance(k, int) and k < len(inputs) else None
            layer.residual_values += sp.add_branch(self.extra[i], x, output, y, self._scratch(y))
        if output.requires_grad:
            output.register_hook(self._backward_hook(i, position_norms, unit_dim))
            if not self.backward_done:  # the first batch tells (signal_path.add_unit_gradients)
                self._watch_input(layer, inputs, output, unit_dim, other_dims)
        self._add(key, mean, between_var, within_m2, nonfinite, saturated)

    def _correlation(self, layer: Layer, y: torch.Tensor, unit_dim: int, eps: float) -> None:
        record = correlation_record(y, unit_dim, eps)
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

    def _backward_hook(self, i: int, position_norms: torch.Tensor | None, unit_dim: int) -> Any:
        def hook(grad: torch.Tensor) -> None:

            g = widened(grad.detach())
            if g.numel() == 0:
                return
            layer = self.layers[i]
            layer.grads += g.numel()
            if position_norms is not None:
                layer.scale_samples += sp.add_grad_scale(self.extra[i], position_norms, g, unit_dim)
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
            g = grad.detach()
            passed = torch.ne(g, 0).sum(dim=other_dims, dtype=self.acc_dtype) if other_dims else torch.ne(g, 0)
            passed = passed.to(self.acc_dtype)
            layer.input_grad = passed if layer.input_grad is None else layer.input_grad.add_(passed)

        x.register_hook(hook)

    def output_scale(self, outputs: list[torch.Tensor], directions: list[torch.Tensor]) -> None:
        """Add the network outputs' sum over samples and positions of ||y_bp|| * ||r_bp|| (``r``:
        the loss's direction, d loss / d output): the reference the gradient rules divide by. The
        units of an output are its last dimension (channels for a 4-D image-shaped output)."""
        import torch

        if not self.layers or not self.layers[-1].scaled:
            return  # the gradient rules read the per-value gradient std (a spec MLP): no reference needed
        if self.output_sums.numel() != len(outputs):  # first batch: one sum per output
            self.output_sums = torch.zeros(len(outputs), dtype=self.acc_dtype, device=self.device)
        for k, (y, r) in enumerate(zip(outputs, directions, strict=True)):
            if y.dim() < 1 or y.shape != r.shape or not y.is_floating_point():
                continue
            unit = 1 if y.dim() == 4 else -1
            norms = sp.position_norms(widened(y.detach()), unit)
            self.output_sums[k].add_((norms * sp.position_norms(widened(r.detach()), unit)).sum())
        if outputs and outputs[0].dim():
            self.output_samples += int(outputs[0].shape[0])

    def after_backward(self) -> None:
        """Fold in the gradient of each watched weight after one backward pass."""
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

    def _const(self, value: float) -> torch.Tensor:
        """A 0-d accumulator-dtype tensor on the device, made by a fill kernel (no host copy)."""
        import torch

        t = self._consts.get(value)
        if t is None:
            t = self._consts[value] = torch.full((), value, dtype=self.acc_dtype, device=self.device)
        return t

    def _key_columns(self) -> torch.Tensor:
        """The pending records' host numbers (``merge.host_numbers``) as a device matrix, cached: the
        same layers report in the same order every batch, so it is built once per run."""
        import torch

        key = tuple(self._keys)
        columns = self._keyed.get(key)
        if columns is None:
            if len(self._keyed) >= _MAX_KEYS:
                self._keyed.clear()
            numbers = [host_numbers(k) for k in key]
            if self.device.type == "cpu":  # host memory is device memory: nothing to copy
                columns = torch.tensor(numbers, dtype=self.acc_dtype)
            else:
                columns = torch.stack([self._const(v) for row in numbers for v in row]).view(len(numbers), -1)
            self._keyed[key] = columns
        return columns

    def _merge(self) -> None:
        """Fold every pending record into the per-slot accumulators on the device (a few vector
        ops in all; runs every few batches to keep memory O(layers))."""
        import torch

        if not self._keys:
            return
        slot, n, mult, mean_scale, sq_scale = self._key_columns().unbind(1)
        # stack promotes mixed float32/float64 records to the wider type
        rows = torch.stack(self._stats).to(self.acc_dtype).view(-1, _WIDTH)
        c0, b, a = rows[:, 0], rows[:, 1], rows[:, 2]
        m2 = (a + b * mult - sq_scale * c0 * c0).clamp_min(0)
        index = slot.long()
        self.moments.merge(index, n, c0 * mean_scale, m2)
        self.sums.index_add_(0, index, rows[:, 2:])  # a slice: a list index would be copied from the host
        self._keys, self._stats = [], []

    def finish(self, merge_ranks: Callable[[Collector], None] | None = None) -> list[LayerStats]:
        """Read every statistic to the host at once and return one record per layer. Records
        still pending are merged on the host, in float64 (cheaper than a dozen tiny device ops).
        ``merge_ranks`` (distributed runs) folds the other ranks' statistics in first."""
        import torch

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
        m = self.moments
        alive = [layer.alive for layer in self.layers if layer.alive is not None]
        # the per-unit nonzero counts travel whole (one number per unit, a few KiB): summing and
        # counting them on the host is cheaper than two device reductions per layer
        # the weights' norms (a layer-by-layer run's are on the meta device; an FSDP2 run's sharded)
        weights = [sp.plain_weight(layer.watched.weight) for layer in self.layers]
        weight_norms = sp.weight_norms(weights, self.acc_dtype)
        # each layer's folded cosine sums, then its records not folded yet (raw: summed on the host)
        correlations = [
            t for layer in self.layers for t in ([layer.correlation] if layer.correlation is not None else [])
        ] + [r for layer in self.layers for r in layer.correlation_records]
        attention = self.attention.parts() if self.attention is not None else []
        parts = [m.count, m.mean, m.m2, self.sums.view(-1), self.extra.view(-1), *weight_norms, *alive]
        parts += [*correlations, *attention]
        unit_parts = sp.unit_parts(self.layers)
        parts += [*unit_parts, self.output_sums]
        if self._stats:
            parts.append(torch.stack(self._stats).to(self.acc_dtype))
        flat = torch.cat(parts).cpu().tolist()
        slots = len(self.layers) * 3
        count, mean, m2 = flat[:slots], flat[slots : 2 * slots], flat[2 * slots : 3 * slots]
        sums = flat[3 * slots : 6 * slots]
        extra = flat[6 * slots : 6 * slots + sp.EXTRA * len(self.layers)]
        at = 6 * slots + sp.EXTRA * len(self.layers)
        norms, at = sp.read_weight_norms(weights, flat, at)
        out = []
        lives: list[tuple[float, float, int] | None] = []
        alive_counts: list[list[float] | None] = []
        for layer in self.layers:
            if layer.alive is None:
                lives.append(None)
                alive_counts.append(None)
                continue
            units = layer.alive.numel()
            per_unit = flat[at : at + units]
            at += units
            lives.append((sum(per_unit), units - per_unit.count(0.0), units))
            alive_counts.append(per_unit)
        cosine_sums = [[0.0, 0.0, 0.0, 0.0] for _ in self.layers]
        sampled = [layer.correlation is not None or bool(layer.correlation_records) for layer in self.layers]
        for layer, sums4 in zip(self.layers, cosine_sums, strict=True):
            if layer.correlation is not None:
                sums4[:] = flat[at : at + 4]
                at += 4
        for layer, sums4 in zip(self.layers, cosine_sums, strict=True):
            for record in layer.correlation_records:
                width = record.numel()
                host_fold(flat[at : at + width], sums4)
                at += width
            layer.correlation_records = []
        cosines = [(s[0] / s[1] if s[1] else None, s[2] / s[3] if s[3] else None) for s in cosine_sums]
        identical = [was and not s[1] for was, s in zip(sampled, cosine_sums, strict=True)]
        if self.attention is not None:
            self.attention_stats = self.attention.results(flat[at : at + 4 * len(attention)])
            at += 4 * len(attention)
        units_read, at = sp.read_unit_parts(self.layers, flat, at)
        per_output = [v / self.output_samples for v in flat[at : at + self.output_sums.numel()]]
        at += self.output_sums.numel()
        for r, key in enumerate(self._keys):
            merge_host(key, flat[at + r * _WIDTH : at + (r + 1) * _WIDTH], count, mean, m2, sums)
        self._keys, self._stats = [], []
        for i, (layer, live, cos) in enumerate(zip(self.layers, lives, cosines, strict=True)):
            extra_i = extra[sp.EXTRA * i : sp.EXTRA * (i + 1)]
            unit = sp.unit_fields(alive_counts[i], units_read[i]) if self.backward_done else {}
            if i == len(self.layers) - 1 and self.output_samples and per_output:
                unit["output_grad_scale"] = sum(per_output)
                unit["least_output_grad_scale"] = min(per_output)
            out.append(
                to_stats(
                    layer,
                    i,
                    len(self.layers),
                    count,
                    mean,
                    m2,
                    sums,
                    live,
                    self.backward_done,
                    cos,
                    extra_i,
                    norms[i],
                    {**unit, "samples_identical": identical[i]},
                )
            )
        return out
