"""Similarity kernels on structure features, exact and low rank.

A selector compares structures through one feature vector each: the mean (intensive) or sum
(extensive, like the energy) of the atoms' descriptors (:func:`descriptor_features`). The
kernels here turn those vectors into similarities:

* ``dot``: ``k(x, y) = x . y`` (the linear model's own geometry);
* ``rbf``: ``k(x, y) = exp(-|x - y|^2 / (2 l^2))``;
* ``imq``: inverse multiquadric ``k(x, y) = (1 + |x - y|^2 / l^2)^(-1/2)``.

Features are standardised column by column first (``standardize``), and the length scale
``l`` defaults to the median pairwise distance (estimated on at most 1000 points).

Large pools never build the ``n x n`` matrix: :meth:`Kernel.low_rank` returns factors ``Phi``
with ``K ~= Phi Phi^T`` from a Nystrom approximation on ``rank`` landmarks (any kernel) or
random Fourier features (RBF only), so a DPP over 20 000 candidates costs ``O(n rank^2)``.

:class:`ConditionalVariance` keeps the variance a kernel leaves at every candidate after
conditioning on a growing set (a Gaussian-process posterior variance), for the chain rule of a
DPP.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from ase import Atoms
from numpy.typing import ArrayLike
from scipy.spatial.distance import cdist, pdist

from potlearn_ase.selection.fps import structure_features

__all__ = [
    "KERNELS",
    "ConditionalVariance",
    "Kernel",
    "as_features",
    "descriptor_features",
    "median_lengthscale",
    "prepare_features",
    "standardize",
]

KERNELS = ("dot", "rbf", "imq")


def as_features(features: Any) -> np.ndarray:
    """A finite ``(n, d)`` float array from an array, list or torch tensor.

    Raises
    ------
    ValueError
        Wrong shape, or a candidate whose features are not finite (naming it).
    """
    if hasattr(features, "detach"):
        features = features.detach().cpu().numpy()
    X = np.asarray(features, dtype=float)
    if X.ndim == 1:
        X = X[:, None]
    if X.ndim != 2:
        raise ValueError(f"features must have shape (n, d), got {X.shape}")
    bad = ~np.isfinite(X).all(axis=1)
    if bad.any():
        raise ValueError(f"features of candidate {int(np.flatnonzero(bad)[0])} are not finite")
    return X


def check_k(k: int, n: int) -> int:
    """``k`` as an int in ``[0, n]`` or a ValueError."""
    if isinstance(k, bool) or int(k) != k or not 0 <= k <= n:
        raise ValueError(f"k must be an integer in [0, {n}], got {k!r}")
    return int(k)


def standardize(X: ArrayLike) -> np.ndarray:
    """Columns shifted to zero mean and scaled to unit variance (constant columns dropped)."""
    X = as_features(X)
    sd = X.std(axis=0)
    keep = sd > 1e-12 * max(1.0, float(np.abs(X).max(initial=0.0)))
    return (X[:, keep] - X[:, keep].mean(axis=0)) / sd[keep]


def prepare_features(features: Any, *, standardize_columns: bool = True) -> np.ndarray:
    """Finite ``(n, d)`` features, standardised column by column when asked.

    When every column is constant (all candidates alike) a single zero column is returned, so
    distances and kernels stay defined.
    """
    X = as_features(features)
    if not standardize_columns or len(X) == 0:
        return X
    X = standardize(X)
    return X if X.shape[1] else np.zeros((len(X), 1))


def median_lengthscale(
    X: ArrayLike, *, max_points: int = 1000, rng: np.random.Generator | int | None = 0
) -> float:
    """Median pairwise Euclidean distance (the "median heuristic"), on a random subset."""
    X = as_features(X)
    if len(X) > max_points:
        X = X[np.random.default_rng(rng).choice(len(X), max_points, replace=False)]
    if len(X) < 2:
        return 1.0
    d = pdist(X)
    d = d[d > 0]
    return float(np.median(d)) if d.size else 1.0


@dataclass(frozen=True)
class Kernel:
    """A similarity kernel between feature vectors.

    Parameters
    ----------
    kind : {"dot", "rbf", "imq"}
        Dot product, radial basis function (Gaussian) or inverse multiquadric.
    lengthscale : float, optional
        ``l`` of ``rbf`` and ``imq``; None means the median heuristic on the data given.
    """

    kind: str = "rbf"
    lengthscale: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in KERNELS:
            raise ValueError(f"unknown kernel {self.kind!r}; known: {', '.join(KERNELS)}")
        if self.lengthscale is not None and not self.lengthscale > 0:
            raise ValueError(f"lengthscale must be positive, got {self.lengthscale}")

    def resolved(self, X: ArrayLike) -> Kernel:
        """This kernel with the length scale fixed from ``X`` when it was None."""
        if self.kind == "dot" or self.lengthscale is not None:
            return self
        return Kernel(self.kind, median_lengthscale(X))

    def __call__(self, X: ArrayLike, Y: ArrayLike | None = None) -> np.ndarray:
        """The kernel matrix ``k(X_i, Y_j)`` (``Y = X`` by default)."""
        X = as_features(X)
        Y = X if Y is None else as_features(Y)
        if self.kind == "dot":
            return X @ Y.T
        ell = self.lengthscale if self.lengthscale is not None else median_lengthscale(X)
        d2 = cdist(X, Y, "sqeuclidean") / ell**2
        if self.kind == "rbf":
            return np.exp(-0.5 * d2)
        return 1.0 / np.sqrt(1.0 + d2)

    def diag(self, X: ArrayLike) -> np.ndarray:
        """``k(x_i, x_i)`` for every row."""
        X = as_features(X)
        if self.kind == "dot":
            return np.einsum("ij,ij->i", X, X)
        return np.ones(len(X))

    def low_rank(
        self,
        X: ArrayLike,
        rank: int,
        *,
        rng: np.random.Generator | int | None = None,
        method: str = "nystrom",
    ) -> np.ndarray:
        """Factors ``Phi (n, r)`` with ``Phi Phi^T ~= K(X, X)``, ``r <= rank``.

        Parameters
        ----------
        X : array_like, shape (n, d)
        rank : int
            Number of landmarks (Nystrom) or random features (Fourier).
        rng : numpy Generator or seed
            Draws the landmarks or the random frequencies.
        method : {"nystrom", "fourier"}
            Nystrom on uniformly drawn landmarks (any kernel), or random Fourier features
            (``rbf`` only; unbiased but noisier for the same rank). The dot kernel needs
            neither: its factors are the features themselves (when ``d <= rank``) or their
            top principal directions.
        """
        X = as_features(X)
        n = len(X)
        rng = np.random.default_rng(rng)
        rank = int(min(rank, n))
        if rank < 1:
            raise ValueError(f"rank must be at least 1, got {rank}")
        if self.kind == "dot":
            if X.shape[1] <= rank:
                return X.copy()
            U, s, _ = np.linalg.svd(X, full_matrices=False)
            return U[:, :rank] * s[:rank]
        kern = self.resolved(X)
        if method == "fourier":
            if self.kind != "rbf":
                raise ValueError("random Fourier features exist for the rbf kernel only")
            assert kern.lengthscale is not None
            W = rng.standard_normal((X.shape[1], rank)) / kern.lengthscale
            b = rng.uniform(0.0, 2.0 * np.pi, rank)
            return np.sqrt(2.0 / rank) * np.cos(X @ W + b)
        if method != "nystrom":
            raise ValueError(f"method must be 'nystrom' or 'fourier', got {method!r}")
        landmarks = np.sort(rng.choice(n, rank, replace=False))
        Kmm = kern(X[landmarks])
        w, V = np.linalg.eigh(Kmm)
        keep = w > 1e-10 * w.max()
        Knm = kern(X, X[landmarks])
        return Knm @ (V[:, keep] / np.sqrt(w[keep]))


def descriptor_features(
    frames: Sequence[Atoms],
    descriptor: Any,
    *,
    reduce: str = "mean",
    batch_size: int = 64,
    per_atom: bool = False,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Structure features of ``frames``: the mean or sum of the atoms' descriptors.

    Parameters
    ----------
    frames : sequence of ase.Atoms
    descriptor : Descriptor
        Any descriptor (batched through its ``compute_batch``).
    reduce : {"mean", "sum"}
        See :func:`~potlearn_ase.selection.fps.structure_features`.
    batch_size : int
        Structures per descriptor call.
    per_atom : bool
        Also return the per-atom features ``(n_atoms, K)`` and each atom's structure index.

    Returns
    -------
    numpy.ndarray, shape (n_structures, K)
        Or ``(structure_features, (per_atom_features, batch_index))`` with ``per_atom``.
    """
    feats, index = [], []
    for start in range(0, len(frames), batch_size):
        chunk = list(frames[start : start + batch_size])
        B = descriptor.compute_batch(chunk, derivatives=False).features.detach().cpu().numpy()
        feats.append(B)
        index.append(np.repeat(np.arange(start, start + len(chunk)), [len(a) for a in chunk]))
    K = int(descriptor.n_features)
    B_all = np.concatenate(feats) if feats else np.zeros((0, K))
    b_all = np.concatenate(index) if index else np.zeros(0, dtype=np.int64)
    S = structure_features(B_all, b_all, reduce, n_structures=len(frames))
    if per_atom:
        return S, (B_all, b_all)
    return S


