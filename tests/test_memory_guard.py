"""The memory estimate of every model kind (meta device) and the default guard (issue 12, item 6)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest

from probe.errors import RunError
from probe.measurement import estimate, estimate_layerwise, estimate_meta, memory
from probe.spec import parse

KINDS = {
    "conv": {"image_size": 8, "width": 8},
    "residual": {"width": 16},
    "transformer": {"width": 16, "heads": 2, "seq_len": 8},
    "lstm": {"width": 8, "seq_len": 4},
    "gru": {"width": 8, "seq_len": 4},
}


def _spec(kind: str, **model: Any) -> Any:
    return parse({"model": {"kind": kind, "depth": 2, **KINDS.get(kind, {}), **model}, "data": {"batch_size": 8}})


def test_meta_measure_agrees_with_the_mlp_arithmetic() -> None:
    """Two independent estimates of the same MLP: the parameter bytes are identical, and the
    activations autograd may keep (every op output) are within the arithmetic's per-layer count
    (input, pre-activation, activation) plus the final output."""
    spec = parse({"model": {"depth": 4, "width": 64, "input_dim": 32}, "data": {"batch_size": 16}})
    shapes, arithmetic = estimate_meta.estimate_shapes_memory(spec), estimate.estimate_memory(spec)
    assert shapes.weights == arithmetic.weights
    assert 0.5 * arithmetic.activations <= shapes.activations <= arithmetic.activations


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_depth_extrapolation_is_exact_for_repeating_blocks(kind: str) -> None:
    spec = _spec(kind, depth=5)
    extrapolated = estimate_meta.estimate_shapes_memory(spec)
    built = estimate_meta._shapes_estimate(spec)
    # weights repeat exactly per block; activations too (no pooling in these specs)
    assert extrapolated.weights == built.weights
    assert extrapolated.activations == built.activations


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_estimate_grows_with_the_batch(kind: str) -> None:
    small = estimate_meta.estimate_shapes_memory(_spec(kind))
    large = estimate_meta.estimate_shapes_memory(replace(_spec(kind), data=replace(_spec(kind).data, batch_size=64)))
    assert large.weights == small.weights
    assert large.activations == pytest.approx(8 * small.activations, rel=0.2)


def test_huge_sizes_are_estimated_without_allocating() -> None:
    spec = parse({"model": {"kind": "transformer", "seq_len": 10**7, "depth": 2, "width": 64}})
    est = memory.estimate_any(spec)
    assert est is not None and est.total > 10**15  # the attention scores alone: seq_len^2 values
    deep = parse({"model": {"kind": "residual", "depth": 10**7, "width": 64}})
    assert memory.estimate_any(deep).total > 10**12  # type: ignore[union-attr]


def test_user_model_estimate_counts_its_parameters() -> None:
    import torch

    from tests.models_for_tests import awkward

    spec = parse({"model": {"import": "tests.models_for_tests:awkward", "input_shape": [3, 8, 8]}})
    est = memory.estimate_any(spec)
    params = sum(p.numel() for p in awkward().parameters()) + sum(b.numel() for b in awkward().buffers())
    assert est is not None and est.weights == params * 4 * 2  # float32 weights and their gradients
    del torch


def test_available_memory_is_known_here() -> None:
    available = memory.available_memory_bytes()
    assert available is not None and available > 0
    with open("/proc/meminfo") as fh:
        total = int(next(line for line in fh if line.startswith("MemTotal:")).split()[1]) * 1024
    assert available <= total


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_max_memory_applies_to_every_kind(kind: str) -> None:
    with pytest.raises(RunError, match="exceeds --max-memory 0 GiB"):
        memory.check_memory(_spec(kind), 0.0)


def test_default_guard_refuses_what_does_not_fit(cli: Callable[..., Any], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(memory, "available_memory_bytes", lambda: 6 * 2**30)
    args = ["run", "configs/lab1_tiny_relu.yaml", "--set", "model.width=20000", "--set", "run.device=cpu"]
    refused = cli(*args)
    assert refused.exit_code == 3
    text = " ".join(refused.output.split())
    assert "exceeds the memory available now (6.00 GiB)" in text and "--max-memory" in text
    # one block fits (5.4 GiB at width 20000: its weights, their gradients and a scratch copy of them)
    assert "lower data.batch_size" in text and "--layer-by-layer (estimated" in text
    # the way out: an explicit limit replaces the default (the run itself is not wanted here)
    monkeypatch.setattr(memory, "estimate_memory", lambda spec: estimate.MemoryEstimate(0, 0, 0))
    assert cli(*args, "--set", "model.depth=1", "--set", "data.batch_size=2", "--max-memory", "inf").exit_code == 0


@pytest.mark.parametrize("kind", ["transformer", "lstm", "gru"])
def test_sequence_extrapolation_is_exact(kind: str) -> None:
    """Linear (recurrent) or quadratic (attention) in seq_len: three points give the curve."""
    spec = _spec(kind, seq_len=40)
    assert estimate_meta._by_sequence(spec) == estimate_meta._shapes_estimate(spec)


@pytest.mark.parametrize(
    "command",
    [
        ["run", "configs/lab1_tiny_relu.yaml"],
        ["check", "configs/lab1_tiny_relu.yaml"],
        ["fix", "configs/lab1_tiny_relu.yaml"],
        ["advise", "configs/lab1_tiny_relu.yaml"],
        ["inspect", "configs/lab1_tiny_relu.yaml"],
        ["train", "he", "--config", "configs/lab1_tiny_relu.yaml"],
        ["run", "configs/transformer_gpt.yaml"],
    ],
    ids=lambda c: " ".join(c[:2]),
)
def test_every_command_has_the_default_guard(
    cli: Callable[..., Any], monkeypatch: pytest.MonkeyPatch, command: list[str]
) -> None:
    monkeypatch.setattr(memory, "available_memory_bytes", lambda: 2**28)  # 0.25 GiB: less than the process
    result = cli(*command)
    assert result.exit_code == 3, result.output
    assert "exceeds the memory available now (0.25 GiB)" in " ".join(result.output.split())


def test_a_model_the_meta_device_cannot_run_still_runs(cli: Callable[..., Any]) -> None:
    """No estimate (one line says so), not a refusal: transformers models read values in forward."""
    spec = parse({"model": {"import": "tests.models_for_tests:reads_values", "input_shape": [4]}})
    assert memory.estimate_any(spec) is None
    result = cli("run", "--model", "tests.models_for_tests:reads_values", "--input-shape", "4", "-f", "json")
    assert result.exit_code == 0, result.output
    assert "no memory estimate" in result.stderr


@pytest.mark.parametrize("kind", ["mlp", "conv"])
def test_the_estimate_costs_the_same_at_any_depth(kind: str) -> None:
    """Closed form in depth (issue 23, item 6): at depth 2^31 - 1 the estimate allocates no
    per-layer list (depth 10^8 took 57 s and 1.6 GB), and at small depths it is the per-layer sum."""
    import tracemalloc

    deep = parse({"model": {"kind": kind, "depth": 2**31 - 1, "width": 2, "image_size": 4}, "data": {"batch_size": 2}})
    memory.estimate_any(deep)  # imports torch (conv) outside the measured part
    tracemalloc.start()
    try:
        memory.estimate_any(deep)
        estimate_layerwise.estimate_layerwise_memory(deep)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 * 2**20, peak  # a list of 2^31 layers would be 17 GB
    for depth in (1, 2, 7):
        spec = parse({"model": {"depth": depth, "width": 6, "input_dim": 5, "output_dim": 3}})
        layers = [(5, 6)] + [(6, 6)] * (depth - 1) + [(6, 3)]
        params = sum(i * o + o for i, o in layers)
        assert estimate.estimate_memory(spec).weights == params * 4 * 2  # float32 and the gradients


def test_a_transformers_vision_model_is_measured_on_the_meta_device() -> None:
    # the config's arithmetic takes MobileViT's unfolding patch (2 x 2) for a patch embedding: 128 x
    # 128 tokens of full attention at 256 x 256, tens of GiB, and the default guard refused a model
    # that runs in about 1.5 GiB. A vision model (pixel values, no mask to read) runs forward on the
    # meta device instead, which counts the tensors its attention really makes
    pytest.importorskip("transformers")
    from probe.measurement.estimate_hf import estimate_hf_memory

    widths = {"hidden_sizes": [16, 24, 32], "neck_hidden_sizes": [8, 8, 16, 16, 24, 32, 64]}
    spec = parse({"model": {"hf": "mobilevit", "kwargs": widths}, "data": {"batch_size": 2}, "run": {"device": "cpu"}})
    measured = memory.estimate_any(spec)
    assert measured is not None and measured.activations < 2**30
    assert estimate_hf_memory(spec).activations > 10 * 2**30
