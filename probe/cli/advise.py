"""probe advise: does the init fit the activation?"""

# No `from __future__ import annotations`: typer reads the annotations at import (see common.py).

from pathlib import Path
from typing import Annotated

import typer

from probe.cli.common import (
    EXIT_OK,
    PANEL_THEORY,
    Command,
    DeviceOpt,
    DtypeOpt,
    Format,
    FormatOpt,
    GateOpt,
    OutputOpt,
    SeedOpt,
    SetOpt,
    app,
    check_output_path,
    guard,
    memory_guard,
    pairs,
    read_spec,
    render,
    run_overrides,
)


@app.command(cls=Command, rich_help_panel=PANEL_THEORY)
def advise(
    spec_path: Annotated[Path, typer.Argument(metavar="SPEC.yaml", help="The spec to advise on.")],
    set_: SetOpt = None,
    gate: GateOpt = None,
    seed: SeedOpt = None,
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
    probe_run: Annotated[
        bool, typer.Option("--run/--no-run", help="Also probe the network and suggest a fix if it fails.")
    ] = True,
    fmt: FormatOpt = Format.table,
    output: OutputOpt = None,
) -> None:
    """Does the init fit the activation? Init advice alone, with a fix to try if the probe fails.

    Prints a `mismatch` note naming the better init and its gain (torch.nn.init.calculate_gain)
    when the spec's init does not fit its activation, and a one-line suggestion when it fails.

    Exits 0 (advice is never a failure; use `probe check` to gate). Example: probe advise configs/lab1_tiny_relu.yaml
    """

    def body() -> int:
        from probe.judge.advice import advise as advise_spec
        from probe.render import views
        from probe.render.writers import csv_text

        overrides = {**pairs(set_, "", "--set"), **pairs(gate, "gate", "--gate"), **run_overrides(seed, device, dtype)}
        spec = read_spec(spec_path, overrides)
        check_output_path(output, "--output")
        verdict = None
        if probe_run:
            from probe.judge.rules import evaluate
            from probe.measurement.run import run_probe

            memory_guard([spec], None)  # the default guard: refuse what does not fit the memory available
            verdict = evaluate(run_probe(spec))
        advice = advise_spec(spec, verdict)
        # lines of prose read best on a terminal and in Markdown/HTML; CSV takes them as rows
        render(
            fmt,
            output,
            lambda: views.advice_doc(advice),
            json=lambda: views.advise_json(advice),
            csv=lambda: csv_text(views.advise_doc(advice)),
        )
        return EXIT_OK

    guard(body)
