"""probe fix: LSUV turns a failing init into one that passes."""

# No `from __future__ import annotations`: typer reads the annotations at import (see common.py).

from pathlib import Path
from typing import Annotated, Optional

import typer

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
    HfOpt,
    InputShapeOpt,
    InputsOpt,
    ModelArgOpt,
    ModelOpt,
    OutputOpt,
    SeedOpt,
    SetOpt,
    app,
    check_output_path,
    check_outputs,
    guard,
    load_spec,
    load_torch,
    memory_guard,
    pairs,
    render,
    run_overrides,
)


@app.command("fix", cls=Command, rich_help_panel=PANEL_THEORY)
def fix_cmd(
    spec_path: Annotated[
        Optional[Path],
        typer.Argument(metavar="[SPEC.yaml]", help="The spec whose init to fix; optional with --model."),
    ] = None,
    save: Annotated[
        Optional[Path],
        typer.Option(
            "--save", metavar="FILE", help="Write the fixed state dict here (torch.save of model.state_dict())."
        ),
    ] = None,
    start: Annotated[
        Optional[str],
        typer.Option("--start", metavar="STRATEGY", help="Init drawn before rescaling (default: orthogonal)."),
    ] = None,
    tolerance: Annotated[float, typer.Option(help="Accept a layer when |output variance - 1| is below this.")] = 0.1,
    max_iter: Annotated[int, typer.Option("--max-iter", help="Rescaling passes per layer at most.")] = 10,
    fmt: FormatOpt = Format.table,
    output: OutputOpt = None,
    gate: GateOpt = None,
    set_: SetOpt = None,
    seed: SeedOpt = None,
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
    model: ModelOpt = None,
    hf: HfOpt = None,
    model_arg: ModelArgOpt = None,
    input_shape: InputShapeOpt = None,
    inputs: InputsOpt = None,
) -> None:
    """LSUV: rescale each layer to unit output variance, then probe before and after side by side.

    Exits 0 when the fixed network is healthy, 1 when it still breaks a rule.

    Examples: probe fix configs/lab1_tiny_relu.yaml --save fixed.pt;
    probe fix --model tests.models_for_tests:deep_tanh_mlp --input-shape 16
    """

    def body() -> int:
        from probe.experiments import fix
        from probe.render import report as rp
        from probe.render import theory as rt

        overrides = {**pairs(set_, "", "--set"), **pairs(gate, "gate", "--gate"), **run_overrides(seed, device, dtype)}
        spec = load_spec(spec_path, overrides, model, model_arg, input_shape, inputs, hf)
        check_outputs(output)
        check_output_path(save, "--save")
        memory_guard([spec], None)  # the default guard: refuse what does not fit the memory available
        load_torch()
        fixed = fix.fix(spec, start, tolerance, max_iter)
        if save is not None:
            from probe.render.output import write_bytes

            write_bytes(save, fix.weights_bytes(fixed.state_dict), "--save")
        saved = str(save) if save is not None else None
        scales = rt.scale_rows(fixed)
        render(
            fmt,
            output,
            lambda: rt.fix_doc(fixed, saved),
            json=lambda: rp.dumps(rt.fix_dict(fixed, saved)),
            csv=lambda: rp.csv_text(scales, list(scales[0])),
            markdown=lambda: rp.compare_markdown(rt.fix_runs(fixed)),
        )
        return EXIT_OK if fixed.after_verdict.healthy else EXIT_UNHEALTHY

    guard(body)
