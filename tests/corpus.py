"""A corpus of real architectures, built offline from small configs, for judging probe's verdicts.

Seven ``transformers`` models (GPT-2, BERT, Llama, ResNet, ConvNeXt, MobileNetV2, Swin) are built
with ``AutoConfig.for_model(type, **small)`` and ``AutoModel.from_config(...)``: nothing is read
from the Hub. An eighth, ``bn_resnet``, is a hand-written BatchNorm ResNet (BasicBlocks, a global
average pool as its head). Each is small enough that probing it takes about a second on a CPU.

Every factory takes ``init``:

- ``"default"``: the library's own initialization, untouched (``from_config`` runs the model's
  ``_init_weights``; ``bn_resnet`` uses torchvision's recipe: He normal, fan_out, on the convs).
- ``"zeros"``: the weight *and* bias of every ``nn.Linear``, ``nn.Conv1d``/``nn.Conv2d``,
  ``transformers``' ``Conv1D`` (GPT-2's projections) and ``nn.Embedding`` are 0: the classic
  all-zero start. Normalization layers keep their scale 1 and shift 0 (a zero scale would cut
  every path by construction, a different experiment), and free parameters that belong to no
  such module (ConvNeXt's LayerScale gamma, Swin's relative-position bias table) keep the
  library's values.
- ``"normal1"``: the weight of each of those modules is drawn from N(0, 1) (every weight matrix
  and conv kernel, embeddings included); biases, norms and free parameters keep the library's
  values, as in the seed's "large" init.

Dropout (and drop-path) is off in every config, so a probe or a training step sees one
deterministic network. The factories draw from torch's global generator (seed it first).

The model is wrapped in ``Features``, whose output is one tensor: the base model's
``last_hidden_state`` (B, T, D) for the token models, its pooled features (B, C) for the vision
models. Without the wrapper probe would read every floating-point tensor of the ``ModelOutput``
dict and give each its own backward direction: BERT's ``pooler_output`` beside its last hidden
state, a ResNet's un-pooled (B, C, H, W) map beside its pooled one. ``wrap=False`` returns the
bare ``transformers`` model (rows then lose the ``model.`` prefix).

Inputs: ``token_inputs(batch_size)`` (``input_ids`` and ``attention_mask``) and
``image_inputs(batch_size)`` (``pixel_values``), usable as probe's ``model.inputs``. ``CASES``
maps each name to its factory, input function and kind, for the benchmarks and the tests.

Probe one from the repository root, e.g.::

    HF_HUB_OFFLINE=1 .venv/bin/probe check tests/corpus_specs/gpt2_default.yaml
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

os.environ.setdefault("HF_HUB_OFFLINE", "1")

INITS = ("default", "zeros", "normal1")

# token models
VOCAB_SIZE = 64
SEQ_LEN = 32
# vision models
IMAGE_SIZE = 32
CHANNELS = 3


class Features(nn.Module):
    """A ``transformers`` base model that returns one tensor: its last hidden state or pooled features."""

    def __init__(self, model: nn.Module, output: str) -> None:
        super().__init__()
        self.model = model
        self.output = output

    def forward(self, **inputs: torch.Tensor) -> torch.Tensor:
        out = self.model(**inputs)
        features = out[self.output]
        # HF ResNet pools to (B, C, 1, 1)
        return features.flatten(1) if self.output == "pooler_output" else features


def _weighted_modules() -> tuple[type[nn.Module], ...]:
    from transformers.pytorch_utils import Conv1D

    return (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Embedding, Conv1D)


@torch.no_grad()
def apply_init(model: nn.Module, init: str) -> nn.Module:
    """Fill the model's Linear/Conv/Conv1D/Embedding layers as ``init`` says (see the module docstring)."""
    if init not in INITS:
        raise ValueError(f"init: unknown {init!r}; choose one of {', '.join(INITS)}")
    if init == "default":
        return model
    for module in model.modules():
        if not isinstance(module, _weighted_modules()):
            continue
        weight = module.weight
        if init == "zeros":
            weight.zero_()
            bias = getattr(module, "bias", None)
            if isinstance(bias, torch.Tensor):
                bias.zero_()
        else:
            weight.normal_(0.0, 1.0)
    return model


