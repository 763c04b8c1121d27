"""Spec -> the seed architectures: ``conv``, ``residual``, ``transformer``, ``lstm`` and ``gru``.

Each builder returns the model (CPU, float32, not yet initialized by the spec), the layers to
watch and the inputs it takes; ``build.py`` then applies ``init`` the same way for every kind.
Fan-in and fan-out of a Conv2d include the kernel (torch's ``_calculate_fan_in_and_fan_out``).
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING

from probe.model.inputs import InputSpec
from probe.model.network import Watched
from probe.spec import ModelSpec, activations

if TYPE_CHECKING:
    from torch import nn

    from probe.model.init_rules import InitStep


def conv(m: ModelSpec) -> tuple[nn.Module, list[Watched], InputSpec]:
    """Conv2d -> [norm] -> activation, ``depth`` times, optional 2x2 pooling, then a Linear head
    on globally averaged channels."""
    from collections import OrderedDict

    from torch import nn

    act = m.activation
    saturation = activations.saturation(act.name, act.params)
    padding = m.kernel_size // 2 if m.padding is None else m.padding
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    watched: list[Watched] = []
    channels = m.in_channels
    for i in range(1, m.depth + 1):
        layer = nn.Conv2d(channels, m.width, m.kernel_size, stride=m.stride, padding=padding, bias=m.bias)
        layers[f"conv{i}"] = layer
        if m.norm != "none":
            layers[f"norm{i}"] = _norm2d(m.norm, m.width)
        module = activations.make_module(act.name, act.params)
        layers[f"act{i}"] = module
        watched.append(
            Watched(
                f"layer{i}",
                i,
                "hidden",
                module,
                layer.weight,
                m.width,
                1,
                saturation,
                module_type="Conv2d",
                normalized=m.norm != "none",
            )
        )
        if m.pool != "none" and i % m.pool_every == 0:
            layers[f"pool{i}"] = nn.MaxPool2d(2) if m.pool == "max" else nn.AvgPool2d(2)
        channels = m.width
    if m.output_dim is not None:
        layers["gap"] = nn.AdaptiveAvgPool2d(1)
        layers["flatten"] = nn.Flatten()
        head = nn.Linear(channels, m.output_dim, bias=m.bias)
        layers["head"] = head
        watched.append(_output(head, m.depth + 1, m.output_dim))
    image = InputSpec("shape", (m.in_channels, m.image_size, m.image_size))
    return nn.Sequential(layers), watched, image


def residual(m: ModelSpec) -> tuple[nn.Module, list[Watched], InputSpec]:
    """A stem, ``depth`` residual blocks ``x + scale * alpha * branch(x)`` and an optional head.

    The branch is Linear/Conv -> [norm] -> activation -> Linear/Conv -> [norm] (post) or
    [norm] -> Linear/Conv -> activation -> Linear/Conv (pre). ``zero_init: last_norm`` (Fixup
    style) zeroes the last norm's gamma in ``build``; ``rezero`` starts alpha at 0.
    """
    from torch import nn

    from probe.model.nets import ResidualBlock, ResidualNet

    act = m.activation
    is_conv = m.block == "conv"
    unit_dim = 1 if is_conv else -1
    kind = "Conv2d" if is_conv else "Linear"

    def layer(n_in: int) -> nn.Linear | nn.Conv2d:
        if is_conv:
            return nn.Conv2d(n_in, m.width, m.kernel_size, padding=m.kernel_size // 2, bias=m.bias)
        return nn.Linear(n_in, m.width, bias=m.bias)

    def norm() -> nn.Module:
        return _norm2d(m.norm, m.width) if is_conv else _norm1d(m.norm, m.width)

    stem = layer(m.in_channels if is_conv else m.input_dim)
    watched = [Watched("stem", 1, "hidden", stem, stem.weight, m.width, unit_dim, None, module_type=kind)]
    blocks = []
    for i in range(1, m.depth + 1):
        first, second = layer(m.width), layer(m.width)
        parts: list[nn.Module]
        if m.norm == "none":
            parts = [first, activations.make_module(act.name, act.params), second]
        elif m.norm_position == "pre":
            parts = [norm(), first, activations.make_module(act.name, act.params), second]
        else:
            parts = [first, norm(), activations.make_module(act.name, act.params), second, norm()]
        block = ResidualBlock(nn.Sequential(*parts), m.branch_multiplier(), rezero=m.zero_init == "rezero")
        blocks.append(block)
        watched.append(
            Watched(
                f"block{i}",
                i + 1,
                "hidden",
                block,
                first.weight,
                m.width,
                unit_dim,
                None,
                kind,
                residual=True,
                # post-norm: the block's first layer feeds a norm (pre-norm: the norm comes before it)
                normalized=m.norm != "none" and m.norm_position != "pre",
            )
        )
    head = None
    if m.output_dim is not None:
        linear = nn.Linear(m.width, m.output_dim, bias=m.bias)
        head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), linear) if is_conv else linear
        watched.append(_output(linear, m.depth + 2, m.output_dim))
    shape = (m.in_channels, m.image_size, m.image_size) if is_conv else (m.input_dim,)
    return ResidualNet(stem, blocks, head), watched, InputSpec("shape", shape)


def transformer(m: ModelSpec) -> tuple[nn.Module, list[Watched], InputSpec]:
    """Encoder blocks (``nn.TransformerEncoderLayer``, batch first) over token ids (``vocab_size``)
    or continuous ``(seq_len, width)`` inputs; a final LayerNorm when pre-LN; optional head."""
    from torch import nn

    from probe.model import mup
    from probe.model.nets import QueryScaledEncoderLayer, TransformerNet

    act = m.activation
    scaled = m.parametrization == "mup"
    watched: list[Watched] = []
    embed = None
    if m.vocab_size is not None:
        embed = nn.Embedding(m.vocab_size, m.width)
        watched.append(
            Watched("embed", 1, "hidden", embed, embed.weight, m.width, -1, None, "Embedding", role="embedding")
        )
    layers = []
    for i in range(1, m.depth + 1):
        layer_class = partial(QueryScaledEncoderLayer, query_scale=mup.query_multiplier(m)) if scaled else None
        layer = (layer_class or nn.TransformerEncoderLayer)(
            m.width,
            m.heads,
            dim_feedforward=m.ff_width or 4 * m.width,
            dropout=m.dropout,
            activation=activations.make_module(act.name, act.params),
            batch_first=True,
            norm_first=m.norm_first,
            bias=m.bias,
        )
        layers.append(layer)
        watched.append(
            Watched(
                f"block{i}",
                len(watched) + 1,
                "hidden",
                layer,
                layer.linear1.weight,
                m.width,
                -1,
                None,
                "Encoder",
                residual=True,
            )
        )
    norm = nn.LayerNorm(m.width) if m.norm_first else None
    head = None
    if m.output_dim is not None:
        head = nn.Linear(m.width, m.output_dim, bias=m.bias)
        watched.append(_output(head, len(watched) + 1, m.output_dim))
    inputs = (
        InputSpec("tokens", (m.seq_len,), vocab_size=m.vocab_size)
        if m.vocab_size is not None
        else InputSpec("shape", (m.seq_len, m.width))
    )
    return TransformerNet(embed, layers, norm, head, mup.readout_multiplier(m)), watched, inputs


def recurrent(m: ModelSpec) -> tuple[nn.Module, list[Watched], InputSpec]:
    """``depth`` stacked single-layer LSTMs (or GRUs), read at the last step.

    Rows ``t0 .. t{T-1}`` come first: the gradient at input step t is what survived the way back
    through time, so the report's grad ratio (first row / last row) is the gradient through time.
    Rows ``h0 .. h{T-1}`` are the last layer's hidden state at each step (forward signal over
    time; no gradient column), rows ``layer1 ..`` the per-layer outputs over all steps. Sequences
    longer than ``MAX_TIME_ROWS`` show that many evenly spaced steps, always the first and last.
    """
    from torch import nn

    from probe.model.nets import RecurrentNet

    cls = nn.LSTM if m.kind == "lstm" else nn.GRU
    rnns = [cls(m.input_dim if i == 0 else m.width, m.width, batch_first=True, bias=m.bias) for i in range(m.depth)]
    head = nn.Linear(m.width, m.output_dim, bias=m.bias) if m.output_dim is not None else None
    model = RecurrentNet(m.seq_len, rnns, head)
    steps = time_steps(m.seq_len)
    watched = [
        Watched(f"t{t}", t + 1, "hidden", model.steps[t], None, m.input_dim, -1, None, "input step") for t in steps
    ]
    watched += [
        Watched(f"h{t}", len(watched) + 1, "hidden", model.hidden[t], None, m.width, -1, None, "hidden state")
        for t in steps
    ]
    for i, rnn in enumerate(rnns, start=1):
        weight_hh = getattr(rnn, "weight_hh_l0", None)
        watched.append(
            Watched(f"layer{i}", len(watched) + 1, "hidden", rnn, weight_hh, m.width, -1, None, cls.__name__)
        )
    if head is not None:
        watched.append(_output(head, len(watched) + 1, m.output_dim or 1))
    return model, watched, InputSpec("shape", (m.seq_len, m.input_dim), requires_grad=True)


MAX_TIME_ROWS = 8


def time_steps(seq_len: int) -> list[int]:
    """The steps given rows: all of them, or ``MAX_TIME_ROWS`` evenly spaced from 0 to T - 1."""
    if seq_len <= MAX_TIME_ROWS:
        return list(range(seq_len))
    return sorted({round(i * (seq_len - 1) / (MAX_TIME_ROWS - 1)) for i in range(MAX_TIME_ROWS)})


BUILDERS = {"conv": conv, "residual": residual, "transformer": transformer, "lstm": recurrent, "gru": recurrent}


def zero_last_norm_steps(model: nn.Module) -> list[InitStep]:
    """Fixup-style: the last norm of every residual branch starts with gamma = 0 (one step each)."""
    from torch import nn

    from probe.model.init_rules import InitStep
    from probe.model.nets import ResidualBlock

    return [
        InitStep(module.branch[-1], partial(_zero_weight, module.branch[-1]))
        for module in model.modules()
        if isinstance(module, ResidualBlock) and isinstance(module.branch, nn.Sequential)
    ]


def _zero_weight(module: nn.Module) -> None:
    from torch import nn

    weight = getattr(module, "weight", None)
    if weight is not None:
        nn.init.zeros_(weight)


def _output(head: nn.Module, index: int, units: int) -> Watched:
    return Watched("output", index, "output", head, head.weight, units, -1, None, "Linear", role="head")  # type: ignore[arg-type]


def _norm1d(norm: str, width: int) -> nn.Module:
    from torch import nn

    return nn.BatchNorm1d(width) if norm == "batchnorm" else nn.LayerNorm(width)


def _norm2d(norm: str, width: int) -> nn.Module:
    # "layernorm" over a feature map: GroupNorm with one group normalizes each sample's C, H, W
    from torch import nn

    return nn.BatchNorm2d(width) if norm == "batchnorm" else nn.GroupNorm(1, width)
