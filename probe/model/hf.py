"""transformers models by config, offline: ``model.hf: llama`` (a model type) or a local ``config.json``.

The config is the library's default for the type (or the file's), with ``model.kwargs`` overriding
its fields; the model is ``AutoModel.from_config``, so its weights come from the library's own
random init (``_init_weights``), exactly what training would start from. Nothing is downloaded:
``HF_HUB_OFFLINE`` is set before transformers is imported.

Inputs come from the config: token ids below ``vocab_size`` (``model.seq_len`` of them, with an
all-ones attention mask) for text models, pixel values of ``num_channels`` x ``image_size`` for
vision models. The measured output is the base model's last hidden state (``HiddenState``), so
the backward pass starts from it, as it would under any head. The rows are found by the user
model's discovery pass (``discovery.discover``).

For the probe, dropout probabilities in the config are set to 0 (a note says which) unless
``model.kwargs`` sets them, and ``use_cache`` is off: a random mask would blur the statistics,
and a key/value cache is not part of a training step.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from probe.errors import BuildError, first_line
from probe.model.inputs import InputSpec
from probe.model.network import Built, Plan
from probe.spec import Spec, inits

if TYPE_CHECKING:
    from torch import nn

INSTALL = "pip install 'probe[hf]' (or pip install transformers)"


def _transformers() -> Any:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never the network
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")  # config warnings would bury probe's output
    try:
        import transformers
    except ImportError:
        raise BuildError(f"model.hf needs the transformers package: {INSTALL}") from None
    return transformers


def load_config(spec: Spec) -> tuple[Any, list[str]]:
    """The model's config (the type's defaults or the file's, ``model.kwargs`` applied) and notes."""
    transformers = _transformers()
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    m = spec.model
    assert m.hf is not None
    source = m.hf.strip()
    fields: dict[str, Any] = {}
    if source.endswith(".json") or os.sep in source or Path(source).exists():
        path = Path(source).expanduser()
        if path.is_dir():
            path = path / "config.json"
        if not path.is_file():
            raise BuildError(
                f"model.hf: no config file at '{path}'; give a model type (llama, gpt2, ...) or a config.json"
            )
        try:
            fields = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise BuildError(f"model.hf: cannot read '{path}': {first_line(exc)}") from None
        if not isinstance(fields, dict) or not isinstance(fields.get("model_type"), str):
            raise BuildError(
                f"model.hf: '{path}' has no \"model_type\"; a transformers config.json names its model type"
            )
        model_type = fields.pop("model_type")
    else:
        model_type = source
    if model_type not in CONFIG_MAPPING:
        from probe.spec.schema import did_you_mean

        hint = did_you_mean(model_type, list(CONFIG_MAPPING.keys()))
        raise BuildError(
            f"model.hf: transformers {transformers.__version__} has no model type '{model_type}'"
            + (f"; {hint.strip()}" if hint else "")
            + " (a model type such as llama, gpt2, bert, vit, resnet, or a path to a config.json)"
        )
    config_class = CONFIG_MAPPING[model_type]
    defaults = config_class()
    for key in m.kwargs:
        if not hasattr(defaults, key):
            from probe.spec.schema import did_you_mean

            hint = did_you_mean(key, list(defaults.to_dict()))
            raise BuildError(
                f"model.kwargs: {model_type} configs have no field '{key}'"
                + (f"; {hint.strip()}" if hint else "")
                + f" (see {type(defaults).__name__} in the transformers docs)"
            )
    given = {**fields, **m.kwargs}
    notes: list[str] = []
    zeroed = [
        key
        for key, value in defaults.to_dict().items()
        if _is_dropout(key) and key not in m.kwargs and isinstance(value, float) and value > 0
    ]
    zeroed += [
        key
        for key, value in fields.items()
        if _is_dropout(key) and key not in m.kwargs and key not in zeroed and isinstance(value, float) and value > 0
    ]
    for key in zeroed:
        given[key] = 0.0
    if zeroed:
        notes.append(f"model.hf: dropout off for the probe ({', '.join(zeroed)} = 0; set them in model.kwargs to keep)")
    if hasattr(defaults, "use_cache"):
        given.setdefault("use_cache", False)
    try:
        config = config_class(**given)
    except Exception as exc:
        raise BuildError(f"model.hf: {type(defaults).__name__} rejected its fields: {first_line(exc)}") from None
    return config, notes


