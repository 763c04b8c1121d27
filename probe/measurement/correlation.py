"""Correlation collapse: how much samples' outputs (and a sequence's tokens) point the same way.

With each sample's flattened output scaled to unit norm, the squared norm of their sum is n plus
the sum over ordered pairs of their cosines, so one row-norm pass and one matrix-vector product
give the mean pairwise cosine in O(n * values per sample), never the n x n Gram matrix. The same
per sequence gives the cosine between the tokens of one sequence (rank collapse). Both use the
first ``SAMPLES`` samples of a batch and stay on the device (no host read).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

# Samples of each batch the correlation is measured on: 64 give 2016 pairs, a standard error of
# the mean cosine well under 0.01 for independent inputs, at an eighth of a 512 batch's cost.
SAMPLES = 64


# Records a layer keeps before folding them into its sums (memory stays O(layers) however many
# batches run; a fold is a handful of device ops).
PENDING = 32


def correlation_record(y: torch.Tensor, unit_dim: int) -> torch.Tensor | None:
    """One output's raw record: [|sum of unit-norm sample rows|^2, nonzero rows] and, for a
    (samples, tokens, units) output, [sum over sequences of (|sum of unit-norm tokens|^2 - tokens),
    sum over sequences of tokens * (tokens - 1)]. Dim 0 indexes samples; each sample is flattened,
    uncentered; rows of norm 0 (or not finite) take no part. ``None`` with fewer than two samples
    or one value per sample. Five device ops for the samples: this runs in every forward hook."""
    import torch

    if y.dim() < 2 or y.shape[0] < 2:
        return None
    rows = y[:SAMPLES]
    flat = rows.reshape(rows.shape[0], -1)
    inverse = torch.linalg.vector_norm(flat, dim=1).reciprocal_().nan_to_num_(nan=0.0, posinf=0.0, neginf=0.0)
    total = torch.mv(flat.t(), inverse)  # the sum of the unit-norm rows
    parts = [torch.dot(total, total).view(1), inverse.count_nonzero().view(1)]
    if y.dim() == 3 and unit_dim == 2 and y.shape[1] > 1:
        token_inverse = torch.linalg.vector_norm(rows, dim=2).reciprocal_()
        token_inverse.nan_to_num_(nan=0.0, posinf=0.0, neginf=0.0)
        sums = torch.bmm(token_inverse.unsqueeze(1), rows).squeeze(1)  # per sequence, (samples, units)
        tokens = (token_inverse > 0).sum(dim=1, dtype=sums.dtype)
        squares = torch.linalg.vector_norm(sums, dim=1).square()
        parts += [(squares - tokens).sum().view(1), (tokens * (tokens - 1)).sum().view(1)]
    return torch.cat(parts)  # promotes the count to the activation's float dtype (exact: n <= 64)


def fold(records: list[torch.Tensor], acc_dtype: torch.dtype) -> torch.Tensor:
    """Records of one layer -> [sum of pairwise sample cosines, sample pairs, sum of pairwise token
    cosines, token pairs] (ordered pairs of distinct rows: |sum|^2 = n + the sum of their cosines)."""
    import torch

    out = torch.zeros(4, dtype=acc_dtype, device=records[0].device)
    for width in (2, 4):
        same = [r for r in records if r.numel() == width]
        if not same:
            continue
        stacked = torch.stack(same).to(acc_dtype)
        square, n = stacked[:, 0], stacked[:, 1]
        out[0] += (square - n).sum()
        out[1] += (n * (n - 1)).sum()
        if width == 4:
            out[2:] += stacked[:, 2:].sum(0)
    return out


def host_fold(record: list[float], sums: list[float]) -> None:
    """``fold`` for one record read to the host: add it into ``sums`` in place (at the end of a
    short run, cheaper than device ops per layer)."""
    square, n = record[0], record[1]
    sums[0] += square - n
    sums[1] += n * (n - 1)
    if len(record) == 4:
        sums[2] += record[2]
        sums[3] += record[3]
