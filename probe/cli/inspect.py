"""probe inspect: parameters against their init rule."""

# No `from __future__ import annotations`: typer reads the annotations at import (see common.py).

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from probe.cli.common import EXIT_OK, EXIT_UNHEALTHY, PANEL_PROBE, Command, app, say, spec_from
from probe.cli.formats import check_outputs, render
from probe.cli.guard import guard
from probe.cli.options import Keys, Output, OwnModel, SeedOpt, grouped


@app.command(cls=Command, rich_help_panel=PANEL_PROBE)
@grouped
def inspect(
    spec_path: Annotated[
        Optional[Path],
        typer.Argument(metavar="[SPEC.yaml]", help="The spec whose network to inspect; optional with --model."),
    ] = None,
    *,
    keys: Keys,
    seed: SeedOpt = None,
    out: Output,
    own: OwnModel,
) -> None:
    """Per parameter: shape, fan_in, fan_out, mean, std and the std its init rule should give.

    Exits 1 if a parameter differs from its rule. Also shows a forward-only pass of activation scales.

    Examples: probe inspect configs/lab1_he_relu.yaml;
    probe inspect --model tests.models_for_tests:awkward --input-shape 3,8,8
    """
    guard(lambda: _inspect(spec_from(spec_path, keys.overrides(seed), own), out))


def _inspect(spec: Any, out: Any) -> int:
    from probe import api
    from probe.render import inspect_view
    from probe.render.html import inspect_page

    check_outputs(out.output)
    ins = api.inspect(spec, say)
    header = api.summary(spec)
    render(
        out.fmt,
        out.output,
        lambda: inspect_view.inspect_doc(ins, header),
        json=lambda: inspect_view.inspect_json(ins),
        csv=lambda: inspect_view.inspect_csv(ins),
        markdown=lambda: inspect_view.inspect_markdown(ins),
        html=lambda: inspect_page(ins, header),
    )
    return EXIT_UNHEALTHY if ins.mismatches else EXIT_OK
