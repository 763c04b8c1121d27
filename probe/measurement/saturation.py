"""The count of a row's values on a flat tail of its nonlinearity (the ``saturation`` rule's).

Where a row's module says it can saturate (``Watched.saturation``: probe/spec/activations.py), its
output (tanh, sigmoid, ELU, ...) or input (GELU, SiLU) is compared with the bounds past which the
derivative is under ``SATURATION_FRACTION`` of its peak; a recurrent module's gates, which its
fused kernel hides, are replayed (probe/measurement/recurrent.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from probe.measurement import recurrent
from probe.measurement.counts import widened

if TYPE_CHECKING:
    import torch

    from probe.measurement.rows import Layer


def saturated_count(
    layer: Layer, inputs: tuple[Any, ...], output: Any, y: torch.Tensor, count_dtype: torch.dtype, zero: torch.Tensor
) -> torch.Tensor:
    """How many of this call's values are saturated, as a tensor on ``zero``'s device (``zero``
    where the module cannot saturate); marks ``layer.saturation_known`` false where it cannot be
    measured (an in-place module's input is gone; a recurrent call that cannot be replayed)."""
    import torch

    sat = layer.watched.saturation
    if sat is None:
        return zero
    source = y
    if sat.space == "recurrent":  # gates inside a fused kernel, replayed (recurrent.py)
        share = recurrent.saturated_fraction(layer.watched.module, inputs)
        layer.saturation_known = layer.saturation_known and share is not None
        return zero + round((share or 0.0) * y.numel())
    if sat.space == "input":
        x = inputs[0] if inputs else None
        if not isinstance(x, torch.Tensor) or x is output:
            # in-place module: its input is gone; the ratio cannot be measured
            layer.saturation_known = False
            return zero
        source = widened(x.detach())
    total = zero
    if sat.low is not None:
        total = total + (source < sat.low).sum(dtype=count_dtype)
    if sat.high is not None:
        total = total + (source > sat.high).sum(dtype=count_dtype)
    return total
