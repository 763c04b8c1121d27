"""One build per probe: the memory estimate of a user model (``model.import``) made from the model
the run probes, so that its factory runs once.

The factory is called once, for real, and the estimate measured on the model it returned
(``estimate_meta.shapes_estimate``: the forward of a copy of it on meta tensors, after the discovery
pass and before the measured pass). Its weights are therefore allocated when the guard decides; the
activations and statistics, what a larger batch or sequence grows, are refused before they
exist. A factory is not called on the meta device first and its model materialized instead: its
constructor may set tensors no init step replays (``nn.Parameter(torch.zeros(...))``), load a
checkpoint or print, and a second call would repeat that.

A transformers model (``model.hf``) is still estimated before anything is allocated, on a
meta-device build (``AutoModel.from_config`` under ``torch.device("meta")``: library code, no
storage, no draws), then built for real: replaying the library's init on the meta build
(``probe.model.blocks``) does not give a real build's weights for every type (measured: 75 of the
zoo's 306 types differ, sub-models initialized by their own constructors among them), so the
meta build is not materialized. ``--layer-by-layer`` builds a user or transformers model once,
on the meta device, and estimates that same structure (``probe.measurement.layerwise``). Under
torchrun and with ``--jobs N`` (worker processes), a factory's model is still estimated on a
meta-device call of the factory before the build.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from probe.measurement import estimate_meta, memory
from probe.measurement.estimate import MemoryEstimate
from probe.model.build import build, build_initialized, initialized
from probe.model.network import Built
from probe.spec import Spec

if TYPE_CHECKING:
    import torch

# what a command does with a run's estimate (None: the model does not run on the meta device):
# refuse it (a RunError) or print it
MemoryCheck = Callable[[MemoryEstimate | None], None]


def built_once(spec: Spec, layerwise: bool = False) -> bool:
    """Whether a run estimates the model it builds (``build_checked``; ``layerwise``: the
    structure ``run_layerwise`` builds) rather than a meta-device build of its own before it
    (``memory.estimate_any``): a user factory's model, or any model of its own layer by layer."""
    return spec.model.factory is not None or (layerwise and spec.model.own_model)


def estimate_built(spec: Spec, built: Built) -> MemoryEstimate | None:
    """The estimate of a run of ``built``, the model the run probes (see the module docstring),
    measured on a meta copy of it (``meta_copy``); None where its forward cannot run there."""
    try:
        model, modules = meta_copy(built, spec.run.dtype)
        return estimate_meta.shapes_estimate(spec, built, model, modules)
    except estimate_meta.ShapeEstimateError:
        return None


def meta_copy(built: Built, dtype_name: str) -> tuple[torch.nn.Module, list[torch.nn.Module]]:
    """A copy of the built model whose parameters and buffers are meta tensors (floating ones in
    ``dtype_name``), and the copies of its watched modules: its structure and Python state copied
    (``copy.deepcopy``), never its storage, so the estimate's forward pass touches nothing of the
    model the run probes (a module counting its calls, BatchNorm's running statistics). A
    ``ShapeEstimateError`` where the model cannot be copied."""
    import copy

    import torch
    from torch import nn

    dtype = getattr(torch, dtype_name)
    memo: dict[int, object] = {}
    for t in [*built.model.parameters(), *built.model.buffers()]:
        meta = torch.empty(t.shape, device="meta", dtype=dtype if t.is_floating_point() else t.dtype)
        memo[id(t)] = nn.Parameter(meta, requires_grad=t.requires_grad) if isinstance(t, nn.Parameter) else meta
    try:
        model = copy.deepcopy(built.model, memo)
    except Exception as exc:  # an attribute that cannot be copied (a lock, an open file)
        raise estimate_meta.ShapeEstimateError(f"the model cannot be copied: {type(exc).__name__}: {exc}") from None
    return model, [memo.get(id(w.module), w.module) for w in built.watched]  # type: ignore[misc]


def build_checked(
    spec: Spec,
    check: MemoryCheck,
    state_dict: Mapping[str, torch.Tensor] | None = None,
    tick: Callable[[], None] | None = None,
) -> Built:
    """``build_initialized``, with ``check`` given the run's estimate before the measured pass:
    made from the model built (``built_once``), or before the build. Seeds torch's global
    generator: callers fork it first. ``tick``: as for ``build``."""
    import torch

    if not built_once(spec):
        check(memory.estimate_any(spec))
        return build_initialized(spec, state_dict, tick)
    torch.manual_seed(spec.run.seed)  # as build_initialized, with the estimate before lsuv's passes
    built = build(spec, tick)
    with torch.random.fork_rng(devices=[]):  # an input function or a forward drawing: not the run's draws
        estimate = estimate_built(spec, built)
    check(estimate)
    return initialized(built, spec, state_dict)


def guarded(spec: Spec, est: MemoryEstimate | None, max_memory_gib: float | None, layerwise: bool) -> str | None:
    """What ``memory.guard_memory`` does with one spec's estimate, for a run's own: a RunError
    (exit 3) over the limit, else the line worth printing (a large run's estimate, or none made)."""
    if est is None:
        return f"{spec.name}: no memory estimate (the model does not run on the meta device)"
    memory.check_memory(spec, max_memory_gib, layerwise=layerwise, offer_layerwise=not layerwise, est=est)
    return f"{spec.name}: {est.line()}" if est.total >= memory.LARGE_RUN_BYTES else None
