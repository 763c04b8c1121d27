"""The ``headroom`` rule (``run.precision``): what a cast of each row to a low-precision format
would lose (docs/verdicts.md, "headroom"; the measurement is probe/measurement/precision.py).

Mechanisms:

- overflow (at init, and with ``run.steps`` after the steps as well): a value at or above the format's overflow point casts to inf (FP16, BF16, FP8 E5M2;
  FP8 E4M3 has no inf: torch's cast saturates it to 448, hardware conversions give NaN). An inf
  activation gives inf - inf = NaN in the next normalization or softmax and in the loss, and NaN
  gradients in every weight behind it: training stops at the first step. An error. The value
  judged is the row's amax as the cast leaves it over the format's largest value: above 1
  exactly when a value overflows (values between the largest value and the overflow point round
  down to it: 1).
- underflow: a nonzero value at or below half the smallest subnormal casts to 0. A value flushed
  to 0 passes no signal forward and, entering a linear map, no gradient to the weights it
  multiplies (dW = x g^T). When more than half a row's nonzero values flush (``max_underflow``,
  0.5: its median value is not representable), most of its units' values are silent; the larger
  half still carries most of the row's energy (for Gaussian values 93%: the flushed ones, below
  0.674 sigma, hold P(|Z| < c) - 2 c phi(c) = 7% of it), so training goes on, with less: a warning.

Judged: each row's activations and its weight, as autocast or ``.half()`` casts them, unscaled.
Gradients are shown, not judged: the probe's gradients are those of ``sum(output * r)`` with a
unit-variance ``r`` per output value, while a mean-reduced loss's are ``samples x positions``
times smaller and mixed-precision training rescales the loss (GradScaler) to fit the format: their
absolute scale is the probe's choice, not the network's (docs/precision.md).
"""

from __future__ import annotations

import math

from probe.judge.checks import Check, Row, Rule
from probe.records import HeadroomRow, LayerStats, Range, Stats
from probe.spec.precision import Format, precision_format


def cast_ratio(r: Range | float | None, fmt: Format) -> float | None:
    """``amax / max`` as the cast leaves it: at most 1 where every value rounds to a finite one
    (values in ``(max, overflow)`` round to ``max``), the raw ratio (above 1) where one overflows;
    None where not measured or not a number (the nonfinite rule's)."""
    amax = r.amax if isinstance(r, Range) else r
    if amax is None or math.isnan(amax):
        return None
    ratio = amax / fmt.max
    return ratio if amax >= fmt.overflow else min(ratio, 1.0)


def _judged(report: Stats) -> list[tuple[LayerStats, HeadroomRow]]:
    """Each measured row with its layer; a row returning another's output (``output_of``) is judged there."""
    if report.headroom is None:
        return []
    rows = {x.name: x for x in report.layers if not x.output_of}
    return [(rows[h.name], h) for h in report.headroom.rows if h.name in rows]


def _format(report: Stats) -> Format | None:
    return precision_format(report.headroom.format) if report.headroom is not None else None


def overflow(report: Stats) -> list[tuple[Row, float | None]]:
    """Per row, the larger of its activations' and its weight's ``cast_ratio``."""
    fmt = _format(report)
    if fmt is None:
        return []
    out: list[tuple[Row, float | None]] = []
    for layer, h in _judged(report):
        ratios = [v for v in (cast_ratio(h.activation, fmt), cast_ratio(h.weight, fmt)) if v is not None]
        out.append((layer, max(ratios) if ratios else None))
    return out


def overflow_after_steps(report: Stats) -> list[tuple[Row, float | None]]:
    """``overflow`` after the ``run.steps`` optimizer steps: each row's output and weight as the
    last step left them (probe/measurement/steps.py); nothing without steps."""
    fmt = _format(report)
    if fmt is None or report.steps is None:
        return []
    after = {r.name: r for r in report.steps.rows}
    out: list[tuple[Row, float | None]] = []
    for layer, _ in _judged(report):
        r = after.get(layer.name)
        ratios = [] if r is None else [cast_ratio(r.amax, fmt), cast_ratio(r.weight_amax, fmt)]
        known = [v for v in ratios if v is not None]
        out.append((layer, max(known) if known else None))
    return out


def underflow(report: Stats) -> list[tuple[Row, float | None]]:
    """Per row, the larger of its activations' and its weight's share of nonzero values flushed to 0."""
    out: list[tuple[Row, float | None]] = []
    for layer, h in _judged(report):
        shares = [r.underflow for r in (h.activation, h.weight) if r is not None and r.underflow is not None]
        out.append((layer, max(shares) if shares else None))
    return out


HEADROOM = Rule(
    "headroom",
    "a cast to run.precision's format overflows (inf) or flushes most values to 0",
    (
        Check("max_amax_ratio", "amax / the format's largest value (activations, weights)", overflow, below=False),
        Check("max_amax_ratio", "amax / the format's largest value after the steps", overflow_after_steps, False),
        Check(
            "max_underflow",
            "share of nonzero values the cast flushes to 0 (activations, weights)",
            underflow,
            below=False,
            fraction=True,
            warning_only=True,
        ),
    ),
)
