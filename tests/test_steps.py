"""``run.steps`` / ``--steps``: K AdamW steps after the step-0 measurement, every weight and buffer
restored bit for bit, and the ``stalled`` rule (probe/judge/stalled.py, docs/verdicts.md)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import probe
from probe.errors import SpecError
from probe.judge.stalled import MIN_STEP_PROGRESS, step_progress, weights_turn
from probe.measurement.steps import restore, snapshot
from probe.spec import parse

VOCAB = 64
REPO = Path(__file__).resolve().parent.parent


class _CharLSTM(nn.Module):
    """A char-RNN: embedding, 2-layer LSTM, vocabulary head (as tutorials write it)."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, 32)
        self.lstm = nn.LSTM(32, 64, num_layers=2, batch_first=True)
        self.head = nn.Linear(64, VOCAB)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.lstm(self.embed(ids))[0])


def _n01(model: nn.Module) -> nn.Module:
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:  # as the zoo's normal1: weights of two or more dimensions
                p.normal_(0.0, 1.0)
    return model


def _ids(batch: int) -> torch.Tensor:
    return torch.randint(0, VOCAB, (batch, 16))


def _bn_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 8 * 8, 10)
    )


def test_the_steps_restore_every_parameter_and_buffer_bit_for_bit() -> None:
    model = _bn_net()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    report = probe.measure(model, (3, 8, 8), steps=5)
    assert report.stats.steps is not None and report.stats.steps.steps == 5
    # the steps moved the weights (else restoring proves nothing), and every one is back exactly
    assert any(r.update_ratio and r.update_ratio > 0 for r in report.stats.steps.rows)
    after = model.state_dict()
    assert before.keys() == after.keys()
    for key, value in before.items():
        assert torch.equal(value, after[key]), key
        assert value.dtype == after[key].dtype
    assert all(p.grad is None for p in model.parameters())


def test_snapshot_and_restore_undo_an_optimizer_step_exactly() -> None:
    model = _bn_net()
    saved = snapshot(model)
    assert all(t.device.type == "cpu" for t in saved.values())
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    model(torch.randn(4, 3, 8, 8)).sum().backward()  # BatchNorm's running statistics move too
    opt.step()
    restore(model, saved)
    for name, t in [*model.named_parameters(), *model.named_buffers()]:
        assert torch.equal(t.detach().cpu(), saved[name]), name


def test_the_step0_statistics_do_not_depend_on_the_steps() -> None:
    without = probe.measure(_bn_net(), (3, 8, 8))
    with_steps = probe.measure(_bn_net(), (3, 8, 8), steps=3)
    assert without.stats.steps is None
    assert [x.std for x in without.layers] == [x.std for x in with_steps.layers]


def test_an_n01_lstm_stalls_and_the_default_does_not() -> None:
    """N(0, 1) LSTM weights saturate the gates: the steps barely move the output (the zoo's
    char_lstm N(0, 1) does not train; step 0 calls it healthy)."""
    torch.manual_seed(0)
    default = probe.measure(_CharLSTM(), _ids, steps=10)
    torch.manual_seed(0)
    n01 = probe.measure(_n01(_CharLSTM()), _ids, steps=10)
    assert "stalled" not in {p.rule for p in default.verdict.problems}
    (problem,) = [p for p in n01.verdict.problems if p.rule == "stalled"]
    assert problem.severity == "error" and problem.value < MIN_STEP_PROGRESS
    # the default's weights turn faster than 1/200 per step (not judged), the N(0, 1) ones do not
    assert step_progress(default.stats) == []
    turn = weights_turn(n01.stats)
    assert turn is not None and turn < math.sqrt(2) * MIN_STEP_PROGRESS


def test_a_layernorm_mlp_with_n01_weights_is_not_stalled_on_the_steps_objective() -> None:
    """Under LayerNorm the N(0, 1) weights' scale divides out; Adam's coherent sign steps still
    fit the steps' target about as fast as at the default init (measured: progress 0.26-0.48 vs
    0.47-0.54 over widths 128-1024): ``stalled`` does not fire, ``weight_scale`` (step 0) does."""

    def mlp(n01: bool) -> nn.Module:
        torch.manual_seed(0)
        m = nn.Sequential(nn.Linear(32, 256), nn.LayerNorm(256), nn.ReLU(), nn.Linear(256, 256), nn.LayerNorm(256))
        m.append(nn.ReLU())
        m.append(nn.Linear(256, 10))
        if n01:
            with torch.no_grad():
                for mod in m:
                    if isinstance(mod, nn.Linear):
                        mod.weight.normal_(0.0, 1.0)
        return m

    for n01 in (False, True):
        report = probe.measure(mlp(n01), (32,), steps=10)
        assert "stalled" not in {p.rule for p in report.verdict.problems}
        assert report.stats.steps is not None and report.stats.steps.progress > 0.2


def test_steps_zero_is_todays_verdict_and_rising_objectives_are_not_stalled() -> None:
    report = probe.measure(_bn_net(), (3, 8, 8), steps=0)
    assert report.stats.steps is None
    # weights 1e-3 times their scale: lr 1e-3 steps overshoot (the objective rises): not judged here
    model = _bn_net()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                p.mul_(1e-3)
    tiny = probe.measure(model, (3, 8, 8), steps=10, lr=1.0)
    assert tiny.stats.steps is not None
    if tiny.stats.steps.progress < 0:
        assert step_progress(tiny.stats) == []


