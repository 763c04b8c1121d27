"""The memory estimate of any model, measured on the meta device: the network built there (shapes,
no storage) and one batch run forward, counting the bytes of every tensor an operation creates; a
sequence model's at a long ``seq_len`` extrapolated from a few short ones.

Torch is imported when an estimate is made, not at import time.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

from probe.errors import ProbeError, first_line
from probe.measurement.estimate import DTYPE_BYTES, MemoryEstimate
from probe.spec import Spec


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

    size = DTYPE_BYTES[spec.run.dtype]
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
            first = torch.zeros(shape, device=meta, dtype=torch.long if tokens else dtype)
            keyword = built.inputs.keyword  # a transformers model's (pixel_values, input_values, ...)
            batch_args, batch_kwargs = ((), {keyword: first}) if keyword else ((first,), {})
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
