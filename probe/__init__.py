"""probe: a signal-probe diagnostic for neural-network initialization in PyTorch.

The Python API mirrors the CLI (nothing here imports torch until a probe runs)::

    import probe
    report = probe.measure(model, torch.randn(64, 3, 32, 32))  # any nn.Module you hold
    report.verdict.healthy, report.verdict.problems, report.to_json()

    probe.testing.assert_healthy(model, inputs)  # in a test: AssertionError with the verdict lines

    spec = probe.load("configs/lab1_he_relu.yaml")
    report = probe.run_probe(spec)
    verdict = probe.evaluate(report)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = [
    "ProbeError",
    "Report",
    "__version__",
    "check",
    "compare",
    "evaluate",
    "load",
    "loads",
    "measure",
    "parse",
    "run_layerwise",
    "run_probe",
    "testing",
]

if TYPE_CHECKING:
    from probe import testing
    from probe.api import Report
    from probe.api import measure as measure
    from probe.errors import ProbeError
    from probe.experiments.batch import check, compare
    from probe.judge.rules import evaluate
    from probe.measurement.layerwise import run_layerwise
    from probe.measurement.run import run_probe
    from probe.spec import load, loads, parse

_LAZY = {
    "Report": "probe.api",
    "measure": "probe.api",
    "load": "probe.spec",
    "loads": "probe.spec",
    "parse": "probe.spec",
    "run_probe": "probe.measurement.run",
    "run_layerwise": "probe.measurement.layerwise",
    "evaluate": "probe.judge.rules",
    "compare": "probe.experiments.batch",
    "check": "probe.experiments.batch",
    "ProbeError": "probe.errors",
}


def __getattr__(name: str) -> Any:
    import importlib

    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    if name == "testing":
        return importlib.import_module("probe.testing")
    raise AttributeError(f"module 'probe' has no attribute {name!r}")
