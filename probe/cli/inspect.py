"""probe inspect: parameters against their init rule."""

# No `from __future__ import annotations`: typer reads the annotations at import (see common.py).

from pathlib import Path
from typing import Annotated, Optional

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
    HfOpt,
    InputShapeOpt,
    InputsOpt,
    ModelArgOpt,
    ModelOpt,
    OutputOpt,
    SeedOpt,
    SetOpt,
    app,
    check_outputs,
    guard,
    load_spec,
    memory_guard,
    pairs,
    render,
    run_overrides,
)


@app.command(cls=Command, rich_help_panel=PANEL_PROBE)
def inspect(
    spec_path: Annotated[
        Optional[Path],
        typer.Argument(metavar="[SPEC.yaml]", help="The spec whose network to inspect; optional with --model."),
    ] = None,
    set_: SetOpt = None,
    seed: SeedOpt = None,
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
    fmt: FormatOpt = Format.table,
    output: OutputOpt = None,
    model: ModelOpt = None,
    hf: HfOpt = None,
    model_arg: ModelArgOpt = None,
    input_shape: InputShapeOpt = None,
    inputs: InputsOpt = None,
) -> None:
    """Per parameter: shape, fan_in, fan_out, mean, std and the std its init rule should give.

    Exits 1 if a parameter differs from its rule. Also shows a forward-only pass of activation scales.

    Examples: probe inspect configs/lab1_he_relu.yaml;
    probe inspect --model tests.models_for_tests:awkward --input-shape 3,8,8
    """

    def body() -> int:
        from probe import spec as spec_mod
        from probe.experiments.inspect_params import inspect as inspect_spec
        from probe.render import inspect_view

        overrides = {**pairs(set_, "", "--set"), **run_overrides(seed, device, dtype)}
        spec = load_spec(spec_path, overrides, model, model_arg, input_shape, inputs, hf)
        check_outputs(output)
        memory_guard([spec], None)  # the default guard: refuse what does not fit the memory available
        ins = inspect_spec(spec)

        def html() -> str:
            from probe.render.html import inspect_page

            return inspect_page(ins, spec_mod.summary(spec))

        render(
            fmt,
            output,
            lambda: inspect_view.inspect_doc(ins, spec_mod.summary(spec)),
            json=lambda: inspect_view.inspect_json(ins),
            csv=lambda: inspect_view.inspect_csv(ins),
            markdown=lambda: inspect_view.inspect_markdown(ins),
            html=html,
        )
        return EXIT_UNHEALTHY if ins.mismatches else EXIT_OK

    guard(body)
