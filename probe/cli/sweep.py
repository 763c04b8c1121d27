"""probe sweep: which initialization fails first as depth or width grows."""

# No `from __future__ import annotations`: typer reads the annotations at import (see common.py).

from dataclasses import dataclass
from typing import Annotated, Any, Optional

import typer

from probe.cli.common import (
    EXIT_OK,
    EXIT_UNHEALTHY,
    PANEL_EXPERIMENTS,
    Command,
    app,
    base_from,
    check_tensorboard,
    load_torch,
    say,
)
from probe.cli.formats import check_outputs, render, wrote
from probe.cli.guard import guard
from probe.cli.options import Base, EntriesArg, Gate, Keys, LrOpt, Output, Pictures, Scale, SeedOpt, given, grouped
from probe.cli.progress import Steps


@dataclass(frozen=True)
class Grid:
    """--depth, --width and --steps: the cells of the sweep, and the coordinate check's steps."""

    depth: Annotated[Optional[str], typer.Option(metavar="D1,D2,...", help="Depths to sweep, e.g. 4,8,16,32,64.")] = (
        None
    )
    width: Annotated[Optional[str], typer.Option(metavar="W1,W2,...", help="Widths to sweep, e.g. 64,128,256,512.")] = (
        None
    )
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
    ] = None
    lr: LrOpt = None


@app.command(cls=Command, rich_help_panel=PANEL_EXPERIMENTS)
@grouped
def sweep(
    entries: EntriesArg,
    *,
    grid: Grid,
    base: Base,
    keys: Keys,
    seed: SeedOpt = None,
    gate: Gate,
    out: Output,
    pictures: Pictures,
    scale: Scale,
) -> None:
    """Probe a grid of depths and/or widths for each init strategy.

    A depth sweep names, per strategy, the first depth that breaks a health rule; a width sweep
    reports each layer's log-log slope of activation std against width (near 0: the scale does
    not drift with width). With --steps K, a width sweep is muP's coordinate check with a verdict:
    the slope of each module's output change after K steps against width (exit 1 if one drifts).
    The base network is --config's, else the built-in 8-layer ReLU MLP.

    Example: probe sweep --depth 4,8,16,32,64 tiny xavier he
    """
    guard(lambda: _sweep(entries, grid, base, {**keys.overrides(seed), **gate.overrides()}, out, pictures, scale))


def _sweep(
    entries: list[str], grid: Grid, base: Base, keys: dict[str, Any], out: Any, pictures: Any, scale: Any
) -> int:
    from probe import api

    depths, widths = api.sweep_grid(grid.depth, grid.width, grid.steps is not None)
    overrides = {**keys, **given(run__steps=grid.steps, run__lr=grid.lr, model__activation=base.activation)}
    spec = base_from(base.config, overrides, "sweep")
    check_outputs(out.output, pictures.plot)
    check_tensorboard(pictures.tensorboard)
    load_torch()
    progress = Steps(len(entries) * len(depths or (1,)) * len(widths or (1,)), "probing")
    try:
        result = api.sweep(
            spec, entries, depths, widths, progress, jobs=scale.jobs, max_memory=scale.max_memory, say=say
        )
    finally:
        progress.close()
    per_row = ("init", "activation", *(("depth",) if depths else ()), *(("width",) if widths else ()))
    _render_sweep(result, api.summary(spec, per_row), out)
    _pictures(result, pictures)
    # with steps (--steps or run.steps) over 2+ widths the sweep is a gate: the coordinate check
    return EXIT_OK if api.sweep_passes(result) else EXIT_UNHEALTHY


def _render_sweep(result: Any, header: str, out: Any) -> None:
    from probe.render import sweep_view
    from probe.render.html import sweep_page

    def html() -> str:
        first = sweep_view.first_failing_lines(result) if len(result.depths) > 1 else []
        notes = first + sweep_view.slope_lines(result) + sweep_view.coord_lines(result)
        return sweep_page(result, header, notes)

    render(
        out.fmt,
        out.output,
        lambda: sweep_view.sweep_doc(result, header),
        json=lambda: sweep_view.sweep_json(result),
        csv=lambda: sweep_view.sweep_csv(result),
        markdown=lambda: sweep_view.sweep_markdown(result),
        html=html,
    )


def _pictures(result: Any, pictures: Any) -> None:
    if pictures.plot is not None:
        from probe.render.plot import sweep_figure

        wrote(sweep_figure(result, pictures.plot))
    if pictures.tensorboard is not None:
        from probe.render.tensorboard import write_sweep

        for folder in write_sweep(pictures.tensorboard, result):
            wrote(folder)
