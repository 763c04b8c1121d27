"""Models as tutorials and newcomers write them, and the mechanisms of issue 18 in their usual form.

Each factory returns an ``nn.Module`` at the init its authors give it (PyTorch's default unless the
docstring says otherwise); the zoo's ``apply_init`` changes it for the other inits. Image models take
``pixel_values`` (B, 3, 32, 32); token models ``input_ids`` (B, T) below ``VOCAB``; vector models
``x`` (B, 32). Models with ``head=True`` in the registry end in their own 10-way classifier (or a
vocabulary-sized one for the language models).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

CLASSES = 10
VOCAB = 64
VECTOR = 32


# ---- MLPs ----------------------------------------------------------------------------------------


def mlp_relu() -> nn.Module:
    """Linear-ReLU x3 and a linear 10-way head, PyTorch default init."""
    return nn.Sequential(
        nn.Linear(VECTOR, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10)
    )


def mlp_tanh() -> nn.Module:
    """Linear-Tanh x3 and a linear head, Xavier normal weights, zero biases (the textbook recipe)."""
    net = nn.Sequential(
        nn.Linear(VECTOR, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 10)
    )
    for m in net:
        if isinstance(m, nn.Linear):
            nn.init.xavier_normal_(m.weight)
            nn.init.zeros_(m.bias)
    return net


def mlp_sigmoid() -> nn.Module:
    """A sigmoid stack of depth 4, PyTorch default init (the positive-feature case of mechanism 4)."""
    layers: list[nn.Module] = []
    width = VECTOR
    for _ in range(4):
        layers += [nn.Linear(width, 64), nn.Sigmoid()]
        width = 64
    return nn.Sequential(*layers, nn.Linear(64, 10))


def mlp_bn() -> nn.Module:
    """Sequential(Linear, BatchNorm1d, ReLU) x3 and a head: the Sequential(Linear, BatchNorm) of mechanism 6."""
    return nn.Sequential(
        nn.Linear(VECTOR, 64),
        nn.BatchNorm1d(64),
        nn.ReLU(),
        nn.Linear(64, 64),
        nn.BatchNorm1d(64),
        nn.ReLU(),
        nn.Linear(64, 64),
        nn.BatchNorm1d(64),
        nn.ReLU(),
        nn.Linear(64, 10),
    )


def mlp_gelu_ln() -> nn.Module:
    """Linear-LayerNorm-GELU x3 and a head."""
    layers: list[nn.Module] = []
    width = VECTOR
    for _ in range(3):
        layers += [nn.Linear(width, 64), nn.LayerNorm(64), nn.GELU()]
        width = 64
    return nn.Sequential(*layers, nn.Linear(64, 10))


class AttrBlocksMLP(nn.Module):
    """Residual MLP blocks held as attributes (``self.block1``, ``self.block2``, ...) rather than in a container."""

    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(VECTOR, 64)
        self.block1 = nn.Sequential(nn.LayerNorm(64), nn.Linear(64, 128), nn.GELU(), nn.Linear(128, 64))
        self.block2 = nn.Sequential(nn.LayerNorm(64), nn.Linear(64, 128), nn.GELU(), nn.Linear(128, 64))
        self.block3 = nn.Sequential(nn.LayerNorm(64), nn.Linear(64, 128), nn.GELU(), nn.Linear(128, 64))
        self.norm = nn.LayerNorm(64)
        self.head = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inp(x)
        h = h + self.block1(h)
        h = h + self.block2(h)
        h = h + self.block3(h)
        return self.head(self.norm(h))


class Highway(nn.Module):
    """A highway network: y = T * H(x) + (1 - T) * x, gate bias -2 as in the paper."""

    def __init__(self, layers: int = 4) -> None:
        super().__init__()
        self.inp = nn.Linear(VECTOR, 64)
        self.h = nn.ModuleList(nn.Linear(64, 64) for _ in range(layers))
        self.t = nn.ModuleList(nn.Linear(64, 64) for _ in range(layers))
        for t in self.t:
            nn.init.constant_(t.bias, -2.0)
        self.head = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.inp(x))
        for hl, tl in zip(self.h, self.t, strict=True):
            gate = torch.sigmoid(tl(h))
            h = gate * F.relu(hl(h)) + (1 - gate) * h
        return self.head(h)


class ResMLPBlock(nn.Module):
    """ResMLP's block: Affine -> token-mixing linear -> LayerScale, Affine -> MLP -> LayerScale."""

    def __init__(self, dim: int, tokens: int, init_scale: float) -> None:
        super().__init__()
        self.norm1_alpha = nn.Parameter(torch.ones(dim))
        self.norm1_beta = nn.Parameter(torch.zeros(dim))
        self.token_mix = nn.Linear(tokens, tokens)
        self.ls1 = nn.Parameter(init_scale * torch.ones(dim))
        self.norm2_alpha = nn.Parameter(torch.ones(dim))
        self.norm2_beta = nn.Parameter(torch.zeros(dim))
        self.fc1 = nn.Linear(dim, 4 * dim)
        self.fc2 = nn.Linear(4 * dim, dim)
        self.ls2 = nn.Parameter(init_scale * torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x * self.norm1_alpha + self.norm1_beta
        x = x + self.ls1 * self.token_mix(y.transpose(1, 2)).transpose(1, 2)
        y = x * self.norm2_alpha + self.norm2_beta
        return x + self.ls2 * self.fc2(F.gelu(self.fc1(y)))


class ResMLP(nn.Module):
    """ResMLP (patch 4, dim 64, 4 blocks, LayerScale 0.1) with timm's zero-init classifier."""

    def __init__(self, dim: int = 64, depth: int = 4, zero_head: bool = True) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, dim, 4, stride=4)
        self.blocks = nn.Sequential(*(ResMLPBlock(dim, 64, 0.1) for _ in range(depth)))
        self.norm_alpha = nn.Parameter(torch.ones(dim))
        self.norm_beta = nn.Parameter(torch.zeros(dim))
        self.head = nn.Linear(dim, CLASSES)
        if zero_head:
            nn.init.zeros_(self.head.weight)
            nn.init.zeros_(self.head.bias)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        x = self.stem(pixel_values).flatten(2).transpose(1, 2)
        x = self.blocks(x)
        x = x * self.norm_alpha + self.norm_beta
        return self.head(x.mean(1))


