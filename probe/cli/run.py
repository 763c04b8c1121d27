"""probe run: probe one spec (or --model) and print its layer table and verdict."""

# No `from __future__ import annotations`: typer reads the annotations at import (see common.py).

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from probe.cli.common import (
    EXIT_OK,
    PANEL_PROBE,
    Command,
    DeviceOpt,
    DtypeOpt,
    Format,
    FormatOpt,
    GateOpt,
    HfOpt,
    InputShapeOpt,
    InputsOpt,
    MaxMemoryOpt,
    ModelArgOpt,
    ModelOpt,
    OutputOpt,
    PlotOpt,
    SeedOpt,
    SetOpt,
    TensorboardOpt,
    app,
    check_outputs,
    check_tensorboard,
    guard,
    isolates,
    load_spec,
    load_torch,
    memory_check,
    memory_guard,
    pairs,
    render,
    run_overrides,
    writes_files,
    wrote,
)
from probe.cli.gate_options import OptimizerOpt, optimizer_override
from probe.cli.progress import batch_progress, block_progress
from probe.cli.session import current
from probe.cli.step_options import LrOpt, PrecisionOpt, StepsOpt, precision_overrides, steps_overrides


@app.command(cls=Command, rich_help_panel=PANEL_PROBE)
def run(
    spec_path: Annotated[
        Optional[Path],
        typer.Argument(metavar="[SPEC.yaml]", help="The spec to probe (see configs/); optional with --model."),
    ] = None,
    fmt: FormatOpt = Format.table,
    output: OutputOpt = None,
    gate: GateOpt = None,
    optimizer: OptimizerOpt = None,
    steps_: StepsOpt = None,
    lr: LrOpt = None,
    precision: PrecisionOpt = None,
    set_: SetOpt = None,
    seed: SeedOpt = None,
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
    model: ModelOpt = None,
    hf: HfOpt = None,
    model_arg: ModelArgOpt = None,
    input_shape: InputShapeOpt = None,
    inputs: InputsOpt = None,
    layers: Annotated[
        Optional[str],
        typer.Option("--layers", "-l", metavar="PATTERN", help="Only rows whose name matches (glob or substring)."),
    ] = None,
    all_layers: Annotated[
        bool, typer.Option("--all-layers", help="Show every row (large reports are summarized by default).")
    ] = False,
    theory: Annotated[
        bool,
        typer.Option("--theory", help="Show the mean-field prediction beside each measurement and flag departures."),
    ] = False,
    weights: Annotated[
        Optional[Path],
        typer.Option(
            "--weights", metavar="FILE", help="Load this saved state dict (e.g. from probe fix) before probing."
        ),
    ] = None,
    plot: PlotOpt = None,
    tensorboard: TensorboardOpt = None,
    max_memory: MaxMemoryOpt = None,
    layer_by_layer: Annotated[
        bool,
        typer.Option(
            "--layer-by-layer",
            help="Build and probe one block at a time from the meta device, forward and backward: memory for "
            "one block's weights and the activations at block boundaries, whatever the depth. model.kind mlp "
            "or conv, --model and --hf models.",
        ),
    ] = False,
) -> None:
    """Probe one network: a per-layer table of activation and gradient statistics and a verdict.

    Exits 0 when a report was made, healthy or not (use `probe check` to gate).

    Examples: probe run configs/lab1_tiny_relu.yaml --set model.depth=20;
    probe run --model tests.models_for_tests:awkward --input-shape 3,8,8
    """

    def body() -> int:
        overrides = {**pairs(set_, "", "--set"), **pairs(gate, "gate", "--gate"), **run_overrides(seed, device, dtype)}
        overrides.update(optimizer_override(optimizer))
        overrides.update(steps_overrides(steps_, lr))
        overrides.update(precision_overrides(precision))
        spec = load_spec(spec_path, overrides, model, model_arg, input_shape, inputs, hf)
        check_outputs(output, plot)
        from probe import api

        api.check_mode(spec, layer_by_layer=layer_by_layer, weights=weights is not None, plot=plot is not None)
        if tensorboard is not None:
            check_tensorboard(tensorboard, [spec.name])
        draws = (plot is not None or tensorboard is not None) and not layer_by_layer  # histograms: this pass's
        options: dict[str, Any] = {"theory": theory, "layers": layers, "max_memory": max_memory, "draws": draws}
        if isolates():  # the run in a child process, judged here (probe.experiments.isolated)
            report = _probe_isolated(spec, weights, layer_by_layer, **options)
        else:
            report = _probe_here(spec, weights, layer_by_layer, **options)
        if theory:  # the prediction is per layer of the whole network: --layers does not apply
            _render_theory(report, fmt, output)
        else:
            _render_run(report, fmt, output, all_layers)
        if tensorboard is not None and writes_files():  # torchrun: rank 0 writes; after -o, which it cannot cost
            _tensorboard_run(spec, report, tensorboard)
        _plot_run(spec, report, plot)
        return EXIT_OK

    guard(body)


