"""The commands as a user runs them: output, files and exit codes."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

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
    # 0.24 against 0.5 is a factor of 2 past: a warning, which fail_on: warning makes fail
    assert "warning vanishing" in cli("run", spec, "--gate", "min_std=0.5").stdout
    strict = cli("run", spec, "--gate", "min_std=0.5", "--gate", "fail_on=warning")
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
    relaxed = cli("check", spec, "--gate", "disable=[saturation, gradient_exploding, weight_scale]")
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
    # pydantic: typer 0.29 converts every value through it (~0.1 s a start); the pinned range does not
    code = (
        "import sys\n"
        "from probe.cli import app\n"
        "try:\n"
        f"    app({args!r})\n"
        "except SystemExit:\n"
        "    pass\n"
        "print('torch' in sys.modules, 'pydantic' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    torch_seen, pydantic_seen = out.stdout.strip().splitlines()[-1].split()
    assert torch_seen == "False", out.stdout + out.stderr
    assert pydantic_seen == "False", out.stdout + out.stderr


def test_the_installed_typer_is_in_the_pinned_range() -> None:
    import re
    from importlib.metadata import version

    pin = re.search(r'"typer>=([\d.]+),<([\d.]+)"', (REPO / "pyproject.toml").read_text())
    assert pin is not None, "pyproject.toml pins typer to a tested range"

    def parts(text: str) -> tuple[int, ...]:
        return tuple(int(x) for x in re.findall(r"\d+", text)[:3])

    assert parts(pin.group(1)) <= parts(version("typer")) < parts(pin.group(2))


def test_probe_without_arguments_prints_help_and_exits_0(cli: Any) -> None:
    result = cli()
    assert result.exit_code == 0
    assert "Usage: probe" in result.stdout and "compare" in result.stdout


SMALL = ["--set", "model.width=32", "--set", "model.depth=4", "--set", "data.batch_size=64"]
EVERY_FORMAT = {
    "rules": ["rules"],
    "advise": ["advise", str(CONFIGS / "lab1_tiny_relu.yaml"), "--no-run"],
    "depth": ["depth", str(CONFIGS / "lab1_xavier_tanh.yaml"), "--max-depth", "30"],
    "fix": ["fix", str(CONFIGS / "lab1_tiny_relu.yaml"), *SMALL],
    "run --theory": ["run", str(CONFIGS / "lab1_xavier_tanh.yaml"), "--theory", *SMALL],
}
# the formats each command lacked before the one render layer (the others have their own tests)
NEW_FORMATS = [
    *(("rules", f) for f in ("table", "json", "csv", "markdown", "html")),
    *(("advise", f) for f in ("json", "csv", "markdown", "html")),
    ("depth", "html"),
    ("fix", "html"),
    ("run --theory", "html"),
]


@pytest.mark.parametrize(("command", "fmt"), NEW_FORMATS, ids=[f"{c}-{f}" for c, f in NEW_FORMATS])
def test_every_command_writes_every_format(cli: Any, command: str, fmt: str, tmp_path: Path) -> None:
    target = tmp_path / f"out.{fmt}"
    result = cli(*EVERY_FORMAT[command], "--format", fmt, "-o", str(target))
    assert result.exit_code == 0, result.stderr
    text = target.read_text()
    if fmt == "json":
        assert json.loads(text)["format"].startswith("probe.")
    elif fmt == "csv":
        header = text.splitlines()[0].split(",")
        assert len(header) >= 2 and all(header)
    elif fmt == "markdown":
        assert "|---|" in text or (command == "advise" and text.startswith(("mismatch:", "try:", "ok:")))
    elif fmt == "html":
        assert text.startswith("<!DOCTYPE html>") and ("<table>" in text or command == "advise")
    else:
        assert text.strip() and "…" not in text


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


COMMANDS = ["run", "compare", "check", "inspect", "sweep", "train", "advise", "depth", "fix", "rules"]


@pytest.mark.parametrize("command", COMMANDS)
def test_help_shows_flags_as_flags_and_no_python_types(command: str) -> None:
    from probe.cli import app

    result = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "250"})  # one line per option
    assert result.exit_code == 0
    text = result.stdout
    assert "<bool>" not in text and "list[" not in text and "<str>" not in text.split("Options")[-1]
    if "--plot" in text:
        assert "needs probe[plot]" in text  # not swallowed as rich markup
    for line in text.splitlines():
        assert not ("(default" in line and "[default:" in line), line  # a default is shown once


def test_probe_help_groups_the_commands() -> None:
    from probe.cli import app

    text = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "100"}).stdout
    panels = [line.split("─")[1].strip() for line in text.splitlines() if line.startswith("╭─")]
    assert panels == ["Options", "probe", "experiments", "theory and fix", "reference"]


SHARED = {  # the options that mean the same on every command where they apply
    "--set": ["run", "compare", "check", "inspect", "sweep", "train", "advise", "depth", "fix"],
    "--gate": ["run", "compare", "check", "sweep", "advise", "depth", "fix"],
    "--format": COMMANDS,
    "--output": COMMANDS,
    "--seed": ["run", "compare", "check", "inspect", "sweep", "train", "advise", "fix"],
    "--device": ["run", "compare", "check", "inspect", "sweep", "train", "advise", "fix"],
    "--dtype": ["run", "compare", "check", "inspect", "sweep", "train", "advise", "fix"],
}


@pytest.mark.parametrize("option", list(SHARED))
def test_shared_options_are_on_every_command_they_apply_to(option: str) -> None:
    import typer.main

    from probe.cli import app

    group = typer.main.get_command(app)
    for name in SHARED[option]:
        opts = {o for p in group.commands[name].params for o in p.opts}  # type: ignore[attr-defined]
        assert option in opts, f"probe {name} lacks {option}"


@pytest.mark.parametrize(
    ("argv", "option"),
    [
        (["run", str(CONFIGS / "lab1_tiny_relu.yaml"), "-o", "{missing}/out.json"], "--output"),
        (["compare", "he", "--plot", "{missing}/p.png"], "--plot"),
        (["check", str(CONFIGS / "lab1_he_relu.yaml"), "--junit", "{missing}/j.xml"], "--junit"),
        (["sweep", "he", "--depth", "2,3", "-o", "{tmp}"], "--output"),
    ],
    ids=["run -o", "compare --plot", "check --junit", "sweep -o folder"],
)
def test_output_paths_are_checked_before_the_probe(
    cli: Any, argv: list[str], option: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from probe.cli import common

    def no_probe() -> None:
        raise AssertionError("the probe started before the output path was checked")

    monkeypatch.setattr(common, "load_torch", no_probe)
    for module in ("run", "compare", "check", "sweep"):
        monkeypatch.setattr(f"probe.cli.{module}.load_torch", no_probe)
    args = [a.format(missing=tmp_path / "nope", tmp=tmp_path) for a in argv]
    result = cli(*args)
    assert result.exit_code == 2, result.stderr
    assert option in result.stderr


def test_errors_are_not_hard_wrapped(cli: Any, tmp_path: Path) -> None:
    from probe.cli import app

    long_name = "x" * 30 + "/" + "y" * 60 + ".yaml"
    result = CliRunner().invoke(app, ["run", long_name], env={"COLUMNS": "80"})
    assert result.exit_code == 2
    error = [line for line in result.stderr.splitlines() if line.startswith("probe: error")]
    assert len(error) == 1 and long_name in error[0]
    # a spec that fails to run among others: its line too (check's err_line)
    failing = tmp_path / ("z" * 60) / "failing.yaml"
    failing.parent.mkdir()
    failing.write_text("model:\n  import: tests.models_for_tests:failing\n  input_shape: [3]\n")
    result = CliRunner().invoke(app, ["check", str(failing), "configs/lab1_he_relu.yaml"], env={"COLUMNS": "80"})
    assert result.exit_code == 2
    error = [line for line in result.stderr.splitlines() if line.startswith("probe: error")]
    assert len(error) == 1 and error[0].endswith("raised ValueError: cannot build a model of size 3"), result.stderr


def test_usage_errors_are_not_hard_wrapped() -> None:
    from probe.cli import app

    result = CliRunner().invoke(app, ["run", "a.yaml", "--format", "xml"], env={"COLUMNS": "80"})
    assert result.exit_code == 2
    error = [line for line in result.stderr.splitlines() if "Invalid value" in line]
    assert len(error) == 1 and error[0].endswith("'markdown', 'html'.")


def test_seed_and_set_reach_the_spec_on_run_and_compare(cli: Any) -> None:
    small = ["--set", "model.depth=2", "--set", "model.width=8", "--set", "data.batch_size=4"]
    ran = cli("run", str(CONFIGS / "lab1_tiny_relu.yaml"), "--seed", "3", *small, "-f", "json")
    assert ran.exit_code == 0, ran.stderr
    assert json.loads(ran.stdout)["spec"]["run"]["seed"] == 3
    compared = cli("compare", "he", *small, "--seed", "5", "-f", "json")
    assert compared.exit_code == 0, compared.stderr
    spec = json.loads(compared.stdout)["runs"][0]["spec"]
    assert spec["model"]["depth"] == 2 and spec["run"]["seed"] == 5


def test_check_reads_a_piped_spec_once() -> None:
    # /dev/stdin can be read once: check used to read it again to run, found it empty and probed
    # the default spec (a healthy He + ReLU network) instead of the one piped in
    spec = "model: {depth: 2, width: 16}\ninit: {weight: zeros}\ndata: {batch_size: 32}\n"
    out = subprocess.run(
        [sys.executable, "-m", "probe", "check", "/dev/stdin", "-f", "json"],
        input=spec,
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert out.returncode == 1, out.stderr
    (run,) = json.loads(out.stdout)["runs"]
    assert run["spec"]["model"]["width"] == 16 and "symmetry" in {p["rule"] for p in run["verdict"]["problems"]}


def test_one_invocation_leaves_nothing_to_the_next(cli: Any) -> None:
    """The session is per invocation: `--debug` on one command does not give the next a traceback."""
    debug = cli("--debug", "run", "no-such-spec.yaml")
    assert debug.exit_code != 0 and debug.exception is not None and not isinstance(debug.exception, SystemExit)
    plain = cli("run", "no-such-spec.yaml")
    assert plain.exit_code == 2 and isinstance(plain.exception, SystemExit), plain.output
    assert "no-such-spec.yaml" in plain.output


@pytest.mark.parametrize(
    ("args", "hint"),
    [
        (
            ["run", "configs/lab1_he_relu.yaml", "--html", "out.html"],
            "Hint: write html with -f html (to a file: -f html -o FILE)",
        ),
        (["check", "configs/lab1_he_relu.yaml", "--json"], "Hint: write json with -f json"),
        (
            ["compare", "he", "--model", "m:f"],
            "Hint: compare works on specs; probe a model of your own with probe run --model",
        ),
        (
            ["check", "configs/lab1_he_relu.yaml", "--threads", "2"],
            "give it before the command, probe --threads N check ...",
        ),
    ],
)
def test_a_mistyped_option_gets_a_hint(cli: Any, args: list[str], hint: str) -> None:
    result = cli(*args)
    assert result.exit_code == 2
    assert "No such option" in result.output and hint in result.output


def test_long_work_shows_its_count_the_running_part_and_the_time_left() -> None:
    """The progress bar of train/sweep/compare/check on a terminal: done of total, the part, an ETA."""
    import io

    from rich.console import Console

    from probe.cli.progress import Steps

    out = io.StringIO()
    steps = Steps(400, "training steps", Console(file=out, force_terminal=True, width=100))
    steps.label("he:relu")
    steps.advance(150)
    steps.bar.refresh()
    steps.close()
    text = out.getvalue()
    assert "training steps" in text and "150/400" in text and "he:relu" in text
    assert re.search(r"(\d+|-):(\d\d|--):(\d\d|--)", text)  # the time left (-:--:-- until a rate is known)
    quiet = io.StringIO()
    off = Steps(400, "training steps", Console(file=quiet, force_terminal=False))
    off.advance(10)
    off.close()
    assert quiet.getvalue() == ""  # not a terminal: nothing


def test_train_reports_every_optimizer_step() -> None:
    from probe.experiments import train as tr

    calls: list[int] = []
    labels: list[str] = []
    settings = tr.TrainSettings(64, 0.2, 0.25, "adam", 0.01, 7, 0)
    tr.train_many(tr.lab2_spec(), ["he:relu", "xavier:tanh"], settings, labels.append, calls.append)
    assert labels == ["he:relu", "xavier:tanh"] and calls == [1] * 14


def test_the_html_page_shows_the_cells_the_terminal_shows(cli: Any) -> None:
    """`probe run -f html`: the run table's columns (cos, role for a user model), its red cells, the
    verdict and the advice, as in the terminal."""
    broken = cli("run", "configs/lab1_tiny_relu.yaml", "-f", "html")
    assert broken.exit_code == 0, broken.output
    page = broken.stdout
    headers = re.findall(r"<th>([^<]*)</th>", page)
    assert headers[:10] == [
        "layer",
        "mean",
        "std",
        "zero",
        "dead",
        "sat",
        "nonfinite",
        "cos",
        "grad std",
        "W grad norm",
    ]
    assert re.search(r"<td class=bad>[^<]+</td>", page)  # the vanishing std cells
    assert "UNHEALTHY: vanishing" in page and "try: " in page
    own = cli("run", "--model", "docs.examples.my_cnn:build", "--input-shape", "3,32,32", "-f", "html").stdout
    assert "<th>type/role</th>" in own and "Conv2d/stream" in own
    assert "kind" not in re.findall(r"<th>([^<]*)</th>", own)


def test_compare_and_sweep_headers_describe_what_the_rows_share(cli: Any) -> None:
    """The header names the shared network and data; what the rows vary (init, activation, depth)
    is said to vary, not given the base spec's value, which no row may have."""
    compared = cli("compare", "tiny:tanh", "he:relu", "--depth", "3", "--width", "16")
    header = compared.stdout.splitlines()[0]
    assert header.startswith("compare: mlp 32 -> 16 x 3; init per row;") and "relu" not in header
    swept = cli("sweep", "he", "tiny", "--depth", "2,4", "--width", "16")
    header = swept.stdout.splitlines()[0]
    assert "x depth per row" in header and "init per row" in header and "he_normal" not in header
