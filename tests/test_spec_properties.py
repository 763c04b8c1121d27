"""Property-based tests over the spec (hypothesis): every malformed spec exits 2 with one `probe:`
line, quickly; a valid spec never exits 3."""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from probe.spec.gate_params import GATE_PARAMS
from probe.spec.schema import Param
from probe.spec.types import DATA_PARAMS, MODEL_PARAMS, RUN_PARAMS

SECTIONS: dict[str, dict[str, Param]] = {
    "model": MODEL_PARAMS,
    "data": DATA_PARAMS,
    "run": RUN_PARAMS,
    "gate": GATE_PARAMS,
}
BASE: dict[str, Any] = {
    "model": {"depth": 2, "width": 8},
    "data": {"batch_size": 4},
    "run": {"device": "cpu"},
}
NASTY_TEXT = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=40)


def _bad_values(param: Param) -> list[Any]:
    """Values ``param`` must refuse, by construction from its declared kind and bounds."""
    out: list[Any] = [[1, 2], {"a": 1}] if param.kind not in ("mapping", "shape") else [True, 2.5]
    if not param.nullable:
        out.append(None)
    if param.kind in ("int", "float", "float_or_auto"):
        out += ["abc", True, math.nan]
        if param.minimum is not None:
            out.append(param.minimum - 1)
        if param.maximum is not None:
            out.append(param.maximum + 1)
    if param.kind == "int":
        out += [2**63, 1.5]
    if param.kind in ("float", "float_or_auto") and not param.allow_inf:
        out += [math.inf]
    if param.kind == "str" and param.choices:
        out += ["nosuch\x1b[2J", 3]
    if param.kind == "bool":
        out += [3, "maybe"]
    return out


@st.composite
def malformed_specs(draw: st.DrawFn) -> dict[str, Any]:
    spec: dict[str, dict[str, Any]] = {k: dict(BASE.get(k, {})) for k in SECTIONS}
    section = draw(st.sampled_from(sorted(SECTIONS)))
    if draw(st.booleans()):
        key = draw(st.sampled_from(sorted(SECTIONS[section])))
        if key == "device":  # a str without choices: checked by its pattern
            spec[section][key] = draw(st.sampled_from(["gpu", "cuda:x", "\x07"]))
        else:
            spec[section][key] = draw(st.sampled_from(_bad_values(SECTIONS[section][key])))
    else:  # a key no section has
        key = draw(
            NASTY_TEXT.filter(
                lambda k: k not in SECTIONS[section] and k not in ("activation", "import", "branch_scale", "disable")
            )
        )
        spec[section][key] = draw(st.integers())
    return spec


def _check(cli: Callable[..., Any], text: str) -> tuple[Any, float]:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "spec.yaml"
        path.write_text(text, encoding="utf-8")
        start = time.perf_counter()
        result = cli("check", str(path))
        return result, time.perf_counter() - start


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(spec=malformed_specs())
def test_malformed_specs_exit_2_with_one_line(cli: Callable[..., Any], spec: dict[str, Any]) -> None:
    result, elapsed = _check(cli, yaml.safe_dump(spec, allow_unicode=True))
    assert result.exit_code == 2, (spec, result.output)
    lines = result.output.strip().splitlines()
    assert len(lines) >= 1 and lines[0].startswith("probe: error: ")
    assert "\x1b" not in result.output and "\x07" not in result.output  # echoed values are escaped
    # one message, wrapped by the console at 160 columns at most a few times
    assert len(result.output) < 2000
    assert elapsed < 5.0


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    text=st.one_of(
        NASTY_TEXT,
        st.builds(
            lambda n, fan: (
                "a: &a ["
                + ",".join(["x"] * fan)
                + "]\n"
                + "".join(
                    f"b{i}: &b{i} [" + ",".join([f"*{'a' if i == 0 else f'b{i - 1}'}"] * fan) + "]\n" for i in range(n)
                )
            ),
            st.integers(3, 12),
            st.integers(2, 12),
        ),
        st.lists(
            st.sampled_from(["model:", "  depth: 2", "  depth: 3", "[", "{", "&x", "*x", ": :", "\t"]), max_size=8
        ).map("\n".join),
    )
)
def test_arbitrary_text_never_crashes(cli: Callable[..., Any], text: str) -> None:
    result, elapsed = _check(cli, text)
    assert result.exit_code in (0, 1, 2), result.output  # text that happens to be a valid spec may run
    if result.exit_code == 2:
        assert result.output.startswith("probe: error: ")
    assert elapsed < 10.0


@st.composite
def valid_specs(draw: st.DrawFn) -> dict[str, Any]:
    from probe.spec import activations, inits

    kind = draw(st.sampled_from(["mlp", "conv", "residual", "transformer", "lstm", "gru"]))
    heads = draw(st.sampled_from([1, 2]))
    model: dict[str, Any] = {
        "kind": kind,
        "depth": draw(st.integers(1, 3)),
        "width": heads * draw(st.integers(1, 6)),
        "input_dim": draw(st.integers(1, 6)),
        "activation": draw(st.sampled_from(sorted(activations.ACTIVATIONS))),
        "norm": draw(st.sampled_from(["none", "batchnorm", "layernorm"])),
        "output_dim": draw(st.one_of(st.none(), st.integers(1, 4))),
    }
    if kind == "transformer":
        model["heads"] = heads
        model["seq_len"] = draw(st.integers(1, 4))
    if kind in ("lstm", "gru"):
        model["seq_len"] = draw(st.integers(1, 4))
    if kind == "conv":
        model["image_size"] = draw(st.integers(2, 6))
    weights = sorted(n for n in inits.STRATEGIES if n != "lsuv")
    return {
        "model": model,
        "init": {
            "weight": draw(st.sampled_from(weights)),
            "bias": draw(st.sampled_from(["zeros", "normal", "uniform"])),
        },
        "data": {"batch_size": draw(st.integers(2, 6)), "batches": draw(st.integers(1, 2))},
        "run": {
            "device": "cpu",
            "dtype": draw(st.sampled_from(["float32", "float64"])),
            "seed": draw(st.integers(0, 2**31 - 1)),
        },
    }


@pytest.mark.slow
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(spec=valid_specs())
def test_valid_specs_never_exit_3(cli: Callable[..., Any], spec: dict[str, Any]) -> None:
    result, _ = _check(cli, yaml.safe_dump(spec))
    # 0/1: a verdict; 2: a combination refused with a reason (e.g. a strategy the kind cannot take)
    assert result.exit_code in (0, 1, 2), (spec, result.output)
    if result.exit_code == 2:
        assert result.output.startswith("probe: error: ") and "unexpected" not in result.output
