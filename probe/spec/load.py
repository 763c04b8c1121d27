"""YAML text -> a validated, typed ``Spec``. The only module that reads user configuration.

Every key has a default, so ``{}`` is a valid spec: the seed lab's 8-layer He + ReLU network.
Errors are ``SpecError`` values carrying the dotted key path, the valid choices and a
"did you mean" suggestion; YAML syntax errors carry line and column.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

from probe.errors import SpecError, SpecErrors, echo
from probe.spec import activations, inits
from probe.spec.gate_params import GATE_PARAMS
from probe.spec.schema import check_params, type_name, unknown
from probe.spec.types import (
    DATA_PARAMS,
    DEVICE_PATTERN,
    MODEL_KEYS,
    MODEL_PARAMS,
    RULE_NAMES,
    RULE_TARGETS,
    RUN_PARAMS,
    SECTIONS,
    Choice,
    DataSpec,
    GateSpec,
    InitRule,
    InitSpec,
    ModelSpec,
    Param,
    RuleTarget,
    RunSpec,
    Spec,
)
from probe.spec.yaml_text import MAX_BYTES, parse_yaml, read_bounded

# ---- parsing ---------------------------------------------------------------------------------


def load(path: str | Path, overrides: Mapping[str, Any] | None = None) -> Spec:
    """Read and validate a spec file; ``overrides`` maps dotted keys to values (CLI flags)."""
    p = Path(path)
    try:
        data = read_bounded(p)  # bounded in size, and in time for a pipe
        if len(data) > MAX_BYTES:
            raise SpecError(f"spec file {p} is larger than {MAX_BYTES // 2**10} KiB; a spec is a few hundred bytes")
        text = data.decode("utf-8")
    except FileNotFoundError:
        raise SpecError(f"spec file not found: {p}") from None
    except IsADirectoryError:
        raise SpecError(f"spec path is a directory, not a YAML file: {p}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"cannot read spec file {p}: {exc}") from None
    spec = loads(text, source=str(p), overrides=overrides, default_name=p.stem)
    if p.is_file():  # the spec's own folder holds code of its project (not /dev for a pipe)
        spec = replace(spec, trust=replace(spec.trust, folders=(str(p.resolve().parent),)))
    return spec


def loads(
    text: str,
    source: str = "<spec>",
    overrides: Mapping[str, Any] | None = None,
    default_name: str = "probe",
) -> Spec:
    """Validate YAML text as a spec; errors in the text name its line and column."""
    parsed = parse_yaml(text, source)
    raw = parsed.data
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise SpecError(f"{source}: the spec must be a mapping of sections, got {type_name(raw)}")
    try:
        return parse(raw, overrides=overrides, default_name=default_name)
    except SpecError as exc:
        overridden = any(exc.path == k or exc.path.startswith((f"{k}.", f"{k}[")) for k in overrides or {})
        position = parsed.where(exc.path) if exc.path and not overridden else None
        if position is None:
            raise
        located = SpecError(f"{source}:{position[0]}:{position[1]}: {exc}")
        located.path = exc.path
        raise located from None


def parse(raw: Mapping[str, Any], overrides: Mapping[str, Any] | None = None, default_name: str = "probe") -> Spec:
    """Validate an already-parsed mapping (e.g. from a notebook) as a spec."""
    data = _merge_overrides(raw, overrides or {})
    errors = SpecErrors()  # independent mistakes are reported together: one run, every mistake
    for key in data:
        if key not in SECTIONS:
            with errors.catch():
                raise unknown("section", key, SECTIONS, str(key))
    name = data.get("name", default_name)
    if not isinstance(name, str) or not name:
        with errors.catch():
            raise SpecError(f"expected a non-empty string, got {type_name(name)}", "name")
    with errors.catch():
        model = _model(_section(data, "model"))
    with errors.catch():
        init = _init(_section(data, "init"))
    with errors.catch():
        data_spec = DataSpec(**check_params(_section(data, "data"), DATA_PARAMS, "data", "data"))
    with errors.catch():
        run = _run(_section(data, "run"))
    with errors.catch():
        gate = _gate(_section(data, "gate"))
        if "nonfinite" in gate.disable and "gate.disable" in (overrides or {}):
            gate = replace(gate, nan_accepted=True)  # the caller's choice, not the spec's text
    errors.check()
    return Spec(model=model, init=init, data=data_spec, run=run, gate=gate, name=name)


def _init(init_raw: dict[str, Any]) -> InitSpec:
    errors = SpecErrors()
    for key in init_raw:
        if key not in ("weight", "bias", "rules"):
            with errors.catch():
                raise unknown("key", key, ("weight", "bias", "rules"), f"init.{key}", "init")
    with errors.catch():
        weight = _strategy(init_raw.get("weight", "he_normal"), "init.weight", bias=False)
    with errors.catch():
        bias = _strategy(init_raw.get("bias", "zeros"), "init.bias", bias=True)
    with errors.catch():
        rules = _rules(init_raw.get("rules"))
    errors.check()
    return InitSpec(weight, bias, rules, explicit="weight" in init_raw or "bias" in init_raw)


def _run(section: dict[str, Any]) -> RunSpec:
    run_raw = check_params(section, RUN_PARAMS, "run", "run")
    device = run_raw["device"]
    if not isinstance(device, str) or not DEVICE_PATTERN.fullmatch(device):
        raise SpecError(f"unknown device '{device}' (valid: auto, cpu, cuda, cuda:N, mps)", "run.device")
    return RunSpec(**run_raw)


def _gate(gate_raw: dict[str, Any]) -> GateSpec:
    errors = SpecErrors()
    disable = gate_raw.pop("disable", [])
    if isinstance(disable, str):
        disable = [disable]
    with errors.catch():
        if not isinstance(disable, list):
            raise SpecError(f"expected a list of rule names, got {type_name(disable)}", "gate.disable")
        for i, rule in enumerate(disable):
            if rule not in RULE_NAMES:
                with errors.catch():
                    raise unknown("rule", rule, RULE_NAMES, f"gate.disable[{i}]")
    with errors.catch():
        params = check_params(gate_raw, GATE_PARAMS, "gate", "gate")
    errors.check()
    return GateSpec(disable=tuple(disable), **params)


def _model(raw: dict[str, Any]) -> ModelSpec:
    errors = SpecErrors()
    with errors.catch():
        activation = _choice(raw.pop("activation", "relu"), activations.ACTIVATIONS, "activation", "model.activation")
    factory = raw.pop("import", None)
    with errors.catch():
        if factory is not None and (not isinstance(factory, str) or ":" not in factory):
            raise SpecError(f"expected 'package.module:factory', got {echo(factory)}", "model.import")
    hf = raw.pop("hf", None)
    with errors.catch():
        if hf is not None and (not isinstance(hf, str) or not hf.strip()):
            raise SpecError(
                f"expected a transformers model type (llama, gpt2, ...) or a config.json path, got {echo(hf)}",
                "model.hf",
            )
        if hf is not None and factory is not None:
            raise SpecError("give model.import or model.hf, not both", "model.hf")
    branch_scale: float | str = raw.pop("branch_scale", 1.0)
    with errors.catch():
        if branch_scale != "depth":
            branch_scale = Param("float", minimum=0.0).check(branch_scale, "model.branch_scale")
    for key in raw:
        if key not in MODEL_PARAMS:
            with errors.catch():
                raise unknown("key", key, MODEL_KEYS, f"model.{key}", "model")
    with errors.catch():
        values = check_params({k: v for k, v in raw.items() if k in MODEL_PARAMS}, MODEL_PARAMS, "model", "model")
    errors.check()
    if values["input_shape"] is not None:
        values["input_shape"] = tuple(values["input_shape"])
    model = ModelSpec(activation=activation, branch_scale=branch_scale, factory=factory, hf=hf, **values)
    if model.zero_init == "last_norm" and (model.norm == "none" or model.norm_position != "post"):
        raise SpecError(
            "last_norm zeroes the last norm of each branch: it needs model.norm batchnorm or layernorm "
            "and model.norm_position post",
            "model.zero_init",
        )
    if model.parametrization == "mup" and (model.own_model or model.kind not in ("mlp", "transformer")):
        raise SpecError("muP is built for model.kind mlp and transformer only", "model.parametrization")
    if model.parametrization == "mup" and model.kind == "transformer" and model.ff_width is not None:
        raise SpecError(
            "muP scales the feed-forward width with the width: leave model.ff_width null (4 * width)",
            "model.parametrization",
        )
    if model.kind == "transformer" and model.width % model.heads:
        raise SpecError(f"width {model.width} is not divisible by heads {model.heads}", "model.heads")
    return model


def _rules(raw: Any) -> tuple[InitRule, ...]:
    """``init.rules``: a list of ``{match: {type, name}, weight: ..., bias: ..., ...}``."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise SpecError(f"expected a list of rules, got {type_name(raw)}", "init.rules")
    rules = []
    keys = ("match", *RULE_TARGETS, "forget_bias")
    for i, item in enumerate(raw):
        path = f"init.rules[{i}]"
        if not isinstance(item, Mapping):
            raise SpecError(f"expected a mapping with 'match', got {type_name(item)}", path)
        for key in item:
            if key not in keys:
                raise unknown("key", key, keys, f"{path}.{key}", "a rule")
        match = item.get("match")
        if not isinstance(match, Mapping) or not match:
            raise SpecError("needs 'match: {type: Conv2d}' and/or 'match: {name: \"*.out_proj\"}'", f"{path}.match")
        for key, value in match.items():
            if key not in ("type", "name", "param"):
                raise unknown("key", key, ("type", "name", "param"), f"{path}.match.{key}", "match")
            if not isinstance(value, str) or not value:
                raise SpecError(f"expected a non-empty string, got {type_name(value)}", f"{path}.match.{key}")
        targets = []
        for target in RULE_TARGETS:
            if target not in item:
                continue
            value = item[target]
            depth_scale: float | bool = False
            if isinstance(value, Mapping) and "depth_scale" in value:
                value = dict(value)
                depth_scale = value.pop("depth_scale")
                if not isinstance(depth_scale, bool):
                    depth_scale = Param("float", minimum=1.0).check(depth_scale, f"{path}.{target}.depth_scale")
            strategy = _strategy(value, f"{path}.{target}", bias=target.startswith("bias"))
            targets.append(RuleTarget(target, strategy, depth_scale))
        forget_bias = item.get("forget_bias")
        if forget_bias is not None:
            forget_bias = Param("float").check(forget_bias, f"{path}.forget_bias")
        if not targets and forget_bias is None:
            raise SpecError(f"a rule needs at least one of {', '.join(RULE_TARGETS)} or forget_bias", path)
        rules.append(
            InitRule(path, match.get("type"), match.get("name"), tuple(targets), forget_bias, match.get("param"))
        )
    return tuple(rules)


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
            raise SpecError(f"keys must be strings, got {type_name(key)} {echo(key)}", name)
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
        choice = _choice(value, names, "init strategy", path)
    except SpecError as exc:
        if bias and isinstance(raw_name, str) and inits.canonical(raw_name) in inits.STRATEGIES:
            raise SpecError(
                f"'{raw_name}' needs fan-in/fan-out and cannot initialize a 1-D bias "
                f"(valid: {', '.join(sorted(names))})",
                path,
            ) from None
        if not bias and isinstance(raw_name, str) and inits.canonical(raw_name) not in inits.STRATEGIES:
            raise unknown("init strategy", raw_name, inits.all_names(), path) from None
        raise exc
    if choice.name == "trunc_normal":  # the cuts, given or by default mean -/+ 2 std, must leave a range
        mean, std = float(choice.params["mean"]), float(choice.params["std"])
        a = mean - 2 * std if choice.params["a"] is None else float(choice.params["a"])
        b = mean + 2 * std if choice.params["b"] is None else float(choice.params["b"])
        if not a < b:
            raise SpecError(f"trunc_normal needs a < b, got a = {a:g} and b = {b:g}", path)
    return choice


