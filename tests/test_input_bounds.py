"""Bad input is refused with exit 2 and one bounded line: YAML bombs, duplicate keys, NaN, escapes."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from probe.errors import SpecError, shown
from probe.spec import loads, parse
from probe.spec.yaml_text import MAX_DEPTH, MAX_NODES

TINY = "model: {depth: 2, width: 8}\ndata: {batch_size: 8}\nrun: {device: cpu}\n"


def _bomb(levels: int, fan: int = 9) -> str:
    """A user model's kwargs whose last entry expands to fan^levels strings."""
    lines = ["model:", "  kwargs:", "    a0: &a0 [" + ", ".join(["x"] * fan) + "]"]
    for i in range(1, levels):
        lines.append(f"    a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * fan) + "]")
    return "\n".join(lines) + "\n"


def test_billion_laughs_is_refused_fast() -> None:
    text = _bomb(9)  # 9^9 = 387 million values from ~400 bytes
    assert len(text) < 600
    start = time.perf_counter()
    with pytest.raises(SpecError, match="expands to more than"):
        loads(text)
    assert time.perf_counter() - start < 2.0


def test_small_alias_use_is_still_fine() -> None:
    spec = loads("model: {width: &w 16, input_dim: *w, depth: 2}\n")
    assert spec.model.width == spec.model.input_dim == 16
    assert 9**5 < MAX_NODES < 9**6  # the bound sits between harmless and harmful fan-outs below
    assert len(loads(_bomb(5)).model.kwargs["a4"]) == 9  # 9^5 values: allowed
    with pytest.raises(SpecError, match="expands"):
        loads(_bomb(6))


def test_deep_nesting_is_refused() -> None:
    with pytest.raises(SpecError, match=f"deeper than {MAX_DEPTH}"):
        loads("model: " + "[" * 5000 + "]" * 5000)


def test_duplicate_keys_name_both_lines() -> None:
    with pytest.raises(SpecError, match=r"<spec>:4:3: duplicate key 'depth' \(first on line 2, again on line 4\)"):
        loads("model:\n  depth: 2\n  width: 4\n  depth: 3\n")


def test_validation_errors_carry_line_and_column() -> None:
    with pytest.raises(SpecError, match=r"^<spec>:3:3: model.depth: must be >= 1"):
        loads("name: x\nmodel:\n  depth: 0\n")


def test_override_errors_do_not_point_into_the_file() -> None:
    with pytest.raises(SpecError, match=r"^model.depth: must be >= 1"):
        loads("model:\n  depth: 3\n", overrides={"model.depth": 0})


@pytest.mark.parametrize(
    "key",
    [
        "gate.min_std",
        "gate.min_std_ratio",
        "gate.min_grad_ratio",
        "gate.max_std",
        "gate.max_saturation",
        "model.dropout",
        "model.branch_scale",
    ],
)
def test_nan_is_refused(key: str) -> None:
    section, name = key.split(".")
    raw: dict[str, Any] = {"model": {"kind": "residual"} if section == "model" else {}, section: {}}
    raw[section][name] = float("nan")
    with pytest.raises(SpecError, match=f"{key}: expected a finite number"):
        parse(raw)


@pytest.mark.parametrize("strategy", [{"name": "normal", "std": float("nan")}, {"name": "lsuv", "tolerance": "nan"}])
def test_nan_strategy_parameters_are_refused(strategy: dict[str, Any]) -> None:
    # a float nan is not finite; the string "nan" is not a number (YAML 1.2 writes NaN as .nan)
    with pytest.raises(SpecError, match=r"init.weight\.\w+: expected a (finite )?number"):
        parse({"init": {"weight": strategy}})


def test_inf_only_where_it_means_no_limit() -> None:
    assert parse({"gate": {"max_std": float("inf")}}).gate.max_std == float("inf")
    with pytest.raises(SpecError, match=r"gate\.min_std: expected a finite number, got inf"):
        parse({"gate": {"min_std": float("inf")}})


def test_nan_gate_cannot_switch_the_check_off(cli: Callable[..., Any]) -> None:
    # lab1_tiny_relu vanishes: without the NaN guard these three NaNs made it pass with exit 0
    args = ["--gate", "min_std=nan", "--gate", "min_std_ratio=nan", "--gate", "min_grad_ratio=nan"]
    result = cli("check", "configs/lab1_tiny_relu.yaml", *args)
    assert result.exit_code == 2 and "expected a number, got a string 'nan'" in result.output
    dotted = [a.replace("=nan", "=.nan") for a in args]  # YAML's own NaN: a number, and not finite
    result = cli("check", "configs/lab1_tiny_relu.yaml", *dotted)
    assert result.exit_code == 2 and "expected a finite number" in result.output


def test_json_writes_inf_as_null(cli: Callable[..., Any], tmp_path: Path) -> None:
    import json

    (tmp_path / "s.yaml").write_text(TINY + "gate: {max_std: .inf}\n")
    result = cli("run", str(tmp_path / "s.yaml"), "-f", "json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["spec"]["gate"]["max_std"] is None


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["train", "he", "--noise", "nan"], "--noise"),
        (["train", "he", "--lr", "nan"], "--lr"),
        (["fix", "configs/lab1_tiny_relu.yaml", "--tolerance", "nan"], "tolerance"),
        (["run", "configs/lab1_tiny_relu.yaml", "--max-memory", "nan"], "--max-memory"),
    ],
)
def test_nan_options_are_refused(cli: Callable[..., Any], args: list[str], option: str) -> None:
    result = cli(*args)
    assert result.exit_code == 2, result.output
    assert option in result.output


