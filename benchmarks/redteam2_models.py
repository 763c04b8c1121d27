"""A second red-team corpus: 24 models nobody had probed, aimed at issue 18's scale-blindness rules.

Written (2026-12-07, helper "redteam2") as a held-out check of two rule changes: ``weight_scale``
reading a weight as ``normalized`` when the loss is blind to its scale (``weight_grad_cos``), judged
under Adam by ``max_weight_turn``; and ``mechanisms.redrawn`` (weights far under lr are redrawn by
Adam's first step). So the models put normalizations where a module-type rule cannot see them:
written as functions (``F.layer_norm``, ``F.group_norm``, hand-written RMSNorm), after a concat,
on queries and keys, in the weights themselves (weight standardization through a parametrization,
``weight_norm``, a cosine classifier), after the ReLU, on both sides of a branch; and eight
``transformers`` types the zoo never trains (``AutoConfig.for_model`` with a small config of their own).

Each is at its author's default init; ``tests/zoo``'s ``apply_init`` gives zeros, normal1 and tiny.
``MODELS`` maps an id to ``(kind, factory, head)`` as ``redteam_models.MODELS`` does: image (B, 3,
32, 32) ``pixel_values``, token (B, 16) ``input_ids`` below 64, vector (B, 32) ``x``; ``head``: ends
in its own classifier. ``benchmarks/redteam2.py`` probes and trains them; ``benchmarks/redteam2.md``.
"""

from __future__ import annotations

import itertools
import math
import os

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

os.environ.setdefault("HF_HUB_OFFLINE", "1")

VOCAB = 64
CLASSES = 10
VECTOR = 32


# 1 LayerNorm-only MLP, norms as functions (no affine): Linear -> F.layer_norm -> GELU
class FunctionalLNMLP(nn.Module):
    def __init__(self, width=128, depth=4):
        super().__init__()
        dims = [VECTOR] + [width] * depth
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in itertools.pairwise(dims))
        self.out = nn.Linear(width, CLASSES)

    def forward(self, x):
        for layer in self.layers:
            h = layer(x)
            x = F.gelu(F.layer_norm(h, h.shape[-1:]))
        return self.out(x)


# 2 CNN with BatchNorm after the ReLU (conv -> relu -> bn), as some tutorials order it
class BNAfterReLUCNN(nn.Module):
    def __init__(self):
        super().__init__()
        chans = [3, 32, 64, 64]
        self.convs = nn.ModuleList(nn.Conv2d(a, b, 3, padding=1) for a, b in itertools.pairwise(chans))
        self.bns = nn.ModuleList(nn.BatchNorm2d(b) for b in chans[1:])
        self.fc = nn.Linear(64, CLASSES)

    def forward(self, pixel_values):
        x = pixel_values
        for i, (c, b) in enumerate(zip(self.convs, self.bns, strict=False)):
            x = b(F.relu(c(x)))
            if i < 2:
                x = F.max_pool2d(x, 2)
        return self.fc(x.mean((2, 3)))


# 3 post-norm transformer LM written from scratch, its norms F.layer_norm with parameters held by the block
class PostNormBlock(nn.Module):
    def __init__(self, d, heads):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.ff1, self.ff2 = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)
        self.g1, self.b1 = nn.Parameter(torch.ones(d)), nn.Parameter(torch.zeros(d))
        self.g2, self.b2 = nn.Parameter(torch.ones(d)), nn.Parameter(torch.zeros(d))

    def attend(self, x):
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.proj(y.transpose(1, 2).reshape(b, t, d))

    def forward(self, x):
        d = x.shape[-1:]
        x = F.layer_norm(x + self.attend(x), d, self.g1, self.b1)
        return F.layer_norm(x + self.ff2(F.relu(self.ff1(x))), d, self.g2, self.b2)


class PostNormLM(nn.Module):
    def __init__(self, d=64, heads=4, layers=3):
        super().__init__()
        self.tok = nn.Embedding(VOCAB, d)
        self.pos = nn.Parameter(torch.randn(16, d) * 0.02)
        self.blocks = nn.ModuleList(PostNormBlock(d, heads) for _ in range(layers))
        self.head = nn.Linear(d, VOCAB)

    def forward(self, input_ids):
        x = self.tok(input_ids) * math.sqrt(self.tok.embedding_dim) + self.pos[: input_ids.shape[1]]
        for blk in self.blocks:
            x = blk(x)
        return self.head(x)


