"""The signal-path statistics a collector adds to a row: its role, what a residual block's branch
adds (``branch_ratio``), the pooling-proof backward signal (``grad_scale``) and the relative
weight gradient. docs/verdicts.md derives them."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from probe.model.network import Watched

# Rows that get grad_scale: the ones the gradient rules judge (and the network output).
SCALED_ROLES = ("stream", "head")
# The per-layer accumulator's columns: ||output - input||^2, ||input||^2, sum of ||x_b|| ||g_b||.
EXTRA = 3


def extra_fields(
    weight_grad_norm: float | None,
    watched: Watched,
    residual_values: int,
    scale_samples: int,
    extra: list[float],
    weight_norm: float | None,
) -> dict[str, Any]:
    """A row's role, its weight's scale and the statistics of its per-layer accumulator ``extra``, as LayerStats
    fields (built into the record at once: ``dataclasses.replace`` per row cost the seed's
    network 2% of its pass)."""
    added, base, scale_sum = extra
    branch = math.sqrt(added / base) if residual_values and base > 0 else None
    scale = scale_sum / scale_samples if scale_samples else None
    ratio = None
    if weight_grad_norm is not None and weight_norm is not None and weight_norm > 0:
        ratio = weight_grad_norm / weight_norm
    weight_scale = None
    fan_in, size = watched.fan_in, watched.weight_size
    if weight_norm is not None and fan_in and size:
        weight_scale = weight_norm / math.sqrt(size) / math.sqrt(2.0 / fan_in)
    return {
        "role": watched.role,
        "weight_size": size,
        "normalized": watched.normalized,
        "grad_scale": scale,
        "weight_grad_ratio": ratio,
        "branch_ratio": branch,
        "weight_scale": weight_scale,
    }


def sample_norms(y: torch.Tensor) -> torch.Tensor:
    """Each sample's output norm (the batch is the first dimension)."""
    import torch

    return torch.linalg.vector_norm(y.reshape(y.shape[0], -1), dim=1)


def add_grad_scale(row: torch.Tensor, norms: torch.Tensor, grad: torch.Tensor) -> int:
    """Add sum_b ||x_b|| * ||g_b|| into ``row[2]`` in place; the samples counted (0: shapes differ)."""
    import torch

    if grad.shape[0] != norms.shape[0]:
        return 0
    grad_norms = torch.linalg.vector_norm(grad.reshape(grad.shape[0], -1), dim=1)
    row[2].add_(torch.dot(norms.to(grad_norms.dtype), grad_norms))
    return int(grad.shape[0])


def add_branch(row: torch.Tensor, x: Any, output: Any, y: torch.Tensor, scratch: torch.Tensor) -> int:
    """Add a block's ||output - input||^2 and ||input||^2 into ``row[0:2]`` in place; the values
    counted (0: the input is not a float tensor of the output's shape, or the block ran in place)."""
    import torch

    if not isinstance(x, torch.Tensor) or x is output or x.shape != y.shape or not x.is_floating_point():
        return 0
    x = x.detach().float() if x.dtype in (torch.float16, torch.bfloat16) else x.detach()
    added = torch.sub(y, x, out=scratch).view(-1)
    flat = x.reshape(-1)
    row[0].add_(torch.dot(added, added))
    row[1].add_(torch.dot(flat, flat))
    return int(y.numel())


def plain_weight(w: torch.Tensor | None) -> torch.Tensor | None:
    """``w`` when its norm can be read on this process: a plain tensor, not a shard of a
    distributed one (FSDP2's DTensor) and not on the meta device (a layer-by-layer run)."""
    import torch

    if w is None or w.is_meta or type(w.data) is not torch.Tensor:
        return None
    return w


def weight_norms(weights: list[torch.Tensor | None], acc_dtype: torch.dtype) -> list[torch.Tensor]:
    """The norms of the weights that are there, in each weight's own dtype (a float64 copy of every
    weight would double its memory), as 1-element accumulator-dtype tensors."""
    import torch

    present = [w.detach() for w in weights if w is not None]
    return [
        torch.linalg.vector_norm(w.float() if w.dtype != torch.float64 else w).to(acc_dtype).view(1) for w in present
    ]


def read_weight_norms(weights: list[Any], flat: list[float], at: int) -> tuple[list[float | None], int]:
    """``weight_norms``' values read back from the host list at ``at``; the position after them."""
    norms: list[float | None] = []
    for w in weights:
        norms.append(None if w is None else flat[at])
        at += w is not None
    return norms, at
