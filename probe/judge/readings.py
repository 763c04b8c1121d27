"""The values each health check reads from a report (``probe.judge.rules``): which rows a rule
judges (every row, layers of units, the signal path, the hidden rows that carry the signal) and
the per-row or whole-network values it compares with its threshold (the std as the network reads
it, the last/first std ratio, the gradient ratios, the tied units' spread, attention entropy, the
normalized weights' scale).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import TypeVar

from probe.judge.checks import Row, Values
from probe.judge.gradients import grad_ratios
from probe.judge.shrink import SHRINK_BUDGET, attention_shrink_steps
from probe.records import AttentionStats, LayerStats, Stats
from probe.spec import GateSpec

# collapse judges rows of at least this many units: in a narrower row a few directions are the
# row's width, not what depth did. A random N x k map spreads the squared singular values over
# (1 +- sqrt(k/N))^2, so an untrained 8-16-8-16-32 autoencoder reads 0.31 at its last layer, and a
# global average pool of 4 to 16 channels of noise images 0.14 to 1; 64 channels read under 0.12
COLLAPSE_MIN_UNITS = 64


Rows = Callable[[Stats], "tuple[LayerStats, ...]"]
T = TypeVar("T")


def all_rows(report: Stats) -> tuple[LayerStats, ...]:
    """Every row but one returning another row's output (``output_of``), judged at that row."""
    return tuple(x for x in report.layers if not x.output_of)


def unit_rows(report: Stats) -> tuple[LayerStats, ...]:
    """Layers of units: not lookup or parameter tables (an embedding's rows are not units)."""
    return tuple(x for x in all_rows(report) if x.role != "embedding")


def made_by(report: Stats, row: LayerStats) -> LayerStats:
    """The row that made ``row``'s output: itself, or the row whose output it returns (``output_of``)."""
    return next((x for x in report.layers if x.name == row.output_of), row) if row.output_of else row


def output_row(report: Stats) -> LayerStats:
    """The row that made the network's output: ``made_by`` the last row that is not cut from the
    loss (``detached``: a row that runs last but whose output nothing uses, as the residuals a
    ControlNet wrapped to return one of them drops), or the last row where every row is cut."""
    kept = [x for x in report.layers if not x.detached]
    return made_by(report, kept[-1] if kept else report.last)


def hidden_unit_rows(report: Stats) -> tuple[LayerStats, ...]:
    """``unit_rows`` but the output's (``output_dead_units`` judges it), and not a row cut from the
    loss (``detached``): no gradient reaches it because nothing it makes is used, which
    gradient_vanishing's warning says; its units are not dead for a reason of their own."""
    out = output_row(report)
    return tuple(x for x in unit_rows(report) if x is not out and not x.detached)


def output_dead_units(report: Stats) -> list[tuple[Row, float | None]]:
    """The dead fraction of the row that made the output (``output_row``): no module with weights
    runs after it, so its units are the network's outputs (up to pooling and reshaping). A dead
    output unit (a ReLU on the logits whose input is negative for every sample: SqueezeNet's
    classifier) is an output that never changes, a class never predicted; said as such, with the
    hidden layers' severity (docs/verdicts.md: some such networks learn, some do not)."""
    out = output_row(report)
    return [] if out.role == "embedding" or out.dead_units is None else [(out, out.dead_units)]


def signal_rows(report: Stats) -> tuple[LayerStats, ...]:
    return report.signal()


def field(name: str, rows: Rows = all_rows) -> Values:
    def values(report: Stats) -> list[tuple[Row, float | None]]:
        return [(x, None if getattr(x, name) is None else float(getattr(x, name))) for x in rows(report)]

    return values


def zero_products(report: Stats) -> list[tuple[Row, float | None]]:
    """Rows whose multiplying parameters are all exactly 0 with gradients exactly 0 while the row's
    output receives gradient (``zero_product``): the parameters' own units (LoRA's rank) output 0
    and receive nothing, dead for every sample, read as a dead fraction of 1."""
    return [(x, 1.0) for x in unit_rows(report) if x.zero_product and x.grad_std]  # (0: blocked downstream)


