"""Small hand-written models for the backward-side mechanisms of issue 18 (dead units, tied units,
zero-initialized layers, small LayerScale, the gradient scale per position): one file, so the
tests (tests/test_mechanisms_backward.py) and the training runs that back the rules
(benchmarks/backward_mechanisms.py) build the same networks."""

from __future__ import annotations

import itertools

import torch
from torch import nn


class LayerScale(nn.Module):
    def __init__(self, dim: int, init: float) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), float(init)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class MLPBlock(nn.Module):
    """A pre-norm residual MLP block whose branch ends in ``end``: ``ls`` a LayerScale of ``init``,
    ``proj`` a zero-initialized projection, ``gain`` a scalar gain of ``init`` (NF-ResNet, ReZero)."""

    def __init__(self, dim: int, end: str = "ls", init: float = 0.0) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, 2 * dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(2 * dim, dim)
        self.end = end
        if end == "ls":
            self.ls = LayerScale(dim, init)
        elif end == "proj":
            nn.init.zeros_(self.fc2.weight)
            nn.init.zeros_(self.fc2.bias)
        elif end == "gain":
            self.gain = nn.Parameter(torch.tensor(float(init)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc2(self.act(self.fc1(self.norm(x))))
        if self.end == "ls":
            h = self.ls(h)
        elif self.end == "gain":
            h = h * self.gain
        return x + h


class ResMLP(nn.Module):
    """Linear embedding, ``depth`` residual MLP blocks, LayerNorm, linear classifier. ``listed``:
    the blocks in a ModuleList (found as blocks); else held as attributes (not found: every row is
    judged as the signal path). ``zero_head``: the classifier's weight and bias 0 (MLP-Mixer, ResMLP)."""

    def __init__(
        self,
        inputs: int = 16,
        dim: int = 32,
        depth: int = 4,
        end: str = "ls",
        init: float = 0.1,
        listed: bool = True,
        zero_head: bool = False,
        classes: int = 10,
    ) -> None:
        super().__init__()
        self.embed = nn.Linear(inputs, dim)
        blocks = [MLPBlock(dim, end, init) for _ in range(depth)]
        self.listed = listed
        self.depth = depth
        if listed:
            self.blocks = nn.ModuleList(blocks)
        else:
            for i, b in enumerate(blocks):
                setattr(self, f"block{i}", b)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, classes)
        if zero_head:
            nn.init.zeros_(self.head.weight)
            nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x.flatten(1))
        blocks = self.blocks if self.listed else [getattr(self, f"block{i}") for i in range(self.depth)]
        for b in blocks:
            x = b(x)
        return self.head(self.norm(x))


