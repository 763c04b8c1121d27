"""YAML text -> a validated, typed ``Spec``. The only module that reads user configuration.

Every key has a default, so ``{}`` is a valid spec: the seed lab's 8-layer He + ReLU network.
Errors are ``SpecError`` values carrying the dotted key path, the valid choices and a
"did you mean" suggestion; YAML syntax errors carry line and column.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from probe import activations, inits
from probe.errors import SpecError
from probe.schema import Param, check_params, type_name, unknown

RULE_NAMES = (
    "vanishing",
    "exploding",
    "saturation",
    "dead_units",
    "symmetry",
    "nonfinite",
    "gradient_vanishing",
    "gradient_exploding",
)

MODEL_KINDS = ("mlp",)
NORMS = ("none", "batchnorm", "layernorm")
DTYPES = ("float32", "float64", "bfloat16", "float16")
DISTRIBUTIONS = ("normal", "uniform")
BIAS_STRATEGIES = tuple(n for n, s in inits.STRATEGIES.items() if not s.needs_fan)
_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


@dataclass(frozen=True)
class Choice:
    """A named entry of a registry with its validated parameters (an activation, a strategy)."""

    name: str
    params: dict[str, Any] = field(default_factory=dict)

    def label(self, schema: Mapping[str, Param] | None = None) -> str:
        """``leaky_relu(negative_slope=0.2)``: the name and the parameters that differ from the
        defaults in ``schema`` (all non-null ones when no schema is given)."""
        shown = {
            k: v
            for k, v in self.params.items()
            if v is not None and (schema is None or k not in schema or schema[k].default != v)
        }
        if not shown:
            return self.name
        return self.name + "(" + ", ".join(f"{k}={v}" for k, v in shown.items()) + ")"


@dataclass(frozen=True)
class ModelSpec:
    kind: str
    input_dim: int
    width: int
    depth: int
    output_dim: int | None
    activation: Choice
    bias: bool
    norm: str


@dataclass(frozen=True)
class InitSpec:
    weight: Choice
    bias: Choice


@dataclass(frozen=True)
class DataSpec:
    batch_size: int
    batches: int
    distribution: str


@dataclass(frozen=True)
class RunSpec:
    device: str
    dtype: str
    seed: int
    backward: bool


@dataclass(frozen=True)
class GateSpec:
    """Thresholds of the health rules (see ``rules.py``); ``disable`` skips rules by name."""

    min_std: float
    min_std_ratio: float
    max_std: float
    max_std_ratio: float
    max_saturation: float
    max_dead_units: float
    min_unit_spread: float
    max_nonfinite: int
    min_grad_ratio: float
    max_grad_ratio: float
    disable: tuple[str, ...] = ()


@dataclass(frozen=True)
class Spec:
    model: ModelSpec
    init: InitSpec
    data: DataSpec
    run: RunSpec
    gate: GateSpec
    name: str = "probe"


# ---- the schema: every key, its type, default and bounds -------------------------------------

_MODEL: dict[str, Param] = {
    "kind": Param("str", "mlp", choices=MODEL_KINDS, help="network family"),
    "input_dim": Param("int", 32, minimum=1, help="features of each random input"),
    "width": Param("int", 128, minimum=1, help="units of each hidden layer"),
    "depth": Param("int", 8, minimum=1, help="hidden layers, each Linear -> [norm] -> activation"),
    "output_dim": Param("int", None, nullable=True, minimum=1, help="null: no head; else a final Linear"),
    "bias": Param("bool", True, help="Linear layers have a bias"),
    "norm": Param("str", "none", choices=NORMS, help="normalization after each Linear"),
}
_DATA: dict[str, Param] = {
    "batch_size": Param("int", 512, minimum=2, help="samples per batch (a std needs 2)"),
    "batches": Param("int", 1, minimum=1, help="statistics accumulate over all batches"),
    "distribution": Param("str", "normal", choices=DISTRIBUTIONS, help="unit-variance inputs"),
}
_RUN: dict[str, Param] = {
    "device": Param("str", "auto", help="auto, cpu, cuda, cuda:N or mps"),
    "dtype": Param("str", "float32", choices=DTYPES),
    "seed": Param("int", 0, minimum=0, help="same spec and seed -> identical numbers"),
    "backward": Param("bool", True, help="also measure gradients"),
}
GATE_PARAMS: dict[str, Param] = {
    "min_std": Param("float", 1e-2, minimum=0.0, help="vanishing: any layer's activation std below this"),
    "min_std_ratio": Param("float", 1e-2, minimum=0.0, help="vanishing: last/first activation std below this"),
    "max_std": Param("float", 1e2, minimum=0.0, help="exploding: any layer's activation std above this"),
    "max_std_ratio": Param("float", 1e2, minimum=0.0, help="exploding: last/first activation std above this"),
    "max_saturation": Param(
        "float", 0.25, minimum=0.0, maximum=1.0, help="saturation: fraction of saturated values above this"
    ),
    "max_dead_units": Param(
        "float", 0.25, minimum=0.0, maximum=1.0, help="dead_units: fraction of units zero on every sample above this"
    ),
    "min_unit_spread": Param("float", 1e-3, minimum=0.0, help="symmetry: spread across units / std below this"),
    "max_nonfinite": Param("int", 0, minimum=0, help="nonfinite: count of nan/inf values above this"),
    "min_grad_ratio": Param(
        "float", 1e-2, minimum=0.0, help="gradient_vanishing: a layer's grad std / output grad std below this"
    ),
    "max_grad_ratio": Param(
        "float", 1e2, minimum=0.0, help="gradient_exploding: a layer's grad std / output grad std above this"
    ),
}
SECTIONS = ("name", "model", "init", "data", "run", "gate")


# ---- parsing ---------------------------------------------------------------------------------


def load(path: str | Path, overrides: Mapping[str, Any] | None = None) -> Spec:
    """Read and validate a spec file; ``overrides`` maps dotted keys to values (CLI flags)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(f"spec file not found: {p}") from None
    except IsADirectoryError:
        raise SpecError(f"spec path is a directory, not a YAML file: {p}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"cannot read spec file {p}: {exc}") from None
    return loads(text, source=str(p), overrides=overrides, default_name=p.stem)


def loads(
    text: str,
    source: str = "<spec>",
    overrides: Mapping[str, Any] | None = None,
    default_name: str = "probe",
) -> Spec:
    """Validate YAML text as a spec."""
    import yaml

    try:
        raw = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
        raise SpecError(f"{where}: YAML syntax error: {exc.problem or exc}") from None
    except yaml.YAMLError as exc:
        raise SpecError(f"{source}: YAML error: {exc}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise SpecError(f"{source}: the spec must be a mapping of sections, got {type_name(raw)}")
    return parse(raw, overrides=overrides, default_name=default_name)


def parse(raw: Mapping[str, Any], overrides: Mapping[str, Any] | None = None, default_name: str = "probe") -> Spec:
    """Validate an already-parsed mapping (e.g. from a notebook) as a spec."""
    data = _merge_overrides(raw, overrides or {})
    for key in data:
        if key not in SECTIONS:
            raise unknown("section", key, SECTIONS, str(key))
    name = data.get("name", default_name)
    if not isinstance(name, str) or not name:
        raise SpecError(f"expected a non-empty string, got {type_name(name)}", "name")

    model_raw = _section(data, "model")
    activation = _choice(model_raw.pop("activation", "relu"), activations.ACTIVATIONS, "activation", "model.activation")
    model = ModelSpec(activation=activation, **check_params(model_raw, _MODEL, "model", "model"))

    init_raw = _section(data, "init")
    for key in init_raw:
        if key not in ("weight", "bias"):
            raise unknown("key", key, ("weight", "bias"), f"init.{key}", "init")
    weight = _strategy(init_raw.get("weight", "he_normal"), "init.weight", bias=False)
    bias = _strategy(init_raw.get("bias", "zeros"), "init.bias", bias=True)

    data_spec = DataSpec(**check_params(_section(data, "data"), _DATA, "data", "data"))

    run_raw = check_params(_section(data, "run"), _RUN, "run", "run")
    device = run_raw["device"]
    if not _DEVICE.match(device):
        raise SpecError(f"unknown device '{device}' (valid: auto, cpu, cuda, cuda:N, mps)", "run.device")
    run = RunSpec(**run_raw)

    gate_raw = _section(data, "gate")
    disable = gate_raw.pop("disable", [])
    if isinstance(disable, str):
        disable = [disable]
    if not isinstance(disable, list):
        raise SpecError(f"expected a list of rule names, got {type_name(disable)}", "gate.disable")
    for i, rule in enumerate(disable):
        if rule not in RULE_NAMES:
            raise unknown("rule", rule, RULE_NAMES, f"gate.disable[{i}]")
    gate = GateSpec(disable=tuple(disable), **check_params(gate_raw, GATE_PARAMS, "gate", "gate"))

    return Spec(model=model, init=InitSpec(weight, bias), data=data_spec, run=run, gate=gate, name=name)


def _merge_overrides(raw: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    data: dict[str, Any] = {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in raw.items()}
    for dotted, value in overrides.items():
        section, _, key = dotted.partition(".")
        if not key:
            data[section] = value
            continue
        current = data.get(section)
        if current is None:
            current = {}
        if not isinstance(current, dict):
            raise SpecError(f"expected a mapping, got {type_name(current)}", section)
        current[key] = value
        data[section] = current
    return data


def _section(data: Mapping[str, Any], name: str) -> dict[str, Any]:
    value = data.get(name)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise SpecError(f"expected a mapping, got {type_name(value)}", name)
    for key in value:
        if not isinstance(key, str):
            raise SpecError(f"keys must be strings, got {type_name(key)} {key!r}", name)
    return dict(value)


def _choice(value: Any, registry: Mapping[str, Any], kind: str, path: str) -> Choice:
    """``relu`` or ``{name: leaky_relu, negative_slope: 0.2}`` -> Choice."""
    if isinstance(value, str):
        name, params = value, {}
    elif isinstance(value, Mapping):
        params = dict(value)
        name = params.pop("name", None)
        if not isinstance(name, str):
            raise SpecError(f"a mapping needs a 'name' string (valid: {', '.join(sorted(registry))})", path)
    else:
        raise SpecError(f"expected a name or a mapping with 'name', got {type_name(value)}", path)
    if name not in registry:
        raise unknown(kind, name, registry, path)
    return Choice(name, check_params(params, registry[name].params, f"{kind} '{name}'", path))


def _strategy(value: Any, path: str, bias: bool) -> Choice:
    raw_name = value.get("name") if isinstance(value, Mapping) else value
    if isinstance(raw_name, str) and inits.canonical(raw_name) != raw_name:
        value = (
            {**value, "name": inits.canonical(raw_name)} if isinstance(value, Mapping) else inits.canonical(raw_name)
        )
    names = {n: s for n, s in inits.STRATEGIES.items() if not (bias and s.needs_fan)}
    try:
        return _choice(value, names, "init strategy", path)
    except SpecError as exc:
        if bias and isinstance(raw_name, str) and inits.canonical(raw_name) in inits.STRATEGIES:
            raise SpecError(
                f"'{raw_name}' needs fan-in/fan-out and cannot initialize a 1-D bias "
                f"(valid: {', '.join(sorted(names))})",
                path,
            ) from None
        if not bias and isinstance(raw_name, str) and raw_name not in inits.STRATEGIES:
            raise unknown("init strategy", raw_name, inits.all_names(), path) from None
        raise exc


# ---- writing ---------------------------------------------------------------------------------


def to_dict(spec: Spec) -> dict[str, Any]:
    """The resolved spec as a plain mapping that ``parse`` accepts back unchanged."""

    def choice(c: Choice) -> dict[str, Any]:
        return {"name": c.name, **c.params}

    def plain(obj: Any) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(obj):
            v = getattr(obj, f.name)
            out[f.name] = choice(v) if isinstance(v, Choice) else (list(v) if isinstance(v, tuple) else v)
        return out

    return {
        "name": spec.name,
        "model": plain(spec.model),
        "init": {"weight": choice(spec.init.weight), "bias": choice(spec.init.bias)},
        "data": plain(spec.data),
        "run": plain(spec.run),
        "gate": plain(spec.gate),
    }


def summary(spec: Spec) -> str:
    """The spec in one line, e.g. for the top of a report."""
    m, d, r = spec.model, spec.data, spec.run
    head = f" -> {m.output_dim}" if m.output_dim else ""
    norm = f" +{m.norm}" if m.norm != "none" else ""
    return (
        f"{spec.name}: {m.kind} {m.input_dim} -> {m.width} x {m.depth}{head} "
        f"{m.activation.label(activations.ACTIVATIONS[m.activation.name].params)}{norm}; "
        f"init {spec.init.weight.label(inits.STRATEGIES[spec.init.weight.name].params)}, "
        f"bias {spec.init.bias.label(inits.STRATEGIES[spec.init.bias.name].params)}; "
        f"data {d.batches} x {d.batch_size} {d.distribution}; {r.device} {r.dtype} seed {r.seed}"
    )


def with_changes(spec: Spec, **sections: Any) -> Spec:
    """A copy of ``spec`` with whole sections replaced (used by ``compare``)."""
    return replace(spec, **sections)