def tied(report: Stats) -> list[tuple[Row, float | None]]:
    """Each layer's ``tied_spread`` (units with the same weights and the same weight gradients: no
    step can tell them apart); reports without it (no backward, older collectors) read the forward
    ``unit_spread`` (units computing the same value)."""
    rows = unit_rows(report)
    if all(x.tied_spread is None for x in rows):
        return [(x, x.unit_spread) for x in rows]
    return [(x, x.tied_spread) for x in rows]


# a module whose routing carries less than this share of log(samples) about which sample it is
# attends (nearly) the same way for every sample (probe/measurement/attention.py): positions set its
# routing, not content. Measured on one-hot modules: 0.002-0.008 under T5's relative position bias
# (x-transformers), 0.58-1.0 for every content-saturated module of the zoo (N(0, 1) queries and
# keys), 0.43 for CPM-Ant's mix of both (docs/verdicts.md)
SHARED_ROUTING = 0.25


def shared_routing(a: AttentionStats) -> bool:
    return a.routing is not None and a.routing < SHARED_ROUTING


def attention_entropy(report: Stats) -> list[tuple[Row, float | None]]:
    return [(a, a.entropy) for a in report.attention]


def peaked(report: Stats) -> list[tuple[Row, float | None]]:
    """The network's least peaked attention module. One-hot attention passes no gradient to its
    queries and keys (the softmax's Jacobian diag(p) - p p^T is 0 at a one-hot p): training stalls
    when every module is so, and goes on, slower, while one still learns where to look. A module
    that attends the same way for every sample (``routing`` under ``SHARED_ROUTING``: a position
    bias) is a fixed token mixing the values learn through, like a convolution's: then nothing to judge.
    Nor where Adam's steps bring a module's logits back within ``SHRINK_BUDGET`` steps (its query
    and key weights small against the learning rate: wide unscaled attention, GPT-Neo's), as
    ``logit_scale`` reads a classifier's (not with ``gate.optimizer: sgd``, whose steps scale with
    the saturated softmax's small gradient)."""
    if not report.attention or any(shared_routing(a) for a in report.attention):
        return []
    if report.spec.gate.optimizer != "sgd" and any(
        attention_shrink_steps(report, a) <= SHRINK_BUDGET for a in report.attention
    ):
        return []
    best = max(report.attention, key=lambda a: a.entropy)
    return [(best, best.entropy)]


def hidden(name: str) -> Values:
    """A field of the hidden rows that carry the signal. Not judged, only shown: a head's output
    (``logit_scale`` judges the network's); embedding tables (role ``embedding``), whose rows
    depend on the ids alone (BERT's token-type embedding is the same vector for every token of one
    segment); and rows narrower than ``COLLAPSE_MIN_UNITS``."""

    def values(report: Stats) -> list[tuple[Row, float | None]]:
        # in a residual network, the stream: a branch's tokens all alike (attention averaging them
        # at init) are added to a stream that keeps them apart
        residual = any(x.role == "branch" for x in report.layers)
        return [
            (x, getattr(x, name))
            for x in all_rows(report)
            if x.kind != "output"
            and x.role not in ("embedding", "head")
            and (x.role == "stream" or not residual)
            and x.units >= COLLAPSE_MIN_UNITS
        ]

    return values


def input_free(report: Stats) -> list[tuple[Row, float | None]]:
    """1 at the first row when every row measured gives every sample the same nonzero values: the
    input reaches no row (zero weight matrices behind nonzero biases), so the first steps' weight
    gradients are input-independent rank-one updates; else nothing."""
    # rows exactly 0 are the scale rules' (vanishing); every other row measured must be input-free
    measured = [x for x in report.layers if (x.samples_identical or x.correlation is not None) and (x.std or x.mean)]
    if measured and all(x.samples_identical for x in measured):
        return [(measured[0], 1.0)]
    return []


