"""``init.weight: reset`` draws each module's own init again (issue 22): PyTorch's ``reset_parameters``
in a user model (``nn.MultiheadAttention``'s ``_reset_parameters`` too), a ``transformers`` model's
``_init_weights``; so a model whose own code broke its weights gets back the init its authors chose."""

from __future__ import annotations

import math

import pytest
import torch

from probe import spec as spec_mod
from probe.model.build import build


def test_reset_draws_pytorchs_default_again_in_a_user_model() -> None:
    spec = spec_mod.parse(
        {
            "model": {
                "import": "tests.models_for_tests:stock_cnn",
                "kwargs": {"init": "normal1"},
                "input_shape": [3, 32, 32],
            },
            "init": {"weight": "reset"},
            "run": {"device": "cpu"},
        }
    )
    built = build(spec)
    weight = dict(built.model.named_parameters())["9.weight"]  # Linear(4096, 128), was N(0, 1)
    # PyTorch's Linear default: U(-1/sqrt(fan_in), 1/sqrt(fan_in)), std 1/sqrt(3 fan_in); the sample std of
    # n draws is within a few 1/sqrt(n) of it (a uniform's relative standard error is sqrt(0.8 / (4 n)))
    expected = 1 / math.sqrt(3 * 4096)
    assert weight.std().item() == pytest.approx(expected, rel=5 * math.sqrt(0.2 / weight.numel()))
    assert weight.abs().max().item() <= 1 / math.sqrt(4096)
    assert built.init_log.by_param["9.weight"] == "init.weight reset (reset_parameters)"


def test_reset_runs_a_transformers_models_own_init() -> None:
    pytest.importorskip("transformers")
    spec = spec_mod.parse(
        {
            "model": {
                "hf": "gpt2",
                "kwargs": {"n_layer": 1, "n_embd": 64, "n_head": 4, "vocab_size": 97, "n_positions": 32},
                "seq_len": 8,
            },
            "init": {"weight": "reset"},
            "run": {"device": "cpu"},
        }
    )
    built = build(spec)
    weight = dict(built.model.named_parameters())["transformer.h.0.mlp.c_fc.weight"]
    # GPT-2's _init_weights: N(0, initializer_range^2), 0.02 by default
    assert weight.std().item() == pytest.approx(0.02, rel=5 / math.sqrt(2 * weight.numel()))
    assert "the library's _init_weights" in built.init_log.by_param["transformer.h.0.mlp.c_fc.weight"]
    torch.testing.assert_close(dict(built.model.named_parameters())["transformer.h.0.ln_1.weight"], torch.ones(64))
