"""Terminal pictures: sparklines and bars of values on a log scale (plain strings, no rich).

Vanishing or exploding signals span orders of magnitude, so scales are logarithmic: one block
step is a constant factor. A missing or nan value is drawn as a
space (sparkline) or an empty bar; 0 sits on the floor and inf at the top.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

BLOCKS = "▁▂▃▄▅▆▇█"
BAR = "█"
BAR_WIDTH = 12
MAX_POINTS = 24
# the fixed log scale of activation/gradient stds: one block is about 1.3 decades, so a healthy
# network (std near 1) draws a flat line high up and a vanishing one falls to the floor
STD_LO = 1e-6
STD_HI = 1e3


def resample(values: Sequence[float | None], points: int = MAX_POINTS) -> list[float | None]:
    """At most ``points`` values, picked evenly (first and last kept) so a long curve fits a cell."""
    n = len(values)
    if n <= points:
        return list(values)
    return [values[round(i * (n - 1) / (points - 1))] for i in range(points)]


def _logs(values: Sequence[float | None]) -> list[float | None]:
    """log10 of each value; 0 and negatives -> -inf (the floor), nan/None -> None, inf -> inf."""
    out: list[float | None] = []
    for v in values:
        if v is None or math.isnan(v):
            out.append(None)
        elif v <= 0:
            out.append(-math.inf)
        else:
            out.append(math.log10(v))
    return out


def sparkline(
    values: Sequence[float | None], log: bool = True, lo: float | None = None, hi: float | None = None
) -> str:
    """One block per value (at most ``MAX_POINTS``, resampled), heights scaled between the
    smallest and largest value (log10 if ``log``).

    ``lo``/``hi`` (in the values' units) fix the scale, so several lines can share it.
    """
    values = resample(values)
    scaled = _logs(values) if log else [v if v is not None and math.isfinite(v) else None for v in values]
    present = [v for v in scaled if v is not None and math.isfinite(v)]
    present = present or [0.0]  # only zeros/inf/nan: they draw at the floor, the top, or blank
    low = (math.log10(lo) if log else lo) if lo is not None and (not log or lo > 0) else min(present)
    high = (math.log10(hi) if log else hi) if hi is not None and (not log or hi > 0) else max(present)
    span = high - low
    out = []
    for v in scaled:
        if v is None:
            out.append(" ")
            continue
        out.append(BLOCKS[round(_fraction(v, low, span) * (len(BLOCKS) - 1))])
    return "".join(out)


def _fraction(v: float, low: float, span: float) -> float:
    """Where ``v`` sits between ``low`` and ``low + span``, clamped to [0, 1]; +-inf at the ends."""
    if math.isinf(v):
        return 0.0 if v < 0 else 1.0
    if span <= 0:
        return 0.5
    return min(1.0, max(0.0, (v - low) / span))


def std_sparkline(values: Sequence[float | None]) -> str:
    """Per-layer stds on the fixed log scale ``STD_LO``..``STD_HI``."""
    return sparkline(values, log=True, lo=STD_LO, hi=STD_HI)


def bar(value: float | None, scale: Sequence[float | None], width: int = BAR_WIDTH) -> str:
    """A bar whose length is ``value``'s position on the log scale spanned by ``scale``.

    The smallest value of ``scale`` gets one block, the largest ``width`` blocks.
    """
    logs = [v for v in _logs(scale) if v is not None and math.isfinite(v)]
    (v,) = _logs([value])
    if v is None or not logs:
        return ""
    v = min(max(v, min(logs)), max(logs))
    low, high = min(logs), max(logs)
    frac = 1.0 if high <= low else (v - low) / (high - low)
    return BAR * max(1, round(1 + frac * (width - 1)))


def std_bar(value: float | None, width: int = BAR_WIDTH) -> str:
    """A std as a bar on the fixed log scale ``STD_LO``..``STD_HI`` (one block at or below ``STD_LO``)."""
    return bar(value, [STD_LO, STD_HI], width)
