"""The spec's JSON Schema (``probe schema``), generated from the tables the validator checks with.

Every key comes from the same ``Param`` tables (``types.py``), activation registry and init
strategy registry that ``load.py`` validates against, so the schema cannot drift from the
validator. Editors use it through a ``# yaml-language-server: $schema=...`` comment to complete
keys and underline mistakes. What it cannot say: the two checks that relate keys to each other
(``zero_init: last_norm`` needs a post norm; ``width`` divisible by ``heads``), made by the
validator alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from probe.spec import activations, inits
from probe.spec.gate_params import GATE_PARAMS
from probe.spec.schema import INT_LIMIT, Param
from probe.spec.types import (
    DATA_PARAMS,
    DEVICE_PATTERN,
    MODEL_PARAMS,
    RULE_NAMES,
    RULE_TARGETS,
    RUN_PARAMS,
)

SCHEMA_ID = "https://probe.invalid/spec.schema.json"  # a name, not a place: nothing is fetched
DRAFT = "https://json-schema.org/draft/2020-12/schema"

# YAML 1.1 (PyYAML) reads 1e-3 without a dot as a string; the validator converts numeric strings
# "3,32,32": comma-separated positive integers (empty parts are skipped, as the validator does)
_SHAPE_TEXT = r"^[\s,]*\+?0*[1-9]\d*\s*(,[\s,]*\+?0*[1-9]\d*\s*)*,?\s*$"


def param_schema(param: Param) -> dict[str, Any]:
    """One ``Param`` as a JSON Schema, accepting what ``Param.check`` accepts."""
    kind = param.kind
    bounds: dict[str, Any] = {}
    if param.minimum is not None:
        bounds["exclusiveMinimum" if param.exclusive_minimum else "minimum"] = param.minimum
    if param.maximum is not None:
        bounds["maximum"] = param.maximum
    options: list[dict[str, Any]]
    if kind in ("float", "float_or_auto"):
        options = [{"type": "number", **bounds}]
        if kind == "float_or_auto":
            options.insert(0, {"const": "auto"})
    elif kind == "int":
        if param.maximum is None:  # Param.check's bound for every integer without its own
            bounds["maximum"] = INT_LIMIT
        options = [{"type": "integer", **bounds}]
    elif kind == "bool":
        options = [{"type": "boolean"}]
    elif kind == "str":
        options = [{"enum": list(param.choices)} if param.choices else {"type": "string"}]
    elif kind == "mapping":
        options = [{"type": "object"}]
    elif kind == "shape":
        options = [
            {"type": "array", "items": {"type": "integer", "minimum": 1, "maximum": INT_LIMIT}, "minItems": 1},
            {"type": "integer", "minimum": 1, "maximum": INT_LIMIT},
            {"type": "string", "pattern": _SHAPE_TEXT},
        ]
    else:  # a new kind must be taught here before it can be used
        raise ValueError(f"no JSON Schema for parameter kind '{kind}'")
    if param.nullable:
        options.append({"type": "null"})
    out: dict[str, Any] = options[0] if len(options) == 1 else {"anyOf": options}
    if param.help:
        out = {"description": param.help, **out}
    if param.default is not None or param.nullable:
        out = {**out, "default": param.default}
    return out


def _object(params: Mapping[str, Param], extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    props = {k: param_schema(p) for k, p in params.items()}
    props.update(extra or {})
    return {"type": "object", "properties": props, "additionalProperties": False}


def _section(schema: dict[str, Any], description: str) -> dict[str, Any]:
    """A section may be left empty (``model:`` with nothing under it reads as null)."""
    return {"description": description, "anyOf": [schema, {"type": "null"}]}


def choice_schema(registry: Mapping[str, Any], names: Mapping[str, str], what: str) -> dict[str, Any]:
    """A registry entry: its name (``names``: every accepted spelling -> registry name), or a
    mapping with ``name`` and that entry's parameters."""
    by_name: dict[str, list[str]] = {}
    for spelling, name in names.items():
        by_name.setdefault(name, []).append(spelling)
    mappings = []
    for name, spellings in sorted(by_name.items()):
        entry = registry[name]
        obj = _object(entry.params, {"name": {"enum": sorted(spellings)}})
        mappings.append({**obj, "required": ["name"]})
    return {
        "description": f"{what}: a name, or a mapping with 'name' and its parameters",
        "anyOf": [{"enum": sorted(names)}, *mappings],
    }