# 4 pre-norm LM with a hand-written RMSNorm class and QK-norm (RMS over each head's queries and keys)
class Scale(nn.Module):
    """RMSNorm by hand: x / rms(x) * gain."""

    def __init__(self, d, eps=1e-6):
        super().__init__()
        self.gain = nn.Parameter(torch.ones(d))
        self.eps = eps

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.gain


class QKNormBlock(nn.Module):
    def __init__(self, d, heads):
        super().__init__()
        self.heads, self.hd = heads, d // heads
        self.pre1, self.pre2 = Scale(d), Scale(d)
        self.q, self.k, self.v = nn.Linear(d, d, bias=False), nn.Linear(d, d, bias=False), nn.Linear(d, d, bias=False)
        self.qs, self.ks = Scale(self.hd), Scale(self.hd)
        self.o = nn.Linear(d, d, bias=False)
        self.up, self.gate, self.down = (
            nn.Linear(d, 3 * d, bias=False),
            nn.Linear(d, 3 * d, bias=False),
            nn.Linear(3 * d, d, bias=False),
        )

    def forward(self, x):
        b, t, d = x.shape
        h = self.pre1(x)

        def split(y):
            return y.view(b, t, self.heads, self.hd).transpose(1, 2)

        q, k = self.qs(split(self.q(h))), self.ks(split(self.k(h)))
        y = F.scaled_dot_product_attention(q, k, split(self.v(h)), is_causal=True)
        x = x + self.o(y.transpose(1, 2).reshape(b, t, d))
        h = self.pre2(x)
        return x + self.down(F.silu(self.gate(h)) * self.up(h))


class QKNormLM(nn.Module):
    def __init__(self, d=64, heads=4, layers=3):
        super().__init__()
        self.emb = nn.Embedding(VOCAB, d)
        self.blocks = nn.ModuleList(QKNormBlock(d, heads) for _ in range(layers))
        self.final = Scale(d)
        self.head = nn.Linear(d, VOCAB, bias=False)

    def forward(self, input_ids):
        x = self.emb(input_ids)
        for blk in self.blocks:
            x = blk(x)
        return self.head(self.final(x))


# 5 sandwich-norm transformer encoder (LayerNorm before and after each branch), bag-of-words classifier
class SandwichBlock(nn.Module):
    def __init__(self, d, heads):
        super().__init__()
        self.n1, self.n2, self.n3, self.n4 = (nn.LayerNorm(d) for _ in range(4))
        self.attn = nn.MultiheadAttention(d, heads, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, d))

    def forward(self, x):
        h = self.n1(x)
        x = x + self.n2(self.attn(h, h, h, need_weights=False)[0])
        return x + self.n4(self.mlp(self.n3(x)))


class SandwichEncoder(nn.Module):
    def __init__(self, d=64, heads=4, layers=3):
        super().__init__()
        self.emb = nn.Embedding(VOCAB, d)
        self.blocks = nn.ModuleList(SandwichBlock(d, heads) for _ in range(layers))
        self.head = nn.Linear(d, CLASSES)

    def forward(self, input_ids):
        x = self.emb(input_ids)
        for blk in self.blocks:
            x = blk(x)
        return self.head(x.mean(1))


# 6 NormFormer-like block: pre-LN, LN after attention, per-head scales, LN after the FFN activation
class NormFormerBlock(nn.Module):
    def __init__(self, d, heads):
        super().__init__()
        self.heads = heads
        self.ln_in, self.ln_attn, self.ln_ff_in, self.ln_ff_mid = (
            nn.LayerNorm(d),
            nn.LayerNorm(d),
            nn.LayerNorm(d),
            nn.LayerNorm(4 * d),
        )
        self.qkv = nn.Linear(d, 3 * d)
        self.head_scale = nn.Parameter(torch.ones(heads))
        self.proj = nn.Linear(d, d)
        self.fc1, self.fc2 = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)

    def forward(self, x):
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln_in(x)).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True) * self.head_scale.view(1, -1, 1, 1)
        x = x + self.ln_attn(self.proj(y.transpose(1, 2).reshape(b, t, d)))
        return x + self.fc2(self.ln_ff_mid(F.gelu(self.fc1(self.ln_ff_in(x)))))


