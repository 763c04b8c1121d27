"""probe advise: does the init fit the activation?"""

# No `from __future__ import annotations`: typer reads the annotations at import (see common.py).

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from probe.errors import SpecError

if TYPE_CHECKING:
    from probe.records import Verdict
    from probe.render.views import Applied
    from probe.spec import Spec

from probe.cli.common import (
    EXIT_OK,
    EXIT_UNHEALTHY,
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
    apply: Annotated[
        bool,
        typer.Option(
            "--apply",
            help="Write the suggested change beside the spec (NAME.advised.yaml), probe it, print both "
            "verdicts; exit 0 when the changed network is healthy, 1 when not.",
        ),
    ] = False,
    fmt: FormatOpt = Format.table,
    output: OutputOpt = None,
) -> None:
    """Does the init fit the activation? Init advice alone, with a fix to try if the probe fails.

    Prints a `mismatch` note naming the better init and its gain (torch.nn.init.calculate_gain)
    when the spec's init does not fit its activation, and a one-line suggestion when it fails,
    with the spec keys it sets (`change` in the JSON). `--apply` writes them into a copy of the
    spec, probes the copy and prints the verdict before and after.

    Exits 0 (advice is never a failure; use `probe check` to gate); with `--apply`, 0 when the
    changed network is healthy and 1 when not. Example: probe advise configs/lab1_tiny_relu.yaml --apply
    """

    def body() -> int:
        from probe.api.pipeline import probe_spec
        from probe.judge.advice import advise as advise_spec
        from probe.render import views
        from probe.render.writers import csv_text

        overrides = {**pairs(set_, "", "--set"), **pairs(gate, "gate", "--gate"), **run_overrides(seed, device, dtype)}
        spec = read_spec(spec_path, overrides)
        check_output_path(output, "--output")
        if apply and not probe_run:
            raise SpecError("--apply probes the network before and after the change: drop --no-run")
        applied = None
        if probe_run:
            memory_guard([spec], None)  # the default guard: refuse what does not fit the memory available
            report = probe_spec(spec)
            advice = report.advice or advise_spec(spec, report.verdict)
            if apply:
                applied = _apply(spec_path, spec, advice.change, report.verdict)
        else:
            advice = advise_spec(spec)
        # lines of prose read best on a terminal and in Markdown/HTML; CSV takes them as rows
        render(
            fmt,
            output,
            lambda: views.advice_doc(advice) + (views.applied_doc(applied) if applied else views.doc()),
            json=lambda: views.advise_json(advice, applied),
            csv=lambda: csv_text(views.advise_doc(advice)),
        )
        if applied is None:
            return EXIT_OK
        return EXIT_OK if applied.after.healthy else EXIT_UNHEALTHY

    guard(body)


def _apply(spec_path: Path, spec: "Spec", change: dict[str, Any], before: "Verdict") -> "Applied":
    """Write ``change`` over the spec (with the command line's overrides) to NAME.advised.yaml beside
    it, probe that spec, and return both verdicts."""
    from dataclasses import replace

    import yaml

    from probe import spec as spec_mod
    from probe.api.pipeline import probe_spec
    from probe.judge.advice import change_text
    from probe.render.output import write_text
    from probe.render.views import Applied

    if before.healthy:
        raise SpecError("--apply: the network is healthy, there is nothing to apply")
    if not change:
        raise SpecError("--apply: the suggestion is a change to the model's code, not to a spec key")
    changed = replace(spec_mod.parse(spec_mod.to_dict(spec), dict(change)), trust=spec.trust)
    if spec_path.is_file():
        target = spec_path.with_name(f"{spec_path.stem}.advised.yaml")
    else:  # a pipe (/dev/stdin): the working directory
        target = Path(f"{spec.name}.advised.yaml")
    text = f"# {spec_path.name} with probe advise's change: {change_text(change)}\n" + yaml.safe_dump(
        spec_mod.to_dict(changed), sort_keys=False
    )
    write_text(target, text, "--apply")
    memory_guard([changed], None)
    after = probe_spec(changed).verdict
    return Applied(str(target), dict(change), before, after)