class MixerBlock(nn.Module):
    def __init__(self, dim: int, tokens: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.token_mlp = nn.Sequential(nn.Linear(tokens, 2 * tokens), nn.GELU(), nn.Linear(2 * tokens, tokens))
        self.norm2 = nn.LayerNorm(dim)
        self.channel_mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.token_mlp(self.norm1(x).transpose(1, 2)).transpose(1, 2)
        return x + self.channel_mlp(self.norm2(x))


class MLPMixer(nn.Module):
    """MLP-Mixer (patch 4, dim 64, 4 blocks) with the zero-init classifier of the reference code."""

    def __init__(self, dim: int = 64, depth: int = 4, zero_head: bool = True) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, dim, 4, stride=4)
        self.blocks = nn.Sequential(*(MixerBlock(dim, 64) for _ in range(depth)))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, CLASSES)
        if zero_head:
            nn.init.zeros_(self.head.weight)
            nn.init.zeros_(self.head.bias)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        x = self.stem(pixel_values).flatten(2).transpose(1, 2)
        return self.head(self.norm(self.blocks(x)).mean(1))


# ---- CNNs ----------------------------------------------------------------------------------------


def stock_cnn() -> nn.Module:
    """The tutorial CNN: Conv-ReLU x3 with two MaxPools, Flatten, Linear-ReLU-Linear; PyTorch default init."""
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 32, 3, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(32 * 8 * 8, 64),
        nn.ReLU(),
        nn.Linear(64, CLASSES),
    )


def lenet() -> nn.Module:
    """LeNet-5 as the classic tutorials write it: tanh, average pooling."""
    return nn.Sequential(
        nn.Conv2d(3, 6, 5),
        nn.Tanh(),
        nn.AvgPool2d(2),
        nn.Conv2d(6, 16, 5),
        nn.Tanh(),
        nn.AvgPool2d(2),
        nn.Flatten(),
        nn.Linear(16 * 5 * 5, 120),
        nn.Tanh(),
        nn.Linear(120, 84),
        nn.Tanh(),
        nn.Linear(84, CLASSES),
    )


