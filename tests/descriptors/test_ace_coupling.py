"""ACE basis selection and couplings against brute force; harmonics of any degree."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from potlearn_ase.descriptors.ace_coupling import clebsch_gordan, coupling_tensors, select_basis
from potlearn_ase.descriptors.basis import real_harmonics


def _rotation_matrix(l: int, Q: np.ndarray) -> np.ndarray:
    """``D`` with ``Y_l(Q u) = D Y_l(u)`` for the project's real harmonics (least squares)."""
    u = np.random.default_rng(l).normal(size=(10 * (2 * l + 1), 3))
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    Y = real_harmonics(torch.as_tensor(u), l)[0].numpy()[:, l * l :]
    YQ = real_harmonics(torch.as_tensor(u @ Q.T), l)[0].numpy()[:, l * l :]
    D, *_ = np.linalg.lstsq(Y, YQ, rcond=None)
    return D.T


def _brute_force_invariants(nl: tuple[tuple[int, int], ...]) -> int:
    """Dimension of the rotation- and swap-invariant subspace of the tensor product."""
    dims = [2 * l + 1 for _, l in nl]
    size = int(np.prod(dims))
    rows = []
    for seed in (1, 2):
        Q = Rotation.random(random_state=seed).as_matrix()
        R = np.ones((1, 1))
        for _, l in nl:
            R = np.kron(R, _rotation_matrix(l, Q))
        rows.append(R.T - np.eye(size))
    eye = np.eye(size).reshape(*dims, size)
    for a, b in itertools.combinations(range(len(nl)), 2):
        if nl[a] == nl[b]:
            swapped = np.swapaxes(eye, a, b).reshape(size, size)
            rows.append(swapped - np.eye(size))
    s = np.linalg.svd(np.concatenate(rows), compute_uv=False)
    return int((s < 1e-8).sum()) + size - len(s)


@pytest.mark.parametrize(
    "nl",
    [
        ((1, 0), (2, 0)),
        ((1, 2), (1, 2)),
        ((1, 1), (2, 1)),
        ((1, 1), (1, 1), (2, 2)),
        ((1, 1), (2, 1), (3, 2)),
        ((1, 2), (1, 2), (1, 2)),
        ((1, 2), (2, 2), (3, 2)),
        ((1, 1), (1, 1), (1, 1), (1, 1)),
        ((1, 1), (1, 1), (2, 1), (2, 1)),
        ((1, 1), (2, 1), (1, 2), (2, 2)),
    ],
)
def test_couplings_are_invariant_independent_and_complete(nl):
    C = coupling_tensors(nl)
    flat = C.reshape(C.shape[0], -1)
    np.testing.assert_allclose(flat @ flat.T, np.eye(len(flat)), atol=1e-10)  # independent
    for seed in (3, 4):
        Q = Rotation.random(random_state=seed).as_matrix()
        R = np.ones((1, 1))
        for _, l in nl:
            R = np.kron(R, _rotation_matrix(l, Q))
        np.testing.assert_allclose(flat @ R, flat, atol=1e-9)  # invariant
    assert len(flat) == _brute_force_invariants(nl)  # and none is missing


def test_clebsch_gordan_known_values():
    assert clebsch_gordan(1, 0, 1, 0, 0, 0) == pytest.approx(-1 / np.sqrt(3))
    assert clebsch_gordan(1, 1, 1, -1, 2, 0) == pytest.approx(1 / np.sqrt(6))
    assert clebsch_gordan(2, 1, 1, 0, 2, 1) == pytest.approx(1 / np.sqrt(6))
    assert clebsch_gordan(1, 1, 1, 1, 1, 2) == 0.0


@pytest.mark.parametrize(("degrees", "w_l", "l_max"), [((5, 7, 8, 7), 1.5, 3), ((4, 6, 6), 1.0, 2)])
def test_basis_follows_the_degree_rule(degrees, w_l, l_max):
    basis = select_basis(degrees, w_l, l_max)
    for nu, D in enumerate(degrees, start=1):
        singles = [(n, l) for n in range(1, int(D) + 1) for l in range(l_max + 1)]
        expected = set()
        for tup in itertools.product(singles, repeat=nu):
            deg = sum(n + w_l * l for n, l in tup)
            ls = [l for _, l in tup]
            if deg <= D + 1e-12 and sum(ls) % 2 == 0 and (nu > 1 or ls[0] == 0):
                expected.add(tuple(sorted(tup, key=lambda x: (x[1], x[0]))))  # by l, then n
        assert set(basis[nu]) == expected and len(basis[nu]) == len(expected)


def test_recursive_harmonics_match_the_explicit_ones_and_are_normalised():
    u = torch.randn(200, 3, dtype=torch.float64)
    u = u / u.norm(dim=1, keepdim=True)
    Y, dY = real_harmonics(u, 3, derivative=True)
    Yr, dYr = real_harmonics(u, 3, derivative=True, recursive=True)
    torch.testing.assert_close(Yr, Y)
    torch.testing.assert_close(dYr, dY)
    Y8, dY8 = real_harmonics(u, 8, derivative=True)
    for l in range(9):
        block = Y8[:, l * l : (l + 1) ** 2]
        torch.testing.assert_close((block**2).sum(1), torch.ones(200, dtype=torch.float64))
    # the gradient is the homogeneous polynomial's: compare with finite differences of
    # Y(x / |x|) |x|^l
    h = 1e-6
    degree = torch.tensor([l for l in range(9) for _ in range(2 * l + 1)], dtype=torch.float64)
    for c in range(3):
        e = torch.zeros(3, dtype=torch.float64)
        e[c] = h

        def hom(x: torch.Tensor) -> torch.Tensor:
            r = x.norm(dim=1, keepdim=True)
            return real_harmonics(x / r, 8)[0] * r**degree

        fd = (hom(u + e) - hom(u - e)) / (2 * h)
        torch.testing.assert_close(dY8[:, c], fd, atol=1e-6, rtol=1e-6)
