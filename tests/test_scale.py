"""Scale: the memory estimate and its --max-memory guard, thread choice, many-batch runs."""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

from probe import spec as spec_mod
from probe.cli import app
from probe.errors import RunError
from probe.measurement import estimate, memory, threads
from probe.measurement.run import run_probe


def _spec(**model: object) -> spec_mod.Spec:
    return spec_mod.parse({"model": {"depth": 4, "width": 64, **model}, "run": {"device": "cpu"}})


def test_estimate_grows_with_the_network_and_drops_without_backward() -> None:
    small, wide = estimate.estimate_memory(_spec()), estimate.estimate_memory(_spec(width=512))
    assert wide.weights > small.weights and wide.activations > small.activations
    forward_only = spec_mod.parse({"model": {"depth": 50, "width": 1024}, "run": {"backward": False}})
    with_backward = spec_mod.parse({"model": {"depth": 50, "width": 1024}})
    assert estimate.estimate_memory(forward_only).total < estimate.estimate_memory(with_backward).total


def test_guard_refuses_a_spec_over_the_limit_and_passes_one_under() -> None:
    big = spec_mod.parse({"model": {"depth": 50, "width": 4096}, "data": {"batch_size": 8192}})
    with pytest.raises(RunError, match="exceeds --max-memory 1 GiB"):
        memory.check_memory(big, 1)
    assert memory.guard_memory([_spec()], 1.0) == []  # small: no estimate printed, no refusal
    # an explicit limit above the estimate: the estimate is printed whatever memory is free now
    assert "estimated peak memory" in memory.guard_memory([big], 64.0)[0]
    with pytest.raises(RunError, match="side by side"):
        memory.guard_memory([_spec(width=2048)] * 4, 1.6, jobs=4)


def test_cli_refuses_before_running_with_exit_3() -> None:
    result = CliRunner().invoke(
        app, ["compare", "he:relu", "--depth", "50", "--width", "4096", "--batch-size", "65536", "--max-memory", "2"]
    )
    assert result.exit_code == 3
    assert "exceeds --max-memory 2 GiB" in result.output
    assert CliRunner().invoke(app, ["compare", "he:relu", "--max-memory", "-1"]).exit_code == 2


def test_small_networks_run_single_threaded_and_restore_the_count(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)  # set, torch's count is left as it is
    assert threads.threads_for(_spec()) == 1
    assert (
        threads.threads_for(spec_mod.parse({"model": {"depth": 50, "width": 1024}, "data": {"batch_size": 1024}}))
        is None
    )
    before = torch.get_num_threads()
    with threads.intra_op_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


def test_many_batches_accumulate_every_value() -> None:
    spec = spec_mod.parse(
        {"model": {"depth": 2, "width": 8}, "data": {"batches": 50, "batch_size": 4}, "run": {"device": "cpu"}}
    )
    report = run_probe(spec)
    assert report.first.count == 50 * 4 * 8
