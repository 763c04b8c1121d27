"""The shape of Adam's first update of a weight: how much of ``sign(dL/dW)`` lies on one direction.

Adam's first step moves every element of a weight by ``lr`` in the direction of its gradient's
sign, whatever the gradient's size (bias-corrected ``m / sqrt(v)`` is ``g / |g|`` at step 1). A
weight much smaller than ``lr`` is replaced by that update: after the step it *is*
``-lr * sign(G)``. When the layer's input is nearly the same for every sample (a constant bias,
post-ReLU features averaged over positions), ``G = sum_b delta_b x_b^T`` is nearly
``(sum_b delta_b) c^T``, rank one, and so is its sign: the replaced weight maps every input onto one
direction, and passes back one direction to the layers before it (docs/verdicts.md,
``rank_one_step``). This module measures that share on the first backward's weight gradient.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

# power iterations: a dominant direction converges in a few; the Rayleigh quotient never exceeds
# sigma_1^2, so fewer iterations only lower the share (toward silence). A 50257 x 768 LM head: 0.5 s
# on one CPU thread
ITERATIONS = 10


def rank_one_share(grad_rows: torch.Tensor, acc_dtype: torch.dtype) -> torch.Tensor:
    """sigma_1(S)^2 / ||S||_F^2 for ``S = sign(grad_rows)`` (units x fan-in): 1 for a rank-one
    sign pattern (``sign(u) sign(c)^T``), about ``(1/sqrt(m) + 1/sqrt(n))^2`` for independent signs.
    sigma_1 by power iteration from a fixed start (no random state, no host sync); 0 for an all-zero
    gradient."""
    import torch

    s = torch.sign(grad_rows.detach()).to(torch.float32)
    total = s.abs().sum()
    m = s if s.shape[0] >= s.shape[1] else s.T  # iterate on the smaller side's Gram
    v = torch.linspace(1.0, 2.0, m.shape[1], device=m.device)
    top = torch.zeros((), device=m.device)
    for _ in range(ITERATIONS):  # no host sync: a zero gradient leaves v at 0 and top at 0
        u = m @ v
        top = torch.linalg.vector_norm(u) ** 2 / torch.clamp(torch.linalg.vector_norm(v) ** 2, min=1e-30)
        w = m.T @ u
        v = w / torch.clamp(torch.linalg.vector_norm(w), min=1e-30)
    share = torch.where(total > 0, top / torch.clamp(total, min=1.0), torch.zeros_like(top))
    return share.to(acc_dtype).reshape(1)