class NormFormerLM(nn.Module):
    def __init__(self, d=64, heads=4, layers=3):
        super().__init__()
        self.emb = nn.Embedding(VOCAB, d)
        self.blocks = nn.ModuleList(NormFormerBlock(d, heads) for _ in range(layers))
        self.ln_f = nn.LayerNorm(d)
        self.head = nn.Linear(d, VOCAB)

    def forward(self, input_ids):
        x = self.emb(input_ids)
        for blk in self.blocks:
            x = blk(x)
        return self.head(self.ln_f(x))


# 7 ResNet with GroupNorm and weight standardization registered as a parametrization
class Standardize(nn.Module):
    def forward(self, w):
        mean = w.mean(dim=(1, 2, 3), keepdim=True)
        var = w.var(dim=(1, 2, 3), keepdim=True, unbiased=False)
        return (w - mean) / torch.sqrt(var + 1e-5)


def ws_conv(i, o, k=3, stride=1):
    conv = nn.Conv2d(i, o, k, stride=stride, padding=k // 2, bias=False)
    parametrize.register_parametrization(conv, "weight", Standardize())
    return conv


class WSBlock(nn.Module):
    def __init__(self, i, o, stride):
        super().__init__()
        self.c1, self.g1 = ws_conv(i, o, stride=stride), nn.GroupNorm(8, o)
        self.c2, self.g2 = ws_conv(o, o), nn.GroupNorm(8, o)
        self.skip = ws_conv(i, o, 1, stride) if (i != o or stride != 1) else nn.Identity()

    def forward(self, x):
        h = F.relu(self.g1(self.c1(x)))
        return F.relu(self.skip(x) + self.g2(self.c2(h)))


class GNWSResNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(ws_conv(3, 32, stride=2), nn.GroupNorm(8, 32), nn.ReLU())
        self.stages = nn.Sequential(WSBlock(32, 32, 1), WSBlock(32, 64, 2), WSBlock(64, 64, 1))
        self.fc = nn.Linear(64, CLASSES)

    def forward(self, pixel_values):
        return self.fc(self.stages(self.stem(pixel_values)).mean((2, 3)))


# 8 MLP-Mixer with its norms as functions (F.layer_norm, affine parameters held by the block)
class FnMixerBlock(nn.Module):
    def __init__(self, tokens, d):
        super().__init__()
        self.w1, self.b1 = nn.Parameter(torch.ones(d)), nn.Parameter(torch.zeros(d))
        self.w2, self.b2 = nn.Parameter(torch.ones(d)), nn.Parameter(torch.zeros(d))
        self.tok1, self.tok2 = nn.Linear(tokens, 2 * tokens), nn.Linear(2 * tokens, tokens)
        self.ch1, self.ch2 = nn.Linear(d, 2 * d), nn.Linear(2 * d, d)

    def forward(self, x):
        h = F.layer_norm(x, x.shape[-1:], self.w1, self.b1).transpose(1, 2)
        x = x + self.tok2(F.gelu(self.tok1(h))).transpose(1, 2)
        h = F.layer_norm(x, x.shape[-1:], self.w2, self.b2)
        return x + self.ch2(F.gelu(self.ch1(h)))


class FnMixer(nn.Module):
    def __init__(self, d=64, patch=4, layers=4):
        super().__init__()
        self.patch = nn.Conv2d(3, d, patch, stride=patch)
        tokens = (32 // patch) ** 2
        self.blocks = nn.ModuleList(FnMixerBlock(tokens, d) for _ in range(layers))
        self.fc = nn.Linear(d, CLASSES)

    def forward(self, pixel_values):
        x = self.patch(pixel_values).flatten(2).transpose(1, 2)
        for blk in self.blocks:
            x = blk(x)
        return self.fc(F.layer_norm(x, x.shape[-1:]).mean(1))


# 9 MLP whose every layer is weight-normalized (torch.nn.utils.parametrizations.weight_norm), no other norm
def weight_norm_mlp():
    wn = nn.utils.parametrizations.weight_norm
    return nn.Sequential(
        wn(nn.Linear(VECTOR, 128)),
        nn.ReLU(),
        wn(nn.Linear(128, 128)),
        nn.ReLU(),
        wn(nn.Linear(128, 128)),
        nn.ReLU(),
        wn(nn.Linear(128, CLASSES)),
    )


# 10 two-branch net (MLP and a wide linear path) whose features are concatenated, then LayerNorm'd
class ConcatNormNet(nn.Module):
    def __init__(self, h=64):
        super().__init__()
        self.deep = nn.Sequential(nn.Linear(VECTOR, h), nn.ReLU(), nn.Linear(h, h), nn.ReLU())
        self.wide = nn.Linear(VECTOR, h)
        self.norm = nn.LayerNorm(2 * h)
        self.mid = nn.Linear(2 * h, h)
        self.out = nn.Linear(h, CLASSES)

    def forward(self, x):
        z = self.norm(torch.cat([self.deep(x), self.wide(x)], dim=-1))
        return self.out(F.relu(self.mid(z)))


# 11 SwiGLU MLP with a weightless hand-written RMSNorm in front of every block (residual)
class RMSGatedMLP(nn.Module):
    def __init__(self, d=64, layers=4):
        super().__init__()
        self.inp = nn.Linear(VECTOR, d)
        self.gates = nn.ModuleList(nn.Linear(d, 2 * d) for _ in range(layers))
        self.ups = nn.ModuleList(nn.Linear(d, 2 * d) for _ in range(layers))
        self.downs = nn.ModuleList(nn.Linear(2 * d, d) for _ in range(layers))
        self.out = nn.Linear(d, CLASSES)

    @staticmethod
    def rms(x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)

    def forward(self, x):
        x = self.inp(x)
        for g, u, d in zip(self.gates, self.ups, self.downs, strict=False):
            h = self.rms(x)
            x = x + d(F.silu(g(h)) * u(h))
        return self.out(self.rms(x))


# 12 CNN with a cosine classifier: features and class weights L2-normalized, logits scaled by 10
class CosineHeadCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 32, 3, padding=1),
            nn.BatchNorm2d(32),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1),
            nn.BatchNorm2d(64),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.classes = nn.Parameter(torch.randn(CLASSES, 64) * 0.01)

    def forward(self, pixel_values):
        f = F.normalize(self.body(pixel_values), dim=1)
        return 10.0 * f @ F.normalize(self.classes, dim=1).t()


