"""The one pipeline from a spec to a ``Report``: measure, judge, advise, predict. ``probe run``,
``probe.measure`` on a spec, and ``probe.measure`` on a model object (through ``judge``) all end here."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from probe.api.report import Report
from probe.errors import SpecError
from probe.records import Stats
from probe.spec import Spec

if TYPE_CHECKING:
    import torch

    from probe.judge.theory import Comparison, Prediction
    from probe.measurement.once import MemoryCheck


def probe_spec(
    spec: Spec,
    *,
    state_dict: Mapping[str, torch.Tensor] | None = None,
    layer_by_layer: bool = False,
    progress: Callable[[int, int], None] | None = None,
    theory: bool = False,
    layers: str | None = None,
    check: MemoryCheck | None = None,
    histograms: bool = False,
) -> Report:
    """The one pipeline from a validated spec to a ``Report``: measure (whole, or ``layer_by_layer``
    with ``progress`` per block pass; else ``progress`` in row passes of its batches and steps), judge, advise, and with
    ``theory`` the mean-field prediction beside each row. ``state_dict``: weights loaded over the
    spec's init before the run (the prediction then says it does not apply). ``layers`` keeps the
    rows whose name matches, after judging (not with ``theory``: the prediction is per layer of
    the whole network). ``check``: given the run's memory estimate before the measured pass, from
    the model the run builds (``probe.measurement.once``); ``histograms``: each row's histogram of
    the first batch in ``report.stats.histograms`` (not ``layer_by_layer``). ``probe run`` and
    ``probe.measure`` on a spec both come through here."""
    if layer_by_layer:
        from probe.measurement.layerwise import check_layerwise, run_layerwise

        check_layerwise(spec, weights=state_dict is not None)
        stats = run_layerwise(spec, progress, check=check)
    else:
        from probe.measurement.run import run_probe

        stats = run_probe(spec, progress, state_dict=state_dict, check=check, histograms=histograms)
    return judge(stats, spec, theory=theory, layers=layers, loaded=state_dict is not None)


def check_mode(spec: Spec, *, layer_by_layer: bool = False, weights: bool = False, plot: bool = False) -> None:
    """A ``SpecError`` (exit 2), before anything is built, where ``layer_by_layer`` cannot
    reproduce a normal run of ``spec`` (or ``weights`` would be loaded whole, or a ``plot`` needs
    the whole network at once)."""
    if not layer_by_layer:
        return
    from probe.measurement.layerwise import check_layerwise

    check_layerwise(spec, weights=weights)
    if plot:
        raise SpecError("--plot needs the whole network's weights at once; drop it with --layer-by-layer")


def return_large_allocations_to_the_os() -> None:
    """For a process of its own that probes layer by layer: freed blocks go back to the OS
    (``probe.measurement.layerwise.return_large_allocations_to_the_os``: process-wide, not undone)."""
    from probe.measurement import layerwise

    layerwise.return_large_allocations_to_the_os()


def judge(stats: Stats, spec: Spec, *, theory: bool = False, layers: str | None = None, loaded: bool = False) -> Report:
    """Measured statistics -> ``Report``: the verdict, the advice, and with ``theory`` the
    prediction (``loaded``: the weights were loaded, so the spec's init does not predict them)."""
    from probe.judge.advice import advise
    from probe.judge.rules import evaluate

    verdict = evaluate(stats)
    prediction: Prediction | None = None
    comparisons: tuple[Comparison, ...] = ()
    if theory:
        from probe.judge import theory as th

        prediction = th.predict(spec)
        if loaded and prediction.available:
            prediction = th.Prediction(reason="no prediction for loaded weights: they need not follow the spec's init")
        comparisons = tuple(th.compare(stats, prediction))
    elif layers is not None:
        from probe.render.report import select_layers

        stats = select_layers(stats, str(layers))
    return Report(stats, verdict, advise(spec, verdict, stats), prediction, comparisons)
