"""Recursive evaluation of ACE product features and their reverse derivatives.

Every invariant of correlation order ``nu`` is a sparse sum of sorted products
``A[a_1] ... A[a_nu]`` of the atomic base (see
:func:`~potlearn_ase.descriptors.ace_coupling.sparse_coupling`). The products form a tree:
the product of ``(a_1 .. a_t)`` is its parent ``(a_1 .. a_{t-1})`` times ``A[a_t]``, so each
product costs one multiplication, shared by every feature that needs it and by every
higher-order product built on it. Features are ``AA_nu @ C_nu`` with sparse ``C_nu``.

The reverse pass takes ``dE/dB`` of ``M`` members (or of many design-matrix seeds) and walks
the tree back to ``dE/dA``; it is linear in its input, runs in chunks of atoms to bound the
memory, and stays differentiable in its input (used when training on forces).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch

__all__ = ["ProductTree"]

#: bound on the elements of one intermediate of the reverse pass (chunks of atoms)
_CHUNK_ELEMENTS = 1 << 22


class ProductTree:
    """Sparse product features of correlation orders ``2 .. nu_max``.

    Parameters
    ----------
    couplings : sequence of (products, entries, n_features)
        Per correlation order ``nu = 2, 3, ...``: what
        :func:`~potlearn_ase.descriptors.ace_coupling.sparse_coupling` returns and the number
        of features of that order.
    n_base : int
        Size of the flat atomic base.
    dtype, device
        Of every tensor.
    """

    def __init__(
        self,
        couplings: Sequence[tuple[list[tuple[int, ...]], list[tuple[int, int, float]], int]],
        n_base: int,
        *,
        dtype: torch.dtype = torch.float64,
        device: torch.device | str = "cpu",
    ):
        self.n_base = n_base
        levels: dict[int, dict[tuple[int, ...], int]] = {}
        for products, _, _ in couplings:
            for tup in products:
                for t in range(2, len(tup) + 1):
                    levels.setdefault(t, {}).setdefault(tup[:t], len(levels.setdefault(t, {})))
        self.top = max(levels, default=1)
        self.parent: dict[int, torch.Tensor] = {}
        self.last: dict[int, torch.Tensor] = {}
        for t in range(2, self.top + 1):
            keys = list(levels[t])
            prev = levels.get(t - 1)
            par = [k[0] if t == 2 else prev[k[:-1]] for k in keys]  # type: ignore[index]
            self.parent[t] = torch.tensor(par, dtype=torch.int64, device=device)
            self.last[t] = torch.tensor([k[-1] for k in keys], dtype=torch.int64, device=device)
        self.size = {t: len(levels[t]) for t in levels}
        self.coupling: list[tuple[int, torch.Tensor, torch.Tensor]] = []  # (level, C, C^T)
        self.n_features = 0
        # leave-one-out layout of the Jacobian dB/dA: per level, the factors of each product
        # and a sparse map from (product, position) to (base index, feature)
        self.factors: dict[int, torch.Tensor] = {}
        jac: dict[int, tuple[list[int], list[int], list[float]]] = {}
        K_all = sum(k for _, _, k in couplings)
        for products, entries, k in couplings:
            if k == 0:
                continue
            t = len(products[0])
            if t not in self.factors:
                self.factors[t] = torch.tensor(list(levels[t]), dtype=torch.int64, device=device)
            rj, cj, vj = jac.setdefault(t, ([], [], []))
            for p, f, v in entries:
                tup, row = products[p], levels[t][products[p]]
                for pos in range(t):
                    rj.append(tup[pos] * K_all + self.n_features + f)
                    cj.append(row * t + pos)
                    vj.append(v)
            rows = [levels[t][products[p]] for p, _, _ in entries]
            cols = [f for _, f, _ in entries]
            vals = [v for _, _, v in entries]
            idx = torch.tensor([rows, cols], dtype=torch.int64)
            C = torch.sparse_coo_tensor(
                idx, torch.tensor(vals), (self.size[t], k), check_invariants=True
            ).coalesce()
            C = C.to(dtype=dtype, device=device)
            self.coupling.append((t, C, C.t().coalesce()))
            self.n_features += k
        # the nonzero pattern (base index, feature) of dB/dA, the same for every atom
        K1 = max(K_all, 1)  # sorted by feature, then base index: the rows of a CSR matrix
        keys = sorted({r for rj, _, _ in jac.values() for r in rj}, key=lambda r: (r % K1, r // K1))
        where = {r: e for e, r in enumerate(keys)}
        offsets, total = {}, 0
        for t in sorted(jac):
            offsets[t], total = total, total + self.size[t] * t
        rows = [where[r] for t in sorted(jac) for r in jac[t][0]]
        cols = [offsets[t] + c for t in sorted(jac) for c in jac[t][1]]
        vals = [v for t in sorted(jac) for v in jac[t][2]]
        self.jacobian_base = torch.tensor([r // max(K_all, 1) for r in keys], dtype=torch.int64,
                                          device=device)
        self.jacobian_feature = torch.tensor([r % max(K_all, 1) for r in keys],
                                             dtype=torch.int64, device=device)
        counts = torch.bincount(self.jacobian_feature, minlength=K_all)
        #: CSR row pointers of one atom's dB/dA (rows: features, columns: base index)
        self.jacobian_rowptr = torch.cat([counts.new_zeros(1), counts.cumsum(0)]).to(device)
        # the same pattern ordered by base index, then feature: rows of (dB/dA)^T
        order = sorted(range(len(keys)), key=lambda e: (keys[e] // K1, keys[e] % K1))
        self.transpose_order = torch.tensor(order, dtype=torch.int64, device=device)
        counts_t = torch.bincount(self.jacobian_base, minlength=n_base)
        self.transpose_rowptr = torch.cat([counts_t.new_zeros(1), counts_t.cumsum(0)]).to(device)
        self._jacobian_map = torch.sparse_coo_tensor(
            torch.tensor([rows, cols], dtype=torch.int64).reshape(2, -1),
            torch.tensor(vals, dtype=torch.float64), (len(keys), total), check_invariants=True,
        ).coalesce().to(dtype=dtype, device=device)

    def forward(self, AT: torch.Tensor) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
        """Features ``B^T (K, n)`` and the products per level, from ``A^T (n_base, n)``."""
        AA = {1: AT}
        for t in range(2, self.top + 1):
            AA[t] = AA[t - 1][self.parent[t]] * AT[self.last[t]]
        parts = [torch.sparse.mm(CT, AA[t]) for t, _, CT in self.coupling]
        n = AT.shape[1]
        BT = torch.cat(parts, 0) if parts else AT.new_zeros(0, n)
        return BT, AA

    def jacobian(self, AT: torch.Tensor) -> torch.Tensor:
        """Nonzero entries of ``dB/dA`` for the atoms of ``A^T (n_base, n)``: ``(n, E)``.

        Entry ``e`` is ``dB[jacobian_feature[e]] / dA[jacobian_base[e]]``. A product's
        derivative by one factor is the product of the others (prefix times suffix
        products); one sparse product places them all.
        """
        n = AT.shape[1]
        parts = []
        for _, T in sorted(self.factors.items()):
            F = AT[T]  # (P_t, t, n)
            ones = torch.ones_like(F[:, :1])
            before = torch.cumprod(torch.cat([ones, F[:, :-1]], 1), 1)
            after = torch.cumprod(torch.cat([ones, F.flip(1)[:, :-1]], 1), 1).flip(1)
            parts.append((before * after).reshape(-1, n))
        if not parts:
            return AT.new_zeros(n, 0)
        return torch.sparse.mm(self._jacobian_map, torch.cat(parts, 0)).T

    def block_jacobian(self, vals: torch.Tensor, *, transpose: bool = False) -> torch.Tensor:
        """Block-diagonal CSR matrix of the atoms' ``dB/dA`` from :meth:`jacobian` values:
        ``(n K, n n_base)``, or with ``transpose`` ``(n n_base, n K)``."""
        n, E = vals.shape
        K, N_A = self.n_features, self.n_base
        atoms = torch.arange(n, device=vals.device)
        if transpose:
            rowptr, cols, stride_c, rows = self.transpose_rowptr, self.jacobian_feature, K, N_A
            vals = vals[:, self.transpose_order]
            cols = cols[self.transpose_order]
        else:
            rowptr, cols, stride_c, rows = self.jacobian_rowptr, self.jacobian_base, N_A, K
        crow = (rowptr[:-1][None, :] + E * atoms[:, None]).reshape(-1)
        crow = torch.cat([crow, crow.new_tensor([n * E])])
        col = (cols[None, :] + stride_c * atoms[:, None]).reshape(-1)
        with warnings.catch_warnings():  # "sparse CSR support is in beta"
            warnings.simplefilter("ignore", UserWarning)
            return torch.sparse_csr_tensor(crow, col, vals.reshape(-1), (n * rows, n * stride_c))

    def backward(self, AA: dict[int, torch.Tensor], GT: torch.Tensor) -> torch.Tensor:
        """``dE/dA (n_base, n, M)`` from ``dE/dB`` given as ``GT (K, n, M)``."""
        K, n, M = GT.shape
        widest = max([self.n_base, *self.size.values()])
        step = max(1, _CHUNK_ELEMENTS // max(1, widest * M))
        if step >= n:
            return self._backward(AA, GT)
        outs = []
        for a in range(0, n, step):
            sub = {t: v[:, a : a + step] for t, v in AA.items()}
            outs.append(self._backward(sub, GT[:, a : a + step]))
        return torch.cat(outs, 1)

    def _backward(self, AA: dict[int, torch.Tensor], GT: torch.Tensor) -> torch.Tensor:
        K, n, M = GT.shape
        D: dict[int, torch.Tensor] = {}
        offset = 0
        G2 = GT.reshape(K, n * M)
        for t, C, _ in self.coupling:
            k = C.shape[1]
            d = torch.sparse.mm(C, G2[offset : offset + k]).view(-1, n, M)
            D[t] = D[t] + d if t in D else d
            offset += k
        AT = AA[1]
        dA = AT.new_zeros(self.n_base, n, M) if 1 not in D else D[1]
        for t in range(self.top, 1, -1):
            if t not in D:
                continue
            Dt = D[t]
            to_parent = Dt * AT[self.last[t]][:, :, None]
            to_last = Dt * AA[t - 1][self.parent[t]][:, :, None]
            if t == 2:
                dA = dA.index_add(0, self.parent[t], to_parent)
            else:
                prev = D.get(t - 1)
                base = Dt.new_zeros(self.size[t - 1], n, M) if prev is None else prev
                D[t - 1] = base.index_add(0, self.parent[t], to_parent)
            dA = dA.index_add(0, self.last[t], to_last)
        return dA