def _hf(
    model_type: str, init: str, output: str, wrap: bool, model_kwargs: dict[str, Any] | None = None, **config: Any
) -> nn.Module:
    from transformers import AutoConfig, AutoModel

    cfg = AutoConfig.for_model(model_type, **config)
    model = AutoModel.from_config(cfg, **(model_kwargs or {}))
    apply_init(model, init)
    return Features(model, output) if wrap else model


# ---- token models: (B, T) ids -> (B, T, D) last hidden state -----------------------------------

_NO_DROPOUT_BERT = {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}


def gpt2(init: str = "default", wrap: bool = True) -> nn.Module:
    """GPT-2: 4 blocks, width 64, 4 heads (Conv1D projections, pre-LayerNorm, scaled residual projections)."""
    return _hf(
        "gpt2",
        init,
        "last_hidden_state",
        wrap,
        vocab_size=VOCAB_SIZE,
        n_positions=SEQ_LEN,
        n_embd=64,
        n_layer=4,
        n_head=4,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        use_cache=False,
        # GPT-2's own 50256 lies outside the small vocabulary
        bos_token_id=VOCAB_SIZE - 1,
        eos_token_id=VOCAB_SIZE - 1,
    )


def bert(init: str = "default", wrap: bool = True, causal: bool = False) -> nn.Module:
    """BERT: 4 post-LayerNorm blocks, width 64, 4 heads, no padding index, no pooler.

    The pooler (dense + tanh on the first token) is left out: its output is not the last hidden
    state, so it would be a branch that runs, gets probed, and takes no part in the loss.

    ``causal=True`` (``is_decoder``) masks attention to the past only: the same modules and the same
    weight draw, for training it on next-token prediction.
    """
    return _hf(
        "bert",
        init,
        "last_hidden_state",
        wrap,
        {"add_pooling_layer": False},
        vocab_size=VOCAB_SIZE,
        max_position_embeddings=SEQ_LEN,
        hidden_size=64,
        num_hidden_layers=4,
        num_attention_heads=4,
        intermediate_size=128,
        pad_token_id=None,
        is_decoder=causal,
        **_NO_DROPOUT_BERT,
    )


def llama(init: str = "default", wrap: bool = True) -> nn.Module:
    """Llama: 4 pre-RMSNorm blocks, width 64, 4 heads (2 key/value heads), SwiGLU, RoPE."""
    return _hf(
        "llama",
        init,
        "last_hidden_state",
        wrap,
        vocab_size=VOCAB_SIZE,
        max_position_embeddings=SEQ_LEN,
        hidden_size=64,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=128,
        pad_token_id=None,
        use_cache=False,
    )


# ---- vision models: (B, 3, 32, 32) pixels -> (B, C) pooled features -------------------------------


def resnet(init: str = "default", wrap: bool = True) -> nn.Module:
    """HF ResNet: basic blocks, stages of width 16/32/64/128, one block each, BatchNorm."""
    return _hf(
        "resnet",
        init,
        "pooler_output",
        wrap,
        num_channels=CHANNELS,
        embedding_size=16,
        hidden_sizes=[16, 32, 64, 128],
        depths=[1, 1, 1, 1],
        layer_type="basic",
    )


def convnext(init: str = "default", wrap: bool = True) -> nn.Module:
    """ConvNeXt: stages of width 16/32/64/128 (2/2/2/2 blocks), LayerScale 1e-6, patch size 2."""
    return _hf(
        "convnext",
        init,
        "pooler_output",
        wrap,
        num_channels=CHANNELS,
        image_size=IMAGE_SIZE,
        patch_size=2,
        hidden_sizes=[16, 32, 64, 128],
        depths=[2, 2, 2, 2],
        drop_path_rate=0.0,
    )


