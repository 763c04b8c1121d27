"""probe check: the CI gate over one or more specs (exit 1 on a broken rule)."""

# No `from __future__ import annotations`: typer reads the annotations at import (see common.py).

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from probe.cli.common import EXIT_OK, EXIT_UNHEALTHY, PANEL_PROBE, Command, app, isolates, load_torch, render_runs, say
from probe.cli.formats import check_outputs, write_output
from probe.cli.guard import err_line, guard
from probe.cli.options import FirstSteps, Gate, Keys, Output, Scale, SeedOpt, grouped, probe_overrides
from probe.cli.progress import Steps
from probe.cli.session import current

SpecsArg = Annotated[list[Path], typer.Argument(metavar="SPEC.yaml...", help="Specs that must be healthy.")]
JunitOpt = Annotated[
    Optional[Path], typer.Option(metavar="FILE", help="Also write a JUnit XML file (one test case per spec).")
]
StrictGateOpt = Annotated[
    bool,
    typer.Option(
        "--strict-gate",
        help="Refuse (exit 2) a spec whose own gate section changes a threshold or disables a rule, or "
        "that sets run.backward: false: in CI the gate comes from the command line alone.",
    ),
]


@app.command(cls=Command, rich_help_panel=PANEL_PROBE)
@grouped
def check(
    spec_paths: SpecsArg,
    *,
    junit: JunitOpt = None,
    out: Output,
    gate: Gate,
    steps: FirstSteps,
    keys: Keys,
    seed: SeedOpt = None,
    scale: Scale,
    strict_gate: StrictGateOpt = False,
) -> None:
    """The CI gate: exit 1 if any spec breaks a health rule, 0 if all are healthy, 2 on bad input.

    Prints one line per problem. Example: probe check configs/*.yaml --junit probe.xml
    """

    guard(lambda: _check(spec_paths, probe_overrides(keys, seed, gate, steps), junit, strict_gate, out, scale))


def _check(
    spec_paths: list[Path], overrides: dict[str, Any], junit: Optional[Path], strict_gate: bool, out: Any, scale: Any
) -> int:
    from probe import api

    allowed = current().allow_import
    specs = [api.read_spec(p, overrides, allowed) for p in spec_paths]  # each read once: a pipe reads once
    labels = [str(p) for p in spec_paths]
    if strict_gate:
        api.refuse_gate_changes(specs, labels, overrides)
    check_outputs(out.output, junit=junit)
    runs, failures = _probe_each(specs, labels, scale)
    for failure in failures:  # each spec that could not be probed, by name; the others are kept
        err_line(f"probe: error: {failure.label}: {failure.message}")
    code = EXIT_OK if all(r.verdict.healthy for r in runs) else EXIT_UNHEALTHY
    code = max([code, *(f.exit_code for f in failures)])
    failed = [(f.label, f.message) for f in failures]
    if junit is not None:
        from probe.render.report import junit_xml

        _keeping_gate(code, lambda: write_output(junit, junit_xml(runs, failed), "--junit"))
    _keeping_gate(code, lambda: _render_check(runs, failed, out))
    return code


def _probe_each(specs: list[Any], labels: list[str], scale: Any) -> Any:
    """Each spec probed and judged (in a child process each from the probe command), with progress."""
    from probe import api

    progress = Steps(len(specs), "checking")
    try:
        isolated = isolates()
        if not isolated:
            load_torch()
        return api.check(
            specs, labels, progress, jobs=scale.jobs, max_memory=scale.max_memory,
            isolated=isolated, debug=current().debug, say=say,
        )  # fmt: skip
    finally:
        progress.close()


def _keeping_gate(code: int, write: Callable[[], None]) -> None:
    """``write`` an extra output; when it fails after an unhealthy gate, the gate's own answer
    (exit 1) wins and the failure is one line."""
    from probe.render.output import OutputError

    try:
        write()
    except OutputError as exc:
        if code == EXIT_OK:
            raise
        err_line(f"probe: error: {exc}")


def _render_check(runs: list[Any], failed: list[tuple[str, str]], out: Any) -> None:
    from probe.render.run_view import check_doc

    render_runs(runs, lambda: check_doc(runs, failed), "probe check", out)
