"""How a number is written: ``fmt`` (4 significant digits) and ``fmt_fraction``/``fmt_cosine`` for
table cells, ``clean`` for JSON (a non-finite float becomes ``None``). Never prints.
"""

from __future__ import annotations

import math
from typing import Any


def clean(value: Any) -> Any:
    """JSON-safe value: non-finite floats become ``None`` (strict JSON has no nan/inf)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def fmt(value: float | int | None) -> str:
    """4 significant digits; '-' for a value that does not apply."""
    if value is None:
        return "-"
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if value == 0:
        return "0"
    return f"{value:.4g}"


def fmt_fraction(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def fmt_cosine(value: float | None) -> str:
    """A cosine near 1 needs its third digit (0.98 is the collapse threshold)."""
    return "-" if value is None else f"{value:.3f}"
