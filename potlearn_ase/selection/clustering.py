"""Selection by clustering: k-means centroids and DBSCAN clusters with their outliers.

* :class:`KMeansSelector` - ``k`` clusters (scikit-learn ``KMeans``, or ``MiniBatchKMeans``
  for large pools); from each, the structure nearest its centroid. Picks follow the density
  of the pool: dense regions get more clusters.
* :class:`DBSCANSelector` - density-based clusters (scikit-learn ``DBSCAN``) of any shape and
  count, plus *noise points* that belong to none: one representative per cluster (the member
  nearest the cluster mean, largest clusters first), then the noise points (most isolated
  first), then further members of the clusters in proportion to their size, chosen at
  random. Useful to make sure rare configurations (the noise) reach the training set.
  Distances are taken on the principal components that hold all but a ``1e-4`` share of
  the variance (``variance_kept``): structure descriptors are strongly correlated, so a
  272-column pool keeps a few dozen, and 20 000 candidates cluster in about a second.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from scipy.spatial.distance import cdist
from sklearn.cluster import DBSCAN, KMeans, MiniBatchKMeans
from sklearn.neighbors import NearestNeighbors

from potlearn_ase.selection.kernels import as_features, check_k, prepare_features

__all__ = [
    "DBSCANClusters",
    "DBSCANSelector",
    "KMeansSelector",
    "dbscan_clusters",
    "principal_components",
]

log = logging.getLogger(__name__)


def _seed(rng: np.random.Generator | int | None) -> int:
    return int(np.random.default_rng(rng).integers(2**31 - 1))


class KMeansSelector:
    """The structure nearest each of ``k`` k-means centroids.

    Parameters
    ----------
    standardize : bool
        Standardise feature columns first.
    n_init : int
        k-means restarts (the best inertia wins).
    minibatch_above : int
        Use ``MiniBatchKMeans`` for pools larger than this.
    """

    name = "kmeans"

    def __init__(self, *, standardize: bool = True, n_init: int = 3, minibatch_above: int = 5000):
        self.standardize = standardize
        self.n_init = int(n_init)
        self.minibatch_above = int(minibatch_above)

    def __repr__(self) -> str:
        return f"KMeansSelector(standardize={self.standardize}, n_init={self.n_init})"

    def select(
        self, features: ArrayLike, k: int, *, rng: np.random.Generator | int | None = None
    ) -> np.ndarray:
        """Indices of ``k`` distinct structures, one per cluster (nearest its centroid).

        When two centroids share their nearest structure, the second takes its nearest
        structure not yet taken.
        """
        X = as_features(features)
        k = check_k(k, len(X))
        if k == 0:
            return np.zeros(0, dtype=np.int64)
        X = prepare_features(X, standardize_columns=self.standardize)
        seed = _seed(rng)
        if len(X) > self.minibatch_above:
            km = MiniBatchKMeans(k, n_init=self.n_init, random_state=seed, batch_size=2048)
        else:
            km = KMeans(k, n_init=self.n_init, random_state=seed)
        km.fit(X)
        D = cdist(km.cluster_centers_, X, "sqeuclidean")
        taken = np.zeros(len(X), dtype=bool)
        out = np.empty(k, dtype=np.int64)
        # centroids with the tightest nearest structure choose first
        for c in np.argsort(D.min(axis=1)):
            d = np.where(taken, np.inf, D[c])
            i = int(np.argmin(d))
            out[c] = i
            taken[i] = True
        return out


@dataclass(frozen=True)
class DBSCANClusters:
    """A DBSCAN clustering of candidates.

    Attributes
    ----------
    labels : numpy.ndarray of int, shape (n,)
        Cluster of each candidate, ``-1`` for noise.
    representatives : numpy.ndarray of int
        One candidate per cluster (nearest the cluster mean), largest clusters first.
    noise : numpy.ndarray of int
        Noise candidates, most isolated first.
    eps : float
        The neighbourhood radius used (in standardised feature units when standardised).
    """

    labels: np.ndarray
    representatives: np.ndarray
    noise: np.ndarray
    eps: float

    @property
    def n_clusters(self) -> int:
        return int(self.representatives.size)


def _default_eps(X: np.ndarray, min_samples: int, quantile: float) -> float:
    """The ``quantile`` of the distances to the ``min_samples``-th neighbour (k-distance)."""
    m = min(min_samples, len(X) - 1)
    if m < 1:
        return 1.0
    nn = NearestNeighbors(n_neighbors=m + 1).fit(X)
    d, _ = nn.kneighbors(X)
    eps = float(np.quantile(d[:, m], quantile))
    return eps if eps > 0 else 1e-8


def principal_components(X: np.ndarray, variance_kept: float | None) -> np.ndarray:
    """``X`` centred and rotated onto its leading principal axes, keeping the fewest that
    hold at least ``variance_kept`` of the total variance.

    A rotation keeps every pairwise distance; dropping the trailing axes changes a squared
    distance by at most what they hold. ``None`` (or 1) returns ``X`` unchanged.
    """
    if variance_kept is not None and not 0.0 < variance_kept <= 1.0:
        raise ValueError(f"variance_kept must lie in (0, 1], got {variance_kept!r}")
    if variance_kept is None or variance_kept == 1.0 or X.shape[1] < 2 or len(X) < 2:
        return X
    Xc = X - X.mean(axis=0)
    evals, evecs = np.linalg.eigh(Xc.T @ Xc)
    evals, evecs = np.clip(evals[::-1], 0.0, None), evecs[:, ::-1]
    total = float(evals.sum())
    if total <= 0.0:
        return Xc[:, :1] * 0.0
    r = int(np.searchsorted(np.cumsum(evals) / total, variance_kept) + 1)
    return Xc @ evecs[:, : min(r, X.shape[1])]


def dbscan_clusters(
    features: ArrayLike,
    *,
    eps: float | None = None,
    min_samples: int = 5,
    eps_quantile: float = 0.9,
    standardize_features: bool = True,
    variance_kept: float | None = 0.9999,
) -> DBSCANClusters:
    """Cluster candidates with DBSCAN and name a representative of each cluster.

    Parameters
    ----------
    eps : float, optional
        Neighbourhood radius; default the ``eps_quantile`` of the distance of each point to
        its ``min_samples``-th neighbour, so that about ``1 - eps_quantile`` of the points
        fall outside dense regions.
    min_samples : int
        Neighbours (the point included) that make a core point.
    variance_kept : float or None
        Distances are measured on the principal components holding this share of the
        variance (see :func:`principal_components`); ``None`` measures them on every column.
    """
    X = principal_components(
        prepare_features(features, standardize_columns=standardize_features), variance_kept
    )
    if len(X) == 0:
        empty = np.zeros(0, dtype=np.int64)
        return DBSCANClusters(empty, empty, empty, float(eps or 0.0))
    e = float(eps) if eps is not None else _default_eps(X, min_samples, eps_quantile)
    labels = DBSCAN(eps=e, min_samples=min_samples).fit_predict(X)
    clusters = [c for c in np.unique(labels) if c >= 0]
    sizes = {c: int(np.sum(labels == c)) for c in clusters}
    reps = []
    for c in sorted(clusters, key=lambda c: (-sizes[c], c)):
        members = np.flatnonzero(labels == c)
        centre = X[members].mean(axis=0)
        reps.append(int(members[np.argmin(np.sum((X[members] - centre) ** 2, axis=1))]))
    noise = np.flatnonzero(labels < 0)
    if noise.size and noise.size < len(X):
        others = np.flatnonzero(labels >= 0)
        iso = NearestNeighbors(n_neighbors=1).fit(X[others]).kneighbors(X[noise])[0][:, 0]
        noise = noise[np.argsort(-iso, kind="stable")]
    return DBSCANClusters(labels, np.array(reps, dtype=np.int64), noise, e)


class DBSCANSelector:
    """Cluster representatives and noise points from DBSCAN.

    Parameters
    ----------
    eps, min_samples, eps_quantile, variance_kept
        See :func:`dbscan_clusters`.
    standardize : bool
        Standardise feature columns first.
    """

    name = "dbscan"

    def __init__(
        self,
        *,
        eps: float | None = None,
        min_samples: int = 5,
        eps_quantile: float = 0.9,
        standardize: bool = True,
        variance_kept: float | None = 0.9999,
    ):
        self.eps = eps
        self.min_samples = int(min_samples)
        self.eps_quantile = float(eps_quantile)
        self.standardize = standardize
        self.variance_kept = variance_kept

    def __repr__(self) -> str:
        return f"DBSCANSelector(eps={self.eps}, min_samples={self.min_samples})"

    def clusters(self, features: ArrayLike) -> DBSCANClusters:
        """The clustering :meth:`select` draws from."""
        return dbscan_clusters(
            features,
            eps=self.eps,
            min_samples=self.min_samples,
            eps_quantile=self.eps_quantile,
            standardize_features=self.standardize,
            variance_kept=self.variance_kept,
        )

    def select(
        self, features: ArrayLike, k: int, *, rng: np.random.Generator | int | None = None
    ) -> np.ndarray:
        """Representatives (largest clusters first), then noise points (most isolated
        first), then random cluster members drawn in proportion to cluster size."""
        X = as_features(features)
        k = check_k(k, len(X))
        rng = np.random.default_rng(rng)
        cl = self.clusters(X)
        order = list(cl.representatives[:k]) + list(cl.noise[: max(0, k - cl.n_clusters)])
        if len(order) < k:
            rest = np.setdiff1d(np.arange(len(X)), np.array(order, dtype=np.int64))
            # uniform over the remaining members = proportional to cluster size
            order += list(rng.choice(rest, k - len(order), replace=False))
        return np.array(order[:k], dtype=np.int64)
