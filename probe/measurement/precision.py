"""Low-precision headroom (``run.precision``): each row's activations, gradients and weights
against a format's range, counted in the hooks of the step-0 pass (docs/precision.md).

``HeadroomCollector`` is the ``Collector`` with four more reductions per tensor it already sees,
on the device and without a host sync: the largest magnitude, the values exactly 0, the values
at or below the format's flush point (a cast turns them into 0) and those below its smallest
normal. No extra forward or backward pass. The comparisons write float 0/1 marks into the
collector's scratch buffer (a bool result and its conversion cost five times as much on the CPU,
see collect.py) and sum them; each sum is exact (below 2**24 values per sum, chunked above).
Weights are counted once, at ``finish``.

The counts are exact where the cast's rounding is: a nonzero float32 value ``x`` becomes 0
exactly when ``|x| <= subnormal / 2`` (round to nearest, ties to even), and a value becomes inf
exactly when ``|x| >= overflow`` (probe/spec/precision.py), so ``amax >= overflow`` says whether
any value of the row overflows. A run in float16 or bfloat16 is counted from its float32 upcast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from probe.measurement import counts
from probe.measurement.collect import Collector
from probe.measurement.signal_path import plain_weight
from probe.model.network import Watched, output_tensor
from probe.records import HeadroomRow, HeadroomStats, LayerStats, Range
from probe.spec.precision import Format

if TYPE_CHECKING:
    from collections.abc import Callable

    import torch

# per slot: the largest magnitude, then counts of values exactly 0, at or below the flush point,
# and below the smallest normal (the last two include the zeros)
_AMAX, _ZEROS, _FLUSH, _BELOW_NORMAL = range(4)
_KINDS = ("activation", "gradient", "weight_gradient")  # the collector's three slots per row


def range_sums(flat: torch.Tensor, fmt: Format, scratch: torch.Tensor | None = None) -> torch.Tensor:
    """``[amax, zeros, at or below the flush point, below the smallest normal]`` of a 1-D float
    tensor, as a 4-vector on its device; ``scratch`` (shaped like ``flat``) holds the marks (else
    a chunk-sized buffer: a very large gradient is counted chunk by chunk)."""
    import torch

    if flat.numel() >= counts.LARGE or scratch is None:
        parts = [_sums(c, fmt, torch.empty_like(c)) for c in flat.split(counts.CHUNK)]
        if len(parts) == 1:
            return parts[0]
        stacked = torch.stack(parts).to(torch.float64)
        return torch.cat([stacked[:, :1].amax(dim=0), stacked[:, 1:].sum(dim=0)])
    return _sums(flat, fmt, scratch)


def _sums(flat: torch.Tensor, fmt: Format, scratch: torch.Tensor) -> torch.Tensor:
    import torch

    marks = torch.abs(flat, out=scratch)
    amax = marks.max()
    below_normal = torch.lt(marks, fmt.normal, out=marks).sum()
    flushed = torch.le(torch.abs(flat, out=marks), fmt.flush, out=marks).sum()
    zeros = torch.eq(flat, 0, out=marks).sum()
    return torch.stack([amax, zeros, flushed, below_normal])


class HeadroomCollector(Collector):
    """The collector, counting each tensor it sees against ``fmt`` too (``headroom()``)."""

    def __init__(
        self,
        watched: list[Watched],
        device: torch.device,
        fmt: Format,
        *,
        attention_of: torch.nn.Module | None = None,
        weight_grad_part: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        import torch

        super().__init__(watched, device, attention_of=attention_of, weight_grad_part=weight_grad_part)
        self.format = fmt
        n = len(self.layers)
        self.ranges = torch.zeros(3 * n, 4, dtype=self.acc_dtype, device=device)
        self.range_values = [0] * (3 * n)
        self._headroom: HeadroomStats | None = None

    def _count(self, slot: int, flat: torch.Tensor) -> None:
        import torch

        if flat.numel() == 0:
            return
        if not flat.is_floating_point() or flat.dtype in (torch.float16, torch.bfloat16):
            flat = flat.float()
        scratch = None if flat.numel() >= counts.LARGE else self._scratch(flat)
        sums = range_sums(flat, self.format, scratch).to(self.acc_dtype)
        row = self.ranges[slot]
        torch.maximum(row[:1], sums[:1], out=row[:1])
        row[1:].add_(sums[1:])
        self.range_values[slot] += flat.numel()

    def _forward(self, i: int, inputs: tuple[Any, ...], output: Any) -> None:
        import torch

        super()._forward(i, inputs, output)
        if self.recomputing:
            return
        y = output if isinstance(output, torch.Tensor) else output_tensor(output, self.layers[i].watched.output_index)
        if isinstance(y, torch.Tensor) and y.is_floating_point():
            self._count(i, y.detach().reshape(-1))

    def _add_raw(self, slot: int, g: torch.Tensor) -> None:
        super()._add_raw(slot, g)
        self._count(slot, g.detach().reshape(-1))

    def finish(self, merge_ranks: Callable[[Collector], None] | None = None) -> list[LayerStats]:
        layers = super().finish(merge_ranks)
        self._headroom = self._read()
        return layers

    def headroom(self) -> HeadroomStats | None:
        """What ``finish`` read (None before it)."""
        return self._headroom

    def _read(self) -> HeadroomStats:
        import torch

        weights = [plain_weight(layer.watched.weight) for layer in self.layers]
        weight_sums = [
            range_sums(w.detach().reshape(-1).float(), self.format) if w is not None else None for w in weights
        ]
        parts = [self.ranges.view(-1), *[s.to(self.acc_dtype) for s in weight_sums if s is not None]]
        flat = torch.cat(parts).cpu().tolist()
        n = len(self.layers)

        def at(slot: int) -> Range | None:
            values = self.range_values[slot]
            return _range(flat[4 * slot : 4 * slot + 4], values) if values else None

        at_weight = 12 * n
        rows = []
        for i, layer in enumerate(self.layers):
            weight = None
            if weights[i] is not None:
                weight = _range(flat[at_weight : at_weight + 4], weights[i].numel())  # type: ignore[union-attr]
                at_weight += 4
            rows.append(HeadroomRow(layer.watched.name, at(i), at(n + i), at(2 * n + i), weight))
        return HeadroomStats(self.format.name, tuple(rows))


def _range(sums: list[float], values: int) -> Range:
    amax, zeros, flushed, below_normal = sums
    return Range(
        amax=amax,
        values=values,
        nonzero=values - int(zeros),
        flushed=int(flushed - zeros),
        subnormal=int(below_normal - zeros),
    )
