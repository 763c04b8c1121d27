"""The zoo: 100+ architectures nobody on the team wrote, small enough to probe in about a second each.

Four sources (``Entry.source``):

- ``transformers``: every model type that ``AutoModel.from_config`` builds on a CPU from a generic
  small config (``hf.small_config``: width 32, 2 layers, 2 heads, feed-forward 64, vocabulary 64,
  32x32 images with patch 4, dropout off) and that runs forward and backward in under a second.
  The list (``hf_types.TYPES``) was found by trying every type ``AutoModel`` maps
  (``python -m tests.zoo.hf``); each type's family was read from what the built model does
  (causal or not, RMSNorm or LayerNorm, experts, convolutions or attention), not typed by hand.
- ``diffusers``: UNet2DModel (with and without attention), AutoencoderKL, VQModel, DiT.
- ``torch``: ``nn.Transformer``, ``nn.TransformerEncoder`` with a learned position table, ``nn.GRU``,
  ``nn.LSTM``, ``nn.RNN`` models (``torch_models.py``).
- ``handwritten``: models as tutorials and newcomers write them, and the mechanisms of issue 18 in
  their usual form (``handwritten.py``).

``ZOO`` maps each id to its ``Entry``; ``entry.build(init)`` returns ``(model, inputs_fn, kind)``
with ``inputs_fn(batch_size)`` a dict of keyword inputs (draws from torch's global generator).
``kind`` is ``token``, ``image``, ``audio`` or ``vector``; ``head`` says whether the model ends in
its own classifier (10 classes, or the vocabulary for language models), so a training task can
use its logits as they are.

Inits (``INITS``), applied by ``apply_init`` after the model is built:

- ``default``: the library's (or the author's) own initialization, untouched;
- ``zeros``: every weight matrix, conv kernel and embedding (``nn.Linear``, ``nn.Conv*``,
  ``nn.ConvTranspose*``, ``nn.Embedding``, ``transformers``' ``Conv1D``, ``nn.MultiheadAttention``'s
  ``in_proj_weight``, the weights of ``nn.LSTM``/``nn.GRU``/``nn.RNN``, and any other parameter with
  two or more dimensions held by a module that is not a normalization: position tables, class
  tokens, relative-position tables) and their biases set to 0. Normalizations keep scale 1 and
  shift 0; one-dimensional free parameters (LayerScale, ReZero's alpha, NF gains) keep theirs;
- ``normal1``: N(0, 1) on those weights (biases keep their init);
- ``tiny``: those weights multiplied by 1e-3.

Dropout is off everywhere; every model is in train mode.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from dataclasses import dataclass, field

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
from torch import nn

from . import handwritten as hw
from . import torch_models as tm
from .hf_types import TYPES as HF_TYPES

INITS = ("default", "zeros", "normal1", "tiny")
TINY = 1e-3
SEQ_LEN = 16
IMAGE = 32

Inputs = Callable[[int], dict[str, torch.Tensor]]


# ---- inits -------------------------------------------------------------------------------------


def _is_norm(module: nn.Module) -> bool:
    norms = (nn.LayerNorm, nn.GroupNorm, nn.LocalResponseNorm, nn.modules.batchnorm._NormBase)
    if isinstance(module, norms):
        return True
    # library norms (LlamaRMSNorm, T5LayerNorm, ...) that do not subclass torch's: by name, here only
    # to leave their scales at 1 (the zoo is the yardstick, not a rule)
    return "norm" in type(module).__name__.lower()


@torch.no_grad()
def apply_init(model: nn.Module, init: str) -> nn.Module:
    """Fill ``model``'s weights as ``init`` says (see the module docstring); returns the model."""
    if init not in INITS:
        raise ValueError(f"init: unknown {init!r}; choose one of {', '.join(INITS)}")
    if init == "default":
        return model
    seen: set[int] = set()
    for module in model.modules():
        if _is_norm(module):
            for p in module.parameters(recurse=False):
                seen.add(id(p))
            continue
        params = dict(module.named_parameters(recurse=False))
        weights = {n: p for n, p in params.items() if p.dim() >= 2}
        for p in weights.values():
            if id(p) in seen:  # tied weights: fill once
                continue
            seen.add(id(p))
            if init == "zeros":
                p.zero_()
            elif init == "normal1":
                p.normal_(0.0, 1.0)
            else:
                p.mul_(TINY)
        if init == "zeros" and weights:
            for name, p in params.items():
                if p.dim() == 1 and "bias" in name and id(p) not in seen:
                    seen.add(id(p))
                    p.zero_()
    return model


# ---- inputs ------------------------------------------------------------------------------------


def token_inputs(batch_size: int) -> dict[str, torch.Tensor]:
    """Uniform random ids (B, 16) below 64."""
    return {"input_ids": torch.randint(0, hw.VOCAB, (batch_size, SEQ_LEN))}


def image_inputs(batch_size: int) -> dict[str, torch.Tensor]:
    """N(0, 1) pixels (B, 3, 32, 32)."""
    return {"pixel_values": torch.randn(batch_size, 3, IMAGE, IMAGE)}


