"""What the model stage hands on: the network and the rows a run watches."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch
    from torch import nn

    from probe.model.init_rules import InitLog
    from probe.model.inputs import InputSpec
    from probe.spec.activations import Saturation


@dataclass
class Watched:
    """A layer whose output is measured, and the weight whose gradient is reported with it."""

    name: str
    index: int
    kind: str  # "hidden" or "output"
    module: nn.Module  # its forward output is the measured activation
    weight: torch.Tensor | None
    units: int
    unit_dim: int  # the dimension that indexes units (features, channels)
    saturation: Saturation | None
    module_type: str = ""  # for the report of non-MLP models: Conv2d, Linear, LSTM, ...
    init_rule: str | None = None  # what initialized ``weight`` (set by ``build``)
    role: str = "stream"  # stream, branch, activation, norm, embedding, head (probe/model/roles.py)
    broadcast: bool = False  # its output has batch size 1 while the batch is larger (a shared table)
    residual: bool = False  # a block whose output has its input's shape: measure what its branch adds


@dataclass
class Built:
    model: nn.Module
    watched: list[Watched]
    inputs: InputSpec | None = None  # None: the MLP's (batch_size, input_dim) features
    notes: list[str] = field(default_factory=list)  # what could not be hooked, and why
    keep_mode: bool = False  # a user model runs in the train/eval mode its factory left it in
    init_log: InitLog | None = None  # which init filled each parameter (``probe inspect``)