def _probe_here(
    spec: Any, weights: Optional[Path], layer_by_layer: bool, theory: bool, layers: Any, max_memory: Any, draws: bool
) -> Any:
    """The report, measured in this process (Python callers, torchrun)."""
    from probe import api
    from probe.measurement.once import built_once

    check = None  # a user factory's model: estimated from the model the run builds (it runs once)
    if built_once(spec, layer_by_layer):
        check = memory_check(spec, max_memory, layerwise=layer_by_layer)
    else:
        memory_guard([spec], max_memory, layerwise=layer_by_layer, offer_layerwise=not layer_by_layer)
    load_torch()
    state = None
    if weights is not None:
        from probe.experiments.fix import load_weights

        state = load_weights(weights)
    if layer_by_layer:
        api.return_large_allocations_to_the_os()  # this process is ours: freed blocks go back to the OS
    with _progress(spec, layer_by_layer) as on_progress:
        return api.probe_spec(
            spec,
            state_dict=state,
            layer_by_layer=layer_by_layer,
            progress=on_progress,
            theory=theory,
            layers=None if theory else layers,
            check=check,
            histograms=draws,
        )


def _probe_isolated(
    spec: Any, weights: Optional[Path], layer_by_layer: bool, theory: bool, layers: Any, max_memory: Any, draws: bool
) -> Any:
    """The report of a run in a child process (the user's code runs there only), judged here; its
    statistics carry the rows' histograms when ``draws`` (--plot, --tensorboard) asks for them."""
    from probe import api
    from probe.errors import RunError, SpecError
    from probe.experiments.isolated import job_for, run_children, runs_user_code

    if not runs_user_code(spec):  # a user model's estimate calls its factory: the child makes it
        memory_guard([spec], max_memory, layerwise=layer_by_layer, offer_layerwise=not layer_by_layer)
    job = job_for(
        spec,
        spec.name,
        max_memory,
        layer_by_layer=layer_by_layer,
        weights=None if weights is None else str(weights),
        histograms=draws,
        progress=True,
        debug=current().debug,
    )
    with _progress(spec, layer_by_layer) as on_progress:
        progress = (lambda _i, done, total: on_progress(done, total)) if on_progress else None
        outcome = run_children([job], 1, progress)[0]
    if outcome.failure is not None:
        failure = outcome.failure
        raise (RunError if failure.exit_code == 3 else SpecError)(f"{spec.name}: {failure.message}")
    assert outcome.stats is not None
    report = api.judge(
        outcome.stats, spec, theory=theory, layers=None if theory else layers, loaded=weights is not None
    )
    return report


def _progress(spec: Any, layer_by_layer: bool) -> Any:
    if layer_by_layer:
        return block_progress()
    what = "probing batches, then steps" if spec.run.steps else "probing batches"
    return batch_progress(spec.data.batches + spec.run.steps, what)


def _render_run(report: Any, fmt: Format, output: Optional[Path], all_layers: bool) -> None:
    from probe.render import report as rp

    result, verdict, advice = report.stats, report.verdict, report.advice
    advised = bool(advice.mismatch or advice.suggestion)

    def document() -> Any:
        from probe.render.run_view import run_doc
        from probe.render.views import advice_doc

        shown = run_doc(result, verdict, None if all_layers else rp.SUMMARY_ROWS)
        return shown + advice_doc(advice) if advised else shown

    def html() -> str:
        from probe.render.html import run_page
        from probe.render.run_view import run_doc
        from probe.render.views import advice_doc

        whole = run_doc(result, verdict, None)  # a page scrolls: every row
        return run_page(whole + advice_doc(advice) if advised else whole, result, verdict)

    render(
        fmt,
        output,
        document,
        json=lambda: rp.dumps({**rp.report_dict(result, verdict), "advice": advice.to_dict()}),
        csv=lambda: rp.layers_csv([rp.Run(report.spec.name, result, verdict)]),
        html=html,
    )


def _histograms(report: Any) -> list[Any]:
    """The measured pass's histograms of the rows the report shows (none with --layer-by-layer)."""
    hist = report.stats.histograms
    return [] if hist is None else [hist.only({x.name for x in report.layers})]


def _plot_run(spec: Any, report: Any, plot: Optional[Path]) -> None:
    if plot is None or not writes_files():  # torchrun: rank 0 draws
        return
    from probe.render import report as rp
    from probe.render.plot import runs_figure

    wrote(runs_figure([rp.Run(spec.name, report.stats, report.verdict)], plot, _histograms(report)))


def _tensorboard_run(spec: Any, report: Any, directory: Path) -> None:
    from probe.render import report as rp
    from probe.render.tensorboard import write_runs

    for folder in write_runs(directory, [rp.Run(spec.name, report.stats, report.verdict)], _histograms(report)):
        wrote(folder)


def _render_theory(report: Any, fmt: Format, output: Optional[Path]) -> None:
    """``probe run --theory``: the measurement beside the mean-field prediction."""
    from probe.judge import theory as th
    from probe.render import report as rp
    from probe.render import theory as rt

    result, verdict = report.stats, report.verdict
    prediction, comparisons = report.prediction, list(report.comparisons)

    def rows() -> str:
        table_rows = th.annotate(rp.report_dict(result, verdict), prediction, comparisons)["layers"]
        columns = list(dict.fromkeys(k for row in table_rows for k in row))  # a row may lack init_rule (no weight)
        return rp.csv_text(table_rows, columns)

    render(
        fmt,
        output,
        lambda: rt.theory_doc(result, verdict, prediction, comparisons),
        json=lambda: rp.dumps(th.annotate(rp.report_dict(result, verdict), prediction, comparisons)),
        csv=rows,
        markdown=lambda: rt.theory_markdown(result, verdict, prediction, comparisons),
    )
