"""A short training run per init strategy on a toy two-class problem (the seed's Lab 2).

The data is two interleaving half circles ("two moons"), split into train and validation sets
with a seeded, stratified split; ``moons.py`` makes both exactly as the seed's scikit-learn calls
do, without scikit-learn. The network is
built by ``build.build(spec)``, so any spec can be trained briefly; the spec's input and output
sizes are set to the data's (2 features, 2 classes).

A run is flagged ``stuck`` when the loss barely moves (the zeros case: identical units) and
``warning start`` when the first loss is far above ln(classes), the loss of a uniform guess
(the large case).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from probe import spec as spec_mod
from probe.errors import RunError, SpecError
from probe.experiments import moons
from probe.model.build import build
from probe.spec import Choice, Spec

if TYPE_CHECKING:
    import torch

OPTIMIZERS = ("adam", "sgd")
CLASSES = 2
FEATURES = 2

# stuck: the loss fell by less than this fraction of its start value
MIN_IMPROVEMENT = 0.05
# warning start: the first loss is above this multiple of ln(classes)
START_LOSS_FACTOR = 3.0

Step = Callable[[str], None]


@dataclass(frozen=True)
class TrainSettings:
    """The data set and optimizer; the defaults are the seed's Lab 2."""

    samples: int = 600
    noise: float = 0.22
    val_fraction: float = 0.25
    optimizer: str = "adam"
    lr: float = 0.01
    steps: int = 120
    seed: int = 9

    def check(self) -> None:
        """Raise ``SpecError`` on an impossible setting."""
        if self.optimizer not in OPTIMIZERS:
            raise SpecError(f"unknown optimizer '{self.optimizer}' (valid: {', '.join(OPTIMIZERS)})", "--optimizer")
        if self.samples < 8:
            raise SpecError(f"must be >= 8, got {self.samples}", "--samples")
        if not 0.0 < self.val_fraction < 1.0:  # NaN fails every comparison: refused here too
            raise SpecError(f"must be between 0 and 1, got {self.val_fraction}", "--val-fraction")
        if self.steps < 1:
            raise SpecError(f"must be >= 1, got {self.steps}", "--steps")
        if not (self.lr > 0.0 and math.isfinite(self.lr)):
            raise SpecError(f"must be a finite number > 0, got {self.lr}", "--lr")
        if not (self.noise >= 0.0 and math.isfinite(self.noise)):
            raise SpecError(f"must be a finite number >= 0, got {self.noise}", "--noise")


@dataclass(frozen=True)
class TrainResult:
    """One strategy's training run."""

    label: str
    strategy: str
    activation: str
    start_loss: float
    end_loss: float
    val_accuracy: float
    losses: tuple[float, ...]  # the training loss before each step, then after the last one
    stuck: bool
    warning_start: bool

    @property
    def flags(self) -> tuple[str, ...]:
        return tuple(f for f, on in (("stuck", self.stuck), ("warning start", self.warning_start)) if on)


def lab2_spec(seed: int = 9) -> Spec:
    """The seed's MoonMLP: 2 -> 64 -> 64 -> 2 with ReLU, as a spec."""
    return spec_mod.parse(
        {
            "model": {"input_dim": FEATURES, "width": 64, "depth": 2, "output_dim": CLASSES, "activation": "relu"},
            "run": {"seed": seed, "device": "cpu"},
        },
        default_name="lab2",
    )


