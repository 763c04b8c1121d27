"""The signal-path statistics a collector adds to a row: its role, what a residual block's branch
adds (``branch_ratio``), the pooling-proof backward signal (``grad_scale``) and the relative
weight gradient. docs/verdicts.md derives them."""

from __future__ import annotations

import math
from dataclasses import replace

from probe.records import LayerStats

# Rows that get grad_scale: the ones the gradient rules judge (and the network output).
SCALED_ROLES = ("stream", "head")
# The per-layer accumulator's columns: ||output - input||^2, ||input||^2, sum of ||x_b|| ||g_b||.
EXTRA = 3


def with_extra(
    stats: LayerStats,
    role: str,
    residual_values: int,
    scale_samples: int,
    extra: list[float],
    weight_norm: float | None,
) -> LayerStats:
    """``stats`` with its role and the statistics of the per-layer accumulator ``extra``."""
    added, base, scale_sum = extra
    branch = math.sqrt(added / base) if residual_values and base > 0 else None
    scale = scale_sum / scale_samples if scale_samples else None
    ratio = None
    if stats.weight_grad_norm is not None and weight_norm is not None and weight_norm > 0:
        ratio = stats.weight_grad_norm / weight_norm
    return replace(stats, role=role, grad_scale=scale, weight_grad_ratio=ratio, branch_ratio=branch)
