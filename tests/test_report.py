"""Renderers: the JSON format, CSV, Markdown and JUnit outputs."""

from __future__ import annotations

import csv
import io
import json
import xml.etree.ElementTree as ET
from dataclasses import replace
from typing import Any

import pytest

from probe.judge import rules
from probe.measurement.run import run_probe
from probe.render import report as rp
from probe.render.numbers import fmt


@pytest.fixture
def small(make_spec: Any) -> rp.Run:
    spec = make_spec(
        model={"depth": 3, "width": 16, "activation": "tanh"}, init={"weight": "xavier"}, data={"batch_size": 32}
    )
    result = run_probe(spec)
    return rp.Run("small", result, rules.evaluate(result), "xavier_normal", "tanh")


@pytest.fixture
def broken(make_spec: Any) -> rp.Run:
    spec = make_spec(model={"depth": 3, "width": 16}, init={"weight": "zeros"}, data={"batch_size": 32})
    result = run_probe(spec)
    return rp.Run("zeros & <friends>", result, rules.evaluate(result), "zeros", "relu")


def test_json_report_has_the_documented_keys(small: rp.Run) -> None:
    data = json.loads(rp.run_json(small.report, small.verdict))
    assert data["format"] == "probe.report/1"
    assert data["spec"]["model"]["activation"]["name"] == "tanh"
    assert len(data["layers"]) == 3
    for key in (
        "name",
        "index",
        "mean",
        "std",
        "zero_ratio",
        "dead_units",
        "saturation_ratio",
        "nonfinite",
        "grad_std",
        "weight_grad_norm",
    ):
        assert key in data["layers"][0]
    assert set(data["verdict"]) >= {"healthy", "problems"}
    assert data["layers"][0]["std"] == small.report.first.std


def test_problems_carry_rule_layer_value_threshold_message(broken: rp.Run) -> None:
    data = json.loads(rp.run_json(broken.report, broken.verdict))
    assert data["verdict"]["healthy"] is False
    problem = data["verdict"]["problems"][0]
    assert set(problem) == {"rule", "severity", "layer", "value", "threshold", "message"}
    assert problem["severity"] == "error"


def test_non_finite_numbers_become_null_in_strict_json(small: rp.Run) -> None:
    layer = replace(small.report.first, std=float("inf"), mean=float("nan"))
    report = replace(small.report, layers=(layer, *small.report.layers[1:]))
    text = rp.run_json(report, small.verdict)
    data = json.loads(text)  # would fail on NaN/Infinity with a strict parser
    assert data["layers"][0]["std"] is None and data["layers"][0]["mean"] is None
    assert "NaN" not in text and "Infinity" not in text


def test_runs_json_wraps_each_report(small: rp.Run, broken: rp.Run) -> None:
    data = json.loads(rp.runs_json([small, broken]))
    assert data["healthy"] is False
    assert [r["strategy"] for r in data["runs"]] == ["xavier_normal", "zeros"]
    assert data["runs"][0]["activation"] == "tanh"
    assert data["runs"][1]["verdict"]["healthy"] is False


def test_layers_csv_has_one_row_per_layer(small: rp.Run) -> None:
    rows = list(csv.DictReader(io.StringIO(rp.layers_csv([small]))))
    assert [r["name"] for r in rows] == ["layer1", "layer2", "layer3"]
    assert float(rows[0]["std"]) == pytest.approx(small.report.first.std)


def test_markdown_is_a_table_with_the_verdict(broken: rp.Run) -> None:
    text = rp.run_markdown(broken.report, broken.verdict)
    assert "| layer | mean | std |" in text
    assert "**Verdict: UNHEALTHY: " in text and "`symmetry`" in text


def test_junit_has_one_case_per_run_and_escapes_names(small: rp.Run, broken: rp.Run) -> None:
    root = ET.fromstring(rp.junit_xml([small, broken]))
    suite = root.find("testsuite")
    assert suite is not None and suite.get("tests") == "2" and suite.get("failures") == "1"
    cases = suite.findall("testcase")
    assert [c.get("name") for c in cases] == ["small", "zeros & <friends>"]
    assert cases[0].find("failure") is None
    failure = cases[1].find("failure")
    assert failure is not None and "symmetry" in (failure.get("message") or "")


def test_check_lines_end_with_a_count(small: rp.Run, broken: rp.Run) -> None:
    lines = rp.check_lines([small, broken])
    assert lines[-1] == "1 healthy, 1 unhealthy"
    assert all(line.startswith("zeros & <friends>: ") for line in lines[:-1])


@pytest.mark.parametrize(
    ("value", "text"),
    [(None, "-"), (0.0, "0"), (0.123456, "0.1235"), (1.5e-9, "1.5e-09"), (float("inf"), "inf"), (3, "3")],
)
def test_number_format(value: Any, text: str) -> None:
    assert fmt(value) == text
