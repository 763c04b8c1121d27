"""Spec validation: defaults, round trips, and the messages users see for bad input."""

from __future__ import annotations

import pytest

from probe import spec as spec_mod
from probe.errors import SpecError


def test_empty_spec_is_the_seed_lab1_he_relu_network() -> None:
    spec = spec_mod.loads("{}")
    assert (spec.model.input_dim, spec.model.width, spec.model.depth) == (32, 128, 8)
    assert spec.model.activation.name == "relu"
    assert spec.init.weight.name == "he_normal"
    assert spec.init.bias.name == "zeros"
    assert spec.data.batch_size == 512
    assert spec.run.device == "auto"


@pytest.mark.parametrize("text", ["", "# only a comment\n", "null"])
def test_empty_documents_are_valid(text: str) -> None:
    assert spec_mod.loads(text) == spec_mod.loads("{}")


def test_to_dict_round_trips() -> None:
    spec = spec_mod.loads(
        "model: {activation: {name: leaky_relu, negative_slope: 0.2}, norm: layernorm, output_dim: 3}\n"
        "init: {weight: {name: trunc_normal, std: 0.05}, bias: {name: constant, value: 0.1}}\n"
        "gate: {min_std: 0.001, disable: [dead_units]}\n"
    )
    assert spec_mod.parse(spec_mod.to_dict(spec)) == spec


@pytest.mark.parametrize(
    ("alias", "canonical"),
    [("xavier", "xavier_normal"), ("he", "he_normal"), ("kaiming", "he_normal"), ("kaiming_normal", "he_normal")],
)
def test_seed_aliases_resolve(alias: str, canonical: str) -> None:
    assert spec_mod.loads(f"init: {{weight: {alias}}}").init.weight.name == canonical


def test_activation_mapping_with_parameters() -> None:
    act = spec_mod.loads("model: {activation: {name: leaky_relu, negative_slope: 0.2}}").model.activation
    assert act.name == "leaky_relu"
    assert act.params["negative_slope"] == 0.2


def test_numeric_strings_are_accepted_for_floats() -> None:
    # YAML 1.1 reads 1e-3 (no dot) as a string; users write it anyway.
    assert spec_mod.loads("gate: {min_std: 1e-3}").gate.min_std == pytest.approx(1e-3)


# the corpus of bad specs: each with the start of its message (tests/test_schema.py reuses it)
BAD_SPECS = [
    ("model: {activation: reluu}", r"model\.activation: unknown activation 'reluu'; did you mean 'relu'\?"),
    ("model: {widht: 3}", r"model\.widht: unknown key 'widht' of model; did you mean 'width'\?"),
    ("modle: {}", r"modle: unknown section 'modle'; did you mean 'model'\?"),
    ("init: {weight: xavir}", r"init\.weight: unknown init strategy 'xavir'; did you mean 'xavier'\?"),
    ("init: {weight: {name: normal, sdt: 1}}", r"init\.weight\.sdt: .*did you mean 'std'\?"),
    ("init: {bias: he}", r"init\.bias: 'he' needs fan-in/fan-out"),
    ("model: {depth: 0}", r"model\.depth: must be >= 1, got 0"),
    ("model: {width: -4}", r"model\.width: must be >= 1, got -4"),
    ("model: {depth: 2.5}", r"model\.depth: expected an integer, got a number 2\.5"),
    ("model: {bias: maybe}", r"model\.bias: expected true or false"),
    ("data: {batch_size: 1}", r"data\.batch_size: must be >= 2, got 1"),
    ("run: {device: gpu}", r"run\.device: unknown device 'gpu'"),
    ("run: {dtype: float8}", r"run\.dtype: unknown value 'float8'"),
    ("gate: {max_saturation: 1.5}", r"gate\.max_saturation: must be <= 1"),
    ("gate: {disable: [vanish]}", r"gate\.disable\[0\]: unknown rule 'vanish'; did you mean 'vanishing'\?"),
    ("model: 3", r"model: expected a mapping, got an integer"),
    ("- a\n- b\n", r"the spec must be a mapping"),
    ("init: {weight: {std: 1}}", r"init\.weight: a mapping needs a 'name'"),
]


@pytest.mark.parametrize(("text", "pattern"), BAD_SPECS)
def test_bad_input_messages(text: str, pattern: str) -> None:
    with pytest.raises(SpecError, match=pattern):
        spec_mod.loads(text)


def test_yaml_syntax_error_has_line_and_column() -> None:
    with pytest.raises(SpecError, match=r"bad\.yaml:3:1: YAML syntax error: found character '\\t'"):
        spec_mod.loads("model:\n  depth: 3\n\twidth: 4\n", source="bad.yaml")


def test_missing_file_is_a_spec_error(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(SpecError, match="spec file not found"):
        spec_mod.load(tmp_path / "nope.yaml")


def test_overrides_use_dotted_keys_and_are_validated() -> None:
    spec = spec_mod.parse({"model": {"depth": 3}}, {"model.width": 16, "gate.min_std": 0.5})
    assert (spec.model.depth, spec.model.width, spec.gate.min_std) == (3, 16, 0.5)
    with pytest.raises(SpecError, match=r"model\.depth: must be >= 1"):
        spec_mod.parse({}, {"model.depth": 0})


def test_summary_is_one_line_naming_the_essentials() -> None:
    line = spec_mod.summary(spec_mod.loads("model: {activation: tanh}\ninit: {weight: xavier}"))
    assert "\n" not in line
    for word in ("mlp", "tanh", "xavier_normal", "seed 0"):
        assert word in line


def test_every_mistake_of_a_spec_is_reported_in_one_run(cli, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Six independent mistakes, one in each part of the spec: one run names them all (exit 2), each
    on its own line with its key path."""
    from probe.errors import SpecErrorGroup

    raw = {
        "model": {"depth": -3, "activation": "reluu"},
        "init": {"weight": "kaiming_nrmal"},
        "data": {"batch_size": 0},
        "run": {"device": "gpu"},
        "gate": {"min_std": -1, "disable": ["vanish"]},
    }
    with pytest.raises(SpecErrorGroup) as info:
        spec_mod.parse(raw)
    paths = [e.path for e in info.value.errors]
    assert paths == [
        "model.activation",
        "model.depth",
        "init.weight",
        "data.batch_size",
        "run.device",
        "gate.disable[0]",
        "gate.min_std",
    ]
    import yaml

    path = tmp_path / "six.yaml"
    path.write_text(yaml.safe_dump(raw))
    result = cli("check", str(path))
    assert result.exit_code == 2
    assert "7 mistakes in the spec:" in result.output
    lines = result.output.splitlines()
    for key in paths:
        assert any(line.strip().startswith(f"{key}: ") for line in lines), (key, result.output)