def test_echoed_values_are_escaped_and_capped(cli: Callable[..., Any], tmp_path: Path) -> None:
    (tmp_path / "s.yaml").write_text('model:\n  "\\e[2J' + "k" * 900 + '": 1\n')
    result = cli("check", str(tmp_path / "s.yaml"))
    assert result.exit_code == 2
    assert "\x1b" not in result.output and "\\x1b[2J" in result.output
    assert len(result.output) < 1500
    assert shown("a\x07b" + "c" * 500, 20) == "a\\x07bccccccccccc..."


# ---- issue 23: inputs that passed validation and then failed in torch or Python ----------------


@pytest.mark.parametrize("device", ["cpu\n", "cuda:\u0663", "cuda:99999999999999999999", " cpu", "CPU"])
def test_a_device_that_is_not_one_is_refused_by_the_spec(device: str) -> None:
    from probe.spec import parse

    with pytest.raises(SpecError, match=r"run\.device: unknown device"):
        parse({"run": {"device": device}})


def test_an_integer_too_long_for_python_is_a_spec_error(cli: Any, tmp_path: Path) -> None:
    digits = "9" * 5000  # past Python's 4300-digit limit on int(str)
    path = tmp_path / "big.yaml"
    path.write_text(f"model:\n  depth: {digits}\n")
    result = cli("check", str(path))
    assert result.exit_code == 2
    assert "big.yaml:2:10: YAML error: an integer of 5000 digits is too long for a spec" in result.output
    flag = cli("run", "configs/lab1_he_relu.yaml", "--set", f"model.depth={digits}")
    assert flag.exit_code == 2 and "model.depth: expected an integer" in flag.output


def test_base_60_is_not_read_as_a_number(tmp_path: Path) -> None:
    """YAML 1.1 reads 1:30 as 90; a spec keeps it as the string it looks like, and says so."""
    from probe.spec import load

    path = tmp_path / "b60.yaml"
    path.write_text("model:\n  depth: 1:30\n")
    with pytest.raises(SpecError, match=r"model\.depth: expected an integer, got a string '1:30'"):
        load(path)


def test_a_bad_parameter_of_an_init_alias_names_the_parameter() -> None:
    from probe.spec import parse

    with pytest.raises(SpecError, match=r"init\.weight\.a: expected a finite number, got nan") as info:
        parse({"init": {"weight": {"name": "kaiming", "a": float("nan")}}})
    assert "did you mean" not in str(info.value)


def test_threads_are_bounded_by_the_machine(cli: Any) -> None:
    import os

    result = cli("--threads", "65536", "run", "configs/lab1_he_relu.yaml")
    assert result.exit_code == 2 and f"at most {os.cpu_count()}" in result.output


def test_a_large_document_without_aliases_stops_while_it_is_read() -> None:
    """20,000 values and a syntax error at the very end: the count stops the reading first, and the
    message does not blame aliases (issue 23, item 9)."""
    from probe.spec.yaml_text import MAX_WRITTEN

    text = "model: {kwargs: {a: [" + ", ".join(["1"] * (2 * MAX_WRITTEN)) + "]}}\n" + "bad: [\n"
    with pytest.raises(SpecError, match=f"more than {MAX_WRITTEN:,} values; a spec needs a few hundred") as err:
        loads(text)
    assert "alias" not in str(err.value)


def test_a_file_over_the_byte_bound_is_not_read(cli: Callable[..., Any], tmp_path: Path) -> None:
    from probe.spec.yaml_text import MAX_BYTES

    spec = tmp_path / "big.yaml"
    spec.write_text(TINY + "#" * MAX_BYTES + "\n")
    result = cli("check", str(spec))
    assert result.exit_code == 2
    assert f"larger than {MAX_BYTES // 1024} KiB" in result.output
    with pytest.raises(SpecError, match="longer than"):
        loads(spec.read_text())


@pytest.mark.parametrize(
    ("text", "value"),
    [("depth: 017", 17), ("depth: 0x10", 16), ("depth: 1_0", "1_0"), ("depth: 1:30", "1:30"), ("depth: '12'", "12")],
)
def test_integers_read_as_yaml_1_2_reads_them(text: str, value: object) -> None:
    # probe and a YAML 1.2 editor checking the JSON Schema must agree on what is a number (issue 23, item 20)
    from probe.spec.yaml_text import parse_scalar

    assert parse_scalar(text.split(": ", 1)[1]) == value


def test_floats_read_as_yaml_1_2_reads_them_and_strings_are_not_numbers() -> None:
    from probe.spec.yaml_text import parse_scalar

    assert parse_scalar("1e-3") == 0.001 and parse_scalar("1E3") == 1000.0 and parse_scalar(".5") == 0.5
    assert parse_scalar("1_000.5") == "1_000.5"
    with pytest.raises(SpecError, match=r"gate\.min_std: expected a number, got a string '1e-3' \(write the number"):
        parse({"gate": {"min_std": "1e-3"}})
    with pytest.raises(SpecError, match=r"model\.depth: expected an integer, got a string '١٢'"):
        parse({"model": {"depth": "١٢"}})
