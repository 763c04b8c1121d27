"""Memory before a spec runs: the estimate for each model kind and the guard that refuses a run
that would not fit.

No torch at import time: the estimate is arithmetic on the spec, so ``--max-memory`` can refuse a
spec before torch is even loaded.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

from probe.errors import ProbeError, RunError, first_line
from probe.measurement.threads import linear_shapes
from probe.spec import Spec

_BYTES = {"float32": 4, "float64": 8, "bfloat16": 2, "float16": 2}
# Fixed cost of the process itself (interpreter, torch, probe), added to every estimate.
PROCESS_BYTES = 400 * 2**20


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
    params = sum(n * (i * o + (o if m.bias else 0)) for i, o, n in linear_shapes(spec))
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
    size = _BYTES[spec.run.dtype]
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
    size = _BYTES[spec.run.dtype]
    norm = 2 * m.width if m.norm != "none" else 0
    fans = (m.in_channels, m.width) if m.depth > 1 else (m.in_channels,)  # the first layer's, the others'
    block = max(c * m.width * m.kernel_size**2 + (m.width if m.bias else 0) + norm for c in fans)
    if m.output_dim is not None:
        block = max(block, m.width * m.output_dim + (m.output_dim if m.bias else 0))
    weights = block * 4 + (block * size if size != 4 else 0) + (block * size if spec.run.backward else 0)
    whole = estimate_shapes_memory(spec)
    return MemoryEstimate(weights, whole.activations, whole.statistics + (block * 4 if spec.run.backward else 0))


def estimate_shapes_memory(spec: Spec) -> MemoryEstimate:
    """The estimate of any model (every ``model.kind``, a user model): the network is built on the
    meta device (shapes, no storage; a user factory is called under ``torch.device("meta")``) and
    one batch runs forward there, counting the bytes of every tensor an operation creates (views
    excluded). With backward, autograd may keep any of them until the backward pass: their sum
    is the bound; without, the three largest live at once. A spec model deeper than a few blocks
    is measured at depths 1 and 2 and extrapolated (its blocks repeat: pooling only shrinks later
    ones, so the line is an upper bound), which keeps a depth of 10^6 from building 10^6 modules.
    The user's errors pass as the real build's; a forward the meta device cannot run (``.item()``)
    raises ``ShapeEstimateError``. A run measures its own model with ``shapes_estimate`` instead."""
    m = spec.model
    if m.factory is None and m.depth > 2:
        one, two = (_by_sequence(replace(spec, model=replace(m, depth=d))) for d in (1, 2))
        extra = m.depth - 1
        return MemoryEstimate(
            one.weights + extra * max(two.weights - one.weights, 0),
            one.activations + extra * max(two.activations - one.activations, 0),
            one.statistics + extra * max(two.statistics - one.statistics, 0),
        )
    return _by_sequence(spec)


SEQUENCE_POINTS = (8, 16, 24)  # measured lengths (short ones take other kernels' paths)


def _by_sequence(spec: Spec) -> MemoryEstimate:
    """A sequence model's estimate at ``seq_len`` from its estimates at ``SEQUENCE_POINTS``: memory
    is linear (recurrent cells) or quadratic (attention scores) in the sequence length, and the
    meta device runs a recurrent layer step by step (10^7 steps would take hours)."""
    m = spec.model
    if m.factory is not None or m.kind not in ("transformer", "lstm", "gru") or m.seq_len <= SEQUENCE_POINTS[-1]:
        return _shapes_estimate(spec)
    points = [_shapes_estimate(replace(spec, model=replace(m, seq_len=n))) for n in SEQUENCE_POINTS]
    n = m.seq_len

    def at(values: list[int]) -> int:  # the parabola through the three points, at n (Lagrange)
        total = 0.0
        for i, (xi, yi) in enumerate(zip(SEQUENCE_POINTS, values, strict=True)):
            weight = 1.0
            for k, xk in enumerate(SEQUENCE_POINTS):
                if k != i:
                    weight *= (n - xk) / (xi - xk)
            total += weight * yi
        return max(round(total), max(values))

    return MemoryEstimate(
        at([e.weights for e in points]),
        at([e.activations for e in points]),
        at([e.statistics for e in points]),
    )


class ShapeEstimateError(Exception):
    """The model could not be built or run on the meta device (it needs real data or a real device)."""


def _shapes_estimate(spec: Spec) -> MemoryEstimate:
    from probe.errors import ForwardError
    from probe.model.build import build_on_meta

    try:  # the user's errors (a missing module, a failing factory, sys.exit()) pass, as the real build's
        built = build_on_meta(spec)  # a user model's discovery pass runs on the meta device too
    except ForwardError as exc:
        raise _not_on_meta(exc) from None
    except ProbeError:
        raise
    except Exception as exc:
        raise ShapeEstimateError(_said(exc)) from None
    return shapes_estimate(spec, built)


def _said(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc) else ''}"


def _not_on_meta(exc: ProbeError) -> ShapeEstimateError:
    """A forward needing real values (.item()) cannot run on meta: no estimate, the real run decides;
    any other failure (a wrong input shape) is the user's, as the real run's: raised now, once."""
    if "meta" not in str(exc).lower() and "NotImplementedError" not in str(exc):
        raise exc
    return ShapeEstimateError(first_line(exc))


def shapes_estimate(spec: Spec, built: Any, model: Any = None, watched_modules: Any = None) -> MemoryEstimate:
    """``estimate_shapes_memory``'s measure of a network built once (``probe.model.network.Built``),
    on the meta device: ``built.model`` itself, or ``model``, a meta copy of it in the run's dtype
    whose ``watched_modules`` are the copies of the watched rows' (``probe.measurement.once``: a
    factory's model, so that the factory is not called again). A ``ShapeEstimateError`` where the
    forward cannot run on the meta device."""
    import torch

    from probe.errors import ForwardError
    from probe.model.inputs import draw

    size = _BYTES[spec.run.dtype]
    dtype = getattr(torch, spec.run.dtype)
    outputs: list[int] = []
    try:
        if model is None:
            model = built.model.to(device="meta", dtype=dtype)
        modules = watched_modules if watched_modules is not None else [w.module for w in built.watched]
        meta = torch.device("meta")
        if built.inputs is None:
            batch_args: tuple = (torch.empty(spec.data.batch_size, spec.model.input_dim, device=meta, dtype=dtype),)
            batch_kwargs: dict = {}
        elif built.inputs.kind == "function":  # the user's function makes them (on the CPU)
            batch = draw(built.inputs, spec.data.batch_size, spec.data.distribution, torch.Generator(), meta, dtype)
            batch_args, batch_kwargs = batch.args, batch.kwargs
        else:  # made on the meta device directly: a CPU draw of 10^7 tokens would allocate them
            shape = (spec.data.batch_size, *built.inputs.shape)
            tokens = built.inputs.kind == "tokens"
            batch_args = (torch.zeros(shape, device=meta, dtype=torch.long if tokens else dtype),)
            batch_kwargs = {}
        watched: list[int] = []  # the collector's scratch buffer is as large as the largest watched output

        def hook(_module: Any, _inputs: Any, out: Any) -> None:
            first = next(
                (t for t in (out if isinstance(out, (tuple, list)) else (out,)) if isinstance(t, torch.Tensor)), None
            )
            if first is not None:
                watched.append(first.numel())

        handles = [m.register_forward_hook(hook) for m in modules]
        try:
            with _count_outputs(outputs), torch.no_grad():
                model(*batch_args, **batch_kwargs)
        finally:
            for h in handles:
                h.remove()
    except ForwardError as exc:
        raise _not_on_meta(exc) from None
    except ProbeError:  # the user's errors (a failing input function, sys.exit()): as the real run
        raise
    except Exception as exc:
        raise ShapeEstimateError(_said(exc)) from None
    params = sum(p.numel() for p in model.parameters()) + sum(b.numel() for b in model.buffers())
    weights = params * 4 + (params * size if size != 4 else 0)  # built in float32, then cast
    if spec.run.backward:
        weights += params * size
        activations = sum(outputs)
    else:
        activations = sum(sorted(outputs, reverse=True)[:3])
    # two float32 temporaries of the largest watched output, and a few KiB of records per row
    statistics = 2 * max(watched, default=0) * 4 + len(built.watched) * 4096
    return MemoryEstimate(weights, activations, statistics)


@contextmanager
def _count_outputs(sizes: list[int]) -> Iterator[None]:
    """Append the byte size of every non-view tensor an operation returns while the body runs."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode  # what torch's FlopCounterMode uses

    class Counter(TorchDispatchMode):
        def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
            out = func(*args, **(kwargs or {}))
            if not getattr(func, "is_view", False):
                for t in out if isinstance(out, (tuple, list)) else (out,):
                    if isinstance(t, torch.Tensor):
                        sizes.append(t.numel() * t.element_size())
            return out

    with Counter():
        yield


