"""The signal-path statistics a collector adds to a row: its role, what a residual block's branch
adds (``branch_ratio``), the pooling-proof backward signal (``grad_scale``) and the relative
weight gradient. docs/verdicts.md derives them."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from probe.measurement import first_update
from probe.measurement.coherence import Kept, coherent_sum
from probe.measurement.counts import widened

if TYPE_CHECKING:
    import torch

    from probe.model.network import Watched

# Rows that get grad_scale: the ones the gradient rules judge (and the network output).
SCALED_ROLES = ("stream", "head")
# A weight whose first batch's gradient has |cos| with the weight under this is one whose scale
# the loss cannot see (``scale_cosine``; docs/verdicts.md): ``normalized`` by what it does. Exactly
# blind weights read 1e-10 to 1e-6 (a normalization's eps, float rounding), weights whose scale the
# loss sees about cos(delta, y) / sqrt(fan_in), 1e-5 to 1e-1 on the zoo.
SCALE_BLIND_COS = 1e-6
DOT_CHUNK = 2**18  # scale_cosine's values per float32 dot product (its rounding: 3e-10 of the norms)
# The per-layer accumulator's columns: ||output - input||^2, ||input||^2, sum of ||x_bp|| ||g_bp||,
# sum of ||sum_p x_bp g_bp^T|| (``coherent_norms``), and for the network's output row the sum and
# count of its input's values (``input_mean``: logit_scale's rate for an offset every sample shares).
EXTRA = 6


def extra_fields(
    weight_grad_norm: float | None,
    watched: Watched,
    residual_values: int,
    scale_samples: int,
    extra: list[float],
    weight_norm: float | None,
    weight_grad_cos: float | None = None,
) -> dict[str, Any]:
    """A row's role, its weight's scale and the statistics of its per-layer accumulator ``extra``, as LayerStats
    fields (built into the record at once: ``dataclasses.replace`` per row cost the seed's
    network 2% of its pass)."""
    added, base, scale_sum, coherent_sum, input_sum, input_values = extra
    branch = math.sqrt(added / base) if residual_values and base > 0 else None
    scale = scale_sum / scale_samples if scale_samples else None
    coherent = coherent_sum / scale_samples if scale_samples else None
    ratio = None
    if weight_grad_norm is not None and weight_norm is not None and weight_norm > 0:
        ratio = weight_grad_norm / weight_norm
    weight_scale = None
    fan_in, size = watched.fan_in, watched.weight_size
    if weight_norm is not None and fan_in and size and not watched.added_table:
        weight_scale = weight_norm / math.sqrt(size) / math.sqrt(2.0 / fan_in)
    return {
        "role": watched.role,
        "weight_size": size,
        "normalized": watched.normalized or (weight_grad_cos is not None and weight_grad_cos < SCALE_BLIND_COS),
        "norm_reader": watched.norm_reader,
        "grad_scale": scale,
        "coherent_grad_scale": coherent,
        "weight_grad_ratio": ratio,
        "branch_ratio": branch,
        "weight_scale": weight_scale,
        "weight_rms": weight_norm / math.sqrt(size) if weight_norm is not None and size else None,
        "output_of": watched.output_of,
        "returns": watched.returns,
        "input_mean": input_sum / input_values if input_values else None,
    }


def position_norms(y: torch.Tensor, unit_dim: int) -> torch.Tensor:
    """Each sample's and position's norm across units: a ``(batch, positions)`` matrix (the batch
    is the first dimension; positions are every other dimension but the units': tokens, pixels)."""
    import torch

    if y.dim() < 2:  # one number per sample: its own norm
        return y.abs().reshape(-1, 1)
    return torch.linalg.vector_norm(y, dim=unit_dim).reshape(y.shape[0], -1)


def add_grad_scale(
    row: torch.Tensor, norms: torch.Tensor, grad: torch.Tensor, unit_dim: int, kept: Kept | None = None
) -> int:
    """Add sum_b sum_p ||x_bp|| * ||g_bp|| into ``row[2]`` and sum_b ||sum_p x_bp g_bp^T|| into
    ``row[3]`` in place (``norms``: the output's ``position_norms``; ``kept``: its
    ``kept_for_coherence``, None where one position per sample makes the two the same); the samples
    counted (0: shapes differ). A position that receives no gradient adds nothing, so a class
    token's gradient is not multiplied by every token's norm."""
    if grad.dim() == 0 or grad.shape[0] != norms.shape[0]:
        return 0
    grad_norms = position_norms(grad, unit_dim)
    if grad_norms.shape != norms.shape:
        return 0
    per_position = (norms.to(grad_norms.dtype) * grad_norms).sum()
    row[2].add_(per_position)
    row[3].add_(per_position if kept is None else coherent_sum(kept, grad, unit_dim))
    return int(grad.shape[0])


def add_input_mean(row: torch.Tensor, inputs: tuple[Any, ...], output: Any, watched: Watched, last: bool) -> None:
    """On the network's output row (``last``) where its module holds its weight as ``weight`` (a
    head: what logit_scale reads; not a spec MLP's activation row, whose input is its Linear's
    output), add the sum and the count of the first input's values into ``row[4:6]`` in place
    (nothing where the input is not a float tensor, or the module ran in place and its input is now
    its output)."""
    import torch

    if not last or not inputs or watched.weight is None:  # every other row returns here, each batch
        return
    x, own = inputs[0], getattr(watched.module, "weight", None)  # (layer by layer: drawn per block)
    if x is output or not isinstance(own, torch.Tensor) or own.shape != watched.weight.shape:
        return
    if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.numel() == 0:
        return
    row[4].add_(x.detach().sum(dtype=row.dtype))
    row[5].add_(x.numel())


def add_branch(row: torch.Tensor, x: Any, output: Any, y: torch.Tensor, scratch: torch.Tensor) -> int:
    """Add a block's ||output - input||^2 and ||input||^2 into ``row[0:2]`` in place; the values
    counted (0: the input is not a float tensor of the output's shape, or the block ran in place)."""
    import torch

    if not isinstance(x, torch.Tensor) or x is output or x.shape != y.shape or not x.is_floating_point():
        return 0
    x = widened(x.detach())
    added = torch.sub(y, x, out=scratch).view(-1)
    flat = x.reshape(-1)
    row[0].add_(torch.dot(added, added))
    row[1].add_(torch.dot(flat, flat))
    return int(y.numel())


def plain_weight(w: torch.Tensor | None) -> torch.Tensor | None:
    """``w`` when its norm can be read on this process: a plain tensor, not a shard of a
    distributed one (FSDP2's DTensor) and not on the meta device (a layer-by-layer run)."""
    import torch

    if w is None or w.is_meta or type(w.data) is not torch.Tensor:
        return None
    return w


def weight_norms(weights: list[torch.Tensor | None], acc_dtype: torch.dtype) -> list[torch.Tensor]:
    """The norms of the weights that are there, in each weight's own dtype (a float64 copy of every
    weight would double its memory), as 1-element accumulator-dtype tensors."""
    import torch

    present = [w.detach() for w in weights if w is not None]
    return [
        torch.linalg.vector_norm(w.float() if w.dtype != torch.float64 else w).to(acc_dtype).view(1) for w in present
    ]


def read_weight_norms(weights: list[Any], flat: list[float], at: int) -> tuple[list[float | None], int]:
    """``weight_norms``' values read back from the host list at ``at``; the position after them."""
    norms: list[float | None] = []
    for w in weights:
        norms.append(None if w is None else flat[at])
        at += w is not None
    return norms, at


# ---- units: dead (no gradient, from the unit itself) and tied (no step can tell them apart) -----


def unit_rows(module: Any, t: torch.Tensor, units: int) -> torch.Tensor | None:
    """A weight (or its gradient) as a ``(units, rest)`` matrix, one row per output unit; None when
    its first axis (after ``oriented``: Conv1D stores (in, out)) does not index the row's units."""
    from probe.model.init_rules import oriented

    v = oriented(module, t) if t.dim() == 2 else t
    if v.dim() == 0 or v.shape[0] != units:
        return None
    return v.reshape(units, -1)


def tie_sums(rows: torch.Tensor, acc_dtype: torch.dtype) -> torch.Tensor:
    """[sum of squared differences of every unit's row from the first unit's, twice the total sum
    of squared deviations from the mean]: the first is exactly 0 when every row is the same (tied
    units; a difference of equal numbers is 0 in any precision), and the two are about equal when
    the rows are independent draws (a difference of two rows has twice their variance)."""
    import torch

    across = (rows - rows[:1]).reshape(-1)
    total = torch.var(rows, correction=0) * (2 * rows.numel())
    return torch.stack([torch.dot(across, across), total]).to(acc_dtype)


def scale_cosine(grad: torch.Tensor, weight: torch.Tensor, acc_dtype: torch.dtype) -> torch.Tensor:
    """|cos| between ``grad`` and ``weight``, as a 1-element tensor on their device: the loss's
    derivative along the weight's own direction, <dL/dW, W> = dL/d(log scale), over
    ||dL/dW|| ||W||. A weight whose output a normalization divides out (or whose every path ends in
    one) gives 0 up to the norm's eps and rounding, whatever the architecture; 1 where either norm
    is 0 (nothing to tell). The dot product goes ``DOT_CHUNK`` values at a time, each chunk's
    ``torch.dot`` in the tensors' precision (no temporary: a product tensor per chunk made a 7B
    layer-by-layer run 338 s instead of 309 s), the chunks summed in ``acc_dtype``: on 12.6
    million orthogonal float32 values the cosine reads 3e-10 (exact: 2e-12); the norms in the
    tensors' own precision, as ``weight_norms`` (a float32 norm of 12 million values is off by about
    1e-3, which moves a cosine of 1e-6 by 1e-9)."""
    import torch

    g, w = widened(grad).reshape(-1), widened(weight).reshape(-1)
    dot = torch.zeros((), dtype=acc_dtype, device=g.device)
    for gc, wc in zip(g.split(DOT_CHUNK), w.split(DOT_CHUNK), strict=True):
        dot += torch.dot(gc, wc).to(acc_dtype)
    size = torch.linalg.vector_norm(g).to(acc_dtype) * torch.linalg.vector_norm(w).to(acc_dtype)
    one = torch.ones_like(size)
    return torch.where(size > 0, dot.abs() / torch.where(size > 0, size, one), one).reshape(1)


def own_parameters(w: Watched, scales: bool = False) -> list[torch.Tensor]:
    """The parameters a row's units are made of: its watched weight and its module's own (not its
    children's) parameters: a bias, a LayerScale's gamma, a block's scalar gain. ``scales``: only
    those that multiply (not one named ``bias``, torch's name for an added parameter, in any of
    its forms: a zero bias blocks nothing)."""
    params = [w.weight] if w.weight is not None else []
    for name, p in w.module.named_parameters(recurse=False):
        if scales and "bias" in name:  # bias, an LSTM's bias_ih_l0, attention's in_proj_bias
            continue
        if p.requires_grad and all(p is not q for q in params):
            params.append(p)
    return params


def add_unit_gradients(layer: Any, acc_dtype: torch.dtype) -> None:
    """The first backward's gradients of the row's own parameters into ``layer`` (once: what they
    tell does not depend on the batch, for a unit that outputs 0 on every sample is either a ReLU
    below 0, whose rows receive nothing from any batch, or a zero layer, whose rows receive
    gradient from every batch; tied units stay tied for any input): per unit, the norm of its
    parameter rows' gradient (``weight_units``: 0 = none received); the tie sums of the
    weight-gradient rows and of the weight's rows (a weight of two or more dimensions: units that
    read the same inputs); and ``own`` = [sum of ||grad|| over the multiplying parameters besides
    the watched weight exactly 0, the largest ||grad|| / ||parameter|| over the others]
    (``mechanisms.movers``; ``unit_fields`` adds the watched weight's). A call that finds
    no gradient (a layer-by-layer run's block not in memory) leaves it for a later one."""
    import torch

    w = layer.watched
    present = [p for p in own_parameters(w) if p.grad is not None and not p.is_meta]
    if not present:
        return
    layer.units_done = True
    weight = w.weight
    for p in present:
        rows = unit_rows(w.module, p.grad.detach(), w.units)  # type: ignore[union-attr]
        if rows is None:
            continue
        got = torch.linalg.vector_norm(rows, dim=1).to(acc_dtype)
        layer.weight_units = got if layer.weight_units is None else layer.weight_units.add_(got)
        if p is weight and p.dim() >= 2:
            weight_rows = unit_rows(w.module, p.detach(), w.units)
            if weight_rows is not None:
                layer.grad_ties = tie_sums(rows, acc_dtype)
                layer.weight_ties = tie_sums(weight_rows, acc_dtype)
            if w.role == "head":  # rank_one_step reads the output layer only
                layer.update_share = first_update.rank_one_share(rows, acc_dtype)
    # the watched weight's own figures are the row's weight_grad_norm and weight norm (rows.py)
    scales = [
        (p, p.grad) for p in own_parameters(w, scales=True) if p.grad is not None and not p.is_meta and p is not weight
    ]
    if scales:
        zero_moving = torch.zeros((), dtype=acc_dtype, device=scales[0][0].device)
        step = torch.zeros((), dtype=acc_dtype, device=scales[0][0].device)
        still = torch.zeros((), dtype=acc_dtype, device=scales[0][0].device)  # exactly 0, gradient exactly 0
        for p, g in scales:
            norm = torch.linalg.vector_norm(p.detach().float()).to(acc_dtype)
            size = torch.linalg.vector_norm(g.detach().float()).to(acc_dtype)
            zero = norm == 0
            zero_moving = zero_moving + torch.where(zero, size, torch.zeros_like(size))
            ratio = size / torch.where(zero, torch.ones_like(norm), norm)
            step = torch.maximum(step, torch.where(zero, torch.zeros_like(ratio), ratio))
            still = still + (zero & (size == 0)).to(acc_dtype)
        layer.own = torch.stack([zero_moving, step, still, torch.full_like(still, len(scales)) - still])


def unit_parts(layers: list[Any]) -> list[torch.Tensor]:
    """The per-unit and tie accumulators of every layer, in ``read_unit_parts``' order."""
    parts = []
    for layer in layers:
        for t in (
            layer.weight_units,
            layer.input_grad,
            layer.grad_ties,
            layer.weight_ties,
            layer.own,
            layer.update_share,
            layer.scale_cos,
        ):
            if t is not None:
                parts.append(t.reshape(-1))
    return parts


def read_unit_parts(layers: list[Any], flat: list[float], at: int) -> tuple[list[dict[str, Any]], int]:
    """``unit_parts`` read back from the host list: per layer, the lists (or None) by name."""
    out = []
    for layer in layers:
        read: dict[str, Any] = {}
        for name in ("weight_units", "input_grad", "grad_ties", "weight_ties", "own", "update_share", "scale_cos"):
            t = getattr(layer, name)
            if t is None:
                read[name] = None
                continue
            read[name] = flat[at : at + t.numel()]
            at += t.numel()
        out.append(read)
    return out, at


def unit_fields(alive: list[float] | None, read: dict[str, Any]) -> dict[str, Any]:
    """dead_units, zero_units, tied_spread and ``own`` (for ``moving_fields``) from a layer's
    per-unit counts (docs/verdicts.md).

    A unit is dead when its output is 0 for every sample AND nothing that could change it receives
    gradient: its rows of the row's own parameters (weight, bias, a LayerScale's gamma), nor its
    input (a row without parameters, where measured). A zero-initialized layer's units output 0 but their weight rows receive
    gradient (the first step moves them): not dead. A ReLU negative for every sample passes no
    gradient to its input nor to the weight row feeding it: dead.
    """
    cos = read.get("scale_cos")
    if alive is None:
        return {"weight_grad_cos": cos[0]} if cos is not None else {}
    units = len(alive)
    zero = [c == 0.0 for c in alive]
    dead = list(zero)
    for name in ("weight_units", "input_grad"):
        counts = read.get(name)
        if counts is not None and len(counts) == units:
            dead = [d and c == 0.0 for d, c in zip(dead, counts, strict=True)]
    fields: dict[str, Any] = {
        "dead_units": sum(dead) / units if units else 0.0,
        "zero_units": sum(zero) / units if units else 0.0,
    }
    spreads = []  # (grad_ties: the first backward's weight-gradient rows)
    for name in ("grad_ties", "weight_ties"):
        ties = read.get(name)
        if ties is not None:
            across, total = ties
            spreads.append(math.sqrt(across / total) if total > 0 else 0.0)
    if spreads and units > 1:
        fields["tied_spread"] = max(spreads)
    own = read.get("own") or [0.0, 0.0, 0.0, 0.0]
    fields["own"] = (own[0] > 0, own[1], own[2], own[3])
    if read.get("update_share") is not None:
        fields["update_rank_share"] = read["update_share"][0]
    if cos is not None:
        fields["weight_grad_cos"] = cos[0]
    return fields


def moving_fields(
    own: tuple[bool, float, float, float], weight_grad_norm: float | None, weight_norm: float | None
) -> dict[str, Any]:
    """zero_moving, step_ratio and zero_product: the row's other multiplying parameters (``own``: any
    exactly 0 with a gradient, the largest relative gradient, how many are exactly 0 with a gradient
    exactly 0 and how many are not) with its watched weight's."""
    moving, step, still, other = own
    if weight_grad_norm is not None and weight_norm is not None:
        if weight_norm == 0.0:
            moving = moving or weight_grad_norm > 0
            still, other = (still + 1, other) if weight_grad_norm == 0.0 else (still, other + 1)
        else:
            step = max(step, weight_grad_norm / weight_norm)
            other += 1
    return {"zero_moving": moving, "step_ratio": step if step > 0 else None, "zero_product": still >= 2 and not other}
