"""The ``rank_one_step`` rule: Adam's first step turns an output layer far below ``lr`` into a
rank-one matrix, and the logits can then move along one direction only.

Mechanism (docs/verdicts.md, "rank_one_step"): Adam's first update of a weight is
``-lr * sign(G)``, ``G`` its gradient, whatever ``G``'s size. A weight of rms ``r`` and that update
(rms ``lr``) are independent, so after the step the weight's energy per element is
``r^2 + lr^2``, of which ``lr^2 * s`` lies on the update's top singular direction, ``s`` the share of
``sign(G)`` there beyond what independent signs put there (``excess_share``). Where that single
direction holds more than half the weight after one step,

    lr^2 * s / (r^2 + lr^2) > 1 / 2,

every input moves the output layer's logits along one line: whichever class a sample's label
is, the step pushes all of them the same way (and the layers below receive one direction back).
The gradient stays rank one while the layer's input is nearly the same for every sample (what
made ``sign(G)`` rank one: ``G = sum_b delta_b x_b^T`` is ``(sum_b delta_b) c^T`` for ``x_b`` near a
common ``c``, a constant bias or post-ReLU features averaged over positions), and Adam adds
``lr`` per element per step along it. A weight at its usual scale (``r`` tens of times ``lr``) keeps
its random directions; the same rank-one gradient only perturbs it.

Judged where the network's output can be logits, as ``logit_scale`` reads them
(``logits.loss_ratios``): the network's output row, made by a module with a weight (not a
normalization, an activation or a lookup table), with three or more units (two classes need one
direction). A rank-one layer with another layer after it was not seen to stop training:
transformers' ViT with every weight x 1e-3 trains through its pooler (a rank-one first step,
share 1.0) and the classifier after it (0.55 of its default's gain).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from probe.judge.checks import Check, Rule
from probe.judge.mechanisms import output_layer
from probe.records import Stats

if TYPE_CHECKING:
    from probe.judge.checks import Row

MIN_CLASSES = 3  # two classes need one direction of the logits: a rank-one head separates them


def random_share(rows: int, cols: int) -> float:
    """The top singular direction's share of an ``rows x cols`` matrix of independent signs:
    ``sigma_1^2 ~ (sqrt(rows) + sqrt(cols))^2`` (Marchenko-Pastur's edge) over ``rows * cols``."""
    return min(1.0, (math.sqrt(rows) + math.sqrt(cols)) ** 2 / (rows * cols))


def excess_share(share: float, rows: int, cols: int) -> float:
    """``share`` beyond independent signs' (``random_share``), as a fraction of what is left to 1:
    0 for independent signs, 1 for a rank-one sign matrix."""
    base = random_share(rows, cols)
    return max(0.0, (share - base) / (1.0 - base)) if base < 1.0 else 0.0


def after_first_step(share: float, rms: float, lr: float) -> float:
    """The share of a weight's energy on one direction after Adam's first step:
    ``lr^2 * share / (rms^2 + lr^2)``."""
    return lr * lr * share / (rms * rms + lr * lr)


def rank_one_rows(report: Stats) -> list[tuple[Row, float | None]]:
    """The network output's maker, where its output can be logits of three or more classes: its
    weight's share on one direction after Adam's first step at ``run.lr`` (``after_first_step`` of
    the first update's ``excess_share``). Not with ``gate.optimizer: sgd``: SGD's first step is
    ``lr * G``, as small as the gradient, not ``lr`` per element."""
    lr = report.spec.run.lr
    if lr <= 0 or not report.layers or report.spec.gate.optimizer == "sgd":  # the mechanism is Adam's
        return []
    x = output_layer(report)
    share, rms, size = x.update_rank_share, x.weight_rms, x.weight_size
    if share is None or rms is None or not size or x.units < MIN_CLASSES:
        return []
    if x.role in ("norm", "activation", "embedding"):
        return []
    excess = excess_share(share, x.units, max(1, size // x.units))
    return [(x, after_first_step(excess, rms, lr))]


RANK_ONE = Rule(
    "rank_one_step",
    "Adam's first step leaves an output layer far below lr on one direction",
    (
        Check(
            "max_rank_one_share",
            "output weight's share on one direction after Adam's first step",
            rank_one_rows,
            below=False,
            fraction=True,
        ),
    ),
)