def estimate_any(spec: Spec) -> MemoryEstimate | None:
    """The estimate of ``spec``'s run: arithmetic for an MLP spec (no torch), the meta-device
    measure for every other model; ``None`` when a user model cannot run on the meta device."""
    if spec.model.hf is not None:  # their masks read values: not run on the meta device, but built there
        try:
            return estimate_hf_memory(spec)
        except ProbeError:  # the user's (an unknown type or field): as the real build would say it
            raise
        except Exception:  # a config this arithmetic does not know: no estimate, the real run decides
            return None
    if spec.model.factory is None and spec.model.kind == "mlp":
        return estimate_memory(spec)
    try:
        return estimate_shapes_memory(spec)
    except ShapeEstimateError:
        return None


def available_memory_bytes() -> int | None:
    """Memory the system can give this process now: ``MemAvailable`` of /proc/meminfo (Linux),
    else the free physical pages (``os.sysconf``), else ``None`` (unknown: no default guard)."""
    import os

    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def estimate_blockwise_memory(spec: Spec, meta: Any = None) -> MemoryEstimate:
    """The peak of ``--layer-by-layer`` for a user or transformers model (``probe.measurement.layerwise``),
    from its structure on the meta device (torch and, for ``model.hf``, transformers are imported):
    the largest block's weights in float32 (plus the cast copy; with backward, plus their gradients)
    and the resident tensors; the activations at block boundaries (one hidden state per block) and
    one block's own activations (about twelve hidden states and four of the feed-forward's, and the
    attention scores, for a transformers text model; four boundary-sized tensors otherwise)."""
    from probe.model.blocks import meta_model

    meta = meta or meta_model(spec)  # the run's own MetaModel where it has one
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
    size = _BYTES[spec.run.dtype]
    params = sum(p.numel() for p in model.parameters()) + sum(b.numel() for b in model.buffers())
    weights = params * 4 + (params * size if size != 4 else 0) + (params * size if spec.run.backward else 0)
    shape = SimpleNamespace(model=model, inputs=hf.input_spec(config, spec))
    hidden, inner, heads, tokens = _hidden_sizes(shape, spec)
    rows = spec.data.batch_size
    boundary = rows * tokens * hidden * size
    one_block = max(
        rows * tokens * (12 * hidden + 4 * inner) * size + rows * heads * tokens**2 * size * 2, 4 * boundary
    )
    blocks = max(len(partition(model)[0]), 1)
    activations = 2 * boundary + (blocks * one_block if spec.run.backward else one_block)
    statistics = 2 * rows * tokens * max(hidden, inner) * 4 + sum(1 for _ in model.modules()) * 4096
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
    spec: Spec,
    max_memory_gib: float | None,
    *,
    layerwise: bool = False,
    offer_layerwise: bool = False,
    est: MemoryEstimate | None = None,
) -> MemoryEstimate | None:
    """The estimate, or a RunError (exit 3) when it exceeds ``max_memory_gib`` (``None``: the
    memory available now; ``inf``: no limit). ``layerwise``: the estimate of ``--layer-by-layer``;
    ``offer_layerwise``: a refusal names that mode when it fits."""
    if est is None and layerwise and spec.model.own_model:
        est = estimate_blockwise_memory(spec)
    if est is None:
        est = estimate_layerwise_memory(spec) if layerwise else estimate_any(spec)
    if est is None:
        return None
    if max_memory_gib is None:
        available = available_memory_bytes()
        limit, what = (
            (float(available), f"the memory available now ({available / 2**30:.2f} GiB)")
            if available
            else (math.inf, "")
        )
    else:
        limit, what = max_memory_gib * 2**30, f"--max-memory {max_memory_gib:g} GiB"
    if est.total > limit:
        sizes = "the config's sizes (--model-arg num_hidden_layers=N)" if spec.model.hf else "model.width/depth"
        advice = f"lower data.batch_size or {sizes}, set run.backward: false, or raise --max-memory"
        if layerwise:  # with backward, the boundaries grow with depth
            backward = "set run.backward: false, " if spec.run.backward else ""
            advice = f"lower data.batch_size or model.width, {backward}or raise --max-memory"
        elif offer_layerwise and not spec.model.own_model and spec.model.kind in ("mlp", "conv"):
            forward = replace(spec, run=replace(spec.run, backward=False))  # no boundaries kept
            for option, how in ((spec, ""), (forward, "the forward signal ")):
                one_block = estimate_layerwise_memory(option).total
                if one_block <= limit:
                    flag = " --set run.backward=false" if option is forward else ""
                    advice += f"; or probe {how}one block at a time with --layer-by-layer{flag} "
                    advice += f"(estimated {one_block / 2**30:.2f} GiB)"
                    break
        if max_memory_gib is None:
            advice += " (--max-memory GIB runs it anyway, e.g. with swap)"
        raise RunError(f"{spec.name}: {est.line()} exceeds {what}; {advice}")
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
    later: Any = None,
) -> list[str]:
    """Lines worth printing before the runs (estimates of large runs); a RunError (exit 3) when a
    run, or the ``jobs`` largest runs side by side, would exceed ``max_memory_gib``. ``layerwise``
    and ``offer_layerwise`` as for ``check_memory``; a spec for which ``later(spec)`` is true is
    left to its run, which estimates the model it builds (``probe.measurement.once``)."""
    lines = []
    estimates = []
    for spec in specs:
        est = None
        if later is not None and later(spec):
            continue
        if len(specs) > 1 and not layerwise:  # several specs (check): one whose model fails to build
            try:  # is reported by name when it runs, and the others still run
                est = estimate_any(spec)
            except ProbeError as exc:
                lines.append(f"{spec.name}: no memory estimate ({first_line(exc)})")
                continue
            if est is None:
                lines.append(f"{spec.name}: no memory estimate (the model does not run on the meta device)")
                continue
        est = check_memory(spec, max_memory_gib, layerwise=layerwise, offer_layerwise=offer_layerwise, est=est)
        if est is None:
            lines.append(f"{spec.name}: no memory estimate (the model does not run on the meta device)")
            continue
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
