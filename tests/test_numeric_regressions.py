"""Regression tests for the numeric bugs found in review (issue 12, items 11-15): each failed
before its fix."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from probe.measurement.run import run_probe
from probe.spec import parse


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_one_dimensional_output_zero_ratio(dtype: str) -> None:
    """A ``(batch,)`` head: its zero ratio and dead units are counts of its own output, whatever
    the dtype (float64 once kept the shared scratch buffer as the per-unit counts)."""
    spec = parse(
        {
            "model": {"import": "tests.models_for_tests:relu_head", "input_shape": [8]},
            "data": {"batch_size": 64, "batches": 3},
            "run": {"device": "cpu", "dtype": dtype, "seed": 1},
        }
    )
    report = run_probe(spec)
    head = report.layers[-1]
    assert head.module_type == "ReluHead"  # its unit dimension is the batch: counted per position
    # the reference: the same model, seed and batches, counted by hand
    from probe.measurement.run import data_stream, next_batch
    from probe.model.build import build_initialized

    with torch.random.fork_rng(devices=[]):
        built = build_initialized(spec, None)
    model = built.model.to(getattr(torch, dtype))
    gen = data_stream(spec)
    outs = []
    with torch.no_grad():
        for _ in range(spec.data.batches):
            batch = next_batch(spec, built, gen, torch.device("cpu"), getattr(torch, dtype))
            outs.append(model(*batch.args))
    y = torch.stack(outs)  # (batches, batch)
    assert head.zero_ratio == pytest.approx((y == 0).double().mean().item(), abs=1e-12)
    assert head.dead_units == pytest.approx((y == 0).all(dim=0).double().mean().item(), abs=1e-12)


@pytest.mark.parametrize("alpha", [0.0, 0.01, 0.039, 0.2, 1.0, 2.0])
def test_elu_saturation_matches_its_derivative(alpha: float) -> None:
    """ELU's saturated values are those whose derivative is under c * its peak; for alpha < c the
    whole negative side (and nothing else) is flat."""
    from probe.spec.activations import SATURATION_FRACTION, saturation

    x = torch.linspace(-6, 6, 120_001, dtype=torch.float64, requires_grad=True)
    y = torch.nn.functional.elu(x, alpha)
    (slope,) = torch.autograd.grad(y.sum(), x)
    truth = (slope < SATURATION_FRACTION * max(1.0, alpha)).double().mean().item()
    sat = saturation("elu", {"alpha": alpha})
    assert sat is not None and sat.high is None and sat.space == "output"
    measured = (y.detach().float() < sat.low).double().mean().item()
    assert measured == pytest.approx(truth, abs=2 / x.numel())  # the grid point at a boundary


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_lsuv_reads_the_output_before_an_inplace_activation(dtype: str) -> None:
    """The variance LSUV reaches is the Linear output's, read before the in-place ReLU after it
    overwrites that tensor (in float64, ``.double()`` returned the tensor itself: once 0.117 read
    where 0.341 was true). The probe that follows measures the same batches: its std^2 per row
    must be what LSUV says it left."""
    from probe.experiments import fix

    spec = parse(
        {
            "model": {"import": "tests.models_for_tests:inplace_relu", "kwargs": {"dtype": dtype}, "input_shape": [16]},
            "data": {"batch_size": 256},
            "run": {"device": "cpu", "dtype": dtype},
        }
    )
    fixed = fix.fix(spec, tolerance=0.01)
    rows = {row.name: row for row in fixed.after.layers}
    for layer in fixed.lsuv.layers:
        assert layer.status == "ok"
        row = rows[layer.name]
        population_var = row.std**2 * (row.count - 1) / row.count  # the probe's std is the sample std
        # float32: both sum the same float32 values in float64, in different orders: ~1e-7 apart
        assert population_var == pytest.approx(layer.variance_after, rel=1e-5)
        assert population_var == pytest.approx(1.0, abs=0.01)


def test_lsuv_leaves_batchnorm_buffers_alone() -> None:
    from probe.experiments import fix

    spec = parse(
        {
            "model": {"depth": 3, "width": 16, "norm": "batchnorm"},
            "data": {"batch_size": 32, "batches": 2},
            "run": {"device": "cpu"},
        }
    )
    state = fix.fix(spec).state_dict
    tracked = {k: int(v) for k, v in state.items() if k.endswith("num_batches_tracked")}
    assert tracked and set(tracked.values()) == {0}
    for key, value in state.items():
        if key.endswith("running_mean"):
            assert torch.equal(value, torch.zeros_like(value))
        if key.endswith("running_var"):
            assert torch.equal(value, torch.ones_like(value))


def test_nonfinite_gradients_are_counted_and_judged() -> None:
    """float16 tanh with N(0, 1) weights: the backward overflows in the first layers. Each row whose
    gradient std is nan has a positive ``grad_nonfinite`` and each finite one has 0; the nonfinite
    rule names the first such layer (once: grad_std nan, nonfinite 0, healthy on that rule)."""
    from probe.judge.rules import evaluate

    spec = parse(
        {
            "model": {"depth": 16, "width": 64, "activation": "tanh"},
            "init": {"weight": {"name": "normal", "std": 1.0}},
            "data": {"batch_size": 64},
            "run": {"device": "cpu", "dtype": "float16"},
        }
    )
    report = run_probe(spec)
    overflowed = [x for x in report.layers if x.grad_std is not None and x.grad_std != x.grad_std]
    assert overflowed, "the premise: float16 overflows in the backward pass"
    for x in report.layers:
        assert x.nonfinite == 0  # the forward stays finite (tanh is bounded)
        nan_grad = x.grad_std != x.grad_std or (
            x.weight_grad_norm is not None and x.weight_grad_norm != x.weight_grad_norm
        )
        assert (x.grad_nonfinite or 0) > 0 if nan_grad else x.grad_nonfinite == 0, x
    problems = {p.rule: p for p in evaluate(report).problems}
    assert "nonfinite" in problems and problems["nonfinite"].layer == overflowed[0].name
    assert "gradient" in problems["nonfinite"].message


def test_huge_gradients_are_counted_in_chunks_exactly(monkeypatch: Any) -> None:
    """A weight gradient of LARGE values or more is counted chunk by chunk, never copied whole
    (a Llama-3-70B-sized embedding's 1.05 billion values made a layer-by-layer run peak at 21 GiB):
    the counts equal the whole-tensor count, here and through the collector."""
    from probe.measurement import counts

    flat = torch.zeros(counts.CHUNK * 2 + 7)
    marks = [0, counts.CHUNK - 1, counts.CHUNK, counts.CHUNK * 2 + 6]  # both sides of each chunk edge
    flat[marks[:2]] = float("nan")
    flat[marks[2:]] = float("-inf")
    assert int(counts.nonfinite_in_chunks(flat, torch.float64)) == 4
    assert counts.nonfinite_in_chunks(flat, torch.float64).dtype == torch.float64

    spec = parse(
        {
            "model": {"depth": 16, "width": 64, "activation": "tanh"},
            "init": {"weight": {"name": "normal", "std": 1.0}},
            "data": {"batch_size": 64},
            "run": {"device": "cpu", "dtype": "float16"},
        }
    )
    whole = run_probe(spec)
    monkeypatch.setattr(counts, "LARGE", 1)  # every gradient and activation goes through the chunks
    chunked = run_probe(spec)
    assert [x.grad_nonfinite for x in chunked.layers] == [x.grad_nonfinite for x in whole.layers]
    assert any(x.grad_nonfinite for x in whole.layers)
