"""Advice: the seeds' activation -> init table, the mismatch note, and one-line suggestions."""

from __future__ import annotations

import json
import math

import pytest
from typer.testing import CliRunner

from probe import spec as spec_mod
from probe.cli import app
from probe.judge import advice
from probe.judge.rules import evaluate
from probe.measurement.run import run_probe
from tests.conftest import CONFIGS


def _spec(activation: str | dict, weight: str | dict, **model: object) -> spec_mod.Spec:
    return spec_mod.parse(
        {
            "model": {"activation": activation, "width": 32, **model},
            "init": {"weight": weight},
            "data": {"batch_size": 64},
        }
    )


def test_tanh_with_he_is_a_mismatch_naming_xavier_and_its_gain() -> None:
    note = advice.mismatch(_spec("tanh", "he"))
    assert note is not None
    assert "xavier_normal" in note
    assert "calculate_gain('tanh')" in note
    assert "1.667" in note  # 5/3


def test_relu_with_xavier_is_a_mismatch_naming_he_and_its_gain() -> None:
    note = advice.mismatch(_spec("relu", "xavier"))
    assert note is not None
    assert "he_normal" in note
    assert f"{math.sqrt(2):.4g}" in note


@pytest.mark.parametrize(
    ("activation", "weight"),
    [
        ("relu", "he"),
        ("tanh", "xavier"),
        ("sigmoid", "xavier_uniform"),
        ("selu", "lecun_normal"),
        ({"name": "leaky_relu", "negative_slope": 0.2}, "he_uniform"),
        ("gelu", "xavier"),
        ("gelu", "trunc_normal"),
        ("relu", {"name": "xavier_normal", "gain": "auto"}),  # scaled by calculate_gain('relu'): fits
        ("relu", "default"),
    ],
    ids=str,
)
def test_fitting_pairs_have_no_mismatch(activation: str | dict, weight: str | dict) -> None:
    assert advice.mismatch(_spec(activation, weight)) is None


@pytest.mark.parametrize(
    ("activation", "weight", "written", "instead"),
    [
        ("selu", "he", "he_normal", "lecun_normal"),
        ("relu", "lecun_normal", "lecun_normal", "he_normal"),
        ("sigmoid", "he", "he_normal", "xavier_normal"),
    ],
)
def test_other_mismatches(activation: str, weight: str, written: str, instead: str) -> None:
    """The note names the init as written, the activation, and the fitting init with torch's gain."""
    note = advice.mismatch(_spec(activation, weight))
    assert note is not None
    assert note.startswith(f"{written} does not fit {activation}:")
    gain = advice.recommend(activation).gain
    assert f"use {instead} (gain {gain:.4g} = torch.nn.init.calculate_gain('{activation}'))" in note


def test_leaky_relu_recommendation_uses_its_slope() -> None:
    rec = advice.recommend("leaky_relu", {"negative_slope": 0.2})
    assert rec.gain == pytest.approx(math.sqrt(2.0 / (1 + 0.2**2)))
    assert "param=0.2" in rec.describe()


@pytest.mark.parametrize(
    "name, param",
    [
        ("linear", None),
        ("sigmoid", None),
        ("tanh", None),
        ("relu", None),
        ("selu", None),
        ("leaky_relu", None),
        ("leaky_relu", 0.2),
        ("leaky_relu", 3.0),
    ],
)
def test_the_gains_are_torchs(name: str, param: float | None) -> None:
    # advice writes torch's gains out (the parent of an isolated run judges without importing torch)
    import torch

    assert advice.calculate_gain(name, param) == pytest.approx(torch.nn.init.calculate_gain(name, param), rel=1e-15)


def test_selu_recommends_lecun() -> None:
    assert advice.recommend("selu").strategy == "lecun_normal"


def test_failing_tiny_run_gets_a_one_line_suggestion() -> None:
    spec = _spec("relu", "tiny", depth=8)
    verdict = evaluate(run_probe(spec))
    assert not verdict.healthy
    line = advice.suggestion(spec, verdict)
    assert line is not None and "\n" not in line
    assert "too small" in line and "he_normal" in line


def test_zeros_suggests_a_random_init() -> None:
    spec = _spec("relu", "zeros", depth=3)
    line = advice.suggestion(spec, evaluate(run_probe(spec)))
    assert line is not None and "identical" in line


def test_healthy_run_has_no_suggestion() -> None:
    spec = _spec("relu", "he", depth=3)
    verdict = evaluate(run_probe(spec))
    assert verdict.healthy
    assert advice.suggestion(spec, verdict) is None


