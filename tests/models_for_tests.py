"""Small models with the features that break naive hook code, for ``--model`` tests.

Each factory is importable as ``tests.models_for_tests:NAME`` from the repository root.
"""

from __future__ import annotations

import dataclasses
import itertools

import torch
import torch.nn.functional as F
from torch import nn


class AwkwardBlock(nn.Module):
    """In-place ops, a reused module, functional activations and BatchNorm in one block."""

    def __init__(self, channels: int, inplace: bool = True) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=inplace)
        self.inplace = inplace

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        out = self.relu(self.bn(self.conv(x)))
        out = self.conv(out)  # the same conv, reused
        if self.inplace:
            out += shortcut  # in-place residual add
        else:
            out = out + shortcut
        return F.relu(out)  # functional activation: no module to hook


class AwkwardNet(nn.Module):
    """Conv stem, two awkward blocks, a head; returns a dict (or a tuple) of outputs."""

    def __init__(self, channels: int = 4, classes: int = 5, output: str = "dict", inplace: bool = True) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, channels, 3, padding=1)
        self.blocks = nn.Sequential(AwkwardBlock(channels, inplace), AwkwardBlock(channels, inplace))
        self.unused = nn.Linear(3, 3)  # never called in forward
        self.head = nn.Linear(channels, classes)
        self.output = output

    def forward(self, x: torch.Tensor) -> object:
        features = self.blocks(F.relu(self.stem(x)))
        pooled = features.mean(dim=(2, 3))
        logits = self.head(pooled)
        if self.output == "dict":
            return {"logits": logits, "features": pooled, "count": torch.tensor(3)}
        return logits, pooled


def awkward(channels: int = 4, classes: int = 5, output: str = "dict", inplace: bool = True) -> nn.Module:
    return AwkwardNet(channels, classes, output, inplace)


def awkward_eval(channels: int = 4) -> nn.Module:
    return AwkwardNet(channels).eval()


def deep_tanh_mlp(depth: int = 60, width: int = 16) -> nn.Module:
    """Many rows: for the summarized table and --layers."""
    layers: list[nn.Module] = []
    for _ in range(depth):
        layers += [nn.Linear(width, width), nn.Tanh()]
    return nn.Sequential(*layers)


class TokenLSTM(nn.Module):
    """Token ids -> embedding -> LSTM (tuple output) -> head."""

    def __init__(self, vocab: int = 50, width: int = 8) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.lstm = nn.LSTM(width, width, batch_first=True)
        self.head = nn.Linear(width, vocab)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(self.embed(ids))
        return self.head(out)


def token_lstm(vocab: int = 50, width: int = 8) -> nn.Module:
    return TokenLSTM(vocab, width)


class RecurrentLM(nn.Module):
    """A newcomer's language model: embedding, a 2-layer LSTM/GRU/tanh RNN, a vocabulary head."""

    def __init__(self, kind: str = "lstm", vocab: int = 50, width: int = 64) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.rnn = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}[kind](width, width, num_layers=2, batch_first=True)
        self.head = nn.Linear(width, vocab)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(self.embed(ids))
        return self.head(out)


def recurrent_lm(kind: str = "lstm", weights: str = "default") -> nn.Module:
    """``weights: normal1`` draws the recurrent layer's weight matrices from N(0, 1), as
    ``nn.init.normal_`` does when called without a std (the head keeps PyTorch's default)."""
    model = RecurrentLM(kind)
    if weights == "normal1":
        for name, p in model.rnn.named_parameters():
            if name.startswith("weight"):
                nn.init.normal_(p)
    return model


class TwoInputs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 8)
        self.b = nn.Linear(6, 8)

    def forward(self, x: torch.Tensor, *, context: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.a(x) + self.b(context))


def two_inputs() -> nn.Module:
    return TwoInputs()


def make_two_inputs(batch_size: int) -> dict[str, torch.Tensor]:
    """Keyword inputs for ``two_inputs``."""
    return {"x": torch.randn(batch_size, 4), "context": torch.randn(batch_size, 6)}


def failing(size: int = 3) -> nn.Module:
    raise ValueError(f"cannot build a model of size {size}")


def not_a_module() -> object:
    return "a string"


def tied(width: int = 6) -> nn.Module:
    """Two Linear blocks sharing one weight (tied weights)."""
    first, second = nn.Linear(width, width), nn.Linear(width, width)
    second.weight = first.weight
    return nn.Sequential(first, nn.ReLU(), second)