def vgg_bn() -> nn.Module:
    """A small VGG with BatchNorm: (conv-BN-ReLU) x2 per stage, three stages, global pool, linear head."""
    layers: list[nn.Module] = []
    c_in = 3
    for width in (16, 32, 64):
        for _ in range(2):
            layers += [nn.Conv2d(c_in, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
            c_in = width
        layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, CLASSES))


class Conv1dText(nn.Module):
    """A 1-D CNN text classifier: embedding, two conv1d-ReLU, max over time, linear."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, 32)
        self.conv1 = nn.Conv1d(32, 64, 3, padding=1)
        self.conv2 = nn.Conv1d(64, 64, 3, padding=1)
        self.head = nn.Linear(64, CLASSES)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        x = self.embed(input_ids).transpose(1, 2)
        x = F.relu(self.conv2(F.relu(self.conv1(x))))
        return self.head(x.amax(dim=2))


class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int, zero_gamma: bool) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        if zero_gamma:
            nn.init.zeros_(self.bn2.weight)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += self.shortcut(x)
        return F.relu(out)


class ResNet(nn.Module):
    """A CIFAR ResNet (16/32/64, one BasicBlock per stage) with a linear head.

    ``zero_gamma``: the last BatchNorm of every residual branch starts at gamma 0 (Goyal et al.).
    ``dict_output``: returns ``{"logits": ...}``.
    """

    def __init__(self, zero_gamma: bool = False, dict_output: bool = False, blocks: int = 1) -> None:
        super().__init__()
        self.dict_output = dict_output
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        layers: list[nn.Module] = []
        c_in = 16
        for i, width in enumerate((16, 32, 64)):
            for j in range(blocks):
                layers.append(BasicBlock(c_in, width, 2 if i > 0 and j == 0 else 1, zero_gamma))
                c_in = width
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(64, CLASSES)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor | dict[str, torch.Tensor]:
        x = self.layers(self.stem(pixel_values))
        logits = self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))
        return {"logits": logits} if self.dict_output else logits


class PreActBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.shortcut = (
            nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False) if stride != 1 or c_in != c_out else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(x))
        shortcut = self.shortcut(out) if not isinstance(self.shortcut, nn.Identity) else x
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + shortcut


class PreActResNet(nn.Module):
    """A pre-activation (wide) ResNet: 2 blocks per stage of width 32/64/128."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 32, 3, padding=1, bias=False)
        self.stages = nn.Sequential(PreActBlock(32, 32, 1), PreActBlock(32, 64, 2), PreActBlock(64, 128, 2))
        self.bn = nn.BatchNorm2d(128)
        self.head = nn.Linear(128, CLASSES)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn(self.stages(self.stem(pixel_values))))
        return self.head(x.mean(dim=(2, 3)))


class ScaledStdConv2d(nn.Conv2d):
    """A weight-standardized convolution (NF-ResNet's ScaledStdConv2d): per-filter zero mean, unit fan-in variance, learnable gain."""

    def __init__(self, *args: object, gamma: float = 1.0, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.gain = nn.Parameter(torch.ones(self.out_channels, 1, 1, 1))
        self.scale = gamma / math.sqrt(self.weight[0].numel())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight
        mean = w.mean(dim=(1, 2, 3), keepdim=True)
        var = w.var(dim=(1, 2, 3), keepdim=True, unbiased=False)
        w = (w - mean) / torch.sqrt(var + 1e-5) * self.gain * self.scale
        return F.conv2d(x, w, self.bias, self.stride, self.padding, self.dilation, self.groups)


class NFBlock(nn.Module):
    """A normalizer-free residual block: x + alpha * skipinit_gain * f(x / beta), skipinit gain 0."""

    def __init__(self, c: int, alpha: float, beta: float) -> None:
        super().__init__()
        gamma = math.sqrt(2 / (1 - 1 / math.pi))  # ReLU's variance-preserving gain
        self.conv1 = ScaledStdConv2d(c, c, 3, padding=1, gamma=gamma)
        self.conv2 = ScaledStdConv2d(c, c, 3, padding=1, gamma=gamma)
        self.alpha, self.beta = alpha, beta
        self.skipinit_gain = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(F.relu(x) / self.beta)
        out = self.conv2(F.relu(out))
        return x + self.alpha * self.skipinit_gain * out


class NFResNet(nn.Module):
    """An NF-ResNet-like network: weight-standardized convs, no normalization, zero-gain residual branches."""

    def __init__(self, width: int = 32, depth: int = 4, alpha: float = 0.2) -> None:
        super().__init__()
        self.stem = ScaledStdConv2d(3, width, 3, stride=2, padding=1)
        blocks = []
        expected_var = 1.0
        for _ in range(depth):
            blocks.append(NFBlock(width, alpha, math.sqrt(expected_var)))
            expected_var += alpha**2
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Linear(width, CLASSES)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.stem(pixel_values))
        return self.head(F.relu(x).mean(dim=(2, 3)))


