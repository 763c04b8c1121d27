"""Every ``transformers`` model type that builds small on a CPU, from one generic shrinking rule.

``small_config(model_type)`` reads the type's default config and shrinks it by attribute name:
widths to 32, layers to 2, heads to 2, feed-forward widths to 64, vocabularies to 128, images to
32x32 with patch 4, per-stage lists (``depths``, ``hidden_sizes``, ``num_heads``) to short ones,
every dropout, drop-path and masking probability to 0. Nested sub-configs (a vision tower's
``vision_config``) are shrunk the same way. Nothing is read from the Hub.

``explore()`` (``python -m tests.zoo.hf``) tries every type that ``AutoModel`` maps: builds it on the
meta device first (more than ``MAX_PARAMS`` parameters: skipped), then for real, runs one forward
and backward on a batch of 4 from ``inputs_for`` (8 s at most), one JSON line per type. The types
that ran in under 0.4 s are committed, with their family, in ``hf_types.TYPES``, so the zoo never
re-explores at import.
"""

from __future__ import annotations

import inspect
import json
import math
import os
import re
import signal
import sys
import time
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
from torch import nn

VOCAB = 64
SEQ_LEN = 16
IMAGE = 32
WAVE = 4000  # audio samples: about 12 frames after wav2vec2's 320x conv stack
MEL_FRAMES = 64
MAX_PARAMS = 3_000_000

_WIDTH = re.compile(
    r"^(hidden_size|d_model|n_embd|n_embed|embed_dim|embedding_dim|dim|hidden_dim|model_dim|d_embed|emb_dim|"
    r"encoder_hidden_size|decoder_hidden_size|text_hidden_size|vision_hidden_size|projection_dim|"
    r"embedding_size|word_embed_proj_dim|hidden_channels|num_filters)$"
)
_LAYERS = re.compile(
    r"^(num_hidden_layers|n_layer|n_layers|num_layers|encoder_layers|decoder_layers|num_decoder_layers|"
    r"num_encoder_layers|depth|num_blocks|encoder_depth|decoder_depth|decoder_num_hidden_layers|"
    r"num_hidden_groups_layers)$"
)
_HEADS = re.compile(
    r"^(num_attention_heads|n_head|n_heads|encoder_attention_heads|decoder_attention_heads|num_heads|"
    r"decoder_num_attention_heads|num_key_value_heads|num_kv_heads|n_kv_heads|encoder_num_attention_heads)$"
)
_FFN = re.compile(
    r"^(intermediate_size|ffn_dim|encoder_ffn_dim|decoder_ffn_dim|d_ff|n_inner|ffn_hidden_size|"
    r"intermediate_dim|mlp_dim|decoder_intermediate_size|moe_intermediate_size|shared_expert_intermediate_size|"
    r"dense_intermediate_size|ffn_size|inner_dim)$"
)
_POSITIONS = re.compile(
    r"^(max_position_embeddings|n_positions|max_seq_len|max_sequence_length|n_ctx|max_source_positions|"
    r"max_target_positions|seq_length|max_length|context_length|block_size)$"
)
_TOKEN_ID = re.compile(r"_token_id$|^(pad_token_id|bos_token_id|eos_token_id|decoder_start_token_id)$")