class BasicBlock(nn.Module):
    """conv-BN-ReLU-conv-BN + skip, ReLU; ``zero_gamma``: the last BatchNorm's scale starts at 0;
    ``se``: a squeeze-and-excitation gate (ReLU on globally pooled features) on the branch."""

    def __init__(self, channels: int, zero_gamma: bool = False, se: bool = False) -> None:
        super().__init__()
        c = channels
        self.conv1 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.act1 = nn.ReLU()
        self.conv2 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c)
        self.se = SqueezeExcite(c) if se else nn.Identity()
        self.act2 = nn.ReLU()
        if zero_gamma:
            nn.init.zeros_(self.bn2.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act2(x + self.se(self.bn2(self.conv2(self.act1(self.bn1(self.conv1(x)))))))


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int, reduction: int = 4) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(channels, channels // reduction, 1)
        self.act = nn.ReLU()
        self.expand = nn.Conv2d(channels // reduction, channels, 1)
        self.gate = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(self.expand(self.act(self.reduce(x.mean((2, 3), keepdim=True)))))


class ResNet(nn.Module):
    """A strided conv-BN-ReLU stem, ``depth`` basic blocks, global average pool, linear classifier."""

    def __init__(
        self, width: int = 16, depth: int = 3, zero_gamma: bool = False, se: bool = False, circular: bool = False
    ) -> None:
        super().__init__()
        pad = "circular" if circular else "zeros"
        self.stem = nn.Sequential(
            nn.Conv2d(3, width, 3, stride=2, padding=1, bias=False, padding_mode=pad), nn.BatchNorm2d(width), nn.ReLU()
        )
        self.blocks = nn.ModuleList([BasicBlock(width, zero_gamma, se) for _ in range(depth)])
        if circular:
            for m in self.blocks.modules():
                if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3):
                    m.padding_mode = "circular"
        self.head = nn.Linear(width, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for b in self.blocks:
            x = b(x)
        return self.head(x.mean((2, 3)))


class ScaledBlock(nn.Module):
    """A pre-norm attention + MLP block whose two branches end in a LayerScale of ``init`` (CaiT,
    DeiT-III), held by the block itself."""

    def __init__(self, dim: int, init: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, 2, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, 2 * dim)
        self.fc2 = nn.Linear(2 * dim, dim)
        self.ls1 = nn.Parameter(torch.full((dim,), float(init)))
        self.ls2 = nn.Parameter(torch.full((dim,), float(init)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        x = x + self.ls1 * self.attn(h, h, h, need_weights=False)[0]
        return x + self.ls2 * self.fc2(torch.nn.functional.gelu(self.fc1(self.norm2(x))))


class Encoder(nn.Module):
    """A patch-embedding pre-norm transformer encoder read out by a class token (``cls``) or by
    the mean of its tokens (``mean``): the same weights for both readouts. ``layer_scale``: blocks
    whose branches end in a LayerScale of that value (``ScaledBlock``). The class token is the
    model's own parameter, so the model is a row too, whose output is its head's."""

    def __init__(
        self, dim: int = 32, depth: int = 2, patch: int = 4, readout: str = "cls", layer_scale: float | None = None
    ) -> None:
        super().__init__()
        self.patch = nn.Conv2d(3, dim, patch, stride=patch)
        self.cls = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.blocks = nn.ModuleList(
            [
                nn.TransformerEncoderLayer(dim, 2, 2 * dim, dropout=0.0, batch_first=True, norm_first=True)
                if layer_scale is None
                else ScaledBlock(dim, layer_scale)
                for _ in range(depth)
            ]
        )
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, 10)
        self.readout = readout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.patch(x).flatten(2).transpose(1, 2)
        t = torch.cat([self.cls.expand(t.shape[0], -1, -1), t], 1)
        for b in self.blocks:
            t = b(t)
        t = self.norm(t)
        return self.head(t[:, 0] if self.readout == "cls" else t.mean(1))


def mlp(widths: list[int], bias_shift: float = 0.0, zero: bool = False, std: float | None = None) -> nn.Sequential:
    """A ReLU MLP (PyTorch's default init); ``bias_shift`` added to every hidden bias (units whose
    pre-activation is negative for every input die); ``zero``: every weight and bias 0; ``std``:
    N(0, std^2) weights and zero biases."""
    layers: list[nn.Module] = [nn.Flatten()]
    pairs = list(itertools.pairwise(widths))
    for i, (a, b) in enumerate(pairs):
        lin = nn.Linear(a, b)
        if std is not None:
            nn.init.normal_(lin.weight, std=std)
            nn.init.zeros_(lin.bias)
        if zero:
            nn.init.zeros_(lin.weight)
            nn.init.zeros_(lin.bias)
        layers.append(lin)
        if i < len(pairs) - 1:
            with torch.no_grad():
                lin.bias.add_(bias_shift)
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class AdditiveAttentionDecoder(nn.Module):
    """A GRU encoder and a GRU-cell decoder with Bahdanau's additive attention, as tutorials write
    it: score_j = v . tanh(W_enc e_j + W_dec h). ``W_dec h`` is the same for every source position
    j, and the softmax over j ignores such a shift up to tanh's curvature: ``W_dec`` (and ``v``,
    whose scores' gradient sums to 0 over j) have a small effect on the loss by construction, while
    the encoder before them receives its gradient through the attended context."""

    def __init__(self, vocab: int = 32, emb: int = 16, hid: int = 24) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, emb)
        self.encoder = nn.GRU(emb, hid, batch_first=True)
        self.W_enc = nn.Linear(hid, hid, bias=False)
        self.W_dec = nn.Linear(hid, hid)
        self.v = nn.Linear(hid, 1, bias=False)
        self.cell = nn.GRUCell(emb + hid, hid)
        self.out = nn.Linear(2 * hid, vocab)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        enc, last = self.encoder(self.emb(ids))
        h = last[0]
        keys = self.W_enc(enc)
        prev = self.emb(nn.functional.pad(ids[:, :-1], (1, 0)))
        outs = []
        for t in range(ids.shape[1]):
            a = torch.softmax(self.v(torch.tanh(keys + self.W_dec(h)[:, None])).squeeze(-1), dim=1)
            ctx = torch.bmm(a[:, None], enc).squeeze(1)
            h = self.cell(torch.cat([prev[:, t], ctx], -1), h)
            outs.append(self.out(torch.cat([h, ctx], -1)))
        return torch.stack(outs, 1)


class GNBlock(nn.Module):
    """A pre-activation GroupNorm-SiLU residual block whose last convolution is zero-initialized
    (diffusion models' ResBlocks)."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.n1, self.c1 = nn.GroupNorm(8, c), nn.Conv2d(c, c, 3, padding=1)
        self.n2, self.c2 = nn.GroupNorm(8, c), nn.Conv2d(c, c, 3, padding=1)
        nn.init.zeros_(self.c2.weight)
        nn.init.zeros_(self.c2.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.c1(nn.functional.silu(self.n1(x)))
        return x + self.c2(nn.functional.silu(self.n2(h)))


class GNResNet(nn.Module):
    """Stem, a zero-ended ``GNBlock``, a strided convolution, two more blocks, GroupNorm, a linear
    head on the mean over positions. ``scale``: every weight multiplied by it after init."""

    def __init__(self, c: int = 16, scale: float = 1.0) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, c, 3, padding=1)
        self.blocks = nn.Sequential(
            GNBlock(c), nn.Conv2d(c, 2 * c, 3, stride=2, padding=1), GNBlock(2 * c), GNBlock(2 * c)
        )
        self.norm = nn.GroupNorm(8, 2 * c)
        self.head = nn.Linear(2 * c, 10)
        with torch.no_grad():
            for p in self.parameters():
                if p.dim() >= 2:
                    p.mul_(scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = nn.functional.silu(self.norm(self.blocks(self.stem(x))))
        return self.head(h.mean((2, 3)))


class EulerMLP(nn.Module):
    """An input layer, ``depth`` residual tanh MLP blocks (``h + f(h)``), a linear head of
    ``classes`` units. ``scale``: every weight multiplied by it after init; ``bias_scale``: every
    bias (``rank_one_step``: x 1e-3 weights under PyTorch's default biases make every hidden
    value a constant plus a trace of the input)."""

    def __init__(
        self, classes: int = 10, width: int = 64, depth: int = 2, scale: float = 1.0, bias_scale: float = 1.0
    ) -> None:
        super().__init__()
        self.inp = nn.Linear(32, width)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.Linear(width, width), nn.Tanh(), nn.Linear(width, width)) for _ in range(depth)
        )
        self.head = nn.Linear(width, classes)
        with torch.no_grad():
            for m in self.modules():
                if isinstance(m, nn.Linear):
                    m.weight.mul_(scale)
                    m.bias.mul_(bias_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inp(x)
        for b in self.blocks:
            h = h + b(h)
        return self.head(h)
