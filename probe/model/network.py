"""What the model stage hands on: the network and the rows a run watches."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from torch import nn

    from probe.model.init_rules import InitLog, InitStep
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
    samples_first: bool = True  # its output's first dimension holds one row per sample (collapse compares them)
    residual: bool = False  # a block whose output has its input's shape: measure what its branch adds
    # its output goes straight into a normalization (BatchNorm after a conv, LayerNorm after a
    # depthwise conv): the forward pass cannot see ``weight``'s scale, the optimizer's steps can
    normalized: bool = False
    # the normalization that reads this row's output, where every module reading it is a
    # normalization or a residual block (a pre-norm stream): its scale is divided out forward
    norm_reader: str | None = None
    # ``weight`` is only ever added to what the module computes (a position table, from parameters
    # alone): it has no fan-in, and no weight scale
    added_table: bool = False
    # the model's inputs (positions, keywords) its output is computed from (None: not known): the
    # directions its samples can differ in are at most theirs (measurement/correlation.py)
    inputs_of: frozenset[Any] | None = None
    # a residual add added its output to the stream: the last layer of a residual branch
    branch_end: bool = False
    # a residual block's input that its output continues (a position or a keyword; None: the first)
    stream_input: int | str | None = None
    # which floating-point tensor of its output the row measures (``output_tensor``): a block
    # returning a dict or tuple is measured on its stream
    output_index: int = 0
    # the row whose output tensor this row returns as its own (a model returning its head's
    # logits): the same values, judged at that row; "" for its own output
    output_of: str = ""
    # the row whose output tensor this row returns, a block's included (a block without a skip
    # whose last layer is a LayerScale returns that layer's output): what made its values
    returns: str = ""
    # ``weight``'s fan-in (torch.nn.init's, on Conv1D's transposed layout) and element count, read
    # once here: a layer-by-layer run swaps the weight for its norm before the report is made
    fan_in: int | None = field(default=None, init=False)
    weight_size: int | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        if self.weight is not None and self.weight.dim() >= 2:
            from probe.model.init_rules import oriented
            from probe.spec.inits import fans

            self.fan_in = fans(tuple(oriented(self.module, self.weight).shape))[0]
            self.weight_size = self.weight.numel()


def output_tensor(output: Any, index: int = 0) -> torch.Tensor | None:
    """The ``index``-th floating-point tensor of a module output (a tensor; tuples, lists and
    dicts in order, nested), or None."""
    import torch

    found: list[torch.Tensor] = []

    def walk(x: Any) -> bool:
        if isinstance(x, torch.Tensor):
            if x.is_floating_point():
                found.append(x)
            return len(found) > index
        items = x.values() if isinstance(x, dict) else x if isinstance(x, (tuple, list)) else ()
        return any(walk(item) for item in items)

    return found[index] if walk(output) else None


def measurable(tensor: torch.Tensor) -> bool:
    """Whether a row can measure ``tensor``: floating point, not empty, not one number for the whole
    batch (0-d: no samples), and not a function transform's wrapper (``under_transform``)."""
    return tensor.is_floating_point() and tensor.dim() > 0 and tensor.numel() > 0 and not under_transform(tensor)


def under_transform(tensor: torch.Tensor) -> bool:
    """Whether ``tensor`` is a function transform's wrapper (a module called inside ``torch.vmap``
    or ``torch.func.grad``: a batched or level-tracking tensor): its values are not the batch's and
    its in-place and ``out=`` ops have no batching rule, so no row measures it."""
    import torch

    wrapped = getattr(torch._C._functorch, "is_functorch_wrapped_tensor", None)
    return bool(wrapped is not None and wrapped(tensor))


@dataclass
class Built:
    model: nn.Module
    watched: list[Watched]
    inputs: InputSpec | None = None  # None: the MLP's (batch_size, input_dim) features
    notes: list[str] = field(default_factory=list)  # what could not be hooked, and why
    keep_mode: bool = False  # a user model runs in the train/eval mode its factory left it in
    init_log: InitLog | None = None  # which init filled each parameter (``probe inspect``)
    lr_scale: dict[str, float] = field(default_factory=dict)  # parameter -> lr multiplier (muP; probe/model/mup.py)
    # weights the forward used outside model.parameters(), their share of the weights it used
    unregistered: tuple[tuple[str, ...], float] = ((), 0.0)
    # the first batch's output holds probabilities along a dimension of this size (0: it does not)
    probability_classes: int = 0

    def first_batch(self) -> dict[str, Any]:
        """What the first batch's pass found about the model as a whole, as ``Stats`` fields."""
        return {
            "unregistered": self.unregistered[0],
            "unregistered_share": self.unregistered[1],
            "probability_classes": self.probability_classes,
        }


@dataclass
class Plan:
    """``build`` in two halves, so that a meta-device build can replay the first: the network as
    its constructors left it (``model``), the init program ``build`` runs on it next (``steps``, in
    order), and ``finish``, which makes the Built once the steps have run (a user or transformers
    model: its rows, found by one forward pass)."""

    model: nn.Module
    steps: list[InitStep]
    finish: Callable[[], Built]


def placement(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    """Where a model's inputs go: the device and floating dtype of its first parameter (a user
    factory may return a model already on a GPU or in float64); CPU float32 without one."""
    import torch

    first = next(model.parameters(), None)
    device = first.device if first is not None else torch.device("cpu")
    dtype = first.dtype if first is not None and first.is_floating_point() else torch.float32
    return device, dtype


def is_recurrent(module: nn.Module) -> bool:
    """A torch recurrent layer or cell whose gates ``probe.measurement.recurrent`` replays."""
    from torch import nn

    if isinstance(module, nn.RNNBase):
        return module.mode in ("LSTM", "GRU", "RNN_TANH")
    if isinstance(module, nn.RNNCell):
        return module.nonlinearity == "tanh"
    return isinstance(module, (nn.LSTMCell, nn.GRUCell))
