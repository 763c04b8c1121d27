"""probe schema: the JSON Schema generated from the validator's tables agrees with the validator on
every config, the corpus of bad specs and a set of good and bad specs of every key family."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

from probe import spec as spec_mod
from probe.errors import SpecError
from probe.spec import GATE_PARAMS, inits
from probe.spec.jsonschema import param_schema, spec_schema
from probe.spec.schema import Param
from probe.spec.yaml_text import parse_yaml
from tests.conftest import CONFIGS, REPO
from tests.test_spec import BAD_SPECS

jsonschema = pytest.importorskip("jsonschema")

SCHEMA_FILE = REPO / "schema" / "spec.schema.json"
VALIDATOR = jsonschema.Draft202012Validator(spec_schema())

GOOD = [
    "{}",
    "name: x\nmodel: {activation: {name: leaky_relu, negative_slope: 0.2}, depth: 3}",
    "model: {kind: conv, padding: null, pool: max}\ninit: {weight: {name: orthogonal, gain: auto}}",
    "model: {kind: residual, branch_scale: depth}\ninit: {weight: glorot_uniform, bias: {name: constant, value: 0.1}}",
    "model: {import: 'pkg.mod:make', kwargs: {a: 1}, input_shape: '3,32,32'}",
    "model: {import: 'pkg.mod:make', input_shape: [3, 8, 8]}",
    "model: {input_shape: 16}",
    "model:\ninit:\ndata:\nrun:\ngate:\n",
    "gate: {min_std: 1e-3, disable: vanishing}",  # a number in YAML 1.2 (a string to YAML 1.1)
    "model: {depth: 017}",  # 17, decimal (YAML 1.1 read octal 15)
    "gate: {disable: [saturation, dead_units]}",
    "data: {batch_size: 4.0}",  # an integral float is an integer to both
    "run: {device: 'cuda:1', dtype: bfloat16}",
    "init: {rules: [{match: {type: Conv2d}, weight: {name: he_normal, depth_scale: true}}]}",
    "init: {rules: [{match: {name: '*.out_proj'}, weight: {name: zeros}, bias: zeros}]}",
    "init: {rules: [{match: {type: LSTM}, forget_bias: 1.0}]}",
    "init: {rules: [{match: {type: Linear}, weight: {name: normal, std: 0.02, depth_scale: 12}}]}",
    "init: {weight: {name: lsuv, start: orthogonal, tolerance: 0.05}}",
]

MORE_BAD = [
    "name: ''",
    "name: 3",
    "model: {import: no_colon}",
    "model: {branch_scale: deep}",
    "model: {branch_scale: -1}",
    "model: {input_shape: '3,0'}",
    "model: {input_shape: []}",
    "model: {kwargs: [1, 2]}",
    "model: {activation: {name: relu, negative_slope: 0.1}}",
    "init: {bias: {name: xavier_normal}}",
    "init: {weight: {name: normal, std: -1}}",
    "init: {rules: {match: {type: Linear}}}",
    "init: {rules: [{weight: he}]}",
    "init: {rules: [{match: {type: Linear}}]}",
    "init: {rules: [{match: {}, weight: he}]}",
    "init: {rules: [{match: {kind: Linear}, weight: he}]}",
    "init: {rules: [{match: {type: Linear}, weight: {name: he, depth_scale: 0.5}}]}",
    "init: {rules: [{match: {type: Linear}, weights: he}]}",
    "init: {rules: [{match: {type: Linear}, weight: he, depth_scale: true}]}",
    "init: {seed: 1}",
    "data: {distribution: cauchy}",
    "run: {backward: 1}",
    "run: {seed: -1}",
    "gate: {disable: null}",
    "gate: {max_nonfinite: 0.5}",
    "gate: {min_grad_ratio: '1e-3x'}",
    "gate: {min_std: '1e-3'}",  # quoted: a string, not a number, to both
    "init: {weight: {name: xavier_normal, gain: -1}}",
    "init: {weight: {name: constant, value: 1e308}}",
    "model: {depth: 1_0}",  # YAML 1.1 read 10; YAML 1.2 (and probe) a string
    "model: {depth: '١٢'}",
    "model: {hf: gpt2, import: 'pkg.mod:make'}",
]

# checks that relate two keys: the validator makes them, a JSON Schema of keys cannot
VALIDATOR_ONLY = [
    "model: {kind: residual, zero_init: last_norm}",
    "model: {kind: transformer, width: 30, heads: 4}",
    "init: {weight: {name: trunc_normal, a: 1, b: -1}}",
]


def _raw(text: str) -> Any:
    # as a YAML 1.2 editor reads it (probe reads numbers the same way: 1e-3 is a number, 1_0 a string)
    raw = parse_yaml(text, "test").data
    return {} if raw is None else raw  # an empty document is the empty spec, as loads() reads it


def _validator_accepts(text: str) -> bool:
    try:
        spec_mod.loads(text)
    except SpecError:
        return False
    return True


def _schema_accepts(text: str) -> bool:
    return VALIDATOR.is_valid(_raw(text))


def test_the_schema_is_a_valid_draft_2020_12_schema() -> None:
    jsonschema.Draft202012Validator.check_schema(spec_schema())


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_every_config_is_valid_to_both_and_points_editors_at_the_schema(path: Any) -> None:
    text = path.read_text()
    first = text.splitlines()[0]
    assert first == "# yaml-language-server: $schema=../schema/spec.schema.json"
    assert (path.parent / "../schema/spec.schema.json").resolve() == SCHEMA_FILE
    assert _validator_accepts(text)
    errors = [e.message for e in VALIDATOR.iter_errors(_raw(text))]
    assert not errors


@pytest.mark.parametrize("text", GOOD)
def test_good_specs_pass_both(text: str) -> None:
    assert _validator_accepts(text), text
    assert _schema_accepts(text), [e.message for e in VALIDATOR.iter_errors(_raw(text))]


@pytest.mark.parametrize("text", [t for t, _ in BAD_SPECS if isinstance(yaml.safe_load(t), dict)] + MORE_BAD)
def test_bad_specs_fail_both(text: str) -> None:
    assert not _validator_accepts(text), text
    assert not _schema_accepts(text), text


def test_a_list_document_fails_both() -> None:
    assert not _validator_accepts("- a\n- b\n")
    assert not VALIDATOR.is_valid(["a", "b"])


@pytest.mark.parametrize("text", VALIDATOR_ONLY)
def test_the_cross_key_checks_are_the_validators_alone(text: str) -> None:
    assert not _validator_accepts(text)
    assert _schema_accepts(text)  # documented in the schema module: if this starts failing, say so there


@pytest.mark.parametrize("name", sorted(GATE_PARAMS))
def test_each_gate_threshold_takes_its_bounds_from_the_table(name: str) -> None:
    param = GATE_PARAMS[name]
    schema = spec_schema()["properties"]["gate"]["anyOf"][0]["properties"][name]
    assert schema["description"] == param.help and schema["default"] == param.default
    below = (param.minimum or 0) - 1
    assert _validator_accepts(f"gate: {{{name}: {below}}}") is _schema_accepts(f"gate: {{{name}: {below}}}") is False


@pytest.mark.parametrize("name", inits.all_names())
def test_every_strategy_name_is_in_the_schema(name: str) -> None:
    assert _schema_accepts(f"init: {{weight: {name}}}") and _validator_accepts(f"init: {{weight: {name}}}")
    bias_ok = _validator_accepts(f"init: {{bias: {name}}}")
    assert _schema_accepts(f"init: {{bias: {name}}}") is bias_ok


def test_an_unknown_param_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="no JSON Schema for parameter kind 'complex'"):
        param_schema(Param("complex"))


def test_the_committed_schema_file_is_what_probe_schema_prints(cli: Any) -> None:
    result = cli("schema")
    assert result.exit_code == 0
    assert json.loads(result.stdout) == spec_schema()
    assert SCHEMA_FILE.read_text() == result.stdout, "regenerate it: probe schema -o schema/spec.schema.json"


def test_probe_schema_writes_a_file(cli: Any, tmp_path: Any) -> None:
    out = tmp_path / "s.json"
    result = cli("schema", "-o", str(out))
    assert result.exit_code == 0 and json.loads(out.read_text())["title"] == "probe spec"
    bad = cli("schema", "-o", str(tmp_path / "missing" / "s.json"))
    assert bad.exit_code == 2 and "does not exist" in bad.stderr
