"""``model.hf`` / ``--hf``: transformers models by config, offline, with the library's own init; and
``--layer-by-layer`` forward and backward for transformers and user models, equal to a normal run."""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from pathlib import Path
from typing import Any

import pytest

from probe import spec as spec_mod
from probe.errors import BuildError, SpecError
from probe.measurement import estimate_layerwise
from probe.measurement.layerwise import run_layerwise
from probe.measurement.run import run_probe
from probe.model import blocks

pytest.importorskip("transformers")

# small configs: 2 blocks each (the "2-block truncation"), widths of a few dozen
CONFIGS = {
    "llama": {
        "num_hidden_layers": 2,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "vocab_size": 50,
    },
    "gpt2": {"n_layer": 2, "n_embd": 32, "n_head": 4, "vocab_size": 50},
    "bert": {
        "num_hidden_layers": 2,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_attention_heads": 4,
        "vocab_size": 50,
    },
    "vit": {
        "num_hidden_layers": 2,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_attention_heads": 4,
        "image_size": 16,
        "patch_size": 8,
    },
    "resnet": {"hidden_sizes": [8, 16], "depths": [1, 1], "embedding_size": 8},
}
LLAMA_ARGS = [f"--model-arg={k}={v}" for k, v in CONFIGS["llama"].items()]
SMALL_RUN = ["--set", "data.batch_size=3", "--set", "model.seq_len=6", "--set", "run.device=cpu"]
STATS = ("mean", "std", "zero_ratio", "dead_units", "nonfinite", "grad_std", "weight_grad_norm", "weight_grad_std")


def _spec(model: dict[str, Any], batches: int = 2) -> spec_mod.Spec:
    raw = {"model": {"seq_len": 6, **model}, "data": {"batch_size": 3, "batches": batches}, "run": {"device": "cpu"}}
    return spec_mod.parse(raw)


def _hf(kind: str, **overrides: Any) -> spec_mod.Spec:
    return _spec({"hf": kind, "kwargs": {**CONFIGS[kind], **overrides}})


# ---- the spec and the build -----------------------------------------------------------------


def test_model_hf_round_trips_and_names_the_model() -> None:
    spec = _hf("llama")
    assert spec.model.hf == "llama" and spec.model.own_model
    assert spec_mod.parse(spec_mod.to_dict(spec)) == spec
    assert "transformers llama" in spec_mod.summary(spec) and "the model's own" in spec_mod.summary(spec)


def test_model_import_and_hf_together_is_a_spec_error() -> None:
    with pytest.raises(SpecError, match=r"model.hf: give model.import or model.hf, not both"):
        spec_mod.parse({"model": {"hf": "llama", "import": "tests.models_for_tests:awkward"}})


def test_rows_are_the_base_models_modules_under_its_prefix() -> None:
    report = run_probe(_hf("llama"))
    names = [row.name for row in report.layers]
    assert names[0] == "model.embed_tokens" and names[-1] == "model.norm"
    assert "model.layers.1.mlp.down_proj" in names
    assert all(row.grad_std is not None for row in report.layers)  # the backward starts at the hidden state


def test_weights_are_the_librarys_own_init() -> None:
    """The model probe builds is ``AutoModel.from_config`` under the run's seed: the same tensors."""
    import torch
    from transformers import AutoModel, LlamaConfig

    from probe.model.build import build_initialized

    built = build_initialized(_hf("llama"))
    torch.manual_seed(0)
    reference = AutoModel.from_config(LlamaConfig(**CONFIGS["llama"], use_cache=False))
    theirs = reference.state_dict()
    ours = {k.removeprefix("model."): v for k, v in built.model.state_dict().items()}
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k]) for k in theirs)


def test_inputs_come_from_the_config() -> None:
    from probe.model import hf

    text_config, _ = hf.load_config(_hf("llama"))
    tokens = hf.input_spec(text_config, _hf("llama"))
    assert (tokens.kind, tokens.shape, tokens.vocab_size, tokens.attention_mask) == ("tokens", (6,), 50, True)
    vision_config, _ = hf.load_config(_hf("vit"))
    pixels = hf.input_spec(vision_config, _hf("vit"))
    assert (pixels.kind, pixels.shape, pixels.keyword) == ("shape", (3, 16, 16), "pixel_values")


def test_dropout_is_off_unless_kwargs_set_it() -> None:
    from probe.model import hf

    config, notes = hf.load_config(_hf("bert"))
    assert config.hidden_dropout_prob == 0.0 and any("hidden_dropout_prob" in n for n in notes)
    kept, _ = hf.load_config(_hf("bert", hidden_dropout_prob=0.2))
    assert kept.hidden_dropout_prob == 0.2


