"""The benchmark harness still runs against the current code (a smoke test: no timing asserted)."""

from __future__ import annotations

import sys

import torch

from tests.conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))

import common


def test_bare_and_probed_passes_run_on_a_tiny_network() -> None:
    spec = common.mlp_spec(depth=2, width=8, batch=4)
    built = common.built_model(spec)
    common.bare_pass(built, spec, torch.device("cpu"))
    layers = common.probed_pass(built, spec, torch.device("cpu"))
    assert [x.name for x in layers] == ["layer1", "layer2"]
    _ratio, bare_s, probed_s = common.interleaved_ratio(lambda: None, lambda: None, repeats=2)
    assert bare_s >= 0 and probed_s >= 0
