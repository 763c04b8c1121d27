"""The CI pieces, tried offline as far as they run: the pre-commit hook's entry on changed specs, the
GitHub Action's `probe check` step, and the commands docs/ci.md shows for both."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import REPO

DOC = REPO / "docs" / "ci.md"
BIN = str(Path(sys.executable).parent)  # where this environment's `probe` script lies


def _env() -> dict[str, str]:
    return {**os.environ, "PATH": BIN + os.pathsep + os.environ.get("PATH", "")}


@pytest.fixture(scope="module")
def hook() -> dict[str, Any]:
    hooks = yaml.safe_load((REPO / ".pre-commit-hooks.yaml").read_text())
    assert [h["id"] for h in hooks] == ["probe-check"]
    return hooks[0]


@pytest.fixture(scope="module")
def action() -> dict[str, Any]:
    return yaml.safe_load((REPO / "action.yml").read_text())


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```", DOC.read_text(), flags=re.M | re.S)


@pytest.mark.parametrize(
    ("path", "picked"),
    [
        ("configs/lab1_he_relu.yaml", True),
        ("models/configs/net.yml", True),
        (".github/workflows/ci.yml", False),
        ("configs/README.md", False),
        ("specs/net.yaml", False),
    ],
)
def test_the_hook_picks_spec_files_only(hook: dict[str, Any], path: str, picked: bool) -> None:
    assert bool(re.search(hook["files"], path)) is picked
    assert hook["types"] == ["yaml"] and hook["pass_filenames"] is True


def test_the_hooks_entry_runs_on_changed_specs(hook: dict[str, Any], tmp_path: Path) -> None:
    """As pre-commit runs it: the entry, then the changed files; exit 1 fails the commit."""
    good = ["configs/lab1_he_relu.yaml"]
    bad = ["configs/lab1_he_relu.yaml", "configs/zeros_relu.yaml"]
    entry = shlex.split(hook["entry"])
    ok = subprocess.run([*entry, *good], cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip().endswith("1 healthy, 0 unhealthy")
    failed = subprocess.run([*entry, *bad], cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300)
    assert failed.returncode == 1
    assert "configs/zeros_relu.yaml: vanishing" in failed.stdout
    typo = tmp_path / "configs" / "typo.yaml"
    typo.parent.mkdir()
    typo.write_text("modle: {depth: 3}\n")
    broken = subprocess.run([*entry, str(typo)], cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300)
    assert broken.returncode == 2 and "did you mean 'model'" in broken.stderr


def _step(action: dict[str, Any], name: str) -> dict[str, Any]:
    return next(s for s in action["runs"]["steps"] if s.get("name") == name)


def _resolve(value: str, inputs: dict[str, str]) -> str:
    """``${{ inputs.x }}`` and ``${{ github.action_path }}`` as the runner substitutes them."""
    value = re.sub(r"\$\{\{\s*inputs\.([\w-]+)\s*\}\}", lambda m: inputs[m.group(1)], value)
    return value.replace("${{ github.action_path }}", str(REPO))


def _defaults(action: dict[str, Any]) -> dict[str, str]:
    return {k: str(v.get("default", "")) for k, v in action["inputs"].items()}


def test_the_action_is_composite_and_uploads_the_junit_file_always(action: dict[str, Any]) -> None:
    steps = action["runs"]["steps"]
    assert action["runs"]["using"] == "composite"
    assert steps[0]["uses"].startswith("actions/setup-python@")
    upload = steps[-1]
    assert upload["uses"].startswith("actions/upload-artifact@") and upload["if"] == "always()"
    assert upload["with"]["path"] == "${{ inputs.junit }}"
    assert all(s.get("shell") == "bash" for s in steps if "run" in s)


def test_the_actions_check_step_runs(action: dict[str, Any], tmp_path: Path) -> None:
    inputs = {**_defaults(action), "specs": "configs/lab1_he_relu.yaml configs/zeros_relu.yaml"}
    inputs["junit"] = str(tmp_path / "probe-junit.xml")
    step = _step(action, "probe check")
    env = {**_env(), **{k: _resolve(v, inputs) for k, v in step["env"].items()}}
    done = subprocess.run(["bash", "-c", step["run"]], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stderr  # one unhealthy spec fails the job
    cases = ET.parse(inputs["junit"]).getroot().findall("testsuite/testcase")
    assert [c.get("name") for c in cases] == inputs["specs"].split()
    assert [c.find("failure") is not None for c in cases] == [False, True]


def test_the_docs_show_the_actions_commands_and_the_gitlab_job_runs_them(action: dict[str, Any]) -> None:
    shown = [line for line in _blocks("bash")[0].strip().splitlines()]
    inputs = {**_defaults(action), "specs": "configs/gate_example.yaml"}  # as the docs' workflow sets it
    install = _step(action, "Install probe")
    install_lines = [
        line.replace('"$TORCH_INDEX_URL"', _resolve(install["env"]["TORCH_INDEX_URL"], inputs))
        for line in install["run"].strip().splitlines()
    ]
    assert install_lines[0] == shown[0]  # torch from the CPU wheels
    assert install_lines[1] == 'python -m pip install "$PROBE_SOURCE"' and shown[1].startswith("python -m pip install ")
    check = _step(action, "probe check")
    command = check["run"].strip()
    for var, value in check["env"].items():
        command = command.replace(f'"${var}"', _resolve(value, inputs)).replace(f"${var}", _resolve(value, inputs))
    assert command.split() == shown[2].split()
    gitlab = next(yaml.safe_load(b) for b in _blocks("yaml") if "script:" in b)
    job = gitlab["init-probe"]
    assert job["script"] == shown
    assert job["artifacts"]["reports"]["junit"] == inputs["junit"] and job["artifacts"]["when"] == "always"


def test_the_hook_fails_when_probe_check_leaves_no_report(
    hook: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever ends `probe check` early with exit 0 (issue 23, item 2), the hook reads the JUnit
    report it asked for: missing, short of a spec, or recording a failure, the commit fails."""
    from probe.cli import hook as hook_mod

    assert shlex.split(hook["entry"]) == ["python", "-m", "probe.cli.hook"]
    spec = tmp_path / "net.yaml"
    spec.write_text("model: {depth: 2}\n")
    monkeypatch.setattr(hook_mod.subprocess, "call", lambda argv: 0)  # exit 0, no report written
    assert hook_mod.run_hook([str(spec)]) == 3

    def one_case(argv: list[str], failed: bool) -> int:
        body = "<failure message='vanishing'/>" if failed else ""
        junit = Path(argv[argv.index("--junit") + 1])
        junit.write_text(f"<testsuites><testsuite><testcase name='x'>{body}</testcase></testsuite></testsuites>")
        return 0

    monkeypatch.setattr(hook_mod.subprocess, "call", lambda argv: one_case(argv, failed=True))
    assert hook_mod.run_hook([str(spec)]) == 3  # a failure recorded under exit 0
    assert hook_mod.run_hook([str(spec), str(spec)]) == 3  # two specs, one case
    monkeypatch.setattr(hook_mod.subprocess, "call", lambda argv: one_case(argv, failed=False))
    assert hook_mod.run_hook([str(spec)]) == 0


def test_the_action_fails_when_the_junit_report_is_missing(action: dict[str, Any], tmp_path: Path) -> None:
    step = _step(action, "Require the JUnit report")
    assert step["if"] == "always()" and _step(action, "probe check")["id"] == "check"
    names = [s.get("name") for s in action["runs"]["steps"]]
    assert names.index("probe check") < names.index("Require the JUnit report") < len(names) - 1

    def verify(junit: Path, outcome: str) -> int:
        inputs = {**_defaults(action), "junit": str(junit)}
        env = {**_env(), **{k: _resolve(v, inputs) for k, v in step["env"].items()}, "PROBE_OUTCOME": outcome}
        done = subprocess.run(["bash", "-c", step["run"]], cwd=REPO, env=env, capture_output=True, text=True)
        return done.returncode

    missing = tmp_path / "probe-junit.xml"
    assert verify(missing, "success") == 3  # probe check "passed" but left no report
    missing.write_text("<testsuites><testsuite><testcase name='a.yaml'/></testsuite></testsuites>")
    assert verify(missing, "success") == 0
    missing.write_text("<testsuites><testsuite><testcase name='a.yaml'><failure/></testcase></testsuite></testsuites>")
    assert verify(missing, "success") == 3 and verify(missing, "failure") == 0
