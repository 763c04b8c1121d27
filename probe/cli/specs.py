"""The spec a command probes: SPEC.yaml and the options that override it (``--set``, ``--gate``), or
a model named on the command line (``--model`` and friends, ``--hf``)."""

# No `from __future__ import annotations`: typer reads the option annotations (see common.py).
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from probe.errors import SpecError


def pairs(items: list[str] | None, prefix: str, option: str) -> dict[str, Any]:
    """``["min_std=1e-3"]`` -> ``{"gate.min_std": 0.001}``; values are read as YAML scalars."""
    if not items:
        return {}  # without importing yaml
    import yaml

    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise SpecError(f"{option} expects KEY=VALUE, got '{item}'")
        if prefix:
            key = f"{prefix}.{key}"
        elif "." not in key and key != "name":
            raise SpecError(f"{option} expects SECTION.KEY=VALUE (e.g. model.depth=20), got '{item}'")
        try:
            out[key] = yaml.safe_load(value) if value.strip() else None
        except yaml.YAMLError:
            out[key] = value
    return out


def _model_overrides(
    model: str | None, model_args: list[str] | None, input_shape: str | None, inputs: str | None, hf: str | None = None
) -> dict[str, Any]:
    """``--model`` and friends as spec overrides (``model.import``, ``model.kwargs``, ...)."""
    out: dict[str, Any] = {}
    if model is not None and hf is not None:
        raise SpecError("give --model or --hf, not both")
    if model is not None:
        out["model.import"] = model
    if hf is not None:
        out["model.hf"] = hf
    if model_args:
        if model is None and hf is None:
            raise SpecError("--model-arg needs --model or --hf")
        out["model.kwargs"] = {k.partition(".")[2]: v for k, v in pairs(model_args, "kwargs", "--model-arg").items()}
    if input_shape is not None:
        out["model.input_shape"] = input_shape
    if inputs is not None:
        out["model.inputs"] = inputs
    return out


ModelOpt = Annotated[
    Optional[str],
    typer.Option("--model", "-m", metavar="MODULE:FACTORY", help="Probe your own nn.Module factory."),
]
ModelArgOpt = Annotated[
    Optional[list[str]],
    typer.Option(
        "--model-arg",
        metavar="KEY=VALUE",
        help="A keyword argument of the factory, or a --hf config field (repeatable).",
    ),
]
HfOpt = Annotated[
    Optional[str],
    typer.Option(
        "--hf",
        metavar="TYPE_OR_PATH",
        help="Probe a transformers model built from its config (offline): a model type (llama, gpt2, bert, vit, "
        "resnet, ...) or a local config.json; needs probe[hf].",
    ),
]
InputShapeOpt = Annotated[
    Optional[str],
    typer.Option("--input-shape", metavar="D,D,...", help="One sample's shape for --model, e.g. 3,32,32."),
]
InputsOpt = Annotated[
    Optional[str],
    typer.Option("--inputs", metavar="MODULE:FN", help="FN(batch_size) returns example inputs for --model."),
]


def load_spec(
    spec_path: Path | None,
    overrides: dict[str, Any],
    model: str | None,
    model_args: list[str] | None,
    input_shape: str | None,
    inputs: str | None,
    hf: str | None = None,
) -> Any:
    """The spec from SPEC.yaml and/or ``--model`` (or ``--hf``) and friends, with ``overrides`` applied."""
    from probe import spec as spec_mod

    overrides = {**overrides, **_model_overrides(model, model_args, input_shape, inputs, hf)}
    if spec_path is None:
        if hf is not None:
            return spec_mod.parse({}, overrides, Path(hf).stem if hf.endswith(".json") else hf)
        if model is None:
            raise SpecError("give a SPEC.yaml, --model MODULE:FACTORY or --hf TYPE_OR_PATH")
        return spec_mod.parse({}, overrides, model.rpartition(":")[2] or "model")
    return spec_mod.load(spec_path, overrides)