class StdConvGN(nn.Module):
    """BiT-like: weight-standardized convs with GroupNorm, pre-activation residual blocks."""

    def __init__(self, width: int = 32) -> None:
        super().__init__()
        self.stem = ScaledStdConv2d(3, width, 3, padding=1)
        self.blocks = nn.ModuleList(
            nn.ModuleDict(
                {
                    "gn1": nn.GroupNorm(8, width),
                    "conv1": ScaledStdConv2d(width, width, 3, padding=1),
                    "gn2": nn.GroupNorm(8, width),
                    "conv2": ScaledStdConv2d(width, width, 3, padding=1),
                }
            )
            for _ in range(3)
        )
        self.norm = nn.GroupNorm(8, width)
        self.head = nn.Linear(width, CLASSES)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        x = self.stem(pixel_values)
        for b in self.blocks:
            y = b["conv1"](F.relu(b["gn1"](x)))
            x = x + b["conv2"](F.relu(b["gn2"](y)))
        return self.head(F.relu(self.norm(x)).mean(dim=(2, 3)))


class SqueezeExcite(nn.Module):
    def __init__(self, c: int, reduction: int = 4) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(c, c // reduction, 1)
        self.fc2 = nn.Conv2d(c // reduction, c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean(dim=(2, 3), keepdim=True)
        return x * torch.sigmoid(self.fc2(F.relu(self.fc1(s))))


class SECNN(nn.Module):
    """A squeeze-and-excitation CNN: conv-BN-ReLU-SE blocks with residuals, global pool, linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU())
        self.blocks = nn.Sequential(
            *(
                nn.Sequential(
                    nn.Conv2d(32, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(), SqueezeExcite(32)
                )
                for _ in range(3)
            )
        )
        self.head = nn.Linear(32, CLASSES)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        x = self.stem(pixel_values)
        for block in self.blocks:
            x = x + block(x)
        return self.head(x.mean(dim=(2, 3)))


class MBConv(nn.Module):
    """EfficientNet's inverted residual: 1x1 expand, depthwise 3x3, SE, 1x1 project; SiLU, BatchNorm."""

    def __init__(self, c_in: int, c_out: int, stride: int, expand: int = 4) -> None:
        super().__init__()
        mid = c_in * expand
        self.expand = nn.Sequential(nn.Conv2d(c_in, mid, 1, bias=False), nn.BatchNorm2d(mid), nn.SiLU())
        self.dw = nn.Sequential(
            nn.Conv2d(mid, mid, 3, stride=stride, padding=1, groups=mid, bias=False), nn.BatchNorm2d(mid), nn.SiLU()
        )
        self.se = SqueezeExcite(mid)
        self.project = nn.Sequential(nn.Conv2d(mid, c_out, 1, bias=False), nn.BatchNorm2d(c_out))
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.project(self.se(self.dw(self.expand(x))))
        return x + out if self.residual else out


class EfficientNetLike(nn.Module):
    """A small EfficientNet-like net: stem, MBConv blocks with SE, 1x1 head conv, pool, linear."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(16), nn.SiLU())
        self.blocks = nn.Sequential(MBConv(16, 16, 1), MBConv(16, 24, 2), MBConv(24, 24, 1), MBConv(24, 32, 2))
        self.head_conv = nn.Sequential(nn.Conv2d(32, 64, 1, bias=False), nn.BatchNorm2d(64), nn.SiLU())
        self.classifier = nn.Linear(64, CLASSES)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        x = self.head_conv(self.blocks(self.stem(pixel_values)))
        return self.classifier(x.mean(dim=(2, 3)))


class MobileNetLike(nn.Module):
    """Depthwise-separable convolutions with hardswish, BatchNorm (MobileNetV1/V3 style)."""

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.Hardswish()]
        c = 16
        for width, stride in ((32, 1), (64, 2), (64, 1), (128, 2)):
            layers += [
                nn.Conv2d(c, c, 3, stride=stride, padding=1, groups=c, bias=False),
                nn.BatchNorm2d(c),
                nn.Hardswish(),
                nn.Conv2d(c, width, 1, bias=False),
                nn.BatchNorm2d(width),
                nn.Hardswish(),
            ]
            c = width
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(128, CLASSES)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(pixel_values).mean(dim=(2, 3)))


class BatchNormAct2d(nn.BatchNorm2d):
    """A BatchNorm2d subclass that also applies its activation (the fused BN+act of mechanism 7)."""

    def __init__(self, c: int) -> None:
        super().__init__(c)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(super().forward(x))


class FusedBNNet(nn.Module):
    """A residual CNN whose BatchNorms are ``BatchNormAct2d``."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1, bias=False), BatchNormAct2d(32))
        self.blocks = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(32, 32, 3, padding=1, bias=False),
                BatchNormAct2d(32),
                nn.Conv2d(32, 32, 3, padding=1, bias=False),
                nn.BatchNorm2d(32),
            )
            for _ in range(3)
        )
        self.head = nn.Linear(32, CLASSES)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        x = self.stem(pixel_values)
        for b in self.blocks:
            x = F.relu(x + b(x))
        return self.head(x.mean(dim=(2, 3)))


