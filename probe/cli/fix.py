"""probe fix: LSUV turns a failing init into one that passes."""

# No `from __future__ import annotations`: typer reads the annotations at import (see common.py).

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from probe.cli.common import EXIT_OK, EXIT_UNHEALTHY, PANEL_THEORY, Command, app, load_torch, say, spec_from
from probe.cli.formats import check_output_path, check_outputs, render
from probe.cli.guard import guard
from probe.cli.options import Gate, Keys, Output, OwnModel, SeedOpt, grouped
from probe.cli.progress import Steps


@dataclass(frozen=True)
class Lsuv:
    """--start, --tolerance and --max-iter: where LSUV starts and when it stops."""

    start: Annotated[
        Optional[str],
        typer.Option("--start", metavar="STRATEGY", help="Init drawn before rescaling (default: orthogonal)."),
    ] = None
    tolerance: Annotated[float, typer.Option(help="Accept a layer when |output variance - 1| is below this.")] = 0.1
    max_iter: Annotated[int, typer.Option("--max-iter", help="Rescaling passes per layer at most.")] = 10


SaveOpt = Annotated[
    Optional[Path],
    typer.Option("--save", metavar="FILE", help="Write the fixed state dict here (torch.save of model.state_dict())."),
]


@app.command("fix", cls=Command, rich_help_panel=PANEL_THEORY)
@grouped
def fix_cmd(
    spec_path: Annotated[
        Optional[Path],
        typer.Argument(metavar="[SPEC.yaml]", help="The spec whose init to fix; optional with --model."),
    ] = None,
    *,
    save: SaveOpt = None,
    lsuv: Lsuv,
    out: Output,
    gate: Gate,
    keys: Keys,
    seed: SeedOpt = None,
    own: OwnModel,
) -> None:
    """LSUV: rescale each layer to unit output variance, then probe before and after side by side.

    Exits 0 when the fixed network is healthy, 1 when it still breaks a rule.

    Examples: probe fix configs/lab1_tiny_relu.yaml --save fixed.pt;
    probe fix --model tests.models_for_tests:deep_tanh_mlp --input-shape 16
    """
    guard(lambda: _fix(spec_from(spec_path, {**keys.overrides(seed), **gate.overrides()}, own), save, lsuv, out))


def _fix(spec: Any, save: Optional[Path], lsuv: Lsuv, out: Any) -> int:
    from probe import api
    from probe.render import report as rp
    from probe.render import theory as rt

    check_outputs(out.output)
    check_output_path(save, "--save")
    load_torch()
    progress = Steps(3, "fixing")
    try:
        fixed = api.fix(spec, lsuv.start, lsuv.tolerance, lsuv.max_iter, progress, say)
    finally:
        progress.close()
    if save is not None:
        from probe.render.output import write_bytes

        write_bytes(save, api.weights_bytes(fixed.state_dict), "--save")
    saved = str(save) if save is not None else None
    scales = rt.scale_rows(fixed)
    render(
        out.fmt,
        out.output,
        lambda: rt.fix_doc(fixed, saved),
        json=lambda: rp.dumps(rt.fix_dict(fixed, saved)),
        csv=lambda: rp.csv_text(scales, list(scales[0])),
        markdown=lambda: rp.compare_markdown(rt.fix_runs(fixed)),
    )
    return EXIT_OK if fixed.after_verdict.healthy else EXIT_UNHEALTHY
