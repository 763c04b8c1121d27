"""probe depth: mean-field depth scales and the edge of chaos."""

# No `from __future__ import annotations`: typer reads the annotations at import (see common.py).

from pathlib import Path
from typing import Annotated, Optional

import typer

from probe.cli.common import (
    EXIT_OK,
    PANEL_THEORY,
    Command,
    Format,
    FormatOpt,
    GateOpt,
    OutputOpt,
    SetOpt,
    app,
    check_outputs,
    guard,
    pairs,
    read_spec,
    render,
)


@app.command("depth", cls=Command, rich_help_panel=PANEL_THEORY)
def depth_cmd(
    spec_path: Annotated[Path, typer.Argument(metavar="SPEC.yaml", help="The spec (activation, widths, gate).")],
    strategy: Annotated[
        Optional[list[str]],
        typer.Option(
            "--strategy", metavar="NAME", help="Strategies to compare with the spec's own (default: every i.i.d. one)."
        ),
    ] = None,
    max_depth: Annotated[
        int, typer.Option("--max-depth", min=2, max=100_000, help="Deepest network considered (at most 100,000).")
    ] = 500,
    fmt: FormatOpt = Format.table,
    output: OutputOpt = None,
    gate: GateOpt = None,
    set_: SetOpt = None,
) -> None:
    """Mean-field depth limits: where the signal or the gradient crosses the gate, per strategy.

    For tanh and sigmoid also the edge of chaos (chi = 1).

    Example: probe depth configs/lab1_xavier_tanh.yaml
    """

    def body() -> int:
        from probe import spec as spec_mod
        from probe.judge import depth
        from probe.render import report as rp
        from probe.render import theory as rt

        overrides = {**pairs(set_, "", "--set"), **pairs(gate, "gate", "--gate")}
        spec = read_spec(spec_path, overrides)
        check_outputs(output)
        for name in strategy or []:
            spec_mod.parse({"init": {"weight": name}})  # unknown names fail before the analysis
        result = depth.analyze(spec, strategy, max_depth)
        rows = rt.depth_rows(result)
        render(
            fmt,
            output,
            lambda: rt.depth_doc(result),
            json=lambda: rp.dumps(rt.depth_dict(result)),
            csv=lambda: rp.csv_text(rows, list(rows[0])),
        )
        return EXIT_OK

    guard(body)