class DenseNetLike(nn.Module):
    """Dense blocks: every layer (BN-ReLU-conv) sees the concatenation of all before it."""

    def __init__(self, growth: int = 12, layers: int = 4) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 24, 3, padding=1, bias=False)
        self.dense = nn.ModuleList()
        c = 24
        for _ in range(layers):
            self.dense.append(
                nn.Sequential(nn.BatchNorm2d(c), nn.ReLU(), nn.Conv2d(c, growth, 3, padding=1, bias=False))
            )
            c += growth
        self.norm = nn.BatchNorm2d(c)
        self.head = nn.Linear(c, CLASSES)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        x = self.stem(pixel_values)
        for layer in self.dense:
            x = torch.cat([x, layer(x)], dim=1)
        return self.head(F.relu(self.norm(x)).mean(dim=(2, 3)))


class ConvNeXtBlock(nn.Module):
    def __init__(self, dim: int, layer_scale: float) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(layer_scale * torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dwconv(x).permute(0, 2, 3, 1)
        y = self.pwconv2(F.gelu(self.pwconv1(self.norm(y))))
        return x + (self.gamma * y).permute(0, 3, 1, 2)


class ConvNeXtLike(nn.Module):
    """A ConvNeXt-like net: patchify stem 4x4, 3 blocks (depthwise 7x7, LayerNorm, MLP, LayerScale 1e-6), trunc-normal 0.02 weights."""

    def __init__(self, dim: int = 48, depth: int = 3, layer_scale: float = 1e-6) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, dim, 4, stride=4)
        self.stem_norm = nn.LayerNorm(dim)
        self.blocks = nn.Sequential(*(ConvNeXtBlock(dim, layer_scale) for _ in range(depth)))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, CLASSES)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        x = self.stem(pixel_values)
        x = self.stem_norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        x = self.blocks(x)
        return self.head(self.norm(x.mean(dim=(2, 3))))


class GatedCNN(nn.Module):
    """A gated convolutional language model (GLU over causal conv1d), vocabulary-sized head."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, 32)
        self.convs = nn.ModuleList(nn.Conv1d(32, 64, 3) for _ in range(3))
        self.head = nn.Linear(32, VOCAB)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        x = self.embed(input_ids).transpose(1, 2)
        for conv in self.convs:
            x = x + F.glu(conv(F.pad(x, (2, 0))), dim=1)
        return self.head(x.transpose(1, 2))


class TinyUNet(nn.Module):
    """A small U-Net: two down stages, one up stage with a skip concatenation, 10-way pooled head."""

    def __init__(self) -> None:
        super().__init__()

        def block(c_in: int, c_out: int) -> nn.Module:
            return nn.Sequential(
                nn.Conv2d(c_in, c_out, 3, padding=1),
                nn.BatchNorm2d(c_out),
                nn.ReLU(),
                nn.Conv2d(c_out, c_out, 3, padding=1),
                nn.ReLU(),
            )

        self.down1 = block(3, 16)
        self.down2 = block(16, 32)
        self.up = nn.ConvTranspose2d(32, 16, 2, stride=2)
        self.dec = block(32, 16)
        self.head = nn.Linear(16, CLASSES)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        d1 = self.down1(pixel_values)
        d2 = self.down2(F.max_pool2d(d1, 2))
        u = self.dec(torch.cat([self.up(d2), d1], dim=1))
        return self.head(u.mean(dim=(2, 3)))


class Autoencoder(nn.Module):
    """An MLP autoencoder: 32 -> 16 -> 8 -> 16 -> 32 with ReLU; returns the reconstruction."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(VECTOR, 16), nn.ReLU(), nn.Linear(16, 8))
        self.decoder = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, VECTOR))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


