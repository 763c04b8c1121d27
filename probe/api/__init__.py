"""The Python face of probe: ``measure(model, inputs)`` on the model you already have.

::

    import probe, torch
    report = probe.measure(model, torch.randn(64, 3, 32, 32))
    report.verdict.healthy          # False when a health rule breaks
    report.verdict.problems         # (rule, layer, value, threshold, message) each
    report.to_json()                # the probe.report/1 document ``probe run --format json`` writes
    report                          # in a notebook: the colored table; print(report) in a terminal

``measure`` (``api/objects.py``) reuses the CLI's user-model path: one discovery pass finds the rows to watch
(``model/user_model.py``) and the run's batch loop (``measurement/run.py``) measures them. The caller's
model is left as found: same parameters and buffers, same gradients, the same train/eval flag on
every submodule, no hooks, the global random state (torch, Python, numpy) restored.
"""

from probe.api.objects import OPTIONS, as_found, measure
from probe.api.pipeline import check_mode, judge, probe_spec, return_large_allocations_to_the_os
from probe.api.report import Image, Report, problem_line

__all__ = [
    "OPTIONS",
    "Image",
    "Report",
    "as_found",
    "check_mode",
    "judge",
    "measure",
    "probe_spec",
    "problem_line",
    "return_large_allocations_to_the_os",
]
