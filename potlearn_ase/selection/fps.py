"""Farthest-point sampling: a diverse subset of structures in descriptor space.

Greedy max-min selection (Gonzalez 1985): start from one point, then repeatedly add the
point whose distance to the nearest already-chosen point is largest. The result covers the
feature space evenly and takes isolated outliers early, which is what a training set drawn
from a long MD trajectory needs (rare events are few but far from the bulk of the frames).
Cost: ``k`` passes over the ``n`` points, ``O(n k d)`` time and ``O(n)`` extra memory.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from scipy.spatial.distance import cdist

__all__ = ["farthest_point_sampling", "select", "structure_features"]


def _as_array(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=float)


def farthest_point_sampling(
    features: ArrayLike,
    k: int,
    *,
    rng: np.random.Generator | int | None = None,
    start: int | None = None,
    metric: str = "euclidean",
) -> np.ndarray:
    """Indices of ``k`` points chosen by greedy farthest-point (max-min) sampling.

    Parameters
    ----------
    features : array_like, shape (n, d)
        One feature vector per candidate (e.g. per structure, see
        :func:`structure_features`); a 1-D array is taken as ``(n, 1)``.
    k : int
        Number of points to select, ``0 <= k <= n``.
    rng : numpy.random.Generator or int, optional
        Draws the first point when ``start`` is None.
    start : int, optional
        Index of the first point.
    metric : str
        ``"euclidean"`` or any metric name of :func:`scipy.spatial.distance.cdist`
        (``"cityblock"``, ``"cosine"``, ...).

    Returns
    -------
    numpy.ndarray of int, shape (k,)
        Distinct indices in the order they were chosen. When only duplicates of chosen
        points remain, the lowest remaining index is taken.
    """
    X = _as_array(features)
    if X.ndim == 1:
        X = X[:, None]
    if X.ndim != 2:
        raise ValueError(f"features must have shape (n, d), got {X.shape}")
    n = len(X)
    if isinstance(k, bool) or int(k) != k or not 0 <= k <= n:
        raise ValueError(f"k must be an integer in [0, {n}], got {k!r}")
    k = int(k)
    if not np.all(np.isfinite(X)):
        bad = int(np.flatnonzero(~np.isfinite(X).all(axis=1))[0])
        raise ValueError(f"features of point {bad} are not finite")
    if k == 0:
        return np.zeros(0, dtype=np.int64)
    if start is None:
        first = int(np.random.default_rng(rng).integers(n))
    else:
        if int(start) != start or not 0 <= start < n:
            raise ValueError(f"start must be an index in [0, {n}), got {start!r}")
        first = int(start)

    def distances(i: int) -> np.ndarray:
        if metric == "euclidean":
            return np.sqrt(np.sum((X - X[i]) ** 2, axis=1))
        return cdist(X[i : i + 1], X, metric=metric)[0]

    chosen = np.empty(k, dtype=np.int64)
    chosen[0] = first
    min_dist = distances(first)
    min_dist[first] = -np.inf
    for m in range(1, k):
        nxt = int(np.argmax(min_dist))
        chosen[m] = nxt
        np.minimum(min_dist, distances(nxt), out=min_dist)
        min_dist[chosen[: m + 1]] = -np.inf
    return chosen


def select(
    features: ArrayLike,
    k: int,
    *,
    rng: np.random.Generator | int | None = None,
    **kwargs: Any,
) -> np.ndarray:
    """Farthest-point sampling with the common selector signature (see
    :func:`farthest_point_sampling` for ``start`` and ``metric``)."""
    return farthest_point_sampling(features, k, rng=rng, **kwargs)


def structure_features(
    per_atom_features: ArrayLike,
    batch_index: ArrayLike,
    reduce: str = "mean",
    *,
    n_structures: int | None = None,
) -> np.ndarray:
    """Per-structure feature vectors from per-atom descriptors.

    Parameters
    ----------
    per_atom_features : array_like, shape (n_atoms, d)
        Descriptors of every atom of every structure (a torch tensor is accepted).
    batch_index : array_like of int, shape (n_atoms,)
        The structure each atom belongs to, ``0 <= batch_index < n_structures``.
    reduce : {"mean", "sum"}
        Average (size-independent) or sum (extensive, like the energy) over each
        structure's atoms.
    n_structures : int, optional
        Number of structures (default ``max(batch_index) + 1``).

    Returns
    -------
    numpy.ndarray, shape (n_structures, d)
    """
    A = _as_array(per_atom_features)
    if A.ndim == 1:
        A = A[:, None]
    b = np.asarray(_as_array(batch_index)).astype(np.int64).ravel()
    if A.ndim != 2 or len(b) != len(A):
        raise ValueError(
            f"batch_index has {len(b)} entries for per-atom features of shape {A.shape}"
        )
    if reduce not in ("mean", "sum"):
        raise ValueError(f"reduce must be 'mean' or 'sum', got {reduce!r}")
    if len(b) and b.min() < 0:
        raise ValueError("batch_index holds negative structure indices")
    n = int(n_structures) if n_structures is not None else (int(b.max()) + 1 if len(b) else 0)
    if len(b) and b.max() >= n:
        raise ValueError(f"batch_index refers to structure {int(b.max())} of only {n}")
    out = np.zeros((n, A.shape[1]))
    np.add.at(out, b, A)
    if reduce == "mean":
        counts = np.bincount(b, minlength=n)
        if np.any(counts == 0):
            raise ValueError(f"structure {int(np.flatnonzero(counts == 0)[0])} has no atoms")
        out /= counts[:, None]
    return out
