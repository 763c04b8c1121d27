"""muP, the maximal update parametrization (Yang et al. 2022, Tensor Programs V), for the spec's
``mlp`` and ``transformer`` (``model.parametrization: mup``).

The variant is microsoft/mup's (``MuReadout`` + ``MuAdam`` after ``set_base_shapes``), relative to
a base width ``B = model.base_width``; at ``width = B`` it is the standard parametrization (SP)
except where said. With ``m = width / B`` (mup's ``width_mult``):

- **which tensor is which**, as ``set_base_shapes`` reads it: the network is planned a second
  time at width ``B`` on the meta device and each parameter's shape compared; a dimension that
  differs grows with width. A tensor with two growing dimensions is *matrix-like* (hidden
  Linear weights; attention's in and out projections; the feed-forward pair), one with one is
  *vector-like* (the input layer, the embedding, the head, biases, norm gains).
- **init**: every weight as the spec's ``init`` fills it (variance ~ 1/fan_in for the usual
  strategies), except the head, multiplied by ``sqrt(m)`` (mup's ``_rescale_parameters``).
- **multipliers**: the head's input is multiplied by ``1 / m`` (``MuReadout``'s output
  multiplier), so the effective head weight has variance ~ 1 / (B width) ~ 1/width^2.
- **Adam learning rates**: a matrix-like tensor's lr is multiplied by ``base fan_in / fan_in``
  (``1 / m``); vector-like tensors keep the given lr (``MuAdam``).
- **attention** (transformer): logits ``q.k * sqrt(d_B) / d`` instead of ``q.k / sqrt(d)`` (muP's
  1/d scaling with ``attn_mult = sqrt(d_B)``, ``d`` the head dimension, ``d_B`` its value at
  ``B``; equal to SP at ``B``), made by multiplying the query input by ``sqrt(B / width)``. Exact
  for the query weight; the query's bias, zero at init, enters the logits at ``1/sqrt(d)``
  rather than muP's ``1/d``.

Not done: muP for SGD (other lr factors; ``probe train --optimizer sgd`` refuses a muP spec),
zero-initialized queries or heads (mup's options, not its defaults), and any other kind.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from probe.spec import ModelSpec, Spec

if TYPE_CHECKING:
    import torch
    from torch import nn

    from probe.model.init_rules import InitLog, InitStep


def readout_multiplier(m: ModelSpec) -> float:
    """The head input's multiplier, ``base_width / width`` (1 under SP)."""
    return m.base_width / m.width if m.parametrization == "mup" else 1.0


def readout_gain(m: ModelSpec) -> float:
    """The head weight's init multiplier, ``sqrt(width / base_width)`` (1 under SP)."""
    return math.sqrt(m.width / m.base_width) if m.parametrization == "mup" else 1.0


def query_multiplier(m: ModelSpec) -> float:
    """The attention query input's multiplier, ``sqrt(base_width / width)`` (1 under SP)."""
    return math.sqrt(m.base_width / m.width) if m.parametrization == "mup" else 1.0


def readout_steps(head: nn.Module | None, m: ModelSpec, logged: tuple[InitLog, str] | None = None) -> list[InitStep]:
    """The head's weight and bias multiplied by ``readout_gain`` after the spec's init (and, with
    ``logged``, its init log entries, ``probe inspect``'s expected std, by the same factor)."""
    from probe.model.init_rules import InitStep

    if head is None or m.parametrization != "mup":
        return []

    def fill() -> None:
        rescale(head, readout_gain(m))
        if logged is not None:
            log, qual = logged
            for name in (f"{qual}.weight", f"{qual}.bias"):
                entry = log.strategies.get(name)
                if entry is not None:
                    log.strategies[name] = (entry[0], entry[1] * readout_gain(m))

    return [InitStep(head, fill)]


def rescale(module: nn.Module, gain: float) -> None:
    """Multiply a module's own ``weight`` and ``bias`` by ``gain`` in place."""
    import torch

    with torch.no_grad():
        for name in ("weight", "bias"):
            t = getattr(module, name, None)
            if t is not None:
                t.mul_(gain)


def base_spec(spec: Spec) -> Spec | None:
    """The spec whose network gives muP's base shapes (``model.base_width``, SP); None where no
    tensor's lr changes (SP, or the width is the base width)."""
    m = spec.model
    if m.parametrization != "mup" or m.width == m.base_width:
        return None
    return replace(spec, model=replace(m, width=m.base_width, parametrization="sp"))


def lr_scales(model: nn.Module, base: nn.Module | None) -> dict[str, float]:
    """Qualified parameter name -> its Adam lr multiplier (only those not 1): ``base fan_in /
    fan_in`` for each tensor whose two first dimensions both differ from the same tensor of
    ``base``, the network at ``model.base_width`` (mup's matrix-like tensors)."""
    if base is None:
        return {}
    base_shapes = {name: tuple(p.shape) for name, p in base.named_parameters()}
    out = {}
    for name, p in model.named_parameters():
        then = base_shapes.get(name)
        if then is None or p.dim() < 2 or len(then) != p.dim():
            continue
        if p.shape[0] != then[0] and p.shape[1] != then[1]:
            out[name] = then[1] / p.shape[1]  # fan_in's ratio (a Linear's weight is (out, in))
    return out


def param_groups(model: nn.Module, lr: float, scales: Mapping[str, float]) -> list[dict[str, Any]]:
    """The model's trainable parameters as optimizer groups, one per lr multiplier in ``scales``
    (muP's Adam learning rates); one group at ``lr`` without any."""
    groups: dict[float, list[torch.Tensor]] = {}
    seen: set[int] = set()
    for name, p in model.named_parameters():
        if p.requires_grad and id(p) not in seen:
            seen.add(id(p))
            groups.setdefault(scales.get(name, 1.0), []).append(p)
    return [{"params": ps, "lr": lr * scale} for scale, ps in groups.items()]