def test_the_spec_key_and_the_modes_that_refuse_steps() -> None:
    spec = parse({"run": {"steps": 3, "lr": 0.01}})
    assert (spec.run.steps, spec.run.lr) == (3, 0.01)
    report = probe.measure(spec)
    assert report.stats.steps is not None and report.stats.steps.lr == 0.01
    assert math.isfinite(report.stats.steps.progress)
    from probe.measurement.layerwise import check_layerwise

    with pytest.raises(SpecError, match="layer-by-layer"):
        check_layerwise(parse({"run": {"steps": 3}}))


def test_probe_run_and_check_with_steps_as_a_user_runs_them(cli: Any, tmp_path: Path) -> None:
    """``probe run --steps K --format json`` reports the steps (in its own process, as a user runs it);
    ``probe check --steps`` gates on ``stalled``; ``--layer-by-layer --steps`` is refused (exit 2) with a
    message naming both (those in this process: a spec of probe's own runs no code of the user's)."""
    spec = tmp_path / "ln.yaml"
    spec.write_text("model: {kind: mlp, depth: 3, width: 32}\ndata: {batches: 2}\n")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    run = ["run", str(spec), "--steps", "4", "--lr", "0.002"]
    argv = [sys.executable, "-m", "probe", *run, "--format", "json"]
    out = subprocess.run(argv, capture_output=True, text=True, cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["spec"]["run"]["steps"] == 4 and doc["steps"]["lr"] == 0.002
    assert len(doc["steps"]["losses"]) == 5 and len(doc["steps"]["layers"]) == len(doc["layers"])
    table = cli(*run)
    assert "after 4 AdamW steps (lr 0.002)" in table.stdout
    # the steps' gate: a threshold no network meets fails the check with the rule's name
    checked = cli("check", str(spec), "--steps", "2", "--gate", "min_step_progress=1")
    assert checked.exit_code == 1 and "stalled" in checked.stdout
    refused = cli(*run, "--layer-by-layer")
    assert refused.exit_code == 2 and "--layer-by-layer" in refused.stderr and "--steps" in refused.stderr


def _judged(progress: float, turn: float, **changes: object) -> list[tuple[str, str]]:
    """The stalled problems and warnings of a 4-row report whose 10 steps reached ``progress``
    with every weight turning ``turn`` per step (rows changed by ``changes``)."""
    from dataclasses import replace

    from probe.judge import rules
    from probe.records import StepRow, StepStats
    from tests.test_rules import _layer, _report

    layers = [replace(_layer(i, weight_size=100), **changes) for i in range(1, 5)]
    rows = tuple(StepRow(x.name, 10 * turn, 0.1) for x in layers)
    report = replace(_report(layers), steps=StepStats(10, 1e-3, progress, 0.1, (1.0, 1.0 - progress), rows, 0.0))
    verdict = rules.evaluate(report)
    return [(p.rule, p.severity) for p in (*verdict.problems, *verdict.warnings) if p.rule == "stalled"]


def test_stalled_needs_a_slow_output_and_slow_weights() -> None:
    # 10 steps closing 1 - sqrt(1 - 0.05) = 2.5% of the distance: 0.0025 per step, under 0.0035
    assert _judged(0.05, 1e-4) == [("stalled", "error")]
    # the same output pace with weights turning 1/100 per step: growing behind a fixed signal
    assert _judged(0.05, 1e-2) == []
    # 0.0051 per step: under twice the threshold, a near miss; 0.016 per step: silent
    assert _judged(0.1, 1e-4) == [("stalled", "warning")]
    assert _judged(0.3, 1e-4) == []
    # an objective that rose: steps too large, not too small
    assert _judged(-3.0, 1e-4) == []
    # a zero-initialized layer whose output is 0 grows from 0: a slow start, at most a warning
    assert _judged(0.05, 1e-4, zero_moving=True, zero_ratio=1.0) == [("stalled", "warning")]


def test_a_torchrun_run_refuses_steps(monkeypatch: pytest.MonkeyPatch) -> None:
    """Under torchrun (a share of the batch per rank) the steps would not be synchronized: refused
    before anything is built."""
    from types import SimpleNamespace

    from probe.measurement import distributed
    from probe.measurement.run import run_probe

    monkeypatch.setattr(distributed, "share_for", lambda *_: SimpleNamespace(device=torch.device("cpu")))
    with pytest.raises(SpecError, match="torchrun"):
        run_probe(parse({"run": {"steps": 2}}))


def test_probe_compare_takes_the_steps_for_every_row(cli: Any) -> None:
    result = cli("compare", "zeros:relu", "he:relu", "--steps", "3", "--set", "model.depth=3", "-f", "json")
    assert result.exit_code in (0, 1), result.output
    runs = json.loads(result.stdout)["runs"]
    assert [len(r["steps"]["losses"]) for r in runs] == [4, 4]  # the start and each of the 3 steps
    assert all(r["spec"]["run"]["steps"] == 3 for r in runs)


def test_the_steps_reach_every_format_of_probe_run(cli: Any) -> None:
    # markdown and HTML are written from the same document as the terminal table: the steps table is in each
    args = ("run", "configs/lab1_he_relu.yaml", "--set", "model.depth=3", "--steps", "2")
    for fmt, marker in (("table", "after steps"), ("markdown", "| after steps |"), ("html", "after steps")):
        result = cli(*args, "-f", fmt)
        assert result.exit_code == 0 and marker in result.stdout, (fmt, result.output)
