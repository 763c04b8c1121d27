"""Per-layer histograms of activation magnitudes, for the heat map that ``--plot`` draws.

One forward pass over the run's first batch (same weights and data as ``run_probe``: the build
under ``run.seed`` and the same data stream). Each watched layer's output values are binned by
log10 |value| on fixed edges, so layers and runs share one axis: a vanishing signal slides down
the decades, a saturating tanh piles up just below 10^0. Exact zeros (dead ReLU outputs) are
counted apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from probe.build import build
from probe.spec import Spec

LOG10_LOW = -12.0
LOG10_HIGH = 4.0
BINS = 64


@dataclass(frozen=True)
class LayerHistograms:
    label: str
    layers: tuple[str, ...]
    edges: tuple[float, ...]  # BINS + 1 edges in log10 |value|
    fractions: tuple[tuple[float, ...], ...]  # per layer: fraction of its values in each bin
    zero_fractions: tuple[float, ...]  # per layer: fraction of exact zeros


def histograms(spec: Spec, label: str | None = None) -> LayerHistograms:
    """Bin every watched layer's output on the run's first batch (CPU, float32, no gradients)."""
    import torch

    from probe.inputs import Batch, draw
    from probe.run import _DATA_STREAM, draw_batch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.run.seed)
        built = build(spec)
        if spec.init.weight.name == "lsuv":  # data-dependent init: the post-build step, as in run_probe
            from probe.fix import lsuv_built

            lsuv_built(built, spec)
        data_gen = torch.Generator().manual_seed(spec.run.seed * 1000 + _DATA_STREAM)
        if built.inputs is None:
            batch = Batch((draw_batch(spec, data_gen),), {})
        else:  # the model's own inputs (images, token ids, a user function), on the CPU in float32
            batch = draw(
                built.inputs, spec.data.batch_size, spec.data.distribution, data_gen, torch.device("cpu"), torch.float32
            )
    found: dict[str, Any] = {}
    handles = []
    for w in built.watched:

        def hook(_module: Any, _inputs: Any, output: Any, name: str = w.name) -> None:
            if isinstance(output, (tuple, list)):  # e.g. an LSTM's (output, (h, c)): the output
                output = output[0]
            if not isinstance(output, torch.Tensor):
                return
            values = output.detach().float().flatten()
            nonzero = values[values != 0].abs()
            counts = torch.histc(torch.log10(nonzero), bins=BINS, min=LOG10_LOW, max=LOG10_HIGH)
            total = max(values.numel(), 1)
            found[name] = ((counts / total).tolist(), float((values == 0).sum()) / total)

        handles.append(w.module.register_forward_hook(hook))
    model = built.model
    try:
        model.train()
        with torch.no_grad():
            model(*batch.args, **batch.kwargs)
    finally:
        for h in handles:
            h.remove()
    step = (LOG10_HIGH - LOG10_LOW) / BINS
    names = tuple(w.name for w in built.watched)
    return LayerHistograms(
        label=label or spec.name,
        layers=names,
        edges=tuple(LOG10_LOW + i * step for i in range(BINS + 1)),
        fractions=tuple(tuple(found.get(n, ([0.0] * BINS, 0.0))[0]) for n in names),
        zero_fractions=tuple(found.get(n, ([0.0] * BINS, 0.0))[1] for n in names),
    )
