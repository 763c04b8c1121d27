"""JUnit XML through ElementTree: markup escaped, characters XML 1.0 forbids written visibly."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from probe.judge import rules
from probe.measurement.run import run_probe
from probe.records import Problem, Run
from probe.render import report as rp


@pytest.fixture(scope="module")
def run() -> Run:
    from probe import spec as spec_mod

    spec = spec_mod.parse({"model": {"depth": 2, "width": 8}, "data": {"batch_size": 8}, "run": {"device": "cpu"}})
    result = run_probe(spec)
    return Run("base", result, rules.evaluate(result))


def _broken(run: Run, label: str, layer: str, message: str) -> Run:
    problem = Problem("vanishing", layer, 1e-4, 1e-2, message)
    return replace(run, label=label, verdict=replace(run.verdict, healthy=False, problems=(problem,)))


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("bell\x07", "bell\\x07"),
        ("esc\x1b[31mred", "esc\\x1b[31mred"),
        ("nul\x00", "nul\\x00"),
        ("vt\x0bff\x0c", "vt\\x0bff\\x0c"),
        ("nonchar\ufffe", "nonchar\\ufffe"),
        ("surrogate\ud800", "surrogate\\ud800"),
    ],
    ids=["bell", "ansi-escape", "nul", "vt-ff", "u+fffe", "lone-surrogate"],
)
def test_forbidden_characters_are_written_visibly(run: Run, raw: str, shown: str) -> None:
    bad = _broken(run, f"spec {raw}.yaml", f"blocks.{raw}", f"std fell {raw}")
    text = rp.junit_xml([run, bad])
    root = ET.fromstring(text)  # expat refuses any of these characters written raw
    case = root.findall("testsuite/testcase")[1]
    assert case.get("name") == f"spec {shown}.yaml"
    failure = case.find("failure")
    assert failure is not None and failure.text == f"vanishing at blocks.{shown}: std fell {shown}"


def test_markup_tab_newline_and_unicode_survive_unchanged(run: Run) -> None:
    label = "a <b> & \"c\" 'd'\tµ→"
    bad = _broken(run, label, "layer<1>", "line one\nline two & <three>")
    root = ET.fromstring(rp.junit_xml([bad]).encode("utf-8"))
    case = root.find("testsuite/testcase")
    assert case is not None and case.get("name") == label
    failure = case.find("failure")
    assert failure is not None and failure.text == "vanishing at layer<1>: line one\nline two & <three>"
    assert failure.get("message") == "broken rules: vanishing" and failure.get("type") == "probe.unhealthy"


def test_counts_and_declaration(run: Run) -> None:
    text = rp.junit_xml([run, _broken(run, "x", "l", "m"), run])
    assert text.startswith('<?xml version="1.0" encoding="UTF-8"?>\n<testsuites ')
    root: Any = ET.fromstring(text)
    assert (root.get("tests"), root.get("failures")) == ("3", "1")
    suite = root.find("testsuite")
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("3", "1", "0")


def test_a_gate_changed_by_its_spec_is_said_everywhere_and_strict_gate_refuses_it(cli: Any, tmp_path: Path) -> None:
    """An all-loosened gate is visible in run's table, check's lines and JUnit; --strict-gate
    refuses the spec (exit 2) while thresholds given on the command line stay allowed."""
    spec = tmp_path / "loose.yaml"
    spec.write_text("model: {depth: 3, width: 8}\ngate: {max_nonfinite: 2147483647, disable: [saturation]}\n")
    said = "gate changed: max_nonfinite 2147483647 (default 0); disabled: saturation"
    assert said in cli("run", str(spec)).stdout
    junit = tmp_path / "probe.xml"
    checked = cli("check", str(spec), "--junit", str(junit))
    assert checked.exit_code == 0 and f"{spec}: {said}" in checked.stdout
    assert 'name="gate_changed" value="max_nonfinite 2147483647 (default 0); disabled: saturation"' in junit.read_text()
    refused = cli("check", str(spec), "--strict-gate")
    assert refused.exit_code == 2 and "--strict-gate: a spec changes its own gate" in refused.output
    assert str(spec) in refused.output
    from tests.conftest import CONFIGS

    allowed = cli("check", str(CONFIGS / "lab1_he_relu.yaml"), "--strict-gate", "--gate", "min_std=0.001")
    assert allowed.exit_code == 0 and "gate changed: min_std 0.001 (default 0.01)" in allowed.stdout
    plain = cli("run", str(CONFIGS / "lab1_he_relu.yaml"))
    assert "gate changed" not in plain.stdout


def test_one_spec_that_fails_to_run_is_named_and_the_others_are_kept(cli: Any, tmp_path: Path) -> None:
    """check of three specs, one whose model raises: the other two are judged and printed, the
    failing one is named with its error, JUnit has it as an error, and the exit code is its own."""
    from tests.conftest import CONFIGS

    failing = tmp_path / "failing.yaml"
    failing.write_text("model:\n  import: tests.models_for_tests:failing\n  input_shape: [3]\n")
    junit = tmp_path / "probe.xml"
    specs = [str(failing), str(CONFIGS / "lab1_he_relu.yaml"), str(CONFIGS / "lab1_tiny_relu.yaml")]
    result = cli("check", *specs, "--junit", str(junit))
    assert result.exit_code == 2, result.output
    assert (
        f"probe: error: {failing}: model.import: tests.models_for_tests:failing(...) raised ValueError" in result.output
    )
    assert "lab1_tiny_relu.yaml: vanishing" in result.output
    assert "1 healthy, 1 unhealthy, 1 failed to run" in result.output
    suite = ET.parse(junit).getroot().find("testsuite")
    assert (
        suite is not None and suite.get("tests") == "3" and suite.get("errors") == "1" and suite.get("failures") == "1"
    )
    (error,) = suite.iter("error")
    assert "cannot build a model of size 3" in (error.text or "")


def test_strict_gate_reads_a_piped_spec_once() -> None:
    """`... | probe check /dev/stdin --strict-gate`: the spec is read once (a second read of the
    pipe is empty and would probe the default spec instead: a broken network passing the gate)."""
    import subprocess
    import sys

    from tests.conftest import REPO

    broken = "model: {depth: 6, width: 8}\ninit: {weight: tiny}\n"
    argv = [sys.executable, "-m", "probe", "check", "/dev/stdin", "--strict-gate"]
    done = subprocess.run(argv, input=broken, capture_output=True, text=True, cwd=REPO, timeout=120)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "/dev/stdin: vanishing" in done.stdout


def test_a_threshold_cannot_switch_off_nan(cli: Any, tmp_path: Path) -> None:
    """An all-nan network fails whatever max_nonfinite says, and a spec that disables nonfinite
    still fails on nan; only the command line accepts it (issue 23, item 3)."""
    base = (
        "model: {import: 'tests.models_for_tests:computes_nan', input_shape: [8]}\n"
        "data: {batch_size: 8}\nrun: {device: cpu}\n"
    )
    high = tmp_path / "high.yaml"
    high.write_text(base + "gate: {max_nonfinite: 2147483647}\n")
    checked = cli("check", str(high))
    assert checked.exit_code == 1, checked.output
    assert "nonfinite: statistics not finite at 3 layers" in checked.stdout
    assert "verdict: UNHEALTHY: nonfinite" in cli("run", str(high)).stdout
    off = tmp_path / "off.yaml"
    off.write_text(base + "gate: {disable: [nonfinite]}\n")
    checked = cli("check", str(off))
    assert checked.exit_code == 1
    assert "only the command line can do for nan (--gate disable=nonfinite)" in " ".join(checked.stdout.split())
    accepted = cli("check", str(off), "--gate", "disable=nonfinite")
    assert accepted.exit_code == 0 and "gate changed: disabled: nonfinite" in accepted.stdout


def test_a_threshold_that_never_breaks_is_said(cli: Any, tmp_path: Path) -> None:
    spec = tmp_path / "never.yaml"
    spec.write_text(
        "model: {depth: 3, width: 8}\ngate: {max_std: .inf, min_std: 0, max_saturation: 1.0, min_std_ratio: 0.001}\n"
    )
    said = (
        "gate changed: min_std 0 (default 0.01; never breaks); min_std_ratio 0.001 (default 0.01); "
        "max_std inf (default 100; never breaks); max_saturation 1 (default 0.25; never breaks)"
    )
    assert said in " ".join(cli("run", str(spec)).stdout.split())
    junit = tmp_path / "probe.xml"
    assert f"{spec}: {said}" in " ".join(cli("check", str(spec), "--junit", str(junit)).stdout.split())
    assert "max_std inf (default 100; never breaks)" in junit.read_text()


def test_a_run_without_backward_says_what_was_not_judged(cli: Any, tmp_path: Path) -> None:
    """run.backward: false hides nan gradients: said in run, check and JUnit; --strict-gate refuses
    it from a spec and allows it from the command line."""
    spec = tmp_path / "forward.yaml"
    spec.write_text("model: {depth: 3, width: 8}\nrun: {backward: false}\n")
    said = "run.backward false: gradients not measured (gradient rules and nan gradients not judged)"
    assert said in " ".join(cli("run", str(spec)).stdout.split())
    junit = tmp_path / "probe.xml"
    assert said in " ".join(cli("check", str(spec), "--junit", str(junit)).stdout.split())
    assert said in junit.read_text()
    assert cli("check", str(spec), "--strict-gate").exit_code == 2
    from tests.conftest import CONFIGS

    allowed = cli("check", str(CONFIGS / "lab1_he_relu.yaml"), "--strict-gate", "--set", "run.backward=false")
    assert allowed.exit_code == 0, allowed.output
