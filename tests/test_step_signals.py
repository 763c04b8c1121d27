"""The steps' other measurements (probe/measurement/step_signals.py): Adam's update RMS per tensor,
the output's log-partition and the best constant prediction's loss, each against its math."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import probe
from probe.measurement.step_signals import adam_update_rms, constant_loss, log_partition

REPO = Path(__file__).resolve().parent.parent


def _adam_step(p: torch.Tensor, opt: torch.optim.Optimizer, grad: torch.Tensor) -> float:
    opt.zero_grad(set_to_none=True)
    p.grad = grad.clone()
    opt.step()
    return adam_update_rms(opt, [p])[id(p)]


def test_adams_first_update_rms_is_one_and_a_gradient_c_times_larger_reads_c_over_its_average() -> None:
    """Step 1: v_hat = g^2, so g^2 / v_hat = 1 per element (eps = 1e-8 against |g| >= 0.1: within
    2 eps / |g| = 2e-7). A constant gradient keeps v_hat = g^2 (1 again); a gradient c times larger
    at step 2 reads c / sqrt((beta2 + c^2) / (1 + beta2)), bias correction worked through."""
    torch.manual_seed(0)
    p = nn.Parameter(torch.randn(64, 32))
    g = torch.rand(64, 32) + 0.1  # every element nonzero, |g| >= 0.1
    beta2 = 0.999
    opt = torch.optim.AdamW([p], lr=1e-3, betas=(0.9, beta2))
    assert _adam_step(p, opt, g) == pytest.approx(1.0, abs=2e-7)
    assert _adam_step(p, opt, g) == pytest.approx(1.0, abs=2e-7)  # v_hat of a constant g is g^2
    opt = torch.optim.AdamW([p], lr=1e-3, betas=(0.9, beta2))
    _adam_step(p, opt, g)
    c = 10.0
    expected = c / math.sqrt((beta2 + c**2) / (1 + beta2))  # 1.4068: far from 10, beta2 follows slowly
    assert _adam_step(p, opt, c * g) == pytest.approx(expected, rel=1e-5)


def test_the_largest_update_rms_t_steps_allow_is_sqrt_of_their_bias_corrected_count() -> None:
    """A gradient 0 for t - 1 steps, then g: v_hat = (1 - beta2) g^2 / (1 - beta2^t), so the RMS is
    sqrt((1 - beta2^t) / (1 - beta2)), at most sqrt(t): within K steps no tensor reads above sqrt(K)
    (3.16 at K = 10), far from the sqrt(1 / (1 - beta2)) = 31.6 a long run can reach."""
    p = nn.Parameter(torch.ones(8))
    beta2, t = 0.999, 10
    opt = torch.optim.Adam([p], lr=1e-3, betas=(0.9, beta2))
    for _ in range(t - 1):
        _adam_step(p, opt, torch.zeros(8))
    rms = _adam_step(p, opt, torch.full((8,), 0.5))
    assert rms == pytest.approx(math.sqrt((1 - beta2**t) / (1 - beta2)), rel=1e-6)
    assert rms <= math.sqrt(t)


def test_a_zero_gradient_element_reads_zero_and_an_unstepped_tensor_is_left_out() -> None:
    p, q = nn.Parameter(torch.ones(4)), nn.Parameter(torch.ones(4))
    opt = torch.optim.Adam([p, q], lr=1e-3)
    p.grad = torch.tensor([1.0, 1.0, 0.0, 0.0])  # half the elements: mean of g^2 / v_hat is 1/2
    opt.step()
    rms = adam_update_rms(opt, [p, q])
    assert rms[id(p)] == pytest.approx(math.sqrt(0.5), rel=1e-6) and id(q) not in rms


def test_log_partition_and_the_constant_predictions_loss() -> None:
    # zeros over n classes: logsumexp = log n at every position; adding a constant a shifts it by a
    assert log_partition([torch.zeros(3, 5, 7)]) == pytest.approx(math.log(7))
    assert log_partition([torch.full((4, 10), 2.0)]) == pytest.approx(2.0 + math.log(10))
    assert log_partition([torch.zeros(4, 1)]) is None  # one class: no partition to read
    # the batch mean is the best constant: the loss left is the variance over the batch
    t = torch.tensor([[1.0, 0.0], [3.0, 4.0]])  # per column: mean 2, 2; squared deviations 1, 1, 4, 4
    assert constant_loss([t]) == pytest.approx(2.5)
    assert constant_loss([torch.ones(1, 3)]) is None


def test_the_steps_report_the_signals_per_step_and_per_row() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.Tanh(), nn.Linear(32, 10))
    steps = probe.measure(model, torch.randn(64, 16), steps=4).stats.steps
    assert steps is not None
    assert len(steps.log_z) == len(steps.losses) == 5 and len(steps.adam_rms) == 4
    # tanh: no gradient element is exactly 0, so the first step reads 1 at every weight
    assert steps.adam_rms[0] == pytest.approx(1.0, abs=1e-4)
    rows = {r.name: r.adam_rms for r in steps.rows}
    assert rows["1"] is None and rows["0"] is not None and rows["2"] is not None
    assert all(v is not None and v >= steps.adam_rms[0] - 1e-4 for v in (rows["0"], rows["2"]))  # max over steps
    # the target is independent of the output and as large: the start is about twice the constant's
    assert steps.baseline is not None and 1.5 < steps.losses[0] / steps.baseline < 2.5


def test_probe_run_writes_the_signals_in_json(tmp_path: Path) -> None:
    spec = tmp_path / "mlp.yaml"
    spec.write_text("model: {kind: mlp, depth: 3, width: 32}\ndata: {batches: 1}\n")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "probe", "run", str(spec), "--steps", "3", "--format", "json"]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stderr
    steps = json.loads(out.stdout)["steps"]
    assert len(steps["log_z"]) == 4 and len(steps["adam_rms"]) == 3 and steps["baseline"] > 0
    assert any(row["adam_rms"] is not None for row in steps["layers"])
    table = subprocess.run(cmd[:-2], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert (
        table.returncode == 0 and "Adam's update RMS up to" in table.stdout and "(measured, not judged)" in table.stdout
    )


class _Attend(nn.Module):
    """Causal scaled dot-product attention of fixed queries and keys (no weights)."""

    def __init__(self, q: torch.Tensor, k: torch.Tensor) -> None:
        super().__init__()
        self.q, self.k = q, k

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        return nn.functional.scaled_dot_product_attention(self.q, self.k, v, is_causal=True)


def test_the_attention_logit_max_excludes_masked_keys() -> None:
    """Logits q_i . k_j / sqrt(d) with key j <= query i (causal): the largest allowed one, not the
    larger one above the diagonal that the mask removes."""
    from probe.measurement.step_signals import LogitMax

    q = torch.tensor([[1.0, 0.0], [0.0, 2.0]]).view(1, 1, 2, 2)
    k = torch.tensor([[1.0, 1.0], [0.0, 30.0]]).view(1, 1, 2, 2)
    model = _Attend(q, k)
    recorder = LogitMax(model)
    with recorder.watching():
        model(torch.randn(1, 1, 2, 2))
    # allowed: (0,0) 1/sqrt2, (1,0) 2/sqrt2, (1,1) 60/sqrt2; (0,1) = 0 is masked (and smaller here)
    assert recorder.take() == pytest.approx(60 / math.sqrt(2))
    k = torch.tensor([[1.0, 1.0], [50.0, 0.0]]).view(1, 1, 2, 2)  # (0,1) = 50/sqrt2 is masked
    model.k = k
    with recorder.watching():
        model(torch.randn(1, 1, 2, 2))
    assert recorder.take() == pytest.approx(2 / math.sqrt(2))
    assert recorder.take() is None  # taken: starts over


def test_a_transformer_reports_its_attention_logits_over_the_steps_and_an_mlp_none() -> None:
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(32, 4, 64, batch_first=True)
    steps = probe.measure(nn.TransformerEncoder(layer, 1), torch.randn(4, 8, 32), steps=3).stats.steps
    assert steps is not None and len(steps.attention_max) == 4
    assert all(v is not None and math.isfinite(v) for v in steps.attention_max)
    mlp = probe.measure(nn.Sequential(nn.Linear(4, 8)), torch.randn(8, 4), steps=2).stats.steps
    assert mlp is not None and mlp.attention_max == ()
