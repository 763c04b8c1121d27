"""Cost of a spec before it runs: work per batch, a memory estimate and its guard, thread choice.

No torch at import time: the estimate is arithmetic on the spec, so ``--max-memory`` can refuse a
spec before torch is even loaded.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from probe.errors import RunError
from probe.spec import Spec

# Below this many multiply-adds per batch, intra-op threads cost more than they save: each op is
# microseconds long, and waking (or, on a busy machine, waiting for) a second thread is not.
SINGLE_THREAD_MACS = 2**28
_BYTES = {"float32": 4, "float64": 8, "bfloat16": 2, "float16": 2}
# Fixed cost of the process itself (interpreter, torch, probe), added to every estimate.
PROCESS_BYTES = 400 * 2**20


def linear_shapes(spec: Spec) -> list[tuple[int, int]]:
    """(fan_in, fan_out) of every Linear layer of an MLP spec."""
    m = spec.model
    shapes = [(m.input_dim, m.width)] + [(m.width, m.width)] * (m.depth - 1)
    if m.output_dim is not None:
        shapes.append((m.width, m.output_dim))
    return shapes


def forward_macs(spec: Spec) -> int:
    """Multiply-adds of one forward pass over one batch."""
    return spec.data.batch_size * sum(i * o for i, o in linear_shapes(spec))


def threads_for(spec: Spec) -> int | None:
    """1 for small MLPs (see SINGLE_THREAD_MACS), None (torch's default) otherwise."""
    if spec.model.kind != "mlp" or spec.model.hf is not None:
        return None
    return 1 if forward_macs(spec) < SINGLE_THREAD_MACS else None


@contextmanager
def intra_op_threads(n: int | None) -> Iterator[None]:
    """Run the body with ``n`` intra-op threads (None: leave as is), then restore the count."""
    import torch

    if n is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes a run needs at its peak, by part."""

    weights: int  # parameters (and, with backward, their gradients)
    activations: int  # what autograd keeps for backward, or the largest live pair without it
    statistics: int  # the probe's own temporaries and accumulators
    process: int = PROCESS_BYTES

    @property
    def total(self) -> int:
        return self.weights + self.activations + self.statistics + self.process

    def line(self) -> str:
        gib = 2**30
        return (
            f"estimated peak memory {self.total / gib:.2f} GiB (weights {self.weights / gib:.2f}, "
            f"activations {self.activations / gib:.2f}, statistics {self.statistics / gib:.2f}, "
            f"process {self.process / gib:.2f})"
        )


def estimate_memory(spec: Spec) -> MemoryEstimate:
    """A deliberately simple upper-bound estimate for an MLP spec (the model kinds probe builds).

    Weights are built in float32 on the CPU and then cast, so both copies count when the run's
    dtype differs. Autograd keeps each Linear's input and each activation's output (and a norm's
    input) for the backward pass; without backward only the current layer's input and output live.
    Statistics need O(layers) accumulators plus two activation-sized temporaries at a time.
    """
    m, d = spec.model, spec.data
    size = _BYTES[spec.run.dtype]
    params = sum(i * o + (o if m.bias else 0) for i, o in linear_shapes(spec))
    weights = params * 4 + (params * size if size != 4 else 0)
    if spec.run.backward:
        weights += params * size  # gradients
    rows = d.batch_size
    per_layer = rows * m.width * size
    if spec.run.backward:
        kept = 2 + (1 if m.norm != "none" else 0)
        activations = rows * m.input_dim * size + m.depth * kept * per_layer + 2 * per_layer
    else:
        activations = 3 * per_layer + rows * m.input_dim * size
    statistics = 2 * rows * max(m.width, m.input_dim) * 4 + (m.depth + 1) * (m.width * 8 + 1024)
    return MemoryEstimate(weights, activations, statistics)


# Bytes per init step the layer-by-layer mode keeps (a CPU generator state: torch.get_rng_state())
RNG_STATE_BYTES = 5056
# Bytes of one module of the meta-device structure (Python objects, meta tensors: no storage)
META_MODULE_BYTES = 4096


def estimate_layerwise_memory(spec: Spec) -> MemoryEstimate:
    """The peak of ``--layer-by-layer`` (``probe.measure.layerwise``): the largest block's weights (built
    in float32, plus the cast copy) and one forward pass's activations, whatever the depth; the
    statistics add a generator state per init step and the meta-device structure."""
    m, d = spec.model, spec.data
    size = _BYTES[spec.run.dtype]
    norm = 2 * m.width if m.norm != "none" else 0
    block = max(i * o + (o if m.bias else 0) + (norm if o == m.width else 0) for i, o in linear_shapes(spec))
    weights = block * 4 + (block * size if size != 4 else 0)
    rows = d.batch_size
    activations = 3 * rows * m.width * size + rows * m.input_dim * size
    blocks = len(linear_shapes(spec))
    modules = 3 * blocks
    steps = 2 * modules + len(spec.init.rules) * blocks  # constructors, fills, norm resets, rules
    statistics = (
        2 * rows * max(m.width, m.input_dim) * 4
        + (m.depth + 1) * (m.width * 8 + 1024)
        + steps * RNG_STATE_BYTES
        + modules * META_MODULE_BYTES
    )
    return MemoryEstimate(weights, activations, statistics)


def estimate_blockwise_memory(spec: Spec) -> MemoryEstimate:
    """The peak of ``--layer-by-layer`` for a user or transformers model (``probe.measure.blockwise``),
    from its structure on the meta device (torch and, for ``model.hf``, transformers are imported):
    the largest block's weights in float32 (plus the cast copy; with backward, plus their gradients)
    and the resident tensors; the activations at block boundaries (one hidden state per block) and
    one block's own activations (about twelve hidden states and four of the feed-forward's, and the
    attention scores, for a transformers text model; four boundary-sized tensors otherwise)."""
    from probe.model.blocks import meta_model

    meta = meta_model(spec)
    size = _BYTES[spec.run.dtype]
    block = max((b.numel() for b in meta.blocks), default=0)
    resident = sum(t.numel() for m in meta.resident for t in [*m.parameters(recurse=False), *m.buffers(recurse=False)])
    weights = block * 4 + (block * size if size != 4 else 0) + resident * 4
    if spec.run.backward:
        weights += block * size
    hidden, inner, heads, tokens = _hidden_sizes(meta, spec)
    rows = spec.data.batch_size
    boundary = rows * tokens * hidden * size
    one_block = rows * tokens * (12 * hidden + 4 * inner) * size + rows * heads * tokens * tokens * size * 2
    activations = (len(meta.blocks) + 2) * boundary + max(one_block, 4 * boundary)
    statistics = len(meta.steps) * RNG_STATE_BYTES + sum(1 for _ in meta.model.modules()) * META_MODULE_BYTES
    return MemoryEstimate(weights, activations, statistics)


def _hidden_sizes(meta: object, spec: Spec) -> tuple[int, int, int, int]:
    """(hidden size, feed-forward size, attention heads, tokens per sample) of the model's blocks:
    from a transformers config, or (for a user model) the input's size and no attention."""
    config = getattr(getattr(meta, "model", None), "config", None)
    inner_model = next(iter(meta.model.children()), None) if config is None else None  # type: ignore[attr-defined]
    config = config or getattr(inner_model, "config", None)
    inputs = meta.inputs  # type: ignore[attr-defined]
    if config is not None:
        hidden = int(getattr(config, "hidden_size", 0) or max(getattr(config, "hidden_sizes", [0]) or [0]))
        inner = int(getattr(config, "intermediate_size", 0) or getattr(config, "n_inner", 0) or 4 * hidden)
        heads = int(getattr(config, "num_attention_heads", 0) or 0)
        if inputs.kind == "tokens":
            tokens = spec.model.seq_len
        else:
            patch = getattr(config, "patch_size", None)
            side = inputs.shape[-1] if inputs.shape else 1
            tokens = (side // patch) ** 2 + 1 if isinstance(patch, int) and patch else side * side
        return hidden, inner, heads, tokens
    numel = 1
    for d in inputs.shape:
        numel *= d
    return numel, numel, 0, 1


def check_memory(
    spec: Spec, max_memory_gib: float, *, layerwise: bool = False, offer_layerwise: bool = False
) -> MemoryEstimate:
    """The estimate, or a RunError (exit 3) when it exceeds ``max_memory_gib``. ``layerwise``: the
    estimate of ``--layer-by-layer``; ``offer_layerwise``: a refusal names that mode when it fits."""
    if layerwise and spec.model.own_model:
        est = estimate_blockwise_memory(spec)
    else:
        est = estimate_layerwise_memory(spec) if layerwise else estimate_memory(spec)
    if est.total > max_memory_gib * 2**30:
        advice = "lower data.batch_size or model.width/depth, set run.backward: false, or raise --max-memory"
        if layerwise:
            advice = "lower data.batch_size or model.width, or raise --max-memory"
        elif offer_layerwise and not spec.model.own_model:
            one_block = estimate_layerwise_memory(spec).total
            if one_block <= max_memory_gib * 2**30:
                advice += f"; or probe the forward signal with --layer-by-layer (estimated {one_block / 2**30:.2f} GiB)"
        raise RunError(f"{spec.name}: {est.line()} exceeds --max-memory {max_memory_gib:g} GiB; {advice}")
    return est


# A run whose estimate is at least this large gets its estimate printed before it starts.
LARGE_RUN_BYTES = 2**30


def guard_memory(
    specs: list[Spec],
    max_memory_gib: float | None,
    jobs: int = 1,
    *,
    layerwise: bool = False,
    offer_layerwise: bool = False,
) -> list[str]:
    """Lines worth printing before the runs (estimates of large runs); a RunError (exit 3) when a
    run, or the ``jobs`` largest runs side by side, would exceed ``max_memory_gib``. ``layerwise``
    and ``offer_layerwise`` as for ``check_memory``."""
    lines = []
    estimates = []
    for spec in specs:
        if spec.model.kind != "mlp" or (spec.model.own_model and not layerwise):
            continue
        if max_memory_gib is not None:
            est = check_memory(spec, max_memory_gib, layerwise=layerwise, offer_layerwise=offer_layerwise)
        elif layerwise and spec.model.own_model:
            est = estimate_blockwise_memory(spec)
        else:
            est = estimate_layerwise_memory(spec) if layerwise else estimate_memory(spec)
        estimates.append(est.total)
        if est.total >= LARGE_RUN_BYTES:
            lines.append(f"{spec.name}: {est.line()}")
    side_by_side = sum(sorted(estimates, reverse=True)[: max(jobs, 1)])
    if max_memory_gib is not None and jobs > 1 and side_by_side > max_memory_gib * 2**30:
        raise RunError(
            f"{min(jobs, len(estimates))} runs side by side (--jobs {jobs}) need an estimated "
            f"{side_by_side / 2**30:.2f} GiB, over --max-memory {max_memory_gib:g} GiB; lower --jobs"
        )
    return lines
