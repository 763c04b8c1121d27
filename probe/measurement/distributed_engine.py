"""The engine of a distributed run (``probe.measurement.distributed``): the model replicated with
DDP (``run.shard: none``) or sharded per block with FSDP2 (``run.shard: fsdp``: built on the meta
device, then materialized, initialized and sharded one block at a time, ``_build_sharded``).
Either way the weight gradient after a backward is the whole batch's (the engine reduces it, as
it would in training), and each rank measures its own part of it (``Share.weight_grad_part``): a
DTensor's local shard, or a 1/N slice of a replicated gradient. No value is ever gathered whole.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from probe.errors import RunError
from probe.measurement.distributed import Share
from probe.model.network import Built

if TYPE_CHECKING:
    import torch

    from probe.spec import Spec


def prepare(
    spec: Spec,
    share: Share,
    device: torch.device,
    dtype: torch.dtype,
    state_dict: Mapping[str, torch.Tensor] | None = None,
) -> tuple[torch.nn.Module, Built]:
    """The model as this rank runs it, and what was built: with ``run.shard: fsdp``, built on the
    meta device and sharded one block at a time (``_build_sharded``); otherwise (or where that
    cannot be done) built whole, moved to the device and wrapped (``wrap``). Seeds torch's global
    generator: the caller forks it first."""
    from probe.model.build import build_initialized

    whole_because = None
    if share.shard == "fsdp":
        sharded, whole_because = _build_sharded(spec, share, device, dtype, state_dict)
        if sharded is not None:
            return sharded
    built = build_initialized(spec, state_dict)
    if whole_because:
        built.notes.append(f"run.shard: fsdp built the whole model on each rank before sharding it: {whole_because}")
    model = built.model.to(device=device, dtype=dtype)
    return wrap(model, built, share, spec.run.backward), built


def wrap(model: torch.nn.Module, built: Built, share: Share, backward: bool) -> torch.nn.Module:
    """The model as this rank runs it: sharded per block with FSDP2, or replicated with DDP
    (only when gradients are measured: a forward-only run needs no engine)."""

    trainable = any(p.requires_grad for p in model.parameters())
    if share.shard == "fsdp":
        if not trainable:
            return model
        _fully_shard(model, built, share)
        share.dtensor_grads = True
        return model
    if not backward or not trainable:
        return model
    import inspect

    from torch.nn.parallel import DistributedDataParallel

    ids = [share.device.index] if share.device.type == "cuda" else None
    # static_graph: every batch uses the same parameters, and a user model may hold some its forward
    # never touches (DDP then needs no graph search per batch); buffers are not synced before each
    # forward (BatchNorm's running statistics do not change what is measured)
    options = inspect.signature(DistributedDataParallel.__init__).parameters
    no_sync = {"forward_sync_buffers": False} if "forward_sync_buffers" in options else {"broadcast_buffers": False}
    return DistributedDataParallel(model, device_ids=ids, static_graph=True, **no_sync)  # type: ignore[arg-type]


def blocks(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The units FSDP2 shards: the children of the outermost ModuleLists and Sequentials (a
    transformer's layers, a residual net's blocks, an MLP's Linears), each if it has parameters."""
    from torch import nn

    found: list[nn.Module] = []

    def walk(module: nn.Module) -> None:
        for child in module.children():
            if isinstance(child, (nn.ModuleList, nn.Sequential)):
                found.extend(c for c in child.children() if any(True for _ in c.parameters()))
            else:
                walk(child)

    if isinstance(model, (nn.ModuleList, nn.Sequential)):
        found.extend(c for c in model.children() if any(True for _ in c.parameters()))
    else:
        walk(model)
    return found


def _fully_shard(model: torch.nn.Module, built: Built, share: Share) -> None:
    from torch.distributed.fsdp import fully_shard

    mesh = _mesh(share)
    names = {id(p): name for name, p in model.named_parameters()}
    for block in blocks(model):
        fully_shard(block, mesh=mesh)
    fully_shard(model, mesh=mesh)
    _repoint(built, model, names)


def _mesh(share: Share) -> Any:
    from torch.distributed.device_mesh import init_device_mesh

    return init_device_mesh(share.device.type, (share.world_size,))