def _shrink_value(key: str, value: Any) -> Any:
    """The small value for one config attribute (or ``value`` unchanged)."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, dict) and "model_type" in value:
        return shrink(value)
    if isinstance(value, float):
        if re.search(
            r"dropout|drop_path|dropout_rate|drop_rate|_pdrop|mask_time_prob|mask_feature_prob|layerdrop", key
        ):
            return 0.0
        return value
    if isinstance(value, int):
        if _WIDTH.match(key):
            return 32
        if _LAYERS.match(key):
            return 2
        if _HEADS.match(key):
            return 2
        if _FFN.match(key):
            return 64
        if key in ("vocab_size", "text_vocab_size", "n_vocab", "num_tokens", "vocab"):
            return VOCAB
        if _POSITIONS.match(key):
            return 64
        if key == "head_dim" or key == "attention_head_dim" or key == "v_head_dim":
            return 16
        if key in ("qk_rope_head_dim", "qk_nope_head_dim"):
            return 8
        if key in ("kv_lora_rank", "q_lora_rank"):
            return 16
        if key in ("image_size", "img_size", "input_size"):
            return IMAGE
        if key in ("patch_size",):
            return 4
        if key in ("num_experts", "num_local_experts", "n_routed_experts", "moe_num_experts"):
            return 4
        if key in ("num_experts_per_tok", "moe_k", "top_k", "num_selected_experts"):
            return 2
        if key in ("n_shared_experts",):
            return 1
        if key in ("num_mel_bins", "feature_size", "input_feat_per_channel", "n_mels"):
            return 16 if value > 1 else value
        if key in ("type_vocab_size",) and value > 2:
            return 2
        if key in ("sliding_window", "attention_window", "local_window_size") and value > 16:
            return 16
        if key in ("window_size",) and value > 4:
            return 4
        if key in ("intermediate_size_mlp",):
            return 64
        if key in ("conv_dim_out", "num_conv_pos_embeddings") and value > 16:
            return 16
        if key == "num_conv_pos_embedding_groups" and value > 4:
            return 4
        if _TOKEN_ID.search(key) and value >= VOCAB:
            return VOCAB - 1
        if key in ("first_k_dense_replace", "num_nextn_predict_layers"):
            return min(value, 1)
        return value
    if (
        isinstance(value, (list, tuple))
        and value
        and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    ):
        n = len(value)
        if key in ("depths", "num_layers", "layers", "block_repeats", "num_blocks", "depth"):
            return [1] * n
        if key in ("hidden_sizes", "embed_dims", "embed_dim", "hidden_dims", "widths", "dims", "channels"):
            return [16 * 2 ** min(i, 2) for i in range(n)]
        if key in ("num_heads", "num_attention_heads", "heads"):
            return [1 * 2 ** min(i, 2) for i in range(n)]
        if key == "conv_dim":
            return [32] * n
        if key == "mlp_ratios" or key == "mlp_ratio":
            return [2] * n
    if isinstance(value, list) and key in ("layer_types", "block_types", "attn_layer_indices"):
        return value[:2] if key != "attn_layer_indices" else [i for i in value if i < 2]
    return value


def shrink(config: dict[str, Any]) -> dict[str, Any]:
    """The config dict with every attribute the shrinking rule knows made small (see the module docstring)."""
    out = {k: _shrink_value(k, v) for k, v in config.items()}
    return out


# types the generic rule does not shrink into a working model, with the few settings that do
OVERRIDES: dict[str, dict[str, Any]] = {
    "swin": {"patch_size": 2, "embed_dim": 16, "depths": [1, 1, 2], "num_heads": [1, 2, 4], "window_size": 4},
    "donut-swin": {"patch_size": 2, "embed_dim": 16, "depths": [1, 1, 2], "num_heads": [1, 2, 4], "window_size": 4},
    "efficientnet": {"width_coefficient": 0.25, "depth_coefficient": 0.5, "hidden_dim": 320},
    "bit": {
        "embedding_size": 16,
        "hidden_sizes": [16, 32, 64, 128],
        "depths": [1, 1, 1, 1],
        "num_groups": 8,
        "layer_type": "bottleneck",
    },
    "mobilenet_v1": {"depth_multiplier": 0.25, "min_depth": 8},
}


def small_config(model_type: str, **overrides: Any) -> Any:
    """``AutoConfig.for_model(model_type, **small)``: the type's default config, shrunk (then ``OVERRIDES``)."""
    from transformers import AutoConfig

    default = AutoConfig.for_model(model_type).to_dict()
    skip = {"model_type", "transformers_version", "architectures", "_name_or_path", "torch_dtype", "dtype"}
    small = {k: v for k, v in shrink(default).items() if k not in skip and v != default.get(k)}
    small["use_cache"] = False
    small.update(OVERRIDES.get(model_type, {}))
    small.update(overrides)
    return AutoConfig.for_model(model_type, **small)


