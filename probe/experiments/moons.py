"""The two-moons data set and its stratified split, drawn with numpy's legacy ``RandomState``.

The seed's Lab 2 draws its data with ``make_moons(600, noise=0.22, random_state=9)`` and
``train_test_split(..., test_size=0.25, random_state=9, stratify=y)``. Both draw from
``numpy.random.RandomState(seed)`` (numpy is a dependency), in the order scikit-learn draws, so
the seed's data set, split included, comes out point for point without scikit-learn.

The split matches scikit-learn's whenever each class splits exactly in proportion (as the seed's
300/300 classes do); otherwise the remaining samples go to the classes with the largest
remainders (scikit-learn breaks those ties at random).
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Moons:
    points: tuple[tuple[float, float], ...]
    labels: tuple[int, ...]


def make_moons(samples: int, noise: float, seed: int) -> Moons:
    """Two interleaving half circles, shuffled, plus N(0, noise^2) on each coordinate
    (scikit-learn's ``make_moons(samples, noise=noise, random_state=seed)``)."""
    import numpy as np

    rng = np.random.RandomState(seed)
    n_out = samples // 2
    n_in = samples - n_out
    t_out, t_in = np.linspace(0, np.pi, n_out), np.linspace(0, np.pi, n_in)
    x = np.concatenate([np.cos(t_out), 1 - np.cos(t_in)])
    y = np.concatenate([np.sin(t_out), 1 - np.sin(t_in) - 0.5])
    points = np.stack([x, y], axis=1)
    labels = np.concatenate([np.zeros(n_out, dtype=np.int64), np.ones(n_in, dtype=np.int64)])
    order = np.arange(samples)
    rng.shuffle(order)
    points, labels = points[order], labels[order]
    points += rng.normal(scale=noise, size=points.shape)
    return Moons(tuple((float(a), float(b)) for a, b in points), tuple(int(v) for v in labels))


def _proportional(counts: list[int], draws: int) -> list[int]:
    total = sum(counts)
    exact = [c * draws / total for c in counts]
    out = [math.floor(x) for x in exact]
    for i in sorted(range(len(counts)), key=lambda i: exact[i] - out[i], reverse=True)[: draws - sum(out)]:
        out[i] += 1
    return out


def stratified_split(
    labels: tuple[int, ...] | list[int], test_fraction: float, seed: int
) -> tuple[list[int], list[int]]:
    """(train indices, test indices) as ``train_test_split(..., stratify=labels)`` gives them."""
    import numpy as np

    n = len(labels)
    n_test = math.ceil(test_fraction * n)
    n_train = n - n_test
    classes = sorted(set(labels))
    members = [[i for i, label in enumerate(labels) if label == c] for c in classes]
    counts = [len(m) for m in members]
    n_i = _proportional(counts, n_train)
    t_i = _proportional([c - k for c, k in zip(counts, n_i, strict=True)], n_test)
    rng = np.random.RandomState(seed)
    train: list[int] = []
    test: list[int] = []
    for idx, k_train, k_test in zip(members, n_i, t_i, strict=True):
        perm = [idx[j] for j in rng.permutation(len(idx))]
        train.extend(perm[:k_train])
        test.extend(perm[k_train : k_train + k_test])
    return [int(i) for i in rng.permutation(train)], [int(i) for i in rng.permutation(test)]
