"""probe: a signal-probe diagnostic for neural-network initialization in PyTorch.

The Python API mirrors the CLI (nothing here imports torch until a probe runs)::

    import probe
    spec = probe.load("configs/lab1_he_relu.yaml")
    report = probe.run_probe(spec)
    verdict = probe.evaluate(report)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = [
    "ProbeError",
    "__version__",
    "check",
    "compare",
    "evaluate",
    "load",
    "loads",
    "parse",
    "run_layerwise",
    "run_probe",
]

if TYPE_CHECKING:
    from probe.errors import ProbeError
    from probe.experiments.batch import check, compare
    from probe.judge.rules import evaluate
    from probe.measure.layerwise import run_layerwise
    from probe.measure.run import run_probe
    from probe.spec import load, loads, parse

_LAZY = {
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
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'probe' has no attribute {name!r}")
