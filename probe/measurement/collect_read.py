"""The collector's one host read: every accumulator listed by name in a ``Layout`` (each part a
tensor, its length that tensor's size), concatenated and read to the host with one ``.tolist()``,
then decoded part by part, by name, into one ``LayerStats`` per layer. Records still pending are
merged on the host, in float64 (for a short run cheaper than the dozen tiny device ops of a merge).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from probe.measurement import signal_path as sp
from probe.measurement.correlation import WIDTH, host_fold
from probe.measurement.rows import to_stats
from probe.records import AttentionStats, LayerStats

if TYPE_CHECKING:
    from collections.abc import Iterable

    import torch

    from probe.measurement.collect import Collector

# The parts of the read, in the order they travel.
Part = Literal[
    "count",  # per slot (3 per layer: values, their gradient, the weight's gradient): values merged
    "mean",  # per slot: the mean
    "m2",  # per slot: the centered second moment
    "sums",  # per slot: [within-sample M2, non-finite count, saturated count]
    "extra",  # per layer: signal_path.EXTRA sums (the residual branch, the gradient scale)
    "weight_norms",  # one per layer with a weight
    "alive",  # per layer that saw values: each unit's nonzero count
    "correlation",  # per layer with folded cosine sums: 4 values
    "correlation_records",  # each record not folded yet, layer after layer
    "attention",  # per attention module: 4 sums
    "units",  # signal_path.unit_parts: per-unit gradients and ties
    "output_sums",  # per network output: the gradient rules' reference
    "pending",  # the records not merged yet: merge.WIDTH values each
]


@dataclass
class Layout:
    """The parts of the flat read, in order: each under its name (a name may have several)."""

    parts: list[tuple[Part, torch.Tensor]] = field(default_factory=list)

    def add(self, name: Part, tensors: Iterable[torch.Tensor]) -> None:
        self.parts += [(name, t) for t in tensors]

    def read(self) -> Read:
        """Every part to the host in one transfer, split back by name."""
        import torch

        flat = torch.cat([t for _, t in self.parts]).cpu().tolist()
        pieces: dict[Part, list[list[float]]] = {}
        at = 0
        for name, t in self.parts:
            pieces.setdefault(name, []).append(flat[at : at + t.numel()])
            at += t.numel()
        return Read(pieces)


@dataclass(frozen=True)
class Read:
    """A ``Layout``'s values on the host, by part name."""

    pieces: dict[Part, list[list[float]]]

    def each(self, name: Part) -> list[list[float]]:
        """The values of each tensor added under ``name``, in order."""
        return self.pieces.get(name, [])

    def joined(self, name: Part) -> list[float]:
        """All values under ``name``, one list."""
        return [v for piece in self.each(name) for v in piece]


def read_layers(c: Collector) -> tuple[list[LayerStats], tuple[AttentionStats, ...]]:
    """Read every statistic of ``c`` to the host at once: one record per layer, and the attention's
    (empty where none was recorded)."""
    layers, m = c.layers, c.moments
    layout = Layout()
    layout.add("count", [m.count])
    layout.add("mean", [m.mean])
    layout.add("m2", [m.m2])
    layout.add("sums", [c.sums.view(-1)])
    layout.add("extra", [c.extra.view(-1)])
    # the weights' norms (a layer-by-layer run's are on the meta device; an FSDP2 run's sharded)
    weights = [sp.plain_weight(layer.watched.weight) for layer in layers]
    layout.add("weight_norms", sp.weight_norms(weights, c.acc_dtype))
    # the per-unit nonzero counts travel whole (one number per unit, a few KiB): summing and
    # counting them on the host is cheaper than two device reductions per layer
    layout.add("alive", [layer.alive for layer in layers if layer.alive is not None])
    # each layer's folded cosine sums, then its records not folded yet (raw: summed on the host)
    layout.add("correlation", [layer.correlation for layer in layers if layer.correlation is not None])
    layout.add("correlation_records", [r for layer in layers for r in layer.correlation_records])
    layout.add("attention", c.attention.parts() if c.attention is not None else [])
    layout.add("units", sp.unit_parts(layers))
    layout.add("output_sums", [c.output_sums])
    layout.add("pending", c.pending.host_part())
    read = layout.read()

    count, mean, m2, sums = read.joined("count"), read.joined("mean"), read.joined("m2"), read.joined("sums")
    extra = read.joined("extra")
    norms, _ = sp.read_weight_norms(weights, read.joined("weight_norms"), 0)
    lives: list[tuple[float, float, int] | None] = []
    alive_counts: list[list[float] | None] = []
    alive = iter(read.each("alive"))
    for layer in layers:
        if layer.alive is None:
            lives.append(None)
            alive_counts.append(None)
            continue
        per_unit = next(alive)
        units = len(per_unit)
        lives.append((sum(per_unit), units - per_unit.count(0.0), units))
        alive_counts.append(per_unit)
    cosine_sums = [[0.0] * WIDTH for _ in layers]
    sampled = [layer.correlation is not None or bool(layer.correlation_records) for layer in layers]
    folded = iter(read.each("correlation"))
    for layer, sums4 in zip(layers, cosine_sums, strict=True):
        if layer.correlation is not None:
            sums4[:] = next(folded)
    records = iter(read.each("correlation_records"))
    for layer, sums4 in zip(layers, cosine_sums, strict=True):
        for _ in layer.correlation_records:
            host_fold(next(records), sums4)
        layer.correlation_records = []
    cosines = [
        (s[0] / s[1] if s[1] else None, s[2] / s[3] if s[3] else None, math.sqrt(s[4] / s[5]) if s[5] else None)
        for s in cosine_sums
    ]
    identical = [was and not s[1] for was, s in zip(sampled, cosine_sums, strict=True)]
    attention = c.attention.results(read.joined("attention")) if c.attention is not None else ()
    units_read, _ = sp.read_unit_parts(layers, read.joined("units"), 0)
    sums_read = read.joined("output_sums")
    samples = c.output_samples or 1  # 0: every output is a scalar (no sum was added)
    per_output = [v / samples for v in sums_read[: len(sums_read) // 2]]
    coherent_output = [v / samples for v in sums_read[len(sums_read) // 2 :]]
    c.pending.merge_host(read.joined("pending"), count, mean, m2, sums)
    out = []
    for i, (layer, live, cos) in enumerate(zip(layers, lives, cosines, strict=True)):
        extra_i = extra[sp.EXTRA * i : sp.EXTRA * (i + 1)]
        unit = sp.unit_fields(alive_counts[i], units_read[i]) if c.backward_done else {}
        # parameters that want a gradient where no backward reached them or the row's output
        # (a sharded run measures no unit gradients: not said there)
        unit["detached"] = bool(
            c.backward_done
            and c.weight_grad_part is None
            and layer.has_own
            and not layer.units_done
            and not layer.grads
        )
        if i == len(layers) - 1 and c.output_samples and per_output:
            unit["output_grad_scale"] = sum(per_output)
            unit["least_output_grad_scale"] = min(per_output)
            unit["output_coherent_grad_scale"] = sum(coherent_output)
        out.append(
            to_stats(
                layer,
                i,
                len(layers),
                count,
                mean,
                m2,
                sums,
                live,
                c.backward_done,
                cos,
                extra_i,
                norms[i],
                {**unit, "samples_identical": identical[i]},
            )
        )
    return out, attention