# 13 plain CNN with a whole-layer norm as a function: F.group_norm(x, 1) (LayerNorm over C, H, W), no affine
class GroupNormFnCNN(nn.Module):
    def __init__(self):
        super().__init__()
        chans = [3, 32, 32, 64, 64]
        self.convs = nn.ModuleList(nn.Conv2d(a, b, 3, padding=1) for a, b in itertools.pairwise(chans))
        self.fc = nn.Linear(64, CLASSES)

    def forward(self, pixel_values):
        x = pixel_values
        for i, c in enumerate(self.convs):
            x = F.silu(F.group_norm(c(x), 1))
            if i % 2 == 1:
                x = F.avg_pool2d(x, 2)
        return self.fc(x.mean((2, 3)))


# 14 depthwise-separable CNN, bias-free convs each followed by a functional batch norm (F.batch_norm, batch statistics)
class FnBNSeparable(nn.Module):
    def __init__(self, chans=(16, 24, 32)):
        super().__init__()
        self.stem = nn.Conv2d(3, chans[0], 3, stride=2, padding=1, bias=False)
        self.dw = nn.ModuleList()
        self.pw = nn.ModuleList()
        for a, b in itertools.pairwise(chans):
            self.dw.append(nn.Conv2d(a, a, 3, padding=1, groups=a, bias=False))
            self.pw.append(nn.Conv2d(a, b, 1, bias=False))
        self.fc = nn.Linear(chans[-1], CLASSES)

    @staticmethod
    def bn(x):
        return F.batch_norm(x, None, None, training=True)

    def forward(self, pixel_values):
        x = F.relu(self.bn(self.stem(pixel_values)))
        for dw, pw in zip(self.dw, self.pw, strict=False):
            x = F.relu(self.bn(dw(x)))
            x = F.relu(self.bn(pw(x)))
            x = F.max_pool2d(x, 2)
        return self.fc(x.mean((2, 3)))


