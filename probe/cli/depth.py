"""probe depth: mean-field depth scales and the edge of chaos."""

# No `from __future__ import annotations`: typer reads the annotations at import (see common.py).

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from probe.cli.common import EXIT_OK, PANEL_THEORY, Command, app, spec_from
from probe.cli.formats import check_outputs, render
from probe.cli.guard import guard
from probe.cli.options import Gate, Output, SetOpt, grouped

StrategyOpt = Annotated[
    Optional[list[str]],
    typer.Option(
        "--strategy", metavar="NAME", help="Strategies to compare with the spec's own (default: every i.i.d. one)."
    ),
]
MaxDepthOpt = Annotated[
    int, typer.Option("--max-depth", min=2, max=100_000, help="Deepest network considered (at most 100,000).")
]


@app.command("depth", cls=Command, rich_help_panel=PANEL_THEORY)
@grouped
def depth_cmd(
    spec_path: Annotated[Path, typer.Argument(metavar="SPEC.yaml", help="The spec (activation, widths, gate).")],
    *,
    strategy: StrategyOpt = None,
    max_depth: MaxDepthOpt = 500,
    out: Output,
    gate: Gate,
    set_: SetOpt = None,
) -> None:
    """Mean-field depth limits: where the signal or the gradient crosses the gate, per strategy.

    For tanh and sigmoid also the edge of chaos (chi = 1).

    Example: probe depth configs/lab1_xavier_tanh.yaml
    """
    guard(lambda: _depth(spec_path, set_, gate, strategy, max_depth, out))


def _depth(spec_path: Path, set_: Optional[list[str]], gate: Gate, strategy: Any, max_depth: int, out: Any) -> int:
    from probe import api
    from probe.render import report as rp
    from probe.render import theory as rt

    spec = spec_from(spec_path, {**api.overrides_from(set_, "", "--set"), **gate.overrides()})
    check_outputs(out.output)
    result = api.depth(spec, strategy, max_depth)
    rows = rt.depth_rows(result)
    render(
        out.fmt,
        out.output,
        lambda: rt.depth_doc(result),
        json=lambda: rp.dumps(rt.depth_dict(result)),
        csv=lambda: rp.csv_text(rows, list(rows[0])),
    )
    return EXIT_OK
