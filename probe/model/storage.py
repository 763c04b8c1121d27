"""A module's tensors moved from the meta device to real CPU storage and back: ``take`` gives them
storage (uninitialized, filled, or views of one reused ``Staging`` buffer), ``release`` sends them
back to the meta device, ``reinstate`` puts the tensors of a scope back as they were.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from torch import nn


def module_tensors(module: nn.Module, recurse: bool) -> Iterator[tuple[nn.Module, str, torch.Tensor, bool]]:
    """(owner, name, tensor, is_parameter) of a module's own tensors, or of its whole subtree."""
    owners = module.modules() if recurse else [module]
    for m in owners:
        for name, p in m.named_parameters(recurse=False):
            yield m, name, p, True
        for name, buf in m.named_buffers(recurse=False):
            if buf is not None:
                yield m, name, buf, False


class Staging:
    """One CPU buffer that ``take`` gives parameters storage in (views), grown to the largest
    request and reused: each request invalidates the views of the one before. Allocating and
    freeing a block's worth per block instead leaves holes in glibc's heap between allocations that
    live on (an FSDP2 rank's shards): measured, building a 256 MiB MLP that way on each of 2 ranks
    kept 942 MiB resident where one block is 16 MiB and a rank's shards 128 MiB
    (benchmarks/distributed_memory.py)."""

    _ALIGN = 64  # bytes: every view starts aligned for any dtype

    def __init__(self) -> None:
        self.buffer: torch.Tensor | None = None

    def views(self, specs: list[tuple[torch.Size, torch.dtype]]) -> list[torch.Tensor]:
        import torch

        offsets, at = [], 0
        for shape, dtype in specs:
            at = -(-at // self._ALIGN) * self._ALIGN
            offsets.append(at)
            at += math.prod(shape) * dtype.itemsize
        if self.buffer is None or self.buffer.numel() < at:
            self.buffer = None  # free the smaller one first
            self.buffer = torch.empty(at, dtype=torch.uint8)
        buffer = self.buffer
        return [
            buffer[o : o + math.prod(shape) * dtype.itemsize].view(dtype).view(shape)
            for o, (shape, dtype) in zip(offsets, specs, strict=True)
        ]


def take(
    module: nn.Module,
    recurse: bool,
    fill: float | None = None,
    scope: list[Any] | None = None,
    staging: Staging | None = None,
) -> list[torch.Tensor]:
    """Give the module's tensors (or those of ``scope``) real CPU storage (float32 as built;
    uninitialized, or ``fill``), the parameters' in ``staging`` if given. Returns them
    (parameters and buffers) in a fixed order."""
    import torch
    from torch import nn

    entries = list(scope if scope is not None else module_tensors(module, recurse))
    views = None
    if staging is not None:
        views = iter(staging.views([(t.shape, t.dtype) for _, _, t, is_param in entries if is_param and t.is_meta]))
    out = []
    for owner, name, t, is_param in entries:
        if t.device.type != "meta":
            out.append(t)
            continue
        if is_param and views is not None:
            real = next(views)
            if fill is not None:
                real.fill_(fill if t.is_floating_point() else 0)
        elif fill is None:
            real = torch.empty(t.shape, dtype=t.dtype, device="cpu")
        else:
            real = torch.full(t.shape, fill if t.is_floating_point() else 0, dtype=t.dtype, device="cpu")
        if is_param:
            owner.register_parameter(name, nn.Parameter(real, requires_grad=t.requires_grad))
        else:
            owner._buffers[name] = real
        out.append(real)
    return out


def release(
    module: nn.Module,
    recurse: bool = True,
    scope: list[Any] | None = None,
    dtypes: dict[tuple[int, str], torch.dtype] | None = None,
) -> None:
    """Back to the meta device: nothing of the module (or of ``scope``) stays in memory. ``dtypes``
    (``MetaModel.built_dtypes``): each tensor's dtype as built, where a cast has changed it."""
    import torch
    from torch import nn

    for owner, name, t, is_param in scope if scope is not None else list(module_tensors(module, recurse)):
        if t.device.type == "meta":
            continue
        dtype = dtypes.get((id(owner), name), t.dtype) if dtypes is not None else t.dtype
        meta = torch.empty(t.shape, dtype=dtype, device="meta")
        if is_param:
            owner.register_parameter(name, nn.Parameter(meta, requires_grad=t.requires_grad))
        else:
            owner._buffers[name] = meta


def reinstate(scope: list[tuple[nn.Module, str, torch.Tensor, bool]]) -> None:
    """Put the scope's own tensors back (as ``blocks.step_scope`` listed them, before ``take``)."""
    for owner, name, t, is_param in scope:
        if is_param:
            owner.register_parameter(name, t)  # type: ignore[arg-type]
        else:
            owner._buffers[name] = t