def mobilenet_v2(init: str = "default", wrap: bool = True) -> nn.Module:
    """MobileNetV2 at depth multiplier 0.35: 17 inverted residual blocks, ReLU6, BatchNorm.

    No layer narrower than 16 channels and output stride 16 (the last stage dilated, 2x2 maps at 32x32
    input): with the library's min_depth 8 and stride 32 its default init learned the trainability
    task too slowly to be a reference (loss 2.29 -> 1.90 in 200 steps; 1.27 with these two settings).
    """
    return _hf(
        "mobilenet_v2",
        init,
        "pooler_output",
        wrap,
        num_channels=CHANNELS,
        image_size=IMAGE_SIZE,
        depth_multiplier=0.35,
        min_depth=16,
        output_stride=16,
        classifier_dropout_prob=0.0,
    )


def swin(init: str = "default", wrap: bool = True) -> nn.Module:
    """Swin: patch 2, embed 16, stages of 1/1/2 blocks with 1/2/4 heads, window 4."""
    return _hf(
        "swin",
        init,
        "pooler_output",
        wrap,
        num_channels=CHANNELS,
        image_size=IMAGE_SIZE,
        patch_size=2,
        embed_dim=16,
        depths=[1, 1, 2],
        num_heads=[1, 2, 4],
        window_size=4,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        drop_path_rate=0.0,
    )


# ---- a hand-written BatchNorm ResNet with a global-average-pool head ---------------------------


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN plus the shortcut (a 1x1 conv + BN where the shape changes), then ReLU."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class BNResNet(nn.Module):
    """Stem conv-BN-ReLU, three stages of two BasicBlocks (16/32/64 channels), global average pool."""

    def __init__(self, widths: tuple[int, ...] = (16, 32, 64), blocks_per_stage: int = 2) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(CHANNELS, widths[0], 3, padding=1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU()
        )
        blocks: list[nn.Module] = []
        c_in = widths[0]
        for i, width in enumerate(widths):
            for j in range(blocks_per_stage):
                blocks.append(BasicBlock(c_in, width, stride=2 if i > 0 and j == 0 else 1))
                c_in = width
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):  # torchvision's ResNet recipe
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.pool(self.blocks(self.stem(pixel_values))).flatten(1)


def bn_resnet(init: str = "default") -> nn.Module:
    """The hand-written BatchNorm ResNet: 6 BasicBlocks, output (B, 64) from the global average pool."""
    return apply_init(BNResNet(), init)


# ---- inputs ------------------------------------------------------------------------------------


def token_inputs(batch_size: int) -> dict[str, torch.Tensor]:
    """Uniform random token ids (B, SEQ_LEN) and an all-ones attention mask."""
    ids = torch.randint(0, VOCAB_SIZE, (batch_size, SEQ_LEN))
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def image_inputs(batch_size: int) -> dict[str, torch.Tensor]:
    """N(0, 1) pixels (B, 3, 32, 32), like normalized images."""
    return {"pixel_values": torch.randn(batch_size, CHANNELS, IMAGE_SIZE, IMAGE_SIZE)}


@dataclass(frozen=True)
class Case:
    """A corpus model: its factory, its input function, and ``kind`` (``tokens`` or ``images``)."""

    name: str
    factory: Callable[..., nn.Module]
    inputs: Callable[[int], dict[str, torch.Tensor]]
    kind: str

    @property
    def factory_path(self) -> str:
        return f"tests.corpus:{self.factory.__name__}"

    @property
    def inputs_path(self) -> str:
        return f"tests.corpus:{self.inputs.__name__}"


CASES: dict[str, Case] = {
    c.name: c
    for c in (
        Case("gpt2", gpt2, token_inputs, "tokens"),
        Case("bert", bert, token_inputs, "tokens"),
        Case("llama", llama, token_inputs, "tokens"),
        Case("resnet", resnet, image_inputs, "images"),
        Case("convnext", convnext, image_inputs, "images"),
        Case("mobilenet_v2", mobilenet_v2, image_inputs, "images"),
        Case("swin", swin, image_inputs, "images"),
        Case("bn_resnet", bn_resnet, image_inputs, "images"),
    )
}