def test_a_local_config_json(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"model_type": "gpt2", **CONFIGS["gpt2"], "n_embd": 48}))
    spec = _spec({"hf": str(path)})
    report = run_probe(spec)
    assert report.layers[0].name == "transformer.wte" and report.layers[0].units == 48
    # a directory holding config.json works too, and kwargs override the file
    spec = _spec({"hf": str(tmp_path), "kwargs": {"n_layer": 1}})
    assert not any(".h.1." in row.name for row in run_probe(spec).layers)


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ({"hf": "lama"}, r"no model type 'lama'; did you mean 'llama'\?"),
        (
            {"hf": "llama", "kwargs": {"hiden_size": 8}},
            r"llama configs have no field 'hiden_size'; did you mean 'hidden_size'",
        ),
        ({"hf": "missing/config.json"}, r"no config file at"),
    ],
    ids=["type", "field", "path"],
)
def test_build_errors_say_what_to_do(model: dict[str, Any], message: str) -> None:
    with pytest.raises(BuildError, match=message):
        run_probe(_spec(model))


# ---- the command line ------------------------------------------------------------------------


def test_cli_hf_runs_with_model_args(cli: Any) -> None:
    result = cli("run", "--hf", "llama", *LLAMA_ARGS, *SMALL_RUN, "--format", "json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["spec"]["model"]["hf"] == "llama"
    assert report["spec"]["model"]["kwargs"]["hidden_size"] == 32
    assert report["layers"][0]["name"] == "model.embed_tokens"


def test_cli_hf_runs_an_encoder_decoder_whose_decoder_needs_its_ids(cli: Any) -> None:
    # T5 refuses a call without decoder ids (BART derives them): the decoder reads the same ids
    t5 = ["d_model=32", "d_ff=64", "num_layers=2", "num_heads=2", "d_kv=16", "vocab_size=100"]
    args = [x for kv in t5 for x in ("--model-arg", kv)]
    result = cli("run", "--hf", "t5", *args, *SMALL_RUN, "--format", "json")
    assert result.exit_code == 0, result.output
    names = [row["name"] for row in json.loads(result.stdout)["layers"]]
    assert any(n.startswith("transformer.encoder.") for n in names)
    assert any(n.startswith("transformer.decoder.") for n in names)


@pytest.mark.parametrize(
    ("kind", "kwargs", "first"),
    [
        # a waveform of 16,000 samples (its model's main input, input_values)
        (
            "wav2vec2",
            ["hidden_size=32", "num_hidden_layers=2", "num_attention_heads=2", "intermediate_size=64"],
            "wav2vec2.feature_extractor.conv_layers.0.conv",
        ),
        # log-mel features of 2 x max_source_positions frames, the decoder from its start token
        (
            "whisper",
            [
                "d_model=32",
                "encoder_layers=1",
                "decoder_layers=1",
                "encoder_attention_heads=2",
                "decoder_attention_heads=2",
                "num_mel_bins=8",
                "max_source_positions=16",
            ],
            "model.encoder.conv1",
        ),
        # a spectrogram of max_length frames x num_mel_bins
        (
            "audio-spectrogram-transformer",
            [
                "hidden_size=32",
                "num_hidden_layers=1",
                "num_attention_heads=2",
                "intermediate_size=64",
                "max_length=64",
                "num_mel_bins=16",
            ],
            "audio_spectrogram_transformer.embeddings.patch_embeddings.projection",
        ),
        # frames x features, the decoder from its start token
        (
            "speech_to_text",
            [
                "d_model=32",
                "encoder_layers=1",
                "decoder_layers=1",
                "encoder_attention_heads=2",
                "decoder_attention_heads=2",
                "encoder_ffn_dim=64",
                "decoder_ffn_dim=64",
                "input_feat_per_channel=8",
                "conv_channels=16",
            ],
            "model.encoder.conv.conv_layers.0",
        ),
    ],
)
def test_cli_hf_runs_audio_models_on_their_own_inputs(cli: Any, kind: str, kwargs: list[str], first: str) -> None:
    args = [x for kv in kwargs for x in ("--model-arg", kv)]
    result = cli("run", "--hf", kind, *args, *SMALL_RUN, "--format", "json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["layers"][0]["name"] == first


@pytest.mark.parametrize("command", ["run", "fix", "inspect"])
def test_every_command_with_model_takes_hf(cli: Any, command: str) -> None:
    result = cli(command, "--hf", "lama", *SMALL_RUN)
    assert result.exit_code == 2, result.output
    assert "did you mean 'llama'" in result.output and len(result.output.strip().splitlines()) <= 3


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--hf", "llama", "--model-arg", "hiden_size=8"], "no field 'hiden_size'"),
        (["--hf", "llama", "--model", "tests.models_for_tests:awkward"], "give --model or --hf, not both"),
        (["configs/lab1_he_relu.yaml", "--model-arg", "n_layer=1"], "--model-arg needs --model or --hf"),
    ],
    ids=["field", "both", "model-arg-alone"],
)
def test_cli_errors_exit_2_in_one_line(cli: Any, args: list[str], message: str) -> None:
    result = cli("run", *args)
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split())