class ExitsInForward(nn.Module):
    """A model whose forward ends the process (``sys.exit``) or raises another BaseException."""

    def __init__(self, raises: str = "exit0") -> None:
        super().__init__()
        self.linear = nn.Linear(4, 4)
        self.raises = raises

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        import sys

        if self.raises == "exit0":
            sys.exit(0)
        if self.raises == "interrupt":
            raise KeyboardInterrupt
        raise GeneratorExit("leaked")
        return self.linear(x)


def exits_in_forward(raises: str = "exit0") -> nn.Module:
    return ExitsInForward(raises)


def exits_in_factory(code: int = 0) -> nn.Module:
    import sys

    sys.exit(code)


def out_of_memory() -> nn.Module:
    raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 64.00 GiB")


@dataclasses.dataclass
class Prediction:
    """A model's own output record (a plain dataclass, not a dict or a transformers ModelOutput)."""

    logits: torch.Tensor
    features: torch.Tensor
    temperature: float = 1.0


class OutputKinds(nn.Module):
    """A 3-layer MLP (width 32) whose forward returns ``output``: ``"dataclass"`` (a ``Prediction``),
    ``"scalar"`` (the logits' mean logsumexp: a forward that returns its own loss-like value),
    ``"ints"`` (the predicted classes only: nothing a gradient can start from); ``init="zeros"``
    zeroes every weight. ``own_scale``: the model holds a 0-d parameter that scales its scalar output
    (so the model itself is a row whose output is one number for the whole batch)."""

    def __init__(
        self, output: str = "dataclass", init: str = "default", width: int = 32, own_scale: bool = False
    ) -> None:
        super().__init__()
        self.output = output
        self.scale = nn.Parameter(torch.ones(())) if own_scale else None
        self.body = nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU())
        self.head = nn.Linear(width, 10)
        if init == "zeros":
            for p in self.parameters():
                nn.init.zeros_(p)

    def forward(self, x: torch.Tensor) -> object:
        features = self.body(x)
        logits = self.head(features)
        if self.output == "scalar":
            loss = logits.logsumexp(-1).mean()
            return loss * self.scale if self.scale is not None else loss
        if self.output == "ints":
            return logits.argmax(-1)
        return Prediction(logits, features)


class PartlyScripted(nn.Module):
    """An MLP whose first layer and ReLU are a ``torch.jit.script``-ed Sequential (takes no hooks)."""

    def __init__(self, width: int = 32) -> None:
        super().__init__()
        self.first = torch.jit.script(nn.Sequential(nn.Linear(width, width), nn.ReLU()))
        self.rest = nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rest(self.first(x))


def scripted(width: int = 32) -> nn.Module:
    """A whole ``torch.jit.script``-ed MLP: nothing in it takes a hook."""
    return torch.jit.script(nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 10)))