# 15 narrow bias-free MLP for tabular data: Linear(bias=False) -> F.layer_norm -> ReLU, width 24
class NarrowLNMLP(nn.Module):
    def __init__(self, width=24, depth=5):
        super().__init__()
        dims = [VECTOR] + [width] * depth
        self.layers = nn.ModuleList(nn.Linear(a, b, bias=False) for a, b in itertools.pairwise(dims))
        self.out = nn.Linear(width, CLASSES)

    def forward(self, x):
        for layer in self.layers:
            h = layer(x)
            x = F.relu(F.layer_norm(h, h.shape[-1:]))
        return self.out(x)


# 16 ConvMixer: patch conv, then depthwise conv -> GELU -> BatchNorm (BN after the activation) + skip, pointwise
class Residual(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x) + x


def conv_mixer(dim=48, depth=4, kernel=5, patch=4):
    return nn.Sequential(
        nn.Conv2d(3, dim, patch, stride=patch),
        nn.GELU(),
        nn.BatchNorm2d(dim),
        *[
            nn.Sequential(
                Residual(
                    nn.Sequential(
                        nn.Conv2d(dim, dim, kernel, groups=dim, padding="same"), nn.GELU(), nn.BatchNorm2d(dim)
                    )
                ),
                nn.Conv2d(dim, dim, 1),
                nn.GELU(),
                nn.BatchNorm2d(dim),
            )
            for _ in range(depth)
        ],
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(dim, CLASSES),
    )


# ---- transformers types the zoo never trains, each built from a small config of its own ----------

_TEXT = {
    "vocab_size": VOCAB,
    "hidden_size": 48,
    "intermediate_size": 96,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 64,
    "pad_token_id": 0,
    "bos_token_id": 1,
    "eos_token_id": 2,
}
_VISION = {"image_size": 32, "num_channels": 3}


def _hf(model_type: str, **kw):
    def factory():
        from transformers import AutoConfig, AutoModel

        config = AutoConfig.for_model(model_type, **kw)
        if hasattr(config, "_attn_implementation"):
            config._attn_implementation = "eager"
        return AutoModel.from_config(config)

    factory.__name__ = f"hf_{model_type}"
    return factory


HF = {
    "rt2/hf_qwen3": ("token", _hf("qwen3", head_dim=12, **_TEXT), False),
    "rt2/hf_qwen2": ("token", _hf("qwen2", **_TEXT), False),
    "rt2/hf_cohere": ("token", _hf("cohere", **_TEXT), False),
    "rt2/hf_olmo": ("token", _hf("olmo", **_TEXT), False),
    "rt2/hf_phi3": ("token", _hf("phi3", **{**_TEXT, "num_key_value_heads": 4}), False),
    "rt2/hf_dinov2": (
        "image",
        _hf(
            "dinov2",
            hidden_size=48,
            num_hidden_layers=2,
            num_attention_heads=4,
            mlp_ratio=2,
            patch_size=4,
            **_VISION,
        ),
        False,
    ),
    "rt2/hf_convnextv2": (
        "image",
        _hf("convnextv2", hidden_sizes=[16, 32, 48, 64], depths=[1, 1, 2, 1], patch_size=2, num_channels=3),
        False,
    ),
    "rt2/hf_beit": (
        "image",
        _hf(
            "beit",
            hidden_size=48,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=96,
            patch_size=4,
            use_mean_pooling=True,
            **_VISION,
        ),
        False,
    ),
}


MODELS = {
    "rt2/fn_ln_mlp": ("vector", FunctionalLNMLP, True),
    "rt2/bn_after_relu": ("image", BNAfterReLUCNN, True),
    "rt2/postnorm_lm": ("token", PostNormLM, True),
    "rt2/qknorm_lm": ("token", QKNormLM, True),
    "rt2/sandwich_encoder": ("token", SandwichEncoder, True),
    "rt2/normformer_lm": ("token", NormFormerLM, True),
    "rt2/gn_ws_resnet": ("image", GNWSResNet, True),
    "rt2/fn_mixer": ("image", FnMixer, True),
    "rt2/weight_norm_mlp": ("vector", weight_norm_mlp, True),
    "rt2/concat_norm": ("vector", ConcatNormNet, True),
    "rt2/rms_gated_mlp": ("vector", RMSGatedMLP, True),
    "rt2/cosine_head_cnn": ("image", CosineHeadCNN, True),
    "rt2/groupnorm_fn_cnn": ("image", GroupNormFnCNN, True),
    "rt2/fn_bn_separable": ("image", FnBNSeparable, True),
    "rt2/narrow_ln_mlp": ("vector", NarrowLNMLP, True),
    "rt2/conv_mixer": ("image", conv_mixer, True),
    **HF,
}