def test_cli_without_transformers_says_how_to_install(cli: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "transformers", None)  # import transformers raises ImportError
    result = cli("run", "--hf", "llama", *SMALL_RUN)
    assert result.exit_code == 2
    assert "needs the transformers package: pip install 'probe[hf]'" in " ".join(result.output.split())


# ---- layer by layer, forward and backward ----------------------------------------------------


def _assert_same(normal: Any, layered: Any) -> None:
    assert [r.name for r in layered.layers] == [r.name for r in normal.layers]
    assert layered.attention == normal.attention  # per module: logit std and entropy (transformers)
    for a, b in zip(normal.layers, layered.layers, strict=True):
        assert a.count == b.count, a.name
        numeric = [f.name for f in dataclasses.fields(a) if isinstance(getattr(a, f.name), (int, float))]
        assert set(STATS) <= {f.name for f in dataclasses.fields(a)}
        for field in sorted(set(numeric) | set(STATS)):
            x, y = getattr(a, field), getattr(b, field)
            if x is None or (isinstance(x, float) and math.isnan(x)):
                assert y is None or math.isnan(y), (a.name, field)
            else:
                # the same numbers, merged in another order (float64): equal to rounding
                assert y == pytest.approx(x, rel=1e-12, abs=1e-300), (a.name, field, x, y)


@pytest.mark.parametrize("kind", ["llama", "gpt2", "bert", "vit", "resnet"])
def test_layer_by_layer_equals_a_normal_run(kind: str) -> None:
    """A 2-block truncation: forward and backward statistics of every row equal a normal run's."""
    spec = _hf(kind)
    seen: list[tuple[int, int]] = []
    layered = run_layerwise(spec, lambda done, total: seen.append((done, total)))
    _assert_same(run_probe(spec), layered)
    assert sum(row.grad_std is not None for row in layered.layers) > len(layered.layers) // 2  # not vacuous
    assert any("forward and backward" in n for n in layered.notes)
    assert bool(layered.attention) == (kind != "resnet")  # the attention tables are measured too
    # progress: every block, forward and backward, each batch (one step for the blocks off the
    # gradient's path, such as a pooler, which have no backward pass)
    passes = 2 * len(blocks.meta_model(spec).blocks) * spec.data.batches
    done = [d for d, _ in seen]
    assert seen[0] == (0, passes)  # before the sweep
    assert done == sorted(set(done)) and seen[-1] == (passes, passes) and {t for _, t in seen} == {passes}
    assert len(seen) >= passes + 1 - (2 if kind in ("bert", "vit") else 0)


def test_layer_by_layer_user_model_equals_a_normal_run() -> None:
    """In-place ops, a module reused inside a block, BatchNorm, a residual, a dict output."""
    spec = _spec({"import": "tests.models_for_tests:awkward", "input_shape": [3, 6, 6]})
    _assert_same(run_probe(spec), run_layerwise(spec))


def test_a_block_output_that_is_a_view_of_its_weight_survives_the_next_block() -> None:
    """Layer by layer, one reused buffer holds the block in memory (``Runner.staging``): an output
    that views the block's weight is copied out before the next block's weights overwrite it."""
    spec = _spec({"import": "tests.models_for_tests:passes_weights", "input_shape": [8]})
    _assert_same(run_probe(spec), run_layerwise(spec))


