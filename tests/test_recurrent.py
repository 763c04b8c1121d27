"""Saturation inside torch's recurrent modules (probe/measurement/recurrent.py): the gates a fused
kernel hides, replayed from the module's own weights and counted on their flat tails."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from torch import nn

from probe.measurement import recurrent
from tests.test_user_model import M, _repo_root, probe, probe_json  # noqa: F401 (the fixture: imports from the repo)


def _output(module: nn.Module, x: torch.Tensor, hx: Any = None) -> torch.Tensor:
    y = module(x) if hx is None else module(x, hx)
    return y[0] if isinstance(y, tuple) else y


CONFIGS = [
    (cls, kwargs)
    for cls in (nn.LSTM, nn.GRU, nn.RNN)
    for kwargs in (
        {},
        {"num_layers": 2},
        {"num_layers": 2, "bidirectional": True},
        {"batch_first": True},
        {"bias": False},
    )
] + [(nn.LSTM, {"proj_size": 5, "num_layers": 2})]


@pytest.mark.parametrize(("cls", "kwargs"), CONFIGS, ids=lambda v: getattr(v, "__name__", str(v)))
def test_the_replay_computes_what_torch_computes(cls: type[nn.RNNBase], kwargs: dict[str, Any]) -> None:
    torch.manual_seed(0)
    module = cls(7, 11, **kwargs)
    x = torch.randn(2, 6, 7) if kwargs.get("batch_first") else torch.randn(6, 2, 7)
    share, replayed = recurrent.replay(module, x)
    expected = _output(module, x)
    expected = expected.transpose(0, 1) if kwargs.get("batch_first") else expected
    assert share is not None and replayed is not None
    # float32 sums in another order: a few ulps of values below 1, growing with the steps
    torch.testing.assert_close(replayed, expected, rtol=0, atol=1e-5)


def test_the_replay_reads_the_initial_state_and_unbatched_input() -> None:
    torch.manual_seed(0)
    lstm = nn.LSTM(7, 11, num_layers=2)
    x, h0, c0 = torch.randn(6, 2, 7), torch.randn(2, 2, 11), torch.randn(2, 2, 11)
    torch.testing.assert_close(recurrent.replay(lstm, x, (h0, c0))[1], _output(lstm, x, (h0, c0)), rtol=0, atol=1e-5)
    gru = nn.GRU(7, 11)
    x1 = torch.randn(6, 7)
    torch.testing.assert_close(recurrent.replay(gru, x1)[1].squeeze(1), _output(gru, x1), rtol=0, atol=1e-5)


@pytest.mark.parametrize("cls", [nn.LSTMCell, nn.GRUCell, nn.RNNCell])
def test_a_cell_is_replayed_from_its_call(cls: type[nn.Module]) -> None:
    torch.manual_seed(0)
    cell, x = cls(7, 11), torch.randn(3, 7)
    torch.testing.assert_close(recurrent.replay(cell, x)[1], _output(cell, x), rtol=0, atol=1e-6)


def test_a_packed_sequence_or_a_relu_rnn_is_not_measured() -> None:
    lstm = nn.LSTM(4, 4)
    packed = nn.utils.rnn.pack_padded_sequence(torch.randn(5, 2, 4), [5, 3])
    assert recurrent.saturated_fraction(lstm, (packed,)) is None
    from probe.model.network import is_recurrent

    assert not is_recurrent(nn.RNN(4, 4, nonlinearity="relu")) and is_recurrent(nn.RNN(4, 4))


@pytest.mark.parametrize("cls", [nn.LSTM, nn.GRU, nn.RNN])
def test_n01_weights_saturate_the_gates_and_torchs_default_does_not(cls: type[nn.RNNBase]) -> None:
    torch.manual_seed(0)
    width = 64
    module = cls(width, width)  # (one layer: its input is the N(0, 1) batch itself)
    x = torch.randn(16, 8, width)
    # torch's default U(-1/sqrt(H), 1/sqrt(H)): each pre-activation has variance at most
    # (64 + 64) / (3 * 64) = 2/3 (inputs of variance 1, states below 1): |z| > 2.3 is 2.8 sigma
    # for the tanh candidates (0.5% of a Gaussian), 4.6 is 5.6 sigma for the gates
    assert recurrent.saturated_fraction(module, (x,)) < 0.01
    for name, p in module.named_parameters():
        if name.startswith("weight"):
            nn.init.normal_(p)
    # N(0, 1): the input alone gives each pre-activation a std of at least sqrt(64) = 8, so at least
    # P(|N(0,1)| > 4.6 / 8) = 0.56 of the gates and P(|N(0,1)| > 2.3 / 8) = 0.77 of the candidates
    floor = 2 * (1 - 0.5 * (1 + math.erf(recurrent.SIGMOID_EDGE / 8 / math.sqrt(2))))
    assert recurrent.saturated_fraction(module, (x,)) > floor


@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn"])
def test_a_recurrent_lm_with_n01_weights_fails_saturation_from_the_cli(kind: str) -> None:
    args = ["--model", f"{M}:recurrent_lm", "--model-arg", f"kind={kind}", "--set", "model.vocab_size=50"]
    args += ["--set", "model.seq_len=16"]
    default = probe_json(*args)
    assert default["verdict"]["healthy"], default["verdict"]
    rnn = next(x for x in default["layers"] if x["name"] == "rnn")
    assert rnn["saturation_ratio"] is not None and rnn["saturation_ratio"] < 0.01
    broken = probe_json(*args, "--model-arg", "weights=normal1")
    assert not broken["verdict"]["healthy"]
    # saturation first; the N(0, 1) weights are also 5 times what Adam's steps move in 200 steps
    found = [(p["rule"], p["layer"], p["severity"]) for p in broken["verdict"]["problems"]]
    assert found[0] == ("saturation", "rnn", "error") and {r for r, _, _ in found} <= {"saturation", "weight_scale"}
    assert "UNHEALTHY: saturation" in probe(*args, "--model-arg", "weights=normal1").stdout
