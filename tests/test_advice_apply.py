"""Advice that fixes the network when followed literally (issue 22): each ``try:`` names a spec
change (``change`` in the JSON), ``probe advise --apply`` writes it beside the spec, probes the copy
and exits 0 only when the copy is healthy; a user model whose own code draws its weights far from
every fan-in rule is told so, weight by weight, and given an ``init.weight`` that reaches them all."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from probe import spec as spec_mod
from probe.api.pipeline import probe_spec

ROOT = Path(__file__).resolve().parent.parent


def _user_spec(path: Path, factory: str, init: str, **model: Any) -> Path:
    lines = [
        f"name: {path.stem}",
        "model:",
        f"  import: tests.models_for_tests:{factory}",
        f"  kwargs: {{init: {init}}}",
    ]
    lines += [f"  {k}: {v}" for k, v in model.items()]
    path.write_text("\n".join([*lines, "run: {device: cpu}", ""]))
    return path


CASES = {
    "cnn_normal1": ("stock_cnn", "normal1", {"input_shape": "[3, 32, 32]"}),
    "cnn_zeros": ("stock_cnn", "zeros", {"input_shape": "[3, 32, 32]"}),
    "cnn_small": ("stock_cnn", "small", {"input_shape": "[3, 32, 32]"}),
    "encoder_normal1": ("positional_encoder", "normal1", {"vocab_size": 100, "seq_len": 16}),
    "encoder_zeros": ("positional_encoder", "zeros", {"vocab_size": 100, "seq_len": 16}),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_user_model_broken_in_its_own_code_is_fixed_by_applying_the_advice(
    case: str, tmp_path: Path, cli: Any
) -> None:
    factory, init, model = CASES[case]
    path = _user_spec(tmp_path / f"{case}.yaml", factory, init, **model)
    report = probe_spec(spec_mod.load(path))
    assert not report.verdict.healthy
    assert report.advice is not None and report.advice.suggestion is not None
    text = report.advice.suggestion
    assert not text.startswith("try"), text  # printed after "try: "
    assert "far from every fan-in rule" in text and "init.weight: reset (--set init.weight=reset)" in text
    assert report.advice.change == {"init.weight": "reset"}  # every module's own init, embedding tables included
    assert report.advice.recommendation.strategy == "reset"  # the same init as the suggestion

    result = cli("advise", str(path), "--apply", "--format", "json")
    assert result.exit_code == 0, result.output
    applied = json.loads(result.stdout)["applied"]
    assert applied["before"]["healthy"] is False and applied["after"] == {"healthy": True, "failing": []}
    written = Path(applied["path"])
    assert written == tmp_path / f"{case}.advised.yaml"
    # the copy is the original with the printed --set: what a user following the text by hand runs
    assert spec_mod.to_dict(spec_mod.load(written)) == spec_mod.to_dict(spec_mod.load(path, {"init.weight": "reset"}))


def test_apply_on_a_spec_network_prints_both_verdicts_and_exits_by_the_new_one(tmp_path: Path, cli: Any) -> None:
    spec = tmp_path / "tiny.yaml"
    spec.write_text((ROOT / "configs" / "lab1_tiny_relu.yaml").read_text())
    result = cli("advise", str(spec), "--apply")
    assert result.exit_code == 0, result.output
    out = " ".join(result.output.split())
    assert "try: tiny's fixed scale is too small" in out and "--set init.weight=he_normal" in out
    assert "before: UNHEALTHY" in out and "after: healthy" in out
    assert spec_mod.load(tmp_path / "tiny.advised.yaml").init.weight.name == "he_normal"
    assert spec.read_text() == (ROOT / "configs" / "lab1_tiny_relu.yaml").read_text()  # the original is untouched


def test_apply_on_a_healthy_network_is_refused(tmp_path: Path, cli: Any) -> None:
    spec = tmp_path / "he.yaml"
    spec.write_text((ROOT / "configs" / "lab1_he_relu.yaml").read_text())
    result = cli("advise", str(spec), "--apply")
    assert result.exit_code == 2
    assert "nothing to apply" in result.output
    assert not (tmp_path / "he.advised.yaml").exists()


def test_a_user_model_within_the_fan_in_rules_is_not_told_to_change_its_init(tmp_path: Path) -> None:
    # the stock CNN at PyTorch's default init is healthy: no suggestion, and no weight called off-rule
    path = _user_spec(tmp_path / "cnn.yaml", "stock_cnn", "default", input_shape="[3, 32, 32]")
    report = probe_spec(spec_mod.load(path))
    from probe.judge.advice import off_rule

    assert report.verdict.healthy and report.advice is not None and report.advice.suggestion is None
    assert off_rule(report.stats) == []