# ---- DCGAN (the reference weights_init: conv N(0, 0.02), BN gamma N(1, 0.02)) -----------------------


def _dcgan_init(m: nn.Module) -> None:
    if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(m.weight, 0.0, 0.02)
    elif isinstance(m, nn.BatchNorm2d):
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


class DCGANGenerator(nn.Module):
    """DCGAN's generator at 32x32: z (B, 32) -> ConvTranspose-BN-ReLU x3 -> ConvTranspose-Tanh (B, 3, 32, 32)."""

    def __init__(self, nz: int = VECTOR, ngf: int = 16) -> None:
        super().__init__()
        self.main = nn.Sequential(
            nn.ConvTranspose2d(nz, ngf * 4, 4, 1, 0, bias=False),
            nn.BatchNorm2d(ngf * 4),
            nn.ReLU(True),
            nn.ConvTranspose2d(ngf * 4, ngf * 2, 4, 2, 1, bias=False),
            nn.BatchNorm2d(ngf * 2),
            nn.ReLU(True),
            nn.ConvTranspose2d(ngf * 2, ngf, 4, 2, 1, bias=False),
            nn.BatchNorm2d(ngf),
            nn.ReLU(True),
            nn.ConvTranspose2d(ngf, 3, 4, 2, 1, bias=False),
            nn.Tanh(),
        )
        self.apply(_dcgan_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x[:, :, None, None])


class DCGANDiscriminator(nn.Module):
    """DCGAN's discriminator at 32x32: Conv-LeakyReLU, (Conv-BN-LeakyReLU) x2, Conv -> one logit."""

    def __init__(self, ndf: int = 16) -> None:
        super().__init__()
        self.main = nn.Sequential(
            nn.Conv2d(3, ndf, 4, 2, 1, bias=False),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf, ndf * 2, 4, 2, 1, bias=False),
            nn.BatchNorm2d(ndf * 2),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf * 2, ndf * 4, 4, 2, 1, bias=False),
            nn.BatchNorm2d(ndf * 4),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf * 4, 1, 4, 1, 0, bias=False),
        )
        self.apply(_dcgan_init)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.main(pixel_values).flatten(1)


# ---- recurrent and attention models ----------------------------------------------------------------


class Seq2SeqGRU(nn.Module):
    """The tutorial seq2seq: a GRU encoder, a GRU decoder started from its last state, teacher forcing, vocab head."""

    def __init__(self, hidden: int = 64) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, 32)
        self.encoder = nn.GRU(32, hidden, batch_first=True)
        self.decoder = nn.GRU(32, hidden, batch_first=True)
        self.out = nn.Linear(hidden, VOCAB)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        _, h = self.encoder(self.embed(input_ids))
        shifted = F.pad(input_ids[:, :-1], (1, 0), value=0)
        y, _ = self.decoder(self.embed(shifted), h)
        return self.out(y)


class CharLSTM(nn.Module):
    """The char-RNN language model: embedding, 2-layer LSTM, vocabulary head."""

    def __init__(self, hidden: int = 64) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, 32)
        self.lstm = nn.LSTM(32, hidden, num_layers=2, batch_first=True)
        self.head = nn.Linear(hidden, VOCAB)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        y, _ = self.lstm(self.embed(input_ids))
        return self.head(y)


