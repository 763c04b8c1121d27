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

import sys
from types import ModuleType
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
    from probe.measure.layerwise import run_layerwise
    from probe.measure.run import run_probe
    from probe.spec import load, loads, parse

_LAZY = {
    "Report": "probe.api",
    "load": "probe.spec",
    "loads": "probe.spec",
    "parse": "probe.spec",
    "run_probe": "probe.measure.run",
    "run_layerwise": "probe.measure.layerwise",
    "evaluate": "probe.judge.rules",
    "compare": "probe.experiments.batch",
    "check": "probe.experiments.batch",
    "ProbeError": "probe.errors",
}


def __getattr__(name: str) -> Any:
    import importlib

    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    if name in ("testing", "measure"):
        return importlib.import_module(f"probe.{name}")
    raise AttributeError(f"module 'probe' has no attribute {name!r}")


# ``probe.measure`` names both the pipeline stage (the package probe/measure/, which Python sets
# as this attribute when any of its modules is imported) and the function users call,
# ``probe.measure(model, inputs)``. The stage package is made callable, calling ``probe.api.measure``,
# so both meanings hold whatever was imported first.


class _MeasureStage(ModuleType):
    def __call__(self, model: Any, inputs: Any = None, **options: Any) -> Any:
        from probe.api import measure

        return measure(model, inputs, **options)


class _Probe(ModuleType):
    def __setattr__(self, name: str, value: Any) -> None:
        if name == "measure" and type(value) is ModuleType:
            value.__class__ = _MeasureStage
        super().__setattr__(name, value)


_MeasureStage.__call__.__doc__ = "``probe.api.measure(model, inputs, **options)``: probe a model, return its Report."
sys.modules[__name__].__class__ = _Probe
