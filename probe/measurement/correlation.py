"""Collapse: whether what varies between samples (and between a sequence's tokens) still spans
more than one direction.

Each record takes the first ``SAMPLES`` samples of a batch and subtracts their mean from each
value (the batch mean of each feature). What is left is the part of the signal that depends on
the input; a bias, the positive mean of ReLU features or pooled maps, a position embedding, are
shared by every sample and cancel. For every ordered pair of distinct samples it adds the squared
cosine between their centered, flattened rows, as an excess over what independent rows give:

    (cos^2 - b) / (1 - b),    b = rho^2 + (1 - rho^2)^2 / D

with D values per sample and rho = 1/(m-1) the correlation that centering on the mean of m rows
puts between any two of them (b = 1/D for many rows). It is 0 on average for rows pointing
independently and 1 when every sample differs from the batch mean along one line: the input
changes where on that line a sample lands and nothing else (a deep ReLU network at He's init maps
inputs to one direction up to their norm: after centering, only the norm is left). Rows that are 0
or not finite take no part, nor does a sample whose centered row is below ``RESOLUTION`` times the
dtype's epsilon of its own norm: it is the batch mean to rounding, and its direction is
rounding's. (An output that does not depend on the input at all has no pairs: the scale rules
judge it, since no gradient reaches what is behind it.) A record is the sum over pairs and the
number of pairs, so records add across batches and ranks.

Tokens, for ``(samples, tokens, units)`` outputs: the same over the token pairs of each of the
first ``TOKEN_SEQUENCES`` sequences, each token centered on the batch's mean at its position (so a
position embedding shared by every sample cancels, and a sequence's tokens are not centered on
each other: a recurrent state that drifts over time is not one direction). Rank collapse, the
sample-specific part of every token of a sequence the same vector up to a scale, reads 1.

The pairs' sum is the squared Frobenius norm of the rows' Gram matrix (or of the D x D matrix,
whichever is smaller) less its diagonal: one matrix product per group, O(n^2 D). Everything stays
on the device (no host read).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

# Samples of each batch the sample statistic is measured on: 32 give 992 ordered pairs per batch;
# the Gram matrix costs 32^2 multiply-adds per value of a sample (a BLAS product).
SAMPLES = 32
# Sequences of each batch the token statistic is measured on: each gives tokens^2 pairs.
TOKEN_SEQUENCES = 4
# A centered row shorter than this many epsilons of the output's dtype times its uncentered norm
# is the batch mean up to rounding (the values, their mean and the difference each round).
RESOLUTION = 8.0

# Records a layer keeps before folding them into its sums (memory stays O(layers) however many
# batches run; a fold is a handful of device ops).
PENDING = 32


def _pair_sum(centered: torch.Tensor, norms: torch.Tensor, eps: float, rho: torch.Tensor) -> torch.Tensor:
    """[sum over ordered pairs of distinct rows of the excess squared cosine, pairs] for each group
    of ``centered`` rows (groups, n, D), in the float type they come in. ``norms``: each row's
    uncentered norm (non-finite: the row takes no part); ``rho``: per group, the correlation the
    centering alone puts between two rows (-1/(m-1) for rows centered on the mean of m of them,
    0 for rows centered on other rows' means), whose square independent rows read as well."""
    import torch

    width = centered.shape[2]
    spread = torch.linalg.vector_norm(centered, dim=2)
    # a zero row, or one that is the mean to rounding, has no direction of its own
    live = torch.isfinite(norms) & (norms > 0) & (spread > RESOLUTION * eps * norms)
    unit = centered * torch.where(live, spread.reciprocal(), torch.zeros_like(spread)).unsqueeze(2)
    # the n x n Gram matrix, or the D x D one when smaller: the same Frobenius norm
    gram = unit.transpose(1, 2) @ unit if width < centered.shape[1] else unit @ unit.transpose(1, 2)
    m = live.sum(dim=1, dtype=centered.dtype)
    pairs = m * (m - 1)
    squares = gram.square().sum(dim=(1, 2)) - m  # less the diagonal's m ones
    # independent rows: E[cos^2] = rho^2 + (1 - rho^2)^2 / D (within 3% down to 4 rows of 8 values)
    r2 = rho * rho
    base = r2 + (1.0 - r2) ** 2 / width
    excess = (squares - pairs * base) / (1.0 - base)
    return torch.stack([excess, pairs], dim=1)


def _finite_rows(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``rows`` (samples, ...) in float64 (float32 on MPS), non-finite samples zeroed, each sample's
    norm, and the mean over the finite samples (dim 0)."""
    import torch

    wide = torch.float32 if rows.device.type == "mps" else torch.float64
    rows = rows.to(wide)
    norms = torch.linalg.vector_norm(rows.reshape(rows.shape[0], -1), dim=1)
    finite = torch.isfinite(norms)
    shape = (-1,) + (1,) * (rows.dim() - 1)
    clean = torch.where(finite.view(shape), rows, torch.zeros_like(rows))
    mean = clean.sum(dim=0, keepdim=True) / finite.sum(dtype=wide).clamp_min(1)
    return clean, norms, mean


def correlation_record(y: torch.Tensor, unit_dim: int, eps: float = 1.1920928955078125e-07) -> torch.Tensor | None:
    """One output's raw record: [sum over sample pairs of the excess squared cosine of their
    centered rows, pairs] and, for a (samples, tokens, units) output, the same over the token
    pairs of each of the first ``TOKEN_SEQUENCES`` sequences, each token centered on the batch's
    mean of its position. ``eps``: the output dtype's epsilon (what rounding can blur). ``None``
    with fewer than two samples or one value per sample."""
    import torch

    if y.dim() < 2 or y.shape[0] < 2 or y[0].numel() < 2:
        return None
    clean, norms, mean = _finite_rows(y[:SAMPLES])
    centered = clean - mean
    m = torch.isfinite(norms).sum(dtype=clean.dtype)
    rho = (1.0 / (m - 1).clamp_min(1)).view(1)
    parts = [_pair_sum(centered.reshape(1, clean.shape[0], -1), norms.view(1, -1), eps, rho).sum(0)]
    if y.dim() == 3 and unit_dim == 2 and y.shape[1] > 1 and y.shape[2] > 1:
        seqs = centered[:TOKEN_SEQUENCES]
        token_norms = torch.linalg.vector_norm(clean[:TOKEN_SEQUENCES], dim=2)
        token_norms = torch.where(
            torch.isfinite(norms[:TOKEN_SEQUENCES]).unsqueeze(1), token_norms, norms.new_tensor(math.nan)
        )
        parts.append(
            _pair_sum(seqs, token_norms, eps, torch.zeros(seqs.shape[0], dtype=seqs.dtype, device=seqs.device)).sum(0)
        )
    return torch.cat(parts)


def fold(records: list[torch.Tensor], acc_dtype: torch.dtype) -> torch.Tensor:
    """Records of one layer -> [excess squared cosine summed over sample pairs, sample pairs, the
    same over token pairs, token pairs]."""
    import torch

    out = torch.zeros(4, dtype=acc_dtype, device=records[0].device)
    for width in (2, 4):
        same = [r for r in records if r.numel() == width]
        if same:
            out[:width] += torch.stack(same).to(acc_dtype).sum(0)
    return out


def host_fold(record: list[float], sums: list[float]) -> None:
    """``fold`` for one record read to the host: add it into ``sums`` in place (at the end of a
    short run, cheaper than device ops per layer)."""
    for k, value in enumerate(record):
        sums[k] += value
