"""probe compare: several init strategies on one network, side by side."""

# No `from __future__ import annotations`: typer reads the annotations at import (see common.py).

from pathlib import Path
from typing import Annotated, Optional

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
    JobsOpt,
    MaxMemoryOpt,
    OutputOpt,
    PlotOpt,
    SeedOpt,
    SetOpt,
    TensorboardOpt,
    app,
    check_outputs,
    check_tensorboard,
    guard,
    load_torch,
    memory_guard,
    pairs,
    read_spec,
    render,
    run_overrides,
    writes_files,
    wrote,
)
from probe.cli.gate_options import OptimizerOpt, optimizer_override
from probe.cli.progress import Steps
from probe.cli.step_options import LrOpt, PrecisionOpt, StepsOpt, precision_overrides, steps_overrides

# the entries set each row's init and activation: the header says so rather than the base spec's
PER_ROW = ("init", "activation")


@app.command(cls=Command, rich_help_panel=PANEL_PROBE)
def compare(
    entries: Annotated[
        list[str],
        typer.Argument(
            metavar="STRATEGY[:ACTIVATION]...",
            help="Init strategies to compare, each optionally with an activation, e.g. tiny:relu xavier:tanh.",
        ),
    ],
    config: Annotated[
        Optional[Path],
        typer.Option("--config", "-c", metavar="SPEC.yaml", help="Base spec (default: the built-in 8-layer ReLU MLP)."),
    ] = None,
    depth: Annotated[Optional[int], typer.Option(metavar="N", help="Override model.depth.")] = None,
    width: Annotated[Optional[int], typer.Option(metavar="N", help="Override model.width.")] = None,
    activation: Annotated[
        Optional[str], typer.Option(metavar="NAME", help="Override model.activation for entries without one.")
    ] = None,
    batch_size: Annotated[
        Optional[int], typer.Option("--batch-size", metavar="N", help="Override data.batch_size.")
    ] = None,
    seed: SeedOpt = None,
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
    set_: SetOpt = None,
    fmt: FormatOpt = Format.table,
    output: OutputOpt = None,
    gate: GateOpt = None,
    optimizer: OptimizerOpt = None,
    steps_: StepsOpt = None,
    lr: LrOpt = None,
    precision: PrecisionOpt = None,
    plot: PlotOpt = None,
    tensorboard: TensorboardOpt = None,
    jobs: JobsOpt = 1,
    max_memory: MaxMemoryOpt = None,
) -> None:
    """Probe the same network once per init strategy, same seed, side by side.

    Example (the seed's Lab 1): probe compare tiny:relu large:tanh xavier:tanh he:relu
    """

    def body() -> int:
        from probe import spec as spec_mod
        from probe.experiments import batch

        parsed = [batch.parse_entry(e) for e in entries]
        flags = {
            "model.depth": depth,
            "model.width": width,
            "model.activation": activation,
            "data.batch_size": batch_size,
        }
        overrides = {**pairs(set_, "", "--set"), **{k: v for k, v in flags.items() if v is not None}}
        overrides.update(run_overrides(seed, device, dtype))
        overrides.update(pairs(gate, "gate", "--gate"))
        overrides.update(optimizer_override(optimizer))
        overrides.update(steps_overrides(steps_, lr))
        overrides.update(precision_overrides(precision))
        base = read_spec(config, overrides) if config else spec_mod.parse({}, overrides, "compare")
        check_outputs(output, plot)
        memory_guard([batch.entry_spec(base, e) for e in parsed], max_memory, jobs)
        load_torch()
        if tensorboard is not None:
            check_tensorboard(tensorboard, [e.text for e in parsed])
        from probe.render import report as rp  # after the input checks: bad input fails without loading it
        from probe.render.run_view import compare_doc

        steps = Steps(len(parsed), "probing")
        try:
            runs = batch.compare(base, parsed, steps, jobs, histograms=plot is not None or tensorboard is not None)
        finally:
            steps.close()

        def html() -> str:
            from probe.render.html import runs_page

            return runs_page(runs, spec_mod.summary(base, PER_ROW))

        render(
            fmt,
            output,
            lambda: compare_doc(runs, spec_mod.summary(base, PER_ROW)),
            json=lambda: rp.runs_json(runs),
            csv=lambda: rp.compare_csv(runs),
            markdown=lambda: rp.compare_markdown(runs),
            html=html,
        )
        if (plot is not None or tensorboard is not None) and writes_files():  # torchrun: rank 0 writes
            hists = [r.report.histograms for r in runs if r.report.histograms is not None]  # from the measured passes
            if plot is not None:
                from probe.render.plot import runs_figure

                wrote(runs_figure(runs, plot, hists))
            if tensorboard is not None:
                from probe.render.tensorboard import write_runs

                for folder in write_runs(tensorboard, runs, hists):
                    wrote(folder)
        return EXIT_OK

    guard(body)
