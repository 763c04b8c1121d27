"""Small transformers models built offline from configs (no download), for the role and verdict tests.

Each factory takes ``init``: ``default`` (the library's own init), ``zeros`` or ``normal1``
(N(0, 1) on every weight with two or more dimensions; biases and norms keep their init).
"""

from __future__ import annotations

import os
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
from torch import nn

CONFIGS: dict[str, dict[str, Any]] = {
    "gpt2": {"n_layer": 3, "n_embd": 32, "n_head": 2, "vocab_size": 64, "n_positions": 16},
    "bert": {
        "num_hidden_layers": 3,
        "hidden_size": 32,
        "num_attention_heads": 2,
        "intermediate_size": 64,
        "vocab_size": 64,
        "max_position_embeddings": 16,
    },
    "llama": {
        "num_hidden_layers": 3,
        "hidden_size": 32,
        "num_attention_heads": 2,
        "num_key_value_heads": 2,
        "intermediate_size": 64,
        "vocab_size": 64,
        "max_position_embeddings": 16,
    },
    "convnext": {"hidden_sizes": [8, 16], "depths": [2, 2], "num_stages": 2, "image_size": 32},
    "swin": {
        "image_size": 32,
        "patch_size": 4,
        "embed_dim": 16,
        "depths": [2, 2],
        "num_heads": [2, 2],
        "window_size": 4,
    },
    "mobilenet_v2": {"image_size": 32, "depth_multiplier": 0.35},
    "resnet": {"embedding_size": 8, "hidden_sizes": [8, 16], "depths": [2, 2], "layer_type": "basic"},
}
TEXT = ("gpt2", "bert", "llama")


def hf_model(kind: str, init: str = "default") -> nn.Module:
    """A small ``transformers`` model of ``kind`` with library init, all zeros or N(0, 1) weights."""
    from transformers import AutoConfig, AutoModel
    from transformers.utils import logging

    logging.set_verbosity_error()
    torch.manual_seed(0)
    model = AutoModel.from_config(AutoConfig.for_model(kind, **CONFIGS[kind]))
    if init != "default":
        with torch.no_grad():
            for name, p in model.named_parameters():
                if init == "zeros" and "norm" not in name.lower():
                    p.zero_()
                elif init == "normal1" and p.dim() >= 2:
                    p.normal_(0.0, 1.0)
    return model


class _Hidden(nn.Module):
    """The model's last hidden state as its output (the probe's direction needs one tensor)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        out = self.model(*args, **kwargs)
        return out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]


def hidden(kind: str, init: str = "default") -> nn.Module:
    return _Hidden(hf_model(kind, init))


class BasicBlock(nn.Module):
    """conv-BN-ReLU-conv-BN plus the input (He et al. 2016), channels kept."""

    def __init__(self, width: int, padding_mode: str = "zeros") -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(width, width, 3, padding=1, bias=False, padding_mode=padding_mode)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(width, width, 3, padding=1, bias=False, padding_mode=padding_mode)
        self.bn2 = nn.BatchNorm2d(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x))))))


def bn_resnet(
    width: int = 8, blocks: int = 3, classes: int = 10, init: str = "default", padding_mode: str = "zeros"
) -> nn.Module:
    """A BatchNorm ResNet with a global-average-pool head (torch defaults, or zeros / N(0, 1)).
    ``padding_mode="circular"``: no image border, so maps of any size see the same computation."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, width, 3, padding=1, bias=False, padding_mode=padding_mode),
        nn.BatchNorm2d(width),
        nn.ReLU(),
        nn.Sequential(*[BasicBlock(width, padding_mode) for _ in range(blocks)]),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(width, classes),
    )
    if init != "default":
        with torch.no_grad():
            for m in model.modules():
                if isinstance(m, (nn.Conv2d, nn.Linear)):
                    m.weight.zero_() if init == "zeros" else m.weight.normal_(0.0, 1.0)
    return model