class DetachedSideHead(nn.Module):
    """RT-DETR's pattern: a side head of three small Linears (N(0, 0.01^2), as its encoder box head)
    computes reference offsets from the features; their sigmoid, ``.detach()``-ed (``detach=True``)
    or not, scales the features. An MLP of width 64 otherwise at PyTorch's default init."""

    def __init__(self, detach: bool = True, width: int = 64) -> None:
        super().__init__()
        self.detach = detach
        self.body = nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU())
        self.side = nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Linear(width, width), nn.Linear(width, width))
        for m in self.side:
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=0.01)
                nn.init.zeros_(m.bias)
        self.head = nn.Linear(width, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.body(x)
        offsets = self.side(features)
        reference = torch.sigmoid(offsets.detach() if self.detach else offsets)
        return self.head(features * reference)


def few_features_mlp(features: int = 2, width: int = 128, depth: int = 3, he: bool = False) -> nn.Module:
    """A classifier of a few input features (two moons, XOR, a 2-D spiral): ``depth`` Linear layers
    of ``width`` with ReLUs at PyTorch's default init (``he``: He normal weights, zero biases), two
    classes out."""
    sizes = [features] + [width] * (depth - 1)
    layers: list[nn.Module] = []
    for a, b in itertools.pairwise(sizes):
        layers += [nn.Linear(a, b), nn.ReLU()]
    model = nn.Sequential(*layers, nn.Linear(sizes[-1], 2))
    if he:
        for m in model:
            if isinstance(m, nn.Linear):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                nn.init.zeros_(m.bias)
    return model


class FiLMConditioned(nn.Module):
    """A CNN whose second and third convolutions are FiLM-modulated (``gamma * h + beta``) by Linears
    reading a 3-value condition (the image's mean colour), at PyTorch's default init."""

    def __init__(self) -> None:
        super().__init__()
        self.c1, self.c2, self.c3 = (
            nn.Conv2d(3, 32, 3, padding=1),
            nn.Conv2d(32, 64, 3, 2, 1),
            nn.Conv2d(64, 64, 3, 2, 1),
        )
        self.film2, self.film3 = nn.Linear(3, 128), nn.Linear(3, 128)
        self.head = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        condition = x.mean((2, 3))
        h = F.relu(self.c1(x))
        for conv, film in ((self.c2, self.film2), (self.c3, self.film3)):
            gamma, beta = film(condition).chunk(2, 1)
            h = F.relu(gamma[:, :, None, None] * conv(h) + beta[:, :, None, None])
        return self.head(h.mean((2, 3)))


class TimeConditioned(nn.Module):
    """A diffusion-style denoiser: a conv net on ``x`` whose features get a time embedding added, an
    MLP (Linear, SiLU, Linear, PyTorch's default init) on the sinusoidal features of one timestep
    per sample, ``t`` (integers, as schedulers pass them). Its output: the mean feature -> 10 values."""

    def __init__(self, channels: int = 32, frequencies: int = 32) -> None:
        super().__init__()
        self.frequencies = frequencies
        self.conv_in = nn.Conv2d(3, channels, 3, padding=1)
        self.time_mlp = nn.Sequential(nn.Linear(2 * frequencies, 128), nn.SiLU(), nn.Linear(128, channels))
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)
        self.head = nn.Linear(channels, 10)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        k = torch.arange(self.frequencies, device=x.device, dtype=torch.float32)
        angles = t.float()[:, None] * torch.exp(-9.21 * k / self.frequencies)[None]
        time = self.time_mlp(torch.cat([angles.sin(), angles.cos()], dim=1))
        h = F.silu(self.conv_in(x) + time[:, :, None, None])
        return self.head(F.silu(self.conv(h)).mean((2, 3)))


