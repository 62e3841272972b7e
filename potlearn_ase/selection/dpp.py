"""k-determinantal point processes: diverse subsets drawn with probability ``det(L_Y)``.

A k-DPP over ``n`` candidates with L-ensemble kernel ``L`` (positive semi-definite) draws a
subset ``Y`` of size ``k`` with probability ``det(L_Y) / e_k(lambda)``, where ``e_k`` is the
``k``-th elementary symmetric polynomial of the eigenvalues of ``L`` (Kulesza & Taskar 2012,
"Determinantal point processes for machine learning", sec. 5.2). Similar candidates span
little volume, so they are rarely drawn together.

Three operations, all from the eigendecomposition of ``L`` (or of the ``r x r`` dual kernel
``Phi^T Phi`` when ``L = Phi Phi^T`` is low rank):

* :func:`sample_k_dpp` - exact sampling: choose ``k`` eigenvectors (Algorithm 8 of Kulesza &
  Taskar), then sample the elementary DPP they span with the chain rule;
* :func:`greedy_map` - the approximate mode ``argmax det(L_Y)``, by greedy incremental
  Cholesky (Chen, Zhang & Zhou 2018), ``O(n k r)`` for factors of rank ``r``;
* :func:`inclusion_probabilities` - ``P(i in Y)``, which sum to ``k``.

Elementary symmetric polynomials are accumulated as logarithms, so they neither overflow nor
underflow for thousands of eigenvalues.

:class:`DPPSelector` applies these to structure features through a kernel of
:mod:`~potlearn_ase.selection.kernels`, exactly up to ``exact_max`` candidates and through
low-rank factors beyond.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from potlearn_ase.selection.kernels import (
    ConditionalVariance,
    Kernel,
    as_features,
    check_k,
    prepare_features,
)

__all__ = [
    "DPPSelector",
    "DualEigen",
    "eigen",
    "elementary_symmetric",
    "greedy_map",
    "inclusion_probabilities",
    "sample_k_dpp",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DualEigen:
    """Eigendecomposition ``L = V diag(lam) V^T`` restricted to ``lam > 0``.

    Attributes
    ----------
    values : numpy.ndarray, shape (r,)
        Positive eigenvalues.
    vectors : numpy.ndarray, shape (n, r)
        Orthonormal eigenvectors of ``L`` (one column each).
    """

    values: np.ndarray
    vectors: np.ndarray


def eigen(
    L: ArrayLike | None = None, *, factors: ArrayLike | None = None, rtol: float = 1e-10
) -> DualEigen:
    """Eigendecomposition of an L-ensemble given as a matrix or as factors ``L = Phi Phi^T``.

    With ``factors`` of shape ``(n, r)`` only the ``r x r`` dual kernel ``Phi^T Phi`` is
    decomposed: its eigenvectors ``w`` give those of ``L`` as ``Phi w / sqrt(lam)``.
    """
    if (L is None) == (factors is None):
        raise ValueError("give exactly one of L and factors")
    if L is not None:
        M = np.asarray(L, dtype=float)
        if M.ndim != 2 or M.shape[0] != M.shape[1]:
            raise ValueError(f"L must be a square matrix, got shape {M.shape}")
        if not np.allclose(M, M.T, atol=1e-10 * max(1.0, float(np.abs(M).max(initial=0.0)))):
            raise ValueError("L must be symmetric")
        lam, V = np.linalg.eigh(0.5 * (M + M.T))
    else:
        Phi = np.asarray(factors, dtype=float)
        if Phi.ndim != 2:
            raise ValueError(f"factors must have shape (n, r), got {Phi.shape}")
        lam, W = np.linalg.eigh(Phi.T @ Phi)
        keep = lam > rtol * max(float(lam.max(initial=0.0)), 1e-300)
        lam, W = lam[keep], W[:, keep]
        V = (Phi @ W) / np.sqrt(lam)
    keep = lam > rtol * max(float(lam.max(initial=0.0)), 1e-300)
    return DualEigen(lam[keep], V[:, keep])


def elementary_symmetric(values: ArrayLike, k: int) -> np.ndarray:
    """Logarithms of the elementary symmetric polynomials of the first ``n`` values.

    Parameters
    ----------
    values : array_like, shape (N,)
        Positive numbers (eigenvalues).
    k : int
        Highest degree.

    Returns
    -------
    numpy.ndarray, shape (k + 1, N + 1)
        ``logE[l, n] = log e_l(values[:n])`` (``-inf`` where ``e_l = 0``, i.e. ``l > n``).
        Working with logarithms keeps every entry exact to rounding: a scaled table would
        flush small entries to zero that later dominate.
    """
    log_lam = np.log(np.asarray(values, dtype=float).ravel())
    N = log_lam.size
    logE = np.full((k + 1, N + 1), -np.inf)
    logE[0, :] = 0.0
    for n in range(1, N + 1):
        logE[1:, n] = np.logaddexp(logE[1:, n - 1], log_lam[n - 1] + logE[:-1, n - 1])
    return logE


def _choose_eigenvectors(lam: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Algorithm 8 of Kulesza & Taskar: which ``k`` eigenvectors span the elementary DPP."""
    logE = elementary_symmetric(lam, k)
    log_lam = np.log(lam)
    chosen = []
    remaining = k
    for n in range(lam.size, 0, -1):
        if remaining == 0:
            break
        if n == remaining:
            chosen.extend(range(n - 1, -1, -1))
            break
        # P(take n) = lam_n e_{l-1}(lam[:n-1]) / e_l(lam[:n])
        log_p = log_lam[n - 1] + logE[remaining - 1, n - 1] - logE[remaining, n]
        if rng.random() < np.exp(log_p):
            chosen.append(n - 1)
            remaining -= 1
    return np.array(sorted(chosen), dtype=np.int64)


