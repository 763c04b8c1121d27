"""moons.py recreates numpy's legacy RandomState stream and scikit-learn's make_moons/split."""

from __future__ import annotations

import pytest

from probe.experiments import moons

np = pytest.importorskip("numpy")


@pytest.mark.parametrize("seed", [0, 9, 2**32 - 1])
def test_stream_matches_numpy_random_state(seed: int) -> None:
    ours = moons.LegacyRandomState(seed)
    theirs = np.random.RandomState(seed)
    assert [ours.double() for _ in range(5)] == theirs.random_sample(5).tolist()
    assert [ours.gauss() for _ in range(7)] == theirs.standard_normal(7).tolist()
    assert ours.permutation(257) == theirs.permutation(257).tolist()


def test_make_moons_matches_scikit_learn() -> None:
    datasets = pytest.importorskip("sklearn.datasets")
    for samples, noise, seed in [(600, 0.22, 9), (101, 0.1, 3)]:
        x, y = datasets.make_moons(n_samples=samples, noise=noise, random_state=seed)
        ours = moons.make_moons(samples, noise, seed)
        assert np.array_equal(x, np.array(ours.points))
        assert y.tolist() == list(ours.labels)


def test_split_matches_scikit_learn() -> None:
    selection = pytest.importorskip("sklearn.model_selection")
    labels = moons.make_moons(600, 0.22, 9).labels
    train, test = selection.train_test_split(np.arange(600), test_size=0.25, random_state=9, stratify=labels)
    assert moons.stratified_split(labels, 0.25, 9) == (train.tolist(), test.tolist())


def test_split_is_stratified_without_exact_proportions() -> None:
    labels = [0] * 7 + [1] * 4
    train, test = moons.stratified_split(labels, 0.3, seed=1)
    assert len(test) == 4 and sorted(train + test) == list(range(11))
    assert sum(labels[i] for i in test) in (1, 2)  # 4 * 4/11 = 1.45 of class 1


def test_seed_out_of_range() -> None:
    with pytest.raises(ValueError, match="seed"):
        moons.LegacyRandomState(-1)