def two_moons(samples: int, noise: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's ``make_moons(samples, noise=noise, random_state=seed)``, point for point."""
    import torch

    data = moons.make_moons(samples, noise, seed)
    return torch.tensor(data.points, dtype=torch.float32), torch.tensor(data.labels, dtype=torch.long)


def stratified_split(y: torch.Tensor, val_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Train and validation indices as scikit-learn's stratified ``train_test_split`` gives them."""
    import torch

    train, val = moons.stratified_split(y.tolist(), val_fraction, seed)
    return torch.tensor(train, dtype=torch.long), torch.tensor(val, dtype=torch.long)


def check_trainable(spec: Spec) -> None:
    """Raise ``SpecError`` unless the spec's network takes the two-moons points (2 features).

    The MLP and the residual stack of Linear blocks take a feature vector; conv, transformer and
    recurrent kinds want images, sequences or tokens, and a user model its own inputs.
    """
    m = spec.model
    supported = "probe train supports model.kind mlp and residual with block: mlp"
    if m.factory is not None:
        raise SpecError(f"a user model (model.import) cannot take the two-moons points; {supported}", "model.import")
    if m.hf is not None:
        raise SpecError(f"a transformers model (model.hf) cannot take the two-moons points; {supported}", "model.hf")
    if m.kind == "residual" and m.block != "mlp":
        raise SpecError(f"residual block '{m.block}' cannot take 2 input features; {supported}", "model.block")
    if m.kind not in ("mlp", "residual"):
        raise SpecError(f"kind '{m.kind}' cannot take 2 input features; {supported}", "model.kind")


def train_spec(base: Spec, strategy: str, activation: str | None = None) -> Spec:
    """``base`` with the data set's input/output sizes and the strategy's weight init.

    ``default`` keeps every torch default, biases included (the seed's ``default``); any other
    strategy uses the spec's bias init (zeros unless set), as the seed does.
    """
    from probe.experiments import batch

    entry = batch.Entry(strategy + (f":{activation}" if activation else ""), strategy, activation)
    spec = batch.entry_spec(base, entry)
    spec = replace(spec, model=replace(spec.model, input_dim=FEATURES, output_dim=CLASSES))
    if spec.init.weight.name == "default":
        spec = replace(spec, init=replace(spec.init, bias=Choice("default", {})))
    return spec


def train_one(
    spec: Spec, settings: TrainSettings, label: str | None = None, on_step: Callable[[], None] | None = None
) -> TrainResult:
    """Train the spec's network on two moons; same data and seed for every strategy.
    ``on_step`` is called after each optimizer step (progress).

    Runs on the spec's ``run.device`` and ``run.dtype`` (the Lab 2 spec: CPU, float32).
    """
    import torch
    from torch import nn

    from probe.model.mup import param_groups

    settings.check()
    x, y = two_moons(settings.samples, settings.noise, settings.seed)
    train_idx, val_idx = stratified_split(y, settings.val_fraction, settings.seed)
    x_train, y_train, x_val, y_val = x[train_idx], y[train_idx], x[val_idx], y[val_idx]
    from probe.measurement.run import resolve_device

    device = resolve_device(spec.run.device)
    dtype: torch.dtype = getattr(torch, spec.run.dtype)
    x_train, x_val = x_train.to(device=device, dtype=dtype), x_val.to(device=device, dtype=dtype)
    y_train, y_val = y_train.to(device), y_val.to(device)
    from probe.measurement.threads import intra_op_threads, threads_for

    threads = threads_for(spec) if device.type == "cpu" else None
    with torch.random.fork_rng(devices=[]), intra_op_threads(threads):
        torch.manual_seed(settings.seed)
        built = build(spec)
        if spec.init.weight.name == "lsuv":  # data-dependent: rescaled on the probe's batches, as probe run does
            from probe.model.lsuv import lsuv_built

            lsuv_built(built, spec)
        model = built.model.to(device=device, dtype=dtype)  # built on the CPU, like probe run
        params = list(model.parameters())
        if settings.optimizer == "adam":  # muP's per-tensor Adam learning rates (probe/model/mup.py)
            groups = param_groups(model, settings.lr, built.lr_scale)
            optimizer: torch.optim.Optimizer = torch.optim.Adam(groups, lr=settings.lr)
        elif spec.model.parametrization == "mup":
            raise SpecError(
                "muP's learning rates here are Adam's: train a muP spec with --optimizer adam", "--optimizer"
            )
        else:
            optimizer = torch.optim.SGD(params, lr=settings.lr)
        loss_fn = nn.CrossEntropyLoss()
        losses: list[float] = []
        model.train()
        try:
            for _ in range(settings.steps):
                loss = loss_fn(model(x_train), y_train)
                losses.append(loss.item())
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                if on_step is not None:
                    on_step()
            with torch.no_grad():
                losses.append(loss_fn(model(x_train), y_train).item())
                model.eval()
                accuracy = (model(x_val).argmax(dim=1) == y_val).float().mean().item()
        except RuntimeError as exc:
            raise RunError(f"training '{label or spec.name}' failed: {str(exc).splitlines()[0]}") from None
    start, end = losses[0], losses[-1]
    return TrainResult(
        label=label or spec.name,
        strategy=spec.init.weight.name,
        activation=spec.model.activation.name,
        start_loss=start,
        end_loss=end,
        val_accuracy=accuracy,
        losses=tuple(losses),
        stuck=is_stuck(start, end),
        warning_start=is_warning_start(start),
    )


def is_stuck(start_loss: float, end_loss: float) -> bool:
    """The loss did not improve by ``MIN_IMPROVEMENT`` of its start (or is not finite)."""
    if not (math.isfinite(start_loss) and math.isfinite(end_loss)):
        return True
    return end_loss > start_loss * (1.0 - MIN_IMPROVEMENT)


def is_warning_start(start_loss: float, classes: int = CLASSES) -> bool:
    """The first loss is far above ln(classes), what a network guessing uniformly scores."""
    return not math.isfinite(start_loss) or start_loss > START_LOSS_FACTOR * math.log(classes)


def train_many(
    base: Spec,
    entries: Sequence[str],
    settings: TrainSettings,
    step: Step | None = None,
    on_step: Callable[[int], None] | None = None,
) -> list[TrainResult]:
    """Train once per ``STRATEGY[:ACTIVATION]`` entry with the same data, seed and settings;
    ``step(label)`` as each entry starts, ``on_step(1)`` after each optimizer step."""
    from probe.experiments import batch

    settings.check()
    check_trainable(base)
    parsed = [batch.parse_entry(e) for e in entries]  # all bad names fail before any training
    results = []
    for entry in parsed:
        if step:
            step(entry.text)
        spec = train_spec(base, entry.strategy, entry.activation)
        results.append(train_one(spec, settings, entry.text, None if on_step is None else lambda: on_step(1)))
    return results
