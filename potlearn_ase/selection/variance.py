"""Variance reduction: label the structures that most reduce the uncertainty left over the pool.

Transductive experimental design (Yu, Bi & Tresp 2006). A Gaussian process with kernel ``K``
on the structure features stands in for "what the labels of one structure tell about
another". Labelling structure ``j`` (observed with noise variance ``noise``) lowers the
posterior variance summed over the pool by

    gain_j = sum_i w_i R_ij^2 / (R_jj + noise),

where ``R`` is the posterior covariance given everything labelled so far and ``w_i`` weights
pool structure ``i`` (for example by how uncertain the model is there). Unlike volume-based
rules (farthest points, the mode of a DPP), which favour the edges of the feature
distribution, the gain counts every pool structure a label informs: a typical structure in a
dense region informs many, a lone outlier only itself. Picks are greedy, each one conditioning
the posterior on the last.

With low-rank factors ``K ~= Phi Phi^T`` (Nystrom, ``r`` columns) the posterior covariance is
``R = Phi M Phi^T`` with ``M = (I + Phi_S^T Phi_S / noise)^-1``; one pick costs ``O(n r)``
after an ``O(n r^2)`` set-up, so 20 000 candidates are cheap.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from potlearn_ase.selection.kernels import Kernel, as_features, check_k, prepare_features

__all__ = ["VarianceSelector", "variance_reduction"]


def variance_reduction(
    factors: ArrayLike,
    k: int,
    *,
    noise: float = 0.01,
    weights: ArrayLike | None = None,
    labelled: ArrayLike | None = None,
    candidates: ArrayLike | None = None,
) -> np.ndarray:
    """Greedily pick ``k`` rows of ``factors`` that most reduce the weighted pool variance.

    Parameters
    ----------
    factors : array_like, shape (n, r)
        ``Phi`` with ``K ~= Phi Phi^T`` over the pool.
    k : int
        Picks.
    noise : float
        Observation noise variance relative to the kernel's unit prior variance: small values
        let one label explain its neighbourhood fully, larger ones leave room for more labels
        in dense regions.
    weights : array_like, shape (n,), optional
        Non-negative weight of each pool structure in the summed variance (default 1).
    labelled : array_like of int, optional
        Structures already labelled: the posterior is conditioned on them and they are never
        picked.
    candidates : array_like of int, optional
        Structures that may be picked (default: every one not labelled).

    Returns
    -------
    numpy.ndarray of int, shape (k,)
        Pool indices in the order picked.
    """
    Phi = as_features(factors)
    n, r = Phi.shape
    if not noise > 0:
        raise ValueError(f"noise must be positive, got {noise}")
    w = np.ones(n) if weights is None else np.asarray(weights, dtype=float).ravel()
    if w.shape != (n,) or np.any(w < 0) or not np.all(np.isfinite(w)):
        raise ValueError(f"weights must be {n} finite non-negative numbers")
    done = np.zeros(n, dtype=bool)
    if labelled is not None:
        done[np.asarray(labelled, dtype=np.int64)] = True
    if candidates is None:
        cand = np.flatnonzero(~done)
    else:
        cand = np.asarray(candidates, dtype=np.int64)
        cand = cand[~done[cand]]
    k = check_k(k, len(cand))
    if k == 0:
        return np.zeros(0, dtype=np.int64)
    PS = Phi[done]
    M = np.linalg.inv(np.eye(r) + PS.T @ PS / noise)  # posterior covariance of the weights
    G = (Phi * w[:, None]).T @ Phi  # sum_i w_i phi_i phi_i^T
    Pc = Phi[cand]
    PM = Pc @ M  # rows m_j = M phi_j
    PMG = PM @ G
    open_ = np.ones(len(cand), dtype=bool)
    picked = []
    for _ in range(k):
        a = np.einsum("ij,ij->i", PMG, PM)  # sum_i w_i R_ij^2
        b = np.einsum("ij,ij->i", PM, Pc)  # R_jj
        gain = np.where(open_, a / (b + noise), -np.inf)
        j = int(np.argmax(gain))
        open_[j] = False
        picked.append(int(cand[j]))
        # condition on j: M <- M - m m^T / (noise + phi_j^T m), applied to the cached products
        m, den = PM[j].copy(), noise + b[j]
        u = Pc @ m
        PM -= np.outer(u, m) / den
        PMG -= np.outer(u, G @ m) / den
    return np.array(picked, dtype=np.int64)


class VarianceSelector:
    """Structures whose labels most reduce the kernel variance summed over the pool.

    Parameters
    ----------
    kernel : Kernel or str
        Similarity of standardised features (default RBF, median length scale).
    rank : int
        Nystrom landmarks of the low-rank kernel (all candidates when there are fewer).
    noise : float
        Observation noise of the Gaussian process (see :func:`variance_reduction`).
    standardize : bool
        Standardise feature columns before the kernel.
    """

    name = "variance"

    def __init__(
        self,
        kernel: Kernel | str = "rbf",
        *,
        rank: int = 300,
        noise: float = 0.01,
        standardize: bool = True,
    ):
        self.kernel = Kernel(kernel) if isinstance(kernel, str) else kernel
        self.rank = int(rank)
        self.noise = float(noise)
        self.standardize = standardize

    def __repr__(self) -> str:
        return f"VarianceSelector(kernel={self.kernel!r}, rank={self.rank}, noise={self.noise})"

    def factors(
        self, features: ArrayLike, *, rng: np.random.Generator | int | None = None
    ) -> np.ndarray:
        """Low-rank kernel factors ``Phi`` of the (standardised) features."""
        X = prepare_features(features, standardize_columns=self.standardize)
        return self.kernel.resolved(X).low_rank(X, self.rank, rng=rng)

    def select(
        self,
        features: ArrayLike,
        k: int,
        *,
        rng: np.random.Generator | int | None = None,
        weights: ArrayLike | None = None,
        labelled: ArrayLike | None = None,
    ) -> np.ndarray:
        """Indices of ``k`` structures (``rng`` draws the Nystrom landmarks)."""
        X = as_features(features)
        return variance_reduction(
            self.factors(X, rng=rng), k, noise=self.noise, weights=weights, labelled=labelled
        )
