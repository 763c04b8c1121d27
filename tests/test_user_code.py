"""User code cannot steer probe's exit code, and what it may run is bounded (issue 12, items 4, 5, 16)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from probe.errors import BuildError
from probe.model.user_model import load_object

FAST = ["--set", "data.batch_size=4", "--set", "run.device=cpu"]


def _write_spec(tmp_path: Path, factory: str, **kwargs: Any) -> Path:
    args = ", ".join(f"{k}: {v}" for k, v in kwargs.items())
    path = tmp_path / f"{factory.rpartition(':')[2]}.yaml"
    path.write_text(
        f"model: {{import: '{factory}', kwargs: {{{args}}}, input_shape: [4]}}\n"
        "data: {batch_size: 4}\nrun: {device: cpu}\n"
    )
    return path


@pytest.mark.parametrize(
    ("factory", "kwargs", "raised"),
    [
        ("tests.models_for_tests:exits_in_forward", {"raises": "exit0"}, r"SystemExit\(0\)"),
        ("tests.models_for_tests:exits_in_forward", {"raises": "interrupt"}, "KeyboardInterrupt"),
        ("tests.models_for_tests:exits_in_forward", {"raises": "other"}, "GeneratorExit: leaked"),
        ("tests.models_for_tests:exits_in_factory", {"code": 0}, r"SystemExit\(0\)"),
    ],
    ids=["sys.exit-in-forward", "keyboardinterrupt-in-forward", "generatorexit", "sys.exit-in-factory"],
)
def test_base_exceptions_from_user_code_are_exit_3(
    cli: Callable[..., Any], tmp_path: Path, factory: str, kwargs: dict[str, Any], raised: str
) -> None:
    import re

    bad = _write_spec(tmp_path, factory, **kwargs)
    # a healthy spec first: a sys.exit(0) in the second must not make the whole gate pass
    result = cli("check", "configs/lab1_he_relu.yaml", str(bad), *FAST)
    assert result.exit_code == 3, result.output
    assert re.search(raised, result.output), result.output
    assert "exits_in_f" in result.output  # which model


def test_a_probe_error_subclass_raised_by_user_code_cannot_choose_the_exit_code(cli: Callable[..., Any]) -> None:
    # a model raising its own subclass of probe's SpecError with exit_code = 0 must not pass the gate
    result = cli("run", "--model", "tests.models_for_tests:sneaky_forward", "--input-shape", "4", *FAST)
    assert result.exit_code in (2, 3) and "Healthy" in result.output, result.output
    # wherever such an error escapes to the guard (a factory, the memory estimate), it is user code's: exit 3
    from probe.cli.guard import _guarded
    from probe.cli.session import Session
    from probe.errors import SpecError

    class Healthy(SpecError):
        exit_code = 0

    def body() -> int:
        raise Healthy("all good")

    assert _guarded(body, Session()) == 3


def test_run_reports_the_model_that_exited(cli: Callable[..., Any]) -> None:
    result = cli("run", "--model", "tests.models_for_tests:exits_in_forward", "--input-shape", "4", *FAST)
    assert result.exit_code == 3 and "SystemExit(0)" in result.output


def test_ctrl_c_is_exit_130_with_one_line(cli: Callable[..., Any], monkeypatch: pytest.MonkeyPatch) -> None:
    import os
    import signal

    from probe.measurement import run as run_mod

    def interrupted(*args: Any, **kwargs: Any) -> Any:
        os.kill(os.getpid(), signal.SIGINT)  # a real Ctrl-C, delivered to probe's handler
        raise AssertionError("the signal handler should have raised")

    monkeypatch.setattr(run_mod, "_probe", interrupted)
    result = cli("run", "configs/lab1_tiny_relu.yaml", *FAST)
    assert result.exit_code == 130
    assert result.output.strip() == "probe: interrupted"


@pytest.mark.parametrize(
    "path",
    [
        "os:system",
        "subprocess:run",
        "subprocess:Popen",
        "builtins:exec",
        "builtins:eval",
        "shutil:rmtree",
        "posix:system",
    ],
)
def test_standard_library_factories_are_refused(path: str) -> None:
    with pytest.raises(BuildError, match="standard library"):
        load_object(path, "model.import")


def test_a_reexported_stdlib_callable_is_refused_by_origin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "innocent_pkg.py").write_text("from os import system as build\nimport subprocess\n")
    monkeypatch.chdir(tmp_path)  # the module is the project's own: its re-exports are not
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(BuildError, match=r"defined in 'posix', part of the Python standard library"):
        load_object("innocent_pkg:build", "model.import")
    with pytest.raises(BuildError, match=r"reaches module 'subprocess' through an attribute"):
        load_object("innocent_pkg:subprocess.check_call", "model.import")


def test_model_libraries_and_user_code_are_allowed() -> None:
    assert load_object("torch.nn:Linear", "model.import").__name__ == "Linear"
    assert callable(load_object("tests.models_for_tests:awkward", "model.import"))


def test_os_system_never_runs(cli: Callable[..., Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "s.yaml").write_text(
        'model: {import: "os:system", kwargs: {command: "touch PWNED"}, input_shape: [4]}\n'
    )
    result = cli("check", str(tmp_path / "s.yaml"))
    assert result.exit_code == 2 and "standard library" in result.output
    assert not (tmp_path / "PWNED").exists()


def test_a_model_that_is_one_module(cli: Callable[..., Any]) -> None:
    result = cli(
        "run",
        "--model",
        "torch.nn:Linear",
        "--model-arg",
        "in_features=8",
        "--model-arg",
        "out_features=8",
        "--input-shape",
        "8",
        "-f",
        "json",
        *FAST,
    )
    assert result.exit_code == 0, result.output
    import json

    rows = json.loads(result.stdout)["layers"]
    assert [r["name"] for r in rows] == ["Linear"]


def test_an_output_without_gradient_gets_a_sentence(cli: Callable[..., Any]) -> None:
    result = cli("run", "--model", "tests.models_for_tests:frozen", "--input-shape", "4", *FAST)
    assert result.exit_code == 3
    assert "has no gradient" in result.output and "run.backward: false" in result.output
    assert "element 0" not in result.output


@pytest.mark.parametrize("output", ["dataclass", "scalar"])
def test_an_output_in_a_dataclass_or_a_scalar_is_probed(cli: Callable[..., Any], output: str) -> None:
    """A forward returning its own dataclass, or one scalar (a loss it computes), is measured and
    judged as a tensor output is: the backward starts from the dataclass's float tensors, or from
    the scalar itself; zero weights are caught behind either."""
    import json

    import torch

    import probe
    from tests.models_for_tests import OutputKinds

    args = ("--model", "tests.models_for_tests:OutputKinds", "--model-arg", f"output={output}")
    result = cli("run", *args, "--input-shape", "32", "-f", "json", *FAST)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["verdict"]["healthy"], report["verdict"]
    assert [r["name"] for r in report["layers"]][-1] == "head"
    torch.manual_seed(0)
    broken = probe.measure(OutputKinds(output, init="zeros"), (32,), batch_size=16)
    assert {p.rule for p in broken.problems} & {"vanishing", "symmetry", "dead_units"}


def test_a_row_whose_output_is_one_number_is_noted_not_measured(cli: Callable[..., Any]) -> None:
    """A module (here the model itself, holding a 0-d scale) whose output is one number for the whole
    batch has no values per sample: it was watched and every hook failed (integer modulo by zero,
    exit 3); it is now a note, and the rows before it are measured."""
    args = ("--model", "tests.models_for_tests:OutputKinds", "--model-arg", "output=scalar")
    result = cli("run", *args, "--model-arg", "own_scale=true", "--input-shape", "32", *FAST)
    assert result.exit_code == 0, result.output
    assert "one number for the whole batch" in result.output and "verdict: healthy" in result.output


def test_an_output_with_no_float_tensor_says_what_it_holds(cli: Callable[..., Any]) -> None:
    result = cli(
        "run",
        "--model",
        "tests.models_for_tests:OutputKinds",
        "--model-arg",
        "output=ints",
        "--input-shape",
        "32",
        *FAST,
    )
    assert result.exit_code == 3
    assert "no floating-point tensor (found: Tensor)" in result.output and "return the logits" in result.output


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")
def test_torchscript_parts_are_noted_and_a_scripted_model_is_refused_with_why(cli: Callable[..., Any]) -> None:
    result = cli("run", "--model", "tests.models_for_tests:PartlyScripted", "--input-shape", "32", *FAST)
    assert result.exit_code == 0, result.output
    assert "inside a TorchScript module" in result.output and "first.0" in result.output
    refused = cli("run", "--model", "tests.models_for_tests:scripted", "--input-shape", "32", *FAST)
    assert refused.exit_code == 2, refused.output
    assert "TorchScript" in refused.output and "before torch.jit.script" in refused.output


def test_a_factory_out_of_memory_is_exit_3(cli: Callable[..., Any]) -> None:
    result = cli("run", "--model", "tests.models_for_tests:out_of_memory", "--input-shape", "4", *FAST)
    assert result.exit_code == 3 and "ran out of memory" in result.output


def _group_loads_torch(group: int) -> bool:
    """Whether a process of the process group ``group`` has mapped libtorch."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            if int(stat.rsplit(")", 1)[1].split()[2]) == group and "libtorch" in (entry / "maps").read_text():
                return True
        except (OSError, ValueError, IndexError):
            continue
    return False


