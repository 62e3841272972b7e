"""k-DPP: exact sampling, greedy MAP, inclusion probabilities, against brute force."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from potlearn_ase.selection.dpp import (
    DPPSelector,
    eigen,
    elementary_symmetric,
    greedy_map,
    inclusion_probabilities,
    sample_k_dpp,
)
from potlearn_ase.selection.kernels import Kernel


def _kernel(n: int = 6, d: int = 4, seed: int = 0) -> np.ndarray:
    X = np.random.default_rng(seed).normal(size=(n, d))
    return X @ X.T + 0.2 * np.eye(n)


def _brute(L: np.ndarray, k: int) -> dict[tuple[int, ...], float]:
    subsets = list(itertools.combinations(range(len(L)), k))
    p = np.array([np.linalg.det(L[np.ix_(s, s)]) for s in subsets])
    return dict(zip(subsets, p / p.sum()))


def test_elementary_symmetric_polynomials_match_brute_force_without_overflow():
    lam = np.array([0.5, 2.0, 3.0, 7.0])
    logE = elementary_symmetric(lam, 3)
    for k in range(4):
        for n in range(5):
            brute = sum(np.prod(c) for c in itertools.combinations(lam[:n], k))
            assert np.exp(logE[k, n]) == pytest.approx(brute)
    big = np.full(3000, 1e5)  # e_50 = 1e250 * C(3000, 50) ~ e^830: beyond float64
    logE = elementary_symmetric(big, 50)
    exact = 50 * np.log(1e5) + sum(np.log((3000 - j) / (j + 1)) for j in range(50))
    assert exact > np.log(np.finfo(float).max)
    assert logE[50, -1] == pytest.approx(exact, rel=1e-10)


@pytest.mark.parametrize("k", [2, 3])
def test_exact_sampling_frequencies_match_brute_force(k):
    L = _kernel()
    target = _brute(L, k)
    rng = np.random.default_rng(1)
    eig = eigen(L)
    n_draws = 6000
    counts = dict.fromkeys(target, 0)
    for _ in range(n_draws):
        s = sample_k_dpp(k, eig=eig, rng=rng)
        assert len(set(s.tolist())) == k
        counts[tuple(sorted(s.tolist()))] += 1
    freq = np.array([counts[s] / n_draws for s in target])
    p = np.array(list(target.values()))
    # binomial standard error: 4 sigma per subset
    assert np.all(np.abs(freq - p) <= 4 * np.sqrt(p * (1 - p) / n_draws) + 1e-3)


def test_sampling_from_factors_equals_sampling_from_the_matrix():
    Phi = np.random.default_rng(3).normal(size=(7, 3))
    target = _brute(Phi @ Phi.T, 2)
    rng = np.random.default_rng(4)
    counts = dict.fromkeys(target, 0)
    for _ in range(4000):
        counts[tuple(sorted(sample_k_dpp(2, factors=Phi, rng=rng).tolist()))] += 1
    freq = np.array([counts[s] / 4000 for s in target])
    p = np.array(list(target.values()))
    assert np.abs(freq - p).max() < 0.03
    with pytest.raises(ValueError, match="rank"):
        sample_k_dpp(4, factors=Phi, rng=0)  # rank 3


def test_inclusion_probabilities_match_brute_force_and_sum_to_k():
    L = _kernel(7, 5, seed=2)
    for k in (1, 3, 5):
        inc = inclusion_probabilities(k, L=L)
        brute = np.zeros(len(L))
        for s, p in _brute(L, k).items():
            brute[list(s)] += p
        np.testing.assert_allclose(inc, brute, atol=1e-10)
        assert inc.sum() == pytest.approx(k)
    Phi = np.random.default_rng(0).normal(size=(500, 40))
    assert inclusion_probabilities(25, factors=Phi).sum() == pytest.approx(25)


def test_greedy_map_takes_one_point_per_cluster_and_beats_random_volume():
    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0], [5.0, 0.0], [0.0, 5.0], [5.0, 5.0]])
    X = np.concatenate([c + 0.05 * rng.normal(size=(25, 2)) for c in centres])
    L = Kernel("rbf", lengthscale=1.0)(X)
    picked = greedy_map(4, L=L)
    assert sorted(int(i) // 25 for i in picked) == [0, 1, 2, 3]
    logdet = np.linalg.slogdet(L[np.ix_(picked, picked)])[1]
    rand = [np.linalg.slogdet(L[np.ix_(s, s)])[1]
            for s in (rng.choice(100, 4, replace=False) for _ in range(200))]
    assert logdet >= max(rand) - 1e-9
    # exclusions are honoured
    again = greedy_map(4, L=L, exclude=picked)
    assert not set(again.tolist()) & set(picked.tolist())


def test_selector_low_rank_path_spreads_picks_over_clusters():
    rng = np.random.default_rng(5)
    centres = 10 * rng.normal(size=(8, 6))
    X = np.concatenate([c + 0.1 * rng.normal(size=(300, 6)) for c in centres])
    sel = DPPSelector(exact_max=500, rank=60)
    for mode in ("sample", "map"):
        sel.mode = mode
        picked = sel.select(X, 8, rng=1)
        assert len(set(picked.tolist())) == 8
        # a random 8 of 2400 would repeat a cluster with probability ~0.996
        assert len({int(i) // 300 for i in picked}) >= 7


def test_quality_favours_high_quality_candidates():
    X = np.random.default_rng(0).normal(size=(60, 3))
    q = np.ones(60)
    q[:10] = 5.0
    picked = DPPSelector(mode="map").select(X, 5, quality=q)
    assert np.all(picked < 10)