def _is_dropout(key: str) -> bool:
    """A config field holding a dropout probability: ``hidden_dropout_prob``, GPT-2's ``resid_pdrop``."""
    return "dropout" in key or key.endswith("pdrop")


WAVE_SAMPLES = 16000  # an audio model's raw waveform (wav2vec2, HuBERT): one second at 16 kHz
AUDIO_FRAMES = 256  # feature frames where a model takes any number (Speech2Text): 2.56 s at 10 ms


def input_spec(config: Any, spec: Spec) -> InputSpec:
    """Token ids with an attention mask, pixel values, a waveform or log-mel features, as the
    config and its model's ``main_input_name`` describe them."""
    main = _main_input(config)
    mels = getattr(config, "num_mel_bins", None)
    if main == "input_values":
        if mels and getattr(config, "max_length", None):  # a spectrogram, frames x mel bins (AST)
            return InputSpec("shape", (int(config.max_length), int(mels)), keyword="input_values")
        return InputSpec("shape", (WAVE_SAMPLES,), keyword="input_values")
    if main == "input_features" and mels:
        frames = 2 * int(getattr(config, "max_source_positions", 1500))  # Whisper's encoder takes exactly these
        return InputSpec("shape", (int(mels), frames), keyword="input_features")
    if main == "input_features" and getattr(config, "input_feat_per_channel", None):
        # Speech2Text: frames x features, subsampled 4-fold by its convolutions
        features = int(config.input_feat_per_channel) * int(getattr(config, "input_channels", 1) or 1)
        frames = min(4 * int(getattr(config, "max_source_positions", 64)), AUDIO_FRAMES)
        return InputSpec("shape", (frames, features), keyword="input_features")
    if getattr(config, "vocab_size", None) and not hasattr(config, "num_channels"):
        return InputSpec(
            "tokens", (spec.model.seq_len,), vocab_size=int(config.vocab_size), keyword="input_ids", attention_mask=True
        )
    if hasattr(config, "num_channels"):
        size = getattr(config, "image_size", None) or spec.model.image_size
        if isinstance(size, (list, tuple)):
            shape = (int(config.num_channels), *(int(s) for s in size))
        else:
            shape = (int(config.num_channels), int(size), int(size))
        return InputSpec("shape", shape, keyword="pixel_values")
    raise BuildError(
        f"model.hf: cannot tell the inputs of a {type(config).__name__} (no vocab_size, no num_channels); "
        "probe supports text models (token ids), vision models (pixel values) and audio models (waveforms, log-mel features)"
    )


def _main_input(config: Any) -> str | None:
    """The keyword of the base model's main input (its class's ``main_input_name``), without building it."""
    try:
        from transformers.models.auto.modeling_auto import MODEL_MAPPING

        found = MODEL_MAPPING[type(config)]
    except Exception:  # a type the auto mapping does not hold: the config decides
        return None
    cls = found[0] if isinstance(found, tuple) else found
    name = getattr(cls, "main_input_name", None)
    return str(name) if name else None


def make_model(config: Any) -> nn.Module:
    """``AutoModel.from_config`` (the library's init, from torch's global generator) wrapped so its
    output is the last hidden state."""
    from transformers import AutoModel

    try:
        model = AutoModel.from_config(config)
    except Exception as exc:
        raise BuildError(f"model.hf: AutoModel.from_config raised {type(exc).__name__}: {first_line(exc)}") from None
    return HiddenState.wrap(model)