@pytest.mark.parametrize(
    ("args", "delay_s"),
    [
        ([], 0.0),  # while torch imports
        (["--jobs", "2", "configs/lab1_tiny_relu.yaml"], 2.0),  # while spawned workers start or run
    ],
    ids=["during-import", "jobs-workers"],
)
def test_ctrl_c_in_a_real_process(args: list[str], delay_s: float) -> None:
    """The terminal sends SIGINT to the whole process group: one line, exit 130, no traceback."""
    import os
    import signal
    import subprocess
    import sys
    import time

    command = "check" if args else "run"
    argv = [sys.executable, "-m", "probe", command, "configs/lab1_he_relu.yaml", *args, "--set", "data.batches=5000"]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    # wait until torch is being loaded in the group (probe's handler is in place by then; the
    # parent of a check never loads it: its children do), however slow the machine: a SIGINT
    # while Python itself starts is Python's, not probe's
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None and not _group_loads_torch(proc.pid):
        time.sleep(0.02)
    time.sleep(delay_s)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err.decode()
    assert err.decode() == "probe: interrupted\n"


def test_sigterm_to_a_check_with_workers_ends_the_workers_too() -> None:
    """A CI cancel sends SIGTERM to probe alone (not its group): the spawned workers end with it,
    one line, exit 143."""
    import os
    import signal
    import subprocess
    import sys
    import time

    argv = [sys.executable, "-m", "probe", "check", "configs/lab1_he_relu.yaml", "configs/lab1_tiny_relu.yaml"]
    argv += ["--jobs", "2", "--set", "data.batches=20000"]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)

    def children() -> list[int]:
        found = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    stat = Path(f"/proc/{entry}/stat").read_text()
                except OSError:
                    continue
                if int(stat.rsplit(")", 1)[1].split()[1]) == proc.pid:
                    found.append(int(entry))
        return found

    deadline = time.monotonic() + 120
    workers: list[int] = []
    while time.monotonic() < deadline and proc.poll() is None:
        # the children of the isolated gate (probe.experiments.isolated), one per spec
        workers = [
            p for p in children() if "experiments.child" in Path(f"/proc/{p}/cmdline").read_text(errors="replace")
        ]
        if len(workers) >= 2:
            break
        time.sleep(0.1)
    assert len(workers) >= 2, "the workers did not start"
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err.decode()
    assert err.decode() == "probe: terminated\n"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(Path(f"/proc/{p}").exists() for p in workers):
        time.sleep(0.1)
    alive = [
        p for p in workers if Path(f"/proc/{p}").exists() and "Z" not in Path(f"/proc/{p}/stat").read_text().split()[2]
    ]
    assert not alive, f"workers left running: {alive}"


def test_a_model_that_clears_probes_hooks_is_not_reported_as_measured(cli: Callable[..., Any]) -> None:
    # the hooks survive discovery's pass, then the model clears them: rows of mean 0 / std 0 must not
    # be judged as if measured (issue 23, item 4)
    args = ("run", "--model", "tests.models_for_tests:clears_hooks", "--model-arg", "spared=1", "--input-shape", "8")
    result = cli(*args, *FAST)
    assert result.exit_code == 3, result.output
    assert "nothing was measured" in " ".join(result.output.split())
    assert cli(*args[:4], "spared=2", *args[5:], *FAST).exit_code == 0  # measured before the hooks went
