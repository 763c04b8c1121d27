"""Small ``diffusers`` models built from configs (nothing downloaded), wrapped to return one tensor."""

from __future__ import annotations

import torch
from torch import nn


class DiffusersOutput(nn.Module):
    """Calls the model and returns its ``.sample`` (the denoised prediction or reconstruction)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, **inputs: torch.Tensor) -> torch.Tensor:
        out = self.model(**inputs)
        return out.sample if hasattr(out, "sample") else out[0]


def unet2d() -> nn.Module:
    """``UNet2DModel``: 2 resolution levels (32, 64 channels), one attention down/up block, GroupNorm 8."""
    from diffusers import UNet2DModel

    return DiffusersOutput(
        UNet2DModel(
            sample_size=32,
            in_channels=3,
            out_channels=3,
            layers_per_block=1,
            block_out_channels=(32, 64),
            down_block_types=("DownBlock2D", "AttnDownBlock2D"),
            up_block_types=("AttnUpBlock2D", "UpBlock2D"),
            norm_num_groups=8,
            attention_head_dim=16,
        )
    )


def unet2d_plain() -> nn.Module:
    """``UNet2DModel`` without attention: ResNet blocks only (32, 32, 64 channels)."""
    from diffusers import UNet2DModel

    return DiffusersOutput(
        UNet2DModel(
            sample_size=32,
            in_channels=3,
            out_channels=3,
            layers_per_block=1,
            block_out_channels=(32, 32, 64),
            down_block_types=("DownBlock2D", "DownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "UpBlock2D", "UpBlock2D"),
            norm_num_groups=8,
        )
    )


def autoencoder_kl() -> nn.Module:
    """``AutoencoderKL``: 2 levels (16, 32 channels), 4 latent channels; returns the reconstruction."""
    from diffusers import AutoencoderKL

    return DiffusersOutput(
        AutoencoderKL(
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
            up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
            block_out_channels=(16, 32),
            layers_per_block=1,
            latent_channels=4,
            norm_num_groups=8,
            sample_size=32,
        )
    )


def vq_model() -> nn.Module:
    """``VQModel``: 2 levels (16, 32 channels), a 64-entry codebook; returns the reconstruction."""
    from diffusers import VQModel

    return DiffusersOutput(
        VQModel(
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
            up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
            block_out_channels=(16, 32),
            layers_per_block=1,
            latent_channels=4,
            num_vq_embeddings=64,
            norm_num_groups=8,
            sample_size=32,
        )
    )


def dit() -> nn.Module:
    """``DiTTransformer2DModel``: patch 4 on 32x32 latents of 4 channels, 2 blocks, adaLN-zero, 2 heads of 16."""
    from diffusers import DiTTransformer2DModel

    return DiffusersOutput(
        DiTTransformer2DModel(
            num_attention_heads=2,
            attention_head_dim=16,
            in_channels=4,
            out_channels=4,
            num_layers=2,
            sample_size=16,
            patch_size=4,
            num_embeds_ada_norm=10,
            norm_num_groups=8,
        )
    )


def unet_inputs(batch_size: int) -> dict[str, torch.Tensor]:
    return {"sample": torch.randn(batch_size, 3, 32, 32), "timestep": torch.randint(0, 1000, (batch_size,))}


def vae_inputs(batch_size: int) -> dict[str, torch.Tensor]:
    return {"sample": torch.randn(batch_size, 3, 32, 32)}


def dit_inputs(batch_size: int) -> dict[str, torch.Tensor]:
    return {
        "hidden_states": torch.randn(batch_size, 4, 16, 16),
        "timestep": torch.randint(0, 1000, (batch_size,)),
        "class_labels": torch.randint(0, 10, (batch_size,)),
    }
