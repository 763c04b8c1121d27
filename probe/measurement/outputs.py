"""What the model's output is: the floating-point tensors the probe's backward starts from (in a
tensor, tuple, list, dict or dataclass), and, read once from the first batch's output tensor
itself, whether it is probabilities (every sample's values along one dimension sum to 1, none
negative: a softmax's), which a cross-entropy would take for logits (``logits.probability_output``'s
note, docs/verdicts.md)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

# how exactly each slice must sum to 1 (a float32 softmax's rounding: about 1e-7 per value; a
# sigmoid's or a linear map's sums are nowhere near 1 for every sample at once)
SUM_TOLERANCE = 1e-4
# in a low-precision dtype each probability is rounded by half an epsilon of itself, so their sum
# by half an epsilon of 1 (summed here in float64): 4 epsilons leave room, whatever the slice's size
DTYPE_EPSILONS = 4


def probability_classes(out: Any) -> int:
    """The size of the dimension along which ``out`` (the model's output: one float tensor, the
    batch first) holds probabilities, its last or its second (a segmentation map's channels); 0
    where it does not: another type, a non-finite or negative value, or a slice that does not sum
    to 1 within ``SUM_TOLERANCE`` (or ``DTYPE_EPSILONS`` of the dtype's epsilon, where larger)."""
    import torch

    if not isinstance(out, torch.Tensor) or not out.is_floating_point() or out.dim() < 2 or out.numel() == 0:
        return 0
    x = out.detach()
    if not bool(torch.isfinite(x).all()) or bool((x < 0).any()):
        return 0
    for dim in dict.fromkeys((x.dim() - 1, 1)):
        size = x.shape[dim]
        tolerance = max(SUM_TOLERANCE, DTYPE_EPSILONS * torch.finfo(x.dtype).eps)
        if size >= 2 and bool(((x.sum(dim=dim, dtype=torch.float64) - 1.0).abs() <= tolerance).all()):
            return int(size)
    return 0


def _leaves(out: Any) -> list[Any]:
    """The values in a model output's nested tuples, lists, dicts and dataclass instances."""
    if isinstance(out, Mapping):
        out = list(out.values())
    elif dataclasses.is_dataclass(out) and not isinstance(out, type):
        out = [getattr(out, f.name) for f in dataclasses.fields(out)]
    if isinstance(out, (tuple, list)):
        return [leaf for item in out for leaf in _leaves(item)]
    return [out]


def float_outputs(out: Any) -> list[torch.Tensor]:
    """Every floating-point tensor with a gradient in a model output (a tensor, or a tuple, list,
    dict or dataclass holding them, nested): each gets its own random direction in the backward."""
    import torch

    return [t for t in _leaves(out) if isinstance(t, torch.Tensor) and t.is_floating_point() and t.requires_grad]


def no_gradient(out: Any) -> str:
    """Why ``float_outputs(out)`` is empty, in one line for the user."""
    import torch

    tensors = [t for t in _leaves(out) if isinstance(t, torch.Tensor)]
    if not any(t.is_floating_point() for t in tensors):
        found = ", ".join(sorted({type(x).__name__ for x in _leaves(out)})) or type(out).__name__
        return (
            f"the model's output holds no floating-point tensor (found: {found}); probe reads tensors in a "
            "tensor, tuple, list, dict or dataclass: return the logits, or wrap the model so it does"
        )
    return (
        "the model's output has no gradient (no floating-point output depends on a parameter that requires "
        "grad: frozen parameters, torch.no_grad or detach in forward); set run.backward: false to measure "
        "the forward pass only"
    )
