"""The peak memory of ``--layer-by-layer`` (``probe.measurement.layerwise``): one block's weights
and activations plus what the mode keeps (block boundaries, generator states, the meta-device
structure), for a spec stack (arithmetic; a conv stack's activations measured on the meta device)
and for a user or transformers model (from its structure on the meta device)."""

from __future__ import annotations

from typing import Any

from probe.measurement.estimate import DTYPE_BYTES, MemoryEstimate
from probe.measurement.estimate_hf import hidden_sizes
from probe.measurement.estimate_meta import estimate_shapes_memory
from probe.measurement.threads import linear_shapes
from probe.spec import Spec

# Bytes per init step the layer-by-layer mode keeps (a CPU generator state: torch.get_rng_state())
RNG_STATE_BYTES = 5056
# Bytes of one module of the meta-device structure (Python objects, meta tensors: no storage)
META_MODULE_BYTES = 4096


def estimate_layerwise_memory(spec: Spec) -> MemoryEstimate:
    """The peak of ``--layer-by-layer`` (``probe.measurement.layerwise``) for an MLP spec: the largest
    block's weights (built in float32, plus the cast copy; with backward, plus their gradients),
    whatever the depth. Without backward, one forward pass's activations; with it, the activations
    at block boundaries (each block's input, kept for the backward pass: one batch x width tensor
    per block) and one block's recomputed activations with their gradients. The statistics add a
    generator state per init step, the meta-device structure and, with backward, the collector's
    scratch copy of a block's weight gradient. A conv stack: ``_conv_layerwise_memory``."""
    if spec.model.kind == "conv":
        return _conv_layerwise_memory(spec)
    m, d = spec.model, spec.data
    size = DTYPE_BYTES[spec.run.dtype]
    norm = 2 * m.width if m.norm != "none" else 0
    block = max(i * o + (o if m.bias else 0) + (norm if o == m.width else 0) for i, o, _ in linear_shapes(spec))
    weights = block * 4 + (block * size if size != 4 else 0)
    rows = d.batch_size
    per_layer = rows * m.width * size
    inputs = rows * m.input_dim * size
    blocks = sum(n for _, _, n in linear_shapes(spec))
    if spec.run.backward:
        weights += block * size  # the block's gradients
        kept = 2 + (1 if m.norm != "none" else 0)  # what autograd keeps of a block (as estimate_memory)
        activations = inputs + blocks * per_layer + 2 * kept * per_layer  # boundaries; one block and its gradients
    else:
        activations = 3 * per_layer + inputs
    modules = 3 * blocks
    steps = 2 * modules + len(spec.init.rules) * blocks  # constructors, fills, norm resets, rules
    statistics = (
        2 * rows * max(m.width, m.input_dim) * 4
        + (m.depth + 1) * (m.width * 8 + 1024)
        + steps * RNG_STATE_BYTES
        + modules * META_MODULE_BYTES
        + (block * 4 if spec.run.backward else 0)
    )
    return MemoryEstimate(weights, activations, statistics)


def _conv_layerwise_memory(spec: Spec) -> MemoryEstimate:
    """``--layer-by-layer`` for a conv stack: one block's weights (a Conv2d and its norm, or the
    head; with backward, plus their gradients and the collector's scratch copy of them), and the
    activations and statistics of a normal run measured on the meta device (``estimate_shapes_memory``):
    with backward, all its outputs bound the boundaries plus one block recomputed with its
    gradients; without, the largest outputs are one forward pass's in both modes."""
    m = spec.model
    size = DTYPE_BYTES[spec.run.dtype]
    norm = 2 * m.width if m.norm != "none" else 0
    fans = (m.in_channels, m.width) if m.depth > 1 else (m.in_channels,)  # the first layer's, the others'
    block = max(c * m.width * m.kernel_size**2 + (m.width if m.bias else 0) + norm for c in fans)
    if m.output_dim is not None:
        block = max(block, m.width * m.output_dim + (m.output_dim if m.bias else 0))
    weights = block * 4 + (block * size if size != 4 else 0) + (block * size if spec.run.backward else 0)
    whole = estimate_shapes_memory(spec)
    return MemoryEstimate(weights, whole.activations, whole.statistics + (block * 4 if spec.run.backward else 0))


def estimate_blockwise_memory(spec: Spec, meta: Any = None) -> MemoryEstimate:
    """The peak of ``--layer-by-layer`` for a user or transformers model (``probe.measurement.layerwise``),
    from its structure on the meta device (torch and, for ``model.hf``, transformers are imported):
    the largest block's weights in float32 (plus the cast copy; with backward, plus their gradients)
    and the resident tensors; the activations at block boundaries (one hidden state per block) and
    one block's own activations (about twelve hidden states and four of the feed-forward's, and the
    attention scores, for a transformers text model; four boundary-sized tensors otherwise)."""
    from probe.model.blocks import meta_model

    meta = meta or meta_model(spec)  # the run's own MetaModel where it has one
    size = DTYPE_BYTES[spec.run.dtype]
    block = max((b.numel() for b in meta.blocks), default=0)
    resident = sum(t.numel() for m in meta.resident for t in [*m.parameters(recurse=False), *m.buffers(recurse=False)])
    weights = block * 4 + (block * size if size != 4 else 0) + resident * 4
    if spec.run.backward:
        weights += block * size
    hidden, inner, heads, tokens = hidden_sizes(meta, spec)
    rows = spec.data.batch_size
    boundary = rows * tokens * hidden * size
    one_block = rows * tokens * (12 * hidden + 4 * inner) * size + rows * heads * tokens * tokens * size * 2
    activations = (len(meta.blocks) + 2) * boundary + max(one_block, 4 * boundary)
    statistics = len(meta.steps) * RNG_STATE_BYTES + sum(1 for _ in meta.model.modules()) * META_MODULE_BYTES
    return MemoryEstimate(weights, activations, statistics)
