"""The two-moons data set and its stratified split, without numpy or scikit-learn.

The seed's Lab 2 draws its data with ``make_moons(600, noise=0.22, random_state=9)`` and
``train_test_split(..., test_size=0.25, random_state=9, stratify=y)``. Both use numpy's legacy
``RandomState``: a Mersenne Twister seeded with ``init_genrand``, shuffles by rejection-sampled
``random_interval`` and normals by the polar method (one cached value per pair). Python's
``random`` module runs the same Mersenne Twister (``getrandbits(32)`` is one output word and
``random()`` is numpy's 53-bit double), so setting its state recreates the stream exactly and the
seed's data set, split included, comes out point for point, in pure Python.

The split matches scikit-learn's whenever each class splits exactly in proportion (as the seed's
300/300 classes do); otherwise the remaining samples go to the classes with the largest
remainders (scikit-learn breaks those ties at random).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

_N = 624


class LegacyRandomState:
    """The parts of ``numpy.random.RandomState(seed)`` that make_moons and the split use."""

    def __init__(self, seed: int) -> None:
        if not 0 <= seed < 2**32:
            raise ValueError("seed must be between 0 and 2**32 - 1")
        state = [seed & 0xFFFFFFFF]
        for i in range(1, _N):
            prev = state[-1]
            state.append((1812433253 * (prev ^ (prev >> 30)) + i) & 0xFFFFFFFF)
        self._rng = random.Random()
        self._rng.setstate((3, (*state, _N), None))
        self._gauss: float | None = None

    def uint32(self) -> int:
        return self._rng.getrandbits(32)

    def double(self) -> float:
        return self._rng.random()

    def interval(self, maximum: int) -> int:
        """A uniform integer in [0, maximum] by masking and rejection (numpy's ``random_interval``)."""
        if maximum == 0:
            return 0
        mask = (1 << maximum.bit_length()) - 1
        while True:
            value = self.uint32() & mask
            if value <= maximum:
                return value

    def shuffle(self, items: list) -> None:
        """In place, Fisher-Yates from the end, as ``RandomState.shuffle`` on a 1-D array."""
        for i in range(len(items) - 1, 0, -1):
            j = self.interval(i)
            items[i], items[j] = items[j], items[i]

    def permutation(self, n: int) -> list[int]:
        items = list(range(n))
        self.shuffle(items)
        return items

    def gauss(self) -> float:
        """A standard normal by the polar method, caching the second value (``legacy_gauss``)."""
        if self._gauss is not None:
            value, self._gauss = self._gauss, None
            return value
        while True:
            x1 = 2.0 * self.double() - 1.0
            x2 = 2.0 * self.double() - 1.0
            r2 = x1 * x1 + x2 * x2
            if 0.0 < r2 < 1.0:
                break
        f = math.sqrt(-2.0 * math.log(r2) / r2)
        self._gauss = f * x1
        return f * x2


@dataclass(frozen=True)
class Moons:
    points: tuple[tuple[float, float], ...]
    labels: tuple[int, ...]


def _linspace_pi(n: int) -> list[float]:
    if n == 1:
        return [0.0]
    step = math.pi / (n - 1)
    return [i * step for i in range(n - 1)] + [math.pi]


def make_moons(samples: int, noise: float, seed: int) -> Moons:
    """Two interleaving half circles, shuffled, plus N(0, noise^2) on each coordinate."""
    n_out = samples // 2
    n_in = samples - n_out
    t_out, t_in = _linspace_pi(n_out), _linspace_pi(n_in)
    xs = [math.cos(t) for t in t_out] + [1 - math.cos(t) for t in t_in]
    ys = [math.sin(t) for t in t_out] + [1 - math.sin(t) - 0.5 for t in t_in]
    labels = [0] * n_out + [1] * n_in
    rng = LegacyRandomState(seed)
    order = list(range(samples))
    rng.shuffle(order)
    points = []
    for i in order:
        x = xs[i] + noise * rng.gauss()
        y = ys[i] + noise * rng.gauss()
        points.append((x, y))
    return Moons(tuple(points), tuple(labels[i] for i in order))


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
    n = len(labels)
    n_test = math.ceil(test_fraction * n)
    n_train = n - n_test
    classes = sorted(set(labels))
    members = [[i for i, label in enumerate(labels) if label == c] for c in classes]
    counts = [len(m) for m in members]
    n_i = _proportional(counts, n_train)
    t_i = _proportional([c - k for c, k in zip(counts, n_i, strict=True)], n_test)
    rng = LegacyRandomState(seed)
    train: list[int] = []
    test: list[int] = []
    for idx, k_train, k_test in zip(members, n_i, t_i, strict=True):
        perm = [idx[j] for j in rng.permutation(len(idx))]
        train.extend(perm[:k_train])
        test.extend(perm[k_train : k_train + k_test])
    rng.shuffle(train)
    rng.shuffle(test)
    return train, test