def timesteps(batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``TimeConditioned``'s inputs: noise images and one integer timestep in [0, 1000) per sample."""
    return torch.randn(batch_size, 3, 16, 16), torch.randint(0, 1000, (batch_size,))


def flow_times(batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The same with one continuous time in [0, 1) per sample (flow matching, score SDEs)."""
    return torch.randn(batch_size, 3, 16, 16), torch.rand(batch_size)


def frozen(width: int = 4) -> nn.Module:
    model = nn.Sequential(nn.Linear(width, width), nn.Tanh(), nn.Linear(width, width))
    model.requires_grad_(False)
    return model


class ReluHead(nn.Module):
    """A head whose output is one value per sample: shape ``(batch,)``, after a ReLU."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(width) / width**0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x @ self.weight - 0.3)


def relu_head(width: int = 8) -> nn.Module:
    return nn.Sequential(nn.Linear(width, width), nn.Tanh(), nn.Linear(width, width), ReluHead(width))


def inplace_relu(width: int = 16, depth: int = 3, dtype: str = "float32") -> nn.Module:
    """Linear layers each followed by an in-place ReLU, in float32 or float64."""
    torch.manual_seed(3)
    layers: list[nn.Module] = []
    for _ in range(depth):
        layers += [nn.Linear(width, width), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers).to(getattr(torch, dtype))


def norm_only(width: int = 8) -> nn.Module:
    """No weight with two or more dimensions: an init strategy has nothing to fill."""
    return nn.Sequential(nn.LayerNorm(width), nn.Tanh())


class RarelyFiring(nn.Module):
    """Units that fire on a few samples only (so a unit can be alive on one rank's rows and not
    on another's), a parameter the forward never uses, and a second output whose batch dimension
    is the second one."""

    def __init__(self, width: int = 32) -> None:
        super().__init__()
        self.hidden = nn.Linear(8, width)
        # the default init gives pre-activations of std 1/sqrt(3): biases from -3.5 std (fires on 0.02%
        # of samples) to 0 (half of them)
        with torch.no_grad():
            self.hidden.bias.copy_(torch.linspace(-3.5, 0.0, width) / 3.0**0.5)
        self.act = nn.ReLU()
        self.head = nn.Linear(width, 4)
        self.unused = nn.Linear(2, 2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = self.head(self.act(self.hidden(x)))
        return y, torch.stack([y])  # (1, batch, 4)


def rarely_firing(width: int = 32) -> nn.Module:
    return RarelyFiring(width)


class ReadsValues(nn.Module):
    """A forward that reads a value (as transformers' masks do): it cannot run on the meta device."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = 1.0 if float(x.abs().max().item()) < 1e9 else 0.5
        return torch.tanh(self.linear(x) * scale)


def reads_values() -> nn.Module:
    return ReadsValues()


class FeedsNorm(nn.Module):
    """Four ways a layer's output can meet a normalization: straight into a BatchNorm (``direct``),
    through a ReLU module first (``after_relu``), added to the stream before a LayerNorm
    (``residual``), and permuted to channels-last before a LayerNorm (``channels_last``, as in a
    ConvNeXt block). The structure links ``direct`` and ``channels_last`` to their norm;
    ``after_relu`` is scale-invariant too (a ReLU is positively homogeneous), which only its
    gradient shows; ``residual`` is not (the skip keeps its input's scale)."""

    def __init__(self, channels: int = 4) -> None:
        super().__init__()
        self.direct = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.after_relu = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.relu = nn.ReLU()
        self.bn2 = nn.BatchNorm2d(channels)
        self.channels_last = nn.Conv2d(channels, channels, 3, padding=1, groups=channels, bias=False)
        self.ln1 = nn.LayerNorm(channels)
        self.residual = nn.Linear(channels, channels)
        self.ln2 = nn.LayerNorm(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn1(self.direct(x))
        x = self.bn2(self.relu(self.after_relu(x)))
        x = self.ln1(self.channels_last(x).permute(0, 2, 3, 1))
        return self.ln2(x + self.residual(x))


def feeds_norm(channels: int = 4) -> nn.Module:
    return FeedsNorm(channels)


class FunctionalNorms(nn.Module):
    """Normalizations written as functions, as a newcomer writes them, which no module structure
    shows: ``a`` feeds ``F.layer_norm``, ``b`` feeds a ReLU and a hand-written RMS norm (both
    scale-invariant: the loss cannot see either weight's scale); ``c`` is added to the stream it
    reads and ``head`` makes the output (their scale shows)."""

    def __init__(self, width: int = 32) -> None:
        super().__init__()
        self.a = nn.Linear(width, width)
        self.b = nn.Linear(width, width)
        self.c = nn.Linear(width, width)
        self.head = nn.Linear(width, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.layer_norm(self.a(x), x.shape[-1:])
        h = F.relu(self.b(h))
        h = h / h.pow(2).mean(-1, keepdim=True).add(1e-6).sqrt()
        return self.head(h + self.c(h))


def functional_norms(width: int = 32) -> nn.Module:
    return FunctionalNorms(width)


class GatedBehindNorm(nn.Module):
    """A gated MLP behind a LayerNorm, ``head(norm(down(gelu(gate x) * gelu(up x))))``: ``down``
    feeds the norm directly (blind to its own scale); ``gate`` and ``up`` are not blind singly, but
    gelu is nearly homogeneous on large inputs, so the norm hides their scale jointly (as a MoE
    block's router, gates and experts behind a sandwich norm). ``large`` draws ``gate`` and ``up``
    from N(0, 1), ten times their default scale, and leaves the rest at PyTorch's default."""

    def __init__(self, large: bool = False, width: int = 32, hidden: int = 256) -> None:
        super().__init__()
        self.inp = nn.Linear(8, width)
        self.gate = nn.Linear(width, hidden)
        self.up = nn.Linear(width, hidden)
        self.down = nn.Linear(hidden, width)
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, 4)
        if large:
            nn.init.normal_(self.gate.weight)
            nn.init.normal_(self.up.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.inp(x)
        return self.head(self.norm(self.down(F.gelu(self.gate(x)) * F.gelu(self.up(x)))))


def gated_behind_norm(large: bool = False) -> nn.Module:
    return GatedBehindNorm(large)


def writes_through_data() -> nn.Module:
    """A constructor write through ``.data`` into a row of a weight its Linear drew: no init step replays it."""
    model = nn.Sequential(nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 4))
    model[0].weight.data[0].fill_(0.5)
    return model


class ResetsItsChildren(nn.Module):
    """A ``reset_parameters`` that redraws its children's weights (a resident module writing into blocks)."""

    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 4))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for layer in self.layers:
            if isinstance(layer, nn.Linear):
                nn.init.normal_(layer.weight, std=0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def resets_its_children() -> nn.Module:
    return ResetsItsChildren()


class StackedBlock(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.linear = nn.Linear(width, width)
        self.norm = nn.LayerNorm(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + torch.tanh(self.norm(self.linear(x)))


class Stacked(nn.Module):
    """Equal residual blocks in a ModuleList between a small input layer and a head: most of the
    parameters are in the blocks (what ``run.shard: fsdp`` builds and shards one at a time)."""

    def __init__(self, width: int = 32, depth: int = 6) -> None:
        super().__init__()
        self.inp = nn.Linear(8, width)
        self.blocks = nn.ModuleList(StackedBlock(width) for _ in range(depth))
        self.head = nn.Linear(width, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.inp(x)
        for block in self.blocks:
            x = block(x)
        return self.head(x)


def stacked(width: int = 32, depth: int = 6) -> nn.Module:
    return Stacked(width, depth)


class PassesItsWeight(nn.Module):
    """A block that returns a view of its own weight beside its output: the next block reads it."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.linear = nn.Linear(width, width)

    def forward(self, x: torch.Tensor, carried: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.tanh(self.linear(x) + carried), self.linear.weight[0]


class PassesWeights(nn.Module):
    def __init__(self, width: int = 16, depth: int = 4) -> None:
        super().__init__()
        self.inp = nn.Linear(8, width)
        self.blocks = nn.ModuleList(PassesItsWeight(width) for _ in range(depth))
        self.head = nn.Linear(width, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.inp(x)
        carried = torch.zeros_like(x[0])
        for block in self.blocks:
            x, carried = block(x, carried)
        return self.head(x + carried)


def passes_weights(width: int = 16, depth: int = 4) -> nn.Module:
    return PassesWeights(width, depth)


class EveryContainer(nn.Module):
    """A weight in each container ``init.weight`` must reach (issue 22): nn.MultiheadAttention's packed
    ``in_proj_weight``, an LSTM's ``weight_ih_l0``/``weight_hh_l0``, a layer storing its weight (in, out)
    as transformers' Conv1D does, a depthwise convolution, a custom layer's raw ``weight`` used through
    ``F.linear``; and what it must leave and name: an embedding table, a class token, a raw ``w``."""

    def __init__(self, width: int = 64) -> None:
        super().__init__()
        self.embed = nn.Embedding(11, width)
        self.cls = nn.Parameter(torch.zeros(1, 1, width))
        self.attn = nn.MultiheadAttention(width, 4, batch_first=True)
        self.rnn = nn.LSTM(width, width, batch_first=True)
        self.conv1d = Conv1DLike(width, 2 * width)
        self.depthwise = nn.Conv1d(2 * width, 2 * width, 3, padding=1, groups=2 * width)
        self.custom = CustomLinear(2 * width, width)
        self.w = nn.Parameter(torch.randn(width, width))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.embed(tokens)
        x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], dim=1)
        x = self.attn(x, x, x, need_weights=False)[0]
        x = self.rnn(x)[0]
        x = self.conv1d(x)
        x = self.depthwise(x.transpose(1, 2)).transpose(1, 2)
        x = self.custom(x)
        return torch.nn.functional.linear(x, self.w)


class Conv1DLike(nn.Module):
    """transformers' Conv1D: the weight stored (in, out), the bias of the output's length."""

    def __init__(self, fan_in: int, fan_out: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(fan_in, fan_out) * 0.02)
        self.bias = nn.Parameter(torch.zeros(fan_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.weight + self.bias


class CustomLinear(nn.Module):
    def __init__(self, fan_in: int, fan_out: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(fan_out, fan_in))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.linear(x, self.weight)


def every_container(width: int = 64) -> nn.Module:
    return EveryContainer(width)


def stock_cnn(init: str = "default") -> nn.Module:
    """The stock CNN of docs/examples/my_cnn.py, its weights drawn in its own code as a newcomer
    breaks them: ``normal1`` (every weight matrix N(0, 1)), ``zeros``, ``small`` (x 1e-3)."""
    from docs.examples.my_cnn import build

    model = build()
    with torch.no_grad():
        for p in model.parameters():
            if init == "zeros":
                p.zero_()
            elif init == "small":
                p.mul_(1e-3)
            elif init == "normal1" and p.dim() > 1:
                p.normal_()
    return model


class PositionalEncoder(nn.Module):
    """An nn.TransformerEncoder over token embeddings plus a learned position table, as tutorials write it."""

    def __init__(self, vocab: int = 100, width: int = 64, seq_len: int = 16) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, width)
        self.pos = nn.Parameter(torch.randn(1, seq_len, width) * 0.02)
        layer = nn.TransformerEncoderLayer(width, 4, 2 * width, batch_first=True)
        self.enc = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head = nn.Linear(width, vocab)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.enc(self.emb(tokens) + self.pos[:, : tokens.shape[1]]))


def positional_encoder(init: str = "default") -> nn.Module:
    model = PositionalEncoder()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.LayerNorm):
                continue  # the norms keep their scales, as the zoo's zeros variant does
            for p in module.parameters(recurse=False):
                if init == "normal1" and p.dim() > 1:
                    p.normal_()
                elif init == "zeros":
                    p.zero_()  # every weight matrix, table and bias
    return model


def computes_nan(width: int = 8) -> nn.Module:
    """Every output and gradient is nan: the second Linear's weight is."""
    net = nn.Sequential(nn.Linear(width, width), nn.Tanh(), nn.Linear(width, width))
    with torch.no_grad():
        net[2].weight.fill_(float("nan"))
    return net


class SneakyForward(nn.Module):
    """A model whose forward raises a subclass of probe's own error with exit code 0 (issue 23, item 2)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from probe.errors import SpecError

        class Healthy(SpecError):
            exit_code = 0

        raise Healthy("all good, exit 0")


def sneaky_forward() -> nn.Module:
    return SneakyForward()


class ClearsHooks(nn.Module):
    """A model whose forward removes every forward hook of its modules (issue 23, item 4)."""

    def __init__(self, width: int = 8) -> None:
        super().__init__()
        self.fc1 = nn.Linear(width, width)
        self.fc2 = nn.Linear(width, width)

        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls > self.spared:
            for m in self.modules():
                m._forward_hooks.clear()
        return self.fc2(torch.relu(self.fc1(x)))


def clears_hooks(spared: int = 0) -> nn.Module:
    """``spared``: how many calls keep the hooks (discovery's passes) before they are cleared."""
    model = ClearsHooks()
    model.spared = spared
    return model


class _ZeroLastSE(nn.Module):
    """A residual block whose branch ends in a zero-initialized convolution and a squeeze-excitation
    gate on it (NFNet's layout); ``stride`` 2 makes it a downsampling block with a 1 x 1 shortcut."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1)
        self.conv3 = nn.Conv2d(cout, cout, 3, padding=1)
        nn.init.zeros_(self.conv3.weight)
        nn.init.zeros_(self.conv3.bias)
        self.fc1 = nn.Conv2d(cout, cout // 4, 1)
        nn.init.zeros_(self.fc1.bias)  # (NFNet's init: every bias 0)
        self.act = nn.ReLU()
        self.fc2 = nn.Conv2d(cout // 4, cout, 1)
        self.shortcut = nn.Conv2d(cin, cout, 1, stride=stride) if stride != 1 or cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv3(F.relu(self.conv1(x)))
        gate = torch.sigmoid(self.fc2(self.act(self.fc1(h.mean((2, 3), keepdim=True)))))
        return F.relu(self.shortcut(x) + h * gate)


def zero_last_se_net() -> nn.Module:
    """Stem, then downsampling and plain blocks whose branches end in a zero convolution and a
    squeeze-excitation (an NF-ResNet-like net at init), mean pool, classifier."""
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        _ZeroLastSE(8, 16, stride=2),
        _ZeroLastSE(16, 16),
        _ZeroLastSE(16, 32, stride=2),
        _ZeroLastSE(32, 32),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(32, 10),
    )


class _VmappedMixer(nn.Module):
    """A model that maps a module over an axis with ``torch.vmap`` (as S5 implementations and model
    ensembles do): ``mix`` runs on one sample's (channels, length) at a time, inside the transform."""

    def __init__(self, channels: int = 4, length: int = 8, classes: int = 5) -> None:
        super().__init__()
        self.embed = nn.Linear(length, length)
        self.mix = nn.Sequential(nn.Linear(length, length), nn.Tanh())
        self.head = nn.Linear(channels * length, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.embed(x)
        y = torch.vmap(self.mix)(y)  # batched wrappers inside: the hooks of mix and its children see them
        return self.head(y.flatten(1))


def vmapped_mixer() -> nn.Module:
    return _VmappedMixer()


class _AllVmapped(nn.Module):
    """Every module runs inside ``torch.vmap``: nothing a row can measure."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.vmap(self.net)(x)


def all_vmapped() -> nn.Module:
    return _AllVmapped()


class _CompiledParts(nn.Module):
    """A model as users compile parts of it: a child under ``torch.compile`` and a child compiled
    in place (``Module.compile()``); the factory ``compiled`` compiles the whole model too."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Linear(8, 32)
        self.body = torch.compile(nn.Sequential(nn.ReLU(), nn.Linear(32, 32), nn.ReLU()))
        self.head = nn.Linear(32, 4)
        self.head.compile()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(self.stem(x)))


def compiled() -> nn.Module:
    return torch.compile(_CompiledParts())


class _BodyAndHead(nn.Module):
    """A conv body and a linear head; ``cut``: how the body is cut from the loss. ``"frozen"``:
    ``requires_grad_(False)`` (meant: nothing to say); ``"no_grad"``: run under ``torch.no_grad()``
    with its parameters still requiring a gradient; ``"reentrant"``: wrapped in a reentrant
    checkpoint on the pixels (no input requires a gradient, so its output does not either)."""

    def __init__(self, cut: str = "none") -> None:
        super().__init__()
        self.cut = cut
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU(), nn.Conv2d(8, 16, 3, 2, 1), nn.ReLU())
        self.head = nn.Linear(16, 10)
        if cut == "frozen":
            self.body.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.cut == "no_grad":
            with torch.no_grad():
                h = self.body(x)
        elif self.cut == "reentrant":
            from torch.utils.checkpoint import checkpoint

            h = checkpoint(self.body, x, use_reentrant=True)
        else:
            h = self.body(x)
        return self.head(h.mean(dim=(2, 3)))


def body_and_head(cut: str = "none") -> nn.Module:
    return _BodyAndHead(cut)


class _HeldOutside(nn.Module):
    """An MLP whose hidden layers are held the ways a newcomer holds them. ``how``: ``"list"``, a
    plain Python list; ``"tensor"``, the layers registered but one more weight and bias kept as
    plain tensors with ``requires_grad``;
    ``"dict"``, every layer in a plain dict (nothing registered at all); ``"modulelist"``, the
    right way (``nn.ModuleList``)."""

    def __init__(self, how: str = "list", width: int = 32, depth: int = 3) -> None:
        super().__init__()
        self.how = how
        layers = [nn.Linear(16 if i == 0 else width, width) for i in range(depth)]
        if how == "dict":
            self.parts = {"hidden": layers, "head": nn.Linear(width, 10)}
            return
        self.layers = layers if how == "list" else nn.ModuleList(layers)
        if how == "tensor":
            self.scale = torch.randn(width, width, requires_grad=True)
            self.shift = torch.zeros(width, requires_grad=True)
        self.head = nn.Linear(width, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = self.parts if self.how == "dict" else {"hidden": self.layers, "head": self.head}
        for layer in parts["hidden"]:
            x = torch.relu(layer(x))
        if self.how == "tensor":
            x = torch.relu(x @ self.scale / self.scale.shape[0] ** 0.5 + self.shift)
        return parts["head"](x)


def held_outside(how: str = "list") -> nn.Module:
    return _HeldOutside(how)


def plain_vgg(init: str = "default", bn: bool = False, depth: int = 16) -> nn.Module:
    """VGG's layout at a quarter of its width for 32 x 32 images, as a newcomer writes it (Conv-ReLU
    stacks and max pools, no normalization unless ``bn``, Flatten, one Linear): ``depth`` 11, 16 or 19
    weight layers. ``init``: ``"default"`` (PyTorch's: each conv passes 1/6 of its input's second
    moment, the default biases stay) or ``"he"`` (kaiming normal, fan-out, as torchvision's VGG)."""
    stages = {11: (1, 1, 2, 2, 2), 16: (2, 2, 3, 3, 3), 19: (2, 2, 4, 4, 4)}[depth]
    layers: list[nn.Module] = []
    channels = 3
    for width, convs in zip((16, 32, 64, 128, 128), stages, strict=True):
        for _ in range(convs):
            conv = nn.Conv2d(channels, width, 3, padding=1)
            if init == "he":
                nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
            layers += [conv, *([nn.BatchNorm2d(width)] if bn else []), nn.ReLU()]
            channels = width
        layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(channels, 10))


class _ReluLogits(nn.Module):
    """An MLP classifier with a ReLU on its logits, as SqueezeNet's classifier and some newcomers
    write it. ``dead`` of its 10 classes get a bias of -10, so their logits are 0 for every sample
    and pass no gradient back; ``relu=False``: the same network without the last ReLU."""

    def __init__(self, dead: int = 3, relu: bool = True) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(16, 64), nn.ReLU())
        self.classifier = nn.Linear(64, 10)
        self.out = nn.ReLU() if relu else nn.Identity()
        with torch.no_grad():
            self.classifier.bias[:dead] = -10.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.classifier(self.body(x)))


def relu_logits(dead: int = 3, relu: bool = True) -> nn.Module:
    return _ReluLogits(dead, relu)


class _TestTimePool(nn.Module):
    """A network whose eval-mode forward differs (a test-time pool, as Cadene's DPN: a 7 x 7 window
    that a full-size image's final map fits) and fails on small inputs; train mode runs anywhere."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, stride=4, padding=1)
        self.bn = nn.BatchNorm2d(16)
        self.fc = nn.Conv2d(16, 10, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.bn(self.conv(x)))
        if not self.training:
            h = torch.nn.functional.avg_pool2d(h, kernel_size=7, stride=1)
        return self.fc(torch.nn.functional.adaptive_avg_pool2d(h, 1)).flatten(1)


def test_time_pool() -> nn.Module:
    return _TestTimePool()


class _Residual(nn.Module):
    def __init__(self, branch: nn.Module) -> None:
        super().__init__()
        self.branch = branch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.branch(x)


def residual_stack(blocks: int = 24, head_bias_std: float = 0.0) -> nn.Module:
    """A newcomer's residual CNN at PyTorch's default init: a stem conv, ``blocks`` x (x + ReLU(BN(
    conv(x)))), global average pool, one Linear. Each branch adds a positive mean to the stream, so
    its mean grows with depth (16 after 30 blocks) and the head maps it to a per-class offset every
    sample shares: 24 blocks start near 5 times a constant guess's loss and train. With
    ``head_bias_std``, the pooled features are centered (BatchNorm1d without affine) and the head's
    bias is drawn N(0, std^2): an offset as large that only the bias can remove."""
    width = 16
    layers: list[nn.Module] = [nn.Conv2d(3, width, 3, padding=1)]
    for _ in range(blocks):
        layers.append(_Residual(nn.Sequential(nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU())))
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    head = nn.Linear(width, 10)
    if head_bias_std:
        layers.append(nn.BatchNorm1d(width, affine=False))
        nn.init.normal_(head.bias, std=head_bias_std)
    return nn.Sequential(*layers, head)


class _SoftmaxInForward(nn.Module):
    """The same classifier written as a class, the softmax called in ``forward``."""

    def __init__(self, classes: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(3 * 32 * 32, 128)
        self.fc2 = nn.Linear(128, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.softmax(self.fc2(torch.relu(self.fc1(x.flatten(1)))), dim=1)


def softmax_classifier(last: str = "softmax", classes: int = 10) -> nn.Module:
    """A newcomer's MLP classifier for 3 x 32 x 32 images ending in ``last``: ``"softmax"``
    (``nn.Softmax(dim=1)``, the mistake before ``nn.CrossEntropyLoss``), ``"functional"``
    (``F.softmax`` in the model's forward), ``"sigmoid"``, ``"log_softmax"`` or ``"none"`` (logits)."""
    if last == "functional":
        return _SoftmaxInForward(classes)
    ends = {"softmax": nn.Softmax(dim=1), "sigmoid": nn.Sigmoid(), "log_softmax": nn.LogSoftmax(dim=1)}
    tail = [ends[last]] if last in ends else []
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 128), nn.ReLU(), nn.Linear(128, classes), *tail)
