"""Collapse: whether what varies between samples (and between a sequence's tokens) still spans
more than one direction.

Each record takes the first ``SAMPLES`` samples of a batch and subtracts their mean from each
value (the batch mean of each feature). What is left is the part of the signal that depends on
the input; a bias, the positive mean of ReLU features or pooled maps, a position embedding, are
shared by every sample and cancel. For every ordered pair of distinct samples it adds the squared
cosine between their centered, flattened rows, as an excess over what independent rows give:

    (cos^2 - b) / (1 - b),    b = rho^2 + (1 - rho^2)^2 / D

with D values per sample (or the fewer values of the module's input, or of the model's: no more
directions to differ in) and rho = 1/(m-1) the correlation that centering on the mean of m rows
puts between any two of them (b = 1/D for many rows). It is 0 on average for rows pointing
independently and 1 when every sample differs from the batch mean along one line: the input
changes where on that line a sample lands and nothing else (a deep ReLU network at He's init maps
inputs to one direction up to their norm: after centering, only the norm is left). Rows that are 0
take no part, nor does a sample whose centered row is below ``RESOLUTION`` times the
dtype's epsilon of its own norm: it is the batch mean to rounding, and its direction is
rounding's. (An output that does not depend on the input at all has no pairs: the collector reports
it as ``samples_identical``, and ``collapse`` fails a network whose every row is so.) A record is the sum over pairs and the
number of pairs, so records add across batches and ranks.

Tokens, for ``(samples, tokens, units)`` outputs: the same over the token pairs of each of the
first ``TOKEN_SEQUENCES`` sequences, each token centered on the batch's mean at its position (so a
position embedding shared by every sample cancels, and a sequence's tokens are not centered on
each other: a recurrent state that drifts over time is not one direction). Rank collapse, the
sample-specific part of every token of a sequence the same vector up to a scale, reads 1.

Each record costs three passes over the first samples (their squared norms, their mean, the
centered copy) and one Gram product, O(n^2 D), in the activation's own float type (float32: a
squared cosine to a few epsilons); the Gram matrix's diagonal gives the centered norms, so no row
is normalized. Tokens: a tokens x tokens Gram matrix per sequence, or the units x units one of the
unit tokens when a sequence has more tokens than units (the same Frobenius norm). A batch with a
non-finite value in those samples adds nothing. Everything stays on the device (no host read).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from probe.measurement.rows import Layer

# Samples of each batch the sample statistic is measured on: 32 give 992 ordered pairs per batch;
# the Gram matrix costs 32^2 multiply-adds per value of a sample (a BLAS product).
SAMPLES = 32
# Sequences of each batch the token statistic is measured on: each gives tokens^2 pairs.
TOKEN_SEQUENCES = 4
# A centered row shorter than this many epsilons of the output's dtype times its uncentered norm
# is the batch mean up to rounding (the values, their mean and the difference each round).
RESOLUTION = 8.0

# A record's values: [excess squared cosine over sample pairs, pairs, the same over token pairs,
# token pairs, the batch's sample variance (below), 1 where that variance is finite]
WIDTH = 6

# Records a layer keeps before folding them into its sums (memory stays O(layers) however many
# batches run; a fold is a handful of device ops).
PENDING = 32


def _excess(gram: torch.Tensor, squares: torch.Tensor, eps: float, rho: float, width: int) -> torch.Tensor:
    """[sum over ordered pairs of distinct rows of the excess squared cosine, pairs], summed over
    the groups of ``gram`` (groups, n, n): the Gram matrices of centered rows. ``squares``: each
    row's uncentered squared norm; ``rho``: the correlation the centering alone puts between two
    rows (1/(m-1) for rows centered on the mean of m of them, 0 for rows centered on other rows'
    means), whose square independent rows read as well; ``width``: values per row."""
    import torch

    spread = gram.diagonal(dim1=1, dim2=2)  # squared norms of the centered rows
    # a zero row, or one that is the mean to rounding, has no direction of its own
    live = (squares > 0) & (spread > (RESOLUTION * eps) ** 2 * squares)
    inverse = torch.where(live, spread.reciprocal(), torch.zeros_like(spread))
    m = live.sum(dim=1, dtype=gram.dtype)
    pairs = m * (m - 1)
    if width < 2:  # samples of one input feature differ along one line by construction: excess 0
        return torch.stack([torch.zeros_like(pairs.sum()), pairs.sum()])
    cos2 = gram.square() * inverse.unsqueeze(2) * inverse.unsqueeze(1)
    total = cos2.sum(dim=(1, 2)) - m  # less the diagonal's m ones
    # independent rows: E[cos^2] = rho^2 + (1 - rho^2)^2 / D (within 3% down to 4 rows of 8 values)
    base = rho * rho + (1.0 - rho * rho) ** 2 / width
    excess = (total - pairs * base) / (1.0 - base)
    return torch.stack([excess.sum(), pairs.sum()])


def input_values(inputs: tuple[Any, ...], batch: int) -> int | None:
    """Values per sample of a module's first input, where it is a floating-point tensor with the
    batch first (``batch`` rows): an affine map of it varies in no more directions than that."""
    import torch

    x = inputs[0] if inputs else None
    if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.dim() == 0:
        return None
    return _directions(x, batch)


def bound_rows(layers: Sequence[Layer], args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """Set each row's ``bound`` from one batch of the model's inputs: the directions its samples can
    differ in at most, the values per sample of the model's inputs it is computed from
    (``Watched.inputs_of``: positions and keywords, from the traced pass), summed (``_directions``);
    where that is not known, of all the model's inputs. ``None`` where one has no such count (token
    ids differ by category) or none is known: no bound. A UNet's time embedding, computed from one
    timestep per sample, gets 1."""
    import torch

    keyed = [(k, x) for k, x in (*enumerate(args), *kwargs.items()) if isinstance(x, torch.Tensor)]
    floats = [x for _, x in keyed if x.is_floating_point() and x.dim()]
    batch = floats[0].shape[0] if floats else next((x.shape[0] for _, x in keyed if x.dim()), None)
    values = {k: _directions(x, batch) for k, x in keyed}
    known = [v for v in values.values() if v is not None]
    whole = sum(known) if known and len(known) == len(values) else None
    for layer in layers:
        keys = layer.watched.inputs_of
        sizes = [values.get(k) for k in keys] if keys else [None]
        layer.bound = whole if keys is None else None if None in sizes else sum(v for v in sizes if v is not None)


def _directions(x: torch.Tensor, batch: int | None) -> int | None:
    """How many directions the samples of one model input can differ in: a continuous tensor's
    values per sample; one integer per sample (a timestep, a label) 1; a 0-d tensor 0 (shared);
    ``None`` (no bound) for token ids and anything whose first dimension is not the batch."""
    if x.dim() == 0:
        return 0
    if x.shape[0] != batch:
        return None
    if x.is_floating_point():
        return x[0].numel()
    return 1 if x[0].numel() == 1 else None


def correlation_record(
    y: torch.Tensor, unit_dim: int, eps: float = 1.1920928955078125e-07, bound: int | None = None
) -> torch.Tensor | None:
    """One output's raw record: [sum over sample pairs of the excess squared cosine of their
    centered rows, pairs] and, for a (samples, tokens, units) output, the same over the token
    pairs of each of the first ``TOKEN_SEQUENCES`` sequences, each token centered on the batch's
    mean at its position. ``eps``: the output dtype's epsilon (what rounding can blur). ``bound``:
    the directions the samples can differ in at most, where fewer than a sample's values (the
    values of the module's input or the model's: ``input_values``, ``bound_rows``): independent rows of a
    2-feature input's 128-unit layer read 1/2, not 1/128; with one feature, 0. ``None`` with fewer
    than two samples or one value per sample. Three passes over the first samples (their squared
    norms, their mean, the centered copy) and one Gram product; a batch with a non-finite value in
    those samples adds nothing (the nonfinite rule reports it)."""
    import torch

    if y.dim() < 2 or y.shape[0] < 2 or y[0].numel() < 2:
        return None
    n = min(y.shape[0], SAMPLES)
    rows = y[:n].reshape(n, -1)
    squares = torch.einsum("nd,nd->n", rows, rows)
    centered = rows - rows.mean(dim=0, keepdim=True)
    gram = centered @ centered.t()
    directions = rows.shape[1] if bound is None else min(rows.shape[1], bound)
    parts = [_excess(gram.unsqueeze(0), squares.unsqueeze(0), eps, 1.0 / (n - 1), directions)]
    # what varies between samples: each value's variance across the samples, averaged over the values
    variance = gram.diagonal().sum() / ((n - 1) * rows.shape[1])
    tokens_part = torch.zeros(2, dtype=gram.dtype, device=gram.device)
    if y.dim() == 3 and unit_dim == 2 and y.shape[1] > 1 and y.shape[2] > 1:
        tokens, units = y.shape[1], y.shape[2]
        seqs = centered[:TOKEN_SEQUENCES].view(-1, tokens, units)
        token_squares = torch.einsum("ktu,ktu->kt", y[: seqs.shape[0]], y[: seqs.shape[0]])
        if tokens <= units:
            token_gram = seqs @ seqs.transpose(1, 2)
        else:  # many short tokens: the units x units Gram of the unit tokens has the same Frobenius norm
            spread = torch.einsum("ktu,ktu->kt", seqs, seqs)
            live = (token_squares > 0) & (spread > (RESOLUTION * eps) ** 2 * token_squares)
            unit = seqs * torch.where(live, spread.rsqrt(), torch.zeros_like(spread)).unsqueeze(2)
            small = unit.transpose(1, 2) @ unit
            m = live.sum(dim=1, dtype=small.dtype)
            base = 1.0 / units
            total = small.square().sum(dim=(1, 2)) - m
            pairs = m * (m - 1)
            tokens_part = torch.stack([((total - pairs * base) / (1.0 - base)).sum(), pairs.sum()])
            token_gram = None
        if token_gram is not None:
            tokens_part = _excess(token_gram, token_squares, eps, 0.0, units)
    finite = variance.isfinite().to(gram.dtype)
    # a non-finite value makes the whole record nan: that batch adds nothing
    return torch.cat([*parts, tokens_part, variance.reshape(1), finite.reshape(1)]).nan_to_num_(
        nan=0.0, posinf=0.0, neginf=0.0
    )


def fold(records: list[torch.Tensor], acc_dtype: torch.dtype) -> torch.Tensor:
    """Records of one layer -> their sums (``WIDTH`` values, as a record's)."""
    import torch

    return torch.stack(records).to(acc_dtype).sum(0)


def host_fold(record: list[float], sums: list[float]) -> None:
    """``fold`` for one record read to the host: add it into ``sums`` in place (at the end of a
    short run, cheaper than device ops per layer)."""
    for k, value in enumerate(record):
        sums[k] += value
