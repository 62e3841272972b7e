"""ACE basis selection and rotation-invariant couplings of the atomic base.

A product-basis function of correlation order ``nu`` is a multiset of one-particle indices
``(n_1, l_1), ..., (n_nu, l_nu)``; its invariants are real coefficient tensors ``c[m_1..m_nu]``
such that ``sum_m c[m] prod_t A[n_t, l_t, m_t]`` does not change under rotations of the
neighbourhood (the generalised Clebsch-Gordan couplings). They are built here by successive
coupling ``l_1 x l_2 -> L_2, L_2 x l_3 -> L_3, ..., L_{nu-1} x l_nu -> 0`` with complex
Clebsch-Gordan coefficients (Racah's formula), carried into the basis of
:func:`~potlearn_ase.descriptors.basis.real_harmonics` by a change of basis fitted
numerically to those very harmonics, so that the convention is the project's own. Each
coupling is then symmetrised over permutations of equal ``(n, l)`` factors and the span is
reduced to an orthonormal, linearly independent set (SVD). Results are cached in memory.

Basis selection is the total-degree rule of ACE1.jl and pacemaker: a multiset is kept when
``sum_t (n_t + w_l l_t) <= D_nu`` and ``sum_t l_t`` is even (invariance under reflections).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from functools import cache

import numpy as np
import torch

from potlearn_ase.descriptors.basis import real_harmonics

__all__ = [
    "clebsch_gordan",
    "coupling_tensors",
    "one_particle_indices",
    "select_basis",
    "sparse_coupling",
]

OneParticle = tuple[int, int]  # (n, l), n >= 1


def clebsch_gordan(j1: int, m1: int, j2: int, m2: int, J: int, M: int) -> float:
    """Complex Clebsch-Gordan coefficient ``<j1 m1 j2 m2 | J M>`` (Racah's formula)."""
    if m1 + m2 != M or not abs(j1 - j2) <= J <= j1 + j2:
        return 0.0
    if abs(m1) > j1 or abs(m2) > j2 or abs(M) > J:
        return 0.0
    f = math.factorial
    pref = math.sqrt(
        (2 * J + 1) * f(J + j1 - j2) * f(J - j1 + j2) * f(j1 + j2 - J) / f(j1 + j2 + J + 1)
    ) * math.sqrt(f(J + M) * f(J - M) * f(j1 - m1) * f(j1 + m1) * f(j2 - m2) * f(j2 + m2))
    total = 0.0
    for k in range(0, j1 + j2 - J + 1):
        dens = (
            k,
            j1 + j2 - J - k,
            j1 - m1 - k,
            j2 + m2 - k,
            J - j2 + m1 + k,
            J - j1 - m2 + k,
        )
        if min(dens) < 0:
            continue
        total += (-1) ** k / math.prod(f(d) for d in dens)
    return pref * total


@cache
def _cg_tensor(l1: int, l2: int, L: int) -> np.ndarray:
    """``C[m1, m2, M]`` of complex harmonics, indices ``m + l``."""
    C = np.zeros((2 * l1 + 1, 2 * l2 + 1, 2 * L + 1))
    for m1 in range(-l1, l1 + 1):
        for m2 in range(-l2, l2 + 1):
            M = m1 + m2
            if abs(M) <= L:
                C[m1 + l1, m2 + l2, M + L] = clebsch_gordan(l1, m1, l2, m2, L, M)
    return C


def _complex_harmonics(u: np.ndarray, l: int) -> np.ndarray:
    """Complex ``Y_l^m(u)`` for ``m = -l..l`` (Condon-Shortley), ``(n_points, 2l+1)``."""
    from scipy.special import sph_harm_y

    theta = np.arccos(np.clip(u[:, 2], -1.0, 1.0))
    phi = np.arctan2(u[:, 1], u[:, 0])
    return np.stack([sph_harm_y(l, m, theta, phi) for m in range(-l, l + 1)], axis=1)


@cache
def _complex_to_real(l: int) -> np.ndarray:
    """``V (2l+1, 2l+1)`` with ``Y_real(u) = V @ Y_complex(u)`` for the project's harmonics."""
    rng = np.random.default_rng(12345 + l)
    u = rng.normal(size=(8 * (2 * l + 1), 3))
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    Yr, _ = real_harmonics(torch.as_tensor(u), l)
    Yr = Yr.numpy()[:, l * l :]
    Yc = _complex_harmonics(u, l)
    V, *_ = np.linalg.lstsq(Yc, Yr.astype(complex), rcond=None)
    if np.abs(Yc @ V - Yr).max() > 1e-9:  # pragma: no cover - a broken harmonic table
        raise RuntimeError(f"real harmonics of degree {l} are not a basis change of Y_l^m")
    return V.T


@cache
def _couplings(ls: tuple[int, ...], pattern: tuple[int, ...]) -> np.ndarray:
    """Orthonormal invariant couplings ``(n_couplings, 2l_1+1, ..., 2l_nu+1)``.

    ``pattern[t]`` labels the one-particle index of factor ``t``: factors with equal labels
    are interchangeable, and the couplings are symmetrised over their permutations.
    """
    nu = len(ls)
    if nu == 1:
        return np.ones((1, 1)) if ls[0] == 0 else np.zeros((0, 2 * ls[0] + 1))
    # every coupling path L_1 = l_1, L_t in |L_{t-1} - l_t| .. L_{t-1} + l_t, L_nu = 0
    paths: list[np.ndarray] = []
    partial = [(np.eye(2 * ls[0] + 1, dtype=complex), ls[0])]
    for t in range(1, nu):
        nxt = []
        for T, L in partial:
            for L2 in [0] if t == nu - 1 else range(abs(L - ls[t]), L + ls[t] + 1):
                if not abs(L - ls[t]) <= L2 <= L + ls[t]:
                    continue
                nxt.append((np.tensordot(T, _cg_tensor(L, ls[t], L2), axes=([-1], [0])), L2))
        partial = nxt
    for T, _ in partial:
        c = T[..., 0]
        for t in range(nu):  # complex basis -> the project's real basis on every axis
            Vinv = np.linalg.inv(_complex_to_real(ls[t]))
            c = np.tensordot(c, Vinv, axes=([0], [0]))  # axis t goes last: order restored
        paths += [c.real, c.imag]
    if not paths:
        return np.zeros((0, *[2 * l + 1 for l in ls]))
    perms = [
        p for p in itertools.permutations(range(nu)) if all(pattern[p[t]] == pattern[t]
                                                             for t in range(nu))
    ]
    sym = [sum(np.transpose(c, p) for p in perms) / len(perms) for c in paths]
    mat = np.stack([s.reshape(-1) for s in sym])
    if mat.shape[0] == 0:
        return np.zeros((0, *[2 * l + 1 for l in ls]))
    _, s, vt = np.linalg.svd(mat, full_matrices=False)
    rank = int((s > 1e-8 * max(s.max(), 1e-300)).sum()) if s.size else 0
    return vt[:rank].reshape(rank, *[2 * l + 1 for l in ls])


def coupling_tensors(nl: Sequence[OneParticle]) -> np.ndarray:
    """Independent invariant couplings of the product ``prod_t A[n_t, l_t, :]``.

    Parameters
    ----------
    nl : sequence of (n, l)
        The one-particle indices, sorted.

    Returns
    -------
    numpy.ndarray
        ``(n_couplings, 2l_1+1, ..., 2l_nu+1)``, orthonormal rows, symmetric under swaps of
        equal factors; empty when the product has no invariant.
    """
    nl = tuple((int(n), int(l)) for n, l in nl)
    ls = tuple(l for _, l in nl)
    labels: dict[OneParticle, int] = {}
    pattern = tuple(labels.setdefault(x, len(labels)) for x in nl)
    return _couplings(ls, pattern)


def one_particle_indices(max_degree: float, w_l: float, l_max: int) -> list[OneParticle]:
    """Every ``(n, l)`` with ``n >= 1``, ``l <= l_max`` and ``n + w_l l <= max_degree``."""
    out = []
    for l in range(l_max + 1):
        n = 1
        while n + w_l * l <= max_degree + 1e-12:
            out.append((n, l))
            n += 1
    return sorted(out, key=lambda x: (x[1], x[0]))


def select_basis(
    degrees: Sequence[float], w_l: float, l_max: int
) -> dict[int, list[tuple[OneParticle, ...]]]:
    """Multisets of one-particle indices of each correlation order, by the degree rule.

    Parameters
    ----------
    degrees : sequence of float
        ``D_nu`` for ``nu = 1, 2, ...``.
    w_l : float
        Weight of the angular degree.
    l_max : int
        Highest angular degree of any factor.

    Returns
    -------
    dict
        ``nu -> [sorted (n, l) tuples]`` with an even ``sum l`` and ``sum (n + w_l l) <= D_nu``
        (``l = 0`` for ``nu = 1``).
    """
    out: dict[int, list[tuple[OneParticle, ...]]] = {}
    for nu, D in enumerate(degrees, start=1):
        singles = one_particle_indices(D - (nu - 1), w_l, 0 if nu == 1 else l_max)
        chosen: list[tuple[OneParticle, ...]] = []
        _grow(singles, nu, D, w_l, [], 0, 0.0, chosen)
        out[nu] = sorted(chosen)
    return out


def sparse_coupling(
    basis: Sequence[tuple[OneParticle, ...]], index: dict[tuple[int, int, int], int]
) -> tuple[list[tuple[int, ...]], list[tuple[int, int, float]], int]:
    """The invariant features of ``basis`` as sums of sorted products of the atomic base.

    Parameters
    ----------
    basis : sequence of sorted (n, l) tuples, all of one correlation order
    index : dict
        ``(n, l, m) -> position`` of each one-particle function in the flat atomic base,
        ``m`` running over ``0..2l``.

    Returns
    -------
    products : list of tuple of int
        Sorted index tuples ``(a_1 <= ... <= a_nu)`` of the products that occur.
    entries : list of (product, feature, coefficient)
        Feature ``k`` is ``sum coefficient * prod_t A[a_t]`` over its entries.
    n_features : int
        Number of features (independent couplings over all of ``basis``).
    """
    products: dict[tuple[int, ...], int] = {}
    entries: list[tuple[int, int, float]] = []
    k = 0
    for nl in basis:
        C = coupling_tensors(nl)
        for c in C:
            acc: dict[int, float] = {}
            for ms in zip(*np.nonzero(np.abs(c) > 1e-12)):
                key = tuple(sorted(index[(n, l, int(m))] for (n, l), m in zip(nl, ms)))
                p = products.setdefault(key, len(products))
                acc[p] = acc.get(p, 0.0) + float(c[ms])
            entries += [(p, k, v) for p, v in acc.items() if abs(v) > 1e-12]
            k += 1
    return list(products), entries, k


def _grow(
    singles: list[OneParticle],
    nu: int,
    D: float,
    w_l: float,
    prefix: list[OneParticle],
    start: int,
    deg: float,
    chosen: list[tuple[OneParticle, ...]],
) -> None:
    """Append to ``chosen`` every sorted extension of ``prefix`` within the degree ``D``."""
    if len(prefix) == nu:
        if sum(l for _, l in prefix) % 2 == 0:
            chosen.append(tuple(prefix))
        return
    left = nu - len(prefix) - 1  # each further factor costs at least 1
    for k in range(start, len(singles)):
        n, l = singles[k]
        d = deg + n + w_l * l
        if d + left <= D + 1e-12:
            _grow(singles, nu, D, w_l, [*prefix, singles[k]], k, d, chosen)
