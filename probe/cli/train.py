"""probe train: a short training run beside the probe (the classic lab's two-moons task)."""

# No `from __future__ import annotations`: typer reads the annotations at import (see common.py).

from enum import Enum
from typing import Annotated, Optional

import typer

from probe.cli.common import (
    EXIT_OK,
    PANEL_EXPERIMENTS,
    Command,
    ConfigOpt,
    DeviceOpt,
    DtypeOpt,
    EntriesArg,
    Format,
    FormatOpt,
    OutputOpt,
    PlotOpt,
    SetOpt,
    TensorboardOpt,
    app,
    check_outputs,
    check_tensorboard,
    guard,
    load_torch,
    memory_guard,
    pairs,
    render,
    run_overrides,
    wrote,
)
from probe.cli.progress import Steps


class TrainOptimizer(str, Enum):
    adam = "adam"
    sgd = "sgd"


@app.command(cls=Command, rich_help_panel=PANEL_EXPERIMENTS)
def train(
    entries: EntriesArg,
    config: ConfigOpt = None,
    optimizer: Annotated[
        TrainOptimizer, typer.Option(help="TrainOptimizer.", case_sensitive=False)
    ] = TrainOptimizer.adam,
    lr: Annotated[float, typer.Option(help="Learning rate.")] = 0.01,
    steps: Annotated[int, typer.Option(help="Full-batch training steps.")] = 120,
    samples: Annotated[int, typer.Option(help="Two-moons samples (train + validation).")] = 600,
    noise: Annotated[float, typer.Option(help="Std of the Gaussian noise on the moons.")] = 0.22,
    seed: Annotated[int, typer.Option(help="Seed of the data, the split and the weights.")] = 9,
    activation: Annotated[
        Optional[str], typer.Option(metavar="NAME", help="Override model.activation for entries without one.")
    ] = None,
    set_: SetOpt = None,
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
    fmt: FormatOpt = Format.table,
    output: OutputOpt = None,
    plot: PlotOpt = None,
    tensorboard: TensorboardOpt = None,
) -> None:
    """Train the same network briefly once per init strategy (the seed's Lab 2, two moons).

    Reports start loss, end loss, validation accuracy and a loss curve; flags `stuck` (the loss
    does not improve) and `warning start` (start loss far above ln 2). The default network is the
    seed's 2 -> 64 -> 64 -> 2 ReLU MLP; --config trains any spec (its input/output sizes are set to 2).

    Example: probe train default zeros tiny large xavier he
    """

    def body() -> int:
        from probe import spec as spec_mod
        from probe.experiments import train as tr
        from probe.render import train_view

        overrides = {**pairs(set_, "", "--set"), **run_overrides(None, device, dtype)}
        if activation is not None:
            overrides["model.activation"] = activation
        base = (
            spec_mod.load(config, overrides)
            if config
            else spec_mod.parse(spec_mod.to_dict(tr.lab2_spec()), overrides, "lab2")
        )
        settings = tr.TrainSettings(samples, noise, 0.25, optimizer.value, lr, steps, seed)
        settings.check()
        memory_guard([base], None)  # the default guard: refuse what does not fit the memory available
        check_outputs(output, plot)
        load_torch()
        if tensorboard is not None:
            check_tensorboard(tensorboard, entries)
        progress = Steps(len(entries) * steps, "training steps")
        try:
            results = tr.train_many(base, entries, settings, progress.label, progress.advance)
        finally:
            progress.close()
        network = train_view.train_network_line(tr.train_spec(base, base.init.weight.name))

        def html() -> str:
            from probe.render.html import train_page

            return train_page(results, train_view.train_settings_line(settings), network)

        render(
            fmt,
            output,
            lambda: train_view.train_doc(results, settings, network),
            json=lambda: train_view.train_json(results, settings),
            csv=lambda: train_view.train_csv(results),
            markdown=lambda: train_view.train_markdown(results),
            html=html,
        )
        if plot is not None:
            from probe.render.plot import train_figure

            wrote(train_figure(results, plot))
        if tensorboard is not None:
            from probe.render.tensorboard import write_training

            for folder in write_training(tensorboard, results):
                wrote(folder)
        return EXIT_OK

    guard(body)