class BiLSTMClassifier(nn.Module):
    """A bidirectional LSTM over embeddings, mean over time, 10-way head."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, 32)
        self.lstm = nn.LSTM(32, 32, batch_first=True, bidirectional=True)
        self.head = nn.Linear(64, CLASSES)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        y, _ = self.lstm(self.embed(input_ids))
        return self.head(y.mean(1))


class NanoGPTBlock(nn.Module):
    def __init__(self, dim: int, heads: int, layers: int) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.ln2 = nn.LayerNorm(dim)
        self.fc = nn.Linear(dim, 4 * dim)
        self.fc_proj = nn.Linear(4 * dim, dim)
        self.heads = heads
        for m in (self.qkv, self.proj, self.fc, self.fc_proj):
            nn.init.normal_(m.weight, 0.0, 0.02)
            nn.init.zeros_(m.bias)
        for m in (self.proj, self.fc_proj):
            nn.init.normal_(m.weight, 0.0, 0.02 / math.sqrt(2 * layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(d, dim=2)
        q, k, v = (z.view(b, t, self.heads, d // self.heads).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(b, t, d)
        x = x + self.proj(y)
        return x + self.fc_proj(F.gelu(self.fc(self.ln2(x))))


class NanoGPT(nn.Module):
    """nanoGPT: token and learned position embeddings, pre-LN blocks, head tied to the token embedding."""

    def __init__(self, dim: int = 64, heads: int = 4, layers: int = 3, seq_len: int = 64) -> None:
        super().__init__()
        self.wte = nn.Embedding(VOCAB, dim)
        self.wpe = nn.Embedding(seq_len, dim)
        nn.init.normal_(self.wte.weight, 0.0, 0.02)
        nn.init.normal_(self.wpe.weight, 0.0, 0.02)
        self.blocks = nn.ModuleList(NanoGPTBlock(dim, heads, layers) for _ in range(layers))
        self.ln_f = nn.LayerNorm(dim)
        self.lm_head = nn.Linear(dim, VOCAB, bias=False)
        self.lm_head.weight = self.wte.weight

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(input_ids.shape[1], device=input_ids.device)
        x = self.wte(input_ids) + self.wpe(pos)
        for block in self.blocks:
            x = block(x)
        return self.lm_head(self.ln_f(x))


class ReZeroBlock(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, 4, batch_first=True)
        self.ff = nn.Sequential(nn.Linear(dim, 4 * dim), nn.ReLU(), nn.Linear(4 * dim, dim))
        self.alpha = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.alpha * self.attn(x, x, x, need_weights=False)[0]
        return x + self.alpha * self.ff(x)


class ReZeroTransformer(nn.Module):
    """ReZero: no norms, every residual branch scaled by a learnable alpha that starts at 0."""

    def __init__(self, dim: int = 64, layers: int = 3) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, dim)
        self.pos = nn.Parameter(torch.randn(1, 64, dim) * 0.02)
        self.blocks = nn.ModuleList(ReZeroBlock(dim) for _ in range(layers))

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        x = self.embed(input_ids) + self.pos[:, : input_ids.shape[1]]
        for block in self.blocks:
            x = block(x)
        return x


class MHABlock(nn.Module):
    """A post-LN block around ``nn.MultiheadAttention``."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, 4, batch_first=True)
        self.norm1 = nn.LayerNorm(dim)
        self.ff = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
        self.norm2 = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm1(x + self.attn(x, x, x, need_weights=False)[0])
        return self.norm2(x + self.ff(x))


class MHAEncoder(nn.Module):
    """Embedding, sinusoidal positions, three ``MHABlock``s: the encoder the PyTorch tutorial builds."""

    def __init__(self, dim: int = 64, layers: int = 3) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, dim)
        pos = torch.arange(64)[:, None] / (10000 ** (torch.arange(0, dim, 2) / dim))
        pe = torch.zeros(64, dim)
        pe[:, 0::2], pe[:, 1::2] = torch.sin(pos), torch.cos(pos)
        self.register_buffer("pe", pe)
        self.blocks = nn.Sequential(*(MHABlock(dim) for _ in range(layers)))
        self.dim = dim

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        x = self.embed(input_ids) * math.sqrt(self.dim) + self.pe[: input_ids.shape[1]]
        return self.blocks(x)


# ---- vision transformers -----------------------------------------------------------------------------