def vector_inputs(batch_size: int) -> dict[str, torch.Tensor]:
    """N(0, 1) vectors (B, 32)."""
    return {"x": torch.randn(batch_size, hw.VECTOR)}


INPUTS: dict[str, Inputs] = {"token": token_inputs, "image": image_inputs, "vector": vector_inputs}


# ---- the registry ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    """One zoo architecture: ``factory()`` builds it at its default init; ``inputs`` draws a batch."""

    id: str
    family: str
    source: str  # transformers / diffusers / torch / handwritten
    kind: str  # token / image / audio / vector
    head: bool  # ends in its own classifier (10 classes, or the vocabulary for a language model)
    factory: Callable[[], nn.Module]
    inputs: Inputs
    note: str = ""
    tags: tuple[str, ...] = field(default=())  # mechanisms of issue 18 it exercises (1-9)

    def build(self, init: str = "default") -> tuple[nn.Module, Callable[[int], object], str]:
        """``(model, inputs_fn, kind)`` at ``init``, in train mode; draws from torch's global generator.

        ``inputs_fn(batch_size)`` is the keyword dict, or for a model whose ``forward`` does not name
        those keywords (an ``nn.Sequential``) the tuple of its values, passed positionally.
        """
        model = apply_init(self.factory(), init)
        model.train()
        return model, positional(model, self.inputs), self.kind


def positional(model: nn.Module, inputs: Inputs) -> Callable[[int], object]:
    """``inputs`` as it is when ``model.forward`` takes its keywords (or ``**kwargs``), else as a tuple."""
    params = inspect.signature(model.forward).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return inputs
    keys = inputs(2).keys()
    if all(k in params for k in keys):
        return inputs

    def as_tuple(batch_size: int) -> tuple[torch.Tensor, ...]:
        return tuple(inputs(batch_size).values())

    return as_tuple


def _hf_entry(model_type: str, family: str, kind: str) -> Entry:
    from . import hf

    def factory() -> nn.Module:
        return hf.build(model_type)

    return Entry(f"hf/{model_type}", family, "transformers", kind, False, factory, _hf_inputs(model_type))


def _hf_inputs(model_type: str) -> Inputs:
    """The type's generic batch (``hf.inputs_for``), read from a config-only model description."""

    def inputs(batch_size: int) -> dict[str, torch.Tensor]:
        from . import hf

        return hf.inputs_for(_hf_shell(model_type), batch_size)

    return inputs


_SHELLS: dict[str, nn.Module] = {}


def _hf_shell(model_type: str) -> nn.Module:
    """A meta-device copy of the model: its config, ``main_input_name`` and ``forward`` signature, no weights."""
    if model_type not in _SHELLS:
        from transformers import AutoModel

        from . import hf

        with torch.device("meta"):
            _SHELLS[model_type] = AutoModel.from_config(hf.small_config(model_type))
    return _SHELLS[model_type]


def _hw(
    id_: str, family: str, kind: str, factory: Callable[[], nn.Module], head: bool = True, tags: tuple[str, ...] = ()
) -> Entry:
    return Entry(id_, family, "handwritten", kind, head, factory, INPUTS[kind], tags=tags)


def _torch(id_: str, family: str, factory: Callable[[], nn.Module], head: bool) -> Entry:
    return Entry(id_, family, "torch", "token", head, factory, token_inputs)


def _diffusers() -> list[Entry]:
    try:
        import diffusers  # noqa: F401
    except ImportError:
        return []
    from . import diffusers_models as dm

    return [
        Entry("diffusers/unet2d", "diffusion unets", "diffusers", "image", False, dm.unet2d, dm.unet_inputs),
        Entry(
            "diffusers/unet2d_plain", "diffusion unets", "diffusers", "image", False, dm.unet2d_plain, dm.unet_inputs
        ),
        Entry(
            "diffusers/autoencoder_kl", "diffusion unets", "diffusers", "image", False, dm.autoencoder_kl, dm.vae_inputs
        ),
        Entry("diffusers/vq_model", "diffusion unets", "diffusers", "image", False, dm.vq_model, dm.vae_inputs),
        Entry("diffusers/dit", "diffusion transformers", "diffusers", "image", False, dm.dit, dm.dit_inputs),
    ]


