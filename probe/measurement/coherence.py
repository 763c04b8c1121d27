"""``coherent_grad_scale``: per sample, the norm of the positions' rank-one gradients summed as a
position-wise map reading the row sums them, ||sum_p x_p g_p^T||, from a record of the row's output
kept until its gradient arrives (docs/verdicts.md: what ``gradient_exploding`` reads)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    import torch

# ``kept_for_coherence``: a row whose exact record (min(units, positions) x positions values per
# sample) would take more than this many bytes keeps a sketch of COHERENT_SKETCH random
# directions of its units instead (relative error about sqrt(2 / COHERENT_SKETCH) on the square),
# and of as many of the batch's first samples as fit.
COHERENT_BYTES = 8 * 2**20
COHERENT_SKETCH = 64
COHERENT_SEED = 20181


class Kept(NamedTuple):
    """A row's output kept for ``coherent_norms``: as (samples, units, positions) (``exact``), its
    Gram matrix over positions (``gram``), or ``R @ x`` for a fixed random ``R`` (``sketch``)."""

    how: str
    value: torch.Tensor


def _by_positions(t: torch.Tensor, unit_dim: int) -> torch.Tensor:
    """``t`` as (samples, units, positions)."""
    if t.dim() == 1:
        return t.reshape(-1, 1, 1)
    return t.movedim(unit_dim, 1).reshape(t.shape[0], t.shape[unit_dim], -1)


def kept_for_coherence(y: torch.Tensor, unit_dim: int, projections: dict[tuple[Any, ...], torch.Tensor]) -> Kept | None:
    """The forward's record of ``y`` (widened, detached) for ``coherent_norms``, None with one
    position per sample: the cheaper exact form, or past COHERENT_BYTES a sketch (``projections``:
    the collector's random matrices, one per width, device and dtype), of the first samples."""
    import torch

    x = _by_positions(y, unit_dim)
    samples, units, positions = x.shape
    if positions == 1:
        return None
    # per sample: the exact record's size and the sketch's; past the budget, the first samples only
    exact, sketch = min(units, positions) * positions, COHERENT_SKETCH * positions
    per_sample = min(exact, sketch) * x.element_size()
    x = x[: max(1, min(samples, COHERENT_BYTES // per_sample))]
    if exact <= sketch or x.shape[0] * exact * x.element_size() <= COHERENT_BYTES:
        if units <= positions:
            return Kept("exact", x.clone())
        return Kept("gram", torch.bmm(x.transpose(1, 2), x))
    key = (units, x.device, x.dtype)
    r = projections.get(key)
    if r is None:
        gen = torch.Generator(device=x.device).manual_seed(COHERENT_SEED)
        r = torch.randn(COHERENT_SKETCH, units, generator=gen, device=x.device, dtype=x.dtype)
        r = projections[key] = r / math.sqrt(COHERENT_SKETCH)
    return Kept("sketch", torch.matmul(r, x))


def coherent_norms(kept: Kept, grad: torch.Tensor, unit_dim: int) -> torch.Tensor:
    """Per sample, ||sum_p x_p g_p^T||_F: the weight gradient a position-wise linear map reading
    this row receives from the sample, its positions summed as that map sums them (where the
    gradient at different positions points different ways, less than sum_p ||x_p|| ||g_p||, the
    triangle inequality's bound ``grad_scale`` takes). The Gram form uses ||X G^T||^2 = <X^T X, G^T G>."""
    import torch

    g = _by_positions(grad, unit_dim)[: kept.value.shape[0]].to(kept.value.dtype)
    if kept.how == "gram":
        gram = torch.bmm(g.transpose(1, 2), g)
        return (kept.value * gram).flatten(1).sum(1).clamp_min(0).sqrt()
    return torch.linalg.vector_norm(torch.bmm(kept.value, g.transpose(1, 2)).flatten(1), dim=1)


def coherent_sum(kept: Kept, grad: torch.Tensor, unit_dim: int) -> torch.Tensor:
    """``coherent_norms`` summed over the batch; a record of the first samples only stands for the
    batch (its mean times the batch)."""
    return coherent_norms(kept, grad, unit_dim).mean() * grad.shape[0]
