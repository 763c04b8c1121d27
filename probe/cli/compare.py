"""probe compare: several init strategies on one network, side by side."""

# No `from __future__ import annotations`: typer reads the annotations at import (see common.py).

from typing import Annotated, Any, Optional

import typer

from probe.cli.common import (
    EXIT_OK,
    PANEL_PROBE,
    Command,
    app,
    base_from,
    check_tensorboard,
    draw,
    load_torch,
    render_runs,
    say,
)
from probe.cli.formats import check_outputs
from probe.cli.guard import guard
from probe.cli.options import (
    Base,
    FirstSteps,
    Gate,
    Keys,
    Output,
    Pictures,
    Scale,
    SeedOpt,
    given,
    grouped,
    probe_overrides,
)
from probe.cli.progress import Steps

# the entries set each row's init and activation: the header says so rather than the base spec's
PER_ROW = ("init", "activation")

CompareEntriesArg = Annotated[
    list[str],
    typer.Argument(
        metavar="STRATEGY[:ACTIVATION]...",
        help="Init strategies to compare, each optionally with an activation, e.g. tiny:relu xavier:tanh.",
    ),
]
DepthOpt = Annotated[Optional[int], typer.Option(metavar="N", help="Override model.depth.")]
WidthOpt = Annotated[Optional[int], typer.Option(metavar="N", help="Override model.width.")]
BatchSizeOpt = Annotated[Optional[int], typer.Option("--batch-size", metavar="N", help="Override data.batch_size.")]


@app.command(cls=Command, rich_help_panel=PANEL_PROBE)
@grouped
def compare(
    entries: CompareEntriesArg,
    *,
    base: Base,
    depth: DepthOpt = None,
    width: WidthOpt = None,
    batch_size: BatchSizeOpt = None,
    seed: SeedOpt = None,
    keys: Keys,
    out: Output,
    gate: Gate,
    steps: FirstSteps,
    pictures: Pictures,
    scale: Scale,
) -> None:
    """Probe the same network once per init strategy, same seed, side by side.

    The base network is --config's, else the built-in 8-layer ReLU MLP.

    Example (the seed's Lab 1): probe compare tiny:relu large:tanh xavier:tanh he:relu
    """

    flags = given(model__depth=depth, model__width=width, data__batch_size=batch_size)
    guard(lambda: _compare(entries, base, {**flags, **probe_overrides(keys, seed, gate, steps)}, out, pictures, scale))


def _compare(entries: list[str], base: Base, overrides: dict[str, Any], out: Any, pictures: Any, scale: Any) -> int:
    from probe import api

    overrides.update(given(model__activation=base.activation))
    spec = base_from(base.config, overrides, "compare")
    api.entry_specs(spec, entries)  # bad entries fail before any file is checked
    check_outputs(out.output, pictures.plot)
    check_tensorboard(pictures.tensorboard, entries)
    load_torch()
    progress = Steps(len(entries), "probing")
    try:
        runs = api.compare(
            spec, entries, progress, jobs=scale.jobs, max_memory=scale.max_memory, histograms=pictures.wanted, say=say
        )
    finally:
        progress.close()
    from probe.render.run_view import compare_doc

    header = api.summary(spec, PER_ROW)
    render_runs(runs, lambda: compare_doc(runs, header), header, out)
    draw(pictures, runs, [r.report.histograms for r in runs if r.report.histograms is not None])
    return EXIT_OK
