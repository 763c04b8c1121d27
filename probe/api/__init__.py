"""The Python face of probe: ``measure(model, inputs)`` on the model you already have, and the one
pipeline per command that the command line is a thin layer over.

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

The commands' pipelines: ``probing.py`` (run, check, compare), ``studies.py`` (sweep, train, fix,
inspect, advise, depth, schema), ``specs.py`` (a spec from a file and command-line overrides),
``process.py`` (torchrun's ranks, threads). ``probe.cli`` imports this package and ``probe.render`` only.
"""

from probe.api.objects import OPTIONS, as_found, measure
from probe.api.pipeline import check_mode, judge, probe_spec, return_large_allocations_to_the_os
from probe.api.probing import RunOptions, built_once, check, compare, entry_specs, guard_memory, memory_check, run
from probe.api.process import rank, threads_fixed, world_size, writes_output
from probe.api.report import Image, Report, problem_line
from probe.api.specs import base_spec, model_overrides, overrides_from, read_spec, refuse_gate_changes, spec_for
from probe.api.studies import (
    advise,
    advised,
    depth,
    fix,
    inspect,
    spec_schema,
    summary,
    sweep,
    sweep_grid,
    sweep_passes,
    train,
    train_base,
    train_network,
    train_settings,
    verdict_of,
    weights_bytes,
)

__all__ = [
    "OPTIONS",
    "Image",
    "Report",
    "RunOptions",
    "advise",
    "advised",
    "as_found",
    "base_spec",
    "built_once",
    "check",
    "check_mode",
    "compare",
    "depth",
    "entry_specs",
    "fix",
    "guard_memory",
    "inspect",
    "judge",
    "measure",
    "memory_check",
    "model_overrides",
    "overrides_from",
    "probe_spec",
    "problem_line",
    "rank",
    "read_spec",
    "refuse_gate_changes",
    "return_large_allocations_to_the_os",
    "run",
    "spec_for",
    "spec_schema",
    "summary",
    "sweep",
    "sweep_grid",
    "sweep_passes",
    "threads_fixed",
    "train",
    "train_base",
    "train_network",
    "train_settings",
    "verdict_of",
    "weights_bytes",
    "world_size",
    "writes_output",
]
