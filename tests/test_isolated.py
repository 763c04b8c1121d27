"""The gate decides outside user code (issue 23, item 2): ``probe check`` and ``probe run`` run the
user's code in a child process and judge its statistics in the parent."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from probe.experiments.wire import WireError, decode, encode
from tests.conftest import REPO

# each factory builds a zero-initialized MLP (nothing flows: unhealthy) and then misbehaves
HOSTILE = """
import atexit, os, signal
import torch
from torch import nn

with open(os.environ["PROBE_TEST_MARKS"], "a") as marks:  # who imported this module
    marks.write(f"{os.getpid()}\\n")


class Zeroed(nn.Module):
    def __init__(self, how=""):
        super().__init__()
        self.how = how
        self.a = nn.Linear(4, 8)
        self.b = nn.Linear(8, 2)
        for p in self.parameters():
            nn.init.zeros_(p)

    def forward(self, x):
        if self.how == "exit":
            os._exit(0)
        if self.how == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        if self.how == "patch":
            import probe.judge.rules as rules

            rules.evaluate = lambda stats: rules.Verdict(True, ())
        return self.b(torch.relu(self.a(x)))


def exits():
    return Zeroed("exit")


def killed():
    return Zeroed("kill")


def patches():
    return Zeroed("patch")


def exits_at_exit():
    atexit.register(os._exit, 0)
    return Zeroed()


def healthy():
    return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2))
"""


def _project(tmp_path: Path) -> Path:
    (tmp_path / "hostile.py").write_text(HOSTILE)
    for name in ("exits", "killed", "patches", "exits_at_exit", "healthy"):
        (tmp_path / f"{name}.yaml").write_text(
            f"name: {name}\nmodel: {{import: 'hostile:{name}', input_shape: [4]}}\n"
            "data: {batch_size: 4, batches: 1}\nrun: {device: cpu}\n"
        )
    return tmp_path


def _probe(tmp_path: Path, *args: str, flags: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    """``python FLAGS -m probe ARGS`` in ``tmp_path`` (the command's own process, as CI runs it)."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "PROBE_TEST_MARKS": str(tmp_path / "marks.txt"), "COLUMNS": "300"}
    env.pop("PROBE_DEBUG", None)
    return subprocess.run(
        [sys.executable, *flags, "-m", "probe", *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_user_code_cannot_end_or_steer_the_check_gate(tmp_path: Path) -> None:
    project = _project(tmp_path)
    specs = ["exits.yaml", "killed.yaml", "patches.yaml", "exits_at_exit.yaml", "healthy.yaml"]
    done = _probe(project, "check", *specs, "--jobs", "2", "--junit", "probe.xml")
    out = done.stdout + done.stderr
    # os._exit(0) in forward and SIGKILL: no report, exit 3 naming each spec; before, exit 0
    assert done.returncode == 3, out
    assert "exits.yaml: its probe process ended without a report (exit status 0" in out, out
    assert "killed.yaml: its probe process ended without a report (killed by SIGKILL" in out, out
    # patching the rules and an atexit os._exit(0) change the child only: both judged unhealthy here
    assert "1 healthy, 2 unhealthy, 2 failed to run" in out, out
    assert "patches.yaml: vanishing" in out and "exits_at_exit.yaml: vanishing" in out, out
    junit = (project / "probe.xml").read_text()
    assert junit.count("<testcase") == 5 and junit.count("<failure") + junit.count("<error") == 4, junit
    # the parent never imported the user's module: every import happened in another process
    pids = {int(line) for line in (project / "marks.txt").read_text().split()}
    assert len(pids) == 5, pids  # one child per spec (several imports would share a process)
    assert done.args and os.getpid() not in pids


def test_user_code_cannot_end_a_run_with_exit_0(tmp_path: Path) -> None:
    project = _project(tmp_path)
    done = _probe(project, "run", "exits.yaml", "-f", "json")
    assert done.returncode == 3, done.stdout + done.stderr
    assert "exits: its probe process ended without a report" in done.stderr, done.stderr
    ran = _probe(project, "run", "patches.yaml", "-f", "json", flags=("-X", "importtime"))
    assert ran.returncode == 0, ran.stderr
    assert json.loads(ran.stdout)["verdict"]["healthy"] is False  # judged here, not by the patched rules
    # the parent judges without torch (one torch import per spec, the child's): -X importtime lists the
    # parent's imports only, the child is started without it
    imported = re.findall(r"^import time:.*\| ( *)(\S+)$", ran.stderr, flags=re.M)
    assert ("", "probe.judge.rules") in imported and all(name != "torch" for _, name in imported), ran.stderr


def test_an_exit_code_set_on_a_probe_error_instance_is_not_read(cli: Callable[..., Any], tmp_path: Path) -> None:
    # in one process too (a CliRunner): the guard reads the code from probe's class, 2 or 3 only
    from probe.cli.guard import _guarded
    from probe.cli.session import Session
    from probe.errors import RunError

    error = RunError("fine")
    error.exit_code = 0  # type: ignore[misc]

    def body() -> int:
        raise error

    assert _guarded(body, Session()) == 3


def _stats() -> Any:
    from probe import spec as spec_mod
    from probe.measurement.run import run_probe

    spec = spec_mod.parse({"model": {"depth": 2, "width": 8}, "data": {"batch_size": 4, "batches": 1}})
    return run_probe(spec)


def test_statistics_cross_as_plain_data_and_come_back_equal() -> None:
    from probe.records import Stats

    stats = _stats()
    data = json.loads(json.dumps(encode(stats, skip=("spec",))))
    assert "spec" not in data
    again = decode(Stats, data, {"spec": stats.spec})
    assert again == stats
    # a field of the wrong type, an unknown field or a missing one is refused, not guessed at
    layer = data["layers"][0]
    for broken in ({**layer, "std": "0.5"}, {**layer, "extra": 1}, {k: v for k, v in layer.items() if k != "std"}):
        with pytest.raises(WireError):
            decode(Stats, {**data, "layers": [broken]}, {"spec": stats.spec})
    nan = decode(Stats, {**data, "layers": [{**layer, "std": math.nan}]}, {"spec": stats.spec})
    assert math.isnan(nan.layers[0].std)  # NaN is a measurement: it crosses (and fails its rule)


COUNTED = """
import os
from torch import nn


def made():
    with open(os.environ["PROBE_TEST_CALLS"], "a") as calls:  # one line per call
        calls.write("call\\n")
    return nn.Sequential(*[nn.Sequential(nn.Linear(16, 16), nn.ReLU()) for _ in range(3)], nn.Linear(16, 4))
"""


@pytest.mark.parametrize("mode", [[], ["--layer-by-layer"]], ids=["whole", "layer-by-layer"])
def test_the_child_calls_a_user_factory_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: list[str]) -> None:
    """In its child process a run estimates the model it builds, as in one process: the factory
    runs once, layer by layer too (it ran twice there: a meta build for the estimate first)."""
    (tmp_path / "counted.py").write_text(COUNTED)
    calls = tmp_path / "calls.txt"
    monkeypatch.setenv("PROBE_TEST_CALLS", str(calls))
    done = _probe(tmp_path, "run", "--model", "counted:made", "--input-shape", "16", *mode, "-f", "json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["verdict"]["healthy"]
    assert calls.read_text().splitlines() == ["call"]