class ViTBlock(nn.Module):
    def __init__(self, dim: int, heads: int, layer_scale: float | None) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, 4 * dim)
        self.fc2 = nn.Linear(4 * dim, dim)
        self.heads = heads
        self.ls1 = nn.Parameter(layer_scale * torch.ones(dim)) if layer_scale is not None else None
        self.ls2 = nn.Parameter(layer_scale * torch.ones(dim)) if layer_scale is not None else None

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        return self.proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, t, d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.attention(self.norm1(x))
        x = x + (a * self.ls1 if self.ls1 is not None else a)
        m = self.fc2(F.gelu(self.fc1(self.norm2(x))))
        return x + (m * self.ls2 if self.ls2 is not None else m)


class ViT(nn.Module):
    """A ViT: patch 4 (64 patches), class token, learned positions, pre-LN blocks, head on the class token.

    Weights truncated-normal 0.02 as in the reference code; ``layer_scale`` (e.g. 1e-5, CaiT/DeiT-III)
    scales each residual branch by a learnable per-channel gamma.
    """

    def __init__(self, dim: int = 64, depth: int = 4, heads: int = 4, layer_scale: float | None = None) -> None:
        super().__init__()
        self.patch = nn.Conv2d(3, dim, 4, stride=4)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 65, dim))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        self.blocks = nn.Sequential(*(ViTBlock(dim, heads, layer_scale) for _ in range(depth)))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, CLASSES)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        x = self.patch(pixel_values).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        x = self.norm(self.blocks(x))
        return self.head(x[:, 0])


class ClassAttention(nn.Module):
    """CaiT's class-attention block: the class token attends to [cls, patches]; takes (x, x_cls)."""

    def __init__(self, dim: int, heads: int, layer_scale: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))
        self.gamma1 = nn.Parameter(layer_scale * torch.ones(dim))
        self.gamma2 = nn.Parameter(layer_scale * torch.ones(dim))
        self.heads = heads

    def forward(self, x: torch.Tensor, x_cls: torch.Tensor) -> torch.Tensor:
        u = self.norm1(torch.cat([x_cls, x], dim=1))
        b, t, d = u.shape
        h = self.heads
        q = self.q(u[:, :1]).view(b, 1, h, d // h).transpose(1, 2)
        k, v = self.kv(u).view(b, t, 2, h, d // h).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, 1, d)
        x_cls = x_cls + self.gamma1 * self.proj(a)
        return x_cls + self.gamma2 * self.mlp(self.norm2(x_cls))


class CaiTLike(nn.Module):
    """CaiT-like: self-attention blocks with LayerScale on the patches, then two class-attention blocks (two inputs)."""

    def __init__(self, dim: int = 64, depth: int = 3, heads: int = 4, layer_scale: float = 1e-5) -> None:
        super().__init__()
        self.patch = nn.Conv2d(3, dim, 4, stride=4)
        self.pos_embed = nn.Parameter(torch.zeros(1, 64, dim))
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        self.blocks = nn.ModuleList(ViTBlock(dim, heads, layer_scale) for _ in range(depth))
        self.blocks_token_only = nn.ModuleList(ClassAttention(dim, heads, layer_scale) for _ in range(2))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, CLASSES)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        x = self.patch(pixel_values).flatten(2).transpose(1, 2) + self.pos_embed
        for block in self.blocks:
            x = block(x)
        cls = self.cls_token.expand(x.shape[0], -1, -1)
        for block in self.blocks_token_only:
            cls = block(x, cls)
        return self.head(self.norm(cls)[:, 0])


class AttrBlocksCNN(nn.Module):
    """A residual CNN whose blocks are attributes ``self.block1`` ... ``self.block3`` (no container)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 32, 3, padding=1)

        def block() -> nn.Module:
            return nn.Sequential(
                nn.Conv2d(32, 32, 3, padding=1, bias=False),
                nn.BatchNorm2d(32),
                nn.ReLU(),
                nn.Conv2d(32, 32, 3, padding=1, bias=False),
                nn.BatchNorm2d(32),
            )

        self.block1 = block()
        self.block2 = block()
        self.block3 = block()
        self.head = nn.Linear(32, CLASSES)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        x = self.stem(pixel_values)
        x = F.relu(x + self.block1(x))
        x = F.relu(x + self.block2(x))
        x = F.relu(x + self.block3(x))
        return self.head(x.mean(dim=(2, 3)))