def _repoint(built: Built, model: torch.nn.Module, names: dict[int, str]) -> None:
    """fully_shard swaps every parameter for a DTensor one: point the watched rows at the new ones
    (and let the whole unsharded tensors go)."""
    params = dict(model.named_parameters())
    for w in built.watched:
        if w.weight is not None and id(w.weight) in names:
            w.weight = params[names[id(w.weight)]]


def _build_sharded(
    spec: Spec,
    share: Share,
    device: torch.device,
    dtype: torch.dtype,
    state_dict: Mapping[str, torch.Tensor] | None,
) -> tuple[tuple[torch.nn.Module, Built] | None, str | None]:
    """FSDP2 without ever holding the whole model: the network is built on the meta device
    (``unit_blocks.meta_units``) with its init program swept once (the generator state before each
    step); then each block in turn is materialized on the CPU, given the weights a whole build
    gives it (its steps replayed from their recorded states), moved to the rank's device and
    sharded; then the parameters outside the blocks, and the root. At any moment a rank holds its
    shards and one block's (or the root's own) whole parameters.

    Returns (the model and what was built, None), or (None, why) where the model must be built
    whole: the reason goes in the report's notes. (None, None): nothing to shard (no trainable
    parameter), built whole as before."""
    import torch
    from torch.distributed.fsdp import FSDPModule, fully_shard

    from probe.errors import first_line
    from probe.model import replay, storage, unit_blocks
    from probe.spec import inits

    if state_dict is not None:
        return None, "the saved weights are loaded into the whole model"
    if "lsuv" in (inits.canonical(spec.init.weight.name), inits.canonical(spec.init.bias.name)):
        return None, "lsuv rescales each layer on the whole network's batches"
    try:
        meta, planned = unit_blocks.meta_units(spec, blocks)
        if not any(p.requires_grad for p in meta.model.parameters()):
            return None, None
        torch.manual_seed(spec.run.seed)  # as build_initialized: the sweep draws what the build would
        staging = storage.Staging()  # one block's worth of CPU memory, reused (see Staging)
        replay.sweep(meta, staging)
    except Exception as exc:  # the same build, whole, raises a genuine error again
        return None, f"the meta-device build failed ({type(exc).__name__}: {first_line(exc)})"
    # the rows after the init program, as in build (an inputs function may draw): found on the meta
    # device where the model's forward runs there, else on the sharded model (one forward on every rank)
    after_init = torch.get_rng_state()
    built: Built | None
    try:
        built = planned.finish()
    except Exception:  # a forward that reads values (.item(), a mask built from the ids)
        built = None
        torch.set_rng_state(after_init)
    model = meta.model
    names = {id(p): name for name, p in model.named_parameters()}
    mesh = _mesh(share)
    for block in meta.blocks:
        replay.materialize(meta, block.module, block.steps, staging=staging)
        block.module.to(device=device, dtype=dtype)
        fully_shard(block.module, mesh=mesh)  # copies out this rank's shards: the staging is free again
    replay.materialize_resident(meta, staging)

    def convert(t: torch.Tensor) -> torch.Tensor:  # as Module.to
        return t.to(device, dtype if t.is_floating_point() or t.is_complex() else None)

    for module in meta.resident:
        module._apply(convert, recurse=False)
    left = [n for n, t in (*model.named_parameters(), *model.named_buffers()) if t.device.type == "meta"]
    if left:
        raise RunError(f"run.shard: fsdp left {', '.join(left[:4])} on the meta device")
    fully_shard(model, mesh=mesh)
    del staging
    if built is None:
        built = planned.finish()
        # FSDP2 keeps the root's parameters gathered after a forward: the rows hold those
        names = {id(p): name for name, p in model.named_parameters()}
        model.reshard()  # type: ignore[operator]
        for w in built.watched:  # fully_shard gave each block a class of its own (FSDPLlamaDecoderLayer)
            w.module_type = next(c.__name__ for c in type(w.module).__mro__ if not issubclass(c, FSDPModule))
    _repoint(built, model, names)
    share.dtensor_grads = True
    n = len(meta.blocks)
    built.notes.append(
        f"run.shard: fsdp: built on the meta device; its {n} blocks materialized and sharded one at a time, then "
        "the parameters outside them"
        if n
        else "run.shard: fsdp: built on the meta device; no blocks (children of a ModuleList or Sequential), so "
        "every parameter was materialized at once, then sharded"
    )
    return (model, built), None