# ---- writing ---------------------------------------------------------------------------------


def to_dict(spec: Spec) -> dict[str, Any]:
    """The resolved spec as a plain mapping that ``parse`` accepts back unchanged."""

    def choice(c: Choice) -> dict[str, Any]:
        return {"name": c.name, **c.params}

    def plain(obj: Any) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(obj):
            if not f.compare:
                continue  # what the caller decided (GateSpec.nan_accepted), not a key of the spec
            v = getattr(obj, f.name)
            out[f.name] = choice(v) if isinstance(v, Choice) else (list(v) if isinstance(v, tuple) else v)
        return out

    model = plain(spec.model)
    # keys added for other architectures appear only when set, so an MLP spec reads as before
    for f in fields(ModelSpec):
        if f.name in _MLP_KEYS:
            continue
        value = model.pop(f.name)
        default = f.default_factory() if callable(f.default_factory) else f.default  # type: ignore[misc]
        if value != default and not (isinstance(value, list) and tuple(value) == default):
            model["import" if f.name == "factory" else f.name] = value
    init: dict[str, Any] = {"weight": choice(spec.init.weight), "bias": choice(spec.init.bias)}
    if spec.model.own_model and not spec.init.explicit:
        init = {}  # a user model keeps its own init: writing the defaults would override it
    if spec.init.rules:
        init["rules"] = [_rule_dict(r) for r in spec.init.rules]
    return {
        "name": spec.name,
        "model": model,
        "init": init,
        "data": plain(spec.data),
        "run": plain(spec.run),
        "gate": plain(spec.gate),
    }


_MLP_KEYS = ("kind", "input_dim", "width", "depth", "output_dim", "activation", "bias", "norm")


def _rule_dict(rule: InitRule) -> dict[str, Any]:
    match = {
        k: v
        for k, v in (("type", rule.match_type), ("name", rule.match_name), ("param", rule.match_param))
        if v is not None
    }
    out: dict[str, Any] = {"match": match}
    for t in rule.targets:
        entry: dict[str, Any] = {"name": t.strategy.name, **t.strategy.params}
        if t.depth_scale is not False:
            entry["depth_scale"] = t.depth_scale
        out[t.target] = entry
    if rule.forget_bias is not None:
        out["forget_bias"] = rule.forget_bias
    return out


def with_changes(spec: Spec, **sections: Any) -> Spec:
    """A copy of ``spec`` with whole sections replaced (used by ``compare``)."""
    return replace(spec, **sections)
