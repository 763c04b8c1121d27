"""The runner end to end: determinism, devices and dtypes, and the seed's Lab 1 outcome."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch

from probe.errors import RunError
from probe.judge import rules
from probe.measurement.run import resolve_device, run_probe

SMALL = {"model": {"depth": 3, "width": 32}, "data": {"batch_size": 64}}


def test_same_spec_and_seed_give_identical_numbers(make_spec: Any) -> None:
    a = run_probe(make_spec(**SMALL))
    b = run_probe(make_spec(**SMALL))
    assert a.layers == b.layers


def test_another_seed_gives_other_numbers(make_spec: Any) -> None:
    a = run_probe(make_spec(**SMALL))
    b = run_probe(make_spec(**SMALL, run={"seed": 1}))
    assert a.layers[0].std != b.layers[0].std


def test_the_callers_random_state_is_untouched(make_spec: Any) -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    run_probe(make_spec(**SMALL))
    assert torch.equal(torch.rand(3), expected)


def test_output_gradient_has_unit_scale(make_spec: Any) -> None:
    report = run_probe(make_spec(model={"depth": 2, "width": 64, "output_dim": 64}, data={"batch_size": 256}))
    out = report.last
    assert out.kind == "output"
    # d loss / d output = r ~ N(0, 1): its sample std over n values is 1 within a few sqrt(1/(2n))
    assert out.grad_std == pytest.approx(1.0, abs=5 / math.sqrt(2 * out.count))


def test_backward_false_measures_no_gradients(make_spec: Any) -> None:
    report = run_probe(make_spec(**SMALL, run={"backward": False}))
    assert all(x.grad_std is None and x.weight_grad_norm is None for x in report.layers)
    assert all(x.std > 0 for x in report.layers)


def test_a_linear_lecun_network_keeps_unit_variance(make_spec: Any) -> None:
    """Var(W) = 1/fan_in and no nonlinearity: each layer keeps the input's unit variance in
    expectation. At finite width each layer's variance gain fluctuates with relative std about
    sqrt(2/width); the batch adds sqrt(2/(batch*width)). The std's tolerance is half the
    variance's, at 5 standard errors."""
    width, depth, batch = 512, 3, 1024
    spec = make_spec(
        model={"depth": depth, "width": width, "input_dim": width, "activation": "identity"},
        init={"weight": "lecun_normal"},
        data={"batch_size": batch},
    )
    report = run_probe(spec)
    rel_var_err = math.sqrt(depth * 2 / width + 2 / (batch * width))
    assert report.last.std == pytest.approx(1.0, rel=5 * rel_var_err / 2)


def test_uniform_inputs_have_unit_variance(make_spec: Any) -> None:
    spec = make_spec(
        model={"depth": 1, "width": 256, "input_dim": 256, "activation": "identity"},
        init={"weight": "lecun_normal"},
        data={"batch_size": 1024, "distribution": "uniform"},
    )
    assert run_probe(spec).first.std == pytest.approx(1.0, rel=5 * math.sqrt(2 / 256) / 2)


def test_more_batches_accumulate_more_values(make_spec: Any) -> None:
    one = run_probe(make_spec(**SMALL))
    three = run_probe(make_spec(model=SMALL["model"], data={"batch_size": 64, "batches": 3}))
    assert three.first.count == 3 * one.first.count


@pytest.mark.parametrize("dtype", ["float64", "bfloat16", "float16"])
def test_other_dtypes_run(make_spec: Any, dtype: str) -> None:
    report = run_probe(make_spec(**SMALL, run={"dtype": dtype}))
    assert report.dtype == dtype
    assert all(math.isfinite(x.std) and x.std > 0 for x in report.layers)


@pytest.mark.parametrize("norm", ["batchnorm", "layernorm"])
def test_normalized_networks_keep_unit_scale(make_spec: Any, norm: str) -> None:
    # with 'large' weights the signal would explode; a norm layer before each ReLU resets it
    report = run_probe(make_spec(model={"depth": 6, "width": 64, "norm": norm}, init={"weight": "large"}))
    verdict = rules.evaluate(report)
    assert "exploding" not in {p.rule for p in verdict.problems}
    # ReLU of a unit-variance symmetric input has std sqrt(1/2 - 1/(2 pi)) ~= 0.58
    assert report.last.std == pytest.approx(math.sqrt(0.5 - 1 / (2 * math.pi)), rel=0.15)


def test_cuda_unavailable_is_a_run_error() -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(RunError, match="CUDA is not available"):
        resolve_device("cuda")


def test_auto_device_falls_back_to_cpu() -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert resolve_device("auto").type in ("cpu", "mps")


# The seed's Lab 1 (../shared/seeds/001, "Probe Signals Before Training"), with the default gate.
LAB1 = [
    ("tiny", "relu", {"vanishing"}),
    ("large", "tanh", {"saturation"}),
    ("xavier", "tanh", set()),
    ("he", "relu", set()),
    ("zeros", "relu", {"symmetry"}),
]


@pytest.mark.parametrize(("strategy", "activation", "must_fail"), LAB1, ids=[f"{s}+{a}" for s, a, _ in LAB1])
@pytest.mark.parametrize("seed", [0, 7])
def test_seed_lab1_outcome(make_spec: Any, strategy: str, activation: str, must_fail: set[str], seed: int) -> None:
    spec = make_spec(model={"activation": activation}, init={"weight": strategy}, run={"seed": seed})
    verdict = rules.evaluate(run_probe(spec))
    broken = {p.rule for p in verdict.problems}
    if must_fail:
        assert must_fail <= broken
    else:
        assert verdict.healthy, verdict.problems


def test_seed_lab1_signal_shape(make_spec: Any) -> None:
    """The seed's printed pattern: tiny fades to ~0, large+tanh saturates most values, xavier+tanh
    keeps a controlled scale, He+ReLU keeps ~half zeros with the signal reaching the last layer."""
    runs = {
        (s, a): run_probe(make_spec(model={"activation": a}, init={"weight": s}))
        for s, a in [("tiny", "relu"), ("large", "tanh"), ("xavier", "tanh"), ("he", "relu")]
    }
    tiny, large, xavier, he = runs.values()
    # tiny: each ReLU layer multiplies the std by about sqrt(128 * 0.01^2 / 2) = 0.08
    assert tiny.last.std < 0.08**6
    assert large.last.saturation_ratio is not None and large.last.saturation_ratio > 0.5
    assert 0.05 < xavier.last.std < xavier.first.std < 1.0
    assert he.last.zero_ratio == pytest.approx(0.5, abs=0.1)
    assert 0.2 < he.last.std / he.first.std < 5
