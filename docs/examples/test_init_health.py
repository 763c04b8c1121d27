"""Copy this file into your tests/ folder: probe checks that a model starts from a healthy init.

Run it with ``pytest``; ``pytest --probe-junit probe.xml`` also writes every probed model as a
JUnit test case (for CI services that show test reports).
"""

import torch
from torch import nn

from probe.testing import assert_healthy


def make_model() -> nn.Module:
    """Replace with your own model."""
    return nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))


def test_model_starts_healthy() -> None:
    torch.manual_seed(0)
    # fails with one line per broken rule: rule, layer, value, threshold and why
    assert_healthy(make_model(), torch.randn(256, 32))


def test_model_with_the_fixture(probe_report) -> None:  # the fixture of probe's pytest plugin
    torch.manual_seed(0)
    # inputs as one sample's shape; gate thresholds and measure options as keywords
    report = probe_report(make_model(), (32,), batch_size=256, max_dead_units=0.5)
    assert report.verdict.healthy, "\n".join(report.verdict_lines())
    assert all(layer.nonfinite == 0 for layer in report.layers)
