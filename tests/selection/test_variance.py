"""Variance reduction: the greedy gain against an explicit posterior, representative picks."""

from __future__ import annotations

import numpy as np
import pytest

from potlearn_ase.selection import get_selector
from potlearn_ase.selection.kernels import Kernel
from potlearn_ase.selection.variance import VarianceSelector, variance_reduction


def _factors(n: int = 14, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    X = np.random.default_rng(seed).normal(size=(n, 3))
    K = Kernel("rbf", 1.5)(X)
    lam, V = np.linalg.eigh(K)
    return V * np.sqrt(np.clip(lam, 0.0, None)), K


def _brute(K: np.ndarray, k: int, noise: float, w: np.ndarray, labelled: list[int]) -> list[int]:
    """Greedy picks from the explicit Gaussian-process posterior covariance."""
    S, picked = list(labelled), []
    for _ in range(k):
        if S:
            R = K - K[:, S] @ np.linalg.solve(K[np.ix_(S, S)] + noise * np.eye(len(S)), K[S])
        else:
            R = K.copy()
        gain = (w[:, None] * R**2).sum(0) / (np.diag(R) + noise)
        gain[S] = -np.inf
        j = int(np.argmax(gain))
        S.append(j)
        picked.append(j)
    return picked


@pytest.mark.parametrize("noise, labelled", [(0.01, []), (0.3, [2, 9])])
def test_greedy_picks_equal_those_of_the_explicit_posterior(noise, labelled):
    Phi, K = _factors()
    w = np.random.default_rng(5).uniform(0.1, 1.0, len(K))
    got = variance_reduction(Phi, 6, noise=noise, weights=w, labelled=labelled)
    assert got.tolist() == _brute(K, 6, noise, w, labelled)
    assert not set(got.tolist()) & set(labelled)


def _clusters(rng: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A dense cluster of 200 points and ten lone outliers far from it and from each other."""
    gen = np.random.default_rng(rng)
    dense = 0.3 * gen.normal(size=(200, 2))
    outliers = 6.0 * np.stack([np.cos(np.arange(10)), np.sin(np.arange(10))], axis=1)
    return np.concatenate([dense, outliers]), np.r_[np.zeros(200), np.ones(10)].astype(bool)


def test_first_picks_represent_the_dense_region_where_fps_takes_outliers():
    X, lone = _clusters()
    sel = VarianceSelector(Kernel("rbf", 1.0), standardize=False)
    picked = sel.select(X, 3, rng=0)
    assert not lone[picked].any()  # each outlier informs only itself
    # the first pick is central: close to the mean of the dense cluster
    assert np.linalg.norm(X[picked[0]] - X[:200].mean(0)) < 0.3
    assert lone[get_selector("fps", standardize=False).select(X, 3, rng=0)].sum() >= 2
    # once the dense region is explained, the outliers are what is left to reduce
    assert lone[sel.select(X, 12, rng=0)].sum() >= 6


def test_weights_steer_picks_and_labelled_neighbours_are_skipped():
    X, lone = _clusters(1)
    sel = VarianceSelector(Kernel("rbf", 1.0), standardize=False)
    Phi = sel.factors(X, rng=0)
    w = lone.astype(float)  # only the outliers count: their variance is what to reduce
    assert lone[variance_reduction(Phi, 5, weights=w)].all()
    twins = np.concatenate([X, X + 1e-6])  # every point twice
    picked = sel.select(twins, 20, rng=0, labelled=[0, 1, 2])
    assert len(set((picked % len(X)).tolist()) | {0, 1, 2}) == 23  # never a twin


def test_bad_arguments_are_named():
    Phi, _ = _factors()
    with pytest.raises(ValueError, match="noise"):
        variance_reduction(Phi, 2, noise=0.0)
    with pytest.raises(ValueError, match="weights"):
        variance_reduction(Phi, 2, weights=-np.ones(len(Phi)))
    with pytest.raises(ValueError, match="k must be"):
        variance_reduction(Phi, len(Phi), labelled=[0])
    assert get_selector("ted").name == "variance"