def _strategy_names(bias: bool) -> dict[str, str]:
    names = {n: n for n in inits.STRATEGIES}
    names.update(inits.ALIASES)
    return {k: v for k, v in names.items() if v in inits.STRATEGIES and not (bias and inits.STRATEGIES[v].needs_fan)}


def strategy_schema(bias: bool, depth_scale: bool = False) -> dict[str, Any]:
    out = choice_schema(inits.STRATEGIES, _strategy_names(bias), "init strategy")
    if depth_scale:  # init.rules targets may add depth_scale: true or a number >= 1
        scale = {"anyOf": [{"type": "boolean"}, param_schema(Param("float", minimum=1.0))]}
        for option in out["anyOf"][1:]:
            option["properties"]["depth_scale"] = {
                "description": "true: divide by sqrt(2 L); a number N: divide by sqrt(N)",
                **scale,
            }
    return out


def _rules_schema() -> dict[str, Any]:
    match = {
        "type": "object",
        "properties": {k: {"type": "string", "minLength": 1} for k in ("type", "name", "param")},
        "additionalProperties": False,
        "minProperties": 1,
        "description": "modules matched by class name (type) and/or qualified-name pattern (name); "
        "param: a pattern on the parameter's own name, filling exactly the parameters it matches",
    }
    props: dict[str, Any] = {"match": match}
    for target in RULE_TARGETS:
        props[target] = {"$ref": "#/$defs/bias_rule" if target.startswith("bias") else "#/$defs/weight_rule"}
    props["forget_bias"] = param_schema(Param("float", help="LSTM: the forget-gate quarter of bias_ih"))
    rule = {
        "type": "object",
        "properties": props,
        "additionalProperties": False,
        "required": ["match"],
        "anyOf": [{"required": [t]} for t in (*RULE_TARGETS, "forget_bias")],
    }
    return {"anyOf": [{"type": "array", "items": rule}, {"type": "null"}]}


def spec_schema() -> dict[str, Any]:
    """The whole spec as a JSON Schema (draft 2020-12)."""
    act_names = {n: n for n in activations.ACTIVATIONS}
    model = _object(
        MODEL_PARAMS,
        {
            "activation": {"$ref": "#/$defs/activation"},
            "branch_scale": {
                "description": "residual: a number, or 'depth' = 1/sqrt(2 * depth)",
                "anyOf": [{"const": "depth"}, param_schema(Param("float", minimum=0.0))],
            },
            "import": {
                "description": "a user model: 'package.module:factory'",
                "anyOf": [{"type": "string", "pattern": ":"}, {"type": "null"}],
            },
            "hf": {
                "description": "a transformers model: a model type (llama, gpt2, ...) or a local config.json",
                "anyOf": [{"type": "string", "minLength": 1}, {"type": "null"}],
            },
        },
    )
    # model.import and model.hf name two different builders: one or the other (the validator's rule)
    model["not"] = {
        "required": ["import", "hf"],
        "properties": {"import": {"type": "string"}, "hf": {"type": "string"}},
    }
    init = {
        "type": "object",
        "properties": {
            "weight": {"$ref": "#/$defs/weight"},
            "bias": {"$ref": "#/$defs/bias"},
            "rules": _rules_schema(),
        },
        "additionalProperties": False,
    }
    run = _object(RUN_PARAMS)
    run["properties"]["device"] = {**run["properties"]["device"], "pattern": DEVICE_PATTERN.pattern}
    rule_name = {"enum": list(RULE_NAMES)}
    gate = _object(
        GATE_PARAMS,
        {"disable": {"description": "rules to skip", "anyOf": [rule_name, {"type": "array", "items": rule_name}]}},
    )
    return {
        "$schema": DRAFT,
        "$id": SCHEMA_ID,
        "title": "probe spec",
        "description": "A probe spec (probe run SPEC.yaml). Every key has a default: {} is valid.",
        "type": "object",
        "properties": {
            "name": {"type": "string", "minLength": 1, "description": "the run's label"},
            "model": _section(model, "the network"),
            "init": _section(init, "how its parameters are filled"),
            "data": _section(_object(DATA_PARAMS), "the random inputs"),
            "run": _section(run, "where and how the probe runs"),
            "gate": _section(gate, "thresholds of the health rules"),
        },
        "additionalProperties": False,
        # each registry once, referenced wherever it is used
        "$defs": {
            "activation": choice_schema(activations.ACTIVATIONS, act_names, "activation"),
            "weight": strategy_schema(bias=False),
            "bias": strategy_schema(bias=True),
            "weight_rule": strategy_schema(bias=False, depth_scale=True),
            "bias_rule": strategy_schema(bias=True, depth_scale=True),
        },
    }