def plan(spec: Spec) -> Plan:
    """``build``'s plan for a transformers model: the library's model and init (its constructor),
    ``init.weight``/``init.bias`` (if given) and ``init.rules``, then discovery of its rows."""
    from probe.model import discovery, init_rules

    config, notes = load_config(spec)
    model = make_model(config)
    inputs = input_spec(config, spec)
    log = init_rules.InitLog()
    ctx = inits.InitContext(spec.model.activation.name, spec.model.activation.params)
    steps: list[init_rules.InitStep] = []
    if spec.init.explicit:
        steps = init_rules.flat_steps(model, spec.init, ctx, log, every_weight=True)
        if not steps and spec.init.weight.name != "default":
            raise BuildError(f"init.weight: '{spec.init.weight.name}' fills nothing in {type(model).__name__}")
    steps += init_rules.rule_fills(model, spec.init.rules, ctx, None, log)

    def finish() -> Built:
        watched, found = discovery.discover(model, inputs, spec.data.distribution)
        for w in watched:
            w.init_rule = log.for_tensor(model, w.weight) or ("own" if w.weight is not None else None)
        left = init_rules.unreached(model, log) if steps else None
        return Built(model, watched, inputs, notes + found + ([left] if left else []), init_log=log)

    return Plan(model, steps, finish)


def _hidden_state_class() -> type:
    import torch
    from torch import nn

    class HiddenState(nn.Module):
        """A transformers base model whose output is its last hidden state. The model sits under
        its ``base_model_prefix`` (``model`` for Llama, ``transformer`` for GPT-2), so rows are
        named as in a checkpoint of the model with a head."""

        def __init__(self, model: nn.Module) -> None:
            super().__init__()
            self.prefix = str(getattr(model, "base_model_prefix", "") or "model")
            self.add_module(self.prefix, model)

        @property
        def inner(self) -> nn.Module:
            return getattr(self, self.prefix)  # type: ignore[no-any-return]

        def forward(self, **inputs: Any) -> Any:
            config = getattr(self.inner, "config", None)
            decoder_given = "decoder_input_ids" in inputs or "decoder_inputs_embeds" in inputs
            if getattr(config, "is_encoder_decoder", False) and not decoder_given:
                if "input_ids" in inputs:  # T5, mT5, Pegasus, ...: the decoder reads the same ids
                    inputs = {**inputs, "decoder_input_ids": inputs["input_ids"]}  # (BART shifts them itself)
                else:  # Whisper: its decoder starts from the start token, 8 positions
                    first = next(iter(inputs.values()))
                    start = int(getattr(config, "decoder_start_token_id", 0) or 0)
                    ids = first.new_full((first.shape[0], 8), start, dtype=torch.long)
                    inputs = {**inputs, "decoder_input_ids": ids}
            out = self.inner(**inputs)
            hidden = getattr(out, "last_hidden_state", None)
            return hidden if hidden is not None else out[0]

    return HiddenState


class HiddenState:
    """Namespace for the lazily defined ``nn.Module`` (torch stays off the import path)."""

    _cls: type | None = None

    @classmethod
    def wrap(cls, model: nn.Module) -> nn.Module:
        if cls._cls is None:
            cls._cls = _hidden_state_class()
        return cls._cls(model)  # type: ignore[no-any-return]


def meta_init(model: nn.Module) -> tuple[list[tuple[nn.Module, Callable[[], None]]], Callable[[], Any]]:
    """A transformers model's own init (its ``_init_weights`` on every module, in the library's
    order: on the meta device the library skips it), and the guard its init functions run in."""
    from transformers import initialization

    steps = [(module, _bind(fn, module)) for module, fn in _init_order(model)]
    return steps, initialization.guard_torch_init_functions


def _bind(fn: Callable[[nn.Module], None], module: nn.Module) -> Callable[[], None]:
    return lambda: fn(module)


def _init_order(wrapper: nn.Module) -> list[tuple[nn.Module, Callable[[nn.Module], None]]]:
    """(module, init function) in ``PreTrainedModel.initialize_weights``'s order: children before
    their parent, each sub-model (a PreTrainedModel inside) with its own ``_init_weights``."""
    from transformers import PreTrainedModel

    out: list[tuple[nn.Module, Callable[[nn.Module], None]]] = []

    def visit(module: nn.Module, fn: Callable[[nn.Module], None]) -> None:
        for child in module.children():
            visit(child, child._init_weights if isinstance(child, PreTrainedModel) else fn)
        out.append((module, fn))

    inner = next(iter(wrapper.children()))
    visit(inner, inner._init_weights)  # type: ignore[arg-type]
    return out