class ConditionalVariance:
    """Residual variances ``d_i = K_ii - K_iS (K_SS + noise I)^-1 K_Si`` for a growing set S.

    The posterior variance of a Gaussian process with kernel ``K`` (and observation noise
    ``noise``) at every candidate after observing the candidates in ``S``; equivalently, for
    ``noise = 0``, the factor by which adding ``i`` multiplies ``det(K_S)``. Kept up to date by
    incremental Cholesky: adding one candidate costs one kernel row and ``O(|S| n)``.

    Parameters
    ----------
    row : callable
        ``row(j)`` returns the kernel column ``K[:, j]`` (shape ``(n,)``).
    diag : numpy.ndarray, shape (n,)
        ``K_ii``.
    noise : float
        Observation noise variance added to the chosen ones' diagonal (0: exact conditioning).
    """

    def __init__(self, row: Callable[[int], np.ndarray], diag: np.ndarray, *, noise: float = 0.0):
        if noise < 0:
            raise ValueError(f"noise must be non-negative, got {noise}")
        self.row = row
        self.noise = float(noise)
        self.variance = np.asarray(diag, dtype=float).copy()
        self.chosen: list[int] = []
        self.included = np.zeros(self.variance.size, dtype=bool)
        self._C = np.zeros((0, self.variance.size))

    def add(self, j: int) -> None:
        """Condition on candidate ``j`` as well."""
        j = int(j)
        t = len(self.chosen)
        if t == len(self._C):  # grow the Cholesky rows geometrically
            grown = np.zeros((max(8, 2 * t), self.variance.size))
            grown[:t] = self._C
            self._C = grown
        C = self._C[:t]
        e = (self.row(j) - C[:, j] @ C) / np.sqrt(max(float(self.variance[j]), 0.0) + self.noise)
        self._C[t] = e
        self.variance -= e**2
        self.chosen.append(j)
        self.included[j] = True
