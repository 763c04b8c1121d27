"""probe check: the CI gate over one or more specs (exit 1 on a broken rule)."""

# No `from __future__ import annotations`: typer reads the annotations at import (see common.py).

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from probe.cli.common import (
    EXIT_OK,
    EXIT_UNHEALTHY,
    PANEL_PROBE,
    Command,
    DeviceOpt,
    DtypeOpt,
    Format,
    FormatOpt,
    GateOpt,
    JobsOpt,
    MaxMemoryOpt,
    OutputOpt,
    SeedOpt,
    SetOpt,
    app,
    check_outputs,
    guard,
    isolates,
    load_torch,
    memory_check,
    memory_guard,
    pairs,
    read_spec,
    render,
    run_overrides,
    write_output,
)
from probe.cli.gate_options import OptimizerOpt, optimizer_override
from probe.cli.progress import Steps
from probe.cli.session import current
from probe.cli.step_options import LrOpt, PrecisionOpt, StepsOpt, precision_overrides, steps_overrides


@app.command(cls=Command, rich_help_panel=PANEL_PROBE)
def check(
    spec_paths: Annotated[list[Path], typer.Argument(metavar="SPEC.yaml...", help="Specs that must be healthy.")],
    junit: Annotated[
        Optional[Path], typer.Option(metavar="FILE", help="Also write a JUnit XML file (one test case per spec).")
    ] = None,
    fmt: FormatOpt = Format.table,
    output: OutputOpt = None,
    gate: GateOpt = None,
    optimizer: OptimizerOpt = None,
    steps_: StepsOpt = None,
    lr: LrOpt = None,
    precision: PrecisionOpt = None,
    set_: SetOpt = None,
    seed: SeedOpt = None,
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
    jobs: JobsOpt = 1,
    max_memory: MaxMemoryOpt = None,
    strict_gate: Annotated[
        bool,
        typer.Option(
            "--strict-gate",
            help="Refuse (exit 2) a spec whose own gate section changes a threshold or disables a rule, or "
            "that sets run.backward: false: in CI the gate comes from the command line alone.",
        ),
    ] = False,
) -> None:
    """The CI gate: exit 1 if any spec breaks a health rule, 0 if all are healthy, 2 on bad input.

    Prints one line per problem. Example: probe check configs/*.yaml --junit probe.xml
    """

    def body() -> int:
        from probe.experiments import batch

        overrides = {**pairs(set_, "", "--set"), **pairs(gate, "gate", "--gate"), **run_overrides(seed, device, dtype)}
        overrides.update(optimizer_override(optimizer))
        overrides.update(steps_overrides(steps_, lr))
        overrides.update(precision_overrides(precision))
        specs = [read_spec(p, overrides) for p in spec_paths]  # each read once: a pipe reads once
        if strict_gate:
            _refuse_gate_changes(specs, spec_paths, overrides)
        check_outputs(output, junit=junit)
        labels = [str(p) for p in spec_paths]
        steps = Steps(len(spec_paths), "checking")
        if isolates():  # each spec in a child process; the rules run here (probe.experiments.isolated)
            from probe.experiments.isolated import check_isolated, runs_user_code

            memory_guard([s for s in specs if not runs_user_code(s)], max_memory, jobs)
            try:
                runs, failures = check_isolated(specs, labels, steps, jobs, max_memory, current().debug)
            finally:
                steps.close()
        else:
            # in one process, a factory's model is estimated by its run, from the model it builds (the
            # factory runs once); worker processes (--jobs) are estimated before, side by side
            from probe.measurement.once import built_once

            later = built_once if jobs <= 1 else None
            memory_guard(specs, max_memory, jobs, later=later)
            load_torch()
            try:
                check = None
                if later is not None:
                    check = lambda s: memory_check(s, max_memory) if built_once(s) else None  # noqa: E731
                runs, failures = batch.check_each(specs, labels, steps, jobs, check)
            finally:
                steps.close()
        from probe.cli.guard import err_line
        from probe.render import report as rp  # after the specs: bad input fails without loading it
        from probe.render.output import OutputError
        from probe.render.run_view import check_doc

        for failure in failures:  # each spec that could not be probed, by name; the others are kept
            err_line(f"probe: error: {failure.label}: {failure.message}")
        code = EXIT_OK if all(r.verdict.healthy for r in runs) else EXIT_UNHEALTHY
        code = max([code, *(f.exit_code for f in failures)])
        failed = [(f.label, f.message) for f in failures]
        if junit is not None:
            try:
                write_output(junit, rp.junit_xml(runs, failed), "--junit")
            except OutputError as exc:  # the gate's own answer (exit 1) wins over a failed extra file
                if code == EXIT_OK:
                    raise
                err_line(f"probe: error: {exc}")

        def html() -> str:
            from probe.render.html import runs_page

            return runs_page(runs, "probe check")

        try:
            render(
                fmt,
                output,
                lambda: check_doc(runs, failed),
                json=lambda: rp.runs_json(runs),
                csv=lambda: rp.compare_csv(runs),
                markdown=lambda: rp.compare_markdown(runs),
                html=html,
            )
        except OutputError as exc:  # as for --junit: a failed -o after the run keeps the gate's exit 1
            if code == EXIT_OK:
                raise
            err_line(f"probe: error: {exc}")
        return code

    guard(body)


def _refuse_gate_changes(specs: list[Any], spec_paths: list[Path], overrides: dict[str, Any]) -> None:
    """A SpecError naming each spec whose own gate section changes the gate (what the command
    line set is allowed)."""
    from probe import spec as spec_mod
    from probe.errors import SpecError

    cli = {key.removeprefix("gate.") for key in overrides if key.startswith(("gate.", "run.backward"))}
    changed = [
        f"{p}: {'; '.join(c)}"
        for s, p in zip(specs, spec_paths, strict=True)
        if (c := spec_mod.gate_changes(s.gate, cli, backward=s.run.backward))
    ]
    if changed:
        raise SpecError("--strict-gate: a spec changes its own gate:\n" + "\n".join(changed))
