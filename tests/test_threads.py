"""One thread policy for every command and model kind; --jobs N agrees with --jobs 1 (issue 12, item 9)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from probe.measurement import threads
from probe.spec import parse


@pytest.fixture(autouse=True)
def _policy(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    yield
    threads.set_threads(None)


@pytest.mark.parametrize(
    ("model", "small"),
    [
        ({"kind": "mlp", "width": 32}, True),
        ({"kind": "mlp", "width": 2048, "depth": 16}, False),
        ({"kind": "conv", "width": 8, "image_size": 8}, True),
        ({"kind": "conv", "width": 64, "image_size": 32}, False),
        ({"kind": "residual", "width": 32}, True),
        ({"kind": "transformer", "width": 32, "heads": 2, "seq_len": 8}, True),
        ({"kind": "transformer", "width": 512, "seq_len": 256}, False),
        ({"kind": "lstm", "width": 16, "seq_len": 8}, True),
        ({"kind": "gru", "width": 512, "seq_len": 256}, False),
    ],
)
def test_policy_covers_every_kind(model: dict[str, Any], small: bool) -> None:
    spec = parse({"model": model, "data": {"batch_size": 64}})
    macs = threads.work_macs(spec)
    assert macs is not None and (macs < threads.SINGLE_THREAD_MACS) == small
    assert threads.threads_for(spec) == (1 if small else None)


def test_explicit_threads_and_omp_win(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = parse({"model": {"width": 32}})
    threads.set_threads(3)
    assert threads.threads_for(spec) == 3
    threads.set_threads(None)
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert threads.threads_for(spec) is None  # torch read OMP_NUM_THREADS at start: leave its count


def test_user_model_work_from_its_parameters() -> None:
    from tests.models_for_tests import deep_tanh_mlp

    spec = parse({"model": {"import": "tests.models_for_tests:deep_tanh_mlp", "input_shape": [16]}})
    assert threads.work_macs(spec) is None
    assert threads.threads_for(spec, deep_tanh_mlp()) == 1


def test_cli_threads_option(cli: Callable[..., Any]) -> None:
    import torch

    before = torch.get_num_threads()
    ok = cli("--threads", "1", "run", "configs/lab1_tiny_relu.yaml", "--set", "run.device=cpu", "-f", "json")
    assert ok.exit_code == 0, ok.output
    assert torch.get_num_threads() == before  # restored after the run
    assert cli("--threads", "0", "run", "configs/lab1_tiny_relu.yaml").exit_code == 2


def test_jobs_agree_with_one_process_on_threaded_work(cli: Callable[..., Any]) -> None:
    """Work large enough for several threads: each worker has fewer than the parent, so sums are
    reduced in another order. The documented tolerance (1e-4 relative) holds and the verdicts are
    the same."""
    args = ["compare", "he:relu", "tiny:relu", "--depth", "4", "--width", "512", "--batch-size", "1024", "-f", "json"]
    spec = parse({"model": {"depth": 4, "width": 512}, "data": {"batch_size": 1024}})
    assert threads.threads_for(spec) is None  # the premise: threaded work
    one, two = cli(*args), cli(*args, "--jobs", "2")
    assert one.exit_code == two.exit_code == 0, two.output
    runs_one, runs_two = json.loads(one.stdout)["runs"], json.loads(two.stdout)["runs"]
    for a, b in zip(runs_one, runs_two, strict=True):
        assert a["verdict"]["healthy"] == b["verdict"]["healthy"]
        assert [p["rule"] for p in a["verdict"]["problems"]] == [p["rule"] for p in b["verdict"]["problems"]]
        for la, lb in zip(a["layers"], b["layers"], strict=True):
            for key in ("std", "grad_std", "zero_ratio", "weight_grad_norm"):
                assert lb[key] == pytest.approx(la[key], rel=1e-4, abs=1e-12), key
