"""--jobs: worker processes give the same runs, in the same order, as one process."""

from __future__ import annotations

import json
import math

import pytest
from typer.testing import CliRunner

from probe import spec as spec_mod
from probe.cli import app
from probe.errors import RunError
from probe.experiments import batch
from probe.experiments.parallel import parallel_map


def _fail_on_negative(x: float) -> float:
    if x < 0:
        raise RunError(f"negative: {x}")
    return math.sqrt(x)


def test_one_job_runs_in_process_and_reports_progress() -> None:
    seen: list[int] = []
    assert parallel_map(_fail_on_negative, [4.0, 9.0], 1, seen.append) == [2.0, 3.0]
    assert seen == [0, 1]


def test_jobs_must_be_positive() -> None:
    with pytest.raises(ValueError, match="jobs must be >= 1"):
        parallel_map(_fail_on_negative, [1.0], 0)


def test_compare_in_two_workers_matches_one_process() -> None:
    base = spec_mod.parse({"model": {"depth": 3, "width": 16}, "data": {"batch_size": 32}, "run": {"device": "cpu"}})
    entries = [batch.parse_entry(e) for e in ("tiny:relu", "xavier:tanh", "he:relu")]
    serial = batch.compare(base, entries)
    parallel = batch.compare(base, entries, jobs=2)
    assert [r.label for r in parallel] == [r.label for r in serial]
    for a, b in zip(parallel, serial, strict=True):
        assert a.report.layers == b.report.layers
        assert a.verdict == b.verdict
    # a worker's ProbeError reaches the parent with its type (and so its exit code)
    with pytest.raises(RunError, match="negative"):
        parallel_map(_fail_on_negative, [1.0, -1.0], 2)


def test_cli_jobs_option() -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["compare", "tiny:relu", "he:relu", "--depth", "3", "--jobs", "2", "-f", "json"])
    assert result.exit_code == 0, result.output
    assert [r["label"] for r in json.loads(result.stdout)["runs"]] == ["tiny:relu", "he:relu"]
    bad = runner.invoke(app, ["compare", "he:relu", "--jobs", "0"])
    assert bad.exit_code == 2


def test_cli_sweep_in_two_workers_gives_the_serial_grid() -> None:
    runner = CliRunner()
    args = ["sweep", "--depth", "2,4", "tiny:relu", "he:relu", "--width", "16", "-f", "json"]
    serial = runner.invoke(app, args)
    parallel = runner.invoke(app, [*args, "--jobs", "2"])
    assert serial.exit_code == 0 and parallel.exit_code == 0, parallel.output
    cells = json.loads(parallel.stdout)["cells"]
    assert [(c["run"], c["depth"]) for c in cells] == [
        ("tiny:relu", 2),
        ("he:relu", 2),
        ("tiny:relu", 4),
        ("he:relu", 4),
    ]
    assert json.loads(parallel.stdout) == json.loads(serial.stdout)


def test_cli_sweep_max_memory_refuses_before_any_run() -> None:
    result = CliRunner().invoke(app, ["sweep", "--depth", "8,64", "--width", "8192", "he", "--max-memory", "1"])
    assert result.exit_code == 3
    assert "exceeds --max-memory 1 GiB" in result.output