# ---- variants that set one kind of parameter only (judged against the model's default) ------------


@torch.no_grad()
def directions_normal1(model: nn.Module) -> nn.Module:
    """weight_norm's direction parameters v (``original1``) drawn from N(0, 1), the gains g kept."""
    for m in model.modules():
        if parametrize.is_parametrized(m, "weight") and hasattr(m.parametrizations.weight, "original1"):
            m.parametrizations.weight.original1.normal_()
    return model


@torch.no_grad()
def standardized_normal1(model: nn.Module) -> nn.Module:
    """The weight-standardized convolutions' raw weights (``original``) from N(0, 1), the rest kept."""
    for m in model.modules():
        if parametrize.is_parametrized(m, "weight") and hasattr(m.parametrizations.weight, "original"):
            m.parametrizations.weight.original.normal_()
    return model


# id -> {variant name: transform of the default-init model}
VARIANTS = {
    "rt2/weight_norm_mlp": {"v_normal1": directions_normal1},
    "rt2/gn_ws_resnet": {"ws_normal1": standardized_normal1},
}


@torch.no_grad()
def gains_normal1(model: nn.Module) -> nn.Module:
    """weight_norm's gains g (``original0``) drawn from N(0, 1), the directions v kept."""
    for m in model.modules():
        if parametrize.is_parametrized(m, "weight") and hasattr(m.parametrizations.weight, "original0"):
            m.parametrizations.weight.original0.normal_()
    return model


def scaled(parameter: str, factor: float):
    """A transform multiplying weight_norm's ``original0`` (g) or ``original1`` (v) by ``factor``."""

    @torch.no_grad()
    def transform(model: nn.Module) -> nn.Module:
        for m in model.modules():
            if parametrize.is_parametrized(m, "weight"):
                getattr(m.parametrizations.weight, parameter).mul_(factor)
        return model

    return transform


def tiny_except(prefixes: tuple[str, ...]):
    """A transform: every parameter of two or more dimensions x 1e-3 (the zoo's ``tiny``) except
    those whose name starts with one of ``prefixes`` (kept at their default)."""

    @torch.no_grad()
    def transform(model: nn.Module) -> nn.Module:
        for name, p in model.named_parameters():
            if p.dim() >= 2 and not name.startswith(prefixes):
                p.mul_(1e-3)
        return model

    return transform


def normal1_except(prefixes: tuple[str, ...], rescale: bool = False):
    """A transform: every parameter of two or more dimensions from N(0, 1) (the zoo's ``normal1``)
    except those under ``prefixes``; ``rescale``: then back to each one's default rms (the N(0, 1)
    directions at the default scale)."""

    @torch.no_grad()
    def transform(model: nn.Module) -> nn.Module:
        for name, p in model.named_parameters():
            if p.dim() >= 2 and not name.startswith(prefixes):
                rms = p.pow(2).mean().sqrt()
                p.normal_()
                if rescale:
                    p.mul_(rms / p.pow(2).mean().sqrt())
        return model

    return transform


_ATTENTION = tuple(f"blocks.{i}.{w}." for i in range(3) for w in "qkvo")

# isolations: one part at a time, to find which part stops training (shown, not counted)
ISOLATIONS = {
    "rt2/weight_norm_mlp": {
        "g_x1e-6": scaled("original0", 1e-6),
        "v_x1e-6": scaled("original1", 1e-6),
        "g_normal1": gains_normal1,
    },
    "rt2/qknorm_lm": {
        "tiny_but_head": tiny_except(("head.",)),
        "tiny_but_attention": tiny_except(_ATTENTION),
        "tiny_but_emb": tiny_except(("emb.",)),
    },
    "rt2/fn_mixer": {"normal1_but_head": normal1_except(("fc.",)), "normal1_rescaled": normal1_except((), True)},
    "rt2/conv_mixer": {"normal1_rescaled": normal1_except((), True)},
}
