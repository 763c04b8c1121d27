"""The benchmark harness still runs against the current code; its timing arithmetic is checked with a fake clock."""

from __future__ import annotations

import sys

import pytest
import torch

from tests.conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))

import common


def test_bare_and_probed_passes_run_on_a_tiny_network() -> None:
    spec = common.mlp_spec(depth=2, width=8, batch=4)
    built = common.built_model(spec)
    common.bare_pass(built, spec, torch.device("cpu"))
    layers = common.probed_pass(built, spec, torch.device("cpu"))
    assert [x.name for x in layers] == ["layer1", "layer2"]


def test_interleaved_ratio_measures_each_side(monkeypatch: pytest.MonkeyPatch) -> None:
    """With a clock that each call advances by a known amount (a: 1 s, b: 3 s), the harness must
    report exactly those times and their ratio, and call each side warmup + repeats times."""
    clock = [0.0]
    calls = {"a": 0, "b": 0}

    def a() -> None:
        calls["a"] += 1
        clock[0] += 1.0

    def b() -> None:
        calls["b"] += 1
        clock[0] += 3.0

    monkeypatch.setattr(common.time, "perf_counter", lambda: clock[0])
    ratio, a_s, b_s = common.interleaved_ratio(a, b, repeats=5, warmup=2)
    assert (ratio, a_s, b_s) == (3.0, 1.0, 3.0)
    assert calls == {"a": 7, "b": 7}


def test_steps_cost_runs_both_sides_on_a_tiny_network() -> None:
    """benchmarks/steps_cost.py: the reference (step-0 probe + K + 1 bare steps) and probe --steps K
    both run and are timed; the bare steps train their copy (the built model is left alone)."""
    import steps_cost

    model = {"depth": 2, "width": 8, "input_dim": 8, "output_dim": 3}
    spec = steps_cost.case_spec(model, 16, 2)
    built = common.built_model(spec)
    before = [p.detach().clone() for p in built.model.parameters()]
    copy = common.built_model(spec).model
    steps_cost.bare_training(copy, built, spec, 3)
    assert all(torch.equal(a, b) for a, b in zip(before, built.model.parameters(), strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(before, copy.parameters(), strict=True))
    ratio, ref_s, probe_s = steps_cost.measure(model, 16, repeats=1, k=2)
    assert ref_s > 0 and probe_s > 0 and ratio > 0


def test_the_whole_probe_benchmark_runs_its_passes() -> None:
    """Both sides of ``whole_probe.py`` run on a tiny config: the bare build + forward + backward
    and ``probe.run_probe``."""
    pytest.importorskip("transformers")
    import whole_probe

    spec = whole_probe.spec_of("gpt2", {"n_layer": 1, "n_embd": 16, "n_head": 2, "vocab_size": 40})
    bare, probed = whole_probe.passes(spec)
    bare()
    probed()
