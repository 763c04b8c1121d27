"""The commands as a user runs them: output, files and exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from probe.cli import common as cli_mod
from tests.conftest import CONFIGS, REPO

LAB1 = ["tiny:relu", "large:tanh", "xavier:tanh", "he:relu"]


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# ---- probe run ---------------------------------------------------------------------------------


def test_run_prints_spec_table_and_verdict(cli: Any) -> None:
    result = cli("run", str(CONFIGS / "lab1_he_relu.yaml"), "--set", "run.device=cpu")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "lab1_he_relu: mlp 32 -> 128 x 8 relu" in out
    assert "layer1" in out and "layer8" in out
    assert "verdict: healthy" in out


def test_run_reports_but_does_not_fail_an_unhealthy_network(cli: Any) -> None:
    result = cli("run", str(CONFIGS / "lab1_tiny_relu.yaml"))
    assert result.exit_code == 0
    assert "UNHEALTHY: vanishing" in result.stdout


def test_run_json_is_the_report_format(cli: Any) -> None:
    result = cli("run", str(CONFIGS / "zeros_relu.yaml"), "--format", "json", "--set", "model.depth=3")
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert data["format"] == "probe.report/1"
    assert data["spec"]["model"]["depth"] == 3
    assert "symmetry" in {p["rule"] for p in data["verdict"]["problems"]}


@pytest.mark.parametrize(("fmt", "marker"), [("csv", "name,index,kind"), ("markdown", "| layer | mean |")])
def test_run_other_formats(cli: Any, fmt: str, marker: str) -> None:
    result = cli("run", str(CONFIGS / "lab1_xavier_tanh.yaml"), "-f", fmt)
    assert result.exit_code == 0
    assert marker in result.stdout


def test_output_is_written_to_a_file(cli: Any, tmp_path: Path) -> None:
    target = tmp_path / "report.json"
    result = cli("run", str(CONFIGS / "lab1_he_relu.yaml"), "-f", "json", "-o", str(target))
    assert result.exit_code == 0
    assert result.stdout == ""
    assert json.loads(target.read_text())["verdict"]["healthy"] is True
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]  # no temporary file left behind


def test_table_output_to_a_file_is_plain_text(cli: Any, tmp_path: Path) -> None:
    target = tmp_path / "report.txt"
    assert cli("run", str(CONFIGS / "lab1_he_relu.yaml"), "-o", str(target)).exit_code == 0
    text = target.read_text()
    assert "verdict: healthy" in text and "\x1b[" not in text


def test_gate_override_on_the_command_line(cli: Any) -> None:
    spec = str(CONFIGS / "lab1_xavier_tanh.yaml")
    assert "verdict: healthy" in cli("run", spec).stdout
    strict = cli("run", spec, "--gate", "min_std=0.5")
    assert "UNHEALTHY: vanishing" in strict.stdout


# ---- bad input: exit 2, one red line, no traceback ----------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("model:\n  depth: 3\n\twidth: 4\n", ":3:1: YAML syntax error"),
        ("model: {activation: reluu}\n", "did you mean 'relu'?"),
        ("model: {depth: 0}\n", "model.depth: must be >= 1"),
        ("data: {batch_size: 1}\n", "data.batch_size: must be >= 2"),
    ],
)
def test_bad_spec_exits_2_with_a_clear_message(cli: Any, tmp_path: Path, text: str, message: str) -> None:
    result = cli("run", str(_write(tmp_path / "bad.yaml", text)))
    assert result.exit_code == 2
    assert message in result.stderr
    assert "Traceback" not in result.output


def test_missing_spec_file_exits_2(cli: Any, tmp_path: Path) -> None:
    result = cli("run", str(tmp_path / "missing.yaml"))
    assert result.exit_code == 2
    assert "spec file not found" in result.stderr


def test_bad_override_syntax_exits_2(cli: Any) -> None:
    result = cli("run", str(CONFIGS / "lab1_he_relu.yaml"), "--set", "depth=3")
    assert result.exit_code == 2
    assert "SECTION.KEY=VALUE" in result.stderr


def test_unavailable_device_exits_3(cli: Any) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    result = cli("run", str(CONFIGS / "lab1_he_relu.yaml"), "--set", "run.device=cuda")
    assert result.exit_code == 3
    assert "CUDA is not available" in result.stderr


def test_output_into_a_missing_folder_exits_2_and_writes_nothing(cli: Any, tmp_path: Path) -> None:
    result = cli("run", str(CONFIGS / "lab1_he_relu.yaml"), "-o", str(tmp_path / "no" / "such" / "r.txt"))
    assert result.exit_code == 2
    assert "does not exist" in result.stderr


# ---- probe compare -----------------------------------------------------------------------------


def test_compare_the_seed_lab1(cli: Any) -> None:
    result = cli("compare", *LAB1, "-f", "json")
    assert result.exit_code == 0
    runs = {r["label"]: r for r in json.loads(result.stdout)["runs"]}
    assert list(runs) == LAB1
    assert runs["xavier:tanh"]["activation"] == "tanh"
    assert runs["tiny:relu"]["verdict"]["healthy"] is False
    assert runs["he:relu"]["verdict"]["healthy"] is True


def test_compare_with_the_base_activation_and_table(cli: Any) -> None:
    result = cli("compare", "tiny", "large", "xavier", "he")
    assert result.exit_code == 0
    out = result.stdout
    for label in ("tiny", "large", "xavier", "he"):
        assert label in out
    assert "first std" in out and "grad 1st/last" in out


def test_compare_overrides_apply_to_every_run(cli: Any) -> None:
    result = cli(
        "compare",
        "he",
        "xavier",
        "--depth",
        "3",
        "--width",
        "16",
        "--batch-size",
        "8",
        "--activation",
        "tanh",
        "--seed",
        "3",
        "--device",
        "cpu",
        "--dtype",
        "float64",
        "-f",
        "json",
    )
    assert result.exit_code == 0
    for run in json.loads(result.stdout)["runs"]:
        model = run["spec"]["model"]
        assert (model["depth"], model["width"], model["activation"]["name"]) == (3, 16, "tanh")
        assert run["spec"]["run"]["seed"] == 3 and run["environment"]["dtype"] == "float64"


def test_compare_with_a_config(cli: Any) -> None:
    result = cli("compare", "he", "--config", str(CONFIGS / "gate_example.yaml"), "-f", "csv")
    assert result.exit_code == 0
    assert result.stdout.splitlines()[0].startswith("run,strategy,activation,first_std")


def test_compare_replaces_the_weights_of_init_rules(cli: Any) -> None:
    # cnn_he.yaml initializes by per-module rules; compare must still apply each strategy
    result = cli(
        "compare",
        "he",
        "tiny",
        "--config",
        str(CONFIGS / "cnn_he.yaml"),
        "--depth",
        "4",
        "--batch-size",
        "8",
        "-f",
        "json",
    )
    assert result.exit_code == 0, result.output
    he, tiny = json.loads(result.stdout)["runs"]
    assert tiny["summary"]["last_std"] < 0.1 * he["summary"]["last_std"]
    applied = [x["init_rule"] for x in tiny["layers"] if x.get("init_rule")]
    assert applied and all(rule.startswith("init.rules[") and rule.endswith(" tiny") for rule in applied)


def test_compare_unknown_strategy_exits_2(cli: Any) -> None:
    result = cli("compare", "xavir:tanh")
    assert result.exit_code == 2
    assert "did you mean 'xavier'?" in result.stderr


# ---- probe check -------------------------------------------------------------------------------


def test_check_healthy_specs_exit_0(cli: Any) -> None:
    result = cli("check", str(CONFIGS / "lab1_he_relu.yaml"), str(CONFIGS / "lab1_xavier_tanh.yaml"))
    assert result.exit_code == 0
    assert result.stdout.strip().endswith("2 healthy, 0 unhealthy")


def test_check_unhealthy_exits_1_with_one_line_per_problem(cli: Any, tmp_path: Path) -> None:
    junit = tmp_path / "probe.xml"
    result = cli(
        "check", str(CONFIGS / "lab1_he_relu.yaml"), str(CONFIGS / "lab1_tiny_relu.yaml"), "--junit", str(junit)
    )
    assert result.exit_code == 1
    lines = result.stdout.strip().splitlines()
    assert lines[-1] == "1 healthy, 1 unhealthy"
    assert all("lab1_tiny_relu.yaml: " in line for line in lines[:-1])
    assert any(": vanishing: " in line for line in lines)
    suite = ET.parse(junit).getroot().find("testsuite")
    assert suite is not None and suite.get("failures") == "1" and suite.get("tests") == "2"


def test_check_bad_spec_exits_2_before_running_anything(cli: Any, tmp_path: Path) -> None:
    bad = _write(tmp_path / "bad.yaml", "model: {depth: -1}\n")
    result = cli("check", str(CONFIGS / "lab1_he_relu.yaml"), str(bad))
    assert result.exit_code == 2
    assert "model.depth" in result.stderr


def test_check_gate_override_can_pass_a_failing_spec(cli: Any) -> None:
    spec = str(CONFIGS / "lab1_large_tanh.yaml")
    assert cli("check", spec).exit_code == 1
    relaxed = cli("check", spec, "--gate", "disable=[saturation, gradient_exploding]")
    assert relaxed.exit_code == 0, relaxed.stdout


def test_every_shipped_config_is_valid_and_the_lab1_ones_behave_as_documented(cli: Any) -> None:
    result = cli("check", *sorted(str(p) for p in CONFIGS.glob("*.yaml")), "-f", "json")
    assert result.exit_code == 1
    runs = {Path(r["label"]).stem: r["verdict"]["healthy"] for r in json.loads(result.stdout)["runs"]}
    assert runs["lab1_he_relu"] and runs["lab1_xavier_tanh"] and runs["gate_example"]
    assert not runs["lab1_tiny_relu"] and not runs["lab1_large_tanh"] and not runs["zeros_relu"]


def test_rules_lists_every_rule(cli: Any) -> None:
    result = cli("rules")
    assert result.exit_code == 0
    for name in ("vanishing", "exploding", "saturation", "dead_units", "symmetry", "nonfinite", "gradient_vanishing"):
        assert name in result.stdout


# ---- the real entry points ---------------------------------------------------------------------


def test_python_dash_m_probe_and_version() -> None:
    out = subprocess.run([sys.executable, "-m", "probe", "--version"], capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0 and out.stdout.startswith("probe ")


@pytest.mark.parametrize("args", [["--help"], ["run", "--help"], ["run", "missing.yaml"], ["compare", "nosuch"]])
def test_help_and_bad_input_import_neither_torch_nor_pydantic(args: list[str]) -> None:
    # pydantic: typer >= 0.25 builds its adapters on demand; probe's quick coercion needs none here
    code = (
        "import sys\n"
        "from probe.cli import app\n"
        "typer_imports_pydantic = 'pydantic' in sys.modules\n"
        "try:\n"
        f"    app({args!r})\n"
        "except SystemExit:\n"
        "    pass\n"
        "print('torch' in sys.modules, 'pydantic' in sys.modules and not typer_imports_pydantic)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    torch_seen, pydantic_seen = out.stdout.strip().splitlines()[-1].split()
    assert torch_seen == "False", out.stdout + out.stderr
    # the quick coercion rides on typer's private API: where a typer release changes it, probe falls
    # back to typer's own coercion (slower start-up, same behaviour) and only the benchmark notices
    if cli_mod._TYPER_COERCES:
        assert pydantic_seen == "False", out.stdout + out.stderr


# The quick coercion (cli._prime) must hand every command the values typer's own coercion would.
PARSED = [
    ["run", str(CONFIGS / "lab1_tiny_relu.yaml")],
    ["run", "missing.yaml", "-f", "JSON", "-o", "out.txt", "-g", "min_std=1e-3", "-s", "model.depth=3"],
    ["run", "--max-memory", "1.5", "--plot", "x.png", "--weights", "w.pt", "--all-layers", "--theory", "-l", "fc*"],
    ["run", "--model", "m:f", "--model-arg", "a=1", "--input-shape", "3,8,8", "--inputs", "m:g", str(CONFIGS)],
    ["compare", "he", "xavier:tanh", "--depth", "5", "--width", "64", "--seed", "3", "-j", "2", "--batch-size", "8"],
    ["compare", "he", "--device", "cpu", "--dtype", "float64", "-c", str(CONFIGS / "lab1_he_relu.yaml"), "-f", "csv"],
    ["check", str(CONFIGS / "lab1_tiny_relu.yaml"), "b.yaml", "--junit", "j.xml", "--max-memory", "2"],
    ["fix", "a.yaml", "--tolerance", "0.2", "--max-iter", "3", "--start", "orthogonal", "--save", "f.pt"],
    ["depth", "a.yaml", "--strategy", "he", "--strategy", "tiny", "--max-depth", "50"],
    ["train", "he", "tiny", "--optimizer", "SGD", "--lr", "0.1", "--steps", "5", "--samples", "100", "--noise", "0"],
    ["train", "he", "--seed", "1", "--activation", "tanh", "--config", "a.yaml", "-f", "markdown"],
    ["sweep", "he", "--depth", "4,8", "--width", "8", "-c", "a.yaml", "--activation", "tanh"],
    ["inspect", "a.yaml", "-s", "model.depth=2"],
    ["advise", "a.yaml", "--no-run"],
    ["rules"],
]


def _parsed(argv: list[str], quick_used: list[bool] | None = None) -> dict[str, Any]:
    import typer.main

    from probe.cli import app
    from probe.cli import common as cli

    command = typer.main.get_command(app).commands[argv[0]]  # type: ignore[attr-defined]
    params = command.make_context(argv[0], argv[1:]).params
    if quick_used is not None and cli._TYPER_COERCES:
        quick_used.append(any(isinstance(getattr(p, "_runtime_param", None), cli._QuickParam) for p in command.params))
    return {name: (type(value), value) for name, value in params.items()}


def _require_quick_path() -> None:
    from probe.cli import common as cli

    if not cli._TYPER_COERCES:  # without it both sides would be typer's own coercion
        pytest.skip("this typer has no pydantic coercion layer: probe's quick path is off, nothing to compare")


@pytest.mark.parametrize("argv", PARSED, ids=lambda argv: " ".join(argv)[:40])
def test_quick_coercion_parses_as_typer_does(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    from probe.cli import common as cli

    _require_quick_path()
    used: list[bool] = []
    quick = _parsed(argv, used)
    assert used == [bool(quick)]  # the quick coercion really parsed this command line (if it has options)
    monkeypatch.setattr(cli, "_prime", lambda params: None)
    plain_used: list[bool] = []
    assert quick == _parsed(argv, plain_used)
    assert plain_used == [False]  # and typer's own did the comparison


BAD = [
    ["compare", "he", "--jobs", "0"],
    ["compare", "he", "--depth", "five"],
    ["run", "a.yaml", "--format", "xml"],
    ["run", "a.yaml", "--max-memory", "-1"],
    ["fix", "a.yaml", "--tolerance", "abc"],
    ["train", "he", "--optimizer", "rmsprop"],
    ["depth", "a.yaml", "--max-depth", "1"],
]


@pytest.mark.parametrize("argv", BAD, ids=lambda argv: " ".join(argv))
def test_quick_coercion_reports_bad_values_as_typer_does(
    cli: Any, argv: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from probe.cli import common as cli_mod

    _require_quick_path()
    quick = cli(*argv)
    monkeypatch.setattr(cli_mod, "_prime", lambda params: None)
    plain = cli(*argv)
    assert quick.exit_code == plain.exit_code == 2
    assert quick.stderr == plain.stderr and "Invalid value" in quick.stderr


@pytest.mark.parametrize(
    "command", [["fix", str(CONFIGS / "lab1_tiny_relu.yaml")], ["depth", str(CONFIGS / "lab1_xavier_tanh.yaml")]]
)
def test_commands_without_an_html_page_refuse_it(cli: Any, command: list[str], tmp_path: Path) -> None:
    target = tmp_path / "page.html"
    result = cli(*command, "--format", "html", "-o", str(target))
    assert result.exit_code == 2
    assert "--format html is not available for this command" in result.stderr
    assert not target.exists()


def test_only_the_cli_process_freezes_the_garbage_collector(cli: Any) -> None:
    """`probe compare` (its own process) freezes the objects torch left behind, so later and final
    collections skip them; the same command called from Python leaves the collector alone."""
    import gc

    before = gc.get_freeze_count()
    result = cli("compare", "he", "--depth", "2", "--width", "8")
    assert result.exit_code == 0, result.output
    assert gc.get_freeze_count() == before
    code = (
        "import atexit, gc, sys\n"
        "from probe.cli import entry\n"
        "atexit.register(lambda: print('frozen', gc.get_freeze_count() > 0))\n"
        "sys.argv = ['probe', 'compare', 'he', '--depth', '2', '--width', '8']\n"
        "entry()\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "frozen True"
