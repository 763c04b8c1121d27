"""probe run: probe one spec (or --model) and print its layer table and verdict."""

# No `from __future__ import annotations`: typer reads the annotations at import (see common.py).

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from probe.cli.common import (
    EXIT_OK,
    PANEL_PROBE,
    Command,
    app,
    check_tensorboard,
    draw,
    isolates,
    load_torch,
    say,
    spec_from,
)
from probe.cli.formats import check_outputs, render
from probe.cli.guard import guard
from probe.cli.options import (
    FirstSteps,
    Gate,
    Keys,
    MaxMemoryOpt,
    Output,
    OwnModel,
    Pictures,
    SeedOpt,
    grouped,
)
from probe.cli.progress import batch_progress, block_progress
from probe.cli.session import current

SpecArg = Annotated[
    Optional[Path],
    typer.Argument(metavar="[SPEC.yaml]", help="The spec to probe (see configs/); optional with --model."),
]


@dataclass(frozen=True)
class Shown:
    """--layers, --all-layers and --theory: which rows the report shows, and beside what."""

    layers: Annotated[
        Optional[str],
        typer.Option("--layers", "-l", metavar="PATTERN", help="Only rows whose name matches (glob or substring)."),
    ] = None
    all_layers: Annotated[
        bool, typer.Option("--all-layers", help="Show every row (large reports are summarized by default).")
    ] = False
    theory: Annotated[
        bool,
        typer.Option("--theory", help="Show the mean-field prediction beside each measurement and flag departures."),
    ] = False


@dataclass(frozen=True)
class Mode:
    """--weights, --max-memory and --layer-by-layer: what the run loads and how much memory it takes."""

    weights: Annotated[
        Optional[Path],
        typer.Option(
            "--weights", metavar="FILE", help="Load this saved state dict (e.g. from probe fix) before probing."
        ),
    ] = None
    max_memory: MaxMemoryOpt = None
    layer_by_layer: Annotated[
        bool,
        typer.Option(
            "--layer-by-layer",
            help="Build and probe one block at a time from the meta device, forward and backward: memory for "
            "one block's weights and the activations at block boundaries, whatever the depth. model.kind mlp "
            "or conv, --model and --hf models.",
        ),
    ] = False


@app.command(cls=Command, rich_help_panel=PANEL_PROBE)
@grouped
def run(
    spec_path: SpecArg = None,
    *,
    out: Output,
    gate: Gate,
    steps: FirstSteps,
    keys: Keys,
    seed: SeedOpt = None,
    own: OwnModel,
    shown: Shown,
    pictures: Pictures,
    mode: Mode,
) -> None:
    """Probe one network: a per-layer table of activation and gradient statistics and a verdict.

    Exits 0 when a report was made, healthy or not (use `probe check` to gate).

    Examples: probe run configs/lab1_tiny_relu.yaml --set model.depth=20;
    probe run --model tests.models_for_tests:awkward --input-shape 3,8,8
    """
    guard(
        lambda: _run(
            spec_path,
            {**keys.overrides(seed), **gate.overrides(), **steps.overrides()},
            own,
            out,
            shown,
            pictures,
            mode,
        )
    )


def _run(
    spec_path: Optional[Path], overrides: dict[str, Any], own: Any, out: Any, shown: Shown, pictures: Any, mode: Mode
) -> int:
    from probe import api
    from probe.render import report as rp

    spec = spec_from(spec_path, overrides, own)
    check_outputs(out.output, pictures.plot)
    lbl = mode.layer_by_layer
    api.check_mode(spec, layer_by_layer=lbl, weights=mode.weights is not None, plot=pictures.plot is not None)
    check_tensorboard(pictures.tensorboard, [spec.name])
    draws = pictures.wanted and not lbl  # histograms: this pass's
    options = api.RunOptions(
        mode.weights, lbl, shown.theory, shown.layers, mode.max_memory, draws, isolates(), current().debug
    )
    report = _probe(spec, options)
    if shown.theory:  # the prediction is per layer of the whole network: --layers does not apply
        _render_theory(report, out)
    else:
        _render_run(report, out, shown.all_layers)
    hist = report.stats.histograms  # the measured pass's (none layer by layer), of the rows shown
    hists = [] if hist is None else [hist.only({x.name for x in report.layers})]
    draw(pictures, [rp.Run(spec.name, report.stats, report.verdict)], hists)
    return EXIT_OK


def _probe(spec: Any, options: Any) -> Any:
    """The report, with progress on stderr while the batches (or blocks) run."""
    from probe import api

    if not options.isolated:
        load_torch()
        if options.layer_by_layer:
            api.return_large_allocations_to_the_os()  # this process is ours: freed blocks go back to the OS
    if options.layer_by_layer:
        progress = block_progress()
    else:
        what = "probing batches, then steps" if spec.run.steps else "probing batches"
        progress = batch_progress(spec.data.batches + spec.run.steps, what)
    with progress as on_progress:
        return api.run(spec, options, on_progress, say)


def _render_run(report: Any, out: Any, all_layers: bool) -> None:
    from probe.render import report as rp
    from probe.render.html import run_page
    from probe.render.run_view import run_doc
    from probe.render.views import advice_doc

    result, verdict, advice = report.stats, report.verdict, report.advice
    advice_part = advice_doc(advice) if advice.mismatch or advice.suggestion else None

    def document(rows: Any) -> Any:
        shown = run_doc(result, verdict, rows)
        return shown + advice_part if advice_part is not None else shown

    render(
        out.fmt,
        out.output,
        lambda: document(None if all_layers else rp.SUMMARY_ROWS),
        json=lambda: rp.dumps({**rp.report_dict(result, verdict), "advice": advice.to_dict()}),
        csv=lambda: rp.layers_csv([rp.Run(report.spec.name, result, verdict)]),
        html=lambda: run_page(document(None), result, verdict),  # a page scrolls: every row
    )


def _render_theory(report: Any, out: Any) -> None:
    """``probe run --theory``: the measurement beside the mean-field prediction."""
    from probe.render import theory as rt

    parts = (report.stats, report.verdict, report.prediction, list(report.comparisons))
    render(
        out.fmt,
        out.output,
        lambda: rt.theory_doc(*parts),
        json=lambda: rt.theory_json(*parts),
        csv=lambda: rt.theory_csv(*parts),
        markdown=lambda: rt.theory_markdown(*parts),
    )
