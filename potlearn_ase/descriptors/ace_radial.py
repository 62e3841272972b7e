"""Radial functions of the ACE basis and its short-range core repulsion.

Radial functions: ``R_nl^{ab}(r) = sum_k M^{ab}_l[n, k] g_k(r)`` mix one shared basis ``g_k``
(spherical Bessel functions with a C2 cutoff, :func:`~potlearn_ase.descriptors.basis.bessel_radial`)
with a fixed matrix per ordered element pair ``(a, b)`` (centre, neighbour) and degree ``l``:
the identity for ``a == b``, a seeded random orthogonal matrix otherwise. The matrices are part
of the descriptor's hyperparameters (written into model files), so a model never depends on a
random stream. Because the mixing keeps one set of radial channels for all neighbour elements,
the feature count does not grow with the number of elements.

Core repulsion: the Ziegler-Biersack-Littmark (ZBL) screened Coulomb pair energy ``f(r)``
minus its second-order Taylor polynomial at an outer radius ``r_out``:
``phi(r) = f(r) - f(r_out) - f'(r_out)(r - r_out) - f''(r_out)(r - r_out)^2 / 2`` for
``r < r_out`` and 0 beyond. ``f'''< 0`` makes ``phi`` positive and strictly decreasing inside
``r_out`` (purely repulsive) and twice continuously differentiable at ``r_out``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from ase.data import atomic_numbers, covalent_radii

__all__ = ["CoreRepulsion", "default_core_radius", "random_mixing", "zbl"]

#: e^2 / (4 pi eps0) in eV Angstrom
_COULOMB = 14.399645
_ZBL_C = (0.18175, 0.50986, 0.28022, 0.02817)
_ZBL_D = (3.19980, 0.94229, 0.40290, 0.20162)


def random_mixing(
    z_centre: int, z_neighbour: int, n_l: int, size: int, seed: int
) -> np.ndarray:
    """``(n_l, size, size)`` orthogonal matrices for one ordered element pair (seeded)."""
    rng = np.random.default_rng([seed, z_centre, z_neighbour])
    out = np.empty((n_l, size, size))
    for l in range(n_l):
        q, r = np.linalg.qr(rng.normal(size=(size, size)))
        out[l] = q * np.sign(np.diag(r))
    return out


def zbl(r: torch.Tensor | np.ndarray, z1: int, z2: int, order: int = 0):
    """ZBL pair energy (eV) or its ``order``-th derivative by ``r`` (0 to 3), r in Angstrom."""
    a = 0.46850 / (z1**0.23 + z2**0.23)
    k = _COULOMB * z1 * z2
    lib = torch if isinstance(r, torch.Tensor) else np
    x = r / a
    # phi(x) and its derivatives by x
    phis = [sum(c * (-d) ** p * lib.exp(-d * x) for c, d in zip(_ZBL_C, _ZBL_D)) for p in range(4)]
    # f = k phi(r/a) / r: Leibniz rule with (1/r)^(q) = (-1)^q q! / r^(q+1)
    total = 0.0
    for q in range(order + 1):
        p = order - q
        inverse = (-1) ** q * math.factorial(q) / r ** (q + 1)
        total = total + math.comb(order, q) * phis[p] / a**p * inverse
    return k * total


def default_core_radius(a: str, b: str) -> float:
    """Outer radius of the core repulsion of a pair: 0.7 x the sum of covalent radii (A)."""
    return 0.7 * float(covalent_radii[atomic_numbers[a]] + covalent_radii[atomic_numbers[b]])


class CoreRepulsion:
    """The shifted ZBL core of every element pair, on padded neighbour distances.

    Parameters
    ----------
    elements : sequence of str
        Species order.
    radii : numpy.ndarray
        ``(S, S)`` symmetric outer radii ``r_out`` in Angstrom.
    dtype, device
        Of the tables it makes.
    """

    def __init__(
        self,
        elements: Sequence[str],
        radii: np.ndarray,
        *,
        dtype: torch.dtype = torch.float64,
        device: torch.device | str = "cpu",
    ):
        S = len(elements)
        z = [atomic_numbers[e] for e in elements]
        self.radii = torch.as_tensor(radii, dtype=dtype, device=device)
        taylor = np.zeros((S, S, 3))
        for i in range(S):
            for j in range(S):
                ro = float(radii[i, j])
                taylor[i, j] = [zbl(ro, z[i], z[j], q) for q in range(3)]
        self._taylor = torch.as_tensor(taylor, dtype=dtype, device=device)
        self._a = torch.as_tensor(
            [[0.46850 / (zi**0.23 + zj**0.23) for zj in z] for zi in z], dtype=dtype, device=device
        )
        self._k = torch.as_tensor(
            [[_COULOMB * zi * zj for zj in z] for zi in z], dtype=dtype, device=device
        )

    def pair(
        self, d: torch.Tensor, si: torch.Tensor, sj: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``phi(d)`` and ``phi'(d)`` of pairs with species ``si``, ``sj`` (0 where masked)."""
        ro = self.radii[si, sj]
        inside = mask & (d < ro)
        dd = torch.where(inside, d, ro)
        a, k = self._a[si, sj], self._k[si, sj]
        x = dd / a
        phi = torch.zeros_like(dd)
        dphi = torch.zeros_like(dd)
        for c, dc in zip(_ZBL_C, _ZBL_D):
            e = c * torch.exp(-dc * x)
            phi = phi + e
            dphi = dphi - dc * e
        f = k * phi / dd
        df = k * (dphi / a / dd - phi / dd**2)
        t = self._taylor[si, sj]
        h = dd - ro
        e = f - t[..., 0] - t[..., 1] * h - 0.5 * t[..., 2] * h * h
        de = df - t[..., 1] - t[..., 2] * h
        zero = torch.zeros_like(e)
        return torch.where(inside, e, zero), torch.where(inside, de, zero)
