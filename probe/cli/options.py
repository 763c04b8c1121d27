"""The options commands share, each declared once, in groups: a command names the groups it takes
(``out: Output``) and ``grouped`` spreads each group's fields into the options typer sees, then
hands the command one object per group. A group also says what its options change in the spec
(``overrides``), so no command spells that out again.
"""

# No `from __future__ import annotations`: typer reads the annotations at import (see common.py).
import dataclasses
import functools
import inspect
from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Optional, TypeVar

import typer

from probe.cli.formats import Format

F = TypeVar("F", bound=Callable[..., Any])


class GateOptimizer(str, Enum):
    any = "any"
    sgd = "sgd"
    adam = "adam"


def given(**values: Any) -> dict[str, Any]:
    """The spec overrides among ``values`` (spec key -> value) that the command line gave."""
    return {key.replace("__", "."): v for key, v in values.items() if v is not None}


FormatOpt = Annotated[
    Format,
    typer.Option("--format", "-f", metavar="FORMAT", help="table, json, csv, markdown or html.", case_sensitive=False),
]
OutputOpt = Annotated[
    Optional[Path],
    typer.Option(
        "--output", "-o", metavar="FILE", help="Write the output to this file (atomically) instead of stdout."
    ),
]


@dataclasses.dataclass(frozen=True)
class Output:
    """-f/--format and -o/--output: every command's."""

    fmt: FormatOpt = Format.table
    output: OutputOpt = None


SetOpt = Annotated[
    Optional[list[str]],
    typer.Option(
        "--set", "-s", metavar="KEY=VALUE", help="Override any spec key, e.g. --set model.depth=20 (repeatable)."
    ),
]


@dataclasses.dataclass(frozen=True)
class Keys:
    """--set, --device and --dtype: any spec key, and the run's device and dtype."""

    set_: SetOpt = None
    device: Annotated[
        Optional[str],
        typer.Option("--device", metavar="DEVICE", help="Override run.device (auto, cpu, cuda, cuda:N, mps)."),
    ] = None
    dtype: Annotated[
        Optional[str],
        typer.Option("--dtype", metavar="DTYPE", help="Override run.dtype (float32, float64, bfloat16, float16)."),
    ] = None

    def overrides(self, seed: Optional[int] = None) -> dict[str, Any]:
        from probe.api import overrides_from

        keys = overrides_from(self.set_, "", "--set")
        return {**keys, **given(run__seed=seed, run__device=self.device, run__dtype=self.dtype)}


SeedOpt = Annotated[Optional[int], typer.Option("--seed", metavar="N", help="Override run.seed.")]


@dataclasses.dataclass(frozen=True)
class Gate:
    """--gate and --optimizer: the gate's thresholds and its optimizer hint (docs/verdicts.md)."""

    gate: Annotated[
        Optional[list[str]],
        typer.Option(
            "--gate",
            "-g",
            metavar="KEY=VALUE",
            help="Override a gate threshold, e.g. --gate min_std=1e-3 (repeatable).",
        ),
    ] = None
    optimizer: Annotated[
        Optional[GateOptimizer],
        typer.Option(
            "--optimizer",
            case_sensitive=False,
            help="Sets gate.optimizer: sgd makes moderate vanishing an error, adam only vanishing by 4+ decades.",
        ),
    ] = None

    def overrides(self) -> dict[str, Any]:
        from probe.api import overrides_from

        hint = given(gate__optimizer=None if self.optimizer is None else self.optimizer.value)
        return {**overrides_from(self.gate, "gate", "--gate"), **hint}


LrOpt = Annotated[
    Optional[float],
    typer.Option(
        "--lr", metavar="LR", min=0.0, help="Learning rate of the --steps AdamW steps (run.lr, default 1e-3)."
    ),
]


@dataclasses.dataclass(frozen=True)
class FirstSteps:
    """--steps, --lr (docs/verdicts.md, ``stalled``) and --precision (docs/precision.md, ``headroom``)."""

    steps: Annotated[
        Optional[int],
        typer.Option(
            "--steps",
            metavar="K",
            min=0,
            help="After the step-0 measurement, take K AdamW steps on one batch (weights restored after) and "
            "judge how far they moved it (the stalled rule). Sets run.steps.",
        ),
    ] = None
    lr: LrOpt = None
    precision: Annotated[
        Optional[str],
        typer.Option(
            "--precision",
            metavar="FORMAT",
            help="Also measure each row's amax and underflow against fp16, bf16, fp8 (= fp8_e4m3) or fp8_e5m2 and "
            "judge them (the headroom rule). Sets run.precision.",
        ),
    ] = None

    def overrides(self) -> dict[str, Any]:
        return given(run__steps=self.steps, run__lr=self.lr, run__precision=self.precision)


