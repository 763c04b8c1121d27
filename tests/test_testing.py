"""probe.testing.assert_healthy and the pytest plugin (probe_report fixture, --probe-junit), run the
way a user runs them: the documented example file copied into a fresh project and run by pytest."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from typing import Any

import pytest
import torch
from torch import nn

from probe.errors import SpecError
from probe.testing import assert_healthy, split_options
from tests.conftest import REPO

pytest_plugins = ["pytester"]

EXAMPLE = REPO / "docs" / "examples" / "test_init_health.py"


def tiny_init_mlp() -> nn.Module:
    """Weights 100x too small (tanh: no dead units), biases zero (a bias larger than the signal
    would make every sample alike: the collapse rule): the signal vanishes within two layers."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.Tanh(), nn.Linear(32, 32), nn.Tanh(), nn.Linear(32, 4))
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.mul_(0.01) if name.endswith("weight") else p.zero_()
    return model


def test_assert_healthy_returns_the_report_of_a_healthy_model() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.Tanh(), nn.Linear(32, 4))
    report = assert_healthy(model, torch.randn(64, 16))
    assert report.verdict.healthy


def test_assert_healthy_message_holds_the_verdict_lines() -> None:
    with pytest.raises(AssertionError) as info:
        assert_healthy(tiny_init_mlp(), torch.randn(64, 16))
    message = str(info.value)
    assert message.startswith("probe: Sequential is unhealthy at initialization:")
    # torch's Linear draws U(+-1/sqrt(16)), std 1/sqrt(48), here times 0.01; 16 unit-variance inputs
    # give std 4 * 0.01/sqrt(48) = 0.0058 < 0.01
    assert re.search(r"\n  vanishing at 0: value 0\.00\d+, threshold 0\.01: activation std", message), message
    # no gradient_vanishing line: per sample, ||output|| x ||gradient|| is level through this chain
    # (each layer's output and gradient shrink alike: the weights' gradients are balanced), so the
    # forward rule tells the story (issue 14; it was gradient std / output gradient std)
    assert "gradient_vanishing" not in message


def test_gate_keywords_loosen_the_rules() -> None:
    model, x = tiny_init_mlp(), torch.randn(64, 16)
    report = assert_healthy(model, x, min_std=0.0, min_std_ratio=0.0, min_grad_ratio=0.0, batch_size=64)
    assert report.verdict.healthy and report.spec.gate.min_std == 0.0
    assert assert_healthy(model, x, disable=["vanishing", "gradient_vanishing"]).verdict.healthy
    with pytest.raises(SpecError, match="unknown option 'min_sdt'"):
        assert_healthy(model, x, min_sdt=0.0)


def test_split_options_folds_thresholds_into_the_gate() -> None:
    assert split_options({"min_std": 1, "seed": 2, "gate": {"max_std": 3}}) == {
        "seed": 2,
        "gate": {"max_std": 3, "min_std": 1},
    }


FAILING = """
import torch
from torch import nn


def test_tiny_init(probe_report):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(1e-4)  # std ~6e-5: vanishing by more than 2 decades, an error (0.01x is a warning)
    report = probe_report(model, (16,), batch_size=64)
    assert report.verdict.healthy, "\\n".join(report.verdict_lines())
"""


def test_the_documented_example_and_the_junit_option(pytester: Any) -> None:
    pytester.makepyfile(test_init_health=EXAMPLE.read_text(), test_failing=FAILING)
    junit = pytester.path / "probe.xml"
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", f"--probe-junit={junit}")
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*vanishing at 0: value *, threshold 0.01*",
            "*- probe -*",
            "1 healthy, 1 unhealthy model(s) measured",
            "  test_failing.py::test_tiny_init: vanishing*",
            f"probe: wrote {junit}",
        ]
    )
    root = ET.parse(junit).getroot()
    cases = {c.get("name"): c for c in root.iter("testcase")}
    # assert_healthy calls measure directly: only the fixture's reports are recorded
    assert set(cases) == {"test_init_health.py::test_model_with_the_fixture", "test_failing.py::test_tiny_init"}
    assert cases["test_init_health.py::test_model_with_the_fixture"].find("failure") is None
    failure = cases["test_failing.py::test_tiny_init"].find("failure")
    assert failure is not None and "vanishing at 0" in (failure.text or "")
    assert root.get("tests") == "2" and root.get("failures") == "1"


def test_the_plugin_is_registered_by_the_entry_point(pytester: Any) -> None:
    result = pytester.runpytest_subprocess("--help")
    result.stdout.fnmatch_lines(["*--probe-junit=PATH*"])


BROKEN_TEST = """
import torch
from torch import nn
from probe.testing import assert_healthy

def test_my_model_starts_healthy():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 4))
    with torch.no_grad():
        for m in model:
            if isinstance(m, nn.Linear):
                m.weight.mul_(1e-3)
                m.bias.zero_()
    assert_healthy(model, torch.randn(64, 16))
"""


def test_a_failing_test_shows_the_verdict_and_the_advice_not_probes_frames(pytester: Any) -> None:
    """pytest's report of a failing ``assert_healthy``: the user's line, then the model, the broken
    rules with their values and the advice; no frame inside probe and no tensor dump."""
    pytester.makepyfile(test_broken=BROKEN_TEST)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    out = result.stdout.str()
    assert "probe: Sequential is unhealthy at initialization:" in out
    assert re.search(r"vanishing at \S+: value [\d.e-]+, threshold 0\.01", out), out
    assert "try: " in out
    assert "probe/testing.py" not in out and "tensor(" not in out
