"""What the first optimizer steps show besides how far they moved (``run.steps``;
probe/measurement/steps.py calls these once per step): Adam's update RMS per tensor, the output's
log-partition, and the loss of the best constant prediction of the steps' target.

- **Adam's update RMS** (Wortsman et al. 2023, arXiv 2304.13013): ``sqrt(mean(g^2 / v_hat))`` over a
  tensor's elements, with ``g`` the step's gradient and ``v_hat`` Adam's bias-corrected second moment
  after the step (here ``(sqrt(v_hat) + eps)^2``, the denominator Adam divides by). At the first step
  ``v_hat = g^2``: every element with a nonzero gradient reads 1 (eps negligible), one with a zero
  gradient 0. Later it is about 1 while the gradient's size is steady; far above 1 the gradient grew
  faster than the second moment follows (``beta2``), so Adam's step is many times ``lr`` per element:
  in their runs such spikes precede loss spikes by a few steps.
- **Log-partition** ``log Z``: the logsumexp over the output's last dimension (its classes, for a
  classifier or a language model's head), averaged over every other position. Output-logit
  divergence (its drift away from 0 step after step) precedes instability (Wortsman et al. 2023,
  arXiv 2309.14322); a softmax's output is unchanged by it, so the loss does not see it coming.
- **The best constant prediction**'s objective: ``mean((t - mean_batch(t))^2)`` for the steps'
  target ``t``, the loss a model that ignored its input would reach at best; the steps' losses read
  against it.
- **The attention-logit max** (``LogitMax``): the largest pre-softmax logit of any attention the
  model computes, before each step and after the last. Attention logits that grow step after step
  collapse the attention onto one key (Wortsman et al. 2023, arXiv 2309.14322; Dehghani et al. 2023)
  before the loss shows it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from probe.measurement.attention import AttentionRecorder, masked_logits

if TYPE_CHECKING:
    import torch


def adam_update_rms(optimizer: torch.optim.Optimizer, params: Iterable[torch.Tensor]) -> dict[int, float]:
    """Each of ``params`` that the last ``optimizer.step()`` stepped (by ``id``): Adam's update RMS
    ``sqrt(mean(g^2 / (sqrt(v_hat) + eps)^2))`` from its ``.grad`` and the optimizer's state (an
    Adam or AdamW: ``exp_avg_sq`` and ``step``). Call after ``step()`` and before ``zero_grad``."""
    import torch

    group_of = {id(p): g for g in optimizer.param_groups for p in g["params"]}
    out: dict[int, float] = {}
    with torch.no_grad():
        for p in params:
            state = optimizer.state.get(p)
            group = group_of.get(id(p))
            if p.grad is None or not state or group is None or "exp_avg_sq" not in state:
                continue
            beta2, eps = group["betas"][1], group["eps"]
            step = float(state["step"])
            if not p.numel():
                continue
            # one temporary, in place: g / (sqrt(v / (1 - beta2^t)) + eps), then its rms
            ratio = state["exp_avg_sq"].float().sqrt().div_(math.sqrt(1.0 - beta2**step)).add_(eps)
            torch.div(p.grad.float(), ratio, out=ratio)
            out[id(p)] = float(torch.linalg.vector_norm(ratio)) / math.sqrt(ratio.numel())
    return out


def log_partition(outputs: Sequence[torch.Tensor]) -> float | None:
    """The mean over positions of ``logsumexp`` over the last dimension, averaged over the outputs
    with a last dimension of 2 or more (None: none has one)."""
    import torch

    with torch.no_grad():
        values = [
            float(torch.logsumexp(o.detach().float(), dim=-1).mean()) for o in outputs if o.dim() and o.shape[-1] > 1
        ]
    return sum(values) / len(values) if values else None


def constant_loss(targets: Sequence[torch.Tensor]) -> float | None:
    """The steps' objective (``mean((out - t)^2)``, averaged over the outputs) of the best output
    that is the same for every sample: each target's mean over its first (batch) dimension.
    None for a batch of one (any constant is then the target itself)."""
    if not targets or any(t.dim() == 0 or t.shape[0] < 2 for t in targets):
        return None
    total = sum(float((t.float() - t.float().mean(0, keepdim=True)).pow(2).mean()) for t in targets)
    return total / len(targets)


class LogitMax(AttentionRecorder):
    """The largest attention logit (masked keys excluded) over the attention the model computes
    while ``watching()``: the attention recorder's detection (``measurement/attention.py``), each
    call reduced to its maximum on the device; ``take()`` reads it and starts over."""

    def __init__(self, model: torch.nn.Module) -> None:
        import torch

        super().__init__(model, torch.float32)
        self.maxima: dict[str, torch.Tensor] = {}

    def _record(self, name: str, logits: torch.Tensor, masked: torch.Tensor | None) -> None:
        import torch

        with torch.no_grad():
            top = masked_logits(logits, masked)[0].amax()
            self.maxima[name] = torch.maximum(self.maxima[name], top) if name in self.maxima else top

    def take(self) -> float | None:
        """The largest logit since the last ``take`` (None: no attention, or every key masked)."""
        values = [float(v) for v in self.maxima.values()]
        self.maxima = {}
        finite = [v for v in values if math.isfinite(v)]
        return max(finite) if finite else None
