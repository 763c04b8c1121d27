"""Several processes, one probe: torchrun ranks share the global batch and merge exactly once.

Under ``torchrun --nproc_per_node N -m probe run SPEC.yaml`` every rank builds the same network
from the same seed and draws the same global batch from the same stream, then keeps its own rows
(``rows``): the ranks' slices together are the single-process batch, and the loss direction is
sliced the same way, so every activation and activation gradient a rank sees is one the single
process sees. The model is replicated or sharded by ``probe.measurement.distributed_engine``, and
the statistics merged once, before the host read, by ``probe.measurement.distributed_merge``.

This module: the process group and this rank's ``Share`` of the run, and its rows of the batch
and of the loss direction.
"""

from __future__ import annotations

import atexit
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from probe.errors import RunError, SpecError
from probe.model.inputs import Batch
from probe.model.network import Built

if TYPE_CHECKING:
    import torch

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
