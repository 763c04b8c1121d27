"""probe train: a short training run beside the probe (the classic lab's two-moons task)."""

# No `from __future__ import annotations`: typer reads the annotations at import (see common.py).

from dataclasses import asdict, dataclass
from enum import Enum
from typing import Annotated, Any

import typer

from probe.cli.common import EXIT_OK, PANEL_EXPERIMENTS, Command, app, check_tensorboard, load_torch, say
from probe.cli.formats import check_outputs, render, wrote
from probe.cli.guard import guard
from probe.cli.options import Base, EntriesArg, Keys, Output, Pictures, given, grouped
from probe.cli.progress import Steps


class TrainOptimizer(str, Enum):
    adam = "adam"
    sgd = "sgd"


@dataclass(frozen=True)
class Task:
    """The two-moons task and its optimizer (the seed's Lab 2 by default)."""

    optimizer: Annotated[TrainOptimizer, typer.Option(help="The optimizer.", case_sensitive=False)] = (
        TrainOptimizer.adam
    )
    lr: Annotated[float, typer.Option(help="Learning rate.")] = 0.01
    steps: Annotated[int, typer.Option(help="Full-batch training steps.")] = 120
    samples: Annotated[int, typer.Option(help="Two-moons samples (train + validation).")] = 600
    noise: Annotated[float, typer.Option(help="Std of the Gaussian noise on the moons.")] = 0.22
    seed: Annotated[int, typer.Option(help="Seed of the data, the split and the weights.")] = 9


@app.command(cls=Command, rich_help_panel=PANEL_EXPERIMENTS)
@grouped
def train(
    entries: EntriesArg,
    *,
    base: Base,
    task: Task,
    keys: Keys,
    out: Output,
    pictures: Pictures,
) -> None:
    """Train the same network briefly once per init strategy (the seed's Lab 2, two moons).

    Reports start loss, end loss, validation accuracy and a loss curve; flags `stuck` (the loss
    does not improve) and `warning start` (start loss far above ln 2). The default network is the
    seed's 2 -> 64 -> 64 -> 2 ReLU MLP; --config trains any spec (its input/output sizes are set to 2).

    Example: probe train default zeros tiny large xavier he
    """
    guard(lambda: _train(entries, base, task, keys, out, pictures))


def _train(entries: list[str], base: Base, task: Task, keys: Keys, out: Any, pictures: Any) -> int:
    from probe import api
    from probe.render import train_view

    spec = api.train_base({**keys.overrides(), **given(model__activation=base.activation)}, base.config)
    settings = api.train_settings(**{**asdict(task), "optimizer": task.optimizer.value})
    check_outputs(out.output, pictures.plot)
    load_torch()
    check_tensorboard(pictures.tensorboard, entries)
    progress = Steps(len(entries) * settings.steps, "training steps")
    try:
        results = api.train(spec, entries, settings, progress.label, progress.advance, say)
    finally:
        progress.close()
    network = train_view.train_network_line(api.train_network(spec))
    _render_train(results, settings, network, out)
    _pictures(results, pictures)
    return EXIT_OK


def _render_train(results: list[Any], settings: Any, network: str, out: Any) -> None:
    from probe.render import train_view
    from probe.render.html import train_page

    render(
        out.fmt,
        out.output,
        lambda: train_view.train_doc(results, settings, network),
        json=lambda: train_view.train_json(results, settings),
        csv=lambda: train_view.train_csv(results),
        markdown=lambda: train_view.train_markdown(results),
        html=lambda: train_page(results, train_view.train_settings_line(settings), network),
    )


def _pictures(results: list[Any], pictures: Any) -> None:
    if pictures.plot is not None:
        from probe.render.plot import train_figure

        wrote(train_figure(results, pictures.plot))
    if pictures.tensorboard is not None:
        from probe.render.tensorboard import write_training

        for folder in write_training(pictures.tensorboard, results):
            wrote(folder)
