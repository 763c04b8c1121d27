"""The memory estimate of a transformers model (``model.hf``) from its config, without running it,
and the block sizes (hidden, feed-forward, heads, tokens) that estimate and the layer-by-layer one
read from a model's structure."""

from __future__ import annotations

import math

from probe.measurement.estimate import DTYPE_BYTES, MemoryEstimate
from probe.spec import Spec


def estimate_hf_memory(spec: Spec) -> MemoryEstimate:
    """A transformers model's run from its config, without running it: the parameters counted on
    a meta-device build (float32, plus the cast copy; with backward, plus their gradients), and
    the activations of ``estimate_blockwise_memory``'s block (hidden states, feed-forward and
    attention scores from batch, tokens, hidden size and heads) kept for every block with
    backward, one block's without."""
    from types import SimpleNamespace

    import torch

    from probe.model import hf
    from probe.model.blocks import partition

    config, _ = hf.load_config(spec)
    with torch.device("meta"):
        model = hf.make_model(config)
    size = DTYPE_BYTES[spec.run.dtype]
    params = sum(p.numel() for p in model.parameters()) + sum(b.numel() for b in model.buffers())
    weights = params * 4 + (params * size if size != 4 else 0) + (params * size if spec.run.backward else 0)
    shape = SimpleNamespace(model=model, inputs=hf.input_spec(config, spec))
    hidden, inner, heads, tokens = hidden_sizes(shape, spec)
    rows = spec.data.batch_size
    boundary = rows * tokens * hidden * size
    one_block = max(
        rows * tokens * (12 * hidden + 4 * inner) * size + rows * heads * tokens**2 * size * 2, 4 * boundary
    )
    blocks = max(len(partition(model)[0]), 1)
    activations = 2 * boundary + (blocks * one_block if spec.run.backward else one_block)
    statistics = 2 * rows * tokens * max(hidden, inner) * 4 + sum(1 for _ in model.modules()) * 4096
    return MemoryEstimate(weights, activations, statistics)


def hidden_sizes(meta: object, spec: Spec) -> tuple[int, int, int, int]:
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
        elif len(inputs.shape) < 3:  # audio: a waveform (samples) or features (mels, frames)
            strides = getattr(config, "conv_stride", None)  # wav2vec2's feature encoder
            if isinstance(strides, (list, tuple)) and strides:
                tokens = max(inputs.shape[-1] // math.prod(int(x) for x in strides), 1)
            elif len(inputs.shape) == 2 and getattr(config, "time_stride", None):  # AST's spectrogram patches
                strides = int(config.time_stride) * int(getattr(config, "frequency_stride", 1) or 1)
                tokens = max(inputs.shape[0] * inputs.shape[1] // strides, 1)
            else:  # Whisper's encoder positions, or every frame
                tokens = int(getattr(config, "max_source_positions", 0) or max(inputs.shape))
        else:
            patch = getattr(config, "patch_size", None)
            side = inputs.shape[-1] if inputs.shape else 1
            tokens = (side // patch) ** 2 + 1 if isinstance(patch, int) and patch else side * side
        return hidden, inner, heads, tokens
    numel = 1
    for d in inputs.shape:
        numel *= d
    return numel, numel, 0, 1
