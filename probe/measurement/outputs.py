"""What the model's output is, read once from the first batch's output tensor itself: probabilities
(every sample's values along one dimension sum to 1, none negative: a softmax's), which a
cross-entropy would take for logits (``logits.probability_output``'s note, docs/verdicts.md)."""

from __future__ import annotations

from typing import Any

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