@dataclasses.dataclass(frozen=True)
class OwnModel:
    """--model, --hf and their arguments: a network of your own instead of (or over) a spec's."""

    model: Annotated[
        Optional[str],
        typer.Option("--model", "-m", metavar="MODULE:FACTORY", help="Probe your own nn.Module factory."),
    ] = None
    hf: Annotated[
        Optional[str],
        typer.Option(
            "--hf",
            metavar="TYPE_OR_PATH",
            help="Probe a transformers model built from its config (offline): a model type (llama, gpt2, bert, "
            "vit, resnet, ...) or a local config.json; needs probe\\[hf].",
        ),
    ] = None
    model_arg: Annotated[
        Optional[list[str]],
        typer.Option(
            "--model-arg", metavar="KEY=VALUE", help="A factory keyword argument or --hf config field (repeatable)."
        ),
    ] = None
    input_shape: Annotated[
        Optional[str],
        typer.Option("--input-shape", metavar="D,D,...", help="One sample's shape for --model, e.g. 3,32,32."),
    ] = None
    inputs: Annotated[
        Optional[str],
        typer.Option("--inputs", metavar="MODULE:FN", help="FN(batch_size) returns example inputs for --model."),
    ] = None


@dataclasses.dataclass(frozen=True)
class Pictures:
    """--plot and --tensorboard: pictures of the result beside the printed one."""

    plot: Annotated[
        Optional[Path],
        typer.Option(
            "--plot", metavar="PATH", help="Also draw a picture to PATH (.png, .svg or .pdf; needs probe\\[plot])."
        ),
    ] = None
    tensorboard: Annotated[
        Optional[Path],
        typer.Option(
            "--tensorboard",
            metavar="DIR",
            help="Also write TensorBoard event files to DIR, one folder per run (needs probe\\[tensorboard]).",
        ),
    ] = None

    @property
    def wanted(self) -> bool:
        return self.plot is not None or self.tensorboard is not None


MaxMemoryOpt = Annotated[
    Optional[float],
    typer.Option(
        "--max-memory",
        metavar="GIB",
        min=0.0,
        help="Refuse (exit 3) any run whose estimated peak memory exceeds this many GiB.",
    ),
]


@dataclasses.dataclass(frozen=True)
class Scale:
    """--jobs and --max-memory: runs side by side, and the memory they may take."""

    jobs: Annotated[int, typer.Option("--jobs", "-j", min=1, help="Worker processes running probes side by side.")] = 1
    max_memory: MaxMemoryOpt = None


EntriesArg = Annotated[
    list[str],
    typer.Argument(
        metavar="STRATEGY[:ACTIVATION]...",
        help="Init strategies, each optionally with an activation, e.g. he xavier:tanh.",
    ),
]


@dataclasses.dataclass(frozen=True)
class Base:
    """--config and --activation: the network every entry of compare, sweep and train starts from."""

    config: Annotated[
        Optional[Path],
        typer.Option("--config", "-c", metavar="SPEC.yaml", help="Base spec (default: see the command's help)."),
    ] = None
    activation: Annotated[
        Optional[str], typer.Option(metavar="NAME", help="Override model.activation for entries without one.")
    ] = None


def grouped(fn: F) -> F:
    """``fn`` with each parameter annotated by a group (a dataclass above) spread into that group's
    options, in place, for typer; the call gathers them back into one group object."""
    params: list[inspect.Parameter] = []
    groups: dict[str, tuple[type, list[str]]] = {}
    for p in inspect.signature(fn).parameters.values():
        if not (isinstance(p.annotation, type) and dataclasses.is_dataclass(p.annotation)):
            params.append(p.replace(kind=inspect.Parameter.KEYWORD_ONLY))
            continue
        fields = dataclasses.fields(p.annotation)
        groups[p.name] = (p.annotation, [f.name for f in fields])
        params += [
            inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default, annotation=f.type)
            for f in fields
        ]

    @functools.wraps(fn)
    def command(**given: Any) -> Any:
        for name, (cls, fields) in groups.items():
            given[name] = cls(**{f: given.pop(f) for f in fields})
        return fn(**given)

    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in params}
    del command.__wrapped__  # typer reads the signature above, not fn's
    return command  # type: ignore[return-value]


def probe_overrides(keys: Keys, seed: Optional[int], gate: Gate, steps: FirstSteps) -> dict[str, Any]:
    """The spec overrides of the probing commands' shared options (run, check, compare)."""
    return {**keys.overrides(seed), **gate.overrides(), **steps.overrides()}
