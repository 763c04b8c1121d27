"""Test helpers: ``assert_healthy(model, inputs, **gate)`` fails a test with the verdict lines.

::

    from probe.testing import assert_healthy

    def test_my_model_starts_healthy():
        assert_healthy(MyModel(), torch.randn(32, 3, 32, 32), min_std=1e-3)

The pytest plugin (``probe.pytest_plugin``, registered by installing probe) adds the
``probe_report`` fixture and the ``--probe-junit PATH`` option. No pytest import here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from probe.spec import GATE_PARAMS

if TYPE_CHECKING:
    from probe.api import Report

__all__ = ["assert_healthy", "failure_message", "split_options"]

GATE_KEYS = (*GATE_PARAMS, "disable")


def split_options(options: dict[str, Any]) -> dict[str, Any]:
    """Gate thresholds given as keywords (``min_std=1e-3``, ``disable=[...]``) folded into
    ``gate={...}``; every other keyword is a ``measure`` option."""
    gate = dict(options.pop("gate", None) or {})
    for key in [k for k in options if k in GATE_KEYS]:
        gate[key] = options.pop(key)
    return {**options, "gate": gate} if gate else options


def assert_healthy(model: Any, inputs: Any = None, **gate: Any) -> Report:
    """Probe ``model`` on ``inputs`` and raise ``AssertionError`` unless it is healthy.

    Keywords are gate thresholds (``min_std=1e-3``, ``max_dead_units=0.5``,
    ``disable=["saturation"]``) or ``probe.measure`` options (``batch_size``, ``seed``, ...).
    The message holds one line per broken rule: rule, layer, value, threshold and why.
    Returns the report when healthy.
    """
    __tracebackhide__ = True  # pytest shows the caller's line and this message, not probe's frames
    from probe.api import measure

    report = measure(model, inputs, **split_options(dict(gate)))
    if not report.verdict.healthy:
        raise AssertionError(failure_message(report))
    return report


def failure_message(report: Report) -> str:
    """What a failing test says: the model, each broken rule with its layer, value and threshold,
    and the advice, in a few short lines (no tensors)."""
    lines = [f"probe: {report.spec.name} is unhealthy at initialization:"]
    lines += [f"  {line}" for line in report.verdict_lines()]
    if report.advice is not None and (report.advice.mismatch or report.advice.suggestion):
        lines += [f"  {line}" for line in report.advice.lines()]
    return "\n".join(lines)
