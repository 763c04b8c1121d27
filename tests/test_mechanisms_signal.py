"""What varies between samples (``sample_std``): the part of a row's output that carries the input.

A bias, or a position's mean, is the same for every sample and carries nothing; when the part that
varies fades with depth under biases that do not, the std of the whole output still looks fine.
``vanishing`` reads both (docs/verdicts.md, "What varies between samples")."""

from __future__ import annotations

import json
import math

import torch
from torch import nn
from typer.testing import CliRunner

import probe
from probe.cli import app
from probe.measurement.correlation import SAMPLES

SAMPLE_CHECK = "std of what varies between samples"


def test_sample_std_reads_the_spread_across_samples_without_the_biases() -> None:
    # y = s x + b with x ~ N(0, 1): each value varies across samples with std s, whatever b is;
    # the plain std also holds the biases' spread across units. The estimate pools (n - 1) D
    # degrees of freedom per batch (n = SAMPLES samples, D = 64 values), so its relative standard
    # error is sqrt(1 / (2 (n - 1) D)) per batch, under 1%: 5% is five of them
    s, width = 0.3, 64
    layer = nn.Linear(width, width)
    with torch.no_grad():
        layer.weight.copy_(torch.eye(width) * s)
        layer.bias.copy_(torch.linspace(-2.0, 2.0, width))
    report = probe.measure(layer, torch.randn(SAMPLES, width), seed=0)
    row = report.stats.layers[-1]
    assert row.sample_std is not None and math.isclose(row.sample_std, s, rel_tol=0.05)
    assert row.std > 3 * s  # the biases' spread is in the plain std


def _vgg(*args: str) -> dict:
    result = CliRunner().invoke(
        app,
        ["run", "--model", "tests.models_for_tests:plain_vgg", *args, "--input-shape", "3,32,32", "-f", "json"],
        env={"COLUMNS": "200"},
    )
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_a_newcomers_vgg16_at_pytorchs_default_init_fails_vanishing_and_its_he_twin_does_not() -> None:
    # PyTorch's default conv init passes 1/6 of the second moment per layer; the default biases
    # (about 1/sqrt(3 fan_in)) do not fade, so the plain std stays near 0.01 while what varies
    # between samples falls to 1e-6 of it at the classifier: the head reads the same features for
    # every input. Trained (AdamW, the zoo's image task, 150 steps): -0.02 nats; kaiming normal
    # (fan-out) 0.36, with BatchNorm 0.86
    default = _vgg()
    found = [p for p in default["verdict"]["problems"] if p["rule"] == "vanishing" and SAMPLE_CHECK in p["message"]]
    assert found and found[0]["severity"] == "error", default["verdict"]
    for args in (["--model-arg", "init=he"], ["--model-arg", "bn=true"]):
        twin = _vgg(*args)
        assert twin["verdict"]["healthy"], (args, twin["verdict"])


def test_weights_adam_outgrows_at_its_first_step_are_not_judged_on_it() -> None:
    # weights x 1e-3 (rms 2e-5, under lr 1e-3) over default biases: what varies between samples is
    # tiny, but Adam's first step draws every weight anew at about lr per element (transformers'
    # ViT so built trains, 0.55 of its default's gain); the plain std's rules still judge it
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    with torch.no_grad():
        for m in model:
            if isinstance(m, nn.Linear):
                m.weight.mul_(1e-3)
    report = probe.measure(model, torch.randn(64, 32), seed=0)
    said = [p for p in (*report.verdict.problems, *report.verdict.warnings) if SAMPLE_CHECK in p.message]
    assert not said, report.verdict
    assert report.stats.layers[-1].sample_std < 1e-4 * report.stats.layers[-1].std


def test_the_advice_for_a_fading_user_model_at_its_own_init_is_a_variance_preserving_one() -> None:
    # the advice names the change, and the change makes the verdict healthy
    runner, args = CliRunner(), ["run", "--model", "tests.models_for_tests:plain_vgg", "--input-shape", "3,32,32"]
    said = runner.invoke(app, args, env={"COLUMNS": "200"})
    assert said.exit_code == 0 and "try: the model's own init shrinks the signal with depth" in said.output
    assert "--set init.weight=he_normal" in said.output
    fixed = runner.invoke(app, [*args, "--set", "init.weight=he_normal", "-f", "json"], env={"COLUMNS": "200"})
    assert fixed.exit_code == 0 and json.loads(fixed.stdout)["verdict"]["healthy"]
