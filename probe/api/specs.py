"""A spec from what a command line gives: a YAML file and/or a model of one's own, with KEY=VALUE
overrides; the modules the spec's imports may name come from the caller (``--allow-import``),
never from the spec's own text."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from probe.errors import SpecError
from probe.spec import Spec


def overrides_from(items: list[str] | None, prefix: str, option: str) -> dict[str, Any]:
    """``["min_std=1e-3"]`` with prefix ``gate`` -> ``{"gate.min_std": 0.001}``; values are read
    as YAML scalars; without a prefix each key must name its section (``model.depth=20``)."""
    if not items:
        return {}  # without importing yaml
    from probe.spec.yaml_text import parse_scalar

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
        out[key] = parse_scalar(value) if value.strip() else None
    return out


def model_overrides(
    model: str | None,
    model_args: list[str] | None,
    input_shape: str | None,
    inputs: str | None,
    hf: str | None = None,
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
        kwargs = overrides_from(model_args, "kwargs", "--model-arg")
        out["model.kwargs"] = {k.partition(".")[2]: v for k, v in kwargs.items()}
    if input_shape is not None:
        out["model.input_shape"] = input_shape
    if inputs is not None:
        out["model.inputs"] = inputs
    return out


def spec_for(
    path: Path | None,
    overrides: dict[str, Any],
    own: dict[str, Any],
    allow_import: tuple[str, ...] = (),
) -> Spec:
    """The spec from ``path`` and/or a model of one's own (``own``: ``model_overrides``'s keys), with
    ``overrides`` applied; without a file, the spec is named after the factory or the model type."""
    from probe import spec as spec_mod

    overrides = {**overrides, **own}
    if path is not None:
        return read_spec(path, overrides, allow_import)
    hf, model = own.get("model.hf"), own.get("model.import")
    if hf is not None:
        return spec_mod.parse({}, overrides, Path(hf).stem if hf.endswith(".json") else hf)
    if model is None:
        raise SpecError("give a SPEC.yaml, --model MODULE:FACTORY or --hf TYPE_OR_PATH")
    return trusted(spec_mod.parse({}, overrides, model.rpartition(":")[2] or "model"), allow_import)


def read_spec(path: Path, overrides: dict[str, Any], allow_import: tuple[str, ...] = ()) -> Spec:
    """``spec.load`` with the modules its imports may name (``allow_import``)."""
    from probe import spec as spec_mod

    return trusted(spec_mod.load(path, overrides), allow_import)


def base_spec(path: Path | None, overrides: dict[str, Any], name: str, allow_import: tuple[str, ...] = ()) -> Spec:
    """The base network of ``compare``/``sweep``: ``path``'s spec, or the built-in one named ``name``."""
    from probe import spec as spec_mod

    return read_spec(path, overrides, allow_import) if path else spec_mod.parse({}, overrides, name)


def trusted(spec: Spec, allow_import: tuple[str, ...]) -> Spec:
    """``spec`` with the modules ``allow_import`` allows; the spec's own text cannot set them."""
    return replace(spec, trust=replace(spec.trust, modules=allow_import)) if allow_import else spec


def refuse_gate_changes(specs: list[Spec], labels: list[str], overrides: dict[str, Any]) -> None:
    """``--strict-gate``: a SpecError naming each spec whose own gate section changes the gate
    (what the command line set is allowed)."""
    from probe import spec as spec_mod

    cli = {key.removeprefix("gate.") for key in overrides if key.startswith(("gate.", "run.backward"))}
    changed = [
        f"{label}: {'; '.join(c)}"
        for s, label in zip(specs, labels, strict=True)
        if (c := spec_mod.gate_changes(s.gate, cli, backward=s.run.backward))
    ]
    if changed:
        raise SpecError("--strict-gate: a spec changes its own gate:\n" + "\n".join(changed))