def _local() -> list[Entry]:
    return [
        # vector models
        _hw("hw/mlp_relu", "mlps", "vector", hw.mlp_relu, tags=("8",)),
        _hw("hw/mlp_tanh", "mlps", "vector", hw.mlp_tanh, tags=("8",)),
        _hw("hw/mlp_sigmoid", "mlps", "vector", hw.mlp_sigmoid, tags=("4", "8")),
        _hw("hw/mlp_bn", "mlps", "vector", hw.mlp_bn, tags=("6",)),
        _hw("hw/mlp_gelu_ln", "mlps", "vector", hw.mlp_gelu_ln),
        _hw("hw/mlp_attr_blocks", "mlps", "vector", hw.AttrBlocksMLP, tags=("6",)),
        _hw("hw/highway", "mlps", "vector", hw.Highway),
        _hw("hw/autoencoder", "mlps", "vector", hw.Autoencoder, head=False),
        _hw("hw/dcgan_generator", "gans", "vector", hw.DCGANGenerator, head=False),
        # image models
        _hw("hw/stock_cnn", "plain convnets", "image", hw.stock_cnn, tags=("4", "8")),
        _hw("hw/lenet", "plain convnets", "image", hw.lenet, tags=("8",)),
        _hw("hw/vgg_bn", "plain convnets", "image", hw.vgg_bn),
        _hw("hw/dcgan_discriminator", "gans", "image", hw.DCGANDiscriminator),
        _hw("hw/resnet", "resnets", "image", hw.ResNet),
        _hw("hw/resnet_zero_gamma", "resnets", "image", lambda: hw.ResNet(zero_gamma=True), tags=("1",)),
        _hw("hw/resnet_dict_output", "resnets", "image", lambda: hw.ResNet(dict_output=True)),
        _hw("hw/preact_resnet", "resnets", "image", hw.PreActResNet),
        _hw("hw/nf_resnet", "resnets", "image", hw.NFResNet, tags=("1", "7")),
        _hw("hw/stdconv_gn", "resnets", "image", hw.StdConvGN, tags=("7",)),
        _hw("hw/fused_bn_act", "resnets", "image", hw.FusedBNNet, tags=("7",)),
        _hw("hw/attr_blocks_cnn", "resnets", "image", hw.AttrBlocksCNN, tags=("6",)),
        _hw("hw/densenet", "resnets", "image", hw.DenseNetLike),
        _hw("hw/se_cnn", "mobile convnets", "image", hw.SECNN, tags=("4",)),
        _hw("hw/efficientnet", "mobile convnets", "image", hw.EfficientNetLike, tags=("3", "4")),
        _hw("hw/mobilenet", "mobile convnets", "image", hw.MobileNetLike),
        _hw("hw/tiny_unet", "plain convnets", "image", hw.TinyUNet),
        _hw("hw/convnext", "mlp-mixers and convnext", "image", hw.ConvNeXtLike, tags=("5",)),
        _hw("hw/mlp_mixer", "mlp-mixers and convnext", "image", hw.MLPMixer, tags=("2",)),
        _hw("hw/resmlp", "mlp-mixers and convnext", "image", hw.ResMLP, tags=("2",)),
        _hw("hw/vit", "hand vits", "image", hw.ViT, tags=("3",)),
        _hw("hw/vit_layerscale", "hand vits", "image", lambda: hw.ViT(layer_scale=1e-5), tags=("3", "5")),
        _hw("hw/cait", "hand vits", "image", hw.CaiTLike, tags=("3", "5", "6")),
        # token models
        _hw("hw/conv1d_text", "hand token models", "token", hw.Conv1dText),
        _hw("hw/gated_cnn_lm", "hand token models", "token", hw.GatedCNN),
        _hw("hw/seq2seq_gru", "recurrent", "token", hw.Seq2SeqGRU),
        _hw("hw/char_lstm", "recurrent", "token", hw.CharLSTM),
        _hw("hw/bilstm_classifier", "recurrent", "token", hw.BiLSTMClassifier),
        _hw("hw/nanogpt", "hand token models", "token", hw.NanoGPT),
        _hw("hw/rezero_transformer", "hand token models", "token", hw.ReZeroTransformer, head=False, tags=("1",)),
        _hw("hw/mha_encoder", "hand token models", "token", hw.MHAEncoder, head=False),
        _torch("torch/transformer", "torch transformers", tm.TorchTransformer, head=True),
        _torch("torch/encoder_postln", "torch transformers", tm.TorchEncoder, head=False),
        _torch("torch/encoder_preln", "torch transformers", lambda: tm.TorchEncoder(norm_first=True), head=False),
        _torch("torch/encoder_gelu", "torch transformers", lambda: tm.TorchEncoder(activation="gelu"), head=False),
        _torch("torch/decoder_lm", "torch transformers", tm.TorchDecoderLM, head=True),
        _torch("torch/gru_classifier", "recurrent", tm.GRUClassifier, head=True),
        _torch("torch/lstm_tagger", "recurrent", tm.LSTMTagger, head=True),
        _torch("torch/rnn_tanh", "recurrent", tm.RNNTanh, head=True),
    ]


def _registry() -> dict[str, Entry]:
    entries = _local() + _diffusers()
    entries += [_hf_entry(t, family, kind) for t, (family, kind) in HF_TYPES.items()]
    return {e.id: e for e in entries}


ZOO: dict[str, Entry] = _registry()
FAMILIES: tuple[str, ...] = tuple(sorted({e.family for e in ZOO.values()}))


def split(family: str) -> str:
    """``tune`` or ``held-out``: the sorted family names alternate, the first is ``tune``."""
    return "tune" if FAMILIES.index(family) % 2 == 0 else "held-out"
