"""moons.py draws scikit-learn's make_moons and stratified split from numpy's RandomState."""

from __future__ import annotations

import numpy as np
import pytest

from probe.experiments import moons

datasets = pytest.importorskip("sklearn.datasets")
selection = pytest.importorskip("sklearn.model_selection")


@pytest.mark.parametrize(
    ("samples", "noise", "seed"), [(600, 0.22, 9), (101, 0.1, 3), (8, 0.0, 0), (599, 0.5, 2**32 - 1)]
)
def test_make_moons_matches_scikit_learn(samples: int, noise: float, seed: int) -> None:
    x, y = datasets.make_moons(n_samples=samples, noise=noise, random_state=seed)
    ours = moons.make_moons(samples, noise, seed)
    assert np.array_equal(x, np.array(ours.points))
    assert y.tolist() == list(ours.labels)


@pytest.mark.parametrize(("samples", "fraction", "seed"), [(600, 0.25, 9), (100, 0.5, 1), (1000, 0.3, 7)])
def test_split_matches_scikit_learn(samples: int, fraction: float, seed: int) -> None:
    labels = moons.make_moons(samples, 0.22, seed).labels
    train, test = selection.train_test_split(np.arange(samples), test_size=fraction, random_state=seed, stratify=labels)
    assert moons.stratified_split(labels, fraction, seed) == (train.tolist(), test.tolist())


def test_split_is_stratified_without_exact_proportions() -> None:
    labels = [0] * 7 + [1] * 4
    train, test = moons.stratified_split(labels, 0.3, seed=1)
    assert len(test) == 4 and sorted(train + test) == list(range(11))
    assert sum(labels[i] for i in test) in (1, 2)  # 4 * 4/11 = 1.45 of class 1


def test_seed_out_of_range() -> None:
    with pytest.raises(ValueError, match=r"(?i)seed"):
        moons.make_moons(10, 0.1, -1)
