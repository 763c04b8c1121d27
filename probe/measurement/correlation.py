"""Collapse: whether what varies between samples (and between a sequence's tokens) still spans
more than one direction.

Each record takes the first ``SAMPLES`` samples of a batch, flattens each, and subtracts their
mean (per value: the batch mean of each feature). What is left is the part of the signal that
depends on the input; a bias, or the positive mean of ReLU features or pooled maps, is shared by
every sample and cancels. For every ordered pair of distinct samples it adds the squared cosine
between their centered rows, as an excess over what independent directions give:

    (cos^2 - 1/D) / (1 - 1/D)        D = values per sample

which is 0 on average for rows pointing independently (in D dimensions E[cos^2] = 1/D) and 1 when
every sample differs from the batch mean along one line: the input changes where on that line a
sample lands and nothing else (a deep ReLU network at He's init maps inputs to one direction up
to their norm: after centering, only the norm is left). Rows that are 0 or not finite take no
part, nor does a sample whose centered row is below ``RESOLUTION`` times the dtype's epsilon of
its own norm: it is the batch mean to rounding, and its direction is rounding's. (An output that
does not depend on the input at all has no pairs: the scale rules judge it, since no gradient
reaches what is behind it.) A record is the sum over pairs and the number of pairs, so records
add across batches and ranks.

The pairs' sum is the squared Frobenius norm of the rows' Gram matrix (or of the D x D matrix,
whichever is smaller) less its diagonal: one matrix product per record, O(SAMPLES^2 * D). The
same per sequence, over its tokens (centered on the sequence's mean token) and its units, for
``(samples, tokens, units)`` outputs, on the first ``TOKEN_SEQUENCES`` sequences: rank collapse,
every token of a sequence the same vector, reads 1. Everything stays on the device (no host read).
"""

from __future__ import annotations

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


def _pair_sum(rows: torch.Tensor, eps: float) -> torch.Tensor:
    """[sum over ordered pairs of distinct rows of the excess squared cosine, pairs] for each
    group of ``rows`` (groups, n, D), centered over dim 1 (on the finite rows); shape (groups, 2),
    in float64 (float32 on MPS, which has no float64)."""
    import torch

    wide = torch.float32 if rows.device.type == "mps" else torch.float64
    rows = rows.to(wide)
    width = rows.shape[2]
    norms = torch.linalg.vector_norm(rows, dim=2)
    finite = torch.isfinite(norms)
    clean = torch.where(finite.unsqueeze(2), rows, torch.zeros_like(rows))
    mean = clean.sum(dim=1, keepdim=True) / finite.sum(dim=1, dtype=wide).clamp_min(1).view(-1, 1, 1)
    centered = clean - mean
    spread = torch.linalg.vector_norm(centered, dim=2)
    # a zero row, or one that is the batch mean to rounding, has no direction of its own
    live = finite & (norms > 0) & (spread > RESOLUTION * eps * norms)
    unit = centered * torch.where(live, spread.reciprocal(), torch.zeros_like(spread)).unsqueeze(2)
    # the n x n Gram matrix, or the D x D one when smaller: the same Frobenius norm
    gram = unit.transpose(1, 2) @ unit if width < rows.shape[1] else unit @ unit.transpose(1, 2)
    m = live.sum(dim=1, dtype=wide)
    pairs = m * (m - 1)
    squares = gram.square().sum(dim=(1, 2)) - m  # less the diagonal's m ones
    excess = (squares - pairs / width) / (1.0 - 1.0 / width)
    return torch.stack([excess, pairs], dim=1)


def correlation_record(y: torch.Tensor, unit_dim: int, eps: float = 1.1920928955078125e-07) -> torch.Tensor | None:
    """One output's raw record: [sum over sample pairs of the excess squared cosine of their
    centered rows, pairs] and, for a (samples, tokens, units) output, the same summed over the
    token pairs of each sequence. ``eps``: the output dtype's epsilon (what rounding can blur).
    ``None`` with fewer than two samples or one value per sample."""
    import torch

    if y.dim() < 2 or y.shape[0] < 2:
        return None
    rows = y[:SAMPLES]
    flat = rows.reshape(rows.shape[0], -1)
    if flat.shape[1] < 2:
        return None
    parts = [_pair_sum(flat.unsqueeze(0), eps).sum(0)]
    if y.dim() == 3 and unit_dim == 2 and y.shape[1] > 1 and y.shape[2] > 1:
        parts.append(_pair_sum(y[:TOKEN_SEQUENCES], eps).sum(0))
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
