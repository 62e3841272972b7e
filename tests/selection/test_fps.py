"""Farthest-point sampling picks distinct, spread-out points, outliers first."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from potlearn_ase.selection import farthest_point_sampling, fps, structure_features


def clustered(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """200 points in a tight cluster at the origin plus 3 far-off outliers (indices returned)."""
    X = 0.1 * rng.standard_normal((203, 4))
    outliers = np.array([17, 90, 150])
    X[17] += [10.0, 0, 0, 0]
    X[90] += [0, -12.0, 0, 0]
    X[150] += [0, 0, 0, 9.0]
    return X, outliers


def test_picks_k_distinct_indices():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((50, 3))
    idx = farthest_point_sampling(X, 20, rng=1)
    assert idx.shape == (20,) and idx.dtype == np.int64
    assert len(set(idx.tolist())) == 20
    assert idx.min() >= 0 and idx.max() < 50
    assert set(farthest_point_sampling(X, 50, rng=1).tolist()) == set(range(50))
    assert farthest_point_sampling(X, 0, rng=1).shape == (0,)


def test_outliers_of_a_clustered_set_come_first():
    X, outliers = clustered(np.random.default_rng(3))
    for seed in range(5):
        idx = farthest_point_sampling(X, 4, rng=seed)
        first = idx[0]
        # whatever the random start, the outliers are the next picks (all three within the
        # first four; if the start is in the cluster, the three after it)
        assert set(outliers) <= set(idx.tolist())
        if first not in outliers:
            assert set(idx[1:].tolist()) == set(outliers.tolist())


def test_start_and_greedy_order_on_a_line():
    X = np.array([0.0, 1.0, 2.0, 3.0, 10.0])
    # from 0 the farthest point is 10 (index 4); distances to the nearer of {0, 10} are then
    # 1, 2 and 3 for the points 1, 2, 3, so 3 (index 3) comes next
    assert farthest_point_sampling(X, 3, start=0).tolist() == [0, 4, 3]
    with pytest.raises(ValueError, match="start"):
        farthest_point_sampling(X, 2, start=7)


def test_duplicates_do_not_repeat_indices():
    X = np.zeros((5, 2))
    X[4] = 1.0
    idx = farthest_point_sampling(X, 5, start=0)
    assert idx.tolist()[:2] == [0, 4] and sorted(idx.tolist()) == [0, 1, 2, 3, 4]


def test_reproducible_for_a_seed_and_alias_matches():
    X = np.random.default_rng(5).standard_normal((100, 6))
    a = farthest_point_sampling(X, 15, rng=np.random.default_rng(42))
    b = fps.select(X, 15, rng=np.random.default_rng(42))
    assert a.tolist() == b.tolist()
    starts = {int(farthest_point_sampling(X, 1, rng=s)[0]) for s in range(20)}
    assert len(starts) > 1  # the first point really is random


def test_other_metrics_and_bad_input():
    X = np.array([[1.0, 0.0], [2.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    # cosine distance ignores length: [2, 0] is parallel to [1, 0] and picked last
    idx = farthest_point_sampling(X, 4, start=0, metric="cosine")
    assert idx.tolist()[:2] == [0, 2] and idx[-1] == 1
    with pytest.raises(ValueError, match="k must be"):
        farthest_point_sampling(X, 5)
    X[2, 1] = np.nan
    with pytest.raises(ValueError, match="point 2"):
        farthest_point_sampling(X, 2)


def test_structure_features_mean_and_sum():
    per_atom = np.array([[1.0, 0.0], [3.0, 2.0], [5.0, 5.0], [0.0, 1.0], [0.0, 3.0]])
    batch = np.array([0, 0, 1, 2, 2])
    np.testing.assert_allclose(
        structure_features(per_atom, batch), [[2.0, 1.0], [5.0, 5.0], [0.0, 2.0]]
    )
    np.testing.assert_allclose(
        structure_features(torch.tensor(per_atom), torch.tensor(batch), reduce="sum"),
        [[4.0, 2.0], [5.0, 5.0], [0.0, 4.0]],
    )
    with pytest.raises(ValueError, match="structure 1 has no atoms"):
        structure_features(per_atom, np.array([0, 0, 2, 2, 2]))
    with pytest.raises(ValueError, match="reduce"):
        structure_features(per_atom, batch, reduce="max")