def _sequential(
    row: Callable[[int], np.ndarray],
    diag: np.ndarray,
    k: int,
    *,
    rng: np.random.Generator | None,
    exclude: np.ndarray | None = None,
) -> np.ndarray:
    """Chain rule over ``det`` of a PSD kernel by incremental Cholesky.

    At each step the residual variance ``d_i = K_ii - K_iS K_SS^-1 K_Si`` is kept for every
    candidate; the next point is drawn with probability ``d_i / sum(d)`` (``rng`` given: exact
    sampling of a projection DPP) or taken as ``argmax d_i`` (``rng`` None: greedy MAP).
    """
    n = diag.size
    cv = ConditionalVariance(row, diag)
    blocked = np.zeros(n, dtype=bool)
    if exclude is not None:
        blocked[exclude] = True
    for t in range(k):
        d_pos = np.where(blocked, 0.0, np.clip(cv.variance, 0.0, None))
        total = d_pos.sum()
        if total <= 1e-12 * max(1.0, float(diag.max(initial=0.0))):
            # no volume left (rank exhausted): take the remaining points in index order
            rest = np.flatnonzero(~blocked)
            return np.array(cv.chosen + [int(i) for i in rest[: k - t]], dtype=np.int64)
        if rng is None:
            j = int(np.argmax(d_pos))
        else:
            j = int(rng.choice(n, p=d_pos / total))
        cv.add(j)
        blocked[j] = True
    return np.array(cv.chosen, dtype=np.int64)