def read_std(report: Stats) -> list[tuple[Row, float | None]]:
    """Each signal row's std as the network reads it: a row that only normalizations read
    (``norm_reader``: a pre-norm stream) at its norm's output, which divides its scale out but for
    the norm's eps; any other row at its own std. A norm whose scale is exactly 0 and moves on the
    first step (``zero_moving``: the zero-initialized last BatchNorm of a residual branch) outputs 0
    by design, whatever it reads: the row it reads is read at its own std."""
    return [(x, read.std) for x, read in _as_read(report)]


def _as_read(report: Stats) -> list[tuple[LayerStats, LayerStats]]:
    """Each signal row with the row the network reads it at (``read_std``): its norm reader, or itself.
    Not a row cut from the loss (``detached``: no gradient reaches it or its parameters; RT-DETR's
    encoder box head, whose N(0, 0.01) layers make reference points it detaches) unless every row
    is: what it computes is not trained through the output, and gradient_vanishing's warning says
    so."""
    by_name = {x.name: x for x in report.layers}
    out = []
    signal = report.signal()
    for x in signal if all(x.detached for x in signal) else [x for x in signal if not x.detached]:
        reader = by_name.get(x.norm_reader) if x.norm_reader else None
        out.append((x, reader if reader is not None and not reader.zero_moving else x))
    return out


def read_sample_std(report: Stats) -> list[tuple[Row, float | None]]:
    """Each signal row's ``sample_std``, the std of what varies between samples (what carries the
    input: a bias or a position's mean, the same for every sample, carries nothing), as the network
    reads it (``read_std``'s norm readers); not rows every sample gives the same values (a position
    table), nor rows where that part is over half the std (the std's own check reads them). None
    where Adam's first step outgrows most weights (their median rms under ``run.lr``,
    ``gate.optimizer`` not ``sgd``): it draws the signal anew, about ``lr`` per element."""
    if outgrown(report, report.spec.gate) is not None:
        return []
    out: list[tuple[Row, float | None]] = []
    for x, read in _as_read(report):
        # where what every sample shares is less than 3/4 of the variance, the std reads the same
        # within a factor 2: its own check judges it
        if read.sample_std is not None and not read.samples_identical and read.sample_std < read.std / 2:
            out.append((x, read.sample_std))
    return out


def std_ratio(report: Stats) -> list[tuple[Row, float | None]]:
    """The last signal row's std over the first's, each as the network reads it (``read_std``; rows
    cut from the loss are not the path's ends)."""
    signal = read_std(report)
    (_, first), (last, last_std) = signal[0], signal[-1]
    if first is None or last_std is None or first == 0 or math.isnan(first) or math.isnan(last_std):
        return []
    return [(last, last_std / first)]


def grads(least: bool, coherent: bool = False) -> Values:
    """Each signal row's gradient against the outputs' (``gradients.grad_ratios``)."""

    def values(report: Stats) -> list[tuple[Row, float | None]]:
        return [(x, v) for x, v in grad_ratios(report, least, coherent)]

    return values


# Adam's steps within which a weight must be able to move by its own size (``adam_turn``):
# the ground truth's training runs are 150-300 steps (docs/verdicts.md)
TURN_STEPS = 200


def carried_weight_rms(report: Stats) -> tuple[float, LayerStats] | None:
    """The median rms, weighted by size, of the weights Adam moves element by element and whose
    size the signal carries, with the row holding it: matrices with a fan-in and a gradient; not
    tables, nor a parametrization's gains (weight_norm's g: one number per row, moved by lr per
    step), nor scale-blind weights (the first step turns them, their size sets no signal's)."""
    return weighted_median(
        (x.weight_rms or math.inf, x.weight_size or 0, x)
        for x in report.layers
        if x.weight_size
        and x.weight_rms is not None
        and x.weight_scale is not None
        and x.role != "embedding"
        and x.weight_grad_norm is not None
        and not x.normalized
    )