def test_cli_advise_prints_mismatch(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "tanh_he.yaml"
    path.write_text("model: {activation: tanh, depth: 3, width: 32}\ninit: {weight: he}\ndata: {batch_size: 64}\n")
    result = CliRunner().invoke(app, ["advise", str(path)])
    assert result.exit_code == 0, result.output
    assert "mismatch: he_normal does not fit tanh" in result.stdout


def test_cli_advise_ok_and_missing_file(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "ok.yaml"
    path.write_text("model: {activation: relu, depth: 3, width: 32}\ninit: {weight: he}\n")
    runner = CliRunner()
    ok = runner.invoke(app, ["advise", str(path), "--no-run"])
    assert ok.exit_code == 0 and ok.stdout.startswith("ok:")
    missing = runner.invoke(app, ["advise", str(tmp_path / "nope.yaml")])
    assert missing.exit_code == 2 and "not found" in missing.output


def test_cli_run_json_carries_advice(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "relu_xavier.yaml"
    path.write_text("model: {activation: relu, depth: 3, width: 32}\ninit: {weight: xavier}\ndata: {batch_size: 64}\n")
    result = CliRunner().invoke(app, ["run", str(path), "-f", "json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["format"] == "probe.report/1"
    assert "he_normal" in doc["advice"]["mismatch"]
    assert doc["advice"]["recommended"]["strategy"] == "he_normal"


def test_cli_run_table_shows_the_mismatch_under_the_verdict(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "tanh_he.yaml"
    path.write_text("model: {activation: tanh, depth: 3, width: 32}\ninit: {weight: he}\ndata: {batch_size: 64}\n")
    result = CliRunner().invoke(app, ["run", str(path)])
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert out.index("verdict:") < out.index("mismatch: he_normal does not fit tanh")


def test_recurrent_cells_are_judged_by_their_own_tanh_not_model_activation(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """LSTM and GRU ignore model.activation (default relu): advice judges the cell's tanh."""
    lstm = _spec("relu", "xavier", kind="lstm", depth=1, seq_len=4)
    assert advice.mismatch(lstm) is None  # xavier fits tanh, whatever model.activation says
    note = advice.mismatch(_spec("relu", "he", kind="gru", depth=1, seq_len=4))
    assert note is not None and "does not fit tanh (the gru cell's)" in note
    path = tmp_path / "lstm_he.yaml"
    path.write_text("model: {kind: lstm, width: 16, depth: 1, seq_len: 4}\ninit: {weight: he}\n")
    result = CliRunner().invoke(app, ["advise", str(path), "--no-run"])
    assert result.exit_code == 0, result.output
    assert "mismatch: he_normal does not fit tanh (the lstm cell's)" in result.stdout
    assert "xavier" in result.stdout
    # the shipped recipes fill the cells through init.rules: init.weight (default he) is not their init
    for recipe in ("lstm_forget_bias.yaml", "gru.yaml"):
        assert advice.mismatch(spec_mod.load(CONFIGS / recipe)) is None, recipe


def test_a_user_model_is_not_judged_by_model_activation() -> None:
    spec = spec_mod.parse(
        {"model": {"import": "tests.models_for_tests:deep_tanh_mlp", "activation": "tanh"}, "init": {"weight": "he"}}
    )
    assert advice.mismatch(spec) is None


def test_a_recurrent_gradient_fading_through_time_gets_a_time_suggestion() -> None:
    # 40 steps: 20 read 1.7e-4 at t0 (a warning) since the gradient scale is taken per position:
    # the reference (the last GRU's sequence, whose gradient lives on its last step) is no longer
    # multiplied by the norm over all 20 steps (docs/verdicts.md, issue 18)
    gru = spec_mod.load(CONFIGS / "gru.yaml", {"model.seq_len": 40})
    verdict = evaluate(run_probe(gru))
    assert "gradient_vanishing" in [p.rule for p in verdict.problems]
    line = advice.suggestion(gru, verdict)
    assert line is not None and "through time" in line and "seq_len" in line and "forget_bias" in line
    lstm = spec_mod.load(CONFIGS / "lstm_forget_bias.yaml", {"model.seq_len": 60})
    verdict = evaluate(run_probe(lstm))
    assert "gradient_vanishing" in [p.rule for p in verdict.problems]  # 60 steps fade even with the bias
    line = advice.suggestion(lstm, verdict)
    assert line is not None and "even with a forget bias" in line
