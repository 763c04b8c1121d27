"""One watched layer as the collector sees it (``Layer``: what it has counted between merges) and
its accumulated sums read back into the report's row (``to_stats``)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from probe.measurement import signal_path as sp
from probe.model.network import Watched
from probe.records import LayerStats

if TYPE_CHECKING:
    import torch


class Layer:
    """What the collector knows about one watched layer between merges."""

    def __init__(self, w: Watched) -> None:
        self.watched = w
        self.saturation_known = w.saturation is not None
        self.values = 0  # values measured
        self.grads = 0  # gradient values measured
        self.weight_grad_batches = 0
        self.spread_values = 0  # values of calls with more than one unit (the spread's denominator)
        self.alive: torch.Tensor | None = None  # per unit: nonzero values seen (0 = dead so far)
        # sums of [excess squared centered cosines, sample pairs, the same over tokens, token pairs], and
        # the raw records not folded into them yet (correlation.py)
        self.correlation: torch.Tensor | None = None
        self.correlation_records: list[torch.Tensor] = []
        self.bound: int | None = None  # directions its samples can differ in (correlation.bound_rows)
        self.dims: dict[int, tuple[int, list[int]]] = {}  # ndim -> (unit dim, the other dims)
        # rows the gradient rules read get the per-sample grad_scale (not a shared table's rows)
        # (a spec MLP's rows keep the per-value gradient std: no pool or broadcast to correct for)
        self.scaled = w.role in sp.SCALED_ROLES and not w.broadcast and bool(w.module_type)
        self.scale_samples = 0  # samples whose ||output|| * ||gradient|| was summed
        self.residual_values = 0  # values whose branch part was measured
        # dead and tied units (signal_path.unit_fields): per unit, batches whose weight row received
        # gradient and values of the input's gradient that are not 0 (a row without a weight); the
        # tie sums of the weight-gradient rows and of the weight's rows
        self.weight_units: torch.Tensor | None = None
        self.input_grad: torch.Tensor | None = None
        self.grad_ties: torch.Tensor | None = None
        self.weight_ties: torch.Tensor | None = None
        # [sum of ||grad|| of parameters exactly 0, largest ||grad|| / ||p||, how many exactly 0 with a gradient
        # exactly 0, how many not] over the multiplying parameters besides the watched weight
        self.own: torch.Tensor | None = None
        self.update_share: torch.Tensor | None = None  # first_update.rank_one_share of the weight's gradient
        # |cos| between the watched weight and its first batch's gradient (signal_path.scale_cosine:
        # 0 where the loss cannot see the weight's scale)
        self.scale_cos: torch.Tensor | None = None
        self.has_own = bool(sp.own_parameters(w))  # a row without parameters: its input's gradient decides
        self.units_done = False  # the first backward's unit statistics are in (add_unit_gradients)

    def unit_dims(self, ndim: int) -> tuple[int, list[int]]:
        dims = self.dims.get(ndim)
        if dims is None:
            unit = self.watched.unit_dim % ndim
            dims = self.dims[ndim] = (unit, [d for d in range(ndim) if d != unit])
        return dims


def _std(m2: float, count: float) -> float:
    """Sample standard deviation (n - 1 in the denominator, like ``Tensor.std``)."""
    return math.sqrt(m2 / max(count - 1, 1)) if m2 == m2 else math.nan


def to_stats(
    layer: Layer,
    i: int,
    layers: int,
    count: list[float],
    mean: list[float],
    m2: list[float],
    sums: list[float],
    live: tuple[float, float, int] | None,
    backward: bool,
    cosines: tuple[float | None, float | None, float | None],
    extra: list[float],
    weight_norm: float | None,
    unit_fields: dict[str, Any] | None = None,
) -> LayerStats:
    w = layer.watched
    n = max(count[i], 1)
    within_m2, nonfinite, saturated = sums[3 * i : 3 * i + 3]
    var_total = m2[i] / n
    nonzero, ever_nonzero, units = live if live is not None else (0.0, 0.0, 0)
    spread = 0.0
    if layer.spread_values and var_total > 0:
        spread = math.sqrt(within_m2 / layer.spread_values / var_total)
    elif var_total != var_total:
        spread = math.nan
    g, wg = layers + i, 2 * layers + i
    has_grads = backward and layer.grads > 0
    has_wgrad = backward and layer.weight_grad_batches > 0
    # the mean squared norm per batch: all batches' sum of squares = M2 + n * mean^2 (no cancellation)
    wg_sq = m2[wg] + count[wg] * mean[wg] * mean[wg]
    weight_grad_norm = math.sqrt(wg_sq / max(layer.weight_grad_batches, 1)) if has_wgrad else None
    g_sq = m2[g] + count[g] * mean[g] * mean[g]  # every gradient value exactly 0: blocked downstream
    units_known = dict(unit_fields or {})  # the backward's dead units replace the forward's zeros
    if "own" in units_known:
        units_known.update(sp.moving_fields(units_known.pop("own"), weight_grad_norm, weight_norm))
    forward_dead = (units - ever_nonzero) / units if units else 0.0
    return LayerStats(
        name=w.name,
        index=w.index,
        kind=w.kind,
        units=w.units,
        count=layer.values,
        mean=mean[i],
        std=_std(m2[i], count[i]),
        zero_ratio=(count[i] - nonzero) / n,
        dead_units=units_known.pop("dead_units", forward_dead),
        saturation_ratio=saturated / n if layer.saturation_known else None,
        nonfinite=int(nonfinite),
        unit_spread=spread if w.units > 1 else None,
        grad_std=_std(m2[g], count[g]) if has_grads else None,
        weight_grad_norm=weight_grad_norm,
        weight_grad_std=_std(m2[wg], count[wg]) if has_wgrad else None,
        # what each row is and how it was initialized (reported for non-MLP models)
        module_type=w.module_type or None,
        init_rule=w.init_rule if w.module_type else None,
        grad_nonfinite=int(sums[3 * g + 1] + sums[3 * wg + 1]) if has_grads or has_wgrad else None,
        correlation=cosines[0],
        token_correlation=cosines[1],
        sample_std=cosines[2],
        gradient_blocked=has_grads and g_sq == 0.0,
        **sp.extra_fields(
            weight_grad_norm,
            w,
            layer.residual_values,
            layer.scale_samples,
            extra,
            weight_norm,
            units_known.get("weight_grad_cos"),
        ),
        **units_known,
    )