def outgrown(report: Stats, gate: GateSpec, divisor: float = 1.0) -> tuple[float, LayerStats] | None:
    """``carried_weight_rms`` where it is under ``run.lr / divisor`` (Adam's first step, about
    ``lr`` per element, outgrows those weights); None otherwise, and under ``gate.optimizer: sgd``
    (its steps scale with the gradient) or without a learning rate."""
    lr = report.spec.run.lr
    found = carried_weight_rms(report) if gate.optimizer != "sgd" and lr > 0 else None
    return found if found is not None and found[0] < lr / divisor else None  # (nan: not under)


def weighted_median(items: Iterable[tuple[float, int, T]]) -> tuple[float, T] | None:
    """The value at the median of ``items`` (value, count, what holds it) weighted by their counts,
    with what holds it: above ``k`` exactly when more than half of the count reads over ``k``
    (ties keep the items' order). None for no items."""
    ranked = sorted(items, key=lambda item: item[0])
    half, seen = sum(count for _, count, _ in ranked) / 2, 0
    for value, count, holder in ranked:
        seen += count
        if seen >= half:
            return value, holder
    return None


def _weighted_median(
    report: Stats, value: Callable[[LayerStats], float], moved: bool = False
) -> list[tuple[Row, float | None]]:
    """``weighted_median`` over the network's weight elements of ``value``, at the layer that holds
    it: above ``k`` exactly when most of the weights read over ``k``. Embedding tables are not
    counted (their scale is the vectors' size, not a fan-in's); with ``moved``, only weights with a
    gradient (what the optimizer moves)."""
    rows = [
        x
        for x in report.layers
        if x.weight_size
        and x.weight_scale is not None
        and x.role != "embedding"
        and (not moved or x.weight_grad_norm is not None)
    ]
    found = weighted_median((value(x), x.weight_size or 0, x) for x in rows)
    return [] if found is None else [(found[1], found[0])]


def normalized_scale(report: Stats) -> list[tuple[Row, float | None]]:
    """The normalized weights' scale in He's units (``weight_scale``: rms / sqrt(2 / fan_in)),
    weighted median: one value for the network. SGD's steps turn a weight k times He's scale k^2
    times slower; not read with ``gate.optimizer: adam`` (``adam_turn`` is Adam's)."""
    if report.spec.gate.optimizer == "adam":
        return []
    return _weighted_median(report, lambda x: (x.weight_scale or 0.0) if x.normalized else 0.0)


def adam_turn(report: Stats) -> list[tuple[Row, float | None]]:
    """The weights' rms in Adam's units, ``rms / (lr * TURN_STEPS)``: over 1, Adam's steps of about
    ``lr`` per element cannot move the weight by its own size in ``TURN_STEPS`` steps, so it stays
    at its random draw for a training run. Every weight the optimizer moves counts, normalized or
    not (the norms that keep such a network's signal healthy hide its weights' scale singly, as
    the cosine sees, or only jointly: the gates, router and experts of a MoE block behind a
    sandwich norm; a large weight no norm hides breaks the forward rules first). A weight within
    ``gate.max_weight_scale / 2`` of He's scale counts 0: a variance rule's scale is one the
    learning rate was chosen for, whatever the fan-in. Weighted median over the weight elements
    with a gradient (embedding tables aside), one value for the network; not read with
    ``gate.optimizer: sgd``, without a learning rate, or where ``normalized_scale`` already fails
    (``gate.optimizer: any``)."""
    lr, gate = report.spec.run.lr, report.spec.gate
    if gate.optimizer == "sgd" or lr <= 0:
        return []
    if gate.optimizer == "any" and any((v or 0.0) > gate.max_weight_scale for _, v in normalized_scale(report)):
        return []  # the He reading fails already: one problem for the network
    floor = gate.max_weight_scale / 2

    def turn(x: LayerStats) -> float:
        large = (x.weight_scale or 0.0) > floor
        return (x.weight_rms or 0.0) / (lr * TURN_STEPS) if large else 0.0

    return _weighted_median(report, turn, moved=True)