def sample_k_dpp(
    k: int,
    *,
    L: ArrayLike | None = None,
    factors: ArrayLike | None = None,
    eig: DualEigen | None = None,
    rng: np.random.Generator | int | None = None,
) -> np.ndarray:
    """An exact draw of a k-DPP (Kulesza & Taskar, Algorithms 8 and 1).

    Parameters
    ----------
    k : int
        Subset size; at most the rank of ``L``.
    L, factors, eig
        The L-ensemble as a matrix, as factors ``Phi`` with ``L = Phi Phi^T``, or already
        decomposed (exactly one of the three).
    rng : numpy Generator or seed

    Returns
    -------
    numpy.ndarray of int, shape (k,)
        Distinct indices, in the order they were drawn.
    """
    rng = np.random.default_rng(rng)
    if eig is None:
        eig = eigen(L, factors=factors)
    n = eig.vectors.shape[0]
    k = check_k(k, n)
    if k > eig.values.size:
        raise ValueError(f"k={k} exceeds the rank {eig.values.size} of the kernel")
    if k == 0:
        return np.zeros(0, dtype=np.int64)
    V = eig.vectors[:, _choose_eigenvectors(eig.values, k, rng)]
    # elementary DPP with projection kernel V V^T, sampled by the chain rule
    return _sequential(lambda j: V @ V[j], np.einsum("ij,ij->i", V, V), k, rng=rng)


def greedy_map(
    k: int,
    *,
    L: ArrayLike | None = None,
    factors: ArrayLike | None = None,
    exclude: ArrayLike | None = None,
) -> np.ndarray:
    """Greedy approximation of ``argmax_{|Y|=k} det(L_Y)`` (the mode of the k-DPP).

    Each step adds the candidate whose conditional variance given the chosen ones is largest,
    i.e. the one that multiplies ``det(L_Y)`` most (Chen, Zhang & Zhou 2018). When the rank
    of ``L`` is exhausted, the remaining picks follow index order.

    Parameters
    ----------
    exclude : array_like of int, optional
        Candidates never to pick.
    """
    if (L is None) == (factors is None):
        raise ValueError("give exactly one of L and factors")
    ex = None if exclude is None else np.asarray(exclude, dtype=np.int64)
    if L is not None:
        M = np.asarray(L, dtype=float)
        k = check_k(k, M.shape[0] - (0 if ex is None else len(np.unique(ex))))
        return _sequential(lambda j: M[j], np.diag(M).copy(), k, rng=None, exclude=ex)
    Phi = np.asarray(factors, dtype=float)
    k = check_k(k, Phi.shape[0] - (0 if ex is None else len(np.unique(ex))))
    return _sequential(
        lambda j: Phi @ Phi[j], np.einsum("ij,ij->i", Phi, Phi), k, rng=None, exclude=ex
    )


def inclusion_probabilities(
    k: int,
    *,
    L: ArrayLike | None = None,
    factors: ArrayLike | None = None,
    eig: DualEigen | None = None,
) -> np.ndarray:
    """``P(i in Y)`` for a k-DPP; the probabilities sum to ``k``.

    ``P(i in Y) = sum_n p_n V_in^2`` where ``p_n = lam_n e_{k-1}(lam without n) / e_k(lam)``
    is the probability that eigenvector ``n`` spans the draw. ``e_{k-1}(lam without n)`` is
    assembled from prefix and suffix tables of positive terms (no cancellation).
    """
    if eig is None:
        eig = eigen(L, factors=factors)
    lam = eig.values
    N = lam.size
    k = check_k(k, eig.vectors.shape[0])
    if k > N:
        raise ValueError(f"k={k} exceeds the rank {N} of the kernel")
    if k == 0:
        return np.zeros(eig.vectors.shape[0])
    logP = elementary_symmetric(lam, k)  # prefixes: log e_l(lam[:n])
    logS = elementary_symmetric(lam[::-1], k)  # suffixes: log e_l(lam[N-m:])
    p = np.empty(N)
    for n in range(N):
        # e_{k-1}(lam without n) = sum_j e_j(lam[:n]) e_{k-1-j}(lam[n+1:])
        terms = logP[:k, n] + logS[:k, N - n - 1][::-1]
        p[n] = np.exp(np.log(lam[n]) + np.logaddexp.reduce(terms) - logP[k, N])
    return (eig.vectors**2) @ p


