"""Several processes, one probe: torchrun ranks share the global batch and merge exactly once.

Under ``torchrun --nproc_per_node N -m probe run SPEC.yaml`` every rank builds the same network
from the same seed and draws the same global batch from the same stream, then keeps its own rows
(``rows``): the ranks' slices together are the single-process batch, and the loss direction is
sliced the same way, so every activation and activation gradient a rank sees is one the single
process sees. The model is replicated with DDP (``run.shard: none``) or sharded per block with
FSDP2 (``run.shard: fsdp``: built on the meta device, then materialized, initialized and sharded
one block at a time, ``_build_sharded``); either way the weight gradient after a backward is the
whole batch's (the engine reduces it, as it would in training), and each rank measures its own
part of it: a DTensor's local shard, or a 1/N slice of a replicated gradient. No value is ever
gathered whole.

The hooks stay as they are (on-device, sync-free). ``merge_ranks`` runs once, just before the
collector's single host read, and moves two flat tensors: an ``all_gather`` of every slot's
(count, mean, M2) and the few per-layer host numbers, merged with Chan et al.'s update in a
fixed rank order (so every rank computes the same numbers), and an ``all_reduce`` (sum) of the
plain sums (non-finite and saturated counts, within-sample M2) and the per-unit nonzero counts
(a unit is dead only if its count is 0 on every rank).
"""

from __future__ import annotations

import atexit
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from probe.errors import RunError, SpecError
from probe.model.inputs import Batch
from probe.model.network import Built

if TYPE_CHECKING:
    import torch

    from probe.measurement.collect import Collector
    from probe.spec import Spec

_STARTED_BY_US: list[bool] = []  # the process group probe initialized (destroyed at exit)


def launched_world_size() -> int:
    """The number of ranks torchrun (or a process group already set up) says this run has."""
    try:
        return max(int(os.environ.get("WORLD_SIZE", "1")), 1)
    except ValueError:
        return 1


def output_rank() -> bool:
    """Whether this process prints and writes files: a single process, or rank 0 of several."""
    if launched_world_size() <= 1:
        return True
    try:
        return int(os.environ.get("RANK", "0")) == 0
    except ValueError:
        return True


def launched_rank() -> int:
    try:
        return int(os.environ.get("RANK", "0"))
    except ValueError:
        return 0


@dataclass
class Share:
    """This process's part of a distributed run."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    shard: str  # "none" (replicated, DDP) or "fsdp"
    group: Any = None  # the default process group
    rows: slice = field(default_factory=lambda: slice(0, 0))  # this rank's rows of the global batch
    global_rows: int = 0
    dtensor_grads: bool = False

    def weight_grad_part(self, grad: torch.Tensor) -> torch.Tensor:
        """The part of a whole-batch weight gradient this rank measures, as the single-process
        gradient: a DTensor's local shard (FSDP2) or this rank's 1/N of the flattened replicated
        gradient (DDP). Both engines average over ranks; the sum over the batch is N times that."""
        local = grad.to_local() if hasattr(grad, "to_local") else _slice_flat(grad, self.rank, self.world_size)
        return local * float(self.world_size)


def _slice_flat(grad: torch.Tensor, rank: int, world_size: int) -> torch.Tensor:
    return grad.reshape(-1).tensor_split(world_size)[rank]


def share_for(spec_device: torch.device, shard: str, batch_size: int) -> Share | None:
    """The process group this process belongs to, set up from torchrun's environment when none
    exists yet (gloo for CPU tensors, nccl for CUDA tensors); None for a single process."""
    import torch
    import torch.distributed as dist

    if not dist.is_available():
        if launched_world_size() > 1:
            raise RunError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
        return None
    if not dist.is_initialized():
        if launched_world_size() <= 1:
            return None
        missing = [k for k in ("RANK", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
        if missing:
            raise RunError(f"WORLD_SIZE is set but {', '.join(missing)} is not: start probe with torchrun")
        # one group serves both kinds of tensor: the statistics live on the run's device
        backend = "cpu:gloo,cuda:nccl" if torch.cuda.is_available() and dist.is_nccl_available() else "gloo"
        dist.init_process_group(backend=backend)
        if not _STARTED_BY_US:
            _STARTED_BY_US.append(True)
            atexit.register(_destroy)
    world_size = dist.get_world_size()
    if world_size <= 1:
        return None
    rank = dist.get_rank()
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    device = spec_device
    if device.type == "cuda":
        # one GPU per rank, whatever index the spec named: torchrun's LOCAL_RANK picks it
        device = torch.device("cuda", local_rank % max(torch.cuda.device_count(), 1))
        torch.cuda.set_device(device)
    if batch_size < world_size:
        raise SpecError(
            f"data.batch_size {batch_size} is smaller than the {world_size} ranks: each rank needs rows",
            "data.batch_size",
        )
    bounds = [batch_size * r // world_size for r in range(world_size + 1)]
    return Share(
        rank=rank,
        world_size=world_size,
        local_rank=local_rank,
        device=device,
        shard=shard,
        group=dist.group.WORLD,
        rows=slice(bounds[rank], bounds[rank + 1]),
        global_rows=batch_size,
    )


def _destroy() -> None:
    import gc

    import torch.distributed as dist

    gc.collect()  # DDP wrappers still alive in reference cycles hold threads on the group
    if dist.is_initialized():
        dist.destroy_process_group()


# ---- the batch and the loss direction --------------------------------------------------------


def slice_batch(batch: Batch, share: Share) -> Batch:
    """This rank's rows of the global batch: every tensor whose first dimension is the batch."""
    import torch

    def part(v: Any) -> Any:
        if isinstance(v, torch.Tensor) and v.dim() >= 1 and v.shape[0] == share.global_rows:
            piece = v[share.rows]
            return piece.detach().requires_grad_(True) if v.requires_grad and v.is_leaf else piece
        return v

    return Batch(tuple(part(a) for a in batch.args), {k: part(v) for k, v in batch.kwargs.items()})


