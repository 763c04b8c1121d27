"""Saturation inside torch's recurrent modules: the gates a fused kernel hides.

``nn.LSTM``, ``nn.GRU`` and ``nn.RNN`` (and their ``*Cell`` forms) compute sigmoid gates and tanh
candidates inside one kernel, so no hook sees them. Their output does not show a saturated net
either: an LSTM's ``h = o * tanh(c)`` with its gates stuck at 0 or 1 reads as ordinary values
in (-1, 1). The mechanism that stops such a network training is inside: a gate on the flat
tail of its sigmoid (``sigma'(z) < c / 4``, |z| > 4.6) or a candidate on the flat tail of its tanh
(``tanh'(z) < c``, |z| > 2.3) passes (almost) no gradient to the weights that feed it; with N(0, 1)
recurrent weights the pre-activations have a standard deviation of about sqrt(fan-in) and most
of them sit there (docs/verdicts.md, ``saturation``).

This module recomputes the pre-activations from the module's own weights and the input the
forward received, with the same equations as torch's documentation of each class, and counts
the saturated ones. It runs under ``no_grad`` on a prefix of the sequence (at most
``MAX_STEPS`` steps per direction: the recurrence from the start is exact on that prefix), one
small matrix product per step and layer; the counts stay on the module's device until the end (no
sync per step). A packed sequence, a stacked bidirectional module over more than ``MAX_STEPS``
steps (its upper layers need the whole sequence), or an input of an unexpected form is "not
measured" (``None``), never a guess. Dropout between stacked layers is not replayed.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from probe.spec.activations import SATURATION_FRACTION

if TYPE_CHECKING:
    import torch
    from torch import nn

MAX_STEPS = 256  # time steps replayed per direction and layer (the saturation of a prefix)
SIGMOID_EDGE = math.log(1.0 / (0.5 - math.sqrt(1.0 - SATURATION_FRACTION) / 2.0) - 1.0)  # |z| beyond: sigma' < c/4
TANH_EDGE = math.atanh(math.sqrt(1.0 - SATURATION_FRACTION))  # |z| beyond: tanh' < c


def saturated_fraction(module: nn.Module, inputs: tuple[Any, ...]) -> float | None:
    """The share of the gates' and candidates' pre-activations on a flat tail, over every gate,
    unit, replayed step and sample of this call; ``None`` where it cannot be replayed exactly."""
    import torch

    x = inputs[0] if inputs else None
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        return None
    hx = inputs[1] if len(inputs) > 1 else None
    return replay(module, x, hx)[0]


def replay(module: nn.Module, x: torch.Tensor, hx: Any = None) -> tuple[float | None, torch.Tensor | None]:
    """The saturated share and the replayed output (the last layer's, time-major, both directions
    concatenated; a cell's new ``h``) where the whole sequence was replayed, else ``None``."""
    import torch
    from torch import nn

    with torch.no_grad():
        if isinstance(module, nn.RNNBase):
            return _layers(module, x, hx)
        return _cell(module, x, hx)


class _Count:
    """Saturated and total pre-activations so far (the saturated count as a tensor on the
    module's device: read once, at the end)."""

    def __init__(self) -> None:
        self.saturated: torch.Tensor | int = 0
        self.total = 0

    def add(self, z: torch.Tensor, edge: float) -> None:
        self.saturated = self.saturated + (z.abs() > edge).sum()
        self.total += z.numel()

    def fraction(self) -> float | None:
        return float(self.saturated) / self.total if self.total else None


def _step(mode: str, count: _Count, gi: torch.Tensor, h: torch.Tensor, c: torch.Tensor | None, w: Any) -> Any:
    """One time step of one direction of one layer: ``gi`` is the input's part of the gates (``x
    W_ih^T + b_ih``); ``w`` the recurrent weight, its bias and the projection. Returns (h, c)."""
    import torch

    w_hh, b_hh, w_hr = w
    gh = h @ w_hh.T
    if b_hh is not None:
        gh = gh + b_hh
    if mode == "LSTM":
        i, f, g, o = (gi + gh).chunk(4, dim=-1)
        for gate in (i, f, o):
            count.add(gate, SIGMOID_EDGE)
        count.add(g, TANH_EDGE)
        assert c is not None
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return (h if w_hr is None else h @ w_hr.T), c
    if mode == "GRU":
        ir, iz, in_ = gi.chunk(3, dim=-1)
        hr, hz, hn = gh.chunk(3, dim=-1)
        r, z = ir + hr, iz + hz
        n = in_ + torch.sigmoid(r) * hn
        count.add(r, SIGMOID_EDGE)
        count.add(z, SIGMOID_EDGE)
        count.add(n, TANH_EDGE)
        zs = torch.sigmoid(z)
        return (1 - zs) * torch.tanh(n) + zs * h, None
    pre = gi + gh  # RNN_TANH
    count.add(pre, TANH_EDGE)
    return torch.tanh(pre), None


def _weights(module: nn.Module, layer: int, suffix: str) -> tuple[Any, Any, tuple[Any, Any, Any]]:
    def get(name: str) -> Any:
        return getattr(module, f"{name}_l{layer}{suffix}", None)

    return get("weight_ih"), get("bias_ih"), (get("weight_hh"), get("bias_hh"), get("weight_hr"))


def _layers(module: nn.RNNBase, x: torch.Tensor, hx: Any) -> tuple[float | None, torch.Tensor | None]:
    import torch

    if x.dim() not in (2, 3):
        return None, None  # (a PackedSequence is not a tensor and never arrives here)
    seq = x if x.dim() == 3 else x.unsqueeze(1)  # unbatched: (T, F) -> (T, 1, F)
    if module.batch_first and x.dim() == 3:
        seq = seq.transpose(0, 1)
    dirs = 2 if module.bidirectional else 1
    steps = seq.shape[0]
    if module.num_layers > 1 and dirs == 2 and steps > MAX_STEPS:
        return None, None  # the reverse direction's early outputs need the whole sequence
    h0, c0 = _initial(module, hx, x.dim() == 2)
    count = _Count()
    layer_in = seq[:MAX_STEPS] if dirs == 1 else seq
    for layer in range(module.num_layers):
        outs = []
        for d in range(dirs):
            w_ih, b_ih, w = _weights(module, layer, "_reverse" if d else "")
            k = layer * dirs + d
            h = _start(h0, k, layer_in, module, proj=True)
            c = _start(c0, k, layer_in, module, proj=False) if module.mode == "LSTM" else None
            order = range(min(steps, MAX_STEPS)) if d == 0 else range(steps - 1, max(-1, steps - 1 - MAX_STEPS), -1)
            ys: dict[int, torch.Tensor] = {}
            for t in order:
                gi = layer_in[t] @ w_ih.T + (b_ih if b_ih is not None else 0)
                h, c = _step(module.mode, count, gi, h, c, w)
                ys[t] = h
            outs.append(ys)
        if dirs == 1:
            layer_in = torch.stack([outs[0][t] for t in sorted(outs[0])])
        elif steps <= MAX_STEPS:  # both directions cover every step
            layer_in = torch.stack([torch.cat([outs[0][t], outs[1][t]], dim=-1) for t in range(steps)])
    whole = steps <= MAX_STEPS
    return count.fraction(), layer_in if whole else None


def _initial(module: nn.RNNBase, hx: Any, unbatched: bool) -> tuple[Any, Any]:
    import torch

    h0, c0 = (hx if isinstance(hx, tuple) else (hx, None)) if hx is not None else (None, None)
    if unbatched:
        h0 = h0.unsqueeze(1) if isinstance(h0, torch.Tensor) else None
        c0 = c0.unsqueeze(1) if isinstance(c0, torch.Tensor) else None
    return h0, c0


def _start(state: Any, k: int, layer_in: torch.Tensor, module: nn.RNNBase, proj: bool) -> torch.Tensor:
    import torch

    if isinstance(state, torch.Tensor):
        return state[k].to(layer_in.dtype)
    size = module.proj_size if proj and getattr(module, "proj_size", 0) > 0 else module.hidden_size
    return layer_in.new_zeros(layer_in.shape[1], size)


def _cell(module: Any, x: torch.Tensor, hx: Any) -> tuple[float | None, torch.Tensor | None]:
    from torch import nn

    mode = "LSTM" if isinstance(module, nn.LSTMCell) else "GRU" if isinstance(module, nn.GRUCell) else "RNN_TANH"
    batch = x if x.dim() == 2 else x.unsqueeze(0)
    h, c = (hx if isinstance(hx, tuple) else (hx, None)) if hx is not None else (None, None)
    h = batch.new_zeros(batch.shape[0], module.hidden_size) if h is None else h.reshape(batch.shape[0], -1)
    if mode == "LSTM":
        c = batch.new_zeros(batch.shape[0], module.hidden_size) if c is None else c.reshape(batch.shape[0], -1)
    count = _Count()
    gi = batch @ module.weight_ih.T + (module.bias_ih if module.bias_ih is not None else 0)
    h, _ = _step(mode, count, gi, h, c, (module.weight_hh, module.bias_hh, None))
    return count.fraction(), h
