"""Per-layer histograms of activation magnitudes, for the heat map that ``--plot`` draws.

One forward pass over the run's first batch (same weights and data as ``run_probe``: the build
under ``run.seed`` and the same data stream). Each watched layer's output values are binned by
log10 |value| on fixed edges, so layers and runs share one axis: a vanishing signal slides down
the decades, a saturating tanh piles up just below 10^0. Exact zeros (dead ReLU outputs) are
counted apart.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from probe.errors import RunError
from probe.model.network import Built
from probe.spec import Spec

if TYPE_CHECKING:
    import torch

    from probe.model.inputs import Batch

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


def histograms(
    spec: Spec,
    label: str | None = None,
    state_dict: Mapping[str, torch.Tensor] | None = None,
    only: Collection[str] | None = None,
) -> LayerHistograms:
    """Bin every watched layer's output on the run's first batch (CPU, float32, no gradients).

    The network, its weights (LSUV and ``state_dict`` included) and the batch are those of
    ``run_probe``'s first step, for every model kind; ``only`` keeps the rows a report shows.
    """
    import torch

    from probe.model.build import build_initialized
    from probe.model.inputs import data_stream, next_batch

    with torch.random.fork_rng(devices=[]):
        built = build_initialized(spec, state_dict)
        batch = next_batch(spec, built, data_stream(spec), torch.device("cpu"), torch.float32)
        found = _binned(built, batch)
    step = (LOG10_HIGH - LOG10_LOW) / BINS
    names = tuple(w.name for w in built.watched if w.name in found and (only is None or w.name in only))
    return LayerHistograms(
        label=label or spec.name,
        layers=names,
        edges=tuple(LOG10_LOW + i * step for i in range(BINS + 1)),
        fractions=tuple(tuple(found[n][0]) for n in names),
        zero_fractions=tuple(found[n][1] for n in names),
    )


def only_rows(hist: LayerHistograms, names: Collection[str]) -> LayerHistograms:
    """``hist`` with the rows named in ``names`` only (the rows a report shows)."""
    keep = [i for i, name in enumerate(hist.layers) if name in names]
    return LayerHistograms(
        label=hist.label,
        layers=tuple(hist.layers[i] for i in keep),
        edges=hist.edges,
        fractions=tuple(hist.fractions[i] for i in keep),
        zero_fractions=tuple(hist.zero_fractions[i] for i in keep),
    )


def _binned(built: Built, batch: Batch) -> dict[str, tuple[list[float], float]]:
    """One forward pass with a histogram hook on every watched layer."""
    import torch

    found: dict[str, tuple[list[float], float]] = {}
    handles = []
    for w in built.watched:

        def hook(_module: Any, _inputs: Any, output: Any, name: str = w.name) -> None:
            if isinstance(output, (tuple, list)):  # LSTM, attention: the first tensor, as the collector
                output = next((t for t in output if isinstance(t, torch.Tensor) and t.is_floating_point()), None)
            if not isinstance(output, torch.Tensor) or not output.is_floating_point():
                return
            values = output.detach().float().flatten()
            nonzero = values[values != 0].abs()
            counts = torch.histc(torch.log10(nonzero), bins=BINS, min=LOG10_LOW, max=LOG10_HIGH)
            total = max(values.numel(), 1)
            found[name] = ((counts / total).tolist(), float((values == 0).sum()) / total)

        handles.append(w.module.register_forward_hook(hook))
    model = built.model
    was_training = model.training
    try:
        if not built.keep_mode:
            model.train()
        with torch.no_grad():
            model(*batch.args, **batch.kwargs)
    except RuntimeError as exc:
        raise RunError(
            f"the histogram pass failed: {str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}"
        ) from None
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return found