@pytest.mark.parametrize(("kind", "dtype"), [("user", "float64"), ("llama", "bfloat16")])
def test_layer_by_layer_in_another_dtype_equals_a_normal_run(kind: str, dtype: str) -> None:
    """Blocks are built in float32 and cast to run.dtype: each goes back to the meta device as
    built, so that every later materialization (each batch, each backward pass, after discovery)
    draws its init in float32 as the normal build does, not in the run's dtype."""
    model = {"import": "tests.models_for_tests:awkward", "input_shape": [3, 6, 6]} if kind == "user" else None
    base = _spec(model) if model is not None else _hf(kind)
    spec = spec_mod.parse({**spec_mod.to_dict(base), "run": {"device": "cpu", "dtype": dtype}})
    _assert_same(run_probe(spec), run_layerwise(spec))


def test_an_input_function_draws_the_same_batches_as_in_a_normal_run() -> None:
    """``--inputs`` functions draw from torch's global generator: materializing blocks (which sets
    its state to replay the init) must leave it where a normal build leaves it."""
    spec = _spec({"import": "tests.models_for_tests:two_inputs", "inputs": "tests.models_for_tests:make_two_inputs"}, 3)
    _assert_same(run_probe(spec), run_layerwise(spec))


def test_blocks_are_the_repeated_stack_and_the_children_around_it() -> None:
    meta = blocks.meta_model(_hf("llama"))
    names = [b.name for b in meta.blocks]
    assert names == ["model.embed_tokens", "model.layers.0", "model.layers.1", "model.norm"]
    assert [type(m).__name__ for m in meta.resident] == ["LlamaRotaryEmbedding"]
    assert all(p.device.type == "meta" for p in meta.model.parameters())


def test_the_progress_bar_shows_blocks_time_per_block_and_time_left(monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    from rich.console import Console

    from probe.cli import progress

    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=80, color_system=None)
    monkeypatch.setattr(progress, "err_console", lambda: console)
    with progress.block_progress() as update:
        assert update is not None
        for done in range(4):
            update(done, 8)
    text = out.getvalue()
    assert "drawing the init program" in text and "3/8" in text and "s/block" in text


def test_forward_only_layer_by_layer() -> None:
    spec = spec_mod.parse({**spec_mod.to_dict(_hf("llama")), "run": {"device": "cpu", "backward": False}})
    layered = run_layerwise(spec)
    _assert_same(run_probe(spec), layered)
    assert all(row.grad_std is None for row in layered.layers)


def test_spec_init_is_refused_layer_by_layer() -> None:
    spec = spec_mod.parse({**spec_mod.to_dict(_hf("llama")), "init": {"weight": "xavier_normal"}})
    with pytest.raises(SpecError, match=r"rebuilds a model\.hf model with its own init"):
        run_layerwise(spec)


def test_cli_layer_by_layer_json_equals_a_normal_run(cli: Any) -> None:
    args = ["run", "--hf", "gpt2", *[f"--model-arg={k}={v}" for k, v in CONFIGS["gpt2"].items()], *SMALL_RUN]
    layered = cli(*args, "--layer-by-layer", "--format", "json")
    normal = cli(*args, "--format", "json")
    assert layered.exit_code == 0 and normal.exit_code == 0, layered.output
    a, b = json.loads(normal.stdout), json.loads(layered.stdout)
    for key in ("std", "grad_std", "weight_grad_norm"):
        for x, y in zip(a["layers"], b["layers"], strict=True):
            assert (y[key] is None) == (x[key] is None), (x["name"], key)
            if x[key] is not None:
                assert y[key] == pytest.approx(x[key], rel=1e-12), (x["name"], key)
    assert b["verdict"] == a["verdict"]


