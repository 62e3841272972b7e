"""D-optimal design on the linear model's design matrix: maxvol and the extrapolation grade.

For a linear potential the information a set ``S`` of rows carries about the weights is
``A_S^T A_S``; D-optimality maximises its determinant, i.e. the volume spanned by the rows.

* :func:`maxvol` (Goreinov, Oseledets, Savostyanov et al. 2010) finds ``r`` rows of a tall
  ``n x r`` matrix whose ``r x r`` submatrix has (locally) maximal ``|det|``: every row of
  ``A`` is then a combination ``c = a A_S^{-1}`` of the active rows with ``max |c_j| <= tol``.
* :func:`rect_maxvol` adds rows beyond ``r`` greedily; each addition multiplies
  ``det(A_S^T A_S)`` by ``1 + a (A_S^T A_S)^{-1} a^T``, the largest factor available.
* :func:`extrapolation_grade` ``gamma(a) = max_j |c_j|`` with ``c = a pinv(A_S)`` is the
  uncertainty measure of moment tensor potentials and ACE (Podryabinkin & Shapeev 2017,
  Lysogorskiy et al. 2023): ``gamma <= 1`` interpolates within the active set, ``gamma > 1``
  extrapolates. It needs no committee.

:class:`DOptimalSelector` picks structures either from one row per structure (summed or mean
features) or from the full design-matrix rows with a ``groups`` array naming each row's
structure.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import numpy as np
import scipy.linalg
from numpy.typing import ArrayLike

from potlearn_ase.selection.kernels import as_features, check_k

__all__ = [
    "DOptimalSelector",
    "extrapolation_grade",
    "maxvol",
    "maxvol_coefficients",
    "rect_maxvol",
]

log = logging.getLogger(__name__)


def maxvol(A: ArrayLike, *, tol: float = 1.01, max_iters: int = 1000) -> np.ndarray:
    """Rows of a tall ``(n, r)`` matrix spanning a (locally) maximal volume.

    Starts from the pivots of a QR factorisation with column pivoting of ``A^T`` and swaps
    rows while some coefficient ``|c_ij| > tol``; each swap multiplies ``|det|`` by
    ``|c_ij| > 1``.

    Parameters
    ----------
    A : array_like, shape (n, r), n >= r, of rank r
    tol : float
        Stop when every coefficient is at most ``tol`` (>= 1).
    max_iters : int
        Swaps at most.

    Returns
    -------
    numpy.ndarray of int, shape (r,)

    Raises
    ------
    ValueError
        ``A`` is wide or rank deficient.
    """
    A = as_features(A)
    n, r = A.shape
    if n < r:
        raise ValueError(f"maxvol needs a tall matrix, got shape {A.shape}")
    if tol < 1:
        raise ValueError(f"tol must be at least 1, got {tol}")
    if r == 0:
        return np.zeros(0, dtype=np.int64)
    _, R, piv = scipy.linalg.qr(A.T, mode="economic", pivoting=True)
    # R is (r, n): its last pivot is R[r-1, r-1] (R[-1, -1] lies off the diagonal when n > r)
    if abs(R[r - 1, r - 1]) <= 1e-12 * abs(R[0, 0]):
        raise ValueError(f"the {n} x {r} matrix is rank deficient; reduce its columns first")
    idx = np.array(piv[:r], dtype=np.int64)
    B = np.linalg.solve(A[idx].T, A.T).T  # (n, r): A = B A[idx]
    for _ in range(max_iters):
        i, j = np.unravel_index(int(np.argmax(np.abs(B))), B.shape)
        if abs(B[i, j]) <= tol:
            break
        # swap row idx[j] out for row i: rank-1 update of the coefficients
        bj = B[:, j].copy()
        bi = B[i].copy()
        bi[j] -= 1.0
        B -= np.outer(bj / B[i, j], bi)
        idx[j] = i
    else:
        log.warning("maxvol did not reach tol=%g in %d swaps", tol, max_iters)
    return idx


def rect_maxvol(
    A: ArrayLike, k: int, *, start: ArrayLike | None = None, tol: float = 1.01
) -> np.ndarray:
    """``k >= r`` rows of an ``(n, r)`` matrix by maxvol and then greedy D-optimal additions.

    Each added row has the largest leverage ``a (A_S^T A_S)^{-1} a^T`` among the rest, so
    ``det(A_S^T A_S)`` grows by the largest factor ``1 + leverage`` at every step.

    Parameters
    ----------
    start : array_like of int, optional
        Initial rows (default: :func:`maxvol`); must have full column rank.
    """
    A = as_features(A)
    k = check_k(k, A.shape[0])
    out: list[int] = []
    for i in _greedy_rows(A, start, tol):
        if len(out) == k:
            break
        out.append(i)
    return np.array(out, dtype=np.int64)


def _greedy_rows(A: np.ndarray, start: ArrayLike | None, tol: float) -> Iterator[int]:
    """Maxvol rows, then every further row in order of greedy D-optimal addition."""
    idx = list(maxvol(A, tol=tol) if start is None else np.asarray(start, dtype=np.int64))
    yield from (int(i) for i in idx)
    Ginv = np.linalg.pinv(A[idx].T @ A[idx])
    lev = np.einsum("ij,jk,ik->i", A, Ginv, A)
    lev[idx] = -np.inf
    for _ in range(A.shape[0] - len(idx)):
        i = int(np.argmax(lev))
        u = Ginv @ A[i]
        li = float(A[i] @ u)
        lev -= (A @ u) ** 2 / (1.0 + li)
        Ginv -= np.outer(u, u) / (1.0 + li)
        lev[i] = -np.inf
        yield i


def maxvol_coefficients(active_set: ArrayLike, features: ArrayLike) -> np.ndarray:
    """``c = features pinv(active_set)``: each row as a combination of the active rows.

    Parameters
    ----------
    active_set : array_like, shape (m, d)
        Rows of the active set (``m >= d`` and of rank ``d`` for a unique answer).
    features : array_like, shape (n, d)

    Returns
    -------
    numpy.ndarray, shape (n, m)
    """
    S = as_features(active_set)
    X = as_features(features)
    if S.shape[1] != X.shape[1]:
        raise ValueError(
            f"active set has {S.shape[1]} features per row, the candidates {X.shape[1]}"
        )
    if S.shape[0] == S.shape[1]:
        try:
            return np.linalg.solve(S.T, X.T).T
        except np.linalg.LinAlgError:
            pass
    return X @ np.linalg.pinv(S)


def extrapolation_grade(
    active_set: ArrayLike, features: ArrayLike, *, groups: ArrayLike | None = None
) -> np.ndarray:
    """The extrapolation grade ``gamma = max_j |c_j|`` of each row, or each group of rows.

    ``gamma <= 1`` (up to maxvol's ``tol``) for rows inside the convex, volume-maximal span
    of the active set; ``gamma > 1`` means extrapolation, and grows with its distance.

    Parameters
    ----------
    active_set : array_like, shape (m, d)
        The active rows (from :func:`maxvol` on training features).
    features : array_like, shape (n, d)
        Rows to grade (e.g. per-atom descriptors of candidate structures).
    groups : array_like of int, shape (n,), optional
        The structure of each row: the grade of a structure is that of its worst row.

    Returns
    -------
    numpy.ndarray
        ``(n,)``, or ``(max(groups) + 1,)`` with ``groups``.
    """
    X = as_features(features)
    gamma = np.zeros(len(X))
    for start in range(0, len(X), 20000):
        c = maxvol_coefficients(active_set, X[start : start + 20000])
        gamma[start : start + len(c)] = np.abs(c).max(axis=1, initial=0.0)
    if groups is None:
        return gamma
    g = np.asarray(groups, dtype=np.int64).ravel()
    if g.shape != gamma.shape:
        raise ValueError(f"groups has {g.size} entries for {gamma.size} rows")
    out = np.zeros(int(g.max(initial=-1)) + 1)
    np.maximum.at(out, g, gamma)
    return out


def _column_basis(A: np.ndarray, r: int | None = None) -> np.ndarray:
    """Rows of ``A`` in an orthonormal basis of its row space (columns scaled to unit RMS
    first), keeping its numerical rank or the ``r`` leading directions."""
    scale = np.sqrt(np.mean(A**2, axis=0))
    As = A[:, scale > 0] / scale[scale > 0]
    U, s, _ = np.linalg.svd(As, full_matrices=False)
    rank = int(np.sum(s > 1e-10 * s[0])) if s.size and s[0] > 0 else 0
    if r is not None:
        rank = min(rank, r)
    return U[:, :rank] * s[:rank]


class DOptimalSelector:
    """D-optimal structures: maxvol and greedy volume on the linear design matrix.

    Parameters
    ----------
    tol : float
        Maxvol tolerance (>= 1).
    """

    name = "doptimal"

    def __init__(self, *, tol: float = 1.01):
        self.tol = float(tol)

    def __repr__(self) -> str:
        return f"DOptimalSelector(tol={self.tol})"

    def select(
        self,
        features: ArrayLike,
        k: int,
        *,
        rng: np.random.Generator | int | None = None,
        groups: ArrayLike | None = None,
    ) -> np.ndarray:
        """Indices of ``k`` structures whose rows span a large volume.

        Parameters
        ----------
        features : array_like, shape (n_rows, d)
            One row per structure (summed features, the energy rows of a linear model), or
            the full design-matrix rows with ``groups``.
        k : int
            Structures to pick.
        rng : unused
            Maxvol is deterministic; accepted for the common selector signature.
        groups : array_like of int, shape (n_rows,), optional
            The structure each row belongs to; then the indices are structure indices,
            taken in the order their first row enters the D-optimal row set.

        Notes
        -----
        With fewer picks than the rank ``r`` of the rows, maxvol runs on the ``k`` leading
        principal directions of the column-scaled rows; with more, the ``r`` maxvol rows are
        extended by :func:`rect_maxvol`.
        """
        X = as_features(features)
        if groups is None:
            k = check_k(k, len(X))
            if k == 0:
                return np.zeros(0, dtype=np.int64)
            U = _column_basis(X)
            if k <= U.shape[1]:
                return maxvol(_column_basis(X, k), tol=self.tol)
            return rect_maxvol(U, k, tol=self.tol)
        g = np.asarray(groups, dtype=np.int64).ravel()
        if g.shape != (len(X),):
            raise ValueError(f"groups has {g.size} entries for {len(X)} rows")
        n_struct = int(g.max(initial=-1)) + 1
        k = check_k(k, len(np.unique(g)))
        if k == 0:
            return np.zeros(0, dtype=np.int64)
        seen = np.zeros(n_struct, dtype=bool)
        out: list[int] = []
        for row in _greedy_rows(_column_basis(X), None, self.tol):
            s = int(g[row])
            if not seen[s]:
                seen[s] = True
                out.append(s)
                if len(out) == k:
                    break
        return np.array(out, dtype=np.int64)
