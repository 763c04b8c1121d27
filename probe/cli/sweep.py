"""probe sweep: which initialization fails first as depth or width grows."""

# No `from __future__ import annotations`: typer reads the annotations at import (see common.py).

from typing import Annotated, Optional

import typer

from probe.cli.common import (
    EXIT_OK,
    EXIT_UNHEALTHY,
    PANEL_EXPERIMENTS,
    Command,
    ConfigOpt,
    DeviceOpt,
    DtypeOpt,
    EntriesArg,
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
    wrote,
)
from probe.cli.progress import Steps
from probe.cli.step_options import LrOpt, steps_overrides
from probe.errors import SpecError


@app.command(cls=Command, rich_help_panel=PANEL_EXPERIMENTS)
def sweep(
    entries: EntriesArg,
    depth: Annotated[
        Optional[str], typer.Option(metavar="D1,D2,...", help="Depths to sweep, e.g. 4,8,16,32,64.")
    ] = None,
    width: Annotated[
        Optional[str], typer.Option(metavar="W1,W2,...", help="Widths to sweep, e.g. 64,128,256,512.")
    ] = None,
    config: ConfigOpt = None,
    activation: Annotated[
        Optional[str], typer.Option(metavar="NAME", help="Override model.activation for entries without one.")
    ] = None,
    set_: SetOpt = None,
    seed: SeedOpt = None,
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
    gate: GateOpt = None,
    fmt: FormatOpt = Format.table,
    output: OutputOpt = None,
    plot: PlotOpt = None,
    tensorboard: TensorboardOpt = None,
    jobs: JobsOpt = 1,
    max_memory: MaxMemoryOpt = None,
    steps: Annotated[
        Optional[int],
        typer.Option(
            "--steps",
            metavar="K",
            min=1,
            help="The coordinate check: K AdamW steps in every cell (weights restored after), then per module "
            "the slope of log(output change) against log(width); exit 1 unless every |slope| <= 0.25. Needs "
            "--width with 2+ widths.",
        ),
    ] = None,
    lr: LrOpt = None,
) -> None:
    """Probe a grid of depths and/or widths for each init strategy.

    A depth sweep names, per strategy, the first depth that breaks a health rule; a width sweep
    reports each layer's log-log slope of activation std against width (near 0: the scale does
    not drift with width). With --steps K, a width sweep is muP's coordinate check with a verdict:
    the slope of each module's output change after K steps against width (exit 1 if one drifts).

    Example: probe sweep --depth 4,8,16,32,64 tiny xavier he
    """

    def body() -> int:
        from probe import spec as spec_mod
        from probe.experiments import sweep as sw
        from probe.render import sweep_view

        depths = sw.parse_ints(depth, "--depth") if depth else None
        widths = sw.parse_ints(width, "--width") if width else None
        if depths is None and widths is None:
            raise SpecError("give --depth D1,D2,... and/or --width W1,W2,...")
        if steps is not None and (widths is None or len(widths) < 2):
            raise SpecError("the coordinate check compares widths: give --width W1,W2,... (2 or more)", "--steps")
        overrides = {
            **pairs(set_, "", "--set"),
            **pairs(gate, "gate", "--gate"),
            **run_overrides(seed, device, dtype),
            **steps_overrides(steps, lr),
        }
        if activation is not None:
            overrides["model.activation"] = activation
        base = read_spec(config, overrides) if config else spec_mod.parse({}, overrides, "sweep")
        check_outputs(output, plot)
        memory_guard(sw.grid(base, entries, depths, widths), max_memory, jobs)
        load_torch()
        if tensorboard is not None:
            check_tensorboard(tensorboard)
        total = len(entries) * len(depths or (1,)) * len(widths or (1,))
        per_row = ("init", "activation", *(("depth",) if depths else ()), *(("width",) if widths else ()))
        progress = Steps(total, "probing")
        try:
            result = sw.sweep(base, entries, depths, widths, progress, jobs)
        finally:
            progress.close()

        def html() -> str:
            from probe.render.html import sweep_page

            notes = (
                (sweep_view.first_failing_lines(result) if len(result.depths) > 1 else [])
                + sweep_view.slope_lines(result)
                + sweep_view.coord_lines(result)
            )
            return sweep_page(result, spec_mod.summary(base, per_row), notes)

        render(
            fmt,
            output,
            lambda: sweep_view.sweep_doc(result, spec_mod.summary(base, per_row)),
            json=lambda: sweep_view.sweep_json(result),
            csv=lambda: sweep_view.sweep_csv(result),
            markdown=lambda: sweep_view.sweep_markdown(result),
            html=html,
        )
        if plot is not None:
            from probe.render.plot import sweep_figure

            wrote(sweep_figure(result, plot))
        if tensorboard is not None:
            from probe.render.tensorboard import write_sweep

            for folder in write_sweep(tensorboard, result):
                wrote(folder)
        from probe.experiments.coord_check import coord_checks

        # with steps (--steps or run.steps) over 2+ widths the sweep is a gate: the coordinate check
        return EXIT_OK if all(c.passes for c in coord_checks(result)) else EXIT_UNHEALTHY

    guard(body)