def test_cli_layer_by_layer_user_model(cli: Any) -> None:
    args = ["run", "--model", "tests.models_for_tests:awkward", "--input-shape", "3,6,6", "--set", "run.device=cpu"]
    result = cli(*args, "--set", "data.batch_size=4", "--layer-by-layer", "--format", "json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)["layers"]
    assert rows[0]["name"] == "stem" and all(r["grad_std"] is not None for r in rows if r["name"] != "unused")


def test_max_memory_uses_the_one_block_estimate(cli: Any) -> None:
    """The one-block estimate grows with the widest block, not with depth."""
    shallow = estimate_layerwise.estimate_blockwise_memory(_hf("llama"))
    deep = estimate_layerwise.estimate_blockwise_memory(_hf("llama", num_hidden_layers=40))
    assert deep.weights == shallow.weights
    head_dim = 32 // 4
    block = 2 * 32 * 32 + 2 * 32 * (2 * head_dim) + 3 * 32 * 64 + 2 * 32  # q, o; k, v (2 KV heads); mlp; 2 norms
    assert block > 50 * 32  # a decoder layer outweighs the embedding here
    rotary = 2 * head_dim // 2  # inv_freq and original_inv_freq
    assert shallow.weights == 4 * block * 2 + 4 * rotary  # float32 weights and their gradients; resident tables
    refused = cli("run", "--hf", "llama", *LLAMA_ARGS, *SMALL_RUN, "--layer-by-layer", "--max-memory", "0.1")
    assert refused.exit_code == 3
    assert "exceeds --max-memory 0.1 GiB" in " ".join(refused.output.split())
    assert cli("run", "--hf", "llama", *LLAMA_ARGS, *SMALL_RUN, "--layer-by-layer", "--max-memory", "4").exit_code == 0


def test_tied_weights_across_blocks_are_refused() -> None:
    spec = _spec({"import": "tests.models_for_tests:tied", "input_shape": [6]})
    with pytest.raises(BuildError, match=r"--layer-by-layer: 2\.weight is shared with 0 \(tied weights\)"):
        run_layerwise(spec)


@pytest.mark.parametrize(
    ("factory", "tensor"),
    [
        ("rarely_firing", r"hidden\.bias"),
        ("writes_through_data", r"0\.weight"),
        ("resets_its_children", r"layers\.0\.weight"),
    ],
)
def test_a_constructor_write_no_step_replays_is_refused(factory: str, tensor: str) -> None:
    """A copy into a bias, a fill through ``.data``, a parent's reset redrawing its children's
    weights: replaying each block's own steps would not give the weights a normal build has."""
    spec = _spec(
        {"import": f"tests.models_for_tests:{factory}", "input_shape": [8 if factory == "rarely_firing" else 4]}
    )
    with pytest.raises(BuildError, match=rf"--layer-by-layer cannot rebuild {tensor}.*: constructor code writes it"):
        run_layerwise(spec)


def test_layer_by_layer_refuses_torchrun(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(SpecError, match="--layer-by-layer runs in one process; start it without torchrun"):
        run_layerwise(_hf("llama"))


def test_the_json_schema_takes_model_hf() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    from probe.spec.jsonschema import spec_schema

    jsonschema.validate(spec_mod.to_dict(_hf("llama")), spec_schema())
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"model": {"hf": ""}}, spec_schema())


def test_the_memory_guard_applies_to_hf_before_anything_is_allocated(cli: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """--hf is estimated from its config (parameters counted on the meta device, activations from
    batch, tokens, hidden size and layers) and refused before the real model is built (issue 23, item 5)."""
    from probe.model import hf

    def never(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the real model was built")

    monkeypatch.setattr(hf, "plan", never)
    result = cli("run", "--hf", "llama", *LLAMA_ARGS, *SMALL_RUN, "--max-memory", "0.1")
    assert result.exit_code == 3, result.output
    said = " ".join(result.output.split())
    assert "exceeds --max-memory 0.1 GiB" in said and "--model-arg num_hidden_layers=N" in said
    big = cli("run", "--hf", "llama", "--set", "data.batch_size=2", "--max-memory", "8")  # the 7B default
    assert big.exit_code == 3, big.output
    assert "weights 49." in big.output  # 6.7e9 parameters, float32, and their gradients


@pytest.mark.parametrize("kind", ["gpt2", "llama", "bert"])
@pytest.mark.parametrize("seq_len", [6, 64])
def test_the_hf_estimate_bounds_a_real_run(kind: str, seq_len: int) -> None:
    """Weights: the parameters exactly (float32, and their gradients). Activations: at least the
    bytes of every tensor a real forward pass creates (what autograd may keep for the backward pass,
    the bound ``estimate_shapes_memory`` uses for the models that run on the meta device)."""
    import torch

    from probe.measurement.estimate_hf import estimate_hf_memory
    from probe.measurement.estimate_meta import _count_outputs
    from probe.model.build import build
    from probe.model.inputs import draw

    spec = spec_mod.parse(
        {"model": {"hf": kind, "kwargs": CONFIGS[kind], "seq_len": seq_len}, "data": {"batch_size": 16}}
    )
    est = estimate_hf_memory(spec)
    built = build(spec)
    params = sum(p.numel() for p in built.model.parameters()) + sum(b.numel() for b in built.model.buffers())
    assert est.weights == params * 4 * 2
    batch = draw(built.inputs, 16, "normal", torch.Generator(), torch.device("cpu"), torch.float32)
    created: list[int] = []
    with _count_outputs(created):
        built.model(*batch.args, **batch.kwargs)
    assert sum(created) <= est.activations