def _int_attr(config: Any, *names: str, default: int) -> int:
    for name in names:
        value = getattr(config, name, None)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, (list, tuple)) and value and isinstance(value[0], int):
            return int(value[0])
    return default


def inputs_for(model: nn.Module, batch_size: int) -> dict[str, torch.Tensor]:
    """A generic batch for ``model`` by its ``main_input_name``: token ids, pixels, waveform or features."""
    config = model.config  # type: ignore[attr-defined]
    name = getattr(model, "main_input_name", "input_ids")
    params = inspect.signature(model.forward).parameters
    if name == "input_ids":
        vocab = min(_int_attr(config, "vocab_size", default=VOCAB), VOCAB)
        ids = torch.randint(3, max(vocab, 4), (batch_size, SEQ_LEN))
        out: dict[str, torch.Tensor] = {"input_ids": ids}
        if "attention_mask" in params:
            out["attention_mask"] = torch.ones_like(ids)
        if "decoder_input_ids" in params and getattr(config, "is_encoder_decoder", False):
            out["decoder_input_ids"] = torch.randint(3, max(vocab, 4), (batch_size, SEQ_LEN))
        return out
    if name == "pixel_values":
        size = _int_attr(config, "image_size", default=IMAGE)
        channels = _int_attr(config, "num_channels", default=3)
        return {"pixel_values": torch.randn(batch_size, channels, size, size)}
    if name == "input_values":
        return {"input_values": torch.randn(batch_size, WAVE)}
    if name == "input_features":
        mels = _int_attr(config, "num_mel_bins", "feature_size", "input_feat_per_channel", default=16)
        frames = 2 * _int_attr(config, "max_source_positions", default=MEL_FRAMES // 2)
        out = {"input_features": torch.randn(batch_size, mels, frames)}
        if "decoder_input_ids" in params and getattr(config, "is_encoder_decoder", False):
            vocab = min(_int_attr(config, "vocab_size", default=VOCAB), VOCAB)
            out["decoder_input_ids"] = torch.randint(3, max(vocab, 4), (batch_size, 8))
        return out
    raise ValueError(f"no generic input for main_input_name {name!r}")


class HFFeatures(nn.Module):
    """A ``transformers`` base model that returns one tensor.

    Token and audio models: the last hidden state (B, T, D). Vision models: the pooled output when
    the model has a pooler ((B, C, 1, 1) flattened), else the last hidden state averaged over
    positions ((B, C, H, W) or (B, T, D) -> (B, D)).
    """

    def __init__(self, model: nn.Module, pooled: bool) -> None:
        super().__init__()
        self.model = model
        self.pooled = pooled

    def forward(self, **inputs: torch.Tensor) -> torch.Tensor:
        out = self.model(**inputs)
        get = out.get if hasattr(out, "get") else (lambda k: None)
        if self.pooled:
            pooled = get("pooler_output")
            if isinstance(pooled, torch.Tensor):
                return pooled.flatten(1)
            hidden = get("last_hidden_state")
            if isinstance(hidden, torch.Tensor):
                return hidden.mean(dim=(2, 3)) if hidden.dim() == 4 else hidden.mean(dim=1)
        hidden = get("last_hidden_state")
        if isinstance(hidden, torch.Tensor):
            return hidden
        first = next(v for v in (out.to_tuple() if hasattr(out, "to_tuple") else out) if isinstance(v, torch.Tensor))
        return first


def kind_of(model: nn.Module) -> str:
    name = getattr(model, "main_input_name", "input_ids")
    return {"input_ids": "token", "pixel_values": "image", "input_values": "audio", "input_features": "audio"}.get(
        name, "other"
    )


def build(model_type: str, **overrides: Any) -> nn.Module:
    """The type's base model (``AutoModel.from_config``) at its small config, dropout off, wrapped to one tensor."""
    from transformers import AutoModel
    from transformers.utils import logging

    logging.set_verbosity_error()
    config = small_config(model_type, **overrides)
    model = AutoModel.from_config(config)
    model.train()
    return HFFeatures(model, pooled=kind_of(model) == "image")


class _Timeout(Exception):
    pass


def _alarm(signum: int, frame: Any) -> None:
    raise _Timeout()


def _structure(model: nn.Module) -> dict[str, Any]:
    names = {type(m).__name__ for m in model.modules()}
    return {
        "conv2d": any(isinstance(m, nn.Conv2d) for m in model.modules()),
        "conv1d": any(isinstance(m, nn.Conv1d) for m in model.modules()),
        "rms": any("RMSNorm" in n for n in names),
        "layernorm": any(isinstance(m, nn.LayerNorm) for m in model.modules()),
        "batchnorm": any(isinstance(m, nn.BatchNorm2d) for m in model.modules()),
        "attention": any("Attention" in n for n in names),
    }


def explore(types: list[str] | None = None, out_path: str = "/tmp/zoo_hf_explore.jsonl") -> None:
    """Try every type; append one JSON line per type to ``out_path`` (build time, forward+backward time, error)."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES
    from transformers.models.auto.modeling_auto import MODEL_MAPPING_NAMES

    torch.set_num_threads(1)
    signal.signal(signal.SIGALRM, _alarm)
    done = set()
    if os.path.exists(out_path):
        with open(out_path) as f:
            done = {json.loads(line)["type"] for line in f if line.strip()}
    todo = types or [t for t in CONFIG_MAPPING_NAMES if t in MODEL_MAPPING_NAMES]
    for model_type in todo:
        if model_type in done:
            continue
        rec: dict[str, Any] = {"type": model_type}
        signal.alarm(8)
        try:
            t0 = time.perf_counter()
            config = small_config(model_type)
            from transformers import AutoModel

            with torch.device("meta"):
                meta = AutoModel.from_config(config)
            rec["params"] = sum(p.numel() for p in meta.parameters())
            del meta
            if rec["params"] > MAX_PARAMS:
                raise RuntimeError(f"too big: {rec['params']} parameters")
            torch.manual_seed(0)
            model = build(model_type)
            rec["build_s"] = time.perf_counter() - t0
            rec["kind"] = kind_of(model.model)
            rec["main_input"] = model.model.main_input_name
            rec["encdec"] = bool(getattr(model.model.config, "is_encoder_decoder", False))
            rec["decoder"] = bool(getattr(model.model.config, "is_decoder", False))
            rec.update(_structure(model))
            t1 = time.perf_counter()
            y = model(**inputs_for(model.model, 4))
            y.float().pow(2).mean().backward()
            rec["fb_s"] = time.perf_counter() - t1
            rec["out_shape"] = list(y.shape)
            rec["finite"] = bool(torch.isfinite(y).all())
            rec["ok"] = True
        except _Timeout:
            rec["ok"] = False
            rec["error"] = "timeout"
        except BaseException as e:
            if isinstance(e, KeyboardInterrupt):
                raise
            rec["ok"] = False
            rec["error"] = f"{type(e).__name__}: {str(e)[:200]}"
        finally:
            signal.alarm(0)
        with open(out_path, "a") as f:
            f.write(json.dumps(rec) + "\n")
        print(model_type, rec.get("ok"), rec.get("error", ""), round(rec.get("fb_s", math.nan), 3), flush=True)


if __name__ == "__main__":
    explore(sys.argv[1:] or None)
