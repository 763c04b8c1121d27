"""Low-precision headroom (``Stats.headroom``) as data: the JSON ``precision`` object (docs/json.md)
and the CSV's per-layer columns. The run view's table is ``headroom_view``."""

from __future__ import annotations

import math
from typing import Any

from probe.records import HeadroomStats, Range, StepStats
from probe.spec.precision import Format, precision_format

KINDS = (("activation", "act"), ("gradient", "grad"), ("weight", "W"))


def clean(value: Any) -> Any:
    """JSON-safe: a non-finite float becomes None (as ``numbers.clean``)."""
    return None if isinstance(value, float) and not math.isfinite(value) else value


def headroom_format(headroom: HeadroomStats) -> Format:
    fmt_ = precision_format(headroom.format)
    assert fmt_ is not None, headroom.format
    return fmt_


def range_dict(r: Range | None, f: Format) -> dict[str, Any] | None:
    if r is None:
        return None
    return {
        "amax": clean(r.amax),
        "amax_ratio": clean(r.amax / f.max),
        "underflow": clean(r.underflow),
        "subnormal": clean(r.subnormal_share),
        "values": r.values,
        "nonzero": r.nonzero,
        "flushed": r.flushed,
    }


def headroom_dict(headroom: HeadroomStats, steps: StepStats | None = None) -> dict[str, Any]:
    """The JSON ``precision`` object (docs/json.md); with ``steps``, each row's ``after_steps``."""
    f = headroom_format(headroom)
    after = {r.name: r for r in steps.rows} if steps is not None else {}

    def after_steps(name: str) -> dict[str, Any]:
        r = after.get(name)
        if r is None:
            return {}
        ratios = {"amax_ratio": r.amax, "weight_amax_ratio": r.weight_amax}
        return {"after_steps": {k: None if v is None else clean(v / f.max) for k, v in ratios.items()}}

    return {
        "format": f.name,
        "max": f.max,
        "overflow": f.overflow,
        "flush": f.flush,
        "smallest_normal": f.normal,
        "layers": [
            {
                "name": h.name,
                **{kind: range_dict(getattr(h, kind), f) for kind in ("activation", "gradient", "weight_gradient")},
                "weight": range_dict(h.weight, f),
                **after_steps(h.name),
            }
            for h in headroom.rows
        ],
    }


def headroom_fields(headroom: HeadroomStats | None, name: str) -> dict[str, Any]:
    """The CSV's per-layer headroom columns (``act_amax_ratio``, ``act_underflow``, ... ``w_underflow``)."""
    if headroom is None:
        return {}
    f = headroom_format(headroom)
    h = next((r for r in headroom.rows if r.name == name), None)
    out: dict[str, Any] = {}
    for kind, short in KINDS:
        r = getattr(h, kind) if h is not None else None
        key = short.lower()
        out[f"{key}_amax_ratio"] = None if r is None else clean(r.amax / f.max)
        out[f"{key}_underflow"] = None if r is None else clean(r.underflow)
    return out