def direction(shape: tuple[int, ...], generator: torch.Generator, share: Share) -> torch.Tensor:
    """This rank's rows of the loss direction the single process draws for the whole batch.
    The batch dimension is the first (else the second) whose size is this rank's row count."""
    import torch

    local = share.rows.stop - share.rows.start
    candidates = [d for d in (0, 1) if d < len(shape) and shape[d] == local]
    if not candidates:
        raise RunError(
            f"a model output of shape {list(shape)} has no batch dimension of this rank's {local} rows: "
            "under torchrun every output must keep the batch in dimension 0 or 1"
        )
    dim = candidates[0]
    whole = list(shape)
    whole[dim] = share.global_rows
    return torch.randn(whole, generator=generator).narrow(dim, share.rows.start, local).contiguous()


def notes(built: Built, share: Share) -> list[str]:
    """What makes this run's numbers differ from a single process's, said in the report."""
    from torch import nn

    rows = share.rows.stop - share.rows.start
    batch_norm = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
    # the run puts the model in train mode unless it keeps the user's: then BatchNorm uses batch statistics
    if not any(isinstance(m, batch_norm) and (m.training or not built.keep_mode) for m in built.model.modules()):
        return []
    return [
        f"BatchNorm normalizes each rank's own {rows} rows, not all {share.global_rows}: the layers after it can "
        "differ from a single-process run (use SyncBatchNorm in the model to share batch statistics)"
    ]


# ---- the engine: DDP or FSDP2 ----------------------------------------------------------------


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


# ---- the one cross-rank reduction ------------------------------------------------------------


def merge_ranks(c: Collector, share: Share) -> None:
    """Fold every rank's statistics into each rank's collector, exactly, in two collectives."""
    import torch
    import torch.distributed as dist

    n = len(c.layers)
    dtype, device = c.acc_dtype, c.device
    m = c.moments
    alive = [layer.alive for layer in c.layers if layer.alive is not None]
    summed_host = [float(v) for layer in c.layers for v in (layer.values, layer.grads, layer.spread_values)]
    summed_len = c.sums.numel() + sum(a.numel() for a in alive) + len(summed_host)
    host = [float(layer.weight_grad_batches) for layer in c.layers]
    host += [1.0 if layer.saturation_known else 0.0 for layer in c.layers]
    host += [1.0 if c.backward_done else 0.0, float(summed_len)]
    mine = torch.cat([m.count, m.mean, m.m2, torch.tensor(host, dtype=dtype).to(device)])
    everyone = torch.empty(share.world_size * mine.numel(), dtype=dtype, device=device)
    gather = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
    gather(everyone, mine, group=share.group)
    everyone = everyone.view(share.world_size, -1)
    if len(set(everyone[:, -1].tolist())) != 1:
        raise RunError("the ranks measured different layers (their statistics do not line up)")
    slots = 3 * n
    counts, means, m2s = everyone[:, :slots], everyone[:, slots : 2 * slots], everyone[:, 2 * slots : 3 * slots]
    total = counts.sum(0)
    pooled = (counts * means).sum(0) / total.clamp_min(1)
    spread = means - pooled
    m.m2 = (m2s + counts * spread * spread).sum(0)
    m.mean, m.count = pooled, total
    flags = everyone[:, 3 * slots :].cpu()
    batches = flags[:, :n].amax(0).tolist()  # a rank whose shard is empty saw no weight gradient
    known = flags[:, n : 2 * n].amin(0).tolist()
    backward = bool(flags[:, 2 * n].amax().item())

    # the cosine sums (pairs within each rank's slice) and attention sums add up like the rest; a
    # layer without a record on this rank sends zeros, so every rank sends the same length
    no_pairs = torch.zeros(4, dtype=dtype, device=device)
    correlations = [layer.correlation if layer.correlation is not None else no_pairs for layer in c.layers]
    attention = c.attention.parts() if c.attention is not None else []
    summed = torch.cat(
        [c.sums.reshape(-1), *alive, *correlations, *attention, torch.tensor(summed_host, dtype=dtype).to(device)]
    )
    dist.all_reduce(summed, op=dist.ReduceOp.SUM, group=share.group)
    at = c.sums.numel()
    c.sums = summed[:at].view_as(c.sums)
    for layer in c.layers:
        if layer.alive is not None:
            size = layer.alive.numel()
            layer.alive = summed[at : at + size]
            at += size
    for layer in c.layers:
        layer.correlation = summed[at : at + 4]
        at += 4
    if c.attention is not None:
        for name in c.attention.sums:
            c.attention.sums[name] = summed[at : at + 4]
            at += 4
    totals = summed[at:].cpu().tolist()
    for i, layer in enumerate(c.layers):
        layer.values, layer.grads, layer.spread_values = (int(v) for v in totals[3 * i : 3 * i + 3])
        layer.weight_grad_batches = int(batches[i])
        layer.saturation_known = known[i] > 0
    c.backward_done = backward
