"""probe advise: does the init fit the activation?"""

# No `from __future__ import annotations`: typer reads the annotations at import (see common.py).

from pathlib import Path
from typing import Annotated, Any

import typer

from probe.cli.common import EXIT_OK, EXIT_UNHEALTHY, PANEL_THEORY, Command, app, say, spec_from
from probe.cli.formats import check_output_path, render
from probe.cli.guard import guard
from probe.cli.options import Gate, Keys, Output, SeedOpt, grouped
from probe.errors import SpecError

RunOpt = Annotated[bool, typer.Option("--run/--no-run", help="Also probe the network and suggest a fix if it fails.")]
ApplyOpt = Annotated[
    bool,
    typer.Option(
        "--apply",
        help="Write the suggested change beside the spec (NAME.advised.yaml), probe it, print both "
        "verdicts; exit 0 when the changed network is healthy, 1 when not.",
    ),
]


@app.command(cls=Command, rich_help_panel=PANEL_THEORY)
@grouped
def advise(
    spec_path: Annotated[Path, typer.Argument(metavar="SPEC.yaml", help="The spec to advise on.")],
    *,
    keys: Keys,
    gate: Gate,
    seed: SeedOpt = None,
    probe_run: RunOpt = True,
    apply: ApplyOpt = False,
    out: Output,
) -> None:
    """Does the init fit the activation? Init advice alone, with a fix to try if the probe fails.

    Prints a `mismatch` note naming the better init and its gain (torch.nn.init.calculate_gain)
    when the spec's init does not fit its activation, and a one-line suggestion when it fails,
    with the spec keys it sets (`change` in the JSON). `--apply` writes them into a copy of the
    spec, probes the copy and prints the verdict before and after.

    Exits 0 (advice is never a failure; use `probe check` to gate); with `--apply`, 0 when the
    changed network is healthy and 1 when not. Example: probe advise configs/lab1_tiny_relu.yaml --apply
    """
    guard(lambda: _advise(spec_path, {**keys.overrides(seed), **gate.overrides()}, probe_run, apply, out))


def _advise(spec_path: Path, overrides: dict[str, Any], probe_run: bool, apply: bool, out: Any) -> int:
    from probe import api
    from probe.render import views
    from probe.render.writers import csv_text

    spec = spec_from(spec_path, overrides)
    check_output_path(out.output, "--output")
    if apply and not probe_run:
        raise SpecError("--apply probes the network before and after the change: drop --no-run")
    advice, verdict = api.advise(spec, probe_run, say)
    applied = _apply(spec_path, spec, advice.change, verdict) if apply and verdict is not None else None
    # lines of prose read best on a terminal and in Markdown/HTML; CSV takes them as rows
    render(
        out.fmt,
        out.output,
        lambda: views.advice_doc(advice) + (views.applied_doc(applied) if applied else views.doc()),
        json=lambda: views.advise_json(advice, applied),
        csv=lambda: csv_text(views.advise_doc(advice)),
    )
    if applied is None:
        return EXIT_OK
    return EXIT_OK if applied.after.healthy else EXIT_UNHEALTHY


def _apply(spec_path: Path, spec: Any, change: dict[str, Any], before: Any) -> Any:
    """Write ``change`` over the spec (with the command line's overrides) to NAME.advised.yaml beside
    it, probe that spec, and return both verdicts."""
    from probe import api
    from probe.render.output import write_text
    from probe.render.views import Applied

    changed, text = api.advised(spec, change, before, spec_path.name)
    if spec_path.is_file():
        target = spec_path.with_name(f"{spec_path.stem}.advised.yaml")
    else:  # a pipe (/dev/stdin): the working directory
        target = Path(f"{spec.name}.advised.yaml")
    write_text(target, text, "--apply")
    return Applied(str(target), dict(change), before, api.verdict_of(changed, say))