class DPPSelector:
    """Diverse structures by a k-DPP over a kernel on their features.

    Parameters
    ----------
    kernel : Kernel or str
        Similarity of standardised features (default RBF, median length scale).
    mode : {"sample", "map"}
        An exact random draw, or the greedy mode (deterministic).
    exact_max : int
        Up to this many candidates the full ``n x n`` kernel is used; beyond, low-rank
        factors of ``rank`` columns (the DPP then lives on that approximation).
    rank : int
        Landmarks (Nystrom) or random features of the low-rank kernel.
    low_rank : {"nystrom", "fourier"}
        Low-rank method (see :meth:`Kernel.low_rank`).
    standardize : bool
        Standardise feature columns before the kernel.
    """

    name = "dpp"

    def __init__(
        self,
        kernel: Kernel | str = "rbf",
        *,
        mode: str = "sample",
        exact_max: int = 1500,
        rank: int = 300,
        low_rank: str = "nystrom",
        standardize: bool = True,
    ):
        if mode not in ("sample", "map"):
            raise ValueError(f"mode must be 'sample' or 'map', got {mode!r}")
        self.kernel = Kernel(kernel) if isinstance(kernel, str) else kernel
        self.mode = mode
        self.exact_max = int(exact_max)
        self.rank = int(rank)
        self.low_rank = low_rank
        self.standardize = standardize

    def __repr__(self) -> str:
        return f"DPPSelector(kernel={self.kernel!r}, mode={self.mode!r}, rank={self.rank})"

    def ensemble(
        self,
        features: ArrayLike,
        *,
        quality: ArrayLike | None = None,
        rng: np.random.Generator | int | None = None,
    ) -> tuple[np.ndarray | None, np.ndarray | None]:
        """``(L, None)`` for small pools or ``(None, Phi)`` with ``L = Phi Phi^T``.

        ``quality`` ``q_i >= 0`` weights the kernel into ``L_ij = q_i S_ij q_j``, so that
        high-quality (e.g. uncertain) candidates are favoured while similar ones still repel.
        """
        X = prepare_features(features, standardize_columns=self.standardize)
        kern = self.kernel.resolved(X)
        q = None
        if quality is not None:
            q = np.asarray(quality, dtype=float).ravel()
            if q.shape != (len(X),) or np.any(q < 0) or not np.all(np.isfinite(q)):
                raise ValueError(f"quality must be {len(X)} finite non-negative numbers")
        if len(X) <= self.exact_max:
            L = kern(X)
            if q is not None:
                L = q[:, None] * L * q[None, :]
            return L, None
        Phi = kern.low_rank(X, self.rank, rng=rng, method=self.low_rank)
        if q is not None:
            Phi = q[:, None] * Phi
        return None, Phi

    def select(
        self,
        features: ArrayLike,
        k: int,
        *,
        rng: np.random.Generator | int | None = None,
        quality: ArrayLike | None = None,
    ) -> np.ndarray:
        """Indices of ``k`` diverse candidates.

        When ``k`` exceeds the numerical rank of the kernel (many duplicates, or a low-rank
        approximation of rank below ``k``), a draw of rank size is completed by uniformly
        random picks among the remaining candidates (with ``mode="map"``, greedily).
        """
        X = as_features(features)
        k = check_k(k, len(X))
        if k == 0:
            return np.zeros(0, dtype=np.int64)
        rng = np.random.default_rng(rng)
        L, Phi = self.ensemble(X, quality=quality, rng=rng)
        if self.mode == "map":
            return greedy_map(k, L=L, factors=Phi)
        eig = eigen(L, factors=Phi)
        r = eig.values.size
        if k <= r:
            return sample_k_dpp(k, eig=eig, rng=rng)
        log.info("k=%d exceeds the kernel rank %d: completing the DPP draw greedily", k, r)
        first = sample_k_dpp(r, eig=eig, rng=rng) if r else np.zeros(0, dtype=np.int64)
        rest = np.setdiff1d(np.arange(len(X)), first)
        extra = rng.choice(rest, k - r, replace=False)
        return np.concatenate([first, extra]).astype(np.int64)
