"""Kernel conditioning: the incremental posterior variance against the explicit one."""

from __future__ import annotations

import numpy as np
import pytest

from potlearn_ase.selection.kernels import ConditionalVariance


def _kernel(n: int, d: int, seed: int) -> np.ndarray:
    X = np.random.default_rng(seed).normal(size=(n, d))
    return X @ X.T + 0.2 * np.eye(n)


@pytest.mark.parametrize("noise", [0.0, 0.3])
def test_conditional_variance_is_the_gaussian_process_posterior_variance(noise):
    L = _kernel(n=9, d=5, seed=3)
    cv = ConditionalVariance(lambda j: L[:, j], np.diag(L), noise=noise)
    S: list[int] = []
    for j in (4, 0, 7, 2):
        cv.add(j)
        S.append(j)
        K_SS = L[np.ix_(S, S)] + noise * np.eye(len(S))
        direct = np.diag(L) - np.einsum("is,is->i", L[:, S], np.linalg.solve(K_SS, L[S]).T)
        assert cv.variance == pytest.approx(direct, abs=1e-10)
    assert cv.chosen == S and cv.included.sum() == 4
    if noise == 0.0:  # adding i multiplies det(L_S) by d_i
        i = 5
        ratio = np.linalg.det(L[np.ix_(S + [i], S + [i])]) / np.linalg.det(L[np.ix_(S, S)])
        assert cv.variance[i] == pytest.approx(ratio)
        assert np.allclose(cv.variance[S], 0.0, atol=1e-10)
    else:  # observed with noise: the variance left is noise-limited, not zero
        assert np.all(cv.variance[S] > 0)
